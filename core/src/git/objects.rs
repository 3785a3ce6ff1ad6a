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

use git2::{ObjectType, Odb, Oid, Repository};
use rayon::prelude::*;
use sha1::{Digest, Sha1};
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
    write_objects_reporting(git_dir, sink, &mut |_, _| {}, f)
}

/// [`write_objects`], calling `on_packed(done, total)` as a pack's objects are compressed and
/// written (the long part of a cold sync; nothing is reported for the other sinks).
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
                write_pack(
                    &scratch_odb,
                    &repo.commondir().join("objects"),
                    created,
                    blobs,
                    on_packed,
                )?;
            }
            Ok(result)
        }
    }
}

/// Objects read, compressed and written per round: bounds the memory a large pack takes.
const PACK_CHUNK: usize = 4096;

/// Writes the objects `ids` of `from`, and `blobs`, as one pack with its index into
/// `objects_dir/pack`.
///
/// Whole objects, each zlib-compressed on all cores, without a search for deltas: libgit2's
/// packbuilder spent more time comparing 50,000 small files with each other than everything
/// else a cold sync of 10,000 VMs does. The pack is larger than a delta-compressed one;
/// `git gc` finds the deltas later, and a push builds its own pack anyway.
///
/// The index (`.idx`, version 2) is written here too, from what is known while packing: each
/// object's id, offset and CRC-32. libgit2's indexer would read the pack back, inflate every
/// object and hash it again (with its slower, collision-detecting SHA-1): a fifth of a cold
/// sync's instructions. Both files are written as `pack_git2_*` temporaries (the name
/// libgit2 uses, so that an interrupted sync's are cleaned up the same way) and renamed into
/// place, the pack first: a pack without its index is invisible to Git.
fn write_pack(
    from: &Odb<'_>,
    objects_dir: &Path,
    ids: Vec<Oid>,
    blobs: Vec<(Oid, &[u8])>,
    on_packed: &mut dyn FnMut(usize, usize),
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
    let pack_dir = objects_dir.join("pack");
    let context = format!("writing a pack in {}", pack_dir.display());
    let writing = |e| GitError::io(context.clone())(e);
    std::fs::create_dir_all(&pack_dir).map_err(&writing)?;
    let temporary = || {
        tempfile::Builder::new()
            .prefix("pack_git2_")
            .tempfile_in(&pack_dir)
            .map_err(&writing)
    };
    let mut pack = std::io::BufWriter::with_capacity(1 << 20, temporary()?);
    let mut sum = Sha1::new();
    let mut put = |bytes: &[u8]| -> std::io::Result<()> {
        sum.update(bytes);
        pack.write_all(bytes)
    };
    let mut header = Vec::with_capacity(12);
    header.extend_from_slice(b"PACK");
    header.extend_from_slice(&2u32.to_be_bytes());
    header.extend_from_slice(&count.to_be_bytes());
    put(&header).map_err(&writing)?;
    let mut offset = header.len() as u64;
    // (id, offset, CRC-32 of the entry's bytes) of each object, for the index.
    let mut index: Vec<(Oid, u64, u32)> = Vec::with_capacity(objects.len());
    let mut objects = objects.into_iter().peekable();
    while objects.peek().is_some() {
        let chunk = objects
            .by_ref()
            .take(PACK_CHUNK)
            .map(|(id, data)| match data {
                Some(data) => Ok((id, ObjectType::Blob, Cow::Borrowed(data))),
                None => from
                    .read(id)
                    .map(|o| (id, o.kind(), Cow::Owned(o.data().to_vec()))),
            })
            .collect::<Result<Vec<_>, git2::Error>>()
            .map_err(GitError::git("reading a new object"))?;
        let entries: Vec<(Oid, Vec<u8>, u32)> = chunk
            .par_iter()
            // A compressor's state is large: one per thread, reset for each object.
            .map_init(
                || Deflate::new(1, true, 15),
                |z, (id, kind, data)| {
                    let entry = pack_entry(z, *kind, data)?;
                    let mut crc = flate2::Crc::new();
                    crc.update(&entry);
                    Ok((*id, entry, crc.sum()))
                },
            )
            .collect::<Result<_, std::io::Error>>()
            .map_err(compressing)?;
        for (id, entry, crc) in entries {
            index.push((id, offset, crc));
            offset += entry.len() as u64;
            put(&entry).map_err(&writing)?;
        }
        on_packed(index.len(), count as usize);
    }
    let trailer: [u8; 20] = sum.finalize().into();
    pack.write_all(&trailer).map_err(&writing)?;
    let pack = pack.into_inner().map_err(|e| writing(e.into_error()))?;
    let mut idx = temporary()?;
    idx.write_all(&pack_index(index, &trailer))
        .map_err(&writing)?;
    let name = pack_dir.join(format!(
        "pack-{}",
        Oid::from_bytes(&trailer).expect("20 bytes")
    ));
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

/// The pack index (version 2) of a pack whose objects are `objects` (id, offset, CRC-32) and
/// whose trailer is `pack_sum`.
fn pack_index(mut objects: Vec<(Oid, u64, u32)>, pack_sum: &[u8; 20]) -> Vec<u8> {
    objects.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut out = Vec::with_capacity(8 + 256 * 4 + objects.len() * 28 + 40);
    out.extend_from_slice(b"\xfftOc");
    out.extend_from_slice(&2u32.to_be_bytes());
    // Fan-out: how many ids start with a byte up to each value.
    let mut fanout = [0u32; 256];
    for (id, _, _) in &objects {
        fanout[usize::from(id.as_bytes()[0])] += 1;
    }
    let mut total = 0u32;
    for n in fanout {
        total += n;
        out.extend_from_slice(&total.to_be_bytes());
    }
    for (id, _, _) in &objects {
        out.extend_from_slice(id.as_bytes());
    }
    for (_, _, crc) in &objects {
        out.extend_from_slice(&crc.to_be_bytes());
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
        out.extend_from_slice(&small.to_be_bytes());
    }
    for offset in large {
        out.extend_from_slice(&offset.to_be_bytes());
    }
    out.extend_from_slice(pack_sum);
    let sum: [u8; 20] = Sha1::digest(&out).into();
    out.extend_from_slice(&sum);
    out
}

/// One undeltified pack entry: type and size header, then the zlib-compressed object (level
/// 1: zlib-rs's "quick" strategy, static Huffman codes, what suits objects of a few hundred
/// bytes; miniz_oxide built and optimised a Huffman table for each one).
fn pack_entry(z: &mut Deflate, kind: ObjectType, data: &[u8]) -> std::io::Result<Vec<u8>> {
    let type_bits: u8 = match kind {
        ObjectType::Commit => 1,
        ObjectType::Tree => 2,
        ObjectType::Blob => 3,
        ObjectType::Tag => 4,
        ObjectType::Any => {
            return Err(std::io::Error::other("an object without a type"));
        }
    };
    // Room for the header and the worst case of the stream: one call compresses it all.
    let mut out = Vec::with_capacity(10 + zlib_rs::compress_bound(data.len()));
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
    if kind == ObjectType::Tree {
        push_stored_zlib(&mut out, data);
        return Ok(out);
    }
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
            plan::trees(&files, &mut |_, id, bytes| {
                assert_eq!(w.tree(bytes)?, id);
                Ok(())
            })
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
        let idx = pack_index(objects, &[0xaa; 20]);
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
