//! `install::*`: `containerd-shim-wasm-v1 install` and `doctor` on a real containerd 1.6.
//!
//! The harness's containerd is restarted on a config without the `wasm` runtime and a PATH
//! without the shim (only an empty private bin directory first): a pod with handler `wasm`
//! fails and `doctor` fails naming the fix. Then `install --config <that file> --bin-dir <that
//! dir>` puts the binary and the runtime there, containerd is restarted as a node's would be,
//! `doctor` reports the runtime entry and the shim ok, and a pod with handler `wasm` runs a
//! wasm container through the CRI on the installed copy of the shim. Whatever happens, the
//! harness's own config and PATH are restored afterwards.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use wasm_shim_e2e::cri::WASM_HANDLER;
use wasm_shim_e2e::ctr::ensure;
use wasm_shim_e2e::leaks;
use wasm_shim_e2e::process::{self, Output, Stdin};
use wasm_shim_e2e::SHIM_NAME;

use super::cri::{log_has, need_wasm, run_to_exit, show_log, wasm, with_pod};
use super::Ctx;

/// The harness's config without its `[… .runtimes.wasm]` table (header to the next header).
fn without_wasm_runtime(config: &str) -> String {
    let mut out = String::new();
    let mut skipping = false;
    for line in config.split_inclusive('\n') {
        let t = line.trim_start();
        if t.starts_with('[') {
            skipping = t.trim_end().ends_with(".runtimes.wasm]");
        }
        if !skipping {
            out.push_str(line);
        }
    }
    out
}

fn shim_cmd(cx: &Ctx, args: &[&str]) -> Result<Output> {
    let mut c = Command::new(&cx.cd.shim);
    c.args(args);
    process::run(c, Stdin::Null, Duration::from_secs(60))
}

fn restart(cx: &Ctx) -> Result<()> {
    cx.cd.stop_daemon()?;
    cx.cd.start_daemon()
}

/// Puts the harness's launch back, whatever the trial did.
struct Restore<'a>(&'a Ctx);

impl Drop for Restore<'_> {
    fn drop(&mut self) {
        let _ = self.0.cd.stop_daemon();
        self.0.cd.set_launch(None);
        if let Err(e) = self.0.cd.start_daemon() {
            eprintln!("install trial: cannot restart the harness's containerd: {e:#}");
        }
    }
}

pub fn install_then_pod(cx: &Ctx) -> Result<()> {
    need_wasm(cx)?;
    let dir = cx.cd.dir.join("install-trial");
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin)?;
    let config = dir.join("config.toml");
    let harness = std::fs::read_to_string(cx.cd.config_file())?;
    let before = without_wasm_runtime(&harness);
    ensure(harness.contains(".runtimes.wasm]") && !before.contains("runtimes.wasm") && !before.contains("io.containerd.wasm.v1"), || {
        format!("could not take the wasm runtime out of the harness's config:\n{before}")
    })?;
    std::fs::write(&config, &before)?;

    // containerd's PATH: the private bin dir, then the harness's PATH without the shim's dir.
    let harness_path = cx.cd.daemon_path();
    let rest = harness_path.split_once(':').map(|(_, r)| r).unwrap_or("");
    let path = format!("{}:{rest}", bin.display());
    let containerd = path
        .split(':')
        .map(|d| Path::new(d).join("containerd"))
        .find(|p| p.is_file())
        .context("containerd not on PATH")?;
    let elsewhere: Vec<PathBuf> = path
        .split(':')
        .map(|d| Path::new(d).join(SHIM_NAME))
        .chain(containerd.parent().map(|d| d.join(SHIM_NAME)))
        .filter(|p| p.exists())
        .collect();
    ensure(elsewhere.is_empty(), || {
        format!("a shim is already where containerd looks ({elsewhere:?}): the trial could not tell the installed copy")
    })?;

    let _restore = Restore(cx);
    cx.cd.stop_daemon()?;
    cx.cd.set_launch(Some((config.clone(), path)));
    cx.cd.start_daemon()?;

    // Before: no runtime `wasm`, and doctor says so with the fix.
    let cfg = config.to_str().unwrap();
    let err = match with_pod(cx, "install-before", WASM_HANDLER, |_, _| Ok(())) {
        Ok(()) => bail!("a pod with handler wasm ran before install"),
        Err(e) => format!("{e:#}"),
    };
    ensure(err.contains("no runtime for \"wasm\" is configured"), || {
        format!("RunPodSandbox failed otherwise than expected: {err}")
    })?;
    let doc = shim_cmd(cx, &["doctor", "--config", cfg])?;
    println!("  doctor before install (exit {:?}):\n{}", doc.code, doc.stdout);
    ensure(doc.code == Some(1), || format!("doctor did not fail: {doc}"))?;
    ensure(
        doc.stdout.lines().any(|l| l.starts_with("fail") && l.contains("no runtime `wasm`") && l.contains(&format!("install --config {cfg}"))),
        || format!("no failing line for the missing runtime with its fix: {doc}"),
    )?;
    ensure(
        doc.stdout.lines().any(|l| l.starts_with("fail") && l.contains(SHIM_NAME) && l.contains("nor next to containerd")),
        || format!("no failing line for the missing shim binary: {doc}"),
    )?;

    // install, twice.
    let containerd = containerd.to_str().unwrap();
    let bin_dir = bin.to_str().unwrap();
    let args = ["install", "--config", cfg, "--bin-dir", bin_dir, "--containerd", containerd];
    let first = shim_cmd(cx, &args)?;
    println!("  install:\n{}", first.stdout);
    ensure(first.success(), || format!("install failed: {first}"))?;
    let installed = bin.join(SHIM_NAME);
    ensure(std::fs::read(&installed)? == std::fs::read(&cx.cd.shim)?, || {
        format!("{} is not a copy of {}", installed.display(), cx.cd.shim.display())
    })?;
    let after = std::fs::read_to_string(&config)?;
    let block = "\n# Added by `containerd-shim-wasm-v1 install`: pods with `runtimeClassName: wasm` run on the wasm shim.\n\
                 [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.wasm]\n  runtime_type = \"io.containerd.wasm.v1\"\n  pod_annotations = [\"wasm.containerd.io/*\"]\n";
    ensure(after.contains(block) && after.replacen(block, "", 1) == before, || {
        format!("the config is not the old one plus the runtime block:\n{after}")
    })?;
    let backups: Vec<String> = std::fs::read_dir(&dir)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("config.toml.bak-"))
        .collect();
    ensure(backups.len() == 1, || format!("expected one backup, found {backups:?}"))?;
    ensure(std::fs::read_to_string(dir.join(&backups[0]))? == before, || "the backup is not the old config".into())?;
    let second = shim_cmd(cx, &args)?;
    ensure(second.success() && second.stdout.contains("unchanged") && !second.stdout.contains("backup"), || {
        format!("a second install did something: {second}")
    })?;
    ensure(std::fs::read_to_string(&config)? == after, || "a second install changed the config".into())?;

    // containerd restarted as a node's would be: the runtime is there, the shim is the copy.
    restart(cx)?;
    let doc = shim_cmd(cx, &["doctor", "--config", cfg])?;
    println!("  doctor after install (exit {:?}):\n{}", doc.code, doc.stdout);
    let ok_entry = format!("ok    {cfg}: runtime `wasm` → io.containerd.wasm.v1 ([plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.wasm]");
    ensure(doc.stdout.lines().any(|l| l.starts_with(&ok_entry)), || format!("doctor does not report the entry ok: {doc}"))?;
    ensure(doc.stdout.lines().any(|l| l.starts_with("ok") && l.contains(&installed.display().to_string())), || {
        format!("doctor does not find the installed shim: {doc}")
    })?;
    ensure(doc.stdout.lines().any(|l| l.starts_with("ok    containerd pid")), || format!("doctor did not find the running containerd: {doc}"))?;
    ensure(doc.code == Some(0), || format!("doctor failed after install: {doc}"))?;

    with_pod(cx, "installed", WASM_HANDLER, |cri, pod| {
        let (st, log) = run_to_exit(cri, pod, wasm("hello", "/hello.wasm"), Duration::from_secs(30))?;
        // The pod's shim (still serving the sandbox) is the installed copy.
        let shims = leaks::shim_daemons(&cx.cd.socket, SHIM_NAME);
        let exes: Vec<PathBuf> = shims.iter().filter_map(|s| std::fs::read_link(format!("/proc/{}/exe", s.pid)).ok()).collect();
        println!("  shim(s) of the pod: {exes:?}");
        ensure(!exes.is_empty() && exes.iter().all(|e| *e == installed), || {
            format!("the pod's shim is not {}: {exes:?}", installed.display())
        })?;
        ensure(st.exit_code == 0, || format!("exit code {}", st.exit_code))?;
        ensure(log_has(&log, "stdout", "hello from wasm"), || format!("no stdout record \"hello from wasm\": {}", show_log(&log)))
    })
}
