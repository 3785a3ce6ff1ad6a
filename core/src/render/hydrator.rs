//! Argo CD Source Hydrator / GitOps Promoter compatibility (`gitops.hydrator`): the
//! `hydrator.metadata` files of a hydrated tree.
//!
//! The format is Argo CD's: `commitserver/commit/hydratorhelper.go` (`WriteForPaths`,
//! `writeMetadata`) and `commit.go` (`hydratorMetadataFile`) in argoproj/argo-cd, documented
//! in `docs/user-guide/source-hydrator.md` ("Commit Tracing"). One file at the root of the
//! hydrated path (the dry commit: `repoURL`, `drySha`, `author`, `date`, `subject`, `body`,
//! `references`) and one in every application path (`repoURL`, `drySha`, `commands`); JSON
//! indented by two spaces and without a final newline, as Go's `json.MarshalIndent` writes
//! it; empty fields left out (`omitempty`). GitOps Promoter reads `drySha` (and `commands`)
//! from the root file of the proposed branch (argoproj-labs/gitops-promoter,
//! `internal/git/git.go`, `HydratorMetadataFile`).
//!
//! Pure: the dry commit is an argument ([`DryCommit`], read by `crate::git::dry`), and nothing
//! here reads the clock, so the same fleet and dry commit give the same bytes, and a sync of an
//! unchanged dry commit commits nothing.

use serde::Serialize;

use super::Rendered;
use super::layout;
use crate::spec::Fleet;

/// The file name Argo CD and GitOps Promoter read.
pub const METADATA_FILE: &str = "hydrator.metadata";

/// The dry commit: the commit of the fleet file's repository whose fleet file was rendered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DryCommit {
    /// The commit id (hex).
    pub sha: String,
    /// `Name <email>`, as `git show -s --format='%an <%ae>'`.
    pub author: String,
    /// The author date, as `git show -s --format=%aI` (RFC 3339 with the author's offset).
    pub date: String,
    /// The message's first line.
    pub subject: String,
    /// The rest of the message, without the `Argocd-reference-commit-*` trailers that make
    /// up `reference`.
    pub body: String,
    /// The code commit the dry commit's `Argocd-reference-commit-*` trailers name.
    pub reference: Option<ReferenceCommit>,
}

/// A commit named by `Argocd-reference-commit-*` trailers (Argo CD's `CommitMetadata`,
/// `pkg/apis/application/v1alpha1/types.go`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReferenceCommit {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub author: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub date: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub subject: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub body: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub sha: String,
    #[serde(rename = "repoURL", skip_serializing_if = "String::is_empty")]
    pub repo_url: String,
}

/// `{"commit": …}`: Argo CD's `RevisionReference`.
#[derive(Debug, Serialize)]
struct Reference<'a> {
    commit: &'a ReferenceCommit,
}

/// Argo CD's `hydratorMetadataFile`, field for field and in its order.
#[derive(Debug, Default, Serialize)]
struct Metadata<'a> {
    #[serde(rename = "repoURL", skip_serializing_if = "str::is_empty")]
    repo_url: &'a str,
    #[serde(rename = "drySha", skip_serializing_if = "str::is_empty")]
    dry_sha: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    commands: Vec<String>,
    #[serde(skip_serializing_if = "str::is_empty")]
    author: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    date: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    subject: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    body: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    references: Vec<Reference<'a>>,
}

impl<'a> Metadata<'a> {
    /// The root file's: the dry commit.
    fn root(repo_url: &'a str, d: &'a DryCommit) -> Metadata<'a> {
        Metadata {
            repo_url,
            dry_sha: &d.sha,
            author: &d.author,
            date: &d.date,
            subject: &d.subject,
            body: &d.body,
            references: d
                .reference
                .iter()
                .map(|commit| Reference { commit })
                .collect(),
            ..Metadata::default()
        }
    }

    /// The bytes Go's `json.MarshalIndent(m, "", "  ")` gives: two-space indent, no final
    /// newline, and `<`, `>`, `&`, U+2028 and U+2029 escaped as `\u003c`… (Go's HTML-safe
    /// default). Those characters occur only inside JSON strings, so replacing them in the
    /// text is the same as escaping them there.
    fn to_bytes(&self) -> Vec<u8> {
        let text = serde_json::to_string_pretty(self).expect("plain strings serialize");
        text.replace('<', "\\u003c")
            .replace('>', "\\u003e")
            .replace('&', "\\u0026")
            .replace('\u{2028}', "\\u2028")
            .replace('\u{2029}', "\\u2029")
            .into_bytes()
    }
}

/// The command that renders the tree from the dry commit, as `hydrator.metadata` lists it:
/// `fleet_file` is the fleet file's path in the dry repository; the tree goes to `gitops.path`.
pub fn command(fleet: &Fleet, fleet_file: &str) -> String {
    format!(
        "meshvm render --file {fleet_file} --output {}",
        fleet.gitops.path
    )
}

/// Adds `hydrator.metadata` at the root of the tree and in every application directory.
/// `dry` is `None` when the fleet file is not committed as it is (then `drySha` and the
/// commit's fields are left out); `fleet_file` is its path in the dry repository, for the
/// command.
pub fn hydrate(out: &mut Rendered, fleet: &Fleet, dry: Option<&DryCommit>, fleet_file: &str) {
    let repo_url = fleet.gitops.repo_url.as_deref().unwrap_or("");
    let empty = DryCommit::default();
    let d = dry.unwrap_or(&empty);
    out.files
        .insert(METADATA_FILE, Metadata::root(repo_url, d).to_bytes());
    let per_path = Metadata {
        repo_url,
        dry_sha: &d.sha,
        commands: vec![command(fleet, fleet_file)],
        ..Metadata::default()
    }
    .to_bytes();
    for dir in layout::application_dirs(fleet) {
        out.files
            .insert(format!("{dir}/{METADATA_FILE}"), per_path.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_is_argo_cds_json_with_empty_fields_left_out() {
        let dry = DryCommit {
            sha: "6cb951525937865dced818bbdd78c89b2d2b3045".into(),
            author: "CI <ci@example.com>".into(),
            date: "2025-06-09T13:50:08-04:00".into(),
            subject: "chore: bump image".into(),
            body: String::new(),
            reference: Some(ReferenceCommit {
                sha: "b82add298aa045d3672880802d5305c5a8aaa46e".into(),
                subject: "chore: make a change".into(),
                ..ReferenceCommit::default()
            }),
        };
        let m = Metadata::root("https://git.example.com/mesh.git", &dry);
        insta::assert_snapshot!(String::from_utf8(m.to_bytes()).unwrap(), @r#"
        {
          "repoURL": "https://git.example.com/mesh.git",
          "drySha": "6cb951525937865dced818bbdd78c89b2d2b3045",
          "author": "CI \u003cci@example.com\u003e",
          "date": "2025-06-09T13:50:08-04:00",
          "subject": "chore: bump image",
          "references": [
            {
              "commit": {
                "subject": "chore: make a change",
                "sha": "b82add298aa045d3672880802d5305c5a8aaa46e"
              }
            }
          ]
        }
        "#);
    }
}
