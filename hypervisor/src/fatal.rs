//! How a run ends: every way out prints the lines the runner parses
//! (`shared::line`: `quadrant-error KIND: TEXT`, then `quadrant-result`),
//! draws the PASS/FAIL banner on the display, and ends the emulator with a
//! status, so no failure is ever a silent hang. Where no emulator ends the
//! run (a test rig), the hypervisor then halts with the result on screen,
//! or reboots after the delay its `reboot=SECS` word asks for; it never
//! writes to a disk.

use crate::arch::{console, cpu};
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU32, Ordering};
use shared::line::{self, ErrorKind};
use shared::screen::{Ending, FixedText};

/// Status in the result line when the run failed before the guest reported
/// one (the guest's own statuses are small numbers).
pub const STATUS_NO_GUEST_STATUS: u8 = 255;

/// `reboot=SECS` of the command line; `u32::MAX` = halt.
static REBOOT_AFTER: AtomicU32 = AtomicU32::new(u32::MAX);

/// What happens once the result is out and no emulator ended the run.
pub fn set_reboot_after(secs: Option<u32>) {
    REBOOT_AFTER.store(secs.unwrap_or(u32::MAX), Ordering::Relaxed);
}

/// Reports a fatal error of `kind` and ends the run as failed.
pub fn fail(kind: ErrorKind, text: fmt::Arguments<'_>) -> ! {
    console::force_unlock();
    let mut detail = FixedText::<160>::default();
    let _ = detail.write_fmt(text);
    console::with_console(|c| {
        let _ = line::write_error(c, kind, text);
        let _ = fmt::Write::write_str(c, "\n");
        let _ = line::write_result(c, STATUS_NO_GUEST_STATUS, kind.as_str());
        let _ = fmt::Write::write_str(c, "\n");
    });
    end(STATUS_NO_GUEST_STATUS, Ending::Error(kind.as_str()), detail.as_str())
}

/// A bug in the hypervisor itself (CPU exception, panic).
pub fn hypervisor_fault(text: fmt::Arguments<'_>) -> ! {
    fail(ErrorKind::HypervisorFault, text)
}

/// The guest ended the run by writing `status` to the exit port: prints the
/// result line and ends the emulator with the same status.
pub fn guest_exit(status: u8) -> ! {
    console::with_console(|c| {
        let _ = line::write_result(c, status, "guest-exit");
        let _ = fmt::Write::write_str(c, "\n");
    });
    let mut detail = FixedText::<80>::default();
    let _ = write!(detail, "the guest exited with status {status}");
    end(status, Ending::GuestExit(status), detail.as_str())
}

/// Banner, emulator exit, then halt or reboot.
fn end(status: u8, ending: Ending<'_>, detail: &str) -> ! {
    let mut with_action = FixedText::<240>::default();
    let reboot = REBOOT_AFTER.load(Ordering::Relaxed);
    let _ = match reboot {
        u32::MAX => write!(with_action, "Halted. {detail}"),
        s => write!(with_action, "Rebooting in {s} s. {detail}"),
    };
    if let Some(t) = console::banner(ending, with_action.as_str()) {
        log::info!(
            "result on screen: {} passed, {} failed, {} skipped ({})",
            t.passed,
            t.failed,
            t.skipped,
            with_action.as_str()
        );
    }
    cpu::exit_steps(status);
    // No emulator ended the run: a machine (or QEMU without its exit device).
    if reboot == u32::MAX {
        log::info!("the run is over: halted with the result on screen (reboot=SECS reboots instead)");
        cpu::halt_forever()
    }
    log::info!("rebooting in {reboot} s (reboot={reboot})");
    if !cpu::delay_ms(reboot.saturating_mul(1000)) {
        log::warn!("the PIT did not count: the reboot delay was a bounded busy wait, not a measured time");
    }
    log::info!("rebooting now");
    cpu::reset_machine()
}
