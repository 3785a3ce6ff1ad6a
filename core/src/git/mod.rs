//! Git: the rendered tree committed into a repository without a work tree, and pushed.
//!
//! ```text
//! FileTree ─hash─▶ rendered ids ─┐
//!                                ├─ plan (per-VM added/changed/removed, hand edits)
//! base commit ─subtree─▶ ids ────┘        │
//!                                         ▼
//!                 blobs + TreeUpdateBuilder on the base tree ─▶ commit ─CAS─▶ branch ─▶ push
//! ```
//!
//! - `target`: where the repository is (a path, or a URL with a local cache clone).
//! - `plan`: what changes; `commit`: building and recording the commit (and the trailers that
//!   let the next sync detect hand edits); `objects`: the one place objects are written;
//!   `remote`: fetch and push with credentials and host key checks; `lock`: one sync at a
//!   time per repository; `known_hosts`: SSH host key verification.
//!
//! Architecture invariants: meshvm only ever writes below `gitops.path` (everything else of the
//! base tree is carried over untouched); it never moves a branch that is checked out, never
//! force-pushes, and moves refs only by compare-and-swap. The istio-token never enters a tree
//! (`plan::git_mode` refuses files that hold secrets).

mod commit;
pub mod known_hosts;
pub mod lock;
mod objects;
pub mod plan;
mod remote;
pub mod target;

use std::path::{Path, PathBuf};
use std::time::Duration;

use git2::{Repository, RepositoryInitOptions, Signature};

pub use git2::Oid;

pub use commit::{TRAILER_FLEET, TRAILER_PATH, TRAILER_TREE, TRAILER_VERSION, empty_tree_id};
pub use lock::LOCK_FILE;
pub use plan::{Change, FileChange, Plan, VmChanges, VmRef};
pub use remote::{Auth, HostKeys};
pub use target::Target;

use crate::tree::FileTree;

/// meshvm's version, recorded in each commit.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The default commit identity when neither flags nor git config give one.
pub const DEFAULT_NAME: &str = "meshvm";
pub const DEFAULT_EMAIL: &str = "meshvm@localhost";

/// What is synced: the rendered tree and what the commit records about it.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// The tree, relative to `path`.
    pub tree: &'a FileTree,
    /// The subtree of the repository meshvm owns (`gitops.path`).
    pub path: &'a str,
    /// SHA-256 of the fleet file (hex).
    pub fleet_sha256: &'a str,
}

/// A commit author or committer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub email: String,
}

impl Identity {
    /// Reads `Name <email>`.
    pub fn parse(text: &str) -> Option<Identity> {
        let (name, rest) = text.split_once('<')?;
        let email = rest.strip_suffix('>')?;
        let name = name.trim();
        (!name.is_empty() && !email.is_empty() && !email.contains(['<', '>'])).then(|| Identity {
            name: name.to_owned(),
            email: email.trim().to_owned(),
        })
    }
}

/// How to sync.
#[derive(Debug, Clone)]
pub struct Options {
    pub target: Target,
    /// Where cache clones of URL targets live.
    pub cache_dir: PathBuf,
    /// The branch committed to.
    pub branch: String,
    /// For a path target: the remote pushed to. URL targets push to their URL.
    pub remote: String,
    /// The branch on the remote; the same as `branch` when `None`.
    pub remote_branch: Option<String>,
    pub push: bool,
    /// Overwrite hand edits instead of refusing.
    pub force: bool,
    /// Plan only: nothing is written (a URL target's cache is still fetched into).
    pub dry_run: bool,
    /// Compute the unified diff into `Plan::diff` (dry runs only).
    pub diff_text: bool,
    pub author: Option<Identity>,
    pub committer: Option<Identity>,
    pub auth: Auth,
    pub host_keys: HostKeys,
    /// Push attempts when the remote branch moves meanwhile (each one fetches and rebuilds).
    pub max_attempts: u32,
    /// Wait before the first retry; doubled after each.
    pub backoff: Duration,
    /// How long to wait for another sync of the same repository.
    pub lock_timeout: Duration,
}

impl Options {
    pub fn new(target: Target, cache_dir: PathBuf, branch: impl Into<String>) -> Options {
        Options {
            target,
            cache_dir,
            branch: branch.into(),
            remote: "origin".into(),
            remote_branch: None,
            push: false,
            force: false,
            dry_run: false,
            diff_text: false,
            author: None,
            committer: None,
            auth: Auth::default(),
            host_keys: HostKeys::default(),
            max_attempts: 5,
            backoff: Duration::from_millis(250),
            lock_timeout: Duration::from_secs(120),
        }
    }
}

/// A long step, for progress display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Fetch,
    Write,
    Push,
}

impl Step {
    pub fn label(self) -> &'static str {
        match self {
            Step::Fetch => "fetching",
            Step::Write => "writing files",
            Step::Push => "pushing",
        }
    }

    /// What `done` and `total` count.
    pub fn unit(self) -> &'static str {
        match self {
            Step::Write => "files",
            Step::Fetch | Step::Push => "objects",
        }
    }
}

/// What a sync reports while it runs.
#[derive(Debug, Clone)]
pub enum Event<'a> {
    Progress {
        step: Step,
        done: usize,
        total: usize,
    },
    /// A push attempt starts.
    Pushing { attempt: u32, url: &'a str },
    /// The remote branch moved; the sync fetches, rebuilds on the new tip and retries.
    Retry {
        attempt: u32,
        of: u32,
        reason: &'a str,
        wait: Duration,
    },
    /// What the server printed (hook output).
    Remote(&'a str),
}

/// What happened to the remote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushOutcome {
    NotAsked,
    /// The remote branch already had the commit.
    UpToDate,
    Pushed {
        attempts: u32,
    },
}

/// The result of a sync (or of a dry run / diff).
#[derive(Debug, Clone)]
pub struct Report {
    pub plan: Plan,
    /// The local repository written to: the path target, or the cache clone of a URL.
    pub repo_dir: PathBuf,
    /// The commit this run made; `None` when nothing changed (or a dry run).
    pub commit: Option<Oid>,
    /// The branch's tip afterwards.
    pub head: Option<Oid>,
    pub push: PushOutcome,
}

/// Everything that can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("{context}: {}", .source.message())]
    Git {
        context: String,
        #[source]
        source: git2::Error,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
    #[error(
        "refusing to commit {path}: it holds a secret (the istio-token or a private file), and \
         secrets never enter Git"
    )]
    SecretInTree { path: String },
    #[error("{}", hand_edits_message(path, paths))]
    HandEdits { path: String, paths: Vec<String> },
    #[error(
        "branch {branch} is checked out in {}; meshvm never moves a checked-out branch (that \
         would change the files under someone's feet): sync to another --branch, or use a bare \
         repository or a URL as --repo",
        workdir.display()
    )]
    CheckedOut { branch: String, workdir: PathBuf },
    #[error(
        "another meshvm sync is using this repository ({holder}, lock {}); gave up after {}s",
        path.display(), waited.as_secs()
    )]
    Locked {
        path: PathBuf,
        holder: String,
        waited: Duration,
    },
    #[error("{refname} was moved by someone else while meshvm was updating it")]
    Raced { refname: String },
    #[error(
        "the local branch {branch} ({local}) and the remote's ({remote}) have diverged, and \
         commit {commit} on the local one is not meshvm's: push or drop the local commits first"
    )]
    Diverged {
        branch: String,
        local: Oid,
        remote: Oid,
        commit: Oid,
    },
    #[error("{}", auth_message(url, tried, *ssh))]
    Auth {
        url: String,
        tried: Vec<String>,
        ssh: bool,
    },
    #[error("SSH host key check failed for {url}: {detail}")]
    HostKey { url: String, detail: String },
    #[error("{doing} {url} failed: {detail}")]
    Remote {
        url: String,
        doing: String,
        detail: String,
    },
    #[error("{url} rejected {refname}: {status}{}", server_lines(server_said))]
    Rejected {
        url: String,
        refname: String,
        status: String,
        server_said: String,
    },
    #[error("the remote branch kept moving; gave up after {attempts} attempts: {last}")]
    Contended { attempts: u32, last: String },
    #[error("{source}\n{}", not_pushed_hint(commit, repo, branch, push_cmd))]
    NotPushed {
        commit: Oid,
        repo: PathBuf,
        branch: String,
        /// How to push the kept commit by hand.
        push_cmd: String,
        #[source]
        source: Box<GitError>,
    },
}

fn hand_edits_message(path: &str, paths: &[String]) -> String {
    let mut msg = format!(
        "{} file(s) in {path} were changed by someone else since meshvm's last commit, and this \
         sync would overwrite them:\n",
        paths.len()
    );
    for p in paths.iter().take(50) {
        msg.push_str(&format!("  {p}\n"));
    }
    if paths.len() > 50 {
        msg.push_str(&format!("  … and {} more\n", paths.len() - 50));
    }
    msg.push_str(
        "move those changes into the fleet file (meshvm owns this subtree), or run again with \
         --force to overwrite them",
    );
    msg
}

fn auth_message(url: &str, tried: &[String], ssh: bool) -> String {
    if tried.is_empty() {
        let how = if ssh {
            "set MESHVM_SSH_KEY (and MESHVM_SSH_KEY_PASSPHRASE when the key has one) or start an \
             ssh-agent (SSH_AUTH_SOCK)"
        } else {
            "set MESHVM_GIT_TOKEN, or configure a git credential helper"
        };
        return format!("authentication to {url} failed: no credentials to offer; {how}");
    }
    format!(
        "authentication to {url} failed: the server refused {}; check the credentials (not \
         retried)",
        tried.join(", then ")
    )
}

fn server_lines(said: &str) -> String {
    if said.is_empty() {
        return String::new();
    }
    let lines: String = said.lines().map(|l| format!("\n  remote: {l}")).collect();
    format!("; the server said:{lines}")
}

fn not_pushed_hint(commit: &Oid, repo: &Path, branch: &str, push_cmd: &str) -> String {
    format!(
        "the commit {commit} is kept in {} on branch {branch}; fix the cause and run the same \
         `meshvm gitops sync --push` again (it rebuilds onto the remote's tip), or push it by \
         hand: {push_cmd}",
        repo.display()
    )
}

impl GitError {
    /// Wraps a libgit2 error with what meshvm was doing.
    pub fn git(context: &str) -> impl Fn(git2::Error) -> GitError + '_ {
        move |source| GitError::Git {
            context: context.to_owned(),
            source,
        }
    }

    /// True for a refusal caused by the input or the repository's content (exit 1), as
    /// opposed to a Git or remote failure (exit 3).
    pub fn is_refusal(&self) -> bool {
        match self {
            GitError::Invalid(_)
            | GitError::SecretInTree { .. }
            | GitError::HandEdits { .. }
            | GitError::CheckedOut { .. } => true,
            GitError::NotPushed { source, .. } => source.is_refusal(),
            _ => false,
        }
    }
}

/// The opened repository and where its remote is.
struct Workspace {
    repo: Option<Repository>,
    git_dir: PathBuf,
    repo_dir: PathBuf,
    remote: Option<remote::RemoteSpec>,
    /// URL targets always fetch: the cache is only a copy.
    always_fetch: bool,
}

fn validate(input: &Input<'_>, opts: &Options) -> Result<(), GitError> {
    if !crate::tree::is_safe_relative_path(input.path) {
        return Err(GitError::Invalid(format!(
            "gitops.path {:?} must be a relative path inside the repository, like \
             clusters/cluster1",
            input.path
        )));
    }
    for (what, b) in [
        ("--branch", Some(&opts.branch)),
        ("--remote-branch", opts.remote_branch.as_ref()),
    ] {
        if let Some(b) = b {
            if let Err(reason) = crate::spec::names::branch(b) {
                return Err(GitError::Invalid(format!("{what} {b:?} {reason}")));
            }
        }
    }
    Ok(())
}

fn init_bare(path: &Path, branch: &str) -> Result<Repository, GitError> {
    std::fs::create_dir_all(path).map_err(|source| GitError::Io {
        context: format!("cannot create {}", path.display()),
        source,
    })?;
    let mut opts = RepositoryInitOptions::new();
    // HEAD names the synced branch, so that `git clone` of this repository checks it out.
    opts.bare(true)
        .no_reinit(false)
        .initial_head(&format!("refs/heads/{branch}"));
    Repository::init_opts(path, &opts).map_err(GitError::git("creating the repository"))
}

fn open_workspace(opts: &Options, create: bool) -> Result<Workspace, GitError> {
    let remote_branch = opts
        .remote_branch
        .clone()
        .unwrap_or_else(|| opts.branch.clone());
    match &opts.target {
        Target::Path(path) => {
            let repo = match Repository::open(path) {
                Ok(repo) => Some(repo),
                Err(e) if e.code() == git2::ErrorCode::NotFound => {
                    let empty_dir = std::fs::read_dir(path).is_ok_and(|mut d| d.next().is_none());
                    if path.exists() && !empty_dir {
                        return Err(GitError::Invalid(format!(
                            "{} exists and is not a Git repository",
                            path.display()
                        )));
                    }
                    create.then(|| init_bare(path, &opts.branch)).transpose()?
                }
                Err(e) => return Err(GitError::git("opening the repository")(e)),
            };
            let git_dir = repo
                .as_ref()
                .map_or_else(|| path.clone(), |r| r.path().to_path_buf());
            let remote = match (&repo, opts.push) {
                (Some(repo), true) => {
                    let r = repo.find_remote(&opts.remote).map_err(|_| {
                        GitError::Invalid(format!(
                            "{} has no remote named {:?} to push to: add it (git remote add), \
                             name another with --remote, or give the remote's URL as --repo",
                            path.display(),
                            opts.remote
                        ))
                    })?;
                    let url = match r.pushurl() {
                        Ok(Some(u)) => u.to_owned(),
                        _ => r.url().unwrap_or_default().to_owned(),
                    };
                    Some(remote::RemoteSpec {
                        name: opts.remote.clone(),
                        url,
                        branch: remote_branch,
                    })
                }
                _ => None,
            };
            Ok(Workspace {
                repo,
                git_dir,
                repo_dir: path.clone(),
                remote,
                always_fetch: false,
            })
        }
        Target::Url(url) => {
            let cache = target::cache_path(&opts.cache_dir, url);
            let repo = match Repository::open_bare(&cache) {
                Ok(repo) => repo,
                Err(_) => init_bare(&cache, &opts.branch)?,
            };
            const NAME: &str = "origin";
            match repo.find_remote(NAME) {
                Ok(r) if r.url().ok() == Some(url.as_str()) => {}
                Ok(_) => repo
                    .remote_set_url(NAME, url)
                    .map_err(GitError::git("configuring the cache's remote"))?,
                Err(_) => {
                    repo.remote_with_fetch(NAME, url, "+refs/heads/*:refs/remotes/origin/*")
                        .map_err(GitError::git("configuring the cache's remote"))?;
                }
            }
            Ok(Workspace {
                git_dir: repo.path().to_path_buf(),
                repo: Some(repo),
                repo_dir: cache,
                remote: Some(remote::RemoteSpec {
                    name: NAME.into(),
                    url: url.clone(),
                    branch: remote_branch,
                }),
                always_fetch: true,
            })
        }
    }
}

/// The work tree (of the repository or a linked worktree) where `branch` is checked out.
fn checked_out(repo: &Repository, branch: &str) -> Option<PathBuf> {
    let refname = format!("refs/heads/{branch}");
    let head_is = |r: &Repository| {
        r.find_reference("HEAD")
            .ok()
            .and_then(|h| h.symbolic_target().ok().flatten().map(|t| t == refname))
            .unwrap_or(false)
    };
    if !repo.is_bare() && head_is(repo) {
        return repo.workdir().map(Path::to_path_buf);
    }
    let worktrees = repo.worktrees().ok()?;
    for name in worktrees.iter().filter_map(|n| n.ok().flatten()) {
        let Ok(wt) = repo.find_worktree(name) else {
            continue;
        };
        if let Ok(r) = Repository::open_from_worktree(&wt) {
            if head_is(&r) {
                return Some(wt.path().to_path_buf());
            }
        }
    }
    None
}

fn ref_target(repo: &Repository, name: &str) -> Option<Oid> {
    repo.find_reference(name).ok().and_then(|r| r.target())
}

/// The commit the sync builds on, given the local branch and (after a fetch) the remote's.
fn choose_base(
    repo: &Repository,
    branch: &str,
    local: Option<Oid>,
    remote_tip: Option<Option<Oid>>,
    path: &str,
) -> Result<Option<Oid>, GitError> {
    let Some(remote) = remote_tip else {
        return Ok(local);
    };
    let (l, r) = match (local, remote) {
        (None, r) => return Ok(r),
        (l, None) => return Ok(l),
        (Some(l), Some(r)) => (l, r),
    };
    let descends = |a, b| -> Result<bool, GitError> {
        Ok(a == b
            || repo
                .graph_descendant_of(a, b)
                .map_err(GitError::git("comparing the local and remote branches"))?)
    };
    if descends(r, l)? {
        return Ok(Some(r)); // behind or equal: build on the remote's tip
    }
    if descends(l, r)? {
        return Ok(Some(l)); // ahead: a commit kept from a failed push, or local commits
    }
    // Diverged. meshvm's own unpushed commits are superseded by the rebuild onto the remote's
    // tip (same fleet, same files); anyone else's commit would be lost, so refuse.
    let mut walk = repo
        .revwalk()
        .map_err(GitError::git("walking the history"))?;
    walk.push(l)
        .and_then(|_| walk.hide(r))
        .map_err(GitError::git("walking the history"))?;
    for id in walk {
        let id = id.map_err(GitError::git("walking the history"))?;
        if !commit::is_meshvm_commit(repo, id, path) {
            return Err(GitError::Diverged {
                branch: branch.to_owned(),
                local: l,
                remote: r,
                commit: id,
            });
        }
    }
    Ok(Some(r))
}

fn signature(id: &Option<Identity>, repo: &Repository) -> Result<Signature<'static>, GitError> {
    match id {
        Some(id) => Signature::now(&id.name, &id.email),
        None => repo
            .signature()
            .or_else(|_| Signature::now(DEFAULT_NAME, DEFAULT_EMAIL)),
    }
    .map_err(|e| GitError::Invalid(format!("invalid commit identity: {}", e.message())))
}

/// The plan against `base`, from the base's subtree and meshvm's last commit for the path.
fn plan_against(
    repo: &Repository,
    input: &Input<'_>,
    branch: &str,
    base: Option<Oid>,
    rendered: &plan::Files,
) -> Result<(Plan, Option<Oid>), GitError> {
    let base_tree = match base {
        Some(id) => Some(
            repo.find_commit(id)
                .and_then(|c| c.tree())
                .map_err(GitError::git("reading the branch's tree"))?,
        ),
        None => None,
    };
    let current = base_tree
        .as_ref()
        .and_then(|t| plan::subtree_id(t, input.path));
    // The usual sync changes nothing: the rendered tree's id, computed in memory, is then the
    // committed one, and the committed files need not be read.
    let unchanged = current.is_some() && current == Some(plan::tree_id(rendered)?);
    let committed = if unchanged {
        std::borrow::Cow::Borrowed(rendered)
    } else {
        std::borrow::Cow::Owned(plan::committed_files(repo, current)?)
    };
    let written = commit::last_written_tree(repo, base, input.path)?;
    let current_or_empty = current.unwrap_or_else(empty_tree_id);
    let hand_edited: Vec<String> = match written {
        Some(w) if w == current_or_empty => Vec::new(),
        // Trees are content-addressed: a differing id means differing files; list them.
        Some(w) => {
            let w = (w != empty_tree_id()).then_some(w);
            let ours = plan::committed_files(repo, w)?;
            plan::differing(&ours, &committed)
                .into_iter()
                .map(|(p, _)| p)
                .collect()
        }
        // meshvm never committed here: whatever is there is someone else's.
        None => committed.keys().cloned().collect(),
    };
    let plan = plan::plan(input.path, branch, base, &committed, rendered, &hand_edited);
    Ok((plan, base_tree.map(|t| t.id())))
}

/// Commits `input.tree` at `input.path` of the branch (and pushes it), or with
/// `opts.dry_run` only plans. See the module documentation.
pub fn sync(
    input: &Input<'_>,
    opts: &Options,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<Report, GitError> {
    validate(input, opts)?;
    let rendered = plan::hashed_files(input.tree)?;
    let ws = open_workspace(opts, !opts.dry_run)?;
    let Some(repo) = &ws.repo else {
        // A dry run against a repository that does not exist yet: everything is added.
        let plan = plan::plan(
            input.path,
            &opts.branch,
            None,
            &Default::default(),
            &rendered,
            &[],
        );
        let diff = opts
            .diff_text
            .then(|| diff_of_new_repo(input, &plan))
            .transpose()?;
        return Ok(Report {
            plan: Plan { diff, ..plan },
            repo_dir: ws.repo_dir,
            commit: None,
            head: None,
            push: PushOutcome::NotAsked,
        });
    };
    let fetch = ws.remote.is_some() && (opts.push || ws.always_fetch);
    // A dry run that fetches nothing writes nothing: no lock, so that `gitops diff` works on a
    // read-only repository (a mirror, a mount) and never waits for a sync.
    let _lock = if opts.dry_run && !fetch {
        None
    } else {
        Some(lock::RepoLock::acquire(&ws.git_dir, opts.lock_timeout)?)
    };
    let refname = format!("refs/heads/{}", opts.branch);
    if !opts.dry_run {
        if let Some(workdir) = checked_out(repo, &opts.branch) {
            return Err(GitError::CheckedOut {
                branch: opts.branch.clone(),
                workdir,
            });
        }
    }
    let mut kept: Option<Oid> = None;
    let mut attempt = 0;
    let wrap = |e: GitError, kept: Option<Oid>| match (kept, &ws.remote) {
        (Some(commit), Some(remote)) if opts.push => GitError::NotPushed {
            commit,
            repo: ws.repo_dir.clone(),
            branch: opts.branch.clone(),
            push_cmd: format!(
                "git -C {} push {} {}:{}",
                ws.repo_dir.display(),
                remote.name,
                refname,
                format_args!("refs/heads/{}", remote.branch)
            ),
            source: Box::new(e),
        },
        _ => e,
    };
    loop {
        attempt += 1;
        let remote_tip = match (&ws.remote, fetch) {
            (Some(spec), true) => Some(
                remote::fetch(repo, spec, &opts.auth, &opts.host_keys, on_event)
                    .map_err(|e| wrap(e, kept))?,
            ),
            _ => None,
        };
        let local = ref_target(repo, &refname);
        let base = choose_base(repo, &opts.branch, local, remote_tip, input.path)
            .map_err(|e| wrap(e, kept))?;
        let (mut plan, base_tree) = plan_against(repo, input, &opts.branch, base, &rendered)?;

        if opts.dry_run {
            if opts.diff_text {
                plan.diff = Some(objects::write_objects(
                    &ws.git_dir,
                    objects::Sink::Discard,
                    |w| {
                        let (root, _) = commit::build_tree(
                            w,
                            base_tree,
                            input.path,
                            &plan,
                            input.tree,
                            &rendered,
                            |_, _| {},
                        )?;
                        let old = base_tree.map(|t| w.repo.find_tree(t)).transpose();
                        let new = w.repo.find_tree(root);
                        let (old, new) = (
                            old.map_err(GitError::git("reading the base tree"))?,
                            new.map_err(GitError::git("reading the new tree"))?,
                        );
                        plan::unified_diff(w.repo, old.as_ref(), Some(&new), input.path)
                    },
                )?);
            }
            return Ok(Report {
                plan,
                repo_dir: ws.repo_dir.clone(),
                commit: None,
                head: base,
                push: PushOutcome::NotAsked,
            });
        }
        if !plan.overwrites.is_empty() && !opts.force {
            return Err(wrap(
                GitError::HandEdits {
                    path: input.path.to_owned(),
                    paths: plan.overwrites.clone(),
                },
                kept,
            ));
        }

        let mut made = None;
        let head = if plan.has_changes() {
            let author = signature(&opts.author, repo)?;
            let committer = match &opts.committer {
                Some(_) => signature(&opts.committer, repo)?,
                None => author.clone(),
            };
            let sink = objects::Sink::for_count(plan.files.len());
            let id = objects::write_objects(&ws.git_dir, sink, |w| {
                let (root, subtree) = commit::build_tree(
                    w,
                    base_tree,
                    input.path,
                    &plan,
                    input.tree,
                    &rendered,
                    |done, total| {
                        if done == total || done % 256 == 0 {
                            on_event(Event::Progress {
                                step: Step::Write,
                                done,
                                total,
                            });
                        }
                    },
                )?;
                let meta = commit::Meta {
                    fleet_sha256: input.fleet_sha256,
                    version: VERSION,
                };
                let msg = commit::message(&plan, subtree, &meta);
                commit::create_commit(w, root, base, &author, &committer, &msg)
            })?;
            made = Some(id);
            id
        } else {
            match base {
                Some(b) => b,
                // Nothing rendered and no branch: nothing to do at all.
                None => {
                    return Ok(Report {
                        plan,
                        repo_dir: ws.repo_dir.clone(),
                        commit: None,
                        head: None,
                        push: PushOutcome::NotAsked,
                    });
                }
            }
        };
        if local != Some(head) {
            match commit::move_ref(repo, &refname, local, head, "meshvm: sync") {
                Ok(()) => {}
                // Someone moved the local branch meanwhile: rebuild on it.
                Err(GitError::Raced { refname }) if attempt < opts.max_attempts => {
                    let reason = format!("{refname} moved meanwhile");
                    backoff(opts, attempt, &reason, on_event);
                    continue;
                }
                Err(e) => return Err(wrap(e, kept)),
            }
        }
        let Some(spec) = ws.remote.as_ref().filter(|_| opts.push) else {
            return Ok(Report {
                plan,
                repo_dir: ws.repo_dir.clone(),
                commit: made,
                head: Some(head),
                push: PushOutcome::NotAsked,
            });
        };
        if remote_tip.flatten() == Some(head) {
            return Ok(Report {
                plan,
                repo_dir: ws.repo_dir.clone(),
                commit: made,
                head: Some(head),
                push: PushOutcome::UpToDate,
            });
        }
        let shown_url = target::redact_url(&spec.url);
        on_event(Event::Pushing {
            attempt,
            url: &shown_url,
        });
        let kept_now = Some(head);
        match remote::push(
            repo,
            spec,
            &opts.branch,
            &opts.auth,
            &opts.host_keys,
            on_event,
        )
        .map_err(|e| wrap(e, kept_now))?
        {
            remote::Pushed::Ok => {
                repo.reference(&spec.tracking_ref(), head, true, "meshvm: pushed")
                    .map_err(GitError::git("updating the tracking ref"))?;
                return Ok(Report {
                    plan,
                    repo_dir: ws.repo_dir.clone(),
                    commit: made,
                    head: Some(head),
                    push: PushOutcome::Pushed { attempts: attempt },
                });
            }
            remote::Pushed::Stale(reason) if attempt < opts.max_attempts => {
                kept = kept_now;
                backoff(opts, attempt, &reason, on_event);
            }
            remote::Pushed::Stale(reason) => {
                return Err(wrap(
                    GitError::Contended {
                        attempts: attempt,
                        last: reason,
                    },
                    kept_now,
                ));
            }
        }
    }
}

fn backoff(opts: &Options, attempt: u32, reason: &str, on_event: &mut dyn FnMut(Event<'_>)) {
    let wait = opts.backoff * 2u32.saturating_pow(attempt - 1);
    on_event(Event::Retry {
        attempt,
        of: opts.max_attempts,
        reason,
        wait,
    });
    std::thread::sleep(wait);
}

/// The diff of a first sync into a repository that does not exist yet, computed in a
/// throwaway in-memory repository.
fn diff_of_new_repo(input: &Input<'_>, plan: &Plan) -> Result<String, GitError> {
    let tmp = tempfile::tempdir().map_err(|source| GitError::Io {
        context: "creating a temporary directory".into(),
        source,
    })?;
    let repo = init_bare(tmp.path(), "main")?;
    let rendered = plan::hashed_files(input.tree)?;
    objects::write_objects(repo.path(), objects::Sink::Discard, |w| {
        let (root, _) =
            commit::build_tree(w, None, input.path, plan, input.tree, &rendered, |_, _| {})?;
        let new = w
            .repo
            .find_tree(root)
            .map_err(GitError::git("reading the new tree"))?;
        plan::unified_diff(w.repo, None, Some(&new), input.path)
    })
}

/// Bounds how long a connection may take to open and a read or write may stall, for every
/// remote operation of the process (libgit2 waits for the OS otherwise: minutes, for a host that
/// drops packets).
///
/// # Safety
/// Sets a libgit2 global without synchronization: call it before any thread uses Git.
pub unsafe fn set_network_timeouts(connect: Duration, io: Duration) {
    let ms = |d: Duration| i32::try_from(d.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: the caller guarantees no other thread is using libgit2 yet.
    unsafe {
        let _ = git2::opts::set_server_connect_timeout_in_milliseconds(ms(connect));
        let _ = git2::opts::set_server_timeout_in_milliseconds(ms(io));
    }
}

/// The plan of a sync without writing anything: `sync` with `dry_run`.
pub fn diff(
    input: &Input<'_>,
    opts: &Options,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<Report, GitError> {
    let opts = Options {
        dry_run: true,
        ..opts.clone()
    };
    sync(input, &opts, on_event)
}
