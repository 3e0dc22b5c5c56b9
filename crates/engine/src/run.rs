//! Start-time work: the guest's WASI context from `RunOptions` (`host`), the
//! prepared workload instantiated in a fresh store with the memory limiter and
//! the epoch deadline, its entry point called, and what happened turned into
//! an `Outcome`. A WASI 0.3 command's `run` is an async function: it runs in the store's
//! event loop (`run_concurrent`) on a single-threaded tokio runtime of its own.

use std::io::Write;

use wasmtime::component::Val as CVal;
use wasmtime::{Store, Val};

use crate::engine::Engine;
use crate::host::{wasi_builder, P1State, P2State, RunOptions};
use crate::limits::Limiter;
use crate::outcome::{classify, Outcome};
use crate::prepare::{ComponentEntry, Kind, Prepared};

impl Engine {
    /// Runs a prepared workload to completion on the calling thread.
    ///
    /// Never fails as such: every way the guest can end is an `Outcome`, whose
    /// `exit_code` is the container's exit status. Stdout and stderr are
    /// flushed before returning.
    pub fn run(&self, prepared: &Prepared, opts: &RunOptions) -> Outcome {
        let outcome = match &prepared.kind {
            Kind::Module { pre, init, entry } => self.run_module(prepared, pre, init, entry, opts),
            Kind::Component { pre, entry } => self.run_component(prepared, pre, entry, opts),
            Kind::Proxy { .. } | Kind::Service { .. } | Kind::Wagi { .. } => {
                return Outcome::Failed("an HTTP workload is served, not run".to_string())
            }
        };
        // wasmtime-wasi writes inherited stdout/stderr through std's handles;
        // stdout is line-buffered, so a last line without '\n' waits here.
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();
        log::debug!("{}: {outcome}", prepared.file);
        outcome
    }

    fn run_module(
        &self,
        prepared: &Prepared,
        pre: &wasmtime::InstancePre<P1State>,
        init: &Option<String>,
        entry: &str,
        opts: &RunOptions,
    ) -> Outcome {
        let wasi = match wasi_builder(opts) {
            Ok(mut builder) => builder.build_p1(),
            Err(message) => return Outcome::Failed(message),
        };
        let state = P1State {
            wasi,
            limiter: Limiter::new(opts.memory_limit),
        };
        let mut store = Store::new(&prepared.engine, state);
        store.limiter(|s| &mut s.limiter);
        if let Some(outcome) = self.arm_interrupt(&mut store) {
            return outcome;
        }
        let instance = match pre.instantiate(&mut store) {
            Ok(instance) => instance,
            Err(e) => return self.finish(prepared, &e, &store.data().limiter, true),
        };
        let mut exit = 0;
        for name in init
            .iter()
            .map(String::as_str)
            .chain(std::iter::once(entry))
        {
            let Some(func) = instance.get_func(&mut store, name) else {
                // `prepare` checked it; only a bug gets here.
                return Outcome::Failed(format!("export {name} vanished"));
            };
            let mut results = vec![Val::I32(0); func.ty(&store).results().len()];
            if let Err(e) = func.call(&mut store, &[], &mut results) {
                capture_coredump(opts, &e, &mut store, &prepared.file);
                return self.finish(prepared, &e, &store.data().limiter, false);
            }
            if let [Val::I32(code)] = results[..] {
                exit = code;
            }
        }
        Outcome::Exited(exit)
    }

    fn run_component(
        &self,
        prepared: &Prepared,
        pre: &wasmtime::component::InstancePre<P2State>,
        entry: &ComponentEntry,
        opts: &RunOptions,
    ) -> Outcome {
        let ctx = match wasi_builder(opts) {
            Ok(mut builder) => builder.build(),
            Err(message) => return Outcome::Failed(message),
        };
        let state = P2State::new(ctx, Limiter::new(opts.memory_limit), opts.config.clone());
        let mut store = Store::new(&prepared.engine, state);
        store.limiter(|s| &mut s.limiter);
        if let Some(outcome) = self.arm_interrupt(&mut store) {
            return outcome;
        }
        match entry {
            ComponentEntry::Run(command_pre) => {
                let command = match command_pre.instantiate(&mut store) {
                    Ok(command) => command,
                    Err(e) => return self.finish(prepared, &e, &store.data().limiter, true),
                };
                match command.wasi_cli_run().call_run(&mut store) {
                    Ok(Ok(())) => Outcome::Exited(0),
                    Ok(Err(())) => Outcome::Exited(1),
                    Err(e) => {
                        capture_coredump(opts, &e, &mut store, &prepared.file);
                        self.finish(prepared, &e, &store.data().limiter, false)
                    }
                }
            }
            ComponentEntry::RunP3(command_pre) => {
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(runtime) => runtime,
                    Err(e) => return Outcome::Failed(format!("cannot start an async runtime: {e}")),
                };
                let ran = runtime.block_on(async {
                    let command = match command_pre.instantiate_async(&mut store).await {
                        Ok(command) => command,
                        Err(e) => return Err((e, true)),
                    };
                    store
                        .run_concurrent(async |s| command.wasi_cli_run().call_run(s).await)
                        .await
                        .and_then(|r| r)
                        .map_err(|e| (e, false))
                });
                match ran {
                    Ok(Ok(())) => Outcome::Exited(0),
                    Ok(Err(())) => Outcome::Exited(1),
                    Err((e, instantiating)) => {
                        if !instantiating {
                            capture_coredump(opts, &e, &mut store, &prepared.file);
                        }
                        self.finish(prepared, &e, &store.data().limiter, instantiating)
                    }
                }
            }
            ComponentEntry::Func { name, index } => {
                let instance = match pre.instantiate(&mut store) {
                    Ok(instance) => instance,
                    Err(e) => return self.finish(prepared, &e, &store.data().limiter, true),
                };
                let Some(func) = instance.get_func(&mut store, index) else {
                    return Outcome::Failed(format!("export {name} vanished"));
                };
                let mut results = vec![CVal::Bool(false); func.ty(&store).results().len()];
                if let Err(e) = func.call(&mut store, &[], &mut results) {
                    capture_coredump(opts, &e, &mut store, &prepared.file);
                    return self.finish(prepared, &e, &store.data().limiter, false);
                }
                Outcome::Exited(match results.first() {
                    Some(CVal::Result(Err(_))) => 1,
                    Some(CVal::S32(code)) => *code,
                    Some(CVal::U32(code)) => *code as i32,
                    Some(CVal::U8(code)) => i32::from(*code),
                    _ => 0,
                })
            }
        }
    }

    /// Sets the one-tick epoch deadline, then checks for an interrupt that
    /// came before it: `interrupt` records the signal before bumping the
    /// epoch, so one of the two always catches it.
    fn arm_interrupt<T>(&self, store: &mut Store<T>) -> Option<Outcome> {
        store.set_epoch_deadline(1);
        store.epoch_deadline_trap();
        self.interrupted_by().map(Outcome::Interrupted)
    }

    fn finish(
        &self,
        prepared: &Prepared,
        err: &wasmtime::Error,
        limiter: &Limiter,
        instantiating: bool,
    ) -> Outcome {
        log::debug!("{}: guest stopped: {err:?}", prepared.file);
        classify(
            err,
            limiter.hit.as_ref(),
            self.interrupted_by(),
            instantiating,
        )
    }
}

/// Leaves the core dump of a trap where `opts` asks for it (a clean exit carries none).
fn capture_coredump<T>(opts: &RunOptions, err: &wasmtime::Error, store: &mut Store<T>, file: &str) {
    if let Some(capture) = &opts.coredump {
        if err.downcast_ref::<wasmtime::Trap>().is_some() {
            capture.capture(err, store, file);
        }
    }
}

