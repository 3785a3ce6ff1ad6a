//! xtask's system tier: the validators against the real tools they drive (kubectl kustomize,
//! `cloud-init schema`, curl). Built only with the `system-tests` feature; `cargo xtask ci`
//! runs it. A missing tool fails the test, naming it.

mod cloudinit;
mod corpus;
mod remote;
