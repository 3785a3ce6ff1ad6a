//! istioctl-compatible mesh config reading, and the VM files rendered with it, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshvm::vmfiles::istioctl::{ConfigureOptions, configure, read_mesh_config};

const GROUP: &str = "apiVersion: networking.istio.io/v1\nkind: WorkloadGroup\nmetadata: {name: g, namespace: ns}\nspec: {template: {serviceAccount: sa}}\n";

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(mesh) = read_mesh_config(text, "fuzz.yaml".as_ref()) {
            let group = meshvm::vmfiles::istioctl::read_workload_group(GROUP, "g.yaml".as_ref()).expect("valid group");
            if let Ok(inputs) = configure(group, mesh, &ConfigureOptions::default()) {
                meshvm::vmfiles::render(&inputs);
            }
        }
    }
});
