//! The guest's port I/O. Every guest IN/OUT exits (unconditional I/O
//! exiting), so the guest never touches a real device: the hypervisor
//! emulates just the exit conventions (DESIGN.md 5):
//!
//! * COM1 (0x3f8..0x3ff): a transmit-only 16550 whose line status always
//!   says "transmitter empty"; bytes are collected into whole lines and
//!   printed on the hypervisor's console unchanged, so the runner parses
//!   guest lines the same way bare and under the hypervisor;
//! * 0xe9 (debug console): same, into its own line buffer;
//! * 0xf4 (status port): ends the VM with the written status;
//! * any other port: reads return all ones (nothing there), writes are
//!   dropped; the first access to each is logged.

use shared::ports;

/// Line status register offset and the value meaning "THR and transmitter
/// empty" (16550: LSR bits 5 and 6).
const LSR: u16 = 5;
const LSR_IDLE: u32 = 0x60;

/// A line assembler for one guest console.
#[derive(Debug)]
pub struct LineBuffer {
    buf: [u8; 512],
    len: usize,
}

impl Default for LineBuffer {
    fn default() -> Self {
        LineBuffer { buf: [0; 512], len: 0 }
    }
}

impl LineBuffer {
    /// Adds a byte; returns a complete line (without `\r`/`\n`) when the
    /// byte ends one or the buffer is full.
    pub fn push(&mut self, b: u8) -> Option<&str> {
        match b {
            b'\r' => None,
            b'\n' => Some(self.take()),
            _ => {
                self.buf[self.len] = b;
                self.len += 1;
                (self.len == self.buf.len()).then(|| self.take())
            }
        }
    }

    /// Whatever is buffered (for the end of the run).
    pub fn pending(&mut self) -> Option<&str> {
        (self.len > 0).then(|| self.take())
    }

    fn take(&mut self) -> &str {
        let n = core::mem::take(&mut self.len);
        // Guest bytes need not be UTF-8: show the valid prefix.
        match core::str::from_utf8(&self.buf[..n]) {
            Ok(s) => s,
            Err(e) => core::str::from_utf8(&self.buf[..e.valid_up_to()]).unwrap_or(""),
        }
    }
}

/// What an OUT does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutEffect {
    /// A byte for the COM1 console.
    Com1(u8),
    /// A byte for the debug console.
    DebugCon(u8),
    /// The guest ended the run with this status.
    Exit(u8),
    /// A COM1 register write other than data (divisor, line control): ignored.
    Ignored,
    /// A port nothing emulates.
    Unclaimed,
}

/// Decides a guest OUT of `size` bytes (1, 2 or 4) to `port`.
pub fn port_out(port: u16, size: u8, value: u32) -> OutEffect {
    let byte = value as u8;
    match port {
        ports::COM1 => OutEffect::Com1(byte),
        p if (ports::COM1 + 1..ports::COM1 + 8).contains(&p) => OutEffect::Ignored,
        ports::DEBUGCON => OutEffect::DebugCon(byte),
        // isa-debug-exit takes the status from the low byte whatever the size.
        ports::EXIT if size >= 1 => OutEffect::Exit(byte),
        _ => OutEffect::Unclaimed,
    }
}

/// The value a guest IN of `size` bytes from `port` reads, and whether the
/// port is emulated at all.
pub fn port_in(port: u16, size: u8) -> (u32, bool) {
    let ones = match size {
        1 => 0xff,
        2 => 0xffff,
        _ => 0xffff_ffff,
    };
    match port {
        p if p == ports::COM1 + LSR => (LSR_IDLE, true),
        p if (ports::COM1..ports::COM1 + 8).contains(&p) => (0, true),
        _ => (ones, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_assembled_without_cr() {
        let mut l = LineBuffer::default();
        let mut got = std::vec::Vec::new();
        for b in b"check PASS a/b: ok\r\nsecond" {
            if let Some(s) = l.push(*b) {
                got.push(std::string::String::from(s));
            }
        }
        assert_eq!(got, ["check PASS a/b: ok"]);
        assert_eq!(l.pending(), Some("second"));
        assert_eq!(l.pending(), None);
    }

    #[test]
    fn a_full_buffer_is_flushed() {
        let mut l = LineBuffer::default();
        let n = (0..600).filter(|_| l.push(b'x').is_some()).count();
        assert_eq!(n, 1);
    }

    #[test]
    fn exit_conventions() {
        assert_eq!(port_out(0x3f8, 1, 0x41), OutEffect::Com1(b'A'));
        assert_eq!(port_out(0xe9, 1, 0x41), OutEffect::DebugCon(b'A'));
        assert_eq!(port_out(0xf4, 4, 0x103), OutEffect::Exit(3));
        assert_eq!(port_out(0x3fb, 1, 0x80), OutEffect::Ignored);
        assert_eq!(port_out(0x80, 1, 0), OutEffect::Unclaimed);
        assert_eq!(port_in(0x3fd, 1), (0x60, true));
        assert_eq!(port_in(0x60, 2), (0xffff, false));
    }
}
