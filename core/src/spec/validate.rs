//! Semantic checks of a fleet: what the API server, istiod or the VMs would reject, found
//! before anything is written. Pure: a fleet in, every problem out.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::{Fleet, Instance, Probe, Resolution, Service, Workload};
use crate::spec::istio_rules::{self, Protocol};
use crate::spec::names::{self, Check};
use crate::vmfiles;

/// One semantic problem, located by a JSON pointer into the fleet document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub pointer: String,
    pub message: String,
    pub hint: Option<String>,
    /// Point at the mapping key rather than its value.
    pub at_key: bool,
    /// A structural problem: the field that is missing from the object at `pointer`.
    pub missing: Option<String>,
    /// A structural problem: the field at `pointer` is not one the fleet has.
    pub unknown_field: bool,
}

impl Problem {
    pub fn new(pointer: &str, message: impl Into<String>) -> Problem {
        Problem {
            pointer: pointer.to_owned(),
            message: message.into(),
            hint: None,
            at_key: false,
            missing: None,
            unknown_field: false,
        }
    }
    pub fn hint(mut self, hint: impl Into<String>) -> Problem {
        self.hint = Some(hint.into());
        self
    }
    pub fn at_key(mut self) -> Problem {
        self.at_key = true;
        self
    }
}

/// Most labels of a WorkloadEntry (the CRD's `maxProperties`).
const MAX_LABELS: usize = 256;
/// Longest locality of a WorkloadEntry (the CRD's `maxLength`).
const MAX_LOCALITY: usize = 2048;

/// Every semantic problem of the fleet.
pub fn check(fleet: &Fleet) -> Vec<Problem> {
    // The VM files' check (as much work as all the others for 10,000 VMs) runs on a second
    // thread beside the fleet's own checks; what it finds counts only when they found nothing,
    // as if it ran after them. A scoped thread, not the rayon pool: the caller's thread keeps
    // its allocator arena (see `load`).
    let (mut problems, vm_files) = std::thread::scope(|s| {
        let vm_files = s.spawn(|| {
            let mut c = Checker::default();
            c.vm_files(fleet);
            c.problems
        });
        let mut c = Checker::default();
        c.fleet(fleet);
        let vm_files = vm_files
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (c.problems, vm_files)
    });
    if problems.is_empty() {
        problems = vm_files;
    }
    problems
}

/// The semantic problems of a fleet read with stand-ins for the values its file got wrong
/// (see `load`): the checks of the fleet itself, without the VM files' check, which would
/// report the stand-ins again at the group.
pub fn check_partial(fleet: &Fleet) -> Vec<Problem> {
    let mut c = Checker::default();
    c.fleet(fleet);
    c.problems
}

#[derive(Default)]
struct Checker {
    problems: Vec<Problem>,
}

impl Checker {
    /// Reports a failed syntax check of `value`; the path in the diagnostic names the field.
    /// Reports a failed syntax check of `value`; the path in the diagnostic names the field.
    fn report(&mut self, pointer: &str, value: &str, check: Check, hint: &str) {
        if let Err(reason) = check {
            self.problems
                .push(Problem::new(pointer, format!("{value:?} {reason}")).hint(hint));
        }
    }

    fn fleet(&mut self, f: &Fleet) {
        self.join_broker(&f.join_broker);
        if f.api_version != super::API_VERSION {
            self.problems.push(
                Problem::new(
                    "/apiVersion",
                    format!("apiVersion {:?} is not supported", f.api_version),
                )
                .hint(format!("write `apiVersion: {}`", super::API_VERSION)),
            );
        }
        if f.kind != super::KIND {
            self.problems.push(
                Problem::new("/kind", format!("kind {:?} is not a fleet", f.kind))
                    .hint(format!("write `kind: {}`", super::KIND)),
            );
        }
        self.mesh(f);
        self.sidecar(f);
        self.gitops(f);
        self.engine_settings(f);

        let mut groups: HashMap<(&str, &str), usize> = HashMap::new();
        let mut services: HashMap<(&str, &str), usize> = HashMap::new();
        // Where each VM name and address was first seen, as (group, instance) indexes: the
        // pointer is written only for a duplicate (10,000 VMs made 20,000 strings here).
        let n: usize = f.workloads.iter().map(|w| w.instances.len()).sum();
        let mut vms: HashMap<&str, (usize, usize)> = HashMap::with_capacity(n);
        let mut addresses: HashMap<(&str, &str), (usize, usize)> = HashMap::with_capacity(n);
        let instance_at = |wi: usize, ii: usize| format!("/workloads/{wi}/instances/{ii}");
        for (wi, w) in f.workloads.iter().enumerate() {
            let at = format!("/workloads/{wi}");
            self.workload(&at, w);
            if let Some(first) = groups.insert((&w.namespace, &w.name), wi) {
                self.problems.push(
                    Problem::new(&format!("{at}/name"), format!("workload {:?} is already defined in namespace {:?} (workloads[{first}])", w.name, w.namespace))
                        .hint("give each workload group of a namespace its own name"),
                );
            }
            if let Some(name) = w.service_name() {
                if let Some(first) = services.insert((&w.namespace, name), wi) {
                    self.problems.push(
                        Problem::new(&format!("{at}/service"), format!("service {name:?} is already defined in namespace {:?} (workloads[{first}])", w.namespace))
                            .hint("set `service.name` to tell the two ServiceEntries apart"),
                    );
                }
            }
            for (ii, vm) in w.instances.iter().enumerate() {
                if let Some((fw, fi)) = vms.insert(&vm.name, (wi, ii)) {
                    self.problems.push(
                        Problem::new(
                            &format!("{}/name", instance_at(wi, ii)),
                            format!(
                                "VM {:?} is already defined at {}",
                                vm.name,
                                super::load::display_path(&instance_at(fw, fi))
                            ),
                        )
                        .hint("VM names are unique across the fleet: meshvm addresses VMs by name"),
                    );
                }
                if let Some((fw, fi)) = addresses.insert((&w.network, &vm.address), (wi, ii)) {
                    let net = if w.network.is_empty() {
                        "the cluster's network".to_owned()
                    } else {
                        format!("network {:?}", w.network)
                    };
                    self.problems.push(
                        Problem::new(
                            &format!("{}/address", instance_at(wi, ii)),
                            format!(
                                "address {:?} in {net} is already used by {}",
                                vm.address,
                                super::load::display_path(&instance_at(fw, fi))
                            ),
                        )
                        .hint("two VMs of one network cannot share an address"),
                    );
                }
            }
        }
    }

    fn mesh(&mut self, f: &Fleet) {
        let m = &f.mesh;
        self.non_empty("/mesh/meshID", "meshID", &m.mesh_id);
        self.report(
            "/mesh/meshID",
            &m.mesh_id,
            names::label_value(&m.mesh_id),
            "the mesh ID is a label value, such as `mesh1`",
        );
        self.non_empty("/mesh/clusterID", "clusterID", &m.cluster_id);
        self.report(
            "/mesh/clusterID",
            &m.cluster_id,
            names::label_value(&m.cluster_id),
            "use the cluster name istiod was installed with, such as `cluster1`",
        );
        self.report(
            "/mesh/network",
            &m.network,
            names::label_value(&m.network),
            "a network name is a label value, such as `net1`",
        );
        self.report(
            "/mesh/trustDomain",
            &m.trust_domain,
            names::dns1123_subdomain(&m.trust_domain),
            "the default is `cluster.local`",
        );
        self.report(
            "/mesh/istioNamespace",
            &m.istio_namespace,
            names::dns1123_label(&m.istio_namespace),
            "the default is `istio-system`",
        );
        if let Some(rev) = m.revision() {
            self.report(
                "/mesh/revision",
                rev,
                names::dns1123_label(rev),
                "a revision looks like `1-28`",
            );
        }
        self.report(
            "/mesh/eastWestGateway/address",
            &m.east_west_gateway.address,
            names::ip(&m.east_west_gateway.address),
            "give the IP address the VMs reach the east-west gateway at",
        );
        if let Some(path) = &m.root_cert {
            if path.is_empty() {
                self.problems.push(
                    Problem::new("/mesh/rootCert", "rootCert is empty")
                        .hint("give the path of the root CA certificate, or remove the line"),
                );
            }
        }
        self.proxy_metadata("/mesh/proxyMetadata", &m.proxy_metadata);
    }

    fn sidecar(&mut self, f: &Fleet) {
        let s = &f.sidecar;
        let version_ok = {
            let (core, pre) = s.version.split_once('-').unwrap_or((&s.version, ""));
            let parts: Vec<&str> = core.split('.').collect();
            parts.len() == 3
                && parts
                    .iter()
                    .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                && pre
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        };
        if !version_ok {
            self.problems.push(
                Problem::new(
                    "/sidecar/version",
                    format!("version {:?} is not an Istio release", s.version),
                )
                .hint("write the release as `1.28.0`, quoted if YAML reads it as a number"),
            );
        }
        if let Some(sha) = &s.sha256 {
            if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
                self.problems.push(
                    Problem::new("/sidecar/sha256", "sha256 is not 64 hexadecimal digits")
                        .hint("copy it from the `.sha256` file published beside the package"),
                );
            }
        }
        if let Some(url) = &s.url {
            if !(url.starts_with("https://") || url.starts_with("http://"))
                || url
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c == '\'' || c == '"')
            {
                self.problems.push(
                    Problem::new("/sidecar/url", format!("url {url:?} is not an http(s) address"))
                        .hint("give the package's full address, such as https://mirror.example.com/istio-sidecar.deb"),
                );
            }
        }
    }

    fn gitops(&mut self, f: &Fleet) {
        let g = &f.gitops;
        let path_ok = crate::tree::is_safe_relative_path(&g.path)
            && g.path.split('/').all(|part| {
                part.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            });
        if !path_ok {
            self.problems.push(
                Problem::new("/gitops/path", format!("path {:?} is not a relative path inside the repository", g.path))
                    .hint("use parts of letters, digits, '-', '_' and '.', separated by '/', such as `clusters/cluster1`"),
            );
        } else if let Some(part) = names::git_dir_component(&g.path) {
            self.problems.push(
                Problem::new(
                    "/gitops/path",
                    format!("path {:?} has a `{part}` part, which Git refuses to hold in a tree", g.path),
                )
                .hint("Git reserves `.git` in any letter case (and `.git.`, which some file systems read as `.git`): choose another folder name, such as `meshvm`"),
            );
        }
        self.report(
            "/gitops/branch",
            &g.branch,
            names::branch(&g.branch),
            "use a branch name such as `main`",
        );
        if let Some(url) = &g.repo_url {
            if url.trim().is_empty() || url.chars().any(char::is_whitespace) {
                self.problems.push(
                    Problem::new("/gitops/repoURL", "repoURL is not a repository address")
                        .hint("such as https://git.example.com/mesh.git"),
                );
            } else if let Err(reason) = names::repo_url_without_credentials(url) {
                self.problems.push(
                    Problem::new("/gitops/repoURL", format!("repoURL {reason}"))
                        .hint("the address is committed into the Argo CD and Flux objects and pushed: give it without credentials, such as https://git.example.com/mesh.git, and let the engines read a token from their own repository secret (`meshvm gitops sync` reads MESHVM_GIT_TOKEN)"),
                );
            }
        }
        if g.repo_url.is_none() && !g.engines.is_empty() {
            self.problems.push(
                Problem::new("/gitops", "repoURL is missing: the GitOps engines need the repository to pull from")
                    .hint("add `repoURL: https://git.example.com/mesh.git` under gitops, or `engines: []` to render no engine manifests"),
            );
        }
        let mut seen = HashSet::new();
        for (i, e) in g.engines.iter().enumerate() {
            if !seen.insert(e) {
                self.problems.push(
                    Problem::new(&format!("/gitops/engines/{i}"), "engine listed twice")
                        .hint("list each engine once"),
                );
            }
        }
    }

    /// `gitops.name`, `gitops.argocd` and `gitops.flux`: what names the engine objects and
    /// where they go.
    fn engine_settings(&mut self, f: &Fleet) {
        let g = &f.gitops;
        if let Some(name) = &g.name {
            // Engine object names are `meshvm-<name>-…`, and Argo CD and Flux put them in
            // label values (63 characters): keep the name short.
            let check = names::dns1123_label(name).and_then(|()| {
                if name.len() > 20 {
                    Err("is longer than 20 characters (it prefixes every Argo CD and Flux object name)".to_owned())
                } else {
                    Ok(())
                }
            });
            self.report(
                "/gitops/name",
                name,
                check,
                "name the fleet like `payments`: lower-case letters, digits and '-'",
            );
        }
        for (at, ns) in [
            ("/gitops/argocd/namespace", &g.argocd.namespace),
            ("/gitops/flux/namespace", &g.flux.namespace),
        ] {
            self.report(
                at,
                ns,
                names::dns1123_label(ns),
                "the namespace the engine runs in, such as `argocd` or `flux-system`",
            );
        }
        self.report(
            "/gitops/argocd/project",
            &g.argocd.project,
            names::dns1123_subdomain(&g.argocd.project),
            "the name of an Argo CD AppProject, such as `default`",
        );
        let server = &g.argocd.server;
        if !(server.starts_with("https://") || server.starts_with("http://"))
            || server.chars().any(char::is_whitespace)
        {
            self.problems.push(
                Problem::new("/gitops/argocd/server", format!("{server:?} is not an API server URL"))
                    .hint("the cluster's URL as registered in Argo CD, such as `https://kubernetes.default.svc`"),
            );
        }
        if let Some(shard) = &g.flux.shard {
            self.report(
                "/gitops/flux/shard",
                shard,
                names::label_value(shard),
                "a label value such as `shard1`",
            );
        }
    }

    fn workload(&mut self, at: &str, w: &Workload) {
        self.report(
            &format!("{at}/name"),
            &w.name,
            names::dns1123_label(&w.name),
            "name the group like a Kubernetes object, such as `billing-db`",
        );
        self.report(
            &format!("{at}/namespace"),
            &w.namespace,
            names::dns1123_label(&w.namespace),
            "such as `vm-apps`",
        );
        self.report(
            &format!("{at}/serviceAccount"),
            &w.service_account,
            names::dns1123_subdomain(&w.service_account),
            "such as `tester`; the default is `default`",
        );
        self.report(
            &format!("{at}/network"),
            &w.network,
            names::label_value(&w.network),
            "a network name is a label value, such as `vm-net`",
        );
        self.labels(&format!("{at}/labels"), &w.labels);
        for key in w.annotations.keys() {
            self.report(
                &format!("{at}/annotations/{}", escape(key)),
                key,
                names::qualified_name(key),
                "such as `example.com/owner`",
            );
        }
        if let Some(text) = w.annotations.get(vmfiles::PROXY_CONFIG_ANNOTATION) {
            self.proxy_config_annotation(
                &format!(
                    "{at}/annotations/{}",
                    escape(vmfiles::PROXY_CONFIG_ANNOTATION)
                ),
                text,
            );
        }
        for (name, port) in &w.ports {
            let p = format!("{at}/ports/{}", escape(name));
            self.report(
                &p,
                name,
                istio_rules::port_name(name),
                "name ports like `http` or `grpc-api`",
            );
            // The WorkloadEntry and WorkloadGroup CRDs: `size(key) < 63`, one less than
            // istiod's own limit.
            if istio_rules::port_name(name).is_ok() && name.len() >= 63 {
                self.problems.push(
                    Problem::new(&p, format!("port name {name:?} is {} characters long; the WorkloadEntry CRD allows at most 62", name.len()))
                        .hint("shorten the port name")
                        .at_key(),
                );
            }
            self.port(&p, *port);
        }
        if let Some(probe) = &w.probe {
            self.probe(&format!("{at}/probe"), probe);
        }
        if let Some(locality) = &w.locality {
            self.locality(&format!("{at}/locality"), locality);
        }
        self.proxy_metadata(&format!("{at}/proxyMetadata"), &w.proxy_metadata);
        if let Some(service) = &w.service {
            self.service(&format!("{at}/service"), w, service);
        }
        for (ii, vm) in w.instances.iter().enumerate() {
            self.instance(&|| format!("{at}/instances/{ii}"), w, vm);
        }
        self.join(&format!("{at}/join"), &w.join);
    }

    /// A group's join policy: each method's own fields only, and a cloud method names who may
    /// join (an empty allowlist would let any account of that cloud in).
    fn join(&mut self, at: &str, j: &super::Join) {
        use super::JoinMethod as M;
        let fields: [(&str, &[String], M, &str); 6] = [
            (
                "accounts",
                &j.accounts,
                M::Aws,
                "12 digits, such as `123456789012`",
            ),
            ("regions", &j.regions, M::Aws, "such as `eu-west-1`"),
            ("projects", &j.projects, M::Gcp, "such as `my-project-123`"),
            ("zones", &j.zones, M::Gcp, "such as `europe-west1-b`"),
            (
                "subscriptions",
                &j.subscriptions,
                M::Azure,
                "a subscription ID, such as `0a1b2c3d-0000-4000-8000-000000000000`",
            ),
            (
                "vmIds",
                &j.vm_ids,
                M::Azure,
                "a VM ID (vmId), such as `0a1b2c3d-0000-4000-8000-000000000000`",
            ),
        ];
        for (field, values, method, example) in fields {
            if !values.is_empty() && j.method != method {
                self.problems.push(
                    Problem::new(
                        &format!("{at}/{field}"),
                        format!(
                            "`{field}` applies to `method: {}`, but this group joins by `{}`",
                            method.as_str(),
                            j.method.as_str()
                        ),
                    )
                    .hint(format!(
                        "remove `{field}`, or set `method: {}`",
                        method.as_str()
                    ))
                    .at_key(),
                );
                continue;
            }
            for (i, v) in values.iter().enumerate() {
                if let Err(reason) = crate::join::policy::check_value(field, v) {
                    self.problems.push(
                        Problem::new(&format!("{at}/{field}/{i}"), format!("{v:?} {reason}"))
                            .hint(example),
                    );
                }
            }
        }
        let required = match j.method {
            M::Aws => Some(("accounts", j.accounts.is_empty())),
            M::Gcp => Some(("projects", j.projects.is_empty())),
            M::Azure => Some(("subscriptions", j.subscriptions.is_empty())),
            M::Token | M::JoinToken => None,
        };
        if let Some((field, true)) = required {
            self.problems.push(
                Problem::new(
                    &format!("{at}/method"),
                    format!(
                        "`method: {}` needs `{field}`: without it any {} identity could join",
                        j.method.as_str(),
                        j.method.as_str()
                    ),
                )
                .hint(format!("list the {field} whose VMs may join this group")),
            );
        }
    }

    /// The join broker's east-west port must not be one the gateway already serves.
    fn join_broker(&mut self, b: &super::JoinBroker) {
        const TAKEN: [(u32, &str); 4] = [
            (15021, "the gateway's status port"),
            (15443, "the cross-network mTLS port"),
            (15012, "istiod's discovery port"),
            (15017, "istiod's webhook port"),
        ];
        if let Some((_, what)) = TAKEN.iter().find(|(port, _)| *port == b.port) {
            self.problems.push(
                Problem::new(
                    "/joinBroker/port",
                    format!("port {} is {what} on the east-west gateway", b.port),
                )
                .hint("pick another port for the join broker, such as the default 15444"),
            );
        }
    }

    /// One VM; `at` writes its pointer, only when there is a problem to report (most fleets
    /// have none, and a 10,000-VM fleet would pay for 60,000 strings).
    fn instance(&mut self, at: &dyn Fn() -> String, w: &Workload, vm: &Instance) {
        if let Err(reason) = names::dns1123_label(&vm.name) {
            self.problems.push(
                Problem::new(&format!("{}/name", at()), format!("{:?} {reason}", vm.name))
                    .hint("name VMs like Kubernetes objects, such as `tester-1`"),
            );
        }
        let address = names::ip_or_hostname(&vm.address);
        if vm.address.starts_with("unix://") {
            self.problems.push(
                Problem::new(&format!("{}/address", at()), format!("address {:?} is a unix socket: a meshvm rule refuses it (Istio takes one for a workload on the proxy's own host, but a VM joins the mesh over the network)", vm.address))
                    .hint("give the VM's IP address, such as 10.0.0.11 or fd00::11"),
            );
        } else if let Err(reason) = &address {
            self.problems.push(
                Problem::new(
                    &format!("{}/address", at()),
                    format!("{:?} {reason}", vm.address),
                )
                .hint("give the VM's IP address, such as 10.0.0.11 or fd00::11"),
            );
        }
        if address.is_ok() && vm.ip().is_none() {
            if w.service
                .as_ref()
                .is_some_and(|s| s.resolution == Resolution::Static)
            {
                self.problems.push(
                    Problem::new(
                        &format!("{}/address", at()),
                        format!(
                            "address {:?} is a host name, but the service resolves STATIC",
                            vm.address
                        ),
                    )
                    .hint("give an IP address, or set `service.resolution: DNS`"),
                );
            }
            if w.auto_register {
                self.problems.push(
                    Problem::new(&format!("{}/address", at()), format!("address {:?} is a host name, but auto-registration names entries by IP", vm.address))
                        .hint("give the VM's IP address"),
                );
            }
            if vm.external {
                self.problems.push(
                    Problem::new(&format!("{}/external", at()), format!("address {:?} is a host name, but an external address is the IP the proxy announces (ISTIO_SVC_IP)", vm.address))
                        .hint("give the public IP address in front of the VM, or remove `external`"),
                );
            }
        }
        if !vm.labels.is_empty() {
            self.labels(&format!("{}/labels", at()), &vm.labels);
        }
        // At most the sum of the two; counted only when that could be too many.
        if w.labels.len() + vm.labels.len() > MAX_LABELS {
            let merged = w
                .labels
                .keys()
                .chain(vm.labels.keys())
                .collect::<HashSet<_>>();
            if merged.len() > MAX_LABELS {
                self.problems.push(
                    Problem::new(&format!("{}/labels", at()), format!("the VM has {} labels with its group's; the WorkloadEntry CRD allows at most {MAX_LABELS}", merged.len()))
                        .hint("remove labels from the VM or its group"),
                );
            }
        }
        if let Some(locality) = &vm.locality {
            self.locality(&format!("{}/locality", at()), locality);
        }
    }

    fn service(&mut self, at: &str, w: &Workload, s: &Service) {
        if let Some(name) = &s.name {
            self.report(
                &format!("{at}/name"),
                name,
                names::dns1123_label(name),
                "such as `tester-svc`",
            );
        }
        if s.hosts.is_empty() {
            self.problems.push(
                Problem::new(&format!("{at}/hosts"), "a service needs at least one host")
                    .hint("such as `tester.vm-apps.svc.cluster.local`"),
            );
        }
        for (i, host) in s.hosts.iter().enumerate() {
            let p = format!("{at}/hosts/{i}");
            let syntax = names::service_host(host);
            let partial = syntax.is_ok() && istio_rules::partial_wildcard(host).is_err();
            self.report(
                &p,
                host,
                syntax.clone(),
                "give the DNS name clients use, such as `tester.vm-apps.svc.cluster.local`",
            );
            if partial {
                self.problems.push(
                    Problem::new(&p, format!("host {host:?} is a partial wildcard: a meshvm rule refuses it (istiod only warns that it is not allowed for resolution {}, and what it then matches is not specified)", s.resolution.as_str()))
                        .hint("use `*` as a whole first label, as in `*.example.com`, or name the host fully"),
                );
            } else if syntax.is_ok()
                && s.resolution == Resolution::Dns
                && istio_rules::fqdn(host).is_err()
            {
                self.problems.push(Problem::new(&p, format!("host {host:?} is a wildcard, but resolution DNS needs a host name to resolve")).hint("name the host fully, or use resolution NONE"));
            }
        }
        for (i, addr) in s.addresses.iter().enumerate() {
            let p = format!("{at}/addresses/{i}");
            self.report(
                &p,
                addr,
                istio_rules::ip_subnet(addr),
                "such as 240.240.0.10 or 10.0.0.0/24",
            );
            if istio_rules::is_cidr(addr) && s.resolution == Resolution::Dns {
                self.problems.push(
                    Problem::new(&p, format!("address {addr:?} is a CIDR block, which Istio allows only for resolution NONE or STATIC"))
                        .hint("give single addresses, or set `resolution: STATIC` or `NONE`"),
                );
            }
        }
        if s.ports.is_empty() {
            self.problems.push(
                Problem::new(&format!("{at}/ports"), "a service needs at least one port")
                    .hint("such as `- {number: 5000, name: http, protocol: HTTP}`"),
            );
        }
        let mut numbers = HashSet::new();
        let mut port_names = HashSet::new();
        for (i, port) in s.ports.iter().enumerate() {
            let p = format!("{at}/ports/{i}");
            self.port(&format!("{p}/number"), port.number);
            if let Some(target) = port.target_port {
                self.port(&format!("{p}/targetPort"), target);
            }
            self.report(
                &format!("{p}/name"),
                &port.name,
                istio_rules::port_name(&port.name),
                "name ports like `http` or `grpc-api`",
            );
            let protocol = port.protocol.as_deref().unwrap_or_default();
            if istio_rules::protocol(protocol).is_err() {
                let known: Vec<String> = istio_rules::PROTOCOL_NAMES
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
                let mut problem = Problem::new(
                    &format!("{p}/protocol"),
                    format!("protocol {protocol:?} is not one Istio knows"),
                );
                problem.hint = Some(match super::load::did_you_mean(protocol, &known) {
                    Some(best) => format!("did you mean `{best}`?"),
                    None => format!(
                        "one of: {} (in any letter case), or none to let Istio detect it",
                        istio_rules::PROTOCOL_NAMES.join(", ")
                    ),
                });
                self.problems.push(problem);
            }
            if !numbers.insert(port.number) {
                self.problems.push(
                    Problem::new(
                        &format!("{p}/number"),
                        format!("port {} is listed twice", port.number),
                    )
                    .hint("list each port number once"),
                );
            }
            if !port_names.insert(&port.name) {
                self.problems.push(
                    Problem::new(
                        &format!("{p}/name"),
                        format!("port name {:?} is used twice", port.name),
                    )
                    .hint("give each port its own name"),
                );
            }
        }
        // istiod (ValidateServiceEntry): with several hosts and a resolution other than NONE,
        // a port must be told apart by host: HTTP by its authority, TLS by its SNI. A port
        // without protocol is detected, which is neither.
        if s.resolution != Resolution::None && s.hosts.len() > 1 {
            if let Some((i, port)) = s.ports.iter().enumerate().find(|(_, port)| {
                !port
                    .protocol
                    .as_deref()
                    .and_then(Protocol::parse)
                    .is_some_and(|p| p.is_http() || p.is_tls())
            }) {
                self.problems.push(
                    Problem::new(
                        &format!("{at}/ports/{i}"),
                        format!(
                            "port {} is not HTTP or TLS, but the service has {} hosts: istiod refuses that, since nothing in the traffic tells the hosts apart",
                            port.number,
                            s.hosts.len()
                        ),
                    )
                    .hint("give the port an HTTP or TLS protocol (HTTP, HTTP2, GRPC, HTTPS, TLS), keep one host, or set `resolution: NONE`"),
                );
            }
        }
        if w.labels.is_empty() {
            self.problems.push(
                Problem::new(
                    &format!("{}/labels", at.trim_end_matches("/service")),
                    "a group with a service needs labels: a meshvm rule, since a ServiceEntry without a selector's labels would select every workload of the namespace",
                )
                .hint(format!("add `labels: {{app: {}}}`", w.name)),
            );
        }
    }

    fn probe(&mut self, at: &str, p: &Probe) {
        let kinds = [
            p.http_get.is_some(),
            p.tcp_socket.is_some(),
            p.exec.is_some(),
            p.grpc.is_some(),
        ]
        .iter()
        .filter(|k| **k)
        .count();
        if kinds != 1 {
            self.problems.push(
                Problem::new(
                    at,
                    "a probe has exactly one of httpGet, tcpSocket, exec and grpc",
                )
                .hint("keep one of them"),
            );
        }
        if let Some(g) = &p.grpc {
            self.port(&format!("{at}/grpc/port"), g.port);
            // istiod's validateReadinessProbe (pkg/config/validation) at the Istio commit
            // tests/upstream/go.mod pins knows httpGet, tcpSocket and exec only: its webhook
            // and `istioctl validate` refuse the WorkloadGroup, though the CRD and pilot-agent
            // accept it. Refused until that Istio is pinned; then only this check goes.
            self.problems.push(
                Problem::new(
                    &format!("{at}/grpc"),
                    "istiod does not accept a grpc probe yet: at the pinned Istio commit \
                     (1.31 development line) its WorkloadGroup validation refuses it as an \
                     \"unknown health check method\", although the CRD and pilot-agent \
                     accept it (istio/api #3372)",
                )
                .hint(
                    "probe the gRPC port with `tcpSocket`, or run a gRPC health client with \
                     `exec` (such as [grpc_health_probe, -addr=127.0.0.1:PORT])",
                ),
            );
        }
        if let Some(h) = &p.http_get {
            self.port(&format!("{at}/httpGet/port"), h.port);
            if let Some(scheme) = &h.scheme {
                if scheme != "HTTP" && scheme != "HTTPS" {
                    self.problems.push(
                        Problem::new(
                            &format!("{at}/httpGet/scheme"),
                            format!("scheme {scheme:?} is not HTTP or HTTPS"),
                        )
                        .hint("write HTTP or HTTPS"),
                    );
                }
            }
            if let Some(path) = &h.path {
                if !path.starts_with('/') {
                    self.problems.push(
                        Problem::new(
                            &format!("{at}/httpGet/path"),
                            format!("path {path:?} does not start with '/'"),
                        )
                        .hint("such as /healthz"),
                    );
                }
            }
        }
        if let Some(t) = &p.tcp_socket {
            self.port(&format!("{at}/tcpSocket/port"), t.port);
        }
        if let Some(e) = &p.exec {
            if e.command.is_empty() {
                self.problems.push(
                    Problem::new(&format!("{at}/exec/command"), "the command is empty")
                        .hint("such as [/usr/local/bin/check]"),
                );
            }
            // The WorkloadGroup CRD: `minLength: 1` on each item.
            for (i, arg) in e.command.iter().enumerate() {
                if arg.is_empty() {
                    self.problems.push(
                        Problem::new(
                            &format!("{at}/exec/command/{i}"),
                            "an item of the command is empty, which the WorkloadGroup CRD refuses",
                        )
                        .hint("remove the empty item, or write the argument"),
                    );
                }
            }
        }
    }

    fn port(&mut self, at: &str, n: u32) {
        if let Err(reason) = names::port(n) {
            self.problems
                .push(Problem::new(at, reason).hint("ports are numbered 1 to 65535"));
        }
    }

    fn labels(&mut self, at: &str, labels: &BTreeMap<String, String>) {
        for (key, value) in labels {
            let p = format!("{at}/{}", escape(key));
            if let Err(reason) = names::qualified_name(key) {
                self.problems.push(
                    Problem::new(&p, format!("label key {key:?}: {reason}"))
                        .hint("such as `app` or `app.kubernetes.io/name`")
                        .at_key(),
                );
            }
            self.report(
                &p,
                value,
                names::label_value(value),
                "a label value is short and plain, such as `v1.2`; put free text in an annotation",
            );
        }
    }

    fn locality(&mut self, at: &str, locality: &str) {
        let parts: Vec<&str> = locality.split('/').collect();
        if locality.len() > MAX_LOCALITY {
            self.problems.push(
                Problem::new(at, format!("locality is {} characters long; the WorkloadEntry CRD allows at most {MAX_LOCALITY}", locality.len()))
                    .hint("such as `us-east1/us-east1-b`"),
            );
        } else if parts.len() > 3
            || parts
                .iter()
                .any(|p| p.is_empty() || p.chars().any(|c| c.is_whitespace() || c.is_control()))
        {
            self.problems.push(
                Problem::new(
                    at,
                    format!("locality {locality:?} is not region[/zone[/subzone]]"),
                )
                .hint("such as `us-east1/us-east1-b`"),
            );
        }
    }

    fn proxy_metadata(&mut self, at: &str, metadata: &BTreeMap<String, String>) {
        for (key, value) in metadata {
            let p = format!("{at}/{}", escape(key));
            if let Err(reason) = names::env_name(key) {
                self.problems.push(
                    Problem::new(&p, format!("proxy metadata key {key:?} {reason}"))
                        .hint("such as `ISTIO_META_DNS_AUTO_ALLOCATE`")
                        .at_key(),
                );
            }
            if value.contains('\0') {
                self.problems.push(nul_in_metadata(&p, key));
            }
        }
    }

    /// The `proxy.istio.io/config` annotation is ProxyConfig YAML that the VM files are made
    /// from: check it here as they read it, so that a valid fleet always renders.
    fn proxy_config_annotation(&mut self, at: &str, text: &str) {
        let hint = "the annotation holds ProxyConfig YAML, such as `proxyMetadata: {ISTIO_META_DNS_AUTO_ALLOCATE: \"true\"}`";
        let config = match vmfiles::read_proxy_config_annotation(text) {
            Ok(config) => config,
            Err(message) => {
                self.problems.push(
                    Problem::new(at, format!("not a valid ProxyConfig: {message}")).hint(hint),
                );
                return;
            }
        };
        for (key, value) in config.proxy_metadata() {
            if let Err(reason) = names::env_name(&key) {
                self.problems.push(
                    Problem::new(at, format!("proxyMetadata key {key:?} {reason}")).hint(hint),
                );
            }
            if value.as_str().is_some_and(|v| v.contains('\0')) {
                self.problems.push(nul_in_metadata(at, &key));
            }
        }
    }

    /// Runs the VM files' own check ([`vmfiles::Inputs::check`]) on the first VM of every
    /// group, so that a checked fleet always renders. The checks above find what it would, at
    /// a better place; this makes it a fact (the fuzz target `fleet` looks for the gaps). One
    /// VM a group is enough, and keeps a large fleet's load fast: what the VMs of a group do
    /// not share (name, address, labels) passed the per-VM checks above, which are stricter
    /// than the VM files' (a name is a DNS label, an address an IP, a label value plain text).
    fn vm_files(&mut self, f: &Fleet) {
        for (wi, w) in f.workloads.iter().enumerate() {
            let Some(vm) = w.instances.first() else {
                continue;
            };
            if let Err(e) = vmfiles::fleet_raw_inputs(f, w, vm).check() {
                self.problems.push(
                    Problem::new(
                        &format!("/workloads/{wi}"),
                        format!("the mesh files of the group's VMs cannot be made: {e}"),
                    )
                    .hint("the group's and the mesh's proxy settings (annotations, proxyMetadata, probe) become each VM's cluster.env and mesh.yaml: change the one named"),
                );
            }
        }
    }

    fn non_empty(&mut self, at: &str, what: &str, value: &str) {
        if value.is_empty() {
            self.problems.push(
                Problem::new(at, format!("{what} is empty")).hint(format!("give the {what}")),
            );
        }
    }
}

fn nul_in_metadata(at: &str, key: &str) -> Problem {
    Problem::new(
        at,
        format!("proxy metadata {key} holds a NUL character, which no environment variable can"),
    )
    .hint("remove the `\\0` from the value")
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// Ports the sidecar listens on or uses itself on every VM (Envoy's admin, inbound and
/// outbound captures, the agent's status and metrics ports).
const SIDECAR_PORTS: std::ops::RangeInclusive<u32> = 15000..=15090;

/// Namespaces of the cluster's own workloads, where VMs do not belong.
const SYSTEM_NAMESPACES: &[&str] = &["kube-system", "kube-public", "kube-node-lease"];

/// What a fleet may hold but most likely holds by mistake: each a warning, never a refusal.
/// Run on a fleet that passed [`check`].
pub fn warnings(fleet: &Fleet) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut warn = |pointer: String, message: String, hint: &str| {
        out.push(Problem::new(&pointer, message).hint(hint));
    };
    if fleet.sidecar.sha256.is_none() {
        warn(
            "/sidecar".into(),
            format!(
                "the sidecar package is not pinned: VMs install whatever {} serves",
                fleet.sidecar.download_url()
            ),
            "add `sha256:` with the package's checksum (its `.sha256` file beside it)",
        );
    }
    let placeholder_hint = "`meshvm init` writes examples: replace them with your own values";
    if names::is_documentation_address(&fleet.mesh.east_west_gateway.address) {
        warn(
            "/mesh/eastWestGateway/address".into(),
            format!(
                "address {} is in a range reserved for documentation (RFC 5737, RFC 3849): a placeholder?",
                fleet.mesh.east_west_gateway.address
            ),
            placeholder_hint,
        );
    }
    for (pointer, url) in [
        ("/gitops/repoURL", fleet.gitops.repo_url.as_deref()),
        ("/sidecar/url", fleet.sidecar.url.as_deref()),
    ] {
        if let Some(url) = url.filter(|u| names::is_example_domain_url(u)) {
            warn(
                pointer.into(),
                format!("{url} is an example address (example.com): a placeholder?"),
                placeholder_hint,
            );
        }
    }
    let mut hosts: HashMap<(&str, String), String> = HashMap::new();
    for (wi, w) in fleet.workloads.iter().enumerate() {
        let at = format!("/workloads/{wi}");
        if SYSTEM_NAMESPACES.contains(&w.namespace.as_str())
            || w.namespace == fleet.mesh.istio_namespace
        {
            warn(
                format!("{at}/namespace"),
                format!("namespace {:?} is a system namespace", w.namespace),
                "put VMs in a namespace of their own, such as `vm-apps`",
            );
        }
        let mut numbers: HashMap<u32, &str> = HashMap::new();
        for (name, number) in &w.ports {
            let p = format!("{at}/ports/{}", escape(name));
            if let Some(first) = numbers.insert(*number, name) {
                warn(
                    p.clone(),
                    format!("ports {first:?} and {name:?} are both {number}"),
                    "give each port of the VMs its own number",
                );
            }
            if SIDECAR_PORTS.contains(number) {
                warn(
                    p,
                    format!("port {number} is one the sidecar uses itself (15000–15090)"),
                    "serve the application on another port",
                );
            }
        }
        for (ii, vm) in w.instances.iter().enumerate() {
            for (key, value) in &vm.labels {
                if let Some(group) = w.labels.get(key).filter(|g| *g != value) {
                    if w.service.is_some() {
                        warn(
                            format!("{at}/instances/{ii}/labels/{}", escape(key)),
                            format!(
                                "label {key}={value} replaces the group's {key}={group}: the service selects the group's VMs by it, and no longer this one"
                            ),
                            "keep the group's value, or give the VM another label key",
                        );
                    }
                }
            }
        }
        let Some(s) = &w.service else { continue };
        let served: HashSet<u32> = w.ports.values().copied().collect();
        for (i, port) in s.ports.iter().enumerate() {
            let target = port.target_port.unwrap_or(port.number);
            let p = format!("{at}/service/ports/{i}");
            if !served.contains(&target) {
                warn(
                    p.clone(),
                    format!(
                        "the service sends port {} to {target}, which no port of the group's VMs serves (`ports:`)",
                        port.number
                    ),
                    "add the port under the group's `ports:`, or set `targetPort:` to one it lists",
                );
            }
            if SIDECAR_PORTS.contains(&target) {
                warn(
                    p,
                    format!("port {target} is one the sidecar uses itself (15000–15090)"),
                    "send the service to another port",
                );
            }
        }
        for (hi, host) in s.hosts.iter().enumerate() {
            let key = (
                w.namespace.as_str(),
                host.trim_end_matches('.').to_ascii_lowercase(),
            );
            let here = format!("{at}/service/hosts/{hi}");
            if let Some(first) = hosts.insert(key, here.clone()) {
                warn(
                    here,
                    format!(
                        "host {host:?} is also a host of the service at {} in namespace {:?}: istiod merges or picks one",
                        super::load::display_path(&first),
                        w.namespace
                    ),
                    "give each service of a namespace its own hosts",
                );
            }
        }
        for (ii, vm) in w.instances.iter().enumerate() {
            if names::is_documentation_address(&vm.address) {
                warn(
                    format!("{at}/instances/{ii}/address"),
                    format!(
                        "address {} is in a range reserved for documentation: a placeholder?",
                        vm.address
                    ),
                    placeholder_hint,
                );
            }
        }
    }
    out
}
