//! One module per command; each has its clap `Args` (or `Command`) and a `run`.

pub mod cloud_init;
pub mod completions;
pub mod gitops;
pub mod init;
pub mod join_server;
pub mod join_token;
pub mod render;
pub mod schema;
pub mod validate;
pub mod vm;
pub mod workload;

use std::path::PathBuf;

/// The fleet file flag every fleet command shares.
#[derive(Debug, Clone, clap::Args)]
pub struct FleetArg {
    /// The fleet file.
    #[arg(
        short = 'f',
        long = "file",
        value_name = "FILE",
        env = "MESHVM_FILE",
        default_value = "meshvm.yaml"
    )]
    pub file: PathBuf,
}

impl FleetArg {
    #[allow(dead_code)] // for the fleet commands to come
    pub fn load(&self) -> Result<meshvm::spec::SourceFile, crate::command_error::CommandError> {
        Ok(meshvm::spec::load_fleet(&self.file)?)
    }
}
