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
    glance_cached(file, now, None)
}

/// [`glance`], but when `cache` remembers the fields of a file with these very bytes (and
/// this build), they are taken from it instead of scanning the file: the scan is most of a
/// no-op's time for a large fleet (a 5 MB file of 50,000 VMs), its SHA-256 a few
/// milliseconds. The root certificate is still read and checked at `now`.
pub fn glance_cached(file: &Path, now: UtcDateTime, cache: Option<&GlanceCache>) -> Option<Glance> {
    // Standard input can be read once only: the full load needs it.
    if file == Path::new(load::STDIN) {
        return None;
    }
    let bytes = match load::read_bounded(file, MAX_FILE_BYTES).ok()? {
        Bounded::Whole(bytes) => bytes,
        Bounded::TooLarge => return None,
    };
    let fleet_sha256 = hex(&Sha256::digest(&bytes));
    let fields = match cache.and_then(|c| c.get(file, &fleet_sha256)) {
        Some(fields) => fields,
        None => Fields::of_keys(keys(std::str::from_utf8(&bytes).ok()?)?)?,
    };
    let root_cert = match &fields.root_cert {
        Some(rel) => {
            let base = file.parent().unwrap_or(Path::new(""));
            Some(load::read_root_cert(&base.join(rel), now).ok()?)
        }
        None => None,
    };
    Some(Glance {
        branch: super::sync_branch(&fields.branch, fields.promoter),
        path: fields.path,
        hydrator: fields.hydrator,
        render_inputs: digest(&fleet_sha256, root_cert.as_deref()),
    })
}

/// What a glance needs of a fleet file, defaults applied: the fields a [`GlanceCache`] keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fields {
    /// `gitops.path`.
    pub path: String,
    /// `gitops.branch` (without Promoter mode's suffix).
    pub branch: String,
    /// `gitops.hydrator.promoter`.
    pub promoter: bool,
    /// `gitops.hydrator` is set.
    pub hydrator: bool,
    /// `mesh.rootCert`, as written (relative to the fleet file).
    pub root_cert: Option<String>,
}

impl Fields {
    /// The fields of a fleet a full load read.
    pub fn of(source: &SourceFile) -> Fields {
        let gitops = &source.fleet.gitops;
        Fields {
            path: gitops.path.clone(),
            branch: gitops.branch.clone(),
            promoter: gitops.hydrator.as_ref().is_some_and(|h| h.promoter),
            hydrator: gitops.hydrator.is_some(),
            root_cert: source.fleet.mesh.root_cert.clone(),
        }
    }

    /// The fields a scan found; `None` when a value needs the full load to judge it.
    fn of_keys(keys: Keys) -> Option<Fields> {
        let defaults = Gitops::default();
        let promoter = match keys.promoter.as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(_) => return None,
        };
        Some(Fields {
            path: keys.path.unwrap_or(defaults.path),
            branch: keys.branch.unwrap_or(defaults.branch),
            promoter,
            hydrator: keys.hydrator,
            root_cert: keys.root_cert,
        })
    }

    /// The record of these fields for the fleet file with SHA-256 `fleet_sha256`, read with
    /// this build; `None` when a value holds a line break (then nothing is remembered).
    fn record(&self, fleet_sha256: &str) -> Option<String> {
        let mut text = format!(
            "{RECORD_HEADER}\nbuild {BUILD_ID}\nfleet {fleet_sha256}\npath {}\nbranch {}\n\
             promoter {}\nhydrator {}\n",
            self.path, self.branch, self.promoter, self.hydrator
        );
        if let Some(rel) = &self.root_cert {
            text.push_str(&format!("root-cert {rel}\n"));
        }
        // A record cut short is not a record without a root certificate.
        text.push_str("end\n");
        let values = [&self.path, &self.branch]
            .into_iter()
            .chain(&self.root_cert);
        values
            .into_iter()
            .all(|v| !v.contains(['\n', '\r']))
            .then_some(text)
    }

    /// The fields of a record written by [`Fields::record`] for these bytes with this build;
    /// `None` for anything else (another file's, another build's, a damaged record).
    fn from_record(text: &str, fleet_sha256: &str) -> Option<Fields> {
        let mut lines = text.strip_suffix('\n')?.split('\n');
        if lines.next()? != RECORD_HEADER {
            return None;
        }
        let mut next = |name: &str| {
            let (key, value) = lines.next()?.split_once(' ')?;
            (key == name).then(|| value.to_owned())
        };
        let flag = |v: String| match v.as_str() {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        };
        if next("build")? != BUILD_ID || next("fleet")? != fleet_sha256 {
            return None;
        }
        let fields = Fields {
            path: next("path")?,
            branch: next("branch")?,
            promoter: flag(next("promoter")?)?,
            hydrator: flag(next("hydrator")?)?,
            root_cert: None,
        };
        let root_cert = match lines.next()? {
            "end" => None,
            line => {
                let rel = line.strip_prefix("root-cert ")?.to_owned();
                if lines.next()? != "end" {
                    return None;
                }
                Some(rel)
            }
        };
        lines.next().is_none().then_some(Fields {
            root_cert,
            ..fields
        })
    }
}

/// The first line of a [`GlanceCache`] record.
const RECORD_HEADER: &str = "meshvm glance v1";

/// A directory where the [`Fields`] of fleet files are remembered, one record per fleet file
/// (by its absolute path), each naming the SHA-256 of the bytes it was read from and the
/// build that read them: a record is used only for those very bytes with this very build, so
/// it can make a glance faster but never different. It is a cache: a missing, stale or
/// damaged record just means a scan.
#[derive(Debug, Clone)]
pub struct GlanceCache {
    dir: std::path::PathBuf,
}

impl GlanceCache {
    /// The cache kept in `dir` (created when a record is first written).
    pub fn new(dir: impl Into<std::path::PathBuf>) -> GlanceCache {
        GlanceCache { dir: dir.into() }
    }

    /// The record file of the fleet file at `file`.
    fn file_for(&self, file: &Path) -> Option<std::path::PathBuf> {
        let absolute = std::path::absolute(file).ok()?;
        let digest = Sha256::digest(absolute.as_os_str().as_encoded_bytes());
        Some(self.dir.join(&hex(&digest)[..32]))
    }

    /// The fields remembered for the fleet file at `file` holding bytes with SHA-256
    /// `fleet_sha256`.
    pub fn get(&self, file: &Path, fleet_sha256: &str) -> Option<Fields> {
        let text = std::fs::read_to_string(self.file_for(file)?).ok()?;
        Fields::from_record(&text, fleet_sha256)
    }

    /// Remembers `fields` for the fleet file at `file` holding bytes with SHA-256
    /// `fleet_sha256`. Best effort: written to a temporary file and renamed into place, so a
    /// reader sees a whole record or none; on any failure nothing is remembered.
    pub fn put(&self, file: &Path, fleet_sha256: &str, fields: &Fields) {
        if file == Path::new(load::STDIN) {
            return;
        }
        let (Some(path), Some(text)) = (self.file_for(file), fields.record(fleet_sha256)) else {
            return;
        };
        if std::fs::read_to_string(&path).is_ok_and(|old| old == text) {
            return;
        }
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(&self.dir)?;
            let mut tmp = tempfile::NamedTempFile::new_in(&self.dir)?;
            std::io::Write::write_all(&mut tmp, text.as_bytes())?;
            tmp.persist(&path).map_err(|e| e.error)?;
            Ok(())
        };
        let _ = write();
    }
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

    fn fields() -> Fields {
        Fields {
            path: "clusters/c1".into(),
            branch: "prod".into(),
            promoter: true,
            hydrator: true,
            root_cert: Some("certs/root.pem".into()),
        }
    }

    #[test]
    fn a_record_gives_back_its_fields_for_the_same_bytes_and_build_only() {
        let sha = "a".repeat(64);
        for f in [
            fields(),
            Fields {
                root_cert: None,
                promoter: false,
                ..fields()
            },
        ] {
            let record = f.record(&sha).unwrap();
            assert_eq!(Fields::from_record(&record, &sha), Some(f.clone()));
            // Other bytes, another build, a damaged or cut record: nothing.
            assert_eq!(Fields::from_record(&record, &"b".repeat(64)), None);
            let other_build = record.replace(BUILD_ID, &"0".repeat(64));
            assert_eq!(Fields::from_record(&other_build, &sha), None);
            for cut in 0..record.len() - 1 {
                assert_eq!(Fields::from_record(&record[..cut], &sha), None, "{cut}");
            }
            let flipped = record.replace("hydrator true", "hydrator yes");
            assert_eq!(Fields::from_record(&flipped, &sha), None);
            assert_eq!(Fields::from_record(&format!("{record}x\n"), &sha), None);
        }
        // A value with a line break is not remembered.
        let broken = Fields {
            path: "a\nfleet x".into(),
            ..fields()
        };
        assert_eq!(broken.record(&sha), None);
    }

    #[test]
    fn a_cached_glance_reads_the_fields_instead_of_the_file_for_the_same_bytes_only() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("meshvm.yaml");
        // An alias: the scan leaves this file to the full load.
        let text = "gitops: &g {path: a}\nother: *g\n";
        std::fs::write(&file, text).unwrap();
        let now = UtcDateTime::now();
        let cache = GlanceCache::new(dir.path().join("cache"));
        assert_eq!(glance_cached(&file, now, Some(&cache)), None);

        let sha = hex(&Sha256::digest(text));
        let remembered = Fields {
            root_cert: None,
            ..fields()
        };
        cache.put(&file, &sha, &remembered);
        assert_eq!(cache.get(&file, &sha), Some(remembered));
        let g = glance_cached(&file, now, Some(&cache)).expect("the remembered fields");
        assert_eq!(
            (g.path.as_str(), g.branch.as_str(), g.hydrator),
            ("clusters/c1", "prod-next", true)
        );
        assert_eq!(g.render_inputs, digest(&sha, None));
        // Without the cache, or for another file at the same bytes: the scan.
        assert_eq!(glance(&file, now), None);
        let twin = dir.path().join("twin.yaml");
        std::fs::write(&twin, text).unwrap();
        assert_eq!(glance_cached(&twin, now, Some(&cache)), None);
        // New bytes: the record is stale, and the scan reads the new file.
        std::fs::write(&file, "gitops: {path: b}\n").unwrap();
        let g = glance_cached(&file, now, Some(&cache)).expect("a plain file");
        assert_eq!((g.path.as_str(), g.hydrator), ("b", false));
    }

    #[test]
    fn a_remembered_root_certificate_is_still_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("meshvm.yaml");
        std::fs::write(&file, "kind: Fleet\n").unwrap();
        let sha = hex(&Sha256::digest("kind: Fleet\n"));
        let cache = GlanceCache::new(dir.path().join("cache"));
        cache.put(&file, &sha, &fields());
        // `certs/root.pem` is not there: no glance, as when the scan finds it missing.
        assert_eq!(glance_cached(&file, UtcDateTime::now(), Some(&cache)), None);
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
