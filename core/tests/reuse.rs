//! Reuse of unchanged VMs' trees (`git::reuse`, keyed by `render::reuse`): for each fleet edit
//! in turn, a sync that renders only the VMs whose inputs changed plans, diffs and commits
//! exactly what a sync of the full render does; each input changed re-renders the VMs it
//! feeds; hand edits (inside a reused VM's directory and elsewhere) are reported as without
//! reuse; and a record written on one branch is right on another base.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use git2::Repository;
use meshvm::git::{self, Event, GitError, Mode, Options, Report, Target, plan};
use meshvm::spec::{SourceFile, load_fleet};
use testkit::fixture;

const VMS: [&str; 5] = [
    "vm-apps/billing/vms/billing-1",
    "vm-apps/billing/vms/billing-2",
    "vm-apps/billing/vms/billing-3",
    "vm-data/ledger/vms/ledger-1",
    "vm-data/ledger/vms/ledger-2",
];

/// The fleet of fixtures/reuse and its root certificate, copied into `dir`.
fn fleet_in(dir: &Path) -> PathBuf {
    std::fs::copy(fixture("reuse/meshvm.yaml"), dir.join("meshvm.yaml")).unwrap();
    std::fs::copy(
        fixture("fleets/single-network/root-cert.pem"),
        dir.join("root-cert.pem"),
    )
    .unwrap();
    dir.join("meshvm.yaml")
}

fn options(repo: &Path, dir: &Path, branch: &str, mode: Mode) -> Options {
    let mut o = Options::new(Target::Path(repo.to_path_buf()), dir.join("cache"), branch);
    o.lock_timeout = Duration::from_secs(5);
    o.mode = mode;
    o
}

/// A sync as the CLI runs it (`reuse`: only the VMs the record lacks are rendered), or of the
/// full render without any reuse.
fn sync(source: &SourceFile, opts: &Options, reuse: bool) -> Result<Report, GitError> {
    let mut opts = opts.clone();
    let tree = if reuse {
        let (rendered, reuse) = git::reuse::render(&source.fleet, &opts);
        opts.reuse = Some(Arc::new(reuse));
        rendered.files
    } else {
        meshvm::render::render(&source.fleet).files
    };
    let input = git::Input {
        tree: tree.clone(),
        path: &source.fleet.gitops.path,
        fleet_sha256: &source.sha256,
    };
    git::sync(input, &opts, &mut |_: Event<'_>| {})
}

/// The VMs (as in [`VMS`]) a sync with `opts` would render rather than reuse.
fn rendered_vms(source: &SourceFile, opts: &Options) -> Vec<String> {
    let (_, reuse) = git::reuse::render(&source.fleet, opts);
    reuse
        .vms
        .iter()
        .filter(|vm| !reuse.reused.contains_key(&vm.dir))
        .map(|vm| vm.dir.trim_start_matches("workloads/").to_owned())
        .collect()
}

/// The subtree at the fleet's path on `branch`.
fn subtree(repo: &Path, branch: &str, path: &str) -> git2::Oid {
    let repo = Repository::open(repo).unwrap();
    let tree = repo
        .find_reference(&format!("refs/heads/{branch}"))
        .unwrap()
        .peel_to_tree()
        .unwrap();
    plan::subtree_id(&tree, path).unwrap()
}

/// The id of the full render's tree: what a sync must commit.
fn full_render_id(source: &SourceFile) -> git2::Oid {
    let tree = meshvm::render::render(&source.fleet).files;
    plan::tree_id(&plan::hashed(tree).unwrap().files).unwrap()
}

/// The dry-run reports of a sync with and without reuse are the same (plan, per-VM summary,
/// hand edits, mass-removal count, unified diff), or both fail alike.
fn assert_same_plan(source: &SourceFile, opts: &Options, what: &str) {
    for mode in [Mode::DryRun, Mode::DryRunWithDiff] {
        let dry = Options {
            mode,
            ..opts.clone()
        };
        let with = sync(source, &dry, true).map(|r| r.plan);
        let without = sync(source, &dry, false).map(|r| r.plan);
        match (with, without) {
            (Ok(with), Ok(without)) => assert_eq!(with, without, "{what} ({mode:?})"),
            (with, without) => assert_eq!(
                with.map_err(|e| e.to_string()),
                without.map_err(|e| e.to_string()),
                "{what} ({mode:?})"
            ),
        }
    }
}

type Edit = fn(&str) -> String;

/// An edit of the files in the fleet's directory.
type Apply = Box<dyn Fn(&Path)>;

/// `(what, the edit of the fleet text, the VMs it re-renders (None: all))`.
fn edits() -> Vec<(&'static str, Edit, Option<Vec<&'static str>>)> {
    vec![
        ("nothing", |t| t.to_owned(), Some(vec![])),
        ("a comment", |t| format!("{t}# a comment\n"), Some(vec![])),
        (
            "a VM's address",
            |t| t.replace("10.0.0.22", "10.0.0.99"),
            Some(vec!["vm-apps/billing/vms/billing-2"]),
        ),
        (
            "a VM's labels",
            |t| t.replace("labels: {version: v2}", "labels: {version: v3}"),
            Some(vec!["vm-apps/billing/vms/billing-2"]),
        ),
        (
            "a VM added",
            |t| {
                t.replace(
                    "      - {name: billing-3, address: 10.0.0.23}\n",
                    "      - {name: billing-3, address: 10.0.0.23}\n      \
                     - {name: billing-4, address: 10.0.0.24}\n",
                )
            },
            Some(vec!["vm-apps/billing/vms/billing-4"]),
        ),
        (
            "a VM removed",
            |t| t.replace("      - {name: billing-3, address: 10.0.0.23}\n", ""),
            Some(vec![]),
        ),
        (
            "most VMs removed (the mass-removal guard)",
            |t| {
                t.replace("      - {name: billing-3, address: 10.0.0.23}\n", "")
                    .replace("      - {name: ledger-1, address: 10.0.1.11}\n", "")
                    .replace("      - {name: billing-1, address: 10.0.0.21}\n", "")
            },
            Some(vec![]),
        ),
        (
            "a VM moved to another group",
            |t| {
                t.replace("      - {name: ledger-2, address: 10.0.1.12}\n", "")
                    .replace(
                        "      - {name: billing-3, address: 10.0.0.23}\n",
                        "      - {name: billing-3, address: 10.0.0.23}\n      \
                         - {name: ledger-2, address: 10.0.1.12}\n",
                    )
            },
            Some(vec!["vm-apps/billing/vms/ledger-2"]),
        ),
        (
            "a group's setting",
            |t| t.replace("labels: {app: ledger}", "labels: {app: ledger, tier: db}"),
            None,
        ),
        (
            "another group's port",
            |t| t.replace("ports: {tcp: 5432}", "ports: {tcp: 5433}"),
            None,
        ),
        (
            "a mesh setting",
            |t| t.replace("meshID: mesh1", "meshID: mesh2"),
            None,
        ),
        (
            "a gitops setting",
            |t| t.replace("engines: [argocd, flux]", "engines: [argocd]"),
            None,
        ),
    ]
}

#[test]
fn a_sync_reusing_unchanged_vms_commits_what_a_full_render_commits() {
    let mut edits: Vec<(&str, Apply, Option<Vec<&str>>)> = edits()
        .into_iter()
        .map(|(what, edit, vms)| {
            let apply: Apply = Box::new(move |dir: &Path| {
                let file = dir.join("meshvm.yaml");
                let text = std::fs::read_to_string(&file).unwrap();
                let edited = edit(&text);
                assert!(
                    what == "nothing" || edited != text,
                    "{what}: the edit applies"
                );
                std::fs::write(&file, edited).unwrap();
            });
            (what, apply, vms)
        })
        .collect();
    // The root certificate (a bundle of the same CA twice is still valid, and other bytes).
    edits.push((
        "the root certificate",
        Box::new(|dir: &Path| {
            let cert = std::fs::read_to_string(dir.join("root-cert.pem")).unwrap();
            std::fs::write(dir.join("root-cert.pem"), format!("{cert}{cert}")).unwrap();
        }),
        None,
    ));
    for (what, apply, expected) in edits {
        let dir = tempfile::tempdir().unwrap();
        let file = fleet_in(dir.path());
        let repo = dir.path().join("repo.git");
        let before = load_fleet(&file).unwrap();
        let branch = before.fleet.gitops.branch.clone();
        let path = before.fleet.gitops.path.clone();
        let opts = options(&repo, dir.path(), &branch, Mode::Commit);

        // Nothing recorded yet: every VM is rendered; the first sync records them all.
        assert_eq!(rendered_vms(&before, &opts), VMS, "{what}");
        assert!(sync(&before, &opts, true).unwrap().commit.is_some());
        assert!(rendered_vms(&before, &opts).is_empty(), "{what}");

        apply(dir.path());
        let after = load_fleet(&file).unwrap();
        let rendered = rendered_vms(&after, &opts);
        match &expected {
            Some(vms) => assert_eq!(rendered, *vms, "{what}: the VMs re-rendered"),
            None => assert_eq!(
                rendered.len(),
                after.fleet.vms().count(),
                "{what}: every VM re-rendered"
            ),
        }
        assert_same_plan(&after, &opts, what);
        let with = sync(&after, &opts, true);
        if what.contains("mass-removal") {
            assert!(matches!(with, Err(GitError::MassRemoval { .. })), "{what}");
            continue;
        }
        with.unwrap();
        assert_eq!(
            subtree(&repo, &branch, &path),
            full_render_id(&after),
            "{what}: the committed tree"
        );
        // Once committed, nothing is left to change, and nothing is rendered again.
        assert!(
            !sync(&after, &opts, true).unwrap().plan.has_changes(),
            "{what}"
        );
        assert!(rendered_vms(&after, &opts).is_empty(), "{what}");
    }
}

/// Commits `files` (path → bytes; `None` removes) on `branch` as someone else would.
fn commit_by_hand(repo: &Path, branch: &str, files: &[(&str, Option<&str>)]) {
    let repo = Repository::open(repo).unwrap();
    let head = repo
        .find_reference(&format!("refs/heads/{branch}"))
        .unwrap()
        .peel_to_commit()
        .unwrap();
    let mut update = git2::build::TreeUpdateBuilder::new();
    for (path, bytes) in files {
        match bytes {
            Some(b) => {
                let id = repo.blob(b.as_bytes()).unwrap();
                update.upsert(*path, id, git2::FileMode::Blob);
            }
            None => {
                update.remove(*path);
            }
        }
    }
    let tree = update.create_updated(&repo, &head.tree().unwrap()).unwrap();
    let tree = repo.find_tree(tree).unwrap();
    let who = git2::Signature::now("someone", "someone@example.com").unwrap();
    repo.commit(
        Some(&format!("refs/heads/{branch}")),
        &who,
        &who,
        "a hand edit",
        &tree,
        &[&head],
    )
    .unwrap();
}

#[test]
fn hand_edits_inside_a_reused_vm_and_elsewhere_are_reported_as_without_reuse() {
    let dir = tempfile::tempdir().unwrap();
    let file = fleet_in(dir.path());
    let repo = dir.path().join("repo.git");
    let source = load_fleet(&file).unwrap();
    let branch = source.fleet.gitops.branch.clone();
    let opts = options(&repo, dir.path(), &branch, Mode::Commit);
    sync(&source, &opts, true).unwrap();

    let inside = "clusters/cluster1/workloads/vm-apps/billing/vms/billing-1/bootstrap/cluster.env";
    let removed = "clusters/cluster1/workloads/vm-data/ledger/vms/ledger-1/bootstrap/hosts";
    let elsewhere = "clusters/cluster1/mesh/extra.yaml";
    commit_by_hand(
        &repo,
        &branch,
        &[
            (inside, Some("EDITED=1\n")),
            (removed, None),
            (elsewhere, Some("kind: Extra\n")),
        ],
    );
    // The same fleet, then one VM changed: the hand edits are found and refused alike.
    for edit in [false, true] {
        if edit {
            let text = std::fs::read_to_string(&file).unwrap();
            std::fs::write(&file, text.replace("10.0.0.22", "10.0.0.99")).unwrap();
        }
        let source = load_fleet(&file).unwrap();
        assert!(
            rendered_vms(&source, &opts).len() <= 1,
            "the record applies"
        );
        assert_same_plan(&source, &opts, &format!("hand edits, fleet edited: {edit}"));
        let dry = Options {
            mode: Mode::DryRun,
            ..opts.clone()
        };
        let plan = sync(&source, &dry, true).unwrap().plan;
        assert_eq!(plan.hand_edits, [elsewhere, inside, removed], "edit {edit}");
        match sync(&source, &opts, true) {
            Err(GitError::HandEdits { paths, .. }) => {
                assert_eq!(paths, [elsewhere, inside, removed], "edit {edit}")
            }
            other => panic!("hand edits must be refused, got {other:?}"),
        }
    }
    // Overwritten on request: the full render's tree, hand edits gone.
    let source = load_fleet(&file).unwrap();
    let forced = Options {
        on_hand_edits: git::OnHandEdits::Overwrite,
        ..opts.clone()
    };
    sync(&source, &forced, true).unwrap();
    assert_eq!(
        subtree(&repo, &branch, &source.fleet.gitops.path),
        full_render_id(&source)
    );
}

#[test]
fn a_record_written_on_one_branch_is_right_on_another_base() {
    let dir = tempfile::tempdir().unwrap();
    let file = fleet_in(dir.path());
    let repo_dir = dir.path().join("repo.git");
    let first = load_fleet(&file).unwrap();
    let main = first.fleet.gitops.branch.clone();
    let opts = options(&repo_dir, dir.path(), &main, Mode::Commit);
    let c0 = sync(&first, &opts, true).unwrap().commit.unwrap();
    {
        let repo = Repository::open(&repo_dir).unwrap();
        repo.branch("old", &repo.find_commit(c0).unwrap(), false)
            .unwrap();
    }
    // The record now maps the changed VM's new inputs to its new tree, which `old` lacks.
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replace("10.0.0.22", "10.0.0.99")).unwrap();
    let second = load_fleet(&file).unwrap();
    sync(&second, &opts, true).unwrap();
    let on_old = options(&repo_dir, dir.path(), "old", Mode::Commit);
    assert!(rendered_vms(&second, &on_old).is_empty());
    assert_same_plan(&second, &on_old, "another base");
    let plan = sync(&second, &on_old, true).unwrap().plan;
    assert_eq!(plan.vms.changed.len(), 1);
    assert_eq!(
        subtree(&repo_dir, "old", &second.fleet.gitops.path),
        full_render_id(&second)
    );
}

#[test]
fn every_input_of_a_vm_changes_its_digest_and_nothing_else_does() {
    use meshvm::render::reuse::{vm_digests, vm_digests_for_build};
    let dir = tempfile::tempdir().unwrap();
    let file = fleet_in(dir.path());
    let source = load_fleet(&file).unwrap();
    let before = vm_digests(&source.fleet);
    assert_eq!(before.len(), VMS.len());
    // The same fleet: the same digests (deterministic).
    assert_eq!(vm_digests(&load_fleet(&file).unwrap().fleet), before);
    // Another build: every digest changes.
    let other = vm_digests_for_build(&source.fleet, "another build");
    assert!(before.iter().zip(&other).all(|(a, b)| a.digest != b.digest));
    // All digests differ from each other.
    let distinct: std::collections::HashSet<_> = before.iter().map(|d| d.digest).collect();
    assert_eq!(distinct.len(), before.len());
}
