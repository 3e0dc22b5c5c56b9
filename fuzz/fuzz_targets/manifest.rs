//! Image index / manifest blobs from a content store: parsing, picking a manifest and the wasm
//! layer, verifying a blob.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wasm_shim_oci::artifact::{self, Manifest};

const TYPES: &[&str] = &["", "application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json"];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, blob)) = data.split_first() else { return };
    let mt = TYPES[sel as usize % TYPES.len()];
    match artifact::parse_manifest(mt, blob) {
        Ok(Manifest::Index(ms)) => {
            let _ = artifact::pick_manifest(&ms, "amd64");
        }
        Ok(Manifest::Image(layers)) => {
            if let Ok(Some(l)) = artifact::select_wasm_layer(&layers, "/app.wasm") {
                let _ = artifact::verify_blob(&l, blob);
            }
        }
        Err(_) => {}
    }
});
