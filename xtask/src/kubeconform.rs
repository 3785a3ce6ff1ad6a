//! A second opinion: when a `kubeconform` binary is on PATH, the same streams go through it
//! with the same schema locations and options, and every verdict that differs is reported.
//!
//! Architecture invariant: kubeconform runs once per check, over copies of the streams in a
//! temporary directory (`0.yaml`, `1.yaml`, … by source index), so its file names map back.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::kube::Source;
use crate::validate::{Options, Status, Verdict};

/// A verdict kubeconform sees differently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disagreement {
    pub source: String,
    pub api_version: String,
    pub kind: String,
    pub name: String,
    /// Our verdicts on objects with this identity (several when names repeat).
    pub ours: Vec<Status>,
    pub theirs: Vec<Status>,
}

impl std::fmt::Display for Disagreement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} {} ({}): xtask says {:?}, kubeconform says {:?}",
            self.source, self.kind, self.name, self.api_version, self.ours, self.theirs
        )
    }
}

/// The `kubeconform` binary, when it is on PATH.
pub fn find() -> Option<PathBuf> {
    crate::on_path("kubeconform")
}

/// Runs `binary` over `sources` and compares its verdicts with `ours` (the verdicts on the
/// same sources). Streams that could not be read are left out of the comparison.
pub fn cross_check(
    binary: &Path,
    locations: &[String],
    cache_dir: Option<&Path>,
    options: &Options,
    sources: &[Source],
    ours: &[Verdict],
) -> Result<Vec<Disagreement>, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
    let mut names = BTreeMap::new();
    for (i, source) in sources.iter().enumerate() {
        if let Ok(text) = &source.text {
            let file = dir.path().join(format!("{i}.yaml"));
            std::fs::write(&file, text).map_err(|e| format!("{}: {e}", file.display()))?;
            names.insert(file.to_string_lossy().into_owned(), source.name.clone());
        }
    }
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let mut cmd = Command::new(binary);
    cmd.args(["-output", "json", "-summary", "-verbose"])
        .args(["-kubernetes-version", &options.kubernetes_version]);
    if options.strict {
        cmd.arg("-strict");
    }
    if options.ignore_missing_schemas {
        cmd.arg("-ignore-missing-schemas");
    }
    if !options.skip_kinds.is_empty() {
        cmd.args(["-skip", &options.skip_kinds.join(",")]);
    }
    for location in locations {
        cmd.args(["-schema-location", location]);
    }
    if let Some(cache) = cache_dir {
        let cache = cache.join("kubeconform");
        std::fs::create_dir_all(&cache).map_err(|e| format!("{}: {e}", cache.display()))?;
        cmd.arg("-cache").arg(cache);
    }
    cmd.arg(dir.path());
    let output = cmd
        .output()
        .map_err(|e| format!("running {}: {e}", binary.display()))?;
    let report: Value = serde_json::from_slice(&output.stdout).map_err(|e| {
        format!(
            "kubeconform printed no JSON report ({e}): {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )
    })?;

    type Key = (String, String, String, String);
    let mut table: BTreeMap<Key, (Vec<Status>, Vec<Status>)> = BTreeMap::new();
    for resource in report["resources"].as_array().into_iter().flatten() {
        let field = |k: &str| resource[k].as_str().unwrap_or_default().to_string();
        let Some(source) = names.get(&field("filename")) else {
            continue;
        };
        let status = match field("status").as_str() {
            "statusValid" => Status::Valid,
            "statusInvalid" => Status::Invalid,
            "statusError" => Status::Error,
            "statusSkipped" => Status::Skipped,
            _ => continue, // statusEmpty: no object
        };
        let key = (
            source.clone(),
            field("version"),
            field("kind"),
            field("name"),
        );
        table.entry(key).or_default().1.push(status);
    }
    let readable: std::collections::BTreeSet<&String> = names.values().collect();
    for v in ours.iter().filter(|v| readable.contains(&v.source)) {
        let key = (
            v.source.clone(),
            v.api_version.clone(),
            v.kind.clone(),
            v.name.clone(),
        );
        table.entry(key).or_default().0.push(v.status);
    }
    Ok(table
        .into_iter()
        .filter_map(
            |((source, api_version, kind, name), (mut ours, mut theirs))| {
                ours.sort();
                theirs.sort();
                (ours != theirs).then_some(Disagreement {
                    source,
                    api_version,
                    kind,
                    name,
                    ours,
                    theirs,
                })
            },
        )
        .collect())
}
