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
//! `bench=ctxsw-smp` ([`run_smp`]): the same K spaces, switched by every
//! CPU at once. The APs started by the `smp/...` start-up checks each run
//! [`rounds`] over all K spaces beside the BSP, CPU c starting at space
//! `c * K / N` so that the CPUs load different spaces at any moment while
//! sharing every space's shadow pages; one pair of BenchCounters
//! snapshots (summed over all vCPUs) brackets the whole measured loop.
//! `ops` = CR3 switches of all CPUs (N x K x R).

use super::{expect, load, param, va, BenchError, Data, Figures, Meter, Outcome3, Spec, MAX_K, MAX_M, MAX_R};
use crate::checks::Ctx;
use crate::machine::Machine;
use crate::modes::paging::KRW;
use crate::smp::{self, Job, MAX_CPUS};

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

/// `n` rounds over the spaces, starting each round at space `start`: load
/// each CR3, read every page. Returns the reads.
pub fn rounds(mach: &mut dyn Machine, s: &Spaces, start: u32, n: u32) -> Result<u64, BenchError> {
    let mut reads = 0;
    for _ in 0..n {
        for i in 0..s.k {
            let space = (start + i) % s.k;
            load(mach, s.cr3[space as usize])?;
            for j in 0..s.m {
                expect(mach, "read after the CR3 switch", va(j), s.data.frame(j + space))?;
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
    rounds(mach, &s, 0, WARM)?;
    let meter = Meter::start(mach, hv);
    let accesses = rounds(mach, &s, 0, r)?;
    let (cycles, c) = meter.stop(mach);
    Ok((Figures { ops: u64::from(k) * u64::from(r), accesses }, cycles, c))
}

/// The spaces of `bench=ctxsw-smp`, for the APs' [`Job::BenchCtxsw`].
static SHARED: spin::Once<Spaces> = spin::Once::new();
/// Why an AP's rounds stopped, by CPU index.
static AP_ERRORS: spin::Mutex<[Option<BenchError>; MAX_CPUS]> = spin::Mutex::new([None; MAX_CPUS]);

/// The first space of CPU `cpu` of `n`.
const fn start_of(cpu: usize, n: usize, k: u32) -> u32 {
    (cpu * k as usize / n) as u32
}

/// An AP's [`Job::BenchCtxsw`]: args (CPUs, rounds). Returns the reads, or
/// `u64::MAX` with the error left in [`AP_ERRORS`]; the AP's own CR3 is
/// loaded again either way.
pub fn ap_rounds(m: &mut dyn Machine, cpu: usize, args: [u64; 6]) -> u64 {
    let Some(s) = SHARED.get() else { return u64::MAX };
    let home = m.cr3();
    let r = rounds(m, s, start_of(cpu, args[0] as usize, s.k), args[1] as u32);
    m.load_cr3(home);
    r.unwrap_or_else(|e| {
        AP_ERRORS.lock()[cpu] = Some(e);
        u64::MAX
    })
}

/// Every CPU's `n` rounds at once: posts them to the APs `1..cpus`, runs
/// the BSP's, waits for all. Returns the reads of all CPUs.
fn all_rounds(mach: &mut dyn Machine, s: &Spaces, cpus: usize, n: u32) -> Result<u64, BenchError> {
    let targets: [u32; MAX_CPUS] =
        core::array::from_fn(|c| if (1..cpus).contains(&c) { smp::post(mach, c, Job::BenchCtxsw, &[cpus as u64, u64::from(n)]) } else { 0 });
    let mut reads = rounds(mach, s, 0, n)?;
    for (c, &target) in targets.iter().enumerate().take(cpus).skip(1) {
        match smp::wait(mach, c, target, smp::BUDGET) {
            None => return Err(BenchError::ApLate(c)),
            Some(u64::MAX) => {
                return Err(match AP_ERRORS.lock()[c].take() {
                    Some(BenchError::Cr3(cr3)) => BenchError::ApCr3(c, cr3),
                    Some(BenchError::Wrong(at, w)) => BenchError::ApWrong(c, at, w),
                    _ => BenchError::ApFailed(c),
                })
            }
            Some(x) => reads += x,
        }
    }
    Ok(reads)
}

/// `bench=ctxsw-smp`: the APs must be online (the `smp/...` start-up
/// checks ran before, see [`super::Workload::needs_aps`]).
pub fn run_smp(ctx: &mut Ctx<'_>, spec: Spec, hv: bool) -> Outcome3 {
    let (k, m, r) = (param("bench_k", spec.k, MAX_K)?, param("bench_m", spec.m, MAX_M)?, param("bench_r", spec.r, MAX_R)?);
    let cpus = match ctx.smp {
        Some(run) if run.online && run.aps > 0 => run.aps + 1,
        _ => return Err(BenchError::NoAps),
    };
    let s = build(ctx, k, m)?;
    SHARED.call_once(|| s);
    let mach = &mut *ctx.m;
    all_rounds(mach, &s, cpus, WARM)?;
    let meter = Meter::start(mach, hv);
    let accesses = all_rounds(mach, &s, cpus, r)?;
    let (cycles, c) = meter.stop(mach);
    Ok((Figures { ops: (cpus as u64) * u64::from(k) * u64::from(r), accesses }, cycles, c))
}
