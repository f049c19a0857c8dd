//! MMU statistics (readable as a struct, e.g. through a hypercall) and the
//! role-coverage record: the set of every role word ever created.

use alloc::collections::{BTreeMap, BTreeSet};

use super::role::Role;

/// Why a shadow page was zapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ZapReason {
    /// Recycled from the cold end of the LRU list (pool pressure).
    Recycle,
    /// Three guest page-table writes in a row without a walk (flooding).
    Flood,
    /// A misaligned or entry-straddling guest page-table write.
    Misaligned,
    /// `cache: false` drops everything at each CR3 load.
    NoCache,
    /// Explicit unshadow / reset requested by the caller.
    Unshadow,
}

/// Number of [`ZapReason`] values.
pub const ZAP_REASONS: usize = 5;

/// Counters of the cache. All monotonic except `pages_in_use`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MmuStats {
    /// Shadow pages created, per role word.
    pub created_per_role: BTreeMap<u32, u64>,
    /// Cache hits (a lookup that found an existing shadow page) per role
    /// word (with `invalid` cleared).
    pub hits_per_role: BTreeMap<u32, u64>,
    /// Shadow pages created in total.
    pub created: u64,
    /// CR3 loads whose root(s) were all found in the cache.
    pub cr3_hits: u64,
    /// CR3 loads that had to create a root.
    pub cr3_misses: u64,
    /// Shadow-page lookups during fault handling that hit.
    pub fault_hits: u64,
    /// Shadow-page lookups during fault handling that missed (created).
    pub fault_misses: u64,
    /// Zaps, indexed by `ZapReason as usize`.
    pub zaps: [u64; ZAP_REASONS],
    /// Faults that were writes to a write-protected guest page table.
    pub write_protect_faults: u64,
    /// gfns unshadowed (flooding).
    pub unshadows: u64,
    /// Pages recycled from the LRU list.
    pub recycles: u64,
    /// Page faults handled.
    pub page_faults: u64,
    /// Page faults injected into the guest.
    pub injected_pf: u64,
    /// Guest page-table writes emulated.
    pub pt_writes: u64,
    /// Shadow pages (and PAE roots) in use now.
    pub pages_in_use: usize,
    /// Highest `pages_in_use` ever.
    pub pool_high_water: usize,
    /// Synchronous remote TLB flushes after write-protecting a newly
    /// shadowed guest page table ([`super::ShadowFrames::flush_remote_tlbs`]).
    pub remote_flushes: u64,
    /// Shadow pages alive now, by the guest paging levels of their role
    /// (index = glevels: 0 no paging, 2 32-bit, 3 PAE, 4 long mode).
    pub live_per_glevels: [u32; 5],
    /// Most distinct glevels with live shadow pages at one moment.
    pub max_live_glevels: u32,
    /// Most distinct glevels among the vCPUs' loaded roots at one moment:
    /// 2 or more means vCPUs ran in different paging modes at the same
    /// time on shadows of both (an AP in real mode beside a long-mode BSP).
    pub max_loaded_glevels: u32,
    /// The glevels (bit g) of the loaded roots when that maximum was first
    /// reached.
    pub max_loaded_glevels_mask: u32,
    /// Every pair of glevels whose roots were loaded at the same moment
    /// (`shared::coverage::glevels_pair_bit`).
    pub loaded_glevels_pairs: u32,
}

/// The number of distinct glevels in a bit set of glevels.
pub fn glevels_count(mask: u32) -> u32 {
    mask.count_ones()
}

impl MmuStats {
    /// Zaps for one reason.
    pub fn zaps_for(&self, r: ZapReason) -> u64 {
        self.zaps[r as usize]
    }
}

/// Every role value ever created (with `invalid` cleared).
pub type RoleCoverage = BTreeSet<u32>;

pub(crate) fn record_created(stats: &mut MmuStats, cov: &mut RoleCoverage, role: Role) {
    stats.created += 1;
    *stats.created_per_role.entry(role.word()).or_insert(0) += 1;
    cov.insert(role.valid().word());
    record_live(stats, role, 1);
}

/// A shadow page of `role` came (`delta` = 1) or went (-1).
pub(crate) fn record_live(stats: &mut MmuStats, role: Role, delta: i32) {
    let g = &mut stats.live_per_glevels[role.glevels() as usize % 5];
    *g = g.saturating_add_signed(delta);
    let live = stats.live_per_glevels.iter().filter(|&&n| n > 0).count() as u32;
    stats.max_live_glevels = stats.max_live_glevels.max(live);
}

/// The loaded roots' glevels are now `mask` (bit g).
pub(crate) fn record_loaded(stats: &mut MmuStats, mask: u32) {
    for a in 0..5u8 {
        for b in a + 1..5 {
            if mask & (1 << a) != 0 && mask & (1 << b) != 0 {
                stats.loaded_glevels_pairs |= shared::coverage::glevels_pair_bit(a, b);
            }
        }
    }
    let n = glevels_count(mask);
    if n > stats.max_loaded_glevels {
        stats.max_loaded_glevels = n;
        stats.max_loaded_glevels_mask = mask;
    }
}
