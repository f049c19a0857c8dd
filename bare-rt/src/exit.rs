//! Ending the emulator with a status: executes `shared::ports::exit_steps`
//! (QEMU's `isa-debug-exit`, Bochs' magic breakpoint or shutdown port), then
//! halts, which is where real hardware stays.

use crate::port::outb;
use shared::ports::{exit_steps, ExitStep};

/// Ends the run with `status` (0 = pass) and never returns.
pub fn exit_emulator(status: u8) -> ! {
    for step in exit_steps(status) {
        match step {
            // SAFETY: the exit-convention ports (0xf4, 0x8900) are unused on
            // machines without the matching emulator device.
            ExitStep::Out(port, v) => unsafe { outb(port, v) },
            // SAFETY: `xchg bx, bx` only swaps BX with itself.
            ExitStep::MagicBreak => unsafe { core::arch::asm!("xchg bx, bx", options(nomem, nostack)) },
        }
    }
    halt_forever()
}

/// Disables interrupts and halts this CPU for good.
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: CLI; HLT only stops this CPU.
        unsafe { core::arch::asm!("cli; hlt", options(nomem, nostack)) };
    }
}
