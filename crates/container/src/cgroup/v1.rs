//! cgroup v1: one hierarchy per controller under the root (`memory/`, `cpu/`, ...). A container
//! has one directory per hierarchy; co-mounted controllers (`cpu,cpuacct` with `cpu` and
//! `cpuacct` symlinks) share a directory, so hierarchies are deduplicated by their real path.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::devices::Policy;
use super::fs;
use super::{parse_procs, rel, CgroupError, Resources, Result, Stats};

/// Controllers whose hierarchies a container joins, when mounted.
const CONTROLLERS: [&str; 8] = [
    "memory", "cpu", "cpuacct", "pids", "freezer", "cpuset", "blkio", "devices",
];

/// v1 reports "no memory limit" as a page-rounded `i64::MAX` (e.g. 9223372036854771712).
/// Anything above this threshold reads back as unlimited (-1).
const UNLIMITED_THRESHOLD: u64 = (i64::MAX as u64) / 2;

#[derive(Debug, Clone)]
pub(crate) struct V1 {
    root: PathBuf,
    path: String,
    /// (controller, hierarchy root) for each mounted controller we use.
    controllers: Vec<(&'static str, PathBuf)>,
}

impl V1 {
    pub(crate) fn new(root: &Path, path: &str) -> Result<V1> {
        let controllers: Vec<(&'static str, PathBuf)> = CONTROLLERS
            .iter()
            .filter_map(|&name| {
                let d = root.join(name);
                d.is_dir()
                    .then(|| (name, std::fs::canonicalize(&d).unwrap_or(d)))
            })
            .collect();
        if controllers.is_empty() {
            return Err(CgroupError::ControllerMissing {
                controller: "any v1 controller",
                root: root.to_path_buf(),
            });
        }
        Ok(V1 {
            root: root.to_path_buf(),
            path: path.to_string(),
            controllers,
        })
    }

    fn hierarchy(&self, controller: &str) -> Option<&Path> {
        self.controllers
            .iter()
            .find(|(c, _)| *c == controller)
            .map(|(_, h)| h.as_path())
    }

    /// The container's directory in the controller's hierarchy, if that controller is mounted.
    fn dir(&self, controller: &str) -> Option<PathBuf> {
        self.hierarchy(controller).map(|h| h.join(rel(&self.path)))
    }

    fn need(&self, controller: &'static str) -> Result<PathBuf> {
        self.dir(controller)
            .ok_or_else(|| CgroupError::ControllerMissing {
                controller,
                root: self.root.clone(),
            })
    }

    /// Distinct hierarchy roots, in controller order.
    fn hierarchies(&self) -> Vec<&Path> {
        let mut out: Vec<&Path> = Vec::new();
        for (_, h) in &self.controllers {
            if !out.contains(&h.as_path()) {
                out.push(h);
            }
        }
        out
    }

    pub(crate) fn paths(&self) -> Vec<PathBuf> {
        self.hierarchies()
            .into_iter()
            .map(|h| h.join(rel(&self.path)))
            .collect()
    }

    pub(crate) fn create(&self) -> Result<()> {
        for dir in self.paths() {
            fs::mkdir_all(&dir)?;
        }
        if let Some(h) = self.hierarchy("cpuset") {
            init_cpuset(h, &self.path)?;
        }
        Ok(())
    }

    pub(crate) fn apply(&self, r: &Resources) -> Result<()> {
        if let Some((key, _)) = r.unified.first() {
            return Err(CgroupError::InvalidResources(format!(
                "unified {key:?}: linux.resources.unified is for cgroup v2, and this node has v1"
            )));
        }
        if let Some(rules) = &r.devices {
            let policy = Policy::from_rules(rules)?;
            let dir = self.need("devices")?;
            // One rule per write: the kernel reads one rule from each.
            for (file, line) in policy.v1_writes() {
                fs::write(&dir.join(file), &line)?;
            }
        }
        self.apply_memory(r)?;
        self.apply_cpu(r)?;
        if r.cpuset_cpus.is_some() || r.cpuset_mems.is_some() {
            let dir = self.need("cpuset")?;
            if let Some(cpus) = &r.cpuset_cpus {
                fs::write(&dir.join("cpuset.cpus"), cpus)?;
            }
            if let Some(mems) = &r.cpuset_mems {
                fs::write(&dir.join("cpuset.mems"), mems)?;
            }
        }
        if let Some(p) = r.pids_limit {
            let dir = self.need("pids")?;
            let v = if p <= 0 {
                "max".to_string()
            } else {
                p.to_string()
            };
            fs::write(&dir.join("pids.max"), &v)?;
        }
        Ok(())
    }

    fn apply_memory(&self, r: &Resources) -> Result<()> {
        if r.memory_limit.is_none() && r.memory_reservation.is_none() && r.memory_swap.is_none() {
            return Ok(());
        }
        let dir = self.need("memory")?;
        let limit_f = dir.join("memory.limit_in_bytes");
        let memsw_f = dir.join("memory.memsw.limit_in_bytes");
        let swap = match r.memory_swap {
            Some(s) if memsw_f.exists() => Some(s),
            Some(_) => {
                log::warn!(
                    "cgroup: swap accounting is off ({} missing); memory+swap limit ignored",
                    memsw_f.display()
                );
                None
            }
            None => None,
        };
        match (r.memory_limit, swap) {
            (Some(l), Some(s)) => {
                if l >= 0 && s >= 0 && s < l {
                    return Err(CgroupError::InvalidResources(format!(
                        "memory+swap limit {s} is below the memory limit {l}"
                    )));
                }
                // The kernel keeps memsw >= memory at every step: lowering works memory first,
                // raising works memsw first. Try the first order, fall back to the second.
                if fs::write(&limit_f, &l.to_string()).is_ok() {
                    fs::write(&memsw_f, &s.to_string())?;
                } else {
                    fs::write(&memsw_f, &s.to_string())?;
                    fs::write(&limit_f, &l.to_string())?;
                }
            }
            (Some(l), None) => fs::write(&limit_f, &l.to_string())?,
            (None, Some(s)) => fs::write(&memsw_f, &s.to_string())?,
            (None, None) => {}
        }
        if let Some(res) = r.memory_reservation {
            fs::write(&dir.join("memory.soft_limit_in_bytes"), &res.to_string())?;
        }
        Ok(())
    }

    fn apply_cpu(&self, r: &Resources) -> Result<()> {
        if r.cpu_shares.is_none() && r.cpu_quota.is_none() && r.cpu_period.is_none() {
            return Ok(());
        }
        let dir = self.need("cpu")?;
        if let Some(s) = r.cpu_shares {
            fs::write(&dir.join("cpu.shares"), &s.to_string())?;
        }
        // Period first, so the quota is checked against the new period.
        if let Some(p) = r.cpu_period {
            fs::write(&dir.join("cpu.cfs_period_us"), &p.to_string())?;
        }
        if let Some(q) = r.cpu_quota {
            let v = if q < 0 {
                "-1".to_string()
            } else {
                q.to_string()
            };
            fs::write(&dir.join("cpu.cfs_quota_us"), &v)?;
        }
        Ok(())
    }

    pub(crate) fn read_limits(&self) -> Result<Resources> {
        let mut r = Resources::default();
        if let Some(dir) = self.dir("memory") {
            r.memory_limit = read_mem_limit(&dir.join("memory.limit_in_bytes"))?;
            r.memory_reservation = read_mem_limit(&dir.join("memory.soft_limit_in_bytes"))?;
            r.memory_swap = read_mem_limit(&dir.join("memory.memsw.limit_in_bytes"))?;
        }
        if let Some(dir) = self.dir("cpu") {
            let f = dir.join("cpu.shares");
            r.cpu_shares = fs::read_opt(&f)?
                .map(|s| fs::parse_u64(&f, &s))
                .transpose()?;
            let f = dir.join("cpu.cfs_quota_us");
            r.cpu_quota = fs::read_opt(&f)?
                .map(|s| fs::parse_i64(&f, &s))
                .transpose()?;
            let f = dir.join("cpu.cfs_period_us");
            r.cpu_period = fs::read_opt(&f)?
                .map(|s| fs::parse_u64(&f, &s))
                .transpose()?;
        }
        if let Some(dir) = self.dir("cpuset") {
            r.cpuset_cpus = read_nonempty(&dir.join("cpuset.cpus"))?;
            r.cpuset_mems = read_nonempty(&dir.join("cpuset.mems"))?;
        }
        if let Some(dir) = self.dir("pids") {
            let f = dir.join("pids.max");
            r.pids_limit = match fs::read_opt(&f)? {
                Some(s) if s.trim() == "max" => Some(-1),
                Some(s) => Some(fs::parse_i64(&f, &s)?),
                None => None,
            };
        }
        Ok(r)
    }

    pub(crate) fn add_process(&self, pid: i32) -> Result<()> {
        for dir in self.paths() {
            fs::write(&dir.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// The hierarchy whose `cgroup.procs` stands for the container's processes.
    pub(crate) fn procs_dir(&self) -> PathBuf {
        self.dir("memory").or_else(|| self.dir("pids")).unwrap_or_else(|| self.paths().remove(0))
    }

    pub(crate) fn procs(&self) -> Result<Vec<i32>> {
        let f = self.procs_dir().join("cgroup.procs");
        parse_procs(&f, &fs::read(&f)?)
    }

    pub(crate) fn set_frozen(&self, frozen: bool, timeout: Duration) -> Result<()> {
        let state = self.need("freezer")?.join("freezer.state");
        let want = if frozen { "FROZEN" } else { "THAWED" };
        fs::write(&state, want)?;
        let reached = fs::poll_until(timeout, |attempt| {
            if fs::read(&state)?.trim() == want {
                return Ok(true);
            }
            // A freeze can stall in FREEZING while a task is in an uninterruptible sleep;
            // asking again makes the kernel retry the stragglers.
            if frozen && attempt % 10 == 9 {
                fs::write(&state, want)?;
            }
            Ok(false)
        })?;
        if reached {
            return Ok(());
        }
        if frozen {
            // Do not leave a half-frozen container behind.
            let _ = fs::write(&state, "THAWED");
        }
        Err(CgroupError::Timeout {
            path: state,
            wanted: want,
            timeout,
        })
    }

    pub(crate) fn stats(&self) -> Result<Stats> {
        let paths = self.paths();
        if !paths.iter().any(|p| p.is_dir()) {
            return Err(CgroupError::NotFound {
                path: paths[0].clone(),
            });
        }
        let mut s = Stats::default();
        if let Some(dir) = self.dir("memory") {
            s.memory_usage = fs::read_u64_or_zero(&dir.join("memory.usage_in_bytes"))?;
            s.memory_max_usage = fs::read_u64_or_zero(&dir.join("memory.max_usage_in_bytes"))?;
            s.memory_limit = fs::read_u64_or_zero(&dir.join("memory.limit_in_bytes"))?;
            let stat = fs::read_keyed_opt(&dir.join("memory.stat"))?;
            let total_or_local = |k: &str| {
                fs::keyed(&stat, &format!("total_{k}"))
                    .or_else(|| fs::keyed(&stat, k))
                    .unwrap_or(0)
            };
            s.memory_cache = total_or_local("cache");
            s.memory_rss = total_or_local("rss");
            let memsw_f = dir.join("memory.memsw.usage_in_bytes");
            s.swap_usage = match fs::read_opt(&memsw_f)? {
                Some(v) => fs::parse_u64(&memsw_f, &v)?.saturating_sub(s.memory_usage),
                None => total_or_local("swap"),
            };
            s.oom_kills = self.oom_kill_count()?;
            s.oom_events = s.oom_kills;
        }
        if let Some(dir) = self.dir("cpuacct") {
            s.cpu_usage_ns = fs::read_u64_or_zero(&dir.join("cpuacct.usage"))?;
            let stat = fs::read_keyed_opt(&dir.join("cpuacct.stat"))?;
            let ns_per_tick = 1_000_000_000 / clk_tck();
            s.cpu_user_ns = fs::keyed(&stat, "user").unwrap_or(0) * ns_per_tick;
            s.cpu_system_ns = fs::keyed(&stat, "system").unwrap_or(0) * ns_per_tick;
        }
        if let Some(dir) = self.dir("cpu") {
            let stat = fs::read_keyed_opt(&dir.join("cpu.stat"))?;
            s.cpu_nr_periods = fs::keyed(&stat, "nr_periods").unwrap_or(0);
            s.cpu_nr_throttled = fs::keyed(&stat, "nr_throttled").unwrap_or(0);
            s.cpu_throttled_ns = fs::keyed(&stat, "throttled_time").unwrap_or(0);
        }
        if let Some(dir) = self.dir("pids") {
            s.pids_current = fs::read_u64_or_zero(&dir.join("pids.current"))?;
            s.pids_limit = fs::read_u64_or_max(&dir.join("pids.max"), 0)?;
        }
        Ok(s)
    }

    pub(crate) fn oom_kill_count(&self) -> Result<u64> {
        let Some(dir) = self.dir("memory") else {
            return Ok(0);
        };
        let body = fs::read_keyed_opt(&dir.join("memory.oom_control"))?;
        Ok(fs::keyed(&body, "oom_kill").unwrap_or(0))
    }
}

/// A new cpuset cgroup starts with empty `cpuset.cpus`/`cpuset.mems`, and no task can join it
/// until both are set. Copy them down from the parent at every level we may have created.
fn init_cpuset(hierarchy: &Path, path: &str) -> Result<()> {
    let mut parent = hierarchy.to_path_buf();
    for comp in rel(path).split('/') {
        let dir = parent.join(comp);
        for file in ["cpuset.cpus", "cpuset.mems"] {
            let f = dir.join(file);
            if fs::read(&f)?.trim().is_empty() {
                let from = fs::read(&parent.join(file))?;
                fs::write(&f, from.trim())?;
            }
        }
        parent = dir;
    }
    Ok(())
}

fn read_mem_limit(f: &Path) -> Result<Option<i64>> {
    let Some(s) = fs::read_opt(f)? else {
        return Ok(None);
    };
    if s.trim() == "-1" {
        return Ok(Some(-1));
    }
    let v = fs::parse_u64(f, &s)?;
    Ok(Some(if v >= UNLIMITED_THRESHOLD {
        -1
    } else {
        v as i64
    }))
}

fn read_nonempty(f: &Path) -> Result<Option<String>> {
    Ok(fs::read_opt(f)?
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty()))
}

/// Clock ticks per second, the unit of `cpuacct.stat`.
pub(crate) fn clk_tck() -> u64 {
    // SAFETY: sysconf takes an integer name and returns an integer; it touches no memory of ours.
    let v = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if v > 0 {
        v as u64
    } else {
        100
    }
}
