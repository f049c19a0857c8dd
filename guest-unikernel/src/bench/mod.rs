//! Benchmark workloads (issue #8), selected by the guest command line
//! (`bench=NAME`) and kept apart from the check suite: with `bench=` the
//! guest runs the `boot/...` checks (which validate the memory map the
//! workloads allocate from), then the one workload, and reports it as the
//! check `bench/NAME` (pass when every access of the workload reached the
//! frame the guest tables name, SDM Vol. 3A 4.5, after each change made as
//! SDM Vol. 3A 4.10.4 requires) and as one `bench` console line
//! (`shared::line::write_bench`) with its figures.
//!
//! Each workload builds its tables, runs an unmeasured warm-up, then its
//! measured loop between two reads of the time-stamp counter and, under
//! Quadrant, two BenchCounters hypercalls (`shared::bench`): VM exits and
//! the hypervisor's cycles by exit reason, and the shadow page cache's
//! counters for exactly that loop.
//!
//! * [`ctxsw`]: K address spaces of M pages, R rounds of round-robin CR3
//!   switches, each followed by a read of every page of the space;
//! * [`fork`]: build a new address space by copying the page tables of one
//!   with M pages (write-protecting the parent's PTEs, copy-on-write
//!   style), run the child over all its pages, then the parent takes its
//!   pages back; R forks;
//! * [`ptchurn`]: mprotect-like churn of M PTEs (read-only, read-write,
//!   remap; each change followed by INVLPG and an access), R rounds;
//! * [`modewalk`]: the mode walk of the `modes/...` checks, R times.

pub mod ctxsw;
pub mod fork;
pub mod modewalk;
pub mod ptchurn;

use crate::checks::Ctx;
use crate::long::{tag, BuildError, Builder, Wrong, TAG_OFFSET};
use crate::machine::{Machine, TEST_VA_START};
use crate::modes::paging::{entry64, Frames, KRW};
use crate::report::Detail;
use core::fmt::{self, Write};
use shared::bench::{BenchCounters, MmuCounters, EXIT_REASONS};
use shared::hypercall::Hypercall;
use shared::{cpuid, Outcome, PROTOCOL_VERSION};

/// A workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// `bench=ctxsw`.
    Ctxsw,
    /// `bench=fork`.
    Fork,
    /// `bench=ptchurn`.
    Ptchurn,
    /// `bench=modewalk`.
    Modewalk,
    /// `bench=ctxsw-smp`: ctxsw on every CPU at once.
    CtxswSmp,
}

impl Workload {
    /// Every workload.
    pub const ALL: [Workload; 5] = [Workload::Ctxsw, Workload::Fork, Workload::Ptchurn, Workload::Modewalk, Workload::CtxswSmp];

    /// The word on the command line and in the `bench` line.
    pub const fn name(self) -> &'static str {
        match self {
            Workload::Ctxsw => "ctxsw",
            Workload::Fork => "fork",
            Workload::Ptchurn => "ptchurn",
            Workload::Modewalk => "modewalk",
            Workload::CtxswSmp => "ctxsw-smp",
        }
    }

    /// The workload named `w`.
    pub fn from_word(w: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.name() == w)
    }

    /// The workload runs on the APs too: the `smp/...` checks that start
    /// them and bring them online run before it.
    pub const fn needs_aps(self) -> bool {
        matches!(self, Workload::CtxswSmp)
    }

    /// Default (K, M, R): K address spaces (ctxsw only), M pages, R rounds.
    pub const fn defaults(self) -> (u32, u32, u32) {
        match self {
            Workload::Ctxsw | Workload::CtxswSmp => (16, 64, 20),
            Workload::Fork => (1, 64, 10),
            Workload::Ptchurn => (1, 64, 10),
            Workload::Modewalk => (1, 0, 3),
        }
    }
}

/// Largest K (`bench_k=`).
pub const MAX_K: u32 = 512;
/// Largest M (`bench_m=`).
pub const MAX_M: u32 = 4096;
/// Largest R (`bench_r=`).
pub const MAX_R: u32 = 100_000;

/// A workload with its parameters, from `bench=`, `bench_k=`, `bench_m=`,
/// `bench_r=` (absent: [`Workload::defaults`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spec {
    /// Which workload.
    pub workload: Workload,
    /// K: address spaces (ctxsw).
    pub k: u32,
    /// M: pages per address space.
    pub m: u32,
    /// R: rounds of the measured loop.
    pub r: u32,
}

impl Spec {
    /// `workload` with the given parameters or its defaults.
    pub fn new(workload: Workload, k: Option<u32>, m: Option<u32>, r: Option<u32>) -> Self {
        let (dk, dm, dr) = workload.defaults();
        Spec { workload, k: k.unwrap_or(dk), m: m.unwrap_or(dm), r: r.unwrap_or(dr) }
    }
}

/// The test window the workloads map their pages in (PML4 entry 1).
pub const W: u64 = TEST_VA_START;
/// Where the workloads' frames come from: free RAM above the image, below
/// 4 GiB (identity-mapped scratch RAM).
const FRAMES_END: u64 = 1 << 32;

/// The linear address of page `j` of a workload's window.
pub const fn va(j: u32) -> u64 {
    W + 4096 * j as u64
}

/// Why a workload stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchError {
    /// A parameter out of range.
    Param(&'static str, u32, u32),
    /// No validated memory map.
    NoMap,
    /// Building tables failed.
    Build(BuildError),
    /// The machine refused to load a CR3.
    Cr3(u64),
    /// The machine refused a write (linear or physical).
    Write(u64),
    /// A read reached the wrong frame (with where in the workload).
    Wrong(&'static str, Wrong),
    /// The mode walk failed (its first failing check's tag).
    Walk(usize),
    /// The mode walk did not run (`modes=0`, or no engine here).
    NoWalk,
    /// `ctxsw-smp` without APs online.
    NoAps,
    /// An AP did not finish its rounds in time.
    ApLate(usize),
    /// The machine refused an AP's MOV CR3.
    ApCr3(usize, u64),
    /// An AP's read reached the wrong frame.
    ApWrong(usize, &'static str, Wrong),
    /// An AP's rounds failed without saying why.
    ApFailed(usize),
}

impl From<BuildError> for BenchError {
    fn from(e: BuildError) -> Self {
        BenchError::Build(e)
    }
}

impl fmt::Display for BenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BenchError::Param(what, v, max) => write!(f, "{what}={v} is out of range 1..={max}"),
            BenchError::NoMap => f.write_str("no validated memory map (see boot/memory-map)"),
            BenchError::Build(e) => write!(f, "building the tables failed: {e:?}"),
            BenchError::Cr3(c) => write!(f, "the machine refused MOV CR3 {c:#x}"),
            BenchError::Write(a) => write!(f, "the machine refused a write at {a:#x}"),
            BenchError::Wrong(at, w) => write!(f, "{at}: {w}"),
            BenchError::Walk(t) => write!(f, "the mode walk failed (check tag {t}; run the modes/... checks for details)"),
            BenchError::NoWalk => f.write_str("the mode walk did not run (modes=0, or no mode-switch engine here)"),
            BenchError::NoAps => f.write_str("no APs online: it needs cpus=2 or more, smp=1 and the smp/... start-up checks passing"),
            BenchError::ApLate(c) => write!(f, "cpu{c} did not finish its rounds within the wait budget"),
            BenchError::ApCr3(c, cr3) => write!(f, "cpu{c}: the machine refused MOV CR3 {cr3:#x}"),
            BenchError::ApWrong(c, at, w) => write!(f, "cpu{c}: {at}: {w}"),
            BenchError::ApFailed(c) => write!(f, "cpu{c}: its rounds failed (no spaces shared?)"),
        }
    }
}

/// Checks `1 <= v <= max`.
fn param(what: &'static str, v: u32, max: u32) -> Result<u32, BenchError> {
    if (1..=max).contains(&v) { Ok(v) } else { Err(BenchError::Param(what, v, max)) }
}

/// A table builder over the free RAM above the image.
fn builder(ctx: &mut Ctx<'_>) -> Result<Builder, BenchError> {
    let map = ctx.map.ok_or(BenchError::NoMap)?;
    let frames = Frames::new(&map, &ctx.exclusions, ctx.m.image().end, FRAMES_END);
    Ok(Builder::new(&mut *ctx.m, frames))
}

/// `n` contiguous data frames, each tagged ([`tag`] at [`TAG_OFFSET`]).
#[derive(Clone, Copy, Debug)]
pub struct Data {
    /// The first frame.
    pub base: u64,
    /// How many.
    pub n: u32,
}

impl Data {
    /// Allocates and tags the frames.
    pub fn new(m: &mut dyn Machine, b: &mut Builder, n: u32) -> Result<Self, BenchError> {
        let base = b.frames.alloc_aligned(4096 * n as u64, 4096).ok_or(BuildError::NoFrames)?;
        b.allocated += n;
        for i in 0..n as u64 {
            Builder::put(m, base + 4096 * i + TAG_OFFSET, tag(base + 4096 * i))?;
        }
        Ok(Data { base, n })
    }

    /// Frame `i` (modulo the count).
    pub const fn frame(&self, i: u32) -> u64 {
        self.base + 4096 * (i % self.n) as u64
    }
}

/// PTs per address space at most (`MAX_M` pages).
pub const MAX_PTS: usize = (MAX_M as usize).div_ceil(512);

/// One address space's tables for `va(0..m)`: PML4 (entry 0: the boot
/// identity map), PDPT, PD and `npts` PTs, each its own frame.
#[derive(Clone, Copy, Debug)]
pub struct Tables {
    /// The PML4 (the CR3 value).
    pub pml4: u64,
    /// The PDPT.
    pub pdpt: u64,
    /// The PD.
    pub pd: u64,
    /// The PTs.
    pub pt: [u64; MAX_PTS],
    /// PTs in use.
    pub npts: u32,
}

impl Tables {
    /// Zeroed tables for `m` pages, linked ([`Self::link`]), no page mapped.
    pub fn new(mach: &mut dyn Machine, b: &mut Builder, m: u32) -> Result<Self, BenchError> {
        let npts = m.div_ceil(512);
        let mut t = Tables { pml4: b.pml4(mach)?, pdpt: b.zeroed(mach)?, pd: b.zeroed(mach)?, pt: [0; MAX_PTS], npts };
        for p in t.pt[..npts as usize].iter_mut() {
            *p = b.zeroed(mach)?;
        }
        t.link(mach)?;
        Ok(t)
    }

    /// Writes the entries above the PTs: PML4 entry 1, PDPT entry 0, PD
    /// entries 0..npts (supervisor read/write).
    pub fn link(&self, mach: &mut dyn Machine) -> Result<(), BenchError> {
        put(mach, self.pml4 + 8, entry64(self.pdpt, KRW))?;
        put(mach, self.pdpt, entry64(self.pd, KRW))?;
        for (i, &pt) in self.pt[..self.npts as usize].iter().enumerate() {
            put(mach, self.pd + 8 * i as u64, entry64(pt, KRW))?;
        }
        Ok(())
    }

    /// The physical address of the PTE of page `va(j)`.
    pub const fn pte(&self, j: u32) -> u64 {
        self.pt[(j / 512) as usize] + 8 * (j % 512) as u64
    }
}

/// Reads a page-table entry (physical, identity map).
fn get(mach: &mut dyn Machine, pa: u64) -> Result<u64, BenchError> {
    mach.scratch_read(pa).ok_or(BenchError::Write(pa))
}

/// Writes `v` at linear `va` and reads it back.
fn write_read(mach: &mut dyn Machine, at: &'static str, va: u64, v: u64) -> Result<(), BenchError> {
    if !mach.linear_write(va, v) {
        return Err(BenchError::Write(va));
    }
    crate::long::expect_word(mach, va, v).map_err(|w| BenchError::Wrong(at, w))
}

/// MOV CR3.
fn load(m: &mut dyn Machine, cr3: u64) -> Result<(), BenchError> {
    if m.load_cr3(cr3) { Ok(()) } else { Err(BenchError::Cr3(cr3)) }
}

/// A physical store (page-table edits).
fn put(m: &mut dyn Machine, pa: u64, v: u64) -> Result<(), BenchError> {
    if m.scratch_write(pa, v) { Ok(()) } else { Err(BenchError::Write(pa)) }
}

/// Reads the tag of page `va` and compares it with `frame`'s.
fn expect(m: &mut dyn Machine, at: &'static str, va: u64, frame: u64) -> Result<(), BenchError> {
    crate::long::expect_frame(m, va, frame).map_err(|w| BenchError::Wrong(at, w))
}

/// What a workload's measured loop did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Figures {
    /// The workload's unit of work done in the loop (CR3 switches, forks,
    /// PTE updates, walks).
    pub ops: u64,
    /// Reads and writes checked against the expected frame or value.
    pub accesses: u64,
}

/// The two ends of a measured loop.
struct Meter {
    hv: bool,
    before: Option<BenchCounters>,
    t0: u64,
}

impl Meter {
    fn start(m: &mut dyn Machine, hv: bool) -> Self {
        let before = if hv { m.bench_counters() } else { None };
        let t0 = m.rdtsc();
        Meter { hv, before, t0 }
    }

    /// (cycles, counters of the loop).
    fn stop(self, m: &mut dyn Machine) -> (u64, Option<BenchCounters>) {
        let t1 = m.rdtsc();
        let after = if self.hv { m.bench_counters() } else { None };
        (t1.wrapping_sub(self.t0), self.before.zip(after).map(|(a, b)| a.delta(&b)))
    }
}

/// True when the BenchCounters hypercall may be issued: the Quadrant
/// signature and our protocol version (bare, VMCALL is #UD).
fn has_counters(ctx: &mut Ctx<'_>) -> bool {
    ctx.signature.is_quadrant()
        && ctx.m.cpuid(cpuid::LEAF_SIGNATURE, 0).eax >= cpuid::LEAF_VERSION
        && ctx.m.cpuid(cpuid::LEAF_VERSION, 0).eax == PROTOCOL_VERSION
}

/// Round trips of the Version hypercall timed for `vmcall_cycles`.
const RT_CALLS: u64 = 32;

/// TSC cycles of one VMCALL round trip (exit, the Version handler, entry),
/// the smallest cost of an exit as the guest sees it.
fn vmcall_cycles(m: &mut dyn Machine) -> u64 {
    let t0 = m.rdtsc();
    for _ in 0..RT_CALLS {
        m.vmcall(Hypercall::Version, [0; 3]);
    }
    m.rdtsc().wrapping_sub(t0) / RT_CALLS
}

/// Runs the workload of `spec`, prints its `bench` line and returns the
/// verdict of the check `bench/NAME`.
pub fn run(ctx: &mut Ctx<'_>, spec: Spec, d: &mut Detail) -> Outcome {
    let hv = has_counters(ctx);
    let home = ctx.m.cr3();
    let r = match spec.workload {
        Workload::Ctxsw => ctxsw::run(ctx, spec, hv),
        Workload::Fork => fork::run(ctx, spec, hv),
        Workload::Ptchurn => ptchurn::run(ctx, spec, hv),
        Workload::Modewalk => modewalk::run(ctx, spec, hv),
        Workload::CtxswSmp => ctxsw::run_smp(ctx, spec, hv),
    };
    let back = ctx.m.load_cr3(home);
    let (fig, cycles, counters) = match r {
        Ok(x) => x,
        Err(e) => {
            let _ = write!(d, "{e}");
            return Outcome::Fail;
        }
    };
    if !back {
        let _ = write!(d, "could not go back to CR3 {home:#x}");
        return Outcome::Fail;
    }
    let rt = if hv { vmcall_cycles(&mut *ctx.m) } else { 0 };
    let cpus = if spec.workload.needs_aps() { ctx.smp.map_or(1, |run| run.aps as u32 + 1) } else { 1 };
    let _ = write_line(&mut *ctx.out, spec, hv, cpus, fig, cycles, counters.as_ref(), rt);
    let _ = ctx.out.write_char('\n');
    let _ = write!(
        d,
        "K={} M={} R={}: {} ops, {} accesses right, {} cycles",
        spec.k, spec.m, spec.r, fig.ops, fig.accesses, cycles
    );
    if let Some(c) = counters {
        let _ = write!(d, ", {} exits, {} shadow pages created", c.exits, c.mmu.created);
    }
    Outcome::Pass
}

/// The `bench` line: parameters, figures, and under Quadrant the counters
/// of the loop and the VMCALL round trip (each argument is one group of
/// the line's fields).
#[allow(clippy::too_many_arguments)]
fn write_line(
    out: &mut dyn Write,
    spec: Spec,
    hv: bool,
    cpus: u32,
    fig: Figures,
    cycles: u64,
    c: Option<&BenchCounters>,
    rt: u64,
) -> fmt::Result {
    let mut fields: [(&str, u64); 24] = [("", 0); 24];
    let base = [
        ("k", u64::from(spec.k)),
        ("m", u64::from(spec.m)),
        ("r", u64::from(spec.r)),
        ("hv", u64::from(hv)),
        ("cpus", u64::from(cpus)),
        ("ops", fig.ops),
        ("accesses", fig.accesses),
        ("cycles", cycles),
    ];
    let mut n = base.len();
    fields[..n].copy_from_slice(&base);
    let mut reasons = [(0usize, 0u64, 0u64); EXIT_REASONS];
    if let Some(c) = c {
        for (i, v) in MmuCounters::NAMES.iter().zip(c.mmu.values()) {
            fields[n] = (i, v);
            n += 1;
        }
        for (k, v) in [("exits", c.exits), ("hv_cycles", c.hv_cycles), ("vmcall_cycles", rt)] {
            fields[n] = (k, v);
            n += 1;
        }
        for (r, slot) in reasons.iter_mut().enumerate() {
            *slot = (r, c.exits_by_reason[r], c.cycles_by_reason[r]);
        }
    }
    shared::line::write_bench(&mut &mut *out, spec.workload.name(), &fields[..n], &reasons)
}

/// The result of a workload: figures, loop cycles, loop counters.
pub type Outcome3 = Result<(Figures, u64, Option<BenchCounters>), BenchError>;

#[cfg(test)]
mod tests;
