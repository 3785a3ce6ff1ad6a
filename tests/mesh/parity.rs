//! `meshvm vm files` against the real `istioctl x workload entry configure` reading a real
//! API server, for every VM of every fixture fleet; and the comparison of their files, which
//! the offline mode's test ([`crate::offline`]) shares.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::Value;

use crate::apply::apply_tree;
use crate::cluster::{
    checked, ensure_namespaces, fleet_file, fleet_turn, istioctl, kubectl, manifest_generate,
    meshvm, output, render, write_stream,
};

/// The test root CA, for fleets without `mesh.rootCert`.
pub fn test_root_cert() -> String {
    std::fs::read_to_string(testkit::fixture("certs/test-root-cert.pem")).unwrap()
}

/// The root istiod signs with and keeps in every namespace's `istio-ca-root-cert` (it puts its
/// own back when a test publishes another).
pub fn istiod_root_cert() -> String {
    std::fs::read_to_string(crate::cluster::harness_var("MESH_ROOT_CERT")).unwrap()
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One difference between meshvm's files and istioctl's: where (a cluster.env variable, which
/// mesh.yaml repeats under `defaultConfig.proxyMetadata`; or `file:path`), meshvm's value and
/// istioctl's (`None`: absent).
type Difference = (String, Option<String>, Option<String>);

/// `ISTIO_INBOUND_PORTS` sorted by number: istioctl joins the ports in Go's random map order
/// (the same inputs give `8080,7070,9090` one run and `7070,9090,8080` the next); meshvm sorts
/// them, one of those orders.
fn sorted_ports(ports: &str) -> String {
    let mut ports: Vec<u32> = ports.split(',').filter_map(|p| p.parse().ok()).collect();
    ports.sort_unstable();
    let ports: Vec<String> = ports.iter().map(u32::to_string).collect();
    ports.join(",")
}

/// cluster.env's bytes, its ports sorted.
fn cluster_env_bytes(dir: &Path) -> String {
    read(&dir.join("cluster.env"))
        .lines()
        .map(|line| match line.strip_prefix("ISTIO_INBOUND_PORTS='") {
            Some(ports) => format!(
                "ISTIO_INBOUND_PORTS='{}'\n",
                sorted_ports(ports.trim_end_matches('\''))
            ),
            None => format!("{line}\n"),
        })
        .collect()
}

/// The variables `sh` sets from cluster.env, its ports sorted.
fn cluster_env_variables(dir: &Path) -> BTreeMap<String, String> {
    let mut variables = testkit::source_with_sh(dir);
    if let Some(ports) = variables.get_mut("ISTIO_INBOUND_PORTS") {
        *ports = sorted_ports(ports);
    }
    variables
}

/// mesh.yaml's leaves by dotted path; strings as they are, other values as JSON.
fn leaves(value: &Value, path: &str, out: &mut BTreeMap<String, String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                let path = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                leaves(v, &path, out);
            }
        }
        Value::String(s) => {
            out.insert(path.to_owned(), s.clone());
        }
        leaf => {
            out.insert(path.to_owned(), leaf.to_string());
        }
    }
}

fn diff_maps(
    prefix: &str,
    mine: &BTreeMap<String, String>,
    theirs: &BTreeMap<String, String>,
) -> Vec<Difference> {
    let keys: BTreeSet<&String> = mine.keys().chain(theirs.keys()).collect();
    keys.into_iter()
        .filter(|key| mine.get(*key) != theirs.get(*key))
        .map(|key| {
            (
                format!("{prefix}{key}"),
                mine.get(key).cloned(),
                theirs.get(key).cloned(),
            )
        })
        .collect()
}

/// Every difference between meshvm's directory and istioctl's: cluster.env byte for byte
/// (compared as the variables `sh` sets, to say which differ), mesh.yaml as data, hosts,
/// root-cert.pem and istio-token byte for byte when meshvm wrote them.
pub fn differences(mine: &Path, theirs: &Path) -> Vec<Difference> {
    let mut out = Vec::new();
    if cluster_env_bytes(mine) != cluster_env_bytes(theirs) {
        let variables = diff_maps(
            "",
            &cluster_env_variables(mine),
            &cluster_env_variables(theirs),
        );
        if variables.is_empty() {
            let bytes = |dir| Some(cluster_env_bytes(dir));
            out.push(("cluster.env".into(), bytes(mine), bytes(theirs)));
        }
        out.extend(variables);
    }
    let mesh = |dir: &Path| {
        let mut leaves_by_path = BTreeMap::new();
        leaves(
            &yaml(&read(&dir.join("mesh.yaml"))),
            "",
            &mut leaves_by_path,
        );
        leaves_by_path
    };
    for (path, m, t) in diff_maps("mesh.yaml:", &mesh(mine), &mesh(theirs)) {
        // A proxy metadata difference is cluster.env's again.
        let variable = path.strip_prefix("mesh.yaml:defaultConfig.proxyMetadata.");
        if !variable.is_some_and(|v| out.contains(&(v.to_owned(), m.clone(), t.clone()))) {
            out.push((path, m, t));
        }
    }
    for exact in ["hosts", "root-cert.pem", "istio-token"] {
        let Ok(m) = std::fs::read_to_string(mine.join(exact)) else {
            continue;
        };
        let t = read(&theirs.join(exact));
        if m != t {
            let shown = |v: String| {
                Some(if exact == "istio-token" {
                    "(a token)".into()
                } else {
                    v
                })
            };
            out.push((exact.into(), shown(m), shown(t)));
        }
    }
    out
}

pub fn yaml(text: &str) -> Value {
    serde_saphyr::from_str(text).unwrap_or_else(|e| panic!("not YAML: {e}\n{text}"))
}

/// The ConfigMaps Istio's own chart installs for the fleet's IstioOperator
/// (`install/istio.yaml`): the mesh config `istio[-<rev>]` and the injector's
/// `istio-sidecar-injector[-<rev>]`, whose values carry the cluster's name. Rendered by the real
/// `istioctl manifest generate`, so the mesh config is the one istiod would serve. They are put
/// into the fleet's istio namespace, where meshvm expects istiod (see [`crate::install`] for
/// where istioctl installs them).
fn install_istio_config_maps(tree: &Path, mesh: &meshvm::spec::Mesh, scratch: &Path) {
    let suffix = if mesh.revision.is_empty() {
        String::new()
    } else {
        format!("-{}", mesh.revision)
    };
    let wanted = [
        format!("istio{suffix}"),
        format!("istio-sidecar-injector{suffix}"),
    ];
    let install = tree.join("install/istio.yaml");
    let mut operator = yaml(&read(&install));
    let refused = crate::install::REFUSED
        .iter()
        .any(|(fleet, file, _)| tree.ends_with(fleet) && *file == "istio.yaml");
    // Where the chart cannot render the mesh-wide proxy metadata, it is left out of the
    // render and merged into the mesh config as the chart's mergeOverwrite would.
    let proxy_metadata = refused.then(|| {
        let default_config = &mut operator["spec"]["meshConfig"]["defaultConfig"];
        default_config
            .as_object_mut()
            .unwrap()
            .remove("proxyMetadata")
            .unwrap()
    });
    let input = scratch.join("istio-operator.json");
    std::fs::write(&input, operator.to_string()).unwrap();
    let maps: Vec<Value> = manifest_generate(&input)
        .unwrap_or_else(|e| panic!("istioctl manifest generate -f {}: {e}", install.display()))
        .into_iter()
        .filter(|o| o["kind"] == "ConfigMap")
        .filter(|o| {
            wanted
                .iter()
                .any(|name| o["metadata"]["name"] == name.as_str())
        })
        .map(|mut o| {
            if let (Some(metadata), Some(mesh)) = (&proxy_metadata, o["data"]["mesh"].as_str()) {
                let mut config = yaml(mesh);
                config["defaultConfig"]["proxyMetadata"] = metadata.clone();
                o["data"]["mesh"] = config.to_string().into();
            }
            serde_json::json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": o["metadata"]["name"], "namespace": mesh.istio_namespace},
                "data": o["data"],
            })
        })
        .collect();
    assert_eq!(
        maps.len(),
        2,
        "istioctl manifest generate: {wanted:?} not both found"
    );
    ensure_namespaces([mesh.istio_namespace.as_str()]);
    let file = scratch.join("istio-config-maps.yaml");
    write_stream(&file, &maps);
    let out = crate::cluster::apply(&file, false);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The `istio-ca-root-cert` ConfigMap istiod publishes into every namespace.
pub fn publish_root_cert(namespace: &str, pem: &str, scratch: &Path) {
    let file = scratch.join(format!("root-cert-{namespace}.yaml"));
    write_stream(
        &file,
        &[serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "istio-ca-root-cert", "namespace": namespace},
            "data": {"root-cert.pem": pem},
        })],
    );
    let out = crate::cluster::apply(&file, false);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn create_service_account(namespace: &str, name: &str, scratch: &Path) {
    let file = scratch.join(format!("sa-{namespace}-{name}.yaml"));
    write_stream(
        &file,
        &[
            serde_json::json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": name, "namespace": namespace}}),
        ],
    );
    let out = crate::cluster::apply(&file, false);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A difference between `meshvm vm files` and istioctl that is known: made on purpose by the
/// fleet mode, or caused by a finding not fixed yet. Anything else that differs fails the
/// test; so does any of these that stops differing.
struct Known {
    fleet: &'static str,
    vm: &'static str,
    at: &'static str,
    meshvm: Option<&'static str>,
    istioctl: Option<&'static str>,
    why: &'static str,
}

const GROUP_METADATA: &str = "The fleet's per-group proxyMetadata: a WorkloadGroup has no field \
    for it, so istioctl cannot see it.";
const INSTANCE_LABELS: &str = "The VM's labels are its WorkloadEntry's (group and instance \
    labels); istioctl knows only the WorkloadGroup's.";
const ISTIOCTL_QUOTING: &str = "istioctl's shell quoting (pkg/util/shellescape) leaves `\\` \
    unquoted (its pattern `[^\\\\w@%+=:,./-]` is a raw string, so `\\` counts as safe): the value \
    `\\` is written as `HOSTILE_BACKSLASH=\\`, sh joins the next line into it and \
    HOSTILE_BACKTICK is lost. meshvm quotes it (a deliberate difference, core/src/vmfiles).";
const HEALTH_ENTRY: &str = "ISTIO_META_WORKLOAD_ENTRY names the VM's WorkloadEntry, so that \
    istiod reports the group's probe on it (the entries are not auto-registered).";

const KNOWN: &[Known] = &[
    Known {
        fleet: "hostile",
        vm: "victim-1",
        at: "HOSTILE_BACKSLASH",
        meshvm: Some("\\"),
        istioctl: Some("HOSTILE_BACKTICK=`touch pwned-backtick`"),
        why: ISTIOCTL_QUOTING,
    },
    Known {
        fleet: "hostile",
        vm: "victim-1",
        at: "HOSTILE_BACKTICK",
        meshvm: Some("`touch pwned-backtick`"),
        istioctl: None,
        why: ISTIOCTL_QUOTING,
    },
    Known {
        fleet: "hostile",
        vm: "victim-1",
        at: "HOSTILE_GROUP",
        meshvm: Some("\"; touch pwned-group #"),
        istioctl: None,
        why: GROUP_METADATA,
    },
    Known {
        fleet: "probe",
        vm: "db-1",
        at: "ISTIO_META_WORKLOAD_ENTRY",
        meshvm: Some("db-1"),
        istioctl: None,
        why: HEALTH_ENTRY,
    },
    Known {
        fleet: "probe",
        vm: "web-1",
        at: "ISTIO_META_WORKLOAD_ENTRY",
        meshvm: Some("web-1"),
        istioctl: None,
        why: HEALTH_ENTRY,
    },
    Known {
        fleet: "revisioned",
        vm: "reports-1",
        at: "GROUP_ONLY",
        meshvm: Some("yes"),
        istioctl: None,
        why: GROUP_METADATA,
    },
    Known {
        fleet: "single-network",
        vm: "billing-2",
        at: "CANONICAL_REVISION",
        meshvm: Some("v2"),
        istioctl: Some("v1"),
        why: INSTANCE_LABELS,
    },
    Known {
        fleet: "single-network",
        vm: "billing-2",
        at: "ISTIO_METAJSON_LABELS",
        meshvm: Some(
            r#"{"app":"billing","rack":"r7","service.istio.io/canonical-name":"billing","service.istio.io/canonical-revision":"v2","version":"v2"}"#,
        ),
        istioctl: Some(
            r#"{"app":"billing","service.istio.io/canonical-name":"billing","service.istio.io/canonical-revision":"v1","version":"v1"}"#,
        ),
        why: INSTANCE_LABELS,
    },
];

#[test]
fn istioctl_configures_every_fleet_vm_as_meshvm_does() {
    let mut mismatches = Vec::new();
    for fleet in testkit::fixture_fleets() {
        let _turn = fleet_turn();
        let scratch = tempfile::tempdir().unwrap();
        let tree = render(&fleet, scratch.path());
        apply_tree(&tree, scratch.path());
        let source = meshvm::spec::load_fleet(&fleet_file(&fleet)).unwrap();
        let mesh = &source.fleet.mesh;
        install_istio_config_maps(&tree, mesh, scratch.path());
        let root_cert = source
            .fleet
            .root_cert()
            .map_or_else(test_root_cert, str::to_owned);
        for (group, vm) in source.fleet.vms() {
            publish_root_cert(&group.namespace, &root_cert, scratch.path());
            // The tree leaves the `default` ServiceAccount to the controller manager, which the
            // harness does not run.
            create_service_account(&group.namespace, &group.service_account, scratch.path());
            let theirs = scratch.path().join(format!("{}-istioctl", vm.name));
            let mut cmd = istioctl();
            cmd.args([
                "-i",
                &mesh.istio_namespace,
                "x",
                "workload",
                "entry",
                "configure",
            ])
            .args(["--name", &group.name, "-n", &group.namespace, "-o"])
            .arg(&theirs)
            .args(["--ingressIP", &mesh.east_west_gateway.address])
            .arg(format!("--capture-dns={}", mesh.dns_capture));
            if !mesh.revision.is_empty() {
                cmd.args(["--revision", &mesh.revision]);
            }
            let ip_flag = if vm.external {
                "--externalIP"
            } else {
                "--internalIP"
            };
            cmd.args([ip_flag, &vm.address]);
            if group.auto_register {
                cmd.arg("--autoregister");
            }
            checked(&mut cmd);

            let mine = scratch.path().join(format!("{}-meshvm", vm.name));
            checked(
                meshvm()
                    .args(["vm", "files", &vm.name, "-f"])
                    .arg(fleet_file(&fleet))
                    .arg("-o")
                    .arg(&mine)
                    .arg("--token-file")
                    .arg(theirs.join("istio-token")),
            );
            // istiod owns istio-ca-root-cert: istioctl may read the harness root istiod puts
            // back, where meshvm writes the fleet's. Each is checked against its own source.
            let found: Vec<Difference> = differences(&mine, &theirs)
                .into_iter()
                .filter(|d| {
                    let (file, ours, istioctls) = d;
                    !(file == "root-cert.pem"
                        && ours.as_deref() == Some(root_cert.as_str())
                        && istioctls.as_deref() == Some(istiod_root_cert().as_str()))
                })
                .collect();
            let known: Vec<&Known> = KNOWN
                .iter()
                .filter(|k| k.fleet == fleet && k.vm == vm.name)
                .collect();
            let mut expected: Vec<Difference> = known
                .iter()
                .map(|k| {
                    (
                        k.at.into(),
                        k.meshvm.map(Into::into),
                        k.istioctl.map(Into::into),
                    )
                })
                .collect();
            let mut found = found;
            found.sort();
            expected.sort();
            if found != expected {
                let reasons: Vec<String> = known
                    .iter()
                    .map(|k| format!("{}: {}", k.at, k.why))
                    .collect();
                mismatches.push(format!(
                    "{fleet}/{}: found {found:#?}\nknown {expected:#?}\nbecause {reasons:#?}",
                    vm.name
                ));
            }
            token_is_accepted(&fleet, &vm.name, &group.namespace, &theirs, scratch.path());
        }
    }
    assert!(
        mismatches.is_empty(),
        "meshvm vm files vs istioctl x workload entry configure:\n{}",
        mismatches.join("\n")
    );
}

/// The token istioctl got from the real TokenRequest passes the API server's TokenReview for
/// Istio's audience, and meshvm's own checks (`meshvm cloud-init` refuses a token that fails
/// them).
fn token_is_accepted(fleet: &str, vm: &str, namespace: &str, files: &Path, scratch: &Path) {
    let token_file = files.join("istio-token");
    let review = scratch.join("tokenreview.json");
    std::fs::write(
        &review,
        serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
            "spec": {"token": read(&token_file), "audiences": ["istio-ca"]},
        })
        .to_string(),
    )
    .unwrap();
    let out = output(kubectl().args(["create", "-o", "json", "-f"]).arg(&review));
    std::fs::remove_file(&review).unwrap();
    // Never print the output: it holds the token.
    assert!(out.status.success(), "{fleet}/{vm}: the TokenReview failed");
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        status["status"]["authenticated"], true,
        "{fleet}/{vm}: TokenReview"
    );
    let user = status["status"]["user"]["username"]
        .as_str()
        .unwrap_or_default();
    assert!(
        user.starts_with(&format!("system:serviceaccount:{namespace}:")),
        "{fleet}/{vm}: the token is for {user}"
    );

    let mut cmd = meshvm();
    cmd.args(["cloud-init", vm, "-f"])
        .arg(fleet_file(fleet))
        .arg("--token-file")
        .arg(&token_file)
        .arg("--root-cert")
        .arg(testkit::fixture("certs/test-root-cert.pem"))
        .arg("-o")
        .arg(scratch.join(format!("{vm}.user-data")));
    let out = output(&mut cmd);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{fleet}/{vm}: meshvm cloud-init refused istioctl's token: {said}"
    );
}
