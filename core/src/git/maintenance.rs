//! Keeping a long-lived repository small, as `git gc --auto` does: past a threshold of loose
//! objects or packs, everything is packed into one pack and what it now holds is deleted.
//!
//! libgit2 has no `gc`; its pack builder writes the pack, and this module decides when and
//! removes what the new pack makes redundant. Nothing is ever lost: the new pack holds every
//! object of the old packs and every loose object seen (reachable or not, as `git repack -a
//! --keep-unreachable`), and only those files are deleted. A pack or object another process
//! writes meanwhile is left alone. Runs under the sync's repository lock.

use std::path::{Path, PathBuf};

use git2::{Oid, Repository};

/// When to repack: `git gc --auto`'s defaults (`gc.auto`, `gc.autoPackLimit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// Repack when more loose objects than this.
    pub loose_objects: usize,
    /// Repack when more packs than this.
    pub packs: usize,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            loose_objects: 6700,
            packs: 50,
        }
    }
}

/// What [`auto_repack`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub loose_objects: usize,
    pub packs: usize,
    /// Whether it repacked (then one pack and no loose objects are left, unless another
    /// process wrote some meanwhile).
    pub repacked: bool,
}

/// Repacks `repo` when it is past `limits`; otherwise leaves it alone.
pub fn auto_repack(repo: &Repository, limits: Thresholds) -> Result<Outcome, git2::Error> {
    let objects = objects_dir(repo);
    let loose = loose_objects(&objects);
    let packs = packs(&objects);
    let mut outcome = Outcome {
        loose_objects: loose.len(),
        packs: packs.len(),
        repacked: false,
    };
    if loose.len() <= limits.loose_objects && packs.len() <= limits.packs {
        return Ok(outcome);
    }
    repack(repo, &objects, &loose, &packs)?;
    outcome.repacked = true;
    Ok(outcome)
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
    let pack_dir = objects.join("pack");
    std::fs::create_dir_all(&pack_dir).map_err(|e| git2::Error::from_str(&e.to_string()))?;
    builder.write(&pack_dir, 0o444)?;
    let new = builder
        .name()?
        .map(|hash| pack_dir.join(format!("pack-{hash}")))
        .ok_or_else(|| git2::Error::from_str("the new pack has no name"))?;
    // The new pack holds everything: drop what it makes redundant.
    for stem in old_packs.iter().filter(|stem| **stem != new) {
        // A `.keep` pack is someone's to keep, as `git repack` respects it.
        if stem.with_extension("keep").exists() {
            continue;
        }
        // The index last: a pack without an index is ignored, an index without a pack is not.
        for ext in ["pack", "rev", "mtimes", "bitmap", "idx"] {
            let _ = std::fs::remove_file(stem.with_extension(ext));
        }
    }
    for (_, path) in loose {
        let _ = std::fs::remove_file(path);
    }
    for dir in std::fs::read_dir(objects).into_iter().flatten().flatten() {
        // Empty fan-out directories; a non-empty one stays (remove_dir refuses it).
        if dir.file_name().len() == 2 {
            let _ = std::fs::remove_dir(dir.path());
        }
    }
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
            packs: 2,
        };
        let first = auto_repack(&repo, limits).unwrap();
        assert!(first.repacked && first.loose_objects > 50, "{first:?}");
        let objects = objects_dir(&repo);
        assert!(loose_objects(&objects).is_empty());
        assert_eq!(packs(&objects).len(), 1);
        let reopened = Repository::open_bare(dir.path()).unwrap();
        for oid in &all {
            reopened.find_object(*oid, None).unwrap();
        }
        reopened.find_blob(orphan).unwrap();
        // Below the thresholds nothing happens.
        let second = auto_repack(&reopened, limits).unwrap();
        assert_eq!(
            second,
            Outcome {
                loose_objects: 0,
                packs: 1,
                repacked: false
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
        assert!(outcome.repacked && outcome.packs == 3, "{outcome:?}");
        assert_eq!(packs(&objects_dir(&repo)).len(), 1);
        let reopened = Repository::open_bare(dir.path()).unwrap();
        let head = reopened.head().unwrap().peel_to_commit().unwrap();
        assert_eq!(head.parent(0).unwrap().parents().count(), 1);
    }
}
