//! `cargo xtask image`: the test-rig image. One file that boots on BIOS and
//! UEFI machines alike (grub-mkrescue with GRUB for i386-pc and x86_64-efi:
//! an ISO 9660 image with a hybrid MBR and an EFI system partition, so it
//! can be written to a USB stick as it is), carrying the hypervisor, the
//! guest and a GRUB menu built from [`MENU`].
//!
//! Each entry boots the hypervisor with Multiboot 2 under UEFI (GRUB's
//! framebuffer and the ACPI tables come from its tags; no legacy BIOS
//! structures) and with Multiboot 1 under BIOS (VGA text), or the guest
//! alone with Multiboot 1.

use crate::media;
use crate::workspace::Workspace;
use anyhow::{Context, Result};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// One GRUB menu entry of the image.
#[derive(Clone, Copy, Debug)]
pub struct MenuEntry {
    /// The title after "Quadrant: ".
    pub title: &'static str,
    /// The hypervisor's command line, or `None` to boot the guest alone.
    pub hv_args: Option<&'static str>,
    /// Guest arguments after `expect_hv=1|0`.
    pub guest_args: &'static str,
}

/// The image's menu, the first entry the default. To add a workload, add
/// one line.
pub const MENU: &[MenuEntry] = &[
    MenuEntry { title: "guest suite under the hypervisor (shadow paging)", hv_args: Some("mmu=shadow"), guest_args: "" },
    MenuEntry {
        title: "guest suite under the hypervisor, reboot 60 s after the result",
        hv_args: Some("mmu=shadow reboot=60"),
        guest_args: "",
    },
    MenuEntry { title: "guest suite under the hypervisor (EPT reference)", hv_args: Some("mmu=ept"), guest_args: "" },
    MenuEntry { title: "bare guest, no hypervisor (results on COM1 only)", hv_args: None, guest_args: "" },
];

/// Default seconds the menu waits before booting the first entry.
pub const DEFAULT_MENU_TIMEOUT: u32 = 5;

/// `image` options.
#[derive(clap::Args, Debug)]
pub struct ImageOpts {
    /// Where to write the image [default: <target>/quadrant/quadrant.img].
    #[arg(long, value_name = "PATH")]
    pub output: Option<PathBuf>,
    /// Seconds the GRUB menu waits before the default entry.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_MENU_TIMEOUT)]
    pub menu_timeout: u32,
    /// Then boot it under UEFI (QEMU TCG with OVMF) and check the serial
    /// text and the banner on the screen, as `cargo xtask test` does.
    #[arg(long)]
    pub check_uefi: bool,
}

/// The kernel and module lines of one entry for one Multiboot version
/// (`multiboot`/`module` or `multiboot2`/`module2`).
fn load_lines(e: &MenuEntry, suffix: &str, indent: &str) -> String {
    let mut s = String::new();
    match e.hv_args {
        Some(hv) => {
            let guest = media::join_args(&["quadrant-guest expect_hv=1", e.guest_args]);
            let _ = writeln!(s, "{indent}multiboot{suffix} /boot/quadrant-hv {hv}");
            let _ = writeln!(s, "{indent}module{suffix} /boot/quadrant-guest {guest}");
        }
        None => {
            let guest = media::join_args(&["expect_hv=0", e.guest_args]);
            let _ = writeln!(s, "{indent}multiboot{suffix} /boot/quadrant-guest {guest}");
        }
    }
    s
}

/// The image's `boot/grub/grub.cfg`.
///
/// GRUB's own terminal is the screen and, where the machine has one, COM1
/// (so a rig or an emulator with a serial console sees and can drive the
/// menu). Under UEFI the video drivers are loaded and the firmware's GOP
/// mode kept, so the Multiboot 2 framebuffer tag describes it.
pub fn grub_cfg(menu: &[MenuEntry], timeout: u32) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "set timeout={timeout}\nset default=0\n\
         if serial --unit=0 --speed=115200; then\n  terminal_input --append serial\n  terminal_output --append serial\nfi\n\
         if [ \"$grub_platform\" = \"efi\" ]; then\n  insmod all_video\n  set gfxpayload=keep\nfi\n"
    );
    for e in menu {
        let _ = writeln!(s, "menuentry \"Quadrant: {}\" {{", e.title);
        if e.hv_args.is_some() {
            s += "  if [ \"$grub_platform\" = \"efi\" ]; then\n";
            s += &load_lines(e, "2", "    ");
            s += "  else\n";
            s += &load_lines(e, "", "    ");
            s += "  fi\n";
        } else {
            s += &load_lines(e, "", "  ");
        }
        s += &media::boot_or_stop("  ");
        s += "}\n";
    }
    s
}

/// Builds the image at `out` from the release binaries (build them first)
/// in a scratch tree under `<target>/quadrant/image/`.
pub fn make_image(ws: &Workspace, out: &Path, menu_timeout: u32) -> Result<()> {
    let work = ws.quadrant_dir().join("image");
    let _ = std::fs::remove_dir_all(&work);
    let root = work.join("tree");
    std::fs::create_dir_all(root.join("boot/grub"))?;
    for b in ["quadrant-hv", "quadrant-guest"] {
        let from = ws.release_bin(b);
        std::fs::copy(&from, root.join("boot").join(b)).with_context(|| format!("copying {}", from.display()))?;
    }
    std::fs::write(root.join("boot/grub/grub.cfg"), grub_cfg(MENU, menu_timeout))?;
    if let Some(d) = out.parent() {
        std::fs::create_dir_all(d)?;
    }
    media::grub_mkrescue(&root, out, &work.join("grub-mkrescue.log"))
}

/// `image`: build, install what is missing, write the image, say how to use it.
pub fn image(ws: &Workspace, opts: &ImageOpts) -> Result<bool> {
    crate::packages::ensure(crate::packages::IMAGE)?;
    crate::build::build(ws)?;
    let out = opts.output.clone().unwrap_or_else(|| default_path(ws));
    make_image(ws, &out, opts.menu_timeout)?;
    let size = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    println!("image: {} ({:.1} MiB; BIOS and UEFI)", out.display(), size as f64 / (1 << 20) as f64);
    println!("menu (default first, after {} s):", opts.menu_timeout);
    for e in MENU {
        println!("  - {}", e.title);
    }
    println!("write it to a USB stick (all data on the stick is lost): sudo dd if={} of=/dev/sdX bs=4M conv=fsync", out.display());
    if !opts.check_uefi {
        return Ok(true);
    }
    println!("booting it under UEFI (QEMU TCG, OVMF) ...");
    let r = crate::rig::uefi_image_boot(ws, &out, 300)?;
    for reason in &r.reasons {
        println!("  - {reason}");
    }
    println!("{}: UEFI boot of the image in {:.1} s (run dir: {})", if r.passed { "PASS" } else { "FAIL" }, r.secs, r.dir.display());
    Ok(r.passed)
}

/// `<target>/quadrant/quadrant.img`.
pub fn default_path(ws: &Workspace) -> PathBuf {
    ws.quadrant_dir().join("quadrant.img")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn menu_has_a_platform_switch_per_hypervisor_entry() {
        let cfg = grub_cfg(MENU, 5);
        assert!(cfg.starts_with("set timeout=5\nset default=0\nif serial --unit=0 --speed=115200; then\n"), "{cfg}");
        assert!(
            cfg.contains(
                "menuentry \"Quadrant: guest suite under the hypervisor (shadow paging)\" {\n  \
                 if [ \"$grub_platform\" = \"efi\" ]; then\n    \
                 multiboot2 /boot/quadrant-hv mmu=shadow\n    \
                 module2 /boot/quadrant-guest quadrant-guest expect_hv=1\n  else\n    \
                 multiboot /boot/quadrant-hv mmu=shadow\n    \
                 module /boot/quadrant-guest quadrant-guest expect_hv=1\n  fi\n  boot\n"
            ),
            "{cfg}"
        );
        assert!(cfg.contains("  multiboot /boot/quadrant-guest expect_hv=0\n  boot\n"), "{cfg}");
        assert_eq!(cfg.matches("menuentry ").count(), MENU.len());
        assert_eq!(cfg.matches("outb 0x8900 0x53").count(), MENU.len());
        // The default entry is the plain suite under the hypervisor.
        assert_eq!((MENU[0].hv_args, MENU[0].guest_args), (Some("mmu=shadow"), ""));
    }

    #[test]
    fn entry_arguments_pass_the_runner_checks() {
        for e in MENU {
            media::check_args("hv", e.hv_args.unwrap_or("")).unwrap();
            media::check_args("guest", e.guest_args).unwrap();
        }
        let e = MenuEntry { title: "t", hv_args: Some("mmu=ept"), guest_args: "only=long/" };
        assert_eq!(
            load_lines(&e, "2", ""),
            "multiboot2 /boot/quadrant-hv mmu=ept\nmodule2 /boot/quadrant-guest quadrant-guest expect_hv=1 only=long/\n"
        );
    }
}
