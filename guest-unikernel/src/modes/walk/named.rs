//! The named scenarios of DESIGN.md section 4 that need a paging mode
//! other than long mode: the second program of the mode-switch engine
//! (the walk fills most of the window). Every expectation comes from
//! [`Mem`], a model of physical memory (the space's initial contents plus
//! every write the program makes), through the reference translation
//! [`paging::translate`] in the paging mode of the stop, with the PDPTE
//! registers of PAE paging loaded where the processor loads them.
//!
//! Stops, in order:
//!
//! 1. real, 2. 32-bit paging (CR3 = `pd_same`), 3. PAE (PDPT -> `pd_same`),
//!    4. long mode (PML4 -> PDPT -> `pd_same`), 5. 32-bit paging again:
//!    `modes/same-gfn`;
//! 6. 32-bit paging on `pd_q`: `pg32/pt-quadrants`, `pg32/pd-quadrants`,
//!    `pg32/pse-4m`;
//! 7. the same with CR4.PGE = 1: `pg32/global-pages`;
//! 8. PAE: `pae/large-2m`, `pae/pdpte-cr3-align`;
//! 9. PAE with CR4.PGE = 1: `pae/global-pages`;
//! 10. 32-bit paging on the PD at 2 MiB, 11. PAE with the PDPT in the
//!     real-mode data, 12. real, 13. protected mode without paging,
//!     14. 32-bit paging again (paging turned off and on inside the stop),
//!     15. PAE again: `modes/low-frames`;
//! 16. 32-bit paging with CR4.PSE = 0 on `pd_ns`, 17. the same PD with
//!     CR4.PSE = 1 (and PSE cleared again inside the stop): `pg32/no-pse`;
//! 18. 32-bit paging with CR4.PSE = 0 on `pd_ns`, 19. PAE on `pdpt_ns`,
//!     20. 32-bit paging again: `modes/same-gfn-pt32-pae`;
//! 21. 32-bit paging with CR4.PSE = 0 on `pd_sh`, 22. PAE with `pd_sh` as
//!     PDPTE 1, 23. 32-bit paging again: `modes/same-gfn-pd32-pae`.

use super::{extra, regs, Env, Item};
use crate::modes::paging::{self, pde32_4m, pde32_table, pte32, Format, WalkFault, KRW};
use crate::modes::probe::{pf_error, Expect, Op};
use crate::modes::space::*;
use crate::modes::{layout, Mode};
use crate::memmap::PAGE;
use crate::regs::{CR0_PE, CR0_PG, CR0_WP, CR4_PAE, CR4_PGE, CR4_PSE};
use core::cell::Cell;

/// `modes/same-gfn`.
pub const SAME_GFN: usize = extra(6);
/// `pg32/pt-quadrants`.
pub const PT_QUADRANTS: usize = extra(7);
/// `pg32/pd-quadrants`.
pub const PD_QUADRANTS: usize = extra(8);
/// `pg32/pse-4m`.
pub const PSE_4M: usize = extra(9);
/// `pae/large-2m`.
pub const LARGE_2M: usize = extra(10);
/// `modes/low-frames`.
pub const LOW_FRAMES: usize = extra(11);
/// `pae/pdpte-cr3-align`.
pub const CR3_ALIGN: usize = extra(12);
/// `pg32/global-pages`.
pub const GLOBAL32: usize = extra(13);
/// `pae/global-pages`.
pub const GLOBAL_PAE: usize = extra(14);
/// `pg32/no-pse`.
pub const NO_PSE: usize = extra(15);
/// `modes/same-gfn-pt32-pae`.
pub const SAME_GFN_PT: usize = extra(16);
/// `modes/same-gfn-pd32-pae`.
pub const SAME_GFN_PD: usize = extra(17);

/// Most writes the model keeps.
pub const LOG: usize = 64;

/// Physical memory as the program leaves it, op by op: the space's initial
/// contents, then the logged 32-bit writes (the latest wins). Accessed and
/// dirty flags the processor sets are not modelled (no expectation depends
/// on them: reads of entries mask them).
pub struct Mem<'a> {
    s: &'a Space,
    log: [(u64, u32); LOG],
    n: usize,
    /// Set when the model was asked about a word the space never wrote or
    /// ran out of log (a program bug the host tests catch).
    pub unknown: Cell<bool>,
}

impl<'a> Mem<'a> {
    /// The space's initial contents.
    pub fn new(s: &'a Space) -> Self {
        Mem { s, log: [(0, 0); LOG], n: 0, unknown: Cell::new(false) }
    }

    /// The 32-bit word at physical `pa` (4-aligned).
    pub fn read32(&self, pa: u64) -> u32 {
        if let Some((_, v)) = self.log[..self.n].iter().rev().find(|(a, _)| *a == pa) {
            return *v;
        }
        self.s.initial32(pa).unwrap_or_else(|| {
            self.unknown.set(true);
            0
        })
    }

    /// The 64-bit word at physical `pa` (8-aligned); zero for unknown
    /// words (table entries the space leaves zero are known).
    pub fn word(&self, pa: u64) -> u64 {
        u64::from(self.read32(pa)) | u64::from(self.read32(pa + 4)) << 32
    }

    /// A 32-bit store.
    pub fn write32(&mut self, pa: u64, v: u32) {
        if self.n == LOG {
            self.unknown.set(true);
            return;
        }
        self.log[self.n] = (pa, v);
        self.n += 1;
    }
}

/// Emits ops with expectations from the model.
struct B<'a, 'e> {
    s: &'a Space,
    env: &'a Env,
    mem: Mem<'a>,
    /// The stop's paging format; `None` with paging off.
    fmt: Option<Format>,
    /// The stop's mode.
    mode: Mode,
    cr0: u64,
    cr3: u64,
    cr4: u64,
    emit: &'e mut dyn FnMut(Item),
}

impl B<'_, '_> {
    /// A stop in `mode` with `cr3` (paged modes) and extra CR4 bits.
    fn stop(&mut self, mode: Mode, cr3: u64, cr4_extra: u64) {
        self.stop_cr4(mode, cr3, cr4_extra, 0);
    }

    /// A stop in `mode` with `cr3`, CR4 bits `set` added and `clear` removed.
    fn stop_cr4(&mut self, mode: Mode, cr3: u64, set: u64, clear: u64) {
        let mut r = regs(self.s, self.env, mode);
        if matches!(mode, Mode::Paging32 | Mode::Pae | Mode::Long) {
            r.cr3 = cr3 as u32;
        }
        r.cr4 = (r.cr4 | set as u32) & !(clear as u32);
        (self.cr0, self.cr3, self.cr4) = (u64::from(r.cr0), u64::from(r.cr3), u64::from(r.cr4));
        self.mode = mode;
        self.fmt = self.format(mode);
        (self.emit)(Item::Stop(r));
    }

    /// The format of `mode` with the current CR3 and CR4: PAE loads the
    /// PDPTE registers from CR3 bits 31:5 (SDM Vol. 3A 4.4.1); 32-bit
    /// paging honours PS in PDEs only with CR4.PSE = 1 (SDM Vol. 3A 4.3).
    fn format(&self, mode: Mode) -> Option<Format> {
        match mode {
            Mode::Real | Mode::Prot => None,
            Mode::Paging32 => Some(Format::Bits32 { pse: self.cr4 & CR4_PSE != 0 }),
            Mode::Pae => Some(Format::Pae { pdptes: [0, 1, 2, 3].map(|i| self.mem.word((self.cr3 & 0xFFFF_FFE0) + 8 * i)) }),
            Mode::Long => Some(Format::Long),
        }
    }

    fn op(&mut self, tag: usize, op: Op, e: Expect) {
        (self.emit)(Item::Op(tag, op, e));
    }

    fn pa(&self, va: u64, write: bool) -> Result<u64, WalkFault> {
        match self.fmt {
            None => Ok(va),
            Some(f) => paging::translate(&|a| self.mem.word(a), f, self.cr3, va, write),
        }
    }

    /// What a read of `va` gives now.
    fn expect_read(&self, va: u64) -> Expect {
        match self.pa(va, false) {
            Ok(pa) => Expect::Value(u64::from(self.mem.read32(pa))),
            Err(_) => Expect::pf(pf_error(false, false, false, false), va),
        }
    }

    fn read(&mut self, tag: usize, va: u64) {
        let e = self.expect_read(va);
        self.op(tag, Op::Read32 { seg: 0, addr: va }, e);
    }

    /// A read of a paging-structure entry: the processor may have set its
    /// accessed and dirty flags (SDM Vol. 3A 4.8), so those are not compared.
    fn read_entry(&mut self, tag: usize, va: u64) {
        let e = match self.expect_read(va) {
            Expect::Value(v) => Expect::Masked { mask: 0xFFFF_FFFF & !(paging::A | paging::D), want: v & !(paging::A | paging::D) },
            e => e,
        };
        self.op(tag, Op::Read32 { seg: 0, addr: va }, e);
    }

    fn write(&mut self, tag: usize, va: u64, value: u32) {
        let e = match self.pa(va, true) {
            Ok(pa) => {
                self.mem.write32(pa, value);
                Expect::Done
            }
            Err(k) => Expect::pf(pf_error(k == WalkFault::ReadOnly, true, false, false), va),
        };
        self.op(tag, Op::Write32 { seg: 0, addr: va, value }, e);
    }

    fn invlpg(&mut self, tag: usize, va: u64) {
        self.op(tag, Op::Invlpg { addr: va }, Expect::Done);
    }

    /// MOV CR3 (PAE: reloads the PDPTE registers).
    fn mov_cr3(&mut self, tag: usize, cr3: u64, mode: Mode) {
        self.cr3 = cr3;
        self.fmt = self.format(mode);
        self.op(tag, Op::MovCr3 { value: cr3 as u32 }, Expect::Value(cr3));
    }

    /// MOV CR0 with CR0.PG set or clear (SDM Vol. 3A 10.9.1: the code runs
    /// identity-mapped, so paging can go off and on under it). Setting PG
    /// with CR4.PAE = 1 loads the PDPTE registers again (SDM Vol. 3A 4.4.1).
    fn paging(&mut self, tag: usize, on: bool) {
        let cr0 = if on { self.cr0 | CR0_PG } else { self.cr0 & !CR0_PG };
        self.fmt = if on { self.format(self.mode) } else { None };
        self.op(tag, Op::WriteCr0 { value: cr0 as u32 }, Expect::Value(cr0));
    }

    /// MOV CR4 (the paging format follows CR4.PSE; no paging mode change
    /// here: CR4.PAE stays).
    fn write_cr4(&mut self, tag: usize, cr4: u64) {
        self.cr4 = cr4;
        if self.fmt.is_some() {
            self.fmt = self.format(self.mode);
        }
        self.op(tag, Op::WriteCr4 { value: cr4 as u32 }, Expect::Value(cr4));
    }
}

/// Emits the second program.
pub fn program(s: &Space, env: &Env, emit: &mut dyn FnMut(Item)) {
    let mut b = B { s, env, mem: Mem::new(s), fmt: None, mode: Mode::Prot, cr0: 0, cr3: 0, cr4: 0, emit };
    same_gfn(&mut b);
    b.stop(Mode::Paging32, s.pd_q, 0);
    pt_quadrants(&mut b);
    pd_quadrants(&mut b);
    pse_4m(&mut b);
    b.stop(Mode::Paging32, s.pd_q, CR4_PGE);
    global(&mut b, GLOBAL32, Mode::Paging32);
    b.stop(Mode::Pae, s.pdpt, 0);
    large_2m(&mut b);
    cr3_align(&mut b);
    b.stop(Mode::Pae, s.pdpt, CR4_PGE);
    global(&mut b, GLOBAL_PAE, Mode::Pae);
    low_frames(&mut b);
    no_pse(&mut b);
    same_gfn_pt32_pae(&mut b);
    same_gfn_pd32_pae(&mut b);
    debug_assert!(!b.mem.unknown.get(), "the named program read a word the space never wrote");
}

/// Scenario 1: one frame is the 32-bit PD, the PAE PD and the 4-level PD
/// (32-bit PDE 8 = PAE/4-level PDE 4, SDM Vol. 3A 4.3 Table 4-4/4-5 and
/// 4.4.2 Table 4-9); an edit made in long mode with the 4-byte 32-bit
/// format is seen by 32-bit paging after the CR3 load that enters it (SDM
/// Vol. 3A 4.10.4.1), and by long mode itself after INVLPG.
fn same_gfn(b: &mut B) {
    let t = SAME_GFN;
    let s = b.s;
    b.stop(Mode::Real, 0, 0);
    b.op(t, Op::ReadCr0, Expect::Masked { mask: CR0_PE | CR0_PG, want: 0 });
    b.stop(Mode::Paging32, s.pd_same, 0);
    b.op(t, Op::ReadCr3, Expect::Value(s.pd_same));
    b.read(t, SAME_VA32);
    b.read(t, SAME_VA32 + 0x7f8);
    b.read(t, SAME_VA64); // 32-bit PDE 2: not present
    b.stop(Mode::Pae, s.pdpt_same, 0);
    b.op(t, Op::ReadCr4, Expect::Masked { mask: CR4_PAE | CR4_PSE, want: CR4_PAE });
    b.read(t, SAME_VA64);
    b.read(t, SAME_VA64 + 0xffc);
    b.stop(Mode::Long, s.pml4_same, 0);
    b.read(t, SAME_VA64 + 0x7fc);
    let pde = SAME_ALIAS + s.pd_same + 4 * (SAME_VA32 >> 22);
    b.read_entry(t, pde);
    b.write(t, pde, pde32_table(s.pt_same, KRW));
    b.read_entry(t, pde);
    b.invlpg(t, SAME_VA64);
    b.read(t, SAME_VA64 + 0x7fc);
    b.stop(Mode::Paging32, s.pd_same, 0);
    b.read(t, SAME_VA32);
    b.read(t, SAME_VA32 + 0xff8);
}

/// Scenario 3: a 32-bit PT maps 1024 distinct frames (PTE i covers linear
/// bits 21:12 = i, SDM Vol. 3A 4.3 Table 4-6); entries 0..511 and
/// 512..1023 are the two 2 MiB halves. After PTE 600 changes and INVLPG of
/// its page (SDM Vol. 3A 4.10.4.1), that page maps the new frame; PTE 88
/// (the same index within the lower half) and the neighbours stay. PTE
/// 700 cleared (+ INVLPG), then set again without INVLPG: the new frame,
/// and PTE 188 stays.
fn pt_quadrants(b: &mut B) {
    let t = PT_QUADRANTS;
    let page = |i: u64, o: u64| PTQ_VA + PAGE * i + o;
    for i in [0, 88, 511, 512, 599, 600, 601, 1023] {
        b.read(t, page(i, FRAME_OFFSETS[(i % 2) as usize]));
    }
    let pte = |i: u64| b.s.pt_q + 4 * i;
    let (p600, p700) = (pte(600), pte(700));
    b.write(t, p600, pte32(b.s.large + PAGE * q_frame(89), KRW));
    b.invlpg(t, page(600, 0));
    for i in [600, 88, 599, 601, 512, 0] {
        b.read(t, page(i, FRAME_OFFSETS[0]));
    }
    b.read(t, page(600, FRAME_OFFSETS[1]));
    // Upper half, not present -> present: no INVLPG needed (SDM Vol. 3A
    // 4.10.4.3); PTE 188 (same index in the lower half) stays.
    b.read(t, page(188, FRAME_OFFSETS[0]));
    b.write(t, p700, 0);
    b.invlpg(t, page(700, 0));
    b.read(t, page(700, FRAME_OFFSETS[1]));
    b.write(t, p700, pte32(b.s.large + PAGE * q_frame(189), KRW));
    b.read(t, page(700, FRAME_OFFSETS[1]));
    b.read(t, page(188, FRAME_OFFSETS[0]));
}

/// Scenario 4: PDEs 255/256 and 511/512 (the edges of the PD's four 1 KiB
/// quarters) are 4 MiB pages (SDM Vol. 3A 4.3 Table 4-4). Changed to
/// another region, both 2 MiB halves of each follow: after INVLPG of one
/// address in the page (which invalidates every TLB entry of the page,
/// SDM Vol. 3A 4.10.4.1) for 255/256, after MOV CR3 for 511/512; the
/// unchanged PDEs keep their mapping in between. PDEs 767/768 go from
/// not present to present without invalidation (SDM Vol. 3A 4.10.4.3).
fn pd_quadrants(b: &mut B) {
    let t = PD_QUADRANTS;
    let halves = |b: &mut B| {
        for (k, i) in Q_PDES.iter().enumerate() {
            let va = i << 22;
            b.read(t, va + PAGE * k as u64 + FRAME_OFFSETS[0]);
            b.read(t, va + (2 << 20) + PAGE * (3 + k as u64) + FRAME_OFFSETS[1]);
        }
    };
    halves(b);
    let s = b.s;
    for i in [255, 256] {
        b.write(t, s.pd_q + 4 * i, pde32_4m(s.large2, KRW));
    }
    // One INVLPG per 4 MiB page, at an address in the lower half of one
    // and in the upper half of the other.
    b.invlpg(t, (255 << 22) + 0x1000);
    b.invlpg(t, (256 << 22) + 0x30_0000);
    halves(b);
    // PDEs 767 and 768 (the edge of the last two quarters), not present
    // -> present: no invalidation needed (SDM Vol. 3A 4.10.4.3).
    let np = |b: &mut B| {
        for i in [767u64, 768] {
            b.read(t, (i << 22) + PAGE + FRAME_OFFSETS[1]);
            b.read(t, (i << 22) + (2 << 20) + 9 * PAGE + FRAME_OFFSETS[0]);
        }
    };
    np(b);
    for i in [767, 768] {
        b.write(t, s.pd_q + 4 * i, pde32_4m(s.large2, KRW));
    }
    np(b);
    for i in [511, 512] {
        b.write(t, s.pd_q + 4 * i, pde32_4m(s.large2, KRW));
    }
    b.mov_cr3(t, s.pd_q, Mode::Paging32);
    halves(b);
}

/// Scenario 5, 32-bit: a 4 MiB page (SDM Vol. 3A 4.3, CR4.PSE = 1) read
/// in both halves at different offsets; its region holds a PT that maps
/// `PTL_VA32`. Stores through the 4 MiB page into that PT take effect:
/// a remap after INVLPG, a not-present -> present change without one (no
/// TLB entry is created from a not-present entry, SDM Vol. 3A 4.10.4.3).
fn pse_4m(b: &mut B) {
    let t = PSE_4M;
    let s = b.s;
    b.read(t, L2_VA32 + 5 * PAGE + FRAME_OFFSETS[0]);
    b.read(t, L2_VA32 + (2 << 20) + 7 * PAGE + FRAME_OFFSETS[1]);
    let pt = L2_VA32 + (s.pt_l() - s.large2);
    large_pt_writes(b, t, pt, 4, PTL_VA32);
}

/// The write-tracking part of scenario 5: the PT at linear `pt` (through
/// a large page), entries `size` bytes, mapping `va`.
fn large_pt_writes(b: &mut B, t: usize, pt: u64, size: u64, va: u64) {
    let s = b.s;
    b.read(t, va);
    b.read(t, va + PAGE);
    b.read_entry(t, pt);
    b.write(t, pt, pte32(s.d2, KRW));
    b.invlpg(t, va);
    b.read(t, va);
    b.read(t, va + 0x7f8);
    b.write(t, pt + size, pte32(s.d3, KRW));
    b.read(t, va + PAGE);
    b.read(t, va + PAGE + 0xffc);
}

/// Scenario 5, PAE: 2 MiB pages (SDM Vol. 3A 4.4.2 Table 4-9), the two
/// halves of `large2` at different offsets, and the PAE PT inside its
/// upper half written through the 2 MiB page.
fn large_2m(b: &mut B) {
    let t = LARGE_2M;
    let s = b.s;
    b.read(t, L2_VA_PAE + 5 * PAGE + FRAME_OFFSETS[1]);
    b.read(t, L2_VA_PAE + (2 << 20) + 7 * PAGE + FRAME_OFFSETS[0]);
    let pt = L2_VA_PAE + (s.pt_lp() - s.large2);
    large_pt_writes(b, t, pt, 8, PTL_VA_PAE);
}

/// Scenario 14: in PAE paging CR3 bits 31:5 locate the PDPT (SDM Vol. 3A
/// 4.4.1, Table 4-7), so a PDPT 32-byte aligned but not page aligned is
/// loaded from exactly there: two PDPTs in one frame map the window
/// differently.
fn cr3_align(b: &mut B) {
    let t = CR3_ALIGN;
    let s = b.s;
    for o in PDPT_X_OFFSETS {
        b.mov_cr3(t, s.pdpt_x + o, Mode::Pae);
        b.op(t, Op::ReadCr3, Expect::Value(s.pdpt_x + o));
        b.read(t, WIN);
        b.read(t, WIN + 0x7fc);
        b.read(t, 0x8000_0000 + layout::REAL_DATA);
    }
    b.mov_cr3(t, s.pdpt, Mode::Pae);
    b.read(t, WIN);
}

/// Scenario 15 (SDM Vol. 3A 4.10.2.4, 4.10.4.1): with CR4.PGE = 1, MOV CR3
/// invalidates non-global translations only, so after a global PTE changes
/// and MOV CR3 either the old or the new frame may be read (not compared);
/// INVLPG invalidates the global translation of its page; a MOV to CR4
/// that changes PGE invalidates every translation, global ones included.
fn global(b: &mut B, t: usize, mode: Mode) {
    let s = b.s;
    let (va, pt, size) = if mode == Mode::Pae { (G_VA_PAE, s.pt_gp, 8) } else { (G_VA32, s.pt_g, 4) };
    let g = |f: u64| pte32(f, KRW | paging::G);
    b.op(t, Op::ReadCr4, Expect::Masked { mask: CR4_PGE, want: CR4_PGE });
    b.read(t, va);
    b.read(t, va + PAGE + 0x7f8);
    b.write(t, pt, g(s.d2));
    b.write(t, pt + size, pte32(s.d2, KRW));
    b.mov_cr3(t, b.cr3, mode);
    b.read(t, va + PAGE + 0x7f8); // not global: the new frame
    b.op(t, Op::Read32 { seg: 0, addr: va }, Expect::Done); // global: either
    b.invlpg(t, va);
    b.read(t, va);
    b.write(t, pt, g(s.d3));
    let cr4 = b.cr4;
    b.write_cr4(t, cr4 & !CR4_PGE);
    b.read(t, va);
    b.write(t, pt, g(s.d1));
    b.write_cr4(t, cr4);
    b.read(t, va);
    b.read(t, va + 0xffc);
}

/// Scenario 8: a 32-bit PD at physical 2 MiB and its PT, edited while
/// paging is off (protected mode, CR0.PG cleared inside a paged stop),
/// and a PAE PDPT below 1 MiB (in the real-mode data) edited in real mode,
/// are in effect when paging comes back: every CR3 load and every change
/// of CR0.PG invalidates the TLBs (SDM Vol. 3A 4.10.4.1), PAE PDPTEs are
/// loaded at each CR3 load (SDM Vol. 3A 4.4.1), and with paging off
/// linear addresses are physical (SDM Vol. 3A 4.1.1; real mode: segment
/// * 16 + offset, SDM Vol. 3A 21.1.1).
fn low_frames(b: &mut B) {
    let t = LOW_FRAMES;
    let s = b.s;
    let (pde, pte) = (s.pd_2m + 4 * (LF_VA >> 22), s.pt_lf);
    b.stop(Mode::Paging32, s.pd_2m, 0);
    b.op(t, Op::ReadCr3, Expect::Value(s.pd_2m));
    b.read(t, LF_VA);
    b.read(t, LF_VA + PAGE);
    b.read(t, LF_VA + (4 << 20));
    // PAE with the PDPT in the real-mode data area (below 1 MiB).
    let pdpte1 = layout::REAL_PDPT + 8;
    b.stop(Mode::Pae, layout::REAL_PDPT, 0);
    b.op(t, Op::ReadCr3, Expect::Value(layout::REAL_PDPT));
    b.read(t, WIN);
    b.stop(Mode::Real, 0, 0);
    b.op(t, Op::ReadCr0, Expect::Masked { mask: CR0_PE | CR0_PG | CR0_WP, want: 0 });
    b.op(t, Op::Read32 { seg: 0, addr: layout::REAL_DATA }, Expect::Value(u64::from(super::real_word(layout::REAL_DATA))));
    // (No read of the PDPTE before the write: QEMU TCG sets bit 5 in PAE
    // PDPTEs it walks, which the SDM reserves there, Vol. 3A Table 4-8.)
    b.write(t, pdpte1, paging::pdpte_pae(s.pd_alt) as u32);
    b.read(t, pdpte1);
    b.stop(Mode::Prot, 0, 0);
    b.read_entry(t, pde);
    b.write(t, pde + 4, pde32_table(s.pt_lf, KRW));
    b.write(t, pte, pte32(s.d2, KRW));
    b.write(t, pte + 4, pte32(s.d3, KRW));
    b.read(t, pde + 4);
    b.stop(Mode::Paging32, s.pd_2m, 0);
    b.read(t, LF_VA);
    b.read(t, LF_VA + PAGE + 0x7f8);
    b.read(t, LF_VA + (4 << 20) + 0xffc);
    b.paging(t, false);
    b.write(t, pte, pte32(s.d1, KRW));
    b.write(t, pde + 4, 0);
    b.read(t, pte);
    b.paging(t, true);
    b.op(t, Op::ReadCr3, Expect::Value(s.pd_2m));
    b.read(t, LF_VA);
    b.read(t, LF_VA + PAGE);
    b.read(t, LF_VA + (4 << 20));
    // The PDPTE real mode edited is loaded with CR3 (SDM Vol. 3A 4.4.1).
    b.stop(Mode::Pae, layout::REAL_PDPT, 0);
    b.read(t, WIN);
    b.read(t, WIN + 0xffc);
}

/// `pg32/no-pse` (SDM Vol. 3A 4.3, Tables 4-4 and 4-5): with CR4.PSE = 0
/// bit 7 (PS) of a 32-bit PDE is ignored and the PDE references a page
/// table; with CR4.PSE = 1 the same PDE maps a 4 MiB page. `pd_ns` PDE 300
/// is `pt_ns` | PS | R/W | P, with `pt_ns` 4 MiB-aligned: with PSE = 0,
/// linear page i of [`NS_VA`] is PTE i of `pt_ns` (4 KiB pages, one not
/// present, one read-only); with PSE = 1, [`NS_VA`] + x is physical
/// `pt_ns` + x, so the reads return the PT's own entries (and the next
/// frame's, `pt_sh`). CR4.PSE cleared again inside the PSE = 1 stop, then
/// MOV CR3 (which invalidates the non-global TLB entries, SDM Vol. 3A
/// 4.10.4.1): the PT meaning again.
fn no_pse(b: &mut B) {
    let t = NO_PSE;
    let s = b.s;
    let as_pt = |b: &mut B| {
        for (i, _) in NS_FRAMES.iter().enumerate() {
            b.read(t, NS_VA + PAGE * i as u64 + FRAME_OFFSETS[i % 2]);
        }
        b.read(t, NS_VA + 4 * PAGE); // PTE 4 not present
        b.read(t, NS_VA + 5 * PAGE + 0x7f8); // d1
        b.write(t, NS_VA + 5 * PAGE + 0x10, 0x4E05_E000); // read-only: #PF
        b.read(t, NS_VA + 0x3F_F000); // PTE 1023 not present
    };
    b.stop_cr4(Mode::Paging32, s.pd_ns, 0, CR4_PSE);
    b.op(t, Op::ReadCr4, Expect::Masked { mask: CR4_PAE | CR4_PSE, want: 0 });
    as_pt(b);
    b.stop_cr4(Mode::Paging32, s.pd_ns, CR4_PSE, 0);
    b.op(t, Op::ReadCr4, Expect::Masked { mask: CR4_PAE | CR4_PSE, want: CR4_PSE });
    // The 4 MiB page: pt_ns's entries as data, then pt_sh's (the next frame).
    for i in [0u64, 1, 3, 4, 5] {
        b.read_entry(t, NS_VA + 4 * i);
    }
    b.read_entry(t, NS_VA + PAGE);
    b.read_entry(t, NS_VA + PAGE + 8);
    let cr4 = b.cr4;
    b.write_cr4(t, cr4 & !CR4_PSE);
    b.mov_cr3(t, s.pd_ns, Mode::Paging32);
    as_pt(b);
}

/// `modes/same-gfn-pt32-pae` (SDM Vol. 3A 4.3 Table 4-6, 4.4.2 Table
/// 4-11): one frame, `pt_sh`, is a 32-bit page table (4-byte PTEs, CR4.PSE
/// = 0, entries in its lower 2 MiB half) and a PAE page table (8-byte PTEs,
/// PAE PTE i = 32-bit PTEs 2i and 2i+1). Its even 32-bit PTEs map frames,
/// the odd ones are 0, so 32-bit page 2i and PAE page i read the same
/// frame, 32-bit odd pages are not present, and PAE page i (i > 0) is not
/// 32-bit page i. A PAE PTE written in PAE paging (through the identity
/// map) is 32-bit PTE 2i after the CR3 load into 32-bit paging (SDM Vol.
/// 3A 4.10.4.1). Every read in each format, before and after the other
/// format used the frame.
fn same_gfn_pt32_pae(b: &mut B) {
    let t = SAME_GFN_PT;
    let s = b.s;
    let pg32 = |b: &mut B, n: u64| {
        for j in 0..n {
            b.read(t, SH_VA32 + PAGE * j + FRAME_OFFSETS[(j / 2 % 2) as usize]);
        }
    };
    b.stop_cr4(Mode::Paging32, s.pd_ns, 0, CR4_PSE);
    b.op(t, Op::ReadCr4, Expect::Masked { mask: CR4_PAE | CR4_PSE, want: 0 });
    pg32(b, 9);
    b.stop(Mode::Pae, s.pdpt_ns, 0);
    b.op(t, Op::ReadCr3, Expect::Value(s.pdpt_ns));
    for j in 0..5u64 {
        b.read(t, SH_VA_PAE + PAGE * j + FRAME_OFFSETS[(j % 2) as usize]);
    }
    // PAE PTE 5 (32-bit PTEs 10 and 11), not present -> present: no
    // invalidation needed (SDM Vol. 3A 4.10.4.3). The high half stays 0.
    b.write(t, s.pt_sh + 8 * 5, pte32(s.large2 + PAGE * 52, KRW));
    b.read(t, SH_VA_PAE + 5 * PAGE + FRAME_OFFSETS[1]);
    b.read(t, SH_VA_PAE + 5 * PAGE + FRAME_OFFSETS[0]);
    b.stop_cr4(Mode::Paging32, s.pd_ns, 0, CR4_PSE);
    pg32(b, 12);
}

/// `modes/same-gfn-pd32-pae` (SDM Vol. 3A 4.3 Table 4-5, 4.4.2 Table
/// 4-10): one frame, `pd_sh`, is a 32-bit page directory (CR4.PSE = 0,
/// 4-byte PDEs, PDE i covers 4 MiB at i << 22) and the PAE page directory
/// of PDPTE 1 (8-byte PDEs, PAE PDE i = 32-bit PDEs 2i and 2i+1, covering
/// 2 MiB at 1 GiB + i << 21). 32-bit PDE 2 -> `pt_sh` and PDE 8 ->
/// `pt_sh2` are PAE PDEs 1 and 4; both PTs are valid in both formats.
/// 32-bit -> PAE -> 32-bit, every read as its stop's format says; a PAE
/// PDE written in PAE paging (through the identity map) is 32-bit PDE 2i
/// back in 32-bit paging (loaded with CR3, SDM Vol. 3A 4.10.4.1).
fn same_gfn_pd32_pae(b: &mut B) {
    let t = SAME_GFN_PD;
    let s = b.s;
    let pg32 = |b: &mut B, extra: bool| {
        for j in 0..4u64 {
            b.read(t, (2 << 22) + PAGE * j + FRAME_OFFSETS[(j / 2 % 2) as usize]);
        }
        for j in 0..5u64 {
            b.read(t, (8 << 22) + PAGE * j + FRAME_OFFSETS[1 - (j / 2 % 2) as usize]);
        }
        b.read(t, 1 << 22); // PDE 1: not present
        b.read(t, (6 << 22) + FRAME_OFFSETS[0]); // PDE 6: set from PAE paging
        if extra {
            b.read(t, (6 << 22) + 2 * PAGE + FRAME_OFFSETS[1]);
            b.read(t, (6 << 22) + PAGE);
        }
    };
    b.stop_cr4(Mode::Paging32, s.pd_sh, 0, CR4_PSE);
    b.op(t, Op::ReadCr3, Expect::Value(s.pd_sh));
    pg32(b, false);
    let cr3 = s.pdpt_ns + PDPT_SH_OFFSET;
    b.stop(Mode::Pae, cr3, 0);
    b.op(t, Op::ReadCr3, Expect::Value(cr3));
    let pae = |b: &mut B| {
        for j in 0..3u64 {
            b.read(t, (1 << 30) + (1 << 21) + PAGE * j + FRAME_OFFSETS[(j % 2) as usize]);
            b.read(t, (1 << 30) + (4 << 21) + PAGE * j + FRAME_OFFSETS[1 - (j % 2) as usize]);
        }
        b.read(t, (1 << 30) + (2 << 21)); // PAE PDE 2 = 32-bit PDEs 4, 5: not present
    };
    pae(b);
    // PAE PDE 3 (32-bit PDEs 6 and 7), not present -> present: no
    // invalidation needed (SDM Vol. 3A 4.10.4.3). Its high half stays 0.
    b.write(t, s.pd_sh + 8 * 3, paging::pde32_table(s.pt_sh2, KRW));
    b.read(t, (1 << 30) + (3 << 21) + PAGE + FRAME_OFFSETS[0]);
    b.read(t, (1 << 30) + (3 << 21) + FRAME_OFFSETS[0]);
    pae(b);
    b.stop_cr4(Mode::Paging32, s.pd_sh, 0, CR4_PSE);
    pg32(b, true);
}
