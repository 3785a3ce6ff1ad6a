//! Kustomize's `kustomization.yaml`, as meshvm writes it: kustomize v5 fields only
//! (`labels` and `patches`, never the deprecated `commonLabels` or `patchesStrategicMerge`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub const API_VERSION: &str = "kustomize.config.k8s.io/v1beta1";
pub const KIND: &str = "Kustomization";
/// The file name kustomize looks for in a directory.
pub const FILE_NAME: &str = "kustomization.yaml";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Kustomization {
    pub api_version: String,
    pub kind: String,
    /// Files and directories, relative to the kustomization's directory. Always written:
    /// kustomize refuses a kustomization without any field ("kustomization.yaml is empty"),
    /// but builds `resources: []`.
    #[serde(default)]
    pub resources: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<Labels>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub patches: Vec<Patch>,
}

impl Kustomization {
    /// A kustomization of these resources.
    pub fn of<I, S>(resources: I) -> Kustomization
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Kustomization {
            api_version: API_VERSION.to_owned(),
            kind: KIND.to_owned(),
            resources: resources.into_iter().map(Into::into).collect(),
            labels: Vec::new(),
            patches: Vec::new(),
        }
    }
}

/// One `labels` entry: labels added to every resource (and, when asked, to selectors).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Labels {
    pub pairs: BTreeMap<String, String>,
    #[serde(default)]
    pub include_selectors: bool,
}

/// One `patches` entry: a patch file or inline patch, with an optional target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Patch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<PatchTarget>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PatchTarget {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}
