//! The shadow page cache proper: the fixed frame pool, the hash table of
//! shadow pages keyed by (gfn, role) over a `Vec` of buckets, the LRU list
//! and recycling (never a loaded root), parent chains, the reverse map
//! (gfn -> leaf shadow entries), write protection and zapping.

use alloc::collections::BTreeMap;
use alloc::vec;
use alloc::vec::Vec;

use super::role::Role;
use super::spte::{self, RW};
use super::stats::{self, MmuStats, RoleCoverage, ZapReason};
use super::{Flush, MmuConfig, ShadowFrames, VcpuMask};

/// Index of a pool slot (one shadow frame).
pub type PageId = u32;

/// Entries per shadow frame.
pub(crate) const ENTRIES: usize = 512;

/// Free frames kept available before a fault or CR3 load builds shadows
/// (a long-mode fault creates at most 3 pages, a PAE root load 4).
pub(crate) const MIN_FREE: usize = 5;

/// A shadow entry: entry `index` of shadow page `page`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct SptRef {
    pub page: PageId,
    pub index: u16,
}

/// The shadow entries pointing at a page: one pointer, or a chain when the
/// page is multimapped.
#[derive(Clone, Debug, Default)]
pub(crate) enum Parents {
    #[default]
    None,
    One(SptRef),
    Many(Vec<SptRef>),
}

impl Parents {
    pub fn to_vec(&self) -> Vec<SptRef> {
        match self {
            Parents::None => Vec::new(),
            Parents::One(r) => vec![*r],
            Parents::Many(v) => v.clone(),
        }
    }
    fn add(&mut self, r: SptRef) {
        *self = match core::mem::take(self) {
            Parents::None => Parents::One(r),
            Parents::One(o) => Parents::Many(vec![o, r]),
            Parents::Many(mut v) => {
                v.push(r);
                Parents::Many(v)
            }
        };
    }
    fn remove(&mut self, r: SptRef) -> bool {
        match self {
            Parents::None => false,
            Parents::One(o) if *o == r => {
                *self = Parents::None;
                true
            }
            Parents::One(_) => false,
            Parents::Many(v) => match v.iter().position(|x| *x == r) {
                Some(i) => {
                    v.swap_remove(i);
                    if v.len() == 1 {
                        *self = Parents::One(v[0]);
                    }
                    true
                }
                None => false,
            },
        }
    }
}

/// Metadata of one shadow page.
#[derive(Clone, Debug)]
pub(crate) struct ShadowPage {
    pub gfn: u64,
    pub role: Role,
    pub parents: Parents,
    /// vCPUs (or PAE root entries of vCPUs) that have this page loaded as root.
    pub root_count: u32,
    /// Level-1 pages: the gfn each present leaf maps (reverse-map key).
    pub leaf_gfns: Vec<u64>,
    lru_prev: Option<PageId>,
    lru_next: Option<PageId>,
}

/// What a pool slot holds.
#[derive(Clone, Debug)]
pub(crate) enum SlotState {
    Free,
    Page(ShadowPage),
    /// The 4-entry PAE root of a vCPU.
    PaeRoot(u32),
}

#[derive(Clone, Debug)]
pub(crate) struct Slot {
    pub hpa: u64,
    pub state: SlotState,
}

/// The pool frame was not usable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolError {
    /// `ShadowFrames::alloc` ran dry before `pool_frames` frames.
    Exhausted,
    /// A frame at or above 4 GiB (PAE roots must lie below) or unaligned.
    BadFrame(u64),
    /// Pool too small for the vCPUs (8 + 5 per vCPU needed) or > 64 vCPUs.
    TooSmall,
}

/// No free frame and nothing recyclable: every page is a loaded root.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct NoFrames;

/// The shadow page cache of one VM, shared by its vCPUs.
pub struct ShadowCache<F: ShadowFrames> {
    pub(crate) frames: F,
    pub(crate) config: MmuConfig,
    pub(crate) slots: Vec<Slot>,
    pub(crate) free: Vec<PageId>,
    buckets: Vec<Vec<PageId>>,
    lru_hot: Option<PageId>,
    lru_cold: Option<PageId>,
    hpa_index: BTreeMap<u64, PageId>,
    pub(crate) rmap: BTreeMap<u64, Vec<SptRef>>,
    pub(crate) stats: MmuStats,
    pub(crate) coverage: RoleCoverage,
    /// Registered vCPUs.
    pub(crate) vcpus: VcpuMask,
    /// The glevels of each vCPU's loaded root (index = vCPU id; `None`
    /// without a root), for [`MmuStats::max_loaded_glevels`].
    pub(crate) loaded_glevels: [Option<u8>; 64],
    /// How many vCPUs have a root of each glevels loaded (index 0..=4),
    /// kept with `loaded_glevels` so a CR3 load costs O(1) there.
    pub(crate) loaded_per_glevels: [u32; 5],
    /// The glevels (bit g) with a loaded root now.
    pub(crate) loaded_mask: u32,
    /// Every `loaded_mask` value seen so far (bit m for mask m < 32).
    pub(crate) loaded_masks_seen: u32,
}

impl<F: ShadowFrames> ShadowCache<F> {
    /// Build the cache and take its whole pool from `frames`.
    pub fn new(config: MmuConfig, mut frames: F) -> Result<Self, PoolError> {
        if config.pool_frames < 8 + MIN_FREE {
            return Err(PoolError::TooSmall);
        }
        let mut slots = Vec::with_capacity(config.pool_frames);
        let mut hpa_index = BTreeMap::new();
        for i in 0..config.pool_frames {
            let hpa = frames.alloc().ok_or(PoolError::Exhausted)?;
            if hpa >= 1 << 32 || hpa & 0xfff != 0 {
                return Err(PoolError::BadFrame(hpa));
            }
            hpa_index.insert(hpa, i as PageId);
            slots.push(Slot {
                hpa,
                state: SlotState::Free,
            });
        }
        let nb = config.pool_frames.next_power_of_two().max(16);
        Ok(ShadowCache {
            frames,
            config,
            free: (0..config.pool_frames as PageId).rev().collect(),
            slots,
            buckets: vec![Vec::new(); nb],
            lru_hot: None,
            lru_cold: None,
            hpa_index,
            rmap: BTreeMap::new(),
            stats: MmuStats::default(),
            coverage: RoleCoverage::new(),
            vcpus: 0,
            loaded_glevels: [None; 64],
            loaded_per_glevels: [0; 5],
            loaded_mask: 0,
            loaded_masks_seen: 0,
        })
    }

    /// Tear down: give every frame back and return the frame provider.
    pub fn release(mut self) -> F {
        for s in &self.slots {
            self.frames.free(s.hpa);
        }
        self.frames
    }

    /// Statistics so far.
    pub fn stats(&self) -> &MmuStats {
        &self.stats
    }
    /// Every role word ever created.
    pub fn role_coverage(&self) -> &RoleCoverage {
        &self.coverage
    }
    /// The frame provider (tests read shadow tables through it).
    pub fn frames(&self) -> &F {
        &self.frames
    }
    /// The configuration.
    pub fn config(&self) -> &MmuConfig {
        &self.config
    }

    fn bucket_of(&self, gfn: u64) -> usize {
        (gfn.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40) as usize & (self.buckets.len() - 1)
    }

    pub(crate) fn page(&self, id: PageId) -> &ShadowPage {
        match &self.slots[id as usize].state {
            SlotState::Page(p) => p,
            _ => panic!("slot {id} is not a shadow page"),
        }
    }
    fn page_mut(&mut self, id: PageId) -> &mut ShadowPage {
        match &mut self.slots[id as usize].state {
            SlotState::Page(p) => p,
            _ => panic!("slot {id} is not a shadow page"),
        }
    }
    pub(crate) fn hpa(&self, id: PageId) -> u64 {
        self.slots[id as usize].hpa
    }
    pub(crate) fn id_of_hpa(&self, hpa: u64) -> Option<PageId> {
        self.hpa_index.get(&hpa).copied()
    }
    /// All entries of slot `id`'s frame at once, into `t` (the audit).
    pub(crate) fn read_all<'t>(&self, id: PageId, t: &'t mut [u64; ENTRIES]) -> &'t [u64; ENTRIES] {
        self.frames.read_table(self.hpa(id), t);
        t
    }
    pub(crate) fn read(&self, id: PageId, idx: usize) -> u64 {
        self.frames.read_spte(self.hpa(id), idx)
    }
    fn write(&mut self, id: PageId, idx: usize, v: u64) {
        let hpa = self.hpa(id);
        self.frames.write_spte(hpa, idx, v);
    }
    /// All valid (hashed) pages for `gfn`.
    pub(crate) fn pages_of_gfn(&self, gfn: u64) -> Vec<PageId> {
        self.buckets[self.bucket_of(gfn)]
            .iter()
            .copied()
            .filter(|&id| self.page(id).gfn == gfn)
            .collect()
    }
    /// Per slot: in how many buckets it appears, and whether one of them is
    /// the bucket of its gfn (audit).
    pub(crate) fn bucket_membership(&self) -> Vec<(usize, bool)> {
        let mut m = vec![(0, false); self.slots.len()];
        for (b, ids) in self.buckets.iter().enumerate() {
            for &id in ids {
                let e = &mut m[id as usize];
                e.0 += 1;
                if let SlotState::Page(p) = &self.slots[id as usize].state {
                    e.1 |= self.bucket_of(p.gfn) == b;
                }
            }
        }
        m
    }

    /// Does `gfn` have a non-metaphysical shadow (and so is write-protected)?
    pub fn is_write_protected(&self, gfn: u64) -> bool {
        self.buckets[self.bucket_of(gfn)].iter().any(|&id| {
            let p = self.page(id);
            p.gfn == gfn && !p.role.metaphysical()
        })
    }

    /// Whether writes to `gfn` are trapped (and leaves mapping it are made
    /// read-only): exactly when it is write-protected, except in a build
    /// with a deliberate bug from [`super::inject`].
    pub(crate) fn traps_writes(&self, gfn: u64) -> bool {
        if cfg!(feature = "inject-no-write-protect") {
            return false;
        }
        if cfg!(feature = "inject-metaphysical-write-protected") {
            return self.buckets[self.bucket_of(gfn)]
                .iter()
                .any(|&id| self.page(id).gfn == gfn);
        }
        self.is_write_protected(gfn)
    }

    /// Look up (gfn, role) without side effects.
    pub(crate) fn lookup(&self, gfn: u64, role: Role) -> Option<PageId> {
        self.buckets[self.bucket_of(gfn)]
            .iter()
            .copied()
            .find(|&id| {
                let p = self.page(id);
                p.gfn == gfn && p.role.key_eq(role)
            })
    }

    // --- LRU list: hot end = most recently looked up ---
    fn lru_unlink(&mut self, id: PageId) {
        let (prev, next) = {
            let p = self.page(id);
            (p.lru_prev, p.lru_next)
        };
        match prev {
            Some(p) => self.page_mut(p).lru_next = next,
            None => self.lru_hot = next,
        }
        match next {
            Some(n) => self.page_mut(n).lru_prev = prev,
            None => self.lru_cold = prev,
        }
        let p = self.page_mut(id);
        p.lru_prev = None;
        p.lru_next = None;
    }
    fn lru_push_hot(&mut self, id: PageId) {
        let old = self.lru_hot;
        {
            let p = self.page_mut(id);
            p.lru_prev = None;
            p.lru_next = old;
        }
        match old {
            Some(o) => self.page_mut(o).lru_prev = Some(id),
            None => self.lru_cold = Some(id),
        }
        self.lru_hot = Some(id);
    }
    /// LRU order, hot to cold (audit and tests).
    pub(crate) fn lru_order(&self) -> Vec<PageId> {
        let mut v = Vec::new();
        let mut cur = self.lru_hot;
        while let Some(id) = cur {
            v.push(id);
            cur = self.page(id).lru_next;
            if v.len() > self.slots.len() {
                break;
            }
        }
        v
    }

    fn update_in_use(&mut self) {
        let used = self.slots.len() - self.free.len();
        self.stats.pages_in_use = used;
        self.stats.pool_high_water = self.stats.pool_high_water.max(used);
    }

    /// Take a free slot for a vCPU's PAE root.
    pub(crate) fn alloc_pae_root(&mut self, vcpu: u32) -> Option<PageId> {
        let id = self.free.pop()?;
        self.slots[id as usize].state = SlotState::PaeRoot(vcpu);
        self.update_in_use();
        Some(id)
    }

    fn free_slot(&mut self, id: PageId) {
        debug_assert!(
            (0..ENTRIES).all(|i| self.read(id, i) == 0),
            "freeing a non-zero frame"
        );
        if let SlotState::Page(p) = &self.slots[id as usize].state {
            stats::record_live(&mut self.stats, p.role, -1);
        }
        self.slots[id as usize].state = SlotState::Free;
        self.free.push(id);
        self.update_in_use();
    }

    /// Find or create the shadow page for (gfn, role). Creating a
    /// non-metaphysical page write-protects gfn (flush added to `flush`).
    /// Returns the page and whether it was created.
    pub(crate) fn get_page(
        &mut self,
        gfn: u64,
        role: Role,
        flush: &mut Flush,
    ) -> Result<(PageId, bool), NoFrames> {
        if let Some(id) = self.lookup(gfn, role) {
            self.lru_unlink(id);
            self.lru_push_hot(id);
            *self
                .stats
                .hits_per_role
                .entry(role.valid().word())
                .or_insert(0) += 1;
            return Ok((id, false));
        }
        let was_protected = self.is_write_protected(gfn);
        let id = self.free.pop().ok_or(NoFrames)?;
        let leaf_gfns = if role.level() == 1 {
            vec![0; ENTRIES]
        } else {
            Vec::new()
        };
        self.slots[id as usize].state = SlotState::Page(ShadowPage {
            gfn,
            role,
            parents: Parents::None,
            root_count: 0,
            leaf_gfns,
            lru_prev: None,
            lru_next: None,
        });
        let b = self.bucket_of(gfn);
        self.buckets[b].push(id);
        self.lru_push_hot(id);
        self.update_in_use();
        stats::record_created(&mut self.stats, &mut self.coverage, role);
        let protects = (!role.metaphysical()
            || cfg!(feature = "inject-metaphysical-write-protected"))
            && !cfg!(feature = "inject-no-write-protect");
        if protects && !was_protected && self.write_protect(gfn) {
            // Another vCPU may still hold a writable translation of the new
            // page table in its TLB: it must lose it before the caller reads
            // the guest entries (`fetch` re-validates its walk after this).
            // (The injected bug requests no flush: the vCPU whose event this
            // is flushes at its next VM entry anyway, without VPID.)
            if !cfg!(feature = "inject-no-remote-flush") {
                self.frames.flush_remote_tlbs(self.vcpus);
                self.stats.remote_flushes += 1;
                *flush = flush.or(self.flush_all());
            }
        }
        Ok((id, true))
    }

    /// A flush of every registered vCPU.
    pub(crate) fn flush_all(&self) -> Flush {
        Flush { vcpus: self.vcpus }
    }

    /// Clear W in every leaf shadow entry mapping `gfn`. True if any changed.
    pub(crate) fn write_protect(&mut self, gfn: u64) -> bool {
        let refs = self.rmap.get(&gfn).cloned().unwrap_or_default();
        let mut changed = false;
        for r in refs {
            let v = self.read(r.page, r.index as usize);
            if v & RW != 0 {
                self.write(r.page, r.index as usize, v & !RW);
                changed = true;
            }
        }
        changed
    }

    /// Clear one shadow entry, unlinking it from the reverse map (leaf) or
    /// from the child's parent chain (non-leaf). True if it was present.
    pub(crate) fn clear_spte(&mut self, id: PageId, idx: usize) -> bool {
        let v = self.read(id, idx);
        if !spte::present(v) {
            return false;
        }
        let r = SptRef {
            page: id,
            index: idx as u16,
        };
        if self.page(id).role.level() == 1 {
            let gfn = self.page(id).leaf_gfns[idx];
            if let Some(list) = self.rmap.get_mut(&gfn) {
                if let Some(pos) = list.iter().position(|x| *x == r) {
                    list.swap_remove(pos);
                }
                if list.is_empty() {
                    self.rmap.remove(&gfn);
                }
            }
        } else if let Some(child) = self.id_of_hpa(spte::frame(v)) {
            if let SlotState::Page(c) = &mut self.slots[child as usize].state {
                c.parents.remove(r);
            }
        }
        self.write(id, idx, 0);
        true
    }

    /// Point entry `idx` of `parent` at `child`.
    pub(crate) fn link(&mut self, parent: PageId, idx: usize, child: PageId) {
        self.clear_spte(parent, idx);
        let hpa = self.hpa(child);
        self.write(parent, idx, spte::nonleaf(hpa));
        self.page_mut(child).parents.add(SptRef {
            page: parent,
            index: idx as u16,
        });
    }

    /// Install leaf `v` (mapping `gfn`) at entry `idx` of level-1 page `id`.
    pub(crate) fn set_leaf(&mut self, id: PageId, idx: usize, gfn: u64, v: u64) {
        self.clear_spte(id, idx);
        if !spte::present(v) {
            return;
        }
        self.write(id, idx, v);
        self.page_mut(id).leaf_gfns[idx] = gfn;
        self.rmap.entry(gfn).or_default().push(SptRef {
            page: id,
            index: idx as u16,
        });
    }

    /// Zap a shadow page: clear its entries, unlink it from its parents and
    /// drop it from the hash table. A loaded root stays allocated as
    /// `invalid` until its last user unloads it. Returns the flush needed.
    pub(crate) fn zap_page(&mut self, id: PageId, reason: ZapReason) -> Flush {
        let mut dirty = false;
        for i in 0..ENTRIES {
            dirty |= self.clear_spte(id, i);
        }
        for r in self.page(id).parents.to_vec() {
            self.write(r.page, r.index as usize, 0);
            dirty = true;
        }
        self.page_mut(id).parents = Parents::None;
        let gfn = self.page(id).gfn;
        let b = self.bucket_of(gfn);
        if let Some(pos) = self.buckets[b].iter().position(|&x| x == id) {
            self.buckets[b].swap_remove(pos);
        }
        self.lru_unlink(id);
        self.stats.zaps[reason as usize] += 1;
        if self.page(id).root_count > 0
            && !(reason == ZapReason::Recycle && cfg!(feature = "inject-recycle-loaded-root"))
        {
            let p = self.page_mut(id);
            p.role = p.role.with_invalid();
            dirty = true;
        } else {
            self.free_slot(id);
        }
        if dirty {
            self.flush_all()
        } else {
            Flush::NONE
        }
    }

    /// Zap every non-metaphysical shadow of `gfn` (unshadow).
    pub(crate) fn zap_gfn(&mut self, gfn: u64, reason: ZapReason) -> Flush {
        let mut f = Flush::NONE;
        for id in self.pages_of_gfn(gfn) {
            if !self.page(id).role.metaphysical() {
                f = f.or(self.zap_page(id, reason));
            }
        }
        f
    }

    /// Zap every hashed page.
    pub(crate) fn zap_all(&mut self, reason: ZapReason) -> Flush {
        let mut f = Flush::NONE;
        for id in self.lru_order() {
            f = f.or(self.zap_page(id, reason));
        }
        f
    }

    /// Recycle from the cold end of the LRU list until `MIN_FREE` frames are
    /// free; never a loaded root.
    pub(crate) fn make_available(&mut self, flush: &mut Flush) -> Result<(), NoFrames> {
        while self.free.len() < MIN_FREE {
            let mut cur = self.lru_cold;
            let mut victim = None;
            while let Some(id) = cur {
                let p = self.page(id);
                if p.root_count == 0 || cfg!(feature = "inject-recycle-loaded-root") {
                    victim = Some(id);
                    break;
                }
                cur = p.lru_prev;
            }
            let id = victim.ok_or(NoFrames)?;
            self.stats.recycles += 1;
            *flush = flush.or(self.zap_page(id, ZapReason::Recycle));
        }
        Ok(())
    }

    /// Take a root reference.
    pub(crate) fn root_get(&mut self, id: PageId) {
        self.page_mut(id).root_count += 1;
    }

    /// Drop a root reference; an invalid page is freed with its last one.
    pub(crate) fn root_put(&mut self, id: PageId) {
        let p = self.page_mut(id);
        p.root_count -= 1;
        if p.root_count == 0 && p.role.invalid() {
            self.free_slot(id);
        }
    }

    /// Write entry `idx` of a PAE root slot.
    pub(crate) fn write_pae_root(&mut self, id: PageId, idx: usize, v: u64) {
        self.write(id, idx, v);
    }
}
