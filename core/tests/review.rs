//! `gitops diff --output markdown` and `--stat` (`git::review`) over the pull requests of
//! fixtures/review/: the fleet is committed, edited, and the plan of the edit is shown.

use std::collections::BTreeMap;
use std::path::Path;

use meshvm::git::{self, Input, Mode, Options, Target, review};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Case {
    fleet: String,
    #[serde(default)]
    edits: Vec<Edit>,
    #[serde(default)]
    write: BTreeMap<String, Vec<String>>,
    #[serde(default = "default_part_size")]
    part_size: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Edit {
    from: String,
    to: String,
}

fn default_part_size() -> usize {
    review::COMMENT_BUDGET
}

/// Syncs (or plans, with its diff) the fleet file at `file` into `repo`.
fn sync(file: &Path, repo: &Path, mode: Mode) -> git::Plan {
    let source = meshvm::spec::load_fleet(file).unwrap();
    let tree = meshvm::render::render(&source.fleet).files;
    let mut opts = Options::new(
        Target::Path(repo.to_path_buf()),
        repo.with_extension("cache"),
        source.fleet.gitops.branch.clone(),
    );
    opts.mode = mode;
    let input = Input {
        tree: tree.clone(),
        path: &source.fleet.gitops.path,
        fleet_sha256: &source.sha256,
    };
    git::sync(input, &opts, &mut |_| {}).unwrap().plan
}

#[test]
fn pull_requests_are_shown_as_review_comments() {
    insta::glob!("../../fixtures/review", "*.yaml", |path| {
        let case: Case = serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let tmp = tempfile::tempdir().unwrap();
        let fleet_dir = testkit::fixture(&case.fleet);
        let fleet_dir = fleet_dir.parent().unwrap();
        for entry in std::fs::read_dir(fleet_dir).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), tmp.path().join(entry.file_name())).unwrap();
        }
        let file = tmp.path().join("meshvm.yaml");
        let repo = tmp.path().join("repo.git");
        sync(&file, &repo, Mode::Commit);

        let mut text = std::fs::read_to_string(&file).unwrap();
        for e in &case.edits {
            assert!(
                text.contains(&e.from),
                "{}: {:?} not found",
                path.display(),
                e.from
            );
            text = text.replacen(&e.from, &e.to, 1);
        }
        std::fs::write(&file, text).unwrap();
        for (name, parts) in &case.write {
            let bytes: String = parts
                .iter()
                .map(|p| std::fs::read_to_string(testkit::fixture(p)).unwrap())
                .collect();
            std::fs::write(tmp.path().join(name), bytes).unwrap();
        }
        let plan = sync(&file, &repo, Mode::DryRunWithDiff);
        assert!(plan.has_changes(), "{}", path.display());
        let base = plan.base.expect("the first commit").to_string();

        let parts = review::markdown(&plan, case.part_size);
        for (i, part) in parts.iter().enumerate() {
            assert!(
                part.starts_with(&format!("{}\n", review::marker(&plan.path, i + 1))),
                "part {} starts with its marker",
                i + 1
            );
            assert!(
                part.chars().count() <= case.part_size,
                "part {} has {} characters, over {}",
                i + 1,
                part.chars().count(),
                case.part_size
            );
        }
        // Every changed file's diff is in some part.
        let all = parts.concat();
        for f in &plan.files {
            assert!(
                all.contains(&format!("diff --git a/{}", f.path)),
                "{}: {} is missing",
                path.display(),
                f.path
            );
        }
        let shown = format!(
            "{}\n===== --stat =====\n{}",
            parts.join("\n===== next part =====\n"),
            review::stat(&plan)
        )
        .replace(&base[..10], "BASE");
        insta::assert_snapshot!(shown);
    });
}
