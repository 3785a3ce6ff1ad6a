//! `meshvm workload …`: istioctl-compatible offline commands.

use crate::exit::{CliError, CmdResult};

/// istioctl-compatible commands that work offline, for users moving from istioctl.
#[derive(Debug, clap::Subcommand)]
pub enum Command {}

pub fn run(command: Command) -> CmdResult {
    match command {}
    #[allow(unreachable_code)]
    Err(CliError::usage("no workload command"))
}
