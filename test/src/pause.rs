//! The pod sandbox ("pause") binary of `test/pause`, built statically for the host so it runs
//! in an image that holds nothing else.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::process::{self, Stdin};

/// `test/pause`.
pub fn pause_dir() -> PathBuf {
    crate::workspace_root().join("test").join("pause")
}

/// The host's Rust target triple for a glibc Linux (`x86_64-unknown-linux-gnu` here).
pub fn host_target() -> String {
    format!("{}-unknown-linux-gnu", std::env::consts::ARCH)
}

/// Where the build puts the binary.
pub fn binary_path() -> PathBuf {
    pause_dir()
        .join("target")
        .join(host_target())
        .join("release")
        .join("pause")
}

/// Builds `test/pause` with `-C target-feature=+crt-static` (its own target dir, so it does not
/// wait for the lock the outer `cargo test` holds), checks the result is static, returns its
/// bytes. `E2E_NO_GUEST_BUILD` skips the build (the binary must then exist).
pub fn build() -> Result<Vec<u8>> {
    if std::env::var_os("E2E_NO_GUEST_BUILD").is_none() {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--release", "--target"])
            .arg(host_target())
            .arg("--manifest-path")
            .arg(pause_dir().join("Cargo.toml"))
            .env("CARGO_TARGET_DIR", pause_dir().join("target"))
            .env("RUSTFLAGS", "-C target-feature=+crt-static")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("CARGO_BUILD_TARGET");
        let out = process::run(cmd, Stdin::Null, Duration::from_secs(600))?;
        if !out.success() {
            bail!("building the pause binary (test/pause) failed: {out}");
        }
    }
    let path = binary_path();
    let bytes = std::fs::read(&path).with_context(|| format!("{}", path.display()))?;
    if has_interpreter(&bytes)? {
        bail!(
            "{} is dynamically linked (has PT_INTERP); it must be static to run alone in an image",
            path.display()
        );
    }
    Ok(bytes)
}

/// Whether a 64-bit little-endian ELF file asks for a dynamic loader (a `PT_INTERP` header).
pub fn has_interpreter(elf: &[u8]) -> Result<bool> {
    if elf.len() < 64 || &elf[..4] != b"\x7fELF" || elf[4] != 2 || elf[5] != 1 {
        bail!("not a 64-bit little-endian ELF file");
    }
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let phentsize = u16_at(0x36);
    let phnum = u16_at(0x38);
    for i in 0..phnum {
        let o = phoff + i * phentsize;
        if o + 4 > elf.len() {
            bail!("program header {i} is past the end of the file");
        }
        const PT_INTERP: u32 = 3;
        if u32::from_le_bytes(elf[o..o + 4].try_into().unwrap()) == PT_INTERP {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_binaries_have_an_interpreter() {
        // The test binary itself is linked dynamically.
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(has_interpreter(&me).unwrap());
        assert!(has_interpreter(b"#!/bin/sh\n").is_err());
    }
}
