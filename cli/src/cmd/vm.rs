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
    List(ListArgs),
}

/// List the VMs of the fleet: name, namespace, group, ServiceAccount, address.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    fleet: FleetArg,
    /// Only the VMs of this workload group.
    #[arg(long, value_name = "GROUP")]
    group: Option<String>,
    /// Only the VMs of this namespace.
    #[arg(long, short = 'n', value_name = "NAMESPACE")]
    namespace: Option<String>,
    /// `text` (a table) for people, `json` (a list of objects) for machines, `names` (one per
    /// line) for scripts and shell completion.
    #[arg(long, value_enum, default_value = "text")]
    output: ListOutput,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ListOutput {
    Text,
    Json,
    Names,
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
    /// istio-token with mode 0600. Checked as `meshvm cloud-init` checks it: a JWT for the
    /// group's ServiceAccount, valid for at least --min-token-validity.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    #[command(flatten)]
    token_checks: TokenChecks,
}

/// How a token given to a command that writes VM files is checked, and where it may go.
#[derive(Debug, Clone, clap::Args)]
pub struct TokenChecks {
    /// The least time the token must still be valid, such as 15m, 1h or 90s.
    #[arg(long, value_name = "DURATION", default_value = "15m", value_parser = super::cloud_init::parse_duration)]
    pub min_token_validity: std::time::Duration,
    /// Allow writing the token inside a Git work tree.
    #[arg(long)]
    pub allow_in_repo: bool,
}

pub fn run(command: Command) -> CmdResult {
    match command {
        Command::Files(args) => files(args),
        Command::List(args) => list(args),
    }
}

fn list(args: ListArgs) -> CmdResult {
    let source = args.fleet.load()?;
    let vms: Vec<_> = source
        .fleet
        .vms()
        .filter(|(g, _)| args.group.as_ref().is_none_or(|name| *name == g.name))
        .filter(|(g, _)| args.namespace.as_ref().is_none_or(|ns| *ns == g.namespace))
        .collect();
    match args.output {
        ListOutput::Json => {
            let list: Vec<serde_json::Value> = vms
                .iter()
                .map(|(g, vm)| {
                    serde_json::json!({
                        "name": vm.name,
                        "namespace": g.namespace,
                        "group": g.name,
                        "serviceAccount": g.service_account,
                        "address": vm.address,
                        "external": vm.external,
                        "autoRegister": g.auto_register,
                    })
                })
                .collect();
            let json = serde_json::to_string_pretty(&list).expect("JSON values print");
            to_stdout(|out| writeln!(out, "{json}"))?;
        }
        ListOutput::Names => to_stdout(|out| {
            vms.iter()
                .try_for_each(|(_, vm)| writeln!(out, "{}", vm.name))
        })?,
        ListOutput::Text => {
            let header = ["NAME", "NAMESPACE", "GROUP", "SERVICE ACCOUNT", "ADDRESS"];
            let rows: Vec<[&str; 5]> = vms
                .iter()
                .map(|(g, vm)| {
                    [
                        vm.name.as_str(),
                        g.namespace.as_str(),
                        g.name.as_str(),
                        g.service_account.as_str(),
                        vm.address.as_str(),
                    ]
                })
                .collect();
            let mut widths = header.map(str::len);
            for row in &rows {
                for (w, cell) in widths.iter_mut().zip(row) {
                    *w = (*w).max(cell.chars().count());
                }
            }
            to_stdout(|out| {
                for row in std::iter::once(&header).chain(&rows) {
                    let line: Vec<String> = row
                        .iter()
                        .zip(widths)
                        .map(|(cell, w)| format!("{cell:<w$}"))
                        .collect();
                    writeln!(out, "{}", line.join("  ").trim_end())?;
                }
                Ok(())
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn files(args: FilesArgs) -> CmdResult {
    if args.token_file.is_some() {
        super::cloud_init::refuse_git_work_tree(&args.output, args.token_checks.allow_in_repo)?;
    }
    let source = args.fleet.load()?;
    let mut tree = vmfiles::vm_files(&source.fleet, &args.vm)
        .map_err(|e| CommandError::invalid(format!("{}: {e}", args.fleet.file.display())))?;
    if let Some(path) = &args.token_file {
        let (group, _) = source
            .fleet
            .vm(&args.vm)
            .expect("vm_files found the VM in the fleet");
        let account = (group.namespace.as_str(), group.service_account.as_str());
        add_token(&mut tree, path, account, &args.token_checks)?;
    }
    let done = write_files(&tree, &args.output, &format!("VM {}", args.vm))?;
    super::warn_about_root_cert(&source);
    Ok(done)
}

/// Reads the token file into the tree, after `meshvm cloud-init`'s checks of it for the
/// ServiceAccount `account` (namespace, name); errors name the file, never its content.
pub(crate) fn add_token(
    tree: &mut FileTree,
    path: &Path,
    account: (&str, &str),
    checks: &TokenChecks,
) -> Result<(), CommandError> {
    let token = std::fs::read(path).map_err(|e| {
        CommandError::invalid(format!(
            "cannot read the token file {}: {e}",
            path.display()
        ))
    })?;
    vmfiles::insert_token(tree, &token)
        .map_err(|e| CommandError::invalid(format!("{}: {e}", path.display())))?;
    let (namespace, service_account) = account;
    let subject = meshvm::cloudinit::token::service_account_subject(namespace, service_account);
    let now = time::UtcDateTime::now();
    meshvm::cloudinit::token::check(
        &String::from_utf8_lossy(&token),
        &subject,
        now,
        checks.min_token_validity,
    )
    .map_err(|e| {
        CommandError::invalid(format!("{}: {e}", path.display())).hinted(
            meshvm::cloudinit::token::TokenError::hint(namespace, service_account),
        )
    })?;
    Ok(())
}

/// Writes the VM files as `dir`, atomically, and says where each goes on the VM.
pub(crate) fn write_files(tree: &FileTree, dir: &Path, what: &str) -> CmdResult {
    refuse_foreign_directory(dir)?;
    if !tree.contains(vmfiles::ROOT_CERT) {
        eprintln!(
            "warning: {what}: no root-cert.pem written: the proxy cannot verify istiod without \
             the mesh's root CA (give --root-cert, or set mesh.rootCert in the fleet)"
        );
    }
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
