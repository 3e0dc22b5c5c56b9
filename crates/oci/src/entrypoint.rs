//! `args[0]` of a wasm container: `path` or `path#export`, where `export` names the function
//! to call instead of the module's default (`_start`).

use crate::OciError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entrypoint {
    /// The program as written in args[0], without the `#export` suffix.
    pub path: String,
    /// The export to call, if args[0] named one.
    pub export: Option<String>,
}

/// Splits `file.wasm#export`. An empty path, an empty export after `#`, or more than one `#`
/// is `InvalidArgument`.
pub fn parse_entrypoint(arg0: &str) -> Result<Entrypoint, OciError> {
    let bad = |reason| OciError::InvalidEntrypoint {
        value: arg0.to_string(),
        reason,
    };
    let mut parts = arg0.split('#');
    let path = parts.next().unwrap_or_default();
    let export = parts.next();
    if parts.next().is_some() {
        return Err(bad("more than one '#'"));
    }
    if path.is_empty() {
        return Err(bad("empty path"));
    }
    if export == Some("") {
        return Err(bad("empty export name after '#'"));
    }
    Ok(Entrypoint {
        path: path.to_string(),
        export: export.map(str::to_string),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn path_only() {
        let e = parse_entrypoint("/app/hello.wasm").unwrap();
        assert_eq!(e.path, "/app/hello.wasm");
        assert_eq!(e.export, None);
    }

    #[test]
    fn path_and_export() {
        let e = parse_entrypoint("hello.wasm#run").unwrap();
        assert_eq!(e.path, "hello.wasm");
        assert_eq!(e.export.as_deref(), Some("run"));
    }

    #[test]
    fn bad_entrypoints() {
        for (arg, reason) in [
            ("", "empty path"),
            ("#run", "empty path"),
            ("a.wasm#", "empty export"),
            ("a.wasm#x#y", "more than one '#'"),
        ] {
            let err = parse_entrypoint(arg).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{arg}");
            let msg = err.to_string();
            assert!(msg.contains(reason), "{arg}: {msg}");
            assert!(msg.starts_with(&format!("entrypoint {arg:?}")), "{msg}");
        }
    }
}
