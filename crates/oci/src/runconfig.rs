//! The spec's `process`, checked and flattened into what the engine and init need.

use oci_spec::runtime::Spec;

use crate::{parse_entrypoint, Entrypoint, OciError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunConfig {
    /// Arguments for the guest: args[0] without its `#export` suffix, then args[1..].
    pub args: Vec<String>,
    /// Environment in spec order, split at the first '='.
    pub env: Vec<(String, String)>,
    /// Absolute working directory inside the container.
    pub cwd: String,
    pub entrypoint: Entrypoint,
    /// The value of PATH in `env`, if set (the last one wins).
    pub path_env: Option<String>,
    pub uid: u32,
    pub gid: u32,
    pub terminal: bool,
}

/// Reads and checks `spec.process` (and that `spec.root` is present).
pub fn run_config(spec: &Spec) -> Result<RunConfig, OciError> {
    let invalid = |msg: String| OciError::InvalidSpec(msg);
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| invalid("process is missing".into()))?;
    if spec.root().is_none() {
        return Err(invalid("root is missing".into()));
    }

    let spec_args = process.args().as_deref().unwrap_or_default();
    let Some(arg0) = spec_args.first() else {
        return Err(invalid("process.args is empty".into()));
    };
    let entrypoint = parse_entrypoint(arg0)?;
    let mut args = Vec::with_capacity(spec_args.len());
    args.push(entrypoint.path.clone());
    args.extend(spec_args[1..].iter().cloned());

    let mut env = Vec::new();
    for entry in process.env().as_deref().unwrap_or_default() {
        match entry.split_once('=') {
            Some((name, value)) if !name.is_empty() => {
                env.push((name.to_string(), value.to_string()))
            }
            Some(_) => {
                return Err(invalid(format!(
                    "process.env entry {entry:?}: empty variable name"
                )))
            }
            None => {
                return Err(invalid(format!(
                    "process.env entry {entry:?}: missing '=' (expected NAME=value)"
                )))
            }
        }
    }
    let path_env = env
        .iter()
        .rev()
        .find(|(name, _)| name == "PATH")
        .map(|(_, value)| value.clone());

    let cwd = process.cwd();
    let cwd = match cwd.to_str() {
        Some("") => "/".to_string(),
        Some(c) if c.starts_with('/') => c.to_string(),
        _ => {
            return Err(invalid(format!(
                "process.cwd {:?}: not an absolute path",
                cwd.display().to_string()
            )))
        }
    };

    Ok(RunConfig {
        args,
        env,
        cwd,
        entrypoint,
        path_env,
        uid: process.user().uid(),
        gid: process.user().gid(),
        terminal: process.terminal().unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn spec(process: &str) -> Spec {
        let json =
            format!(r#"{{"ociVersion":"1.0.2","root":{{"path":"rootfs"}},"process":{process}}}"#);
        serde_json::from_str(&json).unwrap()
    }

    #[test]
    fn good_spec() {
        let s = spec(
            r#"{"args":["/app/hello.wasm","a","b"],"env":["PATH=/bin","X=1=2","EMPTY=","PATH=/usr/bin"],
                "cwd":"/app","user":{"uid":1000,"gid":100},"terminal":true}"#,
        );
        let rc = run_config(&s).unwrap();
        assert_eq!(rc.args, vec!["/app/hello.wasm", "a", "b"]);
        assert_eq!(rc.entrypoint.path, "/app/hello.wasm");
        assert_eq!(rc.entrypoint.export, None);
        assert_eq!(rc.env[1], ("X".to_string(), "1=2".to_string()));
        assert_eq!(rc.env[2], ("EMPTY".to_string(), String::new()));
        assert_eq!(rc.path_env.as_deref(), Some("/usr/bin"));
        assert_eq!(rc.cwd, "/app");
        assert_eq!((rc.uid, rc.gid, rc.terminal), (1000, 100, true));
    }

    #[test]
    fn defaults() {
        let rc = run_config(&spec(r#"{"args":["hello.wasm"],"cwd":"","user":{}}"#)).unwrap();
        assert_eq!(rc.cwd, "/");
        assert_eq!(rc.path_env, None);
        assert!(rc.env.is_empty());
        assert_eq!((rc.uid, rc.gid, rc.terminal), (0, 0, false));
    }

    #[test]
    fn export_suffix_is_stripped_from_args0() {
        let rc = run_config(&spec(
            r#"{"args":["lib.wasm#serve","8080"],"cwd":"/","user":{}}"#,
        ))
        .unwrap();
        assert_eq!(rc.args, vec!["lib.wasm", "8080"]);
        assert_eq!(rc.entrypoint.export.as_deref(), Some("serve"));
    }

    fn err(process: &str) -> OciError {
        let e = run_config(&spec(process)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
        e
    }

    #[test]
    fn empty_args() {
        assert_eq!(
            err(r#"{"args":[],"cwd":"/","user":{}}"#).to_string(),
            "process.args is empty"
        );
        assert_eq!(
            err(r#"{"cwd":"/","user":{}}"#).to_string(),
            "process.args is empty"
        );
    }

    #[test]
    fn env_without_equals() {
        let e = err(r#"{"args":["a.wasm"],"env":["A=1","JUSTNAME"],"cwd":"/","user":{}}"#);
        assert!(
            e.to_string()
                .starts_with("process.env entry \"JUSTNAME\": missing '='"),
            "{e}"
        );
        let e = err(r#"{"args":["a.wasm"],"env":["=x"],"cwd":"/","user":{}}"#);
        assert!(e.to_string().contains("\"=x\""), "{e}");
    }

    #[test]
    fn relative_cwd() {
        let e = err(r#"{"args":["a.wasm"],"cwd":"app","user":{}}"#);
        assert_eq!(e.to_string(), "process.cwd \"app\": not an absolute path");
    }

    #[test]
    fn bad_entrypoint() {
        let e = err(r#"{"args":["a.wasm#"],"cwd":"/","user":{}}"#);
        assert!(e.to_string().starts_with("entrypoint \"a.wasm#\""), "{e}");
    }

    #[test]
    fn missing_process_or_root() {
        let s: Spec =
            serde_json::from_str(r#"{"ociVersion":"1.0.2","root":{"path":"r"}}"#).unwrap();
        let e = run_config(&s).unwrap_err();
        assert_eq!(e.to_string(), "process is missing");
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        let s: Spec = serde_json::from_str(
            r#"{"ociVersion":"1.0.2","process":{"args":["a"],"cwd":"/","user":{}}}"#,
        )
        .unwrap();
        assert_eq!(run_config(&s).unwrap_err().to_string(), "root is missing");
    }
}
