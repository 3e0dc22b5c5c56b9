//! Spawning the container init and watching it: the re-exec of the shim binary, the sync
//! socket handed to it as fd 3, pidfds (so an exit can never be lost or confused with a reused
//! pid), signals and waiting.

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};

/// The fd number at which the container init finds its sync socket.
pub const SYNC_FD: RawFd = 3;

/// A connected pair of unix stream sockets, both close-on-exec: one end for the shim, one for
/// the init process it spawns.
pub fn sync_pair() -> io::Result<(UnixStream, OwnedFd)> {
    let (a, b) = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(io::Error::from)?;
    Ok((UnixStream::from(a), b))
}

/// Spawns `cmd` with `sync` as its fd 3 and the given stdio. The socket stays close-on-exec in
/// the shim, so concurrent spawns on other threads never inherit it (that would keep the
/// socket open and hide the init's death).
pub fn spawn_with_sync(mut cmd: Command, sync: OwnedFd, stdio: [Option<OwnedFd>; 3]) -> io::Result<Child> {
    let [stdin, stdout, stderr] = stdio;
    cmd.stdin(stdin.map(Stdio::from).unwrap_or_else(Stdio::null));
    cmd.stdout(stdout.map(Stdio::from).unwrap_or_else(Stdio::null));
    cmd.stderr(stderr.map(Stdio::from).unwrap_or_else(Stdio::null));
    spawn_with_fds(cmd, vec![sync])
}

/// Spawns `cmd` with `fds` as its descriptors 3, 4, … (its stdio as `cmd` sets it). They stay
/// close-on-exec in this process, so concurrent spawns on other threads never inherit them;
/// they are closed here once the child has them.
pub fn spawn_with_fds(mut cmd: Command, fds: Vec<OwnedFd>) -> io::Result<Child> {
    const MOST: usize = 8;
    if fds.len() > MOST {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "too many descriptors for a child"));
    }
    let mut raw = [0 as RawFd; MOST];
    for (r, fd) in raw.iter_mut().zip(&fds) {
        *r = fd.as_raw_fd();
    }
    let n = fds.len();
    // SAFETY: the closure runs in the child between fork and exec; it only calls fcntl and dup2,
    // which are async-signal-safe, on descriptors this process owns until the exec, and touches
    // no memory shared with other threads.
    unsafe {
        cmd.pre_exec(move || {
            // Each moved above the targets first, so that a source already at 3, 4, … is not
            // overwritten before it is copied; dup2 then clears close-on-exec on the target.
            let mut moved = [0 as RawFd; MOST];
            for i in 0..n {
                moved[i] = libc::fcntl(raw[i], libc::F_DUPFD_CLOEXEC, (SYNC_FD + MOST as RawFd) as libc::c_int);
                if moved[i] < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            for (i, fd) in moved.iter().take(n).enumerate() {
                if libc::dup2(*fd, SYNC_FD + i as RawFd) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = cmd.spawn();
    drop(fds);
    child
}

/// Takes ownership of the sync socket inherited as fd 3 (in the init process).
pub fn inherited_sync() -> io::Result<UnixStream> {
    let flags = nix::fcntl::fcntl(
        // SAFETY: fd 3 is only borrowed for this fcntl call.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(SYNC_FD) },
        nix::fcntl::FcntlArg::F_GETFD,
    )
    .map_err(|e| io::Error::new(io::ErrorKind::NotFound, format!("sync fd {SYNC_FD} is not open: {e}")))?;
    let _ = flags;
    // SAFETY: the shim hands fd 3 to the init for exactly this purpose and nothing else in the
    // process owns it; we take sole ownership here and mark it close-on-exec.
    let fd = unsafe { OwnedFd::from_raw_fd(SYNC_FD) };
    nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC))
        .map_err(io::Error::from)?;
    Ok(UnixStream::from(fd))
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Exited(i32),
    Signaled(i32),
}

impl ExitStatus {
    /// containerd's convention: the exit code, or 128 + the signal number.
    pub fn code(self) -> u32 {
        match self {
            ExitStatus::Exited(c) => c as u32,
            ExitStatus::Signaled(s) => 128 + s as u32,
        }
    }
}

/// A pidfd: a handle on one process that stays valid (and unambiguous) until dropped, even
/// after the process exits and its pid is reused.
#[derive(Debug)]
pub struct PidFd {
    fd: OwnedFd,
    pid: i32,
}

impl PidFd {
    /// Opens a pidfd for `pid`. Works on a zombie too, so an exit that happened before the
    /// call is still observed by `wait`.
    pub fn open(pid: i32) -> io::Result<PidFd> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1; no memory is
        // passed.
        let ret = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the syscall returned a fresh fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(ret as RawFd) };
        Ok(PidFd { fd, pid })
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Sends `signal` to the process; `ESRCH` once it has exited.
    pub fn send_signal(&self, signal: i32) -> io::Result<()> {
        // SAFETY: pidfd_send_signal with a null siginfo and flags 0 reads no memory of ours.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.fd.as_raw_fd(),
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Whether the process has exited (its pidfd is readable), without waiting or reaping.
    pub fn exited(&self) -> bool {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
        matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
    }

    /// Blocks until the process exits and reaps it. The caller must be its parent (or the
    /// subreaper it was reparented to).
    pub fn wait(&self) -> io::Result<ExitStatus> {
        loop {
            // SAFETY: siginfo_t is plain data; zeroed is a valid value and waitid fills it.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            // SAFETY: P_PIDFD waits on our own fd; `info` is a valid out pointer.
            let ret = unsafe {
                libc::waitid(
                    libc::P_PIDFD,
                    self.fd.as_raw_fd() as libc::id_t,
                    &mut info,
                    libc::WEXITED,
                )
            };
            if ret < 0 {
                let err = io::Error::last_os_error();
                if err.raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                return Err(err);
            }
            // SAFETY: after a successful waitid with WEXITED, si_status and si_code are set.
            let (code, status) = unsafe { (info.si_code, info.si_status()) };
            return Ok(if code == libc::CLD_EXITED {
                ExitStatus::Exited(status)
            } else {
                ExitStatus::Signaled(status)
            });
        }
    }
}

impl AsFd for PidFd {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Sends a signal by pid (for processes we hold no pidfd of, such as the ones `delete` finds).
pub fn kill(pid: i32, signal: i32) -> io::Result<()> {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::try_from(signal).map_err(io::Error::from)?,
    )
    .map_err(io::Error::from)
}

/// When `pid` started (clock ticks after boot, field 22 of `/proc/<pid>/stat`). With the pid it
/// names one process for the life of the machine: a reused pid has a later start time.
pub fn start_time(pid: i32) -> io::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_start_time(&stat).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("/proc/{pid}/stat: no start time")))
}

/// Field 22 of a `stat` line; the command name (field 2) may hold spaces and parentheses, so
/// fields are counted after its last `)`.
fn parse_start_time(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod start_time_tests {
    use super::*;

    #[test]
    fn start_time_is_field_22_whatever_the_name() {
        let line = "4242 (a) b (c) R 1 4242 4242 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 1 0 987654 1000 100 1844 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(parse_start_time(line), Some(987654));
        assert_eq!(parse_start_time("12 (x) S 1 2"), None);
        assert_eq!(parse_start_time(""), None);
        let me = start_time(std::process::id() as i32).unwrap();
        assert!(me > 0 && me == start_time(std::process::id() as i32).unwrap());
    }
}

/// Forks the (single-threaded) init process; used once to enter a new or joined pid
/// namespace, whose first member must be a child of the process that entered it.
pub enum Fork {
    Parent(i32),
    Child,
}

/// # Safety contract for callers
/// Only call this from the container init before it has started any thread: the child
/// continues running Rust code, which is sound only in a single-threaded process.
pub fn fork_single_threaded() -> io::Result<Fork> {
    let threads = std::fs::read_dir("/proc/self/task").map(|d| d.count()).unwrap_or(1);
    if threads != 1 {
        return Err(io::Error::other(format!(
            "refusing to fork: the init process has {threads} threads"
        )));
    }
    // SAFETY: checked above that this process has exactly one thread, so the child gets a
    // consistent copy of every lock and allocator state.
    match unsafe { nix::unistd::fork() }.map_err(io::Error::from)? {
        nix::unistd::ForkResult::Parent { child } => Ok(Fork::Parent(child.as_raw())),
        nix::unistd::ForkResult::Child => Ok(Fork::Child),
    }
}

/// `n` zeroed 64-bit atomics in memory this process shares with the children it forks from now
/// on (an anonymous `MAP_SHARED` mapping, never unmapped): counters that several processes add
/// to and one reads.
pub fn shared_counters(n: usize) -> io::Result<&'static [std::sync::atomic::AtomicU64]> {
    use nix::sys::mman::{mmap_anonymous, MapFlags, ProtFlags};
    let bytes = n.max(1).checked_mul(std::mem::size_of::<u64>()).ok_or_else(|| io::Error::other("too many counters"))?;
    let len = std::num::NonZeroUsize::new(bytes).ok_or_else(|| io::Error::other("empty"))?;
    // SAFETY: a new anonymous mapping at an address the kernel picks: it overlaps nothing of ours.
    let p = unsafe { mmap_anonymous(None, len, ProtFlags::PROT_READ | ProtFlags::PROT_WRITE, MapFlags::MAP_SHARED) }?;
    // SAFETY: the mapping is page-aligned (so aligned for AtomicU64), `n` atomics long, zero-filled
    // (zero is a valid AtomicU64), never unmapped (it lives as long as the process: 'static), and
    // only ever accessed through the atomics, whichever process writes.
    Ok(unsafe { std::slice::from_raw_parts(p.as_ptr().cast::<std::sync::atomic::AtomicU64>(), n) })
}

/// Has the kernel send SIGKILL to the calling process when the thread that forked it ends; false
/// if that already happened (the parent, `parent`, is gone before the call took effect).
pub fn die_with_parent(parent: i32) -> io::Result<bool> {
    // SAFETY: prctl with integer arguments only.
    let ret = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(nix::unistd::getppid().as_raw() == parent)
}

/// Blocks the given signals in the calling thread (and so in every thread it spawns later).
pub fn block_signals(signals: &[i32]) -> io::Result<nix::sys::signal::SigSet> {
    let mut set = nix::sys::signal::SigSet::empty();
    for s in signals {
        set.add(nix::sys::signal::Signal::try_from(*s).map_err(io::Error::from)?);
    }
    set.thread_block().map_err(io::Error::from)?;
    Ok(set)
}

/// Leaves the process immediately with `code`, without running destructors or atexit
/// handlers (used when a signal must stop a guest blocked in a host call).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and is safe to call from any thread.
    unsafe { libc::_exit(code) }
}

/// Marks the process as a child subreaper so that orphaned descendants (the container init,
/// after its intermediate parent exits) are reparented to it.
pub fn set_child_subreaper() -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    let ret = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Keeps glibc's malloc to one arena in a process that allocates little from many threads (the
/// shim server: ttrpc workers, event publisher, exit and I/O watchers). glibc otherwise gives
/// each thread that allocates its own arena, and each arena keeps a few dirty pages of its own:
/// with one arena they share the main heap. No effect with another allocator.
pub fn single_malloc_arena() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt takes two integers and only changes allocator tuning; it is called once,
    // at start, before the process spawns threads.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Gives the free memory of the malloc heap back to the kernel (glibc's `malloc_trim`): called
/// after a burst of short-lived allocations (a task's Create in the shim; a burst of requests
/// in a serving init or worker, once it is quiet) so a long-lived, mostly idle process does not
/// keep them resident.
pub fn release_free_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim takes an integer and only returns free pages of the heap to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Ignores `signal` process-wide (SIGPIPE in the shim: a vanished peer is an error, not death).
pub fn ignore_signal(signal: i32) -> io::Result<()> {
    let sig = nix::sys::signal::Signal::try_from(signal).map_err(io::Error::from)?;
    // SAFETY: SIG_IGN installs no handler code, so no async-signal-safety concerns arise.
    unsafe { nix::sys::signal::signal(sig, nix::sys::signal::SigHandler::SigIgn) }.map_err(io::Error::from)?;
    Ok(())
}

/// Points stdout at stderr: the shim's `start` action reads our stdout until it closes, which
/// tells it the server is listening.
pub fn stdout_to_stderr() -> io::Result<()> {
    // SAFETY: dup2 on the two standard fds; both stay open and owned by the process.
    let ret = unsafe { libc::dup2(libc::STDERR_FILENO, libc::STDOUT_FILENO) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// How many threads the calling process has (`Threads:` of `/proc/self/status`).
pub fn thread_count() -> io::Result<usize> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no Threads: line in /proc/self/status"))
}

/// Hands `fd` to the other side (SCM_RIGHTS, with one byte). Only on a socket the other side
/// reads with [`recv_fd`] at that point, never through a `BufReader` (it would drop the fd).
pub fn send_fd(sock: &std::os::unix::net::UnixStream, fd: std::os::fd::BorrowedFd) -> io::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let fds = [fd.as_raw_fd()];
    let iov = [io::IoSlice::new(b"F")];
    sendmsg::<()>(sock.as_raw_fd(), &iov, &[ControlMessage::ScmRights(&fds)], MsgFlags::MSG_NOSIGNAL, None)?;
    Ok(())
}

/// Receives one descriptor sent with [`send_fd`]; `Ok(None)` at end of stream.
pub fn recv_fd(sock: &std::os::unix::net::UnixStream) -> io::Result<Option<std::os::fd::OwnedFd>> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut byte = [0u8; 1];
    let mut iov = [io::IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(sock.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)?;
    if msg.bytes == 0 {
        return Ok(None);
    }
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            if let Some(&fd) = fds.first() {
                // SAFETY: the kernel has just installed this descriptor in our table for this message;
                // nothing else owns it.
                return Ok(Some(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }));
            }
        }
    }
    Err(io::Error::new(io::ErrorKind::InvalidData, "a message without a descriptor"))
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_counters_are_one_memory_across_fork() {
        use std::sync::atomic::Ordering::Relaxed;
        let c = shared_counters(3).unwrap();
        c[1].fetch_add(5, Relaxed);
        // SAFETY: the child only touches the atomics and leaves with _exit.
        match unsafe { libc::fork() } {
            0 => {
                c[1].fetch_add(2, Relaxed);
                c[2].store(9, Relaxed);
                // SAFETY: _exit never returns.
                unsafe { libc::_exit(0) }
            }
            pid => {
                assert!(pid > 0, "fork: {}", io::Error::last_os_error());
                let mut status = 0;
                // SAFETY: waits for our own child; `status` is a valid out pointer.
                assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
            }
        }
        assert_eq!([c[0].load(Relaxed), c[1].load(Relaxed), c[2].load(Relaxed)], [0, 7, 9]);
    }

    // The children are reaped through their pidfds, not by `Child::wait`.
    #[allow(clippy::zombie_processes)]
    #[test]
    fn pidfd_waits_for_exit_code_and_signal() {
        let child = Command::new("sh").args(["-c", "exit 7"]).spawn().unwrap();
        let pidfd = PidFd::open(child.id() as i32).unwrap();
        assert_eq!(pidfd.wait().unwrap(), ExitStatus::Exited(7));

        let child = Command::new("sleep").arg("30").spawn().unwrap();
        let pidfd = PidFd::open(child.id() as i32).unwrap();
        pidfd.send_signal(libc::SIGTERM).unwrap();
        let status = pidfd.wait().unwrap();
        assert_eq!(status, ExitStatus::Signaled(libc::SIGTERM));
        assert_eq!(status.code(), 143);
        // Signalling a reaped process fails instead of hitting a reused pid.
        assert!(pidfd.send_signal(libc::SIGTERM).is_err());
    }

    #[allow(clippy::zombie_processes)]
    #[test]
    fn pidfd_sees_an_exit_that_happened_before_open() {
        let child = Command::new("true").spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        let pidfd = PidFd::open(child.id() as i32).unwrap();
        assert_eq!(pidfd.wait().unwrap(), ExitStatus::Exited(0));
    }

    #[test]
    fn sync_socket_reaches_the_child_as_fd_3() {
        use std::io::Read;
        let (mut ours, theirs) = sync_pair().unwrap();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo ready >&3"]);
        let mut child = spawn_with_sync(cmd, theirs, [None, None, None]).unwrap();
        let mut buf = String::new();
        ours.read_to_string(&mut buf).unwrap();
        assert_eq!(buf, "ready\n");
        assert!(child.wait().unwrap().success());
    }
}

/// Puts the calling thread (and threads it creates afterwards) in the `SCHED_IDLE` class: it
/// runs only when nothing of normal priority in its cgroup wants the CPU. For work nobody
/// waits for (background compiles): a nice value still takes about a tenth of a CPU from a
/// busy neighbour, an idle-class thread next to nothing. Call it before starting threads.
pub fn set_idle_scheduling() -> io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid sched_param that outlives the call; pid 0 is the calling
    // thread; SCHED_IDLE needs priority 0 and no privilege.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Lowers the scheduling priority of the calling thread (and of threads it creates afterwards)
/// to `nice` (0 normal, 19 lowest). Call it before starting threads: on Linux the nice value
/// is per thread.
pub fn set_nice(nice: i32) -> io::Result<()> {
    // SAFETY: setpriority takes integers only; `who` 0 is the calling thread.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
