//! Small helpers for reading and writing cgroupfs control files, turning every failure into a
//! [`CgroupError`] that names the file.

use std::fs;
use std::io::{self, Write};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use super::{CgroupError, Result};

/// Reads a whole control file.
pub(crate) fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(|e| CgroupError::io("read", path, e))
}

/// Reads a control file; `None` when it does not exist (controller not enabled, old kernel).
pub(crate) fn read_opt(path: &Path) -> Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CgroupError::io("read", path, e)),
    }
}

/// Writes `value` to an existing control file (never creates one: a missing file is an error that
/// names it, which is what a caller needs to see when a controller is not available).
pub(crate) fn write(path: &Path, value: &str) -> Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .map_err(|e| CgroupError::io("write", path, e))?;
    f.write_all(value.as_bytes())
        .map_err(|e| CgroupError::io("write", path, e))
}

/// Parses a single unsigned number (surrounding whitespace allowed).
pub(crate) fn parse_u64(path: &Path, s: &str) -> Result<u64> {
    let t = s.trim();
    t.parse::<u64>()
        .map_err(|_| CgroupError::parse(path, format!("expected a number, found {t:?}")))
}

/// Parses a single signed number.
pub(crate) fn parse_i64(path: &Path, s: &str) -> Result<i64> {
    let t = s.trim();
    t.parse::<i64>()
        .map_err(|_| CgroupError::parse(path, format!("expected a number, found {t:?}")))
}

/// Reads a single-number file; a missing file reads as 0.
pub(crate) fn read_u64_or_zero(path: &Path) -> Result<u64> {
    match read_opt(path)? {
        Some(s) => parse_u64(path, &s),
        None => Ok(0),
    }
}

/// Reads a file holding a number or `max`: `max` maps to `max_value`, a missing file to 0.
pub(crate) fn read_u64_or_max(path: &Path, max_value: u64) -> Result<u64> {
    match read_opt(path)? {
        Some(s) if s.trim() == "max" => Ok(max_value),
        Some(s) => parse_u64(path, &s),
        None => Ok(0),
    }
}

/// Calls `done` (with the attempt number) every 10 ms until it returns true or `timeout` passes.
/// Returns whether it succeeded; errors from `done` end the wait.
pub(crate) fn poll_until(
    timeout: Duration,
    mut done: impl FnMut(u32) -> Result<bool>,
) -> Result<bool> {
    let deadline = Instant::now() + timeout;
    let mut attempt = 0;
    loop {
        if done(attempt)? {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        attempt += 1;
        thread::sleep(Duration::from_millis(10));
    }
}

/// Looks `key` up in a flat-keyed file body (`key value` per line). Lines whose value is not a
/// number are ignored; an absent key is `None`.
pub(crate) fn keyed(body: &str, key: &str) -> Option<u64> {
    body.lines().find_map(|line| {
        let mut it = line.split_whitespace();
        match (it.next(), it.next()) {
            (Some(k), Some(v)) if k == key => v.parse().ok(),
            _ => None,
        }
    })
}

/// Reads a flat-keyed file; a missing file reads as empty (every key then reads as 0).
pub(crate) fn read_keyed_opt(path: &Path) -> Result<String> {
    Ok(read_opt(path)?.unwrap_or_default())
}

/// Formats a limit where a negative value means "no limit" in cgroup v2 syntax.
pub(crate) fn v2_limit(v: i64) -> String {
    if v < 0 {
        "max".to_string()
    } else {
        v.to_string()
    }
}

/// Removes a cgroup directory. A missing directory is fine. `EBUSY` (the last tasks are still
/// exiting) is retried with short sleeps until `timeout`.
pub(crate) fn remove_dir(dir: &Path, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut delay = Duration::from_millis(5);
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_millis(100));
            }
            Err(e) => return Err(CgroupError::io("rmdir", dir, e)),
        }
    }
}

/// Creates a directory and its missing parents.
pub(crate) fn mkdir_all(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| CgroupError::io("mkdir", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_finds_exact_key_only() {
        let body = "total_rss 7\nrss 5\nrss_huge 9\nweird\n";
        assert_eq!(keyed(body, "rss"), Some(5));
        assert_eq!(keyed(body, "total_rss"), Some(7));
        assert_eq!(keyed(body, "cache"), None);
        assert_eq!(keyed(body, "weird"), None);
    }

    #[test]
    fn write_does_not_create_and_error_names_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("memory.max");
        let err = write(&p, "1").unwrap_err().to_string();
        assert!(err.starts_with("cgroup: write "), "{err}");
        assert!(err.contains("memory.max"), "{err}");
        assert!(err.ends_with("No such file or directory"), "{err}");
        assert!(!p.exists());
    }

    #[test]
    fn write_truncates_previous_value() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cpu.weight");
        fs::write(&p, "100\n").unwrap();
        write(&p, "39").unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "39");
    }

    #[test]
    fn missing_files_read_as_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("nope");
        assert_eq!(read_u64_or_zero(&p).unwrap(), 0);
        assert_eq!(read_u64_or_max(&p, u64::MAX).unwrap(), 0);
        fs::write(&p, "max\n").unwrap();
        assert_eq!(read_u64_or_max(&p, u64::MAX).unwrap(), u64::MAX);
        fs::write(&p, "12\n").unwrap();
        assert_eq!(read_u64_or_max(&p, u64::MAX).unwrap(), 12);
        fs::write(&p, "abc\n").unwrap();
        let err = read_u64_or_zero(&p).unwrap_err().to_string();
        assert!(
            err.contains("cgroup: parse") && err.contains("\"abc\""),
            "{err}"
        );
    }

    #[test]
    fn poll_until_succeeds_or_times_out() {
        let mut calls = 0;
        assert!(poll_until(Duration::from_secs(1), |n| {
            calls += 1;
            Ok(n == 2)
        })
        .unwrap());
        assert_eq!(calls, 3);
        let start = Instant::now();
        assert!(!poll_until(Duration::from_millis(50), |_| Ok(false)).unwrap());
        assert!(start.elapsed() >= Duration::from_millis(50));
    }

    #[test]
    fn remove_dir_missing_is_ok_and_nonempty_is_error() {
        let dir = tempfile::tempdir().unwrap();
        remove_dir(&dir.path().join("gone"), Duration::from_millis(10)).unwrap();
        let full = dir.path().join("full");
        fs::create_dir(&full).unwrap();
        fs::write(full.join("f"), "").unwrap();
        let err = remove_dir(&full, Duration::from_millis(10))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("cgroup: rmdir ") && err.contains("full"),
            "{err}"
        );
        let empty = dir.path().join("empty");
        fs::create_dir(&empty).unwrap();
        remove_dir(&empty, Duration::from_millis(10)).unwrap();
        assert!(!empty.exists());
    }
}
