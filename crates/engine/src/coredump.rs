//! Core dumps of trapping guests: wasmtime records the guest's state at a trap
//! (`Config::coredump_on_trap`, set by `EngineConfig::coredump`); a run serializes it in the
//! standard wasm core dump format (readable with `wasmgdb`, or any tool for the tool-conventions
//! format) when it fits the bound, and leaves it where the caller can take it. Writing it
//! anywhere is the caller's business.

use std::sync::{Arc, Mutex};

use wasmtime::{AsContextMut, WasmCoreDump};

/// Where a run leaves the core dump of a trap, at most `max_size` bytes. Clones share it.
#[derive(Clone)]
pub struct CoreDumpCapture {
    max_size: u64,
    taken: Arc<Mutex<Option<Taken>>>,
}

/// The serialized dump of a trap, or why there is none.
type Taken = Result<Vec<u8>, String>;

impl std::fmt::Debug for CoreDumpCapture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoreDumpCapture").field("max_size", &self.max_size).finish_non_exhaustive()
    }
}

/// What a dump holds besides the memories: frames, globals, names.
const OVERHEAD_ALLOWANCE: u64 = 1 << 20;

impl CoreDumpCapture {
    pub fn new(max_size: u64) -> CoreDumpCapture {
        CoreDumpCapture { max_size, taken: Arc::new(Mutex::new(None)) }
    }

    /// The core dump of the trap that ended the run: `Ok(bytes)`, or `Err(why)` when there was
    /// one but it was not kept (too big). `None`: no trap, or no dump recorded.
    pub fn take(&self) -> Option<Result<Vec<u8>, String>> {
        self.taken.lock().ok()?.take()
    }

    /// Keeps the dump `err` carries, if any, serialized as `name`, unless its memories alone
    /// are past the bound (checked before serializing, which copies them).
    pub(crate) fn capture(&self, err: &wasmtime::Error, mut store: impl AsContextMut, name: &str) {
        let Some(dump) = err.downcast_ref::<WasmCoreDump>() else { return };
        let memory: u64 = dump.memories().iter().map(|m| m.data_size(&store) as u64).sum();
        let result = if memory.saturating_add(OVERHEAD_ALLOWANCE.min(self.max_size / 2)) > self.max_size {
            Err(format!("its linear memory alone is {memory} bytes, more than the {} bytes allowed", self.max_size))
        } else {
            let bytes = dump.serialize(store.as_context_mut(), name);
            if bytes.len() as u64 > self.max_size {
                Err(format!("it is {} bytes, more than the {} bytes allowed", bytes.len(), self.max_size))
            } else {
                Ok(bytes)
            }
        };
        if let Ok(mut slot) = self.taken.lock() {
            *slot = Some(result);
        }
    }
}
