//! Exec processes of native containers (`kubectl exec`, exec probes, `ctr task exec`): runc
//! starts them inside the running container; the shim keeps their stdio and a pidfd, and
//! reports their exit like the init's.

use std::sync::Arc;

use containerd_shim::api::ExecProcessRequest;
use log::warn;
use wasm_shim_container::process::{ExitStatus, PidFd};

use crate::errors::{Result, ShimError};
use crate::events::Events;
use crate::native::Runc;
use crate::stdio::{Owner, Stdio};
use crate::task::{Event as TaskEvent, Exit, Lifecycle, Status};

pub struct ExecProcess {
    pub id: String,
    pub container_id: String,
    /// containerd's namespace, for a logging binary (`binary://` stdout).
    namespace: String,
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    process_json: Vec<u8>,
    terminal: bool,
    life: Lifecycle<ExecState>,
}

/// What an exec process holds once started, beside its status and exit.
#[derive(Default)]
struct ExecState {
    pid: u32,
    pidfd: Option<Arc<PidFd>>,
    stdio: Stdio,
}

impl ExecProcess {
    /// Records an exec request; nothing runs until Start.
    pub fn new(req: &ExecProcessRequest, namespace: &str) -> Result<Arc<ExecProcess>> {
        let spec = req.spec.as_ref().ok_or_else(|| ShimError::invalid(format!("exec {}: no process spec", req.exec_id)))?;
        // Check it is an OCI process before runc sees it.
        serde_json::from_slice::<oci_spec::runtime::Process>(&spec.value)
            .map_err(|e| ShimError::invalid(format!("exec {}: the process spec is not an OCI process: {e}", req.exec_id)))?;
        Ok(Arc::new(ExecProcess {
            id: req.exec_id.clone(),
            container_id: req.id.clone(),
            namespace: namespace.to_string(),
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            process_json: spec.value.clone(),
            terminal: req.terminal,
            life: Lifecycle::new(ExecState::default()),
        }))
    }

    /// Runs the process with runc; `on_started` runs before its exit can be recorded.
    pub fn start(self: &Arc<Self>, runc: &Runc, bundle: &std::path::Path, events: &Events, on_started: impl FnOnce(u32)) -> Result<u32> {
        let mut life = self.life.lock();
        life.status().next(TaskEvent::Start).map_err(|e| ShimError::precondition(format!("exec {}: {e}", self.id)))?;
        // On an error the stdin relay stops as `stdio` drops.
        let (mut stdio, fds) = Stdio::open(&self.stdin, &self.stdout, &self.stderr, self.terminal, Owner { namespace: &self.namespace, id: &self.id })?;
        let (pid, master) = runc.exec(bundle, &self.id, &self.process_json, fds, self.terminal)?;
        let pidfd = match PidFd::open(pid) {
            Ok(p) => Arc::new(p),
            Err(e) => {
                // Still this shim's unreaped child, so its pid is its own.
                let _ = wasm_shim_container::process::kill(pid, libc::SIGKILL);
                let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
                return Err(ShimError::internal(format!("pidfd of {pid}: {e}")));
            }
        };
        // A process that Start fails after runc started it does not run: unwatched, its exit
        // would never be reported (nor its terminal's output go anywhere).
        let abandon = |e: ShimError| {
            let _ = pidfd.send_signal(libc::SIGKILL);
            let _ = pidfd.wait();
            Err(e)
        };
        if let Some(m) = master {
            if let Err(e) = stdio.attach_terminal(m, &self.stdin, &self.stdout) {
                return abandon(e);
            }
        }
        // Started before the process counts as started: a thread that cannot be started fails
        // Start like the steps above. It records the exit under this lock, so only once the
        // state below is set.
        let me = self.clone();
        let (watched, watch_events) = (pidfd.clone(), events.clone());
        if let Err(e) = crate::logging::spawn(std::thread::Builder::new().name(format!("exec-{pid}")), move || me.monitor(&watched, &watch_events)) {
            return abandon(ShimError::internal(e));
        }
        let _ = life.advance(TaskEvent::Start);
        let st = &mut life.extra;
        st.pid = pid as u32;
        st.pidfd = Some(pidfd);
        st.stdio = stdio;
        on_started(pid as u32);
        drop(life);
        Ok(pid as u32)
    }

    fn monitor(&self, pidfd: &PidFd, events: &Events) {
        let status = pidfd.wait().unwrap_or_else(|e| {
            warn!("wait for exec {}: {e}", self.id);
            ExitStatus::Signaled(libc::SIGKILL)
        });
        let flush = self.life.lock().extra.stdio.flush();
        flush.wait();
        self.life.record_exit(status.code(), |exit, st| {
            events.exit(&self.container_id, &self.id, st.pid, exit);
            st.stdio.close_stdin();
        });
    }

    pub fn status(&self) -> (Status, u32, Option<Exit>) {
        let pid = self.life.lock().extra.pid;
        let (status, exit) = self.life.status();
        (status, pid, exit)
    }

    pub fn wait(&self) -> Exit {
        self.life.wait()
    }

    pub fn kill(&self, signal: u32) -> Result<()> {
        let life = self.life.lock();
        match (&life.extra.pidfd, life.status()) {
            (Some(p), Status::Running) => p.send_signal(signal as i32).map_err(|e| {
                if e.raw_os_error() == Some(libc::ESRCH) {
                    ShimError::not_found(format!("exec {}: process already finished", self.id))
                } else {
                    ShimError::internal(format!("exec {}: signal {signal}: {e}", self.id))
                }
            }),
            (_, Status::Created) => Err(ShimError::precondition(format!("exec {}: not started", self.id))),
            _ => Err(ShimError::not_found(format!("exec {}: process already finished", self.id))),
        }
    }

    pub fn resize(&self, rows: u32, cols: u32) -> Result<()> {
        self.life.lock().extra.stdio.resize(&format!("exec {}", self.id), rows, cols)
    }

    pub fn close_stdin(&self) {
        self.life.lock().extra.stdio.close_stdin();
    }

    /// Delete: allowed once it has exited, or if it never started (waiters then see 0).
    pub fn delete(&self) -> Result<Exit> {
        let (status, exit) = self.life.status();
        if status == Status::Created {
            // Never started: release anyone waiting for it (a start racing this one finds it
            // stopped).
            return Ok(self.life.record_exit(0, |_, _| {}));
        }
        match (status, exit) {
            (Status::Stopped, Some(e)) => {
                let logger = self.life.lock().extra.stdio.take_logger();
                if let Some(logger) = logger {
                    logger.close();
                }
                Ok(e)
            }
            _ => Err(ShimError::precondition(format!("exec {}: cannot delete a running process; kill it first", self.id))),
        }
    }
}
