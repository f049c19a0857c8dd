//! Port I/O, the only instructions this crate's safe API wraps.

/// Writes a byte to an I/O port.
///
/// # Safety
/// Port writes reach devices directly: the caller must know what the device
/// at `port` does with the byte (here: consoles and exit ports only).
#[inline(always)]
pub unsafe fn outb(port: u16, value: u8) {
    // SAFETY: the caller vouches for the device behind `port`; OUT touches no
    // memory and no stack.
    unsafe {
        core::arch::asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags));
    }
}

/// Reads a byte from an I/O port.
///
/// # Safety
/// As for [`outb`]: reads can have side effects on the device.
#[inline(always)]
pub unsafe fn inb(port: u16) -> u8 {
    let v: u8;
    // SAFETY: the caller vouches for the device behind `port`.
    unsafe {
        core::arch::asm!("in al, dx", out("al") v, in("dx") port, options(nomem, nostack, preserves_flags));
    }
    v
}
