//! The config edit against fixtures in `tests/fixtures/containerd/`: every layout, a file of
//! comments only, no file, idempotency, a foreign `wasm` runtime, bad files.

use super::*;

fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/containerd").join(name);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The block `install` adds for a new runtime in `layout`.
fn added(layout: Layout) -> String {
    format!(
        "\n{ADDED_COMMENT}{}\n  runtime_type = \"io.containerd.wasm.v1\"\n  pod_annotations = [\"wasm.containerd.io/*\"]\n",
        layout.header("wasm")
    )
}

fn edit(name: &str, default: Option<Layout>, major: Option<u32>) -> Result<Edit> {
    let text = fixture(name);
    edit_config(Path::new(name), Some(&text), FileKind::of(Path::new(name)), default, major, false)
}

/// The edit of `name` adds exactly the runtime block once and leaves every other byte as it
/// was; editing the result again changes nothing.
fn adds_block_only(name: &str, default: Option<Layout>, major: Option<u32>, layout: Layout) {
    let original = fixture(name);
    let e = edit(name, default, major).unwrap();
    assert!(e.changed, "{name}: nothing changed");
    assert_eq!(e.layout, layout, "{name}");
    // The new header spells the existing keys as the file does (`'…'` or `"…"`).
    let mut block = added(layout);
    if original.contains(&format!("'{}'", layout.cri_plugin())) {
        block = block.replace(&format!("\"{}\"", layout.cri_plugin()), &format!("'{}'", layout.cri_plugin()));
    }
    assert_eq!(e.text.matches(&block).count(), 1, "{name}: block not added once:\n{}", e.text);
    assert_eq!(e.text.replacen(&block, "", 1), original, "{name}: bytes outside the wasm table changed");
    // The result parses, and has the entry where containerd looks in that layout.
    let doc = parse(Path::new(name), &e.text, FileKind::of(Path::new(name))).unwrap();
    let runtimes = runtimes(&doc, layout).expect("runtimes table");
    assert_eq!(our_runtimes(runtimes), vec!["wasm".to_string()]);
    let wasm = runtimes.get("wasm").unwrap().as_table_like().unwrap();
    let annotations: Vec<&str> = wasm.get("pod_annotations").unwrap().as_array().unwrap().iter().filter_map(|v| v.as_str()).collect();
    assert_eq!(annotations, ["wasm.containerd.io/*"]);
    // Idempotent.
    let again = edit_config(Path::new(name), Some(&e.text), FileKind::of(Path::new(name)), default, major, false).unwrap();
    assert!(!again.changed, "{name}: a second run changed:\n{}", again.text);
    assert_eq!(again.text, e.text);
}

#[test]
fn containerd_1_6_config_with_comments_and_other_runtimes() {
    adds_block_only("1.6-v2.toml", Some(Layout::V2), Some(1), Layout::V2);
    // The block goes among the CRI runtimes, after runsc, before the cni table.
    let e = edit("1.6-v2.toml", Some(Layout::V2), Some(1)).unwrap();
    let (runsc, wasm, cni) = (e.text.find("runtimes.runsc]").unwrap(), e.text.find("runtimes.wasm]").unwrap(), e.text.find(".cni]").unwrap());
    assert!(runsc < wasm && wasm < cni, "{}", e.text);
}

#[test]
fn containerd_1_7_config() {
    adds_block_only("1.7-v2.toml", Some(Layout::V2), Some(1), Layout::V2);
    // containerd 2.x reads a version 2 config too (it migrates it): the v2 place, with a note.
    let e = edit("1.7-v2.toml", Some(Layout::V3), Some(2)).unwrap();
    assert_eq!(e.layout, Layout::V2);
    assert!(e.notes.iter().any(|n| n.contains("migrates")), "{:?}", e.notes);
}

#[test]
fn containerd_2_config_version_3() {
    adds_block_only("2.x-v3.toml", Some(Layout::V3), Some(2), Layout::V3);
    // The other runtimes of the shim are named, not touched.
    let e = edit("2.x-v3.toml", Some(Layout::V3), Some(2)).unwrap();
    assert!(e.text.contains("runtime_type = 'io.containerd.kata.v2'   # VMs for tenants"));
    // containerd 1.x cannot read a version 3 config: refused, naming the right place.
    let err = edit("2.x-v3.toml", Some(Layout::V2), Some(1)).unwrap_err().to_string();
    assert!(err.contains("version 3 config, which containerd 1.x does not read"), "{err}");
}

#[test]
fn k3s_template_edited() {
    adds_block_only("k3s-config.toml.tmpl", Some(Layout::V2), None, Layout::V2);
    let e = edit("k3s-config.toml.tmpl", Some(Layout::V2), None).unwrap();
    assert!(e.text.starts_with("{{ template \"base\" . }}\n"), "{}", e.text);
    // No `version` in a template: k3s's base template has it.
    assert!(!e.text.contains("version ="), "{}", e.text);
}

#[test]
fn k3s_template_created_from_base() {
    for layout in [Layout::V2, Layout::V3] {
        let e = edit_config(Path::new("config.toml.tmpl"), None, FileKind::K3sTemplate, Some(layout), None, false).unwrap();
        assert!(e.changed);
        assert_eq!(e.text, format!("{K3S_BASE}\n{}", added(layout)));
    }
}

#[test]
fn missing_or_empty_config() {
    // No file: a minimal config of the version containerd reads.
    for (major, layout) in [(1, Layout::V2), (2, Layout::V3)] {
        let e = edit_config(Path::new("config.toml"), None, FileKind::Config, Some(Layout::for_major(major)), Some(major), false).unwrap();
        assert!(e.changed);
        assert_eq!(e.text, format!("version = {}\n{}", layout.version(), added(layout)));
        let again = edit_config(Path::new("config.toml"), Some(&e.text), FileKind::Config, Some(layout), Some(major), false).unwrap();
        assert!(!again.changed);
    }
    // An empty file is the same; containerd's version unknown: asks for it.
    let e = edit_config(Path::new("c.toml"), Some(""), FileKind::Config, Some(Layout::V2), Some(1), false).unwrap();
    assert_eq!(e.text, format!("version = 2\n{}", added(Layout::V2)));
    let err = edit_config(Path::new("c.toml"), Some(""), FileKind::Config, None, None, false).unwrap_err().to_string();
    assert!(err.contains("--containerd"), "{err}");
    // Comments only: they stay first.
    let original = fixture("comments-only.toml");
    let e = edit("comments-only.toml", Some(Layout::V2), Some(1)).unwrap();
    assert_eq!(e.text, format!("{original}\nversion = 2\n{}", added(Layout::V2)));
    assert!(!edit_config(Path::new("c.toml"), Some(&e.text), FileKind::Config, Some(Layout::V2), Some(1), false).unwrap().changed);
}

#[test]
fn existing_entry_completed_not_rewritten() {
    let original = fixture("partial-wasm.toml");
    let e = edit("partial-wasm.toml", Some(Layout::V2), Some(1)).unwrap();
    assert!(e.changed);
    // Only the missing key is added, indented like its neighbours; its options stay.
    let line = "  pod_annotations = [\"wasm.containerd.io/*\"]\n";
    assert_eq!(e.text.replacen(line, "", 1), original, "{}", e.text);
    assert!(!edit_config(Path::new("p.toml"), Some(&e.text), FileKind::Config, Some(Layout::V2), Some(1), false).unwrap().changed);
    // A list of annotations gets ours appended, the others kept.
    let text = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.wasm]\nruntime_type = \"io.containerd.wasm.v1\"\npod_annotations = [\"example.com/*\"]\n";
    let e = edit_config(Path::new("a.toml"), Some(text), FileKind::Config, None, Some(1), false).unwrap();
    assert!(e.text.contains("pod_annotations = [\"example.com/*\", \"wasm.containerd.io/*\"]"), "{}", e.text);
}

#[test]
fn foreign_wasm_runtime_refused_unless_forced() {
    let original = fixture("foreign-wasm.toml");
    let err = edit("foreign-wasm.toml", Some(Layout::V2), Some(1)).unwrap_err().to_string();
    assert!(err.contains("already exists with runtime_type = \"io.containerd.wasmtime.v1\""), "{err}");
    assert!(err.contains("refusing") && err.contains("--force"), "{err}");
    let forced = edit_config(Path::new("f.toml"), Some(&original), FileKind::Config, Some(Layout::V2), Some(1), true).unwrap();
    assert!(forced.text.contains("  runtime_type = \"io.containerd.wasm.v1\"\n"), "{}", forced.text);
    assert!(forced.text.contains("# runwasi's wasmtime shim owns"), "comment lost: {}", forced.text);
    assert!(!forced.text.contains("wasmtime.v1"));
}

#[test]
fn bad_files_refused_with_file_and_line() {
    let err = edit("bad.toml", Some(Layout::V2), Some(1)).unwrap_err().to_string();
    assert!(err.starts_with("bad.toml: line 4, column "), "{err}");
    assert!(err.contains("not valid TOML"), "{err}");
    let err = edit("version1.toml", Some(Layout::V2), Some(1)).unwrap_err().to_string();
    assert!(err.contains("version 1 config"), "{err}");
    let err = edit_config(Path::new("v.toml"), Some("version = 4\n"), FileKind::Config, None, None, false).unwrap_err().to_string();
    assert!(err.contains("`version = 4`"), "{err}");
    // A key in the path that is not a table.
    let err = edit_config(Path::new("p.toml"), Some("version = 2\nplugins = 3\n"), FileKind::Config, None, Some(1), false).unwrap_err().to_string();
    assert!(err.contains("`plugins` is integer, not a table"), "{err}");
    let err = edit_config(Path::new("p.toml"), Some("version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes]\nwasm = \"x\"\n"), FileKind::Config, None, Some(1), false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a runtime table"), "{err}");
}

#[test]
fn versions() {
    assert_eq!(parse_version("containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3"), Some((1, 6, 20)));
    assert_eq!(parse_version("containerd containerd.io 1.7.27 05044ec0a9a75232cad458027ca83437aae3f4da"), Some((1, 7, 27)));
    assert_eq!(parse_version("containerd github.com/containerd/containerd/v2 v2.0.4 1a43cb6a1035441f9aca8f5666a9b3ef9e70ab20"), Some((2, 0, 4)));
    assert_eq!(parse_version("k3s version v1.31.4+k3s1 (a562d090)"), Some((1, 31, 4)));
    assert_eq!(parse_version("containerd"), None);
    assert_eq!(Layout::for_major(1), Layout::V2);
    assert_eq!(Layout::for_major(2), Layout::V3);
}

#[test]
fn args() {
    let a = |v: &[&str]| parse_args(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    let o = a(&["--config", "/c.toml", "--bin-dir=/b", "--containerd", "/usr/bin/containerd", "--k3s", "--restart", "--dry-run", "--force"]).unwrap();
    assert_eq!(o.config.as_deref(), Some(Path::new("/c.toml")));
    assert_eq!(o.bin_dir.as_deref(), Some(Path::new("/b")));
    assert_eq!(o.containerd.as_deref(), Some(Path::new("/usr/bin/containerd")));
    assert!(o.k3s && o.restart && o.dry_run && o.force);
    assert!(a(&["--config"]).unwrap_err().to_string().contains("--config needs a path"));
    assert!(a(&["--bogus"]).unwrap_err().to_string().contains("unknown argument \"--bogus\""));
}

#[test]
fn stamps_backups_and_atomic_writes() {
    assert_eq!(utc_stamp(0), "19700101T000000Z");
    assert_eq!(utc_stamp(1_709_294_405), "20240301T120005Z");
    assert_eq!(utc_stamp(951_782_400), "20000229T000000Z");
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("config.toml");
    fs::write(&f, "version = 2\n").unwrap();
    fs::set_permissions(&f, fs::Permissions::from_mode(0o600)).unwrap();
    let b1 = backup(&f).unwrap();
    let b2 = backup(&f).unwrap();
    assert_ne!(b1, b2, "a second backup in the same second must not overwrite the first");
    for b in [&b1, &b2] {
        assert_eq!(fs::read_to_string(b).unwrap(), "version = 2\n");
        assert!(b.file_name().unwrap().to_string_lossy().starts_with("config.toml.bak-"));
        assert_eq!(fs::metadata(b).unwrap().permissions().mode() & 0o777, 0o600);
    }
    write_atomic(&f, b"version = 3\n", 0o600).unwrap();
    assert_eq!(fs::read_to_string(&f).unwrap(), "version = 3\n");
    assert_eq!(fs::metadata(&f).unwrap().permissions().mode() & 0o777, 0o600);
    // No temp file left behind.
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 3);
}

#[test]
fn k3s_template_choice() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(k3s_template(dir.path()), (dir.path().join("config.toml.tmpl"), Layout::V2));
    fs::write(dir.path().join("config.toml"), "version = 3\n").unwrap();
    assert_eq!(k3s_template(dir.path()), (dir.path().join("config-v3.toml.tmpl"), Layout::V3));
    fs::write(dir.path().join("config.toml.tmpl"), K3S_BASE).unwrap();
    assert_eq!(k3s_template(dir.path()), (dir.path().join("config.toml.tmpl"), Layout::V2));
    assert_eq!(template_layout(Path::new("/x/config-v3.toml.tmpl")), Some(Layout::V3));
    assert_eq!(FileKind::of(Path::new("/x/config.toml.tmpl")), FileKind::K3sTemplate);
    assert_eq!(FileKind::of(Path::new("/etc/containerd/config.toml")), FileKind::Config);
}
