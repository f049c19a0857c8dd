//! A scripted machine for the host tests: low memory holding a Multiboot
//! block, a QEMU-like map with 16 MiB of RAM, CPUID answers for a bare run
//! (QEMU TCG) or a Quadrant run, a word map standing for scratch RAM, and
//! a model of the mode-switch engine (`fake_engine`), of 4-level paging
//! for the long-mode probes (`fake_long`), and for the cache checks a
//! 4-level MMU with a TLB over that word map plus a toy shadow cache that
//! counts MmuStats ([`FakeMmu`]).

use crate::machine::{Cpuid, Handoff, Machine, Range};
use crate::modes::layout::{self, EngineInfo};
use crate::machine::is_test_va;
use crate::modes::paging::{translate, translate_visiting, Format};
use shared::bench::BenchCounters;
use shared::coverage::RoleValue;
use shared::hypercall::{
    CheckRecord, Hypercall, MmuStats, ShadowEntry, ShadowWalkRecord, ShadowWalkStatus, MMU_STATS_MAGIC, STATUS_OK,
};
use shared::multiboot::{self, MmapEntry, PhysRead, MMAP_AVAILABLE, MMAP_RESERVED};
use shared::Outcome;
use std::collections::HashMap;

/// Where the fake's information block sits.
pub const FAKE_INFO: u64 = 0x9000;
/// The fake's guest image.
pub const IMAGE: Range = Range::new(0x10_0000, 0x14_0000);
/// The fake's RAM ends here (16 MiB).
pub const RAM_END: u64 = 0x100_0000;

/// The fake machine.
pub struct Fake {
    pub low: Vec<u8>,
    pub handoff: Handoff,
    pub cr0: u64,
    pub cr4: u64,
    pub efer: u64,
    pub cpuid1_ecx: u32,
    pub leaf_4000_0000: Cpuid,
    pub leaf_4000_0001: Cpuid,
    pub hv_version: u64,
    pub report_status: u64,
    pub vmcalls: usize,
    pub reported: Vec<(Outcome, String)>,
    pub scratch: HashMap<u64, u64>,
    /// A RAM word that reads back with bit 3 flipped.
    pub bad_word: Option<u64>,
    /// What `install_engine` answers (`None`: no engine, the modes checks skip).
    pub engine: Option<EngineInfo>,
    /// CPUID.(EAX=7,ECX=0):EBX (0: leaf 0 reports no leaf 7).
    pub leaf_7_ebx: u32,
    /// Calls of `run_engine` for the mode walk (a program whose first stop
    /// is real mode).
    pub engine_runs: usize,
    /// Calls of `run_engine` for other programs (the access sweep's).
    pub other_engine_runs: usize,
    /// Stands in for the engine: called by `run_engine` with the fake.
    pub on_run: Option<fn(&mut Fake)>,
    /// CR3 of the long-mode probe model (`fake_long`).
    pub cr3: u64,
    /// Long-mode paging and the toy shadow cache.
    pub mmu: FakeMmu,
    /// Addresses the ShadowWalk hypercall was asked about (from Rust or
    /// from the engine), in order.
    pub shadow_walks: Vec<u64>,
    /// The fake's time-stamp counter.
    pub tsc: u64,
    /// Calls of `bench_counters`.
    pub bench_calls: u64,
}

/// The fake's boot PML4 (in low memory); its entry 0 stands for the
/// identity map, which the fake never walks.
pub const BOOT_CR3: u64 = 0xE000;
/// The fake boot PML4's entry 0.
pub const BOOT_ENTRY0: u64 = 0xD023;
/// The toy cache's pool.
pub const POOL: usize = 1024;
/// The hardware CR3 the fake's ShadowWalk answers name.
pub const FAKE_SHADOW_ROOT: u64 = 0xF0_0000;

/// Long-mode paging for the fake: CR3, a TLB of present translations
/// (MOV CR3 and INVLPG drop entries, SDM Vol. 3A 4.10.4.1), and a toy
/// shadow cache: a walk shadows every table frame it uses, a CR3 load hits
/// when the root is shadowed, three writes in a row to a shadowed frame
/// unshadow it, more than [`POOL`] shadowed frames recycle one.
#[derive(Debug, Default)]
pub struct FakeMmu {
    /// CR3 (0: [`BOOT_CR3`]).
    pub cr3: u64,
    /// Page -> (frame, writable).
    pub tlb: HashMap<u64, (u64, bool)>,
    /// Shadowed table frames, in shadowing order.
    pub shadowed: Vec<u64>,
    /// Frame of the last write to a shadowed frame, and the writes in a row.
    pub last_write: Option<(u64, u32)>,
    /// The counters.
    pub stats: MmuStats,
    /// Calls of `mmu_stats`.
    pub stats_calls: usize,
    /// Quirks: INVLPG does nothing; flooding is never detected; the pool
    /// never runs out; every CR3 load misses and rebuilds.
    pub invlpg_ignored: bool,
    #[allow(missing_docs)]
    pub no_flood: bool,
    #[allow(missing_docs)]
    pub no_recycle: bool,
    #[allow(missing_docs)]
    pub cr3_always_miss: bool,
    /// Every linear write is trapped as a page-table write (the
    /// `metaphysical-write-protected` bug: data writes through large pages
    /// emulated).
    pub data_writes_trapped: bool,
    /// Recycling may free the loaded root; after that every translation
    /// not in the TLB fails (the `recycle-loaded-root` use-after-free).
    pub recycle_loaded_root: bool,
    /// The loaded root was recycled (with `recycle_loaded_root`).
    pub root_freed: bool,
}

impl FakeMmu {
    fn shadow(&mut self, frame: u64) {
        if self.shadowed.contains(&frame) {
            return;
        }
        self.shadowed.push(frame);
        self.stats.shadow_pages_created += 1;
        if self.shadowed.len() > POOL && !self.no_recycle {
            let victim = self.shadowed.remove(0);
            if self.recycle_loaded_root && victim == if self.cr3 == 0 { BOOT_CR3 } else { self.cr3 } {
                self.root_freed = true;
            }
            self.stats.recycles += 1;
            self.stats.zaps += 1;
        }
    }

    /// A store to physical `addr`.
    fn wrote(&mut self, addr: u64) {
        let frame = addr & !0xfff;
        if !self.shadowed.contains(&frame) {
            return;
        }
        self.stats.pt_writes += 1;
        let n = match self.last_write {
            Some((f, n)) if f == frame => n + 1,
            _ => 1,
        };
        self.last_write = Some((frame, n));
        if n >= 3 && !self.no_flood {
            self.shadowed.retain(|&f| f != frame);
            self.stats.unshadows += 1;
            self.stats.zaps += 1;
            self.tlb.clear();
        }
    }
}


fn sig(s: &[u8; 12], max: u32) -> Cpuid {
    let w = |i: usize| u32::from_le_bytes([s[i], s[i + 1], s[i + 2], s[i + 3]]);
    Cpuid { eax: max, ebx: w(0), ecx: w(4), edx: w(8) }
}

impl Fake {
    fn new(cmdline: &str) -> Self {
        let map = [
            MmapEntry { base: 0, len: 0x9fc00, kind: MMAP_AVAILABLE },
            MmapEntry { base: 0xf0000, len: 0x10000, kind: MMAP_RESERVED },
            MmapEntry { base: 0x10_0000, len: RAM_END - 0x10_0000, kind: MMAP_AVAILABLE },
        ];
        let mut low = vec![0u8; 0x10000];
        low[BOOT_CR3 as usize..][..8].copy_from_slice(&BOOT_ENTRY0.to_le_bytes());
        let upper_kb = ((RAM_END - 0x10_0000) / 1024) as u32;
        multiboot::build(&mut low[FAKE_INFO as usize..], FAKE_INFO as u32, 639, upper_kb, &map, cmdline, "fake")
            .unwrap();
        Fake {
            low,
            handoff: Handoff { magic: multiboot::BOOTLOADER_MAGIC, info: FAKE_INFO as u32, cr0: 0x11, eflags: 0x2 },
            cr0: 0x8000_0033,
            cr4: 0x620,
            efer: 0x500,
            cpuid1_ecx: 1 << 31,
            leaf_4000_0000: sig(b"TCGTCGTCGTCG", 0x4000_0001),
            leaf_4000_0001: Cpuid::default(),
            hv_version: 0,
            report_status: STATUS_OK,
            vmcalls: 0,
            reported: Vec::new(),
            scratch: HashMap::new(),
            bad_word: None,
            engine: Some(EngineInfo { len: 0xb00, entry: 0x20, stubs16: 0x500, stubs32: 0x700, stubs64: 0x900 }),
            engine_runs: 0,
            leaf_7_ebx: (1 << 7) | (1 << 20),
            other_engine_runs: 0,
            on_run: Some(|f| super::fake_engine::run(f, Default::default())),
            cr3: 0x1000,
            mmu: FakeMmu::default(),
            shadow_walks: Vec::new(),
            tsc: 0,
            bench_calls: 0,
        }
    }

    /// The fake hypervisor's ShadowWalk answer for `la` (it has no shadow
    /// tables): a 4-level root at [`FAKE_SHADOW_ROOT`] whose entry for
    /// `la` is not present.
    pub fn shadow_answer(&mut self, la: u64) -> ShadowWalkRecord {
        self.assert_hypervisor();
        self.shadow_walks.push(la);
        let mut r = ShadowWalkRecord::new(ShadowWalkStatus::Walked, la, FAKE_SHADOW_ROOT);
        let role = RoleValue { glevels: 4, level: 4, access: 7, cr0_wp: true, ..RoleValue::default() };
        r.push(ShadowEntry {
            value: 0,
            table: FAKE_SHADOW_ROOT,
            gfn: self.cr3_now() >> 12,
            role: role.pack(),
            level: 4,
            index: ((la >> 39) & 0x1FF) as u16,
        });
        r
    }

    /// QEMU TCG: hypervisor bit set, TCG's signature.
    pub fn bare(cmdline: &str) -> Self {
        Self::new(cmdline)
    }

    /// The Quadrant hypervisor.
    pub fn hv(cmdline: &str) -> Self {
        let mut f = Self::new(cmdline);
        f.leaf_4000_0000 = sig(&shared::cpuid::SIGNATURE, shared::cpuid::MAX_LEAF);
        f.leaf_4000_0001 =
            Cpuid { eax: shared::PROTOCOL_VERSION, ebx: shared::cpuid::FEATURE_SHADOW_PAGING, ..Cpuid::default() };
        f.hv_version = u64::from(shared::PROTOCOL_VERSION);
        f
    }

    /// True with the Quadrant signature (VMCALL reaches the fake hypervisor).
    pub fn is_quadrant(&self) -> bool {
        let l = self.leaf_4000_0000;
        shared::cpuid::is_quadrant(l.ebx, l.ecx, l.edx)
    }

    /// Bare, VMCALL is #UD: a test that gets here without the signature
    /// found a bug.
    fn assert_hypervisor(&self) {
        assert!(self.is_quadrant(), "VMCALL on a bare machine is #UD");
    }

    fn scratch_ok(addr: u64) -> bool {
        addr.is_multiple_of(8) && (IMAGE.end..RAM_END).contains(&addr)
    }

    /// The current CR3.
    fn cr3_now(&self) -> u64 {
        if self.mmu.cr3 == 0 { BOOT_CR3 } else { self.mmu.cr3 }
    }

    /// The physical address of test address `va` (TLB first, then a walk
    /// that shadows the tables it uses); `None` for a #PF.
    fn translate(&mut self, va: u64, write: bool) -> Option<u64> {
        let page = va & !0xfff;
        if let Some(&(frame, w)) = self.mmu.tlb.get(&page) {
            if w || !write {
                return Some(frame + (va & 0xfff));
            }
        }
        if self.mmu.root_freed {
            return None;
        }
        let cr3 = self.cr3_now();
        let scratch = &self.scratch;
        let word = |a: u64| scratch.get(&a).copied().unwrap_or(0);
        let mut used = Vec::new();
        let r = translate_visiting(&word, Format::Long, cr3, va, write, &mut |at| used.push(at & !0xfff));
        self.mmu.stats.page_faults += 1;
        self.mmu.last_write = None;
        let writable = translate(&word, Format::Long, cr3, va, true).is_ok();
        for f in used {
            self.mmu.shadow(f);
        }
        let pa = r.ok()?;
        self.mmu.tlb.insert(page, (pa & !0xfff, writable));
        Some(pa)
    }
}

impl PhysRead for Fake {
    /// Low memory, and above it the scratch words (RAM never written reads 0).
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        if addr < self.low.len() as u64 {
            return multiboot::SliceMem { base: 0, bytes: &self.low }.read(addr, buf);
        }
        if addr.checked_add(buf.len() as u64).is_none_or(|e| e > RAM_END) {
            return false;
        }
        for (i, b) in buf.iter_mut().enumerate() {
            let a = addr + i as u64;
            *b = (self.scratch.get(&(a & !7)).copied().unwrap_or(0) >> (8 * (a & 7))) as u8;
        }
        true
    }
}

impl Machine for Fake {
    fn cpuid(&mut self, leaf: u32, _subleaf: u32) -> Cpuid {
        match leaf {
            // Leaf 7 (SMEP bit 7, SMAP bit 20: `leaf_7_ebx`, both by default)
            // and CPUID.1:EDX.PGE for the long/... checks.
            0 => Cpuid { eax: 7, ..Cpuid::default() },
            1 => Cpuid { ecx: self.cpuid1_ecx, edx: 1 << 13, ..Cpuid::default() },
            7 => Cpuid { ebx: self.leaf_7_ebx, ..Cpuid::default() },
            0x4000_0000 => self.leaf_4000_0000,
            0x4000_0001 => self.leaf_4000_0001,
            0x8000_0000 => Cpuid { eax: 0x8000_0008, ..Cpuid::default() },
            0x8000_0001 => Cpuid { edx: 1 << 20, ..Cpuid::default() },
            0x8000_0008 => Cpuid { eax: super::fake_long::MAXPHYADDR, ..Cpuid::default() },
            _ => Cpuid::default(),
        }
    }
    fn cr0(&mut self) -> u64 {
        self.cr0
    }
    fn cr4(&mut self) -> u64 {
        self.cr4
    }
    fn efer(&mut self) -> u64 {
        self.efer
    }
    fn handoff(&self) -> Handoff {
        self.handoff
    }
    fn image(&self) -> Range {
        IMAGE
    }
    fn vmcall(&mut self, call: Hypercall, _args: [u64; 3]) -> u64 {
        self.assert_hypervisor();
        self.vmcalls += 1;
        match call {
            Hypercall::Version => self.hv_version,
            _ => shared::hypercall::STATUS_UNKNOWN,
        }
    }
    fn report_check(&mut self, rec: &CheckRecord) -> u64 {
        self.assert_hypervisor();
        self.vmcalls += 1;
        let (o, name, _) = rec.decode().unwrap();
        self.reported.push((o, name.to_string()));
        self.report_status
    }
    fn scratch_write(&mut self, addr: u64, value: u64) -> bool {
        if !Self::scratch_ok(addr) {
            return false;
        }
        self.scratch.insert(addr, value);
        self.mmu.wrote(addr);
        true
    }
    fn scratch_read(&mut self, addr: u64) -> Option<u64> {
        if !Self::scratch_ok(addr) {
            return None;
        }
        let v = self.scratch.get(&addr).copied().unwrap_or(0);
        Some(if self.bad_word == Some(addr) { v ^ 8 } else { v })
    }
    fn install_engine(&mut self) -> Option<EngineInfo> {
        self.engine
    }
    fn low_write(&mut self, addr: u64, bytes: &[u8]) -> bool {
        let end = addr + bytes.len() as u64;
        if addr < layout::LOW_START || end > layout::LOW_END {
            return false;
        }
        self.low[addr as usize..end as usize].copy_from_slice(bytes);
        true
    }
    fn low_read(&mut self, addr: u64, bytes: &mut [u8]) -> bool {
        let end = addr + bytes.len() as u64;
        if addr < layout::LOW_START || end > layout::LOW_END {
            return false;
        }
        bytes.copy_from_slice(&self.low[addr as usize..end as usize]);
        true
    }
    fn run_engine(&mut self) {
        let first = layout::STOPS as usize;
        let walk = self.low.get(first..first + 4).is_some_and(|b| b == [0; 4]);
        if walk {
            self.engine_runs += 1;
        } else {
            self.other_engine_runs += 1;
        }
        if let Some(f) = self.on_run {
            f(self);
        }
    }
    fn long_cpu(&mut self) -> Option<&mut dyn crate::longcpu::LongCpu> {
        Some(self)
    }
    fn cr3(&mut self) -> u64 {
        self.cr3_now()
    }
    fn load_cr3(&mut self, cr3: u64) -> bool {
        let e0 = self.scratch.get(&cr3).copied().unwrap_or(0);
        if cr3 != BOOT_CR3 && !(Self::scratch_ok(cr3) && cr3.is_multiple_of(4096) && e0 | 0x20 == BOOT_ENTRY0 | 0x20) {
            return false;
        }
        self.mmu.cr3 = cr3;
        self.mmu.tlb.clear();
        if self.mmu.shadowed.contains(&cr3) && !self.mmu.cr3_always_miss {
            self.mmu.stats.cr3_hits += 1;
        } else {
            self.mmu.stats.cr3_misses += 1;
            self.mmu.shadowed.retain(|&f| f != cr3);
            self.mmu.shadow(cr3);
        }
        true
    }
    fn invlpg(&mut self, va: u64) {
        if !self.mmu.invlpg_ignored {
            self.mmu.tlb.remove(&(va & !0xfff));
        }
    }
    fn linear_read(&mut self, va: u64) -> Option<u64> {
        if !is_test_va(va) {
            return None;
        }
        let pa = self.translate(va, false)?;
        Some(self.scratch.get(&pa).copied().unwrap_or(0))
    }
    fn linear_write(&mut self, va: u64, value: u64) -> bool {
        if !is_test_va(va) {
            return false;
        }
        if self.mmu.data_writes_trapped {
            self.mmu.stats.pt_writes += 1;
        }
        match self.translate(va, true) {
            Some(pa) if Self::scratch_ok(pa) => self.scratch_write(pa, value),
            _ => false,
        }
    }
    fn shadow_walk(&mut self, la: u64) -> Option<ShadowWalkRecord> {
        self.vmcalls += 1;
        Some(self.shadow_answer(la))
    }
    fn rdtsc(&mut self) -> u64 {
        // A clock that advances with every paging event the fake models.
        self.tsc += 100 + 1000 * self.mmu.stats.page_faults;
        self.tsc
    }
    fn bench_counters(&mut self) -> Option<BenchCounters> {
        self.assert_hypervisor();
        self.mmu.stats_calls += 1;
        let s = &self.mmu.stats;
        let mut c = BenchCounters::default();
        c.mmu.created = s.shadow_pages_created;
        c.mmu.live = self.mmu.shadowed.len() as u64;
        c.mmu.cr3_hits = s.cr3_hits;
        c.mmu.cr3_misses = s.cr3_misses;
        c.mmu.page_faults = s.page_faults;
        c.mmu.pt_writes = s.pt_writes;
        c.mmu.zaps = s.zaps;
        c.mmu.unshadows = s.unshadows;
        c.mmu.recycles = s.recycles;
        // One exit per CR3 load, fault, trapped write and hypercall.
        self.bench_calls += 1;
        c.exits_by_reason[28] = s.cr3_hits + s.cr3_misses;
        c.exits_by_reason[0] = s.page_faults + s.pt_writes;
        c.exits_by_reason[shared::bench::EXIT_VMCALL] = self.bench_calls;
        c.exits = c.exits_by_reason.iter().sum();
        c.hv_cycles = 500 * c.exits;
        c.cycles_by_reason = c.exits_by_reason.map(|n| 500 * n);
        Some(c)
    }
    fn mmu_stats(&mut self) -> Option<MmuStats> {
        self.assert_hypervisor();
        self.mmu.stats_calls += 1;
        let live = self.mmu.shadowed.len() as u64;
        Some(MmuStats { magic: MMU_STATS_MAGIC, version: shared::PROTOCOL_VERSION, shadow_pages_live: live, ..self.mmu.stats })
    }
}

