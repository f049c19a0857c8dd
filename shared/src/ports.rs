//! I/O ports of Quadrant's exit conventions (the same as QEMU's
//! kvm-unit-tests and Xen's XTF, so external Multiboot test kernels run too).

/// Console: the first 16550 UART. Check lines and logs go here.
pub const COM1: u16 = 0x3f8;
/// Debug console (Bochs' and QEMU's port 0xe9 hack): a byte written here is
/// printed by the emulator; under the hypervisor it joins the console.
pub const DEBUGCON: u16 = 0xe9;
/// Status port: writing V ends the run with status V (0 = pass). QEMU's
/// `isa-debug-exit` device turns it into exit status `(V << 1) | 1`; under
/// the hypervisor it ends the VM.
pub const EXIT: u16 = 0xf4;
/// Bochs' shutdown port: the bytes of [`BOCHS_SHUTDOWN_WORD`] written here
/// make Bochs stop with a panic (exit status 1): the "fail" exit in Bochs.
pub const BOCHS_SHUTDOWN: u16 = 0x8900;
/// The word that stops Bochs through [`BOCHS_SHUTDOWN`].
pub const BOCHS_SHUTDOWN_WORD: &[u8] = b"Shutdown";

/// One step of ending a run (see [`exit_steps`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStep {
    /// Write a byte to a port.
    Out(u16, u8),
    /// Execute Bochs' magic breakpoint `xchg bx, bx` (a no-op elsewhere).
    MagicBreak,
}

/// The steps that end a run with `status` (0 = pass) on every supported
/// emulator, in order: QEMU's `isa-debug-exit` stops at the first; Bochs
/// stops at the magic breakpoint (pass: the runner's debugger script answers
/// it with `quit`, exit 0) or at the shutdown port (fail: Bochs panics, exit
/// 1). Real hardware survives them all, and the caller then halts.
pub fn exit_steps(status: u8) -> impl Iterator<Item = ExitStep> {
    let pass = (status == 0).then_some(ExitStep::MagicBreak);
    core::iter::once(ExitStep::Out(EXIT, status))
        .chain(pass)
        .chain(BOCHS_SHUTDOWN_WORD.iter().map(|b| ExitStep::Out(BOCHS_SHUTDOWN, *b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pass_exits_through_the_magic_breakpoint_before_shutdown() {
        let steps: [ExitStep; 10] = {
            let mut a = [ExitStep::MagicBreak; 10];
            exit_steps(0).enumerate().for_each(|(i, s)| a[i] = s);
            a
        };
        assert_eq!(steps[0], ExitStep::Out(EXIT, 0));
        assert_eq!(steps[1], ExitStep::MagicBreak);
        assert_eq!(steps[2], ExitStep::Out(BOCHS_SHUTDOWN, b'S'));
        assert_eq!(exit_steps(0).count(), 10);
    }

    #[test]
    fn failure_never_hits_the_magic_breakpoint() {
        assert!(exit_steps(3).all(|s| s != ExitStep::MagicBreak));
        assert_eq!(exit_steps(3).next(), Some(ExitStep::Out(EXIT, 3)));
    }
}
