//! wasmtime for the wasm shim: compile a WASI workload when the container is
//! created, run it when the container starts, and turn how it ended into an
//! exit status.
//!
//! ```no_run
//! use wasm_shim_engine::{Engine, RunOptions};
//! let engine = Engine::new()?;
//! let bytes = std::fs::read("/hello.wasm").unwrap();
//! let prepared = engine.prepare(&bytes, "/hello.wasm", None)?;   // at Create
//! let opts = RunOptions {
//!     args: vec!["hello.wasm".into()],
//!     cwd: "/".into(),
//!     preopens: vec![("/".into(), "/".into())],
//!     ..Default::default()
//! };
//! let outcome = engine.run(&prepared, &opts);                    // at Start
//! std::process::exit(outcome.exit_code());
//! # Ok::<(), wasm_shim_engine::EngineError>(())
//! ```
//!
//! # Layout
//! From the ground up: each module uses only those listed before it.
//! - `error`: `EngineError`, one-line messages naming the file.
//! - `tier`: `Tier`, which compiler made the code (Cranelift optimized, Winch baseline).
//! - `features`: the wasm proposals accepted: defaults, the `+gc,-simd` grammar, what
//!   the baseline compiler (Winch) lacks, the canonical list the cache key hashes.
//! - `limits`: the `ResourceLimiter` enforcing the memory limit and noting when it was hit;
//!   `ServeLimits`, the bounds of a served workload, and the names messages give them.
//! - `outcome`: `Outcome`, mapping errors/traps/exits to it, exit codes.
//! - `coredump`: `CoreDumpCapture`, where a run leaves the bounded core dump of a trap.
//! - `metrics`: a served workload's Prometheus metrics (`ServeOptions::metrics`): atomic
//!   counters and histograms, what the server's state shows at scrape time, the OpenMetrics
//!   encoding and the `GET /metrics` endpoint.
//! - `outbound`: the allow-list of a served workload for `wasi:http` requests (the send hook)
//!   and `wasi:sockets` addresses alike: entries, matching, resolving name entries for
//!   sockets, the sockets a request's WASI context gets.
//! - `host`: what the host gives a guest: `RunOptions` and `Stdio` to a WASI context, the
//!   `wasi:config/store` entries (`GuestConfig`) (deny by
//!   default), and the data of the stores guests run in (WASI p1, p2, `wasi:http` proxy).
//! - `engine`: the `wasmtime::Config`, one wasmtime engine per `Tier`, the pooling
//!   allocator option, the WASI linkers (p1, p2, `wasi:http`, and WASI 0.3's), `interrupt` (epoch
//!   bump) and the recorded signal.
//! - `prepare`: format detection (module, component, WAT), compilation, entry
//!   point choice (WASI 0.2 or 0.3 by the component's exports) and import resolution
//!   (`InstancePre`); `Prepared`; `serve_as`.
//! - `cache`: the compile cache shared by processes. `cache/disk`: the directory: keys,
//!   atomic writes, per-key locks, checksums, LRU eviction, the compile log. `cache/load`:
//!   a workload's key, loading compiled code by mmap (the crate's one `unsafe`), compiling
//!   into the cache once.
//! - `run`: a fresh store with the limiter and epoch deadline, calling the entry point (a WASI
//!   0.3 command's async `run` on a tokio runtime of its own).
//! - `serve`: serving HTTP/1.1 on a bound listener: tokio and hyper, the open-connections cap
//!   (past it, not accepted), the concurrency cap (503), deadlines (504), graceful drain on
//!   `Shutdown`, the code `Upgrade`. Below it, each request's handler: `serve/request` (what
//!   handlers share: `App`, a request's WASI context, the shim's own responses),
//!   `serve/proxy` (a `wasi:http/proxy` component, `ProxyPre`), `serve/reuse` (the idle
//!   instances a server keeps when it reuses them), `serve/service` (a WASI 0.3 `wasi:http/service` component, `ServicePre`, run in
//!   the store's event loop), `serve/wagi` (a WASI p1
//!   module run CGI-style) and `serve/cgi` (CGI 1.1: meta-variables, parsing the response;
//!   pure, public for the fuzzer); beside them `serve/access` (the access log) and
//!   `serve/trace` (OpenTelemetry spans of requests and of the guests' outbound requests, W3C
//!   `traceparent` in and out; the tracer and its exporter are the caller's).

#![deny(unsafe_code)]

mod cache;
mod coredump;
mod engine;
mod error;
mod features;
mod host;
mod limits;
mod metrics;
mod outbound;
mod outcome;
mod prepare;
mod run;
mod serve;
mod tier;

pub use cache::{wasm_digest, Cache, CacheKey, EntryInfo, Evicted, Stored, DEFAULT_MAX_SIZE};
pub use coredump::CoreDumpCapture;
pub use engine::{Engine, EngineConfig, ServingPool};
pub use error::EngineError;
pub use features::{Feature, FeatureError, Features, FEATURES};
pub use host::{Capture, GuestConfig, RunOptions, Stdio};
pub use limits::{LimitNames, ServeLimits};
pub use metrics::{CacheResult, MetricsOptions, StartInfo, CELLS as METRICS_CELLS};
pub use outbound::allows_url;
pub use outcome::{Outcome, EXIT_CANNOT_RUN, EXIT_TRAP};
pub use prepare::{serves_http_by_default, Origin, Prepared, ServeKind};
pub use serve::{cgi, RequestTracing, ServeOptions, ServeStats, Shutdown, Upgrade, MAX_HEAD};
pub use tier::Tier;
