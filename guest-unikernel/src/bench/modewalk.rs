//! `bench=modewalk`: the mode walk of the `modes/...` checks in a loop
//! (DESIGN.md section 4: real -> protected -> 32-bit -> PAE -> long -> PAE
//! -> 32-bit -> real, twice, and the named 32-bit/PAE scenarios), R times.
//!
//! Every repetition builds the walk's tables again, runs both engine
//! programs and judges every probe as the checks do (SDM Vol. 3A 4.3-4.5,
//! 4.10.4); a failing tag stops the workload. One walk is unmeasured
//! warm-up. `ops` = walks (R); `accesses` = the check verdicts that passed.

use super::{param, BenchError, Figures, Meter, Outcome3, Spec, MAX_R};
use crate::checks::modes::run_logged;
use crate::checks::Ctx;
use shared::Outcome;

/// One walk; returns the passing verdicts. A skipped verdict (a check that
/// cannot be decided on this machine, e.g. PDPTE caching on QEMU TCG) is
/// neither counted nor an error.
fn walk(ctx: &mut Ctx<'_>) -> Result<u64, BenchError> {
    let v = run_logged(ctx, false);
    let mut passed = 0;
    for (t, verdict) in v.0.iter().enumerate() {
        match verdict.outcome {
            Outcome::Pass => passed += 1,
            Outcome::Skip => {}
            Outcome::Fail => return Err(BenchError::Walk(t)),
        }
    }
    if passed == 0 {
        return Err(BenchError::NoWalk);
    }
    Ok(passed)
}

/// The workload.
pub fn run(ctx: &mut Ctx<'_>, spec: Spec, hv: bool) -> Outcome3 {
    let r = param("bench_r", spec.r, MAX_R)?;
    walk(ctx)?;
    let meter = Meter::start(&mut *ctx.m, hv);
    let mut accesses = 0;
    for _ in 0..r {
        accesses += walk(ctx)?;
    }
    let (cycles, c) = meter.stop(&mut *ctx.m);
    Ok((Figures { ops: u64::from(r), accesses }, cycles, c))
}
