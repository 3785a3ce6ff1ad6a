//! The file backend of the join-token book: JSON, 0600, changed under an exclusive
//! `flock(2)` on `<file>.lock` and replaced atomically (write to a temporary sibling,
//! rename), so concurrent `meshvm join-token` runs and broker requests never lose a use or
//! a revocation. It suits one broker replica, or tests; docs/join.md says so.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use meshvm::join::tokens::TokenBook;
use rustix::fs::{FlockOperation, flock};

pub struct TokenFile {
    path: PathBuf,
}

impl TokenFile {
    pub fn new(path: &Path) -> TokenFile {
        TokenFile {
            path: path.to_owned(),
        }
    }

    /// Runs `f` on the book under the lock; writes the book back when `f` returns
    /// `(_, true)`. A missing file is an empty book.
    pub fn update<T>(&self, f: impl FnOnce(&mut TokenBook) -> (T, bool)) -> Result<T, String> {
        let err = |what: &str, e: std::io::Error| format!("{what} {}: {e}", self.path.display());
        let lock_path = self.path.with_extension("lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|e| err("cannot open the lock of", e))?;
        flock(&lock, FlockOperation::LockExclusive).map_err(|e| err("cannot lock", e.into()))?;
        let mut book = match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| format!("{}: not a join-token book: {e}", self.path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => TokenBook::default(),
            Err(e) => return Err(err("cannot read", e)),
        };
        let (out, changed) = f(&mut book);
        if changed {
            let dir = self
                .path
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let mut tmp = tempfile::Builder::new()
                .prefix(".join-tokens")
                .tempfile_in(dir)
                .map_err(|e| err("cannot write next to", e))?;
            let mut json = serde_json::to_vec_pretty(&book).expect("JSON");
            json.push(b'\n');
            tmp.write_all(&json).map_err(|e| err("cannot write", e))?;
            tmp.as_file()
                .sync_all()
                .map_err(|e| err("cannot write", e))?;
            tmp.persist(&self.path)
                .map_err(|e| err("cannot replace", e.error))?;
        }
        drop(lock);
        Ok(out)
    }
}
