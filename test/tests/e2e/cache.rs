//! `wasm::cache_*`: the compile cache through the real shim. Each trial runs a module nobody
//! compiled before (hello.wasm with a custom section holding a fresh nonce, so its digest is
//! new) from a plain rootfs (`ctr run --config`), and reads the cache's `compile.log`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use sha2::Digest;
use wasm_shim_e2e::ctr::ensure;
use wasm_shim_e2e::{guests, images, RunOpts};
use wasm_shim_oci::ImageFile;

pub(super) use wasm_shim_e2e::guests::{nonce, with_nonce};

use super::Ctx;

/// hello.wasm with a custom section `nonce` holding `nonce`: the same program, a new digest.
pub(super) fn unique_hello(nonce: &str) -> Result<Vec<u8>> {
    Ok(with_nonce(guests::Guests::load()?.get("hello").to_vec(), nonce))
}


pub(super) fn hex_digest(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// compile.log lines about the module with this digest: (tier, key).
pub(super) fn compiles_of(cache: &Path, digest: &str) -> Vec<(String, String)> {
    std::fs::read_to_string(cache.join("compile.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (tier, key) = (f.get(1)?, f.get(4)?);
            key.starts_with(digest).then(|| (tier.to_string(), key.to_string()))
        })
        .collect()
}

/// Waits until the background optimized compile of `digest` is logged.
fn wait_optimized(cache: &Path, digest: &str) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some((_, key)) = compiles_of(cache, digest).into_iter().find(|(t, _)| t == "optimized") {
            return Ok(key);
        }
        if Instant::now() > deadline {
            bail!("no optimized compile of {digest} logged: {:?}", compiles_of(cache, digest));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A rootfs holding `/app.wasm` and a spec to run it; returns the spec path.
pub(super) fn setup(cx: &Ctx, id: &str, wasm: &[u8]) -> Result<(PathBuf, PathBuf)> {
    let rootfs = cx.cd.dir.join(format!("rootfs-{id}"));
    images::write_rootfs(&[ImageFile::new("/app.wasm", wasm, 0o755)], &rootfs)?;
    let spec = images::config_spec(&cx.cd, id, &rootfs, &["/app.wasm"], serde_json::json!({}))?;
    Ok((rootfs, spec))
}

fn run_hello(cx: &Ctx, id: &str, spec: &Path) -> Result<()> {
    let out = cx.cd.run(&RunOpts::wasm("", id).config(spec))?;
    ensure(out.success() && out.stdout == "hello from wasm\n", || format!("{out}"))
}


/// A first start runs baseline code and gets optimized code built in the background; later
/// starts map it: one compile per tier, whatever the number of runs.
pub fn compiled_once(cx: &Ctx) -> Result<()> {
    let id = "w-cache-once";
    let wasm = unique_hello(&nonce(id))?;
    let digest = hex_digest(&wasm);
    let (rootfs, spec) = setup(cx, id, &wasm)?;
    run_hello(cx, id, &spec)?;
    let first = compiles_of(&cx.cd.cache, &digest);
    ensure(first.iter().any(|(t, _)| t == "baseline"), || format!("first start made no baseline compile: {first:?}"))?;
    let key = wait_optimized(&cx.cd.cache, &digest)?;
    ensure(cx.cd.cache.join(format!("{key}.cwasm")).exists(), || format!("{key}.cwasm missing"))?;
    for _ in 0..3 {
        run_hello(cx, id, &spec)?;
    }
    let all = compiles_of(&cx.cd.cache, &digest);
    let count = |tier: &str| all.iter().filter(|(t, _)| t == tier).count();
    println!("  compiles after 4 runs: {} baseline, {} optimized", count("baseline"), count("optimized"));
    let _ = std::fs::remove_dir_all(rootfs);
    ensure(count("baseline") == 1 && count("optimized") == 1, || format!("expected one compile per tier: {all:?}"))
}

/// A damaged entry is detected by the init, logged, skipped, and compiled again; the task runs
/// as if nothing happened.
pub fn corrupt_entry_recovers(cx: &Ctx) -> Result<()> {
    let id = "w-cache-corrupt";
    let wasm = unique_hello(&nonce(id))?;
    let digest = hex_digest(&wasm);
    let (rootfs, spec) = setup(cx, id, &wasm)?;
    run_hello(cx, id, &spec)?;
    let key = wait_optimized(&cx.cd.cache, &digest)?;
    let entry = cx.cd.cache.join(format!("{key}.cwasm"));
    // Damage a copy and rename it over the entry (as a bad disk would, without touching pages a
    // running task may have mapped).
    let mut data = std::fs::read(&entry)?;
    let mid = data.len() / 2;
    data[mid] ^= 0xff;
    let tmp = cx.cd.cache.join("damaged.tmp");
    std::fs::write(&tmp, &data)?;
    std::fs::rename(&tmp, &entry)?;

    run_hello(cx, id, &spec)?;
    let warned = cx.cd.log_lines_with(&key, 20);
    ensure(warned.contains("corrupt"), || format!("no warning about {key} in containerd's log:\n{warned}"))?;
    // The repaired entry: compiled again (the baseline run above asked for it).
    let deadline = Instant::now() + Duration::from_secs(120);
    while compiles_of(&cx.cd.cache, &digest).iter().filter(|(t, _)| t == "optimized").count() < 2 {
        if Instant::now() > deadline {
            bail!("the corrupt entry was not compiled again: {:?}", compiles_of(&cx.cd.cache, &digest));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    run_hello(cx, id, &spec)?;
    let _ = std::fs::remove_dir_all(rootfs);
    Ok(())
}
