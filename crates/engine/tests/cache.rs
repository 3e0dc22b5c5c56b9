//! The compile cache and the baseline tier, in-process (and, for the
//! compile-once check across processes, in copies of this test binary).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use wasm_shim_engine::{
    Cache, Capture, Engine, EngineConfig, Origin, Outcome, Prepared, RunOptions, Stdio, Stored,
    Tier,
};

/// Prints "hello <n>" (so each `n` is a different module) and exits with 3.
fn hello(n: u32) -> String {
    let text = format!("hello {n}\n");
    format!(
        r#"
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "{text}")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 100))
    (i32.store (i32.const 4) (i32.const {len}))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
    (call $proc_exit (i32.const 3))))
"#,
        text = text.replace('\n', "\\n"),
        len = text.len()
    )
}

/// A module with enough functions that compiling it takes a moment, so that
/// concurrent compiles really overlap.
fn many_functions(n: usize) -> Vec<u8> {
    let mut wat = String::from("(module (memory (export \"memory\") 1)\n");
    for i in 0..n {
        wat.push_str(&format!(
            "(func $f{i} (param i32) (result i32) (local i32)
               (local.set 1 (i32.mul (local.get 0) (i32.const {i})))
               (if (i32.gt_u (local.get 1) (i32.const 1000))
                 (then (local.set 1 (i32.rem_u (local.get 1) (i32.const 997)))))
               (i32.add (local.get 1) (i32.load (i32.const {off}))))\n",
            off = (i % 1000) * 4
        ));
    }
    wat.push_str("(func (export \"_start\")))");
    wat::parse_str(&wat).unwrap()
}

/// Guests whose behaviour must not depend on the tier or on the cache:
/// output, exit codes, traps, the memory limit, arguments.
const BEHAVIOURS: &[(&str, &str)] = &[
    (
        "args",
        r#"(module
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $sizes (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (drop (call $sizes (i32.const 0) (i32.const 4)))
    (drop (call $get (i32.const 1024) (i32.const 4096)))
    (i32.store (i32.const 16) (i32.const 4096))
    (i32.store (i32.const 20) (i32.load (i32.const 4)))
    (drop (call $fd_write (i32.const 2) (i32.const 16) (i32.const 1) (i32.const 32)))))"#,
    ),
    (
        "trap",
        r#"(module (func $deep (param i32) (result i32)
  (if (result i32) (i32.eqz (local.get 0)) (then unreachable)
    (else (call $deep (i32.sub (local.get 0) (i32.const 1))))))
  (func (export "_start") (drop (call $deep (i32.const 10)))))"#,
    ),
    (
        "grow",
        r#"(module (memory (export "memory") 1)
  (func (export "_start")
    (loop $l (br_if $l (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))))"#,
    ),
    (
        "math",
        r#"(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func $fib (param i64) (result i64)
    (if (result i64) (i64.lt_u (local.get 0) (i64.const 2)) (then (local.get 0))
      (else (i64.add (call $fib (i64.sub (local.get 0) (i64.const 1)))
                     (call $fib (i64.sub (local.get 0) (i64.const 2)))))))
  (func (export "_start")
    (call $exit (i32.wrap_i64 (i64.rem_u (call $fib (i64.const 25)) (i64.const 113))))))"#,
    ),
];

fn run_captured(engine: &Engine, prepared: &Prepared) -> (Outcome, Vec<u8>, Vec<u8>) {
    let capture = Capture::new(Vec::new());
    let opts = RunOptions {
        args: vec!["guest.wasm".into(), "one".into(), "two".into()],
        cwd: "/".into(),
        memory_limit: Some(4 << 20),
        stdio: Stdio::Capture(capture.clone()),
        ..Default::default()
    };
    let outcome = match engine.run(prepared, &opts) {
        // The two compilers may attribute a trap to neighbouring offsets of the same function
        // (Winch 0x2e, Cranelift 0x2c): the same behaviour, so compared without it.
        Outcome::Trap { message, oom } => Outcome::Trap { message: without_offset(&message), oom },
        other => other,
    };
    (outcome, capture.stdout(), capture.stderr())
}

fn without_offset(message: &str) -> String {
    match message.find("wasm offset 0x") {
        Some(at) => {
            let rest = &message[at + "wasm offset 0x".len()..];
            let end = rest.find(|c: char| !c.is_ascii_hexdigit()).unwrap_or(rest.len());
            format!("{}wasm offset _{}", &message[..at], &rest[end..])
        }
        None => message.to_string(),
    }
}

fn compile_log_lines(cache: &Cache) -> usize {
    cache.compile_log().unwrap().lines().count()
}

fn entry_path(dir: &Path, cache: &Cache) -> std::path::PathBuf {
    let entries = cache.entries().unwrap();
    assert_eq!(entries.len(), 1, "{entries:?}");
    dir.join(format!("{}.cwasm", entries[0].key))
}

#[test]
fn miss_then_compile_then_hit() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path()).unwrap();
    let engine = Engine::new().unwrap();
    let wasm = hello(1);
    let bytes = wasm.as_bytes();

    let miss = engine
        .load_cached(
            &cache,
            bytes,
            "/h.wasm",
            None,
            &[Tier::Optimized, Tier::Baseline],
        )
        .unwrap();
    assert!(miss.is_none());

    let stored = engine
        .compile_to_cache(&cache, bytes, "/h.wasm", Tier::Optimized, true)
        .unwrap();
    assert!(matches!(stored, Stored::Compiled { .. }), "{stored:?}");
    let again = engine
        .compile_to_cache(&cache, bytes, "/h.wasm", Tier::Optimized, true)
        .unwrap();
    assert_eq!(again, Stored::Present);
    assert_eq!(compile_log_lines(&cache), 1);

    let hit = engine
        .load_cached(
            &cache,
            bytes,
            "/h.wasm",
            None,
            &[Tier::Optimized, Tier::Baseline],
        )
        .unwrap()
        .expect("a hit");
    let key = engine.cache_key(bytes, Tier::Optimized).unwrap();
    assert_eq!(hit.origin(), &Origin::Cache(key.to_string()));
    assert_eq!(hit.tier(), Tier::Optimized);
    let (outcome, stdout, _) = run_captured(&engine, &hit);
    assert_eq!(outcome, Outcome::Exited(3));
    assert_eq!(stdout, b"hello 1\n");
}

#[test]
fn entries_are_private_to_root_but_openable_by_name() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a/b/cache");
    let cache = Cache::open(&path).unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o711);
    assert_eq!(mode(&dir.path().join("a")), 0o700);
    let engine = Engine::new().unwrap();
    engine
        .compile_to_cache(
            &cache,
            hello(2).as_bytes(),
            "/h.wasm",
            Tier::Optimized,
            true,
        )
        .unwrap();
    assert_eq!(mode(&entry_path(&path, &cache)), 0o644);
}

#[test]
fn keys_follow_bytes_and_tier_not_the_allocator() {
    let plain = Engine::new().unwrap();
    let pooled = Engine::with_config(EngineConfig { pooling: true, ..Default::default() }).unwrap();
    let a = hello(1);
    let b = hello(2);
    let key = |e: &Engine, s: &str, t| e.cache_key(s.as_bytes(), t).unwrap();
    assert_eq!(
        key(&plain, &a, Tier::Optimized),
        key(&pooled, &a, Tier::Optimized)
    );
    assert_eq!(
        key(&plain, &a, Tier::Baseline),
        key(&pooled, &a, Tier::Baseline)
    );
    assert_ne!(
        key(&plain, &a, Tier::Optimized),
        key(&plain, &b, Tier::Optimized)
    );
    assert_ne!(
        key(&plain, &a, Tier::Optimized),
        key(&plain, &a, Tier::Baseline)
    );
    let k = key(&plain, &a, Tier::Optimized).to_string();
    assert_eq!(k.len(), 64 + 1 + 17, "{k}");
    assert!(wasm_shim_engine::CacheKey::parse(&k).is_some());
    assert!(wasm_shim_engine::CacheKey::parse("../../etc/passwd-aaaaaaaaaa").is_none());
}

#[test]
fn a_corrupt_entry_is_dropped_and_compiled_again() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path()).unwrap();
    let engine = Engine::new().unwrap();
    let wasm = hello(3);
    engine
        .prepare_cached(&cache, wasm.as_bytes(), "/h.wasm", None)
        .unwrap();
    let path = entry_path(dir.path(), &cache);

    // One flipped byte in the middle of the code.
    let mut data = std::fs::read(&path).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0x5a;
    std::fs::write(&path, &data).unwrap();
    let loaded = engine
        .load_cached(&cache, wasm.as_bytes(), "/h.wasm", None, &[Tier::Optimized])
        .unwrap();
    assert!(loaded.is_none(), "a corrupt entry must not be used");
    assert!(!path.exists(), "the corrupt entry is removed");

    let p = engine
        .prepare_cached(&cache, wasm.as_bytes(), "/h.wasm", None)
        .unwrap();
    assert_eq!(compile_log_lines(&cache), 2);
    assert!(matches!(p.origin(), Origin::Cache(_)));
    assert_eq!(run_captured(&engine, &p).0, Outcome::Exited(3));
    // Code in use must never change under its mapping (the cache itself only
    // ever replaces or unlinks entries); this test damages files in place,
    // so it lets go of the code first.
    drop(p);

    // Truncated (a crash before the data reached the disk).
    let data = std::fs::read(&path).unwrap();
    std::fs::write(&path, &data[..data.len() / 3]).unwrap();
    let stored = engine
        .compile_to_cache(&cache, wasm.as_bytes(), "/h.wasm", Tier::Optimized, true)
        .unwrap();
    assert!(matches!(stored, Stored::Compiled { .. }), "{stored:?}");
    assert_eq!(compile_log_lines(&cache), 3);
}

#[test]
fn eviction_keeps_the_recently_used_under_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::new().unwrap();
    let probe = Cache::open(dir.path()).unwrap();
    engine
        .compile_to_cache(
            &probe,
            hello(100).as_bytes(),
            "/p.wasm",
            Tier::Optimized,
            true,
        )
        .unwrap();
    let one = probe.entries().unwrap()[0].size;
    probe.clear().unwrap();

    // Room for three entries of about this size.
    let cache = Cache::open(dir.path())
        .unwrap()
        .with_max_size(one * 3 + one / 2);
    let old = SystemTime::now() - Duration::from_secs(3600);
    let mut keys = Vec::new();
    for n in 0..3 {
        let w = hello(n);
        engine
            .compile_to_cache(&cache, w.as_bytes(), "/h.wasm", Tier::Optimized, true)
            .unwrap();
        keys.push(engine.cache_key(w.as_bytes(), Tier::Optimized).unwrap());
        // Make the order of use unambiguous: older modules were used earlier.
        let path = dir.path().join(format!("{}.cwasm", keys[n as usize]));
        let f = std::fs::File::open(&path).unwrap();
        f.set_modified(old + Duration::from_secs(n as u64 * 60))
            .unwrap();
    }
    // Module 0 is used again: it becomes the most recent.
    cache.touch(&keys[0]).unwrap();
    engine
        .compile_to_cache(
            &cache,
            hello(3).as_bytes(),
            "/h.wasm",
            Tier::Optimized,
            true,
        )
        .unwrap();
    let left: Vec<String> = cache
        .entries()
        .unwrap()
        .iter()
        .map(|e| e.key.to_string())
        .collect();
    assert_eq!(left.len(), 3, "{left:?}");
    assert!(
        !left.contains(&keys[1].to_string()),
        "the least recently used goes first"
    );
    assert!(left.contains(&keys[0].to_string()));
    assert!(left.contains(&keys[2].to_string()));
    let total: u64 = cache.entries().unwrap().iter().map(|e| e.size).sum();
    assert!(total <= cache.max_size());
}

#[test]
fn threads_compile_a_new_module_once() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = many_functions(3000);
    let engine = Engine::new().unwrap();
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                // Each thread as its own process would: its own cache handle.
                let cache = Cache::open(dir.path()).unwrap();
                let p = engine
                    .prepare_cached(&cache, &bytes, "/m.wasm", None)
                    .unwrap();
                assert!(matches!(p.origin(), Origin::Cache(_)));
            });
        }
    });
    let cache = Cache::open(dir.path()).unwrap();
    assert_eq!(
        compile_log_lines(&cache),
        1,
        "{}",
        cache.compile_log().unwrap()
    );
}

/// The child half of `processes_compile_a_new_module_once`.
#[test]
fn child_compiles_into_the_cache() {
    let Some(dir) = std::env::var_os("CACHE_TEST_CHILD_DIR") else {
        return;
    };
    let cache = Cache::open(Path::new(&dir)).unwrap();
    let engine = Engine::new().unwrap();
    let stored = engine
        .compile_to_cache(
            &cache,
            &many_functions(3000),
            "/m.wasm",
            Tier::Optimized,
            true,
        )
        .unwrap();
    println!("child stored: {stored:?}");
}

#[test]
fn processes_compile_a_new_module_once() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..6)
        .map(|_| {
            Command::new(&exe)
                .args(["--exact", "child_compiles_into_the_cache", "--nocapture"])
                .env("CACHE_TEST_CHILD_DIR", dir.path())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut compiled = 0;
    let mut present = 0;
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        compiled += text.matches("child stored: Compiled").count();
        present += text.matches("child stored: Present").count();
    }
    assert_eq!((compiled, present), (1, 5));
    let cache = Cache::open(dir.path()).unwrap();
    assert_eq!(compile_log_lines(&cache), 1);
}

#[test]
fn busy_when_told_not_to_wait() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = many_functions(6000);
    let engine = Engine::new().unwrap();
    let results = std::thread::scope(|s| {
        let waits = s.spawn(|| {
            let cache = Cache::open(dir.path()).unwrap();
            engine.compile_to_cache(&cache, &bytes, "/m.wasm", Tier::Optimized, true)
        });
        std::thread::sleep(Duration::from_millis(50));
        let cache = Cache::open(dir.path()).unwrap();
        let second = engine.compile_to_cache(&cache, &bytes, "/m.wasm", Tier::Optimized, false);
        (waits.join().unwrap().unwrap(), second.unwrap())
    });
    assert!(matches!(results.0, Stored::Compiled { .. }), "{results:?}");
    // Either it found the lock held or (on a very fast machine) the entry.
    assert!(
        matches!(results.1, Stored::Busy | Stored::Present),
        "{results:?}"
    );
}

#[test]
fn baseline_and_optimized_behave_the_same_cached_or_not() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path()).unwrap();
    let engine = Engine::new().unwrap();
    for (name, wat) in BEHAVIOURS {
        let bytes = wat.as_bytes();
        let reference = run_captured(&engine, &engine.prepare(bytes, name, None).unwrap());
        for tier in [Tier::Baseline, Tier::Optimized] {
            let fresh = engine.prepare_tier(bytes, name, None, tier).unwrap();
            assert_eq!(fresh.tier(), tier);
            assert_eq!(run_captured(&engine, &fresh), reference, "{name} {tier}");
            engine
                .compile_to_cache(&cache, bytes, name, tier, true)
                .unwrap();
            let cached = engine
                .load_cached(&cache, bytes, name, None, &[tier])
                .unwrap()
                .expect("cached");
            assert_eq!(cached.tier(), tier);
            assert_eq!(
                run_captured(&engine, &cached),
                reference,
                "{name} {tier} cached"
            );
        }
    }
    // The references themselves are what the guests do.
    let outcome = |name: &str| {
        let wat = BEHAVIOURS.iter().find(|(n, _)| *n == name).unwrap().1;
        run_captured(
            &engine,
            &engine.prepare(wat.as_bytes(), name, None).unwrap(),
        )
    };
    assert_eq!(outcome("args").2, b"guest.wasm\0one\0two\0");
    assert!(matches!(
        outcome("trap").0,
        Outcome::Trap { oom: false, .. }
    ));
    assert!(matches!(outcome("grow").0, Outcome::Trap { oom: true, .. }));
    assert_eq!(outcome("math").0, Outcome::Exited(75025 % 113));
}

#[test]
fn baseline_code_is_interrupted_too() {
    let engine = Engine::new().unwrap();
    let spin = r#"(module (func (export "_start") (loop $l (br $l))))"#;
    let prepared = engine
        .prepare_tier(spin.as_bytes(), "/spin.wasm", None, Tier::Baseline)
        .unwrap();
    let e = engine.clone();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        e.interrupt(2);
    });
    let (outcome, _, _) = run_captured(&engine, &prepared);
    assert_eq!(outcome, Outcome::Interrupted(2));
}

#[test]
fn components_are_cached_too() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path()).unwrap();
    let engine = Engine::new().unwrap();
    let component = r#"
(component
  (core module $m (func (export "run") (result i32) (i32.const 1)))
  (core instance $i (instantiate $m))
  (func $run (result (result)) (canon lift (core func $i "run")))
  (instance $run-instance (export "run" (func $run)))
  (export "wasi:cli/run@0.2.0" (instance $run-instance)))
"#;
    for tier in [Tier::Optimized, Tier::Baseline] {
        engine
            .compile_to_cache(&cache, component.as_bytes(), "/c.wasm", tier, true)
            .unwrap();
        let p = engine
            .load_cached(&cache, component.as_bytes(), "/c.wasm", None, &[tier])
            .unwrap()
            .expect("cached component");
        assert!(p.is_component());
        assert_eq!(run_captured(&engine, &p).0, Outcome::Exited(1));
    }
}

#[test]
fn a_bad_workload_fails_the_same_from_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path()).unwrap();
    let engine = Engine::new().unwrap();
    let wasm = hello(9);
    engine
        .compile_to_cache(&cache, wasm.as_bytes(), "/h.wasm", Tier::Optimized, true)
        .unwrap();
    let fresh = engine
        .prepare(wasm.as_bytes(), "/h.wasm", Some("nope"))
        .unwrap_err();
    let cached = engine
        .load_cached(
            &cache,
            wasm.as_bytes(),
            "/h.wasm",
            Some("nope"),
            &[Tier::Optimized],
        )
        .unwrap_err();
    assert_eq!(fresh.to_string(), cached.to_string());
    let invalid = engine
        .compile_to_cache(
            &cache,
            b"\0asm\x01\0\0\0\x01\xff",
            "/bad.wasm",
            Tier::Optimized,
            true,
        )
        .unwrap_err();
    assert!(invalid.is_invalid_input(), "{invalid}");
}

#[test]
fn a_cache_that_cannot_be_written_still_prepares() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path()).unwrap();
    // Remove the directory under the open handle: every write fails.
    std::fs::remove_dir(dir.path()).unwrap();
    let engine = Engine::new().unwrap();
    let p = engine
        .prepare_cached(&cache, hello(4).as_bytes(), "/h.wasm", None)
        .unwrap();
    assert_eq!(p.origin(), &Origin::Compiled);
    assert_eq!(run_captured(&engine, &p).0, Outcome::Exited(3));
}

/// Copy-on-write memory images: the initial linear memory of a module loaded from the cache is
/// a private mapping of the cache entry itself (no copy of the data segments per task).
#[test]
fn initial_memory_is_mapped_from_the_entry() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path()).unwrap();
    let engine = Engine::new().unwrap();
    // 64 KiB of data in a page-aligned segment, then spin until interrupted.
    let wat = format!(
        r#"(module (memory (export "memory") 4)
             (data (i32.const 65536) "{}")
             (func (export "_start") (loop $l (br $l))))"#,
        "\\2a".repeat(65536)
    );
    engine
        .compile_to_cache(&cache, wat.as_bytes(), "/img.wasm", Tier::Optimized, true)
        .unwrap();
    let key = engine.cache_key(wat.as_bytes(), Tier::Optimized).unwrap();
    let prepared = engine
        .load_cached(
            &cache,
            wat.as_bytes(),
            "/img.wasm",
            None,
            &[Tier::Optimized],
        )
        .unwrap()
        .unwrap();
    let e = engine.clone();
    let watcher = std::thread::spawn(move || {
        let entry = format!("{key}.cwasm");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut writable = false;
        while !writable && std::time::Instant::now() < deadline {
            let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
            writable = maps
                .lines()
                .any(|l| l.ends_with(&entry) && l.split_whitespace().nth(1) == Some("rw-p"));
            std::thread::sleep(Duration::from_millis(10));
        }
        e.interrupt(2);
        writable
    });
    let (outcome, _, _) = run_captured(&engine, &prepared);
    assert_eq!(outcome, Outcome::Interrupted(2));
    assert!(
        watcher.join().unwrap(),
        "no writable private mapping of the entry"
    );
}

/// The code a shim hands a running init as an open descriptor: loaded and run from it, with
/// the checksum checked by that descriptor; a damaged entry is refused, not run.
#[test]
fn an_entry_handed_over_as_a_descriptor_loads_and_a_damaged_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path()).unwrap();
    let engine = Engine::new().unwrap();
    let wasm = hello(41);
    let bytes = wasm.as_bytes();
    engine.compile_to_cache(&cache, bytes, "/h.wasm", Tier::Optimized, true).unwrap();
    let key = engine.cache_key(bytes, Tier::Optimized).unwrap();
    let path = dir.path().join(key.file_name());
    assert_eq!(entry_path(dir.path(), &cache), path);
    assert_eq!(key.digest().len(), 64);

    let file = std::fs::File::open(&path).unwrap();
    let p = engine.load_entry_file(file, &key, Tier::Optimized, false, "/h.wasm", None).unwrap();
    assert_eq!(p.origin(), &Origin::Cache(key.to_string()));
    let (outcome, stdout, _) = run_captured(&engine, &p);
    assert_eq!(outcome, Outcome::Exited(3));
    assert_eq!(stdout, b"hello 41\n");

    // One byte flipped in the code: the checksum refuses it.
    let mut data = std::fs::read(&path).unwrap();
    data[100] ^= 0xff;
    let damaged = dir.path().join("damaged");
    std::fs::write(&damaged, &data).unwrap();
    let err = engine
        .load_entry_file(std::fs::File::open(&damaged).unwrap(), &key, Tier::Optimized, false, "/h.wasm", None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("handed over") && err.contains("checksum"), "{err}");
}
