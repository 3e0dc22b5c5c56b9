//! `wasi:http/proxy` components: the store of an instance (WASI p2, `wasi:http`, the memory
//! limit, the outbound allow-list as `wasi:http`'s send hook) and one request's life: an
//! instance (fresh from the `ProxyPre`, or an idle one kept for reuse), `incoming-handler.handle`,
//! the response the guest sets handed to hyper.
//!
//! Reuse (`ServeLimits::instance_reuse` above 1, `Reuse`): idle instances are kept, at most one
//! per request that may be in flight, and the most recently used is taken first. An instance
//! serves one request at a time: that request's task owns it. It goes back only once its handler
//! has returned (the guest may write the body after it set the response), and only if nothing
//! went wrong; it is retired (dropped) after its Nth request, a trap or handler error, the
//! memory cap, the deadline (the task is aborted with it), a response that was an error, never
//! set or whose body failed (known after the handler returned, so checked again when the
//! instance is taken), or when its handler returned still holding a piece of a request or a
//! response. Its linear memory stays bounded by the same cap across its requests. Idle
//! instances of code since upgraded are dropped when met; `Reuse::close` (the drain) drops all.

use std::sync::atomic::{AtomicBool, Ordering};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http_body_util::BodyExt;
use tokio::time::Instant;
use wasmtime::Store;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::WasiHttpView;

use super::request::App;
use super::reuse::Warm;
use super::reuse::Reuse;
use crate::host::ProxyState;
use crate::limits::Limiter;
use crate::metrics::Retired;
use crate::outcome::classify;

/// How a request's guest task ended without setting a response.
enum Ended {
    Done,
    Timeout,
    Failed(String),
}

/// Serves one request with an instance of the component: a fresh one, or an idle one when the
/// server reuses them.
pub(crate) async fn handle(
    app: &App,
    pre: &ProxyPre<ProxyState>,
    req: hyper::Request<hyper::body::Incoming>,
    permit: super::Slot,
    deadline: Instant,
    trace: Option<super::trace::ClientTrace>,
) -> hyper::Response<HyperOutgoingBody> {
    let label = format!("{} {}", req.method(), req.uri().path());
    let warm = app.reuse.as_ref().and_then(|r| r.take(pre));
    let (mut store, proxy, served, spoiled) = match warm {
        Some(w) => {
            if let Some(m) = &app.metrics {
                m.reused();
            }
            (w.store, Some(w.proxy), w.served, w.spoiled)
        }
        None => {
            let ctx = match app.wasi_builder() {
                Ok(mut b) => b.build(),
                Err(m) => return app.failed(&label, &m),
            };
            let limiter = Limiter::new(Some(app.limits.request_memory));
            let state =
                ProxyState::new(ctx, limiter, app.outbound.clone(), app.metrics.clone(), app.run.config.clone());
            let mut store = Store::new(pre.engine(), state);
            store.limiter(|s| &mut s.limiter);
            // Yield to tokio at every epoch tick: a spinning guest shares its worker thread and
            // its deadline below can fire.
            store.epoch_deadline_async_yield_and_update(1);
            (store, None, 0, Arc::new(AtomicBool::new(false)))
        }
    };
    // Counted from now, for a reused instance too.
    store.set_epoch_deadline(1);
    // This request's outbound calls are children of its span (a reused instance's too).
    if trace.is_some() {
        store.data_mut().trace_outbound(trace);
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (incoming, out) = {
        let mut http = store.data_mut().http();
        match (http.new_incoming_request(Scheme::Http, req), http.new_response_outparam(tx)) {
            (Ok(i), Ok(o)) => (i, o),
            (Err(e), _) | (_, Err(e)) => return app.failed(&label, &e.to_string()),
        }
    };
    let pre = pre.clone();
    let reuse = app.reuse.clone();
    let spoiled_by_response = spoiled.clone();
    // Ends when the task does (its sender is dropped): a reused instance's response ends only
    // then, so a keep-alive client's next request finds the instance (and its slot) free.
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    // The slot is marked when hyper is done with the response body (a fresh instance's, or a
    // 500 or 504 of the server's own): on a multi-thread server, hyper may read a pipelined
    // next request on another thread before this task reaches its teardown, and that request
    // then waits for the slot rather than a 503. It stays in flight until the handler returns.
    let mut permit = permit;
    let mark = permit.mark();
    // The guest runs in its own task: it may go on writing the body after it set the response.
    // The task owns the instance; it ends (and releases the concurrency slot) once the handler
    // returned and the instance was given back or dropped.
    let task = tokio::spawn(async move {
        // Dropped in reverse order: the slot is released, then the response may end.
        let _done = done_tx;
        let mut permit = permit;
        // Declared after the slot, so dropped before it however the task ends (aborted at the
        // deadline too): the slot's permit stands for the instance in the pool.
        let mut store = store;
        // Counts the instance as retired unless it is given back, also when the task is aborted
        // at the deadline (which drops the instance).
        let mut lease = Lease { reuse, retired: Some(Retired::Timeout) };
        let mut instantiated = proxy.is_some();
        let run = async {
            let proxy = match proxy {
                Some(p) => p,
                None => pre.instantiate_async(&mut store).await?,
            };
            instantiated = true;
            proxy.wasi_http_incoming_handler().call_handle(&mut store, incoming, out).await?;
            Ok::<_, wasmtime::Error>(proxy)
        };
        let result = tokio::time::timeout_at(deadline, run).await;
        match result {
            Ok(Ok(proxy)) => {
                lease.retired = None;
                match &lease.reuse {
                    Some(r) => r.give_back(Warm { store, proxy, served: served + 1, spoiled }),
                    None => {
                        // The connection writes the response first, then the instance is torn
                        // down (its memory reset and given back): on a one-thread worker the
                        // teardown would otherwise run between the handler's end and the
                        // response going out, and every request would wait for it.
                        permit.tearing_down();
                        super::after_queued_tasks().await;
                        drop((proxy, store));
                    }
                }
                Ended::Done
            }
            Ok(Err(e)) => {
                let hit = store.data().limiter.hit.as_ref();
                lease.retired = match (instantiated, hit) {
                    (false, _) => None,
                    (true, Some(_)) => Some(Retired::Memory),
                    (true, None) => Some(Retired::Trap),
                };
                Ended::Failed(classify(&e, hit, None, false).to_string())
            }
            Err(_) => Ended::Timeout,
        }
    });
    let abort = task.abort_handle();
    let spoil = |response: hyper::Response<HyperOutgoingBody>| {
        spoiled_by_response.store(true, Ordering::Release);
        response
    };
    match tokio::time::timeout_at(deadline, rx).await {
        Ok(Ok(Ok(response))) if app.reuse.is_some() => {
            // A body that fails (the guest aborted it, or dropped it unfinished) spoils the
            // instance too.
            let spoiled = spoiled_by_response.clone();
            response.map(|body| ReusedBody { body, spoiled, done: Some(done_rx) }.boxed_unsync())
        }
        Ok(Ok(Ok(response))) => super::watched(response, mark),
        Ok(Ok(Err(code))) => super::watched(spoil(app.failed(&label, &format!("the guest answered with error {code:?}"))), mark),
        // The guest dropped the response outparam without setting it: see how it ended.
        Ok(Err(_)) => match task.await {
            Ok(Ended::Timeout) => app.timed_out(&label),
            Ok(Ended::Failed(m)) => app.failed(&label, &m),
            Ok(Ended::Done) => spoil(app.failed(&label, "the guest returned without setting a response")),
            Err(e) => app.failed(&label, &e.to_string()),
        },
        Err(_) => {
            // Aborting drops the instance with the task (retired), at the guest's next yield.
            abort.abort();
            super::watched(app.timed_out(&label), mark)
        }
    }
}

/// The response body of a reused instance: an error in it spoils the instance, and its end
/// waits for the request's task to end (the handler returned, the instance given back or
/// retired, the concurrency slot released).
struct ReusedBody {
    body: HyperOutgoingBody,
    spoiled: Arc<AtomicBool>,
    done: Option<tokio::sync::oneshot::Receiver<()>>,
}

impl hyper::body::Body for ReusedBody {
    type Data = bytes::Bytes;
    type Error = <HyperOutgoingBody as hyper::body::Body>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(None) => match this.done.as_mut().map(|d| Pin::new(d).poll(cx)) {
                Some(Poll::Pending) => Poll::Pending,
                _ => {
                    this.done = None;
                    Poll::Ready(None)
                }
            },
            Poll::Ready(Some(Err(e))) => {
                this.spoiled.store(true, Ordering::Release);
                Poll::Ready(Some(Err(e)))
            }
            other => other,
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// A request's hold on its instance: unless given back, the instance is counted as retired
/// for `retired` when the request's task ends, however it ends.
struct Lease {
    reuse: Option<Arc<Reuse>>,
    retired: Option<Retired>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let (Some(r), Some(why)) = (&self.reuse, self.retired) {
            r.retired(why);
        }
    }
}
