//! Helpers shared by the end-to-end tests.

#![allow(dead_code)]

use std::process::{Command, Output};

pub use testkit::{
    bare_repo, checked, checked_text, files_below, fixture, git, require_tool, workspace,
};

/// The `meshvm` binary under test, with a clean environment for its own variables.
pub fn meshvm() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_meshvm"));
    cmd.env_remove("MESHVM_FILE");
    cmd
}

/// Runs a command and returns its output, with stdout and stderr as text.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

pub fn run(cmd: &mut Command) -> Run {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("the command starts");
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}
