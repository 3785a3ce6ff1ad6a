//! The fleet file: its types, how it is read, and the checks it must pass.
//!
//! The types are the single source of truth for the file's shape: serde reads them, and the
//! JSON Schema derived from them (schemars) reports every structural error of a file at once,
//! with its position, before the typed read.

pub mod diagnostic;
pub mod inputs;
pub mod istio_rules;
mod load;
pub mod names;
pub mod root_cert;
mod validate;

use std::collections::BTreeMap;
use std::ops::Deref;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub(crate) use load::did_you_mean;
pub use load::{LoadError, STDIN, SourceFile, load_fleet, load_fleet_at, load_fleet_str};
pub use validate::Problem;

/// A commented fleet file to start from (`meshvm init`).
pub const STARTER: &str = include_str!("starter.yaml");

pub const API_VERSION: &str = "meshvm.io/v1alpha1";
pub const KIND: &str = "Fleet";

/// A fleet: one mesh, the sidecar package its VMs install, where the GitOps tree goes, and the
/// workload groups with their VMs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Fleet {
    /// Always `meshvm.io/v1alpha1`.
    #[schemars(extend("const" = "meshvm.io/v1alpha1"))]
    pub api_version: String,
    /// Always `Fleet`.
    #[schemars(extend("const" = "Fleet"))]
    pub kind: String,
    pub mesh: Mesh,
    pub sidecar: Sidecar,
    #[serde(default)]
    pub gitops: Gitops,
    #[serde(default)]
    pub workloads: Vec<Workload>,
    /// The join broker (`meshvm join-server`) that groups with a `join` method other than
    /// `token` get their istio-tokens from. Rendered into the tree only when such a group
    /// exists; the defaults suit most clusters.
    #[serde(default, skip_serializing_if = "JoinBroker::is_default")]
    pub join_broker: JoinBroker,
}

/// Where and how the join broker runs in the cluster (`joinBroker`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JoinBroker {
    /// The container image whose entrypoint is `meshvm`; defaults to
    /// `ghcr.io/meshvm/meshvm:<this meshvm's version>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024), regex(pattern = r"^[^\s]+$"))]
    pub image: Option<String>,
    /// The namespace it runs in (a DNS-1123 label), created by the tree unless it is there.
    #[serde(default = "default_join_broker_namespace")]
    #[schemars(length(max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub namespace: String,
    /// Replicas of its Deployment: at least 2.
    #[serde(default = "default_join_broker_replicas")]
    #[schemars(range(min = 2, max = 100))]
    pub replicas: u32,
    /// The east-west gateway's port that passes TLS through to it: the VMs call
    /// `https://<broker host>:<port>/v1/join` at the gateway's address.
    #[serde(default = "default_join_broker_port")]
    #[schemars(range(min = 1024, max = 65535))]
    pub port: u32,
    /// The Secret with its serving certificate: `tls.crt`, `tls.key` (and `ca.crt`), as
    /// cert-manager writes it. Never in the tree.
    #[serde(default = "default_join_broker_tls_secret")]
    #[schemars(
        length(max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub tls_secret: String,
}

impl Default for JoinBroker {
    fn default() -> Self {
        JoinBroker {
            image: None,
            namespace: default_join_broker_namespace(),
            replicas: default_join_broker_replicas(),
            port: default_join_broker_port(),
            tls_secret: default_join_broker_tls_secret(),
        }
    }
}

impl JoinBroker {
    pub fn is_default(&self) -> bool {
        *self == JoinBroker::default()
    }

    /// The broker's name: its Deployment, Service, ServiceAccount, ConfigMap and RBAC.
    pub const NAME: &'static str = "meshvm-join";

    /// The host name VMs call the broker by (its Service's), which its certificate must
    /// name: `meshvm-join.<namespace>.svc`. The VMs resolve it to the east-west gateway.
    pub fn host(&self) -> String {
        format!("{}.{}.svc", Self::NAME, self.namespace)
    }

    /// The image, or meshvm's own of this version.
    pub fn image(&self) -> String {
        self.image
            .clone()
            .unwrap_or_else(|| format!("ghcr.io/meshvm/meshvm:{}", env!("CARGO_PKG_VERSION")))
    }
}

fn default_join_broker_namespace() -> String {
    "meshvm-join".to_owned()
}
fn default_join_broker_replicas() -> u32 {
    2
}
fn default_join_broker_port() -> u32 {
    15444
}
fn default_join_broker_tls_secret() -> String {
    "meshvm-join-tls".to_owned()
}

/// A fleet that passed every check of `spec`, with the root certificate it names, read and
/// checked. Only `spec` makes one: whatever renders from it (`render`, the VM files, the
/// user-data's fleet data) cannot fail on it.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedFleet {
    fleet: Fleet,
    root_cert: Option<String>,
    /// What the VM files of each group share, read once per group.
    vm_groups: crate::vmfiles::GroupCache,
}

impl CheckedFleet {
    fn new(fleet: Fleet, root_cert: Option<String>) -> CheckedFleet {
        CheckedFleet {
            fleet,
            root_cert,
            vm_groups: Default::default(),
        }
    }

    /// A fleet as if checked, for unit tests of what comes after `spec` with values its
    /// checks refuse (quoting is tested with hostile values all the same).
    #[cfg(test)]
    pub(crate) fn assume_checked(fleet: Fleet) -> CheckedFleet {
        CheckedFleet::new(fleet, None)
    }

    pub fn fleet(&self) -> &Fleet {
        &self.fleet
    }

    /// The mesh's root CA certificate(s) (PEM) that `mesh.rootCert` names; `None` when the
    /// fleet names none, or was read from text alone ([`load_fleet_str`]).
    pub fn root_cert(&self) -> Option<&str> {
        self.root_cert.as_deref()
    }

    /// The groups' checked VM-file inputs, each read the first time it is needed.
    pub(crate) fn vm_groups(&self) -> &crate::vmfiles::GroupCache {
        &self.vm_groups
    }
}

impl Deref for CheckedFleet {
    type Target = Fleet;

    fn deref(&self) -> &Fleet {
        &self.fleet
    }
}

/// The mesh the VMs join.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Mesh {
    /// `values.global.meshID` of the Istio install; `ISTIO_META_MESH_ID` on the VMs.
    #[serde(rename = "meshID")]
    pub mesh_id: String,
    /// The cluster's name as istiod knows it (`ISTIO_META_CLUSTER_ID`).
    #[serde(rename = "clusterID")]
    pub cluster_id: String,
    /// The cluster's network; empty for a single-network mesh.
    #[serde(default)]
    pub network: String,
    #[serde(default = "default_trust_domain")]
    pub trust_domain: String,
    #[serde(default = "default_istio_namespace")]
    pub istio_namespace: String,
    /// istiod revision, such as `1-28`; empty or `default` for none.
    #[serde(default)]
    pub revision: String,
    pub east_west_gateway: EastWestGateway,
    /// Path of the mesh's public root CA certificate, relative to the fleet file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_cert: Option<String>,
    /// Mesh-wide extra proxy metadata (`meshConfig.defaultConfig.proxyMetadata`).
    #[serde(default)]
    pub proxy_metadata: BTreeMap<String, String>,
    /// DNS capture by the sidecar (`ISTIO_META_DNS_CAPTURE`); on unless turned off.
    #[serde(default = "default_true")]
    pub dns_capture: bool,
}

impl Mesh {
    /// The revision, or `None` for the default installation.
    pub fn revision(&self) -> Option<&str> {
        match self.revision.as_str() {
            "" | "default" => None,
            rev => Some(rev),
        }
    }

    /// The istiod service, `istiod[-<rev>]`.
    pub fn istiod_service(&self) -> String {
        match self.revision() {
            Some(rev) => format!("istiod-{rev}"),
            None => "istiod".to_owned(),
        }
    }

    /// The host name VMs resolve istiod by: `istiod[-<rev>].<ns>.svc`.
    pub fn istiod_host(&self) -> String {
        format!("{}.{}.svc", self.istiod_service(), self.istio_namespace)
    }

    /// True when the cluster has a network of its own, which the VMs reach through the
    /// east-west gateway.
    pub fn is_multi_network(&self) -> bool {
        !self.network.is_empty()
    }
}

/// The east-west gateway through which VMs reach istiod.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EastWestGateway {
    /// IP address (v4 or v6) of the gateway, as the VMs see it.
    pub address: String,
}

/// The `istio-sidecar` package the VMs install.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Sidecar {
    /// Istio release, such as `1.28.0`.
    #[schemars(regex(pattern = r"^[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]*)?$"))]
    pub version: String,
    #[serde(default)]
    pub package: PackageFormat,
    #[serde(default)]
    pub arch: Arch,
    /// SHA-256 of the package, as 64 hex digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9a-fA-F]{64}$"))]
    pub sha256: Option<String>,
    /// Where to download the package instead of Istio's release storage (a mirror).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

impl Sidecar {
    /// The package's download address: the mirror when set, else Istio's release storage.
    pub fn download_url(&self) -> String {
        if let Some(url) = &self.url {
            return url.clone();
        }
        let suffix = match self.arch {
            Arch::Amd64 => "",
            Arch::Arm64 => "-arm64",
        };
        let ext = self.package.extension();
        format!(
            "https://storage.googleapis.com/istio-release/releases/{}/{ext}/istio-sidecar{suffix}.{ext}",
            self.version
        )
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PackageFormat {
    #[default]
    Deb,
    Rpm,
}

impl PackageFormat {
    pub fn extension(self) -> &'static str {
        match self {
            PackageFormat::Deb => "deb",
            PackageFormat::Rpm => "rpm",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    #[default]
    Amd64,
    Arm64,
}

/// Where the rendered tree goes and which GitOps engines reconcile it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Gitops {
    /// The subtree of the repository that meshvm owns.
    #[serde(default = "default_gitops_path")]
    pub path: String,
    /// The address Argo CD or Flux pull from.
    #[serde(default, rename = "repoURL", skip_serializing_if = "Option::is_none")]
    pub repo_url: Option<String>,
    #[serde(default = "default_branch")]
    pub branch: String,
    #[serde(default = "default_engines")]
    pub engines: Vec<Engine>,
    /// Names this fleet's engine objects (`meshvm-<name>-mesh`, `meshvm-<name>-<ns>.<group>`,
    /// …) so that several fleets can share one Argo CD or Flux. Without it they are
    /// `meshvm-mesh`, `meshvm-<ns>.<group>`, ….
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Where Argo CD runs and what its Applications deploy to.
    #[serde(default)]
    pub argocd: ArgoCd,
    /// Where Flux runs and which controller shard reconciles this fleet.
    #[serde(default)]
    pub flux: Flux,
    /// Splits a workload group with more VMs than this into stable buckets, each its own Argo
    /// CD Application and Flux Kustomization (see docs/tree.md, "Very large groups"). Off when
    /// unset: a group of any size is one Application and one Kustomization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 2, max = 1000000))]
    pub bucket_threshold: Option<u32>,
    /// Argo CD Source Hydrator / GitOps Promoter compatibility: present (even `{}`) turns
    /// it on. See docs/tree.md, "Source Hydrator and GitOps Promoter".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hydrator: Option<Hydrator>,
}

/// Source Hydrator settings of a fleet (`gitops.hydrator`): meshvm writes `hydrator.metadata`
/// files and `Argocd-reference-commit-*` trailers as Argo CD's hydrator does.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Hydrator {
    /// Commit to `<branch>-next` instead of `<branch>` (GitOps Promoter's proposed branch;
    /// Argo CD's `hydrateTo`): a promotion pull request then moves it to `<branch>`.
    #[serde(default)]
    pub promoter: bool,
}

/// The suffix GitOps Promoter expects on the branch a hydrator pushes to.
pub const PROMOTER_BRANCH_SUFFIX: &str = "-next";

impl Gitops {
    /// The branch a sync commits to: `branch`, or `<branch>-next` in Promoter mode.
    pub fn sync_branch(&self) -> String {
        sync_branch(
            &self.branch,
            self.hydrator.as_ref().is_some_and(|h| h.promoter),
        )
    }
}

/// `branch`, or `<branch>-next` when `promoter`.
pub fn sync_branch(branch: &str, promoter: bool) -> String {
    if promoter {
        format!("{branch}{PROMOTER_BRANCH_SUFFIX}")
    } else {
        branch.to_owned()
    }
}

/// Argo CD settings of a fleet (`gitops.argocd`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ArgoCd {
    /// The namespace Argo CD runs in (its Applications and ApplicationSets live there).
    #[serde(default = "default_argocd_namespace")]
    pub namespace: String,
    /// The AppProject of every Application.
    #[serde(default = "default_argocd_project")]
    pub project: String,
    /// The API server the Applications deploy to, as registered in Argo CD.
    #[serde(default = "default_argocd_server")]
    pub server: String,
}

impl Default for ArgoCd {
    fn default() -> Self {
        ArgoCd {
            namespace: default_argocd_namespace(),
            project: default_argocd_project(),
            server: default_argocd_server(),
        }
    }
}

/// Flux settings of a fleet (`gitops.flux`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Flux {
    /// The namespace Flux runs in (its GitRepository and Kustomizations live there).
    #[serde(default = "default_flux_namespace")]
    pub namespace: String,
    /// The `sharding.fluxcd.io/key` label of every Flux object: the controller shard that
    /// reconciles this fleet. Without it the main controllers do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<String>,
}

impl Default for Flux {
    fn default() -> Self {
        Flux {
            namespace: default_flux_namespace(),
            shard: None,
        }
    }
}

impl Default for Gitops {
    fn default() -> Self {
        Gitops {
            path: default_gitops_path(),
            repo_url: None,
            branch: default_branch(),
            engines: default_engines(),
            name: None,
            argocd: ArgoCd::default(),
            flux: Flux::default(),
            bucket_threshold: None,
            hydrator: None,
        }
    }
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    Argocd,
    Flux,
}

/// A workload group: VMs that run the same thing. Becomes one WorkloadGroup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Workload {
    /// A DNS-1123 label: the WorkloadGroup's name.
    #[schemars(length(max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub name: String,
    /// A DNS-1123 label.
    #[schemars(length(max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub namespace: String,
    /// Defaults to `default`, as istioctl does.
    #[serde(default = "default_service_account")]
    #[schemars(length(max = 253))]
    pub service_account: String,
    /// The VMs' network; empty when they share the cluster's network.
    #[serde(default)]
    pub network: String,
    /// At most 256 (the WorkloadEntry and WorkloadGroup CRDs' limit).
    #[serde(default)]
    #[schemars(extend("maxProperties" = 256))]
    pub labels: BTreeMap<String, String>,
    /// At most 256 (the WorkloadGroup CRD's limit).
    #[serde(default)]
    #[schemars(extend("maxProperties" = 256))]
    pub annotations: BTreeMap<String, String>,
    /// Named ports the VMs serve, such as `http: 5000`: at most 128, names of up to 62
    /// characters, numbers 1 to 65535 (the WorkloadEntry CRD's limits).
    #[serde(default)]
    #[schemars(extend(
        "additionalProperties" = {"type": "integer", "format": "uint32", "minimum": 1, "maximum": 65535},
        "propertyNames" = {"maxLength": 62, "pattern": "^[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?$"},
        "maxProperties" = 128
    ))]
    pub ports: BTreeMap<String, u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<Probe>,
    /// Let istiod create and delete the WorkloadEntry of each VM itself.
    #[serde(default)]
    pub auto_register: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// Extra proxy metadata for this group's VMs, over the mesh-wide one.
    #[serde(default)]
    pub proxy_metadata: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<Service>,
    #[serde(default)]
    pub instances: Vec<Instance>,
    /// How the group's VMs get their istio-token: `token` (in the user-data, the default) or
    /// from the join broker (`meshvm join-server`) with a proof of identity.
    #[serde(default, skip_serializing_if = "Join::is_default")]
    pub join: Join,
}

/// How a group's VMs join: the method and, for a cloud method, who may join.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Join {
    #[serde(default)]
    pub method: JoinMethod,
    /// AWS account IDs (12 digits) whose instances may join (`aws`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accounts: Vec<String>,
    /// AWS regions the instances may run in (`aws`); empty for any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<String>,
    /// GCP project IDs whose instances may join (`gcp`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub projects: Vec<String>,
    /// GCP zones the instances may run in (`gcp`); empty for any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zones: Vec<String>,
    /// Azure subscription IDs whose VMs may join (`azure`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subscriptions: Vec<String>,
    /// Azure VM IDs (`vmId`, UUIDs) that may join (`azure`); empty for any VM of the
    /// subscriptions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vm_ids: Vec<String>,
}

impl Join {
    pub fn is_default(&self) -> bool {
        *self == Join::default()
    }

    /// True when the group's VMs get their token from the join broker.
    pub fn uses_broker(&self) -> bool {
        self.method != JoinMethod::Token
    }
}

/// How a VM proves who it is. (Plain comments on the variants: doc comments would make the
/// schema a `oneOf`, whose errors carry no list of the accepted values.)
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum JoinMethod {
    // An istio-token in the user-data (`meshvm cloud-init --token-file`).
    #[default]
    Token,
    // A join token from `meshvm join-token create` (on-premises VMs).
    JoinToken,
    // The EC2 instance identity document and its signature.
    Aws,
    // The GCE instance identity token.
    Gcp,
    // The Azure IMDS attested document.
    Azure,
}

impl JoinMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            JoinMethod::Token => "token",
            JoinMethod::JoinToken => "join-token",
            JoinMethod::Aws => "aws",
            JoinMethod::Gcp => "gcp",
            JoinMethod::Azure => "azure",
        }
    }
}

impl Workload {
    /// The ServiceEntry's name: the service's own, else the group's.
    pub fn service_name(&self) -> Option<&str> {
        self.service
            .as_ref()
            .map(|s| s.name.as_deref().unwrap_or(&self.name))
    }
}

/// A readiness probe, run by the sidecar on the VM (Istio's `ReadinessProbe`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Probe {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_get: Option<HttpGet>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_socket: Option<TcpSocket>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecProbe>,
    /// A gRPC health check (istio/api #3372). The CRD and pilot-agent accept it, but istiod at
    /// the pinned Istio commit refuses it, so `validate` refuses it too (see `docs/fleet.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<GrpcProbe>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 2147483647))]
    pub initial_delay_seconds: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 2147483647))]
    pub timeout_seconds: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 2147483647))]
    pub period_seconds: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 2147483647))]
    pub success_threshold: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 2147483647))]
    pub failure_threshold: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpGet {
    #[schemars(range(min = 1, max = 65535))]
    pub port: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// `HTTP` or `HTTPS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpSocket {
    #[schemars(range(min = 1, max = 65535))]
    pub port: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExecProbe {
    /// The command and its arguments, none empty (the WorkloadGroup CRD's `minLength: 1`).
    #[schemars(length(min = 1), inner(length(min = 1)))]
    pub command: Vec<String>,
}

/// Istio's `GrpcHealthCheckConfig`: the standard gRPC health check (`grpc.health.v1.Health`)
/// on `port` of the VM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcProbe {
    #[schemars(range(min = 1, max = 65535))]
    pub port: u32,
    /// The service to ask about; empty asks about the server as a whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
}

/// The Istio service of a group: one ServiceEntry selecting the group's VMs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Service {
    /// The ServiceEntry's name; defaults to the group's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub name: Option<String>,
    /// 1 to 256 host names (the ServiceEntry CRD's limits).
    #[schemars(length(min = 1, max = 256), inner(length(max = 255)))]
    pub hosts: Vec<String>,
    /// At most 256 IP addresses or CIDR blocks (the ServiceEntry CRD's limits).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(max = 64)))]
    pub addresses: Vec<String>,
    /// 1 to 256 ports (the ServiceEntry CRD allows at most 256).
    #[schemars(length(min = 1, max = 256))]
    pub ports: Vec<ServicePort>,
    #[serde(default)]
    pub resolution: Resolution,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServicePort {
    #[schemars(range(min = 1, max = 65535))]
    pub number: u32,
    #[schemars(
        length(max = 63),
        regex(pattern = r"^[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?$")
    )]
    pub name: String,
    /// HTTP, HTTPS, HTTP2, GRPC, GRPC-Web, TCP, TLS, UDP, Mongo, Redis, MySQL (Istio's
    /// protocol names, in any letter case). Omitted: Istio detects the protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub target_port: Option<u32>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Resolution {
    #[default]
    Static,
    Dns,
    None,
}

impl Resolution {
    pub fn as_str(self) -> &'static str {
        match self {
            Resolution::Static => "STATIC",
            Resolution::Dns => "DNS",
            Resolution::None => "NONE",
        }
    }
}

/// A VM: one WorkloadEntry (unless its group auto-registers).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Instance {
    /// A DNS-1123 label: the WorkloadEntry's name.
    #[schemars(length(max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub name: String,
    /// The VM's IP address (v4 or v6), or a host name when the service resolves by DNS.
    pub address: String,
    /// The address is a public one that the VM does not hold itself (NAT); istioctl's
    /// `--external-ip`.
    #[serde(default)]
    pub external: bool,
    /// Extra labels of this VM, over the group's (with them, at most 256).
    #[serde(default)]
    #[schemars(extend("maxProperties" = 256))]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
}

impl Instance {
    /// The address parsed as an IP, when it is one.
    pub fn ip(&self) -> Option<std::net::IpAddr> {
        self.address.parse().ok()
    }
}

impl Fleet {
    /// Every VM with its group, in file order.
    pub fn vms(&self) -> impl Iterator<Item = (&Workload, &Instance)> {
        self.workloads
            .iter()
            .flat_map(|w| w.instances.iter().map(move |i| (w, i)))
    }

    /// True when a group gets its tokens from the join broker, which is then rendered.
    pub fn uses_join_broker(&self) -> bool {
        self.workloads.iter().any(|w| w.join.uses_broker())
    }

    /// The VM of that name, with its group.
    pub fn vm(&self, name: &str) -> Option<(&Workload, &Instance)> {
        self.vms().find(|(_, i)| i.name == name)
    }

    /// The JSON Schema of the fleet file, for editors and for the structural check.
    pub fn json_schema() -> serde_json::Value {
        let mut schema =
            serde_json::to_value(schemars::schema_for!(Fleet)).expect("a schema is JSON");
        drop_null_alternatives(&mut schema);
        schema
    }
}

/// Optional fields are simply absent when unset: removing the `null` alternatives that
/// schemars gives `Option`s keeps the structural check's errors plain (no `anyOf`).
fn drop_null_alternatives(node: &mut serde_json::Value) {
    use serde_json::Value;
    match node {
        Value::Object(map) => {
            if let Some(Value::Array(types)) = map.get_mut("type") {
                types.retain(|t| t != "null");
                if types.len() == 1 {
                    let only = types.remove(0);
                    map.insert("type".into(), only);
                }
            }
            if let Some(Value::Array(branches)) = map.get("anyOf") {
                let rest: Vec<Value> = branches
                    .iter()
                    .filter(|b| b.get("type").is_none_or(|t| t != "null"))
                    .cloned()
                    .collect();
                if rest.len() == 1 {
                    map.remove("anyOf");
                    if let Value::Object(branch) = &rest[0] {
                        for (k, v) in branch {
                            map.insert(k.clone(), v.clone());
                        }
                    }
                }
            }
            if map.get("default").is_some_and(Value::is_null) {
                map.remove("default");
            }
            map.values_mut().for_each(drop_null_alternatives);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_null_alternatives),
        _ => {}
    }
}

fn default_trust_domain() -> String {
    "cluster.local".to_owned()
}
fn default_istio_namespace() -> String {
    "istio-system".to_owned()
}
fn default_true() -> bool {
    true
}
fn default_gitops_path() -> String {
    "meshvm".to_owned()
}
fn default_branch() -> String {
    "main".to_owned()
}
fn default_engines() -> Vec<Engine> {
    vec![Engine::Argocd]
}
fn default_argocd_namespace() -> String {
    "argocd".to_owned()
}
fn default_argocd_project() -> String {
    "default".to_owned()
}
fn default_argocd_server() -> String {
    "https://kubernetes.default.svc".to_owned()
}
fn default_flux_namespace() -> String {
    "flux-system".to_owned()
}
fn default_service_account() -> String {
    "default".to_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_starter_fleet_is_valid() {
        let fleet = super::load_fleet_str(super::STARTER, "meshvm.yaml".as_ref()).unwrap();
        assert_eq!(fleet.vms().count(), 1);
    }

    /// `meshvm schema` carries validate's constraints (constants, ranges, name patterns, the
    /// CRDs' limits): an editor with the schema alone flags each of these fleets, which
    /// validate refuses.
    #[test]
    fn the_schema_alone_catches_what_validate_refuses() {
        let schema = super::Fleet::json_schema();
        let validator = jsonschema::validator_for(&schema).unwrap();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/invalid");
        for name in [
            "wrong-api-version",
            "port-zero",
            "port-too-large",
            "port-65536-in-ports",
            "probe-port-zero",
            "bad-sha256",
            "name-with-slash",
            "name-too-long",
            "namespace-too-long",
            "port-name-63",
            "probe-seconds-over-int32",
            "probe-exec-empty-argument",
            "version-as-number",
            "no-hosts",
        ] {
            let text = std::fs::read_to_string(dir.join(format!("{name}.yaml"))).unwrap();
            let value: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
            assert!(!validator.is_valid(&value), "{name}: the schema accepts it");
        }
        let seed = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../fixtures/fleets/seed/meshvm.yaml"),
        )
        .unwrap();
        let value: serde_json::Value = serde_saphyr::from_str(&seed).unwrap();
        assert!(validator.is_valid(&value), "the seed fleet passes");
    }
}
