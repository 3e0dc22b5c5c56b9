//! Instance reuse of `wasi:http` proxies (`ServeLimits::instance_reuse` above 1): the idle
//! instances of a server, taken and given back by `proxy::handle` (whose module doc says when
//! an instance is retired).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use wasmtime::Store;
use wasmtime_wasi_http::p2::bindings::{Proxy, ProxyPre};

use crate::host::ProxyState;
use crate::metrics::{Metrics, Retired};

/// An instance and its store, between requests.
pub(super) struct Warm {
    pub(super) store: Store<ProxyState>,
    pub(super) proxy: Proxy,
    /// Requests it has served.
    pub(super) served: u32,
    /// Set when a response it gave turned out unusable (an error, never set, a body that
    /// failed), which may be known only after its handler returned.
    pub(super) spoiled: Arc<AtomicBool>,
}

/// The idle instances of a server that reuses them.
pub(crate) struct Reuse {
    /// Requests one instance serves at most.
    max: u32,
    /// Idle instances kept at most (the concurrency cap: no more can ever be busy).
    cap: usize,
    idle: Mutex<Vec<Warm>>,
    closed: AtomicBool,
    metrics: Option<Arc<Metrics>>,
}

impl Reuse {
    /// `None` when each request gets a fresh instance (`max` of 1).
    pub(crate) fn new(max: u32, cap: u32, metrics: Option<Arc<Metrics>>) -> Option<Arc<Reuse>> {
        (max > 1).then(|| {
            Arc::new(Reuse {
                max,
                cap: cap.max(1) as usize,
                idle: Mutex::new(Vec::new()),
                closed: AtomicBool::new(false),
                metrics,
            })
        })
    }

    pub(super) fn retired(&self, why: Retired) {
        if let Some(m) = &self.metrics {
            m.retired(why);
        }
    }

    /// An idle instance of `pre`'s code, if there is one.
    pub(super) fn take(&self, pre: &ProxyPre<ProxyState>) -> Option<Warm> {
        let mut dropped = Vec::new();
        let found = {
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            loop {
                match idle.pop() {
                    None => break None,
                    // The code was upgraded since: the new code's instances from now on.
                    Some(w) if !wasmtime::Engine::same(w.store.engine(), pre.engine()) => dropped.push(w),
                    Some(w) if w.spoiled.load(Ordering::Acquire) => {
                        self.retired(Retired::Body);
                        dropped.push(w);
                    }
                    Some(w) => break Some(w),
                }
            }
        };
        // Freeing an instance's memory is not done under the lock.
        drop(dropped);
        found
    }

    /// `w` served a request whose handler returned normally: keep it, or retire it.
    pub(super) fn give_back(&self, mut w: Warm) {
        let why = if w.served >= self.max {
            Some(Retired::Served)
        } else if w.spoiled.load(Ordering::Acquire) {
            Some(Retired::Body)
        } else if w.store.data_mut().holds_request_resources() {
            Some(Retired::KeptRequest)
        } else {
            None
        };
        if let Some(why) = why {
            self.retired(why);
            return;
        }
        if self.closed.load(Ordering::Acquire) {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < self.cap {
            idle.push(w);
        }
    }

    /// The server drains: idle instances are dropped, and none is kept from now on.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let idle = std::mem::take(&mut *self.idle.lock().unwrap_or_else(PoisonError::into_inner));
        drop(idle);
    }
}

