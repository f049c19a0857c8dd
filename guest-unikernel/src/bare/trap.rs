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

/// The IDT: 16 bytes per gate, one per exception vector.
static IDT: [AtomicU64; 2 * cpu::EXCEPTION_VECTORS] = [const { AtomicU64::new(0) }; 2 * cpu::EXCEPTION_VECTORS];

/// Fills the IDT and loads IDTR.
pub fn init() {
    let cs = cpu::read_cs();
    for v in 0..cpu::EXCEPTION_VECTORS {
        let [lo, hi] = interrupt_gate(cpu::exception_stub(v), cs, 0);
        IDT[2 * v].store(lo, Ordering::Relaxed);
        IDT[2 * v + 1].store(hi, Ordering::Relaxed);
    }
    // SAFETY: IDT is a static (lives forever) holding a present gate to a
    // stub for every vector it covers; AtomicU64 has u64's layout.
    unsafe { cpu::load_idt(IDT.as_ptr() as u64, (core::mem::size_of_val(&IDT) - 1) as u16) };
}

/// Handles an exception the stubs caught: a probe's (see [`super::long`])
/// resumes; any other ends the run.
pub fn handle(frame: &mut TrapFrame) {
    if super::long::fixup(frame) {
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
