//! The files a VM needs to join the mesh: `cluster.env`, `mesh.yaml`, `hosts` (and
//! `root-cert.pem`, `istio-token` when given), built exactly as
//! `istioctl x workload entry configure` builds them.
//!
//! One model, two front ends: [`Inputs`] are istioctl's inputs (a WorkloadGroup, the mesh
//! config, the cluster, the addresses and switches); [`Inputs::check`] reads them as istioctl
//! does into [`CheckedInputs`], which [`render`] writes out and cannot fail on. [`vm_files`]
//! derives the inputs from a checked fleet (whose VMs' inputs `spec` checked), and
//! `crate::vmfiles::istioctl` reads them from istioctl-style files and flags.
//!
//! Architecture invariant: pure. Same inputs, same bytes; nothing is read or printed here.
//! Where istioctl is nondeterministic (it joins `ISTIO_INBOUND_PORTS` in Go map order), meshvm
//! sorts the ports by number, one of the orders istioctl can produce.
//!
//! Deliberate differences from istioctl, each where istioctl's output would be unsafe or would
//! fail later: a proxy metadata key that is not a shell variable name is an error (istioctl
//! writes it into a file that root sources); a value holding a backslash or a NUL is quoted /
//! rejected; IP addresses, the revision and the istio namespace are checked (they end up in
//! `/etc/hosts`); ProxyConfig fields unknown to meshvm are kept rather than dropped.

mod go;
pub mod istioctl;
mod mesh_yaml;
mod proxy_config;

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde_json::{Map, Value, json};

use crate::k8s::istio::WorkloadGroup;
use crate::spec::names;
use crate::spec::{CheckedFleet, Fleet, Instance, Workload};
use crate::tree::FileTree;

pub use go::shell_quote;
pub use proxy_config::FieldError;

pub const CLUSTER_ENV: &str = "cluster.env";
pub const MESH_YAML: &str = "mesh.yaml";
pub const HOSTS: &str = "hosts";
pub const ROOT_CERT: &str = "root-cert.pem";
pub const ISTIO_TOKEN: &str = "istio-token";

/// Each file and where it goes on the VM.
pub const DESTINATIONS: &[(&str, &str)] = &[
    (ROOT_CERT, "/etc/certs/root-cert.pem"),
    (ISTIO_TOKEN, "/var/run/secrets/tokens/istio-token"),
    (CLUSTER_ENV, "/var/lib/istio/envoy/cluster.env"),
    (MESH_YAML, "/etc/istio/config/mesh"),
    (HOSTS, "/etc/hosts (append the line)"),
];

/// The annotation whose ProxyConfig YAML overlays the mesh's `defaultConfig`.
pub const PROXY_CONFIG_ANNOTATION: &str = "proxy.istio.io/config";

/// istiod's port for xDS and certificates (mTLS).
const ISTIOD_PORT: u16 = 15012;

/// The address the workload announces (`ISTIO_SVC_IP`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkloadIp {
    /// An address the VM holds itself (istioctl's `--internalIP`).
    Internal(String),
    /// A public address in front of the VM, such as NAT (`--externalIP`): the proxy then also
    /// rewrites probes to localhost.
    External(String),
}

/// Everything istioctl's `workload entry configure` reads, offline.
#[derive(Debug, Clone, PartialEq)]
pub struct Inputs {
    pub group: WorkloadGroup,
    /// The `mesh` data of the `istio[-<rev>]` ConfigMap (a MeshConfig): meshvm reads its
    /// `trustDomain` and its `defaultConfig`, a ProxyConfig kept as data.
    pub mesh_config: Value,
    pub cluster_id: String,
    /// istiod revision; empty or `default` for none.
    pub revision: String,
    pub istio_namespace: String,
    /// The address VMs reach istiod at (the east-west gateway), for `hosts`.
    pub ingress_ip: Option<String>,
    pub workload_ip: Option<WorkloadIp>,
    pub capture_dns: bool,
    pub auto_register: bool,
}

/// Inputs that [`Inputs::check`] accepted, read into what the files say: cluster.env's
/// variables (each name a shell variable name, no value with a NUL), mesh.yaml's ProxyConfig,
/// the hosts line. Only this module makes one.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedInputs {
    env: BTreeMap<String, String>,
    mesh_yaml: Value,
    hosts: String,
}

/// Why the files cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VmFilesError {
    #[error("no VM named {name:?} in the fleet{hint}")]
    UnknownVm { name: String, hint: String },
    #[error("mesh config: {0}")]
    MeshConfig(FieldError),
    #[error("annotation {PROXY_CONFIG_ANNOTATION} in {place}: {message}")]
    Annotation {
        place: &'static str,
        message: String,
    },
    #[error("{what}: {reason}")]
    Invalid { what: String, reason: String },
}

impl VmFilesError {
    pub fn kind(&self) -> crate::ErrorKind {
        crate::ErrorKind::InvalidInput
    }
}

fn invalid(what: impl Into<String>, reason: impl Into<String>) -> VmFilesError {
    VmFilesError::Invalid {
        what: what.into(),
        reason: reason.into(),
    }
}

/// The files of one VM of the fleet: cluster.env, mesh.yaml, hosts, and root-cert.pem when the
/// fleet has a root certificate. The istio-token is not part of a fleet; the caller adds it
/// with [`insert_token`]. The one error is a VM the fleet does not have.
pub fn vm_files(fleet: &CheckedFleet, vm: &str) -> Result<FileTree, VmFilesError> {
    let (workload, instance) = fleet.vm(vm).ok_or_else(|| unknown_vm(fleet, vm))?;
    let mut tree = render(&fleet_inputs(fleet, workload, instance));
    if let Some(pem) = fleet.root_cert() {
        tree.insert(ROOT_CERT, pem);
    }
    Ok(tree)
}

/// Adds a ServiceAccount token (audience `istio-ca`) as [`ISTIO_TOKEN`], readable by its
/// owner only. Surrounding whitespace, such as the newline `kubectl create token` prints, is
/// dropped, as istioctl writes the bare token. No error ever holds the token.
pub fn insert_token(tree: &mut FileTree, token: &[u8]) -> Result<(), VmFilesError> {
    let token = token.trim_ascii();
    if token.is_empty() {
        return Err(invalid("the token file", "is empty"));
    }
    if token
        .iter()
        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err(invalid(
            "the token file",
            "holds whitespace or control characters inside the token; it should hold one token",
        ));
    }
    tree.insert_private(ISTIO_TOKEN, token.to_vec());
    Ok(())
}

/// The checked inputs of one VM of a checked fleet. They cannot fail the check: `spec` runs
/// it on every VM's inputs before it makes a [`CheckedFleet`]. The group's part is checked
/// once per group of the fleet ([`GroupCache`]) and finished here with the VM's own.
pub fn fleet_inputs(
    fleet: &CheckedFleet,
    workload: &Workload,
    instance: &Instance,
) -> CheckedInputs {
    let workload_ip = fleet_workload_ip(instance);
    let delta = VmDelta {
        labels: &instance.labels,
        workload_entry: names_entry(workload).then_some(instance.name.as_str()),
        workload_ip: workload_ip.as_ref(),
    };
    let checked = match fleet.vm_groups().get(fleet, workload) {
        Some(group) => group.vm(&delta),
        None => fleet_group(fleet, workload).vm(&delta),
    };
    checked.expect("spec checks the inputs of every VM of a checked fleet")
}

/// Each group's checked part of its VMs' inputs ([`CheckedGroup`]), made the first time one
/// of its VMs is rendered: the mesh config, annotations and probe are read once per group.
/// Held by the [`CheckedFleet`] it belongs to, which cannot change; a copy starts empty.
#[derive(Default)]
pub struct GroupCache(std::sync::OnceLock<Box<[std::sync::OnceLock<CheckedGroup>]>>);

impl GroupCache {
    /// The group of `workload`, when it is one of `fleet`'s (by address, not by value).
    fn get(&self, fleet: &CheckedFleet, workload: &Workload) -> Option<&CheckedGroup> {
        let groups = &fleet.workloads;
        let offset = (workload as *const Workload as usize).wrapping_sub(groups.as_ptr() as usize);
        let index = offset / std::mem::size_of::<Workload>().max(1);
        if !groups.get(index).is_some_and(|w| std::ptr::eq(w, workload)) {
            return None;
        }
        let slots = self
            .0
            .get_or_init(|| groups.iter().map(|_| Default::default()).collect());
        Some(slots[index].get_or_init(|| fleet_group(fleet, workload)))
    }
}

impl Clone for GroupCache {
    fn clone(&self) -> GroupCache {
        GroupCache::default()
    }
}

impl PartialEq for GroupCache {
    /// A cache of what its fleet decides: equal fleets, equal caches.
    fn eq(&self, _: &GroupCache) -> bool {
        true
    }
}

impl std::fmt::Debug for GroupCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GroupCache")
    }
}

fn fleet_group(fleet: &Fleet, workload: &Workload) -> CheckedGroup {
    let mut group = check_group(&fleet_group_inputs(fleet, workload))
        .expect("spec checks the inputs of every group of a checked fleet");
    group.files = GroupFiles::of(&group, names_entry(workload));
    group
}

/// cluster.env, mesh.yaml and hosts of one VM of a checked fleet: the bytes of
/// `render(&fleet_inputs(fleet, workload, instance))`, spliced from its group's files
/// ([`GroupFiles`]) when the VM adds no labels of its own.
pub fn fleet_files(fleet: &CheckedFleet, workload: &Workload, instance: &Instance) -> FileTree {
    let fast = fleet
        .vm_groups()
        .get(fleet, workload)
        .and_then(|group| Some((group, group.files.as_ref()?)))
        .and_then(|(group, files)| files.vm(group, workload, instance));
    fast.unwrap_or_else(|| render(&fleet_inputs(fleet, workload, instance)))
}

/// A group's VM files with a hole for what each VM adds to them, so that a VM without labels
/// of its own costs a few copies: cluster.env's lines (the VM's address and entry name are
/// merged in, in the file's order) and mesh.yaml around the value of
/// `ISTIO_META_WORKLOAD_ENTRY` (the one thing such a VM adds to it).
#[derive(Debug, Clone)]
struct GroupFiles {
    /// `(KEY=, line)` in cluster.env's order.
    env_lines: Vec<(String, String)>,
    /// mesh.yaml before and after the VM's entry name; no `after` when it names none.
    mesh_yaml: (String, Option<String>),
    hosts: String,
}

/// A value no mesh.yaml holds, written plain: where the VM's entry name goes.
const ENTRY_HOLE: &str = "meshvmWorkloadEntryHole0";

impl GroupFiles {
    /// `None` when the group's files take the general way anyway (a value or key the direct
    /// mesh.yaml writer leaves to serde-saphyr, an error left to report).
    fn of(group: &CheckedGroup, names_entry: bool) -> Option<GroupFiles> {
        if group.env_error.is_some() {
            return None;
        }
        let hosts = group.hosts.clone().ok()?;
        let names_entry = names_entry && !group.annotation_names_entry;
        let mut default_config = group.default_config.clone();
        if names_entry {
            default_config["proxyMetadata"][WORKLOAD_ENTRY_KEY] = Value::String(ENTRY_HOLE.into());
        }
        let text = mesh_yaml::to_string(&json!({ "defaultConfig": default_config }))?;
        let mesh_yaml = if names_entry {
            let at = text.find(ENTRY_HOLE)?;
            if text.rfind(ENTRY_HOLE) != Some(at) {
                return None;
            }
            let (before, after) = text.split_at(at);
            (
                before.to_owned(),
                Some(after[ENTRY_HOLE.len()..].to_owned()),
            )
        } else if text.contains(ENTRY_HOLE) {
            return None;
        } else {
            (text, None)
        };
        let mut env_lines: Vec<(String, String)> = group
            .env
            .iter()
            .map(|(k, v)| (format!("{k}="), env_line(k, v)))
            .collect();
        env_lines.sort();
        Some(GroupFiles {
            env_lines,
            mesh_yaml,
            hosts,
        })
    }

    /// The VM's files, or `None` for a VM this splice does not cover (labels of its own).
    fn vm(&self, group: &CheckedGroup, workload: &Workload, vm: &Instance) -> Option<FileTree> {
        if !vm.labels.is_empty() {
            return None;
        }
        let mut own: Vec<(String, String)> = Vec::with_capacity(3);
        let mesh_yaml = match &self.mesh_yaml {
            (whole, None) => whole.clone(),
            (before, Some(after)) => {
                debug_assert!(names_entry(workload) && !group.annotation_names_entry);
                if vm.name.contains('\0') {
                    return None;
                }
                let mut out = String::with_capacity(before.len() + vm.name.len() + after.len());
                out.push_str(before);
                crate::k8s::yaml::push_scalar(&mut out, &vm.name)?;
                out.push_str(after);
                own.push((
                    format!("{WORKLOAD_ENTRY_KEY}="),
                    env_line(WORKLOAD_ENTRY_KEY, &vm.name),
                ));
                out
            }
        };
        if vm.ip().is_some() {
            own.push((
                "ISTIO_SVC_IP=".into(),
                env_line("ISTIO_SVC_IP", &vm.address),
            ));
            if vm.external {
                let key = "REWRITE_PROBE_LEGACY_LOCALHOST_DESTINATION";
                own.push((format!("{key}="), env_line(key, "true")));
            }
        }
        own.sort();
        // Merge the VM's lines into the group's, the VM's replacing a group line of its key.
        let mut env =
            String::with_capacity(self.env_lines.iter().map(|(_, l)| l.len()).sum::<usize>() + 160);
        let mut own = own.into_iter().peekable();
        for (key, line) in &self.env_lines {
            let mut replaced = false;
            while let Some((k, l)) = own.next_if(|(k, _)| k <= key) {
                replaced |= &k == key;
                env.push_str(&l);
            }
            if !replaced {
                env.push_str(line);
            }
        }
        for (_, l) in own {
            env.push_str(&l);
        }
        if env.is_empty() {
            env.push('\n');
        }
        let mut tree = FileTree::new();
        tree.insert(CLUSTER_ENV, env);
        tree.insert(MESH_YAML, mesh_yaml);
        tree.insert(HOSTS, self.hosts.as_str());
        Some(tree)
    }
}

/// Whether the group's VMs name their WorkloadEntry in their proxy metadata: istiod reports
/// the probe's result on the WorkloadEntry this names (the proxy's WORKLOAD_ENTRY node
/// metadata); auto-registered entries are tracked by istiod itself.
fn names_entry(workload: &Workload) -> bool {
    workload.probe.is_some() && !workload.auto_register
}

fn fleet_workload_ip(instance: &Instance) -> Option<WorkloadIp> {
    instance.ip().map(|_| {
        if instance.external {
            WorkloadIp::External(instance.address.clone())
        } else {
            WorkloadIp::Internal(instance.address.clone())
        }
    })
}

/// istioctl's inputs for one VM of the fleet.
///
/// The mesh config is the one Istio's chart installs: `trustDomain`, and a `defaultConfig`
/// with istiod's address, the mesh ID and the mesh-wide proxy metadata (the group's own over
/// it; with a probe, `ISTIO_META_WORKLOAD_ENTRY` names the VM's entry for health checks). The
/// VM's labels are its group's plus its own, the labels of its WorkloadEntry; a VM
/// without a network of its own is on the cluster's.
pub(crate) fn fleet_raw_inputs(fleet: &Fleet, workload: &Workload, instance: &Instance) -> Inputs {
    let mut inputs = fleet_group_inputs(fleet, workload);
    inputs
        .group
        .spec
        .metadata
        .get_or_insert_with(Default::default)
        .labels
        .extend(instance.labels.clone());
    if names_entry(workload) {
        inputs.mesh_config["defaultConfig"]["proxyMetadata"][WORKLOAD_ENTRY_KEY] =
            Value::String(instance.name.clone());
    }
    inputs.workload_ip = fleet_workload_ip(instance);
    inputs
}

/// istioctl's inputs for the VMs of a group, without what each VM adds ([`VmDelta`]).
fn fleet_group_inputs(fleet: &Fleet, workload: &Workload) -> Inputs {
    let mesh = &fleet.mesh;
    let group = crate::render::objects::workload_group(mesh, workload);
    let mut proxy_metadata = mesh.proxy_metadata.clone();
    proxy_metadata.extend(workload.proxy_metadata.clone());
    let mesh_config = json!({
        "trustDomain": mesh.trust_domain,
        "defaultConfig": {
            "discoveryAddress": format!("{}:{ISTIOD_PORT}", mesh.istiod_host()),
            "meshId": mesh.mesh_id,
            "proxyMetadata": proxy_metadata,
        },
    });
    Inputs {
        group,
        mesh_config,
        cluster_id: mesh.cluster_id.clone(),
        revision: mesh.revision.clone(),
        istio_namespace: mesh.istio_namespace.clone(),
        ingress_ip: Some(mesh.east_west_gateway.address.clone()),
        workload_ip: None,
        capture_dns: mesh.dns_capture,
        auto_register: workload.auto_register,
    }
}

fn unknown_vm(fleet: &Fleet, name: &str) -> VmFilesError {
    let names: Vec<String> = fleet.vms().map(|(_, i)| i.name.clone()).collect();
    let hint = match crate::spec::did_you_mean(name, &names) {
        Some(best) => format!("; did you mean {best:?}?"),
        None if names.is_empty() => "; it has no VMs".to_owned(),
        None if names.len() <= 10 => format!("; its VMs are: {}", names.join(", ")),
        None => format!("; it has {} VMs, such as {}", names.len(), names[0]),
    };
    VmFilesError::UnknownVm {
        name: name.to_owned(),
        hint,
    }
}

/// The revision, or `None` for the default installation.
fn revisioned(revision: &str) -> Option<&str> {
    match revision {
        "" | "default" => None,
        rev => Some(rev),
    }
}

/// `istiod[-<rev>].<ns>.svc`
pub fn istiod_host(istio_namespace: &str, revision: &str) -> String {
    match revisioned(revision) {
        Some(rev) => format!("istiod-{rev}.{istio_namespace}.svc"),
        None => format!("istiod.{istio_namespace}.svc"),
    }
}

/// The mesh config's trust domain and default ProxyConfig, read as istioctl reads them.
pub(crate) fn read_mesh_config(
    mesh: &Value,
) -> Result<(String, proxy_config::ProxyConfig), VmFilesError> {
    let empty = Map::new();
    let fields = match mesh {
        Value::Null => &empty,
        Value::Object(m) => m,
        other => {
            return Err(invalid(
                "mesh config",
                format!("expected a mapping (a MeshConfig), found {other}"),
            ));
        }
    };
    let field = |json: &str, proto: &str| {
        fields
            .get(json)
            .filter(|v| !v.is_null())
            .or_else(|| fields.get(proto).filter(|v| !v.is_null()))
    };
    let trust_domain = match field("trustDomain", "trust_domain") {
        None => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(invalid(
                "mesh config: trustDomain",
                format!("expected a string, found {other}"),
            ));
        }
    };
    let default_config = match field("defaultConfig", "default_config") {
        None => proxy_config::ProxyConfig::default(),
        Some(doc) => proxy_config::ProxyConfig::parse(doc, "defaultConfig")
            .map_err(VmFilesError::MeshConfig)?,
    };
    Ok((trust_domain, default_config))
}

/// Reads the text of a `proxy.istio.io/config` annotation.
pub(crate) fn read_proxy_config_annotation(
    text: &str,
) -> Result<proxy_config::ProxyConfig, String> {
    let doc: Value = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_saphyr::from_str(text).map_err(|e| e.without_snippet().to_string())?
    };
    proxy_config::ProxyConfig::parse(&doc, "").map_err(|e| e.to_string())
}

/// Checks a WorkloadGroup `probe` the way it is read into the ProxyConfig.
pub(crate) fn check_probe(probe: &Value) -> Result<(), FieldError> {
    proxy_config::ProxyConfig::default().set_readiness_probe(Some(probe))
}

/// The files istioctl's `workload entry configure` writes, minus the root certificate and
/// token, which come from outside: `cluster.env`, `mesh.yaml`, `hosts`.
pub fn render(inputs: &CheckedInputs) -> FileTree {
    let mut tree = FileTree::new();
    tree.insert(CLUSTER_ENV, cluster_env(&inputs.env));
    // The direct writer for the usual shapes, serde-saphyr for the rest: the same bytes.
    let mesh_yaml = mesh_yaml::to_string(&inputs.mesh_yaml)
        .unwrap_or_else(|| crate::k8s::yaml::to_string(&GoYamlOrder(&inputs.mesh_yaml)));
    tree.insert(MESH_YAML, mesh_yaml);
    tree.insert(HOSTS, inputs.hosts.clone());
    tree
}

impl Inputs {
    /// Reads the inputs as istioctl does, into what the files say; every problem of the
    /// inputs is found here.
    pub fn check(&self) -> Result<CheckedInputs, VmFilesError> {
        check(self)
    }
}

fn check(inputs: &Inputs) -> Result<CheckedInputs, VmFilesError> {
    check_group(inputs)?.vm(&VmDelta {
        labels: &BTreeMap::new(),
        workload_entry: None,
        workload_ip: inputs.workload_ip.as_ref(),
    })
}

/// What a VM of a fleet adds to its group's inputs ([`fleet_raw_inputs`] puts the same into
/// [`Inputs`]): its labels (over the group's), its WorkloadEntry's name in the proxy metadata
/// (under `ISTIO_META_WORKLOAD_ENTRY`, over the mesh's and the group's metadata, under an
/// annotation's), its address.
struct VmDelta<'a> {
    labels: &'a BTreeMap<String, String>,
    workload_entry: Option<&'a str>,
    workload_ip: Option<&'a WorkloadIp>,
}

/// The proxy metadata key naming the VM's WorkloadEntry for health checks.
const WORKLOAD_ENTRY_KEY: &str = "ISTIO_META_WORKLOAD_ENTRY";

/// What [`check_group`] read from the inputs but a VM's own part ([`VmDelta`]): the checks
/// and parsing of the mesh config, the annotations and the probe happen once for a group, not
/// once per VM. [`CheckedGroup::vm`] finishes one VM's [`CheckedInputs`], with the errors of
/// the inputs in the order [`Inputs::check`] always reported them.
#[derive(Debug, Clone)]
pub(crate) struct CheckedGroup {
    /// cluster.env's variables, without the VM's address.
    env: BTreeMap<String, String>,
    /// `check_env(&env)`'s answer, reported after the VM's address is checked.
    env_error: Option<VmFilesError>,
    /// mesh.yaml's `defaultConfig`, as written, with the group's proxy metadata.
    default_config: Value,
    /// The labels the proxy is named by, the VM's go between: the group's
    /// `spec.metadata.labels`, then the template's.
    spec_labels: BTreeMap<String, String>,
    template_labels: BTreeMap<String, String>,
    name: String,
    /// An annotation sets `ISTIO_META_WORKLOAD_ENTRY`: it wins over the VM's name.
    annotation_names_entry: bool,
    hosts: Result<String, VmFilesError>,
    /// The VM files with holes, for the fleet's groups ([`fleet_files`]).
    files: Option<GroupFiles>,
}

fn check_group(inputs: &Inputs) -> Result<CheckedGroup, VmFilesError> {
    let wg = &inputs.group;
    let name = wg.metadata.name.as_str();
    let namespace = wg.metadata.namespace.as_deref().unwrap_or("");
    if name.is_empty() {
        return Err(invalid("WorkloadGroup", "metadata.name is empty"));
    }
    if namespace.is_empty() {
        return Err(invalid("WorkloadGroup", "metadata.namespace is empty"));
    }
    names::dns1123_label(&inputs.istio_namespace).map_err(|r| {
        invalid(
            "istio namespace",
            format!("{:?} {r}", inputs.istio_namespace),
        )
    })?;
    let revision = revisioned(&inputs.revision);
    if let Some(rev) = revision {
        names::dns1123_label(rev).map_err(|r| invalid("revision", format!("{rev:?} {r}")))?;
    }
    let istiod_addr = format!(
        "{}:{ISTIOD_PORT}",
        istiod_host(&inputs.istio_namespace, &inputs.revision)
    );

    // mesh.yaml: the mesh's defaultConfig, the annotations over it, then the workload's own.
    let (trust_domain, mut proxy) = read_mesh_config(&inputs.mesh_config)?;
    if revision.is_some() && proxy.get_str("discoveryAddress").is_empty() {
        proxy.set("discoveryAddress", Value::String(istiod_addr.clone()));
    }
    let mut metadata = proxy.proxy_metadata();
    let mut annotation_names_entry = false;
    let spec_metadata = wg.spec.metadata.clone().unwrap_or_default();
    for (place, annotations) in [
        ("metadata.annotations", &wg.metadata.annotations),
        ("spec.metadata.annotations", &spec_metadata.annotations),
    ] {
        if let Some(text) = annotations.get(PROXY_CONFIG_ANNOTATION) {
            let overlay = read_proxy_config_annotation(text)
                .map_err(|message| VmFilesError::Annotation { place, message })?;
            proxy.apply(&overlay);
            let overlay_metadata = overlay.proxy_metadata();
            annotation_names_entry |= overlay_metadata.contains_key(WORKLOAD_ENTRY_KEY);
            metadata.extend(overlay_metadata);
        }
    }
    let template = &wg.spec.template;
    proxy
        .set_readiness_probe(wg.spec.probe.as_ref())
        .map_err(|e| invalid("WorkloadGroup spec.probe", e.to_string()))?;
    let service_account = template
        .service_account
        .as_deref()
        .filter(|sa| !sa.is_empty())
        .unwrap_or("default");
    let mut set = |k: &str, v: &str| {
        metadata.insert(k.to_owned(), Value::String(v.to_owned()));
    };
    // Placeholders for the keys a VM's labels decide, set (in their place) by `labels_into`.
    set("CANONICAL_SERVICE", "");
    set("CANONICAL_REVISION", "");
    set("POD_NAMESPACE", namespace);
    set("SERVICE_ACCOUNT", service_account);
    set("TRUST_DOMAIN", &trust_domain);
    set("ISTIO_META_CLUSTER_ID", &inputs.cluster_id);
    set("ISTIO_META_MESH_ID", proxy.get_str("meshId"));
    set(
        "ISTIO_META_NETWORK",
        template.network.as_deref().unwrap_or(""),
    );
    if !template.ports.is_empty() {
        set("ISTIO_META_POD_PORTS", &pod_ports_json(&template.ports));
    }
    set("ISTIO_META_WORKLOAD_NAME", name);
    set("ISTIO_METAJSON_LABELS", "");
    if inputs.capture_dns {
        set("ISTIO_META_DNS_CAPTURE", "true");
    }
    if inputs.auto_register {
        set("ISTIO_META_AUTO_REGISTER_GROUP", name);
    }
    let mut group = CheckedGroup {
        env: BTreeMap::new(),
        env_error: None,
        default_config: Value::Null,
        spec_labels: spec_metadata.labels,
        template_labels: template.labels.clone(),
        name: name.to_owned(),
        annotation_names_entry,
        hosts: Ok(String::new()),
        files: None,
    };
    let mut env = BTreeMap::new();
    group.labels_into(&BTreeMap::new(), &mut metadata, &mut env);
    env.extend(
        metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned())),
    );
    proxy.set("proxyMetadata", Value::Object(metadata));

    // cluster.env: the proxy metadata, then what the agent needs to know about the workload.
    let status_port = proxy.get_int("statusPort");
    let mut ports: Vec<u32> = template.ports.values().copied().collect();
    ports.sort_unstable();
    let inbound = if ports.is_empty() {
        "*".to_owned()
    } else {
        ports
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    // 22 keeps SSH reachable whatever the mesh does; 15090 is Envoy's Prometheus port; 15021
    // and 15020 (or a custom status port) are the agent's.
    let mut exclude = "22,15090,15021".to_owned();
    if status_port != 15090 && status_port != 15021 {
        let status = if status_port == 0 { 15020 } else { status_port };
        exclude.push_str(&format!(",{status}"));
    }
    let mut put = |k: &str, v: String| {
        env.insert(k.to_owned(), v);
    };
    put("ISTIO_INBOUND_PORTS", inbound);
    put("ISTIO_NAMESPACE", namespace.to_owned());
    put("ISTIO_SERVICE", format!("{name}.{namespace}"));
    put("ISTIO_SERVICE_CIDR", "*".to_owned());
    put("ISTIO_LOCAL_EXCLUDE_PORTS", exclude);
    put("SERVICE_ACCOUNT", service_account.to_owned());
    if revision.is_some() {
        put("CA_ADDR", istiod_addr.clone());
    }
    group.env_error = check_env(&env).err();
    group.env = env;
    group.default_config = proxy.into_value();
    group.hosts = match &inputs.ingress_ip {
        Some(ip) => check_ip("ingress IP", ip).map(|()| {
            format!(
                "{ip} {}\n",
                istiod_host(&inputs.istio_namespace, &inputs.revision)
            )
        }),
        None => Ok(String::new()),
    };
    Ok(group)
}

impl CheckedGroup {
    /// Sets what the labels decide (the canonical service and revision, the labels' JSON)
    /// into the proxy metadata and cluster.env, with a VM's own labels over the group's.
    fn labels_into(
        &self,
        vm_labels: &BTreeMap<String, String>,
        metadata: &mut Map<String, Value>,
        env: &mut BTreeMap<String, String>,
    ) {
        let mut labels = self.spec_labels.clone();
        labels.extend(vm_labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        labels.extend(self.template_labels.clone());
        let (canonical_name, canonical_revision) = canonical_service(&labels, &self.name);
        labels.insert(
            "service.istio.io/canonical-name".into(),
            canonical_name.clone(),
        );
        labels.insert(
            "service.istio.io/canonical-revision".into(),
            canonical_revision.clone(),
        );
        for (k, v) in [
            ("CANONICAL_SERVICE", canonical_name),
            ("CANONICAL_REVISION", canonical_revision),
            ("ISTIO_METAJSON_LABELS", go::json_string_map(&labels)),
        ] {
            metadata.insert(k.to_owned(), Value::String(v.clone()));
            env.insert(k.to_owned(), v);
        }
    }

    /// One VM's checked inputs: the group's with the VM's part.
    fn vm(&self, vm: &VmDelta) -> Result<CheckedInputs, VmFilesError> {
        let mut env = self.env.clone();
        let mut default_config = self.default_config.clone();
        let entry = vm.workload_entry.filter(|_| !self.annotation_names_entry);
        let vm_metadata = entry.is_some() || !vm.labels.is_empty();
        if vm_metadata {
            let metadata = match default_config.get_mut("proxyMetadata") {
                Some(Value::Object(m)) => m,
                _ => unreachable!("the group's proxy metadata is never empty"),
            };
            if let Some(name) = entry {
                metadata.insert(
                    WORKLOAD_ENTRY_KEY.to_owned(),
                    Value::String(name.to_owned()),
                );
                env.insert(WORKLOAD_ENTRY_KEY.to_owned(), name.to_owned());
            }
            if !vm.labels.is_empty() {
                self.labels_into(vm.labels, metadata, &mut env);
            }
        }
        // The VM's values go under names that are shell names; only a NUL would be wrong.
        let vm_values_ok = !vm_metadata
            || [
                WORKLOAD_ENTRY_KEY,
                "CANONICAL_SERVICE",
                "CANONICAL_REVISION",
                "ISTIO_METAJSON_LABELS",
            ]
            .iter()
            .all(|k| env.get(*k).is_none_or(|v| !v.contains('\0')));
        let mut put = |k: &str, v: &str| {
            env.insert(k.to_owned(), v.to_owned());
        };
        match vm.workload_ip {
            Some(WorkloadIp::Internal(ip)) => {
                check_ip("internal IP", ip)?;
                put("ISTIO_SVC_IP", ip);
            }
            Some(WorkloadIp::External(ip)) => {
                check_ip("external IP", ip)?;
                put("ISTIO_SVC_IP", ip);
                put("REWRITE_PROBE_LEGACY_LOCALHOST_DESTINATION", "true");
            }
            None => {}
        }
        // The group's variables passed; the VM's only replace values of valid names.
        if self.env_error.is_some() || !vm_values_ok {
            check_env(&env)?;
        }
        Ok(CheckedInputs {
            env,
            mesh_yaml: json!({ "defaultConfig": default_config }),
            hosts: self.hosts.clone()?,
        })
    }
}

/// cluster.env is sourced by a shell: every key a variable name, no value with a NUL.
fn check_env(env: &BTreeMap<String, String>) -> Result<(), VmFilesError> {
    for (key, value) in env {
        names::env_name(key).map_err(|reason| {
            invalid(
                "proxy metadata",
                format!("key {key:?} {reason}; cluster.env is sourced by a shell"),
            )
        })?;
        if value.contains('\0') {
            return Err(invalid(
                "proxy metadata",
                format!("{key} holds a NUL character, which no environment variable can"),
            ));
        }
    }
    Ok(())
}

/// `KEY=value` lines, values shell-quoted, sorted as istioctl sorts them: by the whole line.
fn cluster_env(env: &BTreeMap<String, String>) -> String {
    // A key is a shell name, without `=`: the order of whole lines is the order of `KEY=`.
    let mut keys: Vec<&String> = env.keys().collect();
    keys.sort_by(|a, b| a.bytes().chain(*b"=").cmp(b.bytes().chain(*b"=")));
    let mut out = String::with_capacity(env.iter().map(|(k, v)| k.len() + v.len() + 4).sum());
    for key in keys {
        push_env_line(&mut out, key, &env[key]);
    }
    if out.is_empty() {
        out.push('\n');
    }
    out
}

/// `KEY=value\n`, the value shell-quoted.
fn push_env_line(out: &mut String, key: &str, value: &str) {
    out.push_str(key);
    out.push('=');
    go::push_shell_quoted(out, value);
    out.push('\n');
}

fn env_line(key: &str, value: &str) -> String {
    let mut out = String::with_capacity(key.len() + value.len() + 4);
    push_env_line(&mut out, key, value);
    out
}

fn check_ip(what: &str, ip: &str) -> Result<(), VmFilesError> {
    ip.parse::<IpAddr>()
        .map(|_| ())
        .map_err(|_| invalid(what, format!("{ip:?} is not an IPv4 or IPv6 address")))
}

/// The canonical service and revision of a workload, from the first label present in
/// istio's order (an empty value counts), else the workload's name and `latest`.
pub fn canonical_service(labels: &BTreeMap<String, String>, workload: &str) -> (String, String) {
    let first = |keys: [&str; 3]| keys.iter().find_map(|k| labels.get(*k).cloned());
    (
        first([
            "service.istio.io/canonical-name",
            "app.kubernetes.io/name",
            "app",
        ])
        .unwrap_or_else(|| workload.to_owned()),
        first([
            "service.istio.io/canonical-revision",
            "app.kubernetes.io/version",
            "version",
        ])
        .unwrap_or_else(|| "latest".to_owned()),
    )
}

/// `ISTIO_META_POD_PORTS`: istio's `[]model.PodPort` as JSON, sorted by name.
pub fn pod_ports_json(ports: &BTreeMap<String, u32>) -> String {
    let mut out = String::from("[");
    for (i, (name, port)) in ports.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('{');
        if !name.is_empty() {
            out.push_str("\"name\":");
            go::push_json_string(&mut out, name);
            out.push(',');
        }
        out.push_str(&format!("\"containerPort\":{port},\"protocol\":\"\"}}"));
    }
    out.push(']');
    out
}

/// A JSON value serialized with the keys of every map in the order gopkg.in/yaml.v2 writes
/// them ([`go::yaml_key_cmp`]), without rebuilding the maps.
struct GoYamlOrder<'a>(&'a Value);

impl serde::Serialize for GoYamlOrder<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self.0 {
            Value::Object(map) => {
                let mut entries: Vec<(&String, &Value)> = map.iter().collect();
                entries.sort_by(|a, b| go::yaml_key_cmp(a.0, b.0));
                let mut out = s.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    out.serialize_entry(k, &GoYamlOrder(v))?;
                }
                out.end()
            }
            Value::Array(items) => s.collect_seq(items.iter().map(GoYamlOrder)),
            other => other.serialize(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_ports_like_istioctl() {
        let ports: BTreeMap<String, u32> = [("HTTPS".into(), 443), ("HTTP".into(), 80)].into();
        assert_eq!(
            pod_ports_json(&ports),
            r#"[{"name":"HTTP","containerPort":80,"protocol":""},{"name":"HTTPS","containerPort":443,"protocol":""}]"#
        );
    }

    #[test]
    fn canonical_service_order() {
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            canonical_service(&labels(&[]), "wg"),
            ("wg".into(), "latest".into())
        );
        assert_eq!(
            canonical_service(
                &labels(&[
                    ("app", "a"),
                    ("app.kubernetes.io/name", "b"),
                    ("version", "v1")
                ]),
                "wg"
            ),
            ("b".into(), "v1".into())
        );
        assert_eq!(
            canonical_service(
                &labels(&[("service.istio.io/canonical-name", ""), ("app", "a")]),
                "wg"
            )
            .0,
            ""
        );
    }

    /// A small fleet varied where a VM's files depend on more than its group: VM labels over
    /// the group's (the canonical service among them), a probe (the VM names its entry),
    /// annotations and proxy metadata that set the same keys, external and host-name
    /// addresses, auto-registration, a revision.
    fn varied_fleet(picks: &[u8]) -> Fleet {
        let mut fleet = crate::synthetic::fleet(24);
        let pick = |i: usize| picks[i % picks.len()] as usize;
        let values = ["", "a", "v2", "on", "x y", "q\"r"];
        let keys = [
            "app",
            "version",
            "service.istio.io/canonical-name",
            "app.kubernetes.io/version",
            "extra",
        ];
        if pick(0) % 2 == 0 {
            fleet.mesh.revision = "1-28".into();
        }
        if pick(1) % 3 == 0 {
            fleet
                .mesh
                .proxy_metadata
                .insert(WORKLOAD_ENTRY_KEY.into(), "mesh".into());
        }
        fleet.mesh.dns_capture = pick(2) % 2 == 0;
        for (g, w) in fleet.workloads.iter_mut().enumerate() {
            let p = |i: usize| pick(g * 7 + i + 3);
            w.auto_register = p(0) % 4 == 0;
            if p(1) % 3 == 0 {
                w.probe = None;
            }
            if p(2) % 3 == 0 {
                w.proxy_metadata
                    .insert(WORKLOAD_ENTRY_KEY.into(), "group".into());
            }
            match p(3) % 4 {
                0 => {}
                1 => {
                    w.annotations.insert(
                        PROXY_CONFIG_ANNOTATION.into(),
                        "proxyMetadata: {ISTIO_META_WORKLOAD_ENTRY: annotated, A: b}".into(),
                    );
                }
                2 => {
                    w.annotations.insert(
                        PROXY_CONFIG_ANNOTATION.into(),
                        "statusPort: 15021\nproxyMetadata: {B: c}".into(),
                    );
                }
                _ => {
                    w.labels.insert(keys[p(4) % keys.len()].into(), "g".into());
                }
            }
            for (i, vm) in w.instances.iter_mut().enumerate() {
                let q = |j: usize| pick(g * 13 + i * 5 + j);
                for j in 0..q(0) % 3 {
                    vm.labels.insert(
                        keys[q(j + 1) % keys.len()].into(),
                        values[q(j + 2) % values.len()].into(),
                    );
                }
                vm.external = q(4) % 5 == 0;
                if q(5) % 7 == 0 {
                    vm.address = format!("{}.example.com", vm.name);
                }
            }
        }
        fleet
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]
        /// The group's part checked once and finished per VM gives what checking each VM's
        /// whole inputs (istioctl's, as [`fleet_raw_inputs`] writes them) gives.
        #[test]
        fn per_group_check_is_the_per_vm_check(picks in proptest::collection::vec(0u8..255, 1..64)) {
            let fleet = varied_fleet(&picks);
            let checked = CheckedFleet::assume_checked(fleet.clone());
            for (w, vm) in fleet.vms() {
                let whole = fleet_raw_inputs(&fleet, w, vm).check().expect("valid inputs");
                let (cw, cvm) = checked.vm(&vm.name).expect("the same fleet");
                let split = fleet_inputs(&checked, cw, cvm);
                proptest::prop_assert_eq!(&split, &whole, "VM {}", vm.name);
                proptest::prop_assert_eq!(render(&split), render(&whole));
                proptest::prop_assert_eq!(fleet_files(&checked, cw, cvm), render(&whole));
            }
        }
    }

    /// The fleets meshvm is measured on splice every VM's files from its group's (else the
    /// speed-up would be lost without any test noticing).
    #[test]
    fn synthetic_fleets_splice_every_vm_s_files() {
        let fleet = crate::synthetic::checked(300);
        for (w, vm) in fleet.vms() {
            let group = fleet
                .vm_groups()
                .get(&fleet, w)
                .expect("the fleet's own group");
            let files = group.files.as_ref().expect("group files");
            let spliced = files.vm(group, w, vm).expect("spliced");
            assert_eq!(spliced, render(&fleet_inputs(&fleet, w, vm)), "{}", vm.name);
        }
    }

    #[test]
    fn cluster_env_sorts_lines_not_keys() {
        let env: BTreeMap<String, String> =
            [("A".into(), "x".into()), ("A1".into(), "y".into())].into();
        assert_eq!(cluster_env(&env), "A1='y'\nA='x'\n");
        let bad: BTreeMap<String, String> = [("X;reboot".into(), "x".into())].into();
        assert!(check_env(&bad).is_err());
    }
}
