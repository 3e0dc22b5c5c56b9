//! `containerd-shim-wasm-v1`: a containerd shim v2 (runtime type `io.containerd.wasm.v1`) that
//! runs WebAssembly with wasmtime inside the container's namespaces and cgroup.
//!
//! # Layout
//! - `shim`: the `start`/`delete` actions and serving until Shutdown.
//! - `task_api`: the ttrpc server of the Task API, under both names containerd uses.
//! - `service`: the ttrpc Task API containerd calls.
//! - `content`: wasm OCI artifacts read from containerd's content store.
//! - `creating`: Creates in progress, which a Delete of their id cancels.
//! - `container`: one container, wasm or native (its `Runtime`): rootfs, cgroup, init process,
//!   the thread that records its exit.
//! - `exec`: exec processes of native containers.
//! - `stdio`: a process's stdio (init or exec): containerd's FIFOs as its descriptors (the
//!   stdin relay), or a terminal (the pty master runc hands over).
//! - `task`: the task lifecycle state machine.
//! - `entrypoint`: what a container's entrypoint is, asked once per Create: native, a file of
//!   the rootfs, or not there (then maybe a wasm layer of the image).
//! - `native`: native containers (pause, sidecars) handed to runc.
//! - `init`: the hidden `init` mode, the container's first process, which runs the wasm.
//! - `compile`: the hidden `compile-cache` mode (helpers that fill the compile cache outside
//!   the container) and the shim side that starts them, bounded (cgroup, OOM score, timeout).
//! - `slots`: the node-wide cap on concurrent compiles (lock files in the cache directory).
//! - `precompile`: the `precompile` mode: an image's wasm compiled into the cache before its
//!   first start (one-shot, or a node agent following containerd's image events).
//! - `install`: the `install` mode: the binary next to containerd, the `wasm` runtime in its config.
//! - `doctor`: the `doctor` mode: checks a node and prints one line per finding with its fix.
//! - `settings`: the `WASM_SHIM_*` environment (cache, baseline first start, pooling, the
//!   bounds of compiles).
//! - `protocol`: messages between the shim and its init.
//! - `events`: publishing task events to containerd in order.
//! - `stats`: cgroup statistics as containerd's metrics types.
//! - `traces`: OpenTelemetry traces over OTLP/HTTP when an endpoint is configured: the
//!   shim's task spans (create, compile, start, exit) to the endpoint of its own environment
//!   only, the exporter a serving init's request spans use (the pod's endpoint, else the
//!   shim's), the bounded batching export thread.
//! - `logging`: the shim's own log lines (logfmt on containerd's log), keyed by the container
//!   (`id`, `pod`, `container`) each thread works for.
//! - `errors`: the one error type of the service and the init, mapped to ttrpc status codes
//!   once (the crates' errors by their own kind).

mod compile;
mod container;
mod content;
mod creating;
mod doctor;
mod entrypoint;
mod errors;
mod events;
mod exec;
mod init;
mod install;
mod logging;
mod native;
mod precompile;
mod protocol;
mod settings;
mod service;
mod shim;
mod slots;
mod stats;
mod stdio;
mod task;
mod task_api;
mod traces;
mod workers;

/// A command-line argument of the `install`, `doctor` and `precompile` modes as flag and inline
/// value: `--flag=value` gives both, anything else is a flag (or a value) whose value, if any,
/// is the next argument.
pub(crate) fn split_flag(arg: &str) -> (&str, Option<String>) {
    match arg.split_once('=') {
        Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
        _ => (arg, None),
    }
}

/// The runtime type containerd knows this shim by.
pub const RUNTIME_ID: &str = "io.containerd.wasm.v1";

fn main() {
    let mut args = std::env::args();
    match args.nth(1).as_deref() {
        Some("init") => {
            let bundle = args.next().unwrap_or_default();
            init::main(&bundle);
        }
        Some(compile::MODE) => compile::helper_main(&args.collect::<Vec<_>>()),
        Some("install") => std::process::exit(install::main(&args.collect::<Vec<_>>())),
        Some("precompile") => std::process::exit(precompile::main(&args.collect::<Vec<_>>())),
        Some("doctor") => std::process::exit(doctor::main(&args.collect::<Vec<_>>())),
        _ => {}
    }
    if std::env::args().any(|a| a == "-v" || a == "--version" || a == "-version") {
        println!("containerd-shim-wasm-v1 {} (wasmtime 48)", env!("CARGO_PKG_VERSION"));
        return;
    }
    let flags = containerd_shim::parse(&std::env::args_os().skip(1).collect::<Vec<_>>());
    if let Ok(flags) = &flags {
        if flags.action.is_empty() && !flags.socket.is_empty() {
            if let Err(e) = task_api::serve(flags) {
                log::error!("{e:#}");
                eprintln!("{RUNTIME_ID}: {e:#}");
                std::process::exit(1);
            }
            return;
        }
        if flags.action == "start" {
            std::process::exit(match shim::start_action(flags) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("{RUNTIME_ID}: start: {e}");
                    1
                }
            });
        }
    }
    let config = containerd_shim::Config {
        // Exits are collected per container through pidfds; a global waitpid(-1) reaper
        // would steal them.
        no_reaper: true,
        ..Default::default()
    };
    containerd_shim::run::<shim::WasmShim>(RUNTIME_ID, Some(config));
}
