//! The Istio objects of a fleet, built from its typed spec. Pure.

use std::collections::BTreeMap;

use crate::istio::{
    GroupMetadata, MANAGED_BY, NETWORKING_V1, ObjectMeta, WorkloadEntrySpec, WorkloadGroup,
    WorkloadGroupSpec,
};
use crate::spec::Workload;

/// The labels of an object meshvm renders: its own plus `app.kubernetes.io/managed-by`.
pub fn managed_labels(labels: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut out = labels.clone();
    out.insert(MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned());
    out
}

/// The WorkloadGroup of a workload: the template of its VMs' WorkloadEntries. Its
/// `spec.metadata` carries the group's labels and annotations, which istioctl (and meshvm's
/// VM files) read for the proxy's identity and configuration.
pub fn workload_group(w: &Workload) -> WorkloadGroup {
    let mut metadata = ObjectMeta::named(&w.name, Some(&w.namespace));
    metadata.labels = managed_labels(&w.labels);
    let spec = WorkloadGroupSpec {
        metadata: Some(GroupMetadata {
            labels: w.labels.clone(),
            annotations: w.annotations.clone(),
        }),
        template: WorkloadEntrySpec {
            ports: w.ports.clone(),
            network: (!w.network.is_empty()).then(|| w.network.clone()),
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
