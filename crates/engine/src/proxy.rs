//! `wasi:http/proxy` components: the per-request store (WASI p2, `wasi:http`, the memory limit,
//! the outbound allow-list) and one request's life: instantiate from the `ProxyPre`, call
//! `incoming-handler.handle`, hand hyper the response the guest sets.

use std::sync::Arc;

use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use wasmtime::component::ResourceTable;
use wasmtime::Store;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use crate::limits::Limiter;
use crate::outcome::classify;
use crate::serve::App;

/// Store data of one request to a proxy component.
pub(crate) struct ProxyState {
    ctx: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    pub(crate) limiter: Limiter,
    hooks: Outbound,
}

impl WasiView for ProxyState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for ProxyState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// One entry of the outbound allow-list: `*`, or `[scheme://]host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Rule {
    Any,
    Host {
        scheme: Option<String>,
        host: String,
        port: Option<u16>,
    },
}

impl Rule {
    pub(crate) fn parse(entry: &str) -> Result<Rule, String> {
        let entry = entry.trim();
        if entry == "*" {
            return Ok(Rule::Any);
        }
        let (scheme, rest) = match entry.split_once("://") {
            Some((s, r)) => (Some(s.to_ascii_lowercase()), r),
            None => (None, entry),
        };
        let rest = rest.trim_end_matches('/');
        let authority: http::uri::Authority = rest
            .parse()
            .map_err(|_| format!("{entry:?} is not [scheme://]host[:port]"))?;
        if matches!(scheme.as_deref(), Some(s) if s != "http" && s != "https") {
            return Err(format!("{entry:?}: only http and https can be allowed"));
        }
        Ok(Rule::Host {
            scheme,
            host: authority.host().trim_matches(['[', ']']).to_ascii_lowercase(),
            port: authority.port_u16(),
        })
    }

    /// Whether a request to `scheme://host:port` is allowed by this rule. A rule without a port
    /// allows the scheme's default port when it names a scheme, any port when it does not.
    pub(crate) fn allows(&self, scheme: &str, host: &str, port: u16) -> bool {
        match self {
            Rule::Any => true,
            Rule::Host {
                scheme: s,
                host: h,
                port: p,
            } => {
                let host = host.trim_matches(['[', ']']);
                if !h.eq_ignore_ascii_case(host) || s.as_deref().is_some_and(|s| s != scheme) {
                    return false;
                }
                match (p, s.as_deref()) {
                    (Some(p), _) => *p == port,
                    (None, Some(s)) => port == default_port(s),
                    (None, None) => true,
                }
            }
        }
    }
}

fn default_port(scheme: &str) -> u16 {
    if scheme == "https" {
        443
    } else {
        80
    }
}

/// The outbound side of `wasi:http`: requests go out only where the allow-list says.
#[derive(Clone)]
pub(crate) struct Outbound {
    pub(crate) rules: Arc<[Rule]>,
    pub(crate) file: Arc<str>,
}

impl Outbound {
    pub(crate) fn allows(&self, uri: &http::Uri) -> bool {
        let scheme = uri.scheme_str().unwrap_or("https").to_ascii_lowercase();
        let Some(host) = uri.host() else { return false };
        let port = uri.port_u16().unwrap_or_else(|| default_port(&scheme));
        self.rules.iter().any(|r| r.allows(&scheme, host, port))
    }
}

type SendFuture = Box<
    dyn std::future::Future<
            Output = Result<
                (
                    http::Response<wasmtime_wasi_http::WasiBody>,
                    Box<dyn std::future::Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                ),
                wasmtime_wasi_http::Error,
            >,
        > + Send,
>;

impl WasiHttpHooks for Outbound {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn std::future::Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> SendFuture {
        if !self.allows(request.uri()) {
            let line = format!(
                "{}: outbound request to {} denied: not in {}",
                self.file,
                request.uri(),
                wasm_shim_oci::http::ALLOWED_OUTBOUND
            );
            // The container's log, where the function's author looks, and the shim's.
            eprintln!("{line}");
            log::warn!("{line}");
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        Box::new(async move {
            use http_body_util::BodyExt;
            let (res, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                res.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn std::future::Future<Output = _> + Send>,
            ))
        })
    }
}

/// How a request's guest task ended without setting a response.
enum Ended {
    Done,
    Timeout,
    Failed(String),
}

/// Serves one request with a fresh instance of the component.
pub(crate) async fn handle(
    app: &Arc<App>,
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
    let state = ProxyState {
        ctx,
        http: WasiHttpCtx::new(),
        table: ResourceTable::new(),
        limiter: Limiter::new(Some(app.config.request_memory)),
        hooks: app.outbound.clone(),
    };
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(entries: &[&str]) -> Outbound {
        Outbound {
            rules: entries.iter().map(|e| Rule::parse(e).unwrap()).collect(),
            file: "/f.wasm".into(),
        }
    }

    fn allowed(o: &Outbound, uri: &str) -> bool {
        o.allows(&uri.parse().unwrap())
    }

    #[test]
    fn nothing_is_allowed_by_default() {
        let o = rules(&[]);
        assert!(!allowed(&o, "http://127.0.0.1:3500/v1.0/state"));
    }

    #[test]
    fn allow_list_entries() {
        let o = rules(&["http://127.0.0.1:3500", "api.example.com", "https://secure.example.com/", "[::1]:80"]);
        assert!(allowed(&o, "http://127.0.0.1:3500/v1.0/invoke"));
        assert!(!allowed(&o, "http://127.0.0.1:3501/"));
        assert!(!allowed(&o, "https://127.0.0.1:3500/"));
        assert!(allowed(&o, "http://API.example.com:9999/x"));
        assert!(allowed(&o, "https://api.example.com/x"));
        assert!(allowed(&o, "https://secure.example.com/x"));
        assert!(!allowed(&o, "https://secure.example.com:8443/x"));
        assert!(!allowed(&o, "http://secure.example.com/x"));
        assert!(allowed(&o, "http://[::1]/"));
        assert!(!allowed(&o, "http://evil.com/?api.example.com"));
        assert!(allowed(&rules(&["*"]), "https://anything.example/"));
    }

    #[test]
    fn bad_entries_are_refused() {
        assert!(Rule::parse("ftp://x").is_err());
        assert!(Rule::parse("http://a b").is_err());
    }
}
