//! The shim's settings from its environment (containerd passes its own environment to shims),
//! handed on explicitly to the processes it starts (the container init and the compile
//! helpers start with an empty environment).
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `WASM_SHIM_CACHE_DIR` | `/var/lib/containerd-shim-wasm/cache` | compile cache; `off` disables it |
//! | `WASM_SHIM_CACHE_MAX_SIZE` | `1G` | bound on the cache (bytes, or with `K`, `M`, `G`) |
//! | `WASM_SHIM_BASELINE` | `on` | start a module nobody compiled yet with baseline (Winch) code |
//! | `WASM_SHIM_POOLING` | `off` | wasmtime's pooling instance allocator |
//! | `WASM_SHIM_MAX_MODULE_SIZE` | `256M` | the largest module or component a container may run |
//! | `WASM_SHIM_COMPILE_CGROUP` | `/containerd-shim-wasm/compile` | the cgroup of background compiles; `off`: the shim's |
//! | `WASM_SHIM_COMPILE_MEMORY` | `2G` | its memory limit (bytes, or with `K`, `M`, `G`) |
//! | `WASM_SHIM_COMPILE_CPU` | `1` | its CPU limit, in CPUs (`0.5`, `2`, `500m`) |
//! | `WASM_SHIM_COMPILE_CONCURRENCY` | the number of CPUs | compiles at once on the node, every shim together |
//! | `WASM_SHIM_COMPILE_TIMEOUT` | `300s` | life of a compile helper Create waits for (`90`, `90s`, `5m`) |
//! | `WASM_SHIM_BACKGROUND_COMPILE_TIMEOUT` | `900s` | life of a background compile helper |
//! | `WASM_SHIM_SERVE_PROCESSES` | `auto` | processes serving one HTTP workload: `auto`, one per CPU the container may use (at most 8); `1`: one process, a worker thread per CPU |
//! | `WASM_SHIM_WASM_FEATURES` | empty | wasm features on or off for every workload (`+wide-arithmetic,-threads`); a pod's `wasm.containerd.io/wasm-features` applies after it |

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use wasm_shim_engine::{EngineConfig, Features, DEFAULT_MAX_SIZE};
use wasm_shim_oci::{parse_size, SIZE_GRAMMAR};

pub const DEFAULT_CACHE_DIR: &str = "/var/lib/containerd-shim-wasm/cache";

const CACHE_DIR: &str = "WASM_SHIM_CACHE_DIR";
const CACHE_MAX_SIZE: &str = "WASM_SHIM_CACHE_MAX_SIZE";
const BASELINE: &str = "WASM_SHIM_BASELINE";
const POOLING: &str = "WASM_SHIM_POOLING";
const MAX_MODULE_SIZE: &str = "WASM_SHIM_MAX_MODULE_SIZE";
const COMPILE_CGROUP: &str = "WASM_SHIM_COMPILE_CGROUP";
const COMPILE_MEMORY: &str = "WASM_SHIM_COMPILE_MEMORY";
const COMPILE_CPU: &str = "WASM_SHIM_COMPILE_CPU";
const COMPILE_CONCURRENCY: &str = "WASM_SHIM_COMPILE_CONCURRENCY";
const COMPILE_TIMEOUT: &str = "WASM_SHIM_COMPILE_TIMEOUT";
const BACKGROUND_COMPILE_TIMEOUT: &str = "WASM_SHIM_BACKGROUND_COMPILE_TIMEOUT";
pub const WASM_FEATURES: &str = "WASM_SHIM_WASM_FEATURES";
const SERVE_PROCESSES: &str = "WASM_SHIM_SERVE_PROCESSES";

/// The node-level cgroup of background compiles (below the cgroup root; in every v1 hierarchy).
pub const DEFAULT_COMPILE_CGROUP: &str = "/containerd-shim-wasm/compile";
/// Its memory limit: enough for Cranelift on the largest modules a container may run (a 256 MiB
/// module is not compiled in this cgroup: see `protocol::MAX_COMPILE_BYTES`, same bound), and
/// shared by every background compile of the node at once.
pub const DEFAULT_COMPILE_MEMORY: u64 = 2 << 30;
/// Its CPU limit in thousandths of a CPU: one CPU, so background compiles never take more than
/// one core of the node whatever their number.
pub const DEFAULT_COMPILE_MILLICPUS: u64 = 1000;
/// How long a compile a Create waits for may live, waiting for its turn included.
pub const DEFAULT_COMPILE_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a background compile may live, waiting for its turn included.
pub const DEFAULT_BACKGROUND_COMPILE_TIMEOUT: Duration = Duration::from_secs(900);

/// The default bound on a workload's size: a module is read into the container's memory and
/// compiled whole, and the largest real ones are tens of MiB (the same bound as a compile
/// request to the shim, `protocol::MAX_COMPILE_BYTES`).
pub const DEFAULT_MAX_MODULE_SIZE: u64 = 256 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `None`: no compile cache (every start compiles, optimized, in the init).
    pub cache_dir: Option<PathBuf>,
    pub cache_max_size: u64,
    /// Baseline code first when nothing is cached.
    pub baseline: bool,
    pub pooling: bool,
    /// Modules and components larger than this are refused at Create, unread.
    pub max_module_size: u64,
    /// The normalized cgroups path background compiles run in; `None`: the shim's own.
    pub compile_cgroup: Option<String>,
    /// That cgroup's memory limit, in bytes.
    pub compile_memory: u64,
    /// That cgroup's CPU limit, in thousandths of a CPU.
    pub compile_millicpus: u64,
    /// How many compile helpers may compile at once on the node (at least 1).
    pub compile_concurrency: usize,
    /// The life of a compile helper Create waits for.
    pub compile_timeout: Duration,
    /// The life of a background compile helper.
    pub background_compile_timeout: Duration,
    /// The node's wasm feature list (`+gc,-simd`), checked; empty for wasmtime's defaults.
    /// A workload's annotation applies after it ([`Features::layered`]).
    pub wasm_features: String,
    /// The most processes serving one HTTP workload (see `workers`); `None`: automatic.
    pub serve_processes: Option<usize>,
}

/// The number of CPUs this process may run on, at least 1.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).max(1)
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            cache_dir: Some(PathBuf::from(DEFAULT_CACHE_DIR)),
            cache_max_size: DEFAULT_MAX_SIZE,
            baseline: true,
            pooling: false,
            max_module_size: DEFAULT_MAX_MODULE_SIZE,
            compile_cgroup: Some(DEFAULT_COMPILE_CGROUP.to_string()),
            compile_memory: DEFAULT_COMPILE_MEMORY,
            compile_millicpus: DEFAULT_COMPILE_MILLICPUS,
            compile_concurrency: cpus(),
            compile_timeout: DEFAULT_COMPILE_TIMEOUT,
            background_compile_timeout: DEFAULT_BACKGROUND_COMPILE_TIMEOUT,
            wasm_features: String::new(),
            serve_processes: None,
        }
    }
}

fn switch(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "on" | "true" | "yes" => Some(true),
        "0" | "off" | "false" | "no" => Some(false),
        _ => None,
    }
}

/// CPUs as Kubernetes writes them: `1`, `0.5`, `2.25`, `500m`; in thousandths of a CPU. Zero
/// (no CPU at all) is refused.
pub fn parse_cpus(value: &str) -> Option<u64> {
    let v = value.trim();
    let millis = match v.strip_suffix('m') {
        Some(m) if !m.is_empty() && m.bytes().all(|b| b.is_ascii_digit()) => m.parse().ok()?,
        Some(_) => return None,
        None => {
            let (whole, frac) = v.split_once('.').unwrap_or((v, ""));
            let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
            if (whole.is_empty() && frac.is_empty()) || !digits(whole) || !digits(frac) || frac.len() > 3 {
                return None;
            }
            let whole: u64 = if whole.is_empty() { 0 } else { whole.parse().ok()? };
            let frac: u64 = if frac.is_empty() { 0 } else { format!("{frac:0<3}").parse().ok()? };
            whole.checked_mul(1000)?.checked_add(frac)?
        }
    };
    (millis > 0).then_some(millis)
}

/// `300`, `300s`, `5m`, `1h`, `1500ms`: the grammar of the HTTP annotations' timeouts. Zero is
/// refused.
pub fn parse_timeout(value: &str) -> Option<Duration> {
    wasm_shim_oci::http::parse_duration(value.trim()).filter(|d| !d.is_zero())
}

impl Settings {
    /// This process's settings, read once.
    pub fn current() -> &'static Settings {
        static SETTINGS: OnceLock<Settings> = OnceLock::new();
        SETTINGS.get_or_init(Settings::from_env)
    }

    pub fn from_env() -> Settings {
        Settings::from_vars(|k| std::env::var(k).ok())
    }

    /// Unset or unreadable values keep their defaults (with a warning for the latter).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Settings {
        let mut s = Settings::default();
        if let Some(dir) = get(CACHE_DIR) {
            let dir = dir.trim();
            s.cache_dir = match switch(dir) {
                Some(false) => None,
                _ if dir.is_empty() => s.cache_dir,
                _ if !dir.starts_with('/') => {
                    log::warn!("{CACHE_DIR}={dir:?} is not an absolute path; using {DEFAULT_CACHE_DIR}");
                    s.cache_dir
                }
                _ => Some(PathBuf::from(dir)),
            };
        }
        for (name, field) in [(CACHE_MAX_SIZE, &mut s.cache_max_size), (MAX_MODULE_SIZE, &mut s.max_module_size)] {
            if let Some(v) = get(name) {
                match parse_size(&v) {
                    Some(n) => *field = n,
                    None => log::warn!("{name}={v:?} is not a size ({SIZE_GRAMMAR}); using {}", show_size(*field)),
                }
            }
        }
        if let Some(v) = get(COMPILE_CGROUP) {
            let v = v.trim();
            s.compile_cgroup = match switch(v) {
                Some(false) => None,
                Some(true) => s.compile_cgroup,
                _ if v.is_empty() => s.compile_cgroup,
                _ => match wasm_shim_container::cgroup::normalize_path(v, DEFAULT_COMPILE_CGROUP) {
                    Ok(p) => Some(p),
                    Err(e) => {
                        log::warn!("{COMPILE_CGROUP}={v:?}: {e}; using {DEFAULT_COMPILE_CGROUP}");
                        s.compile_cgroup
                    }
                },
            };
        }
        if let Some(v) = get(COMPILE_MEMORY) {
            match parse_size(&v).filter(|&n| n > 0) {
                Some(n) => s.compile_memory = n,
                None => log::warn!("{COMPILE_MEMORY}={v:?} is not a size ({SIZE_GRAMMAR}); using {}", show_size(s.compile_memory)),
            }
        }
        if let Some(v) = get(COMPILE_CPU) {
            match parse_cpus(&v) {
                Some(m) => s.compile_millicpus = m,
                None => log::warn!("{COMPILE_CPU}={v:?} is not a number of CPUs (1, 0.5, 500m); using {}m", s.compile_millicpus),
            }
        }
        if let Some(v) = get(COMPILE_CONCURRENCY) {
            match v.trim().parse::<usize>().ok().filter(|&n| n > 0) {
                Some(n) => s.compile_concurrency = n,
                None => log::warn!("{COMPILE_CONCURRENCY}={v:?} is not a count of at least 1; using {}", s.compile_concurrency),
            }
        }
        for (name, field) in [(COMPILE_TIMEOUT, &mut s.compile_timeout), (BACKGROUND_COMPILE_TIMEOUT, &mut s.background_compile_timeout)] {
            if let Some(v) = get(name) {
                match parse_timeout(&v) {
                    Some(d) => *field = d,
                    None => log::warn!("{name}={v:?} is not a duration (300, 300s, 5m); using {field:?}"),
                }
            }
        }
        if let Some(v) = get(WASM_FEATURES) {
            match Features::parse(&v) {
                Ok(_) => s.wasm_features = v.trim().to_string(),
                Err(e) => log::warn!("{WASM_FEATURES}={v:?}: {e}; using wasmtime's defaults"),
            }
        }
        if let Some(v) = get(SERVE_PROCESSES) {
            match v.trim() {
                "" | "auto" => s.serve_processes = None,
                n => match n.parse::<usize>().ok().filter(|&n| n > 0) {
                    Some(n) => s.serve_processes = Some(n),
                    None => log::warn!("{SERVE_PROCESSES}={v:?} is neither auto nor a count of at least 1; using auto"),
                },
            }
        }
        for (name, field) in [(BASELINE, &mut s.baseline), (POOLING, &mut s.pooling)] {
            if let Some(v) = get(name) {
                match switch(&v) {
                    Some(b) => *field = b,
                    None => log::warn!("{name}={v:?} is neither on nor off; keeping {}", if *field { "on" } else { "off" }),
                }
            }
        }
        s
    }

    /// Passes these settings on to a child started with a cleared environment.
    pub fn apply_to(&self, cmd: &mut Command) {
        let onoff = |b: bool| if b { "on" } else { "off" };
        match &self.cache_dir {
            Some(d) => cmd.env(CACHE_DIR, d),
            None => cmd.env(CACHE_DIR, "off"),
        };
        cmd.env(CACHE_MAX_SIZE, self.cache_max_size.to_string());
        cmd.env(BASELINE, onoff(self.baseline));
        cmd.env(POOLING, onoff(self.pooling));
        cmd.env(MAX_MODULE_SIZE, self.max_module_size.to_string());
        cmd.env(COMPILE_CGROUP, self.compile_cgroup.as_deref().unwrap_or("off"));
        cmd.env(COMPILE_MEMORY, self.compile_memory.to_string());
        cmd.env(COMPILE_CPU, format!("{}m", self.compile_millicpus));
        cmd.env(COMPILE_CONCURRENCY, self.compile_concurrency.to_string());
        cmd.env(COMPILE_TIMEOUT, format!("{}ms", self.compile_timeout.as_millis()));
        cmd.env(BACKGROUND_COMPILE_TIMEOUT, format!("{}ms", self.background_compile_timeout.as_millis()));
        cmd.env(WASM_FEATURES, &self.wasm_features);
        cmd.env(SERVE_PROCESSES, self.serve_processes.map_or("auto".to_string(), |n| n.to_string()));
    }

    /// The engine for these settings: the node's wasm features (checked when read).
    pub fn engine_config(&self) -> EngineConfig {
        EngineConfig {
            pooling: self.pooling,
            serving: None,
            single_threaded: false,
            features: Features::parse(&self.wasm_features).unwrap_or_default(),
            coredump: false,
        }
    }

    /// These settings with a workload's feature list after the node's: what the compile
    /// helpers of that workload get (their engine must be the init's, or the cache keys
    /// differ). An error names what is wrong with the list.
    pub fn with_workload_features(&self, workload: &str) -> Result<Settings, wasm_shim_engine::FeatureError> {
        Features::layered(&self.wasm_features, workload)?;
        let joined = match (self.wasm_features.as_str(), workload.trim()) {
            (n, "") => n.to_string(),
            ("", w) => w.to_string(),
            (n, w) => format!("{n},{w}"),
        };
        Ok(Settings { wasm_features: joined, ..self.clone() })
    }

    /// The error for a workload of `size` bytes above [`Settings::max_module_size`].
    pub fn too_big(&self, what: &str, size: u64) -> String {
        format!("{what}: {} is more than the {} a module may have ({MAX_MODULE_SIZE})", show_size(size), show_size(self.max_module_size))
    }
}

/// `300 MiB`, `1.5 GiB`, `4096 bytes`.
pub fn show_size(n: u64) -> String {
    for (shift, unit) in [(30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if n >= 1 << shift {
            let v = n as f64 / (1u64 << shift) as f64;
            return if v.fract() == 0.0 { format!("{v:.0} {unit}") } else { format!("{v:.1} {unit}") };
        }
    }
    format!("{n} bytes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(pairs: &[(&str, &str)]) -> Settings {
        let m: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Settings::from_vars(|k| m.get(k).cloned())
    }

    #[test]
    fn defaults() {
        let s = from(&[]);
        assert_eq!(s.cache_dir.as_deref(), Some(std::path::Path::new(DEFAULT_CACHE_DIR)));
        assert_eq!(s.cache_max_size, 1 << 30);
        assert!(s.baseline);
        assert!(!s.pooling);
        assert_eq!(s.max_module_size, 256 << 20);
        assert_eq!(s.compile_cgroup.as_deref(), Some("/containerd-shim-wasm/compile"));
        assert_eq!(s.compile_memory, 2 << 30);
        assert_eq!(s.compile_millicpus, 1000);
        assert_eq!(s.compile_concurrency, cpus());
        assert!(s.compile_concurrency >= 1);
        assert_eq!(s.compile_timeout, Duration::from_secs(300));
        assert_eq!(s.background_compile_timeout, Duration::from_secs(900));
    }

    #[test]
    fn compile_bounds() {
        let s = from(&[
            (COMPILE_CGROUP, "/system.slice/wasm-compile"),
            (COMPILE_MEMORY, "512Mi"),
            (COMPILE_CPU, "1.5"),
            (COMPILE_CONCURRENCY, "3"),
            (COMPILE_TIMEOUT, "90"),
            (BACKGROUND_COMPILE_TIMEOUT, "20m"),
        ]);
        assert_eq!(s.compile_cgroup.as_deref(), Some("/system.slice/wasm-compile"));
        assert_eq!(s.compile_memory, 512 << 20);
        assert_eq!(s.compile_millicpus, 1500);
        assert_eq!(s.compile_concurrency, 3);
        assert_eq!(s.compile_timeout, Duration::from_secs(90));
        assert_eq!(s.background_compile_timeout, Duration::from_secs(1200));
        // A relative path is taken from the root; the systemd form is understood; `off` turns it off.
        assert_eq!(from(&[(COMPILE_CGROUP, "wasm//compile/")]).compile_cgroup.as_deref(), Some("/wasm/compile"));
        assert_eq!(from(&[(COMPILE_CGROUP, "system.slice:wasm:compile")]).compile_cgroup.as_deref(), Some("/system.slice/wasm-compile.scope"));
        assert_eq!(from(&[(COMPILE_CGROUP, "off")]).compile_cgroup, None);
        assert_eq!(from(&[(COMPILE_CGROUP, "on")]).compile_cgroup.as_deref(), Some(DEFAULT_COMPILE_CGROUP));
        // Bad values keep the defaults: a path out of the tree, a zero limit, no CPU, no slot, no time.
        let bad = from(&[
            (COMPILE_CGROUP, "/a/../b"),
            (COMPILE_MEMORY, "0"),
            (COMPILE_CPU, "0"),
            (COMPILE_CONCURRENCY, "0"),
            (COMPILE_TIMEOUT, "0s"),
            (BACKGROUND_COMPILE_TIMEOUT, "soon"),
        ]);
        assert_eq!(bad, Settings::default());
        // The project's size grammar: `G` is GiB, and `2Gi` (Kubernetes') is not understood.
        assert_eq!(from(&[(COMPILE_MEMORY, "2Gi")]).compile_memory, DEFAULT_COMPILE_MEMORY);
        assert_eq!(from(&[(COMPILE_MEMORY, "2GiB")]).compile_memory, 2 << 30);
    }

    #[test]
    fn cpus_and_timeouts() {
        assert_eq!(parse_cpus("1"), Some(1000));
        assert_eq!(parse_cpus(" 2 "), Some(2000));
        assert_eq!(parse_cpus("0.5"), Some(500));
        assert_eq!(parse_cpus(".25"), Some(250));
        assert_eq!(parse_cpus("1.125"), Some(1125));
        assert_eq!(parse_cpus("500m"), Some(500));
        for bad in ["", "0", "0.0", "0m", "m", ".", "1.2345", "-1", "1.5m", "one", "1e3", "1,5"] {
            assert_eq!(parse_cpus(bad), None, "{bad:?}");
        }
        assert_eq!(parse_timeout("300"), Some(Duration::from_secs(300)));
        assert_eq!(parse_timeout(" 5m "), Some(Duration::from_secs(300)));
        assert_eq!(parse_timeout("1500ms"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_timeout("1h"), Some(Duration::from_secs(3600)));
        for bad in ["", "0", "0s", "5 minutes", "-1", "1.5s"] {
            assert_eq!(parse_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn overrides_and_bad_values() {
        let s = from(&[(CACHE_DIR, "off"), (CACHE_MAX_SIZE, "512Mi"), (BASELINE, "0"), (POOLING, "yes"), (MAX_MODULE_SIZE, "1G")]);
        assert_eq!(s.cache_dir, None);
        assert_eq!(s.cache_max_size, 512 << 20);
        assert_eq!(s.max_module_size, 1_000_000_000);
        assert!(!s.baseline && s.pooling);
        let s = from(&[(CACHE_DIR, "relative/dir"), (CACHE_MAX_SIZE, "lots"), (BASELINE, "maybe"), (MAX_MODULE_SIZE, "big")]);
        assert_eq!(s, Settings::default());
        assert_eq!(from(&[(CACHE_DIR, "/tmp/c")]).cache_dir, Some(PathBuf::from("/tmp/c")));
    }

    #[test]
    fn wasm_features_node_default_and_workload_layer() {
        let s = from(&[(WASM_FEATURES, " +wide-arithmetic,-threads ")]);
        assert_eq!(s.wasm_features, "+wide-arithmetic,-threads");
        let f = s.engine_config().features;
        assert!(f.is_on("wide-arithmetic") && !f.is_on("threads") && f.is_on("gc"));
        // A bad node list is ignored (with a warning): the defaults.
        let bad = from(&[(WASM_FEATURES, "+warp-drive")]);
        assert_eq!(bad.wasm_features, "");
        assert_eq!(bad.engine_config().features, Features::default());
        // A workload's list applies after the node's.
        let w = s.with_workload_features("+threads,-gc").unwrap();
        assert_eq!(w.wasm_features, "+wide-arithmetic,-threads,+threads,-gc");
        let f = w.engine_config().features;
        assert!(f.is_on("threads") && !f.is_on("gc") && f.is_on("wide-arithmetic"));
        assert_eq!(s.with_workload_features("").unwrap(), s);
        let e = s.with_workload_features("+gc,+nope").unwrap_err();
        assert!(e.to_string().contains("\"nope\""), "{e}");
    }

    #[test]
    fn sizes() {
        // The one grammar (wasm_shim_oci::size): Gi is 2^30, G is 10^9, as in a pod's limits.
        assert_eq!(parse_size("2Gi"), Some(2 << 30));
        assert_eq!(parse_size("2G"), Some(2_000_000_000));
        assert_eq!(show_size(300 << 20), "300 MiB");
        assert_eq!(show_size(3 << 29), "1.5 GiB");
        assert_eq!(show_size(100), "100 bytes");
        let s = Settings::default();
        assert_eq!(s.too_big("/a.wasm", 300 << 20), "/a.wasm: 300 MiB is more than the 256 MiB a module may have (WASM_SHIM_MAX_MODULE_SIZE)");
    }

    #[test]
    fn round_trip_through_a_child_environment() {
        let s = Settings {
            cache_dir: None,
            cache_max_size: 123,
            baseline: false,
            pooling: true,
            max_module_size: 456,
            compile_cgroup: None,
            compile_memory: 789,
            compile_millicpus: 250,
            compile_concurrency: 7,
            compile_timeout: Duration::from_millis(1500),
            background_compile_timeout: Duration::from_secs(42),
            wasm_features: "+wide-arithmetic,-threads".into(),
            serve_processes: Some(3),
        };
        // What a child reads back from the environment `apply_to` gives it.
        let round_trip = |s: &Settings| {
            let mut cmd = Command::new("true");
            s.apply_to(&mut cmd);
            let env: HashMap<String, String> = cmd
                .get_envs()
                .filter_map(|(k, v)| Some((k.to_str()?.to_string(), v?.to_str()?.to_string())))
                .collect();
            Settings::from_vars(|k| env.get(k).cloned())
        };
        assert_eq!(round_trip(&s), s);
        let s = Settings { compile_cgroup: Some("/x/y".into()), serve_processes: None, ..s };
        assert_eq!(round_trip(&s), s);
    }
}
