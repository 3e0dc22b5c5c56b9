//! `path#export` parsing: any string is accepted or refused with an error, never a panic, and
//! what is accepted round-trips.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|s: &str| {
    if let Ok(e) = wasm_shim_oci::parse_entrypoint(s) {
        assert!(!e.path.is_empty());
        let back = match &e.export {
            Some(x) => format!("{}#{x}", e.path),
            None => e.path.clone(),
        };
        assert_eq!(wasm_shim_oci::parse_entrypoint(&back).unwrap(), e);
    }
});
