use std::process::ExitCode;

use crate::exit::CmdResult;

/// Print the fleet file's JSON Schema, for editors and other tools.
///
/// For example, with the YAML language server, put
/// `# yaml-language-server: $schema=meshvm.schema.json` at the top of meshvm.yaml after
/// `meshvm schema > meshvm.schema.json`.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_: Args) -> CmdResult {
    let schema = meshvm::Fleet::json_schema();
    println!("{}", serde_json::to_string_pretty(&schema).expect("JSON"));
    Ok(ExitCode::SUCCESS)
}
