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
    /// The fleet file; `-` reads it from standard input (`mesh.rootCert` is then relative to
    /// the current directory).
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
        let source = meshvm::spec::load_fleet(&self.file)?;
        warn_about_root_rotation(&source);
        Ok(source)
    }
}

/// A root bundle that holds an expired (or not yet valid) certificate beside a valid one is
/// accepted, with a warning: a CA rotation in progress.
pub fn warn_about_root_rotation(source: &meshvm::spec::SourceFile) {
    let Some(pem) = source.fleet.root_cert() else {
        return;
    };
    if let Ok(certs) = meshvm::spec::root_cert::check(pem, time::UtcDateTime::now()) {
        for warning in meshvm::spec::root_cert::rotation_warnings(&certs) {
            eprintln!(
                "warning: {}: mesh.rootCert: {warning}",
                source.path.display()
            );
        }
    }
}
