//! Filling the compile cache outside the container: the hidden `compile-cache` mode (a helper
//! process, the shim binary re-executed) and the shim side that starts helpers when an init
//! finds no optimized code for its wasm.
//!
//! The container init only ever reads the cache. It sends the wasm to the shim, which runs:
//! - with `WASM_SHIM_BASELINE` on (the default): a baseline (Winch) helper, waited for, so
//!   the init starts on baseline code within Create; then an optimized (Cranelift) helper in
//!   the background at a low priority, so the next start maps optimized code. The background
//!   helper is a process of its own: it finishes even when the guest, the init and the shim
//!   are long gone.
//! - with it off: the optimized helper, waited for.
//!
//! A helper Create waits for runs in the container's cgroup: its memory and CPU count against
//! the container's limits, as an in-container compile would. The background helper outlives
//! the container and runs in the shim's cgroup (like an image unpack in containerd's); both
//! only take modules up to `protocol::MAX_COMPILE_BYTES` (bigger ones are compiled in the init).
//!
//! Each helper compiles under the entry's lock: ten replicas of a new module starting at once
//! make one baseline compile (the nine others wait for it, then map it) and one optimized
//! compile (the others find the lock taken and leave). Helpers run as root in the host's
//! mount namespace, so nothing inside a container can write compiled code another container
//! would run.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use wasm_shim_container::cgroup::Cgroup;
use wasm_shim_engine::{Cache, CacheKey, Engine, EngineError, Stored, Tier};

use crate::settings::Settings;

/// The hidden mode's first argument.
pub const MODE: &str = "compile-cache";

/// How long Create waits for a helper before letting the init compile by itself.
const WAIT_LIMIT: Duration = Duration::from_secs(600);
/// The nice value of a helper nobody waits for.
const BACKGROUND_NICE: i32 = 10;

/// A helper's exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    /// The entry is in the cache (compiled now or found there).
    Stored,
    /// The wasm is invalid: no tier will compile it.
    Invalid,
    /// Another process holds the entry's lock (asked not to wait).
    Busy,
    /// Anything else (the cache cannot be written, the compiler refused, ...).
    Failed,
}

impl Status {
    fn code(self) -> i32 {
        match self {
            Status::Stored => 0,
            Status::Failed => 1,
            Status::Busy => 2,
            Status::Invalid => 3,
        }
    }

    fn from_code(code: Option<i32>) -> Status {
        match code {
            Some(0) => Status::Stored,
            Some(2) => Status::Busy,
            Some(3) => Status::Invalid,
            _ => Status::Failed,
        }
    }
}

fn tier_arg(tier: Tier) -> &'static str {
    tier.name()
}

/// `containerd-shim-wasm-v1 compile-cache <optimized|baseline> <wait|try> <name>`, the wasm
/// on stdin. Logs to the bundle's `log` FIFO (containerd's log) when it can. Never returns.
pub fn helper_main(args: &[String]) -> ! {
    let status = match args {
        [tier, lock, name] => helper(tier, lock == "wait", name),
        _ => {
            eprintln!("usage: containerd-shim-wasm-v1 {MODE} <optimized|baseline> <wait|try> <name> < module.wasm");
            Status::Failed
        }
    };
    std::process::exit(status.code());
}

fn helper(tier: &str, wait: bool, name: &str) -> Status {
    init_log();
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
        if let Err(e) = wasm_shim_container::process::set_nice(BACKGROUND_NICE) {
            debug!("compile cache: nice: {e}");
        }
    }
    let settings = Settings::from_env();
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
    let engine = match Engine::with_config(settings.engine_config()) {
        Ok(e) => e,
        Err(e) => {
            warn!("compile cache: {e}");
            return Status::Failed;
        }
    };
    let result = (|| -> Result<Stored, EngineError> {
        // Optimized code may have landed since the init looked: baseline is then useless.
        if tier == Tier::Baseline && engine.has_cached(&cache, &bytes, Tier::Optimized)? {
            return Ok(Stored::Present);
        }
        let stored = engine.compile_to_cache(&cache, &bytes, name, tier, wait)?;
        if tier == Tier::Optimized && stored != Stored::Busy {
            // Nobody needs the baseline code any more.
            cache.remove(&engine.cache_key(&bytes, Tier::Baseline)?);
        }
        Ok(stored)
    })();
    match result {
        Ok(Stored::Busy) => Status::Busy,
        Ok(_) => Status::Stored,
        Err(e) if e.is_invalid_input() => {
            debug!("compile cache: {e}");
            Status::Invalid
        }
        Err(e) => {
            warn!("compile cache: {tier} compile: {e}");
            Status::Failed
        }
    }
}

/// Logs go to containerd's log through the `log` FIFO in the working directory (the bundle).
/// Opened without blocking: with no reader there is no log, rather than a hang.
fn init_log() {
    let Ok(file) = OpenOptions::new().write(true).custom_flags(libc::O_NONBLOCK).open("log") else {
        return;
    };
    // Back to blocking writes: a full pipe delays a line rather than dropping it.
    let _ = nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()));
    let logger = containerd_shim::logger::FifoLogger::with_file(file);
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
    }
}

/// Starts a helper, in `cgroup` if given, with the wasm on its stdin (written by a thread,
/// then closed). The helper does nothing before reading its stdin, so it is in the cgroup
/// before it does any work.
fn spawn(
    settings: &Settings,
    bundle: &Path,
    tier: Tier,
    wait: bool,
    name: &str,
    bytes: Arc<Vec<u8>>,
    cgroup: Option<&Cgroup>,
) -> std::io::Result<Child> {
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg(MODE)
        .arg(tier_arg(tier))
        .arg(if wait { "wait" } else { "try" })
        .arg(name)
        .env_clear()
        .current_dir(bundle)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own process group: signals meant for the shim's group do not reach it.
        .process_group(0);
    settings.apply_to(&mut cmd);
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

/// Runs a helper in the container's cgroup and waits (at most `WAIT_LIMIT`) for its verdict.
fn run(settings: &Settings, bundle: &Path, tier: Tier, name: &str, bytes: &Arc<Vec<u8>>, cgroup: Option<&Cgroup>) -> Status {
    let started = Instant::now();
    let mut child = match spawn(settings, bundle, tier, true, name, bytes.clone(), cgroup) {
        Ok(c) => c,
        Err(e) => {
            warn!("compile cache: cannot start the {tier} compile helper: {e}");
            return Status::Failed;
        }
    };
    let (tx, rx) = mpsc::channel();
    let pid = child.id();
    let waiter = std::thread::Builder::new().name(format!("compile-{pid}")).spawn(move || {
        let _ = tx.send(child.wait().map(|s| s.code()).unwrap_or(None));
    });
    if waiter.is_err() {
        return Status::Failed;
    }
    let status = match rx.recv_timeout(WAIT_LIMIT) {
        Ok(code) => Status::from_code(code),
        Err(_) => {
            // Not reaped yet (the waiter holds it), so the pid is still this helper's.
            warn!("compile cache: {name}: the {tier} compile helper (pid {pid}) is still running after {WAIT_LIMIT:?}; stopping it");
            let _ = wasm_shim_container::process::kill(pid as i32, libc::SIGKILL);
            Status::Failed
        }
    };
    debug!("compile cache: {name}: {tier} helper {status:?} after {:?}", started.elapsed());
    status
}

/// Starts the optimized helper in the background: nobody waits for it, a thread reaps it.
fn background(settings: &Settings, bundle: &Path, name: &str, bytes: Arc<Vec<u8>>) {
    match spawn(settings, bundle, Tier::Optimized, false, name, bytes, None) {
        Ok(mut child) => {
            let name = name.to_string();
            let _ = std::thread::Builder::new().name(format!("compile-{}", child.id())).spawn(move || {
                let status = Status::from_code(child.wait().ok().and_then(|s| s.code()));
                debug!("compile cache: {name}: background optimized compile: {status:?}");
            });
        }
        Err(e) => warn!("compile cache: cannot start the optimized compile helper: {e}"),
    }
}

/// The shim's answer to an init's `Compile` request; returns once the init may look in the
/// cache again (at once when it does not wait). `cgroup`: the container's.
pub fn request(settings: &Settings, bundle: &Path, id: &str, name: &str, bytes: Vec<u8>, wait: bool, cgroup: Option<&Cgroup>) {
    let bytes = Arc::new(bytes);
    if !wait {
        debug!("{id}: {name}: running baseline code; compiling optimized code in the background");
        background(settings, bundle, name, bytes);
        return;
    }
    let started = Instant::now();
    if settings.baseline {
        match run(settings, bundle, Tier::Baseline, name, &bytes, cgroup) {
            Status::Stored => {
                info!("{id}: {name}: not in the compile cache; baseline code ready in {} ms, optimized code compiling in the background", started.elapsed().as_millis());
                background(settings, bundle, name, bytes);
                return;
            }
            // The init compiles it to report the error as usual.
            Status::Invalid => return,
            Status::Busy | Status::Failed => {}
        }
    }
    let status = run(settings, bundle, Tier::Optimized, name, &bytes, cgroup);
    info!("{id}: {name}: not in the compile cache; optimized compile {status:?} in {} ms", started.elapsed().as_millis());
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

/// The sha256 (hex) of wasm bytes, as cache keys begin.
pub fn digest(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// How long the shim looks for an entry a running server waits for (a compile that died, a
/// cache that refused the entry: the server goes on with baseline code).
const HANDOVER_WAIT: Duration = Duration::from_secs(600);

/// Waits (in a thread, polling with backoff) for the cache entry at `path`, then hands a
/// read-only descriptor of it to the init on `sock` (SCM_RIGHTS). The init checks and maps the
/// code by that descriptor; it never holds the cache directory.
pub fn hand_over_when_built(id: String, path: std::path::PathBuf, sock: std::os::unix::net::UnixStream) {
    let spawned = std::thread::Builder::new().name(format!("handover-{id}")).spawn(move || {
        let since = Instant::now();
        let mut pause = Duration::from_millis(20);
        while since.elapsed() < HANDOVER_WAIT {
            match OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC).open(&path) {
                Ok(file) => {
                    use std::os::fd::AsFd;
                    match wasm_shim_container::process::send_fd(&sock, file.as_fd()) {
                        Ok(()) => debug!("{id}: handed {} to the init after {} ms", path.display(), since.elapsed().as_millis()),
                        Err(e) => debug!("{id}: cannot hand {} to the init: {e}", path.display()),
                    }
                    return;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return warn!("{id}: {}: {e}; the server keeps its baseline code", path.display()),
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_secs(1));
        }
        warn!("{id}: no optimized code at {} after {HANDOVER_WAIT:?}; the server keeps its baseline code", path.display());
    });
    if let Err(e) = spawned {
        warn!("{e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_round_trip() {
        for s in [Status::Stored, Status::Invalid, Status::Busy, Status::Failed] {
            assert_eq!(Status::from_code(Some(s.code())), s);
        }
        assert_eq!(Status::from_code(None), Status::Failed);
        assert_eq!(Status::from_code(Some(101)), Status::Failed);
    }
}
