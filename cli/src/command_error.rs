//! The one error type commands return, after jj's `cli/src/command_error.rs`: the library's
//! error with its kind, the hints the command line adds (which flag to pass), and the one
//! mapping from kind to exit code.

use std::error::Error;
use std::fmt::Display;
use std::io::Write;
use std::process::ExitCode;

use meshvm::ErrorKind;
use meshvm::git::{BranchRole, GitError};
use meshvm::spec::LoadError;

pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success (for `gitops diff`: no changes)
  1  invalid input, or a check failed (the errors say where and how to fix them)
  2  usage error: unknown command, flag or value
  3  Git or remote failure (the local repository is left valid)
  4  `gitops diff` and `gitops sync --dry-run`: there are changes to sync
  130  interrupted (SIGINT, Ctrl-C): partial output removed; it says whether anything changed
  143  terminated (SIGTERM): as for 130";

/// The exit codes of `EXIT_CODES_HELP` (and of README.md's table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    Success = 0,
    Invalid = 1,
    Usage = 2,
    Git = 3,
    Changes = 4,
    /// 128 + SIGINT, as a shell reports a command killed by it.
    Interrupted = 130,
    /// 128 + SIGTERM.
    Terminated = 143,
}

impl Exit {
    /// The exit code after the signal thread cleaned up on `signal` (SIGINT or SIGTERM).
    pub fn for_signal(signal: i32) -> Exit {
        match signal {
            signal_hook::consts::SIGINT => Exit::Interrupted,
            _ => Exit::Terminated,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e as u8)
    }
}

/// What failed, for the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Arguments clap cannot check.
    Usage,
    /// Stdout was closed by its reader (`meshvm … | head -1`): it has read enough.
    ClosedStdout,
    Library(ErrorKind),
}

impl From<ErrorKind> for Kind {
    fn from(kind: ErrorKind) -> Kind {
        Kind::Library(kind)
    }
}

/// The exit code of a failure of `kind`: the one place the README's table is implemented.
pub fn exit_code(kind: Kind) -> Exit {
    match kind {
        Kind::ClosedStdout => Exit::Success,
        Kind::Usage => Exit::Usage,
        Kind::Library(kind) => match kind {
            ErrorKind::InvalidInput
            | ErrorKind::Refused
            | ErrorKind::HandEdits
            | ErrorKind::CheckedOutBranch => Exit::Invalid,
            ErrorKind::Conflict
            | ErrorKind::Authentication
            | ErrorKind::HostKey
            | ErrorKind::Network
            | ErrorKind::Repository
            | ErrorKind::Internal => Exit::Git,
        },
    }
}

/// A command's failure: the error, its kind, and what to do about it.
#[derive(Debug)]
pub struct CommandError {
    pub kind: Kind,
    pub error: Box<dyn Error + Send + Sync>,
    pub hints: Vec<String>,
    /// Reported as JSON on stdout (`--output json`) rather than as text on stderr.
    pub json: bool,
}

pub type CmdResult = Result<ExitCode, CommandError>;

impl CommandError {
    pub fn new(kind: impl Into<Kind>, error: impl Into<Box<dyn Error + Send + Sync>>) -> Self {
        CommandError {
            kind: kind.into(),
            error: error.into(),
            hints: Vec::new(),
            json: false,
        }
    }

    /// For `--output json`: the error is reported as a JSON object on stdout, where the
    /// command's JSON would have been (see [`CommandError::to_json`]).
    pub fn in_json(mut self) -> Self {
        self.json = true;
        self
    }

    /// `{"error": {"message", "causes", "hints", "kind", "exitCode"}}`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut causes = Vec::new();
        let mut cause = self.error.source();
        while let Some(e) = cause {
            causes.push(e.to_string());
            cause = e.source();
        }
        let kind = match self.kind {
            Kind::Usage => "usage".to_owned(),
            Kind::ClosedStdout => "closed-stdout".to_owned(),
            Kind::Library(kind) => kebab(&format!("{kind:?}")),
        };
        serde_json::json!({
            "error": {
                "message": self.error.to_string().trim_end(),
                "causes": causes,
                "hints": self.hints,
                "kind": kind,
                "exitCode": exit_code(self.kind) as u8,
            }
        })
    }

    pub fn invalid(message: impl Display) -> Self {
        CommandError::new(ErrorKind::InvalidInput, message.to_string())
    }

    pub fn usage(message: impl Display) -> Self {
        CommandError::new(Kind::Usage, message.to_string())
    }

    pub fn hinted(mut self, hint: impl Into<String>) -> Self {
        self.hints.push(hint.into());
        self
    }

    /// Prints the error, its causes and its hints on stderr; returns the exit code.
    pub fn report(&self) -> ExitCode {
        if self.json && self.kind != Kind::ClosedStdout {
            let json = serde_json::to_string_pretty(&self.to_json()).expect("JSON values print");
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{json}").and_then(|()| out.flush());
        } else if self.kind != Kind::ClosedStdout {
            let message = self.error.to_string();
            let message = message.trim_end();
            // Diagnostics say `error:` on each of their lines already.
            if message.starts_with("error:") {
                eprintln!("{message}");
            } else {
                eprintln!("error: {message}");
            }
            let mut cause = self.error.source();
            while let Some(e) = cause {
                eprintln!("caused by: {e}");
                cause = e.source();
            }
            for hint in &self.hints {
                eprintln!("  hint: {hint}");
            }
        }
        exit_code(self.kind).into()
    }
}

/// Writes to stdout, and flushes. A reader that closes stdout early (`meshvm render --stdout
/// | head -1`) has read what it wanted: that ends the command quietly, with success.
pub fn to_stdout(
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<(), CommandError> {
    let mut out = std::io::stdout().lock();
    write(&mut out)
        .and_then(|()| out.flush())
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::BrokenPipe => CommandError::new(Kind::ClosedStdout, e),
            // Like the other files meshvm cannot write (a full disk): exit 1.
            _ => CommandError::invalid(format!("cannot write to stdout: {e}")),
        })
}

impl From<LoadError> for CommandError {
    fn from(e: LoadError) -> Self {
        CommandError::new(e.kind(), e)
    }
}

impl From<GitError> for CommandError {
    fn from(e: GitError) -> Self {
        let mut hints: Vec<String> = match e.cause() {
            GitError::HandEdits { .. } => vec![
                "move those changes into the fleet file (meshvm owns this subtree), or run again \
                 with --force to overwrite them"
                    .into(),
            ],
            GitError::CheckedOut { .. } => {
                vec!["sync to another --branch, or use a bare repository or a URL as --repo".into()]
            }
            GitError::NoRemote { .. } => vec![
                "add it (git remote add), name another with --remote, or give the remote's URL \
                 as --repo"
                    .into(),
            ],
            GitError::InvalidBranch { role, .. } => vec![match role {
                BranchRole::Local => "name another with --branch (or gitops.branch)".into(),
                BranchRole::Remote => "name another with --remote-branch".into(),
                BranchRole::Base => "name another with --base".into(),
            }],
            GitError::InvalidRemote { .. } => vec!["name another with --remote".into()],
            GitError::NoBase { .. } => {
                vec!["name an existing branch with --base (a new branch starts from it)".into()]
            }
            GitError::MassRemoval { .. } => vec![
                "check `meshvm gitops diff`; if these VMs are really gone, run again with \
                 --allow-mass-removal"
                    .into(),
            ],
            GitError::HostKey {
                unknown: Some(fingerprint),
                ..
            } => vec![format!(
                "once checked, pin it with --ssh-host-fingerprint {fingerprint}"
            )],
            _ => Vec::new(),
        };
        if let GitError::NotPushed { push_cmd, .. } = &e {
            hints.push(format!(
                "fix the cause and run the same `meshvm gitops sync --push` again (it rebuilds \
                 onto the remote's tip), or push it by hand: {push_cmd}"
            ));
        }
        CommandError {
            kind: e.kind().into(),
            error: Box::new(e),
            hints,
            json: false,
        }
    }
}

/// `InvalidInput` → `invalid-input`.
fn kebab(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('-');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(code, meaning)` of each line of the help's list.
    fn help_codes() -> Vec<(u8, String)> {
        EXIT_CODES_HELP
            .lines()
            .skip(1)
            .map(|l| {
                let (code, meaning) = l.trim().split_once("  ").expect("code  meaning");
                (code.parse().unwrap(), meaning.trim().to_owned())
            })
            .collect()
    }

    #[test]
    fn the_readme_table_of_exit_codes_is_the_help_s() {
        let readme = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"));
        let section = readme
            .split("## Exit codes")
            .nth(1)
            .expect("README.md has an `## Exit codes` section");
        let table: Vec<(u8, String)> = section
            .lines()
            .take_while(|l| !l.starts_with("## "))
            .filter_map(|l| {
                let cells: Vec<&str> = l.trim().trim_matches('|').split('|').collect();
                let code = cells.first()?.trim().parse().ok()?;
                Some((code, cells.get(1)?.trim().to_owned()))
            })
            .collect();
        assert_eq!(table, help_codes());
    }

    #[test]
    fn every_exit_code_is_in_the_help() {
        let codes: Vec<u8> = help_codes().into_iter().map(|(c, _)| c).collect();
        for exit in [
            Exit::Success,
            Exit::Invalid,
            Exit::Usage,
            Exit::Git,
            Exit::Changes,
            Exit::Interrupted,
            Exit::Terminated,
        ] {
            assert!(codes.contains(&(exit as u8)), "{exit:?}");
        }
        assert_eq!(codes.len(), 7, "every code of the help is an `Exit`");
    }

    #[test]
    fn signals_exit_as_a_shell_reports_them() {
        use signal_hook::consts::{SIGINT, SIGTERM};
        for (signal, exit) in [(SIGINT, Exit::Interrupted), (SIGTERM, Exit::Terminated)] {
            assert_eq!(Exit::for_signal(signal), exit);
            assert_eq!(exit as i32, 128 + signal);
        }
    }
}
