//! `meshvm join-server` and `meshvm join-token`, hermetic: the broker on 127.0.0.1 with a test
//! PKI, proofs signed by the fixture keys (fixtures/join/), and the TokenRequest stand-in of
//! tests/support/broker.rs (tests/mesh has the real API server).

use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use testkit::join as sign;

use crate::support::broker::{Broker, FakeKube, join_request, pki};
use crate::support::{fixture, meshvm, run};

const NS: &str = "join-apps";

fn fleet() -> std::path::PathBuf {
    fixture("join/meshvm.yaml")
}

fn trust_files(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let aws = dir.join("aws-certs.json");
    let gcp = dir.join("gcp-certs.json");
    std::fs::write(
        &aws,
        json!({"eu-west-1": sign::cert("aws"), "us-east-1": sign::cert("aws")}).to_string(),
    )
    .unwrap();
    std::fs::write(&gcp, json!({"k1": sign::cert("gcp")}).to_string()).unwrap();
    (aws, gcp)
}

const AUD: &str = "https://broker.example/v1/join";

/// A broker on the join fixture fleet with every kind of trust, and the stand-in API.
fn broker(dir: &Path, extra: &[&str]) -> (Broker, FakeKube) {
    let kube = FakeKube::start(dir);
    let (aws, gcp) = trust_files(dir);
    let book = dir.join("join-tokens.json");
    let fleet = fleet();
    let mut args: Vec<&OsStr> = vec![
        "--kubeconfig".as_ref(),
        kube.kubeconfig.as_os_str(),
        "--fleet".as_ref(),
        fleet.as_os_str(),
        "--join-tokens".as_ref(),
        book.as_os_str(),
        "--aws-certs".as_ref(),
        aws.as_os_str(),
        "--gcp-certs".as_ref(),
        gcp.as_os_str(),
        "--gcp-audience".as_ref(),
        AUD.as_ref(),
    ];
    args.extend(extra.iter().map(OsStr::new));
    let broker = Broker::start(dir, &pki(), &args);
    (broker, kube)
}

fn create_token(dir: &Path, group: &str, uses: &str) -> String {
    let out = run(meshvm()
        .args([
            "join-token",
            "create",
            "--group",
            group,
            "--uses",
            uses,
            "--ttl",
            "1h",
            "--book",
        ])
        .arg(dir.join("join-tokens.json"))
        .arg("-f")
        .arg(fleet()));
    assert_eq!(out.code, 0, "{}", out.stderr);
    out.stdout.trim().to_owned()
}

fn aws_proof(account: &str, region: &str, ip: &str) -> Value {
    let (document, signature) =
        sign::aws_proof(&sign::aws_document(account, region, "i-0123456789", ip));
    json!({"method": "aws", "document": document, "signature": signature})
}

/// A GCE token `age` seconds old (tokens made in the same second are the same token).
fn gcp_proof(aud: &str, project: &str, age: i64) -> Value {
    let now = crate::support::broker::unix_now() - age;
    json!({"method": "gcp", "jwt": sign::gcp_token("k1", &sign::gcp_claims(aud, now - 5, now + 3595, project, "europe-west1-b", "gce-7"))})
}

#[test]
fn a_join_token_gets_an_istio_token_its_number_of_uses_and_no_more() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, kube) = broker(dir.path(), &[]);
    let token = create_token(dir.path(), "onprem", "1");
    assert!(token.starts_with("mvjt_"), "{token}");
    let book_path = dir.path().join("join-tokens.json");
    let book = std::fs::read_to_string(&book_path).unwrap();
    assert!(!book.contains(&token), "the book holds only hashes");
    assert!(book.contains(&meshvm::join::tokens::sha256_hex(&token)));
    assert_eq!(
        std::fs::metadata(&book_path).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let proof = json!({"method": "join-token", "token": token});
    let (status, answer) = broker.join(&join_request(NS, "onprem", proof.clone()));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["token"], "fake-token.join-apps.onprem-sa");
    assert_eq!(answer["serviceAccount"], "onprem-sa");
    let (path, body) = kube.requests.lock().unwrap()[0].clone();
    assert_eq!(
        path,
        "/api/v1/namespaces/join-apps/serviceaccounts/onprem-sa/token"
    );
    assert_eq!(body["spec"]["audiences"], json!(["istio-ca"]));
    assert_eq!(body["spec"]["expirationSeconds"], 3600);

    let (status, answer) = broker.join(&join_request(NS, "onprem", proof));
    assert_eq!(
        (status, answer["error"].as_str()),
        (401, Some("bad-token")),
        "{answer}"
    );
    assert!(
        answer["reason"].as_str().unwrap().contains("used up"),
        "{answer}"
    );
    assert_eq!(
        kube.requests.lock().unwrap().len(),
        1,
        "no token for a used-up join token"
    );

    let decisions = broker.decisions(2);
    assert_eq!(decisions[0]["decision"], "issued");
    assert_eq!(decisions[1]["decision"], "refused");
    assert_eq!(decisions[1]["code"], "bad-token");
    for line in &decisions {
        let text = line.to_string();
        assert!(
            !text.contains(&token) && !text.contains("fake-token"),
            "the audit line holds a secret: {text}"
        );
    }

    let list = run(meshvm()
        .args(["join-token", "list", "--book"])
        .arg(&book_path));
    assert_eq!(list.code, 0, "{}", list.stderr);
    assert!(
        list.stdout.contains("join-apps/onprem") && list.stdout.contains("used-up"),
        "{}",
        list.stdout
    );
    assert!(!list.stdout.contains(&token));
}

#[test]
fn a_revoked_or_foreign_join_token_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, kube) = broker(dir.path(), &[]);
    let token = create_token(dir.path(), "join-apps/onprem", "5");
    let book_path = dir.path().join("join-tokens.json");
    let id = token.split('_').nth(1).unwrap().to_owned();
    let out = run(meshvm()
        .args(["join-token", "revoke", &id, "--book"])
        .arg(&book_path));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let (status, answer) = broker.join(&join_request(
        NS,
        "onprem",
        json!({"method": "join-token", "token": token}),
    ));
    assert_eq!(
        (status, answer["error"].as_str()),
        (401, Some("bad-token")),
        "{answer}"
    );
    let out = run(meshvm()
        .args(["join-token", "revoke", &id, "--book"])
        .arg(&book_path));
    assert_eq!(out.code, 1, "revoking twice says there is no such token");

    let refused = run(meshvm()
        .args(["join-token", "create", "--group", "web", "--book"])
        .arg(&book_path)
        .arg("-f")
        .arg(fleet()));
    assert_eq!(refused.code, 1);
    assert!(
        refused.stderr.contains("joins by `aws`"),
        "{}",
        refused.stderr
    );
    assert!(kube.requests.lock().unwrap().is_empty());
}

#[test]
fn cloud_proofs_are_verified_and_hostile_requests_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, kube) = broker(dir.path(), &[]);
    let good = aws_proof("111122223333", "eu-west-1", "10.20.0.11");
    let (status, answer) = broker.join(&join_request(NS, "web", good.clone()));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (answer["token"].as_str(), answer["instance"].as_str()),
        (Some("fake-token.join-apps.web-sa"), Some("web-1"))
    );
    let (status, answer) = broker.join(&join_request(NS, "gce", gcp_proof(AUD, "my-project", 5)));
    assert_eq!(status, 200, "{answer}");

    let mut forged = good.clone();
    let doc = sign::aws_document("111122223333", "eu-west-1", "i-0123456789", "10.20.0.11")
        .replace("111122223333", "444455556666");
    forged["document"] =
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, doc).into();
    let replayed = join_request(
        NS,
        "asg",
        aws_proof("111122223333", "us-east-1", "10.0.0.1"),
    );
    assert_eq!(broker.join(&replayed).0, 200);
    let mut stale = join_request(NS, "asg", good.clone());
    stale["timestamp"] = (crate::support::broker::unix_now() - 3600).into();
    let gcp_once = join_request(NS, "gce", gcp_proof(AUD, "my-project", 10));
    assert_eq!(broker.join(&gcp_once).0, 200);
    let mut gcp_again = gcp_once.clone();
    gcp_again["nonce"] = crate::support::broker::nonce().into();
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        (
            "forged document",
            join_request(NS, "web", forged),
            401,
            "bad-proof",
        ),
        (
            "wrong account",
            join_request(
                NS,
                "web",
                aws_proof("999988887777", "eu-west-1", "10.20.0.11"),
            ),
            403,
            "forbidden",
        ),
        (
            "address not in the fleet",
            join_request(
                NS,
                "web",
                aws_proof("111122223333", "eu-west-1", "10.20.0.99"),
            ),
            403,
            "forbidden",
        ),
        ("replayed request", replayed, 403, "replayed"),
        ("replayed gce token", gcp_again, 403, "replayed"),
        ("stale request", stale, 403, "stale"),
        (
            "gcp for another audience",
            join_request(
                NS,
                "gce",
                gcp_proof("https://evil.example", "my-project", 15),
            ),
            401,
            "bad-proof",
        ),
        (
            "token group",
            join_request(NS, "classic", good.clone()),
            403,
            "unknown-group",
        ),
        (
            "wrong method",
            join_request(NS, "onprem", good),
            403,
            "wrong-method",
        ),
    ];
    let before = kube.requests.lock().unwrap().len();
    for (name, request, status, code) in &cases {
        let (got, answer) = broker.join(request);
        assert_eq!(
            (got, answer["error"].as_str()),
            (*status, Some(*code)),
            "{name}: {answer}"
        );
        assert!(
            !answer["reason"].as_str().unwrap_or_default().is_empty(),
            "{name}"
        );
    }
    let (status, answer) = broker.post(&[b'{'; 17 * 1024]);
    assert_eq!(
        (status, answer["error"].as_str()),
        (413, Some("too-large")),
        "{answer}"
    );
    let (status, answer) = broker.post(b"{\"namespace\": 1}");
    assert_eq!(
        (status, answer["error"].as_str()),
        (400, Some("bad-request")),
        "{answer}"
    );
    assert_eq!(
        kube.requests.lock().unwrap().len(),
        before,
        "no token for a refused request"
    );
    let refused: Vec<Value> = broker
        .decisions(4 + cases.len() + 2)
        .into_iter()
        .filter(|d| d["decision"] == "refused")
        .collect();
    assert_eq!(refused.len(), cases.len() + 2, "one audit line per refusal");
    assert!(
        refused
            .iter()
            .all(|d| d["code"].is_string() && d["reason"].is_string()),
        "{refused:?}"
    );
}

#[test]
fn a_slow_client_is_cut_off_and_does_not_hold_the_broker() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, _kube) = broker(dir.path(), &["--header-timeout", "1"]);
    let mut slow = broker.connect();
    write!(slow, "POST /v1/join HTTP/1.1\r\nHost: 127.0").unwrap();
    slow.flush().unwrap();
    let (status, answer) = broker.join(&join_request(
        NS,
        "asg",
        aws_proof("111122223333", "us-east-1", "10.0.0.1"),
    ));
    assert_eq!(status, 200, "{answer}");
    std::thread::sleep(Duration::from_millis(2500));
    let mut rest = Vec::new();
    let read = std::io::Read::read_to_end(&mut slow, &mut rest);
    let text = String::from_utf8_lossy(&rest);
    assert!(
        read.is_err() || rest.is_empty() || text.starts_with("HTTP/1.1 408"),
        "the slow connection was served: {text}"
    );
}

#[test]
fn a_source_over_its_rate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, kube) = broker(dir.path(), &["--rate", "0.01", "--burst", "2"]);
    let codes: Vec<u16> = (0..3)
        .map(|_| {
            broker
                .join(&join_request(
                    NS,
                    "asg",
                    aws_proof("111122223333", "us-east-1", "10.0.0.1"),
                ))
                .0
        })
        .collect();
    assert_eq!(codes, [200, 200, 429]);
    assert_eq!(kube.requests.lock().unwrap().len(), 2);
}

#[test]
fn the_broker_refuses_to_start_on_bad_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("aws.json");
    std::fs::write(&bad, r#"{"eu-west-1": "not a certificate"}"#).unwrap();
    let pki = pki();
    std::fs::write(dir.path().join("c.pem"), &pki.cert).unwrap();
    std::fs::write(dir.path().join("k.pem"), &pki.key).unwrap();
    let out = run(meshvm()
        .args(["join-server", "--listen", "127.0.0.1:0", "--fleet"])
        .arg(fleet())
        .arg("--tls-cert")
        .arg(dir.path().join("c.pem"))
        .arg("--tls-key")
        .arg(dir.path().join("k.pem"))
        .arg("--aws-certs")
        .arg(&bad));
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("eu-west-1"), "{}", out.stderr);
}

/// `meshvm cloud-init --group G --broker-ca FILE`: one user-data for a broker-joined group,
/// no token in it (the system tier runs its join script against a broker); token flags are a
/// usage error, a token-joined group is refused with what to do.
#[test]
fn a_broker_joined_group_gets_one_user_data_without_a_token() {
    let root = fixture("certs/test-root-cert.pem");
    let group = |name: &str, extra: &[&str]| {
        run(meshvm()
            .args(["cloud-init", "--group", name, "--broker-ca"])
            .arg(&root)
            .arg("--root-cert")
            .arg(&root)
            .arg("-f")
            .arg(fleet())
            .args(extra))
    };
    let out = group("web", &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.starts_with("#cloud-config\n"));
    assert!(out.stdout.contains("/usr/local/sbin/meshvm-join"));
    assert!(
        !out.stdout.contains("/var/run/secrets/tokens/istio-token'"),
        "no token file"
    );
    assert!(out.stderr.contains("no token in it"), "{}", out.stderr);
    assert_eq!(group("web", &[]).stdout, out.stdout, "one static document");

    let out = group("web", &["--token-dir", "tokens"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    let out = group("classic", &[]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("joins by `token`"), "{}", out.stderr);
}

/// `--aws-max-instance-age`: an AWS document of an instance started longer ago (the test
/// document's pendingTime is 2026-11-30T08:00:00Z) is refused as expired, with the flag named
/// in the reason and the audit line; no token is asked for.
#[test]
fn an_aws_instance_started_longer_ago_than_the_maximum_age_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, kube) = broker(dir.path(), &["--aws-max-instance-age", "60"]);
    let proof = aws_proof("111122223333", "eu-west-1", "10.20.0.11");
    let (status, answer) = broker.join(&join_request(NS, "web", proof));
    assert_eq!(
        (status, answer["error"].as_str()),
        (401, Some("expired")),
        "{answer}"
    );
    assert!(
        answer["reason"]
            .as_str()
            .unwrap()
            .contains("--aws-max-instance-age"),
        "{answer}"
    );
    assert_eq!(broker.decisions(1)[0]["code"], "expired");
    assert!(kube.requests.lock().unwrap().is_empty());
}

/// AWS's PKCS#7 `rsa2048` and Azure's attested document through the binary: the broker
/// configured with `--aws-rsa2048-certs`, `--azure-roots` and `--azure-intermediates` issues a
/// token for a valid proof and refuses, with its audit line, one signed by a certificate of
/// another root and one fetched for another request's nonce.
#[test]
fn cms_signed_proofs_of_aws_and_azure_get_tokens_and_forgeries_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let rsa2048 = dir.path().join("aws-rsa2048.json");
    std::fs::write(
        &rsa2048,
        json!({"eu-west-1": sign::cert("aws")}).to_string(),
    )
    .unwrap();
    let roots = dir.path().join("azure-roots.pem");
    let issuing = dir.path().join("azure-intermediates.pem");
    std::fs::write(&roots, sign::cert_file("azure-test-root")).unwrap();
    std::fs::write(&issuing, sign::cert_file("azure-test-intermediate")).unwrap();
    let (broker, kube) = broker(
        dir.path(),
        &[
            "--aws-rsa2048-certs",
            rsa2048.to_str().unwrap(),
            "--azure-roots",
            roots.to_str().unwrap(),
            "--azure-intermediates",
            issuing.to_str().unwrap(),
        ],
    );
    let b64 = |b: &[u8]| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, b);
    let document = sign::aws_document("111122223333", "eu-west-1", "i-0123456789", "10.20.0.11");
    let pkcs7 = b64(&sign::signed_data(
        document.as_bytes(),
        "aws",
        "aws-test",
        sign::CmsShape::AWS,
        None,
    ));
    let (status, answer) = broker.join(&join_request(
        NS,
        "web",
        json!({"method": "aws-rsa2048", "pkcs7": pkcs7}),
    ));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["instance"], "web-1");

    let subscription = "0a1b2c3d-0000-4000-8000-000000000000";
    let vm = "11111111-2222-4333-8444-555555555555";
    let azure = |nonce: &str, cert: &str| {
        let doc = sign::azure_document(nonce, subscription, vm, crate::support::broker::unix_now());
        let der = sign::signed_data(doc.as_bytes(), "azure", cert, sign::CmsShape::AZURE, None);
        json!({"method": "azure", "signature": b64(&der)})
    };
    let mut request = join_request(NS, "vmss", Value::Null);
    request["proof"] = azure(request["nonce"].as_str().unwrap(), "azure-test");
    let (status, answer) = broker.join(&request);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["token"], "fake-token.join-apps.vmss-sa");

    let before = kube.requests.lock().unwrap().len();
    let mut rogue = join_request(NS, "vmss", Value::Null);
    rogue["proof"] = azure(rogue["nonce"].as_str().unwrap(), "azure-test-self-signed");
    let mut other_request = join_request(NS, "vmss", Value::Null);
    other_request["proof"] = azure(&crate::support::broker::nonce(), "azure-test");
    for (name, request, says) in [
        ("another root", rogue, "does not chain"),
        ("another request's nonce", other_request, "nonce"),
    ] {
        let (status, answer) = broker.join(&request);
        assert_eq!(
            (status, answer["error"].as_str()),
            (401, Some("bad-proof")),
            "{name}: {answer}"
        );
        assert!(
            answer["reason"].as_str().unwrap().contains(says),
            "{name}: {answer}"
        );
    }
    assert_eq!(
        kube.requests.lock().unwrap().len(),
        before,
        "no token refused"
    );
    let decisions = broker.decisions(4);
    let refused: Vec<&Value> = decisions
        .iter()
        .filter(|d| d["decision"] == "refused")
        .collect();
    assert_eq!(refused.len(), 2, "{decisions:?}");
    assert!(
        refused.iter().all(|d| d["code"] == "bad-proof"),
        "{refused:?}"
    );
}
