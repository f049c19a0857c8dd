//! Ending a run: [`exit_steps`] executes `shared::ports::exit_steps`
//! (QEMU's `isa-debug-exit`, Bochs' magic breakpoint or shutdown port),
//! which end an emulator; on a machine they do not end (real hardware, or
//! QEMU without the exit device) the caller then halts ([`halt_forever`])
//! or reboots after a delay ([`delay_ms`], [`reset_machine`]).

use crate::port::{inb, outb};
use shared::ports::{exit_steps as steps, ExitStep};

/// Executes the emulator exit steps for `status` (0 = pass) and returns if
/// none of them ended the machine.
pub fn exit_steps(status: u8) {
    for step in steps(status) {
        match step {
            // SAFETY: the exit-convention ports (0xf4, 0x8900) are unused on
            // machines without the matching emulator device.
            ExitStep::Out(port, v) => unsafe { outb(port, v) },
            // SAFETY: `xchg bx, bx` only swaps BX with itself.
            ExitStep::MagicBreak => unsafe { core::arch::asm!("xchg bx, bx", options(nomem, nostack)) },
        }
    }
}

/// Ends the run with `status` (0 = pass) and never returns: the exit steps,
/// then a halt, which is where real hardware stays.
pub fn exit_emulator(status: u8) -> ! {
    exit_steps(status);
    halt_forever()
}

/// Disables interrupts and halts this CPU for good.
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: CLI; HLT only stops this CPU.
        unsafe { core::arch::asm!("cli; hlt", options(nomem, nostack)) };
    }
}

/// The 8254 PIT's input clock in Hz.
const PIT_HZ: u32 = 1_193_182;
/// Polls of port 0x61 per 10 ms chunk before the PIT counts as stopped
/// (modern chipsets can gate its clock off).
const PIT_POLL_LIMIT: u32 = 2_000_000;

/// Waits about `ms` milliseconds, counted in 10 ms chunks by the 8254 PIT's
/// channel 2 in mode 0 (interrupt on terminal count), whose output is read
/// back through port 0x61 bit 5 (the PC speaker gate, bit 0, enables it;
/// the speaker itself, bit 1, stays off). Returns false when the PIT never
/// reached terminal count: the wait then lasted as long as the bounded
/// polling did, which is not a measured time.
pub fn delay_ms(ms: u32) -> bool {
    let count = (PIT_HZ / 100) as u16; // 10 ms
    let mut counted = true;
    for _ in 0..ms.div_ceil(10) {
        // SAFETY: ports 0x42/0x43 are PIT channel 2 and the mode register,
        // 0x61 the speaker/gate control, on every PC; nothing else uses
        // channel 2 here and the speaker stays off.
        unsafe {
            outb(0x61, (inb(0x61) & !0x03) | 0x01);
            outb(0x43, 0b1011_0000); // channel 2, lobyte/hibyte, mode 0, binary
            outb(0x42, count as u8);
            outb(0x42, (count >> 8) as u8);
        }
        // SAFETY: as above; reading 0x61 has no side effects.
        counted &= (0..PIT_POLL_LIMIT).any(|_| unsafe { inb(0x61) } & 0x20 != 0);
    }
    counted
}

/// Resets the machine: the reset control register at 0xCF9 (a full reset,
/// as the PCH and PIIX datasheets define it), then the keyboard
/// controller's pulse-reset command, then a triple fault (an IDT of limit 0
/// makes the breakpoint exception shut the CPU down, and a shutdown resets a
/// PC). Never returns.
pub fn reset_machine() -> ! {
    // SAFETY: 0xCF9 and 0x64 are the reset control register and the
    // keyboard controller's command port on PCs; resetting is the intent.
    unsafe {
        outb(0xcf9, 0x02);
        outb(0xcf9, 0x06);
    }
    delay_ms(50);
    // SAFETY: as above.
    unsafe { outb(0x64, 0xfe) };
    delay_ms(50);
    let null_idt = [0u16; 5];
    // SAFETY: loading an empty IDT and raising #BP is meant to triple-fault
    // this CPU, which resets the machine.
    unsafe { core::arch::asm!("lidt [{}]", "int3", in(reg) &null_idt, options(nostack)) };
    halt_forever()
}
