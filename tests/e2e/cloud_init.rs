//! `meshvm cloud-init`: the user-data document, checked by cloud-init itself and booted in a
//! systemd-nspawn Debian root with real systemd and cloud-init.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::json;

use crate::nspawn::{self, Vm};
use crate::support::{Run, fixture, meshvm, require_tool, run, workspace};

const VM: &str = "tester-1";
const SUBJECT: &str = "system:serviceaccount:vm-apps:tester";
const HOSTS_LINE: &str = "203.0.113.10 istiod.istio-system.svc";

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// An unsigned test token (not a secret) with these claims over the good defaults.
fn token_with(overrides: serde_json::Value) -> String {
    let mut claims =
        json!({"aud": ["istio-ca"], "sub": SUBJECT, "iat": now(), "exp": now() + 3600});
    for (k, v) in overrides.as_object().unwrap() {
        claims[k] = v.clone();
    }
    meshvm::cloudinit::token::unsigned_test_token(&claims)
}

fn good_token() -> String {
    token_with(json!({}))
}

fn seed_fleet() -> PathBuf {
    fixture("fleets/seed/meshvm.yaml")
}

fn root_cert() -> PathBuf {
    fixture("certs/test-root-cert.pem")
}

/// `meshvm cloud-init tester-1 -f FLEET --token-file DIR/token --root-cert CA …`.
fn cloud_init(dir: &Path, fleet: &Path, token: &str) -> Command {
    cloud_init_for(VM, dir, fleet, token)
}

fn cloud_init_for(vm: &str, dir: &Path, fleet: &Path, token: &str) -> Command {
    let mut cmd = cloud_init_without_cert(vm, dir, fleet, token);
    cmd.arg("--root-cert").arg(root_cert());
    cmd
}

fn cloud_init_without_cert(vm: &str, dir: &Path, fleet: &Path, token: &str) -> Command {
    let token_file = dir.join("token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let mut cmd = meshvm();
    cmd.args(["cloud-init", vm, "-f"])
        .arg(fleet)
        .arg("--token-file")
        .arg(token_file);
    cmd
}

fn schema_file() -> PathBuf {
    std::env::var_os("MESHVM_SCHEMAS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("../shared/schemas"))
        .join("cloud-init/schema-cloud-config-v1.json")
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn gunzip(bytes: &[u8]) -> String {
    let mut out = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(bytes), &mut out).unwrap();
    out
}

fn assert_ok(out: &Run) {
    assert_eq!(out.code, 0, "stderr:\n{}", out.stderr);
}

#[test]
fn writes_user_data_that_cloud_init_accepts() {
    require_tool(
        "cloud-init",
        "apt-get install cloud-init (for `cloud-init schema -c`)",
    );
    let dir = tempfile::tempdir().unwrap();
    let token = good_token();
    let output = dir.path().join("user-data");
    // An existing, readable file is replaced by a private one.
    std::fs::write(&output, "old").unwrap();
    std::fs::set_permissions(&output, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = run(cloud_init(dir.path(), &seed_fleet(), &token)
        .args(["--provider", "aws", "-o"])
        .arg(&output)
        .arg("--schema")
        .arg(schema_file()));
    assert_ok(&out);
    assert_eq!(mode(&output), 0o600);
    let document = std::fs::read_to_string(&output).unwrap();
    assert!(document.starts_with("#cloud-config\n"));
    assert!(
        out.stderr.contains(&format!(
            "user-data of VM tester-1: {} bytes, aws limit 16384",
            document.len()
        )),
        "{}",
        out.stderr
    );
    assert!(out.stdout.is_empty());
    assert!(!out.stderr.contains(&token), "the token leaks to stderr");

    let checked = run(Command::new("cloud-init")
        .args(["schema", "-c"])
        .arg(&output));
    assert_eq!(checked.code, 0, "{}{}", checked.stdout, checked.stderr);
    assert!(
        checked.stdout.contains("Valid cloud-config"),
        "{}",
        checked.stdout
    );

    // Without -o the same document goes to stdout.
    let out = run(&mut cloud_init(dir.path(), &seed_fleet(), &token));
    assert_ok(&out);
    assert_eq!(out.stdout, document);
}

#[test]
fn gzip_user_data_is_the_same_document_compressed() {
    let dir = tempfile::tempdir().unwrap();
    let token = good_token();
    let plain = dir.path().join("plain");
    let packed = dir.path().join("packed");
    assert_ok(&run(cloud_init(dir.path(), &seed_fleet(), &token)
        .arg("-o")
        .arg(&plain)));
    let out = run(cloud_init(dir.path(), &seed_fleet(), &token)
        .args(["--gzip", "-o"])
        .arg(&packed));
    assert_ok(&out);
    assert!(out.stderr.contains(" bytes (gzip)"), "{}", out.stderr);
    let bytes = std::fs::read(&packed).unwrap();
    assert_eq!(&bytes[..2], &[0x1f, 0x8b]);
    assert_eq!(gunzip(&bytes), std::fs::read_to_string(&plain).unwrap());
    assert_eq!(mode(&packed), 0o600);
}

#[test]
fn token_from_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = meshvm()
        .args(["cloud-init", VM, "--token-stdin", "-f"])
        .arg(seed_fleet())
        .arg("--root-cert")
        .arg(root_cert())
        .arg("-o")
        .arg(dir.path().join("ud"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let token = good_token();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), token.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let document = std::fs::read_to_string(dir.path().join("ud")).unwrap();
    assert!(document.contains("write_files:"));
}

#[test]
fn refuses_bad_tokens_without_showing_them() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            token_with(json!({"aud": ["https://kubernetes.default.svc"]})),
            "audience is `https://kubernetes.default.svc`, not `istio-ca`",
        ),
        (
            token_with(json!({"sub": "system:serviceaccount:vm-apps:default"})),
            "not for the VM's ServiceAccount `system:serviceaccount:vm-apps:tester`",
        ),
        (
            token_with(json!({"exp": now() - 60})),
            "the token expired at ",
        ),
        (
            token_with(json!({"exp": now() + 300})),
            "sooner than the 15m a VM needs to boot and use it",
        ),
        ("not-a-token".to_owned(), "the token is not a JWT"),
    ];
    for (token, expected) in cases {
        let output = dir.path().join("ud");
        let out = run(cloud_init(dir.path(), &seed_fleet(), &token)
            .arg("-o")
            .arg(&output));
        assert_eq!(out.code, 1, "{expected}: {}", out.stderr);
        assert!(out.stderr.contains(expected), "{expected}:\n{}", out.stderr);
        assert!(
            out.stderr
                .contains("kubectl create token tester -n vm-apps --audience istio-ca"),
            "{}",
            out.stderr
        );
        assert!(
            !out.stderr.contains(&token),
            "the token leaks:\n{}",
            out.stderr
        );
        assert!(out.stdout.is_empty());
        assert!(!output.exists(), "nothing written");
    }
    // --min-token-validity lowers the bar.
    let short = token_with(json!({"exp": now() + 300}));
    assert_ok(&run(
        cloud_init(dir.path(), &seed_fleet(), &short).args(["--min-token-validity", "2m"])
    ));
}

#[test]
fn root_certificate_checks() {
    let dir = tempfile::tempdir().unwrap();
    let token = good_token();
    let out = run(
        cloud_init_without_cert(VM, dir.path(), &seed_fleet(), &token)
            .arg("--root-cert")
            .arg(fixture("certs/test-leaf-cert.pem")),
    );
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("is not a CA certificate"),
        "{}",
        out.stderr
    );

    let out = run(&mut cloud_init_without_cert(
        VM,
        dir.path(),
        &seed_fleet(),
        &token,
    ));
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("the VM needs the mesh's root certificate"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("--root-cert"), "{}", out.stderr);
}

#[test]
fn refuses_to_write_into_a_git_work_tree() {
    require_tool("git", "apt-get install git");
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(repo.join("vms")).unwrap();
    assert!(
        Command::new("git")
            .arg("init")
            .arg("-q")
            .arg(&repo)
            .status()
            .unwrap()
            .success()
    );
    let output = repo.join("vms/user-data");
    let out = run(cloud_init(dir.path(), &seed_fleet(), &good_token())
        .arg("-o")
        .arg(&output));
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("inside the Git work tree"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("--allow-in-repo"), "{}", out.stderr);
    assert!(!output.exists());
    let out = run(cloud_init(dir.path(), &seed_fleet(), &good_token())
        .args(["--allow-in-repo", "-o"])
        .arg(&output));
    assert_ok(&out);
    assert_eq!(mode(&output), 0o600);
}

#[test]
fn size_limits_per_provider_suggest_gzip() {
    let dir = tempfile::tempdir().unwrap();
    let templates = dir.path().join("templates");
    std::fs::create_dir(&templates).unwrap();
    // A document over AWS's 16 KiB: the default one with 20 KB of comments.
    let padding =
        "# padding for the size test ..........................................\n".repeat(300);
    std::fs::write(
        templates.join("user-data.yaml.hbs"),
        format!("{}{padding}", meshvm::cloudinit::USER_DATA_TEMPLATE),
    )
    .unwrap();
    let token = good_token();
    let with_templates = |extra: &[&str]| {
        let mut cmd = cloud_init(dir.path(), &seed_fleet(), &token);
        cmd.arg("--template").arg(&templates).args(extra);
        run(cmd.arg("-o").arg(dir.path().join("ud")))
    };
    let out = with_templates(&["--provider", "aws"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("over aws's limit of 16384 bytes"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("add --gzip"), "{}", out.stderr);
    assert_ok(&with_templates(&["--provider", "aws", "--gzip"]));
    assert_ok(&with_templates(&["--provider", "azure"]));
    assert_ok(&with_templates(&[]));
}

#[test]
fn template_directory_overrides_and_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let templates = dir.path().join("templates");
    std::fs::create_dir(&templates).unwrap();
    let token = good_token();
    let render = |templates: &Path| {
        run(cloud_init(dir.path(), &seed_fleet(), &token)
            .arg("--template")
            .arg(templates))
    };
    std::fs::write(
        templates.join("user-data.yaml.hbs"),
        meshvm::cloudinit::USER_DATA_TEMPLATE
            .replace("runcmd:", "hostname: {{yaml vm.name}}\nruncmd:"),
    )
    .unwrap();
    let out = render(&templates);
    assert_ok(&out);
    assert!(
        out.stdout.contains("\nhostname: 'tester-1'\n"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("apt-get install"),
        "the embedded join.sh.hbs stays"
    );

    std::fs::write(templates.join("join.sh.hbs"), "echo {{vm.name}}\n").unwrap();
    let out = render(&templates);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("template join.sh.hbs:1:6: `{{vm.name}}` is not quoted"),
        "{}",
        out.stderr
    );

    std::fs::remove_file(templates.join("join.sh.hbs")).unwrap();
    std::fs::write(templates.join("user-data.hbs"), "").unwrap();
    let out = render(&templates);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("\"user-data.hbs\" is not a meshvm template"),
        "{}",
        out.stderr
    );
}

#[test]
fn token_source_is_required_and_single() {
    let out = run(meshvm().args(["cloud-init", VM, "-f"]).arg(seed_fleet()));
    assert_eq!(out.code, 2, "{}", out.stderr);
    let out = run(meshvm()
        .args(["cloud-init", VM, "--token-stdin", "--token-file", "x", "-f"])
        .arg(seed_fleet()));
    assert_eq!(out.code, 2, "{}", out.stderr);
}

/// The seed fleet, with the sidecar downloaded from `url` and pinned to `sha256` if given.
fn fleet_with_package(dir: &Path, url: &str, sha256: Option<&str>) -> PathBuf {
    let seed = std::fs::read_to_string(seed_fleet()).unwrap();
    let zeros = format!("sha256: \"{}\"", "0".repeat(64));
    assert!(
        seed.contains(&zeros),
        "the seed fleet pins a placeholder sha256"
    );
    let pin = sha256.map_or(String::new(), |s| format!("sha256: \"{s}\"\n  "));
    let fleet = seed
        .replace("arch: amd64", &format!("arch: {}", nspawn::host_arch()))
        .replace(&zeros, &format!("{pin}url: {url}"));
    let path = dir.join("meshvm.yaml");
    std::fs::write(&path, fleet).unwrap();
    path
}

fn user_data(dir: &Path, fleet: &Path, token: &str, extra: &[&str]) -> Vec<u8> {
    let output = dir.join("user-data");
    let out = run(cloud_init(dir, fleet, token)
        .args(extra)
        .arg("-o")
        .arg(&output));
    assert_ok(&out);
    std::fs::read(output).unwrap()
}

fn sha256(bytes: impl AsRef<[u8]>) -> String {
    nspawn::sha256_hex(bytes.as_ref())
}

fn count_lines(text: &str, line: &str) -> usize {
    text.lines().filter(|l| *l == line).count()
}

/// The real thing: cloud-init and systemd boot a Debian root with the user-data, which
/// installs the (stand-in) sidecar package and starts `istio`; then the VM boots again under
/// a new instance-id (cloud-init runs everything again) on an image that manages /etc/hosts,
/// and once more as a plain reboot.
#[test]
fn a_debian_vm_boots_into_the_mesh() {
    let dir = tempfile::tempdir().unwrap();
    let deb = nspawn::stand_in_sidecar_deb("1.28.0", "iproute2");
    let base = nspawn::serve(vec![("istio-sidecar.deb", deb.clone())]);
    let url = format!("{base}/istio-sidecar.deb");
    let fleet = fleet_with_package(dir.path(), &url, Some(&sha256(&deb)));
    let token = good_token();
    let plain = user_data(dir.path(), &fleet, &token, &[]);
    let packed = user_data(dir.path(), &fleet, &token, &["--gzip"]);

    let source = meshvm::spec::load_fleet(&fleet).unwrap();
    let root_pem = std::fs::read_to_string(root_cert()).unwrap();
    let files = meshvm::vmfiles::vm_files(&source.fleet, VM).unwrap();
    let digest = |name: &str| sha256(&files.get(name).unwrap().bytes);

    let vm = Vm::persistent();
    vm.seed(&plain, "iid-1");
    let report = vm.boot();
    report.expect("cloud-init", "done");
    report.expect("package", "install ok installed");
    report.expect("user", "istio-proxy");
    report.expect("istio", "active enabled");
    report.expect("etc-istio", "symlink /var/lib/istio");
    report.expect("sourced", "tester.vm-apps");
    report.expect(
        "file /etc/certs/root-cert.pem",
        &format!("istio-proxy 644 {}", sha256(&root_pem)),
    );
    report.expect(
        "file /var/run/secrets/tokens/istio-token",
        &format!("istio-proxy 600 {}", sha256(&token)),
    );
    report.expect(
        "file /var/lib/istio/envoy/cluster.env",
        &format!("istio-proxy 644 {}", digest("cluster.env")),
    );
    report.expect(
        "file /etc/istio/config/mesh",
        &format!("istio-proxy 644 {}", digest("mesh.yaml")),
    );
    assert_eq!(
        count_lines(&report.file("hosts"), HOSTS_LINE),
        1,
        "{}",
        report.logs
    );

    // A new instance-id: cloud-init runs the whole document again, now gzip-compressed, on an
    // image that rewrites /etc/hosts from its template at every boot.
    vm.configure("95-manage-hosts.cfg", "manage_etc_hosts: true\n");
    vm.seed(&packed, "iid-2");
    let report = vm.boot();
    report.expect("cloud-init", "done");
    report.expect("istio", "active enabled");
    report.expect("etc-istio", "symlink /var/lib/istio");
    report.expect(
        "file /var/run/secrets/tokens/istio-token",
        &format!("istio-proxy 600 {}", sha256(&token)),
    );
    let hosts = report.file("hosts");
    assert_eq!(
        count_lines(&hosts, HOSTS_LINE),
        1,
        "{hosts}\n{}",
        report.logs
    );
    let template = report.file("hosts.debian.tmpl");
    assert_eq!(count_lines(&template, HOSTS_LINE), 1, "{template}");

    // A plain reboot: /etc/hosts is rendered from the template again and keeps the entry;
    // the token (on tmpfs) is gone, which the joined sidecar no longer needs.
    let report = vm.boot();
    report.expect("istio", "active enabled");
    report.expect("file /var/run/secrets/tokens/istio-token", "missing");
    let hosts = report.file("hosts");
    assert_eq!(
        count_lines(&hosts, HOSTS_LINE),
        1,
        "{hosts}\n{}",
        report.logs
    );
}

/// A package whose bytes do not match the fleet's sha256 stops the join step before anything
/// is installed, and cloud-init reports the failure.
#[test]
fn a_tampered_package_is_not_installed() {
    let dir = tempfile::tempdir().unwrap();
    let deb = nspawn::stand_in_sidecar_deb("1.28.0", "iproute2");
    let mut tampered = deb.clone();
    let middle = tampered.len() / 2;
    tampered[middle] ^= 0xff;
    let base = nspawn::serve(vec![("istio-sidecar.deb", tampered)]);
    let url = format!("{base}/istio-sidecar.deb");
    let fleet = fleet_with_package(dir.path(), &url, Some(&sha256(&deb)));
    let plain = user_data(dir.path(), &fleet, &good_token(), &[]);

    let vm = Vm::ephemeral();
    vm.seed(&plain, "iid-1");
    let report = vm.boot();
    report.expect("cloud-init", "error");
    report.expect("package", "absent");
    report.expect("user", "absent");
    report.expect("istio", "inactive absent");
    report.expect("etc-istio", "missing");
    let output = report.file("cloud-init-output.log");
    assert!(output.contains("meshvm: sha256 mismatch for "), "{output}");
    assert!(output.contains("istio-sidecar NOT installed"), "{output}");
    assert_eq!(count_lines(&report.file("hosts"), HOSTS_LINE), 0);
}

/// A fleet that pins no checksum: the VM checks the package against the `.sha256` published
/// beside it, and installs nothing when that file holds no checksum.
#[test]
fn an_unpinned_package_is_checked_against_its_published_sha256() {
    let dir = tempfile::tempdir().unwrap();
    // Like the real package, it needs iptables, which the image lacks: apt refreshes its lists.
    let deb = nspawn::stand_in_sidecar_deb("1.28.0", "iproute2, iptables");
    let published = format!("{}  istio-sidecar.deb\n", sha256(&deb));
    let base = nspawn::serve(vec![
        ("good/istio-sidecar.deb", deb.clone()),
        ("good/istio-sidecar.deb.sha256", published.into_bytes()),
        ("bad/istio-sidecar.deb", deb),
        (
            "bad/istio-sidecar.deb.sha256",
            b"<html>oops</html>".to_vec(),
        ),
    ]);
    let token = good_token();
    for (case, joins) in [("good", true), ("bad", false)] {
        let case_dir = dir.path().join(case);
        std::fs::create_dir(&case_dir).unwrap();
        let url = format!("{base}/{case}/istio-sidecar.deb");
        let fleet = fleet_with_package(&case_dir, &url, None);
        let output = case_dir.join("user-data");
        let out = run(cloud_init(&case_dir, &fleet, &token).arg("-o").arg(&output));
        assert_ok(&out);
        assert!(
            out.stderr
                .contains("warning: VM tester-1: the fleet pins no sidecar.sha256"),
            "{}",
            out.stderr
        );
        let vm = Vm::ephemeral();
        vm.seed(&std::fs::read(&output).unwrap(), "iid-1");
        let report = vm.boot();
        if joins {
            report.expect("cloud-init", "done");
            report.expect("istio", "active enabled");
            let log = report.file("cloud-init-output.log");
            assert!(log.contains("refreshing the package lists"), "{log}");
        } else {
            report.expect("cloud-init", "error");
            report.expect("package", "absent");
            let log = report.file("cloud-init-output.log");
            assert!(log.contains("meshvm: no sha256 in "), "{log}");
        }
    }
}

/// The hostile fixture fleet (values that try to break out of cluster.env, which the sidecar's
/// start script sources as root) on a real VM: it joins, and nothing of it runs.
#[test]
fn hostile_values_stay_inert_on_the_vm() {
    let dir = tempfile::tempdir().unwrap();
    let deb = nspawn::stand_in_sidecar_deb("1.28.0", "iproute2");
    let base = nspawn::serve(vec![("istio-sidecar.deb", deb.clone())]);
    let hostile = std::fs::read_to_string(fixture("fleets/hostile/meshvm.yaml")).unwrap();
    let sidecar = "sidecar:\n  version: 1.28.0\n";
    assert!(hostile.contains(sidecar));
    let fleet = dir.path().join("meshvm.yaml");
    std::fs::write(
        &fleet,
        hostile.replace(
            sidecar,
            &format!(
                "{sidecar}  arch: {}\n  sha256: \"{}\"\n  url: {base}/istio-sidecar.deb\n",
                nspawn::host_arch(),
                sha256(&deb)
            ),
        ),
    )
    .unwrap();
    let token = token_with(json!({"sub": "system:serviceaccount:sec:default"}));
    let output = dir.path().join("user-data");
    let out = run(cloud_init_for("victim-1", dir.path(), &fleet, &token)
        .arg("-o")
        .arg(&output));
    assert_ok(&out);

    let vm = Vm::ephemeral();
    vm.seed(&std::fs::read(&output).unwrap(), "iid-1");
    let report = vm.boot();
    report.expect("cloud-init", "done");
    report.expect("istio", "active enabled");
    report.expect("sourced", "victim.sec");
    report.expect("pwned", "0");
}
