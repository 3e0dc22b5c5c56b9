//! A terminal of a native container or exec process: the pty master runc handed over, copied
//! from the stdin FIFO and to the stdout FIFO (a terminal has no separate stderr), resized by
//! ResizePty.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use log::warn;
use wasm_shim_container::pty::{self, ConsoleSocket};

use crate::stdio::open_output;
use crate::errors::{Result, ShimError};

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
            std::thread::Builder::new()
                .name("tty-in".into())
                .spawn(move || match File::open(&path) {
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
