//! `cache/...` and `long/...`: the shadow page cache seen from a long-mode
//! guest that builds its own 4-level tables, switches CR3 and edits tables
//! from Rust (DESIGN.md section 1 mechanics, section 4 scenarios 10, 16,
//! 17 and 18).
//!
//! Every check first does the architectural part, which runs bare too:
//! each translation must reach the frame the guest tables name (SDM Vol. 3A
//! 4.5), and a table edit must be seen as SDM Vol. 3A 4.10.4 allows. The
//! `cache/...` checks then compare the hypervisor's MmuStats before and
//! after; bare or under `mmu=ept` they report SKIP "needs the hypervisor's
//! shadow paging" once the
//! architectural part passed (and FAIL when it did not). The `long/...`
//! checks are architectural; under the hypervisor their detail adds the
//! MmuStats deltas. A read that reaches the wrong frame stops the check
//! with a translation-failure report ([`crate::xlate`]).

use super::{Check, Ctx};
use crate::long::{expect_frame, index, span, tag, BuildError, Builder, Wrong};
use crate::machine::{Machine, TEST_VA_START};
use crate::modes::paging::{entry64, pde_2m, Frames, KRW};
use crate::report::{Detail, Expect};
use crate::xlate::{Failure, Paging, Reporter};
use core::fmt::{self, Write};
use shared::hypercall::MmuStats;
use shared::{cpuid, Outcome, PROTOCOL_VERSION};

/// The checks in run order.
pub static CHECKS: &[Check] = &[
    Check { name: "cache/cr3-return-no-new-shadows", run: cr3_return },
    Check { name: "cache/flood-unshadows", run: flood_unshadows },
    Check { name: "cache/large-page-writes-untrapped", run: large_page_writes },
    Check { name: "long/parent-chain", run: parent_chain },
    Check { name: "long/zap-active-root", run: zap_active_root },
];

/// The pool-pressure checks, run after every other area (`super::AREAS`):
/// they leave the shadow pool full, and in a full pool every new shadow
/// page recycles one, whose zap flushes every vCPU's TLB. That flush would
/// hide the missing remote flush `smp/remote-write-protect` looks for.
pub static PRESSURE: &[Check] = &[
    Check { name: "cache/pressure-recycles", run: pressure_recycles },
    Check { name: "cache/pressure-one-root", run: pressure_one_root },
];

/// Where the checks' frames come from: free RAM above the image, below
/// 4 GiB (scratch RAM is identity-mapped there).
const FRAMES_END: u64 = 1 << 32;

/// The test window of the checks (PML4 entry 1).
const W: u64 = TEST_VA_START;

/// Why a check stopped early.
enum Stop {
    /// No validated memory map.
    NoMap,
    /// Building tables failed.
    Build(BuildError),
    /// The machine refused to load a CR3.
    Cr3(u64),
    /// The machine refused a linear write.
    Write(u64),
    /// A translation reached the wrong frame (with where in the check).
    Wrong(&'static str, Wrong),
    /// No 2 MiB-aligned 2 MiB of free RAM below 4 GiB.
    NoLargeFrame,
}

impl From<BuildError> for Stop {
    fn from(e: BuildError) -> Self {
        Stop::Build(e)
    }
}

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stop::NoMap => f.write_str("no validated memory map (see boot/memory-map)"),
            Stop::Build(e) => write!(f, "building the tables failed: {e:?}"),
            Stop::Cr3(c) => write!(f, "the machine refused MOV CR3 {c:#x}"),
            Stop::Write(va) => write!(f, "the machine refused a write at {va:#x}"),
            Stop::Wrong(at, w) => write!(f, "{at}: {w}"),
            Stop::NoLargeFrame => f.write_str("no 2 MiB-aligned 2 MiB of free RAM below 4 GiB"),
        }
    }
}

/// A builder over the free RAM above the image.
fn builder(ctx: &mut Ctx<'_>) -> Result<Builder, Stop> {
    let map = ctx.map.ok_or(Stop::NoMap)?;
    let frames = Frames::new(&map, &ctx.exclusions, ctx.m.image().end, FRAMES_END);
    Ok(Builder::new(&mut *ctx.m, frames))
}

fn load(m: &mut dyn Machine, cr3: u64) -> Result<(), Stop> {
    if m.load_cr3(cr3) { Ok(()) } else { Err(Stop::Cr3(cr3)) }
}

fn write(m: &mut dyn Machine, va: u64, v: u64) -> Result<(), Stop> {
    if m.linear_write(va, v) { Ok(()) } else { Err(Stop::Write(va)) }
}

fn frame_at(m: &mut dyn Machine, at: &'static str, va: u64, frame: u64) -> Result<(), Stop> {
    expect_frame(m, va, frame).map_err(|w| Stop::Wrong(at, w))
}

/// True when the MmuStats hypercall may be issued and reports a shadow
/// page cache: the Quadrant signature, our protocol version (bare, VMCALL
/// is #UD, SDM Vol. 3C 26.1.2) and the shadow-paging feature bit (under the
/// EPT reference there is no cache to count).
pub(crate) fn has_stats(ctx: &mut Ctx<'_>) -> bool {
    ctx.signature.is_quadrant()
        && ctx.m.cpuid(cpuid::LEAF_SIGNATURE, 0).eax >= cpuid::LEAF_VERSION
        && ctx.m.cpuid(cpuid::LEAF_VERSION, 0).eax == PROTOCOL_VERSION
        && ctx.m.cpuid(cpuid::LEAF_VERSION, 0).ebx & cpuid::FEATURE_SHADOW_PAGING != 0
}

/// MmuStats when [`has_stats`] said so.
pub(crate) fn stats(m: &mut dyn Machine, on: bool) -> Option<MmuStats> {
    if on { m.mmu_stats() } else { None }
}

/// `after - before` of every counter.
pub(crate) fn delta(a: &MmuStats, b: &MmuStats) -> MmuStats {
    MmuStats {
        magic: b.magic,
        version: b.version,
        shadow_pages_created: b.shadow_pages_created.wrapping_sub(a.shadow_pages_created),
        shadow_pages_live: b.shadow_pages_live.wrapping_sub(a.shadow_pages_live),
        cr3_hits: b.cr3_hits.wrapping_sub(a.cr3_hits),
        cr3_misses: b.cr3_misses.wrapping_sub(a.cr3_misses),
        page_faults: b.page_faults.wrapping_sub(a.page_faults),
        zaps: b.zaps.wrapping_sub(a.zaps),
        pt_writes: b.pt_writes.wrapping_sub(a.pt_writes),
        unshadows: b.unshadows.wrapping_sub(a.unshadows),
        recycles: b.recycles.wrapping_sub(a.recycles),
        exits: b.exits.wrapping_sub(a.exits),
        // A state, not a counter: the later value.
        loaded_glevels: b.loaded_glevels,
        remote_flushes: b.remote_flushes.wrapping_sub(a.remote_flushes),
    }
}

/// The deltas as ` | created +N hits +N ...` for a detail.
struct Deltas(Option<MmuStats>);

impl fmt::Display for Deltas {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(d) = self.0 else { return Ok(()) };
        write!(
            f,
            "; mmu new+{} hit+{} miss+{} pf+{} zap+{} ptw+{} unsh+{} rec+{} exit+{}",
            d.shadow_pages_created as i64,
            d.cr3_hits as i64,
            d.cr3_misses as i64,
            d.page_faults as i64,
            d.zaps as i64,
            d.pt_writes as i64,
            d.unshadows as i64,
            d.recycles as i64,
            d.exits as i64
        )
    }
}

/// ` (name+N)` when the hypervisor's count is known, else nothing.
struct Plus(&'static str, Option<u64>);

impl fmt::Display for Plus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.1 {
            Some(v) => write!(f, " ({}+{v})", self.0),
            None => Ok(()),
        }
    }
}

/// Ends a check: a translation-failure report when a read reached the
/// wrong frame (still under the CR3 it was read with), back to the home
/// CR3, then FAIL with the reason when the architectural part stopped.
fn finish(ctx: &mut Ctx<'_>, home: Option<u64>, d: &mut Detail, r: Result<Outcome, Stop>) -> Outcome {
    if let Err(Stop::Wrong(at, w)) = &r {
        let cr3 = ctx.m.cr3();
        let want = format_args!("value {:#x} (the tag of the frame the tables name)", w.want);
        let got = GotWord(w.got);
        let f = Failure { what: at, la: w.va, kind: "read", cpl: 0, expected: &want, got: &got };
        Reporter::for_running(ctx.tally).now(&mut *ctx.m, &mut *ctx.out, &f, Paging::long(cr3));
    }
    if let Some(h) = home {
        if !ctx.m.load_cr3(h) {
            let _ = write!(d, "could not go back to CR3 {h:#x}; ");
            return Outcome::Fail;
        }
    }
    match r {
        Ok(o) => o,
        Err(s) => {
            let _ = write!(d, "{s}");
            Outcome::Fail
        }
    }
}

/// A quadword read through a test address, or the machine's refusal.
struct GotWord(Option<u64>);

impl fmt::Display for GotWord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(v) => write!(f, "value {v:#x}"),
            None => f.write_str("a refused read"),
        }
    }
}

/// The verdict of a `cache/...` check whose architectural part passed:
/// bare, SKIP; under the hypervisor, the expectations `hv` records.
fn cache_verdict(
    d: &mut Detail,
    arch: fmt::Arguments<'_>,
    s: Option<(MmuStats, MmuStats)>,
    hv: impl FnOnce(&mut Expect<'_>, &MmuStats),
) -> Outcome {
    let Some((a, b)) = s else {
        let _ = write!(d, "needs the hypervisor's shadow paging (architectural part passed: {arch})");
        return Outcome::Skip;
    };
    let dl = delta(&a, &b);
    let mut e = Expect::new(d);
    hv(&mut e, &dl);
    e.finish(format_args!("{arch}{}", Deltas(Some(dl))))
}

/// `cache/cr3-return-no-new-shadows` (DESIGN.md section 1 "Lookup on CR3
/// load"): address spaces A and B map the same 8 linear pages to different
/// frames; after warm-up rounds A -> B -> A -> B, further rounds create no
/// shadow page (`shadow_pages_created` unchanged) and every CR3 load hits
/// the cache (`cr3_hits` grows by at least the loads, `cr3_misses` does
/// not). Architecturally every read after each MOV CR3 reaches the frame
/// the loaded tables name, and a write then read gives the written value
/// (SDM Vol. 3A 4.5; MOV CR3 invalidates the old space's TLB entries,
/// 4.10.4.1).
pub fn cr3_return(ctx: &mut Ctx<'_>, d: &mut Detail) -> Outcome {
    const PAGES: usize = 8;
    const WARM: usize = 4;
    const ROUNDS: usize = 6;
    let on = has_stats(ctx);
    let mut home = None;
    let r = (|| -> Result<Outcome, Stop> {
        let mut b = builder(ctx)?;
        home = Some(b.home);
        let m = &mut *ctx.m;
        let mut spaces = [(0u64, [0u64; PAGES]); 2];
        for s in spaces.iter_mut() {
            s.0 = b.pml4(m)?;
            for (i, f) in s.1.iter_mut().enumerate() {
                *f = b.data(m)?;
                // Two PTs: pages 0..4 at W, 4..8 in the next 2 MiB.
                b.map(m, s.0, W + (i / 4) as u64 * span(2) + (i % 4) as u64 * span(1), *f, KRW)?;
            }
        }
        let va = |i: usize| W + (i / 4) as u64 * span(2) + (i % 4) as u64 * span(1);
        let mut before = None;
        let mut reads = 0;
        for round in 0..WARM + ROUNDS {
            if round == WARM {
                before = stats(m, on);
            }
            let (pml4, frames) = spaces[round % 2];
            load(m, pml4)?;
            for (i, &f) in frames.iter().enumerate() {
                frame_at(m, "read after MOV CR3", va(i), f)?;
                let v = tag(f) ^ round as u64;
                write(m, va(i) + 8, v)?;
                crate::long::expect_word(m, va(i) + 8, v).map_err(|w| Stop::Wrong("write then read", w))?;
                reads += 2;
            }
        }
        let after = stats(m, on);
        let loads = ROUNDS as u64;
        Ok(cache_verdict(
            d,
            format_args!("{reads} reads right, {} CR3 loads", WARM + ROUNDS),
            before.zip(after),
            |e, dl| {
                e.that(dl.shadow_pages_created == 0, format_args!("{} shadow pages created on return", dl.shadow_pages_created));
                e.that(dl.cr3_hits >= loads, format_args!("cr3_hits +{}, expected at least +{loads}", dl.cr3_hits));
                e.that(dl.cr3_misses == 0, format_args!("cr3_misses +{}", dl.cr3_misses));
            },
        ))
    })();
    finish(ctx, home, d, r)
}

/// `cache/flood-unshadows` (DESIGN.md section 1: three writes in a row to
/// a gfn without a page walk in between unshadow it; scenario 10): a PT
/// `T` in use (8 pages mapped at W) is zeroed with 512 stores and no
/// access through the tables in between (`unshadows` grows), unlinked and
/// used as data (pattern written through an alias, read back through the
/// identity map), then filled with new PTEs (the 8 pages reversed) and
/// linked again. Architecturally (SDM Vol. 3A 4.10.4.1: MOV CR3 flushes)
/// every page then reaches its new frame, and once `T` is a page table
/// again an edit of a PTE through the data alias plus INVLPG takes effect
/// (under the hypervisor: tracked again, `pt_writes` grows).
pub fn flood_unshadows(ctx: &mut Ctx<'_>, d: &mut Detail) -> Outcome {
    let on = has_stats(ctx);
    let mut home = None;
    let r = (|| -> Result<Outcome, Stop> {
        let mut b = builder(ctx)?;
        home = Some(b.home);
        let m = &mut *ctx.m;
        let pml4 = b.pml4(m)?;
        let mut data = [0u64; 9];
        for f in data.iter_mut() {
            *f = b.data(m)?;
        }
        let t = b.table(m, pml4, W, 1)?;
        let pd = b.table(m, pml4, W, 2)?;
        for (i, &f) in data[..8].iter().enumerate() {
            Builder::put(m, t + 8 * i as u64, entry64(f, KRW))?;
        }
        // T as data at W + 2 MiB.
        let alias = W + span(2);
        b.map(m, pml4, alias, t, KRW)?;
        load(m, pml4)?;
        for (i, &f) in data[..8].iter().enumerate() {
            frame_at(m, "before the memset", W + i as u64 * span(1), f)?;
        }
        let s0 = stats(m, on);
        // The memset: 512 stores in a row to the PT, nothing in between.
        for i in 0..512 {
            Builder::put(m, t + 8 * i, 0)?;
        }
        let s1 = stats(m, on);
        // Unlinked, it is data.
        Builder::put(m, pd + 8 * index(W, 2) as u64, 0)?;
        load(m, pml4)?;
        for i in 0..512 {
            write(m, alias + 8 * i, tag(t + 8 * i) | 1)?;
        }
        for i in 0..512 {
            let a = t + 8 * i;
            let got = m.scratch_read(a);
            if got != Some(tag(a) | 1) {
                return Err(Stop::Wrong("data written through the alias", Wrong { va: a, got, want: tag(a) | 1 }));
            }
        }
        // A page table again: the 8 pages reversed.
        for i in 0..512u64 {
            let e = if i < 8 { entry64(data[7 - i as usize], KRW) } else { 0 };
            Builder::put(m, t + 8 * i, e)?;
        }
        Builder::put(m, pd + 8 * index(W, 2) as u64, entry64(t, KRW))?;
        load(m, pml4)?;
        for i in 0..8 {
            frame_at(m, "a page table again", W + i as u64 * span(1), data[7 - i])?;
        }
        // Tracked again: PTE 0 edited through the data alias, INVLPG.
        let s2 = stats(m, on);
        write(m, alias, entry64(data[8], KRW))?;
        m.invlpg(W);
        frame_at(m, "PTE 0 edited through the alias + INVLPG", W, data[8])?;
        let s3 = stats(m, on);
        let ptw = s2.zip(s3).map(|(a, b)| b.pt_writes.wrapping_sub(a.pt_writes));
        Ok(cache_verdict(
            d,
            format_args!("T={t:#x}: 8+8 pages right, alias edit seen{}", Plus("ptw", ptw)),
            s0.zip(s1),
            |e, dl| {
                e.that(dl.unshadows >= 1, format_args!("memset of the shadowed PT: unshadows +{}", dl.unshadows));
                e.that(ptw.unwrap_or(0) >= 1, format_args!("the edit of the re-shadowed PT was not trapped (pt_writes +{ptw:?})"));
            },
        ))
    })();
    finish(ctx, home, d, r)
}

/// 2 MiB.
const MIB2: u64 = 2 << 20;
/// Writes of `cache/large-page-writes-untrapped`, spread over its 2 MiB,
/// and with `light=1` (the audit run: about two MMU exits per write, each
/// audited).
const LP_WRITES: u64 = 64;
const LP_WRITES_LIGHT: u64 = 8;

/// The highest 2 MiB-aligned 2 MiB of free RAM below 4 GiB: the `Builder`s
/// of this area allocate upwards from the image end, so these frames are
/// nobody's page table.
fn top_2m(ctx: &mut Ctx<'_>) -> Option<u64> {
    let map = ctx.map?;
    let mut top = None;
    crate::memmap::plan_ram_test(&map, ctx.m.image().end, FRAMES_END, &ctx.exclusions, |r| {
        let base = r.end.checked_sub(MIB2).map(|e| e & !(MIB2 - 1));
        if let Some(b) = base.filter(|&b| b >= r.start) {
            top = Some(b);
        }
    });
    top
}

/// `cache/large-page-writes-untrapped` (DESIGN.md section 1: metaphysical
/// shadows, the splits of a large page and the no-paging identity map,
/// never write-protect their frames; KVM's direct pages): a PDE with PS=1
/// maps 2 MiB of data frames (the top 2 MiB of free RAM, no page table
/// anywhere) at W; 64 writes spread over the 2 MiB (frame 0 included),
/// each read back through W. Architecturally (SDM Vol. 3A 4.5.4, Table
/// 4-17: a PDE with PS=1 maps a 2 MiB page, bits 51:21 its base) every
/// value reads back through W and lands at base + offset (read through the
/// identity map). Under the hypervisor these are data writes: none may be
/// trapped as a guest page-table write (`pt_writes` +0) nor unshadow
/// anything (`unshadows` +0). With `light=1` 8 writes, 256 KiB apart.
pub fn large_page_writes(ctx: &mut Ctx<'_>, d: &mut Detail) -> Outcome {
    let on = has_stats(ctx);
    let n = if ctx.config.light { LP_WRITES_LIGHT } else { LP_WRITES };
    let mut home = None;
    let big = top_2m(ctx);
    let r = (|| -> Result<Outcome, Stop> {
        let mut b = builder(ctx)?;
        home = Some(b.home);
        let base = big.ok_or(Stop::NoLargeFrame)?;
        let m = &mut *ctx.m;
        let pml4 = b.pml4(m)?;
        let pd = b.table(m, pml4, W, 2)?;
        Builder::put(m, pd + 8 * index(W, 2) as u64, pde_2m(base, KRW))?;
        load(m, pml4)?;
        // Offset of write i: 2 MiB / n apart, a different quadword in each.
        let off = |i: u64| i * (MIB2 / n) + 8 * (i % 8);
        let val = |i: u64| tag(base + off(i)) ^ (i << 1);
        let s0 = stats(m, on);
        for i in 0..n {
            write(m, W + off(i), val(i))?;
            crate::long::expect_word(m, W + off(i), val(i)).map_err(|w| Stop::Wrong("write then read through the 2 MiB page", w))?;
        }
        let s1 = stats(m, on);
        for i in 0..n {
            let (pa, v) = (base + off(i), val(i));
            let got = m.scratch_read(pa);
            if got != Some(v) {
                return Err(Stop::Wrong("the value at base + offset", Wrong { va: pa, got, want: v }));
            }
        }
        Ok(cache_verdict(
            d,
            format_args!("2 MiB page at {base:#x}: {n} writes read back"),
            s0.zip(s1),
            |e, dl| {
                e.that(dl.pt_writes == 0, format_args!("data writes through a 2 MiB page trapped: pt_writes +{}", dl.pt_writes));
                e.that(dl.unshadows == 0, format_args!("data writes unshadowed: unshadows +{}", dl.unshadows));
            },
        ))
    })();
    finish(ctx, home, d, r)
}

/// Address spaces of `cache/pressure-recycles`.
const P_SPACES: usize = 40;
/// Page tables per space (each maps one page).
const P_PTS: usize = 24;
/// Rounds over all spaces.
const P_ROUNDS: usize = 2;

/// `cache/pressure-recycles` (DESIGN.md section 1 "Recycling", scenario
/// 16): 40 address spaces, each with its own PML4, PDPT, PD and 24 PTs
/// (1080 tables, more than the hypervisor's 1024-frame pool), map the same
/// 24 linear pages to distinct frames; two round-robin rounds load each
/// CR3 and read every page. Architecturally each read reaches its space's
/// frame (SDM Vol. 3A 4.5, 4.10.4.1); under the hypervisor `recycles`
/// grows. With `light=1` (the audit run: the hypervisor checks the whole
/// cache after every MMU exit, and a full pool makes each take seconds in
/// Bochs) it SKIPs.
pub fn pressure_recycles(ctx: &mut Ctx<'_>, d: &mut Detail) -> Outcome {
    let on = has_stats(ctx);
    if ctx.config.light {
        let _ = write!(d, "light=1: thousands of MMU exits over a full pool are left out of this run");
        return Outcome::Skip;
    }
    let mut home = None;
    let r = (|| -> Result<Outcome, Stop> {
        let mut b = builder(ctx)?;
        home = Some(b.home);
        let m = &mut *ctx.m;
        let va = |k: usize, j: usize| W + j as u64 * span(2) + (k % 512) as u64 * span(1);
        let mut spaces = [(0u64, [0u64; P_PTS]); P_SPACES];
        for (k, s) in spaces.iter_mut().enumerate() {
            s.0 = b.pml4(m)?;
            for (j, f) in s.1.iter_mut().enumerate() {
                *f = b.data(m)?;
                b.map(m, s.0, va(k, j), *f, KRW)?;
            }
        }
        let tables = b.allocated as usize - P_SPACES * P_PTS;
        let s0 = stats(m, on);
        let mut reads = 0;
        for _ in 0..P_ROUNDS {
            for (k, (pml4, frames)) in spaces.iter().enumerate() {
                load(m, *pml4)?;
                for (j, &f) in frames.iter().enumerate() {
                    frame_at(m, "round-robin read", va(k, j), f)?;
                    reads += 1;
                }
            }
        }
        let s1 = stats(m, on);
        Ok(cache_verdict(
            d,
            format_args!("{reads} reads right, {P_SPACES} CR3s x{P_ROUNDS}, {tables} tables"),
            s0.zip(s1),
            |e, dl| {
                e.that(dl.recycles > 0, format_args!("{tables} tables over a 1024-frame pool: recycles +0"));
            },
        ))
    })();
    finish(ctx, home, d, r)
}

/// Page tables of `cache/pressure-one-root` (more than the hypervisor's
/// 1024-frame pool), and with `light=1`.
const P1_PTS: usize = 1200;
const P1_PTS_LIGHT: usize = 16;

/// `cache/pressure-one-root` (DESIGN.md section 1 "Recycling": never a
/// loaded root; section 2: roots are pinned by `root_count`): one PML4,
/// loaded once, maps 1200 linear pages through 1200 distinct PTs (2 MiB
/// apart; more tables than the hypervisor's 1024-frame pool) to distinct
/// frames; every page is read twice, without a CR3 reload, so the loaded
/// root becomes the coldest page of the LRU list and recycling must pass
/// over it. Architecturally every read reaches the frame the tables name
/// (SDM Vol. 3A 4.5.4; nothing was changed, so no TLB rule is involved);
/// under the hypervisor `recycles` grows (the pressure was real). With
/// `light=1` (the audit run: every MMU exit audited, about a second each
/// in Bochs) 16 PTs, and no pressure is required.
pub fn pressure_one_root(ctx: &mut Ctx<'_>, d: &mut Detail) -> Outcome {
    let on = has_stats(ctx);
    let light = ctx.config.light;
    let n = if light { P1_PTS_LIGHT } else { P1_PTS };
    let mut home = None;
    let r = (|| -> Result<Outcome, Stop> {
        let mut b = builder(ctx)?;
        home = Some(b.home);
        let m = &mut *ctx.m;
        let va = |j: usize| W + j as u64 * span(2) + (j % 512) as u64 * span(1);
        let pml4 = b.pml4(m)?;
        // Frame numbers (below 4 GiB: 32 bits), to keep the stack small.
        let mut frames = [0u32; P1_PTS];
        for (j, f) in frames[..n].iter_mut().enumerate() {
            let frame = b.data(m)?;
            *f = (frame >> 12) as u32;
            b.map(m, pml4, va(j), frame, KRW)?;
        }
        let tables = b.allocated as usize - n;
        load(m, pml4)?;
        let s0 = stats(m, on);
        for at in ["first read, one CR3", "second read, one CR3"] {
            for (j, &f) in frames[..n].iter().enumerate() {
                frame_at(m, at, va(j), u64::from(f) << 12)?;
            }
        }
        let s1 = stats(m, on);
        Ok(cache_verdict(
            d,
            format_args!("{} reads right, 1 CR3 load, {tables} tables{}", 2 * n, if light { " (light=1)" } else { "" }),
            s0.zip(s1),
            |e, dl| {
                if !light {
                    e.that(dl.recycles > 0, format_args!("{tables} tables over a 1024-frame pool: recycles +0"));
                }
            },
        ))
    })();
    finish(ctx, home, d, r)
}

/// PTs of `long/parent-chain` all mapping the one frame.
const PC_PTS: usize = 4;
/// PTE edits through aliases.
const PC_EDITS: usize = 64;

/// `long/parent-chain` (scenario 17; DESIGN.md section 1 "parent chain"
/// and "write protection" through the reverse map): frame F is mapped at
/// 2048 linear addresses (PD entries 0..512 of the alias region each
/// point to one of 4 PTs whose 512 PTEs all map F), each written and read
/// once, then F is made the PT of another region. Writes through aliases
/// are writes to F (SDM Vol. 3A 4.5): a PTE made present through an alias
/// is used without INVLPG (4.10.4.3: a not-present entry is not cached),
/// a present PTE changed through an alias is used after INVLPG of the
/// address (4.10.4.1), for 64 aliases spread over all PTs and PD entries.
/// With `light=1` one alias in 16 PD entries is written and read instead
/// of four in each, and 8 PTEs are edited.
pub fn parent_chain(ctx: &mut Ctx<'_>, d: &mut Detail) -> Outcome {
    let on = has_stats(ctx);
    // light=1: one alias in 16 PD entries, 8 edits.
    let (pde_step, per_pde, edits) = if ctx.config.light { (16, 1, 8) } else { (1, PC_PTS, PC_EDITS) };
    let mut home = None;
    let r = (|| -> Result<Outcome, Stop> {
        let mut b = builder(ctx)?;
        home = Some(b.home);
        let m = &mut *ctx.m;
        let pml4 = b.pml4(m)?;
        let f = b.zeroed(m)?;
        let pd = b.table(m, pml4, W, 2)?;
        for n in 0..PC_PTS {
            let pt = b.raw()?;
            for j in 0..512 {
                Builder::put(m, pt + 8 * j, entry64(f, KRW))?;
            }
            // PD entries i with i % PC_PTS == n point to PT n.
            for i in (n..512).step_by(PC_PTS) {
                Builder::put(m, pd + 8 * i as u64, entry64(pt, KRW))?;
            }
        }
        let region = W + span(3);
        let pd_r = b.table(m, pml4, region, 2)?;
        let mut data = [0u64; 16];
        for x in data.iter_mut() {
            *x = b.data(m)?;
        }
        load(m, pml4)?;
        let s0 = stats(m, on);
        // Every alias (PD entry i, PTE j): PT i % 4, and each PT's 512
        // entries once: j runs over 4 values per PD entry.
        let alias = |i: usize, j: usize| W + i as u64 * span(2) + j as u64 * span(1);
        let mut touched = 0;
        for i in (0..512).step_by(pde_step) {
            for t in 0..per_pde {
                let j = (i / PC_PTS) * PC_PTS + t;
                let v = ((i * 512 + j) as u64) << 1;
                write(m, alias(i, j) + 8, v)?;
                crate::long::expect_word(m, alias(i, j) + 8, v).map_err(|w| Stop::Wrong("alias write then read", w))?;
                touched += 1;
            }
        }
        // F becomes a PT: entry 0 -> data[0] written through an alias,
        // entry 1 cleared (it held the last alias value).
        write(m, alias(3, 5), entry64(data[0], KRW))?;
        write(m, alias(7, 9) + 8, 0)?;
        Builder::put(m, pd_r + 8 * index(region, 2) as u64, entry64(f, KRW))?;
        frame_at(m, "F linked as a PT", region, data[0])?;
        let s1 = stats(m, on);
        for s in 0..edits {
            // PD entry i (all residues mod 4 and all 512 reached in steps),
            // PTE j: a different alias for each edit.
            let i = (s * 37 + s / 8) % 512;
            let j = (s * 71 + 3) % 512;
            let idx = 2 + s as u64;
            let page = region + idx * span(1);
            write(m, alias(i, j) + 8 * idx, entry64(data[1 + s % 7], KRW))?;
            frame_at(m, "not present -> present through an alias, no INVLPG", page, data[1 + s % 7])?;
            let (i2, j2) = ((i + 1) % 512, (j + 255) % 512);
            write(m, alias(i2, j2) + 8 * idx, entry64(data[8 + s % 8], KRW))?;
            m.invlpg(page);
            frame_at(m, "present PTE changed through an alias + INVLPG", page, data[8 + s % 8])?;
        }
        let s2 = stats(m, on);
        let dl = s1.zip(s2).map(|(a, b)| delta(&a, &b));
        let dl0 = s0.zip(s1).map(|(a, b)| delta(&a, &b));
        let mut e = Expect::new(d);
        if let Some(dl) = dl {
            e.that(dl.pt_writes >= 2 * edits as u64, format_args!("edits of the PT F through aliases: pt_writes +{}, expected >= {}", dl.pt_writes, 2 * edits));
        }
        Ok(e.finish(format_args!(
            "{touched} aliases{}, {edits}x2 edits seen{}",
            Plus("pf", dl0.map(|d| d.page_faults)),
            Deltas(dl)
        )))
    })();
    finish(ctx, home, d, r)
}

/// Entries of the active PML4 and PD rewritten in place (a flood needs
/// three; under the hypervisor each three cost a root rebuild).
const ZAP_ENTRIES: u64 = 64;

/// `long/zap-active-root` (scenario 18; DESIGN.md section 2 `invalid`: a
/// zapped page that is still a loaded root stays until unloaded): while
/// running on its own PML4, the guest rewrites entries 0..64 of that
/// PML4, then of the PD of its test window, with the values they hold,
/// through a data alias of each (64 stores in a row: flooding, so the
/// hypervisor unshadows the active root). Architecturally nothing changed
/// (SDM Vol. 3A 4.5): the guest runs on and every page reads its frame
/// after each flood and after a CR3 reload. Under the hypervisor the
/// `unshadows` counter must show that the root was flooded. With `light=1`
/// 8 entries of each table are rewritten.
pub fn zap_active_root(ctx: &mut Ctx<'_>, d: &mut Detail) -> Outcome {
    let on = has_stats(ctx);
    let n = if ctx.config.light { 8 } else { ZAP_ENTRIES };
    let mut home = None;
    let r = (|| -> Result<Outcome, Stop> {
        let mut b = builder(ctx)?;
        home = Some(b.home);
        let m = &mut *ctx.m;
        let pml4 = b.pml4(m)?;
        let mut data = [0u64; 8];
        for (i, f) in data.iter_mut().enumerate() {
            *f = b.data(m)?;
            b.map(m, pml4, W + i as u64 * span(1), *f, KRW)?;
        }
        let pd = b.table(m, pml4, W, 2)?;
        let alias = W + span(2);
        b.map(m, pml4, alias, pml4, KRW)?;
        b.map(m, pml4, alias + span(1), pd, KRW)?;
        load(m, pml4)?;
        let check_all = |m: &mut dyn Machine, at: &'static str| -> Result<(), Stop> {
            for (i, &f) in data.iter().enumerate() {
                frame_at(m, at, W + i as u64 * span(1), f)?;
            }
            Ok(())
        };
        check_all(m, "before")?;
        let s0 = stats(m, on);
        for (table, at) in [(alias, "after flooding the active PML4"), (alias + span(1), "after flooding the active PD")] {
            for i in 0..n {
                let a = table + 8 * i;
                let v = m.linear_read(a).ok_or(Stop::Write(a))?;
                write(m, a, v)?;
            }
            check_all(m, at)?;
        }
        let s1 = stats(m, on);
        load(m, pml4)?;
        check_all(m, "after a CR3 reload")?;
        let dl = s0.zip(s1).map(|(a, b)| delta(&a, &b));
        let mut e = Expect::new(d);
        if let Some(dl) = dl {
            e.that(dl.unshadows >= 2, format_args!("flooding the active PML4 and PD: unshadows +{}, expected >= 2", dl.unshadows));
        }
        Ok(e.finish(format_args!("{n} PML4+PD entries rewritten, 8 pages right x3{}", Deltas(dl))))
    })();
    finish(ctx, home, d, r)
}

#[cfg(test)]
mod tests {
    use super::super::fake::{Fake, FAKE_INFO};
    use super::*;
    use crate::report::Tally;

    /// Runs the boot checks (for the memory map), then the checks of this
    /// area; returns (name, outcome, detail) of each.
    fn run(m: &mut Fake) -> Vec<(&'static str, Outcome, String)> {
        let (mut out, tally) = (String::new(), Tally::new());
        let mut ctx = Ctx::start(m, &mut out, &tally, FAKE_INFO);
        for c in super::super::boot::CHECKS {
            (c.run)(&mut ctx, &mut Detail::new());
        }
        let mut v = Vec::new();
        for c in CHECKS.iter().chain(PRESSURE) {
            let mut d = Detail::new();
            let o = (c.run)(&mut ctx, &mut d);
            assert_eq!(ctx.m.cr3(), super::super::fake::BOOT_CR3, "{} goes back to the boot CR3", c.name);
            v.push((c.name, o, d.as_str().to_string()));
        }
        v
    }

    fn outcome(v: &[(&str, Outcome, String)], name: &str) -> (Outcome, String) {
        let r = v.iter().find(|r| r.0 == name).unwrap();
        (r.1, r.2.clone())
    }

    #[test]
    fn bare_runs_the_architectural_part_and_skips_the_cache_part() {
        let mut m = Fake::bare("");
        let v = run(&mut m);
        for (name, o, d) in &v {
            let want = if name.starts_with("cache/") { Outcome::Skip } else { Outcome::Pass };
            assert_eq!(*o, want, "{name}: {d}");
            if *o == Outcome::Skip {
                assert!(d.starts_with("needs the hypervisor's shadow paging (architectural part passed: "), "{d}");
            }
        }
        assert_eq!(m.mmu.stats_calls, 0);
        assert!(m.mmu.stats.page_faults > 4000, "the walks ran");
    }

    #[test]
    fn under_the_model_cache_every_check_passes() {
        let v = run(&mut Fake::hv(""));
        for (name, o, d) in &v {
            assert_eq!(*o, Outcome::Pass, "{name}: {d}");
            assert!(d.len() < 160, "{name}: detail fits a check record: {d}");
        }
        let (_, d) = outcome(&v, "cache/cr3-return-no-new-shadows");
        assert!(d.contains("mmu new+0 hit+6 miss+0"), "{d}");
    }

    #[test]
    fn each_cache_fault_is_caught() {
        let mut m = Fake::hv("");
        m.mmu.cr3_always_miss = true;
        let (o, d) = outcome(&run(&mut m), "cache/cr3-return-no-new-shadows");
        assert_eq!(o, Outcome::Fail);
        assert!(d.contains("shadow pages created on return") && d.contains("cr3_misses +6"), "{d}");

        let mut m = Fake::hv("");
        m.mmu.no_flood = true;
        let v = run(&mut m);
        assert_eq!(outcome(&v, "cache/flood-unshadows").0, Outcome::Fail);
        let (o, d) = outcome(&v, "long/zap-active-root");
        assert_eq!(o, Outcome::Fail);
        assert!(d.contains("unshadows +0, expected >= 2"), "{d}");

        let mut m = Fake::hv("");
        m.mmu.no_recycle = true;
        let (o, d) = outcome(&run(&mut m), "cache/pressure-recycles");
        assert_eq!(o, Outcome::Fail);
        assert!(d.contains("recycles +0"), "{d}");
    }

    #[test]
    fn the_two_surviving_injected_bugs_are_caught() {
        // `metaphysical-write-protected`: data writes through the 2 MiB
        // page emulated as page-table writes.
        let v = run(&mut Fake::hv(""));
        let (o, d) = outcome(&v, "cache/large-page-writes-untrapped");
        assert_eq!(o, Outcome::Pass, "{d}");
        assert!(d.starts_with("2 MiB page at 0x") && d.contains(": 64 writes read back") && d.contains("ptw+0 unsh+0"), "{d}");
        let (o, d) = outcome(&v, "cache/pressure-one-root");
        assert_eq!(o, Outcome::Pass, "{d}");
        assert!(d.starts_with("2400 reads right, 1 CR3 load, ") && !d.contains("rec+0"), "{d}");

        let mut m = Fake::hv("");
        m.mmu.data_writes_trapped = true;
        let (o, d) = outcome(&run(&mut m), "cache/large-page-writes-untrapped");
        assert_eq!(o, Outcome::Fail);
        assert!(d.contains("data writes through a 2 MiB page trapped: pt_writes +64"), "{d}");

        // `recycle-loaded-root`: the loaded root freed, translations lost.
        let mut m = Fake::hv("");
        m.mmu.recycle_loaded_root = true;
        let (o, d) = outcome(&run(&mut m), "cache/pressure-one-root");
        assert_eq!(o, Outcome::Fail);
        assert!(d.starts_with("first read, one CR3: read 0x") && d.contains(" refused"), "{d}");
        assert!(m.mmu.root_freed);
    }

    #[test]
    fn a_value_not_at_base_plus_offset_is_caught_bare_too() {
        // The top 2 MiB of the fake's 16 MiB; write 5 lands at base +
        // 5 * 32 KiB + 40, and that word reads back wrong physically.
        let mut m = Fake::bare("");
        m.bad_word = Some(0xE0_0000 + 5 * 0x8000 + 40);
        let (o, d) = outcome(&run(&mut m), "cache/large-page-writes-untrapped");
        assert_eq!(o, Outcome::Fail);
        assert!(d.starts_with("the value at base + offset: read 0xe28028 = "), "{d}");
    }

    #[test]
    fn light_skips_the_pressure_check_and_lightens_four_others() {
        let mut m = Fake::hv("light=1");
        let v = run(&mut m);
        let (o, d) = outcome(&v, "cache/pressure-recycles");
        assert_eq!(o, Outcome::Skip);
        assert!(d.starts_with("light=1: "), "{d}");
        let (o, d) = outcome(&v, "long/parent-chain");
        assert_eq!(o, Outcome::Pass);
        assert!(d.starts_with("32 aliases") && d.contains(", 8x2 edits seen"), "{d}");
        let (o, d) = outcome(&v, "long/zap-active-root");
        assert_eq!(o, Outcome::Pass);
        assert!(d.starts_with("8 PML4+PD entries rewritten"), "{d}");
        let (o, d) = outcome(&v, "cache/pressure-one-root");
        assert_eq!(o, Outcome::Pass);
        assert!(d.starts_with("32 reads right, 1 CR3 load, ") && d.contains("(light=1)"), "{d}");
        let (o, d) = outcome(&v, "cache/large-page-writes-untrapped");
        assert_eq!(o, Outcome::Pass);
        assert!(d.contains(": 8 writes read back"), "{d}");
    }

    #[test]
    fn without_shadow_paging_the_cache_checks_skip_after_their_architectural_part() {
        // The EPT reference answers CPUID 0x40000001 without the feature bit.
        let mut m = Fake::hv("");
        m.leaf_4000_0001.ebx = 0;
        let v = run(&mut m);
        for name in [
            "cache/cr3-return-no-new-shadows",
            "cache/flood-unshadows",
            "cache/large-page-writes-untrapped",
            "cache/pressure-recycles",
            "cache/pressure-one-root",
        ] {
            let (o, d) = outcome(&v, name);
            assert_eq!(o, Outcome::Skip, "{name}: {d}");
            assert!(d.starts_with("needs the hypervisor's shadow paging (architectural part passed: "), "{d}");
        }
        assert_eq!(m.mmu.stats_calls, 0, "no MmuStats hypercall without shadow paging");
    }

    /// A read that reaches the wrong frame gets a translation-failure
    /// report under its check, made with the check's CR3 still loaded.
    #[test]
    fn a_wrong_read_gets_a_translation_report() {
        let mut m = Fake::hv("only=cache/pressure-one-root");
        m.mmu.recycle_loaded_root = true;
        let (mut out, tally) = (String::new(), Tally::new());
        Ctx::start(&mut m, &mut out, &tally, FAKE_INFO).run_all();
        let report: Vec<&str> = out.lines().filter_map(|l| l.strip_prefix("xlate cache/pressure-one-root: ")).collect();
        assert!(report[0].starts_with("first read, one CR3: la 0x80"), "{out}");
        assert!(report[0].contains(", read at CPL 0: expected value 0x") && report[0].ends_with("got a refused read"), "{out}");
        assert!(report[1].starts_with("  guest: 4-level paging, CR3 0x") && !report[1].contains("CR3 0xe000"), "the check's CR3, not the boot one: {out}");
        assert!(report[2].starts_with("    PML4E[1] @0x"), "{out}");
        assert!(report.iter().any(|l| l.starts_with("  shadow: hardware CR3")), "{out}");
        assert_eq!(m.shadow_walks.len(), 1);
    }

    #[test]
    fn a_stale_tlb_is_caught_bare_too() {
        let mut m = Fake::bare("");
        m.mmu.invlpg_ignored = true;
        let v = run(&mut m);
        let (o, d) = outcome(&v, "long/parent-chain");
        assert_eq!(o, Outcome::Fail);
        assert!(d.starts_with("present PTE changed through an alias + INVLPG: read 0x"), "{d}");
        let (o, d) = outcome(&v, "cache/flood-unshadows");
        assert_eq!(o, Outcome::Fail, "{d}");
    }
}
