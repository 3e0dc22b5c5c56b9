//! The hidden `init` mode: the shim binary re-executed as the container's first process.
//!
//! Stage 1 (fresh from exec, single-threaded) waits until the shim has put it in the
//! container's cgroup, enters the spec's namespaces and forks once, so that its child is the
//! first process of a new or joined pid namespace; it reports the child's pid and exits, and the
//! child is reparented to the shim (a subreaper). The init is non-dumpable from its first
//! instruction. Stage 2 checks the spec's security fields, builds the rootfs (the guest's view:
//! no kernel filesystem, `nodev`), reads the wasm through it and maps its compiled code from the
//! cache (or has the shim compile it: see `compile`; all of it still inside Create) while the
//! host's /proc and the cache are reachable, then pivots, drops privileges, loads seccomp and
//! the LSM labels, reports Ready and waits for Start. Signals are blocked before any thread
//! exists and handled by one thread: before Start they end the process at once, after it they
//! interrupt the guest (epoch), and a guest stuck in a host call (a blocked read) is ended
//! after a short grace.

use std::io::{BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oci_spec::runtime::Spec;
use wasm_shim_container::{namespaces, process, rootfs, seccomp, security};
use wasm_shim_engine::{
    Cache, CacheKey, CacheResult, CoreDumpCapture, Engine, EngineError, Features, GuestConfig, LimitNames, MetricsOptions, Origin, Outcome, Prepared,
    RequestTracing, RunOptions, ServeKind, ServeLimits, ServeOptions, ServingPool, Shutdown, StartInfo, Tier, Upgrade,
};
use wasm_shim_oci::{classify, HttpConfig, Kind, ServeMode};

use crate::errors::{ErrorKind, ShimError};
use crate::protocol::{self, FromInit, ToInit};
use crate::settings::Settings;
use crate::workers::{self, Drain, Role};

/// Signals that stop a wasm guest; any other signal is left at its default.
const STOP_SIGNALS: &[i32] = &[libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT, libc::SIGUSR1, libc::SIGUSR2];

/// How long a guest blocked in a host call gets to notice an interrupt before the process ends.
const INTERRUPT_GRACE: Duration = Duration::from_millis(100);

/// Entry of `containerd-shim-wasm-v1 init <bundle>`; never returns.
pub fn main(bundle: &str) -> ! {
    // First of all, before joining any namespace of the pod: a sidecar sharing the pod's pid
    // namespace must never open this process's /proc entries (memory, descriptors, root).
    if let Err(e) = security::set_non_dumpable() {
        eprintln!("containerd-shim-wasm-v1 init: {e}");
        process::exit_now(2);
    }
    let sync = match process::inherited_sync() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("containerd-shim-wasm-v1 init is started by the shim, not by hand: {e}");
            process::exit_now(2);
        }
    };
    let mut writer = match sync.try_clone() {
        Ok(w) => w,
        Err(_) => process::exit_now(2),
    };
    match stage1(Path::new(bundle), sync) {
        Ok(never) => match never {},
        Err(e) => {
            let _ = protocol::send(&mut writer, &FromInit::Error(e));
            process::exit_now(1);
        }
    }
}

enum Never {}

fn stage1(bundle: &Path, sync: UnixStream) -> Result<Never, ShimError> {
    let spec = wasm_shim_oci::load_spec(bundle)?;
    let mut reader = BufReader::new(sync.try_clone().map_err(ShimError::internal)?);
    match protocol::recv::<ToInit>(&mut reader).map_err(ShimError::internal)? {
        Some(ToInit::Go) => {}
        _ => process::exit_now(1),
    }
    let ns = spec.linux().as_ref().and_then(|l| l.namespaces().clone()).unwrap_or_default();
    let entered = namespaces::enter(&ns)?;
    if !entered.new_mount {
        return Err(ShimError::new(
            ErrorKind::InvalidArgument,
            "the spec has no mount namespace: a wasm container needs one to get its own rootfs",
        ));
    }
    // The child must not speak on the sync socket before the parent has reported its pid (the
    // shim reads Pid first): it waits for the end of this pipe, which closes when the parent
    // exits after sending.
    let (pid_sent, parent_done) = nix::unistd::pipe().map_err(ShimError::internal)?;
    match process::fork_single_threaded().map_err(ShimError::internal)? {
        process::Fork::Parent(pid) => {
            drop(pid_sent);
            let mut w = sync;
            let _ = protocol::send(&mut w, &FromInit::Pid(pid));
            drop(parent_done);
            process::exit_now(0);
        }
        process::Fork::Child => {
            drop(parent_done);
            let mut byte = [0u8; 1];
            let _ = std::io::Read::read(&mut std::fs::File::from(pid_sent), &mut byte);
            let mut writer = sync.try_clone().map_err(ShimError::internal)?;
            match stage2(bundle, &spec, entered, sync, reader) {
                Ok(never) => match never {},
                Err(e) => {
                    let _ = protocol::send(&mut writer, &FromInit::Error(e));
                    process::exit_now(1);
                }
            }
        }
    }
}

/// The wasm layer the shim fetched from containerd's content store, with its name for messages.
fn read_artifact(bundle: &Path) -> Result<Option<(String, Vec<u8>)>, ShimError> {
    let path = bundle.join(crate::container::ARTIFACT_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let name = std::fs::read_to_string(bundle.join(crate::container::ARTIFACT_NAME_FILE)).unwrap_or_else(|_| path.display().to_string());
            Ok(Some((name, bytes)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ShimError::internal(format!("{}: {e}", path.display()))),
    }
}

/// The workload's bytes, `path` opened inside `root` (see `rootfs::open_in_root`); one larger
/// than the settings allow is refused before it is read.
fn read_module(root: &std::fs::File, path: &Path, shown: &str, settings: &Settings) -> Result<Vec<u8>, ShimError> {
    use std::io::Read;
    let cannot = |e: std::io::Error| {
        let kind = if e.kind() == std::io::ErrorKind::PermissionDenied { ErrorKind::FailedPrecondition } else { ErrorKind::InvalidArgument };
        ShimError::new(kind, format!("{shown}: cannot read: {e}"))
    };
    let file = rootfs::open_in_root(root, path).map_err(cannot)?;
    let limit = settings.max_module_size;
    let size = file.metadata().map_err(cannot)?.len();
    let mut bytes = Vec::new();
    if size <= limit {
        // Bounded: the file may grow meanwhile.
        file.take(limit + 1).read_to_end(&mut bytes).map_err(cannot)?;
    }
    if size > limit || bytes.len() as u64 > limit {
        return Err(ShimError::new(ErrorKind::InvalidArgument, settings.too_big(shown, size.max(bytes.len() as u64))));
    }
    Ok(bytes)
}

fn rootfs_path(bundle: &Path, spec: &Spec) -> PathBuf {
    let root = spec.root().as_ref().map(|r| r.path().clone()).unwrap_or_else(|| PathBuf::from("rootfs"));
    if root.is_absolute() { root } else { bundle.join(root) }
}

/// The engine's share of the container memory limit: the rest is the init's own footprint
/// (runtime, compiled code), so that growing linear memory hits a clean trap before the
/// kernel's OOM killer.
pub fn engine_memory_limit(cgroup_limit: i64) -> Option<u64> {
    if cgroup_limit <= 0 {
        return None;
    }
    let limit = cgroup_limit as u64;
    let headroom = (limit / 4).clamp(8 << 20, 64 << 20);
    Some(limit.saturating_sub(headroom).max(limit / 2))
}

fn stage2(
    bundle: &Path,
    spec: &Spec,
    entered: namespaces::Entered,
    sync: UnixStream,
    mut reader: BufReader<UnixStream>,
) -> Result<Never, ShimError> {
    let signals = process::block_signals(STOP_SIGNALS).map_err(ShimError::internal)?;
    let mut writer = sync;
    if let Ok(w) = writer.try_clone() {
        forward_logs(w);
    }
    let settings = Settings::from_env();
    // The cache lives outside the rootfs: take a handle on it before pivot_root. It is only
    // read here, and closed before the guest runs.
    let cache = settings.cache_dir.as_ref().and_then(|dir| match Cache::open_existing(dir) {
        Ok(c) => Some(c),
        Err(e) => {
            log::warn!("compile cache {}: {e}; compiling without it", dir.display());
            None
        }
    });
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| ShimError::new(ErrorKind::InvalidArgument, "config.json: process is missing"))?;
    let rc = wasm_shim_oci::run_config(spec)?;
    if rc.terminal {
        return Err(ShimError::new(ErrorKind::Unimplemented, "a terminal (tty) is not supported for wasm containers"));
    }

    // Security fields are checked before anything is set up: one the shim cannot apply fails
    // Create, naming it.
    let seccomp = match spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) {
        Some(s) => Some(seccomp::plan(s)?),
        None => None,
    };
    // The LSM attributes and oom_score_adj live in /proc, which the guest's view has not.
    let lsm = security::prepare_lsm(process)?;
    security::apply_oom_score_adj(process);

    // A wasm OCI artifact: the shim left the layer in the bundle (until Create returns); read it
    // before pivot_root.
    let artifact = read_artifact(bundle)?;
    let root = rootfs::prepare(spec, &rootfs_path(bundle, spec))?;

    // Everything the guest's code needs is read and mapped before pivot_root, while the host's
    // /proc and the compile cache are still reachable: the module (through the rootfs, never
    // out of it), its compiled code (a cache handle closed before pivot_root). After it the
    // init holds no descriptor of a host directory.
    let (shown, bytes) = match artifact {
        Some(a) => a,
        None => {
            let path = wasm_shim_oci::resolve_executable(&root, &rc.entrypoint.path, rc.path_env.as_deref(), &rc.cwd)?;
            let inside = Path::new("/").join(path.strip_prefix(&root).unwrap_or(&path));
            let shown = inside.display().to_string();
            // The root is opened as root (the bundle's directories are containerd's, 0700); only
            // what is beneath it is read with the guest's ids.
            let root_dir = std::fs::File::open(&root).map_err(|e| ShimError::internal(format!("{}: {e}", root.display())))?;
            let bytes = security::as_user_for_files(process, || read_module(&root_dir, &inside, &shown, &settings))
                ??;
            (shown, bytes)
        }
    };
    match classify(&bytes, &shown) {
        Kind::WasmModule | Kind::WasmComponent | Kind::Wat => {}
        Kind::Elf | Kind::Script => {
            return Err(ShimError::new(
                ErrorKind::FailedPrecondition,
                format!("{shown}: is a native executable, not wasm; this runtime runs wasm modules and components only"),
            ))
        }
        Kind::Unknown => {
            let head: Vec<String> = bytes.iter().take(4).map(|b| format!("{b:02x}")).collect();
            let what = if bytes.is_empty() { "is empty".to_string() } else { format!("starts with {}", head.join(" ")) };
            return Err(ShimError::new(
                ErrorKind::InvalidArgument,
                format!("{shown}: not a wasm module, component or .wat file ({what})"),
            ));
        }
    }
    // Serving HTTP is decided before the engine exists: it sizes the instance pool.
    let http = wasm_shim_oci::http_config(spec, &rc.env)?;
    let serve = match http.mode {
        ServeMode::Http => Some(ServeKind::Http),
        ServeMode::Wagi => Some(ServeKind::Wagi),
        ServeMode::Command => None,
        ServeMode::Auto => (rc.entrypoint.export.is_none() && wasm_shim_engine::serves_http_by_default(&bytes)).then_some(ServeKind::Http),
    };
    // An outbound allow-list names hosts; the init resolves their names with the container's
    // /etc/hosts and /etc/resolv.conf. Were they writable by the guest, it could point an
    // allowed name at any address (the node's metadata service), or have names resolved by a
    // server of its choosing: read-only in its view, as when the pod sets
    // readOnlyRootFilesystem. /etc is too, so that the guest can neither move it away for one of
    // its own nor add files beside them. A command has the pod's whole network: nothing to
    // protect.
    if serve.is_some() && !http.allowed_outbound.is_empty() && !http.allowed_outbound.iter().any(|e| e.trim() == "*") {
        for file in ["/etc/hosts", "/etc/resolv.conf"] {
            rootfs::read_only_file(&root, Path::new(file))
                .map_err(|e| ShimError::internal(format!("{file}, made read-only for the outbound allow-list: {e}")))?;
        }
        rootfs::read_only_dir(&root, Path::new("/etc"))
            .map_err(|e| ShimError::new(ErrorKind::InvalidArgument, format!("/etc, made read-only for the outbound allow-list: {e}")))?;
    }
    // Reuse keeps a component instance for the next request. A WAGI module's `_start` runs once
    // (a second run finds the first one's state, which wasi-libc does not expect): refused, since
    // a user who asked for state that carries over would otherwise silently not get it.
    if http.instance_reuse > 1 {
        match serve {
            Some(ServeKind::Wagi) => {
                return Err(ShimError::new(
                    ErrorKind::InvalidArgument,
                    format!(
                        "annotation {}={}: a WAGI module runs once per request (its _start cannot run twice) and cannot be reused; reuse is for wasi:http components (remove the annotation or set it to 1)",
                        wasm_shim_oci::http::INSTANCE_REUSE,
                        http.instance_reuse
                    ),
                ))
            }
            Some(ServeKind::Http) => {}
            None => log::warn!(
                "{shown}: {}={} ignored: this workload runs as a command, not served",
                wasm_shim_oci::http::INSTANCE_REUSE,
                http.instance_reuse
            ),
        }
    }
    // The wasm features (the node's, then the workload's) and core dumps on trap.
    let workload = wasm_shim_oci::workload_config(spec)?;
    let features_error = |why: &dyn std::fmt::Display| {
        let (what, list) = if workload.wasm_features.is_empty() {
            (crate::settings::WASM_FEATURES, settings.wasm_features.as_str())
        } else {
            (wasm_shim_oci::debug::WASM_FEATURES, workload.wasm_features.as_str())
        };
        let what = if workload.wasm_features.is_empty() { what.to_string() } else { format!("annotation {what}") };
        ShimError::new(ErrorKind::InvalidArgument, format!("{what}={list:?}: {why}"))
    };
    let features = Features::layered(&settings.wasm_features, &workload.wasm_features).map_err(|e| features_error(&e))?;
    if let Some(dump) = &workload.coredump {
        // It must be there now (a volume the pod mounts), seen as the guest sees it.
        if let Err(e) = rootfs::open_dir_in_root(&root, &dump.dir) {
            return Err(ShimError::new(
                ErrorKind::InvalidArgument,
                format!("annotation {}={:?}: not a directory of the container: {e}", wasm_shim_oci::debug::COREDUMP_DIR, dump.dir.display()),
            ));
        }
    }
    let mut engine_config = settings.engine_config();
    engine_config.features = features;
    engine_config.coredump = workload.coredump.is_some();
    // Every thread of the init must be started after it has dropped privileges and taken its
    // LSM labels (both are per thread): no compiler threads.
    engine_config.single_threaded = true;
    // A server runs in a process per CPU (see `workers`); requests in flight are counted
    // across them, so any one may serve up to the cap.
    let processes = match serve {
        Some(_) => workers::count(&http, settings.serve_processes, workers::cpus_of(spec, crate::settings::cpus())),
        None => 1,
    };
    if serve.is_some() {
        engine_config.serving = Some(ServingPool { instances: http.max_concurrency, memory: http.request_memory });
    }
    let engine = Engine::with_config(engine_config).map_err(|e| match e {
        EngineError::Features(why) => features_error(&why),
        e => ShimError::internal(e.to_string()),
    })?;
    let export = rc.entrypoint.export.as_deref();
    let had_cache = cache.is_some();
    let compiling = std::time::Instant::now();
    let (prepared, cache_result) = match cache {
        Some(cache) => load_or_compile(&engine, &settings, cache, &bytes, &shown, export, &mut writer, &mut reader)?,
        None => (engine.prepare(&bytes, &shown, export)?, CacheResult::Off),
    };
    let compile_took = compiling.elapsed();
    let start_tier = prepared.tier();
    // For the shim's `compile` task span.
    let cache_name = match cache_result {
        CacheResult::Hit => "hit",
        CacheResult::Miss => "miss",
        CacheResult::Off => "off",
    };
    let loaded = FromInit::Loaded {
        cache: cache_name.into(),
        tier: start_tier.name().into(),
        micros: u64::try_from(compile_took.as_micros()).unwrap_or(u64::MAX),
        file: shown.clone(),
    };
    protocol::send(&mut writer, &loaded).map_err(ShimError::internal)?;
    // A server that starts on baseline code switches to the optimized code once the shim has
    // built it: the entry it will ask for.
    let await_optimized = match (serve, had_cache, prepared.tier()) {
        (Some(_), true, Tier::Baseline) => Some(engine.cache_key(&bytes, Tier::Optimized)?),
        _ => None,
    };
    let component = prepared.is_component();
    drop(bytes);
    if http.mode == ServeMode::Command && prepared.serves().is_some() {
        return Err(ShimError::new(
            ErrorKind::InvalidArgument,
            format!("{shown}: exports wasi:http/incoming-handler, not wasi:cli/run, and {} says to run it as a command", wasm_shim_oci::http::SERVE),
        ));
    }
    let (prepared, listener, metrics_listener) = match serve {
        Some(kind) => {
            let prepared = engine.serve_as(prepared, kind).map_err(|e| {
                let mut e = ShimError::from(e);
                if kind == ServeKind::Http && !component {
                    e.message.push_str(&format!(" (WAGI: annotation {}=wagi)", wasm_shim_oci::http::SERVE));
                }
                e
            })?;
            // Listen now, inside Create: a port in use fails the container at once, and
            // connections made before Start wait in the backlog instead of being refused.
            let listener = listen(http.port, wasm_shim_oci::http::PORT)?;
            let metrics = match http.metrics_port {
                Some(port) => Some(listen(port, wasm_shim_oci::http::METRICS_PORT)?),
                None => None,
            };
            (prepared, Some(listener), metrics)
        }
        None => {
            if let Some(port) = http.metrics_port {
                log::warn!("{shown}: {}={port} ignored: metrics are kept for served workloads only, and this one runs as a command", wasm_shim_oci::http::METRICS_PORT);
            }
            if http.access_log {
                log::warn!("{shown}: {}=true ignored: the access log is for served workloads only, and this one runs as a command", wasm_shim_oci::http::ACCESS_LOG);
            }
            (prepared, None, None)
        }
    };

    // Capabilities, no_new_privs and LSM labels below apply to the calling thread only: check,
    // while /proc is still there, that it is the only one.
    match process::thread_count() {
        Ok(1) => {}
        Ok(n) => return Err(ShimError::internal(format!("{n} threads before dropping privileges; the init must have one"))),
        Err(e) => return Err(ShimError::internal(format!("cannot count the init's threads: {e}"))),
    }
    rootfs::enter(spec, &root)?;
    // The mode the guest's new files get is masked as runc masks a process's: the spec's
    // umask, else 022 (not whatever the shim was started with).
    let umask = process.user().umask().unwrap_or(0o022);
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(umask as libc::mode_t & 0o777));
    if entered.new_uts {
        if let Some(h) = spec.hostname() {
            rootfs::set_hostname(h).map_err(|e| ShimError::internal(format!("hostname {h}: {e}")))?;
        }
    }
    security::apply_rlimits(process)?;
    // Seccomp as runc places it: without no_new_privs loading a filter needs CAP_SYS_ADMIN, so
    // it goes before the capabilities are dropped; with it, after (the filter then also covers
    // the switch of user). Either way before any guest code, on every thread.
    let nnp = process.no_new_privileges().unwrap_or(false);
    let load_seccomp = |plan: &Option<seccomp::Plan>| -> Result<(), ShimError> {
        match plan {
            Some(p) => Ok(p.load()?),
            None => Ok(()),
        }
    };
    if !nnp {
        load_seccomp(&seccomp)?;
    }
    security::apply_user_and_caps(process)?;
    if nnp {
        load_seccomp(&seccomp)?;
    }

    let memory_limit = spec
        .linux()
        .as_ref()
        .and_then(|l| l.resources().as_ref())
        .and_then(|r| r.memory().as_ref())
        .and_then(|m| m.limit())
        .and_then(engine_memory_limit);
    // wasi:config entries: the environment's (by prefix), then the config directory's files,
    // which win on the same key. Read here, inside the container's root with the guest's own
    // user and capabilities: nothing the guest could not read itself.
    let config = if component {
        let mut entries = workload.config_from_env(&rc.env);
        if let Some(dir) = &workload.config_dir {
            entries.extend(read_config_dir(dir).map_err(|e| {
                ShimError::new(
                    ErrorKind::InvalidArgument,
                    format!("annotation {}={:?}: {e}", wasm_shim_oci::debug::CONFIG_DIR, dir.display()),
                )
            })?);
        }
        GuestConfig::new(entries)
    } else {
        if workload.config_dir.is_some() || workload.config_env_prefix.is_some() {
            log::warn!("{shown}: {} and {} ignored: wasi:config is for components, and this is a module", wasm_shim_oci::debug::CONFIG_DIR, wasm_shim_oci::debug::CONFIG_ENV_PREFIX);
        }
        GuestConfig::default()
    };
    let opts = RunOptions {
        config,
        args: rc.args.clone(),
        env: rc.env.clone(),
        cwd: rc.cwd.clone(),
        preopens: vec![(PathBuf::from("/"), "/".to_string())],
        memory_limit,
        coredump: workload.coredump.as_ref().map(|d| CoreDumpCapture::new(d.max_size)),
        ..Default::default()
    };

    // The LSM labels, on the only thread there is yet: every thread after inherits them.
    lsm.apply()?;

    // A server on more than one CPU: its other processes, forked now, while this is the only
    // thread and everything the guest runs under is in place.
    // What they count together lives in memory they share with the init: the requests in
    // flight (the pod's cap) and the metrics, whose endpoint the init serves.
    let shared = match &listener {
        Some(_) if processes > 1 => match process::shared_counters(1 + wasm_shim_engine::METRICS_CELLS) {
            Ok(c) => Some(c),
            Err(e) => {
                log::warn!("{shown}: serving in one process: no shared memory: {e}");
                None
            }
        },
        _ => None,
    };
    let in_flight = shared.map(|c| &c[0]);
    let cells = shared.filter(|_| metrics_listener.is_some()).map(|c| &c[1..]);
    let role = match shared {
        Some(_) => workers::fork(processes - 1),
        None => Role::Main(Vec::new()),
    };
    // The processes there are (a fork may have been refused).
    let serving_processes = match &role {
        Role::Main(w) => w.len() + 1,
        Role::Worker { .. } => processes,
    };
    let started = Arc::new(AtomicBool::new(false));
    let shutdown = listener.as_ref().map(|_| Shutdown::new());
    let pids = match &role {
        Role::Main(w) => w.iter().map(|w| w.pid).collect(),
        Role::Worker { .. } => Vec::new(),
    };
    let drain = shutdown.clone().map(|s| Drain::new(s, pids));
    {
        let engine = engine.clone();
        let started = started.clone();
        let drain = drain.clone();
        let worker = matches!(role, Role::Worker { .. });
        std::thread::spawn(move || loop {
            let sig = match signals.wait() {
                Ok(s) => s as i32,
                Err(_) => continue,
            };
            if !started.load(Ordering::SeqCst) {
                // A worker not started yet leaves the status to the init (the drain it passed on
                // may come before its Start).
                process::exit_now(if worker { 0 } else { 128 + sig });
            }
            match &drain {
                // A server drains on the first signal (what Kubernetes sends before its grace
                // period; the init passes it on to its workers) and the init stops at once on a
                // second (its workers die with it: they ignore any but the first).
                Some(d) => {
                    if !d.signal(sig) && !worker {
                        process::exit_now(128 + sig);
                    }
                }
                None => {
                    engine.interrupt(sig);
                    std::thread::spawn(move || {
                        std::thread::sleep(INTERRUPT_GRACE);
                        process::exit_now(128 + sig);
                    });
                }
            }
        });
    }

    let serving = |prepared: Prepared, listener, shutdown, share: usize, upgrade: &Upgrade, metrics, init_traces: &crate::protocol::InitTraces| -> i32 {
        // Request spans: an export thread of their own, started now (every thread after the
        // privileges are dropped), only when an endpoint is configured.
        let traces = crate::traces::for_requests(&rc.env, spec, init_traces, &http.allowed_outbound);
        let tracing = traces.as_ref().map(|t| RequestTracing::new(t.tracer.clone()));
        let mut limits = serve_limits(&http);
        limits.max_connections = workers::share(http.max_open_connections(), processes, share);
        let opts = ServeOptions {
            run: opts.clone(),
            limits,
            metrics,
            access_log: http.access_log,
            tracing,
            current_thread: serving_processes > 1,
            in_flight: in_flight.filter(|_| serving_processes > 1),
            // What a burst of requests left in the malloc heap goes back to the pod's memory
            // once the server is quiet (measured: 9 and 6 MiB of a CPython handler's init and
            // worker after load).
            when_idle: Some(process::release_free_memory),
        };
        let served = engine.serve_upgradable(prepared, listener, &opts, &shutdown, upgrade);
        // The last requests' spans, within a bound: a dead collector does not hold up the exit.
        if let Some(t) = &traces {
            t.shutdown(crate::traces::FLUSH_TIMEOUT);
        }
        match served {
            Ok(stats) => {
                log::debug!("{shown}: served {} requests on {} connections", stats.requests, stats.connections);
                0
            }
            Err(e) => {
                let _ = writeln!(std::io::stderr(), "{shown}: cannot serve: {e}");
                wasm_shim_engine::EXIT_CANNOT_RUN
            }
        }
    };

    if let Role::Worker { index, sock } = role {
        // A worker serves once the init is started, and follows it to the optimized code.
        drop(writer);
        drop(reader);
        drop(metrics_listener);
        let Some(ToInit::Start { traces: init_traces, create_micros }) = workers::await_start(&sock) else {
            process::exit_now(0);
        };
        started.store(true, Ordering::SeqCst);
        let metrics = cells.map(|cells| MetricsOptions {
            listener: None,
            start: StartInfo {
                cache: cache_result,
                tier: start_tier,
                compile: compile_took,
                create: Some(Duration::from_micros(create_micros)),
                start_requested: std::time::Instant::now(),
            },
            cells: Some(cells),
        });
        let upgrade = Upgrade::new();
        if let (Some(key), Some(kind)) = (await_optimized, serve) {
            let export = rc.entrypoint.export.clone();
            let (engine, upgrade, name) = (engine.clone(), upgrade.clone(), shown.clone());
            let _ = std::thread::Builder::new().name("upgrade".into()).spawn(move || {
                if let Ok(Some(fd)) = process::recv_fd(&sock) {
                    load_upgrade(&engine, std::fs::File::from(fd), &key, kind, component, &name, export.as_deref(), &upgrade, None);
                }
            });
        }
        let (Some(listener), Some(shutdown)) = (listener, shutdown) else { process::exit_now(1) };
        let code = serving(prepared, listener, shutdown, index, &upgrade, metrics, &init_traces);
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();
        process::exit_now(code);
    }
    let Role::Main(workers) = role else { unreachable!("a worker has exited above") };

    protocol::send(&mut writer, &FromInit::Ready).map_err(ShimError::internal)?;
    let (create_took, init_traces) = match protocol::recv::<ToInit>(&mut reader) {
        Ok(Some(ToInit::Start { create_micros, traces })) => (Duration::from_micros(create_micros), traces),
        // The shim is gone or confused: nobody would see our output or exit status.
        _ => process::exit_now(1),
    };
    let start_requested = std::time::Instant::now();
    started.store(true, Ordering::SeqCst);

    if let (Some(listener), Some(shutdown), Some(drain)) = (listener, shutdown, drain) {
        workers::start(&workers, &ToInit::Start { create_micros: create_took.as_micros() as u64, traces: init_traces.clone() });
        let watching = (!workers.is_empty()).then(|| workers::watch(drain.clone()));
        let upgrade = Upgrade::new();
        if let (Some(key), Some(kind)) = (await_optimized, serve) {
            let export = rc.entrypoint.export.clone();
            let to = workers.iter().filter_map(|w| w.sock.try_clone().ok()).collect();
            await_handover(&engine, &mut writer, &reader, key, kind, component, &shown, export, &upgrade, to);
        }
        let metrics = metrics_listener.map(|l| MetricsOptions {
            listener: Some(Arc::new(l)),
            start: StartInfo {
                cache: cache_result,
                tier: start_tier,
                compile: compile_took,
                create: Some(create_took),
                start_requested,
            },
            cells,
        });
        let mut code = serving(prepared, listener, shutdown, 0, &upgrade, metrics, &init_traces);
        // Drained, or failed to serve at all: the workers stop too (a no-op if they were told).
        drain.begin(libc::SIGTERM);
        // The workers drain with this process (the signal was passed on); the first of them to
        // fail gives the container its status, if this process did not fail itself.
        if let Some(Ok(Some(failed))) = watching.map(|w| w.join()) {
            if code == 0 {
                code = failed;
            }
        }
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();
        process::exit_now(code);
    }

    let outcome = engine.run(&prepared, &opts);
    let code = outcome.exit_code();
    match &outcome {
        Outcome::Trap { message, oom } => {
            let line = if *oom {
                format!("{shown}: out of memory: {message}")
            } else if message.starts_with("wasm trap: ") {
                // wasmtime's trap text says it already.
                format!("{shown}: {message}")
            } else {
                format!("{shown}: wasm trap: {message}")
            };
            let _ = writeln!(std::io::stderr(), "{line}");
            if let (Some(capture), Some(dump)) = (&opts.coredump, &workload.coredump) {
                let said = match capture.take() {
                    Some(Ok(bytes)) => match write_coredump(&dump.dir, &shown, &bytes) {
                        Ok(path) => format!("{shown}: core dump written to {} ({} bytes)", path.display(), bytes.len()),
                        Err(e) => format!("{shown}: core dump not written to {}: {e}", dump.dir.display()),
                    },
                    Some(Err(why)) => format!("{shown}: core dump not written: {why} ({})", wasm_shim_oci::debug::COREDUMP_MAX_SIZE),
                    None => format!("{shown}: no core dump recorded for this trap"),
                };
                let _ = writeln!(std::io::stderr(), "{said}");
            }
            if *oom {
                let _ = protocol::send(&mut writer, &FromInit::Oom { message: line });
            }
        }
        Outcome::Failed(message) => {
            let _ = writeln!(std::io::stderr(), "{shown}: cannot run: {message}");
        }
        Outcome::Exited(_) | Outcome::Interrupted(_) => {}
    }
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    process::exit_now(code);
}

/// Asks the shim for the optimized code of a server started on baseline code and, in a thread,
/// waits for it: a read-only descriptor of the finished cache entry (SCM_RIGHTS on the sync
/// socket, which nothing else reads after Start), passed on to the serving processes
/// (`workers`), checked and loaded by that descriptor, then offered to the server. The init
/// never names the cache. Without it the baseline code goes on serving.
#[allow(clippy::too_many_arguments)]
fn await_handover(
    engine: &Engine,
    writer: &mut UnixStream,
    reader: &BufReader<UnixStream>,
    key: CacheKey,
    kind: ServeKind,
    component: bool,
    shown: &str,
    export: Option<String>,
    upgrade: &Upgrade,
    workers: Vec<UnixStream>,
) {
    if !reader.buffer().is_empty() {
        return log::warn!("{shown}: unexpected data after Start; serving baseline code");
    }
    let sock = match reader.get_ref().try_clone() {
        Ok(s) => s,
        Err(e) => return log::warn!("{shown}: {e}; serving baseline code"),
    };
    if protocol::send(writer, &FromInit::AwaitOptimized { key: key.as_str().to_string() }).is_err() {
        return;
    }
    let (engine, upgrade, name) = (engine.clone(), upgrade.clone(), shown.to_string());
    let since = std::time::Instant::now();
    let spawned = std::thread::Builder::new().name("upgrade".into()).spawn(move || {
        let fd = match process::recv_fd(&sock) {
            Ok(Some(fd)) => fd,
            Ok(None) => return,
            Err(e) => return log::warn!("{name}: optimized code not handed over ({e}); serving baseline code"),
        };
        let entry = std::fs::File::from(fd);
        workers::hand_over(&workers, &entry);
        load_upgrade(&engine, entry, &key, kind, component, &name, export.as_deref(), &upgrade, Some(since));
    });
    if let Err(e) = spawned {
        log::warn!("{shown}: {e}; serving baseline code");
    }
}

/// Loads the optimized code handed over as `entry` and offers it to the server; `since`: when
/// it was asked for (said in the log by the one process that asked).
#[allow(clippy::too_many_arguments)]
fn load_upgrade(
    engine: &Engine,
    entry: std::fs::File,
    key: &CacheKey,
    kind: ServeKind,
    component: bool,
    name: &str,
    export: Option<&str>,
    upgrade: &Upgrade,
    since: Option<std::time::Instant>,
) {
    let better = engine.load_entry_file(entry, key, Tier::Optimized, component, name, export).and_then(|p| engine.serve_as(p, kind));
    match better {
        Ok(p) => {
            upgrade.offer(p);
            if let Some(since) = since {
                log::info!("{name}: serving optimized code from now on ({} ms after start)", since.elapsed().as_millis());
            }
        }
        Err(e) => log::warn!("{name}: optimized code unusable, serving baseline code: {e}"),
    }
}

/// The engine's bounds of a served workload, as the annotations set them, and named after them
/// in the lines the server writes to the container's log.
fn serve_limits(http: &HttpConfig) -> ServeLimits {
    ServeLimits {
        max_concurrency: http.max_concurrency,
        max_connections: http.max_open_connections(),
        request_timeout: http.request_timeout,
        request_memory: http.request_memory,
        max_body: http.max_body,
        allowed_outbound: http.allowed_outbound.clone(),
        instance_reuse: http.instance_reuse,
        names: LimitNames {
            request_timeout: wasm_shim_oci::http::REQUEST_TIMEOUT,
            allowed_outbound: wasm_shim_oci::http::ALLOWED_OUTBOUND,
            instance_reuse: wasm_shim_oci::http::INSTANCE_REUSE,
        },
    }
}

/// A listener on `port` on every address of the container's network namespace: IPv6 and IPv4
/// where IPv6 is available, else IPv4. `annotation` sets the port (for the error).
fn listen(port: u16, annotation: &str) -> Result<std::net::TcpListener, ShimError> {
    let v6 = std::net::SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port));
    let v4 = std::net::SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, port));
    std::net::TcpListener::bind(v6).or_else(|e| match e.raw_os_error() {
        Some(libc::EAFNOSUPPORT) | Some(libc::EADDRNOTAVAIL) => std::net::TcpListener::bind(v4),
        _ => Err(e),
    })
    .map_err(|e| {
        let other = if annotation == wasm_shim_oci::http::PORT { format!("{annotation} or PORT") } else { annotation.to_string() };
        ShimError::new(ErrorKind::FailedPrecondition, format!("cannot listen on port {port}: {e} (set {other} to another port)"))
    })
}

/// Compiled code for the workload: mapped from the cache (optimized, else baseline while the
/// shim has optimized code built), else compiled by the shim's helper and then mapped, else
/// (no helper result) compiled here; and whether the cache had it. Consumes the cache handle:
/// closed before the guest runs.
#[allow(clippy::too_many_arguments)]
fn load_or_compile(
    engine: &Engine,
    settings: &Settings,
    cache: Cache,
    bytes: &[u8],
    name: &str,
    export: Option<&str>,
    writer: &mut UnixStream,
    reader: &mut BufReader<UnixStream>,
) -> Result<(Prepared, CacheResult), ShimError> {
    let tiers: &[Tier] = if settings.baseline { &[Tier::Optimized, Tier::Baseline] } else { &[Tier::Optimized] };
    if let Some(p) = engine.load_cached(&cache, bytes, name, export, tiers)? {
        report_hit(writer, &p);
        if p.tier() == Tier::Baseline {
            // Optimized code is still missing (being compiled, or its compile died): ask again.
            protocol::send_compile(writer, name, bytes, false).map_err(ShimError::internal)?;
        }
        return Ok((p, CacheResult::Hit));
    }
    if bytes.len() as u64 <= protocol::MAX_COMPILE_BYTES {
        protocol::send_compile(writer, name, bytes, true).map_err(ShimError::internal)?;
        match protocol::recv::<ToInit>(reader) {
            Ok(Some(ToInit::Compiled)) => {}
            _ => process::exit_now(1),
        }
        if let Some(p) = engine.load_cached(&cache, bytes, name, export, tiers)? {
            report_hit(writer, &p);
            return Ok((p, CacheResult::Miss));
        }
    }
    // Invalid wasm (reported from here as without a cache) or no usable helper result.
    drop(cache);
    log::info!("{name}: no compiled code in the cache; compiling it in the container");
    Ok((engine.prepare(bytes, name, export)?, CacheResult::Miss))
}

fn report_hit(writer: &mut UnixStream, prepared: &Prepared) {
    if let Origin::Cache(key) = prepared.origin() {
        let _ = protocol::send(writer, &FromInit::CacheHit { key: key.clone() });
    }
}

/// Writes a core dump into `dir`, a directory of the container's view (the init has pivoted
/// into it and runs as the container's user): resolved inside the root, a new file that cannot
/// be an existing one or a symlink. Returns its path in the container.
/// The most a config directory may hold, all files together (ConfigMaps are at most 1 MiB).
const CONFIG_DIR_MAX: u64 = 1 << 20;

/// The `wasi:config` entries of a config directory (a ConfigMap or Secret volume): one per
/// regular file directly in it, file name → contents (UTF-8). Names starting with `.` are
/// skipped (a volume's `..data` and `..<timestamp>` bookkeeping); the visible names are links
/// into them, followed like any path of the container. Anything else (a directory, a FIFO, a
/// device) is skipped. Runs inside the container's root with the guest's credentials.
fn read_config_dir(dir: &Path) -> Result<Vec<(String, String)>, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let listing = std::fs::read_dir(dir).map_err(|e| format!("cannot list: {e}"))?;
    let mut names: Vec<String> = Vec::new();
    for entry in listing {
        let entry = entry.map_err(|e| format!("cannot list: {e}"))?;
        match entry.file_name().into_string() {
            Ok(name) if !name.starts_with('.') => names.push(name),
            Ok(_) => {}
            Err(name) => return Err(format!("{name:?}: a file name that is not UTF-8 cannot be a key")),
        }
    }
    names.sort();
    let mut entries = Vec::new();
    let mut total = 0u64;
    for name in names {
        let path = dir.join(&name);
        // Non-blocking: a FIFO put there must not hang Create; it is skipped below.
        let mut file = match std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::IsADirectory => continue,
            Err(e) => return Err(format!("{name}: {e}")),
        };
        if !file.metadata().map_err(|e| format!("{name}: {e}"))?.is_file() {
            continue;
        }
        let mut bytes = Vec::new();
        Read::by_ref(&mut file).take(CONFIG_DIR_MAX + 1 - total).read_to_end(&mut bytes).map_err(|e| format!("{name}: {e}"))?;
        total += bytes.len() as u64;
        if total > CONFIG_DIR_MAX {
            return Err(format!("more than {} bytes in all (at {name})", CONFIG_DIR_MAX));
        }
        let value = String::from_utf8(bytes).map_err(|_| format!("{name}: not UTF-8 text (wasi:config values are strings)"))?;
        entries.push((name, value));
    }
    Ok(entries)
}

fn write_coredump(dir: &Path, shown: &str, bytes: &[u8]) -> std::io::Result<PathBuf> {
    let stem: String = Path::new(shown)
        .file_stem()
        .map(|s| s.to_string_lossy().chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect())
        .unwrap_or_else(|| "wasm".to_string());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let name = format!("{stem}-{}-{:09}.coredump", now.as_secs(), now.subsec_nanos());
    let handle = rootfs::open_dir_in_root(Path::new("/"), dir)?;
    let mut file = rootfs::create_new_file_in(&handle, &name)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    Ok(dir.join(name))
}

/// The init has no log pipe: its warnings (a corrupt cache entry, no pooling allocator) go to
/// the shim over the sync socket, which logs them with the container's id.
struct ForwardLogs(Mutex<UnixStream>);

impl log::Log for ForwardLogs {
    fn enabled(&self, m: &log::Metadata) -> bool {
        // The init's own news (a server switching to optimized code) and every library's
        // warnings; the shim rate-limits what it logs after Start.
        m.level() <= log::Level::Warn || (m.level() <= log::Level::Info && m.target().starts_with("containerd_shim_wasm_v1"))
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            if let Ok(mut w) = self.0.lock() {
                let _ = protocol::send(&mut *w, &FromInit::Log { level: r.level().into(), message: bounded(r.args().to_string()) });
            }
        }
    }
    fn flush(&self) {}
}

/// The longest log line an init forwards: a message carrying what a guest chose (a URL it asked
/// for, an error it caused) is cut here, so that no line, escaped as JSON, nears
/// [`protocol::MAX_MESSAGE`].
const MAX_LOG_LINE: usize = 4 << 10;

fn bounded(mut message: String) -> String {
    if message.len() > MAX_LOG_LINE {
        let cut = message.floor_char_boundary(MAX_LOG_LINE);
        let dropped = message.len() - cut;
        message.truncate(cut);
        message.push_str(&format!("… ({dropped} more bytes cut)"));
    }
    message
}

fn forward_logs(socket: UnixStream) {
    if log::set_boxed_logger(Box::new(ForwardLogs(Mutex::new(socket)))).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_log_lines_are_bounded() {
        assert_eq!(bounded("short".into()), "short");
        let long = bounded("é".repeat(MAX_LOG_LINE));
        assert!(long.len() < MAX_LOG_LINE + 40 && long.ends_with(&format!("… ({} more bytes cut)", MAX_LOG_LINE)), "{}", &long[long.len() - 40..]);
        // Even all control characters, escaped as JSON, stay within a message.
        let line = serde_json::to_vec(&FromInit::Log { level: protocol::LogLevel::Warn, message: bounded("\u{1}".repeat(1 << 20)) }).unwrap();
        assert!((line.len() as u64) < protocol::MAX_MESSAGE, "{}", line.len());
    }

    #[test]
    fn engine_limit_leaves_headroom_for_the_runtime() {
        assert_eq!(engine_memory_limit(0), None);
        assert_eq!(engine_memory_limit(-1), None);
        assert_eq!(engine_memory_limit(64 << 20), Some(48 << 20));
        assert_eq!(engine_memory_limit(1 << 30), Some((1 << 30) - (64 << 20)));
        // Small limits keep at least half for the guest.
        assert_eq!(engine_memory_limit(8 << 20), Some(4 << 20));
    }

    #[test]
    fn serving_defaults_are_the_engines() {
        let limits = serve_limits(&HttpConfig::default());
        assert_eq!(limits.names.allowed_outbound, "wasm.containerd.io/http-allowed-outbound");
        assert_eq!(ServeLimits { names: LimitNames::default(), ..limits }, ServeLimits::default());
    }
}
