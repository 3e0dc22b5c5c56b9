//! The engine-facing annotations of a workload that are not about serving: which wasm features
//! it needs (`wasm.containerd.io/wasm-features`, checked by the engine, which knows the names)
//! where a trap leaves a core dump (`wasm.containerd.io/coredump-dir`, a directory of the
//! container's own view, usually a mounted volume, and `wasm.containerd.io/coredump-max-size`), and
//! where a component's `wasi:config/store` entries come from (`wasm.containerd.io/config-dir`,
//! `wasm.containerd.io/config-env-prefix`).

use std::path::{Component, Path, PathBuf};

use oci_spec::runtime::Spec;

use crate::error::OciError;
use crate::size::parse_size;

/// Wasm features on or off for this workload, after the node's: `+gc,-simd,threads`.
pub const WASM_FEATURES: &str = "wasm.containerd.io/wasm-features";
/// A directory inside the container (an absolute path of its view, e.g. a volume's mount
/// point) where a trapping guest leaves a wasm core dump.
pub const COREDUMP_DIR: &str = "wasm.containerd.io/coredump-dir";
/// The largest core dump written; a bigger one is not written (the trap message says so).
pub const COREDUMP_MAX_SIZE: &str = "wasm.containerd.io/coredump-max-size";

/// A directory of the container (a ConfigMap or Secret volume's mount point) whose files are the
/// component's `wasi:config/store` entries: file name → contents.
pub const CONFIG_DIR: &str = "wasm.containerd.io/config-dir";
/// Environment variables that are also `wasi:config/store` entries: those whose names start with
/// this prefix, under their name without it (`APP_` makes `APP_GREETING=hi` the entry
/// `GREETING`); `*` takes every variable under its own name.
pub const CONFIG_ENV_PREFIX: &str = "wasm.containerd.io/config-env-prefix";

/// Without [`COREDUMP_MAX_SIZE`]: a core dump holds every linear memory whole.
pub const DEFAULT_COREDUMP_MAX_SIZE: u64 = 256 << 20;

/// Where and how big a core dump may be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoreDumpConfig {
    /// Absolute, normalized, no `..`: a path of the container's view.
    pub dir: PathBuf,
    pub max_size: u64,
}

/// The debugging and feature annotations of a spec.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WorkloadConfig {
    /// As given (trimmed); empty when absent. The engine parses it.
    pub wasm_features: String,
    pub coredump: Option<CoreDumpConfig>,
    /// [`CONFIG_DIR`]: absolute, normalized, no `..`.
    pub config_dir: Option<PathBuf>,
    /// [`CONFIG_ENV_PREFIX`]: `Some("")` for `*` (every variable).
    pub config_env_prefix: Option<String>,
}

impl WorkloadConfig {
    /// The `wasi:config/store` entries the environment gives (see [`CONFIG_ENV_PREFIX`]), in
    /// the environment's order.
    pub fn config_from_env(&self, env: &[(String, String)]) -> Vec<(String, String)> {
        let Some(prefix) = &self.config_env_prefix else { return Vec::new() };
        env.iter()
            .filter_map(|(k, v)| {
                let key = k.strip_prefix(prefix.as_str())?;
                (!key.is_empty()).then(|| (key.to_string(), v.clone()))
            })
            .collect()
    }
}

/// Reads [`WASM_FEATURES`], [`COREDUMP_DIR`], [`COREDUMP_MAX_SIZE`], [`CONFIG_DIR`] and
/// [`CONFIG_ENV_PREFIX`]. A malformed value is an error naming the annotation.
pub fn workload_config(spec: &Spec) -> Result<WorkloadConfig, OciError> {
    let empty = Default::default();
    let annotations = spec.annotations().as_ref().unwrap_or(&empty);
    let get = |key: &str| annotations.get(key).map(|v| v.trim());
    let bad = |key: &str, value: &str, expected: &str| {
        OciError::InvalidSpec(format!("annotation {key}={value:?}: expected {expected}"))
    };
    let mut config = WorkloadConfig {
        wasm_features: get(WASM_FEATURES).unwrap_or("").to_string(),
        coredump: None,
        config_dir: None,
        config_env_prefix: None,
    };
    if let Some(v) = get(CONFIG_DIR).filter(|v| !v.is_empty()) {
        let dir = container_dir(v).ok_or_else(|| {
            bad(CONFIG_DIR, v, "an absolute directory of the container without `..`, such as /etc/config")
        })?;
        config.config_dir = Some(dir);
    }
    if let Some(v) = get(CONFIG_ENV_PREFIX) {
        if v.is_empty() || v.contains('=') || v.contains('\0') {
            return Err(bad(CONFIG_ENV_PREFIX, v, "a variable name prefix such as APP_, or * for every variable"));
        }
        config.config_env_prefix = Some(if v == "*" { String::new() } else { v.to_string() });
    }
    let max_size = match get(COREDUMP_MAX_SIZE) {
        Some(v) => parse_size(v)
            .filter(|n| *n > 0)
            .ok_or_else(|| bad(COREDUMP_MAX_SIZE, v, "a size such as 64Mi or 1Gi"))?,
        None => DEFAULT_COREDUMP_MAX_SIZE,
    };
    if let Some(v) = get(COREDUMP_DIR).filter(|v| !v.is_empty()) {
        let dir = container_dir(v).ok_or_else(|| {
            bad(COREDUMP_DIR, v, "an absolute directory of the container without `..`, such as /coredumps")
        })?;
        config.coredump = Some(CoreDumpConfig { dir, max_size });
    }
    Ok(config)
}

/// `v` as an absolute path without `.`/`..` components or NULs, normalized; `None` for `/`.
fn container_dir(v: &str) -> Option<PathBuf> {
    let path = Path::new(v);
    if !path.is_absolute() || v.contains('\0') {
        return None;
    }
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::RootDir => {}
            Component::Normal(n) => out.push(n),
            Component::CurDir | Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    (out != Path::new("/")).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn spec(pairs: &[(&str, &str)]) -> Spec {
        let mut spec = Spec::default();
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        spec.set_annotations(Some(map));
        spec
    }

    #[test]
    fn defaults() {
        assert_eq!(workload_config(&spec(&[])).unwrap(), WorkloadConfig::default());
        assert_eq!(workload_config(&Spec::default()).unwrap(), WorkloadConfig::default());
    }

    #[test]
    fn features_are_passed_as_given() {
        let c = workload_config(&spec(&[(WASM_FEATURES, " +gc,-simd ")])).unwrap();
        assert_eq!(c.wasm_features, "+gc,-simd");
    }

    #[test]
    fn config_sources() {
        let c = workload_config(&spec(&[(CONFIG_DIR, "/etc//app/"), (CONFIG_ENV_PREFIX, "APP_")])).unwrap();
        assert_eq!(c.config_dir, Some("/etc/app".into()));
        let env: Vec<(String, String)> =
            [("APP_GREETING", "hi"), ("PATH", "/"), ("APP_", "no name"), ("XAPP_X", "no")].iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        assert_eq!(c.config_from_env(&env), vec![("GREETING".to_string(), "hi".to_string())]);
        let all = workload_config(&spec(&[(CONFIG_ENV_PREFIX, "*")])).unwrap();
        assert_eq!(all.config_from_env(&env).len(), env.len());
        assert!(WorkloadConfig::default().config_from_env(&env).is_empty());
        for (key, bad) in [(CONFIG_DIR, "etc/app"), (CONFIG_DIR, "/etc/../x"), (CONFIG_ENV_PREFIX, ""), (CONFIG_ENV_PREFIX, "A=B")] {
            let e = workload_config(&spec(&[(key, bad)])).unwrap_err().to_string();
            assert!(e.contains(key), "{bad}: {e}");
        }
    }

    #[test]
    fn coredump_dir_and_size() {
        let c = workload_config(&spec(&[(COREDUMP_DIR, "/var//dumps/"), (COREDUMP_MAX_SIZE, "64Mi")])).unwrap();
        assert_eq!(c.coredump, Some(CoreDumpConfig { dir: "/var/dumps".into(), max_size: 64 << 20 }));
        let c = workload_config(&spec(&[(COREDUMP_DIR, "/d")])).unwrap();
        assert_eq!(c.coredump.unwrap().max_size, DEFAULT_COREDUMP_MAX_SIZE);
        // The size alone asks for nothing.
        assert_eq!(workload_config(&spec(&[(COREDUMP_MAX_SIZE, "1Mi")])).unwrap().coredump, None);
        for bad in ["relative/dir", "/a/../etc", "/", "//"] {
            let e = workload_config(&spec(&[(COREDUMP_DIR, bad)])).unwrap_err().to_string();
            assert!(e.contains(COREDUMP_DIR), "{bad}: {e}");
        }
        for bad in ["0", "lots", "-1"] {
            let e = workload_config(&spec(&[(COREDUMP_DIR, "/d"), (COREDUMP_MAX_SIZE, bad)])).unwrap_err().to_string();
            assert!(e.contains(COREDUMP_MAX_SIZE), "{bad}: {e}");
        }
    }
}
