//! `test-images OUT_DIR`: writes the e2e suite's wasm guests image (`guests.tar`, the same
//! image the suite imports) as an OCI tarball, for clusters that load images from files
//! (`kind load image-archive`, `k3d image import`). Build the guests first (`make guests`).

use anyhow::{Context, Result};
use wasm_shim_e2e::{guests::Guests, images};

fn main() -> Result<()> {
    let out = std::env::args().nth(1).context("usage: test-images OUT_DIR")?;
    std::fs::create_dir_all(&out).with_context(|| out.clone())?;
    let spec = images::guests_image(&Guests::load()?);
    let path = std::path::Path::new(&out).join("guests.tar");
    let file = std::fs::File::create(&path).with_context(|| path.display().to_string())?;
    let info = wasm_shim_oci::write_image_tar(&spec, std::io::BufWriter::new(file))?;
    println!("{} {} -> {}", info.name, info.manifest_digest, path.display());
    Ok(())
}
