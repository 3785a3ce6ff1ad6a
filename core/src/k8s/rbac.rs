//! `rbac.authorization.k8s.io/v1`: Role and RoleBinding.

use serde::{Deserialize, Serialize};

use super::ObjectMeta;

pub const API_VERSION: &str = "rbac.authorization.k8s.io/v1";
pub const API_GROUP: &str = "rbac.authorization.k8s.io";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Role {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub rules: Vec<PolicyRule>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRule {
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource_names: Vec<String>,
    pub verbs: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleBinding {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub role_ref: RoleRef,
    pub subjects: Vec<Subject>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleRef {
    pub api_group: String,
    pub kind: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subject {
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

pub fn role(metadata: ObjectMeta, rules: Vec<PolicyRule>) -> Role {
    Role {
        api_version: API_VERSION.to_owned(),
        kind: "Role".to_owned(),
        metadata,
        rules,
    }
}

/// Binds the Role of the same name as `metadata` to ServiceAccount `sa` of `sa_namespace`.
pub fn role_binding_to_service_account(
    metadata: ObjectMeta,
    sa: &str,
    sa_namespace: &str,
) -> RoleBinding {
    RoleBinding {
        api_version: API_VERSION.to_owned(),
        kind: "RoleBinding".to_owned(),
        role_ref: RoleRef {
            api_group: API_GROUP.to_owned(),
            kind: "Role".to_owned(),
            name: metadata.name.clone(),
        },
        metadata,
        subjects: vec![Subject {
            kind: "ServiceAccount".to_owned(),
            name: sa.to_owned(),
            namespace: Some(sa_namespace.to_owned()),
        }],
    }
}
