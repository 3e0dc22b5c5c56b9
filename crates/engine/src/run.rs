//! Start-time work: build the guest's WASI context from `RunOptions` (args,
//! env, working directory, preopened directories, stdio), instantiate the
//! prepared workload in a fresh store with the memory limiter and the epoch
//! deadline, call its entry point and turn what happened into an `Outcome`.

use std::io::Write;
use std::path::PathBuf;

use wasmtime::component::{ResourceTable, Val as CVal};
use wasmtime::{Store, Val};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::{MemoryInputPipe, MemoryOutputPipe};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::engine::Engine;
use crate::error::one_line;
use crate::limits::Limiter;
use crate::outcome::{classify, Outcome};
use crate::prepare::{ComponentEntry, Kind, Prepared};

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
    pub coredump: Option<crate::CoreDumpCapture>,
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
    limiter: Limiter,
}

impl WasiView for P2State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}

impl Engine {
    /// Runs a prepared workload to completion on the calling thread.
    ///
    /// Never fails as such: every way the guest can end is an `Outcome`, whose
    /// `exit_code` is the container's exit status. Stdout and stderr are
    /// flushed before returning.
    pub fn run(&self, prepared: &Prepared, opts: &RunOptions) -> Outcome {
        let outcome = match &prepared.kind {
            Kind::Module { pre, init, entry } => self.run_module(prepared, pre, init, entry, opts),
            Kind::Component { pre, entry } => self.run_component(prepared, pre, entry, opts),
            Kind::Proxy { .. } | Kind::Wagi { .. } => {
                return Outcome::Failed("an HTTP workload is served, not run".to_string())
            }
        };
        // wasmtime-wasi writes inherited stdout/stderr through std's handles;
        // stdout is line-buffered, so a last line without '\n' waits here.
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();
        log::debug!("{}: {outcome}", prepared.file);
        outcome
    }

    fn run_module(
        &self,
        prepared: &Prepared,
        pre: &wasmtime::InstancePre<P1State>,
        init: &Option<String>,
        entry: &str,
        opts: &RunOptions,
    ) -> Outcome {
        let wasi = match wasi_builder(opts) {
            Ok(mut builder) => builder.build_p1(),
            Err(message) => return Outcome::Failed(message),
        };
        let state = P1State {
            wasi,
            limiter: Limiter::new(opts.memory_limit),
        };
        let mut store = Store::new(&prepared.engine, state);
        store.limiter(|s| &mut s.limiter);
        if let Some(outcome) = self.arm_interrupt(&mut store) {
            return outcome;
        }
        let instance = match pre.instantiate(&mut store) {
            Ok(instance) => instance,
            Err(e) => return self.finish(prepared, &e, &store.data().limiter, true),
        };
        let mut exit = 0;
        for name in init
            .iter()
            .map(String::as_str)
            .chain(std::iter::once(entry))
        {
            let Some(func) = instance.get_func(&mut store, name) else {
                // `prepare` checked it; only a bug gets here.
                return Outcome::Failed(format!("export {name} vanished"));
            };
            let mut results = vec![Val::I32(0); func.ty(&store).results().len()];
            if let Err(e) = func.call(&mut store, &[], &mut results) {
                capture_coredump(opts, &e, &mut store, &prepared.file);
                return self.finish(prepared, &e, &store.data().limiter, false);
            }
            if let [Val::I32(code)] = results[..] {
                exit = code;
            }
        }
        Outcome::Exited(exit)
    }

    fn run_component(
        &self,
        prepared: &Prepared,
        pre: &wasmtime::component::InstancePre<P2State>,
        entry: &ComponentEntry,
        opts: &RunOptions,
    ) -> Outcome {
        let ctx = match wasi_builder(opts) {
            Ok(mut builder) => builder.build(),
            Err(message) => return Outcome::Failed(message),
        };
        let state = P2State {
            ctx,
            table: ResourceTable::new(),
            limiter: Limiter::new(opts.memory_limit),
        };
        let mut store = Store::new(&prepared.engine, state);
        store.limiter(|s| &mut s.limiter);
        if let Some(outcome) = self.arm_interrupt(&mut store) {
            return outcome;
        }
        match entry {
            ComponentEntry::Run(command_pre) => {
                let command = match command_pre.instantiate(&mut store) {
                    Ok(command) => command,
                    Err(e) => return self.finish(prepared, &e, &store.data().limiter, true),
                };
                match command.wasi_cli_run().call_run(&mut store) {
                    Ok(Ok(())) => Outcome::Exited(0),
                    Ok(Err(())) => Outcome::Exited(1),
                    Err(e) => {
                        capture_coredump(opts, &e, &mut store, &prepared.file);
                        self.finish(prepared, &e, &store.data().limiter, false)
                    }
                }
            }
            ComponentEntry::Func { name, index } => {
                let instance = match pre.instantiate(&mut store) {
                    Ok(instance) => instance,
                    Err(e) => return self.finish(prepared, &e, &store.data().limiter, true),
                };
                let Some(func) = instance.get_func(&mut store, index) else {
                    return Outcome::Failed(format!("export {name} vanished"));
                };
                let mut results = vec![CVal::Bool(false); func.ty(&store).results().len()];
                if let Err(e) = func.call(&mut store, &[], &mut results) {
                    capture_coredump(opts, &e, &mut store, &prepared.file);
                    return self.finish(prepared, &e, &store.data().limiter, false);
                }
                Outcome::Exited(match results.first() {
                    Some(CVal::Result(Err(_))) => 1,
                    Some(CVal::S32(code)) => *code,
                    Some(CVal::U32(code)) => *code as i32,
                    Some(CVal::U8(code)) => i32::from(*code),
                    _ => 0,
                })
            }
        }
    }

    /// Sets the one-tick epoch deadline, then checks for an interrupt that
    /// came before it: `interrupt` records the signal before bumping the
    /// epoch, so one of the two always catches it.
    fn arm_interrupt<T>(&self, store: &mut Store<T>) -> Option<Outcome> {
        store.set_epoch_deadline(1);
        store.epoch_deadline_trap();
        self.interrupted_by().map(Outcome::Interrupted)
    }

    fn finish(
        &self,
        prepared: &Prepared,
        err: &wasmtime::Error,
        limiter: &Limiter,
        instantiating: bool,
    ) -> Outcome {
        log::debug!("{}: guest stopped: {err:?}", prepared.file);
        classify(
            err,
            limiter.hit.as_ref(),
            self.interrupted_by(),
            instantiating,
        )
    }
}

/// Leaves the core dump of a trap where `opts` asks for it (a clean exit carries none).
fn capture_coredump<T>(opts: &RunOptions, err: &wasmtime::Error, store: &mut Store<T>, file: &str) {
    if let Some(capture) = &opts.coredump {
        if err.downcast_ref::<wasmtime::Trap>().is_some() {
            capture.capture(err, store, file);
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
