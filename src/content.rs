//! Wasm OCI artifacts from containerd's content store: when a container's entrypoint is not a
//! file of its rootfs, the image it was created from may carry the program as a wasm layer
//! (`application/wasm`, …) instead of a filesystem. The shim asks containerd over its GRPC API
//! (the address containerd started the shim with): the container's image, the image's
//! manifest, the layer, each checked against its digest.

use std::time::Duration;

use containerd_client::services::v1::{
    containers_client::ContainersClient, content_client::ContentClient, images_client::ImagesClient, GetContainerRequest,
    GetImageRequest, ReadContentRequest,
};
use containerd_client::tonic::Request;
use containerd_client::with_namespace;
use log::debug;
use oci_spec::image::Descriptor;
use wasm_shim_oci::artifact::{self, Manifest};

use crate::errors::{Result, ShimError};

/// Manifests and indexes are small; a wasm layer is bounded like any module
/// (`WASM_SHIM_MAX_MODULE_SIZE`).
const MAX_MANIFEST: u64 = 4 << 20;

/// A wasm layer read from the content store.
pub struct Artifact {
    /// For messages: `image@digest` (and the layer's title when it has one).
    pub name: String,
    pub bytes: Vec<u8>,
}

/// The wasm layer of container `id`'s image, `None` if the image is an ordinary one (only
/// filesystem layers) or the container has no image. `wanted` is the entrypoint, used to pick
/// among several wasm layers by their title.
pub fn wasm_layer(address: &str, namespace: &str, id: &str, wanted: &str) -> Result<Option<Artifact>> {
    if address.is_empty() {
        return Ok(None);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ShimError::internal(format!("runtime for containerd's API: {e}")))?;
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(30), fetch(address, namespace, id, wanted))
            .await
            .map_err(|_| ShimError::internal(format!("reading the image of {id} from containerd at {address}: timed out")))?
    })
}

fn grpc_error(what: &str, e: containerd_client::tonic::Status) -> ShimError {
    let kind = if e.code() == containerd_client::tonic::Code::NotFound {
        crate::errors::ErrorKind::NotFound
    } else {
        crate::errors::ErrorKind::Internal
    };
    ShimError::new(kind, format!("{what}: {}", e.message()))
}

async fn fetch(address: &str, namespace: &str, id: &str, wanted: &str) -> Result<Option<Artifact>> {
    let path = address.strip_prefix("unix://").unwrap_or(address).to_string();
    let channel = containerd_client::connect(&path)
        .await
        .map_err(|e| ShimError::internal(format!("connect to containerd at {path}: {e}")))?;

    let container = ContainersClient::new(channel.clone())
        .get(with_namespace!(GetContainerRequest { id: id.to_string() }, namespace))
        .await
        .map_err(|e| grpc_error(&format!("container {id}"), e))?
        .into_inner()
        .container
        .ok_or_else(|| ShimError::internal(format!("container {id}: containerd returned no container")))?;
    let image_name = container.image;
    if image_name.is_empty() {
        return Ok(None);
    }
    let image = ImagesClient::new(channel.clone())
        .get(with_namespace!(GetImageRequest { name: image_name.clone() }, namespace))
        .await
        .map_err(|e| grpc_error(&format!("image {image_name}"), e))?
        .into_inner()
        .image
        .ok_or_else(|| ShimError::not_found(format!("image {image_name}: not in containerd's image store")))?;
    let target = image.target.ok_or_else(|| ShimError::invalid(format!("image {image_name}: no target descriptor")))?;
    let bad = |e: wasm_shim_oci::OciError| ShimError::invalid(format!("image {image_name}: {e}"));

    let mut content = ContentClient::new(channel);
    let mut desc = to_descriptor(&target.media_type, &target.digest, target.size)?;
    // An index points at manifests; follow at most one level (an index of indexes is refused).
    for depth in 0..2 {
        let blob = read_blob(&mut content, namespace, &desc, MAX_MANIFEST).await.map_err(|e| e.prefixed(&image_name))?;
        artifact::verify_blob(&desc, &blob).map_err(bad)?;
        match artifact::parse_manifest(desc.media_type().as_ref(), &blob).map_err(bad)? {
            Manifest::Index(ms) if depth == 0 => {
                desc = artifact::pick_manifest(&ms, wasm_shim_oci::image::host_architecture()).map_err(bad)?;
            }
            Manifest::Index(_) => return Err(ShimError::invalid(format!("image {image_name}: an index inside an index is not supported"))),
            Manifest::Image(layers) => {
                let Some(layer) = artifact::select_wasm_layer(&layers, wanted).map_err(bad)? else {
                    return Ok(None);
                };
                let bytes = read_blob(&mut content, namespace, &layer, crate::settings::Settings::current().max_module_size).await.map_err(|e| e.prefixed(&image_name))?;
                artifact::verify_blob(&layer, &bytes).map_err(bad)?;
                debug!("{id}: wasm layer {} ({} bytes) of {image_name}", layer.digest(), bytes.len());
                return Ok(Some(Artifact { name: format!("{image_name}@{}", layer.digest()), bytes }));
            }
        }
    }
    Err(ShimError::invalid(format!("image {image_name}: no image manifest found")))
}

fn to_descriptor(media_type: &str, digest: &str, size: i64) -> Result<Descriptor> {
    let d = serde_json::json!({"mediaType": media_type, "digest": digest, "size": size.max(0)});
    serde_json::from_value(d).map_err(|e| ShimError::invalid(format!("descriptor {digest}: {e}")))
}

async fn read_blob(
    content: &mut ContentClient<containerd_client::tonic::transport::Channel>,
    namespace: &str,
    desc: &Descriptor,
    limit: u64,
) -> Result<Vec<u8>> {
    let digest = desc.digest().to_string();
    if desc.size() > limit {
        return Err(ShimError::invalid(format!("blob {digest}: {} bytes is more than the {limit} allowed", desc.size())));
    }
    let mut stream = content
        .read(with_namespace!(ReadContentRequest { digest: digest.clone(), offset: 0, size: 0 }, namespace))
        .await
        .map_err(|e| grpc_error(&format!("blob {digest}"), e))?
        .into_inner();
    let mut out = Vec::with_capacity(desc.size() as usize);
    while let Some(chunk) = stream.message().await.map_err(|e| grpc_error(&format!("blob {digest}"), e))? {
        out.extend_from_slice(&chunk.data);
        if out.len() as u64 > limit {
            return Err(ShimError::invalid(format!("blob {digest}: larger than the {limit} bytes allowed")));
        }
    }
    Ok(out)
}

impl ShimError {
    fn prefixed(mut self, image: &str) -> ShimError {
        self.message = format!("image {image}: {}", self.message);
        self
    }
}
