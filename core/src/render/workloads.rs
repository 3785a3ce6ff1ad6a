//! `workloads/`: per namespace, per group, per VM.

use std::collections::{BTreeMap, BTreeSet};

use super::{RenderError, Rendered};
use crate::layout::{self, BOOTSTRAP_DIR, SERVICE_ENTRY_FILE, WORKLOAD_ENTRY_FILE, WORKLOADS_DIR};
use crate::objects;
use crate::spec::{Fleet, Instance, Workload};
use crate::tree::FileTree;

/// The groups' objects and the kustomizations that list them: `workloads/` lists the
/// namespaces, a namespace its groups, a group its objects and its VMs' overlays.
pub(super) fn workloads(fleet: &Fleet) -> Rendered {
    let mut out = Rendered::default();
    let mut namespaces: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for w in &fleet.workloads {
        namespaces.entry(&w.namespace).or_default().insert(&w.name);
        out.merge(group(w));
    }
    out.kustomization(WORKLOADS_DIR, namespaces.keys().copied());
    for (ns, groups) in &namespaces {
        out.kustomization(&format!("{WORKLOADS_DIR}/{ns}"), groups.iter().copied());
    }
    out
}

/// One group's directory: its WorkloadGroup, ServiceEntry, and the kustomization listing them
/// and the overlays of its VMs (none when istiod registers the VMs itself).
fn group(w: &Workload) -> Rendered {
    let mut out = Rendered::default();
    let dir = layout::group_dir(&w.namespace, &w.name);
    let mut resources = vec![layout::WORKLOAD_GROUP_FILE.to_owned()];
    out.object(
        format!("{dir}/{}", layout::WORKLOAD_GROUP_FILE),
        &objects::workload_group(w),
    );
    if let Some(se) = objects::service_entry(w) {
        out.object(format!("{dir}/{SERVICE_ENTRY_FILE}"), &se);
        resources.push(SERVICE_ENTRY_FILE.to_owned());
    }
    if !w.auto_register {
        let vms: BTreeSet<&str> = w.instances.iter().map(|i| i.name.as_str()).collect();
        resources.extend(vms.iter().map(|vm| format!("vms/{vm}")));
    }
    out.kustomization(&dir, resources);
    out
}

/// One VM's directory: its WorkloadEntry overlay (unless its group auto-registers) and its
/// bootstrap files. Depends on nothing but its arguments.
pub(super) fn vm(
    fleet: &Fleet,
    w: &Workload,
    vm: &Instance,
    root_cert: Option<&str>,
) -> Result<Rendered, RenderError> {
    let mut out = Rendered::default();
    let dir = layout::vm_dir(&w.namespace, &w.name, &vm.name);
    if !w.auto_register {
        out.object(
            format!("{dir}/{WORKLOAD_ENTRY_FILE}"),
            &objects::workload_entry(w, vm),
        );
        out.kustomization(&dir, [WORKLOAD_ENTRY_FILE]);
    }
    out.files.extend_under(
        &format!("{dir}/{BOOTSTRAP_DIR}"),
        bootstrap(fleet, vm, root_cert)?,
    );
    Ok(out)
}

/// The VM's public mesh files (cluster.env, mesh config, hosts, root-cert.pem), for review.
/// Private files (the token) never enter the tree.
fn bootstrap(
    fleet: &Fleet,
    vm: &Instance,
    root_cert: Option<&str>,
) -> Result<FileTree, RenderError> {
    // BOOTSTRAP: the VM files come from `meshvm::vmfiles::vm_files` once it is merged; until
    // then the bootstrap directory stays empty.
    let _ = (fleet, vm, root_cert);
    let files = FileTree::new();
    let mut public = FileTree::new();
    for (path, file) in files.iter() {
        if file.mode & 0o077 != 0 {
            public.insert_with_mode(path, file.bytes.clone(), file.mode);
        }
    }
    Ok(public)
}
