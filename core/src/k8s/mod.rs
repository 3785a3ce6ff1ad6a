//! The Kubernetes objects meshvm writes, as serde types: output only. This module depends on
//! nothing else of meshvm (a tidy test checks it), so a new kind is added here without touching
//! the rest: `istio` (networking kinds), `istio_operator` (install files), `kustomize`,
//! `argocd`, `flux`, and `yaml`, the one way they are written.
//!
//! Field order is the order of the struct, so rendered YAML is stable; empty fields are left
//! out, as `kubectl` and istioctl leave them out.

pub mod apps;
pub mod argocd;
pub mod flux;
pub mod istio;
pub mod istio_operator;
pub mod kustomize;
pub mod rbac;
pub mod v1;
pub mod yaml;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A Kubernetes object: `apiVersion`, `kind`, `metadata` and a `spec` of type `S`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Object<S> {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: S,
}

impl<S> Object<S> {
    pub fn new(api_version: &str, kind: &str, metadata: ObjectMeta, spec: S) -> Object<S> {
        Object {
            api_version: api_version.to_owned(),
            kind: kind.to_owned(),
            metadata,
            spec,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl ObjectMeta {
    pub fn named(name: &str, namespace: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            name: name.to_owned(),
            namespace: namespace.map(str::to_owned),
            ..ObjectMeta::default()
        }
    }
}

/// A Kubernetes object that is all metadata (no `spec`), such as a ServiceAccount.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetaObject {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
}

pub type Namespace = MetaObject;
pub type ServiceAccount = MetaObject;

pub fn namespace(metadata: ObjectMeta) -> Namespace {
    MetaObject {
        api_version: "v1".to_owned(),
        kind: "Namespace".to_owned(),
        metadata,
    }
}

pub fn service_account(metadata: ObjectMeta) -> ServiceAccount {
    MetaObject {
        api_version: "v1".to_owned(),
        kind: "ServiceAccount".to_owned(),
        metadata,
    }
}
