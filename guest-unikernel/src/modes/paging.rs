//! The guest's own page tables: entry encoders for 32-bit paging, PAE
//! paging and 4-level paging, a 4 KiB table image, a frame allocator over
//! free RAM, a walk that lists the entries one address goes through (the
//! failure reports show it), and a reference translation on top of it
//! (straight from SDM Vol. 3A 4.3, 4.4.2 and 4.5.4) that the host tests
//! use to check what the builders produce.

use crate::machine::Range;
use crate::memmap::{self, Exclusions, MemMap, PAGE};

/// P: present (every format).
pub const P: u64 = 1 << 0;
/// R/W: writes allowed (not in PAE PDPTEs).
pub const RW: u64 = 1 << 1;
/// U/S: user-mode accesses allowed (not in PAE PDPTEs).
pub const US: u64 = 1 << 2;
/// A: accessed.
pub const A: u64 = 1 << 5;
/// D: dirty (leaf entries).
pub const D: u64 = 1 << 6;
/// PS: the entry maps a page (4 MiB in a 32-bit PDE with CR4.PSE = 1,
/// 2 MiB in a PAE/4-level PDE, 1 GiB in a 4-level PDPTE).
pub const PS: u64 = 1 << 7;

/// G: global (leaf entries; honoured with CR4.PGE = 1, SDM Vol. 3A 4.10.2.4).
pub const G: u64 = 1 << 8;

/// Supervisor read/write, present.
pub const KRW: u64 = P | RW;
/// Supervisor read-only, present.
pub const KRO: u64 = P;

/// 32-bit paging PTE mapping the 4 KiB page at `frame` (SDM Vol. 3A 4.3,
/// Table 4-6): address bits 31:12.
pub const fn pte32(frame: u64, flags: u64) -> u32 {
    ((frame & 0xFFFF_F000) | (flags & 0xFFF)) as u32
}

/// 32-bit paging PDE referencing the page table at `pt` (Table 4-5).
pub const fn pde32_table(pt: u64, flags: u64) -> u32 {
    ((pt & 0xFFFF_F000) | (flags & 0xFFF & !PS)) as u32
}

/// 32-bit paging PDE mapping a 4 MiB page at `base` (Table 4-4; needs
/// CR4.PSE = 1): bits 31:22 of the address, bits 20:13 hold physical
/// address bits 39:32 (zero here: the guest stays below 4 GiB).
pub const fn pde32_4m(base: u64, flags: u64) -> u32 {
    ((base & 0xFFC0_0000) | (flags & 0xFFF) | PS) as u32
}

/// PAE PDPTE referencing the page directory at `pd` (SDM Vol. 3A 4.4.1,
/// Table 4-8): only P and the address; bits 2:1 and 8:5 are reserved.
pub const fn pdpte_pae(pd: u64) -> u64 {
    (pd & 0x000F_FFFF_FFFF_F000) | P
}

/// The reserved bits of a PAE PDPTE below bit 12 (Table 4-8): 2:1, 8:5.
pub const PDPTE_PAE_RESERVED_LOW: u64 = 0x1E6;

/// A PAE or 4-level entry referencing a table or mapping a 4 KiB page
/// (Tables 4-9..4-11, 4-14..4-19): address bits 51:12 plus `flags`.
pub const fn entry64(addr: u64, flags: u64) -> u64 {
    (addr & 0x000F_FFFF_FFFF_F000) | (flags & 0xFFF)
}

/// A PAE or 4-level PDE mapping a 2 MiB page (Tables 4-9, 4-17).
pub const fn pde_2m(base: u64, flags: u64) -> u64 {
    (base & 0x000F_FFFF_FFE0_0000) | (flags & 0xFFF) | PS
}

/// One 4 KiB page-table image: 512 words (1024 entries in 32-bit format).
#[derive(Clone)]
pub struct Table(pub [u64; 512]);

impl core::fmt::Debug for Table {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Table({} non-zero words)", self.0.iter().filter(|w| **w != 0).count())
    }
}

impl Default for Table {
    fn default() -> Self {
        Table([0; 512])
    }
}

impl Table {
    /// Sets 32-bit entry `i` (0..1024).
    pub fn set32(&mut self, i: usize, e: u32) {
        let w = &mut self.0[i / 2];
        let shift = 32 * (i % 2);
        *w = (*w & !(0xFFFF_FFFF << shift)) | (u64::from(e) << shift);
    }

    /// 32-bit entry `i`.
    pub fn get32(&self, i: usize) -> u32 {
        (self.0[i / 2] >> (32 * (i % 2))) as u32
    }

    /// Sets 64-bit entry `i` (0..512).
    pub fn set64(&mut self, i: usize, e: u64) {
        self.0[i] = e;
    }
}

/// Most free ranges the allocator keeps.
pub const MAX_RANGES: usize = 16;

/// A bump allocator over free RAM: available in the memory map, inside
/// `[lo, hi)`, minus the Multiboot structures (the ranges
/// `memmap::plan_ram_test` gives).
#[derive(Clone, Copy, Debug)]
pub struct Frames {
    ranges: [Range; MAX_RANGES],
    n: usize,
    cur: usize,
    next: u64,
}

impl Frames {
    /// The free ranges of `map` inside `[lo, hi)`.
    pub fn new(map: &MemMap, excl: &Exclusions, lo: u64, hi: u64) -> Self {
        let mut f = Frames { ranges: [Range::default(); MAX_RANGES], n: 0, cur: 0, next: 0 };
        memmap::plan_ram_test(map, lo, hi, excl, |r| {
            if f.n < MAX_RANGES {
                f.ranges[f.n] = r;
                f.n += 1;
            }
        });
        f.next = f.ranges[0].start;
        f
    }

    /// `size` bytes aligned to `align` (powers of two, at least a page),
    /// inside one free range.
    pub fn alloc_aligned(&mut self, size: u64, align: u64) -> Option<u64> {
        while self.cur < self.n {
            let r = self.ranges[self.cur];
            let start = self.next.max(r.start).checked_add(align - 1)? & !(align - 1);
            if start.checked_add(size)? <= r.end {
                self.next = start + size;
                return Some(start);
            }
            self.cur += 1;
            self.next = self.ranges.get(self.cur).map_or(0, |r| r.start);
        }
        None
    }

    /// One 4 KiB frame.
    pub fn alloc(&mut self) -> Option<u64> {
        self.alloc_aligned(PAGE, PAGE)
    }
}

/// How a translation failed: the #PF error code's P bit says which.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalkFault {
    /// An entry on the way was not present (error code P = 0).
    NotPresent,
    /// A supervisor write hit a read-only mapping with CR0.WP = 1 (P = 1).
    ReadOnly,
}

/// The paging structures a reference translation walks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// 32-bit paging (SDM Vol. 3A 4.3). `pse` is CR4.PSE: with 1, a PDE
    /// with PS = 1 maps a 4 MiB page (Table 4-4); with 0, PS is ignored and
    /// every present PDE references a page table (Table 4-5).
    Bits32 {
        /// CR4.PSE.
        pse: bool,
    },
    /// PAE paging; `pdptes` are the PDPTE registers as loaded at MOV CR3
    /// (SDM Vol. 3A 4.4.1), not the PDPT in memory.
    Pae {
        /// The four PDPTE registers.
        pdptes: [u64; 4],
    },
    /// 4-level paging (SDM Vol. 3A 4.5.4).
    Long,
}

/// One paging-structure entry a [`walk`] read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalkEntry {
    /// Level of its table: 4 PML4, 3 PDPT, 2 PD, 1 PT.
    pub level: u8,
    /// Its index in the table.
    pub index: u16,
    /// Its physical address; `None` for a PAE PDPTE, which the walk takes
    /// from the PDPTE registers (SDM Vol. 3A 4.4.1).
    pub at: Option<u64>,
    /// The entry (a 32-bit entry zero-extended).
    pub value: u64,
}

/// How a [`walk`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalkEnd {
    /// The last entry maps a page at `base` of `size` bytes; `pa` is the
    /// physical address of the walked address.
    Page {
        /// The page's physical base.
        base: u64,
        /// 4 KiB, 2 MiB, 4 MiB or 1 GiB.
        size: u64,
        /// The physical address.
        pa: u64,
    },
    /// The last entry read is not present.
    NotPresent,
    /// The entry at this physical address could not be read.
    Unreadable(u64),
}

/// The entries one linear address is translated through (at most four)
/// and how the walk ended. Permissions are [`translate`]'s business.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Walk {
    entries: [Option<WalkEntry>; 4],
    /// How it ended.
    pub end: WalkEnd,
}

impl Walk {
    /// The entries read, from CR3 down.
    pub fn entries(&self) -> impl Iterator<Item = &WalkEntry> {
        self.entries.iter().flatten()
    }

    fn push(&mut self, e: WalkEntry) -> bool {
        if let Some(slot) = self.entries.iter_mut().find(|x| x.is_none()) {
            *slot = Some(e);
        }
        e.value & P != 0
    }
}

/// The address bits of a PAE or 4-level entry (51:12).
const ADDR: u64 = 0x000F_FFFF_FFFF_F000;

/// Walks `va` through the paging structures of `format` from `cr3` (SDM
/// Vol. 3A 4.3 32-bit paging, 4.4.2 PAE, 4.5.4 4-level with 1 GiB, 2 MiB
/// and 4 KiB pages), reading 64-bit words of physical memory through
/// `word` (`None`: that address cannot be read); stops at the first entry
/// that is not present or maps a page.
pub fn walk(word: &dyn Fn(u64) -> Option<u64>, format: Format, cr3: u64, va: u64) -> Walk {
    let mut w = Walk { entries: [None; 4], end: WalkEnd::NotPresent };
    let read32 = |a: u64| word(a & !7).map(|x| u64::from((x >> (8 * (a & 4))) as u32));
    let page = |base: u64, size: u64| WalkEnd::Page { base, size, pa: base | (va & (size - 1)) };
    // Reads entry `index` of the table at `table`; `None` when it is unreadable.
    let step = |w: &mut Walk, level: u8, table: u64, index: u64, four: bool| -> Option<u64> {
        let at = table + if four { 4 } else { 8 } * index;
        let Some(value) = (if four { read32(at) } else { word(at) }) else {
            w.end = WalkEnd::Unreadable(at);
            return None;
        };
        w.push(WalkEntry { level, index: index as u16, at: Some(at), value }).then_some(value)
    };
    // The PD and PT levels of PAE and 4-level paging, from the PD at `pd`.
    let lower = |w: &mut Walk, pd: u64| -> Option<WalkEnd> {
        let pde = step(w, 2, pd, (va >> 21) & 0x1FF, false)?;
        if pde & PS != 0 {
            return Some(page(pde & 0x000F_FFFF_FFE0_0000, 2 << 20));
        }
        let pte = step(w, 1, pde & ADDR, (va >> 12) & 0x1FF, false)?;
        Some(page(pte & ADDR, 4 << 10))
    };
    let end = match format {
        Format::Bits32 { pse } => {
            let Some(pde) = step(&mut w, 2, cr3 & 0xFFFF_F000, (va >> 22) & 0x3FF, true) else { return w };
            if pse && pde & PS != 0 {
                page(pde & 0xFFC0_0000, 4 << 20)
            } else {
                let Some(pte) = step(&mut w, 1, pde & 0xFFFF_F000, (va >> 12) & 0x3FF, true) else { return w };
                page(pte & 0xFFFF_F000, 4 << 10)
            }
        }
        Format::Pae { pdptes } => {
            let i = (va >> 30) & 3;
            let pdpte = pdptes[i as usize];
            if !w.push(WalkEntry { level: 3, index: i as u16, at: None, value: pdpte }) {
                return w;
            }
            let Some(end) = lower(&mut w, pdpte & ADDR) else { return w };
            end
        }
        Format::Long => {
            let Some(pml4e) = step(&mut w, 4, cr3 & ADDR, (va >> 39) & 0x1FF, false) else { return w };
            let Some(pdpte) = step(&mut w, 3, pml4e & ADDR, (va >> 30) & 0x1FF, false) else { return w };
            if pdpte & PS != 0 {
                page(pdpte & 0x000F_FFFF_C000_0000, 1 << 30)
            } else {
                let Some(end) = lower(&mut w, pdpte & ADDR) else { return w };
                end
            }
        }
    };
    w.end = end;
    w
}

/// Translates `va` for a supervisor access (write when `write`) with
/// CR0.WP = 1, reading 64-bit words of physical memory through `word`.
/// Returns the physical address or the kind of #PF.
pub fn translate(word: &impl Fn(u64) -> u64, format: Format, cr3: u64, va: u64, write: bool) -> Result<u64, WalkFault> {
    translate_visiting(word, format, cr3, va, write, &mut |_| {})
}

/// [`translate`], calling `visit` with the physical address of every
/// present entry it uses (where the processor sets the accessed flag,
/// SDM Vol. 3A 4.8; PAE PDPTEs have none).
pub fn translate_visiting(
    word: &impl Fn(u64) -> u64,
    format: Format,
    cr3: u64,
    va: u64,
    write: bool,
    visit: &mut dyn FnMut(u64),
) -> Result<u64, WalkFault> {
    let w = walk(&|a| Some(word(a)), format, cr3, va);
    let mut writable = true;
    for e in w.entries() {
        if e.value & P == 0 {
            return Err(WalkFault::NotPresent);
        }
        // A PAE PDPTE has no R/W flag and no accessed flag.
        if let Some(at) = e.at {
            visit(at);
            writable &= e.value & RW != 0;
        }
    }
    match w.end {
        WalkEnd::Page { pa, .. } if !write || writable => Ok(pa),
        WalkEnd::Page { .. } => Err(WalkFault::ReadOnly),
        WalkEnd::NotPresent | WalkEnd::Unreadable(_) => Err(WalkFault::NotPresent),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::multiboot::{MmapEntry, MMAP_AVAILABLE as AV};
    use std::collections::HashMap;

    #[test]
    fn entry_encodings() {
        assert_eq!(pte32(0x12_3000, KRW), 0x0012_3003);
        assert_eq!(pde32_table(0x20_1000, KRW | PS), 0x0020_1003, "PS never set in a table PDE");
        assert_eq!(pde32_4m(0x0080_0000, KRW), 0x0080_0083);
        assert_eq!(pde32_4m(0x0080_1000, KRO), 0x0080_0081, "4 MiB base bits 21:12 dropped");
        assert_eq!(pdpte_pae(0x20_3000), 0x20_3001);
        assert_eq!(pdpte_pae(0x20_3000) & PDPTE_PAE_RESERVED_LOW, 0);
        assert_eq!(entry64(0x1_2345_6000, KRW | US), 0x1_2345_6007);
        assert_eq!(pde_2m(0x0060_0000, KRO), 0x0060_0081);
    }

    #[test]
    fn table_packs_32_bit_entries() {
        let mut t = Table::default();
        t.set32(0, 0x1003);
        t.set32(1, 0x2003);
        t.set32(1023, 0xFFC0_0083);
        assert_eq!(t.0[0], 0x0000_2003_0000_1003);
        assert_eq!(t.get32(1023), 0xFFC0_0083);
        t.set32(0, 0);
        assert_eq!(t.0[0], 0x0000_2003_0000_0000);
    }

    #[test]
    fn frames_skip_exclusions_and_align() {
        let map = MemMap::from_entries(&[MmapEntry { base: 0x10_0000, len: 0x3F0_0000, kind: AV }]);
        let mut x = Exclusions::new();
        x.add(Range::new(0x12_5000, 0x12_6000));
        let mut f = Frames::new(&map, &x, 0x12_5000, 0x400_0000);
        assert_eq!(f.alloc(), Some(0x12_6000));
        assert_eq!(f.alloc(), Some(0x12_7000));
        assert_eq!(f.alloc_aligned(0x40_0000, 0x40_0000), Some(0x40_0000));
        assert_eq!(f.alloc(), Some(0x80_0000));
        assert_eq!(f.alloc_aligned(0x400_0000, 0x40_0000), None, "nothing that large is left");
    }

    /// Physical memory of 64-bit words for the reference walker.
    fn mem(tables: &[(u64, &Table)]) -> HashMap<u64, u64> {
        let mut m = HashMap::new();
        for (base, t) in tables {
            for (i, w) in t.0.iter().enumerate() {
                m.insert(base + 8 * i as u64, *w);
            }
        }
        m
    }

    #[test]
    fn walks_list_every_entry_and_how_they_end() {
        // 4-level: PML4[1] -> PDPT; PDPT[0] -> PD; PD[2] a 2 MiB page; PD[3]
        // -> PT whose PTE 4 is absent; PDPT[1] a 1 GiB page.
        let (pml4, pdpt, pd, pt) = (0x40_0000u64, 0x40_1000u64, 0x40_2000u64, 0x40_3000u64);
        let (mut t4, mut t3, mut t2) = (Table::default(), Table::default(), Table::default());
        t4.set64(1, entry64(pdpt, KRW));
        t3.set64(0, entry64(pd, KRW));
        t3.set64(1, 0x8000_0000 | PS | KRW);
        t2.set64(2, pde_2m(0x60_0000, KRO));
        t2.set64(3, entry64(pt, KRW));
        let m = mem(&[(pml4, &t4), (pdpt, &t3), (pd, &t2), (pt, &Table::default())]);
        let w = |a: u64| m.get(&a).copied();
        let va = (1u64 << 39) | (2 << 21) | 0x123;
        let r = walk(&w, Format::Long, pml4, va);
        let got: Vec<_> = r.entries().map(|e| (e.level, e.index, e.at)).collect();
        assert_eq!(got, [(4, 1, Some(pml4 + 8)), (3, 0, Some(pdpt)), (2, 2, Some(pd + 16))]);
        assert_eq!(r.end, WalkEnd::Page { base: 0x60_0000, size: 2 << 20, pa: 0x60_0123 });
        let r = walk(&w, Format::Long, pml4, (1u64 << 39) | (3 << 21) | (4 << 12));
        assert_eq!((r.entries().count(), r.end), (4, WalkEnd::NotPresent));
        assert_eq!(r.entries().last().unwrap().at, Some(pt + 32));
        let r = walk(&w, Format::Long, pml4, (1u64 << 39) | (1 << 30) | 0x3456_7890);
        assert_eq!(r.end, WalkEnd::Page { base: 0x8000_0000, size: 1 << 30, pa: 0xB456_7890 });
        assert_eq!(translate(&|a| w(a).unwrap_or(0), Format::Long, pml4, (1u64 << 39) | (1 << 30), true), Ok(0x8000_0000));
        // An unreadable table ends the walk there.
        let r = walk(&|a| (a < pd).then(|| w(a)).flatten(), Format::Long, pml4, va);
        assert_eq!((r.entries().count(), r.end), (2, WalkEnd::Unreadable(pd + 16)));
        // PAE: the PDPTE comes from the registers (no address).
        let r = walk(&w, Format::Pae { pdptes: [0, pdpte_pae(pd), 0, 0] }, 0, (1 << 30) | (2 << 21));
        assert_eq!(r.entries().next().unwrap().at, None);
        assert_eq!(r.entries().count(), 2);
        let r = walk(&w, Format::Pae { pdptes: [0; 4] }, 0, 0x10);
        assert_eq!((r.entries().count(), r.end), (1, WalkEnd::NotPresent));
    }

    #[test]
    fn reference_walks() {
        // 32-bit: PDE 256 -> PT (PTE 1 read-only), PDE 257 a 4 MiB page.
        let (pd, pt) = (0x10_0000u64, 0x10_1000u64);
        let mut tpd = Table::default();
        let mut tpt = Table::default();
        tpd.set32(256, pde32_table(pt, KRW));
        tpd.set32(257, pde32_4m(0x80_0000, KRW));
        tpt.set32(0, pte32(0x20_0000, KRW));
        tpt.set32(1, pte32(0x20_1000, KRO));
        let m = mem(&[(pd, &tpd), (pt, &tpt)]);
        let w = |a: u64| m.get(&a).copied().unwrap_or(0);
        assert_eq!(translate(&w, Format::Bits32 { pse: true }, pd, 0x4000_0123, true), Ok(0x20_0123));
        assert_eq!(translate(&w, Format::Bits32 { pse: true }, pd, 0x4000_1000, false), Ok(0x20_1000));
        assert_eq!(translate(&w, Format::Bits32 { pse: true }, pd, 0x4000_1000, true), Err(WalkFault::ReadOnly));
        assert_eq!(translate(&w, Format::Bits32 { pse: true }, pd, 0x4000_2000, false), Err(WalkFault::NotPresent));
        assert_eq!(translate(&w, Format::Bits32 { pse: true }, pd, 0x407F_FFFC, false), Ok(0xBF_FFFC));
        // CR4.PSE = 0: PS is ignored, PDE 257 references a PT at 0x80_0000
        // (Table 4-5), whose words (unknown here, 0) are not present.
        let no_pse = Format::Bits32 { pse: false };
        assert_eq!(translate(&w, no_pse, pd, 0x4000_0123, true), Ok(0x20_0123));
        assert_eq!(translate(&w, no_pse, pd, 0x407F_FFFC, false), Err(WalkFault::NotPresent));
        let mut tpt2 = Table::default();
        tpt2.set32(0x3FF, pte32(0x30_0000, KRW));
        let m = mem(&[(pd, &tpd), (pt, &tpt), (0x80_0000, &tpt2)]);
        let w = |a: u64| m.get(&a).copied().unwrap_or(0);
        assert_eq!(translate(&w, no_pse, pd, 0x407F_FFFC, false), Ok(0x30_0FFC));
        assert_eq!(translate(&w, Format::Bits32 { pse: true }, pd, 0x407F_FFFC, false), Ok(0xBF_FFFC));
        // PAE: the PDPTE registers decide, whatever the PDPT in memory says.
        let (pdp, pde) = (0x30_0000u64, 0x30_1000u64);
        let mut tpd = Table::default();
        tpd.set64(1, pde_2m(0x60_0000, KRW));
        let m = mem(&[(pde, &tpd)]);
        let w = |a: u64| m.get(&a).copied().unwrap_or(0);
        let pdptes = [0, pdpte_pae(pde), 0, 0];
        assert_eq!(translate(&w, Format::Pae { pdptes }, pdp, 0x4020_0010, false), Ok(0x60_0010));
        assert_eq!(translate(&w, Format::Pae { pdptes }, pdp, 0x0020_0010, false), Err(WalkFault::NotPresent));
        // 4-level: PML4[0] -> PDPT; PDPT[5] -> the same PD.
        let (pml4, pdpt) = (0x40_0000u64, 0x40_1000u64);
        let mut t4 = Table::default();
        let mut t3 = Table::default();
        t4.set64(0, entry64(pdpt, KRW));
        t3.set64(5, entry64(pde, KRW));
        let m = mem(&[(pde, &tpd), (pml4, &t4), (pdpt, &t3)]);
        let w = |a: u64| m.get(&a).copied().unwrap_or(0);
        assert_eq!(translate(&w, Format::Long, pml4, 0x1_4020_0008, true), Ok(0x60_0008));
        assert_eq!(translate(&w, Format::Long, pml4, 0x8000_0000_0000, false), Err(WalkFault::NotPresent));
    }
}
