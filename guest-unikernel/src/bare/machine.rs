//! [`Machine`] on bare metal (or under the hypervisor): the instructions of
//! [`super::cpu`] and the memory of [`super::phys`].

use super::{cpu, modes, paging, phys};
use guest_unikernel::machine::{Cpuid, Handoff, Machine, Range};
use guest_unikernel::modes::layout::EngineInfo;
use core::sync::atomic::{AtomicBool, Ordering};
use shared::bench::BenchCounters;
use shared::hypercall::{CheckRecord, Hypercall, MmuStats, ShadowWalkRecord, STATUS_BAD_ARGUMENT};
use shared::multiboot::PhysRead;

/// Held while a CPU runs the mode-switch engine.
static ENGINE: AtomicBool = AtomicBool::new(false);

/// The machine the guest runs on.
#[derive(Clone, Copy, Debug, Default)]
pub struct BareMachine;

impl PhysRead for BareMachine {
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        phys::read(addr, buf)
    }
}

impl Machine for BareMachine {
    fn cpuid(&mut self, leaf: u32, subleaf: u32) -> Cpuid {
        cpu::cpuid(leaf, subleaf)
    }
    fn cr0(&mut self) -> u64 {
        cpu::read_cr0()
    }
    fn cr4(&mut self) -> u64 {
        cpu::read_cr4()
    }
    fn efer(&mut self) -> u64 {
        cpu::read_efer()
    }
    fn handoff(&self) -> Handoff {
        let h = bare_rt::boot::handoff();
        Handoff { magic: h.magic, info: h.info, cr0: h.cr0, eflags: h.eflags }
    }
    fn image(&self) -> Range {
        phys::image()
    }
    /// Only hypercalls without memory arguments go through here; the others
    /// have their own methods that pass a real object.
    fn vmcall(&mut self, call: Hypercall, args: [u64; 3]) -> u64 {
        match call {
            // SAFETY: Version names no memory.
            Hypercall::Version => unsafe { cpu::vmcall(call as u64, args) },
            Hypercall::ReportCheck | Hypercall::MmuStats | Hypercall::ShadowWalk | Hypercall::BenchCounters => {
                STATUS_BAD_ARGUMENT
            }
        }
    }
    fn report_check(&mut self, rec: &CheckRecord) -> u64 {
        // SAFETY: ReportCheck only reads the record, which lives until the
        // call returns; RBX is its physical address (identity map).
        unsafe { cpu::vmcall(Hypercall::ReportCheck as u64, [phys::phys_addr(rec), 0, 0]) }
    }
    fn scratch_write(&mut self, addr: u64, value: u64) -> bool {
        !paging::write_refused(addr, value) && phys::scratch_write(addr, value)
    }
    fn scratch_read(&mut self, addr: u64) -> Option<u64> {
        phys::scratch_read(addr)
    }
    fn install_engine(&mut self) -> Option<EngineInfo> {
        modes::install()
    }
    fn low_write(&mut self, addr: u64, bytes: &[u8]) -> bool {
        modes::write(addr, bytes)
    }
    fn low_read(&mut self, addr: u64, bytes: &mut [u8]) -> bool {
        modes::read(addr, bytes)
    }
    fn run_engine(&mut self) {
        // One CPU at a time: the engine's window, stack and variables are
        // at fixed low addresses.
        while ENGINE.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
            core::hint::spin_loop();
        }
        // SAFETY: the Machine contract: callers install the engine first and
        // load a program (guest_unikernel::modes::engine::load) whose tables
        // identity-map the low window and whose probes write only into the
        // window and into scratch frames they allocated above the image.
        unsafe { modes::run() }
        ENGINE.store(false, Ordering::Release);
    }
    fn long_cpu(&mut self) -> Option<&mut dyn guest_unikernel::longcpu::LongCpu> {
        Some(self)
    }
    fn smp(&mut self) -> Option<&mut dyn guest_unikernel::smp::Smp> {
        Some(self)
    }
    fn cr3(&mut self) -> u64 {
        paging::read_cr3()
    }
    fn load_cr3(&mut self, cr3: u64) -> bool {
        paging::load_cr3(cr3)
    }
    fn invlpg(&mut self, va: u64) {
        paging::invlpg(va)
    }
    fn linear_read(&mut self, va: u64) -> Option<u64> {
        paging::linear_read(va)
    }
    fn linear_write(&mut self, va: u64, value: u64) -> bool {
        paging::linear_write(va, value)
    }
    fn mmu_stats(&mut self) -> Option<MmuStats> {
        paging::mmu_stats()
    }
    fn shadow_walk(&mut self, la: u64) -> Option<ShadowWalkRecord> {
        paging::shadow_walk(la)
    }
    fn rdtsc(&mut self) -> u64 {
        cpu::rdtsc()
    }
    fn bench_counters(&mut self) -> Option<BenchCounters> {
        paging::bench_counters()
    }
}
