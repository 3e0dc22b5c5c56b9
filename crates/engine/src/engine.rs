//! The one `wasmtime::Config`, the WASI linkers built once per engine, and
//! interruption by signal (epoch increment).

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;

use crate::error::{one_line, EngineError};
use crate::run::{P1State, P2State};

/// A cheap, clonable handle to the compiler, the WASI linkers and the
/// interrupt state. Clone it into the signal-handling thread.
#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) wasmtime: wasmtime::Engine,
    pub(crate) p1_linker: wasmtime::Linker<P1State>,
    pub(crate) p2_linker: wasmtime::component::Linker<P2State>,
    /// The signal passed to `interrupt`, 0 while none was.
    signal: AtomicI32,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("interrupted_by", &self.interrupted_by())
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Builds the engine: cranelift, parallel compilation, the component
    /// model, and epoch interruption (the only way `interrupt` can stop a busy
    /// guest). The WASI p1 and p2 linkers are built here once.
    pub fn new() -> Result<Engine, EngineError> {
        let mut config = wasmtime::Config::new();
        config
            .strategy(wasmtime::Strategy::Cranelift)
            .cranelift_opt_level(wasmtime::OptLevel::Speed)
            .parallel_compilation(true)
            .wasm_component_model(true)
            .epoch_interruption(true);
        let wasmtime = wasmtime::Engine::new(&config).map_err(|e| {
            EngineError::Internal(format!("cannot configure wasmtime: {}", one_line(&e)))
        })?;

        let mut p1_linker = wasmtime::Linker::new(&wasmtime);
        wasmtime_wasi::p1::add_to_linker_sync(&mut p1_linker, |s: &mut P1State| &mut s.wasi)
            .map_err(|e| {
                EngineError::Internal(format!("cannot set up WASI p1: {}", one_line(&e)))
            })?;

        let mut p2_linker = wasmtime::component::Linker::new(&wasmtime);
        wasmtime_wasi::p2::add_to_linker_sync(&mut p2_linker).map_err(|e| {
            EngineError::Internal(format!("cannot set up WASI p2: {}", one_line(&e)))
        })?;

        Ok(Engine {
            inner: Arc::new(Inner {
                wasmtime,
                p1_linker,
                p2_linker,
                signal: AtomicI32::new(0),
            }),
        })
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
        self.inner.wasmtime.increment_epoch();
    }

    /// The signal given to `interrupt`, if any.
    pub fn interrupted_by(&self) -> Option<i32> {
        match self.inner.signal.load(Ordering::SeqCst) {
            0 => None,
            sig => Some(sig),
        }
    }

    pub(crate) fn wasmtime(&self) -> &wasmtime::Engine {
        &self.inner.wasmtime
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
}
