//! The fleet file parser and checks must never panic, whatever the bytes; and a fleet they
//! accept renders: `render` takes the `CheckedFleet` only `spec` makes and returns the tree,
//! so "accepted ⇒ renders" is a fact of the types. Rendering stays here to catch a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(fleet) = meshvm::spec::load_fleet_str(text, "fuzz.yaml".as_ref()) {
            meshvm::render::render(&fleet);
        }
    }
});
