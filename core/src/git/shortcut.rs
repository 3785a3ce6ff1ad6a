//! The no-op shortcut: a sync whose render inputs are those of meshvm's last commit, on a
//! branch whose subtree is still the one that commit wrote, changes nothing, and is known to
//! without loading, rendering or hashing the fleet's tree.
//!
//! The key is the `Meshvm-Inputs` trailer (`spec::inputs`: the fleet file's bytes, the root
//! certificate it names, the meshvm build), or the record a full sync that committed nothing
//! left (below). Anything else — another digest, no such trailer,
//! a hand edit below the path (the subtree differs from `Meshvm-Tree`), a push (the remote
//! must be fetched), a URL target, a checked-out branch, a repository that cannot be read —
//! gives `None`, and the caller runs the full sync, which finds and reports what there is.

use git2::{Oid, Repository, Signature, Time};
use sha2::{Digest, Sha256};

use crate::spec::inputs::GlanceCache;

use super::commit::{self, TRAILER_INPUTS, TRAILER_PATH};
use super::plan::{self, Plan};
use super::sync::{checked_out, ref_target};
use super::{Mode, Options, PushOutcome, Report, Target};

/// The report of a sync of `path` that changes nothing, when the render inputs with digest
/// `render_inputs` are those of meshvm's last commit and its subtree is untouched; `None` when
/// that cannot be shown cheaply (then run [`super::sync`]).
pub fn unchanged(path: &str, render_inputs: &str, opts: &Options) -> Option<Report> {
    let Target::Path(dir) = &opts.target else {
        return None; // a URL target always fetches
    };
    if opts.push
        || !crate::tree::is_safe_relative_path(path)
        || crate::spec::names::branch(&opts.branch).is_err()
    {
        return None;
    }
    let repo = Repository::open(dir).ok()?;
    if left_pack_temporaries(&repo) {
        return None; // the full sync removes them under the lock
    }
    if opts.mode.writes() && checked_out(&repo, &opts.branch).is_some() {
        return None; // the full sync refuses it
    }
    let tip = ref_target(&repo, &format!("refs/heads/{}", opts.branch))?;
    let (last, written) = commit::last_meshvm_commit(&repo, Some(tip), path).ok()??;
    let tree = repo.find_commit(tip).ok()?.tree().ok()?;
    let current = plan::subtree_id(&tree, path).unwrap_or_else(commit::empty_tree_id);
    if current != written {
        return None; // edited since: the full sync lists the hand edits
    }
    let commit = repo.find_commit(last).ok()?;
    let message = commit.message_raw().ok()?.to_owned();
    let committed_with = commit::trailer(&message, TRAILER_INPUTS);
    if committed_with.as_deref() != Some(render_inputs)
        && recorded(&repo, path) != Some((render_inputs.to_owned(), current))
    {
        return None;
    }
    Some(Report {
        plan: Plan {
            path: path.to_owned(),
            branch: opts.branch.clone(),
            base: Some(tip),
            vms: Default::default(),
            files: Vec::new(),
            hand_edits: Vec::new(),
            overwrites: Vec::new(),
            removed_groups: Vec::new(),
            committed_vms: None,
            diff: (opts.mode == Mode::DryRunWithDiff).then(String::new),
        },
        repo_dir: dir.clone(),
        commit: None,
        head: Some(tip),
        push: PushOutcome::NotAsked,
    })
}

/// Where a sync into `target` remembers what glances at fleet files found
/// (`spec::inputs::GlanceCache`): `meshvm/glance/` in the repository's git directory, beside
/// the records below. `None` for a URL target (which never takes the shortcut) or a
/// repository that cannot be opened.
pub fn glance_cache(target: &Target) -> Option<GlanceCache> {
    let Target::Path(dir) = target else {
        return None;
    };
    let repo = Repository::open(dir).ok()?;
    Some(GlanceCache::new(repo.path().join("meshvm").join("glance")))
}

/// The ref that holds the record of `path`'s last commit-less sync: one per path (hashed, as
/// a path need not be a valid ref name), under `refs/meshvm/`, which no refspec fetches or pushes.
pub fn record_ref(path: &str) -> String {
    let hash = Sha256::digest(path.as_bytes());
    let hex: String = hash[..10].iter().map(|b| format!("{b:02x}")).collect();
    format!("refs/meshvm/inputs/{hex}")
}

/// Records, after a full sync that committed nothing, that the render inputs `render_inputs`
/// give the subtree `subtree` at `path`: without it the last commit's `Meshvm-Inputs` would
/// still name the old inputs (a comment-only fleet edit, a new build that renders the same
/// tree), and every later sync would take the full path until a real change is committed.
///
/// The record is a parentless commit whose tree is `subtree` and whose message carries the
/// path and the digest, with a fixed identity and time (the same record is the same object),
/// at [`record_ref`]. It is a cache, not state: a fresh clone lacks it and a sync then just
/// takes the full path once. Best effort (the sync itself is done).
pub(super) fn record(repo: &Repository, path: &str, render_inputs: &str, subtree: Oid) {
    if recorded(repo, path) == Some((render_inputs.to_owned(), subtree)) {
        return;
    }
    let Ok(tree) = repo.find_tree(subtree) else {
        return;
    };
    let Ok(who) = Signature::new(super::DEFAULT_NAME, super::DEFAULT_EMAIL, &Time::new(0, 0))
    else {
        return;
    };
    let message = format!(
        "meshvm: these render inputs give this tree\n\n{TRAILER_PATH}: {path}\n\
         {TRAILER_INPUTS}: {render_inputs}\n"
    );
    if let Ok(id) = repo.commit(None, &who, &who, &message, &tree, &[]) {
        let _ = repo.reference(&record_ref(path), id, true, "meshvm: render inputs");
    }
}

/// The render inputs and subtree of `path`'s record, when there is a well-formed one.
fn recorded(repo: &Repository, path: &str) -> Option<(String, Oid)> {
    let commit = repo
        .find_reference(&record_ref(path))
        .ok()?
        .peel_to_commit()
        .ok()?;
    let message = commit.message_raw().ok()?;
    if commit::trailer(message, TRAILER_PATH).as_deref() != Some(path) {
        return None;
    }
    Some((commit::trailer(message, TRAILER_INPUTS)?, commit.tree_id()))
}

/// Whether an interrupted sync left `pack_git2_*` temporaries in the repository.
fn left_pack_temporaries(repo: &Repository) -> bool {
    std::fs::read_dir(repo.path().join("objects").join("pack")).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("pack_git2_"))
    })
}
