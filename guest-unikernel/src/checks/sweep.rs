//! The access sweep's checks ([`crate::sweep`]): `pg32/access-sweep` and
//! `pae/access-sweep` through the mode-switch engine at CPL 0 (see
//! `legacy`), and `long/access-sweep` in 4-level paging through the
//! long-mode probe harness ([`crate::longcpu`]), described here.
//!
//! The check builds its own tables in scratch frames: two PML4s that share
//! everything but the U flag of entry 0, the identity map of the low 1 GiB
//! (2 MiB pages; U=1 in one, so the ring-3 trampoline runs; U=0 in the
//! other, loaded while CR4.SMEP or CR4.SMAP is set, so that the guest's own
//! code, stacks and tables stay supervisor pages), and PML4 entry 1 leading
//! to the sweep's page directory. Case `i` of a batch owns PDE `i` and PTE
//! `i` of one shared page table and is probed at `T + i * 2 MiB + i * 4 KiB`
//! (small: a 4 KiB data frame) or `T + i * 2 MiB` (large: a 2 MiB frame).
//!
//! Per batch: write the entries, set CR0.WP, EFER.NXE, CR4.SMEP/SMAP, load
//! CR3 (which flushes every translation and paging-structure cache entry of
//! these non-global pages, SDM Vol. 3A 4.10.4.1), probe each case once, and
//! read back its PDE and PTE: the outcome (value, or #PF with error code and
//! CR2) and the A/D flags afterwards must be what [`crate::sweep::model`]
//! says.
//!
//! CPL 3 cases run only with SMEP=SMAP=0: the trampoline's ring-3 code and
//! stack share pages with the guest's CPL-0 code and data, which SMEP/SMAP
//! would then forbid at CPL 0. SMEP and SMAP restrict supervisor-mode
//! accesses only (SDM Vol. 3A 4.6.1), which the CPL 0 cases cover.

use super::{Check, Ctx};
use crate::longcpu::{Cpl, Fault, LongCpu, Op, Probe, PF};
use crate::machine::Machine;
use crate::memmap::{Exclusions, MemMap};
use crate::modes::paging::{entry64, pde_2m, Frames, A, D, P, RW, US};
use crate::modes::space::IDENTITY_END;
use crate::pattern::pattern;
use crate::report::Detail;
use crate::sweep::model::{ad_of, ec, entry_bits, f, Access, After, Case, Mode};
use crate::sweep::{self, Features, Setting};
use crate::xlate::{Failure, Paging, Reporter};
use core::fmt::{self, Write};
use shared::Outcome;

mod legacy;

/// The sweep's checks: one per paging mode.
pub static CHECKS: &[Check] = &[
    Check { name: "pg32/access-sweep", run: pg32_sweep },
    Check { name: "pae/access-sweep", run: pae_sweep },
    Check { name: "long/access-sweep", run: long_sweep },
];

/// The sweep in 32-bit paging (CR4.PSE=1: 4 KiB and 4 MiB pages) at CPL
/// 0, through the mode-switch engine: PDE/PTE U/W/A/D/PS x CR0.WP x
/// CR4.SMEP/SMAP x read/write/fetch, each outcome (value, or #PF error
/// code and CR2) and the A/D flags afterwards as [`crate::sweep::model`]
/// says (SDM Vol. 3A 4.3, 4.6.1, 4.7: no XD bit, I/D only with SMEP; 4.8).
fn pg32_sweep(ctx: &mut Ctx<'_>, d: &mut Detail) -> Outcome {
    legacy::run(ctx, d, Mode::Pg32)
}

/// The sweep in PAE paging (2 MiB and 4 KiB pages) at CPL 0, through the
/// mode-switch engine: PDE/PTE U/W/XD/A/D/PS x CR0.WP x EFER.NXE x
/// CR4.SMEP/SMAP x read/write/fetch against [`crate::sweep::model`] (SDM
/// Vol. 3A 4.4.2, 4.6.1, 4.7, 4.8; XD with NXE=0 is a reserved bit).
fn pae_sweep(ctx: &mut Ctx<'_>, d: &mut Detail) -> Outcome {
    legacy::run(ctx, d, Mode::Pae)
}

/// 2 MiB.
const M2: u64 = 1 << 21;
/// The sweep's linear base: PML4 entry 1.
const T: u64 = 1 << 39;
/// Where a data frame holds `ret` (0xC3) for fetches.
const RET_OFF: u64 = 0x800;
/// Where write probes store.
const WR_OFF: u64 = 0x10;
/// Seed of the data frames' marker words ("SWEEPACC").
const SEED: u64 = 0x5357_4545_5041_4343;
/// Cases per batch: one PDE each.
const BATCH: usize = 512;
/// Mismatches written to the console in full.
const LOGGED: u32 = 8;
use crate::regs::{CR0_WP, CR4_SMAP, CR4_SMEP, EFER_NXE};

/// Why the sweeps skip with `light=1`.
const LIGHT_SKIP: &str = "light=1 (the MMU-audit run): hundreds of audited MMU exits and the shadow pages they leave are left out of this run";

/// The marker word at offset 0 of data frame `pa`.
const fn marker(pa: u64) -> u64 {
    pattern(pa, SEED)
}

/// The sweep's frames and the machine state to restore.
struct Rig<'m> {
    m: &'m mut dyn Machine,
    /// PML4 with the identity map user-accessible, and supervisor-only.
    pml4_u: u64,
    pml4_s: u64,
    pd: u64,
    pt: u64,
    small: u64,
    large: u64,
    boot_cr3: u64,
    cr0: u64,
    efer: u64,
    refused: Option<u64>,
    /// Our tables are loaded (and possibly CR0.WP/NXE/SMEP/SMAP changed).
    active: bool,
}

impl Rig<'_> {
    fn cpu(&mut self) -> &mut dyn LongCpu {
        self.m.long_cpu().expect("checked before building the rig")
    }

    fn w(&mut self, pa: u64, v: u64) {
        if !self.m.scratch_write(pa, v) {
            self.refused.get_or_insert(pa);
        }
    }

    fn table(&mut self, f: &mut Frames) -> u64 {
        let Some(t) = f.alloc() else { return 0 };
        for i in 0..512 {
            self.w(t + 8 * i, 0);
        }
        t
    }

    /// Loads the setting's control bits and our CR3. SMEP/SMAP are cleared
    /// before the user-accessible identity map is loaded and set only after
    /// the supervisor-only one is.
    fn enter(&mut self, s: Setting) -> Result<(), Fault> {
        let (u, sup) = (self.pml4_u, self.pml4_s);
        let smx = s.smep || s.smap;
        self.cpu().set_smep_smap(false, false);
        self.cpu().set_cr0_wp(s.wp);
        self.cpu().set_efer_nxe(s.nxe);
        self.active = true;
        self.cpu().probe(Op::MovCr3, if smx { sup } else { u }, Cpl::Sup)?;
        if smx {
            self.cpu().set_smep_smap(s.smep, s.smap);
            // Flush again with the new CR4 (MOV to CR4 need not flush).
            self.cpu().probe(Op::MovCr3, sup, Cpl::Sup)?;
        }
        Ok(())
    }

    /// The boot CR3, CR0.WP, EFER.NXE and CR4.SMEP/SMAP as they were.
    fn leave(&mut self) {
        if !self.active {
            return;
        }
        self.active = false;
        let (cr3, cr0, efer) = (self.boot_cr3, self.cr0, self.efer);
        // SMEP/SMAP were clear at entry (checked).
        let cpu = self.cpu();
        cpu.set_smep_smap(false, false);
        let _ = cpu.probe(Op::MovCr3, cr3, Cpl::Sup);
        cpu.set_cr0_wp(cr0 & CR0_WP != 0);
        cpu.set_efer_nxe(efer & EFER_NXE != 0);
    }
}

impl Drop for Rig<'_> {
    fn drop(&mut self) {
        self.leave();
    }
}

/// One case's observation.
#[derive(Clone, Copy)]
struct Seen {
    got: Probe,
    pde: u8,
    pte: u8,
    /// The linear address probed.
    addr: u64,
}

/// A mismatch, written in full: the case, what the model wants, what happened.
struct Mismatch<'a> {
    case: &'a Case,
    want: Option<u32>,
    want_pde: After,
    want_pte: After,
    seen: &'a Seen,
}

impl Mismatch<'_> {
    /// The access of the case: `read`, `write` or `fetch`.
    fn kind(&self) -> &'static str {
        match self.case.acc {
            Access::Read => "read",
            Access::Write => "write",
            Access::Fetch => "fetch",
        }
    }

    /// The report of this mismatch ([`crate::xlate`]): the case, the model's
    /// outcome and A/D flags, what happened.
    fn failure(&self) -> (MmWant<'_>, MmGot<'_>) {
        (MmWant(self), MmGot(self))
    }
}

/// `A=1 D=?`: 1 must be set, 0 must be clear, ? not determined; D only
/// for a leaf (the second field).
struct Want(After, bool);
impl fmt::Display for Want {
    fn fmt(&self, fm: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = |bit: u8| if self.0.set & bit != 0 { '1' } else if self.0.clear & bit != 0 { '0' } else { '?' };
        write!(fm, "A={}", b(f::A))?;
        if self.1 {
            write!(fm, " D={}", b(f::D))?;
        }
        Ok(())
    }
}
/// The A/D flags seen (D only for a leaf).
struct Has(u8, bool);
impl fmt::Display for Has {
    fn fmt(&self, fm: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(fm, "A={}", u8::from(self.0 & f::A != 0))?;
        if self.1 {
            write!(fm, " D={}", u8::from(self.0 & f::D != 0))?;
        }
        Ok(())
    }
}

/// What the model wants of a mismatching case: `ok` or `#PF ec=E`, then
/// the A/D flags of its PDE (and PTE).
struct MmWant<'a>(&'a Mismatch<'a>);
impl fmt::Display for MmWant<'_> {
    fn fmt(&self, fm: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        match m.want {
            None => write!(fm, "ok")?,
            Some(e) => write!(fm, "#PF ec={e:#x}")?,
        }
        let large = m.case.large();
        write!(fm, " pde {}", Want(m.want_pde, large))?;
        if !large {
            write!(fm, " pte {}", Want(m.want_pte, true))?;
        }
        Ok(())
    }
}

/// What a mismatching case did, in the same words.
struct MmGot<'a>(&'a Mismatch<'a>);
impl fmt::Display for MmGot<'_> {
    fn fmt(&self, fm: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        match m.seen.got {
            Ok(v) => write!(fm, "ok {v:#x}")?,
            Err(x) => write!(fm, "{x}")?,
        }
        let large = m.case.large();
        write!(fm, " pde {}", Has(m.seen.pde, large))?;
        if !large {
            write!(fm, " pte {}", Has(m.seen.pte, true))?;
        }
        Ok(())
    }
}

impl fmt::Display for Mismatch<'_> {
    fn fmt(&self, fm: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (want, got) = self.failure();
        write!(fm, "{}: want {want}, got {got}", self.case)
    }
}

/// The sweep in 4-level paging: every case's outcome and A/D flags against
/// [`crate::sweep::model`] (SDM Vol. 3A 4.6.1 access rights with CR0.WP,
/// EFER.NXE, CR4.SMEP and CR4.SMAP; 4.7 the #PF error code, CR2 = the
/// address; 4.8 A set in the entries a completed access used, D in the
/// leaf of a completed write, D untouched otherwise). `sweep=full` runs
/// every case, the default a fixed sample covering every setting and every
/// value of each dimension. QEMU TCG reports reserved-bit faults with P=0
/// (see `long/hostile/rsvd-bits`); there those cases expect P=0.
fn long_sweep(ctx: &mut Ctx<'_>, d: &mut Detail) -> Outcome {
    let size = sweep::Size::of(ctx.config.sweep_full);
    if ctx.config.light {
        let _ = write!(d, "{LIGHT_SKIP}");
        return Outcome::Skip;
    }
    let tcg = ctx.signature.is_tcg();
    let Some(map) = ctx.map else {
        let _ = write!(d, "no validated memory map (see boot/memory-map)");
        return Outcome::Fail;
    };
    let image = ctx.m.image();
    let m = &mut *ctx.m;
    let (nx, l7) = (super::has_nx(m), super::cpuid7_ebx(m));
    let (cr0, efer, cr4) = (m.cr0(), m.efer(), m.cr4());
    let Some(cpu) = m.long_cpu() else {
        let _ = write!(d, "no long-mode probe harness on this machine");
        return Outcome::Skip;
    };
    if cr4 & (CR4_SMEP | CR4_SMAP) != 0 {
        let _ = write!(d, "CR4.SMEP/SMAP already set at entry ({cr4:#x})");
        return Outcome::Fail;
    }
    // The harness can set SMEP/SMAP (clearing both is always harmless).
    let smx = cpu.set_smep_smap(false, false);
    let boot_cr3 = cpu.cr3();
    let feat = Features { nx, smep: smx && l7 & (1 << 7) != 0, smap: smx && l7 & (1 << 20) != 0, user: true, user_with_smx: false };

    let mut fr = frames(&map, &ctx.exclusions, image.end, 2);
    let mut rig = Rig {
        m,
        pml4_u: 0,
        pml4_s: 0,
        pd: 0,
        pt: 0,
        small: 0,
        large: 0,
        boot_cr3,
        cr0,
        efer,
        refused: None,
        active: false,
    };
    let large = fr.alloc_aligned(M2, M2).unwrap_or(0);
    let (pml4_u, pml4_s, ipdpt, ipd) = (rig.table(&mut fr), rig.table(&mut fr), rig.table(&mut fr), rig.table(&mut fr));
    let (tpdpt, pd, pt, small) = (rig.table(&mut fr), rig.table(&mut fr), rig.table(&mut fr), fr.alloc().unwrap_or(0));
    if [large, pml4_u, pml4_s, ipdpt, ipd, tpdpt, pd, pt, small].contains(&0) {
        let _ = write!(d, "no free frames below {IDENTITY_END:#x}");
        return Outcome::Fail;
    }
    let up = P | RW | US | A;
    for i in 0..512 {
        rig.w(ipd + 8 * i, pde_2m(i * M2, up | D));
    }
    rig.w(ipdpt, entry64(ipd, up));
    rig.w(pml4_u, entry64(ipdpt, up));
    rig.w(pml4_s, entry64(ipdpt, P | RW | A));
    rig.w(pml4_u + 8, entry64(tpdpt, up));
    rig.w(pml4_s + 8, entry64(tpdpt, up));
    rig.w(tpdpt, entry64(pd, up));
    for fr in [small, large] {
        rig.w(fr, marker(fr));
        rig.w(fr + WR_OFF, 0);
        rig.w(fr + RET_OFF, 0xC3);
    }
    if let Some(a) = rig.refused {
        let _ = write!(d, "the machine refused a table write at {a:#x}");
        return Outcome::Fail;
    }
    (rig.pml4_u, rig.pml4_s, rig.pd, rig.pt, rig.small, rig.large) = (pml4_u, pml4_s, pd, pt, small, large);

    let mode = Mode::Long;
    let mut rep = Reporter::for_running(ctx.tally);
    let mut cases = [None::<Case>; BATCH];
    let (mut ran, mut bad, mut first) = (0u32, 0u32, Detail::new());
    let mut setting_no = 0u32;
    let mut err: Option<Fault> = None;
    sweep::settings(mode, feat, |s| {
        let n = setting_no;
        setting_no += 1;
        if err.is_some() {
            return;
        }
        let mut fill = 0;
        let mut flush = |rig: &mut Rig<'_>, cases: &mut [Option<Case>; BATCH], fill: &mut usize| {
            if *fill == 0 || err.is_some() {
                return;
            }
            let r = run_batch(rig, s, &cases[..*fill], tcg, &mut |m, c, want, wp, wt, seen| {
                ran += 1;
                if let Some((want, wp, wt)) = want.map(|w| (w, wp, wt)) {
                    bad += 1;
                    let mm = Mismatch { case: c, want, want_pde: wp, want_pte: wt, seen };
                    if bad == 1 {
                        let _ = write!(first, "{mm}");
                    }
                    if bad <= LOGGED {
                        let _ = writeln!(ctx.out, "guest: long/access-sweep mismatch: {mm}");
                    }
                    // Right after the probe, with the batch's tables loaded.
                    let cr3 = m.long_cpu().map_or(0, |c| c.cr3());
                    let (w, g) = mm.failure();
                    let f = Failure { what: c, la: seen.addr, kind: mm.kind(), cpl: if c.user { 3 } else { 0 }, expected: &w, got: &g };
                    rep.now(m, &mut *ctx.out, &f, Paging::long(cr3));
                }
            });
            if let Err(f) = r {
                err = Some(f);
            }
            *fill = 0;
            cases.iter_mut().for_each(|c| *c = None);
        };
        sweep::inner(mode, n, size, |k| {
            cases[fill] = Some(sweep::case(mode, s, k));
            fill += 1;
            if fill == BATCH {
                flush(&mut rig, &mut cases, &mut fill);
            }
        });
        flush(&mut rig, &mut cases, &mut fill);
    });
    rig.leave();
    let total = sweep::count(mode, feat, sweep::Size::Full);
    let want = sweep::count(mode, feat, size);
    let smx = match (feat.smep, feat.smap) {
        (true, true) => "SMEP+SMAP",
        (true, false) => "SMEP, no SMAP",
        (false, true) => "SMAP, no SMEP",
        (false, false) => "no SMEP/SMAP",
    };
    let kind = size.name();
    if let Some(f) = err {
        let _ = write!(d, "MOV CR3 of the sweep's tables: {f} after {ran} cases");
        return Outcome::Fail;
    }
    if let Some(a) = rig.refused {
        let _ = write!(d, "the machine refused a table write at {a:#x} after {ran} cases");
        return Outcome::Fail;
    }
    if bad > 0 {
        let _ = write!(d, "{bad}/{ran} mismatch; first: {}", first.as_str());
        return Outcome::Fail;
    }
    let nx = if feat.nx { "" } else { ", no NX" };
    let _ = write!(d, "{ran} cases ({kind}; full: {total}), 0 mismatches; {smx}{nx}");
    if ran != want {
        let _ = write!(d, "; expected {want} cases");
        return Outcome::Fail;
    }
    Outcome::Pass
}

/// `e` with bit 63 (XD) as the [`f`] flags `flags` say (the entry
/// encoders keep flags below bit 12 only).
const fn with_xd(e: u64, flags: u8) -> u64 {
    if flags & f::NX != 0 { e | 1 << 63 } else { e }
}

/// Frames for sweep `slot` (0 pg32, 1 pae, 2 long): `[32 + 8 * slot, 40 +
/// 8 * slot)` MiB, away from the frames earlier checks made page tables of
/// (under a shadow MMU every write to one of those is an exit, a slow one
/// with the MMU audit) and from each other; on a machine with less RAM
/// there, from the end of the image.
fn frames(map: &MemMap, excl: &Exclusions, image_end: u64, slot: u64) -> Frames {
    let lo = (32 + 8 * slot) << 20;
    let high = Frames::new(map, excl, lo.max(image_end), (lo + (8 << 20)).min(IDENTITY_END));
    let mut probe = high;
    if probe.alloc_aligned(4 << 20, 4 << 20).is_some() && probe.alloc_aligned(64 << 10, 4096).is_some() {
        high
    } else {
        Frames::new(map, excl, image_end, IDENTITY_END)
    }
}

/// The #PF error code the model gives, as this machine reports it (QEMU
/// TCG: reserved-bit faults with P=0).
fn as_reported(e: u32, tcg: bool) -> u32 {
    if tcg && e & ec::RSVD != 0 { e & !ec::P } else { e }
}

/// Writes the entries of `cases` (case `i`: PDE `i`, PTE `i`), loads the
/// setting, probes each case once and hands each observation to `report`
/// (with the machine, for a report of its own) with the model's
/// expectation when they differ (`None`: as expected).
#[allow(clippy::type_complexity)]
fn run_batch(
    rig: &mut Rig<'_>,
    s: Setting,
    cases: &[Option<Case>],
    tcg: bool,
    report: &mut dyn FnMut(&mut dyn Machine, &Case, Option<Option<u32>>, After, After, &Seen),
) -> Result<(), Fault> {
    let (pd, pt, small, large) = (rig.pd, rig.pt, rig.small, rig.large);
    let va = |i: u64, c: &Case| if c.large() { T + i * M2 } else { T + i * M2 + i * 0x1000 };
    for (i, c) in cases.iter().enumerate() {
        let Some(c) = c else { continue };
        let i = i as u64;
        if c.large() {
            rig.w(pd + 8 * i, with_xd(pde_2m(large, entry_bits(c.pde)), c.pde));
        } else {
            rig.w(pd + 8 * i, with_xd(entry64(pt, entry_bits(c.pde)), c.pde));
            rig.w(pt + 8 * i, with_xd(entry64(small, entry_bits(c.pte)), c.pte));
        }
    }
    rig.enter(s)?;
    let cpl = if s.user { Cpl::User } else { Cpl::Sup };
    for (i, c) in cases.iter().enumerate() {
        let Some(c) = c else { continue };
        let i = i as u64;
        let base = va(i, c);
        let (op, addr) = match c.acc {
            Access::Read => (Op::Read, base),
            Access::Write => (Op::Write(0x5357_0000 | i), base + WR_OFF),
            Access::Fetch => (Op::Fetch, base + RET_OFF),
        };
        let got = rig.cpu().probe(op, addr, cpl);
        let pde = ad_of(rig.m.scratch_read(pd + 8 * i).unwrap_or(0));
        let pte = if c.large() { 0 } else { ad_of(rig.m.scratch_read(pt + 8 * i).unwrap_or(0)) };
        let o = c.outcome();
        let want = o.fault.map(|e| as_reported(e, tcg));
        let frame = if c.large() { large } else { small };
        let ok_access = match (want, got) {
            (None, Ok(v)) => c.acc != Access::Read || v == marker(frame),
            (Some(e), Err(x)) => x.vector == PF && u64::from(e) == x.error_code && x.cr2 == addr,
            _ => false,
        };
        let ok_ad = o.pde.holds(pde) && (c.large() || o.pte.holds(pte));
        let seen = Seen { got, pde, pte, addr };
        report(&mut *rig.m, c, (!(ok_access && ok_ad)).then_some(want), o.pde, o.pte, &seen);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::fake::{Fake, FAKE_INFO};
    use super::super::fake_long::{bug, BUGS};
    use super::*;
    use crate::report::Tally;

    /// A run on a CPU without SMEP/SMAP (CPUID leaf 7 EBX = 0).
    fn run(bugs: u32, words: &str, hv: bool) -> String {
        run_on(bugs, words, hv, |m| m.leaf_7_ebx = 0)
    }

    fn run_on(bugs: u32, words: &str, hv: bool, setup: impl FnOnce(&mut Fake)) -> String {
        BUGS.with(|b| b.set(bugs));
        let line = format!("only=long/access-sweep,pg32/access-sweep,pae/access-sweep {words}");
        let mut m = if hv { Fake::hv(&format!("expect_hv=1 {line}")) } else { Fake::bare(&line) };
        setup(&mut m);
        let (mut out, tally) = (String::new(), Tally::new());
        Ctx::start(&mut m, &mut out, &tally, FAKE_INFO).run_all();
        BUGS.with(|b| b.set(0));
        out
    }

    /// The fake's walker (SDM 4.5-4.8, no SMEP/SMAP) passes the quick and
    /// the full sweep, bare (TCG signature: RSVD faults with P=0) and with
    /// the Quadrant signature (P=1), with each case count reported.
    #[test]
    fn passes_on_the_reference_model() {
        let quick = sweep::count(Mode::Long, Features { nx: true, smep: false, smap: false, user: true, user_with_smx: false }, sweep::Size::Quick);
        let full = sweep::count(Mode::Long, Features { nx: true, smep: false, smap: false, user: true, user_with_smx: false }, sweep::Size::Full);
        assert_eq!((quick, full), (768, 13056));
        for hv in [false, true] {
            let out = run(0, "", hv);
            assert!(out.contains(&format!("check PASS long/access-sweep: {quick} cases (quick; full: {full}), 0 mismatches; no SMEP/SMAP\n")), "{out}");
        }
        let out = run(0, "sweep=full", false);
        assert!(out.contains(&format!("check PASS long/access-sweep: {full} cases (full; full: {full})")), "{out}");
        let out = run(0, "light=1", true);
        assert!(out.contains("check SKIP long/access-sweep: light=1"), "{out}");
        assert!(out.contains("check SKIP pae/access-sweep: light=1"), "{out}");
    }

    /// The fake engine (SDM 4.3, 4.4, 4.6-4.8 at CPL 0, with SMEP/SMAP when
    /// CPUID leaf 7 has them) passes the 32-bit and PAE sweeps, quick and
    /// full; modes=0 (the guest stays in long mode) skips them.
    #[test]
    fn legacy_sweeps_pass_on_the_fake_engine() {
        let smx = |m: &mut Fake| m.leaf_7_ebx = 1 << 7 | 1 << 20;
        for words in ["", "sweep=full"] {
            for hv in [false, true] {
                let out = run_on(0, words, hv, smx);
                for (name, n) in [("pg32", if words.is_empty() { 768 } else { 3456 }), ("pae", if words.is_empty() { 1536 } else { 26112 })] {
                    let want = format!("check PASS {name}/access-sweep: {n} cases (");
                    assert!(out.contains(&want) && out.contains("SMEP+SMAP"), "{want}\n{out}");
                }
            }
        }
        let out = run(0, "", true);
        assert!(out.contains("check PASS pae/access-sweep: 384 cases (quick; full: 6528), 0 mismatches; CPL 0, no SMEP/SMAP"), "{out}");
        let out = run(0, "modes=0", true);
        assert!(out.contains("check SKIP pae/access-sweep: modes=0"), "{out}");
    }

    /// An engine that loses D, the W/R bit of the error code, or ignores
    /// SMEP/SMAP fails both legacy sweeps.
    #[test]
    fn legacy_sweeps_fail_when_the_engine_breaks_a_rule() {
        use super::super::fake_engine::{run as engine, Quirks};
        let q: [fn(&mut Fake); 3] = [
            |f| f.on_run = Some(|f| engine(f, Quirks { no_dirty: true, ..Quirks::default() })),
            |f| f.on_run = Some(|f| engine(f, Quirks { pf_write_bit_lost: true, ..Quirks::default() })),
            |f| f.on_run = Some(|f| engine(f, Quirks { no_smep_smap: true, ..Quirks::default() })),
        ];
        for (i, setup) in q.into_iter().enumerate() {
            let out = run_on(0, "", true, |m| {
                m.leaf_7_ebx = 1 << 7 | 1 << 20;
                setup(m);
            });
            for name in ["pg32", "pae"] {
                assert!(out.contains(&format!("check FAIL {name}/access-sweep: ")), "quirk {i} {name}\n{out}");
                assert!(out.contains(&format!("guest: {name}/access-sweep mismatch: {name} pde=")), "quirk {i}\n{out}");
                // The first mismatches get a translation-failure report: the
                // stop's walk, and the shadow walk of a replayed stop.
                let heads = out.lines().filter(|l| l.starts_with(&format!("xlate {name}/access-sweep: {name} pde="))).count();
                assert_eq!(heads, crate::xlate::PER_CHECK as usize, "quirk {i} {name}\n{out}");
                let paging = if name == "pae" { "PAE paging" } else { "32-bit paging (CR4.PSE=1)" };
                assert!(out.contains(&format!("xlate {name}/access-sweep:   guest: {paging}, CR3 0x")), "quirk {i}\n{out}");
                assert!(out.contains(&format!("xlate {name}/access-sweep:   shadow: hardware CR3 0x")), "quirk {i}\n{out}");
            }
        }
    }

    /// Each broken rule of the fake's MMU fails the quick sweep, naming a
    /// mismatching case completely.
    #[test]
    fn fails_when_the_mmu_breaks_a_rule() {
        for b in [bug::UPPER_W, bug::NO_DIRTY, bug::NO_RSVD, bug::LARGE_U, bug::NO_XD] {
            let out = run(b, "", true);
            assert!(out.contains("check FAIL long/access-sweep: "), "bug {b:#x}\n{out}");
            assert!(out.contains("guest: long/access-sweep mismatch: long pde="), "bug {b:#x}\n{out}");
            let heads = out.lines().filter(|l| l.starts_with("xlate long/access-sweep: long pde=")).count();
            assert_eq!(heads, crate::xlate::PER_CHECK as usize, "bug {b:#x}\n{out}");
            assert!(out.contains("xlate long/access-sweep:     PDE[") && out.contains("xlate long/access-sweep:   shadow: hardware CR3"), "{out}");
        }
        let out = run(bug::NO_DIRTY, "", false);
        assert!(out.contains("xlate long/access-sweep:   shadow: none (bare"), "{out}");
        let out = run(bug::NO_DIRTY, "", true);
        let line = out.lines().find(|l| l.starts_with("check FAIL")).unwrap();
        assert!(line.contains("write: want ok") && line.contains("D=1, got ok"), "{line}");
    }
}
