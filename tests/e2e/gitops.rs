//! `meshvm gitops sync` without a Git server: a local bare repository, a work tree whose
//! checkout is never touched, and remotes that are not there or never answer. (Against real
//! servers in the system tier.)

use std::process::Command;

use crate::support::gitops::{Scratch, files, ok};
use crate::support::{checked, fixture, free_port, git, meshvm, run};

#[test]
fn an_unreachable_remote_fails_fast_with_exit_3() {
    let s = Scratch::new();
    s.fleet(&[("tester-1", "10.0.0.11")]);
    let url = format!("git://127.0.0.1:{}/mesh.git", free_port());
    let started = std::time::Instant::now();
    let r = run(&mut s.meshvm(&["sync", "--push", "--repo", &url]));
    assert_eq!(r.code, 3, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("fetching"), "{}", r.stderr);
    assert!(r.stderr.contains(&url), "{}", r.stderr);
    assert!(started.elapsed().as_secs() < 20);
}

#[test]
fn a_local_bare_repository_by_default_and_the_checkout_of_a_work_tree_is_never_touched() {
    let s = Scratch::new();
    s.fleet(&[("tester-1", "10.0.0.11")]);
    // No --repo: ./meshvm-gitops.git, created bare.
    let r = run(&mut s.meshvm(&["sync", "-q"]));
    ok(&r);
    let repo = s.path().join("meshvm-gitops.git");
    assert_eq!(
        git(&repo, &["rev-parse", "--is-bare-repository"]).trim(),
        "true"
    );
    assert!(r.stderr.is_empty(), "-q: {}", r.stderr);

    // A work tree with main checked out: refused on main, fine on another branch.
    let work = s.path().join("work");
    checked(
        Command::new("git")
            .args(["clone", "-q"])
            .arg(&repo)
            .arg(&work),
    );
    let work_s = work.to_str().unwrap();
    let r = run(&mut s.meshvm(&["sync", "--repo", work_s]));
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("checked out"), "{}", r.stderr);
    s.fleet(&[("tester-1", "10.0.0.11"), ("tester-2", "10.0.0.12")]);
    ok(&run(
        &mut s.meshvm(&["sync", "--repo", work_s, "--branch", "gitops"])
    ));
    assert_eq!(git(&work, &["status", "--porcelain"]), "");
    assert!(
        files(&work, "gitops")
            .iter()
            .any(|p| p.contains("/tester-2/")),
        "the other branch got the commit"
    );

    // JSON for machines.
    let r = run(&mut s.meshvm(&[
        "sync", "--repo", work_s, "--branch", "gitops", "--output", "json",
    ]));
    ok(&r);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["changes"], false);
    assert_eq!(v["commit"], serde_json::Value::Null);
}

#[test]
fn a_server_that_never_answers_times_out() {
    let s = Scratch::new();
    s.fleet(&[("tester-1", "10.0.0.11")]);
    // Accepts connections and says nothing.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let _held = std::thread::spawn(move || {
        let conns: Vec<_> = listener.incoming().take(4).collect();
        std::thread::sleep(std::time::Duration::from_secs(30));
        drop(conns);
    });
    let url = format!("git://127.0.0.1:{port}/mesh.git");
    let started = std::time::Instant::now();
    let r = run(&mut s.meshvm(&["sync", "--push", "--timeout", "2", "--repo", &url]));
    assert_eq!(r.code, 3, "{}\n{}", r.stdout, r.stderr);
    assert!(started.elapsed().as_secs() < 15, "{:?}", started.elapsed());
    assert!(r.stderr.contains("fetching"), "{}", r.stderr);
}

#[test]
fn with_output_json_errors_are_json_on_stdout_too() {
    let tmp = tempfile::tempdir().unwrap();
    let not_a_repo = tmp.path().join("file");
    std::fs::write(&not_a_repo, "x").unwrap();
    for args in [
        vec!["gitops", "sync", "--output", "json", "--repo"],
        vec!["gitops", "diff", "--output", "json", "--repo"],
    ] {
        let r = run(meshvm()
            .args(&args)
            .arg(&not_a_repo)
            .arg("-f")
            .arg(fixture("fleets/seed/meshvm.yaml")));
        assert_eq!(r.code, 1, "{args:?}: {}", r.stderr);
        let json: serde_json::Value = serde_json::from_str(&r.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", r.stdout));
        let error = &json["error"];
        assert_eq!(error["kind"], "invalid-input", "{json}");
        assert_eq!(error["exitCode"], 1);
        assert!(
            error["message"]
                .as_str()
                .unwrap()
                .contains("exists and is not a Git repository"),
            "{json}"
        );
        assert_eq!(r.stderr, "", "{args:?}");
    }
    let r = run(meshvm()
        .args(["validate", "--output", "json", "-f"])
        .arg(tmp.path().join("missing.yaml")));
    assert_eq!(r.code, 1, "{}", r.stderr);
    let json: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert!(
        json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("missing.yaml"),
        "{json}"
    );
}
