//! Creates in progress, known to the service so that a Delete can end them.
//!
//! A Create may wait a long time (a compile in the container's cgroup under a small CPU limit,
//! a large artifact). When containerd gives up on it (the kubelet's or `ctr`'s context ends),
//! it calls Delete for the same id and then Shutdown; neither may find nothing and let the
//! Create finish later into a container nobody knows (its init, cgroup and mounts would
//! outlive the shim). Delete cancels the Create instead: it marks it, kills whatever runs in
//! its cgroup (stage 1, the init, a compile helper Create waits for) until the Create has
//! undone its steps, and Shutdown waits while one is still running.

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use wasm_shim_container::cgroup::Cgroup;
use wasm_shim_container::process;

use crate::errors::{ErrorKind, Result, ShimError};

/// One Create in progress.
#[derive(Default)]
pub struct Creating {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    cancelled: bool,
    /// The container's cgroup once Create has made it: what Delete kills.
    cgroup: Option<Cgroup>,
    finished: bool,
}

/// How often a cancelling Delete kills what appeared in the cgroup since (a process Create
/// started just before it saw the mark).
const KILL_EVERY: Duration = Duration::from_millis(50);

impl Creating {
    /// An error if Delete has cancelled this Create: its caller stops and undoes its steps.
    pub fn check(&self) -> Result<()> {
        if self.state.lock().unwrap().cancelled {
            return Err(cancelled());
        }
        Ok(())
    }

    /// Whether Delete has cancelled this Create (for loops that cannot return a `Result`).
    pub fn is_cancelled(&self) -> bool {
        self.state.lock().unwrap().cancelled
    }

    /// Records the container's cgroup, from which a cancelling Delete kills.
    pub fn attach(&self, cgroup: &Cgroup) -> Result<()> {
        let mut st = self.state.lock().unwrap();
        st.cgroup = Some(cgroup.clone());
        if st.cancelled {
            return Err(cancelled());
        }
        Ok(())
    }

    /// Create is over (done, failed or undone).
    pub fn finish(&self) {
        self.state.lock().unwrap().finished = true;
        self.changed.notify_all();
    }

    #[cfg(test)]
    fn is_finished(&self) -> bool {
        self.state.lock().unwrap().finished
    }

    /// Cancels the Create and waits, at most `limit`, until it has undone its steps, killing
    /// what runs in its cgroup meanwhile. Returns whether it finished in time.
    pub fn cancel(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let mut st = self.state.lock().unwrap();
        st.cancelled = true;
        loop {
            if st.finished {
                return true;
            }
            if let Some(cg) = &st.cgroup {
                for pid in cg.procs().unwrap_or_default() {
                    let _ = process::kill(pid, libc::SIGKILL);
                }
                // A frozen cgroup's processes die only once thawed.
                let _ = cg.thaw();
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            st = self.changed.wait_timeout(st, KILL_EVERY.min(deadline - now)).unwrap().0;
        }
    }
}

fn cancelled() -> ShimError {
    ShimError::new(ErrorKind::FailedPrecondition, "create cancelled: containerd deleted the task while it was being created")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn cancel_is_seen_and_waits_for_the_undo() {
        let c = Arc::new(Creating::default());
        assert!(c.check().is_ok());
        let creator = {
            let c = c.clone();
            std::thread::spawn(move || {
                while !c.is_cancelled() {
                    std::thread::sleep(Duration::from_millis(5));
                }
                assert!(c.check().is_err());
                std::thread::sleep(Duration::from_millis(100)); // the undo
                c.finish();
            })
        };
        let t = Instant::now();
        assert!(c.cancel(Duration::from_secs(5)));
        assert!(t.elapsed() >= Duration::from_millis(100), "returned before the undo");
        creator.join().unwrap();
    }

    #[test]
    fn cancel_gives_up_at_its_limit() {
        let c = Creating::default();
        let t = Instant::now();
        assert!(!c.cancel(Duration::from_millis(120)));
        assert!(t.elapsed() >= Duration::from_millis(120));
        assert!(c.is_cancelled() && !c.is_finished());
    }
}
