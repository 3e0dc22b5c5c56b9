//! `faults::*`: what happens around a running task when something else fails.
//!
//! - `containerd_restart`: containerd stops (SIGTERM, as a service manager does) while two wasm
//!   tasks run and starts again on the same socket, root and state. Both tasks keep running
//!   while it is away; one exits meanwhile, and its exit (published by the shim, which retries
//!   until the new containerd takes it) and the other's later exit are both reported.
//! - `create_cancelled`: containerd gives up on a Create that waits for a compile; its Delete
//!   cancels it and nothing is left.
//! - `shim_sigkill`: the shim is SIGKILLed under a running task. containerd runs the shim binary's
//!   `delete` action, which must kill the task and leave no process, mount, cgroup, runc state or
//!   socket; the task is reported exited (137).
//! - `noisy_*`: a guest that spins, allocates without end, floods stdout or never reads its
//!   stdin, in a pod-like group (one shim serves it and its neighbour): the neighbour still
//!   starts and finishes promptly, and `ctr task kill` ends the bad one promptly.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use wasm_shim_e2e::ctr::ensure;
use wasm_shim_e2e::images::GUESTS_IMAGE;
use wasm_shim_e2e::leaks::{self, ShimDaemon};
use wasm_shim_e2e::{process, RunOpts, Stdin, SHIM_NAME};

use super::{expect_code, Ctx};

/// How long a neighbour's `ctr run --rm` of hello may take while a bad guest runs.
const NEIGHBOUR_BOUND: Duration = Duration::from_secs(5);
/// How long `ctr task kill` (SIGTERM) may take to end a bad guest.
const KILL_BOUND: Duration = Duration::from_secs(2);

/// The shim servers of this containerd started for `id` (its grouping id).
fn shims_for(cx: &Ctx, id: &str) -> Vec<ShimDaemon> {
    leaks::shim_daemons(&cx.cd.socket, SHIM_NAME).into_iter().filter(|d| d.id == id).collect()
}

/// Whether `pid` is a live process (a zombie nobody reaped yet does not count).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// `ctr task delete ID` and the exit status it reports: ctr 1.6 exits 0 and warns `task ID exit
/// with non-zero exit code N` on stderr (nothing for 0).
fn delete_status(cx: &Ctx, id: &str) -> Result<i32> {
    let out = cx.cd.ctr_output(["tasks", "delete", id])?;
    ensure(out.success(), || format!("{out}"))?;
    match out.stderr.split("non-zero exit code ").nth(1) {
        Some(rest) => rest.trim_start().split(|c: char| !c.is_ascii_digit()).next().unwrap_or("").parse().with_context(|| format!("{out}")),
        None => Ok(0),
    }
}

fn detached(id: &str, args: &[&str]) -> RunOpts {
    RunOpts::wasm(GUESTS_IMAGE, id).args(args.iter().copied()).detach()
}

fn run_ok(cx: &Ctx, opts: &RunOpts) -> Result<()> {
    let out = cx.cd.run(opts)?;
    ensure(out.success(), || format!("{out}"))
}

pub fn containerd_restart(cx: &Ctx) -> Result<()> {
    let (early, late) = ("f-restart-early", "f-restart-late");
    // `early` exits with 7 while containerd is away; `late` runs until it is killed after.
    run_ok(cx, &detached(early, &["/exit-code.wasm", "7", "after", "4"]))?;
    run_ok(cx, &detached(late, &["/sleep.wasm", "600"]))?;
    for id in [early, late] {
        cx.cd.wait_status(id, "RUNNING", Duration::from_secs(10))?;
    }
    let pids = [cx.cd.task_pid(early)?, cx.cd.task_pid(late)?];
    let shims: Vec<u32> = [early, late].iter().flat_map(|id| shims_for(cx, id)).map(|d| d.pid).collect();
    ensure(shims.len() == 2, || format!("expected one shim per task: {shims:?}"))?;
    let log_start = std::fs::metadata(&cx.cd.log)?.len();

    let t = Instant::now();
    let status = cx.cd.stop_daemon()?;
    println!("  containerd stopped ({status}) in {:.2?}", t.elapsed());
    ensure(shims.iter().all(|p| alive(*p)), || format!("a shim died with containerd: {shims:?}"))?;
    ensure(alive(pids[1]), || format!("{late} (pid {}) died with containerd", pids[1]))?;
    // The early task ends while nobody listens; its shim keeps the exit and retries publishing.
    let gone = process::poll(Duration::from_secs(15), || (!alive(pids[0])).then_some(()));
    ensure(gone.is_some(), || format!("{early} (pid {}) did not exit within 15 s", pids[0]))?;
    std::thread::sleep(Duration::from_secs(1));
    let away = t.elapsed();
    cx.cd.start_daemon()?;
    cx.events.resubscribe()?;
    println!("  containerd back after {away:.1?} away");

    cx.cd.wait_status(late, "RUNNING", Duration::from_secs(10)).context("after the restart")?;
    cx.cd.wait_status(early, "STOPPED", Duration::from_secs(10)).context("after the restart")?;
    // The shim's retried /tasks/exit reaches the new containerd (its log names the topic and
    // the namespace; the event recorder may have subscribed again in time to see it too).
    let forwarded = process::poll(Duration::from_secs(10), || {
        let log = std::fs::read(&cx.cd.log).ok()?;
        let new = String::from_utf8_lossy(&log[(log_start as usize).min(log.len())..]).into_owned();
        let after_restart = new.split("starting containerd").nth(1)?.to_string();
        after_restart
            .lines()
            .any(|l| l.contains("event forwarded") && l.contains("/tasks/exit") && l.contains(&format!("ns={}", cx.cd.namespace)))
            .then_some(())
    });
    let seen = cx.events.for_container(early).into_iter().find(|e| e.topic == "/tasks/exit");
    println!(
        "  {early}: exit forwarded to the new containerd: {}; seen by `ctr events` too: {}",
        forwarded.is_some(),
        seen.as_ref().map(|e| e.line.as_str()).unwrap_or("no (it subscribed again after)")
    );
    ensure(forwarded.is_some() || seen.is_some(), || format!("{early}'s /tasks/exit never reached the new containerd"))?;
    if let Some(e) = &seen {
        ensure(e.body["exit_status"] == 7, || format!("exit event: {}", e.line))?;
    }
    let early_status = delete_status(cx, early)?;
    ensure(early_status == 7, || format!("{early}: ctr task delete reports {early_status}, not 7"))?;

    // After the restart: a kill, its exit event and status, as usual.
    let t = Instant::now();
    cx.cd.kill(late, "SIGTERM")?;
    let exit = cx.events.wait_for(late, "/tasks/exit", Duration::from_secs(10))?;
    println!("  {late}: SIGTERM after the restart -> {} in {:.2?}", exit.body["exit_status"], t.elapsed());
    ensure(exit.body["exit_status"] == 143, || format!("exit event: {}", exit.line))?;
    cx.cd.wait_status(late, "STOPPED", Duration::from_secs(5))?;
    let late_status = delete_status(cx, late)?;
    ensure(late_status == 143, || format!("{late}: ctr task delete reports {late_status}, not 143"))?;
    for id in [early, late] {
        cx.cd.container_rm(id)?;
    }
    let shims_gone = process::poll(Duration::from_secs(5), || shims.iter().all(|p| !alive(*p)).then_some(()));
    ensure(shims_gone.is_some(), || format!("shims still running after delete: {shims:?}"))
}

pub fn shim_sigkill(cx: &Ctx) -> Result<()> {
    let id = "f-shim-kill";
    run_ok(cx, &detached(id, &["/sleep.wasm", "600"]))?;
    cx.cd.wait_status(id, "RUNNING", Duration::from_secs(10))?;
    let pid = cx.cd.task_pid(id)?;
    let shim = match shims_for(cx, id).as_slice() {
        [one] => one.pid,
        other => bail!("expected one shim for {id}: {other:?}"),
    };
    let socket = leaks::shim_socket(&cx.cd.socket, &cx.cd.namespace, id);
    ensure(socket.exists(), || format!("no shim socket at {}", socket.display()))?;
    let cgroup = Path::new("/sys/fs/cgroup/pids").join(cx.cd.cgroup_path(id).trim_start_matches('/'));
    ensure(cgroup.is_dir(), || format!("no cgroup {}", cgroup.display()))?;

    let t = Instant::now();
    leaks::kill_pids(&[shim]);
    // containerd sees the shim's connection drop, runs `containerd-shim-wasm-v1 delete` in the
    // bundle and reports the task exited.
    let exit = cx.events.wait_for(id, "/tasks/exit", Duration::from_secs(20))?;
    let took = t.elapsed();
    println!("  shim {shim} SIGKILLed -> /tasks/exit {} after {took:.2?}", exit.body["exit_status"]);
    ensure(exit.body["exit_status"] == 137, || format!("exit event: {}", exit.line))?;
    let gone = process::poll(Duration::from_secs(5), || (!alive(pid)).then_some(()));
    ensure(gone.is_some(), || format!("the task's process {pid} survived its shim's cleanup"))?;
    ensure(!cgroup.exists(), || format!("{} survived the cleanup", cgroup.display()))?;
    ensure(!socket.exists(), || format!("the shim's socket {} survived the cleanup", socket.display()))?;
    let listed = cx.cd.task_status(id)?;
    ensure(listed.is_none() || listed.as_deref() == Some("STOPPED"), || format!("ctr task ls shows {id} {listed:?}"))?;
    let _ = cx.cd.ctr_output(["tasks", "delete", id]);
    cx.cd.container_rm(id)
    // The harness then checks that no process, mount, cgroup, state dir or snapshot is left.
}

/// A bad guest `args` (with `stdin`) runs until it prints `marker`, grouped with a neighbour in
/// one shim; the neighbour (hello) runs to completion within [`NEIGHBOUR_BOUND`]; then SIGTERM
/// ends the bad one within [`KILL_BOUND`] with 143.
fn noisy(cx: &Ctx, id: &str, args: &[&str], stdin: Stdin, marker: &str) -> Result<()> {
    let opts = RunOpts::wasm(GUESTS_IMAGE, id).args(args.iter().copied()).stdin(stdin.clone()).timeout(Duration::from_secs(120)).in_pod(id);
    // Foreground, so its stdout is read as fast as it comes (the flood), but only the first
    // 64 KiB are kept.
    let mut bad = process::Spawned::start_capped(cx.cd.ctr(opts.ctr_args()), stdin, 64 << 10)?;
    bad.wait_for_stdout(marker, Duration::from_secs(20))?;
    std::thread::sleep(Duration::from_millis(500));
    let flooded = bad.stdout_bytes();

    let neighbour = format!("{id}-neighbour");
    let t = Instant::now();
    let out = cx.cd.run(&RunOpts::wasm(GUESTS_IMAGE, &neighbour).timeout(Duration::from_secs(60)).in_pod(id))?;
    let took = t.elapsed();
    let shims = shims_for(cx, id).len();
    let bad_running = bad.running();

    let t = Instant::now();
    let killed = cx.cd.kill(id, "SIGTERM");
    let end = bad.wait(Duration::from_secs(20));
    let kill_took = t.elapsed();
    println!(
        "  neighbour hello in {took:.2?} (same shim: {}), bad guest ended by SIGTERM in {kill_took:.2?} (exit {:?}){}",
        shims == 1,
        end.code,
        if flooded > 0 { format!("; {} MiB of stdout read in the first 0.5 s", flooded >> 20) } else { String::new() }
    );
    ensure(out.success() && out.stdout == "hello from wasm\n", || format!("neighbour: {out}"))?;
    ensure(took < NEIGHBOUR_BOUND, || format!("the neighbour took {took:?} (bound {NEIGHBOUR_BOUND:?})"))?;
    ensure(shims == 1, || format!("expected the bad guest and its neighbour in one shim, found {shims} shim(s)"))?;
    ensure(bad_running, || format!("the bad guest ended on its own: {}", bad.wait(Duration::ZERO)))?;
    killed?;
    expect_code(&end, 143)?;
    ensure(kill_took < KILL_BOUND, || format!("SIGTERM took {kill_took:?} to end it (bound {KILL_BOUND:?})"))
}

pub fn noisy_spin(cx: &Ctx) -> Result<()> {
    noisy(cx, "f-spin", &["/spin.wasm"], Stdin::Null, "spinning")
}

pub fn noisy_flood(cx: &Ctx) -> Result<()> {
    noisy(cx, "f-flood", &["/flood.wasm"], Stdin::Null, "flooding")
}

/// 16 MiB offered on stdin to a guest that never reads it: the shim's relay and ctr block on
/// full pipes, nothing else does.
pub fn noisy_unread_stdin(cx: &Ctx) -> Result<()> {
    noisy(cx, "f-no-read", &["/sleep.wasm", "600"], Stdin::Bytes(vec![b'y'; 16 << 20]), "sleeping")
}

/// The allocator under a 1 GiB limit: its neighbour runs while it eats memory, and it ends on its
/// own with a clean trap (125) and an OOM event once it reaches the limit.
pub fn noisy_memhog(cx: &Ctx) -> Result<()> {
    let id = "f-memhog";
    let opts = RunOpts::wasm(GUESTS_IMAGE, id).args(["/memhog.wasm"]).memory_limit(1 << 30).timeout(Duration::from_secs(120)).in_pod(id);
    let mut bad = cx.cd.spawn(&opts)?;
    bad.wait_for_stdout("allocated 64 MiB", Duration::from_secs(20))?;
    let neighbour = RunOpts::wasm(GUESTS_IMAGE, "f-memhog-neighbour").timeout(Duration::from_secs(60)).in_pod(id);
    let t = Instant::now();
    let out = cx.cd.run(&neighbour)?;
    let took = t.elapsed();
    let end = bad.wait(Duration::from_secs(60));
    let last = end.stdout.lines().last().unwrap_or("").to_string();
    println!("  neighbour hello in {took:.2?}; the allocator: exit {:?} after {:.1?}, last line {last:?}", end.code, end.duration);
    ensure(out.success() && out.stdout == "hello from wasm\n", || format!("neighbour: {out}"))?;
    ensure(took < NEIGHBOUR_BOUND, || format!("the neighbour took {took:?} (bound {NEIGHBOUR_BOUND:?})"))?;
    expect_code(&end, 125)?;
    cx.events.wait_for(id, "/tasks/oom", Duration::from_secs(5))?;
    Ok(())
}

/// containerd gives up on a Create that waits for a compile (its caller's context ends: here
/// `ctr run` is SIGKILLed; for the kubelet, its runtime request timeout). containerd then calls
/// Delete and Shutdown on the shim: the Create is cancelled, its compile helper, init and cgroup
/// go, and the shim exits. Before, Delete answered "not found", Shutdown ended the shim, and
/// the init, the helper and the cgroup were left behind.
pub fn create_cancelled(cx: &Ctx) -> Result<()> {
    let id = "f-create-cancel";
    // A module nobody compiled, in a cgroup allowed 1% of a CPU: the compile Create waits for
    // runs there and takes seconds.
    let wasm = super::cache::unique_hello(&super::cache::nonce(id))?;
    let (rootfs, _) = super::cache::setup(cx, id, &wasm)?;
    let spec = wasm_shim_e2e::images::config_spec(
        &cx.cd,
        id,
        &rootfs,
        &["/app.wasm"],
        serde_json::json!({ "cpu": { "quota": 1000, "period": 100000 } }),
    )?;
    let procs = Path::new("/sys/fs/cgroup/pids").join(cx.cd.cgroup_path(id).trim_start_matches('/')).join("cgroup.procs");
    let cgroup = procs.parent().unwrap().to_path_buf();
    let mut ctr = cx.cd.spawn(&RunOpts::wasm("", id).config(&spec))?;
    let helper = process::poll(Duration::from_secs(60), || {
        let pids = std::fs::read_to_string(&procs).ok()?;
        pids.lines().find(|p| std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| c.windows(13).any(|w| w == b"compile-cache"))).map(str::to_owned)
    });
    let shim = shims_for(cx, id).first().map(|d| d.pid);
    // containerd's context for the Create ends with its client.
    let out = ctr.wait(Duration::ZERO);
    let Some(helper) = helper else {
        let _ = std::fs::remove_dir_all(&rootfs);
        bail!("no compile helper appeared in {} while ctr ran: {out}", cgroup.display());
    };
    println!("  ctr killed while Create waited for compile helper {helper}");
    let t = Instant::now();
    let cleaned = process::poll(Duration::from_secs(15), || (!cgroup.exists() && shims_for(cx, id).is_empty()).then_some(()));
    let took = t.elapsed();
    let _ = std::fs::remove_dir_all(&rootfs);
    ensure(cleaned.is_some(), || {
        format!(
            "15 s after the Create's caller went: cgroup {} exists: {}, shim {shim:?} alive: {}, procs {:?}\n{}",
            cgroup.display(),
            cgroup.exists(),
            shim.is_some_and(alive),
            std::fs::read_to_string(&procs).unwrap_or_default(),
            cx.cd.log_tail(30)
        )
    })?;
    println!("  cgroup and shim gone {took:.2?} after the client");
    let helper_pid: u32 = helper.parse()?;
    ensure(!alive(helper_pid), || format!("compile helper {helper} survived"))?;
    let log = cx.cd.log_lines_with("delete while being created", 5);
    ensure(!log.is_empty(), || format!("the shim never saw a Delete of the Create in progress:\n{}", cx.cd.log_tail(30)))?;
    let _ = cx.cd.ctr_output(["tasks", "delete", id]);
    cx.cd.container_rm(id)
}
