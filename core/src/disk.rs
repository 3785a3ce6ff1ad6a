//! The edge that writes a [`FileTree`] to disk: the only place meshvm creates files of a
//! rendered tree (`meshvm render -o`, `meshvm vm files -o`).

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use sha2::{Digest, Sha256};

use crate::tree::FileTree;

/// The file in a directory written by [`write_owned_dir`] that lists what meshvm wrote there,
/// in `sha256sum` format (`sha256sum -c .meshvm-files` checks it): the proof of what a later
/// run may replace.
pub const MANIFEST: &str = ".meshvm-files";

/// Writes `tree` as `dir`, as [`write_dir_atomically`] does, plus the [`MANIFEST`] of the
/// files written, so that a later run can tell them from anything else ([`in_the_way`]).
pub fn write_owned_dir(tree: &FileTree, dir: &Path) -> io::Result<()> {
    replace_dir(tree, dir, true, &|_, _| {})
}

/// [`write_owned_dir`], calling `progress(done, total)` as files are written (from the
/// writing threads, in no particular order of files; `done` counts up to `total`).
pub fn write_owned_dir_with_progress(
    tree: &FileTree,
    dir: &Path,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> io::Result<()> {
    replace_dir(tree, dir, true, progress)
}

/// The manifest of `tree`: one `sha256  path` line per file, in path order.
fn manifest(tree: &FileTree) -> String {
    tree.iter()
        .map(|(path, file)| format!("{}  {path}\n", hex(&Sha256::digest(&file.bytes))))
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Something in a directory that meshvm did not write there (or that changed since).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InTheWay {
    /// Relative to the directory; a directory ends in `/`.
    pub path: String,
    /// The file is one meshvm wrote, but its content changed since.
    pub changed: bool,
}

impl std::fmt::Display for InTheWay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.changed {
            write!(f, "{} (changed since meshvm wrote it)", self.path)
        } else {
            f.write_str(&self.path)
        }
    }
}

/// What replacing `dir` as a whole would delete that meshvm did not write: every entry not in
/// the directory's [`MANIFEST`] (a directory meshvm did not make is listed once, as `name/`),
/// every listed file whose content changed, and anything that is not a plain file or
/// directory. Empty for a missing or empty directory, or an untouched earlier tree.
pub fn in_the_way(dir: &Path) -> io::Result<Vec<InTheWay>> {
    match fs::symlink_metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
        Ok(m) if !m.is_dir() => {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                "it is not a directory",
            ));
        }
        Ok(_) => {}
    }
    let listed: std::collections::BTreeMap<String, String> =
        match fs::read_to_string(dir.join(MANIFEST)) {
            Ok(text) => text
                .lines()
                .filter_map(|l| l.split_once("  "))
                .map(|(sum, path)| (path.to_owned(), sum.to_owned()))
                .collect(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Default::default(),
            Err(e) => return Err(e),
        };
    let mut made_dirs = std::collections::BTreeSet::new();
    for path in listed.keys() {
        let mut p = path.as_str();
        while let Some((parent, _)) = p.rsplit_once('/') {
            made_dirs.insert(parent.to_owned());
            p = parent;
        }
    }
    let mut files = Vec::new();
    let mut out = Vec::new();
    let mut todo = vec![String::new()];
    while let Some(rel) = todo.pop() {
        for entry in fs::read_dir(dir.join(&rel))? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let path = if rel.is_empty() {
                name.into_owned()
            } else {
                format!("{rel}/{name}")
            };
            let kind = entry.file_type()?;
            if kind.is_dir() && made_dirs.contains(&path) {
                todo.push(path);
            } else if kind.is_dir() {
                out.push(InTheWay {
                    path: format!("{path}/"),
                    changed: false,
                });
            } else if kind.is_file() && path == MANIFEST {
            } else if kind.is_file() && listed.contains_key(&path) {
                files.push(path);
            } else {
                out.push(InTheWay {
                    path,
                    changed: false,
                });
            }
        }
    }
    // Hashing is most of the time on a large tree: on all cores.
    let changed: Vec<InTheWay> = files
        .par_iter()
        .map(|path| {
            let bytes = fs::read(dir.join(path))?;
            Ok(
                (hex(&Sha256::digest(&bytes)) != listed[path]).then(|| InTheWay {
                    path: path.clone(),
                    changed: true,
                }),
            )
        })
        .collect::<io::Result<Vec<_>>>()?
        .into_iter()
        .flatten()
        .collect();
    out.extend(changed);
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// Writes `tree` as `dir`, replacing what was there, so that `dir` never holds a
/// half-written set: the files go to a temporary sibling first, which is then renamed.
pub fn write_dir_atomically(tree: &FileTree, dir: &Path) -> io::Result<()> {
    replace_dir(tree, dir, false, &|_, _| {})
}

fn replace_dir(
    tree: &FileTree,
    dir: &Path,
    with_manifest: bool,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> io::Result<()> {
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent)?;
    remove_abandoned(&parent);
    // Locked while this process works in it: the next run removes it only when unlocked.
    let ((staging, lock), _registered) = crate::interrupt::make_dir_removed_on_interrupt(|| {
        let staging = tempfile::Builder::new()
            .prefix(STAGING_PREFIX)
            .tempdir_in(&parent)?;
        let lock = fs::File::open(staging.path())?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)?;
        let path = staging.path().to_path_buf();
        Ok(((staging, lock), path))
    })?;
    write_files(tree, staging.path(), progress)?;
    if with_manifest {
        fs::write(staging.path().join(MANIFEST), manifest(tree))?;
    }
    // The staging directory is private by default; the result should look like any
    // directory the user makes.
    fs::set_permissions(staging.path(), fs::Permissions::from_mode(0o755))?;
    let what = || format!("{} was replaced", dir.display());
    if fs::symlink_metadata(dir).is_ok() {
        // One atomic step: the staging directory and DIR trade places; the old tree, now in the
        // staging directory, is then removed.
        crate::interrupt::critical(what, || {
            rustix::fs::renameat_with(
                rustix::fs::CWD,
                staging.path(),
                rustix::fs::CWD,
                dir,
                rustix::fs::RenameFlags::EXCHANGE,
            )
            .map_err(io::Error::from)
        })
        .or_else(|_| replace_by_two_renames(staging.path(), dir, &parent))?;
    } else {
        crate::interrupt::critical(what, || fs::rename(staging.path(), dir))?;
        let _ = staging.keep();
        return Ok(());
    }
    // `staging` holds the old tree now; dropping it removes it.
    drop(lock);
    staging.close()
}

/// Where `renameat2(RENAME_EXCHANGE)` is not supported (some file systems): DIR goes aside,
/// the staged tree takes its place, and DIR's old tree moves into the staging path, which
/// the caller removes.
fn replace_by_two_renames(staged: &Path, dir: &Path, parent: &Path) -> io::Result<()> {
    let aside = tempfile::Builder::new()
        .prefix(STAGING_PREFIX)
        .tempdir_in(parent)?;
    let aside_path = aside.path().join("old");
    crate::interrupt::critical(
        || format!("{} was replaced", dir.display()),
        || -> io::Result<()> {
            fs::rename(dir, &aside_path)?;
            if let Err(e) = fs::rename(staged, dir) {
                let _ = fs::rename(&aside_path, dir);
                return Err(e);
            }
            fs::rename(&aside_path, staged)
        },
    )
}

/// The prefix of the temporary directories beside an output directory.
pub const STAGING_PREFIX: &str = ".meshvm-staging-";
/// The prefix earlier versions used for the old tree while replacing it.
const OLD_PREFIX: &str = ".meshvm-old-";

/// Removes the temporary directories an interrupted or killed run left in `parent`: those no
/// running meshvm holds the lock of. Best effort: what cannot be removed is left.
pub fn remove_abandoned(parent: &Path) -> usize {
    let Ok(entries) = fs::read_dir(parent) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with(STAGING_PREFIX) || name.starts_with(OLD_PREFIX))
            || !entry.file_type().is_ok_and(|t| t.is_dir())
        {
            continue;
        }
        let Ok(handle) = fs::File::open(entry.path()) else {
            continue;
        };
        let free = rustix::fs::flock(
            &handle,
            rustix::fs::FlockOperation::NonBlockingLockExclusive,
        )
        .is_ok();
        if free && fs::remove_dir_all(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Writes every file of `tree` below `root`, creating directories; files are created with their
/// mode from the start, so a secret is never readable by others, even briefly.
///
/// Each directory is made once, parents first, and the files are then written on all
/// cores: creating files is most of the time a large tree takes.
pub fn write_into(tree: &FileTree, root: &Path) -> io::Result<()> {
    write_files(tree, root, &|_, _| {})
}

fn write_files(
    tree: &FileTree,
    root: &Path,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> io::Result<()> {
    let mut dirs = std::collections::BTreeSet::new();
    for path in tree.paths() {
        let mut p = path;
        while let Some((dir, _)) = p.rsplit_once('/') {
            if !dirs.insert(dir) {
                break; // this directory and its parents are in already
            }
            p = dir;
        }
    }
    fs::create_dir_all(root)?;
    // Sorted, so a directory comes before what is inside it.
    for dir in dirs {
        let dir = root.join(dir);
        match fs::create_dir(&dir) {
            Err(e) if !(e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir()) => {
                return Err(e);
            }
            _ => {}
        }
    }
    // What rayon does for a BTreeMap too: split a Vec of the entries.
    let files: Vec<_> = tree.iter().collect();
    let (done, total) = (std::sync::atomic::AtomicUsize::new(0), files.len());
    files.par_iter().try_for_each(|&(path, file)| {
        if crate::interrupt::stopping() {
            return Err(io::Error::from(io::ErrorKind::Interrupted));
        }
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(file.mode)
            .open(root.join(path))?;
        out.write_all(&file.bytes)?;
        // The process umask may have narrowed the mode; secrets stay narrow either way.
        out.set_permissions(fs::Permissions::from_mode(file.mode))?;
        progress(
            done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1,
            total,
        );
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_atomically_and_replaces_old_content() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        let mut first = FileTree::new();
        first.insert("a/old.txt", "old");
        write_dir_atomically(&first, &out).unwrap();
        let mut second = FileTree::new();
        second.insert("a/new.txt", "new");
        second.insert_private("token", "secret");
        write_dir_atomically(&second, &out).unwrap();
        assert!(!out.join("a/old.txt").exists());
        assert_eq!(fs::read_to_string(out.join("a/new.txt")).unwrap(), "new");
        let mode = fs::metadata(out.join("token"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let leftovers: Vec<_> = fs::read_dir(tmp.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no staging directories left behind");
    }

    #[test]
    fn the_next_run_removes_what_an_interrupted_one_left_but_not_a_running_one() {
        let tmp = tempfile::tempdir().unwrap();
        let abandoned = [".meshvm-staging-a1b2c3", ".meshvm-old-d4e5f6"];
        for name in abandoned {
            fs::create_dir_all(tmp.path().join(name).join("workloads/x")).unwrap();
            fs::write(tmp.path().join(name).join("workloads/x/f"), "x").unwrap();
        }
        // One a running meshvm is writing into: locked.
        let running = tmp.path().join(".meshvm-staging-running");
        fs::create_dir(&running).unwrap();
        let lock = fs::File::open(&running).unwrap();
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).unwrap();
        fs::write(tmp.path().join(".meshvm-staging-file"), "not a directory").unwrap();
        let mut tree = FileTree::new();
        tree.insert("a", "a");
        write_owned_dir(&tree, &tmp.path().join("out")).unwrap();
        let mut left: Vec<String> = fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [".meshvm-staging-file", ".meshvm-staging-running", "out"]
        );
    }

    #[test]
    fn only_what_meshvm_wrote_unchanged_is_replaceable() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        assert_eq!(in_the_way(&out).unwrap(), []);
        let mut tree = FileTree::new();
        tree.insert("a/b/file.yaml", "x");
        tree.insert("top.md", "y");
        write_owned_dir(&tree, &out).unwrap();
        assert_eq!(in_the_way(&out).unwrap(), [], "an untouched earlier tree");

        fs::create_dir_all(out.join(".git/objects")).unwrap();
        fs::write(out.join(".git/HEAD"), "ref").unwrap();
        fs::write(out.join("a/notes.txt"), "mine").unwrap();
        fs::write(out.join("top.md"), "edited").unwrap();
        std::os::unix::fs::symlink("top.md", out.join("a/b/link")).unwrap();
        let found: Vec<String> = in_the_way(&out)
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            found,
            [
                ".git/",
                "a/b/link",
                "a/notes.txt",
                "top.md (changed since meshvm wrote it)"
            ]
        );

        // A directory without a manifest: everything in it is someone else's.
        let plain = tmp.path().join("plain");
        fs::create_dir_all(plain.join("sub")).unwrap();
        fs::write(plain.join("README.md"), "generated by **meshvm**").unwrap();
        let found: Vec<String> = in_the_way(&plain)
            .unwrap()
            .into_iter()
            .map(|w| w.path)
            .collect();
        assert_eq!(found, ["README.md", "sub/"]);
        fs::write(tmp.path().join("file"), "").unwrap();
        assert!(in_the_way(&tmp.path().join("file")).is_err());
    }
}
