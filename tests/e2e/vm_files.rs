//! `meshvm vm files`, `meshvm workload entry configure` and `meshvm workload group create`,
//! driven through the binary: the files, their modes, istioctl's goldens, bad input, and `sh`
//! sourcing what was written.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::support::{fixture, meshvm, run};
use testkit::source_with_sh;

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn yaml(text: &str) -> serde_json::Value {
    serde_saphyr::from_str(text).expect("valid YAML")
}

/// A token of `namespace`/`account` expiring at `exp` (Unix seconds); its signature,
/// base64url of "secret-signature", is the marker leak checks look for (`c2VjcmV0`).
fn token_for(namespace: &str, account: &str, exp: i64) -> String {
    let valid = meshvm::cloudinit::token::unsigned_test_token(&serde_json::json!({
        "aud": ["istio-ca"],
        "sub": format!("system:serviceaccount:{namespace}:{account}"),
        "exp": exp,
    }));
    let (unsigned, _) = valid.rsplit_once('.').unwrap();
    format!("{unsigned}.c2VjcmV0LXNpZ25hdHVyZQ")
}

/// Year 2100.
const LATER: i64 = 4_102_444_800;

#[test]
fn vm_files_writes_every_file_with_its_mode() {
    let tmp = tempfile::tempdir().unwrap();
    let token = tmp.path().join("token");
    let good = token_for("vm-apps", "billing", LATER);
    std::fs::write(&token, format!("{good}\n")).unwrap();
    let out_dir = tmp.path().join("billing-1");
    let out = run(meshvm()
        .args(["vm", "files", "billing-1", "-o"])
        .arg(&out_dir)
        .arg("-f")
        .arg(fixture("fleets/single-network/meshvm.yaml"))
        .arg("--token-file")
        .arg(&token));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let mut names: Vec<String> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "cluster.env",
            "hosts",
            "istio-token",
            "mesh.yaml",
            "root-cert.pem"
        ]
    );
    assert_eq!(mode(&out_dir.join("istio-token")), 0o600);
    for public in ["cluster.env", "hosts", "mesh.yaml", "root-cert.pem"] {
        assert_eq!(mode(&out_dir.join(public)), 0o644, "{public}");
    }
    assert_eq!(
        read(&out_dir.join("istio-token")),
        good,
        "the bare token, as istioctl writes it"
    );
    assert_eq!(
        read(&out_dir.join("root-cert.pem")),
        read(&fixture("fleets/single-network/root-cert.pem"))
    );
    assert!(read(&out_dir.join("cluster.env")).contains("ISTIO_SVC_IP='10.0.0.21'\n"));
    assert_eq!(
        read(&out_dir.join("hosts")),
        "203.0.113.10 istiod.istio-system.svc\n"
    );
    assert!(
        out.stdout
            .contains("istio-token    → /var/run/secrets/tokens/istio-token"),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("c2VjcmV0") && !out.stderr.contains("c2VjcmV0"));

    // Again into the same directory: replaced as a whole, without the token this time.
    let out = run(meshvm()
        .args(["vm", "files", "billing-2", "-o"])
        .arg(&out_dir)
        .arg("-f")
        .arg(fixture("fleets/single-network/meshvm.yaml")));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!out_dir.join("istio-token").exists());
    assert!(read(&out_dir.join("cluster.env")).contains("ISTIO_SVC_IP='10.0.0.22'\n"));
}

fn configure(case: &str, extra: &[&str], out_dir: &Path) -> crate::support::Run {
    let dir = fixture(&format!("istioctl/{case}"));
    let args = read(&dir.join("args"));
    run(meshvm()
        .args(["workload", "entry", "configure", "-f"])
        .arg(dir.join("workloadgroup.yaml"))
        .arg("--mesh-config")
        .arg(dir.join("meshconfig.yaml"))
        .arg("--root-cert")
        .arg(dir.join("root-cert.pem.golden"))
        .arg("-o")
        .arg(out_dir)
        .args(args.split_whitespace())
        .args(extra))
}

#[test]
fn workload_entry_configure_reproduces_istioctls_goldens() {
    let tmp = tempfile::tempdir().unwrap();
    for case in ["ipv4", "ipv6", "nil-proxy-metadata"] {
        let out_dir = tmp.path().join(case);
        let out = configure(case, &[], &out_dir);
        assert_eq!(out.code, 0, "{case}: {}", out.stderr);
        let golden = fixture(&format!("istioctl/{case}"));
        for exact in ["cluster.env", "hosts", "root-cert.pem"] {
            assert_eq!(
                read(&out_dir.join(exact)),
                read(&golden.join(format!("{exact}.golden"))),
                "{case}: {exact} byte for byte"
            );
        }
        assert_eq!(
            yaml(&read(&out_dir.join("mesh.yaml"))),
            yaml(&read(&golden.join("mesh.yaml.golden"))),
            "{case}: mesh.yaml as data"
        );
    }
}

#[test]
fn istioctl_flag_spellings_are_accepted() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = fixture("istioctl/ipv4");
    let out = run(meshvm()
        .args(["workload", "entry", "configure", "-f"])
        .arg(dir.join("workloadgroup.yaml"))
        .arg("--mesh-config")
        .arg(dir.join("meshconfig.yaml"))
        .args(["-o"])
        .arg(tmp.path().join("out"))
        .args([
            "--internalIP",
            "10.10.10.10",
            "--ingressIP",
            "10.10.10.11",
            "--clusterID",
            "Kubernetes",
            "--revision",
            "rev-1",
        ]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        read(&tmp.path().join("out/cluster.env")),
        read(&dir.join("cluster.env.golden"))
    );
}

#[test]
fn switches_change_what_istioctl_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("out");
    let out = configure(
        "nil-proxy-metadata",
        &["--capture-dns=false", "--autoregister"],
        &out_dir,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let env = read(&out_dir.join("cluster.env"));
    assert!(!env.contains("ISTIO_META_DNS_CAPTURE"), "{env}");
    assert!(
        env.contains("ISTIO_META_AUTO_REGISTER_GROUP='foo'\n"),
        "{env}"
    );

    let out = configure(
        "nil-proxy-metadata",
        &["--external-ip", "203.0.113.9"],
        &tmp.path().join("both"),
    );
    assert_eq!(
        out.code, 2,
        "--internal-ip and --external-ip exclude each other"
    );
}

#[test]
fn workload_group_create_prints_istioctls_workload_group() {
    let out = run(meshvm().args([
        "workload",
        "group",
        "create",
        "--name",
        "foo",
        "--namespace",
        "bar",
    ]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    // istioctl's own expected output (workload_test.go, defaultYAML).
    assert_eq!(
        out.stdout,
        "apiVersion: networking.istio.io/v1\nkind: WorkloadGroup\nmetadata:\n  name: foo\n  namespace: bar\nspec:\n  metadata: {}\n  template:\n    serviceAccount: default\n"
    );
    let out = run(meshvm().args([
        "workload",
        "group",
        "create",
        "--name",
        "foo",
        "-n",
        "bar",
        "-l",
        "app=foo,bar=baz",
        "-p",
        "grpc=3550,http=8080",
        "-a",
        "annotation=foobar",
        "--serviceAccount",
        "test",
        "--network",
        "vm-net",
    ]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    // istioctl's customYAML, with the network meshvm also takes.
    let want = yaml(
        "apiVersion: networking.istio.io/v1\nkind: WorkloadGroup\nmetadata:\n  name: foo\n  namespace: bar\nspec:\n  metadata:\n    annotations:\n      annotation: foobar\n    labels:\n      app: foo\n      bar: baz\n  template:\n    network: vm-net\n    ports:\n      grpc: 3550\n      http: 8080\n    serviceAccount: test\n",
    );
    assert_eq!(yaml(&out.stdout), want);

    // What it prints, `entry configure` reads.
    let tmp = tempfile::tempdir().unwrap();
    let wg = tmp.path().join("wg.yaml");
    std::fs::write(&wg, &out.stdout).unwrap();
    std::fs::write(tmp.path().join("mesh.yaml"), "").unwrap();
    let out = run(meshvm()
        .args(["workload", "entry", "configure", "-f"])
        .arg(&wg)
        .arg("--mesh-config")
        .arg(tmp.path().join("mesh.yaml"))
        .arg("-o")
        .arg(tmp.path().join("out")));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let env = read(&tmp.path().join("out/cluster.env"));
    assert!(env.contains("ISTIO_INBOUND_PORTS='3550,8080'\n"), "{env}");
    assert!(env.contains("ISTIO_META_NETWORK='vm-net'\n"), "{env}");
    assert_eq!(
        read(&tmp.path().join("out/hosts")),
        "",
        "no ingress IP, no hosts line"
    );
}

/// Each bad input: exit 1, a message saying what is wrong, and no output directory.
#[test]
fn bad_input_exits_1_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = tmp.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let good_wg = fixture("istioctl/ipv4/workloadgroup.yaml");
    let good_mesh = fixture("istioctl/ipv4/meshconfig.yaml");
    let bad_mesh = write("bad-mesh.yaml", "defaultConfig:\n  statusPort: fifteen\n");
    let unsafe_key = write(
        "unsafe-key.yaml",
        "defaultConfig:\n  proxyMetadata:\n    \"X;reboot\": \"1\"\n",
    );
    let typo_wg = write(
        "typo.yaml",
        "kind: WorkloadGroup\nmetadata: {name: a, namespace: b}\nspec:\n  template:\n    serviceAcount: x\n",
    );
    let broken_yaml = write("broken.yaml", "metadata: {name: a\n");
    let empty_token = write("empty-token", "\n");
    let good = token_for("vm-apps", "billing", LATER);
    let two_tokens = write("two-tokens", &format!("{good} {good}\n"));
    let expired = write("expired", &token_for("vm-apps", "billing", 1_000_000_000));
    let other_account = write("other-account", &token_for("vm-apps", "payments", LATER));
    let not_jwt = write("not-jwt", "c2VjcmV0LXRva2Vu\n");
    let configure_token = write("configure-token", &good);
    let fleet = fixture("fleets/single-network/meshvm.yaml");

    let cases: Vec<(&str, Vec<std::ffi::OsString>, &str)> = vec![
        (
            "unknown VM",
            args(&["vm", "files", "billing-9", "-f"], &[&fleet]),
            "no VM named \"billing-9\"",
        ),
        (
            "empty token",
            args(&["vm", "files", "billing-1", "-f"], &[&fleet])
                .into_iter()
                .chain(args(&["--token-file"], &[&empty_token]))
                .collect(),
            "is empty",
        ),
        (
            "two tokens",
            args(&["vm", "files", "billing-1", "-f"], &[&fleet])
                .into_iter()
                .chain(args(&["--token-file"], &[&two_tokens]))
                .collect(),
            "one token",
        ),
        (
            "expired token",
            args(&["vm", "files", "billing-1", "-f"], &[&fleet])
                .into_iter()
                .chain(args(&["--token-file"], &[&expired]))
                .collect(),
            "the token expired at 2001-09-09T01:46:40Z",
        ),
        (
            "another ServiceAccount's token",
            args(&["vm", "files", "billing-1", "-f"], &[&fleet])
                .into_iter()
                .chain(args(&["--token-file"], &[&other_account]))
                .collect(),
            "not for the VM's ServiceAccount `system:serviceaccount:vm-apps:billing`",
        ),
        (
            "not a JWT",
            args(&["vm", "files", "billing-1", "-f"], &[&fleet])
                .into_iter()
                .chain(args(&["--token-file"], &[&not_jwt]))
                .collect(),
            "not a JWT",
        ),
        (
            "configure: the WorkloadGroup's ServiceAccount",
            configure_args(&good_wg, &good_mesh, &[])
                .into_iter()
                .chain(args(&["--token-file"], &[&configure_token]))
                .collect(),
            "not for the VM's ServiceAccount `system:serviceaccount:bar:vm-serviceaccount`",
        ),
        (
            "mesh config type",
            configure_args(&good_wg, &bad_mesh, &[]),
            "bad-mesh.yaml:2:3: mesh config: defaultConfig.statusPort: expected an integer",
        ),
        (
            "unsafe metadata key",
            configure_args(&good_wg, &unsafe_key, &[]),
            "proxy metadata: key \"X;reboot\" must be a variable name",
        ),
        (
            "spec typo",
            configure_args(&typo_wg, &good_mesh, &[]),
            "typo.yaml:5:5: unknown field `serviceAcount`",
        ),
        (
            "broken YAML",
            configure_args(&broken_yaml, &good_mesh, &[]),
            "broken.yaml:",
        ),
        (
            "bad ingress IP",
            configure_args(&good_wg, &good_mesh, &["--ingress-ip", "10.0.0.300"]),
            "ingress IP: \"10.0.0.300\" is not an IPv4 or IPv6 address",
        ),
        (
            "newline in revision",
            configure_args(&good_wg, &good_mesh, &["--revision", "a\nb"]),
            "revision",
        ),
    ];
    for (what, args, expected) in cases {
        let out_dir = tmp.path().join("out");
        let out = run(meshvm().args(&args).arg("-o").arg(&out_dir));
        assert_eq!(out.code, 1, "{what}: {}", out.stderr);
        assert!(
            out.stderr.contains(expected),
            "{what}: expected {expected:?} in:\n{}",
            out.stderr
        );
        assert!(!out.stderr.contains("c2VjcmV0"), "{what}: the token leaked");
        assert!(!out_dir.exists(), "{what}: nothing written");
    }
    let bad_group = run(meshvm().args([
        "workload",
        "group",
        "create",
        "--name",
        "foo",
        "-n",
        "bar",
        "-p",
        "http=99999",
    ]));
    assert_eq!(bad_group.code, 1);
    assert!(bad_group.stderr.contains("--ports"), "{}", bad_group.stderr);
}

fn args(words: &[&str], paths: &[&Path]) -> Vec<std::ffi::OsString> {
    words
        .iter()
        .map(Into::into)
        .chain(paths.iter().map(|p| p.as_os_str().to_owned()))
        .collect()
}

fn configure_args(wg: &Path, mesh: &Path, extra: &[&str]) -> Vec<std::ffi::OsString> {
    let mut out = args(&["workload", "entry", "configure", "-f"], &[wg]);
    out.extend(args(&["--mesh-config"], &[mesh]));
    out.extend(extra.iter().map(Into::into));
    out
}

#[test]
fn a_failed_run_leaves_the_previous_files_and_a_foreign_directory_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("out");
    let fleet = fixture("fleets/single-network/meshvm.yaml");
    let ok = run(meshvm()
        .args(["vm", "files", "billing-1", "-o"])
        .arg(&out_dir)
        .arg("-f")
        .arg(&fleet));
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    let before = read(&out_dir.join("cluster.env"));
    let failed = run(meshvm()
        .args(["vm", "files", "nobody", "-o"])
        .arg(&out_dir)
        .arg("-f")
        .arg(&fleet));
    assert_eq!(failed.code, 1);
    assert_eq!(read(&out_dir.join("cluster.env")), before);

    let home = tmp.path().join("home");
    std::fs::create_dir(&home).unwrap();
    std::fs::write(home.join("notes.txt"), "mine").unwrap();
    let refused = run(meshvm()
        .args(["vm", "files", "billing-1", "-o"])
        .arg(&home)
        .arg("-f")
        .arg(&fleet));
    assert_eq!(refused.code, 1);
    assert!(refused.stderr.contains("notes.txt"), "{}", refused.stderr);
    assert_eq!(read(&home.join("notes.txt")), "mine");
}

#[test]
fn hostile_values_are_inert_when_sh_sources_cluster_env() {
    let tmp = tempfile::tempdir().unwrap();
    // Through the fleet: hostile proxy metadata and annotation.
    let fleet_out = tmp.path().join("fleet");
    let out = run(meshvm()
        .args(["vm", "files", "victim-1", "-o"])
        .arg(&fleet_out)
        .arg("-f")
        .arg(fixture("fleets/hostile/meshvm.yaml")));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let vars = source_with_sh(&fleet_out);
    assert_eq!(vars["HOSTILE_SUBST"], "$(touch pwned-subst)");
    assert_eq!(vars["HOSTILE_BACKTICK"], "`touch pwned-backtick`");
    assert_eq!(
        vars["HOSTILE_NEWLINE"],
        "first\nEVIL=1\ntouch pwned-newline\n"
    );
    assert_eq!(vars["HOSTILE_BREAKOUT"], "'; touch pwned-breakout; echo '");
    assert_eq!(vars["HOSTILE_BACKSLASH"], "\\");
    assert_eq!(vars["HOSTILE_ANNOTATION"], "x'$(touch pwned-annotation)'y");
    assert!(!vars.contains_key("EVIL"));
    let env_lines = read(&fleet_out.join("cluster.env"));
    let assignments = env_lines
        .lines()
        .filter(|l| {
            l.split_once('=')
                .is_some_and(|(k, _)| meshvm::spec::names::env_name(k).is_ok())
        })
        .count();
    // One physical line per key, except the one value with newlines (its EVIL line included).
    assert_eq!(assignments, vars.len() + 1);

    // Through istioctl's mode: hostile WorkloadGroup labels.
    let wg = tmp.path().join("wg.yaml");
    std::fs::write(
        &wg,
        "kind: WorkloadGroup\nmetadata: {name: w, namespace: n}\nspec:\n  metadata:\n    labels:\n      app: \"a'b $(touch pwned-label) `touch pwned-tick`\"\n      version: \"v1\\n$(touch pwned-version)\"\n",
    )
    .unwrap();
    std::fs::write(tmp.path().join("mesh.yaml"), "").unwrap();
    let istioctl_out = tmp.path().join("istioctl");
    let out = run(meshvm()
        .args(["workload", "entry", "configure", "-f"])
        .arg(&wg)
        .arg("--mesh-config")
        .arg(tmp.path().join("mesh.yaml"))
        .arg("-o")
        .arg(&istioctl_out));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let vars = source_with_sh(&istioctl_out);
    assert_eq!(
        vars["CANONICAL_SERVICE"],
        "a'b $(touch pwned-label) `touch pwned-tick`"
    );
    assert_eq!(vars["CANONICAL_REVISION"], "v1\n$(touch pwned-version)");
    for dir in [&fleet_out, &istioctl_out] {
        let pwned: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().starts_with("pwned"))
            .collect();
        assert!(pwned.is_empty(), "commands ran: {pwned:?}");
    }
}

#[test]
fn a_token_is_not_written_into_a_git_work_tree_unless_allowed() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    std::fs::create_dir_all(repo.join(".git")).unwrap();
    let token = tmp.path().join("token");
    std::fs::write(&token, token_for("vm-apps", "billing", LATER)).unwrap();
    let vm_files = |extra: &[&str]| {
        run(meshvm()
            .args(["vm", "files", "billing-1", "-f"])
            .arg(fixture("fleets/single-network/meshvm.yaml"))
            .arg("--token-file")
            .arg(&token)
            .arg("-o")
            .arg(repo.join("vm"))
            .args(extra))
    };
    let refused = vm_files(&[]);
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("inside the Git work tree")
            && refused.stderr.contains("--allow-in-repo"),
        "{}",
        refused.stderr
    );
    assert!(!repo.join("vm").exists());
    let allowed = vm_files(&["--allow-in-repo"]);
    assert_eq!(allowed.code, 0, "{}", allowed.stderr);
    assert_eq!(mode(&repo.join("vm/istio-token")), 0o600);

    // Without a token, the files hold no secret: a work tree is fine.
    let dir = fixture("istioctl/ipv4");
    let configure = run(meshvm()
        .args(["workload", "entry", "configure", "-f"])
        .arg(dir.join("workloadgroup.yaml"))
        .arg("--mesh-config")
        .arg(dir.join("meshconfig.yaml"))
        .arg("-o")
        .arg(repo.join("configured")));
    assert_eq!(configure.code, 0, "{}", configure.stderr);
    // … but a VM without the root certificate cannot verify istiod: said so.
    assert!(
        configure
            .stderr
            .contains("warning: WorkloadGroup foo: no root-cert.pem written"),
        "{}",
        configure.stderr
    );
}
