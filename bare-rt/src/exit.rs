//! Ending the emulator with a status, the same way everywhere:
//! QEMU's `isa-debug-exit` on port 0xf4, then (still running, so not QEMU)
//! Bochs: the magic breakpoint `xchg bx, bx` for a pass (the runner's debugger
//! script answers it with `quit`, exit 0), the shutdown port for a failure
//! (Bochs panics, exit 1). On real hardware nothing of this stops the CPU, so
//! it halts.

use crate::port::outb;
use shared::ports;

/// Ends the run with `status` (0 = pass) and never returns.
pub fn exit_emulator(status: u8) -> ! {
    // SAFETY: 0xf4 is the status port of the exit conventions (an unused port
    // without isa-debug-exit); 0x8900 is Bochs' shutdown port, absent elsewhere.
    unsafe {
        outb(ports::EXIT, status);
        if status == 0 {
            core::arch::asm!("xchg bx, bx", options(nomem, nostack));
        }
        for b in ports::BOCHS_SHUTDOWN_WORD {
            outb(ports::BOCHS_SHUTDOWN, *b);
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
