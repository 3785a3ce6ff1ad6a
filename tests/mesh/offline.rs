//! The offline mode, `meshvm workload entry configure`, against the real
//! `istioctl x workload entry configure` given the same inputs, over many variations: the
//! same five files, byte for byte (cluster.env, hosts, root-cert.pem, istio-token) or as data
//! (mesh.yaml).

use crate::cluster::{checked, ensure_namespaces, istioctl, meshvm, write_stream};
use crate::parity::{differences, istiod_root_cert, publish_root_cert, read, yaml};

/// One input of `istioctl x workload entry configure -f`, given to both programs.
struct Variation {
    name: &'static str,
    /// The WorkloadGroup's `spec`, YAML.
    spec: &'static str,
    /// The mesh config (`mesh` of the `istio[-<rev>]` ConfigMap).
    mesh: &'static str,
    flags: &'static [&'static str],
}

const VARIATIONS: &[Variation] = &[
    Variation {
        name: "plain",
        spec: "template: {serviceAccount: app, ports: {http: 8080}}\nmetadata: {labels: {app: plain}}",
        mesh: "trustDomain: cluster.local\ndefaultConfig: {discoveryAddress: istiod.NS.svc:15012}",
        flags: &["--internalIP", "10.0.0.1", "--ingressIP", "203.0.113.10"],
    },
    Variation {
        name: "revisioned",
        spec: "template: {serviceAccount: app, ports: {http: 8080}}\nmetadata: {labels: {app: rev}}",
        mesh: "trustDomain: example.org\ndefaultConfig: {discoveryAddress: istiod-1-30.NS.svc:15012, meshId: m1}",
        flags: &[
            "--revision",
            "1-30",
            "--internalIP",
            "10.0.0.2",
            "--ingressIP",
            "203.0.113.10",
        ],
    },
    Variation {
        name: "ipv6",
        spec: "template: {serviceAccount: app, ports: {http: 8080}}\nmetadata: {labels: {app: v6}}",
        mesh: "trustDomain: cluster.local\ndefaultConfig: {discoveryAddress: istiod.NS.svc:15012}",
        flags: &["--internalIP", "fd00:10::1", "--ingressIP", "fd00:10::2"],
    },
    Variation {
        name: "proxy-config-annotation",
        spec: "template: {serviceAccount: app, ports: {http: 8080}}\nmetadata:\n  labels: {app: pc}\n  annotations:\n    proxy.istio.io/config: |\n      statusPort: 15030\n      concurrency: 3\n      proxyMetadata: {LOG_LEVEL: debug, EXTRA: one}",
        mesh: "trustDomain: cluster.local\ndefaultConfig:\n  discoveryAddress: istiod.NS.svc:15012\n  proxyMetadata: {LOG_LEVEL: info, MESH_ONLY: x}",
        flags: &["--internalIP", "10.0.0.3", "--ingressIP", "203.0.113.10"],
    },
    Variation {
        name: "http-probe",
        spec: "template: {serviceAccount: app, ports: {http: 8080}}\nmetadata: {labels: {app: probe}}\nprobe: {httpGet: {port: 8080, path: /healthz}, initialDelaySeconds: 5, periodSeconds: 10}",
        mesh: "trustDomain: cluster.local\ndefaultConfig: {discoveryAddress: istiod.NS.svc:15012}",
        flags: &["--internalIP", "10.0.0.4", "--ingressIP", "203.0.113.10"],
    },
    Variation {
        name: "tcp-probe",
        spec: "template: {serviceAccount: app, ports: {tcp: 5432}}\nmetadata: {labels: {app: db}}\nprobe: {tcpSocket: {port: 5432}, failureThreshold: 3, timeoutSeconds: 2}",
        mesh: "trustDomain: cluster.local\ndefaultConfig: {discoveryAddress: istiod.NS.svc:15012}",
        flags: &["--internalIP", "10.0.0.5", "--ingressIP", "203.0.113.10"],
    },
    Variation {
        name: "one-port-of-many-names",
        spec: "template: {serviceAccount: app, ports: {grpc: 9090}, network: net2, locality: r1/z1}\nmetadata: {labels: {app: many, version: v2}}",
        mesh: "trustDomain: cluster.local\ndefaultConfig: {discoveryAddress: istiod.NS.svc:15012, meshId: mesh-x}",
        flags: &["--internalIP", "10.0.0.6", "--ingressIP", "203.0.113.10"],
    },
    Variation {
        name: "many-ports",
        spec: "template: {serviceAccount: app, ports: {http: 8080, grpc: 9090, admin: 7070, tcp-db: 5432}}\nmetadata: {labels: {app: ports}}",
        mesh: "trustDomain: cluster.local\ndefaultConfig: {discoveryAddress: istiod.NS.svc:15012}",
        flags: &["--internalIP", "10.0.0.12", "--ingressIP", "203.0.113.10"],
    },
    Variation {
        name: "exec-probe",
        spec: "template: {serviceAccount: app, ports: {http: 8080}}\nmetadata: {labels: {app: exec}}\nprobe: {exec: {command: [/bin/check, --quick]}, successThreshold: 1}",
        mesh: "trustDomain: cluster.local\ndefaultConfig: {discoveryAddress: istiod.NS.svc:15012}",
        flags: &["--internalIP", "10.0.0.13", "--ingressIP", "203.0.113.10"],
    },
    Variation {
        name: "grpc-probe",
        spec: "template: {serviceAccount: app, ports: {grpc: 9090}}\nmetadata: {labels: {app: grpc}}\nprobe: {grpc: {port: 9090, service: health}, periodSeconds: 7}",
        mesh: "trustDomain: cluster.local\ndefaultConfig: {discoveryAddress: istiod.NS.svc:15012}",
        flags: &["--internalIP", "10.0.0.14", "--ingressIP", "203.0.113.10"],
    },
    Variation {
        name: "ipv6-revisioned-canonical-labels",
        spec: "template: {serviceAccount: app, ports: {http: 8080}}\nmetadata:\n  labels:\n    app.kubernetes.io/name: shop\n    service.istio.io/canonical-revision: v3",
        mesh: "trustDomain: td.example\ndefaultConfig: {discoveryAddress: istiod-canary.NS.svc:15012, meshId: m6}",
        flags: &[
            "--revision",
            "canary",
            "--internalIP",
            "fd00:20::5",
            "--ingressIP",
            "fd00:20::1",
        ],
    },
    Variation {
        name: "autoregister",
        spec: "template: {serviceAccount: app, ports: {http: 8080}}\nmetadata: {labels: {app: auto}}",
        mesh: "trustDomain: cluster.local\ndefaultConfig: {discoveryAddress: istiod.NS.svc:15012}",
        flags: &[
            "--autoregister",
            "--internalIP",
            "10.0.0.7",
            "--ingressIP",
            "203.0.113.10",
        ],
    },
    Variation {
        name: "dns-capture-off",
        spec: "template: {serviceAccount: app, ports: {http: 8080}}\nmetadata: {labels: {app: nodns}}",
        mesh: "trustDomain: cluster.local\ndefaultConfig: {discoveryAddress: istiod.NS.svc:15012}",
        flags: &[
            "--capture-dns=false",
            "--internalIP",
            "10.0.0.8",
            "--ingressIP",
            "203.0.113.10",
        ],
    },
    Variation {
        name: "external-ip",
        spec: "template: {serviceAccount: app, ports: {http: 8080}}\nmetadata: {labels: {app: nat}}",
        mesh: "trustDomain: cluster.local\ndefaultConfig: {discoveryAddress: istiod.NS.svc:15012}",
        flags: &[
            "--externalIP",
            "198.51.100.9",
            "--ingressIP",
            "203.0.113.10",
        ],
    },
    Variation {
        name: "default-service-account-no-ports",
        spec: "template: {}\nmetadata: {labels: {app: bare}}",
        mesh: "trustDomain: cluster.local\ndefaultConfig: {discoveryAddress: istiod.NS.svc:15012}",
        flags: &["--internalIP", "10.0.0.10", "--ingressIP", "203.0.113.10"],
    },
    Variation {
        name: "cluster-id-and-nil-proxy-metadata",
        spec: "template: {serviceAccount: app, ports: {http: 8080}}\nmetadata: {labels: {app: cid}}",
        mesh: "trustDomain: cluster.local\ndefaultConfig: {discoveryAddress: istiod.NS.svc:15012, proxyMetadata: null}",
        flags: &[
            "--clusterID",
            "east-2",
            "--internalIP",
            "10.0.0.11",
            "--ingressIP",
            "203.0.113.10",
        ],
    },
];

#[test]
fn offline_mode_gives_istioctls_files() {
    let scratch = tempfile::tempdir().unwrap();
    // The root istiod keeps in every namespace's istio-ca-root-cert, which istioctl reads.
    let pem = istiod_root_cert();
    for (i, v) in VARIATIONS.iter().enumerate() {
        // Namespaces of its own, so that nothing in the shared harness leaks in.
        let ns = format!("offline-{i}");
        let istio_ns = format!("offline-{i}-istio");
        ensure_namespaces([ns.as_str(), istio_ns.as_str()]);
        let dir = scratch.path().join(v.name);
        std::fs::create_dir_all(&dir).unwrap();
        let group = dir.join("workloadgroup.yaml");
        let spec = v.spec.replace('\n', "\n  ");
        std::fs::write(
            &group,
            format!(
                "apiVersion: networking.istio.io/v1\nkind: WorkloadGroup\nmetadata:\n  name: {}\n  namespace: {ns}\nspec:\n  {spec}\n",
                v.name
            ),
        )
        .unwrap();
        let mesh = dir.join("mesh.yaml");
        std::fs::write(&mesh, v.mesh.replace("NS", &istio_ns)).unwrap();
        let revision = v
            .flags
            .iter()
            .position(|f| *f == "--revision")
            .map(|i| v.flags[i + 1]);
        let suffix = revision.map(|r| format!("-{r}")).unwrap_or_default();
        let sa = yaml(v.spec)["template"]["serviceAccount"]
            .as_str()
            .unwrap_or("default")
            .to_owned();
        let objects = [
            serde_json::json!({"apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": {"name": sa, "namespace": ns}}),
            serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": format!("istio{suffix}"), "namespace": istio_ns},
                "data": {"mesh": read(&mesh)}}),
            serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": format!("istio-sidecar-injector{suffix}"), "namespace": istio_ns},
                "data": {"values": r#"{"global":{"multiCluster":{"clusterName":"Kubernetes"}}}"#}}),
        ];
        let file = dir.join("objects.yaml");
        write_stream(&file, &objects);
        let out = crate::cluster::apply(&file, false);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        publish_root_cert(&ns, &pem, &dir);

        let theirs = dir.join("istioctl");
        checked(
            istioctl()
                .args(["-i", &istio_ns, "x", "workload", "entry", "configure", "-f"])
                .arg(&group)
                .arg("-o")
                .arg(&theirs)
                .args(v.flags),
        );
        let root = dir.join("root-cert.pem");
        std::fs::write(&root, &pem).unwrap();
        let mine = dir.join("meshvm");
        checked(
            meshvm()
                .args(["workload", "entry", "configure", "-i", &istio_ns, "-f"])
                .arg(&group)
                .arg("--mesh-config")
                .arg(&mesh)
                .arg("--root-cert")
                .arg(&root)
                .arg("--token-file")
                .arg(theirs.join("istio-token"))
                .arg("-o")
                .arg(&mine)
                .args(v.flags),
        );
        assert_eq!(
            differences(&mine, &theirs),
            [],
            "{}: meshvm workload entry configure vs istioctl",
            v.name
        );
    }
}
