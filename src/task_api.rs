//! Serving the Task API on the socket containerd chose, under both service names containerd
//! uses: `containerd.task.v2.Task` (containerd 1.6, 1.7) and `containerd.task.v3.Task` (2.x).

use std::os::fd::IntoRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use containerd_shim::protos::shim::shim_ttrpc::create_task;
use containerd_shim::protos::ttrpc::Server;
use containerd_shim::{ExitSignal, Flags, Task};
use log::{debug, warn};
use wasm_shim_container::process;

use crate::events::Events;
use crate::service::Service;

fn socket_path(address: &str) -> &str {
    address.strip_prefix("unix://").unwrap_or(address)
}

fn listen(path: &str) -> Result<Option<UnixListener>> {
    if let Some(parent) = Path::new(path).parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
    }
    match UnixListener::bind(path) {
        Ok(l) => Ok(Some(l)),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            if UnixStream::connect(path).is_ok() {
                // Another shim already serves this address.
                return Ok(None);
            }
            std::fs::remove_file(path).with_context(|| format!("remove stale socket {path}"))?;
            Ok(Some(UnixListener::bind(path).with_context(|| format!("listen on {path}"))?))
        }
        Err(e) => Err(e).with_context(|| format!("listen on {path}")),
    }
}

pub fn serve(flags: &Flags) -> Result<()> {
    if flags.socket.is_empty() {
        anyhow::bail!("-socket is required (this binary is started by containerd)");
    }
    process::single_malloc_arena();
    process::set_child_subreaper().context("set child subreaper")?;
    process::ignore_signal(libc::SIGPIPE).context("ignore SIGPIPE")?;
    // containerd reads the bundle's `log` FIFO (opened before it started us) into its own log.
    let log = std::fs::OpenOptions::new().write(true).open("log").context("open the log FIFO")?;
    crate::logging::init_fifo(log, crate::logging::level(flags.debug), None);

    let path = socket_path(&flags.socket).to_string();
    let Some(listener) = listen(&path)? else {
        process::stdout_to_stderr()?;
        return Ok(());
    };
    let ttrpc_address = std::env::var("TTRPC_ADDRESS").context("TTRPC_ADDRESS is not set")?;
    let exit = Arc::new(ExitSignal::default());
    let events = Events::start(ttrpc_address, flags.namespace.clone());
    let service: Arc<dyn Task + Send + Sync> = Arc::new(Service::new(flags.namespace.clone(), flags.address.clone(), events, exit.clone()));

    let mut methods = create_task(service.clone());
    for (name, handler) in create_task(service) {
        methods.insert(name.replace("/containerd.task.v3.Task/", "/containerd.task.v2.Task/"), handler);
    }
    // Idle request workers per connection: 1 to 3 (ttrpc's default keeps up to 5). A blocked
    // request (Wait, for a task's life) does not count: the pool grows past it as needed.
    let mut server = Server::new()
        .set_thread_count_min(1)
        .set_thread_count_default(2)
        .set_thread_count_max(3)
        .add_listener(listener.into_raw_fd())?
        .register_service(methods);
    server.start()?;
    process::stdout_to_stderr()?;
    debug!("serving on {path}");

    exit.wait();
    server.shutdown();
    // The last task spans (an exit), within a bound.
    crate::traces::shim_shutdown();
    if let Err(e) = std::fs::remove_file(&path) {
        warn!("remove {path}: {e}");
    }
    Ok(())
}
