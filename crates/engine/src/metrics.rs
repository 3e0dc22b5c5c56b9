//! Prometheus metrics of a served workload (`wasm.containerd.io/metrics-port`): what the server
//! counts, and the endpoint that shows it, `GET /metrics` in the OpenMetrics text format
//! (`prometheus-client`'s encoder).
//!
//! Cost: without the annotation there is no `Metrics` at all (one `Option` test per request).
//! With it, a request costs a clock read and a few relaxed atomic adds: counters and histogram
//! buckets are plain atomics (`prometheus-client`'s own histogram takes a lock per observation),
//! and what can be read off the server's state (requests in flight, open connections, the tier
//! of the code) is read at scrape time, not kept up per request.
//!
//! Threat model: the endpoint listens in the pod's network namespace, like the app; anyone who
//! reaches the app's port may reach it. It answers `GET` (and `HEAD`) of `/metrics` only, reads
//! at most hyper's smallest buffer of request head, never a body, keeps at most
//! [`MAX_CONNECTIONS`] connections (the next wait in the listen backlog) and drops a client that
//! sends no request for [`HEADER_TIMEOUT`]. No label value comes from the guest or a request:
//! every series is fixed when the server starts.

use std::convert::Infallible;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use tokio::sync::{watch, Semaphore};

use crate::tier::Tier;

/// Scrapers served at once; more wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 4;
/// How long a scraper may take to send a request's head (and stay idle between keep-alive
/// requests).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The content type of the OpenMetrics text format.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How the compile cache answered when the container was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheResult {
    /// Compiled code was found and mapped.
    Hit,
    /// Nothing usable was cached: the code was compiled for this start (by the shim's helper, or
    /// in the container).
    Miss,
    /// No cache (`WASM_SHIM_CACHE_DIR=off`, or it could not be opened).
    Off,
}

impl CacheResult {
    const ALL: [CacheResult; 3] = [CacheResult::Hit, CacheResult::Miss, CacheResult::Off];
    fn label(self) -> &'static str {
        match self {
            CacheResult::Hit => "hit",
            CacheResult::Miss => "miss",
            CacheResult::Off => "off",
        }
    }
}

fn tier_label(t: Tier) -> &'static str {
    match t {
        Tier::Baseline => "baseline",
        Tier::Optimized => "optimized",
    }
}

/// What the container's start cost, as far as the init and the shim know it.
#[derive(Debug, Clone)]
pub struct StartInfo {
    pub cache: CacheResult,
    /// The tier of the code the server started on.
    pub tier: Tier,
    /// Time Create spent getting compiled code (looking in the cache, waiting for the shim's
    /// compile helper, or compiling).
    pub compile: Duration,
    /// Create as the shim measured it: from containerd's request to the init's Ready.
    pub create: Option<Duration>,
    /// When the init was told to start; the start duration runs from here until the server
    /// accepts connections.
    pub start_requested: Instant,
}

/// Where and what to serve as metrics: the caller binds the listener (in Create, like the
/// server's own) and says how the container started.
#[derive(Debug, Clone)]
pub struct MetricsOptions {
    /// `None`: count, but serve no endpoint (one of several processes serving the same
    /// workload, whose counters another process exposes: see `cells`).
    pub listener: Option<Arc<std::net::TcpListener>>,
    pub start: StartInfo,
    /// Where the counters live: `None`, in this server; else in these [`CELLS`] atomics, which
    /// the caller shares with the other processes serving the same workload (memory mapped
    /// shared before they were forked), so that one endpoint shows what all of them did.
    pub cells: Option<&'static [AtomicU64]>,
}

/// A histogram of fixed buckets kept in atomics: a bound's count at `at + i`, the `+Inf` bucket
/// after them, then the sum. Values are integers in the histogram's unit (nanoseconds, bytes);
/// divided by `per_unit` they are in the base unit of the exposition.
pub(crate) struct Histogram {
    /// Upper bounds, ascending, in the histogram's integer unit; `+Inf` is implied.
    bounds: &'static [u64],
    at: usize,
    per_unit: f64,
}

impl Histogram {
    const fn new(bounds: &'static [u64], at: usize, per_unit: f64) -> Self {
        Histogram { bounds, at, per_unit }
    }

    /// The cells it takes.
    const fn len(bounds: &[u64]) -> usize {
        bounds.len() + 2
    }

    fn observe(&self, cells: &[AtomicU64], v: u64) {
        let i = self.bounds.iter().position(|b| v <= *b).unwrap_or(self.bounds.len());
        cells[self.at + i].fetch_add(1, Relaxed);
        cells[self.at + self.bounds.len() + 1].fetch_add(v, Relaxed);
    }

    /// (sum, count, per-bucket counts) as the encoder takes them; the count is the buckets'
    /// total, so that it always equals the `+Inf` bucket.
    fn snapshot(&self, cells: &[AtomicU64]) -> (f64, u64, Vec<(f64, u64)>) {
        let n = self.bounds.len();
        let buckets: Vec<(f64, u64)> = self
            .bounds
            .iter()
            .map(|b| *b as f64 / self.per_unit)
            .chain(std::iter::once(f64::INFINITY))
            .zip(cells[self.at..=self.at + n].iter().map(|c| c.load(Relaxed)))
            .collect();
        let count = buckets.iter().map(|(_, n)| n).sum();
        (cells[self.at + n + 1].load(Relaxed) as f64 / self.per_unit, count, buckets)
    }
}

const MS: u64 = 1_000_000;
/// Request latency bounds, in nanoseconds: 0.5 ms to 30 s.
const LATENCY_BOUNDS: &[u64] = &[
    MS / 2, MS, 5 * MS / 2, 5 * MS, 10 * MS, 25 * MS, 50 * MS, 100 * MS, 250 * MS, 500 * MS,
    1000 * MS, 2500 * MS, 5000 * MS, 10_000 * MS, 30_000 * MS,
];
const MI: u64 = 1 << 20;
/// Linear memory bounds, in bytes: 64 KiB (one wasm page) to 4 GiB.
const MEMORY_BOUNDS: &[u64] = &[
    64 << 10, 256 << 10, MI, 2 * MI, 4 * MI, 8 * MI, 16 * MI, 32 * MI, 64 * MI, 128 * MI, 256 * MI,
    512 * MI, 1024 * MI, 4096 * MI,
];

/// Status classes, the label values of `wasm_shim_http_requests_total`: a fixed set, whatever
/// status a guest sets (hyper accepts 100-999; 600 and up are `other`).
const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];

fn class_index(status: u16) -> usize {
    match status {
        100..=599 => usize::from(status / 100 - 1),
        _ => 5,
    }
}

/// Why an instance kept for reuse (`ServeLimits::instance_reuse` > 1) was retired: the label
/// values of `wasm_shim_http_instances_retired_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retired {
    /// It served as many requests as it may.
    Served,
    /// Its handler trapped or failed.
    Trap,
    /// It hit the memory cap (`http-request-memory`).
    Memory,
    /// A request passed its deadline (504), or it ran past it writing the body.
    Timeout,
    /// The response it gave was unusable: set as an error, never set, or a body that failed.
    Body,
    /// Its handler returned still holding a piece of the request or the response.
    KeptRequest,
}

impl Retired {
    const ALL: [Retired; 6] =
        [Retired::Served, Retired::Trap, Retired::Memory, Retired::Timeout, Retired::Body, Retired::KeptRequest];
    fn label(self) -> &'static str {
        match self {
            Retired::Served => "served",
            Retired::Trap => "trap",
            Retired::Memory => "memory",
            Retired::Timeout => "timeout",
            Retired::Body => "body",
            Retired::KeptRequest => "kept_request",
        }
    }
}

// Where each counter is among the cells.
const CLASS_AT: usize = 0;
const LATENCY_AT: usize = CLASS_AT + CLASSES.len();
const MEMORY_AT: usize = LATENCY_AT + Histogram::len(LATENCY_BOUNDS);
const OVERLOADED: usize = MEMORY_AT + Histogram::len(MEMORY_BOUNDS);
const TIMEOUTS: usize = OVERLOADED + 1;
const CONNECTION_WAITS: usize = TIMEOUTS + 1;
/// Requests served by an instance that had served one before.
const REUSES: usize = CONNECTION_WAITS + 1;
/// Reused instances retired, by `Retired` (in `Retired::ALL` order).
const RETIRED_AT: usize = REUSES + 1;
/// Requests holding a concurrency slot, and client connections open: gauges, up and down.
const IN_FLIGHT: usize = RETIRED_AT + Retired::ALL.len();
const CONNECTIONS: usize = IN_FLIGHT + 1;
/// The atomics a server's counters take (see [`MetricsOptions::cells`]).
pub const CELLS: usize = CONNECTIONS + 1;

const LATENCY: Histogram = Histogram::new(LATENCY_BOUNDS, LATENCY_AT, 1e9);
const MEMORY: Histogram = Histogram::new(MEMORY_BOUNDS, MEMORY_AT, 1.0);

/// Where a server's counters live.
enum Cells {
    Own(Box<[AtomicU64]>),
    Shared(&'static [AtomicU64]),
}

/// The counters of one server (or of every process serving one workload). Shared by every
/// request; all atomics.
pub struct Metrics {
    cells: Cells,
    start: StartInfo,
    /// From Start to accepting connections, set once.
    started_in: OnceLock<Duration>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").field("start", &self.start).finish_non_exhaustive()
    }
}

impl Metrics {
    pub fn new(start: StartInfo) -> Metrics {
        Metrics { cells: Cells::Own((0..CELLS).map(|_| AtomicU64::new(0)).collect()), start, started_in: OnceLock::new() }
    }

    /// Counters kept in `cells`, at least [`CELLS`] of them (else this server's own).
    pub fn in_cells(start: StartInfo, cells: &'static [AtomicU64]) -> Metrics {
        if cells.len() < CELLS {
            return Metrics::new(start);
        }
        Metrics { cells: Cells::Shared(cells), start, started_in: OnceLock::new() }
    }

    fn cells(&self) -> &[AtomicU64] {
        match &self.cells {
            Cells::Own(c) => c,
            Cells::Shared(c) => c,
        }
    }

    fn add(&self, at: usize) {
        self.cells()[at].fetch_add(1, Relaxed);
    }

    fn get(&self, at: usize) -> u64 {
        self.cells()[at].load(Relaxed)
    }

    /// A request answered with `status` after `took` (until the response head).
    pub(crate) fn request(&self, status: u16, took: Duration) {
        self.add(CLASS_AT + class_index(status));
        LATENCY.observe(self.cells(), u64::try_from(took.as_nanos()).unwrap_or(u64::MAX));
    }

    /// The linear memory a request's instance ended with (its peak: memories do not shrink).
    pub(crate) fn instance_memory(&self, bytes: u64) {
        MEMORY.observe(self.cells(), bytes);
    }

    pub(crate) fn overloaded(&self) {
        self.add(OVERLOADED);
    }

    pub(crate) fn timed_out(&self) {
        self.add(TIMEOUTS);
    }

    pub(crate) fn connection_cap_reached(&self) {
        self.add(CONNECTION_WAITS);
    }

    /// A request is served by an instance that served one before.
    pub(crate) fn reused(&self) {
        self.add(REUSES);
    }

    /// An instance kept for reuse is retired.
    pub(crate) fn retired(&self, why: Retired) {
        let i = Retired::ALL.iter().position(|r| *r == why).unwrap_or(0);
        self.add(RETIRED_AT + i);
    }

    /// A request took a concurrency slot; `left` when it gives it back.
    pub(crate) fn entered(&self) {
        self.add(IN_FLIGHT);
    }

    pub(crate) fn left(&self) {
        self.down(IN_FLIGHT);
    }

    /// A gauge down by one, never below zero.
    fn down(&self, at: usize) {
        let _ = self.cells()[at].fetch_update(Relaxed, Relaxed, |v| v.checked_sub(1));
    }

    /// A client connection was accepted; `closed` when it ends.
    pub(crate) fn opened(&self) {
        self.add(CONNECTIONS);
    }

    pub(crate) fn closed(&self) {
        self.down(CONNECTIONS);
    }

    /// The server accepts connections from now on.
    pub(crate) fn accepting(&self) {
        let _ = self.started_in.set(self.start.start_requested.elapsed());
    }
}

/// What is read off the running server at scrape time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Live {
    pub(crate) max_concurrency: u64,
    pub(crate) tier: Option<Tier>,
}

/// The registry's one collector: the counters and the live values, encoded on each scrape.
struct Exposition {
    metrics: Arc<Metrics>,
    live: Box<dyn Fn() -> Live + Send + Sync>,
}

impl fmt::Debug for Exposition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Exposition").field("metrics", &self.metrics).finish_non_exhaustive()
    }
}

fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> fmt::Result {
    enc.encode_descriptor(name, help, None, MetricType::Counter)?
        .encode_counter::<NoLabelSet, _, u64>(&v, None)
}

fn gauge(enc: &mut DescriptorEncoder, name: &str, help: &str, unit: Option<&Unit>, v: f64) -> fmt::Result {
    enc.encode_descriptor(name, help, unit, MetricType::Gauge)?.encode_gauge(&v)
}

/// A gauge with one label, 1 for `on` and 0 for the other values: every series always exists.
fn one_of(enc: &mut DescriptorEncoder, name: &str, help: &str, label: &str, values: &[&str], on: Option<&str>) -> fmt::Result {
    let mut e = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for v in values {
        let labels = [(label, *v)];
        e.encode_family(&labels)?.encode_gauge(&i64::from(on == Some(*v)))?;
    }
    Ok(())
}

fn histogram(enc: &mut DescriptorEncoder, name: &str, help: &str, unit: &Unit, h: &Histogram, cells: &[AtomicU64]) -> fmt::Result {
    let (sum, count, buckets) = h.snapshot(cells);
    enc.encode_descriptor(name, help, Some(unit), MetricType::Histogram)?
        .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
}

impl Collector for Exposition {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let m = &self.metrics;
        let live = (self.live)();
        {
            let mut e = enc.encode_descriptor(
                "wasm_shim_http_requests",
                "Requests answered, by status class (the shim's own 503, 504, 500 and 413 included).",
                None,
                MetricType::Counter,
            )?;
            for (i, class) in CLASSES.iter().enumerate() {
                let labels = [("class", *class)];
                e.encode_family(&labels)?.encode_counter::<NoLabelSet, _, u64>(&m.get(CLASS_AT + i), None)?;
            }
        }
        histogram(&mut enc, "wasm_shim_http_request_duration", "Time from a request's arrival to its response head.", &Unit::Seconds, &LATENCY, m.cells())?;
        gauge(&mut enc, "wasm_shim_http_requests_in_flight", "Requests holding a concurrency slot (a guest instance running).", None, m.get(IN_FLIGHT) as f64)?;
        gauge(&mut enc, "wasm_shim_http_max_concurrency", "The concurrency cap (wasm.containerd.io/http-max-concurrency).", None, live.max_concurrency as f64)?;
        counter(&mut enc, "wasm_shim_http_overloaded", "Requests answered 503 because http-max-concurrency requests were in flight.", m.get(OVERLOADED))?;
        counter(&mut enc, "wasm_shim_http_timeouts", "Requests answered 504 because http-request-timeout passed.", m.get(TIMEOUTS))?;
        gauge(&mut enc, "wasm_shim_http_connections_open", "Client connections open, idle keep-alive ones included.", None, m.get(CONNECTIONS) as f64)?;
        counter(
            &mut enc,
            "wasm_shim_http_connection_cap_reached",
            "Times the server stopped accepting because http-max-connections were open (clients waited in the backlog).",
            m.get(CONNECTION_WAITS),
        )?;
        histogram(&mut enc, "wasm_shim_http_instance_memory", "Linear memory each instance ended with (its peak): one per request, or one per reused instance when retired.", &Unit::Bytes, &MEMORY, m.cells())?;
        counter(&mut enc, "wasm_shim_http_instance_reuses", "Requests served by an instance that had served one before (http-instance-reuse).", m.get(REUSES))?;
        {
            let mut e = enc.encode_descriptor(
                "wasm_shim_http_instances_retired",
                "Reused instances retired, by reason (http-instance-reuse above 1).",
                None,
                MetricType::Counter,
            )?;
            for (i, why) in Retired::ALL.iter().enumerate() {
                let labels = [("reason", why.label())];
                e.encode_family(&labels)?.encode_counter::<NoLabelSet, _, u64>(&m.get(RETIRED_AT + i), None)?;
            }
        }
        let tiers = ["baseline", "optimized"];
        one_of(&mut enc, "wasm_shim_code_tier", "Compiled code new requests get: 1 for the tier in use.", "tier", &tiers, live.tier.map(tier_label))?;
        let s = &m.start;
        one_of(&mut enc, "wasm_shim_start_tier", "Compiled code the server started on: 1 for its tier.", "tier", &tiers, Some(tier_label(s.tier)))?;
        let results = CacheResult::ALL.map(CacheResult::label);
        one_of(&mut enc, "wasm_shim_start_compile_cache", "How the compile cache answered at Create: 1 for the result.", "result", &results, Some(s.cache.label()))?;
        gauge(&mut enc, "wasm_shim_start_compile", "Time Create spent getting compiled code (cache lookup, compile helper or compile).", Some(&Unit::Seconds), s.compile.as_secs_f64())?;
        if let Some(d) = s.create {
            gauge(&mut enc, "wasm_shim_create_duration", "Create as the shim measured it: containerd's request to the container ready.", Some(&Unit::Seconds), d.as_secs_f64())?;
        }
        if let Some(d) = m.started_in.get() {
            gauge(&mut enc, "wasm_shim_start_duration", "Start: from the shim's Start to the server accepting connections.", Some(&Unit::Seconds), d.as_secs_f64())?;
        }
        Ok(())
    }
}

/// The exposition of `metrics`, with `live` read at each scrape.
pub(crate) fn registry(metrics: Arc<Metrics>, live: impl Fn() -> Live + Send + Sync + 'static) -> Registry {
    let mut r = Registry::default();
    r.register_collector(Box::new(Exposition { metrics, live: Box::new(live) }));
    r
}

/// The OpenMetrics text of `registry`.
pub(crate) fn encode(registry: &Registry) -> Result<String, fmt::Error> {
    let mut out = String::with_capacity(4096);
    prometheus_client::encoding::text::encode(&mut out, registry)?;
    Ok(out)
}

type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>;

fn reply(status: u16, content_type: &'static str, body: String) -> hyper::Response<Body> {
    let mut r = hyper::Response::new(Full::new(Bytes::from(body)).boxed_unsync());
    *r.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(content_type));
    r
}

/// One request to the endpoint: `GET /metrics` (or `HEAD`), nothing else.
fn answer(registry: &Registry, method: &http::Method, path: &str) -> hyper::Response<Body> {
    const TEXT: &str = "text/plain; charset=utf-8";
    if path != "/metrics" {
        return reply(404, TEXT, "not found: metrics are at /metrics\n".into());
    }
    if method != http::Method::GET && method != http::Method::HEAD {
        let mut r = reply(405, TEXT, "method not allowed\n".into());
        r.headers_mut().insert(http::header::ALLOW, http::HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match encode(registry) {
        Ok(text) => reply(200, CONTENT_TYPE, text),
        Err(_) => reply(500, TEXT, "cannot encode the metrics\n".into()),
    }
}

/// Serves the endpoint on `listener` until `stop` says so. Runs on the server's tokio runtime.
pub(crate) async fn serve(listener: tokio::net::TcpListener, registry: Arc<Registry>, mut stop: watch::Receiver<bool>) {
    let open = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let slot = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return,
            slot = open.clone().acquire_owned() => match slot {
                Ok(s) => s,
                Err(_) => return,
            },
        };
        let accepted = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of fds, or a connection reset before accept: keep serving.
                log::debug!("metrics: accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let registry = registry.clone();
        let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let r = answer(&registry, req.method(), req.uri().path());
            async move { Ok::<_, Infallible>(r) }
        });
        let conn = http1::Builder::new()
            .keep_alive(true)
            .max_buf_size(8192)
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT)
            .serve_connection(TokioIo::new(stream), service);
        tokio::spawn(async move {
            let _ = conn.await;
            drop(slot);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start() -> StartInfo {
        StartInfo {
            cache: CacheResult::Miss,
            tier: Tier::Baseline,
            compile: Duration::from_millis(1500),
            create: Some(Duration::from_millis(2250)),
            start_requested: Instant::now(),
        }
    }

    /// The value of the sample line `series` (name and labels as written).
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
            .and_then(|v| v.parse().ok())
    }

    #[test]
    fn status_classes_are_a_fixed_set() {
        assert_eq!(class_index(200), 1);
        assert_eq!(class_index(204), 1);
        assert_eq!(class_index(301), 2);
        assert_eq!(class_index(404), 3);
        assert_eq!(class_index(503), 4);
        assert_eq!(class_index(101), 0);
        assert_eq!(class_index(600), 5);
        assert_eq!(class_index(999), 5);
    }

    #[test]
    fn histogram_buckets_are_upper_bounds_and_count_is_their_total() {
        let cells: Vec<AtomicU64> = (0..6).map(|_| AtomicU64::new(0)).collect();
        let h = Histogram::new(&[10, 100], 1, 1.0);
        for v in [0, 10, 11, 100, 101, u64::MAX / 4] {
            h.observe(&cells, v);
        }
        assert_eq!((cells[0].load(Relaxed), cells[5].load(Relaxed)), (0, 0), "only its own cells");
        let (sum, count, buckets) = h.snapshot(&cells);
        assert_eq!(count, 6);
        assert_eq!(buckets, vec![(10.0, 2), (100.0, 2), (f64::INFINITY, 2)]);
        assert_eq!(sum, (222 + u64::MAX / 4) as f64);
    }

    #[test]
    fn exposition_is_openmetrics_with_every_series() {
        let m = Arc::new(Metrics::new(start()));
        m.request(200, Duration::from_millis(3));
        m.request(200, Duration::from_micros(200));
        m.request(404, Duration::from_millis(40));
        m.request(503, Duration::from_micros(10));
        m.overloaded();
        m.request(504, Duration::from_secs(31));
        m.timed_out();
        m.instance_memory(1 << 20);
        m.instance_memory(17 << 20);
        m.connection_cap_reached();
        m.reused();
        m.reused();
        m.retired(Retired::Timeout);
        for _ in 0..4 {
            m.entered();
        }
        m.left();
        for _ in 0..5 {
            m.opened();
        }
        let live = Live { max_concurrency: 8, tier: Some(Tier::Optimized) };
        let text = encode(&registry(m.clone(), move || live)).unwrap();

        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(text.contains("# TYPE wasm_shim_http_requests counter\n"), "{text}");
        assert_eq!(sample(&text, "wasm_shim_http_requests_total{class=\"2xx\"}"), Some(2.0), "{text}");
        assert_eq!(sample(&text, "wasm_shim_http_requests_total{class=\"4xx\"}"), Some(1.0));
        assert_eq!(sample(&text, "wasm_shim_http_requests_total{class=\"5xx\"}"), Some(2.0));
        assert_eq!(sample(&text, "wasm_shim_http_requests_total{class=\"3xx\"}"), Some(0.0));
        assert_eq!(sample(&text, "wasm_shim_http_overloaded_total"), Some(1.0));
        assert_eq!(sample(&text, "wasm_shim_http_timeouts_total"), Some(1.0));
        assert_eq!(sample(&text, "wasm_shim_http_connection_cap_reached_total"), Some(1.0));
        assert_eq!(sample(&text, "wasm_shim_http_requests_in_flight"), Some(3.0));
        assert_eq!(sample(&text, "wasm_shim_http_max_concurrency"), Some(8.0));
        assert_eq!(sample(&text, "wasm_shim_http_connections_open"), Some(5.0));
        // Latency in seconds, cumulative buckets; the 31 s request only in +Inf.
        assert!(text.contains("# UNIT wasm_shim_http_request_duration_seconds seconds\n"), "{text}");
        assert_eq!(sample(&text, "wasm_shim_http_request_duration_seconds_count"), Some(5.0));
        assert_eq!(sample(&text, "wasm_shim_http_request_duration_seconds_bucket{le=\"0.0005\"}"), Some(2.0), "{text}");
        assert_eq!(sample(&text, "wasm_shim_http_request_duration_seconds_bucket{le=\"0.005\"}"), Some(3.0));
        assert_eq!(sample(&text, "wasm_shim_http_request_duration_seconds_bucket{le=\"30.0\"}"), Some(4.0), "{text}");
        assert_eq!(sample(&text, "wasm_shim_http_request_duration_seconds_bucket{le=\"+Inf\"}"), Some(5.0));
        let sum = sample(&text, "wasm_shim_http_request_duration_seconds_sum").unwrap();
        assert!((sum - 31.04321).abs() < 1e-6, "{sum}");
        assert_eq!(sample(&text, "wasm_shim_http_instance_memory_bytes_bucket{le=\"1048576.0\"}"), Some(1.0), "{text}");
        assert_eq!(sample(&text, "wasm_shim_http_instance_memory_bytes_bucket{le=\"33554432.0\"}"), Some(2.0));
        assert_eq!(sample(&text, "wasm_shim_http_instance_memory_bytes_sum"), Some((18u64 << 20) as f64));
        assert_eq!(sample(&text, "wasm_shim_http_instance_reuses_total"), Some(2.0), "{text}");
        assert_eq!(sample(&text, "wasm_shim_http_instances_retired_total{reason=\"timeout\"}"), Some(1.0), "{text}");
        assert_eq!(sample(&text, "wasm_shim_http_instances_retired_total{reason=\"served\"}"), Some(0.0));
        assert_eq!(sample(&text, "wasm_shim_http_instances_retired_total{reason=\"kept_request\"}"), Some(0.0));
        // The tier in use flipped; the start's stays.
        assert_eq!(sample(&text, "wasm_shim_code_tier{tier=\"optimized\"}"), Some(1.0), "{text}");
        assert_eq!(sample(&text, "wasm_shim_code_tier{tier=\"baseline\"}"), Some(0.0));
        assert_eq!(sample(&text, "wasm_shim_start_tier{tier=\"baseline\"}"), Some(1.0));
        assert_eq!(sample(&text, "wasm_shim_start_compile_cache{result=\"miss\"}"), Some(1.0));
        assert_eq!(sample(&text, "wasm_shim_start_compile_cache{result=\"hit\"}"), Some(0.0));
        assert_eq!(sample(&text, "wasm_shim_start_compile_cache{result=\"off\"}"), Some(0.0));
        assert_eq!(sample(&text, "wasm_shim_start_compile_seconds"), Some(1.5));
        assert_eq!(sample(&text, "wasm_shim_create_duration_seconds"), Some(2.25));
        // Not accepting yet: no start duration to show.
        assert_eq!(sample(&text, "wasm_shim_start_duration_seconds"), None);
        m.accepting();
        let text = encode(&registry(m, move || live)).unwrap();
        assert!(sample(&text, "wasm_shim_start_duration_seconds").is_some_and(|s| (0.0..5.0).contains(&s)), "{text}");
    }

    #[test]
    fn servers_counting_in_the_same_cells_show_as_one() {
        let cells: &'static [AtomicU64] = Box::leak((0..CELLS).map(|_| AtomicU64::new(0)).collect());
        let (a, b) = (Arc::new(Metrics::in_cells(start(), cells)), Metrics::in_cells(start(), cells));
        a.request(200, Duration::from_millis(1));
        b.request(200, Duration::from_millis(1));
        b.request(500, Duration::from_millis(1));
        a.entered();
        b.entered();
        b.opened();
        b.retired(Retired::Served);
        let text = encode(&registry(a, Live::default)).unwrap();
        assert_eq!(sample(&text, "wasm_shim_http_requests_total{class=\"2xx\"}"), Some(2.0), "{text}");
        assert_eq!(sample(&text, "wasm_shim_http_requests_total{class=\"5xx\"}"), Some(1.0));
        assert_eq!(sample(&text, "wasm_shim_http_request_duration_seconds_count"), Some(3.0));
        assert_eq!(sample(&text, "wasm_shim_http_requests_in_flight"), Some(2.0));
        assert_eq!(sample(&text, "wasm_shim_http_connections_open"), Some(1.0));
        assert_eq!(sample(&text, "wasm_shim_http_instances_retired_total{reason=\"served\"}"), Some(1.0));
        // Too few cells: counted apart rather than out of bounds.
        let few: &'static [AtomicU64] = Box::leak((0..3).map(|_| AtomicU64::new(0)).collect());
        Metrics::in_cells(start(), few).request(200, Duration::from_millis(1));
        assert!(few.iter().all(|c| c.load(Relaxed) == 0));
    }

    #[test]
    fn only_get_or_head_of_metrics_is_answered() {
        let r = registry(Arc::new(Metrics::new(start())), Live::default);
        let ok = answer(&r, &http::Method::GET, "/metrics");
        assert_eq!(ok.status(), 200);
        assert_eq!(ok.headers()[http::header::CONTENT_TYPE], CONTENT_TYPE);
        assert_eq!(answer(&r, &http::Method::HEAD, "/metrics").status(), 200);
        assert_eq!(answer(&r, &http::Method::POST, "/metrics").status(), 405);
        assert_eq!(answer(&r, &http::Method::GET, "/").status(), 404);
        assert_eq!(answer(&r, &http::Method::GET, "/metrics/../x").status(), 404);
    }
}
