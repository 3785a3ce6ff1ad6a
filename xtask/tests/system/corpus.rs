//! The manifest corpus (fixtures/manifests) against its expected verdicts, through the library
//! and through the `xtask validate` command line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use xtask::schemas::{SchemaLocations, workspace_root};
use xtask::validate::{Status, Validator};

#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct Expected {
    document: usize,
    kind: String,
    name: String,
    status: String,
    #[serde(default)]
    paths: Vec<String>,
    #[serde(default)]
    message: Option<String>,
}

fn corpus() -> PathBuf {
    workspace_root().join("fixtures/manifests")
}

fn require_kubectl() {
    assert!(
        xtask::on_path("kubectl").is_some(),
        "`kubectl` is needed to build the corpus' kustomizations and is not on PATH: install \
         kubectl (it bundles kustomize v5)"
    );
}

fn expected() -> BTreeMap<String, Vec<Expected>> {
    let text = std::fs::read_to_string(corpus().join("expected.yaml")).unwrap();
    serde_saphyr::from_str(&text).unwrap()
}

fn status_name(s: Status) -> &'static str {
    match s {
        Status::Valid => "valid",
        Status::Invalid => "invalid",
        Status::Error => "error",
        Status::Skipped => "skipped",
    }
}

#[test]
fn every_manifest_gets_its_expected_verdicts() {
    require_kubectl();
    let validator = Validator::new(SchemaLocations::from_env_or_default());
    let mut failures = Vec::new();
    for (entry, want) in expected() {
        let report = validator.validate_path(&corpus().join(&entry)).unwrap();
        let got: Vec<Expected> = report
            .verdicts
            .iter()
            .zip(want.iter().map(Some).chain(std::iter::repeat(None)))
            .map(|(v, w)| {
                let mut paths: Vec<String> = v.problems.iter().map(|p| p.path.clone()).collect();
                paths.dedup();
                // The message is matched by substring: keep the expected one when it matches.
                let message = w
                    .and_then(|w| w.message.clone())
                    .filter(|m| v.message.contains(m.as_str()))
                    .or_else(|| (!v.message.is_empty()).then(|| v.message.clone()));
                Expected {
                    document: v.document,
                    kind: v.kind.clone(),
                    name: v.name.clone(),
                    status: status_name(v.status).to_string(),
                    paths,
                    message,
                }
            })
            .collect();
        if got != want {
            failures.push(format!(
                "{entry}:\n  expected {want:?}\n  got      {got:?}\n{}",
                report.to_text()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_manifest_of_the_corpus_is_listed() {
    let listed = expected();
    let mut unlisted = Vec::new();
    for group in ["valid", "invalid"] {
        for entry in std::fs::read_dir(corpus().join(group)).unwrap() {
            let name = format!("{group}/{}", entry.unwrap().file_name().to_string_lossy());
            if !listed.contains_key(&name) {
                unlisted.push(name);
            }
        }
    }
    assert!(
        unlisted.is_empty(),
        "add to fixtures/manifests/expected.yaml: {unlisted:?}"
    );
    for entry in listed.keys() {
        assert!(
            corpus().join(entry).exists(),
            "{entry} is listed but missing"
        );
    }
}

fn xtask(args: &[&str], dir: &Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_command_line_prints_problems_and_the_summary_and_exits_by_verdict() {
    require_kubectl();
    let dir = corpus();
    let (code, out, err) = xtask(&["validate", "--strict", "valid"], &dir);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        out,
        "Summary: 14 resources found in 4 files - Valid: 14, Invalid: 0, Errors: 0, Skipped: 0\n"
    );

    let (code, out, _) = xtask(&["validate", "--strict", "invalid/wrong-type.yaml"], &dir);
    assert_eq!(code, 1);
    assert_eq!(
        out,
        "invalid/wrong-type.yaml:1: document 1: Service tester is invalid: /spec/ports/0/port: \
         \"5000\" is not of type \"integer\"\n\
         Summary: 1 resource found in 1 file - Valid: 0, Invalid: 1, Errors: 0, Skipped: 0\n"
    );

    // A missing schema fails, unless told to ignore it.
    let (code, _, _) = xtask(&["validate", "--strict", "invalid/unknown-kind.yaml"], &dir);
    assert_eq!(code, 1);
    let (code, out, _) = xtask(
        &[
            "validate",
            "--strict",
            "--ignore-missing-schemas",
            "invalid/unknown-kind.yaml",
        ],
        &dir,
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.ends_with("Skipped: 1\n"), "{out}");

    let (code, out, _) = xtask(
        &["validate", "--strict", "--output", "json", "invalid"],
        &dir,
    );
    assert_eq!(code, 1);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        json["summary"],
        serde_json::json!({"valid": 1, "invalid": 7, "errors": 5, "skipped": 0})
    );
    let wrong_type = json["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["filename"] == "invalid/wrong-type.yaml")
        .unwrap();
    assert_eq!(wrong_type["status"], "statusInvalid");
    assert_eq!(
        wrong_type["validationErrors"][0]["path"],
        "/spec/ports/0/port"
    );

    let (code, _, err) = xtask(
        &[
            "validate",
            "--schema-location",
            "/x/{{ .Nope }}.json",
            "valid",
        ],
        &dir,
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("unknown template action"), "{err}");
}
