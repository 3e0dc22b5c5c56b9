//! Child processes with captured output and deadlines, so a hanging shim fails a test instead of
//! hanging the suite.

use std::fmt;
use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// What the child reads on stdin.
#[derive(Debug, Clone, Default)]
pub enum Stdin {
    /// `/dev/null`: immediate end of file.
    #[default]
    Null,
    /// These bytes, then end of file.
    Bytes(Vec<u8>),
    /// A pipe that stays open (nothing written) until the child exits.
    HoldOpen,
    /// These bytes, but end of file only once [`Spawned::release_stdin`] is called (or the child
    /// exits). `ctr run` needs this: if its stdin ends before the task is created, ctr never
    /// closes the task's stdin and the guest waits forever.
    BytesHeld(Vec<u8>),
}

/// How a finished (or abandoned) command ended.
#[derive(Debug, Clone)]
pub struct Output {
    /// The command line, for messages.
    pub command: String,
    /// Exit code; `None` when killed by a signal (see `signal`) or abandoned at the deadline.
    pub code: Option<i32>,
    /// The signal that killed the process, if any.
    pub signal: Option<i32>,
    /// The deadline passed and the process was killed by the harness.
    pub timed_out: bool,
    pub stdout: String,
    pub stderr: String,
    /// From spawn to exit (or to the deadline).
    pub duration: Duration,
}

impl Output {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// stdout then stderr, for searching either.
    pub fn combined(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    /// Fails with the whole output unless the command exited 0.
    pub fn ok(self) -> Result<Output> {
        if self.success() {
            Ok(self)
        } else {
            bail!("command failed: {self}")
        }
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` ", self.command)?;
        if self.timed_out {
            write!(f, "timed out after {:.1?}", self.duration)?;
        } else if let Some(code) = self.code {
            write!(f, "exited {code} after {:.1?}", self.duration)?;
        } else if let Some(sig) = self.signal {
            write!(f, "killed by signal {sig} after {:.1?}", self.duration)?;
        }
        write!(
            f,
            "\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.stdout.trim_end(),
            self.stderr.trim_end()
        )
    }
}

/// What `ctr` 2.2+ prints on stderr before its own output on a cgroup v1 host (containerd's
/// deprecation warning, logrus-formatted). It is not the container's; dropped from `stderr`.
pub const CTR_NOISE: &str = "The support for cgroup v1 is deprecated";

/// A running child whose stdout and stderr are collected in the background.
pub struct Spawned {
    command: String,
    child: Child,
    stdin: Option<ChildStdin>,
    stdin_writer: Option<JoinHandle<()>>,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    /// Bytes read from stdout, kept or not.
    stdout_total: Arc<AtomicU64>,
    readers: Vec<JoinHandle<()>>,
    started: Instant,
    finished: Option<Output>,
}

/// Renders a command line for messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Reads `from` to its end, keeping the first `keep` bytes in `into` and counting all in `total`.
fn collect(
    mut from: impl Read + Send + 'static,
    into: Arc<Mutex<Vec<u8>>>,
    keep: usize,
    total: Arc<AtomicU64>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    total.fetch_add(n as u64, Ordering::Relaxed);
                    let mut kept = into.lock().unwrap();
                    let room = keep.saturating_sub(kept.len()).min(n);
                    kept.extend_from_slice(&buf[..room]);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
    })
}

impl Spawned {
    /// Starts `cmd` with the given stdin; stdout and stderr are captured.
    pub fn start(cmd: Command, stdin: Stdin) -> Result<Spawned> {
        Spawned::start_capped(cmd, stdin, usize::MAX)
    }

    /// [`Spawned::start`], keeping only the first `keep` bytes of stdout (a child that floods
    /// it); [`Spawned::stdout_bytes`] counts them all.
    pub fn start_capped(mut cmd: Command, stdin: Stdin, keep: usize) -> Result<Spawned> {
        let command = describe(&cmd);
        cmd.stdin(match stdin {
            Stdin::Null => Stdio::null(),
            _ => Stdio::piped(),
        });
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start `{command}`"))?;
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let stdout_total = Arc::new(AtomicU64::new(0));
        let readers = vec![
            collect(
                child.stdout.take().unwrap(),
                stdout.clone(),
                keep,
                stdout_total.clone(),
            ),
            collect(
                child.stderr.take().unwrap(),
                stderr.clone(),
                usize::MAX,
                Arc::new(AtomicU64::new(0)),
            ),
        ];
        let mut held = None;
        let mut stdin_writer = None;
        match stdin {
            Stdin::Null => {}
            Stdin::HoldOpen => held = child.stdin.take(),
            Stdin::Bytes(bytes) => {
                let pipe = child.stdin.take().unwrap();
                stdin_writer = Some(write_in_background(pipe.into(), bytes));
            }
            Stdin::BytesHeld(bytes) => {
                let pipe: std::os::fd::OwnedFd = child.stdin.take().unwrap().into();
                let dup = pipe.try_clone().context("dup of the stdin pipe")?;
                stdin_writer = Some(write_in_background(dup, bytes));
                held = Some(ChildStdin::from(pipe));
            }
        }
        Ok(Spawned {
            command,
            child,
            stdin: held,
            stdin_writer,
            stdout,
            stderr,
            stdout_total,
            readers,
            started,
            finished: None,
        })
    }

    /// Closes our end of a held stdin pipe (see [`Stdin::BytesHeld`]).
    pub fn release_stdin(&mut self) {
        self.stdin.take();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// How many bytes the child has written to stdout so far (kept or not).
    pub fn stdout_bytes(&self) -> u64 {
        self.stdout_total.load(Ordering::Relaxed)
    }

    /// Everything the child has written to stdout so far.
    pub fn stdout_now(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().unwrap()).into_owned()
    }

    /// Everything the child has written to stderr so far, without `ctr` 2.x's own warning on
    /// cgroup v1 hosts (see `CTR_NOISE`): trials compare a container's stderr exactly.
    pub fn stderr_now(&self) -> String {
        let all = String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned();
        if !all.contains(CTR_NOISE) {
            return all;
        }
        all.split_inclusive('\n').filter(|l| !l.contains(CTR_NOISE)).collect()
    }

    /// Waits until stdout contains `needle`; fails if the child exits first or time runs out.
    pub fn wait_for_stdout(&mut self, needle: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.stdout_now().contains(needle) {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                // Give the readers a moment to drain what was written before exit.
                std::thread::sleep(Duration::from_millis(50));
                if self.stdout_now().contains(needle) {
                    return Ok(());
                }
                bail!(
                    "`{}` exited ({status}) before printing {needle:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                    self.command,
                    self.stdout_now(),
                    self.stderr_now()
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "`{}` did not print {needle:?} within {timeout:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                    self.command,
                    self.stdout_now(),
                    self.stderr_now()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether the child is still running.
    pub fn running(&mut self) -> bool {
        self.finished.is_none() && matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for the child to exit; at the deadline it is killed and `timed_out` set.
    pub fn wait(&mut self, timeout: Duration) -> Output {
        if let Some(out) = &self.finished {
            return out.clone();
        }
        let deadline = Instant::now() + timeout;
        let (status, timed_out): (Option<ExitStatus>, bool) = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break (Some(status), false),
                Ok(None) => {}
                Err(_) => break (None, false),
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break (None, true);
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let duration = self.started.elapsed();
        self.stdin.take();
        if let Some(w) = self.stdin_writer.take() {
            if w.is_finished() {
                let _ = w.join();
            }
        }
        // The pipes close when the child (and anything it passed them to) is gone; do not wait
        // forever for a grandchild that kept them.
        let drain_deadline = Instant::now() + Duration::from_secs(2);
        for r in self.readers.drain(..) {
            while !r.is_finished() && Instant::now() < drain_deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if r.is_finished() {
                let _ = r.join();
            }
        }
        use std::os::unix::process::ExitStatusExt;
        let out = Output {
            command: self.command.clone(),
            code: status.and_then(|s| s.code()),
            signal: status.and_then(|s| s.signal()),
            timed_out,
            stdout: self.stdout_now(),
            stderr: self.stderr_now(),
            duration,
        };
        self.finished = Some(out.clone());
        out
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if self.finished.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn write_in_background(pipe: std::os::fd::OwnedFd, bytes: Vec<u8>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut f = std::fs::File::from(pipe);
        // A child that exits without reading gives EPIPE here; that is its business.
        let _ = f.write_all(&bytes);
    })
}

/// Runs `cmd` to completion (or `timeout`).
pub fn run(cmd: Command, stdin: Stdin, timeout: Duration) -> Result<Output> {
    let mut s = Spawned::start(cmd, stdin)?;
    Ok(s.wait(timeout))
}

/// Polls `f` every 20 ms until it returns `Some` or `timeout` passes.
pub fn poll<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
