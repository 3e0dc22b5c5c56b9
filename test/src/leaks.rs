//! What a removed container must not leave behind.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::containerd::mounts_under;
use crate::{Containerd, NAMESPACE, SHIM_NAME};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Leaks {
    /// `pid args` of every live wasm shim process of this containerd, and their descendants.
    pub shim_processes: Vec<String>,
    /// Mount points under the private containerd's temp dir.
    pub mounts: Vec<PathBuf>,
    /// Cgroup directories below `<hierarchy>/wasmtest`.
    pub cgroups: Vec<PathBuf>,
    /// Bundle dirs under `<state>/io.containerd.runtime.v2.task/wasmtest`.
    pub state_dirs: Vec<PathBuf>,
    /// Containers still known to containerd.
    pub containers: Vec<String>,
    /// Active (container) snapshots.
    pub snapshots: Vec<String>,
}

/// Where the shim keeps runc's state for native containers (per namespace).
pub const RUNC_STATE: &str = "/run/containerd-shim-wasm-v1/runc";

impl Leaks {
    /// Counts everything now.
    pub fn measure(cd: &Containerd) -> Leaks {
        Leaks {
            shim_processes: shim_processes(&cd.socket),
            mounts: mounts_under(&cd.dir),
            cgroups: cgroup_dirs(Path::new("/sys/fs/cgroup")),
            state_dirs: list_dir(&cd.task_state_dir())
                .into_iter()
                .chain(list_dir(&Path::new(RUNC_STATE).join(crate::NAMESPACE)))
                .collect(),
            containers: cd
                .containers()
                .unwrap_or_else(|e| vec![format!("(ctr failed: {e})")]),
            snapshots: active_snapshots(cd),
        }
    }

    /// Measures until nothing is left or `timeout` passes (a shim may take a moment to exit
    /// after `ctr run --rm` returns); returns the last measurement.
    pub fn wait_clean(cd: &Containerd, timeout: Duration) -> Leaks {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let l = Leaks::measure(cd);
            if l.is_clean() || std::time::Instant::now() >= deadline {
                return l;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Like [`Leaks::wait_clean`], but only what is not already in `baseline` counts: a trial
    /// is charged with what it left, not with what an earlier one did.
    pub fn wait_clean_since(cd: &Containerd, baseline: &Leaks, timeout: Duration) -> Leaks {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let l = Leaks::measure(cd).without(baseline);
            if l.is_clean() || std::time::Instant::now() >= deadline {
                return l;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// What is in `self` and not in `baseline`.
    pub fn without(mut self, baseline: &Leaks) -> Leaks {
        self.shim_processes
            .retain(|x| !baseline.shim_processes.contains(x));
        self.mounts.retain(|x| !baseline.mounts.contains(x));
        self.cgroups.retain(|x| !baseline.cgroups.contains(x));
        self.state_dirs.retain(|x| !baseline.state_dirs.contains(x));
        self.containers.retain(|x| !baseline.containers.contains(x));
        self.snapshots.retain(|x| !baseline.snapshots.contains(x));
        self
    }

    /// Pids of the leftover shim processes.
    pub fn shim_pids(&self) -> Vec<u32> {
        self.shim_processes
            .iter()
            .filter_map(|p| p.split_whitespace().next()?.parse().ok())
            .collect()
    }

    pub fn is_clean(&self) -> bool {
        self.shim_processes.is_empty()
            && self.mounts.is_empty()
            && self.cgroups.is_empty()
            && self.state_dirs.is_empty()
            && self.containers.is_empty()
            && self.snapshots.is_empty()
    }

    /// One line of counts.
    pub fn counts(&self) -> String {
        format!(
            "shim processes {}, mounts {}, cgroups {}, state dirs {}, containers {}, active snapshots {}",
            self.shim_processes.len(),
            self.mounts.len(),
            self.cgroups.len(),
            self.state_dirs.len(),
            self.containers.len(),
            self.snapshots.len()
        )
    }
}

impl fmt::Display for Leaks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.counts())?;
        if !self.is_clean() {
            write!(
                f,
                "\n  shims: {:?}\n  mounts: {:?}\n  cgroups: {:?}\n  state: {:?}\n  containers: {:?}\n  snapshots: {:?}",
                self.shim_processes, self.mounts, self.cgroups, self.state_dirs, self.containers, self.snapshots
            )?;
        }
        Ok(())
    }
}

fn list_dir(dir: &Path) -> Vec<PathBuf> {
    match fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(|e| e.ok()).map(|e| e.path()).collect(),
        Err(_) => Vec::new(),
    }
}

fn is_shim_path(p: &str) -> bool {
    let p = p.trim_end_matches(" (deleted)");
    Path::new(p).file_name().is_some_and(|n| n == SHIM_NAME)
}

/// Live processes running the shim binary that belong to the containerd listening on `address`:
/// those started with `-address <address>` (the shim daemon, and `start`/`delete` invocations),
/// and their descendants (the container init it re-executes). Shims of other containerds on the
/// machine are not counted.
pub fn shim_processes(address: &Path) -> Vec<String> {
    struct Proc {
        pid: u32,
        ppid: u32,
        is_shim: bool,
        args: Vec<String>,
    }
    let mut procs = Vec::new();
    for entry in list_dir(Path::new("/proc")) {
        let Some(pid) = entry
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let cmdline = fs::read(entry.join("cmdline")).unwrap_or_default();
        // Zombies have an empty cmdline; their parent reaps them, they hold nothing.
        if cmdline.is_empty() {
            continue;
        }
        let args: Vec<String> = cmdline
            .split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let exe = fs::read_link(entry.join("exe"))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        // "pid (comm) S ppid ...": comm may hold spaces, so parse after the last ')'.
        let stat = fs::read_to_string(entry.join("stat")).unwrap_or_default();
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let is_shim = args.first().is_some_and(|a| is_shim_path(a)) || is_shim_path(&exe);
        procs.push(Proc {
            pid,
            ppid,
            is_shim,
            args,
        });
    }
    let address = address.to_string_lossy();
    let mut mine: Vec<u32> = procs
        .iter()
        .filter(|p| {
            p.is_shim
                && (p
                    .args
                    .windows(2)
                    .any(|w| w[0].trim_start_matches('-') == "address" && w[1] == address)
                    || p.args
                        .iter()
                        .any(|a| a.trim_start_matches('-') == format!("address={address}")))
        })
        .map(|p| p.pid)
        .collect();
    // Descendants, whatever their program (the init may exec something else).
    loop {
        let more: Vec<u32> = procs
            .iter()
            .filter(|p| mine.contains(&p.ppid) && !mine.contains(&p.pid))
            .map(|p| p.pid)
            .collect();
        if more.is_empty() {
            break;
        }
        mine.extend(more);
    }
    procs
        .iter()
        .filter(|p| mine.contains(&p.pid) && p.pid != std::process::id())
        .map(|p| format!("{} {}", p.pid, p.args.join(" ")))
        .collect()
}

/// Every directory below `<hierarchy>/wasmtest` for each mounted hierarchy (cgroup v1 controllers
/// and the v2 unified tree), plus `<root>/wasmtest/...` on a pure v2 host. The `wasmtest`
/// parent itself is not counted: runtimes leave it, as runc does.
pub fn cgroup_dirs(root: &Path) -> Vec<PathBuf> {
    let mut tops = vec![root.join(NAMESPACE)];
    for h in list_dir(root) {
        tops.push(h.join(NAMESPACE));
    }
    let mut found = Vec::new();
    for top in tops {
        let mut stack = vec![top];
        while let Some(dir) = stack.pop() {
            for child in list_dir(&dir) {
                if child.is_dir() && !child.is_symlink() {
                    found.push(child.clone());
                    stack.push(child);
                }
            }
        }
    }
    found.sort();
    found
}

fn active_snapshots(cd: &Containerd) -> Vec<String> {
    match cd.ctr_output(["snapshots", "ls"]) {
        Ok(out) if out.success() => out
            .stdout
            .lines()
            .skip(1)
            .filter(|l| l.split_whitespace().last() == Some("Active"))
            .filter_map(|l| l.split_whitespace().next().map(String::from))
            .collect(),
        Ok(out) => vec![format!("(ctr snapshots ls failed: {})", out.stderr.trim())],
        Err(e) => vec![format!("(ctr snapshots ls failed: {e})")],
    }
}

/// SIGKILLs shim processes by pid (ones this run's containerd started and lost track of), so one
/// trial's leftovers do not disturb the next, and none outlive the suite.
pub fn kill_pids(pids: &[u32]) {
    for &pid in pids {
        // SAFETY: kill(2) has no memory-safety preconditions; the pids come from shim_processes,
        // i.e. shims started by this run's containerd (or their children).
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGKILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_keeps_only_new_items() {
        let base = Leaks {
            shim_processes: vec!["1 shim".into()],
            ..Leaks::default()
        };
        let now = Leaks {
            shim_processes: vec!["1 shim".into(), "2 shim".into()],
            ..Leaks::default()
        };
        let new = now.without(&base);
        assert_eq!(new.shim_pids(), vec![2]);
        assert!(!new.is_clean());
    }

    #[test]
    fn cgroup_dirs_counts_children_of_the_namespace_only() {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir_all(t.path().join("memory/wasmtest/c1/sub")).unwrap();
        fs::create_dir_all(t.path().join("pids/wasmtest")).unwrap();
        fs::create_dir_all(t.path().join("pids/other/c9")).unwrap();
        fs::write(
            t.path().join("memory/wasmtest/c1/memory.limit_in_bytes"),
            "1",
        )
        .unwrap();
        let found = cgroup_dirs(t.path());
        assert_eq!(
            found,
            vec![
                t.path().join("memory/wasmtest/c1"),
                t.path().join("memory/wasmtest/c1/sub")
            ]
        );
    }

    #[test]
    fn shim_path_matching() {
        assert!(is_shim_path(
            "/work/main/target/release/containerd-shim-wasm-v1"
        ));
        assert!(is_shim_path("/x/containerd-shim-wasm-v1 (deleted)"));
        assert!(!is_shim_path("/usr/bin/containerd-shim-runc-v2"));
        assert!(!is_shim_path("cargo"));
    }
}
