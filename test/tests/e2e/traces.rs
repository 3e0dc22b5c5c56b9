//! `wasm::traces::*`: OpenTelemetry traces, received by an OTLP/HTTP endpoint of the test's own
//! (`wasm_shim_e2e::otlp`, decoding with OpenTelemetry's protobuf definitions).
//!
//! - `task_spans`: containerd started with `OTEL_EXPORTER_OTLP_ENDPOINT`; `ctr run` of the hello
//!   command twice: each container is one trace of `create` (root), `compile` (cache miss, then
//!   hit), `start`, `exit` (code 0), carrying its container id (and the pod's names from the
//!   CRI's annotations).
//! - `pod_endpoint_request_spans`: the suite's containerd (no endpoint): a command whose own
//!   environment names the receiver exports nothing (the shim never sends to an endpoint a
//!   container chose); a served component with the same environment but no allow-list entry
//!   for it sends nothing and says why; with the entry, one SERVER span per request,
//!   continuing an incoming `traceparent` or starting a trace, with its status code.
//! - `outbound_traceparent`: the node's endpoint handed down to a served component without one
//!   of its own; a guest's outbound call carries a `traceparent` of the incoming request's trace
//!   whose parent is the call's CLIENT span, which arrives too.
//! - `cri::wasm::traces_from_the_pods_network` (CRI): a pod's function exports its request
//!   spans from inside the pod's network namespace: to `127.0.0.1:4318` of the pod (a receiver
//!   the test binds there, as a collector sidecar would), with the pod's names as resource.
//! - `collector_down`: the endpoint is a closed port: the command exits 0 about as fast as
//!   without traces, a served component answers and stops promptly, the log says it once.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use wasm_shim_e2e::ctr::{ensure, line_with};
use wasm_shim_e2e::http;
use wasm_shim_e2e::images::{self, GUESTS_IMAGE};
use wasm_shim_e2e::otlp::{Receiver, Span, KIND_CLIENT, KIND_INTERNAL, KIND_SERVER};
use wasm_shim_e2e::{Containerd, RunOpts};

use super::http::served;
use super::{expect_code, free_port, Ctx};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

/// A private containerd of its own whose environment (and so its shims') sets `endpoint`, with
/// the guests image imported.
fn traced_containerd(endpoint: &str) -> Result<Containerd> {
    let cd = Containerd::start_with_env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)])?;
    let guests = wasm_shim_e2e::guests::Guests::load()?;
    images::build_and_import_into(&cd, &images::guests_image(&guests), &[cd.namespace.as_str()])?;
    Ok(cd)
}

/// The spans of container `id`, once its four task spans are there.
fn task_spans(rx: &Receiver, id: &str) -> Result<Vec<Span>> {
    rx.wait_for(Duration::from_secs(10), &format!("task spans of {id}"), |spans| {
        // By name: containerd 2.x exports internal spans of its own with `container.id` too
        // (`metadata.containers.Create`, …) when its tracing is on.
        let names = ["create", "compile", "start", "exit"];
        let mine: Vec<Span> = spans
            .iter()
            .filter(|s| s.attr("container.id") == Some(id) && s.kind == KIND_INTERNAL && names.contains(&s.name.as_str()))
            .cloned()
            .collect();
        names.iter().all(|n| mine.iter().any(|s| s.name == *n)).then_some(mine)
    })
}

/// Whether containerd loaded its tracing processor (`ctr plugins ls`: status `ok`), as 2.x does
/// when the OTLP variables are in its environment and 1.x only from its config file.
fn tracing_plugin_loaded(cd: &Containerd) -> Result<bool> {
    let out = cd.ctr(["plugins", "ls"]).output()?;
    ensure(out.status.success(), || format!("ctr plugins ls: {}", String::from_utf8_lossy(&out.stderr)))?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.lines().any(|l| l.starts_with("io.containerd.tracing.processor") && l.split_whitespace().last() == Some("ok")))
}

fn one<'a>(spans: &'a [Span], name: &str) -> Result<&'a Span> {
    let found: Vec<&Span> = spans.iter().filter(|s| s.name == name).collect();
    ensure(found.len() == 1, || format!("{} spans named {name}: {spans:#?}", found.len()))?;
    Ok(found[0])
}

pub fn task_spans_in_one_trace(_cx: &Ctx) -> Result<()> {
    let rx = Receiver::start()?;
    let cd = traced_containerd(&rx.endpoint())?;
    let containerd_traces = tracing_plugin_loaded(&cd)?;
    println!("  containerd's own tracing: {}", if containerd_traces { "on" } else { "off" });
    for (id, cache) in [("t-trace-1", "miss"), ("t-trace-2", "hit")] {
        let mut opts = RunOpts::wasm(GUESTS_IMAGE, id);
        let pod = id == "t-trace-2";
        if pod {
            // The annotations the CRI sets on a pod's containers.
            for (k, v) in [("io.kubernetes.cri.sandbox-namespace", "shop"), ("io.kubernetes.cri.sandbox-name", "web-7d9"), ("io.kubernetes.cri.container-name", "app")] {
                opts.extra.extend(["--annotation".to_string(), format!("{k}={v}")]);
            }
        }
        let out = cd.run(&opts)?;
        expect_code(&out, 0)?;
        let spans = task_spans(&rx, id)?;
        let create = one(&spans, "create")?;
        if containerd_traces {
            // containerd's tracing is on (2.x reads the OTLP variables of its environment): it
            // sends its trace context with Create, and the task's spans join containerd's
            // trace, under the span of containerd's call to the shim.
            ensure(!create.parent_span_id.is_empty(), || format!("create did not join containerd's trace: {create:?}"))?;
            let parent = rx.wait_for(Duration::from_secs(10), "create's parent span", |all| all.iter().find(|s| s.span_id == create.parent_span_id).cloned())?;
            ensure(parent.trace_id == create.trace_id && parent.resource.get("service.name").map(String::as_str) == Some("containerd"), || {
                format!("create's parent is not containerd's: {parent:?}")
            })?;
            println!("  {id}: create is a child of containerd's {:?}", parent.name);
        } else {
            // containerd 1.x (tracing only from its config file) sends none: a trace of the
            // task's own.
            ensure(create.parent_span_id.is_empty(), || format!("create is not the root: {create:?}"))?;
        }
        for s in &spans {
            ensure(s.trace_id == create.trace_id, || format!("{id}: two traces: {spans:#?}"))?;
            ensure(s.resource.get("service.name").map(String::as_str) == Some("containerd-shim-wasm-v1"), || format!("resource {:?}", s.resource))?;
            if s.name != "create" {
                ensure(s.parent_span_id == create.span_id, || format!("{} is not a child of create: {s:?}", s.name))?;
            }
            let k8s = [s.attr("k8s.namespace.name"), s.attr("k8s.pod.name"), s.attr("k8s.container.name")];
            let expected = if pod { [Some("shop"), Some("web-7d9"), Some("app")] } else { [None, None, None] };
            ensure(k8s == expected, || format!("{id}: k8s attributes of {}: {:?}", s.name, s.attributes))?;
        }
        let compile = one(&spans, "compile")?;
        ensure(compile.attr("wasm.cache") == Some(cache) && compile.attr("wasm.tier").is_some() && compile.attr("wasm.digest").is_some_and(|d| d.starts_with("sha256:")), || {
            format!("{id}: compile span {compile:?}")
        })?;
        let exit = one(&spans, "exit")?;
        ensure(exit.attr("process.exit.code") == Some("0") && exit.status != 2, || format!("{id}: exit span {exit:?}"))?;
        let start = one(&spans, "start")?;
        ensure(start.end_ns >= start.start_ns && start.start_ns >= create.end_ns, || format!("start {start:?} create {create:?}"))?;
        println!("  {id}: trace {} create {:.1} ms, compile ({cache}, {}) {:.1} ms", create.trace_id, (create.end_ns - create.start_ns) as f64 / 1e6, compile.attr("wasm.tier").unwrap_or("?"), (compile.end_ns - compile.start_ns) as f64 / 1e6);
    }
    ensure(rx.errors().is_empty(), || format!("receiver errors: {:?}", rx.errors()))
}

pub fn pod_endpoint_request_spans(cx: &Ctx) -> Result<()> {
    let rx = Receiver::start()?;
    let endpoint = format!("OTEL_EXPORTER_OTLP_ENDPOINT={}", rx.endpoint());
    // A command whose environment names an endpoint: the shim exports nothing (its own
    // environment has none), and a command makes no request spans.
    let out = cx.cd.run(&RunOpts::wasm(GUESTS_IMAGE, "w-trace-cmd").env(&endpoint))?;
    expect_code(&out, 0)?;

    // An endpoint the pod did not allow (the environment may be the image's): no spans, a
    // warning. (The container shares the node's network: its loopback is no pod's own.)
    let port = free_port()?;
    let denied = "w-trace-denied";
    let mut run = cx.cd.spawn(&served(denied, "/http.wasm", &[(wasm_shim_oci::http::PORT, port.to_string())]).env(&endpoint))?;
    http::wait_until_serving(&format!("http://127.0.0.1:{port}/"), Duration::from_secs(30)).with_context(|| format!("output so far: {}", run.stdout_now()))?;
    cx.cd.kill(denied, "SIGTERM")?;
    expect_code(&run.wait(Duration::from_secs(10)), 0)?;
    let log = std::fs::read_to_string(&cx.cd.log)?;
    let warned = format!("the container's endpoint {}/v1/traces is neither allowed by", rx.endpoint());
    line_with(&log, &[denied, &warned]).with_context(|| cx.cd.log_tail(40))?;

    let port = free_port()?;
    let id = "w-trace-http";
    let allowed = (wasm_shim_oci::http::ALLOWED_OUTBOUND, rx.endpoint());
    let mut run = cx.cd.spawn(&served(id, "/http.wasm", &[(wasm_shim_oci::http::PORT, port.to_string()), allowed]).env(&endpoint).env("OTEL_SERVICE_NAME=hello-fn"))?;
    let base = format!("http://127.0.0.1:{port}");
    http::wait_until_serving(&format!("{base}/"), Duration::from_secs(30)).with_context(|| format!("output so far: {}", run.stdout_now()))?;
    let traceparent = format!("00-{TRACE_ID}-{PARENT_ID}-01");
    let r = http::get_with(&format!("{base}/"), &[("traceparent", &traceparent)], Duration::from_secs(10))?;
    ensure(r.status == 200, || format!("{r}"))?;
    let r = http::get(&format!("{base}/status/404"))?;
    ensure(r.status == 404, || format!("{r}"))?;
    let r = http::get(&format!("{base}/trap"))?;
    ensure(r.status == 500, || format!("{r}"))?;
    cx.cd.kill(id, "SIGTERM")?;
    expect_code(&run.wait(Duration::from_secs(10)), 0)?;

    // The spans of the last requests are flushed at the drain: there now, or within a moment.
    let server = |path: &'static str| {
        move |spans: &[Span]| spans.iter().find(|s| s.kind == KIND_SERVER && s.attr("url.path") == Some(path)).cloned()
    };
    let continued = rx.wait_for(Duration::from_secs(5), "the span of GET /", |spans| {
        spans.iter().find(|s| s.kind == KIND_SERVER && s.attr("url.path") == Some("/") && s.trace_id == TRACE_ID).cloned()
    })?;
    ensure(continued.parent_span_id == PARENT_ID && continued.name == "GET" && continued.attr("http.response.status_code") == Some("200") && continued.status != 2, || {
        format!("GET / with traceparent: {continued:?}")
    })?;
    ensure(continued.resource.get("service.name").map(String::as_str) == Some("hello-fn") && continued.resource.get("container.id").map(String::as_str) == Some(id), || {
        format!("resource {:?}", continued.resource)
    })?;
    let fresh = rx.wait_for(Duration::from_secs(5), "the span of GET /status/404", server("/status/404"))?;
    ensure(fresh.trace_id != TRACE_ID && fresh.parent_span_id.is_empty() && fresh.attr("http.response.status_code") == Some("404"), || format!("{fresh:?}"))?;
    let trap = rx.wait_for(Duration::from_secs(5), "the span of GET /trap", server("/trap"))?;
    ensure(trap.attr("http.response.status_code") == Some("500") && trap.status == 2, || format!("{trap:?}"))?;
    // Nothing from the shim: the task spans go only to the node's endpoint, and there is none.
    let spans = rx.spans();
    ensure(spans.iter().all(|s| s.kind == KIND_SERVER), || format!("not only request spans: {spans:#?}"))?;
    ensure(spans.iter().all(|s| s.resource.get("container.id").map(String::as_str) == Some(id)), || format!("spans of the denied container: {spans:#?}"))?;
    println!("  {} request spans; GET / continued trace {TRACE_ID}; none from the shim or the command", spans.len());
    ensure(rx.errors().is_empty(), || format!("receiver errors: {:?}", rx.errors()))
}

pub fn outbound_traceparent(_cx: &Ctx) -> Result<()> {
    let rx = Receiver::start()?;
    let cd = traced_containerd(&rx.endpoint())?;
    let (up, heads) = http::recording_upstream()?;
    let port = free_port()?;
    let id = "t-trace-out";
    let mut run = cd.spawn(&served(
        id,
        "/http.wasm",
        &[(wasm_shim_oci::http::PORT, port.to_string()), (wasm_shim_oci::http::ALLOWED_OUTBOUND, format!("http://127.0.0.1:{up}"))],
    ))?;
    let base = format!("http://127.0.0.1:{port}");
    http::wait_until_serving(&format!("{base}/"), Duration::from_secs(30)).with_context(|| format!("output so far: {}", run.stdout_now()))?;
    let traceparent = format!("00-{TRACE_ID}-{PARENT_ID}-01");
    let r = http::get_with(&format!("{base}/fetch?url=http://127.0.0.1:{up}/x"), &[("traceparent", &traceparent)], Duration::from_secs(10))?;
    ensure(r.status == 200 && r.body == "upstream 200\nupstream says hi", || format!("fetch: {r}"))?;
    let head = heads.lock().unwrap().last().cloned().unwrap_or_default();
    let sent = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("traceparent:").map(|v| v.trim().to_string()))
        .with_context(|| format!("no traceparent in the upstream's request:\n{head}"))?;
    let parts: Vec<&str> = sent.split('-').collect();
    ensure(parts.len() == 4 && parts[1] == TRACE_ID && parts[2] != PARENT_ID && parts[3] == "01", || format!("traceparent sent: {sent}"))?;
    let client = rx.wait_for(Duration::from_secs(10), "the CLIENT span", |spans| spans.iter().find(|s| s.kind == KIND_CLIENT).cloned())?;
    ensure(client.span_id == parts[2] && client.trace_id == TRACE_ID && client.attr("http.response.status_code") == Some("200"), || {
        format!("client span {client:?} vs traceparent {sent}")
    })?;
    let server = rx.wait_for(Duration::from_secs(10), "the SERVER span", |spans| {
        spans.iter().find(|s| s.kind == KIND_SERVER && s.attr("url.path") == Some("/fetch")).cloned()
    })?;
    ensure(client.parent_span_id == server.span_id && server.parent_span_id == PARENT_ID && server.trace_id == TRACE_ID, || {
        format!("client {client:?}\nserver {server:?}")
    })?;
    // The node's endpoint, handed down: the service is named after the container (no
    // OTEL_SERVICE_NAME, no pod), and the task spans of the same container arrived too.
    ensure(server.resource.get("service.name").map(String::as_str) == Some(id), || format!("resource {:?}", server.resource))?;
    cd.kill(id, "SIGTERM")?;
    expect_code(&run.wait(Duration::from_secs(10)), 0)?;
    task_spans(&rx, id)?;
    println!("  upstream got traceparent {sent}; CLIENT span {} child of SERVER {}", client.span_id, server.span_id);
    ensure(rx.errors().is_empty(), || format!("receiver errors: {:?}", rx.errors()))
}

pub fn collector_down(cx: &Ctx) -> Result<()> {
    let closed = free_port()?;
    let endpoint = format!("http://127.0.0.1:{closed}");
    let cd = traced_containerd(&endpoint)?;
    // The same command without traces (the suite's containerd), then with a dead collector.
    let time = |cd: &Containerd, id: &str| -> Result<Duration> {
        let t = Instant::now();
        let out = cd.run(&RunOpts::wasm(GUESTS_IMAGE, id))?;
        expect_code(&out, 0)?;
        Ok(t.elapsed())
    };
    // Warm both compile caches first.
    time(&cx.cd, "w-trace-warm")?;
    time(&cd, "t-trace-warm")?;
    let without = time(&cx.cd, "w-trace-plain")?;
    let with = time(&cd, "t-trace-down")?;
    println!("  ctr run of hello: {without:?} without traces, {with:?} with the collector down");
    ensure(with < without + Duration::from_secs(2), || format!("{with:?} with the collector down vs {without:?} without"))?;

    let port = free_port()?;
    let id = "t-trace-down-http";
    let mut run = cd.spawn(&served(id, "/http.wasm", &[(wasm_shim_oci::http::PORT, port.to_string())]))?;
    let base = format!("http://127.0.0.1:{port}");
    http::wait_until_serving(&format!("{base}/"), Duration::from_secs(30)).with_context(|| format!("output so far: {}", run.stdout_now()))?;
    for _ in 0..20 {
        let r = http::get(&format!("{base}/"))?;
        ensure(r.status == 200, || format!("{r}"))?;
    }
    // Past the export delay: the export has failed by now.
    std::thread::sleep(Duration::from_millis(1500));
    let t = Instant::now();
    cd.kill(id, "SIGTERM")?;
    expect_code(&run.wait(Duration::from_secs(10)), 0)?;
    let stop = t.elapsed();
    println!("  served 20 requests, SIGTERM to exit 0: {stop:?}");
    ensure(stop < Duration::from_secs(3), || format!("stopping took {stop:?}"))?;
    let needle = format!("traces: export to {endpoint}/v1/traces failed");
    let log = std::fs::read_to_string(&cd.log)?;
    let line = line_with(&log, &[&needle]).with_context(|| cd.log_tail(40))?;
    println!("  {}", line.split("msg=").nth(1).unwrap_or(line));
    // Where spans go is said once per process: the shim's, and the serving init's (forwarded).
    let task = format!("traces: task spans go to {endpoint}/v1/traces");
    let request = format!("traces: request spans go to {endpoint}/v1/traces (the node's");
    for needle in [task.as_str(), request.as_str()] {
        line_with(&log, &[needle]).with_context(|| cd.log_tail(40))?;
    }
    Ok(())
}

/// A CRI pod: the function's request spans go to `http://127.0.0.1:4318`, the pod's own
/// loopback, where the test binds a receiver inside the pod's network namespace (a collector
/// sidecar's place); a busybox sidecar calls the function. What arrives was sent from the
/// pod's network: the host's 127.0.0.1:4318 has nothing.
pub fn traces_from_the_pods_network(cx: &Ctx) -> Result<()> {
    use super::cri::{need_wasm, wasm, with_pod};
    use wasm_shim_e2e::cri::{ContainerSpec, WASM_HANDLER};
    need_wasm(cx)?;
    with_pod(cx, "wasm-traced", WASM_HANDLER, |cri, pod| {
        let function = wasm("function", "/http.wasm").env("PORT", "8081").env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318");
        let (f, _) = pod.start(cri, function)?;
        let pid = std::fs::read_to_string(cx.cd.task_state_dir_in("k8s.io").join(&f).join("init.pid"))?.trim().to_string();
        let rx = Receiver::start_in_netns(std::path::Path::new(&format!("/proc/{pid}/ns/net")), 4318)?;
        let caller = ContainerSpec::new("caller", wasm_shim_e2e::images::BUSYBOX_IMAGE).command([
            "/bin/sh",
            "-c",
            "i=0; until busybox wget -q -O - http://127.0.0.1:8081/; do \
               i=$((i+1)); [ $i -ge 100 ] && echo 'gave up' >&2 && exit 1; sleep 0.05; \
             done",
        ]);
        let (c, _) = pod.start(cri, caller)?;
        let st = cri.wait_exited(&c, Duration::from_secs(30))?;
        ensure(st.exit_code == 0, || format!("the caller exited {}", st.exit_code))?;
        let span = rx.wait_for(Duration::from_secs(10), "the function's SERVER span", |spans| {
            spans.iter().find(|s| s.kind == KIND_SERVER && s.attr("http.response.status_code") == Some("200")).cloned()
        })?;
        let r = |k: &str| span.resource.get(k).map(String::as_str);
        ensure(
            r("k8s.pod.name") == Some(pod.spec.name.as_str()) && r("k8s.namespace.name") == Some(pod.spec.namespace.as_str()) && r("k8s.container.name") == Some("function") && r("service.name") == Some("function") && r("container.id") == Some(f.as_str()),
            || format!("resource {:?}", span.resource),
        )?;
        cri.stop_container(&f, 10)?;
        let st = cri.wait_exited(&f, Duration::from_secs(15))?;
        ensure(st.exit_code == 0, || format!("function exited {}", st.exit_code))?;
        println!("  SERVER span {} from the pod's network; resource pod {:?}, service {:?}", span.span_id, r("k8s.pod.name"), r("service.name"));
        Ok(())
    })
}
