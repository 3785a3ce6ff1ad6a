//! Verdicts on Kubernetes objects against their JSON schemas, as kubeconform gives them.
//!
//! ```no_run
//! use xtask::{schemas::SchemaLocations, validate::Validator};
//! let validator = Validator::new(SchemaLocations::from_env_or_default());
//! let report = validator.validate_path("out/clusters/cluster1".as_ref()).unwrap();
//! assert!(report.is_success(), "{}", report.to_text());
//! ```
//!
//! Architecture invariant: a verdict is data (no printing here); the text and JSON forms are
//! built from it, and the exit status follows from [`Report::is_success`].

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde_json::Value;

use crate::kube::{self, Source};
use crate::schemas::{self, Fetched, SchemaLocations, TemplateVars};

/// kubeconform's flags that change a verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Use the `-strict` schemas (no unknown fields) and reject duplicate keys.
    pub strict: bool,
    /// `master` or a version such as `1.30.0`.
    pub kubernetes_version: String,
    /// A kind without a schema is skipped instead of failing.
    pub ignore_missing_schemas: bool,
    /// Kinds (`Kind` or `apiVersion/Kind`) to skip.
    pub skip_kinds: Vec<String>,
}

impl Default for Options {
    /// Strict, against `master`: how meshvm's own output must validate.
    fn default() -> Self {
        Options {
            strict: true,
            kubernetes_version: "master".to_string(),
            ignore_missing_schemas: false,
            skip_kinds: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Status {
    #[serde(rename = "statusValid")]
    Valid,
    #[serde(rename = "statusInvalid")]
    Invalid,
    /// The object could not be checked: unreadable, no kind, no schema, schema unreachable.
    #[serde(rename = "statusError")]
    Error,
    #[serde(rename = "statusSkipped")]
    Skipped,
}

/// One schema violation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// JSON pointer into the object (`/spec/ports/0/port`); empty for the whole object.
    pub path: String,
    #[serde(rename = "msg")]
    pub message: String,
}

/// The verdict on one object (or on a whole stream that could not be read).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// The file, or `DIR (kustomize build)`.
    #[serde(rename = "filename")]
    pub source: String,
    /// 1-based document index in the stream; 0 when the stream itself failed.
    pub document: usize,
    /// 1-based line where the document starts; 0 when the stream itself failed.
    pub line: usize,
    pub kind: String,
    pub name: String,
    #[serde(rename = "version")]
    pub api_version: String,
    pub status: Status,
    /// Why the verdict is Error (empty otherwise).
    #[serde(rename = "msg")]
    pub message: String,
    /// The violations when Invalid.
    #[serde(rename = "validationErrors")]
    pub problems: Vec<Problem>,
    /// The schema the object was checked against.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
}

impl Verdict {
    fn new(source: &str, document: usize, line: usize, status: Status) -> Self {
        Verdict {
            source: source.to_string(),
            document,
            line,
            kind: String::new(),
            name: String::new(),
            api_version: String::new(),
            status,
            message: String::new(),
            problems: Vec::new(),
            schema: None,
        }
    }

    /// `file:line: document N: Kind name`, or just the file for a stream-level failure.
    pub fn locator(&self) -> String {
        let mut s = self.source.clone();
        if self.document > 0 {
            let _ = write!(s, ":{}: document {}", self.line, self.document);
        }
        let object = format!("{} {}", self.kind, self.name);
        if !object.trim().is_empty() {
            let _ = write!(s, ": {}", object.trim());
        }
        s
    }

    /// The text lines for this verdict: one per problem, none when valid or skipped.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        match self.status {
            Status::Valid | Status::Skipped => {}
            Status::Invalid => {
                for p in &self.problems {
                    let path = if p.path.is_empty() { "(root)" } else { &p.path };
                    let _ = writeln!(out, "{} is invalid: {path}: {}", self.locator(), p.message);
                }
            }
            Status::Error => {
                let _ = writeln!(
                    out,
                    "{} failed validation: {}",
                    self.locator(),
                    self.message
                );
            }
        }
        out
    }
}

/// Counts per status, as kubeconform's summary has them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub valid: usize,
    pub invalid: usize,
    pub errors: usize,
    pub skipped: usize,
}

/// The verdicts on a set of streams.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// How many streams (files and kustomize builds) were read.
    pub files: usize,
    pub verdicts: Vec<Verdict>,
}

impl Report {
    pub fn summary(&self) -> Summary {
        let mut s = Summary::default();
        for v in &self.verdicts {
            *match v.status {
                Status::Valid => &mut s.valid,
                Status::Invalid => &mut s.invalid,
                Status::Error => &mut s.errors,
                Status::Skipped => &mut s.skipped,
            } += 1;
        }
        s
    }

    /// No invalid object and no error (missing schemas are errors unless ignored).
    pub fn is_success(&self) -> bool {
        let s = self.summary();
        s.invalid == 0 && s.errors == 0
    }

    /// kubeconform's summary line.
    pub fn summary_line(&self) -> String {
        let s = self.summary();
        let n = self.verdicts.len();
        format!(
            "Summary: {n} resource{} found in {} file{} - Valid: {}, Invalid: {}, Errors: {}, Skipped: {}",
            if n == 1 { "" } else { "s" },
            self.files,
            if self.files == 1 { "" } else { "s" },
            s.valid,
            s.invalid,
            s.errors,
            s.skipped
        )
    }

    /// Every problem, one per line, then the summary line.
    pub fn to_text(&self) -> String {
        let mut out: String = self.verdicts.iter().map(Verdict::to_text).collect();
        out.push_str(&self.summary_line());
        out.push('\n');
        out
    }

    /// kubeconform's JSON shape: `{"resources": [...], "summary": {...}}`, every verdict listed.
    pub fn to_json(&self) -> Value {
        serde_json::json!({ "resources": self.verdicts, "summary": self.summary() })
    }

    pub fn extend(&mut self, other: Report) {
        self.files += other.files;
        self.verdicts.extend(other.verdicts);
    }
}

/// What a (kind, apiVersion) resolved to; remembered for the validator's lifetime.
#[derive(Clone)]
enum Resolved {
    Found {
        validator: Arc<jsonschema::Validator>,
        location: String,
    },
    Missing {
        tried: Vec<String>,
    },
    Failed(String),
}

/// Checks objects against schemas found through [`SchemaLocations`]. Schemas are fetched and
/// compiled once per kind and apiVersion. Shareable between threads.
pub struct Validator {
    locations: SchemaLocations,
    options: Options,
    resolved: Mutex<HashMap<(String, String), Resolved>>,
}

impl Validator {
    /// A validator with [`Options::default`] (strict, Kubernetes `master`).
    pub fn new(locations: SchemaLocations) -> Self {
        Self::with_options(locations, Options::default())
    }

    pub fn with_options(locations: SchemaLocations, options: Options) -> Self {
        Validator {
            locations,
            options,
            resolved: Mutex::new(HashMap::new()),
        }
    }

    pub fn locations(&self) -> &SchemaLocations {
        &self.locations
    }

    pub fn options(&self) -> &Options {
        &self.options
    }

    /// The verdicts on every non-empty document of a YAML stream.
    pub fn validate_stream(&self, source: &str, text: &str) -> Vec<Verdict> {
        kube::read_stream(text, self.options.strict)
            .into_iter()
            .map(|doc| {
                let mut verdict = Verdict::new(source, doc.index, doc.line, Status::Valid);
                match doc.content {
                    Ok(object) => self.judge(&mut verdict, &object),
                    Err(message) => {
                        verdict.status = Status::Error;
                        verdict.message = message;
                    }
                }
                verdict
            })
            .collect()
    }

    /// The verdicts on a file, or on a directory walked as [`kube::collect_sources`] does.
    pub fn validate_path(&self, path: &Path) -> std::io::Result<Report> {
        Ok(self.validate_sources(&kube::collect_sources(path)?))
    }

    pub fn validate_sources(&self, sources: &[Source]) -> Report {
        let mut report = Report {
            files: sources.len(),
            verdicts: Vec::new(),
        };
        for source in sources {
            match &source.text {
                Ok(text) => report
                    .verdicts
                    .extend(self.validate_stream(&source.name, text)),
                Err(message) => {
                    let mut v = Verdict::new(&source.name, 0, 0, Status::Error);
                    v.message = message.clone();
                    report.verdicts.push(v);
                }
            }
        }
        report
    }

    fn judge(&self, verdict: &mut Verdict, object: &Value) {
        let field = |key: &str| object.get(key).and_then(Value::as_str).unwrap_or_default();
        verdict.api_version = field("apiVersion").to_string();
        verdict.kind = field("kind").to_string();
        verdict.name = object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let missing = match (verdict.api_version.is_empty(), verdict.kind.is_empty()) {
            _ if !object.is_object() => Some("the document is not a mapping"),
            (_, true) => Some("missing 'kind' key"),
            (true, _) => Some("missing 'apiVersion' key"),
            _ => None,
        };
        if let Some(what) = missing {
            verdict.status = Status::Error;
            verdict.message = format!("error while parsing: {what}");
            return;
        }
        let gvk = format!("{}/{}", verdict.api_version, verdict.kind);
        if self
            .options
            .skip_kinds
            .iter()
            .any(|k| *k == verdict.kind || *k == gvk)
        {
            verdict.status = Status::Skipped;
            return;
        }
        match self.resolve(&verdict.kind, &verdict.api_version) {
            Resolved::Found {
                validator,
                location,
            } => {
                verdict.schema = Some(location);
                verdict.problems = validator
                    .iter_errors(object)
                    .map(|e| Problem {
                        path: e.instance_path().to_string(),
                        message: e.to_string(),
                    })
                    .collect();
                if !verdict.problems.is_empty() {
                    verdict.status = Status::Invalid;
                }
            }
            Resolved::Missing { .. } if self.options.ignore_missing_schemas => {
                verdict.status = Status::Skipped;
            }
            Resolved::Missing { tried } => {
                verdict.status = Status::Error;
                verdict.message = format!(
                    "could not find schema for {} (tried {}); {}",
                    verdict.kind,
                    tried.join(", "),
                    schemas::HOW_TO_POINT
                );
            }
            Resolved::Failed(message) => {
                verdict.status = Status::Error;
                verdict.message = message;
            }
        }
    }

    fn resolve(&self, kind: &str, api_version: &str) -> Resolved {
        let key = (kind.to_string(), api_version.to_string());
        if let Some(r) = self.resolved.lock().expect("not poisoned").get(&key) {
            return r.clone();
        }
        let resolved = self.lookup(kind, api_version);
        self.resolved
            .lock()
            .expect("not poisoned")
            .insert(key, resolved.clone());
        resolved
    }

    /// Tries each location in order, as kubeconform does: a missing file, a 404 or a document
    /// that is not a usable schema moves on; any other failure stops.
    fn lookup(&self, kind: &str, api_version: &str) -> Resolved {
        let vars = TemplateVars::new(
            kind,
            api_version,
            &self.options.kubernetes_version,
            self.options.strict,
        );
        let mut tried = Vec::new();
        for template in &self.locations.kubernetes {
            let location = match schemas::expand(template, &vars) {
                Ok(l) => l,
                Err(e) => return Resolved::Failed(format!("schema location `{template}`: {e}")),
            };
            match schemas::fetch(&location, self.locations.cache_dir.as_deref()) {
                Ok(Fetched::Found(bytes)) => match compile(&bytes) {
                    Ok(validator) => {
                        return Resolved::Found {
                            validator: Arc::new(validator),
                            location,
                        };
                    }
                    Err(why) => tried.push(format!("{location} ({why})")),
                },
                Ok(Fetched::NotFound) => tried.push(location),
                Err(e) => return Resolved::Failed(e.to_string()),
            }
        }
        Resolved::Missing { tried }
    }
}

/// Compiles a schema as kubeconform does: draft 4 unless the schema says otherwise, formats
/// asserted (`date-time`, `hostname`, `uri`, …), unknown formats (`int-or-string`) ignored.
pub fn compile(bytes: &[u8]) -> Result<jsonschema::Validator, String> {
    let schema: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    let draft = match jsonschema::Draft::Draft4.detect(&schema) {
        jsonschema::Draft::Unknown => jsonschema::Draft::Draft4,
        declared => declared,
    };
    let options = jsonschema::options()
        .with_draft(draft)
        .should_validate_formats(true);
    options
        .build(&schema)
        .map_err(|e| format!("not a usable schema: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let strict = dir.path().join("master-standalone-strict");
        std::fs::create_dir_all(&strict).unwrap();
        std::fs::write(
            strict.join("thing-v1.json"),
            r#"{"type": "object", "additionalProperties": false, "required": ["spec"],
                "properties": {"apiVersion": {}, "kind": {}, "metadata": {},
                  "spec": {"type": "object", "properties": {"port": {"type": "integer"}}}}}"#,
        )
        .unwrap();
        dir
    }

    #[test]
    fn gives_kubeconform_verdicts() {
        let dir = schema_dir();
        let validator = Validator::new(SchemaLocations::from_root(dir.path().to_string_lossy()));
        let text = "apiVersion: v1\nkind: Thing\nmetadata: {name: a}\nspec: {port: 1}\n---\n\
            apiVersion: v1\nkind: Thing\nmetadata: {name: b}\nspec: {port: x}\nextra: 1\n---\n\
            apiVersion: v1\nkind: Other\nmetadata: {name: c}\n---\nkind: Thing\n";
        let verdicts = validator.validate_stream("s.yaml", text);
        let statuses: Vec<_> = verdicts.iter().map(|v| v.status).collect();
        assert_eq!(
            statuses,
            [Status::Valid, Status::Invalid, Status::Error, Status::Error]
        );
        let paths: Vec<_> = verdicts[1]
            .problems
            .iter()
            .map(|p| p.path.as_str())
            .collect();
        assert_eq!(paths.len(), 2, "{:?}", verdicts[1].problems);
        assert!(paths.contains(&"/spec/port") && paths.contains(&""));
        assert_eq!(verdicts[1].locator(), "s.yaml:5: document 2: Thing b");
        assert!(
            verdicts[2]
                .message
                .starts_with("could not find schema for Other (tried ")
        );
        assert_eq!(
            verdicts[3].message,
            "error while parsing: missing 'apiVersion' key"
        );

        let report = Report { files: 1, verdicts };
        assert!(!report.is_success());
        assert_eq!(
            report.summary_line(),
            "Summary: 4 resources found in 1 file - Valid: 1, Invalid: 1, Errors: 2, Skipped: 0"
        );
    }

    #[test]
    fn skips_kinds_and_missing_schemas_when_told() {
        let dir = schema_dir();
        let options = Options {
            ignore_missing_schemas: true,
            skip_kinds: vec!["v1/Thing".into()],
            ..Options::default()
        };
        let validator = Validator::with_options(
            SchemaLocations::from_root(dir.path().to_string_lossy()),
            options,
        );
        let text = "apiVersion: v1\nkind: Thing\n---\napiVersion: v1\nkind: Other\n";
        let statuses: Vec<_> = validator
            .validate_stream("s", text)
            .iter()
            .map(|v| v.status)
            .collect();
        assert_eq!(statuses, [Status::Skipped, Status::Skipped]);
    }

    #[test]
    fn non_strict_mode_looks_for_the_non_strict_schemas() {
        let dir = schema_dir();
        let options = Options {
            strict: false,
            ..Options::default()
        };
        let validator = Validator::with_options(
            SchemaLocations::from_root(dir.path().to_string_lossy()),
            options,
        );
        let v = &validator.validate_stream("s", "apiVersion: v1\nkind: Thing\nspec: {}\n")[0];
        assert_eq!(v.status, Status::Error);
        assert!(
            v.message.contains("master-standalone/thing-v1.json"),
            "{}",
            v.message
        );
    }
}
