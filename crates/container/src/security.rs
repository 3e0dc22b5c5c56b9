//! Privileges of the container init, applied after the rootfs is in place and before any guest
//! code runs: rlimits, oom_score_adj, user and groups, capability sets, no_new_privs.

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

/// Switches to the spec's user and groups, keeping the permitted capabilities across the uid
/// change, then sets the capability sets from the spec (bounding first, ambient last) and
/// no_new_privs. Everything not listed in the spec is dropped.
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
    for cap in &ambient {
        if permitted.contains(cap) && inheritable.contains(cap) {
            caps::raise(None, CapSet::Ambient, *cap).map_err(cerr)?;
        }
    }

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
