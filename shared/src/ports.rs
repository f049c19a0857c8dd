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
