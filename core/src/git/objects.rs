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
//! A pack is built in an object database of its own that holds only the mempack, not in the
//! repository's: libgit2 looks each new object up before writing it, and when it is found
//! nowhere (which is what "new" means) it rescans the repository's pack directory, a few
//! system calls per object that took a third of a cold sync of 10,000 VMs. The base objects
//! the update reads (the trees on changed paths, the parent commit) are copied in first
//! ([`Writer::import`]).
//!
//! Architecture invariant: every object write of a sync goes through a [`Writer`] inside
//! [`write_objects`], and the objects are on disk before it returns (so a reference moved
//! afterwards never points at a missing object).

use std::borrow::Cow;
use std::io::Write;
use std::path::Path;

use std::cell::RefCell;

use flate2::{Compress, Compression, FlushCompress, Status};
use git2::{ObjectType, Odb, Oid, Repository};
use rayon::prelude::*;
use sha1::{Digest, Sha1};

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
/// `'d` is the lifetime of the files' bytes (the rendered tree).
pub struct Writer<'r, 'd> {
    /// Where objects are written, and read back from.
    pub repo: &'r Repository,
    odb: Odb<'r>,
    /// The repository itself, when `repo` is a separate in-memory object database.
    source: Option<&'r Repository>,
    created: RefCell<Vec<Oid>>,
    /// For a pack: the new blobs, borrowed from the rendered tree. They are compressed
    /// straight into the pack and held nowhere else meanwhile: a copy in an object database
    /// would double the memory of a cold sync.
    blobs: RefCell<Vec<(Oid, &'d [u8])>>,
}

impl<'r, 'd> Writer<'r, 'd> {
    fn new(repo: &'r Repository, source: Option<&'r Repository>) -> Result<Self, GitError> {
        Ok(Writer {
            repo,
            odb: repo
                .odb()
                .map_err(GitError::git("opening the object database"))?,
            source,
            created: RefCell::default(),
            blobs: RefCell::default(),
        })
    }

    /// Makes an existing object of the repository readable through [`Writer::repo`]; a no-op
    /// when that is the repository itself. Imported objects are not new: they are not packed.
    pub fn import(&self, id: Oid) -> Result<(), GitError> {
        let Some(source) = self.source else {
            return Ok(());
        };
        let err = GitError::git("reading the base objects");
        let target = self.repo.odb().map_err(&err)?;
        if !target.exists(id) {
            let source = source.odb().map_err(&err)?;
            let object = source.read(id).map_err(&err)?;
            target.write(object.kind(), object.data()).map_err(&err)?;
        }
        Ok(())
    }

    /// Imports the tree `root` and its subtrees at `dirs` (paths from `root`; missing ones
    /// are skipped): what a `TreeUpdateBuilder` reads to update those directories.
    pub fn import_trees<'p>(
        &self,
        root: Oid,
        dirs: impl IntoIterator<Item = &'p str>,
    ) -> Result<(), GitError> {
        let Some(source) = self.source else {
            return Ok(());
        };
        self.import(root)?;
        let tree = source
            .find_tree(root)
            .map_err(GitError::git("reading the base tree"))?;
        for dir in dirs {
            if let Some(id) = super::plan::subtree_id(&tree, dir) {
                self.import(id)?;
            }
        }
        Ok(())
    }

    /// Writes the blob `data`, whose id is `id` (computed already, by `plan::hashed_files`).
    pub fn blob(&self, id: Oid, data: &'d [u8]) -> Result<(), GitError> {
        if self.source.is_some() {
            // Nothing reads a new blob before it is packed: no tree is checked against it
            // (`commit::build_tree` builds the subtree's trees itself).
            self.blobs.borrow_mut().push((id, data));
            return Ok(());
        }
        let written = self
            .repo
            .blob(data)
            .map_err(GitError::git("writing a file"))?;
        debug_assert_eq!(written, id);
        Ok(())
    }

    /// Writes a tree object from its bytes; its id.
    pub fn tree(&self, bytes: &[u8]) -> Result<Oid, GitError> {
        let id = self
            .odb
            .write(ObjectType::Tree, bytes)
            .map_err(GitError::git("writing a tree"))?;
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
pub fn write_objects<'d, T>(
    git_dir: &Path,
    sink: Sink,
    f: impl FnOnce(&Writer<'_, 'd>) -> Result<T, GitError>,
) -> Result<T, GitError> {
    let repo = Repository::open(git_dir).map_err(GitError::git("opening the repository"))?;
    let odb = repo
        .odb()
        .map_err(GitError::git("opening the object database"))?;
    let memory = GitError::git("creating the in-memory object store");
    match sink {
        Sink::Loose => f(&Writer::new(&repo, None)?),
        Sink::Discard => {
            // Higher priority than the loose and pack backends, so that new objects land here.
            let mempack = odb.add_new_mempack_backend(1000).map_err(memory)?;
            let result = Writer::new(&repo, None).and_then(|w| f(&w));
            mempack
                .reset()
                .map_err(GitError::git("freeing the in-memory object store"))?;
            result
        }
        Sink::Pack => {
            let scratch = Odb::new().and_then(Repository::from_odb).map_err(&memory)?;
            let scratch_odb = scratch.odb().map_err(&memory)?;
            let _mempack = scratch_odb.add_new_mempack_backend(1000).map_err(&memory)?;
            let writer = Writer::new(&scratch, Some(&repo))?;
            let result = f(&writer)?;
            let (created, blobs) = (writer.created.take(), writer.blobs.take());
            if !created.is_empty() || !blobs.is_empty() {
                write_pack(&scratch_odb, &odb, created, blobs)?;
            }
            Ok(result)
        }
    }
}

/// Objects read, compressed and written per round: bounds the memory a large pack takes.
const PACK_CHUNK: usize = 4096;

/// Writes the objects `ids` of `from`, and `blobs`, into `to` as one pack, and has libgit2
/// index it.
///
/// Whole objects, each zlib-compressed on all cores, without a search for deltas: libgit2's
/// packbuilder spent more time comparing 50,000 small files with each other than everything
/// else a cold sync of 10,000 VMs does. The pack is larger than a delta-compressed one;
/// `git gc` finds the deltas later, and a push builds its own pack anyway.
fn write_pack(
    from: &Odb<'_>,
    to: &Odb<'_>,
    ids: Vec<Oid>,
    blobs: Vec<(Oid, &[u8])>,
) -> Result<(), GitError> {
    let compressing = |e| GitError::io("compressing the pack")(e);
    // Each object once (many files share their bytes), in a fixed order.
    let mut seen = std::collections::HashSet::new();
    let mut objects: Vec<(Oid, Option<&[u8]>)> = Vec::new();
    for (id, data) in blobs {
        if seen.insert(id) {
            objects.push((id, Some(data)));
        }
    }
    for id in ids {
        if seen.insert(id) {
            objects.push((id, None));
        }
    }
    let count = u32::try_from(objects.len())
        .map_err(|_| GitError::Internal("too many objects for one pack".into()))?;
    let mut out = to.packwriter().map_err(GitError::git("writing the pack"))?;
    let mut sum = Sha1::new();
    // git2's `Write` for the pack writer says only "Write error"; libgit2's own error says
    // why (such as "No space left on device").
    let written = |_| GitError::git("writing the pack")(git2::Error::last_error(-1));
    let mut put = |bytes: &[u8]| -> Result<(), GitError> {
        sum.update(bytes);
        out.write_all(bytes).map_err(written)
    };
    put(b"PACK")?;
    put(&2u32.to_be_bytes())?;
    put(&count.to_be_bytes())?;
    let mut objects = objects.into_iter().peekable();
    while objects.peek().is_some() {
        let chunk = objects
            .by_ref()
            .take(PACK_CHUNK)
            .map(|(id, data)| match data {
                Some(data) => Ok((ObjectType::Blob, Cow::Borrowed(data))),
                None => from
                    .read(id)
                    .map(|o| (o.kind(), Cow::Owned(o.data().to_vec()))),
            })
            .collect::<Result<Vec<_>, git2::Error>>()
            .map_err(GitError::git("reading a new object"))?;
        let entries: Vec<Vec<u8>> = chunk
            .par_iter()
            // A compressor's state is large: one per thread, reset for each object.
            .map_init(
                || Compress::new(Compression::fast(), true),
                |z, (kind, data)| pack_entry(z, *kind, data),
            )
            .collect::<Result<_, _>>()
            .map_err(compressing)?;
        // One append per chunk: the indexer maps and unmaps its window on every append.
        put(&entries.concat())?;
    }
    let trailer = sum.finalize();
    out.write_all(&trailer).map_err(written)?;
    out.commit().map_err(GitError::git("indexing the pack"))?;
    Ok(())
}

/// One undeltified pack entry: type and size header, then the zlib-compressed object.
fn pack_entry(z: &mut Compress, kind: ObjectType, data: &[u8]) -> std::io::Result<Vec<u8>> {
    let type_bits: u8 = match kind {
        ObjectType::Commit => 1,
        ObjectType::Tree => 2,
        ObjectType::Blob => 3,
        ObjectType::Tag => 4,
        ObjectType::Any => {
            return Err(std::io::Error::other("an object without a type"));
        }
    };
    let mut out = Vec::with_capacity(data.len() / 2 + 64);
    // The size in 4 bits, then 7 bits a byte, low bits first; the high bit says "more".
    let mut size = data.len();
    let mut byte = (type_bits << 4) | (size & 0x0f) as u8;
    size >>= 4;
    while size > 0 {
        out.push(byte | 0x80);
        byte = (size & 0x7f) as u8;
        size >>= 7;
    }
    out.push(byte);
    z.reset();
    loop {
        // `compress_vec` fills the spare capacity only.
        out.reserve(data.len() / 2 + 64);
        let done = usize::try_from(z.total_in()).expect("in memory");
        match z
            .compress_vec(&data[done..], &mut out, FlushCompress::Finish)
            .map_err(std::io::Error::other)?
        {
            Status::StreamEnd => return Ok(out),
            Status::Ok | Status::BufError => {}
        }
    }
}
