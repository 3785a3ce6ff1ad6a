//! `networking.istio.io/v1` kinds: WorkloadGroup, WorkloadEntry, ServiceEntry, and the Gateway
//! and VirtualService that expose istiod on the east-west gateway.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Object;

pub const NETWORKING_V1: &str = "networking.istio.io/v1";

pub type WorkloadGroup = Object<WorkloadGroupSpec>;
pub type WorkloadEntry = Object<WorkloadEntrySpec>;
pub type ServiceEntry = Object<ServiceEntrySpec>;

/// `networking.istio.io/v1` WorkloadGroup spec.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadGroupSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<GroupMetadata>,
    #[serde(default)]
    pub template: WorkloadEntrySpec,
    /// Istio's ReadinessProbe, kept as data so that fields meshvm does not model survive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<Value>,
}

/// Labels and annotations the WorkloadGroup gives the WorkloadEntries it stands for.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupMetadata {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// `networking.istio.io/v1` WorkloadEntry spec (also a WorkloadGroup's template).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadEntrySpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ports: BTreeMap<String, u32>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
}

/// A WorkloadEntry's YAML, the bytes [`super::yaml::to_string`] writes: written directly for
/// the usual keys and strings (one entry per VM of a fleet), through serde-saphyr otherwise.
pub fn workload_entry_yaml(entry: &WorkloadEntry) -> String {
    direct_workload_entry(entry).unwrap_or_else(|| super::yaml::to_string(entry))
}

pub(crate) fn direct_workload_entry(entry: &WorkloadEntry) -> Option<String> {
    // Every field named, so that a new one cannot be left out of this writer unnoticed.
    let Object {
        api_version,
        kind,
        metadata,
        spec,
    } = entry;
    let super::ObjectMeta {
        name,
        namespace,
        labels: meta_labels,
        annotations,
    } = metadata;
    let WorkloadEntrySpec {
        address,
        ports,
        labels,
        network,
        locality,
        weight,
        service_account,
    } = spec;
    let mut w = super::yaml::Block::new();
    w.str(0, "apiVersion", api_version)?;
    w.str(0, "kind", kind)?;
    w.open(0, "metadata")?;
    w.str(1, "name", name)?;
    w.opt_str(1, "namespace", namespace.as_ref())?;
    w.str_map(1, "labels", meta_labels)?;
    w.str_map(1, "annotations", annotations)?;
    w.open(0, "spec")?;
    let empty_spec = w.out.len();
    w.opt_str(1, "address", address.as_ref())?;
    w.uint_map(1, "ports", ports)?;
    w.str_map(1, "labels", labels)?;
    w.opt_str(1, "network", network.as_ref())?;
    w.opt_str(1, "locality", locality.as_ref())?;
    if let Some(weight) = weight {
        w.uint(1, "weight", u64::from(*weight))?;
    }
    w.opt_str(1, "serviceAccount", service_account.as_ref())?;
    // serde-saphyr writes an empty spec as `{}`.
    (w.out.len() > empty_spec).then_some(w.out)
}

/// `networking.istio.io/v1` ServiceEntry spec.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceEntrySpec {
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ServicePort>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<WorkloadSelector>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    pub number: u32,
    /// Omitted: Istio detects the protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkloadSelector {
    pub labels: BTreeMap<String, String>,
}

// Gateway and VirtualService: what meshvm needs of them to expose istiod and the mesh's
// services on the east-west gateway (TLS passthrough only).

pub type Gateway = Object<GatewaySpec>;
pub type VirtualService = Object<VirtualServiceSpec>;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewaySpec {
    /// Labels of the gateway pods this configuration applies to.
    pub selector: BTreeMap<String, String>,
    pub servers: Vec<Server>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Server {
    pub port: GatewayPort,
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTls>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayPort {
    pub number: u32,
    pub name: String,
    pub protocol: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerTls {
    /// `PASSTHROUGH`, `AUTO_PASSTHROUGH`, …
    pub mode: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualServiceSpec {
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls: Vec<TlsRoute>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TlsRoute {
    #[serde(rename = "match")]
    pub matches: Vec<TlsMatch>,
    pub route: Vec<RouteDestination>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TlsMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    pub sni_hosts: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteDestination {
    pub destination: Destination,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Destination {
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortSelector>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortSelector {
    pub number: u32,
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::k8s::ObjectMeta;

    fn entry(s: &str, weight: Option<u32>, empty_spec: bool) -> WorkloadEntry {
        let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let mut metadata = ObjectMeta::named(s, Some("ns"));
        metadata.labels = map(&[
            ("app", s),
            (s, "v"),
            ("app.kubernetes.io/managed-by", "meshvm"),
        ]);
        metadata.annotations = map(&[("proxy.istio.io/health-checks-enabled", "true")]);
        let spec = if empty_spec {
            WorkloadEntrySpec::default()
        } else {
            WorkloadEntrySpec {
                address: Some(s.to_owned()),
                ports: [(s.to_owned(), 8080), ("http".to_owned(), 80)].into(),
                labels: map(&[("version", s)]),
                network: Some(s.to_owned()),
                locality: Some(format!("{s}/zone")),
                weight,
                service_account: Some("default".into()),
            }
        };
        WorkloadEntry::new(NETWORKING_V1, "WorkloadEntry", metadata, spec)
    }

    /// Whenever the direct writer answers, it answers serde-saphyr's bytes.
    #[test]
    fn workload_entries_are_written_as_serde_saphyr_writes_them() {
        let mut direct = 0;
        for s in [
            "vm-1",
            "10.0.0.1",
            "fd00::1",
            "2001:db8::1",
            "",
            "on",
            "true",
            "0644",
            "1e3",
            "a b",
            "a: b",
            "é",
            "-",
            ".",
            "x.example.com",
            "UPPER",
            "a#b",
            "a #b",
            "~",
        ] {
            for (weight, empty) in [(None, false), (Some(0), false), (Some(7), true)] {
                let e = entry(s, weight, empty);
                if let Some(fast) = direct_workload_entry(&e) {
                    assert_eq!(fast, crate::k8s::yaml::to_string(&e), "for {s:?}");
                    direct += 1;
                }
                assert_eq!(workload_entry_yaml(&e), crate::k8s::yaml::to_string(&e));
            }
        }
        assert!(direct >= 6, "only {direct} entries took the direct path");
        assert_eq!(direct_workload_entry(&entry("vm-1", None, true)), None);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(3000))]
        #[test]
        fn direct_workload_entries_agree_with_serde_saphyr(
            s in r#"[ -~]{0,6}|[a-zA-Z0-9/][-a-zA-Z0-9_./:+= #"'\\]{0,90}|[0-9.]{1,12}|(true|no|on|null|y|-|:|#| )*"#,
            weight in proptest::option::of(0u32..100_000),
        ) {
            let e = entry(&s, weight, false);
            if let Some(fast) = direct_workload_entry(&e) {
                proptest::prop_assert_eq!(fast, crate::k8s::yaml::to_string(&e));
            }
        }
    }
}
