//! `modes/...`, and the `pg32/...` and `pae/...` checks that need a
//! paging mode other than long mode (DESIGN.md section 4, scenarios 1, 3,
//! 4, 5, 8, 11, 14, 15). The mode-switch engine runs two programs: the
//! walk (real -> protected -> 32-bit paging -> PAE -> long mode with the
//! walk's own CR3 -> PAE -> 32-bit paging -> real, twice, probing
//! translations at every stop) and the named scenarios
//! (`modes::walk::named`), each probe in the real paging mode of its stop.
//! The first of these checks runs both, and every check reports its own
//! part:
//!
//! * `modes/walkN/<stop>`: the stop's mode (CR0/CR3/CR4/EFER as loaded),
//!   reads of known patterns through its mappings, #PF error codes and CR2
//!   for not-present and read-only pages, large pages, the alias, a fetch;
//!   in real mode segment:offset aliases and FFFF:0010 with A20 on;
//! * `modes/edit-from-long`: the 32-bit PD (a 32-bit-only frame) edited in
//!   long mode, whose own PDs are other frames, is in effect back in
//!   32-bit paging; undone with INVLPG;
//! * `modes/edit-from-pg32`: the PAE PD edited in 32-bit paging is in
//!   effect in the next PAE stop;
//! * `modes/pae-pdpte-cached`, `-reserved`, `-not-present`: PDPTE loading
//!   at MOV CR3 (SDM Vol. 3A 4.4.1);
//! * `modes/cr0-wp`: CR0.WP toggled in 32-bit and PAE paging;
//! * `modes/same-gfn` (scenario 1): unlike `edit-from-long`, ONE frame is
//!   the page directory of all three modes (32-bit PDE 8 is PAE/4-level
//!   PDE 4 of it); real -> 32-bit -> PAE -> long -> 32-bit, reading through
//!   it in each; long mode writes the 4-byte 32-bit PDE, sees it itself
//!   after INVLPG, and 32-bit paging sees it after its CR3 load;
//! * `pg32/pt-quadrants` (3): a 32-bit PT of 1024 distinct frames; PTE 600
//!   changed + INVLPG changes only page 600, not page 88 (same index in the
//!   other 2 MiB half); PTE 700 cleared and set again without INVLPG;
//! * `pg32/pd-quadrants` (4): 4 MiB PDEs 255/256 (+ one INVLPG each) and
//!   511/512 (+ MOV CR3) changed, both 2 MiB halves of each follow, the
//!   others stay; PDEs 767/768 not present -> present without invalidation;
//! * `pg32/pse-4m`, `pae/large-2m` (5): both halves of a 4 MiB page, two
//!   2 MiB pages; a PT inside the large page's region, written through the
//!   large page: remap + INVLPG and not present -> present are in effect;
//! * `modes/low-frames` (8): a 32-bit PD at physical 2 MiB and its PT,
//!   edited in protected mode without paging and with CR0.PG cleared
//!   inside a paged stop, and a PAE PDPT below 1 MiB edited in real mode,
//!   are in effect with paging on (real mode reaches no 4 KiB frame the
//!   suite can clear for a PT, so its table is the PDPT);
//! * `pae/pdpte-cr3-align` (14): PDPTs 32-byte aligned but not page
//!   aligned, found through CR3 bits 31:5 (SDM Vol. 3A 4.4.1);
//! * `pg32/global-pages`, `pae/global-pages` (15): CR4.PGE = 1, G = 1; only
//!   what the SDM determines (Vol. 3A 4.10.4.1): MOV CR3 flushes the
//!   non-global page, INVLPG the global one, a change of CR4.PGE all; what
//!   a global page reads after MOV CR3 alone is not compared;
//! * `pg32/no-pse`: 32-bit paging with CR4.PSE = 0, where a PDE's PS flag
//!   is ignored (SDM Vol. 3A 4.3): the PDE with PS = 1 references a PT;
//!   with CR4.PSE = 1 the same PDE is a 4 MiB page;
//! * `modes/same-gfn-pt32-pae`: one frame is a 32-bit PT (CR4.PSE = 0) and
//!   a PAE PT; 32-bit -> PAE -> 32-bit, each read in the stop's format (two
//!   4-byte PTEs are one 8-byte PTE), and a PAE PTE write seen by 32-bit
//!   paging;
//! * `modes/same-gfn-pd32-pae`: likewise one frame as a 32-bit PD
//!   (CR4.PSE = 0) and a PAE PD.
//!
//! `modes=0` skips them all (the guest then never leaves long mode). On
//! QEMU TCG, which has no PDPTE registers, `modes/pae-pdpte-cached` and
//! `-reserved` skip; everything else is determined there too.

use super::{Check, Ctx};
use crate::machine::Range;
use crate::memmap::{Exclusions, MemMap};
use crate::modes::engine::{self, Verdicts};
use crate::modes::layout::{BLOB_MAX, LOW};
use crate::modes::paging::Frames;
use crate::modes::space::{Space, IDENTITY_END};
use crate::modes::layout::EngineInfo;
use crate::modes::walk::{self, Env, StopRegs};
use crate::xlate::{self, Failure, Shadow};
use crate::report::Detail;
use core::fmt::Write;
use shared::Outcome;

/// The `modes/...` checks in run order; `verdict::<T>` reports tag T of
/// [`crate::modes::walk`].
pub static CHECKS: &[Check] = &[
    Check { name: "modes/walk1/real", run: verdict::<0> },
    Check { name: "modes/walk1/prot", run: verdict::<1> },
    Check { name: "modes/walk1/pg32", run: verdict::<2> },
    Check { name: "modes/walk1/pae", run: verdict::<3> },
    Check { name: "modes/walk1/long", run: verdict::<4> },
    Check { name: "modes/walk1/pae-back", run: verdict::<5> },
    Check { name: "modes/walk1/pg32-back", run: verdict::<6> },
    Check { name: "modes/walk1/real-back", run: verdict::<7> },
    Check { name: "modes/walk2/real", run: verdict::<8> },
    Check { name: "modes/walk2/prot", run: verdict::<9> },
    Check { name: "modes/walk2/pg32", run: verdict::<10> },
    Check { name: "modes/walk2/pae", run: verdict::<11> },
    Check { name: "modes/walk2/long", run: verdict::<12> },
    Check { name: "modes/walk2/pae-back", run: verdict::<13> },
    Check { name: "modes/walk2/pg32-back", run: verdict::<14> },
    Check { name: "modes/walk2/real-back", run: verdict::<15> },
    Check { name: "modes/edit-from-long", run: verdict::<16> },
    Check { name: "modes/edit-from-pg32", run: verdict::<17> },
    Check { name: "modes/pae-pdpte-cached", run: verdict::<18> },
    Check { name: "modes/pae-pdpte-reserved", run: verdict::<19> },
    Check { name: "modes/pae-pdpte-not-present", run: verdict::<20> },
    Check { name: "modes/cr0-wp", run: verdict::<21> },
    Check { name: "modes/same-gfn", run: verdict::<22> },
    Check { name: "pg32/pt-quadrants", run: verdict::<23> },
    Check { name: "pg32/pd-quadrants", run: verdict::<24> },
    Check { name: "pg32/pse-4m", run: verdict::<25> },
    Check { name: "pae/large-2m", run: verdict::<26> },
    Check { name: "modes/low-frames", run: verdict::<27> },
    Check { name: "pae/pdpte-cr3-align", run: verdict::<28> },
    Check { name: "pg32/global-pages", run: verdict::<29> },
    Check { name: "pae/global-pages", run: verdict::<30> },
    Check { name: "pg32/no-pse", run: verdict::<31> },
    Check { name: "modes/same-gfn-pt32-pae", run: verdict::<32> },
    Check { name: "modes/same-gfn-pd32-pae", run: verdict::<33> },
];

/// Reports tag `T`, running the walk first if no check did yet.
fn verdict<const T: usize>(ctx: &mut Ctx<'_>, d: &mut Detail) -> Outcome {
    let v = match &ctx.modes {
        Some(v) => &v.0[T],
        None => {
            let v = run(ctx);
            &ctx.modes.insert(v).0[T]
        }
    };
    *d = v.detail.clone();
    v.outcome
}

/// True when the engine's low window is free RAM: available in the memory
/// map, no Multiboot structure in it, and not part of the guest image.
pub(crate) fn engine_window_free(map: &MemMap, x: &Exclusions, image: Range) -> bool {
    map.available_covers(LOW) && !x.overflowed && !x.ranges().iter().any(|r| r.overlaps(&LOW)) && !image.overlaps(&LOW)
}

/// Builds the address spaces, loads the program, runs the engine once and
/// judges every probe.
pub fn run(ctx: &mut Ctx<'_>) -> Verdicts {
    run_logged(ctx, true)
}

/// A console that drops everything (`run_logged` without the log).
struct Quiet;

impl Write for Quiet {
    fn write_str(&mut self, _: &str) -> core::fmt::Result {
        Ok(())
    }
}

/// [`run`], with its `guest: modes: ...` lines on the console only when
/// `log` (the `modewalk` benchmark repeats the walk without them).
pub fn run_logged(ctx: &mut Ctx<'_>, log: bool) -> Verdicts {
    let fail = |t: &str| Verdicts::all(Outcome::Fail, t);
    if ctx.config.modes == Some(false) {
        return Verdicts::all(Outcome::Skip, "modes=0 on the command line");
    }
    let Some(map) = ctx.map else { return fail("no validated memory map (see boot/memory-map)") };
    let image = ctx.m.image();
    if !engine_window_free(&map, &ctx.exclusions, image) {
        return fail("the engine's low window [0x1000,0x8000) is not free RAM (memory map, Multiboot structures or image)");
    }
    let Some(e) = ctx.m.install_engine() else {
        return Verdicts::all(Outcome::Skip, "no mode-switch engine on this machine");
    };
    if u64::from(e.len) > BLOB_MAX {
        let mut d = Detail::new();
        let _ = write!(d, "engine code is {:#x} bytes, more than the {BLOB_MAX:#x} the window holds", e.len);
        return fail(d.as_str());
    }
    let mut frames = Frames::new(&map, &ctx.exclusions, image.end, IDENTITY_END);
    let Some(space) = Space::alloc(&mut frames) else {
        return fail("not enough free RAM below 64 MiB for the walk's tables and a 4 MiB-aligned region");
    };
    let mut refused = None;
    let m = &mut *ctx.m;
    space.tables(&mut |frame, t| {
        for (i, w) in t.0.iter().enumerate() {
            let a = frame + 8 * i as u64;
            if !m.scratch_write(a, *w) {
                refused.get_or_insert(a);
            }
        }
    });
    space.data(&mut |a, w| {
        if !m.scratch_write(a, w) {
            refused.get_or_insert(a);
        }
    });
    if let Some(a) = refused {
        let mut d = Detail::new();
        let _ = write!(d, "the machine refused a write of the walk's tables or data at {a:#x}");
        return fail(d.as_str());
    }
    let mut a20 = [0u8; 4];
    let _ = m.read(0x10_0000, &mut a20);
    let env = Env { cr0: m.cr0(), cr4: m.cr4(), a20_word: u32::from_le_bytes(a20), broken: ctx.config.modes_break };
    let mut judgement = engine::Judgement::default();
    for part in 0..walk::PARTS {
        let m = &mut *ctx.m;
        let ops = match engine::load(m, &e, &space, &env, part) {
            Ok(n) => n,
            Err(err) => {
                let mut d = Detail::new();
                let _ = write!(d, "could not load program {} into the low window: {err:?}", part + 1);
                return fail(d.as_str());
            }
        };
        let out: &mut dyn Write = if log { &mut *ctx.out } else { &mut Quiet };
        if part == 0 {
            let _ = writeln!(
                out,
                "guest: modes: {ops} probes; pd32={:#x} pdpt={:#x} pml4={:#x} data={:#x},{:#x},{:#x},{:#x} large={:#x}",
                space.pd32, space.pdpt, space.pml4, space.d0, space.d1, space.d2, space.d3, space.large
            );
        } else {
            let _ = writeln!(
                out,
                "guest: modes: program {}: {ops} probes; pd_same={:#x} pd_q={:#x} pt_q={:#x} pdpt_x={:#x} pd_2m={:#x} large2={:#x}",
                part + 1,
                space.pd_same,
                space.pd_q,
                space.pt_q,
                space.pdpt_x,
                space.pd_2m,
                space.large2
            );
        }
        ctx.m.run_engine();
        // Reports only for checks that run and stay checks (QEMU TCG turns
        // two into SKIP below).
        let (only, tcg) = (ctx.config.only, ctx.signature.is_tcg());
        let report = |t: usize| only.selects(CHECKS[t].name) && !(tcg && [walk::extra(2), walk::extra(3)].contains(&t));
        let out: &mut dyn Write = if log { &mut *ctx.out } else { &mut Quiet };
        judgement.part(&mut *ctx.m, out, (&space, &env, part), &report);
        if log {
            report_failed(ctx, &e, &judgement);
        }
    }
    let mut v = judgement.verdicts();
    if ctx.signature.is_tcg() {
        for t in [walk::extra(2), walk::extra(3)] {
            let mut d = Detail::new();
            let _ = write!(d, "QEMU TCG has no PDPTE registers (it reads PDPTEs at every walk); here: {}", v.0[t].detail.as_str());
            v.0[t] = engine::Verdict { outcome: Outcome::Skip, detail: d };
        }
    }
    v
}

/// Translation-failure reports ([`crate::xlate`]) of the part judged
/// last: each failed memory probe with the guest walk of its stop and,
/// under the hypervisor, the shadow walk of that stop's mode (one short
/// engine program for them all), filed under the probe's check.
fn report_failed(ctx: &mut Ctx<'_>, e: &EngineInfo, j: &engine::Judgement) {
    let mut walks = [(StopRegs { mode: crate::modes::Mode::Real, cr0: 0, cr3: 0, cr4: 0 }, 0u64); engine::FAILED_PER_PART];
    let mut n = 0;
    for (w, f) in walks.iter_mut().zip(j.failed()) {
        *w = (f.regs, f.op.access().map_or(0, |a| a.0));
        n += 1;
    }
    if n == 0 {
        return;
    }
    let m = &mut *ctx.m;
    let shadows = if ctx.tally.hypercall_reporting() {
        engine::shadow_walks(m, e, &walks[..n])
    } else {
        [Shadow::Bare; engine::FAILED_PER_PART]
    };
    for (f, shadow) in j.failed().zip(shadows) {
        let Some((la, kind)) = f.op.access() else { continue };
        let (paging, when) = xlate::stop_paging(&*m, &f.regs);
        let what = format_args!("stop {} ({}) probe {} {}", f.stop, f.regs.mode.name(), f.index, f.op);
        let failure = Failure { what: &what, la, kind, cpl: 0, expected: &f.exp, got: &f.got };
        xlate::write(&mut *ctx.out, CHECKS[f.tag].name, &failure, paging, &shadow, &|a| xlate::read_word(&*m, a), when);
    }
}

#[cfg(test)]
mod tests {
    use super::super::fake::{Fake, FAKE_INFO};
    use super::super::fake_engine::{self, Quirks};
    use super::*;
    use crate::machine::Range;
    use crate::modes::walk::{EXTRA, STOPS, TAGS, WALKS};
    use crate::report::Tally;

    /// Runs every check on `m`; returns the modes/... lines.
    fn modes_lines(m: &mut Fake) -> Vec<(Outcome, String, String)> {
        let (mut out, tally) = (String::new(), Tally::new());
        let mut ctx = Ctx::start(m, &mut out, &tally, FAKE_INFO);
        let mut lines = Vec::new();
        for c in super::super::all() {
            let mut d = Detail::new();
            let o = (c.run)(&mut ctx, &mut d);
            if CHECKS.iter().any(|k| k.name == c.name) {
                lines.push((o, c.name.to_string(), d.as_str().to_string()));
            }
        }
        lines
    }

    fn only_failures(lines: &[(Outcome, String, String)]) -> Vec<&str> {
        lines.iter().filter(|l| l.0 == Outcome::Fail).map(|l| l.1.as_str()).collect()
    }

    #[test]
    fn architectural_model_passes_everything() {
        let lines = modes_lines(&mut Fake::hv("expect_hv=1 modes=1"));
        assert!(lines.iter().all(|l| l.0 == Outcome::Pass), "{lines:#?}");
        let pg32 = &lines[2];
        assert!(pg32.2.starts_with("23 probes, 6 exceptions as expected; stop 3 pg32 cr0=0x80010033"), "{pg32:?}");
    }

    #[test]
    fn tcg_skips_only_the_pdpte_register_checks() {
        let mut m = Fake::bare("");
        m.on_run = Some(|f| fake_engine::run(f, Quirks { no_pdpte_registers: true, ..Quirks::default() }));
        let lines = modes_lines(&mut m);
        let skipped: Vec<_> = lines.iter().filter(|l| l.0 == Outcome::Skip).map(|l| l.1.as_str()).collect();
        assert_eq!(skipped, ["modes/pae-pdpte-cached", "modes/pae-pdpte-reserved"]);
        assert!(lines[18].2.starts_with("QEMU TCG has no PDPTE registers"), "{:?}", lines[18]);
        assert!(only_failures(&lines).is_empty(), "{lines:#?}");
    }

    #[test]
    fn missing_pdpte_registers_fail_outside_tcg() {
        let mut m = Fake::hv("modes=1");
        m.on_run = Some(|f| fake_engine::run(f, Quirks { no_pdpte_registers: true, ..Quirks::default() }));
        let lines = modes_lines(&mut m);
        assert_eq!(only_failures(&lines), ["modes/pae-pdpte-cached", "modes/pae-pdpte-reserved"]);
        assert!(lines[19].2.contains("mov cr3=") && lines[19].2.contains("expected #GP ec=0x0, got value"), "{:?}", lines[19]);
    }

    #[test]
    fn wrong_error_code_is_named() {
        let mut m = Fake::hv("modes=1");
        m.on_run = Some(|f| fake_engine::run(f, Quirks { pf_write_bit_lost: true, ..Quirks::default() }));
        let lines = modes_lines(&mut m);
        let pg32 = lines.iter().find(|l| l.1 == "modes/walk1/pg32").unwrap();
        assert_eq!(pg32.0, Outcome::Fail);
        assert!(pg32.2.contains("write32 0x40001010=0x1: expected #PF ec=0x3 cr2=0x40001010, got #PF ec=0x1 cr2=0x40001010"), "{pg32:?}");
        assert!(lines.iter().find(|l| l.1 == "modes/walk1/real").unwrap().0 == Outcome::Pass, "real mode has no paging");
    }

    #[test]
    fn broken_expectation_fails_with_the_probe() {
        let lines = modes_lines(&mut Fake::hv("modes=1 modes_break=1"));
        assert_eq!(only_failures(&lines), ["modes/walk1/pg32"]);
        let d = &lines[2].2;
        assert!(d.starts_with("probe ") && d.contains(" read32 0x40000000: expected value 0x"), "{d}");
        assert!(d.contains("| 23 probes"), "{d}");
    }

    /// The broken probe gets a translation-failure report under its check:
    /// the 32-bit walk of its stop and, under the hypervisor, the shadow
    /// walk one more short engine run fetched in that stop's mode.
    #[test]
    fn broken_expectation_gets_a_translation_report() {
        use crate::checks::fake::FAKE_SHADOW_ROOT;
        let run = |m: &mut Fake| {
            let (mut out, tally) = (String::new(), Tally::new());
            Ctx::start(m, &mut out, &tally, FAKE_INFO).run_all();
            out
        };
        let mut m = Fake::hv("modes=1 modes_break=1 only=modes/");
        let out = run(&mut m);
        let report: Vec<&str> = out.lines().filter_map(|l| l.strip_prefix("xlate modes/walk1/pg32: ")).collect();
        assert!(report[0].contains(" (pg32) probe ") && report[0].contains("read32 0x40000000: la 0x40000000, read at CPL 0: expected value 0x"), "{out}");
        assert!(report[1].starts_with("  guest: 32-bit paging (CR4.PSE=1), CR3 0x") && report[1].contains("after the program ran"), "{out}");
        assert!(report[2].starts_with("    PDE[256] @0x") && report[3].starts_with("    PTE[0] @0x"), "{out}");
        assert!(report[4].starts_with("    => 4 KiB page 0x"), "{out}");
        assert!(report[5].contains(&format!("shadow: hardware CR3 {FAKE_SHADOW_ROOT:#x}")), "{out}");
        assert_eq!(m.shadow_walks, [0x4000_0000], "one ShadowWalk, in the replayed stop");
        assert_eq!((m.engine_runs, m.other_engine_runs), (walk::PARTS, 1));
        assert!(out.find("xlate modes/walk1/pg32:").unwrap() < out.find("check FAIL modes/walk1/pg32:").unwrap());
        assert!(!out.lines().any(|l| l.starts_with("xlate ") && !l.starts_with("xlate modes/walk1/pg32: ")), "{out}");
        // Bare: the guest walk, no shadow and no extra engine run. On QEMU
        // TCG (no PDPTE registers) the two PDPTE checks fail their probes
        // but report SKIP: no report for them, nor for checks not selected.
        let mut m = Fake::bare("modes=1 modes_break=1 only=modes/walk1");
        m.on_run = Some(|f| fake_engine::run(f, Quirks { no_pdpte_registers: true, ..Quirks::default() }));
        let out = run(&mut m);
        assert!(out.contains("xlate modes/walk1/pg32:   shadow: none (bare: no hypervisor"), "{out}");
        assert!(out.contains("xlate modes/walk1/pg32:     PTE[0] @0x"), "{out}");
        assert!(out.contains("guest: modes: stop 4 (pae)"), "the PDPTE check's probes did fail: {out}");
        assert!(!out.lines().any(|l| l.starts_with("xlate ") && !l.starts_with("xlate modes/walk1/pg32: ")), "{out}");
        assert_eq!((m.other_engine_runs, m.vmcalls), (0, 0));
    }

    #[test]
    fn skipped_without_engine_or_by_request_and_refused_when_window_taken() {
        let mut m = Fake::hv("modes=1");
        m.engine = None;
        let lines = modes_lines(&mut m);
        assert!(lines.iter().all(|l| l.0 == Outcome::Skip && l.2 == "no mode-switch engine on this machine"));
        let mut m = Fake::hv("modes=0");
        assert!(modes_lines(&mut m).iter().all(|l| l.0 == Outcome::Skip));
        assert_eq!(m.engine_runs, 0);
        // Without the word the walk runs, under the hypervisor too.
        let mut m = Fake::hv("");
        assert!(modes_lines(&mut m).iter().all(|l| l.0 == Outcome::Pass));
        assert_eq!(m.engine_runs, walk::PARTS);
        assert_eq!(modes_lines(&mut Fake::bare("modes=0"))[0].2, "modes=0 on the command line");
        // A Multiboot structure inside the window: refuse, never run.
        let mut m = Fake::hv("modes=1");
        let (mut out, tally) = (String::new(), Tally::new());
        let mut ctx = Ctx::start(&mut m, &mut out, &tally, FAKE_INFO);
        for c in super::super::boot::CHECKS {
            (c.run)(&mut ctx, &mut Detail::new());
        }
        ctx.exclusions.add(Range::new(0x7800, 0x7900));
        let v = run(&mut ctx);
        assert!(v.0.iter().all(|v| v.outcome == Outcome::Fail && v.detail.as_str().contains("not free RAM")));
        assert_eq!(m.engine_runs, 0);
    }

    /// The named checks catch what they are about, and only those fail.
    #[test]
    fn named_checks_catch_their_faults() {
        let mut m = Fake::hv("modes=1");
        m.on_run = Some(|f| fake_engine::run(f, Quirks { pdpt_page_aligned: true, ..Quirks::default() }));
        let lines = modes_lines(&mut m);
        // (same-gfn-pd32-pae's PDPT is at a 32-byte, not page, offset too.)
        assert_eq!(only_failures(&lines), ["modes/low-frames", "pae/pdpte-cr3-align", "modes/same-gfn-pd32-pae"]);
        let d = &lines.iter().find(|l| l.1 == "pae/pdpte-cr3-align").unwrap().2;
        assert!(d.contains("read32 0x40000000: expected value"), "{d}");
        let mut m = Fake::hv("modes=1");
        m.on_run = Some(|f| fake_engine::run(f, Quirks { large_writes_lost: true, ..Quirks::default() }));
        let lines = modes_lines(&mut m);
        let failed = only_failures(&lines);
        for name in ["pg32/pse-4m", "pae/large-2m"] {
            assert!(failed.contains(&name), "{name} catches lost writes through a large page: {failed:?}");
        }
        for name in ["pg32/pt-quadrants", "modes/low-frames", "pg32/global-pages"] {
            assert!(!failed.contains(&name), "{name} writes through 4 KiB pages only: {failed:?}");
        }
        // A walker that honours PS with CR4.PSE = 0: only pg32/no-pse sees it.
        let mut m = Fake::hv("modes=1");
        m.on_run = Some(|f| fake_engine::run(f, Quirks { pse_always: true, ..Quirks::default() }));
        let lines = modes_lines(&mut m);
        assert_eq!(only_failures(&lines), ["pg32/no-pse"]);
        let d = &lines.iter().find(|l| l.1 == "pg32/no-pse").unwrap().2;
        assert!(d.contains("read32 0x4b000010: expected value"), "{d}");
    }

    #[test]
    fn named_program_is_fully_modelled() {
        use crate::modes::walk::{named, Item};
        let (s, _) = crate::modes::space::tests::built();
        let env = Env { cr0: 0x8000_0033, cr4: 0x620, ..Env::default() };
        let mut reads = 0;
        named::program(&s, &env, &mut |i| reads += matches!(i, Item::Op(_, crate::modes::probe::Op::Read32 { .. }, _)) as usize);
        assert!(reads > 50);
        // Every read the model answers is a word the space wrote (checked
        // by the debug assertion in `named::program`); a word it never
        // wrote is flagged.
        let m = named::Mem::new(&s);
        assert_eq!(m.read32(s.d0 + 0x7f8), crate::modes::space::pat32(s.d0 + 0x7f8) as u32);
        assert!(!m.unknown.get());
        let _ = m.read32(s.d0 + 0x400);
        assert!(m.unknown.get());
    }

    #[test]
    fn names_follow_the_tags() {
        assert_eq!(CHECKS.len(), TAGS);
        for (t, c) in CHECKS.iter().enumerate() {
            let want = if t < WALKS * STOPS.len() {
                format!("modes/walk{}/{}", t / STOPS.len() + 1, STOPS[t % STOPS.len()].1)
            } else {
                EXTRA[t - WALKS * STOPS.len()].to_string()
            };
            assert_eq!(c.name, want);
        }
    }
}
