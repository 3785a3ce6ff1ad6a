//! What each VM's directory is a function of, as one digest per VM: the key under which a
//! sync remembers the tree a VM's render gave, so that the next sync can take that tree
//! instead of rendering the VM again (`git::reuse`).
//!
//! A VM's files depend on nothing but (fleet, group, VM) ([`super::workloads`]'s `vm`), and
//! the render is a pure function of the checked fleet, its root certificate and the meshvm
//! build. The digest is deliberately wider than what `vm` reads today: the build id, the root
//! certificate, every part of the fleet except the groups' instance lists (so any mesh,
//! gitops, sidecar or group setting, of any group, changes every VM's digest), the VM's
//! directory and the VM itself. Too wide only costs a render; too narrow would reuse a stale
//! directory, so when in doubt something belongs in here.

use rayon::prelude::*;
use sha2::{Digest as _, Sha256};

use crate::render::layout;
use crate::spec::{CheckedFleet, Fleet, Workload};

/// A VM's render-input digest (SHA-256).
pub type Digest = [u8; 32];

/// One VM's directory (relative to `gitops.path`) and its digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmDigest {
    pub dir: String,
    pub digest: Digest,
}

/// The digest of every VM of the fleet, in fleet order ([`Fleet::vms`]).
pub fn vm_digests(fleet: &CheckedFleet) -> Vec<VmDigest> {
    vm_digests_for_build(fleet, crate::spec::inputs::BUILD_ID)
}

/// [`vm_digests`] for another build (tests show that a new build changes every digest).
pub fn vm_digests_for_build(fleet: &CheckedFleet, build: &str) -> Vec<VmDigest> {
    let shared = shared_digest(fleet, build);
    let vms: Vec<_> = fleet.vms().collect();
    vms.par_iter()
        .map(|(w, vm)| {
            let dir = layout::vm_dir(&w.namespace, &w.name, &vm.name);
            let mut h = Sha256::new();
            h.update(shared);
            field(&mut h, "dir", dir.as_bytes());
            field(&mut h, "vm", &json(vm));
            VmDigest {
                dir,
                digest: h.finalize().into(),
            }
        })
        .collect()
}

/// Everything but the instance lists, hashed once for all VMs.
fn shared_digest(fleet: &CheckedFleet, build: &str) -> Digest {
    // Destructured without `..`: a field added to `Fleet` fails to compile here until it is
    // hashed (or shown not to feed a VM's render).
    let Fleet {
        api_version,
        kind,
        mesh,
        sidecar,
        gitops,
        workloads,
        join_broker,
    } = fleet.fleet();
    let mut h = Sha256::new();
    field(&mut h, "meshvm vm render inputs", b"v1");
    field(&mut h, "build", build.as_bytes());
    match fleet.root_cert() {
        Some(pem) => field(&mut h, "root-cert", pem.as_bytes()),
        None => field(&mut h, "no root-cert", b""),
    }
    field(&mut h, "apiVersion", api_version.as_bytes());
    field(&mut h, "kind", kind.as_bytes());
    field(&mut h, "mesh", &json(mesh));
    field(&mut h, "sidecar", &json(sidecar));
    field(&mut h, "gitops", &json(gitops));
    field(&mut h, "joinBroker", &json(join_broker));
    for w in workloads {
        let without_instances = Workload {
            instances: Vec::new(),
            ..w.clone()
        };
        field(&mut h, "workload", &json(&without_instances));
    }
    h.finalize().into()
}

/// A labelled, length-prefixed field: no two sequences of fields hash the same bytes.
fn field(h: &mut Sha256, label: &str, bytes: &[u8]) {
    h.update(format!("{label} {}\n", bytes.len()));
    h.update(bytes);
}

fn json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("fleet types serialize to JSON")
}
