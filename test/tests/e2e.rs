//! End-to-end suite: one private containerd for the whole run, trials one after another.
//!
//! ```text
//! cargo build --release                   # the shim (the suite cannot build it: cargo's lock)
//! cargo test --release -p wasm-shim-e2e   # builds the guests, then runs everything below
//! ```
//!
//! Needs root; without it every trial is reported ignored. Filters work as usual
//! (`cargo test --release -p wasm-shim-e2e -- runc::`).
//!
//! # Layout
//! - `main`: setup (guests, containerd, event recorder, images), the trial list, teardown.
//! - `wasm::*`: the shim's cases: output, exit codes, args/env/cwd, files, stdin, component,
//!   WAT, `#export`, the command guests again as components (`wasm::component::*`, exit
//!   codes through the preview1 adapter and through `exit-with-code`), TCP through `wasi:sockets` both ways (`--net-host`), signals, limits,
//!   pause/resume, metrics, events, bad inputs (broken `config.json` and a huge module in
//!   `e2e/badspec.rs`), the compile cache (`e2e/cache.rs`), the precompile agent
//!   (`e2e/precompile.rs`: `precompile::*`), wasm features (exceptions and GC on first and
//!   cached starts, the features annotation) and trap core dumps (`e2e/features.rs`), serving
//!   HTTP (`e2e/http.rs`: wasi:http, WAGI, drain, outbound, port in use; `e2e/metrics.rs`: the
//!   metrics endpoint scraped by a real Prometheus), the shim's log lines and the access log
//!   (`e2e/logs.rs`: `wasm::logs::*`, and `cri::wasm::shim_lines_name_the_pod`), OpenTelemetry
//!   traces decoded by an OTLP receiver of the test's own (`e2e/traces.rs`: `wasm::traces::*`), leak loop,
//!   latency print.
//! - `wasm::wasi3::*` (e2e/wasi3.rs): WASI 0.3 components from the `wasip3` crate: a command
//!   through `ctr run` and a `wasi:http/service` served, with the limits, drain and allow-list.
//! - `wasm::thirdparty::*` (e2e/thirdparty.rs): programs from PyPI and npm (resvg, itk-wasm,
//!   GCC for AVR, CPython and JavaScript components) against wasmtime 48; their CRI case is
//!   `cri::wasm::thirdparty_cpython_command_and_js_function`.
//! - `wasm::faults::*` (e2e/faults.rs): containerd restarted, the shim SIGKILLed, noisy guests
//!   next to a neighbour. `wasm::sandbox::*` (e2e/sandbox.rs): escapes tried and refused.
//! - `wasm::concurrent_200_no_lost_exits`, `wasm::pod_shim_100_tasks_no_growth`, `wasm::pod_shim_many_waiters` (e2e/soak.rs),
//!   and the ignored `wasm::soak::*` that `make soak` runs (`--include-ignored soak::`).
//! - `runc::*`: the same harness paths with containerd's runc runtime and busybox: proves the
//!   harness (and the machine) before blaming the shim.
//! - `cri::install::then_pod` (e2e/install.rs): `install` into a config without the runtime,
//!   containerd restarted, a wasm pod through the CRI; `doctor` before and after.
//! - `cri::*` (e2e/cri.rs): the Kubernetes path through containerd's CRI plugin with a Rust CRI
//!   client: pods with runtime handler `wasm` (wasm apps, native sidecars, one shim per pod,
//!   stop, logs, leaks) next to the same pods with handler `runc`.
//!
//! Working directory: WASI preview 1 has none (wasi-libc starts in "/"); the shim passes the
//! OCI cwd as `PWD` and the `args-env` guest moves there, as a cwd-aware p1 program must.
//!
//! Exit codes by contract: the guest's own code as is; a trap is 125; killed by signal N is
//! 128+N (SIGTERM 143, SIGKILL 137).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use libtest_mimic::{Arguments, Failed, Trial};

use wasm_shim_e2e::ctr::{ensure, line_with};
use wasm_shim_e2e::images::{self, BUSYBOX_IMAGE, DATA_IN, GUESTS_IMAGE, REL_TXT};
use wasm_shim_e2e::leaks;
use wasm_shim_e2e::cri::K8S_NAMESPACE;
use wasm_shim_e2e::{guests, Containerd, EventRecorder, Leaks, Output, RunOpts, Stdin};

#[path = "e2e/native.rs"]
mod native;
#[path = "e2e/artifact.rs"]
mod artifact;
#[path = "e2e/cache.rs"]
mod cache;
#[path = "e2e/http.rs"]
mod http;
#[path = "e2e/metrics.rs"]
mod metrics;
#[path = "e2e/logs.rs"]
mod logs;
#[path = "e2e/traces.rs"]
mod traces;
#[path = "e2e/faults.rs"]
mod faults;
#[path = "e2e/sandbox.rs"]
mod sandbox;
#[path = "e2e/soak.rs"]
mod soak;
#[path = "e2e/badspec.rs"]
mod badspec;
#[path = "e2e/precompile.rs"]
mod precompile;
#[path = "e2e/features.rs"]
mod features;
#[path = "e2e/thirdparty.rs"]
mod thirdparty;
#[path = "e2e/wasi3.rs"]
mod wasi3;

#[path = "e2e/cri.rs"]
mod cri;
#[path = "e2e/install.rs"]
mod install;

/// Everything the trials share.
struct Ctx {
    // Dropped in this order: the event stream first, then containerd (which stops it).
    events: EventRecorder,
    cd: Containerd,
    /// Set when the wasm side cannot run at all (no shim binary, guests failed to build...);
    /// every wasm trial fails with this message.
    wasm_blocker: Option<String>,
    /// The same for the runc baseline.
    runc_blocker: Option<String>,
    /// The same for the CRI cases (plugin not serving, pause image not built...).
    cri_blocker: Option<String>,
}

/// One runtime + image pair, so the same scenario runs on the shim and on runc.
#[derive(Clone, Copy)]
enum Flavor {
    Wasm,
    Runc,
    /// The busybox image run by the wasm shim: a native container, handed to runc.
    Native,
    /// The Kubernetes path: pods through containerd's CRI plugin (`cri::*`, see e2e/cri.rs);
    /// the cases pick their runtime handler themselves.
    Cri,
}

impl Flavor {
    fn opts(self, id: &str) -> RunOpts {
        match self {
            Flavor::Wasm => RunOpts::wasm(GUESTS_IMAGE, id),
            Flavor::Runc | Flavor::Cri => RunOpts::runc(BUSYBOX_IMAGE, id),
            Flavor::Native => RunOpts::wasm(BUSYBOX_IMAGE, id),
        }
    }

    /// Prints "sleeping ..." then sleeps `secs` then prints "done".
    fn sleep_args(self, secs: u32) -> Vec<String> {
        match self {
            Flavor::Wasm => vec!["/sleep.wasm".into(), secs.to_string()],
            Flavor::Runc | Flavor::Native | Flavor::Cri => vec![
                "/bin/sh".into(),
                "-c".into(),
                format!("echo sleeping {secs}; sleep {secs}; echo done"),
            ],
        }
    }

    fn blocker(self, cx: &Ctx) -> Option<&String> {
        match self {
            Flavor::Wasm => cx.wasm_blocker.as_ref(),
            Flavor::Runc => cx.runc_blocker.as_ref(),
            Flavor::Native => cx.wasm_blocker.as_ref().or(cx.runc_blocker.as_ref()),
            Flavor::Cri => cx.cri_blocker.as_ref().or(cx.runc_blocker.as_ref()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// helpers

pub(crate) fn expect_code(out: &Output, code: i32) -> Result<()> {
    ensure(out.code == Some(code), || {
        format!("expected exit {code}, got: {out}")
    })
}

fn expect_stdout_line(out: &Output, line: &str) -> Result<()> {
    ensure(out.stdout.lines().any(|l| l == line), || {
        format!("expected a stdout line {line:?}, got: {out}")
    })
}

/// A cgroup file of the container: the v1 hierarchy `controller` or the v2 tree.
fn cgroup_file(cd: &Containerd, controller: &str, id: &str, v1: &str, v2: &str) -> Result<String> {
    let cg = cd.cgroup_path(id);
    let candidates = [
        format!("/sys/fs/cgroup/{controller}{cg}/{v1}"),
        format!("/sys/fs/cgroup{cg}/{v2}"),
        format!("/sys/fs/cgroup/unified{cg}/{v2}"),
    ];
    for c in &candidates {
        if let Ok(s) = std::fs::read_to_string(c) {
            return Ok(s.trim().to_string());
        }
    }
    bail!("none of {candidates:?} is readable")
}

/// A positive counter in `ctr task metrics --format json` (cgroup v1 or v2 layout).
fn nonzero_metric(m: &serde_json::Value) -> Result<String> {
    let probes = [
        ("memory.usage.usage", &m["memory"]["usage"]["usage"]),
        ("cpu.usage.total", &m["cpu"]["usage"]["total"]),
        ("memory.usage (v2)", &m["memory"]["usage"]),
        ("cpu.usage_usec (v2)", &m["cpu"]["usage_usec"]),
        ("pids.current", &m["pids"]["current"]),
    ];
    for (name, v) in probes {
        if let Some(n) = v.as_u64().filter(|n| *n > 0) {
            return Ok(format!("{name} = {n}"));
        }
    }
    bail!("no non-zero memory/cpu/pids counter in metrics: {m}")
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

// ---------------------------------------------------------------------------------------------
// scenarios shared by both flavors

/// Sleeps in the foreground; kill with SIGKILL once it printed: 137 quickly.
fn sigkill_sleeper(cx: &Ctx, f: Flavor, id: &str) -> Result<()> {
    let mut run = cx.cd.spawn(&f.opts(id).args(f.sleep_args(60)))?;
    run.wait_for_stdout("sleeping", Duration::from_secs(20))?;
    let t = Instant::now();
    cx.cd.kill(id, "SIGKILL")?;
    let out = run.wait(Duration::from_secs(10));
    let took = t.elapsed();
    println!("  SIGKILL -> exit after {took:.2?}");
    expect_code(&out, 137)?;
    ensure(took < Duration::from_secs(2), || {
        format!("took {took:?} to stop")
    })
}

/// `--cpu-quota 50000 --cpu-period 100000` shows in the container's cgroup.
fn cpu_limit(cx: &Ctx, f: Flavor, id: &str) -> Result<()> {
    let mut run = cx
        .cd
        .spawn(&f.opts(id).args(f.sleep_args(30)).cpu(50000, 100000))?;
    run.wait_for_stdout("sleeping", Duration::from_secs(20))?;
    let quota = cgroup_file(&cx.cd, "cpu", id, "cpu.cfs_quota_us", "cpu.max")?;
    let period = cgroup_file(&cx.cd, "cpu", id, "cpu.cfs_period_us", "cpu.max")?;
    cx.cd.kill(id, "SIGKILL")?;
    run.wait(Duration::from_secs(10));
    println!("  cpu quota {quota:?}, period {period:?}");
    ensure(quota == "50000" || quota == "50000 100000", || {
        format!("cpu quota is {quota:?}")
    })?;
    ensure(period == "100000" || period == "50000 100000", || {
        format!("cpu period is {period:?}")
    })
}

/// ctr 1.6 has no pids flag: run from a whole spec (`--config`) with `pids.limit = 32` and a
/// rootfs directory; the limit must show in the pids cgroup.
fn pids_limit(cx: &Ctx, f: Flavor, id: &str) -> Result<()> {
    let rootfs = cx.cd.dir.join(format!("rootfs-{id}"));
    let files = match f {
        Flavor::Wasm => {
            let g = guests::Guests::load()?;
            images::guests_files(&g)
        }
        Flavor::Runc | Flavor::Native | Flavor::Cri => images::busybox_files()?,
    };
    images::write_rootfs(&files, &rootfs)?;
    let args = f.sleep_args(30);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let spec = images::config_spec(
        &cx.cd,
        id,
        &rootfs,
        &args,
        serde_json::json!({"pids": {"limit": 32}}),
    )?;
    let out = cx.cd.run(&f.opts(id).config(&spec).detach())?;
    ensure(out.success(), || {
        format!("ctr run -d --config failed: {out}")
    })?;
    cx.cd.wait_status(id, "RUNNING", Duration::from_secs(10))?;
    let max = cgroup_file(&cx.cd, "pids", id, "pids.max", "pids.max");
    cx.cd.kill(id, "SIGKILL")?;
    cx.cd.wait_status(id, "STOPPED", Duration::from_secs(10))?;
    cx.cd.task_delete(id)?;
    cx.cd.container_rm(id)?;
    let _ = std::fs::remove_dir_all(&rootfs);
    let max = max?;
    println!("  pids.max {max:?}");
    ensure(max == "32", || format!("pids.max is {max:?}"))
}

/// Pause (task ls shows PAUSED, freezer frozen), resume, and the task finishes normally; the
/// paused/resumed events are published.
fn pause_resume(cx: &Ctx, f: Flavor, id: &str) -> Result<()> {
    let mut run = cx.cd.spawn(&f.opts(id).args(f.sleep_args(2)))?;
    run.wait_for_stdout("sleeping", Duration::from_secs(20))?;
    cx.cd.pause(id)?;
    cx.cd.wait_status(id, "PAUSED", Duration::from_secs(5))?;
    if let Ok(state) = cgroup_file(&cx.cd, "freezer", id, "freezer.state", "cgroup.freeze") {
        ensure(state == "FROZEN" || state == "1", || {
            format!("freezer state {state:?} while paused")
        })?;
    }
    std::thread::sleep(Duration::from_millis(500));
    ensure(run.running(), || {
        "ctr run returned while the task was paused".into()
    })?;
    cx.cd.resume(id)?;
    let out = run.wait(Duration::from_secs(20));
    expect_code(&out, 0)?;
    expect_stdout_line(&out, "done")?;
    cx.events
        .wait_for(id, "/tasks/paused", Duration::from_secs(2))?;
    cx.events
        .wait_for(id, "/tasks/resumed", Duration::from_secs(2))?;
    Ok(())
}

/// `ctr task metrics` reports a non-zero counter; `ctr task ps` lists a pid.
fn metrics_ps(cx: &Ctx, f: Flavor, id: &str) -> Result<()> {
    let mut run = cx.cd.spawn(&f.opts(id).args(f.sleep_args(30)))?;
    run.wait_for_stdout("sleeping", Duration::from_secs(20))?;
    let metrics = cx.cd.metrics(id);
    let pids = cx.cd.ps(id);
    cx.cd.kill(id, "SIGKILL")?;
    run.wait(Duration::from_secs(10));
    let found = nonzero_metric(&metrics?)?;
    let pids = pids?;
    println!("  {found}; ps: {pids:?}");
    ensure(pids.iter().any(|p| *p > 0), || {
        format!("ctr task ps listed no pid: {pids:?}")
    })
}

/// create, start, exit, delete are published in that order for a run.
fn lifecycle_events(cx: &Ctx, f: Flavor, id: &str) -> Result<()> {
    cx.cd.run(&f.opts(id))?.ok()?;
    cx.events
        .wait_for(id, "/tasks/delete", Duration::from_secs(5))?;
    let topics = cx.events.topics(id);
    let pos = |t: &str| {
        topics
            .iter()
            .position(|x| x == t)
            .ok_or_else(|| anyhow!("no {t} event for {id}; seen {topics:?}"))
    };
    let order = [
        pos("/tasks/create")?,
        pos("/tasks/start")?,
        pos("/tasks/exit")?,
        pos("/tasks/delete")?,
    ];
    println!("  {topics:?}");
    ensure(order.windows(2).all(|w| w[0] < w[1]), || {
        format!("events out of order: {topics:?}")
    })?;
    let exit = cx
        .events
        .wait_for(id, "/tasks/exit", Duration::from_secs(1))?;
    ensure(exit.body["exit_status"].as_u64().unwrap_or(0) == 0, || {
        format!("exit event has a non-zero status: {}", exit.line)
    })
}

/// `n` `ctr run --rm` in a row, then nothing may be left.
fn run_loop(cx: &Ctx, f: Flavor, prefix: &str, n: usize) -> Result<()> {
    let before = Leaks::measure(&cx.cd);
    let t = Instant::now();
    for i in 0..n {
        let id = format!("{prefix}-{i}");
        let out = cx.cd.run(&f.opts(&id))?;
        ensure(out.success() && out.stdout.contains("hello"), || {
            format!("run {i} of {n}: {out}")
        })?;
    }
    let took = t.elapsed();
    let leaks = Leaks::wait_clean_since(&cx.cd, &before, Duration::from_secs(10));
    println!(
        "  {n} runs in {took:.1?} ({:.0?} each); left behind: {}",
        took / n as u32,
        leaks.counts()
    );
    ensure(leaks.is_clean(), || {
        format!("left behind after {n} runs: {leaks}")
    })
}

// ---------------------------------------------------------------------------------------------
// wasm-only cases

fn wasm_hello(cx: &Ctx) -> Result<()> {
    let out = cx.cd.run(&RunOpts::wasm(GUESTS_IMAGE, "w-hello"))?;
    expect_code(&out, 0)?;
    ensure(out.stdout == "hello from wasm\n", || {
        format!("stdout is not exactly the greeting: {out}")
    })
}

fn wasm_stderr(cx: &Ctx) -> Result<()> {
    let out = cx
        .cd
        .run(&RunOpts::wasm(GUESTS_IMAGE, "w-stderr").args(["/stderr.wasm"]))?;
    expect_code(&out, 0)?;
    ensure(
        out.stdout.contains("this goes to stdout") && !out.stdout.contains("this goes to stderr"),
        || format!("stdout wrong: {out}"),
    )?;
    ensure(
        out.stderr.contains("this goes to stderr") && !out.stderr.contains("this goes to stdout"),
        || format!("stderr wrong: {out}"),
    )
}

/// `g` names a guest as a module (`""`) or as a component (`"c-"`): the trials below run each
/// command guest both ways and expect the same.
fn guest(g: &str, name: &str) -> String {
    format!("/{g}{name}.wasm")
}

/// The exit code a guest that exits with `code` gets: its own as a module; as a component made
/// with the preview1 adapter, 1 for every non-zero code (the adapter says `exit(err)`: the
/// component model's only way before `exit-with-code`; the wasmtime CLI reports 1 too).
/// A module's `proc_exit(126)` and up is a trap in wasmtime (WASI p1 has no larger code): 125.
fn meant(g: &str, code: i32) -> i32 {
    match (g.is_empty(), code) {
        (true, 0..=125) => code,
        (true, _) => 125,
        (false, _) => code.min(1),
    }
}

fn wasm_exit3(cx: &Ctx, g: &str) -> Result<()> {
    let out = cx
        .cd
        .run(&RunOpts::wasm(GUESTS_IMAGE, &format!("w-{g}exit3")).args([guest(g, "exit3")]))?;
    expect_code(&out, meant(g, 3))?;
    expect_stdout_line(&out, "exiting with 3")
}

fn wasm_args_env_cwd(cx: &Ctx, g: &str) -> Result<()> {
    let out = cx.cd.run(
        &RunOpts::wasm(GUESTS_IMAGE, &format!("w-{g}args"))
            .args([guest(g, "args-env").as_str(), "rel.txt", "two words"])
            .env("GREETING=hi"),
    )?;
    expect_code(&out, 0)?;
    for line in [
        "arg[1]=rel.txt",
        "arg[2]=two words",
        "GREETING=hi",
        "PWD=/work",
        "cwd=/work",
        &format!("file rel.txt: {REL_TXT}"),
    ] {
        expect_stdout_line(&out, line)?;
    }
    line_with(&out.stdout, &["arg[0]=", "args-env.wasm"]).with_context(|| format!("{out}"))?;
    Ok(())
}

fn wasm_cwd_flag(cx: &Ctx, g: &str) -> Result<()> {
    let out = cx.cd.run(
        &RunOpts::wasm(GUESTS_IMAGE, &format!("w-{g}cwd"))
            .args([guest(g, "args-env").as_str(), "in.txt"])
            .cwd("/data"),
    )?;
    expect_code(&out, 0)?;
    expect_stdout_line(&out, "PWD=/data")?;
    expect_stdout_line(&out, "cwd=/data")?;
    expect_stdout_line(&out, "GREETING unset")?;
    expect_stdout_line(&out, &format!("file in.txt: {DATA_IN}"))
}

fn wasm_files(cx: &Ctx, g: &str) -> Result<()> {
    let out = cx
        .cd
        .run(&RunOpts::wasm(GUESTS_IMAGE, &format!("w-{g}files")).args([guest(g, "files")]))?;
    expect_code(&out, 0)?;
    expect_stdout_line(&out, &format!("in: {DATA_IN}"))?;
    expect_stdout_line(&out, &format!("out: copied: {DATA_IN}"))
}

fn wasm_stdin_cat(cx: &Ctx, g: &str) -> Result<()> {
    let input = b"line one\nline two\n".to_vec();
    let out = cx.cd.run(
        &RunOpts::wasm(GUESTS_IMAGE, &format!("w-{g}cat"))
            .args([guest(g, "cat")])
            .stdin(Stdin::Bytes(input)),
    )?;
    expect_code(&out, 0)?;
    ensure(out.stdout == "line one\nline two\nEOF\n", || {
        format!("stdin not echoed then EOF: {out}")
    })
}

fn wasm_stdin_large(cx: &Ctx) -> Result<()> {
    let input: Vec<u8> = (0..(1usize << 20)).map(|i| b'a' + (i % 26) as u8).collect();
    let out = cx.cd.run(
        &RunOpts::wasm(GUESTS_IMAGE, "w-cat-1m")
            .args(["/cat.wasm"])
            .stdin(Stdin::Bytes(input.clone())),
    )?;
    expect_code(&out, 0)?;
    let expected = format!("{}EOF\n", String::from_utf8(input).unwrap());
    ensure(out.stdout == expected, || {
        format!(
            "1 MiB through cat: got {} bytes, expected {}",
            out.stdout.len(),
            expected.len()
        )
    })
}

/// The guest's own exit code reaches ctr as the guest meant it (see `meant`).
fn wasm_exit_codes(cx: &Ctx, g: &str) -> Result<()> {
    for code in [0, 1, 2, 42, 125, 200] {
        let out = cx.cd.run(
            &RunOpts::wasm(GUESTS_IMAGE, &format!("w-{g}code-{code}"))
                .args([guest(g, "exit-code"), code.to_string()]),
        )?;
        expect_code(&out, meant(g, code))?;
        expect_stdout_line(&out, &format!("exiting with {code}"))?;
    }
    Ok(())
}

/// `wasi:config/store` from a config directory (as a ConfigMap volume looks: files, `..data`
/// bookkeeping, a subdirectory, a FIFO that must not hang Create) and from the environment by
/// prefix; a file wins over a variable with the same key. A missing directory fails Create
/// naming the annotation.
fn component_wasi_config(cx: &Ctx) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    std::fs::write(d.join("greeting"), "hello from a ConfigMap")?;
    std::fs::write(d.join("multi"), "line one\nline two")?;
    std::fs::write(d.join(".hidden"), "skipped")?;
    std::fs::create_dir(d.join("..data"))?;
    std::fs::create_dir(d.join("sub"))?;
    let fifo = std::ffi::CString::new(d.join("pipe").as_os_str().as_encoded_bytes())?;
    // SAFETY: a NUL-terminated path that outlives the call.
    ensure(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) } == 0, || "mkfifo".to_string())?;
    let with = |id: &str, config_dir: &str| {
        let mut o = RunOpts::wasm(GUESTS_IMAGE, id)
            .args(["/config.wasm", "greeting", "MODE", "nope"])
            .env("APP_greeting=from the environment")
            .env("APP_MODE=prod")
            .env("OTHER=not config");
        for flag in [
            "--mount".to_string(),
            format!("type=bind,src={},dst=/etc/app,options=rbind:ro", d.display()),
            "--annotation".to_string(),
            format!("wasm.containerd.io/config-dir={config_dir}"),
            "--annotation".to_string(),
            "wasm.containerd.io/config-env-prefix=APP_".to_string(),
        ] {
            o.extra.push(flag);
        }
        o
    };
    let out = cx.cd.run(&with("w-config", "/etc/app"))?;
    expect_code(&out, 0)?;
    for line in [
        "get greeting: hello from a ConfigMap",
        "get MODE: prod",
        "get nope: (none)",
        "entries: 3",
        "entry MODE=prod",
        "entry greeting=hello from a ConfigMap",
        "entry multi=line one\\nline two",
    ] {
        expect_stdout_line(&out, line)?;
    }
    let out = cx.cd.run(&with("w-config-missing", "/etc/nothing-here"))?;
    ensure(!out.success() && out.stderr.contains("wasm.containerd.io/config-dir") && out.stderr.contains("/etc/nothing-here"), || {
        format!("a missing config dir: {out}")
    })
}

/// A component that says its code with `wasi:cli/exit.exit-with-code` gets exactly that code.
fn component_exit_with_code(cx: &Ctx) -> Result<()> {
    for code in wasm_shim_e2e::guests::EXIT_WITH_CODE {
        let out = cx.cd.run(
            &RunOpts::wasm(GUESTS_IMAGE, &format!("w-ewc-{code}"))
                .args([format!("/exit-with-code-{code}.wasm")]),
        )?;
        expect_code(&out, i32::from(code))?;
    }
    Ok(())
}

fn wasm_component(cx: &Ctx) -> Result<()> {
    let out = cx
        .cd
        .run(&RunOpts::wasm(GUESTS_IMAGE, "w-component").args(["/component.wasm"]))?;
    expect_code(&out, 0)?;
    expect_stdout_line(&out, "hello from wasm")
}

fn wasm_wat(cx: &Ctx) -> Result<()> {
    let out = cx
        .cd
        .run(&RunOpts::wasm(GUESTS_IMAGE, "w-wat").args(["/hello.wat"]))?;
    expect_code(&out, 0)?;
    expect_stdout_line(&out, "hello from wat")
}

fn wasm_custom_export(cx: &Ctx) -> Result<()> {
    let out = cx
        .cd
        .run(&RunOpts::wasm(GUESTS_IMAGE, "w-custom").args(["/custom.wasm#custom"]))?;
    expect_code(&out, 0)?;
    expect_stdout_line(&out, "custom export")?;
    ensure(!out.stdout.contains("start"), || {
        format!("_start ran too: {out}")
    })
}

/// A foreground guest gets `signal` once it printed `marker`; ctr must exit `code` within 2 s.
fn signal_case(
    cx: &Ctx,
    id: &str,
    guest: &str,
    marker: &str,
    signal: &str,
    code: i32,
) -> Result<()> {
    let mut run = cx.cd.spawn(
        &RunOpts::wasm(GUESTS_IMAGE, id)
            .args([guest])
            .stdin(Stdin::HoldOpen),
    )?;
    run.wait_for_stdout(marker, Duration::from_secs(20))?;
    let t = Instant::now();
    cx.cd.kill(id, signal)?;
    let out = run.wait(Duration::from_secs(10));
    let took = t.elapsed();
    println!("  {signal} -> exit after {took:.2?}");
    expect_code(&out, code)?;
    ensure(took < Duration::from_secs(2), || {
        format!("took {took:?} to stop after {signal}")
    })
}

fn wasm_memory_limit(cx: &Ctx) -> Result<()> {
    let id = "w-memhog";
    let out = cx.cd.run(
        &RunOpts::wasm(GUESTS_IMAGE, id)
            .args(["/memhog.wasm"])
            .memory_limit(64 << 20)
            .timeout(Duration::from_secs(60)),
    )?;
    println!(
        "  exit {:?} after {:.2?}; last stdout line {:?}",
        out.code,
        out.duration,
        out.stdout.lines().last()
    );
    ensure(out.stdout.contains("allocated 8 MiB"), || {
        format!("memhog never ran: {out}")
    })?;
    expect_code(&out, 125)?;
    line_with(&out.stderr.to_lowercase(), &["memory"])
        .with_context(|| format!("no memory message on stderr: {out}"))?;
    cx.events
        .wait_for(id, "/tasks/oom", Duration::from_secs(5))?;
    Ok(())
}

/// A bad entrypoint: `ctr run` fails, with a line naming one of `needles`, and nothing stays.
fn bad_input(cx: &Ctx, id: &str, entry: &str, needles: &[&str]) -> Result<()> {
    let before = Leaks::measure(&cx.cd);
    let out = cx.cd.run(
        &RunOpts::wasm(GUESTS_IMAGE, id)
            .args([entry])
            .timeout(Duration::from_secs(20)),
    )?;
    ensure(!out.timed_out && out.code.is_some_and(|c| c != 0), || {
        format!("expected `ctr run` to fail: {out}")
    })?;
    let combined = out.combined();
    let line = needles
        .iter()
        .find_map(|n| line_with(&combined, &[n]).ok())
        .ok_or_else(|| anyhow!("no output line names any of {needles:?}: {out}"))?;
    println!("  exit {:?}: {}", out.code, line.trim());
    let leaks = Leaks::wait_clean_since(&cx.cd, &before, Duration::from_secs(5));
    ensure(leaks.is_clean(), || format!("left behind: {leaks}"))
}

fn wasm_latency(cx: &Ctx) -> Result<()> {
    let n = 10;
    let (mut wasm, mut runc) = (Vec::new(), Vec::new());
    for i in 0..n {
        let w = cx
            .cd
            .run(&RunOpts::wasm(GUESTS_IMAGE, &format!("bench-w-{i}")))?
            .ok()?;
        wasm.push(w.duration);
        let r = cx
            .cd
            .run(&RunOpts::runc(BUSYBOX_IMAGE, &format!("bench-r-{i}")))?
            .ok()?;
        runc.push(r.duration);
    }
    println!(
        "  ctr run --rm median over {n}: wasm hello {:.1?} (min {:.1?}), runc busybox echo {:.1?} (min {:.1?})",
        median(wasm.clone()),
        wasm.iter().min().unwrap(),
        median(runc.clone()),
        runc.iter().min().unwrap()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// wasm: TCP through wasi:sockets (the `tcp` component guest), host network (`ctr run --net-host`)

/// A port nobody listens on right now (bound, read, released).
pub(crate) fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// `ctr run --net-host` of `/tcp.wasm` with `args`.
fn tcp_guest(id: &str, args: &[&str]) -> RunOpts {
    let mut opts = RunOpts::wasm(GUESTS_IMAGE, id)
        .args(std::iter::once("/tcp.wasm").chain(args.iter().copied()));
    opts.extra.push("--net-host".into());
    opts
}

/// Reads one line (without the newline) or up to end of file.
fn read_line_from(stream: &mut std::net::TcpStream) -> Result<String> {
    use std::io::Read;
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.contains(&b'\n') {
        match stream.read(&mut buf).context("read")? {
            0 => break,
            n => got.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&got).into_owned();
    Ok(text.split('\n').next().unwrap_or("").to_string())
}

/// Connects to 127.0.0.1:`port`, sends `line` and a newline, returns the reply line.
fn host_ask(port: &str, line: &str) -> Result<String> {
    use std::io::Write;
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .with_context(|| format!("connect to the guest at {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(format!("{line}\n").as_bytes())?;
    read_line_from(&mut stream).context("the guest's reply")
}

/// The guest serves (`serve <port> --once`); the test connects from the host.
fn wasm_tcp_server_host_client(cx: &Ctx) -> Result<()> {
    let port = free_port()?.to_string();
    let mut run = cx
        .cd
        .spawn(&tcp_guest("w-tcp-serve", &["serve", &port, "--once"]))?;
    run.wait_for_stdout(&format!("listening on {port}"), Duration::from_secs(20))?;
    let reply = host_ask(&port, "hello from the host");
    let out = run.wait(Duration::from_secs(10));
    let reply = reply.with_context(|| format!("guest: {out}"))?;
    ensure(reply == "wasm got: hello from the host", || {
        format!("reply {reply:?}; guest: {out}")
    })?;
    expect_code(&out, 0)?;
    line_with(&out.stdout, &["served 127.0.0.1:", ": hello from the host"])
        .with_context(|| format!("{out}"))?;
    Ok(())
}

/// Without `--once` the guest serves connection after connection (a pod's server) until
/// SIGTERM, which ends it (143) within 2 s although it is blocked in `accept`.
fn wasm_tcp_server_until_sigterm(cx: &Ctx) -> Result<()> {
    let id = "w-tcp-serve-term";
    let port = free_port()?.to_string();
    let mut run = cx.cd.spawn(&tcp_guest(id, &["serve", &port]))?;
    run.wait_for_stdout(&format!("listening on {port}"), Duration::from_secs(20))?;
    for i in 1..=3 {
        let reply = host_ask(&port, &format!("request {i}"))
            .with_context(|| format!("request {i}; guest so far: {}", run.stdout_now()))?;
        ensure(reply == format!("wasm got: request {i}"), || {
            format!("reply {reply:?} to request {i}")
        })?;
    }
    let t = Instant::now();
    cx.cd.kill(id, "SIGTERM")?;
    let out = run.wait(Duration::from_secs(10));
    let took = t.elapsed();
    expect_code(&out, 143)?;
    ensure(took < Duration::from_secs(2), || {
        format!("took {took:?} to stop after SIGTERM: {out}")
    })?;
    for i in 1..=3 {
        line_with(&out.stdout, &["served 127.0.0.1:", &format!(": request {i}")])
            .with_context(|| format!("{out}"))?;
    }
    Ok(())
}

/// Accepts one connection on `listener` within `timeout`, reads a line, answers
/// `host got: <line>`; returns the line.
fn host_answer_one(listener: std::net::TcpListener, timeout: Duration) -> Result<String> {
    use std::io::Write;
    listener.set_nonblocking(true)?;
    let deadline = Instant::now() + timeout;
    let mut stream = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                bail!("no connection within {timeout:?}")
            }
            Err(e) => return Err(e).context("accept"),
        }
    };
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let line = read_line_from(&mut stream)?;
    stream.write_all(format!("host got: {line}\n").as_bytes())?;
    Ok(line)
}

/// The test listens on a host port; the guest connects (`connect 127.0.0.1:<port> <msg>`).
/// With `delay`, the listener appears only that long after the guest started: the guest must
/// keep retrying the refused connection.
fn wasm_tcp_client_host_server(cx: &Ctx, id: &str, delay: Option<Duration>) -> Result<()> {
    let port = free_port()?;
    let target = format!("127.0.0.1:{port}");
    let message = "hello from wasm";
    let listener = match delay {
        None => Some(std::net::TcpListener::bind(&target).context(target.clone())?),
        Some(_) => None,
    };
    let mut run = cx
        .cd
        .spawn(&tcp_guest(id, &["connect", &target, message]))?;
    let listener = match (listener, delay) {
        (Some(l), _) => l,
        (None, delay) => {
            std::thread::sleep(delay.unwrap_or_default());
            ensure(run.running(), || {
                format!(
                    "the guest gave up before the server started: {}",
                    run.wait(Duration::ZERO)
                )
            })?;
            std::net::TcpListener::bind(&target).context(target.clone())?
        }
    };
    let server = std::thread::spawn(move || host_answer_one(listener, Duration::from_secs(20)));
    let out = run.wait(Duration::from_secs(30));
    let got = server
        .join()
        .map_err(|_| anyhow!("the host server panicked"))?
        .with_context(|| format!("host server; guest: {out}"))?;
    ensure(got == message, || {
        format!("the host got {got:?}, not {message:?}; guest: {out}")
    })?;
    expect_code(&out, 0)?;
    expect_stdout_line(&out, &format!("reply: host got: {message}"))
}

/// Nobody listens: after 10 s of refused attempts the guest exits 1 with one clear line.
fn wasm_tcp_client_refused(cx: &Ctx) -> Result<()> {
    let target = format!("127.0.0.1:{}", free_port()?);
    let out = cx.cd.run(&tcp_guest(
        "w-tcp-refused",
        &["connect", &target, "anyone?"],
    ))?;
    expect_code(&out, 1)?;
    line_with(&out.stderr, &["tcp: connect", &target, "refused"])
        .with_context(|| format!("{out}"))?;
    ensure(out.duration >= Duration::from_secs(9), || {
        format!("gave up before retrying for 10 s: {out}")
    })
}

// ---------------------------------------------------------------------------------------------
// runc-only cases (harness checks)

fn runc_echo(cx: &Ctx) -> Result<()> {
    let out = cx.cd.run(&RunOpts::runc(BUSYBOX_IMAGE, "r-echo"))?;
    expect_code(&out, 0)?;
    ensure(out.stdout == "hello\n", || format!("{out}"))
}

fn runc_exit_and_streams(cx: &Ctx) -> Result<()> {
    let out = cx.cd.run(&RunOpts::runc(BUSYBOX_IMAGE, "r-exit").args([
        "/bin/sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]))?;
    expect_code(&out, 3)?;
    ensure(out.stdout == "out\n" && out.stderr == "err\n", || {
        format!("{out}")
    })
}

fn runc_stdin(cx: &Ctx) -> Result<()> {
    let out = cx.cd.run(
        &RunOpts::runc(BUSYBOX_IMAGE, "r-cat")
            .args(["/bin/cat"])
            .stdin(Stdin::Bytes(b"piped\n".to_vec())),
    )?;
    expect_code(&out, 0)?;
    ensure(out.stdout == "piped\n", || format!("{out}"))
}

// ---------------------------------------------------------------------------------------------
// setup and trial list

fn setup() -> Result<Ctx> {
    let cd = Containerd::start()?;
    println!(
        "private containerd: {} (log: {})",
        cd.dir.display(),
        cd.log.display()
    );
    let events = EventRecorder::start(&cd)?;

    // Every image goes into the test namespace and into `k8s.io`, where the CRI looks.
    let both = [cd.namespace.as_str(), K8S_NAMESPACE];
    let runc_blocker = match images::busybox_image()
        .and_then(|s| images::build_and_import_into(&cd, &s, &both))
    {
        Ok(_) => None,
        Err(e) => Some(format!("busybox image: {e:#}")),
    };

    let mut wasm_blocker = None;
    if !cd.shim.exists() {
        wasm_blocker = Some(format!(
            "shim binary {} not found: run `cargo build --release` first (or set SHIM_BIN)",
            cd.shim.display()
        ));
    }
    let guests = guests::build().and_then(|_| guests::Guests::load());
    match guests {
        Ok(g) => {
            if let Err(e) = images::build_and_import_into(&cd, &images::guests_image(&g), &both) {
                wasm_blocker.get_or_insert(format!("guests image: {e:#}"));
            }
        }
        Err(e) => {
            wasm_blocker.get_or_insert(format!("guests: {e:#}"));
        }
    }
    if let Some(b) = &wasm_blocker {
        println!("wasm trials cannot run: {b}");
    }
    let cri_blocker = cri::setup(&cd).err().map(|e| format!("{e:#}"));
    if let Some(b) = &cri_blocker {
        println!("CRI trials cannot run: {b}");
    }
    Ok(Ctx {
        cd,
        events,
        wasm_blocker,
        runc_blocker,
        cri_blocker,
    })
}

type Case = Box<dyn Fn(&Ctx) -> Result<()> + Send + Sync>;

fn cases() -> Vec<(String, Flavor, Case)> {
    let mut v: Vec<(String, Flavor, Case)> = Vec::new();
    let mut add = |name: &str, f: Flavor, c: Case| {
        let prefix = match f {
            Flavor::Wasm => "wasm",
            Flavor::Runc => "runc",
            Flavor::Native => "native",
            Flavor::Cri => "cri",
        };
        v.push((format!("{prefix}::{name}"), f, c));
    };
    use Flavor::{Runc, Wasm};

    add("echo", Runc, Box::new(runc_echo));
    add(
        "exit_code_and_streams",
        Runc,
        Box::new(runc_exit_and_streams),
    );
    add("stdin", Runc, Box::new(runc_stdin));
    add(
        "sigkill",
        Runc,
        Box::new(|cx| sigkill_sleeper(cx, Runc, "r-kill")),
    );
    add(
        "cpu_limit",
        Runc,
        Box::new(|cx| cpu_limit(cx, Runc, "r-cpu")),
    );
    add(
        "pids_limit_config",
        Runc,
        Box::new(|cx| pids_limit(cx, Runc, "r-pids")),
    );
    add(
        "pause_resume",
        Runc,
        Box::new(|cx| pause_resume(cx, Runc, "r-pause")),
    );
    add(
        "metrics_ps",
        Runc,
        Box::new(|cx| metrics_ps(cx, Runc, "r-metrics")),
    );
    add(
        "events",
        Runc,
        Box::new(|cx| lifecycle_events(cx, Runc, "r-events")),
    );
    add(
        "loop_leaves_nothing",
        Runc,
        Box::new(|cx| run_loop(cx, Runc, "r-loop", 5)),
    );

    // Native containers through the wasm runtime (pods' pause and sidecars): the runc
    // scenarios again, plus what only native tasks have.
    use Flavor::Native;
    add("echo", Native, Box::new(native::echo));
    add("exit_code_and_streams", Native, Box::new(native::exit_and_streams));
    add("stdin", Native, Box::new(native::stdin));
    add("sigkill", Native, Box::new(|cx| sigkill_sleeper(cx, Native, "n-kill")));
    add("cpu_limit", Native, Box::new(|cx| cpu_limit(cx, Native, "n-cpu")));
    add("pids_limit_config", Native, Box::new(|cx| pids_limit(cx, Native, "n-pids")));
    add("pause_resume", Native, Box::new(|cx| pause_resume(cx, Native, "n-pause")));
    add("metrics_ps", Native, Box::new(|cx| metrics_ps(cx, Native, "n-metrics")));
    add("events", Native, Box::new(|cx| lifecycle_events(cx, Native, "n-events")));
    add("exec", Native, Box::new(native::exec));
    add("exec_in_wasm_task_is_refused", Native, Box::new(native::exec_in_wasm));
    add("terminal", Native, Box::new(native::terminal));
    add("missing_binary", Native, Box::new(native::missing_binary));
    add("pod_shares_one_shim", Native, Box::new(native::pod_shares_one_shim));
    add("loop_leaves_nothing", Native, Box::new(|cx| run_loop(cx, Native, "n-loop", 10)));

    add("hello", Wasm, Box::new(wasm_hello));
    add("artifact_from_content_store", Wasm, Box::new(artifact::runs_from_content_store));
    add("artifact_unknown_media_type", Wasm, Box::new(artifact::unknown_media_type_is_refused));
    add("stderr_separate", Wasm, Box::new(wasm_stderr));
    // Each command guest as a module (`wasm::<case>`) and as a component (`wasm::component::<case>`).
    for (prefix, g) in [("", ""), ("component::", "c-")] {
        add(&format!("{prefix}exit_code_3"), Wasm, Box::new(move |cx| wasm_exit3(cx, g)));
        add(
            &format!("{prefix}args_env_cwd_relative_file"),
            Wasm,
            Box::new(move |cx| wasm_args_env_cwd(cx, g)),
        );
        add(&format!("{prefix}cwd_flag"), Wasm, Box::new(move |cx| wasm_cwd_flag(cx, g)));
        add(&format!("{prefix}files_image_and_tmp"), Wasm, Box::new(move |cx| wasm_files(cx, g)));
        add(&format!("{prefix}stdin_cat_to_eof"), Wasm, Box::new(move |cx| wasm_stdin_cat(cx, g)));
        add(&format!("{prefix}exit_codes"), Wasm, Box::new(move |cx| wasm_exit_codes(cx, g)));
    }
    add("component::exit_with_code", Wasm, Box::new(component_exit_with_code));
    add("component::wasi_config", Wasm, Box::new(component_wasi_config));
    add("stdin_1mib", Wasm, Box::new(wasm_stdin_large));
    add("component", Wasm, Box::new(wasm_component));
    add("wat_entrypoint", Wasm, Box::new(wasm_wat));
    add("custom_export", Wasm, Box::new(wasm_custom_export));
    add(
        "tcp_server_host_client",
        Wasm,
        Box::new(wasm_tcp_server_host_client),
    );
    add(
        "tcp_server_until_sigterm",
        Wasm,
        Box::new(wasm_tcp_server_until_sigterm),
    );
    add(
        "tcp_client_host_server",
        Wasm,
        Box::new(|cx| wasm_tcp_client_host_server(cx, "w-tcp-connect", None)),
    );
    add(
        "tcp_client_retries_until_server_starts",
        Wasm,
        Box::new(|cx| wasm_tcp_client_host_server(cx, "w-tcp-retry", Some(Duration::from_secs(2)))),
    );
    add(
        "tcp_client_refused",
        Wasm,
        Box::new(wasm_tcp_client_refused),
    );
    add(
        "sigterm_block_read",
        Wasm,
        Box::new(|cx| {
            signal_case(
                cx,
                "w-term-read",
                "/block-read.wasm",
                "waiting",
                "SIGTERM",
                143,
            )
        }),
    );
    add(
        "sigkill_spin",
        Wasm,
        Box::new(|cx| signal_case(cx, "w-kill-spin", "/spin.wasm", "spinning", "SIGKILL", 137)),
    );
    add(
        "sigkill_block_read",
        Wasm,
        Box::new(|cx| {
            signal_case(
                cx,
                "w-kill-read",
                "/block-read.wasm",
                "waiting",
                "SIGKILL",
                137,
            )
        }),
    );
    add("memory_limit_oom", Wasm, Box::new(wasm_memory_limit));
    add(
        "cpu_limit",
        Wasm,
        Box::new(|cx| cpu_limit(cx, Wasm, "w-cpu")),
    );
    add(
        "pids_limit_config",
        Wasm,
        Box::new(|cx| pids_limit(cx, Wasm, "w-pids")),
    );
    add(
        "pause_resume",
        Wasm,
        Box::new(|cx| pause_resume(cx, Wasm, "w-pause")),
    );
    add(
        "metrics_ps",
        Wasm,
        Box::new(|cx| metrics_ps(cx, Wasm, "w-metrics")),
    );
    add(
        "events",
        Wasm,
        Box::new(|cx| lifecycle_events(cx, Wasm, "w-events")),
    );
    add(
        "bad_corrupt_module",
        Wasm,
        Box::new(|cx| bad_input(cx, "w-bad-corrupt", "/corrupt.wasm", &["corrupt.wasm"])),
    );
    add(
        "bad_truncated_module",
        Wasm,
        Box::new(|cx| bad_input(cx, "w-bad-trunc", "/truncated.wasm", &["truncated.wasm"])),
    );
    add(
        "bad_missing_file",
        Wasm,
        Box::new(|cx| bad_input(cx, "w-bad-missing", "/missing.wasm", &["missing.wasm"])),
    );
    add(
        "bad_directory",
        Wasm,
        Box::new(|cx| bad_input(cx, "w-bad-dir", "/dir.wasm", &["dir.wasm"])),
    );
    add(
        "bad_missing_export",
        Wasm,
        Box::new(|cx| bad_input(cx, "w-bad-export", "/hello.wasm#nope", &["nope"])),
    );
    add(
        "bad_no_start",
        Wasm,
        Box::new(|cx| {
            bad_input(
                cx,
                "w-bad-nostart",
                "/no-start.wasm",
                &["_start", "no-start.wasm"],
            )
        }),
    );
    add(
        "bad_not_wasm",
        Wasm,
        Box::new(|cx| bad_input(cx, "w-bad-text", "/notes.txt", &["notes.txt"])),
    );
    for (name, id, entry, needle) in [
        ("bad_empty_module", "w-bad-empty", "/empty.wasm", "empty.wasm"),
        ("bad_wat_syntax", "w-bad-wat", "/broken.wat", "broken.wat"),
        ("bad_symlink_loop", "w-bad-loop", "/loop-a.wasm", "loop-a.wasm"),
        ("bad_empty_export", "w-bad-noexp", "/hello.wasm#", "hello.wasm#"),
        ("bad_export_not_a_function", "w-bad-memexp", "/hello.wasm#memory", "memory"),
        ("bad_export_on_component", "w-bad-compexp", "/component.wasm#nope", "nope"),
        ("bad_module_import_missing", "w-bad-imp", "/needs-import.wasm", "wasmtest"),
        // Imports an interface nobody provides and exports nothing: the missing run export is
        // what is reported first.
        ("bad_component_without_run", "w-bad-cimp", "/needs-import-component.wasm", "wasi:cli/run"),
        ("bad_char_device", "w-bad-dev", "/dev/null", "/dev/null"),
        ("bad_relative_missing", "w-bad-rel", "nothing-here", "nothing-here"),
    ] {
        add(name, Wasm, Box::new(move |cx| bad_input(cx, id, entry, &[needle])));
    }
    for (name, id, how, needles) in badspec::cases() {
        add(name, Wasm, Box::new(move |cx| badspec::bad_spec(cx, id, how, needles)));
    }
    add("bad_huge_module", Wasm, Box::new(badspec::huge_module));
    let loops = std::env::var("E2E_LOOP")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    add(
        "loop_200_leaves_nothing",
        Wasm,
        Box::new(move |cx| run_loop(cx, Wasm, "w-loop", loops)),
    );
    add("concurrent_200_no_lost_exits", Wasm, Box::new(|cx| soak::concurrent(cx, 200)));
    add("pod_shim_100_tasks_no_growth", Wasm, Box::new(|cx| soak::pod_shim(cx, 100)));
    add("pod_shim_many_waiters", Wasm, Box::new(soak::pod_shim_many_waiters));
    // `make soak` (ignored otherwise): the same at length.
    add("soak::loop_1000", Wasm, Box::new(|cx| run_loop(cx, Wasm, "s-loop", 1000)));
    add("soak::concurrent_200", Wasm, Box::new(|cx| soak::concurrent(cx, 200)));
    add("soak::pod_shim_1000_tasks", Wasm, Box::new(|cx| soak::pod_shim(cx, 1000)));
    add("cache_compiled_once", Wasm, Box::new(cache::compiled_once));
    add("cache_corrupt_entry_recovers", Wasm, Box::new(cache::corrupt_entry_recovers));
    add("precompile::watch_then_first_start_hits", Wasm, Box::new(precompile::watch_then_first_start_hits));
    add("precompile::bad_images_then_good", Wasm, Box::new(precompile::bad_images_then_good));
    add("precompile::one_shot", Wasm, Box::new(precompile::one_shot));
    add("precompile::bounded", Wasm, Box::new(precompile::bounded));
    add("precompile::first_start_timing", Wasm, Box::new(precompile::first_start_timing));
    // Wasm features and debuggable traps (e2e/features.rs).
    add("features::exceptions_first_and_cached_start", Wasm, Box::new(features::exceptions));
    add("features::gc_first_and_cached_start", Wasm, Box::new(features::gc));
    add("features::annotation_unknown_name", Wasm, Box::new(features::unknown_name));
    add("features::annotation_conflict", Wasm, Box::new(features::conflict));
    add("features::annotation_turns_a_feature_off", Wasm, Box::new(features::turned_off));
    add("features::trap_names_function_and_leaves_coredump", Wasm, Box::new(features::trap_coredump));
    add("features::coredump_dir_missing", Wasm, Box::new(features::coredump_dir_missing));
    add("http::component", Wasm, Box::new(http::component));
    add("http::sigterm_drains_in_flight", Wasm, Box::new(http::sigterm_drains));
    add("http::processes", Wasm, Box::new(http::processes));
    add("http::baseline_then_optimized", Wasm, Box::new(http::baseline_then_optimized));
    add("http::wagi", Wasm, Box::new(http::wagi));
    add("http::outbound_allowed_and_denied", Wasm, Box::new(http::outbound));
    add("http::port_in_use", Wasm, Box::new(http::port_in_use));
    add("http::bad_annotation", Wasm, Box::new(http::bad_annotation));
    add("http::instance_reuse", Wasm, Box::new(http::instance_reuse));
    add("http::instance_reuse_bad_annotation", Wasm, Box::new(http::instance_reuse_bad_annotation));
    add("http::instance_reuse_refused_for_wagi", Wasm, Box::new(http::instance_reuse_refused_for_wagi));
    add("http::metrics_scraped_by_prometheus", Wasm, Box::new(metrics::scraped_by_prometheus));
    add("http::metrics_bad_port", Wasm, Box::new(metrics::bad_port));
    add("traces::task_spans_in_one_trace", Wasm, Box::new(traces::task_spans_in_one_trace));
    add("traces::pod_endpoint_request_spans", Wasm, Box::new(traces::pod_endpoint_request_spans));
    add("traces::outbound_traceparent", Wasm, Box::new(traces::outbound_traceparent));
    add("traces::collector_down", Wasm, Box::new(traces::collector_down));
    add("wasi3::command", Wasm, Box::new(wasi3::command));
    add("wasi3::command_memory_limit", Wasm, Box::new(wasi3::command_memory_limit));
    add("wasi3::command_sigterm", Wasm, Box::new(wasi3::command_sigterm));
    add("wasi3::service", Wasm, Box::new(wasi3::service));
    add("logs::access_log_component", Wasm, Box::new(logs::access_log_component));
    add("logs::access_log_off_by_default", Wasm, Box::new(logs::access_log_off_by_default));
    add("logs::access_log_wagi", Wasm, Box::new(logs::access_log_wagi));
    add("logs::access_log_bad_value", Wasm, Box::new(logs::access_log_bad_value));
    add("logs::shim_lines_quiet_and_keyed", Wasm, Box::new(logs::shim_lines_quiet_and_keyed));
    add("logs::log_uri", Wasm, Box::new(logs::log_uri));
    // Real programs nobody here wrote, from PyPI and npm (e2e/thirdparty.rs), against wasmtime 48.
    add("thirdparty::resvg_p1_png_same_as_wasmtime", Wasm, Box::new(thirdparty::resvg));
    add("thirdparty::itk_compress_stringify_p1_reactor", Wasm, Box::new(thirdparty::itk_compress_stringify));
    add("thirdparty::gcc_avr_cc1_and_as_same_as_wasmtime", Wasm, Box::new(thirdparty::gcc_avr));
    add("thirdparty::cpython_command_same_as_wasmtime", Wasm, Box::new(thirdparty::cpython_command));
    add("thirdparty::cpython_wasi_http", Wasm, Box::new(thirdparty::cpython_http));
    add("thirdparty::js_wasi_http", Wasm, Box::new(thirdparty::js_http));
    add("latency_vs_runc", Wasm, Box::new(wasm_latency));

    // Faults around running tasks (e2e/faults.rs): containerd restarted, the shim killed, guests
    // that spin, eat memory, flood stdout or never read stdin next to a well-behaved one.
    add("faults::containerd_restart", Wasm, Box::new(faults::containerd_restart));
    add("faults::shim_sigkill", Wasm, Box::new(faults::shim_sigkill));
    add("faults::create_cancelled", Wasm, Box::new(faults::create_cancelled));
    add("faults::noisy_spin", Wasm, Box::new(faults::noisy_spin));
    add("faults::noisy_memhog", Wasm, Box::new(faults::noisy_memhog));
    add("faults::noisy_flood", Wasm, Box::new(faults::noisy_flood));
    add("faults::noisy_unread_stdin", Wasm, Box::new(faults::noisy_unread_stdin));

    // A guest trying to get out (e2e/sandbox.rs): paths, network, memory, capabilities.
    add("sandbox::paths", Wasm, Box::new(sandbox::paths));
    add("sandbox::paths_nonroot", Wasm, Box::new(sandbox::paths_nonroot));
    add("sandbox::network", Wasm, Box::new(sandbox::network));
    add("sandbox::memory_cgroup", Wasm, Box::new(sandbox::memory_cgroup));
    add("sandbox::capabilities", Wasm, Box::new(sandbox::capabilities));
    add("sandbox::kernel_interfaces", Wasm, Box::new(sandbox::kernel_interfaces));
    add("sandbox::kernel_interfaces_nonroot", Wasm, Box::new(sandbox::kernel_interfaces_nonroot));
    add("sandbox::dev_symlink", Wasm, Box::new(sandbox::dev_symlink));
    add("sandbox::seccomp", Wasm, Box::new(sandbox::seccomp));
    add("sandbox::shared_cgroup", Wasm, Box::new(sandbox::shared_cgroup));
    add("sandbox::nss_module_of_the_container_not_loaded", Wasm, Box::new(sandbox::nss_module));
    add("sandbox::devices_default_deny_without_rules", Wasm, Box::new(sandbox::devices_default_deny));
    add("sandbox::leftovers_in_the_cgroup_killed", Wasm, Box::new(sandbox::leftovers_in_the_cgroup));
    add("sandbox::rootfs_propagation_values", Wasm, Box::new(sandbox::rootfs_propagation));
    add("sandbox::umask_of_the_spec", Wasm, Box::new(sandbox::umask));
    add("sandbox::name_files_read_only_with_an_allow_list", Wasm, Box::new(sandbox::name_files_read_only));

    // The Kubernetes path (e2e/cri.rs): containerd's CRI plugin, handler `runc` first (the
    // baseline that proves the harness), then handler `wasm`.
    use wasm_shim_e2e::cri::{RUNC_HANDLER, WASM_HANDLER};
    use Flavor::Cri;
    add("version", Cri, Box::new(cri::version));
    add("images_visible", Cri, Box::new(cri::images_visible));
    add("pause_binary_exits_0_on_sigterm", Cri, Box::new(cri::pause_binary));
    add("unconfigured_handler", Cri, Box::new(cri::unconfigured_handler));
    // `containerd-shim-wasm-v1 install` and `doctor` (e2e/install.rs): containerd restarted on
    // a config without the runtime, installed into, restarted, and a wasm pod run. Early, so
    // the pod trials after it run on the harness's containerd as this trial restored it.
    add("install::then_pod", Cri, Box::new(install::install_then_pod));
    add("runc::echo_alone", Cri, Box::new(cri::runc_echo));
    add("runc::exit_code_and_streams", Cri, Box::new(|cx| cri::native_exit_and_streams(cx, RUNC_HANDLER)));
    add("runc::stop_sigterm", Cri, Box::new(cri::runc_stop));
    add("runc::sidecars_localhost_both_ways", Cri, Box::new(cri::runc_sidecar_localhost));
    add("runc::one_shim_per_pod", Cri, Box::new(|cx| cri::one_shim_per_pod(cx, RUNC_HANDLER)));
    add("runc::missing_image", Cri, Box::new(|cx| cri::missing_image(cx, RUNC_HANDLER)));
    add("wasm::hello_alone", Cri, Box::new(cri::wasm_hello));
    add("wasm::stderr_in_log", Cri, Box::new(cri::wasm_stderr));
    add("wasm::exit_code_3", Cri, Box::new(cri::wasm_exit3));
    add("wasm::native_exit_code_and_streams", Cri, Box::new(|cx| cri::native_exit_and_streams(cx, WASM_HANDLER)));
    add("wasm::stop_sigterm_spin", Cri, Box::new(cri::wasm_stop));
    add("wasm::sidecar_localhost_both_ways", Cri, Box::new(cri::wasm_sidecar_localhost));
    add("wasm::shared_pid_sidecar_cannot_reach_init", Cri, Box::new(cri::wasm_shared_pid_sidecar));
    add("wasm::runtime_default_seccomp", Cri, Box::new(cri::wasm_runtime_default_seccomp));
    add("wasm::unified_resources_as_runc", Cri, Box::new(cri::wasm_unified_resources_as_runc));
    add("wasm::escape_attempts_as_root_and_uid_1000", Cri, Box::new(cri::wasm_escape_attempts));
    add("wasm::http_function_and_sidecar", Cri, Box::new(cri::wasm_http_function));
    add("wasm::shim_lines_name_the_pod", Cri, Box::new(logs::shim_lines_name_the_pod));
    add("wasm::traces_from_the_pods_network", Cri, Box::new(traces::traces_from_the_pods_network));
    add("wasm::thirdparty_cpython_command_and_js_function", Cri, Box::new(thirdparty::cri_cpython_and_js));
    add("wasm::one_shim_per_pod", Cri, Box::new(|cx| cri::one_shim_per_pod(cx, WASM_HANDLER)));
    add("wasm::missing_image", Cri, Box::new(|cx| cri::missing_image(cx, WASM_HANDLER)));
    add("latency_wasm_vs_runc", Cri, Box::new(|cx| cri::latency(cx, 5)));
    v
}

fn main() {
    let mut args = Arguments::from_args();
    // One containerd, one task at a time: timings and leak counts stay meaningful.
    if args.test_threads.is_none() {
        args.test_threads = Some(1);
    }
    let root = wasm_shim_e2e::is_root();
    if !root {
        println!("wasm-shim-e2e: not root; every trial is skipped (containerd needs root)");
    }

    let ctx: Option<Arc<Ctx>> = if root && !args.list {
        match setup() {
            Ok(cx) => Some(Arc::new(cx)),
            Err(e) => {
                // Every trial fails with the reason.
                eprintln!("setup failed: {e:#}");
                None
            }
        }
    } else {
        None
    };
    let setup_failed = root && !args.list && ctx.is_none();

    let trials: Vec<Trial> = cases()
        .into_iter()
        .map(|(name, flavor, case)| {
            // The soak trials run only when asked for (`make soak`: --include-ignored soak::).
            let ignored = !root || name.contains("::soak::");
            let cx = ctx.clone();
            Trial::test(name, move || {
                let Some(cx) = cx else {
                    return if setup_failed {
                        Err(Failed::from("setup failed (see above)"))
                    } else {
                        Ok(())
                    };
                };
                if let Some(b) = flavor.blocker(&cx) {
                    return Err(Failed::from(b.clone()));
                }
                let log_start = std::fs::metadata(&cx.cd.log).map(|m| m.len()).unwrap_or(0);
                let before = Leaks::measure(&cx.cd);
                let result = case(&cx);
                cx.cd.remove_all();
                // Every trial, passing or not, must leave nothing new behind.
                let left = Leaks::wait_clean_since(&cx.cd, &before, Duration::from_secs(5));
                leaks::kill_pids(&left.shim_pids());
                let result = result.and_then(|()| {
                    ensure(left.is_clean(), || format!("the trial passed but left behind: {left}"))
                });
                result.map_err(|e| {
                    let log = std::fs::read(&cx.cd.log).unwrap_or_default();
                    let new = String::from_utf8_lossy(&log[(log_start as usize).min(log.len())..]).into_owned();
                    // The shim's own lines are those with an `id="…"` field (containerd's own have
                    // `id=…` unquoted): what it did is what a leftover shim needs explained.
                    let lines: Vec<&str> = new
                        .lines()
                        .filter(|l| l.contains("level=error") || l.contains("level=warn") || l.contains("shim") || l.contains("shutdown") || l.contains(" id=\""))
                        .collect();
                    let tail = lines[lines.len().saturating_sub(40)..].join("\n");
                    Failed::from(format!("{e:#}\n--- containerd log (errors, warnings, shim lines; last 40) ---\n{tail}"))
                })
            })
            .with_ignored_flag(ignored)
        })
        .collect();

    let conclusion = libtest_mimic::run(&args, trials);
    if let Some(cx) = ctx {
        match Arc::try_unwrap(cx) {
            Ok(cx) => drop(cx),
            Err(_) => eprintln!("warning: context still shared; containerd not stopped"),
        }
    }
    conclusion.exit();
}
