//! Where each file lives in the GitOps tree, relative to the fleet's `gitops.path`.
//!
//! ```text
//! README.md                              what is here; meshvm owns this subtree
//! install/                               input to `istioctl install -f`; never applied by Argo CD or Flux
//! mesh/                                  shared resources: namespaces, service accounts, istiod exposure
//! workloads/<ns>/<group>/                WorkloadGroup, ServiceEntry, and a kustomization listing its VMs
//! workloads/<ns>/<group>/vms/<vm>/       one VM's overlay: its WorkloadEntry and non-secret bootstrap files
//! argocd/ , flux/                        the GitOps engines' wiring
//! ```
//!
//! Architecture invariant: every path that belongs to one VM is under `vm_dir`, so a VM's
//! files can be found, diffed and pruned by prefix.

pub const README: &str = "README.md";
pub const INSTALL_DIR: &str = "install";
pub const MESH_DIR: &str = "mesh";
pub const WORKLOADS_DIR: &str = "workloads";
pub const ARGOCD_DIR: &str = "argocd";
pub const FLUX_DIR: &str = "flux";

pub fn group_dir(namespace: &str, group: &str) -> String {
    format!("{WORKLOADS_DIR}/{namespace}/{group}")
}

pub fn vm_dir(namespace: &str, group: &str, vm: &str) -> String {
    format!("{WORKLOADS_DIR}/{namespace}/{group}/vms/{vm}")
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
