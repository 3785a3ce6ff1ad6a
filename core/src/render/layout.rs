//! Where each file lives in the GitOps tree, relative to the fleet's `gitops.path`.
//!
//! ```text
//! README.md                              what is here; meshvm owns this subtree
//! install/                               input to `istioctl install -f`; never applied by Argo CD or Flux
//! mesh/                                  shared resources: namespaces, service accounts, istiod exposure
//! mesh/east-west/                        Gateways and VirtualService of the east-west gateway
//! mesh/join-broker/                     the join broker: Deployment, Service, policy ConfigMap, RBAC, east-west port
//! mesh/namespaces/<ns>/                  a Namespace and the ServiceAccounts its groups use
//! workloads/<ns>/<group>/                WorkloadGroup, ServiceEntry, and a kustomization listing its VMs
//! workloads/<ns>/<group>/vms/<vm>/       one VM's overlay: its WorkloadEntry and non-secret bootstrap files
//! workloads/<ns>/<group>/vms/<vm>/bootstrap/   the VM's mesh files for review (never the token)
//! workloads/<ns>/<group>/buckets/<i>/    a split group's bucket: a kustomization listing its VMs' overlays
//! argocd/                                ApplicationSet (one Application per group), mesh and bootstrap Applications
//! flux/                                  GitRepository, mesh and bootstrap Kustomizations
//! flux/workloads/<ns>.<group>.yaml       one Flux Kustomization per group
//! flux/workloads/<ns>.<group>.<i>.yaml   one per bucket of a split group
//! ```
//!
//! Architecture invariant: every path that belongs to one VM is under `vm_dir`, so a VM's
//! files can be found, diffed and pruned by prefix.

use crate::spec::{Engine, Fleet};

pub const README: &str = "README.md";
pub const INSTALL_DIR: &str = "install";
pub const MESH_DIR: &str = "mesh";
pub const WORKLOADS_DIR: &str = "workloads";
pub const ARGOCD_DIR: &str = "argocd";
pub const FLUX_DIR: &str = "flux";

/// Below `mesh/`.
pub const EAST_WEST_DIR: &str = "east-west";
/// Below `mesh/`: the join broker's objects, when a group joins through it.
pub const JOIN_BROKER_DIR: &str = "join-broker";
pub const NAMESPACES_DIR: &str = "namespaces";
/// Below a VM's directory: files for the VM itself, not Kubernetes objects.
pub const BOOTSTRAP_DIR: &str = "bootstrap";

pub const ISTIO_INSTALL_FILE: &str = "istio.yaml";
pub const EAST_WEST_INSTALL_FILE: &str = "eastwest-gateway.yaml";
pub const ISTIOD_GATEWAY_FILE: &str = "istiod-gateway.yaml";
pub const ISTIOD_VIRTUAL_SERVICE_FILE: &str = "istiod-virtualservice.yaml";
pub const CROSS_NETWORK_GATEWAY_FILE: &str = "cross-network-gateway.yaml";
pub const NAMESPACE_FILE: &str = "namespace.yaml";
pub const WORKLOAD_GROUP_FILE: &str = "workloadgroup.yaml";
pub const SERVICE_ENTRY_FILE: &str = "serviceentry.yaml";
pub const WORKLOAD_ENTRY_FILE: &str = "workloadentry.yaml";
pub const ARGOCD_APPLICATION_SET_FILE: &str = "applicationset.yaml";
/// The ApplicationSet of split groups' buckets, only when some group is split.
pub const ARGOCD_BUCKETS_APPLICATION_SET_FILE: &str = "applicationset-buckets.yaml";
pub const ARGOCD_MESH_APPLICATION_FILE: &str = "mesh-application.yaml";
/// The Application that applies `argocd/` itself (app of apps).
pub const ARGOCD_BOOTSTRAP_FILE: &str = "bootstrap-application.yaml";
pub const FLUX_GIT_REPOSITORY_FILE: &str = "gitrepository.yaml";
pub const FLUX_MESH_FILE: &str = "mesh.yaml";
/// The Kustomization that applies `flux/` itself.
pub const FLUX_BOOTSTRAP_FILE: &str = "bootstrap.yaml";
/// Below `flux/`: one Kustomization per workload group.
pub const FLUX_WORKLOADS_DIR: &str = "workloads";

/// The Flux Kustomization of a group, relative to `flux/`.
pub fn flux_group_file(namespace: &str, group: &str) -> String {
    format!("{FLUX_WORKLOADS_DIR}/{namespace}.{group}.yaml")
}

/// Below a split group's directory: one directory per bucket (see [`crate::render::buckets`]).
pub const BUCKETS_DIR: &str = "buckets";
/// Below a group's directory: one directory per VM.
pub const VMS_DIR: &str = "vms";

/// The Flux Kustomization of a bucket of a split group, relative to `flux/`.
pub fn flux_bucket_file(namespace: &str, group: &str, bucket: u32) -> String {
    format!("{FLUX_WORKLOADS_DIR}/{namespace}.{group}.{bucket}.yaml")
}

/// A bucket's directory, relative to its group's directory.
pub fn bucket_subdir(bucket: u32) -> String {
    format!("{BUCKETS_DIR}/{bucket}")
}

pub fn bucket_dir(namespace: &str, group: &str, bucket: u32) -> String {
    format!("{}/{}", group_dir(namespace, group), bucket_subdir(bucket))
}

pub fn group_dir(namespace: &str, group: &str) -> String {
    format!("{WORKLOADS_DIR}/{namespace}/{group}")
}

pub fn vm_dir(namespace: &str, group: &str, vm: &str) -> String {
    format!("{WORKLOADS_DIR}/{namespace}/{group}/vms/{vm}")
}

/// Every directory of the tree that an Argo CD Application or a Flux Kustomization applies,
/// relative to `gitops.path`, sorted: `mesh`, each group's directory, each bucket of a split
/// group, and `argocd` / `flux` when the fleet's engines include them (their bootstrap
/// Application / Kustomization applies them). The one list of the tree's application paths.
pub fn application_dirs(fleet: &Fleet) -> Vec<String> {
    let mut dirs = std::collections::BTreeSet::from([MESH_DIR.to_owned()]);
    for w in &fleet.workloads {
        dirs.insert(group_dir(&w.namespace, &w.name));
        let buckets = crate::render::buckets::split(w, fleet.gitops.bucket_threshold);
        for bucket in 0..buckets.map_or(0, |b| b.len() as u32) {
            dirs.insert(bucket_dir(&w.namespace, &w.name, bucket));
        }
    }
    if fleet.gitops.repo_url.is_some() {
        for engine in &fleet.gitops.engines {
            dirs.insert(
                match engine {
                    Engine::Argocd => ARGOCD_DIR,
                    Engine::Flux => FLUX_DIR,
                }
                .to_owned(),
            );
        }
    }
    dirs.into_iter().collect()
}

/// The VM a tree path belongs to, when it is inside a VM's overlay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VmPath<'a> {
    pub namespace: &'a str,
    pub group: &'a str,
    pub vm: &'a str,
}

pub fn vm_of_path(path: &str) -> Option<VmPath<'_>> {
    let mut parts = path.split('/');
    let (Some(WORKLOADS_DIR), Some(namespace), Some(group), Some("vms"), Some(vm), Some(_)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    Some(VmPath {
        namespace,
        group,
        vm,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_vm_of_a_path() {
        let path = format!("{}/cluster.env", vm_dir("ns", "g", "vm-1"));
        assert_eq!(
            vm_of_path(&path),
            Some(VmPath {
                namespace: "ns",
                group: "g",
                vm: "vm-1"
            })
        );
        assert_eq!(vm_of_path("workloads/ns/g/kustomization.yaml"), None);
        assert_eq!(vm_of_path("workloads/ns/g/vms/vm-1"), None);
    }
}
