//! Emulated writes to write-protected guest page tables: the core performs
//! the write and updates exactly the affected shadow entries of every role
//! shadowing that gfn (including the 32-bit PDE rule), unshadows the gfn on
//! write flooding and zaps a shadow page on entry-straddling writes.

use alloc::vec::Vec;

use super::cache::{PageId, ShadowCache};
use super::events::VcpuMmu;
use super::role::Role;
use super::spte::{A, ADDR_MASK_64, P};
use super::stats::ZapReason;
use super::walk::{entry_access, reserved_mask, shadow_access, PagingCtx};
use super::{Flush, GuestMemory, ShadowFrames};

/// Writes in a row to one gfn, without a page fault in between, after which
/// the gfn is unshadowed (fork / memset of a page table).
pub const FLOOD_WRITES: u32 = 3;

/// The shadow entries of a page with `role` that guest entry `gi` of the
/// shadowed table affects: PAE/long tables map entry i to shadow entry i;
/// 32-bit PTs split in two quadrants of 512; a 32-bit PDE i maps shadow
/// PDEs 2*(i%256) and 2*(i%256)+1 in quadrant i/256 (each guest PDE covers
/// 4 MiB, each shadow PDE 2 MiB).
pub fn affected_sptes(role: Role, gi: usize) -> Vec<usize> {
    if role.glevels() != 2 {
        return alloc::vec![gi];
    }
    match role.level() {
        1 if gi / 512 == role.quadrant() as usize => alloc::vec![gi % 512],
        2 => {
            let (q, slots) = if cfg!(feature = "inject-pde32-offset-2007") {
                ((gi / 512) as u8, [gi % 512, gi % 512])
            } else {
                super::role::pde32_shadow_slots(gi)
            };
            if q == role.quadrant() {
                slots.to_vec()
            } else {
                Vec::new()
            }
        }
        _ => Vec::new(),
    }
}

/// The naturally aligned 8-byte words `width` bytes at `gpa` touch: (word
/// address, byte mask in it, bytes of `value` shifted into place), at most
/// two.
fn words(gpa: u64, width: u8, value: u64) -> impl Iterator<Item = (u64, u64, u64)> {
    let mut done = 0u64;
    core::iter::from_fn(move || {
        if done >= width as u64 {
            return None;
        }
        let a = gpa + done;
        let base = a & !7;
        let off = a - base;
        let n = (8 - off).min(width as u64 - done);
        let mask = if n == 8 { !0 } else { ((1u64 << (8 * n)) - 1) << (8 * off) };
        let bits = ((value >> (8 * done)) << (8 * off)) & mask;
        done += n;
        Some((base, mask, bits))
    })
}

/// Writes `width` bytes of `value` at `gpa` (within one page), merging
/// them into each 8-byte word with a compare-exchange, so a concurrent
/// store of another vCPU to the word's other bytes is not lost. With
/// `expect`, all or nothing: only if the bytes still hold `expect` (an
/// emulated read-modify-write computed from them); false when they did not
/// (nothing written). A write split over two words is atomic per word only.
fn write_bytes(mem: &mut impl GuestMemory, gpa: u64, width: u8, value: u64, expect: Option<u64>) -> bool {
    if let Some(e) = expect {
        for (base, mask, bits) in words(gpa, width, e) {
            if mem.read_u64(base).is_none_or(|w| w & mask != bits) {
                return false;
            }
        }
    }
    let expected = expect.map(|e| words(gpa, width, e));
    let mut expected = expected.into_iter().flatten();
    for (base, mask, bits) in words(gpa, width, value) {
        let want = expected.next().map(|(_, _, b)| b);
        loop {
            let Some(old) = mem.read_u64(base) else { return false };
            if want.is_some_and(|w| old & mask != w) {
                return false;
            }
            if mem.cmpxchg_u64(base, old, (old & !mask) | bits) == Some(true) {
                break;
            }
        }
    }
    true
}

fn read_gpte(mem: &impl GuestMemory, gpa: u64, size: u64) -> Option<u64> {
    if size == 4 {
        mem.read_u32(gpa).map(u64::from)
    } else {
        mem.read_u64(gpa)
    }
}

impl<F: ShadowFrames> ShadowCache<F> {
    /// The guest writes `width` (1, 2, 4 or 8) bytes of `value` at `gpa`,
    /// trapped because the page is write-protected. The core performs the
    /// write in guest memory and brings every shadow of the page up to date.
    pub fn guest_pt_write(
        &mut self,
        v: &mut VcpuMmu,
        mem: &mut impl GuestMemory,
        gpa: u64,
        width: u8,
        value: u64,
    ) -> Flush {
        let width = width.clamp(1, 8);
        let room = 4096 - (gpa & 0xfff);
        if (width as u64) > room {
            let lo = room as u8;
            let f = self.guest_pt_write(v, mem, gpa, lo, value);
            return f.or(self.guest_pt_write(
                v,
                mem,
                gpa + room,
                width - lo,
                value >> (8 * lo as u32),
            ));
        }
        self.pt_write(v, mem, gpa, width, value, None).0
    }

    /// [`ShadowCache::guest_pt_write`] of a read-modify-write instruction
    /// (CMPXCHG, XCHG, AND/OR/XOR) whose `value` was computed from the
    /// bytes `expect` read at `gpa` (within one page): all or nothing, as
    /// the processor's locked cycle is (SDM Vol. 3A 9.1.2.2). The flush to
    /// perform, and false when another vCPU changed the bytes meanwhile:
    /// nothing was written, the caller computes again from what is there
    /// now.
    pub fn guest_pt_cmpxchg(
        &mut self,
        v: &mut VcpuMmu,
        mem: &mut impl GuestMemory,
        gpa: u64,
        width: u8,
        expect: u64,
        value: u64,
    ) -> (Flush, bool) {
        let width = width.clamp(1, 8);
        if (width as u64) > 4096 - (gpa & 0xfff) {
            return (self.guest_pt_write(v, mem, gpa, width, value), true);
        }
        self.pt_write(v, mem, gpa, width, value, Some(expect))
    }

    fn pt_write(
        &mut self,
        v: &mut VcpuMmu,
        mem: &mut impl GuestMemory,
        gpa: u64,
        width: u8,
        value: u64,
        expect: Option<u64>,
    ) -> (Flush, bool) {
        self.stats.pt_writes += 1;
        if cfg!(feature = "inject-no-pt-write-update") {
            return (Flush::NONE, write_bytes(mem, gpa, width, value, expect));
        }
        let gfn = gpa >> 12;
        let mut flush = Flush::NONE;
        if v.last_pt_write_gfn == Some(gfn) {
            v.last_pt_write_count += 1;
        } else {
            v.last_pt_write_gfn = Some(gfn);
            v.last_pt_write_count = 1;
        }
        let mut pages: Vec<PageId> = self
            .pages_of_gfn(gfn)
            .into_iter()
            .filter(|&id| !self.page(id).role.metaphysical())
            .collect();
        if v.last_pt_write_count >= FLOOD_WRITES && !pages.is_empty() {
            self.stats.unshadows += 1;
            flush = flush.or(self.zap_gfn(gfn, ZapReason::Flood));
            pages.clear();
        }
        // Old guest entries, per page (an unchanged entry keeps its shadow).
        let off = gpa & 0xfff;
        let mut work = Vec::new();
        for id in pages {
            let role = self.page(id).role;
            let size = role.gpte_size();
            let (first, last) = (off / size, (off + width as u64 - 1) / size);
            if first != last {
                flush = flush.or(self.zap_page(id, ZapReason::Misaligned));
                continue;
            }
            let egpa = (gfn << 12) + first * size;
            work.push((id, first as usize, egpa, size, read_gpte(mem, egpa, size)));
        }
        if !write_bytes(mem, gpa, width, value, expect) {
            return (flush, false);
        }
        for (id, gi, egpa, size, old) in work {
            let new = read_gpte(mem, egpa, size);
            if new == old {
                continue;
            }
            let role = self.page(id).role;
            for idx in affected_sptes(role, gi) {
                let changed = self.update_spte(id, idx, new.unwrap_or(0));
                if changed {
                    flush = flush.or(self.flush_all());
                }
            }
        }
        (flush, true)
    }

    /// Bring shadow entry `idx` of page `id` in line with the new guest
    /// entry `gpte`: a leaf is recomputed (prefetched if present and
    /// accessed), a link to a lower shadow is dropped (rebuilt on the next
    /// fault). True if a present entry changed.
    fn update_spte(&mut self, id: PageId, idx: usize, gpte: u64) -> bool {
        let role = self.page(id).role;
        let old = self.read(id, idx);
        if role.level() != 1 {
            return self.clear_spte(id, idx);
        }
        let new = self.prefetch_leaf(role, gpte);
        match new {
            Some((gfn, s)) if s != old => {
                self.set_leaf(id, idx, gfn, s);
                super::spte::present(old)
            }
            Some(_) => false,
            None => self.clear_spte(id, idx),
        }
    }

    /// The leaf shadow entry a guest PTE yields in a level-1 page of `role`
    /// without an access to guide it (the read variant under CR0.WP=0).
    pub(crate) fn prefetch_leaf(&self, role: Role, gpte: u64) -> Option<(u64, u64)> {
        let ctx = PagingCtx::for_role(role, self.config.maxphyaddr);
        if gpte & P == 0 || gpte & A == 0 || gpte & reserved_mask(&ctx, 1, gpte) != 0 {
            return None;
        }
        let frame = if role.glevels() == 2 {
            gpte & 0xffff_f000
        } else {
            gpte & ADDR_MASK_64
        };
        let eff = role.access().and(entry_access(&ctx, gpte));
        let a = shadow_access(&ctx, eff, gpte & super::spte::D != 0, false);
        let gfn = frame >> 12;
        self.leaf_spte(gfn, a).map(|s| (gfn, s))
    }
}
