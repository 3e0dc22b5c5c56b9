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

use std::hash::{Hash, Hasher};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use cap_std::fs::{Dir, OpenOptions, OpenOptionsExt};
use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::Module;

use crate::engine::Engine;
use crate::tier::Tier;
use crate::error::{one_line, EngineError};
use crate::prepare::{decode, Artifact, Format, Origin, Prepared};

/// The default bound on the cache's total size.
pub const DEFAULT_MAX_SIZE: u64 = 1 << 30;

/// Changes whenever the entry layout or the key derivation changes.
const FORMAT: &str = "wasm-shim-cache-v2";
const ENTRY_SUFFIX: &str = ".cwasm";
const LOCK_SUFFIX: &str = ".lock";
const TMP_PREFIX: &str = ".tmp-";
const COMPILE_LOG: &str = "compile.log";
/// `compile.log` is cut to its newest half past this size.
const COMPILE_LOG_MAX: u64 = 1 << 20;
/// Temp files older than this belong to a writer that died.
const STALE_TMP: Duration = Duration::from_secs(3600);

const TRAILER_MAGIC: [u8; 8] = *b"wshimc01";
/// magic (8), payload length (u64 LE), CRC-32 of the payload (u32 LE), zero (4).
const TRAILER_LEN: u64 = 24;

/// An entry's name without its suffix: `<sha256 of the wasm>-<tier letter><16 hex digits>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey(String);

impl CacheKey {
    /// Accepts a key as printed by `as_str` (and nothing that could name
    /// another file: only lowercase hex digits, letters and `-`).
    pub fn parse(s: &str) -> Option<CacheKey> {
        let ok = (16..=128).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase() || b == b'-');
        ok.then(|| CacheKey(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The sha256 (hex) of the wasm the entry was compiled from.
    pub fn digest(&self) -> &str {
        self.0.split('-').next().unwrap_or("")
    }

    /// The entry's file name in the cache directory.
    pub fn file_name(&self) -> String {
        self.entry()
    }

    fn entry(&self) -> String {
        format!("{}{ENTRY_SUFFIX}", self.0)
    }

    fn lock(&self) -> String {
        format!("{}{LOCK_SUFFIX}", self.0)
    }
}

impl std::fmt::Display for CacheKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One cache entry, as `entries` lists it.
#[derive(Debug, Clone)]
pub struct EntryInfo {
    pub key: CacheKey,
    pub size: u64,
    pub modified: SystemTime,
}

/// What `evict` removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Evicted {
    pub entries: usize,
    pub bytes: u64,
}

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

/// Result of looking an entry up.
enum Lookup {
    Missing,
    /// The open entry and the length of its payload (the artifact).
    Found(std::fs::File, u64),
    Corrupt(String),
}

/// A compile cache directory. See the module documentation.
#[derive(Debug)]
pub struct Cache {
    dir: Dir,
    path: PathBuf,
    max_size: u64,
}

/// Holds `flock` on an entry's lock file until dropped.
struct EntryLock {
    _file: std::fs::File,
}

impl Cache {
    /// Opens the cache at `path`, creating it when missing: new parent
    /// directories are private (0700) and the cache directory itself is 0711,
    /// so that a process that has dropped privileges can still open entries
    /// through a handle taken before, but nobody can list them.
    pub fn open(path: &Path) -> io::Result<Cache> {
        if !path.is_dir() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(path)?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o711))?;
        }
        Cache::open_existing(path)
    }

    /// Opens an existing cache directory (fails when it does not exist).
    pub fn open_existing(path: &Path) -> io::Result<Cache> {
        let dir = Dir::open_ambient_dir(path, cap_std::ambient_authority())?;
        Ok(Cache {
            dir,
            path: path.to_path_buf(),
            max_size: DEFAULT_MAX_SIZE,
        })
    }

    /// Sets the bound on the total size of the entries.
    pub fn with_max_size(mut self, bytes: u64) -> Cache {
        self.max_size = bytes;
        self
    }

    /// The directory's path when it was opened (it may not resolve any more,
    /// for example after `pivot_root`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn max_size(&self) -> u64 {
        self.max_size
    }

    fn err(&self, what: &str, e: impl std::fmt::Display) -> EngineError {
        EngineError::Cache(format!("{}: {what}: {e}", self.path.display()))
    }

    /// Marks the entry as just used (its mtime is the LRU clock).
    pub fn touch(&self, key: &CacheKey) -> io::Result<()> {
        let file = self.dir.open(key.entry())?.into_std();
        file.set_modified(SystemTime::now())
    }

    /// Every entry, oldest first.
    pub fn entries(&self) -> io::Result<Vec<EntryInfo>> {
        let mut out = Vec::new();
        for entry in self.dir.entries()? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(key) = name
                .to_str()
                .and_then(|n| n.strip_suffix(ENTRY_SUFFIX))
                .and_then(CacheKey::parse)
            else {
                continue;
            };
            let Ok(meta) = entry.metadata() else { continue };
            out.push(EntryInfo {
                key,
                size: meta.len(),
                modified: meta
                    .modified()
                    .map(|t| t.into_std())
                    .unwrap_or(SystemTime::UNIX_EPOCH),
            });
        }
        out.sort_by_key(|e| e.modified);
        Ok(out)
    }

    /// Removes every entry (and its lock file) and the compile log.
    pub fn clear(&self) -> io::Result<Evicted> {
        let mut evicted = Evicted::default();
        for e in self.entries()? {
            self.remove(&e.key);
            evicted.entries += 1;
            evicted.bytes += e.size;
        }
        let _ = self.dir.remove_file(COMPILE_LOG);
        Ok(evicted)
    }

    /// The compile log: one line per compile, `unix-seconds tier milliseconds
    /// bytes key file`. Empty when nothing was compiled.
    pub fn compile_log(&self) -> io::Result<String> {
        match self.dir.read_to_string(COMPILE_LOG) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(String::new()),
            other => other,
        }
    }

    /// Removes the least recently used entries until the total size is at
    /// most the bound, and temp files left by writers that died.
    pub fn evict(&self) -> io::Result<Evicted> {
        self.remove_stale_temp_files();
        let entries = self.entries()?;
        let mut total: u64 = entries.iter().map(|e| e.size).sum();
        let mut evicted = Evicted::default();
        for e in entries {
            if total <= self.max_size {
                break;
            }
            self.remove(&e.key);
            total = total.saturating_sub(e.size);
            evicted.entries += 1;
            evicted.bytes += e.size;
        }
        self.trim_compile_log();
        Ok(evicted)
    }

    fn remove_stale_temp_files(&self) {
        let Ok(entries) = self.dir.entries() else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            if !name.to_string_lossy().starts_with(TMP_PREFIX) {
                continue;
            }
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .map(|t| t.into_std().elapsed().unwrap_or_default() > STALE_TMP)
                .unwrap_or(false);
            if old {
                let _ = self.dir.remove_file(&name);
            }
        }
    }

    /// Removes an entry, then its lock file if nobody holds it. Mapped copies
    /// of the entry stay valid (the file lives on until unmapped).
    pub fn remove(&self, key: &CacheKey) {
        match self.dir.remove_file(key.entry()) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => log::debug!(
                "{}: cannot remove {}: {e}",
                self.path.display(),
                key.entry()
            ),
        }
        if let Ok(Some(lock)) = self.lock(key, false) {
            // Removed while held: a waiter on this file sees it is no longer
            // the one at the path and starts over with a new one.
            let _ = self.dir.remove_file(key.lock());
            drop(lock);
        }
    }

    /// Takes the entry's lock, waiting for it if `wait`, else `None` when
    /// another process holds it.
    fn lock(&self, key: &CacheKey, wait: bool) -> io::Result<Option<EntryLock>> {
        let name = key.lock();
        loop {
            let file = self
                .dir
                .open_with(
                    &name,
                    OpenOptions::new()
                        .read(true)
                        .write(true)
                        .create(true)
                        .mode(0o600),
                )?
                .into_std();
            if wait {
                file.lock()?;
            } else {
                match file.try_lock() {
                    Ok(()) => {}
                    Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
                    Err(std::fs::TryLockError::Error(e)) => return Err(e),
                }
            }
            // The lock file may have been removed (by `remove`) between our
            // open and our lock: then the lock is on a file nobody else will
            // look at; take a fresh one.
            let held = file.metadata()?;
            match self.dir.symlink_metadata(&name) {
                Ok(now)
                    if cap_std::fs::MetadataExt::ino(&now) == held.ino()
                        && cap_std::fs::MetadataExt::dev(&now) == held.dev() =>
                {
                    return Ok(Some(EntryLock { _file: file }))
                }
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn lookup(&self, key: &CacheKey) -> Lookup {
        let file = match self.dir.open(key.entry()) {
            Ok(f) => f.into_std(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Lookup::Missing,
            Err(e) => {
                log::debug!("{}: cannot open {}: {e}", self.path.display(), key.entry());
                return Lookup::Missing;
            }
        };
        match verify(&file) {
            Ok(payload_len) => Lookup::Found(file, payload_len),
            Err(reason) => Lookup::Corrupt(reason),
        }
    }

    /// Writes an entry atomically: temp file, then rename over the name.
    /// `durable` also syncs it to disk first; without it a crash may leave
    /// a damaged entry, which the checksum catches.
    fn store(&self, key: &CacheKey, payload: &[u8], durable: bool) -> io::Result<u64> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let tmp = format!(
            "{TMP_PREFIX}{}-{}-{}",
            key,
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let write = || -> io::Result<u64> {
            let mut file = self
                .dir
                .open_with(
                    &tmp,
                    OpenOptions::new().write(true).create_new(true).mode(0o644),
                )?
                .into_std();
            file.write_all(payload)?;
            file.write_all(&trailer(payload))?;
            // The mode given to open is reduced by the umask.
            file.set_permissions(std::fs::Permissions::from_mode(0o644))?;
            if durable {
                file.sync_all()?;
            }
            self.dir.rename(&tmp, &self.dir, key.entry())?;
            Ok(payload.len() as u64 + TRAILER_LEN)
        };
        let result = write();
        if result.is_err() {
            let _ = self.dir.remove_file(&tmp);
        }
        result
    }

    fn log_compile(&self, tier: Tier, elapsed: Duration, size: u64, key: &CacheKey, file: &str) {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let file: String = file
            .chars()
            .map(|c| {
                if c.is_whitespace() || c.is_control() {
                    '_'
                } else {
                    c
                }
            })
            .collect();
        let line = format!("{now} {tier} {} {size} {key} {file}\n", elapsed.as_millis());
        let opened = self.dir.open_with(
            COMPILE_LOG,
            OpenOptions::new().append(true).create(true).mode(0o600),
        );
        if let Ok(f) = opened {
            // One write of a short line: appends from several processes do
            // not interleave.
            let _ = f.into_std().write_all(line.as_bytes());
        }
    }

    fn trim_compile_log(&self) {
        let Ok(meta) = self.dir.metadata(COMPILE_LOG) else {
            return;
        };
        if meta.len() <= COMPILE_LOG_MAX {
            return;
        }
        let Ok(text) = self.dir.read_to_string(COMPILE_LOG) else {
            return;
        };
        let mut cut = text.len() / 2;
        while !text.is_char_boundary(cut) {
            cut += 1;
        }
        let tail = match text[cut..].find('\n') {
            Some(i) => &text[cut + i + 1..],
            None => "",
        };
        let tmp = format!("{TMP_PREFIX}{COMPILE_LOG}-{}", std::process::id());
        if self.dir.write(&tmp, tail).is_ok()
            && self.dir.rename(&tmp, &self.dir, COMPILE_LOG).is_err()
        {
            let _ = self.dir.remove_file(&tmp);
        }
    }
}

fn trailer(payload: &[u8]) -> [u8; TRAILER_LEN as usize] {
    let mut t = [0u8; TRAILER_LEN as usize];
    t[..8].copy_from_slice(&TRAILER_MAGIC);
    t[8..16].copy_from_slice(&(payload.len() as u64).to_le_bytes());
    t[16..20].copy_from_slice(&crc32fast::hash(payload).to_le_bytes());
    t
}

/// Checks an entry's trailer and checksum; returns the payload length.
fn verify(file: &std::fs::File) -> Result<u64, String> {
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    if len < TRAILER_LEN {
        return Err(format!("truncated ({len} bytes)"));
    }
    let mut t = [0u8; TRAILER_LEN as usize];
    file.read_exact_at(&mut t, len - TRAILER_LEN)
        .map_err(|e| e.to_string())?;
    if t[..8] != TRAILER_MAGIC {
        return Err("no cache trailer".to_string());
    }
    let payload = u64::from_le_bytes(t[8..16].try_into().unwrap());
    if payload != len - TRAILER_LEN {
        return Err(format!(
            "size {len} does not match the recorded {} bytes",
            payload + TRAILER_LEN
        ));
    }
    let want = u32::from_le_bytes(t[16..20].try_into().unwrap());
    let mut crc = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    while at < payload {
        let n = (payload - at).min(buf.len() as u64) as usize;
        file.read_exact_at(&mut buf[..n], at)
            .map_err(|e| e.to_string())?;
        crc.update(&buf[..n]);
        at += n as u64;
    }
    if crc.finalize() != want {
        return Err("checksum mismatch".to_string());
    }
    Ok(payload)
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

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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
            // wasmtime maps components by path only: reach our open file
            // through /proc (which works after pivot_root too); without
            // /proc, read it.
            let by_fd = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
            if by_fd.exists() {
                unsafe { Component::deserialize_file(engine, &by_fd) }.map(Artifact::Component)
            } else {
                let mut bytes = Vec::with_capacity(payload_len as usize);
                (&file).take(payload_len).read_to_end(&mut bytes)?;
                unsafe { Component::deserialize(engine, &bytes) }.map(Artifact::Component)
            }
        }
    }
}

/// The sha256 (hex) of wasm bytes: how every cache key of them begins
/// ([`CacheKey::digest`]).
pub fn wasm_digest(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

impl Engine {
    /// The cache key of `bytes` compiled by `tier` in this engine's
    /// configuration.
    pub fn cache_key(&self, bytes: &[u8], tier: Tier) -> Result<CacheKey, EngineError> {
        let digest = wasm_digest(bytes);
        self.key_for_digest(&digest, tier)
    }

    fn key_for_digest(&self, digest: &str, tier: Tier) -> Result<CacheKey, EngineError> {
        let engine = &self.tier(tier)?.wasmtime;
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
        let (_, format) = decode(bytes, name)?;
        let digest = wasm_digest(bytes);
        for &tier in tiers {
            let key = self.key_for_digest(&digest, tier)?;
            if let Some(artifact) = self.load_entry(cache, &key, tier, format, name)? {
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
        format: Format,
        name: &str,
    ) -> Result<Option<Artifact>, EngineError> {
        let engine = &self.tier(tier)?.wasmtime;
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
        match deserialize(engine, format, file, payload_len) {
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
        let artifact = deserialize(&self.tier(tier)?.wasmtime, format, file, payload_len).map_err(|e| bad(one_line(&e)))?;
        self.link(tier, artifact, name, export, Origin::Cache(key.0.clone()))
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
    /// once the entry's lock is held and the entry was found missing: what it
    /// returns (a node-wide compile slot) is held until the code is stored;
    /// `None` ends with [`Stored::NotAdmitted`]. Taken in this order, the
    /// processes that wait for another's compile of the same entry hold no
    /// admission meanwhile.
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
        let key = self.cache_key(bytes, tier)?;
        let Some(_lock) = cache
            .lock(&key, wait)
            .map_err(|e| cache.err(&format!("lock {}", key.lock()), e))?
        else {
            return Ok(Stored::Busy);
        };
        if self.load_entry(cache, &key, tier, format, name)?.is_some() {
            return Ok(Stored::Present);
        }
        let Some(_admitted) = admit() else {
            return Ok(Stored::NotAdmitted);
        };
        let started = Instant::now();
        let artifact = self.compile(tier, &binary, format, name)?;
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
                cache.max_size
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
                    false,
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
        let held = cache.lock(&key, true).unwrap().unwrap();
        assert_eq!(
            compile(&mut || panic!("asked while another compiles")),
            Stored::Busy
        );
        drop(held);
    }

    #[test]
    fn trailer_checks() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let key = CacheKey::parse("00ff-o0123456789abcdef").unwrap();
        cache.store(&key, b"payload bytes", false).unwrap();
        let file = || std::fs::File::open(dir.path().join(key.entry())).unwrap();
        assert_eq!(verify(&file()), Ok(13));
        std::fs::write(dir.path().join(key.entry()), b"short").unwrap();
        assert!(verify(&file()).unwrap_err().contains("truncated"));
        let mut data = b"payload bytes".to_vec();
        data.extend_from_slice(&trailer(b"payload bytes"));
        data.insert(0, b'x');
        std::fs::write(dir.path().join(key.entry()), &data).unwrap();
        assert!(verify(&file()).unwrap_err().contains("does not match"));
        let mut data = b"payload bytez".to_vec();
        data.extend_from_slice(&trailer(b"payload bytes"));
        std::fs::write(dir.path().join(key.entry()), &data).unwrap();
        assert_eq!(verify(&file()).unwrap_err(), "checksum mismatch");
    }

    #[test]
    fn a_removed_lock_file_is_not_shared() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let key = CacheKey::parse("00ff-o0123456789abcdef").unwrap();
        let held = cache.lock(&key, true).unwrap().unwrap();
        assert!(cache.lock(&key, false).unwrap().is_none());
        // Removing the entry leaves a held lock file alone.
        cache.remove(&key);
        assert!(dir.path().join(key.lock()).exists());
        drop(held);
        cache.remove(&key);
        assert!(!dir.path().join(key.lock()).exists());
        assert!(cache.lock(&key, false).unwrap().is_some());
    }
}
