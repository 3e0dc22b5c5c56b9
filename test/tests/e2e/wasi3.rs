//! `wasi3::*`: WASI 0.3 components through the real shim under containerd. The guests are Rust
//! built with the `wasip3` crate's async bindings (`test/guests/p3-cli`, `test/guests/p3-http`):
//! a `wasi:cli/run@0.3.0` command run by `ctr run` (stdout, stderr, args, env, cwd, exit codes,
//! the memory limit, SIGTERM on a spinning guest) and a `wasi:http/service` component served
//! (200 bodies, 504 at the request timeout, 500 past the request memory, outbound allowed and
//! denied, SIGTERM draining requests in flight), like their 0.2 counterparts in `e2e.rs` and
//! `e2e/http.rs`.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use wasm_shim_e2e::ctr::{ensure, line_with};
use wasm_shim_e2e::http;
use wasm_shim_e2e::images::GUESTS_IMAGE;
use wasm_shim_e2e::{RunOpts, Stdin};

use super::http::served;
use super::{expect_code, free_port, Ctx};

/// The command: what it prints (args, env, the container's cwd as `initial-cwd`), its stderr
/// apart, and the exit code it asks for with `exit-with-code`, or 1 when `run` returns `err`.
pub fn command(cx: &Ctx) -> Result<()> {
    let out = cx.cd.run(
        &RunOpts::wasm(GUESTS_IMAGE, "w-p3-cli")
            .args(["/p3-cli.wasm", "one", "stderr", "exit=7"])
            .env("P3_COLOR=blue")
            .env("OTHER=x")
            .cwd("/work"),
    )?;
    expect_code(&out, 7)?;
    let expected = "hello from wasi 0.3\nargs: /p3-cli.wasm one stderr exit=7\nenv: P3_COLOR=blue\ncwd: /work\n";
    ensure(out.stdout == expected, || format!("stdout: expected {expected:?}, got: {out}"))?;
    ensure(out.stderr.trim_end() == "to stderr", || format!("stderr: {out}"))?;
    let out = cx.cd.run(&RunOpts::wasm(GUESTS_IMAGE, "w-p3-fail").args(["/p3-cli.wasm", "sleep=10", "fail"]))?;
    expect_code(&out, 1)?;
    line_with(&out.stdout, &["slept 10"]).with_context(|| format!("{out}"))?;
    Ok(())
}

/// Past the container's memory limit the command traps cleanly: 125 and a message on stderr.
pub fn command_memory_limit(cx: &Ctx) -> Result<()> {
    let out = cx.cd.run(
        &RunOpts::wasm(GUESTS_IMAGE, "w-p3-mem")
            .args(["/p3-cli.wasm", "memory=8", "memory=256"])
            .memory_limit(64 << 20)
            .timeout(Duration::from_secs(60)),
    )?;
    ensure(out.stdout.contains("touched 8 MiB"), || format!("never ran: {out}"))?;
    expect_code(&out, 125)?;
    line_with(&out.stderr.to_lowercase(), &["memory"]).with_context(|| format!("no memory message on stderr: {out}"))?;
    Ok(())
}

/// SIGTERM to a command spinning in its async `run`: 143 within 2 s.
pub fn command_sigterm(cx: &Ctx) -> Result<()> {
    let mut run = cx.cd.spawn(&RunOpts::wasm(GUESTS_IMAGE, "w-p3-spin").args(["/p3-cli.wasm", "spin"]).stdin(Stdin::HoldOpen))?;
    run.wait_for_stdout("hello from wasi 0.3", Duration::from_secs(20))?;
    let t = Instant::now();
    cx.cd.kill("w-p3-spin", "SIGTERM")?;
    let out = run.wait(Duration::from_secs(10));
    let took = t.elapsed();
    println!("  SIGTERM -> exit after {took:.2?}");
    expect_code(&out, 143)?;
    ensure(took < Duration::from_secs(2), || format!("took {took:?} to stop"))
}

/// The service: served by default (no annotation), hello, echo, a streamed body, the request
/// timeout (504) for a spinning and a sleeping guest, a trap and the request memory (500, then
/// fine), outbound allowed and denied; then SIGTERM while requests are in flight: they finish,
/// the task exits 0.
pub fn service(cx: &Ctx) -> Result<()> {
    let (up, other) = (http::upstream()?, http::upstream()?);
    let port = free_port()?;
    let id = "w-p3-http";
    let mut run = cx.cd.spawn(&served(
        id,
        "/p3-http.wasm",
        &[
            (wasm_shim_oci::http::PORT, port.to_string()),
            (wasm_shim_oci::http::REQUEST_TIMEOUT, "2s".into()),
            (wasm_shim_oci::http::REQUEST_MEMORY, "16Mi".into()),
            (wasm_shim_oci::http::ALLOWED_OUTBOUND, format!("http://127.0.0.1:{up}")),
        ],
    ))?;
    let base = format!("http://127.0.0.1:{port}");
    let (first, _) = http::wait_until_serving(&format!("{base}/"), Duration::from_secs(30))
        .with_context(|| format!("output so far: {}", run.stdout_now()))?;
    ensure(first.status == 200 && first.body == "hello from wasi:http 0.3\n", || format!("first reply {first}"))?;
    let r = http::post(&format!("{base}/echo"), "text/plain", "a posted body")?;
    ensure(r.status == 200 && r.body == "a posted body", || format!("echo: {r}"))?;
    let r = http::get(&format!("{base}/stream?n=5000"))?;
    ensure(r.status == 200 && r.body.lines().count() == 5000 && r.body.ends_with("line 4999\n"), || format!("stream: {} bytes, status {}", r.body.len(), r.status))?;
    for path in ["/spin", "/sleep?ms=10000"] {
        let t = Instant::now();
        let r = http::get(&format!("{base}{path}"))?;
        ensure(r.status == 504 && t.elapsed() < Duration::from_secs(5), || format!("{path}: {r} after {:?}", t.elapsed()))?;
    }
    for (path, status) in [("/trap", 500), ("/memory?mb=4", 200), ("/memory?mb=64", 500), ("/", 200)] {
        let r = http::get(&format!("{base}{path}"))?;
        ensure(r.status == status, || format!("{path}: expected {status}, got {r}"))?;
    }
    let r = http::get(&format!("{base}/fetch?url=http://127.0.0.1:{up}/"))?;
    ensure(r.status == 200 && r.body == "status 200\nupstream says hi", || format!("allowed: {r}"))?;
    let r = http::get(&format!("{base}/fetch?url=http://127.0.0.1:{other}/"))?;
    ensure(r.status == 502 && r.body.contains("HttpRequestDenied"), || format!("denied: {r}"))?;

    let in_flight: Vec<_> = (0..3)
        .map(|_| {
            let url = format!("{base}/sleep?ms=1500");
            std::thread::spawn(move || http::get(&url))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(400));
    let t = Instant::now();
    cx.cd.kill(id, "SIGTERM")?;
    let out = run.wait(Duration::from_secs(15));
    let took = t.elapsed();
    for (i, h) in in_flight.into_iter().enumerate() {
        let r = h.join().map_err(|_| anyhow::anyhow!("client thread panicked"))??;
        ensure(r.status == 200 && r.body == "slept 1500\n", || format!("request {i} in flight: {r}"))?;
    }
    expect_code(&out, 0)?;
    println!("  drained 3 requests in flight; exit 0 after {took:?}");
    ensure(took >= Duration::from_millis(700), || format!("exited after {took:?}: did not wait for the requests"))?;
    line_with(&out.stdout, &["p3 request GET /"]).with_context(|| format!("{out}"))?;
    for needle in ["GET /spin: no response within", "outbound request to http://127.0.0.1:"] {
        line_with(&out.stderr, &[needle]).with_context(|| format!("{out}"))?;
    }
    Ok(())
}
