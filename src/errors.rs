//! The shim's one error type, for the service and the container init alike, and the one mapping
//! from errors to ttrpc status codes, so `ctr` and the CRI show a useful message with the right
//! code. The crates' errors come in through `From` by their own `kind()`.

use containerd_shim::protos::ttrpc::{self, Code};
use serde::{Deserialize, Serialize};
use wasm_shim_container::cgroup::CgroupError;
use wasm_shim_container::namespaces::NamespaceError;
use wasm_shim_container::rootfs::RootfsError;
use wasm_shim_container::seccomp::SeccompError;
use wasm_shim_container::security::SecurityError;
use wasm_shim_container::ContainerError;

/// The ttrpc status an error maps to (an init's error crosses the sync socket with it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    NotFound,
    InvalidArgument,
    FailedPrecondition,
    Unimplemented,
    Internal,
}

/// An error answered to containerd, or reported by the init to the shim.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShimError {
    pub kind: ErrorKind,
    pub message: String,
}

pub type Result<T> = std::result::Result<T, ShimError>;

impl ShimError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ShimError { kind, message: message.into() }
    }
    pub fn not_found(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, m)
    }
    pub fn invalid(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, m)
    }
    pub fn precondition(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::FailedPrecondition, m)
    }
    pub fn unimplemented(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unimplemented, m)
    }
    pub fn internal(m: impl std::fmt::Display) -> Self {
        Self::new(ErrorKind::Internal, m.to_string())
    }
    /// The same error, its message prefixed with `what`.
    pub fn context(self, what: impl std::fmt::Display) -> Self {
        ShimError { message: format!("{what}: {}", self.message), ..self }
    }
}

impl std::fmt::Display for ShimError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<wasm_shim_oci::OciError> for ShimError {
    fn from(e: wasm_shim_oci::OciError) -> Self {
        let kind = match e.kind() {
            wasm_shim_oci::ErrorKind::NotFound => ErrorKind::NotFound,
            wasm_shim_oci::ErrorKind::InvalidArgument => ErrorKind::InvalidArgument,
            wasm_shim_oci::ErrorKind::FailedPrecondition => ErrorKind::FailedPrecondition,
            wasm_shim_oci::ErrorKind::Internal => ErrorKind::Internal,
        };
        ShimError::new(kind, e.to_string())
    }
}

impl From<wasm_shim_engine::EngineError> for ShimError {
    fn from(e: wasm_shim_engine::EngineError) -> Self {
        let kind = if e.is_invalid_input() { ErrorKind::InvalidArgument } else { ErrorKind::Internal };
        ShimError::new(kind, e.to_string())
    }
}

impl From<ContainerError> for ShimError {
    fn from(e: ContainerError) -> Self {
        let kind = match e.kind() {
            wasm_shim_container::ErrorKind::InvalidArgument => ErrorKind::InvalidArgument,
            wasm_shim_container::ErrorKind::FailedPrecondition => ErrorKind::FailedPrecondition,
            wasm_shim_container::ErrorKind::Unimplemented => ErrorKind::Unimplemented,
            wasm_shim_container::ErrorKind::Internal => ErrorKind::Internal,
        };
        ShimError::new(kind, e.to_string())
    }
}

/// Each module's error of `crates/container`, through the crate's error (and its kind).
macro_rules! from_container_error {
    ($($t:ty),*) => {$(
        impl From<$t> for ShimError {
            fn from(e: $t) -> Self {
                ContainerError::from(e).into()
            }
        }
    )*};
}
from_container_error!(CgroupError, NamespaceError, RootfsError, SeccompError, SecurityError);

pub fn code(kind: ErrorKind) -> Code {
    match kind {
        ErrorKind::NotFound => Code::NOT_FOUND,
        ErrorKind::InvalidArgument => Code::INVALID_ARGUMENT,
        ErrorKind::FailedPrecondition => Code::FAILED_PRECONDITION,
        ErrorKind::Unimplemented => Code::UNIMPLEMENTED,
        ErrorKind::Internal => Code::INTERNAL,
    }
}

impl From<ShimError> for ttrpc::Error {
    fn from(e: ShimError) -> Self {
        ttrpc::Error::RpcStatus(ttrpc::get_status(code(e.kind), e.message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_ttrpc_codes_and_keep_the_message() {
        let e: ttrpc::Error = ShimError::not_found("/hello.wasm: not found").into();
        match e {
            ttrpc::Error::RpcStatus(s) => {
                assert_eq!(s.code(), Code::NOT_FOUND);
                assert_eq!(s.message(), "/hello.wasm: not found");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(code(ErrorKind::InvalidArgument), Code::INVALID_ARGUMENT);
        assert_eq!(code(ErrorKind::Unimplemented), Code::UNIMPLEMENTED);
        assert_eq!(code(ErrorKind::FailedPrecondition), Code::FAILED_PRECONDITION);
    }

    #[test]
    fn a_cgroup_error_has_one_code_whichever_request_met_it() {
        // The kernel refusing a limit: Create and Update both answer FailedPrecondition.
        let refused = || CgroupError::Io {
            op: "write",
            path: "/sys/fs/cgroup/a/memory.max".into(),
            err: std::io::Error::from_raw_os_error(libc::EBUSY),
        };
        let e = ShimError::from(refused());
        assert_eq!(e.kind, ErrorKind::FailedPrecondition);
        assert_eq!(e.message, refused().to_string());
        let bad = ShimError::from(CgroupError::InvalidResources("memory.swap below memory.limit".into()));
        assert_eq!(bad.kind, ErrorKind::InvalidArgument);
        assert_eq!(ShimError::from(NamespaceError::UserNamespace).kind, ErrorKind::Unimplemented);
        assert_eq!(ShimError::internal("x").context("rootfs").message, "rootfs: x");
    }
}
