//! One module per command; each has its clap `Args` (or `Command`) and a `run`.

pub mod cloud_init;
pub mod completions;
pub mod gitops;
pub mod init;
pub mod join_server;
pub mod join_token;
pub mod progress;
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
    /// The fleet, checked; its warnings are the caller's to show ([`warn`]).
    pub fn load(&self) -> Result<meshvm::spec::SourceFile, crate::command_error::CommandError> {
        Ok(meshvm::spec::load_fleet(&self.file)?)
    }
}

/// Prints the fleet's warnings on stderr, in `validate`'s format: what commands that use the
/// fleet show after their result (`validate` makes them part of its report instead).
pub fn warn(source: &meshvm::spec::SourceFile) {
    warn_where(source, |_| true);
}

/// Prints the warnings about `mesh.rootCert` (a CA rotation in progress): for the commands
/// that write the root certificate into a VM's files.
pub fn warn_about_root_cert(source: &meshvm::spec::SourceFile) {
    warn_where(source, |w| w.path == "mesh.rootCert");
}

/// The warnings as `--output json` lists them: each diagnostic with `severity: warning`, so
/// that a consumer can tell them from errors (which carry no severity).
pub fn warnings_json(warnings: &meshvm::spec::diagnostic::Diagnostics) -> serde_json::Value {
    warnings
        .iter()
        .map(|w| {
            let mut v = serde_json::to_value(w).expect("JSON");
            v["severity"] = "warning".into();
            v
        })
        .collect()
}

fn warn_where(
    source: &meshvm::spec::SourceFile,
    shown: impl Fn(&meshvm::spec::diagnostic::Diagnostic) -> bool,
) {
    for w in source.warnings.iter().filter(|w| shown(w)) {
        eprintln!("warning: {w}");
    }
}
