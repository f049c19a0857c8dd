//! How a run ends: every way out prints the lines the runner parses
//! (`shared::line`: `quadrant-error KIND: TEXT`, then `quadrant-result`) and
//! ends the emulator with a status, so no failure is ever a silent hang.

use crate::arch::{console, cpu};
use core::fmt;
use shared::line::{self, ErrorKind};

/// Status in the result line when the run failed before the guest reported
/// one (the guest's own statuses are small numbers).
pub const STATUS_NO_GUEST_STATUS: u8 = 255;

/// Reports a fatal error of `kind` and ends the run as failed.
pub fn fail(kind: ErrorKind, text: fmt::Arguments<'_>) -> ! {
    console::force_unlock();
    console::with_console(|c| {
        let _ = line::write_error(c, kind, text);
        let _ = fmt::Write::write_str(c, "\n");
        let _ = line::write_result(c, STATUS_NO_GUEST_STATUS, kind.as_str());
        let _ = fmt::Write::write_str(c, "\n");
    });
    cpu::exit_emulator(1)
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
    cpu::exit_emulator(status)
}
