//! `wasi:http/proxy` components: the per-request store (WASI p2, `wasi:http`, the memory limit,
//! the outbound allow-list as `wasi:http`'s send hook) and one request's life: instantiate from the `ProxyPre`, call
//! `incoming-handler.handle`, hand hyper the response the guest sets.

use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use wasmtime::Store;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::WasiHttpView;

use super::request::App;
use crate::host::ProxyState;
use crate::limits::Limiter;
use crate::outcome::classify;

/// How a request's guest task ended without setting a response.
enum Ended {
    Done,
    Timeout,
    Failed(String),
}

/// Serves one request with a fresh instance of the component.
pub(crate) async fn handle(
    app: &App,
    pre: &ProxyPre<ProxyState>,
    req: hyper::Request<hyper::body::Incoming>,
    permit: OwnedSemaphorePermit,
    deadline: Instant,
) -> hyper::Response<HyperOutgoingBody> {
    let label = format!("{} {}", req.method(), req.uri().path());
    let ctx = match app.wasi_builder() {
        Ok(mut b) => b.build(),
        Err(m) => return app.failed(&label, &m),
    };
    let limiter = Limiter::new(Some(app.limits.request_memory));
    let state = ProxyState::new(ctx, limiter, app.outbound.clone(), app.metrics.clone(), app.run.config.clone());
    let mut store = Store::new(pre.engine(), state);
    store.limiter(|s| &mut s.limiter);
    // Yield to tokio at every epoch tick: a spinning guest shares its worker thread and its
    // deadline below can fire.
    store.set_epoch_deadline(1);
    store.epoch_deadline_async_yield_and_update(1);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (incoming, out) = {
        let mut http = store.data_mut().http();
        match (http.new_incoming_request(Scheme::Http, req), http.new_response_outparam(tx)) {
            (Ok(i), Ok(o)) => (i, o),
            (Err(e), _) | (_, Err(e)) => return app.failed(&label, &e.to_string()),
        }
    };
    let pre = pre.clone();
    // The guest runs in its own task: it may go on writing the body after it set the response.
    let task = tokio::spawn(async move {
        let _permit = permit;
        let run = async {
            let proxy = pre.instantiate_async(&mut store).await?;
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, incoming, out)
                .await
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
        Ok(Ok(Err(code))) => app.failed(&label, &format!("the guest answered with error {code:?}")),
        // The guest dropped the response outparam without setting it: see how it ended.
        Ok(Err(_)) => match task.await {
            Ok(Ended::Timeout) => app.timed_out(&label),
            Ok(Ended::Failed(m)) => app.failed(&label, &m),
            Ok(Ended::Done) => app.failed(&label, "the guest returned without setting a response"),
            Err(e) => app.failed(&label, &e.to_string()),
        },
        Err(_) => {
            abort.abort();
            app.timed_out(&label)
        }
    }
}
