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

/// The one object of a rendered YAML file.
fn object(path: &Path) -> serde_json::Value {
    serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The directories below `out` that match an ApplicationSet's git directories `glob`
/// (relative to `out`; `*` is one path segment, as in Argo CD).
fn glob_dirs(out: &Path, glob: &str) -> Vec<String> {
    let mut dirs = vec![String::new()];
    for part in glob.split('/') {
        let mut next = Vec::new();
        for dir in &dirs {
            let join = |name: &str| {
                if dir.is_empty() {
                    name.to_owned()
                } else {
                    format!("{dir}/{name}")
                }
            };
            if part == "*" {
                for entry in std::fs::read_dir(out.join(dir)).unwrap() {
                    let entry = entry.unwrap();
                    if entry.path().is_dir() {
                        next.push(join(&entry.file_name().to_string_lossy()));
                    }
                }
            } else if out.join(join(part)).is_dir() {
                next.push(join(part));
            }
        }
        dirs = next;
    }
    dirs.sort();
    dirs
}

/// What each Argo CD Application and each Flux Kustomization applies, built by kustomize
/// itself: no object is applied by two of them, and each engine applies every object.
/// The directories are read from what meshvm rendered for the engines: the Applications'
/// paths and the ApplicationSets' generator globs, the Flux Kustomizations' paths (so a split
/// group's buckets are covered as the engines see them).
#[test]
fn no_object_is_applied_by_two_applications_or_kustomizations() {
    require_kubectl();
    let tmp = tempfile::tempdir().unwrap();
    for name in &fixture_fleets() {
        let out = tmp.path().join(name);
        render_to(&fixture(&format!("fleets/{name}/meshvm.yaml")), &out);
        // Below the fleet's `gitops.path`, as written in the engine objects.
        let mesh_path = if out.join("argocd").is_dir() {
            object(&out.join("argocd/mesh-application.yaml"))["spec"]["source"]["path"].clone()
        } else {
            object(&out.join("flux/mesh.yaml"))["spec"]["path"].clone()
        };
        let base = mesh_path.as_str().unwrap().trim_start_matches("./");
        let base = base.strip_suffix("/mesh").unwrap().to_owned();
        let rel = |path: &str| {
            let path = path.trim_start_matches("./");
            path.strip_prefix(&format!("{base}/"))
                .unwrap_or_else(|| panic!("{name}: {path} outside {base}"))
                .to_owned()
        };
        let mut argo_roots = vec!["mesh".to_owned()];
        // Argo CD's bootstrap Application applies `argocd/`, Flux's `flux/`: not counted.
        let mut flux_roots = Vec::new();
        for file in files(&out) {
            if file.starts_with("argocd/applicationset") {
                let set = object(&out.join(&file));
                for dir in set["spec"]["generators"][0]["git"]["directories"]
                    .as_array()
                    .unwrap()
                {
                    argo_roots.extend(glob_dirs(&out, &rel(dir["path"].as_str().unwrap())));
                }
            } else if file.starts_with("flux/") && file != "flux/kustomization.yaml" {
                let k = object(&out.join(&file));
                if k["kind"] == "Kustomization" {
                    let root = rel(k["spec"]["path"].as_str().unwrap());
                    if root != "flux" {
                        flux_roots.push(root);
                    }
                }
            }
        }
        let mut whole = kustomize(&out.join("mesh"));
        whole.extend(kustomize(&out.join("workloads")));
        whole.sort();
        assert!(whole.iter().any(|id| id.contains("/WorkloadGroup/")));
        for (engine, roots) in [("argocd", argo_roots), ("flux", flux_roots)] {
            if !out.join(engine).is_dir() {
                continue;
            }
            assert!(roots.len() >= 2, "{name}/{engine}: {roots:?}");
            let mut owner: BTreeMap<String, String> = BTreeMap::new();
            for root in roots {
                for id in kustomize(&out.join(&root)) {
                    if let Some(first) = owner.insert(id.clone(), root.clone()) {
                        panic!("{name}/{engine}: {id} is applied by {first} and by {root}");
                    }
                }
            }
            // Exactly what the whole `mesh/` and `workloads/` build: nothing left out.
            let applied: Vec<String> = owner.into_keys().collect();
            assert_eq!(
                applied, whole,
                "{name}/{engine}: every object is applied once"
            );
        }
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
