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
    std::fs::write(dir.join("command.sh"), format!("#!/bin/sh\n{}\n", launch.display()))?;
    let serial = dir.join("serial.log");
    let mut result_seen: Option<Duration> = None;
    let mut shot: Option<std::result::Result<(), String>> = None;
    let mut next_progress = 30;
    let (exit, took) = emulator::run(&launch, Duration::from_secs(timeout), |el| {
        if el.as_secs() >= next_progress {
            crate::boot::say(&format!("  ... uefi image boot: still running, {} s\n", el.as_secs()));
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
            let r = monitor(&sock, "screendump screen.ppm").map_err(|e| format!("{e:#}")).and_then(|reply| {
                if dir.join("screen.ppm").is_file() { Ok(()) } else { Err(format!("no screen.ppm after screendump (monitor said {reply:?})")) }
            });
            shot = Some(r);
            let _ = monitor(&sock, "quit");
        }
    })?;
    let text = String::from_utf8_lossy(&std::fs::read(&serial).unwrap_or_default()).into_owned();
    let console = Console::from_text(&text);
    let exp = Expectation {
        hypervisor: true,
        expect_error: Some(ErrorKind::NoVmx),
        expect_text: Some("this CPU has no VMX"),
        role_coverage: false,
    };
    // QEMU ends by the monitor's `quit` (exit 0), never by the exit device.
    let v = verdict::judge(&console, exit, ExitConvention::Qemu, exp);
    let mut reasons = v.reasons.clone();
    if !text.contains("(Multiboot 2; ACPI RSDP Some(") {
        reasons.push("the hypervisor did not say it came up by Multiboot 2 with an ACPI RSDP from its tags".into());
    }
    match &shot {
        None => reasons.push(format!("no screendump: the run never reached its result ({})", ExitConvention::Qemu.describe(exit))),
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
    Ok(RigRun { passed, reasons, secs: took.as_secs_f64(), dir })
}

/// The reboot delay the reboot test asks for, in seconds.
const REBOOT_SECS: u32 = 2;

/// Boots the hypervisor in QEMU TCG with `reboot=2` and no exit device:
/// after its (no-vmx) result it must wait about 2 s and reset the machine,
/// which ends QEMU (`-no-reboot`) with exit status 0.
pub fn reboot_after_result(ws: &Workspace, timeout: u64) -> Result<RigRun> {
    let (_, dir) = ws.new_run_dir("reboot-after-result")?;
    let m = Media {
        kernel: ws.release_bin("quadrant-hv"),
        kernel_args: format!("mmu=shadow reboot={REBOOT_SECS}"),
        module: Some(Module { path: ws.release_bin("quadrant-guest"), name: "quadrant-guest".into(), args: "expect_hv=1".into() }),
    };
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

    /// Draws `text` into a picture as the hypervisor does.
    fn draw(pic: &mut Picture, text: &str, x0: usize, y0: usize, scale: u32, paint: Paint) {
        let cell = (screen::GLYPH * scale) as usize;
        for (i, c) in text.bytes().enumerate() {
            for dy in 0..cell {
                for dx in 0..cell {
                    let ink = screen::ink(c, dx as u32 / scale, dy as u32 / scale);
                    let Rgb(r, g, b) = if ink { paint.fg() } else { paint.bg() };
                    let o = ((y0 + dy) * pic.width + x0 + i * cell + dx) * 3;
                    pic.rgb[o..o + 3].copy_from_slice(&[r, g, b]);
                }
            }
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
    fn uefi_boot_uses_ovmf_and_a_usb_stick_without_the_exit_device() {
        let a = uefi_qemu_args(Path::new("/x/quadrant.img")).join(" ");
        assert!(a.contains("-bios "), "{a}");
        assert!(a.contains("file=/x/quadrant.img") && a.contains("usb-storage,drive=stick"), "{a}");
        assert!(a.contains("-monitor unix:monitor.sock,server,nowait"), "{a}");
        assert!(!a.contains("isa-debug-exit"), "{a}");
    }
}
