//! `long/...` checks of the paging controls and large pages: scenarios 5
//! (2 MiB pages, and a page table inside a 2 MiB page), 11 (CR0.WP), 12
//! (EFER.NXE), 13 (SMEP/SMAP with CR0.WP=0) and 15 (global pages) of
//! DESIGN.md section 4, in long mode, on the laboratory of [`super::lab`].
//!
//! Under a shadow MMU these drive the role bits that depend on the controls
//! (CR0.WP, EFER.NX, SMEP and SMAP with WP=0) both ways for the same guest
//! frames, and the write tracking of a page table reached through a 2 MiB
//! mapping. Where the SDM leaves a TLB outcome open after a control change,
//! the check reloads CR3 (or INVLPGs) first, and says why.

use super::lab::*;
use crate::checks::Ctx;
use crate::longcpu::{cr4, ec, Cpl, Op};
use crate::modes::paging::{entry64, pde_2m, A, D, P, RW, US};
use crate::modes::space::IDENTITY_END;
use crate::report::{Detail, Expect};
use core::fmt::Write;
use shared::Outcome;

/// G (bit 8) of a PTE or 2 MiB PDE: a global translation when CR4.PGE=1
/// (SDM Vol. 3A 4.10.2.4).
const G: u64 = 1 << 8;
/// CPUID.(EAX=07H,ECX=0):EBX.SMEP \[bit 7\].
const CPUID7_SMEP: u32 = 1 << 7;
/// CPUID.(EAX=07H,ECX=0):EBX.SMAP \[bit 20\].
const CPUID7_SMAP: u32 = 1 << 20;
/// CPUID.01H:EDX.PGE \[bit 13\].
const CPUID1_PGE: u32 = 1 << 13;

/// 4 KiB pages inside the 2 MiB page of [`large_2m`] that it reads and
/// writes: both halves, first and last page of each.
const LARGE_OFFS: [u64; 6] = [0x0000, 0x1000, 0xF_F000, 0x10_0000, 0x13_7000, 0x1F_F000];
/// Frames inside that 2 MiB page used as page tables elsewhere: X (upper
/// half, touched through the 2 MiB mapping before it is a table) and Y
/// (lower half, a table before the 2 MiB mapping writes it).
const X_OFF: u64 = 0x15_3000;
const Y_OFF: u64 = 0x0A_5000;

/// The value an entry read back through a mapping should have, give or take
/// the A and D flags the processor sets (SDM Vol. 3A 4.8).
fn same_entry(got: crate::longcpu::Probe, want: u64) -> bool {
    got.is_ok_and(|v| v & !(A | D) == want)
}

/// Scenario 5 in long mode (SDM Vol. 3A 4.5.4, Table 4-17; 4.10.4).
///
/// A 2 MiB page (PDE with PS=1) maps 2 MiB of physical memory: bits 20:0
/// of the linear address are the offset. Reads through it at six 4 KiB
/// parts of both 1 MiB halves return what memory holds there, and writes
/// land at exactly that physical address.
///
/// A frame inside the 2 MiB page that is also a page table elsewhere is
/// an ordinary page table: writes to it through the 2 MiB mapping change
/// the translations it gives. A not-present PTE made present that way
/// translates at once, with no INVLPG (4.10.2.3, 4.10.4.3: not-present
/// entries are not cached); a remapped PTE translates to the new frame
/// after INVLPG (4.10.4.1), and a PTE made not present faults after
/// INVLPG. Both orders: X written through the 2 MiB mapping before it
/// is used as a table, Y used as a table before its first such write.
/// (Under a shadow MMU that shadows the 2 MiB page with 4 KiB entries,
/// those frames must be write-tracked through that mapping.)
pub(super) fn large_2m(ctx: &mut Ctx<'_>, d: &mut Detail) -> Outcome {
    let mut lab = lab!(ctx, d);
    let t = lab.t;
    let Some(l) = lab.alloc_2m() else {
        let _ = write!(d, "no free 2 MiB-aligned 2 MiB below {IDENTITY_END:#x}");
        return Outcome::Fail;
    };
    for o in LARGE_OFFS {
        lab.w(l + o, marker(l + o));
        lab.w(l + o + WR_OFF, 0);
    }
    let (x, y) = (l + X_OFF, l + Y_OFF);
    for i in 0..512 {
        lab.w(x + 8 * i, 0);
        lab.w(y + 8 * i, 0);
    }
    let (d0, d1) = (lab.data(), lab.data());
    let rw = P | RW;
    let pd = lab.table_for(t, 2);
    lab.w(pd, pde_2m(l, rw));
    // u: X is its PT; u + 2 MiB: Y is its PT. PTE 0 not present, PTE 1 -> d0.
    let u = t + G1;
    let pdu = lab.table_for(u, 2);
    lab.w(pdu, entry64(x, UP));
    lab.w(pdu + 8, entry64(y, UP));
    lab.w(x + 8, entry64(d0, rw));
    lab.w(y + 8, entry64(d0, rw));
    let s = Cpl::Sup;
    let mut e = Expect::new(d);
    if lab.enter(&mut e, false) {
        let ex = &mut e;
        for (i, o) in (1u64..).zip(LARGE_OFFS) {
            lab.expect(ex, "2M read", Op::Read, t + o, s, Want::Val(marker(l + o)));
            lab.expect(ex, "2M write", Op::Write(i), t + o + WR_OFF, s, Want::Done);
        }
        for (i, o) in (1u64..).zip(LARGE_OFFS) {
            lab.expect(ex, "2M read back", Op::Read, t + o + WR_OFF, s, Want::Val(i));
            let m = lab.r(l + o + WR_OFF);
            ex.that(m == i, format_args!("memory at {:#x}: {m:#x}, want {i:#x}", l + o + WR_OFF));
        }
        // X: the 2 MiB mapping writes it first (PTE 511 stays not present).
        let wx = t + X_OFF;
        lab.expect(ex, "X: 2M write before it is a PT", Op::Write(0), wx + 8 * 511, s, Want::Done);
        lab.expect(ex, "X: PTE 1", Op::Read, u + 0x1000, s, Want::Val(marker(d0)));
        lab.expect(ex, "X: PTE 0 not present", Op::Read, u, s, Want::Pf(0));
        lab.expect(ex, "X: PTE 0 written through 2M", Op::Write(entry64(d1, rw)), wx, s, Want::Done);
        lab.expect(ex, "X: PTE 0 present, no INVLPG", Op::Read, u, s, Want::Val(marker(d1)));
        lab.expect(ex, "X: PTE 1 remapped through 2M", Op::Write(entry64(d1, rw)), wx + 8, s, Want::Done);
        lab.invlpg(ex, u + 0x1000);
        lab.expect(ex, "X: PTE 1 after INVLPG", Op::Read, u + 0x1000, s, Want::Val(marker(d1)));
        let want = format_args!("ok {:#x} (A/D aside)", entry64(d1, rw));
        lab.expect_by(ex, "X: PTE 1 read through 2M", Op::Read, wx + 8, s, (&want, |got| same_entry(got, entry64(d1, rw))));
        // Y: a page table first, then written through the 2 MiB mapping.
        let wy = t + Y_OFF;
        let v = u + M2;
        lab.expect(ex, "Y: PTE 1", Op::Read, v + 0x1000, s, Want::Val(marker(d0)));
        lab.expect(ex, "Y: PTE 0 not present", Op::Read, v, s, Want::Pf(0));
        lab.expect(ex, "Y: PTE 0 written through 2M", Op::Write(entry64(d1, rw)), wy, s, Want::Done);
        lab.expect(ex, "Y: PTE 0 present, no INVLPG", Op::Read, v, s, Want::Val(marker(d1)));
        lab.expect(ex, "Y: PTE 1 remapped through 2M", Op::Write(entry64(d1, rw)), wy + 8, s, Want::Done);
        lab.invlpg(ex, v + 0x1000);
        lab.expect(ex, "Y: PTE 1 after INVLPG", Op::Read, v + 0x1000, s, Want::Val(marker(d1)));
        lab.expect(ex, "Y: PTE 1 cleared through 2M", Op::Write(0), wy + 8, s, Want::Done);
        lab.invlpg(ex, v + 0x1000);
        lab.expect(ex, "Y: PTE 1 not present after INVLPG", Op::Read, v + 0x1000, s, Want::Pf(0));
        lab.leave();
    }
    let n = lab.probes;
    e.finish(format_args!("2 MiB frame {l:#x}, PTs X={x:#x} Y={y:#x} inside it, {n} probes"))
}

/// Scenario 11 (SDM Vol. 3A 4.6.1): with CR0.WP=0 a supervisor write to a
/// read-only page works, user or supervisor page alike (the value lands);
/// with CR0.WP=1 it is #PF with error code 0x3 (P, W/R; 4.7) and CR2 = the
/// address, and memory keeps its value. User accesses ignore WP: a user
/// read of the U=1 R/W=0 page works, a user write is #PF 0x7 either way.
///
/// WP goes 0 -> 1 -> 0 -> 1 on the same pages with no INVLPG in between.
/// MOV to CR0 need not invalidate anything unless PG goes 1 -> 0
/// (4.10.4.1), but a TLB entry caches the combined R/W and U/S flags of
/// the walk, not a verdict under CR0.WP (4.10.2.2), and the access rules
/// of 4.6.1 apply the current CR0.WP to them, so every outcome is
/// determined. (A shadow MMU must not keep the supervisor-writable mapping
/// it made for WP=0 once WP=1.) A final INVLPG shows the same with a fresh
/// walk.
pub(super) fn cr0_wp(ctx: &mut Ctx<'_>, d: &mut Detail) -> Outcome {
    let mut lab = lab!(ctx, d);
    let t = lab.t;
    let pt = lab.table_for(t, 1);
    let (d0, d1, d2) = (lab.data(), lab.data(), lab.data());
    lab.w(pt, entry64(d0, P | US));
    lab.w(pt + 8, entry64(d1, P));
    lab.w(pt + 16, entry64(d2, P | RW | US));
    let (uro, sro, urw) = (t + WR_OFF, t + 0x1000 + WR_OFF, t + 0x2000 + WR_OFF);
    let (s, u) = (Cpl::Sup, Cpl::User);
    let (pw, upw) = (ec::P | ec::W, ec::P | ec::W | ec::U);
    let mut e = Expect::new(d);
    if lab.enter(&mut e, false) {
        let x = &mut e;
        lab.cpu().set_cr0_wp(false);
        lab.expect(x, "WP=0: sup write U=1 W=0", Op::Write(1), uro, s, Want::Done);
        let m = lab.r(d0 + WR_OFF);
        x.that(m == 1, format_args!("WP=0: the write landed: memory {m:#x}, want 0x1"));
        lab.expect(x, "WP=0: sup read", Op::Read, uro, s, Want::Val(1));
        lab.expect(x, "WP=0: user read", Op::Read, uro, u, Want::Val(1));
        lab.expect(x, "WP=0: user write", Op::Write(9), uro, u, Want::Pf(upw));
        lab.expect(x, "WP=0: sup write after user access", Op::Write(2), uro, s, Want::Done);
        lab.expect(x, "WP=0: sup write U=0 W=0", Op::Write(3), sro, s, Want::Done);
        lab.cpu().set_cr0_wp(true);
        lab.expect(x, "WP=1: sup write U=1 W=0", Op::Write(4), uro, s, Want::Pf(pw));
        lab.expect(x, "WP=1: sup write U=0 W=0", Op::Write(4), sro, s, Want::Pf(pw));
        let m = lab.r(d0 + WR_OFF);
        x.that(m == 2, format_args!("WP=1: memory after the faulting write {m:#x}, want 0x2"));
        lab.expect(x, "WP=1: sup read", Op::Read, uro, s, Want::Val(2));
        lab.expect(x, "WP=1: user read", Op::Read, uro, u, Want::Val(2));
        lab.expect(x, "WP=1: user write", Op::Write(9), uro, u, Want::Pf(upw));
        lab.expect(x, "WP=1: sup write U=1 W=1", Op::Write(5), urw, s, Want::Done);
        lab.cpu().set_cr0_wp(false);
        lab.expect(x, "WP=0 again: sup write U=1 W=0", Op::Write(6), uro, s, Want::Done);
        lab.expect(x, "WP=0 again: sup read", Op::Read, uro, s, Want::Val(6));
        lab.expect(x, "WP=0 again: sup write U=0 W=0", Op::Write(7), sro, s, Want::Done);
        lab.cpu().set_cr0_wp(true);
        lab.expect(x, "WP=1 again: sup write U=1 W=0", Op::Write(8), uro, s, Want::Pf(pw));
        lab.expect(x, "WP=1 again: user write", Op::Write(8), uro, u, Want::Pf(upw));
        lab.expect(x, "WP=1 again: sup write U=0 W=0", Op::Write(8), sro, s, Want::Pf(pw));
        lab.invlpg(x, uro);
        lab.expect(x, "WP=1 after INVLPG: sup write", Op::Write(8), uro, s, Want::Pf(pw));
        lab.expect(x, "WP=1 after INVLPG: user read", Op::Read, uro, u, Want::Val(6));
        let m = (lab.r(d0 + WR_OFF), lab.r(d1 + WR_OFF), lab.r(d2 + WR_OFF));
        x.that(m == (6, 7, 5), format_args!("memory at the end {m:x?}, want (6, 7, 5)"));
        lab.leave();
    }
    let n = lab.probes;
    e.finish(format_args!("PT {pt:#x}, {n} probes"))
}

/// Scenario 12 (SDM Vol. 3A 4.6.2, 4.5.4, 4.7): bit 63 (XD) of a paging
/// entry. With EFER.NXE=1 it forbids fetches (XD is ORed over the walk):
/// a fetch is #PF 0x11 (I/D, P), a user fetch 0x15, reads and writes
/// work. With EFER.NXE=0 bit 63 is reserved: every access through it,
/// read, write or fetch, is #PF with RSVD (0x9 read and fetch, 0xB write,
/// 0xD user read; I/D is 0 since NXE=0 and SMEP=0). Cases: a PTE, a
/// 2 MiB PDE, and a PDE naming a page table. A page without XD works
/// throughout.
///
/// NXE is toggled by WRMSR in long mode, 1 -> 0 -> 1. WRMSR is not among
/// the operations that invalidate TLBs (4.10.4.1) and a TLB caches XD only
/// as needed with NXE=1 (4.10.2.2), so after each toggle the check reloads
/// CR3, which invalidates every non-global translation (4.10.4.1); the
/// outcomes are then determined. QEMU TCG reports reserved-bit faults with
/// P=0 (see `long/hostile/rsvd-bits`).
pub(super) fn efer_nxe(ctx: &mut Ctx<'_>, d: &mut Detail) -> Outcome {
    if !has_nx(&mut *ctx.m) {
        let _ = write!(d, "CPUID.80000001H:EDX.NX = 0");
        return Outcome::Skip;
    }
    let rsvd = if ctx.signature.is_tcg() { ec::RSVD } else { ec::P | ec::RSVD };
    let mut lab = lab!(ctx, d);
    let t = lab.t;
    let pt = lab.table_for(t, 1);
    let (d0, d1) = (lab.data(), lab.data());
    // The 2 MiB page: the identity-mapped 2 MiB around d1, read and
    // fetched only at d1 (its marker and `ret`).
    let l = d1 & !(M2 - 1);
    let urw = P | RW | US;
    lab.w(pt, entry64(d0, urw) | XD);
    lab.w(pt + 8, entry64(d1, urw));
    let pd = lab.table_for(t, 2);
    lab.w(pd + 8, pde_2m(l, urw) | XD);
    let pt2 = lab.table();
    lab.w(pd + 16, entry64(pt2, UP) | XD);
    lab.w(pt2, entry64(d1, urw));
    let (vx, vc, v2m, vpde) = (t, t + 0x1000, t + M2 + (d1 - l), t + 2 * M2);
    let (s, u) = (Cpl::Sup, Cpl::User);
    let mut e = Expect::new(d);
    if lab.enter(&mut e, true) {
        let x = &mut e;
        for round in 0..2 {
            let w = 1 + round;
            lab.expect(x, "NXE=1: XD PTE fetch", Op::Fetch, vx + RET_OFF, s, Want::Pf(ec::P | ec::I));
            lab.expect(x, "NXE=1: XD PTE user fetch", Op::Fetch, vx + RET_OFF, u, Want::Pf(ec::P | ec::U | ec::I));
            lab.expect(x, "NXE=1: XD PTE read", Op::Read, vx, s, Want::Val(marker(d0)));
            lab.expect(x, "NXE=1: XD PTE write", Op::Write(w), vx + WR_OFF, s, Want::Done);
            lab.expect(x, "NXE=1: XD PTE user read", Op::Read, vx + WR_OFF, u, Want::Val(w));
            lab.expect(x, "NXE=1: XD 2M fetch", Op::Fetch, v2m + RET_OFF, s, Want::Pf(ec::P | ec::I));
            lab.expect(x, "NXE=1: XD 2M read", Op::Read, v2m, s, Want::Val(marker(d1)));
            lab.expect(x, "NXE=1: XD PDE fetch", Op::Fetch, vpde + RET_OFF, s, Want::Pf(ec::P | ec::I));
            lab.expect(x, "NXE=1: XD PDE read", Op::Read, vpde, s, Want::Val(marker(d1)));
            lab.expect(x, "NXE=1: clean fetch", Op::Fetch, vc + RET_OFF, s, Want::Done);
            if round == 1 {
                break;
            }
            lab.cpu().set_efer_nxe(false);
            lab.reload_cr3(x);
            lab.expect(x, "NXE=0: XD PTE read", Op::Read, vx, s, Want::Pf(rsvd));
            lab.expect(x, "NXE=0: XD PTE write", Op::Write(7), vx + WR_OFF, s, Want::Pf(rsvd | ec::W));
            lab.expect(x, "NXE=0: XD PTE user read", Op::Read, vx, u, Want::Pf(rsvd | ec::U));
            lab.expect(x, "NXE=0: XD PTE fetch", Op::Fetch, vx + RET_OFF, s, Want::Pf(rsvd));
            lab.expect(x, "NXE=0: XD 2M read", Op::Read, v2m, s, Want::Pf(rsvd));
            lab.expect(x, "NXE=0: XD PDE read", Op::Read, vpde, s, Want::Pf(rsvd));
            lab.expect(x, "NXE=0: clean read", Op::Read, vc, s, Want::Val(marker(d1)));
            lab.expect(x, "NXE=0: clean fetch", Op::Fetch, vc + RET_OFF, s, Want::Done);
            let m = lab.r(d0 + WR_OFF);
            x.that(m == 1, format_args!("NXE=0: memory behind the XD PTE {m:#x}, want 0x1"));
            lab.cpu().set_efer_nxe(true);
            lab.reload_cr3(x);
        }
        lab.leave();
    }
    let n = lab.probes;
    let q = if rsvd & ec::P == 0 { " (QEMU TCG: RSVD faults expected with P=0)" } else { "" };
    e.finish(format_args!("PT {pt:#x} 2M {l:#x}, {n} probes{q}"))
}

/// Scenario 13 (SDM Vol. 3A 4.6.1, 4.7): supervisor accesses to user pages
/// under CR4.SMEP and CR4.SMAP, with CR0.WP=0 and, for comparison, WP=1.
///
/// * SMEP=1: a supervisor fetch from a user page (U/S=1 at every level)
///   is #PF 0x11 (P, I/D; I/D is reported because SMEP=1, even with
///   EFER.NXE=0 as here). With WP=0 a supervisor write to the user
///   read-only page works, and the page still cannot be fetched from.
/// * SMAP=1: an explicit supervisor read of a user page is #PF 0x1 with
///   EFLAGS.AC=0 and works with AC=1; a write is #PF 0x3 with AC=0. With
///   WP=0 and AC=1 data may be written to any user page, read-only ones
///   included; with WP=1 and AC=1 only where R/W=1 (0x3 otherwise).
///   A supervisor read of the read-only user page just written with WP=0
///   is still #PF 0x1 with AC=0. Supervisor pages are unaffected.
///
/// The check runs on a PML4 of its own that maps the guest itself
/// supervisor-only (its exception delivery and stacks are implicit
/// supervisor accesses, which SMAP forbids on user pages). After each
/// change of CR0.WP or CR4 it reloads CR3: MOV to CR4 flushes only for
/// some transitions (4.10.4.1), and the reload makes every outcome
/// determined (`long/cr0-wp` covers WP toggles without it). Skipped where
/// CPUID.(EAX=07H,ECX=0):EBX has neither SMEP (bit 7) nor SMAP (bit 20);
/// with only one, that part runs.
pub(super) fn smep_smap_wp0(ctx: &mut Ctx<'_>, d: &mut Detail) -> Outcome {
    let ebx = cpuid7_ebx(&mut *ctx.m);
    let (smep, smap) = (ebx & CPUID7_SMEP != 0, ebx & CPUID7_SMAP != 0);
    if !smep && !smap {
        let _ = write!(d, "CPU model has no SMEP/SMAP (CPUID.7.0:EBX={ebx:#x})");
        return Outcome::Skip;
    }
    let mut lab = lab!(ctx, d);
    let t = lab.t;
    let root = lab.supervisor_root();
    let pt = lab.table_for(t, 1);
    let (d0, d1, d2) = (lab.data(), lab.data(), lab.data());
    lab.w(pt, entry64(d0, P | US));
    lab.w(pt + 8, entry64(d1, P | RW | US));
    lab.w(pt + 16, entry64(d2, P | RW));
    let (uro, urw, sup) = (t, t + 0x1000, t + 0x2000);
    let s = Cpl::Sup;
    let (pr, pw, pi) = (ec::P, ec::P | ec::W, ec::P | ec::I);
    let mut e = Expect::new(d);
    if root != 0 && lab.enter(&mut e, false) {
        let x = &mut e;
        lab.reload_cr3(x);
        let ctl = |lab: &mut Lab<'_>, x: &mut Expect<'_>, wp: bool, bits: u64| {
            lab.cpu().set_cr0_wp(wp);
            lab.cpu().set_cr4(cr4::SMEP | cr4::SMAP, false);
            lab.cpu().set_cr4(bits, true);
            lab.reload_cr3(x);
        };
        if smep {
            ctl(&mut lab, x, false, cr4::SMEP);
            lab.expect(x, "SMEP WP=0: sup fetch, sup page", Op::Fetch, sup + RET_OFF, s, Want::Done);
            lab.expect(x, "SMEP WP=0: sup fetch, user RO page", Op::Fetch, uro + RET_OFF, s, Want::Pf(pi));
            lab.expect(x, "SMEP WP=0: sup fetch, user RW page", Op::Fetch, urw + RET_OFF, s, Want::Pf(pi));
            lab.expect(x, "SMEP WP=0: sup write, user RO page", Op::Write(1), uro + WR_OFF, s, Want::Done);
            lab.expect(x, "SMEP WP=0: sup fetch after the write", Op::Fetch, uro + RET_OFF, s, Want::Pf(pi));
            lab.expect(x, "SMEP WP=0: sup read, user RO page", Op::Read, uro + WR_OFF, s, Want::Val(1));
            lab.expect(x, "SMEP WP=0: sup fetch again", Op::Fetch, uro + RET_OFF, s, Want::Pf(pi));
            ctl(&mut lab, x, true, cr4::SMEP);
            lab.expect(x, "SMEP WP=1: sup write, user RO page", Op::Write(2), uro + WR_OFF, s, Want::Pf(pw));
            lab.expect(x, "SMEP WP=1: sup fetch, user RO page", Op::Fetch, uro + RET_OFF, s, Want::Pf(pi));
            lab.expect(x, "SMEP WP=1: sup write, user RW page", Op::Write(2), urw + WR_OFF, s, Want::Done);
            lab.expect(x, "SMEP WP=1: sup fetch, user RW page", Op::Fetch, urw + RET_OFF, s, Want::Pf(pi));
            ctl(&mut lab, x, false, 0);
            lab.expect(x, "no SMEP WP=0: sup fetch, user RO page", Op::Fetch, uro + RET_OFF, s, Want::Done);
        }
        if smap {
            ctl(&mut lab, x, false, cr4::SMAP);
            lab.expect(x, "SMAP WP=0: read, user RW page, AC=0", Op::Read, urw, s, Want::Pf(pr));
            lab.expect(x, "SMAP WP=0: read, user RW page, AC=1", Op::ReadAc, urw, s, Want::Val(marker(d1)));
            lab.expect(x, "SMAP WP=0: write, user RW page, AC=0", Op::Write(3), urw + WR_OFF, s, Want::Pf(pw));
            lab.expect(x, "SMAP WP=0: write, user RW page, AC=1", Op::WriteAc(4), urw + WR_OFF, s, Want::Done);
            lab.expect(x, "SMAP WP=0: write, user RO page, AC=1", Op::WriteAc(5), uro + WR_OFF, s, Want::Done);
            lab.expect(x, "SMAP WP=0: read after it, AC=0", Op::Read, uro + WR_OFF, s, Want::Pf(pr));
            lab.expect(x, "SMAP WP=0: write, user RO page, AC=0", Op::Write(6), uro + WR_OFF, s, Want::Pf(pw));
            lab.expect(x, "SMAP WP=0: read, user RO page, AC=1", Op::ReadAc, uro + WR_OFF, s, Want::Val(5));
            lab.expect(x, "SMAP WP=0: read, sup page", Op::Read, sup, s, Want::Val(marker(d2)));
            lab.expect(x, "SMAP WP=0: write, sup page", Op::Write(7), sup + WR_OFF, s, Want::Done);
            lab.expect(x, "SMAP WP=0: fetch, user RO page", Op::Fetch, uro + RET_OFF, s, Want::Done);
            ctl(&mut lab, x, true, cr4::SMAP);
            lab.expect(x, "SMAP WP=1: write, user RO page, AC=1", Op::WriteAc(8), uro + WR_OFF, s, Want::Pf(pw));
            lab.expect(x, "SMAP WP=1: write, user RW page, AC=1", Op::WriteAc(9), urw + WR_OFF, s, Want::Done);
            lab.expect(x, "SMAP WP=1: write, user RW page, AC=0", Op::Write(10), urw + WR_OFF, s, Want::Pf(pw));
            lab.expect(x, "SMAP WP=1: read, user RW page, AC=0", Op::Read, urw + WR_OFF, s, Want::Pf(pr));
            lab.expect(x, "SMAP WP=1: read, user RW page, AC=1", Op::ReadAc, urw + WR_OFF, s, Want::Val(9));
            lab.expect(x, "SMAP WP=1: read, user RO page, AC=1", Op::ReadAc, uro + WR_OFF, s, Want::Val(5));
        }
        if smep && smap {
            ctl(&mut lab, x, false, cr4::SMEP | cr4::SMAP);
            lab.expect(x, "both WP=0: write, user RO page, AC=1", Op::WriteAc(11), uro + WR_OFF, s, Want::Done);
            lab.expect(x, "both WP=0: fetch, user RO page", Op::Fetch, uro + RET_OFF, s, Want::Pf(pi));
            lab.expect(x, "both WP=0: read, user RO page, AC=0", Op::Read, uro + WR_OFF, s, Want::Pf(pr));
            lab.expect(x, "both WP=0: read, user RO page, AC=1", Op::ReadAc, uro + WR_OFF, s, Want::Val(11));
        }
        ctl(&mut lab, x, true, 0);
        lab.leave();
    }
    let n = lab.probes;
    let has = match (smep, smap) {
        (true, true) => "SMEP and SMAP",
        (true, false) => "SMEP only (no SMAP)",
        _ => "SMAP only (no SMEP)",
    };
    e.finish(format_args!("{has}, root {root:#x} PT {pt:#x}, {n} probes"))
}

/// Scenario 15 (SDM Vol. 3A 4.10.2.4, 4.10.4.1): global pages with
/// CR4.PGE=1. INVLPG invalidates the TLB entries for the page, global ones
/// included, so after a PTE change and INVLPG of a G=1 page the new frame
/// is used. Changing CR4.PGE invalidates all TLB entries, global ones
/// included: after a PTE change and PGE 1 -> 0 -> 1 the new frame is used.
/// MOV CR3 keeps global entries, so after a PTE change and a CR3 reload a
/// G=1 page may show the old frame or the new one (the check accepts
/// either; INVLPG then determines it). A non-global page changed with no
/// INVLPG shows the new frame after a CR3 reload, and so does a G=1 page
/// once PGE=0 (G is then ignored).
pub(super) fn global_pages(ctx: &mut Ctx<'_>, d: &mut Detail) -> Outcome {
    if ctx.m.cpuid(1, 0).edx & CPUID1_PGE == 0 {
        let _ = write!(d, "CPUID.01H:EDX.PGE = 0");
        return Outcome::Skip;
    }
    let mut lab = lab!(ctx, d);
    let t = lab.t;
    let pt = lab.table_for(t, 1);
    let (d0, d1) = (lab.data(), lab.data());
    let rw = P | RW;
    lab.w(pt, entry64(d0, rw | G));
    lab.w(pt + 8, entry64(d0, rw));
    let (vg, vn) = (t, t + 0x1000);
    let s = Cpl::Sup;
    let (m0, m1) = (marker(d0), marker(d1));
    let mut e = Expect::new(d);
    if lab.enter(&mut e, false) {
        let x = &mut e;
        lab.cpu().set_cr4(cr4::PGE, true);
        lab.reload_cr3(x);
        lab.expect(x, "PGE=1: global page", Op::Read, vg, s, Want::Val(m0));
        lab.w(pt, entry64(d1, rw | G));
        lab.invlpg(x, vg);
        lab.expect(x, "global page remapped + INVLPG", Op::Read, vg, s, Want::Val(m1));
        lab.w(pt, entry64(d0, rw | G));
        lab.cpu().set_cr4(cr4::PGE, false);
        lab.cpu().set_cr4(cr4::PGE, true);
        lab.expect(x, "global page remapped + PGE 1->0->1", Op::Read, vg, s, Want::Val(m0));
        lab.w(pt, entry64(d1, rw | G));
        lab.reload_cr3(x);
        let want = format_args!("ok {m0:#x} or {m1:#x} (the old or the new frame)");
        lab.expect_by(x, "global page remapped + MOV CR3", Op::Read, vg, s, (&want, |got| {
            matches(got, Want::Val(m0), vg) || matches(got, Want::Val(m1), vg)
        }));
        lab.invlpg(x, vg);
        lab.expect(x, "then INVLPG", Op::Read, vg, s, Want::Val(m1));
        lab.expect(x, "non-global page", Op::Read, vn, s, Want::Val(m0));
        lab.w(pt + 8, entry64(d1, rw));
        lab.reload_cr3(x);
        lab.expect(x, "non-global page remapped + MOV CR3", Op::Read, vn, s, Want::Val(m1));
        lab.cpu().set_cr4(cr4::PGE, false);
        lab.expect(x, "PGE=0: G=1 page", Op::Read, vg, s, Want::Val(m1));
        lab.w(pt, entry64(d0, rw | G));
        lab.reload_cr3(x);
        lab.expect(x, "PGE=0: G=1 page remapped + MOV CR3", Op::Read, vg, s, Want::Val(m0));
        lab.leave();
    }
    let n = lab.probes;
    e.finish(format_args!("PT {pt:#x}, {n} probes"))
}

#[cfg(test)]
mod tests {
    use crate::checks::fake::{Fake, FAKE_INFO};
    use crate::checks::fake_long::{bug, BUGS};
    use crate::checks::Ctx;
    use crate::report::Tally;

    const MINE: [&str; 5] = ["long/large-2m", "long/cr0-wp", "long/efer-nxe", "long/smep-smap-wp0", "long/global-pages"];

    /// Runs the checks on the fake with model bugs `bugs` (bare: the QEMU
    /// TCG signature, else Quadrant's); returns the console.
    fn run(bugs: u32, bare: bool) -> String {
        BUGS.with(|b| b.set(bugs));
        let mut m = if bare { Fake::bare("modes=0") } else { Fake::hv("expect_hv=1 modes=0") };
        let (mut out, tally) = (String::new(), Tally::new());
        Ctx::start(&mut m, &mut out, &tally, FAKE_INFO).run_all();
        BUGS.with(|b| b.set(0));
        out
    }

    #[test]
    fn pass_on_the_reference_model() {
        for bare in [false, true] {
            let out = run(0, bare);
            for n in MINE {
                assert!(out.contains(&format!("check PASS {n}:")), "{n} (bare {bare})\n{out}");
            }
        }
    }

    #[test]
    fn each_fails_when_the_model_breaks_its_rule() {
        let cases: &[(u32, &[&str])] = &[
            (bug::LARGE_4K, &["long/large-2m"]),
            (bug::NEG_CACHE, &["long/large-2m"]),
            (bug::NO_INVLPG, &["long/large-2m", "long/global-pages"]),
            (bug::NO_WP, &["long/cr0-wp", "long/smep-smap-wp0"]),
            (bug::NO_XD, &["long/efer-nxe"]),
            (bug::NO_RSVD, &["long/efer-nxe"]),
            (bug::NO_SMEP, &["long/smep-smap-wp0"]),
            (bug::NO_SMAP, &["long/smep-smap-wp0"]),
            (bug::SMAP_NO_AC, &["long/smep-smap-wp0"]),
            (bug::STICKY_GLOBAL, &["long/global-pages"]),
        ];
        for (b, names) in cases {
            let out = run(*b, false);
            for n in *names {
                assert!(out.contains(&format!("check FAIL {n}:")), "bug {b:#x}: {n} did not fail\n{out}");
            }
        }
    }
}
