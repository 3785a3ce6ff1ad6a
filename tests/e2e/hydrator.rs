//! Source Hydrator / GitOps Promoter mode (`gitops.hydrator`), end to end: a fleet file in a
//! real Git work tree (the dry repository) synced with `meshvm gitops sync`; the hydrated
//! commit's `hydrator.metadata` files and `Argocd-reference-commit-*` trailers read back;
//! an unchanged dry commit gives no commit, a new one a commit; Promoter mode pushes to
//! `<branch>-next`.

use std::path::{Path, PathBuf};

use crate::support::gitops::{OWNED, Scratch, ok};
use crate::support::{bare_repo, fixture, git, meshvm, render_to, run};

/// The dry repository: fixtures/hydrator's fleet at `fleets/prod.yaml`, committed.
fn dry_repo(s: &Scratch) -> (PathBuf, PathBuf) {
    let dry = s.path().join("dry");
    std::fs::create_dir_all(dry.join("fleets")).unwrap();
    git(&dry, &["init", "-q", "-b", "main"]);
    let fleet = dry.join("fleets/prod.yaml");
    std::fs::copy(fixture("hydrator/meshvm.yaml"), &fleet).unwrap();
    git(&dry, &["add", "-A"]);
    git(
        &dry,
        &[
            "commit",
            "-q",
            "-m",
            "fleet: add tester-1",
            "-m",
            "Argocd-reference-commit-sha: b82add298aa045d3672880802d5305c5a8aaa46e",
        ],
    );
    (dry, fleet)
}

fn sync(s: &Scratch, fleet: &Path, repo: &str, extra: &[&str]) -> crate::support::Run {
    run(meshvm()
        .current_dir(s.path())
        .env("HOME", s.home())
        .env("MESHVM_CACHE_DIR", s.cache())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .args(["gitops", "sync", "-q", "--repo", repo, "-f"])
        .arg(fleet)
        .args(extra))
}

fn metadata(repo: &Path, rev: &str, dir: &str) -> serde_json::Value {
    let text = git(
        repo,
        &["show", &format!("{rev}:{OWNED}/{dir}hydrator.metadata")],
    );
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{dir}hydrator.metadata: {e}\n{text}"))
}

#[test]
fn a_hydrated_sync_records_the_dry_commit_and_commits_only_for_a_new_one() {
    let s = Scratch::new();
    let (dry, fleet) = dry_repo(&s);
    let dry_sha = git(&dry, &["rev-parse", "HEAD"]).trim().to_owned();
    let out = s.path().join("out.git");
    let out_s = out.to_str().unwrap();
    ok(&sync(&s, &fleet, out_s, &[]));

    // Promoter mode: the commit is on main-next, and main is not made.
    let first = git(&out, &["rev-parse", "main-next"]).trim().to_owned();
    assert!(
        git(&out, &["branch", "--list", "main"]).trim().is_empty(),
        "only main-next is written"
    );
    let root = metadata(&out, "main-next", "");
    assert_eq!(root["drySha"], dry_sha.as_str());
    assert_eq!(root["repoURL"], "https://git.example.com/mesh.git");
    assert_eq!(root["author"], "Human <human@example.org>");
    assert_eq!(root["subject"], "fleet: add tester-1");
    assert_eq!(
        root["date"],
        git(&dry, &["show", "-s", "--format=%aI", "HEAD"]).trim()
    );
    assert_eq!(
        root["references"][0]["commit"]["sha"],
        "b82add298aa045d3672880802d5305c5a8aaa46e"
    );
    for dir in ["mesh/", "workloads/vm-apps/tester/"] {
        let m = metadata(&out, "main-next", dir);
        assert_eq!(m["drySha"], dry_sha.as_str(), "{dir}");
        assert_eq!(
            m["commands"][0], "meshvm render --file fleets/prod.yaml --output clusters/cluster1",
            "{dir}"
        );
    }
    // `meshvm render` (the listed command) writes the same metadata, byte for byte.
    let rendered = s.path().join("rendered");
    render_to(&fleet, &rendered);
    for dir in ["", "mesh/", "workloads/vm-apps/tester/"] {
        assert_eq!(
            std::fs::read_to_string(rendered.join(format!("{dir}hydrator.metadata"))).unwrap(),
            git(
                &out,
                &["show", &format!("main-next:{OWNED}/{dir}hydrator.metadata")]
            ),
            "{dir}"
        );
    }
    let message = git(&out, &["log", "-1", "--format=%B", "main-next"]);
    for trailer in [
        format!("Argocd-reference-commit-sha: {dry_sha}\n"),
        "Argocd-reference-commit-author: Human <human@example.org>\n".to_owned(),
        "Argocd-reference-commit-subject: fleet: add tester-1\n".to_owned(),
        "Argocd-reference-commit-repourl: https://git.example.com/mesh.git\n".to_owned(),
        "\nMeshvm-Inputs: ".to_owned(),
    ] {
        assert!(message.contains(&trailer), "{trailer:?} in\n{message}");
    }

    // The same dry commit: no commit, through the no-op shortcut (its JSON report has no
    // `warnings`: the fleet was not read); the push test below shows the full sync too.
    let r = sync(&s, &fleet, out_s, &["--output", "json"]);
    ok(&r);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["commit"], serde_json::Value::Null, "{}", r.stdout);
    assert!(
        v.get("warnings").is_none(),
        "the shortcut is taken: {}",
        r.stdout
    );
    assert_eq!(git(&out, &["rev-parse", "main-next"]).trim(), first);

    // A new dry commit that leaves the fleet file as it was: the fleet's bytes are the same,
    // yet the shortcut must not skip it, and the commit records the new drySha.
    git(
        &dry,
        &["commit", "-q", "--allow-empty", "-m", "docs: unrelated"],
    );
    let second_dry = git(&dry, &["rev-parse", "HEAD"]).trim().to_owned();
    ok(&sync(&s, &fleet, out_s, &[]));
    let second = git(&out, &["rev-parse", "main-next"]).trim().to_owned();
    assert_ne!(second, first, "a new dry commit is a new hydrated commit");
    assert_eq!(
        metadata(&out, "main-next", "")["drySha"],
        second_dry.as_str()
    );
    assert_eq!(
        metadata(&out, "main-next", "mesh/")["drySha"],
        second_dry.as_str()
    );
    // Only the metadata changed.
    let changed = git(&out, &["diff", "--name-only", &first, &second]);
    assert!(
        changed.lines().all(|l| l.ends_with("/hydrator.metadata")),
        "{changed}"
    );

    // A fleet file edited but not committed: the sync renders it, and leaves drySha out
    // rather than name a commit that does not hold it.
    let text = std::fs::read_to_string(&fleet).unwrap();
    std::fs::write(&fleet, text.replace("10.0.0.11", "10.0.0.12")).unwrap();
    let r = run(meshvm()
        .current_dir(s.path())
        .env("HOME", s.home())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .args(["gitops", "sync", "--repo", out_s, "-f"])
        .arg(&fleet));
    ok(&r);
    assert!(r.stderr.contains("leaves drySha out"), "{}", r.stderr);
    let root = metadata(&out, "main-next", "");
    assert!(root.get("drySha").is_none(), "{root}");
}

#[test]
fn promoter_mode_pushes_to_the_next_branch_of_the_remote() {
    let s = Scratch::new();
    let (dry, fleet) = dry_repo(&s);
    let remote = bare_repo(&s.srv(), "hydrated.git");
    let url = format!("file://{}", remote.display());
    ok(&sync(&s, &fleet, &url, &["--push"]));
    let pushed = git(&remote, &["rev-parse", "main-next"]).trim().to_owned();
    assert!(
        git(&remote, &["branch", "--list", "main"])
            .trim()
            .is_empty()
    );
    assert_eq!(
        metadata(&remote, "main-next", "")["drySha"],
        git(&dry, &["rev-parse", "HEAD"]).trim()
    );
    // Unchanged: nothing pushed. A push never takes the no-op shortcut, so this is the full
    // render giving the same bytes: no clock in the tree.
    ok(&sync(&s, &fleet, &url, &["--push"]));
    assert_eq!(git(&remote, &["rev-parse", "main-next"]).trim(), pushed);
}
