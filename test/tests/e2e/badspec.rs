//! `wasm::bad_spec_*`: a broken runtime spec (`config.json`) reaching the shim. The container is
//! created through containerd's Containers API with the spec bytes as given, and its task
//! through the Tasks API (containerd writes the bytes to the bundle unchecked; `ctr task start`
//! would parse the spec itself first, and panics on one without `process`). Create must fail
//! with a message naming the cause (and the field or file), and nothing may be left (the
//! harness checks). Also a module larger than the shim accepts, through `ctr run`.

use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::{json, Value};
use wasm_shim_e2e::ctr::{ensure, line_with};
use wasm_shim_e2e::images::{self, GUESTS_IMAGE};
use wasm_shim_e2e::{guests, leaks, RunOpts, SHIM_NAME};
use wasm_shim_oci::ImageFile;

use super::artifact::{cleanup, create_with_spec};
use super::Ctx;

/// How a good spec is broken.
#[derive(Clone, Copy)]
pub enum Break {
    /// The spec's bytes cut in the middle.
    Truncate,
    /// A change to the JSON.
    Edit(fn(&mut Value)),
}

/// Tasks.Create for container `id` (no stdio), as any containerd client does it; the gRPC
/// status on failure.
fn create_task(cx: &Ctx, id: &str) -> Result<Result<(), String>> {
    use containerd_client::services::v1::{tasks_client::TasksClient, CreateTaskRequest};
    use containerd_client::tonic::Request;
    use containerd_client::with_namespace;
    let (socket, namespace) = (cx.cd.socket.clone(), cx.cd.namespace.clone());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let channel = containerd_client::connect(&socket).await?;
        let req = CreateTaskRequest { container_id: id.to_string(), ..Default::default() };
        Ok(match TasksClient::new(channel).create(with_namespace!(req, namespace)).await {
            Ok(_) => Ok(()),
            Err(status) => Err(format!("{:?}: {}", status.code(), status.message())),
        })
    })
}

/// The spec of a container running `/hello.wasm` from a rootfs directory, broken as `how`;
/// creating its task must fail with a message containing every one of `needles`.
pub fn bad_spec(cx: &Ctx, id: &str, how: Break, needles: &[&str]) -> Result<()> {
    let rootfs = cx.cd.dir.join(format!("rootfs-{id}"));
    let g = guests::Guests::load()?;
    images::write_rootfs(&[ImageFile::new("/hello.wasm", g.get("hello"), 0o755)], &rootfs)?;
    let path = images::config_spec(&cx.cd, id, &rootfs, &["/hello.wasm"], json!({}))?;
    let good = std::fs::read(&path)?;
    let spec = match how {
        Break::Truncate => good[..good.len() / 2].to_vec(),
        Break::Edit(f) => {
            let mut v: Value = serde_json::from_slice(&good)?;
            f(&mut v);
            serde_json::to_vec_pretty(&v)?
        }
    };
    create_with_spec(cx, id, GUESTS_IMAGE, spec)?;
    let t = Instant::now();
    let created = create_task(cx, id);
    let took = t.elapsed();
    cleanup(cx, id);
    if let Break::Truncate = how {
        // containerd 1.6.20 makes the bundle directory, then fails to parse the spec and leaves
        // the directory (empty) behind: its leak, not the shim's (which never started).
        let bundle = cx.cd.task_state_dir().join(id);
        if std::fs::remove_dir(&bundle).is_ok() {
            println!("  containerd left its empty bundle directory {} (removed)", bundle.display());
        }
    }
    let _ = std::fs::remove_dir_all(&rootfs);
    if let Ok(Err(m)) = &created {
        if m.contains("failed to validate OCI runtime features") {
            // containerd 2.x starts the shim, then unmarshals the spec itself and returns its
            // error without shutting the shim down (core/runtime/v2/task_manager.go, Create:
            // runc's shim is left the same way). Its leak, not the shim's: stopped here.
            let shims: Vec<u32> = leaks::shim_daemons(&cx.cd.socket, SHIM_NAME).into_iter().filter(|d| d.id == id).map(|d| d.pid).collect();
            leaks::kill_pids(&shims);
            let _ = std::fs::remove_file(leaks::shim_socket(&cx.cd.socket, &cx.cd.namespace, id));
            println!("  containerd left the shim it started running ({shims:?}, stopped)");
        }
    }
    let message = match created? {
        Ok(()) => anyhow::bail!("the task was created"),
        Err(m) => m,
    };
    println!("  after {took:.2?}: {message}");
    ensure(needles.iter().all(|n| message.contains(n)), || format!("the message does not name all of {needles:?}"))?;
    ensure(took < Duration::from_secs(10), || format!("took {took:?} to fail"))
}

/// The cases: (trial name, container id, how the spec is broken, what the message must name).
pub fn cases() -> Vec<(&'static str, &'static str, Break, &'static [&'static str])> {
    let v2 = wasm_shim_e2e::containerd::containerd_major() >= 2;
    vec![
        // containerd parses the spec itself before it starts the shim: its own message (1.6
        // says it could not start the shim, 2.x only the parse error).
        ("bad_spec_malformed_json", "w-spec-json", Break::Truncate, if v2 { &["unexpected end of JSON input"] } else { &["failed to start shim", "unexpected end of JSON input"] }),
        ("bad_spec_args_empty", "w-spec-noargs", Break::Edit(|s| s["process"]["args"] = json!([])), &["process.args", "empty"]),
        // 2.x unmarshals the spec before the shim sees it: its words, naming the field.
        ("bad_spec_args_not_a_list", "w-spec-argstr", Break::Edit(|s| s["process"]["args"] = json!("/hello.wasm")), if v2 { &["process.args", "cannot unmarshal string"] } else { &["config.json", "args"] }),
        ("bad_spec_env_without_equals", "w-spec-env", Break::Edit(|s| s["process"]["env"] = json!(["PATH=/", "JUSTANAME"])), &["process.env", "JUSTANAME", "missing '='"]),
        ("bad_spec_env_empty_name", "w-spec-envname", Break::Edit(|s| s["process"]["env"] = json!(["=value"])), &["process.env", "empty variable name"]),
        ("bad_spec_no_root", "w-spec-noroot", Break::Edit(|s| drop(s.as_object_mut().unwrap().remove("root"))), &["root", "missing"]),
        ("bad_spec_root_missing_dir", "w-spec-rootdir", Break::Edit(|s| s["root"]["path"] = json!("/nonexistent/rootfs")), &["/nonexistent/rootfs"]),
        ("bad_spec_no_process", "w-spec-noproc", Break::Edit(|s| drop(s.as_object_mut().unwrap().remove("process"))), &["process", "missing"]),
        ("bad_spec_relative_cwd", "w-spec-cwd", Break::Edit(|s| s["process"]["cwd"] = json!("work")), &["process.cwd", "work", "absolute"]),
        ("bad_spec_no_mount_namespace", "w-spec-nons", Break::Edit(|s| s["linux"]["namespaces"] = json!([{"type": "pid"}])), &["mount namespace"]),
    ]
}

/// A module bigger than the shim's cap (`WASM_SHIM_MAX_MODULE_SIZE`, 256 MiB by default): a
/// sparse 300 MiB file that starts like wasm. Refused at Create, promptly, naming the file and
/// the cap, without reading it.
pub fn huge_module(cx: &Ctx) -> Result<()> {
    let id = "w-huge";
    let rootfs = cx.cd.dir.join(format!("rootfs-{id}"));
    images::write_rootfs(&[ImageFile::new("/huge.wasm", b"\0asm\x01\0\0\0".to_vec(), 0o755)], &rootfs)?;
    std::fs::OpenOptions::new().write(true).open(rootfs.join("huge.wasm"))?.set_len(300 << 20)?;
    let spec = images::config_spec(&cx.cd, id, &rootfs, &["/huge.wasm"], json!({}))?;
    let out = cx.cd.run(&RunOpts::wasm("", id).config(&spec).timeout(Duration::from_secs(60)));
    let _ = std::fs::remove_dir_all(&rootfs);
    let out = out?;
    ensure(!out.success() && !out.timed_out, || format!("expected `ctr run` to fail: {out}"))?;
    let line = line_with(&out.stderr, &["/huge.wasm", "300 MiB", "256 MiB"]).map_err(|e| anyhow::anyhow!("{e}: {out}"))?;
    println!("  after {:.2?}: {}", out.duration, line.trim());
    ensure(out.duration < Duration::from_secs(5), || format!("took {:?} to refuse", out.duration))
}
