//! `native::*`: containers whose entrypoint is a native program, run through the wasm runtime
//! (the pod's pause sandbox and sidecars take this path). The shim hands them to runc; these
//! cases check what only that path has: exec, runc's errors, and one shim per pod.

use std::time::Duration;

use anyhow::{Context, Result};
use wasm_shim_e2e::ctr::ensure;
use wasm_shim_e2e::images::{BUSYBOX_IMAGE, GUESTS_IMAGE};
use wasm_shim_e2e::{leaks, process, RunOpts, Stdin};

use super::{expect_code, Ctx};

fn opts(id: &str) -> RunOpts {
    RunOpts::wasm(BUSYBOX_IMAGE, id)
}

pub fn echo(cx: &Ctx) -> Result<()> {
    let out = cx.cd.run(&opts("n-echo"))?;
    expect_code(&out, 0)?;
    ensure(out.stdout == "hello\n", || format!("{out}"))
}

pub fn exit_and_streams(cx: &Ctx) -> Result<()> {
    let out = cx.cd.run(&opts("n-exit").args(["/bin/sh", "-c", "echo out; echo err >&2; exit 3"]))?;
    expect_code(&out, 3)?;
    ensure(out.stdout == "out\n" && out.stderr == "err\n", || format!("{out}"))
}

pub fn stdin(cx: &Ctx) -> Result<()> {
    let out = cx.cd.run(&opts("n-cat").args(["/bin/cat"]).stdin(Stdin::Bytes(b"piped\n".to_vec())))?;
    expect_code(&out, 0)?;
    ensure(out.stdout == "piped\n", || format!("{out}"))
}

/// `ctr task exec` in a running native container: output, exit code, events; then the task
/// still stops normally.
pub fn exec(cx: &Ctx) -> Result<()> {
    let id = "n-exec";
    let mut run = cx.cd.spawn(&opts(id).args(["/bin/sh", "-c", "echo sleeping; sleep 30"]))?;
    run.wait_for_stdout("sleeping", Duration::from_secs(20))?;
    let out = cx.cd.ctr_output(["tasks", "exec", "--exec-id", "x1", id, "/bin/sh", "-c", "echo exec-out; echo exec-err >&2; exit 4"]);
    let missing = cx.cd.ctr_output(["tasks", "exec", "--exec-id", "x2", id, "/bin/nope"]);
    cx.cd.kill(id, "SIGKILL")?;
    let main = run.wait(Duration::from_secs(10));
    let out = out?;
    println!("  exec: code {:?}, stdout {:?}, stderr {:?}", out.code, out.stdout, out.stderr);
    ensure(out.code == Some(4), || format!("exec exit code: {out}"))?;
    ensure(out.stdout == "exec-out\n" && out.stderr.contains("exec-err"), || format!("exec streams: {out}"))?;
    let missing = missing?;
    println!("  exec of a missing binary: {}", missing.stderr.trim());
    ensure(!missing.success() && missing.stderr.contains("/bin/nope"), || format!("exec of /bin/nope: {missing}"))?;
    cx.events.wait_for(id, "/tasks/exec-added", Duration::from_secs(2))?;
    cx.events.wait_for(id, "/tasks/exec-started", Duration::from_secs(2))?;
    expect_code(&main, 137)
}

/// A wasm task has no exec: a clear Unimplemented answer.
pub fn exec_in_wasm(cx: &Ctx) -> Result<()> {
    let id = "w-exec";
    let mut run = cx.cd.spawn(&RunOpts::wasm(GUESTS_IMAGE, id).args(["/sleep.wasm", "30"]))?;
    run.wait_for_stdout("sleeping", Duration::from_secs(20))?;
    let out = cx.cd.ctr_output(["tasks", "exec", "--exec-id", "x1", id, "/bin/sh"]);
    cx.cd.kill(id, "SIGKILL")?;
    run.wait(Duration::from_secs(10));
    let out = out?;
    println!("  {}", out.stderr.trim());
    // The code is Unimplemented: ctr 1.6 prints its name, ctr 2.x only the message.
    let code_shown = wasm_shim_e2e::containerd::containerd_major() >= 2 || out.stderr.contains("not implemented");
    ensure(!out.success() && out.stderr.contains("exec is not supported in a wasm task") && code_shown, || {
        format!("{out}")
    })
}

/// An entrypoint that is not in the image: one clear line, nothing left (the harness checks).
pub fn missing_binary(cx: &Ctx) -> Result<()> {
    let out = cx.cd.run(&opts("n-missing").args(["/bin/nope"]))?;
    println!("  {}", out.stderr.trim());
    ensure(!out.success() && out.stderr.contains("/bin/nope") && out.stderr.contains("not found"), || format!("{out}"))
}

/// Containers carrying the same `io.kubernetes.cri.sandbox-id` share one shim process (a
/// native one and a wasm one here), which exits when the last of them is deleted.
pub fn pod_shares_one_shim(cx: &Ctx) -> Result<()> {
    // Shim servers only (the list also holds the processes they started).
    let servers = || -> Vec<String> {
        leaks::shim_processes(&cx.cd.socket).into_iter().filter(|p| p.contains(" -namespace ")).collect()
    };
    let before = servers().len();
    let mut ids = Vec::new();
    let result = (|| -> Result<()> {
        for (id, o) in [
            ("pod-a", opts("pod-a").args(["/bin/sh", "-c", "sleep 30"])),
            ("pod-b", RunOpts::wasm(GUESTS_IMAGE, "pod-b").args(["/sleep.wasm", "30"])),
            ("pod-c", opts("pod-c").args(["/bin/sh", "-c", "sleep 30"])),
        ] {
            let o = o.detach().in_pod("pod-a");
            let out = cx.cd.run(&o)?;
            ensure(out.success(), || format!("{out}"))?;
            ids.push(id);
            cx.cd.wait_status(id, "RUNNING", Duration::from_secs(10))?;
        }
        let shims = servers();
        println!("  3 containers of one pod -> {} shim process(es)", shims.len() - before);
        ensure(shims.len() == before + 1, || format!("expected one shim for the pod, found {shims:?}"))?;
        // Removing one container keeps the shim for the others.
        cx.cd.kill("pod-c", "SIGKILL")?;
        cx.cd.wait_status("pod-c", "STOPPED", Duration::from_secs(10))?;
        cx.cd.task_delete("pod-c")?;
        cx.cd.wait_status("pod-b", "RUNNING", Duration::from_secs(1)).context("the pod's shim went away with one container")?;
        Ok(())
    })();
    for id in ids {
        let _ = cx.cd.kill(id, "SIGKILL");
        let _ = cx.cd.wait_status(id, "STOPPED", Duration::from_secs(10));
        let _ = cx.cd.task_delete(id);
        let _ = cx.cd.container_rm(id);
    }
    result?;
    let gone = wasm_shim_e2e::process::poll(Duration::from_secs(5), || {
        (servers().len() == before).then_some(())
    });
    ensure(gone.is_some(), || "the pod's shim did not exit after its last container was deleted".into())
}

/// `ctr run -t` and `ctr task exec -t` (under `script`, which gives ctr the terminal it needs):
/// runc hands the shim the pty, whose output reaches ctr.
pub fn terminal(cx: &Ctx) -> Result<()> {
    let ctr = |args: &str| {
        let cmd = format!(
            "ctr --address {} --namespace {} {args}",
            cx.cd.socket.display(),
            cx.cd.namespace
        );
        let mut c = std::process::Command::new("script");
        c.args(["-qec", &cmd, "/dev/null"]);
        process::run(c, Stdin::Null, Duration::from_secs(30))
    };
    let id = "n-tty";
    let run = ctr(&format!("run --rm -t --runtime io.containerd.wasm.v1 {BUSYBOX_IMAGE} {id} /bin/sh -c 'tty; echo init-done'"))?;
    println!("  run -t: {:?}", run.stdout.trim());
    ensure(run.success() && run.stdout.contains("/dev/pts/") && run.stdout.contains("init-done"), || format!("{run}"))?;

    let id = "n-tty-exec";
    let mut main = cx.cd.spawn(&opts(id).args(["/bin/sh", "-c", "echo sleeping; sleep 30"]))?;
    main.wait_for_stdout("sleeping", Duration::from_secs(20))?;
    let exec = ctr(&format!("tasks exec -t --exec-id t1 {id} /bin/sh -c 'tty; exit 6'"));
    cx.cd.kill(id, "SIGKILL")?;
    main.wait(Duration::from_secs(10));
    let exec = exec?;
    println!("  exec -t: {:?} exit {:?}", exec.stdout.trim(), exec.code);
    ensure(exec.code == Some(6) && exec.stdout.contains("/dev/pts/"), || format!("{exec}"))
}
