//! `long/hostile/...`: scenario 21 of DESIGN.md section 4 (hostile inputs)
//! in long mode: reserved bits in paging entries, INVLPG of addresses
//! without a translation, reserved CR3 bits. What is left out of the
//! default run, and why, is in the parent module's documentation.

use super::lab::*;
use crate::checks::Ctx;
use crate::longcpu::{ec, Cpl, Op};
use crate::modes::paging::{entry64, pde_2m, P, RW, US};
use crate::report::{Detail, Expect};
use core::fmt::Write;
use shared::Outcome;

/// Scenario 21, reserved bits (SDM Vol. 3A 4.5.4, 4.7): a present entry
/// with a reserved bit set gives #PF with RSVD=1 and P=1 (0x9 read, 0xB
/// write, 0xD user read): PTE bit MAXPHYADDR, PTE bit 51, PTE bit 63 with
/// EFER.NXE=0, bit 13 of a 2 MiB PDE (bits 20:13 are reserved there),
/// PDPTE bit MAXPHYADDR. Address bits above MAXPHYADDR are skipped when
/// MAXPHYADDR is 52.
pub(super) fn hostile_rsvd(ctx: &mut Ctx<'_>, d: &mut Detail) -> Outcome {
    let mp = maxphyaddr(&mut *ctx.m);
    let tcg = ctx.signature.is_tcg();
    let mut lab = lab!(ctx, d);
    let t = lab.t;
    let pt = lab.table_for(t, 1);
    let pd = lab.table_for(t, 2);
    let pdpt = lab.table_for(t, 3);
    let d0 = lab.data();
    let rw = P | RW | US;
    let hi = if mp < 52 { 1u64 << mp } else { 0 };
    lab.w(pt, entry64(d0, rw) | hi);
    lab.w(pt + 8, entry64(d0, rw) | if mp < 52 { 1 << 51 } else { 0 });
    lab.w(pt + 16, entry64(d0, rw) | XD);
    lab.w(pt + 24, entry64(d0, rw));
    lab.w(pd + 8, pde_2m(0, rw) | (1 << 13));
    let pd2 = lab.table();
    lab.w(pd2, pde_2m(0, rw));
    lab.w(pdpt + 8, entry64(pd2, UP) | hi);
    let (s, u) = (Cpl::Sup, Cpl::User);
    // QEMU TCG reports reserved-bit faults with P=0 (0x8); the SDM and the
    // hardware (and Bochs) set P=1 because the entry is present.
    let rsvd = if tcg { ec::RSVD } else { ec::P | ec::RSVD };
    let mut e = Expect::new(d);
    if lab.enter(&mut e, false) {
        let x = &mut e;
        if mp < 52 {
            lab.expect(x, "PTE bit MAXPHYADDR read", Op::Read, t, s, Want::Pf(rsvd));
            lab.expect(x, "PTE bit MAXPHYADDR write", Op::Write(1), t + WR_OFF, s, Want::Pf(rsvd | ec::W));
            lab.expect(x, "PTE bit MAXPHYADDR user read", Op::Read, t, u, Want::Pf(rsvd | ec::U));
            lab.expect(x, "PTE bit 51", Op::Read, t + 0x1000, s, Want::Pf(rsvd));
            lab.expect(x, "PDPTE bit MAXPHYADDR", Op::Read, t + G1, s, Want::Pf(rsvd));
        }
        lab.expect(x, "PTE bit 63, NXE=0", Op::Read, t + 0x2000, s, Want::Pf(rsvd));
        lab.expect(x, "clean PTE", Op::Read, t + 0x3000, s, Want::Val(marker(d0)));
        lab.expect(x, "2M PDE bit 13", Op::Read, t + M2, s, Want::Pf(rsvd));
        lab.leave();
    }
    let n = lab.probes;
    let q = if tcg { " (QEMU TCG: RSVD faults expected with P=0)" } else { "" };
    e.finish(format_args!("MAXPHYADDR {mp}, {n} probes{q}"))
}

/// Scenario 21, INVLPG (SDM Vol. 2A INVLPG; Vol. 3A 4.10.4.1): INVLPG of a
/// non-canonical address is a no-op, as is INVLPG of a canonical address
/// with no translation (a not-present PML4E, a not-present PTE): no
/// exception; a mapped page still translates afterwards.
pub(super) fn hostile_invlpg(ctx: &mut Ctx<'_>, d: &mut Detail) -> Outcome {
    let mut lab = lab!(ctx, d);
    let t = lab.t;
    let d0 = lab.map_data();
    let s = Cpl::Sup;
    let mut e = Expect::new(d);
    if lab.enter(&mut e, false) {
        let x = &mut e;
        lab.expect(x, "mapped", Op::Read, t, s, Want::Val(marker(d0)));
        for va in [0x8000_0000_0000_0000, 0x0000_8000_0000_0000, 0xFFFF_8000_0000_0000, t + 0x1000, t + 0x7000_0000] {
            lab.expect(x, "invlpg", Op::Invlpg, va, s, Want::Val(0));
        }
        lab.expect(x, "still mapped", Op::Read, t, s, Want::Val(marker(d0)));
        lab.leave();
    }
    let n = lab.probes;
    e.finish(format_args!("{n} probes"))
}

/// VMX instructions with CR4.VMXE=0: VMXON raises #UD (SDM Vol. 3C 31.3;
/// Vol. 3C 24.7: VMX is entered only with CR4.VMXE=1). Bare this is the
/// CPU's own check (Bochs with VMX, or QEMU TCG without it); under Quadrant,
/// which hides VMX and runs the guest with hardware VMXE=1, the VMXON exits
/// and the hypervisor must inject the #UD. The guest carries on afterwards.
pub(super) fn hostile_vmxon(ctx: &mut Ctx<'_>, d: &mut Detail) -> Outcome {
    let mut lab = lab!(ctx, d);
    let t = lab.t;
    let d0 = lab.map_data();
    let s = Cpl::Sup;
    let mut e = Expect::new(d);
    if lab.enter(&mut e, false) {
        let x = &mut e;
        lab.expect(x, "vmxon", Op::Vmxon, t, s, Want::Ud);
        lab.expect(x, "still mapped", Op::Read, t, s, Want::Val(marker(d0)));
        lab.leave();
    }
    let n = lab.probes;
    e.finish(format_args!("{n} probes"))
}

/// Scenario 21, CR3 (SDM Vol. 2B MOV to/from control registers; Vol. 3A
/// 4.5.2): in IA-32e mode CR3 bits 51:MAXPHYADDR are reserved; MOV to CR3
/// with one set is #GP(0) and CR3 keeps its value (here: bit MAXPHYADDR
/// and bit 51). Skipped when MAXPHYADDR is 52, and in QEMU TCG, which
/// loads such a value (and then hangs walking it).
pub(super) fn hostile_cr3(ctx: &mut Ctx<'_>, d: &mut Detail) -> Outcome {
    let mp = maxphyaddr(&mut *ctx.m);
    if ctx.signature.is_tcg() {
        let _ = write!(d, "QEMU TCG loads CR3 without checking reserved bits");
        return Outcome::Skip;
    }
    if mp >= 52 {
        let _ = write!(d, "MAXPHYADDR {mp}: no reserved CR3 address bits");
        return Outcome::Skip;
    }
    let mut lab = lab!(ctx, d);
    let t = lab.t;
    let d0 = lab.map_data();
    let s = Cpl::Sup;
    let pml4 = lab.pml4;
    let mut e = Expect::new(d);
    if lab.enter(&mut e, false) {
        let x = &mut e;
        for b in [mp, 51] {
            lab.expect(x, "MOV CR3 reserved bit", Op::MovCr3, pml4 | 1 << b, s, Want::Gp0);
            let c = lab.cpu().cr3();
            x.that(c == pml4, format_args!("CR3 after the #GP: {c:#x}, want {pml4:#x}"));
        }
        lab.expect(x, "still translates", Op::Read, t, s, Want::Val(marker(d0)));
        lab.leave();
    }
    let n = lab.probes;
    e.finish(format_args!("MAXPHYADDR {mp}, {n} probes"))
}
