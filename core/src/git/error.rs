//! Everything that can go wrong in a sync, with the fields a caller needs to explain it. The
//! messages say what happened; what to do about it with the command line (which flag to pass)
//! is the caller's to add.

use std::path::PathBuf;
use std::time::Duration;

use git2::Oid;

use crate::ErrorKind;

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// libgit2 failed; `error`'s message is part of this one (not a separate cause: its
    /// `Display` adds libgit2's class and code numbers, noise to a user).
    #[error("{context}: {}", .error.message())]
    Git { context: String, error: git2::Error },
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
    #[error(
        "gitops.path {path:?} must be a relative path inside the repository, like clusters/cluster1"
    )]
    PathNotRelative { path: String },
    #[error("{} {name:?} {reason}", role.noun())]
    InvalidBranch {
        role: BranchRole,
        name: String,
        reason: String,
    },
    #[error("the base branch {branch} does not exist{}", if *on_remote { " on the remote" } else { "" })]
    NoBase { branch: String, on_remote: bool },
    #[error(
        "refusing to remove {removed} of the {of} VMs committed in {path} (more than half): \
         is the fleet file the right one?"
    )]
    MassRemoval {
        path: String,
        removed: usize,
        of: usize,
    },
    #[error("{name:?} is not a valid Git remote name")]
    InvalidRemote { name: String },
    #[error("{} exists and is not a Git repository", path.display())]
    NotARepository { path: PathBuf },
    #[error("{} has no remote named {name:?} to push to", repo.display())]
    NoRemote { repo: PathBuf, name: String },
    /// A bug: something meshvm built itself is not what Git accepts.
    #[error("{0}")]
    Internal(String),
    #[error(
        "refusing to commit {path}: it holds a secret (the istio-token or a private file), and \
         secrets never enter Git"
    )]
    SecretInTree { path: String },
    #[error("{}", hand_edits_message(path, paths))]
    HandEdits { path: String, paths: Vec<String> },
    #[error(
        "branch {branch} is checked out in {}; meshvm never moves a checked-out branch (that \
         would change the files under someone's feet)",
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
    HostKey {
        url: String,
        detail: String,
        /// The fingerprint of a key found in no known_hosts file, which the user may pin.
        unknown: Option<String>,
    },
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
    /// A later step failed after the branch got a commit that is not on the remote yet.
    #[error("{error}\nthe commit {commit} is kept in {} on branch {branch}", repo.display())]
    NotPushed {
        commit: Oid,
        repo: PathBuf,
        branch: String,
        /// How to push the kept commit by hand.
        push_cmd: String,
        /// What failed; its text is part of this error's.
        error: Box<GitError>,
    },
}

/// Which branch option a bad branch name came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BranchRole {
    /// The branch committed to.
    Local,
    /// The branch on the remote.
    Remote,
    /// The branch a new branch starts from.
    Base,
}

impl BranchRole {
    fn noun(self) -> &'static str {
        match self {
            BranchRole::Local => "branch",
            BranchRole::Remote => "remote branch",
            BranchRole::Base => "base branch",
        }
    }
}

fn hand_edits_message(path: &str, paths: &[String]) -> String {
    let mut msg = format!(
        "{} file(s) in {path} were changed by someone else since meshvm's last commit, and this \
         sync would overwrite them:",
        paths.len()
    );
    for p in paths.iter().take(50) {
        msg.push_str(&format!("\n  {p}"));
    }
    if paths.len() > 50 {
        msg.push_str(&format!("\n  … and {} more", paths.len() - 50));
    }
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

impl GitError {
    /// Wraps a libgit2 error with what meshvm was doing.
    pub fn git(context: &str) -> impl Fn(git2::Error) -> GitError + '_ {
        move |error| GitError::Git {
            context: context.to_owned(),
            error,
        }
    }

    /// Wraps an I/O error with what meshvm was doing.
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> GitError {
        move |source| GitError::Io {
            context: context.into(),
            source,
        }
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            GitError::Invalid(_)
            | GitError::PathNotRelative { .. }
            | GitError::InvalidBranch { .. }
            | GitError::InvalidRemote { .. }
            | GitError::NotARepository { .. }
            | GitError::NoRemote { .. }
            | GitError::NoBase { .. } => ErrorKind::InvalidInput,
            GitError::SecretInTree { .. } | GitError::MassRemoval { .. } => ErrorKind::Refused,
            GitError::HandEdits { .. } => ErrorKind::HandEdits,
            GitError::CheckedOut { .. } => ErrorKind::CheckedOutBranch,
            GitError::Locked { .. }
            | GitError::Raced { .. }
            | GitError::Diverged { .. }
            | GitError::Contended { .. } => ErrorKind::Conflict,
            GitError::Auth { .. } => ErrorKind::Authentication,
            GitError::HostKey { .. } => ErrorKind::HostKey,
            GitError::Remote { .. } => ErrorKind::Network,
            GitError::Git { .. } | GitError::Io { .. } | GitError::Rejected { .. } => {
                ErrorKind::Repository
            }
            GitError::Internal(_) => ErrorKind::Internal,
            GitError::NotPushed { error, .. } => error.kind(),
        }
    }

    /// The error under a [`GitError::NotPushed`], or this one.
    pub fn cause(&self) -> &GitError {
        match self {
            GitError::NotPushed { error, .. } => error,
            e => e,
        }
    }
}
