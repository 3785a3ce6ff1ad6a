//! meshvm's own automation, as a library: the end-to-end tests use it to check rendered trees
//! and user-data, and the `xtask` binary (`cargo xtask validate|ci`) is a thin shell over it.
//!
//! - [`schemas`]: schema locations (kubeconform templates), local and http(s) with a cache.
//! - [`kube`]: YAML streams into documents, directories walked, `kubectl kustomize` builds.
//! - [`validate`]: the [`validate::Validator`] and its verdicts, kubeconform's way.
//! - [`kubeconform`]: the same check through a `kubeconform` binary, when there is one.
//! - [`cloudinit`]: user-data against the cloud-config schema and `cloud-init schema`.

pub mod cloudinit;
pub mod kube;
pub mod kubeconform;
pub mod schemas;
pub mod validate;

use std::path::PathBuf;

/// The first executable named `tool` on PATH.
pub fn on_path(tool: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file())
}
