//! The task lifecycle as a small explicit state machine.
//!
//! ```text
//! Created --start--> Running --pause--> Paused
//!    |                  ^  <--resume--    |
//!    +------exit------> Stopped <--exit---+
//! ```
//! Delete is allowed from Created (the init is killed first) and Stopped.

use std::fmt;

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

#[cfg(test)]
mod tests {
    use super::Event::*;
    use super::Status::*;

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
    fn any_live_task_can_exit() {
        for s in [Created, Running, Paused] {
            assert_eq!(s.next(Exit).unwrap(), Stopped);
        }
    }
}
