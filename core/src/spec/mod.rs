//! The fleet file: its types, how it is read, and the checks it must pass.
//!
//! The types are the single source of truth for the file's shape: serde reads them, and the
//! JSON Schema derived from them (schemars) reports every structural error of a file at once,
//! with its position, before the typed read.

pub mod diagnostic;
pub mod inputs;
mod load;
pub mod names;
pub mod root_cert;
mod validate;

use std::collections::BTreeMap;
use std::ops::Deref;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub(crate) use load::did_you_mean;
pub use load::{LoadError, SourceFile, load_fleet, load_fleet_at, load_fleet_str};
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
    pub api_version: String,
    /// Always `Fleet`.
    pub kind: String,
    pub mesh: Mesh,
    pub sidecar: Sidecar,
    #[serde(default)]
    pub gitops: Gitops,
    #[serde(default)]
    pub workloads: Vec<Workload>,
}

/// A fleet that passed every check of `spec`, with the root certificate it names, read and
/// checked. Only `spec` makes one: whatever renders from it (`render`, the VM files, the
/// user-data's fleet data) cannot fail on it.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedFleet {
    fleet: Fleet,
    root_cert: Option<String>,
}

impl CheckedFleet {
    fn new(fleet: Fleet, root_cert: Option<String>) -> CheckedFleet {
        CheckedFleet { fleet, root_cert }
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
    pub version: String,
    #[serde(default)]
    pub package: PackageFormat,
    #[serde(default)]
    pub arch: Arch,
    /// SHA-256 of the package, as 64 hex digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
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
}

impl Default for Gitops {
    fn default() -> Self {
        Gitops {
            path: default_gitops_path(),
            repo_url: None,
            branch: default_branch(),
            engines: default_engines(),
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
    pub name: String,
    pub namespace: String,
    /// Defaults to `default`, as istioctl does.
    #[serde(default = "default_service_account")]
    pub service_account: String,
    /// The VMs' network; empty when they share the cluster's network.
    #[serde(default)]
    pub network: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// Named ports the VMs serve, such as `http: 5000`.
    #[serde(default)]
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_delay_seconds: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_seconds: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_threshold: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_threshold: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpGet {
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
    pub port: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExecProbe {
    pub command: Vec<String>,
}

/// The Istio service of a group: one ServiceEntry selecting the group's VMs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Service {
    /// The ServiceEntry's name; defaults to the group's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    pub ports: Vec<ServicePort>,
    #[serde(default)]
    pub resolution: Resolution,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServicePort {
    pub number: u32,
    pub name: String,
    /// HTTP, HTTPS, GRPC, HTTP2, MONGO, TCP, TLS (Istio's protocol names).
    #[serde(default = "default_protocol")]
    pub protocol: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
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
    pub name: String,
    /// The VM's IP address (v4 or v6), or a host name when the service resolves by DNS.
    pub address: String,
    /// The address is a public one that the VM does not hold itself (NAT); istioctl's
    /// `--external-ip`.
    #[serde(default)]
    pub external: bool,
    /// Extra labels of this VM, over the group's.
    #[serde(default)]
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
fn default_service_account() -> String {
    "default".to_owned()
}
fn default_protocol() -> String {
    "TCP".to_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_starter_fleet_is_valid() {
        let fleet = super::load_fleet_str(super::STARTER, "meshvm.yaml".as_ref()).unwrap();
        assert_eq!(fleet.vms().count(), 1);
    }
}
