//! The `ctr` verbs the suite uses, on a [`Containerd`].

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::process::{self, Output, Spawned, Stdin};
use crate::{Containerd, RUNC_RUNTIME, WASM_RUNTIME};

/// One `ctr run`.
#[derive(Debug, Clone)]
pub struct RunOpts {
    pub runtime: String,
    /// Image reference; ignored when `config` is set (ctr then takes everything from the spec).
    pub image: String,
    pub id: String,
    /// Replaces the image's entrypoint and cmd when not empty.
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: Option<String>,
    pub memory_limit: Option<u64>,
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<u64>,
    /// `--config <spec.json>`: a whole runtime spec (rootfs path included) instead of an image.
    pub config: Option<PathBuf>,
    pub stdin: Stdin,
    /// `--rm` (foreground only).
    pub rm: bool,
    /// `-d`: ctr returns once the task has started; IO goes to /dev/null (`--null-io`).
    pub detach: bool,
    /// Any other `ctr run` flags, placed before the image.
    pub extra: Vec<String>,
    /// Deadline for the `ctr run` process.
    pub timeout: Duration,
}

impl RunOpts {
    fn new(runtime: &str, image: &str, id: &str) -> RunOpts {
        RunOpts {
            runtime: runtime.into(),
            image: image.into(),
            id: id.into(),
            args: Vec::new(),
            env: Vec::new(),
            cwd: None,
            memory_limit: None,
            cpu_quota: None,
            cpu_period: None,
            config: None,
            stdin: Stdin::Null,
            rm: true,
            detach: false,
            extra: Vec::new(),
            timeout: Duration::from_secs(30),
        }
    }

    /// `ctr run --rm --runtime io.containerd.wasm.v1 IMAGE ID`.
    pub fn wasm(image: &str, id: &str) -> RunOpts {
        RunOpts::new(WASM_RUNTIME, image, id)
    }

    /// The same with containerd's default runc runtime.
    pub fn runc(image: &str, id: &str) -> RunOpts {
        RunOpts::new(RUNC_RUNTIME, image, id)
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> RunOpts {
        self.args = args.into_iter().map(Into::into).collect();
        self
    }

    pub fn env(mut self, kv: &str) -> RunOpts {
        self.env.push(kv.into());
        self
    }

    pub fn cwd(mut self, dir: &str) -> RunOpts {
        self.cwd = Some(dir.into());
        self
    }

    pub fn memory_limit(mut self, bytes: u64) -> RunOpts {
        self.memory_limit = Some(bytes);
        self
    }

    pub fn cpu(mut self, quota: i64, period: u64) -> RunOpts {
        self.cpu_quota = Some(quota);
        self.cpu_period = Some(period);
        self
    }

    pub fn config(mut self, spec: &Path) -> RunOpts {
        self.config = Some(spec.to_path_buf());
        self
    }

    pub fn stdin(mut self, stdin: Stdin) -> RunOpts {
        self.stdin = stdin;
        self
    }

    /// More `ctr run` flags (`--seccomp`, `--cap-add X`, …).
    pub fn extra(mut self, flags: &[&str]) -> RunOpts {
        self.extra.extend(flags.iter().map(|f| f.to_string()));
        self
    }

    pub fn detach(mut self) -> RunOpts {
        self.detach = true;
        self.rm = false;
        self
    }

    pub fn keep(mut self) -> RunOpts {
        self.rm = false;
        self
    }

    pub fn timeout(mut self, t: Duration) -> RunOpts {
        self.timeout = t;
        self
    }

    /// `--annotation io.kubernetes.cri.sandbox-id=<pod>`: containers carrying the same pod share
    /// one shim process, as a CRI pod's do.
    pub fn in_pod(mut self, pod: &str) -> RunOpts {
        self.extra.push("--annotation".into());
        self.extra.push(format!("io.kubernetes.cri.sandbox-id={pod}"));
        self
    }

    /// The `ctr run` argument list (after `ctr --address … --namespace …`).
    pub fn ctr_args(&self) -> Vec<String> {
        let mut a = vec!["run".to_string()];
        if self.rm && !self.detach {
            a.push("--rm".into());
        }
        if self.detach {
            a.push("-d".into());
            a.push("--null-io".into());
        }
        a.push("--runtime".into());
        a.push(self.runtime.clone());
        for e in &self.env {
            a.push("--env".into());
            a.push(e.clone());
        }
        if let Some(c) = &self.cwd {
            a.push("--cwd".into());
            a.push(c.clone());
        }
        if let Some(m) = self.memory_limit {
            a.push("--memory-limit".into());
            a.push(m.to_string());
        }
        if let Some(q) = self.cpu_quota {
            a.push("--cpu-quota".into());
            a.push(q.to_string());
        }
        if let Some(p) = self.cpu_period {
            a.push("--cpu-period".into());
            a.push(p.to_string());
        }
        a.extend(self.extra.iter().cloned());
        if let Some(spec) = &self.config {
            a.push("--config".into());
            a.push(spec.display().to_string());
            a.push(self.id.clone());
        } else {
            a.push(self.image.clone());
            a.push(self.id.clone());
            a.extend(self.args.iter().cloned());
        }
        a
    }
}

impl Containerd {
    /// `ctr image import` of an OCI tarball.
    pub fn import(&self, tar: &Path) -> Result<()> {
        self.import_into(&self.namespace, tar)
    }

    /// `ctr -n NS image import` of an OCI tarball.
    pub fn import_into(&self, ns: &str, tar: &Path) -> Result<()> {
        let out = process::run(
            self.ctr_in(ns, ["images".as_ref(), "import".as_ref(), tar.as_os_str()]),
            Stdin::Null,
            Duration::from_secs(120),
        )?;
        out.ok()
            .with_context(|| format!("importing {}", tar.display()))?;
        Ok(())
    }

    fn run_command(&self, opts: &RunOpts) -> Command {
        self.ctr(opts.ctr_args())
    }

    /// Runs `ctr run` to completion (or its deadline; then the task is killed and removed).
    pub fn run(&self, opts: &RunOpts) -> Result<Output> {
        let mut s = self.spawn(opts)?;
        let out = s.wait(opts.timeout);
        if out.timed_out {
            force_remove(self, &opts.id);
        }
        Ok(out)
    }

    /// Starts a foreground `ctr run` and returns while it runs (stdout is watched live).
    ///
    /// Stdin bytes are written at once but the pipe is closed only once the task is running:
    /// ctr 1.6 forwards end of file to the task only if it sees it after creating the task.
    pub fn spawn(&self, opts: &RunOpts) -> Result<Spawned> {
        let Stdin::Bytes(bytes) = &opts.stdin else {
            return Spawned::start(self.run_command(opts), opts.stdin.clone());
        };
        let mut s = Spawned::start(self.run_command(opts), Stdin::BytesHeld(bytes.clone()))?;
        let deadline = Instant::now() + opts.timeout.min(Duration::from_secs(20));
        while Instant::now() < deadline && s.running() {
            match self.task_status(&opts.id) {
                Ok(Some(st)) if st != "CREATED" && st != "UNKNOWN" => break,
                _ => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        s.release_stdin();
        Ok(s)
    }

    /// `ctr task kill -s SIG ID`.
    pub fn kill(&self, id: &str, signal: &str) -> Result<()> {
        self.ctr_ok(["tasks", "kill", "-s", signal, id]).map(drop)
    }

    pub fn pause(&self, id: &str) -> Result<()> {
        self.ctr_ok(["tasks", "pause", id]).map(drop)
    }

    pub fn resume(&self, id: &str) -> Result<()> {
        self.ctr_ok(["tasks", "resume", id]).map(drop)
    }

    /// The task's row in `ctr task ls` (`TASK PID STATUS`), if listed.
    fn task_row(&self, id: &str) -> Result<Option<Vec<String>>> {
        let out = self.ctr_ok(["tasks", "ls"])?;
        Ok(out
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().map(String::from).collect::<Vec<_>>())
            .find(|f| f.first().map(String::as_str) == Some(id)))
    }

    /// The task's status column in `ctr task ls` (RUNNING, PAUSED, STOPPED, CREATED...), if listed.
    pub fn task_status(&self, id: &str) -> Result<Option<String>> {
        Ok(self.task_row(id)?.and_then(|f| f.get(2).cloned()))
    }

    /// The task's pid in `ctr task ls` (its init's, on the host).
    pub fn task_pid(&self, id: &str) -> Result<u32> {
        self.task_row(id)?
            .and_then(|f| f.get(1)?.parse().ok())
            .ok_or_else(|| anyhow!("task {id} not in `ctr task ls`"))
    }

    /// Waits until `ctr task ls` shows `status` for `id`.
    pub fn wait_status(&self, id: &str, status: &str, timeout: Duration) -> Result<()> {
        let mut last = None;
        let found = process::poll(timeout, || {
            last = self.task_status(id).ok().flatten();
            (last.as_deref() == Some(status)).then_some(())
        });
        found.ok_or_else(|| {
            anyhow!("task {id} not {status} within {timeout:?} (last seen: {last:?})")
        })
    }

    /// `ctr task metrics --format json ID`, parsed.
    pub fn metrics(&self, id: &str) -> Result<serde_json::Value> {
        let out = self.ctr_ok(["tasks", "metrics", "--format", "json", id])?;
        serde_json::from_str(&out).with_context(|| format!("metrics are not JSON: {out}"))
    }

    /// The pids `ctr task ps ID` lists.
    pub fn ps(&self, id: &str) -> Result<Vec<u32>> {
        let out = self.ctr_ok(["tasks", "ps", id])?;
        Ok(out
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next()?.parse().ok())
            .collect())
    }

    pub fn task_delete(&self, id: &str) -> Result<()> {
        self.ctr_ok(["tasks", "delete", id]).map(drop)
    }

    pub fn container_rm(&self, id: &str) -> Result<()> {
        self.ctr_ok(["containers", "rm", id]).map(drop)
    }

    /// Container ids in the namespace.
    pub fn containers(&self) -> Result<Vec<String>> {
        Ok(self
            .ctr_ok(["containers", "ls", "-q"])?
            .split_whitespace()
            .map(String::from)
            .collect())
    }

    /// Snapshot keys in the default snapshotter.
    pub fn snapshots(&self) -> Result<Vec<String>> {
        Ok(self
            .ctr_ok(["snapshots", "ls"])?
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next().map(String::from))
            .collect())
    }
}

/// Best-effort removal of a container and its task: SIGKILL, task delete (forced), container
/// delete (with its snapshot). Errors are ignored: there may be nothing to remove.
pub fn force_remove(cd: &Containerd, id: &str) {
    force_remove_in(cd, &cd.namespace, id)
}

/// [`force_remove`] in namespace `ns`.
pub fn force_remove_in(cd: &Containerd, ns: &str, id: &str) {
    let ctr = |args: &[&str]| {
        process::run(cd.ctr_in(ns, args), Stdin::Null, Duration::from_secs(30)).ok()
    };
    let listed = || {
        let out = ctr(&["tasks", "ls"])?;
        out.stdout
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|f| f.first() == Some(&id))
            .and_then(|f| f.get(2).map(|s| s.to_string()))
    };
    if let Some(status) = listed() {
        if status == "PAUSED" {
            let _ = ctr(&["tasks", "resume", id]);
        }
        if status != "STOPPED" {
            let _ = ctr(&["tasks", "kill", "-s", "SIGKILL", id]);
            let _ = process::poll(Duration::from_secs(5), || {
                (listed().as_deref() != Some("RUNNING")).then_some(())
            });
        }
        let _ = ctr(&["tasks", "delete", "-f", id]);
    }
    let _ = ctr(&["containers", "rm", id]);
}

/// Fails unless `haystack` has a line containing every one of `needles`; returns that line.
pub fn line_with<'a>(haystack: &'a str, needles: &[&str]) -> Result<&'a str> {
    haystack
        .lines()
        .find(|l| needles.iter().all(|n| l.contains(n)))
        .ok_or_else(|| anyhow!("no line contains all of {needles:?}"))
}

/// Fails unless `cond`, with a message.
pub fn ensure(cond: bool, msg: impl FnOnce() -> String) -> Result<()> {
    if cond {
        Ok(())
    } else {
        bail!(msg())
    }
}
