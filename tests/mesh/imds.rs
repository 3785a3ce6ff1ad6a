//! An AWS VM proves who it is from its own instance metadata service: AWS's
//! amazon-ec2-metadata-mock (built from its Go module, tests/upstream) serves a test-signed
//! instance identity document and signature on 169.254.169.254 inside the harness's VM network
//! namespace, with IMDSv2; the join script of the group's user-data (`meshvm cloud-init --group
//! G --broker-ca`) runs in that namespace, proves the VM to `meshvm join-server` on the
//! east-west address (trusting the test signing certificate, with the harness's kubeconfig),
//! and gets a real TokenRequest token that the real TokenReview authenticates as the group's
//! ServiceAccount. A forged document served the same way is refused, with the audit reason.
//! No VM boot: the booted rejoin test already proves the unit and istio; this is the proof's
//! path through a metadata endpoint.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::cluster::{checked, meshvm};
use crate::join::{var, vm_slot};
use crate::support::broker::{Broker, pki_for, place_files, written_files};

const NS: &str = "meshvm-imds";
const SA: &str = "asg-vm";
const BROKER_HOST: &str = "meshvm-join.meshvm-join.svc";
const IMDS: &str = "169.254.169.254";

/// amazon-ec2-metadata-mock on 169.254.169.254:80 in the VM's namespace; stopped when dropped.
struct Aemm(Child);

impl Aemm {
    fn start(dir: &Path, netns: &str, document: &Value, signature: &str) -> Aemm {
        let config = dir.join("aemm.json");
        std::fs::write(
            &config,
            json!({"dynamic": {"values": {
                "instance-identity-document": document,
                "instance-identity-signature": signature,
            }}})
            .to_string(),
        )
        .unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", netns])
            .arg(var("MESH_EC2_METADATA_MOCK"))
            .args([
                "--hostname",
                IMDS,
                "--port",
                "80",
                "--imdsv2",
                "--config-file",
            ])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("amazon-ec2-metadata-mock (cargo xtask mesh build)");
        let aemm = Aemm(child);
        for _ in 0..100 {
            if in_netns(netns, &["curl", "-fsS", "-o", "/dev/null", "-X", "PUT"])
                .args([
                    "-H",
                    "X-aws-ec2-metadata-token-ttl-seconds: 60",
                    &format!("http://{IMDS}/latest/api/token"),
                ])
                .status()
                .unwrap()
                .success()
            {
                return aemm;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("amazon-ec2-metadata-mock did not answer on {IMDS} in {netns}");
    }

    /// The document exactly as it serves it (IMDSv2).
    fn document(netns: &str) -> Vec<u8> {
        let token = in_netns(netns, &["curl", "-fsS", "-X", "PUT"])
            .args([
                "-H",
                "X-aws-ec2-metadata-token-ttl-seconds: 60",
                &format!("http://{IMDS}/latest/api/token"),
            ])
            .output()
            .unwrap();
        assert!(token.status.success());
        let token = String::from_utf8(token.stdout).unwrap();
        let doc = in_netns(netns, &["curl", "-fsS", "-H"])
            .arg(format!("X-aws-ec2-metadata-token: {token}"))
            .arg(format!(
                "http://{IMDS}/latest/dynamic/instance-identity/document"
            ))
            .output()
            .unwrap();
        assert!(doc.status.success());
        doc.stdout
    }
}

impl Drop for Aemm {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn in_netns(netns: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", netns]).args(args);
    cmd
}

/// 169.254.169.254 on the namespace's loopback while the test runs.
struct LinkLocal(String);

impl LinkLocal {
    fn add(netns: &str) -> LinkLocal {
        let _ = in_netns(
            netns,
            &["ip", "addr", "del", &format!("{IMDS}/32"), "dev", "lo"],
        )
        .output();
        let out = in_netns(
            netns,
            &["ip", "addr", "add", &format!("{IMDS}/32"), "dev", "lo"],
        )
        .output()
        .unwrap();
        assert!(out.status.success(), "{out:?}");
        LinkLocal(netns.to_owned())
    }
}

impl Drop for LinkLocal {
    fn drop(&mut self) {
        let _ = in_netns(
            &self.0,
            &["ip", "addr", "del", &format!("{IMDS}/32"), "dev", "lo"],
        )
        .output();
    }
}

fn identity_document(private_ip: &str) -> Value {
    json!({
        "accountId": "111122223333",
        "imageId": "ami-0123456789abcdef0",
        "availabilityZone": "eu-west-1a",
        "version": "2017-09-30",
        "privateIp": private_ip,
        "instanceId": "i-0123456789abcdef0",
        "pendingTime": "2026-11-30T08:00:00Z",
        "architecture": "x86_64",
        "instanceType": "t3.micro",
        "region": "eu-west-1",
    })
}

#[test]
fn an_aws_vm_proves_itself_through_the_metadata_emulator_and_gets_a_real_token() {
    let _slot = vm_slot();
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path();
    let netns = var("MESH_VM_NETNS");
    let eastwest = var("MESH_EASTWEST_ADDRESS");
    let port = std::net::TcpListener::bind((eastwest.as_str(), 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();

    // The group's ServiceAccount in the cluster, and the fleet that joins it by `aws`.
    crate::cluster::ensure_namespaces([NS]);
    let sa = dir.join("sa.yaml");
    crate::cluster::write_stream(
        &sa,
        &[
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": SA, "namespace": NS}}),
        ],
    );
    assert!(crate::cluster::apply(&sa, false).status.success());
    let fleet = dir.join("meshvm.yaml");
    std::fs::write(
        &fleet,
        format!(
            "apiVersion: meshvm.io/v1alpha1\nkind: Fleet\nmesh: {{meshID: mesh1, clusterID: cluster1, eastWestGateway: {{address: {eastwest}}}}}\nsidecar: {{version: 1.28.0, sha256: {}}}\ngitops: {{engines: []}}\njoinBroker: {{port: {port}}}\nworkloads:\n- name: asg\n  namespace: {NS}\n  serviceAccount: {SA}\n  autoRegister: true\n  join: {{method: aws, accounts: [\"111122223333\"], regions: [eu-west-1]}}\n",
            "ab".repeat(32)
        ),
    )
    .unwrap();

    // The broker on the east-west address, trusting the test signing certificate.
    let pki = pki_for(&[BROKER_HOST]);
    let certs = dir.join("aws-certs.json");
    std::fs::write(
        &certs,
        json!({"eu-west-1": testkit::join::cert("aws")}).to_string(),
    )
    .unwrap();
    let kubeconfig = std::env::var_os("MESH_KUBECONFIG").expect("MESH_KUBECONFIG: run the harness");
    let broker = Broker::start_on(
        dir,
        &pki,
        &format!("{eastwest}:{port}"),
        &[
            "--kubeconfig".as_ref(),
            kubeconfig.as_os_str(),
            "--fleet".as_ref(),
            fleet.as_os_str(),
            "--aws-certs".as_ref(),
            certs.as_os_str(),
            "--token-seconds".as_ref(),
            "600".as_ref(),
        ],
    );

    // The group's one user-data, its files placed below a root as write_files would.
    let ca = dir.join("broker-ca.crt");
    std::fs::write(&ca, &pki.ca).unwrap();
    let user_data = dir.join("user-data");
    checked(
        meshvm()
            .args(["cloud-init", "--group", "asg", "-f"])
            .arg(&fleet)
            .arg("--broker-ca")
            .arg(&ca)
            .arg("--root-cert")
            .arg(testkit::fixture("certs/test-root-cert.pem"))
            .arg("-o")
            .arg(&user_data),
    );
    let root = dir.join("vm");
    place_files(
        &root,
        &written_files(&std::fs::read_to_string(&user_data).unwrap()),
    );
    let script = root.join("usr/local/sbin/meshvm-join");
    let token_file = root.join("var/run/secrets/tokens/istio-token");
    let join = || {
        let out = in_netns(&netns, &["env"])
            .arg(format!("MESHVM_JOIN_ROOT={}", root.display()))
            .arg(&script)
            .output()
            .unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        assert!(
            !stdout.contains("eyJ") && !stderr.contains("eyJ"),
            "the script prints a token or a document"
        );
        (out.status.success(), stdout, stderr)
    };

    let _link = LinkLocal::add(&netns);
    // The emulator's own serialization is what gets signed, as AWS signs the bytes it serves:
    // a first start to read them, then the signature of those bytes in its configuration.
    let document = identity_document("10.0.0.7");
    let served = {
        let _aemm = Aemm::start(dir, &netns, &document, "unsigned");
        Aemm::document(&netns)
    };
    let signature = testkit::join::aws_signature(std::str::from_utf8(&served).unwrap());
    {
        let _aemm = Aemm::start(dir, &netns, &document, &signature);
        assert_eq!(
            Aemm::document(&netns),
            served,
            "the emulator serves stable bytes"
        );
        let (ok, stdout, stderr) = join();
        assert!(ok, "{stdout}{stderr}");
        assert!(stdout.contains("got an istio-token"), "{stdout}");
    }
    let token = std::fs::read_to_string(&token_file).unwrap();
    let status = &crate::broker::review(dir, &token)["status"];
    assert_eq!(
        status["authenticated"], true,
        "TokenReview: {}",
        status["error"]
    );
    assert_eq!(
        status["user"]["username"],
        format!("system:serviceaccount:{NS}:{SA}")
    );
    let issued = broker.decisions(1);
    assert_eq!(issued[0]["decision"], "issued", "{issued:?}");

    // A forged document (another account) with the real signature: refused, no token.
    std::fs::remove_file(&token_file).unwrap();
    let mut forged = document.clone();
    forged["accountId"] = "444455556666".into();
    {
        let _aemm = Aemm::start(dir, &netns, &forged, &signature);
        let (ok, _, stderr) = join();
        assert!(!ok);
        assert!(stderr.contains("bad-proof"), "{stderr}");
    }
    assert!(!token_file.exists());
    let decisions = broker.decisions(2);
    assert_eq!(decisions[1]["decision"], "refused", "{decisions:?}");
    assert_eq!(decisions[1]["code"], "bad-proof", "{decisions:?}");
    assert!(
        decisions[1]["reason"]
            .as_str()
            .unwrap()
            .contains("does not verify"),
        "{decisions:?}"
    );
}
