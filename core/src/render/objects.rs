//! The Istio objects of a fleet, built from its typed spec. Pure.

use std::collections::BTreeMap;

use crate::k8s::ObjectMeta;
use crate::k8s::istio::{
    GroupMetadata, NETWORKING_V1, ServiceEntry, ServiceEntrySpec, ServicePort, WorkloadEntry,
    WorkloadEntrySpec, WorkloadGroup, WorkloadGroupSpec, WorkloadSelector,
};
use crate::spec::{Instance, Mesh, Workload};

/// The label every object meshvm renders carries.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "meshvm");

/// The annotation that lets istiod act on the health of a hand-written WorkloadEntry.
pub const HEALTH_CHECKS_ANNOTATION: (&str, &str) = ("proxy.istio.io/health-checks-enabled", "true");

/// The labels of an object meshvm renders: its own plus `app.kubernetes.io/managed-by`.
pub fn managed_labels(labels: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut out = labels.clone();
    out.insert(MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned());
    out
}

/// The WorkloadGroup of a workload: the template of its VMs' WorkloadEntries. Its
/// `spec.metadata` carries the group's labels and annotations, which istioctl (and meshvm's
/// VM files) read for the proxy's identity and configuration, and its network is the one its
/// VMs' entries and files say (istioctl reads it from here).
pub fn workload_group(mesh: &Mesh, w: &Workload) -> WorkloadGroup {
    let mut metadata = ObjectMeta::named(&w.name, Some(&w.namespace));
    metadata.labels = managed_labels(&w.labels);
    let spec = WorkloadGroupSpec {
        metadata: Some(GroupMetadata {
            labels: w.labels.clone(),
            annotations: w.annotations.clone(),
        }),
        template: WorkloadEntrySpec {
            ports: w.ports.clone(),
            network: network(mesh, w),
            locality: w.locality.clone(),
            weight: w.weight,
            service_account: Some(w.service_account.clone()),
            ..WorkloadEntrySpec::default()
        },
        probe: w
            .probe
            .as_ref()
            .map(|p| serde_json::to_value(p).expect("a probe is JSON")),
    };
    WorkloadGroup::new(NETWORKING_V1, "WorkloadGroup", metadata, spec)
}

/// The WorkloadEntry of a VM: the group's template with the VM's address, labels (the group's
/// plus its own), locality and weight (its own, else the group's), and network (the group's,
/// else the cluster's, as the VM's own files say). Named after the VM. When the group has a
/// probe, the entry carries the health-check annotation.
pub fn workload_entry(mesh: &Mesh, w: &Workload, vm: &Instance) -> WorkloadEntry {
    let mut labels = w.labels.clone();
    labels.extend(vm.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
    let mut metadata = ObjectMeta::named(&vm.name, Some(&w.namespace));
    metadata.labels = managed_labels(&labels);
    if w.probe.is_some() {
        let (key, value) = HEALTH_CHECKS_ANNOTATION;
        metadata
            .annotations
            .insert(key.to_owned(), value.to_owned());
    }
    let spec = WorkloadEntrySpec {
        address: Some(vm.address.clone()),
        ports: w.ports.clone(),
        labels,
        network: network(mesh, w),
        locality: vm.locality.clone().or_else(|| w.locality.clone()),
        weight: vm.weight.or(w.weight),
        service_account: Some(w.service_account.clone()),
    };
    WorkloadEntry::new(NETWORKING_V1, "WorkloadEntry", metadata, spec)
}

/// The network of a group's VMs: the group's own, else the cluster's (none on a single network).
fn network(mesh: &Mesh, w: &Workload) -> Option<String> {
    [&w.network, &mesh.network]
        .into_iter()
        .find(|n| !n.is_empty())
        .cloned()
}

/// The ServiceEntry of a group with a service: inside the mesh, selecting the group's VMs by
/// the group's labels.
pub fn service_entry(w: &Workload) -> Option<ServiceEntry> {
    let service = w.service.as_ref()?;
    let name = w.service_name().expect("the group has a service");
    let mut metadata = ObjectMeta::named(name, Some(&w.namespace));
    metadata.labels = managed_labels(&BTreeMap::new());
    let spec = ServiceEntrySpec {
        hosts: service.hosts.clone(),
        addresses: service.addresses.clone(),
        ports: service
            .ports
            .iter()
            .map(|p| ServicePort {
                number: p.number,
                protocol: p.protocol.clone(),
                name: p.name.clone(),
                target_port: p.target_port,
            })
            .collect(),
        location: Some("MESH_INTERNAL".to_owned()),
        resolution: Some(service.resolution.as_str().to_owned()),
        workload_selector: Some(WorkloadSelector {
            labels: w.labels.clone(),
        }),
    };
    Some(ServiceEntry::new(
        NETWORKING_V1,
        "ServiceEntry",
        metadata,
        spec,
    ))
}

#[cfg(test)]
mod tests {
    /// The fleets meshvm is measured on write every WorkloadEntry directly (else the speed-up
    /// would be lost without any test noticing).
    #[test]
    fn synthetic_fleets_write_workload_entries_directly() {
        let fleet = crate::synthetic::fleet(300);
        for (w, vm) in fleet.vms() {
            let entry = super::workload_entry(&fleet.mesh, w, vm);
            assert!(
                crate::k8s::istio::direct_workload_entry(&entry).is_some(),
                "{}",
                vm.name
            );
        }
    }
}
