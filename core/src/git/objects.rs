//! The one place Git objects are written.
//!
//! A sync of a large fleet writes tens of thousands of blobs and trees; one loose file each
//! would cost as many inodes and fsyncs. Above a small count the objects go into libgit2's
//! in-memory object backend (mempack) and are then written as one packfile with its index,
//! built from exactly the objects this sync created (`git_mempack_dump` would instead pack
//! everything reachable from the new commit: the whole tree, every time). Small updates (a VM
//! added) stay loose: many tiny packs are worse than a few loose objects. A dry run uses the
//! same path and drops the mempack, so nothing reaches the disk.
//!
//! Architecture invariant: every object write of a sync goes through a [`Writer`] inside
//! [`write_objects`], and the objects are on disk before it returns (so a reference moved
//! afterwards never points at a missing object).

use std::io::Write;
use std::path::Path;

use std::cell::RefCell;

use git2::{Buf, Oid, Repository};

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

/// A repository handle whose writes are recorded, so that exactly the new objects are packed.
pub struct Writer<'r> {
    pub repo: &'r Repository,
    created: RefCell<Vec<Oid>>,
}

impl Writer<'_> {
    pub fn blob(&self, data: &[u8]) -> Result<Oid, GitError> {
        let id = self
            .repo
            .blob(data)
            .map_err(GitError::git("writing a file"))?;
        self.created(id);
        Ok(id)
    }

    /// Records an object written through `repo` directly (trees, the commit).
    pub fn created(&self, id: Oid) {
        self.created.borrow_mut().push(id);
    }
}

/// Runs `f` with a writer on a fresh handle on the repository at `git_dir`, whose writes go
/// to `sink`.
///
/// A handle of its own, because a mempack backend cannot be detached from an object database:
/// any later write through the same handle would land in memory again.
pub fn write_objects<T>(
    git_dir: &Path,
    sink: Sink,
    f: impl FnOnce(&Writer<'_>) -> Result<T, GitError>,
) -> Result<T, GitError> {
    let repo = Repository::open(git_dir).map_err(GitError::git("opening the repository"))?;
    let writer = Writer {
        repo: &repo,
        created: RefCell::default(),
    };
    if sink == Sink::Loose {
        return f(&writer);
    }
    let odb = repo
        .odb()
        .map_err(GitError::git("opening the object database"))?;
    // Higher priority than the loose and pack backends, so that new objects land here.
    let mempack = odb
        .add_new_mempack_backend(1000)
        .map_err(GitError::git("creating the in-memory object store"))?;
    let result = f(&writer);
    let created = writer.created.take();
    if sink == Sink::Pack && result.is_ok() && !created.is_empty() {
        let err = GitError::git("packing the new objects");
        let mut builder = repo.packbuilder().map_err(&err)?;
        builder.set_threads(0); // as many as there are cores
        for id in created {
            builder.insert_object(id, None).map_err(&err)?;
        }
        let mut pack = Buf::new();
        builder.write_buf(&mut pack).map_err(&err)?;
        let mut out = odb
            .packwriter()
            .map_err(GitError::git("writing the pack"))?;
        out.write_all(&pack).map_err(|source| GitError::Io {
            context: "writing the pack".into(),
            source,
        })?;
        out.commit().map_err(GitError::git("indexing the pack"))?;
    }
    mempack
        .reset()
        .map_err(GitError::git("freeing the in-memory object store"))?;
    result
}
