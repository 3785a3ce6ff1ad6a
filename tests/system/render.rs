//! `meshvm render`: the tree written by the binary, built by the real `kubectl kustomize`,
//! read back by a YAML 1.1 reader (PyYAML).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use crate::support::{checked_text, files_relative as files, fixture, render_to, require_tool};
use testkit::fixture_fleets;

fn require_kubectl() {
    require_tool(
        "kubectl",
        "install kubectl (it bundles Kustomize v5): https://kubernetes.io/docs/tasks/tools/",
    );
}

/// `kubectl kustomize DIR`, as the identities (apiVersion/kind/namespace/name) it builds.
fn kustomize(dir: &Path) -> Vec<String> {
    let built = checked_text(Command::new("kubectl").arg("kustomize").arg(dir));
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&built).unwrap();
    docs.iter()
        .filter(|d| !d.is_null())
        .map(|d| {
            assert_eq!(
                d["metadata"]["labels"]["app.kubernetes.io/managed-by"], "meshvm",
                "{d}"
            );
            format!(
                "{}/{}/{}/{}",
                d["apiVersion"].as_str().unwrap(),
                d["kind"].as_str().unwrap(),
                d["metadata"]["namespace"].as_str().unwrap_or(""),
                d["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn every_kustomization_of_every_fixture_builds_with_kubectl() {
    require_kubectl();
    let tmp = tempfile::tempdir().unwrap();
    for name in &fixture_fleets() {
        let out = tmp.path().join(name);
        render_to(&fixture(&format!("fleets/{name}/meshvm.yaml")), &out);
        let dirs: Vec<String> = files(&out)
            .into_iter()
            .filter_map(|f| f.strip_suffix("kustomization.yaml").map(str::to_owned))
            .collect();
        assert!(dirs.len() >= 6, "{name}: {dirs:?}");
        for dir in &dirs {
            kustomize(&out.join(dir));
        }
    }
}

/// What each Argo CD Application and each Flux Kustomization applies, built by kustomize
/// itself: no object is applied by two of them.
#[test]
fn no_object_is_applied_by_two_applications_or_kustomizations() {
    require_kubectl();
    let tmp = tempfile::tempdir().unwrap();
    for name in &fixture_fleets() {
        let out = tmp.path().join(name);
        render_to(&fixture(&format!("fleets/{name}/meshvm.yaml")), &out);
        // The ApplicationSet's git directories generator: `workloads/*/*`.
        let mut argo_roots = vec!["mesh".to_owned()];
        for ns in std::fs::read_dir(out.join("workloads")).unwrap() {
            let ns = ns.unwrap().path();
            if ns.is_dir() {
                for group in std::fs::read_dir(&ns).unwrap() {
                    let group = group.unwrap().path();
                    if group.is_dir() {
                        let rel = group.strip_prefix(&out).unwrap();
                        argo_roots.push(rel.to_string_lossy().into_owned());
                    }
                }
            }
        }
        let flux_roots = vec!["mesh".to_owned(), "workloads".to_owned()];
        let mut everything = Vec::new();
        for (engine, roots) in [("argocd", argo_roots), ("flux", flux_roots)] {
            let mut owner: BTreeMap<String, String> = BTreeMap::new();
            for root in roots {
                for id in kustomize(&out.join(&root)) {
                    if let Some(first) = owner.insert(id.clone(), root.clone()) {
                        panic!("{name}/{engine}: {id} is applied by {first} and by {root}");
                    }
                }
            }
            everything.push(owner.into_keys().collect::<Vec<_>>());
        }
        assert_eq!(
            everything[0], everything[1],
            "{name}: Argo CD and Flux apply the same objects"
        );
        assert!(
            everything[0]
                .iter()
                .any(|id| id.contains("/WorkloadGroup/"))
        );
    }
}

/// A fleet whose names a YAML 1.1 reader would take for booleans or numbers, if unquoted.
const TRICKY: &str = r#"
apiVersion: meshvm.io/v1alpha1
kind: Fleet
mesh:
  meshID: "yes"
  clusterID: "on"
  network: "off"
  revision: "1-28"
  eastWestGateway: {address: 203.0.113.10}
sidecar: {version: 1.28.0}
gitops:
  path: "no"
  repoURL: https://git.example.com/mesh.git
  branch: "y"
  engines: [argocd, flux]
workloads:
  - name: "on"
    namespace: "yes"
    serviceAccount: "true"
    network: "null"
    labels: {app: "off", version: "0644", build: "1e3", at: "1_000"}
    ports: {"n": 8080}
    probe: {tcpSocket: {port: 8080}}
    service:
      hosts: [on.yes.svc.cluster.local]
      ports: [{number: 8080, name: "y", protocol: TCP}]
    instances:
      - {name: "no", address: 10.0.0.1, labels: {slot: "012"}}
      - {name: "0x1f", address: "fd00::1"}
"#;

#[test]
fn a_yaml_1_1_reader_reads_every_file_as_meshvm_meant_it() {
    require_kubectl();
    require_tool(
        "python3",
        "install python3 and PyYAML: apt-get install python3-yaml",
    );
    let tmp = tempfile::tempdir().unwrap();
    let tricky = tmp.path().join("meshvm.yaml");
    std::fs::write(&tricky, TRICKY).unwrap();
    let fleets = std::iter::once(tricky).chain(
        fixture_fleets()
            .into_iter()
            .map(|f| fixture(&format!("fleets/{f}/meshvm.yaml"))),
    );
    for (i, fleet) in fleets.enumerate() {
        let out = tmp.path().join(format!("tree-{i}"));
        render_to(&fleet, &out);
        assert_yaml_1_1_agrees(&out);
        for f in files(&out) {
            if let Some(dir) = f.strip_suffix("kustomization.yaml") {
                kustomize(&out.join(dir));
            }
        }
    }
}

/// Every .yaml file below `out` reads the same in PyYAML (YAML 1.1, where unquoted `on`, `no`,
/// `0644`, `1e3`, `0x1f` are not strings) as in a YAML 1.2 reader.
fn assert_yaml_1_1_agrees(out: &Path) {
    let yaml_files: Vec<String> = files(out)
        .into_iter()
        .filter(|f| f.ends_with(".yaml"))
        .collect();
    let script = "import sys, json, yaml\n\
        print(json.dumps({f: yaml.safe_load(open(f)) for f in sys.argv[1:]}))";
    let py = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(&yaml_files)
        .current_dir(out)
        .output()
        .expect("python3 runs");
    assert!(
        py.status.success(),
        "PyYAML failed (apt-get install python3-yaml):\n{}",
        String::from_utf8_lossy(&py.stderr)
    );
    let yaml11: BTreeMap<String, serde_json::Value> = serde_json::from_slice(&py.stdout).unwrap();
    for f in &yaml_files {
        let text = std::fs::read_to_string(out.join(f)).unwrap();
        let meant: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
        assert_eq!(
            yaml11[f], meant,
            "{f} reads differently in YAML 1.1:\n{text}"
        );
    }
}
