//! Reading a fleet file: YAML with positions → JSON value → structural check against the
//! fleet's JSON Schema → typed `Fleet` → semantic checks. Every stage reports all of its
//! problems at once; a later stage runs only when the earlier ones found none.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use saphyr_parser::{Event, Parser, ScalarStyle, ScanError, Span};
use serde::Deserialize;
use serde_json::{Map, Number, Value};
use sha2::{Digest, Sha256};
use time::UtcDateTime;

use super::validate::{self, Problem};
use super::{CheckedFleet, Fleet, root_cert};
use crate::spec::diagnostic::{Diagnostic, Diagnostics, Pos};

/// Largest fleet file read: far above any real fleet (50,000 VMs take about 5 MiB).
pub(super) const MAX_FILE_BYTES: u64 = 64 << 20;
/// Deepest nesting accepted; the fleet's own shape needs 6 levels.
const MAX_DEPTH: usize = 64;
/// Most nodes after expanding aliases, against alias bombs ("billion laughs").
const MAX_NODES: usize = 2_000_000;
/// Largest root CA bundle read: real ones are a few KiB.
const MAX_ROOT_CERT_BYTES: u64 = 1 << 20;

/// A fleet file read from disk and checked, with what it references.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// The fleet, with the root CA certificate `mesh.rootCert` names (read relative to the
    /// file).
    pub fleet: CheckedFleet,
    /// The file as given by the user.
    pub path: PathBuf,
    /// SHA-256 of the file's bytes, hex.
    pub sha256: String,
    /// What the fleet may hold but most likely holds by mistake, a CA rotation in progress
    /// among them (`validate` prints them; `render` and `gitops` after their result).
    pub warnings: Diagnostics,
}

/// Why a fleet file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(Diagnostics),
}

impl LoadError {
    pub fn kind(&self) -> crate::ErrorKind {
        crate::ErrorKind::InvalidInput
    }
}

/// The fleet file name that means standard input.
pub const STDIN: &str = "-";

/// Reads, checks and completes the fleet file at `path`, checking its root certificate
/// against the clock.
pub fn load_fleet(path: &Path) -> Result<SourceFile, LoadError> {
    // The one place the checks read the clock.
    load_fleet_at(path, UtcDateTime::now())
}

/// [`load_fleet`] with the time the root certificate must be valid at.
pub fn load_fleet_at(path: &Path, now: UtcDateTime) -> Result<SourceFile, LoadError> {
    let read_err = |source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    };
    let at_start = |message: String, hint: &str| {
        LoadError::Invalid(Diagnostics(vec![Diagnostic {
            file: path.to_path_buf(),
            pos: Pos { line: 1, column: 1 },
            path: String::new(),
            message,
            hint: Some(hint.into()),
        }]))
    };
    // Read at most one byte over the limit: a device (`-f /dev/zero`) or a pipe has no size
    // to check beforehand, and must not exhaust memory either.
    let bytes = match read_bounded(path, MAX_FILE_BYTES).map_err(read_err)? {
        Bounded::Whole(bytes) => bytes,
        Bounded::TooLarge => {
            return Err(at_start(
                format!("the file is larger than the {MAX_FILE_BYTES} bytes a fleet file may have"),
                "split the fleet, or check that this is the right file",
            ));
        }
    };
    // The digest (for gitops's commit trailers) on the other core while the text is checked:
    // hashing a 10,000-VM fleet was 9% of `validate`'s instructions, all on its critical path.
    // The text is checked on the calling thread, not in the rayon pool (`rayon::join` from
    // outside the pool runs both halves there): glibc gives a pool thread an arena of its own
    // that grows a page at a time, one `mprotect` each (7,461 calls for 10,000 VMs), while the
    // main thread's grows 128 KiB at a time. That alone was a third of `validate`'s CPU time.
    // The schema's validator is compiled there too (a twentieth of the work, once a process).
    let (sha256, checked) = std::thread::scope(|s| {
        let digest = s.spawn(|| {
            fleet_schema();
            hex(&Sha256::digest(&bytes))
        });
        let checked = std::str::from_utf8(&bytes).map(|text| (text, check_text(text, path)));
        (digest.join().expect("hashing does not panic"), checked)
    });
    let (text, checked) = match checked {
        Ok(checked) => checked,
        Err(e) => {
            let valid = std::str::from_utf8(&bytes[..e.valid_up_to()]).expect("checked prefix");
            return Err(LoadError::Invalid(Diagnostics(vec![Diagnostic {
                file: path.to_path_buf(),
                pos: end_pos(valid),
                path: String::new(),
                message: "the file is not valid UTF-8".into(),
                hint: Some("save the file as UTF-8".into()),
            }])));
        }
    };
    let (fleet, mut warnings) = checked.map_err(LoadError::Invalid)?;
    let at_root_cert = |message: String, hint: &str| Diagnostic {
        file: path.to_path_buf(),
        pos: Document::parse(text, false)
            .expect("parsed above")
            .value_pos("/mesh/rootCert"),
        path: "mesh.rootCert".into(),
        message,
        hint: Some(hint.into()),
    };
    let root_cert = match &fleet.mesh.root_cert {
        None => None,
        Some(rel) => {
            let base = path.parent().unwrap_or(Path::new(""));
            match read_root_cert_checked(&base.join(rel), now) {
                Ok((pem, certs)) => {
                    // A CA rotation in progress: a warning like the fleet's others.
                    let rotation = root_cert::rotation_warnings(&certs);
                    if !rotation.is_empty() {
                        warnings.0.extend(
                            rotation
                                .into_iter()
                                .map(|w| at_root_cert(w, root_cert::ROTATION_HINT)),
                        );
                        warnings.0.sort_by_key(|d| d.pos);
                    }
                    Some(pem)
                }
                Err((message, hint)) => {
                    return Err(LoadError::Invalid(Diagnostics(vec![at_root_cert(
                        message, hint,
                    )])));
                }
            }
        }
    };
    Ok(SourceFile {
        fleet: CheckedFleet::new(fleet, root_cert),
        path: path.to_path_buf(),
        sha256,
        warnings,
    })
}

pub(super) enum Bounded {
    Whole(Vec<u8>),
    TooLarge,
}

/// The file's bytes when it holds at most `limit` of them. `-` is standard input (a fleet
/// piped in; `mesh.rootCert` is then relative to the current directory).
pub(super) fn read_bounded(path: &Path, limit: u64) -> std::io::Result<Bounded> {
    use std::io::Read;
    if path == Path::new(STDIN) {
        let mut bytes = Vec::new();
        std::io::stdin()
            .lock()
            .take(limit + 1)
            .read_to_end(&mut bytes)?;
        return Ok(if bytes.len() as u64 > limit {
            Bounded::TooLarge
        } else {
            Bounded::Whole(bytes)
        });
    }
    let file = std::fs::File::open(path)?;
    if file.metadata()?.len() > limit {
        return Ok(Bounded::TooLarge);
    }
    let mut bytes = Vec::new();
    file.take(limit + 1).read_to_end(&mut bytes)?;
    Ok(if bytes.len() as u64 > limit {
        Bounded::TooLarge
    } else {
        Bounded::Whole(bytes)
    })
}

/// Reads `mesh.rootCert`: a regular file of PEM certificates and nothing else, each a CA
/// certificate valid at `now` (what `meshvm cloud-init` requires of it).
///
/// The file is published: it is committed into the GitOps tree and written into every VM's
/// user-data. A fleet that names another file (`../../.git-credentials`, a private key next to
/// the certificate, `/dev/zero`) must be stopped here, without quoting what the file holds.
pub(super) fn read_root_cert(
    path: &Path,
    now: UtcDateTime,
) -> Result<String, (String, &'static str)> {
    read_root_cert_checked(path, now).map(|(pem, _)| pem)
}

/// [`read_root_cert`], with what the check found of each certificate (for the rotation
/// warning).
fn read_root_cert_checked(
    path: &Path,
    now: UtcDateTime,
) -> Result<(String, Vec<root_cert::RootCert>), (String, &'static str)> {
    let shown = path.display();
    let relative = "the path is relative to the fleet file";
    let meta =
        std::fs::metadata(path).map_err(|e| (format!("cannot read {shown}: {e}"), relative))?;
    if !meta.is_file() {
        return Err((
            format!("{shown} is not a regular file"),
            "name the PEM file of the mesh's root CA certificate",
        ));
    }
    let bytes = match read_bounded(path, MAX_ROOT_CERT_BYTES) {
        Ok(Bounded::Whole(bytes)) => bytes,
        Ok(Bounded::TooLarge) => {
            return Err((
                format!(
                    "{shown} is larger than the {MAX_ROOT_CERT_BYTES} bytes a root CA bundle may have"
                ),
                "name the PEM file of the mesh's root CA certificate",
            ));
        }
        Err(e) => return Err((format!("cannot read {shown}: {e}"), relative)),
    };
    let pem = String::from_utf8(bytes).map_err(|_| {
        (
            format!("{shown} is not a PEM file (it is not text)"),
            "name the PEM file of the mesh's root CA certificate, such as root-cert.pem",
        )
    })?;
    check_certificates_only(&pem).map_err(|why| {
        (
            format!("{shown} {why}"),
            "the root certificate is published in the GitOps tree and every VM's user-data: \
             give a file that holds only `CERTIFICATE` blocks",
        )
    })?;
    let certs = root_cert::check(&pem, now).map_err(|e| (format!("{shown}: {e}"), e.hint()))?;
    Ok((pem, certs))
}

/// Checks that a text is one or more PEM `CERTIFICATE` blocks and nothing else. Errors name
/// what was found, never the content.
fn check_certificates_only(pem: &str) -> Result<(), String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut blocks = 0;
    let mut inside = false;
    for (i, line) in pem.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        let n = i + 1;
        if inside {
            if line == END {
                inside = false;
                blocks += 1;
            } else if line.starts_with("-----") {
                return Err(format!("has a block inside a certificate at line {n}"));
            } else if !line
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
            {
                return Err(format!("has a certificate that is not base64 at line {n}"));
            }
        } else if line == BEGIN {
            inside = true;
        } else if let Some(label) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        {
            return Err(format!(
                "holds a {label} block at line {n}; only certificates may be published"
            ));
        } else if !line.trim().is_empty() {
            return Err(format!("has text outside the certificates at line {n}"));
        }
    }
    if inside {
        return Err("ends inside a certificate".into());
    }
    if blocks == 0 {
        return Err("holds no PEM certificate".into());
    }
    Ok(())
}

/// Parses and checks a fleet from text; `file` names it in diagnostics. The text alone has no
/// directory to read `mesh.rootCert` from: the fleet comes without a root certificate
/// ([`load_fleet`] reads it).
pub fn load_fleet_str(text: &str, file: &Path) -> Result<CheckedFleet, Diagnostics> {
    check_text(text, file).map(|(fleet, _)| CheckedFleet::new(fleet, None))
}

/// The fleet of a text, with its warnings; or all its problems.
fn check_text(text: &str, file: &Path) -> Result<(Fleet, Diagnostics), Diagnostics> {
    let fail = |problems: Vec<(Pos, Problem)>| {
        let mut diags: Vec<Diagnostic> = problems
            .into_iter()
            .map(|(pos, p)| Diagnostic {
                file: file.to_path_buf(),
                pos,
                path: display_path(&p.pointer),
                message: p.message,
                hint: p.hint,
            })
            .collect();
        diags.sort_by_key(|d| d.pos);
        diags.dedup();
        Diagnostics(diags)
    };
    // The tree keeps keys and positions; the values' text moves into the JSON value.
    let Document { value, root } = Document::parse(text, false).map_err(&fail)?;
    // Most files are valid: the yes/no check stops at nothing and builds no error, about
    // half the work of collecting the (no) errors of a large fleet.
    if !fleet_schema().1.is_valid(&value) {
        // Rare: read the file again with the values' text kept, which the messages quote.
        let doc = Document::parse(text, true).map_err(&fail)?;
        let structural = structural_problems(&doc);
        if !structural.is_empty() {
            // A structural problem must not hide the others of the file: check the rest of
            // it with each wrong value set aside, and report what that finds outside them.
            let mut problems = structural;
            problems.extend(semantic_problems_around(&doc.value, &problems));
            return Err(fail(doc.locate(problems)));
        }
    }
    // By value: each string moves into the fleet instead of being copied and dropped.
    let fleet = Fleet::deserialize(value).map_err(|e| {
        fail(vec![(
            Pos { line: 1, column: 1 },
            Problem::new("", e.to_string()),
        )])
    })?;
    let problems = validate::check(&fleet);
    if !problems.is_empty() {
        return Err(fail(root.locate(problems)));
    }
    let warnings = fail(root.locate(validate::warnings(&fleet)));
    Ok((fleet, warnings))
}

/// The semantic problems of a document that has structural ones: each value the schema refused
/// is replaced by a stand-in of the right shape (or dropped, when optional), the rest is read
/// and checked, and what the checks find at or below a replaced value is left out (it is about
/// the stand-in, not the user's text). Nothing when the document cannot be read even so.
fn semantic_problems_around(value: &Value, structural: &[Problem]) -> Vec<Problem> {
    let schema = &fleet_schema().0;
    let mut patched = value.clone();
    let mut replaced: Vec<String> = Vec::new();
    for p in structural {
        let pointer = match &p.missing {
            Some(field) => format!("{}/{}", p.pointer, escape_segment(field)),
            None => p.pointer.clone(),
        };
        if pointer.is_empty() {
            return Vec::new();
        }
        let Some((parent, last)) = pointer.rsplit_once('/') else {
            return Vec::new();
        };
        let last = last.replace("~1", "/").replace("~0", "~");
        let required = schema_at(schema, parent).is_some_and(|node| {
            node.get("required")
                .and_then(Value::as_array)
                .is_some_and(|r| r.iter().any(|f| f.as_str() == Some(last.as_str())))
        });
        let stand_in = schema_at(schema, &pointer).map(|node| stand_in(schema, node, 0));
        match patched.pointer_mut(parent) {
            Some(Value::Object(map)) if p.unknown_field || (!required && p.missing.is_none()) => {
                map.remove(&last);
            }
            Some(Value::Object(map)) => match stand_in {
                Some(v) => {
                    map.insert(last, v);
                }
                None => return Vec::new(),
            },
            Some(Value::Array(items)) => match (last.parse::<usize>(), stand_in) {
                (Ok(i), Some(v)) if i < items.len() => items[i] = v,
                _ => return Vec::new(),
            },
            _ => return Vec::new(),
        }
        replaced.push(pointer);
    }
    let Ok(fleet) = serde_json::from_value::<Fleet>(patched) else {
        return Vec::new();
    };
    validate::check_partial(&fleet)
        .into_iter()
        .filter(|p| {
            !replaced.iter().any(|r| {
                p.pointer == *r
                    || p.pointer.starts_with(&format!("{r}/"))
                    || r.starts_with(&format!("{}/", p.pointer))
            })
        })
        .collect()
}

/// A value the schema `node` accepts: the least one (first enum value, minimum, empty).
fn stand_in(schema: &Value, node: &Value, depth: usize) -> Value {
    let node = resolve_ref(schema, node);
    if let Some(first) = node
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|e| e.first())
    {
        return first.clone();
    }
    if let Some(first) = node
        .get("oneOf")
        .or_else(|| node.get("anyOf"))
        .and_then(Value::as_array)
        .and_then(|b| b.first())
    {
        return stand_in(schema, first, depth + 1);
    }
    if let Some(c) = node.get("const") {
        return c.clone();
    }
    match node.get("type").and_then(Value::as_str) {
        Some("string") => Value::String(String::new()),
        Some("integer" | "number") => node.get("minimum").cloned().unwrap_or(Value::from(0)),
        Some("boolean") => Value::Bool(false),
        Some("array") => Value::Array(Vec::new()),
        Some("object") if depth < 8 => {
            let mut map = Map::new();
            let required = node.get("required").and_then(Value::as_array);
            for field in required.into_iter().flatten().filter_map(Value::as_str) {
                if let Some(child) = node.get("properties").and_then(|p| p.get(field)) {
                    map.insert(field.to_owned(), stand_in(schema, child, depth + 1));
                }
            }
            Value::Object(map)
        }
        _ => Value::Null,
    }
}

fn escape_segment(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

/// A parsed YAML document: its JSON value and the node tree that knows where each part is.
struct Document {
    value: Value,
    root: Node,
}

impl Document {
    /// The document of a text. Without `keep_text`, the text of each value moves into the
    /// JSON value and the tree keeps the keys and positions only: all [`Node::locate`] needs.
    fn parse(text: &str, keep_text: bool) -> Result<Document, Vec<(Pos, Problem)>> {
        let mut root = NodeBuilder::build(text)?;
        let mut problems = Vec::new();
        let value = root.make_json(&mut String::new(), &mut problems, keep_text);
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Document { value, root })
    }

    fn locate(&self, problems: Vec<Problem>) -> Vec<(Pos, Problem)> {
        self.root.locate(problems)
    }

    /// Where the value at a JSON pointer starts; the nearest existing ancestor when it is
    /// missing.
    fn value_pos(&self, pointer: &str) -> Pos {
        self.root.find(pointer, false)
    }
}

/// A YAML node with the position where it starts.
#[derive(Debug, Clone)]
struct Node {
    pos: Pos,
    kind: NodeKind,
    /// Nodes in this subtree, itself included: the cost of copying it for an alias.
    size: usize,
}

#[derive(Debug, Clone)]
enum NodeKind {
    Scalar {
        text: String,
        plain: bool,
        tag: Option<String>,
    },
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// Each problem with the position it points at: its value's, or its key's.
    fn locate(&self, problems: Vec<Problem>) -> Vec<(Pos, Problem)> {
        problems
            .into_iter()
            .map(|p| (self.find(&p.pointer, p.at_key), p))
            .collect()
    }

    fn find(&self, pointer: &str, at_key: bool) -> Pos {
        let mut node = self;
        let segments: Vec<String> = split_pointer(pointer).collect();
        for (i, seg) in segments.iter().enumerate() {
            let last = i + 1 == segments.len();
            match &node.kind {
                NodeKind::Map(entries) => {
                    match entries
                        .iter()
                        .find(|(k, _)| k.scalar_text() == Some(seg.as_str()))
                    {
                        Some((k, _)) if last && at_key => return k.pos,
                        Some((_, v)) => node = v,
                        None => return node.pos,
                    }
                }
                NodeKind::Seq(items) => {
                    match seg.parse::<usize>().ok().and_then(|i| items.get(i)) {
                        Some(item) => node = item,
                        None => return node.pos,
                    }
                }
                NodeKind::Scalar { .. } => return node.pos,
            }
        }
        node.pos
    }

    /// The node at a JSON pointer, when there is one.
    fn at(&self, pointer: &str) -> Option<&Node> {
        let mut node = self;
        for seg in split_pointer(pointer) {
            node = match &node.kind {
                NodeKind::Map(entries) => {
                    &entries
                        .iter()
                        .find(|(k, _)| k.scalar_text() == Some(seg.as_str()))?
                        .1
                }
                NodeKind::Seq(items) => items.get(seg.parse::<usize>().ok()?)?,
                NodeKind::Scalar { .. } => return None,
            };
        }
        Some(node)
    }

    fn scalar_text(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    /// The JSON value of the node; each value's text is moved out of the tree unless
    /// `keep_text`.
    // By index: an entry's value is borrowed mutably and, for a duplicate, the other keys read.
    #[allow(clippy::needless_range_loop)]
    fn make_json(
        &mut self,
        pointer: &mut String,
        problems: &mut Vec<(Pos, Problem)>,
        keep_text: bool,
    ) -> Value {
        let pos = self.pos;
        match &mut self.kind {
            NodeKind::Scalar { text, plain, tag } => {
                let resolved = match tag.as_deref() {
                    Some("str") => None,
                    Some(other) => {
                        problems.push((
                            pos,
                            Problem::new(pointer, format!("the tag `!!{other}` is not supported"))
                                .hint("remove the tag; quote the value to make it a string"),
                        ));
                        Some(Value::Null)
                    }
                    None if *plain => resolve_plain(text),
                    None => None,
                };
                resolved.unwrap_or_else(|| {
                    Value::String(if keep_text {
                        text.clone()
                    } else {
                        std::mem::take(text)
                    })
                })
            }
            NodeKind::Seq(items) => Value::Array(
                items
                    .iter_mut()
                    .enumerate()
                    .map(|(i, item)| {
                        let len = pointer.len();
                        // Written in place: no string a list item.
                        let _ = write!(pointer, "/{i}");
                        let v = item.make_json(pointer, problems, keep_text);
                        pointer.truncate(len);
                        v
                    })
                    .collect(),
            ),
            NodeKind::Map(entries) => {
                let mut map = Map::with_capacity(entries.len());
                for i in 0..entries.len() {
                    let key = &entries[i].0;
                    let Some(name) = key.scalar_text() else {
                        problems.push((
                            key.pos,
                            Problem::new(pointer, "a mapping key must be a plain string")
                                .hint("use a string key, such as `name:`"),
                        ));
                        continue;
                    };
                    let key_pos = key.pos;
                    // The map holds the keys seen so far (one hash a key); the first one's
                    // position is looked up only for a duplicate (a hash map of positions
                    // per mapping cost a tenth of loading a large fleet).
                    let slot = match map.entry(name) {
                        serde_json::map::Entry::Vacant(slot) => slot,
                        serde_json::map::Entry::Occupied(seen) => {
                            let name = seen.key();
                            let first = entries
                                .iter()
                                .find(|(k, _)| k.scalar_text() == Some(name))
                                .map_or(key_pos, |(k, _)| k.pos);
                            problems.push((
                                key_pos,
                                Problem::new(
                                    pointer,
                                    format!(
                                        "duplicate key `{name}` (first at line {})",
                                        first.line
                                    ),
                                )
                                .hint("keep one of them: YAML readers disagree on which one wins"),
                            ));
                            continue;
                        }
                    };
                    let len = pointer.len();
                    pointer.push('/');
                    let name = slot.key();
                    if name.contains(['~', '/']) {
                        pointer.push_str(&name.replace('~', "~0").replace('/', "~1"));
                    } else {
                        pointer.push_str(name);
                    }
                    let v = entries[i].1.make_json(pointer, problems, keep_text);
                    pointer.truncate(len);
                    slot.insert(v);
                }
                Value::Object(map)
            }
        }
    }
}

/// Resolves a plain scalar by the YAML 1.2 core schema; `None` for a string.
fn resolve_plain(text: &str) -> Option<Value> {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Some(Value::Null),
        "true" | "True" | "TRUE" => return Some(Value::Bool(true)),
        "false" | "False" | "FALSE" => return Some(Value::Bool(false)),
        _ => {}
    }
    let digits = |s: &str, radix: u32| !s.is_empty() && s.chars().all(|c| c.is_digit(radix));
    let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
    if digits(unsigned, 10) {
        if let Ok(i) = text.parse::<i64>() {
            return Some(Value::Number(i.into()));
        }
        if let Ok(u) = text.parse::<u64>() {
            return Some(Value::Number(u.into()));
        }
    }
    for (prefix, radix) in [("0x", 16), ("0o", 8)] {
        if let Some(rest) = text.strip_prefix(prefix) {
            if digits(rest, radix) {
                if let Ok(u) = u64::from_str_radix(rest, radix) {
                    return Some(Value::Number(u.into()));
                }
            }
        }
    }
    if looks_like_float(unsigned) {
        if let Some(n) = text.parse::<f64>().ok().and_then(Number::from_f64) {
            return Some(Value::Number(n));
        }
    }
    None
}

/// `[0-9]*(\.[0-9]*)?([eE][-+]?[0-9]+)?` with at least one digit before the exponent.
fn looks_like_float(s: &str) -> bool {
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let all_digits = |t: &str| t.chars().all(|c| c.is_ascii_digit());
    let mantissa_ok = (!int.is_empty() || !frac.is_empty()) && all_digits(int) && all_digits(frac);
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && all_digits(e)
    });
    mantissa_ok && exponent_ok && (mantissa.contains('.') || exponent.is_some())
}

/// Builds the node tree from the parser's events, with limits on depth and alias expansion.
struct NodeBuilder {
    /// Open collections: the node and, for mappings, a key waiting for its value.
    stack: Vec<(Node, Option<Node>)>,
    anchors: HashMap<usize, Node>,
    /// Anchor id of each open collection, to register it when it closes.
    open_anchors: Vec<usize>,
    nodes: usize,
    documents: usize,
    root: Option<Node>,
}

impl NodeBuilder {
    fn build(text: &str) -> Result<Node, Vec<(Pos, Problem)>> {
        let mut b = NodeBuilder {
            stack: Vec::new(),
            anchors: HashMap::new(),
            open_anchors: Vec::new(),
            nodes: 0,
            documents: 0,
            root: None,
        };
        let mut parser = Parser::new_from_str(text);
        while let Some(event) = parser.next_event() {
            let (event, span) = event.map_err(|e| vec![scan_problem(&e)])?;
            b.on_event(event, span)?;
        }
        match b.root {
            Some(root) => Ok(root),
            None => Err(vec![(
                Pos { line: 1, column: 1 },
                Problem::new("", "the file holds no fleet: it is empty")
                    .hint("`meshvm init` writes a commented starter fleet file"),
            )]),
        }
    }

    fn on_event(&mut self, event: Event<'_>, span: Span) -> Result<(), Vec<(Pos, Problem)>> {
        let pos = Pos {
            line: span.start.line(),
            column: span.start.col() + 1,
        };
        let limit = |message: String, hint: &str| vec![(pos, Problem::new("", message).hint(hint))];
        match event {
            Event::DocumentStart(_) => {
                self.documents += 1;
                if self.documents > 1 {
                    return Err(limit(
                        "the file holds more than one YAML document".into(),
                        "a fleet file is one document: remove the `---` and what follows",
                    ));
                }
            }
            Event::Scalar(text, style, anchor, tag) => {
                let tag = tag.map(|t| tag_name(&t));
                let node = Node {
                    pos,
                    kind: NodeKind::Scalar {
                        text: text.into_owned(),
                        plain: matches!(style, ScalarStyle::Plain),
                        tag,
                    },
                    size: 1,
                };
                if anchor > 0 {
                    self.anchors.insert(anchor, node.clone());
                }
                self.push(node, 1)?;
            }
            Event::Alias(id) => {
                let Some(node) = self.anchors.get(&id) else {
                    return Err(limit(
                        "an alias names an unknown anchor".into(),
                        "define the anchor (`&name`) before its alias (`*name`)",
                    ));
                };
                if self.nodes + node.size > MAX_NODES {
                    return Err(self.too_many_nodes(pos));
                }
                let mut node = node.clone();
                node.pos = pos;
                let size = node.size;
                self.push(node, size)?;
            }
            Event::SequenceStart(anchor, ref tag) | Event::MappingStart(anchor, ref tag) => {
                // A tag on a collection would be silently dropped; unsafe YAML loaders run
                // code for some (`!!python/object/apply:os.system`): refuse them all.
                if let Some(tag) = tag.as_deref().map(tag_name) {
                    if tag != "seq" && tag != "map" {
                        return Err(limit(
                            format!("the tag `!!{tag}` is not supported"),
                            "remove the tag",
                        ));
                    }
                }
                if self.stack.len() >= MAX_DEPTH {
                    return Err(limit(
                        format!("the document nests deeper than {MAX_DEPTH} levels"),
                        "a fleet file needs only a few levels; check the indentation",
                    ));
                }
                let kind = if matches!(event, Event::SequenceStart(..)) {
                    NodeKind::Seq(Vec::new())
                } else {
                    NodeKind::Map(Vec::new())
                };
                self.stack.push((Node { pos, kind, size: 1 }, None));
                self.open_anchors.push(anchor);
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, _) = self.stack.pop().expect("parser balances collections");
                let anchor = self
                    .open_anchors
                    .pop()
                    .expect("parser balances collections");
                if anchor > 0 {
                    self.anchors.insert(anchor, node.clone());
                }
                self.push(node, 1)?;
            }
            _ => {}
        }
        Ok(())
    }

    fn too_many_nodes(&self, pos: Pos) -> Vec<(Pos, Problem)> {
        vec![(
            pos,
            Problem::new(
                "",
                format!("the document expands to more than {MAX_NODES} nodes"),
            )
            .hint("aliases (`*name`) copy what their anchor holds: check for an alias bomb"),
        )]
    }

    /// Adds a finished node to its parent; `created` is how many nodes it adds to the
    /// document (a collection's children were counted as they were pushed; an alias copies
    /// its whole anchor).
    fn push(&mut self, node: Node, created: usize) -> Result<(), Vec<(Pos, Problem)>> {
        self.nodes += created;
        if self.nodes > MAX_NODES {
            return Err(vec![(
                node.pos,
                Problem::new(
                    "",
                    format!("the document expands to more than {MAX_NODES} nodes"),
                )
                .hint("aliases (`*name`) copy what their anchor holds: check for an alias bomb"),
            )]);
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some((parent, pending_key)) => {
                parent.size += node.size;
                match &mut parent.kind {
                    NodeKind::Seq(items) => items.push(node),
                    NodeKind::Map(entries) => match pending_key.take() {
                        None => *pending_key = Some(node),
                        Some(key) => entries.push((key, node)),
                    },
                    NodeKind::Scalar { .. } => unreachable!("only collections are open"),
                }
            }
        }
        Ok(())
    }
}

/// A tag as written after `!!` for the YAML core tags, else in full.
fn tag_name(t: &saphyr_parser::Tag) -> String {
    if t.handle == "tag:yaml.org,2002:" || t.handle == "!!" {
        t.suffix.clone()
    } else {
        format!("{}{}", t.handle, t.suffix)
    }
}

fn scan_problem(e: &ScanError) -> (Pos, Problem) {
    let pos = Pos {
        line: e.marker().line(),
        column: e.marker().col() + 1,
    };
    (
        pos,
        Problem::new("", format!("invalid YAML: {}", e.info()))
            .hint("check the indentation and quoting around this position"),
    )
}

/// The structural problems of a fleet document: what the fleet's JSON Schema rejects.
fn structural_problems(doc: &Document) -> Vec<Problem> {
    let (schema, validator) = fleet_schema();
    let mut problems = Vec::new();
    for error in validator.iter_errors(&doc.value) {
        let pointer = error.instance_path().as_str().to_owned();
        let source = doc.root.at(&pointer).and_then(|node| match &node.kind {
            NodeKind::Scalar { text, plain, .. } => Some(Source {
                text: text.as_str(),
                plain: *plain,
            }),
            _ => None,
        });
        problems.extend(describe_schema_error(
            schema,
            &pointer,
            error.kind(),
            error.instance(),
            source,
        ));
    }
    problems
}

fn fleet_schema() -> &'static (Value, jsonschema::Validator) {
    static SCHEMA: OnceLock<(Value, jsonschema::Validator)> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let schema = Fleet::json_schema();
        let validator = jsonschema::validator_for(&schema).expect("the fleet schema compiles");
        (schema, validator)
    })
}

/// A scalar as written in the file: its text, and whether it was plain (unquoted).
#[derive(Clone, Copy)]
struct Source<'a> {
    text: &'a str,
    plain: bool,
}

/// The range the schema gives the integer at `pointer`, as `(minimum, maximum)`.
fn integer_range(schema: &Value, pointer: &str) -> (u64, u64) {
    let node = schema_at(schema, pointer);
    let bound = |key: &str, default: u64| {
        node.and_then(|n| n.get(key))
            .and_then(Value::as_u64)
            .unwrap_or(default)
    };
    (bound("minimum", 0), bound("maximum", u64::from(u32::MAX)))
}

/// What a number out of range is told: ports by their own name, other integers by the range.
fn out_of_range(schema: &Value, pointer: &str, shown: &str) -> Problem {
    let (min, max) = integer_range(schema, pointer);
    if (min, max) == (1, 65535) {
        Problem::new(pointer, format!("{shown} is not a port number (1–65535)"))
            .hint("ports are numbered 1 to 65535")
    } else {
        Problem::new(pointer, format!("{shown} is out of range ({min}–{max})"))
            .hint(format!("integers here are between {min} and {max}"))
    }
}

fn describe_schema_error(
    schema: &Value,
    pointer: &str,
    kind: &jsonschema::error::ValidationErrorKind,
    instance: &Value,
    source: Option<Source<'_>>,
) -> Vec<Problem> {
    use jsonschema::error::{TypeKind, ValidationErrorKind as K};
    match kind {
        K::AdditionalProperties { unexpected } => unexpected
            .iter()
            .map(|name| {
                let known = known_fields(schema, pointer);
                let child = format!("{pointer}/{}", name.replace('~', "~0").replace('/', "~1"));
                let mut problem = Problem::new(&child, format!("unknown field `{name}`")).at_key();
                problem.unknown_field = true;
                problem.hint = Some(match did_you_mean(name, &known) {
                    Some(best) => format!("did you mean `{best}`?"),
                    None if known.is_empty() => "remove it".to_owned(),
                    None => format!("expected one of: {}", known.join(", ")),
                });
                problem
            })
            .collect(),
        K::Required { property } => {
            let name = property.as_str().unwrap_or_default();
            let mut problem = Problem::new(pointer, format!("missing field `{name}`"))
                .hint(format!("add `{name}:` here; docs/fleet.md describes it"));
            problem.missing = Some(name.to_owned());
            vec![problem]
        }
        K::Type { kind } => {
            let expected = match kind {
                TypeKind::Single(t) => type_name(&t.to_string()).to_owned(),
                TypeKind::Multiple(ts) => {
                    let names: Vec<String> = (*ts)
                        .into_iter()
                        .map(|t| type_name(&t.to_string()).to_owned())
                        .collect();
                    names.join(" or ")
                }
            };
            let digits = instance.as_str().is_some_and(|s| {
                let s = s.strip_prefix(['-', '+']).unwrap_or(s);
                !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
            });
            // Plain digits too large for any integer were read as a string; quoted digits are
            // a string the user wrote.
            if expected == "an integer" && digits && source.is_none_or(|s| s.plain) {
                return vec![out_of_range(
                    schema,
                    pointer,
                    instance.as_str().unwrap_or_default(),
                )];
            }
            let found = json_type_name(instance);
            // A plain scalar as written: YAML reads `1.20` as the number 1.2.
            let shown = match source {
                Some(s) if s.plain && !instance.is_string() => s.text.to_owned(),
                _ => short_json(instance),
            };
            let mut problem = Problem::new(
                pointer,
                format!("expected {expected}, found {found} {shown}"),
            );
            // Quote what the user wrote, not what YAML made of it: `1.20` is not `1.2`.
            let written = source.map_or_else(|| instance.to_string(), |s| s.text.to_owned());
            problem.hint = match (expected.as_str(), instance) {
                ("a string", Value::Number(_) | Value::Bool(_)) => Some(format!(
                    "quote it to make it a string: {}",
                    serde_json::Value::String(written)
                )),
                ("an integer", Value::String(_)) if digits => Some(format!(
                    "remove the quotes: write {}",
                    instance.as_str().unwrap_or_default()
                )),
                ("a boolean", Value::String(s))
                    if matches!(
                        s.to_ascii_lowercase().as_str(),
                        "yes" | "no" | "on" | "off" | "y" | "n"
                    ) =>
                {
                    Some(
                        "write `true` or `false` (YAML 1.2 reads `yes`/`no`/`on`/`off` as strings)"
                            .into(),
                    )
                }
                (_, Value::Null) => Some("give it a value, or remove the line".into()),
                _ => Some(format!(
                    "write {expected} here; docs/fleet.md describes the field"
                )),
            };
            vec![problem]
        }
        K::Enum { options } => {
            let allowed: Vec<String> = options
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            let got = instance.as_str().unwrap_or_default();
            let mut problem = Problem::new(
                pointer,
                format!(
                    "{} is not one of: {}",
                    short_json(instance),
                    allowed.join(", ")
                ),
            );
            problem.hint = Some(match did_you_mean(got, &allowed) {
                Some(best) => format!("did you mean `{best}`?"),
                None => format!("write one of: {}", allowed.join(", ")),
            });
            vec![problem]
        }
        K::Minimum { .. } | K::Maximum { .. } if instance.is_number() => {
            let shown = source.map_or_else(|| instance.to_string(), |s| s.text.to_owned());
            vec![out_of_range(schema, pointer, &shown)]
        }
        // The shape of strings (patterns, lengths), the constants and the least lengths are in
        // the schema for editors; the semantic checks report each of them, with a better
        // message, so the structural check leaves them to those.
        K::Pattern { .. }
        | K::MinLength { .. }
        | K::MaxLength { .. }
        | K::MinItems { .. }
        | K::Constant { .. }
        | K::PropertyNames { .. } => Vec::new(),
        K::MaxItems { limit } => vec![
            Problem::new(
                pointer,
                format!(
                    "the list has {} items; Istio's CRDs allow at most {limit}",
                    instance.as_array().map_or(0, Vec::len)
                ),
            )
            .hint("split the service, or remove items"),
        ],
        K::MaxProperties { limit } => vec![
            Problem::new(
                pointer,
                format!(
                    "the mapping has {} entries; Istio's CRDs allow at most {limit}",
                    instance.as_object().map_or(0, Map::len)
                ),
            )
            .hint("remove entries"),
        ],
        _ => vec![
            Problem::new(
                pointer,
                format!("{} is not valid here", short_json(instance)),
            )
            .hint("docs/fleet.md describes the field"),
        ],
    }
}

/// The field names the schema allows in the object at `pointer`.
fn known_fields(schema: &Value, pointer: &str) -> Vec<String> {
    schema_at(schema, pointer)
        .and_then(|node| node.get("properties"))
        .and_then(Value::as_object)
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default()
}

/// The schema of the value at `pointer` in a fleet document, its `$ref`s resolved.
fn schema_at<'a>(schema: &'a Value, pointer: &str) -> Option<&'a Value> {
    let mut node = schema;
    for seg in split_pointer(pointer) {
        node = resolve_ref(schema, node);
        node = if let Some(child) = node.get("properties").and_then(|p| p.get(&seg)) {
            child
        } else if let Some(items) = node.get("items") {
            items
        } else {
            node.get("additionalProperties").filter(|v| v.is_object())?
        };
    }
    Some(resolve_ref(schema, node))
}

fn resolve_ref<'a>(schema: &'a Value, mut node: &'a Value) -> &'a Value {
    while let Some(reference) = node.get("$ref").and_then(Value::as_str) {
        match reference.strip_prefix('#').and_then(|p| schema.pointer(p)) {
            Some(target) => node = target,
            None => break,
        }
    }
    node
}

/// The closest of `candidates` to a misspelt `word`, when one is close enough.
pub(crate) fn did_you_mean<'a>(word: &str, candidates: &'a [String]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| {
            (
                strsim::jaro_winkler(&word.to_lowercase(), &c.to_lowercase()),
                c,
            )
        })
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c.as_str())
}

fn type_name(json_type: &str) -> &'static str {
    match json_type {
        "string" => "a string",
        "integer" => "an integer",
        "number" => "a number",
        "boolean" => "a boolean",
        "array" => "a list",
        "object" => "a mapping",
        "null" => "nothing",
        _ => "another type",
    }
}

fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a number",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// A value for a message: scalars as written, collections elided.
fn short_json(value: &Value) -> String {
    match value {
        Value::Array(_) => "[…]".into(),
        Value::Object(_) => "{…}".into(),
        Value::Null => "(empty)".into(),
        Value::String(s) if s.chars().count() > 60 => {
            format!(
                "{:?}",
                format!("{}…", s.chars().take(60).collect::<String>())
            )
        }
        other => other.to_string(),
    }
}

fn split_pointer(pointer: &str) -> impl Iterator<Item = String> + '_ {
    pointer
        .split('/')
        .skip(1)
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
}

/// A JSON pointer as users write paths: `/workloads/0/name` → `workloads[0].name`.
pub(crate) fn display_path(pointer: &str) -> String {
    let mut out = String::new();
    for seg in split_pointer(pointer) {
        if seg.parse::<usize>().is_ok() {
            out.push_str(&format!("[{seg}]"));
        } else if seg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            && !seg.is_empty()
        {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&seg);
        } else {
            out.push_str(&format!("[{seg:?}]"));
        }
    }
    out
}

fn end_pos(text: &str) -> Pos {
    let line = text.matches('\n').count() + 1;
    let column = text.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    Pos { line, column }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::{Document, LoadError, UtcDateTime, Value, check_certificates_only, load_fleet_at};

    /// Every JSON pointer of a value, the root's included.
    fn pointers(value: &Value, at: String, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    let k = k.replace('~', "~0").replace('/', "~1");
                    pointers(v, format!("{at}/{k}"), out);
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    pointers(v, format!("{at}/{i}"), out);
                }
            }
            _ => {}
        }
        out.push(at);
    }

    /// The fast read moves the values' text out of the tree: the value is the same, and every
    /// key and value is found where the tree that keeps the text finds it.
    #[test]
    fn the_tree_without_text_locates_as_the_tree_with_it() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/fleets");
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).expect("fixtures/fleets") {
            let fleet = entry.expect("a directory entry").path();
            let Ok(text) = std::fs::read_to_string(fleet.join("meshvm.yaml")) else {
                continue;
            };
            let fleet = fleet.display();
            let with = Document::parse(&text, true).expect("a valid fixture parses");
            let without = Document::parse(&text, false).expect("a valid fixture parses");
            assert_eq!(with.value, without.value, "{fleet}");
            let mut all = Vec::new();
            pointers(&with.value, String::new(), &mut all);
            assert!(all.len() > 20, "{fleet}: {} pointers", all.len());
            for p in &all {
                for at_key in [false, true] {
                    assert_eq!(
                        with.root.find(p, at_key),
                        without.root.find(p, at_key),
                        "{fleet}: {p}"
                    );
                }
            }
            checked += 1;
        }
        assert!(checked >= 9, "only {checked} fixture fleets found");
    }

    /// The root certificate is checked against the time the loader is given: the fixture CA
    /// is valid from 2026-11-26 to 2126-11-02.
    #[test]
    fn the_root_certificate_is_checked_at_the_given_time() {
        let fleet = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fixtures/fleets/single-network/meshvm.yaml");
        let at = |secs| load_fleet_at(&fleet, UtcDateTime::from_unix_timestamp(secs).unwrap());
        assert!(at(1_900_000_000).unwrap().fleet.root_cert().is_some());
        for (secs, expected) in [
            (5_000_000_000, "expired at 2126-11-02T"),
            (1_700_000_000, "is not valid before 2026-11-26T"),
        ] {
            let Err(LoadError::Invalid(diags)) = at(secs) else {
                panic!("accepted at {secs}");
            };
            let diag = &diags.0[0];
            assert_eq!(diag.path, "mesh.rootCert");
            assert!(diag.message.contains(expected), "{}", diag.message);
        }
    }

    #[test]
    fn only_certificates_pass() {
        let cert = "-----BEGIN CERTIFICATE-----\nQUJD\n-----END CERTIFICATE-----\n";
        assert_eq!(check_certificates_only(cert), Ok(()));
        assert_eq!(check_certificates_only(&format!("{cert}\n{cert}")), Ok(()));
        assert_eq!(check_certificates_only(&cert.replace('\n', "\r\n")), Ok(()));
        for bad in [
            "",
            "QUJD",
            "-----BEGIN CERTIFICATE-----\nQUJD\n",
            "-----BEGIN RSA PRIVATE KEY-----\nQUJD\n-----END RSA PRIVATE KEY-----\n",
            "password=hunter2\n-----BEGIN CERTIFICATE-----\nQUJD\n-----END CERTIFICATE-----\n",
            "-----BEGIN CERTIFICATE-----\nQU JD\n-----END CERTIFICATE-----\n",
        ] {
            let err = check_certificates_only(bad).expect_err(bad);
            assert!(!err.contains("hunter2") && !err.contains("QUJD"), "{err}");
        }
    }
}
