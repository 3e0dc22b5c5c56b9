//! A process's stdio, for a container's init and an exec process alike: containerd's FIFOs as
//! its descriptors (the stdin FIFO relayed into a pipe, the output FIFOs opened directly), or a
//! terminal (the pty master runc hands over, copied from the stdin FIFO and to the stdout FIFO,
//! resized by ResizePty).

use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use log::warn;
use wasm_shim_container::pty::{self, ConsoleSocket};

use crate::errors::{Result, ShimError};

/// What the shim holds of a process's stdio while it runs: the stdin relay, or its terminal.
#[derive(Default)]
pub struct Stdio {
    relay: Option<StdinRelay>,
    tty: Option<Terminal>,
}

impl Stdio {
    /// The process's descriptors for containerd's FIFOs (none where a path is empty), and what
    /// the shim keeps of them. With `terminal` there are none: runc makes a pty, and its master
    /// is attached once handed over ([`Stdio::attach_terminal`]).
    pub fn open(stdin: &str, stdout: &str, stderr: &str, terminal: bool) -> Result<(Stdio, [Option<OwnedFd>; 3])> {
        if terminal {
            return Ok((Stdio::default(), [None, None, None]));
        }
        let (relay, fd) = match stdin {
            "" => (None, None),
            path => {
                let (relay, fd) = StdinRelay::start(path)?;
                (Some(relay), Some(fd))
            }
        };
        let stdio = Stdio { relay, tty: None };
        // On an error here the relay stops as `stdio` drops.
        let fds = [fd, open_output(stdout)?, open_output(stderr)?];
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
}

impl Terminal {
    /// Starts copying between the FIFOs and the pty master.
    pub fn attach(master: OwnedFd, stdin: &str, stdout: &str) -> Result<Terminal> {
        let master = Arc::new(master);
        let dup = |m: &OwnedFd| m.try_clone().map_err(|e| ShimError::internal(format!("terminal: {e}")));
        if let Some(out) = open_output(stdout)? {
            let mut from = File::from(dup(&master)?);
            let mut to = File::from(out);
            std::thread::Builder::new()
                .name("tty-out".into())
                .spawn(move || {
                    // Ends with EIO once every process holding the pty's other end is gone.
                    let _ = std::io::copy(&mut from, &mut to);
                })
                .map_err(ShimError::internal)?;
        }
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
        Ok(Terminal { master })
    }

    pub fn resize(&self, rows: u32, cols: u32) -> Result<()> {
        let clamp = |v: u32| v.min(u16::MAX as u32) as u16;
        pty::set_window_size(self.master.as_fd(), clamp(rows), clamp(cols)).map_err(|e| ShimError::internal(format!("resize terminal: {e}")))
    }
}
