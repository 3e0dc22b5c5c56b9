//! Reading the bundle's runtime spec.

use std::path::Path;

use oci_spec::runtime::Spec;

use crate::OciError;

/// Reads `<bundle>/config.json`. A missing file is `NotFound`; a file that is not a valid runtime
/// spec is `InvalidArgument`, naming the file and serde's line/column.
pub fn load_spec(bundle: &Path) -> Result<Spec, OciError> {
    let path = bundle.join("config.json");
    let bytes = std::fs::read(&path).map_err(|e| OciError::io(&path, "read", e))?;
    serde_json::from_slice(&bytes).map_err(|source| OciError::Json { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn missing_file_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let err = load_spec(dir.path()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        let msg = err.to_string();
        assert!(
            msg.contains("config.json: cannot read: No such file"),
            "{msg}"
        );
        assert!(msg.starts_with(dir.path().to_str().unwrap()), "{msg}");
    }

    #[test]
    fn bad_json_is_invalid_argument() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), "{ \"ociVersion\": ").unwrap();
        let err = load_spec(dir.path()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        let msg = err.to_string();
        assert!(msg.contains("config.json: invalid JSON: "), "{msg}");
        assert!(msg.contains("line 1"), "{msg}");
        assert!(!msg.contains('\n'));
    }

    #[test]
    fn good_spec_loads() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},
                "process":{"args":["/hello.wasm","x"],"cwd":"/","user":{"uid":0,"gid":0}}}"#,
        )
        .unwrap();
        let spec = load_spec(dir.path()).unwrap();
        assert_eq!(spec.version(), "1.0.2");
        assert_eq!(spec.root().as_ref().unwrap().path(), Path::new("rootfs"));
        let args = spec.process().as_ref().unwrap().args().clone().unwrap();
        assert_eq!(args, vec!["/hello.wasm", "x"]);
    }
}
