//! The ttrpc Task service containerd talks to: one per shim process, holding its containers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use containerd_shim::api::*;
use containerd_shim::protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskIO, TaskPaused, TaskResumed, TaskStart,
};
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::MessageField;
use containerd_shim::protos::ttrpc;
use containerd_shim::{ExitSignal, Task, TtrpcContext};
use log::{debug, info, warn};

use crate::container::Container;
use crate::creating::Creating;
use crate::errors::{Result, ShimError};
use crate::events::Events;
use crate::exec::ExecProcess;
use crate::stats;
use crate::task::Status as TaskStatus;

pub struct Service {
    namespace: String,
    /// containerd's GRPC address, for reading wasm artifacts from its content store.
    address: String,
    events: Events,
    exit: Arc<ExitSignal>,
    containers: Mutex<HashMap<String, Arc<Container>>>,
    /// Creates in progress: a Delete of their id cancels them, Shutdown waits for them.
    creating: Mutex<HashMap<String, Arc<Creating>>>,
}

/// How long a Delete waits for a cancelled Create to undo its steps (containerd gives a
/// Delete after a failed Create 5 s).
const CANCEL_WAIT: std::time::Duration = std::time::Duration::from_secs(4);

type TResult<T> = ttrpc::Result<T>;

fn status_of(s: TaskStatus) -> Status {
    match s {
        TaskStatus::Created => Status::CREATED,
        TaskStatus::Running => Status::RUNNING,
        TaskStatus::Paused => Status::PAUSED,
        TaskStatus::Stopped => Status::STOPPED,
    }
}


impl Service {
    pub fn new(namespace: String, address: String, events: Events, exit: Arc<ExitSignal>) -> Service {
        Service { namespace, address, events, exit, containers: Mutex::new(HashMap::new()), creating: Mutex::new(HashMap::new()) }
    }

    /// This thread's log lines are about container `id` (with its pod once it is known).
    fn log_as(&self, id: &str) -> crate::logging::Entered {
        let ctx = self.containers.lock().unwrap().get(id).map(|c| c.log.clone());
        crate::logging::enter(ctx.unwrap_or_else(|| crate::logging::Context::id(id)))
    }

    fn get(&self, id: &str) -> Result<Arc<Container>> {
        self.containers
            .lock()
            .unwrap()
            .get(id)
            .cloned()
            .ok_or_else(|| ShimError::not_found(format!("container {id} not found")))
    }

    fn do_create(&self, req: &CreateTaskRequest, caller: &crate::traces::Caller) -> Result<CreateTaskResponse> {
        let pending = {
            let containers = self.containers.lock().unwrap();
            let mut creating = self.creating.lock().unwrap();
            if containers.contains_key(&req.id) || creating.contains_key(&req.id) {
                return Err(ShimError::precondition(format!("container {} already exists", req.id)));
            }
            let pending = Arc::new(Creating::default());
            creating.insert(req.id.clone(), pending.clone());
            pending
        };
        let created = Container::create(req, &self.namespace, &self.address, &self.events, &pending, caller);
        {
            // Known as a container before it stops being a Create: a Delete finds one or the other.
            let mut containers = self.containers.lock().unwrap();
            if let Ok(c) = &created {
                containers.insert(req.id.clone(), c.clone());
            }
            self.creating.lock().unwrap().remove(&req.id);
        }
        pending.finish();
        let c = created?;
        self.events.send(TaskCreate {
            container_id: req.id.clone(),
            bundle: req.bundle.clone(),
            rootfs: req.rootfs.clone(),
            io: MessageField::some(TaskIO {
                stdin: req.stdin.clone(),
                stdout: req.stdout.clone(),
                stderr: req.stderr.clone(),
                terminal: req.terminal,
                ..Default::default()
            }),
            checkpoint: req.checkpoint.clone(),
            pid: c.pid,
            ..Default::default()
        });
        debug!("created, pid {}", c.pid);
        Ok(CreateTaskResponse { pid: c.pid, ..Default::default() })
    }

    fn do_delete(&self, req: &DeleteRequest) -> Result<DeleteResponse> {
        let pending = self.creating.lock().unwrap().get(&req.id).cloned();
        if let (Some(pending), true) = (pending, req.exec_id.is_empty()) {
            // containerd gave up on the Create (its caller's context ended) and cleans up.
            info!("delete while being created: cancelling the create");
            if !pending.cancel(CANCEL_WAIT) {
                warn!("the cancelled create has not finished undoing after {CANCEL_WAIT:?}");
            }
            if self.get(&req.id).is_err() {
                return Ok(DeleteResponse {
                    exit_status: 128 + libc::SIGKILL as u32,
                    exited_at: MessageField::some(crate::task::now()),
                    ..Default::default()
                });
            }
            // It completed just before the mark: an ordinary delete of a created task.
        }
        let c = self.get(&req.id)?;
        if !req.exec_id.is_empty() {
            let e = c.exec(&req.exec_id)?;
            let exit = e.delete()?;
            c.native()?.execs.lock().unwrap().remove(&req.exec_id);
            let pid = e.status().1;
            return Ok(DeleteResponse { pid, exit_status: exit.status, exited_at: MessageField::some(exit.at), ..Default::default() });
        }
        let exit = c.delete()?;
        self.containers.lock().unwrap().remove(&req.id);
        self.events.send(TaskDelete {
            container_id: req.id.clone(),
            pid: c.pid,
            exit_status: exit.status,
            exited_at: MessageField::some(exit.at.clone()),
            ..Default::default()
        });
        Ok(DeleteResponse { pid: c.pid, exit_status: exit.status, exited_at: MessageField::some(exit.at), ..Default::default() })
    }

    fn do_update(&self, req: &UpdateTaskRequest) -> Result<()> {
        let c = self.get(&req.id)?;
        let any = req.resources.as_ref().ok_or_else(|| ShimError::invalid("update: no resources given"))?;
        c.update(&any.value)
    }
}

impl Task for Service {
    fn create(&self, ctx: &TtrpcContext, req: CreateTaskRequest) -> TResult<CreateTaskResponse> {
        let _log = self.log_as(&req.id);
        self.do_create(&req, &crate::traces::Caller::of(&ctx.metadata)).map_err(|e| {
            info!("create failed: {e}");
            e.into()
        })
    }

    fn start(&self, _ctx: &TtrpcContext, req: StartRequest) -> TResult<StartResponse> {
        let _log = self.log_as(&req.id);
        let c = self.get(&req.id)?;
        let events = self.events.clone();
        if !req.exec_id.is_empty() {
            let e = c.exec(&req.exec_id)?;
            if c.status().0 != TaskStatus::Running {
                return Err(ShimError::precondition(format!("{}: cannot exec in a task that is {:?}", req.id, c.status().0)).into());
            }
            let pid = e.start(&c.native()?.runc, &c.bundle, &self.events, |pid| {
                events.send(TaskExecStarted { container_id: req.id.clone(), exec_id: req.exec_id.clone(), pid, ..Default::default() })
            })?;
            return Ok(StartResponse { pid, ..Default::default() });
        }
        let pid = c.start(|| events.send(TaskStart { container_id: req.id.clone(), pid: c.pid, ..Default::default() }))?;
        // Create and Start allocated and freed the spec, the bundle's files and the init's
        // answers; the shim now idles for the task's life, so the freed pages go back.
        wasm_shim_container::process::release_free_memory();
        Ok(StartResponse { pid, ..Default::default() })
    }

    fn state(&self, _ctx: &TtrpcContext, req: StateRequest) -> TResult<StateResponse> {
        let c = self.get(&req.id)?;
        if !req.exec_id.is_empty() {
            let e = c.exec(&req.exec_id)?;
            let (status, pid, exit) = e.status();
            let mut resp = StateResponse {
                id: e.id.clone(),
                exec_id: e.id.clone(),
                bundle: c.bundle.display().to_string(),
                pid,
                status: status_of(status).into(),
                stdin: e.stdin.clone(),
                stdout: e.stdout.clone(),
                stderr: e.stderr.clone(),
                ..Default::default()
            };
            if let Some(x) = exit {
                resp.exit_status = x.status;
                resp.exited_at = MessageField::some(x.at);
            }
            return Ok(resp);
        }
        let (status, exit) = c.status();
        let mut resp = StateResponse {
            id: c.id.clone(),
            bundle: c.bundle.display().to_string(),
            pid: c.pid,
            status: status_of(status).into(),
            stdin: c.stdin.clone(),
            stdout: c.stdout.clone(),
            stderr: c.stderr.clone(),
            ..Default::default()
        };
        if let Some(e) = exit {
            resp.exit_status = e.status;
            resp.exited_at = MessageField::some(e.at);
        }
        Ok(resp)
    }

    fn wait(&self, _ctx: &TtrpcContext, req: WaitRequest) -> TResult<WaitResponse> {
        let c = self.get(&req.id)?;
        let e = if req.exec_id.is_empty() { c.wait() } else { c.exec(&req.exec_id)?.wait() };
        Ok(WaitResponse { exit_status: e.status, exited_at: MessageField::some(e.at), ..Default::default() })
    }

    fn kill(&self, _ctx: &TtrpcContext, req: KillRequest) -> TResult<Empty> {
        let _log = self.log_as(&req.id);
        let c = self.get(&req.id)?;
        if req.exec_id.is_empty() {
            c.kill(req.signal, req.all)?;
        } else {
            c.exec(&req.exec_id)?.kill(req.signal)?;
        }
        Ok(Empty::new())
    }

    fn delete(&self, _ctx: &TtrpcContext, req: DeleteRequest) -> TResult<DeleteResponse> {
        let _log = self.log_as(&req.id);
        Ok(self.do_delete(&req)?)
    }

    fn pids(&self, _ctx: &TtrpcContext, req: PidsRequest) -> TResult<PidsResponse> {
        let c = self.get(&req.id)?;
        let mut pids: Vec<u32> = c.cgroup.procs().map(|v| v.into_iter().map(|p| p as u32).collect()).unwrap_or_default();
        if pids.is_empty() {
            // A task that exited and is not deleted yet has no process, and says so as runc's
            // shim does: with an error, not an empty list. containerd 2.x, restarting, takes a
            // shim whose Pids is empty for a leaked one and deletes it, and with it the exit
            // status of a task that ended while containerd was away.
            if c.status().0 == TaskStatus::Stopped {
                return Err(ShimError::precondition(format!("{}: the task has exited; it has no processes", req.id)).into());
            }
            pids.push(c.pid);
        }
        let processes = pids
            .into_iter()
            .map(|pid| containerd_shim::protos::api::ProcessInfo { pid, ..Default::default() })
            .collect();
        Ok(PidsResponse { processes, ..Default::default() })
    }

    fn stats(&self, _ctx: &TtrpcContext, req: StatsRequest) -> TResult<StatsResponse> {
        let c = self.get(&req.id)?;
        let cg = &c.cgroup;
        let s = cg.stats().map_err(ShimError::from)?;
        let any: Any = stats::to_any(cg.version(), &s).map_err(ShimError::internal)?;
        Ok(StatsResponse { stats: MessageField::some(any), ..Default::default() })
    }

    fn pause(&self, _ctx: &TtrpcContext, req: PauseRequest) -> TResult<Empty> {
        let _log = self.log_as(&req.id);
        self.get(&req.id)?.pause()?;
        self.events.send(TaskPaused { container_id: req.id.clone(), ..Default::default() });
        Ok(Empty::new())
    }

    fn resume(&self, _ctx: &TtrpcContext, req: ResumeRequest) -> TResult<Empty> {
        let _log = self.log_as(&req.id);
        self.get(&req.id)?.resume()?;
        self.events.send(TaskResumed { container_id: req.id.clone(), ..Default::default() });
        Ok(Empty::new())
    }

    fn update(&self, _ctx: &TtrpcContext, req: UpdateTaskRequest) -> TResult<Empty> {
        let _log = self.log_as(&req.id);
        self.do_update(&req)?;
        Ok(Empty::new())
    }

    fn connect(&self, _ctx: &TtrpcContext, req: ConnectRequest) -> TResult<ConnectResponse> {
        let task_pid = self.get(&req.id).map(|c| c.pid).unwrap_or(0);
        Ok(ConnectResponse { shim_pid: std::process::id(), task_pid, version: env!("CARGO_PKG_VERSION").to_string(), ..Default::default() })
    }

    fn shutdown(&self, _ctx: &TtrpcContext, _req: ShutdownRequest) -> TResult<Empty> {
        let containers = self.containers.lock().unwrap();
        let creating: Vec<String> = self.creating.lock().unwrap().keys().cloned().collect();
        if !creating.is_empty() {
            // Exiting now would leave their init, cgroup and mounts behind.
            info!("shutdown ignored: still creating {creating:?}");
            return Ok(Empty::new());
        }
        // A container whose bundle containerd has already removed is gone for containerd (its
        // Delete failed or raced with a cleanup): it must not keep this shim alive forever.
        let live: Vec<&String> = containers.iter().filter(|(_, c)| c.bundle.exists()).map(|(id, _)| id).collect();
        if live.is_empty() {
            if !containers.is_empty() {
                warn!("shutdown with containers whose bundles are gone: {:?}", containers.keys().collect::<Vec<_>>());
            }
            self.exit.signal();
        } else {
            info!("shutdown ignored: still serving {live:?}");
        }
        Ok(Empty::new())
    }

    fn exec(&self, _ctx: &TtrpcContext, req: ExecProcessRequest) -> TResult<Empty> {
        let _log = self.log_as(&req.id);
        let c = self.get(&req.id)?;
        let native = c.native()?;
        if c.status().0 != TaskStatus::Running {
            return Err(ShimError::precondition(format!("{}: cannot exec in a task that is {:?}", req.id, c.status().0)).into());
        }
        let e = ExecProcess::new(&req, &self.namespace)?;
        {
            let mut execs = native.execs.lock().unwrap();
            if execs.contains_key(&req.exec_id) {
                return Err(ShimError::new(crate::errors::ErrorKind::FailedPrecondition, format!("{}: exec {} already exists", req.id, req.exec_id)).into());
            }
            execs.insert(req.exec_id.clone(), e);
        }
        self.events.send(TaskExecAdded { container_id: req.id.clone(), exec_id: req.exec_id.clone(), ..Default::default() });
        Ok(Empty::new())
    }

    fn resize_pty(&self, _ctx: &TtrpcContext, req: ResizePtyRequest) -> TResult<Empty> {
        let _log = self.log_as(&req.id);
        let c = self.get(&req.id)?;
        if req.exec_id.is_empty() {
            c.resize(req.height, req.width)?;
        } else {
            c.exec(&req.exec_id)?.resize(req.height, req.width)?;
        }
        Ok(Empty::new())
    }

    fn close_io(&self, _ctx: &TtrpcContext, req: CloseIORequest) -> TResult<Empty> {
        let _log = self.log_as(&req.id);
        let c = self.get(&req.id)?;
        if req.stdin {
            if req.exec_id.is_empty() {
                c.close_stdin();
            } else {
                c.exec(&req.exec_id)?.close_stdin();
            }
        }
        Ok(Empty::new())
    }

    fn checkpoint(&self, _ctx: &TtrpcContext, req: CheckpointTaskRequest) -> TResult<Empty> {
        let _log = self.log_as(&req.id);
        Err(ShimError::unimplemented(format!("{}: checkpoint is not supported by this runtime", req.id)).into())
    }
}
