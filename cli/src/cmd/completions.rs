use std::process::ExitCode;

use clap_complete::Shell;

use crate::exit::CmdResult;

/// Print a shell completion script.
///
/// For example: `meshvm completions bash > /etc/bash_completion.d/meshvm`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The shell to complete for.
    shell: Shell,
}

pub fn run(args: Args, command: &mut clap::Command) -> CmdResult {
    clap_complete::generate(args.shell, command, "meshvm", &mut std::io::stdout());
    Ok(ExitCode::SUCCESS)
}
