//! The on-disk store of the compile cache: one directory of entries named by key, written
//! atomically with a checksum trailer, locked per key, evicted least recently used, with a
//! compile log. Bytes in, bytes out: what the bytes are (compiled code) is `load`'s business.

use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use cap_std::fs::{Dir, OpenOptions, OpenOptionsExt};
use sha2::{Digest, Sha256};

use crate::error::EngineError;
use crate::tier::Tier;

/// The default bound on the cache's total size.
pub const DEFAULT_MAX_SIZE: u64 = 1 << 30;

/// Changes whenever the entry layout or the key derivation changes (`load` hashes it into
/// every key).
pub(super) const FORMAT: &str = "wasm-shim-cache-v2";
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
pub struct CacheKey(pub(super) String);

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

    pub(super) fn entry(&self) -> String {
        format!("{}{ENTRY_SUFFIX}", self.0)
    }

    pub(super) fn lock(&self) -> String {
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

/// Result of looking an entry up.
pub(super) enum Lookup {
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
pub(super) struct EntryLock {
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

    pub(super) fn err(&self, what: &str, e: impl std::fmt::Display) -> EngineError {
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
    pub(super) fn lock(&self, key: &CacheKey, wait: bool) -> io::Result<Option<EntryLock>> {
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

    pub(super) fn lookup(&self, key: &CacheKey) -> Lookup {
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
    pub(super) fn store(&self, key: &CacheKey, payload: &[u8], durable: bool) -> io::Result<u64> {
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

    pub(super) fn log_compile(&self, tier: Tier, elapsed: Duration, size: u64, key: &CacheKey, file: &str) {
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
pub(super) fn verify(file: &std::fs::File) -> Result<u64, String> {
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

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The sha256 (hex) of wasm bytes: how every cache key of them begins
/// ([`CacheKey::digest`]).
pub fn wasm_digest(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

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
