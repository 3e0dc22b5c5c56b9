//! WASI 0.3 in-process, without containerd or root: the engine runs the `p3-cli` guest (a
//! `wasi:cli/run@0.3.0` command) and serves the `p3-http` guest (a `wasi:http/service`
//! component), both Rust built with the `wasip3` crate (wit-bindgen's async bindings), with the
//! same limits as their 0.2 counterparts: exit codes, the memory limit, the request timeout
//! (504) even for a spinning guest, traps (500, then fine), the concurrency cap, the outbound
//! allow-list, the drain; request spans through `client.send` (the CLIENT span and the
//! `traceparent` the upstream gets). The same under containerd: `wasi3::*` in the e2e suite.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use wasm_shim_e2e::guests::{self, Guests};
use wasm_shim_e2e::http;
use wasm_shim_engine::{
    Capture, Engine, EngineConfig, Outcome, RequestTracing, RunOptions, ServeKind, ServeLimits, ServeOptions, ServeStats,
    ServingPool, Shutdown, Stdio, Tier,
};

fn guests() -> &'static Guests {
    static G: OnceLock<Guests> = OnceLock::new();
    G.get_or_init(|| {
        guests::build().expect("building the guests");
        Guests::load().expect("loading the guests")
    })
}

/// Runs `p3-cli` with `args` (after argv[0]) and `env`: the outcome, stdout, stderr.
fn run(engine: &Engine, tier: Tier, args: &[&str], env: &[(&str, &str)], memory_limit: Option<u64>) -> (Outcome, String, String) {
    let prepared = engine.prepare_tier(guests().get("p3-cli"), "/p3-cli.wasm", None, tier).unwrap();
    assert_eq!(prepared.entry(), "wasi:cli/run@0.3");
    assert_eq!(prepared.serves(), None);
    let capture = Capture::new("");
    let opts = RunOptions {
        args: std::iter::once("p3-cli.wasm").chain(args.iter().copied()).map(String::from).collect(),
        env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        cwd: "/srv".into(),
        memory_limit,
        stdio: Stdio::Capture(capture.clone()),
        ..Default::default()
    };
    let outcome = engine.run(&prepared, &opts);
    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    (outcome, text(capture.stdout()), text(capture.stderr()))
}

#[test]
fn p3_command_prints_args_env_cwd_on_both_tiers() {
    let engine = Engine::new().unwrap();
    for tier in [Tier::Optimized, Tier::Baseline] {
        let (outcome, out, err) = run(&engine, tier, &["a b", "stderr"], &[("P3_B", "2"), ("P3_A", "1"), ("OTHER", "x")], None);
        assert_eq!(outcome, Outcome::Exited(0), "{tier}: {out} {err}");
        assert_eq!(
            out,
            "hello from wasi 0.3\nargs: p3-cli.wasm a b stderr\nenv: P3_A=1\nenv: P3_B=2\ncwd: /srv\n",
            "{tier}"
        );
        assert_eq!(err, "to stderr\n", "{tier}");
    }
}

#[test]
fn p3_command_exit_codes() {
    let engine = Engine::new().unwrap();
    // wasi:cli/exit@0.3.0 exit-with-code: the code as the guest meant it.
    for code in [0, 3, 255] {
        let (outcome, out, _) = run(&engine, Tier::Optimized, &[&format!("exit={code}")], &[], None);
        assert_eq!(outcome, Outcome::Exited(code), "{out}");
        assert_eq!(outcome.exit_code(), code);
    }
    // run returns err: 1, after the output so far.
    let (outcome, out, _) = run(&engine, Tier::Optimized, &["sleep=20", "fail"], &[], None);
    assert_eq!(outcome, Outcome::Exited(1));
    assert!(out.ends_with("slept 20\n"), "{out}");
}

#[test]
fn p3_command_memory_limit_traps_cleanly() {
    let engine = Engine::new().unwrap();
    let (outcome, out, _) = run(&engine, Tier::Optimized, &["memory=4"], &[], Some(32 << 20));
    assert_eq!(outcome, Outcome::Exited(0));
    assert!(out.ends_with("touched 4 MiB\n"), "{out}");
    let (outcome, _, _) = run(&engine, Tier::Optimized, &["memory=64"], &[], Some(32 << 20));
    assert!(matches!(outcome, Outcome::Trap { oom: true, .. }), "{outcome:?}");
    assert_eq!(outcome.exit_code(), wasm_shim_engine::EXIT_TRAP);
}

#[test]
fn p3_command_is_interrupted_by_a_signal() {
    let engine = Engine::new().unwrap();
    let prepared = engine.prepare(guests().get("p3-cli"), "/p3-cli.wasm", None).unwrap();
    let capture = Capture::new("");
    let opts = RunOptions {
        args: vec!["p3-cli.wasm".into(), "spin".into()],
        stdio: Stdio::Capture(capture.clone()),
        ..Default::default()
    };
    // Once it spins (its banner is out), the signal must stop it at once.
    let (e, c) = (engine.clone(), capture.clone());
    let stopper = std::thread::spawn(move || {
        let t = Instant::now();
        while !String::from_utf8_lossy(&c.stdout()).contains("hello from wasi 0.3") {
            assert!(t.elapsed() < Duration::from_secs(30), "never started");
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(100));
        e.interrupt(15);
        Instant::now()
    });
    let outcome = engine.run(&prepared, &opts);
    let ended = Instant::now();
    let signalled = stopper.join().unwrap();
    assert_eq!(outcome, Outcome::Interrupted(15));
    assert!(ended.duration_since(signalled) < Duration::from_secs(1), "took {:?}", ended.duration_since(signalled));
}

#[test]
fn p3_components_are_told_apart_and_named_exports_refused() {
    let bytes = guests().get("p3-http");
    assert!(wasm_shim_engine::serves_http_by_default(bytes));
    assert!(!wasm_shim_engine::serves_http_by_default(guests().get("p3-cli")));
    let engine = Engine::new().unwrap();
    let p = engine.prepare(bytes, "/p3-http.wasm", None).unwrap();
    assert_eq!((p.serves(), p.entry(), p.is_component()), (Some(ServeKind::Http), "wasi:http/handler@0.3", true));
    // A 0.3 command cannot be served; a 0.3 component's other exports cannot be called.
    let cli = engine.prepare(guests().get("p3-cli"), "/p3-cli.wasm", None).unwrap();
    let e = engine.serve_as(cli, ServeKind::Http).unwrap_err().to_string();
    assert!(e.starts_with("/p3-cli.wasm") && e.contains("wasi:http/handler@0.3.x"), "{e}");
    let e = engine.prepare(guests().get("p3-cli"), "/p3-cli.wasm", Some("wasi:cli/run@0.3.0#run")).unwrap_err().to_string();
    assert!(e.starts_with("/p3-cli.wasm") && e.contains("WASI 0.3"), "{e}");
}

struct Server {
    addr: std::net::SocketAddr,
    shutdown: Shutdown,
    thread: Option<std::thread::JoinHandle<ServeStats>>,
}

impl Server {
    fn start(limits: ServeLimits) -> Server {
        Server::start_traced(limits, None)
    }

    fn start_traced(limits: ServeLimits, tracing: Option<RequestTracing>) -> Server {
        Server::start_with(limits, tracing, false, None)
    }

    fn start_with(
        limits: ServeLimits,
        tracing: Option<RequestTracing>,
        current_thread: bool,
        in_flight: Option<&'static AtomicU64>,
    ) -> Server {
        let engine = Engine::with_config(EngineConfig {
            pooling: true,
            serving: Some(ServingPool { instances: limits.max_concurrency, memory: limits.request_memory }),
            ..Default::default()
        })
        .unwrap();
        let prepared = engine.prepare(guests().get("p3-http"), "/p3-http.wasm", None).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = Shutdown::new();
        let opts = ServeOptions {
            run: RunOptions { args: vec!["p3-http".into()], cwd: "/".into(), ..Default::default() },
            limits,
            metrics: None,
            access_log: false,
            tracing,
            current_thread,
            in_flight,
            when_idle: None,
        };
        let s = shutdown.clone();
        let thread = std::thread::spawn(move || engine.serve(prepared, listener, &opts, &s).unwrap());
        Server { addr, shutdown, thread: Some(thread) }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn get(&self, path: &str) -> http::Reply {
        http::get(&self.url(path)).unwrap()
    }

    fn stop(mut self) -> ServeStats {
        self.shutdown.trigger();
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

#[test]
fn p3_service_answers_echoes_and_streams() {
    let s = Server::start(ServeLimits::default());
    let r = s.get("/");
    assert_eq!((r.status, r.body.as_str()), (200, "hello from wasi:http 0.3\n"), "{r}");
    assert_eq!(r.header("content-type"), Some("text/plain"));
    let big = "x".repeat(300_000);
    let r = http::post(&s.url("/echo"), "text/plain", &big).unwrap();
    assert_eq!((r.status, r.body.len()), (200, big.len()), "{}", r.status);
    assert_eq!(r.body, big);
    // A body written by the guest after `handle` returned, bigger than one stream write.
    let r = s.get("/stream?n=20000");
    assert_eq!(r.status, 200);
    let lines: Vec<&str> = r.body.lines().collect();
    assert_eq!(lines.len(), 20000);
    assert_eq!((lines[0], lines[19999]), ("line 0", "line 19999"));
    assert_eq!(s.get("/sleep?ms=50").body, "slept 50\n");
    assert_eq!(s.get("/nowhere").status, 404);
    assert_eq!(s.stop().requests, 5);
}

#[test]
fn p3_service_timeout_trap_and_memory_limit() {
    let s = Server::start(ServeLimits {
        request_timeout: Duration::from_millis(300),
        request_memory: 16 << 20,
        ..Default::default()
    });
    for path in ["/spin", "/sleep?ms=5000"] {
        let t = Instant::now();
        let r = s.get(path);
        assert_eq!(r.status, 504, "{path}: {r}");
        assert!(t.elapsed() < Duration::from_secs(2), "{path}: took {:?}", t.elapsed());
        assert_eq!(s.get("/").status, 200, "after {path}");
    }
    assert_eq!(s.get("/trap").status, 500);
    assert_eq!(s.get("/").status, 200);
    assert_eq!(s.get("/memory?mb=4").body, "touched 4 MiB\n");
    assert_eq!(s.get("/memory?mb=64").status, 500);
    assert_eq!(s.get("/memory?mb=4").status, 200);
}

#[test]
fn p3_service_concurrency_cap_and_drain() {
    let s = Server::start(ServeLimits { max_concurrency: 2, max_connections: 8, ..Default::default() });
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let url = s.url("/sleep?ms=1500");
            std::thread::spawn(move || http::get(&url).unwrap())
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let r = s.get("/");
    assert_eq!(r.status, 503, "{r}");
    // The drain: the two in flight finish, then serve returns and nothing is accepted.
    let addr = s.addr;
    let t = Instant::now();
    let stats = s.stop();
    for t in slow {
        let r = t.join().unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "slept 1500\n"), "{r}");
    }
    assert!(t.elapsed() >= Duration::from_millis(500), "drain took {:?}", t.elapsed());
    assert_eq!(stats.requests, 3);
    assert!(std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err());
}

/// With one slot, requests pipelined on one connection are all served: hyper reads the next
/// one as soon as the previous body has been written, while that request's instance (and its
/// process permit) is still being dropped by its own task; the next one waits for it rather
/// than getting a 503. The pod's count of requests in flight is back to 0 after.
#[test]
fn p3_service_one_slot_serves_pipelined_requests() {
    for current_thread in [true, false] {
        let in_flight: &'static AtomicU64 = Box::leak(Box::new(AtomicU64::new(0)));
        let limits = ServeLimits { max_concurrency: 1, max_connections: 4, ..Default::default() };
        let s = Server::start_with(limits, None, current_thread, Some(in_flight));
        let mut pipelined = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n".repeat(30);
        pipelined.extend_from_slice(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
        let r = http::raw(s.addr, &pipelined, Duration::from_secs(20)).unwrap();
        assert_eq!(r.matches("HTTP/1.1 ").count(), 31, "current thread {current_thread}: {r}");
        assert_eq!(r.matches("HTTP/1.1 200").count(), 31, "current thread {current_thread}: {r}");
        assert_eq!(s.stop().requests, 31);
        assert_eq!(in_flight.load(Ordering::SeqCst), 0, "current thread {current_thread}: the pod's count");
    }
}

/// A client that goes away in the middle of a streamed body (hyper drops the body) frees the
/// request's slot: with one slot, the next request is served, and the pod's count is back to 0.
#[test]
fn p3_service_client_gone_mid_body_frees_its_slot() {
    use std::io::{Read, Write};
    let in_flight: &'static AtomicU64 = Box::leak(Box::new(AtomicU64::new(0)));
    let limits = ServeLimits { max_concurrency: 1, max_connections: 4, ..Default::default() };
    let s = Server::start_with(limits, None, true, Some(in_flight));
    for _ in 0..3 {
        let mut c = std::net::TcpStream::connect(s.addr).unwrap();
        c.write_all(b"GET /stream?n=2000000 HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
        let mut head = [0u8; 4096];
        let n = c.read(&mut head).unwrap();
        assert!(String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 200"), "{}", String::from_utf8_lossy(&head[..n]));
        drop(c);
        let t = Instant::now();
        let r = loop {
            let r = s.get("/");
            if r.status != 503 || t.elapsed() > Duration::from_secs(5) {
                break r;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(r.status, 200, "the slot of the abandoned stream: {r}");
        // That request counts until its task has ended, a moment after its response.
        let t = Instant::now();
        while in_flight.load(Ordering::SeqCst) != 0 && t.elapsed() < Duration::from_secs(2) {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(in_flight.load(Ordering::SeqCst), 0, "the pod's count");
    }
    assert!(s.stop().requests >= 6);
}

#[test]
fn p3_service_outbound_allow_list() {
    let up = http::upstream().unwrap();
    let other = http::upstream().unwrap();
    let s = Server::start(ServeLimits { allowed_outbound: vec![format!("http://127.0.0.1:{up}")], ..Default::default() });
    let r = s.get(&format!("/fetch?url=http://127.0.0.1:{up}/x"));
    assert_eq!((r.status, r.body.as_str()), (200, "status 200\nupstream says hi"), "{r}");
    let r = s.get(&format!("/fetch?url=http://127.0.0.1:{other}/x"));
    assert_eq!(r.status, 502, "{r}");
    assert!(r.body.contains("HttpRequestDenied"), "{r}");
    // Nothing is allowed by default.
    let s = Server::start(ServeLimits::default());
    let r = s.get(&format!("/fetch?url=http://127.0.0.1:{up}/x"));
    assert!(r.status == 502 && r.body.contains("HttpRequestDenied"), "{r}");
}

/// Keeps the spans it is given.
#[derive(Debug, Clone, Default)]
struct Kept(std::sync::Arc<std::sync::Mutex<Vec<opentelemetry_sdk::trace::SpanData>>>);

impl opentelemetry_sdk::trace::SpanExporter for Kept {
    async fn export(&self, batch: Vec<opentelemetry_sdk::trace::SpanData>) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.lock().unwrap().extend(batch);
        Ok(())
    }
}

#[test]
fn p3_service_request_and_outbound_spans() {
    use opentelemetry::trace::{SpanKind, TracerProvider as _};
    let (up, heads) = http::recording_upstream().unwrap();
    let kept = Kept::default();
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().with_simple_exporter(kept.clone()).build();
    let s = Server::start_traced(
        ServeLimits { allowed_outbound: vec![format!("http://127.0.0.1:{up}")], ..Default::default() },
        Some(RequestTracing::new(provider.tracer("p3"))),
    );
    let (trace, parent) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let tp = format!("00-{trace}-{parent}-01");
    let r = http::get_with(&s.url(&format!("/fetch?url=http://127.0.0.1:{up}/x")), &[("traceparent", &tp)], Duration::from_secs(10)).unwrap();
    assert_eq!(r.status, 200, "{r}");
    s.stop();
    let spans = kept.0.lock().unwrap().clone();
    let server = spans.iter().find(|s| s.span_kind == SpanKind::Server).expect("a SERVER span");
    let client = spans.iter().find(|s| s.span_kind == SpanKind::Client).expect("a CLIENT span");
    assert_eq!(server.span_context.trace_id().to_string(), trace);
    assert_eq!(server.parent_span_id.to_string(), parent);
    assert_eq!(client.parent_span_id, server.span_context.span_id());
    assert_eq!(client.span_context.trace_id().to_string(), trace);
    let head = heads.lock().unwrap().last().cloned().unwrap();
    let sent = format!("traceparent: 00-{trace}-{}-01", client.span_context.span_id());
    assert!(head.to_ascii_lowercase().contains(&sent), "{head}");
}
