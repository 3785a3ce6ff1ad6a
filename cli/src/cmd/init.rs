use std::fs;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::command_error::{CmdResult, CommandError};

/// Write a commented starter fleet file, `meshvm.yaml`, into DIR.
///
/// Refuses to overwrite an existing file unless --force is given.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The directory to write meshvm.yaml into; created when missing.
    #[arg(default_value = ".")]
    dir: PathBuf,
    /// Overwrite an existing meshvm.yaml.
    #[arg(long)]
    force: bool,
}

pub fn run(args: Args) -> CmdResult {
    let path = args.dir.join("meshvm.yaml");
    let fail =
        |e: std::io::Error| CommandError::invalid(format!("cannot write {}: {e}", path.display()));
    fs::create_dir_all(&args.dir).map_err(fail)?;
    let mut file = fs::OpenOptions::new();
    file.write(true);
    if args.force {
        file.create(true).truncate(true);
    } else {
        file.create_new(true);
    }
    let mut file = file.open(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => {
            CommandError::invalid(format!("{} already exists", path.display()))
                .hinted("pass --force to overwrite it")
        }
        _ => fail(e),
    })?;
    file.write_all(meshvm::spec::STARTER.as_bytes())
        .map_err(fail)?;
    eprintln!(
        "wrote {}; edit it, then run `meshvm validate -f {}`",
        path.display(),
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}
