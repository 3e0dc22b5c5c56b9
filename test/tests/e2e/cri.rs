//! `cri::*`: the Kubernetes path. The kubelet's calls (RunPodSandbox with a runtime handler,
//! CreateContainer, StartContainer, ContainerStatus, StopContainer, StopPodSandbox,
//! RemovePodSandbox) made through containerd's real CRI plugin with the Rust CRI client of
//! `wasm_shim_e2e::cri`, and the CRI log files read as `kubectl logs` would.
//!
//! - `cri::version`, `cri::images_visible`, `cri::unconfigured_handler`: the plugin itself.
//! - `cri::wasm::*`: handler `wasm` (our shim runs the pause sandbox, wasm apps and native
//!   sidecars of the pod); `cri::runc::*`: the same flows with handler `runc`, the baseline that
//!   proves the harness and the machine.
//! - `cri::latency_wasm_vs_runc`: RunPodSandbox and container start times, both handlers.
//!
//! Every pod goes through [`with_pod`]: whatever the case does, the pod is torn down as the
//! kubelet does it, and then nothing may be left: shim process, shim socket, mount, cgroup,
//! netns, veth on the bridge, CNI cache entry, container or snapshot; and the host's IP
//! forwarding switch is as it was.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use wasm_shim_e2e::cri::{
    self, ContainerSpec, Cri, CriError, LogLine, PodSpec, K8S_NAMESPACE, RUNC_HANDLER,
    WASM_HANDLER,
};
use wasm_shim_e2e::ctr::ensure;
use wasm_shim_e2e::images::{self, BUSYBOX_IMAGE, GUESTS_IMAGE, PAUSE_IMAGE};
use wasm_shim_e2e::leaks::{self, RUNC_SHIM_NAME};
use wasm_shim_e2e::{containerd, Containerd, Leaks, SHIM_NAME};

use super::{median, Ctx};

/// A pod the case started: its spec (the kubelet keeps it to create containers), id, handler,
/// and the containers created in it.
pub struct Pod {
    pub spec: PodSpec,
    pub config: cri::PodSandboxConfig,
    pub id: String,
    pub handler: String,
    /// How long RunPodSandbox took.
    pub run_took: Duration,
    pub containers: Vec<(ContainerSpec, String)>,
    /// CreateContainer and StartContainer times of the last [`Pod::start`].
    pub last_create: Duration,
    pub last_start: Duration,
}

impl Pod {
    /// CreateContainer + StartContainer; returns the id and the time both calls took.
    pub fn start(&mut self, cri: &Cri, c: ContainerSpec) -> Result<(String, Duration)> {
        let t = Instant::now();
        let id = cri
            .create_container(&self.id, &c.config(), &self.config)
            .with_context(|| format!("container {:?} of pod {}", c.name, self.spec.name))?;
        self.last_create = t.elapsed();
        self.containers.push((c.clone(), id.clone()));
        let t2 = Instant::now();
        cri.start_container(&id)
            .with_context(|| format!("container {:?} of pod {}", c.name, self.spec.name))?;
        self.last_start = t2.elapsed();
        Ok((id, t.elapsed()))
    }

    /// The CRI log file of a container of this pod.
    pub fn log_file(&self, c: &ContainerSpec) -> PathBuf {
        self.spec.log_file(c)
    }
}

/// Starts pod `name` with `handler`, runs `body`, then tears the pod down and checks that
/// nothing is left. `body`'s error comes first; a clean body with a dirty teardown fails too.
pub fn with_pod(
    cx: &Ctx,
    name: &str,
    handler: &str,
    body: impl FnOnce(&Cri, &mut Pod) -> Result<()>,
) -> Result<()> {
    with_pod_sharing(cx, name, handler, false, body)
}

/// [`with_pod`], with one pid namespace for the pod when `share_pid`.
pub fn with_pod_sharing(
    cx: &Ctx,
    name: &str,
    handler: &str,
    share_pid: bool,
    body: impl FnOnce(&Cri, &mut Pod) -> Result<()>,
) -> Result<()> {
    let cri = Cri::connect(&cx.cd.socket)?;
    let before = Leaks::measure(&cx.cd);
    let pod = run_pod(cx, &cri, name, handler, share_pid)?;
    let mut pod = match pod {
        Ok(p) => p,
        Err(e) => {
            // The CRI cleans up after a failed RunPodSandbox; check it did.
            let left = wait_clean(cx, &before);
            return Err(e.context(if left.is_clean() {
                "nothing was left behind".to_string()
            } else {
                format!("and it left behind: {left}")
            }));
        }
    };
    let result = body(&cri, &mut pod);
    let teardown = teardown_and_check(cx, &cri, &pod, &before);
    match (result, teardown) {
        (Err(e), Err(t)) => Err(e.context(format!("(teardown also failed: {t:#})"))),
        (Err(e), Ok(())) => Err(e),
        (Ok(()), t) => t,
    }
}

/// RunPodSandbox as the kubelet does (log directory created first). The outer `Result` is for
/// harness errors, the inner one for the CRI's answer.
fn run_pod(cx: &Ctx, cri: &Cri, name: &str, handler: &str, share_pid: bool) -> Result<Result<Pod>> {
    let mut spec = PodSpec::new(name, &cx.cd.cri);
    spec.share_pid = share_pid;
    std::fs::create_dir_all(&spec.log_dir)?;
    let config = spec.config();
    let t = Instant::now();
    let id = match cri.run_pod_sandbox(&config, handler) {
        Ok(id) => id,
        Err(e) => {
            return Ok(Err(e.context(format!(
                "RunPodSandbox of pod {name} with runtime handler {handler:?}"
            ))))
        }
    };
    Ok(Ok(Pod {
        spec,
        config,
        id,
        handler: handler.into(),
        run_took: t.elapsed(),
        containers: Vec::new(),
        last_create: Duration::ZERO,
        last_start: Duration::ZERO,
    }))
}

fn wait_clean(cx: &Ctx, before: &Leaks) -> Leaks {
    Leaks::wait_clean_since(&cx.cd, before, Duration::from_secs(10))
}

/// The kubelet's teardown (StopContainer, RemoveContainer, StopPodSandbox, RemovePodSandbox,
/// then the pod's cgroup parent), then the leak checks.
fn teardown_and_check(cx: &Ctx, cri: &Cri, pod: &Pod, before: &Leaks) -> Result<()> {
    let t = Instant::now();
    cri.teardown_pod(&pod.id)?;
    let took = t.elapsed();
    let cg_left = cri::remove_pod_cgroup(&pod.spec.cgroup_parent);
    let left = wait_clean(cx, before);
    println!(
        "  pod {} ({}) torn down in {took:.0?}; left behind: {}",
        pod.spec.name,
        pod.handler,
        left.counts()
    );
    ensure(left.is_clean(), || {
        format!("after StopPodSandbox + RemovePodSandbox: {left}")
    })?;
    ensure(cg_left.is_empty(), || {
        format!("the pod's cgroup parent could not be removed (still in use?): {cg_left:?}")
    })?;
    // Sockets of the pod's shim (keyed by the sandbox id, or a container id).
    let sockets: Vec<PathBuf> = std::iter::once(pod.id.as_str())
        .chain(pod.containers.iter().map(|(_, id)| id.as_str()))
        .map(|id| leaks::shim_socket(&cx.cd.socket, K8S_NAMESPACE, id))
        .filter(|p| p.exists())
        .collect();
    ensure(sockets.is_empty(), || {
        format!("shim sockets left in /run/containerd/s: {sockets:?}")
    })?;
    let veths = bridge_ports(&cx.cd);
    ensure(veths.is_empty(), || {
        format!(
            "veth interfaces still on bridge {}: {veths:?}",
            cx.cd.cri.bridge
        )
    })?;
    let fwd = containerd::ip_forward();
    ensure(fwd == cx.cd.ip_forward_before, || {
        format!(
            "net.ipv4.ip_forward changed from {} to {fwd}",
            cx.cd.ip_forward_before
        )
    })?;
    let known = cri.list_pod_sandboxes()?;
    ensure(known.iter().all(|p| p.id != pod.id), || {
        format!("the CRI still lists pod {}", pod.id)
    })
}

/// Interfaces enslaved to the harness's bridge (one veth per live pod).
fn bridge_ports(cd: &Containerd) -> Vec<String> {
    let dir = PathBuf::from("/sys/class/net")
        .join(&cd.cri.bridge)
        .join("brif");
    match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// The shim servers serving the CRI's namespace, by binary name.
fn k8s_shims(cx: &Ctx, name: &str) -> Vec<leaks::ShimDaemon> {
    leaks::shim_daemons(&cx.cd.socket, name)
        .into_iter()
        .filter(|d| d.namespace == K8S_NAMESPACE)
        .collect()
}

pub(crate) fn log_has(lines: &[LogLine], stream: &str, text: &str) -> bool {
    lines
        .iter()
        .any(|l| l.stream == stream && l.message == text)
}

pub(crate) fn show_log(lines: &[LogLine]) -> String {
    lines
        .iter()
        .map(|l| format!("{} {}", l.stream, l.message))
        .collect::<Vec<_>>()
        .join(" | ")
}

/// Waits until container `id` logs a stdout record containing `needle`; fails at once, with its
/// exit code and log, if it exits first.
fn wait_logged(cri: &Cri, pod: &Pod, c: &ContainerSpec, id: &str, needle: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = cri::read_log(&pod.log_file(c)).unwrap_or_default();
        if log
            .iter()
            .any(|l| l.stream == "stdout" && l.message.contains(needle))
        {
            return Ok(());
        }
        let st = cri.container_status(id)?;
        if st.state == cri::ContainerState::ContainerExited as i32 {
            // The last records may land just after the exit.
            std::thread::sleep(Duration::from_millis(100));
            let log = cri::read_log(&pod.log_file(c)).unwrap_or_default();
            bail!(
                "{} exited {} (reason {:?}) before logging {needle:?}; its CRI log: {}",
                c.name,
                st.exit_code,
                st.reason,
                show_log(&log)
            );
        }
        if Instant::now() >= deadline {
            bail!(
                "{} did not log {needle:?} within 20 s; its CRI log: {}",
                c.name,
                show_log(&log)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs one container to its end: exit code and CRI log.
pub(crate) fn run_to_exit(
    cri: &Cri,
    pod: &mut Pod,
    c: ContainerSpec,
    timeout: Duration,
) -> Result<(cri::ContainerStatus, Vec<LogLine>)> {
    let (id, _) = pod.start(cri, c.clone())?;
    let st = cri.wait_exited(&id, timeout)?;
    let log = cri::read_log(&pod.log_file(&c))?;
    println!(
        "  {}: exit {} (reason {:?}); log: {}",
        c.name,
        st.exit_code,
        st.reason,
        show_log(&log)
    );
    Ok((st, log))
}

pub(crate) fn wasm(name: &str, entry: &str) -> ContainerSpec {
    ContainerSpec::new(name, GUESTS_IMAGE).command([entry])
}

fn busybox(name: &str, script: &str) -> ContainerSpec {
    ContainerSpec::new(name, BUSYBOX_IMAGE).command(["/bin/sh", "-c", script])
}

/// Fails with the wasm side's blocker (no shim binary, guests not built) before any pod runs.
pub(crate) fn need_wasm(cx: &Ctx) -> Result<()> {
    match &cx.wasm_blocker {
        Some(b) => bail!("{b}"),
        None => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------------
// setup

/// What the CRI cases need beyond the other trials' images: the CNI plugins, the pause image in
/// `k8s.io`, and the CRI plugin answering with that image visible. An error blocks `cri::*`.
pub fn setup(cd: &Containerd) -> Result<()> {
    for plugin in ["bridge", "host-local", "loopback"] {
        let p = PathBuf::from("/usr/lib/cni").join(plugin);
        ensure(p.exists(), || {
            format!(
                "{} is missing: install Debian's containernetworking-plugins (`make deps`)",
                p.display()
            )
        })?;
    }
    let pause = wasm_shim_e2e::pause::build()?;
    images::build_and_import_into(cd, &images::pause_image(pause), &[K8S_NAMESPACE])?;
    let cri = Cri::connect(&cd.socket)?;
    let v = cri.version().map_err(|e| {
        anyhow!(
            "{e:#}; is the CRI plugin loaded? containerd log:\n{}",
            cd.log_lines_with("cri", 10)
        )
    })?;
    println!(
        "CRI: {} {} (API {}), CNI bridge {} on {}, pause image {PAUSE_IMAGE}",
        v.runtime_name, v.runtime_version, v.runtime_api_version, cd.cri.bridge, cd.cri.subnet
    );
    // The CRI learns about imported images from containerd's events: wait for it.
    let seen = wasm_shim_e2e::process::poll(Duration::from_secs(10), || {
        cri.image_status(PAUSE_IMAGE).ok().flatten()
    });
    ensure(seen.is_some(), || {
        format!("the CRI does not see {PAUSE_IMAGE} after importing it into {K8S_NAMESPACE}")
    })
}

// ---------------------------------------------------------------------------------------------
// the plugin itself

pub fn version(cx: &Ctx) -> Result<()> {
    let cri = Cri::connect(&cx.cd.socket)?;
    let v = cri.version()?;
    println!(
        "  {} {} (CRI API {}, kubelet API {})",
        v.runtime_name, v.runtime_version, v.runtime_api_version, v.version
    );
    ensure(v.runtime_name == "containerd", || format!("{v:?}"))?;
    ensure(v.runtime_api_version == "v1", || {
        format!("runtime API version is not v1: {v:?}")
    })
}

/// The harness's images are visible to the CRI (imported into `k8s.io`, unpacked).
pub fn images_visible(cx: &Ctx) -> Result<()> {
    let cri = Cri::connect(&cx.cd.socket)?;
    for image in [PAUSE_IMAGE, BUSYBOX_IMAGE, GUESTS_IMAGE] {
        let st = cri
            .image_status(image)?
            .ok_or_else(|| anyhow!("the CRI does not know {image}"))?;
        println!("  {image}: {} bytes, id {}", st.size, st.id);
    }
    ensure(cri.image_status("docker.io/wasmtest/missing:1")?.is_none(), || {
        "ImageStatus of a missing image is not empty".into()
    })
}

/// The sandbox binary itself, on the host: waits (in `rt_sigtimedwait`), exits 0 on SIGTERM and
/// on SIGINT. (The CRI stops sandboxes with SIGKILL, so no pod case would notice a pause that
/// ignores SIGTERM.)
pub fn pause_binary(_cx: &Ctx) -> Result<()> {
    let bin = wasm_shim_e2e::pause::binary_path();
    for (sig, name) in [(libc::SIGTERM, "SIGTERM"), (libc::SIGINT, "SIGINT")] {
        let mut child = std::process::Command::new(&bin)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .with_context(|| format!("{}", bin.display()))?;
        let pid = child.id();
        let result = (|| -> Result<()> {
            // Signals are safe to send once it sits in rt_sigtimedwait (x86_64: 128; aarch64: 137).
            let waiting = wasm_shim_e2e::process::poll(Duration::from_secs(5), || {
                let sc = std::fs::read_to_string(format!("/proc/{pid}/syscall")).ok()?;
                matches!(sc.split_whitespace().next(), Some("128" | "137")).then_some(())
            });
            ensure(waiting.is_some(), || {
                "pause is not waiting in rt_sigtimedwait after 5 s".into()
            })?;
            std::thread::sleep(Duration::from_millis(200));
            ensure(matches!(child.try_wait(), Ok(None)), || {
                "pause exited on its own".into()
            })?;
            let t = Instant::now();
            // SAFETY: kill(2) on our own unreaped child.
            unsafe {
                libc::kill(pid as libc::pid_t, sig);
            }
            let status = wasm_shim_e2e::process::poll(Duration::from_secs(2), || {
                child.try_wait().ok().flatten()
            })
            .ok_or_else(|| anyhow!("pause still running 2 s after {name}"))?;
            println!("  {name}: {status} after {:.1?}", t.elapsed());
            ensure(status.code() == Some(0), || {
                format!("pause ended with {status} after {name}, not exit 0")
            })
        })();
        let _ = child.kill();
        let _ = child.wait();
        result?;
    }
    Ok(())
}

/// RunPodSandbox with a handler that is not in the config: a clear error, nothing created.
pub fn unconfigured_handler(cx: &Ctx) -> Result<()> {
    let cri = Cri::connect(&cx.cd.socket)?;
    let before = Leaks::measure(&cx.cd);
    let pods_before = cri.list_pod_sandboxes()?.len();
    let err = match run_pod(cx, &cri, "nope-handler", "nope", false)? {
        Ok(pod) => {
            let _ = cri.teardown_pod(&pod.id);
            bail!("RunPodSandbox with handler \"nope\" succeeded (pod {})", pod.id);
        }
        Err(e) => e,
    };
    let cri_err = err
        .downcast_ref::<CriError>()
        .ok_or_else(|| anyhow!("not a CRI error: {err:#}"))?;
    println!("  {:?}: {}", cri_err.code, cri_err.message);
    ensure(
        cri_err.message.contains("no runtime for \"nope\" is configured"),
        || format!("unexpected message: {cri_err}"),
    )?;
    ensure(cri.list_pod_sandboxes()?.len() == pods_before, || {
        "a pod sandbox was left listed".into()
    })?;
    let left = wait_clean(cx, &before);
    ensure(left.is_clean(), || format!("left behind: {left}"))
}

/// CreateContainer with an image that is not there (nothing can be pulled here, and the CRI
/// does not pull on CreateContainer anyway): a clear error naming the image.
pub fn missing_image(cx: &Ctx, handler: &str) -> Result<()> {
    if handler == WASM_HANDLER {
        need_wasm(cx)?;
    }
    let name = format!("{handler}-missing-image");
    with_pod(cx, &name, handler, |cri, pod| {
        let image = "docker.io/wasmtest/missing:1";
        let c = ContainerSpec::new("app", image);
        let err = match cri.create_container(&pod.id, &c.config(), &pod.config) {
            Ok(id) => {
                pod.containers.push((c, id.clone()));
                bail!("CreateContainer with a missing image succeeded ({id})");
            }
            Err(e) => e,
        };
        let cri_err = err
            .downcast_ref::<CriError>()
            .ok_or_else(|| anyhow!("not a CRI error: {err:#}"))?;
        println!("  {:?}: {}", cri_err.code, cri_err.message);
        ensure(
            cri_err.message.contains(image) && cri_err.message.contains("not found"),
            || format!("the message does not name the image and \"not found\": {cri_err}"),
        )
    })
}

// ---------------------------------------------------------------------------------------------
// one container per pod

/// `hello.wasm` alone in a pod: exit 0, its line in the CRI log on stdout.
pub fn wasm_hello(cx: &Ctx) -> Result<()> {
    need_wasm(cx)?;
    with_pod(cx, "wasm-hello", WASM_HANDLER, |cri, pod| {
        let sandbox = cri.pod_sandbox_status(&pod.id)?;
        if let Some(st) = &sandbox.status {
            println!(
                "  pod {} ready in {:.0?}, ip {:?}, handler {:?}",
                pod.spec.name,
                pod.run_took,
                st.network.as_ref().map(|n| n.ip.clone()),
                st.runtime_handler
            );
        }
        let (st, log) = run_to_exit(cri, pod, wasm("hello", "/hello.wasm"), Duration::from_secs(30))?;
        ensure(st.exit_code == 0, || format!("exit code {}", st.exit_code))?;
        ensure(log_has(&log, "stdout", "hello from wasm"), || {
            format!("no stdout record \"hello from wasm\": {}", show_log(&log))
        })?;
        ensure(log.iter().all(|l| l.stream == "stdout"), || {
            format!("unexpected stderr records: {}", show_log(&log))
        })
    })
}

/// `stderr.wasm`: one line on each stream, each tagged with its stream in the CRI log.
pub fn wasm_stderr(cx: &Ctx) -> Result<()> {
    need_wasm(cx)?;
    with_pod(cx, "wasm-stderr", WASM_HANDLER, |cri, pod| {
        let (st, log) = run_to_exit(cri, pod, wasm("streams", "/stderr.wasm"), Duration::from_secs(30))?;
        ensure(st.exit_code == 0, || format!("exit code {}", st.exit_code))?;
        ensure(log_has(&log, "stdout", "this goes to stdout"), || {
            format!("stdout record missing: {}", show_log(&log))
        })?;
        ensure(log_has(&log, "stderr", "this goes to stderr"), || {
            format!("stderr record missing: {}", show_log(&log))
        })
    })
}

/// `exit3.wasm`: ContainerStatus reports exit code 3 (reason Error), its line is logged.
pub fn wasm_exit3(cx: &Ctx) -> Result<()> {
    need_wasm(cx)?;
    with_pod(cx, "wasm-exit3", WASM_HANDLER, |cri, pod| {
        let (st, log) = run_to_exit(cri, pod, wasm("exit3", "/exit3.wasm"), Duration::from_secs(30))?;
        ensure(st.exit_code == 3, || {
            format!("ContainerStatus exit code {} (expected 3): {st:?}", st.exit_code)
        })?;
        ensure(st.reason == "Error", || {
            format!("reason {:?} (expected \"Error\")", st.reason)
        })?;
        ensure(log_has(&log, "stdout", "exiting with 3"), || {
            format!("no \"exiting with 3\": {}", show_log(&log))
        })
    })
}

/// busybox's `echo hello` (the image's own entrypoint) alone in a pod.
pub fn runc_echo(cx: &Ctx) -> Result<()> {
    with_pod(cx, "runc-echo", RUNC_HANDLER, |cri, pod| {
        let (st, log) = run_to_exit(
            cri,
            pod,
            ContainerSpec::new("echo", BUSYBOX_IMAGE),
            Duration::from_secs(30),
        )?;
        ensure(st.exit_code == 0, || format!("exit code {}", st.exit_code))?;
        ensure(log_has(&log, "stdout", "hello"), || show_log(&log))
    })
}

/// A line on each stream and exit 3, from a native container, with `handler`.
pub fn native_exit_and_streams(cx: &Ctx, handler: &str) -> Result<()> {
    if handler == WASM_HANDLER {
        need_wasm(cx)?;
    }
    with_pod(cx, &format!("{handler}-native-exit3"), handler, |cri, pod| {
        let (st, log) = run_to_exit(
            cri,
            pod,
            busybox("sh", "echo out; echo err >&2; exit 3"),
            Duration::from_secs(30),
        )?;
        ensure(st.exit_code == 3, || format!("exit code {}", st.exit_code))?;
        ensure(
            log_has(&log, "stdout", "out") && log_has(&log, "stderr", "err"),
            || show_log(&log),
        )
    })
}

// ---------------------------------------------------------------------------------------------
// stop

/// StopContainer(timeout 10) of a running container: how long until it is EXITED, and with
/// which code (143 for SIGTERM).
fn stop_case(cx: &Ctx, handler: &str, c: ContainerSpec, marker: &str) -> Result<()> {
    with_pod(cx, &format!("{handler}-stop"), handler, |cri, pod| {
        let (id, _) = pod.start(cri, c.clone())?;
        cri.wait_running(&id, Duration::from_secs(20))?;
        wait_logged(cri, pod, &c, &id, marker)?;
        let t = Instant::now();
        cri.stop_container(&id, 10)?;
        let took = t.elapsed();
        let st = cri.container_status(&id)?;
        println!(
            "  StopContainer(timeout=10) of {} ({handler}) returned after {took:.3?}: state {}, exit {}, reason {:?}",
            c.name,
            cri::state_name(st.state),
            st.exit_code,
            st.reason
        );
        ensure(st.state == cri::ContainerState::ContainerExited as i32, || {
            format!("not exited after StopContainer: {}", cri::state_name(st.state))
        })?;
        ensure(st.exit_code == 143, || {
            format!("exit code {} (expected 143: stopped by SIGTERM, not SIGKILL)", st.exit_code)
        })?;
        ensure(took < Duration::from_secs(1), || {
            format!("StopContainer took {took:?} (must be well under 1 s)")
        })
    })
}

/// A spinning wasm guest stops on the CRI's SIGTERM well under a second.
pub fn wasm_stop(cx: &Ctx) -> Result<()> {
    need_wasm(cx)?;
    stop_case(cx, WASM_HANDLER, wasm("spin", "/spin.wasm"), "spinning")
}

/// The same for a busybox shell that exits 143 on SIGTERM (sh as PID 1 needs a trap).
pub fn runc_stop(cx: &Ctx) -> Result<()> {
    stop_case(
        cx,
        RUNC_HANDLER,
        busybox(
            "loop",
            "trap 'exit 143' TERM; echo spinning; while :; do sleep 0.05; done",
        ),
        "spinning",
    )
}

// ---------------------------------------------------------------------------------------------
// pods of several containers

/// busybox client: connect to 127.0.0.1:`port` (retrying while refused), send `msg`, print
/// what comes back.
fn nc_client(port: u16, msg: &str) -> String {
    format!(
        "i=0; until echo '{msg}' | nc 127.0.0.1 {port}; do \
           i=$((i+1)); [ $i -ge 100 ] && echo 'gave up connecting' >&2 && exit 1; sleep 0.1; \
         done"
    )
}

/// busybox server: accept one connection on `port`, read a line, log `got: <line>` on stderr
/// (stdout is the connection), answer `reply`. Reading before answering matters: a server that
/// answers and closes at once races the client, whose nc may see end of file before it sent.
fn nc_server(port: u16, reply: &str) -> String {
    format!(
        "echo listening; \
         exec nc -l -p {port} -e /bin/sh -c 'read l; echo \"got: $l\" >&2; echo \"{reply}\"'"
    )
}

/// Waits for `id` to exit; fails unless with code 0. Returns its log.
fn expect_success(
    cri: &Cri,
    pod: &Pod,
    c: &ContainerSpec,
    id: &str,
) -> Result<Vec<LogLine>> {
    let st = cri.wait_exited(id, Duration::from_secs(30))?;
    let log = cri::read_log(&pod.log_file(c)).unwrap_or_default();
    println!(
        "  {}: exit {}; log: {}",
        c.name,
        st.exit_code,
        show_log(&log)
    );
    ensure(st.exit_code == 0, || {
        format!("{} exited {} (reason {:?}); log: {}", c.name, st.exit_code, st.reason, show_log(&log))
    })?;
    Ok(log)
}

fn expect_line(log: &[LogLine], c: &ContainerSpec, text: &str) -> Result<()> {
    expect_record(log, c, "stdout", text)
}

fn expect_record(log: &[LogLine], c: &ContainerSpec, stream: &str, text: &str) -> Result<()> {
    ensure(log_has(log, stream, text), || {
        format!("{}: no {stream} record {text:?}: {}", c.name, show_log(log))
    })
}

/// A wasm app and a busybox sidecar in one pod (handler `wasm`) talk over 127.0.0.1 in both
/// directions: the wasm `tcp` guest serves and busybox connects, then busybox serves and the
/// guest connects. Every container exits 0 and logs what it got.
pub fn wasm_sidecar_localhost(cx: &Ctx) -> Result<()> {
    need_wasm(cx)?;
    // Whether the guests image carries the `tcp` guest (built by test/guests, added to the
    // image by images::guests_files).
    let guests = wasm_shim_e2e::guests::Guests::load()?;
    let has_tcp = images::guests_files(&guests)
        .iter()
        .any(|f| f.path == "/tcp.wasm");
    if !has_tcp {
        bail!(
            "PENDING: the wasm side needs the `tcp` guest (WASI sockets) in the guests image; \
             it is not there (test/guests/src/bin/tcp.rs not built into the image)"
        );
    }
    with_pod(cx, "wasm-sidecar", WASM_HANDLER, |cri, pod| {
        // wasm serves, busybox connects.
        let wasm_server = wasm("wasm-server", "/tcp.wasm").args(["serve", "8081", "--once"]);
        let (ws, _) = pod.start(cri, wasm_server.clone())?;
        wait_logged(cri, pod, &wasm_server, &ws, "listening on 8081")?;
        let bb_client = busybox("sidecar-client", &nc_client(8081, "hello from busybox"));
        let (bc, _) = pod.start(cri, bb_client.clone())?;
        // busybox serves, wasm connects (the guest retries while refused).
        let bb_server = busybox("sidecar-server", &nc_server(8082, "busybox got it"));
        let (bs, _) = pod.start(cri, bb_server.clone())?;
        let wasm_client = wasm("wasm-client", "/tcp.wasm").args([
            "connect",
            "127.0.0.1:8082",
            "hello from wasm",
        ]);
        let (wc, _) = pod.start(cri, wasm_client.clone())?;

        let shims = k8s_shims(cx, SHIM_NAME);
        println!(
            "  {} containers + sandbox -> {} {SHIM_NAME} process(es): {shims:?}",
            pod.containers.len(),
            shims.len()
        );

        let log = expect_success(cri, pod, &bb_client, &bc)?;
        expect_line(&log, &bb_client, "wasm got: hello from busybox")?;
        let log = expect_success(cri, pod, &wasm_server, &ws)?;
        ensure(
            log.iter()
                .any(|l| l.stream == "stdout" && l.message.starts_with("served 127.0.0.1:") && l.message.ends_with(": hello from busybox")),
            || format!("wasm-server: no \"served 127.0.0.1:…: hello from busybox\": {}", show_log(&log)),
        )?;
        let log = expect_success(cri, pod, &wasm_client, &wc)?;
        expect_line(&log, &wasm_client, "reply: busybox got it")?;
        let log = expect_success(cri, pod, &bb_server, &bs)?;
        expect_record(&log, &bb_server, "stderr", "got: hello from wasm")?;
        ensure(shims.len() == 1, || {
            format!("expected one {SHIM_NAME} for the pod, found {shims:?}")
        })
    })
}

/// The busybox lines that try what a sidecar sharing the pod's pid namespace could do to the
/// process whose command line matches `needle` (a grep pattern): each `<what> <pid> -> ok|error`.
fn proc_attempts(needle: &str) -> String {
    format!(
        r#"for p in /proc/[0-9]*; do
  pid=${{p#/proc/}}
  [ "$pid" = "$$" ] && continue
  /bin/busybox tr '\0' ' ' < $p/cmdline 2>/dev/null | /bin/busybox grep -q -- '{needle}' || continue
  for a in environ maps fd root/ cwd/ exe; do
    case $a in
      # The fd numbers list (a count, no more); following one to the file is the attempt.
      fd) n=1; for f in $p/fd/*; do /bin/busybox readlink $f >/dev/null 2>&1 && n=0; done; [ $n = 0 ] ;;
      root/|cwd/) /bin/busybox ls $p/$a >/dev/null 2>&1 ;;
      exe) /bin/busybox readlink $p/exe >/dev/null 2>&1 ;;
      *) /bin/busybox cat $p/$a >/dev/null 2>&1 ;;
    esac && r=ok || r=error
    echo "$a $pid -> $r"
  done
  ( exec 3<>$p/mem ) 2>/dev/null && r=ok || r=error
  echo "mem $pid -> $r"
done"#
    )
}

/// A pod sharing one pid namespace (`shareProcessNamespace`): a wasm container runs, and a
/// busybox sidecar (root, the default capabilities) tries the wasm init's `/proc/<pid>`
/// memory, descriptors, root, cwd, exe, environment and maps: all refused, the init is not
/// dumpable. The same sidecar reads the pause process's (dumpable, same capabilities): the
/// attempts are not refused for some other reason.
pub fn wasm_shared_pid_sidecar(cx: &Ctx) -> Result<()> {
    need_wasm(cx)?;
    with_pod_sharing(cx, "shared-pid", WASM_HANDLER, true, |cri, pod| {
        let app = wasm("wasm-app", "/sleep.wasm").args(["30"]).share_pid();
        let (app_id, _) = pod.start(cri, app.clone())?;
        wait_logged(cri, pod, &app, &app_id, "sleeping")?;
        // Anchored: the sidecar's own shells (`/bin/sh -c <this script>`) never match.
        let script = format!("{}\n{}", proc_attempts("^/proc/self/exe init "), proc_attempts("^/pause"));
        let side = busybox("sidecar", &script).share_pid();
        let (side_id, _) = pod.start(cri, side.clone())?;
        let log = expect_success(cri, pod, &side, &side_id)?;
        let lines: Vec<&str> = log.iter().filter(|l| l.stream == "stdout").map(|l| l.message.as_str()).collect();
        let pause_pid = "1";
        let (pause, init): (Vec<&str>, Vec<&str>) = lines.iter().partition(|l| l.split(' ').nth(1) == Some(pause_pid));
        println!("  wasm init, from the sidecar: {init:?}\n  pause, from the sidecar: {pause:?}");
        ensure(init.len() == 7, || format!("the sidecar did not find the wasm init (7 attempts expected): {lines:?}"))?;
        for l in &init {
            ensure(l.ends_with("-> error"), || format!("the sidecar got through: {l}"))?;
        }
        ensure(pause.iter().any(|l| l.starts_with("environ ") && l.ends_with("-> ok")), || {
            format!("the sidecar could not read even the pause process's environ: {pause:?}")
        })?;
        cri.stop_container(&app_id, 0)?;
        Ok(())
    })
}

/// The same exchange between two pairs of busybox containers with handler `runc`.
pub fn runc_sidecar_localhost(cx: &Ctx) -> Result<()> {
    with_pod(cx, "runc-sidecar", RUNC_HANDLER, |cri, pod| {
        let server_a = busybox("server-a", &nc_server(8081, "a got it"));
        let (sa, _) = pod.start(cri, server_a.clone())?;
        let client_a = busybox("client-a", &nc_client(8081, "hello from b"));
        let (ca, _) = pod.start(cri, client_a.clone())?;
        let server_b = busybox("server-b", &nc_server(8082, "b got it"));
        let (sb, _) = pod.start(cri, server_b.clone())?;
        let client_b = busybox("client-b", &nc_client(8082, "hello from a"));
        let (cb, _) = pod.start(cri, client_b.clone())?;
        let log = expect_success(cri, pod, &client_a, &ca)?;
        expect_line(&log, &client_a, "a got it")?;
        let log = expect_success(cri, pod, &server_a, &sa)?;
        expect_record(&log, &server_a, "stderr", "got: hello from b")?;
        let log = expect_success(cri, pod, &client_b, &cb)?;
        expect_line(&log, &client_b, "b got it")?;
        let log = expect_success(cri, pod, &server_b, &sb)?;
        expect_record(&log, &server_b, "stderr", "got: hello from a")
    })
}

/// A pod with running containers (wasm and busybox for `wasm`; two busybox for `runc`) is
/// served by exactly one shim process, counted in /proc; StopPodSandbox alone (no
/// StopContainer first) stops them all, and after RemovePodSandbox the shim is gone.
pub fn one_shim_per_pod(cx: &Ctx, handler: &str) -> Result<()> {
    if handler == WASM_HANDLER {
        need_wasm(cx)?;
    }
    let (shim, other) = if handler == WASM_HANDLER {
        (SHIM_NAME, RUNC_SHIM_NAME)
    } else {
        (RUNC_SHIM_NAME, SHIM_NAME)
    };
    with_pod(cx, &format!("{handler}-one-shim"), handler, |cri, pod| {
        let first = if handler == WASM_HANDLER {
            wasm("app", "/sleep.wasm").args(["60"])
        } else {
            busybox("app", "echo sleeping; sleep 60")
        };
        let (a, _) = pod.start(cri, first)?;
        let (b, _) = pod.start(cri, busybox("sidecar", "echo sleeping; sleep 60"))?;
        cri.wait_running(&a, Duration::from_secs(20))?;
        cri.wait_running(&b, Duration::from_secs(20))?;
        let shims = k8s_shims(cx, shim);
        let others = k8s_shims(cx, other);
        println!(
            "  sandbox + 2 running containers -> {} {shim} process(es) {:?}, {} {other}",
            shims.len(),
            shims,
            others.len()
        );
        ensure(shims.len() == 1, || {
            format!("expected exactly one {shim} for the pod, found {shims:?}")
        })?;
        ensure(others.is_empty(), || {
            format!("unexpected {other} processes: {others:?}")
        })?;
        // The pod's shim is the one started for its sandbox, serving on the sandbox's socket.
        ensure(shims[0].id == pod.id, || {
            format!("the shim serves -id {} rather than the sandbox {}", shims[0].id, pod.id)
        })?;
        let socket = leaks::shim_socket(&cx.cd.socket, K8S_NAMESPACE, &pod.id);
        ensure(socket.exists(), || {
            format!("no shim socket {} for the sandbox", socket.display())
        })?;
        // The kubelet's path when a pod is deleted with its containers still running.
        let t = Instant::now();
        cri.stop_pod_sandbox(&pod.id)?;
        println!("  StopPodSandbox with 2 running containers: {:.0?}", t.elapsed());
        for id in [&a, &b] {
            let st = cri.container_status(id)?;
            ensure(st.state == cri::ContainerState::ContainerExited as i32, || {
                format!("container {id} is {} after StopPodSandbox", cri::state_name(st.state))
            })?;
        }
        Ok(())
    })?;
    let left = k8s_shims(cx, shim);
    ensure(left.is_empty(), || {
        format!("shim processes left after RemovePodSandbox: {left:?}")
    })
}

// ---------------------------------------------------------------------------------------------
// latency

/// RunPodSandbox and container start (CreateContainer, StartContainer, both) with each handler,
/// in the same run, median over `n` pods each (alternating, so drift hits both alike).
pub fn latency(cx: &Ctx, n: usize) -> Result<()> {
    // (RunPodSandbox, create+start, create, start)
    let mut runc = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut wasm_t = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut wasm_err = cx.wasm_blocker.clone().map(|b| anyhow!(b));
    for i in 0..n {
        with_pod(cx, &format!("bench-runc-{i}"), RUNC_HANDLER, |cri, pod| {
            runc.0.push(pod.run_took);
            let c = ContainerSpec::new("echo", BUSYBOX_IMAGE);
            let (id, took) = pod.start(cri, c)?;
            runc.1.push(took);
            runc.2.push(pod.last_create);
            runc.3.push(pod.last_start);
            cri.wait_exited(&id, Duration::from_secs(30)).map(drop)
        })?;
        if wasm_err.is_some() {
            continue;
        }
        let r = with_pod(cx, &format!("bench-wasm-{i}"), WASM_HANDLER, |cri, pod| {
            wasm_t.0.push(pod.run_took);
            let (id, took) = pod.start(cri, wasm("hello", "/hello.wasm"))?;
            wasm_t.1.push(took);
            wasm_t.2.push(pod.last_create);
            wasm_t.3.push(pod.last_start);
            cri.wait_exited(&id, Duration::from_secs(30)).map(drop)
        });
        if let Err(e) = r {
            wasm_err = Some(e);
        }
    }
    let show = |v: &Vec<Duration>| {
        if v.is_empty() {
            "n/a".to_string()
        } else {
            format!(
                "{:.1?} (min {:.1?}, {} runs)",
                median(v.clone()),
                v.iter().min().unwrap(),
                v.len()
            )
        }
    };
    println!("  RunPodSandbox median: runc {}, wasm {}", show(&runc.0), show(&wasm_t.0));
    println!(
        "  container create+start median: runc busybox echo {}, wasm hello {}",
        show(&runc.1),
        show(&wasm_t.1)
    );
    println!(
        "    CreateContainer: runc {}, wasm {}; StartContainer: runc {}, wasm {}",
        show(&runc.2),
        show(&wasm_t.2),
        show(&runc.3),
        show(&wasm_t.3)
    );
    match wasm_err {
        Some(e) => Err(e.context("the wasm handler could not be measured")),
        None => Ok(()),
    }
}

/// A serverless function as Kubernetes runs it: a `wasi:http` component in a pod with handler
/// `wasm`, told its port by `PORT` as Knative does, and a busybox sidecar calling it over the
/// pod's localhost (busybox `wget`, retried until the function listens). StopContainer (SIGTERM)
/// drains it and it exits 0.
pub fn wasm_http_function(cx: &Ctx) -> Result<()> {
    need_wasm(cx)?;
    with_pod(cx, "wasm-http", WASM_HANDLER, |cri, pod| {
        let function = wasm("function", "/http.wasm").env("PORT", "8081");
        let (f, _) = pod.start(cri, function.clone())?;
        let caller = busybox(
            "caller",
            "i=0; until busybox wget -q -O - http://127.0.0.1:8081/; do \
               i=$((i+1)); [ $i -ge 100 ] && echo 'gave up' >&2 && exit 1; sleep 0.05; \
             done",
        );
        let (c, _) = pod.start(cri, caller.clone())?;
        let log = expect_success(cri, pod, &caller, &c)?;
        expect_line(&log, &caller, "hello from wasi:http")?;
        let t = Instant::now();
        cri.stop_container(&f, 10)?;
        let st = cri.wait_exited(&f, Duration::from_secs(15))?;
        println!("  function stopped in {:?}, exit {}", t.elapsed(), st.exit_code);
        ensure(st.exit_code == 0, || format!("function exited {} after StopContainer", st.exit_code))?;
        let log = cri::read_log(&pod.log_file(&function)).unwrap_or_default();
        expect_line(&log, &function, "request GET /")
    })
}

/// `linux.resources.unified` (`memory.swap.max=0`, what the kubelet sends on cgroup v2 for a
/// pod that may not swap) gets the same outcome as under runc on the same node: on v2 both run
/// and the container's cgroup says 0; on v1 both refuse it (the shim's message names the key),
/// unless containerd drops it, and then both run.
pub fn wasm_unified_resources_as_runc(cx: &Ctx) -> Result<()> {
    need_wasm(cx)?;
    let outcome = |handler: &str, c: ContainerSpec| -> Result<Result<String, String>> {
        let mut result = None;
        with_pod(cx, &format!("unified-{handler}"), handler, |cri, pod| {
            result = Some(match run_to_exit(cri, pod, c.clone(), Duration::from_secs(30)) {
                Ok((st, log)) if st.exit_code == 0 => Ok(show_log(&log)),
                Ok((st, log)) => Err(format!("exit {}: {}", st.exit_code, show_log(&log))),
                Err(e) => Err(format!("{e:#}")),
            });
            Ok(())
        })?;
        result.context("the pod did not run")
    };
    let ours = outcome(WASM_HANDLER, wasm("hello", "/hello.wasm").unified("memory.swap.max", "0"))?;
    let runc = outcome(RUNC_HANDLER, busybox("echo", "echo ok").unified("memory.swap.max", "0"))?;
    println!("  unified memory.swap.max=0: this shim {ours:?}; runc {runc:?}");
    ensure(ours.is_ok() == runc.is_ok(), || format!("this shim {ours:?}, runc {runc:?}"))?;
    if let Err(e) = &ours {
        ensure(e.contains("memory.swap.max"), || format!("the error does not name the key: {e}"))?;
    }
    Ok(())
}

/// `seccompProfile: RuntimeDefault` with `runAsUser: 1000`, as Kubernetes' restricted Pod
/// Security Standard asks. The CRI puts containerd's default profile in the spec; the shim loads
/// it on the init (`Seccomp: 2` in its status, uid 1000) and the guests still work under it: a
/// command runs to exit 0, a long-running guest logs and stops on the CRI's SIGTERM.
pub fn wasm_runtime_default_seccomp(cx: &Ctx) -> Result<()> {
    need_wasm(cx)?;
    with_pod(cx, "wasm-restricted", WASM_HANDLER, |cri, pod| {
        let hello = wasm("hello", "/hello.wasm").runtime_default_seccomp().run_as(1000);
        let (st, log) = run_to_exit(cri, pod, hello, Duration::from_secs(30))?;
        ensure(st.exit_code == 0 && log_has(&log, "stdout", "hello from wasm"), || {
            format!("hello under RuntimeDefault: exit {}: {}", st.exit_code, show_log(&log))
        })?;
        let app = wasm("sleeper", "/sleep.wasm").args(["30"]).runtime_default_seccomp().run_as(1000);
        let (id, _) = pod.start(cri, app.clone())?;
        wait_logged(cri, pod, &app, &id, "sleeping")?;
        let bundle = cx.cd.task_state_dir_in("k8s.io").join(&id);
        let spec: serde_json::Value = serde_json::from_slice(&std::fs::read(bundle.join("config.json"))?)?;
        let seccomp = &spec["linux"]["seccomp"];
        ensure(seccomp["defaultAction"].is_string() && seccomp["syscalls"].as_array().is_some_and(|s| !s.is_empty()), || {
            format!("the CRI put no seccomp profile in the spec: {seccomp}")
        })?;
        let pid = std::fs::read_to_string(bundle.join("init.pid"))?.trim().to_string();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).map(str::trim).unwrap_or("").to_string();
        println!("  init {pid} under RuntimeDefault: Seccomp {}, Uid {}, NoNewPrivs {}", field("Seccomp:"), field("Uid:"), field("NoNewPrivs:"));
        ensure(field("Seccomp:") == "2", || format!("the init is not filtered: Seccomp {}", field("Seccomp:")))?;
        ensure(field("Uid:").split_whitespace().all(|u| u == "1000"), || format!("Uid {}", field("Uid:")))?;
        cri.stop_container(&id, 10)?;
        let st = cri.container_status(&id)?;
        ensure(st.state == cri::ContainerState::ContainerExited as i32 && st.exit_code == 143, || {
            format!("after StopContainer: {} exit {}", cri::state_name(st.state), st.exit_code)
        })
    })
}

/// The escape guest in a CRI pod (the spec the kubelet's path makes: procfs, sysfs, cgroupfs,
/// devpts and mqueue mounts, `/etc/hosts`, masked paths), as root and as uid 1000 with
/// `RuntimeDefault`: every kernel interface is refused, the granted device and the CRI's
/// `/etc/hosts` open. (`sandbox::kernel_interfaces` makes the same attempts next to runc.)
pub fn wasm_escape_attempts(cx: &Ctx) -> Result<()> {
    need_wasm(cx)?;
    let refused = [
        "open-rw:/proc/self/mem",
        "read:/proc/self/environ",
        "read:/proc/1/cmdline",
        "list:/proc/self/fd",
        "open-w:/proc/sysrq-trigger",
        "open-w:/proc/sys/kernel/hostname",
        "list:/sys/fs/cgroup",
        "open-w:/sys/kernel/uevent_helper",
        "open-rw:/dev/pts/ptmx",
        "list:/dev/mqueue",
    ];
    let granted = ["open-rw:/dev/null", "read:/etc/hosts"];
    with_pod(cx, "wasm-escape", WASM_HANDLER, |cri, pod| {
        for (name, user) in [("escape-root", None), ("escape-1000", Some(1000))] {
            let mut c = wasm(name, "/escape.wasm").args(refused.iter().chain(granted.iter()).copied());
            if let Some(uid) = user {
                c = c.run_as(uid).runtime_default_seccomp();
            }
            let (st, log) = run_to_exit(cri, pod, c, Duration::from_secs(30))?;
            ensure(st.exit_code == 0, || format!("{name}: exit {}: {}", st.exit_code, show_log(&log)))?;
            let result = |t: &str| {
                log.iter().filter(|l| l.stream == "stdout").find_map(|l| l.message.strip_prefix(&format!("{t} -> ")).map(str::to_string))
            };
            for t in refused {
                let r = result(t).with_context(|| format!("{name}: no line for {t}: {}", show_log(&log)))?;
                ensure(r.starts_with("error"), || format!("{name}: the wasm guest got through {t}: {r}"))?;
            }
            for t in granted {
                let r = result(t).with_context(|| format!("{name}: no line for {t}: {}", show_log(&log)))?;
                ensure(r.starts_with("ok"), || format!("{name}: {t} did not open: {r}"))?;
            }
            println!("  {name}: {} kernel interfaces refused, {} granted paths open", refused.len(), granted.len());
        }
        Ok(())
    })
}
