//! A served workload's processes: one per CPU the container may use, all accepting on the
//! listener bound at Create.
//!
//! Why processes and not threads: a request's instance is made and dropped in a few tens of
//! microseconds, and dropping it returns its memory to the kernel (`madvise`), as does the
//! first write to a page of its memory image (copy on write). In one process with a worker
//! thread per CPU, each of those changes to the shared address space interrupts every other
//! CPU running a thread of it (a TLB shoot-down); in a process of its own, a single-threaded
//! server interrupts nobody. `docs/benchmarks.md` has the measurements.
//!
//! The init forks the workers once it is what the guest will run as (rootfs entered,
//! privileges dropped, seccomp and LSM labels loaded: a worker inherits all of it) and while it
//! still has one thread. It stays the container's process as containerd knows it: it answers
//! the shim, forwards Start, the drain (a signal) and the optimized code to the workers, and
//! serves too. A worker dies with it (`PR_SET_PDEATHSIG`), and a worker that ends before the
//! drain stops the whole server with that worker's status, as the one process would have
//! ended (the memory cgroup's OOM killer picks a process, not a container).
//!
//! Requests in flight are counted across the processes (an atomic in memory they share), so
//! `http-max-concurrency` is the pod's cap wherever a request lands; open connections are split
//! between them (a process at its part leaves the next connection to another, the listen socket
//! being shared). The metrics are counted in memory the
//! processes share (mapped before the fork), and the init serves the one endpoint. What must
//! stay in one process keeps one: the access log's lines, kept whole against the guest's own
//! output by a lock of the process.

use std::io::BufReader;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use wasm_shim_container::process::{self, PidFd};
use wasm_shim_engine::Shutdown;
use wasm_shim_oci::HttpConfig;

use crate::protocol::{self, ToInit};

/// At most this many processes serve one workload, whatever the node's CPUs: each costs its own
/// runtime, instances kept warm and memory.
pub const MAX_PROCESSES: usize = 8;

/// How many processes serve: one per CPU the container may use (`cpus`, see [`cpus_of`]), at
/// most the pod's `http-processes` and the node's `setting` (else [`MAX_PROCESSES`]); never
/// more than requests in flight or connections allowed at once, and one when the access log is
/// on.
pub fn count(http: &HttpConfig, setting: Option<usize>, cpus: usize) -> usize {
    if http.access_log {
        return 1;
    }
    let node = setting.unwrap_or(MAX_PROCESSES);
    let most = http.processes.map_or(node, |n| (n as usize).min(node)).max(1);
    cpus.min(most).min(http.max_concurrency as usize).min(http.max_open_connections() as usize).max(1)
}

/// The CPUs a container may use, as its spec sets them: its CPU quota (rounded up) and its
/// cpuset, within `node` (what this process may run on). Not its shares: they weigh CPU time
/// against other containers, they do not limit it (and `ctr` sets 1024 whatever was asked). Read from the spec rather than from the
/// container's cgroup, which a cgroup namespace hides from the init.
pub fn cpus_of(spec: &oci_spec::runtime::Spec, node: usize) -> usize {
    let cpu = spec.linux().as_ref().and_then(|l| l.resources().as_ref()).and_then(|r| r.cpu().as_ref());
    let mut n = node.max(1);
    if let Some(cpu) = cpu {
        if let (Some(quota), Some(period)) = (cpu.quota(), cpu.period()) {
            if quota > 0 && period > 0 {
                n = n.min((quota as u64).div_ceil(period) as usize);
            }
        }
        if let Some(set) = cpu.cpus().as_deref().and_then(cpuset_len) {
            n = n.min(set);
        }
    }
    n.max(1)
}

/// How many CPUs a cpuset list (`0-3,8,10-11`) names; `None` if empty or unreadable.
fn cpuset_len(list: &str) -> Option<usize> {
    let mut n = 0usize;
    for part in list.trim().split(',').filter(|p| !p.trim().is_empty()) {
        let (a, b) = part.trim().split_once('-').unwrap_or((part.trim(), part.trim()));
        let (a, b): (usize, usize) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
        n = n.checked_add(b.checked_sub(a)?.checked_add(1)?)?;
    }
    (n > 0).then_some(n)
}

/// Process `index`'s part of `total` split between `n`: the parts add up to `total`, and differ
/// by one at most.
pub fn share(total: u32, n: usize, index: usize) -> u32 {
    let n = n.max(1) as u32;
    total / n + u32::from((index as u32) < total % n)
}

/// A worker as its parent knows it: its pid, and the socket Start and the optimized code go
/// through.
pub struct Worker {
    pub pid: i32,
    pub sock: UnixStream,
}

pub enum Role {
    /// The init: the workers it forked (maybe fewer than asked, or none).
    Main(Vec<Worker>),
    /// A worker, `index` from 1, and its end of the socket to the init.
    Worker { index: usize, sock: UnixStream },
}

/// Forks `n` workers. Only while the calling process has one thread. A fork that
/// fails (a pids limit, a seccomp profile without fork) leaves fewer workers, said in the log:
/// the server runs on what it has.
pub fn fork(n: usize) -> Role {
    let parent = std::process::id() as i32;
    let mut workers: Vec<Worker> = Vec::with_capacity(n);
    for index in 1..=n {
        let (ours, theirs) = match UnixStream::pair() {
            Ok(p) => p,
            Err(e) => {
                log::warn!("serving in {} processes, not {}: socket: {e}", workers.len() + 1, n + 1);
                break;
            }
        };
        match process::fork_single_threaded() {
            Ok(process::Fork::Parent(pid)) => workers.push(Worker { pid, sock: ours }),
            Ok(process::Fork::Child) => {
                // The other workers' sockets are the init's business.
                drop(workers);
                drop(ours);
                match process::die_with_parent(parent) {
                    Ok(true) => {}
                    _ => process::exit_now(1),
                }
                return Role::Worker { index, sock: theirs };
            }
            Err(e) => {
                log::warn!("serving in {} processes, not {}: fork: {e}", workers.len() + 1, n + 1);
                break;
            }
        }
    }
    Role::Main(workers)
}

/// Hands Start to the workers.
pub fn start(workers: &[Worker], start: &ToInit) {
    for w in workers {
        let mut sock = &w.sock;
        if let Err(e) = protocol::send(&mut sock, start) {
            log::warn!("serving process {}: start: {e}", w.pid);
        }
    }
}

/// In a worker: waits for the init's Start. `None` when the init is gone without one. Read a
/// byte at a time, so that nothing after the line (the optimized code's descriptor) is taken.
pub fn await_start(sock: &UnixStream) -> Option<ToInit> {
    match protocol::recv::<ToInit>(&mut BufReader::with_capacity(1, sock)) {
        Ok(Some(start @ ToInit::Start { .. })) => Some(start),
        _ => None,
    }
}

/// Hands the optimized code's entry (a read-only descriptor) to the workers.
pub fn hand_over(workers: &[UnixStream], entry: &std::fs::File) {
    for sock in workers {
        if let Err(e) = process::send_fd(sock, entry.as_fd()) {
            log::warn!("optimized code not handed to a serving process: {e}");
        }
    }
}

/// Stops the server: the init's own part through `shutdown`, the workers' through `signal`.
/// Once only, whoever asks first (a signal from containerd, a worker that died).
#[derive(Clone)]
pub struct Drain {
    started: Arc<AtomicBool>,
    /// A signal came from outside (containerd, the kubelet) already.
    signalled: Arc<AtomicBool>,
    shutdown: Shutdown,
    /// The workers, each with a pidfd where one could be opened: the watcher reaps a worker
    /// that ended and then begins the drain, which must not signal whatever process took its
    /// pid (another process of the container). By pid only where pidfds are refused (a kernel
    /// before 5.3, a seccomp profile without `pidfd_open` or `pidfd_send_signal`).
    workers: Arc<Vec<(i32, Option<PidFd>)>>,
}

impl Drain {
    /// `pids`: the workers, none reaped yet (a worker that ended is a zombie until `watch`
    /// reaps it, and a pidfd opens on a zombie).
    pub fn new(shutdown: Shutdown, pids: Vec<i32>) -> Drain {
        let workers = pids.into_iter().map(|pid| (pid, PidFd::open(pid).ok())).collect();
        Drain { started: Arc::new(AtomicBool::new(false)), signalled: Arc::new(AtomicBool::new(false)), shutdown, workers: Arc::new(workers) }
    }

    /// A signal from outside: the drain begins (if nothing began it yet). False on the second
    /// one, where the caller stops at once. The first counts as the first even when a worker's
    /// end began the drain already: containerd's SIGTERM then lets the drain finish, and the
    /// container keeps that worker's status.
    pub fn signal(&self, signal: i32) -> bool {
        if self.signalled.swap(true, Ordering::SeqCst) {
            return false;
        }
        self.begin(signal);
        true
    }

    /// False if the drain had already begun.
    pub fn begin(&self, signal: i32) -> bool {
        if self.started.swap(true, Ordering::SeqCst) {
            return false;
        }
        self.shutdown.trigger();
        for (pid, fd) in self.workers.iter() {
            let by_pidfd = fd.as_ref().map(|fd| fd.send_signal(signal));
            match by_pidfd {
                Some(Ok(())) => {}
                // Reaped already: its pid is not its own any more.
                Some(Err(e)) if e.raw_os_error() == Some(libc::ESRCH) => {}
                // No pidfd, or one a seccomp profile will not let us signal through.
                _ => {
                    let _ = process::kill(*pid, signal);
                }
            }
        }
        true
    }
}

/// Reaps the workers. A worker that ends before the drain has begun stops the server (its
/// status is the container's). Returns, once every worker is reaped, the first status that was
/// not 0 (a signal as 128 + its number).
pub fn watch(drain: Drain) -> std::thread::JoinHandle<Option<i32>> {
    std::thread::spawn(move || {
        use nix::sys::wait::{waitpid, WaitStatus};
        let mut failed = None;
        let mut left = drain.workers.len();
        while left > 0 {
            // Every child is reaped (as pid 1 of the container, the init inherits orphans, such
            // as those of a `kubectl debug` process), only workers counted.
            let (pid, code) = match waitpid(None, None) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, code),
                Ok(WaitStatus::Signaled(pid, sig, _)) => (pid, 128 + sig as i32),
                Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => break,
            };
            if !drain.workers.iter().any(|(p, _)| *p == pid.as_raw()) {
                continue;
            }
            left -= 1;
            if code != 0 {
                failed.get_or_insert(code);
            }
            if drain.begin(libc::SIGTERM) {
                log::error!("a serving process (pid {pid} in the container) ended with status {code}: stopping the server");
            }
        }
        failed
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The drain signals a worker through a pidfd opened while it could not have been reaped
    /// yet: once the watcher has reaped it, its pid may be another process's.
    #[test]
    fn a_drain_signals_its_workers_by_pidfd() {
        use std::os::unix::process::ExitStatusExt;
        let mut live = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let mut gone = std::process::Command::new("true").spawn().unwrap();
        // Not reaped yet when the drain is made, as the init's workers are.
        std::thread::sleep(std::time::Duration::from_millis(200));
        let d = Drain::new(Shutdown::new(), vec![live.id() as i32, gone.id() as i32]);
        assert!(d.workers.iter().all(|(_, fd)| fd.is_some()), "a pidfd for each, the zombie too");
        assert!(gone.wait().unwrap().success());
        assert!(d.begin(libc::SIGTERM));
        assert_eq!(live.wait().unwrap().signal(), Some(libc::SIGTERM));
        // Both reaped now: their pidfds say so rather than reaching a pid's next owner.
        for (_, fd) in d.workers.iter() {
            let e = fd.as_ref().unwrap().send_signal(0).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::ESRCH));
        }
    }

    #[test]
    fn a_drain_begun_inside_still_waits_for_the_second_signal_from_outside() {
        let shutdown = Shutdown::new();
        // A worker ended: the server drains (no pids to signal here).
        let d = Drain::new(shutdown.clone(), Vec::new());
        assert!(d.begin(libc::SIGTERM));
        assert!(!d.begin(libc::SIGTERM), "once only");
        // containerd's SIGTERM: not the second signal, the first.
        assert!(d.signal(libc::SIGTERM));
        assert!(!d.signal(libc::SIGTERM), "a second one stops at once");
        // Begun by a signal: the next signal is the second.
        let d = Drain::new(shutdown, Vec::new());
        assert!(d.signal(libc::SIGTERM));
        assert!(!d.begin(libc::SIGTERM));
        assert!(!d.signal(libc::SIGKILL));
    }

    #[test]
    fn shares_add_up_and_differ_by_one_at_most() {
        for total in [1u32, 2, 3, 7, 100, 101, 4096] {
            for n in 1..=8usize {
                let parts: Vec<u32> = (0..n).map(|i| share(total, n, i)).collect();
                assert_eq!(parts.iter().sum::<u32>(), total, "{total} in {n}");
                assert!(parts.iter().max().unwrap() - parts.iter().min().unwrap() <= 1, "{parts:?}");
                assert_eq!(parts[0], *parts.iter().max().unwrap(), "the init's part is the largest");
            }
        }
    }

    #[test]
    fn cpus_from_the_spec() {
        use oci_spec::runtime::{LinuxBuilder, LinuxCpuBuilder, LinuxResourcesBuilder, SpecBuilder};
        let spec = |quota: Option<i64>, cpus: Option<&str>| {
            let mut cpu = LinuxCpuBuilder::default().period(100_000u64);
            if let Some(q) = quota {
                cpu = cpu.quota(q);
            }
            if let Some(c) = cpus {
                cpu = cpu.cpus(c.to_string());
            }
            let resources = LinuxResourcesBuilder::default().cpu(cpu.build().unwrap()).build().unwrap();
            SpecBuilder::default().linux(LinuxBuilder::default().resources(resources).build().unwrap()).build().unwrap()
        };
        assert_eq!(cpus_of(&spec(None, None), 16), 16, "no limit: the node's");
        assert_eq!(cpus_of(&spec(Some(-1), None), 16), 16, "-1 is no quota");
        assert_eq!(cpus_of(&spec(Some(100_000), None), 16), 1);
        assert_eq!(cpus_of(&spec(Some(150_000), None), 16), 2, "1.5 CPUs: two processes");
        assert_eq!(cpus_of(&spec(Some(50_000), None), 16), 1);
        assert_eq!(cpus_of(&spec(None, Some("0-3,8,10-11")), 16), 7);
        assert_eq!(cpus_of(&spec(Some(400_000), Some("2")), 16), 1);
        assert_eq!(cpus_of(&spec(None, Some("junk")), 4), 4, "an unreadable cpuset limits nothing");
        assert_eq!(cpus_of(&spec(None, Some("3-1")), 4), 4);
        assert_eq!(cpus_of(&spec(None, Some("0-18446744073709551615")), 4), 4, "an overflowing cpuset limits nothing");
        assert_eq!(cpus_of(&oci_spec::runtime::Spec::default(), 0), 1);
        // Shares (a Kubernetes CPU request; `ctr` writes 1024 whatever was asked) bound nothing.
        let with_shares = {
            let cpu = LinuxCpuBuilder::default().shares(2u64).build().unwrap();
            let resources = LinuxResourcesBuilder::default().cpu(cpu).build().unwrap();
            SpecBuilder::default().linux(LinuxBuilder::default().resources(resources).build().unwrap()).build().unwrap()
        };
        assert_eq!(cpus_of(&with_shares, 8), 8);
    }

    #[test]
    fn one_process_where_one_must_serve() {
        let http = |f: &dyn Fn(&mut HttpConfig)| {
            let mut h = wasm_shim_oci::http_config(&oci_spec::runtime::Spec::default(), &[]).unwrap();
            f(&mut h);
            h
        };
        assert_eq!(count(&http(&|_| {}), None, 2), 2);
        assert_eq!(count(&http(&|_| {}), None, 64), MAX_PROCESSES);
        assert_eq!(count(&http(&|_| {}), Some(1), 4), 1, "the node's setting");
        assert_eq!(count(&http(&|h| h.processes = Some(3)), Some(2), 4), 2, "the node's setting bounds the pod's annotation");
        assert_eq!(count(&http(&|h| h.processes = Some(1)), None, 4), 1);
        assert_eq!(count(&http(&|h| h.processes = Some(16)), None, 4), 4, "no more than CPUs");
        assert_eq!(count(&http(&|_| {}), None, 1), 1, "one CPU");
        assert_eq!(count(&http(&|h| h.max_concurrency = 3), None, 8), 3, "never more than requests at once");
        assert_eq!(count(&http(&|h| h.max_connections = Some(2)), None, 8), 2, "nor connections");
        assert_eq!(count(&http(&|h| h.metrics_port = Some(9090)), None, 8), 8, "metrics are counted in shared memory");
        assert_eq!(count(&http(&|h| h.access_log = true), None, 8), 1, "access lines are kept whole by one process");
    }
}
