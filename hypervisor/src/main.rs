//! Quadrant's guest unikernel (bare-metal binary).
#![no_std]
#![no_main]

use bare_rt as _;
use core::fmt::Write;

struct Com1;
impl Write for Com1 {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for b in s.bytes() {
            // SAFETY: COM1 data register; the emulators accept bytes without setup.
            unsafe { bare_rt::port::outb(shared::ports::COM1, b) };
        }
        Ok(())
    }
}

#[unsafe(no_mangle)]
extern "C" fn quadrant_kernel_main(magic: u32, _info: u32) -> ! {
    let h = bare_rt::boot::handoff();
    let ok = magic == 0x2BAD_B002;
    let _ = shared::line::write_check(&mut Com1, if ok { shared::Outcome::Pass } else { shared::Outcome::Fail },
        "boot/multiboot-magic", "");
    let _ = writeln!(Com1, " cr0={:#x}", h.cr0);
    bare_rt::exit::exit_emulator(if ok { 0 } else { 1 })
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    bare_rt::exit::exit_emulator(3)
}
