//! Filling the compile cache outside the container: the hidden `compile-cache` mode (a helper
//! process, the shim binary re-executed) and the shim side that starts helpers when an init
//! finds no optimized code for its wasm.
//!
//! The container init only ever reads the cache. It sends the wasm to the shim, which runs:
//! - with `WASM_SHIM_BASELINE` on (the default): a baseline (Winch) helper, waited for, so
//!   the init starts on baseline code within Create; then an optimized (Cranelift) helper in
//!   the background at the lowest priority (idle scheduling class, the compile cgroup's minimum CPU
//!   weight), so the next start maps optimized code and starts next to it are not slowed. The background
//!   helper is a process of its own: it finishes even when the guest, the init and the shim
//!   are long gone.
//! - with it off: the optimized helper, waited for.
//!
//! Compiles are work a pod causes, so every helper runs bounded:
//! - **cgroup**: a helper Create waits for runs in the container's cgroup (its memory and CPU
//!   count against the container's limits, as an in-container compile would). A background
//!   helper outlives the container: it runs in the node's compile cgroup
//!   (`WASM_SHIM_COMPILE_CGROUP`, default `/containerd-shim-wasm/compile`, created on demand
//!   with the memory and CPU limits of `WASM_SHIM_COMPILE_MEMORY` and `WASM_SHIM_COMPILE_CPU`),
//!   shared by every background compile of the node. When that cgroup cannot be made (no
//!   permission, a controller missing) the shim says so once and runs them in its own cgroup.
//! - **OOM**: a helper sets its own `oom_score_adj` first of all, instead of inheriting the
//!   shim's (containerd's, often -999): a waited helper is as killable as its container or
//!   more (at least 0), a background one the most killable (1000): killing it costs nothing
//!   but the work done, and the next start asks again.
//! - **time**: a helper lives at most `WASM_SHIM_COMPILE_TIMEOUT` (waited) or
//!   `WASM_SHIM_BACKGROUND_COMPILE_TIMEOUT` (background), waiting for its turn included; past
//!   it a watchdog thread SIGKILLs it, and the shim kills a waited one too. Whatever it held
//!   (the entry's lock, a compile slot) is a `flock` and goes with it. A waited compile that
//!   timed out is logged with the module's name and left to the init, as a failed one.
//! - **concurrency**: at most `WASM_SHIM_COMPILE_CONCURRENCY` helpers compile at once on the
//!   node, every shim together: see `slots`. Background helpers leave one slot to waited ones.
//!
//! Each helper compiles under the entry's lock: ten replicas of a new module starting at once
//! make one baseline compile (the nine others wait for it, then map it) and one optimized
//! compile (the others find the lock taken and leave). A waited helper takes the lock before a
//! slot, so helpers waiting for another's compile hold no slot; a background one waits for its
//! slot first and locks only then, so that a start needing the entry never waits behind a
//! background compile queued for a slot. Helpers run as root in the host's mount
//! namespace, so nothing inside a container can write compiled code another container would
//! run. Modules above `protocol::MAX_COMPILE_BYTES` are compiled in the init.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use wasm_shim_container::cgroup::{Cgroup, CgroupError, Resources};
use wasm_shim_engine::{Cache, CacheKey, Engine, EngineError, Stored, Tier};

use crate::settings::{show_size, Settings};
use crate::slots::Slots;

/// The hidden mode's first argument.
pub const MODE: &str = "compile-cache";

/// The nice value of a helper nobody waits for.
const BACKGROUND_NICE: i32 = 19;

/// The compile cgroup's CPU weight, as v1 shares (the kernel's minimum; v2: weight 1).
const COMPILE_CPU_SHARES: u64 = 2;
/// The `oom_score_adj` of a helper nobody waits for: the first process the OOM killer takes.
const BACKGROUND_OOM_SCORE_ADJ: i32 = 1000;
/// The CFS period of the compile cgroup's CPU limit, in microseconds (the kernel's default).
const CPU_PERIOD_US: u64 = 100_000;
/// The smallest CFS quota the kernel accepts, in microseconds.
const MIN_CPU_QUOTA_US: u64 = 1_000;
const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// How long before its deadline a helper stops waiting for a compile slot (at most a tenth of
/// its time), to log why it compiled nothing before its watchdog would kill it silently.
const SLOT_WAIT_MARGIN: Duration = Duration::from_secs(1);

/// A helper's exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The entry is in the cache (compiled now or found there).
    Stored,
    /// The wasm is invalid: no tier will compile it.
    Invalid,
    /// Another process holds the entry's lock (asked not to wait).
    Busy,
    /// Anything else (the cache cannot be written, the compiler refused, killed, ...).
    Failed,
    /// Its time ran out: no compile slot freed in time, or the compile took too long.
    TimedOut,
    /// The baseline compiler (Winch) cannot compile it: it uses a feature Winch lacks (GC,
    /// exceptions, tail calls, ...), or it is invalid. The optimizing compiler decides.
    Unsupported,
}

impl Status {
    fn code(self) -> i32 {
        match self {
            Status::Stored => 0,
            Status::Failed => 1,
            Status::Busy => 2,
            Status::Invalid => 3,
            Status::TimedOut => 4,
            Status::Unsupported => 5,
        }
    }

    fn from_code(code: Option<i32>) -> Status {
        match code {
            Some(0) => Status::Stored,
            Some(2) => Status::Busy,
            Some(3) => Status::Invalid,
            Some(4) => Status::TimedOut,
            Some(5) => Status::Unsupported,
            _ => Status::Failed,
        }
    }

    /// How a helper ended: its exit code, else the signal that ended it `after` its start; a
    /// SIGKILL at or past its time `limit` is its watchdog's.
    fn from_exit(code: Option<i32>, signal: Option<i32>, after: Duration, limit: Duration) -> Status {
        match (code, signal) {
            (Some(_), _) => Status::from_code(code),
            (None, Some(libc::SIGKILL)) if after >= limit => Status::TimedOut,
            _ => Status::Failed,
        }
    }
}

/// How a helper is run: its second argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// A start waits for it: the entry's lock is waited for; logs to the bundle's `log` FIFO.
    Wait,
    /// In the background: leaves when another process holds the entry's lock; logs to the
    /// bundle's `log` FIFO.
    Try,
    /// For `precompile`: as `Try`, logging to stderr (the agent's own log), an invalid module
    /// included (no container will say it instead).
    Agent,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Wait => "wait",
            Mode::Try => "try",
            Mode::Agent => "agent",
        }
    }

    fn parse(s: &str) -> Option<Mode> {
        [Mode::Wait, Mode::Try, Mode::Agent].into_iter().find(|m| m.name() == s)
    }
}

/// `containerd-shim-wasm-v1 compile-cache <optimized|baseline> <wait|try|agent> <oom_score_adj> <name>`,
/// the wasm on stdin. Logs to the bundle's `log` FIFO (containerd's log) when it can, to stderr
/// in `agent` mode. Never returns.
pub fn helper_main(args: &[String]) -> ! {
    let status = match args {
        [tier, lock, adj, name] if Mode::parse(lock).is_some() => helper(tier, Mode::parse(lock).unwrap_or(Mode::Try), adj, name),
        _ => {
            eprintln!("usage: containerd-shim-wasm-v1 {MODE} <optimized|baseline> <wait|try|agent> <oom_score_adj> <name> < module.wasm");
            Status::Failed
        }
    };
    std::process::exit(status.code());
}

fn helper(tier: &str, mode: Mode, adj: &str, name: &str) -> Status {
    let started = Instant::now();
    let wait = mode == Mode::Wait;
    // First: not the shim's OOM protection (containerd's -999 is inherited through fork).
    let adj_written = set_oom_score_adj(adj);
    if mode == Mode::Agent {
        init_stderr_log(log::LevelFilter::Info);
    } else {
        init_log();
    }
    if let Err(e) = adj_written {
        warn!("compile cache: {name}: oom_score_adj {adj}: {e}");
    }
    let tier = match tier {
        "optimized" => Tier::Optimized,
        "baseline" => Tier::Baseline,
        other => {
            warn!("compile cache: unknown tier {other:?}");
            return Status::Failed;
        }
    };
    if !wait {
        // A background compile (nobody waits for it). Before any thread exists, so the
        // compiler's threads inherit it: the guest (and other containers starting) come first.
        // The idle class inside its cgroup, and the lowest nice for kernels or sandboxes that
        // refuse it. Across cgroups these count for nothing: the compile cgroup's own CPU
        // weight (the lowest, see `compile_resources`) is what keeps starts ahead of it.
        if let Err(e) = wasm_shim_container::process::set_idle_scheduling() {
            debug!("compile cache: SCHED_IDLE: {e}");
        }
        if let Err(e) = wasm_shim_container::process::set_nice(BACKGROUND_NICE) {
            debug!("compile cache: nice: {e}");
        }
    }
    let settings = Settings::from_env();
    let limit = if wait { settings.compile_timeout } else { settings.background_compile_timeout };
    let deadline = started + limit;
    if arm_watchdog(deadline).is_err() {
        // A helper without its time limit must not run.
        warn!("compile cache: {name}: cannot start the watchdog thread");
        return Status::Failed;
    }
    let Some(dir) = &settings.cache_dir else {
        return Status::Failed;
    };
    let mut bytes = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut bytes) {
        warn!("compile cache: {name}: reading the module: {e}");
        return Status::Failed;
    }
    let cache = match Cache::open(dir) {
        Ok(c) => c.with_max_size(settings.cache_max_size),
        Err(e) => {
            warn!("compile cache {}: {e}", dir.display());
            return Status::Failed;
        }
    };
    let slots = match Slots::open(dir, settings.compile_concurrency) {
        Ok(s) => s,
        Err(e) => {
            warn!("compile cache {}: compile slots: {e}", dir.display());
            return Status::Failed;
        }
    };
    let engine = match Engine::with_config(settings.engine_config()) {
        Ok(e) => e,
        Err(e) => {
            warn!("compile cache: {e}");
            return Status::Failed;
        }
    };
    // Once the entry is known to be missing (see `compile_to_cache_admitted` for the order with
    // its lock): a compile slot, waited for until shortly before the watchdog fires, so that a
    // helper that got none says so.
    let slot_deadline = deadline - SLOT_WAIT_MARGIN.min(limit / 10);
    let take_slot = || match slots.take(slots.range(!wait), slot_deadline) {
        Ok(Some(slot)) => {
            debug!("compile cache: {name}: {tier} compile in slot {} after {:?}", slot.index(), started.elapsed());
            Some(Ok(slot))
        }
        Ok(None) => None,
        // Not a reason to compile without one: the cap would not hold.
        Err(e) => Some(Err(e)),
    };
    let result = (|| -> Result<Stored, EngineError> {
        // Optimized code may have landed since the init looked: baseline is then useless.
        if tier == Tier::Baseline && engine.has_cached(&cache, &bytes, Tier::Optimized)? {
            return Ok(Stored::Present);
        }
        let mut slot_error = None;
        let stored = engine.compile_to_cache_admitted(&cache, &bytes, name, tier, wait, || match take_slot() {
            Some(Ok(slot)) => Some(slot),
            Some(Err(e)) => {
                slot_error = Some(e);
                None
            }
            None => None,
        })?;
        if let Some(e) = slot_error {
            return Err(EngineError::Cache(format!("{}: compile slots: {e}", dir.display())));
        }
        if tier == Tier::Optimized && !matches!(stored, Stored::Busy | Stored::NotAdmitted) {
            // Nobody needs the baseline code any more.
            cache.remove(&engine.cache_key(&bytes, Tier::Baseline)?);
        }
        Ok(stored)
    })();
    match result {
        Ok(Stored::Busy) => Status::Busy,
        Ok(Stored::NotAdmitted) => {
            warn!(
                "compile cache: {name}: no compile slot of the {} free within {limit:?} ({}); {tier} code not compiled",
                slots.count(),
                if wait { "WASM_SHIM_COMPILE_TIMEOUT" } else { "WASM_SHIM_BACKGROUND_COMPILE_TIMEOUT" }
            );
            Status::TimedOut
        }
        Ok(_) => Status::Stored,
        // Winch accepts less than Cranelift: not a verdict on the module.
        Err(e) if e.is_invalid_input() && tier == Tier::Baseline => {
            info!(
                "compile cache: {name}: the baseline compiler (Winch) cannot compile it ({e}); compiling optimized code (Cranelift) instead{}",
                match engine.features().beyond_winch() {
                    lacks if lacks.is_empty() => String::new(),
                    lacks => format!(": Winch lacks {}", lacks.join(", ")),
                }
            );
            Status::Unsupported
        }
        Err(e) if e.is_invalid_input() => {
            // A container reports it itself when it starts; the agent has nobody else to.
            if mode == Mode::Agent {
                warn!("compile cache: {e}");
            } else {
                debug!("compile cache: {e}");
            }
            Status::Invalid
        }
        Err(e) => {
            warn!("compile cache: {tier} compile: {e}");
            Status::Failed
        }
    }
}

/// Writes this process's `oom_score_adj` (`-1000..=1000`).
fn set_oom_score_adj(adj: &str) -> std::io::Result<()> {
    let adj: i32 = adj.parse().map_err(|_| std::io::Error::other("not a number"))?;
    std::fs::write("/proc/self/oom_score_adj", adj.clamp(-1000, 1000).to_string())
}

/// A thread that SIGKILLs this process at `deadline`: the helper's time limit, whatever it is
/// doing then (waiting for the entry's lock or a slot, compiling, writing).
fn arm_watchdog(deadline: Instant) -> std::io::Result<()> {
    std::thread::Builder::new().name("watchdog".into()).spawn(move || {
        loop {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            std::thread::sleep(deadline - now);
        }
        let _ = wasm_shim_container::process::kill(std::process::id() as i32, libc::SIGKILL);
    })?;
    Ok(())
}

/// Logs go to containerd's log through the `log` FIFO in the working directory (the bundle).
/// Opened without blocking: with no reader there is no log, rather than a hang.
fn init_log() {
    let Ok(file) = OpenOptions::new().write(true).custom_flags(libc::O_NONBLOCK).open("log") else {
        return;
    };
    // Back to blocking writes: a full pipe delays a line rather than dropping it.
    let _ = nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()));
    // With the keys of the container it compiles for (`helper_command`).
    crate::logging::init_fifo(file, log::LevelFilter::Info, crate::logging::Context::from_env());
}

/// A plain stderr logger (`level message`) for the agent and its helpers: systemd's journal
/// or the calling job keeps it.
pub fn init_stderr_log(level: log::LevelFilter) {
    struct Stderr;
    impl log::Log for Stderr {
        fn enabled(&self, m: &log::Metadata) -> bool {
            // Our own lines, and every library's warnings.
            m.level() <= log::Level::Warn || m.target().starts_with("containerd_shim_wasm_v1") || m.target().starts_with("wasm_shim")
        }
        fn log(&self, r: &log::Record) {
            if self.enabled(r.metadata()) {
                eprintln!("{:<5} {}", r.level().as_str().to_ascii_lowercase(), r.args());
            }
        }
        fn flush(&self) {}
    }
    if log::set_boxed_logger(Box::new(Stderr)).is_ok() {
        log::set_max_level(level);
    }
}

/// The container a compile is asked for.
pub struct Requester<'a> {
    /// Its cgroup, where the compiles it waits for run.
    pub cgroup: Option<&'a Cgroup>,
    /// Its init's `oom_score_adj` (the spec's `process.oomScoreAdj`, else 0).
    pub oom_score_adj: i32,
    /// Its Create, which a Delete may cancel: no further helper starts then.
    pub creating: Option<&'a crate::creating::Creating>,
}

impl Requester<'_> {
    fn cancelled(&self) -> bool {
        self.creating.is_some_and(|c| c.is_cancelled())
    }
}

/// The limits of the node's compile cgroup.
fn compile_resources(settings: &Settings) -> Resources {
    let quota = (settings.compile_millicpus.saturating_mul(CPU_PERIOD_US) / 1000).max(MIN_CPU_QUOTA_US);
    Resources {
        memory_limit: Some(i64::try_from(settings.compile_memory).unwrap_or(i64::MAX)),
        // The lowest weight (v1 shares 2, v2 weight 1): the CPU limit bounds what compiles may
        // take; the weight makes them yield to any busy container, so a replica starting
        // next to a background compile starts as fast as next to nothing (`make bench` burst).
        cpu_shares: Some(COMPILE_CPU_SHARES),
        cpu_quota: Some(i64::try_from(quota).unwrap_or(i64::MAX)),
        cpu_period: Some(CPU_PERIOD_US),
        ..Resources::default()
    }
}

/// The compile cgroup `path` under the cgroup `root`, created when missing, with the limits of
/// the settings written (again: they may have changed since another shim made it).
fn prepare_compile_cgroup(root: &Path, path: &str, settings: &Settings) -> Result<Cgroup, CgroupError> {
    let cg = Cgroup::new(root, path)?;
    cg.create()?;
    cg.apply(&compile_resources(settings))?;
    Ok(cg)
}

/// The cgroup for a background helper: the node's compile cgroup, `None` when it is off or
/// cannot be made (then a warning, once per shim process; the helper runs in the shim's).
fn compile_cgroup(root: &Path, settings: &Settings) -> Option<Cgroup> {
    static WARNED: AtomicBool = AtomicBool::new(false);
    let path = settings.compile_cgroup.as_deref()?;
    match prepare_compile_cgroup(root, path, settings) {
        Ok(cg) => Some(cg),
        Err(e) => {
            if !WARNED.swap(true, Ordering::Relaxed) {
                warn!("compile cache: background compiles run without their cgroup {path} (memory {}, {}m CPU): {e}", show_size(settings.compile_memory), settings.compile_millicpus);
            } else {
                debug!("compile cache: cgroup {path}: {e}");
            }
            None
        }
    }
}

/// This binary in its hidden mode (in unit tests: the test binary, see
/// `tests::helper_process`).
fn helper_program() -> Command {
    #[cfg(not(test))]
    let mut cmd = Command::new("/proc/self/exe");
    #[cfg(test)]
    let mut cmd = tests::helper_program();
    cmd.arg(MODE);
    cmd
}

/// The command line of a helper.
fn helper_command(settings: &Settings, bundle: &Path, tier: Tier, mode: Mode, oom_score_adj: i32, name: &str) -> Command {
    let mut cmd = helper_program();
    cmd.arg(tier.name())
        .arg(mode.name())
        .arg(oom_score_adj.to_string())
        .arg(name)
        .env_clear()
        .current_dir(bundle)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own process group: signals meant for the shim's group do not reach it.
        .process_group(0);
    settings.apply_to(&mut cmd);
    // Its log lines carry the keys of the container it compiles for.
    if let Some(ctx) = crate::logging::current() {
        ctx.to_env(&mut cmd);
    }
    cmd
}

/// Starts a helper, in `cgroup` if given, with the wasm on its stdin (written by a thread,
/// then closed). The helper reads its stdin before any work, so it is in the cgroup before it
/// does any.
fn start(mut cmd: Command, bytes: Arc<Vec<u8>>, cgroup: Option<&Cgroup>) -> std::io::Result<Child> {
    let mut child = cmd.spawn()?;
    if let Some(cg) = cgroup {
        if let Err(e) = cg.add_process(child.id() as i32) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::other(format!("cgroup: {e}")));
        }
    }
    let mut stdin = child.stdin.take().expect("stdin is piped");
    std::thread::Builder::new().name("compile-input".into()).spawn(move || {
        let _ = stdin.write_all(&bytes);
    })?;
    Ok(child)
}

/// How a reaped child ended: (exit code, signal).
fn ended(status: std::io::Result<std::process::ExitStatus>) -> (Option<i32>, Option<i32>) {
    match status {
        Ok(s) => (s.code(), s.signal()),
        Err(_) => (None, None),
    }
}

/// Runs a helper in the requester's cgroup and waits for its verdict, at most its time limit.
fn run(settings: &Settings, bundle: &Path, tier: Tier, name: &str, bytes: &Arc<Vec<u8>>, by: &Requester) -> Status {
    let limit = settings.compile_timeout;
    let started = Instant::now();
    let cmd = helper_command(settings, bundle, tier, Mode::Wait, by.oom_score_adj.max(0), name);
    let child = match start(cmd, bytes.clone(), by.cgroup) {
        Ok(c) => c,
        Err(e) => {
            warn!("compile cache: cannot start the {tier} compile helper: {e}");
            return Status::Failed;
        }
    };
    let status = wait_for(child, started, limit);
    debug!("compile cache: {name}: {tier} helper {status:?} after {:?}", started.elapsed());
    status
}

/// Waits for a helper started at `started`, at most `limit`; then kills it.
fn wait_for(mut child: Child, started: Instant, limit: Duration) -> Status {
    let (tx, rx) = mpsc::channel();
    let pid = child.id();
    let waiter = std::thread::Builder::new().name(format!("compile-{pid}")).spawn(move || {
        let _ = tx.send(ended(child.wait()));
    });
    if waiter.is_err() {
        return Status::Failed;
    }
    match rx.recv_timeout(limit.saturating_sub(started.elapsed())) {
        Ok((code, signal)) => Status::from_exit(code, signal, started.elapsed(), limit),
        Err(_) => {
            // Not reaped yet (the waiter holds it), so the pid is still this helper's.
            let _ = wasm_shim_container::process::kill(pid as i32, libc::SIGKILL);
            Status::TimedOut
        }
    }
}

/// For `precompile`: compiles optimized code for `bytes` into the cache as a background compile
/// of the node is (the compile cgroup and its limits, OOM score 1000, the idle CPU class, the background
/// time limit, a compile slot that leaves one to starts, the entry's lock: never twice at once,
/// never again when present), and waits for it. The helper logs to this process's stderr.
pub fn precompile(settings: &Settings, name: &str, bytes: Vec<u8>) -> Status {
    let started = Instant::now();
    let cgroup = compile_cgroup(Path::new(CGROUP_ROOT), settings);
    let mut cmd = helper_command(settings, Path::new("/"), Tier::Optimized, Mode::Agent, BACKGROUND_OOM_SCORE_ADJ, name);
    cmd.stderr(Stdio::inherit());
    let child = match start(cmd, Arc::new(bytes), cgroup.as_ref()) {
        Ok(c) => c,
        Err(e) => {
            warn!("compile cache: cannot start the optimized compile helper: {e}");
            return Status::Failed;
        }
    };
    PRECOMPILE_HELPER.store(child.id(), Ordering::SeqCst);
    let status = wait_for(child, started, settings.background_compile_timeout);
    PRECOMPILE_HELPER.store(0, Ordering::SeqCst);
    status
}

/// The pid of the helper `precompile` waits for, 0 when none.
static PRECOMPILE_HELPER: AtomicU32 = AtomicU32::new(0);

/// Kills the helper `precompile` waits for, if any (the agent is stopping: the helper runs in
/// the compile cgroup, out of reach of a stop of the agent's own cgroup).
pub fn kill_precompile_helper() {
    let pid = PRECOMPILE_HELPER.swap(0, Ordering::SeqCst);
    if pid != 0 {
        let _ = wasm_shim_container::process::kill(pid as i32, libc::SIGKILL);
    }
}

/// Starts the optimized helper in the background, in the node's compile cgroup: nobody waits
/// for it, a thread reaps it. Returns its pid.
fn background(settings: &Settings, bundle: &Path, name: &str, bytes: Arc<Vec<u8>>) -> Option<u32> {
    let cgroup = compile_cgroup(Path::new(CGROUP_ROOT), settings);
    let cmd = helper_command(settings, bundle, Tier::Optimized, Mode::Try, BACKGROUND_OOM_SCORE_ADJ, name);
    match start(cmd, bytes, cgroup.as_ref()) {
        Ok(mut child) => {
            let pid = child.id();
            let name = name.to_string();
            let limit = settings.background_compile_timeout;
            let started = Instant::now();
            let ctx = crate::logging::current();
            let _ = std::thread::Builder::new().name(format!("compile-{pid}")).spawn(move || {
                let _ctx = ctx.map(crate::logging::enter);
                let (code, signal) = ended(child.wait());
                match Status::from_exit(code, signal, started.elapsed(), limit) {
                    Status::TimedOut => warn!("compile cache: {name}: background optimized compile stopped after {:?} (WASM_SHIM_BACKGROUND_COMPILE_TIMEOUT)", started.elapsed()),
                    _ if signal == Some(libc::SIGKILL) => warn!("compile cache: {name}: background optimized compile killed after {:?} (out of memory in its cgroup?)", started.elapsed()),
                    status => debug!("compile cache: {name}: background optimized compile: {status:?}"),
                }
            });
            Some(pid)
        }
        Err(e) => {
            warn!("compile cache: cannot start the optimized compile helper: {e}");
            None
        }
    }
}

/// The shim's answer to an init's `Compile` request; returns once the init may look in the
/// cache again (at once when it does not wait). Whatever the helpers did, the init then loads
/// what is cached, or compiles by itself.
pub fn request(settings: &Settings, bundle: &Path, by: &Requester, name: &str, bytes: Vec<u8>, wait: bool) {
    let bytes = Arc::new(bytes);
    if !wait {
        debug!("{name}: running baseline code; compiling optimized code in the background");
        background(settings, bundle, name, bytes);
        return;
    }
    let started = Instant::now();
    let timed_out = |tier: Tier| {
        warn!(
            "{name}: the {tier} compile did not finish within {:?} (WASM_SHIM_COMPILE_TIMEOUT); the container compiles it itself",
            settings.compile_timeout
        )
    };
    if by.cancelled() {
        return;
    }
    if settings.baseline {
        match run(settings, bundle, Tier::Baseline, name, &bytes, by) {
            Status::Stored => {
                info!("{name}: not in the compile cache; baseline code ready in {} ms, optimized code compiling in the background", started.elapsed().as_millis());
                background(settings, bundle, name, bytes);
                return;
            }
            // The init compiles it to report the error as usual.
            Status::Invalid => return,
            // A feature Winch lacks (or invalid: then the optimized helper says so): the
            // optimized code, waited for, and cached like any other.
            Status::Unsupported => {}
            // The optimized compile would take longer still, and the node is too busy or the
            // module too big for its time: straight to the init.
            Status::TimedOut => return timed_out(Tier::Baseline),
            Status::Busy | Status::Failed => {}
        }
    }
    if by.cancelled() {
        return;
    }
    match run(settings, bundle, Tier::Optimized, name, &bytes, by) {
        Status::TimedOut => timed_out(Tier::Optimized),
        status => info!("{name}: not in the compile cache; optimized compile {status:?} in {} ms", started.elapsed().as_millis()),
    }
}

/// Marks a cache entry as used (LRU), as reported by an init.
pub fn touch(settings: &Settings, key: &str) {
    let (Some(dir), Some(key)) = (&settings.cache_dir, CacheKey::parse(key)) else {
        return;
    };
    if let Err(e) = Cache::open_existing(dir).and_then(|c| c.touch(&key)) {
        debug!("compile cache: touch {key}: {e}");
    }
}

/// How long the shim looks for an entry a running server waits for (a compile that died, a
/// cache that refused the entry: the server goes on with baseline code).
const HANDOVER_WAIT: Duration = Duration::from_secs(600);

/// Waits (in a thread, polling with backoff) for the cache entry at `path`, then hands a
/// read-only descriptor of it to the init on `sock` (SCM_RIGHTS). The init checks and maps the
/// code by that descriptor; it never holds the cache directory. Logs in the caller's context.
pub fn hand_over_when_built(id: &str, path: std::path::PathBuf, sock: std::os::unix::net::UnixStream) {
    let ctx = crate::logging::current();
    let spawned = std::thread::Builder::new().name(format!("handover-{id}")).spawn(move || {
        let _ctx = ctx.map(crate::logging::enter);
        let since = Instant::now();
        let mut pause = Duration::from_millis(20);
        while since.elapsed() < HANDOVER_WAIT {
            match OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC).open(&path) {
                Ok(file) => {
                    use std::os::fd::AsFd;
                    match wasm_shim_container::process::send_fd(&sock, file.as_fd()) {
                        Ok(()) => debug!("handed {} to the init after {} ms", path.display(), since.elapsed().as_millis()),
                        Err(e) => debug!("cannot hand {} to the init: {e}", path.display()),
                    }
                    return;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return warn!("{}: {e}; the server keeps its baseline code", path.display()),
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_secs(1));
        }
        warn!("no optimized code at {} after {HANDOVER_WAIT:?}; the server keeps its baseline code", path.display());
    });
    if let Err(e) = spawned {
        warn!("{e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    const WAT: &str = r#"(module (func (export "_start")))"#;

    /// Unit tests run as the test binary: a helper is that binary running `helper_process`.
    pub(super) fn helper_program() -> Command {
        let mut cmd = Command::new(std::env::current_exe().expect("the test binary"));
        cmd.args(["--exact", "compile::tests::helper_process", "--nocapture", "-q", "--test-threads=1", "--"]);
        cmd
    }

    /// Not a test by itself: a compile helper when the test binary is started as one (with
    /// `compile-cache ...` among its arguments, see `helper_program`).
    #[test]
    fn helper_process() {
        let args: Vec<String> = std::env::args().collect();
        if let Some(at) = args.iter().position(|a| a == MODE) {
            helper_main(&args[at + 1..]);
        }
    }

    fn settings(cache: &Path) -> Settings {
        Settings { cache_dir: Some(cache.to_path_buf()), compile_cgroup: None, ..Settings::default() }
    }

    const ME: Requester = Requester { cgroup: None, oom_score_adj: 0, creating: None };

    fn compiles_logged(cache: &Path) -> Vec<String> {
        std::fs::read_to_string(cache.join("compile.log")).unwrap_or_default().lines().map(String::from).collect()
    }

    fn entries(cache: &Path, tier: char) -> usize {
        std::fs::read_dir(cache)
            .unwrap()
            .flatten()
            .filter(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.ends_with(".cwasm") && n.split('-').nth(1).is_some_and(|t| t.starts_with(tier))
            })
            .count()
    }

    #[test]
    fn modes_round_trip() {
        for m in [Mode::Wait, Mode::Try, Mode::Agent] {
            assert_eq!(Mode::parse(m.name()), Some(m));
        }
        assert_eq!(Mode::parse("later"), None);
    }

    #[test]
    fn exit_codes_round_trip() {
        for s in [Status::Stored, Status::Invalid, Status::Busy, Status::Failed, Status::TimedOut, Status::Unsupported] {
            assert_eq!(Status::from_code(Some(s.code())), s);
        }
        assert_eq!(Status::from_code(None), Status::Failed);
        assert_eq!(Status::from_code(Some(101)), Status::Failed);
    }

    #[test]
    fn a_sigkill_at_the_time_limit_is_a_timeout() {
        let limit = Duration::from_secs(10);
        assert_eq!(Status::from_exit(Some(4), None, Duration::ZERO, limit), Status::TimedOut);
        assert_eq!(Status::from_exit(Some(0), None, limit * 2, limit), Status::Stored);
        assert_eq!(Status::from_exit(None, Some(libc::SIGKILL), limit, limit), Status::TimedOut);
        // Killed before its time: the OOM killer, someone else.
        assert_eq!(Status::from_exit(None, Some(libc::SIGKILL), limit / 2, limit), Status::Failed);
        assert_eq!(Status::from_exit(None, Some(libc::SIGSEGV), limit * 2, limit), Status::Failed);
    }

    #[test]
    fn compile_cgroup_limits_from_the_settings() {
        let s = Settings { compile_memory: 512 << 20, compile_millicpus: 1500, ..Settings::default() };
        let r = compile_resources(&s);
        assert_eq!(r.memory_limit, Some(512 << 20));
        assert_eq!((r.cpu_quota, r.cpu_period), (Some(150_000), Some(100_000)));
        assert_eq!(r.cpu_shares, Some(2), "the lowest CPU weight: starts come first");
        assert_eq!(r.pids_limit, None);
        assert!(r.devices.is_none());
        // Below the kernel's smallest quota: the smallest quota.
        let r = compile_resources(&Settings { compile_millicpus: 1, ..Settings::default() });
        assert_eq!(r.cpu_quota, Some(1_000));
        assert_eq!(compile_resources(&Settings::default()).cpu_quota, Some(100_000));
    }

    fn put(path: &Path, body: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body).unwrap();
    }

    fn get(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap()
    }

    #[test]
    fn v1_compile_cgroup_in_each_hierarchy_with_its_limits() {
        // A v1 root with the memory and cpu hierarchies only (and the leaf's control files,
        // which the kernel would make).
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        let leaf = "containerd-shim-wasm/compile";
        for (c, files) in [("memory", &["memory.limit_in_bytes"][..]), ("cpu", &["cpu.cfs_quota_us", "cpu.cfs_period_us", "cpu.shares"][..])] {
            put(&r.join(c).join("cgroup.procs"), "");
            for f in files {
                put(&r.join(c).join(leaf).join(f), "-1\n");
            }
            put(&r.join(c).join(leaf).join("cgroup.procs"), "");
        }
        let s = Settings::default();
        let cg = prepare_compile_cgroup(r, DEFAULT_PATH, &s).unwrap();
        assert_eq!(get(&r.join("memory").join(leaf).join("memory.limit_in_bytes")), (2u64 << 30).to_string());
        assert_eq!(get(&r.join("cpu").join(leaf).join("cpu.cfs_period_us")), "100000");
        assert_eq!(get(&r.join("cpu").join(leaf).join("cpu.cfs_quota_us")), "100000");
        assert_eq!(get(&r.join("cpu").join(leaf).join("cpu.shares")), "2");
        assert_eq!(cg.paths(), vec![r.join("memory").join(leaf), r.join("cpu").join(leaf)]);
        // A helper goes into every hierarchy.
        cg.add_process(4242).unwrap();
        assert_eq!(get(&r.join("memory").join(leaf).join("cgroup.procs")), "4242");
        assert_eq!(get(&r.join("cpu").join(leaf).join("cgroup.procs")), "4242");
        // Again (another shim, new settings): the limits are rewritten.
        prepare_compile_cgroup(r, DEFAULT_PATH, &Settings { compile_memory: 1 << 30, ..s }).unwrap();
        assert_eq!(get(&r.join("memory").join(leaf).join("memory.limit_in_bytes")), (1u64 << 30).to_string());
    }

    const DEFAULT_PATH: &str = crate::settings::DEFAULT_COMPILE_CGROUP;

    #[test]
    fn v2_compile_cgroup_enables_its_controllers_and_sets_its_limits() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        put(&r.join("cgroup.controllers"), "cpuset cpu io memory pids\n");
        put(&r.join("cgroup.subtree_control"), "\n");
        put(&r.join("containerd-shim-wasm/cgroup.controllers"), "cpu memory pids\n");
        put(&r.join("containerd-shim-wasm/cgroup.subtree_control"), "\n");
        let leaf = r.join("containerd-shim-wasm/compile");
        put(&leaf.join("memory.max"), "max\n");
        put(&leaf.join("cpu.max"), "max 100000\n");
        put(&leaf.join("cpu.weight"), "100\n");
        let s = Settings { compile_memory: 3 << 30, compile_millicpus: 250, ..Settings::default() };
        prepare_compile_cgroup(r, DEFAULT_PATH, &s).unwrap();
        assert_eq!(get(&leaf.join("memory.max")), (3u64 << 30).to_string());
        assert_eq!(get(&leaf.join("cpu.max")), "25000 100000");
        assert_eq!(get(&leaf.join("cpu.weight")), "1");
        assert_eq!(get(&r.join("containerd-shim-wasm/cgroup.subtree_control")), "+cpu +memory +pids");
    }

    #[test]
    fn no_compile_cgroup_when_it_cannot_be_made_or_is_off() {
        // Not a cgroup filesystem: no v1 controller, no v2 root.
        let t = tempfile::tempdir().unwrap();
        let s = Settings::default();
        assert!(compile_cgroup(t.path(), &s).is_none());
        // Twice: the warning is said once (not checked here), the answer is the same.
        assert!(compile_cgroup(t.path(), &s).is_none());
        // A v1 memory hierarchy where the limit cannot be written.
        put(&t.path().join("memory/cgroup.procs"), "");
        assert!(compile_cgroup(t.path(), &s).is_none());
        assert!(t.path().join("memory/containerd-shim-wasm/compile").is_dir(), "made, then found unusable");
        assert!(compile_cgroup(t.path(), &Settings { compile_cgroup: None, ..s }).is_none());
    }

    #[test]
    fn a_waited_compile_that_finds_no_slot_times_out() {
        let cache = tempfile::tempdir().unwrap();
        let bundle = tempfile::tempdir().unwrap();
        let s = Settings { compile_concurrency: 1, compile_timeout: Duration::from_secs(1), ..settings(cache.path()) };
        // Another compile holds the only slot of the node.
        let slots = Slots::open(cache.path(), 1).unwrap();
        let held = slots.try_take(0..1).unwrap().unwrap();
        let bytes = Arc::new(WAT.as_bytes().to_vec());
        // The helper's log (a file here; containerd's log FIFO in a bundle).
        std::fs::write(bundle.path().join("log"), "").unwrap();
        let started = Instant::now();
        assert_eq!(run(&s, bundle.path(), Tier::Baseline, "/a.wasm", &bytes, &ME), Status::TimedOut);
        let took = started.elapsed();
        // It stops waiting a tenth of its time early, to say why.
        assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(10), "{took:?}");
        assert_eq!(entries(cache.path(), 'b'), 0);
        let log = std::fs::read_to_string(bundle.path().join("log")).unwrap();
        assert!(log.contains("/a.wasm: no compile slot of the 1 free within 1s (WASM_SHIM_COMPILE_TIMEOUT)"), "{log}");
        // The slot freed, the same request compiles.
        drop(held);
        let s = Settings { compile_timeout: Duration::from_secs(120), ..s };
        assert_eq!(run(&s, bundle.path(), Tier::Baseline, "/a.wasm", &bytes, &ME), Status::Stored);
        assert_eq!(entries(cache.path(), 'b'), 1);
    }

    #[test]
    fn the_watchdog_kills_a_helper_past_its_time() {
        let cache = tempfile::tempdir().unwrap();
        let bundle = tempfile::tempdir().unwrap();
        let s = Settings { compile_timeout: Duration::from_secs(1), ..settings(cache.path()) };
        // Another process compiles this entry (holds its lock) for ever: a waited helper waits
        // for it, and only its watchdog ends it (nobody kills it here).
        let engine = Engine::with_config(s.engine_config()).unwrap();
        let key = engine.cache_key(WAT.as_bytes(), Tier::Baseline).unwrap();
        Cache::open(cache.path()).unwrap();
        let lock = std::fs::File::create(cache.path().join(format!("{key}.lock"))).unwrap();
        lock.lock().unwrap();
        let started = Instant::now();
        let cmd = helper_command(&s, bundle.path(), Tier::Baseline, Mode::Wait, 0, "/a.wasm");
        let mut child = start(cmd, Arc::new(WAT.as_bytes().to_vec()), None).unwrap();
        let status = child.wait().unwrap();
        let took = started.elapsed();
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
        assert!(took >= Duration::from_secs(1) && took < Duration::from_secs(10), "{took:?}");
        assert_eq!(entries(cache.path(), 'b'), 0);
    }

    #[test]
    fn replicas_compile_once_and_waiters_hold_no_slot() {
        // One slot for the node: were the slot taken before the entry's lock, a replica
        // waiting for the lock would hold the slot the compiling one needs, until timeouts.
        let cache = tempfile::tempdir().unwrap();
        let bundle = tempfile::tempdir().unwrap();
        let s = Settings { compile_concurrency: 1, compile_timeout: Duration::from_secs(120), ..settings(cache.path()) };
        let bytes = Arc::new(b"(module (func (export \"_start\")) (func $other))".to_vec());
        let results: Vec<Status> = std::thread::scope(|scope| {
            let replicas: Vec<_> = (0..4)
                .map(|_| scope.spawn(|| run(&s, bundle.path(), Tier::Baseline, "/r.wasm", &bytes, &ME)))
                .collect();
            replicas.into_iter().map(|r| r.join().unwrap()).collect()
        });
        assert_eq!(results, [Status::Stored; 4]);
        let log = compiles_logged(cache.path());
        assert_eq!(log.len(), 1, "one compile for four replicas: {log:?}");
        assert_eq!(entries(cache.path(), 'b'), 1);
    }

    /// Root only, on this machine's cgroups (v1 or v2): a background helper runs in the compile
    /// cgroup with its limits, the most killable, at a low priority, and waits for a slot.
    #[test]
    fn a_background_helper_runs_bounded_in_the_compile_cgroup() {
        let root = Path::new(CGROUP_ROOT);
        let v2 = root.join("cgroup.controllers").exists();
        if !nix::unistd::geteuid().is_root() || !(v2 || root.join("memory").is_dir()) {
            eprintln!("skipped: needs root and a cgroup hierarchy with memory");
            return;
        }
        let parent = format!("/wasm-shim-test-{}", std::process::id());
        let path = format!("{parent}/compile");
        struct Cleanup(Vec<String>);
        impl Drop for Cleanup {
            fn drop(&mut self) {
                for p in &self.0 {
                    if let Ok(cg) = Cgroup::new(Path::new(CGROUP_ROOT), p) {
                        let _ = cg.destroy();
                    }
                }
            }
        }
        let _cleanup = Cleanup(vec![path.clone(), parent]);
        let cache = tempfile::tempdir().unwrap();
        let bundle = tempfile::tempdir().unwrap();
        let s = Settings {
            compile_cgroup: Some(path.clone()),
            compile_memory: 256 << 20,
            compile_millicpus: 500,
            compile_concurrency: 2,
            background_compile_timeout: Duration::from_secs(120),
            ..settings(cache.path())
        };
        // Every slot taken: the helper waits for one, where it can be looked at.
        let slots = Slots::open(cache.path(), 2).unwrap();
        let held = (slots.try_take(0..2).unwrap().unwrap(), slots.try_take(0..2).unwrap().unwrap());
        let pid = background(&s, bundle.path(), "/bg.wasm", Arc::new(WAT.as_bytes().to_vec())).expect("the helper started");
        let proc_file = |f: &str| std::fs::read_to_string(format!("/proc/{pid}/{f}")).unwrap_or_default();

        let member = proc_file("cgroup");
        for controller in if v2 { &[""][..] } else { &["memory", "cpu"][..] } {
            let line = member.lines().find(|l| l.split(':').nth(1).is_some_and(|c| c.split(',').any(|c| c == *controller)));
            assert_eq!(line.and_then(|l| l.splitn(3, ':').nth(2)), Some(path.as_str()), "{controller}: {member}");
        }
        let dir = |c: &str| if v2 { root.join(path.trim_start_matches('/')) } else { root.join(c).join(path.trim_start_matches('/')) };
        if v2 {
            assert_eq!(get(&dir("").join("memory.max")).trim(), (256u64 << 20).to_string());
            assert_eq!(get(&dir("").join("cpu.max")).trim(), "50000 100000");
        } else {
            assert_eq!(get(&dir("memory").join("memory.limit_in_bytes")).trim(), (256u64 << 20).to_string());
            assert_eq!(get(&dir("cpu").join("cpu.cfs_quota_us")).trim(), "50000");
        }
        // Set by the helper first of all: poll.
        let deadline = Instant::now() + Duration::from_secs(20);
        while proc_file("oom_score_adj").trim() != "1000" {
            assert!(Instant::now() < deadline, "oom_score_adj {:?}", proc_file("oom_score_adj"));
            std::thread::sleep(Duration::from_millis(20));
        }
        // Nice 19 and the idle class (SCHED_IDLE, 5) on the thread that compiles (the test
        // harness runs the helper on a thread of its own; the shim binary on its main thread).
        // Fields 19 and 41 of stat, counted after the command name's parenthesis.
        let sched: Vec<(String, String)> = std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .flatten()
            .filter_map(|t| std::fs::read_to_string(t.path().join("stat")).ok())
            .filter_map(|stat| {
                let f: Vec<String> = stat.rsplit(')').next()?.split_whitespace().map(String::from).collect();
                Some((f.get(16)?.clone(), f.get(38)?.clone()))
            })
            .collect();
        assert!(sched.iter().any(|(nice, policy)| nice == "19" && policy == "5"), "(nice, policy): {sched:?}");
        // Still waiting for a slot: nothing compiled.
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(entries(cache.path(), 'o'), 0);
        assert!(PathBuf::from(format!("/proc/{pid}")).exists());
        drop(held);
        let deadline = Instant::now() + Duration::from_secs(60);
        while entries(cache.path(), 'o') == 0 {
            assert!(Instant::now() < deadline, "no optimized entry: {:?}", compiles_logged(cache.path()));
            std::thread::sleep(Duration::from_millis(50));
        }
        // It ends (and is reaped by the shim's thread); then its cgroup can go.
        let deadline = Instant::now() + Duration::from_secs(20);
        while PathBuf::from(format!("/proc/{pid}")).exists() {
            assert!(Instant::now() < deadline, "the helper did not end");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
