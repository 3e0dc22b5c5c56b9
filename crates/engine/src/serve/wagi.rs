//! WAGI: a WASI preview 1 command run once per request, CGI-style. The request's meta-variables
//! join the container's environment, the body is stdin, stdout is parsed as a CGI response
//! (`cgi`), stderr goes to the container's log.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use tokio::time::Instant;
use wasmtime::Store;
use wasmtime_wasi::p2::pipe::{MemoryInputPipe, MemoryOutputPipe};
use wasmtime_wasi::I32Exit;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use super::cgi::{self, CgiRequest};
use super::request::{full, plain, App};
use crate::host::P1State;
use crate::limits::Limiter;
use crate::outcome::classify;

/// Most a program may write to stdout for one response, and never more than its request's
/// memory (`ServeLimits::request_memory`): the output is held by the host, outside the
/// guest's memory, until the response is made.
const MAX_OUTPUT: usize = 64 << 20;

/// Serves one request by running the module's `_start`.
pub(crate) async fn handle(
    app: &App,
    pre: &wasmtime::InstancePre<P1State>,
    entry: &str,
    req: hyper::Request<hyper::body::Incoming>,
    peer: SocketAddr,
    mut permit: super::Slot,
    deadline: Instant,
) -> hyper::Response<HyperOutgoingBody> {
    let label = format!("{} {}", req.method(), req.uri().path());
    let (parts, body) = req.into_parts();
    let limit = usize::try_from(app.limits.max_body).unwrap_or(usize::MAX);
    let body: Bytes = match tokio::time::timeout_at(deadline, Limited::new(body, limit).collect()).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return plain(413, &format!("request body larger than {} bytes\n", app.limits.max_body))
        }
        Ok(Err(e)) => return plain(400, &format!("cannot read the request body: {e}\n")),
        Err(_) => return app.timed_out(&label),
    };

    let headers: Vec<(&str, &str)> = parts
        .headers
        .iter()
        .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str(), v)))
        .collect();
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let protocol = format!("{:?}", parts.version);
    let meta = cgi::environment(&CgiRequest {
        method: parts.method.as_str(),
        target,
        headers,
        content_length: body.len(),
        remote_addr: peer.ip().to_string(),
        server_port: app.port,
        protocol: &protocol,
    });

    let stdout = MemoryOutputPipe::new(usize::try_from(app.limits.request_memory).unwrap_or(usize::MAX).min(MAX_OUTPUT));
    let wasi = match app.wasi_builder_with_env(&meta) {
        Ok(mut b) => b.stdin(MemoryInputPipe::new(body)).stdout(stdout.clone()).build_p1(),
        Err(m) => return app.failed(&label, &m),
    };
    let mut store = Store::new(
        pre.module().engine(),
        P1State {
            wasi,
            limiter: Limiter::new(Some(app.limits.request_memory)),
        },
    );
    store.limiter(|s| &mut s.limiter);
    store.set_epoch_deadline(1);
    store.epoch_deadline_async_yield_and_update(1);
    let run = async {
        let instance = pre.instantiate_async(&mut store).await?;
        let func = instance.get_typed_func::<(), ()>(&mut store, entry)?;
        func.call_async(&mut store, ()).await
    };
    let result = tokio::time::timeout_at(deadline, run).await;
    if let Some(m) = &app.metrics {
        m.instance_memory(store.data().limiter.linear_bytes);
    }
    match result {
        Err(_) => return app.timed_out(&label),
        Ok(Ok(())) => {}
        Ok(Err(e)) => match e.downcast_ref::<I32Exit>() {
            Some(I32Exit(0)) => {}
            Some(I32Exit(code)) => return app.failed(&label, &format!("exited with status {code}")),
            None => {
                let outcome = classify(&e, store.data().limiter.hit.as_ref(), None, false);
                return app.failed(&label, &outcome.to_string());
            }
        },
    }
    // Torn down once the connection has written the response (see `proxy::handle`): a task
    // spawned now runs after this one's turn, in which hyper writes it. The instance goes
    // first, then its slot (a tuple drops in order, also if the task never runs).
    permit.tearing_down();
    let teardown = (store, permit);
    tokio::spawn(async move { drop(teardown) });
    let out = stdout.contents();
    match cgi::parse_response(&out) {
        Ok(r) => {
            let mut builder = hyper::Response::builder().status(r.status);
            for (name, value) in &r.headers {
                builder = builder.header(name.as_str(), value.as_str());
            }
            builder
                .body(full(out.slice(r.body_start..)))
                .unwrap_or_else(|e| app.failed(&label, &format!("bad response header: {e}")))
        }
        Err(e) => app.failed(&label, &e.to_string()),
    }
}
