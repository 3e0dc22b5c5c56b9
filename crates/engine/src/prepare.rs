//! Create-time work: detect the format (core module, component, WAT text),
//! compile, choose the export to call and resolve every import against the
//! WASI linkers, so that a workload that cannot run fails at Create with a
//! message naming the file and the cause. A component is a WASI 0.2 or a WASI 0.3 one by
//! what it exports: `wasi:cli/run@0.3.x` (a 0.3 command, preferred when both are there, as
//! the wasmtime CLI does) or `@0.2.x`; `wasi:http/incoming-handler@0.2.x` (a `wasi:http/proxy`)
//! or `wasi:http/handler@0.3.x` (a `wasi:http/service`).

use std::borrow::Cow;
use std::ops::ControlFlow;

use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, ComponentExportIndex};
use wasmtime::{ExternType, Module};
use wasmtime_wasi::p2::bindings::sync::CommandPre;
use wasmtime_wasi::p3::bindings::CommandPre as CommandPreP3;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p3::bindings::ServicePre;

use crate::engine::{Concurrency, Engine, TierEngine};
use crate::error::{one_line, EngineError};
use crate::host::{P1State, P2State, ProxyState};
use crate::tier::Tier;

/// The export a WASI p2 command runs; any 0.2.x version matches.
pub(crate) const CLI_RUN: &str = "wasi:cli/run@0.2.0";
/// The export a `wasi:http/proxy` component serves requests with.
pub(crate) const HTTP_HANDLER: &str = "wasi:http/incoming-handler@0.2.0";
/// The export a WASI 0.3 command runs; any 0.3.x version matches.
pub(crate) const CLI_RUN_P3: &str = "wasi:cli/run@0.3.0";
/// The export a WASI 0.3 `wasi:http/service` component serves requests with.
pub(crate) const HTTP_HANDLER_P3: &str = "wasi:http/handler@0.3.0";

/// How a prepared workload is to be served over HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServeKind {
    /// A component exporting `wasi:http/incoming-handler`.
    Http,
    /// A WASI preview 1 command run once per request, CGI-style.
    Wagi,
}

/// A compiled workload whose imports are resolved: what `run` instantiates.
pub struct Prepared {
    pub(crate) file: String,
    pub(crate) kind: Kind,
    /// The wasmtime engine the code was compiled for; stores are made from it.
    pub(crate) engine: wasmtime::Engine,
    pub(crate) tier: Tier,
    pub(crate) origin: Origin,
}

/// Where a prepared workload's code came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Compiled in this process just now.
    Compiled,
    /// Mapped from the compile cache entry with this key.
    Cache(String),
}

pub(crate) enum Kind {
    Module {
        pre: wasmtime::InstancePre<P1State>,
        /// `_initialize`, called first for a WASI reactor.
        init: Option<String>,
        /// The export to call; its single i32 result, if any, is the exit code.
        entry: String,
    },
    Component {
        pre: wasmtime::component::InstancePre<P2State>,
        entry: ComponentEntry,
    },
    /// A `wasi:http/proxy` component: each request instantiates it.
    Proxy { pre: ProxyPre<ProxyState> },
    /// A WASI 0.3 `wasi:http/service` component: each request instantiates it too.
    Service { pre: ServicePre<ProxyState> },
    /// A WASI p1 module served CGI-style: each request runs `entry`.
    Wagi {
        pre: wasmtime::InstancePre<P1State>,
        entry: String,
    },
}

pub(crate) enum ComponentEntry {
    /// `wasi:cli/run.run`.
    Run(CommandPre<P2State>),
    /// `wasi:cli/run@0.3.x`'s async `run` (linked with WASI 0.3 and 0.2, async).
    RunP3(CommandPreP3<P2State>),
    /// A function export named by the user (`func` or `instance#func`).
    Func {
        name: String,
        index: ComponentExportIndex,
    },
}

/// Compiled code, before linking.
pub(crate) enum Artifact {
    Module(Module),
    Component(Component),
}

impl Artifact {
    /// The wasmtime engine that compiled the code.
    pub(crate) fn engine(&self) -> &wasmtime::Engine {
        match self {
            Artifact::Module(m) => m.engine(),
            Artifact::Component(c) => c.engine(),
        }
    }

    /// The code as a serialized artifact (an ELF image wasmtime can map).
    pub(crate) fn serialize(&self) -> wasmtime::Result<Vec<u8>> {
        match self {
            Artifact::Module(m) => m.serialize(),
            Artifact::Component(c) => c.serialize(),
        }
    }
}

impl Prepared {
    /// True for a component (WASI p2), false for a core module (WASI p1).
    pub fn is_component(&self) -> bool {
        matches!(self.kind, Kind::Component { .. } | Kind::Proxy { .. } | Kind::Service { .. })
    }

    /// How it is served over HTTP, or `None` for a command.
    pub fn serves(&self) -> Option<ServeKind> {
        match self.kind {
            Kind::Proxy { .. } | Kind::Service { .. } => Some(ServeKind::Http),
            Kind::Wagi { .. } => Some(ServeKind::Wagi),
            Kind::Module { .. } | Kind::Component { .. } => None,
        }
    }

    /// The file name given to `prepare`.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// Which compiler produced the code.
    pub fn tier(&self) -> Tier {
        self.tier
    }

    /// Whether the code was compiled now or loaded from the cache.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// What `run` calls, for logs: `_start`, `_initialize`, `wasi:cli/run`, ...
    pub fn entry(&self) -> &str {
        match &self.kind {
            Kind::Module { entry, .. } => entry,
            Kind::Component {
                entry: ComponentEntry::Run(_),
                ..
            } => "wasi:cli/run",
            Kind::Component {
                entry: ComponentEntry::RunP3(_),
                ..
            } => "wasi:cli/run@0.3",
            Kind::Component {
                entry: ComponentEntry::Func { name, .. },
                ..
            } => name,
            Kind::Proxy { .. } => "wasi:http/incoming-handler",
            Kind::Service { .. } => "wasi:http/handler@0.3",
            Kind::Wagi { entry, .. } => entry,
        }
    }
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("file", &self.file)
            .field("component", &self.is_component())
            .field("entry", &self.entry())
            .field("tier", &self.tier)
            .field("origin", &self.origin)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Module,
    Component,
}

impl Engine {
    /// Compiles `bytes` (a core module, a component, or WAT text for either)
    /// with the optimizing compiler, in this process, and checks everything
    /// that can be checked before running: the export to call exists and
    /// takes no parameters, and every import is provided by the WASI p1
    /// (module) or p2 (component) linker. `name` is the file name used in
    /// messages. (`prepare_cached` and `load_cached` use the compile cache.)
    pub fn prepare(
        &self,
        bytes: &[u8],
        name: &str,
        export: Option<&str>,
    ) -> Result<Prepared, EngineError> {
        self.prepare_tier(bytes, name, export, Tier::Optimized)
    }

    /// Like `prepare`, with the compiler of `tier`.
    pub fn prepare_tier(
        &self,
        bytes: &[u8],
        name: &str,
        export: Option<&str>,
        tier: Tier,
    ) -> Result<Prepared, EngineError> {
        let (binary, format) = decode(bytes, name)?;
        let concurrency = needs_concurrency(&binary, format);
        let artifact = self.compile(tier, &binary, format, concurrency, name)?;
        self.link(tier, artifact, name, export, Origin::Compiled)
    }

    /// Compiles a decoded binary with the compiler of `tier`, in the engine with concurrency
    /// only when the binary uses it: `concurrency` is `needs_concurrency` of it, read once by
    /// the caller, which keys the cache with it too. Should that read be wrong (a component
    /// the engine without concurrency rejects), the engine with it compiles it: loading finds
    /// the code under either engine, so a wrong guess costs speed, never a workload.
    pub(crate) fn compile(
        &self,
        tier: Tier,
        binary: &[u8],
        format: Format,
        concurrency: Concurrency,
        file: &str,
    ) -> Result<Artifact, EngineError> {
        match self.compile_with(tier, concurrency, binary, format, file) {
            Err(e) if concurrency == Concurrency::Off && format == Format::Component => {
                match self.compile_with(tier, Concurrency::On, binary, format, file) {
                    Ok(artifact) => {
                        log::warn!("{file}: compiled with WASI 0.3 concurrency after all: {e}");
                        Ok(artifact)
                    }
                    Err(_) => Err(e),
                }
            }
            other => other,
        }
    }

    fn compile_with(
        &self,
        tier: Tier,
        concurrency: Concurrency,
        binary: &[u8],
        format: Format,
        file: &str,
    ) -> Result<Artifact, EngineError> {
        let engine = &self.tier(tier, concurrency)?.wasmtime;
        match format {
            Format::Module => Module::from_binary(engine, binary)
                .map(Artifact::Module)
                .map_err(|e| {
                    if Module::validate(engine, binary).is_err() {
                        invalid(file, one_line(&e))
                    } else {
                        EngineError::Compile {
                            file: file.to_string(),
                            cause: format!("{tier} compiler: {}", one_line(&e)),
                        }
                    }
                }),
            Format::Component => Component::from_binary(engine, binary)
                .map(Artifact::Component)
                .map_err(|e| invalid(file, one_line(&e))),
        }
    }

    /// Picks the entry point and resolves the imports of compiled code.
    pub(crate) fn link(
        &self,
        tier: Tier,
        artifact: Artifact,
        file: &str,
        export: Option<&str>,
        origin: Origin,
    ) -> Result<Prepared, EngineError> {
        let t = self.tier_of(tier, artifact.engine())?;
        let kind = match artifact {
            Artifact::Module(module) => link_module(t, &module, file, export)?,
            Artifact::Component(component) => link_component(t, &component, file, export)?,
        };
        let prepared = Prepared {
            file: file.to_string(),
            kind,
            engine: t.wasmtime.clone(),
            tier,
            origin,
        };
        log::debug!("prepared {prepared:?}");
        Ok(prepared)
    }
}

fn link_module(
    t: &TierEngine,
    module: &Module,
    file: &str,
    export: Option<&str>,
) -> Result<Kind, EngineError> {
    let exports: Vec<(String, ExternType)> = module
        .exports()
        .map(|e| (e.name().to_string(), e.ty()))
        .collect();
    let find = |name: &str| exports.iter().find(|(n, _)| n == name).map(|(_, ty)| ty);
    let not_found = |export: &str| EngineError::ExportNotFound {
        file: file.to_string(),
        export: export.to_string(),
        available: sorted(exports.iter().map(|(n, _)| n.clone())),
    };

    // A command runs `_start`; a reactor (no `_start`) is initialized by
    // `_initialize`, which also runs before a named export.
    let (init, entry) = match export {
        Some(name) => {
            let init = (name != "_initialize" && find("_initialize").is_some())
                .then(|| "_initialize".to_string());
            (init, name.to_string())
        }
        None if find("_start").is_some() => (None, "_start".to_string()),
        None if find("_initialize").is_some() => (None, "_initialize".to_string()),
        None => return Err(not_found("_start")),
    };
    for name in init.iter().chain(std::iter::once(&entry)) {
        let ty = find(name).ok_or_else(|| not_found(name))?;
        check_core_entry(file, name, ty)?;
    }

    let pre = t.p1_linker()?.instantiate_pre(module).map_err(|e| {
        let imports = module
            .imports()
            .map(|i| format!("{}::{}", i.module(), i.name()));
        if let Some(unknown) = e.downcast_ref::<wasmtime::UnknownImportError>() {
            EngineError::UnsatisfiedImport {
                file: file.to_string(),
                import: format!("{}::{}", unknown.module(), unknown.name()),
                detail: None,
            }
        } else {
            link_error(file, &e, imports)
        }
    })?;
    Ok(Kind::Module { pre, init, entry })
}

fn link_component(
    t: &TierEngine,
    component: &Component,
    file: &str,
    export: Option<&str>,
) -> Result<Kind, EngineError> {
    let engine = &t.wasmtime;
    let ty = component.component_type();
    let exports: Vec<String> = ty.exports(engine).map(|(n, _)| n.to_string()).collect();
    let not_found = |export: &str| EngineError::ExportNotFound {
        file: file.to_string(),
        export: export.to_string(),
        available: sorted(exports.iter().cloned()),
    };

    // Check the export before linking: a missing entry point is the more
    // useful message.
    let imports: Vec<String> = ty.imports(engine).map(|(n, _)| n.to_string()).collect();
    let named = match export {
        None => {
            if component.get_export_index(None, CLI_RUN_P3).is_some() {
                return link_p3_command(t, component, file, imports);
            }
            if component.get_export_index(None, CLI_RUN).is_none() {
                // Not a command: a `wasi:http/proxy` (or 0.3 `service`) component is served.
                if component.get_export_index(None, HTTP_HANDLER).is_some()
                    || component.get_export_index(None, HTTP_HANDLER_P3).is_some()
                {
                    return link_proxy(t, component, file);
                }
                return Err(not_found("wasi:cli/run@0.2.x or @0.3.x"));
            }
            None
        }
        Some(name) if imports.iter().any(|i| is_wasi_p3(i)) => {
            return Err(bad_export(
                file,
                name,
                "calling a named export of a WASI 0.3 component is not supported: the shim runs \
                 its wasi:cli/run@0.3.x or serves its wasi:http/handler@0.3.x"
                    .to_string(),
            ))
        }
        Some(name) => {
            let (parent, func) = match name.rsplit_once('#') {
                Some((instance, func)) => {
                    let index = component
                        .get_export_index(None, instance)
                        .ok_or_else(|| not_found(instance))?;
                    (Some(index), func)
                }
                None => (None, name),
            };
            let (item, index) = component
                .get_export(parent.as_ref(), func)
                .ok_or_else(|| not_found(name))?;
            match item {
                ComponentItem::ComponentFunc(f) if f.params().len() == 0 => {}
                ComponentItem::ComponentFunc(f) => {
                    return Err(bad_export(
                        file,
                        name,
                        format!(
                            "it takes {} parameters, an entry point takes none",
                            f.params().len()
                        ),
                    ))
                }
                other => {
                    return Err(bad_export(
                        file,
                        name,
                        format!("it is {}, not a function", component_item_kind(&other)),
                    ))
                }
            }
            Some((name.to_string(), index))
        }
    };

    let pre = t
        .p2_linker()?
        .instantiate_pre(component)
        .map_err(|e| link_error(file, &e, imports))?;

    let entry = match named {
        Some((name, index)) => ComponentEntry::Func { name, index },
        None => ComponentEntry::Run(
            CommandPre::new(pre.clone())
                .map_err(|e| bad_export(file, "wasi:cli/run", one_line(&e)))?,
        ),
    };
    Ok(Kind::Component { pre, entry })
}

/// A WASI 0.3 command: its imports resolved against WASI 0.3 and 0.2 (async), its
/// `wasi:cli/run@0.3.x` checked.
fn link_p3_command(
    t: &TierEngine,
    component: &Component,
    file: &str,
    imports: Vec<String>,
) -> Result<Kind, EngineError> {
    let pre = t
        .p3_linker()?
        .instantiate_pre(component)
        .map_err(|e| link_error(file, &e, imports))?;
    let command = CommandPreP3::new(pre.clone())
        .map_err(|e| bad_export(file, "wasi:cli/run@0.3", one_line(&e)))?;
    Ok(Kind::Component { pre, entry: ComponentEntry::RunP3(command) })
}

/// Whether a component import names a WASI 0.3 interface (`wasi:cli/stdout@0.3.0`, ...).
fn is_wasi_p3(import: &str) -> bool {
    import.starts_with("wasi:") && import.split_once('@').is_some_and(|(_, v)| v.starts_with("0.3."))
}

/// Whether `bytes` (a component, binary or WAT) is served over HTTP by default: it exports
/// `wasi:http/incoming-handler@0.2.x` or `wasi:http/handler@0.3.x`, and no `wasi:cli/run`
/// (0.2.x or 0.3.x). Read from its top-level
/// export section, without compiling, so that the engine can be sized for serving first.
pub fn serves_http_by_default(bytes: &[u8]) -> bool {
    let Ok((binary, Format::Component)) = decode(bytes, "") else {
        return false;
    };
    let (mut handler, mut run) = (false, false);
    let read = walk_component(&binary, |depth, payload| {
        if let wasmparser::Payload::ComponentExportSection(exports) = payload {
            if depth == 1 {
                for export in exports.into_iter().flatten() {
                    let name = export.name.name;
                    handler |= name.starts_with("wasi:http/incoming-handler@0.2.")
                        || name.starts_with("wasi:http/handler@0.3.");
                    run |= name.starts_with("wasi:cli/run@0.2.") || name.starts_with("wasi:cli/run@0.3.");
                }
            }
        }
        ControlFlow::Continue(())
    });
    read.is_ok() && handler && !run
}

/// Resolves a `wasi:http/proxy` component's imports against WASI p2 and
/// `wasi:http`, and checks its `incoming-handler` export; or a WASI 0.3 `wasi:http/service`
/// component's against WASI 0.3 and 0.2 with `wasi:http` of both, and its `handler` export.
fn link_proxy(t: &TierEngine, component: &Component, file: &str) -> Result<Kind, EngineError> {
    let engine = &t.wasmtime;
    let ty = component.component_type();
    let imports: Vec<String> = ty.imports(engine).map(|(n, _)| n.to_string()).collect();
    if component.get_export_index(None, HTTP_HANDLER).is_none() {
        if component.get_export_index(None, HTTP_HANDLER_P3).is_none() {
            return Err(EngineError::ExportNotFound {
                file: file.to_string(),
                export: "wasi:http/incoming-handler@0.2.x or wasi:http/handler@0.3.x".to_string(),
                available: sorted(ty.exports(engine).map(|(n, _)| n.to_string())),
            });
        }
        let pre = t
            .service_linker()?
            .instantiate_pre(component)
            .map_err(|e| link_error(file, &e, imports))?;
        let pre = ServicePre::new(pre)
            .map_err(|e| bad_export(file, "wasi:http/handler@0.3", one_line(&e)))?;
        return Ok(Kind::Service { pre });
    }
    let pre = t
        .proxy_linker()?
        .instantiate_pre(component)
        .map_err(|e| link_error(file, &e, imports))?;
    let pre = ProxyPre::new(pre)
        .map_err(|e| bad_export(file, "wasi:http/incoming-handler", one_line(&e)))?;
    Ok(Kind::Proxy { pre })
}

impl Engine {
    /// Re-links prepared code to be served over HTTP as `kind`: a component
    /// as a `wasi:http/proxy` (it must export `wasi:http/incoming-handler`),
    /// a WASI p1 module as a WAGI handler (its entry point runs once per
    /// request). The compiled code is reused as is.
    pub fn serve_as(&self, prepared: Prepared, kind: ServeKind) -> Result<Prepared, EngineError> {
        if prepared.serves() == Some(kind) {
            return Ok(prepared);
        }
        let t = self.tier_of(prepared.tier, &prepared.engine)?;
        let file = prepared.file.clone();
        let new_kind = match (kind, prepared.kind) {
            (ServeKind::Http, Kind::Component { pre, .. }) => link_proxy(t, pre.component(), &file)?,
            (ServeKind::Wagi, Kind::Module { pre, init, entry }) => {
                if init.is_some() || entry != "_start" {
                    return Err(bad_export(
                        &file,
                        &entry,
                        "WAGI runs a command's _start once per request".to_string(),
                    ));
                }
                let pre = t
                    .p1_async_linker()?
                    .instantiate_pre(pre.module())
                    .map_err(|e| link_error(&file, &e, Vec::new()))?;
                Kind::Wagi { pre, entry }
            }
            (ServeKind::Http, _) => {
                return Err(EngineError::NotServable {
                    file,
                    reason: "a WASI preview 1 module cannot serve wasi:http; serve it as WAGI \
                             or build a component exporting wasi:http/incoming-handler"
                        .to_string(),
                })
            }
            (ServeKind::Wagi, _) => {
                return Err(EngineError::NotServable {
                    file,
                    reason: "WAGI serves WASI preview 1 modules; this is a component".to_string(),
                })
            }
        };
        Ok(Prepared {
            file,
            kind: new_kind,
            engine: prepared.engine,
            tier: prepared.tier,
            origin: prepared.origin,
        })
    }
}

/// Whether a decoded binary needs the engine with the component model's concurrency
/// (`Concurrency`): a component whose canonical functions use the async ABI (an `async` or
/// `callback` lift or lower, or any builtin but the resource ones: tasks, streams, futures,
/// error contexts, threads), whose types have async functions, streams or futures, or that
/// imports or exports a WASI 0.3 interface. Read from the component sections, without
/// validating or compiling and without reading nested core modules (`walk_component`: about
/// 0.1 ms for 18 MB of CPython); anything unreadable or unknown says yes,
/// which is what every workload got before. Core modules never need it.
pub(crate) fn needs_concurrency(binary: &[u8], format: Format) -> Concurrency {
    use wasmparser::{CanonicalFunction, CanonicalOption, Payload};
    if format == Format::Module {
        return Concurrency::Off;
    }
    let p3_name = |name: &str| name.split_once('@').is_some_and(|(_, v)| v.starts_with("0.3."));
    let mut uses = false;
    let read = walk_component(binary, |_, payload| {
        uses = match payload {
            Payload::ComponentCanonicalSection(reader) => reader.into_iter().any(|f| match f {
                Ok(CanonicalFunction::Lift { options, .. } | CanonicalFunction::Lower { options, .. }) => {
                    options.iter().any(|o| matches!(o, CanonicalOption::Async | CanonicalOption::Callback(_)))
                }
                Ok(
                    CanonicalFunction::ResourceNew { .. }
                    | CanonicalFunction::ResourceDrop { .. }
                    | CanonicalFunction::ResourceRep { .. },
                ) => false,
                _ => true,
            }),
            Payload::ComponentTypeSection(reader) => {
                reader.into_iter().any(|t| t.map_or(true, |t| async_type(&t)))
            }
            Payload::ComponentImportSection(reader) => {
                reader.into_iter().any(|i| i.map_or(true, |i| p3_name(i.name.name)))
            }
            Payload::ComponentExportSection(reader) => {
                reader.into_iter().any(|e| e.map_or(true, |e| p3_name(e.name.name)))
            }
            _ => false,
        };
        if uses {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
    if uses || read.is_err() {
        Concurrency::On
    } else {
        Concurrency::Off
    }
}

/// Hands `visit` the sections of a component and of the components nested in it, in order,
/// each with its depth (1: the top-level component), until `visit` breaks or the top-level
/// component ends. A nested core module is stepped over by its section's length, unread:
/// nothing in it bears on the component's types, canonical functions, imports or exports,
/// and its sections are most of the bytes of a CPython or JavaScript component (walking them,
/// every function body included, took 0.6 ms of CPython's 0.7 ms; this is the path of every
/// start from the compile cache). `Err(())` when the binary cannot be read (a malformed or
/// truncated section, a nested module running past the end).
fn walk_component<'a>(
    binary: &'a [u8],
    mut visit: impl FnMut(usize, wasmparser::Payload<'a>) -> ControlFlow<()>,
) -> Result<(), ()> {
    use wasmparser::{Chunk, Parser, Payload};
    let mut parser = Parser::new(0);
    let mut parents: Vec<Parser> = Vec::new();
    let mut data = binary;
    loop {
        let payload = match parser.parse(data, true) {
            Ok(Chunk::Parsed { payload, consumed }) => {
                data = &data[consumed..];
                payload
            }
            // Not with `eof`; as unreadable all the same.
            Ok(Chunk::NeedMoreData(_)) | Err(_) => return Err(()),
        };
        let depth = parents.len() + 1;
        let mut last = false;
        match &payload {
            // The parser has counted the module's bytes as read: they are skipped here.
            Payload::ModuleSection { unchecked_range, .. } => {
                data = data.get(unchecked_range.len()..).ok_or(())?;
            }
            Payload::ComponentSection { parser: nested, .. } => {
                parents.push(std::mem::replace(&mut parser, nested.clone()));
            }
            Payload::End(_) => match parents.pop() {
                Some(parent) => parser = parent,
                None => last = true,
            },
            _ => {}
        }
        if visit(depth, payload).is_break() || last {
            return Ok(());
        }
    }
}

/// An async function, a stream or a future, at any depth of instance and component types.
fn async_type(t: &wasmparser::ComponentType) -> bool {
    use wasmparser::{ComponentDefinedType, ComponentType, ComponentTypeDeclaration, InstanceTypeDeclaration};
    match t {
        ComponentType::Defined(ComponentDefinedType::Future(_) | ComponentDefinedType::Stream(_)) => true,
        ComponentType::Func(f) => f.async_,
        ComponentType::Instance(decls) => decls.iter().any(|d| matches!(d, InstanceTypeDeclaration::Type(t) if async_type(t))),
        ComponentType::Component(decls) => decls.iter().any(|d| matches!(d, ComponentTypeDeclaration::Type(t) if async_type(t))),
        _ => false,
    }
}

/// Turns the input into a wasm binary and says which kind it is.
pub(crate) fn decode<'a>(
    bytes: &'a [u8],
    file: &str,
) -> Result<(Cow<'a, [u8]>, Format), EngineError> {
    let binary = match wat::Detect::from_bytes(bytes) {
        wat::Detect::WasmBinary => Cow::Borrowed(bytes),
        wat::Detect::WasmText => Cow::Owned(
            wat::parse_bytes(bytes)
                .map_err(|e| invalid(file, wat_message(&e)))?
                .into_owned(),
        ),
        wat::Detect::Unknown => {
            return Err(invalid(
                file,
                "neither a wasm binary (no \\0asm magic) nor WAT text".to_string(),
            ))
        }
    };
    // Header: magic, then a 16-bit version and a 16-bit layer
    // (layer 0 = core module, layer 1 = component).
    if binary.len() < 8 {
        return Err(invalid(file, "truncated wasm header".to_string()));
    }
    let format = match (binary[6], binary[7]) {
        (0, 0) => Format::Module,
        (1, 0) => Format::Component,
        (a, b) => {
            return Err(invalid(
                file,
                format!("unknown wasm binary layer {}", u16::from_le_bytes([a, b])),
            ))
        }
    };
    Ok((binary, format))
}

/// "message at line:col" from wat's multi-line rendering.
fn wat_message(err: &wat::Error) -> String {
    let text = err.to_string();
    let mut lines = text.lines();
    let message = lines.next().unwrap_or("").trim().to_string();
    let location = lines
        .next()
        .and_then(|l| l.trim().strip_prefix("-->"))
        .map(|l| l.trim().trim_start_matches("<anon>:").to_string());
    match location {
        Some(at) => format!("invalid WAT at {at}: {message}"),
        None => format!("invalid WAT: {message}"),
    }
}

fn check_core_entry(file: &str, name: &str, ty: &ExternType) -> Result<(), EngineError> {
    match ty {
        ExternType::Func(f) if f.params().len() == 0 => Ok(()),
        ExternType::Func(f) => Err(bad_export(
            file,
            name,
            format!(
                "it takes {} parameters, an entry point takes none",
                f.params().len()
            ),
        )),
        other => {
            let what = match other {
                ExternType::Global(_) => "a global",
                ExternType::Table(_) => "a table",
                ExternType::Memory(_) => "a memory",
                ExternType::Tag(_) => "a tag",
                ExternType::Func(_) => "a function",
            };
            Err(bad_export(
                file,
                name,
                format!("it is {what}, not a function"),
            ))
        }
    }
}

fn component_item_kind(item: &ComponentItem) -> &'static str {
    match item {
        ComponentItem::ComponentFunc(_) => "a function",
        ComponentItem::CoreFunc(_) => "a core function",
        ComponentItem::Module(_) => "a core module",
        ComponentItem::Component(_) => "a component",
        ComponentItem::ComponentInstance(_) => "an instance",
        ComponentItem::Type(_) => "a type",
        ComponentItem::Resource(_) => "a resource",
    }
}

/// Names the import a link error is about when the error text quotes it;
/// the rest of the error chain, if any, says what is wrong with it.
fn link_error(
    file: &str,
    err: &wasmtime::Error,
    imports: impl IntoIterator<Item = String>,
) -> EngineError {
    let chain: Vec<String> = err.chain().map(|c| c.to_string()).collect();
    for import in imports {
        let quoted = format!("`{import}`");
        if let Some(at) = chain.iter().position(|c| c.contains(&quoted)) {
            let rest = &chain[at + 1..];
            let detail = (!rest.is_empty() && is_wasi_p2(&import)).then(|| rest.join(": "));
            return EngineError::UnsatisfiedImport {
                file: file.to_string(),
                import,
                detail,
            };
        }
    }
    EngineError::Link {
        file: file.to_string(),
        cause: one_line(err),
    }
}

/// Whether `import` names an interface the WASI p2 linker defines (then a
/// failure is about one of its functions); for anything else the linker has
/// nothing by that name and wasmtime's detail ("function implementation is
/// missing") would only confuse.
fn is_wasi_p2(import: &str) -> bool {
    const PROVIDED: [&str; 6] = ["cli", "clocks", "filesystem", "io", "random", "sockets"];
    let Some((path, version)) = import.split_once('@') else {
        // Core module imports (`module::name`) always say what is wrong.
        return !import.starts_with("wasi:");
    };
    let package = path
        .strip_prefix("wasi:")
        .and_then(|rest| rest.split_once('/'))
        .map(|(package, _)| package);
    matches!(package, Some(p) if PROVIDED.contains(&p)) && version.starts_with("0.2.")
}

fn sorted(names: impl Iterator<Item = String>) -> Vec<String> {
    let mut names: Vec<String> = names.collect();
    names.sort();
    names
}

pub(crate) fn invalid(file: &str, cause: String) -> EngineError {
    EngineError::InvalidWasm {
        file: file.to_string(),
        cause,
    }
}

fn bad_export(file: &str, export: &str, reason: String) -> EngineError {
    EngineError::BadExport {
        file: file.to_string(),
        export: export.to_string(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepared_can_cross_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Prepared>();
    }

    #[test]
    fn wasi_p2_interfaces() {
        assert!(is_wasi_p2("wasi:cli/exit@0.2.0"));
        assert!(is_wasi_p2("wasi:io/streams@0.2.6"));
        assert!(!is_wasi_p2("wasi:http/types@0.2.0"));
        assert!(!is_wasi_p2("wasi:cli/exit@0.3.0"));
        assert!(is_wasi_p2("wasi_snapshot_preview1::fd_write"));
    }

    #[test]
    fn concurrency_only_for_what_uses_it() {
        let off = |wat: &str| {
            let binary = wat::parse_str(wat).unwrap();
            let format = if binary[6] == 1 { Format::Component } else { Format::Module };
            needs_concurrency(&binary, format)
        };
        assert_eq!(off("(module (func (export \"_start\")))"), Concurrency::Off);
        let lifted = r#"(component
            (core module $m (func (export "f") (result i32) i32.const 0))
            (core instance $i (instantiate $m))
            (func (export "f") (result u32) (canon lift (core func $i "f"))))"#;
        assert_eq!(off(lifted), Concurrency::Off);
        // A stream type anywhere, an async function type, a 0.3 interface, a task builtin.
        assert_eq!(off("(component (type (stream u8)))"), Concurrency::On);
        assert_eq!(off("(component (type (instance (type (future)))))"), Concurrency::On);
        assert_eq!(off("(component (type (func async)))"), Concurrency::On);
        assert_eq!(off(r#"(component (import "wasi:cli/stdout@0.3.0" (instance)))"#), Concurrency::On);
        assert_eq!(off("(component (core func (canon backpressure.inc)))"), Concurrency::On);
        // Not a readable component: as before, with concurrency.
        assert_eq!(needs_concurrency(b"\0asm\x0d\0\x01\0\xff", Format::Component), Concurrency::On);
    }

    /// A core module of `functions` functions, each with a little code, importing a function
    /// under a WASI 0.3 name and exporting one under a `wasi:http` handler's.
    fn big_core_module(functions: usize) -> String {
        let mut m = String::from(
            r#"(core module $m (import "wasi:cli/stdout@0.3.0" "write" (func)) (memory 1)"#,
        );
        for i in 0..functions {
            m.push_str(&format!(
                "(func (export \"wasi:http/handler@0.3.0#f{i}\") (param i32) (result i32) \
                 local.get 0 i32.const {i} i32.add i32.load)"
            ));
        }
        m.push(')');
        m
    }

    #[test]
    fn nested_core_modules_are_skipped_unread() {
        let module = big_core_module(2000);
        let component = |rest: &str| wat::parse_str(format!("(component {module} {rest})")).unwrap();
        // What follows the module is read: the skip lands on the next section (a misplaced one
        // would be unreadable, which says `On`).
        let after = component(r#"(import "wasi:cli/stdout@0.2.0" (instance)) (type (func))"#);
        assert!(after.len() > 20_000, "{}", after.len());
        assert_eq!(needs_concurrency(&after, Format::Component), Concurrency::Off);
        let streams = component("(type (stream u8))");
        assert_eq!(needs_concurrency(&streams, Format::Component), Concurrency::On);
        // A nested component is read, its own core module skipped.
        let nested = component(&format!("(component {module} (type (future)))"));
        assert_eq!(needs_concurrency(&nested, Format::Component), Concurrency::On);
        let nested = component(&format!(r#"(component {module} (import "wasi:cli/stdout@0.3.0" (instance)))"#));
        assert_eq!(needs_concurrency(&nested, Format::Component), Concurrency::On);
        let nested = component(&format!("(component {module} (type (func)))"));
        assert_eq!(needs_concurrency(&nested, Format::Component), Concurrency::Off);

        // Nothing of a core module reaches the walk: no code, no core section at all.
        let mut seen = Vec::new();
        let read = walk_component(&nested, |depth, payload| {
            use wasmparser::Payload::*;
            let what = match payload {
                Version { .. } => "version",
                ModuleSection { .. } => "module",
                ComponentSection { .. } => "component",
                ComponentTypeSection(_) => "type",
                CustomSection(c) => c.name(),
                End(_) => "end",
                CodeSectionStart { .. } | CodeSectionEntry(_) => "code",
                _ => "other",
            };
            seen.push((depth, what));
            ControlFlow::Continue(())
        });
        assert_eq!(read, Ok(()));
        assert_eq!(
            seen,
            [
                (1, "version"),
                (1, "module"),
                (1, "component"),
                (2, "version"),
                (2, "module"),
                (2, "type"),
                (2, "component-name"),
                (2, "end"),
                (1, "component-name"),
                (1, "end"),
            ]
        );
        // A module running past the end of the binary: unreadable.
        let truncated = &after[..after.len() / 2];
        assert_eq!(walk_component(truncated, |_, _| ControlFlow::Continue(())), Err(()));
        assert_eq!(needs_concurrency(truncated, Format::Component), Concurrency::On);
    }

    #[test]
    fn http_by_default_from_the_top_level_exports_only() {
        let module = big_core_module(200);
        let served = |rest: &str| serves_http_by_default(format!("(component {module} {rest})").as_bytes());
        let handler = r#"(import "i" (instance $i)) (export "wasi:http/incoming-handler@0.2.0" (instance $i))"#;
        assert!(served(handler));
        // The nested module's export by a handler's name, a nested component's export: no.
        assert!(!served(""));
        assert!(!served(&format!("(component {module} {handler})")));
        assert!(served(&format!("(component {module}) {handler}")));
        assert!(!served(&format!(r#"{handler} (export "wasi:cli/run@0.2.0" (instance $i))"#)));
    }

    #[test]
    fn wasi_p3_interfaces() {
        assert!(is_wasi_p3("wasi:cli/stdout@0.3.0"));
        assert!(is_wasi_p3("wasi:http/types@0.3.1"));
        assert!(!is_wasi_p3("wasi:cli/stdout@0.2.6"));
        assert!(!is_wasi_p3("wasmtest:x/y@0.3.0"));
        assert!(!is_wasi_p3("wasi:cli/stdout"));
    }

    #[test]
    fn detects_formats() {
        let module = wat::parse_str("(module)").unwrap();
        assert_eq!(decode(&module, "m").unwrap().1, Format::Module);
        let component = wat::parse_str("(component)").unwrap();
        assert_eq!(decode(&component, "c").unwrap().1, Format::Component);
        assert_eq!(decode(b"  ;; hi\n(module)", "t").unwrap().1, Format::Module);
    }

    #[test]
    fn rejects_garbage_with_the_file_name() {
        let err = decode(b"#!/bin/sh\necho hi\n", "/app/run.sh").unwrap_err();
        assert!(err.is_invalid_input());
        assert!(
            err.to_string()
                .starts_with("/app/run.sh: invalid wasm: neither"),
            "{err}"
        );
        let err = decode(b"\0asm\x01", "/x.wasm").unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
    }

    #[test]
    fn wat_errors_are_one_line_with_a_position() {
        let err = decode(b"(module\n  (func (i32.bogus)))", "/a.wat").unwrap_err();
        let text = err.to_string();
        assert!(!text.contains('\n'), "{text}");
        assert!(
            text.starts_with("/a.wat: invalid wasm: invalid WAT at 2:"),
            "{text}"
        );
    }
}
