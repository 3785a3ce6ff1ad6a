//! Helpers shared by the two test binaries that drive `meshvm`: `e2e` (hermetic) and `system`
//! (real tools), each of which includes this module.

#![allow(dead_code)]

pub mod broker;
pub mod gitops;
pub mod metadata;
pub mod user_data;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

// Each binary that includes this module uses some of these.
#[allow(unused_imports)]
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

/// `meshvm render -f FLEET -o OUT`, which must succeed.
pub fn render_to(fleet: &Path, out: &Path) {
    let r = run(meshvm()
        .arg("render")
        .arg("-f")
        .arg(fleet)
        .arg("-o")
        .arg(out));
    assert_eq!(r.code, 0, "render {}: {}", fleet.display(), r.stderr);
}

/// Every file below `root`, relative to it, `/`-separated.
pub fn files_relative(root: &Path) -> Vec<String> {
    files_below(root)
        .into_iter()
        .map(|p| p.strip_prefix(root).unwrap().to_string_lossy().into_owned())
        .collect()
}

/// Every file below `dir` (recursively, `dir` itself included): path → (mode, bytes). Two equal
/// snapshots mean nothing was written, renamed, removed or re-moded.
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (u32, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let rel = path.strip_prefix(dir).unwrap().to_path_buf();
        let mode = meta.permissions().mode();
        if meta.is_dir() {
            out.insert(rel, (mode, Vec::new()));
            for entry in std::fs::read_dir(&path).unwrap() {
                stack.push(entry.unwrap().path());
            }
        } else {
            out.insert(rel, (mode, std::fs::read(&path).unwrap_or_default()));
        }
    }
    out
}

/// A port nothing listens on right now, on 127.0.0.1.
pub fn free_port() -> u16 {
    free_port_on("127.0.0.1")
}

/// A port nothing listens on right now, on `address` (the harness's east-west address, say).
pub fn free_port_on(address: &str) -> u16 {
    std::net::TcpListener::bind((address, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `inner` run on a pseudo-terminal (util-linux's `script`) in `dir`, with its environment:
/// what the terminal showed is the `Run`'s stdout. System tier: it needs `script`.
#[allow(dead_code)] // the system tier's
pub fn on_a_terminal(inner: &Command, dir: &Path) -> Run {
    require_tool("script", "apt-get install bsdutils");
    let line = std::iter::once(inner.get_program())
        .chain(inner.get_args())
        .map(|a| format!("'{}'", a.to_str().unwrap()))
        .collect::<Vec<_>>()
        .join(" ");
    let mut cmd = Command::new("script");
    cmd.args(["-qec", &line, "/dev/null"]).current_dir(dir);
    for (k, v) in inner.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    run(&mut cmd)
}
