//! The library's system tier: what it writes, read back by the real readers on the VM (PyYAML,
//! the YAML 1.1 reader cloud-init uses, and bash). Built only with the `system-tests` feature;
//! `cargo xtask ci` runs it. A missing tool fails the test, naming it.

mod injection;
mod yaml_1_1;
