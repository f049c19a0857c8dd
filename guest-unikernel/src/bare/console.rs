//! The console: COM1, polled. Before each byte the transmitter-holding-
//! register-empty bit (line status bit 5) is polled a bounded number of
//! times, so a missing or stuck UART slows output down but never hangs the
//! guest. The UART is not programmed: emulators and the hypervisor accept
//! bytes as they come, and under the hypervisor every port access is a VM
//! exit, so the guest touches only the data and line-status registers.
//!
//! Several CPUs write at once: each CPU's text is kept in a line buffer of
//! its own and a whole line goes out under one lock, so lines never mix.

use super::cpu;
use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use guest_unikernel::smp::MAX_CPUS;

/// Bytes a line buffer holds before it is written out anyway.
const LINE: usize = 256;

/// One CPU's line so far (only that CPU touches it).
struct LineBuf {
    bytes: [AtomicU8; LINE],
    len: AtomicUsize,
}

static LINES: [LineBuf; MAX_CPUS] =
    [const { LineBuf { bytes: [const { AtomicU8::new(0) }; LINE], len: AtomicUsize::new(0) } }; MAX_CPUS];
/// Held while a line goes out.
static UART_LOCK: AtomicBool = AtomicBool::new(false);

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
        Self::flush_line();
        Self::wait_for(LSR_TEMT);
    }
}

impl Console {
    /// Writes this CPU's buffered line (and `end`, if any) under the lock.
    fn emit(buf: &LineBuf, end: Option<u8>) {
        while UART_LOCK.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
            core::hint::spin_loop();
        }
        let n = buf.len.load(Ordering::Relaxed);
        for b in &buf.bytes[..n] {
            Console::put(b.load(Ordering::Relaxed));
        }
        if let Some(b) = end {
            Console::put(b);
        }
        buf.len.store(0, Ordering::Relaxed);
        UART_LOCK.store(false, Ordering::Release);
    }

    /// Writes out what this CPU has buffered (a line cut short: the fatal
    /// paths).
    pub fn flush_line() {
        let buf = &LINES[super::smp::cpu_index()];
        if buf.len.load(Ordering::Relaxed) > 0 {
            Console::emit(buf, None);
        }
    }
}

impl fmt::Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let buf = &LINES[super::smp::cpu_index()];
        for b in s.bytes() {
            if b == b'\n' {
                Console::emit(buf, Some(b));
                continue;
            }
            let n = buf.len.load(Ordering::Relaxed);
            buf.bytes[n].store(b, Ordering::Relaxed);
            buf.len.store(n + 1, Ordering::Relaxed);
            if n + 1 == LINE {
                Console::emit(buf, None);
            }
        }
        Ok(())
    }
}
