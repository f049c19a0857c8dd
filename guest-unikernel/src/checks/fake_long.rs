//! The fake machine's long-mode probe harness: a 4-level walker written
//! from SDM Vol. 3A 4.5 (translation, reserved bits), 4.6 (access rights
//! with CR0.WP, EFER.NXE, CR4.SMEP/SMAP and EFLAGS.AC), 4.7 (#PF error
//! code) and 4.8 (A/D flags) over the fake's scratch words. It has no TLB: every probe walks the
//! tables in memory, which the architecture allows (caching is optional),
//! so the `long/...` checks, which INVLPG wherever the SDM requires it,
//! must pass on it. Like QEMU TCG, whose signature the bare fake carries,
//! it reports reserved-bit faults with P=0; with the Quadrant signature it
//! sets P=1 as the hardware does.

use super::fake::Fake;
use crate::longcpu::{ec, Cpl, Fault, LongCpu, Op, Probe, GP, PF};
use crate::regs::CR0_WP;
use std::cell::Cell;

/// Deliberate model bugs (bit set), per test thread: the tests of
/// `checks::scen` prove each `long/...` check fails when the MMU under it
/// breaks the rule it checks.
pub mod bug {
    /// W=0 in an upper-level entry is ignored (CVE-2021-38198).
    pub const UPPER_W: u32 = 1 << 0;
    /// D is never set.
    pub const NO_DIRTY: u32 = 1 << 1;
    /// Reserved bits are ignored.
    pub const NO_RSVD: u32 = 1 << 2;
    /// U=0 in a 2 MiB PDE is ignored.
    pub const LARGE_U: u32 = 1 << 3;
    /// XD is ignored.
    pub const NO_XD: u32 = 1 << 4;
    /// MOV CR3 takes reserved bits.
    pub const CR3_RSVD: u32 = 1 << 5;
    /// A stale TLB: the leaf found at the first walk of a page is used
    /// until the next MOV CR3 (INVLPG does nothing).
    pub const NO_INVLPG: u32 = 1 << 6;
    /// A not-present entry is cached: a page that faulted not-present keeps
    /// faulting until the next MOV CR3 or INVLPG.
    pub const NEG_CACHE: u32 = 1 << 7;
    /// CR0.WP is ignored (taken as 0): supervisor writes to read-only pages work.
    pub const NO_WP: u32 = 1 << 8;
    /// CR4.SMEP is ignored.
    pub const NO_SMEP: u32 = 1 << 9;
    /// CR4.SMAP is ignored.
    pub const NO_SMAP: u32 = 1 << 10;
    /// A translation with G=1 (CR4.PGE=1) survives everything: INVLPG,
    /// toggling CR4.PGE, MOV CR3 (only the last is allowed, SDM Vol. 3A
    /// 4.10.4.1).
    pub const STICKY_GLOBAL: u32 = 1 << 11;
    /// A 2 MiB page maps its first 4 KiB only: bits 20:12 of the address
    /// are dropped.
    pub const LARGE_4K: u32 = 1 << 12;
    /// SMAP ignores EFLAGS.AC (supervisor accesses to user pages fault
    /// with AC=1 too; Quadrant's #PF walk did this).
    pub const SMAP_NO_AC: u32 = 1 << 13;
}

thread_local! {
    /// The model bugs in effect ([`bug`]).
    pub static BUGS: Cell<u32> = const { Cell::new(0) };
    /// The model's TLB for [`bug::NO_INVLPG`], [`bug::NEG_CACHE`] and
    /// [`bug::STICKY_GLOBAL`]: page -> Some((frame, global)) or None (not present).
    static TLB: std::cell::RefCell<std::collections::HashMap<u64, Option<(u64, bool)>>> = Default::default();
}

fn has(b: u32) -> bool {
    BUGS.with(|c| c.get() & b != 0)
}

/// The fake's MAXPHYADDR (CPUID.80000008H:EAX\[7:0\]).
pub const MAXPHYADDR: u32 = 40;
const P: u64 = 1;
const RW: u64 = 2;
const US: u64 = 4;
const A: u64 = 1 << 5;
const D: u64 = 1 << 6;
const PS: u64 = 1 << 7;
const G: u64 = 1 << 8;
use crate::longcpu::cr4::{PGE, SMAP, SMEP};
const XD: u64 = 1 << 63;
const NXE: u64 = 1 << 11;
const ADDR: u64 = 0x000F_FFFF_FFFF_F000;
/// Bits 51:MAXPHYADDR.
const HIGH_RSVD: u64 = ((1 << 52) - 1) & !((1 << MAXPHYADDR) - 1);

/// The kind of access a probe makes.
#[derive(Clone, Copy)]
struct Access {
    write: bool,
    user: bool,
    fetch: bool,
    /// EFLAGS.AC (explicit supervisor accesses only).
    ac: bool,
}

/// Drops the model's TLB entries: all, or only the non-global ones.
fn flush(keep_global: bool) {
    TLB.with(|t| t.borrow_mut().retain(|_, e| keep_global && matches!(e, Some((_, true)))));
}

impl Fake {
    fn byte(&self, pa: u64) -> u8 {
        (self.scratch.get(&(pa & !7)).copied().unwrap_or(0) >> (8 * (pa & 7))) as u8
    }

    fn set_byte(&mut self, pa: u64, b: u8) {
        let w = self.scratch.entry(pa & !7).or_insert(0);
        let sh = 8 * (pa & 7);
        *w = (*w & !(0xFF << sh)) | (u64::from(b) << sh);
    }

    fn load(&self, pa: u64, n: u64) -> u64 {
        (0..n).fold(0, |v, i| v | (u64::from(self.byte(pa + i)) << (8 * i)))
    }

    fn store(&mut self, pa: u64, n: u64, v: u64) {
        (0..n).for_each(|i| self.set_byte(pa + i, (v >> (8 * i)) as u8));
    }

    fn tcg(&self) -> bool {
        self.leaf_4000_0000.ebx == u32::from_le_bytes(*b"TCGT")
    }

    /// Translates `va` for `acc`: the physical address, or the #PF error code.
    fn walk(&mut self, va: u64, acc: Access) -> Result<u64, u64> {
        let page = va & !0xFFF;
        if let Some(hit) = TLB.with(|t| t.borrow().get(&page).copied()) {
            match hit {
                Some((f, g)) if has(bug::NO_INVLPG) || (g && has(bug::STICKY_GLOBAL)) => return Ok(f | (va & 0xFFF)),
                None if has(bug::NEG_CACHE) => return Err(u64::from(acc.write) << 1 | u64::from(acc.user) << 2),
                _ => {}
            }
        }
        let r = self.walk_tables(va, acc);
        match r {
            Ok((pa, g)) => TLB.with(|t| t.borrow_mut().insert(page, Some((pa & !0xFFF, g)))),
            Err(e) if e & ec::P == 0 && e & ec::RSVD == 0 => TLB.with(|t| t.borrow_mut().insert(page, None)),
            Err(_) => None,
        };
        r.map(|(pa, _)| pa)
    }

    /// The physical address and whether the translation is global.
    fn walk_tables(&mut self, va: u64, acc: Access) -> Result<(u64, bool), u64> {
        let nxe = self.efer & NXE != 0 && !has(bug::NO_XD);
        let wp = self.cr0 & CR0_WP != 0 && !has(bug::NO_WP);
        let smep = self.cr4 & SMEP != 0 && !has(bug::NO_SMEP);
        let smap = self.cr4 & SMAP != 0 && !has(bug::NO_SMAP);
        let mut code = 0;
        if acc.write {
            code |= ec::W;
        }
        if acc.user {
            code |= ec::U;
        }
        if acc.fetch && (nxe || self.cr4 & SMEP != 0) {
            code |= ec::I;
        }
        let mut table = self.cr3 & ADDR;
        let (mut u, mut w, mut x) = (true, true, true);
        let mut used = [0u64; 4];
        let mut pa = 0;
        let mut n = 0;
        let mut global = false;
        for level in (1..=4u32).rev() {
            let a = table + 8 * ((va >> (12 + 9 * (level - 1))) & 0x1FF);
            let e = self.load(a, 8);
            if e & P == 0 {
                return Err(code);
            }
            let ps = e & PS != 0 && level == 2;
            let mut rsvd = HIGH_RSVD | if nxe { 0 } else { XD };
            if level == 4 || level == 3 {
                rsvd |= PS;
            }
            if ps {
                rsvd |= 0x1F_E000;
            }
            if e & rsvd != 0 && !has(bug::NO_RSVD) {
                return Err(code | ec::RSVD | if self.tcg() { 0 } else { ec::P });
            }
            used[n] = a;
            n += 1;
            u &= e & US != 0 || (ps && has(bug::LARGE_U));
            w &= e & RW != 0 || (level > 1 && !ps && has(bug::UPPER_W));
            x &= !(nxe && e & XD != 0);
            global = self.cr4 & PGE != 0 && e & G != 0;
            if ps {
                let off = if has(bug::LARGE_4K) { 0xFFF } else { 0x1F_FFFF };
                pa = (e & ADDR & !0x1F_FFFF) | (va & off);
                break;
            }
            if level == 1 {
                pa = (e & ADDR) | (va & 0xFFF);
            }
            table = e & ADDR;
        }
        // SDM Vol. 3A 4.6.1: supervisor accesses to user pages (u): no
        // fetch with SMEP=1, no data access with SMAP=1 and AC=0; a write
        // needs R/W=1 everywhere when CR0.WP=1 or the access is a user one.
        let sup_user = !acc.user && u;
        if (acc.user && !u)
            || (acc.write && !w && (acc.user || wp))
            || (acc.fetch && !x)
            || (acc.fetch && sup_user && smep)
            || (!acc.fetch && sup_user && smap && (!acc.ac || has(bug::SMAP_NO_AC)))
        {
            return Err(code | ec::P);
        }
        for (i, &a) in used[..n].iter().enumerate() {
            let e = self.load(a, 8);
            let leaf = i + 1 == n;
            self.store(a, 8, e | A | if leaf && acc.write && !has(bug::NO_DIRTY) { D } else { 0 });
        }
        Ok((pa, global))
    }
}

impl LongCpu for Fake {
    fn probe(&mut self, op: Op, addr: u64, cpl: Cpl) -> Probe {
        let user = cpl == Cpl::User;
        let acc = |write, fetch| Access { write, user, fetch, ac: false };
        let acc_ac = |write| Access { write, user, fetch: false, ac: true };
        let pf = |e| Fault { vector: PF, error_code: e, cr2: addr };
        if user && !matches!(op, Op::Read | Op::Write(_) | Op::Fetch) {
            return Err(Fault { vector: 255, error_code: 0, cr2: 0 });
        }
        match op {
            Op::Read => self.walk(addr, acc(false, false)).map(|pa| self.load(pa, 8)).map_err(pf),
            Op::ReadAc => self.walk(addr, acc_ac(false)).map(|pa| self.load(pa, 8)).map_err(pf),
            Op::WriteAc(v) => self.walk(addr, acc_ac(true)).map(|pa| self.store(pa, 8, v)).map(|()| 0).map_err(pf),
            Op::Fetch => self.walk(addr, acc(false, true)).map(|_| 0).map_err(pf),
            Op::Write(v) => self.walk(addr, acc(true, false)).map(|pa| self.store(pa, 8, v)).map(|()| 0).map_err(pf),
            Op::Write32(v) => {
                self.walk(addr, acc(true, false)).map(|pa| self.store(pa, 4, u64::from(v))).map(|()| 0).map_err(pf)
            }
            Op::AndByte(m) => {
                let pa = self.walk(addr, acc(true, false)).map_err(pf)?;
                let b = self.byte(pa);
                self.set_byte(pa, b & m);
                Ok(0)
            }
            Op::RepStosb { byte, len } => {
                for i in 0..len {
                    let pa = self.walk(addr + i, acc(true, false)).map_err(|e| Fault { cr2: addr + i, ..pf(e) })?;
                    self.set_byte(pa, byte);
                }
                Ok(u64::from(byte))
            }
            Op::LockCmpxchg { expect, new } => {
                let pa = self.walk(addr, acc(true, false)).map_err(pf)?;
                let old = self.load(pa, 8);
                self.store(pa, 8, if old == expect { new } else { old });
                Ok(old)
            }
            Op::Invlpg => {
                let page = addr & !0xFFF;
                let sticky = |e: Option<(u64, bool)>| matches!(e, Some((_, true))) && has(bug::STICKY_GLOBAL);
                if !has(bug::NO_INVLPG) && !TLB.with(|t| t.borrow().get(&page).is_some_and(|e| sticky(*e))) {
                    TLB.with(|t| t.borrow_mut().remove(&page));
                }
                Ok(0)
            }
            // CR4.VMXE is 0 on the fake, as on every guest here: #UD.
            Op::Vmxon => Err(Fault { vector: crate::longcpu::UD, error_code: 0, cr2: 0 }),
            Op::MovCr3 => {
                if addr & (HIGH_RSVD | XD) != 0 && !has(bug::CR3_RSVD) {
                    return Err(Fault { vector: GP, error_code: 0, cr2: 0 });
                }
                self.cr3 = addr;
                // SDM Vol. 3A 4.10.4.1: global translations may survive.
                flush(self.cr4 & PGE != 0);
                Ok(0)
            }
        }
    }

    fn cr3(&mut self) -> u64 {
        self.cr3
    }

    fn set_cr0_wp(&mut self, on: bool) {
        self.cr0 = if on { self.cr0 | CR0_WP } else { self.cr0 & !CR0_WP };
    }

    fn set_efer_nxe(&mut self, on: bool) {
        self.efer = if on { self.efer | NXE } else { self.efer & !NXE };
    }

    fn set_cr4(&mut self, bits: u64, on: bool) {
        let bits = bits & crate::longcpu::cr4::ALL;
        let new = if on { self.cr4 | bits } else { self.cr4 & !bits };
        // SDM Vol. 3A 4.10.4.1: changing PGE flushes everything, globals too.
        if (new ^ self.cr4) & PGE != 0 {
            flush(has(bug::STICKY_GLOBAL));
        }
        self.cr4 = new;
    }
}
