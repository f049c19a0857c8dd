//! The guest's processors on the machine (the library's `smp::Smp`): the
//! local APIC through bare-rt (xAPIC MMIO or x2APIC MSRs), bare-rt's AP
//! trampoline with the APs held in real mode, the APs' stacks and entry,
//! which CPU runs the caller (from its stack), sleeping until an
//! interrupt, and a store that catches its own #PF (per CPU, for the
//! `smp/...` checks).
//!
//! With `cpu`, `phys`, `modes`, `long` and `paging`, one of the modules of
//! the binary that contain `unsafe` code.

use super::machine::BareMachine;
use super::{console::Console, paging, trap};
use crate::TALLY;
use bare_rt::apic::LocalApic;
use bare_rt::smp::Trampoline;
use core::arch::{asm, global_asm};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use guest_unikernel::smp::{self, RealModeRecord, Smp, MAX_CPUS};
use shared::apic::{Icr, CPUID1_ECX_X2APIC};

/// Bytes of stack per AP.
const AP_STACK: usize = 64 << 10;

#[repr(C, align(4096))]
struct Stacks([[u8; AP_STACK]; MAX_CPUS - 1]);
/// The APs' stacks (ticket t runs on stack t, CPU index t + 1).
static mut AP_STACKS: Stacks = Stacks([[0; AP_STACK]; MAX_CPUS - 1]);

unsafe extern "C" {
    fn guest_smp_probe_write(addr: u64, value: u64) -> u64;
    static guest_smp_probe_at: u8;
    static guest_smp_probe_resume: u8;
}

/// The installed trampoline's page (0: none).
static TRAMPOLINE: AtomicU64 = AtomicU64::new(0);

/// The index of the CPU running the caller: 0 on the BSP's boot stack,
/// t + 1 on AP stack t.
pub fn cpu_index() -> usize {
    let rsp: u64;
    // SAFETY: reading RSP has no effect.
    unsafe { asm!("mov {}, rsp", out(reg) rsp, options(nomem, nostack, preserves_flags)) };
    let base = (&raw const AP_STACKS) as u64;
    let end = base + (AP_STACK * (MAX_CPUS - 1)) as u64;
    if (base..end).contains(&rsp) { ((rsp - base) as usize / AP_STACK) + 1 } else { 0 }
}

fn apic() -> Option<LocalApic> {
    // SAFETY: every x86-64 CPU has a local APIC; bare-rt's boot tables
    // identity-map its page (under Quadrant the hypervisor emulates it).
    unsafe { LocalApic::current() }
}

/// A per-CPU expected fault of [`Smp::probe_write`].
struct ProbeSlot {
    armed: AtomicBool,
    vector: AtomicU64,
    error_code: AtomicU64,
    cr2: AtomicU64,
}
static PROBES: [ProbeSlot; MAX_CPUS] = [const {
    ProbeSlot { armed: AtomicBool::new(false), vector: AtomicU64::new(0), error_code: AtomicU64::new(0), cr2: AtomicU64::new(0) }
}; MAX_CPUS];

// The probe store: a fault at `guest_smp_probe_at` resumes at
// `guest_smp_probe_resume` (see `fixup`), which returns 1.
global_asm!(
    ".section .text.guest_smp_probe, \"ax\"",
    ".global guest_smp_probe_write",
    "guest_smp_probe_write:",
    ".global guest_smp_probe_at",
    "guest_smp_probe_at:",
    "    mov [rdi], rsi",
    "    xor eax, eax",
    "    ret",
    ".global guest_smp_probe_resume",
    "guest_smp_probe_resume:",
    "    mov eax, 1",
    "    ret",
    ".text",
);

/// A #PF at the armed probe of this CPU: recorded, and the probe resumes
/// (returns 1). False for any other exception.
pub fn fixup(frame: &mut guest_unikernel::trap::TrapFrame) -> bool {
    let slot = &PROBES[cpu_index()];
    if !slot.armed.load(SeqCst) || frame.rip != (&raw const guest_smp_probe_at) as u64 {
        return false;
    }
    slot.vector.store(frame.vector, SeqCst);
    slot.error_code.store(frame.error_code, SeqCst);
    slot.cr2.store(super::cpu::read_cr2(), SeqCst);
    slot.armed.store(false, SeqCst);
    frame.rip = (&raw const guest_smp_probe_resume) as u64;
    true
}

impl Smp for BareMachine {
    fn cpu_index(&self) -> usize {
        cpu_index()
    }
    fn apic_id(&mut self) -> u32 {
        apic().map_or(u32::MAX, |a| a.id())
    }
    fn apic_base(&mut self) -> u64 {
        // SAFETY: IA32_APIC_BASE exists on every CPU with a local APIC.
        unsafe { bare_rt::apic::rdmsr(shared::apic::IA32_APIC_BASE) }
    }
    fn is_x2apic(&mut self) -> bool {
        apic().is_some_and(|a| a.is_x2apic())
    }
    fn enable_x2apic(&mut self) -> bool {
        if super::cpu::cpuid(1, 0).ecx & CPUID1_ECX_X2APIC == 0 {
            return false;
        }
        let Some(mut a) = apic() else { return false };
        if !a.is_x2apic() {
            // SAFETY: CPUID says x2APIC is there; this CPU stops using the
            // xAPIC page (every access goes through `apic()`, which reads
            // the mode again).
            unsafe { a.enable_x2apic() };
        }
        true
    }
    fn apic_enable(&mut self) {
        if let Some(a) = apic() {
            a.software_enable(smp::vector::SPURIOUS);
        }
    }
    fn send_ipi(&mut self, icr: Icr) {
        if let Some(a) = apic() {
            a.send(icr);
        }
    }
    fn eoi(&mut self) {
        if let Some(a) = apic() {
            a.eoi();
        }
    }
    fn install_trampoline(&mut self, page: u64) -> u8 {
        let stacks = (&raw const AP_STACKS) as u64;
        // SAFETY: the check chose `page` from available RAM below 1 MiB
        // outside every boot structure and the engine's window; the stacks
        // are this module's and bare-rt's boot PML4 maps the image.
        let t = unsafe { Trampoline::install(page, paging::boot_cr3(), stacks, AP_STACK as u64, true) };
        TRAMPOLINE.store(page, SeqCst);
        t.vector()
    }
    fn trampoline_tickets(&mut self) -> u32 {
        match TRAMPOLINE.load(SeqCst) {
            0 => 0,
            p => Trampoline::at(p).tickets(),
        }
    }
    fn real_mode_record(&mut self, t: u32) -> Option<RealModeRecord> {
        let r = Trampoline::at(TRAMPOLINE.load(SeqCst)).record(t)?;
        Some(RealModeRecord { cs: r.cs, msw: r.msw, flags: r.flags, sp: r.sp, released: r.released != 0 })
    }
    fn reuse_ticket(&mut self, t: u32) {
        if TRAMPOLINE.load(SeqCst) != 0 {
            Trampoline::at(TRAMPOLINE.load(SeqCst)).reuse_ticket(t);
        }
    }
    fn release_aps(&mut self) {
        if TRAMPOLINE.load(SeqCst) != 0 {
            Trampoline::at(TRAMPOLINE.load(SeqCst)).release();
        }
    }
    fn wait_for_interrupt(&mut self) {
        // SAFETY: the IDT has gates for every vector the guest's APICs send;
        // the xmm clobbers keep the compiler from holding values in SSE
        // registers across the window (the handlers do not save them).
        unsafe {
            asm!("sti", "hlt", "cli",
                out("xmm0") _, out("xmm1") _, out("xmm2") _, out("xmm3") _, out("xmm4") _, out("xmm5") _,
                out("xmm6") _, out("xmm7") _, out("xmm8") _, out("xmm9") _, out("xmm10") _, out("xmm11") _,
                out("xmm12") _, out("xmm13") _, out("xmm14") _, out("xmm15") _, options(nostack))
        };
    }
    fn interrupt_window(&mut self) {
        // SAFETY: as in `wait_for_interrupt`; STI's shadow covers the NOP,
        // so a pending interrupt is taken right after it.
        unsafe {
            asm!("sti", "nop", "cli",
                out("xmm0") _, out("xmm1") _, out("xmm2") _, out("xmm3") _, out("xmm4") _, out("xmm5") _,
                out("xmm6") _, out("xmm7") _, out("xmm8") _, out("xmm9") _, out("xmm10") _, out("xmm11") _,
                out("xmm12") _, out("xmm13") _, out("xmm14") _, out("xmm15") _, options(nostack))
        };
    }
    fn probe_write(&mut self, va: u64, value: u64) -> Result<(), (u8, u64, u64)> {
        if !paging::linear_write_allowed(va, value) {
            return Err((0xff, 0, 0));
        }
        let slot = &PROBES[cpu_index()];
        slot.armed.store(true, SeqCst);
        // SAFETY: `linear_write_allowed`: a test address whose translation
        // (if any) is scratch RAM where no Rust object lives; a #PF at the
        // store resumes through `fixup`.
        let faulted = unsafe { guest_smp_probe_write(va, value) };
        slot.armed.store(false, SeqCst);
        if faulted == 0 {
            Ok(())
        } else {
            Err((slot.vector.load(SeqCst) as u8, slot.error_code.load(SeqCst), slot.cr2.load(SeqCst)))
        }
    }
    fn cmpxchg(&mut self, va: u64, old: u64, new: u64) -> u64 {
        paging::linear_cmpxchg(va, old, new).unwrap_or(!old)
    }
    fn delay(&mut self, n: u64) {
        for _ in 0..n {
            core::hint::spin_loop();
        }
    }
}

/// An AP, from bare-rt's trampoline: the guest's IDT, then the library's
/// job loop.
pub fn ap_main() -> ! {
    trap::load();
    guest_unikernel::smp::ap_loop(&mut BareMachine, &mut Console, &TALLY)
}
