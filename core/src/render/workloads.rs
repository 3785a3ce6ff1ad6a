//! `workloads/`: per namespace, per group, per VM.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;

use super::Rendered;
use crate::k8s::istio;
use crate::k8s::kustomize::{self, Kustomization};
use crate::k8s::yaml;
use crate::render::layout::{
    self, BOOTSTRAP_DIR, SERVICE_ENTRY_FILE, WORKLOAD_ENTRY_FILE, WORKLOADS_DIR,
};
use crate::render::{buckets, objects};
use crate::spec::{CheckedFleet, Fleet, Instance, Mesh, Workload};
use crate::tree::FileTree;
use crate::vmfiles;

/// The groups' objects and the kustomizations that list them: `workloads/` lists the
/// namespaces, a namespace its groups, a group its objects and its VMs' overlays.
pub(super) fn workloads(fleet: &Fleet) -> Rendered {
    let mut out = Rendered::default();
    let mut namespaces: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for w in &fleet.workloads {
        let buckets = buckets::split(w, fleet.gitops.bucket_threshold);
        let listed = namespaces.entry(&w.namespace).or_default();
        listed.insert(w.name.clone());
        // A split group's buckets are listed beside the group, not inside it: the group's own
        // directory is one Application's, and each bucket another's.
        for bucket in 0..buckets.as_ref().map_or(0, |b| b.len() as u32) {
            listed.insert(format!("{}/{}", w.name, layout::bucket_subdir(bucket)));
        }
        out.merge(group(&fleet.mesh, w, buckets));
    }
    out.kustomization(WORKLOADS_DIR, namespaces.keys().copied());
    for (ns, groups) in namespaces {
        out.kustomization(&format!("{WORKLOADS_DIR}/{ns}"), groups);
    }
    out
}

/// One group's directory: its WorkloadGroup, ServiceEntry, and the kustomization listing them
/// and the overlays of its VMs (none when istiod registers the VMs itself). A split group's
/// kustomization lists only its own objects, and each bucket's the overlays of its VMs.
fn group(mesh: &Mesh, w: &Workload, buckets: Option<Vec<BTreeSet<&str>>>) -> Rendered {
    let mut out = Rendered::default();
    let dir = layout::group_dir(&w.namespace, &w.name);
    let mut resources = vec![layout::WORKLOAD_GROUP_FILE.to_owned()];
    out.object(
        format!("{dir}/{}", layout::WORKLOAD_GROUP_FILE),
        &objects::workload_group(mesh, w),
    );
    if let Some(se) = objects::service_entry(w) {
        out.object(format!("{dir}/{SERVICE_ENTRY_FILE}"), &se);
        resources.push(SERVICE_ENTRY_FILE.to_owned());
    }
    match buckets {
        Some(buckets) => {
            for (bucket, vms) in buckets.iter().enumerate() {
                out.kustomization(
                    &layout::bucket_dir(&w.namespace, &w.name, bucket as u32),
                    vms.iter()
                        .map(|vm| format!("../../{}/{vm}", layout::VMS_DIR)),
                );
            }
        }
        None if !w.auto_register => {
            let vms: BTreeSet<&str> = w.instances.iter().map(|i| i.name.as_str()).collect();
            resources.extend(vms.iter().map(|vm| format!("vms/{vm}")));
        }
        None => {}
    }
    out.kustomization(&dir, resources);
    out
}

/// One VM's directory: its WorkloadEntry overlay (unless its group auto-registers) and its
/// bootstrap files. Depends on nothing but its arguments.
pub(super) fn vm(fleet: &CheckedFleet, w: &Workload, vm: &Instance) -> Rendered {
    let mut out = Rendered::default();
    let dir = layout::vm_dir(&w.namespace, &w.name, &vm.name);
    if !w.auto_register {
        // Written directly, not through `Rendered::object`: one entry per VM.
        let entry = format!("{dir}/{WORKLOAD_ENTRY_FILE}");
        let yaml = istio::workload_entry_yaml(&objects::workload_entry(&fleet.mesh, w, vm));
        out.files.insert(entry.clone(), yaml);
        out.objects.insert(entry);
        // Every VM's kustomization is the same: serialized once.
        static VM_KUSTOMIZATION: LazyLock<String> =
            LazyLock::new(|| yaml::to_string(&Kustomization::of([WORKLOAD_ENTRY_FILE])));
        out.files.insert(
            format!("{dir}/{}", kustomize::FILE_NAME),
            VM_KUSTOMIZATION.as_str(),
        );
    }
    out.files
        .extend_under(&format!("{dir}/{BOOTSTRAP_DIR}"), bootstrap(fleet, w, vm));
    out
}

/// The VM's public mesh files (cluster.env, mesh.yaml, hosts, root-cert.pem), for review.
/// A private file (the token) never enters the tree, whatever the VM files hold.
fn bootstrap(fleet: &CheckedFleet, w: &Workload, vm: &Instance) -> FileTree {
    // `vmfiles::vm_files` with the VM already in hand: its lookup by name would make a
    // whole-fleet render quadratic in the number of VMs.
    let mut files = vmfiles::fleet_files(fleet, w, vm);
    if let Some(pem) = fleet.root_cert() {
        files.insert(vmfiles::ROOT_CERT, pem);
    }
    let mut public = FileTree::new();
    for (path, file) in files {
        if file.mode & 0o077 != 0 {
            public.insert_with_mode(path, file.bytes, file.mode);
        }
    }
    public
}
