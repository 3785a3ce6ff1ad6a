//! Server-side apply: every object an engine applies from every fixture fleet is accepted by
//! the real API server (the CRDs' schemas and CEL rules, strict field validation) and reads
//! back as sent; and objects broken in the ways schema validators miss are refused.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

use crate::cluster::{
    applied_objects, apply, ensure_namespaces, fleet_turn, identity, kubectl, output, render,
    write_stream,
};

/// Applies a rendered tree as an engine would: first the namespaces its objects live in but
/// it does not create (Istio's, Argo CD's, Flux's: installed before meshvm's tree), then the
/// tree's own Namespaces, then everything, each step a server dry run before the real apply
/// (a dry run cannot see the namespaces the same dry run would create). Returns the objects.
pub fn apply_tree(tree: &Path, scratch: &Path) -> Vec<Value> {
    let objects = applied_objects(tree);
    assert!(!objects.is_empty(), "{}: nothing to apply", tree.display());
    let (namespaces, _): (Vec<Value>, Vec<Value>) = objects
        .iter()
        .cloned()
        .partition(|o| o["kind"] == "Namespace");
    let created: BTreeSet<&str> = namespaces
        .iter()
        .filter_map(|n| n["metadata"]["name"].as_str())
        .collect();
    let installed: BTreeSet<&str> = objects
        .iter()
        .filter_map(|o| o["metadata"]["namespace"].as_str())
        .filter(|ns| !created.contains(ns))
        .collect();
    ensure_namespaces(installed);
    for (name, batch) in [("namespaces", &namespaces), ("objects", &objects)] {
        let file = scratch.join(format!("{name}.yaml"));
        write_stream(&file, batch);
        for dry_run in [true, false] {
            let out = apply(&file, dry_run);
            assert!(
                out.status.success(),
                "{}: the API server rejected the {name} (dry run: {dry_run}):\n{}",
                tree.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    objects
}

#[test]
fn every_fleet_applies_server_side_and_reads_back_as_sent() {
    for fleet in testkit::fixture_fleets() {
        let _turn = fleet_turn();
        let scratch = tempfile::tempdir().unwrap();
        let tree = render(&fleet, scratch.path());
        let sent = apply_tree(&tree, scratch.path());

        let file = scratch.path().join("objects.yaml");
        let read = output(kubectl().args(["get", "-o", "json", "-f"]).arg(&file));
        assert!(
            read.status.success(),
            "{fleet}: {}",
            String::from_utf8_lossy(&read.stderr)
        );
        let read: Value = serde_json::from_slice(&read.stdout).unwrap();
        let stored: Vec<&Value> = match read["items"].as_array() {
            Some(items) => items.iter().collect(),
            None => vec![&read],
        };
        for object in &sent {
            let id = identity(object);
            let back = stored
                .iter()
                .find(|s| identity(s) == id && s["apiVersion"] == object["apiVersion"])
                .unwrap_or_else(|| panic!("{fleet}: {id} was applied but cannot be read back"));
            let mut drift = Vec::new();
            differences(object, back, &mut String::new(), &mut drift);
            assert!(
                drift.is_empty(),
                "{fleet}: {id} reads back differently from what was applied (an engine \
                 would show drift):\n{}",
                drift.join("\n")
            );
        }
    }
}

/// Where `stored` differs from `sent`: a field sent but pruned, or changed by defaulting or
/// conversion. Fields only the server sets (status, managedFields, defaults of fields not
/// sent) are not differences: engines compare what they sent.
fn differences(sent: &Value, stored: &Value, path: &mut String, out: &mut Vec<String>) {
    match (sent, stored) {
        (Value::Object(sent), Value::Object(stored)) => {
            for (key, value) in sent {
                let len = path.len();
                path.push('.');
                path.push_str(key);
                match stored.get(key) {
                    Some(back) => differences(value, back, path, out),
                    None => out.push(format!("{path}: sent {value}, pruned by the server")),
                }
                path.truncate(len);
            }
        }
        (Value::Array(sent), Value::Array(stored)) if sent.len() == stored.len() => {
            for (i, (value, back)) in sent.iter().zip(stored).enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                differences(value, back, path, out);
                path.truncate(len);
            }
        }
        _ if sent == stored => {}
        _ => out.push(format!("{path}: sent {sent}, read back {stored}")),
    }
}

#[test]
fn every_broken_object_is_rejected() {
    let corpus = testkit::fixture("k8s-invalid");
    ensure_namespaces(["k8s-invalid"]);
    let files: Vec<_> = testkit::files_below(&corpus)
        .into_iter()
        .filter(|f| f.extension().is_some_and(|x| x == "yaml"))
        .collect();
    assert!(files.len() >= 4, "the corpus in {}", corpus.display());
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let expected = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# rejected with: "))
            .unwrap_or_else(|| panic!("{}: first line `# rejected with: …`", file.display()));
        let out = apply(&file, true);
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && said.contains(expected),
            "{}: expected a rejection with {expected:?}, got ({}):\n{said}",
            file.display(),
            out.status
        );
    }
}

#[test]
fn drift_is_found() {
    let sent = serde_json::json!({"spec": {"ports": {"http": 8080}, "labels": {"a": "1"}}});
    let stored = serde_json::json!({"spec": {"ports": {"http": "8080"}, "extra": true}});
    let mut drift = Vec::new();
    differences(&sent, &stored, &mut String::new(), &mut drift);
    assert_eq!(
        drift,
        [
            ".spec.ports.http: sent 8080, read back \"8080\"",
            ".spec.labels: sent {\"a\":\"1\"}, pruned by the server"
        ]
    );
}
