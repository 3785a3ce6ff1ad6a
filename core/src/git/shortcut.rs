//! The no-op shortcut: a sync whose render inputs are those of meshvm's last commit, on a
//! branch whose subtree is still the one that commit wrote, changes nothing, and is known to
//! without loading, rendering or hashing the fleet's tree.
//!
//! The key is the `Meshvm-Inputs` trailer (`spec::inputs`: the fleet file's bytes, the root
//! certificate it names, the meshvm build). Anything else — another digest, no such trailer,
//! a hand edit below the path (the subtree differs from `Meshvm-Tree`), a push (the remote
//! must be fetched), a URL target, a checked-out branch, a repository that cannot be read —
//! gives `None`, and the caller runs the full sync, which finds and reports what there is.

use git2::Repository;

use super::commit::{self, TRAILER_INPUTS};
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
    let commit = repo.find_commit(last).ok()?;
    let message = commit.message_raw().ok()?.to_owned();
    if commit::trailer(&message, TRAILER_INPUTS).as_deref() != Some(render_inputs) {
        return None;
    }
    let tree = repo.find_commit(tip).ok()?.tree().ok()?;
    let current = plan::subtree_id(&tree, path).unwrap_or_else(commit::empty_tree_id);
    if current != written {
        return None; // edited since: the full sync lists the hand edits
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

/// Whether an interrupted sync left `pack_git2_*` temporaries in the repository.
fn left_pack_temporaries(repo: &Repository) -> bool {
    std::fs::read_dir(repo.path().join("objects").join("pack")).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("pack_git2_"))
    })
}
