//! What kind of failure an error is: the one thing callers branch on (the command line maps
//! it to an exit code), so that no caller has to match every variant of every error type.

/// The kind of a library error. Every error type of the library has `fn kind(&self)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The input (a fleet file, a token, a certificate, a template, an option) is wrong.
    InvalidInput,
    /// meshvm refuses what was asked, to protect something (a secret would enter Git).
    Refused,
    /// Files that meshvm owns were edited by someone else, and the sync would overwrite them.
    HandEdits,
    /// The branch is checked out in a work tree, and meshvm never moves such a branch.
    CheckedOutBranch,
    /// Someone else changed the repository or the remote meanwhile, or holds its lock.
    Conflict,
    /// The remote refused the credentials, or none could be offered.
    Authentication,
    /// The SSH host key of the remote is unknown or does not match.
    HostKey,
    /// The remote could not be reached or the transfer failed.
    Network,
    /// A Git repository, local or remote, failed or refused an operation.
    Repository,
    /// A bug or an environment failure meshvm cannot attribute to the input.
    Internal,
}
