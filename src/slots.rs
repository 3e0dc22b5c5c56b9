//! The node-wide cap on concurrent compiles: `N` lock files, `<cache>/.slots/0` to `N-1`, shared
//! by every shim process of the node (they share the cache directory). A compile helper holds
//! one (`flock`) while it compiles; the lock goes with the process, however it ends (a crash,
//! the OOM killer, its timeout's SIGKILL), so a slot is never leaked.
//!
//! Taking a slot tries each of the wanted ones without blocking, and while all are taken tries
//! again at short intervals until a deadline. A blocking `flock` on one slot would wait for that
//! holder even when another slot frees first, and cannot be given a deadline without a signal.
//!
//! The lock files are kept, never rewritten; `rm -f <cache>/*` does not match them. One removed
//! while held (someone removed `.slots`) is noticed by the next taker, which locks a fresh file
//! at the path, as the cache does for its entry locks.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::ops::Range;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The directory of the slots, in the cache directory.
pub const SLOTS_DIR: &str = ".slots";

/// How long a taker waits between two rounds when every slot is taken, at most.
const MAX_POLL: Duration = Duration::from_millis(100);

/// The slots of a cache directory.
#[derive(Debug, Clone)]
pub struct Slots {
    dir: PathBuf,
    count: usize,
}

/// A slot, held until dropped (or until the process ends).
#[derive(Debug)]
pub struct Slot {
    index: usize,
    _file: File,
}

impl Slot {
    pub fn index(&self) -> usize {
        self.index
    }
}

impl Slots {
    /// `count` slots (at least 1) in `<cache_dir>/.slots`, created when missing (private).
    pub fn open(cache_dir: &Path, count: usize) -> io::Result<Slots> {
        let dir = cache_dir.join(SLOTS_DIR);
        DirBuilder::new().recursive(true).mode(0o700).create(&dir)?;
        Ok(Slots { dir, count: count.max(1) })
    }

    pub fn count(&self) -> usize {
        self.count
    }

    /// The slots a kind of compile may take. A background compile leaves slot 0 to the compiles
    /// a Create waits for (when there is more than one slot), so that a container start is
    /// never queued behind background compiles alone.
    pub fn range(&self, background: bool) -> Range<usize> {
        if background && self.count > 1 {
            1..self.count
        } else {
            0..self.count
        }
    }

    /// A free slot of `range`, without waiting; `None` when all are taken.
    pub fn try_take(&self, range: Range<usize>) -> io::Result<Option<Slot>> {
        for index in range.start..range.end.min(self.count) {
            if let Some(slot) = self.try_one(index)? {
                return Ok(Some(slot));
            }
        }
        Ok(None)
    }

    /// A slot of `range`, waiting for one until `deadline`; `None` when none freed in time.
    pub fn take(&self, range: Range<usize>, deadline: Instant) -> io::Result<Option<Slot>> {
        let mut pause = Duration::from_millis(5);
        loop {
            if let Some(slot) = self.try_take(range.clone())? {
                return Ok(Some(slot));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            std::thread::sleep(pause.min(deadline - now));
            pause = (pause * 2).min(MAX_POLL);
        }
    }

    fn try_one(&self, index: usize) -> io::Result<Option<Slot>> {
        let path = self.dir.join(index.to_string());
        loop {
            let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).mode(0o600).open(&path)?;
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
                Err(std::fs::TryLockError::Error(e)) => return Err(e),
            }
            // Removed between our open and our lock: the lock is on a file nobody else will
            // look at; lock the one at the path.
            let held = file.metadata()?;
            match std::fs::symlink_metadata(&path) {
                Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => return Ok(Some(Slot { index, _file: file })),
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Barrier};

    #[test]
    fn no_more_holders_than_slots() {
        let dir = tempfile::tempdir().unwrap();
        let slots = Slots::open(dir.path(), 3).unwrap();
        let a = slots.try_take(slots.range(false)).unwrap().unwrap();
        let b = slots.try_take(slots.range(false)).unwrap().unwrap();
        let c = slots.try_take(slots.range(false)).unwrap().unwrap();
        let mut taken = vec![a.index(), b.index(), c.index()];
        taken.sort();
        assert_eq!(taken, [0, 1, 2]);
        assert!(slots.try_take(slots.range(false)).unwrap().is_none());
        // Another process's view (another shim): the same files, the same locks.
        let other = Slots::open(dir.path(), 3).unwrap();
        assert!(other.try_take(other.range(false)).unwrap().is_none());
        drop(b);
        assert_eq!(other.try_take(other.range(false)).unwrap().unwrap().index(), taken[1]);
    }

    #[test]
    fn background_compiles_leave_slot_0_to_waited_ones() {
        let dir = tempfile::tempdir().unwrap();
        let slots = Slots::open(dir.path(), 2).unwrap();
        assert_eq!(slots.range(true), 1..2);
        let bg = slots.try_take(slots.range(true)).unwrap().unwrap();
        assert_eq!(bg.index(), 1);
        assert!(slots.try_take(slots.range(true)).unwrap().is_none());
        assert_eq!(slots.try_take(slots.range(false)).unwrap().unwrap().index(), 0);
        // One slot: everybody shares it.
        let one = Slots::open(tempfile::tempdir().unwrap().path(), 1).unwrap();
        assert_eq!(one.range(true), 0..1);
        // Zero is taken as one.
        assert_eq!(Slots::open(dir.path(), 0).unwrap().count(), 1);
    }

    #[test]
    fn contending_threads_never_exceed_the_cap() {
        const CAP: usize = 2;
        const THREADS: usize = 8;
        let dir = tempfile::tempdir().unwrap();
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let start = Arc::new(Barrier::new(THREADS));
        let workers: Vec<_> = (0..THREADS)
            .map(|_| {
                // Each thread opens the slots on its own, as separate shims would: flock locks
                // belong to open files, so two opens exclude each other even in one process.
                let (path, running, most, start) = (dir.path().to_path_buf(), running.clone(), most.clone(), start.clone());
                std::thread::spawn(move || {
                    let slots = Slots::open(&path, CAP).unwrap();
                    start.wait();
                    for _ in 0..5 {
                        let slot = slots.take(slots.range(false), Instant::now() + Duration::from_secs(30)).unwrap().expect("a slot within 30 s");
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(10));
                        running.fetch_sub(1, Ordering::SeqCst);
                        drop(slot);
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        assert_eq!(most.load(Ordering::SeqCst), CAP, "as many compiles at once as slots, never more");
    }

    #[test]
    fn waiting_ends_at_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let slots = Slots::open(dir.path(), 1).unwrap();
        let _held = slots.try_take(0..1).unwrap().unwrap();
        let other = Slots::open(dir.path(), 1).unwrap();
        let started = Instant::now();
        assert!(other.take(0..1, started + Duration::from_millis(300)).unwrap().is_none());
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(300) && waited < Duration::from_secs(2), "{waited:?}");
    }

    #[test]
    fn a_waiter_gets_the_slot_when_its_holder_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let slots = Slots::open(dir.path(), 1).unwrap();
        let held = slots.try_take(0..1).unwrap().unwrap();
        let path = dir.path().to_path_buf();
        let waiter = std::thread::spawn(move || {
            let slots = Slots::open(&path, 1).unwrap();
            let started = Instant::now();
            let slot = slots.take(0..1, started + Duration::from_secs(30)).unwrap();
            (slot.is_some(), started.elapsed())
        });
        std::thread::sleep(Duration::from_millis(300));
        drop(held);
        let (got, after) = waiter.join().unwrap();
        assert!(got);
        assert!(after >= Duration::from_millis(300) && after < Duration::from_secs(5), "{after:?}");
    }

    #[test]
    fn a_removed_slot_file_is_not_shared() {
        let dir = tempfile::tempdir().unwrap();
        let slots = Slots::open(dir.path(), 1).unwrap();
        let held = slots.try_take(0..1).unwrap().unwrap();
        std::fs::remove_dir_all(dir.path().join(SLOTS_DIR)).unwrap();
        // Whoever comes next makes a new file and holds it: the old holder is not counted any
        // more (the cap is briefly exceeded by one), but the new file excludes the one after.
        let again = Slots::open(dir.path(), 1).unwrap();
        let first = again.try_take(0..1).unwrap();
        assert!(first.is_some());
        assert!(again.try_take(0..1).unwrap().is_none());
        drop(held);
    }

    /// Not a test by itself: the child process of `a_dead_holder_frees_its_slot` (run with
    /// `hold-slot <dir>` among the test binary's arguments), which takes the slot, says so and
    /// sleeps until killed.
    #[test]
    fn slot_holder_process() {
        let args: Vec<String> = std::env::args().collect();
        let Some(at) = args.iter().position(|a| a == "hold-slot") else { return };
        let slots = Slots::open(Path::new(&args[at + 1]), 1).unwrap();
        let _slot = slots.try_take(0..1).unwrap().expect("the slot is free");
        println!("held");
        std::thread::sleep(Duration::from_secs(60));
        std::process::exit(3);
    }

    #[test]
    fn a_dead_holder_frees_its_slot() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "slots::tests::slot_holder_process", "--nocapture", "-q", "hold-slot"])
            .arg(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        while !line.contains("held") {
            line.clear();
            assert!(out.read_line(&mut line).unwrap() > 0, "the holder ended before taking the slot");
        }
        let slots = Slots::open(dir.path(), 1).unwrap();
        assert!(slots.try_take(0..1).unwrap().is_none(), "the child holds the slot");
        // SIGKILL: no destructor runs; the kernel drops the lock with the process's files.
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(slots.take(0..1, Instant::now() + Duration::from_secs(5)).unwrap().map(|s| s.index()), Some(0));
    }
}
