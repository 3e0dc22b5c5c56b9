//! `sandbox::*`: a guest trying to get out. Each trial runs the `escape` guest (or `tcp`,
//! `sleep`) and asserts what it must not reach or hold.
//!
//! - `paths`: a rootfs (`ctr run --config`) next to a host file holding a secret, with symlinks
//!   that point at it (absolute, and relative climbing out of the rootfs) and an entrypoint
//!   symlinked to a module outside. The guest tries `..`, the symlinks, hard and symbolic links
//!   of its own, `/proc/1/root`, writing outside; it sees no `/proc` at all, and its environment is the spec's (plus `PWD`), never the host's (containerd's
//!   environment carries a marker variable).
//! - `network`: a container without `--net-host` cannot connect to a listener on the host's
//!   loopback or its external address.
//! - `memory_cgroup`: the init runs inside the container's memory cgroup, whose limit is the
//!   one asked for.
//! - `capabilities`: the init's capability sets, no_new_privs and ids in `/proc/<pid>/status`
//!   are exactly the spec's, for ctr's default set, `--cap-add`, `--cap-drop`, `--privileged`;
//!   a non-root user ends with what runc's execve leaves it (permitted = effective = ambient);
//!   the init is not dumpable.
//! - `kernel_interfaces`: procfs, sysfs, cgroupfs, the host's /proc, /sys and /dev bound in, and
//!   device nodes shipped in the image: the guest opens none, busybox under runc is compared.
//! - `dev_symlink`: an image whose `/dev` points at `/etc` leaves the host's `/etc` alone.
//! - `shared_cgroup`: a second container given the cgroup of a running one (`ctr run --cgroup`,
//!   the same cgroupsPath) fails Create naming it, as runc refuses it, and the running one goes
//!   on untouched (before, undoing the failed Create killed every process in that cgroup).
//! - `seccomp`: `--seccomp` and custom profiles reach the init; NOTIFY and AppArmor on a host
//!   without it fail Create naming the field.
//! - `nss_module`: a rootfs whose `nsswitch.conf` names a module it ships: the init's name
//!   lookups (for a guest with an outbound allow-list) never load it.
//! - `devices_default_deny`: a spec without device rules, or without resources, still gets a
//!   devices cgroup that denies all but the default nodes.
//! - `leftovers_in_the_cgroup`: a process left in the container's cgroup dies with
//!   `kill --all -s SIGKILL`, or at `task delete`.
//! - `rootfs_propagation`: every `rootfsPropagation` runs, and no mount of the container
//!   reaches the host's table.
//! - `umask`: the spec's umask (else 022) masks the guest's new files.
//! - `name_files_read_only`: with an outbound allow-list, a served guest cannot rewrite
//!   `/etc/hosts` or `/etc/resolv.conf`.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use wasm_shim_e2e::containerd::{HOST_ONLY_VALUE, HOST_ONLY_VAR};
use wasm_shim_e2e::ctr::ensure;
use wasm_shim_e2e::images::{self, GUESTS_IMAGE};
use wasm_shim_e2e::{guests, RunOpts};
use wasm_shim_oci::ImageFile;

use super::{expect_code, Ctx};

/// What the host file outside every rootfs holds.
const SECRET: &str = "host-only-secret-5d9e";

/// The runtime spec containerd wrote to the task's bundle.
fn spec_json(cx: &Ctx, id: &str) -> Result<serde_json::Value> {
    let path = cx.cd.task_state_dir().join(id).join("config.json");
    let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
    Ok(serde_json::from_str(&text)?)
}

/// The lines `<attempt> -> ok: ...` / `-> error: ...` of the escape guest, by attempt.
fn attempts(stdout: &str) -> Vec<(String, Result<String, String>)> {
    stdout
        .lines()
        .filter_map(|l| {
            let (attempt, rest) = l.split_once(" -> ")?;
            let r = match rest.split_once(": ") {
                Some(("ok", v)) => Ok(v.to_string()),
                Some(("error", e)) => Err(e.to_string()),
                _ => return None,
            };
            Some((attempt.to_string(), r))
        })
        .collect()
}

pub fn paths(cx: &Ctx) -> Result<()> {
    paths_as(cx, "s-paths", None)
}

/// [`paths`] with the guest running as uid/gid 1000.
pub fn paths_nonroot(cx: &Ctx) -> Result<()> {
    paths_as(cx, "s-paths-1000", Some(1000))
}

/// The spec's `process.user`: `uid` for both ids, or root when `None`.
fn set_user(spec: &Path, user: Option<u32>) -> Result<()> {
    match user {
        Some(uid) => edit_spec(spec, |s| s["process"]["user"] = serde_json::json!({"uid": uid, "gid": uid})),
        None => Ok(()),
    }
}

fn paths_as(cx: &Ctx, id: &str, user: Option<u32>) -> Result<()> {
    println!("  as uid {}", user.unwrap_or(0));
    let g = guests::Guests::load()?;
    let dir = &cx.cd.dir;
    let marker = dir.join(format!("host-marker-{id}.txt"));
    std::fs::write(&marker, format!("{SECRET}\n"))?;
    std::fs::write(dir.join("outside.wasm"), g.get("hello"))?;
    let rootfs = dir.join(format!("rootfs-{id}"));
    let marker_abs = marker.display().to_string();
    images::write_rootfs(
        &[
            ImageFile::new("/escape.wasm", g.get("escape"), 0o755),
            ImageFile::new("/data/in.txt", "inside\n", 0o644),
            ImageFile::new("/tmp/.keep", Vec::new(), 0o644),
            // Pointing at the host file: absolute, and relative climbing out of the rootfs
            // (resolved on the host, `rootfs/../host-marker.txt` is the marker).
            ImageFile::symlink("/hostlink", marker_abs.clone()),
            ImageFile::symlink("/rellink", format!("../host-marker-{id}.txt")),
            // The entrypoint itself, symlinked to a module outside the rootfs.
            ImageFile::symlink("/out-abs.wasm", dir.join("outside.wasm").display().to_string()),
            ImageFile::symlink("/out-rel.wasm", "../outside.wasm"),
            // An absolute symlink that stays inside.
            ImageFile::symlink("/inlink", "/data/in.txt"),
        ],
        &rootfs,
    )?;
    let climb = format!("../../../../../..{marker_abs}");
    let tries: Vec<String> = vec![
        format!("read:/..{marker_abs}"),
        format!("read:{climb}"),
        format!("read:{marker_abs}"),
        "read:/hostlink".into(),
        "read:/rellink".into(),
        format!("read:/proc/1/root{marker_abs}"),
        format!("read:/proc/self/root{marker_abs}"),
        format!("hardlink:{climb}:/tmp/stolen-hard"),
        "hardlink:/hostlink:/tmp/stolen-hard2".into(),
        format!("symlink:{marker_abs}:/tmp/stolen-sym"),
        format!("symlink:{climb}:/tmp/stolen-sym2"),
        // Writing above the root: refused, or clamped to the rootfs; never on the host.
        "write:/../escaped.txt".into(),
        "write:../../escaped.txt".into(),
        "read:/proc/1/environ".into(),
        "read:/inlink".into(),
        "list:/".into(),
        "list:/proc".into(),
        "env".into(),
    ];
    let mut args = vec!["/escape.wasm"];
    args.extend(tries.iter().map(String::as_str));
    let spec = images::config_spec(&cx.cd, id, &rootfs, &args, serde_json::json!({}))?;
    let spec_env = ["PATH=/bin", "FROM_SPEC=yes"];
    edit_spec(&spec, |s| s["process"]["env"] = serde_json::json!(spec_env))?;
    set_user(&spec, user)?;
    let out = cx.cd.run(&RunOpts::wasm("", id).config(&spec))?;
    expect_code(&out, 0)?;

    let results = attempts(&out.stdout);
    let result = |t: &str| results.iter().find(|(a, _)| a == t).map(|(_, r)| r.clone());
    for t in &tries[..11] {
        let r = result(t).with_context(|| format!("no line for {t}: {out}"))?;
        println!("  {t} -> {}", match &r { Ok(v) => format!("ok: {v}"), Err(e) => format!("refused: {e}") });
        ensure(r.is_err(), || format!("{t} succeeded: {r:?}"))?;
    }
    ensure(!out.stdout.contains(SECRET) && !out.stderr.contains(SECRET), || format!("the host secret leaked: {out}"))?;
    for t in &tries[11..13] {
        println!("  {t} -> {:?}", result(t));
    }
    for host in [dir.join("escaped.txt"), dir.parent().unwrap_or(dir).join("escaped.txt")] {
        ensure(!host.exists(), || format!("the guest wrote {}", host.display()))?;
    }
    ensure(std::fs::read_to_string(&marker)? == format!("{SECRET}\n"), || "the host file changed".into())?;

    // No procfs in a wasm guest's view: /proc lists no process, /proc/1/environ does not open.
    let procs: Vec<String> = match result("list:/proc") {
        Some(Ok(names)) => names.split(',').filter(|n| !n.is_empty()).map(String::from).collect(),
        Some(Err(_)) => Vec::new(),
        None => bail!("no line for list:/proc: {out}"),
    };
    println!("  /proc holds {procs:?}; /inlink -> {:?}; / holds {:?}", result("read:/inlink"), result("list:/"));
    ensure(procs.is_empty(), || format!("the guest sees {procs:?} in /proc"))?;
    let environ = result("read:/proc/1/environ");
    ensure(matches!(environ, Some(Err(_))), || format!("/proc/1/environ opened: {environ:?}"))?;

    // The environment is exactly the spec's, and PWD (the working directory of a preview 1
    // guest, see the README).
    let mut env: Vec<&str> = out.stdout.lines().filter_map(|l| l.strip_prefix("env ")).collect();
    env.sort();
    println!("  environment: {env:?}");
    ensure(env == ["FROM_SPEC=yes", "PATH=/bin", "PWD=/"], || format!("the guest's environment is {env:?}, the spec's {spec_env:?}"))?;
    ensure(!out.stdout.contains(HOST_ONLY_VALUE), || format!("the host's {HOST_ONLY_VAR} reached the guest"))?;

    // An entrypoint symlinked out of the rootfs is looked up inside it, not on the host.
    for entry in ["/out-abs.wasm", "/out-rel.wasm"] {
        let spec = images::config_spec(&cx.cd, id, &rootfs, &[entry], serde_json::json!({}))?;
        set_user(&spec, user)?;
        let out = cx.cd.run(&RunOpts::wasm("", id).config(&spec).timeout(Duration::from_secs(20)))?;
        println!("  entrypoint {entry}: exit {:?}, {}", out.code, out.stderr.lines().last().unwrap_or(""));
        ensure(!out.success() && !out.stdout.contains("hello from wasm"), || format!("{entry} ran the module outside the rootfs: {out}"))?;
        ensure(out.stderr.contains(entry), || format!("the error does not name {entry}: {out}"))?;
    }
    let _ = std::fs::remove_dir_all(&rootfs);
    Ok(())
}

/// Rewrites the spec file at `path` with `f`.
fn edit_spec(path: &Path, f: impl FnOnce(&mut serde_json::Value)) -> Result<()> {
    let mut spec: serde_json::Value = serde_json::from_slice(&std::fs::read(path)?)?;
    f(&mut spec);
    std::fs::write(path, serde_json::to_vec_pretty(&spec)?)?;
    Ok(())
}

/// The host's first global IPv4 address, if any (`ip -4 -o addr show scope global`).
fn host_address() -> Option<String> {
    let out = std::process::Command::new("ip").args(["-4", "-o", "addr", "show", "scope", "global"]).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let word = text.split_whitespace().skip_while(|w| *w != "inet").nth(1)?;
    Some(word.split('/').next()?.to_string())
}

pub fn network(cx: &Ctx) -> Result<()> {
    let listener = std::net::TcpListener::bind("0.0.0.0:0").context("bind 0.0.0.0:0")?;
    listener.set_nonblocking(true)?;
    let port = listener.local_addr()?.port();
    let mut targets = vec![format!("127.0.0.1:{port}")];
    targets.extend(host_address().map(|a| format!("{a}:{port}")));
    for (i, target) in targets.iter().enumerate() {
        let id = format!("s-net-{i}");
        let out = cx.cd.run(&RunOpts::wasm(GUESTS_IMAGE, &id).args(["/tcp.wasm", "connect", target, "out"]).timeout(Duration::from_secs(30)))?;
        let why = out.stderr.lines().find(|l| l.contains("connect")).unwrap_or("").to_string();
        println!("  connect {target} without --net-host: exit {:?} after {:.1?}: {why}", out.code, out.duration);
        expect_code(&out, 1)?;
        ensure(!out.stdout.contains("reply:"), || format!("the guest got an answer: {out}"))?;
    }
    match listener.accept() {
        Ok((_, from)) => bail!("the host listener was reached from {from}"),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn status_field(pid: u32, name: &str) -> Result<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .map(|v| v.trim().to_string())
        .with_context(|| format!("no {name} in /proc/{pid}/status"))
}

/// `/sleep.wasm 30` detached, with `extra` ctr flags.
fn sleeper(id: &str, extra: &[&str]) -> RunOpts {
    let mut opts = RunOpts::wasm(GUESTS_IMAGE, id).args(["/sleep.wasm", "30"]).detach();
    opts.extra = extra.iter().map(|s| s.to_string()).collect();
    opts
}

/// Runs `opts` (a detached task), calls `check` with the init's pid, then removes it.
fn with_task(cx: &Ctx, id: &str, opts: &RunOpts, check: impl FnOnce(u32) -> Result<()>) -> Result<()> {
    let out = cx.cd.run(opts)?;
    ensure(out.success(), || format!("{out}"))?;
    let result = cx.cd.wait_status(id, "RUNNING", Duration::from_secs(10)).and_then(|()| check(cx.cd.task_pid(id)?));
    let _ = cx.cd.kill(id, "SIGKILL");
    let _ = cx.cd.wait_status(id, "STOPPED", Duration::from_secs(10));
    let _ = cx.cd.task_delete(id);
    let _ = cx.cd.container_rm(id);
    result
}

pub fn memory_cgroup(cx: &Ctx) -> Result<()> {
    let id = "s-mem";
    let limit: u64 = 96 << 20;
    with_task(cx, id, &sleeper(id, &["--memory-limit", &limit.to_string()]), |pid| {
        let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
        let memory = cgroups
            .lines()
            .find_map(|l| {
                let mut f = l.splitn(3, ':');
                let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
                controllers.split(',').any(|c| c == "memory").then(|| path.to_string())
            })
            .or_else(|| cgroups.lines().find_map(|l| l.strip_prefix("0::").map(String::from)))
            .with_context(|| format!("no memory cgroup in /proc/{pid}/cgroup:\n{cgroups}"))?;
        let expected = cx.cd.cgroup_path(id);
        let file = ["memory.limit_in_bytes", "memory.max"]
            .iter()
            .map(|f| Path::new("/sys/fs/cgroup/memory").join(memory.trim_start_matches('/')).join(f))
            .chain(std::iter::once(Path::new("/sys/fs/cgroup").join(memory.trim_start_matches('/')).join("memory.max")))
            .find(|p| p.exists())
            .with_context(|| format!("no memory limit file for cgroup {memory}"))?;
        let got: u64 = std::fs::read_to_string(&file)?.trim().parse().with_context(|| file.display().to_string())?;
        println!("  init {pid} is in memory cgroup {memory}; {} = {got}", file.display());
        ensure(memory == expected, || format!("the init is in memory cgroup {memory}, not {expected}"))?;
        ensure(got == limit, || format!("{} is {got}, not {limit}", file.display()))
    })
}

/// Capability names in bit order (linux/capability.h, 0..=40).
const CAPS: [&str; 41] = [
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
    "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER",
    "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
    "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP",
    "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF",
    "CHECKPOINT_RESTORE",
];

/// The kernel's mask for a spec capability list, restricted to what this kernel knows (the
/// bounding set of this process shows it).
fn mask(list: &serde_json::Value, known: u64) -> Result<u64> {
    let mut m = 0u64;
    for name in list.as_array().map(Vec::as_slice).unwrap_or_default() {
        let name = name.as_str().unwrap_or("").trim_start_matches("CAP_");
        let bit = CAPS.iter().position(|c| *c == name).with_context(|| format!("unknown capability {name}"))?;
        m |= 1 << bit;
    }
    Ok(m & known)
}

pub fn capabilities(cx: &Ctx) -> Result<()> {
    let known = u64::from_str_radix(&status_field(std::process::id(), "CapBnd")?, 16)?;
    let mut cases: Vec<(&str, String, RunOpts)> = [
        ("s-caps-default", &[][..]),
        ("s-caps-add", &["--cap-add", "CAP_SYS_ADMIN", "--cap-add", "CAP_NET_ADMIN"]),
        ("s-caps-drop", &["--cap-drop", "CAP_NET_RAW", "--cap-drop", "CAP_CHOWN"]),
        ("s-caps-privileged", &["--privileged"]),
        ("s-caps-new-privs", &["--allow-new-privs"]),
    ]
    .into_iter()
    .map(|(id, flags)| (id, flags.join(" "), sleeper(id, flags)))
    .collect();
    // ctr 1.6 has no --user: a spec with uid/gid 1000 and the default capabilities.
    let id = "s-caps-user";
    let rootfs = cx.cd.dir.join(format!("rootfs-{id}"));
    images::write_rootfs(&[ImageFile::new("/sleep.wasm", guests::Guests::load()?.get("sleep"), 0o755)], &rootfs)?;
    let spec = images::config_spec(&cx.cd, id, &rootfs, &["/sleep.wasm", "30"], serde_json::json!({}))?;
    edit_spec(&spec, |s| s["process"]["user"] = serde_json::json!({"uid": 1000, "gid": 1000}))?;
    cases.push((id, "uid/gid 1000 in the spec".into(), RunOpts::wasm("", id).config(&spec).detach()));
    for (id, flags, opts) in &cases {
        let id = *id;
        with_task(cx, id, opts, |pid| {
            let spec = spec_json(cx, id)?;
            let caps = &spec["process"]["capabilities"];
            let mut line = Vec::new();
            let root = spec["process"]["user"]["uid"].as_u64().unwrap_or(0) == 0;
            for (field, set) in [("CapEff", "effective"), ("CapPrm", "permitted"), ("CapBnd", "bounding"), ("CapInh", "inheritable"), ("CapAmb", "ambient")] {
                let got = u64::from_str_radix(&status_field(pid, field)?, 16)?;
                // A non-root user: what runc's execve leaves, permitted = effective = ambient.
                let set = if !root && (set == "effective" || set == "permitted") { "ambient" } else { set };
                let want = mask(&caps[set], known)?;
                ensure(got == want, || format!("{id} ({flags:?}): {field} is {got:016x}, the spec's {set} set is {want:016x}"))?;
                line.push(format!("{field} {got:x}"));
            }
            // Not dumpable: /proc/<pid> of the init belongs to root, whatever the guest's uid.
            let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(format!("/proc/{pid}/mem"))?);
            ensure(owner == 0, || format!("{id}: /proc/{pid}/mem belongs to uid {owner}: the init is dumpable"))?;
            let nnp = status_field(pid, "NoNewPrivs")?;
            let want_nnp = if spec["process"]["noNewPrivileges"].as_bool().unwrap_or(false) { "1" } else { "0" };
            ensure(nnp == want_nnp, || format!("{id}: NoNewPrivs is {nnp}, the spec says {want_nnp}"))?;
            let uid = status_field(pid, "Uid")?;
            let gid = status_field(pid, "Gid")?;
            let (want_uid, want_gid) = (spec["process"]["user"]["uid"].as_u64().unwrap_or(0), spec["process"]["user"]["gid"].as_u64().unwrap_or(0));
            ensure(uid.split_whitespace().all(|u| u == want_uid.to_string()), || format!("{id}: Uid {uid}, the spec says {want_uid}"))?;
            ensure(gid.split_whitespace().all(|g| g == want_gid.to_string()), || format!("{id}: Gid {gid}, the spec says {want_gid}"))?;
            println!("  {id} ({flags}): {}, NoNewPrivs {nnp}, uid {want_uid}", line.join(", "));
            Ok(())
        })?;
    }
    let _ = std::fs::remove_dir_all(&rootfs);
    Ok(())
}

/// `mknod PATH TYPE MAJOR MINOR` (the test runs as root).
fn mknod(path: &Path, kind: &str, major: u64, minor: u64) -> Result<()> {
    let st = std::process::Command::new("mknod").arg(path).args([kind, &major.to_string(), &minor.to_string()]).status()?;
    ensure(st.success(), || format!("mknod {} {kind} {major} {minor} failed", path.display()))
}

/// The busybox script that makes the escape guest's attempts under runc, one line each in the
/// guest's format.
fn busybox_script(tries: &[&str]) -> String {
    let mut sh = String::new();
    for t in tries {
        let (op, path) = t.split_once(':').unwrap_or((t, ""));
        let test = match op {
            "read" => format!("/bin/busybox cat {path} >/dev/null 2>&1"),
            "list" => format!("/bin/busybox ls {path} >/dev/null 2>&1"),
            "open-rw" => format!("( exec 3<>{path} ) 2>/dev/null"),
            // Append: opens for writing without truncating, and writes nothing.
            _ => format!("( exec 3>>{path} ) 2>/dev/null"),
        };
        sh.push_str(&format!("if {test}; then echo '{t} -> ok: opened'; else echo '{t} -> error: refused'; fi\n"));
    }
    sh
}

/// Kernel interfaces and device nodes. The spec mounts what ctr's default spec does (proc, sysfs,
/// cgroup, devpts, mqueue) plus recursive binds of the host's `/proc`, `/sys` and `/dev`, and the
/// image ships a character node (`/dev/kmsg`'s numbers) and a block node (the host's root disk).
/// The wasm guest opens none of them (its own init's memory, maps, environment and descriptors
/// included) and only the granted `/dev` nodes open. Busybox under runc makes the same attempts
/// on the same rootfs: everything it is refused, the guest is refused too.
pub fn kernel_interfaces(cx: &Ctx) -> Result<()> {
    kernel_interfaces_as(cx, "s-kernel", None)
}

/// [`kernel_interfaces`] with the guest (and busybox under runc) running as uid/gid 1000.
pub fn kernel_interfaces_nonroot(cx: &Ctx) -> Result<()> {
    kernel_interfaces_as(cx, "s-kernel-1000", Some(1000))
}

fn kernel_interfaces_as(cx: &Ctx, id: &str, user: Option<u32>) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    println!("  as uid {}", user.unwrap_or(0));
    let g = guests::Guests::load()?;
    let rootfs = cx.cd.dir.join(format!("rootfs-{id}"));
    let mut files = images::busybox_files()?;
    files.push(ImageFile::new("/escape.wasm", g.get("escape"), 0o755));
    // The same guest as a component (the preview 1 command adapter): the same view.
    files.push(ImageFile::new("/escape-component.wasm", guests::component_from_module(g.get("escape"))?, 0o755));
    files.push(ImageFile::new("/nodes/.keep", Vec::new(), 0o644));
    images::write_rootfs(&files, &rootfs)?;
    mknod(&rootfs.join("nodes/kmsg"), "c", 1, 11)?;
    let disk = std::fs::metadata("/")?.dev();
    mknod(&rootfs.join("nodes/disk"), "b", libc::major(disk) as u64, libc::minor(disk) as u64)?;

    let tries: Vec<&str> = vec![
        "open-rw:/proc/self/mem",
        "read:/proc/self/maps",
        "read:/proc/self/environ",
        "list:/proc/self/fd",
        "read:/proc/thread-self/comm",
        "read:/proc/1/cmdline",
        "open-w:/proc/sysrq-trigger",
        "open-w:/proc/sys/kernel/hostname",
        "list:/sys/fs/cgroup",
        "open-w:/sys/kernel/uevent_helper",
        "open-w:/hostproc/sysrq-trigger",
        "open-rw:/hostproc/1/mem",
        "read:/hostproc/1/environ",
        "list:/hostsys/fs/cgroup",
        "open-w:/hostdev/kmsg",
        "open-rw:/nodes/kmsg",
        "open-rw:/nodes/disk",
        "open-w:/nodes/disk",
    ];
    let granted = ["open-rw:/dev/null", "open-rw:/dev/zero", "open-rw:/dev/urandom", "open-rw:/dev/full"];
    let mut args = vec!["/escape.wasm"];
    args.extend(tries.iter().copied());
    args.extend(granted);
    args.push("list:/dev");
    let spec = images::config_spec(&cx.cd, id, &rootfs, &args, serde_json::json!({}))?;
    edit_spec(&spec, |s| {
        let mounts = s["mounts"].as_array_mut().expect("ctr's spec has mounts");
        for (dest, src) in [("/hostproc", "/proc"), ("/hostsys", "/sys"), ("/hostdev", "/dev")] {
            mounts.push(serde_json::json!({"destination": dest, "type": "bind", "source": src, "options": ["rbind", "ro"]}));
        }
    })?;
    set_user(&spec, user)?;
    let out = cx.cd.run(&RunOpts::wasm("", id).config(&spec))?;
    expect_code(&out, 0)?;
    let wasm = attempts(&out.stdout);
    let result = |t: &str| wasm.iter().find(|(a, _)| a == t).map(|(_, r)| r.clone());

    // The component makes the same attempts, with the same result.
    edit_spec(&spec, |s| s["process"]["args"][0] = serde_json::json!("/escape-component.wasm"))?;
    let cout = cx.cd.run(&RunOpts::wasm("", id).config(&spec))?;
    expect_code(&cout, 0)?;
    let component = attempts(&cout.stdout);
    for t in tries.iter().chain(granted.iter()) {
        let (m, c) = (result(t).map(|r| r.is_ok()), component.iter().find(|(a, _)| a == t).map(|(_, r)| r.is_ok()));
        ensure(m.is_some() && m == c, || format!("{t}: the module {m:?}, the component {c:?}: {cout}"))?;
    }
    println!("  the component version: the same {} results", tries.len() + granted.len());

    // The same attempts by busybox under runc, same rootfs, same mounts.
    let rid = &format!("{id}-runc");
    let script = busybox_script(&tries);
    let rspec = images::config_spec(&cx.cd, rid, &rootfs, &["/bin/sh", "-c", &script], serde_json::json!({}))?;
    std::fs::copy(&spec, &rspec)?;
    edit_spec(&rspec, |s| {
        s["process"]["args"] = serde_json::json!(["/bin/sh", "-c", script]);
        s["linux"]["cgroupsPath"] = serde_json::json!(cx.cd.cgroup_path(rid));
    })?;
    let rout = cx.cd.run(&RunOpts::runc("", rid).config(&rspec))?;
    expect_code(&rout, 0)?;
    let runc = attempts(&rout.stdout);
    ensure(runc.len() == tries.len(), || format!("busybox under runc made {} of {} attempts: {rout}", runc.len(), tries.len()))?;

    for t in &tries {
        let w = result(t).with_context(|| format!("no line for {t}: {out}"))?;
        let r = runc.iter().find(|(a, _)| a == t).map(|(_, r)| r.is_ok()).unwrap_or(false);
        println!("  {t}: wasm {}, runc {}", if w.is_ok() { "OPENED" } else { "refused" }, if r { "opened" } else { "refused" });
        ensure(w.is_err(), || format!("the wasm guest got through {t}: {w:?}"))?;
    }
    // The device nodes the image ships are refused by runc too (its device cgroup): the
    // comparison is not vacuous.
    for t in ["open-rw:/nodes/kmsg", "open-rw:/nodes/disk"] {
        ensure(runc.iter().any(|(a, r)| a == t && r.is_err()), || format!("runc opened {t}: {rout}"))?;
    }
    for t in granted {
        let r = result(t).with_context(|| format!("no line for {t}: {out}"))?;
        ensure(r.is_ok(), || format!("the granted {t} did not open: {r:?}"))?;
    }
    let dev = match result("list:/dev") {
        Some(Ok(names)) => names,
        other => bail!("list:/dev: {other:?}"),
    };
    println!("  /dev holds {dev}");
    for name in dev.split(',').filter(|n| !n.is_empty()) {
        ensure(
            ["null", "zero", "full", "random", "urandom", "tty", "shm", "pts", "mqueue"].contains(&name),
            || format!("the guest's /dev holds {name}: {dev}"),
        )?;
    }
    let _ = std::fs::remove_dir_all(&rootfs);
    Ok(())
}

/// An image whose `/dev` is a symlink to `/etc` (and whose `/etc/null` is a symlink to a host
/// file): setting up the device nodes touches neither the host's `/etc` nor the host file.
pub fn dev_symlink(cx: &Ctx) -> Result<()> {
    let id = "s-devlink";
    let g = guests::Guests::load()?;
    let marker = cx.cd.dir.join("devlink-marker.txt");
    std::fs::write(&marker, format!("{SECRET}\n"))?;
    let rootfs = cx.cd.dir.join(format!("rootfs-{id}"));
    images::write_rootfs(
        &[
            ImageFile::new("/escape.wasm", g.get("escape"), 0o755),
            ImageFile::symlink("/dev", "/etc"),
            ImageFile::new("/etc/hostname", "inside\n", 0o644),
            ImageFile::symlink("/etc/null", marker.display().to_string()),
        ],
        &rootfs,
    )?;
    let host_etc: Vec<String> = DEVICES.iter().filter(|d| Path::new("/etc").join(d).exists()).map(|d| d.to_string()).collect();
    // No /dev mount in the spec: the nodes go into the image's /dev, i.e. its /etc.
    let spec = images::config_spec(&cx.cd, id, &rootfs, &["/escape.wasm", "list:/etc", "open-rw:/etc/null"], serde_json::json!({}))?;
    edit_spec(&spec, |s| {
        if let Some(m) = s["mounts"].as_array_mut() {
            m.retain(|m| !m["destination"].as_str().unwrap_or("").starts_with("/dev"));
        }
    })?;
    let out = cx.cd.run(&RunOpts::wasm("", id).config(&spec))?;
    expect_code(&out, 0)?;
    println!("  the image's /etc (its /dev) after setup: {:?}", attempts(&out.stdout));
    let now: Vec<String> = DEVICES.iter().filter(|d| Path::new("/etc").join(d).exists()).map(|d| d.to_string()).collect();
    ensure(now == host_etc, || format!("the host's /etc gained {now:?} (had {host_etc:?})"))?;
    ensure(std::fs::read_to_string(&marker)? == format!("{SECRET}\n"), || "the host file behind /etc/null changed".into())?;
    ensure(std::fs::symlink_metadata(&marker)?.file_type().is_file(), || "the host file is no longer a file".into())?;
    ensure(out.stdout.contains("open-rw:/etc/null -> ok"), || format!("the granted null (at the image's /dev) did not open: {out}"))?;
    let _ = std::fs::remove_dir_all(&rootfs);
    Ok(())
}

const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// `--seccomp` (containerd's default profile, Kubernetes' RuntimeDefault): the init runs under
/// a filter (Seccomp: 2) and the guest still works; a custom profile that refuses `mkdirat`
/// with EPERM makes the guest's mkdir fail while everything else runs; an AppArmor profile on
/// a host without AppArmor fails Create naming the field.
pub fn seccomp(cx: &Ctx) -> Result<()> {
    let id = "s-seccomp";
    with_task(cx, id, &sleeper(id, &["--seccomp"]), |pid| {
        let mode = status_field(pid, "Seccomp")?;
        println!("  --seccomp: init {pid} Seccomp {mode}, filters {}", status_field(pid, "Seccomp_filters").unwrap_or_default());
        ensure(mode == "2", || format!("the init's Seccomp mode is {mode}, not 2 (filter)"))
    })?;
    let out = cx.cd.run(&RunOpts::wasm(GUESTS_IMAGE, "s-seccomp-hello").args(["/hello.wasm"]).extra(&["--seccomp"]))?;
    expect_code(&out, 0)?;
    ensure(out.stdout.contains("hello"), || format!("hello under the default profile: {out}"))?;

    let id = "s-seccomp-mkdir";
    let g = guests::Guests::load()?;
    let rootfs = cx.cd.dir.join(format!("rootfs-{id}"));
    images::write_rootfs(&[ImageFile::new("/escape.wasm", g.get("escape"), 0o755), ImageFile::new("/tmp/.keep", Vec::new(), 0o644)], &rootfs)?;
    let spec = images::config_spec(&cx.cd, id, &rootfs, &["/escape.wasm", "write:/tmp/a.txt", "hardlink:/tmp/a.txt:/tmp/b.txt"], serde_json::json!({}))?;
    edit_spec(&spec, |s| {
        s["linux"]["seccomp"] = serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64"],
            "syscalls": [{"names": ["linkat", "link"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]
        });
    })?;
    let out = cx.cd.run(&RunOpts::wasm("", id).config(&spec))?;
    expect_code(&out, 0)?;
    let r = attempts(&out.stdout);
    println!("  linkat refused by a custom profile: {r:?}");
    ensure(r.iter().any(|(a, r)| a == "write:/tmp/a.txt" && r.is_ok()), || format!("the write failed: {out}"))?;
    ensure(
        r.iter().any(|(a, r)| a == "hardlink:/tmp/a.txt:/tmp/b.txt" && r.as_ref().err().map(|e| e.contains("not permitted")).unwrap_or(false)),
        || format!("linkat was not refused with EPERM: {out}"),
    )?;

    // A profile the shim cannot apply: a Create error naming the field.
    edit_spec(&spec, |s| {
        s["linux"]["seccomp"]["syscalls"] = serde_json::json!([{"names": ["openat"], "action": "SCMP_ACT_NOTIFY"}]);
    })?;
    let out = cx.cd.run(&RunOpts::wasm("", id).config(&spec).timeout(Duration::from_secs(20)))?;
    println!("  SCMP_ACT_NOTIFY: exit {:?}: {}", out.code, out.stderr.lines().last().unwrap_or(""));
    ensure(!out.success() && out.stderr.contains("linux.seccomp") && out.stderr.contains("SCMP_ACT_NOTIFY"), || format!("{out}"))?;

    if !std::path::Path::new("/sys/module/apparmor/parameters/enabled").exists() {
        edit_spec(&spec, |s| {
            s["linux"].as_object_mut().map(|l| l.remove("seccomp"));
            s["process"]["apparmorProfile"] = serde_json::json!("cri-containerd.apparmor.d");
        })?;
        let out = cx.cd.run(&RunOpts::wasm("", id).config(&spec).timeout(Duration::from_secs(20)))?;
        println!("  apparmorProfile without AppArmor: exit {:?}: {}", out.code, out.stderr.lines().last().unwrap_or(""));
        ensure(!out.success() && out.stderr.contains("process.apparmorProfile"), || format!("{out}"))?;
    }
    let _ = std::fs::remove_dir_all(&rootfs);
    Ok(())
}

/// See the module's doc.
pub fn shared_cgroup(cx: &Ctx) -> Result<()> {
    let cgroup = format!("/{}/shared-cgroup", cx.cd.namespace);
    let first = "w-cg-first";
    let mut run = cx.cd.spawn(&RunOpts::wasm(GUESTS_IMAGE, first).args(["/sleep.wasm", "60"]).extra(&["--cgroup", &cgroup]))?;
    run.wait_for_stdout("sleeping", Duration::from_secs(20))?;
    let second = cx.cd.run(&RunOpts::wasm(GUESTS_IMAGE, "w-cg-second").args(["/hello.wasm"]).extra(&["--cgroup", &cgroup]))?;
    println!("  second container: {}", second.stderr.trim());
    // containerd cleans up after the refused Create (the shim's `delete` action among it).
    std::thread::sleep(Duration::from_millis(500));
    let still = cx.cd.task_status(first)?;
    ensure(still.as_deref() == Some("RUNNING"), || format!("the first container after the second's Create: {still:?}; its output: {}", run.stdout_now()))?;
    cx.cd.kill(first, "SIGKILL")?;
    let out = run.wait(Duration::from_secs(10));
    ensure(!second.success() && second.stderr.contains(&cgroup) && second.stderr.contains("not empty"), || format!("second container: {second}"))?;
    // Killed by us, not before: 137 and its first line only.
    expect_code(&out, 137)?;
    ensure(!out.stdout.contains("done"), || format!("{out}"))
}

/// The C of a name-service module whose loading shows: its constructor writes a marker line to
/// the process's stderr (the container's log) and a file at the rootfs's top.
const NSS_MODULE: &str = r#"
#include <fcntl.h>
#include <unistd.h>
__attribute__((constructor)) static void loaded(void) {
    static const char line[] = "NSS MODULE OF THE CONTAINER LOADED IN THE INIT\n";
    (void)!write(2, line, sizeof line - 1);
    int fd = open("/nss-module-ran", O_CREAT | O_WRONLY, 0644);
    if (fd >= 0) close(fd);
}
"#;

/// A rootfs whose `/etc/nsswitch.conf` says `hosts: evil` and whose library directories hold
/// `libnss_evil.so.2` (what an image can ship, or a guest write on a writable rootfs): a served
/// guest with an outbound allow-list looks a name up (`/connect`, `wasi:sockets`'
/// `ip-name-lookup`, which the init answers with libc, as the allow-list's own check does).
/// glibc must not load the module into the init: no marker line, no marker file; the request is
/// answered. Before the name service was fixed at the pivot, glibc loaded it.
pub fn nss_module(cx: &Ctx) -> Result<()> {
    let id = "s-nss";
    let dir = cx.cd.dir.join("nss-module");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("evil.c"), NSS_MODULE)?;
    let so = dir.join("libnss_evil.so.2");
    let cc = std::process::Command::new("cc").args(["-shared", "-fPIC", "-o"]).arg(&so).arg(dir.join("evil.c")).output().context("cc (gcc)")?;
    ensure(cc.status.success(), || format!("cc: {}", String::from_utf8_lossy(&cc.stderr)))?;
    let module = std::fs::read(&so)?;
    let triple = format!("{}-linux-gnu", std::env::consts::ARCH);
    let g = guests::Guests::load()?;
    let mut files = vec![
        ImageFile::new("/http.wasm", g.get("http"), 0o755),
        ImageFile::new("/etc/nsswitch.conf", b"hosts: evil\n".to_vec(), 0o644),
    ];
    for d in [format!("/lib/{triple}"), format!("/usr/lib/{triple}"), "/lib".into(), "/usr/lib".into(), "/lib64".into()] {
        files.push(ImageFile::new(format!("{d}/libnss_evil.so.2"), module.clone(), 0o755));
    }
    let rootfs = cx.cd.dir.join(format!("rootfs-{id}"));
    images::write_rootfs(&files, &rootfs)?;
    let port = super::free_port()?;
    let spec = images::config_spec(&cx.cd, id, &rootfs, &["/http.wasm"], serde_json::json!({}))?;
    edit_spec(&spec, |s| {
        s["annotations"] = serde_json::json!({
            wasm_shim_oci::http::PORT: port.to_string(),
            wasm_shim_oci::http::ALLOWED_OUTBOUND: "http://evil.test:80",
        });
        // The host's network, to reach the port.
        if let Some(ns) = s["linux"]["namespaces"].as_array_mut() {
            ns.retain(|n| n["type"] != "network");
        }
    })?;
    let mut run = cx.cd.spawn(&RunOpts::wasm("", id).config(&spec).timeout(Duration::from_secs(60)))?;
    let base = format!("http://127.0.0.1:{port}");
    wasm_shim_e2e::http::wait_until_serving(&format!("{base}/"), Duration::from_secs(30)).with_context(|| format!("output so far: {}", run.stdout_now()))?;
    let r = wasm_shim_e2e::http::get(&format!("{base}/connect?addr=evil.test:80"))?;
    println!("  /connect?addr=evil.test:80 -> {} {}", r.status, r.body.trim());
    ensure(r.status == 502, || format!("the lookup of evil.test: {r}"))?;
    cx.cd.kill(id, "SIGTERM")?;
    let out = run.wait(Duration::from_secs(10));
    expect_code(&out, 0)?;
    ensure(!out.combined().contains("NSS MODULE OF THE CONTAINER"), || format!("glibc loaded the container's module into the init: {out}"))?;
    ensure(!rootfs.join("nss-module-ran").exists(), || "glibc loaded the container's module into the init: its marker file is there".to_string())?;
    println!("  the container's nsswitch.conf and libnss_evil.so.2 were not used by the init");
    Ok(())
}

/// A spec without device rules, and one without `linux.resources` at all (hand-written specs,
/// other tools than containerd's): the container's devices cgroup still denies every device
/// but the default nodes, as runc makes it, instead of keeping its parent's "every device".
/// Checked in `devices.list` (cgroup v1; on v2 the rules are an eBPF program, unit-tested).
pub fn devices_default_deny(cx: &Ctx) -> Result<()> {
    let g = guests::Guests::load()?;
    let rootfs = cx.cd.dir.join("rootfs-s-devices");
    images::write_rootfs(&[ImageFile::new("/sleep.wasm", g.get("sleep"), 0o755)], &rootfs)?;
    for (id, drop_all) in [("s-devices-none", false), ("s-devices-nores", true)] {
        let spec = images::config_spec(&cx.cd, id, &rootfs, &["/sleep.wasm", "30"], serde_json::json!({}))?;
        edit_spec(&spec, |s| {
            if drop_all {
                s["linux"].as_object_mut().map(|l| l.remove("resources"));
            } else {
                s["linux"]["resources"].as_object_mut().map(|r| r.remove("devices"));
            }
        })?;
        with_task(cx, id, &RunOpts::wasm("", id).config(&spec).detach(), |pid| {
            let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
            let Some(path) = cgroups.lines().find_map(|l| {
                let mut f = l.splitn(3, ':');
                let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
                controllers.split(',').any(|c| c == "devices").then(|| path.to_string())
            }) else {
                println!("  {id}: no v1 devices controller (cgroup v2): the eBPF filter is unit-tested");
                return Ok(());
            };
            let list = std::fs::read_to_string(Path::new("/sys/fs/cgroup/devices").join(path.trim_start_matches('/')).join("devices.list"))?;
            println!("  {id}: devices.list {:?}", list.lines().collect::<Vec<_>>());
            ensure(!list.contains("a *:* rwm"), || format!("{id}: every device allowed:\n{list}"))?;
            ensure(list.lines().any(|l| l == "c 1:3 rwm"), || format!("{id}: /dev/null (c 1:3) not allowed:\n{list}"))
        })?;
    }
    Ok(())
}

/// A process the init left behind in the container's cgroup (only native code could fork one
/// there, so the trial puts a host `sleep` into the cgroup, as such a child would be in a pid
/// namespace the pod shares): `ctr task kill --all -s SIGKILL` kills it with the init, as runc's
/// kill --all does; and with a plain kill of the init, `ctr task delete` kills it before removing
/// the cgroup. Before, both left it running.
pub fn leftovers_in_the_cgroup(cx: &Ctx) -> Result<()> {
    for (id, all) in [("s-left-all", true), ("s-left-delete", false)] {
        cx.cd.run(&sleeper(id, &[]))?;
        cx.cd.wait_status(id, "RUNNING", Duration::from_secs(10))?;
        let pid = cx.cd.task_pid(id)?;
        let mut stray = std::process::Command::new("sleep").arg("300").spawn()?;
        let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
        let mut joined = 0;
        for line in cgroups.lines() {
            let mut f = line.splitn(3, ':');
            let (Some(_), Some(controllers), Some(path)) = (f.next(), f.next(), f.next()) else { continue };
            let dir = match controllers {
                "" => Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/')),
                c if c.split(',').any(|c| ["memory", "pids", "freezer", "devices"].contains(&c)) => {
                    Path::new("/sys/fs/cgroup").join(c).join(path.trim_start_matches('/'))
                }
                _ => continue,
            };
            if std::fs::write(dir.join("cgroup.procs"), stray.id().to_string()).is_ok() {
                joined += 1;
            }
        }
        ensure(joined > 0, || format!("{id}: the stray process joined no cgroup of the init's: {cgroups}"))?;
        // Whether the stray has ended within `limit` (it is this process's child: reaped here).
        let ended = |stray: &mut std::process::Child, limit: Duration| -> Result<Option<std::process::ExitStatus>> {
            let deadline = std::time::Instant::now() + limit;
            loop {
                match stray.try_wait()? {
                    Some(s) => return Ok(Some(s)),
                    None if std::time::Instant::now() > deadline => return Ok(None),
                    None => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        };
        let status = if all {
            cx.cd.ctr_ok(["tasks", "kill", "--all", "-s", "SIGKILL", id])?;
            cx.cd.wait_status(id, "STOPPED", Duration::from_secs(10))?;
            // Before the task is deleted (and its shim, alone, exits and cleans up).
            ended(&mut stray, Duration::from_secs(2))?
        } else {
            cx.cd.kill(id, "SIGKILL")?;
            cx.cd.wait_status(id, "STOPPED", Duration::from_secs(10))?;
            ensure(stray.try_wait()?.is_none(), || format!("{id}: a kill of the init alone killed the stray process"))?;
            cx.cd.task_delete(id)?;
            // Right after Delete answered.
            ended(&mut stray, Duration::from_millis(200))?
        };
        if status.is_none() {
            let _ = stray.kill();
            let _ = stray.wait();
        }
        let _ = cx.cd.task_delete(id);
        let _ = cx.cd.container_rm(id);
        println!("  {id}: the stray process ended: {status:?}");
        ensure(status.is_some(), || format!("{id}: the process left in the container's cgroup still runs"))?;
    }
    Ok(())
}

/// `linux.rootfsPropagation` as the CRI sets it (`rshared` for a pod with a Bidirectional
/// volume, `rslave` for HostToContainer) and the other values: the container runs, and none of
/// its mounts (the rootfs bind, its tmpfs) shows in the host's mount table afterwards. With
/// `rshared` pivot_root refused the shared root before.
pub fn rootfs_propagation(cx: &Ctx) -> Result<()> {
    let g = guests::Guests::load()?;
    let rootfs = cx.cd.dir.join("rootfs-s-propagation");
    images::write_rootfs(&[ImageFile::new("/hello.wasm", g.get("hello"), 0o755)], &rootfs)?;
    let host_mounts = || -> Result<usize> {
        let info = std::fs::read_to_string("/proc/self/mountinfo")?;
        Ok(info.lines().filter(|l| l.contains(rootfs.to_str().unwrap_or("?"))).count())
    };
    let before = host_mounts()?;
    for (i, p) in ["rshared", "shared", "rslave", "slave", "rprivate", "private"].iter().enumerate() {
        let id = format!("s-prop-{i}");
        let spec = images::config_spec(&cx.cd, &id, &rootfs, &["/hello.wasm"], serde_json::json!({}))?;
        edit_spec(&spec, |s| {
            s["linux"]["rootfsPropagation"] = serde_json::json!(p);
            s["mounts"].as_array_mut().expect("ctr's spec has mounts").push(serde_json::json!({"destination": "/scratch", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev"]}));
        })?;
        let out = cx.cd.run(&RunOpts::wasm("", &id).config(&spec))?;
        expect_code(&out, 0).with_context(|| format!("rootfsPropagation {p}"))?;
        let after = host_mounts()?;
        println!("  rootfsPropagation {p}: exit 0, host mounts under the rootfs {before} -> {after}");
        ensure(after == before, || format!("rootfsPropagation {p}: the container's mounts reached the host: {after} under {}", rootfs.display()))?;
    }
    Ok(())
}

/// `process.user.umask` masks the mode of the files the guest creates, as runc applies it, and
/// without it 022 does (not the shim's own umask): `/tmp/out.txt` of the `files` guest is
/// 0600 with umask 077, 0644 without.
pub fn umask(cx: &Ctx) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let g = guests::Guests::load()?;
    for (id, umask, want) in [("s-umask-077", Some(0o077), 0o600), ("s-umask-default", None, 0o644)] {
        let rootfs = cx.cd.dir.join(format!("rootfs-{id}"));
        images::write_rootfs(
            &[
                ImageFile::new("/files.wasm", g.get("files"), 0o755),
                ImageFile::new("/data/in.txt", b"x\n".to_vec(), 0o644),
                ImageFile::new("/tmp/.keep", Vec::new(), 0o644),
            ],
            &rootfs,
        )?;
        let spec = images::config_spec(&cx.cd, id, &rootfs, &["/files.wasm"], serde_json::json!({}))?;
        edit_spec(&spec, |s| {
            if let Some(u) = umask {
                s["process"]["user"]["umask"] = serde_json::json!(u);
            }
            // The rootfs's /tmp, not ctr's tmpfs, so the file is seen from here.
            if let Some(m) = s["mounts"].as_array_mut() {
                m.retain(|m| m["destination"] != "/tmp");
            }
        })?;
        let out = cx.cd.run(&RunOpts::wasm("", id).config(&spec))?;
        expect_code(&out, 0)?;
        let mode = std::fs::metadata(rootfs.join("tmp/out.txt"))?.permissions().mode() & 0o777;
        println!("  umask {umask:?}: /tmp/out.txt is {mode:o}");
        ensure(mode == want, || format!("umask {umask:?}: /tmp/out.txt is {mode:o}, not {want:o}"))?;
    }
    Ok(())
}

/// A served guest with an outbound allow-list cannot rewrite `/etc/hosts` or
/// `/etc/resolv.conf` (the init resolves allowed names with them: a guest could otherwise point
/// an allowed name at the node's metadata service, or at a DNS server of its choosing); its
/// other files stay writable, and without an allow-list nothing changes. The WAGI guest writes
/// (a wasi:http component built with the proxy adapter has no files; one that imports
/// wasi:filesystem has the same view).
pub fn name_files_read_only(cx: &Ctx) -> Result<()> {
    let g = guests::Guests::load()?;
    for (id, allowed) in [("s-names-allow", true), ("s-names-open", false)] {
        let rootfs = cx.cd.dir.join(format!("rootfs-{id}"));
        images::write_rootfs(
            &[ImageFile::new("/wagi.wasm", g.get("wagi"), 0o755), ImageFile::new("/etc/hosts", b"127.0.0.1 localhost\n".to_vec(), 0o644)],
            &rootfs,
        )?;
        let port = super::free_port()?;
        let spec = images::config_spec(&cx.cd, id, &rootfs, &["/wagi.wasm"], serde_json::json!({}))?;
        edit_spec(&spec, |s| {
            s["annotations"] = serde_json::json!({ wasm_shim_oci::http::PORT: port.to_string(), wasm_shim_oci::http::SERVE: "wagi" });
            if allowed {
                s["annotations"][wasm_shim_oci::http::ALLOWED_OUTBOUND] = serde_json::json!("http://allowed.test:80");
            }
            if let Some(ns) = s["linux"]["namespaces"].as_array_mut() {
                ns.retain(|n| n["type"] != "network");
            }
        })?;
        let mut run = cx.cd.spawn(&RunOpts::wasm("", id).config(&spec).timeout(Duration::from_secs(60)))?;
        let base = format!("http://127.0.0.1:{port}");
        wasm_shim_e2e::http::wait_until_serving(&format!("{base}/"), Duration::from_secs(30)).with_context(|| format!("output so far: {}", run.stdout_now()))?;
        let append = |file: &str, words: &str| wasm_shim_e2e::http::get(&format!("{base}/append?file={file}&words={words}"));
        let hosts = append("/etc/hosts", "169.254.169.254,allowed.test")?;
        let resolv = append("/etc/resolv.conf", "nameserver,203.0.113.9")?;
        let other = append("/data.txt", "x")?;
        // Around the files: a new file beside them, or their directory moved away (for a new
        // /etc with the guest's own name files).
        let beside = append("/etc/new.conf", "x")?;
        let moved = wasm_shim_e2e::http::get(&format!("{base}/rename?from=/etc&to=/etc.old"))?;
        println!("  {id}: /etc/hosts {} {}; /etc/resolv.conf {} {}; /data.txt {}", hosts.status, hosts.body.trim(), resolv.status, resolv.body.trim(), other.status);
        println!("  {id}: /etc/new.conf {} {}; rename /etc {} {}", beside.status, beside.body.trim(), moved.status, moved.body.trim());
        cx.cd.kill(id, "SIGTERM")?;
        let out = run.wait(Duration::from_secs(10));
        expect_code(&out, 0)?;
        ensure(other.status == 200, || format!("{id}: another file: {other}"))?;
        // Where a rename left it, if it did.
        let on_disk = std::fs::read_to_string(rootfs.join("etc/hosts")).or_else(|_| std::fs::read_to_string(rootfs.join("etc.old/hosts")))?;
        if allowed {
            ensure(hosts.status == 502 && resolv.status == 502, || format!("{id}: the guest rewrote its name files: {hosts} {resolv}"))?;
            ensure(!on_disk.contains("169.254.169.254"), || format!("{id}: /etc/hosts now says {on_disk:?}"))?;
            ensure(beside.status == 502 && moved.status == 502, || format!("{id}: the guest changed /etc: {beside} {moved}"))?;
            ensure(rootfs.join("etc/hosts").exists() && !rootfs.join("etc.old").exists(), || format!("{id}: /etc was moved"))?;
        } else {
            ensure(hosts.status == 200 && on_disk.contains("169.254.169.254 allowed.test"), || format!("{id}: without an allow-list: {hosts}, {on_disk:?}"))?;
            // The same requests work where nothing is protected: they are not refused for
            // another reason.
            ensure(beside.status == 200 && moved.status == 200, || format!("{id}: without an allow-list: {beside} {moved}"))?;
        }
    }
    Ok(())
}
