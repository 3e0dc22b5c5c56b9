//! The crate's one error type. Each message is a single line that names the path or value at
//! fault and the cause; [`OciError::kind`] classifies it for the ttrpc status code.

use std::io;
use std::path::PathBuf;

/// How the shim should report an error to containerd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A file the request needs does not exist.
    NotFound,
    /// The request (spec, entrypoint, image description) is malformed.
    InvalidArgument,
    /// The request is well formed but the system is not in a state to serve it
    /// (e.g. permission denied).
    FailedPrecondition,
    /// Anything else: an I/O failure that is nobody's input mistake.
    Internal,
}

#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// Reading a file failed.
    #[error("{}: cannot {action}: {}", path.display(), io_message(source))]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: io::Error,
    },
    /// A JSON file could not be parsed.
    #[error("{}: invalid JSON: {source}", path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// The runtime spec is missing something or holds a bad value; the message names the field.
    #[error("{0}")]
    InvalidSpec(String),
    /// `args[0]` is not a valid `path[#export]`.
    #[error("entrypoint {value:?}: {reason}")]
    InvalidEntrypoint { value: String, reason: &'static str },
    /// The program was not found; `searched` says where (the rootfs, or a PATH).
    #[error("entrypoint {name:?}: not found in {searched}")]
    NotFound { name: String, searched: String },
    /// The program resolved to a directory.
    #[error("entrypoint {path:?}: is a directory")]
    IsDirectory { path: String },
    /// The program resolved to something other than a regular file (fifo, device, socket).
    #[error("entrypoint {path:?}: not a regular file")]
    NotRegularFile { path: String },
    /// Too many symbolic links while resolving the program.
    #[error("entrypoint {path:?}: too many levels of symbolic links")]
    SymlinkLoop { path: String },
    /// The program, or a directory on the way to it, is not accessible.
    #[error("entrypoint {path:?}: permission denied")]
    PermissionDenied { path: String },
    /// The file is none of the things the wasm engine can run.
    #[error("{path}: not a wasm module, component or .wat file (starts with {header})")]
    NotWasm { path: String, header: String },
    /// The image description is invalid.
    #[error("image {name:?}: {reason}")]
    InvalidImage { name: String, reason: String },
    /// An image's manifest or layers cannot be used (the caller adds the image name).
    #[error("{0}")]
    BadManifest(String),
    /// Writing the image tarball failed.
    #[error("image {name:?}: cannot write: {}", io_message(source))]
    ImageWrite {
        name: String,
        #[source]
        source: io::Error,
    },
}

impl OciError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            OciError::Io { source, .. } => match source.kind() {
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => ErrorKind::NotFound,
                io::ErrorKind::PermissionDenied => ErrorKind::FailedPrecondition,
                io::ErrorKind::IsADirectory | io::ErrorKind::InvalidData => {
                    ErrorKind::InvalidArgument
                }
                _ => ErrorKind::Internal,
            },
            OciError::Json { .. }
            | OciError::InvalidSpec(_)
            | OciError::InvalidEntrypoint { .. }
            | OciError::IsDirectory { .. }
            | OciError::NotRegularFile { .. }
            | OciError::SymlinkLoop { .. }
            | OciError::NotWasm { .. }
            | OciError::InvalidImage { .. }
            | OciError::BadManifest(_) => ErrorKind::InvalidArgument,
            OciError::NotFound { .. } => ErrorKind::NotFound,
            OciError::PermissionDenied { .. } => ErrorKind::FailedPrecondition,
            OciError::ImageWrite { .. } => ErrorKind::Internal,
        }
    }

    /// The error for a file the engine cannot run: names the file and shows its first bytes.
    pub fn not_wasm(path: impl Into<String>, header: &[u8]) -> OciError {
        let shown: Vec<String> = header.iter().take(4).map(|b| format!("{b:02x}")).collect();
        let header = if shown.is_empty() {
            "nothing: the file is empty".to_string()
        } else {
            shown.join(" ")
        };
        OciError::NotWasm {
            path: path.into(),
            header,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, action: &'static str, source: io::Error) -> Self {
        OciError::Io {
            path: path.into(),
            action,
            source,
        }
    }
}

/// An io::Error as a user reads it: "No such file or directory", without " (os error 2)".
fn io_message(e: &io::Error) -> String {
    let text = e.to_string();
    match text.rfind(" (os error ") {
        Some(i) if text.ends_with(')') => text[..i].to_string(),
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_message_drops_os_error_suffix() {
        let e = OciError::io(
            "/b/config.json",
            "read",
            io::Error::from_raw_os_error(2), // ENOENT
        );
        assert_eq!(
            e.to_string(),
            "/b/config.json: cannot read: No such file or directory"
        );
        assert_eq!(e.kind(), ErrorKind::NotFound);
    }

    #[test]
    fn not_wasm_shows_first_bytes() {
        let e = OciError::not_wasm("/bin/app.txt", b"hello");
        assert_eq!(
            e.to_string(),
            "/bin/app.txt: not a wasm module, component or .wat file (starts with 68 65 6c 6c)"
        );
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert!(OciError::not_wasm("/e", b"").to_string().contains("empty"));
    }

    #[test]
    fn permission_denied_is_failed_precondition() {
        let e = OciError::io(
            "/x",
            "read",
            io::Error::from(io::ErrorKind::PermissionDenied),
        );
        assert_eq!(e.kind(), ErrorKind::FailedPrecondition);
        let e = OciError::PermissionDenied { path: "/x".into() };
        assert_eq!(e.kind(), ErrorKind::FailedPrecondition);
    }
}
