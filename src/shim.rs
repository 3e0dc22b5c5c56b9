//! The shim process itself: the `start` action (spawn the long-lived shim, hand its socket
//! address back), the `delete` action (clean up after a shim that died), and the glue that
//! serves the Task service until Shutdown.

use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use containerd_shim::api::DeleteResponse;
use containerd_shim::protos::protobuf::MessageField;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::util::write_address;
use containerd_shim::{spawn, Config, ExitSignal, Flags, StartOpts};
use log::warn;
use wasm_shim_container::process;

use crate::container::{cgroup_for, CGROUP_TAKEN_FILE, INIT_PID_FILE, INIT_START_FILE};
use crate::task::now;
use crate::events::Events;
use crate::service::Service;

/// The `start` action, answered the way containerd 1.6, 1.7 and 2.x all read: the plain
/// socket address of the (new or already running) shim server on stdout. The crate's own
/// `start` answers in a JSON form that containerd 1.6 cannot parse.
pub fn start_action(flags: &Flags) -> containerd_shim::Result<()> {
    use std::io::{Read, Write};
    // Runtime options arrive on stdin; nothing in them applies to wasm tasks.
    let mut ignored = Vec::new();
    let _ = std::io::stdin().take(1 << 20).read_to_end(&mut ignored);
    let mut address = flags.address.clone();
    if address.is_empty() {
        address = std::env::var("GRPC_ADDRESS").unwrap_or_default();
    }
    let opts = StartOpts {
        id: flags.id.clone(),
        publish_binary: flags.publish_binary.clone(),
        address,
        ttrpc_address: std::env::var("TTRPC_ADDRESS").unwrap_or_default(),
        namespace: flags.namespace.clone(),
        debug: flags.debug,
        ..Default::default()
    };
    let grouping = grouping_id(&opts.id);
    let (_pid, socket) = spawn(opts, &grouping, Vec::new())?;
    write_address(&socket)?;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(socket.as_bytes());
    let _ = out.flush();
    Ok(())
}

/// The CRI's annotation naming the pod (sandbox) a container belongs to.
pub const SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";

/// Which shim process serves a container: all containers of a pod share the one started for
/// its sandbox (same socket address, derived from the sandbox id); any other container gets its
/// own. containerd runs the `start` action in the bundle directory.
fn grouping_id(id: &str) -> String {
    let bundle = std::env::current_dir().unwrap_or_default();
    wasm_shim_oci::load_spec(&bundle)
        .ok()
        .and_then(|spec| spec.annotations().as_ref().and_then(|a| a.get(SANDBOX_ID).cloned()))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| id.to_string())
}

/// The socket of a shim server that is gone (killed, crashed): it unlinks its socket only when it
/// exits normally, and containerd does not. Read from the bundle's `address` file (the `start`
/// action wrote it); left alone while a server still answers on it (the shim of a pod serving
/// its other containers).
fn remove_dead_socket(bundle: &Path) {
    let Ok(address) = std::fs::read_to_string(bundle.join("address")) else { return };
    let address = address.trim();
    let path = Path::new(address.strip_prefix("unix://").unwrap_or(address));
    let is_socket = std::fs::symlink_metadata(path).map(|m| m.file_type().is_socket()).unwrap_or(false);
    if !is_socket || UnixStream::connect(path).is_ok() {
        return;
    }
    if let Err(e) = std::fs::remove_file(path) {
        warn!("remove the dead shim's socket {}: {e}", path.display());
    }
}

pub struct WasmShim {
    namespace: String,
    id: String,
    bundle: PathBuf,
    exit: Arc<ExitSignal>,
}

impl containerd_shim::Shim for WasmShim {
    type T = Service;

    fn new(_runtime_id: &str, args: &Flags, _config: &mut Config) -> Self {
        let bundle = if args.bundle.is_empty() {
            std::env::current_dir().unwrap_or_default()
        } else {
            PathBuf::from(&args.bundle)
        };
        WasmShim { namespace: args.namespace.clone(), id: args.id.clone(), bundle, exit: Arc::new(ExitSignal::default()) }
    }

    /// Only reached through containerd 2.3's bootstrap protocol; `start_action` handles the
    /// classic one.
    fn start_shim(&mut self, opts: StartOpts) -> containerd_shim::Result<String> {
        let grouping = grouping_id(&opts.id);
        let (_pid, address) = spawn(opts, &grouping, Vec::new())?;
        write_address(&address)?;
        Ok(address)
    }

    /// containerd calls this when the shim is gone (crashed, killed) to clean up the bundle's
    /// container: kill what is left of it, drop its cgroup, unmount its rootfs.
    fn delete_shim(&mut self) -> containerd_shim::Result<DeleteResponse> {
        let pid_file = self.bundle.join(INIT_PID_FILE);
        let pid: i32 = std::fs::read_to_string(&pid_file).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
        // Only a cgroup this container's Create took: one it was refused (another container's)
        // is left alone with what runs in it. A recorded init means it was taken too (and is
        // all a bundle of an older shim has).
        let taken = self.bundle.join(CGROUP_TAKEN_FILE).exists() || pid > 0;
        if let Some(spec) = wasm_shim_oci::load_spec(&self.bundle).ok().filter(|_| taken) {
            if let Ok(cg) = cgroup_for(&spec, &self.namespace, &self.id) {
                for p in cg.procs().unwrap_or_default() {
                    let _ = process::kill(p, libc::SIGKILL);
                }
                let _ = cg.thaw();
                // containerd gives this whole action 5 s (its shim cleanup timeout).
                let deadline = Instant::now() + Duration::from_secs(3);
                while !cg.procs().unwrap_or_default().is_empty() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
                if let Err(e) = cg.destroy() {
                    warn!("delete {}: {e}", self.id);
                }
            }
        }
        // The recorded pid may be long gone and reused by now: signal it only through a pidfd
        // (it then cannot change under us) of the process recorded, known by its start time.
        if pid > 0 {
            if let Ok(fd) = process::PidFd::open(pid) {
                let recorded = std::fs::read_to_string(self.bundle.join(INIT_START_FILE)).ok().and_then(|s| s.trim().parse().ok());
                if is_recorded_init(recorded, process::start_time(pid).ok()) {
                    let _ = fd.send_signal(libc::SIGKILL);
                }
            }
        }
        // A native container: runc's record of it (and its cgroup) go too.
        if let Ok(runc) = crate::native::Runc::new(&self.namespace, &self.id, &self.bundle) {
            if runc.exists() {
                if let Err(e) = runc.delete() {
                    warn!("delete {}: {e}", self.id);
                }
            }
        }
        let rootfs = self.bundle.join("rootfs");
        let _ = wasm_shim_container::rootfs::unmount_all(&rootfs);
        let _ = std::fs::remove_file(&pid_file);
        let _ = std::fs::remove_file(self.bundle.join(INIT_START_FILE));
        let _ = std::fs::remove_file(self.bundle.join(CGROUP_TAKEN_FILE));
        remove_dead_socket(&self.bundle);
        Ok(DeleteResponse {
            pid: pid.max(0) as u32,
            exit_status: 128 + libc::SIGKILL as u32,
            exited_at: MessageField::some(now()),
            ..Default::default()
        })
    }

    fn wait(&mut self) {
        self.exit.wait();
        crate::traces::shim_shutdown();
    }

    fn create_task_service(&self, _publisher: RemotePublisher) -> Self::T {
        let events = Events::start(std::env::var("TTRPC_ADDRESS").unwrap_or_default(), self.namespace.clone());
        Service::new(self.namespace.clone(), std::env::var("GRPC_ADDRESS").unwrap_or_default(), events, self.exit.clone())
    }
}

/// Whether the process a pidfd holds is the init Create recorded: the same start time (a
/// process that reused the pid started later). Without a record, nothing is signalled.
fn is_recorded_init(recorded: Option<u64>, now: Option<u64>) -> bool {
    matches!((recorded, now), (Some(a), Some(b)) if a == b)
}

#[cfg(test)]
mod delete_tests {
    use super::*;

    #[test]
    fn only_the_recorded_process_is_signalled() {
        assert!(is_recorded_init(Some(987654), Some(987654)));
        // The pid was reused by a later process.
        assert!(!is_recorded_init(Some(987654), Some(1_000_000)));
        // No record (an older shim, a failed write), or the process is gone.
        assert!(!is_recorded_init(None, Some(987654)));
        assert!(!is_recorded_init(Some(987654), None));
    }
}
