//! `cargo xtask build`: the two bare-metal release binaries.

use crate::workspace::{cargo_program, Workspace};
use anyhow::{bail, Result};
use std::process::Command;

/// Builds `quadrant-hv` and `quadrant-guest` in release mode. Cargo's own
/// output (and errors) go straight to the terminal.
pub fn build(ws: &Workspace) -> Result<()> {
    let args = [
        "build",
        "--release",
        "-p",
        "hypervisor",
        "--bin",
        "quadrant-hv",
        "-p",
        "guest-unikernel",
        "--bin",
        "quadrant-guest",
    ];
    println!("$ cargo {}", args.join(" "));
    let st = Command::new(cargo_program()).args(args).current_dir(&ws.root).status()?;
    if !st.success() {
        bail!("building the hypervisor and the guest failed ({st}); cargo's errors are above");
    }
    for b in ["quadrant-hv", "quadrant-guest"] {
        let p = ws.release_bin(b);
        if !p.is_file() {
            bail!("cargo succeeded but {} is missing", p.display());
        }
    }
    Ok(())
}
