//! Native containers (the pod's pause sandbox, sidecars, any non-wasm entrypoint: see
//! `entrypoint`) are handed to runc, the OCI runtime every containerd node has, so they get
//! runc's full isolation (capabilities, seccomp, masked paths, users, devices). This module only
//! drives runc's CLI; the container module monitors the process it creates through a pidfd like
//! a wasm init.

use std::ffi::OsString;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use log::debug;

use crate::errors::{Result, ShimError};

/// Where runc keeps its state for containers of this shim: `<RUNC_ROOT>/<namespace>`.
pub const RUNC_ROOT: &str = "/run/containerd-shim-wasm-v1/runc";

/// A runc binary and the state root it is used with.
#[derive(Debug, Clone)]
pub struct Runc {
    binary: PathBuf,
    root: PathBuf,
    id: String,
    log: PathBuf,
}

/// The `runc` on `PATH` (containerd's PATH, which the shim inherits), or `RUNC_BINARY`.
pub fn find_runc() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("RUNC_BINARY") {
        return Ok(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| OsString::from("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"));
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join("runc");
        if is_executable(&candidate) {
            return Ok(candidate);
        }
    }
    Err(ShimError::precondition(
        "this container's entrypoint is a native program, which is run with runc, but no runc was found on containerd's PATH",
    ))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

/// The last error runc wrote to its JSON log (`{"level":"error","msg":"..."}` lines).
fn last_error(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| matches!(v.get("level").and_then(|l| l.as_str()), Some("error" | "fatal")))
        .and_then(|v| v.get("msg").and_then(|m| m.as_str()).map(str::to_string))
}

impl Runc {
    pub fn new(namespace: &str, id: &str, bundle: &Path) -> Result<Runc> {
        Ok(Runc { binary: find_runc()?, root: Path::new(RUNC_ROOT).join(namespace), id: id.to_string(), log: bundle.join("runc-log.json") })
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--root").arg(&self.root).arg("--log").arg(&self.log).arg("--log-format").arg("json");
        if std::env::var_os("RUNC_SYSTEMD_CGROUP").is_some() {
            cmd.arg("--systemd-cgroup");
        }
        cmd
    }

    /// Runs a runc command to completion; a failure carries runc's own message.
    fn run(&self, what: &str, mut cmd: Command, input: Option<&[u8]>) -> Result<String> {
        debug!("{}: runc {what}", self.id);
        if input.is_some() {
            cmd.stdin(Stdio::piped());
        } else if cmd.get_program() == self.binary.as_os_str() {
            cmd.stdin(Stdio::null());
        }
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().map_err(|e| {
            ShimError::internal(format!("{}: cannot run {}: {e}", self.id, self.binary.display()))
        })?;
        if let (Some(data), Some(mut stdin)) = (input, child.stdin.take()) {
            let _ = stdin.write_all(data);
        }
        let out = child.wait_with_output().map_err(ShimError::internal)?;
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        Err(self.failure(what, &out.stderr))
    }

    fn failure(&self, what: &str, stderr: &[u8]) -> ShimError {
        let msg = last_error(&self.log)
            .or_else(|| {
                let s = String::from_utf8_lossy(stderr).trim().to_string();
                (!s.is_empty()).then_some(s)
            })
            .unwrap_or_else(|| "no message".into());
        let kind = if msg.contains("no such file or directory") || msg.contains("executable file not found") {
            crate::errors::ErrorKind::NotFound
        } else {
            crate::errors::ErrorKind::FailedPrecondition
        };
        ShimError::new(kind, format!("runc {what} {}: {msg}", self.id))
    }

    /// `runc create`: the container's init is set up and waits for `start`. Its stdio are the
    /// given descriptors, or with `terminal` a pty whose master is returned. Returns the init's
    /// pid; runc has exited by then, so the init is a child of this (subreaper) process and its
    /// exit status cannot be lost.
    pub fn create(&self, bundle: &Path, stdio: [Option<OwnedFd>; 3], terminal: bool) -> Result<(i32, Option<OwnedFd>)> {
        let pid_file = bundle.join("runc.pid");
        let mut cmd = self.command();
        cmd.arg("create").arg("--bundle").arg(bundle).arg("--pid-file").arg(&pid_file);
        let master = self.spawn_with(cmd, &self.id, stdio, terminal, "create")?;
        Ok((read_pid(&pid_file)?, master))
    }

    /// Runs `cmd` (runc, its last argument still to come) to completion with the stdio or a
    /// console socket; the pty master when `terminal`.
    fn spawn_with(&self, mut cmd: Command, last: &str, stdio: [Option<OwnedFd>; 3], terminal: bool, what: &str) -> Result<Option<OwnedFd>> {
        let console = if terminal { Some(crate::stdio::console_socket()?) } else { None };
        if let Some(c) = &console {
            cmd.arg("--console-socket").arg(c.path());
        }
        cmd.arg(last);
        let [stdin, stdout, stderr] = stdio;
        cmd.stdin(stdin.map(Stdio::from).unwrap_or_else(Stdio::null));
        cmd.stdout(stdout.map(Stdio::from).unwrap_or_else(Stdio::null));
        cmd.stderr(stderr.map(Stdio::from).unwrap_or_else(Stdio::null));
        let mut child = cmd
            .spawn()
            .map_err(|e| ShimError::internal(format!("{}: cannot run {}: {e}", self.id, self.binary.display())))?;
        let mut master = None;
        if let Some(c) = &console {
            let mut exited = None;
            let got = c.receive_master(std::time::Duration::from_secs(30), || {
                if exited.is_none() {
                    exited = child.try_wait().ok().flatten();
                }
                exited.is_some()
            });
            match got {
                Ok(fd) => master = Some(fd),
                Err(e) if exited.is_none() => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(ShimError::internal(format!("runc {what} {}: terminal: {e}", self.id)));
                }
                Err(_) => {}
            }
        }
        let status = child.wait().map_err(ShimError::internal)?;
        if !status.success() {
            return Err(self.failure(what, b""));
        }
        if terminal && master.is_none() {
            return Err(ShimError::internal(format!("runc {what} {}: no terminal was sent", self.id)));
        }
        Ok(master)
    }

    pub fn start(&self) -> Result<()> {
        let mut cmd = self.command();
        cmd.arg("start").arg(&self.id);
        self.run("start", cmd, None).map(drop)
    }

    /// Signals every process of the container (`all`), or its init.
    pub fn kill(&self, signal: u32, all: bool) -> Result<()> {
        let mut cmd = self.command();
        cmd.arg("kill");
        if all {
            cmd.arg("--all");
        }
        cmd.arg(&self.id).arg(signal.to_string());
        self.run("kill", cmd, None).map(drop)
    }

    pub fn pause(&self) -> Result<()> {
        let mut cmd = self.command();
        cmd.arg("pause").arg(&self.id);
        self.run("pause", cmd, None).map(drop)
    }

    pub fn resume(&self) -> Result<()> {
        let mut cmd = self.command();
        cmd.arg("resume").arg(&self.id);
        self.run("resume", cmd, None).map(drop)
    }

    /// New limits as `LinuxResources` JSON.
    pub fn update(&self, resources_json: &[u8]) -> Result<()> {
        let mut cmd = self.command();
        cmd.arg("update").arg("--resources").arg("-").arg(&self.id);
        self.run("update", cmd, Some(resources_json)).map(drop)
    }

    /// Starts a process described by an OCI `Process` (JSON) in the running container, detached,
    /// with the given stdio or a terminal; returns its pid (a child of this subreaper once runc
    /// exits) and the pty master.
    pub fn exec(&self, bundle: &Path, exec_id: &str, process_json: &[u8], stdio: [Option<OwnedFd>; 3], terminal: bool) -> Result<(i32, Option<OwnedFd>)> {
        let spec = bundle.join(format!("exec-{exec_id}.json"));
        let pid_file = bundle.join(format!("exec-{exec_id}.pid"));
        std::fs::write(&spec, process_json).map_err(|e| ShimError::internal(format!("{}: {e}", spec.display())))?;
        let mut cmd = self.command();
        cmd.arg("exec").arg("--detach").arg("--process").arg(&spec).arg("--pid-file").arg(&pid_file);
        if terminal {
            cmd.arg("--tty");
        }
        let r = self.spawn_with(cmd, &self.id, stdio, terminal, &format!("exec {exec_id} in"));
        let _ = std::fs::remove_file(&spec);
        let master = match r {
            Ok(m) => m,
            Err(e) => {
                let _ = std::fs::remove_file(&pid_file);
                return Err(e);
            }
        };
        let pid = read_pid(&pid_file);
        let _ = std::fs::remove_file(&pid_file);
        Ok((pid?, master))
    }

    /// Removes runc's record of the container, killing what is left of it.
    pub fn delete(&self) -> Result<()> {
        let mut cmd = self.command();
        cmd.arg("delete").arg("--force").arg(&self.id);
        let r = self.run("delete", cmd, None);
        let _ = std::fs::remove_file(&self.log);
        match r {
            Err(e) if e.message.contains("does not exist") || e.message.contains("not exist") => Ok(()),
            other => other.map(drop),
        }
    }

    /// Whether runc has a record of this container (the `delete` action after a crash).
    pub fn exists(&self) -> bool {
        self.root.join(&self.id).join("state.json").exists()
    }
}

fn read_pid(pid_file: &Path) -> Result<i32> {
    let text = std::fs::read_to_string(pid_file).map_err(|e| ShimError::internal(format!("{}: {e}", pid_file.display())))?;
    text.trim().parse::<i32>().map_err(|e| ShimError::internal(format!("{}: {e}", pid_file.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_error_reads_runcs_json_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log.json");
        std::fs::write(
            &log,
            "{\"level\":\"info\",\"msg\":\"hello\"}\nnot json\n{\"level\":\"error\",\"msg\":\"exec: \\\"/nope\\\": stat /nope: no such file or directory\"}\n",
        )
        .unwrap();
        assert_eq!(last_error(&log).unwrap(), "exec: \"/nope\": stat /nope: no such file or directory");
        assert_eq!(last_error(&dir.path().join("missing")), None);
    }
}
