//! The join broker against the real API server: the istio-token it hands a VM comes from the
//! real TokenRequest API, and the real TokenReview authenticates it for Istio's audience as
//! the group's ServiceAccount.

use std::path::Path;

use serde_json::{Value, json};

use crate::cluster::{checked, kubectl, meshvm, output};
use crate::support::broker::{Broker, join_request, pki};

const NS: &str = "meshvm-join";
const SA: &str = "vm-joiner";

fn fleet(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("meshvm.yaml");
    std::fs::write(
        &path,
        format!(
            "apiVersion: meshvm.io/v1alpha1\nkind: Fleet\nmesh: {{meshID: mesh1, clusterID: cluster1, eastWestGateway: {{address: 192.0.2.10}}}}\nsidecar: {{version: 1.28.0}}\ngitops: {{engines: []}}\nworkloads:\n- name: onprem\n  namespace: {NS}\n  serviceAccount: {SA}\n  autoRegister: true\n  join: {{method: join-token}}\n"
        ),
    )
    .unwrap();
    path
}

/// The ServiceAccount the broker mints for, and its namespace (server-side apply: idempotent).
fn ensure_service_account(dir: &Path) {
    crate::cluster::ensure_namespaces([NS]);
    let file = dir.join("sa.yaml");
    crate::cluster::write_stream(
        &file,
        &[
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": SA, "namespace": NS}}),
        ],
    );
    let out = crate::cluster::apply(&file, false);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// TokenReview of `token` for `istio-ca`, as istiod makes it.
fn review(dir: &Path, token: &str) -> Value {
    let file = dir.join("review.json");
    std::fs::write(
        &file,
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token, "audiences": ["istio-ca"]}}).to_string(),
    )
    .unwrap();
    let out = output(kubectl().args(["create", "-o", "json", "-f"]).arg(&file));
    std::fs::remove_file(&file).unwrap();
    // Never print the output: it holds the token.
    assert!(out.status.success(), "the TokenReview failed");
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_broker_issues_a_real_token_that_token_review_authenticates() {
    let dir = tempfile::tempdir().unwrap();
    ensure_service_account(dir.path());
    let fleet = fleet(dir.path());
    let book = dir.path().join("join-tokens.json");
    let token = checked(
        meshvm()
            .args([
                "join-token",
                "create",
                "--group",
                "onprem",
                "--uses",
                "1",
                "--book",
            ])
            .arg(&book)
            .arg("-f")
            .arg(&fleet),
    )
    .trim()
    .to_owned();
    let kubeconfig = std::env::var_os("MESH_KUBECONFIG").expect("MESH_KUBECONFIG: run the harness");
    let broker = Broker::start(
        dir.path(),
        &pki(),
        &[
            "--kubeconfig".as_ref(),
            kubeconfig.as_os_str(),
            "--fleet".as_ref(),
            fleet.as_os_str(),
            "--join-tokens".as_ref(),
            book.as_os_str(),
            "--token-seconds".as_ref(),
            "600".as_ref(),
        ],
    );
    let (status, answer) = broker.join(&join_request(
        NS,
        "onprem",
        json!({"method": "join-token", "token": token}),
    ));
    assert_eq!(status, 200, "{}", answer["reason"]);
    let istio_token = answer["token"].as_str().unwrap();
    let status = &review(dir.path(), istio_token)["status"];
    assert_eq!(
        status["authenticated"], true,
        "TokenReview: {}",
        status["error"]
    );
    assert_eq!(
        status["user"]["username"],
        format!("system:serviceaccount:{NS}:{SA}")
    );
    assert_eq!(status["audiences"], json!(["istio-ca"]));

    // The claims say the lifetime asked for (the minimum the API allows).
    let claims = istio_token.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, claims).unwrap(),
    )
    .unwrap();
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        600
    );

    // The used-up join token gets nothing more.
    let (status, answer) = broker.join(&join_request(
        NS,
        "onprem",
        json!({"method": "join-token", "token": token}),
    ));
    assert_eq!((status, answer["error"].as_str()), (401, Some("bad-token")));
    let decisions = broker.decisions(2);
    assert!(
        decisions
            .iter()
            .all(|d| !d.to_string().contains(istio_token))
    );
}
