//! Flux's GitRepository (`source.toolkit.fluxcd.io/v1`) and Kustomization
//! (`kustomize.toolkit.fluxcd.io/v1`), as far as meshvm uses them.

use serde::{Deserialize, Serialize};

use super::Object;

pub const SOURCE_V1: &str = "source.toolkit.fluxcd.io/v1";
pub const KUSTOMIZE_V1: &str = "kustomize.toolkit.fluxcd.io/v1";

pub type GitRepository = Object<GitRepositorySpec>;
pub type Kustomization = Object<KustomizationSpec>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GitRepositorySpec {
    pub interval: String,
    pub url: String,
    #[serde(rename = "ref")]
    pub reference: GitRef,
    /// `.sourceignore` lines (gitignore syntax): what the artifact leaves out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GitRef {
    pub branch: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KustomizationSpec {
    pub interval: String,
    pub retry_interval: String,
    pub timeout: String,
    /// Repository-relative, starting with `./`.
    pub path: String,
    pub prune: bool,
    /// What happens to the applied objects when this Kustomization is deleted:
    /// `Orphan` keeps them (prune still removes objects that leave Git).
    pub deletion_policy: String,
    pub source_ref: SourceRef,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<DependsOn>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceRef {
    pub kind: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DependsOn {
    pub name: String,
}
