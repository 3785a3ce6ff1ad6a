//! Argo CD's `argoproj.io/v1alpha1` Application and ApplicationSet, as far as meshvm uses them.
//!
//! There is deliberately no `finalizers` field: meshvm never asks Argo CD to cascade-delete
//! what an Application deployed when the Application itself is deleted.

use serde::{Deserialize, Serialize};

use super::{Object, ObjectMeta};

pub const API_VERSION: &str = "argoproj.io/v1alpha1";

pub type Application = Object<ApplicationSpec>;
pub type ApplicationSet = Object<ApplicationSetSpec>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationSpec {
    pub project: String,
    pub source: Source,
    pub destination: Destination,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_policy: Option<SyncPolicy>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Source {
    #[serde(rename = "repoURL")]
    pub repo_url: String,
    pub target_revision: String,
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Destination {
    pub server: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub automated: Option<Automated>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sync_options: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Automated {
    pub prune: bool,
    pub self_heal: bool,
    /// Refuse an automated sync that would leave the Application with no resources at all,
    /// the signature of a broken render or a wrong path rather than an intended change.
    pub allow_empty: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Retry {
    pub limit: i64,
    pub backoff: Backoff,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Backoff {
    pub duration: String,
    pub factor: i64,
    pub max_duration: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationSetSpec {
    pub go_template: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub go_template_options: Vec<String>,
    pub generators: Vec<Generator>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_policy: Option<ApplicationSetSyncPolicy>,
    pub template: ApplicationTemplate,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Generator {
    pub git: GitGenerator,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GitGenerator {
    #[serde(rename = "repoURL")]
    pub repo_url: String,
    pub revision: String,
    pub directories: Vec<GitDirectory>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GitDirectory {
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationSetSyncPolicy {
    /// `create-only`, `create-update`, `create-delete` or `sync`.
    pub applications_sync: String,
    /// Generated Applications get no resources finalizer, so deleting one (or the whole
    /// ApplicationSet) leaves what it deployed in place.
    pub preserve_resources_on_deletion: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationTemplate {
    pub metadata: ObjectMeta,
    pub spec: ApplicationSpec,
}
