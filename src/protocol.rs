//! The messages between the shim and the container init it spawns, one JSON object per line
//! over the sync socket (fd 3 in the init).
//!
//! ```text
//! shim                         init (stage 1)            init (stage 2, the container)
//!  | spawn, add to cgroup        |                          |
//!  |--- Go ------------------->  | enter namespaces, fork   |
//!  |<-- Pid(n) ------------------| exit                     | rootfs, privileges, read the
//!  |                             |                          | wasm, look in the compile cache
//!  |<-- CacheHit ---------------------------------------------| found: mapped
//!  |<-- Compile + wasm bytes ---------------------------------| not found (or baseline only):
//!  | compile helper(s) fill the cache                         | the shim has it compiled
//!  |--- Compiled ------------------------------------------->| (if it waits), load it
//!  |<-- Loaded { cache, tier, time } --------------------------| code loaded (task span)
//!  |<-- Ready | Error --------------------------------------| ready to run
//!  |--- Start { create time, traces } ---------------------->| run
//!  |<-- Oom ---------------------------------------------------| (memory limit hit)
//!  |<-- Log (any time) ---------------------------------------| the init's log lines
//! ```
//!
//! `Compile` is the one message followed by raw bytes: its `len` bytes of wasm come right
//! after its line.

use std::io::{self, BufRead, Read, Write};

use serde::{Deserialize, Serialize};

use crate::errors::ShimError;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ToInit {
    Go,
    /// Run. `create_micros`: how long Create took as the shim saw it (for the init's metrics);
    /// `traces`: what a serving init needs for its request spans.
    Start { create_micros: u64, traces: InitTraces },
    /// Answer to `Compile { wait: true }`: the compile helper is done (look in the cache again;
    /// if the code is still not there, compile in the init).
    Compiled,
}

/// Request spans of a serving init (see `traces`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct InitTraces {
    /// The shim's traces URL (containerd's environment), for a container whose own environment
    /// names none.
    pub endpoint: Option<String>,
    /// The container's id (an attribute of its spans).
    pub id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FromInit {
    Pid(i32),
    Ready,
    /// Setup failed (the same JSON as a struct variant `{kind, message}`).
    Error(ShimError),
    Oom { message: String },
    /// The workload was loaded from this compile cache entry (the shim marks it used).
    CacheHit { key: String },
    /// The workload's code is loaded (for the `compile` task span): `cache` hit, miss or off,
    /// the `tier` of the code, how long loading or compiling took, the file.
    Loaded { cache: String, tier: String, micros: u64, file: String },
    /// No optimized code in the cache: `len` bytes of wasm follow. `wait`: the init waits for
    /// `Compiled` (it found nothing usable); else it runs baseline code meanwhile.
    Compile { name: String, len: u64, wait: bool },
    /// A log line of the init (it has no log pipe of its own).
    Log { level: LogLevel, message: String },
    /// A server runs on baseline code: hand over the optimized entry `key` (of the module the
    /// init asked to compile) when it is built, with [`send_fd`].
    AwaitOptimized { key: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
}

impl From<log::Level> for LogLevel {
    fn from(l: log::Level) -> Self {
        match l {
            log::Level::Error => LogLevel::Error,
            log::Level::Warn => LogLevel::Warn,
            log::Level::Info => LogLevel::Info,
            log::Level::Debug | log::Level::Trace => LogLevel::Debug,
        }
    }
}

impl From<LogLevel> for log::Level {
    fn from(l: LogLevel) -> Self {
        match l {
            LogLevel::Error => log::Level::Error,
            LogLevel::Warn => log::Level::Warn,
            LogLevel::Info => log::Level::Info,
            LogLevel::Debug => log::Level::Debug,
        }
    }
}

/// The largest wasm the init sends for compiling (a bigger one is compiled in the init, inside
/// the container's limits, and not cached): bounds what the shim holds and what a background
/// compile outside the container's cgroup may cost.
pub const MAX_COMPILE_BYTES: u64 = 256 << 20;

/// Sends `Compile` and the bytes after it.
pub fn send_compile(w: &mut impl Write, name: &str, bytes: &[u8], wait: bool) -> io::Result<()> {
    send(w, &FromInit::Compile { name: name.to_string(), len: bytes.len() as u64, wait })?;
    w.write_all(bytes)?;
    w.flush()
}

/// Reads the bytes that follow a `Compile { len, .. }` line.
pub fn recv_bytes(r: &mut impl BufRead, len: u64) -> io::Result<Vec<u8>> {
    if len > MAX_COMPILE_BYTES {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("compile request of {len} bytes")));
    }
    let mut buf = vec![0u8; len as usize];
    r.read_exact(&mut buf)?;
    Ok(buf)
}

pub fn send<T: Serialize>(w: &mut impl Write, msg: &T) -> io::Result<()> {
    let mut line = serde_json::to_vec(msg).map_err(io::Error::other)?;
    line.push(b'\n');
    w.write_all(&line)?;
    w.flush()
}

/// The longest message line read from the other side: past it, an error. An init runs guest
/// code; if that ever escaped, it must not make the shim allocate without bound.
pub const MAX_MESSAGE: u64 = 64 << 10;

/// Reads one message; `Ok(None)` at end of stream (the other side is gone).
pub fn recv<T: for<'de> Deserialize<'de>>(r: &mut impl BufRead) -> io::Result<Option<T>> {
    let mut line = String::new();
    let n = r.by_ref().take(MAX_MESSAGE).read_line(&mut line)?;
    if n == 0 {
        return Ok(None);
    }
    if !line.ends_with('\n') && n as u64 >= MAX_MESSAGE {
        // The rest of the line is read and dropped, without holding it: the next message can
        // be read, and the other side never blocks on a side that stopped reading.
        r.skip_until(b'\n')?;
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("sync message longer than {MAX_MESSAGE} bytes")));
    }
    serde_json::from_str(&line)
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("bad sync message {line:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endless_message_is_an_error_not_an_allocation() {
        let mut big = vec![b'x'; (MAX_MESSAGE as usize) * 4];
        big.push(b'\n');
        send(&mut big, &FromInit::Pid(7)).unwrap();
        let mut r = io::BufReader::new(&big[..]);
        let err = recv::<FromInit>(&mut r).unwrap_err();
        assert!(err.to_string().contains("longer than"), "{err}");
        // It was dropped whole: the message after it reads.
        assert_eq!(recv::<FromInit>(&mut r).unwrap(), Some(FromInit::Pid(7)));
        assert_eq!(recv::<FromInit>(&mut r).unwrap(), None);
        // A message just under the bound still reads.
        let mut buf = Vec::new();
        send(&mut buf, &FromInit::Log { level: LogLevel::Warn, message: "y".repeat(MAX_MESSAGE as usize - 100) }).unwrap();
        assert!(matches!(recv::<FromInit>(&mut io::BufReader::new(&buf[..])).unwrap(), Some(FromInit::Log { .. })));
    }

    #[test]
    fn messages_round_trip_line_by_line() {
        let mut buf = Vec::new();
        send(&mut buf, &FromInit::Pid(42)).unwrap();
        send(&mut buf, &FromInit::Error(ShimError::not_found("a\nb"))).unwrap();
        let mut r = io::BufReader::new(&buf[..]);
        assert_eq!(recv::<FromInit>(&mut r).unwrap(), Some(FromInit::Pid(42)));
        assert_eq!(
            recv::<FromInit>(&mut r).unwrap(),
            Some(FromInit::Error(ShimError::not_found("a\nb")))
        );
        assert_eq!(recv::<FromInit>(&mut r).unwrap(), None);
    }

    #[test]
    fn an_error_crosses_as_kind_and_message() {
        let mut buf = Vec::new();
        send(&mut buf, &FromInit::Error(ShimError::invalid("bad"))).unwrap();
        assert_eq!(buf, b"{\"Error\":{\"kind\":\"InvalidArgument\",\"message\":\"bad\"}}\n");
    }

    #[test]
    fn compile_requests_carry_their_bytes() {
        let mut buf = Vec::new();
        send_compile(&mut buf, "/a.wasm", b"\0asm\n\x01\0\0\0", true).unwrap();
        send(&mut buf, &FromInit::Ready).unwrap();
        let mut r = io::BufReader::new(&buf[..]);
        let Some(FromInit::Compile { name, len, wait: true }) = recv::<FromInit>(&mut r).unwrap() else { panic!() };
        assert_eq!(name, "/a.wasm");
        assert_eq!(recv_bytes(&mut r, len).unwrap(), b"\0asm\n\x01\0\0\0");
        assert_eq!(recv::<FromInit>(&mut r).unwrap(), Some(FromInit::Ready));
        assert!(recv_bytes(&mut r, MAX_COMPILE_BYTES + 1).is_err());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut r = io::BufReader::new(&b"{nope\n"[..]);
        assert!(recv::<ToInit>(&mut r).is_err());
    }
}
