//! cgroup v2: one unified tree. A container is one directory; its controllers are available only
//! when every ancestor lists them in `cgroup.subtree_control`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::devices::Policy;
use super::{bpf, fs};
use super::{parse_procs, rel, CgroupError, Resources, Result, Stats};

/// Controllers we enable for containers, when the parent offers them.
const WANTED: [&str; 5] = ["cpu", "memory", "pids", "cpuset", "io"];

/// Default CFS period (µs) when neither the request nor the file gives one.
const DEFAULT_PERIOD: u64 = 100_000;

#[derive(Debug, Clone)]
pub(crate) struct V2 {
    root: PathBuf,
    path: String,
    dir: PathBuf,
}

/// cgroup v1 `cpu.shares` (2..=262144, default 1024) to v2 `cpu.weight` (1..=10000, default 100),
/// mapping the ranges linearly onto each other.
pub(crate) fn shares_to_weight(shares: u64) -> u64 {
    let s = shares.clamp(2, 262_144);
    1 + ((s - 2) * 9999) / 262_142
}

impl V2 {
    pub(crate) fn new(root: &Path, path: &str) -> V2 {
        V2 {
            root: root.to_path_buf(),
            path: path.to_string(),
            dir: root.join(rel(path)),
        }
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn create(&self) -> Result<()> {
        fs::mkdir_all(&self.dir)?;
        // Enable controllers from the root down to the leaf's parent (never in the leaf: a
        // cgroup with processes cannot delegate domain controllers to children).
        let comps: Vec<&str> = rel(&self.path).split('/').collect();
        let mut cur = self.root.clone();
        for comp in &comps {
            enable_controllers(&cur)?;
            cur.push(comp);
        }
        Ok(())
    }

    pub(crate) fn apply(&self, r: &Resources) -> Result<()> {
        let d = &self.dir;
        // Validate devices and swap before writing anything, so a bad request changes nothing.
        let device_policy = r.devices.as_deref().map(Policy::from_rules).transpose()?;
        let swap = match r.memory_swap {
            None => None,
            Some(_) if !d.join("memory.swap.max").exists() => {
                log::warn!(
                    "cgroup: {} missing (swap accounting off); memory+swap limit ignored",
                    d.join("memory.swap.max").display()
                );
                None
            }
            Some(s) if s < 0 => Some("max".to_string()),
            Some(s) => {
                let mem = match r.memory_limit {
                    Some(l) => l,
                    None => read_limit(&d.join("memory.max"))?.unwrap_or(-1),
                };
                if mem < 0 {
                    return Err(CgroupError::InvalidResources(format!(
                        "a memory+swap limit ({s}) needs a memory limit"
                    )));
                }
                if s < mem {
                    return Err(CgroupError::InvalidResources(format!(
                        "memory+swap limit {s} is below the memory limit {mem}"
                    )));
                }
                Some((s - mem).to_string())
            }
        };
        for (key, _) in &r.unified {
            super::check_unified_key(key)?;
            if !d.join(key).exists() {
                return Err(CgroupError::InvalidResources(format!(
                    "unified {key:?}: no such control file in the container's cgroup (its controller is not enabled, or the kernel has no such setting)"
                )));
            }
        }
        if let Some(policy) = &device_policy {
            bpf::attach_device_filter(d, &bpf::program(policy))?;
        }
        if let Some(l) = r.memory_limit {
            fs::write(&d.join("memory.max"), &fs::v2_limit(l))?;
        }
        if let Some(v) = swap {
            fs::write(&d.join("memory.swap.max"), &v)?;
        }
        if let Some(res) = r.memory_reservation {
            fs::write(&d.join("memory.low"), &fs::v2_limit(res))?;
        }
        if let Some(s) = r.cpu_shares {
            fs::write(&d.join("cpu.weight"), &shares_to_weight(s).to_string())?;
        }
        if r.cpu_quota.is_some() || r.cpu_period.is_some() {
            let f = d.join("cpu.max");
            let current = fs::read_opt(&f)?.unwrap_or_default();
            let mut it = current.split_whitespace();
            let (cur_quota, cur_period) = (it.next(), it.next().and_then(|p| p.parse().ok()));
            let quota = match r.cpu_quota {
                Some(q) => fs::v2_limit(q),
                None => cur_quota.unwrap_or("max").to_string(),
            };
            let period = r.cpu_period.or(cur_period).unwrap_or(DEFAULT_PERIOD);
            fs::write(&f, &format!("{quota} {period}"))?;
        }
        if let Some(cpus) = &r.cpuset_cpus {
            fs::write(&d.join("cpuset.cpus"), cpus)?;
        }
        if let Some(mems) = &r.cpuset_mems {
            fs::write(&d.join("cpuset.mems"), mems)?;
        }
        if let Some(p) = r.pids_limit {
            let v = if p <= 0 {
                "max".to_string()
            } else {
                p.to_string()
            };
            fs::write(&d.join("pids.max"), &v)?;
        }
        // As given, after the fields: runc's order, so a unified value wins over a field's.
        for (key, value) in &r.unified {
            fs::write(&d.join(key), value)?;
        }
        Ok(())
    }

    pub(crate) fn read_limits(&self) -> Result<Resources> {
        let d = &self.dir;
        let mut r = Resources {
            memory_limit: read_limit(&d.join("memory.max"))?,
            memory_reservation: read_limit(&d.join("memory.low"))?,
            pids_limit: read_limit(&d.join("pids.max"))?,
            ..Resources::default()
        };
        r.memory_swap = match (read_limit(&d.join("memory.swap.max"))?, r.memory_limit) {
            (Some(-1), _) => Some(-1),
            (Some(swap), Some(mem)) if mem >= 0 => Some(swap + mem),
            _ => None,
        };
        let f = d.join("cpu.max");
        if let Some(body) = fs::read_opt(&f)? {
            let mut it = body.split_whitespace();
            r.cpu_quota = match it.next() {
                Some("max") => Some(-1),
                Some(q) => Some(fs::parse_i64(&f, q)?),
                None => None,
            };
            r.cpu_period = it.next().map(|p| fs::parse_u64(&f, p)).transpose()?;
        }
        r.cpuset_cpus = read_nonempty(&d.join("cpuset.cpus"))?;
        r.cpuset_mems = read_nonempty(&d.join("cpuset.mems"))?;
        Ok(r)
    }

    pub(crate) fn add_process(&self, pid: i32) -> Result<()> {
        fs::write(&self.dir.join("cgroup.procs"), &pid.to_string())
    }

    pub(crate) fn procs(&self) -> Result<Vec<i32>> {
        let f = self.dir.join("cgroup.procs");
        parse_procs(&f, &fs::read(&f)?)
    }

    pub(crate) fn set_frozen(&self, frozen: bool, timeout: Duration) -> Result<()> {
        let ctl = self.dir.join("cgroup.freeze");
        let events = self.dir.join("cgroup.events");
        let want = if frozen { 1 } else { 0 };
        fs::write(&ctl, &want.to_string())?;
        let reached = fs::poll_until(timeout, |_| {
            Ok(fs::keyed(&fs::read(&events)?, "frozen") == Some(want))
        })?;
        if reached {
            return Ok(());
        }
        if frozen {
            let _ = fs::write(&ctl, "0");
        }
        Err(CgroupError::Timeout {
            path: events,
            wanted: if frozen { "frozen 1" } else { "frozen 0" },
            timeout,
        })
    }

    pub(crate) fn stats(&self) -> Result<Stats> {
        let d = &self.dir;
        if !d.is_dir() {
            return Err(CgroupError::NotFound { path: d.clone() });
        }
        let mut s = Stats {
            memory_usage: fs::read_u64_or_zero(&d.join("memory.current"))?,
            memory_max_usage: fs::read_u64_or_zero(&d.join("memory.peak"))?,
            memory_limit: fs::read_u64_or_max(&d.join("memory.max"), u64::MAX)?,
            swap_usage: fs::read_u64_or_zero(&d.join("memory.swap.current"))?,
            pids_current: fs::read_u64_or_zero(&d.join("pids.current"))?,
            pids_limit: fs::read_u64_or_max(&d.join("pids.max"), 0)?,
            ..Stats::default()
        };
        let mstat = fs::read_keyed_opt(&d.join("memory.stat"))?;
        s.memory_cache = fs::keyed(&mstat, "file").unwrap_or(0);
        s.memory_rss = fs::keyed(&mstat, "anon").unwrap_or(0);
        let events = fs::read_keyed_opt(&d.join("memory.events"))?;
        s.oom_events = fs::keyed(&events, "oom").unwrap_or(0);
        s.oom_kills = fs::keyed(&events, "oom_kill").unwrap_or(0);
        let cstat = fs::read_keyed_opt(&d.join("cpu.stat"))?;
        let us = |k: &str| fs::keyed(&cstat, k).unwrap_or(0).saturating_mul(1000);
        s.cpu_usage_ns = us("usage_usec");
        s.cpu_user_ns = us("user_usec");
        s.cpu_system_ns = us("system_usec");
        s.cpu_throttled_ns = us("throttled_usec");
        s.cpu_nr_periods = fs::keyed(&cstat, "nr_periods").unwrap_or(0);
        s.cpu_nr_throttled = fs::keyed(&cstat, "nr_throttled").unwrap_or(0);
        Ok(s)
    }

    pub(crate) fn oom_kill_count(&self) -> Result<u64> {
        let events = fs::read_keyed_opt(&self.dir.join("memory.events"))?;
        Ok(fs::keyed(&events, "oom_kill").unwrap_or(0))
    }
}

/// Enables in `dir/cgroup.subtree_control` the wanted controllers that `dir` offers and has not
/// enabled yet. All at once first; if the kernel refuses the batch, one by one, so that one
/// unavailable controller (e.g. `cpu` with realtime tasks around) does not cost the others. A
/// controller that cannot be enabled is logged: a limit that needs it then fails in `apply` with
/// the missing file named.
fn enable_controllers(dir: &Path) -> Result<()> {
    let available = fs::read(&dir.join("cgroup.controllers"))?;
    let ctl = dir.join("cgroup.subtree_control");
    let enabled = fs::read(&ctl)?;
    let has = |body: &str, c: &str| body.split_whitespace().any(|x| x == c);
    let missing: Vec<&str> = WANTED
        .iter()
        .copied()
        .filter(|c| has(&available, c) && !has(&enabled, c))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let batch: Vec<String> = missing.iter().map(|c| format!("+{c}")).collect();
    if fs::write(&ctl, &batch.join(" ")).is_ok() {
        return Ok(());
    }
    for c in missing {
        if let Err(e) = fs::write(&ctl, &format!("+{c}")) {
            log::warn!("{e} (enabling {c})");
        }
    }
    Ok(())
}

/// Reads a v2 limit file: `max` -> -1, missing -> None.
fn read_limit(f: &Path) -> Result<Option<i64>> {
    match fs::read_opt(f)? {
        Some(s) if s.trim() == "max" => Ok(Some(-1)),
        Some(s) => Ok(Some(fs::parse_i64(f, &s)?)),
        None => Ok(None),
    }
}

fn read_nonempty(f: &Path) -> Result<Option<String>> {
    Ok(fs::read_opt(f)?
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty()))
}
