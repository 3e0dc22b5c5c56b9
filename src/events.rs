//! Publishing task events to containerd from one thread, in the order they were queued, so a
//! slow containerd never blocks a request handler and `/tasks/exit` never overtakes
//! `/tasks/start`.

use std::sync::mpsc::{channel, Sender};

use containerd_shim::event::Event;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::protos::ttrpc::context::Context;
use log::warn;

type Boxed = Box<dyn Event + Send>;

#[derive(Clone)]
pub struct Events {
    tx: Sender<Boxed>,
}

impl Events {
    pub fn start(publisher: RemotePublisher, namespace: String) -> Events {
        let (tx, rx) = channel::<Boxed>();
        std::thread::Builder::new()
            .name("events".into())
            .spawn(move || {
                for ev in rx {
                    let topic = ev.topic();
                    if let Err(e) = publisher.publish(Context::default(), &topic, &namespace, ev) {
                        warn!("publish {topic}: {e}");
                    }
                }
            })
            .expect("spawn events thread");
        Events { tx }
    }

    /// Queues an event; never blocks.
    pub fn send<E: Event + Send + 'static>(&self, ev: E) {
        let _ = self.tx.send(Box::new(ev));
    }

    /// A sink for tests: events are dropped.
    #[cfg(test)]
    pub fn discard() -> Events {
        let (tx, rx) = channel::<Boxed>();
        std::thread::spawn(move || for _ in rx {});
        Events { tx }
    }
}
