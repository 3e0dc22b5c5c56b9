//! A process's stdio, for a container's init and an exec process alike: containerd's FIFOs as
//! its descriptors (the stdin FIFO relayed into a pipe, the output FIFOs opened directly), or a
//! terminal (the pty master runc hands over, copied from the stdin FIFO and to the stdout FIFO,
//! resized by ResizePty).
//!
//! The output may also be one of containerd's log URIs (`ctr run --log-uri`), as its runc shim
//! takes them: `file:///path` (stdout and stderr appended to the file) or `binary:///path?k=v`
//! (a logging program the shim starts, containerd's shim logging protocol). The process gets
//! pipes either way, never the host file itself, as under runc's shim.

use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use log::warn;
use wasm_shim_container::process;
use wasm_shim_container::pty::{self, ConsoleSocket};

use crate::errors::{Result, ShimError};

/// How long the exit of a process whose output goes to a file waits for the last of it to be
/// written there: all of it, unless something the process started still holds the pipe.
const OUTPUT_DRAIN: Duration = Duration::from_secs(2);

/// How long a logging binary (`binary://`) has to say it is ready, and to exit once the
/// process's output ended, before it is killed.
const LOGGER_READY: Duration = Duration::from_secs(10);
const LOGGER_EXIT: Duration = Duration::from_secs(10);

/// Who a process's stdio is for: a logging binary is told (`CONTAINER_ID`, `CONTAINER_NAMESPACE`).
#[derive(Debug, Clone, Copy)]
pub struct Owner<'a> {
    pub namespace: &'a str,
    pub id: &'a str,
}

/// What the shim holds of a process's stdio while it runs: the stdin relay, its terminal, or
/// what carries its output to a log URI.
#[derive(Default)]
pub struct Stdio {
    relay: Option<StdinRelay>,
    tty: Option<Terminal>,
    log: Option<LogSink>,
}

impl Stdio {
    /// The process's descriptors for containerd's FIFOs or log URI (none where a path is
    /// empty), and what the shim keeps of them. With `terminal` there are none: runc makes a
    /// pty, and its master is attached once handed over ([`Stdio::attach_terminal`]).
    pub fn open(stdin: &str, stdout: &str, stderr: &str, terminal: bool, owner: Owner) -> Result<(Stdio, [Option<OwnedFd>; 3])> {
        let output = Output::parse(stdout)?;
        if terminal {
            if !matches!(output, Output::Fifo(_) | Output::None) {
                return Err(ShimError::invalid(format!(
                    "stdout {stdout}: a process with a terminal writes to a FIFO; a log URI (file://, binary://) is not supported with a terminal"
                )));
            }
            return Ok((Stdio::default(), [None, None, None]));
        }
        let (relay, fd) = match stdin {
            "" => (None, None),
            path => {
                let (relay, fd) = StdinRelay::start(path)?;
                (Some(relay), Some(fd))
            }
        };
        let mut stdio = Stdio { relay, tty: None, log: None };
        // On an error here the relay stops as `stdio` drops.
        let fds = match output {
            Output::None => [fd, None, open_output(stderr)?],
            Output::Fifo(path) => [fd, open_output(&path)?, open_output(stderr)?],
            // containerd's shim: the stdout URI decides for both streams, whatever stderr says.
            Output::File(path) => {
                // One pipe for both keeps their lines in the order they were written.
                let (sink, out) = LogSink::file(&path)?;
                stdio.log = Some(sink);
                let err = dup(&out)?;
                [fd, Some(out), Some(err)]
            }
            Output::Binary(program, uri) => {
                let (sink, out, err) = LogSink::binary(&program, &uri, owner)?;
                stdio.log = Some(sink);
                [fd, Some(out), Some(err)]
            }
        };
        Ok((stdio, fds))
    }

    /// Starts copying between the FIFOs and the pty master of the process's terminal.
    pub fn attach_terminal(&mut self, master: OwnedFd, stdin: &str, stdout: &str) -> Result<()> {
        self.tty = Some(Terminal::attach(master, stdin, stdout)?);
        Ok(())
    }

    /// ResizePty; `who` names the process for the error when it has no terminal.
    pub fn resize(&self, who: &str, rows: u32, cols: u32) -> Result<()> {
        match &self.tty {
            Some(t) => t.resize(rows, cols),
            None => Err(ShimError::precondition(format!("{who}: has no terminal"))),
        }
    }

    /// CloseIO, or the process exited: its stdin ends once what was written so far is
    /// delivered.
    pub fn close_stdin(&self) {
        if let Some(r) = &self.relay {
            r.stop();
        }
    }

    /// What to wait for, once the process exited and before its exit is reported, so that what
    /// it wrote is in its log file: see [`Flush`].
    pub fn flush(&self) -> Flush {
        match (&self.log, &self.tty) {
            (Some(LogSink::File { copied }), _) => Flush(Some(copied.clone())),
            (_, Some(tty)) => Flush(tty.copied.clone()),
            _ => Flush(None),
        }
    }
}

/// The end of a process's output on its way to a log file, or from its terminal to the stdout
/// FIFO (what is left in the pty is the shim's to copy: once the exit is reported, `ctr` closes
/// the FIFO and anything copied later is lost). Nothing to wait for with FIFOs the process
/// writes itself (containerd reads what is left in them) or a logging binary (it reads the
/// pipes itself).
pub struct Flush(Option<Arc<Latch>>);

impl Flush {
    /// Waits until the copy ended, bounded: a process it left behind may hold the pipe open.
    pub fn wait(&self) {
        if let Some(copied) = &self.0 {
            if !copied.wait(OUTPUT_DRAIN) {
                warn!("output still open {OUTPUT_DRAIN:?} after the process exited (a process it started holds it): more of it may follow the exit");
            }
        }
    }
}

/// The output URI of a process, as containerd's runc shim reads it: a path is a FIFO containerd
/// reads (its `fifo://` form is refused there too).
#[derive(Debug, PartialEq)]
enum Output {
    None,
    Fifo(String),
    File(PathBuf),
    /// The program, and the URI its arguments come from.
    Binary(PathBuf, url::Url),
}

impl Output {
    fn parse(stdout: &str) -> Result<Output> {
        if stdout.is_empty() {
            return Ok(Output::None);
        }
        // A plain path: containerd's FIFO (the usual case, and the only one before URIs).
        if stdout.starts_with('/') || !stdout.contains(':') {
            return Ok(Output::Fifo(stdout.to_string()));
        }
        let bad = |why: &str| ShimError::invalid(format!("stdout {stdout}: {why}"));
        if !stdout.contains("://") {
            return Err(bad("not a path or a log URI (scheme:///path)"));
        }
        let uri = url::Url::parse(stdout).map_err(|e| bad(&format!("not a path or a log URI: {e}")))?;
        let path = || -> Result<PathBuf> {
            uri.to_file_path().map_err(|()| bad("the URI must name an absolute path on this host (scheme:///path)"))
        };
        match uri.scheme() {
            "file" => Ok(Output::File(path()?)),
            "binary" | "binary-v2" => Ok(Output::Binary(path()?, uri)),
            other => Err(bad(&format!("unknown log URI scheme {other:?}: file and binary are supported (or a FIFO's path)"))),
        }
    }
}

fn dup(fd: &OwnedFd) -> Result<OwnedFd> {
    fd.try_clone().map_err(|e| ShimError::internal(format!("dup: {e}")))
}

/// Set once, waited for with a bound.
#[derive(Default)]
struct Latch {
    set: Mutex<bool>,
    cv: Condvar,
}

impl Latch {
    fn set(&self) {
        *self.set.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.cv.notify_all();
    }

    /// True once set, false if `timeout` passed first.
    fn wait(&self, timeout: Duration) -> bool {
        let set = self.set.lock().unwrap_or_else(|e| e.into_inner());
        let (set, _) = self.cv.wait_timeout_while(set, timeout, |set| !*set).unwrap_or_else(|e| e.into_inner());
        *set
    }
}

/// What carries a process's output to a log URI.
enum LogSink {
    /// A thread copying the pipe to the file; `copied` once the pipe ended (every writer gone).
    File { copied: Arc<Latch> },
    /// The logging binary; it ends once the process's output does. Closed when the process is
    /// deleted ([`Stdio::take_logger`], [`Logger::close`]).
    Binary { child: Mutex<Option<std::process::Child>>, what: String },
}

impl LogSink {
    /// The file (created with its directory, appended to) and the pipe end the process writes.
    fn file(path: &Path) -> Result<(LogSink, OwnedFd)> {
        let what = |e: std::io::Error| ShimError::invalid(format!("log file {}: {e}", path.display()));
        if let Some(dir) = path.parent() {
            std::fs::DirBuilder::new().recursive(true).mode(0o755).create(dir).map_err(what)?;
        }
        let mut file = OpenOptions::new().append(true).create(true).mode(0o644).open(path).map_err(what)?;
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(ShimError::internal)?;
        let shown = path.display().to_string();
        let copied = spawn_copy("log-file", move || copy_to_file(File::from(r), &mut file, &shown))?;
        Ok((LogSink::File { copied }, w))
    }

    /// Starts the logging binary as containerd's shims do: the process's stdout and stderr as
    /// its fds 3 and 4, a pipe it closes (or, for `binary-v2`, writes a byte to) when ready as
    /// fd 5, the query's pairs as its arguments, `CONTAINER_ID` and `CONTAINER_NAMESPACE` as its
    /// whole environment. Returns the pipe ends the process writes, stdout's and stderr's.
    fn binary(program: &Path, uri: &url::Url, owner: Owner) -> Result<(LogSink, OwnedFd, OwnedFd)> {
        let shown = program.display().to_string();
        let pipe = || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(ShimError::internal);
        let ((out_r, out_w), (err_r, err_w), (ready_r, ready_w)) = (pipe()?, pipe()?, pipe()?);
        let mut cmd = std::process::Command::new(program);
        // As containerd's shim: each key once, followed by its first value, even an empty one
        // (`?json&tag=web` gives `json "" tag web`).
        let mut seen = std::collections::HashSet::new();
        for (k, v) in uri.query_pairs() {
            if seen.insert(k.clone()) {
                cmd.arg(k.as_ref()).arg(v.as_ref());
            }
        }
        cmd.env_clear()
            .env("CONTAINER_ID", owner.id)
            .env("CONTAINER_NAMESPACE", owner.namespace)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let mut child = process::spawn_with_fds(cmd, vec![out_r, err_r, ready_w])
            .map_err(|e| ShimError::invalid(format!("logging binary {shown}: cannot start: {e}")))?;
        // Ready: fd 5 closed (or a byte on it), within a bound.
        let refused = match wait_ready(&ready_r, LOGGER_READY) {
            Ok(true) => None,
            Ok(false) if uri.scheme() != "binary-v2" => None,
            Ok(false) => Some("exited, or closed its ready pipe without writing to it (binary-v2)".to_string()),
            Err(why) => Some(why),
        };
        if let Some(why) = refused {
            let _ = child.kill();
            let _ = child.wait();
            return Err(ShimError::invalid(format!("logging binary {shown}: {why}")));
        }
        Ok((LogSink::Binary { child: Mutex::new(Some(child)), what: shown }, out_w, err_w))
    }
}

/// Runs a copy of a process's output on a thread of its own (named `name`, in the calling
/// thread's log context); the latch is set once it ended: what [`Flush`] waits for.
fn spawn_copy(name: &str, copy: impl FnOnce() + Send + 'static) -> Result<Arc<Latch>> {
    let copied = Arc::new(Latch::default());
    let done = copied.clone();
    crate::logging::spawn(std::thread::Builder::new().name(name.into()), move || {
        copy();
        done.set();
    })
    .map_err(ShimError::internal)?;
    Ok(copied)
}

/// Copies the pipe to the log file until every writer is gone. A failed write (a full disk) is
/// said once and what follows is read and dropped: the process's output never breaks (a closed
/// pipe would kill a native process with SIGPIPE), as with containerd's shim.
fn copy_to_file(mut from: File, to: &mut File, shown: &str) {
    use std::io::{ErrorKind, Read, Write};
    let mut buf = vec![0u8; 32 << 10];
    let mut failed = false;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                warn!("log file {shown}: reading the process's output: {e}");
                return;
            }
        };
        if !failed {
            if let Err(e) = to.write_all(&buf[..n]) {
                warn!("log file {shown}: {e}; the process's output is dropped until it ends");
                failed = true;
            }
        }
    }
}

/// Waits for a logging binary's readiness on `ready`: Ok(true) for a byte, Ok(false) for the
/// pipe closed without one, Err past `timeout`.
fn wait_ready(ready: &OwnedFd, timeout: Duration) -> std::result::Result<bool, String> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(format!("not ready within {timeout:?}"));
        }
        let mut fds = [PollFd::new(ready.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX)) {
            Err(nix::errno::Errno::EINTR) | Ok(0) => continue,
            Err(e) => return Err(format!("waiting for it: {e}")),
            Ok(_) => {
                let mut b = [0u8; 1];
                return match nix::unistd::read(ready, &mut b) {
                    Ok(n) => Ok(n == 1),
                    Err(e) => Err(format!("reading its ready pipe: {e}")),
                };
            }
        }
    }
}

/// A logging binary being let go: see [`Logger::close`].
pub struct Logger {
    child: std::process::Child,
    what: String,
}

impl Logger {
    /// The process was deleted, its output ended: the binary should exit once it read the
    /// rest. As containerd's shim closes it: one that does not gets SIGTERM, and SIGKILL if it
    /// is still there `LOGGER_EXIT` later. Reaped either way.
    pub fn close(mut self) {
        let exited_within = |child: &mut std::process::Child, bound: Duration| {
            let since = std::time::Instant::now();
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => return true,
                    Ok(None) if since.elapsed() < bound => std::thread::sleep(Duration::from_millis(10)),
                    Ok(None) => return false,
                }
            }
        };
        if exited_within(&mut self.child, Duration::from_secs(1)) {
            return;
        }
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = process::kill(pid, libc::SIGTERM);
        }
        if exited_within(&mut self.child, LOGGER_EXIT) {
            return;
        }
        warn!("logging binary {}: still running {LOGGER_EXIT:?} after SIGTERM; killed", self.what);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Stdio {
    /// The logging binary, for [`Logger::close`] once the process is deleted (outside any lock:
    /// it may take `LOGGER_EXIT`).
    pub fn take_logger(&self) -> Option<Logger> {
        let LogSink::Binary { child, what } = self.log.as_ref()? else { return None };
        let child = child.lock().unwrap_or_else(|e| e.into_inner()).take()?;
        Some(Logger { child, what: what.clone() })
    }
}

impl Drop for LogSink {
    /// A logging binary never closed (the process was never deleted): closed on a thread of
    /// its own, so that nothing here waits for it.
    fn drop(&mut self) {
        let LogSink::Binary { child, what } = self else { return };
        let Some(child) = child.get_mut().unwrap_or_else(|e| e.into_inner()).take() else { return };
        let logger = Logger { child, what: std::mem::take(what) };
        if let Err(e) = crate::logging::spawn(std::thread::Builder::new().name("logger-close".into()), move || logger.close()) {
            warn!("cannot close a logging binary: {e}");
        }
    }
}

/// Copies the stdin FIFO into a pipe that is the guest's fd 0; closing the pipe is how the
/// guest sees end-of-file. The FIFO is opened without blocking (a blocking open waits for a
/// writer that may never come, or came and went already, and nothing can end that wait: in a
/// pod's long-lived shim each such container left a thread and a descriptor behind) and polled:
/// data is copied as it comes, and the relay ends when the writer closes, when a writer came and
/// went without writing, or once stopped (the task exited, CloseIO) with nothing left to read.
struct StdinRelay {
    stop: Arc<AtomicBool>,
}

impl Drop for StdinRelay {
    fn drop(&mut self) {
        self.stop();
    }
}

impl StdinRelay {
    fn start(fifo: &str) -> Result<(StdinRelay, OwnedFd)> {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(ShimError::internal)?;
        let path = fifo.to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        crate::logging::spawn(std::thread::Builder::new().name("stdin".into()), move || {
            if let Err(e) = relay(&path, File::from(w), &stopped) {
                warn!("stdin {path}: {e}");
            }
        })
        .map_err(ShimError::internal)?;
        Ok((StdinRelay { stop }, r))
    }

    /// Ends the relay once what was written so far is delivered.
    fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The relay's loop (see [`StdinRelay`]); a guest that is gone (broken pipe) ends it quietly.
fn relay(fifo: &str, mut out: File, stop: &AtomicBool) -> std::io::Result<()> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::io::{ErrorKind, Read, Write};
    use std::os::fd::AsFd;
    let mut f = OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(fifo)?;
    let mut buf = vec![0u8; 32 << 10];
    loop {
        let stopping = stop.load(Ordering::SeqCst);
        let mut fds = [PollFd::new(f.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, if stopping { PollTimeout::ZERO } else { PollTimeout::from(100u16) }) {
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
            Ok(_) => {}
        }
        let got = fds[0].revents().unwrap_or(PollFlags::empty());
        if got.contains(PollFlags::POLLIN) {
            match f.read(&mut buf) {
                // The writer closed.
                Ok(0) => return Ok(()),
                Ok(n) => match out.write_all(&buf[..n]) {
                    Err(e) if e.kind() == ErrorKind::BrokenPipe => return Ok(()),
                    other => other?,
                },
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
                Err(e) => return Err(e),
            }
            continue;
        }
        // POLLHUP: a writer came and went (Linux reports it only then, not before any writer).
        if got.intersects(PollFlags::POLLHUP | PollFlags::POLLERR) || stopping {
            return Ok(());
        }
    }
}

fn open_output(path: &str) -> Result<Option<OwnedFd>> {
    if path.is_empty() {
        return Ok(None);
    }
    // Read-write, like containerd's own shims: the open never blocks and the FIFO stays valid
    // while the reader comes and goes.
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| ShimError::internal(format!("{path}: cannot open: {e}")))?;
    Ok(Some(f.into()))
}

/// Console sockets live here: the bundle path is too long for a unix socket name.
const CONSOLE_DIR: &str = "/run/containerd-shim-wasm-v1/tty";

pub fn console_socket() -> Result<ConsoleSocket> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = format!("{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
    ConsoleSocket::new(&PathBuf::from(CONSOLE_DIR), &name).map_err(|e| ShimError::internal(format!("console socket in {CONSOLE_DIR}: {e}")))
}

pub struct Terminal {
    master: Arc<OwnedFd>,
    /// Set when the copy to the stdout FIFO ended (none without a stdout).
    copied: Option<Arc<Latch>>,
}

impl Terminal {
    /// Starts copying between the FIFOs and the pty master.
    pub fn attach(master: OwnedFd, stdin: &str, stdout: &str) -> Result<Terminal> {
        let master = Arc::new(master);
        let dup = |m: &OwnedFd| m.try_clone().map_err(|e| ShimError::internal(format!("terminal: {e}")));
        let copied = match open_output(stdout)? {
            Some(out) => {
                let (mut from, mut to) = (File::from(dup(&master)?), File::from(out));
                // Ends with EIO once every process holding the pty's other end is gone.
                Some(spawn_copy("tty-out", move || {
                    let _ = std::io::copy(&mut from, &mut to);
                })?)
            }
            None => None,
        };
        if !stdin.is_empty() {
            let mut to = File::from(dup(&master)?);
            let path = stdin.to_string();
            crate::logging::spawn(std::thread::Builder::new().name("tty-in".into()), move || match File::open(&path) {
                Ok(mut f) => {
                    let _ = std::io::copy(&mut f, &mut to);
                }
                Err(e) => warn!("terminal stdin {path}: {e}"),
            })
            .map_err(ShimError::internal)?;
        }
        Ok(Terminal { master, copied })
    }

    pub fn resize(&self, rows: u32, cols: u32) -> Result<()> {
        let clamp = |v: u32| v.min(u16::MAX as u32) as u16;
        pty::set_window_size(self.master.as_fd(), clamp(rows), clamp(cols)).map_err(|e| ShimError::internal(format!("resize terminal: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_paths_and_log_uris_read_as_containerd_reads_them() {
        let fifo = "/run/containerd/fifo/123/c-stdout";
        assert_eq!(Output::parse("").unwrap(), Output::None);
        assert_eq!(Output::parse(fifo).unwrap(), Output::Fifo(fifo.into()));
        assert_eq!(Output::parse("file:///var/log/c%20one.log").unwrap(), Output::File("/var/log/c one.log".into()));
        match Output::parse("binary:///usr/bin/logger?tag=web&json").unwrap() {
            Output::Binary(program, u) => {
                assert_eq!(program, PathBuf::from("/usr/bin/logger"));
                assert_eq!(u.query_pairs().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(), ["tag=web", "json="]);
            }
            other => panic!("{other:?}"),
        }
        for bad in ["syslog://host/x", "file://remote/var/log/x", "file:relative", "binary://host/bin", "fifo:///run/x"] {
            let e = Output::parse(bad).unwrap_err().to_string();
            assert!(e.contains(bad), "{bad}: {e}");
        }
    }

    #[test]
    fn a_log_file_gets_both_streams_in_order_and_its_directory_is_made() {
        let dir = std::env::temp_dir().join(format!("stdio-test-{}", std::process::id()));
        let path = dir.join("sub/c.log");
        let uri = format!("file://{}", path.display());
        let (stdio, [_, out, err]) = Stdio::open("", &uri, &uri, false, Owner { namespace: "ns", id: "c" }).unwrap();
        let (mut out, mut err) = (File::from(out.unwrap()), File::from(err.unwrap()));
        use std::io::Write;
        out.write_all(b"one\n").unwrap();
        err.write_all(b"two\n").unwrap();
        out.write_all(b"three\n").unwrap();
        let flush = stdio.flush();
        drop((out, err));
        flush.wait();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "one\ntwo\nthree\n");
        // Appended to, not replaced.
        let (stdio, [_, out, _]) = Stdio::open("", &uri, "", false, Owner { namespace: "ns", id: "c" }).unwrap();
        File::from(out.unwrap()).write_all(b"four\n").unwrap();
        stdio.flush().wait();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "one\ntwo\nthree\nfour\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_terminal_s_last_output_is_copied_before_the_exit_is_reported() {
        use std::io::Write;
        let dir = std::env::temp_dir().join(format!("stdio-tty-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("stdout");
        std::fs::write(&out, b"").unwrap();
        let pty = nix::pty::openpty(None, None).unwrap();
        let mut stdio = Stdio::default();
        stdio.attach_terminal(pty.master, "", out.to_str().unwrap()).unwrap();
        // More than one read of the copy, written by the process just before it exits.
        let line = "x".repeat(99) + "\n";
        let mut slave = File::from(pty.slave);
        for _ in 0..30 {
            slave.write_all(line.as_bytes()).unwrap();
        }
        drop(slave);
        // The process exited: what it wrote is in the FIFO (here a file) once `flush` returns.
        let flush = stdio.flush();
        assert!(flush.0.is_some(), "a terminal's copy is waited for");
        flush.wait();
        let copied = std::fs::read_to_string(&out).unwrap();
        // The pty turns \n into \r\n.
        assert_eq!(copied.len(), 30 * 101, "{} bytes", copied.len());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_logging_binary_gets_the_streams_and_who_they_are_for() {
        let dir = std::env::temp_dir().join(format!("stdio-bin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let owner = Owner { namespace: "ns", id: "c" };
        let script = |name: &str, body: &str| {
            let p = dir.join(name);
            std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
            std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
            p
        };
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
        use std::io::Write;
        // Ready by closing fd 5; then its environment, its arguments (each key once, with its
        // first value, even empty) and fds 3 and 4.
        let got = dir.join("got");
        let logger = script("logger", &format!("exec 5>&-\n{{ echo \"$CONTAINER_NAMESPACE/$CONTAINER_ID $# $*\"; cat <&3; cat <&4; }} > {}", got.display()));
        let uri = format!("binary://{}?tag=web&json&tag=twice", logger.display());
        let (stdio, [_, out, err]) = Stdio::open("", &uri, "", false, owner).unwrap();
        File::from(out.unwrap()).write_all(b"out\n").unwrap();
        File::from(err.expect("stderr goes to the binary even when the request names none")).write_all(b"err\n").unwrap();
        stdio.take_logger().unwrap().close();
        assert_eq!(read("got"), "ns/c 4 tag web json \nout\nerr\n");
        // binary-v2: a byte on fd 5 is ready.
        let logger = script("logger2", &format!("printf x >&5\nexec 5>&-\ncat <&3 > {}", dir.join("got2").display()));
        let uri = format!("binary-v2://{}", logger.display());
        let (stdio, [_, out, _]) = Stdio::open("", &uri, &uri, false, owner).unwrap();
        File::from(out.unwrap()).write_all(b"v2\n").unwrap();
        stdio.take_logger().unwrap().close();
        assert_eq!(read("got2"), "v2\n");
        // One that stays after the output ended gets SIGTERM when closed.
        let logger = script("lingers", &format!("exec 5>&-\ntrap 'echo term > {}; exit 0' TERM\nwhile :; do sleep 0.1; done", dir.join("got3").display()));
        let uri = format!("binary://{}", logger.display());
        let (stdio, fds) = Stdio::open("", &uri, &uri, false, owner).unwrap();
        drop(fds);
        stdio.take_logger().unwrap().close();
        assert_eq!(read("got3"), "term\n");
        // A v2 binary that never says ready is refused with its name, not waited on forever.
        let uri = "binary-v2:///bin/true";
        let e = Stdio::open("", uri, uri, false, owner).err().unwrap().to_string();
        assert!(e.contains("/bin/true"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
