//! A repository that receives many small syncs stays within the maintenance bounds
//! (`git::maintenance::Thresholds`): after every sync at most 256 loose objects and 16 packs,
//! the loose objects are packed and the packs consolidated along the way, and every commit's
//! tree is still complete at the end. Sizes and times are `cargo xtask bench-repo`'s job.

use std::time::Duration;

use meshvm::git::{self, Event, Options, Target, maintenance};

#[test]
fn many_small_syncs_keep_loose_objects_and_packs_under_the_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let repo_dir = dir.path().join("fleet.git");
    let bounds = maintenance::Thresholds::default();
    let mut fleet = meshvm::synthetic::fleet(100);
    let (mut most_loose, mut most_packs, mut loose_packed, mut consolidated) = (0, 0, 0, 0);
    let mut last = (0, 0);
    for round in 0..=40 {
        if round > 0 {
            meshvm::synthetic::relabel(&mut fleet, round, 30);
        }
        let yaml = meshvm::k8s::yaml::to_string(&fleet);
        let checked = meshvm::spec::load_fleet_str(&yaml, "fleet.yaml".as_ref()).unwrap();
        let tree = meshvm::render::render(&checked).files;
        let sha = format!("{round:064x}");
        let input = git::Input {
            tree: tree.clone(),
            path: &fleet.gitops.path,
            fleet_sha256: &sha,
        };
        let mut opts = Options::new(
            Target::Path(repo_dir.clone()),
            dir.path().join("cache"),
            fleet.gitops.branch.clone(),
        );
        opts.lock_timeout = Duration::from_secs(5);
        let report = git::sync(input, &opts, &mut |_: Event<'_>| {}).unwrap();
        assert!(round == 0 || report.commit.is_some(), "sync {round}");
        let (loose, packs) = maintenance::census(&repo_dir);
        assert!(
            loose <= bounds.loose_objects && packs <= bounds.packs,
            "after sync {round}: {loose} loose objects, {packs} packs"
        );
        if round > 0 && loose < last.0 && packs > last.1 {
            loose_packed += 1;
        }
        if packs < last.1 {
            consolidated += 1;
        }
        most_loose = most_loose.max(loose);
        most_packs = most_packs.max(packs);
        last = (loose, packs);
    }
    // The bounds were reached, not merely never approached.
    assert!(most_loose > bounds.loose_objects / 2, "{most_loose}");
    assert!(
        loose_packed >= 10 && consolidated >= 1,
        "{loose_packed} {consolidated}"
    );
    assert!(most_packs == bounds.packs, "{most_packs}");
    // Nothing lost: every commit's whole tree is readable.
    let repo = git2::Repository::open_bare(&repo_dir).unwrap();
    let mut walk = repo.revwalk().unwrap();
    walk.push_glob("heads/*").unwrap();
    let mut commits = 0;
    for id in walk {
        let commit = repo.find_commit(id.unwrap()).unwrap();
        commit
            .tree()
            .unwrap()
            .walk(git2::TreeWalkMode::PreOrder, |_, entry| {
                repo.find_object(entry.id(), entry.kind()).unwrap();
                git2::TreeWalkResult::Ok
            })
            .unwrap();
        commits += 1;
    }
    assert_eq!(commits, 41);
}
