//! The join unit of a broker-joined group's user-data (`meshvm cloud-init --group G
//! --broker-ca`): cloud-init's own schema check, and its join script, as the VM runs it, against
//! a real `meshvm join-server` on 127.0.0.1 with TLS (the TokenRequest API is the stand-in of
//! tests/support/broker.rs; tests/mesh has the real one).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use crate::support::broker::{Broker, FakeKube, pki_for, place_files, written_files};
use crate::support::{meshvm, require_tool, run};

const BROKER_HOST: &str = "meshvm-join.meshvm-join.svc";

/// A fleet with one join-token group whose broker is at 127.0.0.1:`port`.
fn fleet(dir: &Path, port: u16) -> std::path::PathBuf {
    let path = dir.join("meshvm.yaml");
    std::fs::write(
        &path,
        format!(
            "apiVersion: meshvm.io/v1alpha1\nkind: Fleet\nmesh: {{meshID: mesh1, clusterID: cluster1, eastWestGateway: {{address: 127.0.0.1}}}}\nsidecar: {{version: 1.28.0, sha256: {}}}\ngitops: {{engines: []}}\njoinBroker: {{port: {port}}}\nworkloads:\n- name: lab\n  namespace: lab-apps\n  serviceAccount: lab-sa\n  autoRegister: true\n  join: {{method: join-token}}\n",
            "ab".repeat(32)
        ),
    )
    .unwrap();
    path
}

#[test]
fn the_group_user_data_holds_no_secret_and_its_join_script_gets_a_token_from_the_broker() {
    require_tool(
        "cloud-init",
        "apt-get install cloud-init (for `cloud-init schema -c`)",
    );
    require_tool("curl", "apt-get install curl");
    let dir = tempfile::tempdir().unwrap();
    let pki = pki_for(&[BROKER_HOST]);
    let kube = FakeKube::start(dir.path());
    // The broker first (its port goes into the fleet), with the fleet's policy once written.
    let policy = dir.path().join("policy.json");
    std::fs::write(&policy, "{\"groups\": []}").unwrap();
    let book = dir.path().join("join-tokens.json");
    let broker = Broker::start(
        dir.path(),
        &pki,
        &[
            "--kubeconfig".as_ref(),
            kube.kubeconfig.as_os_str(),
            "--policy".as_ref(),
            policy.as_os_str(),
            "--join-tokens".as_ref(),
            book.as_os_str(),
        ],
    );
    let fleet = fleet(dir.path(), broker.addr.port());
    let source = meshvm::spec::load_fleet(&fleet).unwrap();
    std::fs::write(
        &policy,
        serde_json::to_string(&meshvm::join::Policy::from_fleet(&source.fleet)).unwrap(),
    )
    .unwrap();
    let ca = dir.path().join("broker-ca.crt");
    std::fs::write(&ca, &pki.ca).unwrap();
    let root_cert = crate::support::fixture("certs/test-root-cert.pem");

    let user_data = dir.path().join("lab.user-data");
    let out = run(meshvm()
        .args(["cloud-init", "--group", "lab", "-f"])
        .arg(&fleet)
        .arg("--broker-ca")
        .arg(&ca)
        .arg("--root-cert")
        .arg(&root_cert)
        .arg("-o")
        .arg(&user_data));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let checked = run(Command::new("cloud-init")
        .args(["schema", "-c"])
        .arg(&user_data));
    assert_eq!(checked.code, 0, "{}{}", checked.stdout, checked.stderr);
    let document = std::fs::read_to_string(&user_data).unwrap();
    let files = written_files(&document);
    let paths: Vec<&str> = files.iter().map(|f| f.0.as_str()).collect();
    assert!(
        !paths.contains(&"/var/run/secrets/tokens/istio-token"),
        "no token in a group's user-data: {paths:?}"
    );
    let unit = &files
        .iter()
        .find(|f| f.0 == "/etc/systemd/system/meshvm-join.service")
        .expect("the join unit")
        .2;
    let unit = String::from_utf8_lossy(unit);
    assert!(unit.contains("Before=istio.service"), "{unit}");
    assert!(document.contains("systemctl enable meshvm-join.service"));

    // The VM's files below a root directory, as write_files places them.
    let root = dir.path().join("vm");
    place_files(&root, &files);
    let script = root.join("usr/local/sbin/meshvm-join");
    let token_file = root.join("var/run/secrets/tokens/istio-token");
    let join = |what: &str| {
        let out = run(Command::new(&script).env("MESHVM_JOIN_ROOT", &root));
        assert!(
            !out.stdout.contains("fake-token") && !out.stderr.contains("fake-token"),
            "{what}: the script prints the token"
        );
        out
    };

    // No join token placed yet: refused by the script itself, nothing asked.
    let out = join("no join token");
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("no join token"), "{}", out.stderr);
    assert!(!token_file.exists());

    // The operator places a one-time join token: the VM gets its istio-token, 0600.
    let created = run(meshvm()
        .args([
            "join-token",
            "create",
            "--group",
            "lab",
            "--uses",
            "1",
            "--book",
        ])
        .arg(&book)
        .arg("-f")
        .arg(&fleet));
    assert_eq!(created.code, 0, "{}", created.stderr);
    let secret = root.join("etc/meshvm-join/join-token");
    std::fs::write(&secret, created.stdout.trim()).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = join("first join");
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(
        std::fs::read_to_string(&token_file).unwrap(),
        "fake-token.lab-apps.lab-sa"
    );
    assert_eq!(
        std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(broker.decisions(1)[0]["decision"], "issued");

    // The used-up join token gets nothing more: the refusal's reason reaches the VM's log.
    std::fs::remove_file(&token_file).unwrap();
    let out = join("used-up join token");
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("bad-token"), "{}", out.stderr);
    assert!(!token_file.exists());
    assert_eq!(kube.requests.lock().unwrap().len(), 1);
}
