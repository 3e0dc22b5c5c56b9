//! WASI 0.3 `wasi:http/service` components (`wasi:http/handler@0.3.x`): the same per-request
//! store as a `wasi:http/proxy` (`ProxyState`: WASI, `wasi:http`, the memory limit, the outbound
//! allow-list as the send hook, which 0.3's `client.send` goes through as 0.2's outgoing handler
//! does) and one request's life: instantiate from the `ServicePre`, call the async
//! `handler.handle` in the store's event loop (`run_concurrent`), hand hyper the response it
//! returns, and keep the event loop running until hyper has read the body (a 0.3 guest usually
//! writes it from a task of its own after `handle` returned). One instance per request, as for
//! 0.2 (the wasmtime CLI reuses 0.3 instances across requests; the shim does not, so a request's
//! memory limit, trap and deadline stay its own).

use tokio::sync::oneshot;
use tokio::time::Instant;
use wasmtime::Store;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::p3::bindings::ServicePre;

use super::request::App;
use crate::host::ProxyState;
use crate::limits::Limiter;
use crate::outcome::classify;

/// How a request's guest task ended without handing over a response.
enum Ended {
    Done,
    Timeout,
    Failed(String),
}

/// What the guest task hands the server: the response, or why there is none.
type Answer = Result<hyper::Response<HyperOutgoingBody>, String>;

/// Serves one request with a fresh instance of the component.
pub(crate) async fn handle(
    app: &App,
    pre: &ServicePre<ProxyState>,
    req: hyper::Request<hyper::body::Incoming>,
    mut permit: super::Slot,
    deadline: Instant,
    trace: Option<super::trace::ClientTrace>,
) -> hyper::Response<HyperOutgoingBody> {
    let label = format!("{} {}", req.method(), req.uri().path());
    let ctx = match app.wasi_builder() {
        Ok(mut b) => b.build(),
        Err(m) => return app.failed(&label, &m),
    };
    let limiter = Limiter::new(Some(app.limits.request_memory));
    let state = ProxyState::new(ctx, limiter, app.outbound.clone(), app.metrics.clone(), app.run.config.clone());
    let mut store = Store::new(pre.engine(), state);
    if trace.is_some() {
        store.data_mut().trace_outbound(trace);
    }
    store.limiter(|s| &mut s.limiter);
    // Yield to tokio at every epoch tick: a spinning guest shares its worker thread and its
    // deadline below can fire.
    store.set_epoch_deadline(1);
    store.epoch_deadline_async_yield_and_update(1);
    let mut hooks = app.outbound.clone();
    let (request, request_io) = wasmtime_wasi_http::p3::Request::from_http(&mut hooks, req);
    let (tx, rx) = oneshot::channel::<Answer>();
    let pre = pre.clone();
    // The body's end marks the slot (`Mark::responded`): hyper reads a pipelined next request
    // then, before this task has dropped the instance, and that request waits for the slot.
    let mark = permit.mark();
    // The same for a response of the server's own (a 500, a 504) while the task holds the slot.
    let own = permit.mark();
    // The guest runs in its own task: it goes on writing the body after `handle` returned.
    let task = tokio::spawn(async move {
        let _permit = permit;
        // Declared after the slot, so dropped before it however the task ends: the slot's
        // permit stands for the instance in the pool.
        let mut store = store;
        let run = async {
            let service = pre.instantiate_async(&mut store).await?;
            store
                .run_concurrent(async move |accessor| -> wasmtime::Result<()> {
                    let response = match service.handle(accessor, request).await? {
                        Ok(response) => response,
                        Err(code) => {
                            let _ = tx.send(Err(format!("the guest answered with error {code:?}")));
                            return Ok(());
                        }
                    };
                    let response = accessor.with(|mut store| response.into_http(&mut store, request_io))?;
                    let (done_tx, done_rx) = oneshot::channel::<()>();
                    let response = response.map(|body| super::Watched::boxed(body, mark, Some(done_tx)));
                    if tx.send(Ok(response)).is_ok() {
                        // The body is read from the guest's stream by this event loop: keep it
                        // running until hyper is done with the body (or drops it).
                        let _ = done_rx.await;
                    }
                    Ok(())
                })
                .await?
        };
        match tokio::time::timeout_at(deadline, run).await {
            Ok(Ok(())) => Ended::Done,
            Ok(Err(e)) => Ended::Failed(
                classify(&e, store.data().limiter.hit.as_ref(), None, false).to_string(),
            ),
            Err(_) => Ended::Timeout,
        }
    });
    let abort = task.abort_handle();
    match tokio::time::timeout_at(deadline, rx).await {
        Ok(Ok(Ok(response))) => response,
        Ok(Ok(Err(why))) => super::watched(app.failed(&label, &why), own),
        // The guest task ended without a response: see how.
        Ok(Err(_)) => match task.await {
            Ok(Ended::Timeout) => app.timed_out(&label),
            Ok(Ended::Failed(m)) => app.failed(&label, &m),
            Ok(Ended::Done) => app.failed(&label, "the guest returned without a response"),
            Err(e) => app.failed(&label, &e.to_string()),
        },
        Err(_) => {
            abort.abort();
            super::watched(app.timed_out(&label), own)
        }
    }
}
