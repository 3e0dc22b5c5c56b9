//! `artifact::*`: wasm OCI artifacts (the program is an `application/wasm` layer, not a file of
//! a rootfs) read by the shim from containerd's content store. containerd 1.6.20 refuses to
//! unpack non-tar layers, so `ctr run` cannot use such an image here; the trials import it with
//! `--no-unpack` and create the container through containerd's GRPC API with the image name and
//! an empty rootfs, as a containerd that skips wasm layers at unpack (1.6.25+, 1.7.7+, 2.x) does.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use sha2::Digest;
use wasm_shim_e2e::ctr::ensure;
use wasm_shim_e2e::{guests, images, process, Stdin};
use wasm_shim_oci::{write_image_tar, ImageFile, ImageSpec, Style};

use super::Ctx;

const ARTIFACT_IMAGE: &str = "docker.io/wasmtest/hello-artifact:1";
const MYSTERY_IMAGE: &str = "docker.io/wasmtest/mystery-artifact:1";

fn import_no_unpack(cx: &Ctx, tar: &Path) -> Result<()> {
    cx.cd.ctr_ok(["images".as_ref(), "import".as_ref(), "--no-unpack".as_ref(), tar.as_os_str()]).map(drop)
}

/// Creates container `id` from `image` (no snapshot; the spec's root is an empty directory)
/// through containerd's Containers API, with the wasm runtime.
pub fn create_container(cx: &Ctx, id: &str, image: &str, args: &[&str]) -> Result<()> {
    let rootfs = cx.cd.dir.join(format!("empty-rootfs-{id}"));
    std::fs::create_dir_all(&rootfs)?;
    let spec_path = images::config_spec(&cx.cd, id, &rootfs, args, serde_json::json!({}))?;
    create_with_spec(cx, id, image, std::fs::read(&spec_path)?)
}

/// Creates container `id` (image name `image`, no snapshot) with the wasm runtime and `spec` as
/// its runtime spec, as given: containerd writes these bytes to the bundle's config.json.
pub fn create_with_spec(cx: &Ctx, id: &str, image: &str, spec: Vec<u8>) -> Result<()> {
    use containerd_client::services::v1::container::Runtime;
    use containerd_client::services::v1::{containers_client::ContainersClient, Container, CreateContainerRequest};
    use containerd_client::tonic::Request;
    use containerd_client::with_namespace;

    let socket = cx.cd.socket.clone();
    let namespace = cx.cd.namespace.clone();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let channel = containerd_client::connect(&socket).await.context("connect to containerd")?;
        let container = Container {
            id: id.to_string(),
            image: image.to_string(),
            runtime: Some(Runtime { name: "io.containerd.wasm.v1".into(), options: None }),
            spec: Some(prost_types::Any { type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec".into(), value: spec }),
            ..Default::default()
        };
        ContainersClient::new(channel)
            .create(with_namespace!(CreateContainerRequest { container: Some(container) }, namespace))
            .await
            .context("Containers.Create")?;
        Ok(())
    })
}

pub fn start_task(cx: &Ctx, id: &str) -> Result<wasm_shim_e2e::Output> {
    process::run(cx.cd.ctr(["tasks", "start", id]), Stdin::Null, Duration::from_secs(60))
}

pub fn cleanup(cx: &Ctx, id: &str) {
    let _ = cx.cd.ctr_output(["tasks", "delete", "--force", id]);
    let _ = cx.cd.container_rm(id);
}

/// The hello module as an artifact: `ctr task start` prints its output and exits 0.
pub fn runs_from_content_store(cx: &Ctx) -> Result<()> {
    let g = guests::Guests::load()?;
    let mut spec = ImageSpec::new(ARTIFACT_IMAGE);
    spec.style = Style::Artifact;
    spec.files = vec![ImageFile::new("/hello.wasm", g.get("hello").to_vec(), 0o644)];
    let tar = cx.cd.dir.join("hello-artifact.tar");
    write_image_tar(&spec, std::io::BufWriter::new(std::fs::File::create(&tar)?))?;
    import_no_unpack(cx, &tar)?;
    let id = "a-hello";
    create_container(cx, id, ARTIFACT_IMAGE, &["/hello.wasm"])?;
    let out = start_task(cx, id);
    cleanup(cx, id);
    let out = out?;
    println!("  {:?} exit {:?}", out.stdout.trim(), out.code);
    ensure(out.code == Some(0) && out.stdout.contains("hello"), || format!("{out}"))
}

/// An OCI layout tarball with one layer of an unknown media type, written by hand.
fn mystery_tar(path: &Path) -> Result<()> {
    mystery_tar_named(path, MYSTERY_IMAGE)
}

/// The same, naming the image `image`.
pub fn mystery_tar_named(path: &Path, image: &str) -> Result<()> {
    let blob = |data: &[u8]| (format!("sha256:{:x}", sha2::Sha256::digest(data)), data.len());
    let layer = b"\0asm\x01\0\0\0".to_vec();
    let config = br#"{"architecture":"wasm","os":"wasip1"}"#.to_vec();
    let (ld, ls) = blob(&layer);
    let (cd, cs) = blob(&config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.wasm.config.v0+json", "digest": cd, "size": cs},
        "layers": [{"mediaType": "application/x-mystery", "digest": ld, "size": ls}],
    }))?;
    let (md, ms) = blob(&manifest);
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms,
            "annotations": {"io.containerd.image.name": image, "org.opencontainers.image.ref.name": image.rsplit(':').next().unwrap_or("1")}}],
    }))?;
    let mut t = tar::Builder::new(std::fs::File::create(path)?);
    let mut add = |name: &str, data: &[u8]| -> Result<()> {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        t.append_data(&mut h, name, data)?;
        Ok(())
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    add("index.json", &index)?;
    for (d, data) in [(&ld, &layer), (&cd, &config), (&md, &manifest)] {
        add(&format!("blobs/sha256/{}", d.trim_start_matches("sha256:")), data)?;
    }
    t.into_inner()?.flush()?;
    Ok(())
}

/// A layer of a media type that is neither wasm nor a filesystem: Create fails with a message
/// naming the type, and nothing is left (the harness checks).
pub fn unknown_media_type_is_refused(cx: &Ctx) -> Result<()> {
    let tar = cx.cd.dir.join("mystery-artifact.tar");
    mystery_tar(&tar)?;
    import_no_unpack(cx, &tar)?;
    let id = "a-mystery";
    create_container(cx, id, MYSTERY_IMAGE, &["/app.wasm"])?;
    let out = start_task(cx, id);
    cleanup(cx, id);
    let out = out?;
    println!("  {}", out.stderr.trim());
    ensure(!out.success() && out.stderr.contains("application/x-mystery") && out.stderr.contains(MYSTERY_IMAGE), || format!("{out}"))
}
