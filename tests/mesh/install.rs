//! The install files: every IstioOperator meshvm renders under `install/` is accepted by the
//! real `istioctl manifest generate`, and `istioctl analyze` finds no errors in the objects
//! an engine applies.

use std::path::PathBuf;

use crate::cluster::{
    applied_objects, fleet_file, identity, istioctl, manifest_generate, output, render,
    write_stream,
};

/// Install files the real istioctl refuses: (fleet, file, what it says).
///
/// Finding: Istio's chart writes the mesh-wide proxyMetadata values into YAML unescaped, so a
/// value holding `"` or `\` breaks the render; meshvm accepts such values (the hostile fleet's
/// HOSTILE_QUOTE, HOSTILE_BACKSLASH, HOSTILE_VARS).
pub const REFUSED: &[(&str, &str, &str)] = &[(
    "hostile",
    "istio.yaml",
    "helm render: error converting YAML to JSON",
)];

#[test]
fn istioctl_accepts_every_install_file() {
    for fleet in testkit::fixture_fleets() {
        let scratch = tempfile::tempdir().unwrap();
        let tree = render(&fleet, scratch.path());
        let source = meshvm::spec::load_fleet(&fleet_file(&fleet)).unwrap();
        let files: Vec<PathBuf> = testkit::files_below(&tree.join("install"));
        assert!(!files.is_empty(), "{fleet}: no install files");
        for file in files {
            let name = file.file_name().unwrap().to_string_lossy().into_owned();
            let refused = REFUSED.iter().find(|(f, n, _)| *f == fleet && *n == name);
            let namespace = source.fleet.mesh.istio_namespace.as_str();
            match (manifest_generate(&file), refused) {
                (Err(said), Some((_, _, expected))) => {
                    assert!(said.contains(expected), "{fleet}/{name}: {said}");
                }
                (Ok(objects), None) => {
                    let deployments: Vec<String> = objects
                        .iter()
                        .filter(|o| o["kind"] == "Deployment")
                        .map(identity)
                        .collect();
                    assert!(!deployments.is_empty(), "{fleet}/{name} installs nothing");
                    for deployment in deployments {
                        assert!(
                            deployment.starts_with(&format!("Deployment {namespace}/")),
                            "{fleet}/{name}: {deployment}, not in {namespace}"
                        );
                    }
                }
                (result, _) => panic!("{fleet}/{name}: istioctl manifest generate: {result:?}"),
            }
        }
    }
}

/// istioctl analyze of objects offline (`--use-kube=false`): its verdict and what it said.
fn analyze(objects: &[serde_json::Value], scratch: &std::path::Path) -> (bool, String) {
    let file = scratch.join("analyze.yaml");
    write_stream(&file, objects);
    let out = output(
        istioctl()
            .args(["analyze", "--use-kube=false", "--failure-threshold=Error"])
            .arg(&file),
    );
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

#[test]
fn istioctl_analyze_finds_no_errors_in_the_applied_objects() {
    for fleet in testkit::fixture_fleets() {
        let scratch = tempfile::tempdir().unwrap();
        let tree = render(&fleet, scratch.path());
        let (ok, said) = analyze(&applied_objects(&tree), scratch.path());
        assert!(ok, "{fleet}: istioctl analyze:\n{said}");
    }
}

#[test]
fn istioctl_analyze_reports_an_error() {
    // A VirtualService bound to a Gateway that does not exist (IST0101): so the test above
    // can fail.
    let broken = serde_json::json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "orphan", "namespace": "default"},
        "spec": {"hosts": ["a.example.com"], "gateways": ["missing"],
                 "http": [{"route": [{"destination": {"host": "a.example.com"}}]}]},
    });
    let scratch = tempfile::tempdir().unwrap();
    let (ok, said) = analyze(&[broken], scratch.path());
    assert!(!ok && said.contains("IST0101"), "{said}");
}
