//! What a render reads, as one digest, and a glance at a fleet file that finds it without
//! checking the fleet: the no-op shortcut of `gitops sync`.
//!
//! The render is a pure function of the fleet file's bytes, the root certificate it names and
//! the meshvm build (its code, templates and dependencies: `MESHVM_BUILD_ID`, set by
//! `core/build.rs`). [`digest`] hashes exactly these; a sync records it in its commit's
//! trailers, and the next sync whose inputs have the same digest, on a branch whose subtree is
//! still the one meshvm wrote, knows the render would give the same tree without parsing,
//! validating or rendering the fleet.
//!
//! [`glance`] reads only what that check needs: the file's bytes, `gitops.path`,
//! `gitops.branch` and `mesh.rootCert` (the root certificate is read and checked against the
//! clock, as a full load does). Anything unusual (an alias, a merge key, a tag, a duplicate or
//! non-text value on those keys, a second document) gives `None`, and the caller loads the
//! fleet in full, which reports whatever is wrong. A wrong glance cannot make a sync skip work:
//! the digest covers the file's bytes, so a match means this very file once loaded and
//! rendered, with this very build, into the recorded tree.

use std::path::Path;

use saphyr_parser::{Event, Parser};
use sha2::{Digest, Sha256};
use time::UtcDateTime;

use super::load::{self, Bounded, MAX_FILE_BYTES, hex};
use super::{Gitops, SourceFile};

/// The build's id: a hash over the library's sources and its locked dependencies.
pub const BUILD_ID: &str = env!("MESHVM_BUILD_ID");

/// The digest of a render's inputs: the fleet file's SHA-256 (hex), the root certificate it
/// names (its PEM text), and the build.
pub fn digest(fleet_sha256: &str, root_cert: Option<&str>) -> String {
    digest_for_build(BUILD_ID, fleet_sha256, root_cert)
}

/// [`digest`] for another build (tests show that a new build changes it).
pub fn digest_for_build(build: &str, fleet_sha256: &str, root_cert: Option<&str>) -> String {
    let mut h = Sha256::new();
    h.update(b"meshvm render inputs v1\n");
    h.update(format!("build {build}\nfleet {fleet_sha256}\n"));
    match root_cert {
        Some(pem) => h.update(format!("root-cert {}\n", hex(&Sha256::digest(pem)))),
        None => h.update(b"no root-cert\n"),
    }
    hex(&h.finalize())
}

/// The digest of a render's inputs when the render also reads the fleet file's dry commit
/// (`gitops.hydrator`): `inputs` and the commit's id, or that there is none (the fleet file
/// is not committed as it is). A new dry commit is a new input, so the no-op shortcut never
/// skips the sync that writes its `drySha`.
pub fn with_dry_commit(inputs: &str, dry_sha: Option<&str>) -> String {
    let mut h = Sha256::new();
    h.update(format!("meshvm hydrated inputs v1\ninputs {inputs}\n"));
    match dry_sha {
        Some(sha) => h.update(format!("dry {sha}\n")),
        None => h.update(b"no dry commit\n"),
    }
    hex(&h.finalize())
}

impl SourceFile {
    /// The digest of what rendering this fleet reads ([`digest`]).
    pub fn render_inputs(&self) -> String {
        digest(&self.sha256, self.fleet.root_cert())
    }
}

/// What a glance at a fleet file finds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glance {
    /// `gitops.path`, or its default.
    pub path: String,
    /// The branch a sync commits to: `gitops.branch` (or its default), with `-next` in
    /// GitOps Promoter mode (`Gitops::sync_branch`).
    pub branch: String,
    /// `gitops.hydrator` is set: the render also reads the fleet file's dry commit, which the
    /// caller adds to the digest ([`with_dry_commit`]).
    pub hydrator: bool,
    /// The digest of the render's inputs, as [`SourceFile::render_inputs`] gives it.
    pub render_inputs: String,
}

/// Reads the fleet file's bytes, the few keys a no-op check needs, and the root certificate
/// (checked at `now`); `None` when the file needs a full load to say what it means.
pub fn glance(file: &Path, now: UtcDateTime) -> Option<Glance> {
    // Standard input can be read once only: the full load needs it.
    if file == Path::new(load::STDIN) {
        return None;
    }
    let bytes = match load::read_bounded(file, MAX_FILE_BYTES).ok()? {
        Bounded::Whole(bytes) => bytes,
        Bounded::TooLarge => return None,
    };
    let fleet_sha256 = hex(&Sha256::digest(&bytes));
    let text = std::str::from_utf8(&bytes).ok()?;
    let keys = keys(text)?;
    let root_cert = match &keys.root_cert {
        Some(rel) => {
            let base = file.parent().unwrap_or(Path::new(""));
            Some(load::read_root_cert(&base.join(rel), now).ok()?)
        }
        None => None,
    };
    let defaults = Gitops::default();
    let promoter = match keys.promoter.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return None,
    };
    Some(Glance {
        path: keys.path.unwrap_or(defaults.path),
        branch: super::sync_branch(&keys.branch.unwrap_or(defaults.branch), promoter),
        hydrator: keys.hydrator,
        render_inputs: digest(&fleet_sha256, root_cert.as_deref()),
    })
}

/// The values of `gitops.path`, `gitops.branch` and `mesh.rootCert`.
#[derive(Debug, Default, PartialEq, Eq)]
struct Keys {
    path: Option<String>,
    branch: Option<String>,
    root_cert: Option<String>,
    /// `gitops.hydrator` is a mapping.
    hydrator: bool,
    /// `gitops.hydrator.promoter`.
    promoter: Option<String>,
}

/// One open collection while walking the events: for a mapping, the key whose value comes
/// next.
enum Open {
    Seq,
    Map { key: Option<String> },
}

/// Walks the YAML events once, keeping the wanted scalars; `None` for anything a full load
/// should judge.
fn keys(text: &str) -> Option<Keys> {
    let mut keys = Keys::default();
    // The keys from the document's root to the open collection (`None`: a sequence item).
    let mut path: Vec<Option<String>> = Vec::new();
    let mut open: Vec<Open> = Vec::new();
    let mut top_level = std::collections::HashSet::new();
    let mut documents = 0;
    let mut parser = Parser::new_from_str(text);
    while let Some(event) = parser.next_event() {
        let (event, _) = event.ok()?;
        match event {
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    return None;
                }
            }
            // Aliases could make a wanted key or value out of anything: leave them to the load.
            Event::Alias(_) => return None,
            Event::Scalar(value, _, _, tag) => {
                if tag.is_some() {
                    return None;
                }
                let Some(Open::Map { key }) = open.last_mut() else {
                    continue; // a sequence item, or a document that is one scalar
                };
                let Some(name) = key.take() else {
                    if value == "<<" {
                        return None; // a merge key
                    }
                    if path.is_empty() && !top_level.insert(value.to_string()) {
                        return None; // a duplicate top-level key
                    }
                    *key = Some(value.into_owned());
                    continue;
                };
                let slot = match (path.as_slice(), name.as_str()) {
                    ([Some(top)], "path") if top == "gitops" => &mut keys.path,
                    ([Some(top)], "branch") if top == "gitops" => &mut keys.branch,
                    ([Some(top)], "rootCert") if top == "mesh" => &mut keys.root_cert,
                    ([Some(top), Some(h)], "promoter") if top == "gitops" && h == "hydrator" => {
                        &mut keys.promoter
                    }
                    ([], "gitops" | "mesh") => return None, // not a mapping
                    ([Some(top)], "hydrator") if top == "gitops" => return None, // not a mapping
                    _ => continue,
                };
                if slot.replace(value.into_owned()).is_some() {
                    return None; // a duplicate key
                }
            }
            Event::MappingStart(_, ref tag) | Event::SequenceStart(_, ref tag) => {
                if tag.is_some() {
                    return None;
                }
                let is_map = matches!(event, Event::MappingStart(..));
                match open.last_mut() {
                    None => {} // the document's root
                    Some(Open::Seq) => path.push(None),
                    Some(Open::Map { key }) => {
                        // A collection as a key: no fleet has one.
                        let name = key.take()?;
                        if path.is_empty() && !is_map && (name == "gitops" || name == "mesh") {
                            return None;
                        }
                        if matches!(path.as_slice(), [Some(top)] if top == "gitops")
                            && name == "hydrator"
                        {
                            if !is_map || keys.hydrator {
                                return None; // not a mapping, or a duplicate
                            }
                            keys.hydrator = true;
                        }
                        path.push(Some(name));
                    }
                }
                open.push(if is_map {
                    Open::Map { key: None }
                } else {
                    Open::Seq
                });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                open.pop();
                if !open.is_empty() {
                    path.pop();
                }
            }
            _ => {}
        }
    }
    Some(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wanted_keys_are_found_in_plain_and_quoted_forms() {
        let text = "apiVersion: x\nmesh:\n  meshID: m\n  rootCert: 'certs/root.pem'\n\
                    workloads:\n- name: a\n  path: not-this\n  vms: [{name: b}]\n\
                    gitops:\n  path: \"clusters/c1\"\n  branch: prod\n";
        assert_eq!(
            keys(text),
            Some(Keys {
                path: Some("clusters/c1".into()),
                branch: Some("prod".into()),
                root_cert: Some("certs/root.pem".into()),
                ..Keys::default()
            })
        );
        assert_eq!(keys("kind: Fleet\n"), Some(Keys::default()));
    }

    #[test]
    fn the_hydrator_and_its_promoter_mode_are_found() {
        let k = keys("gitops:\n  branch: prod\n  hydrator: {promoter: true}\n").unwrap();
        assert!(k.hydrator);
        assert_eq!(k.promoter.as_deref(), Some("true"));
        let k = keys("gitops:\n  hydrator: {}\n").unwrap();
        assert!(k.hydrator && k.promoter.is_none());
        assert!(!keys("gitops: {path: a}\n").unwrap().hydrator);
    }

    #[test]
    fn anything_unusual_is_left_to_the_full_load() {
        for text in [
            "gitops: &g {path: a}\nother: *g\n",
            "base: &b {path: a}\ngitops:\n  <<: *b\n",
            "gitops: {path: a}\ngitops: {path: b}\n",
            "gitops: {path: a, path: b}\n",
            "gitops: !!map {path: a}\n",
            "gitops: {path: !!str a}\n",
            "gitops: [a]\n",
            "gitops: a\n",
            "? [a]\n: b\n",
            "a: 1\n---\nb: 2\n",
            "gitops: {path: [unclosed\n",
            "gitops: {hydrator: null}\n",
            "gitops: {hydrator: [a]}\n",
            "gitops: {hydrator: {}, hydrator: {}}\n",
            "gitops: {hydrator: {promoter: yes, promoter: no}}\n",
        ] {
            assert_eq!(keys(text), None, "{text}");
        }
    }
}
