//! Exit codes, and the one error type commands return.

use std::fmt::Display;
use std::process::ExitCode;

use meshvm::spec::LoadError;

pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success (for `gitops diff`: no changes)
  1  invalid input, or a check failed (the errors say where and how to fix them)
  2  usage error: unknown command, flag or value
  3  Git or remote failure (the local repository is left valid)
  4  `gitops diff` and `gitops sync --dry-run`: there are changes to sync";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    Success = 0,
    Invalid = 1,
    Usage = 2,
    Git = 3,
    Changes = 4,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e as u8)
    }
}

/// A command's failure: what to tell the user, and the exit code.
#[derive(Debug)]
pub struct CliError {
    pub exit: Exit,
    pub message: String,
}

pub type CmdResult = Result<ExitCode, CliError>;

impl CliError {
    pub fn new(exit: Exit, message: impl Display) -> CliError {
        CliError {
            exit,
            message: message.to_string(),
        }
    }
    pub fn invalid(message: impl Display) -> CliError {
        CliError::new(Exit::Invalid, message)
    }
    #[allow(dead_code)] // for commands that check usage clap cannot express
    pub fn usage(message: impl Display) -> CliError {
        CliError::new(Exit::Usage, message)
    }
    #[allow(dead_code)] // for the git commands to come
    pub fn git(message: impl Display) -> CliError {
        CliError::new(Exit::Git, message)
    }

    /// Prints the error on stderr and returns its exit code.
    pub fn report(&self) -> ExitCode {
        let message = self.message.trim_end();
        if message.starts_with("error:") {
            eprintln!("{message}");
        } else {
            eprintln!("error: {message}");
        }
        self.exit.into()
    }
}

impl From<LoadError> for CliError {
    fn from(e: LoadError) -> CliError {
        CliError::invalid(e)
    }
}
