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

use super::{Check, Ctx};
use crate::longcpu::{ec, Cpl, Fault, LongCpu, Op, Probe, GP, PF};
use crate::machine::Machine;
use crate::modes::paging::{entry64, pde_2m, Frames, A, D, P, RW, US};
use crate::modes::space::IDENTITY_END;
use crate::pattern::pattern;
use crate::report::{Detail, Expect};
use crate::regs::CR0_WP;
use core::fmt::{self, Write};
use shared::Outcome;

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
    Check { name: "long/hostile/rsvd-bits", run: hostile_rsvd },
    Check { name: "long/hostile/invlpg", run: hostile_invlpg },
    Check { name: "long/hostile/cr3-reserved", run: hostile_cr3 },
];

/// Flags of upper-level entries that allow everything.
const UP: u64 = P | RW | US;
/// XD (bit 63, SDM Vol. 3A 4.6.2: with EFER.NXE=1 no fetch; with NXE=0 reserved).
const XD: u64 = 1 << 63;
/// Where a data frame holds `ret` (0xC3) for fetch probes.
const RET_OFF: u64 = 0x800;
/// Where the probes write in a data frame.
const WR_OFF: u64 = 0x10;
/// Seed of the data frames' marker words.
const SEED: u64 = 0x4c4f_4e47_5343_454e; // "LONGSCEN"
/// 2 MiB.
const M2: u64 = 1 << 21;
/// 1 GiB.
const G1: u64 = 1 << 30;
/// The end of the identity map every scenario CR3 keeps.
const IDENT: u64 = G1;
/// The address bits of an entry.
const ADDR: u64 = 0x000F_FFFF_FFFF_F000;

/// The marker word at offset 0 of data frame `pa`.
pub const fn marker(pa: u64) -> u64 {
    pattern(pa, SEED)
}

/// Index of `va` in the table at `level` (4 = PML4 .. 1 = PT), SDM Vol. 3A 4.5.4.
pub const fn idx(va: u64, level: u32) -> u64 {
    (va >> (12 + 9 * (level - 1))) & 0x1FF
}

/// What a probe should do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Want {
    /// Complete, with this RAX (the value read).
    Val(u64),
    /// Complete; the value does not matter.
    Done,
    /// #PF with this error code; CR2 = the probe's address.
    Pf(u64),
    /// #GP(0).
    Gp0,
}

/// True when `got` (a probe at `addr`) is what `want` says.
pub fn matches(got: Probe, want: Want, addr: u64) -> bool {
    match (got, want) {
        (Ok(v), Want::Val(w)) => v == w,
        (Ok(_), Want::Done) => true,
        (Err(f), Want::Pf(e)) => f.vector == PF && f.error_code == e && f.cr2 == addr,
        (Err(f), Want::Gp0) => f.vector == GP && f.error_code == 0,
        _ => false,
    }
}

struct Got(Probe);
impl fmt::Display for Got {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Ok(v) => write!(f, "ok {v:#x}"),
            Err(Fault { vector, error_code, cr2 }) => write!(f, "{}", Fault { vector, error_code, cr2 }),
        }
    }
}

/// What the `long/...` checks share (kept in [`Ctx::long`]): one PML4
/// whose entry 0 identity-maps the low 1 GiB, the frame allocator and the
/// next free PML4 entry. Each check takes two fresh PML4 entries and fresh
/// frames, so no check rewrites a frame an earlier one used as a table
/// (under a shadow MMU the shared identity map stays shadowed and each
/// check's tables start unshadowed).
#[derive(Clone, Copy, Debug)]
pub struct Base {
    pml4: u64,
    f: Frames,
    next_slot: u64,
}

/// Bytes one PML4 entry maps.
const SLOT: u64 = 1 << 39;

/// One check's address space and the machine state it changed.
struct Lab<'m> {
    m: &'m mut dyn Machine,
    base: &'m mut Base,
    /// The check's linear base: its first PML4 entry (the second is `t + SLOT`).
    t: u64,
    pml4: u64,
    boot_cr3: u64,
    cr0: u64,
    efer: u64,
    refused: Option<u64>,
    probes: u32,
}

impl<'m> Lab<'m> {
    /// Builds the [`Base`] on first use and takes two PML4 entries for the
    /// check; `Err` is the outcome to report (SKIP without a harness).
    fn new(ctx: &'m mut Ctx<'_>, d: &mut Detail) -> Result<Self, Outcome> {
        let Some(map) = ctx.map else {
            let _ = write!(d, "no validated memory map (see boot/memory-map)");
            return Err(Outcome::Fail);
        };
        let image = ctx.m.image();
        let excl = ctx.exclusions;
        let m = &mut *ctx.m;
        let Some(cpu) = m.long_cpu() else {
            let _ = write!(d, "no long-mode probe harness on this machine");
            return Err(Outcome::Skip);
        };
        let boot_cr3 = cpu.cr3();
        let (cr0, efer) = (m.cr0(), m.efer());
        let fresh = ctx.long.is_none();
        let base = ctx.long.get_or_insert(Base { pml4: 0, f: Frames::new(&map, &excl, image.end, IDENTITY_END), next_slot: 1 });
        let t = base.next_slot * SLOT;
        base.next_slot += 2;
        let mut lab = Lab { m, base, t, pml4: 0, boot_cr3, cr0, efer, refused: None, probes: 0 };
        if fresh {
            let pml4 = lab.table();
            let pdpt = lab.table();
            let pd = lab.table();
            for i in 0..IDENT / M2 {
                lab.w(pd + 8 * i, pde_2m(i * M2, UP));
            }
            lab.w(pdpt, entry64(pd, UP));
            lab.w(pml4, entry64(pdpt, UP));
            lab.base.pml4 = if pdpt == 0 || pd == 0 { 0 } else { pml4 };
        }
        lab.pml4 = lab.base.pml4;
        if lab.pml4 == 0 || lab.refused.is_some() || t >= 256 * SLOT {
            let _ = write!(d, "no free frames below {IDENTITY_END:#x}, a refused write at {:?} or no free PML4 entry", lab.refused);
            return Err(Outcome::Fail);
        }
        Ok(lab)
    }

    fn cpu(&mut self) -> &mut dyn LongCpu {
        self.m.long_cpu().expect("checked in Lab::new")
    }

    /// Writes a word of a table or data frame (physical = identity address).
    fn w(&mut self, pa: u64, v: u64) {
        if !self.m.scratch_write(pa, v) {
            self.refused.get_or_insert(pa);
        }
    }

    /// Reads a word of a table or data frame.
    fn r(&mut self, pa: u64) -> u64 {
        self.m.scratch_read(pa).unwrap_or(0xDEAD_DEAD_DEAD_DEAD)
    }

    /// A zeroed 4 KiB table (0 when RAM ran out).
    fn table(&mut self) -> u64 {
        let Some(t) = self.base.f.alloc() else { return 0 };
        for i in 0..512 {
            self.w(t + 8 * i, 0);
        }
        t
    }

    /// A data frame: [`marker`] at offset 0, `ret` at [`RET_OFF`].
    fn data(&mut self) -> u64 {
        let Some(t) = self.base.f.alloc() else { return 0 };
        self.w(t, marker(t));
        self.w(t + WR_OFF, 0);
        self.w(t + RET_OFF, 0xC3);
        t
    }

    /// The table at `level` (3 = PDPT, 2 = PD, 1 = PT) on the way to `va`,
    /// created with [`UP`] entries where missing.
    fn table_for(&mut self, va: u64, level: u32) -> u64 {
        let mut t = self.pml4;
        for l in (level + 1..=4).rev() {
            let a = t + 8 * idx(va, l);
            let e = self.r(a);
            t = if e & P != 0 {
                e & ADDR
            } else {
                let n = self.table();
                self.w(a, entry64(n, UP));
                n
            };
        }
        t
    }

    /// The address of `va`'s entry in the table at `level`.
    fn slot(&mut self, va: u64, level: u32) -> u64 {
        self.table_for(va, level) + 8 * idx(va, level)
    }

    fn probe(&mut self, op: Op, addr: u64, cpl: Cpl) -> Probe {
        self.probes += 1;
        self.cpu().probe(op, addr, cpl)
    }

    /// Probes and records the expectation.
    fn expect(&mut self, e: &mut Expect<'_>, what: &str, op: Op, addr: u64, cpl: Cpl, want: Want) {
        let got = self.probe(op, addr, cpl);
        e.that(matches(got, want, addr), format_args!("{what}: want {want:?} at {addr:#x}, got {}", Got(got)));
    }

    /// CR0.WP=1, EFER.NXE as asked, CR3 = our PML4.
    fn enter(&mut self, e: &mut Expect<'_>, nxe: bool) -> bool {
        if let Some(a) = self.refused {
            e.that(false, format_args!("the machine refused a table write at {a:#x}"));
            return false;
        }
        self.cpu().set_cr0_wp(true);
        self.cpu().set_efer_nxe(nxe);
        let pml4 = self.pml4;
        let r = self.probe(Op::MovCr3, pml4, Cpl::Sup);
        e.that(r.is_ok(), format_args!("MOV CR3 {pml4:#x}: {}", Got(r)))
    }

    /// Boot CR3, CR0.WP and EFER.NXE as they were.
    fn leave(&mut self) {
        let b = self.boot_cr3;
        let _ = self.probe(Op::MovCr3, b, Cpl::Sup);
        let (wp, nxe) = (self.cr0 & CR0_WP != 0, self.efer & EFER_NXE != 0);
        self.cpu().set_cr0_wp(wp);
        self.cpu().set_efer_nxe(nxe);
    }

    fn invlpg(&mut self, e: &mut Expect<'_>, va: u64) {
        self.expect(e, "invlpg", Op::Invlpg, va, Cpl::Sup, Want::Done);
    }
}

/// IA32_EFER.NXE (SDM Vol. 3A 2.2.1).
const EFER_NXE: u64 = 1 << 11;

/// CPUID.80000001H:EDX.NX \[bit 20\].
fn has_nx(m: &mut dyn Machine) -> bool {
    m.cpuid(0x8000_0000, 0).eax >= 0x8000_0001 && m.cpuid(0x8000_0001, 0).edx & (1 << 20) != 0
}

/// MAXPHYADDR (CPUID.80000008H:EAX\[7:0\], 36 without the leaf; SDM Vol. 3A 4.1.4).
fn maxphyaddr(m: &mut dyn Machine) -> u32 {
    if m.cpuid(0x8000_0000, 0).eax >= 0x8000_0008 {
        m.cpuid(0x8000_0008, 0).eax & 0xFF
    } else {
        36
    }
}

macro_rules! lab {
    ($ctx:expr, $d:expr) => {
        match Lab::new($ctx, $d) {
            Ok(l) => l,
            Err(o) => return o,
        }
    };
}

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
        let got = lab.probe(Op::Read, win + 8, c);
        e.that(
            got.is_ok_and(|v| v & ADDR == x && v & (P | RW) == P | RW),
            format_args!("window PDE 1: want {x:#x}|P|RW, got {}", Got(got)),
        );
        for i in [0u64, 1, 3] {
            let want = lab.r(x + 8 * i);
            lab.expect(&mut e, "window read of a PDE", Op::Read, win + 8 * i, c, Want::Val(want));
        }
        lab.expect(&mut e, "t+4M before PDE 2 is present", Op::Read, t + 2 * M2, c, Want::Pf(0));
        lab.expect(&mut e, "write PDE 2 through the window", Op::Write(entry64(pt, UP)), win + 16, c, Want::Done);
        let pde2 = lab.r(x + 16);
        e.that(pde2 & !A == entry64(pt, UP), format_args!("PDE 2 in memory {pde2:#x}"));
        lab.expect(&mut e, "t+4M after the PDE write, no INVLPG", Op::Read, t + 2 * M2, c, Want::Val(marker(d0)));
        let got = lab.probe(Op::Read, t + M2 + 0x2000, c);
        e.that(
            got.is_ok_and(|v| v & !(A | D) == entry64(d0, P | RW)),
            format_args!("window PTE 2 maps the new PT: want {:#x}, got {}", entry64(d0, P | RW), Got(got)),
        );
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
fn large_alias_perms(ctx: &mut Ctx<'_>, d: &mut Detail) -> Outcome {
    if !has_nx(&mut *ctx.m) {
        let _ = write!(d, "CPUID.80000001H:EDX.NX = 0");
        return Outcome::Skip;
    }
    let mut lab = lab!(ctx, d);
    let t = lab.t;
    let Some(l) = lab.base.f.alloc_aligned(M2, M2) else {
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
        lab.expect(x, "A0 read", Op::Read, a(0), s, Want::Val(marker(l)));
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
    let Some(l) = lab.base.f.alloc_aligned(M2, M2) else {
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

/// Scenario 21, reserved bits (SDM Vol. 3A 4.5.4, 4.7): a present entry
/// with a reserved bit set gives #PF with RSVD=1 and P=1 (0x9 read, 0xB
/// write, 0xD user read): PTE bit MAXPHYADDR, PTE bit 51, PTE bit 63 with
/// EFER.NXE=0, bit 13 of a 2 MiB PDE (bits 20:13 are reserved there),
/// PDPTE bit MAXPHYADDR. Address bits above MAXPHYADDR are skipped when
/// MAXPHYADDR is 52.
fn hostile_rsvd(ctx: &mut Ctx<'_>, d: &mut Detail) -> Outcome {
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
fn hostile_invlpg(ctx: &mut Ctx<'_>, d: &mut Detail) -> Outcome {
    let mut lab = lab!(ctx, d);
    let t = lab.t;
    let pt = lab.table_for(t, 1);
    let d0 = lab.data();
    lab.w(pt, entry64(d0, P | RW));
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

/// Scenario 21, CR3 (SDM Vol. 2B MOV to/from control registers; Vol. 3A
/// 4.5.2): in IA-32e mode CR3 bits 51:MAXPHYADDR are reserved; MOV to CR3
/// with one set is #GP(0) and CR3 keeps its value (here: bit MAXPHYADDR
/// and bit 51). Skipped when MAXPHYADDR is 52, and in QEMU TCG, which
/// loads such a value (and then hangs walking it).
fn hostile_cr3(ctx: &mut Ctx<'_>, d: &mut Detail) -> Outcome {
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
    let pt = lab.table_for(t, 1);
    let d0 = lab.data();
    lab.w(pt, entry64(d0, P | RW));
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

#[cfg(test)]
mod tests {
    use super::*;
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

    #[test]
    fn names() {
        assert!(CHECKS.iter().all(|c| c.name.starts_with("long/")));
    }
}
