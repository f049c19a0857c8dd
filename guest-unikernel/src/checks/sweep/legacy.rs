//! `pg32/access-sweep` and `pae/access-sweep`: the access sweep at CPL 0
//! in 32-bit paging and PAE paging, run by the mode-switch engine
//! ([`crate::modes::engine::load_program`]), whose 32-bit interpreter
//! executes one probe op per case in the real paging mode.
//!
//! Per engine run the check builds its own tables in scratch frames: the
//! low 64 MiB identity-mapped with supervisor large pages (the engine's
//! window, code and stack; U=0, so CR4.SMEP/SMAP leave the engine alone)
//! and, per case `i` of the run, PDE `i` of the test region and PTE `i` of
//! one shared page table, probed at its own address (32-bit paging: PDE
//! 256 + `i`, `(256 + i) * 4 MiB + i * 4 KiB`; PAE: PDPTE 1, PDE `i`,
//! `1 GiB + i * 2 MiB + i * 4 KiB`; large pages at offset 0). A stop per
//! setting loads CR0.WP and CR4.SMEP/SMAP with the mode's CR3 (a fresh
//! MOV CR3: no stale translations); EFER.NXE is set in long mode before
//! the run (the engine keeps it; only LME changes on the way). After the
//! run each case's result and A/D flags are compared with
//! [`crate::sweep::model`].
//!
//! CPL 3 is not swept here: the engine's interpreters run at CPL 0 only.

use super::{as_reported, LIGHT_SKIP, Mismatch, Seen, CR0_WP, CR4_SMAP, CR4_SMEP, EFER_NXE, LOGGED, RET_OFF, WR_OFF};
use crate::checks::Ctx;
use crate::longcpu::Fault;
use crate::machine::Machine;
use crate::modes::engine;
use crate::modes::layout::BLOB_MAX;
use crate::modes::paging::{entry64, pde32_4m, pde32_table, pde_2m, pdpte_pae, pte32, Frames, A, D, P, RW};
use crate::modes::probe::{Expect, Got, Op, VECTOR_PF};
use crate::modes::space::IDENTITY_END;
use crate::modes::walk::{Item, StopRegs};
use crate::pattern::pattern;
use crate::regs::{CR0_PE, CR0_PG, CR4_OSFXSR, CR4_OSXMMEXCPT, CR4_PAE, CR4_PSE};
use crate::modes::layout::MAX_WALKS;
use crate::report::Detail;
use crate::sweep::model::{ad_of, entry_bits, f, Access, Case, Mode};
use crate::sweep::{self, Features, Setting};
use crate::xlate::{self, Failure, Reporter, Shadow, PER_CHECK};
use core::fmt::Write;
use shared::Outcome;

/// Cases per engine run (at most the engine's op capacity).
const RUN: usize = 400;
/// Stops per engine run (the engine holds 31).
const STOPS: usize = 24;
/// Seed of the data frames' markers ("SWEEPLEG").
const SEED: u64 = 0x5357_4545_504c_4547;
/// 2 MiB, 4 MiB, 1 GiB.
const M2: u64 = 1 << 21;
const M4: u64 = 1 << 22;
const G1: u64 = 1 << 30;

const fn marker(pa: u64) -> u64 {
    pattern(pa, SEED)
}

/// Where the cases' entries are.
struct Space {
    pae: bool,
    /// The test PD (32-bit: the one PD, CR3).
    pd: u64,
    /// The shared page table.
    pt: u64,
}

impl Space {
    /// The address of case `i`'s PDE, PTE; its linear address.
    fn pde(&self, i: u64) -> u64 {
        if self.pae { self.pd + 8 * i } else { self.pd + 4 * (256 + i) }
    }
    fn pte(&self, i: u64) -> u64 {
        if self.pae { self.pt + 8 * i } else { self.pt + 4 * i }
    }
    fn va(&self, i: u64, large: bool) -> u64 {
        let base = if self.pae { G1 + i * M2 } else { (256 + i) * M4 };
        if large { base } else { base + i * 0x1000 }
    }
}

/// Writes an entry: 8 bytes (PAE) or 4 bytes (32-bit; the other half of the
/// quadword kept). `false` when the machine refused.
fn put(m: &mut dyn Machine, pae: bool, at: u64, v: u64) -> bool {
    if pae {
        return m.scratch_write(at, v);
    }
    let Some(old) = m.scratch_read(at & !7) else { return false };
    let sh = 8 * (at & 4);
    m.scratch_write(at & !7, (old & !(0xFFFF_FFFF << sh)) | ((v & 0xFFFF_FFFF) << sh))
}

/// Reads an entry (see [`put`]).
fn get(m: &mut dyn Machine, pae: bool, at: u64) -> u64 {
    let w = m.scratch_read(at & !7).unwrap_or(0);
    if pae { w } else { (w >> (8 * (at & 4))) & 0xFFFF_FFFF }
}

/// `e` with bit 63 as the flags say.
const fn with_xd(e: u64, flags: u8) -> u64 {
    if flags & f::NX != 0 { e | 1 << 63 } else { e }
}

/// The sweep of `mode` (Pg32 or Pae) at CPL 0.
pub(super) fn run(ctx: &mut Ctx<'_>, d: &mut Detail, mode: Mode) -> Outcome {
    let pae = mode == Mode::Pae;
    let name = if pae { "pae/access-sweep" } else { "pg32/access-sweep" };
    let size = sweep::Size::of(ctx.config.sweep_full);
    if ctx.config.light {
        let _ = write!(d, "{LIGHT_SKIP}");
        return Outcome::Skip;
    }
    let tcg = ctx.signature.is_tcg();
    if ctx.config.modes == Some(false) {
        let _ = write!(d, "modes=0 on the command line (no mode-switch engine runs)");
        return Outcome::Skip;
    }
    let Some(map) = ctx.map else {
        let _ = write!(d, "no validated memory map (see boot/memory-map)");
        return Outcome::Fail;
    };
    let image = ctx.m.image();
    if !crate::checks::modes::engine_window_free(&map, &ctx.exclusions, image) {
        let _ = write!(d, "the engine's low window is not free RAM");
        return Outcome::Fail;
    }
    let m = &mut *ctx.m;
    let (nx, l7) = (crate::checks::has_nx(m), crate::checks::cpuid7_ebx(m));
    let (cr0, cr4, efer) = (m.cr0(), m.cr4(), m.efer());
    let Some(e) = m.install_engine() else {
        let _ = write!(d, "no mode-switch engine on this machine");
        return Outcome::Skip;
    };
    if u64::from(e.len) > BLOB_MAX {
        let _ = write!(d, "engine code is {:#x} bytes, more than the window holds", e.len);
        return Outcome::Fail;
    }
    if m.long_cpu().is_none() {
        let _ = write!(d, "no way to set EFER.NXE on this machine");
        return Outcome::Skip;
    }
    let feat = Features { nx, smep: l7 & (1 << 7) != 0, smap: l7 & (1 << 20) != 0, user: false, user_with_smx: false };

    // Tables.
    let mut fr = super::frames(&map, &ctx.exclusions, image.end, u64::from(pae));
    let large = fr.alloc_aligned(if pae { M2 } else { M4 }, if pae { M2 } else { M4 }).unwrap_or(0);
    let mut refused = None::<u64>;
    let table = |m: &mut dyn Machine, fr: &mut Frames, refused: &mut Option<u64>| {
        let Some(t) = fr.alloc() else { return 0 };
        for i in 0..512 {
            if !m.scratch_write(t + 8 * i, 0) {
                refused.get_or_insert(t + 8 * i);
            }
        }
        t
    };
    let cr3 = table(m, &mut fr, &mut refused);
    let ipd = if pae { table(m, &mut fr, &mut refused) } else { cr3 };
    let pd = if pae { table(m, &mut fr, &mut refused) } else { cr3 };
    let pt = table(m, &mut fr, &mut refused);
    let small = fr.alloc().unwrap_or(0);
    if [large, cr3, ipd, pd, pt, small].contains(&0) {
        let _ = write!(d, "no free frames below {IDENTITY_END:#x}");
        return Outcome::Fail;
    }
    let sup = P | RW | A | D;
    let mut ok = true;
    if pae {
        for i in 0..IDENTITY_END / M2 {
            ok &= put(m, true, ipd + 8 * i, pde_2m(i * M2, sup));
        }
        ok &= put(m, true, cr3, pdpte_pae(ipd));
        ok &= put(m, true, cr3 + 8, pdpte_pae(pd));
    } else {
        for i in 0..IDENTITY_END / M4 {
            ok &= put(m, false, cr3 + 4 * i, u64::from(pde32_4m(i * M4, sup)));
        }
    }
    for fr in [small, large] {
        ok &= m.scratch_write(fr, marker(fr)) && m.scratch_write(fr + WR_OFF, 0) && m.scratch_write(fr + RET_OFF, 0xC3);
    }
    if !ok || refused.is_some() {
        let _ = write!(d, "the machine refused a table write (around {refused:?})");
        return Outcome::Fail;
    }
    let sp = Space { pae, pd, pt };

    // The cases, run by run.
    let base0 = (cr0 & !(CR0_PG | CR0_WP)) | CR0_PE | CR0_PG;
    let base4 = (cr4 & (CR4_OSFXSR | CR4_OSXMMEXCPT)) | if pae { CR4_PAE } else { CR4_PSE };
    let regs = |s: Setting| StopRegs {
        mode: if pae { crate::modes::Mode::Pae } else { crate::modes::Mode::Paging32 },
        cr0: (base0 | if s.wp { CR0_WP } else { 0 }) as u32,
        cr3: cr3 as u32,
        cr4: (base4 | if s.smep { CR4_SMEP } else { 0 } | if s.smap { CR4_SMAP } else { 0 }) as u32,
    };
    let mut rep = Reporter::for_running(ctx.tally);
    let mut batch = [None::<(Setting, Case)>; RUN];
    let (mut fill, mut stops, mut last) = (0usize, 0usize, None::<Setting>);
    let (mut ran, mut bad, mut runs, mut first, mut trouble) = (0u32, 0u32, 0u32, Detail::new(), None::<Detail>);
    let mut go = |m: &mut dyn Machine, out: &mut dyn Write, batch: &mut [Option<(Setting, Case)>; RUN], fill: &mut usize| {
        if *fill == 0 || trouble.is_some() {
            *fill = 0;
            return;
        }
        runs += 1;
        let cases = &batch[..*fill];
        let mut ok = true;
        for (i, (_, c)) in cases.iter().flatten().enumerate() {
            let i = i as u64;
            let (pde, pte) = (entry_bits(c.pde), entry_bits(c.pte));
            if pae {
                if c.large() {
                    ok &= put(m, true, sp.pde(i), with_xd(pde_2m(large, pde), c.pde));
                } else {
                    ok &= put(m, true, sp.pde(i), with_xd(entry64(pt, pde), c.pde));
                    ok &= put(m, true, sp.pte(i), with_xd(entry64(small, pte), c.pte));
                }
            } else if c.large() {
                ok &= put(m, false, sp.pde(i), u64::from(pde32_4m(large, pde & 0xFFF)));
            } else {
                ok &= put(m, false, sp.pde(i), u64::from(pde32_table(pt, pde & 0xFFF)));
                ok &= put(m, false, sp.pte(i), u64::from(pte32(small, pte & 0xFFF)));
            }
        }
        let nxe = cases[0].is_some_and(|(s, _)| s.nxe);
        if let Some(cpu) = m.long_cpu() {
            cpu.set_efer_nxe(nxe);
        }
        let mut program = |emit: &mut dyn FnMut(Item)| {
            let mut cur = None;
            for (i, (s, c)) in cases.iter().flatten().enumerate() {
                if cur != Some(*s) {
                    cur = Some(*s);
                    emit(Item::Stop(regs(*s)));
                }
                let va = sp.va(i as u64, c.large());
                let op = match c.acc {
                    Access::Read => Op::Read32 { seg: 0, addr: va },
                    Access::Write => Op::Write32 { seg: 0, addr: va + WR_OFF, value: 0x5357_0000 | i as u32 },
                    Access::Fetch => Op::Fetch { addr: va + RET_OFF },
                };
                emit(Item::Op(0, op, Expect::Done));
            }
        };
        let loaded = engine::load_program(m, &e, &mut program);
        if let (true, Ok(_)) = (ok, loaded) {
            m.run_engine();
        }
        if let Some(cpu) = m.long_cpu() {
            cpu.set_efer_nxe(efer & EFER_NXE != 0);
        }
        if !ok || loaded.is_err() {
            let mut t = Detail::new();
            let _ = write!(t, "could not set up engine run {runs}: refused table write or {loaded:?}");
            trouble = Some(t);
            *fill = 0;
            return;
        }
        let mut failed = [None::<(usize, Setting, Case, Seen, Option<u32>)>; PER_CHECK as usize];
        for (i, (s, c)) in cases.iter().flatten().enumerate() {
            let n = i as u64;
            let va = sp.va(n, c.large());
            let addr = match c.acc {
                Access::Read => va,
                Access::Write => va + WR_OFF,
                Access::Fetch => va + RET_OFF,
            };
            let got = engine::result(m, i);
            let pde = ad_of(get(m, pae, sp.pde(n)));
            let pte = if c.large() { 0 } else { ad_of(get(m, pae, sp.pte(n))) };
            let o = c.outcome();
            let want = o.fault.map(|e| as_reported(e, tcg));
            let frame = if c.large() { large } else { small };
            let ok_access = match (want, got) {
                (None, Got::Value(v)) => c.acc != Access::Read || v == marker(frame) & 0xFFFF_FFFF,
                (Some(e), Got::Fault { vector, error, cr2 }) => vector == VECTOR_PF && error == e && cr2 == addr,
                _ => false,
            };
            let ok_ad = o.pde.holds(pde) && (c.large() || o.pte.holds(pte));
            ran += 1;
            if !(ok_access && ok_ad) {
                bad += 1;
                let probe = match got {
                    Got::Value(v) => Ok(v),
                    Got::Fault { vector, error, cr2 } => Err(Fault { vector, error_code: u64::from(error), cr2 }),
                    _ => Err(Fault { vector: 0xFF, error_code: 0, cr2: 0 }),
                };
                let seen = Seen { got: probe, pde, pte, addr };
                let mm = Mismatch { case: c, want, want_pde: o.pde, want_pte: o.pte, seen: &seen };
                if bad == 1 {
                    let _ = write!(first, "{mm}");
                    if !matches!(got, Got::Value(_) | Got::Fault { .. }) {
                        let _ = write!(first, " ({got})");
                    }
                }
                if bad <= LOGGED {
                    let _ = writeln!(out, "guest: {name} mismatch: {mm} [{got}]");
                }
                if let (true, Some(slot)) = (rep.take(), failed.iter_mut().find(|f| f.is_none())) {
                    *slot = Some((i, *s, *c, seen, want));
                }
            }
        }
        // Translation-failure reports: the guest walk and, under the
        // hypervisor, the shadow walk of each case's stop (one short engine
        // run, with the batch's EFER.NXE again).
        if let Some((_, s0, _, seen0, _)) = failed[0] {
            let k = failed.iter().flatten().count();
            let walk_of = |f: Option<(usize, Setting, Case, Seen, Option<u32>)>| f.map(|(_, s, _, seen, _)| (regs(s), seen.addr));
            let walks: [_; PER_CHECK as usize] = core::array::from_fn(|j| walk_of(failed[j]).unwrap_or((regs(s0), seen0.addr)));
            let shadows = if rep.hv() {
                if let Some(cpu) = m.long_cpu() {
                    cpu.set_efer_nxe(nxe);
                }
                let sh = engine::shadow_walks(m, &e, &walks[..k]);
                if let Some(cpu) = m.long_cpu() {
                    cpu.set_efer_nxe(efer & EFER_NXE != 0);
                }
                sh
            } else {
                [Shadow::Bare; MAX_WALKS]
            };
            for ((_, s, c, seen, want), shadow) in failed.iter().flatten().zip(shadows) {
                let o = c.outcome();
                let mm = Mismatch { case: c, want: *want, want_pde: o.pde, want_pte: o.pte, seen };
                let (w, g) = mm.failure();
                let (paging, when) = xlate::stop_paging(&*m, &regs(*s));
                let f = Failure { what: c, la: seen.addr, kind: mm.kind(), cpl: 0, expected: &w, got: &g };
                xlate::write(out, rep.check, &f, paging, &shadow, &|a| xlate::read_word(&*m, a), when);
            }
        }
        *fill = 0;
    };
    let mut n = 0u32;
    sweep::settings(mode, feat, |s| {
        let k0 = n;
        n += 1;
        sweep::inner(mode, k0, size, |k| {
            let nxe_change = fill > 0 && batch[0].is_some_and(|(b, _)| b.nxe != s.nxe);
            let new_stop = last != Some(s);
            if fill == RUN || nxe_change || (new_stop && stops == STOPS) {
                go(&mut *ctx.m, &mut *ctx.out, &mut batch, &mut fill);
                stops = 0;
                last = None;
            }
            if last != Some(s) {
                stops += 1;
                last = Some(s);
            }
            batch[fill] = Some((s, sweep::case(mode, s, k)));
            fill += 1;
        });
    });
    go(&mut *ctx.m, &mut *ctx.out, &mut batch, &mut fill);
    let total = sweep::count(mode, feat, sweep::Size::Full);
    let want = sweep::count(mode, feat, size);
    if let Some(t) = trouble {
        let _ = write!(d, "{} after {ran} cases", t.as_str());
        return Outcome::Fail;
    }
    if bad > 0 {
        let _ = write!(d, "{bad}/{ran} mismatch; first: {}", first.as_str());
        return Outcome::Fail;
    }
    let smx = match (feat.smep, feat.smap) {
        (true, true) => "SMEP+SMAP",
        (true, false) => "SMEP, no SMAP",
        (false, true) => "SMAP, no SMEP",
        (false, false) => "no SMEP/SMAP",
    };
    let kind = size.name();
    let _ = write!(d, "{ran} cases ({kind}; full: {total}), 0 mismatches; CPL 0, {smx}, {runs} engine runs");
    if ran != want {
        let _ = write!(d, "; expected {want} cases");
        return Outcome::Fail;
    }
    Outcome::Pass
}
