//! `mesh/join-broker/`: the join broker (`meshvm join-server`) in the cluster, rendered when a
//! group of the fleet joins through it (docs/join.md). Its Deployment (≥ 2 replicas, non-root,
//! read-only root file system, probes on `/healthz`), PodDisruptionBudget and Service; the
//! join policy as a ConfigMap (the broker re-reads it when the kubelet updates the file); one
//! Role and RoleBinding per namespace of broker-joined groups that lets it create tokens of
//! exactly those groups' ServiceAccounts; and its exposure on the east-west gateway, a TLS
//! passthrough port routed by SNI, as istiod's 15012. Its Namespace and ServiceAccount are
//! rendered with the others, under `mesh/namespaces/`. The serving certificate is a Secret
//! that never enters the tree (cert-manager's, or made by hand).

use std::collections::{BTreeMap, BTreeSet};

use super::Rendered;
use crate::join::Policy;
use crate::k8s::ObjectMeta;
use crate::k8s::apps::{
    self, Capabilities, ConfigMapVolume, Container, ContainerPort, ContainerSecurityContext,
    DeploymentSpec, HttpGetAction, LabelSelector, PodDisruptionBudgetSpec, PodSecurityContext,
    PodSpec, PodTemplate, Probe, Resources, SeccompProfile, SecretVolume, TemplateMeta,
    TopologySpreadConstraint, Volume, VolumeMount,
};
use crate::k8s::istio::{
    Destination, Gateway, GatewayPort, GatewaySpec, NETWORKING_V1, PortSelector, RouteDestination,
    Server, ServerTls, TlsMatch, TlsRoute, VirtualService, VirtualServiceSpec,
};
use crate::k8s::rbac::{self, PolicyRule};
use crate::k8s::v1::{self, ServicePort, ServiceSpec};
use crate::render::layout::{JOIN_BROKER_DIR, MESH_DIR};
use crate::render::objects::managed_labels;
use crate::spec::{Fleet, JoinBroker, JoinMethod};

pub const NAME: &str = JoinBroker::NAME;
/// The ConfigMap of the join policy, and its one key.
pub const POLICY_CONFIG_MAP: &str = "meshvm-join-policy";
pub const POLICY_KEY: &str = "policy.json";
/// The ConfigMap the operator fills with the clouds' public keys (`aws.json`, `gcp.json`),
/// needed when a group joins by `aws` or `gcp`.
pub const TRUST_CONFIG_MAP: &str = "meshvm-join-trust";
/// The Secret of the join-token book (`join-token` groups), in the broker's namespace.
pub const TOKENS_SECRET: &str = "meshvm-join-tokens";
/// The port the broker listens on in its pod, and its Service's port.
pub const CONTAINER_PORT: u32 = 8443;
pub const SERVICE_PORT: u32 = 443;
const CONFIG_DIR: &str = "/etc/meshvm-join";
/// The broker's pods run as this user (no root; any non-zero id the image allows).
const RUN_AS: u32 = 65532;

pub const DEPLOYMENT_FILE: &str = "deployment.yaml";
pub const SERVICE_FILE: &str = "service.yaml";
pub const PDB_FILE: &str = "poddisruptionbudget.yaml";
pub const POLICY_FILE: &str = "configmap-policy.yaml";
pub const GATEWAY_FILE: &str = "gateway.yaml";
pub const VIRTUAL_SERVICE_FILE: &str = "virtualservice.yaml";

/// The Role and RoleBinding files of one namespace.
pub fn rbac_files(namespace: &str) -> (String, String) {
    (
        format!("role-{namespace}.yaml"),
        format!("rolebinding-{namespace}.yaml"),
    )
}

/// The policy the broker reads, as the ConfigMap holds it: pretty JSON, so that a change
/// of who may join reads well in review.
pub fn policy_json(fleet: &Fleet) -> String {
    let mut text =
        serde_json::to_string_pretty(&Policy::from_fleet(fleet)).expect("a policy is JSON");
    text.push('\n');
    text
}

/// The broker's objects; nothing when no group joins through it.
pub(super) fn join_broker(fleet: &Fleet) -> Rendered {
    let mut out = Rendered::default();
    if !fleet.uses_join_broker() {
        return out;
    }
    let b = &fleet.join_broker;
    let dir = format!("{MESH_DIR}/{JOIN_BROKER_DIR}");
    let mut resources = Vec::new();
    macro_rules! add {
        ($out:expr, $file:expr, $object:expr $(,)?) => {{
            let file: String = $file;
            $out.object(format!("{dir}/{file}"), $object);
            resources.push(file);
        }};
    }
    let meta = |name: &str, ns: &str| {
        let mut meta = ObjectMeta::named(name, Some(ns));
        meta.labels = managed_labels(&BTreeMap::new());
        meta
    };
    add!(
        &mut out,
        DEPLOYMENT_FILE.into(),
        &apps::deployment(meta(NAME, &b.namespace), deployment(fleet)),
    );
    add!(
        &mut out,
        PDB_FILE.into(),
        &apps::pod_disruption_budget(
            meta(NAME, &b.namespace),
            PodDisruptionBudgetSpec {
                min_available: 1,
                selector: selector(),
            },
        ),
    );
    add!(
        &mut out,
        SERVICE_FILE.into(),
        &v1::service(
            meta(NAME, &b.namespace),
            ServiceSpec {
                selector: pod_labels(),
                ports: vec![ServicePort {
                    name: "https".into(),
                    port: SERVICE_PORT,
                    target_port: "https".into(),
                    app_protocol: Some("tls".into()),
                }],
            },
        ),
    );
    add!(
        &mut out,
        POLICY_FILE.into(),
        &v1::config_map(
            meta(POLICY_CONFIG_MAP, &b.namespace),
            BTreeMap::from([(POLICY_KEY.to_owned(), policy_json(fleet))]),
        ),
    );
    // Least privilege: in each namespace, `create` on the token subresource of exactly the
    // ServiceAccounts of that namespace's broker-joined groups.
    let mut accounts: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for w in fleet.workloads.iter().filter(|w| w.join.uses_broker()) {
        accounts
            .entry(&w.namespace)
            .or_default()
            .insert(&w.service_account);
    }
    for (ns, names) in &accounts {
        let (role_file, binding_file) = rbac_files(ns);
        add!(
            &mut out,
            role_file,
            &rbac::role(
                meta(NAME, ns),
                vec![PolicyRule {
                    api_groups: vec![String::new()],
                    resources: vec!["serviceaccounts/token".into()],
                    resource_names: names.iter().map(|n| (*n).to_owned()).collect(),
                    verbs: vec!["create".into()],
                }],
            ),
        );
        add!(
            &mut out,
            binding_file,
            &rbac::role_binding_to_service_account(meta(NAME, ns), NAME, &b.namespace,),
        );
    }
    // join-token groups: read and replace (never create, list or watch) the one Secret of
    // the join-token book, in the broker's own namespace.
    if uses(fleet, JoinMethod::JoinToken) {
        add!(
            &mut out,
            "join-tokens-role.yaml".to_owned(),
            &rbac::role(
                meta(&format!("{NAME}-tokens"), &b.namespace),
                vec![PolicyRule {
                    api_groups: vec![String::new()],
                    resources: vec!["secrets".into()],
                    resource_names: vec![TOKENS_SECRET.into()],
                    verbs: vec!["get".into(), "update".into()],
                }],
            ),
        );
        add!(
            &mut out,
            "join-tokens-rolebinding.yaml".to_owned(),
            &rbac::role_binding_to_service_account(
                meta(&format!("{NAME}-tokens"), &b.namespace),
                NAME,
                &b.namespace,
            ),
        );
    }
    let istio_ns = &fleet.mesh.istio_namespace;
    add!(
        &mut out,
        GATEWAY_FILE.into(),
        &gateway(b, meta(NAME, istio_ns)),
    );
    add!(
        &mut out,
        VIRTUAL_SERVICE_FILE.into(),
        &virtual_service(b, meta(NAME, istio_ns)),
    );
    resources.sort();
    out.kustomization(&dir, resources);
    out
}

fn pod_labels() -> BTreeMap<String, String> {
    BTreeMap::from([("app.kubernetes.io/name".to_owned(), NAME.to_owned())])
}

fn selector() -> LabelSelector {
    LabelSelector {
        match_labels: pod_labels(),
    }
}

/// The broker's command line in its pod: the files it reads are mounted under
/// /etc/meshvm-join; the clouds' keys only when a group needs them.
pub fn args(fleet: &Fleet) -> Vec<String> {
    let b = &fleet.join_broker;
    let mut args: Vec<String> = [
        "join-server".to_owned(),
        "--listen".to_owned(),
        format!("0.0.0.0:{CONTAINER_PORT}"),
        "--tls-cert".to_owned(),
        format!("{CONFIG_DIR}/tls/tls.crt"),
        "--tls-key".to_owned(),
        format!("{CONFIG_DIR}/tls/tls.key"),
        "--policy".to_owned(),
        format!("{CONFIG_DIR}/policy/{POLICY_KEY}"),
    ]
    .into();
    if uses(fleet, JoinMethod::JoinToken) {
        args.extend([
            "--join-tokens-secret".to_owned(),
            format!("{}/{TOKENS_SECRET}", b.namespace),
        ]);
    }
    if uses(fleet, JoinMethod::Aws) {
        args.extend([
            "--aws-certs".to_owned(),
            format!("{CONFIG_DIR}/trust/aws.json"),
        ]);
    }
    if uses(fleet, JoinMethod::Gcp) {
        args.extend([
            "--gcp-certs".to_owned(),
            format!("{CONFIG_DIR}/trust/gcp.json"),
            "--gcp-audience".to_owned(),
            url(b),
        ]);
    }
    if uses(fleet, JoinMethod::Azure) {
        args.extend([
            "--azure-roots".to_owned(),
            format!("{CONFIG_DIR}/trust/azure-roots.pem"),
            "--azure-intermediates".to_owned(),
            format!("{CONFIG_DIR}/trust/azure-intermediates.pem"),
        ]);
    }
    args
}

/// The URL the VMs call: the broker's host name at the east-west gateway's port.
pub fn url(b: &JoinBroker) -> String {
    format!("https://{}:{}/v1/join", b.host(), b.port)
}

fn uses(fleet: &Fleet, method: JoinMethod) -> bool {
    fleet.workloads.iter().any(|w| w.join.method == method)
}

fn deployment(fleet: &Fleet) -> DeploymentSpec {
    let b = &fleet.join_broker;
    let probe = |failure_threshold| Probe {
        http_get: HttpGetAction {
            path: "/healthz".into(),
            port: "https".into(),
            scheme: "HTTPS".into(),
        },
        period_seconds: 10,
        failure_threshold,
    };
    let mount = |name: &str, dir: &str| VolumeMount {
        name: name.into(),
        mount_path: format!("{CONFIG_DIR}/{dir}"),
        read_only: true,
    };
    let mut mounts = vec![mount("tls", "tls"), mount("policy", "policy")];
    let mut volumes = vec![
        Volume {
            name: "tls".into(),
            secret: Some(SecretVolume {
                secret_name: b.tls_secret.clone(),
                default_mode: 0o440,
            }),
            config_map: None,
        },
        Volume {
            name: "policy".into(),
            secret: None,
            config_map: Some(ConfigMapVolume {
                name: POLICY_CONFIG_MAP.into(),
                optional: false,
            }),
        },
    ];
    if [JoinMethod::Aws, JoinMethod::Gcp, JoinMethod::Azure]
        .into_iter()
        .any(|m| uses(fleet, m))
    {
        mounts.push(mount("trust", "trust"));
        volumes.push(Volume {
            name: "trust".into(),
            secret: None,
            config_map: Some(ConfigMapVolume {
                name: TRUST_CONFIG_MAP.into(),
                optional: false,
            }),
        });
    }
    let mut labels = pod_labels();
    // The broker terminates its own TLS behind a passthrough port: no sidecar in its way.
    labels.insert("sidecar.istio.io/inject".into(), "false".into());
    DeploymentSpec {
        replicas: b.replicas,
        selector: selector(),
        template: PodTemplate {
            metadata: TemplateMeta {
                labels,
                annotations: BTreeMap::new(),
            },
            spec: PodSpec {
                service_account_name: NAME.into(),
                security_context: PodSecurityContext {
                    run_as_non_root: true,
                    run_as_user: RUN_AS,
                    run_as_group: RUN_AS,
                    fs_group: RUN_AS,
                    seccomp_profile: SeccompProfile {
                        kind: "RuntimeDefault".into(),
                    },
                },
                containers: vec![Container {
                    name: "join-server".into(),
                    image: b.image(),
                    args: args(fleet),
                    ports: vec![ContainerPort {
                        name: "https".into(),
                        container_port: CONTAINER_PORT,
                    }],
                    readiness_probe: probe(1),
                    liveness_probe: probe(3),
                    resources: Resources {
                        requests: BTreeMap::from([
                            ("cpu".to_owned(), "50m".to_owned()),
                            ("memory".to_owned(), "64Mi".to_owned()),
                        ]),
                        limits: BTreeMap::from([("memory".to_owned(), "256Mi".to_owned())]),
                    },
                    security_context: ContainerSecurityContext {
                        allow_privilege_escalation: false,
                        read_only_root_filesystem: true,
                        capabilities: Capabilities {
                            drop: vec!["ALL".into()],
                        },
                    },
                    volume_mounts: mounts,
                }],
                // Spread the replicas over nodes when the cluster has several.
                topology_spread_constraints: vec![TopologySpreadConstraint {
                    max_skew: 1,
                    topology_key: "kubernetes.io/hostname".into(),
                    when_unsatisfiable: "ScheduleAnyway".into(),
                    label_selector: selector(),
                }],
                volumes,
            },
        },
    }
}

/// The broker's port on the east-west gateway: TLS passed through, by the broker's host name.
fn gateway(b: &JoinBroker, meta: ObjectMeta) -> Gateway {
    Gateway::new(
        NETWORKING_V1,
        "Gateway",
        meta,
        GatewaySpec {
            selector: super::mesh::east_west_selector(),
            servers: vec![Server {
                port: GatewayPort {
                    number: b.port,
                    name: "tls-meshvm-join".into(),
                    protocol: "TLS".into(),
                },
                hosts: vec![b.host()],
                tls: Some(ServerTls {
                    mode: "PASSTHROUGH".into(),
                }),
            }],
        },
    )
}

/// Routes the passed-through port to the broker's Service.
fn virtual_service(b: &JoinBroker, meta: ObjectMeta) -> VirtualService {
    VirtualService::new(
        NETWORKING_V1,
        "VirtualService",
        meta,
        VirtualServiceSpec {
            hosts: vec![b.host()],
            gateways: vec![NAME.into()],
            tls: vec![TlsRoute {
                matches: vec![TlsMatch {
                    port: Some(b.port),
                    sni_hosts: vec![b.host()],
                }],
                route: vec![RouteDestination {
                    destination: Destination {
                        host: format!("{NAME}.{}.svc.cluster.local", b.namespace),
                        port: Some(PortSelector {
                            number: SERVICE_PORT,
                        }),
                    },
                }],
            }],
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::load_fleet_str;

    fn fleet() -> crate::spec::CheckedFleet {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fixtures/join/meshvm.yaml"
        ))
        .unwrap();
        load_fleet_str(&text, "meshvm.yaml".as_ref()).unwrap()
    }

    /// The broker reads the ConfigMap's file as `--policy` (cli/src/broker: a `Policy` in
    /// JSON): what is rendered reads back as the fleet's policy.
    #[test]
    fn the_policy_config_map_reads_back_as_the_fleets_policy() {
        let fleet = fleet();
        let r = join_broker(&fleet);
        let file = r
            .files
            .get(&format!("{MESH_DIR}/{JOIN_BROKER_DIR}/{POLICY_FILE}"))
            .unwrap();
        let cm: v1::ConfigMap =
            serde_saphyr::from_str(std::str::from_utf8(&file.bytes).unwrap()).unwrap();
        let policy: Policy = serde_json::from_str(&cm.data[POLICY_KEY]).unwrap();
        assert_eq!(policy, Policy::from_fleet(&fleet));
        assert_eq!(
            policy.groups.len(),
            5,
            "every broker-joined group, no other"
        );
    }

    /// The Roles name exactly the policy's ServiceAccounts, in their namespaces: no other
    /// verb, resource or name.
    #[test]
    fn the_roles_grant_token_creation_for_exactly_the_policys_service_accounts() {
        let fleet = fleet();
        let r = join_broker(&fleet);
        let mut granted = BTreeSet::new();
        for (path, file) in r.files.iter() {
            if !path.contains("/role-") {
                continue;
            }
            let role: rbac::Role =
                serde_saphyr::from_str(std::str::from_utf8(&file.bytes).unwrap()).unwrap();
            assert_eq!(role.rules.len(), 1);
            let rule = &role.rules[0];
            assert_eq!(rule.verbs, ["create"]);
            assert_eq!(rule.resources, ["serviceaccounts/token"]);
            assert_eq!(rule.api_groups, [""]);
            let ns = role.metadata.namespace.clone().unwrap();
            granted.extend(rule.resource_names.iter().map(|n| (ns.clone(), n.clone())));
        }
        let policy = Policy::from_fleet(&fleet);
        let wanted: BTreeSet<(String, String)> = policy
            .service_accounts()
            .into_iter()
            .map(|(ns, sa)| (ns.to_owned(), sa.to_owned()))
            .collect();
        assert_eq!(granted, wanted);
    }

    #[test]
    fn nothing_is_rendered_without_a_broker_joined_group() {
        let mut fleet = fleet().fleet().clone();
        for w in &mut fleet.workloads {
            w.join = Default::default();
        }
        assert!(join_broker(&fleet).files.is_empty());
    }
}
