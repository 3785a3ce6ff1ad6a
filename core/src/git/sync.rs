//! The sync, in named steps: open the workspace (the repository, its lock, its remote), then
//! attempts — choose the base, plan, refuse hand edits, commit, move the branch by
//! compare-and-swap, push — retried while someone else moves the branch meanwhile.

use std::path::{Path, PathBuf};

use git2::{Oid, Repository, RepositoryInitOptions, Signature};

use super::remote::{self, RemoteSpec};
use super::{
    BranchRole, DEFAULT_EMAIL, DEFAULT_NAME, Event, GitError, Input, Mode, OnHandEdits, Options,
    Plan, PushOutcome, Report, Step, Target, VERSION, commit, lock, objects, plan, target,
};

/// Commits `input.tree` at `input.path` of the branch (and pushes it), or only plans, as
/// `opts.mode` says. See the module documentation of [`crate::git`].
pub fn sync(
    input: Input<'_>,
    opts: &Options,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<Report, GitError> {
    check_options(input.path, opts)?;
    let Input {
        tree,
        path,
        fleet_sha256,
    } = input;
    let plan::Hashed {
        files: mut rendered,
        blobs,
    } = plan::hashed(tree)?;
    let input = Content {
        path,
        fleet_sha256,
        blobs: &blobs,
    };
    let input = &input;
    if let Some(reuse) = &opts.reuse {
        // The VMs left out of the render, each as the one tree its directory renders to.
        for (dir, &id) in &reuse.reused {
            rendered.insert(dir.clone(), (id, super::reuse::TREE_MODE));
        }
    }
    let ws = Workspace::open(opts)?;
    let Some(repo) = &ws.repo else {
        return new_repository_plan(input, opts, &rendered, ws.repo_dir);
    };
    // A dry run that fetches nothing writes nothing: no lock, so that `gitops diff` works on a
    // read-only repository (a mirror, a mount) and never waits for a sync.
    let _lock = if opts.mode.writes() || ws.fetches(opts) {
        Some(lock::RepoLock::acquire(&ws.git_dir, opts.lock_timeout)?)
    } else {
        None
    };
    let _temporaries = _lock
        .as_ref()
        .map(|_| pack_temporaries_cleaned(&ws.git_dir));
    if let Some(reuse) = &opts.reuse {
        super::reuse::check_still_there(repo, input.path, reuse)?;
    }
    if opts.mode.writes() {
        if let Some(workdir) = checked_out(repo, &opts.branch) {
            return Err(GitError::CheckedOut {
                branch: opts.branch.clone(),
                workdir,
            });
        }
    }
    let sync = Sync {
        input,
        opts,
        ws: &ws,
        repo,
        rendered: &rendered,
        refname: format!("refs/heads/{}", opts.branch),
    };
    let report = sync.retry(on_event)?;
    if let (true, Some(reuse), Some(_)) = (opts.mode.writes(), &opts.reuse, report.head) {
        super::reuse::record(repo, input.path, reuse, &rendered);
    }
    if opts.mode.writes() {
        remember_inputs(repo, input.path, opts, &report);
        keep_small(repo);
    }
    Ok(report)
}

/// After a sync that committed nothing and found no hand edit, records which subtree the
/// render inputs give (`shortcut::record`), unless meshvm's last commit already names these
/// inputs: so that the next sync of the same inputs takes the no-op shortcut.
fn remember_inputs(repo: &Repository, path: &str, opts: &Options, report: &Report) {
    let (Some(inputs), None, Some(head)) = (&opts.render_inputs, report.commit, report.head) else {
        return;
    };
    if report.plan.has_changes() || !report.plan.hand_edits.is_empty() {
        return;
    }
    let Some(subtree) = repo
        .find_commit(head)
        .and_then(|c| c.tree())
        .ok()
        .and_then(|t| plan::subtree_id(&t, path))
    else {
        return;
    };
    let named = commit::last_meshvm_commit(repo, Some(head), path)
        .ok()
        .flatten()
        .and_then(|(id, _)| repo.find_commit(id).ok())
        .and_then(|c| commit::trailer(c.message_raw().unwrap_or(""), commit::TRAILER_INPUTS));
    if named.as_deref() != Some(inputs.as_str()) {
        super::shortcut::record(repo, path, inputs, subtree);
    }
}

/// Repacks the repository (the target, or the cache clone of a URL target) past
/// `maintenance`'s bounds, still under the lock. Best effort: the commit is already made (and
/// pushed), and a repack that fails leaves every object where it was; the next sync tries again.
fn keep_small(repo: &Repository) {
    let _ = super::maintenance::auto_repack(repo, super::maintenance::Thresholds::default());
}

/// The plan of a sync without writing anything: `sync` in a dry-run mode.
pub fn diff(
    input: Input<'_>,
    opts: &Options,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<Report, GitError> {
    let mode = match opts.mode {
        Mode::DryRunWithDiff => Mode::DryRunWithDiff,
        _ => Mode::DryRun,
    };
    sync(
        input,
        &Options {
            mode,
            ..opts.clone()
        },
        on_event,
    )
}

/// Removes the temporaries (`pack_git2_*`) an interrupted or killed sync left in the
/// repository whose lock this process holds (no other sync writes there meanwhile), and has
/// this sync's removed if it is interrupted.
fn pack_temporaries_cleaned(git_dir: &Path) -> crate::interrupt::Registered {
    let pack_dir = git_dir.join("objects").join("pack");
    crate::interrupt::remove_pack_temporaries(&pack_dir);
    crate::interrupt::remove_pack_temporaries_on_interrupt(&pack_dir)
}

/// What the input and options name must be valid before anything is opened.
fn check_options(path: &str, opts: &Options) -> Result<(), GitError> {
    if !crate::tree::is_safe_relative_path(path) {
        return Err(GitError::PathNotRelative {
            path: path.to_owned(),
        });
    }
    for (role, name) in [
        (BranchRole::Local, Some(&opts.branch)),
        (BranchRole::Remote, opts.remote_branch.as_ref()),
        (BranchRole::Base, opts.base.as_ref()),
    ] {
        if let Some(name) = name {
            if let Err(reason) = crate::spec::names::branch(name) {
                return Err(GitError::InvalidBranch {
                    role,
                    name: name.clone(),
                    reason,
                });
            }
        }
    }
    if !git2::Remote::is_valid_name(&opts.remote) {
        return Err(GitError::InvalidRemote {
            name: opts.remote.clone(),
        });
    }
    Ok(())
}

/// The opened repository and where its remote is.
struct Workspace {
    /// `None` only for a dry run against a repository that does not exist yet.
    repo: Option<Repository>,
    git_dir: PathBuf,
    repo_dir: PathBuf,
    remote: Option<RemoteSpec>,
    /// URL targets always fetch: the cache is only a copy.
    always_fetch: bool,
}

impl Workspace {
    /// Opens the path target (created bare when missing, unless a dry run) or the cache clone
    /// of a URL target.
    fn open(opts: &Options) -> Result<Workspace, GitError> {
        let remote_branch = opts
            .remote_branch
            .clone()
            .unwrap_or_else(|| opts.branch.clone());
        match &opts.target {
            Target::Path(path) => {
                let repo = match Repository::open(path) {
                    Ok(repo) => Some(repo),
                    Err(e) if e.code() == git2::ErrorCode::NotFound => {
                        let empty_dir =
                            std::fs::read_dir(path).is_ok_and(|mut d| d.next().is_none());
                        if path.exists() && !empty_dir {
                            // A concurrent first sync may have renamed its repository into
                            // place since the open above: it is whole once it is there.
                            let again = Repository::open(path);
                            Some(
                                again
                                    .map_err(|_| GitError::NotARepository { path: path.clone() })?,
                            )
                        } else {
                            opts.mode
                                .writes()
                                .then(|| create_bare(path, &opts.branch))
                                .transpose()?
                        }
                    }
                    Err(e) => return Err(GitError::git("opening the repository")(e)),
                };
                let git_dir = repo
                    .as_ref()
                    .map_or_else(|| path.clone(), |r| r.path().to_path_buf());
                let remote = match &repo {
                    Some(repo) if opts.push => Some(RemoteSpec {
                        name: opts.remote.clone(),
                        url: push_url(repo, path, &opts.remote)?,
                        branch: remote_branch,
                    }),
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
                    Err(_) => create_bare(&cache, &opts.branch)?,
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
                    remote: Some(RemoteSpec {
                        name: NAME.into(),
                        url: url.clone(),
                        branch: remote_branch,
                    }),
                    always_fetch: true,
                })
            }
        }
    }

    fn fetches(&self, opts: &Options) -> bool {
        self.remote.is_some() && (opts.push || self.always_fetch)
    }

    /// The remote a push goes to, when the sync pushes.
    fn push_remote(&self, opts: &Options) -> Option<&RemoteSpec> {
        self.remote.as_ref().filter(|_| opts.push)
    }
}

/// The URL `git push <remote>` would push to.
fn push_url(repo: &Repository, path: &Path, name: &str) -> Result<String, GitError> {
    let remote = repo.find_remote(name).map_err(|_| GitError::NoRemote {
        repo: path.to_path_buf(),
        name: name.to_owned(),
    })?;
    Ok(match remote.pushurl() {
        Ok(Some(u)) => u.to_owned(),
        _ => remote.url().unwrap_or_default().to_owned(),
    })
}

/// Creates the bare repository `path` all at once: made in a temporary sibling, then renamed
/// into place, so that a concurrent sync sees no repository or a whole one, never a directory
/// half made. When another sync's rename wins, its repository is opened instead; both then
/// take turns through the repository's lock.
fn create_bare(path: &Path, branch: &str) -> Result<Repository, GitError> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(parent)
        .map_err(GitError::io(format!("cannot create {}", parent.display())))?;
    let staging = tempfile::Builder::new()
        .prefix(".meshvm-init-")
        .tempdir_in(parent)
        .map_err(GitError::io(format!(
            "cannot create a directory in {}",
            parent.display()
        )))?;
    drop(init_bare(staging.path(), branch)?);
    // A bare repository made by `git init` is readable by others; tempfile's directory is not.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(staging.path(), std::fs::Permissions::from_mode(0o755))
        .map_err(GitError::io("setting the repository's mode"))?;
    match std::fs::rename(staging.path(), path) {
        Ok(()) => {
            let _ = staging.keep();
        }
        // Someone else's repository (or files) got there first: theirs is kept.
        Err(_) if path.exists() => {}
        Err(e) => {
            return Err(GitError::io(format!("cannot create {}", path.display()))(e));
        }
    }
    match Repository::open_bare(path) {
        Ok(repo) => Ok(repo),
        Err(_) => Err(GitError::NotARepository {
            path: path.to_path_buf(),
        }),
    }
}

fn init_bare(path: &Path, branch: &str) -> Result<Repository, GitError> {
    std::fs::create_dir_all(path)
        .map_err(GitError::io(format!("cannot create {}", path.display())))?;
    let mut opts = RepositoryInitOptions::new();
    // HEAD names the synced branch, so that `git clone` of this repository checks it out.
    opts.bare(true)
        .no_reinit(false)
        .initial_head(&format!("refs/heads/{branch}"));
    Repository::init_opts(path, &opts).map_err(GitError::git("creating the repository"))
}

/// A dry run against a repository that does not exist yet: everything is added.
fn new_repository_plan(
    input: &Content<'_>,
    opts: &Options,
    rendered: &plan::Files,
    repo_dir: PathBuf,
) -> Result<Report, GitError> {
    let plan = plan::plan(
        input.path,
        &opts.branch,
        None,
        &Default::default(),
        rendered,
        &[],
    );
    let diff = (opts.mode == Mode::DryRunWithDiff)
        .then(|| diff_of_new_repo(input, &plan, rendered))
        .transpose()?;
    Ok(Report {
        plan: Plan { diff, ..plan },
        repo_dir,
        commit: None,
        head: None,
        push: PushOutcome::NotAsked,
    })
}

/// The diff of a first sync into a repository that does not exist yet, computed in a
/// throwaway repository.
fn diff_of_new_repo(
    input: &Content<'_>,
    plan: &Plan,
    rendered: &plan::Files,
) -> Result<String, GitError> {
    let tmp = tempfile::tempdir().map_err(GitError::io("creating a temporary directory"))?;
    let repo = init_bare(tmp.path(), "main")?;
    objects::write_objects(repo.path(), objects::Sink::Discard, |w| {
        let (root, _) =
            commit::build_tree(w, None, input.path, plan, input.blobs, rendered, |_, _| {})?;
        let new = w
            .repo
            .find_tree(root)
            .map_err(GitError::git("reading the new tree"))?;
        plan::unified_diff(w.repo, None, Some(&new), plan)
    })
}

/// The work tree (of the repository or a linked worktree) where `branch` is checked out.
pub(super) fn checked_out(repo: &Repository, branch: &str) -> Option<PathBuf> {
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

/// What a sync writes, once its tree is hashed: [`Input`] taken apart.
struct Content<'a> {
    path: &'a str,
    fleet_sha256: &'a str,
    /// The bytes of the rendered files, each distinct blob once.
    blobs: &'a plan::Blobs,
}

/// One opened, locked sync: everything an attempt needs.
struct Sync<'a> {
    input: &'a Content<'a>,
    opts: &'a Options,
    ws: &'a Workspace,
    repo: &'a Repository,
    rendered: &'a plan::Files,
    /// The local branch's ref.
    refname: String,
}

/// How an attempt ended, when it did not fail.
enum Attempt {
    Done(Box<Report>),
    /// Someone moved the branch meanwhile (locally, or on the remote): rebuild and retry.
    Lost {
        reason: String,
    },
}

impl Sync<'_> {
    /// Attempts until one is done, a step fails, or the attempts run out. Once the local
    /// branch holds a commit that is not on the remote, every failure says so.
    fn retry(&self, on_event: &mut dyn FnMut(Event<'_>)) -> Result<Report, GitError> {
        let mut kept = self.unpushed_commit();
        let mut attempt = 1;
        loop {
            let reason = match self.attempt(attempt, &mut kept, on_event) {
                Ok(Attempt::Done(report)) => return Ok(*report),
                Ok(Attempt::Lost { reason }) => reason,
                Err(e) => return Err(self.not_pushed(e, kept)),
            };
            if attempt >= self.opts.max_attempts {
                let e = GitError::Contended {
                    attempts: attempt,
                    last: reason,
                };
                return Err(self.not_pushed(e, kept));
            }
            self.backoff(attempt, &reason, on_event);
            attempt += 1;
        }
    }

    /// Fetch, choose the base, plan, refuse hand edits, commit, move the branch, push. `kept`
    /// is the commit the local branch holds that the remote does not (when pushing).
    fn attempt(
        &self,
        attempt: u32,
        kept: &mut Option<Oid>,
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> Result<Attempt, GitError> {
        let (opts, input) = (self.opts, self.input);
        let remote_tip = match &self.ws.remote {
            Some(spec) if self.ws.fetches(opts) => Some(remote::fetch(
                self.repo,
                spec,
                &opts.auth,
                &opts.host_keys,
                on_event,
            )?),
            _ => None,
        };
        let local = ref_target(self.repo, &self.refname);
        let base = match choose_base(self.repo, &opts.branch, local, remote_tip, input.path)? {
            None => self.new_branch_base(on_event)?,
            base => base,
        };
        let (mut plan, base_tree) = self.plan_against(base)?;
        if !opts.mode.writes() {
            if opts.mode == Mode::DryRunWithDiff {
                plan.diff = Some(self.unified_diff(&plan, base_tree)?);
            }
            return Ok(Attempt::Done(self.report(
                plan,
                None,
                base,
                PushOutcome::NotAsked,
            )));
        }
        if let (Some((removed, of)), false) = (plan.mass_removal(), opts.allow_mass_removal) {
            return Err(GitError::MassRemoval {
                path: input.path.to_owned(),
                removed,
                of,
            });
        }
        if !plan.overwrites.is_empty() && opts.on_hand_edits == OnHandEdits::Refuse {
            return Err(GitError::HandEdits {
                path: input.path.to_owned(),
                paths: plan.overwrites.clone(),
            });
        }
        let made = if plan.has_changes() {
            Some(self.commit(&plan, base, base_tree, on_event)?)
        } else {
            None
        };
        let Some(head) = made.or(base) else {
            // Nothing rendered and no branch: nothing to do at all.
            return Ok(Attempt::Done(self.report(
                plan,
                None,
                None,
                PushOutcome::NotAsked,
            )));
        };
        if local != Some(head) {
            let moved = crate::interrupt::critical(
                || format!("{} now holds commit {head}", self.refname),
                || commit::move_ref(self.repo, &self.refname, local, head, "meshvm: sync"),
            );
            match moved {
                Ok(()) => {}
                Err(GitError::Raced { refname }) => {
                    return Ok(Attempt::Lost {
                        reason: format!("{refname} moved meanwhile"),
                    });
                }
                Err(e) => return Err(e),
            }
        }
        let Some(spec) = self.ws.push_remote(opts) else {
            return Ok(Attempt::Done(self.report(
                plan,
                made,
                Some(head),
                PushOutcome::NotAsked,
            )));
        };
        if remote_tip.flatten() == Some(head) {
            *kept = None;
            return Ok(Attempt::Done(self.report(
                plan,
                made,
                Some(head),
                PushOutcome::UpToDate,
            )));
        }
        *kept = Some(head);
        let shown_url = target::redact_url(&spec.url);
        on_event(Event::Pushing {
            attempt,
            url: &shown_url,
        });
        let pushed = remote::push(
            self.repo,
            spec,
            &opts.branch,
            &opts.auth,
            &opts.host_keys,
            on_event,
        )?;
        match pushed {
            remote::Pushed::Ok => {
                *kept = None;
                self.repo
                    .reference(&spec.tracking_ref(), head, true, "meshvm: pushed")
                    .map_err(GitError::git("updating the tracking ref"))?;
                let push = PushOutcome::Pushed { attempts: attempt };
                Ok(Attempt::Done(self.report(plan, made, Some(head), push)))
            }
            remote::Pushed::Stale(reason) => Ok(Attempt::Lost { reason }),
        }
    }

    /// The commit a branch that exists neither locally nor on the remote starts from:
    /// `--base`, else the remote's default branch (without a remote to fetch from: the branch
    /// the repository's HEAD names). `None` in an empty repository: the first commit.
    fn new_branch_base(
        &self,
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> Result<Option<Oid>, GitError> {
        let opts = self.opts;
        let fetched = self.ws.remote.as_ref().filter(|_| self.ws.fetches(opts));
        let (name, tip) = match fetched {
            Some(spec) => {
                let name = match &opts.base {
                    Some(base) => Some(base.clone()),
                    None => remote::default_branch(self.repo, spec, &opts.auth, &opts.host_keys)?,
                };
                let Some(name) = name.filter(|n| *n != spec.branch) else {
                    return Ok(None);
                };
                let base_spec = RemoteSpec {
                    branch: name.clone(),
                    ..spec.clone()
                };
                let tip =
                    remote::fetch(self.repo, &base_spec, &opts.auth, &opts.host_keys, on_event)?;
                (name, tip)
            }
            None => {
                let name = match &opts.base {
                    Some(base) => Some(base.clone()),
                    None => head_branch(self.repo),
                };
                let Some(name) = name.filter(|n| *n != opts.branch) else {
                    return Ok(None);
                };
                let tip = ref_target(self.repo, &format!("refs/heads/{name}"));
                (name, tip)
            }
        };
        if tip.is_none() && opts.base.is_some() {
            return Err(GitError::NoBase {
                branch: name,
                on_remote: fetched.is_some(),
            });
        }
        Ok(tip)
    }

    /// The plan against `base`, from the base's subtree and meshvm's last commit for the path.
    fn plan_against(&self, base: Option<Oid>) -> Result<(Plan, Option<Oid>), GitError> {
        let (repo, input) = (self.repo, self.input);
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
        let written = commit::last_written_tree(repo, base, input.path)?;
        // Reused VM directories (`reuse`) are compared as trees where the committed subtree is
        // the one meshvm last wrote; with hand edits, or nothing meshvm wrote, every file is
        // compared as without reuse.
        let mut rendered = std::borrow::Cow::Borrowed(self.rendered);
        let untouched = current.is_some() && written == current;
        if !untouched && super::reuse::has_trees(&rendered) {
            rendered =
                std::borrow::Cow::Owned(super::reuse::expand(repo, &rendered, |_, _| false)?);
        }
        // The usual sync changes nothing: the rendered tree's id, computed in memory, is then
        // the committed one, and the committed files need not be read.
        let read_committed;
        let committed: &plan::Files = match current {
            // Nothing committed (a first sync): nothing to compare, no tree to compute.
            None => {
                read_committed = plan::Files::new();
                &read_committed
            }
            Some(current) => {
                let (rendered_id, rendered_ids) = plan::tree_ids(&rendered)?;
                if current == rendered_id {
                    &rendered
                } else {
                    // Read only where the committed trees differ from the rendered ones.
                    read_committed = plan::committed_files_beside(
                        repo,
                        Some(current),
                        &rendered,
                        &rendered_ids,
                    )?;
                    // A reused directory the committed subtree holds otherwise (another base):
                    // its files are compared.
                    let same = |path: &str, id| {
                        read_committed.get(path) == Some(&(id, super::reuse::TREE_MODE))
                    };
                    if rendered
                        .iter()
                        .any(|(p, &(id, mode))| mode == super::reuse::TREE_MODE && !same(p, id))
                    {
                        rendered =
                            std::borrow::Cow::Owned(super::reuse::expand(repo, &rendered, same)?);
                    }
                    &read_committed
                }
            }
        };
        let current_or_empty = current.unwrap_or_else(commit::empty_tree_id);
        let hand_edited: Vec<String> = match written {
            Some(w) if w == current_or_empty => Vec::new(),
            // Trees are content-addressed: a differing id means differing files; list them.
            Some(w) => {
                let w = (w != commit::empty_tree_id()).then_some(w);
                let ours = plan::committed_files(repo, w)?;
                plan::differing(&ours, committed)
                    .into_iter()
                    .map(|(p, _)| p)
                    .collect()
            }
            // meshvm never committed here: whatever is there is someone else's.
            None => committed.keys().cloned().collect(),
        };
        let plan = plan::plan(
            input.path,
            &self.opts.branch,
            base,
            committed,
            &rendered,
            &hand_edited,
        );
        Ok((plan, base_tree.map(|t| t.id())))
    }

    /// The unified diff of the plan, from trees built without keeping their objects.
    fn unified_diff(&self, plan: &Plan, base_tree: Option<Oid>) -> Result<String, GitError> {
        let input = self.input;
        objects::write_objects(&self.ws.git_dir, objects::Sink::Discard, |w| {
            let (root, _) = commit::build_tree(
                w,
                base_tree,
                input.path,
                plan,
                input.blobs,
                self.rendered,
                |_, _| {},
            )?;
            let old = base_tree.map(|t| w.repo.find_tree(t)).transpose();
            let new = w.repo.find_tree(root);
            let (old, new) = (
                old.map_err(GitError::git("reading the base tree"))?,
                new.map_err(GitError::git("reading the new tree"))?,
            );
            plan::unified_diff(w.repo, old.as_ref(), Some(&new), plan)
        })
    }

    /// Writes the tree and the commit on `base`; returns the commit's id.
    fn commit(
        &self,
        plan: &Plan,
        base: Option<Oid>,
        base_tree: Option<Oid>,
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> Result<Oid, GitError> {
        let (opts, input) = (self.opts, self.input);
        let author = signature(&opts.author, self.repo)?;
        let committer = match &opts.committer {
            Some(_) => signature(&opts.committer, self.repo)?,
            None => author.clone(),
        };
        let sink = objects::Sink::for_count(plan.files.len());
        // Reported from two places: the files as they are planned in, the pack as it is written.
        let on_event = std::cell::RefCell::new(on_event);
        let mut on_packed = |done, total| {
            (*on_event.borrow_mut())(Event::Progress {
                step: Step::Pack,
                done,
                total,
            })
        };
        objects::write_objects_reporting(&self.ws.git_dir, sink, &mut on_packed, |w| {
            let (root, subtree) = commit::build_tree(
                w,
                base_tree,
                input.path,
                plan,
                input.blobs,
                self.rendered,
                |done, total| {
                    if done == total || done % 256 == 0 {
                        (*on_event.borrow_mut())(Event::Progress {
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
                render_inputs: opts.render_inputs.as_deref(),
                extra_trailers: &opts.extra_trailers,
            };
            let msg = commit::message(plan, subtree, &meta);
            commit::create_commit(w, root, base, &author, &committer, &msg)
        })
    }

    fn report(
        &self,
        plan: Plan,
        commit: Option<Oid>,
        head: Option<Oid>,
        push: PushOutcome,
    ) -> Box<Report> {
        Box::new(Report {
            plan,
            repo_dir: self.ws.repo_dir.clone(),
            commit,
            head,
            push,
        })
    }

    /// The local branch's tip when it is a meshvm commit the remote (as last fetched) lacks:
    /// one kept by an earlier sync that committed without pushing, or failed to push.
    fn unpushed_commit(&self) -> Option<Oid> {
        let spec = self.ws.push_remote(self.opts)?;
        let local = ref_target(self.repo, &self.refname)?;
        let on_remote = ref_target(self.repo, &spec.tracking_ref()).is_some_and(|pushed| {
            pushed == local || self.repo.graph_descendant_of(pushed, local) == Ok(true)
        });
        (!on_remote && commit::is_meshvm_commit(self.repo, local, self.input.path)).then_some(local)
    }

    /// `e`, saying that `kept` stays on the local branch and how to push it by hand.
    fn not_pushed(&self, e: GitError, kept: Option<Oid>) -> GitError {
        let (Some(commit), Some(remote)) = (kept, self.ws.push_remote(self.opts)) else {
            return e;
        };
        GitError::NotPushed {
            commit,
            repo: self.ws.repo_dir.clone(),
            branch: self.opts.branch.clone(),
            push_cmd: format!(
                "git -C {} push {} {}:refs/heads/{}",
                self.ws.repo_dir.display(),
                remote.name,
                self.refname,
                remote.branch
            ),
            error: Box::new(e),
        }
    }

    fn backoff(&self, attempt: u32, reason: &str, on_event: &mut dyn FnMut(Event<'_>)) {
        let wait = self.opts.backoff * 2u32.saturating_pow(attempt - 1);
        on_event(Event::Retry {
            attempt,
            of: self.opts.max_attempts,
            reason,
            wait,
        });
        std::thread::sleep(wait);
    }
}

/// The branch the repository's HEAD names (`main` for `refs/heads/main`), born or not.
fn head_branch(repo: &Repository) -> Option<String> {
    let head = repo.find_reference("HEAD").ok()?;
    let target = head.symbolic_target().ok()??;
    target.strip_prefix("refs/heads/").map(str::to_owned)
}

pub(super) fn ref_target(repo: &Repository, name: &str) -> Option<Oid> {
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

fn signature(
    id: &Option<super::Identity>,
    repo: &Repository,
) -> Result<Signature<'static>, GitError> {
    match id {
        Some(id) => Signature::now(&id.name, &id.email),
        None => repo
            .signature()
            .or_else(|_| Signature::now(DEFAULT_NAME, DEFAULT_EMAIL)),
    }
    .map_err(|e| GitError::Invalid(format!("invalid commit identity: {}", e.message())))
}
