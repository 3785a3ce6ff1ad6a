//! Reusing the trees of VMs whose render inputs did not change: a sync renders only the VMs
//! whose digest ([`crate::render::reuse`]) it has not seen, and takes every other VM's
//! directory as the tree an earlier render of the same digest gave.
//!
//! The record is a memo of the render, not of the branch: digest → the id of the tree the VM's
//! directory rendered to. It holds whatever the branch's subtree holds now, as trees are
//! content-addressed and a VM's directory is a function of its digest's inputs alone; so it is
//! right for any base, and a hand edit cannot enter it (it maps to what meshvm rendered, not to
//! what is committed). A reused directory enters the rendered [`Files`] as one entry with Git's
//! tree mode ([`TREE_MODE`]); the plan compares it as one entry where the committed tree holds
//! the same tree, and reads its files from the repository wherever anything else must be
//! compared (a hand edit inside it, another base, meshvm's own history missing), so a plan with
//! reuse lists exactly the files and hand edits a plan without it lists.
//!
//! The record is a parentless commit at [`record_ref`] (under `refs/meshvm/`, never fetched or
//! pushed: a fresh clone lacks it and its first sync renders everything), whose tree fans the
//! digests out by their first hex digit: `a/<63 hex digits>` → the VM's tree. The ref keeps those
//! trees reachable, so repacks keep them. Written after every sync that writes; a cache, not
//! state: best effort.

use std::collections::{BTreeMap, HashMap};

use git2::{ObjectType, Oid, Repository, Signature, Time};
use sha2::{Digest as _, Sha256};

use super::plan::{self, Files};
use super::{GitError, Options, Target, commit::TRAILER_PATH};
use crate::render::Rendered;
use crate::render::reuse::{Digest, VmDigest};
use crate::spec::CheckedFleet;

/// Git's mode for a tree entry: a reused VM directory in [`Files`].
pub const TREE_MODE: i32 = 0o040000;

/// Which VMs a sync takes from the record instead of rendering them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reuse {
    /// Every VM's directory and digest, in fleet order: the next record.
    pub vms: Vec<VmDigest>,
    /// The VMs not rendered: directory (relative to `gitops.path`) → the tree it renders to.
    pub reused: BTreeMap<String, Oid>,
    /// By fleet index: whether the VM is reused (not rendered).
    skipped: Vec<bool>,
    /// The record commit the reused trees were read from.
    record: Option<Oid>,
}

impl Reuse {
    /// Whether the VM with this index in fleet order is taken from the record.
    pub fn is_reused(&self, index: usize) -> bool {
        self.skipped.get(index).copied().unwrap_or(false)
    }

    /// Reuse of the VMs of `vms` whose digest `recorded` holds.
    pub fn of(vms: Vec<VmDigest>, recorded: &HashMap<Digest, Oid>) -> Reuse {
        let mut reused = BTreeMap::new();
        let skipped = vms
            .iter()
            .map(|vm| match recorded.get(&vm.digest) {
                Some(&id) => {
                    reused.insert(vm.dir.clone(), id);
                    true
                }
                None => false,
            })
            .collect();
        Reuse {
            vms,
            reused,
            skipped,
            record: None,
        }
    }
}

/// Renders `fleet` for a sync with `opts`, leaving out every VM the target repository's
/// record holds; the reuse goes into [`Options::reuse`] of that sync.
pub fn render(fleet: &CheckedFleet, opts: &Options) -> (Rendered, Reuse) {
    let digests = crate::render::reuse::vm_digests(fleet);
    let reuse = prepare(opts, &fleet.gitops.path, digests);
    let rendered = crate::render::render_vms(fleet, |i| !reuse.is_reused(i));
    (rendered, reuse)
}

/// The reuse for a sync of `path` with `opts`: the VMs of `vms` the target repository's record
/// holds. Nothing is reused when there is no repository or record yet (a first sync, a fresh
/// clone), and nothing is written here.
pub fn prepare(opts: &Options, path: &str, vms: Vec<VmDigest>) -> Reuse {
    let repo = match &opts.target {
        Target::Path(dir) => Repository::open(dir).ok(),
        Target::Url(url) => {
            Repository::open_bare(super::target::cache_path(&opts.cache_dir, url)).ok()
        }
    };
    let Some(repo) = repo else {
        return Reuse::of(vms, &HashMap::new());
    };
    Reuse {
        record: record_commit(&repo, path),
        ..Reuse::of(vms, &recorded(&repo, path))
    }
}

fn record_commit(repo: &Repository, path: &str) -> Option<Oid> {
    let reference = repo.find_reference(&record_ref(path)).ok()?;
    reference.target()
}

/// Under the repository's lock: every reused tree is still there. The record was read before
/// the lock; when another sync replaced it meanwhile, a repack may have dropped a tree only
/// the old record kept.
pub(super) fn check_still_there(
    repo: &Repository,
    path: &str,
    reuse: &Reuse,
) -> Result<(), GitError> {
    if reuse.reused.is_empty() || record_commit(repo, path) == reuse.record {
        return Ok(());
    }
    let odb = repo
        .odb()
        .map_err(GitError::git("opening the object database"))?;
    match reuse.reused.iter().find(|(_, id)| !odb.exists(**id)) {
        None => Ok(()),
        Some((dir, id)) => Err(GitError::Internal(format!(
            "the tree {id} of {dir}, taken from an earlier render, left the repository while \
             this sync waited for another one; run the sync again"
        ))),
    }
}

/// The ref of `path`'s record (hashed: a path need not be a valid ref name).
pub fn record_ref(path: &str) -> String {
    let hash = Sha256::digest(path.as_bytes());
    let hex: String = hash[..10].iter().map(|b| format!("{b:02x}")).collect();
    format!("refs/meshvm/reuse/{hex}")
}

/// The record of `path`: digest → tree; empty when there is none or it cannot be read.
pub fn recorded(repo: &Repository, path: &str) -> HashMap<Digest, Oid> {
    let mut out = HashMap::new();
    let Some(commit) = repo
        .find_reference(&record_ref(path))
        .ok()
        .and_then(|r| r.peel_to_commit().ok())
    else {
        return out;
    };
    let message = commit.message_raw().unwrap_or("");
    if super::commit::trailer(message, TRAILER_PATH).as_deref() != Some(path) {
        return out;
    }
    let Ok(root) = commit.tree() else {
        return out;
    };
    for fan in root.iter() {
        let Some(sub) = fan.to_object(repo).ok().and_then(|o| o.into_tree().ok()) else {
            continue;
        };
        let prefix = fan.name_bytes();
        for entry in sub.iter() {
            let mut hex = Vec::with_capacity(64);
            hex.extend_from_slice(prefix);
            hex.extend_from_slice(entry.name_bytes());
            if let (Some(digest), Some(ObjectType::Tree)) = (parse_hex(&hex), entry.kind()) {
                out.insert(digest, entry.id());
            }
        }
    }
    out
}

fn parse_hex(hex: &[u8]) -> Option<Digest> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in hex.chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

/// Records, after a sync that wrote, the tree each VM's directory rendered to: the reused ones'
/// trees, and the rendered ones' from `rendered` (the sync's files, reused directories as
/// trees). A rendered VM whose tree is not in the repository is left out. Best effort.
pub(super) fn record(repo: &Repository, path: &str, reuse: &Reuse, rendered: &Files) {
    let Ok(odb) = repo.odb() else {
        return;
    };
    let needs_ids = reuse.vms.len() > reuse.reused.len();
    let ids = if needs_ids {
        match plan::tree_ids(rendered) {
            Ok((_, ids)) => ids,
            Err(_) => return,
        }
    } else {
        Default::default()
    };
    // Fan-out by the digest's first hex digit; each bucket's entries sorted by name (all are trees
    // with names of one length, so byte order is Git's order).
    let mut fans: BTreeMap<u8, BTreeMap<Digest, Oid>> = BTreeMap::new();
    // Sixteen fans: a one-VM change writes one fan tree, the root and the commit, and a first
    // sync 18 loose objects (well under `maintenance`'s repack threshold).
    for vm in &reuse.vms {
        let id = match reuse.reused.get(&vm.dir) {
            Some(&id) => id,
            None => match ids.get(&vm.dir) {
                Some(&id) if odb.exists(id) => id,
                _ => continue,
            },
        };
        fans.entry(vm.digest[0] >> 4)
            .or_default()
            .insert(vm.digest, id);
    }
    let mut root = Vec::new();
    for (first, entries) in &fans {
        let mut bytes = Vec::with_capacity(entries.len() * 90);
        for (digest, id) in entries {
            bytes.extend_from_slice(b"40000 ");
            const HEX: &[u8; 16] = b"0123456789abcdef";
            let hex: Vec<u8> = digest
                .iter()
                .flat_map(|b| [HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]])
                .collect();
            bytes.extend_from_slice(&hex[1..]);
            bytes.push(0);
            bytes.extend_from_slice(id.as_bytes());
        }
        let Some(id) = write_tree(&odb, &bytes) else {
            return;
        };
        root.extend_from_slice(format!("40000 {first:x}\0").as_bytes());
        root.extend_from_slice(id.as_bytes());
    }
    let Some(root) = write_tree(&odb, &root) else {
        return;
    };
    let current = repo
        .find_reference(&record_ref(path))
        .ok()
        .and_then(|r| r.peel_to_commit().ok());
    if current.is_some_and(|c| c.tree_id() == root) {
        return;
    }
    let (Ok(tree), Ok(who)) = (
        repo.find_tree(root),
        Signature::new(super::DEFAULT_NAME, super::DEFAULT_EMAIL, &Time::new(0, 0)),
    ) else {
        return;
    };
    let message =
        format!("meshvm: the trees these VM render inputs give\n\n{TRAILER_PATH}: {path}\n");
    if let Ok(id) = repo.commit(None, &who, &who, &message, &tree, &[]) {
        let _ = repo.reference(&record_ref(path), id, true, "meshvm: reuse record");
    }
}

/// Writes the tree object with these bytes unless the repository has it; its id.
fn write_tree(odb: &git2::Odb<'_>, bytes: &[u8]) -> Option<Oid> {
    let id = plan::object_id("tree", bytes);
    if odb.exists(id) {
        return Some(id);
    }
    odb.write(ObjectType::Tree, bytes).ok()
}

/// Whether `files` holds a reused directory (an entry with the tree mode).
pub fn has_trees(files: &Files) -> bool {
    files.values().any(|&(_, mode)| mode == TREE_MODE)
}

/// `files` with each tree entry for which `keep` does not hold replaced by the files of its
/// tree, read from the repository.
pub fn expand(
    repo: &Repository,
    files: &Files,
    keep: impl Fn(&str, Oid) -> bool,
) -> Result<Files, GitError> {
    let mut out = Files::new();
    for (path, &(id, mode)) in files {
        if mode != TREE_MODE || keep(path, id) {
            out.insert(path.clone(), (id, mode));
            continue;
        }
        for (rel, entry) in plan::committed_files(repo, Some(id))? {
            out.insert(format!("{path}/{rel}"), entry);
        }
    }
    Ok(out)
}
