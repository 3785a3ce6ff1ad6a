//! The edge that writes a [`FileTree`] to disk: the only place meshvm creates files of a
//! rendered tree (`meshvm render -o`, `meshvm vm files -o`).

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::tree::FileTree;

/// Writes `tree` as `dir`, replacing what was there, so that `dir` never holds a
/// half-written set: the files go to a temporary sibling first, which is then renamed.
pub fn write_dir_atomically(tree: &FileTree, dir: &Path) -> io::Result<()> {
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent)?;
    let staging = tempfile::Builder::new()
        .prefix(".meshvm-staging-")
        .tempdir_in(&parent)?;
    write_into(tree, staging.path())?;
    // The staging directory is private by default; the result should look like any
    // directory the user makes.
    fs::set_permissions(staging.path(), fs::Permissions::from_mode(0o755))?;
    let staged = staging.keep();
    if dir.exists() {
        let old = tempfile::Builder::new()
            .prefix(".meshvm-old-")
            .tempdir_in(&parent)?
            .keep();
        fs::rename(dir, &old).inspect_err(|_| {
            let _ = fs::remove_dir_all(&staged);
        })?;
        if let Err(e) = fs::rename(&staged, dir) {
            let _ = fs::rename(&old, dir);
            let _ = fs::remove_dir_all(&staged);
            return Err(e);
        }
        fs::remove_dir_all(&old)?;
    } else if let Err(e) = fs::rename(&staged, dir) {
        let _ = fs::remove_dir_all(&staged);
        return Err(e);
    }
    Ok(())
}

/// Writes every file of `tree` below `root`, creating directories; files are created with their
/// mode from the start, so a secret is never readable by others, even briefly.
///
/// Each directory is made once, parents first, and the files are then written on all
/// cores: creating files is most of the time a large tree takes.
pub fn write_into(tree: &FileTree, root: &Path) -> io::Result<()> {
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
    files.par_iter().try_for_each(|&(path, file)| {
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(file.mode)
            .open(root.join(path))?;
        out.write_all(&file.bytes)?;
        // The process umask may have narrowed the mode; secrets stay narrow either way.
        out.set_permissions(fs::Permissions::from_mode(file.mode))
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
}
