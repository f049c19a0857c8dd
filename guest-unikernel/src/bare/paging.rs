//! Long-mode paging from Rust for the `cache/...` and `long/...` checks:
//! MOV CR3, INVLPG and quadword loads and stores at linear test addresses,
//! each guarded so that the code, stack, IDT and every Rust object stay
//! reachable and untouched, and the MmuStats and BenchCounters hypercalls.
//!
//! With `cpu`, `phys` and `modes`, one of the modules of the binary that
//! contain `unsafe` code.

use super::{cpu, phys};
use core::arch::asm;
use core::sync::atomic::{AtomicU64, Ordering};
use guest_unikernel::machine::is_test_va;
use guest_unikernel::modes::paging::{translate, Format};
use shared::bench::BenchCounters;
use shared::hypercall::{Hypercall, MmuStats, ShadowWalkRecord};

unsafe extern "C" {
    /// bare-rt's PML4 (entry 0 identity-maps the low 4 GiB with 2 MiB pages).
    static boot_pml4: [u64; 512];
}

/// The boot PML4's physical address (identity map).
pub fn boot_cr3() -> u64 {
    &raw const boot_pml4 as u64
}

/// Accessed (bit 5): the processor sets it in the entries it walks, so
/// copies of an entry are compared without it.
const A: u64 = 1 << 5;

/// True when `e` is the boot PML4's entry 0, up to the accessed bit.
fn is_boot_entry0(e: u64) -> bool {
    e | A == boot_entry0() | A
}

/// Entry 0 of the boot PML4.
fn boot_entry0() -> u64 {
    // SAFETY: bare-rt's boot PML4 is initialised before Rust runs and is
    // never written afterwards; a volatile read of a static has no effect.
    unsafe { (&raw const boot_pml4).cast::<u64>().read_volatile() }
}

/// The PML4 each CPU loaded through [`load_cr3`] (0: the boot PML4, also
/// after the mode-switch engine, which comes back with it). Kept here
/// because under the hypervisor reading CR3 is a VM exit, and every scratch
/// write asks.
static LOADED: [AtomicU64; guest_unikernel::smp::MAX_CPUS] =
    [const { AtomicU64::new(0) }; guest_unikernel::smp::MAX_CPUS];

/// The loaded PML4's frame on this CPU.
fn loaded() -> u64 {
    match LOADED[super::smp::cpu_index()].load(Ordering::Relaxed) {
        0 => boot_cr3(),
        c => c,
    }
}

/// CR3.
pub fn read_cr3() -> u64 {
    let v: u64;
    // SAFETY: reading CR3 at CPL 0 has no side effects.
    unsafe { asm!("mov {}, cr3", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// A quadword of physical memory, 0 where it cannot be read.
fn phys_word(addr: u64) -> u64 {
    let mut b = [0u8; 8];
    if phys::read(addr, &mut b) { u64::from_le_bytes(b) } else { 0 }
}

/// True when `cr3` may be loaded: the boot PML4, or a page-aligned PML4 in
/// scratch RAM whose entry 0 is the boot PML4's entry 0.
fn loadable(cr3: u64) -> bool {
    cr3 == boot_cr3()
        || (cr3.is_multiple_of(4096) && phys::scratch_read(cr3).is_some() && is_boot_entry0(phys_word(cr3)))
}

/// MOV CR3 (SDM Vol. 3A 4.5); `false` (nothing loaded) unless [`loadable`].
pub fn load_cr3(cr3: u64) -> bool {
    if !loadable(cr3) {
        return false;
    }
    // SAFETY: the new PML4's entry 0 is the boot PML4's, so the identity
    // map of the low 512 GiB (image, stack, IDT, GDT, boot structures) is
    // the same; the other entries only cover test addresses, which Rust code
    // reaches only through `linear_read`/`linear_write`. `write_refused`
    // keeps entry 0 of the loaded PML4 as it is.
    unsafe { asm!("mov cr3, {}", in(reg) cr3, options(nostack, preserves_flags)) };
    LOADED[super::smp::cpu_index()].store(cr3, Ordering::Relaxed);
    true
}

/// INVLPG `va` (SDM Vol. 3A 4.10.4.1).
pub fn invlpg(va: u64) {
    // SAFETY: INVLPG only drops TLB and paging-structure cache entries;
    // it never faults on an unmapped address.
    unsafe { asm!("invlpg [{}]", in(reg) va, options(nostack, preserves_flags)) };
}

/// Reads the quadword at test address `va`; `None` outside the test region.
pub fn linear_read(va: u64) -> Option<u64> {
    if !is_test_va(va) {
        return None;
    }
    let v: u64;
    // SAFETY: a load through assembly from a test address, where no Rust
    // object lives (they are all in the identity map of PML4 entry 0); a
    // not-present page raises #PF, whose handler ends the run.
    unsafe { asm!("mov {v}, [{a}]", a = in(reg) va, v = out(reg) v, options(readonly, nostack, preserves_flags)) };
    Some(v)
}

/// True when a store of `value` at physical `pa` must not happen: outside
/// scratch RAM, or a change of entry 0 of the loaded PML4.
pub fn write_refused(pa: u64, value: u64) -> bool {
    phys::scratch_read(pa).is_none() || (pa == loaded() && !is_boot_entry0(value))
}

/// True when a store of `value` at test address `va` may be made: its
/// translation (walked in memory from CR3) is scratch RAM and the store
/// does not change entry 0 of the loaded PML4; or `va` is not mapped at
/// all (the store can only fault, for a caller that catches it).
pub fn linear_write_allowed(va: u64, value: u64) -> bool {
    if !is_test_va(va) {
        return false;
    }
    match translate(&phys_word, Format::Long, loaded(), va, false) {
        Ok(pa) => !write_refused(pa, value),
        Err(_) => true,
    }
}

/// LOCK CMPXCHG of the quadword at test address `va` (same rule as
/// [`linear_write`]): the value found there; `None` when refused.
pub fn linear_cmpxchg(va: u64, old: u64, new: u64) -> Option<u64> {
    if !is_test_va(va) {
        return None;
    }
    let Ok(pa) = translate(&phys_word, Format::Long, loaded(), va, true) else { return None };
    if write_refused(pa, new) {
        return None;
    }
    let mut found = old;
    // SAFETY: as in `linear_write`: scratch RAM above the image, reached at
    // a test address; the instruction is atomic (SDM Vol. 3A 9.1.2.2).
    unsafe {
        asm!("lock cmpxchg [{a}], {n}", a = in(reg) va, n = in(reg) new, inout("rax") found, options(nostack))
    };
    Some(found)
}

/// Writes the quadword at test address `va` whose translation (walked in
/// memory from CR3) is scratch RAM; `false` (nothing written) otherwise.
pub fn linear_write(va: u64, value: u64) -> bool {
    if !is_test_va(va) {
        return false;
    }
    let Ok(pa) = translate(&phys_word, Format::Long, loaded(), va, true) else { return false };
    if write_refused(pa, value) {
        return false;
    }
    // SAFETY: a store through assembly to a test address whose current
    // translation is scratch RAM above the image, where no Rust object lives
    // (the checks keep every test mapping they ever make on frames they
    // allocated there, so a stale TLB entry leads there too).
    unsafe { asm!("mov [{a}], {v}", a = in(reg) va, v = in(reg) value, options(nostack, preserves_flags)) };
    true
}

/// The ShadowWalk hypercall for `la`; `None` when it fails.
pub fn shadow_walk(la: u64) -> Option<ShadowWalkRecord> {
    let mut buf = [0u8; ShadowWalkRecord::SIZE];
    let addr = (&raw mut buf) as u64;
    // SAFETY: ShadowWalk writes at most RDX = buf.len() bytes at RCX, the
    // buffer's physical address (identity map), which lives until the call
    // returns. Callers issue it only under the Quadrant hypervisor.
    let n = unsafe {
        cpu::vmcall(Hypercall::ShadowWalk as u64, [la, addr, ShadowWalkRecord::SIZE as u64])
    };
    if n == ShadowWalkRecord::SIZE as u64 { ShadowWalkRecord::from_bytes(&buf) } else { None }
}

/// The MmuStats hypercall; `None` when it fails.
pub fn mmu_stats() -> Option<MmuStats> {
    record::<{ MmuStats::SIZE }>(Hypercall::MmuStats).map(|b| MmuStats::from_bytes(&b))
}

/// The BenchCounters hypercall; `None` when it fails or the record is not
/// this protocol's.
pub fn bench_counters() -> Option<BenchCounters> {
    record::<{ BenchCounters::SIZE }>(Hypercall::BenchCounters)
        .map(|b| BenchCounters::from_bytes(&b))
        .filter(BenchCounters::is_valid)
}

/// A hypercall that fills an `N`-byte record (RBX = its address, RCX = N)
/// and returns its full length; `None` unless that length is `N`.
fn record<const N: usize>(call: Hypercall) -> Option<[u8; N]> {
    let mut buf = [0u8; N];
    // Identity map: the pointer is the physical address; taken as a mutable
    // pointer, since the hypervisor writes the buffer.
    let addr = (&raw mut buf) as u64;
    // SAFETY: MmuStats and BenchCounters write at most RCX = N bytes at RBX,
    // the buffer's physical address (identity map), which lives until the
    // call returns. Callers issue them only under the Quadrant hypervisor.
    let n = unsafe { cpu::vmcall(call as u64, [addr, N as u64, 0]) };
    (n == N as u64).then_some(buf)
}
