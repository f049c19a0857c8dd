//! Per-vCPU MMU state ([`VcpuMmu`]: guest CR0/CR3/CR4/EFER, latched PDPTEs,
//! the loaded root) and the events that drive the cache: paging-mode
//! changes, CR3 loads (root lookup), page faults (walk + fetch: build the
//! shadow path), INVLPG, and the hardware state to enter the guest with.

use super::cache::{NoFrames, PageId, ShadowCache, MIN_FREE};
use super::role::{quadrant_of, Access, Role};
use super::spte::{self, ADDR_MASK_64, D, P, RW, US, XD};
use super::stats::ZapReason;
use super::walk::{self, shadow_access, AccessKind, GuestWalk, MemAccess, PagingCtx, WalkError};
use super::{FaultOutcome, Flush, GuestMemory, InjectGp, ShadowFrames};

pub use super::walk::GuestMode;

/// CR0.PE.
pub const CR0_PE: u64 = 1 << 0;
/// CR0.WP.
pub const CR0_WP: u64 = 1 << 16;
/// CR0.PG.
pub const CR0_PG: u64 = 1 << 31;
/// CR4.PSE.
pub const CR4_PSE: u64 = 1 << 4;
/// CR4.PAE.
pub const CR4_PAE: u64 = 1 << 5;
/// CR4.PGE.
pub const CR4_PGE: u64 = 1 << 7;
/// CR4.SMEP.
pub const CR4_SMEP: u64 = 1 << 20;
/// CR4.SMAP.
pub const CR4_SMAP: u64 = 1 << 21;
/// EFER.LME.
pub const EFER_LME: u64 = 1 << 8;
/// EFER.LMA.
pub const EFER_LMA: u64 = 1 << 10;
/// EFER.NXE.
pub const EFER_NXE: u64 = 1 << 11;

/// The loaded root of a vCPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Root {
    None,
    /// Long mode: one level-4 shadow page.
    Long(PageId),
    /// Every other mode: the PAE root's four level-2 shadows.
    Pae([Option<PageId>; 4]),
}

/// Per-vCPU MMU state. Create with [`ShadowCache::add_vcpu`].
#[derive(Clone, Debug)]
pub struct VcpuMmu {
    pub(crate) id: u32,
    pub(crate) cr0: u64,
    pub(crate) cr3: u64,
    pub(crate) cr4: u64,
    pub(crate) efer: u64,
    pub(crate) pdptes: [u64; 4],
    pub(crate) mode: GuestMode,
    pub(crate) root: Root,
    pub(crate) pae_root: PageId,
    /// Fork detector: last gfn written through `guest_pt_write`, and how
    /// many writes in a row hit it without a page fault in between.
    pub(crate) last_pt_write_gfn: Option<u64>,
    pub(crate) last_pt_write_count: u32,
    /// EFLAGS.AC=1 at CPL < 3 when the current fault was taken ([`PagingCtx::ac`]).
    pub(crate) ac: bool,
    /// The core could not emulate a [`smap_wp0_write`]: the next such fault
    /// maps the page the WP=0 way (supervisor-only, writable) once, so the
    /// guest's instruction runs natively; SMAP is then imprecise for that
    /// page until its leaf is rebuilt (KVM's behaviour for every such write).
    pub(crate) smap_wp0_native: bool,
    /// (gva page, hardware error code) of the last #PF the hardware raised
    /// for an access the walk allowed only through EFLAGS.AC under SMAP, on
    /// a shadow leaf that already granted it (see `page_fault`).
    pub(crate) smap_ac_refused: Option<(u64, u32)>,
}

/// The hardware paging state to enter the guest with (see the contract in
/// the module docs of [`crate::mmu`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HwPaging {
    /// Hardware CR3: the level-4 root, or the PAE root (below 4 GiB).
    pub cr3: u64,
    /// CR0 bits to force on: PE, PG, WP.
    pub cr0_set: u64,
    /// Paging bits of hardware CR4: PAE, plus the guest's SMEP/SMAP when the
    /// guest has paging on. PSE, PGE are 0.
    pub cr4: u64,
    /// Paging bits of hardware EFER: NXE, plus LME|LMA for a long-mode guest.
    pub efer: u64,
    /// Flushes required (recycling while rebuilding the root).
    pub flush: Flush,
}

impl VcpuMmu {
    /// This vCPU's id (bit in [`super::VcpuMask`]).
    pub fn id(&self) -> u32 {
        self.id
    }
    /// Guest paging mode.
    pub fn mode(&self) -> GuestMode {
        self.mode
    }
    /// Guest CR3.
    pub fn cr3(&self) -> u64 {
        self.cr3
    }
    /// PDPTEs latched at the last CR3 load (PAE).
    pub fn pdptes(&self) -> [u64; 4] {
        self.pdptes
    }
    /// The guest paging context (for a walk).
    pub fn ctx(&self, maxphyaddr: u8) -> PagingCtx {
        PagingCtx {
            mode: self.mode,
            cr3: self.cr3,
            pdptes: self.pdptes,
            wp: self.cr0 & CR0_WP != 0,
            nxe: self.efer & EFER_NXE != 0,
            pse: self.cr4 & CR4_PSE != 0,
            smep: self.cr4 & CR4_SMEP != 0,
            smap: self.cr4 & CR4_SMAP != 0,
            ac: self.ac,
            maxphyaddr,
        }
    }
    /// Records EFLAGS.AC=1 at CPL < 3 for the next [`ShadowCache::page_fault`]
    /// (SMAP lets explicit supervisor accesses to user pages through then).
    pub fn set_explicit_ac(&mut self, on: bool) {
        self.ac = on;
    }
    /// The core's emulator gave up on an [`FaultOutcome::EmulateWrite`] for
    /// a frame that is not a shadowed page table (so a supervisor write with
    /// CR0.WP=0, SMAP and AC=1 to a read-only user page):
    /// let the retried write run natively (see `smap_wp0_native`).
    pub fn smap_wp0_emulation_failed(&mut self) {
        self.smap_wp0_native = true;
    }
    /// The role of this vCPU's shadows, without level/quadrant/metaphysical
    /// and with full access; context bits normalised to the mode.
    pub fn base_role(&self) -> Role {
        let wp = self.cr0 & CR0_WP != 0;
        let smep = self.cr4 & CR4_SMEP != 0;
        let smap = self.cr4 & CR4_SMAP != 0;
        let r = Role::new(self.mode.glevels(), 0, 0, false, Access::FULL);
        match self.mode {
            GuestMode::NoPaging => r,
            GuestMode::Bits32 => r
                .with_context(wp, false, smep && !wp, smap && !wp)
                .with_cr4_pse(self.cr4 & CR4_PSE != 0),
            GuestMode::Pae | GuestMode::Long => {
                r.with_context(wp, self.efer & EFER_NXE != 0, smep && !wp, smap && !wp)
            }
        }
    }
    fn root_pages(&self) -> impl Iterator<Item = PageId> {
        let (a, b) = match self.root {
            Root::None => (None, [None; 4]),
            Root::Long(id) => (Some(id), [None; 4]),
            Root::Pae(r) => (None, r),
        };
        a.into_iter().chain(b.into_iter().flatten())
    }
}

/// Mode from CR0/CR4/EFER (SDM Vol. 3A 4.1.1).
fn mode_of(cr0: u64, cr4: u64, efer: u64) -> GuestMode {
    if cr0 & CR0_PG == 0 {
        GuestMode::NoPaging
    } else if cr4 & CR4_PAE == 0 {
        GuestMode::Bits32
    } else if efer & EFER_LME != 0 {
        GuestMode::Long
    } else {
        GuestMode::Pae
    }
}

/// Load the four PDPTEs for PAE paging from `cr3` (SDM Vol. 3A 4.4.1): a
/// present PDPTE with reserved bits (2:1, 8:5, 63:MAXPHYADDR) is #GP. A
/// PDPT outside guest RAM is treated as #GP too (documented choice).
fn load_pdptes(mem: &impl GuestMemory, cr3: u64, maxphyaddr: u8) -> Result<[u64; 4], InjectGp> {
    let base = cr3 & 0xffff_ffe0;
    let rsvd = 0b1_1110_0110 | (!0u64 << maxphyaddr);
    let mut p = [0; 4];
    for (i, e) in p.iter_mut().enumerate() {
        let v = mem.read_u64(base + 8 * i as u64).ok_or(InjectGp)?;
        if v & P != 0 && v & rsvd != 0 {
            return Err(InjectGp);
        }
        *e = v;
    }
    Ok(p)
}

impl<F: ShadowFrames> ShadowCache<F> {
    /// Register vCPU `id` (0..64): takes its PAE root frame from the pool
    /// (recycling if needed: apply the returned flush to the other vCPUs).
    /// It starts with paging off (real mode).
    pub fn add_vcpu(&mut self, id: u32) -> Result<(VcpuMmu, Flush), super::cache::PoolError> {
        let n = self.vcpus.count_ones() as usize + 1;
        if id >= 64 || self.vcpus & (1 << id) != 0 || self.config.pool_frames < 8 + 5 * n {
            return Err(super::cache::PoolError::TooSmall);
        }
        let mut flush = Flush::NONE;
        if self.free.len() <= MIN_FREE {
            self.make_available(&mut flush)
                .map_err(|_| super::cache::PoolError::TooSmall)?;
        }
        let pae_root = self
            .alloc_pae_root(id)
            .ok_or(super::cache::PoolError::TooSmall)?;
        self.vcpus |= 1 << id;
        let v = VcpuMmu {
            id,
            cr0: 0,
            cr3: 0,
            cr4: 0,
            efer: 0,
            pdptes: [0; 4],
            mode: GuestMode::NoPaging,
            root: Root::None,
            pae_root,
            last_pt_write_gfn: None,
            last_pt_write_count: 0,
            ac: false,
            smap_wp0_native: false,
            smap_ac_refused: None,
        };
        Ok((v, flush))
    }

    /// INIT: the vCPU drops its root and returns to the power-up paging
    /// state (paging off); it holds no root until it runs again (the next
    /// [`ShadowCache::set_paging_mode`] or [`ShadowCache::prepare_entry`]).
    pub fn reset_vcpu(&mut self, v: &mut VcpuMmu) {
        self.unload_root(v);
        v.cr0 = 0;
        v.cr3 = 0;
        v.cr4 = 0;
        v.efer = 0;
        v.pdptes = [0; 4];
        v.mode = GuestMode::NoPaging;
        v.last_pt_write_gfn = None;
        v.last_pt_write_count = 0;
        v.ac = false;
        v.smap_wp0_native = false;
        v.smap_ac_refused = None;
    }

    /// Drops the vCPU's root references. No heap and no PAE root writes
    /// for a long-mode root: this runs at every CR3 load (the cost of a
    /// cache hit, `mmu-bench` op `cr3-hit`).
    fn unload_root(&mut self, v: &mut VcpuMmu) {
        let pages = match v.root {
            Root::Long(id) => [Some(id), None, None, None],
            Root::Pae(r) => r,
            Root::None => [None; 4],
        };
        for id in pages.into_iter().flatten() {
            self.root_put(id);
        }
        // A long-mode root never wrote the PAE root; a failed build may
        // have left entries behind a `Root::None`.
        if !matches!(v.root, Root::Long(_)) {
            for i in 0..4 {
                self.write_pae_root(v.pae_root, i, 0);
            }
        }
        v.root = Root::None;
        self.note_loaded(v.id, None);
    }

    /// Records vCPU `id`'s loaded root glevels (`None`: no root). O(1):
    /// it runs twice per guest CR3 load (unload, build).
    fn note_loaded(&mut self, id: u32, glevels: Option<u8>) {
        let old = core::mem::replace(&mut self.loaded_glevels[id as usize % 64], glevels);
        if old == glevels {
            return;
        }
        if let Some(g) = old.map(usize::from) {
            self.loaded_per_glevels[g] -= 1;
            if self.loaded_per_glevels[g] == 0 {
                self.loaded_mask &= !(1 << g);
            }
        }
        if let Some(g) = glevels.map(usize::from) {
            self.loaded_per_glevels[g] += 1;
            self.loaded_mask |= 1 << g;
        }
        // The recorded maximum and pairs are functions of the masks seen:
        // a mask seen before adds nothing.
        if self.loaded_masks_seen & 1 << self.loaded_mask == 0 {
            self.loaded_masks_seen |= 1 << self.loaded_mask;
            super::stats::record_loaded(&mut self.stats, self.loaded_mask);
        }
    }

    /// The glevels (bit g) of the roots the vCPUs have loaded now.
    pub fn loaded_glevels_mask(&self) -> u32 {
        self.loaded_mask
    }

    fn root_is_valid(&self, v: &VcpuMmu) -> bool {
        v.root != Root::None && v.root_pages().all(|id| !self.page(id).role.invalid())
    }

    /// Build (look up) the root for the vCPU's current CR3 and mode.
    fn build_root(&mut self, v: &mut VcpuMmu, flush: &mut Flush) -> Result<(), NoFrames> {
        self.make_available(flush)?;
        let base = v.base_role();
        let mut hit = true;
        if v.mode == GuestMode::Long {
            let gfn = (v.cr3 & ADDR_MASK_64) >> 12;
            let (id, created) = self.get_page(gfn, base.with_level(4), flush)?;
            hit &= !created;
            self.root_get(id);
            v.root = Root::Long(id);
        } else {
            let mut r = [None; 4];
            for (i, slot) in r.iter_mut().enumerate() {
                let key = match v.mode {
                    GuestMode::NoPaging => {
                        Some(((i as u64) << 18, base.with_level(2).with_metaphysical(true)))
                    }
                    GuestMode::Bits32 => Some((
                        (v.cr3 & 0xffff_f000) >> 12,
                        base.with_level(2).with_quadrant(i as u8),
                    )),
                    _ => {
                        let e = v.pdptes[i];
                        (e & P != 0).then(|| ((e & ADDR_MASK_64) >> 12, base.with_level(2)))
                    }
                };
                if let Some((gfn, role)) = key {
                    let (id, created) = self.get_page(gfn, role, flush)?;
                    hit &= !created;
                    self.root_get(id);
                    *slot = Some(id);
                    let hpa = self.hpa(id);
                    self.write_pae_root(v.pae_root, i, spte::pae_root_entry(hpa));
                }
            }
            v.root = Root::Pae(r);
        }
        if hit {
            self.stats.cr3_hits += 1;
        } else {
            self.stats.cr3_misses += 1;
        }
        self.note_loaded(v.id, Some(v.mode.glevels()));
        Ok(())
    }

    /// Guest MOV to CR0/CR4 or EFER write: the context is reset (new root
    /// for the new role), the cache survives. Entering PAE paging loads the
    /// PDPTEs from CR3 (#GP on reserved bits, SDM Vol. 3A 4.4.1).
    pub fn set_paging_mode(
        &mut self,
        v: &mut VcpuMmu,
        mem: &impl GuestMemory,
        cr0: u64,
        cr4: u64,
        efer: u64,
    ) -> Result<Flush, InjectGp> {
        let mode = mode_of(cr0, cr4, efer);
        let pdptes = if mode == GuestMode::Pae {
            load_pdptes(mem, v.cr3, self.config.maxphyaddr)?
        } else {
            v.pdptes
        };
        self.unload_root(v);
        v.cr0 = cr0;
        v.cr4 = cr4;
        v.efer = if mode == GuestMode::Long {
            efer | EFER_LMA
        } else {
            efer & !EFER_LMA
        };
        v.mode = mode;
        v.pdptes = pdptes;
        let mut f = Flush { vcpus: 1 << v.id };
        // Failure leaves no root; prepare_entry retries and reports.
        let _ = self.build_root(v, &mut f);
        Ok(f)
    }

    /// Guest MOV to CR3: latch PDPTEs (PAE), then look up the root; a hit
    /// builds nothing. Reserved bits -> #GP and nothing changes.
    pub fn load_cr3(
        &mut self,
        v: &mut VcpuMmu,
        mem: &impl GuestMemory,
        cr3: u64,
    ) -> Result<Flush, InjectGp> {
        let maxphy = self.config.maxphyaddr;
        if cfg!(feature = "inject-cr3-reuses-stale-root") && cr3 == v.cr3 && v.root != Root::None {
            return Ok(Flush { vcpus: 1 << v.id });
        }
        match v.mode {
            GuestMode::Long if cr3 & (!0u64 << maxphy) != 0 => return Err(InjectGp),
            GuestMode::Pae => v.pdptes = load_pdptes(mem, cr3, maxphy)?,
            _ => {}
        }
        self.unload_root(v);
        v.cr3 = cr3;
        let mut f = Flush { vcpus: 1 << v.id };
        if !self.config.cache {
            f = f.or(self.zap_all(ZapReason::NoCache));
        }
        let _ = self.build_root(v, &mut f);
        Ok(f)
    }

    /// Call before every VM entry: rebuilds the root if it was zapped and
    /// returns the hardware paging state to run the guest with.
    pub fn prepare_entry(&mut self, v: &mut VcpuMmu) -> Result<HwPaging, FaultOutcome> {
        let mut flush = Flush::NONE;
        if !self.root_is_valid(v) {
            self.unload_root(v);
            flush = Flush { vcpus: 1 << v.id };
            self.build_root(v, &mut flush)
                .map_err(|_| FaultOutcome::NoShadowFrames)?;
        }
        let paging = v.mode != GuestMode::NoPaging;
        let (cr3, efer) = match v.root {
            Root::Long(id) => (self.hpa(id), super::events::EFER_NXE | EFER_LME | EFER_LMA),
            _ => (self.hpa(v.pae_root), EFER_NXE),
        };
        let cr4 = CR4_PAE
            | if paging {
                v.cr4 & (CR4_SMEP | CR4_SMAP)
            } else {
                0
            };
        Ok(HwPaging {
            cr3,
            cr0_set: CR0_PE | CR0_PG | CR0_WP,
            cr4,
            efer,
            flush,
        })
    }

    /// The shadow page at the top of the vCPU's root for `gva`.
    fn root_for(&self, v: &VcpuMmu, gva: u64) -> Option<(PageId, u8)> {
        match v.root {
            Root::None => None,
            Root::Long(id) => Some((id, 4)),
            Root::Pae(r) => r[((gva >> 30) & 3) as usize].map(|id| (id, 2)),
        }
    }

    /// A #PF VM exit at `gva` with the hardware error code `error_code`:
    /// walk the guest tables (setting A/D), then build the shadow path, or
    /// tell the caller to inject #PF / emulate.
    pub fn page_fault(
        &mut self,
        v: &mut VcpuMmu,
        mem: &mut impl GuestMemory,
        gva: u64,
        error_code: u32,
    ) -> FaultOutcome {
        self.stats.page_faults += 1;
        let mut flush = Flush::NONE;
        if !self.root_is_valid(v) {
            return match self.prepare_entry(v) {
                Ok(hw) => FaultOutcome::Fixed { flush: hw.flush },
                Err(e) => e,
            };
        }
        if self.make_available(&mut flush).is_err() {
            return FaultOutcome::NoShadowFrames;
        }
        let acc = MemAccess::from_error_code(error_code);
        let ctx = v.ctx(self.config.maxphyaddr);
        let w = match walk::walk(&ctx, mem, gva, acc) {
            Ok(w) => w,
            Err(WalkError::Fault(ec)) => {
                v.last_pt_write_count = 0;
                self.stats.injected_pf += 1;
                return FaultOutcome::InjectPf {
                    error_code: ec,
                    cr2: gva,
                    flush,
                };
            }
            Err(WalkError::OutsideRam(gpa)) => return FaultOutcome::OutsideRam { gpa, flush },
        };
        if w.gpa >= mem.ram_size() || self.frames.gpa_to_hpa(w.gpa).is_none() {
            return FaultOutcome::OutsideRam { gpa: w.gpa, flush };
        }
        // SMAP ignores EFLAGS.AC for implicit supervisor accesses (descriptor
        // tables, the stack of an event delivery; SDM Vol. 3A 4.6.1), and a
        // #PF exit does not tell them from explicit ones: the walk took this
        // one as explicit. If the hardware refuses it twice in a row, same
        // page and error code, while the shadow leaf already grants it (the
        // first #PF invalidated any stale TLB entry, SDM Vol. 3A 4.10.4.1),
        // only SMAP can have refused it: it is implicit and faults.
        let smap_ac = ctx.smap
            && ctx.ac
            && !acc.user
            && acc.kind != AccessKind::Fetch
            && w.access.has(Access::U)
            && error_code & spte::PFEC_P != 0;
        let key = (gva >> 12, error_code);
        if smap_ac && self.leaf_grants(v, gva, acc) {
            if v.smap_ac_refused == Some(key) {
                v.smap_ac_refused = None;
                self.stats.injected_pf += 1;
                return FaultOutcome::InjectPf {
                    error_code: walk::error_code(&ctx, acc, true, false),
                    cr2: gva,
                    flush,
                };
            }
            v.smap_ac_refused = Some(key);
        } else {
            v.smap_ac_refused = None;
        }
        match self.fetch(v, mem, &ctx, gva, acc, &w, &mut flush) {
            Ok(true) => {}
            Ok(false) => return FaultOutcome::Fixed { flush }, // guest tables changed meanwhile: retry
            Err(NoFrames) => return FaultOutcome::NoShadowFrames,
        }
        if smap_wp0_write(&ctx, acc, w.access) {
            if v.smap_wp0_native {
                // `fetch` mapped it supervisor-writable this once.
                v.smap_wp0_native = false;
                return FaultOutcome::Fixed { flush };
            }
            // The leaf stays user and read-only (see `fetch`); the write is
            // done by emulation.
            return FaultOutcome::EmulateWrite { gpa: w.gpa, flush };
        }
        if acc.kind == AccessKind::Write && self.traps_writes(w.gpa >> 12) {
            // A trapped page-table write: keeps counting towards flooding.
            self.stats.write_protect_faults += 1;
            return FaultOutcome::EmulateWrite { gpa: w.gpa, flush };
        }
        // The guest used its tables: reset the fork detector.
        v.last_pt_write_count = 0;
        FaultOutcome::Fixed { flush }
    }

    /// Build the shadow path for a successful walk `w` down to the leaf.
    /// Returns `Ok(false)` if re-validation after write-protecting a table of
    /// the walk found a guest entry changed (the caller retries).
    #[allow(clippy::too_many_arguments)]
    fn fetch(
        &mut self,
        v: &VcpuMmu,
        mem: &impl GuestMemory,
        ctx: &PagingCtx,
        gva: u64,
        acc: MemAccess,
        w: &GuestWalk,
        flush: &mut Flush,
    ) -> Result<bool, NoFrames> {
        let (mut cur, top) = self.root_for(v, gva).expect("a successful walk has a root");
        let base = v.base_role();
        // With SMAP the WP=0 trick (a supervisor-only writable leaf) would
        // let later AC=0 supervisor accesses through; see `smap_wp0_write`.
        let sup_write =
            !acc.user && acc.kind == AccessKind::Write && (!ctx.smap || v.smap_wp0_native);
        let leaf = shadow_access(ctx, w.access, w.dirty, sup_write);
        for level in (2..=top).rev() {
            let idx = ((gva >> (12 + 9 * (level as u32 - 1))) & 511) as usize;
            let cl = level - 1;
            let (gfn, role) = if cl >= w.leaf_level {
                let q = if v.mode == GuestMode::Bits32 {
                    quadrant_of(gva, cl)
                } else {
                    0
                };
                (
                    w.table_gfn[cl as usize],
                    base.with_level(cl)
                        .with_quadrant(q)
                        .with_access(w.inherited[cl as usize]),
                )
            } else {
                let span = (1u64 << (9 * cl as u32)) - 1;
                (
                    (w.gpa >> 12) & !span,
                    base.with_level(cl)
                        .with_metaphysical(true)
                        .with_access(leaf),
                )
            };
            let old = self.read(cur, idx);
            let existing = if spte::present(old) {
                self.id_of_hpa(spte::frame(old))
            } else {
                None
            };
            if let Some(id) = existing.filter(|&id| {
                let p = self.page(id);
                p.gfn == gfn && p.role.key_eq(role)
            }) {
                self.stats.fault_hits += 1;
                cur = id;
                continue;
            }
            let (child, created) = self.get_page(gfn, role, flush)?;
            if created {
                self.stats.fault_misses += 1;
            } else {
                self.stats.fault_hits += 1;
            }
            self.link(cur, idx, child);
            // Another vCPU may have written a table of this walk through a
            // mapping that was writable until the write protection above:
            // re-validate before mapping anything through it.
            if created && !role.metaphysical() && !walk::still_valid(mem, w) {
                return Ok(false);
            }
            cur = child;
        }
        let idx = ((gva >> 12) & 511) as usize;
        let gfn = w.gpa >> 12;
        let v = self.leaf_spte(gfn, leaf).unwrap_or(0);
        self.set_leaf(cur, idx, gfn, v);
        // Not for the CR0.WP=0 supervisor-write leaf: that one is made for
        // this access only (a user access flips it back).
        if self.page(cur).role.metaphysical() && !sup_write {
            self.prefetch_direct(cur, leaf);
        }
        Ok(true)
    }

    /// Fills every empty entry of the metaphysical PT `id` (a large page's
    /// split, or the no-paging identity map): all its 4 KiB pieces come
    /// from one guest entry (or none), so they share its permissions and
    /// A/D state, and the role's access is exactly `a`. One fault then maps
    /// the whole 2 MiB instead of one fault per 4 KiB (KVM prefetches
    /// direct-mapped sptes the same way). Write-protected gfns stay
    /// read-only through [`Self::leaf_spte`].
    fn prefetch_direct(&mut self, id: PageId, a: Access) {
        let base = self.page(id).gfn;
        for i in 0..512 {
            if spte::present(self.read(id, i)) {
                continue;
            }
            if let Some(s) = self.leaf_spte(base + i as u64, a) {
                self.set_leaf(id, i, base + i as u64, s);
            }
        }
    }

    /// The leaf shadow entry mapping `gfn` with `a` (W dropped if `gfn` is
    /// write-protected); `None` outside guest RAM.
    pub(crate) fn leaf_spte(&self, gfn: u64, a: Access) -> Option<u64> {
        let hpa = self.frames.gpa_to_hpa(gfn << 12)?;
        let mut s = (hpa & ADDR_MASK_64) | P | spte::A;
        if a.has(Access::U) {
            s |= US;
        }
        if a.has(Access::W) && !self.traps_writes(gfn) {
            s |= RW | D;
        }
        if !a.has(Access::X) {
            s |= XD;
        }
        Some(s)
    }

    /// Guest INVLPG: drop the leaf shadow entry for `gva` so the next access
    /// re-walks (and sets A again, as after a real INVLPG). Paging off: no-op.
    pub fn invlpg(&mut self, v: &mut VcpuMmu, gva: u64) -> Flush {
        if v.mode == GuestMode::NoPaging || !self.root_is_valid(v) {
            return Flush::NONE;
        }
        if self.root_for(v, gva).is_none() {
            return Flush::NONE;
        }
        if let Some((pt, idx)) = self.leaf_slot(v, gva) {
            self.clear_spte(pt, idx);
        }
        Flush { vcpus: 1 << v.id }
    }

    /// The shadow PT and entry index that map `gva` on the vCPU's current
    /// root, following present shadow entries down from the root (the
    /// hardware walk, [`ShadowCache::shadow_walk`]); `None` when no root
    /// covers `gva` or a level above the PT is not present.
    fn leaf_slot(&self, v: &VcpuMmu, gva: u64) -> Option<(PageId, usize)> {
        self.shadow_walk(v, gva)?.pt_slot()
    }

    /// Does the current shadow leaf of `gva` let the hardware (CR0.WP=1)
    /// perform the supervisor data access `acc` on a user page, SMAP aside?
    fn leaf_grants(&self, v: &VcpuMmu, gva: u64, acc: MemAccess) -> bool {
        let Some((pt, idx)) = self.leaf_slot(v, gva) else {
            return false;
        };
        let s = self.read(pt, idx);
        spte::present(s) && s & US != 0 && (acc.kind != AccessKind::Write || s & RW != 0)
    }

    /// Unshadow `gfn` (e.g. the caller knows it is no longer a page table).
    pub fn unshadow(&mut self, gfn: u64) -> Flush {
        self.stats.unshadows += 1;
        self.zap_gfn(gfn, ZapReason::Unshadow)
    }
}

/// A supervisor write with CR0.WP=0, CR4.SMAP=1 and EFLAGS.AC=1 to a
/// read-only user page (SDM Vol. 3A 4.6.1: allowed). No shadow leaf fits:
/// U=1,W=0 faults it, U=1,W=1 would let user writes through, and U=0,W=1
/// (the WP=0 trick) would let later supervisor accesses with AC=0 escape
/// SMAP. The leaf keeps the guest's U=1,W=0 and the write is emulated.
pub(crate) fn smap_wp0_write(ctx: &PagingCtx, acc: MemAccess, effective: Access) -> bool {
    ctx.smap
        && !ctx.wp
        && !acc.user
        && acc.kind == AccessKind::Write
        && effective.has(Access::U)
        && !effective.has(Access::W)
        && ctx.mode != GuestMode::NoPaging
}
