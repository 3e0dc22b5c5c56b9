//! End-to-end harness for `containerd-shim-wasm-v1`: a private containerd, images built with the
//! project's own `wasm-shim-oci` crate, `ctr` driven as a user would, and containerd's CRI
//! plugin driven as the kubelet would.
//!
//! Build and run (as root):
//!
//! ```text
//! cargo build --release                                   # the shim, target/release/containerd-shim-wasm-v1
//! cargo build --release --target wasm32-wasip1 --manifest-path test/guests/Cargo.toml   # guests
//! cargo test --release -p wasm-shim-e2e                   # the suite (tests/e2e.rs)
//! ```
//!
//! The suite builds the guests itself when they are missing or stale (set `E2E_NO_GUEST_BUILD=1`
//! to forbid that), but it cannot build the shim: cargo holds the workspace's target lock while
//! tests run. `SHIM_BIN=/path/to/containerd-shim-wasm-v1` overrides the shim location;
//! `E2E_KEEP=1` keeps the temp dir (containerd.log has the shim's log lines).
//!
//! # Layout
//! - [`containerd`]: [`Containerd`] starts a private containerd (own socket, root, state and log
//!   under a temp dir; a namespace and cgroup parent of this run's own; CRI plugin with runtime
//!   handlers `runc` and `wasm`, a private CNI bridge network, the harness's pause image),
//!   builds `ctr` commands against it, stops and starts it again for the fault trials, and tears
//!   everything down (pods, netns, the bridge interface, the run's cgroups).
//! - [`cri`]: [`cri::Cri`], a blocking CRI client (k8s-cri over tonic on the unix socket), the
//!   pod/container configs the kubelet sends, and the CRI log file format.
//! - [`pause`]: builds the static pod sandbox binary of `test/pause`.
//! - [`process`]: running a command with stdin bytes and a deadline ([`Output`]), or in the
//!   background while the test watches its output ([`Spawned`]).
//! - [`ctr`]: the `ctr` verbs the tests use: import, run ([`RunOpts`]), kill, pause, resume,
//!   metrics, ps, task ls, delete, and forced cleanup of a container.
//! - [`events`]: [`EventRecorder`] runs `ctr events` in the background and keeps every line
//!   (subscribing again after a containerd restart).
//! - [`leaks`]: [`Leaks`] counts what a finished task or pod must not leave: shim processes
//!   (wasm and runc), mounts, cgroups, task state dirs, containers and snapshots (both
//!   namespaces), pod netns, CNI cache entries; and finds shim servers and sockets.
//! - [`guests`]: builds the wasm32-wasip1 guests, compiles the WAT guests, and makes the
//!   component from `hello.wasm` with the preview1 command adapter.
//! - [`otlp`]: an OTLP/HTTP traces receiver that decodes what arrives with OpenTelemetry's
//!   own protobuf definitions and keeps the spans (the traces trials, the bench's sink).
//! - [`images`]: the test images (`ImageSpec`s: guests, busybox, pause) and importing them into
//!   the test namespace or `k8s.io`.

pub mod containerd;
pub mod cri;
pub mod ctr;
pub mod events;
pub mod guests;
pub mod http;
pub mod images;
pub mod leaks;
pub mod otlp;
pub mod pause;
pub mod process;

pub use containerd::Containerd;
pub use ctr::RunOpts;
pub use events::EventRecorder;
pub use leaks::Leaks;
pub use process::{Output, Spawned, Stdin};

/// The runtime type the shim registers as; containerd maps it to `containerd-shim-wasm-v1`.
pub const WASM_RUNTIME: &str = "io.containerd.wasm.v1";
/// containerd's default runtime, used for the native baseline.
pub const RUNC_RUNTIME: &str = "io.containerd.runc.v2";
/// The shim binary's file name, as containerd looks it up on PATH.
pub const SHIM_NAME: &str = "containerd-shim-wasm-v1";

/// The main workspace's root (the parent of `test/`).
pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("test/ has a parent")
        .to_path_buf()
}

/// Whether this process runs as root (the suite needs it for containerd).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
