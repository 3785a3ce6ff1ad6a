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

#[test]
fn a_root_bundle_with_an_expired_old_root_beside_a_valid_one_is_accepted_with_a_warning() {
    let tmp = tempfile::tempdir().unwrap();
    let fleet = tmp.path().join("meshvm.yaml");
    std::fs::copy(fixture("fleets/single-network/meshvm.yaml"), &fleet).unwrap();
    let old = std::fs::read_to_string(fixture("invalid/certs/expired-root-cert.pem")).unwrap();
    let new = std::fs::read_to_string(fixture("certs/test-root-cert.pem")).unwrap();
    std::fs::write(tmp.path().join("root-cert.pem"), format!("{old}{new}")).unwrap();
    // One of the fleet's warnings: in validate's report, after render's result.
    let rotation = |text: &str| {
        text.contains("warning: ")
            && text.contains("mesh.rootCert: the root certificate")
            && text.contains("expired at 2021-01-01T")
            && text.contains("(a CA rotation?)")
            && text.contains("hint: remove the old certificate once every VM trusts the new one")
    };
    let r = run(meshvm().args(["validate", "-f"]).arg(&fleet));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(rotation(&r.stdout), "{}", r.stdout);
    let r = run(meshvm()
        .args(["validate", "--output", "json", "-f"])
        .arg(&fleet));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let json: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert!(
        json.as_array()
            .unwrap()
            .iter()
            .any(|w| w["path"] == "mesh.rootCert"
                && w["severity"] == "warning"
                && w["pos"]["line"].as_u64() > Some(1)),
        "{json:#}"
    );
    let r = run(meshvm().args(["render", "--stdout", "-f"]).arg(&fleet));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(rotation(&r.stderr), "{}", r.stderr);
    // The old root alone is still refused.
    std::fs::write(tmp.path().join("root-cert.pem"), old).unwrap();
    let r = run(meshvm().args(["validate", "-f"]).arg(&fleet));
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("expired at 2021-01-01T"), "{}", r.stderr);
}

/// Runs `cmd` with `input` on its standard input.
fn run_with_stdin(cmd: &mut std::process::Command, input: &[u8]) -> crate::support::Run {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    crate::support::Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn dash_reads_the_fleet_from_stdin() {
    let seed = std::fs::read(fixture("fleets/seed/meshvm.yaml")).unwrap();
    let r = run_with_stdin(meshvm().args(["validate", "-f", "-"]), &seed);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.starts_with("-: valid: "), "{}", r.stdout);
    let piped = run_with_stdin(meshvm().args(["render", "--stdout", "-f", "-"]), &seed);
    let from_file = run(meshvm()
        .args(["render", "--stdout", "-f"])
        .arg(fixture("fleets/seed/meshvm.yaml")));
    assert_eq!(piped.code, 0, "{}", piped.stderr);
    assert_eq!(piped.stdout, from_file.stdout);
    // Problems are located in `-` as in a file.
    let r = run_with_stdin(
        meshvm().args(["validate", "-f", "-"]),
        b"apiVersion: meshvm.io/v1alpha1\nkind: Fleet\nmesh: 3\n",
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("-:3:7"), "{}", r.stderr);
}

#[test]
fn vm_list_filters_by_group_and_namespace_in_text_and_json() {
    let fleet = fixture("fleets/single-network/meshvm.yaml");
    let source = meshvm::spec::load_fleet(&fleet).unwrap();
    let r = run(meshvm().args(["vm", "list", "-f"]).arg(&fleet));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.starts_with("NAME "), "{}", r.stdout);
    assert_eq!(r.stdout.lines().count(), source.fleet.vms().count() + 1);
    let (group, _) = source.fleet.vms().next().unwrap();
    let r = run(meshvm()
        .args([
            "vm",
            "list",
            "--output",
            "json",
            "--group",
            &group.name,
            "-f",
        ])
        .arg(&fleet));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let list: Vec<serde_json::Value> = serde_json::from_str(&r.stdout).unwrap();
    let expected: Vec<&str> = source
        .fleet
        .vms()
        .filter(|(g, _)| g.name == group.name)
        .map(|(_, vm)| vm.name.as_str())
        .collect();
    let names: Vec<&str> = list.iter().map(|v| v["name"].as_str().unwrap()).collect();
    assert_eq!(names, expected);
    assert!(list.iter().all(|v| v["group"] == group.name.as_str()));
    let r = run(meshvm()
        .args([
            "vm",
            "list",
            "--output",
            "names",
            "-n",
            "no-such-namespace",
            "-f",
        ])
        .arg(&fleet));
    assert_eq!((r.code, r.stdout.as_str()), (0, ""));
}
