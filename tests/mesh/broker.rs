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
/// A real TokenReview of `token` must authenticate it as `system:serviceaccount:<ns>:<sa>`;
/// returns the review's status for further checks.
pub(crate) fn assert_reviewed_as(dir: &Path, token: &str, ns: &str, sa: &str) -> Value {
    let status = review(dir, token)["status"].clone();
    assert_eq!(
        status["authenticated"], true,
        "TokenReview: {}",
        status["error"]
    );
    assert_eq!(
        status["user"]["username"],
        format!("system:serviceaccount:{ns}:{sa}")
    );
    status
}

pub(crate) fn review(dir: &Path, token: &str) -> Value {
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
    let status = assert_reviewed_as(dir.path(), istio_token, NS, SA);
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

/// `kubectl auth can-i` as `user` (a SubjectAccessReview on the real API server).
fn can_i(user: &str, namespace: &str, args: &[&str]) -> bool {
    let out = output(
        kubectl()
            .args(["auth", "can-i", "--as", user, "-n", namespace])
            .args(args),
    );
    let said = String::from_utf8_lossy(&out.stdout);
    match said.trim() {
        "yes" => true,
        "no" => false,
        other => panic!(
            "kubectl auth can-i {args:?} as {user}: {other:?} ({})",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// A kubeconfig for the harness's API server that authenticates with `token` only.
fn kubeconfig_with_token(dir: &Path, token: &str) -> std::path::PathBuf {
    let view = checked(kubectl().args(["config", "view", "--raw", "--minify", "-o", "json"]));
    let view: Value = serde_json::from_str(&view).unwrap();
    let mut cluster = view["clusters"][0]["cluster"].clone();
    if let Some(ca) = cluster["certificate-authority"].as_str() {
        // Relative to the harness kubeconfig's directory; make it absolute.
        let base = std::path::PathBuf::from(std::env::var_os("MESH_KUBECONFIG").unwrap());
        let ca = base.parent().unwrap().join(ca);
        cluster["certificate-authority"] = Value::String(ca.display().to_string());
    }
    let config = json!({
        "apiVersion": "v1", "kind": "Config", "current-context": "broker",
        "clusters": [{"name": "harness", "cluster": cluster}],
        "users": [{"name": "broker", "user": {"token": token}}],
        "contexts": [{"name": "broker", "context": {"cluster": "harness", "user": "broker"}}],
    });
    let path = dir.join("broker.kubeconfig");
    std::fs::write(&path, config.to_string()).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    path
}

/// The broker as meshvm renders it for fixtures/join: its objects apply server side, its
/// RBAC (checked by SubjectAccessReview) lets its ServiceAccount create tokens of exactly the
/// broker-joined groups' ServiceAccounts, and a broker running as that ServiceAccount with the
/// rendered policy ConfigMap's file gets a real token; when the file changes (a ConfigMap
/// update), it reloads it.
#[test]
fn the_rendered_broker_applies_and_its_rbac_names_exactly_the_fleets_service_accounts() {
    let _turn = crate::cluster::fleet_turn();
    let dir = tempfile::tempdir().unwrap();
    let fleet = testkit::fixture("join/meshvm.yaml");
    let tree = dir.path().join("tree");
    checked(
        meshvm()
            .arg("render")
            .arg("-f")
            .arg(&fleet)
            .arg("-o")
            .arg(&tree),
    );
    let objects = crate::apply::apply_tree(&tree, dir.path());
    let kinds: std::collections::BTreeSet<&str> =
        objects.iter().filter_map(|o| o["kind"].as_str()).collect();
    for kind in [
        "Deployment",
        "Service",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "ConfigMap",
        "PodDisruptionBudget",
        "Gateway",
        "VirtualService",
    ] {
        assert!(kinds.contains(kind), "no {kind} applied: {kinds:?}");
    }

    let broker = "system:serviceaccount:meshvm-join:meshvm-join";
    for sa in ["asg-sa", "gce-sa", "onprem-sa", "vmss-sa", "web-sa"] {
        let target = format!("serviceaccounts/{sa}");
        assert!(
            can_i(
                broker,
                "join-apps",
                &["create", &target, "--subresource=token"]
            ),
            "the broker may not mint tokens for {sa}"
        );
        assert!(
            !can_i(
                "system:serviceaccount:join-apps:default",
                "join-apps",
                &["create", &target, "--subresource=token"]
            ),
            "another ServiceAccount may mint tokens for {sa}"
        );
    }
    // The `classic` group joins by token: its ServiceAccount (default) is not the broker's.
    for (ns, args) in [
        (
            "join-apps",
            &["create", "serviceaccounts/default", "--subresource=token"][..],
        ),
        (
            "meshvm-join",
            &[
                "create",
                "serviceaccounts/meshvm-join",
                "--subresource=token",
            ][..],
        ),
        ("join-apps", &["get", "serviceaccounts/asg-sa"][..]),
        ("join-apps", &["get", "secrets"][..]),
        (
            "join-apps",
            &["create", "serviceaccounts", "--subresource=token"][..],
        ),
        // The join-token book: its one Secret, read and replaced, nothing more.
        ("meshvm-join", &["get", "secrets/meshvm-join-tls"][..]),
        ("meshvm-join", &["list", "secrets"][..]),
        ("meshvm-join", &["create", "secrets"][..]),
        ("meshvm-join", &["delete", "secrets/meshvm-join-tokens"][..]),
    ] {
        assert!(!can_i(broker, ns, args), "the broker may {args:?} in {ns}");
    }

    for verb in ["get", "update"] {
        assert!(
            can_i(broker, "meshvm-join", &[verb, "secrets/meshvm-join-tokens"]),
            "the broker may not {verb} its join-token book"
        );
    }

    // The broker with its own ServiceAccount's credentials and the rendered policy file.
    let cm: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(tree.join("mesh/join-broker/configmap-policy.yaml")).unwrap(),
    )
    .unwrap();
    let policy_dir = dir.path().join("policy");
    let data = policy_dir.join("..data-1");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(
        data.join("policy.json"),
        cm["data"]["policy.json"].as_str().unwrap(),
    )
    .unwrap();
    std::os::unix::fs::symlink("..data-1", policy_dir.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/policy.json", policy_dir.join("policy.json")).unwrap();
    let sa_token = checked(kubectl().args([
        "create",
        "token",
        "meshvm-join",
        "-n",
        "meshvm-join",
        "--duration",
        "10m",
    ]));
    let kubeconfig = kubeconfig_with_token(dir.path(), sa_token.trim());
    // The join-token book in its Secret, as the rendered Deployment reads it: written by
    // `meshvm join-token` with the operator's credentials.
    let admin = std::env::var_os("MESH_KUBECONFIG").unwrap();
    let secret = "meshvm-join/meshvm-join-tokens";
    let join_token = |group: &str| {
        checked(
            meshvm()
                .args(["join-token", "create", "--group", group, "--uses", "1"])
                .args(["--secret", secret, "--kubeconfig"])
                .arg(&admin)
                .arg("-f")
                .arg(&fleet),
        )
        .trim()
        .to_owned()
    };

    let token = join_token("onprem");
    let policy = policy_dir.join("policy.json");
    let broker = Broker::start(
        dir.path(),
        &pki(),
        &[
            "--kubeconfig".as_ref(),
            kubeconfig.as_os_str(),
            "--policy".as_ref(),
            policy.as_os_str(),
            "--join-tokens-secret".as_ref(),
            secret.as_ref(),
            "--token-seconds".as_ref(),
            "600".as_ref(),
        ],
    );
    let proof = json!({"method": "join-token", "token": token});
    let (status, answer) = broker.join(&join_request("join-apps", "onprem", proof.clone()));
    assert_eq!(status, 200, "{}", answer["reason"]);
    let istio_token = answer["token"].as_str().unwrap();
    assert_reviewed_as(dir.path(), istio_token, "join-apps", "onprem-sa");

    // The use is recorded in the Secret: the same join token is used up.
    let (status, answer) = broker.join(&join_request("join-apps", "onprem", proof.clone()));
    assert_eq!(
        (status, answer["error"].as_str()),
        (401, Some("bad-token")),
        "{answer}"
    );
    let listed = checked(
        meshvm()
            .args(["join-token", "list", "--secret", secret, "--kubeconfig"])
            .arg(&admin),
    );
    assert!(!listed.contains(&token), "list never shows a token");

    // A ConfigMap update as the kubelet makes it (a new ..data directory swapped in): the
    // group is gone from the policy, and the broker refuses it at once.
    let mut changed: meshvm::join::Policy =
        serde_json::from_str(cm["data"]["policy.json"].as_str().unwrap()).unwrap();
    changed.groups.retain(|g| g.name != "onprem");
    let data2 = policy_dir.join("..data-2");
    std::fs::create_dir_all(&data2).unwrap();
    std::fs::write(
        data2.join("policy.json"),
        serde_json::to_string(&changed).unwrap(),
    )
    .unwrap();
    std::os::unix::fs::symlink("..data-2", policy_dir.join("..data-tmp")).unwrap();
    std::fs::rename(policy_dir.join("..data-tmp"), policy_dir.join("..data")).unwrap();
    let (status, answer) = broker.join(&join_request("join-apps", "onprem", proof));
    assert_eq!(
        (status, answer["error"].as_str()),
        (403, Some("unknown-group")),
        "{answer}"
    );
}

/// The Secret backend of the join-token book loses no write: eight `meshvm join-token
/// create --secret` at once (each a read and a replace with the Secret's resourceVersion;
/// the losers of a race read again) leave eight tokens in the book.
#[test]
fn concurrent_writers_of_the_join_token_secret_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    ensure_service_account(dir.path());
    let fleet = fleet(dir.path());
    let admin = std::env::var_os("MESH_KUBECONFIG").expect("MESH_KUBECONFIG: run the harness");
    let secret = format!("{NS}/race-{}", std::process::id());
    let created: Vec<String> = std::thread::scope(|s| {
        let writers: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| {
                    checked(
                        meshvm()
                            .args(["join-token", "create", "--group", "onprem"])
                            .args(["--secret", &secret, "--kubeconfig"])
                            .arg(&admin)
                            .arg("-f")
                            .arg(&fleet),
                    )
                    .trim()
                    .to_owned()
                })
            })
            .collect();
        writers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let listed = checked(
        meshvm()
            .args(["join-token", "list", "--secret", &secret, "--kubeconfig"])
            .arg(&admin),
    );
    let ids = listed.lines().filter(|l| l.contains("onprem")).count();
    assert_eq!(ids, created.len(), "a write was lost:\n{listed}");
}
