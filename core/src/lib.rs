//! meshvm's library: everything but the command line.
//!
//! The flow is `spec` (read and check a fleet file) → pure rendering into a [`tree::FileTree`]
//! → an edge that writes it (a directory, a Git commit, a cloud-init document). The library
//! never prints and never exits; it returns typed errors.

pub mod argocd;
pub mod cloudinit;
pub mod diagnostic;
pub mod flux;
pub mod gateway;
pub mod git;
pub mod istio;
pub mod istio_operator;
pub mod istioctl;
pub mod k8s;
pub mod kustomize;
pub mod layout;
pub mod names;
pub mod objects;
pub mod render;
pub mod rootcert;
pub mod spec;
#[doc(hidden)]
pub mod synthetic;
pub mod token;
pub mod tree;
pub mod utc;
pub mod vmfiles;
pub mod yaml;

pub use diagnostic::{Diagnostic, Diagnostics, Pos};
pub use spec::Fleet;
pub use tree::FileTree;
