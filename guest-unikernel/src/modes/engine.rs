//! Loading a program into the low window and judging what the engine
//! left in the result slots: one [`Verdict`] per tag (per check line).
//!
//! The program is built twice by [`walk::program`]: once to encode the
//! stops and ops, once after the run to pair each op with its result, so
//! nothing but the window itself holds the ops.

use super::layout::{self, EngineInfo};
use super::paging::{walk, Format, WalkEnd, P, PDPTE_PAE_RESERVED_LOW};
use super::probe::{Expect, Got, Op};
use super::space::Space;
use super::walk::{self, Env, Item, StopRegs, TAGS};
use crate::machine::Machine;
use crate::regs::CR4_PSE;
use crate::report::Detail;
use crate::xlate::{read_word, Shadow};
use core::fmt::Write;
use shared::hypercall::ShadowWalkRecord;
use shared::Outcome;

/// A stop record (32 bytes): mode, CR0, CR3, CR4, first op's address, op
/// count, first result's address, reserved.
pub fn encode_stop(r: &StopRegs, first_op: usize, ops: usize) -> [u8; 32] {
    let words = [
        r.mode as u32,
        r.cr0,
        r.cr3,
        r.cr4,
        (layout::OPS + layout::OP_SIZE * first_op as u64) as u32,
        ops as u32,
        (layout::RESULTS + layout::RESULT_SIZE * first_op as u64) as u32,
        0,
    ];
    let mut b = [0u8; 32];
    for (i, w) in words.iter().enumerate() {
        b[4 * i..4 * i + 4].copy_from_slice(&w.to_le_bytes());
    }
    b
}

/// Why a program could not be loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadError {
    /// More stops or ops than the window holds.
    TooLarge,
    /// The machine refused a write into the window.
    Refused(u64),
}

/// Writes the tables page, the real-mode data, the stops and ops of
/// program `part` of the mode walk, and zero result slots; returns the
/// number of ops.
pub fn load(m: &mut dyn Machine, e: &EngineInfo, s: &Space, env: &Env, part: usize) -> Result<usize, LoadError> {
    let n = load_program(m, e, &mut |emit| walk::program(s, env, part, emit))?;
    // The PAE PDPT real mode edits (`modes/low-frames`).
    let mut pdpt = [0u8; 32];
    for (b, e) in pdpt.chunks_exact_mut(8).zip(s.real_pdpt()) {
        b.copy_from_slice(&e.to_le_bytes());
    }
    if !m.low_write(layout::REAL_PDPT, &pdpt) {
        return Err(LoadError::Refused(layout::REAL_PDPT));
    }
    Ok(n)
}

/// A program: called with the sink, it emits its stops and ops in order.
pub type Program<'a> = dyn FnMut(&mut dyn FnMut(Item)) + 'a;

/// Loads any program (not only the mode walk's): the tables page, the
/// real-mode data, the stops and ops `program` emits (the [`Item::Op`]
/// tags and expectations are not stored), and zero result slots; returns
/// the number of ops. Op `n`'s result is then [`result`]`(m, n)` after
/// [`Machine::run_engine`].
pub fn load_program(
    m: &mut dyn Machine,
    e: &EngineInfo,
    program: &mut Program<'_>,
) -> Result<usize, LoadError> {
    let w = |m: &mut dyn Machine, a: u64, b: &[u8]| if m.low_write(a, b) { Ok(()) } else { Err(LoadError::Refused(a)) };
    w(m, layout::GDT, &layout::tables_page(e))?;
    w(m, layout::REAL_DATA, &walk::real_data())?;
    let (mut stops, mut ops) = (0usize, 0usize);
    let mut cur: Option<(StopRegs, usize)> = None;
    let mut err = Ok(());
    let flush = |m: &mut dyn Machine, cur: Option<(StopRegs, usize)>, stops: &mut usize, ops: usize| {
        if let Some((r, first)) = cur {
            if *stops >= layout::MAX_STOPS {
                return Err(LoadError::TooLarge);
            }
            w(m, layout::STOPS + layout::STOP_SIZE * *stops as u64, &encode_stop(&r, first, ops - first))?;
            *stops += 1;
        }
        Ok(())
    };
    program(&mut |item| {
        if err.is_err() {
            return;
        }
        err = match item {
            Item::Stop(r) => flush(m, cur.replace((r, ops)), &mut stops, ops),
            Item::Op(_, op, _) if ops < layout::MAX_OPS => {
                let r = w(m, layout::OPS + layout::OP_SIZE * ops as u64, &op.encode())
                    .and_then(|_| w(m, layout::RESULTS + layout::RESULT_SIZE * ops as u64, &[0; 24]));
                ops += 1;
                r
            }
            Item::Op(..) => Err(LoadError::TooLarge),
        };
    });
    err?;
    flush(m, cur, &mut stops, ops)?;
    w(m, layout::STOP_COUNT, &(stops as u32).to_le_bytes())?;
    Ok(ops)
}

/// What op `n` of the loaded program did ([`Got::NotRun`] when the window
/// cannot be read).
pub fn result(m: &mut dyn Machine, n: usize) -> Got {
    let mut b = [0u8; 24];
    if m.low_read(layout::RESULTS + layout::RESULT_SIZE * n as u64, &mut b) {
        Got::decode(&b)
    } else {
        Got::NotRun
    }
}

/// A failure report's look at the shadow tables of engine stops: one short
/// program enters each stop's mode again (its CR0, CR3 and CR4; EFER as
/// the caller left it) and issues the `ShadowWalk` hypercall for the
/// address there ([`Op::ShadowWalk`]), so the hypervisor walks the root of
/// that mode. Returns each answer in order. Only under the Quadrant
/// hypervisor. The shadow tables are those of this moment, after the
/// program that failed ran on: its later ops may have changed them.
///
/// Not walked: real-mode stops (the 16-bit interpreter has no such op),
/// and stops whose tables no longer map the engine's window one to one
/// or, in PAE paging, whose PDPTEs now have reserved bits set (entering
/// would fault outside any probe, SDM Vol. 3A 4.4.1).
pub fn shadow_walks(m: &mut dyn Machine, e: &EngineInfo, walks: &[(StopRegs, u64)]) -> [Shadow; layout::MAX_WALKS] {
    const NO_RECORD: Shadow = Shadow::NotWalked("the engine's ShadowWalk gave no record");
    let mut answers = [NO_RECORD; layout::MAX_WALKS];
    let walks = &walks[..walks.len().min(layout::MAX_WALKS)];
    let buf = |i: usize| layout::WALK_RECORDS + (i * ShadowWalkRecord::SIZE) as u64;
    let mut go = [false; layout::MAX_WALKS];
    for (i, (regs, _)) in walks.iter().enumerate() {
        match enterable(m, regs) {
            Ok(()) => go[i] = true,
            Err(why) => answers[i] = Shadow::NotWalked(why),
        }
    }
    let mut program = |emit: &mut dyn FnMut(Item)| {
        for (i, (regs, la)) in walks.iter().enumerate().filter(|(i, _)| go[*i]) {
            emit(Item::Stop(*regs));
            emit(Item::Op(0, Op::ShadowWalk { addr: *la, buf: buf(i) as u32 }, Expect::Done));
        }
    };
    // The program's real-mode data (a PDPT among it) stays as it was.
    let mut real = [0u8; layout::REAL_DATA_LEN as usize];
    let kept = m.low_read(layout::REAL_DATA, &mut real);
    let cleared = (0..walks.len()).all(|i| m.low_write(buf(i), &[0; ShadowWalkRecord::SIZE]));
    if !kept || !cleared || load_program(m, e, &mut program).is_err() || !m.low_write(layout::REAL_DATA, &real) {
        return answers;
    }
    m.run_engine();
    for (n, i) in (0..walks.len()).filter(|i| go[*i]).enumerate() {
        let mut b = [0u8; ShadowWalkRecord::SIZE];
        if result(m, n) == Got::Value(ShadowWalkRecord::SIZE as u64) && m.low_read(buf(i), &mut b) {
            if let Some(r) = ShadowWalkRecord::from_bytes(&b) {
                answers[i] = Shadow::Walked(r);
            }
        }
    }
    answers
}

/// Whether the engine can enter the stop `r` now: paging on, its tables
/// map the window one to one, and PAE PDPTEs without reserved bits.
fn enterable(m: &dyn Machine, r: &StopRegs) -> Result<(), &'static str> {
    let (cr3, cr4) = (u64::from(r.cr3), u64::from(r.cr4));
    let format = match r.mode {
        super::Mode::Real => return Err("real mode: the 16-bit interpreter has no ShadowWalk"),
        super::Mode::Prot => return Ok(()),
        super::Mode::Paging32 => Format::Bits32 { pse: cr4 & CR4_PSE != 0 },
        super::Mode::Long => Format::Long,
        super::Mode::Pae => {
            let mut p = [0u64; 4];
            for (i, e) in p.iter_mut().enumerate() {
                *e = read_word(m, (cr3 & 0xFFFF_FFE0) + 8 * i as u64).ok_or("its PDPT is not readable")?;
            }
            let rsvd = PDPTE_PAE_RESERVED_LOW | 0xFFF0_0000_0000_0000;
            if p.iter().any(|e| e & P != 0 && e & rsvd != 0) {
                return Err("its PDPTEs now have reserved bits set");
            }
            Format::Pae { pdptes: p }
        }
    };
    let word = |a| read_word(m, a);
    let one_to_one = [layout::LOW_START, layout::BLOB_BASE, layout::STACK_TOP - 8]
        .iter()
        .all(|&a| matches!(walk(&word, format, cr3, a).end, WalkEnd::Page { pa, .. } if pa == a));
    if one_to_one { Ok(()) } else { Err("its tables no longer map the engine's window one to one") }
}

/// Why the engine refuses what the low window holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The window could not be read.
    Unreadable(u64),
    /// More stops than the window holds.
    Stops(u32),
    /// Stop `n` has an unknown mode or ops outside the op area.
    Stop(u32),
    /// Op `n` is not a known op.
    Op(u32),
    /// Op `n` writes at `addr`, into the guest image or the engine's own
    /// tables, code or stack.
    Write {
        /// The op's index.
        op: u32,
        /// The linear address written.
        addr: u64,
    },
}

/// Checks a loaded program before it runs: the probes execute with full
/// privilege, so this is what keeps a wrong program from writing over the
/// Rust side (the guest image) or the engine itself. Reads the window
/// through `read`; returns the number of ops.
pub fn vet(read: &mut dyn FnMut(u64, &mut [u8]) -> bool, image: crate::machine::Range) -> Result<u32, Refusal> {
    use crate::machine::Range;
    let mut rd = |a: u64, b: &mut [u8]| if read(a, b) { Ok(()) } else { Err(Refusal::Unreadable(a)) };
    let mut w = [0u8; 4];
    rd(layout::STOP_COUNT, &mut w)?;
    let stops = u32::from_le_bytes(w);
    if stops as usize > layout::MAX_STOPS {
        return Err(Refusal::Stops(stops));
    }
    let forbidden = [image, Range::new(layout::GDT, layout::REAL_DATA), Range::new(layout::BLOB_BASE, layout::LOW_END)];
    let mut total = 0;
    for i in 0..stops {
        let mut b = [0u8; 32];
        rd(layout::STOPS + layout::STOP_SIZE * u64::from(i), &mut b)?;
        let f = |k: usize| u64::from(u32::from_le_bytes([b[4 * k], b[4 * k + 1], b[4 * k + 2], b[4 * k + 3]]));
        let (mode, first, n, results) = (f(0), f(4), f(5), f(6));
        let index = first.wrapping_sub(layout::OPS) / layout::OP_SIZE;
        let ok = mode <= super::Mode::Long as u64
            && first >= layout::OPS
            && (first - layout::OPS).is_multiple_of(layout::OP_SIZE)
            && index + n <= layout::MAX_OPS as u64
            && results == layout::RESULTS + layout::RESULT_SIZE * index;
        if !ok {
            return Err(Refusal::Stop(i));
        }
        for k in index..index + n {
            let mut ob = [0u8; 16];
            rd(layout::OPS + layout::OP_SIZE * k, &mut ob)?;
            let op = Op::decode(&ob).ok_or(Refusal::Op(k as u32))?;
            let written = match op {
                Op::Write32 { seg, addr, .. } => {
                    let lin = if mode == super::Mode::Real as u64 { u64::from(seg) * 16 + (addr & 0xFFFF) } else { addr };
                    Some(Range::new(lin, lin.saturating_add(4)))
                }
                // The hypervisor writes the record at this physical address:
                // only into the results area.
                Op::ShadowWalk { buf, .. } => {
                    let r = Range::new(u64::from(buf), u64::from(buf) + ShadowWalkRecord::SIZE as u64);
                    if r.start < layout::RESULTS || r.end > layout::BLOB_BASE {
                        return Err(Refusal::Write { op: k as u32, addr: r.start });
                    }
                    Some(r)
                }
                _ => None,
            };
            if let Some(r) = written {
                if forbidden.iter().any(|x| x.overlaps(&r)) {
                    return Err(Refusal::Write { op: k as u32, addr: r.start });
                }
            }
            total += 1;
        }
    }
    Ok(total)
}

/// One check line's result.
#[derive(Clone, Debug)]
pub struct Verdict {
    /// Pass when every op of the tag met its expectation.
    pub outcome: Outcome,
    /// What was seen, or the first mismatch.
    pub detail: Detail,
}

/// The verdicts of every tag.
#[derive(Clone, Debug)]
pub struct Verdicts(pub [Verdict; TAGS]);

impl Verdicts {
    /// Every tag with the same outcome and text (the program could not run).
    pub fn all(outcome: Outcome, text: &str) -> Self {
        let mut d = Detail::new();
        let _ = d.write_str(text);
        Verdicts(core::array::from_fn(|_| Verdict { outcome, detail: d.clone() }))
    }
}

/// A probe that missed its expectation, kept for a translation-failure
/// report ([`crate::xlate`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Failed {
    /// The tag (check) it belongs to.
    pub tag: usize,
    /// The stop it ran in: its number and registers.
    pub stop: usize,
    #[allow(missing_docs)]
    pub regs: StopRegs,
    /// The probe's number in the run.
    pub index: usize,
    /// The probe.
    pub op: Op,
    #[allow(missing_docs)]
    pub exp: Expect,
    #[allow(missing_docs)]
    pub got: Got,
}

/// Failed probes kept per part.
pub const FAILED_PER_PART: usize = layout::MAX_WALKS;

/// What the ops of one tag did.
#[derive(Clone, Copy, Debug, Default)]
struct Acc {
    probes: u32,
    faults: u32,
    bad: u32,
    first_bad: Option<(usize, Op, Expect, Got)>,
    /// The stop the tag's first op ran in (index, registers).
    stop: Option<(usize, StopRegs)>,
    /// The stop of its last op.
    last_stop: usize,
}

/// The judging of every program's results, one part after the other.
#[derive(Clone, Debug)]
pub struct Judgement {
    acc: [Acc; TAGS],
    /// Stops and ops of the parts judged so far (numbers continue across
    /// parts in the messages).
    stops: usize,
    ops: usize,
    /// The last part's failed memory probes, for reports: the first
    /// [`crate::xlate::PER_CHECK`] of each tag, [`FAILED_PER_PART`] at most.
    failed: [Option<Failed>; FAILED_PER_PART],
}

impl Default for Judgement {
    fn default() -> Self {
        Judgement { acc: [Acc::default(); TAGS], stops: 0, ops: 0, failed: [None; FAILED_PER_PART] }
    }
}

impl Judgement {
    /// Reads each op's result of program `part` (just run) and judges it;
    /// every mismatch also gets a `guest: modes: ...` line on `out`, and
    /// the first failed memory probes of the tags `report` names are kept
    /// for translation-failure reports ([`Self::failed`]).
    pub fn part(
        &mut self,
        m: &mut dyn Machine,
        out: &mut dyn Write,
        (s, env, part): (&Space, &Env, usize),
        report: &dyn Fn(usize) -> bool,
    ) {
        let acc = &mut self.acc;
        let failed = &mut self.failed;
        *failed = [None; FAILED_PER_PART];
        let (mut n, mut stop, mut regs) = (0usize, self.stops, None);
        let base = self.ops;
        walk::program(s, env, part, &mut |item| match item {
            Item::Stop(r) => {
                stop += 1;
                regs = Some(r);
            }
            Item::Op(tag, op, exp) => {
                let mut b = [0u8; 24];
                let got = if m.low_read(layout::RESULTS + layout::RESULT_SIZE * n as u64, &mut b) {
                    Got::decode(&b)
                } else {
                    Got::NotRun
                };
                let a = &mut acc[tag];
                a.probes += 1;
                if a.stop.is_none() {
                    a.stop = regs.map(|r| (stop, r));
                }
                a.last_stop = stop;
                if matches!(exp, Expect::Fault { .. }) && exp.met_by(&got) {
                    a.faults += 1;
                }
                if !exp.met_by(&got) {
                    let mode = regs.map_or("?", |r: StopRegs| r.mode.name());
                    let i = base + n;
                    let _ = writeln!(out, "guest: modes: stop {stop} ({mode}) probe {i} {op}: expected {exp}, got {got}");
                    a.bad += 1;
                    a.first_bad.get_or_insert((i, op, exp, got));
                    let keep = a.bad <= crate::xlate::PER_CHECK && op.access().is_some() && report(tag);
                    if let (true, Some(r), Some(slot)) = (keep, regs, failed.iter_mut().find(|f| f.is_none())) {
                        *slot = Some(Failed { tag, stop, regs: r, index: i, op, exp, got });
                    }
                }
                n += 1;
            }
        });
        self.stops = stop;
        self.ops += n;
    }

    /// The failed memory probes of the part judged last.
    pub fn failed(&self) -> impl Iterator<Item = &Failed> {
        self.failed.iter().flatten()
    }

    /// One verdict per tag.
    pub fn verdicts(&self) -> Verdicts {
        Verdicts(core::array::from_fn(|t| describe(&self.acc[t])))
    }
}

fn describe(a: &Acc) -> Verdict {
    let mut d = Detail::new();
    if let Some((i, op, exp, got)) = a.first_bad {
        let _ = write!(d, "probe {i} {op}: expected {exp}, got {got}");
        if a.bad > 1 {
            let _ = write!(d, " (+{} more wrong)", a.bad - 1);
        }
        let _ = write!(d, " | ");
    }
    let _ = write!(d, "{} probes, {} exceptions as expected", a.probes, a.faults);
    match a.stop {
        Some((i, r)) if i == a.last_stop => {
            let _ = write!(d, "; stop {i} {} cr0={:#x} cr3={:#x} cr4={:#x}", r.mode.name(), r.cr0, r.cr3, r.cr4);
        }
        Some((i, r)) => {
            let _ = write!(d, "; stops {i}..{} from {} cr3={:#x}", a.last_stop, r.mode.name(), r.cr3);
        }
        None => {}
    }
    let outcome = if a.probes > 0 && a.bad == 0 { Outcome::Pass } else { Outcome::Fail };
    if a.probes == 0 {
        let _ = write!(d, "; no probes");
    }
    Verdict { outcome, detail: d }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modes::Mode;

    #[test]
    fn stop_record() {
        let r = StopRegs { mode: Mode::Pae, cr0: 0x8001_0033, cr3: 0x20_3000, cr4: 0x620 };
        let b = encode_stop(&r, 2, 5);
        let w = |i: usize| u32::from_le_bytes(b[4 * i..4 * i + 4].try_into().unwrap());
        assert_eq!([w(0), w(1), w(2), w(3)], [3, 0x8001_0033, 0x20_3000, 0x620]);
        assert_eq!(w(4), 0x2400 + 2 * 16);
        assert_eq!(w(5), 5);
        assert_eq!(w(6), 0x4000 + 2 * 24);
    }

    #[test]
    fn vet_accepts_the_walk_and_refuses_writes_into_the_image() {
        use crate::checks::fake::Fake;
        use crate::machine::Range;
        let (s, _) = crate::modes::space::tests::built();
        let mut m = Fake::hv("");
        let e = EngineInfo { len: 0xb00, entry: 0, stubs16: 0x500, stubs32: 0x700, stubs64: 0x900 };
        let env = Env::default();
        let n = load(&mut m, &e, &s, &env, 0).unwrap();
        let image = Range::new(0x10_0000, 0x12_5000);
        let mut read = |a: u64, b: &mut [u8]| m.low_read(a, b);
        assert_eq!(vet(&mut read, image), Ok(n as u32));
        // The named scenarios' program passes the vetting as well.
        let n1 = load(&mut m, &e, &s, &env, 1).unwrap();
        let mut read = |a: u64, b: &mut [u8]| m.low_read(a, b);
        assert_eq!(vet(&mut read, image), Ok(n1 as u32));
        assert_eq!(load(&mut m, &e, &s, &env, 0), Ok(n));
        // Op 3 becomes a real-mode write to FFFF:0010 = 0x10_0000.
        let bad = Op::Write32 { seg: 0xFFFF, addr: 0x10, value: 0 }.encode();
        assert!(m.low_write(layout::OPS + 3 * layout::OP_SIZE, &bad));
        let mut read = |a: u64, b: &mut [u8]| m.low_read(a, b);
        assert_eq!(vet(&mut read, image), Err(Refusal::Write { op: 3, addr: 0x10_0000 }));
        assert!(m.low_write(layout::OPS + 3 * layout::OP_SIZE, &[0xEE; 16]));
        let mut read = |a: u64, b: &mut [u8]| m.low_read(a, b);
        assert_eq!(vet(&mut read, image), Err(Refusal::Op(3)));
        assert!(m.low_write(layout::STOP_COUNT, &99u32.to_le_bytes()));
        let mut read = |a: u64, b: &mut [u8]| m.low_read(a, b);
        assert_eq!(vet(&mut read, image), Err(Refusal::Stops(99)));
    }

    #[test]
    fn describe_pass_and_first_mismatch() {
        let r = StopRegs { mode: Mode::Paging32, cr0: 0x8001_0033, cr3: 0x12_6000, cr4: 0x610 };
        let mut a = Acc { probes: 3, faults: 1, stop: Some((2, r)), last_stop: 2, ..Acc::default() };
        let v = describe(&a);
        assert_eq!(v.outcome, Outcome::Pass);
        assert_eq!(v.detail.as_str(), "3 probes, 1 exceptions as expected; stop 2 pg32 cr0=0x80010033 cr3=0x126000 cr4=0x610");
        a.bad = 2;
        a.first_bad = Some((7, Op::Write32 { seg: 0, addr: 0x4000_1010, value: 1 }, Expect::pf(3, 0x4000_1010), Got::Value(0)));
        let v = describe(&a);
        assert_eq!(v.outcome, Outcome::Fail);
        assert!(
            v.detail.as_str().starts_with(
                "probe 7 write32 0x40001010=0x1: expected #PF ec=0x3 cr2=0x40001010, got value 0x0 (+1 more wrong) | 3 probes"
            ),
            "{}",
            v.detail.as_str()
        );
        assert_eq!(describe(&Acc::default()).outcome, Outcome::Fail, "a tag without probes fails");
        let spread = Acc { probes: 2, stop: Some((3, r)), last_stop: 15, ..Acc::default() };
        assert_eq!(describe(&spread).detail.as_str(), "2 probes, 0 exceptions as expected; stops 3..15 from pg32 cr3=0x126000");
    }
}
