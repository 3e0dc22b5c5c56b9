//! Serving HTTP in-process, without containerd or root: the engine's `serve` with the real test
//! guests (`test/guests/http`, a `wasi:http/proxy` component, and `wagi.wasm`), a real listener
//! and a real client. Every limit is tried: the concurrency cap (503), the request timeout
//! (504), traps (500, then fine), the per-request memory cap, malformed requests (400, guest
//! untouched), keep-alive, the open-connections cap, draining on shutdown, the outbound
//! allow-list for `wasi:http` and for raw sockets, httpoxy for WAGI. The same paths under
//! containerd are in the e2e suite (`http::*`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use wasm_shim_e2e::guests::{self, Guests};
use wasm_shim_e2e::http::{self, Reply};
use wasm_shim_engine::{
    CacheResult, Engine, EngineConfig, MetricsOptions, Prepared, RunOptions, ServeKind, ServeLimits, ServeOptions, ServeStats,
    ServingPool, Shutdown, StartInfo, Tier, Upgrade,
};

fn guests() -> &'static Guests {
    static G: OnceLock<Guests> = OnceLock::new();
    G.get_or_init(|| {
        guests::build().expect("building the guests");
        Guests::load().expect("loading the guests")
    })
}

struct Server {
    addr: SocketAddr,
    shutdown: Shutdown,
    thread: Option<JoinHandle<ServeStats>>,
}

impl Server {
    fn start(guest: &str, kind: ServeKind, limits: ServeLimits) -> Server {
        let engine = serving_engine(&limits);
        let prepared = engine.prepare(guests().get(guest), guest, None).unwrap();
        let prepared = engine.serve_as(prepared, kind).unwrap();
        Server::serve(engine, prepared, guest, limits, Upgrade::new())
    }

    fn serve(engine: Engine, prepared: Prepared, guest: &str, limits: ServeLimits, upgrade: Upgrade) -> Server {
        Server::serve_metrics(engine, prepared, guest, limits, upgrade, None)
    }

    fn serve_metrics(engine: Engine, prepared: Prepared, guest: &str, limits: ServeLimits, upgrade: Upgrade, metrics: Option<MetricsOptions>) -> Server {
        let opts = ServeOptions {
            run: RunOptions {
                args: vec![guest.to_string()],
                env: vec![("GREETING".into(), "hi".into())],
                cwd: "/".into(),
                ..Default::default()
            },
            limits,
            metrics,
            access_log: false,
            tracing: None,
            current_thread: false,
            in_flight: None,
            when_idle: None,
        };
        Server::serve_with(engine, prepared, upgrade, opts)
    }

    fn serve_with(engine: Engine, prepared: Prepared, upgrade: Upgrade, opts: ServeOptions) -> Server {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = Shutdown::new();
        let s = shutdown.clone();
        let thread = std::thread::spawn(move || engine.serve_upgradable(prepared, listener, &opts, &s, &upgrade).unwrap());
        Server { addr, shutdown, thread: Some(thread) }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn get(&self, path: &str) -> Reply {
        http::get(&self.url(path)).unwrap()
    }

    /// Triggers the drain and waits for `serve` to return.
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

/// An engine sized for serving, as the shim makes it.
fn serving_engine(limits: &ServeLimits) -> Engine {
    Engine::with_config(EngineConfig {
        pooling: true,
        serving: Some(ServingPool {
            instances: limits.max_concurrency,
            memory: limits.request_memory,
        }),
        ..Default::default()
    })
    .unwrap()
}

fn proxy(limits: ServeLimits) -> Server {
    Server::start("http", ServeKind::Http, limits)
}

/// A server of `guest` on a one-thread or a multi-thread runtime, counting its requests in
/// flight in `in_flight` (the pod's count that the processes share), if given.
fn serve_on(guest: &str, kind: ServeKind, limits: ServeLimits, current_thread: bool, in_flight: Option<&'static AtomicU64>) -> Server {
    let engine = serving_engine(&limits);
    let prepared = engine.serve_as(engine.prepare(guests().get(guest), guest, None).unwrap(), kind).unwrap();
    let opts = ServeOptions {
        run: RunOptions { args: vec![guest.into()], cwd: "/".into(), ..Default::default() },
        limits,
        metrics: None,
        access_log: false,
        tracing: None,
        current_thread,
        in_flight,
        when_idle: None,
    };
    Server::serve_with(engine, prepared, Upgrade::new(), opts)
}

/// `ServeOptions::when_idle` (where the shim's init gives the malloc heap back): once when a
/// server has been quiet for a second, not again while it stays quiet, never while a request is
/// in flight, and once more after the next requests.
#[test]
fn when_idle_runs_once_per_quiet_spell() {
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    fn idle() {
        CALLS.fetch_add(1, Ordering::SeqCst);
    }
    let calls = || CALLS.load(Ordering::SeqCst);
    let wait_for = |n: usize| {
        let since = Instant::now();
        while calls() < n && since.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(calls(), n, "when_idle calls");
    };
    let limits = ServeLimits::default();
    let engine = serving_engine(&limits);
    let prepared = engine.serve_as(engine.prepare(guests().get("http"), "http", None).unwrap(), ServeKind::Http).unwrap();
    let opts = ServeOptions {
        run: RunOptions { args: vec!["http".into()], cwd: "/".into(), ..Default::default() },
        limits,
        when_idle: Some(idle),
        ..Default::default()
    };
    let server = Server::serve_with(engine, prepared, Upgrade::new(), opts);
    // Quiet from the start: once, and not again while it stays quiet.
    wait_for(1);
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(calls(), 1, "called again while the server stayed quiet");
    // A request in flight for 2.5 s, none started after it: not quiet until it ends.
    let url = server.url("/sleep?ms=2500");
    let slow = std::thread::spawn(move || http::get(&url).unwrap());
    std::thread::sleep(Duration::from_millis(2000));
    assert_eq!(calls(), 1, "called with a request in flight");
    assert_eq!(slow.join().unwrap().status, 200);
    wait_for(2);
    // A burst, then quiet again: once more.
    for _ in 0..20 {
        assert_eq!(server.get("/").status, 200);
    }
    wait_for(3);
    assert_eq!(server.stop().requests, 21);
}

#[test]
fn proxy_component_is_served_by_default() {
    assert!(wasm_shim_engine::serves_http_by_default(guests().get("http")));
    assert!(!wasm_shim_engine::serves_http_by_default(guests().get("component")));
    assert!(!wasm_shim_engine::serves_http_by_default(guests().get("hello")));
    // Prepared without asking, it is a server already.
    let engine = Engine::new().unwrap();
    let p = engine.prepare(guests().get("http"), "http", None).unwrap();
    assert_eq!(p.serves(), Some(ServeKind::Http));
    // A command cannot be served as wasi:http, a component not as WAGI: clear errors.
    let hello = engine.prepare(guests().get("hello"), "/hello.wasm", None).unwrap();
    let e = engine.serve_as(hello, ServeKind::Http).unwrap_err().to_string();
    assert!(e.contains("/hello.wasm") && e.contains("WAGI"), "{e}");
    let c = engine.prepare(guests().get("component"), "/c.wasm", None).unwrap();
    let e = engine.serve_as(c, ServeKind::Wagi).unwrap_err().to_string();
    assert!(e.contains("/c.wasm") && e.contains("component"), "{e}");
}

#[test]
fn hello_echo_headers_status() {
    let s = proxy(ServeLimits::default());
    let r = s.get("/");
    assert_eq!((r.status, r.body.as_str()), (200, "hello from wasi:http\n"), "{r}");
    let r = http::post(&s.url("/echo"), "application/json", r#"{"a":1}"#).unwrap();
    assert_eq!((r.status, r.body.as_str()), (200, r#"{"a":1}"#), "{r}");
    assert_eq!(r.header("content-type"), Some("application/json"));
    let r = http::get_with(&s.url("/headers"), &[("x-test", "abc")], Duration::from_secs(10)).unwrap();
    assert_eq!(r.status, 203, "{r}");
    assert_eq!(r.header("x-wasm"), Some("1"));
    assert!(r.body.contains("x-test: abc"), "{r}");
    assert_eq!(s.get("/status/418").status, 418);
    assert_eq!(s.get("/nowhere").status, 404);
    let stats = s.stop();
    assert_eq!(stats.requests, 5);
}

#[test]
fn keep_alive_and_malformed_requests() {
    let s = proxy(ServeLimits::default());
    let two = http::raw(
        s.addr,
        b"GET / HTTP/1.1\r\nhost: x\r\n\r\nGET /status/202 HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        Duration::from_secs(10),
    )
    .unwrap();
    assert!(two.starts_with("HTTP/1.1 200"), "{two}");
    assert!(two.contains("hello from wasi:http") && two.contains("HTTP/1.1 202"), "{two}");
    for garbage in [&b"NOT HTTP AT ALL\r\n\r\n"[..], b"GET / HTTP/1.1\r\nbad header\r\n\r\n", b"GET /\x01 HTTP/1.1\r\n\r\n"] {
        let r = http::raw(s.addr, garbage, Duration::from_secs(5)).unwrap();
        assert!(r.starts_with("HTTP/1.1 400"), "{garbage:?} -> {r:?}");
    }
    let stats = s.stop();
    // Two connections for the good requests, three for the bad; the guest saw two requests.
    assert_eq!((stats.connections, stats.requests), (4, 2), "{stats:?}");
}

#[test]
fn concurrency_cap_answers_503() {
    let s = proxy(ServeLimits { max_concurrency: 2, max_connections: 8, ..Default::default() });
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let url = s.url("/sleep?ms=1500");
            std::thread::spawn(move || http::get(&url).unwrap())
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let r = s.get("/");
    assert_eq!(r.status, 503, "{r}");
    assert_eq!(r.header("retry-after"), Some("1"));
    for t in slow {
        let r = t.join().unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "slept 1500\n"), "{r}");
    }
    assert_eq!(s.get("/").status, 200);
}

/// An instance is torn down after its response went out (`proxy::handle`, `wagi::handle`), so
/// its process's permit is held a moment past the response; a request that comes at once (here
/// pipelined on the same connection, which hyper reads right after writing the previous
/// response) still gets it, on a one-thread server and a multi-thread one, for both kinds of
/// serving. The pod's count of requests in flight (shared by the processes) is back to 0 after.
#[test]
fn one_slot_serves_pipelined_requests_one_after_another() {
    for (guest, kind) in [("http", ServeKind::Http), ("wagi", ServeKind::Wagi)] {
        for current_thread in [true, false] {
            let in_flight: &'static AtomicU64 = Box::leak(Box::new(AtomicU64::new(0)));
            let limits = ServeLimits { max_concurrency: 1, max_connections: 4, ..Default::default() };
            let s = serve_on(guest, kind, limits, current_thread, Some(in_flight));
            let mut pipelined = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n".repeat(30);
            pipelined.extend_from_slice(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
            let r = http::raw(s.addr, &pipelined, Duration::from_secs(20)).unwrap();
            assert_eq!(r.matches("HTTP/1.1 ").count(), 31, "{guest}, current thread {current_thread}: {r}");
            assert_eq!(r.matches("HTTP/1.1 200").count(), 31, "{guest}, current thread {current_thread}: {r}");
            let stats = s.stop();
            assert_eq!(stats.requests, 31, "{stats:?}");
            assert_eq!(in_flight.load(Ordering::SeqCst), 0, "{guest}, current thread {current_thread}: the pod's count");
        }
    }
}

/// A wasi:http 0.2 handler that goes on after its response is out still counts as in flight
/// until it returns: for the pod's cap (shared by the processes, here a counter of the test's)
/// and the next request, which waits for its slot and then gets a 503.
#[test]
fn a_handler_running_after_its_response_is_still_in_flight() {
    for current_thread in [true, false] {
        let in_flight: &'static AtomicU64 = Box::leak(Box::new(AtomicU64::new(0)));
        let limits = ServeLimits { max_concurrency: 1, max_connections: 4, ..Default::default() };
        let s = serve_on("http", ServeKind::Http, limits, current_thread, Some(in_flight));
        let r = s.get("/after?ms=1500");
        assert_eq!((r.status, r.body.as_str()), (200, "answered\n"), "{r}");
        assert_eq!(in_flight.load(Ordering::SeqCst), 1, "current thread {current_thread}: the handler still runs");
        assert_eq!(s.get("/").status, 503, "current thread {current_thread}");
        let t = Instant::now();
        while in_flight.load(Ordering::SeqCst) != 0 && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(in_flight.load(Ordering::SeqCst), 0, "current thread {current_thread}: the handler returned");
        assert_eq!(s.get("/").status, 200);
        s.stop();
    }
}

/// The same after a 504: the timed-out guest's task is aborted at its next yield, and a request
/// pipelined behind the 504 waits for its slot rather than getting a 503.
#[test]
fn a_request_pipelined_behind_a_504_is_served() {
    for current_thread in [true, false] {
        let limits = ServeLimits { max_concurrency: 1, max_connections: 4, request_timeout: Duration::from_millis(300), ..Default::default() };
        let s = serve_on("http", ServeKind::Http, limits, current_thread, None);
        let pipelined = b"GET /spin HTTP/1.1\r\nhost: x\r\n\r\nGET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";
        let r = http::raw(s.addr, pipelined, Duration::from_secs(10)).unwrap();
        let statuses: Vec<&str> = r.lines().filter(|l| l.starts_with("HTTP/1.1 ")).collect();
        assert_eq!(statuses, ["HTTP/1.1 504 Gateway Timeout", "HTTP/1.1 200 OK"], "current thread {current_thread}: {r}");
        s.stop();
    }
}

#[test]
fn timeout_answers_504_and_the_next_request_is_fine() {
    let s = proxy(ServeLimits { request_timeout: Duration::from_millis(300), ..Default::default() });
    for path in ["/spin", "/sleep?ms=5000"] {
        let t = Instant::now();
        let r = s.get(path);
        assert_eq!(r.status, 504, "{path}: {r}");
        assert!(t.elapsed() < Duration::from_secs(2), "{path}: took {:?}", t.elapsed());
    }
    assert_eq!(s.get("/").status, 200);
}

/// A server started on baseline code (nothing optimized cached yet) switches to the optimized
/// build handed to it, between requests; the upgraded code's deadlines and yields still work
/// (its engine's epoch ticks too), and code prepared for another kind of serving is ignored.
#[test]
fn baseline_server_switches_to_optimized_code() {
    let limits = ServeLimits { request_timeout: Duration::from_millis(300), ..Default::default() };
    let engine = serving_engine(&limits);
    let bytes = guests().get("http");
    let prepare = |tier| engine.serve_as(engine.prepare_tier(bytes, "http", None, tier).unwrap(), ServeKind::Http).unwrap();
    let baseline = prepare(Tier::Baseline);
    assert_eq!(baseline.tier(), Tier::Baseline);
    let optimized = prepare(Tier::Optimized);
    let upgrade = Upgrade::new();
    let s = Server::serve(engine.clone(), baseline, "http", limits, upgrade.clone());
    for _ in 0..3 {
        assert_eq!(s.get("/").status, 200);
    }
    assert!(upgrade.offer(optimized));
    assert!(!upgrade.offer(prepare(Tier::Optimized)), "a second offer is refused");
    for _ in 0..3 {
        assert_eq!(s.get("/").body, "hello from wasi:http\n");
    }
    // Spinning guests on the new code are stopped at their deadline: if they never yielded,
    // two of them would hold both worker threads and the last request would hang.
    for _ in 0..2 {
        let t = Instant::now();
        assert_eq!(s.get("/spin").status, 504);
        assert!(t.elapsed() < Duration::from_secs(2), "took {:?}", t.elapsed());
    }
    assert_eq!(s.get("/").status, 200);
    let stats = s.stop();
    assert_eq!((stats.requests, stats.upgraded_requests), (9, 6), "{stats:?}");

    // WAGI code offered to a wasi:http server is not used.
    let limits = ServeLimits::default();
    let engine = serving_engine(&limits);
    let upgrade = Upgrade::new();
    let s = Server::serve(engine.clone(), engine.serve_as(engine.prepare(bytes, "http", None).unwrap(), ServeKind::Http).unwrap(), "http", limits, upgrade.clone());
    let wagi = engine.serve_as(engine.prepare(guests().get("wagi"), "wagi", None).unwrap(), ServeKind::Wagi).unwrap();
    assert!(upgrade.offer(wagi));
    assert_eq!(s.get("/").body, "hello from wasi:http\n");
    assert_eq!(s.stop().upgraded_requests, 0);
}

#[test]
fn trap_is_500_and_the_next_request_is_fine() {
    let s = proxy(ServeLimits::default());
    assert_eq!(s.get("/trap").status, 500);
    assert_eq!(s.get("/").status, 200);
    assert_eq!(s.get("/trap").status, 500);
    assert_eq!(s.get("/").body, "hello from wasi:http\n");
}

#[test]
fn per_request_memory_limit() {
    let s = proxy(ServeLimits { request_memory: 16 << 20, ..Default::default() });
    let r = s.get("/memory?mb=4");
    assert_eq!((r.status, r.body.as_str()), (200, "allocated 4\n"), "{r}");
    assert_eq!(s.get("/memory?mb=64").status, 500);
    assert_eq!(s.get("/memory?mb=4").status, 200);
}

#[test]
fn shutdown_drains_requests_in_flight() {
    let s = proxy(ServeLimits::default());
    let in_flight: Vec<_> = (0..3)
        .map(|_| {
            let url = s.url("/sleep?ms=1000");
            std::thread::spawn(move || http::get(&url))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let addr = s.addr;
    let t = Instant::now();
    let stats = s.stop();
    let took = t.elapsed();
    for t in in_flight {
        let r = t.join().unwrap().unwrap();
        assert_eq!(r.status, 200, "{r}");
    }
    assert_eq!(stats.requests, 3);
    assert!(took >= Duration::from_millis(500) && took < Duration::from_secs(5), "drain took {took:?}");
    assert!(std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(), "still accepting after the drain");
}

#[test]
fn outbound_allow_list() {
    let up = http::upstream().unwrap();
    let other = http::upstream().unwrap();
    let s = proxy(ServeLimits {
        allowed_outbound: vec![format!("http://127.0.0.1:{up}")],
        ..Default::default()
    });
    let r = s.get(&format!("/fetch?url=http://127.0.0.1:{up}/x"));
    assert_eq!((r.status, r.body.as_str()), (200, "upstream 200\nupstream says hi"), "{r}");
    let r = s.get(&format!("/fetch?url=http://127.0.0.1:{other}/x"));
    assert_eq!(r.status, 502, "{r}");
    assert!(r.body.contains("HttpRequestDenied"), "{r}");
    // Nothing is allowed by default.
    let s = proxy(ServeLimits::default());
    let r = s.get(&format!("/fetch?url=http://127.0.0.1:{up}/x"));
    assert!(r.status == 502 && r.body.contains("HttpRequestDenied"), "{r}");
}

fn wagi(limits: ServeLimits) -> Server {
    Server::start("wagi", ServeKind::Wagi, limits)
}

#[test]
fn wagi_request_and_response() {
    let s = wagi(ServeLimits::default());
    let r = http::get_with(&s.url("/some/path?x=1&y=2"), &[("x-test", "t1")], Duration::from_secs(10)).unwrap();
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.header("x-wagi"), Some("1"));
    assert_eq!(r.body, "method=GET path=/some/path query=x=1&y=2 x-test=t1 length=0 body=\n");
    let r = http::post(&s.url("/form?a=b"), "text/plain", "posted body").unwrap();
    assert_eq!(r.body, "method=POST path=/form query=a=b x-test= length=11 body=posted body\n", "{r}");
    let r = s.get("/missing");
    assert_eq!((r.status, r.body.as_str()), (404, "not here\n"));
    let r = http::raw(s.addr, b"GET /redirect HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n", Duration::from_secs(5)).unwrap();
    assert!(r.starts_with("HTTP/1.1 302") && r.to_ascii_lowercase().contains("location: /elsewhere"), "{r}");
    assert_eq!(s.get("/garbage").status, 500);
    assert_eq!(s.get("/fail").status, 500);
    assert_eq!(s.get("/").status, 200);
}

#[test]
fn wagi_body_limit() {
    let s = wagi(ServeLimits { max_body: 10, ..Default::default() });
    let r = http::post(&s.url("/"), "text/plain", "0123456789abcdef").unwrap();
    assert_eq!(r.status, 413, "{r}");
    let r = http::post(&s.url("/"), "text/plain", "short").unwrap();
    assert_eq!(r.status, 200, "{r}");
}

/// httpoxy (CVE-2016-5385): a `Proxy:` request header must not become `HTTP_PROXY` in a WAGI
/// program's environment, where HTTP libraries would take it as their outbound proxy. Other
/// headers still arrive, and the container's own environment is there.
#[test]
fn wagi_drops_the_proxy_header() {
    let s = wagi(ServeLimits::default());
    let r = http::raw(
        s.addr,
        b"GET /env HTTP/1.1\r\nhost: x\r\nProxy: http://evil.example:8888\r\nx-test: t2\r\nconnection: close\r\n\r\n",
        Duration::from_secs(10),
    )
    .unwrap();
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    let body = &r[r.find("\r\n\r\n").unwrap() + 4..];
    let lines: Vec<&str> = body.lines().collect();
    assert!(lines.contains(&"HTTP_X_TEST=t2") && lines.contains(&"GREETING=hi"), "{body}");
    assert!(!lines.iter().any(|l| l.starts_with("HTTP_PROXY=") || l.contains("evil")), "{body}");
}

/// A loopback line server for the sockets tests: answers each connection's first line with
/// `native got: <line>`. Returns its port and how many connections it accepted.
fn line_server() -> (u16, Arc<AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            count.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                let mut line = String::new();
                if BufReader::new(&stream).read_line(&mut line).is_ok() {
                    let _ = (&stream).write_all(format!("native got: {}\n", line.trim_end()).as_bytes());
                }
            });
        }
    });
    (port, accepted)
}

/// `http-allowed-outbound` governs raw sockets too: with the default (empty) list a served
/// component cannot even create one; with an entry it reaches that address and port and no
/// other (denied before any packet leaves: the other server sees no connection); a name entry
/// allows what the name resolves to; and a listener is never allowed, even with `*`.
#[test]
fn sockets_follow_the_outbound_allow_list() {
    let (port, accepted) = line_server();
    let (other, other_accepted) = line_server();

    let s = proxy(ServeLimits::default());
    let r = s.get(&format!("/connect?addr=127.0.0.1:{port}"));
    assert_eq!((r.status, r.body.as_str()), (502, "create: access-denied\n"), "{r}");
    let r = s.get(&format!("/connect?addr=localhost:{port}"));
    assert_eq!((r.status, r.body.as_str()), (502, "resolve: permanent-resolver-failure\n"), "{r}");
    assert_eq!(accepted.load(Ordering::SeqCst), 0);

    let s = proxy(ServeLimits { allowed_outbound: vec![format!("127.0.0.1:{port}")], ..Default::default() });
    let r = s.get(&format!("/connect?addr=127.0.0.1:{port}"));
    assert_eq!((r.status, r.body.as_str()), (200, "reply: native got: hello\n"), "{r}");
    let r = s.get(&format!("/connect?addr=127.0.0.1:{other}"));
    assert_eq!((r.status, r.body.as_str()), (502, format!("connect 127.0.0.1:{other}: access-denied\n").as_str()), "{r}");
    assert_eq!((accepted.load(Ordering::SeqCst), other_accepted.load(Ordering::SeqCst)), (1, 0));
    // wasi:http checks the same list: the other port is denied there too.
    let r = s.get(&format!("/fetch?url=http://127.0.0.1:{other}/x"));
    assert!(r.status == 502 && r.body.contains("HttpRequestDenied"), "{r}");

    let s = proxy(ServeLimits { allowed_outbound: vec![format!("localhost:{port}")], ..Default::default() });
    let r = s.get(&format!("/connect?addr=localhost:{port}"));
    assert_eq!((r.status, r.body.as_str()), (200, "reply: native got: hello\n"), "{r}");
    let r = s.get(&format!("/connect?addr=127.0.0.1:{other}"));
    assert_eq!(r.status, 502, "{r}");
    assert_eq!((accepted.load(Ordering::SeqCst), other_accepted.load(Ordering::SeqCst)), (2, 0));

    let s = proxy(ServeLimits { allowed_outbound: vec!["*".into()], ..Default::default() });
    let r = s.get("/listen");
    assert_eq!((r.status, r.body.as_str()), (502, "listen: access-denied\n"), "{r}");
    let r = s.get(&format!("/connect?addr=127.0.0.1:{other}"));
    assert_eq!((r.status, r.body.as_str()), (200, "reply: native got: hello\n"), "{r}");
}

/// Sends a request on `c` and reads the response head (the routes used have no body).
fn request_head(c: &mut TcpStream, path: &str) -> std::io::Result<String> {
    c.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())?;
    read_head(c)
}

fn read_head(c: &mut TcpStream) -> std::io::Result<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match c.read(&mut byte)? {
            0 => break,
            _ => head.push(byte[0]),
        }
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// With `max_connections` 2, two idle keep-alive clients hold both slots: a third client's
/// connection is not accepted (its request waits in the backlog, unanswered), and is served as
/// soon as one of the two closes; the other one is still served.
#[test]
fn connection_cap_holds_the_next_client_until_one_closes() {
    let s = proxy(ServeLimits { max_connections: 2, ..Default::default() });
    let connect = || {
        let c = TcpStream::connect_timeout(&s.addr, Duration::from_secs(5)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c
    };
    let (mut first, mut second) = (connect(), connect());
    for c in [&mut first, &mut second] {
        let head = request_head(c, "/status/204").unwrap();
        assert!(head.starts_with("HTTP/1.1 204"), "{head}");
    }
    // The kernel completes the handshake; the server does not accept.
    let mut third = connect();
    third.set_read_timeout(Some(Duration::from_millis(700))).unwrap();
    let waited = request_head(&mut third, "/status/204");
    assert!(
        matches!(&waited, Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)),
        "the third connection was served while two were open: {waited:?}"
    );
    drop(first);
    third.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = read_head(&mut third).unwrap();
    assert!(head.starts_with("HTTP/1.1 204"), "after a slot was freed: {head:?}");
    let head = request_head(&mut second, "/status/204").unwrap();
    assert!(head.starts_with("HTTP/1.1 204"), "{head}");
    drop((second, third));
    let stats = s.stop();
    assert_eq!((stats.connections, stats.requests), (3, 4), "{stats:?}");
}

/// A request head over [`wasm_shim_engine::MAX_HEAD`] is refused with 431 before it is
/// held whole; one just under it is served, and so is the next request on a new connection.
#[test]
fn an_oversized_request_head_is_refused() {
    let s = proxy(ServeLimits::default());
    let head = |n: usize| format!("GET /status/204 HTTP/1.1\r\nhost: x\r\nx-big: {}\r\nconnection: close\r\n\r\n", "a".repeat(n));
    let limit = wasm_shim_engine::MAX_HEAD;
    let r = http::raw(s.addr, head(limit - 1024).as_bytes(), Duration::from_secs(5)).unwrap();
    assert!(r.starts_with("HTTP/1.1 204"), "under the bound: {r:?}");
    let r = http::raw(s.addr, head(limit * 4).as_bytes(), Duration::from_secs(5)).unwrap();
    assert!(r.starts_with("HTTP/1.1 431"), "over the bound: {r:?}");
    let r = http::raw(s.addr, head(10).as_bytes(), Duration::from_secs(5)).unwrap();
    assert!(r.starts_with("HTTP/1.1 204"), "after: {r:?}");
    s.stop();
}

/// A metrics endpoint on a listener of its own, and what a scrape shows.
fn with_metrics(tier: Tier) -> (MetricsOptions, SocketAddr) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let start = StartInfo {
        cache: CacheResult::Hit,
        tier,
        compile: Duration::from_millis(3),
        create: Some(Duration::from_millis(40)),
        start_requested: Instant::now(),
    };
    (MetricsOptions { listener: Some(Arc::new(listener)), start, cells: None }, addr)
}

fn scrape(addr: SocketAddr) -> String {
    let r = http::get(&format!("http://{addr}/metrics")).unwrap();
    assert_eq!(r.status, 200, "{r}");
    assert!(r.header("content-type").unwrap().starts_with("application/openmetrics-text"), "{r:?}");
    r.body
}

/// The value of the sample `series` (name and labels as written) in an exposition.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// What the server counts is what its clients saw: statuses by class, 503 and 504, requests in
/// flight while a guest sleeps, the linear memory of each request's instance (the memory route
/// grows it), and the tier of the code, which flips when the optimized build is handed over.
#[test]
fn metrics_follow_the_server() {
    let limits = ServeLimits { max_concurrency: 1, max_connections: 4, request_timeout: Duration::from_millis(500), ..Default::default() };
    let engine = serving_engine(&limits);
    let bytes = guests().get("http");
    let prepare = |tier| engine.serve_as(engine.prepare_tier(bytes, "http", None, tier).unwrap(), ServeKind::Http).unwrap();
    let upgrade = Upgrade::new();
    let (opts, maddr) = with_metrics(Tier::Baseline);
    let s = Server::serve_metrics(engine.clone(), prepare(Tier::Baseline), "http", limits, upgrade.clone(), Some(opts));
    let text = scrape(maddr);
    assert_eq!(sample(&text, "wasm_shim_http_requests_total{class=\"2xx\"}"), Some(0.0), "{text}");
    assert_eq!(sample(&text, "wasm_shim_code_tier{tier=\"baseline\"}"), Some(1.0), "{text}");
    assert_eq!(sample(&text, "wasm_shim_start_compile_cache{result=\"hit\"}"), Some(1.0), "{text}");
    assert!(sample(&text, "wasm_shim_start_duration_seconds").is_some_and(|d| d < 10.0), "{text}");

    assert_eq!(s.get("/").status, 200);
    assert_eq!(s.get("/status/404").status, 404);
    assert_eq!(s.get("/memory?mb=8").status, 200);
    let slow = {
        let url = s.url("/sleep?ms=400");
        std::thread::spawn(move || http::get(&url).unwrap())
    };
    std::thread::sleep(Duration::from_millis(150));
    let during = scrape(maddr);
    assert_eq!(s.get("/").status, 503);
    assert_eq!(slow.join().unwrap().status, 200);
    assert_eq!(sample(&during, "wasm_shim_http_requests_in_flight"), Some(1.0), "{during}");
    assert_eq!(s.get("/spin").status, 504);
    // The timed-out guest's task ends at its next epoch yield, and gives its slot back.
    std::thread::sleep(Duration::from_millis(100));

    let text = scrape(maddr);
    assert_eq!(sample(&text, "wasm_shim_http_requests_total{class=\"2xx\"}"), Some(3.0), "{text}");
    assert_eq!(sample(&text, "wasm_shim_http_requests_total{class=\"4xx\"}"), Some(1.0), "{text}");
    assert_eq!(sample(&text, "wasm_shim_http_requests_total{class=\"5xx\"}"), Some(2.0), "{text}");
    assert_eq!(sample(&text, "wasm_shim_http_overloaded_total"), Some(1.0), "{text}");
    assert_eq!(sample(&text, "wasm_shim_http_timeouts_total"), Some(1.0), "{text}");
    assert_eq!(sample(&text, "wasm_shim_http_requests_in_flight"), Some(0.0), "{text}");
    assert_eq!(sample(&text, "wasm_shim_http_request_duration_seconds_count"), Some(6.0), "{text}");
    // Five instances ran (the 503 got none); the memory route's grew past 8 MiB.
    assert_eq!(sample(&text, "wasm_shim_http_instance_memory_bytes_count"), Some(5.0), "{text}");
    assert_eq!(sample(&text, "wasm_shim_http_instance_memory_bytes_bucket{le=\"4194304.0\"}"), Some(4.0), "{text}");
    // Open connections, idle ones included: three more while they are open, as many as before
    // once they close.
    let open_now = || sample(&scrape(maddr), "wasm_shim_http_connections_open").unwrap();
    let until = |want: f64| {
        let deadline = Instant::now() + Duration::from_secs(3);
        while open_now() != want {
            assert!(Instant::now() < deadline, "wanted {want} connections open: {}", scrape(maddr));
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let before = open_now();
    let idle: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(s.addr).unwrap()).collect();
    until(before + 3.0);
    drop(idle);
    until(before);

    assert!(upgrade.offer(prepare(Tier::Optimized)));
    let text = scrape(maddr);
    assert_eq!(sample(&text, "wasm_shim_code_tier{tier=\"baseline\"}"), Some(0.0), "{text}");
    assert_eq!(sample(&text, "wasm_shim_code_tier{tier=\"optimized\"}"), Some(1.0), "{text}");
    assert_eq!(sample(&text, "wasm_shim_start_tier{tier=\"baseline\"}"), Some(1.0), "{text}");
    s.stop();
    // The endpoint closes with the server.
    assert!(TcpStream::connect(maddr).is_err(), "metrics port still open");
}

/// The endpoint is not a second app: other paths and methods are refused, an oversized request
/// head is refused without being read whole, and past its connection cap a scraper waits until
/// a connection closes.
#[test]
fn metrics_endpoint_is_bounded() {
    let limits = ServeLimits::default();
    let engine = serving_engine(&limits);
    let prepared = engine.serve_as(engine.prepare(guests().get("http"), "http", None).unwrap(), ServeKind::Http).unwrap();
    let (opts, maddr) = with_metrics(Tier::Optimized);
    let s = Server::serve_metrics(engine, prepared, "http", limits, Upgrade::new(), Some(opts));
    assert_eq!(http::get(&format!("http://{maddr}/")).unwrap().status, 404);
    assert_eq!(http::post(&format!("http://{maddr}/metrics"), "text/plain", "x").unwrap().status, 405);
    let huge = format!("GET /metrics HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n", "a".repeat(64 << 10));
    let r = http::raw(maddr, huge.as_bytes(), Duration::from_secs(5)).unwrap();
    assert!(r.starts_with("HTTP/1.1 431"), "{r:?}");

    // Four idle connections take every slot: a fifth scraper is not answered until one closes.
    let idle: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(maddr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut waiting = TcpStream::connect(maddr).unwrap();
    waiting.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").unwrap();
    waiting.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let mut buf = [0u8; 64];
    assert!(waiting.read(&mut buf).is_err(), "answered past the connection cap");
    drop(idle);
    waiting.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut reply = String::new();
    waiting.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200") && reply.contains("# EOF"), "{reply:?}");
    // The app's own port never serves metrics.
    assert_eq!(s.get("/metrics").status, 404);
    s.stop();
}

/// A server of the http guest whose instances serve up to `n` requests each.
fn reusing(n: u32, limits: ServeLimits) -> Server {
    proxy(ServeLimits { instance_reuse: n, ..limits })
}

/// What `/count` (or another counting route) says: the requests its instance has been handed.
fn served(s: &Server, path: &str) -> u32 {
    let r = s.get(path);
    assert_eq!(r.status, 200, "{path}: {r}");
    r.body.trim().strip_prefix("served ").and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("{path}: {r}"))
}

/// Without reuse every request meets a fresh instance: the guest's global counter is always 1.
#[test]
fn without_reuse_every_request_gets_a_fresh_instance() {
    let s = proxy(ServeLimits::default());
    let counts: Vec<u32> = (0..5).map(|_| served(&s, "/count")).collect();
    assert_eq!(counts, [1, 1, 1, 1, 1]);
}

/// A freed instance's slot is reset before the next request uses it (its first 64 KiB cleared,
/// the rest given back): every request meets a fresh instance, also after requests that left
/// pages dirty all over the memory, past what a slot keeps resident, and grew it past its
/// initial size, one request at a time so the next lands in the slot just freed.
#[test]
fn a_slot_is_fresh_after_requests_that_dirtied_it_all_over() {
    let s = proxy(ServeLimits::default());
    for round in 0..20 {
        // 1..3 MiB left behind, never freed, the counter bumped.
        let path = format!("/leak?mb={}", 1 + round % 3);
        assert_eq!(served(&s, &path), 1, "{path} in round {round}");
        assert_eq!(served(&s, "/count"), 1, "round {round}");
        let r = s.get("/memory?mb=2");
        assert_eq!(r.status, 200, "{r}");
    }
}

/// With reuse 3 one instance serves three requests, its state carrying over, then is retired
/// and the next request meets a fresh one; the metrics count the reuses and the retirements.
#[test]
fn reuse_serves_n_requests_per_instance() {
    let limits = ServeLimits { instance_reuse: 3, max_concurrency: 2, ..Default::default() };
    let (opts, maddr) = with_metrics(Tier::Optimized);
    let engine = serving_engine(&limits);
    let prepared = engine.serve_as(engine.prepare(guests().get("http"), "http", None).unwrap(), ServeKind::Http).unwrap();
    let s = Server::serve_metrics(engine, prepared, "http", limits, Upgrade::new(), Some(opts));
    let counts: Vec<u32> = (0..10).map(|_| served(&s, "/count")).collect();
    assert_eq!(counts, [1, 2, 3, 1, 2, 3, 1, 2, 3, 1]);
    // Other routes count too: it is the same instance.
    assert_eq!(s.get("/").status, 200);
    assert_eq!(served(&s, "/count"), 3);
    let text = scrape(maddr);
    assert_eq!(sample(&text, "wasm_shim_http_instance_reuses_total"), Some(8.0), "{text}");
    assert_eq!(sample(&text, "wasm_shim_http_instances_retired_total{reason=\"served\"}"), Some(4.0), "{text}");
    assert_eq!(sample(&text, "wasm_shim_http_instances_retired_total{reason=\"trap\"}"), Some(0.0), "{text}");
    // One instance memory observation per retired instance, not per request.
    assert_eq!(sample(&text, "wasm_shim_http_instance_memory_bytes_count"), Some(4.0), "{text}");
    assert_eq!(s.stop().requests, 12);
}

/// Requests in flight at once each get an instance of their own (an instance is never entered
/// twice); afterwards each of them is idle and reused, so no count passes the limit.
#[test]
fn reuse_keeps_one_instance_per_concurrent_request() {
    let s = reusing(1000, ServeLimits { max_concurrency: 4, ..Default::default() });
    let url = s.url("/sleep?ms=300");
    let slow: Vec<_> = (0..4).map(|_| { let u = url.clone(); std::thread::spawn(move || http::get(&u).unwrap()) }).collect();
    for h in slow {
        assert_eq!(h.join().unwrap().status, 200);
    }
    // Four idle instances, each has served once; the most recently used is taken first.
    let counts: Vec<u32> = (0..6).map(|_| served(&s, "/count")).collect();
    assert_eq!(counts, [2, 3, 4, 5, 6, 7], "sequential requests reuse one instance");
    s.stop();
}

/// A trap retires the instance: the next request meets a fresh one.
#[test]
fn reuse_trap_retires_the_instance() {
    let s = reusing(100, ServeLimits { max_concurrency: 1, ..Default::default() });
    assert_eq!(served(&s, "/count"), 1);
    assert_eq!(served(&s, "/count"), 2);
    assert_eq!(s.get("/trap").status, 500);
    assert_eq!(served(&s, "/count"), 1);
    assert_eq!(served(&s, "/count"), 2);
}

/// A request that passes its deadline (504) retires the instance, a spinning one or one
/// waiting in a host call.
#[test]
fn reuse_timeout_retires_the_instance() {
    let s = reusing(100, ServeLimits { max_concurrency: 1, request_timeout: Duration::from_millis(300), ..Default::default() });
    for path in ["/spin", "/sleep?ms=5000"] {
        let before = served(&s, "/count");
        assert_eq!(served(&s, "/count"), before + 1, "before {path}");
        assert_eq!(s.get(path).status, 504, "{path}");
        // The aborted task releases the slot (max_concurrency 1) soon after the 504.
        let t = Instant::now();
        let r = loop {
            let r = s.get("/count");
            if r.status != 503 || t.elapsed() > Duration::from_secs(2) {
                break r;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        assert_eq!((r.status, r.body.as_str()), (200, "served 1\n"), "after {path}");
    }
}

/// Memory a reused instance keeps grows from request to request, bounded by the same cap as a
/// fresh instance's: the request that crosses it is a 500 and retires the instance.
#[test]
fn reuse_memory_cap_bounds_the_instance_across_requests() {
    let s = reusing(1000, ServeLimits { max_concurrency: 1, request_memory: 16 << 20, ..Default::default() });
    let mut last = 0;
    let mut failed = false;
    for i in 1..=20 {
        let r = s.get("/leak?mb=2");
        if r.status == 500 {
            failed = true;
            break;
        }
        assert_eq!((r.status, r.body.as_str()), (200, format!("served {i}\n").as_str()), "{r}");
        last = i;
    }
    // 2 MiB more each time: the cap (16 MiB) is crossed within 8 requests, not 20.
    assert!(failed && (2..8).contains(&last), "leaked {last} times without hitting the cap");
    assert_eq!(served(&s, "/count"), 1, "the instance that hit the cap is retired");
}

/// Hostile or sloppy guests: one that keeps a request (its body unread) past its handler, and
/// one that drops its response body unfinished, are not reused.
#[test]
fn reuse_retires_an_instance_that_keeps_a_request_or_breaks_a_body() {
    let s = reusing(100, ServeLimits { max_concurrency: 1, ..Default::default() });
    assert_eq!(served(&s, "/count"), 1);
    assert_eq!(served(&s, "/keep"), 2);
    assert_eq!(served(&s, "/count"), 1, "an instance keeping a request is retired");
    assert_eq!(served(&s, "/count"), 2);
    // The client sees a broken response (an error or a short body), never a clean 200.
    if let Ok(r) = http::get(&s.url("/abort-body")) {
        assert_ne!(r.body, "part of a body", "{r}");
    }
    assert_eq!(served(&s, "/count"), 1, "an instance whose body failed is retired");
}

/// The drain with reuse: requests in flight finish, the idle instances are dropped, `serve`
/// returns.
#[test]
fn reuse_shutdown_drains() {
    let s = reusing(10, ServeLimits::default());
    assert_eq!(served(&s, "/count"), 1);
    let url = s.url("/sleep?ms=500");
    let slow = std::thread::spawn(move || http::get(&url).unwrap());
    std::thread::sleep(Duration::from_millis(150));
    let t = Instant::now();
    let stats = s.stop();
    assert_eq!(slow.join().unwrap().body, "slept 500\n");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(stats.requests, 2);
}

/// A WAGI module cannot be reused: `serve` refuses it, naming the setting.
#[test]
fn reuse_refuses_wagi() {
    let limits = ServeLimits { instance_reuse: 2, ..Default::default() };
    let engine = serving_engine(&limits);
    let prepared = engine.serve_as(engine.prepare(guests().get("wagi"), "/wagi.wasm", None).unwrap(), ServeKind::Wagi).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let opts = ServeOptions { limits, ..Default::default() };
    let e = engine.serve(prepared, listener, &opts, &Shutdown::new()).unwrap_err().to_string();
    assert!(e.contains("/wagi.wasm") && e.contains("instance reuse=2") && e.contains("WAGI"), "{e}");
}
