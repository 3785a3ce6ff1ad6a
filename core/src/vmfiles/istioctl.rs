//! The istioctl-compatible front end, offline: reads a WorkloadGroup file and the mesh config
//! as `istioctl x workload entry configure` does, checks them with its flags once
//! ([`configure`]) into the inputs [`crate::vmfiles::render`] writes out, and builds the
//! WorkloadGroup `istioctl x workload group create` prints.
//!
//! Reading is as lenient as istioctl where istioctl is lenient (no `apiVersion` needed, object
//! metadata and `status` as kubectl prints them are fine) and strict where a typo would
//! silently change the result: an unknown field in the WorkloadGroup's `spec` is an error.
//! Every error names the file and, where the YAML says, the line and column.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;
use serde_saphyr::Spanned;

use crate::k8s::ObjectMeta;
use crate::k8s::istio::{
    GroupMetadata, NETWORKING_V1, WorkloadEntrySpec, WorkloadGroup, WorkloadGroupSpec,
};
use crate::spec::names;
use crate::vmfiles::{
    self, CheckedInputs, Inputs, PROXY_CONFIG_ANNOTATION, VmFilesError, WorkloadIp,
};

/// Why an istioctl-style input cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum IstioctlError {
    #[error("{}:{line}:{column}: {message}", file.display())]
    At {
        file: PathBuf,
        line: u64,
        column: u64,
        message: String,
    },
    #[error("{}: {message}", file.display())]
    File { file: PathBuf, message: String },
    #[error("{flag}: {message}")]
    Flag { flag: &'static str, message: String },
    #[error(transparent)]
    Files(#[from] VmFilesError),
}

impl IstioctlError {
    pub fn kind(&self) -> crate::ErrorKind {
        crate::ErrorKind::InvalidInput
    }
}

/// The flags of `workload entry configure`, with istioctl's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigureOptions {
    pub cluster_id: String,
    pub revision: String,
    pub istio_namespace: String,
    pub ingress_ip: Option<String>,
    pub internal_ip: Option<String>,
    pub external_ip: Option<String>,
    pub capture_dns: bool,
    pub autoregister: bool,
}

impl Default for ConfigureOptions {
    fn default() -> Self {
        ConfigureOptions {
            cluster_id: "Kubernetes".into(),
            revision: String::new(),
            istio_namespace: "istio-system".into(),
            ingress_ip: None,
            internal_ip: None,
            external_ip: None,
            capture_dns: true,
            autoregister: false,
        }
    }
}

/// The checked inputs of cluster.env, mesh.yaml and hosts ([`crate::vmfiles::render`]) for a
/// WorkloadGroup and mesh config read with [`read_workload_group`] and [`read_mesh_config`].
pub fn configure(
    group: WorkloadGroup,
    mesh_config: Value,
    options: &ConfigureOptions,
) -> Result<CheckedInputs, IstioctlError> {
    let workload_ip = match (&options.internal_ip, &options.external_ip) {
        (Some(_), Some(_)) => {
            return Err(IstioctlError::Flag {
                flag: "--internal-ip",
                message: "--internal-ip and --external-ip exclude each other".into(),
            });
        }
        (Some(ip), None) => Some(WorkloadIp::Internal(ip.clone())),
        (None, Some(ip)) => Some(WorkloadIp::External(ip.clone())),
        (None, None) => None,
    };
    Ok(Inputs {
        group,
        mesh_config,
        cluster_id: options.cluster_id.clone(),
        revision: options.revision.clone(),
        istio_namespace: options.istio_namespace.clone(),
        ingress_ip: options.ingress_ip.clone(),
        workload_ip,
        capture_dns: options.capture_dns,
        auto_register: options.autoregister,
    }
    .check()?)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WorkloadGroupDoc {
    api_version: Option<Spanned<String>>,
    kind: Option<Spanned<String>>,
    metadata: Option<Spanned<MetadataDoc>>,
    spec: Option<SpecDoc>,
}

/// Object metadata: the fields meshvm reads; the others kubectl prints are ignored.
#[derive(Deserialize)]
struct MetadataDoc {
    name: Option<String>,
    namespace: Option<String>,
    labels: Option<BTreeMap<String, String>>,
    annotations: Option<BTreeMap<String, Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SpecDoc {
    metadata: Option<GroupMetadataDoc>,
    template: Option<TemplateDoc>,
    probe: Option<Spanned<Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupMetadataDoc {
    labels: Option<BTreeMap<String, String>>,
    annotations: Option<BTreeMap<String, Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TemplateDoc {
    address: Option<String>,
    ports: Option<BTreeMap<String, u32>>,
    labels: Option<BTreeMap<String, String>>,
    network: Option<String>,
    locality: Option<String>,
    weight: Option<u32>,
    service_account: Option<String>,
}

/// Reads a WorkloadGroup file (`-f`), as istioctl's `readWorkloadGroup` does.
pub fn read_workload_group(text: &str, file: &Path) -> Result<WorkloadGroup, IstioctlError> {
    let doc: WorkloadGroupDoc = serde_saphyr::from_str(text).map_err(|e| yaml_error(file, &e))?;
    let at = |span: Option<serde_saphyr::Location>, message: String| match span {
        Some(l) if l.line() > 0 => IstioctlError::At {
            file: file.to_path_buf(),
            line: l.line(),
            column: l.column(),
            message,
        },
        _ => IstioctlError::File {
            file: file.to_path_buf(),
            message,
        },
    };
    if let Some(kind) = &doc.kind {
        if kind.value != "WorkloadGroup" {
            return Err(at(
                Some(kind.referenced),
                format!(
                    "kind is {:?}; this reads a WorkloadGroup (networking.istio.io)",
                    kind.value
                ),
            ));
        }
    }
    if let Some(api) = &doc.api_version {
        if !api.value.starts_with("networking.istio.io/") {
            return Err(at(
                Some(api.referenced),
                format!(
                    "apiVersion {:?} is not Istio's; write `apiVersion: {NETWORKING_V1}`",
                    api.value
                ),
            ));
        }
    }
    let Some(metadata) = doc.metadata else {
        return Err(at(
            None,
            "the WorkloadGroup has no metadata: give it a name and a namespace".into(),
        ));
    };
    let meta_pos = Some(metadata.referenced);
    let metadata = metadata.value;
    let name = metadata.name.unwrap_or_default();
    let namespace = metadata.namespace.unwrap_or_default();
    names::dns1123_subdomain(&name)
        .map_err(|r| at(meta_pos, format!("metadata.name {name:?} {r}")))?;
    names::dns1123_label(&namespace).map_err(|r| {
        at(
            meta_pos,
            format!("metadata.namespace {namespace:?} {r}; the VMs' namespace is required"),
        )
    })?;
    let spec = doc.spec.unwrap_or(SpecDoc {
        metadata: None,
        template: None,
        probe: None,
    });
    let object_annotations = check_annotations(metadata.annotations, &at)?;
    let group_metadata = spec.metadata.unwrap_or(GroupMetadataDoc {
        labels: None,
        annotations: None,
    });
    let group_annotations = check_annotations(group_metadata.annotations, &at)?;
    let probe = match spec.probe {
        Some(p) => {
            vmfiles::check_probe(&p.value)
                .map_err(|e| at(Some(p.referenced), format!("spec.probe: {e}")))?;
            Some(p.value).filter(|v| !v.is_null())
        }
        None => None,
    };
    let template = spec.template.unwrap_or(TemplateDoc {
        address: None,
        ports: None,
        labels: None,
        network: None,
        locality: None,
        weight: None,
        service_account: None,
    });
    let mut object = ObjectMeta::named(&name, Some(&namespace));
    object.labels = metadata.labels.unwrap_or_default();
    object.annotations = object_annotations;
    Ok(WorkloadGroup::new(
        NETWORKING_V1,
        "WorkloadGroup",
        object,
        WorkloadGroupSpec {
            metadata: Some(GroupMetadata {
                labels: group_metadata.labels.unwrap_or_default(),
                annotations: group_annotations,
            }),
            template: WorkloadEntrySpec {
                address: template.address,
                ports: template.ports.unwrap_or_default(),
                labels: template.labels.unwrap_or_default(),
                network: template.network.filter(|n| !n.is_empty()),
                locality: template.locality,
                weight: template.weight,
                // istioctl's default for an empty service account.
                service_account: Some(
                    template
                        .service_account
                        .filter(|sa| !sa.is_empty())
                        .unwrap_or_else(|| "default".into()),
                ),
            },
            probe,
        },
    ))
}

/// Unwraps annotation values, checking a `proxy.istio.io/config` one where it stands.
fn check_annotations(
    annotations: Option<BTreeMap<String, Spanned<String>>>,
    at: &dyn Fn(Option<serde_saphyr::Location>, String) -> IstioctlError,
) -> Result<BTreeMap<String, String>, IstioctlError> {
    let mut out = BTreeMap::new();
    for (key, value) in annotations.unwrap_or_default() {
        if key == PROXY_CONFIG_ANNOTATION {
            vmfiles::read_proxy_config_annotation(&value.value).map_err(|message| {
                at(
                    Some(value.referenced),
                    format!("annotation {PROXY_CONFIG_ANNOTATION}: {message}"),
                )
            })?;
        }
        out.insert(key, value.value);
    }
    Ok(out)
}

#[derive(Deserialize)]
struct MeshConfigDoc {
    #[serde(rename = "defaultConfig", alias = "default_config")]
    default_config: Option<Spanned<Value>>,
    #[serde(rename = "trustDomain", alias = "trust_domain")]
    trust_domain: Option<Spanned<Value>>,
}

/// Reads the mesh config (`--mesh-config`): the `mesh` data of the `istio[-<rev>]` ConfigMap,
/// or that ConfigMap itself as `kubectl get configmap istio -n istio-system -o yaml` prints it.
pub fn read_mesh_config(text: &str, file: &Path) -> Result<Value, IstioctlError> {
    let whole: Value = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_saphyr::from_str(text).map_err(|e| yaml_error(file, &e))?
    };
    if whole.get("kind").and_then(Value::as_str) == Some("ConfigMap") {
        let Some(mesh) = whole.pointer("/data/mesh").and_then(Value::as_str) else {
            return Err(IstioctlError::File {
                file: file.to_path_buf(),
                message: "this ConfigMap has no `data.mesh`; use the `istio` ConfigMap of istiod's namespace".into(),
            });
        };
        return read_mesh_text(mesh, file).map_err(|e| match e {
            IstioctlError::At {
                file,
                line,
                column,
                message,
            } => IstioctlError::File {
                file,
                message: format!("data.mesh, line {line}, column {column}: {message}"),
            },
            other => other,
        });
    }
    if whole.is_null() {
        return Ok(Value::Null);
    }
    read_mesh_text(text, file)
}

fn read_mesh_text(text: &str, file: &Path) -> Result<Value, IstioctlError> {
    if text.trim().is_empty() {
        return Ok(Value::Null);
    }
    let doc: MeshConfigDoc = serde_saphyr::from_str(text).map_err(|e| yaml_error(file, &e))?;
    let mut mesh = serde_json::Map::new();
    let mut first_pos = None;
    for (key, field) in [
        ("defaultConfig", doc.default_config),
        ("trustDomain", doc.trust_domain),
    ] {
        if let Some(field) = field {
            first_pos.get_or_insert(field.referenced);
            mesh.insert(key.into(), field.value);
        }
    }
    let mesh = Value::Object(mesh);
    // Check now, to point at the place in the file; rendering reads it again.
    if let Err(e) = vmfiles::read_mesh_config(&mesh) {
        return Err(match first_pos {
            Some(l) if l.line() > 0 => IstioctlError::At {
                file: file.to_path_buf(),
                line: l.line(),
                column: l.column(),
                message: e.to_string(),
            },
            _ => IstioctlError::File {
                file: file.to_path_buf(),
                message: e.to_string(),
            },
        });
    }
    Ok(mesh)
}

fn yaml_error(file: &Path, e: &serde_saphyr::Error) -> IstioctlError {
    let message = e.without_snippet().to_string();
    match e.location().filter(|l| l.line() > 0) {
        Some(l) => {
            let suffix = format!(" at line {}, column {}", l.line(), l.column());
            IstioctlError::At {
                file: file.to_path_buf(),
                line: l.line(),
                column: l.column(),
                message: message.strip_suffix(&suffix).unwrap_or(&message).to_owned(),
            }
        }
        None => IstioctlError::File {
            file: file.to_path_buf(),
            message,
        },
    }
}

/// The flags of `workload group create`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupCreate {
    pub name: String,
    pub namespace: String,
    /// `key=value` items; a missing `=` gives an empty value, as istioctl does.
    pub labels: Vec<String>,
    pub annotations: Vec<String>,
    /// `name=port` items.
    pub ports: Vec<String>,
    pub service_account: String,
    pub network: Option<String>,
}

/// The WorkloadGroup `istioctl x workload group create` prints, as YAML.
pub fn group_create(args: &GroupCreate) -> Result<String, IstioctlError> {
    let flag = |flag: &'static str, message: String| IstioctlError::Flag { flag, message };
    names::dns1123_subdomain(&args.name)
        .map_err(|r| flag("--name", format!("{:?} {r}", args.name)))?;
    names::dns1123_label(&args.namespace)
        .map_err(|r| flag("--namespace", format!("{:?} {r}", args.namespace)))?;
    names::dns1123_subdomain(&args.service_account).map_err(|r| {
        flag(
            "--service-account",
            format!("{:?} {r}", args.service_account),
        )
    })?;
    let labels = key_values(&args.labels);
    for (k, v) in &labels {
        names::qualified_name(k).map_err(|r| flag("--labels", format!("key {k:?}: {r}")))?;
        names::label_value(v).map_err(|r| flag("--labels", format!("value {v:?} of {k}: {r}")))?;
    }
    let annotations = key_values(&args.annotations);
    for k in annotations.keys() {
        names::qualified_name(k).map_err(|r| flag("--annotations", format!("key {k:?}: {r}")))?;
    }
    let mut ports = BTreeMap::new();
    for (name, number) in key_values(&args.ports) {
        names::dns1123_label(&name)
            .map_err(|r| flag("--ports", format!("port name {name:?} {r}")))?;
        let port = number
            .parse::<u32>()
            .ok()
            .filter(|p| names::port(*p).is_ok())
            .ok_or_else(|| {
                flag(
                    "--ports",
                    format!("{name}={number}: the port is a number from 1 to 65535"),
                )
            })?;
        ports.insert(name, port);
    }
    if let Some(network) = &args.network {
        names::label_value(network).map_err(|r| flag("--network", format!("{network:?} {r}")))?;
    }
    let group = WorkloadGroup::new(
        NETWORKING_V1,
        "WorkloadGroup",
        ObjectMeta::named(&args.name, Some(&args.namespace)),
        WorkloadGroupSpec {
            metadata: Some(GroupMetadata {
                labels,
                annotations,
            }),
            template: WorkloadEntrySpec {
                ports,
                network: args.network.clone().filter(|n| !n.is_empty()),
                service_account: Some(args.service_account.clone()),
                ..WorkloadEntrySpec::default()
            },
            probe: None,
        },
    );
    Ok(crate::k8s::yaml::to_string(&group))
}

/// `key=value` items as istioctl splits them: at the first `=`; no `=`, an empty value.
pub fn key_values(items: &[String]) -> BTreeMap<String, String> {
    items
        .iter()
        .map(|item| match item.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (item.clone(), String::new()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn key_values_split_like_istioctl() {
        let kv = key_values(&["key=value".into(), "k2==v".into(), "bare".into()]);
        assert_eq!(kv["key"], "value");
        assert_eq!(kv["k2"], "=v");
        assert_eq!(kv["bare"], "");
    }

    #[test]
    fn group_create_defaults_match_istioctl() {
        let yaml = group_create(&GroupCreate {
            name: "foo".into(),
            namespace: "bar".into(),
            service_account: "default".into(),
            ..GroupCreate::default()
        })
        .unwrap();
        // istioctl's own expected output (workload_test.go, defaultYAML).
        assert_eq!(
            yaml,
            "apiVersion: networking.istio.io/v1\nkind: WorkloadGroup\nmetadata:\n  name: foo\n  namespace: bar\nspec:\n  metadata: {}\n  template:\n    serviceAccount: default\n"
        );
    }

    #[test]
    fn reads_errors_with_positions() {
        let file = Path::new("wg.yaml");
        let err = read_workload_group(
            "kind: WorkloadGroup\nmetadata: {name: a, namespace: b}\nspec:\n  template:\n    serviceAcount: x\n",
            file,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("wg.yaml:5:5: unknown field `serviceAcount`"),
            "{err}"
        );
        let err = read_workload_group("kind: Service\n", file).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("wg.yaml:1:7: kind is \"Service\""),
            "{err}"
        );
        let err = read_workload_group(
            "metadata: {name: a, namespace: b}\nspec:\n  metadata:\n    annotations:\n      proxy.istio.io/config: 'statusPort: x'\n",
            file,
        )
        .unwrap_err();
        assert!(
            err.to_string().starts_with(
                "wg.yaml:5:30: annotation proxy.istio.io/config: statusPort: expected an integer"
            ),
            "{err}"
        );
        let err = read_mesh_config(
            "defaultConfig:\n  statusPort: [1]\n",
            Path::new("mesh.yaml"),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("mesh.yaml:2:3: mesh config: defaultConfig.statusPort"),
            "{err}"
        );
    }

    #[test]
    fn reads_a_whole_configmap() {
        let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio}\ndata:\n  mesh: |-\n    trustDomain: td\n    defaultConfig:\n      meshId: m\n";
        let mesh = read_mesh_config(cm, Path::new("cm.yaml")).unwrap();
        assert_eq!(
            mesh,
            json!({"defaultConfig": {"meshId": "m"}, "trustDomain": "td"})
        );
    }
}
