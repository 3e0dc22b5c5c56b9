//! The instance-reuse rows of `bench --only http`: the same handler served twice by this shim
//! under containerd, once with a fresh instance per request (the default) and once with
//! `wasm.containerd.io/http-instance-reuse`, wrk alternating between the two round by round at
//! each connection count. Two handlers: the `wasi:http` test component (hello) and the CPython
//! handler `make thirdparty` builds (componentize-py, `target/thirdparty/programs/python-http.wasm`,
//! or `$THIRDPARTY_DIR`; its rows are left out with a note when it is not built). There is no
//! `wasmtime serve` here to compare with: the baseline is the shim's own fresh-instance path.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use serde_json::{json, Value};

use wasm_shim_e2e::images::{self, GUESTS_IMAGE};
use wasm_shim_e2e::{http as client, Containerd, RunOpts};
use wasm_shim_oci::image::{ImageFile, ImageSpec, Style};

use super::http::{free_port, push, wrk, CONNECTIONS};

/// Requests per instance in the reuse rows.
pub const REUSE: u32 = 1000;
const PYTHON_IMAGE: &str = "docker.io/wasmtest/bench-python-http:1";

/// A served container, killed and removed on drop.
struct Served<'a> {
    cd: &'a Containerd,
    id: String,
}

impl Drop for Served<'_> {
    fn drop(&mut self) {
        let _ = self.cd.kill(&self.id, "SIGKILL");
        wasm_shim_e2e::ctr::force_remove(self.cd, &self.id);
    }
}

fn serve<'a>(cd: &'a Containerd, image: &str, id: &str, entry: &str, port: u16, reuse: u32) -> Result<Served<'a>> {
    let mut opts = RunOpts::wasm(image, id).args([entry]).detach();
    opts.extra.extend(["--net-host".into(), "--annotation".into(), format!("{}={port}", wasm_shim_oci::http::PORT)]);
    opts.extra.extend(["--annotation".into(), format!("{}={reuse}", wasm_shim_oci::http::INSTANCE_REUSE)]);
    let out = cd.run(&opts)?;
    if !out.success() {
        bail!("ctr run {entry}: {out}");
    }
    let served = Served { cd, id: id.to_string() };
    let (r, _) = client::wait_until_serving(&format!("http://127.0.0.1:{port}/"), Duration::from_secs(60))?;
    if r.status != 200 {
        bail!("{entry}: first reply {r}");
    }
    Ok(served)
}

fn python_http() -> Option<PathBuf> {
    let dir = std::env::var_os("THIRDPARTY_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| wasm_shim_e2e::workspace_root().join("target/thirdparty"));
    Some(dir.join("programs/python-http.wasm")).filter(|p| p.exists())
}

/// `{hello: {fresh: {conns: [wrk...]}, reuse: {...}}, python: {...}}`.
pub fn run(cd: &Containerd, rounds: usize) -> Result<Value> {
    let mut result = json!({ "reuse": REUSE });
    let mut handlers = vec![("hello", GUESTS_IMAGE.to_string(), "/http.wasm")];
    match python_http() {
        Some(path) => {
            let mut spec = ImageSpec::new(PYTHON_IMAGE);
            spec.files.push(ImageFile::new("/python-http.wasm", std::fs::read(&path)?, 0o755));
            spec.entrypoint = vec!["/python-http.wasm".into()];
            spec.style = Style::Classic;
            images::build_and_import(cd, &spec)?;
            handlers.push(("python", PYTHON_IMAGE.to_string(), "/python-http.wasm"));
        }
        None => eprintln!("bench: no python-http.wasm (make thirdparty): CPython reuse rows left out"),
    }
    for (name, image, entry) in handlers {
        let (p_fresh, p_reuse) = (free_port()?, free_port()?);
        let _fresh = serve(cd, &image, &format!("bench-{name}-fresh"), entry, p_fresh, 1)?;
        let _reuse = serve(cd, &image, &format!("bench-{name}-reuse"), entry, p_reuse, REUSE)?;
        for &c in CONNECTIONS {
            let key = c.to_string();
            for _ in 0..rounds {
                push(&mut result, &[name, "fresh", &key], wrk(&format!("http://127.0.0.1:{p_fresh}/"), c)?);
                push(&mut result, &[name, "reuse", &key], wrk(&format!("http://127.0.0.1:{p_reuse}/"), c)?);
            }
        }
    }
    Ok(result)
}

pub fn print(r: &Value) {
    use super::http::field;
    use super::{median, row};
    let n = &r["reuse"];
    for (name, what) in [("hello", "hello handler"), ("python", "CPython handler")] {
        if r[name].is_null() {
            continue;
        }
        for &c in CONNECTIONS {
            let key = c.to_string();
            let (fresh, reuse) = (&r[name]["fresh"][&key], &r[name]["reuse"][&key]);
            let (f, u) = (field(fresh, "rps"), field(reuse, "rps"));
            row(&format!("{what} req/s, {c} connections: reuse {n}"), &u, "/s", Some((median(&u) / median(&f), "of fresh instances")));
            row(&format!("{what} req/s, {c} connections: fresh instance per request"), &f, "/s", None);
            let (fp, up) = (field(fresh, "p99"), field(reuse, "p99"));
            row(&format!("{what} p99 latency, {c} connections: reuse {n}"), &up, "ms", Some((median(&up) / median(&fp), "of fresh instances")));
            row(&format!("{what} p99 latency, {c} connections: fresh instance per request"), &fp, "ms", None);
        }
    }
}
