//! The fleet file parser and checks must never panic, whatever the bytes; and a fleet they
//! accept must render (the GitOps tree and every VM's files): validation is the only gate.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(fleet) = meshvm::spec::load_fleet_str(text, "fuzz.yaml".as_ref()) {
            if let Err(e) = meshvm::render::render(&fleet, None) {
                panic!("a valid fleet failed to render: {e}");
            }
        }
    }
});
