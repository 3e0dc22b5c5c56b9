//! `precompile::*`: the `precompile` mode against this run's containerd. The agent
//! (`precompile --watch`) runs as a child of the test with the shims' cache settings; each
//! trial imports images nobody compiled before (hello.wasm with a fresh nonce, see
//! `cache::unique_hello`) and reads the cache's `compile.log`, the entries and the agent's log.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use wasm_shim_e2e::ctr::ensure;
use wasm_shim_e2e::images::BUSYBOX_IMAGE;
use wasm_shim_e2e::{process, RunOpts, Stdin};
use wasm_shim_oci::{write_image_tar, ImageFile, ImageSpec, Style};

use super::cache::{compiles_of, hex_digest, nonce, unique_hello, with_nonce};
use super::Ctx;

/// Cache entries (`.cwasm` files) of this digest.
fn entries_of(cache: &Path, digest: &str) -> Vec<PathBuf> {
    std::fs::read_dir(cache)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(digest) && n.to_string_lossy().ends_with(".cwasm")))
                .collect()
        })
        .unwrap_or_default()
}

/// The optimized compile of `digest` logged within `timeout`: its key.
fn wait_optimized(cache: &Path, digest: &str, timeout: Duration) -> Result<String> {
    match process::poll(timeout, || compiles_of(cache, digest).into_iter().find(|(t, _)| t == "optimized").map(|(_, k)| k)) {
        Some(k) => Ok(k),
        None => bail!("no optimized compile of {digest} logged within {timeout:?}: {:?}", compiles_of(cache, digest)),
    }
}

/// The shim binary in `precompile` mode, with the environment the shims get from containerd
/// (the cache, its bounds), plus `extra`.
fn precompile_command(cx: &Ctx, args: &[&str], extra: &[(&str, &str)]) -> Command {
    let mut c = Command::new(&cx.cd.shim);
    c.arg("precompile").args(args).args(["--namespace", &cx.cd.namespace]);
    c.env("CONTAINERD_ADDRESS", &cx.cd.socket).env("WASM_SHIM_CACHE_DIR", &cx.cd.cache);
    for (k, v) in extra {
        c.env(k, v);
    }
    c
}

/// `precompile --watch` in the background, its stderr in a file; stopped (SIGTERM, then
/// SIGKILL) when dropped.
struct Agent {
    child: std::process::Child,
    log: PathBuf,
}

impl Agent {
    fn start(cx: &Ctx, name: &str, extra: &[(&str, &str)]) -> Result<Agent> {
        let log = cx.cd.dir.join(format!("precompile-{name}.log"));
        let err = std::fs::File::create(&log)?;
        let child = precompile_command(cx, &["--watch"], extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .context("start precompile --watch")?;
        let agent = Agent { child, log };
        agent.wait_log("sweep done", Duration::from_secs(60))?;
        Ok(agent)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for a log line holding `needle`; returns it.
    fn wait_log(&self, needle: &str, timeout: Duration) -> Result<String> {
        match process::poll(timeout, || self.log().lines().find(|l| l.contains(needle)).map(String::from)) {
            Some(l) => Ok(l),
            None => bail!("the agent logged no {needle:?} within {timeout:?}:\n{}", self.log()),
        }
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM: it must end promptly, by itself.
    fn stop(&mut self) -> Result<()> {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait()? {
                return ensure(status.success(), || format!("the agent ended with {status} on SIGTERM:\n{}", self.log()));
            }
            if Instant::now() > deadline {
                bail!("the agent did not stop within 10 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Writes `spec` as a tarball and imports it (`--no-unpack` for artifacts: containerd 1.6.20
/// refuses to unpack wasm layers).
fn import(cx: &Ctx, spec: &ImageSpec) -> Result<()> {
    let tar = cx.cd.dir.join(format!("{}.tar", spec.name.replace(['/', ':'], "_")));
    write_image_tar(spec, std::io::BufWriter::new(std::fs::File::create(&tar)?))?;
    let mut args = vec!["images", "import"];
    if spec.style == Style::Artifact {
        args.push("--no-unpack");
    }
    let tar_s = tar.display().to_string();
    args.push(&tar_s);
    cx.cd.ctr_ok(args).map(drop)
}

/// A classic image running `/app.wasm` (given bytes).
fn classic(name: &str, wasm: &[u8]) -> ImageSpec {
    let mut spec = ImageSpec::new(name);
    spec.files = vec![ImageFile::new("/app.wasm", wasm, 0o755)];
    spec.entrypoint = vec!["/app.wasm".into()];
    spec.style = Style::Classic;
    spec
}

fn artifact(name: &str, wasm: &[u8]) -> ImageSpec {
    let mut spec = ImageSpec::new(name);
    spec.files = vec![ImageFile::new("/hello.wasm", wasm, 0o644)];
    spec.style = Style::Artifact;
    spec
}

fn modified(path: &Path) -> SystemTime {
    std::fs::metadata(path).and_then(|m| m.modified()).unwrap_or(SystemTime::UNIX_EPOCH)
}

/// The first start of an image the agent compiled is a cache hit: it compiles nothing (no new
/// compile.log line, no "not in the compile cache" in containerd's log) and maps the agent's
/// entry (the shim marks it used: its mtime moves).
fn first_start_hits(cx: &Ctx, id: &str, digest: &str, key: &str, start: impl FnOnce() -> Result<wasm_shim_e2e::Output>) -> Result<()> {
    let entry = cx.cd.cache.join(format!("{key}.cwasm"));
    let before = modified(&entry);
    std::thread::sleep(Duration::from_millis(20));
    let out = start()?;
    ensure(out.success() && out.stdout.contains("hello from wasm"), || format!("{out}"))?;
    let compiles = compiles_of(&cx.cd.cache, digest);
    ensure(compiles.len() == 1, || format!("the first start compiled: {compiles:?}"))?;
    let missed = cx.cd.log_lines_with(&format!("id=\"{id}\""), 200);
    ensure(!missed.contains("not in the compile cache"), || format!("containerd's log says the start missed the cache:\n{missed}"))?;
    ensure(modified(&entry) > before, || format!("{key}.cwasm was not used by the start (mtime unchanged)"))
}

/// `--watch`: an image imported while the agent runs is compiled before anything starts; its
/// first `ctr run` is a cache hit; SIGTERM stops the agent.
pub fn watch_then_first_start_hits(cx: &Ctx) -> Result<()> {
    let mut agent = Agent::start(cx, "watch", &[])?;
    let id = "p-watch";
    let wasm = unique_hello(&nonce(id))?;
    let digest = hex_digest(&wasm);
    let image = format!("docker.io/wasmtest/precompile-watch:{}", &digest[..12]);
    import(cx, &classic(&image, &wasm))?;
    let key = wait_optimized(&cx.cd.cache, &digest, Duration::from_secs(60))?;
    ensure(!entries_of(&cx.cd.cache, &digest).is_empty(), || format!("no entry for {digest}"))?;
    let line = agent.wait_log(&format!("{image}:/app.wasm: optimized code in the compile cache"), Duration::from_secs(10))?;
    println!("  agent: {line}");
    ensure(line.contains(&image) && line.contains(&key), || format!("the agent's line names neither {image} nor {key}: {line}"))?;
    first_start_hits(cx, id, &digest, &key, || cx.cd.run(&RunOpts::wasm(&image, id)))?;
    ensure(agent.alive(), || format!("the agent died:\n{}", agent.log()))?;
    agent.stop()
}

/// Bad images (a corrupt module, a text file named .wasm, a layer of an unknown media type, a
/// native image) each get one clear line and no entry; the agent lives on and compiles the
/// next good image (an artifact), whose first start is a hit.
pub fn bad_images_then_good(cx: &Ctx) -> Result<()> {
    let mut agent = Agent::start(cx, "bad", &[])?;
    let tag = nonce("p-bad");
    let tag = &hex_digest(tag.as_bytes())[..12];

    let mut corrupt = b"\0asm\x01\0\0\0".to_vec();
    corrupt.extend(tag.as_bytes().iter().cycle().take(512).map(|b| b ^ 0x5a));
    let corrupt_image = format!("docker.io/wasmtest/precompile-corrupt:{tag}");
    import(cx, &classic(&corrupt_image, &corrupt))?;
    let line = agent.wait_log(&format!("{corrupt_image}:/app.wasm: not valid wasm"), Duration::from_secs(30))?;
    println!("  corrupt: {line}");

    let text_image = format!("docker.io/wasmtest/precompile-text:{tag}");
    import(cx, &classic(&text_image, format!("just text {tag}\n").as_bytes()))?;
    let line = agent.wait_log(&format!("{text_image}: its program /app.wasm is not wasm"), Duration::from_secs(30))?;
    println!("  text: {line}");

    let mystery = format!("docker.io/wasmtest/precompile-mystery:{tag}");
    super::artifact::mystery_tar_named(&cx.cd.dir.join("precompile-mystery.tar"), &mystery)?;
    cx.cd.ctr_ok(["images".as_ref(), "import".as_ref(), "--no-unpack".as_ref(), cx.cd.dir.join("precompile-mystery.tar").as_os_str()])?;
    let line = agent.wait_log(&format!("{mystery}: layer"), Duration::from_secs(30))?;
    println!("  mystery: {line}");
    ensure(line.contains("application/x-mystery") && line.contains("nothing compiled"), || line.clone())?;

    // The harness's busybox image, tagged anew: a native program, nothing to compile.
    let native = format!("docker.io/wasmtest/precompile-native:{tag}");
    cx.cd.ctr_ok(["images", "tag", BUSYBOX_IMAGE, &native])?;
    let line = agent.wait_log(&format!("{native}: no wasm to compile"), Duration::from_secs(30))?;
    println!("  native: {line}");

    ensure(compiles_of(&cx.cd.cache, &hex_digest(&corrupt)).is_empty(), || "the corrupt module was compiled".into())?;
    ensure(entries_of(&cx.cd.cache, &hex_digest(&corrupt)).is_empty(), || "an entry for the corrupt module".into())?;
    ensure(agent.alive(), || format!("the agent died on a bad image:\n{}", agent.log()))?;

    // Still at work: a good artifact image.
    let id = "p-after-bad";
    let wasm = unique_hello(&nonce(id))?;
    let digest = hex_digest(&wasm);
    let good = format!("docker.io/wasmtest/precompile-good:{}", &digest[..12]);
    import(cx, &artifact(&good, &wasm))?;
    let key = wait_optimized(&cx.cd.cache, &digest, Duration::from_secs(60))?;
    first_start_hits(cx, id, &digest, &key, || {
        super::artifact::create_container(cx, id, &good, &["/hello.wasm"])?;
        let out = super::artifact::start_task(cx, id);
        super::artifact::cleanup(cx, id);
        out
    })?;
    ensure(!agent.log().contains("panicked"), || agent.log())?;
    agent.stop()
}

/// One-shot, on images already imported: exit 0 and an entry; again: 0, "already in the
/// compile cache", no second compile; a native image: 2; a missing one: 1 naming it.
pub fn one_shot(cx: &Ctx) -> Result<()> {
    let id = "p-once";
    let wasm = unique_hello(&nonce(id))?;
    let digest = hex_digest(&wasm);
    let image = format!("docker.io/wasmtest/precompile-once:{}", &digest[..12]);
    import(cx, &classic(&image, &wasm))?;
    ensure(compiles_of(&cx.cd.cache, &digest).is_empty(), || "compiled before precompile ran".into())?;
    let run = |args: &[&str]| process::run(precompile_command(cx, args, &[]), Stdin::Null, Duration::from_secs(120));
    let out = run(&[&image])?;
    println!("  {}", out.stderr.trim());
    ensure(out.code == Some(0), || format!("{out}"))?;
    let key = wait_optimized(&cx.cd.cache, &digest, Duration::from_secs(1))?;
    let out = run(&[&image])?;
    ensure(out.code == Some(0) && out.stderr.contains("already in the compile cache"), || format!("{out}"))?;
    ensure(compiles_of(&cx.cd.cache, &digest).len() == 1, || format!("compiled twice: {:?}", compiles_of(&cx.cd.cache, &digest)))?;
    let out = run(&[BUSYBOX_IMAGE])?;
    ensure(out.code == Some(2) && out.stderr.contains("native executable"), || format!("{out}"))?;
    let out = run(&["docker.io/wasmtest/no-such-image:1"])?;
    ensure(out.code == Some(1) && out.stderr.contains("no-such-image"), || format!("{out}"))?;
    first_start_hits(cx, id, &digest, &key, || cx.cd.run(&RunOpts::wasm(&image, id)))
}

/// The bounds of a compile a pod causes apply: with every compile slot of the node taken, the
/// helper waits for one no longer than WASM_SHIM_BACKGROUND_COMPILE_TIMEOUT and compiles
/// nothing (exit 1, a line saying why); it runs in the compile cgroup, made with the memory
/// and CPU limits given; once a slot frees it compiles.
pub fn bounded(cx: &Ctx) -> Result<()> {
    let id = "p-bounded";
    let wasm = unique_hello(&nonce(id))?;
    let digest = hex_digest(&wasm);
    let image = format!("docker.io/wasmtest/precompile-bounded:{}", &digest[..12]);
    import(cx, &classic(&image, &wasm))?;
    let cgroup = format!("/{}/precompile-compile", cx.cd.namespace);
    let env = [
        ("WASM_SHIM_COMPILE_CONCURRENCY", "2"),
        ("WASM_SHIM_BACKGROUND_COMPILE_TIMEOUT", "3s"),
        ("WASM_SHIM_COMPILE_CGROUP", cgroup.as_str()),
        ("WASM_SHIM_COMPILE_MEMORY", "300Mi"),
        ("WASM_SHIM_COMPILE_CPU", "0.5"),
    ];
    // Hold both slots, as two compiles elsewhere on the node would.
    let slots = cx.cd.cache.join(".slots");
    std::fs::create_dir_all(&slots)?;
    let held: Vec<std::fs::File> = (0..2)
        .map(|i| -> Result<std::fs::File> {
            let f = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(slots.join(i.to_string()))?;
            f.try_lock().map_err(|e| anyhow::anyhow!("slot {i}: {e}"))?;
            Ok(f)
        })
        .collect::<Result<_>>()?;
    let started = Instant::now();
    let out = process::run(precompile_command(cx, &[&image], &env), Stdin::Null, Duration::from_secs(60))?;
    let took = started.elapsed();
    println!("  all slots taken: exit {:?} after {took:?}: {}", out.code, out.stderr.trim().lines().last().unwrap_or_default());
    let result = (|| {
        ensure(out.code == Some(1) && out.stderr.contains("no compile slot") && out.stderr.contains("WASM_SHIM_BACKGROUND_COMPILE_TIMEOUT"), || format!("{out}"))?;
        ensure(took < Duration::from_secs(20), || format!("took {took:?} for a 3 s limit"))?;
        ensure(entries_of(&cx.cd.cache, &digest).is_empty(), || "compiled without a slot".into())?;
        let memory = wasm_shim_e2e::containerd::cgroup_hierarchies().into_iter().find_map(|h| {
            ["memory.max", "memory.limit_in_bytes"]
                .iter()
                .find_map(|f| std::fs::read_to_string(h.join(cgroup.trim_start_matches('/')).join(f)).ok())
        });
        ensure(memory.as_deref().map(str::trim) == Some(&(300u64 << 20).to_string()), || format!("compile cgroup {cgroup} memory limit: {memory:?}"))?;
        drop(held);
        let out = process::run(precompile_command(cx, &[&image], &env), Stdin::Null, Duration::from_secs(60))?;
        ensure(out.code == Some(0), || format!("{out}"))?;
        ensure(!entries_of(&cx.cd.cache, &digest).is_empty(), || "no entry once a slot was free".into())
    })();
    let stayed = wasm_shim_e2e::containerd::remove_cgroup_tree(&cgroup);
    result?;
    ensure(stayed.is_empty(), || format!("compile cgroup still in use: {stayed:?}"))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// `ctr run --rm` of `image` to its exit, timed; `expect` is in its stdout.
fn timed_run(cx: &Ctx, image: &str, id: &str, expect: &str) -> Result<Duration> {
    let started = Instant::now();
    let out = cx.cd.run(&RunOpts::wasm(image, id).timeout(Duration::from_secs(120)))?;
    let took = started.elapsed();
    ensure(out.success() && out.stdout.contains(expect), || format!("{out}"))?;
    Ok(took)
}

/// First start of a never-run image, `ctr run` to exit, without and with `precompile` run
/// on the image first (medians of `runs`), for the hello guest and, when built (`make
/// big-guest`), the 6.7 MB big guest. Every precompiled first start must be a cache hit; for
/// the big guest the precompiled start must also be faster than the cold one.
pub fn first_start_timing(cx: &Ctx) -> Result<()> {
    let runs: usize = std::env::var("PRECOMPILE_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let big = wasm_shim_e2e::guests::guests_dir().join("big/target/wasm32-wasip1/release/big.wasm");
    let mut guests = vec![("hello", wasm_shim_e2e::guests::Guests::load()?.get("hello").to_vec(), "hello from wasm")];
    if let Ok(bytes) = std::fs::read(&big) {
        guests.push(("big", bytes, "big: ready"));
    } else {
        println!("  (no {}: make big-guest to time the big guest too)", big.display());
    }
    for (name, wasm, expect) in guests {
        let (mut cold, mut warm) = (Vec::new(), Vec::new());
        for i in 0..runs {
            for precompiled in [false, true] {
                let id = format!("p-time-{name}-{i}-{}", if precompiled { "pre" } else { "cold" });
                let wasm = with_nonce(wasm.clone(), &nonce(&id));
                let digest = hex_digest(&wasm);
                let image = format!("docker.io/wasmtest/precompile-{name}:{}", &digest[..12]);
                import(cx, &classic(&image, &wasm))?;
                if precompiled {
                    let out = process::run(precompile_command(cx, &[&image], &[]), Stdin::Null, Duration::from_secs(300))?;
                    ensure(out.code == Some(0), || format!("{out}"))?;
                }
                let took = timed_run(cx, &image, &id, expect)?;
                let compiles = compiles_of(&cx.cd.cache, &digest);
                if precompiled {
                    ensure(compiles.len() == 1, || format!("{id}: the precompiled first start compiled: {compiles:?}"))?;
                    warm.push(took);
                } else {
                    ensure(compiles.iter().any(|(t, _)| t == "baseline"), || format!("{id}: the cold start compiled no baseline code: {compiles:?}"))?;
                    cold.push(took);
                    // Its background optimized compile ends before the next measure.
                    wait_optimized(&cx.cd.cache, &digest, Duration::from_secs(300))?;
                }
                let _ = cx.cd.ctr_output(["images", "rm", &image]);
            }
        }
        let (c, w) = (median(cold.clone()), median(warm.clone()));
        println!(
            "  {name} ({} KiB): first start cold {} (runs {:?}), precompiled {} (runs {:?}): {:.2}x",
            wasm.len() / 1024,
            ms(c),
            cold.iter().map(|d| d.as_millis()).collect::<Vec<_>>(),
            ms(w),
            warm.iter().map(|d| d.as_millis()).collect::<Vec<_>>(),
            c.as_secs_f64() / w.as_secs_f64()
        );
        if name == "big" {
            ensure(w < c, || format!("big: the precompiled first start ({}) is not faster than the cold one ({})", ms(w), ms(c)))?;
        }
    }
    Ok(())
}
