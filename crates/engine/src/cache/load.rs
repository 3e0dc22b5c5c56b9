//! Compiled code in and out of the compile cache: the key of a workload in this engine's
//! configuration, loading an entry as code by mmap (the crate's one `unsafe`) and linking it as
//! `prepare` does, compiling into the cache once across processes, and `prepare_cached`.

use std::hash::{Hash, Hasher};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::Module;

use super::disk::{hex, verify, wasm_digest, Cache, CacheKey, Lookup, FORMAT};
use crate::engine::{Concurrency, Engine};
use crate::error::{one_line, EngineError};
use crate::prepare::{decode, needs_concurrency, Artifact, Format, Origin, Prepared};
use crate::tier::Tier;

/// What `Engine::compile_to_cache` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// Compiled now and written: how long the compile took, the entry's size.
    Compiled { elapsed: Duration, size: u64 },
    /// A valid entry was already there (perhaps written while we waited).
    Present,
    /// Another process holds the entry's lock (it is compiling it) and we
    /// were asked not to wait.
    Busy,
    /// The entry was missing, but the caller's admission (see
    /// [`Engine::compile_to_cache_admitted`]) refused the compile.
    NotAdmitted,
}

/// Feeds what a `Hash` impl writes into SHA-256 (deterministic, unlike the
/// std hashers, which may change between Rust releases).
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    fn finish(&self) -> u64 {
        unreachable!("only the digest is used")
    }
}

/// Whether `path` leads to `file` itself (same device and inode), not to another file there.
fn names_file(path: &std::path::Path, file: &std::fs::File) -> bool {
    matches!((std::fs::metadata(path), file.metadata()), (Ok(a), Ok(b)) if a.dev() == b.dev() && a.ino() == b.ino())
}

/// Maps (or reads) a verified entry as compiled code for `engine`.
///
/// This is the crate's one `unsafe`: wasmtime cannot check that an artifact
/// is sound native code, so loading one is `unsafe` in its API.
#[allow(unsafe_code)]
fn deserialize(
    engine: &wasmtime::Engine,
    format: Format,
    file: std::fs::File,
    payload_len: u64,
) -> wasmtime::Result<Artifact> {
    // SAFETY: the file is a cache entry: written only by `Cache::store` with
    // what `Module::serialize`/`Component::serialize` produced in this
    // engine's configuration (the key covers the compatibility hash, and
    // wasmtime checks it again), its checksum was verified just now, and
    // entries are never modified in place (replaced by rename, removed by
    // unlink), so a mapping stays what was verified for as long as it lives.
    // The directory is writable only by root.
    match format {
        Format::Module => {
            unsafe { Module::deserialize_open_file(engine, file) }.map(Artifact::Module)
        }
        Format::Component => {
            // wasmtime maps components by path only: reach our open file through /proc, but
            // only where that path is this very file. After pivot_root `/proc` is whatever
            // the image put there (no procfs is mounted for a guest), and a file planted at
            // `/proc/self/fd/N` must never be taken for the entry: there the path names
            // another file (or none), and the entry is read through the descriptor instead.
            let by_fd = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
            if names_file(&by_fd, &file) {
                unsafe { Component::deserialize_file(engine, &by_fd) }.map(Artifact::Component)
            } else {
                // At offset 0 without moving the descriptor's offset, which processes handed
                // the same descriptor share.
                let mut bytes = vec![0u8; usize::try_from(payload_len)?];
                file.read_exact_at(&mut bytes, 0)?;
                unsafe { Component::deserialize(engine, &bytes) }.map(Artifact::Component)
            }
        }
    }
}

impl Engine {
    /// The cache key of `bytes` compiled by `tier` in this engine's
    /// configuration.
    pub fn cache_key(&self, bytes: &[u8], tier: Tier) -> Result<CacheKey, EngineError> {
        let (binary, format) = decode(bytes, "")?;
        let digest = wasm_digest(bytes);
        self.key_for_digest(&digest, tier, needs_concurrency(&binary, format))
    }

    /// The key in the engine the binary is compiled by (with or without concurrency: the
    /// compatibility hash differs).
    fn key_for_digest(&self, digest: &str, tier: Tier, concurrency: Concurrency) -> Result<CacheKey, EngineError> {
        let engine = &self.tier(tier, concurrency)?.wasmtime;
        let mut h = Sha256Hasher(Sha256::new());
        FORMAT.hash(&mut h);
        tier.name().hash(&mut h);
        // wasmtime's hash covers its own view of the features; ours is said explicitly too,
        // so that a workload compiled with other features is another entry whatever wasmtime
        // hashes.
        self.features().canonical(tier == Tier::Baseline).hash(&mut h);
        engine.precompile_compatibility_hash().hash(&mut h);
        let config = hex(&h.0.finalize()[..8]);
        let letter = &tier.name()[..1];
        Ok(CacheKey(format!("{digest}-{letter}{config}")))
    }

    /// Whether `cache` has an entry for `bytes` compiled by `tier` whose
    /// checksum holds (without loading it).
    pub fn has_cached(&self, cache: &Cache, bytes: &[u8], tier: Tier) -> Result<bool, EngineError> {
        let key = self.cache_key(bytes, tier)?;
        Ok(matches!(cache.lookup(&key), Lookup::Found(..)))
    }

    /// Loads compiled code for `bytes` from `cache`: the first of `tiers`
    /// that has a valid entry, linked as `prepare` does. `Ok(None)` when none
    /// has. A corrupt or stale entry is logged, removed (when this process
    /// may) and skipped. Errors are about the workload (a missing export, an
    /// import the shim does not provide), exactly as `prepare` reports them.
    pub fn load_cached(
        &self,
        cache: &Cache,
        bytes: &[u8],
        name: &str,
        export: Option<&str>,
        tiers: &[Tier],
    ) -> Result<Option<Prepared>, EngineError> {
        let (binary, format) = decode(bytes, name)?;
        let concurrency = needs_concurrency(&binary, format);
        let digest = wasm_digest(bytes);
        for &tier in tiers {
            let key = self.key_for_digest(&digest, tier, concurrency)?;
            if let Some(artifact) = self.load_entry(cache, &key, tier, concurrency, format, name)? {
                return self
                    .link(tier, artifact, name, export, Origin::Cache(key.0.clone()))
                    .map(Some);
            }
        }
        Ok(None)
    }

    /// The entry's code, `None` when missing or unusable (then removed).
    fn load_entry(
        &self,
        cache: &Cache,
        key: &CacheKey,
        tier: Tier,
        concurrency: Concurrency,
        format: Format,
        name: &str,
    ) -> Result<Option<Artifact>, EngineError> {
        let (file, payload_len) = match cache.lookup(key) {
            Lookup::Missing => return Ok(None),
            Lookup::Corrupt(reason) => {
                log::warn!(
                    "compile cache: {name}: entry {key} is corrupt ({reason}); removing it, it will be compiled again"
                );
                cache.remove(key);
                return Ok(None);
            }
            Lookup::Found(file, payload_len) => (file, payload_len),
        };
        match self.deserialize_either(tier, concurrency, format, file, payload_len) {
            Ok(artifact) => Ok(Some(artifact)),
            Err(e) => {
                log::warn!(
                    "compile cache: {name}: entry {key} cannot be loaded ({}); removing it, it will be compiled again",
                    one_line(&e)
                );
                cache.remove(key);
                Ok(None)
            }
        }
    }

    /// Loads the code of a cache entry that arrives as an open descriptor (the shim hands the
    /// init a read-only one once a background compile has finished; the init holds no handle
    /// on the cache directory). Checked by that descriptor: the entry's trailer and checksum,
    /// then wasmtime's own header checks of the engine, tier and format. `component` says which
    /// the workload is; `name` and `export` are linked as `prepare` does, so that `serve_as`
    /// with the same kind makes it servable. A component without `/proc` is read into memory
    /// (wasmtime maps components by path only).
    pub fn load_entry_file(
        &self,
        file: std::fs::File,
        key: &CacheKey,
        tier: Tier,
        component: bool,
        name: &str,
        export: Option<&str>,
    ) -> Result<Prepared, EngineError> {
        let bad = |why: String| EngineError::Cache(format!("entry {key} (handed over): {why}"));
        let payload_len = verify(&file).map_err(&bad)?;
        let format = if component { Format::Component } else { Format::Module };
        let artifact = self
            .deserialize_either(tier, Concurrency::Off, format, file, payload_len)
            .map_err(|e| bad(one_line(&e)))?;
        self.link(tier, artifact, name, export, Origin::Cache(key.0.clone()))
    }

    /// `deserialize` in the engine of `tier` with `first` concurrency (the one the key was made
    /// with), else in the other one (wasmtime's header says which engine compiled the code;
    /// `Engine::compile` may have fallen back to the one with concurrency).
    fn deserialize_either(
        &self,
        tier: Tier,
        first: Concurrency,
        format: Format,
        file: std::fs::File,
        payload_len: u64,
    ) -> wasmtime::Result<Artifact> {
        let again = file.try_clone()?;
        let other = match first {
            Concurrency::Off => Concurrency::On,
            Concurrency::On => Concurrency::Off,
        };
        match deserialize(&self.tier(tier, first)?.wasmtime, format, file, payload_len) {
            Ok(artifact) => Ok(artifact),
            Err(e) => match self.tier(tier, other) {
                Ok(t) => deserialize(&t.wasmtime, format, again, payload_len).map_err(|_| e),
                Err(_) => Err(e),
            },
        }
    }

    /// Compiles `bytes` with the compiler of `tier` and stores the code in
    /// `cache`, once across processes: under the entry's lock (waited for if
    /// `wait`, else `Stored::Busy` when another process holds it), a valid
    /// entry already there is kept (`Stored::Present`); a corrupt or stale
    /// one is logged and replaced. Then evicts down to the size bound.
    pub fn compile_to_cache(
        &self,
        cache: &Cache,
        bytes: &[u8],
        name: &str,
        tier: Tier,
        wait: bool,
    ) -> Result<Stored, EngineError> {
        self.compile_to_cache_admitted(cache, bytes, name, tier, wait, || Some(()))
    }

    /// [`Engine::compile_to_cache`], with `admit` asked for leave to compile
    /// once the entry was found missing: what it returns (a node-wide compile
    /// slot) is held until the code is stored; `None` ends with
    /// [`Stored::NotAdmitted`]. A process that waits (`wait`: a start needs the
    /// code) is admitted under the entry's lock, so that one waiting for
    /// another's compile of the same entry holds no admission meanwhile. One
    /// that does not wait (a background or precompile compile) is admitted
    /// first and takes the lock only then, so that it never holds the lock
    /// while queued for admission: a start needing the same entry would wait
    /// behind that queue (and behind the idle-priority compile after it). It
    /// still leaves at once, admission never asked, when the lock is taken or
    /// the entry there before it queues.
    pub fn compile_to_cache_admitted<G>(
        &self,
        cache: &Cache,
        bytes: &[u8],
        name: &str,
        tier: Tier,
        wait: bool,
        admit: impl FnOnce() -> Option<G>,
    ) -> Result<Stored, EngineError> {
        let (binary, format) = decode(bytes, name)?;
        let concurrency = needs_concurrency(&binary, format);
        let key = self.key_for_digest(&wasm_digest(bytes), tier, concurrency)?;
        let lock = |wait: bool| {
            cache
                .lock(&key, wait)
                .map_err(|e| cache.err(&format!("lock {}", key.lock()), e))
        };
        let present = || -> Result<bool, EngineError> {
            Ok(self
                .load_entry(cache, &key, tier, concurrency, format, name)?
                .is_some())
        };
        // Declared in this order, the lock is released before the admission.
        let (_admitted, _lock);
        if wait {
            let Some(held) = lock(true)? else {
                return Ok(Stored::Busy);
            };
            _lock = held;
            if present()? {
                return Ok(Stored::Present);
            }
            let Some(a) = admit() else {
                return Ok(Stored::NotAdmitted);
            };
            _admitted = a;
        } else {
            // Busy or present now: no admission queued for.
            if lock(false)?.is_none() {
                return Ok(Stored::Busy);
            }
            if present()? {
                return Ok(Stored::Present);
            }
            let Some(a) = admit() else {
                return Ok(Stored::NotAdmitted);
            };
            _admitted = a;
            let Some(held) = lock(false)? else {
                return Ok(Stored::Busy);
            };
            _lock = held;
            if present()? {
                return Ok(Stored::Present);
            }
        }
        let started = Instant::now();
        let artifact = self.compile(tier, &binary, format, concurrency, name)?;
        let elapsed = started.elapsed();
        let data = artifact
            .serialize()
            .map_err(|e| cache.err("serialize", one_line(&e)))?;
        let size = cache
            .store(&key, &data, tier == Tier::Optimized)
            .map_err(|e| cache.err(&format!("write {}", key.entry()), e))?;
        cache.log_compile(tier, elapsed, size, &key, name);
        log::info!(
            "compile cache: {name}: {tier} code compiled in {} ms, {size} bytes, entry {key}",
            elapsed.as_millis()
        );
        match cache.evict() {
            Ok(e) if e.entries > 0 => log::info!(
                "compile cache: evicted {} entries ({} bytes) to stay under {} bytes",
                e.entries,
                e.bytes,
                cache.max_size()
            ),
            Ok(_) => {}
            Err(e) => log::warn!("compile cache: eviction: {e}"),
        }
        Ok(Stored::Compiled { elapsed, size })
    }

    /// Optimized code for `bytes` through `cache`: loaded when present, else
    /// compiled once (other processes compiling the same key are waited for)
    /// and stored. When the cache cannot be written the code is compiled in
    /// this process all the same, with a warning.
    pub fn prepare_cached(
        &self,
        cache: &Cache,
        bytes: &[u8],
        name: &str,
        export: Option<&str>,
    ) -> Result<Prepared, EngineError> {
        if let Some(p) = self.load_cached(cache, bytes, name, export, &[Tier::Optimized])? {
            return Ok(p);
        }
        match self.compile_to_cache(cache, bytes, name, Tier::Optimized, true) {
            Ok(_) => {
                if let Some(p) = self.load_cached(cache, bytes, name, export, &[Tier::Optimized])? {
                    return Ok(p);
                }
            }
            Err(e @ EngineError::Cache(_)) => log::warn!("{e}; compiling without the cache"),
            Err(e) => return Err(e),
        }
        self.prepare(bytes, name, export)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_planted_where_proc_would_be_is_not_the_entry() {
        let dir = tempfile::tempdir().unwrap();
        let entry = dir.path().join("entry.cwasm");
        std::fs::write(&entry, b"the entry").unwrap();
        let file = std::fs::File::open(&entry).unwrap();
        // What an image could ship at /proc/self/fd/N, where no procfs is mounted.
        let planted = dir.path().join("planted");
        std::fs::write(&planted, b"crafted code").unwrap();
        assert!(!names_file(&planted, &file));
        assert!(!names_file(&dir.path().join("absent"), &file));
        assert!(names_file(&entry, &file));
        // Through the real /proc, the descriptor's own path is the entry.
        assert!(names_file(&PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd())), &file));
    }

    const WAT: &str = r#"(module (func (export "_start")))"#;

    #[test]
    fn a_stale_entry_is_dropped_and_compiled_again() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let engine = Engine::new().unwrap();
        let key = engine.cache_key(WAT.as_bytes(), Tier::Optimized).unwrap();

        // Code from an engine configured otherwise (no epoch interruption),
        // with a valid trailer: only wasmtime's own check can tell.
        let mut other = wasmtime::Config::new();
        other.epoch_interruption(false);
        let other = wasmtime::Engine::new(&other).unwrap();
        let stale = Module::new(&other, WAT).unwrap().serialize().unwrap();
        cache.store(&key, &stale, false).unwrap();
        assert!(matches!(cache.lookup(&key), Lookup::Found(..)));

        let loaded = engine
            .load_cached(&cache, WAT.as_bytes(), "/s.wasm", None, &[Tier::Optimized])
            .unwrap();
        assert!(loaded.is_none());
        assert!(
            matches!(cache.lookup(&key), Lookup::Missing),
            "stale entry removed"
        );

        cache.store(&key, &stale, false).unwrap();
        let stored = engine
            .compile_to_cache(&cache, WAT.as_bytes(), "/s.wasm", Tier::Optimized, true)
            .unwrap();
        assert!(matches!(stored, Stored::Compiled { .. }), "{stored:?}");
        assert!(engine
            .load_cached(&cache, WAT.as_bytes(), "/s.wasm", None, &[Tier::Optimized])
            .unwrap()
            .is_some());
    }

    #[test]
    fn admission_is_asked_only_for_a_missing_entry_under_its_lock() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let engine = Engine::new().unwrap();
        let key = engine.cache_key(WAT.as_bytes(), Tier::Baseline).unwrap();
        let compile = |admit: &mut dyn FnMut() -> Option<()>| {
            engine
                .compile_to_cache_admitted(
                    &cache,
                    WAT.as_bytes(),
                    "/a.wasm",
                    Tier::Baseline,
                    true,
                    admit,
                )
                .unwrap()
        };
        // Refused: nothing compiled, nothing stored, the entry's lock released.
        assert_eq!(compile(&mut || None), Stored::NotAdmitted);
        assert!(matches!(cache.lookup(&key), Lookup::Missing));
        // Admitted, while the entry's lock is held (nobody else can take it).
        let mut asked = 0;
        let stored = compile(&mut || {
            asked += 1;
            assert!(
                cache.lock(&key, false).unwrap().is_none(),
                "asked under the entry's lock"
            );
            Some(())
        });
        assert!(matches!(stored, Stored::Compiled { .. }), "{stored:?}");
        assert_eq!(asked, 1);
        // Present: not asked at all.
        assert_eq!(
            compile(&mut || panic!("asked for a present entry")),
            Stored::Present
        );
        // Busy (another holds the lock): not asked either.
        cache.remove(&key);
        let held = cache.lock(&key, false).unwrap().unwrap();
        let compile_now = |admit: &mut dyn FnMut() -> Option<()>| {
            engine
                .compile_to_cache_admitted(
                    &cache,
                    WAT.as_bytes(),
                    "/a.wasm",
                    Tier::Baseline,
                    false,
                    admit,
                )
                .unwrap()
        };
        assert_eq!(
            compile_now(&mut || panic!("asked while another compiles")),
            Stored::Busy
        );
        drop(held);
    }

    /// A compile that does not wait (background, precompile) queues for its
    /// admission without the entry's lock: a start needing the same entry can
    /// take it meanwhile. If the entry is compiled by another meanwhile, it
    /// leaves without compiling (its admission given back).
    #[test]
    fn a_compile_that_does_not_wait_is_admitted_before_it_locks() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let engine = Engine::new().unwrap();
        let key = engine.cache_key(WAT.as_bytes(), Tier::Baseline).unwrap();
        let compile = |admit: &mut dyn FnMut() -> Option<()>| {
            engine
                .compile_to_cache_admitted(
                    &cache,
                    WAT.as_bytes(),
                    "/a.wasm",
                    Tier::Baseline,
                    false,
                    admit,
                )
                .unwrap()
        };
        let stored = compile(&mut || {
            assert!(
                cache.lock(&key, false).unwrap().is_some(),
                "queued for admission while holding the entry's lock"
            );
            Some(())
        });
        assert!(matches!(stored, Stored::Compiled { .. }), "{stored:?}");
        // Another compiles it while this one waits for admission: Present, nothing compiled.
        cache.remove(&key);
        let stored = compile(&mut || {
            assert!(matches!(
                engine.compile_to_cache(&cache, WAT.as_bytes(), "/a.wasm", Tier::Baseline, true),
                Ok(Stored::Compiled { .. })
            ));
            Some(())
        });
        assert_eq!(stored, Stored::Present);
        // Another holds the lock when it is admitted: Busy.
        cache.remove(&key);
        let mut held = None;
        let stored = compile(&mut || {
            held = cache.lock(&key, false).unwrap();
            Some(())
        });
        assert_eq!(stored, Stored::Busy);
        drop(held);
    }
}
