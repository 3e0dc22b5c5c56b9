//! The wasm container's filesystem view, built inside its new mount namespace: propagation, the
//! rootfs bind, the spec's mounts (resolved inside the rootfs, never through a symlink out of
//! it), then the guest's boundary, the granted device nodes, `pivot_root`, masked and read-only
//! paths, a read-only root.
//!
//! The boundary (see docs/security.md): a wasm guest reaches files through WASI only, and WASI
//! sees whatever is mounted under its root. So no kernel pseudo-filesystem is mounted there
//! (procfs, sysfs, cgroupfs, devpts, mqueue, debugfs, …: not from the spec, and not as a bind of
//! the host's, even nested in a recursive bind), and every mount is `nodev` and `nosuid`; the
//! only device nodes that open are the spec's defaults and `linux.devices`, each a bind of the
//! host's node placed without following a symlink of the image.
use std::fs;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::fcntl::{OFlag, OpenHow, ResolveFlag};

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

/// Opens `rel` under the directory `root` as if `root` were `/` (openat2 `RESOLVE_IN_ROOT`):
/// `..` and symlinks, absolute or relative, resolve inside it, however the tree changes
/// meanwhile. An `O_PATH` descriptor.
fn open_beneath(root: &fs::File, rel: &Path, extra: OFlag) -> nix::Result<OwnedFd> {
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC | extra)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    nix::fcntl::openat2(root, if rel.as_os_str().is_empty() { Path::new(".") } else { rel }, how)
}

/// How many symlinks [`make_beneath`] expands in one path (as the kernel's `ELOOP` limit).
const MAX_SYMLINKS: usize = 40;

/// `rel` inside `root`, made where missing (directories, and the last component a file when
/// `file`), one component at a time, each made in its parent's descriptor resolved beneath the
/// root. Symlinks of the image are expanded as if `root` were `/` (so a dangling one gets its
/// target made inside the root, as a scoped join would); the path walked then holds no symlink,
/// and the final open (`RESOLVE_IN_ROOT`) stays inside the root even if one is swapped in.
fn make_beneath(root: &fs::File, rel: &Path, file: bool) -> nix::Result<OwnedFd> {
    use nix::sys::stat::{fstatat, mkdirat, Mode, SFlag};
    let parts = |p: &Path| -> Vec<std::ffi::OsString> {
        p.components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n.to_os_string()),
                Component::ParentDir => Some("..".into()),
                _ => None,
            })
            .collect()
    };
    let mut todo: std::collections::VecDeque<std::ffi::OsString> = parts(rel).into();
    let mut done = PathBuf::new();
    let mut links = 0;
    while let Some(name) = todo.pop_front() {
        if name == ".." {
            done.pop();
            continue;
        }
        let parent = open_beneath(root, &done, OFlag::O_DIRECTORY)?;
        let made = if file && todo.is_empty() {
            let flags = OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK;
            nix::fcntl::openat(&parent, name.as_os_str(), flags, Mode::from_bits_truncate(0o644)).map(drop)
        } else {
            mkdirat(&parent, name.as_os_str(), Mode::from_bits_truncate(0o755))
        };
        match made {
            Ok(()) | Err(nix::Error::EEXIST) => {}
            Err(e) => return Err(e),
        }
        let st = fstatat(&parent, name.as_os_str(), nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)?;
        if SFlag::from_bits_truncate(st.st_mode & libc::S_IFMT) == SFlag::S_IFLNK {
            links += 1;
            if links > MAX_SYMLINKS {
                return Err(nix::Error::ELOOP);
            }
            let target = nix::fcntl::readlinkat(&parent, name.as_os_str())?;
            let target = Path::new(&target);
            if target.is_absolute() {
                done.clear();
            }
            for p in parts(target).into_iter().rev() {
                todo.push_front(p);
            }
            continue;
        }
        done.push(name);
    }
    open_beneath(root, &done, if file { OFlag::empty() } else { OFlag::O_DIRECTORY })
}

/// A mount point: the open descriptor of the destination, or (kernels before 5.6, no openat2)
/// its path joined inside the root.
enum Target {
    Fd(OwnedFd),
    Path(PathBuf),
}

impl Target {
    /// What mount(2) takes: `/proc/self/fd/N` reaches the very file the descriptor holds.
    fn path(&self) -> PathBuf {
        match self {
            Target::Fd(fd) => PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd())),
            Target::Path(p) => p.clone(),
        }
    }
}

/// Resolves `dest` inside `root` (symlinks are followed as if `root` were `/`), creating the
/// mount point: a directory, or an empty file when the source is a file. Every step goes
/// through descriptors resolved inside the root, so a symlink swapped in by another container
/// sharing a volume cannot move a mount (or a created directory) out of it.
fn mount_point(root: &fs::File, root_path: &Path, dest: &Path, source_is_file: bool) -> Result<Target, RootfsError> {
    let derr = |err: std::io::Error| RootfsError::Destination { dest: dest.to_path_buf(), err };
    let rel = dest.strip_prefix("/").unwrap_or(dest);
    let resolved = make_beneath(root, rel, source_is_file);
    match resolved {
        Ok(fd) => Ok(Target::Fd(fd)),
        Err(nix::Error::ENOSYS) => mount_point_by_path(root_path, rel, source_is_file).map(Target::Path).map_err(derr),
        Err(e) => Err(derr(e.into())),
    }
}

/// [`mount_point`] without openat2: a scoped join (symlinks resolved inside the root once).
fn mount_point_by_path(root: &Path, rel: &Path, source_is_file: bool) -> std::io::Result<PathBuf> {
    let target = safe_path::scoped_join(root, rel)?;
    if source_is_file {
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent)?;
        }
        if !target.exists() {
            fs::File::create(&target)?;
        }
    } else {
        fs::create_dir_all(&target)?;
    }
    Ok(target)
}

/// Opens the mount just made at `dest` again (the descriptor used to make it holds what is
/// under it) for a remount or a propagation change, and checks it is that mount: the bind's
/// source (`want`: device and inode), or a new filesystem (`below`'s device differs).
fn reopen_mount(root: &fs::File, dest: &Path, target: &Target, want: Option<(u64, u64)>) -> Result<Target, RootfsError> {
    let Target::Fd(below) = target else { return Ok(Target::Path(target.path())) };
    let derr = |err: std::io::Error| RootfsError::Destination { dest: dest.to_path_buf(), err };
    let rel = dest.strip_prefix("/").unwrap_or(dest);
    let fd = open_beneath(root, rel, OFlag::empty()).map_err(|e| derr(e.into()))?;
    let st = nix::sys::stat::fstat(&fd).map_err(|e| derr(e.into()))?;
    let same = match want {
        Some((dev, ino)) => st.st_dev == dev && st.st_ino == ino,
        None => st.st_dev != nix::sys::stat::fstat(below).map_err(|e| derr(e.into()))?.st_dev,
    };
    if !same {
        return Err(derr(std::io::Error::other("changed while being mounted (a symlink swapped in?)")));
    }
    Ok(Target::Fd(fd))
}

fn mount_one(root: &fs::File, root_path: &Path, m: &Mount) -> Result<(), RootfsError> {
    let typ = m.typ().as_deref().unwrap_or("");
    let opts = parse_options(m.options().as_deref().unwrap_or(&[]));
    let is_bind = typ == "bind" || opts.flags.contains(MsFlags::MS_BIND);
    if !is_bind && is_kernel_fs(typ) {
        // proc, sysfs, cgroup, devpts, mqueue: kernel interfaces a wasm guest must not reach.
        log::debug!("not mounting {typ} on {}: no kernel filesystem in a wasm guest's view", m.destination().display());
        return Ok(());
    }
    let dest = m.destination();
    let source = m.source().clone();
    let what = format!("{typ} {}", source.as_deref().unwrap_or(Path::new("none")).display());
    // A bind's source (a host path from containerd or the kubelet) is opened once: what is
    // checked is what is bound.
    let src = if is_bind {
        let path = source.as_deref().unwrap_or(Path::new(""));
        let fd = nix::fcntl::open(path, OFlag::O_PATH | OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty())
            .map_err(|err| RootfsError::Mount { what: what.clone(), target: dest.to_path_buf(), err })?;
        let st = nix::sys::stat::fstat(&fd).map_err(|err| RootfsError::Mount { what: what.clone(), target: dest.to_path_buf(), err })?;
        Some((fd, st))
    } else {
        None
    };
    let source_is_file = src.as_ref().is_some_and(|(_, st)| st.st_mode & libc::S_IFMT != libc::S_IFDIR);
    let target = mount_point(root, root_path, dest, source_is_file)?;
    let data = opts.data.join(",");
    let data = (!data.is_empty()).then_some(data.as_str());
    let want = src.as_ref().map(|(_, st)| (st.st_dev, st.st_ino));
    if let Some((fd, _)) = &src {
        let via = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
        mnt(Some(&via), &target.path(), None, MsFlags::MS_BIND | (opts.flags & MsFlags::MS_REC), None, &what)?;
        let extra = opts.flags - (MsFlags::MS_BIND | MsFlags::MS_REC);
        if !extra.is_empty() {
            let top = reopen_mount(root, dest, &target, want)?;
            mnt(None, &top.path(), None, MsFlags::MS_BIND | MsFlags::MS_REMOUNT | extra, None, &what)?;
        }
    } else {
        let src = source.as_deref().unwrap_or(Path::new(typ));
        mnt(Some(src), &target.path(), Some(typ), opts.flags, data, &what)?;
    }
    if !opts.propagation.is_empty() {
        let top = reopen_mount(root, dest, &target, want)?;
        mnt(None, &top.path(), None, opts.propagation, None, &what)?;
    }
    Ok(())
}

/// The device nodes every container gets (the OCI runtime spec's list), from the host's `/dev`.
const DEFAULT_DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// Filesystem types that are kernel interfaces, not storage: never in a wasm guest's view.
const KERNEL_FS: &[&str] = &[
    "proc", "sysfs", "cgroup", "cgroup2", "devpts", "mqueue", "devtmpfs", "securityfs", "debugfs", "tracefs",
    "bpf", "configfs", "fusectl", "binfmt_misc", "pstore", "efivarfs", "nsfs", "autofs", "rpc_pipefs",
    "selinuxfs", "hugetlbfs", "usbfs", "xenfs", "nfsd", "resctrl", "cpuset", "smackfs", "functionfs", "gadgetfs",
];

/// True for a filesystem type a wasm guest must not see.
pub fn is_kernel_fs(fstype: &str) -> bool {
    KERNEL_FS.contains(&fstype)
}

/// One line of `/proc/self/mountinfo`: where, the per-mount options, the filesystem type.
#[derive(Debug, Clone, PartialEq)]
pub struct MountInfo {
    pub point: PathBuf,
    pub options: Vec<String>,
    pub fstype: String,
}

/// `\040` (space), `\011`, `\012`, `\134`: mountinfo's octal escapes.
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses mountinfo text (proc(5)): mount point is field 5, options field 6, the type follows
/// the ` - ` separator.
pub fn parse_mountinfo(text: &str) -> Vec<MountInfo> {
    text.lines()
        .filter_map(|l| {
            let (head, tail) = l.split_once(" - ")?;
            let f: Vec<&str> = head.split(' ').collect();
            let point = PathBuf::from(unescape(f.get(4)?));
            let options = f.get(5)?.split(',').map(String::from).collect();
            let fstype = tail.split(' ').next()?.to_string();
            Some(MountInfo { point, options, fstype })
        })
        .collect()
}

/// The mount point of the mount that holds `path`: the longest mount point above it.
pub fn mount_holding(mounts: &[MountInfo], path: &Path) -> Option<PathBuf> {
    mounts.iter().map(|m| &m.point).filter(|p| path.starts_with(p)).max_by_key(|p| p.components().count()).cloned()
}

/// The flags a bind remount must repeat to keep a mount's per-mount options.
fn kept_flags(options: &[String]) -> MsFlags {
    let mut f = MsFlags::empty();
    for o in options {
        f |= match o.as_str() {
            "ro" => MsFlags::MS_RDONLY,
            "noexec" => MsFlags::MS_NOEXEC,
            "noatime" => MsFlags::MS_NOATIME,
            "nodiratime" => MsFlags::MS_NODIRATIME,
            "relatime" => MsFlags::MS_RELATIME,
            _ => MsFlags::empty(),
        };
    }
    f
}

/// What [`guest_boundary`] does with each mount under the root: detach kernel filesystems (the
/// deepest first), remount the rest `nodev,nosuid`.
pub fn boundary_plan(mounts: &[MountInfo], root: &Path) -> (Vec<PathBuf>, Vec<(PathBuf, MsFlags)>) {
    let under: Vec<&MountInfo> = mounts.iter().filter(|m| m.point.starts_with(root)).collect();
    let mut detach: Vec<PathBuf> = under.iter().filter(|m| is_kernel_fs(&m.fstype)).map(|m| m.point.clone()).collect();
    detach.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    detach.dedup();
    let remount = under
        .iter()
        .filter(|m| !detach.iter().any(|d| m.point.starts_with(d)))
        .filter(|m| !(m.options.iter().any(|o| o == "nodev") && m.options.iter().any(|o| o == "nosuid")))
        .map(|m| (m.point.clone(), kept_flags(&m.options) | MsFlags::MS_NODEV | MsFlags::MS_NOSUID))
        .collect();
    (detach, remount)
}

/// Makes the tree under `root` what a wasm guest may see: no kernel filesystem (whatever the
/// spec or a recursive bind brought in), and no device node that opens.
fn guest_boundary(root_dir: &fs::File, root: &Path) -> Result<(), RootfsError> {
    let read = || -> Result<Vec<MountInfo>, RootfsError> {
        let info = fs::read_to_string("/proc/self/mountinfo").map_err(|err| RootfsError::Root { root: root.to_path_buf(), err })?;
        Ok(parse_mountinfo(&info))
    };
    // A detach takes the top mount at a path only: one stacked on a kernel filesystem would
    // uncover it. So again, until none is left (or fail).
    let mut rounds = 0;
    let remount = loop {
        let (detach, remount) = boundary_plan(&read()?, root);
        if detach.is_empty() {
            break remount;
        }
        rounds += 1;
        if rounds > 16 {
            return Err(RootfsError::Mount {
                what: "kernel filesystem (still mounted after 16 rounds of detaching)".into(),
                target: detach[0].clone(),
                err: nix::Error::EBUSY,
            });
        }
        for p in &detach {
            log::debug!("detaching {} from the guest's view", p.display());
            match umount2(p, MntFlags::MNT_DETACH) {
                Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
                Err(err) => return Err(RootfsError::Mount { what: "kernel filesystem (detach)".into(), target: p.clone(), err }),
            }
        }
    };
    // The whole tree at once, by descriptor: hidden mounts too, and no path a container sharing
    // a volume could swap meanwhile. Kernels before 5.12: mount by mount, by path.
    match nodev_nosuid_tree(root_dir) {
        Ok(()) => return Ok(()),
        Err(nix::Error::ENOSYS) | Err(nix::Error::EINVAL) => {}
        Err(err) => return Err(RootfsError::Mount { what: "nodev,nosuid on the tree (mount_setattr)".into(), target: root.to_path_buf(), err }),
    }
    for (p, flags) in &remount {
        // A mount that a detach above took along is gone: nothing to do.
        match mount(None::<&str>, p, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REMOUNT | *flags, None::<&str>) {
            Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
            Err(err) => return Err(RootfsError::Mount { what: "nodev,nosuid remount".into(), target: p.clone(), err }),
        }
    }
    Ok(())
}

/// Sets `nodev,nosuid` on every mount of the tree at `root` at once (`mount_setattr` with
/// `AT_RECURSIVE`, Linux 5.12+), leaving their other flags; `ENOSYS` before.
fn nodev_nosuid_tree(root: &fs::File) -> nix::Result<()> {
    /// `struct mount_attr` of linux/mount.h (not in the libc crate).
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    const MOUNT_ATTR_NOSUID: u64 = 0x2;
    const MOUNT_ATTR_NODEV: u64 = 0x4;
    let attr = MountAttr { attr_set: MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, attr_clr: 0, propagation: 0, userns_fd: 0 };
    let flags = (libc::AT_EMPTY_PATH | libc::AT_RECURSIVE) as libc::c_uint;
    // SAFETY: mount_setattr(2) reads `size_of::<MountAttr>()` bytes at `&attr`, a live
    // `repr(C)` value of the kernel's layout, and the NUL-terminated empty path; the descriptor
    // is borrowed from `root` for the call.
    let rc = unsafe {
        libc::syscall(libc::SYS_mount_setattr, root.as_raw_fd(), c"".as_ptr(), flags, &attr as *const MountAttr, std::mem::size_of::<MountAttr>())
    };
    nix::errno::Errno::result(rc).map(drop)
}

/// A device node the guest may open: the host's node at `host`, bound on `dest` (a path inside
/// the rootfs). The mount point is created and opened without following symlinks (an image
/// whose `/dev` or `/dev/null` is a symlink never makes the shim touch a file outside the
/// rootfs), and the bind goes through that descriptor.
fn grant_device(root: &fs::File, root_path: &Path, host: &Path, dest: &Path) -> Result<(), RootfsError> {
    let fd = device_mount_point(root, root_path, dest)?;
    let via = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    mnt(Some(host), &via, None, MsFlags::MS_BIND, None, &format!("device {}", host.display()))
}

/// The mount point of a granted device, `dest` inside `root`, opened `O_PATH` without
/// following a symlink; a symlink or special file of the image there is replaced. Its
/// directories are resolved (and made) beneath the root's descriptor.
fn device_mount_point(root: &fs::File, root_path: &Path, dest: &Path) -> Result<OwnedFd, RootfsError> {
    use nix::sys::stat::{fstatat, Mode, SFlag};
    let derr = |err: std::io::Error| RootfsError::Destination { dest: dest.to_path_buf(), err };
    let rel = dest.strip_prefix("/").unwrap_or(dest);
    let name = rel.file_name().ok_or_else(|| derr(std::io::Error::other("no file name")))?;
    let parent = match make_beneath(root, rel.parent().unwrap_or(Path::new("")), false) {
        Ok(fd) => fd,
        Err(nix::Error::ENOSYS) => {
            let dir = safe_path::scoped_join(root_path, rel.parent().unwrap_or(Path::new(""))).map_err(derr)?;
            fs::create_dir_all(&dir).map_err(derr)?;
            nix::fcntl::open(&dir, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty()).map_err(|e| derr(e.into()))?
        }
        Err(e) => return Err(derr(e.into())),
    };
    let kind = |mode: u32| SFlag::from_bits_truncate(mode & libc::S_IFMT);
    match fstatat(&parent, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) if [SFlag::S_IFREG, SFlag::S_IFCHR, SFlag::S_IFBLK].contains(&kind(st.st_mode)) => {}
        Ok(st) if kind(st.st_mode) == SFlag::S_IFDIR => return Err(derr(std::io::Error::other("is a directory in the image, not a device node"))),
        // A symlink, a fifo, a socket in the image: replaced by a plain mount point.
        Ok(_) => nix::unistd::unlinkat(&parent, name, nix::unistd::UnlinkatFlags::NoRemoveDir).map_err(|e| derr(e.into()))?,
        Err(_) => {}
    }
    let _ = nix::fcntl::openat(&parent, name, OFlag::O_CREAT | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::from_bits_truncate(0o600));
    let fd = nix::fcntl::openat(&parent, name, OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty()).map_err(|e| derr(e.into()))?;
    let st = nix::sys::stat::fstat(&fd).map_err(|e| derr(e.into()))?;
    if ![SFlag::S_IFREG, SFlag::S_IFCHR, SFlag::S_IFBLK].contains(&kind(st.st_mode)) {
        return Err(derr(std::io::Error::other("the mount point is not a file")));
    }
    Ok(fd)
}

/// The default device nodes in the rootfs's `/dev` (when it has one), then `linux.devices`:
/// each the host's node of the same path, which must be that device.
fn devices(spec: &Spec, root_dir: &fs::File, root: &Path) -> Result<(), RootfsError> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let dev = safe_path::scoped_join(root, "dev").map_err(|err| RootfsError::Destination { dest: "/dev".into(), err })?;
    if dev.is_dir() {
        for name in DEFAULT_DEVICES {
            let host = Path::new("/dev").join(name);
            if fs::metadata(&host).map(|m| m.file_type().is_char_device()).unwrap_or(false) {
                grant_device(root_dir, root, &host, &Path::new("/dev").join(name))?;
            }
        }
    }
    for d in spec.linux().as_ref().and_then(|l| l.devices().as_ref()).map(Vec::as_slice).unwrap_or(&[]) {
        let path = d.path();
        let bad = |reason: String| RootfsError::Destination { dest: path.clone(), err: std::io::Error::other(reason) };
        let md = fs::metadata(path).map_err(|e| bad(format!("linux.devices: no such device node on the host ({e}); a wasm container binds the host's node")))?;
        let (kind_ok, want) = match d.typ() {
            oci_spec::runtime::LinuxDeviceType::C | oci_spec::runtime::LinuxDeviceType::U => (md.file_type().is_char_device(), "c"),
            oci_spec::runtime::LinuxDeviceType::B => (md.file_type().is_block_device(), "b"),
            _ => (false, "p"),
        };
        let rdev = md.rdev();
        let (major, minor) = (libc::major(rdev) as i64, libc::minor(rdev) as i64);
        if !kind_ok || major != d.major() || minor != d.minor() {
            return Err(bad(format!(
                "linux.devices: the host's {} is {major}:{minor}, not the {want} {}:{} the spec asks for",
                path.display(),
                d.major(),
                d.minor()
            )));
        }
        grant_device(root_dir, root, path, path)?;
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
        // A symlink of the image is not followed: nothing to mask behind it in the guest's view.
        let res = match fs::symlink_metadata(path) {
            Ok(md) if md.file_type().is_symlink() => continue,
            Ok(md) if md.is_dir() => {
                mount(Some("tmpfs"), path, Some("tmpfs"), MsFlags::MS_RDONLY | MsFlags::MS_NODEV | MsFlags::MS_NOSUID, None::<&str>)
            }
            Ok(_) => mount(Some("/dev/null"), path, None::<&str>, MsFlags::MS_BIND, None::<&str>),
            Err(_) => continue,
        };
        if let Err(e) = res {
            log::debug!("mask {p}: {e}");
        }
    }
    for p in linux.readonly_paths().as_deref().unwrap_or(&[]) {
        let path = Path::new(p);
        // Only a real directory or file of the image: a symlink could make this bind (and its
        // remount) land elsewhere in the root.
        match fs::symlink_metadata(path) {
            Ok(md) if !md.file_type().is_symlink() => {}
            _ => continue,
        }
        // The remount replaces the bind's flags: nodev and nosuid are repeated, or image device
        // nodes under it would open again.
        let ro = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NODEV | MsFlags::MS_NOSUID;
        let res = mount(Some(path), path, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
            .and_then(|_| mount(None::<&str>, path, None::<&str>, ro, None::<&str>));
        if let Err(e) = res {
            log::debug!("readonly {p}: {e}");
        }
    }
}

/// Builds a wasm container's root inside the current (new) mount namespace and pivots into it:
/// [`prepare`] then [`enter`].
pub fn setup(spec: &Spec, rootfs: &Path) -> Result<(), RootfsError> {
    let root = prepare(spec, rootfs)?;
    enter(spec, &root)
}

/// Builds the container's root under `rootfs` (the host path of the bundle's `rootfs` or
/// spec.root.path) inside the current (new) mount namespace: the spec's mounts, the guest's
/// boundary, the granted device nodes. Returns the root's canonical path. Needs the host's
/// `/proc` (the boundary reads mountinfo, device binds go through `/proc/self/fd`); between
/// this and [`enter`] the init can still read what lives outside the root (the compile cache),
/// and reads the container's files with [`open_in_root`].
pub fn prepare(spec: &Spec, rootfs: &Path) -> Result<PathBuf, RootfsError> {
    let root = fs::canonicalize(rootfs).map_err(|err| RootfsError::Root { root: rootfs.to_path_buf(), err })?;
    let propagation = spec
        .linux()
        .as_ref()
        .and_then(|l| l.rootfs_propagation().clone())
        .map(|p| parse_options(&[p]).propagation)
        .filter(|p| !p.is_empty())
        .unwrap_or(MsFlags::MS_SLAVE | MsFlags::MS_REC);
    mnt(None, Path::new("/"), None, propagation | MsFlags::MS_REC, None, "propagation of /")?;
    // The mount holding the rootfs made private first, as runc does: the root's bind mount is
    // then private too, so it and everything mounted beneath it stay in this namespace, and
    // pivot_root accepts it (it refuses a shared new root or parent, which `rshared`, asked for
    // a pod with Bidirectional volumes, made every mount).
    let info = fs::read_to_string("/proc/self/mountinfo").map_err(|err| RootfsError::Root { root: root.clone(), err })?;
    if let Some(parent) = mount_holding(&parse_mountinfo(&info), &root) {
        mnt(None, &parent, None, MsFlags::MS_PRIVATE, None, "the mount holding the rootfs")?;
    }
    mnt(Some(&root), &root, None, MsFlags::MS_BIND | MsFlags::MS_REC, None, "rootfs")?;
    // The root's bind mount, held open: every destination is resolved beneath it.
    let root_dir = fs::File::open(&root).map_err(|err| RootfsError::Root { root: root.clone(), err })?;
    for m in spec.mounts().as_deref().unwrap_or(&[]) {
        mount_one(&root_dir, &root, m)?;
    }
    guest_boundary(&root_dir, &root)?;
    devices(spec, &root_dir, &root)?;
    Ok(root)
}

/// Pivots into `root` (from [`prepare`]), masks and read-only paths, a read-only root.
pub fn enter(spec: &Spec, root: &Path) -> Result<(), RootfsError> {
    freeze_name_service();
    pivot(root)?;
    mask_paths(spec);
    if spec.root().as_ref().map(|r| r.readonly().unwrap_or(false)).unwrap_or(false) {
        let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NODEV | MsFlags::MS_NOSUID;
        mnt(None, Path::new("/"), None, flags, None, "read-only root")?;
    }
    Ok(())
}

/// Fixes glibc's name service to its built-in sources, before the pivot: after it, the init's
/// own name lookups (a guest's `ip-name-lookup`, the outbound allow-list's, wasi:http's
/// connect) must not load code from the container's files. Unfixed, glibc reads
/// `/etc/nsswitch.conf` at its first lookup, and a `hosts: x` there, written by the guest (a
/// writable rootfs) or shipped by the image, makes it `dlopen` `libnss_x.so.2` from the
/// container's library directories: native code of the container's choosing in the init.
/// `__nss_configure_lookup` sets each database's sources and stops glibc from reading the file
/// again; `files` and `dns` are part of libc itself since glibc 2.34, so no module is loaded.
/// `/etc/hosts` and `/etc/resolv.conf` are still read, the container's own, as for any
/// process in it. Other C libraries (musl) have no loadable name service.
pub fn freeze_name_service() {
    #[cfg(target_env = "gnu")]
    {
        unsafe extern "C" {
            fn __nss_configure_lookup(db: *const libc::c_char, service_line: *const libc::c_char) -> libc::c_int;
        }
        let files = [
            c"aliases", c"ethers", c"group", c"gshadow", c"initgroups", c"netgroup", c"networks", c"passwd", c"protocols", c"publickey", c"rpc",
            c"services", c"shadow",
        ];
        for (db, sources) in files.iter().map(|db| (*db, c"files")).chain([(c"hosts", c"files dns")]) {
            // SAFETY: two NUL-terminated strings that outlive the call; glibc copies what it
            // keeps. The init has one thread here (checked before `enter`), so no lookup runs
            // while the table changes. An unknown database is refused with -1, harmlessly.
            unsafe { __nss_configure_lookup(db.as_ptr(), sources.as_ptr()) };
        }
    }
}

/// Makes the file `path` (absolute in the container; made empty where missing) read-only in
/// the guest's view under `root` (from [`prepare`]): a bind mount of itself, remounted
/// `ro,nosuid,nodev,noexec`. Resolved beneath the root, symlinks included, so the file
/// protected is the one the container's programs read. Only in this mount namespace.
pub fn read_only_file(root: &Path, path: &Path) -> Result<(), RootfsError> {
    let derr = |err: std::io::Error| RootfsError::Destination { dest: path.to_path_buf(), err };
    let root_dir = fs::File::open(root).map_err(|err| RootfsError::Root { root: root.to_path_buf(), err })?;
    let rel = path.strip_prefix("/").unwrap_or(path);
    let target = match open_beneath(&root_dir, rel, OFlag::empty()) {
        Ok(fd) => Target::Fd(fd),
        Err(nix::Error::ENOENT) => mount_point(&root_dir, root, path, true)?,
        Err(nix::Error::ENOSYS) => Target::Path(mount_point_by_path(root, rel, true).map_err(derr)?),
        Err(e) => return Err(derr(e.into())),
    };
    let st = match &target {
        Target::Fd(fd) => nix::sys::stat::fstat(fd).map_err(|e| derr(e.into()))?,
        Target::Path(p) => nix::sys::stat::lstat(p).map_err(|e| derr(e.into()))?,
    };
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(derr(std::io::Error::other("not a regular file")));
    }
    let what = format!("{} read-only", path.display());
    mnt(Some(&target.path()), &target.path(), None, MsFlags::MS_BIND, None, &what)?;
    let top = reopen_mount(&root_dir, path, &target, Some((st.st_dev, st.st_ino)))?;
    let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mnt(None, &top.path(), None, flags, None, &what)
}

/// Makes the directory `path` (absolute in the container, a real directory of the root, not a
/// symlink) read-only in the guest's view under `root`, the mounts below it kept as they are: a
/// recursive bind mount of itself, its top remounted `ro,nosuid,nodev,noexec`. Nothing in it can
/// be made, removed or renamed, and, a mount point, it cannot be renamed or removed itself.
pub fn read_only_dir(root: &Path, path: &Path) -> Result<(), RootfsError> {
    let derr = |err: std::io::Error| RootfsError::Destination { dest: path.to_path_buf(), err };
    let root_dir = fs::File::open(root).map_err(|err| RootfsError::Root { root: root.to_path_buf(), err })?;
    let rel = path.strip_prefix("/").unwrap_or(path);
    // Its last component not followed: a symlink there could be replaced by the guest with a
    // directory of its own, whatever the mount on its target.
    let target = match open_beneath(&root_dir, rel, OFlag::O_NOFOLLOW) {
        Ok(fd) => Target::Fd(fd),
        Err(nix::Error::ENOSYS) => Target::Path(safe_path::scoped_join(root, rel.parent().unwrap_or(Path::new("")))
            .map_err(derr)?
            .join(rel.file_name().ok_or_else(|| derr(std::io::Error::other("no name")))?)),
        Err(e) => return Err(derr(e.into())),
    };
    let st = match &target {
        Target::Fd(fd) => nix::sys::stat::fstat(fd).map_err(|e| derr(e.into()))?,
        Target::Path(p) => nix::sys::stat::lstat(p).map_err(|e| derr(e.into()))?,
    };
    match st.st_mode & libc::S_IFMT {
        libc::S_IFDIR => {}
        libc::S_IFLNK => return Err(derr(std::io::Error::other("a symlink in the image; it must be a directory here"))),
        _ => return Err(derr(std::io::Error::other("not a directory"))),
    }
    let what = format!("{} read-only", path.display());
    mnt(Some(&target.path()), &target.path(), None, MsFlags::MS_BIND | MsFlags::MS_REC, None, &what)?;
    let top = reopen_mount(&root_dir, path, &target, Some((st.st_dev, st.st_ino)))?;
    let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mnt(None, &top.path(), None, flags, None, &what)
}

/// Opens `path` (absolute in the container) for reading as if the directory `root` were `/`:
/// `..` and symlinks, absolute or relative, cannot leave it, even if the tree changes meanwhile
/// (`openat2` with `RESOLVE_IN_ROOT`; Linux 5.6+, else a scoped join and `O_NOFOLLOW`). Only
/// what is beneath `root` is searched with the caller's ids: the directories above it may be
/// closed to the guest's user (containerd's bundle directories are).
pub fn open_in_root(root: &fs::File, path: &Path) -> std::io::Result<fs::File> {
    let rel = path.strip_prefix("/").unwrap_or(path);
    // Non-blocking and no controlling tty: a fifo or a device swapped in meanwhile must not
    // hang or affect the init; only a regular file is returned.
    let flags = OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK | OFlag::O_NOCTTY;
    let how = OpenHow::new().flags(flags).resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let file = match nix::fcntl::openat2(root, rel, how) {
        Ok(fd) => fs::File::from(fd),
        Err(nix::Error::ENOSYS) => {
            // Resolved once through the root's path, opened beneath its descriptor.
            let root_path = fs::read_link(format!("/proc/self/fd/{}", root.as_raw_fd()))?;
            let target = safe_path::scoped_join(&root_path, rel)?;
            let inside = target.strip_prefix(&root_path).map_err(std::io::Error::other)?;
            let inside = if inside.as_os_str().is_empty() { Path::new(".") } else { inside };
            fs::File::from(nix::fcntl::openat(root, inside, flags | OFlag::O_NOFOLLOW, nix::sys::stat::Mode::empty())?)
        }
        Err(e) => return Err(e.into()),
    };
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    Ok(file)
}

/// Opens the directory `path` (absolute, of the container's view) inside `root`, every
/// component resolved as if `root` were `/` (symlinks included, never out of it), without
/// following a magic link. Only a directory is returned.
pub fn open_dir_in_root(root: &Path, path: &Path) -> std::io::Result<fs::File> {
    use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
    let rel = path.strip_prefix("/").unwrap_or(path);
    let dir = fs::File::open(root)?;
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    match nix::fcntl::openat2(&dir, rel, how) {
        Ok(fd) => Ok(fs::File::from(fd)),
        Err(nix::Error::ENOSYS) => {
            let target = safe_path::scoped_join(root, rel)?;
            let file = fs::File::open(target)?;
            if !file.metadata()?.is_dir() {
                return Err(std::io::Error::other("not a directory"));
            }
            Ok(file)
        }
        Err(e) => Err(e.into()),
    }
}

/// Creates the new regular file `name` (one component) in `dir`, mode 0600: never an existing
/// file, never through a symlink.
pub fn create_new_file_in(dir: &fs::File, name: &str) -> std::io::Result<fs::File> {
    use nix::fcntl::OFlag;
    use nix::sys::stat::Mode;
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("bad file name {name:?}")));
    }
    let fd = nix::fcntl::openat(
        dir,
        name,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NOCTTY,
        Mode::from_bits_truncate(0o600),
    )?;
    Ok(fs::File::from(fd))
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
        std::os::unix::fs::symlink("../../../../tmp", root.join("real/up")).unwrap();
        let root_dir = fs::File::open(root).unwrap();
        // Where the descriptor of a mount point really is.
        let held = |t: Target| fs::read_link(t.path()).unwrap();
        let t = held(mount_point(&root_dir, root, Path::new("/escape/passwd"), true).unwrap());
        assert_eq!(t, root.join("etc/passwd"));
        assert!(t.is_file());
        let t = held(mount_point(&root_dir, root, Path::new("/../../x"), false).unwrap());
        assert_eq!(t, root.join("x"));
        assert!(t.is_dir());
        // A relative symlink climbing out, then a new directory under it: made inside.
        let t = held(mount_point(&root_dir, root, Path::new("/real/up/new/dir"), false).unwrap());
        assert_eq!(t, root.join("tmp/new/dir"));
        assert!(!Path::new("/tmp/new/dir").exists() || Path::new("/tmp/new/dir").starts_with(root));
    }

    const MOUNTINFO: &str = "\
22 1 0:21 / / rw,relatime - overlay overlay rw
30 22 0:21 / /run/b/rootfs rw,relatime - overlay overlay rw,lowerdir=/l
31 30 0:5 / /run/b/rootfs/proc rw,nosuid,nodev,noexec,relatime - proc proc rw
32 30 0:6 / /run/b/rootfs/dev rw,nosuid - tmpfs tmpfs rw,mode=755
33 32 0:7 / /run/b/rootfs/dev/pts rw,nosuid,noexec - devpts devpts rw
34 30 0:8 / /run/b/rootfs/host\\040root ro,relatime - ext4 /dev/vda1 rw
35 34 0:5 / /run/b/rootfs/host\\040root/proc rw - proc proc rw
36 35 0:9 / /run/b/rootfs/host\\040root/proc/sys/fs/binfmt_misc rw - binfmt_misc binfmt_misc rw
37 34 0:10 / /run/b/rootfs/host\\040root/sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
38 30 0:11 / /run/b/rootfs/data rw,nosuid,nodev - tmpfs tmpfs rw
39 22 0:5 / /proc rw - proc proc rw
";

    #[test]
    fn the_mount_holding_a_path_is_the_longest_above_it() {
        let m = |p: &str| MountInfo { point: PathBuf::from(p), options: vec![], fstype: "ext4".into() };
        let mounts = [m("/"), m("/run"), m("/run/containerd/x"), m("/runner")];
        assert_eq!(mount_holding(&mounts, Path::new("/run/containerd/x/rootfs")), Some(PathBuf::from("/run/containerd/x")));
        assert_eq!(mount_holding(&mounts, Path::new("/runner2/a")), Some(PathBuf::from("/")), "by components, not bytes");
        assert_eq!(mount_holding(&mounts, Path::new("/run/containerd/x")), Some(PathBuf::from("/run/containerd/x")));
        assert_eq!(mount_holding(&[], Path::new("/a")), None);
    }

    #[test]
    fn mountinfo_parses_with_escapes() {
        let m = parse_mountinfo(MOUNTINFO);
        assert_eq!(m.len(), 11);
        assert_eq!(m[5].point, PathBuf::from("/run/b/rootfs/host root"));
        assert_eq!(m[5].fstype, "ext4");
        assert_eq!(m[5].options, s(&["ro", "relatime"]));
        assert_eq!(unescape("a\\134b\\011"), "a\\b\t");
        assert_eq!(unescape("tail\\04"), "tail\\04");
    }

    #[test]
    fn the_boundary_detaches_kernel_filesystems_and_remounts_the_rest_nodev() {
        let (detach, remount) = boundary_plan(&parse_mountinfo(MOUNTINFO), Path::new("/run/b/rootfs"));
        // Kernel filesystems under the root, nested in a bind of the host's root too, deepest
        // first; the host's own /proc (outside the root) is left alone.
        assert_eq!(
            detach,
            vec![
                PathBuf::from("/run/b/rootfs/host root/proc/sys/fs/binfmt_misc"),
                PathBuf::from("/run/b/rootfs/host root/sys/fs/cgroup/memory"),
                PathBuf::from("/run/b/rootfs/dev/pts"),
                PathBuf::from("/run/b/rootfs/host root/proc"),
                PathBuf::from("/run/b/rootfs/proc"),
            ]
        );
        let points: Vec<&Path> = remount.iter().map(|(p, _)| p.as_path()).collect();
        // Already nodev,nosuid (data) and detached ones are not remounted.
        assert_eq!(points, vec![Path::new("/run/b/rootfs"), Path::new("/run/b/rootfs/dev"), Path::new("/run/b/rootfs/host root")]);
        for (p, f) in &remount {
            assert!(f.contains(MsFlags::MS_NODEV | MsFlags::MS_NOSUID), "{}", p.display());
        }
        // A read-only mount stays read-only.
        assert!(remount[2].1.contains(MsFlags::MS_RDONLY | MsFlags::MS_RELATIME));
        assert!(!remount[0].1.contains(MsFlags::MS_RDONLY));
    }

    #[test]
    fn kernel_filesystems_are_named() {
        for t in ["proc", "sysfs", "cgroup2", "devpts", "mqueue", "devtmpfs", "bpf", "debugfs"] {
            assert!(is_kernel_fs(t), "{t}");
        }
        for t in ["tmpfs", "overlay", "ext4", "xfs", "nfs4", "fuse.sshfs"] {
            assert!(!is_kernel_fs(t), "{t}");
        }
    }

    #[test]
    fn a_symlink_loop_is_an_error_not_a_hang() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::os::unix::fs::symlink("/b", root.join("a")).unwrap();
        std::os::unix::fs::symlink("a", root.join("b")).unwrap();
        let root_dir = fs::File::open(root).unwrap();
        let err = mount_point(&root_dir, root, Path::new("/a/x"), false).err().expect("a loop resolved");
        assert!(err.to_string().contains("/a/x"), "{err}");
    }

    #[test]
    fn a_device_mount_point_never_follows_an_image_symlink() {
        // Unprivileged part: the mount point is made inside the root even when the image's
        // /dev/null is a symlink out of it (the bind itself needs root: e2e sandbox::devices).
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let outside = dir.path().join("outside");
        fs::create_dir_all(root.join("dev")).unwrap();
        fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(outside.join("null"), root.join("dev/null")).unwrap();
        let root_dir = fs::File::open(&root).unwrap();
        device_mount_point(&root_dir, &root, Path::new("/dev/null")).unwrap();
        assert!(!outside.join("null").exists(), "created a file outside the root");
        // /dev itself a symlink out of the root: resolved inside it.
        fs::remove_dir_all(root.join("dev")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("dev")).unwrap();
        device_mount_point(&root_dir, &root, Path::new("/dev/zero")).unwrap();
        assert!(!outside.join("zero").exists(), "created a file outside the root");
        assert!(fs::symlink_metadata(root.join(outside.strip_prefix("/").unwrap()).join("zero")).unwrap().is_file());
        fs::remove_file(root.join("dev")).unwrap();
        fs::create_dir_all(root.join("dev")).unwrap();
        std::os::unix::fs::symlink(outside.join("null"), root.join("dev/null")).unwrap();
        device_mount_point(&root_dir, &root, Path::new("/dev/null")).unwrap();
        assert!(fs::symlink_metadata(root.join("dev/null")).unwrap().file_type().is_file());
    }
}
