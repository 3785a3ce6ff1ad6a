//! No value can inject anything: arbitrary strings put where users put free text (istioctl
//! WorkloadGroup labels and annotations, mesh-config and fleet proxy metadata, the
//! `proxy.istio.io/config` annotation) come out of `cluster.env` exactly as they went in when a
//! real `sh` and `bash` source it, with no other variable set and no command run; and they come
//! out of `mesh.yaml` exactly as they went in when a YAML 1.1 reader (PyYAML) reads it.
//!
//! Property test with a fixed seed: a few thousand cases, checked in batches so that one shell
//! and one Python process serve a few hundred cases.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use meshvm::vmfiles::istioctl::{
    ConfigureOptions, configure, read_mesh_config, read_workload_group,
};
use meshvm::vmfiles::{CLUSTER_ENV, MESH_YAML};
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, RngSeed, TestRunner};
use serde_json::{Value, json};

/// Debian's interpreter, which has python3-yaml (a dependency of cloud-init).
const PYTHON: &str = "/usr/bin/python3";
const BATCH: usize = 300;
const CASES: usize = 3000;
/// Variables a shell exports by itself.
const SHELL_OWN: &[&str] = &["PWD", "OLDPWD", "SHLVL", "_", "PATH"];

/// Strings written to break shells and YAML readers; the generator adds random ones.
fn hostile() -> Vec<String> {
    let mut v: Vec<String> = [
        "",
        "'",
        "''",
        "\"",
        "\\",
        "\\'",
        "'\\''",
        "$",
        "$$",
        "$0",
        "${IFS}",
        "$'\\x41'",
        "`",
        "$(touch pwned-subst)",
        "`touch pwned-tick`",
        "'; touch pwned-quote; '",
        "'\"'\"'; touch pwned-double; #",
        "\"; touch pwned-dq; #",
        "x\nEVIL=1\ntouch pwned-newline",
        "\n",
        "\r\n",
        "a\rEVIL=1",
        "\t",
        " leading",
        "trailing ",
        "-e",
        "--",
        "!",
        "#",
        "~",
        "~root",
        "*",
        "?",
        "[a]",
        "{a,b}",
        "a=b",
        "w",
        "@%+=:,./-",
        "yes",
        "no",
        "on",
        "off",
        "null",
        "~",
        "0644",
        "1e3",
        "2001-12-14",
        "1:30",
        "<<",
        "- a",
        "a: b",
        "&a",
        "*a",
        "!tag",
        "|",
        ">",
        "\u{85}",
        "\u{2028}",
        "\u{feff}x",
        "\u{7f}",
        "\u{1}",
        "\u{1b}[31m",
        "é",
        "日本",
        "😀",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    v.push("x".repeat(10_000));
    v.push("'".repeat(1_000));
    v
}

/// `count` strings: the hostile ones first, then arbitrary ones (any Unicode, NUL included).
fn strings(count: usize, seed: u64) -> Vec<String> {
    let mut runner = TestRunner::new(Config {
        rng_seed: RngSeed::Fixed(seed),
        ..Config::default()
    });
    let strategy = proptest::string::string_regex("(?s).{0,40}").unwrap();
    let mut out = hostile();
    while out.len() < count {
        out.push(strategy.new_tree(&mut runner).unwrap().current());
    }
    out.truncate(count);
    out
}

/// One rendered case: its files, and what sourcing cluster.env and reading mesh.yaml must give.
struct Case {
    cluster_env: String,
    mesh_yaml: String,
    /// Variables whose value must come back exactly.
    exact: BTreeMap<String, String>,
    /// `ISTIO_METAJSON_LABELS` must decode to these labels.
    json_labels: Option<BTreeMap<String, String>>,
}

impl Case {
    fn new(files: &meshvm::FileTree) -> Case {
        let text = |name| String::from_utf8(files.get(name).unwrap().bytes.clone()).unwrap();
        Case {
            cluster_env: text(CLUSTER_ENV),
            mesh_yaml: text(MESH_YAML),
            exact: BTreeMap::new(),
            json_labels: None,
        }
    }
}

/// Sources every case's cluster.env with `shell`, each in its own subshell of one process, in
/// an empty environment; returns each case's variables.
fn source_all(shell: &str, dir: &Path, cases: usize) -> Vec<BTreeMap<String, String>> {
    const END: &str = "--end-of-case--";
    let script = format!(
        "i=0; while [ $i -lt {cases} ]; do ( set -a; . ./$i/{CLUSTER_ENV}; exec env -0 ); \
         printf '%s\\0' '{END}'; i=$((i+1)); done"
    );
    let out = Command::new(shell)
        .current_dir(dir)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .args(["-c", &script])
        .output()
        .unwrap_or_else(|e| panic!("{shell} starts: {e}"));
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{shell} sourced every file without an error: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let mut all = vec![BTreeMap::new()];
    for entry in out.stdout.split(|b| *b == 0) {
        let entry = String::from_utf8(entry.to_vec()).expect("UTF-8 in, UTF-8 out");
        if entry == END {
            all.push(BTreeMap::new());
        } else if !entry.is_empty() {
            let (k, v) = entry.split_once('=').expect("env prints KEY=value");
            if !SHELL_OWN.contains(&k) {
                all.last_mut().unwrap().insert(k.to_owned(), v.to_owned());
            }
        }
    }
    assert!(all.pop().unwrap().is_empty());
    assert_eq!(all.len(), cases, "{shell}: one environment per case");
    all
}

/// Reads every mesh.yaml with PyYAML (`safe_load`), in one process.
fn pyyaml_all(docs: &[&str]) -> Vec<Value> {
    let mut child = Command::new(PYTHON)
        .args([
            "-c",
            "import sys, yaml, json\n\
             docs = json.load(sys.stdin)\n\
             json.dump([yaml.safe_load(d) for d in docs], sys.stdout, default=lambda o: {'not a string': repr(o)})",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 starts");
    let input = serde_json::to_vec(docs).unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success(), "PyYAML read every mesh.yaml");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Checks a batch: `baseline` (benign values) fixes which variables exist and the values that
/// do not depend on the input.
fn check_batch(what: &str, baseline: &Case, cases: &[Case]) {
    for tool in ["sh", "bash"] {
        let found = std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()));
        assert!(found, "`{tool}` is needed: apt-get install dash bash");
    }
    assert!(
        Path::new(PYTHON).exists(),
        "{PYTHON} is needed (apt-get install python3-yaml)"
    );
    let tmp = tempfile::tempdir().unwrap();
    let all: Vec<&Case> = std::iter::once(baseline).chain(cases).collect();
    for (i, case) in all.iter().enumerate() {
        let dir = tmp.path().join(i.to_string());
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join(CLUSTER_ENV), &case.cluster_env).unwrap();
    }
    let yaml: Vec<&str> = all.iter().map(|c| c.mesh_yaml.as_str()).collect();
    let read = pyyaml_all(&yaml);
    for shell in ["sh", "bash"] {
        let envs = source_all(shell, tmp.path(), all.len());
        let reference = &envs[0];
        for (i, (case, env)) in all.iter().zip(&envs).enumerate().skip(1) {
            let at = || format!("{what} case {i} ({shell}):\n{}", case.cluster_env);
            let keys: BTreeSet<&String> = env.keys().collect();
            let want: BTreeSet<&String> = reference.keys().collect();
            assert_eq!(keys, want, "exactly the expected variables: {}", at());
            for (key, value) in env {
                match case.exact.get(key) {
                    Some(expected) => assert_eq!(value, expected, "{key}: {}", at()),
                    None if key == "ISTIO_METAJSON_LABELS" => {}
                    None => assert_eq!(value, &reference[key], "{key}: {}", at()),
                }
            }
            if let Some(labels) = &case.json_labels {
                let decoded: BTreeMap<String, String> =
                    serde_json::from_str(&env["ISTIO_METAJSON_LABELS"]).unwrap();
                assert_eq!(&decoded, labels, "ISTIO_METAJSON_LABELS: {}", at());
            }
            // mesh.yaml carries the same proxy metadata, as cluster.env's values.
            let metadata = &read[i]["defaultConfig"]["proxyMetadata"];
            for (key, expected) in &case.exact {
                if reference.contains_key(key) && key != "ISTIO_SVC_IP" {
                    assert_eq!(
                        metadata.get(key).and_then(Value::as_str),
                        Some(expected.as_str()),
                        "mesh.yaml proxyMetadata.{key} in PyYAML: {}\n{}",
                        at(),
                        case.mesh_yaml
                    );
                }
            }
        }
        let pwned: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().starts_with("pwned"))
            .collect();
        assert!(pwned.is_empty(), "{what}: {shell} ran commands: {pwned:?}");
    }
}

/// The istioctl path: a WorkloadGroup file and a mesh config file, as users give them to
/// `meshvm workload entry configure`, with the strings in labels, a label key, the
/// `proxy.istio.io/config` annotation and the mesh's proxy metadata.
fn istioctl_case(s: [&str; 5]) -> Result<Case, String> {
    let [app, version, key, annotated, mesh_value] = s;
    let labels: BTreeMap<String, String> = [
        ("app".to_owned(), app.to_owned()),
        ("version".to_owned(), version.to_owned()),
        (format!("x/{key}"), key.to_owned()),
    ]
    .into();
    let annotation = meshvm::k8s::yaml::to_string(&json!({
        "proxyMetadata": {"ANNOTATED": annotated},
    }));
    let group = meshvm::k8s::yaml::to_string(&json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "WorkloadGroup",
        "metadata": {"name": "g", "namespace": "ns", "annotations": {"note/free": annotated}},
        "spec": {
            "metadata": {
                "labels": labels,
                "annotations": {"proxy.istio.io/config": annotation},
            },
            "template": {"serviceAccount": "sa", "ports": {"http": 8080}},
        },
    }));
    let mesh = meshvm::k8s::yaml::to_string(&json!({
        "trustDomain": "cluster.local",
        "defaultConfig": {"proxyMetadata": {"MESH_VALUE": mesh_value}},
    }));
    let group = read_workload_group(&group, "wg.yaml".as_ref()).map_err(|e| e.to_string())?;
    let read_labels = &group.spec.metadata.as_ref().unwrap().labels;
    assert_eq!(read_labels, &labels, "labels read back from meshvm's YAML");
    let mesh = read_mesh_config(&mesh, "mesh.yaml".as_ref()).map_err(|e| e.to_string())?;
    let options = ConfigureOptions {
        internal_ip: Some("10.0.0.1".into()),
        ingress_ip: Some("203.0.113.10".into()),
        ..ConfigureOptions::default()
    };
    let inputs = configure(group, mesh, &options).map_err(|e| e.to_string())?;
    let mut case = Case::new(&meshvm::vmfiles::render(&inputs));
    for (k, v) in [
        ("CANONICAL_SERVICE", app),
        ("CANONICAL_REVISION", version),
        ("ANNOTATED", annotated),
        ("MESH_VALUE", mesh_value),
    ] {
        case.exact.insert(k.to_owned(), v.to_owned());
    }
    let mut json_labels = labels;
    json_labels.insert("service.istio.io/canonical-name".into(), app.into());
    json_labels.insert("service.istio.io/canonical-revision".into(), version.into());
    case.json_labels = Some(json_labels);
    Ok(case)
}

#[test]
fn arbitrary_strings_round_trip_through_istioctl_mode() {
    let pool = strings(CASES * 5, 11);
    let benign = istioctl_case(["a"; 5]).unwrap();
    let mut nul_refused = 0;
    for (b, batch) in pool.chunks(BATCH * 5).enumerate() {
        let mut cases = Vec::new();
        for s in batch.chunks(5) {
            let s = [&*s[0], &*s[1], &*s[2], &*s[3], &*s[4]];
            match istioctl_case(s) {
                Ok(case) => cases.push(case),
                // A NUL cannot be in an environment variable: refused, never truncated.
                Err(e) if s[..2].iter().chain(&s[3..]).any(|v| v.contains('\0')) => {
                    assert!(e.contains("NUL"), "{e}");
                    nul_refused += 1;
                }
                Err(e) => panic!("{s:?}: {e}"),
            }
        }
        check_batch(&format!("istioctl batch {b}"), &benign, &cases);
    }
    assert!(nul_refused > 0, "the generator produces NULs too");
}

/// The fleet path: a fleet written by meshvm's YAML emitter and read by the fleet loader, with
/// the strings in the mesh's and the group's proxy metadata, the `proxy.istio.io/config`
/// annotation, and a free-text annotation.
fn fleet_case(base: &meshvm::Fleet, s: [&str; 4]) -> Result<Case, String> {
    let [mesh_value, group_value, annotated, note] = s;
    let mut fleet = base.clone();
    fleet
        .mesh
        .proxy_metadata
        .insert("MESH_VALUE".into(), mesh_value.into());
    let w = &mut fleet.workloads[0];
    w.proxy_metadata
        .insert("GROUP_VALUE".into(), group_value.into());
    w.annotations.insert(
        "proxy.istio.io/config".into(),
        meshvm::k8s::yaml::to_string(&json!({"proxyMetadata": {"ANNOTATED": annotated}})),
    );
    w.annotations.insert("example.com/note".into(), note.into());
    let text = meshvm::k8s::yaml::to_string(&fleet);
    let read =
        meshvm::spec::load_fleet_str(&text, "fleet.yaml".as_ref()).map_err(|d| d.to_string())?;
    assert_eq!(*read, fleet, "the fleet reads back as written:\n{text}");
    let files = meshvm::vmfiles::vm_files(&read, "tester-1").map_err(|e| e.to_string())?;
    let mut case = Case::new(&files);
    for (k, v) in [
        ("MESH_VALUE", mesh_value),
        ("GROUP_VALUE", group_value),
        ("ANNOTATED", annotated),
    ] {
        case.exact.insert(k.to_owned(), v.to_owned());
    }
    Ok(case)
}

#[test]
fn arbitrary_strings_round_trip_through_the_fleet() {
    let seed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/fleets/seed/meshvm.yaml");
    let base = meshvm::spec::load_fleet(&seed).unwrap().fleet;
    let pool = strings(CASES * 4, 13);
    let benign = fleet_case(&base, ["a"; 4]).unwrap();
    let mut nul_refused = 0;
    for (b, batch) in pool.chunks(BATCH * 4).enumerate() {
        let mut cases = Vec::new();
        for s in batch.chunks(4) {
            let s = [&*s[0], &*s[1], &*s[2], &*s[3]];
            match fleet_case(&base, s) {
                Ok(case) => cases.push(case),
                // Validation refuses a NUL in proxy metadata, with its position.
                Err(e) if s[..3].iter().any(|v| v.contains('\0')) => {
                    assert!(e.contains("fleet.yaml:") && e.contains("NUL"), "{e}");
                    nul_refused += 1;
                }
                Err(e) => panic!("{s:?}: {e}"),
            }
        }
        check_batch(&format!("fleet batch {b}"), &benign, &cases);
    }
    assert!(nul_refused > 0, "the generator produces NULs too");
}
