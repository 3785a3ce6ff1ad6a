//! The commands that only read a fleet: init, validate, schema, completions.

use crate::support::{fixture, meshvm, run};

#[test]
fn validate_accepts_the_seed_fleet() {
    let out = run(meshvm()
        .args(["validate", "-f"])
        .arg(fixture("fleets/seed/meshvm.yaml")));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .contains("valid: 1 workload groups, 1 VMs, mesh mesh1"),
        "{}",
        out.stdout
    );
}

#[test]
fn validate_reports_every_problem_and_exits_1() {
    let out = run(meshvm()
        .args(["validate", "-f"])
        .arg(fixture("invalid/many-problems.yaml")));
    assert_eq!(out.code, 1);
    let errors = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .count();
    assert!(errors >= 5, "all problems at once:\n{}", out.stderr);
    assert!(out.stderr.contains("many-problems.yaml:"), "{}", out.stderr);
}

#[test]
fn validate_json_output_lists_diagnostics() {
    let out = run(meshvm()
        .args(["validate", "--output", "json", "-f"])
        .arg(fixture("invalid/many-problems.yaml")));
    assert_eq!(out.code, 1);
    let diags: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let first = &diags[0];
    assert!(first["pos"]["line"].as_u64().unwrap() > 0);
    assert!(first["message"].is_string());
}

/// Issue 16, item 13: what is most likely a mistake is a warning, not an error.
#[test]
fn validate_warns_of_likely_mistakes_and_succeeds() {
    let fleet = fixture("warnings/every-warning.yaml");
    let out = run(meshvm().arg("validate").arg("-f").arg(&fleet));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let warnings = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("warning: "))
        .count();
    assert!(warnings >= 8, "{}", out.stdout);
    let out = run(meshvm()
        .args(["validate", "--output", "json", "-f"])
        .arg(&fleet));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let diags: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let diags = diags.as_array().unwrap();
    assert_eq!(diags.len(), warnings);
    assert!(
        diags
            .iter()
            .all(|d| d["severity"] == "warning" && d["hint"].is_string())
    );
}

#[test]
fn init_writes_a_valid_starter_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(meshvm().arg("init").arg(dir.path()));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let file = dir.path().join("meshvm.yaml");
    let out = run(meshvm().args(["validate", "-f"]).arg(&file));
    assert_eq!(out.code, 0, "{}", out.stderr);
    std::fs::write(&file, "# mine\n").unwrap();
    let out = run(meshvm().arg("init").arg(dir.path()));
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("--force"), "{}", out.stderr);
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "# mine\n",
        "nothing overwritten"
    );
}

#[test]
fn missing_file_is_a_clear_error() {
    let out = run(meshvm().args(["validate", "-f", "/nonexistent/meshvm.yaml"]));
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.starts_with(
            "error: cannot read /nonexistent/meshvm.yaml\ncaused by: No such file or directory"
        ),
        "the cause on its own line:\n{}",
        out.stderr
    );
}

#[test]
fn usage_errors_exit_2() {
    let out = run(meshvm().arg("frobnicate"));
    assert_eq!(out.code, 2);
}

#[test]
fn schema_and_completions_print() {
    let out = run(meshvm().arg("schema"));
    assert_eq!(out.code, 0);
    let schema: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert!(schema["properties"]["workloads"].is_object());
    // The constraints validate enforces, for editors (issue 16, item 14).
    assert_eq!(
        schema["properties"]["apiVersion"]["const"],
        "meshvm.io/v1alpha1"
    );
    assert_eq!(schema["properties"]["kind"]["const"], "Fleet");
    let number = &schema["$defs"]["ServicePort"]["properties"]["number"];
    assert_eq!(
        (&number["minimum"], &number["maximum"]),
        (&1.into(), &65535.into())
    );
    let out = run(meshvm().args(["completions", "bash"]));
    assert_eq!(out.code, 0);
    assert!(out.stdout.contains("meshvm"));
}

#[test]
fn branch_and_remote_names_git_refuses_are_refused_up_front() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("gitops.git");
    let seed = crate::support::fixture("fleets/seed/meshvm.yaml");
    for (flag, name) in [
        ("--branch", "a.lock/b"),
        ("--branch", "x/.hidden"),
        ("--remote-branch", "x/.hidden"),
        ("--remote", "x/.hidden"),
    ] {
        let out = run(meshvm()
            .args(["gitops", "sync", "--push", "-f"])
            .arg(&seed)
            .arg("--repo")
            .arg(&repo)
            .args([flag, name]));
        assert_eq!(out.code, 1, "{flag} {name}: {}", out.stderr);
        assert!(
            out.stderr.contains(&format!("{name:?} is not a valid Git"))
                && out
                    .stderr
                    .contains(&format!("hint: name another with {flag}")),
            "{flag} {name}: {}",
            out.stderr
        );
        assert!(!repo.exists(), "{flag} {name}: nothing was created");
    }
}
