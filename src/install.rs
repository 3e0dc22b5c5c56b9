//! The `install` mode: puts this binary next to containerd's and adds the runtime handler `wasm`
//! (`runtime_type = "io.containerd.wasm.v1"`, `pod_annotations = ["wasm.containerd.io/*"]`) to
//! containerd's config, in the layout of the containerd it finds:
//!
//! | config | CRI runtimes table |
//! |---|---|
//! | `version = 2` (containerd 1.6, 1.7; 2.x migrates it) | `plugins."io.containerd.grpc.v1.cri".containerd.runtimes` |
//! | `version = 3` (containerd 2.x) | `plugins."io.containerd.cri.v1.runtime".containerd.runtimes` |
//! | k3s `config.toml.tmpl` / `config-v3.toml.tmpl` | the same, after `{{ template "base" . }}` |
//!
//! The edit is idempotent and owns only the `wasm` runtime's `runtime_type` and
//! `pod_annotations`: every other byte of the file stays as it was (`toml_edit` keeps comments
//! and layout). A `wasm` runtime of another runtime type is refused unless `--force`. The file is
//! backed up (`<file>.bak-<UTC time>`) before any change and replaced atomically, as is the
//! binary (a temp file renamed over it: running shims keep their inode).
//!
//! [`edit_config`] is the whole config edit, a pure function over the file's text; [`main`]
//! gathers its inputs (containerd's version, the file) and writes the results.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use toml_edit::{Array, DocumentMut, Item, Table, TableLike, Value};

use crate::RUNTIME_ID;

/// The binary's name: containerd maps `io.containerd.wasm.v1` to it.
pub const SHIM_NAME: &str = "containerd-shim-wasm-v1";
/// The runtime handler (RuntimeClass.yaml's `handler`).
pub const HANDLER: &str = "wasm";
/// The pod annotations the CRI plugin must pass to the shim (`crates/oci/src/http.rs`).
pub const POD_ANNOTATIONS: &str = "wasm.containerd.io/*";
/// containerd's default config file.
pub const DEFAULT_CONFIG: &str = "/etc/containerd/config.toml";
/// Where k3s keeps its containerd config and the templates it renders it from.
pub const K3S_CONTAINERD_DIR: &str = "/var/lib/rancher/k3s/agent/etc/containerd";
/// The line of a k3s template that renders k3s's own config.
pub const K3S_BASE: &str = "{{ template \"base\" . }}";

/// The comment above a runtime table this mode adds.
const ADDED_COMMENT: &str =
    "# Added by `containerd-shim-wasm-v1 install`: pods with `runtimeClassName: wasm` run on the wasm shim.\n";

/// Which CRI plugin name holds the runtimes: the config's `version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `version = 2`: `io.containerd.grpc.v1.cri`.
    V2,
    /// `version = 3`: `io.containerd.cri.v1.runtime`.
    V3,
}

impl Layout {
    /// The layout a new config for containerd `major` gets.
    pub fn for_major(major: u32) -> Layout {
        if major >= 2 {
            Layout::V3
        } else {
            Layout::V2
        }
    }

    pub fn version(self) -> i64 {
        match self {
            Layout::V2 => 2,
            Layout::V3 => 3,
        }
    }

    pub fn cri_plugin(self) -> &'static str {
        match self {
            Layout::V2 => "io.containerd.grpc.v1.cri",
            Layout::V3 => "io.containerd.cri.v1.runtime",
        }
    }

    /// The key path of the runtimes table.
    pub fn runtimes_path(self) -> [&'static str; 4] {
        ["plugins", self.cri_plugin(), "containerd", "runtimes"]
    }

    /// The table header of runtime `name`, for messages.
    pub fn header(self, name: &str) -> String {
        format!("[plugins.\"{}\".containerd.runtimes.{name}]", self.cri_plugin())
    }
}

/// A config file, or a k3s template of one (Go template lines among the TOML).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Config,
    K3sTemplate,
}

impl FileKind {
    /// By the file name: `*.tmpl` is a template.
    pub fn of(path: &Path) -> FileKind {
        if path.extension().is_some_and(|e| e == "tmpl") {
            FileKind::K3sTemplate
        } else {
            FileKind::Config
        }
    }
}

/// `major.minor.patch` of `containerd --version` (`containerd github.com/containerd/containerd
/// 1.6.20~ds1 …`, `containerd containerd.io 1.7.27 <commit>`, `… v2.0.4 …`) or `k3s --version`.
pub fn parse_version(output: &str) -> Option<(u32, u32, u32)> {
    output.split_whitespace().find_map(|word| {
        let word = word.strip_prefix('v').unwrap_or(word);
        let end = word.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(word.len());
        let mut parts = word[..end].split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        let patch = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        Some((major, minor, patch))
    })
}

/// What [`edit_config`] made of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit {
    /// The file's new text (the old one when nothing changed).
    pub text: String,
    /// Whether `text` differs from the file.
    pub changed: bool,
    pub layout: Layout,
    /// Things worth telling the user (another runtime on this shim, a migrated config...).
    pub notes: Vec<String>,
}

/// Prefix that turns a Go template line of a k3s template into a TOML comment while the file is
/// edited.
const TEMPLATE_MASK: &str = "#@k3s-template@";

fn mask_template(text: &str) -> String {
    text.split_inclusive('\n')
        .map(|l| if l.trim_start().starts_with("{{") { format!("{TEMPLATE_MASK}{l}") } else { l.to_string() })
        .collect()
}

fn unmask_template(text: &str) -> String {
    text.split_inclusive('\n').map(|l| l.strip_prefix(TEMPLATE_MASK).unwrap_or(l)).collect()
}

/// Parses a config (or a k3s template, its `{{ … }}` lines set aside); a syntax error names the
/// file, line and column.
pub fn parse(file: &Path, text: &str, kind: FileKind) -> Result<DocumentMut> {
    let masked = match kind {
        FileKind::K3sTemplate => mask_template(text),
        FileKind::Config => text.to_string(),
    };
    masked.parse::<DocumentMut>().map_err(|e| {
        let (line, column) = match e.span() {
            Some(span) => {
                let before = &masked.as_bytes()[..span.start.min(masked.len())];
                let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
                let column = before.iter().rev().take_while(|&&b| b != b'\n').count() + 1;
                (line, column)
            }
            None => (0, 0),
        };
        let message = e.message().trim().replace('\n', "; ");
        if line > 0 {
            anyhow::anyhow!("{}: line {line}, column {column}: not valid TOML: {message}", file.display())
        } else {
            anyhow::anyhow!("{}: not valid TOML: {message}", file.display())
        }
    })
}

/// The layout a parsed file is in. `default` is the layout for a file that does not say:
/// an empty config (which then gets `version`) or a k3s template (whose `version` comes from
/// k3s's base template). A non-empty config without `version` is a version 1 config, which
/// this mode does not edit.
pub fn layout_of(file: &Path, doc: &DocumentMut, kind: FileKind, default: Option<Layout>) -> Result<Layout> {
    match doc.get("version") {
        Some(item) => match item.as_integer() {
            Some(2) => Ok(Layout::V2),
            Some(3) => Ok(Layout::V3),
            _ => bail!(
                "{}: `version = {}` is not a config version this installer edits (2: containerd 1.6/1.7, 3: containerd 2.x); \
                 add the runtime by hand (README, deploy/)",
                file.display(),
                item.to_string().trim()
            ),
        },
        None if kind == FileKind::K3sTemplate || doc.as_table().is_empty() => default.ok_or_else(|| {
            anyhow::anyhow!(
                "{}: cannot tell which config version to write: containerd's version is unknown (pass --containerd PATH)",
                file.display()
            )
        }),
        None => bail!(
            "{}: has no `version`, so containerd reads it as a version 1 config, which this installer does not edit; \
             migrate it (`containerd config migrate`, containerd 1.7+) or add `version = 2` and check the file",
            file.display()
        ),
    }
}

/// The runtimes table of `doc` in `layout`, if the file has one.
pub fn runtimes(doc: &DocumentMut, layout: Layout) -> Option<&dyn TableLike> {
    let mut t: &dyn TableLike = doc.as_table();
    for key in layout.runtimes_path() {
        t = t.get(key)?.as_table_like()?;
    }
    Some(t)
}

/// The names of the runtimes of `runtimes` whose `runtime_type` is this shim's.
pub fn our_runtimes(runtimes: &dyn TableLike) -> Vec<String> {
    runtimes
        .iter()
        .filter(|(_, item)| {
            item.as_table_like()
                .and_then(|t| t.get("runtime_type"))
                .and_then(|v| v.as_str())
                .is_some_and(|v| v == RUNTIME_ID)
        })
        .map(|(k, _)| k.to_string())
        .collect()
}

/// Adds (or completes) the `wasm` runtime of a config. `original` is the file's text (`None`:
/// no file yet; a k3s template is then started from [`K3S_BASE`]); `default` is the layout for
/// a file that does not name its version (see [`layout_of`]); `containerd_major`, when known,
/// refuses a version 3 config for containerd 1.x. `force` replaces a `wasm` runtime of another
/// runtime type.
pub fn edit_config(
    file: &Path,
    original: Option<&str>,
    kind: FileKind,
    default: Option<Layout>,
    containerd_major: Option<u32>,
    force: bool,
) -> Result<Edit> {
    let original_text = original.unwrap_or("");
    let start = match (original, kind) {
        (None, FileKind::K3sTemplate) => format!("{K3S_BASE}\n"),
        _ => original_text.to_string(),
    };
    let mut doc = parse(file, &start, kind)?;
    let layout = layout_of(file, &doc, kind, default)?;
    // A file of comments only (or a template of its base line only) holds them after its last
    // item: keep them first, above what is added.
    if doc.as_table().is_empty() {
        let comments = doc.trailing().as_str().unwrap_or("").to_string();
        if !comments.is_empty() {
            doc.set_trailing("");
            // A config gets `version` below them: a blank line between.
            let sep = if kind == FileKind::Config && !comments.ends_with("\n\n") { "\n" } else { "" };
            doc.decor_mut().set_prefix(format!("{comments}{sep}"));
        }
    }
    let mut notes = Vec::new();
    match (containerd_major, layout) {
        (Some(1), Layout::V3) => bail!(
            "{}: is a version 3 config, which containerd 1.x does not read; the runtime belongs in a version 2 config \
             ({})",
            file.display(),
            Layout::V2.header(HANDLER)
        ),
        (Some(m), Layout::V2) if m >= 2 && kind == FileKind::Config => {
            notes.push(format!("containerd {m}.x migrates this version 2 config when it loads it; the runtime goes in the version 2 place"))
        }
        _ => {}
    }
    if kind == FileKind::Config && doc.get("version").is_none() {
        doc.insert("version", Item::Value(Value::from(layout.version())));
    }

    let mut table: &mut Table = doc.as_table_mut();
    let mut path = String::new();
    for key in layout.runtimes_path() {
        path = if path.is_empty() { key.to_string() } else { format!("{path}.{}", quote_key(key)) };
        if !table.contains_key(key) {
            let mut t = Table::new();
            t.set_implicit(true);
            table.insert(key, Item::Table(t));
        }
        table = match table.get_mut(key) {
            Some(Item::Table(t)) => t,
            Some(other) => bail!(
                "{}: `{path}` is {}, not a table; add {} by hand",
                file.display(),
                other.type_name(),
                layout.header(HANDLER)
            ),
            None => unreachable!("inserted above"),
        };
    }
    let runtimes_table = table;
    let others: Vec<String> = our_runtimes(&*runtimes_table).into_iter().filter(|n| n != HANDLER).collect();
    if !others.is_empty() {
        notes.push(format!(
            "runtime(s) {} also use {RUNTIME_ID}; they stay as they are",
            others.iter().map(|n| format!("{n:?}")).collect::<Vec<_>>().join(", ")
        ));
    }
    match runtimes_table.get_mut(HANDLER) {
        None => {
            let mut t = Table::new();
            t.insert("runtime_type", Item::Value(Value::from(RUNTIME_ID)));
            t.insert("pod_annotations", Item::Value(Value::Array(Array::from_iter([POD_ANNOTATIONS]))));
            for key in ["runtime_type", "pod_annotations"] {
                if let Some(mut k) = t.key_mut(key) {
                    k.leaf_decor_mut().set_prefix("  ");
                }
            }
            t.decor_mut().set_prefix(format!("\n{ADDED_COMMENT}"));
            runtimes_table.insert(HANDLER, Item::Table(t));
        }
        Some(item) => {
            let what = item.type_name();
            let Some(entry) = item.as_table_like_mut() else {
                bail!("{}: `{HANDLER}` in {path} is {what}, not a runtime table; fix it by hand", file.display());
            };
            complete_entry(file, entry, layout, force)?;
        }
    }

    let mut text = doc.to_string();
    if kind == FileKind::K3sTemplate {
        text = unmask_template(&text);
    }
    let changed = original.is_none() || text != original_text;
    Ok(Edit { text, changed, layout, notes })
}

/// Sets the keys this mode owns in an existing `wasm` runtime, leaving its other keys alone.
fn complete_entry(file: &Path, entry: &mut dyn TableLike, layout: Layout, force: bool) -> Result<()> {
    let header = layout.header(HANDLER);
    let indent = entry
        .iter()
        .next()
        .and_then(|(k, _)| entry.key(k))
        .and_then(|k| k.leaf_decor().prefix())
        .and_then(|p| p.as_str())
        .filter(|p| p.chars().all(|c| c == ' ' || c == '\t'))
        .unwrap_or("")
        .to_string();
    let insert = |entry: &mut dyn TableLike, key: &str, value: Value| {
        entry.insert(key, Item::Value(value));
        if let Some(mut k) = entry.key_mut(key) {
            k.leaf_decor_mut().set_prefix(indent.clone());
        }
    };
    match entry.get("runtime_type").map(|i| i.as_str()) {
        None => insert(entry, "runtime_type", Value::from(RUNTIME_ID)),
        Some(Some(t)) if t == RUNTIME_ID => {}
        found => {
            let found = match found {
                Some(Some(t)) => format!("runtime_type = {t:?}"),
                _ => "a runtime_type that is not a string".to_string(),
            };
            if !force {
                bail!(
                    "{}: {header} already exists with {found}; refusing to change a runtime this installer did not add \
                     (--force makes it {RUNTIME_ID}; or give the wasm RuntimeClass another handler by hand)",
                    file.display()
                );
            }
            replace_value(entry, "runtime_type", Value::from(RUNTIME_ID));
        }
    }
    match entry.get_mut("pod_annotations") {
        None => insert(entry, "pod_annotations", Value::Array(Array::from_iter([POD_ANNOTATIONS]))),
        Some(item) => match item.as_array_mut() {
            Some(list) => {
                if !list.iter().any(|v| v.as_str() == Some(POD_ANNOTATIONS)) {
                    list.push(POD_ANNOTATIONS);
                }
            }
            None if force => replace_value(entry, "pod_annotations", Value::Array(Array::from_iter([POD_ANNOTATIONS]))),
            None => bail!(
                "{}: pod_annotations of {header} is not a list of strings; refusing to change it (--force replaces it)",
                file.display()
            ),
        },
    }
    Ok(())
}

/// Replaces a value keeping the spaces and comments around it.
fn replace_value(entry: &mut dyn TableLike, key: &str, mut value: Value) {
    if let Some(Item::Value(old)) = entry.get(key) {
        *value.decor_mut() = old.decor().clone();
    }
    if let Some(slot) = entry.get_mut(key) {
        *slot = Item::Value(value);
    }
}

/// A key as a TOML header writes it: bare when it can be.
fn quote_key(key: &str) -> String {
    if !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        key.to_string()
    } else {
        format!("{key:?}")
    }
}

// ---------------------------------------------------------------------------------------------
// the command

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Options {
    pub config: Option<PathBuf>,
    pub bin_dir: Option<PathBuf>,
    pub containerd: Option<PathBuf>,
    pub k3s: bool,
    pub restart: bool,
    pub dry_run: bool,
    pub force: bool,
}

pub const USAGE: &str = "usage: containerd-shim-wasm-v1 install [--config PATH] [--bin-dir DIR] [--containerd PATH] [--k3s] [--restart] [--dry-run] [--force]

Copies this binary next to containerd's (or into --bin-dir) and adds the runtime handler `wasm`
to containerd's config (default /etc/containerd/config.toml; with --k3s, k3s's config.toml.tmpl),
with a backup, in the layout of the containerd it finds (`containerd --version`, or --containerd).
Running it again changes nothing. --restart restarts containerd (systemctl) when the config changed;
--dry-run shows what it would do; --force takes over a `wasm` runtime of another runtime type.";

/// Parses `install`'s arguments (those after `install`).
pub fn parse_args(args: &[String]) -> Result<Options> {
    let mut o = Options::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (flag, inline) = crate::split_flag(a);
        let mut path = |name: &str| -> Result<PathBuf> {
            match inline.clone().or_else(|| it.next().cloned()) {
                Some(v) if !v.is_empty() => Ok(PathBuf::from(v)),
                _ => bail!("{name} needs a path\n{USAGE}"),
            }
        };
        match flag {
            "--config" | "-c" => o.config = Some(path("--config")?),
            "--bin-dir" => o.bin_dir = Some(path("--bin-dir")?),
            "--containerd" => o.containerd = Some(path("--containerd")?),
            "--k3s" => o.k3s = true,
            "--restart" => o.restart = true,
            "--dry-run" | "-n" => o.dry_run = true,
            "--force" => o.force = true,
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    Ok(o)
}

/// `name` in the directories of `path_var` (a `PATH` value), then in `extra`: the first that is
/// an executable file.
pub fn find_in_path(name: &str, path_var: &str, extra: &[&str]) -> Option<PathBuf> {
    path_var
        .split(':')
        .filter(|d| !d.is_empty())
        .chain(extra.iter().copied())
        .map(|d| Path::new(d).join(name))
        .find(|p| is_executable(p))
}

pub fn is_executable(p: &Path) -> bool {
    fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Directories a service manager's PATH usually has, searched after this process's PATH.
pub const SYSTEM_DIRS: &[&str] = &["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"];

/// The containerd binary: `given`, else the first `containerd` on PATH or in [`SYSTEM_DIRS`].
pub fn locate_containerd(given: Option<&Path>) -> Option<PathBuf> {
    match given {
        Some(p) => Some(p.to_path_buf()),
        None => find_in_path("containerd", &std::env::var("PATH").unwrap_or_default(), SYSTEM_DIRS),
    }
}

/// `<binary> --version`'s first line, or why it could not be run.
pub fn version_output(binary: &Path) -> std::result::Result<String, String> {
    match Command::new(binary).arg("--version").output() {
        Ok(out) if out.status.success() => Ok(String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or("").to_string()),
        Ok(out) => Err(format!(
            "`{} --version` failed ({}): {}",
            binary.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Err(format!("cannot run `{} --version`: {e}", binary.display())),
    }
}

/// The k3s template to edit: an existing `config-v3.toml.tmpl` or `config.toml.tmpl`, else a
/// new one matching the config k3s rendered last (`version = 3`: containerd 2.x), else
/// `config.toml.tmpl`.
pub fn k3s_template(dir: &Path) -> (PathBuf, Layout) {
    let v3 = dir.join("config-v3.toml.tmpl");
    let v2 = dir.join("config.toml.tmpl");
    if v3.exists() {
        return (v3, Layout::V3);
    }
    if v2.exists() {
        return (v2, Layout::V2);
    }
    let rendered = fs::read_to_string(dir.join("config.toml")).ok();
    let rendered_v3 = rendered
        .and_then(|t| t.parse::<DocumentMut>().ok())
        .and_then(|d| d.get("version").and_then(|v| v.as_integer()))
        == Some(3);
    if rendered_v3 {
        (v3, Layout::V3)
    } else {
        (v2, Layout::V2)
    }
}

/// The layout a k3s template's name implies.
fn template_layout(path: &Path) -> Option<Layout> {
    match path.file_name()?.to_str()? {
        "config-v3.toml.tmpl" => Some(Layout::V3),
        "config.toml.tmpl" => Some(Layout::V2),
        _ => None,
    }
}

/// `2025-03-01T12:00:05Z` as `20250301T120005Z`, from seconds since the epoch (UTC).
pub fn utc_stamp(secs: u64) -> String {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    // Civil date from days since 1970-01-01 (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Writes `bytes` to `path` through a temp file in the same directory renamed over it, with
/// `mode`: a reader (containerd, a starting shim) sees the old file or the new one, never half.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = fs::OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&tmp)?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        anyhow::anyhow!("cannot write {}: {e}", path.display())
    })
}

/// Copies `path` to `<path>.bak-<UTC time>` (a new name; `-1`, `-2`… when taken) and returns it.
pub fn backup(path: &Path) -> Result<PathBuf> {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let base = format!("{}.bak-{}", path.display(), utc_stamp(secs));
    let bytes = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mode = fs::metadata(path).map(|m| m.permissions().mode() & 0o7777).unwrap_or(0o644);
    for n in 0..100 {
        let candidate = PathBuf::from(if n == 0 { base.clone() } else { format!("{base}-{n}") });
        match fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&candidate) {
            Ok(mut f) => {
                f.write_all(&bytes).and_then(|()| f.sync_all()).with_context(|| format!("cannot write {}", candidate.display()))?;
                return Ok(candidate);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => bail!("cannot create the backup {}: {e}", candidate.display()),
        }
    }
    bail!("cannot find a free backup name next to {}", path.display())
}

/// Whether two files have the same bytes.
fn same_content(a: &Path, b: &Path) -> bool {
    match (fs::metadata(a), fs::metadata(b)) {
        (Ok(ma), Ok(mb)) if ma.len() == mb.len() => matches!((fs::read(a), fs::read(b)), (Ok(x), Ok(y)) if x == y),
        _ => false,
    }
}

/// `install`: exit status 0 when done (or nothing to do), 1 on error.
pub fn main(args: &[String]) -> i32 {
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return 0;
    }
    match parse_args(args).and_then(|o| run(&o)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{SHIM_NAME} install: error: {e:#}");
            1
        }
    }
}

fn run(o: &Options) -> Result<()> {
    let would = if o.dry_run { "would " } else { "" };
    // containerd and its version (k3s: k3s's own containerd, which has no binary of its own on
    // PATH: its version is read from k3s's config instead).
    let containerd = if o.k3s && o.containerd.is_none() { None } else { locate_containerd(o.containerd.as_deref()) };
    let version = match &containerd {
        Some(c) => {
            let out = version_output(c).map_err(anyhow::Error::msg)?;
            let v = parse_version(&out).with_context(|| format!("cannot read a version in `{} --version`: {out:?}", c.display()))?;
            println!("containerd {}.{}.{} ({})", v.0, v.1, v.2, c.display());
            Some(v)
        }
        None if o.k3s => None,
        None => bail!("containerd not found on PATH or in {}; pass --containerd PATH", SYSTEM_DIRS.join(", ")),
    };
    let major = version.map(|v| v.0);

    // The file to edit, its kind, and the layout it gets when it does not say.
    let (config, default_layout) = match (&o.config, o.k3s) {
        (Some(c), _) => {
            let d = template_layout(c).or(major.map(Layout::for_major));
            (c.clone(), d)
        }
        (None, true) => {
            let (t, l) = k3s_template(Path::new(K3S_CONTAINERD_DIR));
            (t, Some(l))
        }
        (None, false) => (PathBuf::from(DEFAULT_CONFIG), major.map(Layout::for_major)),
    };
    let kind = FileKind::of(&config);
    let original = match fs::read_to_string(&config) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => bail!("cannot read {}: {e}", config.display()),
    };
    let edit = edit_config(&config, original.as_deref(), kind, default_layout, major, o.force)?;

    // The binary.
    let bin_dir = match (&o.bin_dir, &containerd) {
        (Some(d), _) => d.clone(),
        (None, Some(c)) => c.canonicalize().unwrap_or(c.clone()).parent().map(Path::to_path_buf).unwrap_or_else(|| "/usr/local/bin".into()),
        (None, None) => find_in_path("k3s", &std::env::var("PATH").unwrap_or_default(), SYSTEM_DIRS)
            .and_then(|k| k.parent().map(Path::to_path_buf))
            .unwrap_or_else(|| "/usr/local/bin".into()),
    };
    let target = bin_dir.join(SHIM_NAME);
    let me = fs::read_link("/proc/self/exe").context("cannot find this binary (/proc/self/exe)")?;
    if same_content(&me, &target) {
        println!("binary: {} is this binary; unchanged", target.display());
    } else {
        if !o.dry_run {
            let bytes = fs::read(&me).with_context(|| format!("cannot read {}", me.display()))?;
            fs::create_dir_all(&bin_dir).with_context(|| format!("cannot create {}", bin_dir.display()))?;
            write_atomic(&target, &bytes, 0o755)?;
        }
        println!("binary: {would}install {} (from {})", target.display(), me.display());
    }

    // The config.
    let header = edit.layout.header(HANDLER);
    for note in &edit.notes {
        println!("note: {note}");
    }
    if !edit.changed {
        println!("config: {} already has {header}; unchanged", config.display());
        return Ok(());
    }
    if o.dry_run {
        println!("config: would write {} (config version {}), with {header}:", config.display(), edit.layout.version());
        print!("{}", indent_block(&edit.text));
        return Ok(());
    }
    let mode = fs::metadata(&config).map(|m| m.permissions().mode() & 0o7777).unwrap_or(0o644);
    if original.is_some() {
        let saved = backup(&config)?;
        println!("config: backup {}", saved.display());
    } else if let Some(dir) = config.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    write_atomic(&config, edit.text.as_bytes(), mode)?;
    println!(
        "config: {} {} (config version {})",
        if original.is_some() { "updated" } else { "created" },
        config.display(),
        edit.layout.version()
    );
    println!("        {header} runtime_type = {RUNTIME_ID:?}, pod_annotations include {POD_ANNOTATIONS:?}");
    restart(o)
}

fn indent_block(text: &str) -> String {
    text.lines().map(|l| format!("    {l}\n")).collect()
}

/// The systemd unit to restart: `k3s` or `k3s-agent` for k3s (whichever is active), else
/// `containerd`.
fn unit(o: &Options) -> &'static str {
    if !o.k3s {
        return "containerd";
    }
    let active = |u: &str| Command::new("systemctl").args(["is-active", "--quiet", u]).status().is_ok_and(|s| s.success());
    if active("k3s-agent") {
        "k3s-agent"
    } else {
        "k3s"
    }
}

fn restart(o: &Options) -> Result<()> {
    let who = if o.k3s { "k3s" } else { "containerd" };
    let systemctl = find_in_path("systemctl", &std::env::var("PATH").unwrap_or_default(), SYSTEM_DIRS);
    let booted = Path::new("/run/systemd/system").is_dir();
    if !o.restart {
        match (&systemctl, booted) {
            (Some(_), true) => println!("restart {who} to load it: systemctl restart {} (or run install with --restart)", unit(o)),
            _ => println!("restart {who} to load it (the way it was started here: no systemd found)"),
        }
        return Ok(());
    }
    match (systemctl, booted) {
        (Some(s), true) => {
            let u = unit(o);
            println!("restarting {who}: systemctl restart {u}");
            let status = Command::new(s).args(["restart", u]).status().context("cannot run systemctl")?;
            if !status.success() {
                bail!("`systemctl restart {u}` failed ({status}); see `journalctl -u {u}`");
            }
            println!("restarted {u}; running tasks keep running (shims outlive containerd)");
            Ok(())
        }
        _ => {
            println!("no systemd here: restart {who} the way it was started to load the config");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests;
