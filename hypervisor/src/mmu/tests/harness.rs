//! The simulated machine for host tests: guest RAM and shadow frames as
//! `Vec`s, a hardware page walker over the shadow tables with the register
//! state the core asks for (faulting into the core like a #PF VM exit), and
//! a `World` that runs the same events on the MMU and on the oracle and
//! compares them (outcome, physical frame, whole guest RAM incl. A/D bits).

use crate::mmu::spte::*;
use crate::mmu::*;
use alloc::vec::Vec;

use super::refwalk::{ref_load_pdptes, RefCpu, RefOutcome};

pub use crate::mmu::host::{TestFrames, TestMem, RAM_HPA};
/// The paging-entry bits the tests build guest tables with (the same
/// positions in guest and shadow entries, SDM Vol. 3A 4.3-4.5).
pub use crate::mmu::spte::{A, D, P, PS, RW, US, XD};
pub const MAXPHY: u8 = 36;

/// A fully permissive guest table entry (P, RW, US, A) without its frame.
pub const T: u64 = P | RW | US | A;

/// The physical address of guest frame `n`.
pub fn f(n: u64) -> u64 {
    n << 12
}

/// Hardware walk of the shadow tables (PAE or IA-32e paging as the core
/// asks, CR0.WP=1, EFER.NXE=1). `Ok(hpa)` or `Err(#PF error code)`.
pub fn hw_walk(
    frames: &TestFrames,
    hw: &HwPaging,
    gva: u64,
    acc: MemAccess,
) -> Result<TlbEntry, u32> {
    let long = hw.efer & EFER_LMA != 0;
    assert!(hw.cr0_set & CR0_WP != 0 && hw.efer & EFER_NXE != 0 && hw.cr4 & CR4_PAE != 0);
    let user = acc.user;
    let mut ec = match acc.kind {
        AccessKind::Write => PFEC_W,
        AccessKind::Fetch => PFEC_I,
        AccessKind::Read => 0,
    };
    if user {
        ec |= PFEC_U;
    }
    let rd = |hpa: u64, i: u64| frames.read_spte(hpa & !0xfff, i as usize);
    let mut entries = Vec::new();
    let (mut table, mut level) = if long {
        (hw.cr3 & ADDR_MASK_64, 4u32)
    } else {
        assert!(
            hw.cr3 < 1 << 32 && hw.cr3 & 0x1f == 0,
            "PAE root must be below 4 GiB, 32-byte aligned"
        );
        let pdpte = frames.read_spte(
            hw.cr3 & !0xfff,
            (((hw.cr3 & 0xfe0) >> 3) + ((gva >> 30) & 3)) as usize,
        );
        assert!(
            pdpte & 0x8000_0000_0000_01e6 == 0,
            "VM entry fails: reserved bits in PAE root entry {pdpte:#x}"
        );
        if pdpte & P == 0 {
            return Err(ec);
        }
        (pdpte & ADDR_MASK_64, 2)
    };
    let gva = if long { gva } else { gva & 0xffff_ffff };
    loop {
        let e = rd(table, (gva >> (12 + 9 * (level - 1))) & 511);
        if e & P == 0 {
            return Err(ec);
        }
        assert!(e & PS == 0, "the core never builds large shadow pages");
        entries.push(e);
        if level == 1 {
            break;
        }
        table = e & ADDR_MASK_64;
        level -= 1;
    }
    let t = TlbEntry {
        hpa: entries[entries.len() - 1] & ADDR_MASK_64,
        u: entries.iter().all(|e| e & US != 0),
        w: entries.iter().all(|e| e & RW != 0),
        x: entries.iter().all(|e| e & XD == 0),
    };
    if !hw_allows(&t, hw, acc) {
        return Err(ec | PFEC_P);
    }
    Ok(t)
}

/// A cached translation (the harness's conservative TLB model).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TlbEntry {
    pub hpa: u64,
    pub u: bool,
    pub w: bool,
    pub x: bool,
}

/// Hardware permission check (CR0.WP=1, EFER.NXE=1, SMEP/SMAP as loaded).
pub fn hw_allows(t: &TlbEntry, hw: &HwPaging, acc: MemAccess) -> bool {
    let smep = hw.cr4 & CR4_SMEP != 0;
    let smap = hw.cr4 & CR4_SMAP != 0;
    match (acc.user, acc.kind) {
        (true, AccessKind::Read) => t.u,
        (true, AccessKind::Write) => t.u && t.w,
        (true, AccessKind::Fetch) => t.u && t.x,
        (false, AccessKind::Read) => !(smap && t.u),
        (false, AccessKind::Write) => !(smap && t.u) && t.w,
        (false, AccessKind::Fetch) => t.x && !(smep && t.u),
    }
}

/// A vCPU of the world: the core's state and the oracle's.
pub struct Cpu {
    pub mmu: VcpuMmu,
    pub oracle: RefCpu,
}

/// The MMU and the oracle side by side.
pub struct World {
    pub cache: ShadowCache<TestFrames>,
    pub cpus: Vec<Cpu>,
    pub mem: TestMem,
    pub oracle_ram: Vec<u8>,
    /// Flushes returned by the core, in order.
    pub flushes: Vec<Flush>,
    /// Per-vCPU TLB model (gva page -> translation), filled by successful
    /// hardware walks, emptied only by the flushes the core requests (and,
    /// like a real CPU, for the faulting address on a #PF). A forgotten
    /// flush leaves a stale translation that the oracle then disagrees with.
    pub tlb: Vec<alloc::collections::BTreeMap<u64, TlbEntry>>,
}

impl World {
    pub fn new(ram_frames: usize, pool: usize, ncpus: usize, cache: bool) -> World {
        let mem = TestMem::new(ram_frames);
        let frames = TestFrames::new(pool, mem.ram.len() as u64);
        let mut cfg = MmuConfig::new(pool);
        cfg.cache = cache;
        cfg.maxphyaddr = MAXPHY;
        let mut cache = ShadowCache::new(cfg, frames).expect("pool");
        let cpus = (0..ncpus)
            .map(|i| Cpu {
                mmu: cache.add_vcpu(i as u32).unwrap().0,
                oracle: RefCpu {
                    maxphyaddr: MAXPHY as u32,
                    ..Default::default()
                },
            })
            .collect();
        let oracle_ram = mem.ram.clone();
        World {
            cache,
            cpus,
            mem,
            oracle_ram,
            flushes: Vec::new(),
            tlb: alloc::vec![Default::default(); ncpus],
        }
    }

    /// Apply (and record) a flush request.
    pub fn flush(&mut self, f: Flush) {
        for (i, t) in self.tlb.iter_mut().enumerate() {
            if f.vcpus & (1 << i) != 0 {
                t.clear();
            }
        }
        self.flushes.push(f);
    }

    /// Load initial guest RAM contents into both sides.
    pub fn set_ram(&mut self, ram: &[u8]) {
        self.mem.ram.copy_from_slice(ram);
        self.oracle_ram.copy_from_slice(ram);
    }

    /// Write a guest entry on both sides without trapping (setup only,
    /// before anything shadows that page).
    pub fn poke(&mut self, gpa: u64, size: u8, v: u64) {
        assert!(
            !self.cache.is_write_protected(gpa >> 12),
            "poke into a shadowed page"
        );
        self.mem.store(gpa, size, v);
        for i in 0..size as u64 {
            self.oracle_ram[(gpa + i) as usize] = (v >> (8 * i)) as u8;
        }
    }

    /// Paging mode shorthand on both sides; panics if refused.
    #[allow(clippy::too_many_arguments)]
    pub fn mode(
        &mut self,
        c: usize,
        m: GuestMode,
        wp: bool,
        nxe: bool,
        pse: bool,
        smep: bool,
        smap: bool,
    ) {
        let mut cr0 = CR0_PE | if wp { CR0_WP } else { 0 };
        let mut cr4 = if pse { CR4_PSE } else { 0 }
            | if smep { CR4_SMEP } else { 0 }
            | if smap { CR4_SMAP } else { 0 };
        let mut efer = if nxe { EFER_NXE } else { 0 };
        if m != GuestMode::NoPaging {
            cr0 |= CR0_PG;
        }
        if matches!(m, GuestMode::Pae | GuestMode::Long) {
            cr4 |= CR4_PAE;
        }
        if m == GuestMode::Long {
            efer |= EFER_LME;
        }
        assert!(self.set_mode(c, cr0, cr4, efer), "mode change refused");
    }

    /// Read/write/fetch shorthand (8-byte write of `value`).
    pub fn go(&mut self, c: usize, gva: u64, acc: MemAccess) -> RefOutcome {
        self.access(c, gva, acc, 8, 0x5a5a_5a5a_5a5a_5a5a)
    }

    pub fn audit(&self) {
        let v: Vec<&VcpuMmu> = self.cpus.iter().map(|c| &c.mmu).collect();
        if let Err(e) = self.cache.audit(&self.mem, &v) {
            panic!("{e}");
        }
    }

    /// Both sides agree after a step: same RAM, audit holds.
    pub fn check(&self) {
        if self.mem.ram != self.oracle_ram {
            let i = self
                .mem
                .ram
                .iter()
                .zip(&self.oracle_ram)
                .position(|(a, b)| a != b)
                .unwrap();
            panic!(
                "guest RAM differs first at {i:#x}: mmu {:#x} oracle {:#x}",
                self.mem.ram[i], self.oracle_ram[i]
            );
        }
        self.audit();
    }

    /// CR0/CR4/EFER write on both sides. Returns whether it was accepted.
    pub fn set_mode(&mut self, c: usize, cr0: u64, cr4: u64, efer: u64) -> bool {
        let cpu = &mut self.cpus[c];
        let pae_mode = cr0 & CR0_PG != 0 && cr4 & CR4_PAE != 0 && efer & EFER_LME == 0;
        let o = if pae_mode {
            ref_load_pdptes(&self.oracle_ram, cpu.oracle.cr3, MAXPHY as u32).ok_or(())
        } else {
            Ok(cpu.oracle.pdpte)
        };
        let m = self
            .cache
            .set_paging_mode(&mut cpu.mmu, &self.mem, cr0, cr4, efer);
        assert_eq!(o.is_ok(), m.is_ok(), "set_mode #GP disagreement");
        if let (Ok(p), Ok(f)) = (o, m) {
            cpu.oracle.pdpte = p;
            cpu.oracle.cr0 = cr0;
            cpu.oracle.cr4 = cr4;
            cpu.oracle.efer = efer;
            self.flush(f);
            return true;
        }
        false
    }

    /// MOV to CR3 on both sides. Returns whether it was accepted.
    pub fn load_cr3(&mut self, c: usize, cr3: u64) -> bool {
        let cpu = &mut self.cpus[c];
        let o = &cpu.oracle;
        let pae = o.cr0 & CR0_PG != 0 && o.cr4 & CR4_PAE != 0 && o.efer & EFER_LME == 0;
        let long = o.cr0 & CR0_PG != 0 && o.cr4 & CR4_PAE != 0 && o.efer & EFER_LME != 0;
        let ores = if pae {
            ref_load_pdptes(&self.oracle_ram, cr3, MAXPHY as u32).ok_or(())
        } else if long && cr3 >> MAXPHY != 0 {
            Err(())
        } else {
            Ok(o.pdpte)
        };
        let m = self.cache.load_cr3(&mut cpu.mmu, &self.mem, cr3);
        assert_eq!(ores.is_ok(), m.is_ok(), "load_cr3 #GP disagreement");
        if let (Ok(p), Ok(f)) = (ores, m) {
            cpu.oracle.pdpte = p;
            cpu.oracle.cr3 = cr3;
            self.flush(f);
            return true;
        }
        false
    }

    /// The MMU side of an access: hardware walk, #PF exits into the core,
    /// retry; emulate trapped page-table writes. Stores `value` on a write.
    pub fn mmu_access(
        &mut self,
        c: usize,
        gva: u64,
        acc: MemAccess,
        width: u8,
        value: u64,
    ) -> RefOutcome {
        for _ in 0..16 {
            let cpu = &mut self.cpus[c];
            let hw = self.cache.prepare_entry(&mut cpu.mmu).expect("root");
            self.flush(hw.flush);
            let cpu = &mut self.cpus[c];
            let page = gva
                & !0xfff
                & if cpu.mmu.mode() == GuestMode::Long {
                    !0
                } else {
                    0xffff_ffff
                };
            let cached = self.tlb[c]
                .get(&page)
                .copied()
                .filter(|t| hw_allows(t, &hw, acc));
            let walked = cached
                .map(Ok)
                .unwrap_or_else(|| hw_walk(&self.cache.frames, &hw, gva, acc));
            match walked {
                Ok(t) => {
                    self.tlb[c].insert(page, t);
                    let hpa = t.hpa | (gva & 0xfff);
                    assert!(
                        hpa >= RAM_HPA && hpa < RAM_HPA + self.mem.ram.len() as u64,
                        "hardware reached {hpa:#x} outside guest RAM"
                    );
                    let gpa = hpa - RAM_HPA;
                    if acc.kind == AccessKind::Write {
                        assert!(
                            !self.cache.is_write_protected(gpa >> 12),
                            "hardware wrote a write-protected page table at {gpa:#x}"
                        );
                        self.mem.store(gpa, width, value);
                    }
                    return RefOutcome::Phys(gpa);
                }
                Err(ec) => {
                    self.tlb[c].remove(&page);
                    let out = self
                        .cache
                        .page_fault(&mut self.cpus[c].mmu, &mut self.mem, gva, ec);
                    match out {
                        FaultOutcome::Fixed { flush } => self.flush(flush),
                        FaultOutcome::InjectPf {
                            error_code,
                            cr2,
                            flush,
                        } => {
                            assert_eq!(cr2, gva);
                            self.flush(flush);
                            return RefOutcome::PageFault(error_code);
                        }
                        FaultOutcome::OutsideRam { gpa, flush } => {
                            self.flush(flush);
                            return RefOutcome::NoRam(gpa);
                        }
                        FaultOutcome::EmulateWrite { gpa, flush } => {
                            self.flush(flush);
                            assert_eq!(acc.kind, AccessKind::Write);
                            let f = self.cache.guest_pt_write(
                                &mut self.cpus[c].mmu,
                                &mut self.mem,
                                gpa,
                                width,
                                value,
                            );
                            self.flush(f);
                            return RefOutcome::Phys(gpa);
                        }
                        FaultOutcome::NoShadowFrames => panic!("pool exhausted"),
                    }
                }
            }
        }
        panic!("access at {gva:#x} {acc:?} does not converge");
    }

    /// One access on both sides; panics on disagreement. Returns the outcome.
    /// (An access crossing a page boundary is cut at the boundary: the
    /// harness models one translation per access.)
    pub fn access(
        &mut self,
        c: usize,
        gva: u64,
        acc: MemAccess,
        width: u8,
        value: u64,
    ) -> RefOutcome {
        let width = width.min((4096 - (gva & 0xfff)).min(8) as u8);
        let o = self.cpus[c].oracle.translate(
            &mut self.oracle_ram,
            gva,
            acc.kind == AccessKind::Write,
            acc.user,
            acc.kind == AccessKind::Fetch,
        );
        if let (RefOutcome::Phys(gpa), AccessKind::Write) = (o, acc.kind) {
            for i in 0..width as u64 {
                if let Some(b) = self.oracle_ram.get_mut((gpa + i) as usize) {
                    *b = (value >> (8 * i)) as u8;
                }
            }
        }
        let m = self.mmu_access(c, gva, acc, width, value);
        assert_eq!(m, o, "cpu {c} access {acc:?} at {gva:#x}: mmu vs oracle");
        m
    }

    /// A guest store of `width` bytes at physical `gpa` (through some
    /// mapping): trapped and emulated if the page is write-protected.
    pub fn phys_write(&mut self, c: usize, gpa: u64, width: u8, value: u64) {
        for i in 0..width as u64 {
            if let Some(b) = self.oracle_ram.get_mut((gpa + i) as usize) {
                *b = (value >> (8 * i)) as u8;
            }
        }
        let end = gpa + width as u64 - 1;
        if self.cache.is_write_protected(gpa >> 12) || self.cache.is_write_protected(end >> 12) {
            let cpu = &mut self.cpus[c];
            let f = self
                .cache
                .guest_pt_write(&mut cpu.mmu, &mut self.mem, gpa, width, value);
            self.flush(f);
        } else {
            self.mem.store(gpa, width, value);
        }
    }

    pub fn invlpg(&mut self, c: usize, gva: u64) {
        let f = self.cache.invlpg(&mut self.cpus[c].mmu, gva);
        self.flush(f);
    }
}

pub fn rd(user: bool) -> MemAccess {
    MemAccess {
        kind: AccessKind::Read,
        user,
    }
}
pub fn wr(user: bool) -> MemAccess {
    MemAccess {
        kind: AccessKind::Write,
        user,
    }
}
pub fn fx(user: bool) -> MemAccess {
    MemAccess {
        kind: AccessKind::Fetch,
        user,
    }
}

/// Guest memory where another vCPU stores `race` to `watch` once, at the
/// first 32-bit compare-exchange there: just before it (`before`: the
/// compare-exchange fails and the walker must read again) or just after
/// it (the store lands between the walker's A/D update and what follows).
pub struct Racy<'a> {
    pub inner: &'a mut TestMem,
    pub watch: u64,
    pub race: u32,
    pub before: bool,
    pub fired: bool,
}

impl<'a> Racy<'a> {
    pub fn new(inner: &'a mut TestMem, watch: u64, race: u32, before: bool) -> Self {
        Racy { inner, watch, race, before, fired: false }
    }
}

impl GuestMemory for Racy<'_> {
    fn ram_size(&self) -> u64 {
        self.inner.ram_size()
    }
    fn read_u64(&self, gpa: u64) -> Option<u64> {
        self.inner.read_u64(gpa)
    }
    fn read_u32(&self, gpa: u64) -> Option<u32> {
        self.inner.read_u32(gpa)
    }
    fn write_u64(&mut self, gpa: u64, v: u64) -> Option<()> {
        self.inner.write_u64(gpa, v)
    }
    fn write_u32(&mut self, gpa: u64, v: u32) -> Option<()> {
        self.inner.write_u32(gpa, v)
    }
    fn cmpxchg_u64(&mut self, gpa: u64, old: u64, new: u64) -> Option<bool> {
        self.inner.cmpxchg_u64(gpa, old, new)
    }
    fn cmpxchg_u32(&mut self, gpa: u64, old: u32, new: u32) -> Option<bool> {
        let fire = gpa == self.watch && !self.fired;
        self.fired |= fire;
        if fire && self.before {
            self.inner.w32(gpa, self.race);
        }
        let done = self.inner.cmpxchg_u32(gpa, old, new)?;
        if fire && !self.before {
            self.inner.w32(gpa, self.race);
        }
        Some(done)
    }
}
