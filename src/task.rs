//! The task lifecycle as a small explicit state machine.
//!
//! ```text
//! Created --start--> Running --pause--> Paused
//!    |                  ^  <--resume--    |
//!    +------exit------> Stopped <--exit---+
//! ```
//! Delete is allowed from Created (the init is killed first) and Stopped.

use std::fmt;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Created,
    Running,
    Paused,
    Stopped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Start,
    Pause,
    Resume,
    Exit,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidTransition {
    pub from: Status,
    pub event: Event,
}

impl fmt::Display for InvalidTransition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot {:?} a task that is {:?}", self.event, self.from)
    }
}

impl Status {
    pub fn next(self, event: Event) -> Result<Status, InvalidTransition> {
        use Event::*;
        use Status::*;
        match (self, event) {
            (Created, Start) => Ok(Running),
            (Running, Pause) => Ok(Paused),
            (Paused, Resume) => Ok(Running),
            (Created | Running | Paused, Exit) => Ok(Stopped),
            (from, event) => Err(InvalidTransition { from, event }),
        }
    }

    pub fn can_delete(self) -> bool {
        matches!(self, Status::Created | Status::Stopped)
    }
}

/// A task's or exec process's life as containerd sees it: its status, moved only through
/// [`Status::next`], its exit once recorded, and the waiters for it. `T` is what else its owner
/// keeps under the same lock (an init's start channel, an exec's pid and stdio).
pub struct Lifecycle<T> {
    life: Mutex<Life<T>>,
    exited: Condvar,
}

pub struct Life<T> {
    status: Status,
    exit: Option<Exit>,
    pub extra: T,
}

impl<T> Life<T> {
    pub fn status(&self) -> Status {
        self.status
    }

    /// Moves through `event`, or says why it cannot.
    pub fn advance(&mut self, event: Event) -> Result<(), InvalidTransition> {
        self.status = self.status.next(event)?;
        Ok(())
    }
}

impl<T> Lifecycle<T> {
    pub fn new(extra: T) -> Lifecycle<T> {
        Lifecycle { life: Mutex::new(Life { status: Status::Created, exit: None, extra }), exited: Condvar::new() }
    }

    pub fn lock(&self) -> MutexGuard<'_, Life<T>> {
        self.life.lock().unwrap()
    }

    pub fn status(&self) -> (Status, Option<Exit>) {
        let life = self.lock();
        (life.status, life.exit.clone())
    }

    /// The one place an exit is recorded, for inits and exec processes alike: the status moves
    /// to Stopped, the record is kept, `publish` runs under the lock (so after a start event,
    /// which is sent under it too), and waiters wake. A second exit keeps the first record.
    pub fn record_exit(&self, status: u32, publish: impl FnOnce(&Exit, &mut T)) -> Exit {
        let mut life = self.lock();
        if let Some(first) = &life.exit {
            return first.clone();
        }
        let exit = Exit { status, at: now() };
        life.status = life.status.next(Event::Exit).unwrap_or(Status::Stopped);
        publish(&exit, &mut life.extra);
        life.exit = Some(exit.clone());
        drop(life);
        self.exited.notify_all();
        exit
    }

    pub fn wait(&self) -> Exit {
        let mut life = self.lock();
        loop {
            if let Some(e) = &life.exit {
                return e.clone();
            }
            life = self.exited.wait(life).unwrap();
        }
    }

    pub fn wait_timeout(&self, d: Duration) -> Option<Exit> {
        let life = self.lock();
        let (life, _) = self.exited.wait_timeout_while(life, d, |l| l.exit.is_none()).unwrap();
        life.exit.clone()
    }
}

/// Now, as containerd's timestamps say it.
pub fn now() -> Timestamp {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let mut ts = Timestamp::new();
    ts.seconds = d.as_secs() as i64;
    ts.nanos = d.subsec_nanos() as i32;
    ts
}

/// How a task or exec process ended, as containerd is told: its status and when.
#[derive(Debug, Clone, PartialEq)]
pub struct Exit {
    pub status: u32,
    pub at: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::Event::*;
    use super::Status::*;
    use super::Lifecycle;
    use std::time::Duration;

    #[test]
    fn the_normal_life_of_a_task() {
        let s = Created.next(Start).unwrap();
        assert_eq!(s, Running);
        let s = s.next(Pause).unwrap();
        assert_eq!(s, Paused);
        let s = s.next(Resume).unwrap().next(Exit).unwrap();
        assert_eq!(s, Stopped);
        assert!(s.can_delete());
    }

    #[test]
    fn invalid_transitions_are_refused() {
        assert!(Created.next(Pause).is_err());
        assert!(Running.next(Start).is_err());
        assert!(Stopped.next(Start).is_err());
        assert!(Stopped.next(Exit).is_err());
        assert!(Paused.next(Pause).is_err());
        assert_eq!(Running.next(Resume).unwrap_err().to_string(), "cannot Resume a task that is Running");
        assert!(!Running.can_delete());
        assert!(!Paused.can_delete());
        assert!(Created.can_delete());
    }

    #[test]
    fn an_exit_is_recorded_once_and_wakes_waiters() {
        let life = std::sync::Arc::new(Lifecycle::new(0u32));
        life.lock().advance(Start).unwrap();
        let waiter = {
            let life = life.clone();
            std::thread::spawn(move || life.wait().status)
        };
        assert!(life.wait_timeout(Duration::from_millis(10)).is_none());
        let first = life.record_exit(3, |e, published| *published = e.status);
        assert_eq!(waiter.join().unwrap(), 3);
        assert_eq!(life.lock().extra, 3);
        // A later exit (a second waiter racing) keeps the first record and publishes nothing.
        let again = life.record_exit(9, |_, published| *published = 9);
        assert_eq!((again.status, life.lock().extra), (3, 3));
        assert_eq!(life.status(), (Stopped, Some(first)));
        assert!(life.lock().advance(Start).is_err());
    }

    #[test]
    fn any_live_task_can_exit() {
        for s in [Created, Running, Paused] {
            assert_eq!(s.next(Exit).unwrap(), Stopped);
        }
    }
}
