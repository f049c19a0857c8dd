//! The MMU core: a KVM-style shadow page cache as a pure state machine over
//! traits (DESIGN.md sections 1-3). It owns the shadow page tables, their
//! hash table keyed by (gfn, role), the fixed frame pool with LRU recycling,
//! parent chains, the reverse map, write protection of guest page tables,
//! the guest page walker, statistics and the audit. No VMX, no asm, no
//! unsafe: the bare-metal caller implements [`GuestMemory`] and
//! [`ShadowFrames`] and applies the outcomes; host tests implement them with
//! `Vec`s.
//!
//! # How the hypervisor drives it
//!
//! One [`ShadowCache`] per VM (it owns the frame pool; the caller holds one
//! lock around every call) and one [`VcpuMmu`] per virtual CPU, created with
//! [`ShadowCache::add_vcpu`]. Events, each answered with an outcome:
//!
//! | guest event | call | outcome |
//! |---|---|---|
//! | MOV to CR0/CR4, WRMSR EFER | [`ShadowCache::set_paging_mode`] | `Result<Flush, InjectGp>` (context reset; the cache survives) |
//! | MOV to CR3 | [`ShadowCache::load_cr3`] | `Result<Flush, InjectGp>` (root lookup; a hit builds nothing) |
//! | #PF exit | [`ShadowCache::page_fault`] | [`FaultOutcome`] |
//! | INVLPG exit | [`ShadowCache::invlpg`] | [`Flush`] |
//! | write to a write-protected guest page table ([`FaultOutcome::EmulateWrite`]) | [`ShadowCache::guest_pt_write`] | [`Flush`] (the core performs the write) |
//! | before every VM entry | [`ShadowCache::prepare_entry`] | [`HwPaging`]: the hardware CR0/CR3/CR4/EFER to run with |
//! | `ShadowWalk` hypercall (a failure report) | [`ShadowCache::shadow_walk`] | [`ShadowWalk`]: the shadow entries the processor reads for one address (read-only) |
//!
//! # Hardware contract (what the guest runs with on its shadows)
//!
//! [`ShadowCache::prepare_entry`] returns the values; the caller loads them
//! and shows the guest its own values through the CR0/CR4 read shadows:
//! * **CR0.WP = 1 always.** Guest CR0.WP=0 is emulated the KVM way: a
//!   supervisor write to a read-only user page maps it writable and
//!   supervisor-only (U=0, and NX too under SMEP); a later user access
//!   flips it back to U=1,W=0. Shadows built so carry `cr0_wp = 0` in their
//!   role (see [`role`]).
//! * **CR0.PG = CR0.PE = 1 always** (no unrestricted guest needed): guests
//!   without paging run on the metaphysical identity map.
//! * **CR4.PAE = 1 always.** Long-mode guests run with IA-32e paging
//!   (EFER.LME/LMA = 1) on a level-4 root; every other guest (no paging,
//!   32-bit, PAE) runs with PAE paging on a 4-entry PAE root that lies below
//!   4 GiB, 32-byte aligned, whose present entries have only P and the
//!   address set (bits 1,2,5-8,63 of a PAE PDPTE are reserved and a VM entry
//!   fails on them, SDM Vol. 3A 4.4.1 and 26.3.1.6).
//! * **CR4.PSE** is irrelevant under PAE (left 0); **CR4.PGE = 0** (shadow
//!   entries never set G, so a CR3 load flushes everything; the architecture
//!   allows a TLB to drop global entries at any time).
//! * **CR4.SMEP/SMAP follow the guest** when the guest has paging on, and are
//!   0 when it has not (the identity map is user-accessible so that
//!   virtual-8086 real mode works).
//! * **EFER.NXE = 1 always**: the core sets NX in shadow entries; a guest
//!   with EFER.NXE=0 has bit 63 reserved, which the core checks itself.
//! * SMAP honours EFLAGS.AC: the caller records AC=1 at CPL < 3 with
//!   [`VcpuMmu::set_explicit_ac`] before each #PF exit, and the walk then
//!   lets supervisor data accesses to user pages through (taken as
//!   explicit; one the hardware keeps refusing on a leaf that grants it is
//!   implicit and faults). With CR0.WP=0 an AC=1 supervisor write to a
//!   read-only user page is emulated ([`FaultOutcome::EmulateWrite`]): the
//!   WP=0 leaf above would let later AC=0 accesses escape SMAP.
//!
//! # TLB flushes
//! Every event returns a `#[must_use]` [`Flush`] naming the vCPUs whose
//! hardware TLB must be flushed (an IPI for running ones) before they run
//! on again, because shadow entries were made more restrictive (zap, write
//! protection). [`ShadowCache::prepare_entry`] reloads a vCPU's root if it
//! was zapped meanwhile (`invalid`).
#![forbid(unsafe_code)]

pub mod inject;
pub mod audit;
#[cfg(any(test, feature = "host-model"))]
pub mod host;
mod cache;
mod events;
pub mod inspect;
mod ptwrite;
pub mod role;
pub mod spte;
pub mod stats;
pub mod walk;

#[cfg(test)]
mod tests;

pub use audit::AuditError;
pub use cache::{PageId, PoolError, ShadowCache};
pub use events::{GuestMode, HwPaging, VcpuMmu};
pub use inspect::{ShadowStep, ShadowWalk};
pub use events::{
    CR0_PE, CR0_PG, CR0_WP, CR4_PAE, CR4_PGE, CR4_PSE, CR4_SMAP, CR4_SMEP, EFER_LMA, EFER_LME,
    EFER_NXE,
};
pub use role::{Access, Role};
pub use stats::{MmuStats, ZapReason};
pub use walk::{AccessKind, MemAccess};

/// Guest-physical memory as the core sees it. Guest-physical addresses
/// `0..ram_size()` are RAM; `None` means outside guest RAM (MMIO or nothing).
/// The bare-metal implementation maps RAM to a host region at an offset.
pub trait GuestMemory {
    /// Size of guest RAM in bytes (a multiple of 4096).
    fn ram_size(&self) -> u64;
    /// Read an aligned 8-byte value.
    fn read_u64(&self, gpa: u64) -> Option<u64>;
    /// Read an aligned 4-byte value.
    fn read_u32(&self, gpa: u64) -> Option<u32>;
    /// Write an aligned 8-byte value (A/D updates and emulated page-table
    /// writes; the caller makes it atomic with respect to other vCPUs).
    fn write_u64(&mut self, gpa: u64, v: u64) -> Option<()>;
    /// Write an aligned 4-byte value.
    fn write_u32(&mut self, gpa: u64, v: u32) -> Option<()>;
    /// Replace the aligned 8-byte value at `gpa` with `new` if it still
    /// equals `old`, atomically with respect to every vCPU (LOCK CMPXCHG):
    /// `Some(true)` when replaced, `Some(false)` when it changed meanwhile,
    /// `None` outside RAM. The walk sets A/D flags this way, as a processor
    /// does with a locked read-modify-write (SDM Vol. 3A 4.8), so a guest
    /// store to the entry from another vCPU is never lost.
    fn cmpxchg_u64(&mut self, gpa: u64, old: u64, new: u64) -> Option<bool>;
    /// [`GuestMemory::cmpxchg_u64`] for an aligned 4-byte value.
    fn cmpxchg_u32(&mut self, gpa: u64, old: u32, new: u32) -> Option<bool>;
}

/// Where shadow page tables live and how guest RAM appears to the hardware.
///
/// Every frame [`ShadowFrames::alloc`] hands out must lie below 4 GiB (PAE
/// roots are taken from the same pool; [`ShadowCache::new`] checks this).
pub trait ShadowFrames {
    /// A zeroed, 4 KiB aligned host-physical frame, or `None` if exhausted.
    /// Called only while the pool is built ([`ShadowCache::new`]).
    fn alloc(&mut self) -> Option<u64>;
    /// Give a frame back (only from [`ShadowCache::release`]).
    fn free(&mut self, hpa: u64);
    /// Read shadow entry `index` (0..512) of the frame at `hpa`.
    fn read_spte(&self, hpa: u64, index: usize) -> u64;
    /// Write shadow entry `index` of the frame at `hpa`.
    fn write_spte(&mut self, hpa: u64, index: usize, v: u64);
    /// Read all 512 entries of the frame at `hpa` (the audit reads whole
    /// tables; a pool can do that faster than entry by entry).
    fn read_table(&self, hpa: u64, out: &mut [u64; 512]) {
        for (i, e) in out.iter_mut().enumerate() {
            *e = self.read_spte(hpa, i);
        }
    }
    /// Host-physical address backing guest-physical `gpa` (RAM only).
    fn gpa_to_hpa(&self, gpa: u64) -> Option<u64>;
    /// Called right after the core removed write permission from shadow
    /// entries (the write protection of a newly shadowed guest page table)
    /// and before it reads the guest entries it now protects: when this
    /// returns, no vCPU in `vcpus` other than the caller may still hold a
    /// writable hardware translation of that page, so no guest store can
    /// reach the page untrapped any more (KVM: `kvm_flush_remote_tlbs`
    /// after write-protecting). Bare metal kicks the running vCPUs out of
    /// the guest and waits; the caller's own TLB is flushed at its next
    /// VM entry anyway.
    fn flush_remote_tlbs(&mut self, vcpus: VcpuMask);
}

/// Sizing and policy of a [`ShadowCache`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmuConfig {
    /// Shadow frames taken from [`ShadowFrames`] at creation (the pool,
    /// PAE roots included). At least 8 + 5 per vCPU.
    pub pool_frames: usize,
    /// `false`: drop every shadow page at each CR3 load, then build the new
    /// root from nothing (the behaviour before the 2007 cache, for the
    /// benchmark's no-cache variant, `cache=0`); pages another vCPU has
    /// loaded as root stay as `invalid` until it unloads them. CR0/CR4/EFER
    /// changes are not CR3 loads and keep the pages, as then.
    pub cache: bool,
    /// MAXPHYADDR the guest sees (CPUID 0x80000008); defines reserved bits.
    pub maxphyaddr: u8,
}

impl MmuConfig {
    /// A caching configuration with `pool_frames` frames and MAXPHYADDR 36.
    pub const fn new(pool_frames: usize) -> Self {
        Self {
            pool_frames,
            cache: true,
            maxphyaddr: 36,
        }
    }
}

/// A bit set of vCPU ids (bit i = vCPU i; at most 64 vCPUs).
pub type VcpuMask = u64;

/// TLB flushes the caller must perform before the named vCPUs run on.
#[must_use = "stale translations stay in the hardware TLB unless flushed"]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flush {
    /// vCPUs whose whole (guest-context) TLB must be flushed.
    pub vcpus: VcpuMask,
}

impl Flush {
    /// No flush needed.
    pub const NONE: Flush = Flush { vcpus: 0 };
    /// Merge two flush requests.
    pub fn or(self, other: Flush) -> Flush {
        Flush {
            vcpus: self.vcpus | other.vcpus,
        }
    }
    /// Acknowledge a flush request the caller has performed (or, in tests,
    /// does not need because it models no TLB).
    pub fn done(self) {}
}

/// MOV to CR3 / CR0 / CR4 must raise #GP(0) in the guest instead (SDM Vol. 3A
/// 4.4.1: reserved bits in a PAE PDPTE; reserved CR3 bits in long mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InjectGp;

/// Answer to a #PF VM exit ([`ShadowCache::page_fault`]).
#[must_use]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultOutcome {
    /// The shadow now maps the access (or it was spurious): resume the guest
    /// after applying `flush`; the access is retried.
    Fixed { flush: Flush },
    /// Inject #PF into the guest with this error code and CR2.
    InjectPf {
        error_code: u32,
        cr2: u64,
        flush: Flush,
    },
    /// The access (or a guest page-table read of the walk) touches `gpa`
    /// outside guest RAM: emulate MMIO or stop the VM. Guest A/D bits of a
    /// completed walk have been set.
    OutsideRam { gpa: u64, flush: Flush },
    /// A write to a guest page table that is write-protected, or a
    /// supervisor write the shadow cannot allow in hardware (CR0.WP=0,
    /// SMAP, EFLAGS.AC=1 to a read-only user page): decode the
    /// instruction, call [`ShadowCache::guest_pt_write`] with `gpa`, width
    /// and value, and skip the instruction.
    EmulateWrite { gpa: u64, flush: Flush },
    /// The pool holds only loaded roots: too many vCPUs for `pool_frames`.
    NoShadowFrames,
}
