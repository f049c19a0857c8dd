//! The foundation's interim shadow paging: a *non-caching* virtual TLB, the
//! behaviour shadow MMUs had before KVM's 2007 page cache. It exists so the
//! tracer bullet (a 64-bit guest under VMX without EPT) runs end to end; the
//! shadow page cache in [`crate::mmu`] replaces it when it is wired into VMX.
//!
//! What it does, and why that is architecturally sound:
//! * Guest paging off: a fixed identity ("metaphysical") PAE table maps
//!   guest-physical 0..RAM with 2 MiB pages onto guest RAM.
//! * Guest long mode: a 4-level shadow filled on demand. Every shadow #PF
//!   re-walks the guest tables (SDM Vol. 3A 4.5): a guest fault is injected
//!   with the guest's error code (Vol. 3A 4.7); otherwise the walk sets the
//!   guest A bits (and D for a write; Vol. 3A 4.8) and maps the page, leaf
//!   permissions being the guest's effective ones (Vol. 3A 4.6) except that a
//!   clean page is mapped read-only, so its first write faults and sets D.
//! * Guest page-table edits are not tracked; instead every MOV to CR3,
//!   INVLPG and paging-mode change drops the whole shadow. The architecture
//!   lets a TLB keep a translation until exactly those events (Vol. 3A
//!   4.10.4), and a non-present entry is never cached (fills happen only on
//!   faults), so the guest cannot tell.
//! * Hardware CR0.WP is always 1. With guest WP=0 a supervisor write to a
//!   read-only page is allowed: it is mapped writable but supervisor-only, so
//!   a later user access faults and is re-walked.

use crate::arch::phys::{FramePool, GuestRam};

/// Page-table entry bits (SDM Vol. 3A Table 4-19/4-20).
mod bits {
    pub const P: u64 = 1 << 0;
    pub const W: u64 = 1 << 1;
    pub const U: u64 = 1 << 2;
    pub const A: u64 = 1 << 5;
    pub const D: u64 = 1 << 6;
    pub const PS: u64 = 1 << 7;
    pub const NX: u64 = 1 << 63;
    pub const ADDR: u64 = 0x000F_FFFF_FFFF_F000;
}
use bits::*;

/// #PF error-code bits (SDM Vol. 3A 4.7).
pub mod pf {
    /// The fault was a protection violation (0: not present).
    pub const P: u32 = 1 << 0;
    /// Write access.
    pub const W: u32 = 1 << 1;
    /// User-mode access.
    pub const U: u32 = 1 << 2;
    /// Reserved bit set in a paging-structure entry.
    pub const RSVD: u32 = 1 << 3;
    /// Instruction fetch.
    pub const ID: u32 = 1 << 4;
}

/// The guest paging state the walk needs.
#[derive(Clone, Copy, Debug)]
pub struct GuestPaging {
    /// Guest CR3.
    pub cr3: u64,
    /// Guest CR0.WP.
    pub wp: bool,
    /// Guest EFER.NXE.
    pub nxe: bool,
    /// Guest CR4.SMEP.
    pub smep: bool,
}

/// What the caller must do after a shadow page fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultOutcome {
    /// The shadow now maps the address: resume the guest.
    Fixed,
    /// The guest's own tables fault: inject #PF with this error code.
    InjectPf {
        /// The architectural error code.
        error_code: u32,
    },
    /// The translation (or a paging-structure entry) lies outside guest RAM.
    OutsideRam {
        /// The guest-physical address.
        gpa: u64,
    },
}

/// Counters for the MMU statistics hypercall and the run summary.
#[derive(Clone, Copy, Debug, Default)]
pub struct VtlbStats {
    /// Shadow page faults handled.
    pub faults: u64,
    /// Faults filled.
    pub fills: u64,
    /// Faults reflected to the guest.
    pub injected: u64,
    /// Whole-shadow drops.
    pub flushes: u64,
    /// Shadow table frames allocated.
    pub frames_allocated: u64,
}

/// The interim shadow.
#[derive(Debug)]
pub struct Vtlb {
    identity_root: u64,
    pool: FramePool,
    long_root: Option<u64>,
    /// Counters.
    pub stats: VtlbStats,
}

impl Vtlb {
    /// Builds the identity map of guest RAM in `fixed` (5 frames: a PAE PDPT
    /// and 4 page directories, which must lie below 4 GiB) and uses `pool`
    /// for the long-mode shadow.
    pub fn new(ram: &GuestRam, fixed: &mut FramePool, pool: FramePool) -> Option<Vtlb> {
        let pdpt = fixed.alloc()?;
        for i in 0..4u64 {
            let gpa_base = i << 30;
            if gpa_base >= ram.size() {
                break;
            }
            let pd = fixed.alloc()?;
            // PAE PDPTE: only P and the address; bits 1-2, 5-8 and 63 are
            // reserved and would fail VM entry (SDM Vol. 3A 4.4.1).
            fixed.write_entry(pdpt, i as usize, pd | P);
            for j in 0..512u64 {
                let gpa = gpa_base + (j << 21);
                if let Some(hpa) = ram.gpa_to_hpa(gpa) {
                    if gpa + (2 << 20) <= ram.size() {
                        fixed.write_entry(pd, j as usize, hpa | P | W | U | A | D | PS);
                    }
                }
            }
        }
        Some(Vtlb { identity_root: pdpt, pool, long_root: None, stats: VtlbStats::default() })
    }

    /// Hardware CR3 while guest paging is off.
    pub fn identity_root(&self) -> u64 {
        self.identity_root
    }

    /// Hardware CR3 while the guest is in long mode (allocated on demand).
    pub fn long_root(&mut self) -> u64 {
        if let Some(r) = self.long_root {
            return r;
        }
        let r = self.alloc_or_flush();
        self.long_root = Some(r);
        r
    }

    /// Drops the whole long-mode shadow (MOV CR3, INVLPG, mode change).
    pub fn flush(&mut self) {
        self.pool.free_all();
        self.long_root = None;
        self.stats.flushes += 1;
    }

    fn alloc_or_flush(&mut self) -> u64 {
        if let Some(f) = self.pool.alloc() {
            self.stats.frames_allocated += 1;
            return f;
        }
        // Pool exhausted: start over (the root is reallocated first).
        self.flush();
        self.stats.frames_allocated += 1;
        self.pool.alloc().expect("an empty pool has a frame")
    }

    /// Handles a #PF exit at `gva` with the hardware error code `hw_ec` while
    /// the guest is in long mode.
    pub fn page_fault(&mut self, ram: &GuestRam, g: GuestPaging, gva: u64, hw_ec: u32) -> FaultOutcome {
        self.stats.faults += 1;
        let write = hw_ec & pf::W != 0;
        let user = hw_ec & pf::U != 0;
        let fetch = hw_ec & pf::ID != 0;
        // Guest walk (SDM Vol. 3A 4.5, Figure 4-8).
        let mut table = g.cr3 & ADDR;
        let (mut eff_w, mut eff_u, mut eff_nx) = (true, true, false);
        let mut entries = [(0u64, 0u64); 4];
        let mut leaf = None;
        for (depth, level) in (1..=4u32).rev().enumerate() {
            let index = (gva >> (12 + 9 * (level - 1))) & 511;
            let pte_gpa = table + index * 8;
            let Some(pte) = ram.read_u64(pte_gpa) else { return FaultOutcome::OutsideRam { gpa: pte_gpa } };
            entries[depth] = (pte_gpa, pte);
            let io = if fetch && (g.nxe || g.smep) { pf::ID } else { 0 };
            let base_ec = ((write as u32) * pf::W) | ((user as u32) * pf::U) | io;
            if pte & P == 0 {
                return self.inject(base_ec);
            }
            if pte & NX != 0 && !g.nxe || (level == 4 && pte & PS != 0) {
                return self.inject(base_ec | pf::P | pf::RSVD);
            }
            eff_w &= pte & W != 0;
            eff_u &= pte & U != 0;
            eff_nx |= g.nxe && pte & NX != 0;
            if level == 1 || pte & PS != 0 {
                leaf = Some((depth, level));
                break;
            }
            table = pte & ADDR;
        }
        let (leaf_depth, leaf_level) = leaf.expect("the walk ends at level 1 at the latest");
        // Access rights (SDM Vol. 3A 4.6).
        let io = if fetch && (g.nxe || g.smep) { pf::ID } else { 0 };
        let ec = pf::P | ((write as u32) * pf::W) | ((user as u32) * pf::U) | io;
        let allowed = if user {
            eff_u && (!write || eff_w) && !(fetch && eff_nx)
        } else {
            (!write || eff_w || !g.wp) && !(fetch && (eff_nx || (g.smep && eff_u)))
        };
        if !allowed {
            return self.inject(ec);
        }
        // Accessed and dirty flags (SDM Vol. 3A 4.8).
        for &(gpa, pte) in &entries[..=leaf_depth] {
            if pte & A == 0 {
                ram.write_u64(gpa, pte | A);
            }
        }
        let (leaf_gpa, mut leaf_pte) = entries[leaf_depth];
        leaf_pte |= A;
        if write && leaf_pte & D == 0 {
            leaf_pte |= D;
            ram.write_u64(leaf_gpa, leaf_pte);
        }
        let page_shift = 12 + 9 * (leaf_level - 1);
        let frame_gpa = (leaf_pte & ADDR & !((1u64 << page_shift) - 1)) | (gva & ((1u64 << page_shift) - 1) & !0xfff);
        // Shadow leaf permissions: the guest's, read-only until dirty, and
        // the WP=0 supervisor-write case as writable supervisor-only.
        let mut spte = P;
        let dirty = leaf_pte & D != 0;
        if eff_w && dirty {
            spte |= W;
        }
        if eff_u {
            spte |= U;
        }
        if !eff_w && !g.wp && !user && write {
            spte = (spte | W) & !U;
        }
        if eff_nx {
            spte |= NX;
        }
        // A 2 MiB shadow page where the guest page is at least that large
        // and the whole 2 MiB lie in guest RAM.
        let big = leaf_level >= 2;
        let gpa_2m = frame_gpa & !((2 << 20) - 1);
        let (map_gpa, map_level) = if big && gpa_2m + (2 << 20) <= ram.size() { (gpa_2m, 2) } else { (frame_gpa, 1) };
        let Some(hpa) = ram.gpa_to_hpa(map_gpa) else { return FaultOutcome::OutsideRam { gpa: frame_gpa } };
        self.map(gva, hpa, spte, map_level);
        self.stats.fills += 1;
        FaultOutcome::Fixed
    }

    fn inject(&mut self, error_code: u32) -> FaultOutcome {
        self.stats.injected += 1;
        FaultOutcome::InjectPf { error_code }
    }

    /// Installs the shadow translation gva -> hpa at `level` (1 = 4 KiB,
    /// 2 = 2 MiB) with leaf bits `spte`; upper levels are fully permissive
    /// (the leaf carries the effective rights).
    fn map(&mut self, gva: u64, hpa: u64, spte: u64, level: u32) {
        let mut table = self.long_root();
        let root = table;
        for l in (level + 1..=4).rev() {
            let index = ((gva >> (12 + 9 * (l - 1))) & 511) as usize;
            let e = self.pool.read_entry(table, index);
            table = if e & P != 0 {
                e & ADDR
            } else {
                let next = self.alloc_or_flush();
                if self.long_root != Some(root) {
                    // The pool was flushed under us: start the walk again.
                    return self.map(gva, hpa, spte, level);
                }
                self.pool.write_entry(table, index, next | P | W | U);
                next
            };
        }
        let index = ((gva >> (12 + 9 * (level - 1))) & 511) as usize;
        let ps = if level == 2 { PS } else { 0 };
        self.pool.write_entry(table, index, hpa | spte | ps | A | if spte & W != 0 { D } else { 0 });
    }
}
