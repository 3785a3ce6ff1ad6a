//! End-to-end tests, hermetic tier: they drive the real `meshvm` binary with nothing but the
//! Rust toolchain, git and a POSIX `sh` (no root, no network, no other system tool), so
//! `cargo test` runs them in the inner loop. What needs real tools is in `tests/system/`.

#[path = "../support/mod.rs"]
mod support;

mod cli;
mod cloud_init;
mod gitops;
mod hardening;
mod hydrator;
mod interrupt;
mod join;
mod noop;
mod readme;
mod render;
mod review;
mod stdout;
mod vm_files;
mod warnings;
