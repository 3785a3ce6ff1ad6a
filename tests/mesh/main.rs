//! The real-cluster tests: meshvm's output checked by the programs that consume it, a real
//! kube-apiserver (with etcd and the real Istio, Argo CD and Flux CRDs) and a real istioctl,
//! all built from the pinned Go module in tests/upstream.
//!
//! They need the harness: `cargo xtask mesh test` starts one, runs them and stops it; or
//! `cargo xtask mesh up` and `eval $(cargo xtask mesh env)` first. Without it they fail.
//!
//! No namespace controller runs in the harness (deleted namespaces stay Terminating), so no
//! test deletes anything: the fleets' own namespaces are shared by the tests that apply fleets
//! (one fleet at a time, [`cluster::fleet_turn`]); every other test uses namespaces of its own.

#[path = "../support/mod.rs"]
mod support;
// The systemd-nspawn VM of the system tests, booted here in the harness's network namespace.
#[path = "../system/nspawn.rs"]
mod nspawn;
// The git servers of the system tests: Flux fetches from the smart-HTTP one.
#[path = "../system/servers.rs"]
mod servers;

mod apply;
mod broker;
mod cluster;
mod flux;
mod imds;
mod install;
mod join;
mod offline;
mod parity;
mod probe;
mod rejoin;
