//! `meshvm vm …`: the files one VM needs to join the mesh.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use meshvm::FileTree;
use meshvm::vmfiles;

use super::FleetArg;
use crate::command_error::{CmdResult, CommandError, to_stdout};

/// Work with the VMs of the fleet.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    Files(FilesArgs),
}

/// Write the mesh files of one VM into a directory.
///
/// The files are the ones `istioctl x workload entry configure` writes, built the same way,
/// from the fleet instead of a live cluster:
///
///   cluster.env    the proxy's environment: identity, ports to capture, istiod's address
///                  → /var/lib/istio/envoy/cluster.env
///   mesh.yaml      the proxy's ProxyConfig (`defaultConfig`), with the same metadata
///                  → /etc/istio/config/mesh
///   hosts          one line naming istiod at the east-west gateway
///                  → appended to /etc/hosts
///   root-cert.pem  the mesh's root CA, when the fleet names one (`mesh.rootCert`)
///                  → /etc/certs/root-cert.pem
///   istio-token    the ServiceAccount token given with --token-file, mode 0600
///                  → /var/run/secrets/tokens/istio-token
///
/// Then, on the VM: install the istio-sidecar package, `chown -R istio-proxy` the
/// directories above, and `systemctl enable --now istio`.
///
/// The token is a secret for the VM's first certificate only: make it with
/// `kubectl create token <serviceAccount> -n <namespace> --audience istio-ca --duration 1h`.
/// It is written only to the output directory and never printed.
///
/// The directory is replaced as a whole, never left half-written; one that holds other files
/// is refused.
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct FilesArgs {
    /// The VM, by its name in the fleet (`workloads[].instances[].name`).
    #[arg(value_name = "VM")]
    vm: String,
    #[command(flatten)]
    fleet: FleetArg,
    /// The directory to write the files into.
    #[arg(short = 'o', long = "output", value_name = "DIR")]
    output: PathBuf,
    /// A file holding the VM's ServiceAccount token (audience `istio-ca`), written as
    /// istio-token with mode 0600.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
}

pub fn run(command: Command) -> CmdResult {
    match command {
        Command::Files(args) => files(args),
    }
}

fn files(args: FilesArgs) -> CmdResult {
    let source = args.fleet.load()?;
    let mut tree = vmfiles::vm_files(&source.fleet, &args.vm)
        .map_err(|e| CommandError::invalid(format!("{}: {e}", args.fleet.file.display())))?;
    if let Some(path) = &args.token_file {
        add_token(&mut tree, path)?;
    }
    write_files(&tree, &args.output, &format!("VM {}", args.vm))
}

/// Reads the token file into the tree; errors name the file, never its content.
pub(crate) fn add_token(tree: &mut FileTree, path: &Path) -> Result<(), CommandError> {
    let token = std::fs::read(path).map_err(|e| {
        CommandError::invalid(format!(
            "cannot read the token file {}: {e}",
            path.display()
        ))
    })?;
    vmfiles::insert_token(tree, &token)
        .map_err(|e| CommandError::invalid(format!("{}: {e}", path.display())))
}

/// Writes the VM files as `dir`, atomically, and says where each goes on the VM.
pub(crate) fn write_files(tree: &FileTree, dir: &Path, what: &str) -> CmdResult {
    refuse_foreign_directory(dir)?;
    meshvm::disk::write_dir_atomically(tree, dir)
        .map_err(|e| CommandError::invalid(format!("cannot write {}: {e}", dir.display())))?;
    to_stdout(|out| {
        writeln!(out, "wrote the mesh files of {what} to {}:", dir.display())?;
        for (name, destination) in vmfiles::DESTINATIONS {
            if tree.contains(name) {
                writeln!(out, "  {name:<14} → {destination}")?;
            }
        }
        Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// The output directory is replaced as a whole: refuse one that holds anything but VM files,
/// so that a mistyped `-o` cannot delete someone's data.
fn refuse_foreign_directory(dir: &Path) -> Result<(), CommandError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
            return Err(CommandError::invalid(format!(
                "{} is a file, not a directory",
                dir.display()
            )));
        }
        Err(e) => {
            return Err(CommandError::invalid(format!(
                "cannot read {}: {e}",
                dir.display()
            )));
        }
    };
    for entry in entries {
        let entry = entry.map_err(|e| CommandError::invalid(format!("{}: {e}", dir.display())))?;
        let name = entry.file_name();
        let known = vmfiles::DESTINATIONS
            .iter()
            .any(|(file, _)| name.to_str() == Some(file));
        if !known || !entry.file_type().is_ok_and(|t| t.is_file()) {
            return Err(CommandError::invalid(format!(
                "{} holds {:?}, which is not a VM file; the output directory is replaced as a \
                 whole, so give a new or empty directory",
                dir.display(),
                name
            )));
        }
    }
    Ok(())
}
