//! The fleet's warnings (issue 16): `validate` reports them; `render`, `gitops diff` and
//! `gitops sync` show them on stderr after their result (and in `--output json`), in
//! validate's format. The no-op shortcut does not read the fleet, so a sync with nothing
//! changed does not repeat them: the run that committed the fleet showed them.

use crate::support::gitops::{Scratch, ok};
use crate::support::{fixture, meshvm, run};

/// The `warning:` lines of an output, each with its hint line.
fn warnings(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| l.starts_with("warning: ") || l.starts_with("  hint: "))
        .collect()
}

#[test]
fn render_and_gitops_show_the_fleet_s_warnings_after_their_result() {
    let s = Scratch::new();
    let fleet = s.path().join("meshvm.yaml");
    std::fs::copy(fixture("warnings/every-warning.yaml"), &fleet).unwrap();
    let validate = run(meshvm().arg("validate").arg("-f").arg(&fleet));
    ok(&validate);
    let expected = warnings(&validate.stdout);
    assert!(expected.len() >= 16, "{}", validate.stdout);

    let r = run(meshvm().args(["render", "--stdout", "-f"]).arg(&fleet));
    ok(&r);
    assert_eq!(warnings(&r.stderr), expected, "render:\n{}", r.stderr);
    assert!(!r.stdout.contains("warning:"), "stdout holds only objects");

    let repo = s.path().join("repo.git");
    let repo = repo.to_str().unwrap();
    let r = run(&mut s.meshvm(&["diff", "--stat", "--repo", repo]));
    assert_eq!(r.code, 4, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(warnings(&r.stderr), expected, "diff:\n{}", r.stderr);

    // JSON carries them, marked as warnings (stderr still shows them, for a CI log).
    let r = run(&mut s.meshvm(&["sync", "--repo", repo, "--output", "json"]));
    ok(&r);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["changes"], true, "{}", r.stdout);
    let listed = v["warnings"].as_array().expect("warnings in JSON");
    assert_eq!(listed.len() * 2, expected.len(), "{}", r.stdout);
    assert!(listed.iter().all(|w| w["severity"] == "warning"));
    assert_eq!(warnings(&r.stderr), expected, "sync:\n{}", r.stderr);

    // Nothing changed since the commit: the shortcut does not read the fleet, and the
    // warnings are not repeated (and not claimed in JSON).
    let r = run(&mut s.meshvm(&["sync", "--repo", repo, "--output", "json"]));
    ok(&r);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["changes"], false, "{}", r.stdout);
    assert!(v.get("warnings").is_none(), "{}", r.stdout);
    assert_eq!(warnings(&r.stderr), Vec::<&str>::new(), "{}", r.stderr);
    let r = run(&mut s.meshvm(&["diff", "--repo", repo]));
    ok(&r);
    assert_eq!(warnings(&r.stderr), Vec::<&str>::new(), "{}", r.stderr);

    // A changed file is read in full again (here: the same tree, no changes); -q: errors only.
    let text = std::fs::read_to_string(&fleet).unwrap();
    std::fs::write(&fleet, text + "# a comment\n").unwrap();
    let r = run(&mut s.meshvm(&["diff", "--repo", repo]));
    ok(&r);
    assert_eq!(warnings(&r.stderr), expected, "diff:\n{}", r.stderr);
    let r = run(&mut s.meshvm(&["sync", "-q", "--repo", repo]));
    ok(&r);
    assert_eq!(r.stderr, "", "quiet");
}
