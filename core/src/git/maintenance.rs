//! Keeping a long-lived repository small, as `git gc --auto` and `git maintenance`'s
//! incremental repack do, bounded much lower than git's defaults so that size stays flat:
//!
//! - past [`Thresholds::loose_objects`] loose objects, the loose objects alone go into one new
//!   delta-compressed pack (work proportional to what is loose, not to the repository);
//! - past [`Thresholds::packs`] packs (not counting `.keep` packs), everything is consolidated
//!   into one pack, deltas found across the whole history.
//!
//! A sync of a few VMs writes a hundred or so small loose objects, each a file of at least one
//! 4 KiB block; a few hundred syncs of them were tens of MB before git's 6,700-object bound,
//! while the same history packed with deltas is a fraction of one.
//!
//! libgit2 has no `gc`; its pack builder writes the pack, and this module decides when and
//! removes what the new pack makes redundant. Nothing is ever lost: a new pack holds every
//! object it replaces (the consolidation: every object of the old packs and every loose object,
//! reachable or not, as `git repack -a --keep-unreachable`), and only those files are deleted.
//! Unreachable objects are never pruned (a dropped commit stays recoverable). A pack or object
//! another process writes meanwhile is left alone, and `.keep` packs are never deleted. Runs
//! under the sync's repository lock.

use std::path::{Path, PathBuf};

use git2::{Oid, Repository};

/// When to repack. git's defaults (`gc.auto` 6,700, `gc.autoPackLimit` 50) let a repository
/// synced a few hundred times grow tenfold before the first repack; these keep it flat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// Pack the loose objects when more than this (the size above which a sync writes a pack
    /// rather than loose objects: about two syncs of 30 VMs).
    pub loose_objects: usize,
    /// Consolidate every pack into one when more than this, `.keep` packs not counted.
    pub packs: usize,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            loose_objects: super::objects::PACK_THRESHOLD,
            packs: 16,
        }
    }
}

/// What [`auto_repack`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repack {
    /// Below both thresholds: nothing.
    None,
    /// The loose objects went into one new pack.
    Loose,
    /// Every pack and loose object went into one pack.
    All,
}

/// What [`auto_repack`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Loose objects found.
    pub loose_objects: usize,
    /// Packs found, `.keep` packs not counted.
    pub packs: usize,
    pub repacked: Repack,
}

/// Packs the loose objects of `repo`, or consolidates all its packs, when it is past `limits`;
/// otherwise leaves it alone.
pub fn auto_repack(repo: &Repository, limits: Thresholds) -> Result<Outcome, git2::Error> {
    let objects = objects_dir(repo);
    let loose = loose_objects(&objects);
    let packs = packs(&objects);
    let counted = packs.iter().filter(|stem| !kept(stem)).count();
    let pack_loose = loose.len() > limits.loose_objects;
    let repacked = if counted + usize::from(pack_loose) > limits.packs {
        repack(repo, &objects, &loose, &packs)?;
        Repack::All
    } else if pack_loose {
        pack_loose_objects(repo, &objects, &loose)?;
        Repack::Loose
    } else {
        Repack::None
    };
    Ok(Outcome {
        loose_objects: loose.len(),
        packs: counted,
        repacked,
    })
}

/// The loose objects and packs (`.keep` packs not counted) of the repository whose git
/// directory is `git_dir`: what [`Thresholds`] bound after every writing sync.
pub fn census(git_dir: &Path) -> (usize, usize) {
    let objects = git_dir.join("objects");
    let packs = packs(&objects).iter().filter(|stem| !kept(stem)).count();
    (loose_objects(&objects).len(), packs)
}

/// A `.keep` pack is someone's to keep, as `git repack` respects it.
fn kept(stem: &Path) -> bool {
    stem.with_extension("keep").exists()
}

/// Writes the objects of `builder` as a new pack in `objects/pack`; returns its stem.
fn write_pack(builder: &mut git2::PackBuilder<'_>, objects: &Path) -> Result<PathBuf, git2::Error> {
    let pack_dir = objects.join("pack");
    std::fs::create_dir_all(&pack_dir).map_err(|e| git2::Error::from_str(&e.to_string()))?;
    builder.write(&pack_dir, 0o444)?;
    builder
        .name()?
        .map(|hash| pack_dir.join(format!("pack-{hash}")))
        .ok_or_else(|| git2::Error::from_str("the new pack has no name"))
}

/// The loose objects alone into one new pack (deltas among them), then deleted: the
/// incremental step, whatever the size of the history.
fn pack_loose_objects(
    repo: &Repository,
    objects: &Path,
    loose: &[(Oid, PathBuf)],
) -> Result<(), git2::Error> {
    let mut builder = repo.packbuilder()?;
    for (oid, _) in loose {
        builder.insert_object(*oid, None)?;
    }
    write_pack(&mut builder, objects)?;
    remove_loose(objects, loose);
    repo.odb()?.refresh()?;
    Ok(())
}

/// Deletes the loose objects `loose` (now in a pack) and the fan-out directories left empty.
fn remove_loose(objects: &Path, loose: &[(Oid, PathBuf)]) {
    for (_, path) in loose {
        let _ = std::fs::remove_file(path);
    }
    for dir in std::fs::read_dir(objects).into_iter().flatten().flatten() {
        // A non-empty one stays (remove_dir refuses it).
        if dir.file_name().len() == 2 {
            let _ = std::fs::remove_dir(dir.path());
        }
    }
}

fn objects_dir(repo: &Repository) -> PathBuf {
    repo.path().join("objects")
}

/// Loose objects: `objects/xx/<38 hex>`.
fn loose_objects(objects: &Path) -> Vec<(Oid, PathBuf)> {
    let mut out = Vec::new();
    let Ok(dirs) = std::fs::read_dir(objects) else {
        return out;
    };
    for dir in dirs.flatten() {
        let prefix = dir.file_name().to_string_lossy().into_owned();
        if prefix.len() != 2 || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
            continue;
        }
        let Ok(files) = std::fs::read_dir(dir.path()) else {
            continue;
        };
        for file in files.flatten() {
            let rest = file.file_name().to_string_lossy().into_owned();
            if let Ok(oid) = Oid::from_str(&format!("{prefix}{rest}")) {
                if rest.len() == 38 {
                    out.push((oid, file.path()));
                }
            }
        }
    }
    out
}

/// Packs: the `objects/pack/pack-<hash>` stems that have a `.pack`.
fn packs(objects: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(objects.join("pack"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "pack"))
        .map(|p| p.with_extension(""))
        .collect();
    out.sort();
    out
}

fn repack(
    repo: &Repository,
    objects: &Path,
    loose: &[(Oid, PathBuf)],
    old_packs: &[PathBuf],
) -> Result<(), git2::Error> {
    let mut builder = repo.packbuilder()?;
    // Reachable objects first, walked from every ref, so that deltas follow history...
    let mut walk = repo.revwalk()?;
    walk.push_glob("*")?;
    builder.insert_walk(&mut walk)?;
    // ...then every other object the repository holds, so that nothing is lost.
    let mut rest = Vec::new();
    repo.odb()?.foreach(|oid| {
        rest.push(*oid);
        true
    })?;
    for oid in rest {
        builder.insert_object(oid, None)?;
    }
    let new = write_pack(&mut builder, objects)?;
    // The new pack holds everything: drop what it makes redundant.
    for stem in old_packs.iter().filter(|stem| **stem != new && !kept(stem)) {
        // The index last: a pack without an index is ignored, an index without a pack is not.
        for ext in ["pack", "rev", "mtimes", "bitmap", "idx"] {
            let _ = std::fs::remove_file(stem.with_extension(ext));
        }
    }
    remove_loose(objects, loose);
    repo.odb()?.refresh()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit_files(repo: &Repository, n: usize, round: usize) {
        let mut tb = repo.treebuilder(None).unwrap();
        for i in 0..n {
            let blob = repo
                .blob(format!("file {i} round {round}\n").as_bytes())
                .unwrap();
            tb.insert(format!("f{i}"), blob, 0o100644).unwrap();
        }
        let tree = repo.find_tree(tb.write().unwrap()).unwrap();
        let sig = git2::Signature::now("t", "t@t").unwrap();
        let parent = repo
            .head()
            .ok()
            .and_then(|h| h.target())
            .map(|id| repo.find_commit(id).unwrap());
        let parents: Vec<_> = parent.iter().collect();
        repo.commit(Some("HEAD"), &sig, &sig, "c", &tree, &parents)
            .unwrap();
    }

    #[test]
    fn past_the_threshold_everything_is_packed_and_nothing_lost() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(dir.path()).unwrap();
        for round in 0..5 {
            commit_files(&repo, 20, round);
        }
        // An unreachable object must survive too.
        let orphan = repo.blob(b"unreachable\n").unwrap();
        let mut all = Vec::new();
        repo.odb()
            .unwrap()
            .foreach(|oid| {
                all.push(*oid);
                true
            })
            .unwrap();
        let limits = Thresholds {
            loose_objects: 50,
            packs: 0,
        };
        let first = auto_repack(&repo, limits).unwrap();
        assert!(
            first.repacked == Repack::All && first.loose_objects > 50,
            "{first:?}"
        );
        let objects = objects_dir(&repo);
        assert!(loose_objects(&objects).is_empty());
        assert_eq!(packs(&objects).len(), 1);
        let reopened = Repository::open_bare(dir.path()).unwrap();
        for oid in &all {
            reopened.find_object(*oid, None).unwrap();
        }
        reopened.find_blob(orphan).unwrap();
        // Below the thresholds nothing happens.
        let second = auto_repack(
            &reopened,
            Thresholds {
                loose_objects: 50,
                packs: 1,
            },
        )
        .unwrap();
        assert_eq!(
            second,
            Outcome {
                loose_objects: 0,
                packs: 1,
                repacked: Repack::None
            }
        );
    }

    #[test]
    fn too_many_packs_become_one() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(dir.path()).unwrap();
        let pack_dir = objects_dir(&repo).join("pack");
        std::fs::create_dir_all(&pack_dir).unwrap();
        for round in 0..3 {
            commit_files(&repo, 3, round);
            // A pack per round, as each fetch or push leaves one.
            let mut builder = repo.packbuilder().unwrap();
            let mut walk = repo.revwalk().unwrap();
            walk.push_head().unwrap();
            builder.insert_walk(&mut walk).unwrap();
            builder.write(&pack_dir, 0o444).unwrap();
        }
        assert_eq!(packs(&objects_dir(&repo)).len(), 3);
        let limits = Thresholds {
            loose_objects: 1000,
            packs: 2,
        };
        let outcome = auto_repack(&repo, limits).unwrap();
        assert!(
            outcome.repacked == Repack::All && outcome.packs == 3,
            "{outcome:?}"
        );
        assert_eq!(packs(&objects_dir(&repo)).len(), 1);
        let reopened = Repository::open_bare(dir.path()).unwrap();
        let head = reopened.head().unwrap().peel_to_commit().unwrap();
        assert_eq!(head.parent(0).unwrap().parents().count(), 1);
    }

    #[test]
    fn loose_objects_alone_go_into_a_new_pack_and_kept_packs_stay() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(dir.path()).unwrap();
        let objects = objects_dir(&repo);
        commit_files(&repo, 10, 0);
        let limits = Thresholds {
            loose_objects: 5,
            packs: 1,
        };
        // First round: loose objects into a pack; the old packs are untouched.
        assert_eq!(auto_repack(&repo, limits).unwrap().repacked, Repack::Loose);
        assert!(loose_objects(&objects).is_empty());
        let first = packs(&objects);
        assert_eq!(first.len(), 1);
        std::fs::write(first[0].with_extension("keep"), "").unwrap();
        commit_files(&repo, 10, 1);
        let orphan = repo.blob(b"unreachable\n").unwrap();
        assert_eq!(auto_repack(&repo, limits).unwrap().repacked, Repack::Loose);
        assert_eq!(packs(&objects).len(), 2);
        // A third pack would pass the bound: everything is consolidated instead, but the
        // `.keep` pack is neither counted nor deleted.
        commit_files(&repo, 10, 2);
        let third = auto_repack(&repo, limits).unwrap();
        assert_eq!((third.packs, third.repacked), (1, Repack::All));
        let after = packs(&objects);
        assert_eq!(after.len(), 2);
        assert!(after.contains(&first[0]));
        assert!(loose_objects(&objects).is_empty());
        let reopened = Repository::open_bare(dir.path()).unwrap();
        reopened.find_blob(orphan).unwrap();
        let mut walk = reopened.revwalk().unwrap();
        walk.push_head().unwrap();
        for id in walk {
            let commit = reopened.find_commit(id.unwrap()).unwrap();
            let tree = commit.tree().unwrap();
            for entry in tree.iter() {
                reopened.find_blob(entry.id()).unwrap();
            }
        }
    }
}
