//! A reader that closes stdout early (`meshvm render --stdout | head -1`) has read what it
//! wanted: meshvm ends quietly, with success, instead of panicking on the broken pipe.

use std::io::Read;
use std::process::Stdio;

use crate::support::{fixture, meshvm};

/// Runs meshvm with `args` and its stdout a pipe whose reader is gone; returns the exit code
/// and stderr.
fn with_closed_stdout(args: &[&str]) -> (Option<i32>, String) {
    // The pipe's read end belongs to a process that has exited (meshvm itself, printing its
    // version without reading stdin): meshvm's first write fails with EPIPE, every time.
    let mut reader = meshvm()
        .arg("--version")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let write_end = reader.stdin.take().unwrap();
    assert!(reader.wait().unwrap().success());
    let mut child = meshvm()
        .args(args)
        .stdout(write_end)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (child.wait().unwrap().code(), stderr)
}

#[test]
fn a_closed_stdout_ends_each_printing_command_quietly_with_success() {
    let seed = fixture("fleets/seed/meshvm.yaml");
    let seed = seed.to_str().unwrap();
    let invalid = fixture("invalid/port-zero.yaml");
    let invalid = invalid.to_str().unwrap();
    let repo = tempfile::tempdir().unwrap();
    let new_repo = repo.path().join("new.git");
    let new_repo = new_repo.to_str().unwrap();
    for args in [
        &["render", "-f", seed, "--stdout"][..],
        &["validate", "-f", seed, "--output", "json"],
        &["validate", "-f", invalid, "--output", "json"],
        &["validate", "-f", seed],
        &["schema"],
        &["completions", "bash"],
        &["gitops", "diff", "-q", "-f", seed, "--repo", new_repo],
        &[
            "gitops",
            "sync",
            "-q",
            "--dry-run",
            "-f",
            seed,
            "--repo",
            new_repo,
        ],
    ] {
        let (code, stderr) = with_closed_stdout(args);
        assert_eq!(code, Some(0), "meshvm {args:?}:\n{stderr}");
        assert_eq!(stderr, "", "meshvm {args:?} says nothing");
    }
    assert!(
        !repo.path().join("new.git").exists(),
        "dry runs wrote nothing"
    );
}

/// The same with a reader that reads a little first, as `head -c 10` does, of an output far
/// larger than a pipe holds (so that meshvm is still writing when the reader goes).
#[test]
fn a_reader_that_stops_early_ends_a_long_output_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let seed = std::fs::read_to_string(fixture("fleets/seed/meshvm.yaml")).unwrap();
    let instances: String = (1..=400)
        .map(|i| {
            format!(
                "      - name: tester-{i}\n        address: 10.0.{}.{}\n",
                i / 200,
                i % 200 + 1
            )
        })
        .collect();
    let fleet = dir.path().join("meshvm.yaml");
    let (head, _) = seed.split_once("    instances:\n").unwrap();
    std::fs::write(&fleet, format!("{head}    instances:\n{instances}")).unwrap();
    let mut child = meshvm()
        .args(["render", "--stdout", "-f"])
        .arg(&fleet)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 10];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(&first, b"# Source: ");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    assert_eq!(out.status.code(), Some(0));
}

/// Any other failure to write stdout is an error, not a panic.
#[test]
fn a_full_stdout_is_a_clear_error() {
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = meshvm().arg("schema").stdout(full).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .starts_with("error: cannot write to stdout: No space left on device"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
