//! A private containerd for one test-binary run: its own socket, root, state and log under a temp
//! dir, with the shim's directory first on its PATH.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::process::{self, Output, Stdin};
use crate::{NAMESPACE, SHIM_NAME};

pub struct Containerd {
    /// The temp dir holding everything below.
    pub dir: PathBuf,
    pub root: PathBuf,
    pub state: PathBuf,
    pub socket: PathBuf,
    pub log: PathBuf,
    /// The shim binary containerd will find on its PATH (may not exist yet).
    pub shim: PathBuf,
    child: Option<Child>,
    keep: bool,
}

/// Where the shim binary is: `$SHIM_BIN`, else `$CARGO_TARGET_DIR/release`, else
/// `<workspace>/target/release`.
pub fn locate_shim() -> PathBuf {
    if let Some(p) = std::env::var_os("SHIM_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|t| {
            if t.is_absolute() {
                t
            } else {
                crate::workspace_root().join(t)
            }
        })
        .unwrap_or_else(|| crate::workspace_root().join("target"));
    target.join("release").join(SHIM_NAME)
}

fn config_toml(root: &Path, state: &Path, socket: &Path, dir: &Path) -> String {
    format!(
        r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "{sock}"

[ttrpc]
  address = "{sock}.ttrpc"

[debug]
  level = "debug"

[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"
"#,
        root = root.display(),
        state = state.display(),
        sock = socket.display(),
        opt = dir.join("opt").display(),
    )
}

impl Containerd {
    /// Starts containerd in a fresh temp dir and waits until `ctr version` answers.
    pub fn start() -> Result<Containerd> {
        let dir = tempfile::Builder::new()
            .prefix("wasm-e2e-")
            .tempdir_in("/tmp")
            .context("cannot create the temp dir")?
            .keep();
        let root = dir.join("root");
        let state = dir.join("state");
        let socket = dir.join("containerd.sock");
        let log = dir.join("containerd.log");
        fs::create_dir_all(&root)?;
        fs::create_dir_all(&state)?;
        let config = dir.join("config.toml");
        fs::write(&config, config_toml(&root, &state, &socket, &dir))?;

        // containerd resolves `io.containerd.wasm.v1` to `containerd-shim-wasm-v1` on its PATH.
        // Put the shim's own directory first when the file has that name, else a symlink dir.
        let shim = locate_shim();
        let shim_dir = if shim.file_name().is_some_and(|n| n == SHIM_NAME) {
            shim.parent().unwrap().to_path_buf()
        } else {
            let bin = dir.join("bin");
            fs::create_dir_all(&bin)?;
            std::os::unix::fs::symlink(&shim, bin.join(SHIM_NAME))?;
            bin
        };
        let path = format!(
            "{}:{}",
            shim_dir.display(),
            std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into())
        );

        let logfile = fs::File::create(&log)?;
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .env("PATH", path)
            .stdin(Stdio::null())
            .stdout(logfile.try_clone()?)
            .stderr(logfile)
            .spawn()
            .context("cannot start containerd (is it installed?)")?;
        let mut cd = Containerd {
            dir,
            root,
            state,
            socket,
            log,
            shim,
            child: Some(child),
            keep: std::env::var_os("E2E_KEEP").is_some(),
        };
        cd.wait_ready(Duration::from_secs(30))?;
        Ok(cd)
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait()? {
                bail!(
                    "containerd exited ({status}) during startup; log tail:\n{}",
                    self.log_tail(30)
                );
            }
            if self.socket.exists() {
                let out = process::run(self.ctr(["version"]), Stdin::Null, Duration::from_secs(5))?;
                if out.success() {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "containerd did not answer within {timeout:?}; log tail:\n{}",
                    self.log_tail(30)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A `ctr` command against this containerd in the test namespace.
    pub fn ctr<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address")
            .arg(&self.socket)
            .arg("--namespace")
            .arg(NAMESPACE)
            .args(args);
        cmd
    }

    /// Runs a short `ctr` command (30 s deadline) and returns its output, whatever its status.
    pub fn ctr_output<I, S>(&self, args: I) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        process::run(self.ctr(args), Stdin::Null, Duration::from_secs(30))
    }

    /// Runs a short `ctr` command that must succeed; returns its stdout.
    pub fn ctr_ok<I, S>(&self, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        Ok(self.ctr_output(args)?.ok()?.stdout)
    }

    /// The directory containerd keeps a v2 task's bundle in, per namespace.
    pub fn task_state_dir(&self) -> PathBuf {
        self.state
            .join("io.containerd.runtime.v2.task")
            .join(NAMESPACE)
    }

    /// The last `n` lines of containerd's log (the shim logs there too).
    pub fn log_tail(&self, n: usize) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// containerd log lines that mention `needle` (a container id), at most the last `n`.
    pub fn log_lines_with(&self, needle: &str, n: usize) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().filter(|l| l.contains(needle)).collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Removes every task and container left in the namespace (SIGKILL first).
    pub fn remove_all(&self) {
        if let Ok(out) = self.ctr_output(["containers", "ls", "-q"]) {
            for id in out.stdout.split_whitespace() {
                crate::ctr::force_remove(self, id);
            }
        }
    }

    /// Stops containerd (SIGTERM, then SIGKILL after 10 s) after removing what is left, unmounts
    /// anything under the temp dir and deletes it (unless `E2E_KEEP` is set).
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        self.remove_all();
        // SAFETY: kill(2) on our own child's pid; it has not been reaped yet, so the pid is ours.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if matches!(child.try_wait(), Ok(None)) {
            let _ = child.kill();
        }
        let _ = child.wait();
        // Shims outlive containerd by design; any still running were lost track of.
        let left = crate::leaks::shim_processes(&self.socket);
        if !left.is_empty() {
            eprintln!(
                "warning: killing {} leftover shim process(es): {left:?}",
                left.len()
            );
            let pids: Vec<u32> = left
                .iter()
                .filter_map(|p| p.split_whitespace().next()?.parse().ok())
                .collect();
            crate::leaks::kill_pids(&pids);
        }
        unmount_under(&self.dir);
        if self.keep {
            eprintln!("E2E_KEEP: leaving {}", self.dir.display());
        } else if let Err(e) = fs::remove_dir_all(&self.dir) {
            eprintln!("warning: cannot remove {}: {e}", self.dir.display());
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Mount points at or below `dir` in this mount namespace, deepest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut found: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mount_path)
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mount_path(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Lazily unmounts everything at or below `dir`.
pub fn unmount_under(dir: &Path) {
    for m in mounts_under(dir) {
        let Ok(c) = std::ffi::CString::new(m.as_os_str().as_encoded_bytes()) else {
            continue;
        };
        // SAFETY: umount2 with a valid NUL-terminated path; MNT_DETACH cannot corrupt memory.
        let rc = unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        if rc != 0 {
            eprintln!(
                "warning: cannot unmount {}: {}",
                m.display(),
                std::io::Error::last_os_error()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mount_path(r"/a\040b"), "/a b");
        assert_eq!(unescape_mount_path(r"/plain"), "/plain");
        assert_eq!(unescape_mount_path(r"/x\\"), r"/x\\");
    }

    #[test]
    fn config_names_every_path() {
        let c = config_toml(
            Path::new("/t/root"),
            Path::new("/t/state"),
            Path::new("/t/c.sock"),
            Path::new("/t"),
        );
        assert!(c.contains("root = \"/t/root\""));
        assert!(c.contains("address = \"/t/c.sock\""));
        assert!(c.contains("address = \"/t/c.sock.ttrpc\""));
        assert!(c.contains("io.containerd.grpc.v1.cri"));
    }
}
