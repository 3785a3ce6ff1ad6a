//! The no-op shortcut of `meshvm gitops sync`, end to end: a sync with nothing changed skips
//! the load and the render (the commit's `Meshvm-Inputs` trailer says they would give the same
//! tree), yet a changed fleet file is still read in full, and a hand edit is still refused.

use std::process::Command;

use crate::support::gitops::{OWNED, Scratch, ok};
use crate::support::{checked, git, run};

#[test]
fn a_sync_with_nothing_changed_is_a_no_op_yet_changes_and_hand_edits_are_seen() {
    let s = Scratch::new();
    let fleet = s.fleet(&[("tester-1", "10.0.0.11")]);
    let repo = s.path().join("repo.git");
    let repo_s = repo.to_str().unwrap();
    ok(&run(&mut s.meshvm(&["sync", "-q", "--repo", repo_s])));
    let head = git(&repo, &["rev-parse", "main"]);
    let message = git(&repo, &["log", "-1", "--format=%B", "main"]);
    assert!(message.contains("\nMeshvm-Inputs: "), "{message}");

    // Nothing changed: no commit, the same report as a full no-op.
    let r = run(&mut s.meshvm(&["sync", "--repo", repo_s, "--output", "json"]));
    ok(&r);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["changes"], false, "{}", r.stdout);
    assert_eq!(v["commit"], serde_json::Value::Null);
    assert_eq!(git(&repo, &["rev-parse", "main"]), head);
    let r = run(&mut s.meshvm(&["diff", "--repo", repo_s]));
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);

    // The fleet file changed in a way only a full load sees (an unknown field): the shortcut
    // is not taken, and the load refuses the file.
    let text = std::fs::read_to_string(&fleet).unwrap();
    std::fs::write(&fleet, format!("{text}unknownField: 1\n")).unwrap();
    let r = run(&mut s.meshvm(&["sync", "--repo", repo_s]));
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("unknownField"), "{}", r.stderr);
    std::fs::write(&fleet, &text).unwrap();

    // A hand edit below the owned path: refused, as without the shortcut.
    let work = s.path().join("work");
    checked(Command::new("git").args(["clone", "-q", repo_s]).arg(&work));
    std::fs::write(work.join(OWNED).join("README.md"), "edited by hand\n").unwrap();
    git(&work, &["commit", "-qam", "hand edit"]);
    git(&work, &["push", "-q", "origin", "main"]);
    let r = run(&mut s.meshvm(&["sync", "--repo", repo_s]));
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("README.md"), "{}", r.stderr);
}

/// A fleet file the glance leaves to the full load (an alias) still takes the shortcut on the
/// next sync: the sync that read it in full remembered its fields for its bytes, in the
/// repository's git directory. Other bytes are read in full again. (A sync that read the
/// fleet reports its `warnings` in JSON; the shortcut does not read it and leaves them out.)
#[test]
fn a_fleet_the_glance_cannot_scan_takes_the_shortcut_from_what_its_last_sync_remembered() {
    let s = Scratch::new();
    let fleet = s.fleet(&[("tester-1", "10.0.0.11")]);
    let text = std::fs::read_to_string(&fleet)
        .unwrap()
        .replace(
            "    serviceAccount: tester\n",
            "    serviceAccount: &sa tester\n",
        )
        .replace("      app: tester\n", "      app: *sa\n");
    assert!(text.contains("*sa"), "{text}");
    std::fs::write(&fleet, &text).unwrap();
    let repo = s.path().join("repo.git");
    let repo_s = repo.to_str().unwrap();
    let sync = || {
        let r = run(&mut s.meshvm(&["sync", "--repo", repo_s, "--output", "json"]));
        ok(&r);
        serde_json::from_str::<serde_json::Value>(&r.stdout).unwrap()
    };
    let read_in_full = |v: &serde_json::Value| v.get("warnings").is_some();

    let first = sync();
    assert!(
        first["commit"].is_string() && read_in_full(&first),
        "{first}"
    );
    let second = sync();
    assert_eq!(second["changes"], false, "{second}");
    assert!(!read_in_full(&second), "the shortcut: {second}");

    // New bytes (a comment): read in full once, then remembered again.
    std::fs::write(&fleet, format!("{text}# a comment\n")).unwrap();
    assert!(read_in_full(&sync()));
    assert!(!read_in_full(&sync()));

    // Without what was remembered, the file is read in full.
    std::fs::remove_dir_all(repo.join("meshvm").join("glance")).unwrap();
    let v = sync();
    assert!(read_in_full(&v) && v["changes"] == false, "{v}");
}
