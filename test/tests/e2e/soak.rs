//! Load: many tasks at once, and one long-lived shim serving task after task.
//!
//! - [`concurrent`]: `n` wasm tasks running at the same time (each its own shim), all released
//!   together; every exit status must arrive, right, by event and by `ctr task delete`, and
//!   containerd's open descriptors must come back to where they were.
//! - [`pod_shim`]: a holder task keeps one shim alive (the CRI's sandbox-id grouping) while `n`
//!   tasks run through it one after another; its RSS, descriptors and threads are sampled and
//!   must not grow.
//!
//! The harness then checks, as after every trial, that no process, mount, cgroup, state dir or
//! snapshot is left.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use wasm_shim_e2e::ctr::ensure;
use wasm_shim_e2e::images::GUESTS_IMAGE;
use wasm_shim_e2e::{leaks, process, RunOpts, SHIM_NAME};

use super::Ctx;

/// Open descriptors of process `pid`.
fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map(|d| d.count()).unwrap_or(0)
}

/// VmRSS of `pid` in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("VmRSS:").map(|v| v.trim().trim_end_matches("kB").trim().to_string())))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// containerd's descriptors once they stop moving (its gRPC connections from the last ctr
/// commands close a moment after them).
fn settled_fds(pid: u32) -> usize {
    let mut last = fds(pid);
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(100));
        let now = fds(pid);
        if now == last {
            return now;
        }
        last = now;
    }
    last
}

/// Runs `f(i)` for `0..n` on `workers` threads; the first error wins.
fn parallel(n: usize, workers: usize, f: impl Fn(usize) -> Result<()> + Sync) -> Result<()> {
    let next = AtomicUsize::new(0);
    let first_error = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= n || first_error.lock().unwrap().is_some() {
                    break;
                }
                if let Err(e) = f(i) {
                    first_error.lock().unwrap().get_or_insert(e);
                }
            });
        }
    });
    match first_error.into_inner().unwrap() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

pub fn concurrent(cx: &Ctx, n: usize) -> Result<()> {
    let containerd = cx.cd.daemon_pid().context("containerd is not running")?;
    // Warm up (compile cache, lazily opened files), then take containerd's baseline.
    let out = cx.cd.run(&RunOpts::wasm(GUESTS_IMAGE, "c-warm").args(["/exit-code.wasm", "0"]))?;
    ensure(out.success(), || format!("{out}"))?;
    let fds_before = settled_fds(containerd);
    let id = |i: usize| format!("c-{i}");
    // Statuses 1..=125, neighbours differ (0 would not tell a lost status from a right one;
    // WASI preview 1 has no exit status above 125: wasmtime turns `exit(126)` and up into a
    // trap, status 125).
    let code = |i: usize| (i % 125) + 1;

    let t = Instant::now();
    let started = parallel(n, 6, |i| {
        let opts = RunOpts::wasm(GUESTS_IMAGE, &id(i)).args(["/exit-code.wasm".to_string(), code(i).to_string(), "when".into(), "/go".into()]).detach().timeout(Duration::from_secs(120));
        let out = cx.cd.run(&opts)?;
        ensure(out.success(), || format!("starting {}: {out}", id(i)))
    });
    let start_took = t.elapsed();
    // All of them running at once, each in its own shim.
    let running = || -> Result<usize> {
        Ok(cx.cd.ctr_ok(["tasks", "ls"])?.lines().filter(|l| l.starts_with("c-") && l.contains("RUNNING")).count())
    };
    let peak = running()?;
    let shims = leaks::shim_daemons(&cx.cd.socket, SHIM_NAME);
    let shim_rss: u64 = shims.iter().map(|d| rss_kib(d.pid)).sum();
    let shim_fds: usize = shims.iter().map(|d| fds(d.pid)).sum();
    let fds_peak = fds(containerd);
    println!(
        "  {n} tasks started in {start_took:.1?} (6 at a time); {peak} running at once in {} shims (RSS {} MiB, {:.1} fds each); containerd fds {fds_before} -> {fds_peak}",
        shims.len(),
        shim_rss >> 10,
        shim_fds as f64 / shims.len().max(1) as f64
    );
    started?;
    ensure(peak == n, || format!("only {peak} of {n} tasks were running at once"))?;

    // Release them all: each waits for /go in its rootfs (the overlay mount the host sees).
    let t = Instant::now();
    for i in 0..n {
        let go = cx.cd.task_state_dir().join(id(i)).join("rootfs").join("go");
        std::fs::write(&go, b"").with_context(|| go.display().to_string())?;
    }
    let all_stopped = process::poll(Duration::from_secs(120), || (running().ok()? == 0).then_some(()));
    let exit_took = t.elapsed();
    ensure(all_stopped.is_some(), || format!("{} tasks still running 120 s after release", running().unwrap_or(0)))?;

    // Every status by event, then by delete.
    let mut lost = Vec::new();
    let mut wrong = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    for i in 0..n {
        let exit = loop {
            match cx.events.for_container(&id(i)).into_iter().find(|e| e.topic == "/tasks/exit") {
                Some(e) => break Some(e),
                None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                None => break None,
            }
        };
        match exit {
            None => lost.push(id(i)),
            Some(e) if e.body["exit_status"].as_u64() != Some(code(i) as u64) => wrong.push(format!("{}: {}", id(i), e.body["exit_status"])),
            Some(_) => {}
        }
    }
    let deleted_wrong = std::sync::Mutex::new(Vec::new());
    parallel(n, 6, |i| {
        let out = cx.cd.ctr_output(["tasks", "delete", &id(i)])?;
        ensure(out.success(), || format!("{out}"))?;
        let want = format!("non-zero exit code {}", code(i));
        if !out.stderr.contains(&want) {
            deleted_wrong.lock().unwrap().push(format!("{}: {}", id(i), out.stderr.trim()));
        }
        cx.cd.container_rm(&id(i))
    })?;
    let deleted_wrong = deleted_wrong.into_inner().unwrap();
    let gone = process::poll(Duration::from_secs(30), || leaks::shim_daemons(&cx.cd.socket, SHIM_NAME).is_empty().then_some(()));
    // containerd closes a dead shim's connections in its own time: on a loaded machine that can
    // take more than the settling window, so wait (bounded) for the count to come back.
    let fds_after = process::poll(Duration::from_secs(10), || (fds(containerd) <= fds_before).then_some(()))
        .map(|()| fds(containerd))
        .unwrap_or_else(|| settled_fds(containerd));
    println!(
        "  released: all exited in {exit_took:.1?}; exit events lost {}, wrong {}; delete statuses wrong {}; shims left {}; containerd fds {fds_before} -> {fds_after}",
        lost.len(),
        wrong.len(),
        deleted_wrong.len(),
        if gone.is_some() { 0 } else { leaks::shim_daemons(&cx.cd.socket, SHIM_NAME).len() }
    );
    ensure(lost.is_empty(), || format!("no exit event for {lost:?}"))?;
    ensure(wrong.is_empty(), || format!("wrong exit statuses in events: {wrong:?}"))?;
    ensure(deleted_wrong.is_empty(), || format!("ctr task delete reported wrong statuses: {deleted_wrong:?}"))?;
    ensure(gone.is_some(), || "shims still running after every task was deleted".into())?;
    ensure(fds_after <= fds_before, || format!("containerd holds {} more descriptors than before", fds_after - fds_before))
}

/// One sample of the long-lived shim.
struct Sample {
    tasks: usize,
    rss_kib: u64,
    fds: usize,
    threads: usize,
}

pub fn pod_shim(cx: &Ctx, n: usize) -> Result<()> {
    let pod = "p-holder";
    let out = cx.cd.run(&RunOpts::wasm(GUESTS_IMAGE, pod).args(["/sleep.wasm", "3600"]).detach().in_pod(pod))?;
    ensure(out.success(), || format!("{out}"))?;
    let result = (|| -> Result<()> {
        cx.cd.wait_status(pod, "RUNNING", Duration::from_secs(10))?;
        let shim = match leaks::shim_daemons(&cx.cd.socket, SHIM_NAME).iter().filter(|d| d.id == pod).collect::<Vec<_>>().as_slice() {
            [one] => one.pid,
            other => bail!("expected one shim for {pod}: {other:?}"),
        };
        let sample = |tasks| Sample { tasks, rss_kib: rss_kib(shim), fds: fds(shim), threads: threads(shim) };
        let warm = (n / 10).max(10);
        let mut samples = vec![sample(0)];
        let t = Instant::now();
        for i in 0..n {
            let id = format!("p-task-{i}");
            let out = cx.cd.run(&RunOpts::wasm(GUESTS_IMAGE, &id).in_pod(pod))?;
            ensure(out.success() && out.stdout == "hello from wasm\n", || format!("task {i} of {n}: {out}"))?;
            if (i + 1) % warm == 0 {
                // Its descriptors close as the task's delete returns; give it a moment.
                std::thread::sleep(Duration::from_millis(100));
                samples.push(sample(i + 1));
            }
        }
        let took = t.elapsed();
        let servers: Vec<u32> = leaks::shim_daemons(&cx.cd.socket, SHIM_NAME).iter().map(|d| d.pid).collect();
        println!("  {n} tasks through shim {shim} in {took:.1?} ({:.0?} each)", took / n as u32);
        for s in &samples {
            println!("    after {:>5} tasks: RSS {:>6} KiB, fds {:>3}, threads {:>3}", s.tasks, s.rss_kib, s.fds, s.threads);
        }
        ensure(servers == [shim], || format!("the tasks did not all run in shim {shim}: shims now {servers:?}"))?;
        // From the second sample (the allocator has warmed up by then) to the last.
        let (first, last) = (&samples[2], samples.last().unwrap());
        let growth = last.rss_kib as i64 - first.rss_kib as i64;
        println!(
            "  from {} to {} tasks: RSS {:+} KiB, fds {:+}, threads {:+}",
            first.tasks,
            last.tasks,
            growth,
            last.fds as i64 - first.fds as i64,
            last.threads as i64 - first.threads as i64
        );
        ensure(last.fds <= first.fds, || format!("the shim's descriptors grew from {} to {}", first.fds, last.fds))?;
        ensure(last.threads <= first.threads + 2, || format!("the shim's threads grew from {} to {}", first.threads, last.threads))?;
        ensure(growth <= RSS_GROWTH_KIB, || format!("the shim's RSS grew by {growth} KiB (bound {RSS_GROWTH_KIB} KiB)"))
    })();
    let _ = cx.cd.kill(pod, "SIGKILL");
    let _ = cx.cd.wait_status(pod, "STOPPED", Duration::from_secs(10));
    let _ = cx.cd.task_delete(pod);
    let _ = cx.cd.container_rm(pod);
    result
}

/// How much a long-lived shim's RSS may grow between the warm-up sample and the last one.
const RSS_GROWTH_KIB: i64 = 1024;

/// More tasks of one pod blocked in Wait (a `ctr run` that is not detached holds one for the
/// task's life) than the shim keeps idle request workers: every other request still gets an
/// answer, and every waiter gets its task's exit status.
pub fn pod_shim_many_waiters(cx: &Ctx) -> Result<()> {
    const WAITERS: usize = 8;
    let pod = "p-wait-0";
    let ids: Vec<String> = (0..WAITERS).map(|i| format!("p-wait-{i}")).collect();
    let mut runs = Vec::new();
    let result = (|| -> Result<()> {
        for id in &ids {
            // The first one makes the pod's shim; the rest join it.
            let mut run = cx.cd.spawn(&RunOpts::wasm(GUESTS_IMAGE, id).args(["/sleep.wasm", "60"]).in_pod(pod))?;
            run.wait_for_stdout("sleeping", Duration::from_secs(20))?;
            runs.push(run);
        }
        let shims: Vec<u32> = leaks::shim_daemons(&cx.cd.socket, SHIM_NAME).iter().map(|d| d.pid).collect();
        ensure(shims.len() == 1, || format!("expected the pod's one shim, found {shims:?}"))?;
        let t = Instant::now();
        let out = cx.cd.run(&RunOpts::wasm(GUESTS_IMAGE, "p-wait-hello").in_pod(pod))?;
        println!("  {WAITERS} waiting tasks in shim {}: a hello in the same pod took {:.0?}", shims[0], t.elapsed());
        ensure(out.success() && out.stdout == "hello from wasm\n", || format!("hello beside {WAITERS} waiters: {out}"))?;
        for id in &ids {
            cx.cd.kill(id, "SIGKILL")?;
        }
        for (id, run) in ids.iter().zip(runs.iter_mut()) {
            let out = run.wait(Duration::from_secs(20));
            // ctr reports the exit status of a SIGKILLed task as 137.
            ensure(out.code == Some(137), || format!("{id}: expected exit 137 from the waiting ctr: {out}"))?;
        }
        Ok(())
    })();
    for id in &ids {
        let _ = cx.cd.kill(id, "SIGKILL");
    }
    for run in runs.iter_mut() {
        run.wait(Duration::from_secs(10));
    }
    result
}
