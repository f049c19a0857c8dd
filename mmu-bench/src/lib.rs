//! Host microbenchmarks of the MMU core (`hypervisor::mmu`): one
//! [`Scenario`] per operation of issue #8 ([`Op`]), on the host model of
//! guest RAM and shadow frames (`hypervisor::mmu::host`), with the cache
//! (`MmuConfig::cache`) on or off.
//!
//! A scenario builds a long-mode guest with its own 4-level tables, warms
//! the cache up, and then alternates [`Scenario::prepare`] (not measured:
//! what makes the next operation the one named) and [`Scenario::op`] (the
//! measured operation). `benches/mmu.rs` times `op` with criterion (ns per
//! operation); `src/bin/mmu-ops.rs` runs it under callgrind, which counts
//! the instructions of `op` alone (`--toggle-collect=mmu_bench_op`).
//!
//! | op | prepare | op |
//! |---|---|---|
//! | `fault-fill` | INVLPG of page i | #PF on page i: walk, find the shadow path, fill the leaf |
//! | `cr3-hit` | - | MOV CR3 to the other of two spaces (with the cache a hit) |
//! | `cr3-miss` | unshadow the other space's PML4 | MOV CR3 to it: a new root |
//! | `pt-write` | INVLPG + #PF of page i (the guest uses its tables) | emulated write of page i's PTE (remap) |
//! | `recycle` | - | MOV CR3 to the next of 32 spaces and a #PF in it, on a pool of 48 frames: pages are recycled |
//!
//! Without the cache every MOV CR3 drops every shadow page first, so the
//! `nocache` column of `cr3-hit` is the cost of a switch before the cache.

use hypervisor::mmu::host::{TestFrames, TestMem};
use hypervisor::mmu::{
    FaultOutcome, GuestMode, MmuConfig, ShadowCache, VcpuMmu, CR0_PE, CR0_PG, CR0_WP, CR4_PAE, EFER_LME, EFER_NXE,
};

/// An operation of the MMU core.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Shadow fault fill.
    FaultFill,
    /// CR3 load that hits the cache.
    Cr3Hit,
    /// CR3 load that misses (a new root).
    Cr3Miss,
    /// Emulated guest page-table write.
    PtWrite,
    /// CR3 load and fault under pool pressure (recycling).
    Recycle,
}

impl Op {
    /// Every operation.
    pub const ALL: [Op; 5] = [Op::FaultFill, Op::Cr3Hit, Op::Cr3Miss, Op::PtWrite, Op::Recycle];

    /// The name in benchmark ids and reports.
    pub const fn name(self) -> &'static str {
        match self {
            Op::FaultFill => "fault-fill",
            Op::Cr3Hit => "cr3-hit",
            Op::Cr3Miss => "cr3-miss",
            Op::PtWrite => "pt-write",
            Op::Recycle => "recycle",
        }
    }

    /// The operation named `s`.
    pub fn from_name(s: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|o| o.name() == s)
    }
}

/// Guest frames: space `s` has its PML4, PDPT, PD and PT at frames
/// `4s + 1 .. 4s + 4`; the 512 data pages start at [`DATA`].
const DATA: u64 = 2048;
/// Guest RAM in frames (16 MiB).
const RAM_FRAMES: usize = 4096;
/// Present, writable, user, accessed, dirty.
const FLAGS: u64 = 0x67;
/// The pages every space maps: linear 0..2 MiB.
const PAGES: u64 = 512;
/// Spaces and pool frames of `recycle`.
const RECYCLE_SPACES: u64 = 32;
const RECYCLE_POOL: usize = 48;
/// Pool frames of the other scenarios.
const POOL: usize = 256;

/// The PML4 of space `s`.
const fn pml4(s: u64) -> u64 {
    (4 * s + 1) << 12
}

/// The guest-physical address of the PTE of page `i` of space `s`.
pub const fn pte(s: u64, i: u64) -> u64 {
    pml4(s) + 3 * 4096 + 8 * i
}

/// A scenario: the cache, one vCPU, guest RAM, and where it is.
pub struct Scenario {
    /// The MMU core under test.
    pub cache: ShadowCache<TestFrames>,
    /// Its vCPU.
    pub vcpu: VcpuMmu,
    /// Guest RAM.
    pub mem: TestMem,
    op: Op,
    spaces: u64,
    /// Operations so far (picks the page or space of the next one).
    i: u64,
}

impl Scenario {
    /// Builds the guest and warms the cache up for `op`.
    pub fn new(op: Op, cache: bool) -> Self {
        let (spaces, pool) = match op {
            Op::Recycle => (RECYCLE_SPACES, RECYCLE_POOL),
            _ => (2, POOL),
        };
        let mut mem = TestMem::new(RAM_FRAMES);
        for s in 0..spaces {
            let p = pml4(s);
            mem.w64(p, (p + 4096) | FLAGS);
            mem.w64(p + 4096, (p + 2 * 4096) | FLAGS);
            mem.w64(p + 2 * 4096, (p + 3 * 4096) | FLAGS);
            for i in 0..PAGES {
                mem.w64(pte(s, i), ((DATA + (i + s) % PAGES) << 12) | FLAGS);
            }
        }
        let frames = TestFrames::new(pool, mem.ram.len() as u64);
        let config = MmuConfig { cache, ..MmuConfig::new(pool) };
        let mut cache = ShadowCache::new(config, frames).expect("the pool");
        let (mut vcpu, f) = cache.add_vcpu(0).expect("a vCPU");
        f.done();
        cache.load_cr3(&mut vcpu, &mem, pml4(0)).expect("CR3").done();
        cache
            .set_paging_mode(&mut vcpu, &mem, CR0_PE | CR0_PG | CR0_WP, CR4_PAE, EFER_LME | EFER_NXE)
            .expect("long mode")
            .done();
        assert_eq!(vcpu.mode(), GuestMode::Long);
        let mut s = Scenario { cache, vcpu, mem, op, spaces, i: 0 };
        // Warm up: both spaces (all of them for `recycle`) loaded and every
        // page of space 0 touched.
        for sp in (1..spaces).chain([0]) {
            s.load(sp);
            s.fault(0, 0);
        }
        for i in 0..PAGES {
            s.fault(i << 12, 0);
        }
        s
    }

    fn load(&mut self, space: u64) {
        self.cache.load_cr3(&mut self.vcpu, &self.mem, pml4(space)).expect("CR3").done();
    }

    fn fault(&mut self, gva: u64, error_code: u32) {
        match self.cache.page_fault(&mut self.vcpu, &mut self.mem, gva, error_code) {
            FaultOutcome::Fixed { flush } => flush.done(),
            o => panic!("#PF at {gva:#x}: {o:?}"),
        }
    }

    /// Makes the next [`Self::op`] the operation named (not measured).
    pub fn prepare(&mut self) {
        let page = (self.i % PAGES) << 12;
        match self.op {
            Op::FaultFill => self.cache.invlpg(&mut self.vcpu, page).done(),
            Op::Cr3Hit | Op::Recycle => {}
            Op::Cr3Miss => {
                let other = pml4((self.i + 1) % 2) >> 12;
                self.cache.unshadow(other).done();
            }
            Op::PtWrite => {
                self.cache.invlpg(&mut self.vcpu, page).done();
                self.fault(page, 0);
            }
        }
    }

    /// The measured operation.
    #[inline(never)]
    pub fn op(&mut self) {
        let i = self.i;
        self.i += 1;
        match self.op {
            Op::FaultFill => self.fault((i % PAGES) << 12, 0),
            Op::Cr3Hit | Op::Cr3Miss => self.load((i + 1) % 2),
            Op::PtWrite => {
                let v = ((DATA + (i * 7) % PAGES) << 12) | FLAGS;
                self.cache.guest_pt_write(&mut self.vcpu, &mut self.mem, pte(0, i % PAGES), 8, v).done();
            }
            Op::Recycle => {
                self.load((i + 1) % self.spaces);
                self.fault(0, 0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `n` prepared operations; returns the stats difference as
    /// (created, cr3_hits, cr3_misses, recycles, pt_writes, page_faults).
    fn run(op: Op, cache: bool, n: u64) -> [u64; 6] {
        let mut s = Scenario::new(op, cache);
        let st = |s: &Scenario| {
            let t = s.cache.stats();
            [t.created, t.cr3_hits, t.cr3_misses, t.recycles, t.pt_writes, t.page_faults]
        };
        let a = st(&s);
        for _ in 0..n {
            s.prepare();
            s.op();
        }
        let b = st(&s);
        core::array::from_fn(|i| b[i] - a[i])
    }

    #[test]
    fn each_op_is_what_it_is_named() {
        // fault-fill: one fault each, no new shadow page.
        let [created, _, _, _, _, pf] = run(Op::FaultFill, true, 100);
        assert_eq!((created, pf), (0, 100));
        // cr3-hit: hits only with the cache; a rebuilt root without it.
        assert_eq!(run(Op::Cr3Hit, true, 50)[..3], [0, 50, 0]);
        assert_eq!(run(Op::Cr3Hit, false, 50)[..3], [50, 0, 50]);
        // cr3-miss: one new root each.
        assert_eq!(run(Op::Cr3Miss, true, 50)[..3], [50, 0, 50]);
        // pt-write: one emulated write each (the prepare's faults reset
        // the flood detector, so nothing is unshadowed).
        let [created, _, _, _, ptw, _] = run(Op::PtWrite, true, 100);
        assert_eq!((created, ptw), (0, 100));
        // recycle: misses and recycling with the cache.
        let [created, hits, misses, recycles, _, _] = run(Op::Recycle, true, 64);
        assert_eq!((hits, misses), (0, 64));
        assert!(created >= 64 * 4 && recycles >= 64 * 3, "{created} {recycles}");
        assert_eq!(run(Op::Recycle, false, 64)[3], 0, "without the cache nothing is left to recycle");
    }

    #[test]
    fn names_round_trip() {
        for o in Op::ALL {
            assert_eq!(Op::from_name(o.name()), Some(o));
        }
        assert_eq!(Op::from_name("x"), None);
    }
}
