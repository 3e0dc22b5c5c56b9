//! The `precompile` mode: compiled code in the node's cache before the first container of an
//! image starts.
//!
//! ```text
//! containerd-shim-wasm-v1 precompile IMAGE... [--namespace NS] [--address SOCK]   # one-shot
//! containerd-shim-wasm-v1 precompile --watch [--namespace NS | --all-namespaces]   # node agent
//! ```
//!
//! For an image in containerd's image store it finds the wasm a container of it would run,
//! reading containerd's content store over its GRPC API (nothing is unpacked):
//! - a wasm OCI artifact: every wasm layer (`application/wasm`, ...), each checked against its
//!   digest;
//! - a classic image: the config's `Entrypoint`/`Cmd` looked up in the merged view of its layer
//!   tarballs (`wasm_shim_oci::layers`: PATH, working directory, whiteouts, symlinks), when the
//!   image says it is wasm (a `*.wasm`/`*.wat` program, a wasm platform) or its layers are small
//!   enough to look into ([`SCAN_LIMIT`]); the file is wasm by its content, as at Create.
//!
//! Then it compiles the optimized code into the cache with the key Create looks up: the same
//! helper process as the shim's background compiles (`compile::precompile`), with their bounds
//! (the node's compile cgroup, the background time limit, a node-wide compile slot that leaves
//! one to starts, the entry's lock: a digest being compiled is not compiled again, one in the
//! cache is not compiled at all). The shim looks for optimized code first: with it there, a
//! start never needs the baseline tier.
//!
//! `--watch` sweeps the images already there (newest first, and only while the cache is under
//! its size bound: a sweep must not evict code in use for images nobody runs), then follows
//! containerd's `/images/create` and `/images/update` events, one image at a time; an image is
//! looked at once per manifest digest. When containerd goes away it connects again and sweeps
//! again. SIGTERM/SIGINT stop the agent and its running compile.
//!
//! A bad image (no wasm, corrupt wasm, not an image at all) is one log line naming it and why;
//! nothing is compiled for it and the agent goes on.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use containerd_client::services::v1::{
    content_client::ContentClient, events_client::EventsClient, images_client::ImagesClient, namespaces_client::NamespacesClient,
    GetImageRequest, ListImagesRequest, ListNamespacesRequest, ReadContentRequest, ReadContentResponse, SubscribeRequest,
};
use containerd_client::tonic::transport::Channel;
use containerd_client::tonic::{Request, Streaming};
use containerd_client::with_namespace;
use log::{debug, info, warn};
use oci_spec::image::{Descriptor, ImageManifest};
use wasm_shim_engine::{wasm_digest, Cache, Engine, Tier};
use wasm_shim_oci::artifact::{self, Manifest, TAR_LAYER_TYPES, WASM_LAYER_TYPES};
use wasm_shim_oci::layers::{self, ImageCommand, LayerIndex};
use wasm_shim_oci::{classify, Kind};

use crate::compile::Status;
use crate::settings::{show_size, Settings};

pub const DEFAULT_ADDRESS: &str = "/run/containerd/containerd.sock";
/// Manifests, indexes and configs are small.
const MAX_METADATA: u64 = 4 << 20;
/// A classic image whose config does not say it is wasm is looked into only when its layers
/// (compressed) add up to at most this: a native image's big layers are not read for nothing.
pub const SCAN_LIMIT: u64 = 64 << 20;
/// The longest one GRPC call (not a blob's whole stream) may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
const TOPICS: [&str; 2] = ["/images/create", "/images/update"];

const USAGE: &str = "usage: containerd-shim-wasm-v1 precompile IMAGE... [--namespace NS] [--address SOCK] [--debug]
       containerd-shim-wasm-v1 precompile --watch [--namespace NS | --all-namespaces] [--address SOCK] [--debug]";

#[derive(Debug, Clone, PartialEq, Eq)]
struct Options {
    images: Vec<String>,
    watch: bool,
    /// `None`: every namespace.
    namespace: Option<String>,
    address: String,
    debug: bool,
}

/// Parses the arguments after `precompile`; `env` gives `CONTAINERD_NAMESPACE` and
/// `CONTAINERD_ADDRESS` (ctr's defaults).
fn parse_args(args: &[String], env: impl Fn(&str) -> Option<String>) -> Result<Options, String> {
    let mut o = Options {
        images: Vec::new(),
        watch: false,
        namespace: None,
        address: env("CONTAINERD_ADDRESS").filter(|a| !a.is_empty()).unwrap_or_else(|| DEFAULT_ADDRESS.to_string()),
        debug: false,
    };
    let mut all = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (flag, inline) = crate::split_flag(a);
        let mut value = |name: &str| inline.clone().or_else(|| it.next().cloned()).filter(|v| !v.is_empty()).ok_or(format!("{name} needs a value"));
        match flag {
            "--watch" | "-w" => o.watch = true,
            "--all-namespaces" | "-A" => all = true,
            "--namespace" | "-n" => o.namespace = Some(value("--namespace")?),
            "--address" | "-a" => o.address = value("--address")?,
            "--debug" => o.debug = true,
            "-h" | "--help" => return Err(String::new()),
            f if f.starts_with('-') => return Err(format!("unknown flag {f}")),
            _ => o.images.push(a.clone()),
        }
    }
    if all && o.namespace.is_some() {
        return Err("--namespace and --all-namespaces exclude each other".into());
    }
    if o.watch && !o.images.is_empty() {
        return Err(format!("--watch follows every image; no image name is taken (got {})", o.images.join(" ")));
    }
    if !o.watch && o.images.is_empty() {
        return Err("name an image, or --watch".into());
    }
    if !o.watch && all {
        return Err("--all-namespaces is for --watch; name the namespace of the image".into());
    }
    if !all && o.namespace.is_none() {
        o.namespace = Some(env("CONTAINERD_NAMESPACE").filter(|n| !n.is_empty()).unwrap_or_else(|| "default".into()));
    }
    o.address = o.address.strip_prefix("unix://").unwrap_or(&o.address).to_string();
    Ok(o)
}

/// `precompile ...`: the exit status. One-shot: 0 when every image's wasm is in the cache, 2
/// when an image carries no wasm (and nothing failed), 1 on any failure.
pub fn main(args: &[String]) -> i32 {
    let opts = match parse_args(args, |k| std::env::var(k).ok()) {
        Ok(o) => o,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("containerd-shim-wasm-v1 precompile: {e}");
            }
            eprintln!("{USAGE}");
            return if e.is_empty() { 0 } else { 1 };
        }
    };
    crate::compile::init_stderr_log(if opts.debug { log::LevelFilter::Debug } else { log::LevelFilter::Info });
    let settings = Settings::from_env();
    if settings.cache_dir.is_none() {
        warn!("precompile: the compile cache is off (WASM_SHIM_CACHE_DIR=off): nothing to fill");
        return 1;
    }
    let mut agent = match Agent::new(&opts, settings) {
        Ok(a) => a,
        Err(e) => {
            warn!("precompile: {e}");
            return 1;
        }
    };
    if opts.watch {
        stop_on_signals();
        agent.watch(&opts);
        return 0;
    }
    let ns = opts.namespace.clone().unwrap_or_default();
    let mut code = 0;
    for image in &opts.images {
        match agent.connect(&opts.address).and_then(|ch| agent.image(&ch, &ns, image, false)) {
            Ok(Done::Stored) => {}
            Ok(Done::NoWasm) => code = code.max(2),
            Ok(Done::Failed) => code = 1,
            Err(e) => {
                warn!("precompile {ns}/{image}: {e}");
                code = 1;
            }
        }
    }
    code
}

static STOPPING: AtomicBool = AtomicBool::new(false);

/// SIGTERM and SIGINT: the running compile helper (in the compile cgroup, outside the agent's
/// own) is killed, then the agent exits.
fn stop_on_signals() {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    // Blocked in this thread before any other exists, so every thread inherits it; the
    // helpers start with an empty mask (std's spawn resets it).
    if let Err(e) = set.thread_block() {
        warn!("precompile: signals: {e}");
        return;
    }
    let spawned = std::thread::Builder::new().name("signals".into()).spawn(move || {
        if let Ok(sig) = set.wait() {
            STOPPING.store(true, Ordering::SeqCst);
            crate::compile::kill_precompile_helper();
            info!("precompile: {sig}: stopping");
            std::process::exit(0);
        }
    });
    if let Err(e) = spawned {
        warn!("precompile: signals: {e}");
    }
}

/// How one image ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Done {
    /// Its wasm is in the cache (compiled now, found there, or being compiled by another).
    Stored,
    /// It carries no wasm: nothing to do.
    NoWasm,
    /// Its wasm could not be compiled (invalid, timed out, the helper failed).
    Failed,
}

/// A wasm program found in an image.
struct Program {
    /// For logs and compile.log: `image@layer digest` or `image:/path`.
    name: String,
    code: Code,
}

/// A program's bytes, or the wasm layer that holds them: an artifact's layers are read one at
/// a time, each dropped once compiled, so the agent holds one module at a time.
enum Code {
    Bytes(Vec<u8>),
    Layer(Descriptor),
}

/// How compiling one program ended.
enum Compiled {
    /// Its optimized code is in the cache.
    Stored,
    /// Another process is compiling it: in the cache once that ends well; not recorded as
    /// done, so the next event or sweep of the image tries again.
    Busy,
    /// Not valid wasm (logged by the helper).
    Invalid,
    /// Not compiled this time (timed out, the helper failed, the agent stopping).
    Failed,
}

/// What an image carries.
enum Found {
    Wasm(Vec<Program>),
    /// Why there is nothing to compile.
    None(String),
}

struct Agent {
    rt: tokio::runtime::Runtime,
    settings: Settings,
    engine: Engine,
    cache_dir: PathBuf,
    /// Manifest digests already handled (compiled, cached, no wasm, invalid), with how and why:
    /// a tag of the same manifest is not looked into again. Transient failures (a timeout, a
    /// helper that failed) are not kept: the next event or sweep tries again.
    seen: HashMap<String, (Done, String)>,
}

impl Agent {
    fn new(_opts: &Options, settings: Settings) -> Result<Agent, String> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| format!("runtime for containerd's API: {e}"))?;
        let engine = Engine::with_config(settings.engine_config()).map_err(|e| format!("engine: {e}"))?;
        let cache_dir = settings.cache_dir.clone().unwrap_or_default();
        Ok(Agent { rt, settings, engine, cache_dir, seen: HashMap::new() })
    }

    fn connect(&self, address: &str) -> Result<Channel, String> {
        self.rt
            .block_on(async { tokio::time::timeout(CALL_TIMEOUT, containerd_client::connect(address)).await })
            .map_err(|_| format!("connect to containerd at {address}: timed out"))?
            .map_err(|e| format!("connect to containerd at {address}: {e}"))
    }

    fn call<T>(&self, what: &str, fut: impl std::future::Future<Output = Result<containerd_client::tonic::Response<T>, containerd_client::tonic::Status>>) -> Result<T, String> {
        match self.rt.block_on(async { tokio::time::timeout(CALL_TIMEOUT, fut).await }) {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(s)) => Err(format!("{what}: {}", s.message())),
            Err(_) => Err(format!("{what}: timed out")),
        }
    }

    /// Handles image `name` of namespace `ns`. `sweeping`: part of a sweep, so skipped when the
    /// cache is full. Errors are about reaching containerd (the caller says which image).
    fn image(&mut self, ch: &Channel, ns: &str, name: &str, sweeping: bool) -> Result<Done, String> {
        let image = self
            .call(&format!("image {name}"), ImagesClient::new(ch.clone()).get(with_namespace!(GetImageRequest { name: name.to_string() }, ns)))?
            .image
            .ok_or_else(|| format!("image {name}: not in containerd's image store"))?;
        let Some(target) = image.target else {
            warn!("precompile {ns}/{name}: not an image: no target descriptor");
            return Ok(Done::Failed);
        };
        if let Some((done, what)) = self.seen.get(&target.digest) {
            let said = format!("precompile {ns}/{name}: {what} (manifest {}, looked at before)", target.digest);
            if sweeping {
                debug!("{said}");
            } else {
                info!("{said}");
            }
            return Ok(*done);
        }
        if sweeping && !self.cache_has_room() {
            info!("precompile {ns}/{name}: skipped: the compile cache is at its size bound ({}); a sweep does not evict code in use", show_size(self.settings.cache_max_size));
            return Ok(Done::Stored);
        }
        let found = match self.find_wasm(ch, ns, name, &target.media_type, &target.digest, target.size) {
            Ok(f) => f,
            Err(e) => {
                warn!("precompile {ns}/{name}: {e}; nothing compiled");
                // A damaged or unsupported image stays so for this manifest.
                self.seen.insert(target.digest, (Done::Failed, format!("{e}; nothing compiled")));
                return Ok(Done::Failed);
            }
        };
        let programs = match found {
            Found::None(why) => {
                info!("precompile {ns}/{name}: no wasm to compile: {why}");
                self.seen.insert(target.digest, (Done::NoWasm, format!("no wasm to compile: {why}")));
                return Ok(Done::NoWasm);
            }
            Found::Wasm(p) => p,
        };
        let mut done = Done::Stored;
        let mut retry = false;
        let mut content = ContentClient::new(ch.clone());
        for p in programs {
            let bytes = match p.code {
                Code::Bytes(b) => b,
                Code::Layer(layer) => match self.read_blob(&mut content, ns, &layer, self.settings.max_module_size) {
                    Ok(b) => match artifact::verify_blob(&layer, &b) {
                        Ok(()) => b,
                        // Damaged: so for good.
                        Err(e) => {
                            warn!("precompile {ns}/{}: {e}; nothing compiled", p.name);
                            done = Done::Failed;
                            continue;
                        }
                    },
                    Err(e) => {
                        warn!("precompile {ns}/{}: {e}; nothing compiled", p.name);
                        done = Done::Failed;
                        retry = true;
                        continue;
                    }
                },
            };
            match self.compile(ns, &p.name, bytes) {
                Compiled::Stored => {}
                Compiled::Busy => retry = true,
                Compiled::Failed => {
                    done = Done::Failed;
                    retry = true;
                }
                // Invalid wasm: so for good.
                Compiled::Invalid => done = Done::Failed,
            }
        }
        if !retry {
            let what = if done == Done::Stored { "its wasm is in the compile cache" } else { "not valid wasm; nothing compiled" };
            self.seen.insert(target.digest, (done, what.to_string()));
        }
        Ok(done)
    }

    /// Whether the cache is under its size bound.
    fn cache_has_room(&self) -> bool {
        match Cache::open_existing(&self.cache_dir).and_then(|c| c.entries()) {
            Ok(entries) => has_room(entries.iter().map(|e| e.size), self.settings.cache_max_size),
            // Not made yet: empty.
            Err(_) => true,
        }
    }

    /// Compiles one program (`name`, its `bytes`) unless its optimized code is cached.
    fn compile(&self, ns: &str, name: &str, bytes: Vec<u8>) -> Compiled {
        let digest = wasm_digest(&bytes);
        if let Ok(cache) = Cache::open_existing(&self.cache_dir) {
            if self.engine.has_cached(&cache, &bytes, Tier::Optimized).unwrap_or(false) {
                info!("precompile {ns}/{name}: already in the compile cache (sha256:{digest})");
                return Compiled::Stored;
            }
        }
        if STOPPING.load(Ordering::SeqCst) {
            return Compiled::Failed;
        }
        let key = self.engine.cache_key(&bytes, Tier::Optimized).map(|k| k.to_string()).unwrap_or_default();
        let started = std::time::Instant::now();
        match crate::compile::precompile(&self.settings, name, bytes) {
            Status::Stored => {
                info!("precompile {ns}/{name}: optimized code in the compile cache in {} ms (entry {key})", started.elapsed().as_millis());
                Compiled::Stored
            }
            Status::Busy => {
                info!("precompile {ns}/{name}: being compiled by another process (sha256:{digest}); not compiled twice here; tried again on the image's next event or sweep if it is still missing");
                Compiled::Busy
            }
            Status::Invalid => {
                warn!("precompile {ns}/{name}: not valid wasm (sha256:{digest}); nothing compiled");
                Compiled::Invalid
            }
            Status::TimedOut => {
                warn!("precompile {ns}/{name}: compile stopped after {:?} (WASM_SHIM_BACKGROUND_COMPILE_TIMEOUT)", started.elapsed());
                Compiled::Failed
            }
            // Only the baseline compiler answers this; precompile asks the optimizing one.
            Status::Failed | Status::Unsupported => {
                warn!("precompile {ns}/{name}: compile failed (see above); the first start compiles it");
                Compiled::Failed
            }
        }
    }

    /// The wasm image `name` (target descriptor given) carries.
    fn find_wasm(&self, ch: &Channel, ns: &str, name: &str, media_type: &str, digest: &str, size: i64) -> Result<Found, String> {
        let mut desc = descriptor(media_type, digest, size)?;
        let mut content = ContentClient::new(ch.clone());
        // An index points at manifests; follow one level, as Create does.
        for depth in 0..2 {
            let blob = self.read_small(&mut content, ns, &desc)?;
            match artifact::parse_manifest(desc.media_type().as_ref(), &blob).map_err(|e| e.to_string())? {
                Manifest::Index(ms) if depth == 0 => {
                    desc = artifact::pick_manifest(&ms, wasm_shim_oci::image::host_architecture()).map_err(|e| e.to_string())?;
                }
                Manifest::Index(_) => return Err("an index inside an index is not supported".into()),
                Manifest::Image(_) => {
                    let manifest: ImageManifest = serde_json::from_slice(&blob).map_err(|e| format!("image manifest: {e}"))?;
                    return self.wasm_of_manifest(&mut content, ns, name, &manifest);
                }
            }
        }
        Err("no image manifest found".into())
    }

    fn wasm_of_manifest(&self, content: &mut ContentClient<Channel>, ns: &str, name: &str, manifest: &ImageManifest) -> Result<Found, String> {
        let layers = manifest.layers();
        let kind = |d: &Descriptor| d.media_type().to_string();
        if let Some(odd) = layers.iter().find(|d| !WASM_LAYER_TYPES.contains(&kind(d).as_str()) && !TAR_LAYER_TYPES.contains(&kind(d).as_str())) {
            return Err(format!("layer {} has media type {:?}, neither wasm nor a filesystem layer", odd.digest(), kind(odd)));
        }
        let wasm: Vec<&Descriptor> = layers.iter().filter(|d| WASM_LAYER_TYPES.contains(&kind(d).as_str())).collect();
        if !wasm.is_empty() {
            // Each layer once, however often the manifest lists it; read when compiled.
            let mut listed = HashSet::new();
            let programs = wasm
                .into_iter()
                .filter(|layer| listed.insert(layer.digest().to_string()))
                .map(|layer| Program { name: format!("{name}@{}", layer.digest()), code: Code::Layer(layer.clone()) })
                .collect();
            return Ok(Found::Wasm(programs));
        }
        // A classic image: the program its config names, in its layers.
        let config = manifest.config();
        let blob = self.read_small(content, ns, config)?;
        let command = ImageCommand::from_config(&blob).map_err(|e| e.to_string())?;
        let Some(program) = command.program() else {
            return Ok(Found::None("the image config names no program (Entrypoint, Cmd)".into()));
        };
        let total: u64 = layers.iter().map(|l| l.size()).sum();
        if !command.says_wasm() && total > SCAN_LIMIT {
            return Ok(Found::None(format!(
                "its program {program} is not named *.wasm, the image is not for a wasm platform, and its {} of layers are more than the {} looked into",
                show_size(total),
                show_size(SCAN_LIMIT)
            )));
        }
        let mut index = LayerIndex::new();
        for layer in layers {
            let stream = BlobReader::open(self, content, ns, layer)?;
            index.add_layer(layers::decompressed(&kind(layer), stream).map_err(|e| e.to_string())?).map_err(|e| format!("layer {}: {e}", layer.digest()))?;
        }
        let Some(found) = index.find_program(&program, command.path_env.as_deref(), &command.cwd) else {
            return Ok(Found::None(format!("its program {program} is not a regular file of its layers")));
        };
        let layer = &layers[found.layer];
        let stream = BlobReader::open(self, content, ns, layer)?;
        let bytes = layers::read_file(layers::decompressed(&kind(layer), stream).map_err(|e| e.to_string())?, &found.entry, self.settings.max_module_size)
            .map_err(|e| e.to_string())?;
        let shown = format!("{name}:{}", found.path);
        match classify(&bytes, &found.path) {
            Kind::WasmModule | Kind::WasmComponent | Kind::Wat => Ok(Found::Wasm(vec![Program { name: shown, code: Code::Bytes(bytes) }])),
            Kind::Elf | Kind::Script => Ok(Found::None(format!("its program {} is a native executable", found.path))),
            Kind::Unknown if command.says_wasm() => {
                let head: Vec<String> = bytes.iter().take(4).map(|b| format!("{b:02x}")).collect();
                Err(format!("its program {} is not wasm (starts with {})", found.path, if head.is_empty() { "nothing: empty".into() } else { head.join(" ") }))
            }
            Kind::Unknown => Ok(Found::None(format!("its program {} is neither wasm nor native", found.path))),
        }
    }

    fn read_small(&self, content: &mut ContentClient<Channel>, ns: &str, desc: &Descriptor) -> Result<Vec<u8>, String> {
        let blob = self.read_blob(content, ns, desc, MAX_METADATA)?;
        artifact::verify_blob(desc, &blob).map_err(|e| e.to_string())?;
        Ok(blob)
    }

    fn read_blob(&self, content: &mut ContentClient<Channel>, ns: &str, desc: &Descriptor, limit: u64) -> Result<Vec<u8>, String> {
        if desc.size() > limit {
            return Err(format!("blob {}: {} is more than the {} allowed", desc.digest(), show_size(desc.size()), show_size(limit)));
        }
        let mut out = Vec::with_capacity(desc.size() as usize);
        BlobReader::open(self, content, ns, desc)?
            .take(limit + 1)
            .read_to_end(&mut out)
            .map_err(|e| format!("blob {}: {e}", desc.digest()))?;
        if out.len() as u64 > limit {
            return Err(format!("blob {}: larger than the {} allowed", desc.digest(), show_size(limit)));
        }
        Ok(out)
    }

    /// Every image of `namespaces` (all when `None`), newest first.
    fn sweep(&mut self, ch: &Channel, namespaces: &[String]) -> Result<(), String> {
        for ns in namespaces {
            let mut images = self.call(&format!("images of {ns}"), ImagesClient::new(ch.clone()).list(with_namespace!(ListImagesRequest { filters: vec![] }, ns.as_str())))?.images;
            images.sort_by_key(|i| std::cmp::Reverse(i.updated_at.as_ref().or(i.created_at.as_ref()).map(|t| (t.seconds, t.nanos))));
            debug!("precompile: sweeping {} images of {ns}", images.len());
            for image in images {
                if STOPPING.load(Ordering::SeqCst) {
                    return Ok(());
                }
                if let Err(e) = self.image(ch, ns, &image.name, true) {
                    warn!("precompile {ns}/{}: {e}", image.name);
                }
            }
        }
        Ok(())
    }

    fn namespaces(&self, ch: &Channel, opts: &Options) -> Result<Vec<String>, String> {
        match &opts.namespace {
            Some(ns) => Ok(vec![ns.clone()]),
            None => Ok(self
                .call("namespaces", NamespacesClient::new(ch.clone()).list(Request::new(ListNamespacesRequest { filter: String::new() })))?
                .namespaces
                .into_iter()
                .map(|n| n.name)
                .collect()),
        }
    }

    /// The node agent: subscribe, sweep, then follow image events; again after containerd
    /// comes back. Returns only when stopped.
    fn watch(&mut self, opts: &Options) {
        let mut pause = Duration::from_secs(1);
        let mut said_down = false;
        loop {
            let ch = match self.connect(&opts.address) {
                Ok(ch) => ch,
                Err(e) => {
                    if !said_down {
                        warn!("precompile: {e}; trying again");
                        said_down = true;
                    }
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_secs(30));
                    continue;
                }
            };
            match self.follow(&ch, opts) {
                Ok(()) => warn!("precompile: containerd's event stream ended; connecting again"),
                Err(e) => warn!("precompile: {e}; connecting again"),
            }
            said_down = false;
            pause = Duration::from_secs(1);
            std::thread::sleep(pause);
        }
    }

    fn follow(&mut self, ch: &Channel, opts: &Options) -> Result<(), String> {
        // Subscribed before the sweep: an image that arrives meanwhile is an event waiting.
        // containerd answers a Subscribe only with its first event, so the call runs as a task
        // of the runtime (it goes on during the sweep's calls) and is awaited after the sweep.
        let filters = subscribe_filters(opts.namespace.as_deref());
        let mut client = EventsClient::new(ch.clone());
        let subscribed = self.rt.spawn(async move { client.subscribe(Request::new(SubscribeRequest { filters })).await });
        self.rt.block_on(async { tokio::time::sleep(Duration::from_millis(100)).await });
        if subscribed.is_finished() {
            // Answered at once: only an error is.
            return match self.rt.block_on(subscribed) {
                Ok(Err(s)) => Err(format!("subscribe to containerd's events: {}", s.message())),
                _ => Err("subscribe to containerd's events: ended at once".into()),
            };
        }
        let namespaces = self.namespaces(ch, opts)?;
        info!(
            "precompile: watching images in {} of containerd at {} (cache {}, at most {})",
            opts.namespace.as_deref().map(|n| format!("namespace {n}")).unwrap_or_else(|| "every namespace".into()),
            opts.address,
            self.cache_dir.display(),
            show_size(self.settings.cache_max_size)
        );
        self.sweep(ch, &namespaces)?;
        info!("precompile: sweep done; following image events");
        let mut events: Streaming<containerd_client::types::Envelope> = match self.rt.block_on(subscribed) {
            Ok(Ok(r)) => r.into_inner(),
            Ok(Err(s)) => return Err(format!("subscribe to containerd's events: {}", s.message())),
            Err(e) => return Err(format!("subscribe to containerd's events: {e}")),
        };
        loop {
            let envelope = match self.rt.block_on(events.message()) {
                Ok(Some(e)) => e,
                Ok(None) => return Ok(()),
                Err(e) => return Err(format!("event stream: {}", e.message())),
            };
            let Some(name) = image_of_event(&envelope) else {
                debug!("precompile: event {} without an image name", envelope.topic);
                continue;
            };
            debug!("precompile: {} {}/{name}", envelope.topic, envelope.namespace);
            if let Err(e) = self.image(ch, &envelope.namespace, &name, false) {
                warn!("precompile {}/{name}: {e}", envelope.namespace);
            }
        }
    }
}

/// Whether entries of these sizes leave room under `max` bytes.
fn has_room(sizes: impl Iterator<Item = u64>, max: u64) -> bool {
    sizes.sum::<u64>() < max
}

/// Filters for containerd's Subscribe: image creates and updates, in `namespace` or all.
fn subscribe_filters(namespace: Option<&str>) -> Vec<String> {
    TOPICS
        .iter()
        .map(|t| match namespace {
            Some(ns) => format!("namespace=={ns},topic=={t:?}"),
            None => format!("topic=={t:?}"),
        })
        .collect()
}

/// containerd's `ImageCreate` and `ImageUpdate` events (`api/events/image.proto`: `name` = 1,
/// `labels` = 2), which the containerd-client crate does not generate: the name is all the
/// agent reads (prost skips the labels).
#[derive(Clone, PartialEq, prost::Message)]
struct ImageEvent {
    #[prost(string, tag = "1")]
    name: String,
}

/// The image name of an `/images/create` or `/images/update` event.
fn image_of_event(e: &containerd_client::types::Envelope) -> Option<String> {
    use prost::Message;
    if !TOPICS.contains(&e.topic.as_str()) {
        return None;
    }
    let name = ImageEvent::decode(e.event.as_ref()?.value.as_slice()).ok()?.name;
    (!name.is_empty()).then_some(name)
}

fn descriptor(media_type: &str, digest: &str, size: i64) -> Result<Descriptor, String> {
    let d = serde_json::json!({"mediaType": media_type, "digest": digest, "size": size.max(0)});
    serde_json::from_value(d).map_err(|e| format!("not an image: descriptor {digest:?}: {e}"))
}

/// A blob of containerd's content store as a `Read`, chunk by chunk (a layer is never whole in
/// memory).
struct BlobReader<'a> {
    rt: &'a tokio::runtime::Runtime,
    stream: Streaming<ReadContentResponse>,
    chunk: Vec<u8>,
    at: usize,
    digest: String,
}

impl<'a> BlobReader<'a> {
    fn open(agent: &'a Agent, content: &mut ContentClient<Channel>, ns: &str, desc: &Descriptor) -> Result<BlobReader<'a>, String> {
        let digest = desc.digest().to_string();
        let stream = agent.call(
            &format!("blob {digest}"),
            content.read(with_namespace!(ReadContentRequest { digest: digest.clone(), offset: 0, size: 0 }, ns)),
        )?;
        Ok(BlobReader { rt: &agent.rt, stream, chunk: Vec::new(), at: 0, digest })
    }
}

impl Read for BlobReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.chunk.len() {
            let next = self.rt.block_on(async { tokio::time::timeout(CALL_TIMEOUT, self.stream.message()).await });
            match next {
                Ok(Ok(Some(m))) => {
                    self.chunk = m.data;
                    self.at = 0;
                }
                Ok(Ok(None)) => return Ok(0),
                Ok(Err(s)) => return Err(std::io::Error::other(format!("blob {}: {}", self.digest, s.message()))),
                Err(_) => return Err(std::io::Error::other(format!("blob {}: timed out", self.digest))),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn one_shot_and_watch_arguments() {
        let o = parse_args(&args(&["docker.io/x/y:1", "--namespace", "k8s.io", "--address=unix:///run/c.sock"]), no_env).unwrap();
        assert_eq!((o.images, o.watch, o.namespace.as_deref(), o.address.as_str()), (args(&["docker.io/x/y:1"]), false, Some("k8s.io"), "/run/c.sock"));
        let o = parse_args(&args(&["--watch", "--all-namespaces"]), no_env).unwrap();
        assert_eq!((o.watch, o.namespace, o.address.as_str()), (true, None, DEFAULT_ADDRESS));
        // ctr's environment gives the defaults.
        let env = |k: &str| match k {
            "CONTAINERD_NAMESPACE" => Some("fromenv".to_string()),
            "CONTAINERD_ADDRESS" => Some("/tmp/c.sock".to_string()),
            _ => None,
        };
        let o = parse_args(&args(&["-w"]), env).unwrap();
        assert_eq!((o.namespace.as_deref(), o.address.as_str()), (Some("fromenv"), "/tmp/c.sock"));
        assert_eq!(parse_args(&args(&["img"]), no_env).unwrap().namespace.as_deref(), Some("default"));
    }

    #[test]
    fn contradictory_arguments_are_refused() {
        for (a, want) in [
            (&["--watch", "img"][..], "no image name is taken"),
            (&[][..], "name an image, or --watch"),
            (&["--watch", "-A", "-n", "x"][..], "exclude each other"),
            (&["img", "--all-namespaces"][..], "for --watch"),
            (&["img", "--bogus"][..], "unknown flag --bogus"),
            (&["img", "--namespace"][..], "--namespace needs a value"),
        ] {
            let e = parse_args(&args(a), no_env).unwrap_err();
            assert!(e.contains(want), "{a:?}: {e}");
        }
        assert_eq!(parse_args(&args(&["--help"]), no_env).unwrap_err(), "");
    }

    #[test]
    fn filters_name_the_topics_and_the_namespace() {
        assert_eq!(subscribe_filters(None), [r#"topic=="/images/create""#, r#"topic=="/images/update""#]);
        assert_eq!(subscribe_filters(Some("k8s.io"))[1], r#"namespace==k8s.io,topic=="/images/update""#);
    }

    /// containerd's own message, labels included.
    #[derive(Clone, PartialEq, prost::Message)]
    struct FullImageEvent {
        #[prost(string, tag = "1")]
        name: String,
        #[prost(map = "string, string", tag = "2")]
        labels: std::collections::HashMap<String, String>,
    }

    #[test]
    fn image_names_from_events() {
        use prost::Message;
        let envelope = |topic: &str, value: Vec<u8>| containerd_client::types::Envelope {
            timestamp: None,
            namespace: "ns".into(),
            topic: topic.into(),
            event: Some(prost_types::Any { type_url: "x".into(), value }),
        };
        let labels = [("io.cri-containerd.image".to_string(), "managed".to_string())].into_iter().collect();
        let create = FullImageEvent { name: "docker.io/a/b:1".into(), labels };
        assert_eq!(image_of_event(&envelope("/images/create", create.encode_to_vec())).as_deref(), Some("docker.io/a/b:1"));
        let update = FullImageEvent { name: "c:2".into(), labels: Default::default() };
        assert_eq!(image_of_event(&envelope("/images/update", update.encode_to_vec())).as_deref(), Some("c:2"));
        assert_eq!(image_of_event(&envelope("/images/delete", update.encode_to_vec())), None);
        assert_eq!(image_of_event(&envelope("/images/create", vec![0xff, 0xff])), None, "garbage is no image");
    }

    #[test]
    fn a_sweep_stops_at_the_cache_bound() {
        assert!(has_room([100, 200].into_iter(), 1000));
        assert!(!has_room([600, 400].into_iter(), 1000));
        assert!(has_room(std::iter::empty(), 1));
    }

    #[test]
    fn a_descriptor_that_is_not_one_is_an_error() {
        assert!(descriptor("application/vnd.oci.image.manifest.v1+json", &format!("sha256:{}", "0".repeat(64)), 2).is_ok());
        let e = descriptor("x", "not a digest", 1).unwrap_err();
        assert!(e.contains("not an image"), "{e}");
    }
}
