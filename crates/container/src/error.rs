//! The crate's one error type: each module's error, composed, and [`ContainerError::kind`],
//! which says how the shim reports it to containerd (one mapping, in the shim, from kind to
//! ttrpc status code).

use crate::cgroup::CgroupError;
use crate::namespaces::NamespaceError;
use crate::rootfs::RootfsError;
use crate::seccomp::SeccompError;
use crate::security::SecurityError;

/// How an error of this crate should be reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The spec asks for something wrong whatever the state of the node (a bad cgroups path,
    /// inconsistent limits, a seccomp profile the shim does not apply).
    InvalidArgument,
    /// The request is well formed but the node or the container is not in a state to serve it:
    /// the kernel refused a value (a memory limit below the usage, a cpuset outside the
    /// parent's), a controller or kernel feature is missing, a mount or a privilege drop failed.
    FailedPrecondition,
    /// The spec asks for something this runtime does not do (a user namespace).
    Unimplemented,
    /// Anything else: a failure that is nobody's input mistake.
    Internal,
}

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error(transparent)]
    Namespace(#[from] NamespaceError),
    #[error(transparent)]
    Rootfs(#[from] RootfsError),
    #[error(transparent)]
    Seccomp(#[from] SeccompError),
    #[error(transparent)]
    Security(#[from] SecurityError),
}

impl ContainerError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            ContainerError::Cgroup(e) => e.kind(),
            ContainerError::Namespace(NamespaceError::UserNamespace) => ErrorKind::Unimplemented,
            ContainerError::Namespace(_) => ErrorKind::FailedPrecondition,
            ContainerError::Rootfs(_) => ErrorKind::FailedPrecondition,
            ContainerError::Seccomp(SeccompError::Unsupported(_)) => ErrorKind::InvalidArgument,
            ContainerError::Seccomp(SeccompError::Library { .. }) => ErrorKind::FailedPrecondition,
            ContainerError::Security(_) => ErrorKind::FailedPrecondition,
        }
    }
}

impl CgroupError {
    /// The same cgroup error is reported the same way whichever request met it (Create or
    /// Update): what the spec says wrong is InvalidArgument; the kernel refusing a value it
    /// was given (a write to a control file) or a device filter, and a missing controller, are
    /// the node's state (FailedPrecondition); the rest (reading, creating and removing
    /// directories, a freezer that does not answer) is Internal.
    pub fn kind(&self) -> ErrorKind {
        match self {
            CgroupError::InvalidPath { .. } | CgroupError::InvalidResources(_) => ErrorKind::InvalidArgument,
            CgroupError::Io { op: "write", .. } | CgroupError::ControllerMissing { .. } | CgroupError::DeviceFilter { .. } => {
                ErrorKind::FailedPrecondition
            }
            CgroupError::Io { .. } | CgroupError::Parse { .. } | CgroupError::NotFound { .. } | CgroupError::Timeout { .. } => ErrorKind::Internal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn kinds_follow_the_cause_not_the_request() {
        let write = CgroupError::Io { op: "write", path: PathBuf::from("/sys/fs/cgroup/a/memory.max"), err: std::io::Error::from_raw_os_error(libc::EBUSY) };
        let mkdir = CgroupError::Io { op: "mkdir", path: PathBuf::from("/sys/fs/cgroup/a"), err: std::io::Error::from_raw_os_error(libc::EACCES) };
        assert_eq!(ContainerError::from(write).kind(), ErrorKind::FailedPrecondition);
        assert_eq!(ContainerError::from(mkdir).kind(), ErrorKind::Internal);
        assert_eq!(ContainerError::from(CgroupError::InvalidResources("swap below memory".into())).kind(), ErrorKind::InvalidArgument);
        assert_eq!(ContainerError::from(NamespaceError::UserNamespace).kind(), ErrorKind::Unimplemented);
        assert_eq!(ContainerError::from(SeccompError::Unsupported("listenerPath".into())).kind(), ErrorKind::InvalidArgument);
        // The message is the module's, unchanged.
        let e = ContainerError::from(CgroupError::InvalidResources("swap below memory".into()));
        assert_eq!(e.to_string(), "cgroup: invalid resources: swap below memory");
    }
}
