//! What a guest may use. The store's `ResourceLimiter`: caps its linear memories and tables,
//! together, at the container's memory limit (a denied growth traps and is recorded, so the outcome can say
//! "out of memory" without guessing from text) and tables at a sane size. `ServeLimits`: the
//! bounds of a served workload (connections, requests in flight, a request's time, memory and
//! body, where it may reach, how many requests an instance serves), and what the user calls
//! them in messages.

use std::time::Duration;

/// The largest table a guest may have, in elements (8 bytes each on 64-bit
/// hosts, so at most 80 MB). Real programs use a few thousand.
pub(crate) const MAX_TABLE_ELEMENTS: usize = 10_000_000;

/// The bounds of a served workload (`Engine::serve`). The defaults are the shim's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeLimits {
    /// Requests served at once (at least 1); the next one gets 503 with `Retry-After`.
    pub max_concurrency: u32,
    /// Client connections open at once (at least 1), idle keep-alive ones included; the next one
    /// is not accepted until one closes: it waits in the listen backlog.
    pub max_connections: u32,
    /// Time a request may take, guest and body included; past it the answer is 504.
    pub request_timeout: Duration,
    /// Bytes of linear memory each request's instance may have.
    pub request_memory: u64,
    /// Largest request body a WAGI module is handed (413 past it).
    pub max_body: u64,
    /// Where a request may reach, for `wasi:http` and `wasi:sockets` alike: entries
    /// `[scheme://]host[:port]`, `*` for anywhere; none: nowhere.
    pub allowed_outbound: Vec<String>,
    /// Requests one instance of a `wasi:http` component serves, one at a time, before it is
    /// retired (at least 1; 1: a fresh instance per request). Above 1 the guest's state carries
    /// over between requests; a trap, a timeout, the memory cap or a body error retires the
    /// instance at once. WAGI modules cannot be reused: `serve` refuses them above 1.
    pub instance_reuse: u32,
    /// What the user calls these settings, in messages.
    pub names: LimitNames,
}

impl Default for ServeLimits {
    fn default() -> Self {
        ServeLimits {
            max_concurrency: 256,
            max_connections: 1024,
            request_timeout: Duration::from_secs(30),
            request_memory: 128 << 20,
            max_body: 16 << 20,
            allowed_outbound: Vec::new(),
            instance_reuse: 1,
            names: LimitNames::default(),
        }
    }
}

/// How messages name a limit the user set: "no response within 30s (NAME)", "... denied: not
/// in NAME". The shim passes its annotations' names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitNames {
    pub request_timeout: &'static str,
    pub allowed_outbound: &'static str,
    pub instance_reuse: &'static str,
}

impl Default for LimitNames {
    fn default() -> Self {
        LimitNames {
            request_timeout: "the request timeout",
            allowed_outbound: "the outbound allow-list",
            instance_reuse: "instance reuse",
        }
    }
}

/// The error a denied memory growth traps with.
#[derive(Debug)]
pub(crate) struct MemoryLimitExceeded {
    pub(crate) limit: u64,
    pub(crate) desired: u64,
}

impl std::fmt::Display for MemoryLimitExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "memory limit of {} bytes exceeded (linear memories and tables would have {} bytes)",
            self.limit, self.desired
        )
    }
}

impl std::error::Error for MemoryLimitExceeded {}

#[derive(Debug, Default)]
pub(crate) struct Limiter {
    /// Maximum bytes of the store's linear memories and tables together; `None` = unlimited.
    memory_limit: Option<u64>,
    /// Set when a memory growth was denied.
    pub(crate) hit: Option<MemoryLimitExceeded>,
    /// Bytes of linear memory the store's instances have (every memory, grown or created;
    /// memories never shrink, so this is also the peak).
    pub(crate) linear_bytes: u64,
    /// Bytes of the store's tables (every table, grown or created, at [`TABLE_ELEMENT_BYTES`]
    /// an element).
    table_bytes: u64,
}

/// What a table element costs the host (a pointer).
const TABLE_ELEMENT_BYTES: u64 = 8;

impl Limiter {
    pub(crate) fn new(memory_limit: Option<u64>) -> Self {
        Limiter {
            memory_limit,
            hit: None,
            linear_bytes: 0,
            table_bytes: 0,
        }
    }

    /// Whether `more` bytes fit in the limit with everything the store already has: a guest
    /// with several memories, or large tables, gets no more than one with a single memory.
    fn fits(&self, more: u64) -> bool {
        self.memory_limit.is_none_or(|limit| {
            self.linear_bytes.saturating_add(self.table_bytes).saturating_add(more) <= limit
        })
    }
}

impl wasmtime::ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let more = desired.saturating_sub(current) as u64;
        match self.memory_limit {
            Some(limit) if !self.fits(more) => {
                let exceeded = MemoryLimitExceeded {
                    limit,
                    desired: self.linear_bytes.saturating_add(self.table_bytes).saturating_add(more),
                };
                let err = wasmtime::Error::msg(exceeded.to_string());
                self.hit = Some(exceeded);
                // An error (rather than `Ok(false)`, which makes memory.grow
                // return -1) traps right at the growth, so the guest stops
                // cleanly instead of limping on into an allocator abort.
                Err(err)
            }
            _ => {
                self.linear_bytes = self.linear_bytes.saturating_add(more);
                Ok(true)
            }
        }
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let more = (desired.saturating_sub(current) as u64).saturating_mul(TABLE_ELEMENT_BYTES);
        // A refused table growth is `table.grow`'s -1 (or a failed instantiation), as wasm
        // specifies; tables are never what a program's allocator depends on.
        if desired > MAX_TABLE_ELEMENTS || !self.fits(more) {
            return Ok(false);
        }
        self.table_bytes = self.table_bytes.saturating_add(more);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::ResourceLimiter;

    #[test]
    fn denies_and_records_growth_past_the_limit() {
        let mut l = Limiter::new(Some(2 * 65536));
        assert!(l.memory_growing(0, 65536, None).unwrap());
        assert!(l.memory_growing(65536, 2 * 65536, None).unwrap());
        assert!(l.hit.is_none());
        let err = l.memory_growing(2 * 65536, 3 * 65536, None).unwrap_err();
        assert!(err
            .to_string()
            .contains("memory limit of 131072 bytes exceeded"));
        assert_eq!(l.hit.as_ref().unwrap().desired, 3 * 65536);
        // Only what was granted counts as the store's memory.
        assert_eq!(l.linear_bytes, 2 * 65536);
    }

    #[test]
    fn counts_the_linear_memory_of_every_memory() {
        let mut l = Limiter::new(None);
        assert!(l.memory_growing(0, 2 * 65536, None).unwrap());
        assert!(l.memory_growing(2 * 65536, 5 * 65536, None).unwrap());
        // A second memory, created.
        assert!(l.memory_growing(0, 65536, None).unwrap());
        assert_eq!(l.linear_bytes, 6 * 65536);
    }

    #[test]
    fn the_limit_is_for_every_memory_and_table_together() {
        let mut l = Limiter::new(Some(4 * 65536));
        assert!(l.memory_growing(0, 3 * 65536, None).unwrap());
        // A second memory gets what the first left, no more.
        assert!(l.memory_growing(0, 65536, None).unwrap());
        assert!(l.memory_growing(0, 65536, None).is_err(), "a third memory past the limit");
        assert_eq!(l.hit.as_ref().unwrap().desired, 5 * 65536);
        // Tables count too: nothing is left for one.
        let mut l = Limiter::new(Some(65536));
        assert!(l.table_growing(0, 1024, None).unwrap(), "8 KiB of table");
        assert!(!l.table_growing(1024, 10_000, None).unwrap(), "80 KB of table");
        assert!(l.memory_growing(0, 65536, None).is_err(), "64 KiB of memory after 8 KiB of table");
        assert!(l.memory_growing(0, 65536 - 8192, None).unwrap());
    }

    #[test]
    fn unlimited_memory_but_bounded_tables() {
        let mut l = Limiter::new(None);
        assert!(l.memory_growing(0, 1 << 32, None).unwrap());
        assert!(l.table_growing(0, 1000, None).unwrap());
        assert!(!l.table_growing(0, MAX_TABLE_ELEMENTS + 1, None).unwrap());
        assert!(l.hit.is_none());
    }
}
