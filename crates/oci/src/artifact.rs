//! Wasm OCI artifacts: images whose layers are `.wasm` blobs rather than tar filesystems (as
//! `wasm-to-oci`, `wkg`, `oras` and runwasi's builder push them). Given an image's index or
//! manifest (JSON from containerd's content store), decide which layer is the program.

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};

use crate::image::ANNOTATION_TITLE;
use crate::OciError;

/// Layer media types that carry a wasm module or component.
pub const WASM_LAYER_TYPES: &[&str] = &[
    "application/wasm",
    "application/vnd.wasm.content.layer.v1+wasm",
    "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm",
    "application/vnd.module.wasm.content.layer.v1+wasm",
];

/// Layer media types of ordinary filesystem layers (unpacked by containerd into the rootfs).
pub const TAR_LAYER_TYPES: &[&str] = &[
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
];

/// Media types of an index (a multi-platform image).
pub const INDEX_TYPES: &[&str] = &["application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json"];

/// What a manifest's blob is, by media type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Manifest {
    /// An index: pick one of these manifests (see [`pick_manifest`]).
    Index(Vec<Descriptor>),
    /// An image manifest: its layers.
    Image(Vec<Descriptor>),
}

/// Parses an index or manifest blob; `media_type` is the descriptor's (the blob's own
/// `mediaType` field is used when the descriptor gives none).
pub fn parse_manifest(media_type: &str, blob: &[u8]) -> Result<Manifest, OciError> {
    let declared: Option<String> = serde_json::from_slice::<serde_json::Value>(blob)
        .ok()
        .and_then(|v| v.get("mediaType").and_then(|m| m.as_str()).map(String::from));
    let is_index = INDEX_TYPES.contains(&media_type)
        || declared.as_deref().map(|d| INDEX_TYPES.contains(&d)).unwrap_or(false)
        || (media_type.is_empty() && serde_json::from_slice::<serde_json::Value>(blob).ok().map(|v| v.get("manifests").is_some()).unwrap_or(false));
    if is_index {
        let index: ImageIndex = serde_json::from_slice(blob).map_err(|e| OciError::BadManifest(format!("image index: {e}")))?;
        return Ok(Manifest::Index(index.manifests().clone()));
    }
    let manifest: ImageManifest = serde_json::from_slice(blob).map_err(|e| OciError::BadManifest(format!("image manifest: {e}")))?;
    Ok(Manifest::Image(manifest.layers().clone()))
}

/// From an index: a manifest for wasm (`arch` `wasm`, any os), else one for this host's
/// architecture on Linux, else the only one.
pub fn pick_manifest(manifests: &[Descriptor], host_arch: &str) -> Result<Descriptor, OciError> {
    let arch_of = |d: &Descriptor| d.platform().as_ref().map(|p| p.architecture().to_string()).unwrap_or_default();
    let os_of = |d: &Descriptor| d.platform().as_ref().map(|p| p.os().to_string()).unwrap_or_default();
    if let Some(d) = manifests.iter().find(|d| arch_of(d) == "wasm") {
        return Ok(d.clone());
    }
    if let Some(d) = manifests.iter().find(|d| arch_of(d) == host_arch && os_of(d) == "linux") {
        return Ok(d.clone());
    }
    match manifests {
        [only] => Ok(only.clone()),
        [] => Err(OciError::BadManifest("the image index lists no manifests".into())),
        _ => {
            let platforms: Vec<String> = manifests.iter().map(|d| format!("{}/{}", os_of(d), arch_of(d))).collect();
            Err(OciError::BadManifest(format!(
                "no manifest for wasm or linux/{host_arch} in the image index (platforms: {})",
                platforms.join(", ")
            )))
        }
    }
}

/// The wasm layer to run from an image manifest's layers, or `None` for an ordinary image (tar
/// layers only). `wanted` is the entrypoint's file name: among several wasm layers, the one whose
/// `org.opencontainers.image.title` matches it, else the first. A layer of a media type that is
/// neither tar nor wasm is an error, never skipped silently.
pub fn select_wasm_layer(layers: &[Descriptor], wanted: &str) -> Result<Option<Descriptor>, OciError> {
    let mut wasm = Vec::new();
    for l in layers {
        let mt = l.media_type().to_string();
        if WASM_LAYER_TYPES.contains(&mt.as_str()) {
            wasm.push(l);
        } else if !TAR_LAYER_TYPES.contains(&mt.as_str()) {
            return Err(OciError::BadManifest(format!(
                "layer {} has media type {mt:?}, which is neither a wasm layer ({}) nor a filesystem layer",
                l.digest(),
                WASM_LAYER_TYPES.join(", ")
            )));
        }
    }
    let title = |d: &Descriptor| d.annotations().as_ref().and_then(|a| a.get(ANNOTATION_TITLE).cloned()).unwrap_or_default();
    let base = wanted.rsplit('/').next().unwrap_or(wanted);
    if let Some(d) = wasm.iter().find(|d| !base.is_empty() && title(d) == base) {
        return Ok(Some((*d).clone()));
    }
    Ok(wasm.first().map(|d| (*d).clone()))
}

/// Checks a blob against its descriptor's digest and size.
pub fn verify_blob(desc: &Descriptor, blob: &[u8]) -> Result<(), OciError> {
    use sha2::Digest;
    let want = desc.digest().to_string();
    if desc.size() != blob.len() as u64 {
        return Err(OciError::BadManifest(format!("blob {want}: {} bytes, the manifest says {}", blob.len(), desc.size())));
    }
    let Some(hex) = want.strip_prefix("sha256:") else {
        return Err(OciError::BadManifest(format!("blob {want}: only sha256 digests are supported")));
    };
    let got = format!("{:x}", sha2::Sha256::digest(blob));
    if got != hex {
        return Err(OciError::BadManifest(format!("blob {want}: content does not match its digest (sha256:{got})")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(media_type: &str, data: &[u8], title: Option<&str>) -> serde_json::Value {
        use sha2::Digest;
        let mut d = serde_json::json!({
            "mediaType": media_type,
            "digest": format!("sha256:{:x}", sha2::Sha256::digest(data)),
            "size": data.len(),
        });
        if let Some(t) = title {
            d["annotations"] = serde_json::json!({ANNOTATION_TITLE: t});
        }
        d
    }

    fn manifest(layers: Vec<serde_json::Value>) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": desc("application/vnd.wasm.config.v0+json", b"{}", None),
            "layers": layers,
        }))
        .unwrap()
    }

    fn layers(blob: &[u8]) -> Vec<Descriptor> {
        match parse_manifest("application/vnd.oci.image.manifest.v1+json", blob).unwrap() {
            Manifest::Image(l) => l,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_wasm_media_type_is_a_wasm_layer() {
        for mt in WASM_LAYER_TYPES {
            let l = layers(&manifest(vec![desc(mt, b"\0asm", None)]));
            assert_eq!(select_wasm_layer(&l, "/app.wasm").unwrap().unwrap().media_type().to_string(), *mt);
        }
    }

    #[test]
    fn tar_only_image_is_not_an_artifact() {
        let l = layers(&manifest(vec![desc("application/vnd.oci.image.layer.v1.tar+gzip", b"x", None)]));
        assert_eq!(select_wasm_layer(&l, "/app.wasm").unwrap(), None);
    }

    #[test]
    fn unknown_media_type_is_an_error_naming_it() {
        let l = layers(&manifest(vec![desc("application/x-mystery", b"x", None)]));
        let e = select_wasm_layer(&l, "/app.wasm").unwrap_err().to_string();
        assert!(e.contains("application/x-mystery") && e.contains("neither"), "{e}");
    }

    #[test]
    fn title_picks_among_several_layers() {
        let l = layers(&manifest(vec![
            desc("application/wasm", b"one", Some("one.wasm")),
            desc("application/wasm", b"two", Some("two.wasm")),
        ]));
        let pick = |w: &str| select_wasm_layer(&l, w).unwrap().unwrap().annotations().clone().unwrap()[ANNOTATION_TITLE].clone();
        assert_eq!(pick("/two.wasm"), "two.wasm");
        assert_eq!(pick("two.wasm"), "two.wasm");
        assert_eq!(pick("/other"), "one.wasm");
    }

    #[test]
    fn index_prefers_wasm_then_host_linux() {
        let m = |os: &str, arch: &str| {
            let mut d = desc("application/vnd.oci.image.manifest.v1+json", format!("{os}{arch}").as_bytes(), None);
            d["platform"] = serde_json::json!({"os": os, "architecture": arch});
            d
        };
        let index = |ms: Vec<serde_json::Value>| {
            serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": ms})).unwrap()
        };
        let pick = |blob: Vec<u8>| match parse_manifest("", &blob).unwrap() {
            Manifest::Index(ms) => pick_manifest(&ms, "amd64").map(|d| d.platform().clone().unwrap().architecture().to_string()),
            other => panic!("{other:?}"),
        };
        assert_eq!(pick(index(vec![m("linux", "arm64"), m("wasip1", "wasm"), m("linux", "amd64")])).unwrap(), "wasm");
        assert_eq!(pick(index(vec![m("linux", "arm64"), m("linux", "amd64")])).unwrap(), "amd64");
        let e = pick(index(vec![m("linux", "arm64"), m("linux", "s390x")])).unwrap_err().to_string();
        assert!(e.contains("linux/arm64") && e.contains("linux/amd64"), "{e}");
    }

    #[test]
    fn blobs_are_checked_against_digest_and_size() {
        let l = layers(&manifest(vec![desc("application/wasm", b"\0asm\x01\0\0\0", None)]));
        assert!(verify_blob(&l[0], b"\0asm\x01\0\0\0").is_ok());
        let e = verify_blob(&l[0], b"\0asm\x01\0\0\x01").unwrap_err().to_string();
        assert!(e.contains("does not match its digest"), "{e}");
        let e = verify_blob(&l[0], b"\0asm").unwrap_err().to_string();
        assert!(e.contains("4 bytes"), "{e}");
    }

    #[test]
    fn garbage_manifest_is_an_error() {
        assert!(parse_manifest("application/vnd.oci.image.manifest.v1+json", b"not json").is_err());
    }
}
