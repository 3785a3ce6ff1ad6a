use std::process::ExitCode;

use clap_complete::Shell;

use crate::command_error::{CmdResult, to_stdout};

/// Print a shell completion script.
///
/// For example: `meshvm completions bash > /etc/bash_completion.d/meshvm`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The shell to complete for.
    shell: Shell,
}

pub fn run(args: Args, command: &mut clap::Command) -> CmdResult {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, command, "meshvm", &mut script);
    to_stdout(|out| out.write_all(&script))?;
    Ok(ExitCode::SUCCESS)
}
