//! What a sync changes: the files of the committed subtree against the rendered `FileTree`,
//! grouped per VM, and the hand edits it would overwrite.

use std::collections::{BTreeMap, BTreeSet};

use git2::{FileMode, ObjectType, Oid, Repository, Tree};
use rayon::prelude::*;
use serde::Serialize;

use super::GitError;
use crate::render::layout::{vm_dir, vm_of_path};
use crate::tree::{FileTree, MODE_PRIVATE};

/// Files of a subtree: path relative to the subtree → (blob id, mode).
pub type Files = BTreeMap<String, (Oid, i32)>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    Added,
    Changed,
    Removed,
}

impl Change {
    pub fn sign(self) -> char {
        match self {
            Change::Added => '+',
            Change::Changed => '~',
            Change::Removed => '-',
        }
    }
}

/// One file sync adds, changes or removes. `path` is relative to the repository root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileChange {
    pub path: String,
    pub change: Change,
    #[serde(serialize_with = "opt_oid")]
    pub old: Option<Oid>,
    #[serde(serialize_with = "opt_oid")]
    pub new: Option<Oid>,
}

/// A VM whose files change.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct VmRef {
    pub name: String,
    pub namespace: String,
    pub group: String,
}

/// The per-VM summary of a plan.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VmChanges {
    pub added: Vec<VmRef>,
    pub changed: Vec<VmRef>,
    pub removed: Vec<VmRef>,
    /// VMs whose files leave one group's directory for another's (a renamed group, a VM
    /// moved to another group or namespace): neither added nor removed.
    pub moved: Vec<VmMove>,
}

/// A VM that changes group (or namespace): same name, another directory.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct VmMove {
    pub from: VmRef,
    pub to: VmRef,
}

/// A workload group whose directory the sync removes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct GroupRef {
    pub namespace: String,
    pub group: String,
}

/// What a sync does to the owned subtree, against the commit it builds on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// The owned subtree (`gitops.path`).
    pub path: String,
    /// The branch written to.
    pub branch: String,
    /// The commit the new one builds on; `None` when the branch does not exist yet.
    #[serde(serialize_with = "opt_oid")]
    pub base: Option<Oid>,
    pub vms: VmChanges,
    /// Every file added, changed or removed, by path.
    pub files: Vec<FileChange>,
    /// Files of the subtree that differ from what meshvm last committed (edited, added or
    /// deleted by someone else), relative to the repository root.
    pub hand_edits: Vec<String>,
    /// The hand edits this sync would overwrite or delete: sync refuses unless forced.
    pub overwrites: Vec<String>,
    /// Groups whose directory goes away. Argo CD keeps their Application (the ApplicationSet
    /// never deletes one) and the objects it applied: someone deletes them by hand.
    pub removed_groups: Vec<GroupRef>,
    /// How many VMs the committed subtree held, counted when VMs are removed (for the guard
    /// against removing most of a fleet by mistake); `None` otherwise.
    #[serde(skip)]
    pub committed_vms: Option<usize>,
    /// The unified diff of `files`, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
}

impl Plan {
    pub fn has_changes(&self) -> bool {
        !self.files.is_empty()
    }

    /// Files that belong to no VM (kustomizations, mesh resources, README).
    pub fn other_files(&self) -> impl Iterator<Item = &FileChange> {
        let prefix = self.path.len() + 1;
        self.files
            .iter()
            .filter(move |f| vm_of_path(&f.path[prefix..]).is_none())
    }
}

fn opt_oid<S: serde::Serializer>(oid: &Option<Oid>, s: S) -> Result<S::Ok, S::Error> {
    match oid {
        Some(oid) => s.serialize_str(&oid.to_string()),
        None => s.serialize_none(),
    }
}

/// Git's mode for a file of a `FileTree`. Files that hold secrets never get one: a `FileTree`
/// bound for Git must not contain the istio-token or any private file.
pub fn git_mode(path: &str, mode: u32) -> Result<i32, GitError> {
    let name = path.rsplit('/').next().unwrap_or(path);
    if mode == MODE_PRIVATE || name == "istio-token" {
        return Err(GitError::SecretInTree {
            path: path.to_owned(),
        });
    }
    Ok(if mode & 0o111 != 0 {
        FileMode::BlobExecutable.into()
    } else {
        FileMode::Blob.into()
    })
}

/// The bytes of each distinct blob of a rendered tree, by id.
pub type Blobs = std::collections::HashMap<Oid, Vec<u8>>;

/// A rendered tree as Git stores it: each file's blob id and mode by path, and each distinct
/// blob's bytes once.
#[derive(Debug)]
pub struct Hashed {
    pub files: Files,
    pub blobs: Blobs,
}

/// Hashes the files of `tree` on all cores, taking the tree apart: its paths become the keys of
/// `files` and its bytes the values of `blobs`, nothing copied, and files with equal bytes
/// (most VMs' kustomization, hosts and mesh.yaml) keep one copy. A cold sync of 50,000 VMs
/// held the tree and a copy of its paths side by side: 60 MB of its peak.
pub fn hashed(tree: FileTree) -> Result<Hashed, GitError> {
    let entries: Vec<(String, crate::tree::File)> = tree.into_iter().collect();
    let ids: Vec<(Oid, i32)> = entries
        .par_iter()
        .map(|(path, file)| Ok((object_id("blob", &file.bytes), git_mode(path, file.mode)?)))
        .collect::<Result<_, GitError>>()?;
    let mut blobs = Blobs::with_capacity(entries.len() / 2);
    let files = entries
        .into_iter()
        .zip(ids)
        .map(|((path, file), (id, mode))| {
            blobs.entry(id).or_insert(file.bytes);
            (path, (id, mode))
        })
        .collect();
    Ok(Hashed { files, blobs })
}

/// The id Git gives the object of `kind` with these bytes: SHA-1 over its header and bytes.
///
/// The `sha1` crate rather than libgit2's hash: libgit2 hashes with SHA-1DC (collision
/// detection, several times slower), which matters for objects read from elsewhere, not for
/// the ones meshvm renders itself; hashing a cold sync's files was 8% of its instructions.
pub fn object_id(kind: &str, bytes: &[u8]) -> Oid {
    use sha1::{Digest, Sha1};
    let mut h = Sha1::new();
    h.update(format!("{kind} {}\0", bytes.len()));
    h.update(bytes);
    Oid::from_bytes(&h.finalize()).expect("a SHA-1 is 20 bytes")
}

/// The files below the tree `id` (recursively); none for `None`.
pub fn committed_files(repo: &Repository, id: Option<Oid>) -> Result<Files, GitError> {
    // Nothing rendered to compare with: every committed tree is read.
    committed_files_beside(repo, id, &Files::new(), &TreeIds::new())
}

/// Directory of a subtree (relative to it, `""` for its root) → the id of its tree.
pub type TreeIds = std::collections::HashMap<String, Oid>;

/// The id of the tree that holds `files` and the id of each of its directories' trees.
pub fn tree_ids(files: &Files) -> Result<(Oid, TreeIds), GitError> {
    let mut ids = TreeIds::new();
    let root = trees(files, &mut |dir, id, _| {
        ids.insert(dir.to_owned(), id);
        Ok(())
    })?;
    Ok((root, ids))
}

/// [`committed_files`] of the tree `id`, reading only the directories whose tree differs from
/// the rendered one: where the ids are equal, so are the files (trees are content-addressed),
/// and they are taken from `rendered`. A one-VM change reads a handful of trees instead of all.
pub fn committed_files_beside(
    repo: &Repository,
    id: Option<Oid>,
    rendered: &Files,
    rendered_ids: &TreeIds,
) -> Result<Files, GitError> {
    fn visit(
        repo: &Repository,
        tree: &Tree<'_>,
        dir: &mut String,
        rendered: &Files,
        rendered_ids: &TreeIds,
        out: &mut Files,
    ) -> Result<(), GitError> {
        if rendered_ids.get(dir.as_str()) == Some(&tree.id()) {
            let prefix = if dir.is_empty() {
                String::new()
            } else {
                format!("{dir}/")
            };
            let below = rendered
                .range::<str, _>((
                    std::ops::Bound::Included(prefix.as_str()),
                    std::ops::Bound::Unbounded,
                ))
                .take_while(|(path, _)| path.starts_with(&prefix));
            out.extend(below.map(|(path, entry)| (path.clone(), *entry)));
            return Ok(());
        }
        for entry in tree.iter() {
            let len = dir.len();
            if !dir.is_empty() {
                dir.push('/');
            }
            dir.push_str(&String::from_utf8_lossy(entry.name_bytes()));
            let tree_entry = (entry.id(), super::reuse::TREE_MODE);
            if entry.kind() == Some(ObjectType::Tree)
                && rendered.get(dir.as_str()) == Some(&tree_entry)
            {
                // A reused directory, committed as it was rendered: one entry on both sides.
                out.insert(dir.clone(), tree_entry);
            } else if entry.kind() == Some(ObjectType::Tree) {
                let sub = repo
                    .find_tree(entry.id())
                    .map_err(GitError::git("reading the committed tree"))?;
                visit(repo, &sub, dir, rendered, rendered_ids, out)?;
            } else {
                out.insert(dir.clone(), (entry.id(), entry.filemode()));
            }
            dir.truncate(len);
        }
        Ok(())
    }
    let mut files = Files::new();
    let Some(id) = id else {
        return Ok(files);
    };
    let tree = repo
        .find_tree(id)
        .map_err(GitError::git("reading the committed tree"))?;
    visit(
        repo,
        &tree,
        &mut String::new(),
        rendered,
        rendered_ids,
        &mut files,
    )?;
    Ok(files)
}

/// The id of the subtree at `path` in `root`, when there is one.
pub fn subtree_id(root: &Tree<'_>, path: &str) -> Option<Oid> {
    root.get_path(std::path::Path::new(path))
        .ok()
        .filter(|e| e.kind() == Some(ObjectType::Tree))
        .map(|e| e.id())
}

/// Paths (relative to the subtree) whose id or mode differs between two file sets, in path
/// order: one walk over both (they are sorted), no lookups.
pub fn differing(old: &Files, new: &Files) -> Vec<(String, Change)> {
    use std::cmp::Ordering;
    let mut out = Vec::new();
    let (mut a, mut b) = (old.iter().peekable(), new.iter().peekable());
    loop {
        let order = match (a.peek(), b.peek()) {
            (None, None) => break,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some((pa, _)), Some((pb, _))) => pa.cmp(pb),
        };
        match order {
            Ordering::Less => {
                let (path, _) = a.next().expect("peeked");
                out.push((path.clone(), Change::Removed));
            }
            Ordering::Greater => {
                let (path, _) = b.next().expect("peeked");
                out.push((path.clone(), Change::Added));
            }
            Ordering::Equal => {
                let ((path, old_entry), (_, new_entry)) =
                    (a.next().expect("peeked"), b.next().expect("peeked"));
                if old_entry != new_entry {
                    out.push((path.clone(), Change::Changed));
                }
            }
        }
    }
    out
}

/// The id of the tree that holds `files`, as Git would compute it, without writing anything.
/// Equal to the committed subtree's id exactly when a sync has nothing to change.
pub fn tree_id(files: &Files) -> Result<Oid, GitError> {
    trees(files, &mut |_, _, _| Ok(()))
}

/// Called with each tree's directory, id and object bytes.
pub type OnTree<'a> = dyn FnMut(&str, Oid, &[u8]) -> Result<(), GitError> + 'a;

/// Builds, in memory, every tree that holds `files`, as Git writes them: `on_tree` gets each
/// one's directory (relative to the subtree, `""` for its root), id and object bytes, children
/// before their parent. Returns the root's id.
///
/// The paths of a directory are contiguous in `files`' order, so the trees are built in one
/// pass with only the directories on the current path open: no map of the whole tree (54 MiB
/// for 50,000 VMs, live at a cold sync's peak when it was one).
pub fn trees(files: &Files, on_tree: &mut OnTree<'_>) -> Result<Oid, GitError> {
    /// A directory being filled: its path and the entries seen so far.
    struct Open<'a> {
        dir: &'a str,
        entries: Vec<(&'a str, Oid, i32)>,
    }
    const TREE: i32 = 0o040000;
    fn hash(dir: Open<'_>, on_tree: &mut OnTree<'_>) -> Result<Oid, GitError> {
        let mut entries = dir.entries;
        // Git sorts a tree's entries by name, a directory's name as if it ended in `/`.
        fn key<'n>(name: &'n str, mode: i32) -> impl Iterator<Item = u8> + 'n {
            name.bytes().chain((mode == TREE).then_some(b'/'))
        }
        entries.sort_unstable_by(|x, y| key(x.0, x.2).cmp(key(y.0, y.2)));
        let mut bytes = Vec::with_capacity(entries.len() * 48);
        for (name, id, mode) in entries {
            let mode = match mode {
                TREE => "40000",
                0o100644 => "100644",
                0o100755 => "100755",
                _ => return Err(GitError::Internal(format!("file mode {mode:o} of {name}"))),
            };
            bytes.extend_from_slice(mode.as_bytes());
            bytes.push(b' ');
            bytes.extend_from_slice(name.as_bytes());
            bytes.push(0);
            bytes.extend_from_slice(id.as_bytes());
        }
        let id = object_id("tree", &bytes);
        on_tree(dir.dir, id, &bytes)?;
        Ok(id)
    }
    /// Hashes the innermost open directory and enters it in its parent.
    fn close<'a>(open: &mut Vec<Open<'a>>, on_tree: &mut OnTree<'_>) -> Result<(), GitError> {
        let dir = open.pop().expect("an open directory below the root");
        let name = dir.dir.rsplit_once('/').map_or(dir.dir, |(_, name)| name);
        let id = hash(dir, on_tree)?;
        let parent = open.last_mut().expect("the root stays open");
        parent.entries.push((name, id, TREE));
        Ok(())
    }
    let within = |parent: &str, dir: &str| {
        parent.is_empty()
            || dir == parent
            || (dir.starts_with(parent) && dir.as_bytes()[parent.len()] == b'/')
    };
    let mut open = vec![Open {
        dir: "",
        entries: Vec::new(),
    }];
    for (path, &(id, mode)) in files {
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        while !within(open.last().expect("the root").dir, dir) {
            close(&mut open, on_tree)?;
        }
        loop {
            let top = open.last().expect("the root").dir;
            if top.len() == dir.len() {
                break;
            }
            let from = if top.is_empty() { 0 } else { top.len() + 1 };
            let to = dir[from..].find('/').map_or(dir.len(), |i| from + i);
            open.push(Open {
                dir: &dir[..to],
                entries: Vec::new(),
            });
        }
        open.last_mut()
            .expect("the root")
            .entries
            .push((name, id, mode));
    }
    while open.len() > 1 {
        close(&mut open, on_tree)?;
    }
    hash(open.pop().expect("the root"), on_tree)
}

/// The plan from the committed files to the rendered ones.
pub fn plan(
    path: &str,
    branch: &str,
    base: Option<Oid>,
    committed: &Files,
    rendered: &Files,
    hand_edited: &[String],
) -> Plan {
    let full = |rel: &str| format!("{path}/{rel}");
    let files: Vec<FileChange> = differing(committed, rendered)
        .into_iter()
        .map(|(rel, change)| FileChange {
            path: full(&rel),
            change,
            old: committed.get(&rel).map(|e| e.0),
            new: rendered.get(&rel).map(|e| e.0),
        })
        .collect();

    // A VM is added when it had no files, removed when it has none left, changed otherwise.
    // Looked up for the VMs touched only: the cost follows the change, not the fleet.
    let has_files = |files: &Files, vm: &VmRef| {
        let dir = format!("{}/", vm_dir(&vm.namespace, &vm.group, &vm.name));
        files
            .range::<str, _>((
                std::ops::Bound::Included(dir.as_str()),
                std::ops::Bound::Unbounded,
            ))
            .next()
            .is_some_and(|(p, _)| p.starts_with(&dir))
    };
    let mut touched = BTreeSet::new();
    for f in &files {
        if let Some(v) = vm_of_path(&f.path[path.len() + 1..]) {
            touched.insert(VmRef {
                name: v.vm.to_owned(),
                namespace: v.namespace.to_owned(),
                group: v.group.to_owned(),
            });
        }
    }
    let mut vms = VmChanges::default();
    for vm in touched {
        match (has_files(committed, &vm), has_files(rendered, &vm)) {
            (false, _) => vms.added.push(vm),
            (true, false) => vms.removed.push(vm),
            (true, true) => vms.changed.push(vm),
        }
    }
    pair_moves(&mut vms);
    let removed_groups = removed_groups(&files, path, rendered);
    let committed_vms = (!vms.removed.is_empty()).then(|| count_vms(committed));

    let changed: BTreeSet<&str> = files.iter().map(|f| f.path.as_str()).collect();
    let hand_edits: Vec<String> = hand_edited.iter().map(|rel| full(rel)).collect();
    let overwrites = hand_edits
        .iter()
        .filter(|p| changed.contains(p.as_str()))
        .cloned()
        .collect();
    Plan {
        path: path.to_owned(),
        branch: branch.to_owned(),
        base,
        vms,
        files,
        hand_edits,
        overwrites,
        removed_groups,
        committed_vms,
        diff: None,
    }
}

/// A VM removed from one directory and added in another under the same name (VM names are
/// unique in a fleet) moved: it is listed as a move, neither added nor removed.
fn pair_moves(vms: &mut VmChanges) {
    let mut added: BTreeMap<String, VmRef> = std::mem::take(&mut vms.added)
        .into_iter()
        .map(|v| (v.name.clone(), v))
        .collect();
    let mut removed = Vec::new();
    for from in std::mem::take(&mut vms.removed) {
        match added.remove(&from.name) {
            Some(to) => vms.moved.push(VmMove { from, to }),
            None => removed.push(from),
        }
    }
    vms.removed = removed;
    vms.added = added.into_values().collect();
    vms.added.sort();
}

/// Groups with a removed file and no rendered file left below their directory.
fn removed_groups(files: &[FileChange], path: &str, rendered: &Files) -> Vec<GroupRef> {
    let mut groups = BTreeSet::new();
    for f in files.iter().filter(|f| f.change == Change::Removed) {
        let mut parts = f.path[path.len() + 1..].split('/');
        if let (Some(crate::render::layout::WORKLOADS_DIR), Some(ns), Some(group), Some(_)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        {
            groups.insert((ns, group));
        }
    }
    groups
        .into_iter()
        .filter(|(ns, group)| {
            let dir = format!("{}/", crate::render::layout::group_dir(ns, group));
            !rendered
                .range::<str, _>((
                    std::ops::Bound::Included(dir.as_str()),
                    std::ops::Bound::Unbounded,
                ))
                .next()
                .is_some_and(|(p, _)| p.starts_with(&dir))
        })
        .map(|(ns, group)| GroupRef {
            namespace: ns.to_owned(),
            group: group.to_owned(),
        })
        .collect()
}

/// The VMs that have files in `files`.
pub fn count_vms(files: &Files) -> usize {
    let mut vms: BTreeSet<&str> = BTreeSet::new();
    for (path, &(_, mode)) in files {
        let dir = if mode == super::reuse::TREE_MODE {
            // A reused VM directory: one entry for the whole directory.
            vm_of_path(&format!("{path}/-")).map(|_| path.as_str())
        } else {
            vm_of_path(path).and_then(|_| path.match_indices('/').nth(4).map(|(i, _)| &path[..i]))
        };
        vms.extend(dir);
    }
    vms.len()
}

impl Plan {
    /// When the plan removes more than half of the committed VMs, and more than one (moves
    /// are not removals; replacing the one VM of a tiny fleet is not a mass removal):
    /// (removed, committed).
    pub fn mass_removal(&self) -> Option<(usize, usize)> {
        let removed = self.vms.removed.len();
        let of = self.committed_vms?;
        (removed > 1 && removed * 2 > of).then_some((removed, of))
    }
}

/// The unified diff (`git diff` format) of the owned subtree between two root trees.
pub fn unified_diff(
    repo: &Repository,
    old_root: Option<&Tree<'_>>,
    new_root: Option<&Tree<'_>>,
    plan: &Plan,
) -> Result<String, GitError> {
    let mut opts = git2::DiffOptions::new();
    opts.context_lines(3);
    if plan.files.is_empty() {
        opts.pathspec(&plan.path);
    } else {
        // The plan's paths, matched literally: libgit2 then skips every directory on no
        // changed path instead of comparing the whole subtree (same diff: the plan lists
        // every path that differs).
        opts.disable_pathspec_match(true);
        for file in &plan.files {
            opts.pathspec(&file.path);
        }
    }
    let diff = repo
        .diff_tree_to_tree(old_root, new_root, Some(&mut opts))
        .map_err(GitError::git("computing the diff"))?;
    let mut text = Vec::new();
    diff.print(git2::DiffFormat::Patch, |_, _, line| {
        if matches!(line.origin(), '+' | '-' | ' ') {
            text.push(line.origin() as u8);
        }
        text.extend_from_slice(line.content());
        true
    })
    .map_err(GitError::git("printing the diff"))?;
    Ok(String::from_utf8_lossy(&text).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names whose order differs between plain byte order and Git's, where a directory sorts
    /// as if its name ended in `/`.
    fn tricky() -> FileTree {
        let mut t = FileTree::new();
        for path in [
            "a.txt",
            "a/x",
            "a-b/y",
            "a0",
            "b/c/d/e",
            "b/c.yaml",
            "z",
            "run.sh",
            "b/c/d/e2",
            "b/c/g",
            "b/ca/h",
            "b/c-d/i",
            "c/d/e/f/g",
        ] {
            t.insert(path, format!("{path}\n"));
        }
        t.insert_with_mode("bin/tool", "#!/bin/sh\n", 0o755);
        t
    }

    #[test]
    fn tree_ids_are_computed_as_git_writes_them() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(tmp.path()).unwrap();
        let files = hashed(tricky()).unwrap().files;
        let written = write_tree(&repo, &tricky());
        assert_eq!(tree_id(&files).unwrap(), written);
        assert_eq!(
            tree_id(&Files::new()).unwrap().to_string(),
            "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
        );
    }

    /// Writes `t` into `repo` as a tree, as a commit would.
    fn write_tree(repo: &Repository, t: &FileTree) -> Oid {
        let empty = repo
            .find_tree(repo.treebuilder(None).unwrap().write().unwrap())
            .unwrap();
        let mut update = git2::build::TreeUpdateBuilder::new();
        for (path, file) in t.iter() {
            let id = repo.blob(&file.bytes).unwrap();
            let mode = if file.mode & 0o111 != 0 {
                FileMode::BlobExecutable
            } else {
                FileMode::Blob
            };
            update.upsert(path, id, mode);
        }
        update.create_updated(repo, &empty).unwrap()
    }

    fn without(t: &FileTree, drop: fn(&str) -> bool) -> FileTree {
        let mut out = FileTree::new();
        for (path, file) in t.iter().filter(|(p, _)| !drop(p)) {
            out.insert_with_mode(path, file.bytes.clone(), file.mode);
        }
        out
    }

    /// Reading only the directories whose tree differs from the rendered one gives every
    /// committed file, whatever differs: a file's bytes or mode, a file or directory added or
    /// removed on either side, nothing, or everything.
    #[test]
    fn committed_files_beside_the_rendered_ones_are_all_the_committed_files() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(tmp.path()).unwrap();
        let committed_tree = tricky();
        let committed = write_tree(&repo, &committed_tree);
        let all = committed_files(&repo, Some(committed)).unwrap();
        let edits: Vec<fn(&mut FileTree)> = vec![
            |_| {},
            |t| t.insert("b/c/d/e", "changed\n"),
            |t| t.insert_with_mode("run.sh", "run.sh\n", 0o755),
            |t| t.insert("b/c/d/new", "new\n"),
            |t| t.insert("new-dir/f", "new\n"),
            |t| *t = without(t, |p| p.starts_with("b/")),
            |t| *t = without(t, |p| p == "a/x"),
            |t| *t = FileTree::new(),
        ];
        for (i, edit) in edits.iter().enumerate() {
            let mut rendered_tree = committed_tree.clone();
            edit(&mut rendered_tree);
            let rendered = hashed(rendered_tree).unwrap().files;
            let (_, ids) = tree_ids(&rendered).unwrap();
            assert_eq!(
                committed_files_beside(&repo, Some(committed), &rendered, &ids).unwrap(),
                all,
                "edit {i}"
            );
            assert!(
                committed_files_beside(&repo, None, &rendered, &ids)
                    .unwrap()
                    .is_empty()
            );
        }
    }

    #[test]
    fn differing_lists_each_changed_path_once_in_order() {
        let old = hashed(tricky()).unwrap().files;
        let mut t = tricky();
        t.insert("a/x", "changed\n");
        t.insert("a/new", "new\n");
        let mut new = hashed(t).unwrap().files;
        new.remove("z");
        assert_eq!(
            differing(&old, &new),
            vec![
                ("a/new".to_owned(), Change::Added),
                ("a/x".to_owned(), Change::Changed),
                ("z".to_owned(), Change::Removed),
            ]
        );
        assert!(differing(&old, &old).is_empty());
    }

    #[test]
    fn each_change_has_the_sign_the_plan_prints() {
        // `gitops diff` and `sync` print these before every path (found by cargo-mutants:
        // nothing in the library's tests looked at them).
        let signs = [Change::Added, Change::Changed, Change::Removed].map(Change::sign);
        assert_eq!(signs, ['+', '~', '-']);
    }
}
