//! `meshvm cloud-init`: the user-data document, checked by cloud-init itself and booted in a
//! systemd-nspawn Debian root with real systemd and cloud-init.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::nspawn::{self, Vm};
use serde_json::json;

use crate::support::user_data::*;
use crate::support::{fixture, require_tool, run};

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
