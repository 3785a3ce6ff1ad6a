//! Core (`v1`) kinds besides Namespace and ServiceAccount: Service and ConfigMap.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Object, ObjectMeta};

pub type Service = Object<ServiceSpec>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    pub selector: BTreeMap<String, String>,
    pub ports: Vec<ServicePort>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    pub name: String,
    pub port: u32,
    /// A named port of the pods.
    pub target_port: String,
    /// `appProtocol`: how Istio treats the port (`tls` for TLS the pod terminates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,
}

pub fn service(metadata: ObjectMeta, spec: ServiceSpec) -> Service {
    Object::new("v1", "Service", metadata, spec)
}

/// A ConfigMap: metadata and text data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMap {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub data: BTreeMap<String, String>,
}

pub fn config_map(metadata: ObjectMeta, data: BTreeMap<String, String>) -> ConfigMap {
    ConfigMap {
        api_version: "v1".to_owned(),
        kind: "ConfigMap".to_owned(),
        metadata,
        data,
    }
}
