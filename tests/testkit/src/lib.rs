//! Helpers shared by meshvm's tests (unit, integration and end-to-end): where the fixtures
//! are, and running the real tools a test relies on, failing loudly with what they said.
//!
//! It depends on nothing of meshvm's, so that every crate of the workspace can use it.

pub mod join;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root.
pub fn workspace() -> PathBuf {
    let testkit = Path::new(env!("CARGO_MANIFEST_DIR"));
    testkit
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .to_path_buf()
}

/// A fixture file or directory, by its path below `fixtures/`.
pub fn fixture(rel: &str) -> PathBuf {
    workspace().join("fixtures").join(rel)
}

/// Every fixture fleet (`fixtures/fleets/<name>/meshvm.yaml`), by name, sorted: a new
/// fixture is covered without being listed.
pub fn fixture_fleets() -> Vec<String> {
    let dir = fixture("fleets");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(names.len() >= 8, "fixture fleets in {}", dir.display());
    names
}

/// Every regular file below `dir`, sorted (symbolic links are not followed).
pub fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|entry| entry.unwrap_or_else(|e| panic!("{}: {e}", dir.display())))
        .filter(|entry| entry.file_type().is_file())
        .map(walkdir::DirEntry::into_path)
        .collect();
    files.sort();
    files
}

/// Runs a command that must succeed and returns its stdout; otherwise fails the test with
/// the command, its exit status and everything it printed.
pub fn checked(cmd: &mut Command) -> Vec<u8> {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// [`checked`], its stdout as text.
pub fn checked_text(cmd: &mut Command) -> String {
    String::from_utf8_lossy(&checked(cmd)).into_owned()
}

/// The git CLI in `dir`, as a human with a fixed identity; its stdout. Fails the test when
/// git fails.
pub fn git(dir: &Path, args: &[&str]) -> String {
    checked_text(
        Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .env("GIT_AUTHOR_NAME", "Human")
            .env("GIT_AUTHOR_EMAIL", "human@example.org")
            .env("GIT_COMMITTER_NAME", "Human")
            .env("GIT_COMMITTER_EMAIL", "human@example.org"),
    )
}

/// `git init --bare` of `root/name` with branch `main`, ready to receive pushes.
pub fn bare_repo(root: &Path, name: &str) -> PathBuf {
    let path = root.join(name);
    checked(
        Command::new("git")
            .args(["init", "-q", "--bare", "-b", "main"])
            .arg(&path),
    );
    path
}

/// Sources `dir/cluster.env` with `sh` in an empty environment, as the sidecar's start
/// script does, and returns the variables it set.
pub fn source_with_sh(dir: &Path) -> BTreeMap<String, String> {
    require_tool("sh", "apt-get install dash");
    require_tool("env", "apt-get install coreutils");
    let out = checked(
        Command::new("sh")
            .current_dir(dir)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .args(["-c", "set -a; . ./cluster.env; exec env -0"]),
    );
    out.split(|&b| b == 0)
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            let entry = String::from_utf8(entry.to_vec()).expect("variables are UTF-8");
            let (name, value) = entry.split_once('=').expect("env -0 prints NAME=VALUE");
            (name.to_owned(), value.to_owned())
        })
        // What the shell itself sets.
        .filter(|(name, _)| !matches!(name.as_str(), "PWD" | "OLDPWD" | "SHLVL" | "_" | "PATH"))
        .collect()
}

/// Fails the test when a tool the test needs is not installed: a test never skips silently.
pub fn require_tool(tool: &str, install_hint: &str) {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "`{tool}` is needed by this test and is not on PATH: {install_hint}"
    );
}
