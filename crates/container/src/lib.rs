//! # Layout
//! Linux isolation for the wasm shim. Every `unsafe` block of the project lives in this crate,
//! each with a `SAFETY:` note.
//! - `error`: the crate's error type, composed of each module's, and its kind (how the shim
//!   reports it).
//! - `cgroup`: cgroup v1 and v2 — create, limits, device rules (v2: an eBPF filter), stats,
//!   freeze, OOM count, destroy.
//! - `process`: spawning the container init, pidfds, signals, waiting (added by the shim work).
//! - `pty`: console sockets (the pty master runc sends) and terminal resizing.
//! - `rootfs`: mounts, pivot_root, masked paths (added by the shim work).
//! - `security`: capabilities, no_new_privs, rlimits, users, dumpable, LSM labels.
//! - `seccomp`: the spec's `linux.seccomp` as a libseccomp filter on the init.
// Every unsafe block says why it is sound (`cargo clippy` enforces it).
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod cgroup;
pub mod error;
pub mod namespaces;
pub mod process;
pub mod pty;
pub mod rootfs;
pub mod seccomp;
pub mod security;

pub use error::{ContainerError, ErrorKind};
