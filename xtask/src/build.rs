//! `cargo xtask build`: the two bare-metal release binaries.

use crate::workspace::{cargo_program, Workspace};
use anyhow::{bail, Result};
use std::path::PathBuf;
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

/// The deliberate MMU bugs the hypervisor can be built with: its cargo
/// features `inject-NAME` (see `hypervisor/src/mmu/inject.rs`).
pub fn injectable(ws: &Workspace) -> Result<Vec<String>> {
    let manifest = ws.root.join("hypervisor/Cargo.toml");
    let text = std::fs::read_to_string(&manifest)?;
    Ok(inject_features(&text))
}

fn inject_features(manifest: &str) -> Vec<String> {
    manifest
        .lines()
        .filter_map(|l| l.trim().strip_prefix("inject-"))
        .filter_map(|l| l.split_once('=').map(|(name, _)| name.trim().to_string()))
        .collect()
}

/// Builds `quadrant-hv` with the deliberate bug `bug` into
/// `<target>/inject/` and returns the binary's path.
pub fn build_injected(ws: &Workspace, bug: &str) -> Result<PathBuf> {
    let all = injectable(ws)?;
    if !all.iter().any(|b| b == bug) {
        bail!("unknown MMU bug `{bug}`; the hypervisor can be built with: {}", all.join(", "));
    }
    let target = ws.target.join("inject");
    let feature = format!("hypervisor/inject-{bug}");
    let args = ["build", "--release", "-p", "hypervisor", "--bin", "quadrant-hv", "--features", &feature];
    println!("$ CARGO_TARGET_DIR={} cargo {}", target.display(), args.join(" "));
    let st = Command::new(cargo_program()).args(args).env("CARGO_TARGET_DIR", &target).current_dir(&ws.root).status()?;
    if !st.success() {
        bail!("building the hypervisor with inject-{bug} failed ({st}); cargo's errors are above");
    }
    let p = target.join("release").join("quadrant-hv");
    if !p.is_file() {
        bail!("cargo succeeded but {} is missing", p.display());
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    #[test]
    fn inject_features_are_read_from_the_manifest() {
        let m = "[features]\n# x\ninject-key-no-level = []\n inject-a-b = [] \n[dev-dependencies]\ntest-case = \"3\"\n";
        assert_eq!(super::inject_features(m), ["key-no-level", "a-b"]);
        let real = include_str!("../../hypervisor/Cargo.toml");
        assert!(super::inject_features(real).contains(&"key-no-quadrant".to_string()));
    }
}
