//! End-to-end tests, system tier: the real `meshvm` binary against real tools (kubectl
//! kustomize, PyYAML, cloud-init, systemd-nspawn and mmdebstrap, git daemon, git http-backend,
//! sshd, mount), as root. Built only with the `system-tests` feature; `cargo xtask ci` runs
//! them. A missing tool fails the test with how to install it; nothing is skipped.

#[path = "../support/mod.rs"]
mod support;

mod nspawn;
mod servers;

mod broker_join;
mod cloud_init;
mod completion;
mod faults;
mod gitops;
mod kept_commit;
mod render;
mod secrets;
