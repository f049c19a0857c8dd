//! The address spaces of the mode walk: one set of guest frames holding a
//! 32-bit page directory, a PAE PDPT and a 4-level PML4 (the PAE page
//! directories are shared by PAE and long mode: the same frame is a page
//! directory in two modes, DESIGN.md section 4 scenario 1), the data frames
//! they map, and the patterns in them.
//!
//! Every mode identity-maps `[0, 64 MiB)` (the engine's low window, the
//! tables themselves and the data frames), and maps a test window at
//! [`WIN`]:
//!
//! | linear | 32-bit | PAE / 4-level |
//! |---|---|---|
//! | `WIN + 0x0000` | d0, read/write | same |
//! | `WIN + 0x1000` | d1, read-only | same |
//! | `WIN + 0x2000` | not present | same |
//! | `WIN + 0x3000` | d0 again (alias) | same |
//! | `WIN + 0x4000` | the `ret` page | same |
//! | [`LARGE_VA`] | one 4 MiB page | two 2 MiB pages |
//! | [`EDIT_VA`] | d2 (PDE 258 -> PT `pt32_e`) | d2 (PDE 4 -> PT `pt_e`) |
//! | [`HIGH_VA`] | - | d3 (4-level only) |
//! | `0xC000_0000` | PDE not present | PDPTE 3 not present |

use super::paging::{self, Frames, Table, KRO, KRW};
use crate::memmap::PAGE;
use crate::pattern::pattern;

/// The test window.
pub const WIN: u64 = 0x4000_0000;
/// The large-page window (32-bit PDE 257; PAE PDEs 2 and 3 of PDPTE 1).
pub const LARGE_VA: u64 = 0x4040_0000;
/// The page whose upper-level entry is edited from another mode.
pub const EDIT_VA: u64 = 0x4080_0000;
/// Above 4 GiB: PML4E 0, PDPTE 5.
pub const HIGH_VA: u64 = 0x1_4000_0000;
/// Not present at the top level of 32-bit and PAE paging.
pub const UNMAPPED_VA: u64 = 0xC000_0000;
/// Identity-mapped in every paged mode.
pub const IDENTITY_END: u64 = 64 << 20;
/// Seed of the data frames' patterns.
pub const SEED: u64 = 0x4d4f_4445_5357_414c; // "MODESWAL"
/// Byte offsets of the pattern words in a 4 KiB data frame.
pub const OFFSETS: [u64; 3] = [0, 0x7f8, 0xff8];
/// Byte offsets of the pattern words in the 4 MiB large region: both
/// 2 MiB halves, first and last word of each.
pub const LARGE_OFFSETS: [u64; 4] = [0, 0x1f_fff8, 0x20_0000, 0x3f_fff8];

/// The frames of the walk's address spaces.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Space {
    pub pd32: u64,
    pub pt32_low: u64,
    pub pt32_win: u64,
    pub pt32_e: u64,
    pub pdpt: u64,
    pub pd_low: u64,
    pub pd_win: u64,
    pub pt_win: u64,
    pub pt_e: u64,
    pub pd_alt: u64,
    pub pml4: u64,
    pub pdpt_l: u64,
    pub pd_high: u64,
    pub pt_high: u64,
    pub d0: u64,
    pub d1: u64,
    pub d2: u64,
    pub d3: u64,
    pub ret: u64,
    /// 4 MiB, 4 MiB-aligned.
    pub large: u64,
}

/// The 32-bit value at physical `addr` (4-aligned) of a pattern word.
pub const fn pat32(addr: u64) -> u64 {
    (pattern(addr & !7, SEED) >> (8 * (addr & 4))) & 0xFFFF_FFFF
}

/// The 64-bit pattern word at physical `addr` (8-aligned).
pub const fn pat64(addr: u64) -> u64 {
    pattern(addr, SEED)
}

impl Space {
    /// Allocates every frame; `None` when RAM runs out.
    pub fn alloc(f: &mut Frames) -> Option<Space> {
        let mut s = Space::default();
        for slot in [
            &mut s.pd32,
            &mut s.pt32_low,
            &mut s.pt32_win,
            &mut s.pt32_e,
            &mut s.pdpt,
            &mut s.pd_low,
            &mut s.pd_win,
            &mut s.pt_win,
            &mut s.pt_e,
            &mut s.pd_alt,
            &mut s.pml4,
            &mut s.pdpt_l,
            &mut s.pd_high,
            &mut s.pt_high,
            &mut s.d0,
            &mut s.d1,
            &mut s.d2,
            &mut s.d3,
            &mut s.ret,
        ] {
            *slot = f.alloc()?;
        }
        s.large = f.alloc_aligned(4 << 20, 4 << 20)?;
        (s.large + (4 << 20) <= IDENTITY_END).then_some(s)
    }

    /// Calls `sink(frame, table)` for every page table, one at a time.
    pub fn tables(&self, sink: &mut dyn FnMut(u64, &Table)) {
        use paging::{entry64, pde32_4m, pde32_table, pde_2m, pdpte_pae, pte32};
        let mut t = Table::default();
        // 32-bit paging (SDM Vol. 3A 4.3): PDE 0 -> 4 KiB identity PT,
        // PDEs 1..16 4 MiB identity pages, the window at PDEs 256..258.
        for i in 0..16 {
            t.set32(i, if i == 0 { pde32_table(self.pt32_low, KRW) } else { pde32_4m((i as u64) << 22, KRW) });
        }
        t.set32(256, pde32_table(self.pt32_win, KRW));
        t.set32(257, pde32_4m(self.large, KRW));
        t.set32(258, pde32_table(self.pt32_e, KRW));
        sink(self.pd32, &t);
        t = Table::default();
        for i in 0..1024 {
            t.set32(i, pte32((i as u64) * PAGE, KRW));
        }
        sink(self.pt32_low, &t);
        t = Table::default();
        for (i, (frame, flags)) in self.window() {
            t.set32(i, pte32(frame, flags));
        }
        sink(self.pt32_win, &t);
        t = Table::default();
        t.set32(0, pte32(self.d2, KRW));
        sink(self.pt32_e, &t);

        // PAE paging (SDM Vol. 3A 4.4): PDPTE 0 and 2 -> identity PD,
        // PDPTE 1 -> the window's PD, PDPTE 3 not present.
        t = Table::default();
        t.set64(0, pdpte_pae(self.pd_low));
        t.set64(1, pdpte_pae(self.pd_win));
        t.set64(2, pdpte_pae(self.pd_low));
        sink(self.pdpt, &t);
        t = Table::default();
        for i in 0..(IDENTITY_END >> 21) as usize {
            t.set64(i, pde_2m((i as u64) << 21, KRW));
        }
        sink(self.pd_low, &t);
        t = Table::default();
        t.set64(0, entry64(self.pt_win, KRW));
        t.set64(2, pde_2m(self.large, KRW));
        t.set64(3, pde_2m(self.large + (2 << 20), KRW));
        t.set64(4, entry64(self.pt_e, KRW));
        sink(self.pd_win, &t);
        t = Table::default();
        for (i, (frame, flags)) in self.window() {
            t.set64(i, entry64(frame, flags));
        }
        sink(self.pt_win, &t);
        t = Table::default();
        t.set64(0, entry64(self.d2, KRW));
        sink(self.pt_e, &t);
        // The PD a PDPTE edit switches the window to: WIN -> pt_e -> d2.
        t = Table::default();
        t.set64(0, entry64(self.pt_e, KRW));
        sink(self.pd_alt, &t);

        // 4-level paging (SDM Vol. 3A 4.5): PML4E 0 -> PDPT whose entries
        // 0 and 1 are the PAE page directories, 5 maps HIGH_VA.
        t = Table::default();
        t.set64(0, entry64(self.pdpt_l, KRW));
        sink(self.pml4, &t);
        t = Table::default();
        t.set64(0, entry64(self.pd_low, KRW));
        t.set64(1, entry64(self.pd_win, KRW));
        t.set64(5, entry64(self.pd_high, KRW));
        sink(self.pdpt_l, &t);
        t = Table::default();
        t.set64(0, entry64(self.pt_high, KRW));
        sink(self.pd_high, &t);
        t = Table::default();
        t.set64(0, entry64(self.d3, KRW));
        sink(self.pt_high, &t);
    }

    /// The window's 4 KiB pages: (PT index, (frame, flags)).
    fn window(&self) -> [(usize, (u64, u64)); 4] {
        [(0, (self.d0, KRW)), (1, (self.d1, KRO)), (3, (self.d0, KRW)), (4, (self.ret, KRW))]
    }

    /// Calls `sink(addr, word)` for every pattern word of the data frames,
    /// and the `ret` byte (0xC3) at the start of the `ret` page.
    pub fn data(&self, sink: &mut dyn FnMut(u64, u64)) {
        for f in [self.d0, self.d1, self.d2, self.d3] {
            for o in OFFSETS {
                sink(f + o, pat64(f + o));
            }
        }
        for o in LARGE_OFFSETS {
            sink(self.large + o, pat64(self.large + o));
        }
        sink(self.ret, 0xC3);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::machine::Range;
    use crate::memmap::{Exclusions, MemMap};
    use crate::modes::paging::{translate, Format, WalkFault};
    use shared::multiboot::{MmapEntry, MMAP_AVAILABLE};
    use std::collections::HashMap;

    /// The space over the fake's RAM, and its tables as memory words.
    pub(crate) fn built() -> (Space, HashMap<u64, u64>) {
        let map = MemMap::from_entries(&[MmapEntry { base: 0x10_0000, len: 0x7F0_0000, kind: MMAP_AVAILABLE }]);
        let mut x = Exclusions::new();
        x.add(Range::new(0x12_5000, 0x12_6000));
        let mut f = Frames::new(&map, &x, 0x12_5000, IDENTITY_END);
        let s = Space::alloc(&mut f).unwrap();
        let mut mem = HashMap::new();
        s.tables(&mut |frame, t| {
            for (i, w) in t.0.iter().enumerate() {
                mem.insert(frame + 8 * i as u64, *w);
            }
        });
        s.data(&mut |a, w| {
            mem.insert(a, w);
        });
        (s, mem)
    }

    #[test]
    fn frames_are_distinct_and_below_64_mib() {
        let (s, _) = built();
        let f = [s.pd32, s.pt32_low, s.pdpt, s.pd_alt, s.pml4, s.pt_high, s.d0, s.d3, s.ret];
        for (i, a) in f.iter().enumerate() {
            assert!(a % PAGE == 0 && *a >= 0x12_6000 && *a < IDENTITY_END);
            assert!(!f[..i].contains(a));
        }
        assert_eq!(s.large % (4 << 20), 0);
    }

    #[test]
    fn every_mode_maps_the_same_window() {
        let (s, mem) = built();
        let w = |a: u64| mem.get(&a).copied().unwrap_or(0);
        let pdptes = [0, 1, 2, 3].map(|i| w(s.pdpt + 8 * i));
        let formats = [(Format::Bits32, s.pd32), (Format::Pae { pdptes }, s.pdpt), (Format::Long, s.pml4)];
        for (fmt, cr3) in formats {
            let t = |va, write| translate(&w, fmt, cr3, va, write);
            let code = crate::modes::layout::BLOB_BASE;
            assert_eq!(t(code, true), Ok(code), "{fmt:?}: the engine's code is identity-mapped");
            assert_eq!(t(s.pd32 + 4 * 258, true), Ok(s.pd32 + 4 * 258), "{fmt:?}: tables identity-mapped");
            assert_eq!(t(WIN + 0x10, true), Ok(s.d0 + 0x10), "{fmt:?}");
            assert_eq!(t(WIN + 0x1000, false), Ok(s.d1));
            assert_eq!(t(WIN + 0x1000, true), Err(WalkFault::ReadOnly));
            assert_eq!(t(WIN + 0x2000, false), Err(WalkFault::NotPresent));
            assert_eq!(t(WIN + 0x3104, true), Ok(s.d0 + 0x104));
            assert_eq!(t(WIN + 0x4000, false), Ok(s.ret));
            for o in LARGE_OFFSETS {
                assert_eq!(t(LARGE_VA + o, false), Ok(s.large + o), "{fmt:?} large +{o:#x}");
            }
            assert_eq!(t(EDIT_VA, false), Ok(s.d2));
            assert_eq!(t(UNMAPPED_VA, false), Err(WalkFault::NotPresent), "{fmt:?}");
        }
        assert_eq!(translate(&w, Format::Long, s.pml4, HIGH_VA + 8, false), Ok(s.d3 + 8));
        assert_eq!(w(s.ret) & 0xFF, 0xC3);
    }

    #[test]
    fn patterns() {
        assert_eq!(pat32(0x1000) | (pat32(0x1004) << 32), pat64(0x1000));
    }
}
