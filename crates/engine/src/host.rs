//! What the host gives a guest: `RunOptions` (args, env, working directory, preopened
//! directories, stdio) turned into a WASI context, deny by default, and the data of the stores
//! guests run in: WASI p1 and p2 for commands and WAGI, WASI p2 with `wasi:http` for a
//! `wasi:http/proxy` component, each with its memory limiter.

use std::path::PathBuf;
use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::{MemoryInputPipe, MemoryOutputPipe};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_config::{WasiConfig, WasiConfigVariables};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::coredump::CoreDumpCapture;
use crate::error::one_line;
use crate::limits::Limiter;
use crate::metrics::Metrics;
use crate::outbound::Outbound;

/// How the guest runs: what the OCI spec says about the process.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// argv; `args[0]` is the program name.
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// The container's working directory (an absolute guest path). See the
    /// crate README for how far WASI lets a guest see it.
    pub cwd: String,
    /// (host directory, guest path) pairs, each with full read/write access.
    /// The shim passes `[("/", "/")]`: the container's rootfs and nothing else.
    pub preopens: Vec<(PathBuf, String)>,
    /// Maximum size in bytes of each linear memory. Growing past it traps,
    /// reported as `Outcome::Trap { oom: true, .. }`.
    pub memory_limit: Option<u64>,
    /// Where the guest's stdin/stdout/stderr go; the shim keeps `Inherit`.
    pub stdio: Stdio,
    /// Where a trap's core dump is left (the engine must have `EngineConfig::coredump`).
    pub coredump: Option<CoreDumpCapture>,
    /// What a component reads through `wasi:config/store`.
    pub config: GuestConfig,
}

/// The entries of `wasi:config/store` (`wasi:config@0.2.0-rc.1`, wasmtime's implementation) a
/// component reads: key → value, made once and shared by every store (each request of a served
/// component) without copying. Empty by default: `get` answers none, `get-all` an empty list.
#[derive(Clone, Default)]
pub struct GuestConfig(Arc<WasiConfigVariables>, usize);

impl GuestConfig {
    /// From (key, value) pairs; a later pair wins over an earlier one with the same key.
    pub fn new(entries: impl IntoIterator<Item = (String, String)>) -> GuestConfig {
        let mut vars = WasiConfigVariables::new();
        let mut keys = std::collections::BTreeSet::new();
        for (k, v) in entries {
            keys.insert(k.clone());
            vars.insert(k, v);
        }
        GuestConfig(Arc::new(vars), keys.len())
    }

    /// How many keys it holds.
    pub fn len(&self) -> usize {
        self.1
    }

    pub fn is_empty(&self) -> bool {
        self.1 == 0
    }

    pub(crate) fn view(&self) -> WasiConfig<'_> {
        WasiConfig::from(&*self.0)
    }
}

impl std::fmt::Debug for GuestConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Values may be secrets: keys are counted, never shown.
        write!(f, "GuestConfig({} keys)", self.1)
    }
}

/// The guest's standard streams.
#[derive(Debug, Clone, Default)]
pub enum Stdio {
    /// The process's own fds 0, 1 and 2 (the container's FIFOs in the shim).
    #[default]
    Inherit,
    /// In-memory streams, for tests and embedders that want the output.
    Capture(Capture),
}

/// In-memory stdio: a fixed stdin and stdout/stderr buffers that can be read
/// after (or during) the run. Clones share the buffers.
#[derive(Clone)]
pub struct Capture {
    stdin: Vec<u8>,
    stdout: MemoryOutputPipe,
    stderr: MemoryOutputPipe,
}

/// Bytes each captured output stream holds at most; writes past it fail.
const CAPTURE_CAPACITY: usize = 16 << 20;

impl Capture {
    /// Stdin reads `stdin` and then end-of-file.
    pub fn new(stdin: impl Into<Vec<u8>>) -> Capture {
        Capture {
            stdin: stdin.into(),
            stdout: MemoryOutputPipe::new(CAPTURE_CAPACITY),
            stderr: MemoryOutputPipe::new(CAPTURE_CAPACITY),
        }
    }

    /// Everything the guest wrote to stdout so far.
    pub fn stdout(&self) -> Vec<u8> {
        self.stdout.contents().to_vec()
    }

    /// Everything the guest wrote to stderr so far.
    pub fn stderr(&self) -> Vec<u8> {
        self.stderr.contents().to_vec()
    }

    /// The stderr buffer itself (a served workload's access log writes there too).
    pub(crate) fn stderr_pipe(&self) -> MemoryOutputPipe {
        self.stderr.clone()
    }
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capture")
            .field("stdin_len", &self.stdin.len())
            .field("stdout_len", &self.stdout.contents().len())
            .field("stderr_len", &self.stderr.contents().len())
            .finish()
    }
}

/// Store data for a core module (WASI p1).
pub(crate) struct P1State {
    pub(crate) wasi: WasiP1Ctx,
    pub(crate) limiter: Limiter,
}

/// Store data for a component (WASI p2).
pub(crate) struct P2State {
    ctx: WasiCtx,
    table: ResourceTable,
    pub(crate) limiter: Limiter,
    pub(crate) config: GuestConfig,
}

impl P2State {
    pub(crate) fn new(ctx: WasiCtx, limiter: Limiter, config: GuestConfig) -> P2State {
        P2State { ctx, table: ResourceTable::new(), limiter, config }
    }
}

impl WasiView for P2State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}

/// Store data of one request to a proxy component.
pub(crate) struct ProxyState {
    ctx: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    pub(crate) limiter: Limiter,
    hooks: Outbound,
    /// Told the instance's memory when the store goes, however the request ended (the task
    /// may be aborted at its deadline).
    metrics: Option<Arc<Metrics>>,
    pub(crate) config: GuestConfig,
}

impl ProxyState {
    /// `hooks` checks the request's outbound `wasi:http` requests; `metrics`, if kept, is told
    /// the instance's memory at the end.
    pub(crate) fn new(ctx: WasiCtx, limiter: Limiter, hooks: Outbound, metrics: Option<Arc<Metrics>>, config: GuestConfig) -> ProxyState {
        ProxyState { ctx, http: WasiHttpCtx::new(), table: ResourceTable::new(), limiter, hooks, metrics, config }
    }
}

impl ProxyState {
    /// The guest's outbound `wasi:http` requests from now on are children of `trace` (a
    /// request's span), or of nothing.
    pub(crate) fn trace_outbound(&mut self, trace: Option<crate::serve::trace::ClientTrace>) {
        self.hooks.trace = trace;
    }

    /// Whether the guest still holds a piece of a request it was handed or of a response it
    /// made (the request, its body or body stream, its trailers, the response outparam, an
    /// outgoing response or body): after its handler returned, such an instance is not reused,
    /// since a piece kept would pin a client's connection or reach a later request's client.
    pub(crate) fn holds_request_resources(&mut self) -> bool {
        use wasmtime_wasi_http::p2::body::{HostFutureTrailers, HostIncomingBody, HostOutgoingBody};
        use wasmtime_wasi_http::p2::types::{HostIncomingRequest, HostOutgoingResponse, HostResponseOutparam};
        self.table.iter_mut().any(|entry| {
            entry.is::<HostIncomingRequest>()
                || entry.is::<HostIncomingBody>()
                || entry.is::<HostFutureTrailers>()
                || entry.is::<HostResponseOutparam>()
                || entry.is::<HostOutgoingResponse>()
                || entry.is::<HostOutgoingBody>()
        })
    }
}

impl Drop for ProxyState {
    fn drop(&mut self) {
        if let Some(m) = &self.metrics {
            m.instance_memory(self.limiter.linear_bytes);
        }
    }
}

impl WasiView for ProxyState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for ProxyState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// The WASI context both kinds of guests get. Deny by default; grant what the
/// container spec asks for.
pub(crate) fn wasi_builder(opts: &RunOptions) -> Result<WasiCtxBuilder, String> {
    let mut builder = WasiCtxBuilder::new();
    builder.args(&opts.args).envs(&opts.env);
    if !opts.cwd.is_empty() {
        // p2: `wasi:cli/environment.initial-cwd`. p1 has no such thing;
        // wasi-libc starts in "/" (see README). PWD is the one hint a p1 guest
        // can read, set as a shell would unless the spec sets it.
        builder.initial_cwd(&opts.cwd);
        if !opts.env.iter().any(|(k, _)| k == "PWD") {
            builder.env("PWD", &opts.cwd);
        }
    }
    // No async runtime here: let blocking WASI calls block this thread.
    builder.allow_blocking_current_thread(true);
    // A command: the container's network namespace is the boundary (a pod's network, or none at
    // all), as for a native container; p2 sockets may use whatever it offers. wasmtime-wasi
    // starts with TCP and UDP off. A served workload gets less: `Outbound::restrict`.
    builder.inherit_network().allow_tcp(true).allow_udp(true).allow_ip_name_lookup(true);
    for (host, guest) in &opts.preopens {
        builder
            .preopened_dir(host, guest, FsPerms::ReadWrite)
            .map_err(|e| {
                format!(
                    "cannot open directory {} for the guest as {guest}: {}",
                    host.display(),
                    one_line(&e)
                )
            })?;
    }
    match &opts.stdio {
        Stdio::Inherit => {
            builder.inherit_stdio();
        }
        Stdio::Capture(capture) => {
            builder
                .stdin(MemoryInputPipe::new(capture.stdin.clone()))
                .stdout(capture.stdout.clone())
                .stderr(capture.stderr.clone());
        }
    }
    Ok(builder)
}
