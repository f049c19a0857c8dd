//! The optional audit (like KVM's old mmu_audit): checks the four invariants
//! of DESIGN.md section 3 over the whole cache: isolation, no privilege
//! gain, coherence (every present shadow entry agrees with the guest entry
//! it was built from, under its page's role), and accounting (pool slots,
//! hash buckets, LRU, parent chains, reverse map, root counts).

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use super::cache::{PageId, ShadowCache, SlotState, SptRef, ENTRIES};
use super::events::{GuestMode, Root, VcpuMmu};
use super::ptwrite::affected_sptes;
use super::role::{Access, Role};
use super::spte::{self, A, ADDR_MASK_64, D, P, PS, RW, US, XD};
use super::walk::{entry_access, reserved_mask, shadow_access, PagingCtx};
use super::{GuestMemory, ShadowFrames};

/// Which invariant an audit finding breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Invariant {
    /// 1: a shadow leaf maps outside the VM or another frame than the guest's.
    Isolation,
    /// 2: a shadow entry grants more than the guest's effective permissions.
    NoPrivilegeGain,
    /// 3: a shadow entry no longer matches the guest tables.
    Coherence,
    /// 4: pool / hash / parent chain / reverse map / root bookkeeping.
    Accounting,
}

/// An audit finding, with a description.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditError {
    /// The invariant broken.
    pub invariant: Invariant,
    /// What and where.
    pub detail: String,
}

impl fmt::Display for AuditError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "MMU audit: {:?} violated: {}",
            self.invariant, self.detail
        )
    }
}

fn err<T>(invariant: Invariant, detail: String) -> Result<T, AuditError> {
    Err(AuditError { invariant, detail })
}

/// The access a leaf shadow entry grants (W, U, X).
fn spte_access(s: u64) -> Access {
    let mut a = Access::NONE;
    if s & RW != 0 {
        a = a.or(Access::W);
    }
    if s & US != 0 {
        a = a.or(Access::U);
    }
    if s & XD == 0 {
        a = a.or(Access::X);
    }
    a
}

impl<F: ShadowFrames> ShadowCache<F> {
    /// Check the four invariants over the whole cache; `vcpus` are all the
    /// vCPUs registered with it (for roots and root counts).
    pub fn audit(&self, mem: &impl GuestMemory, vcpus: &[&VcpuMmu]) -> Result<(), AuditError> {
        // One table buffer for every read of a whole frame.
        let t = &mut [0u64; ENTRIES];
        self.audit_accounting(vcpus, t)?;
        for v in vcpus {
            self.audit_root(v)?;
        }
        for (i, s) in self.slots.iter().enumerate() {
            if let SlotState::Page(p) = &s.state {
                if !p.role.invalid() {
                    self.audit_page(mem, i as PageId, t)?;
                }
            }
        }
        Ok(())
    }

    fn audit_accounting(&self, vcpus: &[&VcpuMmu], t: &mut [u64; ENTRIES]) -> Result<(), AuditError> {
        use Invariant::Accounting as Acct;
        let mut root_refs: BTreeMap<PageId, u32> = BTreeMap::new();
        for v in vcpus {
            let pages: Vec<PageId> = match v.root {
                Root::None => Vec::new(),
                Root::Long(id) => alloc::vec![id],
                Root::Pae(r) => r.iter().flatten().copied().collect(),
            };
            for id in pages {
                *root_refs.entry(id).or_default() += 1;
            }
            if !matches!(self.slots[v.pae_root as usize].state, SlotState::PaeRoot(x) if x == v.id)
            {
                return err(
                    Acct,
                    format!("vCPU {} PAE root slot {} not owned by it", v.id, v.pae_root),
                );
            }
        }
        let mut seen_free = alloc::vec![false; self.slots.len()];
        for &id in &self.free {
            if seen_free[id as usize] || !matches!(self.slots[id as usize].state, SlotState::Free) {
                return err(Acct, format!("free list entry {id} duplicated or in use"));
            }
            seen_free[id as usize] = true;
        }
        let mut in_lru = alloc::vec![false; self.slots.len()];
        for id in self.lru_order() {
            in_lru[id as usize] = true;
        }
        let buckets = self.bucket_membership();
        let mut keys = BTreeMap::new();
        for (i, s) in self.slots.iter().enumerate() {
            let id = i as PageId;
            match &s.state {
                SlotState::Free => {
                    if !seen_free[i] {
                        return err(
                            Acct,
                            format!("free slot {id} leaked (not on the free list)"),
                        );
                    }
                    if self.read_all(id, t).iter().fold(0, |a, &e| a | e) != 0 {
                        return err(Acct, format!("free slot {id} not zeroed"));
                    }
                }
                SlotState::PaeRoot(owner) => {
                    if !vcpus.iter().any(|v| v.id == *owner && v.pae_root == id) {
                        return err(
                            Acct,
                            format!("PAE root slot {id} owned by unknown vCPU {owner}"),
                        );
                    }
                }
                SlotState::Page(p) => {
                    let refs = root_refs.get(&id).copied().unwrap_or(0);
                    if refs != p.root_count {
                        return err(
                            Acct,
                            format!(
                                "page {id} root_count {} but {refs} vCPU roots",
                                p.root_count
                            ),
                        );
                    }
                    let in_buckets = buckets[i].0;
                    if p.role.invalid() {
                        if in_buckets != 0 || p.root_count == 0 || in_lru[i] {
                            return err(
                                Acct,
                                format!("invalid page {id} hashed, listed or not a loaded root"),
                            );
                        }
                        if self.read_all(id, t).iter().fold(0, |a, &e| a | e) != 0
                            || !p.parents.to_vec().is_empty()
                        {
                            return err(
                                Acct,
                                format!("invalid page {id} still has entries or parents"),
                            );
                        }
                        continue;
                    }
                    if in_buckets != 1 || !buckets[i].1 || !in_lru[i] {
                        return err(Acct, format!("page {id} in {in_buckets} buckets (must be exactly its own) or off the LRU"));
                    }
                    if keys.insert((p.gfn, p.role), id).is_some() {
                        return err(
                            Acct,
                            format!("duplicate key (gfn {:#x}, {:?})", p.gfn, p.role),
                        );
                    }
                    for r in p.parents.to_vec() {
                        let ok = matches!(&self.slots[r.page as usize].state, SlotState::Page(pp) if !pp.role.invalid())
                            && spte::frame(self.read(r.page, r.index as usize)) == s.hpa
                            && spte::present(self.read(r.page, r.index as usize));
                        if !ok {
                            return err(
                                Acct,
                                format!("page {id} parent {r:?} does not point at it"),
                            );
                        }
                    }
                }
            }
        }
        for id in self.lru_order() {
            if !matches!(&self.slots[id as usize].state, SlotState::Page(p) if !p.role.invalid()) {
                return err(Acct, format!("LRU holds non-page {id}"));
            }
        }
        if root_refs
            .keys()
            .any(|&id| !matches!(self.slots[id as usize].state, SlotState::Page(_)))
        {
            return err(Acct, String::from("a loaded root was freed"));
        }
        // Reverse map and parent chains seen from the entries.
        let mut rmap_count = 0usize;
        for (gfn, refs) in &self.rmap {
            for r in refs {
                let ok = matches!(&self.slots[r.page as usize].state, SlotState::Page(p) if p.role.level() == 1 && p.leaf_gfns[r.index as usize] == *gfn)
                    && spte::present(self.read(r.page, r.index as usize));
                if !ok {
                    return err(
                        Acct,
                        format!("rmap[{gfn:#x}] entry {r:?} is not a live leaf for it"),
                    );
                }
                rmap_count += 1;
            }
        }
        let mut leaves = 0usize;
        for (i, s) in self.slots.iter().enumerate() {
            let SlotState::Page(p) = &s.state else {
                continue;
            };
            for (j, &v) in self.read_all(i as PageId, t).iter().enumerate() {
                if !spte::present(v) {
                    continue;
                }
                let r = SptRef {
                    page: i as PageId,
                    index: j as u16,
                };
                if p.role.level() == 1 {
                    leaves += 1;
                } else {
                    let child = self.id_of_hpa(spte::frame(v));
                    let ok = child.is_some_and(|c| matches!(&self.slots[c as usize].state, SlotState::Page(cp) if cp.parents.to_vec().contains(&r)));
                    if !ok {
                        return err(
                            Acct,
                            format!("entry {r:?} links a page that does not list it as parent"),
                        );
                    }
                }
            }
        }
        if leaves != rmap_count {
            return err(
                Acct,
                format!("{leaves} present leaves but {rmap_count} reverse-map entries"),
            );
        }
        Ok(())
    }

    fn audit_root(&self, v: &VcpuMmu) -> Result<(), AuditError> {
        let base = v.base_role();
        let expect = |id: PageId, gfn: u64, role: Role| -> Result<(), AuditError> {
            let p = self.page(id);
            if p.gfn != gfn || p.role.valid() != role {
                return err(
                    Invariant::Coherence,
                    format!(
                        "vCPU {} root page {id} is ({:#x}, {:?}), expected ({gfn:#x}, {role:?})",
                        v.id, p.gfn, p.role
                    ),
                );
            }
            Ok(())
        };
        match v.root {
            Root::None => {}
            Root::Long(id) => expect(id, (v.cr3 & ADDR_MASK_64) >> 12, base.with_level(4))?,
            Root::Pae(r) => {
                for (i, slot) in r.iter().enumerate() {
                    let e = self.read(v.pae_root, i);
                    let want = match v.mode {
                        GuestMode::NoPaging => {
                            Some(((i as u64) << 18, base.with_level(2).with_metaphysical(true)))
                        }
                        GuestMode::Bits32 => Some((
                            (v.cr3 & 0xffff_f000) >> 12,
                            base.with_level(2).with_quadrant(i as u8),
                        )),
                        GuestMode::Pae => (v.pdptes[i] & P != 0)
                            .then(|| ((v.pdptes[i] & ADDR_MASK_64) >> 12, base.with_level(2))),
                        GuestMode::Long => {
                            return err(
                                Invariant::Coherence,
                                format!("vCPU {} long mode with a PAE root", v.id),
                            )
                        }
                    };
                    match (slot, want) {
                        (Some(id), Some((gfn, role))) => {
                            expect(*id, gfn, role)?;
                            if e != spte::pae_root_entry(self.hpa(*id)) || self.hpa(*id) >= 1 << 32
                            {
                                return err(
                                    Invariant::Accounting,
                                    format!("vCPU {} PAE root entry {i} = {e:#x}", v.id),
                                );
                            }
                        }
                        (None, None) if e == 0 => {}
                        _ => {
                            return err(
                                Invariant::Coherence,
                                format!("vCPU {} PAE root entry {i} present/absent mismatch", v.id),
                            )
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Check every present entry of a valid page against the guest.
    fn audit_page(&self, mem: &impl GuestMemory, id: PageId, t: &mut [u64; ENTRIES]) -> Result<(), AuditError> {
        let p = self.page(id);
        let (gfn, role) = (p.gfn, p.role);
        let ctx = PagingCtx::for_role(role, self.config.maxphyaddr);
        let level = role.level();
        for (idx, &s) in self.read_all(id, t).iter().enumerate() {
            if !spte::present(s) {
                continue;
            }
            let here = || format!("page {id} (gfn {gfn:#x}, {role:?}) entry {idx} = {s:#x}");
            if role.metaphysical() {
                let span = 1u64 << (9 * (level as u32 - 1));
                let target = gfn + idx as u64 * span;
                if level == 1 {
                    self.audit_leaf(s, target, &[role.access()], &here)?;
                } else {
                    self.audit_link(s, target, role.with_level(level - 1), &here)?;
                }
                continue;
            }
            // The guest entry this shadow entry was built from.
            let size = role.gpte_size();
            let gi = if role.glevels() == 2 {
                role.quadrant() as usize * if level == 1 { 512 } else { 256 }
                    + if level == 1 { idx } else { idx / 2 }
            } else {
                idx
            };
            debug_assert!(affected_sptes(role, gi).contains(&idx));
            let egpa = (gfn << 12) + gi as u64 * size;
            let g = if size == 4 {
                mem.read_u32(egpa).map(u64::from)
            } else {
                mem.read_u64(egpa)
            };
            let Some(g) = g else {
                return err(
                    Invariant::Isolation,
                    format!("{}: guest entry outside RAM", here()),
                );
            };
            if g & P == 0 || g & A == 0 || g & reserved_mask(&ctx, level, g) != 0 {
                return err(
                    Invariant::Coherence,
                    format!(
                        "{}: guest entry {g:#x} is not present/accessed/valid",
                        here()
                    ),
                );
            }
            let eff = role.access().and(entry_access(&ctx, g));
            let large =
                level > 1 && g & PS != 0 && (role.glevels() != 2 || role.cr4_pse()) && level <= 3;
            let frame = if role.glevels() == 2 && large {
                (g & 0xffc0_0000) | (((g >> 13) & 0xff) << 32)
            } else if role.glevels() == 2 {
                g & 0xffff_f000
            } else if large {
                // Bit 12 of a large entry is PAT, not address.
                g & ADDR_MASK_64 & !((1u64 << (12 + 9 * (level as u32 - 1))) - 1)
            } else {
                g & ADDR_MASK_64
            };
            let dirty = g & D != 0;
            let variants = [
                shadow_access(&ctx, eff, dirty, false),
                shadow_access(&ctx, eff, dirty, true),
            ];
            if level == 1 {
                self.audit_leaf(s, frame >> 12, &variants, &here)?;
            } else if large {
                let mut target = frame >> 12;
                if role.glevels() == 2 {
                    target += (idx as u64 & 1) * 512;
                }
                let child = self.id_of_hpa(spte::frame(s)).map(|c| self.page(c).role);
                let want = role
                    .with_level(level - 1)
                    .with_metaphysical(true)
                    .with_quadrant(0);
                // Subset: the core's own A/D updates may have made the guest entry
                // more permissive (D set) since the child was linked.
                let Some(crole) = child.filter(|c| {
                    variants
                        .iter()
                        .any(|&a| want.with_access(c.access()) == *c && a.has(c.access()))
                }) else {
                    return err(
                        Invariant::NoPrivilegeGain,
                        format!(
                            "{}: large-page child role {child:?} not one of {variants:?}",
                            here()
                        ),
                    );
                };
                self.audit_link(s, target, crole, &here)?;
            } else {
                let q = if role.glevels() == 2 && level == 2 {
                    (idx & 1) as u8
                } else {
                    0
                };
                self.audit_link(
                    s,
                    frame >> 12,
                    role.with_level(level - 1).with_quadrant(q).with_access(eff),
                    &here,
                )?;
            }
        }
        Ok(())
    }

    fn audit_link(
        &self,
        s: u64,
        gfn: u64,
        role: Role,
        here: &dyn Fn() -> String,
    ) -> Result<(), AuditError> {
        if s != spte::nonleaf(spte::frame(s)) {
            return err(
                Invariant::NoPrivilegeGain,
                format!("{}: non-leaf with unexpected bits", here()),
            );
        }
        let Some(c) = self.id_of_hpa(spte::frame(s)) else {
            return err(
                Invariant::Isolation,
                format!("{}: links outside the pool", here()),
            );
        };
        let cp = self.page(c);
        if cp.gfn != gfn || cp.role != role {
            return err(
                Invariant::Coherence,
                format!(
                    "{}: links ({:#x}, {:?}), guest needs ({gfn:#x}, {role:?})",
                    here(),
                    cp.gfn,
                    cp.role
                ),
            );
        }
        Ok(())
    }

    fn audit_leaf(
        &self,
        s: u64,
        gfn: u64,
        allowed: &[Access],
        here: &dyn Fn() -> String,
    ) -> Result<(), AuditError> {
        match self.frames.gpa_to_hpa(gfn << 12) {
            Some(h) if h == spte::frame(s) => {}
            _ => {
                return err(
                    Invariant::Isolation,
                    format!(
                        "{}: maps {:#x}, guest frame {gfn:#x}",
                        here(),
                        spte::frame(s)
                    ),
                )
            }
        }
        let a = spte_access(s);
        if !allowed.iter().any(|al| al.has(a)) {
            return err(
                Invariant::NoPrivilegeGain,
                format!("{}: grants {a:?}, guest allows {allowed:?}", here()),
            );
        }
        if a.has(Access::W) && self.is_write_protected(gfn) {
            return err(
                Invariant::NoPrivilegeGain,
                format!(
                    "{}: writable mapping of shadowed page table {gfn:#x}",
                    here()
                ),
            );
        }
        Ok(())
    }
}
