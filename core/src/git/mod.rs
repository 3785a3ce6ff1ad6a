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
//!   `remote`: fetch and push with credentials and host key checks; `maintenance`: pack loose
//!   objects past 256 and consolidate packs past 16 after each sync; `lock`: one sync at a
//!   time per repository; `known_hosts`: SSH host key verification.
//!
//! Architecture invariants: meshvm only ever writes below `gitops.path` (everything else of the
//! base tree is carried over untouched); it never moves a branch that is checked out, never
//! force-pushes, and moves refs only by compare-and-swap. The istio-token never enters a tree
//! (`plan::git_mode` refuses files that hold secrets).

mod commit;
pub mod dry;
mod error;
pub mod known_hosts;
pub mod lock;
pub mod maintenance;
mod objects;
pub mod plan;
mod remote;
pub mod reuse;
pub mod review;
mod shortcut;
mod sync;
pub mod target;

use std::path::PathBuf;
use std::time::Duration;

pub use git2::Oid;

pub use commit::{
    TRAILER_FLEET, TRAILER_INPUTS, TRAILER_PATH, TRAILER_TREE, TRAILER_VERSION, empty_tree_id,
};
pub use error::{BranchRole, GitError};
pub use lock::LOCK_FILE;
pub use plan::{Change, FileChange, GroupRef, Plan, VmChanges, VmMove, VmRef};
pub use remote::{Auth, HostKeys};
pub use shortcut::{glance_cache, unchanged};
pub use sync::{diff, sync};
pub use target::Target;

use crate::tree::FileTree;

/// meshvm's version, recorded in each commit.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The default commit identity when neither flags nor git config give one.
pub const DEFAULT_NAME: &str = "meshvm";
pub const DEFAULT_EMAIL: &str = "meshvm@localhost";

/// What is synced: the rendered tree and what the commit records about it.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    /// The tree, relative to `path`. The sync takes it apart as it hashes it
    /// ([`plan::hashed`]): a large fleet's tree is not held twice.
    pub tree: FileTree,
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
    /// The branch a new branch starts from (one that exists neither locally nor on the
    /// remote); `None`: the remote's default branch (for a local repository without a remote
    /// pushed to, the branch its HEAD names), so that the new branch can be merged as a pull
    /// request.
    pub base: Option<String>,
    /// Allow a sync that removes more than half (and more than one) of the committed VMs; moves do not count.
    pub allow_mass_removal: bool,
    pub mode: Mode,
    /// Push the branch to the remote; a dry run then plans against the remote's tip.
    pub push: bool,
    pub on_hand_edits: OnHandEdits,
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
    /// The digest of everything the render read (`spec::inputs`), recorded in the commit's
    /// trailers so that the next sync can skip an unchanged render ([`unchanged`]).
    pub render_inputs: Option<String>,
    /// More trailers for the commit, after meshvm's own: the `Argocd-reference-commit-*`
    /// trailers of a hydrated tree (`dry::reference_trailers`). Values hold no newline.
    pub extra_trailers: Vec<(String, String)>,
    /// The VMs the input tree leaves out because an earlier render of the same inputs gave
    /// their directories ([`reuse`]); every VM's digest, recorded after a sync that writes.
    pub reuse: Option<std::sync::Arc<reuse::Reuse>>,
}

impl Options {
    pub fn new(target: Target, cache_dir: PathBuf, branch: impl Into<String>) -> Options {
        Options {
            target,
            cache_dir,
            branch: branch.into(),
            remote: "origin".into(),
            remote_branch: None,
            base: None,
            allow_mass_removal: false,
            mode: Mode::Commit,
            push: false,
            on_hand_edits: OnHandEdits::Refuse,
            author: None,
            committer: None,
            auth: Auth::default(),
            host_keys: HostKeys::default(),
            max_attempts: 5,
            backoff: Duration::from_millis(250),
            lock_timeout: Duration::from_secs(120),
            render_inputs: None,
            extra_trailers: Vec::new(),
            reuse: None,
        }
    }
}

/// What a sync does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Plan only: nothing is written (a URL target's cache is still fetched into).
    DryRun,
    /// A dry run that also computes the unified diff into `Plan::diff`.
    DryRunWithDiff,
    /// Commit to the local branch (and push it, with `Options::push`).
    Commit,
}

impl Mode {
    pub fn writes(self) -> bool {
        self == Mode::Commit
    }
}

/// What a sync does with files of its subtree that someone else edited since its last commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnHandEdits {
    Refuse,
    Overwrite,
}

/// A long step, for progress display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Fetch,
    Write,
    /// Compressing the new objects into a pack (a cold sync's long part).
    Pack,
    Push,
}

impl Step {
    pub fn label(self) -> &'static str {
        match self {
            Step::Fetch => "fetching",
            Step::Write => "writing files",
            Step::Pack => "packing",
            Step::Push => "pushing",
        }
    }

    /// What `done` and `total` count.
    pub fn unit(self) -> &'static str {
        match self {
            Step::Write => "files",
            Step::Fetch | Step::Pack | Step::Push => "objects",
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

/// Initialises libgit2 for a process that will not use the network (a local repository, no
/// push), without loading the system's CA certificates.
///
/// libgit2 initialises OpenSSL on its first use, and OpenSSL then parses every certificate of
/// the system's CA bundle: about 40 % of the CPU of a sync that changes nothing, for a
/// certificate store no local sync reads. OpenSSL takes the bundle's path from `SSL_CERT_FILE`
/// at that moment only; it is pointed at an empty file for the initialisation and restored
/// right after, so no child process and no later code sees the change. A remote operation of
/// such a process would find no trusted CA and refuse the server (never the reverse).
///
/// # Safety
/// Changes the environment and a libgit2 global without synchronization: call it before any
/// other thread that reads the environment or uses Git exists.
pub unsafe fn init_offline() {
    const VAR: &str = "SSL_CERT_FILE";
    let saved = std::env::var_os(VAR);
    // SAFETY: the caller guarantees no other thread reads the environment or uses Git yet.
    unsafe {
        std::env::set_var(VAR, "/dev/null");
        // Any libgit2 call initialises it, OpenSSL with it.
        let _ = git2::opts::get_server_timeout_in_milliseconds();
        match saved {
            Some(v) => std::env::set_var(VAR, v),
            None => std::env::remove_var(VAR),
        }
    }
}
