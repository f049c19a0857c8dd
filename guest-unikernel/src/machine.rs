//! What the checks need from the machine they run on, as a trait: the
//! bare-metal binary implements it with instructions, the host tests with a
//! scripted fake. Every method is safe; the bare implementation keeps its
//! `unsafe` in the binary's `cpu` and `phys` modules.

use crate::modes::layout::EngineInfo;
use shared::bench::BenchCounters;
use shared::hypercall::{CheckRecord, Hypercall, MmuStats, ShadowWalkRecord};
use shared::multiboot::PhysRead;

/// EAX, EBX, ECX, EDX of one CPUID leaf.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cpuid {
    /// EAX.
    pub eax: u32,
    /// EBX.
    pub ebx: u32,
    /// ECX.
    pub ecx: u32,
    /// EDX.
    pub edx: u32,
}

/// The machine state the Multiboot loader handed over (recorded by the
/// 32-bit entry before it changed anything).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handoff {
    /// EAX at entry.
    pub magic: u32,
    /// EBX at entry: the information block's address.
    pub info: u32,
    /// CR0 at entry.
    pub cr0: u32,
    /// EFLAGS at entry.
    pub eflags: u32,
}

/// A half-open physical address range `[start, end)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Range {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
}

impl Range {
    /// `[start, end)`.
    pub const fn new(start: u64, end: u64) -> Self {
        Range { start, end }
    }

    /// True when the range holds no address.
    pub const fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    /// Bytes in the range.
    pub const fn len(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    /// True when the two ranges share an address.
    pub const fn overlaps(&self, o: &Range) -> bool {
        self.start < o.end && o.start < self.end
    }

    /// True when `addr` lies inside.
    pub const fn contains(&self, addr: u64) -> bool {
        self.start <= addr && addr < self.end
    }
}

/// The machine under test.
pub trait Machine: PhysRead {
    /// CPUID with EAX = `leaf`, ECX = `subleaf`.
    fn cpuid(&mut self, leaf: u32, subleaf: u32) -> Cpuid;
    /// CR0 now.
    fn cr0(&mut self) -> u64;
    /// CR4 now.
    fn cr4(&mut self) -> u64;
    /// IA32_EFER (MSR 0xC000_0080) now.
    fn efer(&mut self) -> u64;
    /// The loader's hand-off state.
    fn handoff(&self) -> Handoff;
    /// Where the guest image (code, data, .bss with stack and page tables)
    /// lies: `[__load_start, __image_end)`.
    fn image(&self) -> Range;
    /// VMCALL with RAX = `call`, RBX/RCX/RDX = `args`; returns RAX. Callers
    /// issue it only after finding the hypervisor's CPUID signature: bare,
    /// VMCALL raises #UD.
    fn vmcall(&mut self, call: Hypercall, args: [u64; 3]) -> u64;
    /// The ReportCheck hypercall with `rec` (VMCALL, RAX = 2, RBX = the
    /// record's physical address); returns RAX. Same rule as [`Self::vmcall`].
    fn report_check(&mut self, rec: &CheckRecord) -> u64;
    /// Writes a 64-bit word of scratch RAM; `false` (nothing written) when
    /// `addr` is not RAM the guest may overwrite (the image, the boot
    /// structures, above 4 GiB, misaligned).
    fn scratch_write(&mut self, addr: u64, value: u64) -> bool;
    /// Reads back a word of scratch RAM (`None` where writes are refused).
    fn scratch_read(&mut self, addr: u64) -> Option<u64>;
    /// Copies the mode-switch engine's code to
    /// [`crate::modes::layout::BLOB_BASE`] and says where its pieces are;
    /// `None` when this machine has no engine. Callers first make sure the
    /// low window ([`crate::modes::layout::LOW`]) is free RAM.
    fn install_engine(&mut self) -> Option<EngineInfo>;
    /// Writes `bytes` at `addr` inside the low window; `false` (nothing
    /// written) when the range is not inside it.
    fn low_write(&mut self, addr: u64, bytes: &[u8]) -> bool;
    /// Reads the low window; `false` when the range is not inside it.
    fn low_read(&mut self, addr: u64, bytes: &mut [u8]) -> bool;
    /// Runs the installed engine over the stops loaded in the low window
    /// and comes back to long mode with the boot page tables. The probes
    /// write where the program says: programs only write into the low
    /// window and frames they allocated from scratch RAM.
    fn run_engine(&mut self);
    /// The long-mode probe harness of the `long/...` checks; `None` (the
    /// default) when this machine has none.
    fn long_cpu(&mut self) -> Option<&mut dyn crate::longcpu::LongCpu> {
        None
    }
    /// The processors' local APICs and the AP trampoline; `None` (the
    /// default) when this machine has no second CPU to offer.
    fn smp(&mut self) -> Option<&mut dyn crate::smp::Smp> {
        None
    }

    // --- Long-mode paging from Rust (the `cache/...` and `long/...` checks) ---

    /// CR3 now.
    fn cr3(&mut self) -> u64;
    /// MOV CR3 with a 4-level PML4 (SDM Vol. 3A 4.5, 4.10.4.1: flushes the
    /// non-global TLB entries). Refused (`false`, nothing loaded) unless
    /// `cr3` is the boot CR3 or a PML4 in scratch RAM whose entry 0 equals
    /// the boot PML4's entry 0, so the identity map of the low 512 GiB the
    /// code, stack and IDT live in stays as it is.
    fn load_cr3(&mut self, cr3: u64) -> bool;
    /// INVLPG `va` (SDM Vol. 3A 4.10.4.1).
    fn invlpg(&mut self, va: u64);
    /// Reads the quadword at linear `va` through the current translation
    /// (test addresses only: PML4 entries 1..256, [`TEST_VA_START`] up to
    /// the canonical hole); `None` when refused. A #PF there ends the run.
    fn linear_read(&mut self, va: u64) -> Option<u64>;
    /// Writes the quadword at linear `va` (a test address whose current
    /// translation is scratch RAM); `false` (nothing written) when refused.
    fn linear_write(&mut self, va: u64, value: u64) -> bool;
    /// The MmuStats hypercall. Same rule as [`Self::vmcall`]: only after
    /// finding the Quadrant signature; `None` when the call fails.
    fn mmu_stats(&mut self) -> Option<MmuStats>;
    /// The ShadowWalk hypercall for linear `la` on the current root (long
    /// mode, from Rust). Same rule as [`Self::vmcall`]; `None` when the
    /// call fails or the record does not decode.
    fn shadow_walk(&mut self, la: u64) -> Option<ShadowWalkRecord>;

    // --- Benchmark workloads (`crate::bench`) ---

    /// The time-stamp counter (RDTSC, SDM Vol. 2B; under Quadrant not
    /// offset and not intercepted, so it counts the hypervisor's time too).
    fn rdtsc(&mut self) -> u64;
    /// The BenchCounters hypercall. Same rule as [`Self::vmcall`]; `None`
    /// when the call fails or the record is not this protocol's.
    fn bench_counters(&mut self) -> Option<BenchCounters>;
}

/// First linear address of the test region (PML4 entry 1): the boot page
/// tables identity-map PML4 entry 0 only.
pub const TEST_VA_START: u64 = 1 << 39;
/// End of the test region: the lower canonical half ends at 2^47.
pub const TEST_VA_END: u64 = 1 << 47;
/// True when the quadword at `va` lies in the test region, 8-aligned.
pub const fn is_test_va(va: u64) -> bool {
    va.is_multiple_of(8) && va >= TEST_VA_START && va < TEST_VA_END
}
