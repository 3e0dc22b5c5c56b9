//! The container's filesystem view, built inside its new mount namespace: propagation, the
//! rootfs bind, the spec's mounts (resolved inside the rootfs, never through a symlink out of
//! it), the default device nodes, `pivot_root`, masked and read-only paths, a read-only root.

use std::fs;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use oci_spec::runtime::{Mount, Spec};

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("mount {what} on {target}: {err}")]
    Mount { what: String, target: PathBuf, err: nix::Error },
    #[error("mount destination {dest}: {err}")]
    Destination { dest: PathBuf, err: std::io::Error },
    #[error("pivot_root to {root}: {err}")]
    Pivot { root: PathBuf, err: nix::Error },
    #[error("rootfs {root}: {err}")]
    Root { root: PathBuf, err: std::io::Error },
}

/// Mount options split into flags and filesystem data.
#[derive(Debug, PartialEq)]
pub struct MountOptions {
    pub flags: MsFlags,
    pub propagation: MsFlags,
    pub data: Vec<String>,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions { flags: MsFlags::empty(), propagation: MsFlags::empty(), data: Vec::new() }
    }
}

/// Splits OCI mount options (`ro`, `nosuid`, `rbind`, `rprivate`, `mode=755`, …).
pub fn parse_options(options: &[String]) -> MountOptions {
    let mut out = MountOptions::default();
    for opt in options {
        let (set, clear, prop) = match opt.as_str() {
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty(), MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY, MsFlags::empty()),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty(), MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID, MsFlags::empty()),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty(), MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV, MsFlags::empty()),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty(), MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC, MsFlags::empty()),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty(), MsFlags::empty()),
            "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty(), MsFlags::empty()),
            "atime" => (MsFlags::empty(), MsFlags::MS_NOATIME, MsFlags::empty()),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty(), MsFlags::empty()),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty(), MsFlags::empty()),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty(), MsFlags::empty()),
            "mand" => (MsFlags::MS_MANDLOCK, MsFlags::empty(), MsFlags::empty()),
            "bind" => (MsFlags::MS_BIND, MsFlags::empty(), MsFlags::empty()),
            "rbind" => (MsFlags::MS_BIND | MsFlags::MS_REC, MsFlags::empty(), MsFlags::empty()),
            "private" => (MsFlags::empty(), MsFlags::empty(), MsFlags::MS_PRIVATE),
            "rprivate" => (MsFlags::empty(), MsFlags::empty(), MsFlags::MS_PRIVATE | MsFlags::MS_REC),
            "slave" => (MsFlags::empty(), MsFlags::empty(), MsFlags::MS_SLAVE),
            "rslave" => (MsFlags::empty(), MsFlags::empty(), MsFlags::MS_SLAVE | MsFlags::MS_REC),
            "shared" => (MsFlags::empty(), MsFlags::empty(), MsFlags::MS_SHARED),
            "rshared" => (MsFlags::empty(), MsFlags::empty(), MsFlags::MS_SHARED | MsFlags::MS_REC),
            "unbindable" => (MsFlags::empty(), MsFlags::empty(), MsFlags::MS_UNBINDABLE),
            "runbindable" => (MsFlags::empty(), MsFlags::empty(), MsFlags::MS_UNBINDABLE | MsFlags::MS_REC),
            _ => {
                out.data.push(opt.clone());
                continue;
            }
        };
        out.flags |= set;
        out.flags &= !clear;
        out.propagation |= prop;
    }
    out
}

fn mnt(src: Option<&Path>, target: &Path, fstype: Option<&str>, flags: MsFlags, data: Option<&str>, what: &str) -> Result<(), RootfsError> {
    mount(src, target, fstype, flags, data).map_err(|err| RootfsError::Mount {
        what: what.to_string(),
        target: target.to_path_buf(),
        err,
    })
}

/// Resolves `dest` inside `root` (symlinks are followed as if `root` were `/`), creating the
/// mount point: a directory, or an empty file when the source is a file.
fn mount_point(root: &Path, dest: &Path, source_is_file: bool) -> Result<PathBuf, RootfsError> {
    let derr = |err| RootfsError::Destination { dest: dest.to_path_buf(), err };
    let rel = dest.strip_prefix("/").unwrap_or(dest);
    let target = safe_path::scoped_join(root, rel).map_err(derr)?;
    if source_is_file {
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(derr)?;
        }
        if !target.exists() {
            fs::File::create(&target).map_err(derr)?;
        }
    } else {
        fs::create_dir_all(&target).map_err(derr)?;
    }
    Ok(target)
}

fn mount_one(root: &Path, m: &Mount) -> Result<(), RootfsError> {
    let typ = m.typ().as_deref().unwrap_or("");
    let opts = parse_options(m.options().as_deref().unwrap_or(&[]));
    let is_bind = typ == "bind" || opts.flags.contains(MsFlags::MS_BIND);
    if !is_bind && (typ == "cgroup" || typ == "cgroup2") {
        // A wasm guest has no cgroupfs API; the host's cgroup tree is not exposed to it.
        log::debug!("skipping {typ} mount on {}", m.destination().display());
        return Ok(());
    }
    let source = m.source().clone();
    let source_is_file = is_bind
        && source.as_ref().map(|s| s.is_file() || (s.exists() && !s.is_dir())).unwrap_or(false);
    let target = mount_point(root, m.destination(), source_is_file)?;
    let data = opts.data.join(",");
    let data = (!data.is_empty()).then_some(data.as_str());
    let what = format!("{typ} {}", source.as_deref().unwrap_or(Path::new("none")).display());
    if is_bind {
        let src = source.as_deref().unwrap_or(Path::new(""));
        mnt(Some(src), &target, None, MsFlags::MS_BIND | (opts.flags & MsFlags::MS_REC), None, &what)?;
        let extra = opts.flags - (MsFlags::MS_BIND | MsFlags::MS_REC);
        if !extra.is_empty() {
            mnt(None, &target, None, MsFlags::MS_BIND | MsFlags::MS_REMOUNT | extra, None, &what)?;
        }
    } else {
        let src = source.as_deref().unwrap_or(Path::new(typ));
        let res = mnt(Some(src), &target, Some(typ), opts.flags, data, &what);
        if let Err(e) = res {
            // sysfs cannot be mounted in a network namespace we did not create; mqueue
            // needs a new IPC namespace. Fall back to a read-only bind of the host's.
            if typ == "sysfs" || typ == "mqueue" {
                log::debug!("{e}; binding the host's {typ} instead");
                let host = if typ == "sysfs" { "/sys" } else { "/dev/mqueue" };
                mnt(Some(Path::new(host)), &target, None, MsFlags::MS_BIND | MsFlags::MS_REC, None, &what)?;
                mnt(None, &target, None, MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV, None, &what)?;
            } else {
                return Err(e);
            }
        }
    }
    if !opts.propagation.is_empty() {
        mnt(None, &target, None, opts.propagation, None, &what)?;
    }
    Ok(())
}

const DEFAULT_DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

fn default_devices(root: &Path) -> Result<(), RootfsError> {
    let dev = root.join("dev");
    if !dev.is_dir() {
        return Ok(());
    }
    for name in DEFAULT_DEVICES {
        let host = Path::new("/dev").join(name);
        if !host.exists() {
            continue;
        }
        let target = dev.join(name);
        if fs::symlink_metadata(&target).is_err() {
            fs::File::create(&target).map_err(|err| RootfsError::Destination { dest: target.clone(), err })?;
        }
        mnt(Some(&host), &target, None, MsFlags::MS_BIND, None, &format!("device {}", host.display()))?;
    }
    for (link, to) in [("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")] {
        let _ = std::os::unix::fs::symlink(to, dev.join(link));
    }
    Ok(())
}

fn pivot(root: &Path) -> Result<(), RootfsError> {
    let perr = |err| RootfsError::Pivot { root: root.to_path_buf(), err };
    nix::unistd::chdir(root).map_err(perr)?;
    nix::unistd::pivot_root(".", ".").map_err(perr)?;
    // The old root is stacked under the new one at "."; detach it.
    mnt(None, Path::new("."), None, MsFlags::MS_SLAVE | MsFlags::MS_REC, None, "old root")?;
    umount2(".", MntFlags::MNT_DETACH).map_err(perr)?;
    nix::unistd::chdir("/").map_err(perr)?;
    Ok(())
}

fn mask_paths(spec: &Spec) {
    let linux = match spec.linux() {
        Some(l) => l,
        None => return,
    };
    for p in linux.masked_paths().as_deref().unwrap_or(&[]) {
        let path = Path::new(p);
        let res = match fs::metadata(path) {
            Ok(md) if md.is_dir() => mount(Some("tmpfs"), path, Some("tmpfs"), MsFlags::MS_RDONLY, None::<&str>),
            Ok(_) => mount(Some("/dev/null"), path, None::<&str>, MsFlags::MS_BIND, None::<&str>),
            Err(_) => continue,
        };
        if let Err(e) = res {
            log::debug!("mask {p}: {e}");
        }
    }
    for p in linux.readonly_paths().as_deref().unwrap_or(&[]) {
        let path = Path::new(p);
        if !path.exists() {
            continue;
        }
        let res = mount(Some(path), path, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>).and_then(|_| {
            mount(None::<&str>, path, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_REC, None::<&str>)
        });
        if let Err(e) = res {
            log::debug!("readonly {p}: {e}");
        }
    }
}

/// Builds the container's root inside the current (new) mount namespace and pivots into it.
/// `rootfs` is the host path of the container's root (the bundle's `rootfs` or spec.root.path).
pub fn setup(spec: &Spec, rootfs: &Path) -> Result<(), RootfsError> {
    let root = fs::canonicalize(rootfs).map_err(|err| RootfsError::Root { root: rootfs.to_path_buf(), err })?;
    let propagation = spec
        .linux()
        .as_ref()
        .and_then(|l| l.rootfs_propagation().clone())
        .map(|p| parse_options(&[p]).propagation)
        .filter(|p| !p.is_empty())
        .unwrap_or(MsFlags::MS_SLAVE | MsFlags::MS_REC);
    mnt(None, Path::new("/"), None, propagation | MsFlags::MS_REC, None, "propagation of /")?;
    mnt(Some(&root), &root, None, MsFlags::MS_BIND | MsFlags::MS_REC, None, "rootfs")?;
    for m in spec.mounts().as_deref().unwrap_or(&[]) {
        mount_one(&root, m)?;
    }
    default_devices(&root)?;
    pivot(&root)?;
    mask_paths(spec);
    if spec.root().as_ref().map(|r| r.readonly().unwrap_or(false)).unwrap_or(false) {
        mnt(None, Path::new("/"), None, MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY, None, "read-only root")?;
    }
    Ok(())
}

/// Sets the hostname (only meaningful in a new UTS namespace).
pub fn set_hostname(name: &str) -> Result<(), nix::Error> {
    nix::unistd::sethostname(name)
}

/// Mounts one of the rootfs mounts containerd sends with Create (`overlay`, `bind`, …) on
/// `target`, in the shim's own mount namespace. No fork: the shim is multi-threaded.
pub fn mount_containerd_rootfs(fstype: &str, source: &str, options: &[String], target: &Path) -> Result<(), RootfsError> {
    let opts = parse_options(options);
    let data = opts.data.join(",");
    let what = format!("{fstype} {source}");
    let page = 4096;
    if data.len() >= page {
        return Err(RootfsError::Mount {
            what,
            target: target.to_path_buf(),
            err: nix::Error::E2BIG,
        });
    }
    let fstype = (!fstype.is_empty() && fstype != "bind").then_some(fstype);
    let source = (!source.is_empty()).then_some(Path::new(source));
    let data = (!data.is_empty()).then_some(data.as_str());
    mnt(source, target, fstype, opts.flags - MsFlags::MS_REMOUNT, data, &what)?;
    if opts.flags.contains(MsFlags::MS_BIND) && opts.flags.contains(MsFlags::MS_RDONLY) {
        mnt(None, target, None, opts.flags | MsFlags::MS_REMOUNT, None, &what)?;
    }
    if !opts.propagation.is_empty() {
        mnt(None, target, None, opts.propagation, None, &what)?;
    }
    Ok(())
}

/// Unmounts everything at or below `target` (deepest first, lazily), as listed in
/// /proc/self/mountinfo. Returns how many mounts were detached.
pub fn unmount_all(target: &Path) -> std::io::Result<usize> {
    let info = fs::read_to_string("/proc/self/mountinfo")?;
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(target))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    let mut n = 0;
    for p in points {
        match umount2(&p, MntFlags::MNT_DETACH) {
            Ok(()) => n += 1,
            Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
            Err(e) => return Err(std::io::Error::other(format!("unmount {}: {e}", p.display()))),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn options_split_into_flags_propagation_and_data() {
        let o = parse_options(&s(&["nosuid", "noexec", "rbind", "rprivate", "mode=755", "size=65536k", "ro"]));
        assert!(o.flags.contains(MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_RDONLY));
        assert_eq!(o.propagation, MsFlags::MS_PRIVATE | MsFlags::MS_REC);
        assert_eq!(o.data, s(&["mode=755", "size=65536k"]));
        let o = parse_options(&s(&["ro", "rw"]));
        assert!(!o.flags.contains(MsFlags::MS_RDONLY));
    }

    #[test]
    fn mount_points_stay_inside_the_root_through_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("real")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("escape")).unwrap();
        let t = mount_point(root, Path::new("/escape/passwd"), true).unwrap();
        assert!(t.starts_with(root), "{}", t.display());
        assert!(t.is_file());
        let t = mount_point(root, Path::new("/../../x"), false).unwrap();
        assert!(t.starts_with(root));
        assert!(t.is_dir());
    }
}
