//! Boot media: what boots with which command line, as a GRUB ISO for Bochs
//! and as `-kernel`/`-append`/`-initrd` for QEMU's Multiboot loader.
//!
//! Under the hypervisor the guest is a Multiboot module whose string starts
//! with a name word (GRUB: the word after the file; QEMU: the module's path),
//! then the guest's arguments, so the hypervisor skips the first word either way.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The kernel (and optional guest module) of one boot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Media {
    /// The Multiboot kernel: the hypervisor, or the guest on a bare run.
    pub kernel: PathBuf,
    /// Its command line (without the path word).
    pub kernel_args: String,
    /// Under the hypervisor: the guest image and its arguments.
    pub module: Option<Module>,
}

/// The guest, loaded as a Multiboot module.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Module {
    /// Image file.
    pub path: PathBuf,
    /// Its name word in the GRUB module string.
    pub name: String,
    /// The guest's arguments.
    pub args: String,
}

/// Rejects argument text that GRUB's or QEMU's parsers would change.
pub fn check_args(what: &str, args: &str) -> Result<()> {
    if let Some(c) = args.chars().find(|c| !(c.is_ascii_graphic() || *c == ' ') || "\"'\\$;|&{}#<>`".contains(*c)) {
        bail!("{what} {args:?}: the character {c:?} is not allowed (use letters, digits, spaces and =._-/:+,@%)");
    }
    Ok(())
}

/// Joins argument words, dropping empty ones.
pub fn join_args(parts: &[&str]) -> String {
    parts.iter().map(|s| s.trim()).filter(|s| !s.is_empty()).collect::<Vec<_>>().join(" ")
}

/// The path the kernel has inside the ISO.
fn iso_kernel_path(m: &Media) -> &'static str {
    if m.module.is_some() {
        "/boot/quadrant-hv"
    } else {
        "/boot/quadrant-guest"
    }
}

/// `boot/grub/grub.cfg` of the ISO.
///
/// GRUB also writes to COM1, so its errors (say, no Multiboot header) land
/// in serial.log; if the entry cannot boot, it says so and ends Bochs through
/// the shutdown port (exit 1) instead of waiting for a key until the timeout.
pub fn grub_cfg(m: &Media) -> String {
    let mut s = String::from(
        "serial --unit=0 --speed=115200\nterminal_output serial console\n\
         set timeout=0\nset timeout_style=hidden\nset default=0\n",
    );
    let title = if m.module.is_some() { "Quadrant: hypervisor + guest" } else { "Quadrant: bare guest" };
    s += &format!("menuentry \"{title}\" {{\n");
    s += &format!("  multiboot {}", iso_kernel_path(m));
    if !m.kernel_args.is_empty() {
        s += &format!(" {}", m.kernel_args);
    }
    s += "\n";
    if let Some(g) = &m.module {
        s += &format!("  module /boot/quadrant-guest {}", g.name);
        if !g.args.is_empty() {
            s += &format!(" {}", g.args);
        }
        s += "\n";
    }
    s += &boot_or_stop("  ");
    s += "}\n";
    s
}

/// The end of a GRUB menu entry: `boot`, and if that returns (GRUB could
/// not load the kernel) say so and stop Bochs through its shutdown port
/// (harmless elsewhere) instead of waiting for a key until the timeout.
pub fn boot_or_stop(indent: &str) -> String {
    let mut s = format!("{indent}boot\n");
    s += &format!("{indent}echo \"grub: could not boot the kernel (GRUB's error is above); stopping Bochs\"\n");
    s += &format!("{indent}insmod iorw\n");
    for b in shared::ports::BOCHS_SHUTDOWN_WORD {
        s += &format!("{indent}outb {:#x} {:#x}\n", shared::ports::BOCHS_SHUTDOWN, b);
    }
    s
}

/// Runs `grub-mkrescue -o out root`; its output goes to `log`.
pub fn grub_mkrescue(root: &Path, out: &Path, log: &Path) -> Result<()> {
    let f = std::fs::File::create(log)?;
    let st = Command::new("grub-mkrescue")
        .arg("-o")
        .arg(out)
        .arg(root)
        .stdout(f.try_clone()?)
        .stderr(f)
        .status()
        .context("starting grub-mkrescue")?;
    if !st.success() {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        bail!("grub-mkrescue failed ({st}); its output ({}):\n{text}", log.display());
    }
    Ok(())
}

/// Builds `<run>/boot.iso` from `<run>/iso/` with grub-mkrescue; its output
/// goes to `<run>/grub-mkrescue.log`.
pub fn make_iso(run: &Path, m: &Media) -> Result<PathBuf> {
    let root = run.join("iso");
    let boot = root.join("boot");
    std::fs::create_dir_all(boot.join("grub"))?;
    let copy = |from: &Path, to: &str| {
        std::fs::copy(from, root.join(to.trim_start_matches('/')))
            .with_context(|| format!("copying {} into the ISO tree", from.display()))
    };
    copy(&m.kernel, iso_kernel_path(m))?;
    if let Some(g) = &m.module {
        copy(&g.path, "/boot/quadrant-guest")?;
    }
    std::fs::write(boot.join("grub/grub.cfg"), grub_cfg(m))?;
    let iso = run.join("boot.iso");
    grub_mkrescue(&root, &iso, &run.join("grub-mkrescue.log"))?;
    Ok(iso)
}

/// QEMU's boot arguments: `-kernel`, `-append` and for the hypervisor `-initrd`.
pub fn qemu_boot_args(m: &Media) -> Vec<String> {
    let mut a = vec!["-kernel".to_string(), m.kernel.to_string_lossy().into_owned()];
    a.extend(["-append".to_string(), m.kernel_args.clone()]);
    if let Some(g) = &m.module {
        // Modules are comma-separated, each "path args"; a literal comma is ",,".
        let module = join_args(&[&g.path.to_string_lossy(), &g.args]);
        a.extend(["-initrd".to_string(), module.replace(',', ",,")]);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hv() -> Media {
        Media {
            kernel: "/t/release/quadrant-hv".into(),
            kernel_args: "mmu=shadow".into(),
            module: Some(Module {
                path: "/t/release/quadrant-guest".into(),
                name: "quadrant-guest".into(),
                args: "expect_hv=1 only=a,b".into(),
            }),
        }
    }

    #[test]
    fn grub_cfg_hypervisor_and_bare() {
        let cfg = grub_cfg(&hv());
        assert!(cfg.starts_with("serial --unit=0 --speed=115200\nterminal_output serial console\nset timeout=0\n"), "{cfg}");
        assert!(
            cfg.contains(
                "menuentry \"Quadrant: hypervisor + guest\" {\n  \
                 multiboot /boot/quadrant-hv mmu=shadow\n  \
                 module /boot/quadrant-guest quadrant-guest expect_hv=1 only=a,b\n  boot\n"
            ),
            "{cfg}"
        );
        assert!(cfg.contains("  outb 0x8900 0x53\n  outb 0x8900 0x68\n"), "{cfg}");
        assert!(cfg.ends_with("  outb 0x8900 0x6e\n}\n"), "{cfg}");
        let bare = Media { kernel: "/x/g".into(), kernel_args: "expect_hv=0".into(), module: None };
        assert!(grub_cfg(&bare).contains("\n  multiboot /boot/quadrant-guest expect_hv=0\n  boot\n"));
    }

    #[test]
    fn qemu_initrd_carries_the_guest() {
        assert_eq!(
            qemu_boot_args(&hv()),
            [
                "-kernel",
                "/t/release/quadrant-hv",
                "-append",
                "mmu=shadow",
                "-initrd",
                "/t/release/quadrant-guest expect_hv=1 only=a,,b"
            ]
        );
    }

    #[test]
    fn args_are_checked() {
        assert!(check_args("x", "name=\"a b\"").is_err());
        assert!(check_args("x", "mmu=ept audit=1 only=long/x,real").is_ok());
        assert!(check_args("x", "a;b").is_err());
        assert_eq!(join_args(&["expect_hv=1", "", "  a=b "]), "expect_hv=1 a=b");
    }
}
