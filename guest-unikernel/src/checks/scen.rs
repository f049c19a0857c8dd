//! `long/...`: scenarios 2, 6, 7, 9, 20 and 21 of DESIGN.md section 4, run
//! natively in long mode. Each check builds its own 4-level tables in
//! scratch frames (PML4E 0 identity-maps the low 1 GiB with 2 MiB pages,
//! U=1 W=1, so the guest's code, stacks and the tables themselves stay
//! reachable at CPL 0 and 3; the scenario lives at [`T`] = PML4E 1 and
//! up), loads them into CR3 with CR0.WP=1, probes single accesses through
//! the fault harness ([`crate::longcpu`]) and compares each full outcome
//! (value, or vector, #PF error code and CR2) with the SDM; then it loads
//! the boot CR3 again and restores CR0.WP and EFER.NXE.
//!
//! Left out of the default run on purpose (scenario 21): loading a CR3
//! outside guest RAM and data accesses through entries naming frames above
//! guest RAM. Architecturally they are just addresses (bare QEMU reads all
//! ones from unassigned memory), but under Quadrant an access outside the
//! VM's RAM ends the run with `quadrant-error unsupported: ... outside its
//! N MiB of RAM` by design, so such a check could not pass in both places.

#[macro_use]
mod lab;
mod hostile;
mod ctl;

use super::{Check, Ctx};
use crate::longcpu::{ec, Cpl, Op};
use crate::modes::paging::{entry64, pde_2m, A, D, P, RW, US};
use crate::modes::space::IDENTITY_END;
use crate::report::{Detail, Expect};
use core::fmt::Write;
use hostile::{hostile_cr3, hostile_invlpg, hostile_rsvd, hostile_vmxon};
use lab::*;
use shared::Outcome;

pub use lab::Base;

/// The `long/...` checks in run order.
pub static CHECKS: &[Check] = &[
    Check { name: "long/self-map", run: self_map },
    Check { name: "long/large-alias-perms", run: large_alias_perms },
    Check { name: "long/upper-alias-perms/rw-first", run: upper_alias::<0> },
    Check { name: "long/upper-alias-perms/ro-first", run: upper_alias::<1> },
    Check { name: "long/upper-alias-perms/pml4", run: upper_alias::<2> },
    Check { name: "long/pt-write/np-to-p", run: pt_write::<0> },
    Check { name: "long/pt-write/remap-invlpg", run: pt_write::<1> },
    Check { name: "long/pt-write/clear-w-invlpg", run: pt_write::<2> },
    Check { name: "long/pt-write/write32", run: pt_write::<3> },
    Check { name: "long/pt-write/rep-stosb", run: pt_write::<4> },
    Check { name: "long/pt-write/and-byte", run: pt_write::<5> },
    Check { name: "long/pt-write/lock-cmpxchg", run: pt_write::<6> },
    Check { name: "long/ad-bits", run: ad_bits },
    Check { name: "long/large-2m", run: ctl::large_2m },
    Check { name: "long/cr0-wp", run: ctl::cr0_wp },
    Check { name: "long/efer-nxe", run: ctl::efer_nxe },
    Check { name: "long/smep-smap-wp0", run: ctl::smep_smap_wp0 },
    Check { name: "long/global-pages", run: ctl::global_pages },
    Check { name: "long/hostile/rsvd-bits", run: hostile_rsvd },
    Check { name: "long/hostile/invlpg", run: hostile_invlpg },
    Check { name: "long/hostile/cr3-reserved", run: hostile_cr3 },
    Check { name: "long/hostile/vmxon-ud", run: hostile_vmxon },
];

/// Scenario 2: one page X is the PD of `t` and, through PDE 1 = X, also
/// the PT of `t + 2 MiB`, whose PTE 1 (= X again) maps X itself as data
/// at `W = t + 2 MiB + 4 KiB`: the "PT window". Reads of `W + 8i` return
/// X's PDEs exactly as memory holds them (A/D included); a write of the
/// not-present PDE 2 through the window makes `t + 4 MiB` translate at
/// once, with no INVLPG (SDM Vol. 3A 4.10.2.3, 4.10.4.3: not-present
/// entries are never cached), and PTE 2 of the window now maps that PT.
fn self_map(ctx: &mut Ctx<'_>, d: &mut Detail) -> Outcome {
    let mut lab = lab!(ctx, d);
    let t = lab.t;
    let x = lab.table_for(t, 2);
    lab.w(x + 8, entry64(x, UP));
    let pt = lab.table();
    let d0 = lab.data();
    lab.w(pt, entry64(d0, P | RW));
    let win = t + M2 + 0x1000;
    let mut e = Expect::new(d);
    if lab.enter(&mut e, false) {
        let c = Cpl::Sup;
        let want = format_args!("ok {x:#x}|P|RW");
        lab.expect_by(&mut e, "window PDE 1", Op::Read, win + 8, c, (&want, |got| {
            got.is_ok_and(|v| v & ADDR == x && v & (P | RW) == P | RW)
        }));
        for i in [0u64, 1, 3] {
            let want = lab.r(x + 8 * i);
            lab.expect(&mut e, "window read of a PDE", Op::Read, win + 8 * i, c, Want::Val(want));
        }
        lab.expect(&mut e, "t+4M before PDE 2 is present", Op::Read, t + 2 * M2, c, Want::Pf(0));
        lab.expect(&mut e, "write PDE 2 through the window", Op::Write(entry64(pt, UP)), win + 16, c, Want::Done);
        let pde2 = lab.r(x + 16);
        e.that(pde2 & !A == entry64(pt, UP), format_args!("PDE 2 in memory {pde2:#x}"));
        lab.expect(&mut e, "t+4M after the PDE write, no INVLPG", Op::Read, t + 2 * M2, c, Want::Val(marker(d0)));
        let want = format_args!("ok {:#x} (A/D aside)", entry64(d0, P | RW));
        lab.expect_by(&mut e, "window PTE 2 maps the new PT", Op::Read, t + M2 + 0x2000, c, (&want, |got| {
            got.is_ok_and(|v| v & !(A | D) == entry64(d0, P | RW))
        }));
        lab.leave();
    }
    let n = lab.probes;
    e.finish(format_args!("X={x:#x} PT={pt:#x}, {n} probes"))
}

/// Scenario 6: four 2 MiB PDEs alias one 2 MiB frame (SDM Vol. 3A 4.6,
/// 4.7): `t` U=1 W=1 (everything allowed at CPL 0 and 3, fetches too),
/// `t+2M` W=0 (supervisor write #PF 0x3 with CR0.WP=1, user write 0x7),
/// `t+4M` U=0 (user read 0x5, user write 0x7, user fetch 0x15), `t+6M`
/// XD=1 with EFER.NXE=1 (supervisor fetch 0x11, user fetch 0x15, reads
/// fine). The permissive alias keeps working before and after, and
/// writes through it are seen through the others (one frame).
/// (`long_break=1` makes the first read expect a wrong value.)
fn large_alias_perms(ctx: &mut Ctx<'_>, d: &mut Detail) -> Outcome {
    if !has_nx(&mut *ctx.m) {
        let _ = write!(d, "CPUID.80000001H:EDX.NX = 0");
        return Outcome::Skip;
    }
    // `long_break=1`: the first read expects a wrong value on purpose.
    let broken = u64::from(ctx.config.long_break);
    let mut lab = lab!(ctx, d);
    let t = lab.t;
    let Some(l) = lab.alloc_2m() else {
        let _ = write!(d, "no free 2 MiB-aligned 2 MiB below {IDENTITY_END:#x}");
        return Outcome::Fail;
    };
    let far = 0x1F_F000 + WR_OFF;
    lab.w(l, marker(l));
    lab.w(l + RET_OFF, 0xC3);
    lab.w(l + far, 0);
    let pd = lab.table_for(t, 2);
    lab.w(pd, pde_2m(l, P | RW | US));
    lab.w(pd + 8, pde_2m(l, P | US));
    lab.w(pd + 16, pde_2m(l, P | RW));
    lab.w(pd + 24, pde_2m(l, P | RW | US) | XD);
    let a = |i: u64| t + i * M2;
    let (s, u) = (Cpl::Sup, Cpl::User);
    let mut e = Expect::new(d);
    if lab.enter(&mut e, true) {
        let x = &mut e;
        lab.expect(x, "A0 read", Op::Read, a(0), s, Want::Val(marker(l) ^ broken));
        lab.expect(x, "A0 write", Op::Write(1), a(0) + far, s, Want::Done);
        lab.expect(x, "A0 user read", Op::Read, a(0) + far, u, Want::Val(1));
        lab.expect(x, "A0 user write", Op::Write(2), a(0) + far, u, Want::Done);
        lab.expect(x, "A0 fetch", Op::Fetch, a(0) + RET_OFF, s, Want::Done);
        lab.expect(x, "A0 user fetch", Op::Fetch, a(0) + RET_OFF, u, Want::Done);
        lab.expect(x, "A1(W=0) read", Op::Read, a(1) + far, s, Want::Val(2));
        lab.expect(x, "A1(W=0) write", Op::Write(3), a(1) + far, s, Want::Pf(ec::P | ec::W));
        lab.expect(x, "A1(W=0) user read", Op::Read, a(1), u, Want::Val(marker(l)));
        lab.expect(x, "A1(W=0) user write", Op::Write(3), a(1) + far, u, Want::Pf(ec::P | ec::W | ec::U));
        lab.expect(x, "A2(U=0) read", Op::Read, a(2) + far, s, Want::Val(2));
        lab.expect(x, "A2(U=0) write", Op::Write(4), a(2) + far, s, Want::Done);
        lab.expect(x, "A2(U=0) user read", Op::Read, a(2) + far, u, Want::Pf(ec::P | ec::U));
        lab.expect(x, "A2(U=0) user write", Op::Write(5), a(2) + far, u, Want::Pf(ec::P | ec::W | ec::U));
        lab.expect(x, "A2(U=0) user fetch", Op::Fetch, a(2) + RET_OFF, u, Want::Pf(ec::P | ec::U | ec::I));
        lab.expect(x, "A3(XD) read", Op::Read, a(3) + far, s, Want::Val(4));
        lab.expect(x, "A3(XD) fetch", Op::Fetch, a(3) + RET_OFF, s, Want::Pf(ec::P | ec::I));
        lab.expect(x, "A3(XD) user fetch", Op::Fetch, a(3) + RET_OFF, u, Want::Pf(ec::P | ec::U | ec::I));
        lab.expect(x, "A3(XD) user write", Op::Write(6), a(3) + far, u, Want::Done);
        lab.expect(x, "A0 again: user write", Op::Write(7), a(0) + far, u, Want::Done);
        lab.expect(x, "A0 again: fetch", Op::Fetch, a(0) + RET_OFF, s, Want::Done);
        lab.expect(x, "A0 again: user fetch", Op::Fetch, a(0) + RET_OFF, u, Want::Done);
        lab.expect(x, "A1 sees A0's write", Op::Read, a(1) + far, s, Want::Val(7));
        lab.leave();
    }
    let n = lab.probes;
    e.finish(format_args!("2 MiB frame {l:#x}, {n} probes"))
}

/// Scenario 7 (the CVE-2021-38198 class): two upper-level entries point
/// at one table, one with W=0 (SDM Vol. 3A 4.6.1: access rights combine
/// over all levels). Case 0: PDPTE 0 (W=1) and PDPTE 1 (W=0) name one PD,
/// the writable path touched first; case 1: the same, read-only path
/// first; case 2: PML4E 1 (W=1) and PML4E 2 (W=0) name one PDPT. Through
/// the read-only path a supervisor write is #PF 0x3 and a user write 0x7,
/// reads see what the writable path wrote; the writable path keeps
/// writing.
fn upper_alias<const CASE: u32>(ctx: &mut Ctx<'_>, d: &mut Detail) -> Outcome {
    let mut lab = lab!(ctx, d);
    let t = lab.t;
    let d0 = lab.data();
    let pt = lab.table();
    lab.w(pt, entry64(d0, P | RW | US));
    let (vw, vr) = if CASE == 2 {
        let pdpt = lab.table_for(t, 3);
        let pd = lab.table();
        lab.w(pdpt, entry64(pd, UP));
        lab.w(pd, entry64(pt, UP));
        lab.w(lab.pml4 + 8 * idx(t + SLOT, 4), entry64(pdpt, P | US));
        (t, t + SLOT)
    } else {
        let pdpt = lab.table_for(t, 3);
        let pd = lab.table();
        lab.w(pdpt, entry64(pd, UP));
        lab.w(pdpt + 8, entry64(pd, P | US));
        lab.w(pd, entry64(pt, UP));
        (t, t + G1)
    };
    let (vw, vr) = (vw + WR_OFF, vr + WR_OFF);
    let (s, u) = (Cpl::Sup, Cpl::User);
    let (pw, upw) = (ec::P | ec::W, ec::P | ec::W | ec::U);
    let mut e = Expect::new(d);
    if lab.enter(&mut e, false) {
        let x = &mut e;
        if CASE == 0 {
            lab.expect(x, "rw path write", Op::Write(1), vw, s, Want::Done);
            lab.expect(x, "rw path user write", Op::Write(2), vw, u, Want::Done);
        }
        lab.expect(x, "ro path read", Op::Read, vr, s, Want::Val(if CASE == 0 { 2 } else { 0 }));
        lab.expect(x, "ro path write", Op::Write(3), vr, s, Want::Pf(pw));
        lab.expect(x, "ro path user write", Op::Write(3), vr, u, Want::Pf(upw));
        lab.expect(x, "rw path write", Op::Write(4), vw, s, Want::Done);
        lab.expect(x, "rw path user write", Op::Write(5), vw, u, Want::Done);
        lab.expect(x, "ro path read after", Op::Read, vr, u, Want::Val(5));
        lab.expect(x, "ro path write after", Op::Write(6), vr, s, Want::Pf(pw));
        lab.expect(x, "ro path user write after", Op::Write(6), vr, u, Want::Pf(upw));
        lab.expect(x, "rw path read", Op::Read, vw, s, Want::Val(5));
        lab.leave();
    }
    let n = lab.probes;
    e.finish(format_args!("rw {vw:#x} ro {vr:#x}, {n} probes"))
}

/// Scenario 9: guest writes of a PTE of the active tables, each followed
/// by what the SDM then guarantees (Vol. 3A 4.10.4.2, 4.10.4.3):
/// 0 a not-present PTE made present by MOV translates without INVLPG;
/// 1 a remap + INVLPG translates to the new frame;
/// 2 clearing W + INVLPG makes a write #PF 0x3, reads still work;
/// 3 a 4-byte write of the low half remaps (+ INVLPG); a 4-byte write of
///   the high half setting bit 63 with EFER.NXE=0 makes it reserved
///   (#PF 0x9, Vol. 3A 4.5.4) and clearing it again undoes that;
/// 4 `rep stosb` zeroing 8 PTEs + INVLPG: each #PF 0x0;
/// 5 `and byte` clearing W + INVLPG: write #PF 0x3;
/// 6 `lock cmpxchg`: a mismatch leaves the PTE, a match remaps (+ INVLPG).
fn pt_write<const CASE: u32>(ctx: &mut Ctx<'_>, d: &mut Detail) -> Outcome {
    // QEMU TCG reports reserved-bit faults with P=0 (see `hostile_rsvd`).
    let rsvd = if ctx.signature.is_tcg() { ec::RSVD } else { ec::P | ec::RSVD };
    let mut lab = lab!(ctx, d);
    let t = lab.t;
    let pt = lab.table_for(t, 1);
    let (d0, d1) = (lab.data(), lab.data());
    let rw = P | RW | US;
    let s = Cpl::Sup;
    let v = |i: u64| t + (i << 12);
    let pte = |i: u64| pt + 8 * i;
    match CASE {
        0 => {}
        4 => (8..16).for_each(|i| lab.w(pte(i), entry64(d0, rw))),
        _ => lab.w(pte(1), entry64(d0, rw)),
    }
    let mut e = Expect::new(d);
    if lab.enter(&mut e, false) {
        let x = &mut e;
        match CASE {
            0 => {
                lab.expect(x, "not present", Op::Read, v(0), s, Want::Pf(0));
                lab.expect(x, "not present, user", Op::Read, v(0), Cpl::User, Want::Pf(ec::U));
                lab.expect(x, "PTE write", Op::Write(entry64(d0, rw)), pte(0), s, Want::Done);
                lab.expect(x, "present, no INVLPG", Op::Read, v(0), s, Want::Val(marker(d0)));
                lab.expect(x, "present, user", Op::Read, v(0), Cpl::User, Want::Val(marker(d0)));
            }
            1 => {
                lab.expect(x, "before", Op::Read, v(1), s, Want::Val(marker(d0)));
                lab.expect(x, "PTE write", Op::Write(entry64(d1, rw)), pte(1), s, Want::Done);
                lab.invlpg(x, v(1));
                lab.expect(x, "remapped", Op::Read, v(1), s, Want::Val(marker(d1)));
            }
            2 => {
                lab.expect(x, "write", Op::Write(9), v(1) + WR_OFF, s, Want::Done);
                lab.expect(x, "PTE write", Op::Write(entry64(d0, P | US)), pte(1), s, Want::Done);
                lab.invlpg(x, v(1));
                lab.expect(x, "write after W=0", Op::Write(10), v(1) + WR_OFF, s, Want::Pf(ec::P | ec::W));
                lab.expect(x, "read after W=0", Op::Read, v(1) + WR_OFF, s, Want::Val(9));
            }
            3 => {
                lab.expect(x, "before", Op::Read, v(1), s, Want::Val(marker(d0)));
                lab.expect(x, "low half", Op::Write32(entry64(d1, rw) as u32), pte(1), s, Want::Done);
                lab.invlpg(x, v(1));
                lab.expect(x, "low half remapped", Op::Read, v(1), s, Want::Val(marker(d1)));
                lab.expect(x, "high half bit 63", Op::Write32(0x8000_0000), pte(1) + 4, s, Want::Done);
                lab.invlpg(x, v(1));
                lab.expect(x, "bit 63 with NXE=0", Op::Read, v(1), s, Want::Pf(rsvd));
                lab.expect(x, "high half 0", Op::Write32(0), pte(1) + 4, s, Want::Done);
                lab.invlpg(x, v(1));
                lab.expect(x, "bit 63 clear", Op::Read, v(1), s, Want::Val(marker(d1)));
            }
            4 => {
                for i in 8..16 {
                    lab.expect(x, "before", Op::Read, v(i), s, Want::Val(marker(d0)));
                }
                lab.expect(x, "rep stosb", Op::RepStosb { byte: 0, len: 64 }, pte(8), s, Want::Done);
                for i in 8..16 {
                    lab.invlpg(x, v(i));
                    lab.expect(x, "zeroed PTE", Op::Read, v(i), s, Want::Pf(0));
                }
            }
            5 => {
                lab.expect(x, "write", Op::Write(9), v(1) + WR_OFF, s, Want::Done);
                lab.expect(x, "and byte", Op::AndByte(!(RW as u8)), pte(1), s, Want::Done);
                let p = lab.r(pte(1));
                x.that(p & !(A | D) == entry64(d0, P | US), format_args!("PTE after and: {p:#x}"));
                lab.invlpg(x, v(1));
                lab.expect(x, "write after and", Op::Write(10), v(1) + WR_OFF, s, Want::Pf(ec::P | ec::W));
                lab.expect(x, "read after and", Op::Read, v(1) + WR_OFF, s, Want::Val(9));
            }
            _ => {
                lab.expect(x, "before", Op::Read, v(1), s, Want::Val(marker(d0)));
                let cur = lab.r(pte(1));
                let op = Op::LockCmpxchg { expect: cur ^ 0x1000, new: entry64(d1, rw) };
                lab.expect(x, "cmpxchg mismatch", op, pte(1), s, Want::Val(cur));
                lab.invlpg(x, v(1));
                lab.expect(x, "unchanged", Op::Read, v(1), s, Want::Val(marker(d0)));
                let op = Op::LockCmpxchg { expect: cur, new: entry64(d1, rw) };
                lab.expect(x, "cmpxchg match", op, pte(1), s, Want::Val(cur));
                lab.invlpg(x, v(1));
                lab.expect(x, "remapped", Op::Read, v(1), s, Want::Val(marker(d1)));
            }
        }
        lab.leave();
    }
    let n = lab.probes;
    e.finish(format_args!("PT {pt:#x}, {n} probes"))
}

/// Scenario 20 (SDM Vol. 3A 4.8): a read sets A in every entry of the walk
/// (PML4E, PDPTE, PDE, PTE) and leaves D clear; the first write sets D in
/// the leaf; a first access that is a write sets both; after the guest
/// clears A and D in the leaf and INVLPGs, a read sets A again and a write
/// D again. The same for a 2 MiB leaf.
fn ad_bits(ctx: &mut Ctx<'_>, d: &mut Detail) -> Outcome {
    let mut lab = lab!(ctx, d);
    let t = lab.t;
    let Some(l) = lab.alloc_2m() else {
        let _ = write!(d, "no free 2 MiB-aligned 2 MiB below {IDENTITY_END:#x}");
        return Outcome::Fail;
    };
    lab.w(l, marker(l));
    let pt = lab.table_for(t, 1);
    let (d0, d1) = (lab.data(), lab.data());
    let rw = P | RW;
    lab.w(pt, entry64(d0, rw));
    lab.w(pt + 8, entry64(d1, rw));
    let pd = lab.table_for(t, 2);
    lab.w(pd + 8, pde_2m(l, rw));
    let (e4, e3, e2) = (lab.slot(t, 4), lab.slot(t, 3), lab.slot(t, 2));
    let s = Cpl::Sup;
    let mut e = Expect::new(d);
    if lab.enter(&mut e, false) {
        let x = &mut e;
        let ad = |lab: &mut Lab<'_>, x: &mut Expect<'_>, what: &str, slot: u64, want: u64| {
            let got = lab.r(slot) & (A | D);
            x.that(got == want, format_args!("{what}: A/D {got:#x}, want {want:#x}"));
        };
        lab.expect(x, "read", Op::Read, t, s, Want::Val(marker(d0)));
        ad(&mut lab, x, "PTE after read", pt, A);
        ad(&mut lab, x, "PDE after read", e2, A);
        ad(&mut lab, x, "PDPTE after read", e3, A);
        let g = lab.r(e4) & A;
        x.that(g == A, format_args!("PML4E after read: A {g:#x}"));
        lab.expect(x, "write", Op::Write(1), t + WR_OFF, s, Want::Done);
        ad(&mut lab, x, "PTE after write", pt, A | D);
        lab.w(pt, entry64(d0, rw));
        lab.invlpg(x, t);
        lab.expect(x, "read after clearing", Op::Read, t, s, Want::Val(marker(d0)));
        ad(&mut lab, x, "PTE after clear+read", pt, A);
        lab.expect(x, "write after clearing", Op::Write(2), t + WR_OFF, s, Want::Done);
        ad(&mut lab, x, "PTE after clear+write", pt, A | D);
        lab.expect(x, "first access a write", Op::Write(3), t + 0x1000 + WR_OFF, s, Want::Done);
        ad(&mut lab, x, "PTE 1 after write", pt + 8, A | D);
        lab.expect(x, "2M read", Op::Read, t + M2, s, Want::Val(marker(l)));
        ad(&mut lab, x, "2M PDE after read", pd + 8, A);
        lab.expect(x, "2M write", Op::Write(4), t + M2 + 0x1F_F000, s, Want::Done);
        ad(&mut lab, x, "2M PDE after write", pd + 8, A | D);
        lab.w(pd + 8, pde_2m(l, rw));
        lab.invlpg(x, t + M2);
        lab.invlpg(x, t + M2 + 0x1F_F000);
        lab.expect(x, "2M write after clearing", Op::Write(5), t + M2 + 0x1F_F000, s, Want::Done);
        ad(&mut lab, x, "2M PDE after clear+write", pd + 8, A | D);
        lab.leave();
    }
    let n = lab.probes;
    e.finish(format_args!("PT {pt:#x} 2M {l:#x}, {n} probes"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::longcpu::{Fault, GP, PF};
    use crate::checks::Ctx;

    const T: u64 = 0x80_0000_0000;
    const T2: u64 = 0x100_0000_0000;

    #[test]
    fn indices_and_matching() {
        assert_eq!(idx(T, 4), 1);
        assert_eq!(idx(T2, 4), 2);
        assert_eq!(idx(T + G1, 3), 1);
        assert_eq!(idx(T + 3 * M2, 2), 3);
        assert_eq!(idx(T + 0x5000, 1), 5);
        let pf = |e, cr2| Err(Fault { vector: PF, error_code: e, cr2 });
        assert!(matches(pf(3, 0x10), Want::Pf(3), 0x10));
        assert!(!matches(pf(3, 0x10), Want::Pf(3), 0x18), "CR2 is compared");
        assert!(!matches(pf(7, 0x10), Want::Pf(3), 0x10));
        assert!(!matches(Ok(0), Want::Pf(3), 0x10));
        assert!(!matches(pf(3, 0x10), Want::Done, 0x10));
        assert!(matches(Ok(5), Want::Val(5), 0) && !matches(Ok(4), Want::Val(5), 0));
        assert!(matches(Err(Fault { vector: GP, error_code: 0, cr2: 9 }), Want::Gp0, 0));
        assert!(!matches(Err(Fault { vector: GP, error_code: 8, cr2: 0 }), Want::Gp0, 0));
    }

    /// Runs every check on the fake (under the hypervisor's signature, so
    /// nothing skips) with the model bugs `bugs`; returns the console.
    fn run_with(bugs: u32) -> String {
        use super::super::fake::{Fake, FAKE_INFO};
        use super::super::fake_long::BUGS;
        use crate::report::Tally;
        BUGS.with(|b| b.set(bugs));
        let mut m = Fake::hv("expect_hv=1 modes=0");
        let (mut out, tally) = (String::new(), Tally::new());
        Ctx::start(&mut m, &mut out, &tally, FAKE_INFO).run_all();
        BUGS.with(|b| b.set(0));
        out
    }

    #[test]
    fn every_check_passes_on_the_reference_model() {
        let out = run_with(0);
        for c in CHECKS {
            assert!(out.contains(&format!("check PASS {}:", c.name)), "{}\n{out}", c.name);
        }
    }

    #[test]
    fn each_check_fails_when_the_mmu_breaks_its_rule() {
        use super::super::fake_long::bug;
        let cases: &[(u32, &[&str])] = &[
            (bug::UPPER_W, &["long/upper-alias-perms/rw-first", "long/upper-alias-perms/ro-first", "long/upper-alias-perms/pml4"]),
            (bug::NO_DIRTY, &["long/ad-bits"]),
            (bug::NO_RSVD, &["long/hostile/rsvd-bits", "long/pt-write/write32"]),
            (bug::LARGE_U, &["long/large-alias-perms"]),
            (bug::NO_XD, &["long/large-alias-perms"]),
            (bug::CR3_RSVD, &["long/hostile/cr3-reserved"]),
            (
                bug::NO_INVLPG,
                &[
                    "long/pt-write/remap-invlpg",
                    "long/pt-write/clear-w-invlpg",
                    "long/pt-write/write32",
                    "long/pt-write/rep-stosb",
                    "long/pt-write/and-byte",
                    "long/pt-write/lock-cmpxchg",
                    "long/ad-bits",
                ],
            ),
            (bug::NEG_CACHE, &["long/self-map", "long/pt-write/np-to-p"]),
        ];
        for (b, names) in cases {
            let out = run_with(*b);
            for n in *names {
                assert!(out.contains(&format!("check FAIL {n}:")), "bug {b:#x}: {n} did not fail\n{out}");
            }
        }
    }

    /// A probe that misses its expectation gets a report: the probe, the
    /// guest's entries on the walk and (under the hypervisor) the shadow's,
    /// at most [`crate::xlate::PER_CHECK`] per check; bare, no hypercall.
    #[test]
    fn failing_probes_get_a_translation_report() {
        use super::super::fake::{Fake, FAKE_INFO, FAKE_SHADOW_ROOT};
        use super::super::fake_long::{bug, BUGS};
        use crate::report::Tally;
        let out = run_with(bug::LARGE_U);
        let report: Vec<&str> = out.lines().filter(|l| l.starts_with("xlate long/large-alias-perms: ")).collect();
        let heads: Vec<&str> = report.iter().copied().filter(|l| !l.contains(":   ")).collect();
        assert_eq!(heads.len(), crate::xlate::PER_CHECK as usize, "{out}");
        assert!(heads[0].contains("A2(U=0) user read: la 0x"), "{out}");
        assert!(heads[0].contains(", read at CPL 3: expected #PF ec=0x5 cr2=0x"), "{out}");
        assert!(report.iter().any(|l| l.contains("    PDE[2] @0x") && l.ends_with("P W A D PS")), "{out}");
        assert!(report.iter().any(|l| l.contains("=> 2 MiB page") && l.contains("over the walk U=0 W=1 XD=0")), "{out}");
        let root = format!("shadow: hardware CR3 {FAKE_SHADOW_ROOT:#x}");
        assert_eq!(report.iter().filter(|l| l.contains(&root)).count(), heads.len(), "{out}");
        // The report comes before the check's line, which the runner files it under.
        let first = out.find("xlate long/large-alias-perms: ").unwrap();
        assert!(first < out.find("check FAIL long/large-alias-perms: ").unwrap());
        // Bare: the guest walk only, and no VMCALL.
        BUGS.with(|b| b.set(bug::LARGE_U));
        let mut m = Fake::bare("only=long/large-alias-perms");
        let (mut out, tally) = (String::new(), Tally::new());
        Ctx::start(&mut m, &mut out, &tally, FAKE_INFO).run_all();
        BUGS.with(|b| b.set(0));
        assert!(out.contains("xlate long/large-alias-perms:   shadow: none (bare: no hypervisor"), "{out}");
        assert_eq!((m.vmcalls, m.shadow_walks.len()), (0, 0));
    }

    #[test]
    fn names() {
        assert!(CHECKS.iter().all(|c| c.name.starts_with("long/")));
    }
}
