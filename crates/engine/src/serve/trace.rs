//! Request spans (`ServeOptions::tracing`): one SERVER span per request, named and attributed
//! after OpenTelemetry's HTTP semantic conventions, continuing the W3C `traceparent` the request
//! came with (same trace, the caller's span as parent) or starting a trace; and a CLIENT span
//! per outbound `wasi:http` request of the guest, whose context the request carries on in its
//! `traceparent` (set by the host after the guest built the request: whatever `traceparent` or
//! `tracestate` the guest put there is replaced, so a guest cannot claim another parent).
//!
//! The tracer (and where its spans go) is the caller's; the spans end when hyper is done with
//! the response body (server) or when the upstream's response head arrived (client). Without
//! `ServeOptions::tracing` nothing here runs: the server checks one `Option` per request.

use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, Span};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

/// Request tracing of a served workload: the tracer its spans are made with.
#[derive(Clone, Debug)]
pub struct RequestTracing {
    tracer: SdkTracer,
}

impl RequestTracing {
    pub fn new(tracer: SdkTracer) -> RequestTracing {
        RequestTracing { tracer }
    }

    /// The SERVER span of `req`, started now: a child of the request's `traceparent` if it
    /// has a valid one, else the root of a new trace.
    pub(crate) fn server_span<B>(&self, req: &hyper::Request<B>, port: u16, peer: std::net::SocketAddr) -> ServerSpan {
        let parent = TraceContextPropagator::new().extract(&Headers(req.headers()));
        let (name, method) = method_name(req.method());
        let mut attributes = Vec::with_capacity(7);
        attributes.push(KeyValue::new("http.request.method", method));
        if name == "HTTP" {
            attributes.push(KeyValue::new("http.request.method_original", req.method().as_str().to_string()));
        }
        attributes.push(KeyValue::new("url.path", bounded(req.uri().path())));
        attributes.push(KeyValue::new("url.scheme", "http"));
        attributes.push(KeyValue::new("server.port", i64::from(port)));
        attributes.push(KeyValue::new("client.address", peer.ip().to_canonical().to_string()));
        attributes.push(KeyValue::new("network.protocol.version", version(req.version())));
        let span = self
            .tracer
            .span_builder(name)
            .with_kind(SpanKind::Server)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, &parent);
        let context = Context::new().with_remote_span_context(span.span_context().clone());
        ServerSpan { span, client: ClientTrace { tracer: self.tracer.clone(), parent: context } }
    }
}

/// The span of one request being served.
pub(crate) struct ServerSpan {
    span: Span,
    /// What the guest's outbound requests are children of.
    client: ClientTrace,
}

impl ServerSpan {
    /// The parent of the guest's outbound requests.
    pub(crate) fn client(&self) -> &ClientTrace {
        &self.client
    }

    /// `response`, whose status the span records; the span ends when hyper is done with the
    /// body (at its end, an error, or when it is dropped).
    pub(crate) fn wrap(mut self, response: hyper::Response<HyperOutgoingBody>) -> hyper::Response<HyperOutgoingBody> {
        let status = response.status().as_u16();
        self.span.set_attribute(KeyValue::new("http.response.status_code", i64::from(status)));
        // A server span is in error for 5xx only (4xx are the client's).
        if status >= 500 {
            self.span.set_status(Status::error(""));
            self.span.set_attribute(KeyValue::new("error.type", status.to_string()));
        }
        let span = self.span;
        response.map(|inner| Traced { inner, span }.boxed_unsync())
    }
}

/// What an outbound request of a guest is a child of.
#[derive(Clone, Debug)]
pub(crate) struct ClientTrace {
    tracer: SdkTracer,
    parent: Context,
}

impl ClientTrace {
    /// Starts the CLIENT span of an outbound request to `port` and sets its `traceparent` (and
    /// the trace's `tracestate`) on the request, replacing the guest's own.
    pub(crate) fn start<B>(&self, request: &mut http::Request<B>, port: u16) -> Span {
        let (name, method) = method_name(request.method());
        let uri = request.uri();
        let scheme = uri.scheme_str().unwrap_or("http");
        let mut attributes = vec![
            KeyValue::new("http.request.method", method),
            // Without the query (it may hold secrets) and without userinfo.
            KeyValue::new("url.full", bounded(&(format!("{scheme}://{}{}", uri.host().unwrap_or(""), uri.port().map(|p| format!(":{p}")).unwrap_or_default()) + uri.path()))),
            KeyValue::new("server.address", bounded(uri.host().unwrap_or(""))),
            KeyValue::new("server.port", i64::from(port)),
        ];
        if name == "HTTP" {
            attributes.push(KeyValue::new("http.request.method_original", request.method().as_str().to_string()));
        }
        let span = self
            .tracer
            .span_builder(name)
            .with_kind(SpanKind::Client)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, &self.parent);
        inject(span.span_context(), request.headers_mut());
        span
    }
}

/// Sets `traceparent` and `tracestate` for `context` on `headers`, replacing any there; removes
/// both when `context` is not valid (nothing to carry on, and nothing the guest set may stay).
pub(crate) fn inject(context: &opentelemetry::trace::SpanContext, headers: &mut http::HeaderMap) {
    headers.remove("traceparent");
    headers.remove("tracestate");
    let cx = Context::new().with_remote_span_context(context.clone());
    TraceContextPropagator::new().inject_context(&cx, &mut HeadersMut(headers));
    // The propagator always sets a `tracestate`, empty when there is none.
    if headers.get("tracestate").is_some_and(|v| v.is_empty()) {
        headers.remove("tracestate");
    }
}

/// Records how an outbound request ended on its span, and ends it.
pub(crate) fn client_ended(mut span: Span, status: Result<u16, String>) {
    match status {
        Ok(code) => {
            span.set_attribute(KeyValue::new("http.response.status_code", i64::from(code)));
            if code >= 400 {
                span.set_status(Status::error(""));
                span.set_attribute(KeyValue::new("error.type", code.to_string()));
            }
        }
        Err(why) => {
            span.set_attribute(KeyValue::new("error.type", why.clone()));
            span.set_status(Status::error(why));
        }
    }
    span.end();
}

/// The longest text a span takes from a request (a path, a URL): past it, cut and marked `...`,
/// so a client or a guest cannot make spans of any size.
const MAX_TEXT: usize = 2048;

fn bounded(text: &str) -> String {
    if text.len() <= MAX_TEXT {
        return text.to_string();
    }
    let mut end = MAX_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

/// The span name and `http.request.method` of a method: the method for the ones the HTTP RFCs
/// define, `HTTP` and `_OTHER` for any other (a client chooses methods: no unbounded names).
fn method_name(m: &http::Method) -> (&'static str, &'static str) {
    let known = match *m {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::DELETE => "DELETE",
        http::Method::HEAD => "HEAD",
        http::Method::OPTIONS => "OPTIONS",
        http::Method::PATCH => "PATCH",
        http::Method::TRACE => "TRACE",
        http::Method::CONNECT => "CONNECT",
        _ => return ("HTTP", "_OTHER"),
    };
    (known, known)
}

fn version(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_11 => "1.1",
        http::Version::HTTP_2 => "2",
        _ => "",
    }
}

struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

struct HeadersMut<'a>(&'a mut http::HeaderMap);

impl Injector for HeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (http::HeaderName::from_bytes(key.as_bytes()), http::HeaderValue::from_str(&value)) {
            self.0.insert(k, v);
        }
    }
}

/// A response body whose span ends when it is dropped.
struct Traced {
    inner: HyperOutgoingBody,
    span: Span,
}

impl Body for Traced {
    type Data = Bytes;
    type Error = <HyperOutgoingBody as Body>::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Err(e))) = &polled {
            let why = e.to_string();
            self.span.set_status(Status::error(why));
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A response to wrap (the server's own `plain`, without depending on the serving module).
    fn plain(status: u16, text: &str) -> hyper::Response<HyperOutgoingBody> {
        let body = http_body_util::Full::new(Bytes::copy_from_slice(text.as_bytes())).map_err(|never| match never {}).boxed_unsync();
        let mut r = hyper::Response::new(body);
        *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
        r
    }
    use opentelemetry::trace::{SpanId, TraceId};
    use opentelemetry_sdk::error::OTelSdkResult;
    use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
    use std::sync::{Arc, Mutex};

    /// Keeps what it is given (the tests' exporter).
    #[derive(Debug, Clone, Default)]
    pub(crate) struct Kept(pub(crate) Arc<Mutex<Vec<SpanData>>>);

    impl SpanExporter for Kept {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            self.0.lock().unwrap().extend(batch);
            Ok(())
        }
    }

    /// A tracer whose spans are exported as each ends, into the returned list.
    pub(crate) fn tracing() -> (RequestTracing, Kept, SdkTracerProvider) {
        let kept = Kept::default();
        let provider = SdkTracerProvider::builder().with_simple_exporter(kept.clone()).build();
        use opentelemetry::trace::TracerProvider as _;
        (RequestTracing::new(provider.tracer("test")), kept, provider)
    }

    fn attr(s: &SpanData, key: &str) -> Option<String> {
        s.attributes.iter().find(|kv| kv.key.as_str() == key).map(|kv| kv.value.to_string())
    }

    #[test]
    fn a_request_continues_its_traceparent() {
        let (t, kept, _p) = tracing();
        let req = hyper::Request::builder()
            .method("POST")
            .uri("/a/b?secret=1")
            .header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
            .body(())
            .unwrap();
        let span = t.server_span(&req, 8080, "[::ffff:10.0.0.7]:5000".parse().unwrap());
        let child = span.client().parent.span().span_context().clone();
        drop(span.wrap(plain(503, "busy\n")));
        let spans = kept.0.lock().unwrap().clone();
        assert_eq!(spans.len(), 1);
        let s = &spans[0];
        assert_eq!(s.name, "POST");
        assert_eq!(s.span_kind, SpanKind::Server);
        assert_eq!(s.span_context.trace_id(), TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap());
        assert_eq!(s.parent_span_id, SpanId::from_hex("00f067aa0ba902b7").unwrap());
        assert_eq!(s.span_context.span_id(), child.span_id());
        assert_eq!(attr(s, "url.path").as_deref(), Some("/a/b"));
        assert_eq!(attr(s, "http.response.status_code").as_deref(), Some("503"));
        assert_eq!(attr(s, "client.address").as_deref(), Some("10.0.0.7"));
        assert!(matches!(s.status, Status::Error { .. }));
    }

    #[test]
    fn what_a_span_takes_from_a_request_is_bounded() {
        let (t, kept, _p) = tracing();
        let long = format!("/{}", "a".repeat(10_000));
        let req = hyper::Request::builder().uri(long.as_str()).body(()).unwrap();
        drop(t.server_span(&req, 80, "127.0.0.1:1".parse().unwrap()).wrap(plain(404, "no\n")));
        let path = attr(&kept.0.lock().unwrap()[0], "url.path").unwrap();
        assert_eq!(path.len(), MAX_TEXT + 3);
        assert!(path.ends_with("aaa..."));
        assert_eq!(bounded("/short"), "/short");
    }

    #[test]
    fn a_request_without_a_valid_traceparent_starts_a_trace() {
        let (t, kept, _p) = tracing();
        for tp in [None, Some("garbage"), Some("00-00000000000000000000000000000000-00f067aa0ba902b7-01")] {
            let mut req = hyper::Request::builder().method("BREW").uri("/");
            if let Some(tp) = tp {
                req = req.header("traceparent", tp);
            }
            let span = t.server_span(&req.body(()).unwrap(), 80, "127.0.0.1:1".parse().unwrap());
            drop(span.wrap(plain(200, "ok\n")));
        }
        let spans = kept.0.lock().unwrap().clone();
        assert_eq!(spans.len(), 3);
        for s in &spans {
            assert_eq!(s.parent_span_id, SpanId::INVALID);
            assert!(s.span_context.trace_id() != TraceId::INVALID);
            // A method nobody defined is not a span name.
            assert_eq!(s.name, "HTTP");
            assert_eq!(attr(s, "http.request.method").as_deref(), Some("_OTHER"));
        }
        assert_ne!(spans[0].span_context.trace_id(), spans[1].span_context.trace_id());
    }

    #[test]
    fn an_outbound_request_carries_its_client_span_whatever_the_guest_set() {
        let (t, kept, _p) = tracing();
        let incoming = hyper::Request::builder()
            .uri("/")
            .header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
            .body(())
            .unwrap();
        let server = t.server_span(&incoming, 80, "127.0.0.1:1".parse().unwrap());
        // The guest tries to name another trace and parent.
        let mut out = http::Request::builder()
            .uri("http://upstream.example:8080/x?token=s")
            .header("traceparent", "00-11111111111111111111111111111111-2222222222222222-01")
            .header("tracestate", "forged=1")
            .body(())
            .unwrap();
        let span = server.client().start(&mut out, 8080);
        let client_id = span.span_context().span_id();
        client_ended(span, Ok(201));
        drop(server.wrap(plain(200, "ok\n")));
        let tp: Vec<_> = out.headers().get_all("traceparent").iter().collect();
        assert_eq!(tp.len(), 1);
        assert_eq!(tp[0].to_str().unwrap(), format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{client_id}-01"));
        assert!(out.headers().get("tracestate").is_none());
        let spans = kept.0.lock().unwrap().clone();
        let client = spans.iter().find(|s| s.span_kind == SpanKind::Client).unwrap();
        let server = spans.iter().find(|s| s.span_kind == SpanKind::Server).unwrap();
        assert_eq!(client.parent_span_id, server.span_context.span_id());
        assert_eq!(client.span_context.trace_id(), server.span_context.trace_id());
        assert_eq!(attr(client, "url.full").as_deref(), Some("http://upstream.example:8080/x"));
        assert_eq!(attr(client, "http.response.status_code").as_deref(), Some("201"));
        assert_eq!(attr(client, "server.port").as_deref(), Some("8080"));
    }
}
