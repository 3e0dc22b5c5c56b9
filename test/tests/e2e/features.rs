//! `wasm::features::*`: wasm features and debuggable traps through the real shim and `ctr`.
//!
//! - Modules using exception handling and GC (`test/guests/wat/exceptions.wat`, `gc.wat`),
//!   each with a fresh nonce so that nobody compiled it before: the first start compiles
//!   optimized code through the compile helper (Winch cannot compile them) and caches it; the
//!   second start maps it. Neither start compiles inside the container.
//! - `wasm.containerd.io/wasm-features`: a name that is unknown, a conflicting pair, a feature
//!   each fail Create naming it; turning off a feature a module uses
//!   fails Create naming the feature.
//! - A trapping guest (`trap.wat`) with `wasm.containerd.io/coredump-dir` on a volume: its
//!   stderr names the function and the wasm offset, and the volume holds the core dump.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use wasm_shim_e2e::ctr::{ensure, line_with};
use wasm_shim_e2e::{guests, images, Leaks, RunOpts};
use wasm_shim_oci::ImageFile;

use super::cache::{compiles_of, hex_digest, nonce, with_nonce};
use super::Ctx;

const FEATURES: &str = "wasm.containerd.io/wasm-features";
const COREDUMP_DIR: &str = "wasm.containerd.io/coredump-dir";

fn wat(name: &str) -> Result<Vec<u8>> {
    let path = guests::guests_dir().join("wat").join(name);
    wat::parse_file(&path).with_context(|| format!("{}", path.display()))
}

/// A rootfs holding `/app.wasm` and a spec running it, with `annotations` and `mounts` added
/// (`ctr run --config` takes the spec as it is).
fn spec_with(cx: &Ctx, id: &str, wasm: &[u8], annotations: &[(&str, &str)], mounts: &[(&Path, &str)]) -> Result<(PathBuf, PathBuf)> {
    let rootfs = cx.cd.dir.join(format!("rootfs-{id}"));
    images::write_rootfs(&[ImageFile::new("/app.wasm", wasm, 0o755)], &rootfs)?;
    for (_, inside) in mounts {
        std::fs::create_dir_all(rootfs.join(inside.trim_start_matches('/')))?;
    }
    let path = images::config_spec(&cx.cd, id, &rootfs, &["/app.wasm"], serde_json::json!({}))?;
    let mut spec: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
    for (k, v) in annotations {
        spec["annotations"][*k] = serde_json::json!(v);
    }
    for (host, inside) in mounts {
        spec["mounts"].as_array_mut().context("spec mounts")?.push(serde_json::json!({
            "destination": inside, "type": "bind", "source": host, "options": ["rbind", "rw"]
        }));
    }
    std::fs::write(&path, serde_json::to_vec_pretty(&spec)?)?;
    Ok((rootfs, path))
}

/// Lines of containerd's log saying that container `id` compiled its wasm itself.
fn compiled_in_container(cx: &Ctx, id: &str) -> usize {
    let key = format!("id=\"{id}\"");
    let needle = "/app.wasm: no compiled code in the cache; compiling it in the container";
    std::fs::read_to_string(&cx.cd.log).unwrap_or_default().lines().filter(|l| l.contains(&key) && l.contains(needle)).count()
}

/// A module Winch cannot compile, never seen before: a first start that compiles optimized
/// code once through the helper (no baseline entry, nothing compiled in the container), then a
/// cached start that compiles nothing.
fn first_and_cached_start(cx: &Ctx, id: &str, file: &str, expected: &str) -> Result<()> {
    let wasm = with_nonce(wat(file)?, &nonce(id));
    let digest = hex_digest(&wasm);
    let (rootfs, spec) = spec_with(cx, id, &wasm, &[], &[])?;
    let run = || -> Result<()> {
        let out = cx.cd.run(&RunOpts::wasm("", id).config(&spec))?;
        ensure(out.success() && out.stdout == expected, || format!("expected {expected:?}: {out}"))
    };
    run()?;
    let first = compiles_of(&cx.cd.cache, &digest);
    println!("  first start: compiles {first:?}");
    ensure(first.len() == 1 && first[0].0 == "optimized", || format!("expected one optimized compile and no baseline one: {first:?}"))?;
    let key = &first[0].1;
    ensure(cx.cd.cache.join(format!("{key}.cwasm")).exists(), || format!("{key}.cwasm is not in the cache"))?;
    ensure(compiled_in_container(cx, id) == 0, || format!("{id} compiled {file} in the container on its first start"))?;
    let started = std::time::Instant::now();
    run()?;
    println!("  cached start: {} ms", started.elapsed().as_millis());
    let second = compiles_of(&cx.cd.cache, &digest);
    ensure(second == first, || format!("the cached start compiled again: {second:?}"))?;
    ensure(compiled_in_container(cx, id) == 0, || format!("{id} compiled {file} in the container on its cached start"))?;
    let _ = std::fs::remove_dir_all(rootfs);
    Ok(())
}

pub fn exceptions(cx: &Ctx) -> Result<()> {
    first_and_cached_start(cx, "w-feat-exc", "exceptions.wat", "caught 42\n")
}

pub fn gc(cx: &Ctx) -> Result<()> {
    first_and_cached_start(cx, "w-feat-gc", "gc.wat", "gc sum 6\n")
}

/// Create fails with a line holding every one of `needles`; nothing is left behind.
fn refused(cx: &Ctx, id: &str, file: &str, annotations: &[(&str, &str)], needles: &[&str]) -> Result<()> {
    let before = Leaks::measure(&cx.cd);
    let (rootfs, spec) = spec_with(cx, id, &wat(file)?, annotations, &[])?;
    let out = cx.cd.run(&RunOpts::wasm("", id).config(&spec).timeout(Duration::from_secs(30)))?;
    ensure(!out.timed_out && out.code.is_some_and(|c| c != 0), || format!("expected `ctr run` to fail: {out}"))?;
    let combined = out.combined();
    let line = line_with(&combined, needles).with_context(|| format!("{out}"))?;
    println!("  exit {:?}: {}", out.code, line.trim());
    let _ = std::fs::remove_dir_all(rootfs);
    let leaks = Leaks::wait_clean_since(&cx.cd, &before, Duration::from_secs(5));
    ensure(leaks.is_clean(), || format!("left behind: {leaks}"))
}

pub fn unknown_name(cx: &Ctx) -> Result<()> {
    refused(cx, "w-feat-unknown", "gc.wat", &[(FEATURES, "+gc,+warp-drive")], &[FEATURES, "unknown wasm feature \"warp-drive\""])
}

pub fn conflict(cx: &Ctx) -> Result<()> {
    refused(cx, "w-feat-conflict", "gc.wat", &[(FEATURES, "-simd,+relaxed-simd")], &[FEATURES, "\"relaxed-simd\" needs \"simd\""])
}

/// The annotation does reach the engine: exceptions turned off, the module using them is
/// refused naming the feature.
pub fn turned_off(cx: &Ctx) -> Result<()> {
    refused(cx, "w-feat-off", "exceptions.wat", &[(FEATURES, "-exceptions")], &["/app.wasm", "invalid wasm", "exceptions"])
}

/// A trap names the function and offset on stderr and leaves a core dump in the volume the
/// spec mounts at the annotation's directory.
pub fn trap_coredump(cx: &Ctx) -> Result<()> {
    let id = "w-feat-trap";
    let volume = cx.cd.dir.join(format!("volume-{id}"));
    let _ = std::fs::remove_dir_all(&volume);
    std::fs::create_dir_all(&volume)?;
    let (rootfs, spec) = spec_with(cx, id, &wat("trap.wat")?, &[(COREDUMP_DIR, "/coredumps")], &[(&volume, "/coredumps")])?;
    let out = cx.cd.run(&RunOpts::wasm("", id).config(&spec))?;
    println!("  stderr: {}", out.stderr.trim());
    ensure(out.code == Some(125), || format!("expected the trap's 125: {out}"))?;
    line_with(&out.stderr, &["/app.wasm: wasm trap: wasm `unreachable`", "in func explode", "wasm offset 0x", "called from compute"])
        .with_context(|| format!("{out}"))?;
    line_with(&out.stderr, &["core dump written to /coredumps/app-", ".coredump"]).with_context(|| format!("{out}"))?;
    let dumps: Vec<PathBuf> = std::fs::read_dir(&volume)?.flatten().map(|e| e.path()).collect();
    ensure(dumps.len() == 1, || format!("expected one core dump in the volume: {dumps:?}"))?;
    let dump = std::fs::read(&dumps[0])?;
    ensure(dump.starts_with(b"\0asm"), || "the core dump is not a wasm module".into())?;
    ensure(dump.windows(16).any(|w| w == b"core-dump-marker"), || "the guest's memory is not in the core dump".into())?;
    let _ = std::fs::remove_dir_all(rootfs);
    let _ = std::fs::remove_dir_all(volume);
    Ok(())
}

/// A core dump directory the container does not have fails Create naming it.
pub fn coredump_dir_missing(cx: &Ctx) -> Result<()> {
    refused(cx, "w-feat-nodir", "trap.wat", &[(COREDUMP_DIR, "/nowhere")], &[COREDUMP_DIR, "/nowhere"])
}
