//! What the handler of one request (`proxy`, `wagi`) gets from the server: `App`, the state
//! every request shares (the limits, the allow-list, the guest's WASI setup, the metrics, the
//! instances kept for reuse, the access log, the tracer), the WASI context of a request, and the shim's own
//! short responses (500 and 504 with a line in the container's log, `plain`).

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use crate::host::{wasi_builder, RunOptions};
use crate::limits::ServeLimits;
use crate::metrics::Metrics;
use crate::outbound::Outbound;

use super::reuse::Reuse;
use super::access::AccessLog;

/// Shared by every request.
pub(crate) struct App {
    pub(crate) limits: ServeLimits,
    pub(crate) outbound: Outbound,
    /// The port the server listens on (`SERVER_PORT` of a WAGI request).
    pub(crate) port: u16,
    pub(crate) run: RunOptions,
    pub(crate) file: String,
    pub(crate) metrics: Option<Arc<Metrics>>,
    /// Idle instances kept for the next requests (`ServeLimits::instance_reuse` above 1, a
    /// `wasi:http` component); `None`: a fresh instance per request.
    pub(crate) reuse: Option<Arc<Reuse>>,
    /// `None`: no access log, and the guest's stderr is wasmtime's own.
    pub(crate) access: Option<Arc<AccessLog>>,
    /// `None`: no spans.
    pub(crate) tracing: Option<super::RequestTracing>,
}

impl App {
    /// The WASI context of one request (stdio inherited; sockets as the allow-list says).
    pub(crate) fn wasi_builder(&self) -> Result<WasiCtxBuilder, String> {
        let mut b = wasi_builder(&self.run)?;
        // Blocking host calls go to tokio's blocking pool, not this worker.
        b.allow_blocking_current_thread(false);
        self.outbound.restrict(&mut b);
        if let Some(a) = &self.access {
            a.guest_stderr(&mut b);
        }
        Ok(b)
    }

    /// The same with extra environment variables (a WAGI request's meta-variables).
    pub(crate) fn wasi_builder_with_env(&self, env: &[(String, String)]) -> Result<WasiCtxBuilder, String> {
        let mut b = self.wasi_builder()?;
        b.envs(env);
        Ok(b)
    }

    /// 500, and a line in the container's log saying why.
    pub(crate) fn failed(&self, label: &str, why: &str) -> hyper::Response<HyperOutgoingBody> {
        self.say(&format!("{}: {label}: {why}", self.file));
        plain(500, "internal server error\n")
    }

    /// A line of the server's own on the container's stderr (through the access log when it
    /// is on, so it starts a line of its own too).
    fn say(&self, line: &str) {
        match &self.access {
            None => eprintln!("{line}"),
            Some(a) => a.write_line(&format!("{line}\n")),
        }
    }

    /// 504, and a line in the container's log.
    pub(crate) fn timed_out(&self, label: &str) -> hyper::Response<HyperOutgoingBody> {
        if let Some(m) = &self.metrics {
            m.timed_out();
        }
        self.say(&format!(
            "{}: {label}: no response within {:?} ({})",
            self.file, self.limits.request_timeout, self.limits.names.request_timeout
        ));
        plain(504, "gateway timeout\n")
    }
}

/// A complete body.
pub(crate) fn full(bytes: Bytes) -> HyperOutgoingBody {
    Full::new(bytes).map_err(|never| match never {}).boxed_unsync()
}

/// A short text response of the shim's own.
pub(crate) fn plain(status: u16, text: &str) -> hyper::Response<HyperOutgoingBody> {
    let mut r = hyper::Response::new(full(Bytes::copy_from_slice(text.as_bytes())));
    *r.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
