//! The shim's own log lines, on containerd's log: logfmt records such as
//!
//! ```text
//! time="2026-11-30T06:00:00Z" level=warning id="c1" pod="default/web-7d9" container="app" msg="…"
//! ```
//!
//! Formatting is the containerd-shim crate's `FifoLogger` (one write per record, every value
//! JSON-quoted, so a message or a name taken from a spec cannot end its line or forge a key);
//! this module adds the keys that say which container a line is about, through the `log` crate's
//! key-values: `id` (the container id), and when the spec has the CRI's annotations `pod`
//! (`<namespace>/<name>` of the pod) and `container` (its name in the pod). A thread working
//! for one container (a Task API request, the thread that watches an init, the init's forwarded
//! lines, a compile helper) enters that container's [`Context`], and every line logged on it,
//! the crates' included, carries the keys. Lines about no one container (event publishing,
//! startup) have none. Guest output never comes here: it goes to the container's own FIFOs.

use std::cell::RefCell;
use std::sync::Arc;

use log::kv::{self, Key, Source, Value, VisitSource};

/// The CRI's annotations on every container of a pod (containerd 1.6 to 2.x).
pub const SANDBOX_NAMESPACE: &str = "io.kubernetes.cri.sandbox-namespace";
pub const SANDBOX_NAME: &str = "io.kubernetes.cri.sandbox-name";
pub const CONTAINER_NAME: &str = "io.kubernetes.cri.container-name";

/// Environment of a compile helper process: the keys of the container it compiles for.
const ENV_ID: &str = "WASM_SHIM_LOG_ID";
const ENV_POD: &str = "WASM_SHIM_LOG_POD";
const ENV_CONTAINER: &str = "WASM_SHIM_LOG_CONTAINER";

/// Which container a log line is about.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Context {
    pub id: String,
    /// `<namespace>/<name>` of the pod, when the CRI created the container.
    pub pod: Option<String>,
    /// The container's name in its pod.
    pub container: Option<String>,
}

impl Context {
    /// A container known by its id only (before its spec is read, or without one).
    pub fn id(id: &str) -> Arc<Context> {
        Arc::new(Context { id: id.to_string(), ..Default::default() })
    }

    /// The container `id`, with its pod from the spec's annotations.
    pub fn from_spec(id: &str, spec: &oci_spec::runtime::Spec) -> Arc<Context> {
        let empty = Default::default();
        let annotations = spec.annotations().as_ref().unwrap_or(&empty);
        let get = |k: &str| annotations.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
        let pod = match (get(SANDBOX_NAMESPACE), get(SANDBOX_NAME)) {
            (Some(ns), Some(name)) => Some(format!("{ns}/{name}")),
            (None, Some(name)) => Some(name.to_string()),
            _ => None,
        };
        Arc::new(Context { id: id.to_string(), pod, container: get(CONTAINER_NAME).map(String::from) })
    }

    /// Passes this context to a helper process (read back by [`Context::from_env`]).
    pub fn to_env(&self, cmd: &mut std::process::Command) {
        cmd.env(ENV_ID, &self.id);
        if let Some(p) = &self.pod {
            cmd.env(ENV_POD, p);
        }
        if let Some(c) = &self.container {
            cmd.env(ENV_CONTAINER, c);
        }
    }

    /// The context a helper process was started with, if any.
    pub fn from_env() -> Option<Arc<Context>> {
        let id = std::env::var(ENV_ID).ok().filter(|v| !v.is_empty())?;
        Some(Arc::new(Context {
            id,
            pod: std::env::var(ENV_POD).ok(),
            container: std::env::var(ENV_CONTAINER).ok(),
        }))
    }
}

impl Source for Context {
    fn visit<'kvs>(&'kvs self, visitor: &mut dyn VisitSource<'kvs>) -> Result<(), kv::Error> {
        visitor.visit_pair(Key::from_str("id"), Value::from(self.id.as_str()))?;
        if let Some(p) = &self.pod {
            visitor.visit_pair(Key::from_str("pod"), Value::from(p.as_str()))?;
        }
        if let Some(c) = &self.container {
            visitor.visit_pair(Key::from_str("container"), Value::from(c.as_str()))?;
        }
        Ok(())
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Arc<Context>>> = const { RefCell::new(None) };
}

/// The context of this thread until dropped (then the one before it again).
#[must_use = "the context ends when this is dropped"]
pub struct Entered(Option<Arc<Context>>);

impl Drop for Entered {
    fn drop(&mut self) {
        let before = self.0.take();
        CURRENT.with(|c| *c.borrow_mut() = before);
    }
}

/// Lines logged on this thread are about `ctx` until the guard is dropped.
pub fn enter(ctx: Arc<Context>) -> Entered {
    Entered(CURRENT.with(|c| c.borrow_mut().replace(ctx)))
}

/// Replaces this thread's context (under an `enter` guard: once the spec is read, the pod is known).
pub fn refine(ctx: Arc<Context>) {
    CURRENT.with(|c| *c.borrow_mut() = Some(ctx));
}

/// This thread's context.
pub fn current() -> Option<Arc<Context>> {
    CURRENT.with(|c| c.borrow().clone())
}

/// Spawns `f` on a thread from `builder` that logs in this thread's context.
pub fn spawn<F, T>(builder: std::thread::Builder, f: F) -> std::io::Result<std::thread::JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let ctx = current();
    builder.spawn(move || {
        let _ctx = ctx.map(enter);
        f()
    })
}

/// The context's keys, then the record's own.
struct Keys<'a>(&'a Context, &'a dyn Source);

impl Source for Keys<'_> {
    fn visit<'kvs>(&'kvs self, visitor: &mut dyn VisitSource<'kvs>) -> Result<(), kv::Error> {
        self.0.visit(visitor)?;
        self.1.visit(visitor)
    }
}

/// A logger that adds this thread's [`Context`] (or the process's, for a helper working for one
/// container) to each record, then hands it to `L`.
pub struct WithContext<L>(pub L, pub Option<Arc<Context>>);

impl<L: log::Log> log::Log for WithContext<L> {
    fn enabled(&self, m: &log::Metadata) -> bool {
        self.0.enabled(m)
    }

    fn log(&self, r: &log::Record) {
        if !self.enabled(r.metadata()) {
            return;
        }
        match current().or_else(|| self.1.clone()) {
            None => self.0.log(r),
            Some(ctx) => {
                let keys = Keys(&ctx, r.key_values());
                self.0.log(&r.to_builder().key_values(&keys).build());
            }
        }
    }

    fn flush(&self) {
        self.0.flush()
    }
}

/// The level of the shim's log: `RUST_LOG` (a level name) if set, else info; debug when
/// containerd runs at debug (`-debug`).
pub fn level(debug: bool) -> log::LevelFilter {
    let level = std::env::var("RUST_LOG").ok().and_then(|v| v.parse().ok()).unwrap_or(log::LevelFilter::Info);
    if debug {
        level.max(log::LevelFilter::Debug)
    } else {
        level
    }
}

/// Logs to containerd's log through `file` (the bundle's `log` FIFO), with each thread's
/// context, else `process`'s.
pub fn init_fifo(file: std::fs::File, level: log::LevelFilter, process: Option<Arc<Context>>) {
    let logger = WithContext(containerd_shim::logger::FifoLogger::with_file(file), process);
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(level);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::sync::Mutex;

    fn spec(annotations: &[(&str, &str)]) -> oci_spec::runtime::Spec {
        let mut s = oci_spec::runtime::Spec::default();
        s.set_annotations(Some(annotations.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()));
        s
    }

    #[test]
    fn pod_and_container_from_the_cri_annotations() {
        let c = Context::from_spec(
            "abc",
            &spec(&[(SANDBOX_NAMESPACE, "shop"), (SANDBOX_NAME, "web-7d9"), (CONTAINER_NAME, "app")]),
        );
        assert_eq!(*c, Context { id: "abc".into(), pod: Some("shop/web-7d9".into()), container: Some("app".into()) });
        // ctr run: no pod.
        assert_eq!(*Context::from_spec("abc", &spec(&[])), Context { id: "abc".into(), ..Default::default() });
    }

    /// A logger that keeps each record as the FIFO logger would write it.
    struct Keep(Mutex<Vec<String>>);
    impl log::Log for Keep {
        fn enabled(&self, _: &log::Metadata) -> bool {
            true
        }
        fn log(&self, r: &log::Record) {
            struct Pairs(String);
            impl<'kvs> VisitSource<'kvs> for Pairs {
                fn visit_pair(&mut self, k: Key<'kvs>, v: Value<'kvs>) -> Result<(), kv::Error> {
                    self.0.push_str(&format!(" {k}={v:?}"));
                    Ok(())
                }
            }
            let mut p = Pairs(String::new());
            r.key_values().visit(&mut p).unwrap();
            self.0.lock().unwrap().push(format!("{}{} msg={:?}", r.level(), p.0, r.args().to_string()));
        }
        fn flush(&self) {}
    }

    #[test]
    fn lines_carry_the_context_of_their_thread_and_their_own_keys() {
        let logger = WithContext(Keep(Mutex::new(Vec::new())), None);
        let log = |msg: &str| {
            let kvs = [("tier", "baseline")];
            let kvs: &dyn Source = &kvs;
            log::Log::log(&logger, &log::Record::builder().level(log::Level::Warn).args(format_args!("{msg}")).key_values(&kvs).build());
        };
        log("before");
        {
            let _g = enter(Context::id("c1"));
            log("created");
            refine(Context::from_spec("c1", &spec(&[(SANDBOX_NAMESPACE, "ns"), (SANDBOX_NAME, "p\"od")])));
            log("refined");
            {
                let _inner = enter(Context::id("c2"));
                log("nested");
            }
            log("back");
        }
        log("after");
        let lines = logger.0 .0.lock().unwrap().clone();
        assert_eq!(
            lines,
            [
                r#"WARN tier="baseline" msg="before""#,
                r#"WARN id="c1" tier="baseline" msg="created""#,
                r#"WARN id="c1" pod="ns/p\"od" tier="baseline" msg="refined""#,
                r#"WARN id="c2" tier="baseline" msg="nested""#,
                r#"WARN id="c1" pod="ns/p\"od" tier="baseline" msg="back""#,
                r#"WARN tier="baseline" msg="after""#,
            ]
        );
    }

    #[test]
    fn the_fifo_logger_quotes_what_a_spec_or_message_could_use_to_forge_a_line() {
        // The FIFO logger writes what the global level lets through (no logger is installed
        // in unit tests, so raising it changes nothing else).
        log::set_max_level(log::LevelFilter::Info);
        let (r, w) = nix::unistd::pipe().unwrap();
        let logger = WithContext(containerd_shim::logger::FifoLogger::with_file(std::fs::File::from(w)), None);
        {
            let _g = enter(Context::from_spec("c1", &spec(&[(SANDBOX_NAMESPACE, "ns"), (SANDBOX_NAME, "x\" level=error msg=\"forged\nlevel=error")])));
            log::Log::log(&logger, &log::Record::builder().level(log::Level::Info).args(format_args!("a\nlevel=error msg=forged")).build());
        }
        drop(logger);
        let mut text = String::new();
        std::fs::File::from(r).read_to_string(&mut text).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.contains(r#" level=info id="c1" pod="ns/x\" level=error msg=\"forged\nlevel=error" msg="a\nlevel=error msg=forged""#), "{text}");
    }
}
