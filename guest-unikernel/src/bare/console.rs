//! The console: COM1, polled. Before each byte the transmitter-holding-
//! register-empty bit (line status bit 5) is polled a bounded number of
//! times, so a missing or stuck UART slows output down but never hangs the
//! guest. The UART is not programmed: emulators and the hypervisor accept
//! bytes as they come, and under the hypervisor every port access is a VM
//! exit, so the guest touches only the data and line-status registers.

use super::cpu;
use core::fmt;

/// Line status: transmitter holding register empty.
const LSR_THRE: u8 = 1 << 5;
/// Line status: transmitter empty (holding and shift register).
const LSR_TEMT: u8 = 1 << 6;
/// Polls of the line status before writing anyway.
const POLL_LIMIT: u32 = 100_000;

/// COM1 as a [`fmt::Write`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Console;

impl Console {
    /// Polls the line status until `bit` is set, at most [`POLL_LIMIT`] times.
    fn wait_for(bit: u8) {
        for _ in 0..POLL_LIMIT {
            if cpu::com1_line_status() & bit != 0 {
                return;
            }
            core::hint::spin_loop();
        }
    }

    fn put(b: u8) {
        Self::wait_for(LSR_THRE);
        cpu::com1_write(b);
    }

    /// Waits (bounded) until the UART has sent its last byte, so that an
    /// emulator stopped right after still shows the whole output (Bochs
    /// models the transmit time).
    pub fn flush() {
        Self::wait_for(LSR_TEMT);
    }
}

impl fmt::Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        s.bytes().for_each(Console::put);
        Ok(())
    }
}
