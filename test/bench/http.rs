//! The `http` part of `make bench`: the `wasi:http` test component served by this shim (under
//! containerd, `ctr run --net-host`) against `wasmtime serve` (wasmtime-cli from crates.io, the
//! same wasmtime version) serving the same component file on the same machine, with wrk
//! (Debian's package) at concurrency 1, 10 and 100, keep-alive, alternating servers round by
//! round; the same component with its metrics endpoint on (`metrics-port`, scraped between
//! runs) against metrics off; the same component with its access log on
//! (`http-access-log=true`: a line per request on the container's stderr) against it off; the
//! same component with request spans on (`OTEL_EXPORTER_OTLP_ENDPOINT` in its environment, a
//! local OTLP receiver that decodes and counts the spans) against traces off; the same
//! component served by one process (`http-processes=1`, a worker thread per CPU) against the
//! default, a process per CPU; the WAGI module the same way (this shim only: `wasmtime serve`
//! has no WAGI); and the time from `ctr run` to the first 200 against a hello `ctr run --rm`.
//! Instance reuse against fresh instances, hello and CPython: `reuse.rs`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use wasm_shim_e2e::guests::Guests;
use wasm_shim_e2e::images::GUESTS_IMAGE;
use wasm_shim_e2e::{http, Containerd, RunOpts};

pub const CONNECTIONS: &[usize] = &[1, 10, 100];
const WRK_SECONDS: u64 = 5;

/// `wasmtime` with `serve`: `WASMTIME=...`, else `target/bench/wasmtime-cli/bin/wasmtime`
/// (`make bench` installs it there with `cargo install`), else PATH.
pub(super) fn wasmtime_cli() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("WASMTIME") {
        return Some(PathBuf::from(p));
    }
    let local = wasm_shim_e2e::workspace_root().join("target/bench/wasmtime-cli/bin/wasmtime");
    if local.exists() {
        return Some(local);
    }
    let ok = Command::new("wasmtime").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status();
    ok.is_ok_and(|s| s.success()).then(|| PathBuf::from("wasmtime"))
}

pub(super) fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// One wrk run: requests per second and the latency percentiles in ms.
pub(super) fn wrk(url: &str, connections: usize) -> Result<Value> {
    let threads = connections.min(2).to_string();
    let out = Command::new("wrk")
        .args(["-t", &threads, "-c", &connections.to_string(), "-d", &format!("{WRK_SECONDS}s"), "--latency", url])
        .output()
        .context("wrk (apt-get install wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        bail!("wrk failed: {text} {}", String::from_utf8_lossy(&out.stderr));
    }
    let mut v = json!({});
    for line in text.lines().map(str::trim) {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            ["Requests/sec:", n] => v["rps"] = json!(n.parse::<f64>().unwrap_or(f64::NAN)),
            [p @ ("50%" | "90%" | "99%"), t] => v[format!("p{}", p.trim_end_matches('%'))] = json!(to_ms(t)),
            ["Non-2xx", "or", "3xx", "responses:", n] => v["non_2xx"] = json!(n.parse::<u64>().unwrap_or(0)),
            [_, "requests", "in", ..] => v["requests"] = json!(f[0].parse::<u64>().unwrap_or(0)),
            _ => {}
        }
    }
    if v["rps"].is_null() {
        bail!("no Requests/sec in wrk's output: {text}");
    }
    Ok(v)
}

fn to_ms(t: &str) -> f64 {
    let split = t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: f64 = n.parse().unwrap_or(f64::NAN);
    match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        _ => f64::NAN,
    }
}

/// A server being measured; stopped on drop.
pub(super) enum Server<'a> {
    Shim { cd: &'a Containerd, id: String },
    Wasmtime(Child),
}

impl Drop for Server<'_> {
    fn drop(&mut self) {
        match self {
            Server::Shim { cd, id } => {
                let _ = cd.kill(id, "SIGKILL");
                wasm_shim_e2e::ctr::force_remove(cd, id);
            }
            Server::Wasmtime(child) => {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// `annotations`: more of them, such as `metrics-port` or `http-access-log`.
fn shim_server<'a>(cd: &'a Containerd, id: &str, entry: &str, port: u16, wagi: bool, annotations: &[(&str, String)]) -> Result<Server<'a>> {
    shim_server_with_env(cd, id, entry, port, wagi, annotations, &[])
}

/// The same with environment variables (`NAME=value`) for the container.
fn shim_server_with_env<'a>(cd: &'a Containerd, id: &str, entry: &str, port: u16, wagi: bool, annotations: &[(&str, String)], env: &[String]) -> Result<Server<'a>> {
    let mut opts = RunOpts::wasm(GUESTS_IMAGE, id).args([entry]).detach();
    for e in env {
        opts = opts.env(e);
    }
    opts.extra.extend(["--net-host".into(), "--annotation".into(), format!("{}={port}", wasm_shim_oci::http::PORT)]);
    if wagi {
        opts.extra.extend(["--annotation".into(), format!("{}=wagi", wasm_shim_oci::http::SERVE)]);
    }
    for (k, v) in annotations {
        opts.extra.extend(["--annotation".into(), format!("{k}={v}")]);
    }
    let out = cd.run(&opts)?;
    if !out.success() {
        bail!("ctr run {entry}: {out}");
    }
    let server = Server::Shim { cd, id: id.to_string() };
    http::wait_until_serving(&format!("http://127.0.0.1:{port}/"), Duration::from_secs(30))?;
    Ok(server)
}

pub(super) fn wasmtime_server<'a>(wasmtime: &Path, component: &Path, port: u16) -> Result<Server<'a>> {
    // The test component imports wasi:cli and wasi:sockets (the shim links them for every
    // component); `wasmtime serve` links them only with `-S cli`.
    wasmtime_server_with(wasmtime, component, port, &["-S", "cli"])
}

/// The same with more `wasmtime serve` flags (`-S cli`: the wasi:cli interfaces, which the shim
/// gives every component and toolchains such as componentize-py import).
pub(super) fn wasmtime_server_with<'a>(wasmtime: &Path, component: &Path, port: u16, flags: &[&str]) -> Result<Server<'a>> {
    let child = Command::new(wasmtime)
        .arg("serve")
        .args(flags)
        .arg("--addr")
        .arg(format!("127.0.0.1:{port}"))
        .arg(component)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("{} serve", wasmtime.display()))?;
    let server = Server::Wasmtime(child);
    http::wait_until_serving(&format!("http://127.0.0.1:{port}/"), Duration::from_secs(60))?;
    Ok(server)
}

/// Another shim (`runtime`) serving the component on `port`, under the same containerd.
fn peer_server<'a>(cd: &'a Containerd, name: &str, runtime: &str, port: u16) -> Result<Server<'a>> {
    let id = format!("bench-peer-{name}");
    let mut opts = RunOpts::wasm(GUESTS_IMAGE, &id).args(["/http.wasm"]).detach();
    opts.runtime = runtime.to_string();
    opts.extra.extend(["--net-host".into(), "--env".into(), format!("WASMTIME_HTTP_PROXY_SOCKET_ADDR=127.0.0.1:{port}")]);
    let out = cd.run(&opts)?;
    if !out.success() {
        bail!("ctr run: {out}");
    }
    let server = Server::Shim { cd, id };
    http::wait_until_serving(&format!("http://127.0.0.1:{port}/"), Duration::from_secs(30))?;
    Ok(server)
}

pub fn run(cd: &Containerd, g: &Guests, rounds: usize, hello: &dyn Fn() -> Result<Duration>) -> Result<Value> {
    let dir = wasm_shim_e2e::workspace_root().join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let component = dir.join("http.wasm");
    std::fs::write(&component, g.get("http"))?;
    let wasmtime = wasmtime_cli();
    if wasmtime.is_none() {
        eprintln!("bench: no `wasmtime` (cargo install wasmtime-cli --version 48.0.8): this shim only");
    }
    let mut result = json!({ "wrk_seconds": WRK_SECONDS, "rounds": rounds });
    if let Some(w) = &wasmtime {
        let v = Command::new(w).arg("--version").output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default();
        result["wasmtime_version"] = json!(v);
    }

    // Throughput and latency: every server up, alternating wrk runs; the component also with
    // its metrics endpoint on, scraped between runs as Prometheus would.
    let (p_shim, p_wt, p_wagi) = (free_port()?, free_port()?, free_port()?);
    let (p_metrics, p_metrics_ep, p_access) = (free_port()?, free_port()?, free_port()?);
    let _shim = shim_server(cd, "bench-http", "/http.wasm", p_shim, false, &[])?;
    let _metrics = shim_server(cd, "bench-http-metrics", "/http.wasm", p_metrics, false, &[(wasm_shim_oci::http::METRICS_PORT, p_metrics_ep.to_string())])?;
    let _access = shim_server(cd, "bench-http-access", "/http.wasm", p_access, false, &[(wasm_shim_oci::http::ACCESS_LOG, "true".into())])?;
    let _wagi = shim_server(cd, "bench-wagi", "/wagi.wasm", p_wagi, true, &[])?;
    // The default server (a process per CPU) against one process with a worker thread per CPU.
    let p_one = free_port()?;
    let _one = shim_server(cd, "bench-http-one-process", "/http.wasm", p_one, false, &[(wasm_shim_oci::http::PROCESSES, "1".into())])?;
    // Request spans on: the container's own endpoint, a local OTLP receiver that decodes and
    // counts what arrives (the exporter's full work: a span per request, batched, protobuf,
    // posted).
    let sink = wasm_shim_e2e::otlp::Receiver::sink()?;
    let p_traces = free_port()?;
    // A container's own endpoint is used only when its pod allows the address (see the README's
    // "Traces"); the guest itself never calls it.
    let _traces = shim_server_with_env(
        cd,
        "bench-http-traces",
        "/http.wasm",
        p_traces,
        false,
        &[(wasm_shim_oci::http::ALLOWED_OUTBOUND, sink.endpoint())],
        &[format!("OTEL_EXPORTER_OTLP_ENDPOINT={}", sink.endpoint())],
    )?;
    let _wt = match &wasmtime {
        Some(w) => Some(wasmtime_server(w, &component, p_wt)?),
        None => None,
    };
    // Other wasm shims found on PATH serving the same component, where they can: runwasi's
    // wasmtime shim serves a wasi:http component on the address in its container's
    // WASMTIME_HTTP_PROXY_SOCKET_ADDR.
    let mut peers = Vec::new();
    for (name, runtime) in super::other_shims() {
        let port = free_port()?;
        match peer_server(cd, &name, &runtime, port) {
            Ok(server) => peers.push((name, port, server)),
            Err(e) => eprintln!("bench: {name} does not serve the wasi:http component here: {e:#}"),
        }
    }
    if !peers.is_empty() {
        result["peers"] = json!(peers.iter().map(|(n, _, _)| n.clone()).collect::<Vec<_>>());
    }
    for &c in CONNECTIONS {
        let key = c.to_string();
        for _ in 0..rounds {
            push(&mut result, &["shim", &key], wrk(&format!("http://127.0.0.1:{p_shim}/"), c)?);
            push(&mut result, &["shim_metrics", &key], wrk(&format!("http://127.0.0.1:{p_metrics}/"), c)?);
            let scrape = http::get(&format!("http://127.0.0.1:{p_metrics_ep}/metrics"))?;
            if scrape.status != 200 || !scrape.body.contains("wasm_shim_http_requests_total{class=\"2xx\"}") {
                bail!("metrics endpoint: {scrape}");
            }
            push(&mut result, &["shim_access_log", &key], wrk(&format!("http://127.0.0.1:{p_access}/"), c)?);
            push(&mut result, &["shim_traces", &key], wrk(&format!("http://127.0.0.1:{p_traces}/"), c)?);
            push(&mut result, &["shim_one_process", &key], wrk(&format!("http://127.0.0.1:{p_one}/"), c)?);
            if wasmtime.is_some() {
                push(&mut result, &["wasmtime_serve", &key], wrk(&format!("http://127.0.0.1:{p_wt}/"), c)?);
            }
            for (name, port, _) in &peers {
                push(&mut result, &["peer", name, &key], wrk(&format!("http://127.0.0.1:{port}/"), c)?);
            }
            push(&mut result, &["wagi", &key], wrk(&format!("http://127.0.0.1:{p_wagi}/hello?x=1"), c)?);
        }
    }
    drop((_shim, _metrics, _access, _wagi, _one, _wt, _traces, peers));
    // What the sink got (the spans of the drain's flush included, given a moment).
    std::thread::sleep(Duration::from_secs(1));
    result["traces_spans_received"] = json!(sink.counted());

    // Time to the first 200 against a hello `ctr run --rm`, interleaved.
    let mut first = Vec::new();
    let mut hellos = Vec::new();
    for i in 0..rounds.max(3) {
        hellos.push(super::ms(hello()?));
        let port = free_port()?;
        let id = format!("bench-first-{i}");
        let mut opts = RunOpts::wasm(GUESTS_IMAGE, &id).args(["/http.wasm"]).timeout(Duration::from_secs(60));
        opts.extra.extend(["--net-host".into(), "--env".into(), format!("PORT={port}")]);
        let t = Instant::now();
        let mut run = cd.spawn(&opts)?;
        let (r, at) = http::wait_until_serving(&format!("http://127.0.0.1:{port}/"), Duration::from_secs(30))?;
        if r.status != 200 {
            bail!("first reply {r}");
        }
        first.push(super::ms(at - t));
        cd.kill(&id, "SIGTERM")?;
        let out = run.wait(Duration::from_secs(10));
        if !out.success() {
            bail!("the server did not exit 0 after SIGTERM: {out}");
        }
    }
    result["first_200_ms"] = json!(first);
    result["hello_ms"] = json!(hellos);
    Ok(result)
}

pub(super) fn push(v: &mut Value, path: &[&str], item: Value) {
    let mut at = v;
    for k in path {
        if at[*k].is_null() {
            at[*k] = json!({});
        }
        at = &mut at[*k];
    }
    if !at.is_array() {
        *at = json!([]);
    }
    at.as_array_mut().unwrap().push(item);
}

pub(super) fn field(runs: &Value, name: &str) -> Vec<f64> {
    runs.as_array().map(|a| a.iter().filter_map(|r| r[name].as_f64()).collect()).unwrap_or_default()
}

pub fn print(r: &Value) {
    use super::{median, row};
    for &c in CONNECTIONS {
        let key = c.to_string();
        let ours = &r["shim"][&key];
        let theirs = &r["wasmtime_serve"][&key];
        let rps = field(ours, "rps");
        let ratio = (!theirs.is_null()).then(|| (median(&rps) / median(&field(theirs, "rps")), "of wasmtime serve"));
        row(&format!("HTTP req/s, {c} connections: this shim"), &rps, "/s", ratio);
        if !theirs.is_null() {
            row(&format!("HTTP req/s, {c} connections: wasmtime serve"), &field(theirs, "rps"), "/s", None);
        }
        for (name, runs) in r["peer"].as_object().into_iter().flatten() {
            let peer = &runs[&key];
            let theirs = field(peer, "rps");
            row(&format!("HTTP req/s, {c} connections: {name}"), &theirs, "/s", None);
            let of = format!("of {name}");
            row(&format!("HTTP req/s, {c} connections: this shim"), &rps, "/s", Some((median(&rps) / median(&theirs), of.as_str())));
            let (p99, their_p99) = (field(ours, "p99"), field(peer, "p99"));
            row(&format!("HTTP p99 latency, {c} connections: {name}"), &their_p99, "ms", None);
            row(&format!("HTTP p99 latency, {c} connections: this shim"), &p99, "ms", Some((median(&p99) / median(&their_p99), of.as_str())));
        }
        for p in ["p50", "p90", "p99"] {
            let v = field(ours, p);
            let ratio = (!theirs.is_null()).then(|| (median(&v) / median(&field(theirs, p)), "of wasmtime serve"));
            row(&format!("HTTP {p} latency, {c} connections: this shim"), &v, "ms", ratio);
            if !theirs.is_null() {
                row(&format!("HTTP {p} latency, {c} connections: wasmtime serve"), &field(theirs, p), "ms", None);
            }
        }
        // The same component with one feature on (or one process), against the default server.
        for (variant, what, of) in [
            ("shim_metrics", "metrics on", "of metrics off"),
            ("shim_access_log", "access log on", "of access log off"),
            ("shim_traces", "traces on", "of traces off"),
            ("shim_one_process", "one process", "of a process per CPU"),
        ] {
            let on = &r[variant][&key];
            if on.is_null() {
                continue;
            }
            let v = field(on, "rps");
            row(&format!("HTTP req/s, {c} connections: {what}"), &v, "/s", Some((median(&v) / median(&rps), of)));
            let p99 = field(on, "p99");
            row(&format!("HTTP p99 latency, {c} connections: {what}"), &p99, "ms", Some((median(&p99) / median(&field(ours, "p99")), of)));
        }
        let wagi = &r["wagi"][&key];
        row(&format!("WAGI req/s, {c} connections: this shim"), &field(wagi, "rps"), "/s", None);
        row(&format!("WAGI p99 latency, {c} connections: this shim"), &field(wagi, "p99"), "ms", None);
    }
    if let Some(n) = r["traces_spans_received"].as_u64() {
        println!("| request spans received by the OTLP sink (traces on)          | {n}");
        if n == 0 {
            println!("bench: WARNING: no request span reached the sink: the traces-on rows measured a server that exported nothing");
        }
    }
    let first = super::nums(&r["first_200_ms"]);
    let hello = super::nums(&r["hello_ms"]);
    row("ctr run -> first HTTP 200", &first, "ms", Some((median(&first) / median(&hello), "of hello ctr run")));
    row("hello ctr run --rm, same rounds", &hello, "ms", None);
}
