//! `http::metrics_*`: a serving container's Prometheus endpoint (`wasm.containerd.io/metrics-port`)
//! scraped by a real Prometheus server (Debian's `prometheus` package, `make deps` installs it),
//! asserted through Prometheus's own query API: the requests the test sent, by status class,
//! the 503 and 504 counts, the target up. And a bad port refused at Create.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use wasm_shim_e2e::ctr::ensure;
use wasm_shim_e2e::http;

use super::http::{refused, served};
use super::{expect_code, free_port, Ctx};

/// A Prometheus server of the test's own, on loopback, scraping `target` every 500 ms. Killed
/// when dropped.
struct Prometheus {
    child: Child,
    base: String,
    dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: &str) -> Result<Prometheus> {
        let bin = ["/usr/bin/prometheus", "/usr/local/bin/prometheus"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .ok_or_else(|| anyhow!("no prometheus binary: `make deps` installs Debian's prometheus package"))?;
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 500ms\n  scrape_timeout: 500ms\n\
                 scrape_configs:\n  - job_name: wasm\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )?;
        let port = free_port()?;
        let log = std::fs::File::create(dir.path().join("prometheus.log"))?;
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start prometheus")?;
        let p = Prometheus { child, base: format!("http://127.0.0.1:{port}"), dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if matches!(http::get_with(&format!("{}/-/ready", p.base), &[], Duration::from_secs(2)), Ok(r) if r.status == 200) {
                return Ok(p);
            }
            if Instant::now() > deadline {
                bail!("prometheus not ready within 30 s:\n{}", p.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// An instant query: each series' labels and value.
    fn query(&self, q: &str) -> Result<Vec<(HashMap<String, String>, f64)>> {
        let url = format!("{}/api/v1/query?query={}", self.base, percent_encode(q));
        let r = http::get(&url)?;
        let v: serde_json::Value = serde_json::from_str(&r.body).with_context(|| format!("{q}: {r}"))?;
        if v["status"] != "success" {
            bail!("{q}: {r}");
        }
        let result = v["data"]["result"].as_array().ok_or_else(|| anyhow!("{q}: no result: {r}"))?;
        result
            .iter()
            .map(|s| {
                let labels = s["metric"]
                    .as_object()
                    .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect())
                    .unwrap_or_default();
                let value = s["value"][1].as_str().and_then(|v| v.parse().ok()).ok_or_else(|| anyhow!("{q}: bad sample {s}"))?;
                Ok((labels, value))
            })
            .collect()
    }

    /// The single value of `q`, if it has exactly one series.
    fn value(&self, q: &str) -> Result<Option<f64>> {
        let r = self.query(q)?;
        Ok((r.len() == 1).then(|| r[0].1))
    }

    /// Waits until every query has the value wanted (Prometheus scrapes every 500 ms); on
    /// timeout, says what each query gave.
    fn wait_for(&self, wanted: &[(&str, f64)], timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let got: Vec<Option<f64>> = wanted.iter().map(|(q, _)| self.value(q)).collect::<Result<_>>()?;
            if got.iter().zip(wanted).all(|(g, (_, w))| *g == Some(*w)) {
                return Ok(());
            }
            if Instant::now() > deadline {
                let report: Vec<String> = wanted.iter().zip(&got).map(|((q, w), g)| format!("  {q}: wanted {w}, got {g:?}")).collect();
                bail!("after {timeout:?}:\n{}\nprometheus log:\n{}", report.join("\n"), self.log());
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

/// The `wasi:http` test component served with a metrics port, a concurrency cap of 2 and a 2 s
/// request timeout; requests that end 200, 404, 500 (a trap), 503 (over the cap) and 504 (past
/// the timeout); then Prometheus scrapes the endpoint and its query API must show exactly those
/// counts, the target up, one compile-cache result and one tier. The endpoint itself answers
/// only GET /metrics.
pub fn scraped_by_prometheus(cx: &Ctx) -> Result<()> {
    let (port, metrics_port) = (free_port()?, free_port()?);
    let id = "w-http-metrics";
    let annotations = [
        (wasm_shim_oci::http::PORT, port.to_string()),
        (wasm_shim_oci::http::METRICS_PORT, metrics_port.to_string()),
        (wasm_shim_oci::http::MAX_CONCURRENCY, "2".to_string()),
        (wasm_shim_oci::http::REQUEST_TIMEOUT, "2s".to_string()),
    ];
    let mut run = cx.cd.spawn(&served(id, "/http.wasm", &annotations))?;
    let base = format!("http://127.0.0.1:{port}");
    let (first, _) = http::wait_until_serving(&format!("{base}/"), Duration::from_secs(30))
        .with_context(|| format!("output so far: {}", run.stdout_now()))?;
    ensure(first.status == 200, || format!("first reply {first}"))?;
    let mut sent = HashMap::from([("2xx", 1), ("3xx", 0), ("4xx", 0), ("5xx", 0)]);
    let mut expect = |path: &str, status: u16| -> Result<()> {
        let r = http::get(&format!("{base}{path}"))?;
        ensure(r.status == status, || format!("{path}: wanted {status}, got {r}"))?;
        *sent.get_mut(&format!("{}xx", status / 100)[..]).expect("a known class") += 1;
        Ok(())
    };
    for _ in 0..4 {
        expect("/", 200)?;
    }
    expect("/status/404", 404)?;
    expect("/no-such-route", 404)?;
    expect("/trap", 500)?;
    // Past the 2 s timeout: 504.
    expect("/sleep?ms=4000", 504)?;
    // Two slow requests take both slots: the next is 503.
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let url = format!("{base}/sleep?ms=1500");
            std::thread::spawn(move || http::get(&url))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    expect("/", 503)?;
    for h in slow {
        let r = h.join().map_err(|_| anyhow!("client thread panicked"))??;
        ensure(r.status == 200, || format!("slow request: {r}"))?;
        *sent.get_mut("2xx").expect("2xx") += 1;
    }
    let total: u64 = sent.values().sum();

    // The endpoint as a scraper sees it, and what it refuses.
    let target = format!("127.0.0.1:{metrics_port}");
    let m = http::get(&format!("http://{target}/metrics"))?;
    ensure(m.status == 200 && m.body.ends_with("# EOF\n"), || format!("GET /metrics: {m}"))?;
    ensure(m.header("content-type").is_some_and(|c| c.starts_with("application/openmetrics-text")), || format!("content type {:?}", m.header("content-type")))?;
    let r = http::post(&format!("http://{target}/metrics"), "text/plain", "x")?;
    ensure(r.status == 405, || format!("POST /metrics: {r}"))?;
    let r = http::get(&format!("http://{target}/"))?;
    ensure(r.status == 404, || format!("GET /: {r}"))?;

    let prom = Prometheus::start(&target)?;
    let class = |c: &str| format!("wasm_shim_http_requests_total{{job=\"wasm\",class=\"{c}\"}}");
    let wanted: Vec<(String, f64)> = vec![
        ("up{job=\"wasm\"}".to_string(), 1.0),
        (class("2xx"), sent["2xx"] as f64),
        (class("3xx"), 0.0),
        (class("4xx"), sent["4xx"] as f64),
        (class("5xx"), sent["5xx"] as f64),
        ("wasm_shim_http_overloaded_total{job=\"wasm\"}".to_string(), 1.0),
        ("wasm_shim_http_timeouts_total{job=\"wasm\"}".to_string(), 1.0),
        ("wasm_shim_http_request_duration_seconds_count{job=\"wasm\"}".to_string(), total as f64),
        ("wasm_shim_http_requests_in_flight{job=\"wasm\"}".to_string(), 0.0),
        ("wasm_shim_http_max_concurrency{job=\"wasm\"}".to_string(), 2.0),
        ("sum(wasm_shim_start_compile_cache{job=\"wasm\"})".to_string(), 1.0),
        ("sum(wasm_shim_code_tier{job=\"wasm\"})".to_string(), 1.0),
    ];
    let wanted_refs: Vec<(&str, f64)> = wanted.iter().map(|(q, v)| (q.as_str(), *v)).collect();
    prom.wait_for(&wanted_refs, Duration::from_secs(30))?;
    // Instances ran with some linear memory; Create and Start took some time, and less than the
    // test has been running.
    let mem = prom.value("wasm_shim_http_instance_memory_bytes_sum{job=\"wasm\"}")?.unwrap_or(0.0);
    ensure(mem >= 65536.0, || format!("instance memory sum {mem}"))?;
    for q in ["wasm_shim_create_duration_seconds{job=\"wasm\"}", "wasm_shim_start_duration_seconds{job=\"wasm\"}"] {
        let v = prom.value(q)?;
        ensure(v.is_some_and(|v| v > 0.0 && v < 60.0), || format!("{q}: {v:?}"))?;
    }
    let cache = prom.query("wasm_shim_start_compile_cache{job=\"wasm\"} == 1")?;
    let tier = prom.query("wasm_shim_code_tier{job=\"wasm\"} == 1")?;
    println!(
        "  {total} requests {sent:?} scraped; compile cache {:?}, tier {:?}",
        cache.first().and_then(|(l, _)| l.get("result")),
        tier.first().and_then(|(l, _)| l.get("tier"))
    );
    drop(prom);

    cx.cd.kill(id, "SIGTERM")?;
    expect_code(&run.wait(Duration::from_secs(10)), 0)?;
    ensure(std::net::TcpStream::connect(("127.0.0.1", metrics_port)).is_err(), || "metrics port still open".to_string())
}

/// The metrics port cannot be the server's own: Create fails naming the annotation.
pub fn bad_port(cx: &Ctx) -> Result<()> {
    let port = free_port()?;
    refused(
        cx,
        "w-http-badmetrics",
        &[(wasm_shim_oci::http::PORT, port.to_string()), (wasm_shim_oci::http::METRICS_PORT, port.to_string())],
        &format!("{}=\"{port}\"", wasm_shim_oci::http::METRICS_PORT),
    )
}
