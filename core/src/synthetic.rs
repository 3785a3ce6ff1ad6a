//! Synthetic fleets of any size, for benchmarks and scale tests. Deterministic: the same size
//! gives the same fleet. Shaped like real fleets: about 50 VMs a group, 10 groups a namespace,
//! most groups with a service, some with a probe, one in eight auto-registering.

use std::collections::BTreeMap;

use crate::spec::{
    API_VERSION, CheckedFleet, EastWestGateway, Fleet, Gitops, HttpGet, Instance, KIND, Mesh,
    Probe, Resolution, Service, ServicePort, Sidecar, Workload,
};

const VMS_PER_GROUP: usize = 50;
const GROUPS_PER_NAMESPACE: usize = 10;

/// A fleet of `vms` VMs, checked by the public loader: what a fleet file of
/// [`fleet`] loads as.
pub fn checked(vms: usize) -> CheckedFleet {
    let yaml = crate::k8s::yaml::to_string(&fleet(vms));
    crate::spec::load_fleet_str(&yaml, "synthetic.yaml".as_ref())
        .expect("synthetic fleets are valid")
}

/// A valid fleet of `vms` VMs, as data (to write as a fleet file, or change first).
pub fn fleet(vms: usize) -> Fleet {
    let groups = vms.div_ceil(VMS_PER_GROUP);
    let workloads = (0..groups)
        .map(|g| {
            let first = g * VMS_PER_GROUP;
            let last = (first + VMS_PER_GROUP).min(vms);
            workload(g, first..last)
        })
        .collect();
    Fleet {
        api_version: API_VERSION.to_owned(),
        kind: KIND.to_owned(),
        mesh: Mesh {
            mesh_id: "mesh1".into(),
            cluster_id: "cluster1".into(),
            network: "net1".into(),
            trust_domain: "cluster.local".into(),
            istio_namespace: "istio-system".into(),
            revision: String::new(),
            east_west_gateway: EastWestGateway {
                address: "203.0.113.10".into(),
            },
            root_cert: None,
            proxy_metadata: BTreeMap::new(),
            dns_capture: true,
        },
        sidecar: Sidecar {
            version: "1.28.0".into(),
            package: Default::default(),
            arch: Default::default(),
            sha256: Some("ab".repeat(32)),
            url: None,
        },
        gitops: Gitops {
            path: "clusters/cluster1".into(),
            repo_url: Some("https://git.example.com/mesh.git".into()),
            ..Gitops::default()
        },
        workloads,
        join_broker: Default::default(),
    }
}

/// The small change of one sync of a long-lived fleet: `changed` VMs get the label
/// `rollout: r<round>`, a different slice of the fleet each round (wrapping around).
pub fn relabel(fleet: &mut Fleet, round: usize, changed: usize) {
    let instances: Vec<_> = fleet
        .workloads
        .iter_mut()
        .flat_map(|w| w.instances.iter_mut())
        .collect();
    let n = instances.len();
    for (i, vm) in instances.into_iter().enumerate() {
        if (i + n - (round * changed) % n) % n < changed {
            vm.labels.insert("rollout".into(), format!("r{round}"));
        }
    }
}

fn workload(g: usize, vms: std::ops::Range<usize>) -> Workload {
    let name = format!("app-{g:05}");
    let namespace = format!("team-{:04}", g / GROUPS_PER_NAMESPACE);
    let labels = BTreeMap::from([
        ("app".to_owned(), name.clone()),
        ("version".to_owned(), "v1".to_owned()),
    ]);
    let service = (g % 4 != 3).then(|| Service {
        name: None,
        hosts: vec![format!("{name}.{namespace}.svc.cluster.local")],
        addresses: Vec::new(),
        ports: vec![ServicePort {
            number: 8080,
            name: "http".into(),
            protocol: Some("HTTP".into()),
            target_port: Some(8080),
        }],
        resolution: Resolution::Static,
    });
    let probe = (g % 2 == 0).then(|| Probe {
        http_get: Some(HttpGet {
            port: 8080,
            path: Some("/healthz".into()),
            host: None,
            scheme: None,
        }),
        tcp_socket: None,
        exec: None,
        grpc: None,
        initial_delay_seconds: None,
        timeout_seconds: None,
        period_seconds: Some(10),
        success_threshold: None,
        failure_threshold: None,
    });
    Workload {
        name: name.clone(),
        namespace,
        service_account: name.clone(),
        network: "vm-net".into(),
        labels,
        annotations: BTreeMap::new(),
        ports: BTreeMap::from([("http".to_owned(), 8080), ("metrics".to_owned(), 9090)]),
        probe,
        auto_register: g % 8 == 5,
        locality: Some(format!("region-{}/zone-{}", g % 3, g % 7)),
        weight: None,
        proxy_metadata: BTreeMap::new(),
        service,
        instances: vms
            .map(|i| Instance {
                name: format!("{name}-vm-{i:06}"),
                address: format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255),
                external: false,
                labels: BTreeMap::new(),
                locality: None,
                weight: None,
            })
            .collect(),
        join: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn synthetic_fleets_are_valid_and_deterministic() {
        let fleet = super::fleet(1234);
        assert_eq!(fleet.vms().count(), 1234);
        assert_eq!(*super::checked(1234), fleet);
        assert_eq!(super::fleet(1234), fleet);
    }

    /// The loader's limits (file size, nodes after aliases) leave room for the largest fleets
    /// meshvm is built for: each node is counted once, however deep it sits.
    #[test]
    fn a_fleet_of_50_000_vms_loads() {
        let fleet = super::fleet(50_000);
        let yaml = crate::k8s::yaml::to_string(&fleet);
        let parsed = crate::spec::load_fleet_str(&yaml, "synthetic.yaml".as_ref()).unwrap();
        assert_eq!(parsed.vms().count(), 50_000);
    }
}
