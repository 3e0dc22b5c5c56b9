//! Serving HTTP/1.1 (keep-alive) on a listener the caller bound: one tokio runtime, one hyper
//! connection task per client, and per request a fresh instance of the prepared workload
//! (`proxy` for `wasi:http` 0.2 components, `service` for `wasi:http` 0.3 ones, `wagi` for
//! CGI-style modules, with `cgi`), each handed what requests share (`request`); or, with
//! `ServeLimits::instance_reuse` above 1, an idle instance of the 0.2 component that served
//! earlier requests (`reuse::Reuse`). The limits, the drain and the metrics below are the same
//! for all of them.
//!
//! Hardening, in the order a request meets it: past `ServeLimits::max_connections` open
//! connections the next one is not accepted until one closes (it waits in the listen backlog);
//! hyper answers a malformed request 400 itself (the guest never sees it) and drops a client that
//! does not send its headers in time, or sends none for that long between keep-alive requests; past
//! `max_concurrency` requests in flight the answer is 503 with `Retry-After` (a request holds its
//! permit until its instance is torn down, after its response went out; one that finds every
//! permit taken waits for such teardowns first, `Server::slot`); each request has a
//! deadline (504 when it passes; the guest yields to tokio at every epoch tick, so even a
//! spinning one is stopped) and a memory cap; a trap is a 500 and the next request gets a new
//! instance. `Shutdown::trigger` (SIGTERM) stops accepting, lets requests in flight finish,
//! closes idle keep-alive connections, drops the instances kept for reuse, and `serve` returns.
//!
//! With `ServeOptions::access_log`, each request also gets a line on the container's stderr
//! (`access`); without it, nothing per request is formatted or written. With
//! `ServeOptions::tracing`, each request gets an OpenTelemetry SERVER span and each outbound
//! `wasi:http` request of its guest a CLIENT span and a `traceparent` (`trace`); without it,
//! nothing of that runs either.

mod access;
pub mod cgi;
mod proxy;
mod request;
mod reuse;
mod service;
pub(crate) mod trace;
mod wagi;

pub use trace::RequestTracing;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::sync::{watch, Semaphore};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use crate::engine::Engine;
use crate::error::EngineError;
use crate::host::RunOptions;
use crate::limits::ServeLimits;
use crate::metrics::{Live, Metrics, MetricsOptions};
use crate::outbound::{AllowList, Outbound};
use crate::prepare::{Kind, Prepared};

use request::{plain, App};

/// How often the epoch advances while serving: the granularity of request deadlines and of a
/// busy guest's yields.
const TICK: Duration = Duration::from_millis(5);

/// How long a server must be quiet (no request started, none in flight) before `when_idle`.
const IDLE: Duration = Duration::from_secs(1);

/// How long a client may take to send a request's headers, counted from the end of the previous
/// response on a keep-alive connection: hyper's header timer runs while it waits for a request,
/// so it is also the idle timeout that frees the connection slot of a client that went quiet.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// The most bytes of a request's head (its request line and headers) a connection reads:
/// past it, hyper answers 431. nginx allows 32 KiB by default, Node.js 16 KiB.
pub const MAX_HEAD: usize = 64 << 10;

/// What a served workload gets: the guest's WASI setup (args, env, cwd, preopens; stdio is
/// inherited, so what requests print reaches the container's log) and the HTTP limits.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    pub run: RunOptions,
    pub limits: ServeLimits,
    /// Prometheus metrics on a listener of their own; `None`: none kept at all.
    pub metrics: Option<MetricsOptions>,
    /// A line per request on the guest's stderr (the container's log), Common Log Format
    /// plus the duration: see `serve/access.rs`.
    pub access_log: bool,
    /// OpenTelemetry spans of requests and of the guests' outbound requests (see `trace`);
    /// `None`: none made.
    pub tracing: Option<RequestTracing>,
    /// Serve on the calling thread only (a current-thread runtime) instead of a worker thread
    /// per CPU: for a process that is one of several serving the same listener, one per CPU.
    pub current_thread: bool,
    /// Requests in flight in every process serving the same workload, counted against
    /// `limits.max_concurrency` (an atomic in memory the processes share): the cap is the pod's,
    /// wherever a request lands. `None`: this server's own count.
    pub in_flight: Option<&'static AtomicU64>,
    /// Called on the epoch thread once each time this server has gone `IDLE` with no request
    /// started or in flight: where the caller gives memory that load left behind back to the
    /// kernel (the shim's init trims the malloc heap there). Once per quiet spell, so a
    /// server that stays idle pays it once, and a busy one never.
    pub when_idle: Option<fn()>,
}

/// Asks a running `serve` to stop accepting and drain. Cheap to clone; `trigger` may be called
/// from any thread, before or during `serve`.
#[derive(Clone)]
pub struct Shutdown(Arc<watch::Sender<bool>>);

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown(Arc::new(watch::channel(false).0))
    }
}

impl Shutdown {
    pub fn new() -> Shutdown {
        Shutdown::default()
    }
    pub fn trigger(&self) {
        self.0.send_replace(true);
    }
}

/// Better code for a running `serve`: a server started on baseline (Winch) code, because
/// nothing optimized was cached yet, can be handed the optimized build of the same workload
/// when it is ready; requests from then on get instances of it (those in flight finish on the
/// old code). Cheap to clone; `offer` may be called from any thread, once.
///
/// The init gets the optimized code as a read-only descriptor of the finished cache entry from
/// the shim (`Engine::load_entry_file`), never by holding the cache directory, which other
/// containers map code from.
#[derive(Clone, Default)]
pub struct Upgrade(Arc<OnceLock<Arc<Prepared>>>);

impl Upgrade {
    pub fn new() -> Upgrade {
        Upgrade::default()
    }

    /// Serve `prepared` from now on. It must have been made servable the same way as the code
    /// being served (`Engine::serve_as` with the same kind), else it is ignored. False if code
    /// was already offered.
    pub fn offer(&self, prepared: Prepared) -> bool {
        self.0.set(Arc::new(prepared)).is_ok()
    }

    /// The offered code, if it serves the same way as `current`.
    fn for_kind(&self, current: &Prepared) -> Option<&Arc<Prepared>> {
        self.0.get().filter(|p| p.serves() == current.serves())
    }
}

/// What a finished `serve` did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServeStats {
    pub connections: u64,
    pub requests: u64,
    /// Requests served by code handed over through [`Upgrade`].
    pub upgraded_requests: u64,
}

/// A request's concurrency slot: this process's semaphore permit, which also bounds the
/// instances its pool holds, and the pod's count (`shared`) and in-flight gauge while the request
/// is in flight (until its handler returned: `tearing_down`, or the slot's drop). After that
/// only the permit is kept, until its instance is dropped.
pub(crate) struct Slot {
    /// `None` only in `drop`.
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    counts: Counts,
    tearing_down: bool,
    /// Where a [`Mark`] was taken, the state it and the slot share (`IN_FLIGHT`, ...).
    marked: Option<Arc<AtomicU8>>,
}

/// What a slot counts in while its request is in flight, and where its teardown is counted.
#[derive(Clone)]
struct Counts {
    metrics: Option<Arc<Metrics>>,
    /// The count shared with the other processes (`ServeOptions::in_flight`).
    shared: Option<&'static AtomicU64>,
    teardowns: Arc<AtomicUsize>,
}

impl Counts {
    fn left(&self) {
        if let Some(m) = &self.metrics {
            m.left();
        }
        if let Some(n) = self.shared {
            n.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// The states a marked slot goes through, forward only: `IN_FLIGHT`, then `RESPONDED` (its
/// response is out: a request that finds every permit taken waits for it; the guest may still
/// run, a 0.2 handler until it returns, so it still counts as in flight) and/or `TEARING_DOWN`
/// (its task is done with the guest: no longer in flight), then `DROPPED`. Only the slot's owner
/// gives back the pod's count, before the permit. Every state but `IN_FLIGHT` and `DROPPED` is
/// counted in `teardowns`, counted before the state is set (and taken back by a mark that found
/// the state moved on), so a drop on another thread never takes the count below zero.
const IN_FLIGHT: u8 = 0;
const TEARING_DOWN: u8 = 1;
const DROPPED: u8 = 2;
const RESPONDED: u8 = 3;

/// Marks a slot from its response, when hyper is done with the body, while the task that owns
/// the slot (and drops the instance first) runs later: hyper reads a pipelined next request
/// before that, and the request then waits for this slot's permit instead of a 503.
pub(crate) struct Mark {
    state: Arc<AtomicU8>,
    teardowns: Arc<AtomicUsize>,
}

impl Mark {
    /// `RESPONDED`, once; nothing once the slot has moved on (its task was quicker, or it is
    /// gone).
    pub(crate) fn responded(&self) {
        if self.state.load(Ordering::Acquire) != IN_FLIGHT {
            return;
        }
        self.teardowns.fetch_add(1, Ordering::AcqRel);
        if self.state.compare_exchange(IN_FLIGHT, RESPONDED, Ordering::AcqRel, Ordering::Acquire).is_err() {
            self.teardowns.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Slot {
    /// A slot if one is free: in this process, and among the pod's (`shared`, at most `cap`).
    fn take(limit: &Arc<Semaphore>, admit: Admit<'_>) -> Option<Slot> {
        let permit = limit.clone().try_acquire_owned().ok()?;
        Slot::admit(permit, admit)
    }

    /// With a permit of this process's: a slot if the pod's count has room too.
    fn admit(permit: tokio::sync::OwnedSemaphorePermit, a: Admit<'_>) -> Option<Slot> {
        if let Some(n) = a.shared {
            n.fetch_update(Ordering::AcqRel, Ordering::Relaxed, |v| (v < u64::from(a.cap)).then_some(v + 1)).ok()?;
        }
        if let Some(m) = a.metrics {
            m.entered();
        }
        Some(Slot {
            permit: Some(permit),
            counts: Counts { metrics: a.metrics.cloned(), shared: a.shared, teardowns: a.teardowns.clone() },
            tearing_down: false,
            marked: None,
        })
    }

    /// The request's handler is done and its response has gone out (or is about to, once its
    /// connection task runs): it is no longer in flight, for the pod's count and the gauge, but
    /// this process's permit stays until its instance is dropped, so that the pool is never
    /// asked for more instances than it has. A request that finds every permit taken waits for
    /// these (`Server::slot`).
    pub(crate) fn tearing_down(&mut self) {
        match &self.marked {
            Some(state) => {
                // Counted first, as a mark does; only the owner moves the state on from here.
                self.counts.teardowns.fetch_add(1, Ordering::AcqRel);
                match state.swap(TEARING_DOWN, Ordering::AcqRel) {
                    IN_FLIGHT => self.counts.left(),
                    RESPONDED => {
                        self.counts.teardowns.fetch_sub(1, Ordering::AcqRel);
                        self.counts.left();
                    }
                    _ => {
                        self.counts.teardowns.fetch_sub(1, Ordering::AcqRel);
                    }
                }
            }
            None if !self.tearing_down => {
                self.tearing_down = true;
                // Counted first: a request that finds every permit taken then waits for this one.
                self.counts.teardowns.fetch_add(1, Ordering::AcqRel);
                self.counts.left();
            }
            None => {}
        }
    }

    /// A handle for the response (only where it is needed, for the shared state it allocates;
    /// every handle of a slot shares it).
    pub(crate) fn mark(&mut self) -> Mark {
        let state = self
            .marked
            .get_or_insert_with(|| Arc::new(AtomicU8::new(if self.tearing_down { TEARING_DOWN } else { IN_FLIGHT })))
            .clone();
        Mark { state, teardowns: self.counts.teardowns.clone() }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        // Counted as a teardown while it runs: a request that finds the permit still taken
        // waits for it (`Server::slot`) rather than a 503.
        self.counts.teardowns.fetch_add(1, Ordering::AcqRel);
        let was = match &self.marked {
            Some(state) => state.swap(DROPPED, Ordering::AcqRel),
            None if self.tearing_down => TEARING_DOWN,
            None => IN_FLIGHT,
        };
        // The pod's count before the permit, so that the request the permit goes to finds
        // room in it too.
        if matches!(was, IN_FLIGHT | RESPONDED) {
            self.counts.left();
        }
        drop(self.permit.take());
        let counted = if was == IN_FLIGHT { 1 } else { 2 };
        self.counts.teardowns.fetch_sub(counted, Ordering::AcqRel);
    }
}

/// A response of the server's own (a 500 for a guest's error, a 504) for a request whose slot
/// its guest task still holds: marked, as a guest's response body is ([`Watched`]).
pub(crate) fn watched(response: hyper::Response<HyperOutgoingBody>, mark: Mark) -> hyper::Response<HyperOutgoingBody> {
    response.map(|body| Watched::boxed(body, mark, None))
}

/// A response body that marks its request's slot ([`Mark::responded`]) when hyper is done with
/// it (at its end, at an error, or when it is dropped: the client went away, or a HEAD or a
/// 204 has no body to write), before hyper reads a pipelined next request that may need the
/// slot; then tells the guest task, if it waits (`done`: a WASI 0.3 guest's event loop runs
/// until the body is read).
pub(crate) struct Watched {
    inner: HyperOutgoingBody,
    mark: Option<Mark>,
    done: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Watched {
    pub(crate) fn boxed(inner: HyperOutgoingBody, mark: Mark, done: Option<tokio::sync::oneshot::Sender<()>>) -> HyperOutgoingBody {
        use http_body_util::BodyExt;
        Watched { inner, mark: Some(mark), done }.boxed_unsync()
    }

    fn finish(&mut self) {
        if let Some(mark) = self.mark.take() {
            mark.responded();
        }
        self.done = None;
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.finish();
    }
}

impl hyper::body::Body for Watched {
    type Data = bytes::Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Self::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, std::task::Poll::Ready(None | Some(Err(_)))) {
            self.finish();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// What admitting a request into the pod's count takes (`Slot::admit`).
#[derive(Clone, Copy)]
struct Admit<'a> {
    shared: Option<&'static AtomicU64>,
    cap: u32,
    metrics: Option<&'a Arc<Metrics>>,
    teardowns: &'a Arc<AtomicUsize>,
}

/// How long a request that finds every permit taken while instances are being torn down waits
/// for one before its 503: a teardown is microseconds of work, this is only a bound. A 0.2
/// handler that goes on after its response went out (`RESPONDED`) is waited for too, for this
/// long at most, so under such load a 503 comes this much later.
const TEARDOWN_WAIT: Duration = Duration::from_millis(50);

/// Returns after the tasks already queued on this worker, the connection task woken by the
/// guest's response among them: a task that wakes itself goes to the back of the queue. On a
/// current-thread runtime that is every queued task; on a multi-thread one another worker may
/// take this task sooner, in parallel. (`tokio::task::yield_now` defers the wake-up to when the
/// worker next polls its driver, which on a busy worker can be dozens of tasks later.)
pub(crate) async fn after_queued_tasks() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            return std::task::Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    })
    .await
}

/// One running server: what its requests share (`App`) and what the dispatch keeps for itself.
struct Server {
    app: App,
    /// Requests in flight: one permit each.
    limit: Arc<Semaphore>,
    requests: AtomicU64,
    upgrade: Upgrade,
    upgraded_requests: AtomicU64,
    in_flight: Option<&'static AtomicU64>,
    /// Slots whose permit is still held but soon given back: their instance is being torn down
    /// (or dropped), or, for wasi:http 0.2, their response went out while the handler runs on
    /// (`RESPONDED`). A request that finds every permit taken waits when there are any.
    teardowns: Arc<AtomicUsize>,
}

impl Server {
    async fn handle(
        self: Arc<Self>,
        prepared: Arc<Prepared>,
        req: hyper::Request<hyper::body::Incoming>,
        peer: SocketAddr,
    ) -> hyper::Response<HyperOutgoingBody> {
        let access = self.app.access.as_ref().map(|log| (log.clone(), access::Request::of(&req, peer)));
        let span = self.app.tracing.as_ref().map(|t| t.server_span(&req, self.app.port, peer));
        let client = span.as_ref().map(|s| s.client().clone());
        let r = match self.app.metrics.clone() {
            None => self.respond(prepared, req, peer, client).await,
            Some(m) => {
                let since = std::time::Instant::now();
                let r = self.respond(prepared, req, peer, client).await;
                m.request(r.status().as_u16(), since.elapsed());
                r
            }
        };
        let r = match span {
            None => r,
            Some(span) => span.wrap(r),
        };
        match access {
            None => r,
            Some((log, request)) => log.wrap(request, r),
        }
    }

    /// A concurrency slot: a free one, or, when every permit is taken and some only by
    /// instances being torn down after their response (a client's next request can come before
    /// that), the first permit given back within `TEARDOWN_WAIT`, in turn with other waiters.
    async fn slot(&self) -> Option<Slot> {
        let admit = Admit {
            shared: self.in_flight,
            cap: self.app.limits.max_concurrency,
            metrics: self.app.metrics.as_ref(),
            teardowns: &self.teardowns,
        };
        if let Some(slot) = Slot::take(&self.limit, admit) {
            return Some(slot);
        }
        if self.teardowns.load(Ordering::Acquire) == 0 {
            // One may have ended between the two checks (its permit goes back first).
            return Slot::take(&self.limit, admit);
        }
        let permit = tokio::time::timeout(TEARDOWN_WAIT, self.limit.clone().acquire_owned()).await.ok()?.ok()?;
        Slot::admit(permit, admit)
    }

    /// The concurrency cap, the code to use (upgraded or not) and the deadline, then the handler
    /// of the workload's kind. `trace`: what the guest's outbound requests are children of.
    async fn respond(
        self: Arc<Self>,
        prepared: Arc<Prepared>,
        req: hyper::Request<hyper::body::Incoming>,
        peer: SocketAddr,
        trace: Option<trace::ClientTrace>,
    ) -> hyper::Response<HyperOutgoingBody> {
        let app = &self.app;
        self.requests.fetch_add(1, Ordering::Relaxed);
        let Some(permit) = self.slot().await else {
            if let Some(m) = &app.metrics {
                m.overloaded();
            }
            let mut r = plain(503, "too many requests in flight\n");
            r.headers_mut()
                .insert(http::header::RETRY_AFTER, http::HeaderValue::from_static("1"));
            return r;
        };
        let prepared = match self.upgrade.for_kind(&prepared) {
            Some(better) => {
                self.upgraded_requests.fetch_add(1, Ordering::Relaxed);
                better.clone()
            }
            None => prepared,
        };
        let deadline = tokio::time::Instant::now() + app.limits.request_timeout;
        match &prepared.kind {
            Kind::Proxy { pre } => proxy::handle(app, pre, req, permit, deadline, trace).await,
            Kind::Service { pre } => service::handle(app, pre, req, permit, deadline, trace).await,
            Kind::Wagi { pre, entry } => wagi::handle(app, pre, entry, req, peer, permit, deadline).await,
            Kind::Module { .. } | Kind::Component { .. } => app.failed("serve", "not an HTTP workload"),
        }
    }
}

/// Follows a server's requests tick by tick to tell when it has gone quiet: `IDLE` without a
/// request started and with none in flight.
#[derive(Default)]
struct Quiet {
    /// The request count at the last tick, and the ticks since it last changed.
    seen: u64,
    still: u32,
}

impl Quiet {
    const TICKS: u32 = (IDLE.as_millis() / TICK.as_millis()) as u32;

    /// True at the one tick where the server has been quiet for `IDLE` (`requests` started so
    /// far, `busy`: some in flight); false before, and after until requests come and go again.
    fn tick(&mut self, requests: u64, busy: bool) -> bool {
        if requests != self.seen || busy {
            self.seen = requests;
            self.still = 0;
            return false;
        }
        self.still = self.still.saturating_add(1);
        self.still == Self::TICKS
    }
}

impl Server {
    fn busy(&self) -> bool {
        self.limit.available_permits() < self.app.limits.max_concurrency as usize
    }
}

impl Engine {
    /// Serves `prepared` (a `wasi:http` component or a WAGI module, see `serve_as`) on
    /// `listener` until `shutdown` is triggered and the requests in flight are done. Blocks the
    /// calling thread; runs its own tokio runtime.
    pub fn serve(
        &self,
        prepared: Prepared,
        listener: std::net::TcpListener,
        opts: &ServeOptions,
        shutdown: &Shutdown,
    ) -> Result<ServeStats, EngineError> {
        self.serve_upgradable(prepared, listener, opts, shutdown, &Upgrade::new())
    }

    /// `serve`, switching to the code `upgrade` is offered once it is.
    pub fn serve_upgradable(
        &self,
        prepared: Prepared,
        listener: std::net::TcpListener,
        opts: &ServeOptions,
        shutdown: &Shutdown,
        upgrade: &Upgrade,
    ) -> Result<ServeStats, EngineError> {
        if prepared.serves().is_none() {
            return Err(EngineError::NotServable {
                file: prepared.file.clone(),
                reason: "neither a wasi:http component nor a WAGI module".to_string(),
            });
        }
        let limits = &opts.limits;
        if limits.instance_reuse > 1 && !matches!(prepared.kind, Kind::Proxy { .. }) {
            return Err(EngineError::NotServable {
                file: prepared.file.clone(),
                reason: format!(
                    "{}={}: only a wasi:http 0.2 component's instance can serve several requests (a WAGI module's _start runs once; a WASI 0.3 service gets a fresh instance per request, reuse is not built for it yet)",
                    limits.names.instance_reuse, limits.instance_reuse
                ),
            });
        }
        let allowed = AllowList::parse(&limits.allowed_outbound).map_err(|why| EngineError::NotServable {
            file: prepared.file.clone(),
            reason: format!("{}: {why}", limits.names.allowed_outbound),
        })?;
        let internal = |what: &str, e: std::io::Error| EngineError::Internal(format!("{what}: {e}"));
        let port = listener.local_addr().map_err(|e| internal("listener", e))?.port();
        listener.set_nonblocking(true).map_err(|e| internal("listener", e))?;
        let runtime = if opts.current_thread {
            tokio::runtime::Builder::new_current_thread().enable_all().build()
        } else {
            let workers = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 8);
            tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build()
        }
        .map_err(|e| internal("tokio runtime", e))?;

        let metrics = opts.metrics.as_ref().map(|m| {
            Arc::new(match m.cells {
                Some(cells) => Metrics::in_cells(m.start.clone(), cells),
                None => Metrics::new(m.start.clone()),
            })
        });
        let server = Arc::new(Server {
            app: App {
                limits: limits.clone(),
                outbound: Outbound::new(allowed, &prepared.file, limits.names.allowed_outbound),
                port,
                run: opts.run.clone(),
                file: prepared.file.clone(),
                reuse: reuse::Reuse::new(limits.instance_reuse, limits.max_concurrency, metrics.clone()),
                metrics,
                access: opts.access_log.then(|| Arc::new(access::AccessLog::new(&opts.run.stdio))),
                tracing: opts.tracing.clone(),
            },
            limit: Arc::new(Semaphore::new(limits.max_concurrency as usize)),
            requests: AtomicU64::new(0),
            upgrade: upgrade.clone(),
            upgraded_requests: AtomicU64::new(0),
            in_flight: opts.in_flight,
            teardowns: Arc::new(AtomicUsize::new(0)),
        });

        // The epoch clock: request deadlines and a busy guest's yields count its ticks.
        let ticking = Arc::new(AtomicBool::new(true));
        let ticker = {
            let engine = prepared.engine.clone();
            let upgrade = upgrade.clone();
            let ticking = ticking.clone();
            let mut quiet = opts.when_idle.map(|f| (Quiet::default(), server.clone(), f));
            std::thread::Builder::new()
                .name("epoch".into())
                .spawn(move || {
                    while ticking.load(Ordering::Relaxed) {
                        std::thread::sleep(TICK);
                        engine.increment_epoch();
                        // The upgraded code's stores count the ticks of its own engine.
                        if let Some(p) = upgrade.0.get().filter(|p| !wasmtime::Engine::same(&p.engine, &engine)) {
                            p.engine.increment_epoch();
                        }
                        if let Some((quiet, server, when_idle)) = &mut quiet {
                            if quiet.tick(server.requests.load(Ordering::Relaxed), server.busy()) {
                                when_idle();
                            }
                        }
                    }
                })
                .map_err(|e| internal("epoch thread", e))?
        };

        let prepared = Arc::new(prepared);
        let mut stop = shutdown.0.subscribe();
        let max_open = limits.max_connections.max(1);
        let open = Arc::new(Semaphore::new(max_open as usize));
        // The metrics endpoint: its own listener, task and connection cap, on this runtime.
        let exposition = match (&server.app.metrics, opts.metrics.as_ref().and_then(|o| o.listener.as_ref())) {
            (Some(metrics), Some(listener)) => {
                let listener = listener.try_clone().map_err(|e| internal("metrics listener", e))?;
                listener.set_nonblocking(true).map_err(|e| internal("metrics listener", e))?;
                let max_concurrency = u64::from(limits.max_concurrency);
                let (upgrade, current) = (upgrade.clone(), prepared.clone());
                let registry = crate::metrics::registry(metrics.clone(), move || Live {
                    max_concurrency,
                    tier: Some(upgrade.for_kind(&current).map_or(current.tier(), |better| better.tier())),
                });
                Some((listener, Arc::new(registry), metrics.clone()))
            }
            _ => None,
        };
        let result = runtime.block_on(async {
            let listener = tokio::net::TcpListener::from_std(listener)
                .map_err(|e| internal("listener", e))?;
            let exposing = match exposition {
                Some((listener, registry, metrics)) => {
                    let listener = tokio::net::TcpListener::from_std(listener)
                        .map_err(|e| internal("metrics listener", e))?;
                    metrics.accepting();
                    Some(tokio::spawn(crate::metrics::serve(listener, registry, shutdown.0.subscribe())))
                }
                None => None,
            };
            let graceful = GracefulShutdown::new();
            let mut connections = 0u64;
            let mut said_full = false;
            loop {
                // A slot for the next connection before accepting it: past the cap, clients wait
                // in the kernel's listen backlog (their requests are served once a connection
                // closes) instead of costing this process an fd and a task each.
                let slot = match open.clone().try_acquire_owned() {
                    Ok(slot) => slot,
                    Err(_) => {
                        if let Some(m) = &server.app.metrics {
                            m.connection_cap_reached();
                        }
                        if !said_full {
                            said_full = true;
                            log::warn!(
                                "{}: {max_open} connections open, the most allowed: new ones wait in the listen backlog",
                                prepared.file
                            );
                        }
                        tokio::select! {
                            biased;
                            _ = stop.wait_for(|stop| *stop) => break,
                            slot = open.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
                        }
                    }
                };
                let (stream, peer) = tokio::select! {
                    biased;
                    _ = stop.wait_for(|stop| *stop) => break,
                    accepted = listener.accept() => match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            // Out of fds, or a connection reset before accept: keep serving.
                            log::warn!("accept: {e}");
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    },
                };
                connections += 1;
                let _ = stream.set_nodelay(true);
                let metrics = server.app.metrics.clone();
                let (server, prepared) = (server.clone(), prepared.clone());
                let service = hyper::service::service_fn(move |req| {
                    let (server, prepared) = (server.clone(), prepared.clone());
                    async move { Ok::<_, Infallible>(server.handle(prepared, req, peer).await) }
                });
                let conn = http1::Builder::new()
                    .keep_alive(true)
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    // A request's head (hyper's default lets a connection hold about 400 KiB
                    // of headers that never end, which a thousand connections make a pod's OOM).
                    .max_buf_size(MAX_HEAD)
                    .serve_connection(TokioIo::new(stream), service);
                let conn = graceful.watch(conn);
                if let Some(m) = &metrics {
                    m.opened();
                }
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        log::debug!("connection from {peer}: {e}");
                    }
                    if let Some(m) = metrics {
                        m.closed();
                    }
                    drop(slot);
                });
            }
            drop(listener);
            graceful.shutdown().await;
            // Idle instances are not needed any more; one still writing a body is dropped when
            // its request ends.
            if let Some(reuse) = &server.app.reuse {
                reuse.close();
            }
            if let Some(task) = exposing {
                task.abort();
            }
            Ok(connections)
        });
        ticking.store(false, Ordering::Relaxed);
        let _ = ticker.join();
        // Guest tasks still running past their connection (none after a drain) end here.
        runtime.shutdown_timeout(Duration::from_secs(1));
        Ok(ServeStats {
            connections: result?,
            requests: server.requests.load(Ordering::Relaxed),
            upgraded_requests: server.upgraded_requests.load(Ordering::Relaxed),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Quiet;

    #[test]
    fn quiet_once_per_idle_spell_and_never_while_busy() {
        let mut q = Quiet::default();
        let idle = |q: &mut Quiet, requests, busy, ticks: u32| (0..ticks).filter(|_| q.tick(requests, busy)).count();
        // Quiet from the start: once, at the TICKS-th tick, and not again however long it lasts.
        assert_eq!(idle(&mut q, 0, false, Quiet::TICKS - 1), 0);
        assert_eq!(idle(&mut q, 0, false, 1), 1);
        assert_eq!(idle(&mut q, 0, false, 10 * Quiet::TICKS), 0);
        // A long request in flight, none started after it: never quiet while it runs.
        assert_eq!(idle(&mut q, 1, true, 10 * Quiet::TICKS), 0);
        // It ends: quiet again after TICKS, once.
        assert_eq!(idle(&mut q, 1, false, 3 * Quiet::TICKS), 1);
        // Requests keep starting (the count moves every tick): never quiet.
        assert_eq!((2..2 + 3 * u64::from(Quiet::TICKS)).filter(|&n| q.tick(n, false)).count(), 0);
    }
}
