//! The engine end to end, in-process: WAT guests prepared and run with
//! captured stdio (one test re-executes this binary to check inherited stdio).

use std::time::{Duration, Instant};

use wasm_shim_engine::{Capture, Engine, Outcome, Prepared, RunOptions, Stdio, EXIT_TRAP};

/// A WASI p1 guest that prints its arguments, then its environment, one per
/// line (it rewrites the NUL separators to newlines).
const PRINT_ARGS_AND_ENV: &str = r#"
(module
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $environ_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get" (func $environ_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  ;; 0: count, 4: size, 16: iovec, 32: nwritten, 1024: pointers,
  ;; 4096: argument strings, 8192: environment strings
  (func $print (param $ptr i32) (param $len i32)
    (local $i i32)
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
        (if (i32.eqz (i32.load8_u (i32.add (local.get $ptr) (local.get $i))))
          (then (i32.store8 (i32.add (local.get $ptr) (local.get $i)) (i32.const 10))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (i32.store (i32.const 16) (local.get $ptr))
    (i32.store (i32.const 20) (local.get $len))
    (drop (call $fd_write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 32))))
  (func (export "_start")
    (drop (call $args_sizes_get (i32.const 0) (i32.const 4)))
    (drop (call $args_get (i32.const 1024) (i32.const 4096)))
    (call $print (i32.const 4096) (i32.load (i32.const 4)))
    (drop (call $environ_sizes_get (i32.const 0) (i32.const 4)))
    (drop (call $environ_get (i32.const 1024) (i32.const 8192)))
    (call $print (i32.const 8192) (i32.load (i32.const 4)))))
"#;

/// Copies stdin to stdout until end of file, then exits with code 5.
const CAT_THEN_EXIT_5: &str = r#"
(module
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (local $n i32)
    (loop $next
      (i32.store (i32.const 0) (i32.const 1024))
      (i32.store (i32.const 4) (i32.const 4096))
      (if (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8))
        (then unreachable))
      (local.set $n (i32.load (i32.const 8)))
      (if (local.get $n)
        (then
          (i32.store (i32.const 4) (local.get $n))
          (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
          (br $next))))
    (call $proc_exit (i32.const 5))))
"#;

/// Opens `data.txt` in the first preopen (fd 3) and copies it to stdout.
const READ_DATA_TXT: &str = r#"
(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "data.txt")
  (func (export "_start")
    (local $errno i32)
    ;; dirfd 3, follow symlinks, "data.txt", no oflags, rights FD_READ
    (local.set $errno
      (call $path_open (i32.const 3) (i32.const 1) (i32.const 100) (i32.const 8)
        (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 200)))
    (if (local.get $errno) (then (call $proc_exit (i32.const 40))))
    (i32.store (i32.const 0) (i32.const 1024))
    (i32.store (i32.const 4) (i32.const 1024))
    (if (call $fd_read (i32.load (i32.const 200)) (i32.const 0) (i32.const 1) (i32.const 8))
      (then (call $proc_exit (i32.const 41))))
    (i32.store (i32.const 4) (i32.load (i32.const 8)))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
"#;

/// Creates `out.txt` in the first preopen and writes "written" to it.
const WRITE_OUT_TXT: &str = r#"
(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "out.txt")
  (data (i32.const 300) "written")
  (func (export "_start")
    ;; O_CREAT, rights FD_WRITE
    (if (call $path_open (i32.const 3) (i32.const 1) (i32.const 100) (i32.const 7)
          (i32.const 1) (i64.const 64) (i64.const 0) (i32.const 0) (i32.const 200))
      (then (call $proc_exit (i32.const 40))))
    (i32.store (i32.const 0) (i32.const 300))
    (i32.store (i32.const 4) (i32.const 7))
    (if (call $fd_write (i32.load (i32.const 200)) (i32.const 0) (i32.const 1) (i32.const 8))
      (then (call $proc_exit (i32.const 41))))))
"#;

/// A component exporting `wasi:cli/run` whose `run` returns `ok` or `err`
/// (`$code` = 0 or 1, the discriminant of `result`).
fn run_component(code: u32) -> String {
    format!(
        r#"
(component
  (core module $m (func (export "run") (result i32) (i32.const {code})))
  (core instance $i (instantiate $m))
  (func $run (result (result)) (canon lift (core func $i "run")))
  (instance $run-instance (export "run" (func $run)))
  (export "wasi:cli/run@0.2.0" (instance $run-instance)))
"#
    )
}

/// A component whose `run` calls `wasi:cli/exit.exit(err)`: exercises the
/// WASI p2 linker (resolved by semver against the version wasmtime provides).
const COMPONENT_EXIT_ERR: &str = r#"
(component
  (import "wasi:cli/exit@0.2.0" (instance $exit
    (export "exit" (func (param "status" (result))))))
  (core func $exit-lowered (canon lower (func $exit "exit")))
  (core instance $host (export "exit" (func $exit-lowered)))
  (core module $m
    (import "host" "exit" (func $exit (param i32)))
    (func (export "run") (result i32)
      (call $exit (i32.const 1))
      (i32.const 0)))
  (core instance $i (instantiate $m (with "host" (instance $host))))
  (func $run (result (result)) (canon lift (core func $i "run")))
  (instance $run-instance (export "run" (func $run)))
  (export "wasi:cli/run@0.2.0" (instance $run-instance)))
"#;

fn engine() -> Engine {
    Engine::new().expect("engine")
}

fn prepare(engine: &Engine, wat: &str, export: Option<&str>) -> Prepared {
    engine
        .prepare(wat.as_bytes(), "/test.wasm", export)
        .unwrap_or_else(|e| panic!("prepare: {e}"))
}

fn options() -> (RunOptions, Capture) {
    let capture = Capture::new(Vec::new());
    let opts = RunOptions {
        args: vec!["test.wasm".into()],
        cwd: "/".into(),
        stdio: Stdio::Capture(capture.clone()),
        ..Default::default()
    };
    (opts, capture)
}

fn run(wat: &str) -> Outcome {
    let engine = engine();
    let prepared = prepare(&engine, wat, None);
    engine.run(&prepared, &options().0)
}

#[test]
fn proc_exit_sets_the_exit_code() {
    let outcome = run(r#"
        (module
          (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
          (memory (export "memory") 1)
          (func (export "_start") (call $exit (i32.const 3))))"#);
    assert_eq!(outcome, Outcome::Exited(3));
    assert_eq!(outcome.exit_code(), 3);
}

#[test]
fn normal_return_exits_zero() {
    let outcome = run(r#"(module (func (export "_start")))"#);
    assert_eq!(outcome, Outcome::Exited(0));
}

#[test]
fn unreachable_is_a_trap() {
    let outcome = run(r#"(module (func $boom (export "_start") unreachable))"#);
    match &outcome {
        Outcome::Trap { message, oom } => {
            assert!(!oom);
            assert!(message.contains("unreachable"), "{message}");
            assert!(message.contains("boom"), "{message}");
        }
        other => panic!("expected a trap, got {other:?}"),
    }
    assert_eq!(outcome.exit_code(), EXIT_TRAP);
}

const GROW: &str = r#"
(module
  (memory (export "memory") 1)
  (func (export "_start")
    (if (i32.eq (memory.grow (i32.const 1)) (i32.const -1)) (then unreachable))
    (drop (memory.grow (i32.const 10)))))"#;

#[test]
fn growing_past_the_memory_limit_traps_as_oom() {
    let engine = engine();
    let prepared = prepare(&engine, GROW, None);
    let (mut opts, _) = options();
    opts.memory_limit = Some(2 * 65536);
    let outcome = engine.run(&prepared, &opts);
    match &outcome {
        Outcome::Trap { message, oom } => {
            assert!(oom, "{message}");
            assert!(
                message.contains("memory limit of 131072 bytes exceeded"),
                "{message}"
            );
        }
        other => panic!("expected an oom trap, got {other:?}"),
    }
    assert_eq!(outcome.exit_code(), EXIT_TRAP);

    // Without a limit the same guest finishes.
    let (opts, _) = options();
    assert_eq!(engine.run(&prepared, &opts), Outcome::Exited(0));
}

#[test]
fn initial_memory_over_the_limit_is_oom() {
    let engine = engine();
    let prepared = prepare(
        &engine,
        r#"(module (memory 4) (func (export "_start")))"#,
        None,
    );
    let (mut opts, _) = options();
    opts.memory_limit = Some(65536);
    assert!(matches!(
        engine.run(&prepared, &opts),
        Outcome::Trap { oom: true, .. }
    ));
}

#[test]
fn busy_loop_is_interrupted_promptly() {
    let engine = engine();
    let prepared = prepare(
        &engine,
        r#"(module (func (export "_start") (loop $l (br $l))))"#,
        None,
    );
    let signaller = engine.clone();
    let thread = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        signaller.interrupt(15);
    });
    let started = Instant::now();
    let outcome = engine.run(&prepared, &options().0);
    let elapsed = started.elapsed();
    thread.join().unwrap();
    assert_eq!(outcome, Outcome::Interrupted(15));
    assert_eq!(outcome.exit_code(), 143);
    assert!(elapsed < Duration::from_secs(1), "took {elapsed:?}");
}

#[test]
fn interrupt_before_run_stops_it_at_once() {
    let engine = engine();
    let prepared = prepare(
        &engine,
        r#"(module (func (export "_start") (loop $l (br $l))))"#,
        None,
    );
    engine.interrupt(2);
    assert_eq!(engine.run(&prepared, &options().0), Outcome::Interrupted(2));
}

#[test]
fn guest_sees_args_env_and_pwd() {
    let engine = engine();
    let prepared = prepare(&engine, PRINT_ARGS_AND_ENV, None);
    let (mut opts, capture) = options();
    opts.args = vec!["app.wasm".into(), "--greet".into(), "hello world".into()];
    opts.env = vec![
        ("GREETING".into(), "hi".into()),
        ("EMPTY".into(), String::new()),
    ];
    opts.cwd = "/srv".into();
    assert_eq!(engine.run(&prepared, &opts), Outcome::Exited(0));
    let out = String::from_utf8(capture.stdout()).unwrap();
    assert_eq!(
        out,
        "app.wasm\n--greet\nhello world\nGREETING=hi\nEMPTY=\nPWD=/srv\n"
    );
}

#[test]
fn pwd_from_the_spec_is_kept() {
    let engine = engine();
    let prepared = prepare(&engine, PRINT_ARGS_AND_ENV, None);
    let (mut opts, capture) = options();
    opts.env = vec![("PWD".into(), "/elsewhere".into())];
    opts.cwd = "/srv".into();
    engine.run(&prepared, &opts);
    let out = String::from_utf8(capture.stdout()).unwrap();
    assert_eq!(out, "test.wasm\nPWD=/elsewhere\n");
}

#[test]
fn stdin_reaches_eof() {
    let engine = engine();
    let prepared = prepare(&engine, CAT_THEN_EXIT_5, None);
    let capture = Capture::new(b"line one\nline two".to_vec());
    let opts = RunOptions {
        stdio: Stdio::Capture(capture.clone()),
        ..Default::default()
    };
    assert_eq!(engine.run(&prepared, &opts), Outcome::Exited(5));
    assert_eq!(capture.stdout(), b"line one\nline two");
}

#[test]
fn reads_a_file_from_a_preopened_dir() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("data.txt"), "from the host\n").unwrap();
    let engine = engine();
    let prepared = prepare(&engine, READ_DATA_TXT, None);
    let (mut opts, capture) = options();
    opts.preopens = vec![(dir.path().to_path_buf(), "/".into())];
    assert_eq!(engine.run(&prepared, &opts), Outcome::Exited(0));
    assert_eq!(capture.stdout(), b"from the host\n");
}

#[test]
fn writes_a_file_in_a_preopened_dir() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine();
    let prepared = prepare(&engine, WRITE_OUT_TXT, None);
    let (mut opts, _) = options();
    opts.preopens = vec![(dir.path().to_path_buf(), "/".into())];
    assert_eq!(engine.run(&prepared, &opts), Outcome::Exited(0));
    assert_eq!(
        std::fs::read(dir.path().join("out.txt")).unwrap(),
        b"written"
    );
}

#[test]
fn no_preopen_means_no_filesystem() {
    let engine = engine();
    let prepared = prepare(&engine, READ_DATA_TXT, None);
    // fd 3 does not exist: path_open fails and the guest exits 40.
    assert_eq!(engine.run(&prepared, &options().0), Outcome::Exited(40));
}

#[test]
fn missing_preopen_dir_fails_to_run() {
    let engine = engine();
    let prepared = prepare(&engine, READ_DATA_TXT, None);
    let (mut opts, _) = options();
    opts.preopens = vec![("/nonexistent/dir".into(), "/".into())];
    let outcome = engine.run(&prepared, &opts);
    assert!(
        matches!(&outcome, Outcome::Failed(m) if m.contains("/nonexistent/dir")),
        "{outcome:?}"
    );
    assert_eq!(outcome.exit_code(), 126);
}

#[test]
fn invalid_bytes_are_invalid_input() {
    let engine = engine();
    for bytes in [
        &b"\0asm\x01\0\0\0\xff\xff"[..],
        b"\x7fELF\x02\x01",
        b"(module (func (export",
    ] {
        let err = engine.prepare(bytes, "/bad.wasm", None).unwrap_err();
        assert!(err.is_invalid_input(), "{err}");
        let text = err.to_string();
        assert!(text.starts_with("/bad.wasm: invalid wasm: "), "{text}");
        assert!(!text.contains('\n'), "{text}");
    }
}

#[test]
fn missing_export_is_named_with_the_exports() {
    let engine = engine();
    let wat = r#"(module (memory (export "memory") 1) (func (export "_start")))"#;
    let err = engine
        .prepare(wat.as_bytes(), "/hello.wasm", Some("foo"))
        .unwrap_err();
    assert!(err.is_invalid_input());
    assert_eq!(
        err.to_string(),
        r#"/hello.wasm: export "foo" not found (exports: _start, memory)"#
    );

    let err = engine
        .prepare(br#"(module (func (export "main")))"#, "/lib.wasm", None)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"/lib.wasm: export "_start" not found (exports: main)"#
    );
}

#[test]
fn entry_point_must_take_no_parameters() {
    let engine = engine();
    let wat = r#"(module (func (export "add") (param i32)) (memory (export "mem") 1))"#;
    let err = engine
        .prepare(wat.as_bytes(), "/m.wasm", Some("add"))
        .unwrap_err();
    assert!(err.is_invalid_input());
    assert!(err.to_string().contains("takes 1 parameters"), "{err}");
    let err = engine
        .prepare(wat.as_bytes(), "/m.wasm", Some("mem"))
        .unwrap_err();
    assert!(err.to_string().contains("it is a memory"), "{err}");
}

#[test]
fn named_export_result_is_the_exit_code() {
    let engine = engine();
    let wat =
        r#"(module (func (export "_start")) (func (export "main") (result i32) (i32.const 7)))"#;
    let prepared = prepare(&engine, wat, Some("main"));
    assert_eq!(prepared.entry(), "main");
    assert_eq!(engine.run(&prepared, &options().0), Outcome::Exited(7));
}

#[test]
fn reactor_is_initialized_before_its_export() {
    let engine = engine();
    let wat = r#"
        (module
          (global $g (mut i32) (i32.const 0))
          (func (export "_initialize") (global.set $g (i32.const 42)))
          (func (export "get") (result i32) (global.get $g)))"#;
    let prepared = prepare(&engine, wat, Some("get"));
    assert_eq!(engine.run(&prepared, &options().0), Outcome::Exited(42));

    // Without a named export a reactor runs `_initialize` alone.
    let prepared = prepare(&engine, wat, None);
    assert_eq!(prepared.entry(), "_initialize");
    assert_eq!(engine.run(&prepared, &options().0), Outcome::Exited(0));
}

#[test]
fn unknown_import_is_named() {
    let engine = engine();
    let wat = r#"
        (module
          (import "wasi:http/outgoing-handler@0.2.0" "handle" (func))
          (func (export "_start")))"#;
    let err = engine
        .prepare(wat.as_bytes(), "/app.wasm", None)
        .unwrap_err();
    assert!(err.is_invalid_input());
    assert_eq!(
        err.to_string(),
        "/app.wasm: import wasi:http/outgoing-handler@0.2.0::handle is not provided by this shim"
    );
}

#[test]
fn mistyped_wasi_import_is_named() {
    let engine = engine();
    let wat = r#"
        (module
          (import "wasi_snapshot_preview1" "fd_write" (func (param i32)))
          (func (export "_start")))"#;
    let err = engine
        .prepare(wat.as_bytes(), "/app.wasm", None)
        .unwrap_err();
    assert!(err.is_invalid_input());
    let text = err.to_string();
    assert!(
        text.starts_with(
            "/app.wasm: import wasi_snapshot_preview1::fd_write is not provided by this shim"
        ),
        "{text}"
    );
}

#[test]
fn wat_and_binary_are_both_accepted() {
    let engine = engine();
    let wat = r#"(module (func (export "_start")))"#;
    let binary = wat::parse_str(wat).unwrap();
    for bytes in [wat.as_bytes(), &binary[..]] {
        let prepared = engine.prepare(bytes, "/m.wasm", None).unwrap();
        assert!(!prepared.is_component());
        assert_eq!(engine.run(&prepared, &options().0), Outcome::Exited(0));
    }
}

#[test]
fn component_runs_and_exits_zero() {
    let engine = engine();
    let prepared = prepare(&engine, &run_component(0), None);
    assert!(prepared.is_component());
    assert_eq!(engine.run(&prepared, &options().0), Outcome::Exited(0));
}

#[test]
fn component_run_err_exits_one() {
    let engine = engine();
    let prepared = prepare(&engine, &run_component(1), None);
    assert_eq!(engine.run(&prepared, &options().0), Outcome::Exited(1));
}

#[test]
fn component_calls_wasi_exit() {
    let engine = engine();
    let prepared = prepare(&engine, COMPONENT_EXIT_ERR, None);
    assert_eq!(engine.run(&prepared, &options().0), Outcome::Exited(1));
}

#[test]
fn component_named_function_export() {
    let engine = engine();
    let wat = r#"
        (component
          (core module $m (func (export "f") (result i32) (i32.const 9)))
          (core instance $i (instantiate $m))
          (func (export "answer") (result u32) (canon lift (core func $i "f"))))"#;
    let prepared = prepare(&engine, wat, Some("answer"));
    assert_eq!(engine.run(&prepared, &options().0), Outcome::Exited(9));

    let err = engine.prepare(wat.as_bytes(), "/c.wasm", None).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"/c.wasm: export "wasi:cli/run@0.2.x or @0.3.x" not found (exports: answer)"#
    );
}

#[test]
fn component_named_export_inside_an_instance() {
    let engine = engine();
    let prepared = prepare(&engine, &run_component(0), Some("wasi:cli/run@0.2.0#run"));
    assert_eq!(engine.run(&prepared, &options().0), Outcome::Exited(0));
}

#[test]
fn component_unknown_import_is_named() {
    let engine = engine();
    let wat = r#"
        (component
          (import "wasi:http/types@0.2.0" (instance (export "f" (func))))
          (core module $m (func (export "run") (result i32) (i32.const 0)))
          (core instance $i (instantiate $m))
          (func $run (result (result)) (canon lift (core func $i "run")))
          (instance $run-instance (export "run" (func $run)))
          (export "wasi:cli/run@0.2.0" (instance $run-instance)))"#;
    let err = engine
        .prepare(wat.as_bytes(), "/app.wasm", None)
        .unwrap_err();
    assert!(err.is_invalid_input());
    let text = err.to_string();
    assert!(
        text.starts_with("/app.wasm: import wasi:http/types@0.2.0 is not provided by this shim"),
        "{text}"
    );
}

#[test]
fn component_trap_is_a_trap() {
    let engine = engine();
    let wat = r#"
        (component
          (core module $m (func (export "run") (result i32) unreachable))
          (core instance $i (instantiate $m))
          (func $run (result (result)) (canon lift (core func $i "run")))
          (instance $run-instance (export "run" (func $run)))
          (export "wasi:cli/run@0.2.0" (instance $run-instance)))"#;
    let prepared = prepare(&engine, wat, None);
    let outcome = engine.run(&prepared, &options().0);
    assert!(
        matches!(outcome, Outcome::Trap { oom: false, .. }),
        "{outcome:?}"
    );
}

/// The shim's real setup: stdio inherited from the process. Runs the cat
/// guest in a child (this test binary, filtered to `inherited_stdio_child`)
/// with a pipe on stdin, and checks the output (its last line has no newline,
/// so it must be flushed) and the exit status.
#[test]
fn inherited_stdio_reaches_the_process_fds() {
    use std::io::Write;
    use std::process::{Command, Stdio as Pipe};
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "inherited_stdio_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("ENGINE_STDIO_CHILD", "1")
        .stdin(Pipe::piped())
        .stdout(Pipe::piped())
        .stderr(Pipe::inherit())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"<<first line\nno newline at the end>>")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("<<first line\nno newline at the end>>"),
        "{stdout}"
    );
    assert_eq!(output.status.code(), Some(5), "{stdout}");
}

#[test]
fn inherited_stdio_child() {
    if std::env::var_os("ENGINE_STDIO_CHILD").is_none() {
        return;
    }
    let engine = engine();
    let prepared = prepare(&engine, CAT_THEN_EXIT_5, None);
    let outcome = engine.run(&prepared, &RunOptions::default());
    std::process::exit(outcome.exit_code());
}

/// A component whose `run` calls `wasi:sockets/tcp-create-socket.create-tcp-socket(ipv4)` and
/// returns its result's discriminant: `ok` (exit 0) when the engine lets guests use TCP, `err`
/// (exit 1, `access-denied`) when it does not. wasmtime-wasi denies TCP unless `allow_tcp`.
const COMPONENT_CREATE_TCP_SOCKET: &str = r#"
(component
  (import "wasi:sockets/network@0.2.0" (instance $network
    (type $error-code (enum "unknown" "access-denied" "not-supported"
      "invalid-argument" "out-of-memory" "timeout" "concurrency-conflict" "not-in-progress"
      "would-block" "invalid-state" "new-socket-limit" "address-not-bindable" "address-in-use"
      "remote-unreachable" "connection-refused" "connection-reset" "connection-aborted"
      "datagram-too-large" "name-unresolvable" "temporary-resolver-failure"
      "permanent-resolver-failure"))
    (export "error-code" (type (eq $error-code)))
    (type $family (enum "ipv4" "ipv6"))
    (export "ip-address-family" (type (eq $family)))))
  (alias export $network "error-code" (type $error-code))
  (alias export $network "ip-address-family" (type $family))
  (import "wasi:sockets/tcp@0.2.0" (instance $tcp
    (export "tcp-socket" (type (sub resource)))))
  (alias export $tcp "tcp-socket" (type $tcp-socket))
  (import "wasi:sockets/tcp-create-socket@0.2.0" (instance $create
    (alias outer 1 $error-code (type $e0))
    (export "error-code" (type $e (eq $e0)))
    (alias outer 1 $family (type $f0))
    (export "ip-address-family" (type $f (eq $f0)))
    (alias outer 1 $tcp-socket (type $s0))
    (export "tcp-socket" (type $s (eq $s0)))
    (export "create-tcp-socket"
      (func (param "address-family" $f) (result (result (own $s) (error $e)))))))
  (core module $mem (memory (export "memory") 1))
  (core instance $mem (instantiate $mem))
  (alias core export $mem "memory" (core memory $memory))
  (core func $create-lowered
    (canon lower (func $create "create-tcp-socket") (memory $memory)))
  (core instance $host (export "create" (func $create-lowered)))
  (core module $m
    (import "host" "create" (func $create (param i32 i32)))
    (import "mem" "memory" (memory 1))
    (func (export "run") (result i32)
      ;; family ipv4; the result at 16: discriminant byte, then the handle or error code
      (call $create (i32.const 0) (i32.const 16))
      (i32.load8_u (i32.const 16))))
  (core instance $i (instantiate $m
    (with "host" (instance $host))
    (with "mem" (instance $mem))))
  (func $run (result (result)) (canon lift (core func $i "run")))
  (instance $run-instance (export "run" (func $run)))
  (export "wasi:cli/run@0.2.0" (instance $run-instance)))
"#;

/// Regression: `inherit_network()` alone left TCP denied (wasmtime-wasi's `allow_tcp` is off by
/// default), so every `wasi:sockets/tcp` call failed with `access-denied`.
#[test]
fn component_may_create_a_tcp_socket() {
    assert_eq!(run(COMPONENT_CREATE_TCP_SOCKET), Outcome::Exited(0));
}
