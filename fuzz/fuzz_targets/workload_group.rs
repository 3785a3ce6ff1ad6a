//! istioctl-compatible WorkloadGroup reading, and the VM files rendered from it, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshvm::vmfiles::istioctl::{ConfigureOptions, configure, read_workload_group};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(group) = read_workload_group(text, "fuzz.yaml".as_ref()) {
            if let Ok(inputs) =
                configure(group, serde_json::Value::Null, &ConfigureOptions::default())
            {
                meshvm::vmfiles::render(&inputs);
            }
        }
    }
});
