//! Entering the namespaces a spec asks for: join the ones given by path (`setns`), create the
//! others (`unshare`). A pid namespace only applies to children, so the caller forks once
//! afterwards when `needs_fork` says so.

use std::fs::File;
use std::path::PathBuf;

use nix::sched::{setns, unshare, CloneFlags};
use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType};

#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    #[error("{kind} namespace {path}: cannot open: {err}")]
    Open { kind: String, path: PathBuf, err: std::io::Error },
    #[error("{kind} namespace {path}: cannot join: {err}")]
    Join { kind: String, path: PathBuf, err: nix::Error },
    #[error("cannot create namespaces ({flags}): {err}")]
    Unshare { flags: String, err: nix::Error },
    #[error("user namespaces are not supported by this shim yet")]
    UserNamespace,
}

fn flag(t: LinuxNamespaceType) -> CloneFlags {
    match t {
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        LinuxNamespaceType::Time => CloneFlags::from_bits_retain(0x80),
    }
}

/// What entering did, for the caller's next steps.
#[derive(Debug, Default, Clone, Copy)]
pub struct Entered {
    /// A pid namespace was created or joined: only a child of this process lives in it.
    pub needs_fork: bool,
    /// A new UTS namespace was created: the hostname may be set.
    pub new_uts: bool,
    /// A new mount namespace exists: the rootfs may be pivoted.
    pub new_mount: bool,
}

/// Joins or creates the namespaces in `spec_ns`. Namespaces given by path are joined first
/// (in spec order, the mount namespace last so the other paths stay reachable), then the rest
/// are created with one `unshare`. The cgroup namespace is created last of all, so its root
/// is the cgroup the caller has already moved into.
pub fn enter(spec_ns: &[LinuxNamespace]) -> Result<Entered, NamespaceError> {
    let mut entered = Entered::default();
    let mut joins: Vec<(LinuxNamespaceType, PathBuf, File)> = Vec::new();
    let mut create = CloneFlags::empty();
    for ns in spec_ns {
        let t = ns.typ();
        if t == LinuxNamespaceType::User {
            return Err(NamespaceError::UserNamespace);
        }
        match ns.path() {
            Some(path) if !path.as_os_str().is_empty() => {
                let file = File::open(path).map_err(|err| NamespaceError::Open {
                    kind: t.to_string(),
                    path: path.clone(),
                    err,
                })?;
                joins.push((t, path.clone(), file));
            }
            _ => create |= flag(t),
        }
        if t == LinuxNamespaceType::Pid {
            entered.needs_fork = true;
        }
    }
    joins.sort_by_key(|(t, _, _)| *t == LinuxNamespaceType::Mount);
    for (t, path, file) in &joins {
        setns(file, flag(*t)).map_err(|err| NamespaceError::Join {
            kind: t.to_string(),
            path: path.clone(),
            err,
        })?;
        if *t == LinuxNamespaceType::Mount {
            entered.new_mount = true;
        }
    }
    let cgroup = create & CloneFlags::CLONE_NEWCGROUP;
    let first = create - CloneFlags::CLONE_NEWCGROUP;
    for flags in [first, cgroup] {
        if flags.is_empty() {
            continue;
        }
        unshare(flags).map_err(|err| NamespaceError::Unshare { flags: format!("{flags:?}"), err })?;
    }
    entered.new_uts = create.contains(CloneFlags::CLONE_NEWUTS);
    entered.new_mount |= create.contains(CloneFlags::CLONE_NEWNS);
    Ok(entered)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_namespace_is_refused_with_a_reason() {
        let ns = oci_spec::runtime::LinuxNamespaceBuilder::default()
            .typ(LinuxNamespaceType::User)
            .build()
            .unwrap();
        let err = enter(&[ns]).unwrap_err();
        assert!(err.to_string().contains("user namespaces"));
    }

    #[test]
    fn a_missing_namespace_path_names_the_path() {
        let ns = oci_spec::runtime::LinuxNamespaceBuilder::default()
            .typ(LinuxNamespaceType::Network)
            .path("/nonexistent/netns")
            .build()
            .unwrap();
        let err = enter(&[ns]).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/netns"), "{err}");
        assert!(err.contains("net namespace"), "{err}");
    }
}
