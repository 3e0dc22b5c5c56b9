//! An OTLP/HTTP traces receiver for the traces trials and the bench: a listener on 127.0.0.1
//! that takes `POST /v1/traces` (`application/x-protobuf`), decodes each body as an
//! `ExportTraceServiceRequest` with OpenTelemetry's own protobuf definitions
//! (`opentelemetry-proto`), keeps the spans and answers 200 with an empty
//! `ExportTraceServiceResponse`. Anything it cannot decode is kept as an error, so a trial can
//! say what arrived.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use prost::Message;

/// One span as it arrived, flattened with its resource.
#[derive(Debug, Clone)]
pub struct Span {
    pub name: String,
    /// `SPAN_KIND_*` as the proto numbers it: 1 internal, 2 server, 3 client.
    pub kind: i32,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    pub attributes: HashMap<String, String>,
    pub resource: HashMap<String, String>,
    /// 0 unset, 1 ok, 2 error.
    pub status: i32,
    pub start_ns: u64,
    pub end_ns: u64,
}

pub const KIND_INTERNAL: i32 = 1;
pub const KIND_SERVER: i32 = 2;
pub const KIND_CLIENT: i32 = 3;

impl Span {
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

#[derive(Default)]
struct Kept {
    /// Only count the spans (a sink for the bench), do not keep them.
    count_only: bool,
    spans: Vec<Span>,
    counted: usize,
    posts: usize,
    errors: Vec<String>,
}

/// The receiver; it serves until the process ends.
#[derive(Clone)]
pub struct Receiver {
    pub port: u16,
    kept: Arc<Mutex<Kept>>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn map(kvs: &[KeyValue]) -> HashMap<String, String> {
    kvs.iter().map(|kv| (kv.key.clone(), text(&kv.value))).collect()
}

/// The spans of an OTLP/HTTP protobuf body.
pub fn decode(body: &[u8]) -> Result<Vec<Span>> {
    let req = ExportTraceServiceRequest::decode(body)?;
    let mut out = Vec::new();
    for rs in req.resource_spans {
        let resource = rs.resource.as_ref().map(|r| map(&r.attributes)).unwrap_or_default();
        for ss in rs.scope_spans {
            for s in ss.spans {
                out.push(Span {
                    name: s.name,
                    kind: s.kind,
                    trace_id: hex(&s.trace_id),
                    span_id: hex(&s.span_id),
                    parent_span_id: hex(&s.parent_span_id),
                    attributes: map(&s.attributes),
                    resource: resource.clone(),
                    status: s.status.map_or(0, |st| st.code),
                    start_ns: s.start_time_unix_nano,
                    end_ns: s.end_time_unix_nano,
                });
            }
        }
    }
    Ok(out)
}

impl Receiver {
    pub fn start() -> Result<Receiver> {
        Receiver::start_keeping(true)
    }

    /// A receiver that decodes and counts the spans but keeps none ([`Receiver::counted`]).
    pub fn sink() -> Result<Receiver> {
        Receiver::start_keeping(false)
    }

    /// A receiver on `127.0.0.1:port` of another network namespace (`netns`, such as
    /// `/proc/<pid>/ns/net` of a pod's process): the pod's own loopback, where a collector
    /// sidecar would listen.
    pub fn start_in_netns(netns: &std::path::Path, port: u16) -> Result<Receiver> {
        let netns = netns.to_path_buf();
        // A thread of its own enters the namespace (setns changes the calling thread only)
        // and ends once the socket is bound: the socket stays in that namespace.
        let listener = std::thread::spawn(move || -> Result<TcpListener> {
            use std::os::fd::AsRawFd;
            let ns = std::fs::File::open(&netns)?;
            // SAFETY: setns with a valid descriptor; it affects only this short-lived thread.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                bail!("setns {}: {}", netns.display(), std::io::Error::last_os_error());
            }
            Ok(TcpListener::bind(("127.0.0.1", port))?)
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the setns thread panicked"))??;
        Receiver::serve(listener, true)
    }

    fn start_keeping(keep: bool) -> Result<Receiver> {
        Receiver::serve(TcpListener::bind("127.0.0.1:0")?, keep)
    }

    fn serve(listener: TcpListener, keep: bool) -> Result<Receiver> {
        let port = listener.local_addr()?.port();
        let kept = Arc::new(Mutex::new(Kept { count_only: !keep, ..Kept::default() }));
        let k = kept.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let k = k.clone();
                std::thread::spawn(move || {
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                    let mut w = match stream.try_clone() {
                        Ok(w) => w,
                        Err(_) => return,
                    };
                    let mut r = BufReader::new(stream);
                    // Keep-alive: one request after another on the connection.
                    loop {
                        let mut line = String::new();
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let target = line.split_whitespace().nth(1).unwrap_or("").to_string();
                        let mut len = 0usize;
                        let mut content_type = String::new();
                        loop {
                            let mut h = String::new();
                            if r.read_line(&mut h).unwrap_or(0) == 0 {
                                return;
                            }
                            let h = h.trim_end();
                            if h.is_empty() {
                                break;
                            }
                            if let Some((name, value)) = h.split_once(':') {
                                match name.trim().to_ascii_lowercase().as_str() {
                                    "content-length" => len = value.trim().parse().unwrap_or(0),
                                    "content-type" => content_type = value.trim().to_string(),
                                    _ => {}
                                }
                            }
                        }
                        let mut body = vec![0u8; len];
                        if r.read_exact(&mut body).is_err() {
                            return;
                        }
                        {
                            let mut kept = k.lock().unwrap();
                            kept.posts += 1;
                            if target != "/v1/traces" || content_type != "application/x-protobuf" {
                                kept.errors.push(format!("POST {target} ({content_type})"));
                            } else {
                                match decode(&body) {
                                    Ok(spans) => {
                                        kept.counted += spans.len();
                                        if !kept.count_only {
                                            kept.spans.extend(spans);
                                        }
                                    }
                                    Err(e) => kept.errors.push(format!("undecodable body of {len} bytes: {e}")),
                                }
                            }
                        }
                        let answer = ExportTraceServiceRequest::default().encode_to_vec();
                        let head = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: {}\r\n\r\n",
                            answer.len()
                        );
                        if w.write_all(head.as_bytes()).and_then(|_| w.write_all(&answer)).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Ok(Receiver { port, kept })
    }

    /// `OTEL_EXPORTER_OTLP_ENDPOINT` for this receiver.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn spans(&self) -> Vec<Span> {
        self.kept.lock().unwrap().spans.clone()
    }

    /// Spans received in all.
    pub fn counted(&self) -> usize {
        self.kept.lock().unwrap().counted
    }

    /// Export requests received (decoded or not).
    pub fn posts(&self) -> usize {
        self.kept.lock().unwrap().posts
    }

    pub fn errors(&self) -> Vec<String> {
        self.kept.lock().unwrap().errors.clone()
    }

    /// Waits until `found` finds what it looks for in the spans received, up to `timeout`.
    pub fn wait_for<T>(&self, timeout: Duration, what: &str, found: impl Fn(&[Span]) -> Option<T>) -> Result<T> {
        let deadline = Instant::now() + timeout;
        loop {
            let spans = self.spans();
            if let Some(t) = found(&spans) {
                return Ok(t);
            }
            if Instant::now() > deadline {
                let names: Vec<String> = spans.iter().map(|s| format!("{} {} parent={:?} {:?}", s.name, s.trace_id, s.parent_span_id, s.attributes)).collect();
                bail!("{what}: not received within {timeout:?}; errors {:?}; spans:\n{}", self.errors(), names.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
