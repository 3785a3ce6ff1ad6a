//! The dry commit of a fleet file (`gitops.hydrator`): the commit of the Git work tree the
//! fleet file lives in, when the file is committed there as it is.
//!
//! Read with libgit2's discovery from the fleet file's directory, as `git` finds a repository.
//! A fleet file that is modified, staged, new or ignored has no dry commit: the render is then
//! of no commit, and its `hydrator.metadata` says so by leaving `drySha` out (rather than
//! naming a commit that does not hold what was rendered).

use std::path::{Path, PathBuf};

use git2::{Repository, Status};

use crate::render::Rendered;
use crate::render::hydrator::{DryCommit, ReferenceCommit};
use crate::spec::SourceFile;

/// Where the fleet file stands in Git.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DryState {
    /// Committed as it is at HEAD: its commit, and the file's path in the repository.
    Committed {
        commit: Box<DryCommit>,
        path: String,
    },
    /// In a work tree, but not as HEAD holds it (or HEAD is unborn): its path there.
    Uncommitted { path: String },
    /// Not in a Git work tree (or standard input).
    NotInGit,
}

impl DryState {
    pub fn commit(&self) -> Option<&DryCommit> {
        match self {
            DryState::Committed { commit, .. } => Some(commit),
            _ => None,
        }
    }

    /// The fleet file's path as `hydrator.metadata`'s command names it.
    pub fn path<'a>(&'a self, fallback: &'a str) -> &'a str {
        match self {
            DryState::Committed { path, .. } | DryState::Uncommitted { path } => path,
            DryState::NotInGit => fallback,
        }
    }
}

/// The dry commit of `fleet_file`. Never fails: what cannot be read is [`DryState::NotInGit`].
pub fn dry_state(fleet_file: &Path) -> DryState {
    let Ok(file) = fleet_file.canonicalize() else {
        return DryState::NotInGit;
    };
    let Some(dir) = file.parent() else {
        return DryState::NotInGit;
    };
    let Ok(repo) = Repository::discover(dir) else {
        return DryState::NotInGit;
    };
    let Some(workdir) = repo.workdir().and_then(|w| w.canonicalize().ok()) else {
        return DryState::NotInGit;
    };
    let Ok(rel) = file.strip_prefix(&workdir).map(PathBuf::from) else {
        return DryState::NotInGit;
    };
    let path = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/");
    let clean = repo.status_file(&rel).is_ok_and(|s| s == Status::CURRENT);
    let head = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
    match (clean, head) {
        (true, Some(head)) => DryState::Committed {
            commit: Box::new(of_commit(&head)),
            path,
        },
        _ => DryState::Uncommitted { path },
    }
}

/// What the hydrator adds to a sync of `source`, when its fleet sets `gitops.hydrator`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hydrated {
    pub state: DryState,
    /// The render inputs' digest with the dry commit ([`crate::spec::inputs::with_dry_commit`]).
    pub render_inputs: String,
    /// The commit's `Argocd-reference-commit-*` trailers (none without a dry commit).
    pub trailers: Vec<(String, String)>,
}

/// With `gitops.hydrator` set: adds the `hydrator.metadata` files to `out` (the render of
/// `source`) and says what the sync records; `None` (and `out` untouched) without it.
pub fn hydrate(out: &mut Rendered, source: &SourceFile) -> Option<Hydrated> {
    let fleet = &source.fleet;
    fleet.gitops.hydrator.as_ref()?;
    let state = dry_state(&source.path);
    let shown = source.path.to_string_lossy();
    crate::render::hydrator::hydrate(out, fleet, state.commit(), state.path(&shown));
    Some(Hydrated {
        render_inputs: inputs(&source.render_inputs(), &state),
        trailers: state
            .commit()
            .map(|d| reference_trailers(d, fleet.gitops.repo_url.as_deref()))
            .unwrap_or_default(),
        state,
    })
}

/// The digest of the render inputs `inputs` of the fleet file at `fleet_file` with its dry
/// commit: what the no-op shortcut compares when `gitops.hydrator` is set.
pub fn inputs_of(inputs: &str, fleet_file: &Path) -> String {
    self::inputs(inputs, &dry_state(fleet_file))
}

fn inputs(inputs: &str, state: &DryState) -> String {
    crate::spec::inputs::with_dry_commit(inputs, state.commit().map(|d| d.sha.as_str()))
}

/// A commit's fields as Argo CD's hydrator records them.
fn of_commit(c: &git2::Commit<'_>) -> DryCommit {
    let author = c.author();
    let message = c.message_raw().unwrap_or("");
    let subject = message.lines().next().unwrap_or("").to_owned();
    let rest = message.split_once('\n').map_or("", |(_, rest)| rest);
    let mut reference = ReferenceCommit::default();
    let mut body = Vec::new();
    for line in rest.trim_start_matches('\n').lines() {
        if let Some(slot) = reference_field(&mut reference, line) {
            *slot.0 = slot.1;
        } else {
            body.push(line);
        }
    }
    let body = body.join("\n").trim_end().to_owned();
    DryCommit {
        sha: c.id().to_string(),
        author: format!(
            "{} <{}>",
            author.name().unwrap_or(""),
            author.email().unwrap_or("")
        ),
        date: iso_date(author.when()),
        subject,
        body: if body.is_empty() {
            body
        } else {
            format!("{body}\n")
        },
        reference: (reference != ReferenceCommit::default()).then_some(reference),
    }
}

/// The field of `r` an `Argocd-reference-commit-*` trailer line sets, with its value.
fn reference_field<'r>(r: &'r mut ReferenceCommit, line: &str) -> Option<(&'r mut String, String)> {
    let (key, value) = line.split_once(':')?;
    let value = value.trim().to_owned();
    let slot = match key.trim() {
        "Argocd-reference-commit-author" => &mut r.author,
        "Argocd-reference-commit-date" => &mut r.date,
        "Argocd-reference-commit-subject" => &mut r.subject,
        "Argocd-reference-commit-sha" => &mut r.sha,
        "Argocd-reference-commit-repourl" => &mut r.repo_url,
        // The body is a JSON string (quotes included); one that is not stays in the body.
        "Argocd-reference-commit-body" => {
            let body: String = serde_json::from_str(&value).ok()?;
            return Some((&mut r.body, body));
        }
        _ => return None,
    };
    Some((slot, value))
}

/// `git show -s --format=%aI`: `2025-06-09T13:50:18-04:00`.
fn iso_date(t: git2::Time) -> String {
    let offset = t.offset_minutes();
    let local = time::OffsetDateTime::from_unix_timestamp(t.seconds() + i64::from(offset) * 60)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let sign = if offset < 0 { '-' } else { '+' };
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{sign}{:02}:{:02}",
        local.year(),
        u8::from(local.month()),
        local.day(),
        local.hour(),
        local.minute(),
        local.second(),
        offset.abs() / 60,
        offset.abs() % 60
    )
}

/// The `Argocd-reference-commit-*` trailers of a hydrated commit: they name the dry commit,
/// so that GitOps Promoter and Argo CD's UI trace a hydrated commit back to the fleet change
/// (the trailer names of Argo CD's `docs/user-guide/source-hydrator.md`, "Commit Tracing").
pub fn reference_trailers(dry: &DryCommit, repo_url: Option<&str>) -> Vec<(String, String)> {
    let mut t = vec![
        ("Argocd-reference-commit-sha", dry.sha.clone()),
        ("Argocd-reference-commit-author", dry.author.clone()),
        ("Argocd-reference-commit-date", dry.date.clone()),
        ("Argocd-reference-commit-subject", dry.subject.clone()),
    ];
    if let Some(url) = repo_url {
        t.push(("Argocd-reference-commit-repourl", url.to_owned()));
    }
    t.into_iter()
        .filter(|(_, v)| !v.is_empty() && !v.contains('\n'))
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_git_iso_strict_with_the_authors_offset() {
        assert_eq!(
            iso_date(git2::Time::new(1_749_491_418, -240)),
            "2025-06-09T13:50:18-04:00"
        );
        assert_eq!(iso_date(git2::Time::new(0, 0)), "1970-01-01T00:00:00+00:00");
        assert_eq!(
            iso_date(git2::Time::new(0, 330)),
            "1970-01-01T05:30:00+05:30"
        );
    }

    #[test]
    fn only_a_fleet_file_committed_as_it_is_has_a_dry_commit() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside.yaml");
        std::fs::write(&outside, "a: 1\n").unwrap();
        assert_eq!(dry_state(&outside), DryState::NotInGit);
        assert_eq!(
            dry_state(&dir.path().join("missing.yaml")),
            DryState::NotInGit
        );

        let work = dir.path().join("work");
        let repo = Repository::init(&work).unwrap();
        std::fs::create_dir_all(work.join("fleets")).unwrap();
        let fleet = work.join("fleets/prod.yaml");
        std::fs::write(&fleet, "a: 1\n").unwrap();
        let uncommitted = DryState::Uncommitted {
            path: "fleets/prod.yaml".into(),
        };
        assert_eq!(dry_state(&fleet), uncommitted, "new, HEAD unborn");
        let mut index = repo.index().unwrap();
        index.add_path(Path::new("fleets/prod.yaml")).unwrap();
        index.write().unwrap();
        let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
        let sig = git2::Signature::now("Dev", "dev@example.com").unwrap();
        let id = repo
            .commit(Some("HEAD"), &sig, &sig, "fleet\n", &tree, &[])
            .unwrap();
        let state = dry_state(&fleet);
        assert_eq!(state.commit().map(|c| c.sha.clone()), Some(id.to_string()));
        assert_eq!(state.path("-"), "fleets/prod.yaml");
        std::fs::write(&fleet, "a: 2\n").unwrap();
        assert_eq!(dry_state(&fleet), uncommitted, "modified");
    }

    #[test]
    fn reference_trailers_become_the_reference_and_leave_the_body() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init(dir.path()).unwrap();
        let sig = git2::Signature::new(
            "CI",
            "ci@example.com",
            &git2::Time::new(1_749_491_408, -240),
        )
        .unwrap();
        let tree = repo
            .find_tree(repo.index().unwrap().write_tree().unwrap())
            .unwrap();
        let msg = "chore: bump\n\nWhy it moved.\n\nArgocd-reference-commit-sha: b82add2\nArgocd-reference-commit-body: \"line one\\nline two\"\nSigned-off-by: CI <ci@example.com>\n";
        let id = repo.commit(None, &sig, &sig, msg, &tree, &[]).unwrap();
        let d = of_commit(&repo.find_commit(id).unwrap());
        assert_eq!(d.subject, "chore: bump");
        assert_eq!(d.author, "CI <ci@example.com>");
        assert_eq!(d.date, "2025-06-09T13:50:08-04:00");
        assert_eq!(
            d.body,
            "Why it moved.\n\nSigned-off-by: CI <ci@example.com>\n"
        );
        let r = d.reference.unwrap();
        assert_eq!(
            (r.sha.as_str(), r.body.as_str()),
            ("b82add2", "line one\nline two")
        );
    }
}
