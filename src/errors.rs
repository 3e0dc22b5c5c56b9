//! One mapping from the shim's errors to ttrpc status codes, so `ctr` and the CRI show a useful
//! message with the right code.

use containerd_shim::protos::ttrpc::{self, Code};

use crate::protocol::ErrorKind;

/// An error answered to containerd.
#[derive(Debug, Clone)]
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
}
