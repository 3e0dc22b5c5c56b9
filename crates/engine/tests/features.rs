//! Wasm features and debuggable traps, in-process, with the repo's WAT guests
//! (`test/guests/wat`): exceptions and GC run on the optimizing tier and are refused by the
//! baseline one, features change cache keys, feature lists wasmtime refuses are errors naming
//! them, and a trap names where it happened and leaves a bounded core dump.

use wasm_shim_engine::{
    Cache, Capture, CoreDumpCapture, Engine, EngineConfig, EngineError, Features, Outcome, RunOptions, Stdio, Stored, Tier,
};

fn guest(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../test/guests/wat").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn engine_with(features: &str, coredump: bool) -> Engine {
    Engine::with_config(EngineConfig { features: Features::parse(features).unwrap(), coredump, ..Default::default() }).unwrap()
}

fn run(engine: &Engine, prepared: &wasm_shim_engine::Prepared, coredump: Option<CoreDumpCapture>) -> (Outcome, String) {
    let capture = Capture::new(Vec::new());
    let opts = RunOptions { args: vec!["g".into()], stdio: Stdio::Capture(capture.clone()), coredump, ..Default::default() };
    let outcome = engine.run(prepared, &opts);
    (outcome, String::from_utf8_lossy(&capture.stdout()).into_owned())
}

#[test]
fn exceptions_and_gc_run_optimized_and_are_beyond_winch() {
    let engine = Engine::new().unwrap();
    for (file, expected) in [("exceptions.wat", "caught 42\n"), ("gc.wat", "gc sum 6\n")] {
        let bytes = guest(file);
        let prepared = engine.prepare(&bytes, file, None).unwrap();
        assert_eq!(run(&engine, &prepared, None), (Outcome::Exited(0), expected.to_string()), "{file}");
        // Winch refuses it as a module it cannot validate: what sends the shim's first start
        // to the optimizing compiler.
        let err = engine.prepare_tier(&bytes, file, None, Tier::Baseline).unwrap_err();
        assert!(err.is_invalid_input(), "{file}: {err}");
    }
}

#[test]
fn a_feature_turned_off_refuses_the_module_naming_it() {
    let engine = engine_with("-exceptions", false);
    let err = engine.prepare(&guest("exceptions.wat"), "/x.wasm", None).unwrap_err();
    assert!(err.is_invalid_input(), "{err}");
    assert!(err.to_string().contains("exceptions"), "{err}");
    let engine = engine_with("-gc", false);
    let err = engine.prepare(&guest("gc.wat"), "/g.wasm", None).unwrap_err();
    assert!(err.to_string().to_lowercase().contains("gc"), "{err}");
}

#[test]
fn features_are_part_of_the_cache_key_and_coredumps_are_not() {
    let bytes = guest("gc.wat");
    let default = Engine::new().unwrap();
    let key = |e: &Engine, t| e.cache_key(&bytes, t).unwrap();
    for tier in [Tier::Optimized, Tier::Baseline] {
        assert_ne!(key(&default, tier), key(&engine_with("-simd", false), tier), "{tier}");
        assert_ne!(key(&default, tier), key(&engine_with("+wide-arithmetic", false), tier), "{tier}");
        // The same set asked otherwise is the same code.
        assert_eq!(key(&default, tier), key(&engine_with("+simd,+gc", false), tier), "{tier}");
        // Core dumps are a run-time setting: the same entry.
        assert_eq!(key(&default, tier), key(&engine_with("", true), tier), "{tier}");
    }
    // An entry compiled without GC is not the one an engine with GC loads.
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path()).unwrap();
    let hello = br#"(module (func (export "_start")))"#;
    let no_gc = engine_with("-gc", false);
    assert!(matches!(no_gc.compile_to_cache(&cache, hello, "/h", Tier::Optimized, true).unwrap(), Stored::Compiled { .. }));
    assert!(default.load_cached(&cache, hello, "/h", None, &[Tier::Optimized]).unwrap().is_none());
    assert!(no_gc.load_cached(&cache, hello, "/h", None, &[Tier::Optimized]).unwrap().is_some());
}

#[test]
fn off_by_default_features_build_and_unoffered_ones_are_unknown() {
    // Off-by-default features wasmtime 48 implements build, for both tiers.
    for ok in ["+wide-arithmetic", "+custom-page-sizes", "+stack-switching", "-threads,-gc,-exceptions", "-simd"] {
        let features = Features::parse(ok).unwrap();
        let engine = Engine::with_config(EngineConfig { features, ..Default::default() }).unwrap();
        engine.prepare_tier(br#"(module (func (export "_start")))"#, "/m", None, Tier::Baseline).unwrap();
    }
    // Phase 1, validation only in wasmtime 48: not offered.
    let err = Features::parse("+shared-everything-threads").unwrap_err();
    assert!(err.to_string().contains("unknown wasm feature \"shared-everything-threads\""), "{err}");
    // What wasmtime refuses to configure (none on x86_64 Linux in this table) is a Features
    // error, which counts as the workload's fault.
    assert!(EngineError::Features("x".into()).is_invalid_input());
}

#[test]
fn a_trap_names_function_and_offset_and_leaves_a_core_dump() {
    let engine = engine_with("", true);
    let bytes = guest("trap.wat");
    let prepared = engine.prepare(&bytes, "/trap.wasm", None).unwrap();
    let capture = CoreDumpCapture::new(16 << 20);
    let (outcome, _) = run(&engine, &prepared, Some(capture.clone()));
    let Outcome::Trap { message, oom: false } = &outcome else { panic!("{outcome:?}") };
    assert!(message.contains("unreachable"), "{message}");
    assert!(message.contains("in func explode"), "{message}");
    assert!(message.contains("wasm offset 0x"), "{message}");
    assert!(message.contains("called from compute <- "), "{message}");
    let dump = capture.take().expect("a core dump").expect("within the bound");
    assert_eq!(&dump[..4], b"\0asm", "a core dump is a wasm module");
    assert!(dump.windows(16).any(|w| w == b"core-dump-marker"), "the guest's memory is in it");
    assert!(dump.windows(4).any(|w| w == b"core"), "its `core` custom section");
    assert!(capture.take().is_none(), "taken once");

    // Past the bound: not serialized, and said why.
    let small = CoreDumpCapture::new(1024);
    run(&engine, &prepared, Some(small.clone()));
    let why = small.take().expect("a trap").unwrap_err();
    assert!(why.contains("65536") && why.contains("1024"), "{why}");

    // A clean exit leaves none; an engine without core dumps records none.
    let clean = engine.prepare(br#"(module (func (export "_start")))"#, "/ok", None).unwrap();
    let none = CoreDumpCapture::new(16 << 20);
    assert_eq!(run(&engine, &clean, Some(none.clone())).0, Outcome::Exited(0));
    assert!(none.take().is_none());
    let plain = Engine::new().unwrap();
    let prepared = plain.prepare(&bytes, "/trap.wasm", None).unwrap();
    let off = CoreDumpCapture::new(16 << 20);
    assert!(matches!(run(&plain, &prepared, Some(off.clone())).0, Outcome::Trap { .. }));
    assert!(off.take().is_none());
}
