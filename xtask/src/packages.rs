//! Host packages the boot steps need, and installing them on Debian.
//!
//! Each step asks for what it needs right before it runs. Missing pieces are
//! installed with apt-get when we are root and apt-get exists; otherwise the
//! runner prints the exact command and stops.

use anyhow::{bail, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

/// One thing a step needs and the Debian package that provides it.
#[derive(Clone, Copy, Debug)]
pub struct Need {
    /// A command on PATH, or absolute paths of which one must exist.
    pub what: What,
    /// The Debian package.
    pub package: &'static str,
}

/// How to tell that a [`Need`] is met.
#[derive(Clone, Copy, Debug)]
pub enum What {
    /// A program on PATH.
    Program(&'static str),
    /// Any of these paths exists.
    AnyPath(&'static [&'static str]),
}

impl What {
    fn met(self) -> bool {
        match self {
            What::Program(p) => find_program(p).is_some(),
            What::AnyPath(ps) => ps.iter().any(|p| Path::new(p).exists()),
        }
    }

    fn name(self) -> &'static str {
        match self {
            What::Program(p) => p,
            What::AnyPath(ps) => ps[0],
        }
    }
}

/// Bochs' system BIOS.
pub const BOCHS_BIOS: &str = "/usr/share/bochs/BIOS-bochs-latest";
/// Where the VGA BIOS may be (bochsbios' link, vgabios' file).
pub const VGA_BIOS: &[&str] = &["/usr/share/bochs/VGABIOS-lgpl-latest", "/usr/share/vgabios/vgabios.bin"];

/// Counting instructions of the host microbenchmarks (`cargo xtask bench`).
pub const VALGRIND: &[Need] = &[Need { what: What::Program("valgrind"), package: "valgrind" }];

/// Booting in Bochs: the emulator, its ROMs and a GRUB ISO toolchain.
pub const BOCHS: &[Need] = &[
    Need { what: What::Program("bochs-bin"), package: "bochs" },
    Need { what: What::AnyPath(&[BOCHS_BIOS]), package: "bochsbios" },
    Need { what: What::AnyPath(VGA_BIOS), package: "vgabios" },
    Need { what: What::Program("grub-mkrescue"), package: "grub-common" },
    Need { what: What::AnyPath(&["/usr/lib/grub/i386-pc"]), package: "grub-pc-bin" },
    Need { what: What::Program("xorriso"), package: "xorriso" },
    Need { what: What::Program("mformat"), package: "mtools" },
];

/// The rig image (`cargo xtask image`): GRUB for BIOS and for UEFI, and
/// what grub-mkrescue needs to build a hybrid image (xorriso; mtools for
/// the EFI system partition).
pub const IMAGE: &[Need] = &[
    Need { what: What::Program("grub-mkrescue"), package: "grub-common" },
    Need { what: What::AnyPath(&["/usr/lib/grub/i386-pc"]), package: "grub-pc-bin" },
    Need { what: What::AnyPath(&["/usr/lib/grub/x86_64-efi"]), package: "grub-efi-amd64-bin" },
    Need { what: What::Program("xorriso"), package: "xorriso" },
    Need { what: What::Program("mformat"), package: "mtools" },
];

/// UEFI firmware for QEMU (Debian `ovmf`; the first path that exists is used).
pub const OVMF_FIRMWARE: &[&str] = &["/usr/share/ovmf/OVMF.fd", "/usr/share/qemu/OVMF.fd"];

/// Booting the image under UEFI in QEMU.
pub const OVMF: &[Need] = &[
    Need { what: What::Program("qemu-system-x86_64"), package: "qemu-system-x86" },
    Need { what: What::AnyPath(OVMF_FIRMWARE), package: "ovmf" },
];

/// The OVMF firmware file to pass to QEMU's `-bios`.
pub fn ovmf_firmware() -> &'static str {
    OVMF_FIRMWARE.iter().copied().find(|p| Path::new(p).exists()).unwrap_or(OVMF_FIRMWARE[0])
}

/// Booting in QEMU (TCG or KVM).
pub const QEMU: &[Need] = &[Need { what: What::Program("qemu-system-x86_64"), package: "qemu-system-x86" }];

/// The VGA BIOS path to put in bochsrc.
pub fn vga_bios() -> &'static str {
    VGA_BIOS.iter().copied().find(|p| Path::new(p).exists()).unwrap_or(VGA_BIOS[0])
}

/// Finds `name` on PATH (and in the sbin directories, where Debian keeps some tools).
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata().map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

/// Whether the effective user is root (from /proc/self/status).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// The packages of `needs` that are missing, without duplicates, in order.
pub fn missing(needs: &[Need]) -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&'static str, &'static str)> = Vec::new();
    for n in needs {
        if !n.what.met() && !out.iter().any(|(p, _)| *p == n.package) {
            out.push((n.package, n.what.name()));
        }
    }
    out
}

static APT_UPDATED: AtomicBool = AtomicBool::new(false);

/// Makes sure everything in `needs` is there, installing it when we can.
pub fn ensure(needs: &[Need]) -> Result<()> {
    let miss = missing(needs);
    if miss.is_empty() {
        return Ok(());
    }
    let pkgs: Vec<&str> = miss.iter().map(|(p, _)| *p).collect();
    let detail: Vec<String> = miss.iter().map(|(p, w)| format!("{p} (for {w})")).collect();
    if !is_root() || find_program("apt-get").is_none() {
        bail!(
            "missing: {}\ninstall them with:\n    sudo apt-get install -y {}",
            detail.join(", "),
            pkgs.join(" ")
        );
    }
    println!("installing missing Debian packages: {}", detail.join(", "));
    if !APT_UPDATED.swap(true, Ordering::SeqCst) {
        apt(&["update"])?;
    }
    let mut args = vec!["install", "-y", "--no-install-recommends"];
    args.extend(&pkgs);
    apt(&args)?;
    let still = missing(needs);
    if !still.is_empty() {
        let s: Vec<String> = still.iter().map(|(p, w)| format!("{p} (for {w})")).collect();
        bail!("apt-get ran, but these are still missing: {}", s.join(", "));
    }
    Ok(())
}

fn apt(args: &[&str]) -> Result<()> {
    println!("$ apt-get {}", args.join(" "));
    let st = Command::new("apt-get").args(args).env("DEBIAN_FRONTEND", "noninteractive").status()?;
    if !st.success() {
        bail!("`apt-get {}` failed ({st})", args.join(" "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_lists_each_package_once() {
        let needs = [
            Need { what: What::Program("quadrant-no-such-tool"), package: "pkg-a" },
            Need { what: What::AnyPath(&["/quadrant/no/such/file"]), package: "pkg-a" },
            Need { what: What::AnyPath(&["/quadrant/nope", "/"]), package: "pkg-b" },
            Need { what: What::Program("sh"), package: "dash" },
        ];
        assert_eq!(missing(&needs), vec![("pkg-a", "quadrant-no-such-tool")]);
    }
}
