//! Serves a `wasi:http` component (or, with `--wagi`, a WAGI module) on a port, the way the shim
//! does inside a container, without containerd: for profiling and load tests of the serving
//! path. `cargo run --release -p wasm-shim-engine --example serve -- FILE PORT [--wagi] [--baseline] [--preopen] [--access-log]`
//! (Ctrl-C stops it).

use wasm_shim_engine::{Engine, EngineConfig, RunOptions, ServeKind, ServeLimits, ServeOptions, ServingPool, Shutdown, Tier};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(file), Some(port)) = (args.get(1), args.get(2)) else {
        return Err("usage: serve FILE PORT [--wagi]".into());
    };
    let flag = |name: &str| args.iter().any(|a| a == name);
    let kind = if flag("--wagi") { ServeKind::Wagi } else { ServeKind::Http };
    let limits = ServeLimits::default();
    let engine = Engine::with_config(EngineConfig {
        pooling: true,
        serving: Some(ServingPool { instances: limits.max_concurrency, memory: limits.request_memory }),
        ..Default::default()
    })?;
    let bytes = std::fs::read(file)?;
    let tier = if flag("--baseline") { Tier::Baseline } else { Tier::Optimized };
    let prepared = engine.serve_as(engine.prepare_tier(&bytes, file, None, tier)?, kind)?;
    let listener = std::net::TcpListener::bind(("127.0.0.1", port.parse::<u16>()?))?;
    let opts = ServeOptions {
        run: RunOptions {
            args: vec![file.clone()],
            cwd: "/".into(),
            // What the shim gives a container: its rootfs (here the host's /, read-only use).
            preopens: if flag("--preopen") { vec![("/".into(), "/".into())] } else { vec![] },
            ..Default::default()
        },
        limits,
        metrics: None,
        access_log: flag("--access-log"),
        tracing: None,
        current_thread: flag("--current-thread"),
        in_flight: None,
        when_idle: None,
    };
    let stats = engine.serve(prepared, listener, &opts, &Shutdown::new())?;
    eprintln!("{stats:?}");
    Ok(())
}
