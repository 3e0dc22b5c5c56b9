//! `make bench`: start latency, throughput, memory per task and big-module starts of
//! `containerd-shim-wasm-v1`, against runc (and any other shim on PATH) on a private containerd.
//!
//! ```text
//! make bench                       # builds the shim and the guests, then runs this
//! bench [--rounds N] [--out FILE]  # N interleaved rounds (default 10); raw results as JSON
//! bench --only memory,latency      # some parts only: latency, throughput, memory, big, burst, replicas, http, reuse, real
//! ```
//!
//! What it measures, all in one invocation, alternating runtimes sample by sample (A B A B …)
//! so that a machine that gets busier affects all of them alike:
//! - `ctr run --rm` latency: the `hello` guest with this shim, busybox `echo hello` with runc,
//!   `hello` with every other `containerd-shim-*` found on PATH (runwasi's wasmtime shim, …);
//! - tasks per second at concurrency 1, 4 and 10 (`ctr run --rm` in parallel);
//! - PSS and RSS per running task with 20 long-running tasks (the shim and container processes,
//!   from `/proc/<pid>/smaps_rollup`);
//! - the big guest (`test/guests/big`, 6.7 MB): first start with an empty cache (baseline code
//!   first, the default) against a first start that waits for the optimizing compile (a second
//!   containerd whose shims run with `WASM_SHIM_BASELINE=off`), a second start (cached), and ten
//!   replicas at once from an empty cache, counting compiles in the cache's `compile.log`;
//! - a scale-up burst: a second replica of the big image started while the first one's
//!   optimizing compile runs in the background, against its quiet cached start and hello;
//! - HTTP (`http.rs`): the `wasi:http` guest served by this shim against `wasmtime serve` (and
//!   any other shim on PATH that serves it, such as runwasi's wasmtime shim), wrk
//!   at 1, 10 and 100 connections; the WAGI guest; `ctr run` to the first 200; and (`reuse.rs`)
//!   instance reuse against a fresh instance per request, for that guest and for the CPython
//!   handler `make thirdparty` builds.
//! - third-party components (`real.rs`: CPython and JavaScript from componentize-py and
//!   componentize-js): first starts never seen, precompiled and cached; the handlers' req/s,
//!   latency and idle PSS against `wasmtime serve` on the same file.
//!
//! Needs root, containerd, runc, busybox-static and the built guests.

mod http;
mod real;
mod reuse;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};

use wasm_shim_e2e::ctr::force_remove;
use wasm_shim_e2e::guests::{self, Guests};
use wasm_shim_e2e::images::{self, BUSYBOX_IMAGE, GUESTS_IMAGE};
use wasm_shim_e2e::{Containerd, RunOpts, RUNC_RUNTIME, SHIM_NAME, WASM_RUNTIME};
use wasm_shim_oci::image::{ImageFile, ImageSpec, Style};

const BIG_IMAGE: &str = "docker.io/wasmtest/big:1";
const HELLO_OUT: &str = "hello from wasm";
const BIG_OUT: &str = "big: ready";
const CONCURRENCY: &[usize] = &[1, 4, 10];
const MEMORY_TASKS: usize = 20;
const REPLICAS: usize = 10;

/// One way to run a short task.
#[derive(Clone)]
struct Runtime {
    /// Column label.
    label: String,
    runtime: String,
    image: String,
    args: Vec<String>,
    /// Expected stdout.
    expect: String,
    /// Args of a long-running task (for the memory measure).
    sleep: Vec<String>,
}

impl Runtime {
    fn opts(&self, id: &str) -> RunOpts {
        let mut o = if self.runtime == RUNC_RUNTIME {
            RunOpts::runc(&self.image, id)
        } else {
            RunOpts::wasm(&self.image, id)
        };
        o.runtime = self.runtime.clone();
        o.args(self.args.clone())
    }
}

fn main() {
    // Every program compared here inherits this environment (`wasmtime serve` directly, other
    // shims through containerd), but this shim's init starts with an empty one. With
    // RUST_BACKTRACE set, wasmtime 48 captures a Rust backtrace for an error it makes and
    // discards each time a store is dropped: about 6% of a served request's CPU (perf, hello
    // handler). Unset here, so that everything measured runs as it would on a node.
    for var in ["RUST_BACKTRACE", "RUST_LIB_BACKTRACE"] {
        std::env::remove_var(var);
    }
    if let Err(e) = real_main() {
        eprintln!("bench: {e:#}");
        std::process::exit(1);
    }
}

struct Args {
    rounds: usize,
    out: PathBuf,
    only: Option<Vec<String>>,
}

const PARTS: &[&str] = &["latency", "throughput", "memory", "big", "burst", "replicas", "http", "reuse", "real"];

impl Args {
    fn wants(&self, part: &str) -> bool {
        self.only.as_ref().is_none_or(|o| o.iter().any(|p| p == part))
    }
}

fn parse_args() -> Result<Args> {
    let mut a = Args { rounds: 10, out: wasm_shim_e2e::workspace_root().join("target/bench/results.json"), only: None };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--rounds" => a.rounds = it.next().context("--rounds N")?.parse()?,
            "--out" => a.out = PathBuf::from(it.next().context("--out FILE")?),
            "--only" => {
                let parts: Vec<String> = it.next().context("--only PART,...")?.split(',').map(String::from).collect();
                if let Some(p) = parts.iter().find(|p| !PARTS.contains(&p.as_str())) {
                    bail!("unknown part {p:?} (parts: {})", PARTS.join(", "));
                }
                a.only = Some(parts);
            }
            "-h" | "--help" => {
                println!("bench [--rounds N] [--out FILE] [--only {}]", PARTS.join(","));
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}"),
        }
    }
    ensure!(a.rounds >= 1, "--rounds must be at least 1");
    Ok(a)
}

fn real_main() -> Result<()> {
    let args = parse_args()?;
    ensure!(wasm_shim_e2e::is_root(), "the benchmark needs root (a private containerd)");
    let shim = wasm_shim_e2e::containerd::locate_shim();
    ensure!(shim.exists(), "{}: missing; `cargo build --release` first", shim.display());
    guests::build()?;
    let g = Guests::load()?;
    let needs_big = args.wants("big") || args.wants("burst") || args.wants("replicas");
    let big_path = guests::guests_dir().join("big/target/wasm32-wasip1/release/big.wasm");
    let big = if needs_big {
        fs::read(&big_path).with_context(|| {
            format!("{}: build it with `cargo build --release --target wasm32-wasip1 --manifest-path test/guests/big/Cargo.toml`", big_path.display())
        })?
    } else {
        Vec::new()
    };

    let started = Instant::now();
    eprintln!("bench: starting two private containerds (shims with baseline first start, and without)");
    let cd = Containerd::start()?;
    let cd_opt = Containerd::start_with_env(&[("WASM_SHIM_BASELINE", "off")])?;
    images::build_and_import(&cd, &images::guests_image(&g))?;
    images::build_and_import(&cd, &images::busybox_image()?)?;
    if needs_big {
        for c in [&cd, &cd_opt] {
            images::build_and_import(c, &big_image(&big))?;
        }
    }

    let mut runtimes = vec![
        Runtime {
            label: "wasm (this shim) hello".into(),
            runtime: WASM_RUNTIME.into(),
            image: GUESTS_IMAGE.into(),
            args: vec![],
            expect: HELLO_OUT.into(),
            sleep: vec!["/sleep.wasm".into(), "600".into()],
        },
        Runtime {
            label: "runc busybox echo".into(),
            runtime: RUNC_RUNTIME.into(),
            image: BUSYBOX_IMAGE.into(),
            args: vec![],
            expect: "hello".into(),
            sleep: vec!["/bin/sleep".into(), "600".into()],
        },
    ];
    for (bin, runtime) in other_shims() {
        runtimes.push(Runtime {
            label: format!("{bin} hello"),
            runtime,
            image: GUESTS_IMAGE.into(),
            args: vec!["/hello.wasm".into()],
            expect: HELLO_OUT.into(),
            sleep: vec!["/sleep.wasm".into(), "600".into()],
        });
    }
    // A runtime that cannot run hello here is reported and left out, not fatal.
    let mut usable = Vec::new();
    for rt in runtimes {
        match sample(&cd, &rt, "warm") {
            Ok(_) => usable.push(rt),
            Err(e) => eprintln!("bench: leaving out {}: {e:#}", rt.label),
        }
    }
    let runtimes = usable;
    ensure!(runtimes.len() >= 2, "this shim and runc must both work");

    let mut results = json!({
        "machine": machine(),
        "shim": shim.display().to_string(),
        "rounds": args.rounds,
    });

    if args.wants("latency") {
        eprintln!("bench: latency, {} interleaved rounds", args.rounds);
        results["latency_ms"] = latency(&cd, &runtimes, args.rounds)?;
    }
    if args.wants("throughput") {
        eprintln!("bench: throughput at concurrency {CONCURRENCY:?}");
        results["tasks_per_second"] = throughput(&cd, &runtimes, (args.rounds / 3).max(1))?;
    }
    if args.wants("memory") {
        eprintln!("bench: memory with {MEMORY_TASKS} running tasks each");
        let mut memory = BTreeMap::new();
        for rt in &runtimes {
            memory.insert(rt.label.clone(), measure_memory(&cd, rt)?);
        }
        results["memory_per_task"] = json!(memory);
    }
    if args.wants("big") {
        eprintln!("bench: big module, first and cached starts");
        results["big"] = big_module(&cd, &cd_opt, &runtimes[0], (args.rounds / 2).max(2))?;
    }
    if args.wants("burst") {
        eprintln!("bench: scale-up burst, a second replica while the first's optimizing compile runs");
        results["burst"] = burst(&cd, &runtimes[0], (args.rounds / 2).max(2))?;
    }
    if args.wants("replicas") {
        eprintln!("bench: big module, {REPLICAS} replicas at once from an empty cache");
        results["replicas"] = json!({
            "baseline_first": replicas(&cd)?,
            "optimized_first": replicas(&cd_opt)?,
        });
    }
    if args.wants("http") {
        eprintln!("bench: HTTP, this shim against wasmtime serve, wrk at {:?} connections", http::CONNECTIONS);
        let hello = || sample(&cd, &runtimes[0], "http-hello");
        results["http"] = http::run(&cd, &g, (args.rounds / 2).max(1), &hello)?;
    }
    if args.wants("reuse") {
        eprintln!("bench: HTTP instance reuse ({}) against a fresh instance per request, hello and CPython", reuse::REUSE);
        results["http_reuse"] = reuse::run(&cd, (args.rounds / 2).max(1))?;
    }
    if args.wants("real") {
        eprintln!("bench: third-party components (CPython, JavaScript): first starts, and served against wasmtime serve");
        results["real"] = real::run(&cd, (args.rounds / 4).max(2), (args.rounds / 5).max(1))?;
    }
    results["duration_s"] = json!(started.elapsed().as_secs());

    print_table(&results, &runtimes);
    if let Some(dir) = args.out.parent() {
        fs::create_dir_all(dir)?;
    }
    fs::write(&args.out, serde_json::to_vec_pretty(&results)?)?;
    eprintln!("bench: raw results in {} ({} s)", args.out.display(), started.elapsed().as_secs());
    drop(cd_opt);
    drop(cd);
    Ok(())
}

fn big_image(big: &[u8]) -> ImageSpec {
    let mut spec = ImageSpec::new(BIG_IMAGE);
    spec.files = vec![ImageFile::new("/big.wasm", big, 0o755)];
    spec.entrypoint = vec!["/big.wasm".into()];
    spec.style = Style::Classic;
    spec
}

/// `containerd-shim-<name>-v<N>` binaries on PATH other than this shim and runc's, with the
/// runtime type containerd maps to them.
fn other_shims() -> Vec<(String, String)> {
    let mut found = BTreeMap::new();
    let path = std::env::var("PATH").unwrap_or_default();
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let Ok(rd) = fs::read_dir(dir) else { continue };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix("containerd-shim-") else { continue };
            let Some((kind, version)) = rest.rsplit_once('-') else { continue };
            let versioned = version.len() >= 2 && version.starts_with('v') && version[1..].bytes().all(|b| b.is_ascii_digit());
            if !versioned || name == SHIM_NAME || kind.starts_with("runc") {
                continue;
            }
            found.entry(name.clone()).or_insert(format!("io.containerd.{kind}.{version}"));
        }
    }
    found.into_iter().collect()
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

fn next_id(prefix: &str) -> String {
    format!("{prefix}-{}", SEQ.fetch_add(1, Ordering::Relaxed))
}

/// One `ctr run --rm`; its wall time.
fn sample(cd: &Containerd, rt: &Runtime, prefix: &str) -> Result<Duration> {
    let id = next_id(prefix);
    let out = cd.run(&rt.opts(&id))?;
    ensure!(out.success() && out.stdout.contains(&rt.expect), "{}: {out}", rt.label);
    Ok(out.duration)
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e5).round() / 1e2
}

fn latency(cd: &Containerd, runtimes: &[Runtime], rounds: usize) -> Result<Value> {
    let mut samples: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for _ in 0..rounds {
        for rt in runtimes {
            samples.entry(rt.label.clone()).or_default().push(ms(sample(cd, rt, "lat")?));
        }
    }
    Ok(json!(samples))
}

/// Tasks per second: `total` tasks by `concurrency` workers.
fn tasks_per_second(cd: &Containerd, rt: &Runtime, concurrency: usize) -> Result<f64> {
    let total = (concurrency * 4).max(10);
    let next = AtomicUsize::new(0);
    let started = Instant::now();
    let failures: Vec<String> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..concurrency)
            .map(|_| {
                s.spawn(|| {
                    let mut errs = Vec::new();
                    while next.fetch_add(1, Ordering::SeqCst) < total {
                        if let Err(e) = sample(cd, rt, "tp") {
                            errs.push(format!("{e:#}"));
                        }
                    }
                    errs
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().unwrap()).collect()
    });
    ensure!(failures.is_empty(), "{} tasks failed: {}", failures.len(), failures[0]);
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

fn throughput(cd: &Containerd, runtimes: &[Runtime], reps: usize) -> Result<Value> {
    let mut out: BTreeMap<String, BTreeMap<String, Vec<f64>>> = BTreeMap::new();
    for &c in CONCURRENCY {
        for _ in 0..reps {
            for rt in runtimes {
                let tps = tasks_per_second(cd, rt, c)?;
                out.entry(rt.label.clone()).or_default().entry(c.to_string()).or_default().push((tps * 100.0).round() / 100.0);
            }
        }
    }
    Ok(json!(out))
}

/// A process of this containerd's shims: pid, parent, whether it is the shim itself.
struct Proc {
    pid: u32,
    ppid: u32,
    args: Vec<String>,
}

fn all_processes() -> Vec<Proc> {
    let mut procs = Vec::new();
    let Ok(rd) = fs::read_dir("/proc") else { return procs };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let cmdline = fs::read(e.path().join("cmdline")).unwrap_or_default();
        if cmdline.is_empty() {
            continue;
        }
        let args = cmdline.split(|&b| b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        let stat = fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let ppid = stat.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().nth(1)).and_then(|p| p.parse().ok()).unwrap_or(0);
        procs.push(Proc { pid, ppid, args });
    }
    procs
}

/// Shims of this containerd (any runtime: started with `-address <socket>`) and their
/// descendants; `(shims, others)`.
fn shim_tree(socket: &Path) -> (Vec<u32>, Vec<u32>) {
    let procs = all_processes();
    let address = socket.to_string_lossy();
    let shims: Vec<u32> = procs
        .iter()
        .filter(|p| p.args.first().is_some_and(|a| a.contains("containerd-shim")) && p.args.windows(2).any(|w| w[0].trim_start_matches('-') == "address" && w[1] == address))
        .map(|p| p.pid)
        .collect();
    let mut tree = shims.clone();
    loop {
        let more: Vec<u32> = procs.iter().filter(|p| tree.contains(&p.ppid) && !tree.contains(&p.pid)).map(|p| p.pid).collect();
        if more.is_empty() {
            break;
        }
        tree.extend(more);
    }
    let others = tree.into_iter().filter(|p| !shims.contains(p)).collect();
    (shims, others)
}

/// (Pss, Rss) in KiB from smaps_rollup.
fn pss_rss(pid: u32) -> (u64, u64) {
    let text = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (field("Pss:"), field("Rss:"))
}

fn measure_memory(cd: &Containerd, rt: &Runtime) -> Result<Value> {
    let ids: Vec<String> = (0..MEMORY_TASKS).map(|_| next_id("mem")).collect();
    let result = (|| -> Result<Value> {
        for id in &ids {
            let mut o = rt.opts(id).detach();
            o.args = rt.sleep.clone();
            cd.run(&o)?.ok()?;
        }
        for id in &ids {
            cd.wait_status(id, "RUNNING", Duration::from_secs(30))?;
        }
        // Let start-up allocations settle (and any helper finish).
        std::thread::sleep(Duration::from_secs(2));
        let (shims, others) = shim_tree(&cd.socket);
        let sum = |pids: &[u32]| pids.iter().map(|&p| pss_rss(p)).fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
        let (shim_pss, shim_rss) = sum(&shims);
        let (task_pss, task_rss) = sum(&others);
        let n = MEMORY_TASKS as f64;
        let kib = |v: u64| (v as f64 / n * 10.0).round() / 10.0;
        Ok(json!({
            "tasks": MEMORY_TASKS,
            "shim_processes": shims.len(),
            "container_processes": others.len(),
            "pss_kib": kib(shim_pss + task_pss),
            "rss_kib": kib(shim_rss + task_rss),
            "shim_pss_kib": kib(shim_pss),
            "shim_rss_kib": kib(shim_rss),
            "container_pss_kib": kib(task_pss),
            "container_rss_kib": kib(task_rss),
        }))
    })();
    for id in &ids {
        force_remove(cd, id);
    }
    result
}

/// Removes the entries of a cache directory (the directory stays).
fn clear_cache(dir: &Path) -> Result<()> {
    wait_for_helpers(Duration::from_secs(600));
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            // `.slots` holds the node's compile slots (lock files), not code: kept.
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            fs::remove_file(e.path()).with_context(|| e.path().display().to_string())?;
        }
    }
    Ok(())
}

/// Compile helpers still running (background optimized compiles).
fn helpers() -> Vec<u32> {
    all_processes()
        .into_iter()
        .filter(|p| p.args.first().is_some_and(|a| a.ends_with(SHIM_NAME) || a == "/proc/self/exe") && p.args.get(1).is_some_and(|a| a == "compile-cache"))
        .map(|p| p.pid)
        .collect()
}

fn wait_for_helpers(limit: Duration) {
    let deadline = Instant::now() + limit;
    while !helpers().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// compile.log lines: (tier, milliseconds).
fn compiles(cache: &Path) -> Vec<(String, u64)> {
    fs::read_to_string(cache.join("compile.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((f.get(1)?.to_string(), f.get(2)?.parse().ok()?))
        })
        .collect()
}

fn big_runtime(base: &Runtime) -> Runtime {
    Runtime { label: "big".into(), image: BIG_IMAGE.into(), args: vec![], expect: BIG_OUT.into(), ..base.clone() }
}

fn big_module(cd: &Containerd, cd_opt: &Containerd, wasm: &Runtime, rounds: usize) -> Result<Value> {
    let big = big_runtime(wasm);
    let run = |c: &Containerd, prefix: &str| -> Result<f64> {
        let id = next_id(prefix);
        let out = c.run(&big.opts(&id).timeout(Duration::from_secs(600)))?;
        ensure!(out.success() && out.stdout.contains(BIG_OUT), "big: {out}");
        Ok(ms(out.duration))
    };
    let mut first_baseline = Vec::new();
    let mut first_optimized = Vec::new();
    let mut cached = Vec::new();
    let mut hello = Vec::new();
    let mut winch_ms = Vec::new();
    let mut cranelift_ms = Vec::new();
    for _ in 0..rounds {
        hello.push(ms(sample(cd, wasm, "hello")?));
        clear_cache(&cd.cache)?;
        first_baseline.push(run(cd, "big-first")?);
        // The optimized code is built in the background; the second start maps it.
        wait_for_helpers(Duration::from_secs(600));
        for (tier, t) in compiles(&cd.cache) {
            match tier.as_str() {
                "baseline" => winch_ms.push(t as f64),
                _ => cranelift_ms.push(t as f64),
            }
        }
        cached.push(run(cd, "big-cached")?);
        hello.push(ms(sample(cd, wasm, "hello")?));
        clear_cache(&cd_opt.cache)?;
        first_optimized.push(run(cd_opt, "big-first-opt")?);
        cached.push(run(cd, "big-cached")?);
    }
    Ok(json!({
        "wasm_bytes": fs::metadata(guests::guests_dir().join("big/target/wasm32-wasip1/release/big.wasm"))?.len(),
        "first_start_baseline_ms": first_baseline,
        "first_start_optimizing_compile_ms": first_optimized,
        "cached_start_ms": cached,
        "hello_ms": hello,
        "winch_compile_ms": winch_ms,
        "cranelift_compile_ms": cranelift_ms,
    }))
}

/// A scale-up burst: the big image's first start (empty cache: baseline code, then the optimizing
/// compile in the background), then at once a second replica while that compile runs, against
/// the same module's cached start and hello with nothing compiling. The ratio that matters is the
/// second replica's start against the quiet cached start: what a background compile costs the
/// starts next to it.
fn burst(cd: &Containerd, wasm: &Runtime, rounds: usize) -> Result<Value> {
    let big = big_runtime(wasm);
    let run = |prefix: &str| -> Result<f64> {
        let id = next_id(prefix);
        let out = cd.run(&big.opts(&id).timeout(Duration::from_secs(600)))?;
        ensure!(out.success() && out.stdout.contains(BIG_OUT), "burst: {out}");
        Ok(ms(out.duration))
    };
    let (mut during, mut quiet, mut hello, mut overlapped) = (Vec::new(), Vec::new(), Vec::new(), 0);
    for _ in 0..rounds {
        clear_cache(&cd.cache)?;
        run("burst-first")?;
        // The optimizing compile must still be running for the sample to mean anything.
        let busy = !helpers().is_empty();
        let t = run("burst-second")?;
        if busy {
            overlapped += 1;
            during.push(t);
        }
        wait_for_helpers(Duration::from_secs(600));
        quiet.push(run("burst-quiet")?);
        hello.push(ms(sample(cd, wasm, "burst-hello")?));
    }
    ensure!(overlapped > 0, "burst: the optimizing compile was never running when the second replica started");
    Ok(json!({
        "rounds": rounds,
        "overlapped": overlapped,
        "second_replica_during_compile_ms": during,
        "cached_start_quiet_ms": quiet,
        "hello_ms": hello,
    }))
}

/// Ten `ctr run --rm` of the big image at once from an empty cache.
fn replicas(cd: &Containerd) -> Result<Value> {
    clear_cache(&cd.cache)?;
    let big = big_runtime(&Runtime {
        label: String::new(),
        runtime: WASM_RUNTIME.into(),
        image: String::new(),
        args: vec![],
        expect: String::new(),
        sleep: vec![],
    });
    let started = Instant::now();
    let results: Vec<Result<f64>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..REPLICAS)
            .map(|_| {
                s.spawn(|| -> Result<f64> {
                    let id = next_id("replica");
                    let out = cd.run(&big.opts(&id).timeout(Duration::from_secs(900)))?;
                    ensure!(out.success() && out.stdout.contains(BIG_OUT), "replica: {out}");
                    Ok(ms(out.duration))
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let all_done = ms(started.elapsed());
    let latencies: Vec<f64> = results.into_iter().collect::<Result<_>>()?;
    wait_for_helpers(Duration::from_secs(900));
    let log = compiles(&cd.cache);
    Ok(json!({
        "replicas": REPLICAS,
        "latency_ms": latencies,
        "all_done_ms": all_done,
        "baseline_compiles": log.iter().filter(|(t, _)| t == "baseline").count(),
        "optimized_compiles": log.iter().filter(|(t, _)| t == "optimized").count(),
    }))
}

fn machine() -> Value {
    let read = |p: &str| fs::read_to_string(p).unwrap_or_default().trim().to_string();
    let cpu = read("/proc/cpuinfo").lines().find(|l| l.starts_with("model name")).and_then(|l| l.split(':').nth(1)).unwrap_or("").trim().to_string();
    json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu": cpu,
        "kernel": read("/proc/sys/kernel/osrelease"),
        "loadavg_at_start": read("/proc/loadavg"),
        "containerd": std::process::Command::new("containerd").arg("--version").output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default(),
    })
}

// ---------------------------------------------------------------------------------------------
// the table

fn nums(v: &Value) -> Vec<f64> {
    v.as_array().map(|a| a.iter().filter_map(Value::as_f64).collect()).unwrap_or_default()
}

fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn range(v: &[f64]) -> String {
    let min = v.iter().cloned().fold(f64::INFINITY, f64::min);
    let max = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    format!("{}–{}", short(min), short(max))
}

fn short(x: f64) -> String {
    if x.is_nan() || x.is_infinite() {
        "-".into()
    } else if x >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

fn row(what: &str, v: &[f64], unit: &str, ratio: Option<(f64, &str)>) {
    let r = ratio.map(|(r, of)| format!("{r:.2}× {of}")).unwrap_or_default();
    println!("| {what:<52} | {:>9} | {:>15} | {r}", format!("{} {unit}", short(median(v))), range(v));
}

fn print_table(r: &Value, runtimes: &[Runtime]) {
    let ours = &runtimes[0].label;
    println!();
    println!("| {:<52} | {:>9} | {:>15} | ratio", "measure (median of samples)", "median", "min–max");
    println!("|{}|{}|{}|------", "-".repeat(54), "-".repeat(11), "-".repeat(17));
    let has = |k: &str| !r[k].is_null();
    let lat = |label: &str| nums(&r["latency_ms"][label]);
    let ours_lat = median(&lat(ours));
    for rt in runtimes.iter().filter(|_| has("latency_ms")) {
        let v = lat(&rt.label);
        let ratio = (rt.label != *ours).then(|| (ours_lat / median(&v), "(ours / this)"));
        row(&format!("ctr run --rm latency: {}", rt.label), &v, "ms", ratio);
    }
    for c in CONCURRENCY.iter().filter(|_| has("tasks_per_second")) {
        let key = c.to_string();
        let ours_tp = median(&nums(&r["tasks_per_second"][ours][&key]));
        for rt in runtimes {
            let v = nums(&r["tasks_per_second"][&rt.label][&key]);
            let ratio = (rt.label != *ours).then(|| (ours_tp / median(&v), "(ours / this)"));
            row(&format!("tasks/s at concurrency {c}: {}", rt.label), &v, "/s", ratio);
        }
    }
    for rt in runtimes.iter().filter(|_| has("memory_per_task")) {
        let m = &r["memory_per_task"][&rt.label];
        let pss = m["pss_kib"].as_f64().unwrap_or(f64::NAN) / 1024.0;
        let rss = m["rss_kib"].as_f64().unwrap_or(f64::NAN) / 1024.0;
        row(&format!("PSS per running task ({MEMORY_TASKS} tasks): {}", rt.label), &[pss], "MiB", None);
        row(&format!("RSS per running task ({MEMORY_TASKS} tasks): {}", rt.label), &[rss], "MiB", None);
    }
    if has("big") {
        print_big(&r["big"]);
    }
    if has("burst") {
        let b = &r["burst"];
        let (during, quiet, hello) = (nums(&b["second_replica_during_compile_ms"]), nums(&b["cached_start_quiet_ms"]), nums(&b["hello_ms"]));
        row("burst: big, 2nd replica during the optimizing compile", &during, "ms", Some((median(&during) / median(&quiet), "of quiet cached start")));
        row("burst: big, cached start, nothing compiling", &quiet, "ms", Some((median(&quiet) / median(&hello), "of hello")));
        row("burst: hello, same rounds", &hello, "ms", None);
        println!("|   the compile was running for {} of {} second replicas", b["overlapped"], b["rounds"]);
    }
    if has("replicas") {
        print_replicas(&r["replicas"]);
    }
    if has("http") {
        http::print(&r["http"]);
    }
    if has("http_reuse") {
        reuse::print(&r["http_reuse"]);
    }
    if has("real") {
        real::print(&r["real"]);
    }
    println!();
}

fn print_big(b: &Value) {
    let hello = nums(&b["hello_ms"]);
    let first = nums(&b["first_start_baseline_ms"]);
    let first_opt = nums(&b["first_start_optimizing_compile_ms"]);
    let cached = nums(&b["cached_start_ms"]);
    row("big module: first start, baseline code (default)", &first, "ms", Some((median(&first) / median(&first_opt), "of optimizing-compile start")));
    row("big module: first start, waits for optimizing compile", &first_opt, "ms", None);
    row("big module: second start (cached, mmap)", &cached, "ms", Some((median(&cached) / median(&hello), "of hello")));
    row("hello, same rounds", &hello, "ms", None);
    row("big module: Winch compile (helper, compile.log)", &nums(&b["winch_compile_ms"]), "ms", None);
    row("big module: Cranelift compile (helper, compile.log)", &nums(&b["cranelift_compile_ms"]), "ms", None);
}

fn print_replicas(r: &Value) {
    for (mode, what) in [("baseline_first", "baseline first"), ("optimized_first", "optimizing first")] {
        let x = &r[mode];
        let lat = nums(&x["latency_ms"]);
        row(
            &format!("{REPLICAS} replicas at once, empty cache, {what}"),
            &lat,
            "ms",
            None,
        );
        println!(
            "|   compiles: {} baseline, {} optimized; all done in {} ms",
            x["baseline_compiles"], x["optimized_compiles"], short(x["all_done_ms"].as_f64().unwrap_or(f64::NAN))
        );
    }
}
