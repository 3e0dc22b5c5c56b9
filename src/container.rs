//! One container as the shim sees it: its rootfs mounts, cgroup, stdio, the init process
//! (pidfd) and the thread that waits for its exit; what runs it is a [`Runtime`]: the shim's
//! own wasm init, or runc for a native container. The task service drives it.

use std::collections::HashMap;
use std::io::BufReader;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use containerd_shim::api::CreateTaskRequest;
use containerd_shim::protos::events::task::TaskOOM;
use log::{debug, warn};
use wasm_shim_container::cgroup::{self, Cgroup, Resources};
use wasm_shim_container::process::{self, ExitStatus, PidFd};

use crate::creating::Creating;
use crate::errors::{Result, ShimError};
use crate::events::Events;
use crate::exec::ExecProcess;
use crate::entrypoint::{self, Entrypoint};
use crate::native::Runc;
use crate::protocol::{self, FromInit, ToInit};
use crate::settings::Settings;
use crate::stdio::{Owner, Stdio};
use crate::task::{Event as TaskEvent, Exit, Lifecycle, Status};

/// Where the init's host pid is written in the bundle, for the `delete` action after a crash.
pub const INIT_PID_FILE: &str = "init.pid";
/// The init's start time (see [`process::start_time`]), beside its pid: the `delete` action
/// signals the recorded pid only if it still names the same process.
pub const INIT_START_FILE: &str = "init.start";
/// Written once Create took the container's cgroup (found empty): the `delete` action kills
/// what is in that cgroup and removes it only then. A Create refused because the cgroup was
/// another container's leaves none, so that container's processes are never touched.
pub const CGROUP_TAKEN_FILE: &str = "cgroup.taken";

/// Records the init's pid and start time in the bundle (read after its pidfd is open, so they
/// are about the process it holds).
fn record_init(bundle: &Path, pid: i32) {
    let _ = std::fs::write(bundle.join(INIT_PID_FILE), pid.to_string());
    if let Ok(t) = process::start_time(pid) {
        let _ = std::fs::write(bundle.join(INIT_START_FILE), t.to_string());
    }
}
/// A wasm OCI artifact's layer, fetched into the bundle for the init during Create (and removed
/// when Create returns), and its name.
pub const ARTIFACT_FILE: &str = "artifact.wasm";
pub const ARTIFACT_NAME_FILE: &str = "artifact.name";
const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// How often the thread reading an init's messages, when none come, looks whether the init
/// has exited (see `monitor`).
const EXITED_EVERY: Duration = Duration::from_secs(2);

pub struct Container {
    pub id: String,
    /// Who its log lines are about: id, pod, name in the pod.
    pub log: Arc<crate::logging::Context>,
    pub bundle: PathBuf,
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub pid: u32,
    pidfd: PidFd,
    pub cgroup: Cgroup,
    rootfs_mounted: bool,
    /// The init's stdin relay, or its terminal (a native container created with one: `ctr run
    /// -t`, CRI `tty: true`).
    stdio: Stdio,
    runtime: Runtime,
    /// Status and exit; beside them, the channel that releases a waiting wasm init (Start):
    /// none for a native container, and none once the init has exited.
    life: Lifecycle<Option<UnixStream>>,
    /// Its task spans (`start`, `exit`), when the shim exports traces.
    trace: Option<crate::traces::TaskTrace>,
}

/// What runs a container, with what only that kind has.
enum Runtime {
    /// The shim's own init runs the wasm: Start releases it over its sync socket, and the shim
    /// freezes, limits and removes its cgroup itself.
    Wasm {
        /// The sha256 of the wasm this container's init asked the shim to compile, and the
        /// cache it went to: the one entry the shim may hand the running init (a server
        /// switching from baseline to optimized code).
        compiled: Option<(String, PathBuf)>,
        /// How long Create took, from containerd's request to the init's Ready: told to the
        /// init at Start, for its metrics (`wasm_shim_create_duration_seconds`).
        create_took: Duration,
    },
    /// A native container: runc created it, owns its cgroup and runs its exec processes.
    Native(Native),
}

pub struct Native {
    pub runc: Runc,
    /// Exec processes, by exec id.
    pub execs: Mutex<HashMap<String, Arc<ExecProcess>>>,
}

/// An entrypoint that is not a file of the rootfs (`path`, see [`Entrypoint::NotInRootfs`]) may
/// be a wasm layer of the container's image (a wasm OCI artifact): fetch it from containerd into
/// the bundle. An ordinary image, or containerd not answering, leaves the init to report the
/// missing file.
fn fetch_artifact(path: &str, address: &str, namespace: &str, id: &str, bundle: &Path) -> Result<()> {
    match crate::content::wasm_layer(address, namespace, id, path) {
        Ok(Some(a)) => {
            let write = |name: &str, data: &[u8]| {
                std::fs::write(bundle.join(name), data).map_err(|e| ShimError::internal(format!("{}: {e}", bundle.join(name).display())))
            };
            write(ARTIFACT_FILE, &a.bytes)?;
            write(ARTIFACT_NAME_FILE, a.name.as_bytes())
        }
        Ok(None) => Ok(()),
        Err(e) if e.kind == crate::errors::ErrorKind::InvalidArgument => Err(e),
        // The init then reports the file missing; why no layer was found is said here, in
        // containerd's log, where the missing file alone would not explain it.
        Err(e) => {
            warn!("{path} is not a file of the rootfs, and its image's wasm layers could not be read: {e}");
            Ok(())
        }
    }
}

/// Removes the artifact files `fetch_artifact` left in the bundle (`.0`) when dropped: a wasm
/// layer is read by the init during Create and by nothing after, so it does not stay in the
/// bundle (a tmpfs) for the container's life.
struct ArtifactFiles(PathBuf);

impl Drop for ArtifactFiles {
    fn drop(&mut self) {
        for f in [ARTIFACT_FILE, ARTIFACT_NAME_FILE] {
            match std::fs::remove_file(self.0.join(f)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => warn!("{}: {e}", self.0.join(f).display()),
                _ => {}
            }
        }
    }
}

/// The rootfs directory on the host: the spec's `root.path`, relative to the bundle.
fn rootfs_path(bundle: &Path, spec: &oci_spec::runtime::Spec) -> PathBuf {
    match spec.root().as_ref().map(|r| r.path().clone()) {
        Some(p) if p.is_absolute() => p,
        Some(p) => bundle.join(p),
        None => bundle.join("rootfs"),
    }
}

fn mount_rootfs(req: &CreateTaskRequest, rootfs: &Path) -> Result<bool> {
    if req.rootfs.is_empty() {
        return Ok(false);
    }
    std::fs::create_dir_all(rootfs).map_err(|e| ShimError::internal(format!("{}: {e}", rootfs.display())))?;
    for m in &req.rootfs {
        if let Err(e) = wasm_shim_container::rootfs::mount_containerd_rootfs(&m.type_, &m.source, &m.options, rootfs) {
            unmount_rootfs(rootfs);
            return Err(ShimError::from(e).context("rootfs"));
        }
    }
    Ok(true)
}

fn unmount_rootfs(rootfs: &Path) {
    if let Err(e) = wasm_shim_container::rootfs::unmount_all(rootfs) {
        warn!("{e}");
    }
}

/// The settings the init gets: the shim's, without the compile cache when its directory cannot
/// be created (the init then compiles every start itself, as it would with the cache off).
fn init_settings() -> Settings {
    let mut settings = Settings::current().clone();
    if let Some(dir) = &settings.cache_dir {
        if let Err(e) = wasm_shim_engine::Cache::open(dir) {
            warn!("compile cache {}: {e}; compiling every start", dir.display());
            settings.cache_dir = None;
        }
    }
    settings
}

/// The cgroup of a container: the spec's `linux.cgroupsPath`, or `/<namespace>/<id>`.
pub fn cgroup_for(spec: &oci_spec::runtime::Spec, namespace: &str, id: &str) -> Result<Cgroup> {
    let path = spec.linux().as_ref().and_then(|l| l.cgroups_path().clone()).map(|p| p.display().to_string()).unwrap_or_default();
    let path = cgroup::normalize_path(&path, &format!("/{namespace}/{id}"))?;
    Ok(Cgroup::new(Path::new(CGROUP_ROOT), &path)?)
}

/// Takes the container's cgroup for this Create, right before it is made or joined: refused, as
/// runc refuses it, when processes are in it or below it already (another container's: the same
/// cgroupsPath given twice; joining it would share its limits and rewrite them, and undoing or
/// cancelling this Create would kill what runs in it). Then marked in the bundle (the `delete`
/// action cleans only a taken cgroup) and handed to a cancelling Delete.
fn take_cgroup(cg: &Cgroup, bundle: &Path, creating: &Creating) -> Result<()> {
    let present = cg.occupants().map_err(|e| ShimError::internal(format!("cgroup {}: {e}", cg.path())))?;
    if present > 0 {
        return Err(ShimError::precondition(format!(
            "cgroup {}: not empty ({present} processes already in it or below it): it belongs to another container; give this one its own cgroupsPath",
            cg.path()
        )));
    }
    let marker = bundle.join(CGROUP_TAKEN_FILE);
    std::fs::write(&marker, cg.path()).map_err(|e| ShimError::internal(format!("{}: {e}", marker.display())))?;
    creating.attach(cg)
}

/// What Create leaves to undo if a later step fails.
struct Undo {
    rootfs: Option<PathBuf>,
    cgroup: Option<Cgroup>,
    pid: Option<PidFd>,
    runc: Option<Runc>,
    armed: bool,
}

impl Drop for Undo {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some(p) = &self.pid {
            let _ = p.send_signal(libc::SIGKILL);
            let _ = p.wait();
        }
        if let Some(r) = &self.runc {
            if let Err(e) = r.delete() {
                warn!("cleanup: {e}");
            }
        }
        if let Some(c) = &self.cgroup {
            if let Err(e) = c.destroy() {
                warn!("cleanup: {e}");
            }
        }
        if let Some(r) = &self.rootfs {
            unmount_rootfs(r);
        }
    }
}

impl Container {
    /// Everything up to a ready, compiled, waiting init; undone on any failure.
    /// `creating` is how a Delete of the same id cancels it: checked between steps, and the
    /// cgroup it kills from.
    pub fn create(
        req: &CreateTaskRequest,
        namespace: &str,
        address: &str,
        events: &Events,
        creating: &Creating,
        caller: &crate::traces::Caller,
    ) -> Result<Arc<Container>> {
        // The `create` task span (in containerd's trace, else a new one), when traces are on.
        let mut span = crate::traces::Creating::begin(&req.id, caller);
        let created = Self::create_spanned(req, namespace, address, events, creating, &mut span);
        if let (Err(e), Some(span)) = (&created, span) {
            span.failed(&e.message);
        }
        created
    }

    fn create_spanned(
        req: &CreateTaskRequest,
        namespace: &str,
        address: &str,
        events: &Events,
        creating: &Creating,
        span: &mut Option<crate::traces::Creating>,
    ) -> Result<Arc<Container>> {
        if !req.checkpoint.is_empty() {
            return Err(ShimError::unimplemented("restoring from a checkpoint is not supported for wasm containers"));
        }
        let began = std::time::Instant::now();
        let bundle = PathBuf::from(&req.bundle);
        let spec = wasm_shim_oci::load_spec(&bundle)?;
        // From here on this thread's lines name the pod too.
        let log = crate::logging::Context::from_spec(&req.id, &spec);
        crate::logging::refine(log.clone());
        if let Some(s) = span.as_mut() {
            s.spec(&req.id, &spec);
        }
        let mut undo = Undo { rootfs: None, cgroup: None, pid: None, runc: None, armed: true };

        let rootfs = bundle.join("rootfs");
        let mounted = mount_rootfs(req, &rootfs)?;
        if mounted {
            undo.rootfs = Some(rootfs.clone());
        }

        let cg = cgroup_for(&spec, namespace, &req.id)?;
        let entrypoint = entrypoint::inspect(&spec, &rootfs_path(&bundle, &spec));
        if entrypoint == Entrypoint::Native {
            return Self::create_native(req, namespace, events, bundle, cg, undo, creating, span);
        }
        if req.terminal {
            return Err(ShimError::unimplemented("a terminal (tty) is not supported for wasm containers: run without -t"));
        }
        // The workload's wasm features, after the node's: checked here, so that a bad list
        // fails Create before anything starts (the init checks them again, with wasmtime), and
        // given to the compile helpers, whose engine must be the init's.
        let workload = wasm_shim_oci::workload_config(&spec)?;
        let settings = init_settings();
        let helper_settings = settings.with_workload_features(&workload.wasm_features).map_err(|e| {
            ShimError::invalid(format!("annotation {}={:?}: {e}", wasm_shim_oci::debug::WASM_FEATURES, workload.wasm_features))
        })?;
        // The layer lives in the bundle (on /run: memory) only until the init has read it, which
        // it does before it reports Ready: removed when Create returns, whatever the outcome.
        let artifact = ArtifactFiles(bundle.clone());
        if let Entrypoint::NotInRootfs { path } = &entrypoint {
            fetch_artifact(path, address, namespace, &req.id, &bundle)?;
        }
        // Opened before the cgroup is taken: a logging binary may take seconds to be ready.
        let (stdio, fds) = Stdio::open(&req.stdin, &req.stdout, &req.stderr, false, Owner { namespace, id: &req.id })?;
        creating.check()?;
        take_cgroup(&cg, &bundle, creating)?;
        cg.create()?;
        undo.cgroup = Some(cg.clone());
        // Limits and device rules (containerd's default spec denies every device, and ctr and
        // the CRI allow its default ones), set before the init joins the cgroup. The rules
        // start from "deny every device" and end with the default nodes the init binds, as
        // under runc, even when the spec has no rules or no resources at all: else the cgroup
        // would keep its parent's "every device".
        let mut res = match spec.linux().as_ref().and_then(|l| l.resources().as_ref()) {
            Some(res) => Resources::from_spec(res)?,
            None => Resources::default(),
        };
        res.devices.get_or_insert_with(Vec::new).extend(wasm_shim_container::cgroup::DeviceRule::default_nodes());
        cg.apply(&res)?;

        let oom_score_adj = spec.process().as_ref().and_then(|p| p.oom_score_adj()).unwrap_or(0);
        let (sync, theirs) = process::sync_pair().map_err(ShimError::internal)?;
        // /proc/self/exe still names this binary after an upgrade replaced the file on disk.
        let mut cmd = Command::new("/proc/self/exe");
        cmd.arg("init").arg(&bundle).env_clear().current_dir(&bundle);
        settings.apply_to(&mut cmd);
        let mut stage1 = process::spawn_with_sync(cmd, theirs, fds).map_err(|e| ShimError::internal(format!("spawn container init: {e}")))?;
        let mut reader = BufReader::new(sync.try_clone().map_err(ShimError::internal)?);
        let mut writer = sync;

        let setup = (|| -> Result<i32> {
            cg.add_process(stage1.id() as i32)?;
            // From here on a cancelling Delete kills it in the cgroup.
            creating.check()?;
            protocol::send(&mut writer, &ToInit::Go).map_err(ShimError::internal)?;
            match protocol::recv::<FromInit>(&mut reader).map_err(ShimError::internal)? {
                Some(FromInit::Pid(pid)) => Ok(pid),
                Some(FromInit::Error(e)) => Err(e),
                other => Err(ShimError::internal(format!("container init: unexpected {other:?}"))),
            }
        })();
        // Stage 1 exits right after reporting; reaping it reparents stage 2 to us. If setup
        // failed before Go was sent (the cgroup refused the pid), stage 1 still waits for it:
        // end it, or Create would wait forever.
        if setup.is_err() {
            let _ = stage1.kill();
        }
        let stage1_status = stage1.wait();
        let pid = setup?;
        debug!("init stage 1 {stage1_status:?}, container pid {pid}");
        let pidfd = PidFd::open(pid).map_err(|e| ShimError::internal(format!("pidfd of {pid}: {e}")))?;
        record_init(&bundle, pid);
        undo.pid = Some(pidfd);

        let mut compiled: Option<(String, PathBuf)> = None;
        let mut hit_digest: Option<String> = None;
        loop {
            creating.check()?;
            match protocol::recv::<FromInit>(&mut reader) {
                Ok(Some(FromInit::Ready)) => break,
                Ok(Some(FromInit::Error(e))) => return Err(e),
                Ok(Some(FromInit::CacheHit { key })) => {
                    crate::compile::touch(&settings, &key);
                    hit_digest = key.split('-').next().map(String::from);
                }
                Ok(Some(FromInit::Loaded { cache, tier, micros, file })) => {
                    if let Some(s) = span.as_ref() {
                        let digest = compiled.as_ref().map(|(d, _)| d.as_str()).or(hit_digest.as_deref());
                        s.compiled(&cache, &tier, Duration::from_micros(micros), &file, digest);
                    }
                }
                Ok(Some(FromInit::Compile { name, len, wait })) => {
                    let bytes = protocol::recv_bytes(&mut reader, len).map_err(|e| ShimError::internal(format!("container init: {e}")))?;
                    if let Some(dir) = &settings.cache_dir {
                        compiled = Some((wasm_shim_engine::wasm_digest(&bytes), dir.clone()));
                    }
                    let by = crate::compile::Requester { cgroup: Some(&cg), oom_score_adj, creating: Some(creating) };
                    crate::compile::request(&helper_settings, &bundle, &by, &name, bytes, wait);
                    if wait {
                        protocol::send(&mut writer, &ToInit::Compiled).map_err(ShimError::internal)?;
                    }
                }
                Ok(Some(FromInit::Log { level, message })) => log::log!(level.into(), "{message}"),
                Ok(other) => {
                    creating.check()?;
                    let pidfd = undo.pid.take().expect("pidfd set above");
                    let _ = pidfd.send_signal(libc::SIGKILL);
                    let st = pidfd.wait();
                    return Err(ShimError::internal(format!("container init ended during setup ({other:?}, {st:?})")));
                }
                Err(e) => {
                    creating.check()?;
                    return Err(ShimError::internal(format!("container init: {e}")));
                }
            }
        }

        // Ready: the init has read what it runs.
        creating.check()?;
        drop(artifact);
        let watcher = Self::watcher(pid, Some(reader), events)?;
        undo.armed = false;
        let container = Arc::new(Container {
            id: req.id.clone(),
            log,
            bundle,
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            pid: pid as u32,
            pidfd: undo.pid.take().expect("pidfd set above"),
            cgroup: cg,
            rootfs_mounted: mounted,
            stdio,
            runtime: Runtime::Wasm { compiled, create_took: began.elapsed() },
            life: Lifecycle::new(Some(writer)),
            trace: span.take().map(crate::traces::Creating::done),
        });
        Self::watched(&watcher, &container);
        Ok(container)
    }

    /// A native container: runc creates it from the same bundle (its own namespaces, cgroup,
    /// rootfs setup, seccomp and capabilities); the shim keeps the stdio and the pidfd.
    #[allow(clippy::too_many_arguments)]
    fn create_native(
        req: &CreateTaskRequest,
        namespace: &str,
        events: &Events,
        bundle: PathBuf,
        cg: Cgroup,
        mut undo: Undo,
        creating: &Creating,
        span: &mut Option<crate::traces::Creating>,
    ) -> Result<Arc<Container>> {
        // `create` entered the container's context.
        let log = crate::logging::current().unwrap_or_else(|| crate::logging::Context::id(&req.id));
        let mounted = undo.rootfs.is_some();
        let runc = Runc::new(namespace, &req.id, &bundle)?;
        let (mut stdio, fds) = Stdio::open(&req.stdin, &req.stdout, &req.stderr, req.terminal, Owner { namespace, id: &req.id })?;
        creating.check()?;
        take_cgroup(&cg, &bundle, creating)?;
        let (pid, master) = runc.create(&bundle, fds, req.terminal)?;
        undo.runc = Some(runc.clone());
        creating.check()?;
        if let Some(m) = master {
            stdio.attach_terminal(m, &req.stdin, &req.stdout)?;
        }
        // Held by the undo from here: killed and reaped by its pidfd, with no process to start
        // (the step that fails may be a thread or process that could not be started).
        undo.pid = Some(PidFd::open(pid).map_err(|e| ShimError::internal(format!("pidfd of {pid}: {e}")))?);
        record_init(&bundle, pid);
        debug!("native container created by runc, pid {pid}");
        let watcher = Self::watcher(pid, None, events)?;
        undo.armed = false;
        let pidfd = undo.pid.take().expect("pidfd set above");
        let container = Arc::new(Container {
            id: req.id.clone(),
            log,
            bundle,
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            pid: pid as u32,
            pidfd,
            cgroup: cg,
            rootfs_mounted: mounted,
            stdio,
            runtime: Runtime::Native(Native { runc, execs: Mutex::new(HashMap::new()) }),
            life: Lifecycle::new(None),
            trace: span.take().map(crate::traces::Creating::done),
        });
        Self::watched(&watcher, &container);
        Ok(container)
    }

    /// The runc and exec processes of a native container; a wasm container has neither.
    pub fn native(&self) -> Result<&Native> {
        match &self.runtime {
            Runtime::Native(n) => Ok(n),
            Runtime::Wasm { .. } => Err(ShimError::unimplemented(format!(
                "{}: exec is not supported in a wasm task (a wasm guest cannot start processes)",
                self.id
            ))),
        }
    }

    pub fn exec(&self, exec_id: &str) -> Result<Arc<ExecProcess>> {
        let found = match &self.runtime {
            Runtime::Native(n) => n.execs.lock().unwrap().get(exec_id).cloned(),
            Runtime::Wasm { .. } => None,
        };
        found.ok_or_else(|| ShimError::not_found(format!("{}: exec {exec_id} not found", self.id)))
    }

    /// The thread that will report the container's exit, started before Create commits (its
    /// undo still armed): a thread that cannot be started fails Create, which is undone, where
    /// after the commit it would leave a container whose exit nobody reports. It watches the
    /// container it is sent, or ends if none comes.
    fn watcher(pid: i32, reader: Option<BufReader<UnixStream>>, events: &Events) -> Result<std::sync::mpsc::SyncSender<Arc<Container>>> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Arc<Container>>(1);
        let events = events.clone();
        crate::logging::spawn(std::thread::Builder::new().name(format!("wait-{pid}")), move || {
            if let Ok(c) = rx.recv() {
                c.monitor(reader, &events);
            }
        })
        .map_err(ShimError::internal)?;
        Ok(tx)
    }

    /// Hands the container to its exit watcher, which waits for it: cannot fail unless that
    /// thread is gone, which would leave the exit unreported, so it is said.
    fn watched(watcher: &std::sync::mpsc::SyncSender<Arc<Container>>, container: &Arc<Container>) {
        if watcher.send(container.clone()).is_err() {
            log::error!("the thread that reports this container's exit is gone: its exit will not be reported");
        }
    }

    /// Reads what a wasm init reports while it runs (OOM), then reaps the init and records
    /// the exit.
    fn monitor(self: Arc<Self>, reader: Option<BufReader<UnixStream>>, events: &Events) {
        let oom_before = self.cgroup.oom_kill_count().unwrap_or(0);
        let mut oom_sent = false;
        let mut reader = reader;
        let mut budget = LogBudget::new();
        let mut handover_asked = false;
        // The end of the socket is how the init's exit shows here; but a process the init
        // forked (only native code could: a guest that escaped wasm) holds the socket too, and
        // in a pid namespace the pod shares it outlives the init. So reading also stops once the
        // init has exited (see `ExitWatch`), and the exit is reported all the same. That is
        // looked at before every message and after every `EXITED_EVERY` without one, so a
        // leftover that keeps writing cannot hold the report back either.
        if let Some(r) = reader.as_ref() {
            let _ = r.get_ref().set_read_timeout(Some(EXITED_EVERY));
        }
        let mut exit = ExitWatch::default();
        while let Some(r) = reader.as_mut() {
            let exited_before = exit.exited();
            if !exit.keep_reading(self.pidfd.exited(), std::time::Instant::now()) {
                warn!("the init has exited but its socket is still open (a process it left behind holds it): reading stops");
                let _ = r.get_ref().shutdown(std::net::Shutdown::Both);
                break;
            }
            if exit.exited() && !exited_before {
                // What it wrote before its exit is there already: no long wait for more.
                let _ = r.get_ref().set_read_timeout(Some(ExitWatch::QUIET));
            }
            let msg = match protocol::recv::<FromInit>(r) {
                Ok(Some(msg)) => msg,
                Ok(None) => break,
                // Nothing came for `EXITED_EVERY`: looked at again at the top.
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    exit.quiet();
                    continue;
                }
                // A message too long or not understood (dropped whole): said, within the
                // budget, and the next one read.
                Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                    if let Budget::Log(suppressed) = budget.take(std::time::Instant::now()) {
                        warn!("a message of the init was dropped: {e} ({suppressed} log lines suppressed before it)");
                    }
                    continue;
                }
                Err(e) => {
                    warn!("reading the init's messages: {e}");
                    // Unread, the socket could fill and block an init writing to it.
                    let _ = r.get_ref().shutdown(std::net::Shutdown::Both);
                    break;
                }
            };
            match msg {
                FromInit::Oom { message } => {
                    debug!("{message}");
                    if !oom_sent {
                        events.send(TaskOOM { container_id: self.id.clone(), ..Default::default() });
                        oom_sent = true;
                    }
                }
                // One hand-over per container: a repeat (an init that asks again and again) is
                // ignored, so it cannot make the shim start a thread per message.
                FromInit::AwaitOptimized { .. } if handover_asked => {}
                FromInit::AwaitOptimized { key } => {
                    handover_asked = true;
                    let sock = reader.as_ref().and_then(|r| r.get_ref().try_clone().ok());
                    let compiled = match &self.runtime {
                        Runtime::Wasm { compiled, .. } => compiled.as_ref(),
                        Runtime::Native(_) => None,
                    };
                    match (sock, handover_path(compiled, &key)) {
                        (Some(sock), Ok(path)) => crate::compile::hand_over_when_built(&self.id, path, sock),
                        (_, Err(why)) => warn!("the init asked for compiled code {key:?}: {why}"),
                        (None, _) => {}
                    }
                }
                FromInit::Log { level, message } => match budget.take(std::time::Instant::now()) {
                    Budget::Log(suppressed) => {
                        if suppressed > 0 {
                            warn!("{suppressed} log lines of the init suppressed (more than {} in {:?})", LogBudget::LINES, LogBudget::WINDOW);
                        }
                        log::log!(level.into(), "{message}")
                    }
                    Budget::Drop => {}
                },
                _ => {}
            }
        }
        drop(reader);
        let status = match self.pidfd.wait() {
            Ok(s) => s,
            Err(e) => {
                warn!("wait for pid {}: {e}", self.pid);
                ExitStatus::Signaled(libc::SIGKILL)
            }
        };
        let oom_after = self.cgroup.oom_kill_count().unwrap_or(0);
        if oom_after > oom_before && !oom_sent {
            events.send(TaskOOM { container_id: self.id.clone(), ..Default::default() });
        }
        if let Some(t) = &self.trace {
            let signal = match status {
                ExitStatus::Signaled(s) => Some(s),
                ExitStatus::Exited(_) => None,
            };
            t.exited(status.code(), signal, oom_sent || oom_after > oom_before);
        }
        // Its last output reaches a log file (`--log-uri file://`) before its exit is reported.
        self.stdio.flush().wait();
        self.life.record_exit(status.code(), |exit, start_tx| {
            *start_tx = None;
            events.exit(&self.id, &self.id, self.pid, exit);
        });
        self.stdio.close_stdin();
    }

    /// ResizePty of the init's terminal.
    pub fn resize(&self, rows: u32, cols: u32) -> Result<()> {
        self.stdio.resize(&self.id, rows, cols)
    }

    /// CloseIO: the guest's stdin ends once what was written so far is delivered.
    pub fn close_stdin(&self) {
        self.stdio.close_stdin();
    }

    pub fn status(&self) -> (Status, Option<Exit>) {
        self.life.status()
    }

    /// Releases the waiting init; `on_started` runs under the state lock, before the exit can
    /// be recorded, so the start event always precedes the exit event.
    pub fn start(&self, on_started: impl FnOnce()) -> Result<u32> {
        let since = std::time::SystemTime::now();
        let started = self.start_untraced(on_started);
        if let Some(t) = &self.trace {
            t.started(since, started.as_ref().err().map(|e| e.message.as_str()));
        }
        started
    }

    fn start_untraced(&self, on_started: impl FnOnce()) -> Result<u32> {
        let mut life = self.life.lock();
        life.status().next(TaskEvent::Start).map_err(|e| ShimError::precondition(format!("{}: {e}", self.id)))?;
        match &self.runtime {
            Runtime::Native(n) => n.runc.start()?,
            Runtime::Wasm { create_took, .. } => {
                let tx = life.extra.as_mut().ok_or_else(|| ShimError::precondition(format!("{}: the init has exited", self.id)))?;
                let create_micros = u64::try_from(create_took.as_micros()).unwrap_or(u64::MAX);
                let traces = protocol::InitTraces { endpoint: crate::traces::shim().map(|t| t.url.clone()), id: self.id.clone() };
                protocol::send(tx, &ToInit::Start { create_micros, traces })
                    .map_err(|e| ShimError::precondition(format!("{}: the init has exited: {e}", self.id)))?;
            }
        }
        let _ = life.advance(TaskEvent::Start);
        on_started();
        Ok(self.pid)
    }

    /// Signals every process of the container's cgroup but the init (what the init left
    /// behind in a pid namespace the pod shares), frozen meanwhile (unless it is paused) so
    /// that none exits and has its pid reused between the listing and the signal, as runc does.
    fn signal_cgroup(&self, signal: i32, paused: bool) {
        let frozen = !paused && self.cgroup.freeze().is_ok();
        for pid in self.cgroup.procs().unwrap_or_default() {
            if pid != self.pid as i32 {
                let _ = process::kill(pid, signal);
            }
        }
        if frozen {
            let _ = self.cgroup.thaw();
        }
    }

    pub fn kill(&self, signal: u32, all: bool) -> Result<()> {
        let (status, _) = self.status();
        // runc signals every process of a native container (`all`); a wasm container's init is
        // its only process.
        let everyone = match &self.runtime {
            Runtime::Native(n) if all => Some(&n.runc),
            _ => None,
        };
        // A wasm container's `all`: its init, and what the init left behind in its cgroup. While
        // it runs, only SIGKILL goes to the others: a serving init forwards other signals to
        // its workers itself (a second SIGTERM would stop a worker at once, not drain it).
        let wasm_all = all && matches!(self.runtime, Runtime::Wasm { .. });
        if status == Status::Stopped {
            if all {
                // Whatever the init left behind in its cgroup (a shared pid namespace).
                if let Some(runc) = everyone {
                    let _ = runc.kill(signal, true);
                }
                if wasm_all {
                    self.signal_cgroup(signal as i32, false);
                }
                return Ok(());
            }
            return Err(ShimError::not_found(format!("{}: process already finished", self.id)));
        }
        if let Some(runc) = everyone {
            return runc.kill(signal, true);
        }
        if wasm_all && signal == libc::SIGKILL as u32 {
            self.signal_cgroup(libc::SIGKILL, status == Status::Paused);
        }
        match self.pidfd.send_signal(signal as i32) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
                return Err(ShimError::not_found(format!("{}: process already finished", self.id)))
            }
            Err(e) => return Err(ShimError::internal(format!("{}: signal {signal}: {e}", self.id))),
        }
        // A frozen process only acts on a signal once thawed.
        if status == Status::Paused {
            let _ = self.cgroup.thaw();
            let mut life = self.life.lock();
            if life.status() == Status::Paused {
                let _ = life.advance(TaskEvent::Resume);
            }
        }
        Ok(())
    }

    pub fn wait(&self) -> Exit {
        self.life.wait()
    }

    pub fn pause(&self) -> Result<()> {
        let mut life = self.life.lock();
        life.status().next(TaskEvent::Pause).map_err(|e| ShimError::precondition(format!("{}: {e}", self.id)))?;
        match &self.runtime {
            Runtime::Native(n) => n.runc.pause()?,
            Runtime::Wasm { .. } => self.cgroup.freeze()?,
        }
        let _ = life.advance(TaskEvent::Pause);
        Ok(())
    }

    pub fn resume(&self) -> Result<()> {
        let mut life = self.life.lock();
        life.status().next(TaskEvent::Resume).map_err(|e| ShimError::precondition(format!("{}: {e}", self.id)))?;
        match &self.runtime {
            Runtime::Native(n) => n.runc.resume()?,
            Runtime::Wasm { .. } => self.cgroup.thaw()?,
        }
        let _ = life.advance(TaskEvent::Resume);
        Ok(())
    }

    /// Update: new limits (LinuxResources JSON) for the container's cgroup. Device rules are left
    /// as Create set them: the CRI cannot change them (containerd sends the old ones back), and
    /// applying them again would briefly deny every device on cgroup v1 and stack one more eBPF
    /// filter per update on v2.
    pub fn update(&self, resources_json: &[u8]) -> Result<()> {
        if let Runtime::Native(n) = &self.runtime {
            return n.runc.update(resources_json);
        }
        let res: oci_spec::runtime::LinuxResources = serde_json::from_slice(resources_json)
            .map_err(|e| ShimError::invalid(format!("update: resources are not LinuxResources JSON: {e}")))?;
        let res = Resources::from_spec(&res)?;
        Ok(self.cgroup.apply(&Resources { devices: None, ..res })?)
    }

    /// Tears down what Create set up. A created-but-never-started init is killed first.
    pub fn delete(&self) -> Result<Exit> {
        let (status, _) = self.status();
        if !status.can_delete() {
            return Err(ShimError::precondition(format!("{}: cannot delete a task that is {status:?}; kill it first", self.id)));
        }
        if status == Status::Created {
            let _ = self.pidfd.send_signal(libc::SIGKILL);
        }
        let exit = match self.life.wait_timeout(Duration::from_secs(10)) {
            Some(e) => e,
            None => return Err(ShimError::internal(format!("{}: init did not exit after SIGKILL", self.id))),
        };
        self.stdio.close_stdin();
        if let Some(logger) = self.stdio.take_logger() {
            logger.close();
        }
        let mut cgroup_gone = true;
        match &self.runtime {
            // runc removes the container's cgroup and state.
            Runtime::Native(n) => n.runc.delete()?,
            Runtime::Wasm { .. } => {
                // The init is reaped; anything still in its cgroup is what it left behind in a
                // pid namespace the pod shares: killed, as runc's delete does.
                let deadline = std::time::Instant::now() + Duration::from_secs(2);
                while self.cgroup.procs().is_ok_and(|p| !p.is_empty()) && std::time::Instant::now() < deadline {
                    self.signal_cgroup(libc::SIGKILL, false);
                    std::thread::sleep(Duration::from_millis(20));
                }
                if let Err(e) = self.cgroup.destroy() {
                    warn!("{e}");
                    cgroup_gone = false;
                }
            }
        }
        if self.rootfs_mounted {
            unmount_rootfs(&self.bundle.join("rootfs"));
        }
        for f in [INIT_PID_FILE, INIT_START_FILE, ARTIFACT_FILE, ARTIFACT_NAME_FILE] {
            let _ = std::fs::remove_file(self.bundle.join(f));
        }
        // A cgroup left behind stays this container's: the `delete` action may still clean it.
        if cgroup_gone {
            let _ = std::fs::remove_file(self.bundle.join(CGROUP_TAKEN_FILE));
        }
        Ok(exit)
    }
}

/// What the running init may make the shim log (after Start, guest code runs there): at most
/// [`LogBudget::LINES`] lines per [`LogBudget::WINDOW`]; past it lines are counted, and the
/// count is logged with the next line let through.
struct LogBudget {
    window_start: std::time::Instant,
    lines: u32,
    suppressed: u64,
}

#[derive(Debug, PartialEq)]
enum Budget {
    /// Log it; so many lines were dropped before it.
    Log(u64),
    Drop,
}

impl LogBudget {
    const LINES: u32 = 20;
    const WINDOW: std::time::Duration = std::time::Duration::from_secs(10);

    fn new() -> Self {
        LogBudget { window_start: std::time::Instant::now(), lines: 0, suppressed: 0 }
    }

    fn take(&mut self, now: std::time::Instant) -> Budget {
        if now.duration_since(self.window_start) >= Self::WINDOW {
            self.window_start = now;
            self.lines = 0;
        }
        if self.lines >= Self::LINES {
            self.suppressed += 1;
            return Budget::Drop;
        }
        self.lines += 1;
        Budget::Log(std::mem::take(&mut self.suppressed))
    }
}

/// When the thread reading an init's messages stops once the init has exited: what it wrote
/// before its exit is still read, for `DRAIN` at most, or until a read after the exit was seen
/// times out; then reading stops even if something else (a process it left behind) keeps
/// writing.
#[derive(Default)]
struct ExitWatch {
    since: Option<std::time::Instant>,
    quiet: bool,
}

impl ExitWatch {
    const DRAIN: Duration = Duration::from_secs(1);
    /// The read timeout once the init has exited.
    const QUIET: Duration = Duration::from_millis(200);

    fn exited(&self) -> bool {
        self.since.is_some()
    }

    /// Whether to read another message, given whether the init has exited by `now`.
    fn keep_reading(&mut self, exited: bool, now: std::time::Instant) -> bool {
        match self.since {
            None if exited => {
                self.since = Some(now);
                self.quiet = false;
                true
            }
            None => true,
            Some(since) => !self.quiet && now.duration_since(since) < Self::DRAIN,
        }
    }

    /// No message came for a read timeout.
    fn quiet(&mut self) {
        if self.since.is_some() {
            self.quiet = true;
        }
    }
}

#[cfg(test)]
mod exit_watch_tests {
    use super::*;

    #[test]
    fn reading_goes_on_while_the_init_runs() {
        let mut w = ExitWatch::default();
        let t0 = std::time::Instant::now();
        for s in 0..100 {
            w.quiet();
            assert!(w.keep_reading(false, t0 + Duration::from_secs(s)));
        }
    }

    #[test]
    fn a_socket_still_written_after_the_exit_is_read_for_a_bounded_time() {
        let mut w = ExitWatch::default();
        let t0 = std::time::Instant::now();
        assert!(w.keep_reading(true, t0));
        assert!(w.keep_reading(true, t0 + ExitWatch::DRAIN / 2));
        assert!(!w.keep_reading(true, t0 + ExitWatch::DRAIN));
    }

    #[test]
    fn a_socket_quiet_after_the_exit_stops_reading() {
        let mut w = ExitWatch::default();
        let t0 = std::time::Instant::now();
        // Exited while a read was waiting: the timeout comes, then the look.
        w.quiet();
        assert!(w.keep_reading(true, t0));
        w.quiet();
        assert!(!w.keep_reading(true, t0 + Duration::from_millis(1)));
    }
}

#[cfg(test)]
mod log_budget_tests {
    use super::*;

    #[test]
    fn a_flood_of_init_log_lines_is_cut_and_counted() {
        let mut b = LogBudget::new();
        let t0 = b.window_start;
        for _ in 0..LogBudget::LINES {
            assert_eq!(b.take(t0), Budget::Log(0));
        }
        for _ in 0..1000 {
            assert_eq!(b.take(t0 + std::time::Duration::from_secs(1)), Budget::Drop);
        }
        // The next window lets lines through again and reports what was dropped, once.
        assert_eq!(b.take(t0 + LogBudget::WINDOW), Budget::Log(1000));
        assert_eq!(b.take(t0 + LogBudget::WINDOW), Budget::Log(0));
    }
}

/// The cache entry a running init may be handed: the optimized code of the very wasm it asked
/// the shim to compile (`compiled`: its digest and the cache), nothing else. The key comes from
/// the init, which runs guest code: it is checked, never used as a path as is.
fn handover_path(compiled: Option<&(String, PathBuf)>, key: &str) -> std::result::Result<PathBuf, String> {
    let (digest, dir) = compiled.ok_or("it asked for no compile")?;
    let key = wasm_shim_engine::CacheKey::parse(key).ok_or("not a cache key")?;
    if key.digest() != digest {
        return Err("not the wasm it asked to compile".into());
    }
    if !key.as_str()[digest.len()..].starts_with("-o") {
        return Err("not optimized code".into());
    }
    Ok(dir.join(key.file_name()))
}

#[cfg(test)]
mod handover_tests {
    use super::*;

    #[test]
    fn only_the_optimized_entry_of_its_own_wasm_is_handed_to_an_init() {
        let d = "ab".repeat(32);
        let compiled = (d.clone(), PathBuf::from("/var/lib/cache"));
        let ok = handover_path(Some(&compiled), &format!("{d}-o0123456789abcdef")).unwrap();
        assert_eq!(ok, PathBuf::from(format!("/var/lib/cache/{d}-o0123456789abcdef.cwasm")));
        // Another tenant's wasm, baseline code, a path, nothing compiled.
        assert!(handover_path(Some(&compiled), &format!("{}-o0123456789abcdef", "cd".repeat(32))).is_err());
        assert!(handover_path(Some(&compiled), &format!("{d}-b0123456789abcdef")).is_err());
        assert!(handover_path(Some(&compiled), "../../etc/passwd").is_err());
        assert!(handover_path(Some(&compiled), &format!("{d}-o/../../x")).is_err());
        assert!(handover_path(None, &format!("{d}-o0123456789abcdef")).is_err());
    }
}
