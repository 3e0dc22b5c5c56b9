//! The pod sandbox process: holds the pod's namespaces open until it is told to stop.
//!
//! It blocks SIGTERM, SIGINT and SIGCHLD and takes them synchronously with `sigwaitinfo`:
//! SIGTERM or SIGINT ends it with status 0; SIGCHLD reaps every exited child (as PID 1 of a pod
//! that shares its PID namespace it inherits orphans). Blocking instead of installing handlers
//! matters for PID 1: the kernel drops signals with a default disposition that are sent to a
//! namespace's init, but never blocked ones.

use std::io::Write;

fn main() {
    if std::env::args().nth(1).as_deref() == Some("--version") {
        println!("wasm-shim-test-pause {}", env!("CARGO_PKG_VERSION"));
        return;
    }
    // SAFETY: sigset_t is plain data that sigemptyset initialises; every pointer passed below
    // points to a live local of the right type.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGCHLD] {
            libc::sigaddset(&mut set, sig);
        }
        if libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            fail("sigprocmask");
        }
        loop {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let sig = libc::sigwaitinfo(&set, &mut info);
            if sig < 0 {
                if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                fail("sigwaitinfo");
            }
            if sig == libc::SIGCHLD {
                reap();
            } else {
                let _ = writeln!(std::io::stderr(), "pause: signal {sig}, exiting");
                std::process::exit(0);
            }
        }
    }
}

/// Reaps every child that has exited (several exits may share one SIGCHLD).
fn reap() {
    loop {
        let mut status = 0;
        // SAFETY: waitpid with a valid pointer to a local int.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return;
        }
    }
}

fn fail(what: &str) -> ! {
    let _ = writeln!(
        std::io::stderr(),
        "pause: {what}: {}",
        std::io::Error::last_os_error()
    );
    std::process::exit(1);
}
