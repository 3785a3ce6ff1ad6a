//! The fleet file parser and checks must never panic, whatever the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = meshvm::spec::load_fleet_str(text, "fuzz.yaml".as_ref());
    }
});
