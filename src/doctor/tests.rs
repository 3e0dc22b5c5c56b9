//! Each check against fixtures: configs of `tests/fixtures/containerd/`, mountinfo of v1, v2
//! and hybrid nodes in `tests/fixtures/node/`, and hand-written inputs.

use super::*;

fn fixture(dir: &str, name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(dir).join(name);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn levels(f: &[Finding]) -> Vec<Level> {
    f.iter().map(|f| f.level).collect()
}

fn installed(name: &str, layout: Layout, major: u32) -> String {
    let t = fixture("containerd", name);
    install::edit_config(Path::new(name), Some(&t), FileKind::of(Path::new(name)), Some(layout), Some(major), false).unwrap().text
}

#[test]
fn format_of_a_line() {
    assert_eq!(Finding::ok("runc /usr/sbin/runc").to_string(), "ok    runc /usr/sbin/runc");
    assert_eq!(Finding::fail("no runc", "install it").to_string(), "fail  no runc  — install it");
    assert_eq!(Finding::warn("x", "y").to_string(), "warn  x  — y");
}

#[test]
fn containerd_versions() {
    let bin = Path::new("/usr/bin/containerd");
    let (f, v) = check_containerd(Some(bin), Ok("containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3"));
    assert_eq!((f.level, v), (Level::Warn, Some((1, 6, 20))));
    assert!(f.what.contains("wasm OCI artifact") && f.fix.contains("--no-unpack"), "{f}");
    assert_eq!(check_containerd(Some(bin), Ok("containerd containerd.io 1.7.27 05044ec0")).0.level, Level::Ok);
    assert_eq!(check_containerd(Some(bin), Ok("containerd containerd.io 1.7.6 abc")).0.level, Level::Warn);
    assert_eq!(check_containerd(Some(bin), Ok("containerd github.com/containerd/containerd/v2 v2.0.4 1a43")).0.level, Level::Ok);
    assert_eq!(check_containerd(Some(bin), Ok("containerd github.com/containerd/containerd v1.5.9 1")).0.level, Level::Fail);
    let (f, v) = check_containerd(None, Err("not found"));
    assert_eq!((f.level, v), (Level::Fail, None));
    assert!(f.fix.contains("apt-get install containerd"), "{f}");
    assert_eq!(check_containerd(Some(bin), Err("permission denied")).0.level, Level::Fail);
}

#[test]
fn config_with_the_runtime() {
    for (name, layout, version) in [("1.6-v2.toml", Layout::V2, (1, 6, 20)), ("1.7-v2.toml", Layout::V2, (1, 7, 27)), ("2.x-v3.toml", Layout::V3, (2, 0, 4))] {
        let text = installed(name, layout, version.0);
        let f = check_config(Path::new(name), Some(Ok(&text)), Some(version), "wasm");
        assert_eq!(levels(&f), [Level::Ok, Level::Ok], "{name}: {f:?}");
        assert!(f[0].what.contains(&layout.header("wasm")), "{}", f[0]);
        assert!(f[1].what.contains("RuntimeClass handler `wasm`"), "{}", f[1]);
    }
    // A k3s template, by its name's layout.
    let text = installed("k3s-config.toml.tmpl", Layout::V2, 1);
    let f = check_config(Path::new("/x/config.toml.tmpl"), Some(Ok(&text)), None, "wasm");
    assert_eq!(levels(&f), [Level::Ok, Level::Ok], "{f:?}");
}

#[test]
fn config_without_the_runtime() {
    let text = fixture("containerd", "1.6-v2.toml");
    let f = check_config(Path::new("/etc/containerd/config.toml"), Some(Ok(&text)), Some((1, 6, 20)), "wasm");
    assert_eq!(levels(&f), [Level::Fail]);
    assert!(f[0].what.contains("no runtime `wasm`") && f[0].what.contains("no runtime for \"wasm\" is configured"), "{}", f[0]);
    assert_eq!(f[0].fix, "run `containerd-shim-wasm-v1 install --config /etc/containerd/config.toml`");
    // No file, an empty file.
    let f = check_config(Path::new("/c.toml"), None, Some((1, 6, 20)), "wasm");
    assert_eq!(levels(&f), [Level::Fail]);
    assert!(f[0].fix.contains("install"));
    let f = check_config(Path::new("/c.toml"), Some(Ok("# nothing\n")), None, "wasm");
    assert_eq!(levels(&f), [Level::Fail]);
    assert!(f[0].what.contains("empty"), "{}", f[0]);
    // Unparsable: file and line.
    let f = check_config(Path::new("bad.toml"), Some(Ok(&fixture("containerd", "bad.toml"))), None, "wasm");
    assert_eq!(levels(&f), [Level::Fail]);
    assert!(f[0].what.starts_with("bad.toml: line 4"), "{}", f[0]);
}

#[test]
fn config_entry_in_the_wrong_place_or_wrong_type() {
    // containerd 2's plugin name in a version 2 config: containerd never sees it.
    let text = "version = 2\n[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.wasm]\nruntime_type = \"io.containerd.wasm.v1\"\n";
    let f = check_config(Path::new("c.toml"), Some(Ok(text)), Some((2, 0, 4)), "wasm");
    assert_eq!(f[0].level, Level::Fail);
    assert!(f[0].what.contains("under \"io.containerd.cri.v1.runtime\", which a version 2 config does not use"), "{}", f[0]);
    // A version 3 config on containerd 1.x.
    let text = installed("2.x-v3.toml", Layout::V3, 2);
    let f = check_config(Path::new("c.toml"), Some(Ok(&text)), Some((1, 7, 27)), "wasm");
    assert_eq!(levels(&f), [Level::Fail]);
    // Another shim's runtime under `wasm`.
    let f = check_config(Path::new("f.toml"), Some(Ok(&fixture("containerd", "foreign-wasm.toml"))), Some((1, 6, 20)), "wasm");
    assert_eq!(f[0].level, Level::Fail);
    assert!(f[0].what.contains("\"io.containerd.wasmtime.v1\"") && f[0].fix.contains("--force"), "{}", f[0]);
    // Without pod_annotations: a warning naming the fix.
    let f = check_config(Path::new("p.toml"), Some(Ok(&fixture("containerd", "partial-wasm.toml"))), Some((1, 6, 20)), "wasm");
    assert_eq!(levels(&f), [Level::Ok, Level::Warn, Level::Ok], "{f:?}");
    assert!(f[1].what.contains("pod_annotations"), "{}", f[1]);
}

#[test]
fn runtime_class_handler_matches_the_runtime_name() {
    assert_eq!(runtime_class_handler(RUNTIME_CLASS).as_deref(), Some("wasm"));
    assert_eq!(runtime_class_handler("kind: RuntimeClass\nhandler: \"spin\" # x\n").as_deref(), Some("spin"));
    assert_eq!(runtime_class_handler("kind: RuntimeClass\n"), None);
    // The shim's runtime is named `wasmtime`: the RuntimeClass's `wasm` does not match it.
    let text = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.wasmtime]\nruntime_type = \"io.containerd.wasm.v1\"\n";
    let f = check_config(Path::new("c.toml"), Some(Ok(text)), Some((1, 6, 20)), "wasm");
    assert_eq!(levels(&f), [Level::Fail, Level::Fail]);
    assert!(f[1].what.contains("shim's runtime is named wasmtime") && f[1].fix.contains("handler: wasmtime"), "{}", f[1]);
    // ... and a RuntimeClass with handler `wasmtime` does.
    let f = check_config(Path::new("c.toml"), Some(Ok(text)), Some((1, 6, 20)), "wasmtime");
    assert_eq!(levels(&f), [Level::Ok, Level::Warn, Level::Ok], "{f:?}");
}

#[test]
fn runc_and_shim_where_containerd_looks() {
    let exists = |p: &Path| ["/usr/sbin/runc", "/usr/bin/containerd-shim-wasm-v1", "/opt/bin/containerd-shim-wasm-v1"].contains(&p.to_str().unwrap());
    assert_eq!(search("runc", "/usr/local/bin:/usr/sbin:/usr/bin", None, exists).as_deref(), Some(Path::new("/usr/sbin/runc")));
    assert_eq!(search("runc", "/usr/local/bin:/usr/bin", None, exists), None);
    // Next to containerd counts for the shim when PATH does not have it.
    assert_eq!(search(SHIM_NAME, "/usr/local/bin", Some(Path::new("/usr/bin")), exists).as_deref(), Some(Path::new("/usr/bin/containerd-shim-wasm-v1")));
    assert_eq!(search(SHIM_NAME, "/opt/bin::/usr/bin", None, exists).as_deref(), Some(Path::new("/opt/bin/containerd-shim-wasm-v1")));
    assert_eq!(search(SHIM_NAME, "", Some(Path::new("/usr/local/bin")), exists), None);
    assert_eq!(check_runc(Some(Path::new("/usr/sbin/runc")), "PATH").level, Level::Ok);
    let f = check_runc(None, "containerd's PATH (pid 7)");
    assert_eq!(f.level, Level::Fail);
    assert!(f.what.contains("containerd's PATH (pid 7)") && f.fix.contains("apt-get install runc"), "{f}");
    let f = check_shim(None, "PATH");
    assert_eq!(f.level, Level::Fail);
    assert!(f.fix.contains("containerd-shim-wasm-v1 install"), "{f}");
}

#[test]
fn cgroups() {
    let f = check_cgroups(&fixture("node", "mountinfo-v1"), None);
    assert_eq!(levels(&f), [Level::Ok], "{f:?}");
    assert!(f[0].what.starts_with("cgroup v1"), "{}", f[0]);
    let f = check_cgroups(&fixture("node", "mountinfo-v2"), Some("cpuset cpu io memory hugetlb pids rdma misc\n"));
    assert_eq!(levels(&f), [Level::Ok]);
    assert!(f[0].what.starts_with("cgroup v2"), "{}", f[0]);
    let f = check_cgroups(&fixture("node", "mountinfo-v2"), Some("cpuset io pids\n"));
    assert_eq!(levels(&f), [Level::Fail]);
    assert!(f[0].what.contains("cpu, memory"), "{}", f[0]);
    // Hybrid without devices and freezer.
    let f = check_cgroups(&fixture("node", "mountinfo-hybrid"), None);
    assert_eq!(levels(&f), [Level::Fail, Level::Warn], "{f:?}");
    assert!(f[0].what.starts_with("cgroup hybrid") && f[0].what.contains("devices"), "{}", f[0]);
    assert_eq!(levels(&check_cgroups("", None)), [Level::Fail]);
}

#[test]
fn cache() {
    let base = CacheProbe {
        dir: Some("/var/lib/containerd-shim-wasm/cache".into()),
        source: "containerd's environment".into(),
        existing: Some("/var/lib/containerd-shim-wasm/cache".into()),
        is_dir: true,
        writable: true,
        free: Some(10 << 30),
        max_size: 1 << 30,
    };
    let f = check_cache(&base);
    assert_eq!(f.level, Level::Ok);
    assert!(f.what.contains("10 GiB free"), "{f}");
    let f = check_cache(&CacheProbe { existing: Some("/var/lib".into()), ..base.clone() });
    assert_eq!(f.level, Level::Ok);
    assert!(f.what.contains("created at first use"), "{f}");
    let f = check_cache(&CacheProbe { writable: false, ..base.clone() });
    assert_eq!(f.level, Level::Fail);
    assert!(f.what.contains("not writable") && f.fix.contains("WASM_SHIM_CACHE_DIR"), "{f}");
    let f = check_cache(&CacheProbe { free: Some(100 << 20), ..base.clone() });
    assert_eq!(f.level, Level::Warn);
    assert!(f.what.contains("100 MiB free"), "{f}");
    assert_eq!(check_cache(&CacheProbe { is_dir: false, ..base.clone() }).level, Level::Fail);
    assert_eq!(check_cache(&CacheProbe { dir: None, ..base }).level, Level::Warn);
}

#[test]
fn cache_probe_on_real_directories() {
    let dir = tempfile::tempdir().unwrap();
    let s = Settings { cache_dir: Some(dir.path().join("a/b")), ..Settings::default() };
    let p = cache_probe(&s, "test");
    assert_eq!(p.existing.as_deref(), Some(dir.path()));
    assert!(p.is_dir && p.writable && p.free.is_some_and(|f| f > 0), "{p:?}");
    let file = dir.path().join("file");
    fs::write(&file, "").unwrap();
    let p = cache_probe(&Settings { cache_dir: Some(file.clone()), ..Settings::default() }, "test");
    assert_eq!(check_cache(&p).level, Level::Fail);
}

#[test]
fn security_modules() {
    assert_eq!(check_seccomp("Name:\tx\nSeccomp:\t0\nSeccomp_filters:\t0\n", Ok("2.5.4".into())).level, Level::Ok);
    assert_eq!(check_seccomp("Name:\tx\n", Ok("2.5.4".into())).level, Level::Fail);
    assert_eq!(check_seccomp("Seccomp:\t0\n", Err("dlopen".into())).level, Level::Fail);
    assert!(check_apparmor(Some("Y\n")).what.contains("enabled"));
    assert!(check_apparmor(None).what.contains("not in this kernel"));
    assert!(check_selinux(Some("1\n")).what.contains("enforcing"));
    assert!(check_selinux(None).what.contains("not enabled"));
    assert_eq!(check_selinux(Some("x")).level, Level::Warn);
}

#[test]
fn daemon_inputs() {
    let s = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    assert_eq!(config_of(&s(&["containerd"])), PathBuf::from("/etc/containerd/config.toml"));
    assert_eq!(config_of(&s(&["containerd", "--config", "/tmp/c.toml"])), PathBuf::from("/tmp/c.toml"));
    assert_eq!(config_of(&s(&["containerd", "-c", "/k/config.toml", "-a", "/s"])), PathBuf::from("/k/config.toml"));
    assert_eq!(config_of(&s(&["containerd", "--config=/x.toml"])), PathBuf::from("/x.toml"));
    let environ = b"HOME=/root\0PATH=/opt/bin:/usr/bin\0WASM_SHIM_CACHE_DIR=off\0";
    assert_eq!(env_of(environ, "PATH").as_deref(), Some("/opt/bin:/usr/bin"));
    assert_eq!(env_of(environ, "PAT"), None);
    assert_eq!(Settings::from_vars(|k| env_of(environ, k)).cache_dir, None);
    // A config written after containerd started is not in force.
    assert!(check_loaded(Path::new("/c"), Some(2000), Some(1000), 7).is_some_and(|f| f.level == Level::Warn));
    assert_eq!(check_loaded(Path::new("/c"), Some(900), Some(1000), 7), None);
    assert_eq!(check_loaded(Path::new("/c"), None, Some(1000), 7), None);
}

#[test]
fn args() {
    let a = |v: &[&str]| parse_args(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    assert_eq!(a(&["--config", "/c", "--containerd=/d"]).unwrap(), Options { config: Some("/c".into()), containerd: Some("/d".into()) });
    assert!(a(&["--config"]).is_err());
    assert!(a(&["--k3s"]).is_err());
}
