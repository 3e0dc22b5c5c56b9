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
//! - `coredump`: `CoreDumpCapture`, where a run leaves the bounded core dump of a trap.
//! - `engine`: the `wasmtime::Config`, one wasmtime engine per compiler
//!   `Tier` (Cranelift optimized, Winch baseline), the pooling allocator
//!   option, the WASI p1/p2 linkers, `interrupt` (epoch bump) and the
//!   recorded signal.
//! - `features`: the wasm proposals accepted: defaults, the `+gc,-simd` grammar, what
//!   the baseline compiler (Winch) lacks, the canonical list the cache key hashes.
//! - `prepare`: format detection (module, component, WAT), compilation, entry
//!   point choice and import resolution (`InstancePre`); `Prepared`.
//! - `cache`: the compile cache shared by processes: keys, atomic writes,
//!   per-key locks, checksums, LRU eviction; loading compiled code by mmap
//!   (the crate's one `unsafe`).
//! - `run`: `RunOptions` and `Stdio` to a WASI context, a fresh store with the
//!   limiter and epoch deadline, calling the entry point.
//! - `serve`: serving HTTP/1.1 on a bound listener: tokio and hyper, the
//!   open-connections cap (past it, not accepted), the concurrency cap (503),
//!   deadlines (504), graceful drain on `Shutdown`.
//! - `proxy`: one request to a `wasi:http/proxy` component (`ProxyPre`), its
//!   outbound `wasi:http` requests checked against the allow-list.
//! - `outbound`: the allow-list of a served workload (`http-allowed-outbound`)
//!   for `wasi:http` requests and `wasi:sockets` addresses alike: entries,
//!   matching, resolving name entries for sockets, the sockets a request's
//!   WASI context gets.
//! - `wagi`: one request to a WASI p1 module run CGI-style.
//! - `metrics`: a served workload's Prometheus metrics (`metrics-port`): atomic counters and
//!   histograms, what the server's state shows at scrape time, the OpenMetrics encoding and
//!   the `GET /metrics` endpoint.
//! - `limits`: the `ResourceLimiter` enforcing the memory limit and noting
//!   when it was hit.
//! - `outcome`: `Outcome`, mapping errors/traps/exits to it, exit codes.
//! - `error`: `EngineError`, one-line messages naming the file.

#![deny(unsafe_code)]

mod cache;
mod coredump;
mod engine;
mod error;
mod features;
mod limits;
mod metrics;
mod outbound;
mod outcome;
mod prepare;
mod proxy;
mod run;
mod serve;
mod wagi;

pub use cache::{wasm_digest, Cache, CacheKey, EntryInfo, Evicted, Stored, DEFAULT_MAX_SIZE};
pub use coredump::CoreDumpCapture;
pub use engine::{Engine, EngineConfig, ServingPool, Tier};
pub use error::EngineError;
pub use features::{Feature, FeatureError, Features, FEATURES};
pub use outcome::{Outcome, EXIT_CANNOT_RUN, EXIT_TRAP};
pub use prepare::{serves_http_by_default, Origin, Prepared, ServeKind};
pub use metrics::{CacheResult, MetricsOptions, StartInfo};
pub use serve::{ServeOptions, ServeStats, Shutdown, Upgrade};
pub use run::{Capture, RunOptions, Stdio};
