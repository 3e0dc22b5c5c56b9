//! A task's stdio: containerd's FIFOs as the init's or exec process's descriptors (the stdin
//! FIFO relayed into a pipe, the output FIFOs opened directly).

use std::fs::{File, OpenOptions};
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use log::warn;

use crate::errors::{Result, ShimError};

/// Copies the stdin FIFO into a pipe that is the guest's fd 0; closing the pipe is how the
/// guest sees end-of-file. The FIFO is opened without blocking (a blocking open waits for a
/// writer that may never come, or came and went already, and nothing can end that wait: in a
/// pod's long-lived shim each such container left a thread and a descriptor behind) and polled:
/// data is copied as it comes, and the relay ends when the writer closes, when a writer came and
/// went without writing, or once stopped (the task exited, CloseIO) with nothing left to read.
pub(crate) struct StdinRelay {
    stop: Arc<AtomicBool>,
}

impl StdinRelay {
    pub(crate) fn start(fifo: &str) -> Result<(StdinRelay, OwnedFd)> {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(ShimError::internal)?;
        let path = fifo.to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::Builder::new()
            .name("stdin".into())
            .spawn(move || {
                if let Err(e) = relay(&path, File::from(w), &stopped) {
                    warn!("stdin {path}: {e}");
                }
            })
            .map_err(ShimError::internal)?;
        Ok((StdinRelay { stop }, r))
    }

    /// Ends the relay once what was written so far is delivered.
    pub(crate) fn stop(&self) {
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

pub(crate) fn open_output(path: &str) -> Result<Option<OwnedFd>> {
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

