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
}
