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

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use wasm_shim_engine::{EngineConfig, DEFAULT_MAX_SIZE};

pub const DEFAULT_CACHE_DIR: &str = "/var/lib/containerd-shim-wasm/cache";

const CACHE_DIR: &str = "WASM_SHIM_CACHE_DIR";
const CACHE_MAX_SIZE: &str = "WASM_SHIM_CACHE_MAX_SIZE";
const BASELINE: &str = "WASM_SHIM_BASELINE";
const POOLING: &str = "WASM_SHIM_POOLING";
const MAX_MODULE_SIZE: &str = "WASM_SHIM_MAX_MODULE_SIZE";

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
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            cache_dir: Some(PathBuf::from(DEFAULT_CACHE_DIR)),
            cache_max_size: DEFAULT_MAX_SIZE,
            baseline: true,
            pooling: false,
            max_module_size: DEFAULT_MAX_MODULE_SIZE,
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

/// `1073741824`, `1G`, `512M`, `64k` (binary units).
pub fn parse_size(value: &str) -> Option<u64> {
    let v = value.trim();
    let (digits, unit) = match v.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => v.split_at(i),
        None => (v, ""),
    };
    let n: u64 = digits.parse().ok()?;
    let shift = match unit.trim().to_ascii_uppercase().trim_end_matches("IB").trim_end_matches('B') {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return None,
    };
    n.checked_mul(1u64 << shift)
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
                    None => log::warn!("{name}={v:?} is not a size; using {field}"),
                }
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
    }

    pub fn engine_config(&self) -> EngineConfig {
        EngineConfig { pooling: self.pooling, serving: None }
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
    }

    #[test]
    fn overrides_and_bad_values() {
        let s = from(&[(CACHE_DIR, "off"), (CACHE_MAX_SIZE, "512M"), (BASELINE, "0"), (POOLING, "yes"), (MAX_MODULE_SIZE, "1G")]);
        assert_eq!(s.cache_dir, None);
        assert_eq!(s.cache_max_size, 512 << 20);
        assert_eq!(s.max_module_size, 1 << 30);
        assert!(!s.baseline && s.pooling);
        let s = from(&[(CACHE_DIR, "relative/dir"), (CACHE_MAX_SIZE, "lots"), (BASELINE, "maybe"), (MAX_MODULE_SIZE, "big")]);
        assert_eq!(s, Settings::default());
        assert_eq!(from(&[(CACHE_DIR, "/tmp/c")]).cache_dir, Some(PathBuf::from("/tmp/c")));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1024"), Some(1024));
        assert_eq!(parse_size("2G"), Some(2 << 30));
        assert_eq!(parse_size("64k"), Some(64 << 10));
        assert_eq!(parse_size("10MiB"), Some(10 << 20));
        assert_eq!(parse_size("1.5G"), None);
        assert_eq!(parse_size("G"), None);
        assert_eq!(show_size(300 << 20), "300 MiB");
        assert_eq!(show_size(3 << 29), "1.5 GiB");
        assert_eq!(show_size(100), "100 bytes");
        let s = Settings::default();
        assert_eq!(s.too_big("/a.wasm", 300 << 20), "/a.wasm: 300 MiB is more than the 256 MiB a module may have (WASM_SHIM_MAX_MODULE_SIZE)");
    }

    #[test]
    fn round_trip_through_a_child_environment() {
        let s = Settings { cache_dir: None, cache_max_size: 123, baseline: false, pooling: true, max_module_size: 456 };
        let mut cmd = Command::new("true");
        s.apply_to(&mut cmd);
        let env: HashMap<String, String> = cmd
            .get_envs()
            .filter_map(|(k, v)| Some((k.to_str()?.to_string(), v?.to_str()?.to_string())))
            .collect();
        assert_eq!(Settings::from_vars(|k| env.get(k).cloned()), s);
    }
}
