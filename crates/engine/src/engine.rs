//! The `wasmtime::Config`, one wasmtime engine per compiler tier and `Concurrency` (built when
//! first needed), the WASI linkers (built when first needed: WASI p1, p2, `wasi:http` p2, and
//! the WASI 0.3 ones), and interruption by signal (epoch increment).

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, OnceLock};

use crate::error::{one_line, EngineError};
use crate::features::Features;
use crate::host::{P1State, P2State, ProxyState};
use crate::tier::Tier;

/// How the engine allocates instances.
#[derive(Debug, Clone, Default)]
pub struct EngineConfig {
    /// Use wasmtime's pooling instance allocator (instance, memory and table
    /// slots reserved up front and reused). Falls back to on-demand
    /// allocation, with a warning, when the pool cannot be reserved (an
    /// address-space limit, for example). Compiled code does not depend on
    /// it: cache entries are shared between both settings.
    pub pooling: bool,
    /// Set when the workload serves HTTP: size the pool for this many
    /// instances at once, each with linear memories of at most this many
    /// bytes. Implies `pooling`.
    pub serving: Option<ServingPool>,
    /// Compile on the calling thread only, never on a pool of compiler threads. The container
    /// init sets it: a thread started before it drops privileges would keep them (capabilities
    /// and LSM labels are per thread). Not part of the compiled code: cache entries are shared.
    pub single_threaded: bool,
    /// The wasm proposals accepted (for both tiers, minus what Winch lacks for the baseline).
    /// Part of the compiled code: cache keys differ with it.
    pub features: Features,
    /// Keep a core dump of the guest's state when it traps (`Config::coredump_on_trap`); a run
    /// hands it over through `RunOptions::coredump`. Not part of the compiled code.
    pub coredump: bool,
}

/// Pool sizing for serving HTTP, one instance per request in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServingPool {
    pub instances: u32,
    pub memory: u64,
}

/// A cheap, clonable handle to the compilers, the WASI linkers and the
/// interrupt state. Clone it into the signal-handling thread.
#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    config: EngineConfig,
    /// Indexed by `slot(tier, concurrency)`.
    tiers: [OnceLock<Result<TierEngine, String>>; 4],
    /// The signal passed to `interrupt`, 0 while none was.
    signal: AtomicI32,
}

/// Whether an engine runs the component model's concurrency (WASI 0.3: async functions,
/// streams, futures, tasks). wasmtime 48 pays for that machinery on every call and store of
/// an engine that has it, used or not (a host task per host call, its bookkeeping when a store
/// is dropped: 13% of the instructions of a hello `wasi:http` 0.2 request), so everything that
/// does not use it (core modules, WASI 0.2 components) gets an engine without it
/// (`prepare::needs_concurrency` reads which from the binary). The two compile different
/// code, so their cache keys differ (wasmtime's compatibility hash covers it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Concurrency {
    Off,
    On,
}

fn slot(tier: Tier, concurrency: Concurrency) -> usize {
    tier.index() * 2 + usize::from(concurrency == Concurrency::On)
}

/// One wasmtime engine (one compiler) and the linkers built for it.
pub(crate) struct TierEngine {
    pub(crate) wasmtime: wasmtime::Engine,
    /// Whether the pooling allocator is in use (it may have been refused).
    pub(crate) pooling: bool,
    p1_linker: OnceLock<Result<wasmtime::Linker<P1State>, String>>,
    p2_linker: OnceLock<Result<wasmtime::component::Linker<P2State>, String>>,
    p1_async_linker: OnceLock<Result<wasmtime::Linker<P1State>, String>>,
    proxy_linker: OnceLock<Result<wasmtime::component::Linker<ProxyState>, String>>,
    p3_linker: OnceLock<Result<wasmtime::component::Linker<P2State>, String>>,
    service_linker: OnceLock<Result<wasmtime::component::Linker<ProxyState>, String>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("config", &self.inner.config)
            .field("interrupted_by", &self.interrupted_by())
            .finish_non_exhaustive()
    }
}

/// The settings shared by both tiers: the wasm features, the component model and epoch
/// interruption (the only way `interrupt` can stop a busy guest), parallel compilation,
/// copy-on-write memory images (initial linear memory is mapped from the compiled artifact,
/// not copied, when the host allows), backtraces with names and DWARF details (a trap's message
/// says where), and core dumps on trap when asked.
fn base_config(tier: Tier, concurrency: Concurrency, engine_config: &EngineConfig) -> wasmtime::Config {
    let mut config = wasmtime::Config::new();
    match tier {
        Tier::Optimized => config
            .strategy(wasmtime::Strategy::Cranelift)
            .cranelift_opt_level(wasmtime::OptLevel::Speed),
        Tier::Baseline => config.strategy(wasmtime::Strategy::Winch),
    };
    engine_config.features.apply(&mut config, tier == Tier::Baseline);
    config
        .parallel_compilation(!engine_config.single_threaded)
        .wasm_component_model(true)
        .epoch_interruption(true)
        .memory_init_cow(true)
        // Explicit: wasmtime's default reads WASMTIME_BACKTRACE_DETAILS, which would make
        // the compiled code (and the cache key) depend on a process's environment.
        .wasm_backtrace_details(wasmtime::WasmBacktraceDetails::Enable)
        .coredump_on_trap(engine_config.coredump);
    // WASI 0.3 (async functions, streams and futures of the component model) only where used:
    // see `Concurrency`. wasmtime 48 turns it on by default where its `component-model-async`
    // feature is built, as here; set explicitly both ways so that the compiled code (and the
    // cache key, which covers wasmtime's compatibility hash of these features) never depends
    // on that default.
    match concurrency {
        Concurrency::On => config.concurrency_support(true).wasm_component_model_async(true),
        Concurrency::Off => config.wasm_component_model_async(false).concurrency_support(false),
    };
    config
}

/// Serving: freed instance slots kept warm, and the bytes of each memory and
/// table kept resident in them.
const SERVING_WARM_SLOTS: u32 = 64;
const SERVING_KEEP_RESIDENT: usize = 64 << 10;

/// Pool sizes for one container: the init instantiates one workload once, so
/// a few slots suffice; a component (a module plus the WASI adapter) uses a
/// handful of core instances, memories and tables. Per-module limits are
/// generous so that nothing runs on demand that would not run pooled.
fn pooling_config(serving: Option<ServingPool>, gc: bool) -> wasmtime::PoolingAllocationConfig {
    let mut pool = wasmtime::PoolingAllocationConfig::new();
    // Serving: one component instance per request in flight (plus one for
    // the check at Create), each a few core instances, memories and tables.
    let n = serving.map_or(1, |s| s.instances.saturating_add(1));
    pool.total_component_instances(4 * n)
        .total_core_instances(32 * n)
        .total_memories(8 * n)
        .total_tables(16 * n)
        // Async calls (serving; a WASI 0.3 command) run on fiber stacks: one per request in
        // flight, one for a command.
        .total_stacks(serving.map_or(1, |s| s.instances.saturating_add(1)))
        // A GC heap per instance when GC is on (a module using GC cannot be instantiated
        // without one), none otherwise.
        .total_gc_heaps(if gc { n } else { 0 })
        .max_memories_per_module(4)
        .max_tables_per_module(8)
        .max_memories_per_component(8)
        .max_tables_per_component(16)
        .max_core_instances_per_component(32)
        .table_elements(crate::limits::MAX_TABLE_ELEMENTS)
        .max_core_instance_size(16 << 20)
        .max_component_instance_size(16 << 20)
        // Give freed memory back to the kernel: a task's memory should be
        // what its guest uses, nothing kept warm for later.
        .max_unused_warm_slots(0)
        .linear_memory_keep_resident(0)
        .table_keep_resident(0);
    if let Some(s) = serving {
        // Each request's memories are capped here (the store's limiter says
        // why when one tries to grow past it); the reservation per slot
        // follows, so a big pool stays small in address space.
        pool.max_memory_size(usize::try_from(s.memory).unwrap_or(usize::MAX));
        // A server instantiates the same code again and again: slots freed by
        // one request stay warm (their memory image stays mapped) and keep
        // their first 64 KiB resident, cleared by memset instead of being
        // given back and faulted in again by the next request. Measured with
        // wrk at 100 connections: +20-30% requests/s and a 20% lower p99
        // (docs/benchmarks.md). The resident part stays for every slot ever
        // used: at most peak requests in flight x memories per instance x
        // 64 KiB (16 MiB per memory at the default cap of 256); 256 KiB was
        // no faster and four times that.
        pool.max_unused_warm_slots(SERVING_WARM_SLOTS)
            .linear_memory_keep_resident(SERVING_KEEP_RESIDENT)
            .table_keep_resident(SERVING_KEEP_RESIDENT);
    }
    pool
}

impl TierEngine {
    fn new(tier: Tier, concurrency: Concurrency, engine_config: &EngineConfig) -> Result<TierEngine, String> {
        let config = base_config(tier, concurrency, engine_config);
        if engine_config.pooling || engine_config.serving.is_some() {
            let gc = tier == Tier::Optimized && engine_config.features.is_on("gc");
            let mut pooled = config.clone();
            pooled.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(
                pooling_config(engine_config.serving, gc),
            ));
            match wasmtime::Engine::new(&pooled) {
                Ok(wasmtime) => return Ok(TierEngine::with(wasmtime, true)),
                Err(e) => log::warn!(
                    "pooling allocator unavailable ({}); allocating instances on demand",
                    one_line(&e)
                ),
            }
        }
        let wasmtime = wasmtime::Engine::new(&config).map_err(|e| {
            let asked = engine_config.features.asked();
            if asked.is_empty() {
                format!("cannot configure wasmtime ({tier}): {}", one_line(&e))
            } else {
                // The features asked for are the likely cause: say so, with wasmtime's words.
                format!("wasm features {asked:?}: wasmtime cannot enable them: {}", one_line(&e))
            }
        })?;
        Ok(TierEngine::with(wasmtime, false))
    }

    fn with(wasmtime: wasmtime::Engine, pooling: bool) -> TierEngine {
        TierEngine {
            wasmtime,
            pooling,
            p1_linker: OnceLock::new(),
            p2_linker: OnceLock::new(),
            p1_async_linker: OnceLock::new(),
            proxy_linker: OnceLock::new(),
            p3_linker: OnceLock::new(),
            service_linker: OnceLock::new(),
        }
    }

    /// The WASI p1 linker with async host functions, for WAGI requests
    /// (served on tokio, where blocking host calls must not block a worker).
    pub(crate) fn p1_async_linker(&self) -> Result<&wasmtime::Linker<P1State>, EngineError> {
        built(&self.p1_async_linker, "WASI p1 (async)", || {
            let mut linker = wasmtime::Linker::new(&self.wasmtime);
            wasmtime_wasi::p1::add_to_linker_async(&mut linker, |s: &mut P1State| &mut s.wasi)?;
            Ok(linker)
        })
    }

    /// WASI p2 and `wasi:http`, async, for `wasi:http/proxy` components.
    pub(crate) fn proxy_linker(
        &self,
    ) -> Result<&wasmtime::component::Linker<ProxyState>, EngineError> {
        built(&self.proxy_linker, "wasi:http", || {
            let mut linker = wasmtime::component::Linker::new(&self.wasmtime);
            wasmtime_wasi::p2::add_to_linker_async(&mut linker)
                .and_then(|()| wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker))
                .and_then(|()| wasmtime_wasi_config::add_to_linker(&mut linker, |s: &mut ProxyState| s.config.view()))?;
            Ok(linker)
        })
    }

    /// WASI 0.3 and 0.2, async, for a WASI 0.3 command (`wasi:cli/run@0.3.x`). Both versions:
    /// a component built with a 0.2 toolchain and 0.3 bindings (Rust's `wasm32-wasip2` std and
    /// the `wasip3` crate, or a preview1 adapter) imports both.
    pub(crate) fn p3_linker(&self) -> Result<&wasmtime::component::Linker<P2State>, EngineError> {
        built(&self.p3_linker, "WASI 0.3", || {
            let mut linker = wasmtime::component::Linker::new(&self.wasmtime);
            wasmtime_wasi::p2::add_to_linker_async(&mut linker)
                .and_then(|()| wasmtime_wasi::p3::add_to_linker(&mut linker))
                .and_then(|()| wasmtime_wasi_config::add_to_linker(&mut linker, |s: &mut P2State| s.config.view()))?;
            Ok(linker)
        })
    }

    /// WASI 0.3 and 0.2 with `wasi:http` of both, async, for a WASI 0.3 `wasi:http/service`
    /// component (`wasi:http/handler@0.3.x`).
    pub(crate) fn service_linker(
        &self,
    ) -> Result<&wasmtime::component::Linker<ProxyState>, EngineError> {
        built(&self.service_linker, "wasi:http 0.3", || {
            let mut linker = wasmtime::component::Linker::new(&self.wasmtime);
            wasmtime_wasi::p2::add_to_linker_async(&mut linker)
                .and_then(|()| wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker))
                .and_then(|()| wasmtime_wasi::p3::add_to_linker(&mut linker))
                .and_then(|()| wasmtime_wasi_http::p3::add_to_linker(&mut linker))
                .and_then(|()| wasmtime_wasi_config::add_to_linker(&mut linker, |s: &mut ProxyState| s.config.view()))?;
            Ok(linker)
        })
    }

    /// The WASI p1 linker, built on first use (a component never needs it).
    pub(crate) fn p1_linker(&self) -> Result<&wasmtime::Linker<P1State>, EngineError> {
        built(&self.p1_linker, "WASI p1", || {
            let mut linker = wasmtime::Linker::new(&self.wasmtime);
            wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |s: &mut P1State| &mut s.wasi)?;
            Ok(linker)
        })
    }

    /// The WASI p2 linker, built on first use (a module never needs it).
    pub(crate) fn p2_linker(&self) -> Result<&wasmtime::component::Linker<P2State>, EngineError> {
        built(&self.p2_linker, "WASI p2", || {
            let mut linker = wasmtime::component::Linker::new(&self.wasmtime);
            wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
                .and_then(|()| wasmtime_wasi_config::add_to_linker(&mut linker, |s: &mut P2State| s.config.view()))?;
            Ok(linker)
        })
    }
}

/// A linker built on first use and kept; a failed build is kept too, as the message every
/// later call gets (`what` names the interfaces it links).
fn built<'a, L>(
    cell: &'a OnceLock<Result<L, String>>,
    what: &str,
    build: impl FnOnce() -> wasmtime::Result<L>,
) -> Result<&'a L, EngineError> {
    cell.get_or_init(|| build().map_err(|e| format!("cannot set up {what}: {}", one_line(&e))))
        .as_ref()
        .map_err(|e| EngineError::Internal(e.clone()))
}

impl Engine {
    /// The default engine: optimized code, instances allocated on demand.
    pub fn new() -> Result<Engine, EngineError> {
        Engine::with_config(EngineConfig::default())
    }

    /// Builds the engine. The optimizing tier is set up here, so that a
    /// configuration error shows at once; the baseline tier and the WASI
    /// linkers are built when first needed.
    pub fn with_config(config: EngineConfig) -> Result<Engine, EngineError> {
        let engine = Engine {
            inner: Arc::new(Inner {
                config,
                tiers: [OnceLock::new(), OnceLock::new(), OnceLock::new(), OnceLock::new()],
                signal: AtomicI32::new(0),
            }),
        };
        engine.tier(Tier::Optimized, Concurrency::Off)?;
        Ok(engine)
    }

    /// The engine of `tier` with or without concurrency, built on first use.
    pub(crate) fn tier(&self, tier: Tier, concurrency: Concurrency) -> Result<&TierEngine, EngineError> {
        self.inner.tiers[slot(tier, concurrency)]
            .get_or_init(|| TierEngine::new(tier, concurrency, &self.inner.config))
            .as_ref()
            .map_err(|e| {
                if e.starts_with("wasm features ") {
                    EngineError::Features(e.clone())
                } else {
                    EngineError::Internal(e.clone())
                }
            })
    }

    /// The wasm features this engine accepts.
    pub fn features(&self) -> &Features {
        &self.inner.config.features
    }

    /// Whether instances of `tier` come from the pooling allocator (false
    /// when it was not asked for or could not be reserved).
    pub fn uses_pooling(&self, tier: Tier) -> Result<bool, EngineError> {
        Ok(self.tier(tier, Concurrency::Off)?.pooling)
    }

    /// The engine of `tier` that `wasmtime` is (code is linked and served with the linkers of
    /// the engine that compiled it).
    pub(crate) fn tier_of(&self, tier: Tier, wasmtime: &wasmtime::Engine) -> Result<&TierEngine, EngineError> {
        [Concurrency::Off, Concurrency::On]
            .into_iter()
            .filter_map(|c| self.inner.tiers[slot(tier, c)].get().and_then(|t| t.as_ref().ok()))
            .find(|t| wasmtime::Engine::same(&t.wasmtime, wasmtime))
            .ok_or_else(|| EngineError::Internal(format!("code compiled by an engine of no {tier} tier of this one")))
    }

    /// Asks the running guest to stop because of `signal`.
    ///
    /// Records the signal, then bumps the epoch: every store has a deadline of
    /// one tick, so guest code traps at its next function entry or loop back
    /// edge and `run` returns `Outcome::Interrupted(signal)`. A guest blocked
    /// in a host call (reading stdin) only notices once that call returns;
    /// the caller handles that case. Returns immediately; callable from any
    /// thread, before or during `run`. The first signal is the one reported.
    pub fn interrupt(&self, signal: i32) {
        // Record before bumping the epoch: `run` relies on this order.
        let _ = self
            .inner
            .signal
            .compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst);
        for tier in &self.inner.tiers {
            if let Some(Ok(t)) = tier.get() {
                t.wasmtime.increment_epoch();
            }
        }
    }

    /// The signal given to `interrupt`, if any.
    pub fn interrupted_by(&self) -> Option<i32> {
        match self.inner.signal.load(Ordering::SeqCst) {
            0 => None,
            sig => Some(sig),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn engine_can_move_to_the_signal_thread() {
        assert_send_sync::<Engine>();
    }

    #[test]
    fn first_signal_wins() {
        let engine = Engine::new().unwrap();
        assert_eq!(engine.interrupted_by(), None);
        engine.interrupt(15);
        engine.clone().interrupt(2);
        assert_eq!(engine.interrupted_by(), Some(15));
    }

    #[test]
    fn both_tiers_build_with_and_without_the_pool() {
        for pooling in [false, true] {
            let engine = Engine::with_config(EngineConfig {
                pooling,
                ..Default::default()
            })
            .unwrap();
            for tier in [Tier::Optimized, Tier::Baseline] {
                for c in [Concurrency::Off, Concurrency::On] {
                    let t = engine.tier(tier, c).unwrap();
                    assert_eq!(t.pooling, pooling, "{tier}");
                    t.p1_linker().unwrap();
                    t.p2_linker().unwrap();
                    t.proxy_linker().unwrap();
                    if c == Concurrency::On {
                        t.p3_linker().unwrap();
                        t.service_linker().unwrap();
                    }
                }
            }
        }
    }
}
