//! The no-op shortcut of a sync (`git::unchanged`, keyed by `spec::inputs`): taken when every
//! render input is the one meshvm's last commit recorded and its subtree is untouched, and not
//! taken when any one input changes, when the subtree was edited by hand, or for a push.

use std::path::Path;
use std::time::Duration;

use meshvm::git::{self, Event, Mode, Options, Target};
use meshvm::spec::inputs::{self, Glance};
use meshvm::spec::{SourceFile, load_fleet};
use testkit::fixture;

/// A fleet file with a root certificate, copied into `dir`.
fn fleet_in(dir: &Path) -> std::path::PathBuf {
    let src = fixture("fleets/single-network");
    for name in ["meshvm.yaml", "root-cert.pem"] {
        std::fs::copy(src.join(name), dir.join(name)).unwrap();
    }
    dir.join("meshvm.yaml")
}

fn options(repo: &Path, dir: &Path, branch: &str) -> Options {
    let mut o = Options::new(Target::Path(repo.to_path_buf()), dir.join("cache"), branch);
    o.lock_timeout = Duration::from_secs(5);
    o
}

fn glance(file: &Path) -> Glance {
    inputs::glance(file, time::UtcDateTime::now()).expect("a plain fleet file")
}

/// A full sync of the fleet at `file`, recording its render inputs as the CLI does.
fn full_sync(source: &SourceFile, opts: &Options) -> git::Report {
    let tree = meshvm::render::render(&source.fleet).files;
    let input = git::Input {
        tree: tree.clone(),
        path: &source.fleet.gitops.path,
        fleet_sha256: &source.sha256,
    };
    let mut opts = opts.clone();
    opts.render_inputs = Some(source.render_inputs());
    git::sync(input, &opts, &mut |_: Event<'_>| {}).unwrap()
}

#[test]
fn the_glance_and_the_full_load_agree_on_the_digest_and_the_target() {
    let dir = tempfile::tempdir().unwrap();
    let file = fleet_in(dir.path());
    let source = load_fleet(&file).unwrap();
    let g = glance(&file);
    assert_eq!(g.render_inputs, source.render_inputs());
    assert_eq!(g.path, source.fleet.gitops.path);
    assert_eq!(g.branch, source.fleet.gitops.branch);
}

#[test]
fn each_render_input_changes_the_digest() {
    let dir = tempfile::tempdir().unwrap();
    let file = fleet_in(dir.path());
    let before = glance(&file).render_inputs;

    // The fleet file's bytes, even a comment.
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, format!("{text}# a comment\n")).unwrap();
    assert_ne!(glance(&file).render_inputs, before, "fleet bytes");
    std::fs::write(&file, &text).unwrap();
    assert_eq!(glance(&file).render_inputs, before);

    // The root certificate the fleet names (a bundle of the same CA twice is still valid).
    let cert_path = dir.path().join("root-cert.pem");
    let cert = std::fs::read_to_string(&cert_path).unwrap();
    std::fs::write(&cert_path, format!("{cert}{cert}")).unwrap();
    let g = inputs::glance(&file, time::UtcDateTime::now());
    assert!(g.is_none_or(|g| g.render_inputs != before), "root cert");
    std::fs::write(&cert_path, &cert).unwrap();

    // The build (its code, templates, dependencies: `MESHVM_BUILD_ID`).
    let sha = load_fleet(&file).unwrap().sha256;
    let root = Some(cert.as_str());
    assert_eq!(inputs::digest(&sha, root), before);
    assert_ne!(
        inputs::digest_for_build("another build", &sha, root),
        before,
        "build"
    );
    assert_eq!(inputs::BUILD_ID.len(), 64);
}

#[test]
fn the_shortcut_is_taken_only_while_every_input_and_the_subtree_are_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let file = fleet_in(dir.path());
    let repo_dir = dir.path().join("repo.git");
    let source = load_fleet(&file).unwrap();
    let opts = options(&repo_dir, dir.path(), &source.fleet.gitops.branch);
    let path = source.fleet.gitops.path.clone();
    let digest = source.render_inputs();

    // Nothing committed yet: no shortcut.
    assert!(git::unchanged(&path, &digest, &opts).is_none());
    let first = full_sync(&source, &opts);
    let head = first.commit.expect("the first sync commits");

    // The same inputs: the shortcut's report is the full no-op's.
    let short = git::unchanged(&path, &digest, &opts).expect("the shortcut");
    let full = full_sync(&source, &opts);
    assert_eq!(full.commit, None);
    assert_eq!((short.commit, short.head), (None, Some(head)));
    assert_eq!(
        serde_json::to_value(&short.plan).unwrap(),
        serde_json::to_value(&full.plan).unwrap()
    );
    for mode in [Mode::DryRun, Mode::DryRunWithDiff] {
        let dry = Options {
            mode,
            ..opts.clone()
        };
        let short = git::unchanged(&path, &digest, &dry).expect("the shortcut, dry");
        let full = git::diff(
            git::Input {
                tree: meshvm::render::render(&source.fleet).files,
                path: &path,
                fleet_sha256: &source.sha256,
            },
            &dry,
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(short.plan.diff, full.plan.diff, "{mode:?}");
        assert!(!short.plan.has_changes());
    }

    // Any other digest (another fleet, root certificate or build): no shortcut.
    let other = inputs::digest_for_build("another build", &source.sha256, None);
    assert!(git::unchanged(&path, &other, &opts).is_none());
    // Another path, branch, a push, or a URL target: no shortcut.
    assert!(git::unchanged("elsewhere", &digest, &opts).is_none());
    assert!(git::unchanged(&path, &digest, &options(&repo_dir, dir.path(), "other")).is_none());
    let push = Options {
        push: true,
        ..opts.clone()
    };
    assert!(git::unchanged(&path, &digest, &push).is_none());

    // A commit outside the subtree keeps the shortcut; a hand edit inside it does not, and
    // the full sync then reports the edit.
    let repo = git2::Repository::open(&repo_dir).unwrap();
    human_commit(&repo, &opts.branch, "NOTES.md", "not meshvm's\n");
    assert!(git::unchanged(&path, &digest, &opts).is_some());
    human_commit(
        &repo,
        &opts.branch,
        &format!("{path}/README.md"),
        "edited\n",
    );
    assert!(git::unchanged(&path, &digest, &opts).is_none());
    let tree = meshvm::render::render(&source.fleet).files;
    let input = git::Input {
        tree: tree.clone(),
        path: &path,
        fleet_sha256: &source.sha256,
    };
    let refused = git::sync(input, &opts, &mut |_| {}).unwrap_err();
    assert!(
        matches!(refused, git::GitError::HandEdits { .. }),
        "{refused:?}"
    );
}

#[test]
fn a_sync_that_commits_nothing_records_its_inputs_for_the_next_no_op() {
    let dir = tempfile::tempdir().unwrap();
    let file = fleet_in(dir.path());
    let repo_dir = dir.path().join("repo.git");
    let source = load_fleet(&file).unwrap();
    let opts = options(&repo_dir, dir.path(), &source.fleet.gitops.branch);
    let path = source.fleet.gitops.path.clone();
    let first = full_sync(&source, &opts)
        .commit
        .expect("the first sync commits");

    // A comment-only edit: other inputs, the same tree. A dry run (`gitops diff`) writes
    // nothing, so it records nothing either.
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, format!("{text}# reviewed\n")).unwrap();
    let commented = load_fleet(&file).unwrap();
    let digest = commented.render_inputs();
    assert!(git::unchanged(&path, &digest, &opts).is_none());
    let dry = Options {
        mode: Mode::DryRun,
        ..opts.clone()
    };
    let tree = meshvm::render::render(&commented.fleet).files;
    let input = git::Input {
        tree: tree.clone(),
        path: &path,
        fleet_sha256: &commented.sha256,
    };
    let mut dry_opts = dry.clone();
    dry_opts.render_inputs = Some(digest.clone());
    git::diff(input, &dry_opts, &mut |_| {}).unwrap();
    assert!(git::unchanged(&path, &digest, &opts).is_none());

    // The full sync commits nothing, and the next sync of these inputs takes the shortcut,
    // whose report is the full no-op's.
    let full = full_sync(&commented, &opts);
    assert_eq!((full.commit, full.head), (None, Some(first)));
    let short = git::unchanged(&path, &digest, &opts).expect("the shortcut after a no-op");
    assert_eq!(short.head, Some(first));
    assert_eq!(
        serde_json::to_value(&short.plan).unwrap(),
        serde_json::to_value(&full_sync(&commented, &opts).plan).unwrap()
    );
    // The commit's own trailer still works for the inputs it names; the record holds one
    // digest per path, so the fleet as committed takes the shortcut too.
    assert!(git::unchanged(&path, &source.render_inputs(), &opts).is_some());

    // A new build that renders the same tree: recorded the same way.
    let rebuilt = inputs::digest_for_build("a new build", &commented.sha256, None);
    assert!(git::unchanged(&path, &rebuilt, &opts).is_none());
    let mut new_build = opts.clone();
    new_build.render_inputs = Some(rebuilt.clone());
    let tree = meshvm::render::render(&commented.fleet).files;
    let input = git::Input {
        tree: tree.clone(),
        path: &path,
        fleet_sha256: &commented.sha256,
    };
    assert_eq!(
        git::sync(input, &new_build, &mut |_| {}).unwrap().commit,
        None
    );
    assert!(git::unchanged(&path, &rebuilt, &opts).is_some());
    assert!(
        git::unchanged(&path, &digest, &opts).is_none(),
        "one record per path"
    );

    // The record never hides a hand edit, and it is only a cache: without it, the full path.
    let repo = git2::Repository::open(&repo_dir).unwrap();
    human_commit(
        &repo,
        &opts.branch,
        &format!("{path}/README.md"),
        "edited\n",
    );
    assert!(git::unchanged(&path, &rebuilt, &opts).is_none());
}

/// Commits one file on `branch` as someone else would.
fn human_commit(repo: &git2::Repository, branch: &str, path: &str, content: &str) {
    let refname = format!("refs/heads/{branch}");
    let parent = repo
        .find_reference(&refname)
        .unwrap()
        .peel_to_commit()
        .unwrap();
    let mut update = git2::build::TreeUpdateBuilder::new();
    let blob = repo.blob(content.as_bytes()).unwrap();
    update.upsert(path, blob, git2::FileMode::Blob);
    let tree = update
        .create_updated(repo, &parent.tree().unwrap())
        .unwrap();
    let tree = repo.find_tree(tree).unwrap();
    let sig = git2::Signature::now("Human", "human@example.org").unwrap();
    repo.commit(
        Some(&refname),
        &sig,
        &sig,
        "a human change",
        &tree,
        &[&parent],
    )
    .unwrap();
}
