//! The `long/...` checks' laboratory: the shared [`Base`] (one PML4 with
//! the identity map of the low 1 GiB), one check's [`Lab`] (its PML4
//! entries, tables and data frames, CR3/CR0.WP/EFER.NXE in and out), the
//! expected outcome of a probe ([`Want`]), the translation-failure report
//! of a probe that missed it ([`crate::xlate`]) and the CPUID facts the
//! checks depend on.

use crate::checks::Ctx;
use crate::longcpu::{cr4, Cpl, Fault, LongCpu, Op, Probe, GP, PF};
use crate::machine::Machine;
use crate::modes::paging::{entry64, pde_2m, Frames, P, RW, US};
use crate::modes::space::IDENTITY_END;
use crate::pattern::pattern;
use crate::report::{Detail, Expect};
use crate::regs::CR0_WP;
use crate::xlate::{Failure, Paging, Reporter};
use core::fmt::{self, Write};
use shared::Outcome;

/// Flags of upper-level entries that allow everything.
pub(super) const UP: u64 = P | RW | US;
/// XD (bit 63, SDM Vol. 3A 4.6.2: with EFER.NXE=1 no fetch; with NXE=0 reserved).
pub(super) const XD: u64 = 1 << 63;
/// Where a data frame holds `ret` (0xC3) for fetch probes.
pub(super) const RET_OFF: u64 = 0x800;
/// Where the probes write in a data frame.
pub(super) const WR_OFF: u64 = 0x10;
/// Seed of the data frames' marker words.
pub(super) const SEED: u64 = 0x4c4f_4e47_5343_454e; // "LONGSCEN"
/// 2 MiB.
pub(super) const M2: u64 = 1 << 21;
/// 1 GiB.
pub(super) const G1: u64 = 1 << 30;
/// The end of the identity map every scenario CR3 keeps.
pub(super) const IDENT: u64 = G1;
/// The address bits of an entry.
pub(super) const ADDR: u64 = 0x000F_FFFF_FFFF_F000;

/// The marker word at offset 0 of data frame `pa`.
pub(super) const fn marker(pa: u64) -> u64 {
    pattern(pa, SEED)
}

/// Index of `va` in the table at `level` (4 = PML4 .. 1 = PT), SDM Vol. 3A 4.5.4.
pub(super) const fn idx(va: u64, level: u32) -> u64 {
    (va >> (12 + 9 * (level - 1))) & 0x1FF
}

/// What a probe should do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Want {
    /// Complete, with this RAX (the value read).
    Val(u64),
    /// Complete; the value does not matter.
    Done,
    /// #PF with this error code; CR2 = the probe's address.
    Pf(u64),
    /// #GP(0).
    Gp0,
    /// #UD.
    Ud,
}

/// True when `got` (a probe at `addr`) is what `want` says.
pub(super) fn matches(got: Probe, want: Want, addr: u64) -> bool {
    match (got, want) {
        (Ok(v), Want::Val(w)) => v == w,
        (Ok(_), Want::Done) => true,
        (Err(f), Want::Pf(e)) => f.vector == PF && f.error_code == e && f.cr2 == addr,
        (Err(f), Want::Gp0) => f.vector == GP && f.error_code == 0,
        (Err(f), Want::Ud) => f.vector == crate::longcpu::UD,
        _ => false,
    }
}

/// [`Want`] for a probe at an address, as a report shows it (the same
/// words as [`Got`]).
pub(super) struct WantAt(pub(super) Want, pub(super) u64);
impl fmt::Display for WantAt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Want::Val(v) => write!(f, "ok {v:#x}"),
            Want::Done => write!(f, "ok"),
            Want::Pf(e) => write!(f, "{}", Fault { vector: PF, error_code: e, cr2: self.1 }),
            Want::Gp0 => write!(f, "#GP ec=0x0"),
            Want::Ud => write!(f, "#UD"),
        }
    }
}

/// What kind of memory access `op` makes (`None`: no translation, e.g.
/// INVLPG or MOV CR3).
fn access_kind(op: Op) -> Option<&'static str> {
    match op {
        Op::Read | Op::ReadAc => Some("read"),
        Op::Write(_) | Op::Write32(_) | Op::WriteAc(_) | Op::AndByte(_) | Op::RepStosb { .. } | Op::LockCmpxchg { .. } => {
            Some("write")
        }
        Op::Fetch => Some("fetch"),
        Op::Invlpg | Op::MovCr3 | Op::Vmxon => None,
    }
}

pub(super) struct Got(pub(super) Probe);
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
/// next free PML4 entry, the boot CR3. Each check takes two fresh PML4
/// entries and fresh frames, so no check rewrites a frame an earlier one
/// used as a table, and builds them with the PML4 already loaded (under a
/// shadow MMU the shared identity map stays shadowed, each check's tables
/// start unshadowed and each frame faults in once).
#[derive(Clone, Copy, Debug)]
pub struct Base {
    pub(super) pml4: u64,
    f: Frames,
    next_slot: u64,
    boot_cr3: u64,
}

/// Bytes one PML4 entry maps.
pub(super) const SLOT: u64 = 1 << 39;

/// One check's address space and the machine state it changed.
pub(super) struct Lab<'m> {
    pub(super) m: &'m mut dyn Machine,
    /// The console, for translation-failure reports.
    out: &'m mut dyn Write,
    rep: Reporter,
    pub(super) base: &'m mut Base,
    /// The check's linear base: its first PML4 entry (the second is `t + SLOT`).
    pub(super) t: u64,
    pub(super) pml4: u64,
    pub(super) boot_cr3: u64,
    pub(super) cr0: u64,
    pub(super) efer: u64,
    /// CR4 when the check started (`leave` restores PGE, SMEP, SMAP).
    pub(super) cr4: u64,
    pub(super) refused: Option<u64>,
    pub(super) probes: u32,
    /// CR3 holds our PML4 (`leave` loads the boot CR3 again; so does drop).
    active: bool,
}

impl<'m> Lab<'m> {
    /// Builds the [`Base`] on first use and takes two PML4 entries for the
    /// check; `Err` is the outcome to report (SKIP without a harness).
    pub(super) fn new(ctx: &'m mut Ctx<'_>, d: &mut Detail) -> Result<Self, Outcome> {
        let Some(map) = ctx.map else {
            let _ = write!(d, "no validated memory map (see boot/memory-map)");
            return Err(Outcome::Fail);
        };
        let image = ctx.m.image();
        let excl = ctx.exclusions;
        let rep = Reporter::for_running(ctx.tally);
        let out = &mut *ctx.out;
        let m = &mut *ctx.m;
        let Some(cpu) = m.long_cpu() else {
            let _ = write!(d, "no long-mode probe harness on this machine");
            return Err(Outcome::Skip);
        };
        let fresh = ctx.long.is_none();
        let boot_cr3 = if fresh { cpu.cr3() } else { 0 };
        let (cr0, efer, cr4) = (m.cr0(), m.efer(), m.cr4());
        let f = Frames::new(&map, &excl, image.end, IDENTITY_END);
        let base = ctx.long.get_or_insert(Base { pml4: 0, f, next_slot: 1, boot_cr3 });
        let t = base.next_slot * SLOT;
        base.next_slot += 2;
        let boot_cr3 = base.boot_cr3;
        let mut lab =
            Lab { m, out, rep, base, t, pml4: 0, boot_cr3, cr0, efer, cr4, refused: None, probes: 0, active: false };
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
        let pml4 = lab.pml4;
        if let Err(f) = lab.probe(Op::MovCr3, pml4, Cpl::Sup) {
            let _ = write!(d, "MOV CR3 {pml4:#x}: {f}");
            return Err(Outcome::Fail);
        }
        lab.active = true;
        Ok(lab)
    }

    pub(super) fn cpu(&mut self) -> &mut dyn LongCpu {
        self.m.long_cpu().expect("checked in Lab::new")
    }

    /// Writes a word of a table or data frame (physical = identity address).
    pub(super) fn w(&mut self, pa: u64, v: u64) {
        if !self.m.scratch_write(pa, v) {
            self.refused.get_or_insert(pa);
        }
    }

    /// Reads a word of a table or data frame.
    pub(super) fn r(&mut self, pa: u64) -> u64 {
        self.m.scratch_read(pa).unwrap_or(0xDEAD_DEAD_DEAD_DEAD)
    }

    /// A zeroed 4 KiB table (0 when RAM ran out).
    pub(super) fn table(&mut self) -> u64 {
        let Some(t) = self.base.f.alloc() else { return 0 };
        for i in 0..512 {
            self.w(t + 8 * i, 0);
        }
        t
    }

    /// A 2 MiB-aligned 2 MiB block (`None` when RAM ran out).
    pub(super) fn alloc_2m(&mut self) -> Option<u64> {
        self.base.f.alloc_aligned(M2, M2)
    }

    /// A data frame: [`marker`] at offset 0, `ret` at [`RET_OFF`].
    pub(super) fn data(&mut self) -> u64 {
        let Some(t) = self.base.f.alloc() else { return 0 };
        self.w(t, marker(t));
        self.w(t + WR_OFF, 0);
        self.w(t + RET_OFF, 0xC3);
        t
    }

    /// A fresh data frame ([`Self::data`]) mapped present and writable by
    /// PTE 0 of the page table on the way to the test address `t`; returns
    /// the frame.
    pub(super) fn map_data(&mut self) -> u64 {
        let pt = self.table_for(self.t, 1);
        let d0 = self.data();
        self.w(pt, entry64(d0, P | RW));
        d0
    }

    /// The table at `level` (3 = PDPT, 2 = PD, 1 = PT) on the way to `va`,
    /// created with [`UP`] entries where missing.
    pub(super) fn table_for(&mut self, va: u64, level: u32) -> u64 {
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
    pub(super) fn slot(&mut self, va: u64, level: u32) -> u64 {
        self.table_for(va, level) + 8 * idx(va, level)
    }

    pub(super) fn probe(&mut self, op: Op, addr: u64, cpl: Cpl) -> Probe {
        self.probes += 1;
        self.cpu().probe(op, addr, cpl)
    }

    /// Probes and records the expectation; a probe that misses it gets a
    /// translation-failure report.
    pub(super) fn expect(&mut self, e: &mut Expect<'_>, what: &str, op: Op, addr: u64, cpl: Cpl, want: Want) {
        self.expect_by(e, what, op, addr, cpl, (&WantAt(want, addr), |got| matches(got, want, addr)));
    }

    /// Probes and judges the outcome with `want.1`, for expectations a
    /// [`Want`] cannot say (`want.0` says them in words); a probe that
    /// misses gets a translation-failure report.
    pub(super) fn expect_by(
        &mut self,
        e: &mut Expect<'_>,
        what: &str,
        op: Op,
        addr: u64,
        cpl: Cpl,
        (want, ok): (&dyn fmt::Display, impl FnOnce(Probe) -> bool),
    ) {
        let got = self.probe(op, addr, cpl);
        if !e.that(ok(got), format_args!("{what} at {addr:#x}: want {want}, got {}", Got(got))) {
            if let Some(kind) = access_kind(op) {
                // Right after the probe, with the check's tables still loaded.
                let cr3 = self.cpu().cr3();
                let cpl = if cpl == Cpl::User { 3 } else { 0 };
                let f = Failure { what: &what, la: addr, kind, cpl, expected: want, got: &Got(got) };
                self.rep.now(&mut *self.m, &mut *self.out, &f, Paging::long(cr3));
            }
        }
    }

    /// CR0.WP=1 and EFER.NXE as asked, once the check's tables are built
    /// (CR3 holds our PML4 since [`Lab::new`]; the check's entries went
    /// from not present to present, which needs no invalidation, SDM Vol.
    /// 3A 4.10.4.3).
    pub(super) fn enter(&mut self, e: &mut Expect<'_>, nxe: bool) -> bool {
        if let Some(a) = self.refused {
            e.that(false, format_args!("the machine refused a table write at {a:#x}"));
            return false;
        }
        self.cpu().set_cr0_wp(true);
        self.cpu().set_efer_nxe(nxe);
        true
    }

    /// Boot CR3, CR0.WP, EFER.NXE and CR4.PGE/SMEP/SMAP as they were
    /// (CR4 first: SMEP/SMAP must be off before the boot tables, which map
    /// the guest with U=1, are loaded).
    pub(super) fn leave(&mut self) {
        if !self.active {
            return;
        }
        self.active = false;
        let c4 = self.cr4;
        self.cpu().set_cr4(cr4::ALL & !c4, false);
        self.cpu().set_cr4(cr4::ALL & c4, true);
        let b = self.boot_cr3;
        let _ = self.probe(Op::MovCr3, b, Cpl::Sup);
        let (wp, nxe) = (self.cr0 & CR0_WP != 0, self.efer & EFER_NXE != 0);
        self.cpu().set_cr0_wp(wp);
        self.cpu().set_efer_nxe(nxe);
    }

    pub(super) fn invlpg(&mut self, e: &mut Expect<'_>, va: u64) {
        self.expect(e, "invlpg", Op::Invlpg, va, Cpl::Sup, Want::Done);
    }

    /// MOV CR3 of the check's own PML4 again: every non-global TLB entry
    /// and all paging-structure caches are invalidated (SDM Vol. 3A
    /// 4.10.4.1).
    pub(super) fn reload_cr3(&mut self, e: &mut Expect<'_>) {
        let r = self.pml4;
        self.expect(e, "mov cr3", Op::MovCr3, r, Cpl::Sup, Want::Done);
    }

    /// Gives the check a PML4 of its own whose entry 0 names the shared
    /// identity map with U/S=0, so the guest's code, stacks and descriptor
    /// tables are supervisor pages (U/S combines over all levels, SDM Vol.
    /// 3A 4.6.1) and CR4.SMEP/SMAP can be on. Call before building the
    /// check's tables; [`Self::reload_cr3`] loads it. Returns it (0 when
    /// RAM ran out).
    pub(super) fn supervisor_root(&mut self) -> u64 {
        let e0 = self.r(self.base.pml4);
        let root = self.table();
        if root != 0 {
            self.w(root, e0 & !US);
            self.pml4 = root;
        }
        root
    }
}

impl Drop for Lab<'_> {
    /// A check that returns early still leaves the machine as it found it.
    fn drop(&mut self) {
        self.leave();
    }
}

pub(super) use crate::regs::EFER_NXE;

pub(super) use crate::checks::{cpuid7_ebx, has_nx};

/// MAXPHYADDR (CPUID.80000008H:EAX\[7:0\], 36 without the leaf; SDM Vol. 3A 4.1.4).
pub(super) fn maxphyaddr(m: &mut dyn Machine) -> u32 {
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
