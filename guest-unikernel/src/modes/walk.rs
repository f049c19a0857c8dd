//! The mode walk: real -> protected (no paging) -> 32-bit paging -> PAE ->
//! long mode (own CR3) -> PAE -> 32-bit paging -> real, twice, in one run
//! of the engine, with a probe program at every stop and the expected
//! outcome of every probe.
//!
//! The expectations follow from [`Space`] and from the state the walk
//! itself changes (tokens written in one mode and read in the next, page
//! table entries edited from another mode), which the builder tracks as it
//! emits the ops, so that building the program twice (once to encode it,
//! once to judge the results) gives the same ops and expectations.

use super::probe::{pf_error, Expect, Op};
use super::space::{pat32, pat64, Space, EDIT_VA, HIGH_VA, LARGE_VA, UNMAPPED_VA, WIN};
use super::{layout, paging, Mode};
use crate::regs::{
    CR0_PE, CR0_PG, CR0_WP, CR4_OSFXSR, CR4_OSXMMEXCPT, CR4_PAE, CR4_PSE, EFER_LMA, EFER_LME, MSR_EFER,
};

/// The stops of one walk, in order, with the name of their check.
pub const STOPS: [(Mode, &str); 8] = [
    (Mode::Real, "real"),
    (Mode::Prot, "prot"),
    (Mode::Paging32, "pg32"),
    (Mode::Pae, "pae"),
    (Mode::Long, "long"),
    (Mode::Pae, "pae-back"),
    (Mode::Paging32, "pg32-back"),
    (Mode::Real, "real-back"),
];
pub mod named;

/// Programs the engine runs one after the other: the walk, then the named
/// scenarios ([`named`]).
pub const PARTS: usize = 2;
/// How many times the walk is done.
pub const WALKS: usize = 2;
/// Checks that span stops (tags after the per-stop ones): their full
/// check names.
pub const EXTRA: [&str; 18] = [
    "modes/edit-from-long",
    "modes/edit-from-pg32",
    "modes/pae-pdpte-cached",
    "modes/pae-pdpte-reserved",
    "modes/pae-pdpte-not-present",
    "modes/cr0-wp",
    "modes/same-gfn",
    "pg32/pt-quadrants",
    "pg32/pd-quadrants",
    "pg32/pse-4m",
    "pae/large-2m",
    "modes/low-frames",
    "pae/pdpte-cr3-align",
    "pg32/global-pages",
    "pae/global-pages",
    "pg32/no-pse",
    "modes/same-gfn-pt32-pae",
    "modes/same-gfn-pd32-pae",
];
/// Number of tags: one per stop of each walk, then [`EXTRA`].
pub const TAGS: usize = WALKS * STOPS.len() + EXTRA.len();
/// Tag of [`EXTRA`] entry `i`.
pub const fn extra(i: usize) -> usize {
    WALKS * STOPS.len() + i
}
const EDIT_FROM_LONG: usize = extra(0);
const EDIT_FROM_PG32: usize = extra(1);
const PDPTE_CACHED: usize = extra(2);
const PDPTE_RESERVED: usize = extra(3);
const PDPTE_NOT_PRESENT: usize = extra(4);
const WP_TOGGLE: usize = extra(5);

/// The control registers a stop loads, in the order the SDM gives for its
/// mode (the engine loads CR4, then CR3, then CR0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StopRegs {
    /// The mode.
    pub mode: Mode,
    /// CR0 (for real mode: CR0 once PE is cleared).
    pub cr0: u32,
    /// CR3 (paged modes).
    pub cr3: u32,
    /// CR4.
    pub cr4: u32,
}

/// One element of the program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Item {
    /// A new stop; the ops that follow run in it.
    Stop(StopRegs),
    /// An op, the check it belongs to, and what it must do.
    Op(usize, Op, Expect),
}

/// What the walk needs from the machine besides the frames.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Env {
    /// CR0 in long mode before the walk (PE, MP, ET, NE ... are kept).
    pub cr0: u64,
    /// CR4 before the walk (OSFXSR and OSXMMEXCPT are kept).
    pub cr4: u64,
    /// The 32-bit word at physical 0x10_0000 (the guest image's first
    /// bytes), which real mode reads as FFFF:0010.
    pub a20_word: u32,
    /// Deliberately wrong expectation in walk 1's pg32 stop (the
    /// `modes_break=1` self-test of the failure report).
    pub broken: bool,
}

/// The registers of a stop in `mode`.
pub fn regs(s: &Space, env: &Env, mode: Mode) -> StopRegs {
    let base0 = env.cr0 & !(CR0_PG | CR0_WP) | CR0_PE;
    let base4 = env.cr4 & (CR4_OSFXSR | CR4_OSXMMEXCPT);
    // Paged modes set CR0.WP so that supervisor writes to read-only pages
    // fault (SDM Vol. 3A 4.6.1).
    let paged = base0 | CR0_PG | CR0_WP;
    let (c0, c3, c4) = match mode {
        Mode::Real => (env.cr0 & !(CR0_PG | CR0_PE | CR0_WP), 0, base4),
        Mode::Prot => (base0, 0, base4),
        Mode::Paging32 => (paged, s.pd32, base4 | CR4_PSE),
        Mode::Pae => (paged, s.pdpt, base4 | CR4_PAE),
        Mode::Long => (paged, s.pml4, base4 | CR4_PAE),
    };
    StopRegs { mode, cr0: c0 as u32, cr3: c3 as u32, cr4: c4 as u32 }
}

/// The builder's view of what the walk has changed so far.
#[derive(Clone, Copy, Debug, Default)]
struct State {
    /// The 32-bit PDE of EDIT_VA points at the window's PT (edited from long mode).
    pd32_edited: bool,
    /// The PAE PDE of EDIT_VA points at the window's PT (edited from 32-bit mode).
    pae_edited: bool,
}

/// The token a walk writes into d0 + 0x100 in protected mode.
pub const fn token(walk: usize) -> u32 {
    0x70CE_0000 | walk as u32
}

/// The real-mode data word at `addr` (see [`real_data`]).
pub const fn real_word(addr: u64) -> u32 {
    (addr as u32).wrapping_mul(0x9E37_79B9) ^ 0x5245_414C
}

/// The real-mode data area's bytes.
pub fn real_data() -> [u8; layout::REAL_DATA_LEN as usize] {
    let mut b = [0u8; layout::REAL_DATA_LEN as usize];
    for (i, w) in b.chunks_exact_mut(4).enumerate() {
        w.copy_from_slice(&real_word(layout::REAL_DATA + 4 * i as u64).to_le_bytes());
    }
    b
}

/// Emits program `part` (`0..PARTS`): 0 is both walks, 1 the named
/// scenarios.
pub fn program(s: &Space, env: &Env, part: usize, emit: &mut dyn FnMut(Item)) {
    if part == 1 {
        return named::program(s, env, emit);
    }
    let mut st = State::default();
    for w in 0..WALKS {
        for (i, (mode, _)) in STOPS.iter().enumerate() {
            let tag = w * STOPS.len() + i;
            emit(Item::Stop(regs(s, env, *mode)));
            let op = &mut |t: usize, op: Op, e: Expect| emit(Item::Op(t, op, e));
            match (*mode, i) {
                (Mode::Real, _) => real(env, w, tag, op),
                (Mode::Prot, _) => prot(s, w, tag, op),
                (Mode::Paging32, 2) => {
                    identity(s, env, *mode, tag, op);
                    translation(s, w, tag, op, env.broken && w == 0);
                    // The baseline of the edit made later from long mode.
                    op(EDIT_FROM_LONG, Op::Read32 { seg: 0, addr: EDIT_VA }, edit_expect(s, st.pd32_edited));
                }
                (Mode::Paging32, _) => {
                    identity(s, env, *mode, tag, op);
                    translation(s, w, tag, op, false);
                    write_protect(s, env, *mode, w, op);
                    pg32_back(s, &mut st, op);
                }
                (Mode::Pae, 3) => {
                    identity(s, env, *mode, tag, op);
                    translation(s, w, tag, op, false);
                    pae_edit_seen(s, &mut st, op);
                    pdpte(s, op);
                }
                (Mode::Pae, _) => {
                    identity(s, env, *mode, tag, op);
                    translation(s, w, tag, op, false);
                    write_protect(s, env, *mode, w, op);
                }
                (Mode::Long, _) => {
                    identity(s, env, *mode, tag, op);
                    translation(s, w, tag, op, false);
                    long_only(s, tag, op);
                    // SDM Vol. 3A 4.3: the 32-bit PD is ordinary memory here.
                    let pde = s.pd32 + 4 * (EDIT_VA >> 22);
                    let edited = paging::pde32_table(s.pt32_win, paging::KRW);
                    op(EDIT_FROM_LONG, Op::Write32 { seg: 0, addr: pde, value: edited }, Expect::Done);
                    op(EDIT_FROM_LONG, Op::Read32 { seg: 0, addr: pde }, Expect::Value(u64::from(edited)));
                    st.pd32_edited = true;
                }
            }
        }
    }
}

/// What EDIT_VA reads: d0's first word once its PDE points at the
/// window's PT, d2's before.
fn edit_expect(s: &Space, edited: bool) -> Expect {
    Expect::Value(pat32(if edited { s.d0 } else { s.d2 }))
}

/// Real mode (SDM Vol. 3A 21.1.1): linear = segment * 16 + offset, so
/// different segment:offset pairs reach the same byte; with A20 enabled
/// (Multiboot 1 specification 3.2 requires it) FFFF:0010 is 0x10_0000.
fn real(env: &Env, w: usize, tag: usize, op: &mut dyn FnMut(usize, Op, Expect)) {
    let base = layout::REAL_DATA;
    let v = |a: u64| Expect::Value(u64::from(real_word(a)));
    op(tag, Op::ReadCr0, Expect::Masked { mask: CR0_PE | CR0_PG | CR0_WP, want: 0 });
    // Delivered through the IVT the engine loaded with LIDT (SDM Vol. 3A 21.1.4).
    op(tag, Op::Ud2, Expect::ud());
    op(tag, Op::Read32 { seg: 0, addr: base }, v(base));
    op(tag, Op::Read32 { seg: (base >> 4) as u16, addr: 0 }, v(base));
    op(tag, Op::Read32 { seg: (base >> 4) as u16 - 1, addr: 0x10 }, v(base));
    op(tag, Op::Read32 { seg: (base >> 4) as u16 + 0x10, addr: 0x3c }, v(base + 0x13c));
    let t = token(w) ^ 0x0E00_0000;
    op(tag, Op::Write32 { seg: (base >> 4) as u16, addr: 0x208, value: t }, Expect::Done);
    op(tag, Op::Read32 { seg: 0, addr: base + 0x208 }, Expect::Value(u64::from(t)));
    op(tag, Op::Write32 { seg: 0, addr: base + 0x208, value: real_word(base + 0x208) }, Expect::Done);
    op(tag, Op::Read32 { seg: 0xFFFF, addr: 0x10 }, Expect::Value(u64::from(env.a20_word)));
}

/// Protected mode without paging: linear = physical (SDM Vol. 3A 3.4).
fn prot(s: &Space, w: usize, tag: usize, op: &mut dyn FnMut(usize, Op, Expect)) {
    op(tag, Op::ReadCr0, Expect::Masked { mask: CR0_PE | CR0_PG | CR0_WP, want: CR0_PE });
    op(tag, Op::Rdmsr { msr: MSR_EFER }, Expect::Masked { mask: EFER_LME | EFER_LMA, want: 0 });
    op(tag, Op::Ud2, Expect::ud());
    op(tag, Op::Read32 { seg: 0, addr: layout::REAL_DATA }, Expect::Value(u64::from(real_word(layout::REAL_DATA))));
    op(tag, Op::Read32 { seg: 0, addr: s.d0 }, Expect::Value(pat32(s.d0)));
    op(tag, Op::Read64 { addr: s.large + 0x20_0000 }, Expect::Value(pat64(s.large + 0x20_0000)));
    // The page tables are plain memory; after walk 1 used PDE 256 the
    // processor has set its accessed flag (SDM Vol. 3A 4.8).
    let a = if w == 0 { 0 } else { paging::A };
    let pde = u64::from(paging::pde32_table(s.pt32_win, paging::KRW)) | a;
    op(tag, Op::Read32 { seg: 0, addr: s.pd32 + 4 * 256 }, Expect::Value(pde));
    op(tag, Op::Write32 { seg: 0, addr: s.d0 + 0x100, value: token(w) }, Expect::Done);
    op(tag, Op::Read32 { seg: 0, addr: s.d0 + 0x100 }, Expect::Value(u64::from(token(w))));
}

/// The mode's own control state: CR0/CR4/CR3 as loaded, EFER.LMA.
fn identity(s: &Space, env: &Env, mode: Mode, tag: usize, op: &mut dyn FnMut(usize, Op, Expect)) {
    let r = regs(s, env, mode);
    let paged = CR0_PE | CR0_PG | CR0_WP;
    op(tag, Op::ReadCr0, Expect::Masked { mask: paged, want: paged });
    op(tag, Op::ReadCr3, Expect::Value(u64::from(r.cr3)));
    op(tag, Op::ReadCr4, Expect::Masked { mask: CR4_PSE | CR4_PAE, want: u64::from(r.cr4) & (CR4_PSE | CR4_PAE) });
    let lma = if mode == Mode::Long { EFER_LME | EFER_LMA } else { 0 };
    op(tag, Op::Rdmsr { msr: MSR_EFER }, Expect::Masked { mask: EFER_LME | EFER_LMA, want: lma });
    op(tag, Op::Ud2, Expect::ud());
}

/// The window through the mode's tables (SDM Vol. 3A 4.3, 4.4.2, 4.5.4),
/// and #PF error codes and CR2 (SDM Vol. 3A 4.7).
fn translation(s: &Space, w: usize, tag: usize, op: &mut dyn FnMut(usize, Op, Expect), broken: bool) {
    let r = |addr| Op::Read32 { seg: 0, addr };
    let val = |v: u64| Expect::Value(v);
    op(tag, r(layout::REAL_DATA), val(u64::from(real_word(layout::REAL_DATA))));
    op(tag, r(WIN), val(pat32(s.d0) ^ u64::from(broken)));
    op(tag, r(WIN + 0xffc), val(pat32(s.d0 + 0xffc)));
    op(tag, Op::Read64 { addr: WIN + 0x7f8 }, val(pat64(s.d0 + 0x7f8)));
    op(tag, r(WIN + 0x100), val(u64::from(token(w))));
    op(tag, r(WIN + 0x1000), val(pat32(s.d1)));
    let ro = WIN + 0x1010;
    op(tag, Op::Write32 { seg: 0, addr: ro, value: 1 }, Expect::pf(pf_error(true, true, false, false), ro));
    let np = WIN + 0x2010;
    op(tag, r(np), Expect::pf(pf_error(false, false, false, false), np));
    op(tag, Op::Write32 { seg: 0, addr: np, value: 1 }, Expect::pf(pf_error(false, true, false, false), np));
    let alias = 0xA11A_0000 | w as u32;
    op(tag, Op::Write32 { seg: 0, addr: WIN + 0x3104, value: alias }, Expect::Done);
    op(tag, r(WIN + 0x104), val(u64::from(alias)));
    op(tag, Op::Fetch { addr: WIN + 0x4000 }, Expect::Done);
    // No NX here (EFER.NXE = 0), so I/D stays 0 (SDM Vol. 3A 4.7).
    op(tag, Op::Fetch { addr: WIN + 0x2000 }, Expect::pf(pf_error(false, false, false, false), WIN + 0x2000));
    op(tag, r(LARGE_VA), val(pat32(s.large)));
    op(tag, r(LARGE_VA + 0x1f_fffc), val(pat32(s.large + 0x1f_fffc)));
    op(tag, r(LARGE_VA + 0x20_0000), val(pat32(s.large + 0x20_0000)));
    op(tag, Op::Read64 { addr: LARGE_VA + 0x3f_fff8 }, val(pat64(s.large + 0x3f_fff8)));
    op(tag, r(UNMAPPED_VA + 8), Expect::pf(0, UNMAPPED_VA + 8));
}

/// 4-level paging only: a page above 4 GiB, and a non-canonical address,
/// which is #GP(0) and not #PF (SDM Vol. 3A 3.3.7.1, 6.15 "Interrupt 13").
fn long_only(s: &Space, tag: usize, op: &mut dyn FnMut(usize, Op, Expect)) {
    op(tag, Op::Read64 { addr: HIGH_VA + 0x7f8 }, Expect::Value(pat64(s.d3 + 0x7f8)));
    op(tag, Op::Read32 { seg: 0, addr: 0x0000_8000_0000_0000 }, Expect::gp0());
}

/// CR0.WP (SDM Vol. 3A 4.6.1): with WP = 0 a supervisor write to a
/// read-only page succeeds; with WP = 1 it is a #PF with P and W/R set.
/// The written word is not one of the pattern words.
fn write_protect(s: &Space, env: &Env, mode: Mode, w: usize, op: &mut dyn FnMut(usize, Op, Expect)) {
    let cr0 = u64::from(regs(s, env, mode).cr0);
    let (va, v) = (WIN + 0x1020, 0x5770_0000 | (w as u32) << 8 | mode as u32);
    op(WP_TOGGLE, Op::WriteCr0 { value: (cr0 & !CR0_WP) as u32 }, Expect::Value(cr0 & !CR0_WP));
    op(WP_TOGGLE, Op::Write32 { seg: 0, addr: va, value: v }, Expect::Done);
    op(WP_TOGGLE, Op::Read32 { seg: 0, addr: va }, Expect::Value(u64::from(v)));
    op(WP_TOGGLE, Op::WriteCr0 { value: cr0 as u32 }, Expect::Value(cr0));
    op(WP_TOGGLE, Op::Write32 { seg: 0, addr: va, value: !v }, Expect::pf(pf_error(true, true, false, false), va));
    op(WP_TOGGLE, Op::Read32 { seg: 0, addr: va }, Expect::Value(u64::from(v)));
}

/// Back in 32-bit paging after long mode: the PDE edited from long mode is
/// in effect (CR3 was loaded on the way in, SDM Vol. 3A 4.10.4.1); undo
/// it, INVLPG, and the old mapping is back. Then edit the PAE PD for the
/// next PAE stop.
fn pg32_back(s: &Space, st: &mut State, op: &mut dyn FnMut(usize, Op, Expect)) {
    let r = Op::Read32 { seg: 0, addr: EDIT_VA };
    op(EDIT_FROM_LONG, r, edit_expect(s, st.pd32_edited));
    let pde = s.pd32 + 4 * (EDIT_VA >> 22);
    op(EDIT_FROM_LONG, Op::Write32 { seg: 0, addr: pde, value: paging::pde32_table(s.pt32_e, paging::KRW) }, Expect::Done);
    op(EDIT_FROM_LONG, Op::Invlpg { addr: EDIT_VA }, Expect::Done);
    st.pd32_edited = false;
    op(EDIT_FROM_LONG, r, edit_expect(s, false));
    let pae_pde = s.pd_win + 8 * ((EDIT_VA >> 21) & 0x1ff);
    let value = paging::entry64(s.pt_win, paging::KRW) as u32;
    op(EDIT_FROM_PG32, Op::Write32 { seg: 0, addr: pae_pde, value }, Expect::Done);
    st.pae_edited = true;
}

/// First PAE stop of a walk: the PAE PDE edited from 32-bit mode (in the
/// previous walk) is in effect; undo it.
fn pae_edit_seen(s: &Space, st: &mut State, op: &mut dyn FnMut(usize, Op, Expect)) {
    let r = Op::Read32 { seg: 0, addr: EDIT_VA };
    op(EDIT_FROM_PG32, r, edit_expect(s, st.pae_edited));
    if st.pae_edited {
        let pae_pde = s.pd_win + 8 * ((EDIT_VA >> 21) & 0x1ff);
        let value = paging::entry64(s.pt_e, paging::KRW) as u32;
        op(EDIT_FROM_PG32, Op::Write32 { seg: 0, addr: pae_pde, value }, Expect::Done);
        op(EDIT_FROM_PG32, Op::Invlpg { addr: EDIT_VA }, Expect::Done);
        st.pae_edited = false;
        op(EDIT_FROM_PG32, r, edit_expect(s, false));
    }
}

/// PAE PDPTEs (SDM Vol. 3A 4.4.1): loaded into the PDPTE registers at MOV
/// CR3; a later change in memory does not affect translation (INVLPG does
/// not reload them, SDM Vol. 3A 4.10.4.1) until the next MOV CR3; a present
/// PDPTE with a reserved bit makes MOV CR3 raise #GP(0) and load nothing;
/// a non-present PDPTE gives #PF.
fn pdpte(s: &Space, op: &mut dyn FnMut(usize, Op, Expect)) {
    let cr3 = s.pdpt as u32;
    let r = Op::Read32 { seg: 0, addr: WIN };
    let wr = |i: u64, v: u64| Op::Write32 { seg: 0, addr: s.pdpt + 8 * i, value: v as u32 };
    op(PDPTE_CACHED, r, Expect::Value(pat32(s.d0)));
    op(PDPTE_CACHED, wr(1, paging::pdpte_pae(s.pd_alt)), Expect::Done);
    op(PDPTE_CACHED, Op::Invlpg { addr: WIN }, Expect::Done);
    op(PDPTE_CACHED, r, Expect::Value(pat32(s.d0)));
    op(PDPTE_CACHED, Op::MovCr3 { value: cr3 }, Expect::Value(u64::from(cr3)));
    op(PDPTE_CACHED, r, Expect::Value(pat32(s.d2)));
    op(PDPTE_CACHED, wr(1, paging::pdpte_pae(s.pd_win)), Expect::Done);
    op(PDPTE_CACHED, Op::MovCr3 { value: cr3 }, Expect::Value(u64::from(cr3)));
    op(PDPTE_CACHED, r, Expect::Value(pat32(s.d0)));

    // Bit 1 (R/W in other entries) is reserved in a PAE PDPTE.
    op(PDPTE_RESERVED, wr(2, paging::pdpte_pae(s.pd_low) | paging::RW), Expect::Done);
    op(PDPTE_RESERVED, Op::MovCr3 { value: cr3 }, Expect::gp0());
    op(PDPTE_RESERVED, Op::ReadCr3, Expect::Value(u64::from(cr3)));
    op(PDPTE_RESERVED, r, Expect::Value(pat32(s.d0)));
    op(PDPTE_RESERVED, wr(2, paging::pdpte_pae(s.pd_low)), Expect::Done);
    op(PDPTE_RESERVED, Op::MovCr3 { value: cr3 }, Expect::Value(u64::from(cr3)));
    // PDPTE 2 (linear 2..3 GiB) is the identity PD again.
    let again = 0x8000_0000 + layout::REAL_DATA;
    op(PDPTE_RESERVED, Op::Read32 { seg: 0, addr: again }, Expect::Value(u64::from(real_word(layout::REAL_DATA))));

    op(PDPTE_NOT_PRESENT, Op::Read32 { seg: 0, addr: UNMAPPED_VA + 0x123 * 4 }, Expect::pf(0, UNMAPPED_VA + 0x123 * 4));
    op(PDPTE_NOT_PRESENT, Op::Write32 { seg: 0, addr: UNMAPPED_VA, value: 0 }, Expect::pf(pf_error(false, true, false, false), UNMAPPED_VA));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_shape() {
        let (s, _) = crate::modes::space::tests::built();
        let env = Env { cr0: 0x8000_0033, cr4: 0x620, ..Env::default() };
        let mut per_tag = [0u32; TAGS];
        let mut stops = Vec::new();
        for part in 0..PARTS {
            let (mut n_stops, mut ops) = (0, 0);
            program(&s, &env, part, &mut |item| match item {
                Item::Stop(r) => {
                    n_stops += 1;
                    if part == 0 {
                        stops.push(r);
                    }
                }
                Item::Op(t, ..) => {
                    ops += 1;
                    per_tag[t] += 1;
                }
            });
            assert!(n_stops <= layout::MAX_STOPS && ops <= layout::MAX_OPS, "part {part}: {n_stops} stops, {ops} ops");
        }
        assert_eq!(stops.len(), WALKS * STOPS.len());
        assert!(per_tag.iter().all(|n| *n > 0), "every check has probes: {per_tag:?}");
        // 32-bit paging -> PAE and PAE -> 32-bit paging are direct (through
        // the hub, not through long mode); real -> protected likewise.
        let modes: Vec<_> = stops.iter().map(|r| r.mode).collect();
        assert!(modes.windows(2).any(|w| w == [Mode::Paging32, Mode::Pae]));
        assert!(modes.windows(2).any(|w| w == [Mode::Pae, Mode::Paging32]));
        assert!(modes.windows(2).any(|w| w == [Mode::Real, Mode::Prot]));
        let pae = stops.iter().find(|r| r.mode == Mode::Pae).unwrap();
        assert_eq!((pae.cr0, pae.cr3 as u64, pae.cr4), (0x8001_0033, s.pdpt, 0x620));
        let real = stops[0];
        assert_eq!((real.cr0, real.cr4), (0x32, 0x600), "PE, PG and WP clear; SSE bits kept");
    }
}
