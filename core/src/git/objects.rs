//! The one place Git objects are written.
//!
//! A sync of a large fleet writes tens of thousands of blobs and trees; one loose file each
//! would cost as many inodes and fsyncs. Above a small count the objects go into one packfile
//! with its index, built from exactly the objects this sync created (`git_mempack_dump` would
//! instead pack everything reachable from the new commit: the whole tree, every time). Small
//! updates (a VM added) stay loose: many tiny packs are worse than a few loose objects. A dry
//! run writes into libgit2's in-memory object backend (mempack) and drops it, so nothing
//! reaches the disk.
//!
//! A pack is streamed to its file as the objects come: the subtree's trees as they are built,
//! the blobs (borrowed from the rendered tree) compressed at the end. Nothing is held twice:
//! a pack built in a mempack and read back held every tree three times (mempack, libgit2's
//! object cache, the chunk being compressed), 45 MB of a 50,000-VM sync's peak. Only the
//! objects libgit2 itself must read during the sync (the subtree's root, the trees above it
//! that a `TreeUpdateBuilder` writes, the commit) go through a mempack, in an object database
//! of its own that holds nothing else: libgit2 looks each new object up before writing it,
//! and when it is found nowhere (which is what "new" means) it rescans the repository's pack
//! directory, a few system calls per object that took a third of a cold sync of 10,000 VMs.
//! The base objects the update reads (the trees on changed paths, the parent commit) are
//! copied in first ([`Writer::import`]).
//!
//! Architecture invariant: every object write of a sync goes through a [`Writer`] inside
//! [`write_objects`], and the objects are on disk before it returns (so a reference moved
//! afterwards never points at a missing object).

use std::cell::RefCell;
use std::collections::HashSet;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use git2::{ObjectType, Odb, Oid, Repository};
use rayon::prelude::*;
use sha1::{Digest, Sha1};
use tempfile::NamedTempFile;
use zlib_rs::{Deflate, DeflateFlush, Status};

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
    /// Objects written through `repo` (into the mempack) that the pack must take.
    created: RefCell<Vec<Oid>>,
    /// For [`Sink::Pack`]: the pack being written.
    pack: Option<RefCell<PackFile<'d>>>,
}

impl<'r, 'd> Writer<'r, 'd> {
    fn new(
        repo: &'r Repository,
        source: Option<&'r Repository>,
        pack: Option<PackFile<'d>>,
    ) -> Result<Self, GitError> {
        Ok(Writer {
            repo,
            odb: repo
                .odb()
                .map_err(GitError::git("opening the object database"))?,
            source,
            created: RefCell::default(),
            pack: pack.map(RefCell::new),
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

    /// Writes the blob `data`, whose id is `id` (computed already, by `plan::hashed`).
    pub fn blob(&self, id: Oid, data: &'d [u8]) -> Result<(), GitError> {
        if let Some(pack) = &self.pack {
            // Nothing reads a new blob before it is packed: no tree is checked against it
            // (`commit::build_tree` builds the subtree's trees itself).
            return pack.borrow_mut().blob(id, data);
        }
        let written = self
            .repo
            .blob(data)
            .map_err(GitError::git("writing a file"))?;
        debug_assert_eq!(written, id);
        Ok(())
    }

    /// Writes the tree object `bytes`, whose id is `id` (computed already, by `plan::trees`).
    /// In a pack, libgit2 cannot read it through [`Writer::repo`] before the sync ends: a tree
    /// it must read (to insert it into another) goes through [`Writer::readable_tree`].
    pub fn tree(&self, id: Oid, bytes: &[u8]) -> Result<(), GitError> {
        if let Some(pack) = &self.pack {
            return pack.borrow_mut().stored_tree(id, bytes);
        }
        let written = self
            .odb
            .write(ObjectType::Tree, bytes)
            .map_err(GitError::git("writing a tree"))?;
        debug_assert_eq!(written, id);
        Ok(())
    }

    /// Writes a tree object that libgit2 reads back during the sync; its id.
    pub fn readable_tree(&self, bytes: &[u8]) -> Result<Oid, GitError> {
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
    write_objects_reporting(git_dir, sink, &mut |_, _| {}, f)
}

/// [`write_objects`], calling `on_packed(done, total)` as a pack is sealed (its last objects,
/// its checksum and index; nothing is reported for the other sinks). The blobs are compressed
/// as they are written, which the writer's caller reports.
pub fn write_objects_reporting<'d, T>(
    git_dir: &Path,
    sink: Sink,
    on_packed: &mut dyn FnMut(usize, usize),
    f: impl FnOnce(&Writer<'_, 'd>) -> Result<T, GitError>,
) -> Result<T, GitError> {
    let repo = Repository::open(git_dir).map_err(GitError::git("opening the repository"))?;
    let odb = repo
        .odb()
        .map_err(GitError::git("opening the object database"))?;
    let memory = GitError::git("creating the in-memory object store");
    match sink {
        Sink::Loose => f(&Writer::new(&repo, None, None)?),
        Sink::Discard => {
            // Higher priority than the loose and pack backends, so that new objects land here.
            let mempack = odb.add_new_mempack_backend(1000).map_err(memory)?;
            let result = Writer::new(&repo, None, None).and_then(|w| f(&w));
            mempack
                .reset()
                .map_err(GitError::git("freeing the in-memory object store"))?;
            result
        }
        Sink::Pack => {
            let scratch = Odb::new().and_then(Repository::from_odb).map_err(&memory)?;
            let scratch_odb = scratch.odb().map_err(&memory)?;
            let _mempack = scratch_odb.add_new_mempack_backend(1000).map_err(&memory)?;
            let pack = PackFile::create(&repo.commondir().join("objects").join("pack"))?;
            let writer = Writer::new(&scratch, Some(&repo), Some(pack))?;
            let result = f(&writer)?;
            let created = writer.created.take();
            let pack = writer.pack.expect("a pack writer").into_inner();
            pack.finish(&scratch_odb, created, on_packed)?;
            Ok(result)
        }
    }
}

/// Objects compressed per round: bounds the memory of the compressed entries in flight.
const PACK_CHUNK: usize = 4096;

/// A pack being written, as a `pack_git2_*` temporary (the name libgit2 uses, so that an
/// interrupted sync's are cleaned up the same way).
///
/// Whole objects, each zlib-compressed on all cores, without a search for deltas: libgit2's
/// packbuilder spent more time comparing 50,000 small files with each other than everything
/// else a cold sync of 10,000 VMs does. The pack is larger than a delta-compressed one;
/// `git gc` finds the deltas later, and a push builds its own pack anyway.
///
/// The object count in the header is known only at the end, and the pack's checksum starts
/// with the header: the count is written in place then, and the checksum read back from the
/// file (as `git fast-import` does; the pack is in the page cache, and hashing it again costs
/// what hashing it while writing did).
///
/// The index (`.idx`, version 2) is written here too, from what is known while packing: each
/// object's id, offset and CRC-32. libgit2's indexer would read the pack back, inflate every
/// object and hash it again (with its slower, collision-detecting SHA-1): a fifth of a cold
/// sync's instructions.
struct PackFile<'d> {
    dir: PathBuf,
    out: std::io::BufWriter<NamedTempFile>,
    /// Where the next entry starts.
    offset: u64,
    /// (id, offset, CRC-32 of the entry's bytes) of each object written, for the index.
    index: Vec<(Oid, u64, u32)>,
    /// Each object once: many files share their bytes.
    written: HashSet<Oid>,
    /// New blobs (borrowed from the rendered tree) waiting to be compressed, on all cores,
    /// [`PACK_CHUNK`] at a time.
    blobs: Vec<(Oid, &'d [u8])>,
}

impl<'d> PackFile<'d> {
    fn create(dir: &Path) -> Result<Self, GitError> {
        let writing = writing_in(dir);
        std::fs::create_dir_all(dir).map_err(&writing)?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, temporary(dir).map_err(&writing)?);
        // Version 2; the count (the last four bytes) is written by `finish`.
        out.write_all(b"PACK\0\0\0\x02\0\0\0\0").map_err(&writing)?;
        Ok(PackFile {
            dir: dir.to_path_buf(),
            out,
            offset: 12,
            index: Vec::new(),
            written: HashSet::new(),
            blobs: Vec::new(),
        })
    }

    fn entry(&mut self, id: Oid, entry: &[u8]) -> std::io::Result<()> {
        let mut crc = flate2::Crc::new();
        crc.update(entry);
        self.index.push((id, self.offset, crc.sum()));
        self.offset += entry.len() as u64;
        self.out.write_all(entry)
    }

    fn blob(&mut self, id: Oid, data: &'d [u8]) -> Result<(), GitError> {
        if self.written.insert(id) {
            self.blobs.push((id, data));
            if self.blobs.len() == PACK_CHUNK {
                self.compress_blobs()?;
            }
        }
        Ok(())
    }

    /// Compresses the waiting blobs and writes them.
    fn compress_blobs(&mut self) -> Result<(), GitError> {
        let entries: Vec<Vec<u8>> = self
            .blobs
            .par_iter()
            // A compressor's state is large: one per thread, reset for each object.
            .map_init(
                || Deflate::new(1, true, 15),
                |z, (_, data)| pack_entry(z, ObjectType::Blob, data),
            )
            .collect::<Result<_, std::io::Error>>()
            .map_err(GitError::io("compressing the pack"))?;
        for (i, entry) in entries.into_iter().enumerate() {
            let id = self.blobs[i].0;
            self.entry(id, &entry).map_err(writing_in(&self.dir))?;
        }
        self.blobs.clear();
        Ok(())
    }

    fn stored_tree(&mut self, id: Oid, bytes: &[u8]) -> Result<(), GitError> {
        if self.written.insert(id) {
            let entry = tree_entry(bytes).map_err(GitError::io("writing a tree"))?;
            self.entry(id, &entry).map_err(writing_in(&self.dir))?;
        }
        Ok(())
    }

    /// Writes the blobs still waiting, then the objects `created` of `from`, and makes the
    /// pack and its index part of the repository.
    fn finish(
        mut self,
        from: &Odb<'_>,
        created: Vec<Oid>,
        on_packed: &mut dyn FnMut(usize, usize),
    ) -> Result<(), GitError> {
        let writing = writing_in(&self.dir);
        self.compress_blobs()?;
        let mut z = Deflate::new(1, true, 15);
        for id in created {
            if self.written.insert(id) {
                let object = from
                    .read(id)
                    .map_err(GitError::git("reading a new object"))?;
                let entry = pack_entry(&mut z, object.kind(), object.data())
                    .map_err(GitError::io("compressing the pack"))?;
                self.entry(id, &entry).map_err(&writing)?;
            }
        }
        on_packed(self.index.len(), self.index.len());
        if self.index.is_empty() {
            return Ok(()); // the temporary goes with `self.out`
        }
        let count = u32::try_from(self.index.len())
            .map_err(|_| GitError::Internal("too many objects for one pack".into()))?;
        let pack = self.out.into_inner().map_err(|e| writing(e.into_error()))?;
        let file = pack.as_file();
        file.write_all_at(&count.to_be_bytes(), 8)
            .map_err(&writing)?;
        let mut sum = Sha1::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut at = 0;
        while at < self.offset {
            let n = file.read_at(&mut buf, at).map_err(&writing)?;
            if n == 0 {
                return Err(writing(std::io::ErrorKind::UnexpectedEof.into()));
            }
            sum.update(&buf[..n]);
            at += n as u64;
        }
        let trailer: [u8; 20] = sum.finalize().into();
        file.write_all_at(&trailer, self.offset).map_err(&writing)?;
        let mut idx = temporary(&self.dir).map_err(&writing)?;
        pack_index(self.index, &trailer, &mut idx).map_err(&writing)?;
        let name = self.dir.join(format!(
            "pack-{}",
            Oid::from_bytes(&trailer).expect("20 bytes")
        ));
        // The pack first: a pack without its index is invisible to Git.
        for (file, ext) in [(pack, "pack"), (idx, "idx")] {
            // Read-only, as Git makes them.
            use std::os::unix::fs::PermissionsExt;
            let read_only = std::fs::Permissions::from_mode(0o444);
            std::fs::set_permissions(file.path(), read_only).map_err(&writing)?;
            file.persist(name.with_extension(ext))
                .map_err(|e| writing(e.error))?;
        }
        Ok(())
    }
}

/// A temporary file in the pack directory `dir`, named as libgit2 names its own (`pack_git2_*`),
/// so that an interrupted sync's are cleaned up the same way.
fn temporary(dir: &Path) -> std::io::Result<NamedTempFile> {
    tempfile::Builder::new()
        .prefix("pack_git2_")
        .tempfile_in(dir)
}

/// The error of a failed write in the pack directory `dir`.
fn writing_in(dir: &Path) -> impl Fn(std::io::Error) -> GitError + use<> {
    let context = format!("writing a pack in {}", dir.display());
    move |e| GitError::io(context.clone())(e)
}

/// The pack index (version 2) of a pack whose objects are `objects` (id, offset, CRC-32) and
/// whose trailer is `pack_sum`.
fn pack_index(
    mut objects: Vec<(Oid, u64, u32)>,
    pack_sum: &[u8; 20],
    out: impl Write,
) -> std::io::Result<()> {
    objects.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    // Written as it is made, not built in memory first: it comes at a large sync's peak.
    let mut out = std::io::BufWriter::with_capacity(1 << 16, out);
    let mut sum = Sha1::new();
    let mut put = |bytes: &[u8]| {
        sum.update(bytes);
        out.write_all(bytes)
    };
    put(b"\xfftOc")?;
    put(&2u32.to_be_bytes())?;
    // Fan-out: how many ids start with a byte up to each value.
    let mut fanout = [0u32; 256];
    for (id, _, _) in &objects {
        fanout[usize::from(id.as_bytes()[0])] += 1;
    }
    let mut total = 0u32;
    for n in fanout {
        total += n;
        put(&total.to_be_bytes())?;
    }
    for (id, _, _) in &objects {
        put(id.as_bytes())?;
    }
    for (_, _, crc) in &objects {
        put(&crc.to_be_bytes())?;
    }
    // Offsets past 2 GiB go to a table of 8-byte offsets, the 4-byte one naming its row.
    let mut large: Vec<u64> = Vec::new();
    for &(_, offset, _) in &objects {
        let small = match u32::try_from(offset) {
            Ok(o) if o < 0x8000_0000 => o,
            _ => {
                large.push(offset);
                0x8000_0000 | u32::try_from(large.len() - 1).expect("fewer than 2^31 objects")
            }
        };
        put(&small.to_be_bytes())?;
    }
    for offset in large {
        put(&offset.to_be_bytes())?;
    }
    put(pack_sum)?;
    let sum: [u8; 20] = sum.finalize().into();
    out.write_all(&sum)?;
    out.flush()
}

/// The type and size header of a pack entry, in a buffer with room for `capacity` bytes.
fn entry_head(kind: ObjectType, size: usize, capacity: usize) -> std::io::Result<Vec<u8>> {
    let type_bits: u8 = match kind {
        ObjectType::Commit => 1,
        ObjectType::Tree => 2,
        ObjectType::Blob => 3,
        ObjectType::Tag => 4,
        ObjectType::Any => return Err(std::io::Error::other("an object without a type")),
    };
    let mut out = Vec::with_capacity(10 + capacity);
    // The size in 4 bits, then 7 bits a byte, low bits first; the high bit says "more".
    let mut size = size;
    let mut byte = (type_bits << 4) | (size & 0x0f) as u8;
    size >>= 4;
    while size > 0 {
        out.push(byte | 0x80);
        byte = (size & 0x7f) as u8;
        size >>= 7;
    }
    out.push(byte);
    Ok(out)
}

/// One undeltified pack entry: type and size header, then the zlib-compressed object (level
/// 1: zlib-rs's "quick" strategy, static Huffman codes, what suits objects of a few hundred
/// bytes; miniz_oxide built and optimised a Huffman table for each one).
fn pack_entry(z: &mut Deflate, kind: ObjectType, data: &[u8]) -> std::io::Result<Vec<u8>> {
    if kind == ObjectType::Tree {
        return tree_entry(data);
    }
    // Room for the worst case of the stream: one call compresses it all.
    let mut out = entry_head(kind, data.len(), zlib_rs::compress_bound(data.len()))?;
    let start = out.len();
    out.resize(out.capacity(), 0);
    z.reset();
    loop {
        let (read, written) = (z.total_in() as usize, start + z.total_out() as usize);
        let status = z
            .compress(&data[read..], &mut out[written..], DeflateFlush::Finish)
            .map_err(|e| std::io::Error::other(e.as_str()))?;
        match status {
            Status::StreamEnd => {
                out.truncate(start + z.total_out() as usize);
                return Ok(out);
            }
            // Never with a bound-sized buffer; grow and go on all the same.
            Status::Ok | Status::BufError => out.resize(out.len() * 2, 0),
        }
    }
}

/// The pack entry of a tree: its bytes stored, not compressed (see [`push_stored_zlib`]).
fn tree_entry(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = entry_head(ObjectType::Tree, data.len(), data.len() + 16)?;
    push_stored_zlib(&mut out, data);
    Ok(out)
}

/// `data` as a zlib stream of stored (uncompressed) deflate blocks, for trees: their object
/// ids do not compress (level 1 saved 5% of the trees' bytes, 130 KB of a 10,000-VM pack),
/// but each compressed object cost a 128 KiB reset of the compressor's hash table, a fifth
/// of a cold sync's CPU for the trees alone. Any zlib reader (Git's) reads it.
fn push_stored_zlib(out: &mut Vec<u8>, data: &[u8]) {
    // CMF: deflate, 32 KiB window; FLG: no dictionary, check bits making CMF·256+FLG a
    // multiple of 31.
    out.extend_from_slice(&[0x78, 0x01]);
    let mut blocks = data.chunks(usize::from(u16::MAX)).peekable();
    if blocks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(block) = blocks.next() {
        out.push(u8::from(blocks.peek().is_none())); // BFINAL on the last, BTYPE 00: stored
        let len = block.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(block);
    }
    out.extend_from_slice(&zlib_rs::adler32::adler32(1, data).to_be_bytes());
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::git::plan::{self, Files};

    fn pack_files(git_dir: &Path, ext: &str) -> Vec<PathBuf> {
        let mut found: Vec<PathBuf> = std::fs::read_dir(git_dir.join("objects/pack"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == ext))
            .collect();
        found.sort();
        found
    }

    /// Stored zlib streams inflate to their data, for every block count and the empty case.
    #[test]
    fn stored_zlib_streams_inflate_to_their_data() {
        use std::io::Read;
        for len in [0, 1, 300, 65_535, 65_536, 200_000] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let mut stream = Vec::new();
            push_stored_zlib(&mut stream, &data);
            let mut back = Vec::new();
            flate2::read::ZlibDecoder::new(&stream[..])
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, data, "{len} bytes");
        }
    }

    #[test]
    fn packs_are_indexed_as_libgit2_indexes_them() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(tmp.path().join("ours")).unwrap();
        // Blobs of many sizes (some shared), and trees over them.
        let data: Vec<Vec<u8>> = (0..PACK_THRESHOLD + 50)
            .map(|i| {
                format!("file {}\n", i % 280)
                    .repeat(i % 13 * 40 + 1)
                    .into_bytes()
            })
            .collect();
        let files: Files = data
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let path = format!("d{}/f{i}", i % 9);
                (path, (plan::object_id("blob", d), 0o100644))
            })
            .collect();
        let root = write_objects(repo.path(), Sink::Pack, |w| {
            for d in &data {
                w.blob(plan::object_id("blob", d), d)?;
            }
            plan::trees(&files, &mut |_, id, bytes| w.tree(id, bytes))
        })
        .unwrap();

        let (packs, idxs) = (
            pack_files(repo.path(), "pack"),
            pack_files(repo.path(), "idx"),
        );
        assert_eq!((packs.len(), idxs.len()), (1, 1), "one pack with its index");
        // libgit2's indexer, over the same pack, writes the same index.
        let theirs = Repository::init_bare(tmp.path().join("theirs")).unwrap();
        let odb = theirs.odb().unwrap();
        let mut writer = odb.packwriter().unwrap();
        writer
            .write_all(&std::fs::read(&packs[0]).unwrap())
            .unwrap();
        writer.commit().unwrap();
        let their_idx = pack_files(theirs.path(), "idx");
        assert_eq!(
            their_idx[0].file_name(),
            idxs[0].file_name(),
            "named after the pack's checksum"
        );
        assert!(
            std::fs::read(&their_idx[0]).unwrap() == std::fs::read(&idxs[0]).unwrap(),
            "the index differs from libgit2's"
        );
        // Every object reads back through a new handle.
        let fresh = Repository::open_bare(repo.path()).unwrap();
        for d in &data {
            let id = plan::object_id("blob", d);
            assert_eq!(fresh.find_blob(id).unwrap().content(), &d[..]);
        }
        assert_eq!(fresh.find_tree(root).unwrap().len(), 9);
        // No temporary is left behind.
        let left: Vec<_> = std::fs::read_dir(repo.path().join("objects/pack"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().starts_with("pack_git2_"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn offsets_past_2_gib_go_to_the_large_offset_table() {
        let id = |b: u8| Oid::from_bytes(&[b; 20]).unwrap();
        let objects = vec![
            (id(3), 0x1_0000_0000, 3),
            (id(1), 12, 1),
            (id(2), 0x8000_0000, 2),
        ];
        let mut idx = Vec::new();
        pack_index(objects, &[0xaa; 20], &mut idx).unwrap();
        let n = 3;
        let offsets = 8 + 256 * 4 + n * 20 + n * 4;
        let word = |at: usize| u32::from_be_bytes(idx[at..at + 4].try_into().unwrap());
        // Sorted by id: 1, 2, 3; the last two are past 2 GiB.
        assert_eq!(
            [word(offsets), word(offsets + 4), word(offsets + 8)],
            [12, 0x8000_0000, 0x8000_0001]
        );
        let large = offsets + n * 4;
        let quad = |at: usize| u64::from_be_bytes(idx[at..at + 8].try_into().unwrap());
        assert_eq!([quad(large), quad(large + 8)], [0x8000_0000, 0x1_0000_0000]);
        assert_eq!(idx.len(), large + 16 + 20 + 20);
        assert_eq!(
            word(8 + 255 * 4),
            3,
            "the last fan-out entry counts every object"
        );
    }
}
