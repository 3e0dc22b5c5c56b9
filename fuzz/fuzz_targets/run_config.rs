//! A runtime spec (any JSON containerd could write) to the engine's run configuration.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(spec) = serde_json::from_slice::<oci_spec::runtime::Spec>(data) {
        if let Ok(rc) = wasm_shim_oci::run_config(&spec) {
            assert!(rc.cwd.starts_with('/'));
            assert!(!rc.args.is_empty());
        }
    }
});
