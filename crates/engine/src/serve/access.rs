//! The access log of a served workload (`ServeOptions::access_log`): one line per request on the
//! container's stderr, where `kubectl logs` shows it next to what the guest prints, in the
//! Common Log Format with the request's duration added:
//!
//! ```text
//! 10.244.0.7 - - [30/Nov/2026:06:01:02 +0000] "GET /hello?x=1 HTTP/1.1" 200 21 0.000412
//! ```
//!
//! The client's address, `-` `-` (no identity, no user), when the request arrived (UTC), the
//! request line as the client sent it, the status, the body bytes sent and the seconds from the
//! request's arrival until its body was sent (or dropped: a client gone, a guest that failed
//! mid-body). The line is written when hyper is done with the response body, so the bytes are
//! those sent. The shim's own answers (503, 504, 500, 413) are logged like the guest's; hyper's
//! 400 for a malformed request never reaches the server and is not.
//!
//! What a hostile client or guest could do to these lines, and what stops it:
//! - The request line is the client's: a byte outside printable ASCII, `"` and `\` are written
//!   `\xHH`, and a target longer than [`MAX_TARGET`] is cut (`...` marks it), so a line cannot be
//!   split, extended with forged fields, or made longer than one atomic pipe write.
//! - The guest writes to the same stderr. Each access line is one `write` under the lock of the
//!   process's stderr, which the guest's own writes take too (see [`GuestStderr`]): the two never
//!   interleave inside a line. A guest that leaves a line unfinished (no newline) would have the
//!   next access line glued to its text, hiding it from a parser that reads lines from their
//!   start: the server ends the guest's line first. That one newline is the only change to the
//!   guest's output, and only with the access log on.
//! - Status, bytes, duration and peer are measured by the server, not reported by the guest.
//!   A guest can still print text that looks like an access line (as any program in a container
//!   can print anything on its own stderr); the log cannot make that impossible.

use std::io::Write;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use crate::host::Stdio;

/// The longest request target written whole, in bytes after escaping: keeps every line shorter
/// than `PIPE_BUF` (4096), which a pipe writes atomically.
pub(crate) const MAX_TARGET: usize = 2048;

/// Where the lines go.
enum Sink {
    /// The process's stderr (the container's stderr FIFO in the shim).
    Stderr {
        /// The guest's last write to stderr did not end its line.
        mid_line: Arc<AtomicBool>,
    },
    /// The guest's captured stderr (in-process tests).
    Pipe(MemoryOutputPipe),
}

/// The server's access log.
pub(crate) struct AccessLog {
    sink: Sink,
}

impl AccessLog {
    /// Lines go where the guest's stderr goes.
    pub(crate) fn new(stdio: &Stdio) -> AccessLog {
        let sink = match stdio {
            Stdio::Inherit => Sink::Stderr { mid_line: Arc::new(AtomicBool::new(false)) },
            Stdio::Capture(c) => Sink::Pipe(c.stderr_pipe()),
        };
        AccessLog { sink }
    }

    /// Gives a request's guest the stderr that keeps track of its unfinished lines.
    pub(crate) fn guest_stderr(&self, b: &mut WasiCtxBuilder) {
        if let Sink::Stderr { mid_line } = &self.sink {
            b.stderr(GuestStderr(mid_line.clone()));
        }
    }

    /// Writes `line` (which ends with a newline) at the start of a line of the container's
    /// stderr, in one write. Also for the server's own messages while the access log is on.
    pub(crate) fn write_line(&self, line: &str) {
        match &self.sink {
            Sink::Stderr { mid_line } => {
                let mut err = std::io::stderr().lock();
                // Under the lock the guest's writes take too: nothing lands between the check
                // and the write.
                let r = if mid_line.swap(false, Ordering::Relaxed) {
                    err.write_all(format!("\n{line}").as_bytes())
                } else {
                    err.write_all(line.as_bytes())
                };
                drop(r);
            }
            Sink::Pipe(p) => {
                let mut p = p.clone();
                let unfinished = p.contents().last().is_some_and(|b| *b != b'\n');
                let text = if unfinished { format!("\n{line}") } else { line.to_string() };
                let _ = p.write(Bytes::from(text));
            }
        }
    }

    /// The response to `request`, logged when hyper is done with its body.
    pub(crate) fn wrap(
        self: &Arc<Self>,
        request: Request,
        response: hyper::Response<HyperOutgoingBody>,
    ) -> hyper::Response<HyperOutgoingBody> {
        let status = response.status().as_u16();
        response.map(|inner| {
            Logged { inner, bytes: 0, status, request: Some(request), log: self.clone() }.boxed_unsync()
        })
    }
}

/// What the line says about the request, taken when it arrives.
pub(crate) struct Request {
    arrived: Instant,
    at: time::OffsetDateTime,
    peer: SocketAddr,
    line: String,
}

impl Request {
    pub(crate) fn of<B>(req: &hyper::Request<B>, peer: SocketAddr) -> Request {
        let mut line = String::with_capacity(64);
        escape_into(&mut line, req.method().as_str().as_bytes(), usize::MAX);
        line.push(' ');
        // As sent: origin-form (`/p?q`), or absolute-form (`http://h/p`) from a proxy client.
        let target = match req.uri().path_and_query() {
            Some(pq) if req.uri().scheme().is_none() => pq.as_str().to_string(),
            _ => req.uri().to_string(),
        };
        escape_into(&mut line, target.as_bytes(), MAX_TARGET);
        line.push(' ');
        line.push_str(match req.version() {
            http::Version::HTTP_10 => "HTTP/1.0",
            http::Version::HTTP_11 => "HTTP/1.1",
            http::Version::HTTP_09 => "HTTP/0.9",
            _ => "HTTP/?",
        });
        Request { arrived: Instant::now(), at: time::OffsetDateTime::now_utc(), peer, line }
    }
}

/// `text` with every byte outside printable ASCII, `"` and `\` written `\xHH`; past `max` bytes
/// of output the rest becomes `...`.
fn escape_into(out: &mut String, text: &[u8], max: usize) {
    let start = out.len();
    for &b in text {
        if out.len() - start >= max {
            out.push_str("...");
            return;
        }
        if (0x21..=0x7e).contains(&b) && b != b'"' && b != b'\\' {
            out.push(b as char);
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
}

const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/// One access line, newline included.
fn format_line(r: &Request, status: u16, bytes: u64, seconds: f64) -> String {
    let t = r.at;
    format!(
        "{} - - [{:02}/{}/{}:{:02}:{:02}:{:02} +0000] \"{}\" {status} {bytes} {seconds:.6}\n",
        r.peer.ip().to_canonical(),
        t.day(),
        MONTHS[usize::from(u8::from(t.month())) - 1],
        t.year(),
        t.hour(),
        t.minute(),
        t.second(),
        r.line,
    )
}

/// A response body that counts what hyper takes from it and logs the request when dropped.
struct Logged {
    inner: HyperOutgoingBody,
    bytes: u64,
    status: u16,
    request: Option<Request>,
    log: Arc<AccessLog>,
}

impl Body for Logged {
    type Data = Bytes;
    type Error = <HyperOutgoingBody as Body>::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                self.bytes += data.len() as u64;
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        if let Some(r) = self.request.take() {
            let line = format_line(&r, self.status, self.bytes, r.arrived.elapsed().as_secs_f64());
            self.log.write_line(&line);
        }
    }
}

/// The guest's stderr while the access log is on: the process's stderr, noting whether the
/// guest's last write ended its line. Each write holds the stderr lock (as wasmtime's own
/// stderr does), so an access line never lands inside one.
#[derive(Clone)]
struct GuestStderr(Arc<AtomicBool>);

impl GuestStderr {
    fn write(&self, bytes: &[u8]) -> std::io::Result<()> {
        let mut err = std::io::stderr().lock();
        err.write_all(bytes)?;
        if let Some(last) = bytes.last() {
            self.0.store(*last != b'\n', Ordering::Relaxed);
        }
        Ok(())
    }
}

impl IsTerminal for GuestStderr {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestStderr {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for GuestStderr {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        GuestStderr::write(self, &bytes).map_err(|e| StreamError::LastOperationFailed(e.into()))
    }
    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }
    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(1 << 20)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestStderr {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for GuestStderr {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Poll::Ready(GuestStderr::write(&self, buf).map(|()| buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, target: &str) -> Request {
        let req = hyper::Request::builder().method(method).uri(target).body(()).unwrap();
        let mut r = Request::of(&req, "[::ffff:10.0.0.7]:5000".parse().unwrap());
        let date = time::Date::from_calendar_date(2026, time::Month::November, 30).unwrap();
        r.at = date.with_hms(6, 1, 2).unwrap().assume_utc();
        r
    }

    #[test]
    fn common_log_format_with_the_duration() {
        let line = format_line(&request("GET", "/hello?x=1"), 200, 21, 0.000412);
        assert_eq!(line, "10.0.0.7 - - [30/Nov/2026:06:01:02 +0000] \"GET /hello?x=1 HTTP/1.1\" 200 21 0.000412\n");
        let line = format_line(&request("POST", "http://example.com/a"), 503, 0, 1.5);
        assert!(line.ends_with("\"POST http://example.com/a HTTP/1.1\" 503 0 1.500000\n"), "{line}");
    }

    #[test]
    fn a_client_cannot_split_or_extend_a_line() {
        // What http's parser lets through is printable; still, quotes and backslashes (and
        // anything else) are escaped, so a target cannot close the quoted request line.
        let line = format_line(&request("GET", "/a\"%20200%2099\\b"), 404, 0, 0.0);
        assert!(line.contains("\"GET /a\\x22%20200%2099\\x5cb HTTP/1.1\" 404 0"), "{line}");
        let mut s = String::new();
        escape_into(&mut s, b"x\ny\r\x1b[31m\xff", usize::MAX);
        assert_eq!(s, "x\\x0ay\\x0d\\x1b[31m\\xff");
        // A huge target is cut: every line stays one atomic pipe write.
        let long = format!("/{}", "a".repeat(10_000));
        let line = format_line(&request("GET", &long), 200, 0, 0.0);
        assert!(line.len() < 4096 && line.contains("aaa... HTTP/1.1\""), "{}", line.len());
    }

    #[test]
    fn a_line_starts_on_a_line_of_its_own() {
        let capture = crate::host::Capture::new(Vec::new());
        let log = AccessLog::new(&Stdio::Capture(capture.clone()));
        let mut guest = capture.stderr_pipe();
        // A guest that leaves a line unfinished, made to look like an access line.
        let _ = guest.write(Bytes::from_static(b"10.9.9.9 - - [01/Jan/2026:00:00:00 +0000] \"GET /forged HTTP/1.1\" 200 1 "));
        log.write_line("real line\n");
        log.write_line("second\n");
        assert_eq!(
            String::from_utf8(capture.stderr()).unwrap(),
            "10.9.9.9 - - [01/Jan/2026:00:00:00 +0000] \"GET /forged HTTP/1.1\" 200 1 \nreal line\nsecond\n"
        );
    }
}
