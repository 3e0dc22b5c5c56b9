//! `ctr events` in the background, every line kept; started again whenever it ends (containerd
//! restarted by a trial).
//!
//! containerd 1.6's ctr prints one event per line: `<timestamp> <namespace> <topic> <json>`, e.g.
//! `2024-01-01 00:00:00.1 +0000 UTC wasmtest /tasks/exit {"container_id":"x",...}`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};

use crate::process::poll;
use crate::Containerd;

/// One parsed event line.
#[derive(Debug, Clone)]
pub struct Event {
    pub namespace: String,
    pub topic: String,
    /// The event body; `Null` when ctr printed something that is not JSON.
    pub body: serde_json::Value,
    pub line: String,
}

impl Event {
    /// The container the event is about (`container_id`, or `id` for container events).
    pub fn container_id(&self) -> Option<&str> {
        self.body
            .get("container_id")
            .or_else(|| self.body.get("id"))
            .and_then(|v| v.as_str())
    }

    fn parse(line: &str) -> Option<Event> {
        // The topic is the first whitespace-separated field that starts with '/'; the
        // namespace is the field before it; the JSON body is the rest.
        let mut rest = line;
        let mut prev = "";
        loop {
            let trimmed = rest.trim_start();
            let end = trimmed.find(char::is_whitespace).unwrap_or(trimmed.len());
            let field = &trimmed[..end];
            if field.is_empty() {
                return None;
            }
            rest = &trimmed[end..];
            if field.starts_with('/') {
                let body = serde_json::from_str(rest.trim()).unwrap_or(serde_json::Value::Null);
                return Some(Event {
                    namespace: prev.to_string(),
                    topic: field.to_string(),
                    body,
                    line: line.to_string(),
                });
            }
            prev = field;
        }
    }
}

pub struct EventRecorder {
    child: Arc<Mutex<Option<Child>>>,
    lines: Arc<Mutex<Vec<String>>>,
    /// How many `ctr events` were started so far.
    subscriptions: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl EventRecorder {
    /// Starts `ctr events` against `cd`, and again each time it ends until the recorder is
    /// dropped.
    pub fn start(cd: &Containerd) -> Result<EventRecorder> {
        // ctr's complaints (containerd away) go to `<dir>/ctr-events.log`.
        let errors = cd.dir.join("ctr-events.log");
        let command = {
            let probe = cd.ctr(["events"]);
            let args: Vec<std::ffi::OsString> =
                probe.get_args().map(|a| a.to_os_string()).collect();
            move || {
                let mut c = std::process::Command::new("ctr");
                let log = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&errors);
                c.args(&args)
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(log.map(Stdio::from).unwrap_or_else(|_| Stdio::null()));
                c
            }
        };
        let first = command().spawn().context("cannot start ctr events")?;
        let rec = EventRecorder {
            child: Arc::new(Mutex::new(Some(first))),
            lines: Arc::new(Mutex::new(Vec::new())),
            subscriptions: Arc::new(AtomicUsize::new(1)),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let (child, sink, subscriptions, stop) = (
            rec.child.clone(),
            rec.lines.clone(),
            rec.subscriptions.clone(),
            rec.stop.clone(),
        );
        std::thread::spawn(move || loop {
            let stdout = child.lock().unwrap().as_mut().and_then(|c| c.stdout.take());
            if let Some(stdout) = stdout {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    sink.lock().unwrap().push(line);
                }
            }
            if let Some(mut c) = child.lock().unwrap().take() {
                let _ = c.kill();
                let _ = c.wait();
            }
            // containerd went away: subscribe again once it answers.
            std::thread::sleep(Duration::from_millis(50));
            let mut slot = child.lock().unwrap();
            if stop.load(Ordering::SeqCst) {
                break;
            }
            if let Ok(c) = command().spawn() {
                *slot = Some(c);
                subscriptions.fetch_add(1, Ordering::SeqCst);
            }
        });
        // Subscribing is not instant; give it a moment so the first test's events are seen.
        std::thread::sleep(Duration::from_millis(300));
        Ok(rec)
    }

    /// How many times `ctr events` was started (1, plus one per containerd restart or so).
    pub fn subscriptions(&self) -> usize {
        self.subscriptions.load(Ordering::SeqCst)
    }

    /// Starts `ctr events` again now; for after a containerd restart. The `ctr events` started
    /// while containerd was going down may have connected to it during its shutdown, and then
    /// (ctr 1.6) stays connected to the new containerd without receiving anything.
    pub fn resubscribe(&self) -> Result<()> {
        let before = self.subscriptions();
        if let Some(c) = self.child.lock().unwrap().as_mut() {
            let _ = c.kill();
        }
        poll(Duration::from_secs(5), || {
            (self.subscriptions() > before).then_some(())
        })
        .ok_or_else(|| anyhow!("ctr events was not started again"))?;
        std::thread::sleep(Duration::from_millis(300));
        Ok(())
    }

    /// All events so far.
    pub fn events(&self) -> Vec<Event> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| Event::parse(l))
            .collect()
    }

    /// Events about container `id`, in arrival order.
    pub fn for_container(&self, id: &str) -> Vec<Event> {
        self.events()
            .into_iter()
            .filter(|e| e.container_id() == Some(id))
            .collect()
    }

    /// Topics of the events about `id`, in order.
    pub fn topics(&self, id: &str) -> Vec<String> {
        self.for_container(id)
            .into_iter()
            .map(|e| e.topic)
            .collect()
    }

    /// Waits until an event with `topic` about `id` arrives; returns it.
    pub fn wait_for(&self, id: &str, topic: &str, timeout: Duration) -> Result<Event> {
        poll(timeout, || {
            self.for_container(id)
                .into_iter()
                .find(|e| e.topic == topic)
        })
        .ok_or_else(|| {
            anyhow!(
                "no {topic} event for {id} within {timeout:?}; seen for it: {:?}",
                self.topics(id)
            )
        })
    }
}

impl Drop for EventRecorder {
    fn drop(&mut self) {
        let mut slot = self.child.lock().unwrap();
        self.stop.store(true, Ordering::SeqCst);
        if let Some(mut c) = slot.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ctr_event_lines() {
        let e = Event::parse(
            r#"2024-05-01 10:00:00.123 +0000 UTC wasmtest /tasks/exit {"container_id":"c1","id":"c1","pid":42,"exit_status":143}"#,
        )
        .unwrap();
        assert_eq!(e.namespace, "wasmtest");
        assert_eq!(e.topic, "/tasks/exit");
        assert_eq!(e.container_id(), Some("c1"));
        assert_eq!(e.body["exit_status"], 143);
        let c = Event::parse(
            r#"2024-05-01 10:00:00 +0000 UTC wasmtest /containers/delete {"id":"c2"}"#,
        )
        .unwrap();
        assert_eq!(c.container_id(), Some("c2"));
        assert!(Event::parse("garbage").is_none());
    }
}
