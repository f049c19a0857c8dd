//! The test-rig paths of `cargo xtask test`, which the ordinary boots
//! (`boot.rs`: the emulator's exit device ends every run) cannot show:
//!
//! * [`uefi_image_boot`]: the `cargo xtask image` output under UEFI (QEMU
//!   TCG with OVMF, the image as a USB stick). The hypervisor comes up by
//!   Multiboot 2, finds no VMX and halts with its banner on the screen, as
//!   on a rig; the runner then takes a QEMU `screendump` through the
//!   monitor and checks the serial text AND the screen: the banner the
//!   serial lines imply, rendered with the hypervisor's own font and
//!   colours (`shared::screen`), must be in the picture pixel for pixel.
//! * [`uefi_image_bare`]: the same image's bare guest entry, chosen in
//!   GRUB's menu with the monitor's `sendkey`: the guest alone must pass.
//! * [`bios_vga_banner`]: the hypervisor by Multiboot 1 (QEMU `-kernel`, a
//!   BIOS machine) halts with the banner in VGA text memory, dumped with
//!   the monitor's `pmemsave` and checked cell by cell (text and colour).
//! * [`reboot_after_result`]: `reboot=2` on a machine without the exit
//!   device: the hypervisor waits 2 s after its result, then resets the
//!   machine (QEMU `-no-reboot` then exits by itself).

use crate::emulator::{self, Emulator, Launch};
use crate::media::{self, Media, Module};
use crate::packages;
use crate::verdict::{self, Console, Exit, ExitConvention, Expectation};
use crate::workspace::Workspace;
use anyhow::{bail, Context, Result};
use shared::line::ErrorKind;
use shared::screen::{self, Ending, FixedText, Paint, Rgb, Tally};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The outcome of one rig run.
#[derive(Clone, Debug)]
pub struct RigRun {
    /// Whether every expectation held.
    pub passed: bool,
    /// What held or not, one line each (failures first).
    pub reasons: Vec<String>,
    /// Wall time of the emulator run in seconds.
    pub secs: f64,
    /// The run directory.
    pub dir: PathBuf,
}

/// A PPM (P6) picture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Picture {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// RGB triples, row by row.
    pub rgb: Vec<u8>,
}

impl Picture {
    /// Parses a binary PPM with 8-bit samples (what QEMU's `screendump` writes).
    pub fn from_ppm(bytes: &[u8]) -> Result<Picture> {
        let mut fields = Vec::new();
        let mut i = 0;
        while fields.len() < 4 {
            while i < bytes.len() && bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            if bytes.get(i) == Some(&b'#') {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            let start = i;
            while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            if start == i {
                bail!("the PPM header ends early");
            }
            fields.push(String::from_utf8_lossy(&bytes[start..i]).into_owned());
        }
        i += 1; // the one whitespace byte before the samples
        if fields[0] != "P6" || fields[3] != "255" {
            bail!("not a binary PPM with 8-bit samples (magic {}, maxval {})", fields[0], fields[3]);
        }
        let width: usize = fields[1].parse().context("PPM width")?;
        let height: usize = fields[2].parse().context("PPM height")?;
        let rgb = bytes.get(i..i + width * height * 3).context("the PPM has fewer samples than its size says")?.to_vec();
        Ok(Picture { width, height, rgb })
    }

    fn at(&self, x: usize, y: usize) -> Rgb {
        let o = (y * self.width + x) * 3;
        Rgb(self.rgb[o], self.rgb[o + 1], self.rgb[o + 2])
    }
}

/// Where `text`, drawn as the hypervisor draws it (`shared::screen` font,
/// `paint`'s colours, any scale 1..=4), appears in `pic`: (x, y, scale) of
/// its top-left pixel. Every pixel of every glyph cell must match exactly.
pub fn find_text(pic: &Picture, text: &str, paint: Paint) -> Option<(usize, usize, u32)> {
    let (fg, bg) = (paint.fg(), paint.bg());
    let bytes = text.as_bytes();
    for scale in 1..=4u32 {
        let cell = (screen::GLYPH * scale) as usize;
        let (w, h) = (bytes.len() * cell, cell);
        if w > pic.width || h > pic.height {
            break;
        }
        let want = |dx: usize, dy: usize| {
            let c = bytes[dx / cell];
            let (gx, gy) = (((dx % cell) as u32) / scale, (dy as u32) / scale);
            if screen::ink(c, gx, gy) { fg } else { bg }
        };
        for y in 0..=pic.height - h {
            for x in 0..=pic.width - w {
                // Cheap rejections first: the first and last pixel of the top row.
                if pic.at(x, y) != want(0, 0) || pic.at(x + w - 1, y) != want(w - 1, 0) {
                    continue;
                }
                if (0..h).all(|dy| (0..w).all(|dx| pic.at(x + dx, y + dy) == want(dx, dy))) {
                    return Some((x, y, scale));
                }
            }
        }
    }
    None
}

/// The banner title the hypervisor must show for what the serial log says,
/// and its colours.
pub fn expected_banner(console: &Console) -> Option<(String, Paint)> {
    let c = console.counts();
    let tally = Tally { passed: c.passed, failed: c.failed, skipped: c.skipped };
    let ending = match (console.errors.last(), &console.result) {
        (Some(e), _) => Ending::Error(&e.kind),
        (None, Some((status, _))) => Ending::GuestExit(*status),
        (None, None) => return None,
    };
    let mut t = FixedText::<200>::default();
    screen::write_banner_title(&mut t, ending, &tally).ok()?;
    let paint = if ending.passed(&tally) { Paint::Pass } else { Paint::Fail };
    Some((t.as_str().to_string(), paint))
}

/// Sends one HMP command to QEMU's monitor socket and reads until the next
/// prompt (or the timeout).
fn monitor(sock: &Path, command: &str) -> Result<String> {
    let mut s = std::os::unix::net::UnixStream::connect(sock).with_context(|| format!("connecting to {}", sock.display()))?;
    s.set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut out = Vec::new();
    let read_prompt = |s: &mut std::os::unix::net::UnixStream, out: &mut Vec<u8>, from: usize| {
        let start = Instant::now();
        let mut buf = [0u8; 4096];
        while start.elapsed() < Duration::from_secs(20) {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(_) => {}
            }
            if out[from..].windows(6).any(|w| w == b"(qemu)") {
                break;
            }
        }
    };
    read_prompt(&mut s, &mut out, 0);
    let from = out.len();
    s.write_all(format!("{command}\n").as_bytes())?;
    read_prompt(&mut s, &mut out, from);
    Ok(String::from_utf8_lossy(&out[from..]).into_owned())
}

/// QEMU arguments of the UEFI boot: OVMF as the firmware, the image as a
/// read-only USB stick, the monitor on a socket, no exit device (the
/// hypervisor halts as on a rig).
pub fn uefi_qemu_args(image: &Path) -> Vec<String> {
    let mut a = vec!["qemu-system-x86_64".to_string()];
    a.extend(emulator::qemu_machine_args(Emulator::QemuTcg, "max", 1, 512));
    a.extend(
        [
            "-bios".to_string(),
            packages::ovmf_firmware().to_string(),
            "-drive".into(),
            format!("if=none,id=stick,format=raw,readonly=on,file={}", image.display()),
            "-device".into(),
            "qemu-xhci".into(),
            "-device".into(),
            "usb-storage,drive=stick".into(),
            "-monitor".into(),
            "unix:monitor.sock,server,nowait".into(),
        ],
    );
    a
}

/// What a rig run left: the serial text and how the capture went.
struct Halted {
    /// COM1.
    text: String,
    /// QEMU's exit (by the monitor's `quit` when the capture ran).
    exit: Exit,
    /// Wall time.
    took: Duration,
    /// `None`: the run never reached its result; else the capture's outcome.
    capture: Option<std::result::Result<(), String>>,
}

/// Runs `launch` (QEMU with `-monitor unix:monitor.sock,...` and no exit
/// device) until the hypervisor has halted after its result, then sends
/// `capture` (a monitor command writing `file` into the run directory) and
/// `quit`.
fn run_until_halted(launch: &Launch, what: &str, timeout: u64, capture: &str, file: &str) -> Result<Halted> {
    let dir = &launch.cwd;
    std::fs::write(dir.join("command.sh"), format!("#!/bin/sh\n{}\n", launch.display()))?;
    let serial = dir.join("serial.log");
    let mut result_seen: Option<Duration> = None;
    let mut shot: Option<std::result::Result<(), String>> = None;
    let mut next_progress = 30;
    let (exit, took) = emulator::run(launch, Duration::from_secs(timeout), |el| {
        if el.as_secs() >= next_progress {
            crate::boot::say(&format!("  ... {what}: still running, {} s\n", el.as_secs()));
            next_progress += 30;
        }
        if shot.is_some() {
            return;
        }
        let text = String::from_utf8_lossy(&std::fs::read(&serial).unwrap_or_default()).into_owned();
        if result_seen.is_none() && text.contains(shared::line::RESULT) {
            result_seen = Some(el);
        }
        // The banner is drawn after the result line; the hypervisor says
        // when it has halted (or, at the latest, 10 s after the result).
        let over = text.contains("the run is over") || result_seen.is_some_and(|t| el > t + Duration::from_secs(10));
        if over {
            let sock = dir.join("monitor.sock");
            let r = monitor(&sock, capture).map_err(|e| format!("{e:#}")).and_then(|reply| {
                if dir.join(file).is_file() { Ok(()) } else { Err(format!("no {file} after `{capture}` (monitor said {reply:?})")) }
            });
            shot = Some(r);
            let _ = monitor(&sock, "quit");
        }
    })?;
    let text = String::from_utf8_lossy(&std::fs::read(&serial).unwrap_or_default()).into_owned();
    Ok(Halted { text, exit, took, capture: shot })
}

/// The serial expectations of a hypervisor run in QEMU TCG (no VMX): the
/// banner, `quadrant-error no-vmx`, the result line; QEMU ended by `quit`.
fn no_vmx_reasons(console: &Console, exit: Exit) -> Vec<String> {
    let exp = Expectation {
        hypervisor: true,
        expect_error: Some(ErrorKind::NoVmx),
        expect_text: Some("this CPU has no VMX"),
        role_coverage: false,
        expect_failures: &[],
        smp_modes: false,
    };
    verdict::judge(console, exit, ExitConvention::Qemu, exp).reasons
}

/// Boots `image` under OVMF and checks serial and screen (see the module
/// documentation).
pub fn uefi_image_boot(ws: &Workspace, image: &Path, timeout: u64) -> Result<RigRun> {
    packages::ensure(packages::OVMF)?;
    let (_, dir) = ws.new_run_dir("uefi-ovmf-image")?;
    let image = std::fs::canonicalize(image).with_context(|| format!("the image {}", image.display()))?;
    if image.to_string_lossy().contains(',') {
        bail!("the image path {} contains a comma, which QEMU's -drive cannot take", image.display());
    }
    let launch = Launch { argv: uefi_qemu_args(&image), cwd: dir.clone(), output: dir.join("qemu.log") };
    let h = run_until_halted(&launch, "uefi image boot", timeout, "screendump screen.ppm", "screen.ppm")?;
    let console = Console::from_text(&h.text);
    let mut reasons = no_vmx_reasons(&console, h.exit);
    if !h.text.contains("(Multiboot 2; ACPI RSDP Some(") {
        reasons.push("the hypervisor did not say it came up by Multiboot 2 with an ACPI RSDP from its tags".into());
    }
    match &h.capture {
        None => reasons.push(format!("no screendump: the run never reached its result ({})", ExitConvention::Qemu.describe(h.exit))),
        Some(Err(e)) => reasons.push(format!("screendump failed: {e}")),
        Some(Ok(())) => match (expected_banner(&console), std::fs::read(dir.join("screen.ppm"))) {
            (None, _) => reasons.push("the serial log has no result to expect a banner for".into()),
            (_, Err(e)) => reasons.push(format!("reading screen.ppm: {e}")),
            (Some((title, paint)), Ok(bytes)) => match Picture::from_ppm(&bytes) {
                Err(e) => reasons.push(format!("screen.ppm: {e:#}")),
                Ok(pic) => {
                    if find_text(&pic, &title, paint).is_none() {
                        reasons.push(format!(
                            "the banner `{title}` is not on the screen ({}x{} screendump: {})",
                            pic.width,
                            pic.height,
                            dir.join("screen.ppm").display()
                        ));
                    }
                }
            },
        },
    }
    let passed = reasons.is_empty();
    if passed {
        let title = expected_banner(&console).map(|b| b.0).unwrap_or_default();
        reasons.push(format!("serial: quadrant-error no-vmx by Multiboot 2; screen: `{title}`"));
    }
    Ok(RigRun { passed, reasons, secs: h.took.as_secs_f64(), dir })
}

/// Boots `image` under OVMF like [`uefi_image_boot`], but picks the bare
/// guest entry in GRUB's menu (monitor `sendkey`: down to the entry, then
/// Enter) and keeps QEMU's exit device: the guest alone must pass its
/// checks on UEFI, judged like any bare boot.
pub fn uefi_image_bare(ws: &Workspace, image: &Path, timeout: u64) -> Result<RigRun> {
    packages::ensure(packages::OVMF)?;
    let Some(index) = crate::image::MENU.iter().position(|e| e.hv_args.is_none()) else {
        bail!("the image menu has no bare guest entry");
    };
    let title = format!("Quadrant: {}", crate::image::MENU[index].title);
    let (_, dir) = ws.new_run_dir("uefi-ovmf-image-bare")?;
    let image = std::fs::canonicalize(image).with_context(|| format!("the image {}", image.display()))?;
    let mut argv = uefi_qemu_args(&image);
    argv.extend(["-device".to_string(), "isa-debug-exit,iobase=0xf4,iosize=0x04".to_string()]);
    let launch = Launch { argv, cwd: dir.clone(), output: dir.join("qemu.log") };
    std::fs::write(dir.join("command.sh"), format!("#!/bin/sh\n{}\n", launch.display()))?;
    let serial = dir.join("serial.log");
    let mut keys: Option<std::result::Result<(), String>> = None;
    let (exit, took) = emulator::run(&launch, Duration::from_secs(timeout), |_| {
        if keys.is_some() {
            return;
        }
        let text = String::from_utf8_lossy(&std::fs::read(&serial).unwrap_or_default()).into_owned();
        // GRUB's countdown line: the menu is up and takes keys.
        if text.contains("executed automatically") {
            let sock = dir.join("monitor.sock");
            let mut r = Ok(());
            for k in std::iter::repeat_n("sendkey down", index).chain(["sendkey ret"]) {
                if let Err(e) = monitor(&sock, k) {
                    r = Err(format!("{k}: {e:#}"));
                    break;
                }
            }
            keys = Some(r);
        }
    })?;
    let text = String::from_utf8_lossy(&std::fs::read(&serial).unwrap_or_default()).into_owned();
    let console = Console::from_text(&text);
    let exp = Expectation { hypervisor: false, expect_error: None, expect_text: None, role_coverage: false, expect_failures: &[], smp_modes: false };
    let v = verdict::judge(&console, exit, ExitConvention::Qemu, exp);
    let mut reasons = v.reasons.clone();
    match keys {
        None => reasons.push("GRUB's menu countdown never appeared on the serial console".into()),
        Some(Err(e)) => reasons.push(format!("choosing the entry failed: {e}")),
        // GRUB does not always echo the title of a chosen entry; the
        // hypervisor's banner would say the wrong entry booted.
        Some(Ok(())) if console.banner.is_some() => {
            reasons.push(format!("the hypervisor booted, not `{title}`"));
        }
        Some(Ok(())) => {}
    }
    let passed = reasons.is_empty();
    if passed {
        let c = v.counts;
        reasons.push(format!("`{title}` under UEFI: {} passed, {} failed, {} skipped", c.passed, c.failed, c.skipped));
    }
    Ok(RigRun { passed, reasons, secs: took.as_secs_f64(), dir })
}

/// The VGA text buffer (BIOS): where and how big.
const VGA_TEXT: u64 = 0xb_8000;
const VGA_TEXT_LEN: usize = 80 * 25 * 2;

/// The text and attribute of row `row` of a VGA text buffer dump.
fn vga_row(dump: &[u8], row: usize) -> (String, Vec<u8>) {
    let cells = dump.get(row * 160..(row + 1) * 160).unwrap_or(&[]);
    (cells.chunks(2).map(|c| c[0] as char).collect(), cells.chunks(2).map(|c| c[1]).collect())
}

/// Whether a VGA text dump shows `title` in banner row 1 from column 1, in
/// `paint`'s attribute.
pub fn vga_shows_banner(dump: &[u8], title: &str, paint: Paint) -> bool {
    let (text, attrs) = vga_row(dump, 1);
    text.get(1..1 + title.len()) == Some(title) && attrs.iter().all(|a| *a == paint.vga_attr())
}

/// The hypervisor booted by Multiboot 1 (QEMU `-kernel`, a BIOS machine)
/// in QEMU TCG without the exit device: after its no-vmx result the VGA
/// text buffer (dumped with the monitor's `pmemsave`) must show the banner
/// the serial log implies, in the banner's colours.
pub fn bios_vga_banner(ws: &Workspace, timeout: u64) -> Result<RigRun> {
    let (_, dir) = ws.new_run_dir("bios-vga-banner")?;
    let m = hv_media(ws, "mmu=shadow");
    let mut argv = vec!["qemu-system-x86_64".to_string()];
    argv.extend(emulator::qemu_machine_args(Emulator::QemuTcg, "max", 1, 256));
    argv.extend(media::qemu_boot_args(&m));
    argv.extend(["-monitor".to_string(), "unix:monitor.sock,server,nowait".to_string()]);
    let launch = Launch { argv, cwd: dir.clone(), output: dir.join("qemu.log") };
    let capture = format!("pmemsave {VGA_TEXT:#x} {VGA_TEXT_LEN} vga.bin");
    let h = run_until_halted(&launch, "bios vga banner", timeout, &capture, "vga.bin")?;
    let console = Console::from_text(&h.text);
    let mut reasons = no_vmx_reasons(&console, h.exit);
    if !h.text.contains("(Multiboot 1; ACPI RSDP None)") {
        reasons.push("the hypervisor did not say it came up by Multiboot 1".into());
    }
    let expected = expected_banner(&console);
    match (&h.capture, &expected, std::fs::read(dir.join("vga.bin"))) {
        (None, _, _) => reasons.push(format!("no VGA dump: the run never reached its result ({})", ExitConvention::Qemu.describe(h.exit))),
        (Some(Err(e)), _, _) => reasons.push(format!("pmemsave failed: {e}")),
        (_, None, _) => reasons.push("the serial log has no result to expect a banner for".into()),
        (_, _, Err(e)) => reasons.push(format!("reading vga.bin: {e}")),
        (Some(Ok(())), Some((title, paint)), Ok(dump)) => {
            if !vga_shows_banner(&dump, title, *paint) {
                let (row, attrs) = vga_row(&dump, 1);
                reasons.push(format!(
                    "VGA text row 1 is {:?} with attributes {:x?}.., not ` {title}` in attribute {:#04x}",
                    row.trim_end(),
                    &attrs[..attrs.len().min(4)],
                    paint.vga_attr()
                ));
            }
        }
    }
    let passed = reasons.is_empty();
    if passed {
        reasons.push(format!("serial: quadrant-error no-vmx by Multiboot 1; VGA text: `{}`", expected.map(|b| b.0).unwrap_or_default()));
    }
    Ok(RigRun { passed, reasons, secs: h.took.as_secs_f64(), dir })
}

/// The built hypervisor with the built guest as its module.
fn hv_media(ws: &Workspace, hv_args: &str) -> Media {
    Media {
        kernel: ws.release_bin("quadrant-hv"),
        kernel_args: hv_args.to_string(),
        module: Some(Module { path: ws.release_bin("quadrant-guest"), name: "quadrant-guest".into(), args: "expect_hv=1".into() }),
    }
}

/// The reboot delay the reboot test asks for, in seconds.
const REBOOT_SECS: u32 = 2;

/// Boots the hypervisor in QEMU TCG with `reboot=2` and no exit device:
/// after its (no-vmx) result it must wait about 2 s and reset the machine,
/// which ends QEMU (`-no-reboot`) with exit status 0.
pub fn reboot_after_result(ws: &Workspace, timeout: u64) -> Result<RigRun> {
    let (_, dir) = ws.new_run_dir("reboot-after-result")?;
    let m = hv_media(ws, &format!("mmu=shadow reboot={REBOOT_SECS}"));
    let mut argv = vec!["qemu-system-x86_64".to_string()];
    argv.extend(emulator::qemu_machine_args(Emulator::QemuTcg, "max", 1, 256));
    argv.extend(media::qemu_boot_args(&m));
    let launch = Launch { argv, cwd: dir.clone(), output: dir.join("qemu.log") };
    std::fs::write(dir.join("command.sh"), format!("#!/bin/sh\n{}\n", launch.display()))?;
    let (exit, took) = emulator::run(&launch, Duration::from_secs(timeout), |_| {})?;
    let text = String::from_utf8_lossy(&std::fs::read(dir.join("serial.log")).unwrap_or_default()).into_owned();
    let console = Console::from_text(&text);
    let mut reasons = Vec::new();
    if !console.errors.iter().any(|e| e.kind == ErrorKind::NoVmx.as_str()) {
        reasons.push("no `quadrant-error no-vmx` line".into());
    }
    let (wait, now) = (format!("rebooting in {REBOOT_SECS} s"), "rebooting now");
    match (text.find(&wait), text.find(now)) {
        (Some(a), Some(b)) if a < b => {}
        _ => reasons.push(format!("the serial log lacks `{wait}` followed by `{now}`")),
    }
    if exit != Exit::Code(0) {
        reasons.push(format!("QEMU did not end by the reset: {}", ExitConvention::Qemu.describe(exit)));
    }
    if took < Duration::from_secs(u64::from(REBOOT_SECS)) {
        reasons.push(format!("the run took {:.1} s, less than the {REBOOT_SECS} s delay", took.as_secs_f64()));
    }
    let passed = reasons.is_empty();
    if passed {
        reasons.push(format!("reset after the result and a {REBOOT_SECS} s delay; QEMU exited by itself after {:.1} s", took.as_secs_f64()));
    }
    Ok(RigRun { passed, reasons, secs: took.as_secs_f64(), dir })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Draws `text` into a picture as the hypervisor does (`render_cell`
    /// into 0x00RRGGBB pixels).
    fn draw(pic: &mut Picture, text: &str, x0: usize, y0: usize, scale: u32, paint: Paint) {
        use shared::screen::{Cell, PixelFormat};
        let xrgb = PixelFormat::XRGB8888;
        let cell = (screen::GLYPH * scale) as usize;
        for (i, ch) in text.bytes().enumerate() {
            screen::render_cell(Cell { ch, paint }, scale, &xrgb, |x, y, v| {
                let o = ((y0 + y as usize) * pic.width + x0 + i * cell + x as usize) * 3;
                pic.rgb[o..o + 3].copy_from_slice(&[(v >> 16) as u8, (v >> 8) as u8, v as u8]);
            });
        }
    }

    fn blank(w: usize, h: usize) -> Picture {
        Picture { width: w, height: h, rgb: vec![0; w * h * 3] }
    }

    #[test]
    fn the_banner_is_found_only_where_it_is_drawn() {
        let mut pic = blank(400, 80);
        let title = "QUADRANT FAIL (no-vmx): 0 passed";
        draw(&mut pic, title, 16, 16, 1, Paint::Fail);
        assert_eq!(find_text(&pic, title, Paint::Fail), Some((16, 16, 1)));
        assert_eq!(find_text(&pic, "QUADRANT PASS (no-vmx): 0 passed", Paint::Fail), None);
        assert_eq!(find_text(&pic, title, Paint::Pass), None);
        // One wrong pixel inside a glyph and it is not there.
        let o = ((16 + 3) * pic.width + 16 + 8 * 5 + 3) * 3;
        pic.rgb[o] ^= 0xff;
        assert_eq!(find_text(&pic, title, Paint::Fail), None);
        let mut big = blank(800, 60);
        draw(&mut big, "PASS 3", 100, 10, 2, Paint::Pass);
        assert_eq!(find_text(&big, "PASS 3", Paint::Pass), Some((100, 10, 2)));
        assert_eq!(find_text(&blank(10, 10), "long text", Paint::Pass), None);
    }

    #[test]
    fn ppm_parses_and_rejects() {
        let mut ppm = b"P6\n# QEMU\n2 1\n255\n".to_vec();
        ppm.extend_from_slice(&[1, 2, 3, 4, 5, 6]);
        let p = Picture::from_ppm(&ppm).unwrap();
        assert_eq!((p.width, p.height, p.at(1, 0)), (2, 1, Rgb(4, 5, 6)));
        assert!(Picture::from_ppm(&ppm[..ppm.len() - 1]).is_err());
        assert!(Picture::from_ppm(b"P5\n1 1\n255\n\0").is_err());
        assert!(Picture::from_ppm(b"P6\n1").is_err());
    }

    #[test]
    fn expected_banner_follows_the_serial_log() {
        let c = Console::from_text("quadrant-hv version=2 mmu=shadow\nquadrant-error no-vmx: no VMX\nquadrant-result status=255 reason=no-vmx\n");
        assert_eq!(expected_banner(&c), Some(("QUADRANT FAIL (no-vmx): 0 passed, 0 failed, 0 skipped".into(), Paint::Fail)));
        let c = Console::from_text("check PASS a/b: x\ncheck SKIP a/c: y\nquadrant-result status=0 reason=guest-exit\n");
        assert_eq!(expected_banner(&c), Some(("QUADRANT PASS: 1 passed, 0 failed, 1 skipped".into(), Paint::Pass)));
        assert_eq!(expected_banner(&Console::from_text("nothing\n")), None);
    }

    #[test]
    fn vga_banner_needs_text_and_colour() {
        let mut dump = vec![0u8; VGA_TEXT_LEN];
        let title = "QUADRANT FAIL (no-vmx): 0 passed";
        for c in 0..80 {
            dump[160 + 2 * c] = b' ';
            dump[160 + 2 * c + 1] = Paint::Fail.vga_attr();
        }
        for (i, b) in title.bytes().enumerate() {
            dump[160 + 2 * (1 + i)] = b;
        }
        assert!(vga_shows_banner(&dump, title, Paint::Fail));
        assert!(!vga_shows_banner(&dump, title, Paint::Pass));
        assert!(!vga_shows_banner(&dump, "QUADRANT PASS", Paint::Fail));
        dump[161] = 0x07;
        assert!(!vga_shows_banner(&dump, title, Paint::Fail));
        assert!(!vga_shows_banner(&[], title, Paint::Fail));
    }

    #[test]
    fn uefi_boot_uses_ovmf_and_a_usb_stick_without_the_exit_device() {
        let a = uefi_qemu_args(Path::new("/x/quadrant.img")).join(" ");
        assert!(a.contains("-bios "), "{a}");
        assert!(a.contains("file=/x/quadrant.img") && a.contains("usb-storage,drive=stick"), "{a}");
        assert!(a.contains("-monitor unix:monitor.sock,server,nowait"), "{a}");
        assert!(!a.contains("isa-debug-exit"), "{a}");
    }
}
