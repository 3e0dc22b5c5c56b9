//! Publishing task events to containerd from one thread, in the order they were queued, so a
//! slow containerd never blocks a request handler and `/tasks/exit` never overtakes
//! `/tasks/start`.

use std::sync::mpsc::{channel, Sender};
use std::time::{Duration, Instant};

use containerd_shim::event::Event;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::protos::ttrpc::context::Context;
use log::warn;

type Boxed = Box<dyn Event + Send>;
/// Makes the event again for each delivery attempt (publishing consumes it).
type Make = Box<dyn Fn() -> Boxed + Send>;

/// How long one event is retried while containerd is away (restarting) before it is dropped.
const RETRY_FOR: Duration = Duration::from_secs(60);

#[derive(Clone)]
pub struct Events {
    tx: Sender<Make>,
}

impl Events {
    /// Publishes to containerd's ttrpc `address`, reconnecting when containerd restarts: the
    /// connection breaks then, and an event (a task's exit above all) is retried until the new
    /// containerd takes it.
    pub fn start(address: String, namespace: String) -> Events {
        let (tx, rx) = channel::<Make>();
        std::thread::Builder::new()
            .name("events".into())
            .spawn(move || {
                let mut publisher: Option<RemotePublisher> = None;
                for make in rx {
                    let deadline = Instant::now() + RETRY_FOR;
                    let mut delay = Duration::from_millis(50);
                    let mut failures = 0;
                    loop {
                        let ev = make();
                        let topic = ev.topic();
                        if publisher.is_none() {
                            publisher = RemotePublisher::new(&address).ok();
                        }
                        let result = match &publisher {
                            Some(p) => p.publish(Context::default(), &topic, &namespace, ev).map_err(|e| e.to_string()),
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
                                publisher = None;
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
        self.send(containerd_shim::protos::events::task::TaskExit {
            container_id: container_id.to_string(),
            id: id.to_string(),
            pid,
            exit_status: exit.status,
            exited_at: Some(exit.at.clone()).into(),
            ..Default::default()
        });
    }

    /// Queues an event; never blocks.
    pub fn send<E: Event + Clone + Send + 'static>(&self, ev: E) {
        let _ = self.tx.send(Box::new(move || Box::new(ev.clone()) as Boxed));
    }
}
