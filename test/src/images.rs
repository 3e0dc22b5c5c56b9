//! The test images, built with the project's own `wasm_shim_oci::image` writer and imported with
//! `ctr image import`; and plain rootfs dirs plus runtime specs for `ctr run --config`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use wasm_shim_oci::image::{write_image_tar, ImageFile, ImageSpec, Style};

use crate::guests::{Guests, COMMAND_COMPONENTS, EXIT_WITH_CODE, COMPONENT_GUESTS, RUST_GUESTS};
use crate::Containerd;

/// The wasm image: every guest at `/<name>.wasm`, data files, bad inputs.
pub const GUESTS_IMAGE: &str = "docker.io/wasmtest/guests:1";
/// The native baseline: busybox-static with a few applet links.
pub const BUSYBOX_IMAGE: &str = "docker.io/wasmtest/busybox:1";

/// The pod sandbox image (containerd's `sandbox_image`): the static `test/pause` binary alone.
pub use crate::containerd::PAUSE_IMAGE;

/// Content of `/data/in.txt`.
pub const DATA_IN: &str = "data from the image";
/// Content of `/work/rel.txt` (read through a relative path from the image's workdir).
pub const REL_TXT: &str = "relative file contents";

/// Deterministic bytes that are not a valid module body.
fn noise(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x2545_f491;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

/// Files of the guests image.
///
/// - `/<guest>.wasm` for every Rust guest (the component guests such as `/tcp.wasm` as
///   components), `/c-<guest>.wasm` for the command guests also shipped as components
///   (`COMMAND_COMPONENTS`), `/exit-with-code-<n>.wasm` (components calling
///   `wasi:cli/exit.exit-with-code(n)`), `/hello.wat` (text), `/custom.wasm` (exports `_start` and `custom`),
///   `/no-start.wasm`, `/component.wasm`, `/http.wasm` (the `wasi:http/proxy` guest; `/wagi.wasm`
///   is the WAGI one), `/http-upgrade.wasm` (the same with one more custom section: other bytes,
///   so another cache entry, that only the upgrade trial starts), `/p3-cli.wasm` and
///   `/p3-http.wasm` (the WASI 0.3 guests);
/// - `/data/in.txt`, `/work/rel.txt`, an empty `/tmp`;
/// - bad inputs: `/corrupt.wasm` (wasm magic and version, then noise), `/truncated.wasm` (the
///   first half of hello.wasm), `/dir.wasm/` (a directory), `/notes.txt` (text), `/empty.wasm`
///   (zero bytes), `/broken.wat` (a WAT syntax error), `/loop-a.wasm` (a symlink loop),
///   `/needs-import.wasm` and `/needs-import-component.wasm` (imports nobody provides).
pub fn guests_files(g: &Guests) -> Vec<ImageFile> {
    let mut files = Vec::new();
    for name in RUST_GUESTS.iter().chain(COMPONENT_GUESTS) {
        files.push(ImageFile::new(format!("/{name}.wasm"), g.get(name), 0o755));
    }
    for name in COMMAND_COMPONENTS {
        let name = format!("c-{name}");
        files.push(ImageFile::new(format!("/{name}.wasm"), g.get(&name), 0o755));
    }
    for code in EXIT_WITH_CODE {
        let name = format!("exit-with-code-{code}");
        files.push(ImageFile::new(format!("/{name}.wasm"), g.get(&name), 0o755));
    }
    files.push(ImageFile::new("/hello.wat", g.get("hello.wat"), 0o644));
    files.push(ImageFile::new(
        "/custom.wasm",
        g.get("custom-export"),
        0o755,
    ));
    files.push(ImageFile::new("/no-start.wasm", g.get("no-start"), 0o755));
    files.push(ImageFile::new("/component.wasm", g.get("component"), 0o755));
    files.push(ImageFile::new("/http.wasm", g.get("http"), 0o755));
    files.push(ImageFile::new("/http-upgrade.wasm", http_upgrade(g), 0o755));
    for (name, _) in crate::guests::P3_GUESTS {
        files.push(ImageFile::new(format!("/{name}.wasm"), g.get(name), 0o755));
    }
    files.push(ImageFile::new(
        "/data/in.txt",
        format!("{DATA_IN}\n"),
        0o644,
    ));
    files.push(ImageFile::new(
        "/work/rel.txt",
        format!("{REL_TXT}\n"),
        0o644,
    ));
    files.push(ImageFile::new("/tmp/.keep", Vec::new(), 0o644));

    let mut corrupt = b"\0asm\x01\0\0\0".to_vec();
    corrupt.extend(noise(4096));
    files.push(ImageFile::new("/corrupt.wasm", corrupt, 0o755));
    let hello = g.get("hello");
    files.push(ImageFile::new(
        "/truncated.wasm",
        &hello[..hello.len() / 2],
        0o755,
    ));
    files.push(ImageFile::new("/dir.wasm/.keep", Vec::new(), 0o644));
    files.push(ImageFile::new(
        "/notes.txt",
        "just some notes, not a program\n",
        0o755,
    ));
    files.push(ImageFile::new("/empty.wasm", Vec::new(), 0o755));
    files.push(ImageFile::new("/broken.wat", "(module (func $f (result i32)\n", 0o644));
    files.push(ImageFile::symlink("/loop-a.wasm", "/loop-b.wasm"));
    files.push(ImageFile::symlink("/loop-b.wasm", "/loop-a.wasm"));
    files.push(ImageFile::new("/needs-import.wasm", g.get("needs-import"), 0o755));
    files.push(ImageFile::new("/needs-import-component.wasm", g.get("needs-import-component"), 0o755));
    files
}

/// `/http-upgrade.wasm`: the `wasi:http` guest with a custom section appended (valid in a
/// component as in a module; the code is the same, the bytes and so the cache key are not).
pub fn http_upgrade(g: &Guests) -> Vec<u8> {
    let mut bytes = g.get("http").to_vec();
    let (name, payload) = (&b"wasm-shim-test"[..], &b"upgrade"[..]);
    let len = 1 + name.len() + payload.len();
    assert!(len < 128 && name.len() < 128, "one-byte LEB128 lengths");
    bytes.extend([0, len as u8, name.len() as u8]);
    bytes.extend(name);
    bytes.extend(payload);
    bytes
}

pub fn guests_image(g: &Guests) -> ImageSpec {
    let mut spec = ImageSpec::new(GUESTS_IMAGE);
    spec.files = guests_files(g);
    spec.entrypoint = vec!["/hello.wasm".into()];
    spec.env = vec!["PATH=/".into(), "IMAGE_VAR=from-image".into()];
    spec.workdir = Some("/work".into());
    spec.style = Style::Classic;
    spec
}

/// busybox-static from the host as `/bin/busybox`, with `echo`, `sleep`, `sh`, `cat` links.
pub fn busybox_files() -> Result<Vec<ImageFile>> {
    let busybox = fs::read("/bin/busybox").context("/bin/busybox (install busybox-static)")?;
    let mut files = vec![ImageFile::new("/bin/busybox", busybox, 0o755)];
    // `nc`: the CRI cases' sidecars talk TCP over the pod's localhost.
    for applet in ["echo", "sleep", "sh", "cat", "nc"] {
        files.push(ImageFile::symlink(format!("/bin/{applet}"), "busybox"));
    }
    files.push(ImageFile::new("/tmp/.keep", Vec::new(), 0o644));
    Ok(files)
}

pub fn busybox_image() -> Result<ImageSpec> {
    let mut spec = ImageSpec::new(BUSYBOX_IMAGE);
    spec.files = busybox_files()?;
    spec.entrypoint = vec!["/bin/echo".into(), "hello".into()];
    spec.env = vec!["PATH=/bin".into()];
    spec.style = Style::Classic;
    Ok(spec)
}

/// The pause image: `/pause` (static, from `test/pause`), run as the entrypoint.
pub fn pause_image(binary: Vec<u8>) -> ImageSpec {
    let mut spec = ImageSpec::new(PAUSE_IMAGE);
    spec.files = vec![ImageFile::new("/pause", binary, 0o755)];
    spec.entrypoint = vec!["/pause".into()];
    spec.style = Style::Classic;
    spec
}

/// Writes `spec` as a tarball under `<cd.dir>/images/` and imports it; returns the full name.
pub fn build_and_import(cd: &Containerd, spec: &ImageSpec) -> Result<String> {
    build_and_import_into(cd, spec, &[&cd.namespace])
}

/// Writes `spec` as a tarball once and imports it into each namespace of `namespaces` (the
/// CRI plugin sees only `k8s.io`); returns the full name.
pub fn build_and_import_into(
    cd: &Containerd,
    spec: &ImageSpec,
    namespaces: &[&str],
) -> Result<String> {
    let dir = cd.dir.join("images");
    fs::create_dir_all(&dir)?;
    let file_name = spec.name.replace(['/', ':'], "_") + ".tar";
    let tar = dir.join(file_name);
    let out = fs::File::create(&tar).with_context(|| tar.display().to_string())?;
    let info = write_image_tar(spec, std::io::BufWriter::new(out))
        .with_context(|| format!("building image {}", spec.name))?;
    for ns in namespaces {
        cd.import_into(ns, &tar)
            .with_context(|| format!("into namespace {ns}"))?;
    }
    Ok(info.name)
}

/// Writes `files` into `dir` as a plain rootfs (for `ctr run --config`).
pub fn write_rootfs(files: &[ImageFile], dir: &Path) -> Result<()> {
    for f in files {
        let rel = f.path.trim_start_matches('/');
        let path = dir.join(rel);
        fs::create_dir_all(path.parent().unwrap())?;
        let _ = fs::remove_file(&path);
        match &f.link {
            Some(target) => std::os::unix::fs::symlink(target, &path)?,
            None => {
                fs::write(&path, &f.data)?;
                fs::set_permissions(&path, fs::Permissions::from_mode(f.mode))?;
            }
        }
    }
    Ok(())
}

/// A runtime spec for `ctr run --config`: ctr's default spec (`ctr oci spec`) with the rootfs
/// path, args, cgroups path `/<namespace>/<id>` and `resources` (a JSON object merged into
/// `linux.resources`) filled in. Returns the spec file's path.
pub fn config_spec(
    cd: &Containerd,
    id: &str,
    rootfs: &Path,
    args: &[&str],
    resources: serde_json::Value,
) -> Result<PathBuf> {
    let text = cd.ctr_ok(["oci", "spec"])?;
    let mut spec: serde_json::Value = serde_json::from_str(&text).context("ctr oci spec output")?;
    spec["root"] = serde_json::json!({ "path": rootfs, "readonly": false });
    spec["process"]["args"] = serde_json::json!(args);
    spec["process"]["cwd"] = serde_json::json!("/");
    spec["process"]["terminal"] = serde_json::json!(false);
    spec["linux"]["cgroupsPath"] = serde_json::json!(cd.cgroup_path(id));
    if !spec["linux"]["resources"].is_object() {
        spec["linux"]["resources"] = serde_json::json!({});
    }
    if let serde_json::Value::Object(extra) = resources {
        for (k, v) in extra {
            spec["linux"]["resources"][k] = v;
        }
    }
    let path = cd.dir.join(format!("spec-{id}.json"));
    fs::write(&path, serde_json::to_vec_pretty(&spec)?)?;
    Ok(path)
}
