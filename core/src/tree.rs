//! `FileTree`: the rendered output, an ordered map from relative path to bytes and mode. Pure;
//! `crate::disk` writes a tree to disk.

use std::collections::BTreeMap;

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
        // Paths are built from checked names; one that could leave the tree is a bug, caught
        // here in every build, not only in debug ones (the cost is nothing next to a write).
        assert!(is_safe_relative_path(&path), "unsafe tree path {path:?}");
        let mut bytes = bytes.into();
        // Rendered text grows by doubling; a tree of 50,000 VMs (~240,000 files, held until
        // written) carried ~a third more bytes in unused tails (massif, cold sync).
        bytes.shrink_to_fit();
        self.files.insert(path, File { bytes, mode });
    }

    /// Moves every file of `other` under `prefix/`.
    pub fn extend_under(&mut self, prefix: &str, other: FileTree) {
        assert!(
            prefix.is_empty() || is_safe_relative_path(prefix),
            "unsafe tree prefix {prefix:?}"
        );
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
    fn safe_paths() {
        assert!(is_safe_relative_path("a/b.yaml"));
        for bad in ["", "/a", "a/../b", "./a", "a//b", ".."] {
            assert!(!is_safe_relative_path(bad), "{bad}");
        }
    }
}

/// What each method of a tree promises, one by one (found by `cargo xtask mutants`).
#[cfg(test)]
mod contract {
    use super::*;

    fn sample() -> FileTree {
        let mut tree = FileTree::new();
        tree.insert("b/public", "p");
        tree.insert_private("a/secret", "s");
        tree.insert_with_mode("c/run.sh", "x", 0o755);
        tree
    }

    #[test]
    fn holds_files_with_their_modes_in_path_order() {
        let empty = FileTree::new();
        assert!(empty.is_empty());
        assert_eq!(empty.len(), 0);
        let tree = sample();
        assert!(!tree.is_empty());
        assert_eq!(tree.len(), 3);
        assert!(tree.contains("b/public") && !tree.contains("b"));
        assert_eq!(tree.get("b/public").map(|f| f.mode), Some(MODE_PUBLIC));
        assert_eq!(tree.get("a/secret").map(|f| f.mode), Some(MODE_PRIVATE));
        assert_eq!(
            tree.get("c/run.sh"),
            Some(&File {
                bytes: b"x".to_vec(),
                mode: 0o755
            })
        );
        assert_eq!(tree.get("missing"), None);
        let order = ["a/secret", "b/public", "c/run.sh"];
        assert_eq!(tree.paths().collect::<Vec<_>>(), order);
        assert_eq!(tree.iter().map(|(p, _)| p).collect::<Vec<_>>(), order);
        assert_eq!(
            (&tree).into_iter().map(|(p, _)| p).collect::<Vec<_>>(),
            order
        );
        assert_eq!(tree.into_iter().map(|(p, _)| p).collect::<Vec<_>>(), order);
    }

    #[test]
    fn extends_under_a_prefix_or_at_the_root() {
        let mut tree = FileTree::new();
        tree.extend_under("vms/one", sample());
        tree.extend_under("", sample());
        assert_eq!(tree.len(), 6);
        assert_eq!(
            tree.get("vms/one/a/secret").map(|f| f.mode),
            Some(MODE_PRIVATE)
        );
        assert!(tree.contains("a/secret"));
    }

    #[test]
    #[should_panic(expected = "unsafe tree path")]
    fn refuses_a_path_that_leaves_the_tree() {
        FileTree::new().insert("a/../../etc/passwd", "x");
    }

    #[test]
    #[should_panic(expected = "unsafe tree prefix")]
    fn refuses_a_prefix_that_leaves_the_tree() {
        FileTree::new().extend_under("../x", sample());
    }

    #[test]
    fn every_way_out_of_the_tree_is_refused() {
        for good in ["a", "a/b.yaml", "a.b/.c", "..a/b.."] {
            assert!(is_safe_relative_path(good), "{good}");
        }
        for bad in [
            "", "/", "/a", "a/", "a//b", ".", "..", "a/.", "a/..", "./a", "../a",
        ] {
            assert!(!is_safe_relative_path(bad), "{bad}");
        }
    }
}
