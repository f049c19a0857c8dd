//! Quadrant's guest unikernel (bare-metal binary): a Multiboot 1 kernel that
//! runs the self-checks of [`guest_unikernel::checks`] and reports each on
//! COM1 (and, under the Quadrant hypervisor, by hypercall), then ends the
//! run with status 0 when no check failed, 1 when one did, 2 when an
//! exception or panic cut the run short.
//!
//! `bare_rt` brings the guest to long mode and calls
//! [`quadrant_kernel_main`]. The binary's own module [`bare`] is the machine:
//! `bare::cpu` (instructions and exception stubs) and `bare::phys` (physical
//! memory) hold all its `unsafe` code; the console, the IDT and the
//! `Machine` implementation build on them.
#![no_std]
#![no_main]

mod bare;

use bare::{console::Console, machine::BareMachine, trap};
use bare_rt as _;
use core::fmt::Write;
use core::sync::atomic::{AtomicBool, Ordering};
use guest_unikernel::checks::{self, Ctx};
use guest_unikernel::cmdline::Crash;
use guest_unikernel::report::{Detail, Tally};

/// The run's result counts, reachable from the exception and panic paths.
pub static TALLY: Tally = Tally::new();

/// The Multiboot entry's continuation in long mode.
#[unsafe(no_mangle)]
extern "C" fn quadrant_kernel_main(_magic: u32, info: u32) -> ! {
    let mut out = Console;
    let _ = writeln!(out, "quadrant-guest: protocol version {}", shared::PROTOCOL_VERSION);
    trap::init();
    bare::cpu::mask_legacy_pics();
    let mut m = BareMachine;
    let mut ctx = Ctx::start(&mut m, &mut out, &TALLY, u64::from(info));
    ctx.run_all();
    if let Some(c) = ctx.config.crash {
        let _ = writeln!(ctx.out, "quadrant-guest: crashing on purpose ({c:?})");
        match c {
            Crash::Ud => bare::cpu::raise_ud(),
            // Above bare-rt's identity map of the low 4 GiB: not present.
            Crash::Pf => {
                let v = bare::cpu::touch(0x1_0000_0000 + 0xdead_b000);
                let _ = writeln!(ctx.out, "quadrant-guest: no #PF (read {v:#x})");
            }
            Crash::Panic => panic!("crash=panic on the command line"),
            Crash::TripleFault => {
                Console::flush();
                bare::cpu::triple_fault()
            }
        }
    }
    checks::write_summary(&mut out, &TALLY);
    Console::flush();
    bare_rt::exit::exit_emulator(TALLY.exit_status())
}

/// An AP, from bare-rt's trampoline (ticket t runs as CPU t + 1).
#[unsafe(no_mangle)]
extern "C" fn quadrant_ap_main(_ticket: u32, _page: u64) -> ! {
    bare::smp::ap_main()
}

/// Set once a fatal report started: a second fault while reporting stops
/// at once instead of recursing.
static FATAL: AtomicBool = AtomicBool::new(false);

/// Reports `name` as failed with `detail`, prints the summary and ends the
/// run with status 2.
pub fn fatal(name: &str, detail: &str) -> ! {
    if FATAL.swap(true, Ordering::Relaxed) {
        let _ = writeln!(Console, "quadrant-guest: fault while reporting a fault ({name}: {detail})");
        Console::flush();
        bare_rt::exit::exit_emulator(2);
    }
    trap::report_fatal(name, detail)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    let mut d = Detail::new();
    let _ = write!(d, "{}", info.message());
    if let Some(l) = info.location() {
        let _ = write!(d, " at {}:{}", l.file(), l.line());
    }
    fatal("guest/panic", d.as_str())
}
