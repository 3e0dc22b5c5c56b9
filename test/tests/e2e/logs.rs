//! `wasm::logs::*`: the shim's own lines in containerd's log and the per-request access log.
//!
//! - `wasm::logs::access_log_component` / `wasm::logs::access_log_wagi`: `wasm.containerd.io/http-access-log=true`
//!   gives one Common Log Format line per request on the container's stderr (peer, request
//!   line, status, bytes, duration), the shim's own 404/500 included; the guest's own output is
//!   unchanged; a hostile guest that leaves a forged, unfinished line on stderr cannot swallow
//!   the real line; a client's quote in the target cannot close the quoted request line.
//! - `wasm::logs::access_log_off_by_default`: the same requests without the annotation: no line.
//! - `wasm::logs::access_log_bad_value`: `http-access-log=yes` fails Create naming the annotation.
//! - `wasm::logs::shim_lines_quiet_and_keyed` (`ctr`): a healthy create/start/exit adds no warning and
//!   at most two info lines; every line about it carries `id="<id>"`.
//! - `wasm::logs::log_uri` (`ctr run --log-uri`): `file:///path` gets stdout and stderr of a wasm
//!   guest and of a native container (the same file content as runc's shim gives), its directory
//!   made, appended to; the native process holds a pipe, not the host file (as under runc);
//!   `binary:///path?k=v` starts the logging program with the streams on fds 3 and 4,
//!   `CONTAINER_ID`/`CONTAINER_NAMESPACE` and the query as arguments; an unknown scheme fails
//!   Create naming it, and a `binary-v2` program that never says ready fails it too.
//! - `cri::wasm::shim_lines_name_the_pod` (CRI): lines about a pod's containers carry
//!   `pod="<namespace>/<name>"` and `container="<name>"`; a healthy one adds no warning, a
//!   failing one's line names its cause.

use std::time::Duration;

use anyhow::{Context, Result};
use wasm_shim_e2e::cri::WASM_HANDLER;
use wasm_shim_e2e::ctr::ensure;
use wasm_shim_e2e::http;
use wasm_shim_e2e::images::{BUSYBOX_IMAGE, GUESTS_IMAGE};
use wasm_shim_e2e::RunOpts;

use super::http::{refused, served};
use super::{expect_code, free_port, Ctx};

const ACCESS_LOG: &str = wasm_shim_oci::http::ACCESS_LOG;

/// One access line, parsed: `peer - - [time] "request" status bytes seconds`.
#[derive(Debug)]
struct Access {
    peer: String,
    request: String,
    status: u16,
    bytes: u64,
    seconds: f64,
}

fn parse_access(line: &str) -> Option<Access> {
    let (peer, rest) = line.split_once(" - - [")?;
    let (time, rest) = rest.split_once("] \"")?;
    // `30/Nov/2026:06:01:02 +0000`
    if time.len() != 26 || !time.ends_with(" +0000") {
        return None;
    }
    let (request, rest) = rest.rsplit_once("\" ")?;
    let mut fields = rest.split(' ');
    let a = Access {
        peer: peer.to_string(),
        request: request.to_string(),
        status: fields.next()?.parse().ok()?,
        bytes: fields.next()?.parse().ok()?,
        seconds: fields.next()?.parse().ok()?,
    };
    fields.next().is_none().then_some(a)
}

fn access_lines(stderr: &str) -> Vec<Access> {
    stderr.lines().filter_map(parse_access).collect()
}

/// The access line of `request` (`"GET / HTTP/1.1"` without quotes); exactly one.
fn one<'a>(lines: &'a [Access], request: &str, stderr: &str) -> Result<&'a Access> {
    let found: Vec<&Access> = lines.iter().filter(|a| a.request == request).collect();
    ensure(found.len() == 1, || format!("{} access lines for {request:?} (expected 1); stderr:\n{stderr}", found.len()))?;
    let a = found[0];
    ensure(a.peer == "127.0.0.1" && (0.0..30.0).contains(&a.seconds), || format!("{a:?}"))?;
    Ok(a)
}

fn expect(lines: &[Access], request: &str, status: u16, bytes: u64, stderr: &str) -> Result<()> {
    let a = one(lines, request, stderr)?;
    ensure(a.status == status && a.bytes == bytes, || format!("{request}: expected {status} {bytes}, got {a:?}"))
}

/// Serves `/http.wasm` with `annotations`, runs `requests` against it, stops it with SIGTERM;
/// the task's output.
fn serve_and_stop(cx: &Ctx, id: &str, entry: &str, annotations: &[(&str, String)], requests: impl FnOnce(&str) -> Result<()>) -> Result<wasm_shim_e2e::Output> {
    let port = free_port()?;
    let mut all = vec![(wasm_shim_oci::http::PORT, port.to_string())];
    all.extend(annotations.iter().cloned());
    let mut run = cx.cd.spawn(&served(id, entry, &all))?;
    let base = format!("http://127.0.0.1:{port}");
    // The readiness probe is logged too; the checks below look for other requests.
    http::wait_until_serving(&format!("{base}/sleep?ms=0"), Duration::from_secs(30))
        .with_context(|| format!("output so far: {}", run.stdout_now()))?;
    let result = requests(&base);
    cx.cd.kill(id, "SIGTERM")?;
    let out = run.wait(Duration::from_secs(10));
    result?;
    expect_code(&out, 0)?;
    Ok(out)
}

/// The requests both the on and off runs of the component make.
fn component_requests(base: &str) -> Result<()> {
    let r = http::get(&format!("{base}/"))?;
    ensure(r.status == 200 && r.body == "hello from wasi:http\n", || format!("GET /: {r}"))?;
    let r = http::post(&format!("{base}/echo"), "text/plain", "a posted body")?;
    ensure(r.status == 200 && r.body == "a posted body", || format!("echo: {r}"))?;
    ensure(http::get(&format!("{base}/status/404"))?.status == 404, || "status/404".to_string())?;
    // The shim's own 500: the guest traps.
    ensure(http::get(&format!("{base}/trap"))?.status == 500, || "trap".to_string())?;
    // A hostile guest: an unfinished forged line on stderr just before its response.
    let r = http::get(&format!("{base}/forge"))?;
    ensure(r.status == 200 && r.body == "forged\n", || format!("forge: {r}"))?;
    // A hostile client: a quote in the target would close the quoted request line.
    let addr: std::net::SocketAddr = base.trim_start_matches("http://").parse()?;
    let reply = http::raw(addr, b"GET /x\"y\" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", Duration::from_secs(5))?;
    ensure(reply.starts_with("HTTP/1.1 404") || reply.starts_with("HTTP/1.1 400"), || format!("quoted target: {reply}"))?;
    ensure(http::get(&format!("{base}/stderr"))?.status == 200, || "stderr route".to_string())
}

pub fn access_log_component(cx: &Ctx) -> Result<()> {
    let out = serve_and_stop(cx, "w-access", "/http.wasm", &[(ACCESS_LOG, "true".into())], component_requests)?;
    let lines = access_lines(&out.stderr);
    expect(&lines, "GET / HTTP/1.1", 200, 21, &out.stderr)?;
    expect(&lines, "POST /echo HTTP/1.1", 200, 13, &out.stderr)?;
    expect(&lines, "GET /status/404 HTTP/1.1", 404, 0, &out.stderr)?;
    expect(&lines, "GET /trap HTTP/1.1", 500, "internal server error\n".len() as u64, &out.stderr)?;
    expect(&lines, "GET /stderr HTTP/1.1", 200, 3, &out.stderr)?;
    // The real line of /forge starts a line of its own; the guest's text stays as it wrote it.
    expect(&lines, "GET /forge HTTP/1.1", 200, 7, &out.stderr)?;
    ensure(out.stderr.lines().any(|l| l == "10.6.6.6 - - [01/Jan/2026:00:00:00 +0000] \"GET /forged HTTP/1.1\" 200 7 0.000001 "), || {
        format!("the guest's unfinished line is not on a line of its own:\n{}", out.stderr)
    })?;
    // If hyper lets the quote through, it is escaped; either way no line has a bare one inside.
    if out.stderr.contains("/x\\x22y\\x22") {
        one(&lines, "GET /x\\x22y\\x22 HTTP/1.1", &out.stderr)?;
    }
    ensure(!out.stderr.contains("/x\"y\""), || format!("an unescaped quote in the access log:\n{}", out.stderr))?;
    // Guest output untouched: its stdout line, its stderr line, the trap's message.
    ensure(out.stdout.lines().any(|l| l == "request GET /") && access_lines(&out.stdout).is_empty(), || format!("stdout: {}", out.stdout))?;
    ensure(out.stderr.lines().any(|l| l == "a line on stderr from a request"), || format!("stderr: {}", out.stderr))?;
    ensure(out.stderr.lines().any(|l| l.starts_with("/http.wasm: GET /trap: ")), || format!("no line for the trap: {}", out.stderr))?;
    println!("  {} access lines, e.g. {}", lines.len(), out.stderr.lines().find(|l| l.contains("POST /echo")).unwrap_or_default());
    Ok(())
}

pub fn access_log_off_by_default(cx: &Ctx) -> Result<()> {
    let out = serve_and_stop(cx, "w-access-off", "/http.wasm", &[], component_requests)?;
    ensure(access_lines(&out.stderr).is_empty() && access_lines(&out.stdout).is_empty(), || format!("access lines without the annotation: {out}"))?;
    // Without the access log the guest's unfinished line is left as it is (glued to whatever
    // comes next on stderr): not a byte is added to its output.
    ensure(out.stderr.contains("\"GET /forged HTTP/1.1\" 200 7 0.000001 "), || format!("{out}"))?;
    ensure(out.stderr.lines().any(|l| l.ends_with("a line on stderr from a request")), || format!("{out}"))
}

pub fn access_log_wagi(cx: &Ctx) -> Result<()> {
    let annotations = [(wasm_shim_oci::http::SERVE, "wagi".to_string()), (ACCESS_LOG, "TRUE".into())];
    let mut hello = 0;
    let out = serve_and_stop(cx, "w-access-wagi", "/wagi.wasm", &annotations, |base| {
        ensure(http::get(&format!("{base}/missing"))?.status == 404, || "missing".to_string())?;
        ensure(http::get(&format!("{base}/fail"))?.status == 500, || "fail".to_string())?;
        let r = http::get(&format!("{base}/hello?x=1"))?;
        hello = r.body.len() as u64;
        ensure(r.status == 200 && hello > 0, || format!("hello: {r}"))
    })?;
    let lines = access_lines(&out.stderr);
    expect(&lines, "GET /missing HTTP/1.1", 404, "not here\n".len() as u64, &out.stderr)?;
    expect(&lines, "GET /fail HTTP/1.1", 500, "internal server error\n".len() as u64, &out.stderr)?;
    expect(&lines, "GET /hello?x=1 HTTP/1.1", 200, hello, &out.stderr)?;
    ensure(out.stderr.lines().any(|l| l == "wagi guest: failing on purpose"), || format!("{out}"))?;
    ensure(out.stderr.lines().any(|l| l.starts_with("/wagi.wasm: GET /fail: ")), || format!("{out}"))
}

pub fn access_log_bad_value(cx: &Ctx) -> Result<()> {
    refused(cx, "w-access-bad", &[(ACCESS_LOG, "yes".into())], &format!("{ACCESS_LOG}=\"yes\""))
}

/// The shim's lines about container `id` in containerd's log since byte `from`.
fn shim_lines(cx: &Ctx, from: u64, key: &str) -> Result<Vec<String>> {
    let log = std::fs::read(&cx.cd.log)?;
    let text = String::from_utf8_lossy(&log[(from as usize).min(log.len())..]).into_owned();
    Ok(text.lines().filter(|l| l.contains(key)).map(String::from).collect())
}

fn level(line: &str) -> &str {
    line.split_once(" level=").and_then(|(_, r)| r.split(' ').next()).unwrap_or("")
}

/// Healthy lines: no warning or error, at most two at info (debug is what containerd at debug
/// level asks for, as the suite's containerd is).
fn quiet(lines: &[String], what: &str) -> Result<()> {
    let loud: Vec<&String> = lines.iter().filter(|l| !matches!(level(l), "debug" | "trace" | "info")).collect();
    ensure(loud.is_empty(), || format!("{what}: warnings on a healthy path:\n{}", loud.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n")))?;
    let info = lines.iter().filter(|l| level(l) == "info").count();
    ensure(info <= 2, || format!("{what}: {info} info lines on a healthy path:\n{}", lines.join("\n")))
}

pub fn shim_lines_quiet_and_keyed(cx: &Ctx) -> Result<()> {
    let id = "w-log-quiet";
    let from = std::fs::metadata(&cx.cd.log)?.len();
    let out = cx.cd.run(&RunOpts::wasm(GUESTS_IMAGE, id))?;
    expect_code(&out, 0)?;
    // The shim's lines reach containerd's log asynchronously.
    std::thread::sleep(Duration::from_millis(300));
    let lines = shim_lines(cx, from, &format!("id=\"{id}\""))?;
    ensure(!lines.is_empty(), || "no shim line with the container's id at debug level".to_string())?;
    ensure(lines.iter().all(|l| l.starts_with("time=\"") && l.contains(" msg=\"") && !l.contains(" pod=\"")), || lines.join("\n"))?;
    quiet(&lines, id)?;
    println!("  {} lines about {id}, none above info; e.g. {}", lines.len(), lines[0]);
    Ok(())
}

/// Through the CRI: a pod's containers are named in the shim's lines.
pub fn shim_lines_name_the_pod(cx: &Ctx) -> Result<()> {
    super::cri::need_wasm(cx)?;
    let from = std::fs::metadata(&cx.cd.log)?.len();
    super::cri::with_pod(cx, "wasm-logkeys", WASM_HANDLER, |cri, pod| {
        let (st, _) = super::cri::run_to_exit(cri, pod, super::cri::wasm("hello", "/hello.wasm"), Duration::from_secs(30))?;
        ensure(st.exit_code == 0, || format!("exit code {}", st.exit_code))?;
        let err = pod.start(cri, super::cri::wasm("broken", "/missing.wasm"));
        ensure(err.is_err(), || "a missing entrypoint started".to_string())?;
        std::thread::sleep(Duration::from_millis(300));
        let pod_key = format!("pod=\"{}/{}\"", pod.spec.namespace, pod.spec.name);
        let hello_id = &pod.containers[0].1;
        let broken_id = &pod.containers[1].1;
        let hello = shim_lines(cx, from, &format!("id=\"{hello_id}\""))?;
        ensure(!hello.is_empty() && hello.iter().all(|l| l.contains(&pod_key) && l.contains("container=\"hello\"")), || {
            format!("lines about the hello container without {pod_key} container=\"hello\":\n{}", hello.join("\n"))
        })?;
        quiet(&hello, "hello")?;
        let broken = shim_lines(cx, from, &format!("id=\"{broken_id}\""))?;
        let failed = broken.iter().find(|l| l.contains("create failed") && l.contains("/missing.wasm"));
        ensure(failed.is_some_and(|l| l.contains(&pod_key) && l.contains("container=\"broken\"")), || {
            format!("no keyed line for the failed create:\n{}", broken.join("\n"))
        })?;
        println!("  {}", failed.map(String::as_str).unwrap_or_default());
        Ok(())
    })
}

/// `ctr run --log-uri`: see the module's doc.
pub fn log_uri(cx: &Ctx) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("e2e-log-uri-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let result = log_uri_in(cx, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn log_uri_in(cx: &Ctx, dir: &std::path::Path) -> Result<()> {
    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap_or_default();
    let uri = |p: &std::path::Path| format!("file://{}", p.display());
    // A wasm guest: both streams, in a directory that did not exist; appended on a second run.
    let wasm_log = dir.join("made/by/the/shim/wasm.log");
    for n in 1..=2 {
        let out = cx.cd.run(&RunOpts::wasm(GUESTS_IMAGE, &format!("w-log-uri-{n}")).args(["/stderr.wasm"]).extra(&["--log-uri", &uri(&wasm_log)]))?;
        expect_code(&out, 0)?;
        let want = "this goes to stdout\nthis goes to stderr\n".repeat(n);
        ensure(read(&wasm_log) == want, || format!("{} after run {n}: {:?}; ctr: {out}", wasm_log.display(), read(&wasm_log)))?;
    }
    // A native container, next to the same one under runc's shim: the same file, and the
    // process writes to a pipe, never to the host's file.
    let script = "echo out; echo err >&2; readlink /proc/self/fd/1; exit 3";
    let (ours, theirs) = (dir.join("native.log"), dir.join("runc.log"));
    let out = cx.cd.run(&RunOpts::wasm(BUSYBOX_IMAGE, "n-log-uri").args(["/bin/sh", "-c", script]).extra(&["--log-uri", &uri(&ours)]))?;
    expect_code(&out, 3)?;
    let runc = cx.cd.run(&RunOpts::runc(BUSYBOX_IMAGE, "r-log-uri").args(["/bin/sh", "-c", script]).extra(&["--log-uri", &uri(&theirs)]))?;
    expect_code(&runc, 3)?;
    let (got, want) = (read(&ours), read(&theirs));
    println!("  native: {got:?}; runc: {want:?}");
    // The same lines; runc's shim copies the two streams apart, so their order may differ
    // there (ours keeps the order they were written in: one pipe).
    let normal = |s: &str| {
        let mut lines = s.lines().map(|l| if l.starts_with("pipe:[") { "pipe:[]".to_string() } else { l.to_string() }).collect::<Vec<_>>();
        lines.sort_unstable();
        lines
    };
    ensure(got.starts_with("out\nerr\npipe:[") && normal(&got) == normal(&want), || format!("native {got:?}, runc {want:?}"))?;
    // A logging program, as containerd's shims start one.
    let logger = dir.join("logger.sh");
    let logged = dir.join("logged");
    std::fs::write(
        &logger,
        format!("#!/bin/sh\nexec 5>&-\n{{ echo \"$CONTAINER_NAMESPACE/$CONTAINER_ID $*\"; cat <&3; cat <&4; }} > {}\n", logged.display()),
    )?;
    std::fs::set_permissions(&logger, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let out = cx.cd.run(&RunOpts::wasm(GUESTS_IMAGE, "w-log-binary").args(["/stderr.wasm"]).extra(&["--log-uri", &format!("binary://{}?tag=web", logger.display())]))?;
    expect_code(&out, 0)?;
    let want = format!("{}/w-log-binary tag web\nthis goes to stdout\nthis goes to stderr\n", cx.cd.namespace);
    let since = std::time::Instant::now();
    while read(&logged) != want && since.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    ensure(read(&logged) == want, || format!("logging program wrote {:?}, wanted {want:?}", read(&logged)))?;
    // Bad URIs fail Create with a message naming them, and leave nothing behind.
    let before = wasm_shim_e2e::leaks::Leaks::measure(&cx.cd);
    let out = cx.cd.run(&RunOpts::wasm(GUESTS_IMAGE, "w-log-bad").args(["/stderr.wasm"]).extra(&["--log-uri", "syslog://host/x"]))?;
    println!("  unknown scheme: {}", out.stderr.trim());
    ensure(!out.success() && out.stderr.contains("syslog"), || format!("syslog://: {out}"))?;
    let out = cx.cd.run(&RunOpts::wasm(GUESTS_IMAGE, "w-log-v2").args(["/stderr.wasm"]).extra(&["--log-uri", "binary-v2:///bin/true"]))?;
    println!("  binary-v2 never ready: {}", out.stderr.trim());
    ensure(!out.success() && out.stderr.contains("/bin/true"), || format!("binary-v2:///bin/true: {out}"))?;
    let leaks = wasm_shim_e2e::leaks::Leaks::wait_clean_since(&cx.cd, &before, Duration::from_secs(5));
    ensure(leaks.is_clean(), || format!("left behind: {leaks}"))
}
