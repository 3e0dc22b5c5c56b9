//! The compile cache: compiled code kept on disk and shared by every process
//! that runs the same wasm with the same engine, whatever the image shape.
//!
//! - **Key**: the SHA-256 of the wasm bytes as given (module, component or
//!   WAT text), the tier (`o`ptimized, `b`aseline) and a digest of what makes
//!   compiled code compatible: wasmtime's `precompile_compatibility_hash`
//!   (wasmtime version, target and CPU features, compiler flags, tunables,
//!   wasm features), the wasm features the shim enabled (`Features::canonical`),
//!   plus this cache's format version. An engine upgrade or a
//!   new CPU therefore never reads old code; old entries age out.
//! - **Entries**: `<key>.cwasm`, wasmtime's serialized artifact (an ELF image)
//!   followed by a 24-byte trailer (magic, payload length, CRC-32). A reader
//!   checks the trailer and wasmtime checks the image; a failure of either is
//!   a corrupt or stale entry: logged, removed, compiled again. Readers map
//!   the file (`Module::deserialize_open_file`), so pages of code are shared
//!   between every task that runs it.
//! - **Writes** go to a temp file in the same directory, renamed into place:
//!   readers see a whole entry or none. Entries are never modified in place.
//! - **Compile once**: compiling for the cache holds `flock` on `<key>.lock`;
//!   a second compiler of the same key waits, then finds the entry.
//! - **Bounded**: after each write, the least recently used entries (by
//!   mtime, which `touch` sets on every hit) are removed until the total is
//!   under the limit (default 1 GiB).
//! - **Log**: `compile.log` has one line per compile (time, tier, duration,
//!   size, key, file), trimmed as it grows.
//!
//! Everything goes through one directory handle (`cap_std::fs::Dir`), so a
//! process can open the cache and then change its root (the container init
//! does, with `pivot_root`) and still use it.
//!
//! `disk`: the directory, its entries, locks, eviction and log (bytes only). `load`: what the
//! engine puts there and takes out: keys, compiled code mapped from an entry, compiling once.

mod disk;
mod load;

pub use disk::{wasm_digest, Cache, CacheKey, EntryInfo, Evicted, DEFAULT_MAX_SIZE};
pub use load::Stored;
