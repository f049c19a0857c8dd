//! `bench=ptchurn`: mprotect-like churn of the M PTEs of one address
//! space, R rounds (DESIGN.md section 1, "Guest page-table writes").
//!
//! A round, as `mprotect` and `mremap` do it over a range: (1) every PTE
//! loses W, each followed by INVLPG (SDM Vol. 3A 4.10.4.1); every page is
//! read; (2) every PTE gets W back, INVLPG; every page is written and read
//! back; (3) every PTE is remapped to the next data frame (W kept),
//! INVLPG; every page is read and must show its new frame. One round is
//! unmeasured warm-up. `ops` = PTE updates (3 x M x R).

use super::{expect, get, load, param, put, va, write_read, Data, Figures, Meter, Outcome3, Spec, Tables, MAX_M, MAX_R};
use crate::checks::Ctx;
use crate::machine::Machine;
use crate::modes::paging::{entry64, KRW, RW};

/// One round; `shift` is the frame offset of the mapping on entry and is
/// advanced by the remap. Returns the checked accesses.
fn round(mach: &mut dyn Machine, t: &Tables, data: Data, m: u32, shift: &mut u32) -> Result<u64, super::BenchError> {
    for j in 0..m {
        let v = get(mach, t.pte(j))?;
        put(mach, t.pte(j), v & !RW)?;
        mach.invlpg(va(j));
    }
    for j in 0..m {
        expect(mach, "read after clearing W", va(j), data.frame(j + *shift))?;
    }
    for j in 0..m {
        let v = get(mach, t.pte(j))?;
        put(mach, t.pte(j), v | RW)?;
        mach.invlpg(va(j));
    }
    for j in 0..m {
        write_read(mach, "write after setting W", va(j), u64::from(*shift) << 32 | u64::from(j))?;
    }
    *shift += 1;
    for j in 0..m {
        put(mach, t.pte(j), entry64(data.frame(j + *shift), KRW))?;
        mach.invlpg(va(j));
    }
    for j in 0..m {
        expect(mach, "read after the remap", va(j), data.frame(j + *shift))?;
    }
    Ok(4 * u64::from(m))
}

/// The workload.
pub fn run(ctx: &mut Ctx<'_>, spec: Spec, hv: bool) -> Outcome3 {
    let (m, r) = (param("bench_m", spec.m, MAX_M)?, param("bench_r", spec.r, MAX_R)?);
    let mut b = super::builder(ctx)?;
    let mach = &mut *ctx.m;
    // One spare frame so that the remap always moves to a different frame.
    let data = Data::new(mach, &mut b, m + 1)?;
    let t = Tables::new(mach, &mut b, m)?;
    for j in 0..m {
        put(mach, t.pte(j), entry64(data.frame(j), KRW))?;
    }
    load(mach, t.pml4)?;
    let mut shift = 0;
    round(mach, &t, data, m, &mut shift)?;
    let meter = Meter::start(mach, hv);
    let mut accesses = 0;
    for _ in 0..r {
        accesses += round(mach, &t, data, m, &mut shift)?;
    }
    let (cycles, c) = meter.stop(mach);
    Ok((Figures { ops: 3 * u64::from(m) * u64::from(r), accesses }, cycles, c))
}
