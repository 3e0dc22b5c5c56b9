//! Privileges of the container init, applied after the rootfs is in place and before any guest
//! code runs: rlimits, oom_score_adj, user and groups, capability sets, no_new_privs; the
//! non-dumpable flag (set first of all); AppArmor and SELinux labels.

use std::collections::HashSet;
use std::str::FromStr;

use caps::{CapSet, Capability as Cap, CapsHashSet};
use oci_spec::runtime::{Capabilities, PosixRlimitType, Process};

#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error("rlimit {name}: {err}")]
    Rlimit { name: String, err: std::io::Error },
    #[error("user {uid}:{gid}: {err}")]
    User { uid: u32, gid: u32, err: nix::Error },
    #[error("capabilities: {0}")]
    Caps(String),
    #[error("no_new_privs: {0}")]
    NoNewPrivs(std::io::Error),
    #[error("dumpable: {0}")]
    Dumpable(std::io::Error),
    /// An LSM field of the spec that cannot be applied; names the field.
    #[error("{field} {value:?}: {reason}")]
    Lsm { field: &'static str, value: String, reason: String },
}

/// Makes the calling process non-dumpable: its `/proc/<pid>` entries belong to root and other
/// processes (a sidecar sharing the pod's pid namespace, even as root without
/// CAP_SYS_PTRACE) cannot open its memory, descriptors or root, nor ptrace it. Inherited by
/// fork; a later uid change keeps it off unless the node sets `fs.suid_dumpable=1`, so it is
/// set again after the switch to the spec's user.
pub fn set_non_dumpable() -> Result<(), SecurityError> {
    // SAFETY: prctl with integer arguments only.
    let ret = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    if ret < 0 {
        return Err(SecurityError::Dumpable(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// The LSM labels of the spec, prepared while the host's `/proc` is still mounted (before
/// `pivot_root`: a wasm guest gets no procfs) and applied by [`Lsm::apply`] on the thread that
/// prepared them, before any other thread exists, so every later thread inherits them.
#[derive(Debug, Default)]
pub struct Lsm {
    apparmor: Option<(std::fs::File, String)>,
    selinux: Option<(std::fs::File, String)>,
}

fn read_trim(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

/// AppArmor is enabled when its module says `Y` (what runc checks).
pub fn apparmor_enabled() -> bool {
    read_trim("/sys/module/apparmor/parameters/enabled").map(|v| v.starts_with('Y')).unwrap_or(false)
}

/// SELinux is enabled when selinuxfs is mounted.
pub fn selinux_enabled() -> bool {
    std::path::Path::new("/sys/fs/selinux/enforce").exists()
}

fn open_attr(paths: &[&str]) -> std::io::Result<std::fs::File> {
    let mut last = std::io::Error::from(std::io::ErrorKind::NotFound);
    for p in paths {
        match std::fs::OpenOptions::new().write(true).open(p) {
            Ok(f) => return Ok(f),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Checks `process.apparmorProfile` and `process.selinuxLabel` against the host: a label the
/// host cannot apply (its LSM is not enabled, the attribute cannot be opened) is an error
/// naming the field, never ignored.
pub fn prepare_lsm(process: &Process) -> Result<Lsm, SecurityError> {
    let mut lsm = Lsm::default();
    if let Some(profile) = process.apparmor_profile().as_deref().filter(|p| !p.is_empty()) {
        let err = |reason: String| SecurityError::Lsm { field: "process.apparmorProfile", value: profile.to_string(), reason };
        if !apparmor_enabled() {
            return Err(err("AppArmor is not enabled on this host".into()));
        }
        let f = open_attr(&["/proc/thread-self/attr/apparmor/current", "/proc/thread-self/attr/current"])
            .map_err(|e| err(format!("cannot open the AppArmor attribute: {e}")))?;
        lsm.apparmor = Some((f, profile.to_string()));
    }
    if let Some(label) = process.selinux_label().as_deref().filter(|l| !l.is_empty()) {
        let err = |reason: String| SecurityError::Lsm { field: "process.selinuxLabel", value: label.to_string(), reason };
        if !selinux_enabled() {
            return Err(err("SELinux is not enabled on this host".into()));
        }
        let f = open_attr(&["/proc/thread-self/attr/current"]).map_err(|e| err(format!("cannot open the SELinux attribute: {e}")))?;
        lsm.selinux = Some((f, label.to_string()));
    }
    Ok(lsm)
}

impl Lsm {
    /// Moves the calling thread into the spec's AppArmor profile and SELinux context at once
    /// (runc does it at execve; the init runs the guest without an exec).
    pub fn apply(self) -> Result<(), SecurityError> {
        use std::io::Write;
        if let Some((mut f, profile)) = self.apparmor {
            f.write_all(format!("changeprofile {profile}").as_bytes()).map_err(|e| SecurityError::Lsm {
                field: "process.apparmorProfile",
                value: profile.clone(),
                reason: format!("the kernel refused the profile: {e}"),
            })?;
        }
        if let Some((mut f, label)) = self.selinux {
            f.write_all(label.as_bytes()).map_err(|e| SecurityError::Lsm {
                field: "process.selinuxLabel",
                value: label.clone(),
                reason: format!("the kernel refused the label: {e}"),
            })?;
        }
        Ok(())
    }
}

fn rlimit_resource(t: PosixRlimitType) -> libc::__rlimit_resource_t {
    use PosixRlimitType::*;
    match t {
        RlimitCpu => libc::RLIMIT_CPU,
        RlimitFsize => libc::RLIMIT_FSIZE,
        RlimitData => libc::RLIMIT_DATA,
        RlimitStack => libc::RLIMIT_STACK,
        RlimitCore => libc::RLIMIT_CORE,
        RlimitRss => libc::RLIMIT_RSS,
        RlimitNproc => libc::RLIMIT_NPROC,
        RlimitNofile => libc::RLIMIT_NOFILE,
        RlimitMemlock => libc::RLIMIT_MEMLOCK,
        RlimitAs => libc::RLIMIT_AS,
        RlimitLocks => libc::RLIMIT_LOCKS,
        RlimitSigpending => libc::RLIMIT_SIGPENDING,
        RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
        RlimitNice => libc::RLIMIT_NICE,
        RlimitRtprio => libc::RLIMIT_RTPRIO,
        RlimitRttime => libc::RLIMIT_RTTIME,
    }
}

/// Applies `process.rlimits`.
pub fn apply_rlimits(process: &Process) -> Result<(), SecurityError> {
    for r in process.rlimits().as_deref().unwrap_or(&[]) {
        let lim = libc::rlimit { rlim_cur: r.soft(), rlim_max: r.hard() };
        // SAFETY: setrlimit reads the rlimit struct we pass by reference.
        let ret = unsafe { libc::setrlimit(rlimit_resource(r.typ()), &lim) };
        if ret < 0 {
            return Err(SecurityError::Rlimit { name: format!("{:?}", r.typ()), err: std::io::Error::last_os_error() });
        }
    }
    Ok(())
}

/// Writes `process.oomScoreAdj` for the calling process.
pub fn apply_oom_score_adj(process: &Process) {
    if let Some(adj) = process.oom_score_adj() {
        if let Err(e) = std::fs::write("/proc/self/oom_score_adj", adj.to_string()) {
            log::debug!("oom_score_adj {adj}: {e}");
        }
    }
}

fn to_caps(set: &Option<Capabilities>) -> Result<CapsHashSet, SecurityError> {
    let mut out = HashSet::new();
    for c in set.iter().flatten() {
        let name = format!("CAP_{c}");
        match Cap::from_str(&name) {
            Ok(cap) => {
                out.insert(cap);
            }
            // A capability newer than this library: the kernel may not know it either.
            Err(_) => log::debug!("unknown capability {name} ignored"),
        }
    }
    Ok(out)
}

/// Runs `f` with the file-system identity of the spec's user (fsuid, fsgid, its groups), so
/// that what the init reads for the guest before it switches user (the module, before
/// `pivot_root`) is read with the permissions the guest will have, as runc's execve would.
/// The fsuid and fsgid (per thread) and the groups are restored when `f` returns (with the
/// file capabilities root keeps); the init is single-threaded then.
pub fn as_user_for_files<T>(process: &Process, f: impl FnOnce() -> T) -> Result<T, SecurityError> {
    let user = process.user();
    let (uid, gid) = (user.uid(), user.gid());
    if uid == 0 && gid == 0 {
        return Ok(f());
    }
    let groups: Vec<nix::unistd::Gid> =
        user.additional_gids().as_deref().unwrap_or(&[]).iter().map(|g| nix::unistd::Gid::from_raw(*g)).collect();
    let before = nix::unistd::getgroups().map_err(|err| SecurityError::User { uid, gid, err })?;
    nix::unistd::setgroups(&groups).map_err(|err| SecurityError::User { uid, gid, err })?;
    let old_gid = nix::unistd::setfsgid(nix::unistd::Gid::from_raw(gid));
    let old_uid = nix::unistd::setfsuid(nix::unistd::Uid::from_raw(uid));
    let out = f();
    nix::unistd::setfsuid(old_uid);
    nix::unistd::setfsgid(old_gid);
    nix::unistd::setgroups(&before).map_err(|err| SecurityError::User { uid, gid, err })?;
    // A change of fs ids resets the dumpable flag to fs.suid_dumpable: set it again.
    set_non_dumpable()?;
    Ok(out)
}

/// Switches to the spec's user and groups, keeping the permitted capabilities across the uid
/// change, then sets the capability sets from the spec (bounding first, ambient last) and
/// no_new_privs. Everything not listed in the spec is dropped. A non-root user ends with the
/// ambient set as permitted and effective, as after runc's execve.
pub fn apply_user_and_caps(process: &Process) -> Result<(), SecurityError> {
    let user = process.user();
    let (uid, gid) = (user.uid(), user.gid());
    let uerr = |err| SecurityError::User { uid, gid, err };
    let cerr = |e: caps::errors::CapsError| SecurityError::Caps(e.to_string());
    let spec_caps = process.capabilities().clone().unwrap_or_default();
    let bounding = to_caps(spec_caps.bounding())?;
    let effective = to_caps(spec_caps.effective())?;
    let permitted = to_caps(spec_caps.permitted())?;
    let inheritable = to_caps(spec_caps.inheritable())?;
    let ambient = to_caps(spec_caps.ambient())?;

    // Bounding set: dropping needs CAP_SETPCAP, which we still have as root.
    let current_bounding = caps::read(None, CapSet::Bounding).map_err(cerr)?;
    for cap in current_bounding.difference(&bounding) {
        caps::drop(None, CapSet::Bounding, *cap).map_err(cerr)?;
    }

    let groups: Vec<nix::unistd::Gid> = user
        .additional_gids()
        .as_deref()
        .unwrap_or(&[])
        .iter()
        .map(|g| nix::unistd::Gid::from_raw(*g))
        .collect();
    nix::unistd::setgroups(&groups).map_err(uerr)?;
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) };
    let g = nix::unistd::Gid::from_raw(gid);
    nix::unistd::setresgid(g, g, g).map_err(uerr)?;
    let u = nix::unistd::Uid::from_raw(uid);
    nix::unistd::setresuid(u, u, u).map_err(uerr)?;
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) };

    caps::set(None, CapSet::Effective, &CapsHashSet::new()).map_err(cerr)?;
    caps::set(None, CapSet::Permitted, &permitted).map_err(cerr)?;
    caps::set(None, CapSet::Inheritable, &inheritable).map_err(cerr)?;
    caps::set(None, CapSet::Effective, &effective.intersection(&permitted).copied().collect()).map_err(cerr)?;
    caps::clear(None, CapSet::Ambient).map_err(cerr)?;
    let mut raised = CapsHashSet::new();
    for cap in &ambient {
        if permitted.contains(cap) && inheritable.contains(cap) {
            caps::raise(None, CapSet::Ambient, *cap).map_err(cerr)?;
            raised.insert(*cap);
        }
    }
    if uid != 0 {
        // What the kernel gives a non-root user at execve, i.e. what runc's process ends with:
        // permitted and effective are the ambient set, whatever else the spec lists.
        caps::set(None, CapSet::Effective, &raised).map_err(cerr)?;
        caps::set(None, CapSet::Permitted, &raised).map_err(cerr)?;
    }
    // The id changes above reset the dumpable flag to fs.suid_dumpable on some nodes.
    set_non_dumpable()?;

    if process.no_new_privileges().unwrap_or(false) {
        // SAFETY: prctl with integer arguments only.
        let ret = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
        if ret < 0 {
            return Err(SecurityError::NoNewPrivs(std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::Capability;

    #[test]
    fn spec_capabilities_map_to_kernel_names() {
        let set: Capabilities = [Capability::NetBindService, Capability::Kill].into_iter().collect();
        let caps = to_caps(&Some(set)).unwrap();
        assert!(caps.contains(&Cap::CAP_NET_BIND_SERVICE));
        assert!(caps.contains(&Cap::CAP_KILL));
        assert_eq!(caps.len(), 2);
        assert!(to_caps(&None).unwrap().is_empty());
    }
}
