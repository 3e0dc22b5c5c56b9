//! The crate's error type: one line per failure, naming the file and the cause.

/// Why a workload could not be prepared (or the engine could not be built).
///
/// Every message names the file the shim was asked to run, so that `ctr` and
/// `kubectl describe` show something a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The bytes are not a valid core module, component or WAT text.
    #[error("{file}: invalid wasm: {cause}")]
    InvalidWasm { file: String, cause: String },

    /// The export to call does not exist.
    #[error("{file}: export \"{export}\" not found (exports: {})", list(.available))]
    ExportNotFound {
        file: String,
        export: String,
        available: Vec<String>,
    },

    /// The export exists but cannot be called as an entry point.
    #[error("{file}: export \"{export}\" cannot be run: {reason}")]
    BadExport {
        file: String,
        export: String,
        reason: String,
    },

    /// An import the shim does not provide (or provides with another type).
    #[error("{file}: import {import} is not provided by this shim{}", suffix(.detail))]
    UnsatisfiedImport {
        file: String,
        import: String,
        detail: Option<String>,
    },

    /// The workload cannot be served the way the container asks.
    #[error("{file}: cannot serve HTTP: {reason}")]
    NotServable { file: String, reason: String },

    /// Linking failed for a reason not tied to one import.
    #[error("{file}: cannot link: {cause}")]
    Link { file: String, cause: String },

    /// Compilation failed although the input validated (a compiler limit or bug).
    #[error("{file}: compilation failed: {cause}")]
    Compile { file: String, cause: String },

    /// The compile cache could not be used (a read-only or full disk, ...).
    #[error("compile cache {0}")]
    Cache(String),

    /// The wasm features asked for cannot be had (wasmtime refuses them).
    #[error("{0}")]
    Features(String),

    /// wasmtime itself could not be configured or set up.
    #[error("wasm engine: {0}")]
    Internal(String),
}

impl EngineError {
    /// True when the workload is at fault (bad module, bad export, unsatisfied
    /// import), false for a failure of the shim or the machine.
    pub fn is_invalid_input(&self) -> bool {
        match self {
            EngineError::InvalidWasm { .. }
            | EngineError::ExportNotFound { .. }
            | EngineError::BadExport { .. }
            | EngineError::UnsatisfiedImport { .. }
            | EngineError::NotServable { .. }
            | EngineError::Link { .. }
            | EngineError::Features(_) => true,
            EngineError::Compile { .. } | EngineError::Cache(_) | EngineError::Internal(_) => false,
        }
    }
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}

fn suffix(detail: &Option<String>) -> String {
    match detail {
        Some(d) => format!(" ({d})"),
        None => String::new(),
    }
}

/// Renders a wasmtime error chain on one line: "outer: inner: root".
pub(crate) fn one_line(err: &wasmtime::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in err.chain() {
        let text = cause.to_string();
        // Backtraces are contexts too; they are multi-line and belong in logs.
        if text.starts_with("error while executing at wasm backtrace") {
            continue;
        }
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        if !text.is_empty() && !parts.iter().any(|p| p == &text) {
            parts.push(text);
        }
    }
    parts.join(": ")
}
