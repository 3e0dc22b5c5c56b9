//! OpenTelemetry traces over OTLP/HTTP (protobuf), off unless an endpoint is configured.
//!
//! Two sources, two network namespaces, never mixed:
//! - Task spans (`create` with its child `compile`, `start`, `exit`; one trace per container)
//!   are made by the shim, which runs in the node's network namespace, and go only to the
//!   endpoint of the shim's own environment (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or
//!   `OTEL_EXPORTER_OTLP_ENDPOINT` as set for containerd, whose environment the shims inherit).
//!   Never to one a pod names: that would let a pod make the node connect where it likes.
//! - Request spans are made by a serving container's init, inside the pod's network namespace,
//!   and go to the endpoint of the container's environment, else to the shim's (handed down at
//!   Start; reachable only if the pod's network reaches it). See `engine::serve::trace`.
//!
//! Export: a bounded queue and one thread per process that batches and posts; a full queue
//! drops spans (counted, and said in the log), a request or a task never waits for the
//! exporter, and a flush at the end waits at most [`FLUSH_TIMEOUT`]. Export failures are logged
//! rate-limited (the first at once, then at most one line a minute saying how many). Nothing of
//! this exists when traces are off: no thread, no queue, one `Option` checked.
//!
//! The HTTP client is ureq without TLS: `http://` endpoints only (a collector agent on the node
//! or in the pod); an `https://` endpoint is refused with a log line, traces off.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider, Span, SpanData, SpanExporter, SpanProcessor};
use opentelemetry_sdk::Resource;

pub const ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
pub const TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
const PROTOCOL: &str = "OTEL_EXPORTER_OTLP_PROTOCOL";
const TRACES_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL";
const SDK_DISABLED: &str = "OTEL_SDK_DISABLED";
const TRACES_EXPORTER: &str = "OTEL_TRACES_EXPORTER";
pub const SERVICE_NAME: &str = "OTEL_SERVICE_NAME";

/// The service name of the task spans unless the shim's `OTEL_SERVICE_NAME` says otherwise.
pub const SHIM_SERVICE: &str = "containerd-shim-wasm-v1";

/// Spans waiting for export at most; past it, new ones are dropped.
const QUEUE: usize = 2048;
/// Spans per export request at most.
const BATCH: usize = 512;
/// How long a span waits for more to share its export request.
const DELAY: Duration = Duration::from_millis(500);
/// The longest one export request may take (connect, send, answer).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest a flush at the end (a container's exit, the shim's) waits for the exporter.
pub const FLUSH_TIMEOUT: Duration = Duration::from_millis(800);
/// At most one log line about failed exports or dropped spans per this long.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// The OTLP/HTTP traces URL an environment configures: `None` when it configures none or turns
/// traces off (`OTEL_SDK_DISABLED=true`, `OTEL_TRACES_EXPORTER=none`); an error (said in the
/// log, traces off) when what it sets cannot be used.
pub fn endpoint(get: &dyn Fn(&str) -> Option<String>) -> Result<Option<String>, String> {
    let set = |k: &str| get(k).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
    if set(SDK_DISABLED).is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Ok(None);
    }
    match set(TRACES_EXPORTER).as_deref() {
        None => {}
        Some(e) if e.split(',').any(|e| e.trim() == "otlp") => {}
        Some(e) if e.eq_ignore_ascii_case("none") => return Ok(None),
        Some(e) => return Err(format!("{TRACES_EXPORTER}={e:?}: only otlp (or none) is supported")),
    }
    let (var, url) = match (set(TRACES_ENDPOINT), set(ENDPOINT)) {
        // Used as it is.
        (Some(u), _) => (TRACES_ENDPOINT, u),
        // The base of every signal's path.
        (None, Some(u)) => (ENDPOINT, format!("{}/v1/traces", u.trim_end_matches('/'))),
        (None, None) => return Ok(None),
    };
    if let Some(p) = set(TRACES_PROTOCOL).or_else(|| set(PROTOCOL)) {
        if p != "http/protobuf" {
            return Err(format!("{var}: protocol {p:?} is not supported: traces are sent as http/protobuf (OTLP over HTTP, port 4318 by convention)"));
        }
    }
    let uri: http::Uri = url.parse().map_err(|e| format!("{var}={url:?}: {e}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => return Err(format!("{var}={url:?}: https is not supported (no TLS in this build): send to a collector agent over http")),
        _ => return Err(format!("{var}={url:?}: not an http:// URL")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("{var}={url:?}: no host"));
    }
    Ok(Some(url))
}

/// The endpoint of this process's environment (the shim's: containerd's), logging why when it
/// is set but unusable.
pub fn endpoint_of_process() -> Option<String> {
    match endpoint(&|k| std::env::var(k).ok()) {
        Ok(url) => url,
        Err(why) => {
            log::warn!("traces off: {why}");
            None
        }
    }
}

/// A running exporter: its provider (which owns the export thread) and a tracer of it.
pub struct Traces {
    provider: SdkTracerProvider,
    pub tracer: SdkTracer,
    pub url: String,
}

impl Traces {
    /// Starts exporting to `url` the spans of a tracer with `resource`; the export thread is
    /// named `thread`. An error (no thread) leaves traces off.
    pub fn start(url: &str, resource: Resource, thread: &str) -> Result<Traces, String> {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(EXPORT_TIMEOUT))
            .http_status_as_error(false)
            .max_redirects(0)
            // The endpoint configured is where spans go, whatever proxy variables say.
            .proxy(None)
            .build()
            .new_agent();
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(Client(agent))
            .with_endpoint(url)
            .with_timeout(EXPORT_TIMEOUT)
            .with_retry_policy(opentelemetry_otlp::RetryPolicy::disabled())
            .build()
            .map_err(|e| format!("{url}: {e}"))?;
        exporter.set_resource(&resource);
        let processor = Batch::start(exporter, url, thread)?;
        let provider = SdkTracerProvider::builder().with_resource(resource).with_span_processor(processor).build();
        let tracer = provider.tracer("containerd-shim-wasm-v1");
        Ok(Traces { provider, tracer, url: url.to_string() })
    }

    /// Exports what is queued, waiting at most `timeout`; then nothing more is exported.
    pub fn shutdown(&self, timeout: Duration) {
        let _ = self.provider.shutdown_with_timeout(timeout);
    }
}

/// The resource of a process's spans: `service.name` and `attributes`.
pub fn resource(service: &str, attributes: Vec<KeyValue>) -> Resource {
    Resource::builder_empty().with_service_name(service.to_string()).with_attributes(attributes).build()
}

/// ureq as the OTLP exporter's HTTP client. Blocking, which suits the export thread (the
/// exporter's future is driven there with `block_on`, nothing else runs on it).
#[derive(Debug)]
struct Client(ureq::Agent);

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for Client {
    async fn send_bytes(&self, request: http::Request<bytes::Bytes>) -> Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        let (parts, body) = request.into_parts();
        let mut response = self.0.run(http::Request::from_parts(parts, body.to_vec()))?;
        let status = response.status();
        // A collector's answer is small (a partial-success message at most).
        let body = response.body_mut().with_config().limit(64 << 10).read_to_vec()?;
        Ok(http::Response::builder().status(status).body(bytes::Bytes::from(body))?)
    }
}

enum Msg {
    Span(Box<SpanData>),
    /// Export what is queued, then say so.
    Flush(SyncSender<()>),
}

/// A batching span processor of the shim's own (the SDK's would also do, but panics if its
/// thread cannot be spawned, cannot report what it drops but through a logging system this
/// binary does not use, and waits for a stuck export at shutdown).
#[derive(Debug)]
struct Batch {
    tx: Mutex<Option<SyncSender<Msg>>>,
    dropped: Arc<AtomicU64>,
}

impl Batch {
    fn start<E: SpanExporter + 'static>(exporter: E, url: &str, thread: &str) -> Result<Batch, String> {
        let (tx, rx) = sync_channel(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let (d, url) = (dropped.clone(), url.to_string());
        std::thread::Builder::new()
            .name(thread.to_string())
            .spawn(move || export_loop(exporter, rx, &url, &d))
            .map_err(|e| format!("cannot start the export thread: {e}"))?;
        Ok(Batch { tx: Mutex::new(Some(tx)), dropped })
    }

    fn sender(&self) -> Option<SyncSender<Msg>> {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Queues a flush and waits for it until `deadline`.
    fn flush_until(&self, deadline: Instant) -> OTelSdkResult {
        let Some(tx) = self.sender() else { return Err(OTelSdkError::AlreadyShutdown) };
        let (ack, done) = sync_channel(1);
        let mut msg = Msg::Flush(ack);
        // A full queue empties as the thread exports: retry until the deadline.
        loop {
            match tx.try_send(msg) {
                Ok(()) => break,
                Err(TrySendError::Full(m)) if Instant::now() < deadline => {
                    msg = m;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => return Err(OTelSdkError::Timeout(Duration::ZERO)),
            }
        }
        done.recv_timeout(deadline.saturating_duration_since(Instant::now())).map_err(|_| OTelSdkError::Timeout(Duration::ZERO))
    }
}

impl SpanProcessor for Batch {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        let Some(tx) = self.sender() else { return };
        if let Err(TrySendError::Full(_)) = tx.try_send(Msg::Span(Box::new(span))) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.flush_until(Instant::now() + FLUSH_TIMEOUT)
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        if self.sender().is_none() {
            return Ok(());
        }
        let r = self.flush_until(Instant::now() + timeout);
        // Ends the thread once it is done (or stuck in an export that times out by itself).
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        let dropped = self.dropped.load(Ordering::Relaxed);
        if r.is_err() {
            log::warn!("traces: spans still queued after {timeout:?} at shutdown were not exported");
        }
        if dropped > 0 {
            log::warn!("traces: {dropped} spans dropped in all (export queue of {QUEUE} full)");
        }
        r
    }
}

/// Rate-limits a kind of log line: the first at once, then at most one per [`LOG_EVERY`] with
/// the count of those not said.
#[derive(Default)]
struct Said {
    last: Option<Instant>,
    unsaid: u64,
}

impl Said {
    /// Whether to log now, with how many occurrences since the last line (this one included).
    fn take(&mut self, now: Instant) -> Option<u64> {
        self.unsaid += 1;
        match self.last {
            Some(t) if now.duration_since(t) < LOG_EVERY => None,
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.unsaid))
            }
        }
    }
}

fn export_loop<E: SpanExporter>(exporter: E, rx: Receiver<Msg>, url: &str, dropped: &AtomicU64) {
    let mut batch: Vec<SpanData> = Vec::with_capacity(64);
    let mut due: Option<Instant> = None;
    let (mut failed, mut said_drops, mut failing) = (Said::default(), 0u64, false);
    let mut export = |batch: &mut Vec<SpanData>| {
        if batch.is_empty() {
            return;
        }
        let n = batch.len();
        match futures_executor::block_on(exporter.export(std::mem::take(batch))) {
            Ok(()) => {
                if failing {
                    failing = false;
                    log::info!("traces: exporting to {url} again");
                }
            }
            Err(e) => {
                failing = true;
                if let Some(times) = failed.take(Instant::now()) {
                    log::warn!("traces: export to {url} failed ({e}); {n} spans lost, {times} failed exports since the last line");
                }
            }
        }
        let d = dropped.load(Ordering::Relaxed);
        if d > said_drops {
            log::warn!("traces: {} spans dropped (export queue of {QUEUE} full)", d - said_drops);
            said_drops = d;
        }
    };
    loop {
        let msg = match due {
            // Nothing waits: sleep until a span comes (no wake-ups while idle).
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            Some(t) => rx.recv_timeout(t.saturating_duration_since(Instant::now())),
        };
        match msg {
            Ok(Msg::Span(s)) => {
                batch.push(*s);
                due.get_or_insert_with(|| Instant::now() + DELAY);
                if batch.len() >= BATCH {
                    export(&mut batch);
                    due = None;
                }
            }
            Ok(Msg::Flush(ack)) => {
                export(&mut batch);
                due = None;
                let _ = ack.send(());
            }
            Err(RecvTimeoutError::Timeout) => {
                export(&mut batch);
                due = None;
            }
            Err(RecvTimeoutError::Disconnected) => {
                export(&mut batch);
                return;
            }
        }
    }
}

/// Whether an environment turns traces off (whatever endpoint it or the node sets).
fn turned_off(get: &dyn Fn(&str) -> Option<String>) -> bool {
    let set = |k: &str| get(k).map(|v| v.trim().to_ascii_lowercase());
    set(SDK_DISABLED).as_deref() == Some("true") || set(TRACES_EXPORTER).as_deref() == Some("none")
}

/// Where a serving container's request spans go: its own environment's endpoint, else the
/// node's (`node`, the shim's, handed down at Start); `Err` when its own is set but unusable
/// (then none: the pod asked for something else than the node's). `None` when the container
/// turns traces off.
///
/// The container's own endpoint must be allowed by its outbound allow-list (`allowed`, the
/// pod's `http-allowed-outbound` annotation), or be the loopback of a network namespace of its
/// own (`own_netns`: a collector sidecar of the same pod): its environment may come from the
/// image, and spans carry what the guest decides (a response's status, the paths it serves),
/// so any other endpoint would be a way out that the guest itself does not have. (A
/// host-network container's loopback is the node's: no exception there.)
pub fn request_endpoint(env: &[(String, String)], node: Option<&str>, allowed: &[String], own_netns: bool) -> Result<Option<(String, &'static str)>, String> {
    let get = |k: &str| env.iter().rev().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    if turned_off(&get) {
        return Ok(None);
    }
    Ok(match endpoint(&get)? {
        Some(url) if !((own_netns && is_loopback(&url)) || wasm_shim_engine::allows_url(allowed, &url)) => {
            return Err(format!(
                "the container's endpoint {url} is neither allowed by {} nor on the pod's own loopback (allow the collector there)",
                wasm_shim_oci::http::ALLOWED_OUTBOUND
            ))
        }
        Some(url) => Some((url, "the container's environment")),
        None => node.map(|u| (u.to_string(), "the node's (containerd's environment)")),
    })
}

/// Whether `url` names a loopback address (`127.0.0.0/8`, `::1`, `localhost`).
fn is_loopback(url: &str) -> bool {
    let Ok(uri) = url.parse::<http::Uri>() else { return false };
    let Some(host) = uri.host() else { return false };
    let host = host.trim_matches(['[', ']']);
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The service name of a container's request spans: its `OTEL_SERVICE_NAME`, else its name in
/// the pod, else its id.
pub fn request_service(env: &[(String, String)], spec: &oci_spec::runtime::Spec, id: &str) -> String {
    let named = env.iter().rev().find(|(n, _)| n == SERVICE_NAME).map(|(_, v)| v.trim().to_string()).filter(|v| !v.is_empty());
    let container = spec.annotations().as_ref().and_then(|a| a.get(crate::logging::CONTAINER_NAME)).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
    named.or(container).unwrap_or_else(|| id.to_string())
}

/// The exporter of a serving init's request spans (`None`: traces off for it, said in the log
/// when a setting is the reason).
pub fn for_requests(env: &[(String, String)], spec: &oci_spec::runtime::Spec, handed: &crate::protocol::InitTraces, allowed: &[String]) -> Option<Traces> {
    let own_netns = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|ns| ns.iter().any(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::Network));
    let (url, whose) = match request_endpoint(env, handed.endpoint.as_deref(), allowed, own_netns) {
        Ok(found) => found?,
        Err(why) => {
            log::warn!("traces off for this container's requests: {why}");
            return None;
        }
    };
    let service = request_service(env, spec, &handed.id);
    match Traces::start(&url, resource(&service, container_attributes(&handed.id, Some(spec))), "traces") {
        Ok(t) => {
            log::info!("traces: request spans go to {url} ({whose}), service {service:?}");
            Some(t)
        }
        Err(why) => {
            log::warn!("traces off for this container's requests: {why}");
            None
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The shim's task spans

static SHIM: OnceLock<Option<Traces>> = OnceLock::new();

/// The shim's exporter, started on first use from its environment; `None`: traces off.
pub fn shim() -> Option<&'static Traces> {
    SHIM.get_or_init(|| {
        let url = endpoint_of_process()?;
        let service = shim_service(std::env::var(SERVICE_NAME).ok());
        match Traces::start(&url, resource(&service, Vec::new()), "traces") {
            Ok(t) => {
                log::info!("traces: task spans go to {url}");
                Some(t)
            }
            Err(why) => {
                log::warn!("traces off: {why}");
                None
            }
        }
    })
    .as_ref()
}

/// The task spans' service name: `OTEL_SERVICE_NAME` from containerd's environment, unless
/// unset, empty or `containerd`. containerd 2.x sets that last one in its own environment when
/// its tracing is on and no name was given, and its shims inherit it: taken as is, this shim's
/// spans would pass for containerd's. (runc's shim names itself regardless.)
fn shim_service(inherited: Option<String>) -> String {
    match inherited {
        Some(s) if !s.trim().is_empty() && s.trim() != "containerd" => s,
        _ => SHIM_SERVICE.to_string(),
    }
}

/// At the shim's end: what is queued is exported, within [`FLUSH_TIMEOUT`].
pub fn shim_shutdown() {
    if let Some(Some(t)) = SHIM.get() {
        t.shutdown(FLUSH_TIMEOUT);
    }
}

/// The attributes of a container's spans: its id and, from the CRI's annotations, its pod,
/// namespace and name in the pod.
pub fn container_attributes(id: &str, spec: Option<&oci_spec::runtime::Spec>) -> Vec<KeyValue> {
    let mut v = vec![KeyValue::new("container.id", id.to_string())];
    let empty = Default::default();
    let annotations = spec.and_then(|s| s.annotations().as_ref()).unwrap_or(&empty);
    for (key, annotation) in [
        ("k8s.pod.name", crate::logging::SANDBOX_NAME),
        ("k8s.namespace.name", crate::logging::SANDBOX_NAMESPACE),
        ("k8s.container.name", crate::logging::CONTAINER_NAME),
    ] {
        if let Some(v2) = annotations.get(annotation).map(|v| v.trim()).filter(|v| !v.is_empty()) {
            v.push(KeyValue::new(key, v2.to_string()));
        }
    }
    v
}

/// The task spans of one container: one trace, rooted at its `create` span.
pub struct TaskTrace {
    tracer: SdkTracer,
    /// The `create` span's context: the parent of the others.
    root: Context,
    attributes: Vec<KeyValue>,
}

/// The trace context of the request that asked for a task: containerd 2.x, when its own tracing
/// is on, sends W3C `traceparent` (and `tracestate`) in the ttrpc metadata of its calls to a
/// shim, as its runc shim reads them. Nothing when the shim exports no traces or there is none.
#[derive(Default)]
pub struct Caller(Option<Context>);

impl Caller {
    pub fn of(metadata: &std::collections::HashMap<String, Vec<String>>) -> Caller {
        if shim().is_none() {
            return Caller(None);
        }
        Caller::from_metadata(metadata)
    }

    fn from_metadata(metadata: &std::collections::HashMap<String, Vec<String>>) -> Caller {
        if !metadata.contains_key(TRACEPARENT) {
            return Caller(None);
        }
        use opentelemetry::propagation::TextMapPropagator as _;
        let cx = opentelemetry_sdk::propagation::TraceContextPropagator::new().extract(&Metadata(metadata));
        Caller(cx.span().span_context().is_valid().then_some(cx))
    }
}

const TRACEPARENT: &str = "traceparent";

/// ttrpc metadata as what a propagator reads (each key's first value).
struct Metadata<'a>(&'a std::collections::HashMap<String, Vec<String>>);

impl opentelemetry::propagation::Extractor for Metadata<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.first()).map(String::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

/// A container's `create` span while Create runs.
pub struct Creating {
    span: Span,
    trace: TaskTrace,
}

impl Creating {
    /// Starts the `create` span of container `id`, if the shim exports traces: in the trace of
    /// the `caller` (containerd's) when it sent one, else a new trace.
    pub fn begin(id: &str, caller: &Caller) -> Option<Creating> {
        Some(Creating::with(&shim()?.tracer, id, caller))
    }

    fn with(tracer: &SdkTracer, id: &str, caller: &Caller) -> Creating {
        let attributes = container_attributes(id, None);
        let parent = caller.0.clone().unwrap_or_default();
        let span = tracer
            .span_builder("create")
            .with_kind(SpanKind::Internal)
            .with_attributes(attributes.clone())
            .start_with_context(tracer, &parent);
        let root = Context::new().with_remote_span_context(span.span_context().clone());
        Creating { span, trace: TaskTrace { tracer: tracer.clone(), root, attributes } }
    }

    /// The spec is read: the pod's attributes join the container's.
    pub fn spec(&mut self, id: &str, spec: &oci_spec::runtime::Spec) {
        let attributes = container_attributes(id, Some(spec));
        for kv in attributes.iter().skip(1) {
            self.span.set_attribute(kv.clone());
        }
        self.trace.attributes = attributes;
    }

    /// The init loaded its code: a `compile` child span of `took` ending now.
    pub fn compiled(&self, cache: &str, tier: &str, took: Duration, file: &str, digest: Option<&str>) {
        let end = SystemTime::now();
        let mut attributes = self.trace.attributes.clone();
        attributes.push(KeyValue::new("wasm.cache", cache.to_string()));
        attributes.push(KeyValue::new("wasm.tier", tier.to_string()));
        attributes.push(KeyValue::new("wasm.file", file.to_string()));
        if let Some(d) = digest {
            attributes.push(KeyValue::new("wasm.digest", format!("sha256:{d}")));
        }
        let mut span = self
            .trace
            .tracer
            .span_builder("compile")
            .with_start_time(end.checked_sub(took).unwrap_or(end))
            .with_attributes(attributes)
            .start_with_context(&self.trace.tracer, &self.trace.root);
        span.end_with_timestamp(end);
    }

    /// Create succeeded: the span ends, the trace goes on.
    pub fn done(mut self) -> TaskTrace {
        self.span.end();
        self.trace
    }

    /// Create failed with `why`.
    pub fn failed(mut self, why: &str) {
        self.span.set_status(Status::error(why.to_string()));
        self.span.end();
    }
}

impl TaskTrace {
    fn span(&self, name: &'static str, extra: Vec<KeyValue>) -> Span {
        let mut attributes = self.attributes.clone();
        attributes.extend(extra);
        self.tracer.span_builder(name).with_attributes(attributes).start_with_context(&self.tracer, &self.root)
    }

    /// A `start` span from `since` to now, in error with `failed`.
    pub fn started(&self, since: SystemTime, failed: Option<&str>) {
        let mut span = self.tracer.span_builder("start").with_start_time(since).with_attributes(self.attributes.clone()).start_with_context(&self.tracer, &self.root);
        if let Some(why) = failed {
            span.set_status(Status::error(why.to_string()));
        }
        span.end();
    }

    /// The `exit` span: the container's exit status (`code`: containerd's, 128 + signal for a
    /// signal), the signal and whether the kernel's OOM killer or the memory limit ended it.
    pub fn exited(&self, code: u32, signal: Option<i32>, oom: bool) {
        let mut extra = vec![KeyValue::new("process.exit.code", i64::from(code))];
        if let Some(s) = signal {
            extra.push(KeyValue::new("process.exit.signal", i64::from(s)));
        }
        if oom {
            extra.push(KeyValue::new("container.oom", true));
        }
        let mut span = self.span("exit", extra);
        if code != 0 {
            span.set_status(Status::error(Cow::Owned(format!("exit status {code}"))));
        }
        span.end();
    }

    /// The trace's `traceparent` (for a log line or a test).
    #[cfg(test)]
    fn root(&self) -> opentelemetry::trace::SpanContext {
        self.root.span().span_context().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn which_endpoint() {
        assert_eq!(endpoint(&env(&[])), Ok(None));
        assert_eq!(endpoint(&env(&[(ENDPOINT, "http://collector:4318")])), Ok(Some("http://collector:4318/v1/traces".into())));
        assert_eq!(endpoint(&env(&[(ENDPOINT, "http://collector:4318/")])), Ok(Some("http://collector:4318/v1/traces".into())));
        // The traces endpoint is used as it is, and wins.
        assert_eq!(
            endpoint(&env(&[(ENDPOINT, "http://a:4318"), (TRACES_ENDPOINT, "http://b:9999/otlp/traces")])),
            Ok(Some("http://b:9999/otlp/traces".into()))
        );
        assert_eq!(endpoint(&env(&[(ENDPOINT, " ")])), Ok(None));
        assert_eq!(endpoint(&env(&[(ENDPOINT, "http://a:4318"), (PROTOCOL, "http/protobuf")])), Ok(Some("http://a:4318/v1/traces".into())));
    }

    #[test]
    fn traces_can_be_turned_off() {
        for off in [&[(SDK_DISABLED, "true")][..], &[(SDK_DISABLED, "TRUE")], &[(TRACES_EXPORTER, "none")]] {
            let mut pairs = off.to_vec();
            pairs.push((ENDPOINT, "http://a:4318"));
            assert_eq!(endpoint(&env(&pairs)), Ok(None), "{off:?}");
        }
        assert!(endpoint(&env(&[(ENDPOINT, "http://a:4318"), (SDK_DISABLED, "false")])).unwrap().is_some());
    }

    #[test]
    fn unusable_settings_are_errors_naming_the_variable() {
        for (pairs, needle) in [
            (&[(ENDPOINT, "https://a:4318")][..], "https is not supported"),
            (&[(ENDPOINT, "a:4318")], ENDPOINT),
            (&[(TRACES_ENDPOINT, "a:4318")], "not an http:// URL"),
            (&[(ENDPOINT, "http://a b")], ENDPOINT),
            (&[(TRACES_ENDPOINT, "ftp://a/")], TRACES_ENDPOINT),
            (&[(ENDPOINT, "http://a:4318"), (PROTOCOL, "grpc")], "\"grpc\" is not supported"),
            (&[(ENDPOINT, "http://a:4318"), (TRACES_EXPORTER, "zipkin")], "only otlp"),
        ] {
            let e = endpoint(&env(pairs)).unwrap_err();
            assert!(e.contains(needle), "{pairs:?}: {e}");
        }
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn request_spans_go_to_the_pods_endpoint_else_the_nodes() {
        let node_url = "http://node-agent:4318/v1/traces";
        let node = Some(node_url);
        let allowed = vec!["http://otel.pod-ns:4318".to_string(), "a".to_string(), "b".to_string()];
        // The pod's wins.
        let pod = pairs(&[(ENDPOINT, "http://otel.pod-ns:4318")]);
        assert_eq!(request_endpoint(&pod, node, &allowed, false).unwrap().unwrap().0, "http://otel.pod-ns:4318/v1/traces");
        // None of its own: the node's (the operator's, not subject to the pod's list).
        assert_eq!(request_endpoint(&pairs(&[("PORT", "80")]), node, &[], false).unwrap().unwrap().0, node_url);
        assert_eq!(request_endpoint(&[], None, &allowed, false).unwrap(), None);
        // Turned off by the pod, whatever the node says.
        assert_eq!(request_endpoint(&pairs(&[(SDK_DISABLED, "true")]), node, &allowed, false).unwrap(), None);
        assert_eq!(request_endpoint(&pairs(&[(TRACES_EXPORTER, "none")]), node, &allowed, false).unwrap(), None);
        // A bad one of the pod's: an error (then off), never the node's instead.
        assert!(request_endpoint(&pairs(&[(ENDPOINT, "https://x")]), node, &allowed, false).is_err());
        // The last of a repeated variable counts, as in the guest's environment.
        let twice = pairs(&[(ENDPOINT, "http://a:1"), (ENDPOINT, "http://b:2")]);
        assert_eq!(request_endpoint(&twice, None, &allowed, false).unwrap().unwrap().0, "http://b:2/v1/traces");
    }

    #[test]
    fn a_pods_endpoint_must_be_in_its_outbound_allow_list() {
        // The image's environment can name an endpoint; the pod's annotation decides.
        let pod = pairs(&[(ENDPOINT, "http://203.0.113.7:4318")]);
        let node = Some("http://node-agent:4318/v1/traces");
        let why = request_endpoint(&pod, node, &[], true).unwrap_err();
        assert!(why.contains("203.0.113.7") && why.contains("http-allowed-outbound"), "{why}");
        // Never the node's instead: the pod asked for another.
        assert!(request_endpoint(&pod, node, &["http://otel.pod-ns:4318".to_string()], true).is_err());
        assert!(request_endpoint(&pod, node, &["http://203.0.113.7:4318".to_string()], true).unwrap().is_some());
        assert!(request_endpoint(&pod, node, &["*".to_string()], false).unwrap().is_some());
        // A collector sidecar on the pod's own loopback needs no entry; the node's loopback
        // (a host-network container) does.
        for sidecar in ["http://127.0.0.1:4318", "http://localhost:4318", "http://[::1]:4318"] {
            let pod = pairs(&[(ENDPOINT, sidecar)]);
            assert!(request_endpoint(&pod, node, &[], true).unwrap().is_some(), "{sidecar}");
            assert!(request_endpoint(&pod, node, &[], false).is_err(), "{sidecar}");
        }
    }

    #[test]
    fn shim_service_name_is_not_containerd_s() {
        assert_eq!(shim_service(None), SHIM_SERVICE);
        assert_eq!(shim_service(Some("  ".into())), SHIM_SERVICE);
        // What containerd 2.x puts in its own environment, and so its shims'.
        assert_eq!(shim_service(Some("containerd".into())), SHIM_SERVICE);
        assert_eq!(shim_service(Some("wasm-node-a".into())), "wasm-node-a");
    }

    #[test]
    fn request_service_name() {
        let mut spec = oci_spec::runtime::Spec::default();
        assert_eq!(request_service(&[], &spec, "c1"), "c1");
        spec.set_annotations(Some([(crate::logging::CONTAINER_NAME.to_string(), "app".to_string())].into_iter().collect()));
        assert_eq!(request_service(&[], &spec, "c1"), "app");
        assert_eq!(request_service(&pairs(&[(SERVICE_NAME, "checkout")]), &spec, "c1"), "checkout");
    }

    #[test]
    fn failures_are_said_once_a_minute_with_their_count() {
        let mut s = Said::default();
        let t0 = Instant::now();
        assert_eq!(s.take(t0), Some(1));
        assert_eq!(s.take(t0 + Duration::from_secs(1)), None);
        assert_eq!(s.take(t0 + Duration::from_secs(59)), None);
        assert_eq!(s.take(t0 + Duration::from_secs(61)), Some(3));
        assert_eq!(s.take(t0 + Duration::from_secs(62)), None);
    }

    #[test]
    fn pod_attributes_from_the_cri_annotations() {
        let mut spec = oci_spec::runtime::Spec::default();
        spec.set_annotations(Some(
            [(crate::logging::SANDBOX_NAMESPACE, "shop"), (crate::logging::SANDBOX_NAME, "web-7d9"), (crate::logging::CONTAINER_NAME, "app")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ));
        let a = container_attributes("c1", Some(&spec));
        let s: Vec<String> = a.iter().map(|kv| format!("{}={}", kv.key, kv.value)).collect();
        assert_eq!(s, ["container.id=c1", "k8s.pod.name=web-7d9", "k8s.namespace.name=shop", "k8s.container.name=app"]);
        assert_eq!(container_attributes("c1", None).len(), 1);
    }

    /// The processor and the real OTLP exporter against an endpoint where nothing listens: the
    /// spans are lost, nothing blocks, and the flush at the end keeps to its bound.
    #[test]
    fn a_dead_collector_costs_a_bounded_flush() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let t = Traces::start(&format!("http://127.0.0.1:{port}/v1/traces"), resource("t", vec![]), "traces-test").unwrap();
        let began = Instant::now();
        for _ in 0..QUEUE * 2 {
            t.tracer.start("s").end();
        }
        assert!(began.elapsed() < Duration::from_secs(1), "{:?}", began.elapsed());
        let began = Instant::now();
        t.shutdown(FLUSH_TIMEOUT);
        assert!(began.elapsed() < FLUSH_TIMEOUT + Duration::from_millis(300), "{:?}", began.elapsed());
    }

    /// A collector that accepts connections and never answers: the flush at the end still keeps
    /// to its bound (the export itself times out later, on the export thread).
    #[test]
    fn a_stalled_collector_costs_a_bounded_flush() {
        let stalled = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = stalled.local_addr().unwrap().port();
        let t = Traces::start(&format!("http://127.0.0.1:{port}/v1/traces"), resource("t", vec![]), "traces-test").unwrap();
        for _ in 0..10 {
            t.tracer.start("s").end();
        }
        let began = Instant::now();
        t.shutdown(FLUSH_TIMEOUT);
        let took = began.elapsed();
        assert!(took >= FLUSH_TIMEOUT - Duration::from_millis(50) && took < FLUSH_TIMEOUT + Duration::from_millis(300), "{took:?}");
        drop(stalled);
    }

    #[derive(Debug, Clone, Default)]
    struct Kept(Arc<Mutex<Vec<SpanData>>>);
    impl SpanExporter for Kept {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            self.0.lock().unwrap().extend(batch);
            Ok(())
        }
    }

    /// The spans of one task's life (container `c1`), created for `caller`; and its trace's root.
    fn task_spans(caller: &Caller) -> (Vec<SpanData>, opentelemetry::trace::SpanContext) {
        let kept = Kept::default();
        // The SDK's default sampler, set here so that no OTEL_TRACES_SAMPLER in the test's
        // environment changes it.
        let sampler = opentelemetry_sdk::trace::Sampler::ParentBased(Box::new(opentelemetry_sdk::trace::Sampler::AlwaysOn));
        let provider = SdkTracerProvider::builder()
            .with_sampler(sampler)
            .with_span_processor(Batch::start(kept.clone(), "test", "traces-test").unwrap())
            .build();
        let mut c = Creating::with(&provider.tracer("t"), "c1", caller);
        c.spec("c1", &oci_spec::runtime::Spec::default());
        c.compiled("miss", "optimized", Duration::from_millis(30), "/hello.wasm", Some("ab"));
        let trace = c.done();
        trace.started(SystemTime::now(), None);
        trace.exited(137, Some(9), true);
        let root = trace.root();
        provider.force_flush().unwrap();
        let spans = kept.0.lock().unwrap().clone();
        (spans, root)
    }

    #[test]
    fn a_task_is_one_trace() {
        let (spans, root) = task_spans(&Caller::default());
        let names: Vec<&str> = spans.iter().map(|s| s.name.as_ref()).collect();
        assert_eq!(names, ["compile", "create", "start", "exit"]);
        for s in &spans {
            assert_eq!(s.span_context.trace_id(), root.trace_id());
            assert!(s.attributes.iter().any(|kv| kv.key.as_str() == "container.id" && kv.value.as_str() == "c1"));
            if s.name != "create" {
                assert_eq!(s.parent_span_id, root.span_id());
            }
        }
        assert_eq!(spans[1].parent_span_id, opentelemetry::trace::SpanId::INVALID, "create is the root");
        let compile = &spans[0];
        assert!(compile.end_time.duration_since(compile.start_time).unwrap() >= Duration::from_millis(30));
        assert!(matches!(spans[3].status, Status::Error { .. }));
    }

    fn metadata(traceparent: &str) -> std::collections::HashMap<String, Vec<String>> {
        [(TRACEPARENT.to_string(), vec![traceparent.to_string()]), ("containerd-namespace".to_string(), vec!["k8s.io".to_string()])].into()
    }

    #[test]
    fn a_task_joins_the_trace_containerd_sent() {
        let caller = Caller::from_metadata(&metadata("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
        let (spans, root) = task_spans(&caller);
        assert_eq!(spans.len(), 4);
        assert_eq!(format!("{}", root.trace_id()), "4bf92f3577b34da6a3ce929d0e0e4736");
        for s in &spans {
            assert_eq!(s.span_context.trace_id(), root.trace_id());
            let parent = if s.name == "create" { "00f067aa0ba902b7".to_string() } else { format!("{}", root.span_id()) };
            assert_eq!(format!("{}", s.parent_span_id), parent, "{}", s.name);
        }

        // A trace containerd does not sample: none of the task's spans either.
        let (spans, _) = task_spans(&Caller::from_metadata(&metadata("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")));
        assert!(spans.is_empty(), "{spans:?}");

        // No traceparent, or one that is not valid: a trace of the task's own.
        for md in [Default::default(), metadata("00-zz-00f067aa0ba902b7-01"), metadata("00-00000000000000000000000000000000-00f067aa0ba902b7-01")] {
            let caller = Caller::from_metadata(&md);
            assert!(caller.0.is_none());
            let (spans, root) = task_spans(&caller);
            assert_eq!(spans.len(), 4);
            assert_ne!(format!("{}", root.trace_id()), "4bf92f3577b34da6a3ce929d0e0e4736");
            assert_eq!(spans[1].parent_span_id, opentelemetry::trace::SpanId::INVALID);
        }
    }
}
