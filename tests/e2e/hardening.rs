//! meshvm on bad days, through the binary: every hostile fleet in fixtures/invalid/ is refused
//! by every command that reads a fleet, with a located message, and nothing is written.
//! (Faults of `gitops sync` are in faults.rs, secrets in secrets.rs.)

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support::{Run, fixture, meshvm, run, snapshot};

/// The invalid fixtures, sorted.
fn invalid_fixtures() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixture("invalid"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

/// The `error: FILE:LINE:COLUMN: …` lines of a run's stderr that name `file`.
fn located_errors(stderr: &str, file: &Path) -> Vec<String> {
    let prefix = format!("error: {}:", file.display());
    stderr
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(&prefix)?;
            let mut parts = rest.splitn(3, ':');
            let line_no = parts.next()?.parse::<usize>().ok()?;
            let column = parts.next()?.parse::<usize>().ok()?;
            (line_no >= 1 && column >= 1 && parts.next()?.starts_with(' ')).then(|| line.to_owned())
        })
        .collect()
}

/// The commands that read a fleet and write files (or a repository), each with its output
/// path `out`.
fn writing_commands(fleet: &Path, out: &Path) -> Vec<(&'static str, Vec<OsString>)> {
    let args = |words: &[&str]| -> Vec<OsString> {
        let mut v: Vec<OsString> = words.iter().map(Into::into).collect();
        v.extend(["-f".into(), fleet.into(), "-o".into(), out.into()]);
        v
    };
    let repo = |words: &[&str]| -> Vec<OsString> {
        let mut v: Vec<OsString> = words.iter().map(Into::into).collect();
        v.extend(["-f".into(), fleet.into(), "--repo".into(), out.into()]);
        v
    };
    vec![
        ("render", args(&["render"])),
        ("vm files", args(&["vm", "files", "tester-1"])),
        (
            "cloud-init",
            // The token is never read: the fleet is refused first.
            args(&[
                "cloud-init",
                "tester-1",
                "--token-file",
                "/nonexistent/token",
            ]),
        ),
        ("gitops sync", repo(&["gitops", "sync"])),
        ("gitops diff", repo(&["gitops", "diff"])),
    ]
}

fn assert_refused(what: &str, r: &Run, fleet: &Path) -> Vec<String> {
    assert_eq!(r.code, 1, "{what}: exit 1 expected\n{}", r.stderr);
    let errors = located_errors(&r.stderr, fleet);
    assert!(
        !errors.is_empty(),
        "{what}: a `file:line:column:` message expected, got:\n{}",
        r.stderr
    );
    errors
}

#[test]
fn every_invalid_fleet_is_refused_everywhere_and_nothing_is_written() {
    let fixtures = invalid_fixtures();
    assert!(
        fixtures.len() >= 45,
        "the hostile corpus has {} files",
        fixtures.len()
    );
    let tmp = tempfile::tempdir().unwrap();
    // An output directory that holds a previous good result must come out unchanged.
    let existing = tmp.path().join("existing");
    let seed = fixture("fleets/seed/meshvm.yaml");
    let rendered = run(meshvm()
        .args(["render", "-f"])
        .arg(&seed)
        .arg("-o")
        .arg(existing.join("tree")));
    assert_eq!(rendered.code, 0, "{}", rendered.stderr);
    let files = run(meshvm()
        .args(["vm", "files", "tester-1", "-f"])
        .arg(&seed)
        .arg("-o")
        .arg(existing.join("vm")));
    assert_eq!(files.code, 0, "{}", files.stderr);
    let before = snapshot(tmp.path());

    for fleet in &fixtures {
        let name = fleet.file_name().unwrap().to_string_lossy().into_owned();
        let validate = run(meshvm().args(["validate", "-f"]).arg(fleet));
        let expected = assert_refused(&format!("{name}: validate"), &validate, fleet);
        let json = run(meshvm()
            .args(["validate", "--output", "json", "-f"])
            .arg(fleet));
        assert_eq!(json.code, 1, "{name}: validate --output json");
        let diags: Vec<serde_json::Value> = serde_json::from_str(&json.stdout)
            .unwrap_or_else(|e| panic!("{name}: JSON diagnostics: {e}\n{}", json.stdout));
        assert_eq!(
            diags.len(),
            expected.len(),
            "{name}: one JSON entry per error"
        );

        for (command, target) in [
            ("new", tmp.path().join("absent")),
            ("old", existing.clone()),
        ] {
            let target = if command == "old" {
                target.join("tree")
            } else {
                target
            };
            for (cmd, args) in writing_commands(fleet, &target) {
                let what = format!("{name}: {cmd} into an {command} directory");
                let r = run(meshvm().args(&args));
                let errors = assert_refused(&what, &r, fleet);
                assert_eq!(errors, expected, "{what}: the same diagnostics as validate");
                assert_eq!(
                    snapshot(tmp.path()),
                    before,
                    "{what}: something was written"
                );
            }
        }
    }
}

/// Writes a fleet file of `len` bytes: a valid start, then comment lines.
fn write_padded(path: &Path, len: usize) {
    let mut text = std::fs::read_to_string(fixture("fleets/seed/meshvm.yaml")).unwrap();
    let line = format!("# {}\n", "x".repeat(1021));
    while text.len() + line.len() <= len {
        text.push_str(&line);
    }
    text.push_str(&"#".repeat(len - text.len()));
    assert_eq!(text.len(), len);
    std::fs::write(path, text).unwrap();
}

#[test]
fn a_fleet_over_the_size_limit_is_refused_without_reading_it_all() {
    const LIMIT: usize = 64 << 20;
    let tmp = tempfile::tempdir().unwrap();
    let huge = tmp.path().join("huge.yaml");
    write_padded(&huge, LIMIT + 1);
    let out = tmp.path().join("out");
    let started = Instant::now();
    for r in [
        run(meshvm().args(["validate", "-f"]).arg(&huge)),
        run(meshvm()
            .args(["render", "-f"])
            .arg(&huge)
            .arg("-o")
            .arg(&out)),
    ] {
        let errors = assert_refused("over the limit", &r, &huge);
        assert!(
            errors[0].contains(":1:1: the file is larger than the 67108864 bytes"),
            "{}",
            r.stderr
        );
        assert!(!out.exists());
    }
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "refused promptly"
    );

    // Exactly at the limit the file is read (and then found valid, being the seed fleet).
    write_padded(&huge, LIMIT);
    let at_limit = run(meshvm().args(["validate", "-f"]).arg(&huge));
    assert_eq!(at_limit.code, 0, "{}", at_limit.stderr);
    std::fs::remove_file(&huge).unwrap();

    // A device has no size to check first: it is read up to the limit and refused.
    let zero = Path::new("/dev/zero");
    let started = Instant::now();
    let r = run(meshvm().args(["validate", "-f"]).arg(zero));
    let errors = assert_refused("/dev/zero", &r, zero);
    assert!(errors[0].contains("larger than"), "{}", r.stderr);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "refused promptly"
    );
}
