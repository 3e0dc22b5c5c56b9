//! Publishing task events to containerd from one thread, in the order they were queued, so a
//! slow containerd never blocks a request handler and `/tasks/exit` never overtakes
//! `/tasks/start`.
//!
//! An event is encoded when it is queued, with its protobuf type name spelled out
//! ([`TaskEvent::TYPE`]) rather than read from the generated descriptor as
//! `containerd_shim`'s `RemotePublisher` does: the first reflective lookup builds the
//! descriptors of the whole proto file and of its imports (`descriptor.proto` among them),
//! about 500 KiB of heap that a shim would then hold for its pod's whole life, a quarter of
//! what a running task costs.

use std::sync::mpsc::{channel, Sender};
use std::time::{Duration, Instant};

use containerd_shim::event::Event;
use containerd_shim::protos::events::task;
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::Message;
use containerd_shim::protos::shim::event::Envelope;
use containerd_shim::protos::shim::events::ForwardRequest;
use containerd_shim::protos::ttrpc::context::Context;
use containerd_shim::protos::{Client, EventsClient};
use log::warn;

/// A task event and the protobuf type name containerd decodes it by (its `Any`'s type URL).
pub trait TaskEvent: Event + Message {
    const TYPE: &'static str;
}

macro_rules! task_events {
    ($($name:ident),*) => {
        $(impl TaskEvent for task::$name {
            const TYPE: &'static str = concat!("containerd.events.", stringify!($name));
        })*
    };
}
task_events!(TaskCreate, TaskStart, TaskDelete, TaskExit, TaskOOM, TaskExecAdded, TaskExecStarted, TaskPaused, TaskResumed);

/// An event as queued: its topic and its encoded body.
struct Queued {
    topic: String,
    event: Any,
}

/// How long one event is retried while containerd is away (restarting) before it is dropped.
const RETRY_FOR: Duration = Duration::from_secs(60);

fn connect(address: &str) -> Result<EventsClient, String> {
    let fd = containerd_shim::util::connect(address).map_err(|e| e.to_string())?;
    Ok(EventsClient::new(Client::new(fd).map_err(|e| e.to_string())?))
}

fn forward(client: &EventsClient, namespace: &str, ev: &Queued) -> Result<(), String> {
    let envelope = Envelope {
        timestamp: Some(containerd_shim::util::timestamp().map_err(|e| e.to_string())?).into(),
        namespace: namespace.to_string(),
        topic: ev.topic.clone(),
        event: Some(ev.event.clone()).into(),
        ..Default::default()
    };
    let req = ForwardRequest { envelope: Some(envelope).into(), ..Default::default() };
    client.forward(Context::default(), &req).map(drop).map_err(|e| e.to_string())
}

#[derive(Clone)]
pub struct Events {
    tx: Sender<Queued>,
}

impl Events {
    /// Publishes to containerd's ttrpc `address`, reconnecting when containerd restarts: the
    /// connection breaks then, and an event (a task's exit above all) is retried until the new
    /// containerd takes it.
    pub fn start(address: String, namespace: String) -> Events {
        let (tx, rx) = channel::<Queued>();
        std::thread::Builder::new()
            .name("events".into())
            .spawn(move || {
                let mut client: Option<EventsClient> = None;
                for ev in rx {
                    let deadline = Instant::now() + RETRY_FOR;
                    let mut delay = Duration::from_millis(50);
                    let mut failures = 0;
                    let topic = &ev.topic;
                    loop {
                        if client.is_none() {
                            client = connect(&address).ok();
                        }
                        let result = match &client {
                            Some(c) => forward(c, &namespace, &ev),
                            None => Err(format!("cannot connect to {address}")),
                        };
                        match result {
                            Ok(()) => {
                                if failures > 0 {
                                    log::info!("published {topic} after {failures} failed attempts");
                                }
                                break;
                            }
                            Err(e) => {
                                client = None;
                                failures += 1;
                                if failures == 1 {
                                    warn!("publish {topic}: {e}; retrying");
                                }
                                if Instant::now() >= deadline {
                                    warn!("publish {topic}: giving up after {RETRY_FOR:?}: {e}");
                                    break;
                                }
                                std::thread::sleep(delay);
                                delay = (delay * 2).min(Duration::from_secs(2));
                            }
                        }
                    }
                }
            })
            .expect("spawn events thread");
        Events { tx }
    }

    /// `/tasks/exit` of the init (`id` = `container_id`) or an exec process, as recorded.
    pub fn exit(&self, container_id: &str, id: &str, pid: u32, exit: &crate::task::Exit) {
        self.send(task::TaskExit {
            container_id: container_id.to_string(),
            id: id.to_string(),
            pid,
            exit_status: exit.status,
            exited_at: Some(exit.at.clone()).into(),
            ..Default::default()
        });
    }

    /// Queues an event; never blocks.
    pub fn send<E: TaskEvent>(&self, ev: E) {
        let topic = ev.topic();
        match ev.write_to_bytes() {
            Ok(value) => {
                let event = Any { type_url: E::TYPE.to_string(), value, ..Default::default() };
                let _ = self.tx.send(Queued { topic, event });
            }
            Err(e) => warn!("publish {topic}: cannot encode the event: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_shim::protos::protobuf::MessageFull;

    fn named<E: TaskEvent + MessageFull>() {
        assert_eq!(E::TYPE, E::descriptor().full_name());
    }

    #[test]
    fn event_type_names_are_the_ones_containerd_decodes() {
        named::<task::TaskCreate>();
        named::<task::TaskStart>();
        named::<task::TaskDelete>();
        named::<task::TaskExit>();
        named::<task::TaskOOM>();
        named::<task::TaskExecAdded>();
        named::<task::TaskExecStarted>();
        named::<task::TaskPaused>();
        named::<task::TaskResumed>();
    }
}
