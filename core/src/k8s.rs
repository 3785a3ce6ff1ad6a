//! Core Kubernetes objects meshvm writes: Namespaces and ServiceAccounts, both without a spec.

use serde::{Deserialize, Serialize};

use crate::istio::ObjectMeta;

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
