//! Reading manifests: YAML streams split into documents (with their index and first line),
//! files and directories walked, and kustomization directories built with `kubectl kustomize`.
//!
//! Architecture invariant: YAML is read as kubectl reads it (YAML 1.1: `yes`/`on` are booleans,
//! `0644` is octal), so a verdict here is the verdict kubectl and kubeconform would give.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// The file names that make a directory a kustomization.
pub const KUSTOMIZATION_FILES: [&str; 3] =
    ["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// One document of a YAML stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// 1-based position in the stream.
    pub index: usize,
    /// 1-based line of the stream where the document starts.
    pub line: usize,
    /// The parsed document, or why it could not be parsed.
    pub content: Result<Value, String>,
}

/// Splits a stream at its `---` lines and parses each document. Empty documents (blank,
/// comments only, `null`) are left out but keep their index, so `document 3` is the third.
/// `strict` rejects duplicate keys (kubeconform's `-strict`); otherwise the last one wins.
pub fn read_stream(text: &str, strict: bool) -> Vec<Document> {
    split_documents(text)
        .into_iter()
        .enumerate()
        .filter_map(|(i, (line, doc))| {
            let content = parse_document(doc, line, strict).transpose()?;
            Some(Document {
                index: i + 1,
                line,
                content,
            })
        })
        .collect()
}

/// The documents of a stream with the line each starts on. A `---` at column 0 always starts a
/// document in YAML, even inside a block scalar, so splitting on lines is exact. Text before
/// the first `---` is a document only when it holds more than blanks and comments.
pub fn split_documents(text: &str) -> Vec<(usize, &str)> {
    let mut docs = Vec::new();
    let mut start = 0;
    let mut start_line = 1;
    let mut offset = 0;
    for (n, line) in text.split_inclusive('\n').enumerate() {
        let is_marker =
            line.starts_with("---") && line[3..].chars().next().is_none_or(char::is_whitespace);
        if is_marker && offset > 0 {
            let doc = &text[start..offset];
            if !docs.is_empty() || has_content(doc) {
                docs.push((start_line, doc));
            }
            start = offset;
            start_line = n + 1;
        } else if is_marker {
            start_line = n + 1;
        }
        offset += line.len();
    }
    let doc = &text[start..];
    if !docs.is_empty() || has_content(doc) || start > 0 {
        docs.push((start_line, doc));
    }
    docs
}

fn has_content(doc: &str) -> bool {
    doc.lines().any(|l| {
        let l = l.trim();
        !l.is_empty() && !l.starts_with('#')
    })
}

/// YAML 1.1 reading, as kubectl (sigs.k8s.io/yaml) and cloud-init (PyYAML) do it.
pub fn yaml_options(strict: bool) -> serde_saphyr::Options {
    serde_saphyr::options! {
        legacy_octal_numbers: true,
        strict_booleans: false,
        duplicate_keys: if strict {
            serde_saphyr::DuplicateKeyPolicy::Error
        } else {
            serde_saphyr::DuplicateKeyPolicy::LastWins
        },
    }
}

/// One document into JSON; `Ok(None)` for an empty one. `first_line` is the line of the
/// stream where the document starts, so that errors name lines of the stream.
pub fn parse_document(doc: &str, first_line: usize, strict: bool) -> Result<Option<Value>, String> {
    if !has_content(doc.trim_start_matches("---")) {
        return Ok(None);
    }
    match serde_saphyr::from_str_with_options::<Option<Value>>(doc, yaml_options(strict)) {
        Ok(Some(Value::Null)) | Ok(None) => Ok(None),
        Ok(Some(v)) => Ok(Some(v)),
        Err(e) => Err(format!(
            "error unmarshalling resource: {}",
            yaml_error(&e, first_line)
        )),
    }
}

/// A YAML error on one line, at its line of the stream, without the parser's advice to
/// change its options.
fn yaml_error(e: &serde_saphyr::Error, first_line: usize) -> String {
    let plain = e.without_snippet().to_string();
    let plain = plain.lines().next().unwrap_or_default();
    let plain = plain.strip_prefix("error: ").unwrap_or(plain);
    let message = plain
        .split_once(": ")
        .filter(|(head, _)| head.starts_with("line "))
        .map_or(plain, |(_, rest)| rest);
    let message = message
        .split(", set DuplicateKeyPolicy")
        .next()
        .unwrap_or(message);
    match e.location() {
        Some(at) if at.line() > 0 => format!(
            "line {} column {}: {message}",
            at.line() as usize + first_line - 1,
            at.column()
        ),
        _ => message.to_string(),
    }
}

/// A stream to validate: a file, or the build of a kustomization directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The file path, or `DIR (kustomize build)`.
    pub name: String,
    /// The YAML text, or why it could not be had (unreadable file, failed build).
    pub text: Result<String, String>,
}

impl Source {
    pub fn file(path: &Path) -> Source {
        Source {
            name: path.display().to_string(),
            text: std::fs::read_to_string(path).map_err(|e| format!("reading the file: {e}")),
        }
    }

    pub fn kustomize(dir: &Path) -> Source {
        Source {
            name: format!("{} (kustomize build)", dir.display()),
            text: kustomize_build(dir),
        }
    }
}

pub fn is_kustomization_dir(dir: &Path) -> bool {
    KUSTOMIZATION_FILES.iter().any(|f| dir.join(f).is_file())
}

/// The streams below a path. A file is read as it is, whatever its name. A directory is walked
/// (sorted, hidden entries skipped): a directory with a kustomization contributes its
/// `kubectl kustomize` build, not its files (they are resources, patches or generator inputs,
/// which only make sense through the build); any other directory contributes its `.yaml`,
/// `.yml` and `.json` files.
pub fn collect_sources(path: &Path) -> Result<Vec<Source>, std::io::Error> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_dir() {
        return Ok(vec![Source::file(path)]);
    }
    let mut files = Vec::new();
    let mut builds = Vec::new();
    let walker = walkdir::WalkDir::new(path)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.'));
    for entry in walker {
        let entry = entry.map_err(std::io::Error::other)?;
        let p = entry.path();
        if entry.file_type().is_dir() {
            if is_kustomization_dir(p) {
                builds.push((files.len() + builds.len(), p.to_path_buf()));
            }
        } else if is_manifest_name(p) && !p.parent().is_some_and(is_kustomization_dir) {
            files.push((files.len() + builds.len(), Source::file(p)));
        }
    }
    let built = build_all(builds.iter().map(|(_, dir)| dir.clone()).collect());
    let mut sources: Vec<(usize, Source)> = files;
    sources.extend(builds.into_iter().map(|(i, _)| i).zip(built));
    sources.sort_by_key(|(i, _)| *i);
    Ok(sources.into_iter().map(|(_, s)| s).collect())
}

fn is_manifest_name(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

/// Runs the kustomize builds on a few threads: a large tree has one kustomization per VM.
fn build_all(dirs: Vec<PathBuf>) -> Vec<Source> {
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().min(4));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(vec![None; dirs.len()]);
    std::thread::scope(|scope| {
        for _ in 0..workers.min(dirs.len()) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(dir) = dirs.get(i) else { break };
                    let source = Source::kustomize(dir);
                    results.lock().expect("no panics while held")[i] = Some(source);
                }
            });
        }
    });
    results
        .into_inner()
        .expect("no panics while held")
        .into_iter()
        .map(|s| s.expect("every build ran"))
        .collect()
}

/// `kubectl kustomize DIR`: the stream Argo CD or Flux would apply.
pub fn kustomize_build(dir: &Path) -> Result<String, String> {
    let output = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => "`kubectl` is not installed; install kubectl \
                 (it bundles kustomize v5) to build kustomization directories"
                .to_string(),
            _ => format!("running kubectl kustomize: {e}"),
        })?;
    if !output.status.success() {
        return Err(format!(
            "kubectl kustomize failed: {}",
            kustomize_message(&String::from_utf8_lossy(&output.stderr))
        ));
    }
    String::from_utf8(output.stdout).map_err(|e| format!("kubectl kustomize output: {e}"))
}

/// kubectl's error without its log prefix (time, pid, source line), which differs per run.
fn kustomize_message(stderr: &str) -> String {
    let stderr = stderr.trim();
    match stderr.split_once(" err=\"") {
        Some((_, quoted)) => quoted
            .strip_suffix('"')
            .unwrap_or(quoted)
            .replace("\\\"", "\""),
        None => stderr.strip_prefix("error: ").unwrap_or(stderr).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn splits_streams_into_numbered_documents() {
        let cases: &[(&str, &[(usize, &str)])] = &[
            ("a: 1\n", &[(1, "a: 1\n")]),
            ("---\na: 1\n", &[(1, "---\na: 1\n")]),
            (
                "# c\n---\na: 1\n---\nb: 2",
                &[(2, "---\na: 1\n"), (4, "---\nb: 2")],
            ),
            (
                "a: 1\n---\n---\nb: 2\n",
                &[(1, "a: 1\n"), (2, "---\n"), (3, "---\nb: 2\n")],
            ),
            ("a: |\n  ---\n----\n", &[(1, "a: |\n  ---\n----\n")]),
            ("--- {a: 1}\n", &[(1, "--- {a: 1}\n")]),
            ("", &[]),
        ];
        for (text, want) in cases {
            assert_eq!(split_documents(text), *want, "{text:?}");
        }
    }

    #[test]
    fn reads_yaml_as_kubectl_does() {
        let docs = read_stream(
            "---\n# empty\n---\na: yes\nb: 0644\nc: \"yes\"\nd: on\ne: 1.5\n---\nnull\n---\nx: [1\n",
            true,
        );
        assert_eq!(docs.len(), 2, "{docs:?}");
        assert_eq!(docs[0].index, 2);
        assert_eq!(docs[0].line, 3);
        assert_eq!(
            docs[0].content,
            Ok(json!({"a": true, "b": 420, "c": "yes", "d": true, "e": 1.5}))
        );
        assert_eq!(docs[1].index, 4);
        assert!(docs[1].content.is_err());
    }

    #[test]
    fn kustomize_errors_lose_the_log_prefix() {
        let stderr = "E1126 11:46:36.660033   17986 run.go:72] \"command failed\" \
                      err=\"accumulating resources: \\\"x\\\" missing\"\n";
        assert_eq!(
            kustomize_message(stderr),
            "accumulating resources: \"x\" missing"
        );
        assert_eq!(
            kustomize_message("error: no kustomization\n"),
            "no kustomization"
        );
    }

    #[test]
    fn yaml_errors_name_the_line_of_the_stream() {
        let docs = read_stream("a: 1\n---\nb: 1\nb: 2\n", true);
        assert_eq!(
            docs[1].content,
            Err("error unmarshalling resource: line 4 column 1: duplicate mapping key: b".into())
        );
    }

    #[test]
    fn duplicate_keys_fail_only_in_strict_mode() {
        let text = "a: 1\na: 2\n";
        assert!(read_stream(text, true)[0].content.is_err());
        assert_eq!(read_stream(text, false)[0].content, Ok(json!({"a": 2})));
    }
}
