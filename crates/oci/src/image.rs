//! Building OCI image layout tarballs from wasm files, for `ctr image import` (containerd 1.6+)
//! and `nerdctl load`.
//!
//! The tarball holds `oci-layout`, `index.json` (one manifest, named through the
//! `io.containerd.image.name` and `org.opencontainers.image.ref.name` annotations) and
//! `blobs/sha256/<hex>` for every layer, the config and the manifest. Two styles:
//!
//! - [`Style::Classic`]: one uncompressed tar layer holding the files, and a standard image
//!   config (`Entrypoint`, `Cmd`, `Env`, `WorkingDir`). Any runtime can unpack it.
//! - [`Style::Artifact`]: the wasm OCI artifact layout: config media type
//!   [`WASM_CONFIG_MEDIA_TYPE`] (an [`ArtifactConfig`], architecture `wasm`, os `wasip1`) and one
//!   [`WASM_LAYER_MEDIA_TYPE`] layer per wasm file, titled with its path.
//!
//! In both styles the index's platform is the [`ImageSpec`]'s `os`/`architecture` (the host's by
//! default), because `ctr image import` drops manifests that do not match the host platform.
//!
//! Output is deterministic: every tar header has mtime 0, uid/gid 0 and no user names, entries
//! are sorted, and JSON objects are written with sorted keys, so the same input gives the same
//! bytes and digests.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::str::FromStr;

use oci_spec::image::{
    Arch, ConfigBuilder, Descriptor, HistoryBuilder, ImageConfigurationBuilder, ImageIndexBuilder,
    ImageManifestBuilder, MediaType, Os, PlatformBuilder, RootFsBuilder, Sha256Digest,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tar::{EntryType, Header};

use crate::{classify, Kind, OciError};

/// Config media type of a wasm OCI artifact.
pub const WASM_CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
/// Layer media type of a wasm module or component in a wasm OCI artifact.
pub const WASM_LAYER_MEDIA_TYPE: &str = "application/wasm";

/// Annotation containerd's importer reads the image name from.
pub const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";
/// Standard OCI annotation for the tag of a manifest in an index.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Standard OCI annotation for a layer's file name.
pub const ANNOTATION_TITLE: &str = "org.opencontainers.image.title";

/// The `created` time written everywhere: the epoch, so builds are reproducible.
const EPOCH: &str = "1970-01-01T00:00:00Z";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Style {
    #[default]
    Classic,
    Artifact,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSpec {
    /// Image reference, e.g. "docker.io/library/hello-wasm:latest". Short names are completed
    /// the way Docker does ("hello" -> "docker.io/library/hello:latest").
    pub name: String,
    /// Rootfs content (Classic) or the wasm layers (Artifact). Parent directories are added.
    pub files: Vec<ImageFile>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub workdir: Option<String>,
    /// GOARCH name; see [`host_architecture`].
    pub architecture: String,
    /// GOOS name, "linux".
    pub os: String,
    pub style: Style,
}

impl ImageSpec {
    /// A classic image for the host platform with no files and no entrypoint yet.
    pub fn new(name: impl Into<String>) -> ImageSpec {
        ImageSpec {
            name: name.into(),
            files: Vec::new(),
            entrypoint: Vec::new(),
            cmd: Vec::new(),
            env: Vec::new(),
            workdir: None,
            architecture: host_architecture().to_string(),
            os: "linux".to_string(),
            style: Style::Classic,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFile {
    /// Path inside the rootfs ("/app.wasm"; the leading '/' is optional).
    pub path: String,
    pub data: Vec<u8>,
    /// Permission bits (e.g. 0o755).
    pub mode: u32,
    /// When set, the entry is a symbolic link to this target and `data` is ignored.
    pub link: Option<String>,
}

impl ImageFile {
    pub fn new(path: impl Into<String>, data: impl Into<Vec<u8>>, mode: u32) -> ImageFile {
        ImageFile {
            path: path.into(),
            data: data.into(),
            mode,
            link: None,
        }
    }

    pub fn symlink(path: impl Into<String>, target: impl Into<String>) -> ImageFile {
        ImageFile {
            path: path.into(),
            data: Vec::new(),
            mode: 0o777,
            link: Some(target.into()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// The full image name written to the index (after completing short names).
    pub name: String,
    /// "sha256:<hex>" of the manifest, config and each layer.
    pub manifest_digest: String,
    pub config_digest: String,
    pub layer_digests: Vec<String>,
}

/// The config blob of a wasm OCI artifact ([`WASM_CONFIG_MEDIA_TYPE`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// Always "wasm".
    pub architecture: String,
    /// Always "wasip1".
    pub os: String,
    /// The layers' digests, in layer order.
    #[serde(default)]
    pub layer_digests: Vec<String>,
    /// How to run it, with the same meaning as in a classic image config.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entrypoint: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cmd: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
}

/// The GOARCH name of the machine this runs on ("amd64", "arm64", ...).
pub fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        "loongarch64" => "loong64",
        other => other,
    }
}

/// Writes the image tarball for `spec` to `out`.
pub fn write_image_tar(spec: &ImageSpec, out: impl Write) -> Result<ImageInfo, OciError> {
    let (name, tag) = complete_name(&spec.name).map_err(|reason| invalid(spec, reason))?;
    if spec.os.is_empty() || spec.architecture.is_empty() {
        return Err(invalid(spec, "os and architecture must be set".into()));
    }
    let files = tree(spec)?;
    let write_err = |source: io::Error| OciError::ImageWrite {
        name: name.clone(),
        source,
    };

    // Layers, then the config that names them.
    let mut blobs = Blobs::default();
    let mut layers = Vec::new();
    let config_media_type;
    let config_blob;
    match spec.style {
        Style::Classic => {
            let layer = layer_tar(&files).map_err(write_err)?;
            let digest = blobs.add(layer);
            layers.push(digest.descriptor(MediaType::ImageLayer));
            config_media_type = MediaType::ImageConfig;
            config_blob = classic_config(spec, &digest.name).map_err(|e| invalid(spec, e))?;
        }
        Style::Artifact => {
            for (path, entry) in &files {
                let Entry::File { data, .. } = entry else {
                    continue; // directories are implied by the titles
                };
                let title = path.join("/");
                if !matches!(
                    classify(data, &title),
                    Kind::WasmModule | Kind::WasmComponent
                ) {
                    return Err(invalid(
                        spec,
                        format!("/{title}: artifact images hold only wasm modules and components"),
                    ));
                }
                let digest = blobs.add(data.clone());
                let mut desc = digest.descriptor(MediaType::Other(WASM_LAYER_MEDIA_TYPE.into()));
                desc.set_annotations(Some([(ANNOTATION_TITLE.to_string(), title)].into()));
                layers.push(desc);
            }
            if layers.is_empty() {
                return Err(invalid(
                    spec,
                    "an artifact image needs at least one wasm file".into(),
                ));
            }
            config_media_type = MediaType::Other(WASM_CONFIG_MEDIA_TYPE.into());
            config_blob = canonical_json(&ArtifactConfig {
                created: Some(EPOCH.to_string()),
                architecture: "wasm".into(),
                os: "wasip1".into(),
                layer_digests: layers.iter().map(|l| l.digest().to_string()).collect(),
                entrypoint: spec.entrypoint.clone(),
                cmd: spec.cmd.clone(),
                env: spec.env.clone(),
                working_dir: spec.workdir.clone(),
            })
            .map_err(|e| invalid(spec, e))?;
        }
    }
    let layer_digests = layers.iter().map(|l| l.digest().to_string()).collect();
    let config = blobs.add(config_blob);

    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config.descriptor(config_media_type))
        .layers(layers)
        .build()
        .map_err(|e| invalid(spec, e.to_string()))?;
    let manifest = blobs.add(canonical_json(&manifest).map_err(|e| invalid(spec, e))?);

    let mut manifest_desc = manifest.descriptor(MediaType::ImageManifest);
    manifest_desc.set_platform(Some(
        PlatformBuilder::default()
            .architecture(Arch::from(spec.architecture.as_str()))
            .os(Os::from(spec.os.as_str()))
            .build()
            .map_err(|e| invalid(spec, e.to_string()))?,
    ));
    manifest_desc.set_annotations(Some(
        [
            (ANNOTATION_IMAGE_NAME.to_string(), name.clone()),
            (ANNOTATION_REF_NAME.to_string(), tag),
        ]
        .into(),
    ));
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(vec![manifest_desc])
        .build()
        .map_err(|e| invalid(spec, e.to_string()))?;
    let index = canonical_json(&index).map_err(|e| invalid(spec, e))?;

    write_layout(out, &index, &blobs).map_err(write_err)?;
    Ok(ImageInfo {
        name,
        manifest_digest: manifest.name,
        config_digest: config.name,
        layer_digests,
    })
}

fn invalid(spec: &ImageSpec, reason: String) -> OciError {
    OciError::InvalidImage {
        name: spec.name.clone(),
        reason,
    }
}

/// Completes a short reference like Docker does and splits off the tag:
/// "hello" -> ("docker.io/library/hello:latest", "latest").
fn complete_name(name: &str) -> Result<(String, String), String> {
    if name.is_empty() {
        return Err("empty image name".into());
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("image name contains whitespace".into());
    }
    if name.contains('@') {
        return Err("digest references cannot be built; use NAME[:TAG]".into());
    }
    let (repo, tag) = match name.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, tag),
        _ => (name, "latest"),
    };
    if repo.is_empty() || tag.is_empty() || repo.split('/').any(str::is_empty) {
        return Err("malformed image name; expected [REGISTRY/]REPOSITORY[:TAG]".into());
    }
    let (domain, path) = match repo.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (first, rest.to_string())
        }
        _ => ("docker.io", repo.to_string()),
    };
    if path.chars().any(|c| c.is_ascii_uppercase()) {
        return Err("repository names must be lowercase".into());
    }
    let path = if domain == "docker.io" && !path.contains('/') {
        format!("library/{path}")
    } else {
        path
    };
    Ok((format!("{domain}/{path}:{tag}"), tag.to_string()))
}

/// One rootfs entry, keyed by its path components.
enum Entry {
    Dir,
    File { data: Vec<u8>, mode: u32 },
    Link(String),
}

/// The files of `spec` plus their parent directories, sorted so that a directory comes right
/// before its contents.
fn tree(spec: &ImageSpec) -> Result<BTreeMap<Vec<String>, Entry>, OciError> {
    let mut tree = BTreeMap::new();
    for file in &spec.files {
        let bad = |reason: &str| invalid(spec, format!("file {:?}: {reason}", file.path));
        let mut parts = Vec::new();
        for part in file.path.split('/') {
            match part {
                "" | "." => {}
                ".." => return Err(bad("'..' is not allowed")),
                p => parts.push(p.to_string()),
            }
        }
        if parts.is_empty() {
            return Err(bad("not a file path"));
        }
        if file.mode > 0o7777 {
            return Err(bad("mode has bits beyond 07777"));
        }
        for depth in 1..parts.len() {
            match tree.entry(parts[..depth].to_vec()).or_insert(Entry::Dir) {
                Entry::Dir => {}
                _ => return Err(bad("a parent directory is also listed as a file")),
            }
        }
        let entry = match &file.link {
            Some(target) if target.is_empty() => return Err(bad("empty symlink target")),
            Some(target) => Entry::Link(target.clone()),
            None => Entry::File {
                data: file.data.clone(),
                mode: file.mode,
            },
        };
        if tree.insert(parts, entry).is_some() {
            return Err(bad(
                "listed twice, or also a parent directory of another file",
            ));
        }
    }
    Ok(tree)
}

/// The uncompressed layer tar of a classic image.
fn layer_tar(files: &BTreeMap<Vec<String>, Entry>) -> io::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    for (parts, entry) in files {
        let path = parts.join("/");
        match entry {
            Entry::Dir => {
                let mut h = header(EntryType::Directory, 0o755, 0);
                tar.append_data(&mut h, format!("{path}/"), io::empty())?;
            }
            Entry::File { data, mode } => {
                let mut h = header(EntryType::Regular, *mode, data.len() as u64);
                tar.append_data(&mut h, &path, data.as_slice())?;
            }
            Entry::Link(target) => {
                let mut h = header(EntryType::Symlink, 0o777, 0);
                tar.append_link(&mut h, &path, target)?;
            }
        }
    }
    tar.into_inner()
}

/// A tar header with nothing that varies between builds.
fn header(kind: EntryType, mode: u32, size: u64) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h
}

fn classic_config(spec: &ImageSpec, diff_id: &str) -> Result<Vec<u8>, String> {
    let mut config = ConfigBuilder::default();
    if !spec.entrypoint.is_empty() {
        config = config.entrypoint(spec.entrypoint.clone());
    }
    if !spec.cmd.is_empty() {
        config = config.cmd(spec.cmd.clone());
    }
    if !spec.env.is_empty() {
        config = config.env(spec.env.clone());
    }
    if let Some(dir) = &spec.workdir {
        config = config.working_dir(dir.clone());
    }
    let image = ImageConfigurationBuilder::default()
        .created(EPOCH.to_string())
        .architecture(Arch::from(spec.architecture.as_str()))
        .os(Os::from(spec.os.as_str()))
        .config(config.build().map_err(|e| e.to_string())?)
        .rootfs(
            RootFsBuilder::default()
                .typ("layers".to_string())
                .diff_ids(vec![diff_id.to_string()])
                .build()
                .map_err(|e| e.to_string())?,
        )
        .history(vec![HistoryBuilder::default()
            .created(EPOCH.to_string())
            .created_by("wasm-image build".to_string())
            .build()
            .map_err(|e| e.to_string())?])
        .build()
        .map_err(|e| e.to_string())?;
    canonical_json(&image)
}

/// JSON with object keys sorted at every level (oci-spec keeps annotations in HashMaps).
fn canonical_json<T: Serialize>(value: &T) -> Result<Vec<u8>, String> {
    fn sort(v: serde_json::Value) -> serde_json::Value {
        use serde_json::Value;
        match v {
            Value::Object(map) => {
                let mut entries: Vec<_> = map.into_iter().collect();
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                Value::Object(entries.into_iter().map(|(k, v)| (k, sort(v))).collect())
            }
            Value::Array(items) => Value::Array(items.into_iter().map(sort).collect()),
            other => other,
        }
    }
    let value = serde_json::to_value(value).map_err(|e| e.to_string())?;
    serde_json::to_vec(&sort(value)).map_err(|e| e.to_string())
}

/// A blob's digest and size.
struct BlobRef {
    /// "sha256:<hex>".
    name: String,
    hex: String,
    size: u64,
}

impl BlobRef {
    fn descriptor(&self, media_type: MediaType) -> Descriptor {
        let digest = Sha256Digest::from_str(&self.hex).expect("sha256 hex is a valid digest");
        Descriptor::new(media_type, self.size, digest)
    }
}

/// The content-addressed blobs, each stored once.
#[derive(Default)]
struct Blobs(BTreeMap<String, Vec<u8>>);

impl Blobs {
    fn add(&mut self, data: Vec<u8>) -> BlobRef {
        let hex: String = Sha256::digest(&data)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let size = data.len() as u64;
        self.0.entry(hex.clone()).or_insert(data);
        BlobRef {
            name: format!("sha256:{hex}"),
            hex,
            size,
        }
    }
}

fn write_layout(out: impl Write, index: &[u8], blobs: &Blobs) -> io::Result<()> {
    let mut tar = tar::Builder::new(out);
    let file = |tar: &mut tar::Builder<_>, path: &str, data: &[u8]| {
        let mut h = header(EntryType::Regular, 0o644, data.len() as u64);
        tar.append_data(&mut h, path, data)
    };
    file(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    file(&mut tar, "index.json", index)?;
    for dir in ["blobs/", "blobs/sha256/"] {
        let mut h = header(EntryType::Directory, 0o755, 0);
        tar.append_data(&mut h, dir, io::empty())?;
    }
    for (hex, data) in &blobs.0 {
        file(&mut tar, &format!("blobs/sha256/{hex}"), data)?;
    }
    tar.into_inner()?.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};
    use std::collections::HashMap;
    use std::io::Read;

    const WASM: &[u8] = b"\0asm\x01\0\0\0";

    /// Every entry of a tar: path -> (type, mode, uid, mtime, data or link target).
    fn entries(tar_bytes: &[u8]) -> Vec<(String, EntryType, u32, u64, u64, Vec<u8>)> {
        let mut archive = tar::Archive::new(tar_bytes);
        let mut out = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let h = entry.header().clone();
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            let mut data = Vec::new();
            if h.entry_type() == EntryType::Symlink {
                data = entry.link_name_bytes().unwrap().into_owned();
            } else {
                entry.read_to_end(&mut data).unwrap();
            }
            out.push((
                path,
                h.entry_type(),
                h.mode().unwrap(),
                h.uid().unwrap(),
                h.mtime().unwrap(),
                data,
            ));
        }
        out
    }

    fn sha(data: &[u8]) -> String {
        let hex: String = Sha256::digest(data)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("sha256:{hex}")
    }

    /// Reads an image tarball back: files by path, checking every blob's digest on the way.
    struct Layout {
        files: HashMap<String, Vec<u8>>,
    }

    impl Layout {
        fn parse(bytes: &[u8]) -> Layout {
            let mut files = HashMap::new();
            for (path, kind, _, _, _, data) in entries(bytes) {
                if kind == EntryType::Regular {
                    if let Some(hex) = path.strip_prefix("blobs/sha256/") {
                        assert_eq!(sha(&data), format!("sha256:{hex}"), "blob {path}");
                    }
                    files.insert(path, data);
                }
            }
            Layout { files }
        }

        fn blob(&self, digest: &str, size: u64) -> &[u8] {
            let hex = digest.strip_prefix("sha256:").unwrap();
            let data = &self.files[&format!("blobs/sha256/{hex}")];
            assert_eq!(data.len() as u64, size, "size of {digest}");
            data
        }

        fn index(&self) -> ImageIndex {
            serde_json::from_slice(&self.files["index.json"]).unwrap()
        }

        fn manifest(&self) -> ImageManifest {
            let index = self.index();
            let desc = &index.manifests()[0];
            serde_json::from_slice(self.blob(desc.digest().as_ref(), desc.size())).unwrap()
        }
    }

    fn hello_spec() -> ImageSpec {
        let mut spec = ImageSpec::new("hello-wasm");
        spec.files = vec![
            ImageFile::new("/app/hello.wasm", WASM, 0o755),
            ImageFile::new("etc/greeting.txt", b"hi".to_vec(), 0o640),
            ImageFile::symlink("/bin/hello", "/app/hello.wasm"),
        ];
        spec.entrypoint = vec!["/app/hello.wasm".into(), "--loud".into()];
        spec.env = vec!["GREETING=hi".into()];
        spec.workdir = Some("/app".into());
        spec
    }

    #[test]
    fn classic_image_round_trips() {
        let mut out = Vec::new();
        let info = write_image_tar(&hello_spec(), &mut out).unwrap();
        assert_eq!(info.name, "docker.io/library/hello-wasm:latest");
        let layout = Layout::parse(&out);
        assert_eq!(
            layout.files["oci-layout"],
            br#"{"imageLayoutVersion":"1.0.0"}"#
        );

        let index = layout.index();
        assert_eq!(index.schema_version(), 2);
        assert_eq!(index.manifests().len(), 1);
        let desc = &index.manifests()[0];
        assert_eq!(desc.digest().to_string(), info.manifest_digest);
        assert_eq!(desc.media_type(), &MediaType::ImageManifest);
        let ann = desc.annotations().as_ref().unwrap();
        assert_eq!(
            ann[ANNOTATION_IMAGE_NAME],
            "docker.io/library/hello-wasm:latest"
        );
        assert_eq!(ann[ANNOTATION_REF_NAME], "latest");
        let platform = desc.platform().as_ref().unwrap();
        assert_eq!(platform.architecture().to_string(), host_architecture());
        assert_eq!(platform.os().to_string(), "linux");

        let manifest = layout.manifest();
        assert_eq!(manifest.config().digest().to_string(), info.config_digest);
        assert_eq!(manifest.config().media_type(), &MediaType::ImageConfig);
        assert_eq!(manifest.layers().len(), 1);
        let layer_desc = &manifest.layers()[0];
        assert_eq!(layer_desc.media_type(), &MediaType::ImageLayer);
        assert_eq!(vec![layer_desc.digest().to_string()], info.layer_digests);

        let config: ImageConfiguration =
            serde_json::from_slice(layout.blob(&info.config_digest, manifest.config().size()))
                .unwrap();
        assert_eq!(config.rootfs().diff_ids(), &info.layer_digests);
        assert_eq!(config.architecture().to_string(), host_architecture());
        let c = config.config().as_ref().unwrap();
        assert_eq!(
            c.entrypoint().as_deref(),
            Some(&["/app/hello.wasm".to_string(), "--loud".to_string()][..])
        );
        assert_eq!(c.env().as_deref(), Some(&["GREETING=hi".to_string()][..]));
        assert_eq!(c.working_dir().as_deref(), Some("/app"));
        assert_eq!(c.cmd(), &None);

        let layer = layout.blob(&info.layer_digests[0], layer_desc.size());
        let got: Vec<_> = entries(layer)
            .into_iter()
            .map(|(p, k, m, uid, mtime, data)| {
                assert_eq!((uid, mtime), (0, 0), "{p}");
                (p, k, m, data)
            })
            .collect();
        let dir = |p: &str| (p.to_string(), EntryType::Directory, 0o755, vec![]);
        assert_eq!(
            got,
            vec![
                dir("app/"),
                (
                    "app/hello.wasm".into(),
                    EntryType::Regular,
                    0o755,
                    WASM.to_vec()
                ),
                dir("bin/"),
                (
                    "bin/hello".into(),
                    EntryType::Symlink,
                    0o777,
                    b"/app/hello.wasm".to_vec()
                ),
                dir("etc/"),
                (
                    "etc/greeting.txt".into(),
                    EntryType::Regular,
                    0o640,
                    b"hi".to_vec()
                ),
            ]
        );
    }

    #[test]
    fn output_is_deterministic() {
        let mut a = Vec::new();
        let mut b = Vec::new();
        let info_a = write_image_tar(&hello_spec(), &mut a).unwrap();
        let mut spec = hello_spec();
        spec.files.reverse(); // input order does not matter either
        let info_b = write_image_tar(&spec, &mut b).unwrap();
        assert_eq!(info_a, info_b);
        assert!(a == b, "two builds of the same image differ");
        // ...and a different input gives a different image.
        spec.env.push("X=1".into());
        let info_c = write_image_tar(&spec, &mut Vec::new()).unwrap();
        assert_ne!(info_a.manifest_digest, info_c.manifest_digest);
        assert_eq!(info_a.layer_digests, info_c.layer_digests);
    }

    #[test]
    fn artifact_image() {
        let component = b"\0asm\x0d\x00\x01\x00".to_vec();
        let mut spec = ImageSpec::new("localhost:5000/wasm/app:v1");
        spec.style = Style::Artifact;
        spec.files = vec![
            ImageFile::new("/app.wasm", WASM, 0o644),
            ImageFile::new("/lib/comp.wasm", component.clone(), 0o644),
        ];
        spec.entrypoint = vec!["/app.wasm".into()];
        let mut out = Vec::new();
        let info = write_image_tar(&spec, &mut out).unwrap();
        assert_eq!(info.name, "localhost:5000/wasm/app:v1");
        let layout = Layout::parse(&out);
        assert_eq!(
            layout.index().manifests()[0]
                .annotations()
                .as_ref()
                .unwrap()[ANNOTATION_REF_NAME],
            "v1"
        );
        let manifest = layout.manifest();
        assert_eq!(
            manifest.config().media_type().to_string(),
            WASM_CONFIG_MEDIA_TYPE
        );
        let layers = manifest.layers();
        assert_eq!(layers.len(), 2);
        let titles: Vec<_> = layers
            .iter()
            .map(|l| {
                assert_eq!(l.media_type().to_string(), WASM_LAYER_MEDIA_TYPE);
                l.annotations().as_ref().unwrap()[ANNOTATION_TITLE].clone()
            })
            .collect();
        assert_eq!(titles, ["app.wasm", "lib/comp.wasm"]);
        assert_eq!(layout.blob(&info.layer_digests[0], layers[0].size()), WASM);
        assert_eq!(
            layout.blob(&info.layer_digests[1], layers[1].size()),
            component
        );
        let config: ArtifactConfig =
            serde_json::from_slice(layout.blob(&info.config_digest, manifest.config().size()))
                .unwrap();
        assert_eq!(
            (config.architecture.as_str(), config.os.as_str()),
            ("wasm", "wasip1")
        );
        assert_eq!(config.layer_digests, info.layer_digests);
        assert_eq!(config.entrypoint, ["/app.wasm"]);
    }

    #[test]
    fn artifact_rejects_non_wasm() {
        let mut spec = ImageSpec::new("x");
        spec.style = Style::Artifact;
        spec.files = vec![ImageFile::new("/notes.txt", b"text".to_vec(), 0o644)];
        let err = write_image_tar(&spec, Vec::new()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(
            err.to_string()
                .contains("/notes.txt: artifact images hold only wasm"),
            "{err}"
        );
    }

    #[test]
    fn long_paths_survive() {
        let long = format!("/{}/{}.wasm", "d".repeat(90), "f".repeat(90));
        let mut spec = ImageSpec::new("long");
        spec.files = vec![ImageFile::new(long.clone(), WASM, 0o755)];
        let mut out = Vec::new();
        let info = write_image_tar(&spec, &mut out).unwrap();
        let layout = Layout::parse(&out);
        let size = layout.manifest().layers()[0].size();
        let paths: Vec<_> = entries(layout.blob(&info.layer_digests[0], size))
            .into_iter()
            .map(|e| e.0)
            .collect();
        assert_eq!(paths[1], long[1..]);
    }

    #[test]
    fn name_completion() {
        let ok = |n: &str| complete_name(n).unwrap();
        assert_eq!(
            ok("hello"),
            ("docker.io/library/hello:latest".into(), "latest".into())
        );
        assert_eq!(
            ok("me/hello:1.0"),
            ("docker.io/me/hello:1.0".into(), "1.0".into())
        );
        assert_eq!(
            ok("docker.io/library/hello-wasm:latest").0,
            "docker.io/library/hello-wasm:latest"
        );
        assert_eq!(ok("ghcr.io/a/b/c").0, "ghcr.io/a/b/c:latest");
        assert_eq!(ok("localhost:5000/x").0, "localhost:5000/x:latest");
        for bad in ["", "a b", "Hello", "x@sha256:00", "a//b", "x:", "/x"] {
            assert!(complete_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bad_files() {
        for files in [
            vec![ImageFile::new("/a/../b", WASM, 0o644)],
            vec![ImageFile::new("/", WASM, 0o644)],
            vec![
                ImageFile::new("/a", WASM, 0o644),
                ImageFile::new("a", WASM, 0o644),
            ],
            vec![
                ImageFile::new("/a", WASM, 0o644),
                ImageFile::new("/a/b", WASM, 0o644),
            ],
            vec![
                ImageFile::new("/a/b", WASM, 0o644),
                ImageFile::new("/a", WASM, 0o644),
            ],
            vec![ImageFile::new("/a", WASM, 0o10644)],
        ] {
            let mut spec = ImageSpec::new("x");
            spec.files = files.clone();
            let err = write_image_tar(&spec, Vec::new()).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{files:?}");
            assert!(err.to_string().starts_with("image \"x\": file \""), "{err}");
        }
    }
}
