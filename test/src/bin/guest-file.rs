//! `guest-file NAME OUT`: writes the test guest NAME as the e2e suite makes it (`http`: the
//! `wasi:http/proxy` component; `component`: hello as a component; a Rust guest's name: its
//! module) to OUT. `make demo` uses it for the `wasi:http` function. Build the guests first
//! (`make guests`).

use anyhow::{Context, Result};
use wasm_shim_e2e::guests::Guests;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(name), Some(out)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: guest-file NAME OUT");
    };
    let guests = Guests::load()?;
    let bytes = guests.try_get(&name).with_context(|| format!("no test guest {name:?}"))?;
    std::fs::write(&out, bytes).with_context(|| out.clone())?;
    Ok(())
}
