//! The one place Git objects are written.
//!
//! A sync of a large fleet writes tens of thousands of blobs and trees; one loose file each
//! would cost as many inodes and fsyncs. Above a small count the objects go into libgit2's
//! in-memory object backend (mempack) and are then written as one packfile with its index.
//! Small updates (a VM added) stay loose: many tiny packs are worse than a few loose objects.
//! A dry run uses the same path and drops the mempack, so nothing reaches the disk.
//!
//! Architecture invariant: every object write of a sync happens inside [`write_objects`], on
//! the repository handle it passes in, and the objects are on disk before it returns (so a
//! reference moved afterwards never points at a missing object).

use std::io::Write;
use std::path::Path;

use git2::{Buf, Repository};

use super::GitError;

/// Where the objects written by the closure end up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    /// Loose objects, one file each.
    Loose,
    /// One packfile for the whole batch.
    Pack,
    /// Memory only, dropped at the end (dry runs and diffs).
    Discard,
}

/// Below this many new objects, loose objects are cheaper than a pack.
pub const PACK_THRESHOLD: usize = 256;

impl Sink {
    pub fn for_count(expected_objects: usize) -> Sink {
        if expected_objects >= PACK_THRESHOLD {
            Sink::Pack
        } else {
            Sink::Loose
        }
    }
}

/// Runs `f` with a fresh handle on the repository at `git_dir` whose writes go to `sink`.
///
/// A handle of its own, because a mempack backend cannot be detached from an object database:
/// any later write through the same handle would land in memory again.
pub fn write_objects<T>(
    git_dir: &Path,
    sink: Sink,
    f: impl FnOnce(&Repository) -> Result<T, GitError>,
) -> Result<T, GitError> {
    let repo = Repository::open(git_dir).map_err(GitError::git("opening the repository"))?;
    if sink == Sink::Loose {
        return f(&repo);
    }
    let odb = repo
        .odb()
        .map_err(GitError::git("opening the object database"))?;
    // Higher priority than the loose and pack backends, so that new objects land here.
    let mempack = odb
        .add_new_mempack_backend(1000)
        .map_err(GitError::git("creating the in-memory object store"))?;
    let result = f(&repo);
    if sink == Sink::Pack && result.is_ok() {
        let mut pack = Buf::new();
        mempack
            .dump(&repo, &mut pack)
            .map_err(GitError::git("packing the new objects"))?;
        // An empty pack is a 12-byte header and a 20-byte checksum: nothing new to store.
        if pack.len() > 32 {
            let mut writer = odb
                .packwriter()
                .map_err(GitError::git("writing the pack"))?;
            writer.write_all(&pack).map_err(|source| GitError::Io {
                context: "writing the pack".into(),
                source,
            })?;
            writer
                .commit()
                .map_err(GitError::git("indexing the pack"))?;
        }
    }
    mempack
        .reset()
        .map_err(GitError::git("freeing the in-memory object store"))?;
    result
}
