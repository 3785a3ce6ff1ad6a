//! End-to-end tests: they drive the real `meshvm` binary, and real tools where the behaviour
//! depends on them (kubectl kustomize, git servers, cloud-init, systemd-nspawn). A missing
//! tool fails the test with how to install it; nothing is skipped silently.

mod servers;
mod support;

mod cli;
mod cloud_init;
mod faults;
mod gitops;
mod hardening;
mod kept_commit;
mod nspawn;
mod render;
mod secrets;
mod stdout;
mod vm_files;
