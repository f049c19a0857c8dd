//! The hypervisor's console: COM1 through the `uart_16550` crate (or the
//! debug port when there is no UART), mirrored on the display when there is
//! one ([`super::screen`]), with the `log` crate's logger on top. Everything
//! the runner parses (see `shared::line`) and every log line goes through
//! [`with_console`], one whole line at a time under one lock, so lines from
//! the guest and from the hypervisor never interleave mid-line.

use super::screen::Screen;
use core::fmt::{self, Write};
use shared::screen::{Ending, Tally};
use spin::Mutex;
use uart_16550::{backend::PioBackend, Config, Uart16550Tty};

/// Where console bytes go.
pub struct Console {
    uart: Option<Uart16550Tty<PioBackend>>,
    screen: Option<Screen>,
}

impl Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if let Some(screen) = &mut self.screen {
            screen.write(s);
        }
        match &mut self.uart {
            Some(u) => {
                for b in s.bytes() {
                    if b == b'\n' {
                        u.write_char('\r')?;
                    }
                    u.write_char(b as char)?;
                }
            }
            // No UART (a rig without a serial port): the debug console port
            // is harmless where nothing listens.
            None => {
                for b in s.bytes() {
                    // SAFETY: port 0xe9 is the emulators' debug console and
                    // unused on real hardware.
                    unsafe { super::cpu::outb(shared::ports::DEBUGCON, b) };
                }
            }
        }
        Ok(())
    }
}

static CONSOLE: Mutex<Console> = Mutex::new(Console { uart: None, screen: None });

/// Initialises COM1 (115200 8N1, the crate's default) and installs the
/// logger. Returns false when no UART answered the self-test.
pub fn init(level: log::LevelFilter) -> bool {
    // SAFETY: 0x3f8 is COM1 on every PC; the console owns it for the run.
    let uart = unsafe { Uart16550Tty::new_port(shared::ports::COM1, Config::default()) }.ok();
    let present = uart.is_some();
    CONSOLE.lock().uart = uart;
    // A second init keeps the first logger.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
    present
}

/// Mirrors the console on `screen` from now on.
pub fn attach_screen(screen: Screen) {
    CONSOLE.lock().screen = Some(screen);
}

/// Draws the end-of-run banner on the screen, if there is one, and returns
/// the check counts it shows.
pub fn banner(ending: Ending<'_>, detail: &str) -> Option<Tally> {
    let mut c = CONSOLE.lock();
    let s = c.screen.as_mut()?;
    s.banner(ending, detail);
    Some(s.tally())
}

/// Runs `f` with the console locked.
pub fn with_console<R>(f: impl FnOnce(&mut Console) -> R) -> R {
    f(&mut CONSOLE.lock())
}

/// Writes one line (a newline is appended).
pub fn line(args: fmt::Arguments<'_>) {
    with_console(|c| {
        let _ = c.write_fmt(args);
        let _ = c.write_str("\n");
    });
}

/// Releases the console lock unconditionally, for the fatal paths (panic,
/// CPU exception) that may have interrupted a holder on this CPU.
pub fn force_unlock() {
    if CONSOLE.is_locked() {
        // SAFETY: only called on fatal paths of the CPU that holds the lock
        // (the holder will never run again), so no one else sees the console
        // mid-update.
        unsafe { CONSOLE.force_unlock() };
    }
}

struct Logger;
static LOGGER: Logger = Logger;

impl log::Log for Logger {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::max_level()
    }
    fn log(&self, r: &log::Record<'_>) {
        if self.enabled(r.metadata()) {
            line(format_args!("[hv {:<5}] {}", r.level(), r.args()));
        }
    }
    fn flush(&self) {}
}

/// `println!`-like helper for whole console lines.
#[macro_export]
macro_rules! console_line {
    ($($arg:tt)*) => { $crate::arch::console::line(format_args!($($arg)*)) };
}
