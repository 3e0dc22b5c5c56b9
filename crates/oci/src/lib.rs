//! The parsing side of the wasm shim: what a bundle asks to run, and how wasm images are built.
//!
//! Nothing here starts wasmtime or touches namespaces; the only system calls are the ones needed
//! to read files (`open`, `read`, `lstat`, `readlink`). Every error is an [`OciError`] whose
//! message is one line naming the path or value at fault, and whose [`OciError::kind`] tells the
//! shim which ttrpc status code to answer with.
//!
//! # Layout
//! - [`error`]: [`OciError`] and [`ErrorKind`] (NotFound, InvalidArgument, FailedPrecondition,
//!   Internal).
//! - [`spec`]: [`load_spec`] reads `<bundle>/config.json` into an `oci_spec::runtime::Spec`.
//! - [`entrypoint`]: [`parse_entrypoint`] splits `file.wasm#export` into path and export.
//! - [`runconfig`]: [`run_config`] turns the spec's `process` into a checked [`RunConfig`]
//!   (args, env, cwd, user, terminal, entrypoint).
//! - [`http`]: [`http_config`] reads the `wasm.containerd.io/http-*` annotations (and `PORT`)
//!   into an [`HttpConfig`]: serve mode, port, limits, outbound allow-list.
//! - [`debug`]: [`workload_config`] reads `wasm.containerd.io/wasm-features` and the core
//!   dump annotations (`coredump-dir`, `coredump-max-size`) into a [`WorkloadConfig`].
//! - [`resolve`]: [`resolve_executable`] finds `args[0]` inside the container rootfs the way
//!   `execvp` would (PATH search, symlinks resolved inside the root).
//! - [`classify`]: [`classify`] tells a wasm module, a component, WAT text, an ELF binary and a
//!   script apart from a file's first bytes.
//! - [`image`]: [`write_image_tar`] writes an OCI image layout tarball (classic rootfs image or
//!   wasm OCI artifact) that `ctr image import` and `nerdctl load` accept, byte-for-byte
//!   deterministic.
//! - [`artifact`]: wasm OCI artifacts: which manifest of an index and which layer of a manifest
//!   is the program (wasm media types), and checking blobs against their digests.
//! - [`layers`]: a classic image's program found in its layer tarballs without unpacking them
//!   (merged view with whiteouts and symlinks), for compiling it before any container exists.
//! - `bin/wasm-image.rs`: the `wasm-image build` command line over [`image`].
#![forbid(unsafe_code)]

pub mod artifact;
pub mod classify;
pub mod debug;
pub mod entrypoint;
pub mod error;
pub mod http;
pub mod image;
pub mod layers;
pub mod resolve;
pub mod runconfig;
pub mod size;
pub mod spec;

pub use classify::{classify, Kind};
pub use debug::{workload_config, CoreDumpConfig, WorkloadConfig};
pub use entrypoint::{parse_entrypoint, Entrypoint};
pub use error::{ErrorKind, OciError};
pub use http::{http_config, HttpConfig, ServeMode};
pub use image::{
    host_architecture, write_image_tar, ArtifactConfig, ImageFile, ImageInfo, ImageSpec, Style,
    WASM_CONFIG_MEDIA_TYPE, WASM_LAYER_MEDIA_TYPE,
};
pub use resolve::{resolve_executable, DEFAULT_PATH};
pub use runconfig::{run_config, RunConfig};
pub use size::{parse_size, SIZE_GRAMMAR};
pub use spec::load_spec;
