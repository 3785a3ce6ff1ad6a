//! An AWS VM proves who it is from its own instance metadata service: AWS's
//! amazon-ec2-metadata-mock (built from its Go module, tests/upstream) serves a test-signed
//! instance identity document and signature on 169.254.169.254 inside the harness's VM network
//! namespace, with IMDSv2; the join script of the group's user-data (`meshvm cloud-init --group
//! G --broker-ca`) runs in that namespace, proves the VM to `meshvm join-server` on the
//! east-west address (trusting the test signing certificate, with the harness's kubeconfig),
//! and gets a real TokenRequest token that the real TokenReview authenticates as the group's
//! ServiceAccount. A forged document served the same way is refused, with the audit reason.
//! Azure and GCE VMs do the same through the metadata stand-in of tests/support/metadata.rs
//! (no upstream emulator of either service can be built here): Azure's attested document made
//! for the script's nonce, GCE's identity token for the broker's URL; a VM of a subscription or
//! project the group does not allow is refused `forbidden`, with no token written.
//! No VM boot: the booted rejoin test already proves the unit and istio; this is the proof's
//! path through a metadata endpoint.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::cluster::{checked, meshvm};
use crate::join::{var, vm_slot};
use crate::support::broker::{Broker, pki_for, place_files, written_files};
use crate::support::metadata::{Identity, MetadataServer};

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

/// A VM of a fleet whose groups join by these methods, facing a `meshvm join-server` on the
/// east-west address with the harness's kubeconfig.
struct Fleet {
    dir: tempfile::TempDir,
    netns: String,
    fleet: PathBuf,
    ca: PathBuf,
    broker: Broker,
}

impl Fleet {
    /// `groups`: (name, its `join:` as YAML flow); `trust`: the broker's trust arguments, given
    /// the scratch directory and the broker's URL (the GCE tokens' audience).
    fn start(groups: &[(&str, &str)], trust: impl FnOnce(&Path, &str) -> Vec<OsString>) -> Fleet {
        let scratch = tempfile::tempdir().unwrap();
        let dir = scratch.path();
        let netns = var("MESH_VM_NETNS");
        let eastwest = var("MESH_EASTWEST_ADDRESS");
        let port = crate::support::free_port_on(&eastwest);

        // The groups' ServiceAccount in the cluster, and the fleet that joins them.
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
        let workloads: String = groups
            .iter()
            .map(|(name, join)| {
                format!(
                    "- name: {name}\n  namespace: {NS}\n  serviceAccount: {SA}\n  autoRegister: true\n  join: {join}\n"
                )
            })
            .collect();
        std::fs::write(
            &fleet,
            format!(
                "apiVersion: meshvm.io/v1alpha1\nkind: Fleet\nmesh: {{meshID: mesh1, clusterID: cluster1, eastWestGateway: {{address: {eastwest}}}}}\nsidecar: {{version: 1.28.0, sha256: {}}}\ngitops: {{engines: []}}\njoinBroker: {{port: {port}}}\nworkloads:\n{workloads}",
                "ab".repeat(32)
            ),
        )
        .unwrap();

        let pki = pki_for(&[BROKER_HOST]);
        let kubeconfig =
            std::env::var_os("MESH_KUBECONFIG").expect("MESH_KUBECONFIG: run the harness");
        let mut args: Vec<OsString> = vec![
            "--kubeconfig".into(),
            kubeconfig,
            "--fleet".into(),
            fleet.clone().into(),
            "--token-seconds".into(),
            "600".into(),
        ];
        args.extend(trust(dir, &format!("https://{BROKER_HOST}:{port}/v1/join")));
        let args: Vec<&OsStr> = args.iter().map(OsString::as_os_str).collect();
        let broker = Broker::start_on(dir, &pki, &format!("{eastwest}:{port}"), &args);
        let ca = dir.join("broker-ca.crt");
        std::fs::write(&ca, &pki.ca).unwrap();
        Fleet {
            dir: scratch,
            netns,
            fleet,
            ca,
            broker,
        }
    }

    fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The group's one user-data (`meshvm cloud-init --group`), its files placed below a root
    /// as write_files would; the root.
    fn vm(&self, group: &str) -> PathBuf {
        let user_data = self.dir().join(format!("{group}.user-data"));
        checked(
            meshvm()
                .args(["cloud-init", "--group", group, "-f"])
                .arg(&self.fleet)
                .arg("--broker-ca")
                .arg(&self.ca)
                .arg("--root-cert")
                .arg(testkit::fixture("certs/test-root-cert.pem"))
                .arg("-o")
                .arg(&user_data),
        );
        let root = self.dir().join(group);
        place_files(
            &root,
            &written_files(&std::fs::read_to_string(&user_data).unwrap()),
        );
        root
    }

    /// The VM's join script run in the VM's namespace: success, stdout, stderr.
    fn join(&self, root: &Path) -> (bool, String, String) {
        let out = in_netns(&self.netns, &["env"])
            .arg(format!("MESHVM_JOIN_ROOT={}", root.display()))
            .arg(root.join("usr/local/sbin/meshvm-join"))
            .output()
            .unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        assert!(
            !stdout.contains("eyJ") && !stderr.contains("eyJ"),
            "the script prints a token or a proof"
        );
        (out.status.success(), stdout, stderr)
    }

    /// The token the script wrote below `root`, which TokenReview authenticates as the group's
    /// ServiceAccount.
    fn assert_real_token(&self, root: &Path) {
        let token = std::fs::read_to_string(token_file(root)).unwrap();
        crate::broker::assert_reviewed_as(self.dir(), &token, NS, SA);
    }
}

fn token_file(root: &Path) -> PathBuf {
    root.join("var/run/secrets/tokens/istio-token")
}

#[test]
fn an_aws_vm_proves_itself_through_the_metadata_emulator_and_gets_a_real_token() {
    let _slot = vm_slot();
    let fleet = Fleet::start(
        &[(
            "asg",
            r#"{method: aws, accounts: ["111122223333"], regions: [eu-west-1]}"#,
        )],
        |dir, _| {
            // The broker trusts the test signing certificate.
            let certs = dir.join("aws-certs.json");
            std::fs::write(
                &certs,
                json!({"eu-west-1": testkit::join::cert("aws")}).to_string(),
            )
            .unwrap();
            vec!["--aws-certs".into(), certs.into()]
        },
    );
    let (dir, netns) = (fleet.dir(), fleet.netns.as_str());
    let root = fleet.vm("asg");

    let _link = LinkLocal::add(netns);
    // The emulator's own serialization is what gets signed, as AWS signs the bytes it serves:
    // a first start to read them, then the signature of those bytes in its configuration.
    let document = identity_document("10.0.0.7");
    let served = {
        let _aemm = Aemm::start(dir, netns, &document, "unsigned");
        Aemm::document(netns)
    };
    let signature = testkit::join::aws_signature(std::str::from_utf8(&served).unwrap());
    {
        let _aemm = Aemm::start(dir, netns, &document, &signature);
        assert_eq!(
            Aemm::document(netns),
            served,
            "the emulator serves stable bytes"
        );
        let (ok, stdout, stderr) = fleet.join(&root);
        assert!(ok, "{stdout}{stderr}");
        assert!(stdout.contains("got an istio-token"), "{stdout}");
    }
    fleet.assert_real_token(&root);
    let issued = fleet.broker.decisions(1);
    assert_eq!(issued[0]["decision"], "issued", "{issued:?}");

    // A forged document (another account) with the real signature: refused, no token.
    std::fs::remove_file(token_file(&root)).unwrap();
    let mut forged = document.clone();
    forged["accountId"] = "444455556666".into();
    {
        let _aemm = Aemm::start(dir, netns, &forged, &signature);
        let (ok, _, stderr) = fleet.join(&root);
        assert!(!ok);
        assert!(stderr.contains("bad-proof"), "{stderr}");
    }
    assert!(!token_file(&root).exists());
    let decisions = fleet.broker.decisions(2);
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

/// `metadata.google.internal` → 169.254.169.254 in the namespace's hosts file (which `ip netns
/// exec` binds over /etc/hosts) while the test runs, as GCE's DNS answers it.
struct GoogleInternal(PathBuf);

const GOOGLE_INTERNAL: &str = "169.254.169.254 metadata.google.internal\n";

impl GoogleInternal {
    fn add(netns: &str) -> GoogleInternal {
        let hosts = Path::new("/etc/netns").join(netns).join("hosts");
        let text = std::fs::read_to_string(&hosts).unwrap();
        if !text.contains(GOOGLE_INTERNAL) {
            std::fs::write(&hosts, format!("{text}{GOOGLE_INTERNAL}")).unwrap();
        }
        GoogleInternal(hosts)
    }
}

impl Drop for GoogleInternal {
    fn drop(&mut self) {
        if let Ok(text) = std::fs::read_to_string(&self.0) {
            let _ = std::fs::write(&self.0, text.replace(GOOGLE_INTERNAL, ""));
        }
    }
}

const SUBSCRIPTION: &str = "0a1b2c3d-0000-4000-8000-000000000000";
const PROJECT: &str = "my-project";

fn identity(subscription: &str, project: &str) -> Identity {
    Identity {
        azure_subscription: subscription.into(),
        azure_vm_id: "11111111-2222-4333-8444-555555555555".into(),
        gcp_project: project.into(),
        gcp_zone: "europe-west1-b".into(),
        gcp_instance: "gce-vm-1".into(),
    }
}

/// Azure and GCE VMs through the metadata stand-in, with the fixtures' test trust: each
/// group's join script gets a real token for the VM the group allows, and is refused
/// `forbidden`, with no token written, for a VM of another subscription or project. The
/// stand-in refuses a request without the services' header, so the script's headers count.
#[test]
fn azure_and_gce_vms_prove_themselves_through_their_metadata_service_and_get_real_tokens() {
    let _slot = vm_slot();
    let fleet = Fleet::start(
        &[
            (
                "vmss",
                &format!(r#"{{method: azure, subscriptions: ["{SUBSCRIPTION}"]}}"#),
            ),
            (
                "gce",
                &format!("{{method: gcp, projects: [{PROJECT}], zones: [europe-west1-b]}}"),
            ),
        ],
        |dir, url| {
            let roots = dir.join("azure-roots.pem");
            let issuing = dir.join("azure-intermediates.pem");
            let gcp = dir.join("gcp-certs.json");
            std::fs::write(&roots, testkit::join::cert_file("azure-test-root")).unwrap();
            std::fs::write(
                &issuing,
                testkit::join::cert_file("azure-test-intermediate"),
            )
            .unwrap();
            std::fs::write(&gcp, json!({"k1": testkit::join::cert("gcp")}).to_string()).unwrap();
            vec![
                "--azure-roots".into(),
                roots.into(),
                "--azure-intermediates".into(),
                issuing.into(),
                "--gcp-certs".into(),
                gcp.into(),
                "--gcp-audience".into(),
                url.into(),
            ]
        },
    );
    let netns = fleet.netns.as_str();
    let _link = LinkLocal::add(netns);
    let _google = GoogleInternal::add(netns);
    let address = format!("{IMDS}:80");

    // The services' headers: without them, the stand-in refuses as Azure and GCE do.
    {
        let _imds = MetadataServer::start(netns, &address, identity(SUBSCRIPTION, PROJECT));
        for (url, status) in [
            (
                format!("http://{IMDS}/metadata/attested/document?api-version=2020-09-01&nonce=1"),
                "400",
            ),
            (
                "http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/identity?audience=a&format=full".to_owned(),
                "403",
            ),
        ] {
            let out = in_netns(netns, &["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}"])
                .arg(&url)
                .output()
                .unwrap();
            assert_eq!(String::from_utf8_lossy(&out.stdout), status, "{url}: {out:?}");
        }
    }

    let cases = [
        (
            "vmss",
            identity("0a1b2c3d-0000-4000-8000-00000000ffff", PROJECT),
            "Azure subscription",
        ),
        (
            "gce",
            identity(SUBSCRIPTION, "other-project"),
            "GCP project",
        ),
    ];
    for (n, (group, stranger, says)) in cases.into_iter().enumerate() {
        let root = fleet.vm(group);
        {
            let _imds = MetadataServer::start(netns, &address, identity(SUBSCRIPTION, PROJECT));
            let (ok, stdout, stderr) = fleet.join(&root);
            assert!(ok, "{group}: {stdout}{stderr}");
            assert!(stdout.contains("got an istio-token"), "{group}: {stdout}");
        }
        fleet.assert_real_token(&root);
        let decisions = fleet.broker.decisions(2 * n + 1);
        assert_eq!(
            decisions[2 * n]["decision"],
            "issued",
            "{group}: {decisions:?}"
        );

        std::fs::remove_file(token_file(&root)).unwrap();
        {
            let _imds = MetadataServer::start(netns, &address, stranger);
            let (ok, _, stderr) = fleet.join(&root);
            assert!(!ok, "{group}");
            assert!(stderr.contains("forbidden"), "{group}: {stderr}");
        }
        assert!(!token_file(&root).exists(), "{group}");
        let decisions = fleet.broker.decisions(2 * n + 2);
        let refused = &decisions[2 * n + 1];
        assert_eq!(refused["decision"], "refused", "{group}: {decisions:?}");
        assert_eq!(refused["code"], "forbidden", "{group}: {decisions:?}");
        assert!(
            refused["reason"].as_str().unwrap().contains(says),
            "{group}: {decisions:?}"
        );
    }
}
