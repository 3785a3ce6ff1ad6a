//! One sync at a time per repository.
//!
//! An advisory `flock(2)` on `<git dir>/meshvm-sync.lock`: the kernel releases it when the
//! holder exits or crashes, so there are no stale locks to clean up by hand. Through rustix
//! (no unsafe); std's `File::try_lock` needs Rust 1.89, above the workspace's MSRV. The file is never
//! removed (removing a locked file lets a third process lock a fresh inode). The branch itself
//! is still moved by compare-and-swap, which also guards against writers that ignore the lock
//! (a human's `git push` into the same repository).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::fs::{FlockOperation, flock};
use rustix::io::Errno;

use super::GitError;

pub const LOCK_FILE: &str = "meshvm-sync.lock";

/// Held while it lives.
#[derive(Debug)]
pub struct RepoLock {
    _file: File,
}

impl RepoLock {
    /// Waits up to `timeout` for the lock of the repository whose git directory is `git_dir`.
    pub fn acquire(git_dir: &Path, timeout: Duration) -> Result<RepoLock, GitError> {
        let path = git_dir.join(LOCK_FILE);
        let io_err = |e| GitError::io(format!("cannot open the lock file {}", path.display()))(e);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err)?;
        let start = Instant::now();
        loop {
            match flock(&file, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => break,
                Err(Errno::WOULDBLOCK) => {}
                Err(e) => return Err(io_err(e.into())),
            }
            if start.elapsed() >= timeout {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                return Err(GitError::Locked {
                    path: PathBuf::from(&path),
                    holder: holder.trim().to_owned(),
                    waited: timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Who holds it, for the message of whoever waits next.
        let _ = file.set_len(0);
        let _ = file.rewind();
        let _ = writeln!(file, "pid {}", std::process::id());
        Ok(RepoLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_waits_then_fails_and_gets_it_after_release() {
        let dir = tempfile::tempdir().unwrap();
        let first = RepoLock::acquire(dir.path(), Duration::ZERO).unwrap();
        let err = RepoLock::acquire(dir.path(), Duration::from_millis(120)).unwrap_err();
        assert!(
            err.to_string()
                .contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(first);
        RepoLock::acquire(dir.path(), Duration::ZERO).unwrap();
    }
}
