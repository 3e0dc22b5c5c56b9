//! A private containerd for one test-binary run: its own socket, root, state and log under a temp
//! dir, with the shim's directory first on its PATH, and containerd's CRI plugin configured for
//! this machine (see [`CriSetup`]).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::process::{self, Output, Stdin};
use crate::SHIM_NAME;

pub struct Containerd {
    /// The containerd namespace the `ctr` commands use: `wasmtest-<run tag>` (see
    /// [`run_namespace`]), so concurrent runs of the suite never see each other's containers.
    /// ctr puts a container's cgroup at `/<namespace>/<id>` and the shim keeps runc's state in
    /// `<RUNC_STATE>/<namespace>`: both are this run's own too.
    pub namespace: String,
    /// The temp dir holding everything below.
    pub dir: PathBuf,
    pub root: PathBuf,
    pub state: PathBuf,
    pub socket: PathBuf,
    pub log: PathBuf,
    /// The shim binary containerd will find on its PATH (may not exist yet).
    pub shim: PathBuf,
    /// The CRI plugin's settings (CNI network, bridge, sandbox image).
    pub cri: CriSetup,
    /// `/proc/sys/net/ipv4/ip_forward` when the harness started: pods must not change it.
    pub ip_forward_before: String,
    /// The shims' compile cache: `$WASM_SHIM_CACHE_DIR`, else `<dir>/cache`.
    pub cache: PathBuf,
    /// The containerd process; a trial may stop and start it again ([`Containerd::stop_daemon`],
    /// [`Containerd::start_daemon`]).
    daemon: Mutex<Option<Child>>,
    /// How to start it: the same command every time, unless a trial set another one
    /// ([`Containerd::set_launch`]).
    launch: Launch,
    launch_override: Mutex<Option<Launch>>,
    keep: bool,
    /// [`Containerd::stop`] ran.
    stopped: bool,
}

/// containerd's command line and environment.
struct Launch {
    config: PathBuf,
    env: Vec<(String, String)>,
}

/// The image containerd's CRI plugin runs as every pod's sandbox (`sandbox_image`): the static
/// `test/pause` binary, built and imported into `k8s.io` by the harness (nothing can be pulled).
pub const PAUSE_IMAGE: &str = "docker.io/wasmtest/pause:1";

/// The CNI network every pod joins: a `bridge` without gateway or masquerade (so the host's IP
/// forwarding and iptables stay untouched) on a private host-local range; the bridge interface
/// is named after this run, so concurrent runs and leftovers of crashed ones never collide.
#[derive(Debug, Clone)]
pub struct CriSetup {
    /// `conf_dir` of the CRI plugin: holds only [`CriSetup::conflist`].
    pub cni_conf_dir: PathBuf,
    /// host-local IPAM's `dataDir` (the default is the host's /var/lib/cni/networks).
    pub ipam_dir: PathBuf,
    /// The CNI network name (also the prefix of libcni's cache files in /var/lib/cni/results).
    pub network: String,
    /// The Linux bridge the `bridge` plugin creates: `wasmtest<pid in base 36>`.
    pub bridge: String,
    pub subnet: String,
    /// Where the CRI plugin mounts pod network namespaces (`netns_mounts_under_state_dir`).
    pub netns_dir: PathBuf,
    /// Where the tests put pods' log directories.
    pub logs_dir: PathBuf,
    /// Pods' cgroup parents are `/<cgroup_prefix><pod name>` (cgroupfs driver), e.g.
    /// `/wasmtest-1x2y/pod-hello`: below this run's cgroup parent (named as its namespace).
    pub cgroup_prefix: String,
    /// Whether /var/lib/cni existed before this run (libcni creates it for its cache).
    var_lib_cni_existed: bool,
}

/// Prefix of the bridge interfaces the harness creates (also its CNI network names).
pub const BRIDGE_PREFIX: &str = "wasmtest";
/// Prefix of the containerd namespaces (and cgroup parents) of the harness's runs.
pub const NAMESPACE_PREFIX: &str = "wasmtest-";
/// A variable in containerd's environment (so in every shim's) that no container may see.
pub const HOST_ONLY_VAR: &str = "WASM_E2E_HOST_ONLY";
pub const HOST_ONLY_VALUE: &str = "host-secret-7f3a";
/// libcni (inside containerd 1.6) caches results here, whatever the config says.
pub const CNI_CACHE_RESULTS: &str = "/var/lib/cni/results";

fn base36(mut n: u32) -> String {
    let digits = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(digits[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap()
}

/// This process's pid in base 36: the tag of everything a run creates outside its temp dir.
fn run_tag() -> String {
    base36(std::process::id())
}

/// The namespace of the next [`Containerd`] this process starts: `wasmtest-<pid in base 36>`,
/// then `wasmtest-<pid>-1`, `-2`... (the benchmark runs two containerds at once).
fn run_namespace() -> String {
    static STARTED: AtomicU32 = AtomicU32::new(0);
    match STARTED.fetch_add(1, Ordering::SeqCst) {
        0 => format!("{NAMESPACE_PREFIX}{}", run_tag()),
        n => format!("{NAMESPACE_PREFIX}{}-{n}", run_tag()),
    }
}

/// The pid that named a harness namespace (`wasmtest-<pid36>[-n]`), if `name` is one.
fn namespace_owner(name: &str) -> Option<u32> {
    let tag = name.strip_prefix(NAMESPACE_PREFIX)?;
    let pid = tag.split('-').next()?;
    u32::from_str_radix(pid, 36).ok()
}

/// Whether process `pid` is alive (a run that died leaves its tag to be swept).
fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

impl CriSetup {
    fn new(dir: &Path, state: &Path, namespace: &str) -> CriSetup {
        // Linux allows 15 bytes: "wasmtest" + at most 5 base-36 digits for a 22-bit pid.
        let bridge = format!("{BRIDGE_PREFIX}{}", run_tag());
        CriSetup {
            cni_conf_dir: dir.join("cni").join("net.d"),
            ipam_dir: dir.join("cni").join("ipam"),
            // libcni names its cache files `<network>-<container>-<ifname>` in a directory all
            // runs share: a network of this run's own keeps its entries apart.
            network: bridge.clone(),
            bridge,
            subnet: "10.88.213.0/24".into(),
            netns_dir: state.join("io.containerd.grpc.v1.cri").join("netns"),
            logs_dir: dir.join("pod-logs"),
            cgroup_prefix: format!("{namespace}/pod-"),
            var_lib_cni_existed: Path::new("/var/lib/cni").exists(),
        }
    }

    /// The cgroup parent for pod `name`.
    pub fn cgroup_parent(&self, name: &str) -> String {
        format!("/{}{name}", self.cgroup_prefix)
    }

    /// The conflist: `bridge` (no gateway, no masquerade, host-local IPAM in the private dir).
    /// containerd adds the loopback network itself (go-cni's `WithLoNetwork`), so `lo` is up in
    /// every pod without a second config file (`max_conf_num = 1` would ignore it anyway).
    pub fn conflist(&self) -> String {
        serde_json::to_string_pretty(&serde_json::json!({
            "cniVersion": "0.4.0",
            "name": self.network,
            "plugins": [{
                "type": "bridge",
                "bridge": self.bridge,
                "isGateway": false,
                "isDefaultGateway": false,
                "ipMasq": false,
                "hairpinMode": false,
                "promiscMode": false,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{ "subnet": self.subnet }]],
                    "dataDir": self.ipam_dir,
                },
            }],
        }))
        .unwrap()
    }

    /// The CNI conflist file (written before containerd starts: the CRI plugin only watches
    /// the directory for changes, and a pod started before it sees a config has no network).
    pub fn conflist_path(&self) -> PathBuf {
        self.cni_conf_dir.join("10-wasmtest.conflist")
    }

    fn write(&self) -> Result<()> {
        fs::create_dir_all(&self.cni_conf_dir)?;
        fs::create_dir_all(&self.ipam_dir)?;
        fs::create_dir_all(&self.logs_dir)?;
        fs::write(self.conflist_path(), self.conflist())?;
        Ok(())
    }

    /// Whether the bridge interface exists now.
    pub fn bridge_exists(&self) -> bool {
        Path::new("/sys/class/net").join(&self.bridge).exists()
    }

    /// Entries of libcni's result cache that belong to this network.
    pub fn cni_cache_entries(&self) -> Vec<PathBuf> {
        let prefix = format!("{}-", self.network);
        match fs::read_dir(CNI_CACHE_RESULTS) {
            Ok(rd) => rd
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                .map(|e| e.path())
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

/// Deletes a network interface by name (`ip link delete`).
fn delete_link(name: &str) -> Result<()> {
    let out = process::run(
        {
            let mut c = Command::new("ip");
            c.args(["link", "delete", name]);
            c
        },
        Stdin::Null,
        Duration::from_secs(10),
    )?;
    out.ok().map(drop)
}

/// Removes bridges of earlier runs that died without tearing down (their pid is gone).
fn sweep_stale_bridges() {
    let Ok(rd) = fs::read_dir("/sys/class/net") else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(tag) = name.strip_prefix(BRIDGE_PREFIX) else {
            continue;
        };
        let Ok(pid) = u32::from_str_radix(tag, 36) else {
            continue;
        };
        if pid != std::process::id() && !alive(pid) {
            match delete_link(&name) {
                Ok(()) => eprintln!("removed bridge {name} left by an earlier run (pid {pid})"),
                Err(e) => eprintln!("warning: cannot remove stale bridge {name}: {e:#}"),
            }
        }
    }
}

/// The cgroup hierarchies to look in: the root itself (cgroup v2) and each mounted v1
/// controller (and the hybrid `unified` tree) below it.
pub fn cgroup_hierarchies() -> Vec<PathBuf> {
    let root = Path::new(crate::leaks::CGROUP_ROOT);
    let mut found = vec![root.to_path_buf()];
    if let Ok(rd) = fs::read_dir(root) {
        found.extend(
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir() && !p.is_symlink()),
        );
    }
    found
}

/// Removes the cgroup `rel` (relative to each hierarchy) and everything below it, deepest first
/// (`rmdir`: only cgroups without processes go). Returns the directories that stay.
pub fn remove_cgroup_tree(rel: &str) -> Vec<PathBuf> {
    let mut stayed = Vec::new();
    for h in cgroup_hierarchies() {
        let top = h.join(rel.trim_start_matches('/'));
        if !top.is_dir() {
            continue;
        }
        let mut dirs = vec![top.clone()];
        dirs.extend(crate::leaks::dirs_below(&top));
        dirs.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for d in dirs {
            if fs::remove_dir(&d).is_err() && d.exists() {
                stayed.push(d);
            }
        }
    }
    stayed
}

/// Removes cgroup parents and empty runc state roots of earlier runs that died without tearing
/// down (their pid is gone).
fn sweep_stale_namespaces() {
    let mut stale: Vec<String> = Vec::new();
    for dir in cgroup_hierarchies()
        .into_iter()
        .chain([PathBuf::from(crate::leaks::RUNC_STATE)])
    {
        let Ok(rd) = fs::read_dir(&dir) else { continue };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if namespace_owner(&name).is_some_and(|pid| pid != std::process::id() && !alive(pid))
                && !stale.contains(&name)
            {
                stale.push(name);
            }
        }
    }
    for ns in stale {
        let stayed = remove_cgroup_tree(&ns);
        let _ = fs::remove_dir(Path::new(crate::leaks::RUNC_STATE).join(&ns));
        if stayed.is_empty() {
            eprintln!("removed cgroups of {ns}, left by an earlier run");
        } else {
            eprintln!(
                "warning: cgroups of {ns}, left by an earlier run, are still in use: {stayed:?}"
            );
        }
    }
}

/// Where the shim binary is: `$SHIM_BIN`, else `$CARGO_TARGET_DIR/release`, else
/// `<workspace>/target/release`.
pub fn locate_shim() -> PathBuf {
    if let Some(p) = std::env::var_os("SHIM_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|t| {
            if t.is_absolute() {
                t
            } else {
                crate::workspace_root().join(t)
            }
        })
        .unwrap_or_else(|| crate::workspace_root().join("target"));
    target.join("release").join(SHIM_NAME)
}

/// containerd's config (version 2, containerd 1.6). The CRI plugin, as this machine needs it:
/// - runtime handlers `runc` (io.containerd.runc.v2, cgroupfs: PID 1 is not systemd) and
///   `wasm` (our shim, `io.containerd.wasm.v1`);
/// - `sandbox_image` = the harness's own pause image (nothing can be pulled);
/// - `restrict_oom_score_adj`: root here lacks CAP_SYS_RESOURCE, and the pause sandbox gets
///   oom_score_adj -998, lower than containerd's own;
/// - CNI from Debian's containernetworking-plugins, config in a private dir;
/// - pod network namespaces mounted under the private state dir, not /var/run/netns;
/// - the stream server (exec/attach/port-forward URLs) on 127.0.0.1, any port.
fn config_toml(root: &Path, state: &Path, socket: &Path, dir: &Path, cri: &CriSetup) -> String {
    format!(
        r#"version = 2
root = "{root}"
state = "{state}"

[grpc]
  address = "{sock}"

[ttrpc]
  address = "{sock}.ttrpc"

[debug]
  level = "debug"

[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  restrict_oom_score_adj = true
  systemd_cgroup = false
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  netns_mounts_under_state_dir = true
  max_container_log_line_size = 16384

  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    snapshotter = "overlayfs"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.wasm]
      runtime_type = "io.containerd.wasm.v1"

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni_conf}"
    max_conf_num = 1
"#,
        root = root.display(),
        state = state.display(),
        sock = socket.display(),
        opt = dir.join("opt").display(),
        pause = PAUSE_IMAGE,
        cni_conf = cri.cni_conf_dir.display(),
    )
}

/// The major version of the `containerd` on PATH (1 for Debian 12's 1.6, 2 for 2.x): where the
/// two disagree on who reports a problem (2.x checks a spec itself, ctr 2.x drops gRPC code
/// names from its messages), a trial expects the words of the one it runs against. 1 when
/// `containerd --version` says nothing readable.
pub fn containerd_major() -> u32 {
    static MAJOR: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *MAJOR.get_or_init(|| {
        let out = Command::new("containerd").arg("--version").output().map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
        parse_major(&out).unwrap_or(1)
    })
}

/// `containerd github.com/containerd/containerd/v2 v2.3.4 …` or `… 1.6.20~ds1 …`: the third
/// field's leading number.
fn parse_major(version: &str) -> Option<u32> {
    let v = version.split_whitespace().nth(2)?;
    v.trim_start_matches('v').split('.').next()?.parse().ok()
}

impl Containerd {
    /// Starts containerd in a fresh temp dir and waits until `ctr version` answers.
    pub fn start() -> Result<Containerd> {
        Containerd::start_with_env(&[])
    }

    /// The same, with extra environment for containerd and so for the shims it starts (for
    /// example `WASM_SHIM_BASELINE=off`).
    pub fn start_with_env(env: &[(&str, &str)]) -> Result<Containerd> {
        let dir = tempfile::Builder::new()
            .prefix("wasm-e2e-")
            .tempdir_in("/tmp")
            .context("cannot create the temp dir")?
            .keep();
        let root = dir.join("root");
        let state = dir.join("state");
        let socket = dir.join("containerd.sock");
        let log = dir.join("containerd.log");
        fs::create_dir_all(&root)?;
        fs::create_dir_all(&state)?;
        sweep_stale_bridges();
        sweep_stale_namespaces();
        let namespace = run_namespace();
        let cri = CriSetup::new(&dir, &state, &namespace);
        cri.write()?;
        let config = dir.join("config.toml");
        fs::write(&config, config_toml(&root, &state, &socket, &dir, &cri))?;
        let ip_forward_before = ip_forward();

        // containerd resolves `io.containerd.wasm.v1` to `containerd-shim-wasm-v1` on its PATH.
        // Put the shim's own directory first when the file has that name, else a symlink dir.
        let shim = locate_shim();
        let shim_dir = if shim.file_name().is_some_and(|n| n == SHIM_NAME) {
            shim.parent().unwrap().to_path_buf()
        } else {
            let bin = dir.join("bin");
            fs::create_dir_all(&bin)?;
            std::os::unix::fs::symlink(&shim, bin.join(SHIM_NAME))?;
            bin
        };
        let path = format!(
            "{}:{}",
            shim_dir.display(),
            std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into())
        );

        let mut launch = Launch {
            config,
            env: vec![
                ("PATH".into(), path),
                (HOST_ONLY_VAR.into(), HOST_ONLY_VALUE.into()),
            ],
        };
        launch
            .env
            .extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        // Shims inherit containerd's environment: a compile cache of this run's own (under the
        // temp dir) unless the caller chose one.
        let chosen = env
            .iter()
            .find(|(k, _)| *k == "WASM_SHIM_CACHE_DIR")
            .map(|(_, v)| v.into())
            .or_else(|| std::env::var_os("WASM_SHIM_CACHE_DIR"));
        let cache = match chosen {
            Some(d) => PathBuf::from(d),
            None => {
                launch.env.push((
                    "WASM_SHIM_CACHE_DIR".into(),
                    dir.join("cache").display().to_string(),
                ));
                dir.join("cache")
            }
        };
        fs::File::create(&log)?;
        let cd = Containerd {
            namespace,
            dir,
            root,
            state,
            socket,
            log,
            shim,
            cri,
            ip_forward_before,
            cache,
            daemon: Mutex::new(None),
            launch,
            launch_override: Mutex::new(None),
            keep: std::env::var_os("E2E_KEEP").is_some(),
            stopped: false,
        };
        cd.start_daemon()?;
        Ok(cd)
    }

    /// Starts containerd (again, after [`Containerd::stop_daemon`]) on the same socket, root and
    /// state, its output appended to the same log, and waits until it answers.
    pub fn start_daemon(&self) -> Result<()> {
        let mut daemon = self.daemon.lock().unwrap();
        if daemon.is_some() {
            bail!("containerd is already running");
        }
        let logfile = fs::OpenOptions::new().append(true).open(&self.log)?;
        let over = self.launch_override.lock().unwrap();
        let launch = over.as_ref().unwrap_or(&self.launch);
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&launch.config)
            .envs(launch.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(logfile.try_clone()?)
            .stderr(logfile)
            .spawn()
            .context("cannot start containerd (is it installed?)")?;
        drop(over);
        *daemon = Some(child);
        drop(daemon);
        self.wait_ready(Duration::from_secs(30))
    }

    /// Stops containerd the way a service manager does (SIGTERM; SIGKILL after 10 s) and
    /// leaves everything else alone: shims and their tasks keep running. Returns how it ended.
    pub fn stop_daemon(&self) -> Result<std::process::ExitStatus> {
        let Some(mut child) = self.daemon.lock().unwrap().take() else {
            bail!("containerd is not running");
        };
        // SAFETY: kill(2) on our own child's pid; it has not been reaped yet, so the pid is ours.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if matches!(child.try_wait(), Ok(None)) {
            let _ = child.kill();
        }
        Ok(child.wait()?)
    }

    /// The config file the harness wrote and starts containerd with.
    pub fn config_file(&self) -> &Path {
        &self.launch.config
    }

    /// containerd's `PATH` as the harness sets it (the shim's directory first).
    pub fn daemon_path(&self) -> String {
        self.launch.env.iter().find(|(k, _)| k == "PATH").map(|(_, v)| v.clone()).unwrap_or_default()
    }

    /// The next [`Containerd::start_daemon`] uses `config` and `path` (containerd's `PATH`)
    /// instead of the harness's; `None` goes back to them. The rest of the environment stays.
    pub fn set_launch(&self, over: Option<(PathBuf, String)>) {
        *self.launch_override.lock().unwrap() = over.map(|(config, path)| Launch {
            config,
            env: self
                .launch
                .env
                .iter()
                .map(|(k, v)| if k == "PATH" { (k.clone(), path.clone()) } else { (k.clone(), v.clone()) })
                .collect(),
        });
    }

    /// containerd's pid, while it runs.
    pub fn daemon_pid(&self) -> Option<u32> {
        self.daemon.lock().unwrap().as_ref().map(|c| c.id())
    }

    fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let exited = match self.daemon.lock().unwrap().as_mut() {
                Some(child) => child.try_wait()?,
                None => bail!("containerd is not running"),
            };
            if let Some(status) = exited {
                self.daemon.lock().unwrap().take();
                bail!(
                    "containerd exited ({status}) during startup; log tail:\n{}",
                    self.log_tail(30)
                );
            }
            if self.socket.exists() {
                let out = process::run(self.ctr(["version"]), Stdin::Null, Duration::from_secs(5))?;
                if out.success() {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "containerd did not answer within {timeout:?}; log tail:\n{}",
                    self.log_tail(30)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A `ctr` command against this containerd in the test namespace.
    pub fn ctr<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.ctr_in(&self.namespace, args)
    }

    /// A `ctr` command against this containerd in namespace `ns` (`k8s.io` for the CRI's).
    pub fn ctr_in<I, S>(&self, ns: &str, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address")
            .arg(&self.socket)
            .arg("--namespace")
            .arg(ns)
            .args(args);
        cmd
    }

    /// Runs a short `ctr` command (30 s deadline) and returns its output, whatever its status.
    pub fn ctr_output<I, S>(&self, args: I) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        process::run(self.ctr(args), Stdin::Null, Duration::from_secs(30))
    }

    /// [`Containerd::ctr_output`] in namespace `ns`.
    pub fn ctr_in_output<I, S>(&self, ns: &str, args: I) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        process::run(self.ctr_in(ns, args), Stdin::Null, Duration::from_secs(30))
    }

    /// Runs a short `ctr` command that must succeed; returns its stdout.
    pub fn ctr_ok<I, S>(&self, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        Ok(self.ctr_output(args)?.ok()?.stdout)
    }

    /// The directory containerd keeps a v2 task's bundle in, per namespace.
    pub fn task_state_dir(&self) -> PathBuf {
        self.task_state_dir_in(&self.namespace)
    }

    /// [`Containerd::task_state_dir`] of namespace `ns`.
    pub fn task_state_dir_in(&self, ns: &str) -> PathBuf {
        self.state.join("io.containerd.runtime.v2.task").join(ns)
    }

    /// The cgroup parent of this run's containers (`/<namespace>`), and its `rel` child.
    pub fn cgroup_path(&self, rel: &str) -> String {
        format!("/{}/{rel}", self.namespace)
    }

    /// The last `n` lines of containerd's log (the shim logs there too).
    pub fn log_tail(&self, n: usize) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// containerd log lines that mention `needle` (a container id), at most the last `n`.
    pub fn log_lines_with(&self, needle: &str, n: usize) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().filter(|l| l.contains(needle)).collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Removes every task and container left in the test namespace (SIGKILL first), and every
    /// CRI pod (as the kubelet would: containers, StopPodSandbox, RemovePodSandbox, the pod's
    /// cgroup parent), then whatever is still in `k8s.io`.
    pub fn remove_all(&self) {
        if let Ok(out) = self.ctr_output(["containers", "ls", "-q"]) {
            for id in out.stdout.split_whitespace() {
                crate::ctr::force_remove(self, id);
            }
        }
        self.remove_all_pods();
    }

    /// The CRI part of [`Containerd::remove_all`].
    pub fn remove_all_pods(&self) {
        let (_removed, errors) = crate::cri::remove_all_pods(&self.socket);
        for e in errors {
            eprintln!("warning: pod cleanup: {e}");
        }
        let ns = crate::cri::K8S_NAMESPACE;
        if let Ok(out) = process::run(
            self.ctr_in(ns, ["containers", "ls", "-q"]),
            Stdin::Null,
            Duration::from_secs(30),
        ) {
            for id in out.stdout.split_whitespace() {
                eprintln!("warning: removing k8s.io container {id} the CRI did not remove");
                crate::ctr::force_remove_in(self, ns, id);
            }
        }
        crate::cri::remove_pod_cgroups(&self.cri.cgroup_prefix);
    }

    /// Stops containerd (SIGTERM, then SIGKILL after 10 s) after removing what is left, unmounts
    /// anything under the temp dir and deletes it (unless `E2E_KEEP` is set).
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        // A trial that stopped containerd and failed before starting it again: it is needed to
        // remove what is left.
        if self.daemon_pid().is_none() {
            if let Err(e) = self.start_daemon() {
                eprintln!("warning: cannot start containerd again to clean up: {e:#}");
            }
        }
        self.remove_all();
        let _ = self.stop_daemon();
        // Shims outlive containerd by design; any still running were lost track of.
        let mut left = crate::leaks::shim_processes(&self.socket);
        left.extend(crate::leaks::shim_processes_named(
            &self.socket,
            crate::leaks::RUNC_SHIM_NAME,
        ));
        if !left.is_empty() {
            eprintln!(
                "warning: killing {} leftover shim process(es): {left:?}",
                left.len()
            );
            let pids: Vec<u32> = left
                .iter()
                .filter_map(|p| p.split_whitespace().next()?.parse().ok())
                .collect();
            crate::leaks::kill_pids(&pids);
        }
        unmount_under(&self.dir);
        if self.cri.bridge_exists() {
            if let Err(e) = delete_link(&self.cri.bridge) {
                eprintln!("warning: cannot remove bridge {}: {e:#}", self.cri.bridge);
            }
        }
        for f in self.cri.cni_cache_entries() {
            eprintln!("warning: removing leftover CNI cache entry {}", f.display());
            let _ = fs::remove_file(f);
        }
        // libcni creates /var/lib/cni/results on first use; leave the host as found.
        if !self.cri.var_lib_cni_existed {
            let _ = fs::remove_dir(CNI_CACHE_RESULTS);
            let _ = fs::remove_dir("/var/lib/cni");
        }
        crate::cri::remove_pod_cgroups(&self.cri.cgroup_prefix);
        // The run's cgroup parent and runc state root (runtimes create them and leave them).
        let stayed = remove_cgroup_tree(&self.namespace);
        if !stayed.is_empty() {
            eprintln!("warning: cgroups still in use: {stayed:?}");
        }
        let _ = fs::remove_dir(Path::new(crate::leaks::RUNC_STATE).join(&self.namespace));
        if self.keep {
            eprintln!("E2E_KEEP: leaving {}", self.dir.display());
            return;
        }
        // A background compile helper still at work writes into the run's compile cache while
        // the directory is being removed ("Directory not empty", seen in CI): stopped first.
        let helpers = crate::leaks::processes_in(&self.dir);
        if !helpers.is_empty() {
            eprintln!("stopping {} process(es) still working in {}: {helpers:?}", helpers.len(), self.dir.display());
            crate::leaks::kill_pids(&helpers);
        }
        let mut removed = fs::remove_dir_all(&self.dir);
        for _ in 0..20 {
            if removed.is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
            removed = fs::remove_dir_all(&self.dir);
        }
        if let Err(e) = removed {
            eprintln!("warning: cannot remove {}: {e}", self.dir.display());
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The host's IPv4 forwarding switch (`0` or `1`).
pub fn ip_forward() -> String {
    fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|e| format!("({e})"))
}

/// Mount points at or below `dir` in this mount namespace, deepest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut found: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mount_path)
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mount_path(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Lazily unmounts everything at or below `dir`.
pub fn unmount_under(dir: &Path) {
    for m in mounts_under(dir) {
        let Ok(c) = std::ffi::CString::new(m.as_os_str().as_encoded_bytes()) else {
            continue;
        };
        // SAFETY: umount2 with a valid NUL-terminated path; MNT_DETACH cannot corrupt memory.
        let rc = unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        if rc != 0 {
            eprintln!(
                "warning: cannot unmount {}: {}",
                m.display(),
                std::io::Error::last_os_error()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containerd_versions() {
        assert_eq!(parse_major("containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3\n"), Some(1));
        assert_eq!(parse_major("containerd github.com/containerd/containerd/v2 2.3.4+unknown \n"), Some(2));
        assert_eq!(parse_major("containerd github.com/containerd/containerd/v2 v2.1.0 abc\n"), Some(2));
        assert_eq!(parse_major(""), None);
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mount_path(r"/a\040b"), "/a b");
        assert_eq!(unescape_mount_path(r"/plain"), "/plain");
        assert_eq!(unescape_mount_path(r"/x\\"), r"/x\\");
    }

    #[test]
    fn config_names_every_path() {
        let cri = CriSetup::new(Path::new("/t"), Path::new("/t/state"), "wasmtest-1");
        let c = config_toml(
            Path::new("/t/root"),
            Path::new("/t/state"),
            Path::new("/t/c.sock"),
            Path::new("/t"),
            &cri,
        );
        assert!(c.contains("root = \"/t/root\""));
        assert!(c.contains("address = \"/t/c.sock\""));
        assert!(c.contains("address = \"/t/c.sock.ttrpc\""));
        assert!(c.contains("conf_dir = \"/t/cni/net.d\""));
        assert!(c.contains("runtime_type = \"io.containerd.wasm.v1\""));
        assert!(c.contains("restrict_oom_score_adj = true"));
        assert!(!c.contains("disabled_plugins"));
    }

    #[test]
    fn cni_network_never_routes_through_the_host() {
        let cri = CriSetup::new(Path::new("/t"), Path::new("/t/state"), "wasmtest-1");
        let v: serde_json::Value = serde_json::from_str(&cri.conflist()).unwrap();
        let bridge = &v["plugins"][0];
        assert_eq!(bridge["type"], "bridge");
        assert_eq!(bridge["isGateway"], false);
        assert_eq!(bridge["ipMasq"], false);
        assert_eq!(bridge["ipam"]["dataDir"], "/t/cni/ipam");
        assert!(cri.bridge.len() <= 15, "{}", cri.bridge);
        assert!(cri.bridge.starts_with(BRIDGE_PREFIX));
        assert_eq!(cri.cgroup_parent("p"), "/wasmtest-1/pod-p");
    }

    #[test]
    fn namespaces_name_their_run() {
        let first = run_namespace();
        let second = run_namespace();
        assert_ne!(first, second);
        assert_eq!(namespace_owner(&first), Some(std::process::id()));
        assert_eq!(namespace_owner(&second), Some(std::process::id()));
        assert_eq!(namespace_owner("wasmtest"), None);
        assert_eq!(namespace_owner("k8s.io"), None);
    }

    #[test]
    fn base36_round_trips() {
        for n in [0u32, 35, 36, 4_194_304] {
            assert_eq!(u32::from_str_radix(&base36(n), 36).unwrap(), n);
        }
        assert_eq!(base36(4_194_304).len(), 5);
    }
}
