//! A WASI 0.3 command (`wasi:cli/run@0.3.0`, async) for the tests. It prints, on stdout through
//! `wasi:cli/stdout.write-via-stream`:
//!
//! - `hello from wasi 0.3`
//! - `args: <argv joined by spaces>`
//! - `env: K=V` for each environment variable whose name starts with `P3_`, sorted
//! - `cwd: <initial-cwd or (none)>`
//!
//! then acts on its arguments (after argv[0]), in order:
//!
//! - `sleep=<ms>`: waits that long (`wasi:clocks/monotonic-clock.wait-for`, an async host call)
//! - `stderr`: writes `to stderr` to stderr
//! - `memory=<mb>`: allocates and touches that many MiB
//! - `spin`: loops forever
//! - `exit=<n>`: `wasi:cli/exit.exit-with-code(n)`
//! - `fail`: `run` returns `err` (exit status 1)

use wasip3::cli::{environment, exit, stderr, stdout};
use wasip3::clocks::monotonic_clock;
use wasip3::wit_stream;

wasip3::cli::command::export!(Command);

struct Command;

/// Writes `bytes` to the stream `write_via_stream` gives the host, and waits for the host to be
/// done with it.
async fn write(to_stderr: bool, bytes: Vec<u8>) {
    let (mut tx, rx) = wit_stream::new();
    let done = if to_stderr { stderr::write_via_stream(rx) } else { stdout::write_via_stream(rx) };
    futures::join!(
        async {
            let _ = done.await;
        },
        async {
            let rest = tx.write_all(bytes).await;
            assert!(rest.is_empty(), "the host stopped reading");
            drop(tx);
        }
    );
}

impl wasip3::exports::cli::run::Guest for Command {
    async fn run() -> Result<(), ()> {
        let args = environment::get_arguments();
        let mut env: Vec<(String, String)> = environment::get_environment()
            .into_iter()
            .filter(|(k, _)| k.starts_with("P3_"))
            .collect();
        env.sort();
        let mut out = String::from("hello from wasi 0.3\n");
        out.push_str(&format!("args: {}\n", args.join(" ")));
        for (k, v) in &env {
            out.push_str(&format!("env: {k}={v}\n"));
        }
        let cwd = environment::get_initial_cwd().unwrap_or_else(|| "(none)".into());
        out.push_str(&format!("cwd: {cwd}\n"));
        write(false, out.into_bytes()).await;
        for arg in args.iter().skip(1) {
            let (what, value) = arg.split_once('=').unwrap_or((arg.as_str(), ""));
            match what {
                "sleep" => {
                    let ms: u64 = value.parse().unwrap_or(0);
                    monotonic_clock::wait_for(ms * 1_000_000).await;
                    write(false, format!("slept {ms}\n").into_bytes()).await;
                }
                "stderr" => write(true, b"to stderr\n".to_vec()).await,
                "memory" => {
                    let mb: usize = value.parse().unwrap_or(0);
                    let v = vec![1u8; mb << 20];
                    write(false, format!("touched {} MiB\n", v.iter().map(|b| *b as usize).sum::<usize>() >> 20).into_bytes()).await;
                }
                "spin" => {
                    let mut n = 0u64;
                    loop {
                        n = std::hint::black_box(n.wrapping_add(1));
                    }
                }
                "exit" => exit::exit_with_code(value.parse().unwrap_or(0)),
                "fail" => return Err(()),
                _ => {}
            }
        }
        Ok(())
    }
}
