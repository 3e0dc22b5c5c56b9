//! `http::*`: serving HTTP through the real shim under containerd. `ctr run --net-host` so the
//! test reaches the port from the host: a `wasi:http` component (port from Knative's `PORT`,
//! or the annotation), a WAGI module, SIGTERM while requests are in flight, outbound calls
//! allowed and denied, a port already taken, a bad annotation. The pod path (CRI, a sidecar
//! calling the function over the pod's localhost) is `cri::wasm::http_function_and_sidecar`.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use sha2::Digest;
use wasm_shim_e2e::ctr::{ensure, line_with};
use wasm_shim_e2e::http;
use wasm_shim_e2e::images::GUESTS_IMAGE;
use wasm_shim_e2e::{Leaks, RunOpts};

use super::{expect_code, free_port, Ctx};

/// `ctr run --net-host [--annotation k=v ...] guests <id> <entry>`, in the foreground.
pub(crate) fn served(id: &str, entry: &str, annotations: &[(&str, String)]) -> RunOpts {
    let mut opts = RunOpts::wasm(GUESTS_IMAGE, id).args([entry]).timeout(Duration::from_secs(60));
    opts.extra.push("--net-host".into());
    for (k, v) in annotations {
        opts.extra.push("--annotation".into());
        opts.extra.push(format!("{k}={v}"));
    }
    opts
}

fn port_annotation(port: u16) -> (&'static str, String) {
    (wasm_shim_oci::http::PORT, port.to_string())
}

/// The component serves on `PORT` (as Knative sets it); hello, echo, headers; the first 200
/// comes within a few hundred ms of `ctr run`; SIGTERM ends it with 0; what requests print is
/// in the container's output.
pub fn component(cx: &Ctx) -> Result<()> {
    let port = free_port()?;
    let id = "w-http";
    let started = Instant::now();
    let mut run = cx.cd.spawn(&served(id, "/http.wasm", &[]).env(&format!("PORT={port}")))?;
    let base = format!("http://127.0.0.1:{port}");
    let (first, at) = http::wait_until_serving(&format!("{base}/"), Duration::from_secs(30))
        .with_context(|| format!("output so far: {}", run.stdout_now()))?;
    println!("  ctr run -> first 200: {:?}", at - started);
    ensure(first.status == 200 && first.body == "hello from wasi:http\n", || format!("first reply {first}"))?;
    let r = http::post(&format!("{base}/echo"), "text/plain", "a posted body")?;
    ensure(r.status == 200 && r.body == "a posted body", || format!("echo: {r}"))?;
    let r = http::get_with(&format!("{base}/headers"), &[("x-test", "e2e")], Duration::from_secs(10))?;
    ensure(r.status == 203 && r.body.contains("x-test: e2e"), || format!("headers: {r}"))?;
    ensure(http::get(&format!("{base}/stderr"))?.status == 200, || "stderr route".to_string())?;
    cx.cd.kill(id, "SIGTERM")?;
    let out = run.wait(Duration::from_secs(10));
    expect_code(&out, 0)?;
    line_with(&out.stdout, &["request GET /"]).with_context(|| format!("{out}"))?;
    line_with(&out.stderr, &["a line on stderr from a request"]).with_context(|| format!("{out}"))?;
    Ok(())
}

/// A component nobody compiled yet starts on baseline (Winch) code and, once the shim's helper
/// has built the optimized code, serves that from then on: the init says so in containerd's log,
/// and requests before, around and after the switch all succeed.
pub fn baseline_then_optimized(cx: &Ctx) -> Result<()> {
    // Start from nothing cached for these bytes, whatever cache the run uses.
    let bytes = wasm_shim_e2e::images::http_upgrade(&wasm_shim_e2e::guests::Guests::load()?);
    let digest: String = sha2::Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
    for entry in std::fs::read_dir(&cx.cd.cache).into_iter().flatten().flatten() {
        if entry.file_name().to_string_lossy().starts_with(&digest) {
            std::fs::remove_file(entry.path())?;
        }
    }
    let port = free_port()?;
    let id = "w-http-upgrade";
    let log_start = std::fs::metadata(&cx.cd.log)?.len();
    let mut run = cx.cd.spawn(&served(id, "/http-upgrade.wasm", &[port_annotation(port)]))?;
    let base = format!("http://127.0.0.1:{port}");
    http::wait_until_serving(&format!("{base}/"), Duration::from_secs(30))
        .with_context(|| format!("output so far: {}", run.stdout_now()))?;
    let t = Instant::now();
    let mut served = 0;
    let line = loop {
        let r = http::get(&format!("{base}/"))?;
        ensure(r.status == 200, || format!("request {served}: {r}"))?;
        served += 1;
        let log = std::fs::read(&cx.cd.log)?;
        let text = String::from_utf8_lossy(&log[log_start as usize..]);
        if let Some(l) = text.lines().find(|l| l.contains("/http-upgrade.wasm: serving optimized code from now on")) {
            break l.to_string();
        }
        ensure(t.elapsed() < Duration::from_secs(60), || format!("no switch to optimized code within 60 s; containerd log since the start:\n{text}"))?;
        std::thread::sleep(Duration::from_millis(50));
    };
    println!("  {served} requests before: {}", line.split("msg=").nth(1).unwrap_or(&line));
    for i in 0..20 {
        let r = http::get(&format!("{base}/"))?;
        ensure(r.status == 200 && r.body == "hello from wasi:http\n", || format!("request {i} after the switch: {r}"))?;
    }
    cx.cd.kill(id, "SIGTERM")?;
    expect_code(&run.wait(Duration::from_secs(10)), 0)
}

/// SIGTERM while three slow requests are in flight: all three complete with 200, then the task
/// exits 0 (what Kubernetes' grace period expects), and the port is closed.
pub fn sigterm_drains(cx: &Ctx) -> Result<()> {
    let port = free_port()?;
    let id = "w-http-drain";
    let mut run = cx.cd.spawn(&served(id, "/http.wasm", &[port_annotation(port)]))?;
    let base = format!("http://127.0.0.1:{port}");
    http::wait_until_serving(&format!("{base}/"), Duration::from_secs(30))
        .with_context(|| format!("output so far: {}", run.stdout_now()))?;
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
        ensure(r.status == 200 && r.body == "slept 1500\n", || format!("request {i}: {r}"))?;
    }
    expect_code(&out, 0)?;
    println!("  drained 3 requests in flight; exit 0 after {took:?}");
    ensure(took >= Duration::from_millis(700), || format!("exited after {took:?}: did not wait for the requests"))?;
    ensure(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), || "port still open".to_string())
}

/// The pids of a task's processes, the init's first (`ctr task ls`, `ctr task ps`).
fn task_pids(cx: &Ctx, id: &str) -> Result<(u32, Vec<u32>)> {
    let ls = cx.cd.ctr_ok(["task", "ls"])?;
    let init = ls
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.first() == Some(&id)).then(|| f.get(1)?.parse().ok()).flatten()
        })
        .with_context(|| format!("{id} not in ctr task ls:\n{ls}"))?;
    let ps = cx.cd.ctr_ok(["task", "ps", id])?;
    let pids = ps.lines().skip(1).filter_map(|l| l.split_whitespace().next()?.parse().ok()).collect();
    Ok((init, pids))
}

/// `clients` threads each GET `base/` `each` times, one connection per request: all 200.
fn all_answered(base: &str, clients: usize, each: usize) -> Result<()> {
    let clients: Vec<_> = (0..clients)
        .map(|_| {
            let url = format!("{base}/");
            std::thread::spawn(move || (0..each).map(|_| http::get(&url).map(|r| r.status)).collect::<Result<Vec<u16>>>())
        })
        .collect();
    for c in clients {
        let statuses = c.join().map_err(|_| anyhow::anyhow!("client thread panicked"))??;
        ensure(statuses.iter().all(|s| *s == 200), || format!("statuses {statuses:?}"))?;
    }
    Ok(())
}

/// A served workload runs in a process per CPU the container may use: on this node (two CPUs
/// or more) `ctr task ps` lists that many, every one of them in the container's cgroup, and
/// concurrent requests are all answered. A worker that dies (as the OOM killer would end it)
/// ends the container with its status, said in containerd's log. With metrics on, the init's
/// endpoint counts every process's requests. With a CPU quota of one CPU, one process serves.
pub fn processes(cx: &Ctx) -> Result<()> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let port = free_port()?;
    let id = "w-http-procs";
    let mut run = cx.cd.spawn(&served(id, "/http.wasm", &[port_annotation(port)]))?;
    let base = format!("http://127.0.0.1:{port}");
    http::wait_until_serving(&format!("{base}/"), Duration::from_secs(30)).with_context(|| format!("output so far: {}", run.stdout_now()))?;
    let (init, pids) = task_pids(cx, id)?;
    let expected = cpus.min(8);
    println!("  {cpus} CPUs: pids {pids:?} (init {init})");
    ensure(pids.len() == expected && pids.contains(&init), || format!("expected {expected} processes with the init {init}, ctr task ps: {pids:?}"))?;
    all_answered(&base, 16, 10)?;
    if let Some(worker) = pids.iter().find(|p| **p != init) {
        let log_start = std::fs::metadata(&cx.cd.log)?.len();
        // A request in flight on the init, so the drain the worker's end begins lasts;
        // containerd's SIGTERM during it is the first signal from outside, not a second one:
        // the container still ends with the worker's status. The workers are stopped while the
        // request is sent, so that the init is the one to accept it.
        let signal_workers = |sig: i32| {
            for p in pids.iter().filter(|p| **p != init) {
                // SAFETY: kill with a pid and a signal number reads no memory.
                unsafe { libc::kill(*p as i32, sig) };
            }
        };
        signal_workers(libc::SIGSTOP);
        let url = format!("{base}/sleep?ms=5000");
        let slow = std::thread::spawn(move || http::get(&url));
        std::thread::sleep(Duration::from_millis(500));
        signal_workers(libc::SIGCONT);
        // SAFETY: kill with a pid and a signal number reads no memory.
        ensure(unsafe { libc::kill(*worker as i32, libc::SIGKILL) } == 0, || format!("kill {worker}: {}", std::io::Error::last_os_error()))?;
        std::thread::sleep(Duration::from_millis(300));
        cx.cd.kill(id, "SIGTERM")?;
        let out = run.wait(Duration::from_secs(15));
        let answered = slow.join().map_err(|_| anyhow::anyhow!("the slow request's thread panicked"))?;
        println!("  worker SIGKILLed, then SIGTERM while the init drains: its request {:?}", answered.as_ref().map(|r| r.status));
        ensure(matches!(&answered, Ok(r) if r.status == 200), || format!("the init's request in flight: {answered:?}"))?;
        expect_code(&out, 137)?;
        let log = std::fs::read(&cx.cd.log)?;
        let text = String::from_utf8_lossy(&log[log_start as usize..]);
        ensure(text.contains("a serving process (pid ") && text.contains("in the container) ended with status 137: stopping the server"), || {
            format!("containerd log since the kill:\n{text}")
        })?;
    } else {
        cx.cd.kill(id, "SIGTERM")?;
        expect_code(&run.wait(Duration::from_secs(10)), 0)?;
    }

    // Metrics on: the processes count in memory they share, and the init's endpoint shows all
    // of their requests.
    let (port, metrics_port) = (free_port()?, free_port()?);
    let id = "w-http-procs-metrics";
    let mut run = cx.cd.spawn(&served(id, "/http.wasm", &[port_annotation(port), (wasm_shim_oci::http::METRICS_PORT, metrics_port.to_string())]))?;
    let base = format!("http://127.0.0.1:{port}");
    http::wait_until_serving(&format!("{base}/"), Duration::from_secs(30)).with_context(|| format!("output so far: {}", run.stdout_now()))?;
    let (_, pids) = task_pids(cx, id)?;
    ensure(pids.len() == expected, || format!("metrics on: expected {expected} processes, ctr task ps: {pids:?}"))?;
    let served_2xx = || -> Result<f64> {
        let r = http::get(&format!("http://127.0.0.1:{metrics_port}/metrics"))?;
        r.body
            .lines()
            .find_map(|l| l.strip_prefix("wasm_shim_http_requests_total{class=\"2xx\"} "))
            .and_then(|v| v.trim().parse().ok())
            .with_context(|| format!("no 2xx count in the scrape: {r}"))
    };
    let before = served_2xx()?;
    all_answered(&base, 16, 10)?;
    let after = served_2xx()?;
    println!("  metrics on, {} processes: 2xx {before} -> {after}", pids.len());
    ensure(after - before == 160.0, || format!("160 requests answered 200, the endpoint counted {}", after - before))?;
    cx.cd.kill(id, "SIGTERM")?;
    expect_code(&run.wait(Duration::from_secs(10)), 0)?;

    let port = free_port()?;
    let id = "w-http-one-cpu";
    let mut run = cx.cd.spawn(&served(id, "/http.wasm", &[port_annotation(port)]).cpu(100_000, 100_000))?;
    let base = format!("http://127.0.0.1:{port}");
    http::wait_until_serving(&format!("{base}/"), Duration::from_secs(30)).with_context(|| format!("output so far: {}", run.stdout_now()))?;
    let (init, pids) = task_pids(cx, id)?;
    ensure(pids == [init], || format!("one CPU: expected the init {init} alone, ctr task ps: {pids:?}"))?;
    // Every request meets a fresh instance, also after requests that left memory dirty all over
    // and grown, one at a time (the next lands in the slot just freed).
    for round in 0..20 {
        let leak = http::get(&format!("{base}/leak?mb={}", 1 + round % 3))?;
        let count = http::get(&format!("{base}/count"))?;
        ensure(leak.body.trim() == "served 1" && count.body.trim() == "served 1", || format!("round {round}: a request met an instance that served before: {leak} {count}"))?;
    }
    cx.cd.kill(id, "SIGTERM")?;
    expect_code(&run.wait(Duration::from_secs(10)), 0)
}

/// WAGI: `wasm.containerd.io/serve=wagi` on a WASI p1 module; CGI variables, body on stdin,
/// Status and Location headers.
pub fn wagi(cx: &Ctx) -> Result<()> {
    let port = free_port()?;
    let id = "w-wagi";
    let mut run = cx.cd.spawn(&served(
        id,
        "/wagi.wasm",
        &[(wasm_shim_oci::http::SERVE, "wagi".into()), port_annotation(port)],
    ))?;
    let base = format!("http://127.0.0.1:{port}");
    let (r, _) = http::wait_until_serving(&format!("{base}/hello?name=x"), Duration::from_secs(30))
        .with_context(|| format!("output so far: {}", run.stdout_now()))?;
    ensure(r.status == 200 && r.body == "method=GET path=/hello query=name=x x-test= length=0 body=\n", || format!("GET: {r}"))?;
    let r = http::post(&format!("{base}/form"), "text/plain", "field=value")?;
    ensure(r.body == "method=POST path=/form query= x-test= length=11 body=field=value\n", || format!("POST: {r}"))?;
    let r = http::get(&format!("{base}/missing"))?;
    ensure(r.status == 404, || format!("/missing: {r}"))?;
    let r = http::get(&format!("{base}/fail"))?;
    ensure(r.status == 500, || format!("/fail: {r}"))?;
    cx.cd.kill(id, "SIGTERM")?;
    let out = run.wait(Duration::from_secs(10));
    expect_code(&out, 0)?;
    line_with(&out.stderr, &["wagi guest: failing on purpose"]).with_context(|| format!("{out}"))?;
    Ok(())
}

/// Outbound `wasi:http`: the allow-listed upstream answers; another port on the same host is
/// denied inside the guest (502 from the guest with HttpRequestDenied) and logged.
pub fn outbound(cx: &Ctx) -> Result<()> {
    let (up, other) = (http::upstream()?, http::upstream()?);
    let port = free_port()?;
    let id = "w-http-out";
    let mut run = cx.cd.spawn(&served(
        id,
        "/http.wasm",
        &[
            port_annotation(port),
            (wasm_shim_oci::http::ALLOWED_OUTBOUND, format!("http://127.0.0.1:{up}")),
        ],
    ))?;
    let base = format!("http://127.0.0.1:{port}");
    http::wait_until_serving(&format!("{base}/"), Duration::from_secs(30))
        .with_context(|| format!("output so far: {}", run.stdout_now()))?;
    let r = http::get(&format!("{base}/fetch?url=http://127.0.0.1:{up}/"))?;
    ensure(r.status == 200 && r.body == "upstream 200\nupstream says hi", || format!("allowed: {r}"))?;
    let r = http::get(&format!("{base}/fetch?url=http://127.0.0.1:{other}/"))?;
    ensure(r.status == 502 && r.body.contains("HttpRequestDenied"), || format!("denied: {r}"))?;
    cx.cd.kill(id, "SIGTERM")?;
    let out = run.wait(Duration::from_secs(10));
    expect_code(&out, 0)?;
    line_with(&out.stderr, &["outbound request to http://127.0.0.1:", "denied"]).with_context(|| format!("{out}"))?;
    Ok(())
}

/// A port someone else holds: Create fails naming the port, and nothing is left behind.
pub fn port_in_use(cx: &Ctx) -> Result<()> {
    let holder = std::net::TcpListener::bind("0.0.0.0:0")?;
    let port = holder.local_addr()?.port();
    refused(cx, "w-http-busy", &[port_annotation(port)], &format!("cannot listen on port {port}"))
}

/// `ctr run` fails with a line holding `needle`, and nothing is left behind.
pub(crate) fn refused(cx: &Ctx, id: &str, annotations: &[(&str, String)], needle: &str) -> Result<()> {
    let before = Leaks::measure(&cx.cd);
    let out = cx.cd.run(&served(id, "/http.wasm", annotations).timeout(Duration::from_secs(20)))?;
    ensure(!out.timed_out && out.code.is_some_and(|c| c != 0), || format!("expected `ctr run` to fail: {out}"))?;
    let combined = out.combined();
    let line = line_with(&combined, &[needle]).with_context(|| format!("{out}"))?;
    println!("  exit {:?}: {}", out.code, line.trim());
    let leaks = Leaks::wait_clean_since(&cx.cd, &before, Duration::from_secs(5));
    ensure(leaks.is_clean(), || format!("left behind: {leaks}"))
}

/// A malformed annotation fails Create naming it.
pub fn bad_annotation(cx: &Ctx) -> Result<()> {
    refused(
        cx,
        "w-http-badann",
        &[(wasm_shim_oci::http::REQUEST_TIMEOUT, "soon".into())],
        &format!("{}=\"soon\"", wasm_shim_oci::http::REQUEST_TIMEOUT),
    )
}

/// `/count` of the http guest: the requests its instance has been handed.
fn count(base: &str) -> Result<u32> {
    let r = http::get(&format!("{base}/count"))?;
    ensure(r.status == 200, || format!("/count: {r}"))?;
    r.body.trim().strip_prefix("served ").and_then(|n| n.parse().ok()).with_context(|| format!("/count: {r}"))
}

/// `wasm.containerd.io/http-instance-reuse` through containerd: without it every request meets a
/// fresh instance (the guest's counter is always 1); with 3, one instance serves three requests
/// (1, 2, 3, 1, ...); a trap and a timeout (504) each retire the instance, so the next request
/// says 1 again; SIGTERM still drains and exits 0.
pub fn instance_reuse(cx: &Ctx) -> Result<()> {
    let port = free_port()?;
    let id = "w-http-fresh";
    let mut run = cx.cd.spawn(&served(id, "/http.wasm", &[port_annotation(port)]))?;
    let base = format!("http://127.0.0.1:{port}");
    http::wait_until_serving(&format!("{base}/"), Duration::from_secs(30)).with_context(|| format!("output so far: {}", run.stdout_now()))?;
    let counts = (0..3).map(|_| count(&base)).collect::<Result<Vec<_>>>()?;
    ensure(counts == [1, 1, 1], || format!("default, fresh instances: {counts:?}"))?;
    cx.cd.kill(id, "SIGTERM")?;
    expect_code(&run.wait(Duration::from_secs(10)), 0)?;

    let port = free_port()?;
    let id = "w-http-reuse";
    let annotations = [
        port_annotation(port),
        (wasm_shim_oci::http::INSTANCE_REUSE, "3".into()),
        (wasm_shim_oci::http::MAX_CONCURRENCY, "1".into()),
        (wasm_shim_oci::http::REQUEST_TIMEOUT, "1s".into()),
    ];
    let mut run = cx.cd.spawn(&served(id, "/http.wasm", &annotations))?;
    let base = format!("http://127.0.0.1:{port}");
    // The first request (hello) is the instance's first: /count continues from 2.
    http::wait_until_serving(&format!("{base}/"), Duration::from_secs(30)).with_context(|| format!("output so far: {}", run.stdout_now()))?;
    let counts = (0..7).map(|_| count(&base)).collect::<Result<Vec<_>>>()?;
    ensure(counts == [2, 3, 1, 2, 3, 1, 2], || format!("reuse 3: {counts:?}"))?;
    let r = http::get(&format!("{base}/trap"))?;
    ensure(r.status == 500, || format!("/trap: {r}"))?;
    let after_trap = count(&base)?;
    ensure(after_trap == 1, || format!("after a trap the instance is fresh, it says {after_trap}"))?;
    ensure(count(&base)? == 2, || "reused again after the trap".to_string())?;
    let r = http::get(&format!("{base}/spin"))?;
    ensure(r.status == 504, || format!("/spin: {r}"))?;
    // The timed-out request's slot (max concurrency 1) frees as its task is aborted.
    let t = Instant::now();
    let after_timeout = loop {
        match http::get(&format!("{base}/count"))? {
            r if r.status == 503 && t.elapsed() < Duration::from_secs(5) => std::thread::sleep(Duration::from_millis(20)),
            r => break r,
        }
    };
    ensure(after_timeout.status == 200 && after_timeout.body == "served 1\n", || format!("after a timeout: {after_timeout}"))?;
    cx.cd.kill(id, "SIGTERM")?;
    let out = run.wait(Duration::from_secs(10));
    expect_code(&out, 0)?;
    line_with(&out.stderr, &["GET /spin", "no response within 1s", wasm_shim_oci::http::REQUEST_TIMEOUT]).with_context(|| format!("{out}"))?;
    Ok(())
}

/// A reuse value out of range fails Create naming the annotation and the range.
pub fn instance_reuse_bad_annotation(cx: &Ctx) -> Result<()> {
    for (i, v) in ["0", "10001", "many"].iter().enumerate() {
        refused(
            cx,
            &format!("w-http-badreuse-{i}"),
            &[(wasm_shim_oci::http::INSTANCE_REUSE, v.to_string())],
            &format!("{}=\"{v}\": expected a number of requests per instance, 1-10000", wasm_shim_oci::http::INSTANCE_REUSE),
        )?;
    }
    Ok(())
}

/// WAGI cannot reuse an instance (a preview 1 `_start` runs once): Create refuses it, saying
/// why, and leaves nothing behind.
pub fn instance_reuse_refused_for_wagi(cx: &Ctx) -> Result<()> {
    let before = Leaks::measure(&cx.cd);
    let annotations = [(wasm_shim_oci::http::SERVE, "wagi".to_string()), (wasm_shim_oci::http::INSTANCE_REUSE, "5".to_string())];
    let out = cx.cd.run(&served("w-wagi-reuse", "/wagi.wasm", &annotations).timeout(Duration::from_secs(20)))?;
    ensure(!out.timed_out && out.code.is_some_and(|c| c != 0), || format!("expected `ctr run` to fail: {out}"))?;
    let combined = out.combined();
    let line = line_with(&combined, &[wasm_shim_oci::http::INSTANCE_REUSE, "WAGI", "cannot be reused"]).with_context(|| format!("{out}"))?;
    println!("  exit {:?}: {}", out.code, line.trim());
    let leaks = Leaks::wait_clean_since(&cx.cd, &before, Duration::from_secs(5));
    ensure(leaks.is_clean(), || format!("left behind: {leaks}"))
}
