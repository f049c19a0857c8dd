//! A read-only look at what the processor walks: the shadow entries of one
//! linear address on a vCPU's current root, from the hardware CR3 down
//! (the `ShadowWalk` hypercall behind the guest's failure reports, and the
//! descent [`ShadowCache::invlpg`] uses). Nothing changes: no accessed
//! bits, no LRU order, no statistics.
//!
//! The hardware walk follows the shadow tables as the processor does
//! under the contract of [`crate::mmu`] (PAE or IA-32e paging, SDM Vol. 3A
//! 4.4.2 and 4.5.4): from a PAE root the entry `(la >> 30) & 3` (one of the
//! four PDPTEs the processor loaded, SDM Vol. 3A 4.4.1), then 9 bits of
//! the address per level; it stops after a non-present entry, a PT entry,
//! or an entry with PS set (shadow tables never set it; one that did would
//! show here).

use super::cache::{PageId, ShadowCache, SlotState};
use super::events::{Root, VcpuMmu};
use super::role::Role;
use super::spte::{self, PS};
use super::ShadowFrames;

/// Most steps: a level-4 root down to a PT.
pub const MAX_STEPS: usize = 4;

/// One shadow entry on the hardware walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShadowStep {
    /// The table's level: 4 PML4, 3 PDPT (a PAE root's four PDPTEs), 2 PD, 1 PT.
    pub level: u8,
    /// The entry's index in its table.
    pub index: u16,
    /// Host-physical address of the table.
    pub table_hpa: u64,
    /// The entry.
    pub value: u64,
    /// The shadow page holding the entry: its pool slot, the gfn it
    /// shadows and its role; `None` for a PAE root, which is no shadow page.
    pub page: Option<(PageId, u64, Role)>,
    /// For a present PT entry: the guest frame it maps (the reverse map's key).
    pub maps_gfn: Option<u64>,
}

/// The hardware walk of one linear address ([`ShadowCache::shadow_walk`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShadowWalk {
    /// The hardware CR3: the level-4 root or the PAE root.
    pub root_hpa: u64,
    steps: [Option<ShadowStep>; MAX_STEPS],
}

impl ShadowWalk {
    /// The entries read, root first.
    pub fn steps(&self) -> impl Iterator<Item = &ShadowStep> {
        self.steps.iter().flatten()
    }

    /// The PT entry of the walk: (PT's pool slot, index), when the walk
    /// reached a shadow PT (present or not).
    pub fn pt_slot(&self) -> Option<(PageId, usize)> {
        let s = self.steps().find(|s| s.level == 1)?;
        Some((s.page?.0, usize::from(s.index)))
    }

    fn push(&mut self, s: ShadowStep) {
        if let Some(slot) = self.steps.iter_mut().find(|x| x.is_none()) {
            *slot = Some(s);
        }
    }
}

/// Index of `la` in a table at `level` (PAE/IA-32e format, 9 bits a level).
const fn index_at(la: u64, level: u8) -> u16 {
    ((la >> (12 + 9 * (level as u32 - 1))) & 511) as u16
}

impl<F: ShadowFrames> ShadowCache<F> {
    /// The shadow entries the processor reads for `la` on the vCPU's
    /// current root; `None` when no root is loaded.
    pub fn shadow_walk(&self, v: &VcpuMmu, la: u64) -> Option<ShadowWalk> {
        let (mut page, mut level, mut w) = match v.root {
            Root::None => return None,
            Root::Long(id) => (id, 4u8, ShadowWalk { root_hpa: self.hpa(id), steps: [None; MAX_STEPS] }),
            Root::Pae(_) => {
                let root_hpa = self.hpa(v.pae_root);
                let mut w = ShadowWalk { root_hpa, steps: [None; MAX_STEPS] };
                let index = ((la >> 30) & 3) as u16;
                let value = self.read(v.pae_root, usize::from(index));
                w.push(ShadowStep { level: 3, index, table_hpa: root_hpa, value, page: None, maps_gfn: None });
                match spte::present(value).then(|| self.id_of_hpa(spte::frame(value))).flatten() {
                    Some(id) => (id, 2, w),
                    None => return Some(w),
                }
            }
        };
        loop {
            let index = index_at(la, level);
            let value = self.read(page, usize::from(index));
            let (meta, maps_gfn) = match &self.slots[page as usize].state {
                SlotState::Page(p) => {
                    let leaf = level == 1 && spte::present(value);
                    (Some((page, p.gfn, p.role)), leaf.then(|| p.leaf_gfns.get(usize::from(index)).copied()).flatten())
                }
                _ => (None, None),
            };
            w.push(ShadowStep { level, index, table_hpa: self.hpa(page), value, page: meta, maps_gfn });
            if level == 1 || !spte::present(value) || value & PS != 0 {
                return Some(w);
            }
            match self.id_of_hpa(spte::frame(value)) {
                Some(next) => (page, level) = (next, level - 1),
                // An entry naming a frame outside the pool: shown, not followed.
                None => return Some(w),
            }
        }
    }
}
