//! VM mesh files: istioctl's own golden cases, snapshots of every fleet fixture, and the shell
//! that sources cluster.env reading back exactly the values meant.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use meshvm::vmfiles::istioctl::{self, ConfigureOptions};
use meshvm::vmfiles::{self, VmFilesError};
use serde_json::Value;
use testkit::source_with_sh;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn yaml_data(text: &str) -> Value {
    serde_saphyr::from_str(text).expect("valid YAML")
}

/// The flags of an istioctl case (`args`), as `workload entry configure` options.
fn options(args: &str) -> ConfigureOptions {
    let mut options = ConfigureOptions::default();
    let words: Vec<&str> = args.split_whitespace().collect();
    for pair in words.chunks(2) {
        let value = pair[1].to_owned();
        match pair[0] {
            "--internal-ip" => options.internal_ip = Some(value),
            "--ingress-ip" => options.ingress_ip = Some(value),
            "--cluster-id" => options.cluster_id = value,
            "--revision" => options.revision = value,
            other => panic!("unknown flag {other} in args"),
        }
    }
    options
}

#[test]
fn istioctl_golden_cases() {
    let root = fixtures().join("istioctl");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert_eq!(cases.len(), 3, "istioctl's three vmconfig cases");
    for case in cases {
        let group = istioctl::read_workload_group(
            &read(&case.join("workloadgroup.yaml")),
            &case.join("workloadgroup.yaml"),
        )
        .unwrap();
        let mesh = istioctl::read_mesh_config(
            &read(&case.join("meshconfig.yaml")),
            &case.join("meshconfig.yaml"),
        )
        .unwrap();
        let inputs = istioctl::configure(group, mesh, &options(&read(&case.join("args")))).unwrap();
        let tree = vmfiles::render(&inputs);
        let file = |name: &str| String::from_utf8(tree.get(name).unwrap().bytes.clone()).unwrap();
        let name = case.file_name().unwrap().to_string_lossy();
        assert_eq!(
            file("cluster.env"),
            read(&case.join("cluster.env.golden")),
            "{name}: cluster.env"
        );
        assert_eq!(
            file("hosts"),
            read(&case.join("hosts.golden")),
            "{name}: hosts"
        );
        let mesh_yaml = file("mesh.yaml");
        assert_eq!(
            yaml_data(&mesh_yaml),
            yaml_data(&read(&case.join("mesh.yaml.golden"))),
            "{name}: mesh.yaml as data:\n{mesh_yaml}"
        );
        assert_eq!(
            tree.len(),
            3,
            "{name}: no root certificate or token unless given"
        );
    }
}

/// Every file of a tree, with its mode, as one text.
fn show(tree: &meshvm::FileTree) -> String {
    let mut out = String::new();
    for (path, file) in tree.iter() {
        out.push_str(&format!("==> {path} ({:o}) <==\n", file.mode));
        out.push_str(&String::from_utf8_lossy(&file.bytes));
        if !file.bytes.ends_with(b"\n") {
            out.push_str("<no newline at end>\n");
        }
    }
    out
}

#[test]
fn fleet_fixtures_snapshots() {
    let cases = [
        "single-network",
        "multi-network",
        "revisioned",
        "ipv6",
        "autoregister",
        "probe",
        "hostile",
    ];
    for case in cases {
        let source =
            meshvm::spec::load_fleet(&fixtures().join(format!("fleets/{case}/meshvm.yaml")))
                .unwrap_or_else(|e| panic!("{case}: {e}"));
        for (_, vm) in source.fleet.vms() {
            let tree = vmfiles::vm_files(&source.fleet, &vm.name)
                .unwrap_or_else(|e| panic!("{case}/{}: {e}", vm.name));
            // mesh.yaml is what the proxy reads: it must be valid YAML that says the same
            // proxy metadata as cluster.env.
            let mesh = yaml_data(&String::from_utf8_lossy(
                &tree.get("mesh.yaml").unwrap().bytes,
            ));
            assert!(mesh["defaultConfig"]["proxyMetadata"].is_object(), "{case}");
            insta::assert_snapshot!(format!("{case}__{}", vm.name), show(&tree));
        }
    }
}

#[test]
fn rendering_is_deterministic() {
    let source =
        meshvm::spec::load_fleet(&fixtures().join("fleets/single-network/meshvm.yaml")).unwrap();
    let a = vmfiles::vm_files(&source.fleet, "billing-1").unwrap();
    let b = vmfiles::vm_files(&source.fleet, "billing-1").unwrap();
    assert_eq!(a, b);
    assert!(a.contains("root-cert.pem"), "the fleet's root certificate");
}

#[test]
fn unknown_vm_suggests_a_name() {
    let source =
        meshvm::spec::load_fleet(&fixtures().join("fleets/single-network/meshvm.yaml")).unwrap();
    let err = vmfiles::vm_files(&source.fleet, "billing-3").unwrap_err();
    assert!(matches!(err, VmFilesError::UnknownVm { .. }));
    assert!(err.to_string().contains("did you mean \"billing-"), "{err}");
}

#[test]
fn bad_proxy_config_annotation_is_refused_on_load() {
    let text = read(&fixtures().join("fleets/single-network/meshvm.yaml")).replace(
        "    instances:",
        "    annotations:\n      proxy.istio.io/config: \"statusPort: [not, a, port]\"\n    instances:",
    );
    let diags = meshvm::spec::load_fleet_str(&text, Path::new("meshvm.yaml")).unwrap_err();
    let diag = &diags.0[0];
    assert_eq!(
        diag.path,
        "workloads[0].annotations[\"proxy.istio.io/config\"]"
    );
    assert_eq!(
        diag.message,
        "not a valid ProxyConfig: statusPort: expected an integer, found a list"
    );
}

#[test]
fn hostile_values_stay_inert_when_sourced_by_sh() {
    let source = meshvm::spec::load_fleet(&fixtures().join("fleets/hostile/meshvm.yaml")).unwrap();
    let tree = vmfiles::vm_files(&source.fleet, "victim-1").unwrap();
    let dir = tempfile::tempdir().unwrap();
    meshvm::disk::write_into(&tree, dir.path()).unwrap();
    let vars = source_with_sh(dir.path());

    // What each key must read back as: the proxy metadata as mesh.yaml states it (a second,
    // independent reading), plus the agent's own settings.
    let mesh = yaml_data(&read(&dir.path().join("mesh.yaml")));
    let mut expected: BTreeMap<String, String> = mesh["defaultConfig"]["proxyMetadata"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect();
    for (k, v) in [
        ("ISTIO_INBOUND_PORTS", "*"),
        ("ISTIO_NAMESPACE", "sec"),
        ("ISTIO_SERVICE", "victim.sec"),
        ("ISTIO_SERVICE_CIDR", "*"),
        ("ISTIO_LOCAL_EXCLUDE_PORTS", "22,15090,15021,15020"),
        ("SERVICE_ACCOUNT", "default"),
        ("ISTIO_SVC_IP", "10.9.0.1"),
    ] {
        expected.insert(k.into(), v.into());
    }
    assert_eq!(
        vars, expected,
        "exactly one assignment per key, values intact"
    );
    for (k, v) in &source.fleet.mesh.proxy_metadata {
        assert_eq!(&vars[k], v, "{k} round-trips");
    }
    assert_eq!(vars["HOSTILE_ANNOTATION"], "x'$(touch pwned-annotation)'y");
    assert_eq!(vars["HOSTILE_GROUP"], "\"; touch pwned-group #");
    let keys: BTreeSet<&String> = vars.keys().collect();
    assert!(
        !keys.iter().any(|k| k.as_str() == "EVIL"),
        "a newline starts no assignment"
    );
    let leftovers: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("pwned"))
        .collect();
    assert!(leftovers.is_empty(), "commands ran: {leftovers:?}");
}

#[test]
fn istioctl_labels_can_be_hostile_too() {
    let wg = "kind: WorkloadGroup\nmetadata: {name: w, namespace: n}\nspec:\n  metadata:\n    labels:\n      app: \"it's $(touch pwned-label) `touch pwned-tick`\"\n      note: \"a\\nB=2\\\\\"\n";
    let group = istioctl::read_workload_group(wg, Path::new("wg.yaml")).unwrap();
    let inputs = istioctl::configure(group, Value::Null, &ConfigureOptions::default()).unwrap();
    let tree = vmfiles::render(&inputs);
    let dir = tempfile::tempdir().unwrap();
    meshvm::disk::write_into(&tree, dir.path()).unwrap();
    let vars = source_with_sh(dir.path());
    assert_eq!(
        vars["CANONICAL_SERVICE"],
        "it's $(touch pwned-label) `touch pwned-tick`"
    );
    let labels: BTreeMap<String, String> =
        serde_json::from_str(&vars["ISTIO_METAJSON_LABELS"]).unwrap();
    assert_eq!(labels["note"], "a\nB=2\\");
    assert!(!vars.contains_key("B"));
    assert!(std::fs::read_dir(dir.path()).unwrap().all(|e| {
        !e.unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("pwned")
    }));
}

#[test]
fn an_external_address_must_be_an_ip() {
    let text = read(&fixtures().join("fleets/multi-network/meshvm.yaml"))
        .replace("203.0.113.44", "nat.example.com");
    let diags = meshvm::spec::load_fleet_str(&text, Path::new("meshvm.yaml")).unwrap_err();
    assert!(
        diags
            .iter()
            .any(|d| d.path == "workloads[0].instances[1].external"),
        "{diags}"
    );
}
