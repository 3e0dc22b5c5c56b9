//! Finding a classic image's program in its layer tarballs, without unpacking them: what
//! `precompile` needs to compile a `.wasm` entrypoint before any container of the image exists.
//!
//! - [`ImageCommand::from_config`] reads an image config (`Entrypoint`, `Cmd`, `Env`,
//!   `WorkingDir`, platform) into the `args[0]` a container of it would run, as ctr and the CRI
//!   build `process.args`.
//! - [`LayerIndex`] holds the headers of every layer (bottom first) and answers where a path of
//!   the merged rootfs is, as overlayfs would show it: upper layers win, whiteouts (`.wh.name`)
//!   and opaque directories (`.wh..wh..opq`) hide what is below, symbolic links are followed
//!   inside the image (an absolute target starts again at `/`, `..` stops at `/`).
//! - [`read_file`] takes one file's bytes out of one layer.
//! - [`decompressed`] opens a layer blob by its media type (plain tar, gzip).
//!
//! Like [`crate::resolve`] it looks a name without `/` up in the image's `PATH` and a relative
//! one under its working directory, and only a regular file matches.

use std::collections::{HashMap, HashSet};
use std::io::Read;

use tar::EntryType;

use crate::OciError;

/// Linux's limit on symbolic links followed while resolving one path.
const MAX_SYMLINKS: usize = 40;
const WHITEOUT: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

/// What a container of an image runs, from the image's config.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImageCommand {
    /// `Entrypoint` followed by `Cmd`; its first element is the program.
    pub args: Vec<String>,
    /// `PATH` from the config's `Env`, if set.
    pub path_env: Option<String>,
    /// `WorkingDir`, `/` when unset.
    pub cwd: String,
    pub architecture: String,
    pub os: String,
}

impl ImageCommand {
    /// Reads an image config blob (`application/vnd.oci.image.config.v1+json` or Docker's).
    pub fn from_config(blob: &[u8]) -> Result<ImageCommand, OciError> {
        let v: serde_json::Value = serde_json::from_slice(blob).map_err(|e| OciError::BadManifest(format!("image config: {e}")))?;
        let strings = |v: Option<&serde_json::Value>| -> Vec<String> {
            v.and_then(|a| a.as_array()).map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect()).unwrap_or_default()
        };
        let config = v.get("config");
        let mut args = strings(config.and_then(|c| c.get("Entrypoint")));
        args.extend(strings(config.and_then(|c| c.get("Cmd"))));
        let path_env = strings(config.and_then(|c| c.get("Env"))).into_iter().find_map(|e| e.strip_prefix("PATH=").map(String::from));
        let cwd = config.and_then(|c| c.get("WorkingDir")).and_then(|w| w.as_str()).filter(|w| !w.is_empty()).unwrap_or("/").to_string();
        let text = |k: &str| v.get(k).and_then(|s| s.as_str()).unwrap_or_default().to_string();
        Ok(ImageCommand { args, path_env, cwd, architecture: text("architecture"), os: text("os") })
    }

    /// The program, without a `#export` suffix; `None` when the image names none.
    pub fn program(&self) -> Option<String> {
        let arg0 = self.args.first().filter(|a| !a.is_empty())?;
        Some(crate::parse_entrypoint(arg0).map(|e| e.path).unwrap_or_else(|_| arg0.clone()))
    }

    /// Whether the image says it is wasm before any layer is read: a program named `*.wasm` or
    /// `*.wat`, or a wasm platform (`wasm` architecture, a `wasi*` os).
    pub fn says_wasm(&self) -> bool {
        let named = self.program().is_some_and(|p| p.ends_with(".wasm") || p.ends_with(".wat"));
        named || self.architecture == "wasm" || self.os.starts_with("wasi")
    }
}

/// Opens a layer blob as a tar stream, by its media type. zstd layers are refused by name.
pub fn decompressed<'a, R: Read + 'a>(media_type: &str, blob: R) -> Result<Box<dyn Read + 'a>, OciError> {
    if media_type.ends_with("+zstd") || media_type.ends_with(".zstd") {
        return Err(OciError::BadManifest(format!("layer media type {media_type:?}: zstd layers are not supported")));
    }
    if media_type.ends_with("+gzip") || media_type.ends_with(".gzip") {
        return Ok(Box::new(flate2::read::GzDecoder::new(blob)));
    }
    if media_type.ends_with(".tar") || media_type.ends_with("diff.tar") {
        return Ok(Box::new(blob));
    }
    Err(OciError::BadManifest(format!("layer media type {media_type:?} is not a filesystem layer")))
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    File { mode: u32 },
    Dir,
    Symlink(String),
    /// A tar hard link: another path of the same layer.
    Hardlink(String),
    Other,
}

/// The headers of one layer.
#[derive(Debug, Default)]
struct Layer {
    nodes: HashMap<String, Node>,
    /// Paths a whiteout removes from the layers below.
    whiteouts: HashSet<String>,
    /// Directories whose lower content this layer hides.
    opaque: HashSet<String>,
}

/// `./a//b/` → `a/b`; `None` for the root itself.
fn normalize(name: &str) -> Option<String> {
    let parts: Vec<&str> = name.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
    (!parts.is_empty()).then(|| parts.join("/"))
}

fn parent_and_name(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("", path),
    }
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() { name.to_string() } else { format!("{dir}/{name}") }
}

/// Where a file of the merged rootfs is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Index of the layer holding it (0 is the bottom layer).
    pub layer: usize,
    /// Its entry name in that layer, normalized (`app.wasm`, `usr/bin/app.wasm`).
    pub entry: String,
    /// The path asked for, symlinks followed (`/usr/bin/app.wasm`).
    pub path: String,
    /// Permission bits.
    pub mode: u32,
}

/// The headers of an image's layers, bottom first.
#[derive(Debug, Default)]
pub struct LayerIndex {
    layers: Vec<Layer>,
}

enum Lookup<'a> {
    Hit(usize, &'a Node),
    Missing,
}

impl LayerIndex {
    pub fn new() -> LayerIndex {
        LayerIndex::default()
    }

    /// Reads the next layer's headers (the layers must come bottom first). The data is skipped.
    pub fn add_layer(&mut self, tar_stream: impl Read) -> Result<(), OciError> {
        let bad = |e: std::io::Error| OciError::BadManifest(format!("layer {}: not a readable tar stream: {e}", self.layers.len()));
        let mut layer = Layer::default();
        let mut archive = tar::Archive::new(tar_stream);
        for entry in archive.entries().map_err(bad)? {
            let entry = entry.map_err(bad)?;
            let header = entry.header();
            let raw = entry.path().map_err(bad)?.to_string_lossy().into_owned();
            let Some(path) = normalize(&raw) else { continue };
            let (dir, name) = parent_and_name(&path);
            if name == OPAQUE {
                layer.opaque.insert(dir.to_string());
                continue;
            }
            if let Some(hidden) = name.strip_prefix(WHITEOUT) {
                layer.whiteouts.insert(join(dir, hidden));
                continue;
            }
            let link = || entry.link_name().ok().flatten().map(|l| l.to_string_lossy().into_owned()).unwrap_or_default();
            let node = match header.entry_type() {
                EntryType::Regular | EntryType::Continuous => Node::File { mode: header.mode().unwrap_or(0) },
                EntryType::Directory => Node::Dir,
                EntryType::Symlink => Node::Symlink(link()),
                EntryType::Link => Node::Hardlink(normalize(&link()).unwrap_or_default()),
                _ => Node::Other,
            };
            layer.nodes.insert(path, node);
        }
        self.layers.push(layer);
        Ok(())
    }

    pub fn layer_count(&self) -> usize {
        self.layers.len()
    }

    /// `path` (normalized, no symlink in its directories) in the merged view: the topmost
    /// layer that has it, unless a layer above hides it.
    fn lookup(&self, path: &str) -> Lookup<'_> {
        let ancestors: Vec<&str> = path.match_indices('/').map(|(i, _)| &path[..i]).collect();
        for (i, layer) in self.layers.iter().enumerate().rev() {
            if let Some(node) = layer.nodes.get(path) {
                return Lookup::Hit(i, node);
            }
            let hidden = layer.whiteouts.contains(path)
                || layer.opaque.contains("")
                || ancestors.iter().any(|a| {
                    layer.whiteouts.contains(*a)
                        || layer.opaque.contains(*a)
                        || layer.nodes.get(*a).is_some_and(|n| !matches!(n, Node::Dir | Node::Symlink(_)))
                });
            if hidden {
                return Lookup::Missing;
            }
        }
        Lookup::Missing
    }

    /// Resolves an absolute path in the merged rootfs to a regular file.
    pub fn resolve(&self, path: &str) -> Option<Found> {
        let mut pending: Vec<String> = path.split('/').filter(|p| !p.is_empty()).map(String::from).collect();
        pending.reverse();
        let mut dir: Vec<String> = Vec::new();
        let mut links = 0;
        while let Some(part) = pending.pop() {
            match part.as_str() {
                "." => continue,
                ".." => {
                    dir.pop();
                    continue;
                }
                _ => {}
            }
            let here = join(&dir.join("/"), &part);
            let last = pending.is_empty();
            match self.lookup(&here) {
                Lookup::Hit(_, node @ (Node::Symlink(target) | Node::Hardlink(target))) => {
                    links += 1;
                    if links > MAX_SYMLINKS {
                        return None;
                    }
                    // A hard link names a path from the archive's root.
                    if target.starts_with('/') || matches!(node, Node::Hardlink(_)) {
                        dir.clear();
                    }
                    pending.extend(target.split('/').filter(|p| !p.is_empty()).rev().map(String::from));
                }
                Lookup::Hit(layer, Node::File { mode }) if last => {
                    return Some(Found { layer, entry: here.clone(), path: format!("/{here}"), mode: *mode });
                }
                Lookup::Hit(_, Node::File { .. } | Node::Other) => return None,
                Lookup::Hit(_, Node::Dir) if last => return None,
                // A directory, or one only implied by the entries below it.
                Lookup::Hit(_, Node::Dir) | Lookup::Missing if !last => dir.push(part),
                Lookup::Missing | Lookup::Hit(_, Node::Dir) => return None,
            }
        }
        None
    }

    /// The program `arg0` (no `#export`) as `execvp` would find it: absolute, relative to
    /// `cwd` when it has a `/`, else in each directory of `path_env` (default
    /// [`crate::DEFAULT_PATH`]).
    pub fn find_program(&self, arg0: &str, path_env: Option<&str>, cwd: &str) -> Option<Found> {
        if arg0.is_empty() {
            return None;
        }
        let under = |dir: &str, name: &str| if dir.starts_with('/') { format!("{dir}/{name}") } else { format!("{cwd}/{dir}/{name}") };
        if arg0.starts_with('/') {
            return self.resolve(arg0);
        }
        if arg0.contains('/') {
            return self.resolve(&under(cwd, arg0));
        }
        path_env.unwrap_or(crate::DEFAULT_PATH).split(':').find_map(|dir| self.resolve(&under(dir, arg0)))
    }
}

/// The bytes of entry `entry` (as [`Found::entry`]) of one layer's tar stream, at most `limit`
/// of them.
pub fn read_file(tar_stream: impl Read, entry: &str, limit: u64) -> Result<Vec<u8>, OciError> {
    let bad = |e: std::io::Error| OciError::BadManifest(format!("layer: not a readable tar stream: {e}"));
    let mut archive = tar::Archive::new(tar_stream);
    for e in archive.entries().map_err(bad)? {
        let mut e = e.map_err(bad)?;
        let raw = e.path().map_err(bad)?.to_string_lossy().into_owned();
        if normalize(&raw).as_deref() != Some(entry) || !matches!(e.header().entry_type(), EntryType::Regular | EntryType::Continuous) {
            continue;
        }
        let size = e.header().size().map_err(bad)?;
        if size > limit {
            return Err(OciError::BadManifest(format!("/{entry}: {size} bytes is more than the {limit} allowed")));
        }
        let mut out = Vec::with_capacity(size as usize);
        e.by_ref().take(limit + 1).read_to_end(&mut out).map_err(bad)?;
        return Ok(out);
    }
    Err(OciError::BadManifest(format!("/{entry}: not in its layer any more")))
}

#[cfg(test)]
mod tests {
    use super::*;

    enum E<'a> {
        F(&'a str, &'a [u8]),
        D(&'a str),
        L(&'a str, &'a str),
        H(&'a str, &'a str),
    }

    fn tar_of(entries: &[E]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for e in entries {
            let mut h = tar::Header::new_gnu();
            match e {
                E::F(p, data) => {
                    h.set_entry_type(EntryType::Regular);
                    h.set_size(data.len() as u64);
                    h.set_mode(0o755);
                    h.set_cksum();
                    b.append_data(&mut h, p, *data).unwrap();
                }
                E::D(p) => {
                    h.set_entry_type(EntryType::Directory);
                    h.set_size(0);
                    h.set_mode(0o755);
                    h.set_cksum();
                    b.append_data(&mut h, p, &[][..]).unwrap();
                }
                E::L(p, t) | E::H(p, t) => {
                    h.set_entry_type(if matches!(e, E::L(..)) { EntryType::Symlink } else { EntryType::Link });
                    h.set_size(0);
                    h.set_mode(0o777);
                    b.append_link(&mut h, p, t).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    fn index(layers: &[Vec<u8>]) -> LayerIndex {
        let mut ix = LayerIndex::new();
        for l in layers {
            ix.add_layer(&l[..]).unwrap();
        }
        ix
    }

    #[test]
    fn command_from_config_joins_entrypoint_and_cmd() {
        let c = ImageCommand::from_config(
            br#"{"architecture":"amd64","os":"linux","config":{"Entrypoint":["/app.wasm#serve"],"Cmd":["-v"],"Env":["A=1","PATH=/bin:/opt"],"WorkingDir":"/work"}}"#,
        )
        .unwrap();
        assert_eq!(c.args, ["/app.wasm#serve", "-v"]);
        assert_eq!(c.program().as_deref(), Some("/app.wasm"));
        assert_eq!(c.path_env.as_deref(), Some("/bin:/opt"));
        assert_eq!(c.cwd, "/work");
        assert!(c.says_wasm());
        let c = ImageCommand::from_config(br#"{"architecture":"amd64","os":"linux","config":{"Cmd":["sh"]}}"#).unwrap();
        assert_eq!((c.program().as_deref(), c.cwd.as_str(), c.path_env.as_deref()), (Some("sh"), "/", None));
        assert!(!c.says_wasm());
        let c = ImageCommand::from_config(br#"{"architecture":"wasm","os":"wasip1","config":{}}"#).unwrap();
        assert_eq!(c.program(), None);
        assert!(c.says_wasm());
        assert!(ImageCommand::from_config(b"not json").is_err());
    }

    #[test]
    fn upper_layers_win_and_whiteouts_hide() {
        let ix = index(&[
            tar_of(&[E::F("app.wasm", b"old"), E::F("gone.wasm", b"x"), E::D("lib/"), E::F("lib/a.wasm", b"a")]),
            tar_of(&[E::F("./app.wasm", b"new"), E::F(".wh.gone.wasm", b""), E::F("lib/.wh..wh..opq", b""), E::F("lib/b.wasm", b"b")]),
        ]);
        assert_eq!(ix.resolve("/app.wasm").map(|f| f.layer), Some(1));
        assert_eq!(ix.resolve("/gone.wasm"), None);
        assert_eq!(ix.resolve("/lib/a.wasm"), None, "hidden by the opaque directory");
        assert_eq!(ix.resolve("/lib/b.wasm").map(|f| (f.layer, f.entry)), Some((1, "lib/b.wasm".into())));
        assert_eq!(ix.resolve("/lib"), None, "a directory is not a program");
        assert_eq!(ix.resolve("/missing.wasm"), None);
    }

    #[test]
    fn symlinks_are_followed_inside_the_image() {
        let ix = index(&[
            tar_of(&[E::D("usr/bin/"), E::F("usr/bin/app.wasm", b"code"), E::L("bin", "usr/bin"), E::L("abs.wasm", "/usr/bin/app.wasm")]),
            tar_of(&[E::L("up.wasm", "../../../usr/bin/app.wasm"), E::L("loop1", "loop2"), E::L("loop2", "loop1"), E::H("hard.wasm", "usr/bin/app.wasm")]),
        ]);
        let want = Some("/usr/bin/app.wasm".to_string());
        assert_eq!(ix.resolve("/bin/app.wasm").map(|f| f.path), want);
        assert_eq!(ix.resolve("/abs.wasm").map(|f| f.path), want);
        assert_eq!(ix.resolve("/up.wasm").map(|f| f.path), want, ".. stops at /");
        assert_eq!(ix.resolve("/hard.wasm").map(|f| f.path), want);
        assert_eq!(ix.resolve("/loop1"), None);
        // PATH search, and relative to the working directory.
        assert_eq!(ix.find_program("app.wasm", Some("/nope:/bin"), "/").map(|f| f.path), want);
        assert_eq!(ix.find_program("app.wasm", None, "/").map(|f| f.path), want, "the default PATH has /usr/bin");
        assert_eq!(ix.find_program("bin/app.wasm", None, "/usr").map(|f| f.path), want);
        assert_eq!(ix.find_program("app.wasm", Some("/nope"), "/"), None);
    }

    #[test]
    fn a_file_is_read_from_its_layer_within_the_limit() {
        let layer = tar_of(&[E::D("a/"), E::F("a/app.wasm", b"\0asm\x01\0\0\0")]);
        assert_eq!(read_file(&layer[..], "a/app.wasm", 100).unwrap(), b"\0asm\x01\0\0\0");
        let e = read_file(&layer[..], "a/app.wasm", 4).unwrap_err().to_string();
        assert!(e.contains("8 bytes is more than the 4 allowed"), "{e}");
        assert!(read_file(&layer[..], "a/other.wasm", 100).is_err());
    }

    #[test]
    fn layers_are_opened_by_media_type() {
        use std::io::Write;
        let layer = tar_of(&[E::F("app.wasm", b"code")]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&layer).unwrap();
        let gz = gz.finish().unwrap();
        let mut ix = LayerIndex::new();
        ix.add_layer(decompressed("application/vnd.oci.image.layer.v1.tar+gzip", &gz[..]).unwrap()).unwrap();
        ix.add_layer(decompressed("application/vnd.docker.image.rootfs.diff.tar", &layer[..]).unwrap()).unwrap();
        assert_eq!(ix.layer_count(), 2);
        assert_eq!(ix.resolve("/app.wasm").map(|f| f.layer), Some(1));
        let data = read_file(decompressed("application/vnd.oci.image.layer.v1.tar+gzip", &gz[..]).unwrap(), "app.wasm", 10).unwrap();
        assert_eq!(data, b"code");
        assert!(decompressed("application/vnd.oci.image.layer.v1.tar+zstd", &gz[..]).err().unwrap().to_string().contains("zstd"));
        assert!(decompressed("application/wasm", &gz[..]).is_err());
        // Not a tar stream: an error, not a panic.
        let mut ix = LayerIndex::new();
        assert!(ix.add_layer(decompressed("application/vnd.oci.image.layer.v1.tar+gzip", &b"garbage"[..]).unwrap()).is_err());
    }
}
