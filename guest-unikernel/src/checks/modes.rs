//! `modes/...`: the mode walk (DESIGN.md section 4, scenarios 1 and 14).
//! One run of the mode-switch engine goes real -> protected -> 32-bit
//! paging -> PAE -> long mode with the walk's own CR3 -> PAE -> 32-bit
//! paging -> real, twice, probing translations at every stop; the first
//! `modes/...` check runs it, and every check reports its own part:
//!
//! * `modes/walkN/<stop>`: the stop's mode (CR0/CR3/CR4/EFER as loaded),
//!   reads of known patterns through its mappings, #PF error codes and CR2
//!   for not-present and read-only pages, large pages, the alias, a fetch;
//!   in real mode segment:offset aliases and FFFF:0010 with A20 on;
//! * `modes/edit-from-long`: the 32-bit PD edited in long mode is in
//!   effect back in 32-bit paging; undone with INVLPG;
//! * `modes/edit-from-pg32`: the PAE PD edited in 32-bit paging is in
//!   effect in the next PAE stop;
//! * `modes/pae-pdpte-cached`, `-reserved`, `-not-present`: PDPTE loading
//!   at MOV CR3 (SDM Vol. 3A 4.4.1).

use super::{Check, Ctx};
use crate::memmap::Exclusions;
use crate::modes::engine::{self, Verdicts};
use crate::modes::layout::{BLOB_MAX, LOW};
use crate::modes::paging::Frames;
use crate::modes::space::{Space, IDENTITY_END};
use crate::modes::walk::{self, Env};
use crate::report::Detail;
use core::fmt::Write;
use shared::Outcome;

/// The `modes/...` checks in run order; `verdict::<T>` reports tag T of
/// [`crate::modes::walk`].
pub static CHECKS: &[Check] = &[
    Check { name: "modes/walk1/real", run: verdict::<0> },
    Check { name: "modes/walk1/prot", run: verdict::<1> },
    Check { name: "modes/walk1/pg32", run: verdict::<2> },
    Check { name: "modes/walk1/pae", run: verdict::<3> },
    Check { name: "modes/walk1/long", run: verdict::<4> },
    Check { name: "modes/walk1/pae-back", run: verdict::<5> },
    Check { name: "modes/walk1/pg32-back", run: verdict::<6> },
    Check { name: "modes/walk1/real-back", run: verdict::<7> },
    Check { name: "modes/walk2/real", run: verdict::<8> },
    Check { name: "modes/walk2/prot", run: verdict::<9> },
    Check { name: "modes/walk2/pg32", run: verdict::<10> },
    Check { name: "modes/walk2/pae", run: verdict::<11> },
    Check { name: "modes/walk2/long", run: verdict::<12> },
    Check { name: "modes/walk2/pae-back", run: verdict::<13> },
    Check { name: "modes/walk2/pg32-back", run: verdict::<14> },
    Check { name: "modes/walk2/real-back", run: verdict::<15> },
    Check { name: "modes/edit-from-long", run: verdict::<16> },
    Check { name: "modes/edit-from-pg32", run: verdict::<17> },
    Check { name: "modes/pae-pdpte-cached", run: verdict::<18> },
    Check { name: "modes/pae-pdpte-reserved", run: verdict::<19> },
    Check { name: "modes/pae-pdpte-not-present", run: verdict::<20> },
];

/// Reports tag `T`, running the walk first if no check did yet.
fn verdict<const T: usize>(ctx: &mut Ctx<'_>, d: &mut Detail) -> Outcome {
    let v = match &ctx.modes {
        Some(v) => &v.0[T],
        None => {
            let v = run(ctx);
            &ctx.modes.insert(v).0[T]
        }
    };
    *d = v.detail.clone();
    v.outcome
}

/// True when no Multiboot structure lies in the low window.
fn window_clear(x: &Exclusions) -> bool {
    !x.overflowed && !x.ranges().iter().any(|r| r.overlaps(&LOW))
}

/// Builds the address spaces, loads the program, runs the engine once and
/// judges every probe.
pub fn run(ctx: &mut Ctx<'_>) -> Verdicts {
    let fail = |t: &str| Verdicts::all(Outcome::Fail, t);
    let Some(map) = ctx.map else { return fail("no validated memory map (see boot/memory-map)") };
    let image = ctx.m.image();
    if !map.available_covers(LOW) || !window_clear(&ctx.exclusions) || image.overlaps(&LOW) {
        return fail("the engine's low window [0x1000,0x8000) is not free RAM (memory map, Multiboot structures or image)");
    }
    let Some(e) = ctx.m.install_engine() else {
        return Verdicts::all(Outcome::Skip, "no mode-switch engine on this machine");
    };
    if u64::from(e.len) > BLOB_MAX {
        let mut d = Detail::new();
        let _ = write!(d, "engine code is {:#x} bytes, more than the {BLOB_MAX:#x} the window holds", e.len);
        return fail(d.as_str());
    }
    let mut frames = Frames::new(&map, &ctx.exclusions, image.end, IDENTITY_END);
    let Some(space) = Space::alloc(&mut frames) else {
        return fail("not enough free RAM below 64 MiB for the walk's tables and a 4 MiB-aligned region");
    };
    let mut refused = None;
    let m = &mut *ctx.m;
    space.tables(&mut |frame, t| {
        for (i, w) in t.0.iter().enumerate() {
            let a = frame + 8 * i as u64;
            if !m.scratch_write(a, *w) {
                refused.get_or_insert(a);
            }
        }
    });
    space.data(&mut |a, w| {
        if !m.scratch_write(a, w) {
            refused.get_or_insert(a);
        }
    });
    if let Some(a) = refused {
        let mut d = Detail::new();
        let _ = write!(d, "the machine refused a write of the walk's tables or data at {a:#x}");
        return fail(d.as_str());
    }
    let mut a20 = [0u8; 4];
    let _ = m.read(0x10_0000, &mut a20);
    let env = Env { cr0: m.cr0(), cr4: m.cr4(), a20_word: u32::from_le_bytes(a20), broken: ctx.config.modes_break };
    let ops = match engine::load(m, &e, &space, &env) {
        Ok(n) => n,
        Err(err) => {
            let mut d = Detail::new();
            let _ = write!(d, "could not load the program into the low window: {err:?}");
            return fail(d.as_str());
        }
    };
    let _ = writeln!(
        ctx.out,
        "guest: modes: {ops} probes; pd32={:#x} pdpt={:#x} pml4={:#x} data={:#x},{:#x},{:#x},{:#x} large={:#x}",
        space.pd32, space.pdpt, space.pml4, space.d0, space.d1, space.d2, space.d3, space.large
    );
    ctx.m.run_engine();
    let mut v = engine::judge(&mut *ctx.m, &mut *ctx.out, &space, &env);
    if ctx.signature.is_tcg() {
        for t in [walk::extra(2), walk::extra(3)] {
            let mut d = Detail::new();
            let _ = write!(d, "QEMU TCG has no PDPTE registers (it reads PDPTEs at every walk); here: {}", v.0[t].detail.as_str());
            v.0[t] = engine::Verdict { outcome: Outcome::Skip, detail: d };
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modes::walk::{EXTRA, STOPS, TAGS, WALKS};

    #[test]
    fn names_follow_the_tags() {
        assert_eq!(CHECKS.len(), TAGS);
        for (t, c) in CHECKS.iter().enumerate() {
            let want = if t < WALKS * STOPS.len() {
                format!("modes/walk{}/{}", t / STOPS.len() + 1, STOPS[t % STOPS.len()].1)
            } else {
                format!("modes/{}", EXTRA[t - WALKS * STOPS.len()])
            };
            assert_eq!(c.name, want);
        }
    }
}
