//! `cargo xtask mutants`: cargo-mutants on the code where a weak test is a security hole (the
//! files and the tests that run are in `.cargo/mutants.toml`), one mutant at a time. Not part
//! of `cargo xtask ci`: it takes hours on two cores. Surviving mutants and the equivalent ones
//! are listed in docs/mutants.md.

use std::path::Path;
use std::process::{Command, ExitCode};

/// Runs cargo-mutants with `extra` appended (for example `--file core/src/tree.rs` to examine
/// one file, or `--in-place`); mutants.out goes below target/.
pub fn run(root: &Path, extra: &[String]) -> ExitCode {
    let installed = Command::new(env!("CARGO"))
        .args(["mutants", "--version"])
        .output()
        .is_ok_and(|out| out.status.success());
    if !installed {
        eprintln!(
            "xtask mutants: cargo-mutants is needed and not installed: \
             cargo install cargo-mutants --locked"
        );
        return ExitCode::FAILURE;
    }
    let mut cmd = Command::new(env!("CARGO"));
    // cargo-mutants tests a copy of the workspace elsewhere, where `../shared` is not beside it.
    if std::env::var_os("MESHVM_SCHEMAS").is_none() {
        cmd.env("MESHVM_SCHEMAS", root.join("../shared/schemas"));
    }
    let status = cmd
        .args(["mutants", "--package", "meshvm-core"])
        .arg("--output")
        .arg(root.join("target"))
        .args(extra)
        .current_dir(root)
        .status();
    match status {
        Ok(s) if s.success() => ExitCode::SUCCESS,
        Ok(s) => {
            eprintln!(
                "xtask mutants: {s}: missed mutants are listed in target/mutants.out/missed.txt; \
                 kill each with a test or exclude it in .cargo/mutants.toml, saying why"
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("xtask mutants: cannot run cargo mutants: {e}");
            ExitCode::FAILURE
        }
    }
}
