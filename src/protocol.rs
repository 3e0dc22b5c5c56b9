//! The messages between the shim and the container init it spawns, one JSON object per line
//! over the sync socket (fd 3 in the init).
//!
//! ```text
//! shim                         init (stage 1)            init (stage 2, the container)
//!  | spawn, add to cgroup        |                          |
//!  |--- Go ------------------->  | enter namespaces, fork   |
//!  |<-- Pid(n) ------------------| exit                     | rootfs, privileges,
//!  |<-- Ready | Error --------------------------------------| load and compile the wasm
//!  |--- Start ---------------------------------------------->| run
//!  |<-- Oom ---------------------------------------------------| (memory limit hit)
//! ```

use std::io::{self, BufRead, Write};

use serde::{Deserialize, Serialize};

/// The ttrpc status an init error maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    NotFound,
    InvalidArgument,
    FailedPrecondition,
    Unimplemented,
    Internal,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ToInit {
    Go,
    Start,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FromInit {
    Pid(i32),
    Ready,
    Error { kind: ErrorKind, message: String },
    Oom { message: String },
}

pub fn send<T: Serialize>(w: &mut impl Write, msg: &T) -> io::Result<()> {
    let mut line = serde_json::to_vec(msg).map_err(io::Error::other)?;
    line.push(b'\n');
    w.write_all(&line)?;
    w.flush()
}

/// Reads one message; `Ok(None)` at end of stream (the other side is gone).
pub fn recv<T: for<'de> Deserialize<'de>>(r: &mut impl BufRead) -> io::Result<Option<T>> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    serde_json::from_str(&line)
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("bad sync message {line:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_line_by_line() {
        let mut buf = Vec::new();
        send(&mut buf, &FromInit::Pid(42)).unwrap();
        send(&mut buf, &FromInit::Error { kind: ErrorKind::NotFound, message: "a\nb".into() }).unwrap();
        let mut r = io::BufReader::new(&buf[..]);
        assert_eq!(recv::<FromInit>(&mut r).unwrap(), Some(FromInit::Pid(42)));
        assert_eq!(
            recv::<FromInit>(&mut r).unwrap(),
            Some(FromInit::Error { kind: ErrorKind::NotFound, message: "a\nb".into() })
        );
        assert_eq!(recv::<FromInit>(&mut r).unwrap(), None);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut r = io::BufReader::new(&b"{nope\n"[..]);
        assert!(recv::<ToInit>(&mut r).is_err());
    }
}
