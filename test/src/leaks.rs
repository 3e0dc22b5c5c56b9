//! What a removed container (or pod) must not leave behind, and the shim processes and sockets
//! of this run's containerd.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::containerd::mounts_under;
use crate::cri::K8S_NAMESPACE;
use crate::{Containerd, SHIM_NAME};

/// containerd's runc shim binary name.
pub const RUNC_SHIM_NAME: &str = "containerd-shim-runc-v2";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Leaks {
    /// `pid args` of every live wasm shim process of this containerd, and their descendants.
    pub shim_processes: Vec<String>,
    /// Mount points under the private containerd's temp dir.
    pub mounts: Vec<PathBuf>,
    /// Cgroup directories below `<hierarchy>/<namespace>` (this run's containers and pods).
    pub cgroups: Vec<PathBuf>,
    /// Bundle dirs under `<state>/io.containerd.runtime.v2.task/<namespace>` and `k8s.io`, and
    /// the shim's runc state of this run's native containers.
    pub state_dirs: Vec<PathBuf>,
    /// Containers still known to containerd.
    pub containers: Vec<String>,
    /// Active (container) snapshots.
    pub snapshots: Vec<String>,
    /// `pid args` of live runc shims (`containerd-shim-runc-v2`) of this containerd and their
    /// descendants: the CRI pods with handler `runc` and the runc baseline.
    pub runc_shim_processes: Vec<String>,
    /// Containers in the CRI's `k8s.io` namespace (pod sandboxes and their containers).
    pub k8s_containers: Vec<String>,
    /// Active snapshots in `k8s.io`.
    pub k8s_snapshots: Vec<String>,
    /// Pod network namespaces the CRI plugin mounted (files in its netns dir).
    pub netns: Vec<PathBuf>,
    /// libcni result cache entries of the harness's network (a pod whose network was never
    /// torn down leaves one).
    pub cni_cache: Vec<PathBuf>,
}

/// Where the shim keeps runc's state for native containers (per namespace).
pub const RUNC_STATE: &str = "/run/containerd-shim-wasm-v1/runc";
/// Where the cgroup hierarchies are mounted.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

impl Leaks {
    /// Counts everything of this run's containerd now (and nothing of other runs or of other
    /// containerds on the machine).
    pub fn measure(cd: &Containerd) -> Leaks {
        Leaks {
            shim_processes: shim_processes(&cd.socket),
            mounts: mounts_under(&cd.dir),
            cgroups: cgroup_dirs(Path::new(CGROUP_ROOT), &cd.namespace),
            state_dirs: list_dir(&cd.task_state_dir())
                .into_iter()
                .chain(list_dir(&Path::new(RUNC_STATE).join(&cd.namespace)))
                // The CRI's containers: containerd's bundles and the shim's runc state (a
                // directory every containerd's `k8s.io` shares: only this run's bundles count).
                .chain(list_dir(&cd.task_state_dir_in(K8S_NAMESPACE)))
                .chain(runc_states_of(
                    &Path::new(RUNC_STATE).join(K8S_NAMESPACE),
                    &cd.task_state_dir_in(K8S_NAMESPACE),
                ))
                .collect(),
            containers: cd
                .containers()
                .unwrap_or_else(|e| vec![format!("(ctr failed: {e})")]),
            snapshots: active_snapshots(cd, &cd.namespace),
            runc_shim_processes: shim_processes_named(&cd.socket, RUNC_SHIM_NAME),
            k8s_containers: match cd.ctr_in_output(K8S_NAMESPACE, ["containers", "ls", "-q"]) {
                Ok(out) if out.success() => {
                    out.stdout.split_whitespace().map(String::from).collect()
                }
                Ok(out) => vec![format!("(ctr failed: {})", out.stderr.trim())],
                Err(e) => vec![format!("(ctr failed: {e})")],
            },
            k8s_snapshots: active_snapshots(cd, K8S_NAMESPACE),
            netns: list_dir(&cd.cri.netns_dir),
            cni_cache: cd.cri.cni_cache_entries(),
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
        self.runc_shim_processes
            .retain(|x| !baseline.runc_shim_processes.contains(x));
        self.k8s_containers
            .retain(|x| !baseline.k8s_containers.contains(x));
        self.k8s_snapshots
            .retain(|x| !baseline.k8s_snapshots.contains(x));
        self.netns.retain(|x| !baseline.netns.contains(x));
        self.cni_cache.retain(|x| !baseline.cni_cache.contains(x));
        self
    }

    /// Pids of the leftover shim processes (wasm and runc).
    pub fn shim_pids(&self) -> Vec<u32> {
        self.shim_processes
            .iter()
            .chain(&self.runc_shim_processes)
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
            && self.runc_shim_processes.is_empty()
            && self.k8s_containers.is_empty()
            && self.k8s_snapshots.is_empty()
            && self.netns.is_empty()
            && self.cni_cache.is_empty()
    }

    /// One line of counts.
    pub fn counts(&self) -> String {
        format!(
            "shim processes {}, mounts {}, cgroups {}, state dirs {}, containers {}, active snapshots {}, \
             runc shim processes {}, k8s.io containers {}, k8s.io active snapshots {}, netns {}, CNI cache entries {}",
            self.shim_processes.len(),
            self.mounts.len(),
            self.cgroups.len(),
            self.state_dirs.len(),
            self.containers.len(),
            self.snapshots.len(),
            self.runc_shim_processes.len(),
            self.k8s_containers.len(),
            self.k8s_snapshots.len(),
            self.netns.len(),
            self.cni_cache.len()
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
            write!(
                f,
                "\n  runc shims: {:?}\n  k8s.io containers: {:?}\n  k8s.io snapshots: {:?}\n  netns: {:?}\n  CNI cache: {:?}",
                self.runc_shim_processes, self.k8s_containers, self.k8s_snapshots, self.netns, self.cni_cache
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

/// runc state directories under `root` that belong to containers bundled under `bundles`:
/// runc records the bundle in its `state.json` (`"bundle=<dir>"` among the config's labels);
/// a directory without a readable state (runc still creating it) counts when a bundle of that
/// id exists under `bundles`.
fn runc_states_of(root: &Path, bundles: &Path) -> Vec<PathBuf> {
    let needle = format!("bundle={}", bundles.display());
    list_dir(root)
        .into_iter()
        .filter(|d| match fs::read_to_string(d.join("state.json")) {
            Ok(state) => state.contains(&needle),
            Err(_) => d.file_name().is_some_and(|id| bundles.join(id).exists()),
        })
        .collect()
}
#[cfg(test)]
fn is_shim_path(p: &str) -> bool {
    is_binary_path(p, SHIM_NAME)
}

fn is_binary_path(p: &str, name: &str) -> bool {
    let p = p.trim_end_matches(" (deleted)");
    Path::new(p).file_name().is_some_and(|n| n == name)
}

/// Live processes running the shim binary that belong to the containerd listening on `address`:
/// those started with `-address <address>` (the shim daemon, and `start`/`delete` invocations),
/// and their descendants (the container init it re-executes). Shims of other containerds on the
/// machine are not counted.
pub fn shim_processes(address: &Path) -> Vec<String> {
    shim_processes_named(address, SHIM_NAME)
}

/// One process, as /proc shows it.
struct Proc {
    pid: u32,
    ppid: u32,
    is_shim: bool,
    args: Vec<String>,
}

/// Whether `args` carry `-address <address>` (or `--address=<address>`).
fn has_address(args: &[String], address: &str) -> bool {
    args.windows(2)
        .any(|w| w[0].trim_start_matches('-') == "address" && w[1] == address)
        || args
            .iter()
            .any(|a| a.trim_start_matches('-') == format!("address={address}"))
}

/// The value after `-flag` in `args`.
fn flag_value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.windows(2)
        .find(|w| w[0].trim_start_matches('-') == flag)
        .map(|w| w[1].as_str())
}

/// Every live, non-zombie process; `is_shim` when argv[0] or the executable is named `name`.
fn list_procs(name: &str) -> Vec<Proc> {
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
        let is_shim =
            args.first().is_some_and(|a| is_binary_path(a, name)) || is_binary_path(&exe, name);
        procs.push(Proc {
            pid,
            ppid,
            is_shim,
            args,
        });
    }
    procs
}

/// [`shim_processes`] for the shim binary called `name` (e.g. [`RUNC_SHIM_NAME`]).
pub fn shim_processes_named(address: &Path, name: &str) -> Vec<String> {
    let procs = list_procs(name);
    let address = address.to_string_lossy();
    let mut mine: Vec<u32> = procs
        .iter()
        .filter(|p| p.is_shim && has_address(&p.args, &address))
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

/// A running shim server (the long-lived process containerd talks to), as /proc shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShimDaemon {
    pub pid: u32,
    /// Its `-namespace`.
    pub namespace: String,
    /// Its `-id`: the container it was started for (the pod sandbox, for a pod's shim).
    pub id: String,
}

/// The shim servers of binary `name` for the containerd on `address`: processes of that binary
/// with `-address <address>` that are neither a `start`/`delete` invocation nor a child of
/// another such process (a container init re-executing the shim binary is one). Counted
/// through /proc, so what containerd believes does not matter.
pub fn shim_daemons(address: &Path, name: &str) -> Vec<ShimDaemon> {
    let procs = list_procs(name);
    let address = address.to_string_lossy();
    let shim_pids: Vec<u32> = procs.iter().filter(|p| p.is_shim).map(|p| p.pid).collect();
    let mut found: Vec<ShimDaemon> = procs
        .iter()
        .filter(|p| p.is_shim && has_address(&p.args, &address))
        .filter(|p| !matches!(p.args.last().map(String::as_str), Some("start" | "delete")))
        .filter(|p| !shim_pids.contains(&p.ppid))
        .map(|p| ShimDaemon {
            pid: p.pid,
            namespace: flag_value(&p.args, "namespace").unwrap_or("").to_string(),
            id: flag_value(&p.args, "id").unwrap_or("").to_string(),
        })
        .collect();
    found.sort_by_key(|d| d.pid);
    found
}

/// The socket a shim v2 serves on for container `id` in namespace `ns` of the containerd on
/// `address`: containerd 1.6 and the shim libraries name it
/// `/run/containerd/s/<sha256 of "<address>/<ns>/<id>">`, whatever containerd's state dir.
pub fn shim_socket(address: &Path, ns: &str, id: &str) -> PathBuf {
    use sha2::{Digest, Sha256};
    let key = address.join(ns).join(id);
    let digest = Sha256::digest(key.as_os_str().as_encoded_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    Path::new("/run/containerd/s").join(hex)
}

/// Every directory below `<hierarchy>/<ns>` for each mounted hierarchy (cgroup v1 controllers
/// and the v2 unified tree), plus `<root>/<ns>/...` on a pure v2 host. The `<ns>` parent itself
/// is not counted: runtimes leave it, as runc does (the harness removes it at the end).
pub fn cgroup_dirs(root: &Path, ns: &str) -> Vec<PathBuf> {
    let mut tops = vec![root.join(ns)];
    for h in list_dir(root) {
        if !h.is_symlink() {
            tops.push(h.join(ns));
        }
    }
    let mut found: Vec<PathBuf> = tops.iter().flat_map(|t| dirs_below(t)).collect();
    found.sort();
    found
}

/// Every directory below `top` (not `top` itself), symlinks not followed.
pub fn dirs_below(top: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![top.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for child in list_dir(&dir) {
            if child.is_dir() && !child.is_symlink() {
                found.push(child.clone());
                stack.push(child);
            }
        }
    }
    found
}

fn active_snapshots(cd: &Containerd, ns: &str) -> Vec<String> {
    match cd.ctr_in_output(ns, ["snapshots", "ls"]) {
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

/// Processes whose working directory is at or below `dir` (also when it was deleted since): the
/// shim's background compile helpers run in a container's bundle, detached from their shim by
/// design (they finish the node's compile cache), and can outlive a run's containerd.
pub fn processes_in(dir: &Path) -> Vec<u32> {
    let dir = dir.to_string_lossy().into_owned();
    list_dir(Path::new("/proc"))
        .into_iter()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name()?.to_str()?.parse().ok()?;
            let cwd = fs::read_link(entry.join("cwd")).ok()?;
            let cwd = cwd.to_string_lossy();
            let cwd = cwd.strip_suffix(" (deleted)").unwrap_or(&cwd);
            (cwd == dir || cwd.starts_with(&format!("{dir}/"))).then_some(pid)
        })
        .collect()
}

/// SIGKILLs processes by pid (shims this run's containerd started and lost track of, and what
/// still works in the run's directory), so one
/// trial's leftovers do not disturb the next, and none outlive the suite.
pub fn kill_pids(pids: &[u32]) {
    for &pid in pids {
        // SAFETY: kill(2) has no memory-safety preconditions; the pids come from shim_processes
        // (shims started by this run's containerd, or their children) or processes_in (working
        // in this run's own directory).
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
        fs::create_dir_all(t.path().join("memory/wasmtest-other/c2")).unwrap();
        let found = cgroup_dirs(t.path(), "wasmtest");
        assert_eq!(
            found,
            vec![
                t.path().join("memory/wasmtest/c1"),
                t.path().join("memory/wasmtest/c1/sub")
            ]
        );
    }

    #[test]
    fn runc_states_count_only_this_runs_bundles() {
        let t = tempfile::tempdir().unwrap();
        let (root, mine, other) = (
            t.path().join("runc"),
            t.path().join("a/k8s.io"),
            t.path().join("b/k8s.io"),
        );
        for (id, bundles) in [("c1", &mine), ("c2", &other)] {
            fs::create_dir_all(root.join(id)).unwrap();
            let state = format!(
                r#"{{"config":{{"labels":["bundle={}/{id}"]}}}}"#,
                bundles.display()
            );
            fs::write(root.join(id).join("state.json"), state).unwrap();
        }
        // Being created: no state yet, but this run has its bundle.
        fs::create_dir_all(root.join("c3")).unwrap();
        fs::create_dir_all(mine.join("c3")).unwrap();
        fs::create_dir_all(root.join("c4")).unwrap();
        let mut found = runc_states_of(&root, &mine);
        found.sort();
        assert_eq!(found, vec![root.join("c1"), root.join("c3")]);
    }

    #[test]
    fn flags_in_shim_command_lines() {
        let args: Vec<String> = [
            "/x/containerd-shim-runc-v2",
            "-namespace",
            "k8s.io",
            "-id",
            "abc",
            "-address",
            "/t/c.sock",
        ]
        .map(String::from)
        .to_vec();
        assert!(has_address(&args, "/t/c.sock"));
        assert!(!has_address(&args, "/t/other.sock"));
        assert_eq!(flag_value(&args, "namespace"), Some("k8s.io"));
        assert_eq!(flag_value(&args, "id"), Some("abc"));
        assert!(has_address(&["--address=/a".to_string()], "/a"));
    }

    #[test]
    fn shim_socket_is_under_run_containerd_s() {
        let p = shim_socket(Path::new("/t/c.sock"), "k8s.io", "abc");
        assert!(p.starts_with("/run/containerd/s"));
        assert_eq!(p.file_name().unwrap().len(), 64);
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

    /// A process working in a directory is found, also once the directory is deleted, and one
    /// working in a sibling whose name starts the same is not.
    #[test]
    fn processes_working_in_a_directory_are_found() {
        let base = std::env::temp_dir().join(format!("leaks-cwd-{}", std::process::id()));
        let (dir, sibling) = (base.join("run"), base.join("run2"));
        fs::create_dir_all(dir.join("bundle")).unwrap();
        fs::create_dir_all(&sibling).unwrap();
        let spawn = |cwd: &Path| std::process::Command::new("sleep").arg("30").current_dir(cwd).spawn().unwrap();
        let (mut inside, mut beside) = (spawn(&dir.join("bundle")), spawn(&sibling));
        let found = processes_in(&dir);
        assert!(found.contains(&inside.id()) && !found.contains(&beside.id()), "{found:?}");
        fs::remove_dir(dir.join("bundle")).unwrap();
        assert!(processes_in(&dir).contains(&inside.id()), "a deleted working directory");
        for c in [&mut inside, &mut beside] {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = fs::remove_dir_all(&base);
    }
}
