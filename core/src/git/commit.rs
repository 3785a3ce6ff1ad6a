//! Building a commit without a work tree: blobs and a `TreeUpdateBuilder` over the parent's
//! tree (only the subtrees on changed paths are rewritten), a message with a per-VM summary and
//! trailers, and the branch moved by compare-and-swap.
//!
//! How meshvm knows what it last committed (for hand-edit detection): each of its commits ends
//! with the trailers
//!
//! ```text
//! Meshvm-Path: clusters/cluster1
//! Meshvm-Tree: <id of the subtree at that path in this commit>
//! Meshvm-Fleet-Sha256: <sha256 of the fleet file>
//! Meshvm-Version: <meshvm version>
//! Meshvm-Inputs: <digest of everything the render read: spec::inputs>
//! ```
//!
//! The newest commit reachable from the branch tip that carries `Meshvm-Path` for the owned
//! path tells which tree meshvm wrote; whatever differs between it and the subtree at the tip
//! was changed by someone else. Trailers travel with the history (clones, pushes, fresh CI
//! caches), unlike a private ref or a state file, and several fleets can own different paths
//! of one repository.

use git2::build::TreeUpdateBuilder;
use git2::{Oid, Repository, Signature, Sort};

use super::GitError;
use super::objects::Writer;
use super::plan::{Files, Plan};

pub const TRAILER_PATH: &str = "Meshvm-Path";
pub const TRAILER_TREE: &str = "Meshvm-Tree";
pub const TRAILER_FLEET: &str = "Meshvm-Fleet-Sha256";
pub const TRAILER_VERSION: &str = "Meshvm-Version";
pub const TRAILER_INPUTS: &str = "Meshvm-Inputs";

/// The id of Git's empty tree: what an absent subtree counts as.
pub fn empty_tree_id() -> Oid {
    Oid::from_str("4b825dc642cb6eb9a060e54bf8d69288fbee4904").expect("a valid id")
}

/// The subtree meshvm last wrote at `path`, searching from `tip`: `Some(None)` when no commit
/// of meshvm's for that path is reachable.
pub fn last_written_tree(
    repo: &Repository,
    tip: Option<Oid>,
    path: &str,
) -> Result<Option<Oid>, GitError> {
    Ok(last_meshvm_commit(repo, tip, path)?.map(|(_, tree)| tree))
}

/// The newest commit of meshvm's for `path` reachable from `tip`, with the subtree it wrote.
pub fn last_meshvm_commit(
    repo: &Repository,
    tip: Option<Oid>,
    path: &str,
) -> Result<Option<(Oid, Oid)>, GitError> {
    let Some(tip) = tip else {
        return Ok(None);
    };
    let err = GitError::git("walking the history for meshvm's last commit");
    let mut walk = repo.revwalk().map_err(err)?;
    walk.set_sorting(Sort::TOPOLOGICAL | Sort::TIME)
        .map_err(GitError::git("walking the history"))?;
    walk.push(tip)
        .map_err(GitError::git("walking the history"))?;
    for id in walk {
        let id = id.map_err(GitError::git("walking the history"))?;
        let commit = repo
            .find_commit(id)
            .map_err(GitError::git("reading a commit"))?;
        if let Some(tree) = trailers_of(commit.message_raw().unwrap_or(""), path) {
            return Ok(Some((id, tree)));
        }
    }
    Ok(None)
}

/// The value of the trailer `key` of a commit message (the last one, if repeated).
pub fn trailer(message: &str, key: &str) -> Option<String> {
    let trailers = git2::message_trailers_strs(message).ok()?;
    trailers
        .iter()
        .rfind(|(k, _)| *k == key)
        .map(|(_, v)| v.to_owned())
}

/// The `Meshvm-Tree` of a meshvm commit message for `path`.
pub fn trailers_of(message: &str, path: &str) -> Option<Oid> {
    let trailers = git2::message_trailers_strs(message).ok()?;
    let mut owns = false;
    let mut tree = None;
    for (key, value) in trailers.iter() {
        match key {
            TRAILER_PATH => owns = value == path,
            TRAILER_TREE => tree = Oid::from_str(value).ok(),
            _ => {}
        }
    }
    if owns { tree } else { None }
}

/// True when the commit is one of meshvm's for `path`.
pub fn is_meshvm_commit(repo: &Repository, id: Oid, path: &str) -> bool {
    repo.find_commit(id)
        .ok()
        .and_then(|c| trailers_of(c.message_raw().unwrap_or(""), path))
        .is_some()
}

/// What a commit records about the fleet.
pub struct Meta<'a> {
    pub fleet_sha256: &'a str,
    pub version: &'a str,
    /// The digest of the render's inputs, when known: the no-op shortcut's key.
    pub render_inputs: Option<&'a str>,
    /// Trailers after meshvm's own (`Options::extra_trailers`).
    pub extra_trailers: &'a [(String, String)],
}

/// Most names listed per line of the message; the rest are counted.
const NAMES_SHOWN: usize = 20;

/// The commit message: a summary line, the VMs per change, and the trailers.
pub fn message(plan: &Plan, subtree: Oid, meta: &Meta<'_>) -> String {
    let v = &plan.vms;
    let mut parts = Vec::new();
    for (n, what) in [
        (v.added.len(), "added"),
        (v.changed.len(), "changed"),
        (v.removed.len(), "removed"),
        (v.moved.len(), "moved"),
    ] {
        if n > 0 {
            parts.push(format!("{n} {what}"));
        }
    }
    let others = plan.other_files().count();
    let summary = match (parts.is_empty(), others) {
        (true, n) => format!("{n} file{} changed", if n == 1 { "" } else { "s" }),
        (false, _) => format!("VMs {}", parts.join(", ")),
    };
    let mut msg = format!("meshvm: sync {}: {summary}\n\n", plan.path);
    for (label, vms) in [
        ("Added", &v.added),
        ("Changed", &v.changed),
        ("Removed", &v.removed),
    ] {
        if vms.is_empty() {
            continue;
        }
        let names: Vec<&str> = vms
            .iter()
            .take(NAMES_SHOWN)
            .map(|v| v.name.as_str())
            .collect();
        let more = vms.len().saturating_sub(NAMES_SHOWN);
        let tail = if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        };
        msg.push_str(&format!("{label}: {}{tail}\n", names.join(", ")));
    }
    if !v.moved.is_empty() {
        let moves: Vec<String> = v
            .moved
            .iter()
            .take(NAMES_SHOWN)
            .map(|m| {
                format!(
                    "{} ({}/{} → {}/{})",
                    m.from.name, m.from.namespace, m.from.group, m.to.namespace, m.to.group
                )
            })
            .collect();
        let more = v.moved.len().saturating_sub(NAMES_SHOWN);
        let tail = if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        };
        msg.push_str(&format!("Moved: {}{tail}\n", moves.join(", ")));
    }
    if others > 0 {
        msg.push_str(&format!(
            "Other files changed: {others} (kustomizations, mesh resources)\n"
        ));
    }
    if !plan.overwrites.is_empty() {
        msg.push_str(&format!(
            "Overwrote {} hand-edited file(s) (--force)\n",
            plan.overwrites.len()
        ));
    }
    msg.push_str(&format!(
        "\n{TRAILER_PATH}: {}\n{TRAILER_TREE}: {subtree}\n{TRAILER_FLEET}: {}\n{TRAILER_VERSION}: {}\n",
        plan.path, meta.fleet_sha256, meta.version
    ));
    if let Some(inputs) = meta.render_inputs {
        msg.push_str(&format!("{TRAILER_INPUTS}: {inputs}\n"));
    }
    for (key, value) in meta.extra_trailers {
        msg.push_str(&format!("{key}: {value}\n"));
    }
    msg
}

/// Writes the changed blobs and the updated trees onto `base_tree` (or the empty tree) and
/// returns the new root tree and the new subtree at `path`.
///
/// The subtree's trees are built in memory from the rendered ids (`plan::trees`); those on
/// changed paths are written, the others are the base's own. Above the subtree, a
/// `TreeUpdateBuilder` sets the one entry at `path` on the base's root, so everything outside
/// `path` is carried over untouched.
pub fn build_tree<'d>(
    w: &Writer<'_, 'd>,
    base_tree: Option<Oid>,
    path: &str,
    plan: &Plan,
    blobs: &'d super::plan::Blobs,
    rendered_ids: &Files,
    mut on_blob: impl FnMut(usize, usize),
) -> Result<(Oid, Oid), GitError> {
    let repo = w.repo;
    let prefix = path.len() + 1;
    // The subtree's directories on changed paths: the trees that change. Its root always does.
    let mut dirs = std::collections::BTreeSet::new();
    for change in &plan.files {
        let mut p = &change.path[prefix..];
        while let Some((dir, _)) = p.rsplit_once('/') {
            if !dirs.insert(dir) {
                break; // this directory and its parents are in already
            }
            p = dir;
        }
    }
    let total = plan.files.len();
    for (i, change) in plan.files.iter().enumerate() {
        // A reused VM directory's entry is a tree, not a blob: it is not among the blobs.
        if let Some((id, bytes)) = change.new.and_then(|id| Some((id, blobs.get(&id)?))) {
            w.blob(id, bytes)?;
        }
        on_blob(i + 1, total);
    }
    let subtree = if rendered_ids.is_empty() {
        None
    } else {
        Some(super::plan::trees(rendered_ids, &mut |dir, id, bytes| {
            if dir.is_empty() {
                // The update below inserts it into its parent, which libgit2 checks.
                let written = w.readable_tree(bytes)?;
                debug_assert_eq!(written, id);
            } else if dirs.contains(dir) {
                w.tree(id, bytes)?;
            }
            Ok(())
        })?)
    };
    // The directories above the subtree: the trees the update reads and rewrites.
    let ancestors: Vec<&str> = path.match_indices('/').map(|(i, _)| &path[..i]).collect();
    if let Some(id) = base_tree {
        w.import_trees(id, ancestors.iter().copied())?;
    }
    let base = match base_tree {
        Some(id) => repo.find_tree(id),
        None => repo
            .treebuilder(None)
            .and_then(|b| b.write())
            .and_then(|id| repo.find_tree(id)),
    }
    .map_err(GitError::git("reading the base tree"))?;
    let mut update = TreeUpdateBuilder::new();
    match subtree {
        Some(id) => {
            update.upsert(path, id, git2::FileMode::Tree);
        }
        None if super::plan::subtree_id(&base, path).is_some() => {
            update.remove(path);
        }
        None => {}
    }
    let root = update
        .create_updated(repo, &base)
        .map_err(GitError::git("writing the updated tree"))?;
    let root_tree = repo
        .find_tree(root)
        .map_err(GitError::git("reading the new tree"))?;
    w.created(root);
    for dir in ancestors {
        if let Some(id) = super::plan::subtree_id(&root_tree, dir) {
            w.created(id);
        }
    }
    Ok((root, subtree.unwrap_or_else(empty_tree_id)))
}

/// Creates the commit object (no reference is moved here).
pub fn create_commit(
    w: &Writer<'_, '_>,
    tree: Oid,
    parent: Option<Oid>,
    author: &Signature<'_>,
    committer: &Signature<'_>,
    message: &str,
) -> Result<Oid, GitError> {
    let repo = w.repo;
    let tree = repo
        .find_tree(tree)
        .map_err(GitError::git("reading the new tree"))?;
    if let Some(id) = parent {
        w.import(id)?;
    }
    let parent = parent
        .map(|id| repo.find_commit(id))
        .transpose()
        .map_err(GitError::git("reading the parent commit"))?;
    let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
    let id = repo
        .commit(None, author, committer, message, &tree, &parents)
        .map_err(GitError::git("writing the commit"))?;
    w.created(id);
    Ok(id)
}

/// Moves `refname` from `old` (`None`: it must not exist) to `new`, failing if someone moved it
/// in between.
pub fn move_ref(
    repo: &Repository,
    refname: &str,
    old: Option<Oid>,
    new: Oid,
    log: &str,
) -> Result<(), GitError> {
    let result = match old {
        Some(old) => repo.reference_matching(refname, new, true, old, log),
        None => repo.reference(refname, new, false, log),
    };
    match result {
        Ok(_) => Ok(()),
        Err(e)
            if matches!(
                e.code(),
                git2::ErrorCode::Modified | git2::ErrorCode::Exists | git2::ErrorCode::Locked
            ) =>
        {
            Err(GitError::Raced {
                refname: refname.to_owned(),
            })
        }
        Err(e) => Err(GitError::git("moving the branch")(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::git::plan::{self, Files};
    use crate::render::layout::vm_dir;

    fn files(paths: &[(&str, u8)]) -> Files {
        paths
            .iter()
            .map(|(p, v)| {
                let id = Oid::hash_object(git2::ObjectType::Blob, &[*v]).unwrap();
                ((*p).to_owned(), (id, i32::from(git2::FileMode::Blob)))
            })
            .collect()
    }

    #[test]
    fn message_summarizes_per_vm_and_ends_with_trailers() {
        let vm = |name: &str| format!("{}/workloadentry.yaml", vm_dir("apps", "web", name));
        let (a, b, c, d) = (vm("web-1"), vm("web-2"), vm("web-3"), vm("web-4"));
        let old = files(&[(&a, 1), (&b, 1), ("mesh/ns.yaml", 1)]);
        let mut new_paths = vec![(a.as_str(), 2), (c.as_str(), 1), (d.as_str(), 1)];
        new_paths.push(("mesh/ns.yaml", 2));
        let new = files(&new_paths);
        let p = plan::plan("clusters/c1", "main", None, &old, &new, &[]);
        let meta = Meta {
            fleet_sha256: "ab12",
            version: "0.1.0",
            render_inputs: None,
            extra_trailers: &[],
        };
        let msg = message(&p, empty_tree_id(), &meta);
        insta::assert_snapshot!(msg, @r"
        meshvm: sync clusters/c1: VMs 2 added, 1 changed, 1 removed

        Added: web-3, web-4
        Changed: web-1
        Removed: web-2
        Other files changed: 1 (kustomizations, mesh resources)

        Meshvm-Path: clusters/c1
        Meshvm-Tree: 4b825dc642cb6eb9a060e54bf8d69288fbee4904
        Meshvm-Fleet-Sha256: ab12
        Meshvm-Version: 0.1.0
        ");
        assert_eq!(trailers_of(&msg, "clusters/c1"), Some(empty_tree_id()));
        assert_eq!(trailers_of(&msg, "clusters/other"), None);
    }

    #[test]
    fn long_lists_are_cut() {
        let old = Files::new();
        let names: Vec<String> = (0..25)
            .map(|i| format!("{}/x", vm_dir("a", "g", &format!("vm-{i:02}"))))
            .collect();
        let new = files(&names.iter().map(|n| (n.as_str(), 0)).collect::<Vec<_>>());
        let p = plan::plan("p", "main", None, &old, &new, &[]);
        let msg = message(
            &p,
            empty_tree_id(),
            &Meta {
                fleet_sha256: "0",
                version: "0",
                render_inputs: None,
                extra_trailers: &[],
            },
        );
        assert!(msg.contains("vm-19 and 5 more\n"), "{msg}");
    }
}
