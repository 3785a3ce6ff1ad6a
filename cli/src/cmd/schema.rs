use std::process::ExitCode;

use crate::command_error::{CmdResult, to_stdout};

/// Print the fleet file's JSON Schema, for editors and other tools.
///
/// For example, with the YAML language server, put
/// `# yaml-language-server: $schema=meshvm.schema.json` at the top of meshvm.yaml after
/// `meshvm schema > meshvm.schema.json`.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_: Args) -> CmdResult {
    let schema = meshvm::Fleet::json_schema();
    let json = serde_json::to_string_pretty(&schema).expect("JSON");
    to_stdout(|out| writeln!(out, "{json}"))?;
    Ok(ExitCode::SUCCESS)
}
