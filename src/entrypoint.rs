//! What a container's entrypoint is, asked once per Create: native (the pod's sandbox, or an
//! ELF or `#!` file of the rootfs: handed to runc), a file of the rootfs that the wasm init
//! reads, or not in the rootfs (it may be a wasm layer of the image, a wasm OCI artifact).

use std::path::Path;

use oci_spec::runtime::Spec;
use wasm_shim_oci::{classify, ErrorKind, Kind};

/// The annotation the CRI sets on every container of a pod.
pub const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";

#[derive(Debug, PartialEq, Eq)]
pub enum Entrypoint {
    /// Run by runc: the CRI's pod sandbox, or a program that starts with an ELF or `#!` header.
    Native,
    /// For the wasm init, which reads it from the rootfs and reports its own precise errors: a
    /// file of the rootfs that is not native (wasm, or not runnable at all), or a spec whose
    /// entrypoint cannot be looked up here.
    InRootfs,
    /// Not in the rootfs (nor on its `PATH`): `path` may name a wasm layer of the image; if not,
    /// a volume may provide it, or the init reports it missing.
    NotInRootfs { path: String },
}

/// Looks the entrypoint up in `rootfs` the way the init would, once.
pub fn inspect(spec: &Spec, rootfs: &Path) -> Entrypoint {
    let sandbox = spec.annotations().as_ref().and_then(|a| a.get(CONTAINER_TYPE)).is_some_and(|t| t == "sandbox");
    if sandbox {
        return Entrypoint::Native;
    }
    let Ok(rc) = wasm_shim_oci::run_config(spec) else { return Entrypoint::InRootfs };
    let path = match wasm_shim_oci::resolve_executable(rootfs, &rc.entrypoint.path, rc.path_env.as_deref(), &rc.cwd) {
        Ok(path) => path,
        Err(e) if e.kind() == ErrorKind::NotFound => return Entrypoint::NotInRootfs { path: rc.entrypoint.path },
        Err(_) => return Entrypoint::InRootfs,
    };
    let mut header = vec![0u8; wasm_shim_oci::classify::HEADER_LEN];
    let n = std::fs::File::open(&path).and_then(|mut f| read_up_to(&mut f, &mut header)).unwrap_or(0);
    match classify(&header[..n], &path.display().to_string()) {
        Kind::Elf | Kind::Script => Entrypoint::Native,
        _ => Entrypoint::InRootfs,
    }
}

fn read_up_to(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    use std::io::Read;
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_and_elf_are_native_wasm_is_not_a_missing_file_may_be_an_artifact() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::write(root.join("bin/app"), b"\x7fELF\x02\x01\x01rest").unwrap();
        std::fs::write(root.join("app.wasm"), b"\0asm\x01\0\0\0").unwrap();
        std::fs::write(root.join("run.sh"), b"#!/bin/sh\necho hi\n").unwrap();
        std::fs::create_dir_all(root.join("dir.wasm")).unwrap();
        let spec = |arg0: &str, sandbox: bool| {
            let mut json = serde_json::json!({
                "ociVersion": "1.0.2",
                "process": {"args": [arg0], "cwd": "/", "env": ["PATH=/bin"], "user": {"uid": 0, "gid": 0}},
                "root": {"path": "rootfs"}
            });
            if sandbox {
                json["annotations"] = serde_json::json!({CONTAINER_TYPE: "sandbox"});
            }
            serde_json::from_value::<Spec>(json).unwrap()
        };
        assert_eq!(inspect(&spec("app", false), root), Entrypoint::Native);
        assert_eq!(inspect(&spec("/bin/app", false), root), Entrypoint::Native);
        assert_eq!(inspect(&spec("/run.sh", false), root), Entrypoint::Native);
        assert_eq!(inspect(&spec("/app.wasm", false), root), Entrypoint::InRootfs);
        assert_eq!(inspect(&spec("/missing", false), root), Entrypoint::NotInRootfs { path: "/missing".into() });
        assert_eq!(inspect(&spec("/app.wasm#run", false), root), Entrypoint::InRootfs);
        assert_eq!(inspect(&spec("/missing.wasm#run", false), root), Entrypoint::NotInRootfs { path: "/missing.wasm".into() });
        // A directory is the init's to report (InvalidArgument), not an artifact to look for.
        assert_eq!(inspect(&spec("/dir.wasm", false), root), Entrypoint::InRootfs);
        assert_eq!(inspect(&spec("/app.wasm", true), root), Entrypoint::Native);
        assert_eq!(inspect(&spec("/missing", true), root), Entrypoint::Native);
    }
}
