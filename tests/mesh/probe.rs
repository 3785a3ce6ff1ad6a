//! The grpc probe action (istio/api #3372) at the pinned Istio commit: the WorkloadGroup CRD
//! (the API server) accepts it, istiod's validation (`istioctl validate` runs the webhook's
//! `ValidateWorkloadGroup`) refuses it as an unknown health check method; so `meshvm validate`
//! refuses it, saying why, and accepts the tcpSocket probe both accept.

use crate::cluster::{istioctl, kubectl, meshvm, output};

fn workload_group(probe: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: WorkloadGroup\nmetadata:\n  name: api\n  \
         namespace: default\nspec:\n  metadata:\n    labels: {{app: api}}\n  template:\n    \
         ports: {{grpc: 9090}}\n    serviceAccount: default\n  probe:\n    {probe}\n"
    )
}

#[test]
fn istiod_refuses_the_grpc_probe_that_the_crd_accepts_and_so_does_meshvm() {
    let dir = tempfile::tempdir().unwrap();
    for (probe, istiod_accepts) in [
        ("grpc: {port: 9090, service: shop.Api}", false),
        ("tcpSocket: {port: 9090}", true),
    ] {
        let file = dir.path().join("wg.yaml");
        std::fs::write(&file, workload_group(probe)).unwrap();
        let api = output(
            kubectl()
                .args(["apply", "--server-side", "--dry-run=server", "-f"])
                .arg(&file),
        );
        assert!(
            api.status.success(),
            "{probe}: the CRD accepts it: {}",
            String::from_utf8_lossy(&api.stderr)
        );
        let v = output(istioctl().args(["validate", "-f"]).arg(&file));
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&v.stdout),
            String::from_utf8_lossy(&v.stderr)
        );
        assert_eq!(v.status.success(), istiod_accepts, "{probe}: {said}");
        if !istiod_accepts {
            assert!(said.contains("unknown health check method"), "{said}");
        }
    }
    let fleet = testkit::fixture("invalid/probe-grpc.yaml");
    let m = output(meshvm().args(["validate", "-f"]).arg(&fleet));
    let said = String::from_utf8_lossy(&m.stderr);
    assert_eq!(m.status.code(), Some(1), "{said}");
    assert!(
        said.contains("istiod does not accept a grpc probe yet"),
        "{said}"
    );
}
