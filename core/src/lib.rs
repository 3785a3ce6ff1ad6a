//! meshvm's library: everything but the command line.
//!
//! The flow is `spec` (read and check a fleet file) → pure rendering (`render`, `vmfiles`,
//! `cloudinit`) of `k8s` objects into a [`tree::FileTree`] → an edge that writes it (a
//! directory, a Git commit). The library never prints and never exits; it returns typed
//! errors. ARCHITECTURE.md has the map.

// Input: a fleet file becomes a checked fleet.
pub mod spec;
// Output types; they depend on nothing else of meshvm.
pub mod k8s;
// Pure: checked input → bytes.
pub mod cloudinit;
// Pure: the join broker's policy, proofs and protocol (the server is in the binary).
pub mod join;
pub mod render;
pub mod tree;
pub mod vmfiles;
// Edges: the only modules that touch the world.
pub mod disk;
pub mod git;
pub mod interrupt;

// What kind of failure an error is, across the modules.
pub mod error;

#[doc(hidden)]
pub mod synthetic;
pub mod timestamp;

pub use error::ErrorKind;
pub use spec::Fleet;
pub use spec::diagnostic::{Diagnostic, Diagnostics, Pos};
pub use tree::FileTree;
