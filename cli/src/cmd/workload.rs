//! `meshvm workload …`: istioctl-compatible offline commands.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::ArgAction;
use meshvm::vmfiles;
use meshvm::vmfiles::istioctl::{self, ConfigureOptions, GroupCreate};

use crate::command_error::{CmdResult, CommandError, to_stdout};

/// istioctl-compatible commands that work offline, for users moving from istioctl.
///
/// `meshvm workload entry configure` and `meshvm workload group create` take the inputs and
/// give the outputs of `istioctl x workload entry configure` and `istioctl x workload group
/// create`, without a cluster: what istioctl reads from the cluster comes from files and flags.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    #[command(subcommand)]
    Entry(EntryCommand),
    #[command(subcommand)]
    Group(GroupCommand),
}

/// Files for a workload instance (a VM) of a WorkloadGroup.
#[derive(Debug, clap::Subcommand)]
pub enum EntryCommand {
    Configure(ConfigureArgs),
}

/// WorkloadGroup resources.
#[derive(Debug, clap::Subcommand)]
pub enum GroupCommand {
    Create(CreateArgs),
}

/// Write a VM's mesh files from a WorkloadGroup, like `istioctl x workload entry configure`.
///
/// For the same inputs the output is istioctl's: cluster.env and hosts byte for byte, mesh.yaml
/// the same data. What istioctl fetches from the cluster is given instead:
///
///   --mesh-config  the `mesh` data of the `istio` ConfigMap (`istio-<rev>` when revisioned):
///                  kubectl get configmap istio -n istio-system -o jsonpath='{.data.mesh}'
///                  (the whole ConfigMap, as `-o yaml` prints it, is read too)
///   --root-cert    the `root-cert.pem` of the `istio-ca-root-cert` ConfigMap
///   --token-file   kubectl create token <serviceAccount> -n <namespace> --audience istio-ca
///   --ingress-ip   the east-west gateway's address
///
/// The files, and where they go on the VM:
///
///   cluster.env    → /var/lib/istio/envoy/cluster.env
///   mesh.yaml      → /etc/istio/config/mesh
///   hosts          → appended to /etc/hosts (empty without --ingress-ip)
///   root-cert.pem  → /etc/certs/root-cert.pem
///   istio-token    → /var/run/secrets/tokens/istio-token (mode 0600, never printed)
///
/// The directory is replaced as a whole, never left half-written; one that holds other files
/// is refused. istioctl's flag spellings (--clusterID, --ingressIP, --internalIP,
/// --externalIP) are accepted too.
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct ConfigureArgs {
    /// The WorkloadGroup file.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: PathBuf,
    /// The mesh config: the `mesh` data of the `istio[-<rev>]` ConfigMap.
    #[arg(long, value_name = "MESH.yaml")]
    mesh_config: PathBuf,
    /// The directory to write the files into.
    #[arg(short = 'o', long = "output", value_name = "DIR")]
    output: PathBuf,
    /// The cluster's name as istiod knows it (`values.global.multiCluster.clusterName`).
    #[arg(
        long,
        alias = "clusterID",
        value_name = "ID",
        default_value = "Kubernetes"
    )]
    cluster_id: String,
    /// The istiod revision, such as `1-28`; empty or `default` for none.
    #[arg(long, short = 'r', value_name = "REV", default_value = "")]
    revision: String,
    /// istiod's namespace.
    #[arg(
        long,
        short = 'i',
        alias = "istioNamespace",
        value_name = "NS",
        default_value = "istio-system"
    )]
    istio_namespace: String,
    /// The address the VM reaches istiod at (the east-west gateway), for `hosts`.
    #[arg(long, alias = "ingressIP", value_name = "IP")]
    ingress_ip: Option<String>,
    /// The VM's own address (`ISTIO_SVC_IP`).
    #[arg(
        long,
        alias = "internalIP",
        value_name = "IP",
        conflicts_with = "external_ip"
    )]
    internal_ip: Option<String>,
    /// A public address in front of the VM, such as NAT (`ISTIO_SVC_IP`; probes go to localhost).
    #[arg(long, alias = "externalIP", value_name = "IP")]
    external_ip: Option<String>,
    /// Capture the VM's DNS queries in the proxy (`ISTIO_META_DNS_CAPTURE`).
    #[arg(
        long,
        value_name = "BOOL",
        default_value_t = true,
        num_args = 0..=1,
        default_missing_value = "true",
        action = ArgAction::Set
    )]
    capture_dns: bool,
    /// Let istiod create the WorkloadEntry when the proxy connects (auto-registration).
    #[arg(long)]
    autoregister: bool,
    /// The mesh's root CA certificate, written as root-cert.pem.
    #[arg(long, value_name = "FILE")]
    root_cert: Option<PathBuf>,
    /// The VM's ServiceAccount token (audience `istio-ca`), written as istio-token (0600).
    /// Checked as `meshvm cloud-init` checks it: a JWT for the WorkloadGroup's ServiceAccount,
    /// valid for at least --min-token-validity.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    #[command(flatten)]
    token_checks: super::vm::TokenChecks,
}

/// Print a WorkloadGroup, like `istioctl x workload group create`.
///
/// The WorkloadGroup is the template of the WorkloadEntries of a group of VMs: their labels,
/// annotations, ports and service account. Apply it with `kubectl apply -f -`, or give it to
/// `meshvm workload entry configure -f`.
#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// The WorkloadGroup's name.
    #[arg(long)]
    name: String,
    /// The namespace of the VMs.
    #[arg(long, short = 'n')]
    namespace: String,
    /// Labels of the VMs, `key=value`, comma-separated or repeated.
    #[arg(long, short = 'l', value_delimiter = ',', value_name = "K=V")]
    labels: Vec<String>,
    /// Annotations of the VMs, `key=value`, comma-separated or repeated.
    #[arg(long, short = 'a', value_delimiter = ',', value_name = "K=V")]
    annotations: Vec<String>,
    /// Ports the VMs serve, `name=port`, comma-separated or repeated.
    #[arg(long, short = 'p', value_delimiter = ',', value_name = "NAME=PORT")]
    ports: Vec<String>,
    /// The VMs' service account.
    #[arg(
        long,
        short = 's',
        alias = "serviceAccount",
        value_name = "SA",
        default_value = "default"
    )]
    service_account: String,
    /// The VMs' network, when it is not the cluster's.
    #[arg(long, value_name = "NET")]
    network: Option<String>,
}

pub fn run(command: Command) -> CmdResult {
    match command {
        Command::Entry(EntryCommand::Configure(args)) => configure(args),
        Command::Group(GroupCommand::Create(args)) => create(args),
    }
}

fn read(path: &Path) -> Result<String, CommandError> {
    std::fs::read_to_string(path)
        .map_err(|e| CommandError::invalid(format!("cannot read {}: {e}", path.display())))
}

fn configure(args: ConfigureArgs) -> CmdResult {
    if args.token_file.is_some() {
        super::cloud_init::refuse_git_work_tree(&args.output, args.token_checks.allow_in_repo)?;
    }
    let group = istioctl::read_workload_group(&read(&args.file)?, &args.file)
        .map_err(CommandError::invalid)?;
    let mesh = istioctl::read_mesh_config(&read(&args.mesh_config)?, &args.mesh_config)
        .map_err(CommandError::invalid)?;
    let name = group.metadata.name.clone();
    let namespace = group
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let service_account = group.spec.template.service_account.clone();
    let options = ConfigureOptions {
        cluster_id: args.cluster_id,
        revision: args.revision,
        istio_namespace: args.istio_namespace,
        ingress_ip: args.ingress_ip,
        internal_ip: args.internal_ip,
        external_ip: args.external_ip,
        capture_dns: args.capture_dns,
        autoregister: args.autoregister,
    };
    let inputs = istioctl::configure(group, mesh, &options).map_err(CommandError::invalid)?;
    let mut tree = vmfiles::render(&inputs);
    if let Some(path) = &args.root_cert {
        let pem = std::fs::read(path)
            .map_err(|e| CommandError::invalid(format!("cannot read {}: {e}", path.display())))?;
        tree.insert(vmfiles::ROOT_CERT, pem);
    }
    if let Some(path) = &args.token_file {
        let service_account = service_account.as_deref().filter(|s| !s.is_empty());
        let account = (namespace.as_str(), service_account.unwrap_or("default"));
        super::vm::add_token(&mut tree, path, account, &args.token_checks)?;
    }
    super::vm::write_files(&tree, &args.output, &format!("WorkloadGroup {name}"))
}

fn create(args: CreateArgs) -> CmdResult {
    let yaml = istioctl::group_create(&GroupCreate {
        name: args.name,
        namespace: args.namespace,
        labels: args.labels,
        annotations: args.annotations,
        ports: args.ports,
        service_account: args.service_account,
        network: args.network,
    })
    .map_err(CommandError::invalid)?;
    to_stdout(|out| out.write_all(yaml.as_bytes()))?;
    Ok(ExitCode::SUCCESS)
}
