//! `meshvm vm …`: the files one VM needs to join the mesh.

use crate::exit::{CliError, CmdResult};

/// Work with the VMs of the fleet.
#[derive(Debug, clap::Subcommand)]
pub enum Command {}

pub fn run(command: Command) -> CmdResult {
    match command {}
    #[allow(unreachable_code)]
    Err(CliError::usage("no vm command"))
}
