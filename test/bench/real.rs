//! The `real` part of `make bench`: components built by public toolchains, not by us
//! (test/thirdparty/setup.sh, as `make test` builds them: a CPython command and a CPython
//! `wasi:http` handler from componentize-py, a JavaScript handler from componentize-js).
//!
//! - First starts of each, three ways, round by round: a digest the node never saw (the shim
//!   compiles it at Create), the same after `containerd-shim-wasm-v1 precompile IMAGE` (what the
//!   node agent does when an image arrives), and a start with the code cached. The command is
//!   timed `ctr run --rm` to exit, a handler `ctr run` to its first 200. Every round imports an
//!   image of its own (the program with a nonce section: same code, a new digest).
//! - Each handler served by this shim (its cached optimized code) and by `wasmtime serve` on the
//!   same file (`-S cli`: the toolchains' components import wasi:cli, which the shim always
//!   gives), wrk at 1, 10 and 100 connections alternating between the two; then the PSS of
//!   each, idle after the same load (this shim: the shim and the container's init).

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};

use wasm_shim_e2e::guests::{nonce, with_nonce};
use wasm_shim_e2e::process::{self, Stdin};
use wasm_shim_e2e::{http as probe, images, Containerd, RunOpts};
use wasm_shim_oci::image::{ImageFile, ImageSpec, Style};

use super::http::{field, free_port, push, wasmtime_cli, wasmtime_server_with, wrk, Server, CONNECTIONS};

/// (program in target/thirdparty/programs, label, a wasi:http handler?)
const PROGRAMS: [(&str, &str, bool); 3] =
    [("python-cli", "CPython command", false), ("python-http", "CPython wasi:http", true), ("js-http", "JavaScript wasi:http", true)];

/// Builds the programs (a second run is offline and takes about a second).
fn programs() -> Result<PathBuf> {
    let root = wasm_shim_e2e::workspace_root();
    let dir = std::env::var_os("THIRDPARTY_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target/thirdparty"));
    let mut cmd = Command::new("bash");
    cmd.arg(root.join("test/thirdparty/setup.sh")).env("THIRDPARTY_DIR", &dir);
    let out = process::run(cmd, Stdin::Null, Duration::from_secs(900))?;
    ensure!(out.success(), "test/thirdparty/setup.sh failed: {out}");
    Ok(dir.join("programs"))
}

/// An image carrying `wasm` with a fresh nonce as `/app.wasm`: code nobody compiled yet.
fn fresh_image(cd: &Containerd, program: &str, wasm: &[u8]) -> Result<String> {
    let tag = nonce(program);
    let mut spec = ImageSpec::new(&format!("docker.io/wasmtest/real-{program}:{}", tag.replace(|c: char| !c.is_ascii_alphanumeric(), "-")));
    spec.files.push(ImageFile::new("/app.wasm", with_nonce(wasm.to_vec(), &tag), 0o755));
    spec.entrypoint = vec!["/app.wasm".into()];
    spec.env = vec!["PATH=/".into()];
    spec.style = Style::Classic;
    images::build_and_import(cd, &spec)
}

/// `precompile IMAGE` against the bench's containerd and cache (the node agent's compile path).
fn precompile(cd: &Containerd, image: &str) -> Result<()> {
    let mut cmd = Command::new(&cd.shim);
    cmd.args(["precompile", image, "--namespace", &cd.namespace]);
    cmd.env("CONTAINERD_ADDRESS", &cd.socket).env("WASM_SHIM_CACHE_DIR", &cd.cache);
    let out = process::run(cmd, Stdin::Null, Duration::from_secs(900))?;
    ensure!(out.success(), "precompile {image}: {out}");
    Ok(())
}

/// One start, timed: the command to its exit, a handler to its first 200 (then SIGTERM).
fn start(cd: &Containerd, image: &str, id: &str, handler: bool) -> Result<f64> {
    if !handler {
        // It reads stdin to its end: give it an empty one (ctr 1.6 passes the end on only once
        // the task runs, which the harness waits for).
        let out = cd.run(&RunOpts::wasm(image, id).stdin(Stdin::Bytes(Vec::new())).timeout(Duration::from_secs(600)))?;
        ensure!(out.success() && out.stdout.starts_with("python 3."), "{id}: {out}");
        return Ok(super::ms(out.duration));
    }
    let port = free_port()?;
    let mut opts = RunOpts::wasm(image, id).timeout(Duration::from_secs(600));
    opts.extra.extend(["--net-host".into(), "--env".into(), format!("PORT={port}")]);
    let t = Instant::now();
    let mut run = cd.spawn(&opts)?;
    let (r, at) = probe::wait_until_serving(&format!("http://127.0.0.1:{port}/"), Duration::from_secs(600))
        .with_context(|| format!("{id}: {} {}", run.stdout_now(), run.stderr_now()))?;
    ensure!(r.status == 200, "{id}: first reply {r}");
    cd.kill(id, "SIGTERM")?;
    let out = run.wait(Duration::from_secs(20));
    ensure!(out.success(), "{id}: no exit 0 after SIGTERM: {out}");
    Ok(super::ms(at - t))
}

pub fn run(cd: &Containerd, rounds: usize, wrk_rounds: usize) -> Result<Value> {
    let dir = programs()?;
    let wasmtime = wasmtime_cli();
    let mut result = json!({ "rounds": rounds, "wrk_rounds": wrk_rounds });
    for (program, label, handler) in PROGRAMS {
        let wasm = std::fs::read(dir.join(format!("{program}.wasm"))).with_context(|| format!("{program}.wasm"))?;
        eprintln!("bench: {label} ({:.1} MB), first starts", wasm.len() as f64 / 1e6);
        let mut image = String::new();
        for i in 0..rounds {
            image = fresh_image(cd, program, &wasm)?;
            push(&mut result, &[program, "never_seen_ms"], json!(start(cd, &image, &format!("real-{program}-cold-{i}"), handler)?));
            // The optimized code is built in the background meanwhile; the cached start maps it.
            super::wait_for_helpers(Duration::from_secs(900));
            push(&mut result, &[program, "cached_ms"], json!(start(cd, &image, &format!("real-{program}-cached-{i}"), handler)?));
            let pre = fresh_image(cd, program, &wasm)?;
            precompile(cd, &pre)?;
            push(&mut result, &[program, "precompiled_ms"], json!(start(cd, &pre, &format!("real-{program}-pre-{i}"), handler)?));
        }
        if !handler {
            continue;
        }
        eprintln!("bench: {label}, this shim against wasmtime serve, wrk at {CONNECTIONS:?} connections");
        let file = wasm_shim_e2e::workspace_root().join(format!("target/bench/{program}.wasm"));
        std::fs::write(&file, &wasm)?;
        let port = free_port()?;
        let id = format!("real-{program}-serve");
        let mut opts = RunOpts::wasm(&image, &id).detach();
        opts.extra.extend(["--net-host".into(), "--env".into(), format!("PORT={port}")]);
        let out = cd.run(&opts)?;
        ensure!(out.success(), "ctr run {id}: {out}");
        let _shim = Server::Shim { cd, id: id.clone() };
        probe::wait_until_serving(&format!("http://127.0.0.1:{port}/"), Duration::from_secs(120))?;
        let theirs = match &wasmtime {
            Some(w) => {
                let p = free_port()?;
                Some((wasmtime_server_with(w, &file, p, &["-S", "cli"])?, p))
            }
            None => None,
        };
        for &c in CONNECTIONS {
            let key = c.to_string();
            for _ in 0..wrk_rounds {
                push(&mut result, &[program, "shim", &key], wrk(&format!("http://127.0.0.1:{port}/"), c)?);
                if let Some((_, p)) = &theirs {
                    push(&mut result, &[program, "wasmtime_serve", &key], wrk(&format!("http://127.0.0.1:{p}/"), c)?);
                }
            }
        }
        // Idle after the same load.
        std::thread::sleep(Duration::from_secs(2));
        let (shims, others) = super::shim_tree(&cd.socket);
        let pss: u64 = shims.iter().chain(&others).map(|&p| super::pss_rss(p).0).sum();
        result[program]["idle_pss_kib"] = json!(pss);
        if let Some((Server::Wasmtime(child), _)) = &theirs {
            result[program]["wasmtime_serve_idle_pss_kib"] = json!(super::pss_rss(child.id()).0);
        }
    }
    Ok(result)
}

pub fn print(r: &Value) {
    use super::{median, nums, row};
    for (program, label, handler) in PROGRAMS {
        let p = &r[program];
        if p.is_null() {
            continue;
        }
        let (never, pre, cached) = (nums(&p["never_seen_ms"]), nums(&p["precompiled_ms"]), nums(&p["cached_ms"]));
        let what = if handler { "ctr run -> first 200" } else { "ctr run --rm" };
        row(&format!("{label}: {what}, never-seen digest"), &never, "ms", Some((median(&never) / median(&cached), "of cached")));
        row(&format!("{label}: {what}, after precompile"), &pre, "ms", Some((median(&pre) / median(&cached), "of cached")));
        row(&format!("{label}: {what}, cached"), &cached, "ms", None);
        if !handler {
            continue;
        }
        for &c in CONNECTIONS {
            let key = c.to_string();
            let (ours, theirs) = (&p["shim"][&key], &p["wasmtime_serve"][&key]);
            for (name, unit) in [("rps", "/s"), ("p50", "ms"), ("p99", "ms")] {
                let v = field(ours, name);
                let ratio = (!theirs.is_null()).then(|| (median(&v) / median(&field(theirs, name)), "of wasmtime serve"));
                row(&format!("{label}: {name}, {c} conn: this shim"), &v, unit, ratio);
                if !theirs.is_null() {
                    row(&format!("{label}: {name}, {c} conn: wasmtime serve"), &field(theirs, name), unit, None);
                }
            }
        }
        let pss = p["idle_pss_kib"].as_f64().unwrap_or(f64::NAN) / 1024.0;
        let theirs = p["wasmtime_serve_idle_pss_kib"].as_f64().map(|k| k / 1024.0);
        row(&format!("{label}: idle PSS after load, shim + init"), &[pss], "MiB", theirs.map(|t| (pss / t, "of wasmtime serve")));
        if let Some(t) = theirs {
            row(&format!("{label}: idle PSS after load, wasmtime serve"), &[t], "MiB", None);
        }
    }
}
