//! `bench=fork`: a new address space built by copying the page tables of
//! one with M pages, run, and given back, R times (DESIGN.md section 1:
//! "three writes in a row to the same gfn ... (e.g. fork ...) unshadow the
//! gfn").
//!
//! One fork, as an operating system does it: (1) copy-on-write: every PTE
//! of the parent loses W; (2) the child's PML4, PDPT, PD and PTs (the same
//! frames each time, as a freed and reallocated process would get them
//! back) are written: the upper entries to the child's own tables, the M
//! PTEs copied from the parent; (3) MOV CR3 of the parent flushes its
//! stale writable translations (SDM Vol. 3A 4.10.4.1); (4) the child runs:
//! MOV CR3, a read of each page (the parent's frame); (5) the parent runs
//! again and takes each page back: W set in the PTE, INVLPG (4.10.4.1), a
//! write of the page and a read back. One fork is unmeasured warm-up.
//! `ops` = forks (R).

use super::{expect, get, load, param, put, va, write_read, Data, Figures, Meter, Outcome3, Spec, Tables, MAX_M, MAX_R};
use crate::checks::Ctx;
use crate::machine::Machine;
use crate::modes::paging::{entry64, KRW, RW};

/// One fork of `parent` into `child`; `round` varies the values written.
/// Returns the checked accesses.
fn fork_once(mach: &mut dyn Machine, parent: &Tables, child: &Tables, data: Data, m: u32, round: u32) -> Result<u64, super::BenchError> {
    for j in 0..m {
        let v = get(mach, parent.pte(j))?;
        put(mach, parent.pte(j), v & !RW)?;
    }
    child.link(mach)?;
    for j in 0..m {
        let v = get(mach, parent.pte(j))?;
        put(mach, child.pte(j), v)?;
    }
    load(mach, parent.pml4)?;
    load(mach, child.pml4)?;
    for j in 0..m {
        expect(mach, "the child reads the parent's page", va(j), data.frame(j))?;
    }
    load(mach, parent.pml4)?;
    for j in 0..m {
        let v = get(mach, parent.pte(j))?;
        put(mach, parent.pte(j), v | RW)?;
        mach.invlpg(va(j));
        write_read(mach, "the parent writes its page back", va(j), u64::from(round) << 32 | u64::from(j))?;
    }
    Ok(3 * u64::from(m))
}

/// The workload.
pub fn run(ctx: &mut Ctx<'_>, spec: Spec, hv: bool) -> Outcome3 {
    let (m, r) = (param("bench_m", spec.m, MAX_M)?, param("bench_r", spec.r, MAX_R)?);
    let mut b = super::builder(ctx)?;
    let mach = &mut *ctx.m;
    let data = Data::new(mach, &mut b, m)?;
    let parent = Tables::new(mach, &mut b, m)?;
    let child = Tables::new(mach, &mut b, m)?;
    for j in 0..m {
        put(mach, parent.pte(j), entry64(data.frame(j), KRW))?;
    }
    load(mach, parent.pml4)?;
    for j in 0..m {
        expect(mach, "the parent reads its page", va(j), data.frame(j))?;
    }
    fork_once(mach, &parent, &child, data, m, 0)?;
    let meter = Meter::start(mach, hv);
    let mut accesses = 0;
    for round in 1..=r {
        accesses += fork_once(mach, &parent, &child, data, m, round)?;
    }
    let (cycles, c) = meter.stop(mach);
    Ok((Figures { ops: u64::from(r), accesses }, cycles, c))
}
