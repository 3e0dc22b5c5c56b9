//! One container's cgroup, on cgroup v1 (one directory per controller hierarchy) or v2 (one
//! directory in the unified tree): create it, apply resource limits and device rules, move
//! processes in, freeze and thaw, read statistics and the OOM-kill count, and remove it.
//!
//! # Layout
//! - `path`: the spec's `cgroupsPath` (plain or systemd `slice:prefix:name`) -> cgroupfs path.
//! - `v1`, `v2`: the two filesystem layouts behind the one [`Cgroup`] type.
//! - `devices`: the spec's device rules, checked and emulated into a default plus exceptions
//!   (what v1 writes to `devices.deny`/`devices.allow`).
//! - `bpf`: cgroup v2's device filter: that emulation compiled to an eBPF program, loaded and
//!   attached to the container's directory.
//! - `fs`: reading/writing control files with errors that name the file.
//!
//! Nearly nothing here needs root to be tested: the layouts are exercised against temp-dir
//! fixtures that mimic cgroupfs, and the eBPF device filter by an interpreter in its tests. When
//! run as root, tests also drive the real v1 hierarchy, load the filter into the kernel, and
//! attach it in a cgroup2 mount if the machine has one.

mod bpf;
mod devices;
mod fs;
mod path;
mod v1;
mod v2;

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use devices::{DeviceAccess, DeviceKind, DeviceRule};
pub use path::normalize_path;

/// How long `freeze`/`thaw` wait for the kernel to report the new state.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long `destroy` retries `rmdir` while the last tasks are exiting.
const DESTROY_TIMEOUT: Duration = Duration::from_secs(1);

/// Everything that can go wrong with a cgroup. Messages name the file and the cause.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// A filesystem operation (`read`, `write`, `mkdir`, `rmdir`) on a cgroup file failed.
    #[error("cgroup: {op} {}: {}", path.display(), describe(err))]
    Io {
        op: &'static str,
        path: PathBuf,
        err: io::Error,
    },
    /// A control file held something we could not parse.
    #[error("cgroup: parse {}: {reason}", path.display())]
    Parse { path: PathBuf, reason: String },
    /// The cgroups path from the spec is not acceptable.
    #[error("cgroup: invalid path {path:?}: {reason}")]
    InvalidPath { path: String, reason: String },
    /// The requested resources are inconsistent (e.g. memory+swap below memory).
    #[error("cgroup: invalid resources: {0}")]
    InvalidResources(String),
    /// A limit was requested for a controller that is not available for this cgroup.
    #[error("cgroup: controller {controller} is not available under {}", root.display())]
    ControllerMissing {
        controller: &'static str,
        root: PathBuf,
    },
    /// The container's cgroup directory does not exist.
    #[error("cgroup: {} does not exist", path.display())]
    NotFound { path: PathBuf },
    /// The kernel refused the cgroup v2 device filter (an eBPF program): loading it (`detail`
    /// then holds the end of the verifier's log, if any) or attaching it to the cgroup.
    #[error("cgroup: {op} the device filter for {}: {}{}", path.display(), describe(err),
        if detail.is_empty() { String::new() } else { format!(" ({detail})") })]
    DeviceFilter {
        op: &'static str,
        path: PathBuf,
        err: io::Error,
        detail: String,
    },
    /// The kernel did not reach the wanted freezer state in time.
    #[error("cgroup: timed out after {timeout:?} waiting for {} to report {wanted}", path.display())]
    Timeout {
        path: PathBuf,
        wanted: &'static str,
        timeout: Duration,
    },
}

impl CgroupError {
    pub(crate) fn io(op: &'static str, path: &Path, err: io::Error) -> Self {
        CgroupError::Io {
            op,
            path: path.to_path_buf(),
            err,
        }
    }

    pub(crate) fn parse(path: &Path, reason: impl Into<String>) -> Self {
        CgroupError::Parse {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }

    /// The OS error number behind an I/O failure, if any (e.g. `EBUSY`, `ENOENT`).
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            CgroupError::Io { err, .. } | CgroupError::DeviceFilter { err, .. } => {
                err.raw_os_error()
            }
            _ => None,
        }
    }

    /// True when the failure means "no such cgroup/file".
    pub fn is_not_found(&self) -> bool {
        match self {
            CgroupError::NotFound { .. } => true,
            CgroupError::Io { err, .. } => err.kind() == io::ErrorKind::NotFound,
            _ => false,
        }
    }
}

/// "Device or resource busy" rather than "Device or resource busy (os error 16)".
fn describe(err: &io::Error) -> String {
    match err.raw_os_error() {
        Some(n) => nix::errno::Errno::from_raw(n).desc().to_string(),
        None => err.to_string(),
    }
}

pub type Result<T> = std::result::Result<T, CgroupError>;

/// The resource limits we apply, taken from the spec's `linux.resources`. `None` = leave as is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resources {
    /// Bytes; -1 = unlimited.
    pub memory_limit: Option<i64>,
    /// Bytes (v1 soft limit, v2 `memory.low`); -1 = unlimited.
    pub memory_reservation: Option<i64>,
    /// Memory + swap in bytes, as in the OCI spec; -1 = unlimited.
    pub memory_swap: Option<i64>,
    pub cpu_shares: Option<u64>,
    /// Microseconds per period; -1 = unlimited.
    pub cpu_quota: Option<i64>,
    /// Microseconds.
    pub cpu_period: Option<u64>,
    pub cpuset_cpus: Option<String>,
    pub cpuset_mems: Option<String>,
    /// <= 0 = unlimited.
    pub pids_limit: Option<i64>,
    /// The device rules, in the spec's order; what they mean is in the `devices` module. They
    /// replace whatever the cgroup allowed before (v1) or add a filter beside the ones already
    /// attached (v2: every filter must allow an access), so apply them once, at Create.
    pub devices: Option<Vec<DeviceRule>>,
    /// cgroup v2 files written as given (`linux.resources.unified`, where kubelet puts
    /// `memory.swap.max`), after the fields above, in key order; empty: none. Refused on v1, as
    /// runc refuses it.
    pub unified: Vec<(String, String)>,
}

/// A key of `linux.resources.unified`: a control file of one controller (`memory.swap.max`),
/// not a path, and not one of the `cgroup.*` core files (membership, kill, freeze, the tree's
/// controllers), which only the shim writes.
fn check_unified_key(key: &str) -> Result<()> {
    let bad = |why: &str| Err(CgroupError::InvalidResources(format!("unified {key:?}: {why}")));
    let Some((controller, file)) = key.split_once('.') else {
        return bad("not a control file (controller.name)");
    };
    if controller.is_empty() || file.is_empty() || key.contains('/') || key.contains('\0') || key.contains("..") {
        return bad("not a control file (controller.name)");
    }
    if !controller.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
        return bad("not a controller's name");
    }
    if controller == "cgroup" {
        return bad("the cgroup.* core files are the runtime's");
    }
    Ok(())
}

impl Resources {
    /// Takes the limits we support from the spec. Zero values of memory, shares, quota and period
    /// mean "not set" (that is how CRI and Docker pass an absent limit), so they become `None`;
    /// empty cpuset strings likewise, and an absent or empty device rule list (the cgroup's
    /// devices are then left as they are). A device rule that is not valid is
    /// `InvalidResources`, naming it.
    pub fn from_spec(r: &oci_spec::runtime::LinuxResources) -> Result<Resources> {
        let nonzero_i = |v: Option<i64>| v.filter(|&x| x != 0);
        let nonzero_u = |v: Option<u64>| v.filter(|&x| x != 0);
        let nonempty = |v: Option<&String>| v.filter(|s| !s.trim().is_empty()).cloned();
        let mut out = Resources::default();
        if let Some(u) = r.unified() {
            let mut pairs: Vec<(String, String)> = u.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            pairs.sort();
            for (k, _) in &pairs {
                check_unified_key(k)?;
            }
            out.unified = pairs;
        }
        if let Some(m) = r.memory() {
            out.memory_limit = nonzero_i(m.limit());
            out.memory_reservation = nonzero_i(m.reservation());
            out.memory_swap = nonzero_i(m.swap());
        }
        if let Some(c) = r.cpu() {
            out.cpu_shares = nonzero_u(c.shares());
            out.cpu_quota = nonzero_i(c.quota());
            out.cpu_period = nonzero_u(c.period());
            out.cpuset_cpus = nonempty(c.cpus().as_ref());
            out.cpuset_mems = nonempty(c.mems().as_ref());
        }
        if let Some(p) = r.pids() {
            out.pids_limit = Some(p.limit());
        }
        if let Some(rules) = r.devices().as_ref().filter(|d| !d.is_empty()) {
            let rules = rules.iter().enumerate();
            out.devices = Some(
                rules
                    .map(|(i, d)| DeviceRule::from_spec(i, d))
                    .collect::<Result<_>>()?,
            );
        }
        Ok(out)
    }
}

/// A snapshot of the cgroup's counters. Unavailable values are 0.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub memory_usage: u64,
    /// v1 `memory.max_usage_in_bytes`, v2 `memory.peak` (0 when the kernel lacks it).
    pub memory_max_usage: u64,
    /// v1: the raw limit (a huge number when unlimited); v2: `u64::MAX` when `max`.
    pub memory_limit: u64,
    pub memory_cache: u64,
    pub memory_rss: u64,
    pub swap_usage: u64,
    pub cpu_usage_ns: u64,
    pub cpu_user_ns: u64,
    pub cpu_system_ns: u64,
    pub cpu_nr_periods: u64,
    pub cpu_nr_throttled: u64,
    pub cpu_throttled_ns: u64,
    pub pids_current: u64,
    /// 0 = max.
    pub pids_limit: u64,
    /// v2 `memory.events` `oom`; v1 has no such counter and reports the OOM-kill count.
    pub oom_events: u64,
    pub oom_kills: u64,
}

/// The cgroup filesystem layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// One hierarchy per controller (`<root>/memory`, `<root>/cpu`, ...).
    V1,
    /// The unified hierarchy mounted at the root.
    V2,
}

/// V2 if `<root>/cgroup.controllers` exists (the unified hierarchy is mounted there), else V1.
pub fn detect(root: &Path) -> Version {
    if root.join("cgroup.controllers").exists() {
        Version::V2
    } else {
        Version::V1
    }
}

/// One container's cgroup: every v1 hierarchy we use, or the v2 directory.
#[derive(Debug, Clone)]
pub struct Cgroup {
    path: String,
    inner: Inner,
}

#[derive(Debug, Clone)]
enum Inner {
    V1(v1::V1),
    V2(v2::V2),
}

impl Cgroup {
    /// `root` is normally `/sys/fs/cgroup`; `path` is a normalized cgroups path ("/a/b"). Only
    /// detects the layout (and which v1 controllers are mounted); creates nothing.
    pub fn new(root: &Path, path: &str) -> Result<Cgroup> {
        let path = path::validate(path)?;
        let inner = match detect(root) {
            Version::V2 => Inner::V2(v2::V2::new(root, &path)),
            Version::V1 => Inner::V1(v1::V1::new(root, &path)?),
        };
        Ok(Cgroup { path, inner })
    }

    pub fn version(&self) -> Version {
        match self.inner {
            Inner::V1(_) => Version::V1,
            Inner::V2(_) => Version::V2,
        }
    }

    /// The normalized cgroups path this cgroup lives at.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Creates the directories (v1: in every mounted hierarchy we use; v2: enabling the
    /// controllers in the ancestors' `cgroup.subtree_control`). Idempotent.
    pub fn create(&self) -> Result<()> {
        match &self.inner {
            Inner::V1(c) => c.create(),
            Inner::V2(c) => c.create(),
        }
    }

    /// Writes the limits that are `Some`. Used at Create and by the Update API. Device rules are
    /// checked before anything is written, then set first: v1 writes them to `devices.deny` and
    /// `devices.allow`, v2 attaches an eBPF filter (see [`Resources::devices`]: once, at Create).
    pub fn apply(&self, r: &Resources) -> Result<()> {
        match &self.inner {
            Inner::V1(c) => c.apply(r),
            Inner::V2(c) => c.apply(r),
        }
    }

    /// Reads back memory, cpu, cpuset and pids limits; `devices` reads as `None`. Unlimited values
    /// read as `Some(-1)`; values whose file is missing read as `None`. On v2, `cpu_shares` is
    /// `None` (the kernel keeps a weight, and the shares->weight conversion cannot be inverted).
    pub fn read_limits(&self) -> Result<Resources> {
        match &self.inner {
            Inner::V1(c) => c.read_limits(),
            Inner::V2(c) => c.read_limits(),
        }
    }

    /// Moves a process (and its threads) into the cgroup.
    pub fn add_process(&self, pid: i32) -> Result<()> {
        match &self.inner {
            Inner::V1(c) => c.add_process(pid),
            Inner::V2(c) => c.add_process(pid),
        }
    }

    /// The pids in the cgroup.
    pub fn procs(&self) -> Result<Vec<i32>> {
        match &self.inner {
            Inner::V1(c) => c.procs(),
            Inner::V2(c) => c.procs(),
        }
    }

    /// How many processes the cgroup and every cgroup below it hold (each one's `cgroup.procs`;
    /// on v1 in the hierarchy `procs` reads). A cgroup that does not exist holds none; any other
    /// read error is an error, not an empty cgroup.
    pub fn occupants(&self) -> Result<usize> {
        let dir = match &self.inner {
            Inner::V1(c) => c.procs_dir(),
            Inner::V2(c) => c.dir().to_path_buf(),
        };
        procs_below(&dir, 0)
    }

    /// Freezes every process and waits (up to ~2 s) until the kernel reports the cgroup frozen.
    pub fn freeze(&self) -> Result<()> {
        self.freeze_within(FREEZE_TIMEOUT)
    }

    /// Thaws the cgroup and waits until the kernel reports it thawed.
    pub fn thaw(&self) -> Result<()> {
        self.thaw_within(FREEZE_TIMEOUT)
    }

    fn freeze_within(&self, timeout: Duration) -> Result<()> {
        match &self.inner {
            Inner::V1(c) => c.set_frozen(true, timeout),
            Inner::V2(c) => c.set_frozen(true, timeout),
        }
    }

    fn thaw_within(&self, timeout: Duration) -> Result<()> {
        match &self.inner {
            Inner::V1(c) => c.set_frozen(false, timeout),
            Inner::V2(c) => c.set_frozen(false, timeout),
        }
    }

    /// Reads the counters. Missing optional files give 0; a missing cgroup is `NotFound`.
    pub fn stats(&self) -> Result<Stats> {
        match &self.inner {
            Inner::V1(c) => c.stats(),
            Inner::V2(c) => c.stats(),
        }
    }

    /// How many processes the kernel OOM-killed in this cgroup (0 if the kernel lacks the count).
    pub fn oom_kill_count(&self) -> Result<u64> {
        match &self.inner {
            Inner::V1(c) => c.oom_kill_count(),
            Inner::V2(c) => c.oom_kill_count(),
        }
    }

    /// Removes the container's directory in every hierarchy (the leaf only; parents may be
    /// shared). A missing directory is fine; `EBUSY` is retried for ~1 s.
    pub fn destroy(&self) -> Result<()> {
        let mut first_err = None;
        for dir in self.paths() {
            if let Err(e) = fs::remove_dir(&dir, DESTROY_TIMEOUT) {
                log::warn!("{e}");
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// The container's directories (one per distinct v1 hierarchy, or the v2 directory).
    pub fn paths(&self) -> Vec<PathBuf> {
        match &self.inner {
            Inner::V1(c) => c.paths(),
            Inner::V2(c) => vec![c.dir().to_path_buf()],
        }
    }
}

/// Relative form of a normalized path, to join under a hierarchy root.
pub(crate) fn rel(path: &str) -> &str {
    path.trim_start_matches('/')
}

/// Processes in `dir`'s `cgroup.procs` and in those of the cgroups below it (at most 32 levels
/// down); 0 for a missing `dir`.
fn procs_below(dir: &Path, depth: u32) -> Result<usize> {
    let f = dir.join("cgroup.procs");
    let Some(body) = fs::read_opt(&f)? else { return Ok(0) };
    let mut n = parse_procs(&f, &body)?.len();
    if depth >= 32 {
        return Ok(n);
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(n),
        Err(e) => return Err(CgroupError::io("read", dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| CgroupError::io("read", dir, e))?;
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            n += procs_below(&entry.path(), depth + 1)?;
        }
    }
    Ok(n)
}

/// Parses `cgroup.procs`.
pub(crate) fn parse_procs(file: &Path, body: &str) -> Result<Vec<i32>> {
    body.split_whitespace()
        .map(|t| {
            t.parse::<i32>()
                .map_err(|_| CgroupError::parse(file, format!("bad pid {t:?}")))
        })
        .collect()
}

#[cfg(test)]
mod tests;
