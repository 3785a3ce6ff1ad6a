//! Joins per second that `meshvm join-server` sustains, and their latency: a benchmark, not a
//! test. Against the real-cluster harness (`cargo xtask mesh up`, `eval $(cargo xtask mesh
//! env)`: real TokenRequests to kube-apiserver) when MESH_KUBECONFIG is set, else against the
//! hermetic TokenRequest stand-in (the broker's own cost). Each join is what a VM does: a new
//! TLS connection, an AWS identity document signed by the test key, a fresh nonce.
//!
//! `cargo bench -p meshvm --bench join` (env: JOIN_BENCH_SECONDS, default 20;
//! JOIN_BENCH_CLIENTS, default 16).

#[allow(dead_code)]
#[path = "../../tests/support/broker.rs"]
mod broker;

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

const NS: &str = "bench-join";
const SA: &str = "bench-sa";

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let seconds = env_number("JOIN_BENCH_SECONDS", 20);
    let clients = env_number("JOIN_BENCH_CLIENTS", 16) as usize;
    let dir = tempfile::tempdir().unwrap();
    let fleet = dir.path().join("meshvm.yaml");
    std::fs::write(
        &fleet,
        format!(
            "apiVersion: meshvm.io/v1alpha1\nkind: Fleet\nmesh: {{meshID: mesh1, clusterID: cluster1, eastWestGateway: {{address: 192.0.2.10}}}}\nsidecar: {{version: 1.28.0}}\ngitops: {{engines: []}}\nworkloads:\n- name: asg\n  namespace: {NS}\n  serviceAccount: {SA}\n  autoRegister: true\n  join: {{method: aws, accounts: [\"111122223333\"]}}\n"
        ),
    )
    .unwrap();
    let aws = dir.path().join("aws.json");
    std::fs::write(
        &aws,
        json!({"eu-west-1": testkit::join::cert("aws")}).to_string(),
    )
    .unwrap();
    let _fake;
    let (kubeconfig, against) = match std::env::var_os("MESH_KUBECONFIG") {
        Some(path) => {
            let objects = dir.path().join("sa.yaml");
            std::fs::write(
                &objects,
                format!(
                    "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {NS}}}\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: {SA}, namespace: {NS}}}\n"
                ),
            )
            .unwrap();
            let out = Command::new("kubectl")
                .arg("--kubeconfig")
                .arg(&path)
                .args(["apply", "--server-side", "-f"])
                .arg(&objects)
                .output()
                .expect("kubectl runs");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            (
                std::path::PathBuf::from(path),
                "the harness's kube-apiserver",
            )
        }
        None => {
            _fake = broker::FakeKube::start(dir.path());
            (
                _fake.kubeconfig.clone(),
                "the TokenRequest stand-in (no MESH_KUBECONFIG)",
            )
        }
    };
    let server = broker::Broker::start(
        dir.path(),
        &broker::pki(),
        &[
            "--kubeconfig".as_ref(),
            kubeconfig.as_os_str(),
            "--fleet".as_ref(),
            fleet.as_os_str(),
            "--aws-certs".as_ref(),
            aws.as_os_str(),
            "--token-seconds".as_ref(),
            "600".as_ref(),
            "--rate".as_ref(),
            "1000000".as_ref(),
            "--burst".as_ref(),
            "1000000".as_ref(),
        ],
    );
    let (document, signature) = testkit::join::aws_proof(&testkit::join::aws_document(
        "111122223333",
        "eu-west-1",
        "i-0123456789",
        "10.0.0.1",
    ));
    let proof = json!({"method": "aws", "document": document, "signature": signature});
    let one = || {
        let started = Instant::now();
        let (status, _) = server.join(&broker::join_request(NS, "asg", proof.clone()));
        (status, started.elapsed())
    };
    // Warm up (connections to the API server, caches).
    for _ in 0..20 {
        assert_eq!(one().0, 200, "the broker does not issue tokens");
    }
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let results: Vec<(u16, Duration)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..clients)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    while Instant::now() < deadline {
                        mine.push(one());
                    }
                    mine
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    let elapsed = started.elapsed().as_secs_f64();
    let mut ok: Vec<Duration> = results
        .iter()
        .filter(|(s, _)| *s == 200)
        .map(|(_, d)| *d)
        .collect();
    ok.sort();
    let failed = results.len() - ok.len();
    let pct = |p: f64| ok[((ok.len() as f64 * p) as usize).min(ok.len() - 1)];
    println!(
        "join-server against {against}: {} joins in {elapsed:.1} s with {clients} clients = {:.0} joins/s; latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; {failed} refused or failed",
        ok.len(),
        ok.len() as f64 / elapsed,
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        ok.last().unwrap().as_secs_f64() * 1e3,
    );
}
