//! Telling wasm, components, WAT, ELF and scripts apart from a file's first bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let head = &data[..data.len().min(wasm_shim_oci::classify::HEADER_LEN)];
    let k = wasm_shim_oci::classify(head, "x");
    if k.is_wasm() && !matches!(k, wasm_shim_oci::Kind::Wat) {
        assert!(head.starts_with(b"\0asm"));
    }
});
