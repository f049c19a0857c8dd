//! A model of the mode-switch engine for the host tests: it reads the
//! stops and ops the library loaded into the fake's low window and writes
//! results the way the SDM says the processor would, translating through
//! the fake's memory with [`paging::translate_visiting`] (which sets
//! accessed flags). Two knobs make it deviate on purpose, so the tests can
//! see the checks catch it.

use super::fake::Fake;
use crate::modes::layout as l;
use crate::modes::paging::{self, Format, WalkFault};
use crate::modes::probe::{status, Op, VECTOR_GP, VECTOR_PF, VECTOR_UD};
use crate::regs::{CR0_PG, CR0_WP, CR4_PAE, CR4_PSE, EFER_LMA, EFER_LME, MSR_EFER};
use crate::modes::Mode;

/// Deliberate deviations from the architecture.
#[derive(Clone, Copy, Debug, Default)]
pub struct Quirks {
    /// Read PDPTEs from memory at every walk, never #GP at MOV CR3 (QEMU TCG).
    pub no_pdpte_registers: bool,
    /// Report #PF with the W/R bit always clear.
    pub pf_write_bit_lost: bool,
    /// Load PAE PDPTEs from CR3 bits 31:12 instead of 31:5.
    pub pdpt_page_aligned: bool,
    /// Drop stores made through a 4 MiB or 2 MiB page (write tracking
    /// lost for tables inside a large page).
    pub large_writes_lost: bool,
    /// Never set D (32-bit and PAE stops).
    pub no_dirty: bool,
    /// Ignore CR4.SMEP and CR4.SMAP.
    pub no_smep_smap: bool,
    /// Honour PS in 32-bit PDEs with CR4.PSE = 0 (4 MiB pages always).
    pub pse_always: bool,
}

fn word(f: &Fake, a: u64) -> u64 {
    if a + 8 <= f.low.len() as u64 {
        u64::from_le_bytes(f.low[a as usize..a as usize + 8].try_into().unwrap())
    } else {
        f.scratch.get(&a).copied().unwrap_or(0)
    }
}

fn read32(f: &Fake, a: u64) -> u32 {
    (word(f, a & !7) >> (8 * (a & 4))) as u32
}

fn write32(f: &mut Fake, a: u64, v: u32) {
    if a + 4 <= f.low.len() as u64 {
        f.low[a as usize..a as usize + 4].copy_from_slice(&v.to_le_bytes());
    } else {
        let w = f.scratch.entry(a & !7).or_insert(0);
        let shift = 8 * (a & 4);
        *w = (*w & !(0xFFFF_FFFF << shift)) | (u64::from(v) << shift);
    }
}

/// Registers of the stop being modelled.
struct Cpu {
    mode: Mode,
    cr0: u64,
    cr3: u64,
    cr4: u64,
    pdptes: [u64; 4],
    /// The last translation went through a 4 MiB or 2 MiB page.
    large: bool,
}

enum Res {
    Value(u64),
    Fault(u8, u32, u64),
    Unsupported,
}

fn load_pdptes(f: &Fake, q: &Quirks, cr3: u64) -> Result<[u64; 4], ()> {
    let base = if q.pdpt_page_aligned { cr3 & !0xfff } else { cr3 & !0x1f };
    let p = [0, 1, 2, 3].map(|i| word(f, base + 8 * i));
    // SDM Vol. 3A 4.4.1: a present PDPTE with a reserved bit: #GP(0).
    let bad = p.iter().any(|e| e & paging::P != 0 && e & (paging::PDPTE_PAE_RESERVED_LOW | 0xFFF0_0000_0000_0000) != 0);
    if bad {
        Err(())
    } else {
        Ok(p)
    }
}

/// Bits of the SDM's access rules that [`paging::translate_visiting`]
/// leaves out, for the 32-bit and PAE stops at CPL 0 (the engine's
/// privilege): XD (a reserved bit with EFER.NXE=0, SDM Vol. 3A 4.4.2),
/// CR4.SMEP/SMAP against user pages (4.6.1, EFLAGS.AC=0), the I/D bit of
/// the error code (4.7) and D on a completed write (4.8).
mod rules {
    pub const XD: u64 = 1 << 63;
    pub const SMEP: u64 = 1 << 20;
    pub const SMAP: u64 = 1 << 21;
    pub const NXE: u64 = 1 << 11;
}

impl Cpu {
    /// The PDE and PTE (address, value) `va` uses in a 32-bit or PAE
    /// stop, `None` when an entry on the way is not present (the walk then
    /// reports that) or for other modes.
    fn leaf_entries(&self, f: &Fake, va: u64) -> Option<[(u64, u64); 2]> {
        let (pd, pde_at, w) = match self.mode {
            Mode::Paging32 => (self.cr3 & 0xFFFF_F000, 4 * ((va >> 22) & 0x3FF), 4),
            Mode::Pae => {
                let pdpte = self.pdptes[((va >> 30) & 3) as usize];
                if pdpte & paging::P == 0 {
                    return None;
                }
                (pdpte & 0x000F_FFFF_FFFF_F000, 8 * ((va >> 21) & 0x1FF), 8)
            }
            _ => return None,
        };
        let rd = |a: u64| if w == 4 { u64::from(read32(f, a)) } else { word(f, a) };
        let pde = (pd + pde_at, rd(pd + pde_at));
        if pde.1 & paging::P == 0 {
            return None;
        }
        if pde.1 & paging::PS != 0 {
            return Some([pde, pde]);
        }
        let at = (pde.1 & 0x000F_FFFF_FFFF_F000 & if w == 4 { 0xFFFF_F000 } else { u64::MAX })
            + if w == 4 { 4 * ((va >> 12) & 0x3FF) } else { 8 * ((va >> 12) & 0x1FF) };
        let pte = (at, rd(at));
        if pte.1 & paging::P == 0 {
            return None;
        }
        Some([pde, pte])
    }

    /// The #PF [`rules`] give for a present translation, if any.
    fn rules(&self, f: &Fake, q: &Quirks, va: u64, write: bool, fetch: bool) -> Result<(), Res> {
        let Some(e) = self.leaf_entries(f, va) else { return Ok(()) };
        let pae = self.mode == Mode::Pae;
        let nxe = pae && f.efer & rules::NXE != 0;
        let id = fetch && (self.cr4 & rules::SMEP != 0 || nxe);
        let code = |p: u32| p | u32::from(write) << 1 | if id { 0x10 } else { 0 };
        let xd = pae && e.iter().any(|x| x.1 & rules::XD != 0);
        if xd && !nxe {
            let tcg = f.leaf_4000_0000.ebx == u32::from_le_bytes(*b"TCGT");
            return Err(Res::Fault(VECTOR_PF, code(if tcg { 0x8 } else { 0x9 }), va));
        }
        let user = e.iter().all(|x| x.1 & paging::US != 0);
        let smep = fetch && user && self.cr4 & rules::SMEP != 0 && !q.no_smep_smap;
        let smap = !fetch && user && self.cr4 & rules::SMAP != 0 && !q.no_smep_smap;
        if smep || smap || (fetch && xd) {
            return Err(Res::Fault(VECTOR_PF, code(1), va));
        }
        Ok(())
    }

    /// Sets D in the entry that maps `va` after a completed write.
    fn dirty(&self, f: &mut Fake, q: &Quirks, va: u64) {
        if q.no_dirty {
            return;
        }
        if let Some([_, (at, v)]) = self.leaf_entries(f, va) {
            write32(f, at, v as u32 | paging::D as u32);
        }
    }

    /// Linear to physical for a paged mode, or the #PF.
    fn translate(&mut self, f: &mut Fake, q: &Quirks, va: u64, write: bool) -> Result<u64, Res> {
        // Protected mode, or CR0.PG cleared inside a paged stop: linear
        // addresses are physical (SDM Vol. 3A 4.1.1).
        if self.mode == Mode::Prot || self.cr0 & CR0_PG == 0 {
            self.large = false;
            return Ok(va);
        }
        if self.mode == Mode::Long && ((va as i64) << 16 >> 16) as u64 != va {
            return Err(Res::Fault(VECTOR_GP, 0, 0));
        }
        let format = match self.mode {
            Mode::Paging32 => Format::Bits32 { pse: q.pse_always || self.cr4 & CR4_PSE != 0 },
            Mode::Long => Format::Long,
            // Read at every walk, reserved bits unchecked.
            _ if q.no_pdpte_registers => Format::Pae { pdptes: [0, 1, 2, 3].map(|i| word(f, (self.cr3 & !0x1f) + 8 * i)) },
            _ => Format::Pae { pdptes: self.pdptes },
        };
        let mut visited = Vec::new();
        let r = paging::translate_visiting(&|a| word(f, a), format, self.cr3, va, write, &mut |a| visited.push(a));
        // The leaf is the last entry visited; bit 7 is PS there (no PTE here sets PAT).
        self.large = visited.last().is_some_and(|a| read32(f, *a) & paging::PS as u32 != 0);
        for a in visited {
            let e = read32(f, a);
            write32(f, a, e | paging::A as u32);
        }
        r.map_err(|k| {
            let w = write && !q.pf_write_bit_lost;
            Res::Fault(VECTOR_PF, u32::from(k == WalkFault::ReadOnly) | (u32::from(w) << 1), va)
        })
    }

    fn exec(&mut self, f: &mut Fake, q: &Quirks, op: Op) -> Res {
        if self.mode == Mode::Real {
            let lin = |seg: u16, off: u64| u64::from(seg) * 16 + off;
            return match op {
                Op::Read32 { seg, addr } => Res::Value(u64::from(read32(f, lin(seg, addr)))),
                Op::Write32 { seg, addr, value } => {
                    write32(f, lin(seg, addr), value);
                    Res::Value(0)
                }
                Op::ReadCr0 => Res::Value(self.cr0),
                Op::Ud2 => Res::Fault(VECTOR_UD, 0, 0),
                _ => Res::Unsupported,
            };
        }
        let go = |r: Result<u64, Res>, k: &mut dyn FnMut(u64) -> Res| match r {
            Ok(pa) => k(pa),
            Err(e) => e,
        };
        let (write, fetch, at) = match op {
            Op::Read32 { addr, .. } => (false, false, addr),
            Op::Write32 { addr, .. } => (true, false, addr),
            Op::Fetch { addr } => (false, true, addr),
            _ => (false, false, 0),
        };
        if matches!(op, Op::Read32 { .. } | Op::Write32 { .. } | Op::Fetch { .. }) {
            if let Err(e) = self.rules(f, q, at, write, fetch) {
                return e;
            }
        }
        match op {
            Op::Read32 { addr, .. } => go(self.translate(f, q, addr, false), &mut |pa| Res::Value(u64::from(read32(f, pa)))),
            Op::Read64 { addr } => {
                go(self.translate(f, q, addr, false), &mut |pa| Res::Value(u64::from(read32(f, pa)) | u64::from(read32(f, pa + 4)) << 32))
            }
            Op::Write32 { addr, value, .. } => match self.translate(f, q, addr, true) {
                // CR0.WP = 0: supervisor writes ignore R/W (SDM Vol. 3A 4.6.1).
                Err(Res::Fault(VECTOR_PF, 3, _)) if self.cr0 & CR0_WP == 0 => {
                    let pa = self.translate(f, q, addr, false).ok().expect("readable");
                    write32(f, pa, value);
                    self.dirty(f, q, addr);
                    Res::Value(0)
                }
                Ok(_) if q.large_writes_lost && self.large => Res::Value(0),
                Ok(pa) => {
                    write32(f, pa, value);
                    self.dirty(f, q, addr);
                    Res::Value(0)
                }
                Err(e) => e,
            },
            Op::Fetch { addr } => go(self.translate(f, q, addr, false), &mut |_| Res::Value(0)),
            Op::Invlpg { .. } => Res::Value(0),
            Op::MovCr3 { value } => {
                let value = u64::from(value);
                if self.mode == Mode::Pae && !q.no_pdpte_registers {
                    match load_pdptes(f, q, value) {
                        Ok(p) => self.pdptes = p,
                        Err(()) => return Res::Fault(VECTOR_GP, 0, 0),
                    }
                }
                self.cr3 = value;
                Res::Value(value)
            }
            Op::WriteCr0 { value } => {
                self.cr0 = u64::from(value);
                Res::Value(self.cr0)
            }
            // No TLB here: every access walks, so what CR4.PGE keeps is moot.
            Op::WriteCr4 { value } => {
                self.cr4 = u64::from(value);
                Res::Value(self.cr4)
            }
            Op::ReadCr0 => Res::Value(self.cr0),
            Op::ReadCr3 => Res::Value(self.cr3),
            Op::ReadCr4 => Res::Value(self.cr4),
            Op::Ud2 => Res::Fault(VECTOR_UD, 0, 0),
            Op::Rdmsr { msr: MSR_EFER } => Res::Value(if self.mode == Mode::Long { EFER_LME | EFER_LMA } else { 0 }),
            // VMCALL: #UD bare (SDM Vol. 3C 26.1.2); the fake hypervisor's answer otherwise.
            Op::ShadowWalk { .. } if !f.is_quadrant() => Res::Fault(VECTOR_UD, 0, 0),
            Op::ShadowWalk { addr, buf } => {
                let rec = f.shadow_answer(addr).to_bytes();
                f.low[buf as usize..][..rec.len()].copy_from_slice(&rec);
                Res::Value(rec.len() as u64)
            }
            _ => Res::Unsupported,
        }
    }
}

/// Runs the stops loaded in the fake's low window.
pub fn run(f: &mut Fake, q: Quirks) {
    let count = read32(f, l::STOP_COUNT);
    for s in 0..u64::from(count) {
        let at = l::STOPS + l::STOP_SIZE * s;
        let field = |i: u64| u64::from(read32(f, at + 4 * i));
        let mode = [Mode::Real, Mode::Prot, Mode::Paging32, Mode::Pae, Mode::Long][field(0) as usize];
        let mut cpu = Cpu { mode, cr0: field(1), cr3: field(2), cr4: field(3), pdptes: [0; 4], large: false };
        if mode == Mode::Pae {
            assert!(cpu.cr4 & CR4_PAE != 0);
            let p = [0, 1, 2, 3].map(|i| word(f, (cpu.cr3 & !0x1f) + 8 * i));
            cpu.pdptes = match load_pdptes(f, &q, cpu.cr3) {
                Ok(p) => p,
                // The quirk reads a PDPT from the wrong place: whatever is there.
                Err(()) if q.pdpt_page_aligned => [0, 1, 2, 3].map(|i| word(f, (cpu.cr3 & !0xfff) + 8 * i)),
                Err(()) => panic!("stop {s}: PAE entered with bad PDPTEs {p:x?}"),
            };
        }
        let (first_op, n, first_result) = (field(4), field(5), field(6));
        for i in 0..n {
            let mut b = [0u8; 16];
            b.copy_from_slice(&f.low[(first_op + 16 * i) as usize..][..16]);
            let op = Op::decode(&b).expect("a known op");
            let mut r = [0u8; 24];
            match cpu.exec(f, &q, op) {
                Res::Value(v) => {
                    r[0] = status::DONE;
                    r[8..16].copy_from_slice(&v.to_le_bytes());
                }
                Res::Fault(v, e, cr2) => {
                    r[0] = status::FAULT;
                    r[1] = v;
                    r[4..8].copy_from_slice(&e.to_le_bytes());
                    r[16..24].copy_from_slice(&cr2.to_le_bytes());
                }
                Res::Unsupported => r[0] = status::UNSUPPORTED,
            }
            f.low[(first_result + 24 * i) as usize..][..24].copy_from_slice(&r);
        }
    }
    write32(f, l::STOP_COUNT, 0);
}
