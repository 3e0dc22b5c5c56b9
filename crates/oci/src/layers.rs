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

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::io::Read;

use tar::EntryType;

use crate::OciError;

/// Linux's limit on symbolic links followed while resolving one path.
const MAX_SYMLINKS: usize = 40;
/// Linux's `PATH_MAX`: a longer path (asked, or reached through symbolic links) resolves to
/// nothing, and a longer entry name is not indexed.
const MAX_PATH: usize = 4096;
/// Path components one resolution walks, symbolic links' included: a program's path has a
/// few; an image that names `a/a/a/…` or links to such paths is not looked into further.
const MAX_STEPS: usize = 1024;
/// Entries indexed over an image's layers (a large distribution image has about 10⁵), and
/// the bytes of their names: what the index may hold in memory.
const MAX_ENTRIES: usize = 1 << 20;
const MAX_NAME_BYTES: usize = 128 << 20;
/// Bytes a tar stream may hold between one entry's data and the next entry: its headers,
/// GNU long names and PAX records, which the tar crate reads into memory whole.
const MAX_HEADER_BYTES: u64 = 1 << 20;
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
        // Every member, as Go's reader (containerd's) decodes a concatenated gzip stream.
        return Ok(Box::new(flate2::read::MultiGzDecoder::new(blob)));
    }
    if media_type.ends_with(".tar") || media_type.ends_with("diff.tar") {
        return Ok(Box::new(blob));
    }
    Err(OciError::BadManifest(format!("layer media type {media_type:?} is not a filesystem layer")))
}

/// A tar stream that refuses to be read past a budget the caller sets entry by entry: the
/// tar crate reads an entry's GNU long name or PAX records into memory whole before it yields
/// the entry, so without a bound a 2 GiB "long name" (a few MiB compressed) would be held.
struct Budgeted<R> {
    inner: R,
    left: std::rc::Rc<std::cell::Cell<u64>>,
}

impl<R: Read> Read for Budgeted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.left.get();
        if left == 0 && !buf.is_empty() {
            return Err(std::io::Error::other(format!(
                "an entry's headers (long names, PAX records) are larger than the {} KiB allowed",
                MAX_HEADER_BYTES >> 10
            )));
        }
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.left.set(left - n as u64);
        Ok(n)
    }
}

/// Calls `each` with every entry of a tar stream and its normalized name (`None`: the root,
/// or a name longer than [`MAX_PATH`]), in order, until it returns `false`; headers between
/// two entries are bounded by [`MAX_HEADER_BYTES`].
fn for_each_entry<R: Read>(
    tar_stream: R,
    mut each: impl FnMut(&mut tar::Entry<'_, Budgeted<R>>, Option<String>) -> Result<bool, std::io::Error>,
) -> Result<(), std::io::Error> {
    let left = std::rc::Rc::new(std::cell::Cell::new(MAX_HEADER_BYTES));
    let mut archive = tar::Archive::new(Budgeted { inner: tar_stream, left: left.clone() });
    for entry in archive.entries()? {
        let mut entry = entry?;
        // Its data and padding, then the next entry's headers.
        left.set(entry.size().div_ceil(512).saturating_mul(512).saturating_add(MAX_HEADER_BYTES));
        let raw = entry.path()?;
        let name = raw.to_str().map(Cow::Borrowed).unwrap_or_else(|| raw.to_string_lossy());
        let path = (name.len() <= MAX_PATH).then(|| normalize(&name)).flatten();
        if !each(&mut entry, path)? {
            break;
        }
    }
    Ok(())
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
    /// Entries and bytes of names indexed so far (bounded by [`MAX_ENTRIES`], [`MAX_NAME_BYTES`]).
    entries: usize,
    name_bytes: usize,
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
        let n = self.layers.len();
        let bad = |e: std::io::Error| OciError::BadManifest(format!("layer {n}: not a readable tar stream: {e}"));
        let mut layer = Layer::default();
        let (entries, name_bytes) = (&mut self.entries, &mut self.name_bytes);
        for_each_entry(tar_stream, |entry, path| {
            let Some(path) = path else { return Ok(true) };
            *entries += 1;
            *name_bytes += path.len();
            if *entries > MAX_ENTRIES || *name_bytes > MAX_NAME_BYTES {
                return Err(std::io::Error::other(format!("the image's layers have more than {MAX_ENTRIES} entries or {} MiB of names", MAX_NAME_BYTES >> 20)));
            }
            let (dir, name) = parent_and_name(&path);
            if name == OPAQUE {
                layer.opaque.insert(dir.to_string());
                return Ok(true);
            }
            if let Some(hidden) = name.strip_prefix(WHITEOUT) {
                layer.whiteouts.insert(join(dir, hidden));
                return Ok(true);
            }
            // A link's target is held too, so it counts with the names; one longer than a path
            // can be leads nowhere, and is held as what it is: nothing to follow.
            let link = || entry.link_name().ok().flatten().map(|l| l.to_string_lossy().into_owned()).filter(|l| l.len() <= MAX_PATH);
            let header = entry.header();
            let node = match header.entry_type() {
                EntryType::Regular | EntryType::Continuous => Node::File { mode: header.mode().unwrap_or(0) },
                EntryType::Directory => Node::Dir,
                EntryType::Symlink => link().map_or(Node::Other, Node::Symlink),
                EntryType::Link => link().map_or(Node::Other, |l| Node::Hardlink(normalize(&l).unwrap_or_default())),
                _ => Node::Other,
            };
            if let Node::Symlink(target) | Node::Hardlink(target) = &node {
                *name_bytes += target.len();
                if *name_bytes > MAX_NAME_BYTES {
                    return Err(std::io::Error::other(format!("the image's layers have more than {} MiB of names", MAX_NAME_BYTES >> 20)));
                }
            }
            layer.nodes.insert(path, node);
            Ok(true)
        })
        .map_err(bad)?;
        self.layers.push(layer);
        Ok(())
    }

    pub fn layer_count(&self) -> usize {
        self.layers.len()
    }

    /// Which layers hide what lies under `dir` (given by its path and the answer for its
    /// parent, `None` for `/`): a whiteout or an opaque marker for it, or a node there that is
    /// neither a directory nor a symbolic link. Kept per directory of a walk, so that looking a
    /// name up costs one probe per layer, however deep the directory.
    fn hiding(&self, dir: &str, parent: Option<&[bool]>) -> Vec<bool> {
        self.layers
            .iter()
            .enumerate()
            .map(|(i, layer)| match parent {
                None => layer.opaque.contains(""),
                Some(above) => {
                    above[i]
                        || layer.whiteouts.contains(dir)
                        || layer.opaque.contains(dir)
                        || layer.nodes.get(dir).is_some_and(|n| !matches!(n, Node::Dir | Node::Symlink(_)))
                }
            })
            .collect()
    }

    /// `path` in the merged view, `hidden` being [`LayerIndex::hiding`] of its directory: the
    /// topmost layer that has it, unless a layer above hides it.
    fn lookup(&self, path: &str, hidden: &[bool]) -> Lookup<'_> {
        for (i, layer) in self.layers.iter().enumerate().rev() {
            if let Some(node) = layer.nodes.get(path) {
                return Lookup::Hit(i, node);
            }
            if hidden[i] || layer.whiteouts.contains(path) {
                return Lookup::Missing;
            }
        }
        Lookup::Missing
    }

    /// Resolves an absolute path in the merged rootfs to a regular file.
    pub fn resolve(&self, path: &str) -> Option<Found> {
        if path.len() > MAX_PATH {
            return None;
        }
        let mut pending: Vec<String> = path.split('/').filter(|p| !p.is_empty()).map(String::from).collect();
        pending.reverse();
        // The directory reached, one entry per component: its path and what hides under it.
        let root = self.hiding("", None);
        let mut dir: Vec<(String, Vec<bool>)> = Vec::new();
        let (mut links, mut steps) = (0, 0);
        while let Some(part) = pending.pop() {
            steps += 1;
            if steps > MAX_STEPS {
                return None;
            }
            match part.as_str() {
                "." => continue,
                ".." => {
                    dir.pop();
                    continue;
                }
                _ => {}
            }
            let (here, hidden) = match dir.last() {
                Some((d, h)) => (join(d, &part), h),
                None => (part.clone(), &root),
            };
            if here.len() > MAX_PATH {
                return None;
            }
            let last = pending.is_empty();
            match self.lookup(&here, hidden) {
                Lookup::Hit(_, node @ (Node::Symlink(target) | Node::Hardlink(target))) => {
                    links += 1;
                    if links > MAX_SYMLINKS || target.len() > MAX_PATH {
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
                Lookup::Hit(_, Node::Dir) | Lookup::Missing if !last => {
                    let below = self.hiding(&here, Some(hidden));
                    dir.push((here, below));
                }
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
/// of them. An entry named twice is its last one, as when the layer is unpacked.
pub fn read_file(tar_stream: impl Read, entry: &str, limit: u64) -> Result<Vec<u8>, OciError> {
    let mut found: Option<Result<Vec<u8>, OciError>> = None;
    for_each_entry(tar_stream, |e, path| {
        if path.as_deref() != Some(entry) {
            return Ok(true);
        }
        if !matches!(e.header().entry_type(), EntryType::Regular | EntryType::Continuous) {
            found = None;
            return Ok(true);
        }
        let size = e.size();
        if size > limit {
            found = Some(Err(OciError::BadManifest(format!("/{entry}: {size} bytes is more than the {limit} allowed"))));
            return Ok(true);
        }
        found = None;
        let mut out = Vec::with_capacity(size as usize);
        e.by_ref().take(limit + 1).read_to_end(&mut out)?;
        found = Some(Ok(out));
        Ok(true)
    })
    .map_err(|e| OciError::BadManifest(format!("layer: not a readable tar stream: {e}")))?;
    found.unwrap_or_else(|| Err(OciError::BadManifest(format!("/{entry}: not in its layer any more"))))
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
    fn a_deep_or_looping_path_ends_quickly() {
        let ix = index(&[
            tar_of(&[E::F("app.wasm", b"code"), E::L("deep", &"a/".repeat(1500)), E::L("up", &"../".repeat(1000))]),
            tar_of(&[E::F("x.wasm", b"x")]),
        ]);
        let started = std::time::Instant::now();
        // 200 000 components (400 KB): refused by its length at once.
        assert_eq!(ix.resolve(&format!("/{}app.wasm", "a/".repeat(200_000))), None);
        // Under PATH_MAX, but past the steps one resolution may walk.
        assert_eq!(ix.resolve(&format!("/{}app.wasm", "a/".repeat(2000))), None);
        assert_eq!(ix.resolve("/deep/deep/app.wasm"), None);
        // `..` many times is still `/`.
        assert_eq!(ix.resolve("/up/app.wasm").map(|f| f.path), Some("/app.wasm".to_string()));
        assert_eq!(ix.resolve(&format!("/{}app.wasm", "a/".repeat(100))), None, "implied directories hold no file");
        assert!(started.elapsed() < std::time::Duration::from_secs(2), "{:?}", started.elapsed());
    }

    #[test]
    fn huge_extended_headers_are_refused_not_held() {
        // A GNU long name of 4 MiB: the tar crate would read it whole into memory.
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(EntryType::Regular);
        h.set_size(1);
        h.set_mode(0o644);
        b.append_data(&mut h, format!("{}.wasm", "n".repeat(4 << 20)), &b"x"[..]).unwrap();
        let layer = b.into_inner().unwrap();
        let e = LayerIndex::new().add_layer(&layer[..]).unwrap_err().to_string();
        assert!(e.contains("larger than the 1024 KiB allowed"), "{e}");
        assert!(read_file(&layer[..], "x.wasm", 10).is_err());
        // A long name within the bound is read, and a name past PATH_MAX is not indexed.
        let mut b = tar::Builder::new(Vec::new());
        for name in [format!("{}/app.wasm", "d".repeat(300)), format!("{}.wasm", "l".repeat(MAX_PATH + 1))] {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(EntryType::Regular);
            h.set_size(4);
            h.set_mode(0o755);
            b.append_data(&mut h, name, &b"code"[..]).unwrap();
        }
        let layer = b.into_inner().unwrap();
        let ix = index(&[layer.clone()]);
        assert_eq!(ix.entries, 1);
        assert_eq!(ix.resolve(&format!("/{}/app.wasm", "d".repeat(300))).map(|f| f.layer), Some(0));
    }

    #[test]
    fn link_targets_count_with_the_names_and_are_bounded() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(EntryType::Regular);
        h.set_size(4);
        h.set_mode(0o755);
        b.append_data(&mut h, "app.wasm", &b"code"[..]).unwrap();
        for (name, target) in [("long", format!("{}app.wasm", "../".repeat(2000))), ("short", "app.wasm".to_string())] {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(EntryType::Symlink);
            h.set_size(0);
            b.append_link(&mut h, name, target).unwrap();
        }
        let ix = index(&[b.into_inner().unwrap()]);
        // A target past PATH_MAX is not followed (nor held); the other one is, and counted.
        assert_eq!(ix.resolve("/long"), None);
        assert_eq!(ix.resolve("/short").map(|f| f.path), Some("/app.wasm".to_string()));
        assert_eq!(ix.name_bytes, "app.wasm".len() + "long".len() + "short".len() + "app.wasm".len());
    }

    #[test]
    fn a_name_listed_twice_is_its_last_entry() {
        let layer = tar_of(&[E::F("app.wasm", b"first"), E::F("app.wasm", b"second")]);
        assert_eq!(read_file(&layer[..], "app.wasm", 100).unwrap(), b"second");
        let layer = tar_of(&[E::F("app.wasm", b"first"), E::D("app.wasm/")]);
        assert!(read_file(&layer[..], "app.wasm", 100).is_err(), "the last entry is a directory");
    }

    #[test]
    fn concatenated_gzip_members_are_one_stream() {
        use std::io::Write;
        let mut whole = Vec::new();
        // The tar's first half and its second half, each its own gzip member.
        let layer = tar_of(&[E::F("a.wasm", b"a"), E::F("b.wasm", b"b")]);
        for half in [&layer[..1024], &layer[1024..]] {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(half).unwrap();
            whole.extend(gz.finish().unwrap());
        }
        let mut ix = LayerIndex::new();
        ix.add_layer(decompressed("application/vnd.oci.image.layer.v1.tar+gzip", &whole[..]).unwrap()).unwrap();
        assert!(ix.resolve("/b.wasm").is_some());
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
