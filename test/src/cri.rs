//! A blocking CRI client: the kubelet's side of containerd's CRI plugin, on the `k8s-cri` crate's
//! generated tonic client (API `runtime.v1`) over containerd's unix socket, driven by a tokio
//! current-thread runtime so tests stay plain sequential code.
//!
//! Also: the pod and container configs the kubelet would send ([`PodSpec`], [`ContainerSpec`]),
//! the CRI log file format ([`read_log`]), and best-effort removal of every pod
//! ([`remove_all_pods`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1 as api;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::containerd::CriSetup;

pub use api::{ContainerState, ContainerStatus, PodSandboxConfig, VersionResponse};

/// The containerd namespace the CRI plugin keeps its images and containers in.
pub const K8S_NAMESPACE: &str = "k8s.io";
/// The CRI runtime handler mapped to our shim in the harness config.
pub const WASM_HANDLER: &str = "wasm";
/// The CRI runtime handler mapped to containerd's runc shim.
pub const RUNC_HANDLER: &str = "runc";

/// A CRI error: the gRPC status code and containerd's message, kept apart so tests can assert on
/// either.
#[derive(Debug, Clone)]
pub struct CriError {
    pub call: &'static str,
    pub code: tonic::Code,
    pub message: String,
}

impl std::fmt::Display for CriError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CRI {} failed: {:?}: {}", self.call, self.code, self.message)
    }
}

impl std::error::Error for CriError {}

/// A connected client. Every call has a deadline (`timeout`, 60 s unless changed).
pub struct Cri {
    rt: tokio::runtime::Runtime,
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
    pub timeout: Duration,
}

impl Cri {
    /// Connects to containerd's socket (the CRI services share containerd's gRPC server).
    pub fn connect(socket: &Path) -> Result<Cri> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("tokio runtime")?;
        let path = socket.to_path_buf();
        let channel = rt
            .block_on(async move {
                // The URI is a placeholder: the connector below ignores it.
                Endpoint::try_from("http://[::]:50051")?
                    .connect_timeout(Duration::from_secs(5))
                    .connect_with_connector(tower::service_fn(move |_: Uri| {
                        let path = path.clone();
                        async move {
                            let s = tokio::net::UnixStream::connect(path).await?;
                            Ok::<_, std::io::Error>(TokioIo::new(s))
                        }
                    }))
                    .await
            })
            .with_context(|| format!("connecting to the CRI on {}", socket.display()))?;
        Ok(Cri {
            rt,
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
            timeout: Duration::from_secs(60),
        })
    }

    /// Runs one call with the deadline; maps a gRPC status to [`CriError`].
    fn call<T, F>(&self, call: &'static str, fut: F) -> Result<T>
    where
        F: std::future::Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let timeout = self.timeout;
        let res = self
            .rt
            .block_on(async { tokio::time::timeout(timeout, fut).await });
        match res {
            Err(_) => bail!("CRI {call} did not answer within {timeout:?}"),
            Ok(Err(status)) => Err(CriError {
                call,
                code: status.code(),
                message: status.message().to_string(),
            }
            .into()),
            Ok(Ok(resp)) => Ok(resp.into_inner()),
        }
    }

    fn rs(&self) -> RuntimeServiceClient<Channel> {
        self.runtime.clone()
    }

    pub fn version(&self) -> Result<VersionResponse> {
        let mut c = self.rs();
        self.call(
            "Version",
            c.version(api::VersionRequest {
                version: "v1".into(),
            }),
        )
    }

    /// RunPodSandbox with `runtime_handler`; returns the sandbox id.
    pub fn run_pod_sandbox(&self, config: &PodSandboxConfig, handler: &str) -> Result<String> {
        let mut c = self.rs();
        let r = self.call(
            "RunPodSandbox",
            c.run_pod_sandbox(api::RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: handler.into(),
            }),
        )?;
        Ok(r.pod_sandbox_id)
    }

    pub fn stop_pod_sandbox(&self, id: &str) -> Result<()> {
        let mut c = self.rs();
        self.call(
            "StopPodSandbox",
            c.stop_pod_sandbox(api::StopPodSandboxRequest {
                pod_sandbox_id: id.into(),
            }),
        )
        .map(drop)
    }

    pub fn remove_pod_sandbox(&self, id: &str) -> Result<()> {
        let mut c = self.rs();
        self.call(
            "RemovePodSandbox",
            c.remove_pod_sandbox(api::RemovePodSandboxRequest {
                pod_sandbox_id: id.into(),
            }),
        )
        .map(drop)
    }

    /// PodSandboxStatus (verbose: the `info` map holds containerd's JSON, with the runtime
    /// handler and the pause task's pid).
    pub fn pod_sandbox_status(&self, id: &str) -> Result<api::PodSandboxStatusResponse> {
        let mut c = self.rs();
        self.call(
            "PodSandboxStatus",
            c.pod_sandbox_status(api::PodSandboxStatusRequest {
                pod_sandbox_id: id.into(),
                verbose: true,
            }),
        )
    }

    /// Every pod sandbox containerd knows (ready or not).
    pub fn list_pod_sandboxes(&self) -> Result<Vec<api::PodSandbox>> {
        let mut c = self.rs();
        Ok(self
            .call(
                "ListPodSandbox",
                c.list_pod_sandbox(api::ListPodSandboxRequest { filter: None }),
            )?
            .items)
    }

    /// CreateContainer in `pod_id`; `pod` must be the config the pod was started with (the CRI
    /// asks for it again, as the kubelet sends it).
    pub fn create_container(
        &self,
        pod_id: &str,
        config: &api::ContainerConfig,
        pod: &PodSandboxConfig,
    ) -> Result<String> {
        let mut c = self.rs();
        let r = self.call(
            "CreateContainer",
            c.create_container(api::CreateContainerRequest {
                pod_sandbox_id: pod_id.into(),
                config: Some(config.clone()),
                sandbox_config: Some(pod.clone()),
            }),
        )?;
        Ok(r.container_id)
    }

    pub fn start_container(&self, id: &str) -> Result<()> {
        let mut c = self.rs();
        self.call(
            "StartContainer",
            c.start_container(api::StartContainerRequest {
                container_id: id.into(),
            }),
        )
        .map(drop)
    }

    pub fn container_status(&self, id: &str) -> Result<ContainerStatus> {
        let mut c = self.rs();
        self.call(
            "ContainerStatus",
            c.container_status(api::ContainerStatusRequest {
                container_id: id.into(),
                verbose: false,
            }),
        )?
        .status
        .ok_or_else(|| anyhow!("ContainerStatus of {id}: no status in the answer"))
    }

    /// StopContainer with a grace period: SIGTERM (or the image's stop signal), SIGKILL after
    /// `timeout_secs`. Returns when the container has exited.
    pub fn stop_container(&self, id: &str, timeout_secs: i64) -> Result<()> {
        let mut c = self.rs();
        self.call(
            "StopContainer",
            c.stop_container(api::StopContainerRequest {
                container_id: id.into(),
                timeout: timeout_secs,
            }),
        )
        .map(drop)
    }

    pub fn remove_container(&self, id: &str) -> Result<()> {
        let mut c = self.rs();
        self.call(
            "RemoveContainer",
            c.remove_container(api::RemoveContainerRequest {
                container_id: id.into(),
            }),
        )
        .map(drop)
    }

    /// Containers, of one pod when `pod_id` is given.
    pub fn list_containers(&self, pod_id: Option<&str>) -> Result<Vec<api::Container>> {
        let mut c = self.rs();
        let filter = pod_id.map(|p| api::ContainerFilter {
            pod_sandbox_id: p.into(),
            ..Default::default()
        });
        Ok(self
            .call(
                "ListContainers",
                c.list_containers(api::ListContainersRequest { filter }),
            )?
            .containers)
    }

    /// ImageStatus: `Some` when the CRI knows the image (by name, in the k8s.io namespace).
    pub fn image_status(&self, image: &str) -> Result<Option<api::Image>> {
        let mut c = self.images.clone();
        Ok(self
            .call(
                "ImageStatus",
                c.image_status(api::ImageStatusRequest {
                    image: Some(image_spec(image)),
                    verbose: false,
                }),
            )?
            .image)
    }

    /// Polls ContainerStatus until the container is EXITED; returns that status.
    pub fn wait_exited(&self, id: &str, timeout: Duration) -> Result<ContainerStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let st = self.container_status(id)?;
            if st.state == ContainerState::ContainerExited as i32 {
                return Ok(st);
            }
            if Instant::now() >= deadline {
                bail!(
                    "container {id} not exited within {timeout:?}: state {}",
                    state_name(st.state)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Polls ContainerStatus until the container is RUNNING (fails if it exits first).
    pub fn wait_running(&self, id: &str, timeout: Duration) -> Result<ContainerStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let st = self.container_status(id)?;
            if st.state == ContainerState::ContainerRunning as i32 {
                return Ok(st);
            }
            if st.state == ContainerState::ContainerExited as i32 {
                bail!(
                    "container {id} exited ({}, reason {:?}, message {:?}) instead of running",
                    st.exit_code,
                    st.reason,
                    st.message
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "container {id} not running within {timeout:?}: state {}",
                    state_name(st.state)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The kubelet's pod teardown: stop and remove every container, then StopPodSandbox and
    /// RemovePodSandbox. Errors are collected, not fatal, so as much as possible goes.
    pub fn teardown_pod(&self, pod_id: &str) -> Result<()> {
        let mut errors = Vec::new();
        match self.list_containers(Some(pod_id)) {
            Ok(cs) => {
                for c in cs {
                    if c.state != ContainerState::ContainerExited as i32 {
                        if let Err(e) = self.stop_container(&c.id, 2) {
                            errors.push(format!("{e:#}"));
                        }
                    }
                    if let Err(e) = self.remove_container(&c.id) {
                        errors.push(format!("{e:#}"));
                    }
                }
            }
            Err(e) => errors.push(format!("{e:#}")),
        }
        if let Err(e) = self.stop_pod_sandbox(pod_id) {
            errors.push(format!("{e:#}"));
        }
        if let Err(e) = self.remove_pod_sandbox(pod_id) {
            errors.push(format!("{e:#}"));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            bail!("tearing down pod {pod_id}: {}", errors.join("; "))
        }
    }
}

/// Connects and tears down every pod sandbox (best effort; for cleanup between trials and at
/// the end of the run). Returns the ids it removed and the errors it met.
pub fn remove_all_pods(socket: &Path) -> (Vec<String>, Vec<String>) {
    let cri = match Cri::connect(socket) {
        Ok(c) => c,
        Err(e) => return (Vec::new(), vec![format!("{e:#}")]),
    };
    let pods = match cri.list_pod_sandboxes() {
        Ok(p) => p,
        // Without the CRI plugin there is nothing to remove.
        Err(e) if is_unimplemented(&e) => return (Vec::new(), Vec::new()),
        Err(e) => return (Vec::new(), vec![format!("{e:#}")]),
    };
    let mut removed = Vec::new();
    let mut errors = Vec::new();
    for p in pods {
        match cri.teardown_pod(&p.id) {
            Ok(()) => removed.push(p.id),
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    (removed, errors)
}

/// Whether `e` is a CRI answer "Unimplemented" (containerd without the CRI plugin).
pub fn is_unimplemented(e: &anyhow::Error) -> bool {
    e.downcast_ref::<CriError>()
        .is_some_and(|c| c.code == tonic::Code::Unimplemented)
}

/// The name of a `ContainerState` value, for messages.
pub fn state_name(state: i32) -> &'static str {
    ContainerState::try_from(state)
        .map(|s| s.as_str_name())
        .unwrap_or("(unknown state value)")
}

fn image_spec(image: &str) -> api::ImageSpec {
    api::ImageSpec {
        image: image.into(),
        ..Default::default()
    }
}

fn kv(pairs: &[(String, String)]) -> Vec<api::KeyValue> {
    pairs
        .iter()
        .map(|(k, v)| api::KeyValue {
            key: k.clone(),
            value: v.clone(),
        })
        .collect()
}

/// What the kubelet sends for a pod, reduced to what the tests vary.
#[derive(Debug, Clone)]
pub struct PodSpec {
    pub name: String,
    pub uid: String,
    pub namespace: String,
    /// The pod's log directory (containers' `log_path`s are relative to it).
    pub log_dir: PathBuf,
    /// cgroupfs parent of every container of the pod (see [`CriSetup::cgroup_parent`]); the
    /// kubelet creates and removes it, so [`remove_pod_cgroup`] does that here.
    pub cgroup_parent: String,
    /// Kubernetes `shareProcessNamespace: true`: one pid namespace for the pod.
    pub share_pid: bool,
}

impl PodSpec {
    /// A pod named `name` with its logs under `<logs_dir>/<name>` and the harness's cgroup
    /// parent for it.
    pub fn new(name: &str, cri: &CriSetup) -> PodSpec {
        PodSpec {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "default".into(),
            log_dir: cri.logs_dir.join(name),
            cgroup_parent: cri.cgroup_parent(name),
            share_pid: false,
        }
    }

    /// The CRI log file of container `c` of this pod.
    pub fn log_file(&self, c: &ContainerSpec) -> PathBuf {
        self.log_dir.join(c.log_name())
    }

    /// The `PodSandboxConfig` (network, IPC and UTS shared by the pod; PID per container, as
    /// the kubelet does without `shareProcessNamespace`).
    pub fn config(&self) -> PodSandboxConfig {
        let ns = api::NamespaceOption {
            network: api::NamespaceMode::Pod as i32,
            pid: if self.share_pid { api::NamespaceMode::Pod } else { api::NamespaceMode::Container } as i32,
            ipc: api::NamespaceMode::Pod as i32,
            ..Default::default()
        };
        PodSandboxConfig {
            metadata: Some(api::PodSandboxMetadata {
                name: self.name.clone(),
                uid: self.uid.clone(),
                namespace: self.namespace.clone(),
                attempt: 0,
            }),
            hostname: self.name.clone(),
            log_directory: self.log_dir.display().to_string(),
            labels: HashMap::from([("app".to_string(), self.name.clone())]),
            linux: Some(api::LinuxPodSandboxConfig {
                cgroup_parent: self.cgroup_parent.clone(),
                security_context: Some(api::LinuxSandboxSecurityContext {
                    namespace_options: Some(ns),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

/// What the kubelet sends for one container.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    /// Replaces the image's entrypoint when not empty (Kubernetes `command`).
    pub command: Vec<String>,
    /// Replaces the image's cmd when not empty (Kubernetes `args`).
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// In the pod's pid namespace (the pod shares one, `shareProcessNamespace`).
    pub share_pid: bool,
    /// `securityContext.seccompProfile: RuntimeDefault`.
    pub runtime_default_seccomp: bool,
    /// `securityContext.runAsUser` (and `runAsGroup`, the same id).
    pub run_as: Option<i64>,
    /// `linux.resources.unified`, as the kubelet fills it on cgroup v2 (`memory.swap.max`).
    pub unified: Vec<(String, String)>,
}

impl ContainerSpec {
    pub fn new(name: &str, image: &str) -> ContainerSpec {
        ContainerSpec {
            name: name.into(),
            image: image.into(),
            command: Vec::new(),
            args: Vec::new(),
            env: Vec::new(),
            share_pid: false,
            runtime_default_seccomp: false,
            run_as: None,
            unified: Vec::new(),
        }
    }

    /// A `linux.resources.unified` entry.
    pub fn unified(mut self, key: &str, value: &str) -> Self {
        self.unified.push((key.into(), value.into()));
        self
    }

    /// `seccompProfile: {type: RuntimeDefault}`, as Kubernetes' restricted Pod Security Standard
    /// asks.
    pub fn runtime_default_seccomp(mut self) -> Self {
        self.runtime_default_seccomp = true;
        self
    }

    /// `runAsUser`/`runAsGroup`.
    pub fn run_as(mut self, id: i64) -> Self {
        self.run_as = Some(id);
        self
    }

    /// Joins the pod's shared pid namespace (the pod must share one).
    pub fn share_pid(mut self) -> Self {
        self.share_pid = true;
        self
    }

    pub fn command<I: IntoIterator<Item = S>, S: Into<String>>(mut self, c: I) -> Self {
        self.command = c.into_iter().map(Into::into).collect();
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, a: I) -> Self {
        self.args = a.into_iter().map(Into::into).collect();
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    /// The log file name inside the pod's log directory.
    pub fn log_name(&self) -> String {
        format!("{}.log", self.name)
    }

    // `seccomp_profile_path` is deprecated in the CRI API and still what containerd 1.6 reads.
    #[allow(deprecated)]
    pub fn config(&self) -> api::ContainerConfig {
        api::ContainerConfig {
            metadata: Some(api::ContainerMetadata {
                name: self.name.clone(),
                attempt: 0,
            }),
            image: Some(image_spec(&self.image)),
            command: self.command.clone(),
            args: self.args.clone(),
            envs: kv(&self.env),
            log_path: self.log_name(),
            labels: HashMap::from([("container".to_string(), self.name.clone())]),
            linux: Some(api::LinuxContainerConfig {
                resources: (!self.unified.is_empty()).then(|| api::LinuxContainerResources {
                    unified: self.unified.iter().cloned().collect(),
                    ..Default::default()
                }),
                security_context: Some(api::LinuxContainerSecurityContext {
                    namespace_options: Some(api::NamespaceOption {
                        network: api::NamespaceMode::Pod as i32,
                        pid: if self.share_pid { api::NamespaceMode::Pod } else { api::NamespaceMode::Container } as i32,
                        ipc: api::NamespaceMode::Pod as i32,
                        ..Default::default()
                    }),
                    seccomp: self.runtime_default_seccomp.then(|| api::SecurityProfile {
                        profile_type: api::security_profile::ProfileType::RuntimeDefault as i32,
                        ..Default::default()
                    }),
                    // containerd 1.6 reads the older field too.
                    seccomp_profile_path: if self.runtime_default_seccomp { "runtime/default".into() } else { String::new() },
                    run_as_user: self.run_as.map(|value| api::Int64Value { value }),
                    run_as_group: self.run_as.map(|value| api::Int64Value { value }),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }
    }
}

/// Removes the pod's cgroup parent in every hierarchy (`rmdir`, so only when empty), as the
/// kubelet does after RemovePodSandbox. Returns the directories that could not be removed.
pub fn remove_pod_cgroup(cgroup_parent: &str) -> Vec<(PathBuf, String)> {
    let rel = cgroup_parent.trim_start_matches('/');
    let root = Path::new("/sys/fs/cgroup");
    let mut dirs = vec![root.join(rel)];
    if let Ok(rd) = std::fs::read_dir(root) {
        for h in rd.flatten() {
            dirs.push(h.path().join(rel));
        }
    }
    let mut failed = Vec::new();
    for d in dirs {
        if d.is_dir() {
            if let Err(e) = std::fs::remove_dir(&d) {
                failed.push((d, e.to_string()));
            }
        }
    }
    failed
}

/// Removes every pod cgroup parent whose path starts with `/<prefix>` (this run's pods), in
/// every hierarchy; only empty ones go (`rmdir`).
pub fn remove_pod_cgroups(prefix: &str) {
    let (dir, stem) = match prefix.rsplit_once('/') {
        Some((d, s)) => (d, s),
        None => ("", prefix),
    };
    let root = Path::new("/sys/fs/cgroup");
    let mut parents = vec![root.join(dir)];
    if let Ok(rd) = std::fs::read_dir(root) {
        for h in rd.flatten() {
            parents.push(h.path().join(dir));
        }
    }
    for p in parents {
        let Ok(rd) = std::fs::read_dir(&p) else {
            continue;
        };
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with(stem) && e.path().is_dir() {
                let _ = std::fs::remove_dir(e.path());
            }
        }
    }
}

/// One record of a CRI container log: `<RFC 3339 time> <stream> <P|F> <message>`. Partial
/// records (`P`) are joined with the records that follow up to the next full one (`F`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub time: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    pub message: String,
}

/// Parses CRI log text; lines that do not follow the format are an error (they would be a bug
/// in whoever wrote the file).
pub fn parse_log(text: &str) -> Result<Vec<LogLine>> {
    let mut out: Vec<LogLine> = Vec::new();
    let mut pending: Option<LogLine> = None;
    for (n, raw) in text.lines().enumerate() {
        let mut parts = raw.splitn(4, ' ');
        let (Some(time), Some(stream), Some(tag)) = (parts.next(), parts.next(), parts.next())
        else {
            bail!("CRI log line {}: not `<time> <stream> <tag> <msg>`: {raw:?}", n + 1);
        };
        let msg = parts.next().unwrap_or("");
        if stream != "stdout" && stream != "stderr" {
            bail!("CRI log line {}: unknown stream {stream:?}: {raw:?}", n + 1);
        }
        if !time.contains('T') {
            bail!("CRI log line {}: {time:?} is not an RFC 3339 time", n + 1);
        }
        let full = match tag.split(':').next() {
            Some("F") => true,
            Some("P") => false,
            _ => bail!("CRI log line {}: tag {tag:?} is neither P nor F", n + 1),
        };
        let line = match pending.take() {
            Some(mut p) if p.stream == stream => {
                p.message.push_str(msg);
                p
            }
            Some(p) => {
                // A partial record on the other stream: keep it as is.
                out.push(p);
                LogLine {
                    time: time.into(),
                    stream: stream.into(),
                    message: msg.into(),
                }
            }
            None => LogLine {
                time: time.into(),
                stream: stream.into(),
                message: msg.into(),
            },
        };
        if full {
            out.push(line);
        } else {
            pending = Some(line);
        }
    }
    out.extend(pending);
    Ok(out)
}

/// Reads and parses the CRI log file at `path`.
pub fn read_log(path: &Path) -> Result<Vec<LogLine>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the CRI log {}", path.display()))?;
    parse_log(&text).with_context(|| format!("{}:\n{text}", path.display()))
}

/// Waits until the log file at `path` has a record on `stream` containing `needle`.
pub fn wait_log(path: &Path, stream: &str, needle: &str, timeout: Duration) -> Result<Vec<LogLine>> {
    let deadline = Instant::now() + timeout;
    loop {
        let lines = read_log(path).unwrap_or_default();
        if lines
            .iter()
            .any(|l| l.stream == stream && l.message.contains(needle))
        {
            return Ok(lines);
        }
        if Instant::now() >= deadline {
            let text = std::fs::read_to_string(path).unwrap_or_else(|e| format!("({e})"));
            bail!(
                "no {stream} record containing {needle:?} in {} within {timeout:?}; the file:\n{text}",
                path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_full_and_partial_records() {
        let text = "2024-01-01T00:00:00.000000001Z stdout F hello\n\
                    2024-01-01T00:00:00.1Z stderr P par\n\
                    2024-01-01T00:00:00.2Z stderr F tial\n\
                    2024-01-01T00:00:00.3Z stdout F \n";
        let lines = parse_log(text).unwrap();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].stream, "stdout");
        assert_eq!(lines[0].message, "hello");
        assert_eq!(lines[1].stream, "stderr");
        assert_eq!(lines[1].message, "partial");
        assert_eq!(lines[2].message, "");
    }

    #[test]
    fn message_keeps_spaces() {
        let lines = parse_log("2024-01-01T00:00:00Z stdout F two  words ").unwrap();
        assert_eq!(lines[0].message, "two  words ");
    }

    #[test]
    fn rejects_other_formats() {
        assert!(parse_log("hello\n").is_err());
        assert!(parse_log("2024-01-01T00:00:00Z stdin F x\n").is_err());
        assert!(parse_log("2024-01-01T00:00:00Z stdout X x\n").is_err());
    }

    #[test]
    fn pod_config_shares_network_not_pid() {
        let p = PodSpec {
            name: "p1".into(),
            uid: "u1".into(),
            namespace: "default".into(),
            log_dir: "/logs/p1".into(),
            cgroup_parent: "/wasmtest/pod-x-p1".into(),
            share_pid: false,
        }
        .config();
        let ns = p
            .linux
            .unwrap()
            .security_context
            .unwrap()
            .namespace_options
            .unwrap();
        assert_eq!(ns.network, api::NamespaceMode::Pod as i32);
        assert_eq!(ns.pid, api::NamespaceMode::Container as i32);
        assert_eq!(p.log_directory, "/logs/p1");
    }
}
