//! `FileTree`: the rendered output, an ordered map from relative path to bytes, and the one
//! place that writes such a tree to disk.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

/// Mode of an ordinary file.
pub const MODE_PUBLIC: u32 = 0o644;
/// Mode of a file holding a secret (the istio-token, user-data).
pub const MODE_PRIVATE: u32 = 0o600;

/// One file of a tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    pub bytes: Vec<u8>,
    pub mode: u32,
}

/// Relative path (always `/`-separated, never `..`) → file. Ordered, so iteration and
/// serialization are deterministic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileTree {
    files: BTreeMap<String, File>,
}

impl FileTree {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a public file, replacing any file at that path.
    pub fn insert(&mut self, path: impl Into<String>, bytes: impl Into<Vec<u8>>) {
        self.insert_with_mode(path, bytes, MODE_PUBLIC);
    }

    /// Adds a file readable by its owner only.
    pub fn insert_private(&mut self, path: impl Into<String>, bytes: impl Into<Vec<u8>>) {
        self.insert_with_mode(path, bytes, MODE_PRIVATE);
    }

    pub fn insert_with_mode(
        &mut self,
        path: impl Into<String>,
        bytes: impl Into<Vec<u8>>,
        mode: u32,
    ) {
        let path = path.into();
        debug_assert!(is_safe_relative_path(&path), "unsafe tree path {path:?}");
        self.files.insert(
            path,
            File {
                bytes: bytes.into(),
                mode,
            },
        );
    }

    /// Moves every file of `other` under `prefix/`.
    pub fn extend_under(&mut self, prefix: &str, other: FileTree) {
        for (path, file) in other.files {
            let path = if prefix.is_empty() {
                path
            } else {
                format!("{prefix}/{path}")
            };
            self.files.insert(path, file);
        }
    }

    pub fn get(&self, path: &str) -> Option<&File> {
        self.files.get(path)
    }

    pub fn contains(&self, path: &str) -> bool {
        self.files.contains_key(path)
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &File)> {
        self.files.iter().map(|(p, f)| (p.as_str(), f))
    }

    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.files.keys().map(String::as_str)
    }

    /// Writes the tree as `dir`, replacing what was there, so that `dir` never holds a
    /// half-written set: the files go to a temporary sibling first, which is then renamed.
    pub fn write_dir_atomically(&self, dir: &Path) -> io::Result<()> {
        let parent = match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        fs::create_dir_all(&parent)?;
        let staging = tempfile::Builder::new()
            .prefix(".meshvm-staging-")
            .tempdir_in(&parent)?;
        self.write_into(staging.path())?;
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

    /// Writes every file below `root`, creating directories; files are created with their
    /// mode from the start, so a secret is never readable by others, even briefly.
    ///
    /// Each directory is made once, parents first, and the files are then written on all
    /// cores: creating files is most of the time a large tree takes.
    pub fn write_into(&self, root: &Path) -> io::Result<()> {
        let mut dirs = std::collections::BTreeSet::new();
        for path in self.files.keys() {
            let mut p = path.as_str();
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
        self.files.par_iter().try_for_each(|(path, file)| {
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
}

impl IntoIterator for FileTree {
    type Item = (String, File);
    type IntoIter = std::collections::btree_map::IntoIter<String, File>;
    fn into_iter(self) -> Self::IntoIter {
        self.files.into_iter()
    }
}

impl<'a> IntoIterator for &'a FileTree {
    type Item = (&'a String, &'a File);
    type IntoIter = std::collections::btree_map::Iter<'a, String, File>;
    fn into_iter(self) -> Self::IntoIter {
        self.files.iter()
    }
}

/// A relative path that stays inside the tree: not empty, no leading `/`, no `.` or `..`
/// components, no empty components.
pub fn is_safe_relative_path(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && path
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
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
        first.write_dir_atomically(&out).unwrap();
        let mut second = FileTree::new();
        second.insert("a/new.txt", "new");
        second.insert_private("token", "secret");
        second.write_dir_atomically(&out).unwrap();
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
    fn safe_paths() {
        assert!(is_safe_relative_path("a/b.yaml"));
        for bad in ["", "/a", "a/../b", "./a", "a//b", ".."] {
            assert!(!is_safe_relative_path(bad), "{bad}");
        }
    }
}
