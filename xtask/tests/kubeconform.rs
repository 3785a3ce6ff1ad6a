//! The kubeconform cross-check, against a stand-in `kubeconform` that records its arguments
//! and prints a fixed JSON report (the real binary is not packaged for this machine).

use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::process::Command;

use xtask::kube::Source;
use xtask::schemas::SchemaLocations;
use xtask::validate::{Options, Status, Validator};

const THING: &str = r#"{"type": "object", "additionalProperties": false,
  "properties": {"apiVersion": {}, "kind": {}, "metadata": {},
    "spec": {"type": "object", "properties": {"port": {"type": "integer"}}}}}"#;

const MANIFEST: &str = "apiVersion: v1\nkind: Thing\nmetadata: {name: a}\nspec: {port: 1}\n---\n\
    apiVersion: v1\nkind: Thing\nmetadata: {name: b}\nspec: {port: x}\n";

/// A schema root with `thing-v1.json`, and a stand-in kubeconform that calls every object of
/// `0.yaml` valid (so it disagrees about `b`) when `disagree`, else gives xtask's verdicts.
fn setup(disagree: bool) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let strict = dir.path().join("schemas/master-standalone-strict");
    std::fs::create_dir_all(&strict).unwrap();
    std::fs::write(strict.join("thing-v1.json"), THING).unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let args_file = dir.path().join("args");
    let b_status = if disagree {
        "statusValid"
    } else {
        "statusInvalid"
    };
    let script = format!(
        r#"#!/bin/sh
printf '%s\n' "$@" > '{args}'
for last in "$@"; do :; done
cat <<EOF
{{"resources": [
  {{"filename": "$last/0.yaml", "kind": "Thing", "name": "b", "version": "v1", "status": "{b_status}", "msg": ""}},
  {{"filename": "$last/0.yaml", "kind": "Thing", "name": "a", "version": "v1", "status": "statusValid", "msg": ""}},
  {{"filename": "$last/0.yaml", "kind": "", "name": "", "version": "", "status": "statusEmpty", "msg": ""}}
], "summary": {{"valid": 1, "invalid": 1, "errors": 0, "skipped": 0}}}}
EOF
exit 1
"#,
        args = args_file.display()
    );
    let stub = bin.join("kubeconform");
    std::fs::write(&stub, script).unwrap();
    std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).unwrap();
    (dir, stub, args_file)
}

#[test]
fn reports_the_verdicts_kubeconform_gives_differently() {
    let (dir, stub, args_file) = setup(true);
    let root = dir.path().join("schemas");
    let locations = SchemaLocations::from_root(root.to_string_lossy());
    let options = Options {
        skip_kinds: vec!["Secret".into()],
        ..Options::default()
    };
    let validator = Validator::with_options(locations.clone(), options.clone());
    let sources = [
        Source {
            name: "m.yaml".into(),
            text: Ok(MANIFEST.into()),
        },
        Source {
            name: "broken (kustomize build)".into(),
            text: Err("kubectl kustomize failed".into()),
        },
    ];
    let report = validator.validate_sources(&sources);
    let disagreements = xtask::kubeconform::cross_check(
        &stub,
        &locations.kubernetes,
        None,
        &options,
        &sources,
        &report.verdicts,
    )
    .unwrap();
    assert_eq!(disagreements.len(), 1, "{disagreements:?}");
    let d = &disagreements[0];
    assert_eq!(
        (d.source.as_str(), d.kind.as_str(), d.name.as_str()),
        ("m.yaml", "Thing", "b")
    );
    assert_eq!(
        (d.ours.as_slice(), d.theirs.as_slice()),
        (&[Status::Invalid][..], &[Status::Valid][..])
    );

    // kubeconform got the same options and schema locations, and one directory of streams.
    let args = std::fs::read_to_string(args_file).unwrap();
    let args: Vec<&str> = args.lines().collect();
    let flags = &args[..args.len() - 1];
    assert_eq!(
        flags,
        [
            "-output",
            "json",
            "-summary",
            "-verbose",
            "-kubernetes-version",
            "master",
            "-strict",
            "-skip",
            "Secret",
            "-schema-location",
            &locations.kubernetes[0],
            "-schema-location",
            &locations.kubernetes[1],
        ]
    );
}

fn validate_with_stub_on_path(disagree: bool) -> (i32, String) {
    let (dir, stub, _) = setup(disagree);
    let manifest = dir.path().join("m.yaml");
    std::fs::write(&manifest, MANIFEST.replace("port: x", "port: 2")).unwrap();
    let path = format!(
        "{}:{}",
        stub.parent().unwrap().display(),
        std::env::var("PATH").unwrap()
    );
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["validate", "--strict"])
        .arg(&manifest)
        .env("PATH", path)
        .env("MESHVM_SCHEMAS", dir.path().join("schemas"))
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_command_line_fails_when_kubeconform_disagrees() {
    // Here both objects are valid; the stand-in calls `b` invalid when it "agrees" with the
    // library test above, so the roles swap: `false` makes it disagree on this file.
    let (code, err) = validate_with_stub_on_path(false);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("kubeconform disagrees: ")
            && err.contains("Thing b (v1): xtask says [Valid], kubeconform says [Invalid]"),
        "{err}"
    );
    let (code, err) = validate_with_stub_on_path(true);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("cross-checking with "), "{err}");
}
