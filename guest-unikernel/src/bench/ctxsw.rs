//! `bench=ctxsw`: K address spaces, each mapping M pages, and R rounds of
//! round-robin CR3 switches (DESIGN.md section 1, "Lookup on CR3 load": the
//! workload the cache exists for).
//!
//! Every space has its own PML4, PDPT, PD and PTs (entry 0 of each PML4 is
//! the boot identity map) and maps pages `va(0..M)`; page j of space k is
//! data frame `(j + k) mod M`, so a translation left over from another
//! space reads the wrong tag. A round loads each space's CR3 in turn and
//! reads the tag of each of its M pages (SDM Vol. 3A 4.5; MOV CR3 flushes
//! the old space's non-global translations, 4.10.4.1). Two warm-up rounds
//! are not measured. `ops` = CR3 switches (K x R).
//!
//! SMP: [`rounds`] is the per-CPU part. An SMP variant gives each CPU its
//! own slice of [`Spaces::cr3`] (or the same spaces, to share shadows) and
//! runs `rounds` on every CPU between one pair of BenchCounters snapshots.

use super::{expect, load, param, va, BenchError, Data, Figures, Meter, Outcome3, Spec, MAX_K, MAX_M, MAX_R};
use crate::checks::Ctx;
use crate::machine::Machine;
use crate::modes::paging::KRW;

/// Warm-up rounds before the measured loop.
pub const WARM: u32 = 2;

/// The K address spaces.
#[derive(Clone, Copy, Debug)]
pub struct Spaces {
    /// CR3 of each space (the first `k`).
    pub cr3: [u64; MAX_K as usize],
    /// How many.
    pub k: u32,
    /// Pages per space.
    pub m: u32,
    /// The data frames.
    pub data: Data,
}

impl Spaces {
    /// The CR3 values in use.
    pub fn cr3s(&self) -> &[u64] {
        &self.cr3[..self.k as usize]
    }
}

/// Builds the spaces.
pub fn build(ctx: &mut Ctx<'_>, k: u32, m: u32) -> Result<Spaces, BenchError> {
    let mut b = super::builder(ctx)?;
    let mach = &mut *ctx.m;
    let data = Data::new(mach, &mut b, m)?;
    let mut s = Spaces { cr3: [0; MAX_K as usize], k, m, data };
    for (i, cr3) in s.cr3[..k as usize].iter_mut().enumerate() {
        *cr3 = b.pml4(mach)?;
        for j in 0..m {
            b.map(mach, *cr3, va(j), data.frame(j + i as u32), KRW)?;
        }
    }
    Ok(s)
}

/// `n` rounds over `spaces` (the index of space i in the whole set is
/// `first + i`): load each CR3, read every page. Returns the reads.
pub fn rounds(mach: &mut dyn Machine, s: &Spaces, first: u32, spaces: &[u64], n: u32) -> Result<u64, BenchError> {
    let mut reads = 0;
    for _ in 0..n {
        for (i, &cr3) in spaces.iter().enumerate() {
            load(mach, cr3)?;
            for j in 0..s.m {
                expect(mach, "read after the CR3 switch", va(j), s.data.frame(j + first + i as u32))?;
            }
            reads += u64::from(s.m);
        }
    }
    Ok(reads)
}

/// The workload.
pub fn run(ctx: &mut Ctx<'_>, spec: Spec, hv: bool) -> Outcome3 {
    let (k, m, r) = (param("bench_k", spec.k, MAX_K)?, param("bench_m", spec.m, MAX_M)?, param("bench_r", spec.r, MAX_R)?);
    let s = build(ctx, k, m)?;
    let mach = &mut *ctx.m;
    rounds(mach, &s, 0, s.cr3s(), WARM)?;
    let meter = Meter::start(mach, hv);
    let accesses = rounds(mach, &s, 0, s.cr3s(), r)?;
    let (cycles, c) = meter.stop(mach);
    Ok((Figures { ops: u64::from(k) * u64::from(r), accesses }, cycles, c))
}
