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
//!
//! The named scenarios (`walk::named`) have their own frames besides: a
//! frame that is a page directory in all three modes (`pd_same`), a 32-bit
//! PD `pd_q` with 4 MiB pages at PDEs 255/256/511/512 and a PT of 1024
//! distinct frames, a second 4 MiB region `large2` holding a 32-bit and a
//! PAE page table, global-page PTs, a frame with two PDPTs that are not
//! page aligned, and a 32-bit PD at the first 2 MiB-aligned free frame.
//! [`Space::initial32`] says what the space puts in every word the
//! programs read, for the model that gives their expectations.

use super::layout;
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
    // The named scenarios' frames (see `walk::named`).
    pub pd_same: u64,
    pub pdpt_same: u64,
    pub pml4_same: u64,
    pub pdpt_lsame: u64,
    pub pt_same: u64,
    pub pd_q: u64,
    pub pt_q: u64,
    pub pt_g: u64,
    pub pt_gp: u64,
    pub pdpt_x: u64,
    pub pt_lf: u64,
    /// The 32-bit PD of `modes/low-frames`: the first 2 MiB-aligned free
    /// frame (physical 2 MiB wherever the image ends below it).
    pub pd_2m: u64,
    /// A second 4 MiB region, 4 MiB-aligned; [`Space::pt_l`] and
    /// [`Space::pt_lp`] are page tables inside it.
    pub large2: u64,
    /// `pg32/no-pse`: a page table at a 4 MiB-aligned frame (so that the
    /// PDE referencing it, with PS = 1, is also a valid 4 MiB PDE: bits
    /// 21:12 zero, SDM Vol. 3A Table 4-4).
    pub pt_ns: u64,
    /// `modes/same-gfn-pt32-pae`: one frame, a 32-bit PT and a PAE PT.
    pub pt_sh: u64,
    /// The 32-bit PD of both (CR4.PSE = 0 and 1): PDE 0 -> the 4 KiB
    /// identity PT, [`NS_VA`] -> `pt_ns` with PS = 1, [`SH_VA32`] -> `pt_sh`.
    pub pd_ns: u64,
    /// The PAE PDPT of `same-gfn-pt32-pae`: PDPTE 0 the identity PD,
    /// PDPTE 1 `pd_nsp`, whose PDE 3 is `pt_sh` ([`SH_VA_PAE`]).
    pub pdpt_ns: u64,
    #[allow(missing_docs)]
    pub pd_nsp: u64,
    /// `modes/same-gfn-pd32-pae`: one frame, a 32-bit PD (CR4.PSE = 0) and
    /// a PAE PD (PDPTE 1 of the PDPT at `pdpt_ns` + [`PDPT_SH_OFFSET`]).
    pub pd_sh: u64,
    /// A PT valid in both formats (odd 32-bit PTEs 0) that `pd_sh` maps.
    pub pt_sh2: u64,
}

/// The named scenarios' virtual addresses. 32-bit paging through `pd_q`:
/// PDEs 255, 256, 511 and 512 ([`Q_PDES`]) map `large` (4 MiB pages),
/// PDE 259 maps `large2`, PDE 260 the PT inside `large2`, PDE 261 the PT of
/// 1024 distinct frames, PDE 262 the global-page PT.
pub const Q_PDES: [u64; 4] = [255, 256, 511, 512];
/// `large2` as one 4 MiB page (32-bit, `pd_q` PDE 259).
pub const L2_VA32: u64 = 259 << 22;
/// Through the 32-bit PT inside `large2` (`pd_q` PDE 260).
pub const PTL_VA32: u64 = 260 << 22;
/// Through the PT of 1024 distinct frames (`pd_q` PDE 261).
pub const PTQ_VA: u64 = 261 << 22;
/// Through the global-page PT (`pd_q` PDE 262; PAE `pd_win` PDE 8).
pub const G_VA32: u64 = 262 << 22;
/// PAE (`pd_win`, PDPTE 1): PDE 5 and 6 the two 2 MiB halves of `large2`,
/// PDE 7 the PAE PT inside `large2`, PDE 8 the global-page PT.
pub const L2_VA_PAE: u64 = WIN + (5 << 21);
#[allow(missing_docs)]
pub const PTL_VA_PAE: u64 = WIN + (7 << 21);
#[allow(missing_docs)]
pub const G_VA_PAE: u64 = WIN + (8 << 21);
/// `same-gfn`: 32-bit PDE 8 of `pd_same` is PAE/long PDE 4 of the same frame.
pub const SAME_VA32: u64 = 8 << 22;
#[allow(missing_docs)]
pub const SAME_VA64: u64 = 4 << 21;
/// Where long mode reaches `pd_same` (PDPTE 1 of `pdpt_lsame` is the
/// identity PD, so linear 1 GiB + x is physical x).
pub const SAME_ALIAS: u64 = 1 << 30;
/// `low-frames`: `pd_2m` PDE 256 -> `pt_lf`; PDE 257 is set with paging off.
pub const LF_VA: u64 = 256 << 22;
/// `pg32/no-pse`: `pd_ns` PDE 300 = `pt_ns` | PS | P | R/W.
pub const NS_VA: u64 = 300 << 22;
/// `same-gfn-pt32-pae`: `pd_ns` PDE 301 -> `pt_sh` (32-bit).
pub const SH_VA32: u64 = 301 << 22;
/// `same-gfn-pt32-pae`: PAE PDPTE 1, PDE 3 -> `pt_sh`.
pub const SH_VA_PAE: u64 = (1 << 30) + (3 << 21);
/// `pt_ns` PTE i (i < 4) maps frame `NS_FRAMES[i]` of `large2`; PTE 4 is
/// not present, PTE 5 maps d1 read-only.
pub const NS_FRAMES: [u64; 4] = [20, 23, 26, 29];
/// `pt_sh` 32-bit PTE 2i (i < 4) maps frame `SH_FRAMES[i]` of `large2`;
/// every odd 32-bit PTE is 0, so PAE PTE i (low half 32-bit PTE 2i, high
/// half 32-bit PTE 2i + 1 = 0) maps the same frame as 32-bit PTE 2i.
pub const SH_FRAMES: [u64; 4] = [40, 43, 46, 49];

/// The PDPT of `same-gfn-pd32-pae` inside the `pdpt_ns` frame: PDPTE 0
/// the identity PD, PDPTE 1 `pd_sh`.
pub const PDPT_SH_OFFSET: u64 = 0x20;
/// `pt_sh2` 32-bit PTE 2i maps frame `SH2_FRAMES[i]` of `large2`; odd
/// 32-bit PTEs are 0.
pub const SH2_FRAMES: [u64; 3] = [60, 63, 66];

/// Byte offsets of the two pattern words in every 4 KiB frame of the
/// large regions (besides [`LARGE_OFFSETS`]).
pub const FRAME_OFFSETS: [u64; 2] = [0x10, 0x7f0];
/// Offsets in the PDPT frame of `pae/pdpte-cr3-align`: two PDPTs that are
/// 32-byte aligned but not page aligned.
pub const PDPT_X_OFFSETS: [u64; 2] = [0x7e0, 0x20];

/// Frame `i` of `large` that entry `i` of the quadrant PT maps: a
/// permutation (7 is odd), so 1024 distinct frames, none at its own index.
pub const fn q_frame(i: u64) -> u64 {
    (i * 7 + 3) & 1023
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
            &mut s.pd_same,
            &mut s.pdpt_same,
            &mut s.pml4_same,
            &mut s.pdpt_lsame,
            &mut s.pt_same,
            &mut s.pd_q,
            &mut s.pt_q,
            &mut s.pt_g,
            &mut s.pt_gp,
            &mut s.pdpt_x,
            &mut s.pt_lf,
        ] {
            *slot = f.alloc()?;
        }
        s.pd_2m = f.alloc_aligned(PAGE, 2 << 20)?;
        s.large = f.alloc_aligned(4 << 20, 4 << 20)?;
        s.large2 = f.alloc_aligned(4 << 20, 4 << 20)?;
        s.pt_ns = f.alloc_aligned(PAGE, 4 << 20)?;
        for slot in [&mut s.pt_sh, &mut s.pd_ns, &mut s.pdpt_ns, &mut s.pd_nsp, &mut s.pd_sh, &mut s.pt_sh2] {
            *slot = f.alloc()?;
        }
        (s.large2 + (4 << 20) <= IDENTITY_END && s.pt_sh2 + PAGE <= IDENTITY_END).then_some(s)
    }

    /// The 32-bit PT inside `large2` (at 3 MiB: the upper 2 MiB half).
    pub const fn pt_l(&self) -> u64 {
        self.large2 + 0x30_0000
    }

    /// The PAE PT inside `large2` (at 3.5 MiB).
    pub const fn pt_lp(&self) -> u64 {
        self.large2 + 0x38_0000
    }

    /// Every page-table frame.
    fn table_frames(&self) -> [u64; 35] {
        [
            self.pd32, self.pt32_low, self.pt32_win, self.pt32_e, self.pdpt, self.pd_low, self.pd_win, self.pt_win,
            self.pt_e, self.pd_alt, self.pml4, self.pdpt_l, self.pd_high, self.pt_high, self.pd_same, self.pdpt_same,
            self.pml4_same, self.pdpt_lsame, self.pt_same, self.pd_q, self.pt_q, self.pt_g, self.pt_gp, self.pdpt_x,
            self.pt_lf, self.pd_2m, self.pt_l(), self.pt_lp(), self.pt_ns, self.pt_sh, self.pd_ns, self.pdpt_ns,
            self.pd_nsp, self.pd_sh, self.pt_sh2,
        ]
    }

    /// Calls `sink(frame, table)` for every page table, one at a time.
    pub fn tables(&self, sink: &mut dyn FnMut(u64, &Table)) {
        let frames = self.table_frames();
        for (i, f) in frames.iter().enumerate() {
            if !frames[..i].contains(f) {
                if let Some(t) = self.table(*f) {
                    sink(*f, &t);
                }
            }
        }
    }

    /// The PDPT at [`layout::REAL_PDPT`] (written over the end of the
    /// real-mode data): the same PDPTEs as `pdpt`.
    pub fn real_pdpt(&self) -> [u64; 4] {
        use paging::pdpte_pae;
        [pdpte_pae(self.pd_low), pdpte_pae(self.pd_win), pdpte_pae(self.pd_low), 0]
    }

    /// The 32-bit word the space puts at physical `addr` (4-aligned) before
    /// the program runs: a table entry, a pattern word, the real-mode data;
    /// `None` where the space puts nothing.
    pub fn initial32(&self, addr: u64) -> Option<u32> {
        let frame = addr & !(PAGE - 1);
        if self.table_frames().contains(&frame) {
            let t = self.table(frame)?;
            return Some(t.get32(((addr & (PAGE - 1)) / 4) as usize));
        }
        if (layout::REAL_PDPT..layout::REAL_PDPT + 32).contains(&addr) {
            let e = self.real_pdpt()[((addr - layout::REAL_PDPT) / 8) as usize];
            return Some((e >> (8 * (addr & 4))) as u32);
        }
        let r = layout::REAL_DATA..layout::REAL_DATA + layout::REAL_DATA_LEN;
        if r.contains(&addr) {
            return Some(super::walk::real_word(addr));
        }
        self.is_pattern(addr & !7).then(|| pat32(addr) as u32)
    }

    /// True when [`Space::data`] puts a pattern word at `addr` (8-aligned).
    pub fn is_pattern(&self, addr: u64) -> bool {
        let (frame, off) = (addr & !(PAGE - 1), addr & (PAGE - 1));
        if [self.d0, self.d1, self.d2, self.d3].contains(&frame) {
            return OFFSETS.contains(&off);
        }
        if (self.large..self.large + (4 << 20)).contains(&addr) && LARGE_OFFSETS.contains(&(addr - self.large)) {
            return true;
        }
        let in_large = |b: u64| (b..b + (4 << 20)).contains(&addr);
        (in_large(self.large) || in_large(self.large2))
            && frame != self.pt_l()
            && frame != self.pt_lp()
            && FRAME_OFFSETS.contains(&off)
    }

    /// The page table the space puts in `frame`, or `None` when `frame`
    /// holds no table.
    pub fn table(&self, frame: u64) -> Option<Table> {
        use paging::{entry64, pde32_4m, pde32_table, pde_2m, pdpte_pae, pte32, G};
        let mut t = Table::default();
        // 32-bit identity: PDE 0 -> 4 KiB identity PT, PDEs 1..16 4 MiB
        // identity pages (every 32-bit PD of the space has them).
        let identity32 = |t: &mut Table| {
            for i in 0..16 {
                t.set32(i, if i == 0 { pde32_table(self.pt32_low, KRW) } else { pde32_4m((i as u64) << 22, KRW) });
            }
        };
        let f = frame;
        if f == self.pd32 {
            // 32-bit paging (SDM Vol. 3A 4.3): the window at PDEs 256..258.
            identity32(&mut t);
            t.set32(256, pde32_table(self.pt32_win, KRW));
            t.set32(257, pde32_4m(self.large, KRW));
            t.set32(258, pde32_table(self.pt32_e, KRW));
        } else if f == self.pt32_low {
            for i in 0..1024 {
                t.set32(i, pte32((i as u64) * PAGE, KRW));
            }
        } else if f == self.pt32_win {
            for (i, (frame, flags)) in self.window() {
                t.set32(i, pte32(frame, flags));
            }
        } else if f == self.pt32_e {
            t.set32(0, pte32(self.d2, KRW));
        } else if f == self.pdpt {
            // PAE paging (SDM Vol. 3A 4.4): PDPTE 0 and 2 -> identity PD,
            // PDPTE 1 -> the window's PD, PDPTE 3 not present.
            t.set64(0, pdpte_pae(self.pd_low));
            t.set64(1, pdpte_pae(self.pd_win));
            t.set64(2, pdpte_pae(self.pd_low));
        } else if f == self.pd_low {
            for i in 0..(IDENTITY_END >> 21) as usize {
                t.set64(i, pde_2m((i as u64) << 21, KRW));
            }
        } else if f == self.pd_win {
            t.set64(0, entry64(self.pt_win, KRW));
            t.set64(2, pde_2m(self.large, KRW));
            t.set64(3, pde_2m(self.large + (2 << 20), KRW));
            t.set64(4, entry64(self.pt_e, KRW));
            // The named scenarios: both halves of large2 as 2 MiB pages,
            // the PAE PT inside large2, the global-page PT.
            t.set64(5, pde_2m(self.large2, KRW));
            t.set64(6, pde_2m(self.large2 + (2 << 20), KRW));
            t.set64(7, entry64(self.pt_lp(), KRW));
            t.set64(8, entry64(self.pt_gp, KRW));
        } else if f == self.pt_win {
            for (i, (frame, flags)) in self.window() {
                t.set64(i, entry64(frame, flags));
            }
        } else if f == self.pt_e {
            t.set64(0, entry64(self.d2, KRW));
        } else if f == self.pd_alt {
            // The PD a PDPTE edit switches the window to: WIN -> pt_e -> d2.
            t.set64(0, entry64(self.pt_e, KRW));
        } else if f == self.pml4 {
            // 4-level paging (SDM Vol. 3A 4.5): PML4E 0 -> PDPT whose entries
            // 0 and 1 are the PAE page directories, 5 maps HIGH_VA.
            t.set64(0, entry64(self.pdpt_l, KRW));
        } else if f == self.pdpt_l {
            t.set64(0, entry64(self.pd_low, KRW));
            t.set64(1, entry64(self.pd_win, KRW));
            t.set64(5, entry64(self.pd_high, KRW));
        } else if f == self.pd_high {
            t.set64(0, entry64(self.pt_high, KRW));
        } else if f == self.pt_high {
            t.set64(0, entry64(self.d3, KRW));
        } else if f == self.pd_same {
            // One frame, a page directory in all three modes: 32-bit PDE
            // 2i and 2i+1 are the low and high half of PAE/4-level PDE i,
            // so only even 32-bit PDEs are used. PDE 0 maps [0, 4 MiB) (32-bit)
            // and [0, 2 MiB) (PAE, 4-level) at 0; 32-bit PDE 8 is PDE 4.
            t.set32(0, pde32_4m(0, KRW));
            t.set32((SAME_VA32 >> 22) as usize, pde32_table(self.pt32_e, KRW));
        } else if f == self.pdpt_same {
            t.set64(0, pdpte_pae(self.pd_same));
        } else if f == self.pml4_same {
            t.set64(0, entry64(self.pdpt_lsame, KRW));
        } else if f == self.pdpt_lsame {
            t.set64(0, entry64(self.pd_same, KRW));
            t.set64((SAME_ALIAS >> 30) as usize, entry64(self.pd_low, KRW));
        } else if f == self.pt_same {
            // PTE 0 in both formats (32-bit PTE 1 = PAE PTE 0's high half = 0).
            t.set32(0, pte32(self.d3, KRW));
        } else if f == self.pd_q {
            identity32(&mut t);
            for i in Q_PDES {
                t.set32(i as usize, pde32_4m(self.large, KRW));
            }
            t.set32((L2_VA32 >> 22) as usize, pde32_4m(self.large2, KRW));
            t.set32((PTL_VA32 >> 22) as usize, pde32_table(self.pt_l(), KRW));
            t.set32((PTQ_VA >> 22) as usize, pde32_table(self.pt_q, KRW));
            t.set32((G_VA32 >> 22) as usize, pde32_table(self.pt_g, KRW));
        } else if f == self.pt_q {
            for i in 0..1024 {
                t.set32(i, pte32(self.large + PAGE * q_frame(i as u64), KRW));
            }
        } else if f == self.pt_g {
            t.set32(0, pte32(self.d0, KRW | G));
            t.set32(1, pte32(self.d0, KRW));
        } else if f == self.pt_gp {
            t.set64(0, entry64(self.d0, KRW | G));
            t.set64(1, entry64(self.d0, KRW));
        } else if f == self.pdpt_x {
            for (o, pd) in PDPT_X_OFFSETS.into_iter().zip([self.pd_alt, self.pd_win]) {
                let i = (o / 8) as usize;
                t.set64(i, pdpte_pae(self.pd_low));
                t.set64(i + 1, pdpte_pae(pd));
                t.set64(i + 2, pdpte_pae(self.pd_low));
            }
        } else if f == self.pt_lf {
            t.set32(0, pte32(self.d0, KRW));
        } else if f == self.pd_2m {
            identity32(&mut t);
            t.set32((LF_VA >> 22) as usize, pde32_table(self.pt_lf, KRW));
        } else if f == self.pt_l() {
            t.set32(0, pte32(self.d0, KRW));
        } else if f == self.pt_lp() {
            t.set64(0, entry64(self.d0, KRW));
        } else if f == self.pd_ns {
            // Only PDE 0 identity-maps (with 4 KiB pages: with CR4.PSE = 0
            // the identity 4 MiB PDEs of the other PDs would be PT pointers).
            t.set32(0, pde32_table(self.pt32_low, KRW));
            t.set32((NS_VA >> 22) as usize, pde32_4m(self.pt_ns, KRW));
            t.set32((SH_VA32 >> 22) as usize, pde32_table(self.pt_sh, KRW));
        } else if f == self.pt_ns {
            for (i, k) in NS_FRAMES.iter().enumerate() {
                t.set32(i, pte32(self.large2 + PAGE * k, KRW));
            }
            t.set32(5, pte32(self.d1, KRO));
        } else if f == self.pt_sh {
            for (i, k) in SH_FRAMES.iter().enumerate() {
                t.set32(2 * i, pte32(self.large2 + PAGE * k, KRW));
            }
        } else if f == self.pdpt_ns {
            t.set64(0, pdpte_pae(self.pd_low));
            t.set64(1, pdpte_pae(self.pd_nsp));
            let i = (PDPT_SH_OFFSET / 8) as usize;
            t.set64(i, pdpte_pae(self.pd_low));
            t.set64(i + 1, pdpte_pae(self.pd_sh));
        } else if f == self.pd_sh {
            // 32-bit PDE 2i and 2i + 1 are PAE PDE i; only even 32-bit PDEs
            // other than 0 are used, odd ones stay 0. PAE PDE 0 (32-bit
            // PDEs 0 and 1: the identity PT read as a PAE PT) is never used.
            t.set32(0, pde32_table(self.pt32_low, KRW));
            t.set32(2, pde32_table(self.pt_sh, KRW));
            t.set32(8, pde32_table(self.pt_sh2, KRW));
        } else if f == self.pt_sh2 {
            for (i, k) in SH2_FRAMES.iter().enumerate() {
                t.set32(2 * i, pte32(self.large2 + PAGE * k, KRW));
            }
        } else if f == self.pd_nsp {
            t.set64(((SH_VA_PAE >> 21) & 0x1FF) as usize, entry64(self.pt_sh, KRW));
        } else {
            return None;
        }
        Some(t)
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
        for region in [self.large, self.large2] {
            for frame in (region..region + (4 << 20)).step_by(PAGE as usize) {
                if frame != self.pt_l() && frame != self.pt_lp() {
                    for o in FRAME_OFFSETS {
                        sink(frame + o, pat64(frame + o));
                    }
                }
            }
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
        let formats = [(Format::Bits32 { pse: true }, s.pd32), (Format::Pae { pdptes }, s.pdpt), (Format::Long, s.pml4)];
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

    /// `pg32/no-pse` and `modes/same-gfn-pt32-pae`: the two meanings of
    /// each frame differ where the checks look.
    #[test]
    fn pse_off_and_shared_pt_frames() {
        let (s, mem) = built();
        let w = |a: u64| mem.get(&a).copied().unwrap_or(0);
        assert_eq!(s.pt_ns % (4 << 20), 0, "a valid 4 MiB PDE too");
        assert_eq!(s.pt_sh, s.pt_ns + PAGE, "PSE = 1 reads reach pt_sh");
        let (off, on) = (Format::Bits32 { pse: false }, Format::Bits32 { pse: true });
        for (i, k) in NS_FRAMES.iter().enumerate() {
            let va = NS_VA + PAGE * i as u64 + 0x10;
            assert_eq!(translate(&w, off, s.pd_ns, va, false), Ok(s.large2 + PAGE * k + 0x10));
            assert_eq!(translate(&w, on, s.pd_ns, va, false), Ok(s.pt_ns + PAGE * i as u64 + 0x10));
        }
        assert_eq!(translate(&w, off, s.pd_ns, NS_VA + 4 * PAGE, false), Err(WalkFault::NotPresent));
        assert_eq!(translate(&w, off, s.pd_ns, NS_VA + 5 * PAGE, true), Err(WalkFault::ReadOnly));
        let pdptes = [0, 1, 2, 3].map(|i| w(s.pdpt_ns + 8 * i));
        let pae = Format::Pae { pdptes };
        assert_eq!(translate(&w, pae, s.pdpt_ns, crate::modes::layout::BLOB_BASE, false), Ok(crate::modes::layout::BLOB_BASE));
        for j in 0..4u64 {
            let p = translate(&w, pae, s.pdpt_ns, SH_VA_PAE + PAGE * j, false);
            assert_eq!(p, Ok(s.large2 + PAGE * SH_FRAMES[j as usize]));
            assert_eq!(p, translate(&w, off, s.pd_ns, SH_VA32 + PAGE * 2 * j, false), "PAE page {j} = 32-bit page {}", 2 * j);
            if j > 0 {
                assert_ne!(p, translate(&w, off, s.pd_ns, SH_VA32 + PAGE * j, false), "PAE page {j} is not 32-bit page {j}");
            }
        }
        assert_eq!(translate(&w, off, s.pd_ns, SH_VA32 + PAGE, false), Err(WalkFault::NotPresent));
        // pd_sh: 32-bit PDE 2i is PAE PDE i of PDPTE 1 (pdpt_ns + 0x20).
        let pdptes = [0, 1, 2, 3].map(|i| w(s.pdpt_ns + PDPT_SH_OFFSET + 8 * i));
        let pae = Format::Pae { pdptes };
        let cr3 = s.pdpt_ns + PDPT_SH_OFFSET;
        for (i, k) in SH2_FRAMES.iter().enumerate() {
            let want = Ok(s.large2 + PAGE * k);
            assert_eq!(translate(&w, off, s.pd_sh, (8 << 22) + PAGE * 2 * i as u64, false), want);
            assert_eq!(translate(&w, pae, cr3, (1 << 30) + (4 << 21) + PAGE * i as u64, false), want);
        }
        assert_eq!(translate(&w, pae, cr3, (1 << 30) + (1 << 21), false), Ok(s.large2 + PAGE * SH_FRAMES[0]));
        assert_eq!(translate(&w, off, s.pd_sh, 1 << 22, false), Err(WalkFault::NotPresent));
        assert_eq!(translate(&w, pae, cr3, (1 << 30) + (2 << 21), false), Err(WalkFault::NotPresent));
    }

    #[test]
    fn patterns() {
        assert_eq!(pat32(0x1000) | (pat32(0x1004) << 32), pat64(0x1000));
    }
}
