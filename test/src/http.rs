//! A small HTTP client for the serving tests: ureq for ordinary requests (statuses are values,
//! not errors), raw TCP for what a client library would not send (malformed requests, two
//! requests on one connection).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// A response, read whole.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:?}", self.status, self.body)
    }
}

fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .build()
        .new_agent()
}

fn reply(mut r: ureq::http::Response<ureq::Body>) -> Result<Reply> {
    let status = r.status().as_u16();
    let headers = r
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let body = r.body_mut().read_to_string().context("reading the body")?;
    Ok(Reply { status, headers, body })
}

/// GET `url` with extra headers.
pub fn get_with(url: &str, headers: &[(&str, &str)], timeout: Duration) -> Result<Reply> {
    let mut req = agent(timeout).get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    reply(req.call().with_context(|| format!("GET {url}"))?)
}

pub fn get(url: &str) -> Result<Reply> {
    get_with(url, &[], Duration::from_secs(20))
}

/// POST `body` as `content_type`.
pub fn post(url: &str, content_type: &str, body: &str) -> Result<Reply> {
    let r = agent(Duration::from_secs(20))
        .post(url)
        .header("content-type", content_type)
        .send(body)
        .with_context(|| format!("POST {url}"))?;
    reply(r)
}

/// GETs `url` until it answers (any status) or `timeout` passes; returns the answer and when
/// it came.
pub fn wait_until_serving(url: &str, timeout: Duration) -> Result<(Reply, Instant)> {
    let deadline = Instant::now() + timeout;
    loop {
        match get_with(url, &[], Duration::from_secs(5)) {
            Ok(r) => return Ok((r, Instant::now())),
            Err(e) if Instant::now() > deadline => return Err(e.context(format!("not serving within {timeout:?}"))),
            Err(_) => std::thread::sleep(Duration::from_millis(2)),
        }
    }
}

/// Writes `bytes` to `addr` and reads until the server closes or `timeout` passes.
pub fn raw(addr: SocketAddr, bytes: &[u8], timeout: Duration) -> Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).with_context(|| format!("connect {addr}"))?;
    s.set_read_timeout(Some(timeout))?;
    s.write_all(bytes)?;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => break,
            Err(e) if out.is_empty() => bail!("read from {addr}: {e}"),
            Err(_) => break,
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// A one-route upstream for outbound calls: answers every request `200 upstream says hi`.
/// Returns its port; it serves until the process ends.
pub fn upstream() -> Result<u16> {
    Ok(recording_upstream()?.0)
}

/// The same, keeping the head (request line and headers) of each request it gets.
pub fn recording_upstream() -> Result<(u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>)> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let heads = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = heads.clone();
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            let kept = kept.clone();
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                kept.lock().unwrap().push(String::from_utf8_lossy(&buf).into_owned());
                let body = "upstream says hi";
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    Ok((port, heads))
}
