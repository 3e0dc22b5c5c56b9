//! The test guests: Rust programs in `test/guests` built for wasm32-wasip1, WAT files in
//! `test/guests/wat`, a component made from `hello.wasm`, and the component guests (Rust
//! programs that call WASI p2 interfaces, wrapped into components).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::process::{self, Stdin};

/// The Rust guests, one binary each in `test/guests/src/bin`.
pub const RUST_GUESTS: &[&str] = &[
    "hello",
    "stderr",
    "exit3",
    "args-env",
    "files",
    "cat",
    "spin",
    "block-read",
    "memhog",
    "sleep",
    "wagi",
    "flood",
    "exit-code",
    "escape",
];

/// Rust guests that call WASI preview 2 interfaces directly (`tcp`: `wasi:sockets`): built for
/// wasm32-wasip1 like the others, then wrapped into components with the preview1 command
/// adapter, which is the only form in which they can run. Each ends up at `/<name>.wasm`.
pub const COMPONENT_GUESTS: &[&str] = &["tcp", "config"];

/// Command guests also shipped as components (`/c-<name>.wasm`), wrapped with the preview1
/// command adapter exactly as a user's `cargo build --target wasm32-wasip1` + `wasm-tools
/// component new --adapt` makes them: the same programs run as modules and as components, and
/// the trials expect the same output and exit code from both.
pub const COMMAND_COMPONENTS: &[&str] = &["exit3", "exit-code", "args-env", "files", "cat"];

/// Codes of the `exit-with-code-<n>` components (`/exit-with-code-<n>.wasm`).
pub const EXIT_WITH_CODE: [u8; 2] = [3, 255];

/// A component (WAT) whose `wasi:cli/run` calls `wasi:cli/exit.exit-with-code(code)`, as a
/// program built for WASI 0.2.12+ says its exit code (the preview1 adapter cannot: it turns every
/// non-zero `proc_exit` into `exit(err)`, which is 1).
pub fn exit_with_code_component(code: u8) -> Result<Vec<u8>> {
    let text = format!(
        r#"(component
  (import "wasi:cli/exit@0.2.12" (instance $exit
    (export "exit-with-code" (func (param "status-code" u8)))))
  (core func $ewc (canon lower (func $exit "exit-with-code")))
  (core module $m
    (import "host" "exit-with-code" (func $ewc (param i32)))
    (func (export "run") (result i32)
      (call $ewc (i32.const {code}))
      unreachable))
  (core instance $i (instantiate $m
    (with "host" (instance (export "exit-with-code" (func $ewc))))))
  (func $run (result (result)) (canon lift (core func $i "run")))
  (instance $run-instance (export "run" (func $run)))
  (export "wasi:cli/run@0.2.12" (instance $run-instance)))"#
    );
    wat::parse_str(text).context("the exit-with-code component")
}

/// The `wasi:http/proxy` guest (`test/guests/http`, a cdylib), wrapped with the preview1 proxy
/// adapter; `http` in `Guests`.
pub const HTTP_GUEST: &str = "http_guest";

/// The WASI 0.3 guests (`test/guests/p3-cli`, `test/guests/p3-http`: cdylibs built with the
/// `wasip3` crate's bindings, async exports made by wit-bindgen), by their name in `Guests` and
/// their built module. Each is wrapped with the preview1 *reactor* adapter, as a user's
/// `cargo build --target wasm32-wasip1` + `wasm-tools component new --adapt` makes them: what
/// Rust's std calls (`println!`, a panic's message) goes through WASI 0.2, what the `wasip3`
/// bindings call is WASI 0.3, and the component exports only `wasi:cli/run@0.3.0` or
/// `wasi:http/handler@0.3.0` (the command adapter would add a 0.2 `run` of its own).
pub const P3_GUESTS: &[(&str, &str)] = &[("p3-cli", "p3_cli_guest"), ("p3-http", "p3_http_guest")];

/// `test/guests`.
pub fn guests_dir() -> PathBuf {
    crate::workspace_root().join("test").join("guests")
}

/// Where cargo puts the built guests.
pub fn wasm_out_dir() -> PathBuf {
    guests_dir()
        .join("target")
        .join("wasm32-wasip1")
        .join("release")
}

/// `cargo build --release --target wasm32-wasip1` in `test/guests` (its own target dir, so it
/// does not wait for the lock the outer `cargo test` holds). Skipped with `E2E_NO_GUEST_BUILD`.
pub fn build() -> Result<()> {
    if std::env::var_os("E2E_NO_GUEST_BUILD").is_some() {
        return Ok(());
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--release",
        "--target",
        "wasm32-wasip1",
        "--manifest-path",
    ])
    .arg(guests_dir().join("Cargo.toml"))
    .env("CARGO_TARGET_DIR", guests_dir().join("target"))
    .env_remove("RUSTFLAGS")
    .env_remove("CARGO_ENCODED_RUSTFLAGS")
    .env_remove("CARGO_BUILD_TARGET");
    let out = process::run(cmd, Stdin::Null, Duration::from_secs(600))?;
    if !out.success() {
        bail!(
            "building the guests failed (is the wasm32-wasip1 target installed? \
             `rustup target add wasm32-wasip1`): {out}"
        );
    }
    Ok(())
}

/// Every guest's bytes, by name: the Rust guests (`hello`, ...), `hello.wat` (text, for the .wat
/// entrypoint), `custom-export` and `no-start` (compiled from WAT), `component`, and the
/// component guests (`tcp`, already wrapped).
pub struct Guests {
    bytes: BTreeMap<String, Vec<u8>>,
}

impl Guests {
    /// Loads the built Rust guests and makes the others.
    pub fn load() -> Result<Guests> {
        let mut bytes = BTreeMap::new();
        for name in RUST_GUESTS {
            bytes.insert(name.to_string(), read_built(name)?);
        }
        for name in COMPONENT_GUESTS {
            let component = component_from_module(&read_built(name)?)
                .with_context(|| format!("making a component of {name}.wasm"))?;
            bytes.insert(name.to_string(), component);
        }
        for name in COMMAND_COMPONENTS {
            let component = component_from_module(&bytes[*name])
                .with_context(|| format!("making a component of {name}.wasm"))?;
            bytes.insert(format!("c-{name}"), component);
        }
        let http = proxy_component_from_module(&read_built(HTTP_GUEST)?)
            .context("making a component of http_guest.wasm")?;
        bytes.insert("http".to_string(), http);
        for (name, built) in P3_GUESTS {
            let component = reactor_component_from_module(&read_built(built)?)
                .with_context(|| format!("making a component of {built}.wasm"))?;
            bytes.insert(name.to_string(), component);
        }
        let wat_dir = guests_dir().join("wat");
        let hello_wat = wat_dir.join("hello.wat");
        let text = std::fs::read(&hello_wat).with_context(|| format!("{}", hello_wat.display()))?;
        // Check it parses here so a broken guest is not mistaken for a shim bug.
        wat::parse_bytes(&text).with_context(|| format!("{}", hello_wat.display()))?;
        bytes.insert("hello.wat".into(), text);
        for name in ["custom-export", "no-start"] {
            let path = wat_dir.join(format!("{name}.wat"));
            let module = wat::parse_file(&path).with_context(|| format!("{}", path.display()))?;
            bytes.insert(name.into(), module);
        }
        // Well-formed programs whose imports the shim does not provide.
        bytes.insert(
            "needs-import".into(),
            wat::parse_str(r#"(module (import "wasmtest" "missing" (func)) (memory (export "memory") 1) (func (export "_start")))"#)?,
        );
        bytes.insert(
            "needs-import-component".into(),
            wat::parse_str(r#"(component (import "wasmtest:missing/iface" (instance (export "f" (func)))))"#)?,
        );
        for code in EXIT_WITH_CODE {
            bytes.insert(format!("exit-with-code-{code}"), exit_with_code_component(code)?);
        }
        let component = component_from_module(&bytes["hello"])?;
        bytes.insert("component".into(), component);
        Ok(Guests { bytes })
    }

    pub fn try_get(&self, name: &str) -> Option<&[u8]> {
        self.bytes.get(name).map(Vec::as_slice)
    }

    pub fn get(&self, name: &str) -> &[u8] {
        self.bytes
            .get(name)
            .unwrap_or_else(|| panic!("no guest named {name:?}"))
    }
}

/// A built Rust guest's bytes.
fn read_built(name: &str) -> Result<Vec<u8>> {
    let path = wasm_out_dir().join(format!("{name}.wasm"));
    std::fs::read(&path).with_context(|| {
        format!(
            "{}: missing; build the guests with `cargo build --release --target wasm32-wasip1 \
             --manifest-path test/guests/Cargo.toml`",
            path.display()
        )
    })
}

/// Wraps a WASI preview 1 command module into a preview 2 component with the preview1 command
/// adapter (from `wasi-preview1-component-adapter-provider`, so nothing is downloaded).
pub fn component_from_module(module: &[u8]) -> Result<Vec<u8>> {
    with_adapter(
        module,
        wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_COMMAND_ADAPTER,
    )
}

/// Wraps a module exporting `wasi:http/incoming-handler` (a cdylib built with `wasip2`'s
/// `proxy::export!`) with the preview1 proxy adapter: a `wasi:http/proxy` component.
pub fn proxy_component_from_module(module: &[u8]) -> Result<Vec<u8>> {
    with_adapter(
        module,
        wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_PROXY_ADAPTER,
    )
}

/// Wraps a library module (a cdylib: no `_start`) whose exports are component functions, such as
/// a WASI 0.3 guest's, with the preview1 reactor adapter.
pub fn reactor_component_from_module(module: &[u8]) -> Result<Vec<u8>> {
    with_adapter(
        module,
        wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
    )
}

fn with_adapter(module: &[u8], adapter: &[u8]) -> Result<Vec<u8>> {
    use wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME;
    let component = wit_component::ComponentEncoder::default()
        .module(module)
        .context("component encoder: reading the module")?
        .adapter(WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME, adapter)
        .context("component encoder: adding the preview1 adapter")?
        .validate(true)
        .encode()
        .context("component encoder: encoding")?;
    Ok(component)
}

/// `wasm` (a core module or component binary) with a custom section `nonce` holding `nonce` appended: the
/// same program, a digest nobody compiled yet.
pub fn with_nonce(mut wasm: Vec<u8>, nonce: &str) -> Vec<u8> {
    let name = b"nonce";
    let mut payload = vec![name.len() as u8];
    payload.extend_from_slice(name);
    payload.extend_from_slice(nonce.as_bytes());
    wasm.push(0); // custom section
    let mut len = payload.len();
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            wasm.push(byte);
            break;
        }
        wasm.push(byte | 0x80);
    }
    wasm.extend_from_slice(&payload);
    wasm
}

/// A string nobody used before: `id`, this process and the time.
pub fn nonce(id: &str) -> String {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    format!("{id}-{}-{}", std::process::id(), t.as_nanos())
}
