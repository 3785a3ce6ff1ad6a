//! The git library against real repositories on disk (bare, non-bare, file:// remotes).
//! The servers (git daemon, smart HTTP, sshd) are exercised by the end-to-end tests.

use std::path::{Path, PathBuf};
use std::time::Duration;

use git2::build::TreeUpdateBuilder;
use git2::{FileMode, Oid, Repository, Signature};
use meshvm::ErrorKind;
use meshvm::FileTree;
use meshvm::git::{
    self, BranchRole, Event, GitError, Input, Mode, OnHandEdits, Options, PushOutcome, Target,
};
use meshvm::render::layout;
use testkit::git;

const PATH: &str = "clusters/c1";
const SHA: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// A rendered-like tree: shared files plus each VM's overlay.
fn fleet_tree(vms: &[(&str, &str)]) -> FileTree {
    let mut t = FileTree::new();
    t.insert("README.md", "meshvm owns this subtree\n");
    t.insert("mesh/namespaces.yaml", "kind: Namespace\n");
    let list: String = vms.iter().map(|(v, _)| format!("- vms/{v}\n")).collect();
    t.insert(
        format!("{}/kustomization.yaml", layout::group_dir("apps", "g")),
        format!("resources:\n{list}"),
    );
    for (vm, addr) in vms {
        let dir = layout::vm_dir("apps", "g", vm);
        t.insert(
            format!("{dir}/workloadentry.yaml"),
            format!("address: {addr}\n"),
        );
        t.insert(
            format!("{dir}/cluster.env"),
            format!("ISTIO_SVC_IP='{addr}'\n"),
        );
    }
    t
}

fn input(tree: &FileTree) -> Input<'static> {
    Input {
        tree: tree.clone(),
        path: PATH,
        fleet_sha256: SHA,
    }
}

fn options(target: Target, cache: &Path) -> Options {
    let mut o = Options::new(target, cache.to_path_buf(), "main");
    o.backoff = Duration::from_millis(10);
    o.lock_timeout = Duration::from_secs(5);
    o
}

fn quiet() -> impl FnMut(Event<'_>) {
    |_| {}
}

fn run(tree: &FileTree, opts: &Options) -> Result<git::Report, GitError> {
    git::sync(input(tree), opts, &mut quiet())
}

fn files_at(repo: &Repository, rev: &str) -> Vec<String> {
    let tree = repo.revparse_single(rev).unwrap().peel_to_tree().unwrap();
    let mut out = Vec::new();
    tree.walk(git2::TreeWalkMode::PreOrder, |dir, e| {
        if e.kind() == Some(git2::ObjectType::Blob) {
            out.push(format!("{dir}{}", e.name().unwrap()));
        }
        git2::TreeWalkResult::Ok
    })
    .unwrap();
    out
}

fn read(repo: &Repository, rev: &str, path: &str) -> Option<String> {
    let tree = repo.revparse_single(rev).ok()?.peel_to_tree().ok()?;
    let entry = tree.get_path(Path::new(path)).ok()?;
    let blob = repo.find_blob(entry.id()).ok()?;
    Some(String::from_utf8_lossy(blob.content()).into_owned())
}

/// Commits `files` (path → content, `None` deletes) on `branch` as a human would.
fn human_commit(repo: &Repository, branch: &str, files: &[(&str, Option<&str>)]) -> Oid {
    let refname = format!("refs/heads/{branch}");
    let parent = repo.find_reference(&refname).ok().and_then(|r| r.target());
    let base = match parent {
        Some(p) => repo.find_commit(p).unwrap().tree().unwrap(),
        None => repo
            .find_tree(repo.treebuilder(None).unwrap().write().unwrap())
            .unwrap(),
    };
    let mut b = TreeUpdateBuilder::new();
    for (path, content) in files {
        match content {
            Some(c) => {
                b.upsert(*path, repo.blob(c.as_bytes()).unwrap(), FileMode::Blob);
            }
            None => {
                b.remove(*path);
            }
        }
    }
    let tree = repo
        .find_tree(b.create_updated(repo, &base).unwrap())
        .unwrap();
    let sig = Signature::now("Human", "human@example.org").unwrap();
    let parents: Vec<_> = parent
        .map(|p| repo.find_commit(p).unwrap())
        .into_iter()
        .collect();
    let parents: Vec<_> = parents.iter().collect();
    repo.commit(Some(&refname), &sig, &sig, "human change", &tree, &parents)
        .unwrap()
}

struct Fixture {
    _tmp: tempfile::TempDir,
    repo: PathBuf,
    cache: PathBuf,
}

/// The message of the commit `rev` names.
fn message(repo: &Repository, rev: &str) -> String {
    let commit = repo.revparse_single(rev).unwrap().peel_to_commit().unwrap();
    commit.message().unwrap().to_owned()
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    Fixture {
        repo: tmp.path().join("gitops.git"),
        cache: tmp.path().join("cache"),
        _tmp: tmp,
    }
}

#[test]
fn first_sync_creates_a_bare_repository_and_commits_with_trailers() {
    let f = fixture();
    let tree = fleet_tree(&[("vm-1", "10.0.0.1"), ("vm-2", "10.0.0.2")]);
    let report = run(&tree, &options(Target::Path(f.repo.clone()), &f.cache)).unwrap();
    let commit_id = report.commit.expect("a commit");
    assert_eq!(report.head, Some(commit_id));
    let names: Vec<_> = report
        .plan
        .vms
        .added
        .iter()
        .map(|v| v.name.as_str())
        .collect();
    assert_eq!(names, ["vm-1", "vm-2"]);

    let repo = Repository::open(&f.repo).unwrap();
    assert!(repo.is_bare());
    assert_eq!(
        repo.find_reference("HEAD")
            .unwrap()
            .symbolic_target()
            .unwrap(),
        Some("refs/heads/main"),
        "HEAD names the synced branch, so clones check it out"
    );
    let mut expected: Vec<String> = tree.paths().map(|p| format!("{PATH}/{p}")).collect();
    expected.sort();
    assert_eq!(files_at(&repo, "main"), expected);

    let commit = repo.find_commit(commit_id).unwrap();
    let msg = commit.message().unwrap();
    assert!(
        msg.starts_with("meshvm: sync clusters/c1: VMs 2 added\n"),
        "{msg}"
    );
    assert!(msg.contains("Added: vm-1, vm-2\n"), "{msg}");
    let subtree = commit
        .tree()
        .unwrap()
        .get_path(Path::new(PATH))
        .unwrap()
        .id();
    assert!(
        msg.contains(&format!("\nMeshvm-Tree: {subtree}\n")),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("Meshvm-Fleet-Sha256: {SHA}\n")),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("Meshvm-Version: {}\n", git::VERSION)),
        "{msg}"
    );
    assert!(msg.contains("Meshvm-Path: clusters/c1\n"), "{msg}");
    // (The default identity, for a machine without git config, is checked end to end.)
    // git itself agrees that the repository is sound.
    git(&f.repo, &["fsck", "--strict"]);
}

#[test]
fn an_unchanged_fleet_makes_no_commit() {
    let f = fixture();
    let tree = fleet_tree(&[("vm-1", "10.0.0.1")]);
    let opts = options(Target::Path(f.repo.clone()), &f.cache);
    let first = run(&tree, &opts).unwrap();
    let second = run(&tree, &opts).unwrap();
    assert_eq!(second.commit, None);
    assert_eq!(second.head, first.head);
    assert!(!second.plan.has_changes());
}

#[test]
fn adding_and_removing_vms_touches_only_their_files_and_the_owned_subtree() {
    let f = fixture();
    let repo = Repository::init_bare(&f.repo).unwrap();
    // Someone else's files, inside and next to the owned path's parent.
    human_commit(
        &repo,
        "main",
        &[
            ("README.md", Some("top\n")),
            ("clusters/other/x.yaml", Some("x\n")),
        ],
    );
    let opts = options(Target::Path(f.repo.clone()), &f.cache);
    run(
        &fleet_tree(&[("vm-1", "10.0.0.1"), ("vm-2", "10.0.0.2")]),
        &opts,
    )
    .unwrap();
    let report = run(
        &fleet_tree(&[("vm-2", "10.0.0.22"), ("vm-3", "10.0.0.3")]),
        &opts,
    )
    .unwrap();
    let names = |v: &[git::VmRef]| v.iter().map(|v| v.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(&report.plan.vms.added), ["vm-3"]);
    assert_eq!(names(&report.plan.vms.changed), ["vm-2"]);
    assert_eq!(names(&report.plan.vms.removed), ["vm-1"]);
    let files = files_at(&repo, "main");
    assert!(files.contains(&"README.md".to_owned()));
    assert!(files.contains(&"clusters/other/x.yaml".to_owned()));
    assert!(!files.iter().any(|p| p.contains("/vm-1/")), "{files:?}");
    // The removed VM's directory is gone, not left empty.
    let tree = repo
        .revparse_single("main")
        .unwrap()
        .peel_to_tree()
        .unwrap();
    assert!(
        tree.get_path(Path::new(&format!(
            "{PATH}/{}",
            layout::vm_dir("apps", "g", "vm-1")
        )))
        .is_err()
    );
    let msg = message(&repo, "main");
    assert!(
        msg.starts_with("meshvm: sync clusters/c1: VMs 1 added, 1 changed, 1 removed\n"),
        "{msg}"
    );
    assert!(msg.contains("Other files changed: 1"), "{msg}");
}

#[test]
fn hand_edits_are_reported_and_refused_unless_forced() {
    let f = fixture();
    let opts = options(Target::Path(f.repo.clone()), &f.cache);
    let tree = fleet_tree(&[("vm-1", "10.0.0.1")]);
    run(&tree, &opts).unwrap();
    let repo = Repository::open(&f.repo).unwrap();
    let edited = format!("{PATH}/mesh/namespaces.yaml");
    let added = format!("{PATH}/mesh/mine.yaml");
    human_commit(
        &repo,
        "main",
        &[
            (&edited, Some("kind: Namespace # tuned\n")),
            (&added, Some("x\n")),
        ],
    );
    let before = repo.refname_to_id("refs/heads/main").unwrap();

    // The diff shows them; a sync refuses and names them.
    let plan = git::diff(input(&tree), &opts, &mut quiet()).unwrap().plan;
    assert_eq!(plan.hand_edits, [added.clone(), edited.clone()]);
    assert_eq!(plan.overwrites, [added.clone(), edited.clone()]);
    let err = run(&tree, &opts).unwrap_err();
    assert!(matches!(err, GitError::HandEdits { .. }), "{err}");
    assert_eq!(err.kind(), ErrorKind::HandEdits);
    let text = err.to_string();
    assert!(text.contains(&edited) && text.contains(&added), "{text}");
    assert!(!text.contains("--"), "the library names no flag: {text}");
    assert_eq!(
        repo.refname_to_id("refs/heads/main").unwrap(),
        before,
        "nothing moved"
    );

    let forced = run(
        &tree,
        &Options {
            on_hand_edits: OnHandEdits::Overwrite,
            ..opts.clone()
        },
    )
    .unwrap();
    assert!(forced.commit.is_some());
    assert_eq!(
        read(&repo, "main", &edited).as_deref(),
        Some("kind: Namespace\n")
    );
    assert_eq!(read(&repo, "main", &added), None);
    // meshvm's commit is the reference again: no hand edits now.
    let plan = git::diff(input(&tree), &opts, &mut quiet()).unwrap().plan;
    assert!(plan.hand_edits.is_empty() && !plan.has_changes());
}

#[test]
fn files_that_were_not_written_by_meshvm_are_not_overwritten_on_a_first_sync() {
    let f = fixture();
    let repo = Repository::init_bare(&f.repo).unwrap();
    let theirs = format!("{PATH}/README.md");
    human_commit(&repo, "main", &[(&theirs, Some("hand-written\n"))]);
    let err = run(
        &fleet_tree(&[("vm-1", "10.0.0.1")]),
        &options(Target::Path(f.repo.clone()), &f.cache),
    )
    .unwrap_err();
    assert!(
        matches!(&err, GitError::HandEdits { paths, .. } if *paths == [theirs.clone()]),
        "{err}"
    );
}

#[test]
fn secrets_never_enter_the_tree() {
    let f = fixture();
    let opts = options(Target::Path(f.repo.clone()), &f.cache);
    let mut tree = fleet_tree(&[("vm-1", "10.0.0.1")]);
    tree.insert(
        format!("{}/istio-token", layout::vm_dir("apps", "g", "vm-1")),
        "eyJhbGciOi",
    );
    let err = run(&tree, &opts).unwrap_err();
    assert!(matches!(err, GitError::SecretInTree { .. }), "{err}");
    let mut tree = fleet_tree(&[("vm-1", "10.0.0.1")]);
    tree.insert_private("user-data", "secret");
    assert!(matches!(
        run(&tree, &opts).unwrap_err(),
        GitError::SecretInTree { .. }
    ));
    // And a normal sync's tree has no token anywhere.
    run(&fleet_tree(&[("vm-1", "10.0.0.1")]), &opts).unwrap();
    let repo = Repository::open(&f.repo).unwrap();
    assert!(
        !files_at(&repo, "main")
            .iter()
            .any(|p| p.ends_with("istio-token"))
    );
}

#[test]
fn a_checked_out_branch_is_never_moved_and_other_branches_leave_the_checkout_alone() {
    let f = fixture();
    let work = f.repo.with_file_name("work");
    std::fs::create_dir_all(&work).unwrap();
    git(&work, &["init", "-q", "-b", "main"]);
    std::fs::write(work.join("app.txt"), "mine\n").unwrap();
    git(&work, &["add", "app.txt"]);
    git(&work, &["commit", "-q", "-m", "init"]);
    let tree = fleet_tree(&[("vm-1", "10.0.0.1")]);
    let err = run(&tree, &options(Target::Path(work.clone()), &f.cache)).unwrap_err();
    assert!(matches!(err, GitError::CheckedOut { .. }), "{err}");

    let mut opts = options(Target::Path(work.clone()), &f.cache);
    opts.branch = "gitops".into();
    run(&tree, &opts).unwrap();
    assert_eq!(
        git(&work, &["status", "--porcelain"]),
        "",
        "checkout untouched"
    );
    assert!(!work.join(PATH).exists());
    let repo = Repository::open(&work).unwrap();
    assert!(files_at(&repo, "gitops").contains(&format!("{PATH}/README.md")));
}

#[test]
fn large_trees_are_written_as_one_pack_and_dry_runs_write_nothing() {
    let f = fixture();
    let vms: Vec<(String, String)> = (0..400)
        .map(|i| (format!("vm-{i}"), format!("10.1.{}.{}", i / 250, i % 250)))
        .collect();
    let refs: Vec<(&str, &str)> = vms.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let tree = fleet_tree(&refs);
    let opts = options(Target::Path(f.repo.clone()), &f.cache);

    // Dry run first: the repository is not even created.
    let dry = run(
        &tree,
        &Options {
            mode: Mode::DryRunWithDiff,
            ..opts.clone()
        },
    )
    .unwrap();
    assert_eq!(dry.plan.vms.added.len(), 400);
    assert!(!f.repo.exists());
    let diff = dry.plan.diff.unwrap();
    assert!(
        diff.contains("+++ b/clusters/c1/workloads/apps/g/vms/vm-7/cluster.env"),
        "{}",
        &diff[..500]
    );

    let mut progress = 0;
    git::sync(input(&tree), &opts, &mut |e| {
        if let Event::Progress { done, total, .. } = e {
            assert!(done <= total);
            progress += 1;
        }
    })
    .unwrap();
    assert!(progress > 0);
    let count = git(&f.repo, &["count-objects", "-v"]);
    assert!(
        count.contains("\ncount: 0\n") || count.starts_with("count: 0\n"),
        "{count}"
    );
    assert!(count.contains("packs: 1\n"), "{count}");
    git(&f.repo, &["fsck", "--strict"]);

    // A large change is packed too, and its pack holds only the new objects, not the
    // whole tree again.
    let in_pack = |count: &str| -> usize {
        count
            .lines()
            .find_map(|l| l.strip_prefix("in-pack: "))
            .unwrap()
            .parse()
            .unwrap()
    };
    let before = in_pack(&count);
    let moved: Vec<(String, String)> = vms
        .iter()
        .enumerate()
        .map(|(i, (vm, addr))| {
            let addr = if i < 200 {
                format!("10.2.0.{i}")
            } else {
                addr.clone()
            };
            (vm.clone(), addr)
        })
        .collect();
    let moved_refs: Vec<(&str, &str)> = moved
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    // Someone else's file beside the owned path: the packed update must carry it over.
    let repo = Repository::open(&f.repo).unwrap();
    human_commit(
        &repo,
        "main",
        &[("docs/owners.md", Some("platform team\n"))],
    );
    let report = run(&fleet_tree(&moved_refs), &opts).unwrap();
    assert_eq!(report.plan.files.len(), 400);
    assert_eq!(
        read(&repo, "main", "docs/owners.md").as_deref(),
        Some("platform team\n")
    );
    // An unchanged VM's files are carried over from the base tree.
    let kept = "clusters/c1/workloads/apps/g/vms/vm-399/workloadentry.yaml";
    assert_eq!(
        read(&repo, "main", kept).as_deref(),
        Some("address: 10.1.1.149\n")
    );
    let count = git(&f.repo, &["count-objects", "-v"]);
    assert!(count.contains("packs: 2\n"), "{count}");
    let added = in_pack(&count) - before;
    // 400 blobs, 200 VM directories, their parents, one commit.
    assert!(
        (601..=610).contains(&added),
        "{added} objects packed: {count}"
    );
    git(&f.repo, &["fsck", "--strict"]);

    // A dry run of a change writes no object either.
    let changed = fleet_tree(&moved_refs[1..]);
    let dry = run(
        &changed,
        &Options {
            mode: Mode::DryRunWithDiff,
            ..opts.clone()
        },
    )
    .unwrap();
    assert_eq!(dry.plan.vms.removed.len(), 1);
    assert!(
        dry.plan
            .diff
            .unwrap()
            .contains("--- a/clusters/c1/workloads/apps/g/vms/vm-0/cluster.env")
    );
    assert_eq!(git(&f.repo, &["count-objects", "-v"]), count);
}

/// A bare "server" repository and a local clone whose origin is it, by file:// URL.
fn with_remote(f: &Fixture) -> (PathBuf, String) {
    let server = f.repo.with_file_name("server.git");
    Repository::init_bare(&server).unwrap();
    (server.clone(), format!("file://{}", server.display()))
}

#[test]
fn push_through_a_url_cache_then_no_op() {
    let f = fixture();
    let (server, url) = with_remote(&f);
    let mut opts = options(Target::Url(url.clone()), &f.cache);
    opts.push = true;
    let tree = fleet_tree(&[("vm-1", "10.0.0.1")]);
    let first = run(&tree, &opts).unwrap();
    assert_eq!(first.push, PushOutcome::Pushed { attempts: 1 });
    assert!(first.repo_dir.starts_with(&f.cache));
    let server_repo = Repository::open(&server).unwrap();
    assert_eq!(
        server_repo.refname_to_id("refs/heads/main").ok(),
        first.head
    );

    let again = run(&tree, &opts).unwrap();
    assert_eq!(again.commit, None);
    assert_eq!(again.push, PushOutcome::UpToDate);

    // A fresh cache (another CI runner) finds meshvm's last commit through the trailers.
    let other_cache = f.cache.with_file_name("cache2");
    let fresh = run(
        &tree,
        &Options {
            cache_dir: other_cache,
            ..opts.clone()
        },
    )
    .unwrap();
    assert_eq!(fresh.push, PushOutcome::UpToDate);
    assert!(fresh.plan.hand_edits.is_empty());
}

#[test]
fn a_human_push_during_the_sync_is_kept_and_the_sync_rebases_onto_it() {
    let f = fixture();
    let (server, url) = with_remote(&f);
    let mut opts = options(Target::Url(url), &f.cache);
    opts.push = true;
    run(&fleet_tree(&[("vm-1", "10.0.0.1")]), &opts).unwrap();

    let server_repo = Repository::open(&server).unwrap();
    let mut human = None;
    let mut retries = 0;
    let report = git::sync(
        input(&fleet_tree(&[("vm-1", "10.0.0.1"), ("vm-2", "10.0.0.2")])),
        &opts,
        &mut |e| match e {
            // Between our fetch and our push, a human pushes a change outside the subtree.
            Event::Pushing { attempt: 1, .. } => {
                human = Some(human_commit(
                    &server_repo,
                    "main",
                    &[("apps/x.yaml", Some("x\n"))],
                ));
            }
            Event::Retry { .. } => retries += 1,
            _ => {}
        },
    )
    .unwrap();
    assert_eq!(report.push, PushOutcome::Pushed { attempts: 2 });
    assert_eq!(retries, 1);
    let tip = server_repo.refname_to_id("refs/heads/main").unwrap();
    assert_eq!(Some(tip), report.head);
    let parent = server_repo.find_commit(tip).unwrap().parent_id(0).unwrap();
    assert_eq!(Some(parent), human, "meshvm's commit sits on the human's");
    let files = files_at(&server_repo, "main");
    assert!(files.contains(&"apps/x.yaml".to_owned()));
    assert!(files.iter().any(|p| p.contains("/vm-2/")));
}

#[test]
fn push_from_a_local_repository_to_its_origin() {
    let f = fixture();
    let (server, url) = with_remote(&f);
    let repo = Repository::init_bare(&f.repo).unwrap();
    repo.remote("origin", &url).unwrap();
    let mut opts = options(Target::Path(f.repo.clone()), &f.cache);
    opts.push = true;
    opts.remote_branch = Some("deploy".into());
    let report = run(&fleet_tree(&[("vm-1", "10.0.0.1")]), &opts).unwrap();
    assert_eq!(report.push, PushOutcome::Pushed { attempts: 1 });
    let server_repo = Repository::open(&server).unwrap();
    assert_eq!(
        server_repo.refname_to_id("refs/heads/deploy").ok(),
        report.head
    );
    assert_eq!(
        repo.refname_to_id("refs/remotes/origin/deploy").ok(),
        report.head
    );

    // Without a remote of that name: a clear refusal.
    let err = run(
        &fleet_tree(&[("vm-1", "10.0.0.1")]),
        &Options {
            remote: "upstream".into(),
            ..opts
        },
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("no remote named \"upstream\""),
        "{err}"
    );
}

#[test]
fn diverged_local_commits_of_someone_else_are_not_dropped() {
    let f = fixture();
    let (server, url) = with_remote(&f);
    let repo = Repository::init_bare(&f.repo).unwrap();
    repo.remote("origin", &url).unwrap();
    let mut opts = options(Target::Path(f.repo.clone()), &f.cache);
    opts.push = true;
    run(&fleet_tree(&[("vm-1", "10.0.0.1")]), &opts).unwrap();
    human_commit(&repo, "main", &[("local.txt", Some("l\n"))]);
    human_commit(
        &Repository::open(&server).unwrap(),
        "main",
        &[("remote.txt", Some("r\n"))],
    );
    let err = run(&fleet_tree(&[("vm-2", "10.0.0.2")]), &opts).unwrap_err();
    assert!(matches!(err, GitError::Diverged { .. }), "{err}");
}

#[test]
fn a_sync_waits_for_the_lock_of_another() {
    let f = fixture();
    let opts = options(Target::Path(f.repo.clone()), &f.cache);
    let tree = fleet_tree(&[("vm-1", "10.0.0.1")]);
    run(&tree, &opts).unwrap();
    let held = git::lock::RepoLock::acquire(&f.repo, Duration::ZERO).unwrap();
    let err = run(
        &fleet_tree(&[("vm-2", "10.0.0.2")]),
        &Options {
            lock_timeout: Duration::from_millis(200),
            ..opts.clone()
        },
    )
    .unwrap_err();
    assert!(matches!(err, GitError::Locked { .. }), "{err}");
    drop(held);
    run(&fleet_tree(&[("vm-2", "10.0.0.2")]), &opts).unwrap();
}

#[test]
fn identity_comes_from_options_then_config_then_the_default() {
    let f = fixture();
    let repo = Repository::init_bare(&f.repo).unwrap();
    repo.config()
        .unwrap()
        .set_str("user.name", "Config User")
        .unwrap();
    repo.config()
        .unwrap()
        .set_str("user.email", "cfg@example.org")
        .unwrap();
    let mut opts = options(Target::Path(f.repo.clone()), &f.cache);
    let report = run(&fleet_tree(&[("vm-1", "10.0.0.1")]), &opts).unwrap();
    let c = repo.find_commit(report.commit.unwrap()).unwrap();
    assert_eq!(c.author().email().ok(), Some("cfg@example.org"));

    opts.author = git::Identity::parse("CI Bot <ci@example.org>");
    opts.committer = git::Identity::parse("Committer <c@example.org>");
    let report = run(&fleet_tree(&[("vm-2", "10.0.0.2")]), &opts).unwrap();
    let c = repo.find_commit(report.commit.unwrap()).unwrap();
    assert_eq!(c.author().name().ok(), Some("CI Bot"));
    assert_eq!(c.committer().email().ok(), Some("c@example.org"));
    assert_eq!(git::Identity::parse("no email"), None);
}

#[test]
fn invalid_paths_and_branches_are_refused() {
    let f = fixture();
    let tree = fleet_tree(&[("vm-1", "10.0.0.1")]);
    let opts = options(Target::Path(f.repo.clone()), &f.cache);
    for path in ["", "/abs", "a/../b"] {
        let err = git::sync(
            Input {
                tree: tree.clone(),
                path,
                fleet_sha256: SHA,
            },
            &opts,
            &mut quiet(),
        )
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{path}: {err}");
    }
    // Git's own rules, up front: these once passed a hand-written check and failed later.
    for name in ["bad..name", "a.lock/b", "x/.hidden"] {
        let local = Options {
            branch: name.into(),
            ..opts.clone()
        };
        let remote = Options {
            remote_branch: Some(name.into()),
            ..opts.clone()
        };
        for (opts, role) in [(local, BranchRole::Local), (remote, BranchRole::Remote)] {
            let err = run(&tree, &opts).unwrap_err();
            assert!(
                matches!(&err, GitError::InvalidBranch { role: r, name: n, .. } if *r == role && n == name),
                "{name}: {err}"
            );
            assert_eq!(err.kind(), ErrorKind::InvalidInput);
            assert!(
                err.to_string().contains("not a valid Git branch name"),
                "{err}"
            );
        }
    }
    let err = run(
        &tree,
        &Options {
            remote: "x/.hidden".into(),
            ..opts
        },
    )
    .unwrap_err();
    assert!(matches!(err, GitError::InvalidRemote { .. }), "{err}");
    assert!(!f.repo.exists(), "nothing was created");
}

/// A path repository with a commit pushed to its `file://` remote, and options that push.
fn pushed_once(f: &Fixture) -> (PathBuf, Options) {
    let (server, url) = with_remote(f);
    let repo = Repository::init_bare(&f.repo).unwrap();
    repo.remote("origin", &url).unwrap();
    let mut opts = options(Target::Path(f.repo.clone()), &f.cache);
    opts.push = true;
    run(&fleet_tree(&[("vm-1", "10.0.0.1")]), &opts).unwrap();
    (server, opts)
}

/// Syncs a changed fleet, calling `meddle` on every event (the server's path and the event),
/// and checks that the failure says the local commit is kept and how to push it.
fn kept_after(
    f: &Fixture,
    max_attempts: u32,
    mut meddle: impl FnMut(&Path, &Event<'_>),
) -> GitError {
    let (server, mut opts) = pushed_once(f);
    opts.max_attempts = max_attempts;
    let tree = fleet_tree(&[("vm-1", "10.0.0.1"), ("vm-2", "10.0.0.2")]);
    let err = git::sync(input(&tree), &opts, &mut |e| meddle(&server, &e)).unwrap_err();
    let GitError::NotPushed {
        commit,
        push_cmd,
        error,
        ..
    } = &err
    else {
        panic!("the kept commit is not mentioned: {err}");
    };
    let local = Repository::open(&f.repo).unwrap();
    assert_eq!(local.refname_to_id("refs/heads/main").unwrap(), *commit);
    assert!(
        err.to_string()
            .contains(&format!("the commit {commit} is kept in")),
        "{err}"
    );
    assert!(
        push_cmd.contains("push origin refs/heads/main:refs/heads/main"),
        "{push_cmd}"
    );
    assert_eq!(err.kind(), error.kind(), "the kind is the cause's");
    err
}

/// Commits a file on the server's main, as someone else's push would.
fn move_server_branch(server: &Path, name: &str) {
    let repo = Repository::open(server).unwrap();
    human_commit(&repo, "main", &[(name, Some("x\n"))]);
}

#[test]
fn a_failed_push_keeps_the_commit_and_says_so() {
    let f = fixture();
    let err = kept_after(&f, 5, |server, e| {
        if matches!(e, Event::Pushing { .. }) {
            // The server's branch is locked, as by a concurrent receive-pack.
            std::fs::write(server.join("refs/heads/main.lock"), "").unwrap();
        }
    });
    assert_eq!(err.kind(), ErrorKind::Repository, "{err}");
}

#[test]
fn a_remote_gone_mid_push_keeps_the_commit_and_says_so() {
    let f = fixture();
    kept_after(&f, 5, |server, e| {
        if matches!(e, Event::Pushing { .. }) {
            std::fs::remove_dir_all(server).unwrap();
        }
    });
}

#[test]
fn a_remote_branch_that_keeps_moving_keeps_the_commit_and_says_so() {
    let f = fixture();
    let mut n = 0;
    let err = kept_after(&f, 2, |server, e| {
        if matches!(e, Event::Pushing { .. }) {
            n += 1;
            move_server_branch(server, &format!("theirs-{n}.txt"));
        }
    });
    assert!(
        matches!(err.cause(), GitError::Contended { attempts: 2, .. }),
        "{err}"
    );
    assert_eq!(err.kind(), ErrorKind::Conflict);
}

#[test]
fn a_retry_that_fails_before_pushing_still_says_the_commit_is_kept() {
    let f = fixture();
    kept_after(&f, 5, |server, e| match e {
        // Lose the first race, then fail the retry's fetch: the remote is gone.
        Event::Pushing { attempt: 1, .. } => move_server_branch(server, "theirs.txt"),
        Event::Retry { .. } => std::fs::remove_dir_all(server).unwrap(),
        _ => {}
    });
}

#[test]
fn a_retry_that_fails_in_the_local_repository_still_says_the_commit_is_kept() {
    let f = fixture();
    let repo_dir = f.repo.clone();
    let err = kept_after(&f, 5, |server, e| match e {
        Event::Pushing { attempt: 1, .. } => move_server_branch(server, "theirs.txt"),
        // The retry reads the remote-tracking branch: corrupt it.
        Event::Retry { .. } => {
            std::fs::write(
                repo_dir.join("refs/remotes/origin/main"),
                "not an object id\n",
            )
            .unwrap();
        }
        _ => {}
    });
    assert!(matches!(err.cause(), GitError::Git { .. }), "{err}");
    assert_eq!(err.kind(), ErrorKind::Repository);
}

/// Like `fleet_tree`, with the VMs in group `group` of namespace `apps`.
fn group_tree(group: &str, vms: &[&str]) -> FileTree {
    let mut t = FileTree::new();
    t.insert("README.md", "meshvm owns this subtree\n");
    let list: String = vms.iter().map(|v| format!("- vms/{v}\n")).collect();
    t.insert(
        format!("{}/kustomization.yaml", layout::group_dir("apps", group)),
        format!("resources:\n{list}"),
    );
    t.insert(
        format!("{}/workloadgroup.yaml", layout::group_dir("apps", group)),
        format!("name: {group}\n"),
    );
    for vm in vms {
        let dir = layout::vm_dir("apps", group, vm);
        t.insert(format!("{dir}/workloadentry.yaml"), format!("name: {vm}\n"));
    }
    t
}

#[test]
fn a_renamed_group_shows_moves_and_what_argo_cd_keeps() {
    let f = fixture();
    let opts = options(Target::Path(f.repo.clone()), &f.cache);
    let vms = ["vm-1", "vm-2", "vm-3", "vm-4"];
    run(&group_tree("g", &vms), &opts).unwrap();
    let report = run(&group_tree("h", &vms), &opts).unwrap();
    let v = &report.plan.vms;
    assert!(v.added.is_empty() && v.removed.is_empty(), "{v:?}");
    let moves: Vec<(String, String, String)> = v
        .moved
        .iter()
        .map(|m| (m.from.group.clone(), m.to.group.clone(), m.to.name.clone()))
        .collect();
    assert_eq!(
        moves,
        vms.map(|vm| ("g".to_owned(), "h".to_owned(), vm.to_owned()))
    );
    assert_eq!(
        report.plan.removed_groups,
        [git::GroupRef {
            namespace: "apps".into(),
            group: "g".into()
        }]
    );
    let repo = Repository::open(&f.repo).unwrap();
    let msg = message(&repo, "main");
    assert!(
        msg.starts_with("meshvm: sync clusters/c1: VMs 4 moved\n"),
        "{msg}"
    );
    assert!(msg.contains("Moved: vm-1 (apps/g → apps/h), "), "{msg}");
}

#[test]
fn removing_more_than_half_of_the_vms_needs_allow_mass_removal() {
    let f = fixture();
    let mut opts = options(Target::Path(f.repo.clone()), &f.cache);
    run(&group_tree("g", &["vm-1", "vm-2", "vm-3", "vm-4"]), &opts).unwrap();
    // Half is not more than half.
    run(&group_tree("g", &["vm-1", "vm-2"]), &opts).unwrap();
    // A move is not a removal; but removing 2 of 2 is.
    let err = run(&group_tree("h", &[]), &opts).unwrap_err();
    assert!(
        matches!(
            err,
            GitError::MassRemoval {
                removed: 2,
                of: 2,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.kind(), ErrorKind::Refused);
    let tip = Repository::open(&f.repo)
        .unwrap()
        .refname_to_id("refs/heads/main")
        .unwrap();
    // A dry run says so without refusing.
    let dry = run(
        &group_tree("h", &[]),
        &Options {
            mode: Mode::DryRun,
            ..opts.clone()
        },
    )
    .unwrap();
    assert_eq!(dry.plan.mass_removal(), Some((2, 2)));
    opts.allow_mass_removal = true;
    let done = run(&group_tree("h", &[]), &opts).unwrap();
    assert_eq!(done.plan.base, Some(tip));
    assert_eq!(done.plan.vms.removed.len(), 2);
}

#[test]
fn a_new_branch_starts_from_the_default_branch_or_base_not_an_orphan() {
    let f = fixture();
    // A local repository: a new branch starts from the branch HEAD names.
    let opts = options(Target::Path(f.repo.clone()), &f.cache);
    run(
        &fleet_tree(&[("vm-1", "10.0.0.1"), ("vm-2", "10.0.0.2")]),
        &opts,
    )
    .unwrap();
    let repo = Repository::open(&f.repo).unwrap();
    let main_tip = human_commit(&repo, "main", &[("NOTES.md", Some("kept\n"))]);
    let feature = Options::new(Target::Path(f.repo.clone()), f.cache.clone(), "feature");
    let report = run(
        &fleet_tree(&[
            ("vm-1", "10.0.0.11"),
            ("vm-2", "10.0.0.2"),
            ("vm-3", "10.0.0.3"),
        ]),
        &feature,
    )
    .unwrap();
    assert_eq!(report.plan.base, Some(main_tip));
    let names = |v: &[git::VmRef]| v.iter().map(|v| v.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(&report.plan.vms.added), ["vm-3"]);
    assert_eq!(names(&report.plan.vms.changed), ["vm-1"]);
    assert!(report.plan.hand_edits.is_empty());
    let head = report.head.unwrap();
    assert_eq!(repo.merge_base(head, main_tip).unwrap(), main_tip);
    assert!(files_at(&repo, "feature").contains(&"NOTES.md".to_owned()));

    // --base names another start, which must exist.
    human_commit(&repo, "release", &[("RELEASE.md", Some("r\n"))]);
    let from_release = run(
        &fleet_tree(&[("vm-1", "10.0.0.1")]),
        &Options {
            base: Some("release".into()),
            ..Options::new(Target::Path(f.repo.clone()), f.cache.clone(), "hotfix")
        },
    )
    .unwrap();
    let release_tip = repo.refname_to_id("refs/heads/release").unwrap();
    assert_eq!(from_release.plan.base, Some(release_tip));
    let err = run(
        &fleet_tree(&[("vm-1", "10.0.0.1")]),
        &Options {
            base: Some("nope".into()),
            ..Options::new(Target::Path(f.repo.clone()), f.cache.clone(), "other")
        },
    )
    .unwrap_err();
    assert!(matches!(err, GitError::NoBase { .. }), "{err}");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);

    // Through a URL: from the remote's default branch.
    let (server, url) = with_remote(&f);
    let mut url_opts = options(Target::Url(url.clone()), &f.cache);
    url_opts.push = true;
    run(&fleet_tree(&[("vm-1", "10.0.0.1")]), &url_opts).unwrap();
    let server_repo = Repository::open(&server).unwrap();
    server_repo.set_head("refs/heads/main").unwrap();
    let server_main = human_commit(&server_repo, "main", &[("NOTES.md", Some("n\n"))]);
    let pushed = run(
        &fleet_tree(&[("vm-1", "10.0.0.1"), ("vm-2", "10.0.0.2")]),
        &Options {
            branch: "feature".into(),
            ..url_opts.clone()
        },
    )
    .unwrap();
    assert_eq!(pushed.plan.base, Some(server_main));
    assert_eq!(names(&pushed.plan.vms.added), ["vm-2"]);
    let feature_tip = server_repo.refname_to_id("refs/heads/feature").unwrap();
    assert_eq!(
        server_repo.merge_base(feature_tip, server_main).unwrap(),
        server_main
    );
}

#[test]
fn concurrent_first_syncs_into_a_missing_repository_take_turns() {
    // The trial: four syncs at once into a repository that does not exist yet; some failed
    // with "exists and is not a Git repository".
    for round in 0..8 {
        let f = fixture();
        let barrier = std::sync::Barrier::new(4);
        let tree = fleet_tree(&[("vm-1", "10.0.0.1")]);
        let results: Vec<Result<git::Report, GitError>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    let opts = options(Target::Path(f.repo.clone()), &f.cache);
                    let (tree, barrier) = (&tree, &barrier);
                    s.spawn(move || {
                        barrier.wait();
                        run(tree, &opts)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut commits = 0;
        for r in results {
            let r = r.unwrap_or_else(|e| panic!("round {round}: {e}"));
            commits += usize::from(r.commit.is_some());
        }
        assert_eq!(commits, 1, "round {round}: one commit, three no-ops");
        git(&f.repo, &["fsck", "--strict"]);
    }
}
