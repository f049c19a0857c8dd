//! What the long-mode scenario checks (`long/...`, [`crate::checks::scen`])
//! need from the CPU beyond [`crate::machine::Machine`]: loads of CR3, CR0.WP,
//! EFER.NXE and CR4.PGE/SMEP/SMAP, INVLPG, and *probes*: single memory accesses at CPL 0 or
//! CPL 3 whose architectural outcome (the value, or the exception with its
//! error code and CR2) is recorded instead of ending the run.
//!
//! The bare binary implements [`LongCpu`] with a fault harness (its
//! `bare::long`: an exception-fixup table of probe instructions and a ring-3
//! trampoline, SDM Vol. 3A 6.12, 6.14); the host tests' fake has none, so
//! the checks report SKIP there.

use core::fmt;

/// One probe: the instruction the harness executes at `addr`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `mov rax, [addr]`.
    Read,
    /// `mov [addr], value` (8 bytes).
    Write(u64),
    /// `mov [addr], value` (4 bytes).
    Write32(u32),
    /// `mov rax, [addr]` with EFLAGS.AC=1 (CPL 0 only): with CR4.SMAP=1 an
    /// explicit supervisor access to a user page is allowed only with AC=1
    /// (SDM Vol. 3A 4.6.1); the harness sets AC by POPFQ, so the probe
    /// works on CPUs without STAC too, and clears it afterwards.
    ReadAc,
    /// `mov [addr], value` (8 bytes) with EFLAGS.AC=1 (CPL 0 only).
    WriteAc(u64),
    /// `and byte [addr], mask`.
    AndByte(u8),
    /// `rep stosb` of `len` copies of `byte` from `addr`.
    RepStosb {
        /// The byte stored.
        byte: u8,
        /// How many bytes.
        len: u64,
    },
    /// `lock cmpxchg [addr], new` with RAX = `expect`; the probe's value is
    /// RAX afterwards (the old memory value).
    LockCmpxchg {
        /// Compared with memory.
        expect: u64,
        /// Stored when equal.
        new: u64,
    },
    /// `call addr` (the page must hold `ret`, 0xC3, at `addr`).
    Fetch,
    /// `invlpg [addr]`.
    Invlpg,
    /// `mov cr3, addr`.
    MovCr3,
    /// `vmxon [addr]`. With CR4.VMXE=0 (the guest never sets it) this is
    /// #UD (SDM Vol. 3C 31.3, VMXON); under Quadrant VMX is hidden and the
    /// hypervisor must raise that #UD itself, since the hardware runs the
    /// guest with VMXE=1 and VMXON exits.
    Vmxon,
}

/// Privilege of a probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cpl {
    /// Supervisor (CPL 0).
    Sup,
    /// User (CPL 3), through the ring-3 trampoline.
    User,
}

/// An exception a probe raised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    /// The vector (14 for #PF, 13 for #GP).
    pub vector: u8,
    /// The error code.
    pub error_code: u64,
    /// CR2 when the handler ran (meaningful for #PF).
    pub cr2: u64,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ec={:#x} cr2={:#x}",
            shared::x86::exception_mnemonic(self.vector),
            self.error_code,
            self.cr2
        )
    }
}

/// What a probe did: the value it read (RAX afterwards), or its fault.
pub type Probe = Result<u64, Fault>;

/// The CPU operations of the long-mode checks; every method is safe, the
/// bare implementation keeps its `unsafe` in `bare::long`.
pub trait LongCpu {
    /// Executes `op` on `addr` at privilege `cpl` under the fault harness.
    /// Callers must make sure the probe cannot write memory Rust owns: the
    /// checks write only page tables and data frames they allocated, and
    /// load only CR3 values naming tables they built (or the boot tables).
    fn probe(&mut self, op: Op, addr: u64, cpl: Cpl) -> Probe;
    /// CR3 now.
    fn cr3(&mut self) -> u64;
    /// Sets or clears CR0.WP.
    fn set_cr0_wp(&mut self, on: bool);
    /// Sets or clears IA32_EFER.NXE.
    fn set_efer_nxe(&mut self, on: bool);
    /// Sets (`on`) or clears the CR4 bits `bits`; only [`cr4::PGE`],
    /// [`cr4::SMEP`] and [`cr4::SMAP`] are honoured, the rest of `bits` is
    /// ignored. Callers check CPUID first (a CPU without SMEP/SMAP refuses
    /// the bit with #GP) and set SMEP/SMAP only while CR3 holds tables
    /// that map everything the guest itself touches (code, stacks,
    /// descriptor tables) supervisor-only, or the next instruction fetch
    /// or exception delivery faults for good.
    fn set_cr4(&mut self, bits: u64, on: bool);
    /// Sets CR4.SMEP and CR4.SMAP as asked (through [`LongCpu::set_cr4`],
    /// with the same contract); `true` when done.
    fn set_smep_smap(&mut self, smep: bool, smap: bool) -> bool {
        self.set_cr4(cr4::SMEP, smep);
        self.set_cr4(cr4::SMAP, smap);
        true
    }
}

/// The CR4 bits [`LongCpu::set_cr4`] changes (SDM Vol. 3A 2.5).
pub mod cr4 {
    /// PGE: global pages (SDM Vol. 3A 4.10.2.4).
    pub const PGE: u64 = 1 << 7;
    /// SMEP: no supervisor fetches from user pages (SDM Vol. 3A 4.6.1).
    pub const SMEP: u64 = 1 << 20;
    /// SMAP: no supervisor data accesses to user pages unless EFLAGS.AC=1.
    pub const SMAP: u64 = 1 << 21;
    /// The three together.
    pub const ALL: u64 = PGE | SMEP | SMAP;
}

/// #PF error code bits (SDM Vol. 3A 4.7, Figure 4-12).
pub mod ec {
    /// P: the fault was a protection violation (0: not present).
    pub const P: u64 = 1 << 0;
    /// W/R: the access was a write.
    pub const W: u64 = 1 << 1;
    /// U/S: the access was a user-mode access.
    pub const U: u64 = 1 << 2;
    /// RSVD: a reserved bit was set in a paging-structure entry.
    pub const RSVD: u64 = 1 << 3;
    /// I/D: the access was an instruction fetch.
    pub const I: u64 = 1 << 4;
}

/// #PF's vector.
pub const PF: u8 = 14;
/// #GP's vector.
pub const GP: u8 = 13;
/// #UD.
pub const UD: u8 = 6;
