//! `Tier`: which compiler produced a workload's code. Its name is part of cache keys and shows
//! in logs and metrics.

/// Which compiler produced a workload's code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tier {
    /// Cranelift with optimizations: slow to compile, fast to run. What the
    /// compile cache is for.
    Optimized,
    /// Winch, wasmtime's single-pass baseline compiler: several times faster
    /// to compile, slower to run. Used for a first start while the optimized
    /// code is being built. Same semantics, same WASI, same exit codes.
    Baseline,
}

impl Tier {
    /// A short stable name, used in cache keys and logs.
    pub fn name(self) -> &'static str {
        match self {
            Tier::Optimized => "optimized",
            Tier::Baseline => "baseline",
        }
    }

    pub(crate) fn index(self) -> usize {
        match self {
            Tier::Optimized => 0,
            Tier::Baseline => 1,
        }
    }
}

impl std::fmt::Display for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
