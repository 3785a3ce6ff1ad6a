//! Mesh level: `install/` (for istioctl) and `mesh/` (namespaces, service accounts, the
//! east-west gateway's istiod exposure and cross-network gateway).

use std::collections::{BTreeMap, BTreeSet};

use super::Rendered;
use crate::k8s::istio::NETWORKING_V1;
use crate::k8s::istio::{
    Destination, Gateway, GatewayPort, GatewaySpec, PortSelector, RouteDestination, Server,
    ServerTls, TlsMatch, TlsRoute, VirtualService, VirtualServiceSpec,
};
use crate::k8s::istio_operator::{
    Components, DefaultConfig, EnvVar, GatewayComponent, GlobalValues, IstioOperator,
    IstioOperatorSpec, K8sSpec, MeshConfig, MultiCluster, PilotValues, ServicePort, ServiceSpec,
    Values,
};
use crate::k8s::{self, ObjectMeta, istio_operator};
use crate::render::layout::{
    self, EAST_WEST_DIR, INSTALL_DIR, MESH_DIR, NAMESPACE_FILE, NAMESPACES_DIR,
};
use crate::render::objects::managed_labels;
use crate::spec::{Engine, Fleet, Mesh};

/// The label that puts a namespace's (or a gateway's) workloads on a network.
pub const NETWORK_LABEL: &str = "topology.istio.io/network";
/// The labels of the east-west gateway's pods, as Istio's samples name them.
const EAST_WEST_SELECTOR: (&str, &str) = ("istio", "eastwestgateway");
const EAST_WEST_NAME: &str = "istio-eastwestgateway";

/// Keep a Namespace when it leaves the tree or its Application is deleted: deleting a
/// namespace deletes everything in it, meshvm's or not.
const ARGOCD_KEEP: (&str, &str) = (
    "argocd.argoproj.io/sync-options",
    "Prune=false,Delete=false",
);
const FLUX_KEEP: (&str, &str) = ("kustomize.toolkit.fluxcd.io/prune", "disabled");

pub(super) fn mesh(fleet: &Fleet) -> Rendered {
    let mut out = Rendered::default();
    let m = &fleet.mesh;
    out.object(
        format!("{INSTALL_DIR}/{}", layout::ISTIO_INSTALL_FILE),
        &control_plane(m),
    );
    out.object(
        format!("{INSTALL_DIR}/{}", layout::EAST_WEST_INSTALL_FILE),
        &east_west_gateway(m, fleet),
    );

    let east_west = format!("{MESH_DIR}/{EAST_WEST_DIR}");
    let mut resources = vec![
        layout::ISTIOD_GATEWAY_FILE,
        layout::ISTIOD_VIRTUAL_SERVICE_FILE,
    ];
    out.object(
        format!("{east_west}/{}", layout::ISTIOD_GATEWAY_FILE),
        &istiod_gateway(m),
    );
    out.object(
        format!("{east_west}/{}", layout::ISTIOD_VIRTUAL_SERVICE_FILE),
        &istiod_virtual_service(m),
    );
    if m.is_multi_network() {
        out.object(
            format!("{east_west}/{}", layout::CROSS_NETWORK_GATEWAY_FILE),
            &cross_network_gateway(m),
        );
        resources.push(layout::CROSS_NETWORK_GATEWAY_FILE);
    }
    out.kustomization(&east_west, resources);

    // Namespace → service accounts used there. The Istio namespace is here only to carry the
    // network label; `default` service accounts exist in every namespace already.
    let mut namespaces: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    if m.is_multi_network() {
        namespaces.entry(&m.istio_namespace).or_default();
    }
    for w in &fleet.workloads {
        let accounts = namespaces.entry(&w.namespace).or_default();
        if w.service_account != "default" {
            accounts.insert(&w.service_account);
        }
    }
    // The join broker's namespace and ServiceAccount (its other objects: join-broker/).
    let broker = super::broker::join_broker(fleet);
    let has_broker = !broker.objects.is_empty();
    if has_broker {
        namespaces
            .entry(&fleet.join_broker.namespace)
            .or_default()
            .insert(super::broker::NAME);
    }
    out.merge(broker);
    for (ns, accounts) in &namespaces {
        let dir = format!("{MESH_DIR}/{NAMESPACES_DIR}/{ns}");
        out.object(format!("{dir}/{NAMESPACE_FILE}"), &namespace(fleet, ns));
        let mut resources = vec![NAMESPACE_FILE.to_owned()];
        for sa in accounts {
            let file = format!("serviceaccount-{sa}.yaml");
            let mut meta = ObjectMeta::named(sa, Some(ns));
            meta.labels = managed_labels(&BTreeMap::new());
            out.object(format!("{dir}/{file}"), &k8s::service_account(meta));
            resources.push(file);
        }
        out.kustomization(&dir, resources);
    }
    out.kustomization(
        MESH_DIR,
        std::iter::once(EAST_WEST_DIR.to_owned())
            .chain(has_broker.then(|| layout::JOIN_BROKER_DIR.to_owned()))
            .chain(namespaces.keys().map(|ns| format!("{NAMESPACES_DIR}/{ns}"))),
    );
    out
}

fn namespace(fleet: &Fleet, ns: &str) -> k8s::Namespace {
    let m = &fleet.mesh;
    let mut meta = ObjectMeta::named(ns, None);
    meta.labels = managed_labels(&BTreeMap::new());
    if ns == m.istio_namespace && m.is_multi_network() {
        meta.labels
            .insert(NETWORK_LABEL.to_owned(), m.network.clone());
    }
    for engine in &fleet.gitops.engines {
        let (key, value) = match engine {
            Engine::Argocd => ARGOCD_KEEP,
            Engine::Flux => FLUX_KEEP,
        };
        meta.annotations.insert(key.to_owned(), value.to_owned());
    }
    k8s::namespace(meta)
}

fn meta_in(m: &Mesh, name: &str) -> ObjectMeta {
    let mut meta = ObjectMeta::named(name, Some(&m.istio_namespace));
    meta.labels = managed_labels(&BTreeMap::new());
    meta
}

fn global_values(m: &Mesh) -> GlobalValues {
    GlobalValues {
        istio_namespace: Some(m.istio_namespace.clone()),
        mesh_id: Some(m.mesh_id.clone()),
        multi_cluster: Some(MultiCluster {
            cluster_name: m.cluster_id.clone(),
        }),
        network: m.is_multi_network().then(|| m.network.clone()),
    }
}

/// The control plane's install file: mesh identity, trust domain, mesh-wide proxy metadata,
/// and istiod's VM features (auto-registration, health checks) switched on explicitly.
fn control_plane(m: &Mesh) -> IstioOperator {
    let spec = IstioOperatorSpec {
        revision: m.revision().map(str::to_owned),
        mesh_config: Some(MeshConfig {
            trust_domain: Some(m.trust_domain.clone()),
            default_config: (!m.proxy_metadata.is_empty()).then(|| DefaultConfig {
                proxy_metadata: m.proxy_metadata.clone(),
            }),
        }),
        values: Some(Values {
            global: Some(global_values(m)),
            pilot: Some(PilotValues {
                env: [
                    ("PILOT_ENABLE_WORKLOAD_ENTRY_AUTOREGISTRATION", "true"),
                    ("PILOT_ENABLE_WORKLOAD_ENTRY_HEALTHCHECKS", "true"),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            }),
        }),
        ..IstioOperatorSpec::default()
    };
    IstioOperator::new(
        istio_operator::API_VERSION,
        istio_operator::KIND,
        meta_in(m, "control-plane"),
        spec,
    )
}

/// The east-west gateway's install file, as Istio's `gen-eastwest-gateway.sh` makes it: the
/// status, mTLS, istiod and webhook ports; on a network of its own, the network label and
/// the requested network view; and the join broker's port when the fleet has one.
fn east_west_gateway(m: &Mesh, fleet: &Fleet) -> IstioOperator {
    let mut label: BTreeMap<String, String> = [
        (EAST_WEST_SELECTOR.0, EAST_WEST_SELECTOR.1),
        ("app", EAST_WEST_NAME),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let mut env = vec![EnvVar {
        // sni-dnat adds the clusters AUTO_PASSTHROUGH needs.
        name: "ISTIO_META_ROUTER_MODE".to_owned(),
        value: "sni-dnat".to_owned(),
    }];
    if m.is_multi_network() {
        label.insert(NETWORK_LABEL.to_owned(), m.network.clone());
        env.push(EnvVar {
            name: "ISTIO_META_REQUESTED_NETWORK_VIEW".to_owned(),
            value: m.network.clone(),
        });
    }
    let broker_port = fleet
        .uses_join_broker()
        .then_some(("tls-meshvm-join", fleet.join_broker.port));
    let ports = [
        ("status-port", 15021),
        ("tls", 15443),
        ("tcp-istiod", 15012),
        ("tcp-webhook", 15017),
    ]
    .into_iter()
    .chain(broker_port)
    .map(|(name, port)| ServicePort {
        name: name.to_owned(),
        port,
        target_port: port,
    })
    .collect();
    let spec = IstioOperatorSpec {
        profile: Some("empty".to_owned()),
        revision: m.revision().map(str::to_owned),
        components: Some(Components {
            ingress_gateways: vec![GatewayComponent {
                name: EAST_WEST_NAME.to_owned(),
                namespace: Some(m.istio_namespace.clone()),
                enabled: true,
                label,
                k8s: Some(K8sSpec {
                    env,
                    service: Some(ServiceSpec { ports }),
                }),
            }],
        }),
        values: Some(Values {
            global: Some(global_values(m)),
            pilot: None,
        }),
        ..IstioOperatorSpec::default()
    };
    IstioOperator::new(
        istio_operator::API_VERSION,
        istio_operator::KIND,
        meta_in(m, "eastwest"),
        spec,
    )
}

pub(super) fn east_west_selector() -> BTreeMap<String, String> {
    BTreeMap::from([(
        EAST_WEST_SELECTOR.0.to_owned(),
        EAST_WEST_SELECTOR.1.to_owned(),
    )])
}

fn passthrough(number: u32, name: &str, mode: &str, host: &str) -> Server {
    Server {
        port: GatewayPort {
            number,
            name: name.to_owned(),
            protocol: "TLS".to_owned(),
        },
        hosts: vec![host.to_owned()],
        tls: Some(ServerTls {
            mode: mode.to_owned(),
        }),
    }
}

/// istiod's discovery (15012) and webhook (15017) ports on the east-west gateway, passed
/// through to istiod untouched.
fn istiod_gateway(m: &Mesh) -> Gateway {
    Gateway::new(
        NETWORKING_V1,
        "Gateway",
        meta_in(m, "istiod-gateway"),
        GatewaySpec {
            selector: east_west_selector(),
            servers: vec![
                passthrough(15012, "tls-istiod", "PASSTHROUGH", "*"),
                passthrough(15017, "tls-istiodwebhook", "PASSTHROUGH", "*"),
            ],
        },
    )
}

/// Routes the passed-through istiod ports to istiod, or with a revision to `istiod-<rev>`
/// (by SNI, so that several revisions can share the gateway).
fn istiod_virtual_service(m: &Mesh) -> VirtualService {
    let service = m.istiod_service();
    let fqdn = format!("{service}.{}.svc.cluster.local", m.istio_namespace);
    let (name, sni_hosts) = match m.revision() {
        Some(rev) => (
            format!("istiod-vs-{rev}"),
            vec![m.istiod_host(), fqdn.clone()],
        ),
        None => ("istiod-vs".to_owned(), vec!["*".to_owned()]),
    };
    let route = |port: u32, target: u32| TlsRoute {
        matches: vec![TlsMatch {
            port: Some(port),
            sni_hosts: sni_hosts.clone(),
        }],
        route: vec![RouteDestination {
            destination: Destination {
                host: fqdn.clone(),
                port: Some(PortSelector { number: target }),
            },
        }],
    };
    VirtualService::new(
        NETWORKING_V1,
        "VirtualService",
        meta_in(m, &name),
        VirtualServiceSpec {
            hosts: vec!["*".to_owned()],
            gateways: vec!["istiod-gateway".to_owned()],
            // istiod's webhook listens on 443 behind the gateway's 15017.
            tls: vec![route(15012, 15012), route(15017, 443)],
        },
    )
}

/// Exposes the mesh's services to other networks on 15443 (mTLS, routed by SNI).
fn cross_network_gateway(m: &Mesh) -> Gateway {
    Gateway::new(
        NETWORKING_V1,
        "Gateway",
        meta_in(m, "cross-network-gateway"),
        GatewaySpec {
            selector: east_west_selector(),
            servers: vec![passthrough(15443, "tls", "AUTO_PASSTHROUGH", "*.local")],
        },
    )
}
