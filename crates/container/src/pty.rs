//! Terminals for native containers and exec processes (`ctr run -t`, `kubectl exec -it`): runc
//! allocates the pty inside the container and sends its master end over a unix socket (the
//! "console socket"); the shim keeps the master, copies it to and from containerd's FIFOs and
//! resizes it.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};

/// A listening console socket; removed when dropped.
pub struct ConsoleSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl ConsoleSocket {
    /// Listens at `dir/<name>.sock` (keep `dir` short: socket paths are limited to 107 bytes).
    pub fn new(dir: &Path, name: &str) -> io::Result<ConsoleSocket> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("{name}.sock"));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)?;
        listener.set_nonblocking(true)?;
        Ok(ConsoleSocket { listener, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits for runc to connect and send the pty master; gives up at `timeout` or as soon as
    /// `gave_up()` says the sender is gone.
    pub fn receive_master(&self, timeout: Duration, mut gave_up: impl FnMut() -> bool) -> io::Result<OwnedFd> {
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match self.listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline || gave_up() {
                        return Err(io::Error::new(io::ErrorKind::TimedOut, "runc did not send the terminal"));
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(e),
            }
        };
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut buf = [0u8; 4096];
        let mut iov = [io::IoSliceMut::new(&mut buf)];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let msg = recvmsg::<()>(stream.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC).map_err(io::Error::from)?;
        for cmsg in msg.cmsgs().map_err(io::Error::from)? {
            if let ControlMessageOwned::ScmRights(fds) = cmsg {
                if let Some(&fd) = fds.first() {
                    for &extra in &fds[1..] {
                        // SAFETY: the kernel just installed these descriptors in this process
                        // for us; nobody else owns them, so closing them here is sound.
                        drop(unsafe { OwnedFd::from_raw_fd(extra) });
                    }
                    // SAFETY: as above; ownership of the first descriptor passes to the caller.
                    return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
        }
        Err(io::Error::new(io::ErrorKind::InvalidData, "no descriptor in runc's console message"))
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

nix::ioctl_write_ptr_bad!(tiocswinsz, libc::TIOCSWINSZ, libc::winsize);

/// Sets a terminal's size (ResizePty).
pub fn set_window_size(fd: BorrowedFd<'_>, rows: u16, cols: u16) -> io::Result<()> {
    let ws = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCSWINSZ reads one `winsize` from the pointer, which points at a live local;
    // `fd` is a valid descriptor for the duration of the call.
    unsafe { tiocswinsz(fd.as_raw_fd(), &ws) }.map(drop).map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn master_travels_over_the_socket_and_resizes() {
        use nix::sys::socket::{sendmsg, ControlMessage};
        let dir = tempfile::tempdir().unwrap();
        let sock = ConsoleSocket::new(dir.path(), "t").unwrap();
        let pty = nix::pty::openpty(None, None).unwrap();
        let path = sock.path().to_path_buf();
        let master_raw = pty.master.as_raw_fd();
        let sender = std::thread::spawn(move || {
            let s = std::os::unix::net::UnixStream::connect(&path).unwrap();
            let fds = [master_raw];
            let iov = [io::IoSlice::new(b"/dev/ptmx")];
            sendmsg::<()>(s.as_raw_fd(), &iov, &[ControlMessage::ScmRights(&fds)], MsgFlags::empty(), None).unwrap();
        });
        let got = sock.receive_master(Duration::from_secs(5), || false).unwrap();
        sender.join().unwrap();
        set_window_size(got.as_fd(), 40, 132).unwrap();
        let ws = nix::libc::winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
        let mut ws = ws;
        nix::ioctl_read_bad!(tiocgwinsz, libc::TIOCGWINSZ, libc::winsize);
        // SAFETY: TIOCGWINSZ writes one `winsize` into a live local.
        unsafe { tiocgwinsz(pty.slave.as_raw_fd(), &mut ws) }.unwrap();
        assert_eq!((ws.ws_row, ws.ws_col), (40, 132));
        let path = sock.path().to_path_buf();
        drop(sock);
        assert!(!path.exists());
    }

    #[test]
    fn gives_up_when_nobody_connects() {
        let dir = tempfile::tempdir().unwrap();
        let sock = ConsoleSocket::new(dir.path(), "t").unwrap();
        let e = sock.receive_master(Duration::from_secs(5), || true).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }
}
