//! The guest's IDT and what happens on an exception. Every exception vector
//! gets a 64-bit interrupt gate to its stub in [`super::cpu`]; the handler
//! reports an unexpected exception as
//! `check FAIL guest/unexpected-exception: #PF ec=... rip=... cr2=...`,
//! prints the summary and ends the run with status 2. (The fault harness
//! will add expected faults here: a check arms an expectation, the handler
//! records the fault and resumes.)

use super::{console::Console, cpu, machine::BareMachine};
use crate::TALLY;
use core::sync::atomic::{AtomicU64, Ordering};
use guest_unikernel::checks;
use guest_unikernel::report::Detail;
use guest_unikernel::trap::{interrupt_gate, ExceptionReport, TrapFrame};
use shared::Outcome;

/// The IDT: 16 bytes per gate, all 256 vectors (the exceptions and the
/// interrupts of `guest_unikernel::smp::vector` have gates).
static IDT: [AtomicU64; 2 * 256] = [const { AtomicU64::new(0) }; 2 * 256];

/// Fills the IDT and loads IDTR (the BSP, once).
pub fn init() {
    let cs = cpu::read_cs();
    let set = |v: usize, stub: u64| {
        let [lo, hi] = interrupt_gate(stub, cs, 0);
        IDT[2 * v].store(lo, Ordering::Relaxed);
        IDT[2 * v + 1].store(hi, Ordering::Relaxed);
    };
    for v in 0..cpu::EXCEPTION_VECTORS {
        set(v, cpu::exception_stub(v));
    }
    for (i, &v) in cpu::IRQ_VECTORS.iter().enumerate() {
        set(v as usize, cpu::irq_stub(i));
    }
    load();
}

/// Loads IDTR with the IDT [`init`] filled (an AP).
pub fn load() {
    // SAFETY: IDT is a static (lives forever) holding a present gate to a
    // stub for every vector the guest can see; AtomicU64 has u64's layout.
    unsafe { cpu::load_idt(IDT.as_ptr() as u64, (core::mem::size_of_val(&IDT) - 1) as u16) };
}

/// Handles an exception or interrupt the stubs caught: an interrupt goes to
/// the SMP code; a probe's fault (see [`super::long`], [`super::smp`])
/// resumes; any other exception ends the run.
pub fn handle(frame: &mut TrapFrame) {
    if frame.vector >= 32 {
        guest_unikernel::smp::on_interrupt(&mut BareMachine, frame.vector as u8);
        return;
    }
    if super::smp::fixup(frame) || super::long::fixup(frame) {
        return;
    }
    let mut d = Detail::new();
    let during = TALLY.current().and_then(checks::check_at).map(|c| c.name);
    let _ = core::fmt::write(&mut d, format_args!("{}", ExceptionReport { frame, cr2: cpu::read_cr2(), during }));
    crate::fatal("guest/unexpected-exception", d.as_str());
}

/// Reports a fatal failure through the normal path (so it also reaches the
/// hypervisor when reporting by hypercall), then the summary, then exit 2.
pub fn report_fatal(name: &str, detail: &str) -> ! {
    let mut out = Console;
    checks::report(&mut BareMachine, &mut out, &TALLY, Outcome::Fail, name, detail);
    checks::write_summary(&mut out, &TALLY);
    Console::flush();
    bare_rt::exit::exit_emulator(2)
}
