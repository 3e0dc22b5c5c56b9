//! How a container asks to be served over HTTP: the `wasm.containerd.io/http-*` annotations of
//! its spec (Kubernetes passes pod annotations through when containerd's runtime entry lists them
//! in `pod_annotations`; `ctr run --annotation` sets them directly) and the `PORT` variable that
//! Knative sets. Every value has a default; a malformed one is an error naming the annotation.

use std::time::Duration;

use oci_spec::runtime::Spec;

use crate::error::OciError;
use crate::size::parse_size;

/// What the workload is: `wagi` serves a WASI preview 1 module CGI-style, `http` insists on a
/// `wasi:http/incoming-handler` component, `command` runs the program even if it could serve.
/// Without it, a component exporting `wasi:http/incoming-handler` (and no `wasi:cli/run`) is
/// served and everything else runs as a command.
pub const SERVE: &str = "wasm.containerd.io/serve";
/// TCP port to listen on (all addresses of the container's network namespace).
pub const PORT: &str = "wasm.containerd.io/http-port";
/// Requests served at once; the next one gets 503 with `Retry-After`.
pub const MAX_CONCURRENCY: &str = "wasm.containerd.io/http-max-concurrency";
/// Client connections open at once (idle keep-alive ones included); the next one is not
/// accepted until one closes: it waits in the listen backlog.
pub const MAX_CONNECTIONS: &str = "wasm.containerd.io/http-max-connections";
/// Time a request may take, guest and body included; past it the answer is 504.
pub const REQUEST_TIMEOUT: &str = "wasm.containerd.io/http-request-timeout";
/// Linear memory (and tables) each request's instance may use.
pub const REQUEST_MEMORY: &str = "wasm.containerd.io/http-request-memory";
/// Largest request body a WAGI module is handed (413 past it).
pub const MAX_BODY: &str = "wasm.containerd.io/http-max-body";
/// Outbound `wasi:http` destinations, comma-separated `[scheme://]host[:port]`, `*` for any.
pub const ALLOWED_OUTBOUND: &str = "wasm.containerd.io/http-allowed-outbound";
/// Requests one instance of a `wasi:http` component serves, one after the other, before it is
/// retired: 1 (the default) is a fresh instance per request; above 1 the guest's state (globals,
/// linear memory, resources it keeps) carries over from one request to the next. A WAGI module
/// cannot be reused (its `_start` runs once): Create refuses it above 1.
pub const INSTANCE_REUSE: &str = "wasm.containerd.io/http-instance-reuse";
/// `true`: a line per request on the container's stderr (Common Log Format plus the
/// duration); `false`, the default: none.
pub const ACCESS_LOG: &str = "wasm.containerd.io/http-access-log";
/// The most processes that serve the workload, each on a CPU of its own: `auto` (the default),
/// one per CPU the container may use (its CPU limit and cpuset; at most the node's
/// `WASM_SHIM_SERVE_PROCESSES`, else 8), or a number 1-64 (fewer if the container has fewer
/// CPUs). 1 is one process with a thread per CPU.
pub const PROCESSES: &str = "wasm.containerd.io/http-processes";
/// The largest [`PROCESSES`].
pub const MAX_PROCESSES: u32 = 64;
/// TCP port of the Prometheus endpoint (`GET /metrics`) of a served workload; none without it.
pub const METRICS_PORT: &str = "wasm.containerd.io/metrics-port";

pub const DEFAULT_PORT: u16 = 8080;
pub const DEFAULT_MAX_CONCURRENCY: u32 = 256;
/// Without [`MAX_CONNECTIONS`], this many connections per request served at once: room for
/// idle keep-alive clients next to the busy ones.
pub const CONNECTIONS_PER_REQUEST: u32 = 4;
/// The largest [`MAX_CONNECTIONS`] accepted.
pub const MAX_MAX_CONNECTIONS: u32 = 1 << 20;
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_REQUEST_MEMORY: u64 = 128 << 20;
pub const DEFAULT_MAX_BODY: u64 = 16 << 20;
/// The largest [`INSTANCE_REUSE`]: a fresh instance's cost spread over 10,000 requests is below
/// a hundredth of a percent of them, so more would only let state (and whatever a guest leaks
/// outside its linear memory) live longer for no speed.
pub const MAX_INSTANCE_REUSE: u32 = 10_000;

/// The value of [`SERVE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ServeMode {
    /// Serve a proxy component, run anything else.
    #[default]
    Auto,
    /// Serve a `wasi:http/incoming-handler` component; anything else is an error.
    Http,
    /// Serve a WASI preview 1 module as a CGI handler.
    Wagi,
    /// Run as a command, whatever it exports.
    Command,
}

/// The HTTP settings of one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    pub mode: ServeMode,
    pub port: u16,
    pub max_concurrency: u32,
    /// `None`: [`CONNECTIONS_PER_REQUEST`] × `max_concurrency`; see [`HttpConfig::max_open_connections`].
    pub max_connections: Option<u32>,
    pub request_timeout: Duration,
    pub request_memory: u64,
    pub max_body: u64,
    pub allowed_outbound: Vec<String>,
    /// [`INSTANCE_REUSE`]: requests per instance, 1 = a fresh instance for each.
    pub instance_reuse: u32,
    /// [`METRICS_PORT`]: where the server's metrics are served, if anywhere.
    pub metrics_port: Option<u16>,
    /// [`ACCESS_LOG`].
    pub access_log: bool,
    /// [`PROCESSES`]; `None`: `auto`.
    pub processes: Option<u32>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            mode: ServeMode::Auto,
            port: DEFAULT_PORT,
            max_concurrency: DEFAULT_MAX_CONCURRENCY,
            max_connections: None,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            request_memory: DEFAULT_REQUEST_MEMORY,
            max_body: DEFAULT_MAX_BODY,
            allowed_outbound: Vec::new(),
            instance_reuse: 1,
            metrics_port: None,
            access_log: false,
            processes: None,
        }
    }
}

impl HttpConfig {
    /// How many client connections the server keeps open at once.
    pub fn max_open_connections(&self) -> u32 {
        self.max_connections
            .unwrap_or_else(|| self.max_concurrency.saturating_mul(CONNECTIONS_PER_REQUEST))
            .clamp(1, MAX_MAX_CONNECTIONS)
    }
}

/// Reads the HTTP settings from the spec's annotations and `env` (the container's environment,
/// for `PORT`). The annotation wins over `PORT`.
pub fn http_config(spec: &Spec, env: &[(String, String)]) -> Result<HttpConfig, OciError> {
    let empty = Default::default();
    let annotations = spec.annotations().as_ref().unwrap_or(&empty);
    let get = |key: &str| annotations.get(key).map(|v| v.trim());
    let bad = |key: &str, value: &str, expected: &str| {
        OciError::InvalidSpec(format!("annotation {key}={value:?}: expected {expected}"))
    };
    let mut config = HttpConfig::default();
    if let Some(v) = get(SERVE) {
        config.mode = match v.to_ascii_lowercase().as_str() {
            "" | "auto" => ServeMode::Auto,
            "http" | "wasi-http" => ServeMode::Http,
            "wagi" | "cgi" => ServeMode::Wagi,
            "command" | "none" => ServeMode::Command,
            _ => return Err(bad(SERVE, v, "http, wagi or command")),
        };
    }
    let port_env = env.iter().rev().find(|(k, _)| k == "PORT").map(|(_, v)| v.trim());
    match (get(PORT), port_env) {
        (Some(v), _) => config.port = parse_port(v).ok_or_else(|| bad(PORT, v, "a port 1-65535"))?,
        (None, Some(v)) => {
            config.port = parse_port(v).ok_or_else(|| {
                OciError::InvalidSpec(format!("env PORT={v:?}: expected a port 1-65535"))
            })?
        }
        (None, None) => {}
    }
    if let Some(v) = get(MAX_CONCURRENCY) {
        config.max_concurrency = v
            .parse()
            .ok()
            .filter(|n| (1..=65_536).contains(n))
            .ok_or_else(|| bad(MAX_CONCURRENCY, v, "a number 1-65536"))?;
    }
    if let Some(v) = get(MAX_CONNECTIONS) {
        config.max_connections = Some(
            v.parse()
                .ok()
                .filter(|n| (1..=MAX_MAX_CONNECTIONS).contains(n))
                .ok_or_else(|| bad(MAX_CONNECTIONS, v, &format!("a number 1-{MAX_MAX_CONNECTIONS}")))?,
        );
    }
    if let Some(v) = get(REQUEST_TIMEOUT) {
        config.request_timeout = parse_duration(v)
            .filter(|d| !d.is_zero())
            .ok_or_else(|| bad(REQUEST_TIMEOUT, v, "a duration such as 500ms, 30s or 2m"))?;
    }
    if let Some(v) = get(REQUEST_MEMORY) {
        config.request_memory = parse_size(v)
            .filter(|n| *n >= 64 << 10)
            .ok_or_else(|| bad(REQUEST_MEMORY, v, "a size of at least 64Ki, such as 64Mi or 1Gi (Mi, Gi: powers of 1024; M, G: of 1000)"))?;
    }
    if let Some(v) = get(MAX_BODY) {
        config.max_body =
            parse_size(v).ok_or_else(|| bad(MAX_BODY, v, "a size such as 1Mi or 16Mi (Mi, Gi: powers of 1024; M, G: of 1000)"))?;
    }
    if let Some(v) = get(ALLOWED_OUTBOUND) {
        config.allowed_outbound = v
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
    }
    if let Some(v) = get(INSTANCE_REUSE) {
        config.instance_reuse = v
            .parse()
            .ok()
            .filter(|n| (1..=MAX_INSTANCE_REUSE).contains(n))
            .ok_or_else(|| bad(INSTANCE_REUSE, v, &format!("a number of requests per instance, 1-{MAX_INSTANCE_REUSE} (1: a fresh instance per request)")))?;
    }
    if let Some(v) = get(PROCESSES) {
        config.processes = match v.to_ascii_lowercase().as_str() {
            "" | "auto" => None,
            n => Some(
                n.parse()
                    .ok()
                    .filter(|n| (1..=MAX_PROCESSES).contains(n))
                    .ok_or_else(|| bad(PROCESSES, v, &format!("auto or a number of processes, 1-{MAX_PROCESSES}")))?,
            ),
        };
    }
    if let Some(v) = get(METRICS_PORT) {
        let port = parse_port(v).ok_or_else(|| bad(METRICS_PORT, v, "a port 1-65535"))?;
        if port == config.port {
            return Err(bad(METRICS_PORT, v, &format!("a port other than the HTTP server's ({})", config.port)));
        }
        config.metrics_port = Some(port);
    }
    if let Some(v) = get(ACCESS_LOG) {
        config.access_log = match v.to_ascii_lowercase().as_str() {
            "true" => true,
            "false" => false,
            _ => return Err(bad(ACCESS_LOG, v, "true or false")),
        };
    }
    Ok(config)
}

fn parse_port(v: &str) -> Option<u16> {
    v.parse().ok().filter(|p| *p != 0)
}

/// `250ms`, `30s`, `2m`, `1h`; a bare number is seconds.
pub fn parse_duration(v: &str) -> Option<Duration> {
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (number, unit) = v.split_at(split);
    let n: u64 = number.parse().ok()?;
    let ms = match unit.trim() {
        "ms" => n,
        "" | "s" => n.checked_mul(1000)?,
        "m" => n.checked_mul(60_000)?,
        "h" => n.checked_mul(3_600_000)?,
        _ => return None,
    };
    Some(Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(annotations: &[(&str, &str)]) -> Spec {
        let map: serde_json::Map<String, serde_json::Value> = annotations
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_string())))
            .collect();
        let json = serde_json::json!({
            "ociVersion": "1.0.2", "root": {"path": "rootfs"},
            "process": {"args": ["/a.wasm"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
            "annotations": map,
        });
        serde_json::from_value(json).unwrap()
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_without_annotations() {
        assert_eq!(http_config(&spec(&[]), &[]).unwrap(), HttpConfig::default());
    }

    #[test]
    fn knative_port_and_annotation_precedence() {
        assert_eq!(http_config(&spec(&[]), &env(&[("PORT", "9090")])).unwrap().port, 9090);
        let s = spec(&[(PORT, "7070")]);
        assert_eq!(http_config(&s, &env(&[("PORT", "9090")])).unwrap().port, 7070);
        let err = http_config(&spec(&[]), &env(&[("PORT", "http")])).unwrap_err();
        assert!(err.to_string().contains("env PORT=\"http\""), "{err}");
    }

    #[test]
    fn every_annotation() {
        let s = spec(&[
            (SERVE, "WAGI"),
            (MAX_CONCURRENCY, "4"),
            (MAX_CONNECTIONS, "10"),
            (REQUEST_TIMEOUT, "250ms"),
            (REQUEST_MEMORY, "64Mi"),
            (MAX_BODY, "1Mi"),
            (ALLOWED_OUTBOUND, "http://127.0.0.1:3500, api.example.com ,"),
            (METRICS_PORT, " 9091 "),
            (INSTANCE_REUSE, "50"),
            (ACCESS_LOG, "True"),
            (PROCESSES, "3"),
        ]);
        let c = http_config(&s, &[]).unwrap();
        assert_eq!(c.mode, ServeMode::Wagi);
        assert_eq!(c.max_concurrency, 4);
        assert_eq!((c.max_connections, c.max_open_connections()), (Some(10), 10));
        assert_eq!(c.request_timeout, Duration::from_millis(250));
        assert_eq!(c.request_memory, 64 << 20);
        assert_eq!(c.max_body, 1 << 20);
        assert_eq!(c.allowed_outbound, vec!["http://127.0.0.1:3500", "api.example.com"]);
        assert_eq!(c.metrics_port, Some(9091));
        assert_eq!(c.instance_reuse, 50);
        assert!(c.access_log);
        assert_eq!(c.processes, Some(3));
        assert_eq!(http_config(&spec(&[(PROCESSES, "Auto")]), &[]).unwrap().processes, None);
    }

    #[test]
    fn access_log_is_off_unless_set_true() {
        assert!(!http_config(&spec(&[]), &[]).unwrap().access_log);
        assert!(!http_config(&spec(&[(ACCESS_LOG, "false")]), &[]).unwrap().access_log);
        assert!(http_config(&spec(&[(ACCESS_LOG, " true ")]), &[]).unwrap().access_log);
    }

    #[test]
    fn metrics_port_is_off_unless_set_and_never_the_http_port() {
        assert_eq!(http_config(&spec(&[]), &[]).unwrap().metrics_port, None);
        // Knative's PORT is the HTTP server's: the metrics cannot take it.
        let err = http_config(&spec(&[(METRICS_PORT, "9090")]), &env(&[("PORT", "9090")])).unwrap_err().to_string();
        assert!(err.contains("wasm.containerd.io/metrics-port=\"9090\"") && err.contains("(9090)"), "{err}");
        let err = http_config(&spec(&[(METRICS_PORT, "8080")]), &[]).unwrap_err().to_string();
        assert!(err.contains(METRICS_PORT) && err.contains("other than the HTTP server's (8080)"), "{err}");
        let c = http_config(&spec(&[(PORT, "7070"), (METRICS_PORT, "8080")]), &[]).unwrap();
        assert_eq!((c.port, c.metrics_port), (7070, Some(8080)));
    }

    #[test]
    fn bad_values_name_the_annotation() {
        for (key, value) in [
            (SERVE, "fastcgi"),
            (PORT, "0"),
            (PORT, "65536"),
            (MAX_CONCURRENCY, "0"),
            (MAX_CONNECTIONS, "0"),
            (MAX_CONNECTIONS, "-1"),
            (MAX_CONNECTIONS, "many"),
            (MAX_CONNECTIONS, "1048577"),
            (REQUEST_TIMEOUT, "soon"),
            (REQUEST_TIMEOUT, "0s"),
            (REQUEST_MEMORY, "1"),
            (MAX_BODY, "lots"),
            (METRICS_PORT, "0"),
            (METRICS_PORT, "65536"),
            (METRICS_PORT, "prometheus"),
            (INSTANCE_REUSE, "0"),
            (INSTANCE_REUSE, "-3"),
            (INSTANCE_REUSE, "10001"),
            (INSTANCE_REUSE, "lots"),
            (INSTANCE_REUSE, "1.5"),
            (ACCESS_LOG, "yes"),
            (ACCESS_LOG, "1"),
            (ACCESS_LOG, ""),
            (PROCESSES, "0"),
            (PROCESSES, "65"),
            (PROCESSES, "all"),
        ] {
            let err = http_config(&spec(&[(key, value)]), &[]).unwrap_err();
            let text = err.to_string();
            assert!(text.contains(key) && text.contains(value), "{text}");
        }
    }

    #[test]
    fn connection_cap_follows_concurrency_unless_set() {
        let c = http_config(&spec(&[]), &[]).unwrap();
        assert_eq!((c.max_connections, c.max_open_connections()), (None, 1024));
        let c = http_config(&spec(&[(MAX_CONCURRENCY, "8")]), &[]).unwrap();
        assert_eq!(c.max_open_connections(), 32);
        let c = http_config(&spec(&[(MAX_CONCURRENCY, "65536")]), &[]).unwrap();
        assert_eq!(c.max_open_connections(), 262_144);
        // Fewer connections than requests in flight is allowed: each connection has at most one.
        let c = http_config(&spec(&[(MAX_CONCURRENCY, "100"), (MAX_CONNECTIONS, "3")]), &[]).unwrap();
        assert_eq!(c.max_open_connections(), 3);
        let err = http_config(&spec(&[(MAX_CONNECTIONS, "0")]), &[]).unwrap_err().to_string();
        assert!(err.contains("http-max-connections") && err.contains("1-1048576"), "{err}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("5"), Some(Duration::from_secs(5)));
        assert_eq!(parse_duration("1.5s"), None);
    }
}
