//! The `doctor` mode: checks what a node needs to run the shim and prints one line per finding,
//! `ok|warn|fail  <what>  — <fix>`; exit status 1 when anything fails.
//!
//! Each check is a pure function of what it looks at (command output, file contents, a PATH),
//! so the tests feed it fixtures; [`main`] gathers those inputs from the node: containerd's
//! binary and version, the config it reads, the running containerd that reads it (its PATH and
//! `WASM_SHIM_*` environment are the shim's), `/proc/self/mountinfo`, `/proc/self/status`, the
//! LSM switches in `/sys`.

use std::fs;
use std::path::{Path, PathBuf};

use toml_edit::TableLike;

use crate::install::{self, FileKind, Layout, HANDLER, POD_ANNOTATIONS, SHIM_NAME};
use crate::settings::{show_size, Settings};
use crate::RUNTIME_ID;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub level: Level,
    pub what: String,
    /// What to do about it (empty for most `ok` lines).
    pub fix: String,
}

impl Finding {
    fn ok(what: impl Into<String>) -> Finding {
        Finding { level: Level::Ok, what: what.into(), fix: String::new() }
    }
    fn warn(what: impl Into<String>, fix: impl Into<String>) -> Finding {
        Finding { level: Level::Warn, what: what.into(), fix: fix.into() }
    }
    fn fail(what: impl Into<String>, fix: impl Into<String>) -> Finding {
        Finding { level: Level::Fail, what: what.into(), fix: fix.into() }
    }
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let level = match self.level {
            Level::Ok => "ok",
            Level::Warn => "warn",
            Level::Fail => "fail",
        };
        write!(f, "{level:<4}  {}", self.what)?;
        if !self.fix.is_empty() {
            write!(f, "  — {}", self.fix)?;
        }
        Ok(())
    }
}

/// The RuntimeClass the project ships: its `handler` must name the runtime in the config.
const RUNTIME_CLASS: &str = include_str!("../RuntimeClass.yaml");

/// The `handler:` of a RuntimeClass manifest.
pub fn runtime_class_handler(yaml: &str) -> Option<String> {
    yaml.lines()
        .find_map(|l| l.strip_prefix("handler:"))
        .map(|h| h.split('#').next().unwrap_or("").trim().trim_matches(|c| c == '"' || c == '\'').to_string())
        .filter(|h| !h.is_empty())
}

// ---------------------------------------------------------------------------------------------
// checks (pure)

/// containerd's version from `<binary> --version` (its output, or why it could not run).
pub fn check_containerd(binary: Option<&Path>, output: Result<&str, &str>) -> (Finding, Option<(u32, u32, u32)>) {
    let Some(binary) = binary else {
        return (
            Finding::fail("containerd not found", "install containerd (Debian: apt-get install containerd) or pass --containerd PATH"),
            None,
        );
    };
    let out = match output {
        Ok(o) => o,
        Err(e) => return (Finding::fail(format!("containerd at {}: {e}", binary.display()), "check the binary (reinstall containerd)"), None),
    };
    let Some(v) = install::parse_version(out) else {
        return (Finding::warn(format!("cannot read a version in `{} --version`: {out:?}", binary.display()), "pass --containerd PATH to the real binary"), None);
    };
    let what = format!("containerd {}.{}.{} ({})", v.0, v.1, v.2, binary.display());
    let finding = match v {
        (1, m, _) if m < 6 => Finding::fail(what, "containerd 1.6 or later is needed: upgrade containerd"),
        (0, _, _) => Finding::fail(what, "containerd 1.6 or later is needed: upgrade containerd"),
        (1, 6, p) if p < 25 => Finding::warn(
            format!("{what} refuses wasm OCI artifact images at unpack"),
            "upgrade to 1.6.25+, 1.7.7+ or 2.x, or import such images with `ctr image import --no-unpack` (classic images with a .wasm in a layer work)",
        ),
        (1, 7, p) if p < 7 => Finding::warn(
            format!("{what} refuses wasm OCI artifact images at unpack"),
            "upgrade to 1.7.7+ or 2.x, or import such images with `ctr image import --no-unpack` (classic images with a .wasm in a layer work)",
        ),
        _ => Finding::ok(what),
    };
    (finding, Some(v))
}

/// The config containerd reads (`text`: `None` when there is no file): the `wasm` runtime in
/// the plugin of its layout, its runtime type and pod annotations, and that `handler` (the
/// RuntimeClass's) names it.
pub fn check_config(path: &Path, text: Option<Result<&str, &str>>, version: Option<(u32, u32, u32)>, handler: &str) -> Vec<Finding> {
    let install_fix = format!("run `{SHIM_NAME} install --config {}`", path.display());
    let text = match text {
        None => return vec![Finding::fail(format!("no containerd config at {}", path.display()), install_fix)],
        Some(Err(e)) => return vec![Finding::fail(format!("cannot read {}: {e}", path.display()), "run doctor as root")],
        Some(Ok(t)) => t,
    };
    let kind = FileKind::of(path);
    let doc = match install::parse(path, text, kind) {
        Ok(d) => d,
        Err(e) => return vec![Finding::fail(format!("{e}"), "fix the file's syntax (containerd does not start with it)")],
    };
    let default = match kind {
        FileKind::K3sTemplate if path.file_name().is_some_and(|n| n == "config-v3.toml.tmpl") => Some(Layout::V3),
        FileKind::K3sTemplate => Some(Layout::V2),
        FileKind::Config => version.map(|v| Layout::for_major(v.0)),
    };
    let layout = match install::layout_of(path, &doc, kind, default) {
        Ok(l) => l,
        Err(_) if doc.as_table().is_empty() => {
            return vec![Finding::fail(format!("{} is empty: containerd runs with its defaults, without the wasm runtime", path.display()), install_fix)]
        }
        Err(e) => return vec![Finding::fail(format!("{e:#}"), "add the runtime by hand (README, deploy/)")],
    };
    if version.is_some_and(|v| v.0 < 2) && layout == Layout::V3 {
        return vec![Finding::fail(
            format!("{} is a version 3 config, which containerd 1.x does not read", path.display()),
            "write a version 2 config (deploy/containerd-1.x.toml)",
        )];
    }
    let mut out = Vec::new();
    let header = layout.header(handler);
    let runtimes = install::runtimes(&doc, layout);
    let ours = runtimes.map(install::our_runtimes).unwrap_or_default();
    let entry = runtimes.and_then(|r| r.get(handler)).and_then(|i| i.as_table_like());
    match entry {
        None => {
            // Under the other layout's plugin name, containerd would not see it.
            let other = if layout == Layout::V2 { Layout::V3 } else { Layout::V2 };
            let elsewhere = install::runtimes(&doc, other).and_then(|r| r.get(handler)).is_some();
            let what = if elsewhere {
                format!(
                    "{}: the runtime `{handler}` is under \"{}\", which a version {} config does not use; containerd says `no runtime for \"{handler}\" is configured`",
                    path.display(),
                    other.cri_plugin(),
                    layout.version()
                )
            } else {
                format!("{}: no runtime `{handler}` ({header}); pods with `runtimeClassName: {handler}` fail with `no runtime for \"{handler}\" is configured`", path.display())
            };
            out.push(Finding::fail(what, install_fix.clone()));
        }
        Some(e) => match e.get("runtime_type").and_then(|v| v.as_str()) {
            Some(t) if t == RUNTIME_ID => {
                out.push(Finding::ok(format!("{}: runtime `{handler}` → {RUNTIME_ID} ({header}, config version {})", path.display(), layout.version())));
                if !has_pod_annotations(e) {
                    out.push(Finding::warn(
                        format!("{}: runtime `{handler}` has no pod_annotations = [\"{POD_ANNOTATIONS}\"]: the pods' wasm.containerd.io/* annotations (serve, http-*) do not reach the shim", path.display()),
                        install_fix.clone(),
                    ));
                }
            }
            other => out.push(Finding::fail(
                format!(
                    "{}: runtime `{handler}` has runtime_type {}, not {RUNTIME_ID}",
                    path.display(),
                    other.map(|t| format!("{t:?}")).unwrap_or_else(|| "unset".into())
                ),
                format!("{install_fix} --force (it replaces that runtime type), or use another handler for this shim"),
            )),
        },
    }
    // The RuntimeClass's handler must be the name of a runtime on this shim.
    if ours.iter().any(|n| n == handler) {
        out.push(Finding::ok(format!("RuntimeClass handler `{handler}` (RuntimeClass.yaml) names a runtime on this shim")));
    } else if !ours.is_empty() {
        out.push(Finding::fail(
            format!("RuntimeClass handler `{handler}` (RuntimeClass.yaml) is not a runtime of the config; the shim's runtime is named {}", ours.join(", ")),
            format!("set `handler: {}` in the RuntimeClass, or rename the runtime table to `{handler}`", ours[0]),
        ));
    }
    out
}

fn has_pod_annotations(entry: &dyn TableLike) -> bool {
    entry
        .get("pod_annotations")
        .and_then(|v| v.as_array())
        .is_some_and(|a| a.iter().any(|v| matches!(v.as_str(), Some(POD_ANNOTATIONS) | Some("*"))))
}

/// Where containerd finds `name` the way it looks for shims: its PATH, then its own directory.
pub fn search(name: &str, path_var: &str, also: Option<&Path>, exists: impl Fn(&Path) -> bool) -> Option<PathBuf> {
    path_var
        .split(':')
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .chain(also.map(Path::to_path_buf))
        .map(|d| d.join(name))
        .find(|p| exists(p))
}

/// runc on the PATH the shim inherits from containerd (`found`: the search's result).
pub fn check_runc(found: Option<&Path>, path_desc: &str) -> Finding {
    match found {
        Some(p) => Finding::ok(format!("runc {} (pause sandboxes and native sidecars)", p.display())),
        None => Finding::fail(
            format!("runc is not on {path_desc}: pods' pause sandboxes and native sidecars cannot start"),
            "install runc (Debian: apt-get install runc) into a directory on containerd's PATH",
        ),
    }
}

/// The shim where containerd looks for it.
pub fn check_shim(found: Option<&Path>, path_desc: &str) -> Finding {
    match found {
        Some(p) => Finding::ok(format!("{SHIM_NAME} {} (found by containerd)", p.display())),
        None => Finding::fail(
            format!("{SHIM_NAME} is neither on {path_desc} nor next to containerd: io.containerd.wasm.v1 tasks fail with `no such file`"),
            format!("run `{SHIM_NAME} install` (copies it next to containerd)"),
        ),
    }
}

/// The cgroup mounts of `/proc/self/mountinfo` and, on v2, the root's `cgroup.controllers`.
pub fn check_cgroups(mountinfo: &str, v2_controllers: Option<&str>) -> Vec<Finding> {
    let mut v2_root = false;
    let mut unified = false;
    let mut v1: Vec<String> = Vec::new();
    for line in mountinfo.lines() {
        let Some((pre, post)) = line.split_once(" - ") else { continue };
        let mount_point = pre.split_whitespace().nth(4).unwrap_or("");
        let mut post = post.split_whitespace();
        let (fstype, _source, options) = (post.next().unwrap_or(""), post.next(), post.next().unwrap_or(""));
        match fstype {
            "cgroup2" if mount_point == "/sys/fs/cgroup" => v2_root = true,
            "cgroup2" if mount_point == "/sys/fs/cgroup/unified" => unified = true,
            "cgroup" => v1.extend(options.split(',').filter(|o| !o.starts_with("name=") && !matches!(*o, "rw" | "ro")).map(String::from)),
            _ => {}
        }
    }
    let missing = |have: &[String], need: &[&str]| -> Vec<String> { need.iter().filter(|n| !have.iter().any(|h| h == *n)).map(|n| n.to_string()).collect() };
    if v2_root {
        let have: Vec<String> = v2_controllers.unwrap_or("").split_whitespace().map(String::from).collect();
        let lacking = missing(&have, &["cpu", "memory", "pids"]);
        return vec![if lacking.is_empty() {
            Finding::ok(format!("cgroup v2, controllers {}", have.join(" ")))
        } else {
            Finding::fail(
                format!("cgroup v2 without the {} controller(s): limits of wasm containers cannot be set", lacking.join(", ")),
                "enable them (kernel config; for memory, `cgroup_enable=memory` on the kernel command line)",
            )
        }];
    }
    if v1.is_empty() {
        return vec![Finding::fail("no cgroup filesystem mounted", "mount cgroup2 on /sys/fs/cgroup (systemd does this at boot)")];
    }
    let version = if unified { "hybrid (v1 controllers, v2 unified tree)" } else { "v1" };
    let mut out = Vec::new();
    let lacking = missing(&v1, &["cpu", "memory", "pids", "devices"]);
    out.push(if lacking.is_empty() {
        Finding::ok(format!("cgroup {version}, controllers cpu memory pids devices"))
    } else {
        Finding::fail(
            format!("cgroup {version} without the {} hierarchy(ies): container limits and device rules cannot be applied", lacking.join(", ")),
            "mount them under /sys/fs/cgroup (or boot with cgroup v2: systemd.unified_cgroup_hierarchy=1)",
        )
    });
    if !v1.iter().any(|c| c == "freezer") {
        out.push(Finding::warn(format!("cgroup {version} without the freezer hierarchy: pause/resume of tasks fails"), "mount the freezer hierarchy under /sys/fs/cgroup"));
    }
    out
}

/// What the node says about the compile cache directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheProbe {
    /// The setting (`None`: `WASM_SHIM_CACHE_DIR=off`).
    pub dir: Option<PathBuf>,
    /// Whence the setting: "containerd's environment" or "this shell's environment".
    pub source: String,
    /// The directory or, when it does not exist yet, its nearest existing ancestor.
    pub existing: Option<PathBuf>,
    /// `existing` is a directory.
    pub is_dir: bool,
    /// root may write in `existing` (not read-only, not immutable).
    pub writable: bool,
    /// Bytes free for root on its filesystem.
    pub free: Option<u64>,
    /// `WASM_SHIM_CACHE_MAX_SIZE`.
    pub max_size: u64,
}

pub fn check_cache(p: &CacheProbe) -> Finding {
    let Some(dir) = &p.dir else {
        return Finding::warn(format!("compile cache off (WASM_SHIM_CACHE_DIR=off in {}): every start compiles, optimized", p.source), "unset WASM_SHIM_CACHE_DIR in containerd's environment");
    };
    let fix = format!("make {} writable for root, or set WASM_SHIM_CACHE_DIR in containerd's environment (a systemd drop-in) to a writable directory", dir.display());
    let Some(existing) = &p.existing else {
        return Finding::fail(format!("compile cache {}: no existing parent directory", dir.display()), fix);
    };
    if !p.is_dir {
        return Finding::fail(format!("compile cache {}: {} is not a directory", dir.display(), existing.display()), fix);
    }
    if !p.writable {
        return Finding::fail(format!("compile cache {} ({}) is not writable: every start compiles, and compiles cannot be shared", dir.display(), p.source), fix);
    }
    let state = if existing == dir { String::new() } else { " (created at first use)".to_string() };
    match p.free {
        Some(free) if free < p.max_size => Finding::warn(
            format!("compile cache {}{state}: {} free, less than its bound of {}", dir.display(), show_size(free), show_size(p.max_size)),
            "free space there, move it (WASM_SHIM_CACHE_DIR) or lower WASM_SHIM_CACHE_MAX_SIZE in containerd's environment",
        ),
        Some(free) => Finding::ok(format!("compile cache {}{state}: {} free, bound {} ({})", dir.display(), show_size(free), show_size(p.max_size), p.source)),
        None => Finding::ok(format!("compile cache {}{state} ({})", dir.display(), p.source)),
    }
}

/// The kernel's seccomp (`Seccomp:` in `/proc/self/status`) and the linked libseccomp.
pub fn check_seccomp(status: &str, libseccomp: Result<String, String>) -> Finding {
    let kernel = status.lines().any(|l| l.starts_with("Seccomp:"));
    match (kernel, libseccomp) {
        (true, Ok(v)) => Finding::ok(format!("seccomp: kernel supports it, libseccomp {v}")),
        (false, _) => Finding::fail("seccomp: the kernel has none (no Seccomp field in /proc/self/status): pods' seccomp profiles cannot be applied", "use a kernel built with CONFIG_SECCOMP and CONFIG_SECCOMP_FILTER"),
        (true, Err(e)) => Finding::fail(format!("seccomp: libseccomp unusable: {e}"), "install libseccomp2 (Debian: apt-get install libseccomp2)"),
    }
}

/// `/sys/module/apparmor/parameters/enabled` (`None`: no such file).
pub fn check_apparmor(enabled: Option<&str>) -> Finding {
    match enabled.map(str::trim) {
        Some("Y") => Finding::ok("AppArmor enabled: pods' profiles are applied (the CRI gives containers cri-containerd.apparmor.d)"),
        Some(v) => Finding::ok(format!("AppArmor present but off ({v}): the CRI asks for no profile")),
        None => Finding::ok("AppArmor not in this kernel: the CRI asks for no profile"),
    }
}

/// `/sys/fs/selinux/enforce` (`None`: SELinux off).
pub fn check_selinux(enforce: Option<&str>) -> Finding {
    match enforce.map(str::trim) {
        Some("1") => Finding::ok("SELinux enforcing: pods' labels are applied (enable_selinux in the CRI config decides whether they get one)"),
        Some("0") => Finding::ok("SELinux permissive"),
        Some(v) => Finding::warn(format!("SELinux state unreadable ({v:?})"), "check /sys/fs/selinux/enforce"),
        None => Finding::ok("SELinux not enabled"),
    }
}

/// containerd loads its config at start: a config newer than the running daemon is not in force.
pub fn check_loaded(config: &Path, config_mtime: Option<u64>, started: Option<u64>, pid: u32) -> Option<Finding> {
    match (config_mtime, started) {
        (Some(m), Some(s)) if m > s + 1 => Some(Finding::warn(
            format!("{} changed after containerd (pid {pid}) started: the running containerd does not use those changes", config.display()),
            "restart containerd (systemctl restart containerd)",
        )),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// gathering the inputs

/// The config a containerd command line reads (`--config X`, `-c X`, `--config=X`).
pub fn config_of(cmdline: &[String]) -> PathBuf {
    let mut it = cmdline.iter().skip(1);
    while let Some(a) = it.next() {
        if let Some(v) = a.strip_prefix("--config=").or_else(|| a.strip_prefix("-c=")) {
            return PathBuf::from(v);
        }
        if a == "--config" || a == "-c" {
            if let Some(v) = it.next() {
                return PathBuf::from(v);
            }
        }
    }
    PathBuf::from(install::DEFAULT_CONFIG)
}

/// A variable of a `/proc/<pid>/environ`.
pub fn env_of(environ: &[u8], key: &str) -> Option<String> {
    environ.split(|&b| b == 0).find_map(|kv| {
        let kv = String::from_utf8_lossy(kv);
        kv.strip_prefix(key).and_then(|r| r.strip_prefix('=')).map(String::from)
    })
}

/// A running containerd reading `config`.
struct Daemon {
    pid: u32,
    exe: PathBuf,
    environ: Vec<u8>,
    /// Start time, seconds since the epoch.
    started: Option<u64>,
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

fn find_daemon(config: &Path) -> Option<Daemon> {
    let rd = fs::read_dir("/proc").ok()?;
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(exe) = fs::read_link(e.path().join("exe")) else { continue };
        if exe.file_name().is_none_or(|n| n != "containerd") {
            continue;
        }
        let cmdline: Vec<String> = fs::read(e.path().join("cmdline"))
            .unwrap_or_default()
            .split(|&b| b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect();
        if !same_file(&config_of(&cmdline), config) {
            continue;
        }
        let environ = fs::read(e.path().join("environ")).unwrap_or_default();
        return Some(Daemon { pid, exe, environ, started: start_time(pid) });
    }
    None
}

/// A process's start time from `/proc/<pid>/stat` (ticks after boot) and `/proc/stat`'s btime.
fn start_time(pid: u32) -> Option<u64> {
    let ticks = wasm_shim_container::process::start_time(pid as i32).ok()?;
    let btime: u64 = fs::read_to_string("/proc/stat").ok()?.lines().find_map(|l| l.strip_prefix("btime "))?.trim().parse().ok()?;
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| btime + ticks / hz as u64)
}

fn mtime(p: &Path) -> Option<u64> {
    fs::metadata(p).ok()?.modified().ok()?.duration_since(std::time::UNIX_EPOCH).ok().map(|d| d.as_secs())
}

fn cache_probe(settings: &Settings, source: &str) -> CacheProbe {
    let mut p = CacheProbe {
        dir: settings.cache_dir.clone(),
        source: source.to_string(),
        existing: None,
        is_dir: false,
        writable: false,
        free: None,
        max_size: settings.cache_max_size,
    };
    let Some(dir) = &settings.cache_dir else { return p };
    let existing = dir.ancestors().find(|a| fs::symlink_metadata(a).is_ok()).map(Path::to_path_buf);
    if let Some(e) = &existing {
        p.is_dir = fs::metadata(e).is_ok_and(|m| m.is_dir());
        p.writable = nix::unistd::access(e.as_path(), nix::unistd::AccessFlags::W_OK).is_ok();
        // The field types differ between targets (u32 on some 32-bit ones).
        #[allow(clippy::unnecessary_cast)]
        let free = nix::sys::statvfs::statvfs(e.as_path()).ok().map(|s| s.blocks_free() as u64 * s.fragment_size() as u64);
        p.free = free;
    }
    p.existing = existing;
    p
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Options {
    pub config: Option<PathBuf>,
    pub containerd: Option<PathBuf>,
}

pub const USAGE: &str = "usage: containerd-shim-wasm-v1 doctor [--config PATH] [--containerd PATH]

Checks this node for the wasm shim and prints one line per finding (ok, warn, fail) with its fix:
containerd's version and the `wasm` runtime in its config (default /etc/containerd/config.toml, else
k3s's), runc and the shim where containerd finds them, cgroups, the compile cache, seccomp,
AppArmor, SELinux, the RuntimeClass handler. Exit status 1 when something fails.";

pub fn parse_args(args: &[String]) -> anyhow::Result<Options> {
    let mut o = Options::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (flag, inline) = crate::split_flag(a);
        let value = inline.or_else(|| it.next().cloned()).filter(|v| !v.is_empty());
        match (flag, value) {
            ("--config" | "-c", Some(v)) => o.config = Some(PathBuf::from(v)),
            ("--containerd", Some(v)) => o.containerd = Some(PathBuf::from(v)),
            ("--config" | "-c" | "--containerd", None) => anyhow::bail!("{flag} needs a path\n{USAGE}"),
            (other, _) => anyhow::bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    Ok(o)
}

/// `doctor`: prints the findings; 0 without a `fail`, 1 with one, 2 on bad arguments.
pub fn main(args: &[String]) -> i32 {
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return 0;
    }
    let o = match parse_args(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{SHIM_NAME} doctor: {e:#}");
            return 2;
        }
    };
    let findings = gather(&o);
    for f in &findings {
        println!("{f}");
    }
    let fails = findings.iter().filter(|f| f.level == Level::Fail).count();
    let warns = findings.iter().filter(|f| f.level == Level::Warn).count();
    println!("{} checks: {fails} failed, {warns} warnings", findings.len());
    i32::from(fails > 0)
}

fn gather(o: &Options) -> Vec<Finding> {
    let mut out = Vec::new();
    let config = o.config.clone().unwrap_or_else(|| {
        let k3s = Path::new(install::K3S_CONTAINERD_DIR).join("config.toml");
        if !Path::new(install::DEFAULT_CONFIG).exists() && k3s.exists() {
            k3s
        } else {
            PathBuf::from(install::DEFAULT_CONFIG)
        }
    });
    let daemon = find_daemon(&config);

    // containerd: the given binary, the running one, else the one on PATH.
    let binary = o.containerd.clone().or_else(|| daemon.as_ref().map(|d| d.exe.clone())).or_else(|| install::locate_containerd(None));
    let output = binary.as_deref().map(install::version_output).unwrap_or_else(|| Err("not found".into()));
    let (finding, version) = check_containerd(binary.as_deref(), output.as_deref().map_err(String::as_str));
    out.push(finding);

    // The daemon reading this config: its environment is the shim's.
    let own_env = |k: &str| std::env::var(k).ok();
    let (path_var, path_desc, settings, source) = match &daemon {
        Some(d) => {
            out.push(Finding::ok(format!("containerd pid {} runs with {}", d.pid, config.display())));
            out.extend(check_loaded(&config, mtime(&config), d.started, d.pid));
            let path = env_of(&d.environ, "PATH").unwrap_or_default();
            let settings = Settings::from_vars(|k| env_of(&d.environ, k));
            (path, format!("containerd's PATH (pid {})", d.pid), settings, "containerd's environment")
        }
        None => {
            out.push(Finding::warn(
                format!("no running containerd reads {} (the checks below use this shell's PATH and environment)", config.display()),
                "start containerd (systemctl start containerd), or pass the config it runs with: --config PATH",
            ));
            (own_env("PATH").unwrap_or_default(), "PATH".to_string(), Settings::from_env(), "this shell's environment")
        }
    };

    let text = match fs::read_to_string(&config) {
        Ok(t) => Some(Ok(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => Some(Err(e.to_string())),
    };
    let handler = runtime_class_handler(RUNTIME_CLASS).unwrap_or_else(|| HANDLER.to_string());
    out.extend(check_config(&config, text.as_ref().map(|r| r.as_deref().map_err(String::as_str)), version, &handler));

    let next_to = binary.as_deref().and_then(|b| b.canonicalize().ok()).and_then(|b| b.parent().map(Path::to_path_buf));
    let runc = search("runc", &path_var, None, install::is_executable);
    out.push(check_runc(runc.as_deref(), &path_desc));
    let shim = search(SHIM_NAME, &path_var, next_to.as_deref(), install::is_executable);
    out.push(check_shim(shim.as_deref(), &path_desc));

    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let controllers = fs::read_to_string("/sys/fs/cgroup/cgroup.controllers").ok();
    out.extend(check_cgroups(&mountinfo, controllers.as_deref()));

    out.push(check_cache(&cache_probe(&settings, source)));

    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let lib = libseccomp::ScmpVersion::current().map(|v| v.to_string()).map_err(|e| e.to_string());
    out.push(check_seccomp(&status, lib));
    out.push(check_apparmor(fs::read_to_string("/sys/module/apparmor/parameters/enabled").ok().as_deref()));
    out.push(check_selinux(fs::read_to_string("/sys/fs/selinux/enforce").ok().as_deref()));
    out
}

#[cfg(test)]
mod tests;
