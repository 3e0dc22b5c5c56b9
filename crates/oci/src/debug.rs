//! The engine-facing annotations of a workload that are not about serving: which wasm features
//! it needs (`wasm.containerd.io/wasm-features`, checked by the engine, which knows the names)
//! and where a trap leaves a core dump (`wasm.containerd.io/coredump-dir`, a directory of the
//! container's own view, usually a mounted volume, and `wasm.containerd.io/coredump-max-size`).

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
}

/// Reads [`WASM_FEATURES`], [`COREDUMP_DIR`] and [`COREDUMP_MAX_SIZE`]. A malformed value is
/// an error naming the annotation.
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
    };
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
