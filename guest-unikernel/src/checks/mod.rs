//! The checks, the context they share and the runner that reports them.
//!
//! A check is a plain function `fn(&mut Ctx, &mut Detail) -> Outcome`
//! registered under its name `area/scenario` in its area's `CHECKS` list;
//! [`AREAS`] lists the areas in run order. Later areas (the mode-switch
//! scenarios of DESIGN.md section 4, the fault harness) add a module and a
//! line in [`AREAS`]; nothing else changes.
//!
//! Each result leaves the guest as a `check` line on the console and, under
//! the Quadrant hypervisor with a matching protocol version, also as a
//! [`CheckRecord`] through the ReportCheck hypercall.

pub mod boot;
pub mod cache;
pub mod hv;
pub mod modes;
pub mod scen;
pub mod smp;
pub mod sweep;

use crate::cmdline::{self, Config, Note};
use crate::hv::{Signature, CPUID1_ECX_HYPERVISOR};
use crate::machine::Machine;
use crate::memmap::{Exclusions, MemMap};
use crate::report::{Detail, Tally};
use core::fmt::{self, Write};
use shared::hypercall::{CheckRecord, STATUS_OK};
use shared::multiboot::{self, Info, InfoError};
use shared::{cpuid, Outcome};

/// The signature of every check.
pub type CheckFn = fn(&mut Ctx<'_>, &mut Detail) -> Outcome;

/// A registered check.
#[derive(Clone, Copy, Debug)]
pub struct Check {
    /// `area/scenario`, as it appears in the check line.
    pub name: &'static str,
    /// The check.
    pub run: CheckFn,
}

/// The areas, in run order.
pub static AREAS: &[&[Check]] = &[
    boot::CHECKS, hv::CHECKS, modes::CHECKS, scen::CHECKS, sweep::CHECKS, cache::CHECKS, smp::CHECKS, cache::PRESSURE,
];

/// All checks in run order.
pub fn all() -> impl Iterator<Item = &'static Check> {
    AREAS.iter().flat_map(|a| a.iter())
}

/// The check at position `index` of [`all`].
pub fn check_at(index: usize) -> Option<&'static Check> {
    all().nth(index)
}

/// CPUID.(EAX=07H,ECX=0):EBX (0 without leaf 7): SMEP is bit 7, SMAP bit 20.
pub(crate) fn cpuid7_ebx(m: &mut dyn Machine) -> u32 {
    if m.cpuid(0, 0).eax >= 7 { m.cpuid(7, 0).ebx } else { 0 }
}

/// CPUID.80000001H:EDX.NX \[bit 20\].
pub(crate) fn has_nx(m: &mut dyn Machine) -> bool {
    m.cpuid(0x8000_0000, 0).eax >= 0x8000_0001 && m.cpuid(0x8000_0001, 0).edx & (1 << 20) != 0
}

/// Longest command line the guest reads.
pub const MAX_CMDLINE: usize = 1024;

/// What the checks share: the machine, the console, the boot information
/// and what earlier checks found.
pub struct Ctx<'a> {
    /// The machine under test.
    pub m: &'a mut dyn Machine,
    /// The console (log lines and check lines).
    pub out: &'a mut dyn Write,
    /// The result counts (and whether results go through the hypercall).
    pub tally: &'a Tally,
    /// Settings from the command line.
    pub config: Config,
    /// EBX at entry.
    pub info_addr: u64,
    /// The parsed information block.
    pub info: Result<Info, InfoError>,
    /// What CPUID leaf 0x4000_0000 said.
    pub signature: Signature,
    /// The memory map, once `boot/memory-map` validated it.
    pub map: Option<MemMap>,
    /// The boot structures the RAM test must not overwrite.
    pub exclusions: Exclusions,
    /// The mode walk's verdicts, once the first `modes/...` check ran it.
    pub modes: Option<crate::modes::engine::Verdicts>,
    /// The long-mode checks' shared tables, once the first `long/...` check built them.
    pub long: Option<scen::Base>,
    /// The processors, once `smp/processors` found them.
    pub smp: Option<smp::SmpRun>,
}

impl fmt::Debug for Ctx<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ctx")
            .field("config", &self.config)
            .field("info", &self.info)
            .field("signature", &self.signature)
            .finish_non_exhaustive()
    }
}

impl<'a> Ctx<'a> {
    /// Reads the boot information and the command line, detects the
    /// hypervisor and decides whether results also go through hypercalls
    /// (only with the Quadrant signature and a matching CPUID protocol
    /// version, so that a bare run never executes VMCALL). Logs what it found.
    pub fn start(m: &'a mut dyn Machine, out: &'a mut dyn Write, tally: &'a Tally, info_addr: u64) -> Self {
        let info = multiboot::parse(&*m, info_addr);
        let mut config = Config::default();
        let mut exclusions = Exclusions::new();
        match &info {
            Ok(i) => {
                exclusions = Exclusions::from_info(i, &*m);
                let _ = write!(out, "guest: Multiboot structures (kept out of the RAM test):");
                for r in exclusions.ranges() {
                    let _ = write!(out, " [{:#x},{:#x})", r.start, r.end);
                }
                let _ = writeln!(out);
                if let Some(a) = i.cmdline_addr {
                    let mut buf = [0u8; MAX_CMDLINE];
                    match multiboot::read_cstr(&*m, u64::from(a), &mut buf) {
                        Some(s) => {
                            let _ = writeln!(out, "guest: command line '{s}'");
                            config = cmdline::parse(s, |n| match n {
                                Note::Ignored(w) => {
                                    let _ = writeln!(out, "guest: command line: ignoring '{w}'");
                                }
                                Note::BadValue { key, value } => {
                                    let _ = writeln!(out, "guest: command line: ignoring bad value {key}={value}");
                                }
                            });
                        }
                        None => {
                            let _ = writeln!(out, "guest: command line at {a:#x} unreadable or not UTF-8");
                        }
                    }
                }
            }
            Err(e) => {
                exclusions.overflowed = true;
                let _ = writeln!(out, "guest: Multiboot information at {info_addr:#x} unusable: {e:?}");
            }
        }

        let ecx1 = m.cpuid(1, 0).ecx;
        let signature = Signature::classify(m.cpuid(cpuid::LEAF_SIGNATURE, 0), ecx1);
        let mut hypercalls = false;
        if let Signature::Quadrant { max_leaf } = signature {
            let version = if max_leaf >= cpuid::LEAF_VERSION { Some(m.cpuid(cpuid::LEAF_VERSION, 0).eax) } else { None };
            hypercalls = version == Some(shared::PROTOCOL_VERSION);
            let _ = writeln!(
                out,
                "guest: hypervisor {signature}, protocol version {version:?} (ours {}), hypercall reporting {}",
                shared::PROTOCOL_VERSION,
                if hypercalls { "on" } else { "off" }
            );
        } else {
            let _ = writeln!(
                out,
                "guest: hypervisor: {signature} (CPUID.1:ECX bit 31 = {})",
                u32::from(ecx1 & CPUID1_ECX_HYPERVISOR != 0)
            );
        }
        tally.set_hypercall_reporting(hypercalls);

        Ctx { m, out, tally, config, info_addr, info, signature, map: None, exclusions, modes: None, long: None, smp: None }
    }

    /// What an AP needs to run checks of its own (see [`crate::smp::Seed`]).
    pub fn seed(&self) -> crate::smp::Seed {
        crate::smp::Seed {
            config: self.config,
            info_addr: self.info_addr,
            info: self.info,
            signature: self.signature,
            map: self.map,
            exclusions: self.exclusions,
        }
    }

    /// A context for an AP's own checks, from the BSP's seed (quiet: the
    /// BSP already logged what it found).
    pub fn from_seed(m: &'a mut dyn Machine, out: &'a mut dyn Write, tally: &'a Tally, s: crate::smp::Seed) -> Self {
        Ctx {
            m,
            out,
            tally,
            config: s.config,
            info_addr: s.info_addr,
            info: s.info,
            signature: s.signature,
            map: s.map,
            exclusions: s.exclusions,
            modes: None,
            long: None,
            smp: None,
        }
    }

    /// Runs every registered check and reports each result; with `bench=`
    /// the `boot/...` checks (and, for a workload on every CPU, the
    /// `smp/...` checks that start the APs) and then the benchmark
    /// workload instead.
    pub fn run_all(&mut self) {
        let bench = self.config.bench;
        for (i, c) in all().enumerate() {
            let with_aps = bench.is_some_and(|b| b.workload.needs_aps()) && smp::START_UP.contains(&c.name);
            if bench.is_some() && !c.name.starts_with("boot/") && !with_aps {
                continue;
            }
            self.tally.set_current(Some(i));
            let mut d = Detail::new();
            let outcome = if self.config.only.selects(c.name) {
                let _ = shared::line::write_check_begin(&mut &mut *self.out, c.name);
                let _ = self.out.write_char('\n');
                (c.run)(self, &mut d)
            } else {
                let _ = write!(d, "not selected (only={})", self.config.only.as_str());
                Outcome::Skip
            };
            report(&mut *self.m, &mut *self.out, self.tally, outcome, c.name, d.as_str());
        }
        self.tally.set_current(None);
        if let Some(spec) = bench {
            self.run_bench(spec);
        }
    }

    /// The check `bench/NAME`: one benchmark workload ([`crate::bench`]).
    fn run_bench(&mut self, spec: crate::bench::Spec) {
        let mut name = Detail::new();
        let _ = write!(name, "bench/{}", spec.workload.name());
        let _ = shared::line::write_check_begin(&mut &mut *self.out, name.as_str());
        let _ = self.out.write_char('\n');
        let mut d = Detail::new();
        let outcome = crate::bench::run(self, spec, &mut d);
        report(&mut *self.m, &mut *self.out, self.tally, outcome, name.as_str(), d.as_str());
    }
}

/// Reports one result: counts it, writes the check line, and when the tally
/// says so sends it through the ReportCheck hypercall. A hypercall that
/// fails turns hypercall reporting off and is itself reported as a failure.
pub fn report(m: &mut dyn Machine, out: &mut dyn Write, tally: &Tally, outcome: Outcome, name: &str, detail: &str) {
    tally.record(outcome);
    let _ = shared::line::write_check(&mut &mut *out, outcome, name, detail);
    let _ = out.write_char('\n');
    if tally.hypercall_reporting() {
        let status = m.report_check(&CheckRecord::new(outcome, name, detail));
        if status != STATUS_OK {
            tally.set_hypercall_reporting(false);
            let mut d = Detail::new();
            let _ = write!(d, "ReportCheck for {name} returned {status:#x}; console only from here");
            report(m, out, tally, Outcome::Fail, "hv/report-check", d.as_str());
        }
    }
}

/// Writes the `guest-summary` line.
pub fn write_summary(out: &mut dyn Write, tally: &Tally) {
    let (p, f, s) = tally.counts();
    let _ = shared::line::write_guest_summary(&mut &mut *out, p, f, s);
    let _ = out.write_char('\n');
}

#[cfg(test)]
pub(crate) mod fake;
#[cfg(test)]
pub(crate) mod fake_engine;
#[cfg(test)]
pub(crate) mod fake_long;

#[cfg(test)]
mod tests {
    use super::fake::{Fake, FAKE_INFO};
    use super::*;
    use shared::line::{parse, Line};

    #[test]
    fn names_are_unique_and_well_formed() {
        let names: Vec<_> = all().map(|c| c.name).collect();
        for (i, n) in names.iter().enumerate() {
            assert!(!names[..i].contains(n), "{n} twice");
            let (area, scenario) = n.split_once('/').unwrap();
            assert!(!area.is_empty() && !scenario.is_empty() && !n.contains(' '));
        }
        assert_eq!(check_at(0).unwrap().name, "boot/handoff");
    }

    #[test]
    fn bare_run_passes_and_never_vmcalls() {
        let mut m = Fake::bare("/k expect_hv=0");
        let (mut out, tally) = (String::new(), Tally::new());
        let mut ctx = Ctx::start(&mut m, &mut out, &tally, FAKE_INFO);
        ctx.run_all();
        write_summary(&mut out, &tally);
        assert_eq!(m.vmcalls, 0);
        let (p, f, s) = tally.counts();
        // hv/... and cache/... skip bare; QEMU TCG (the fake's signature)
        // has no PDPTE registers, so two modes/... checks skip there, and it
        // does not check reserved CR3 bits, so long/hostile/cr3-reserved skips.
        // The fake machine has no second processor: the smp/... checks skip.
        let skips = 5 + all().filter(|c| c.name.starts_with("cache/")).count() as u32 + smp::CHECKS.len() as u32;
        assert_eq!((f, s), (0, skips), "{out}");
        assert_eq!((p + skips) as usize, all().count());
        assert!(out.contains("guest: command line: ignoring '/k'"), "{out}");
        let last = out.lines().last().unwrap();
        assert_eq!(parse(last), Some(Line::GuestSummary { passed: p, failed: 0, skipped: skips }));
        assert_eq!(m.mmu.stats_calls, 0, "no MmuStats hypercall bare");
        assert_eq!(m.engine_runs, crate::modes::walk::PARTS, "one engine run per program serves every modes/... check");
    }

    #[test]
    fn under_the_hypervisor_results_also_go_by_hypercall() {
        let mut m = Fake::hv("expect_hv=1");
        let (mut out, tally) = (String::new(), Tally::new());
        let mut ctx = Ctx::start(&mut m, &mut out, &tally, FAKE_INFO);
        ctx.run_all();
        // modes=0 skips the mode walk and the sweeps the engine runs
        // (pg32/access-sweep, pae/access-sweep): the guest stays in long mode.
        // The fake machine has no second processor: the smp/... checks skip.
        let n_modes = modes::CHECKS.len() as u32 + 2;
        let n_smp = smp::CHECKS.len() as u32;
        let n = all().count() as u32;
        assert_eq!(tally.counts(), (n - n_smp, 0, n_smp), "{out}");
        let mut m = Fake::hv("expect_hv=1 modes=0");
        let (mut out, tally) = (String::new(), Tally::new());
        Ctx::start(&mut m, &mut out, &tally, FAKE_INFO).run_all();
        assert_eq!(tally.counts(), (n - n_modes - n_smp, 0, n_modes + n_smp), "{out}");
        let mut m = Fake::hv("expect_hv=1 modes=1");
        let (mut out, tally) = (String::new(), Tally::new());
        Ctx::start(&mut m, &mut out, &tally, FAKE_INFO).run_all();
        assert_eq!(tally.counts(), (n - n_smp, 0, n_smp), "{out}");
        // Version once, then one ReportCheck per check.
        assert_eq!(m.vmcalls, 1 + all().count());
        assert_eq!(m.reported.len(), all().count());
        assert_eq!(m.reported[0], (Outcome::Pass, "boot/handoff".to_string()));
    }

    #[test]
    fn failing_report_hypercall_is_reported_once() {
        let mut m = Fake::hv("expect_hv=1");
        m.report_status = shared::hypercall::STATUS_BAD_ARGUMENT;
        let (mut out, tally) = (String::new(), Tally::new());
        let mut ctx = Ctx::start(&mut m, &mut out, &tally, FAKE_INFO);
        ctx.run_all();
        assert_eq!(out.matches("check FAIL hv/report-check").count(), 1, "{out}");
        assert!(!tally.hypercall_reporting());
    }

    #[test]
    fn expectation_mismatch_fails() {
        let mut m = Fake::bare("expect_hv=1");
        let (mut out, tally) = (String::new(), Tally::new());
        let mut ctx = Ctx::start(&mut m, &mut out, &tally, FAKE_INFO);
        ctx.run_all();
        assert_eq!(m.vmcalls, 0);
        assert_eq!(tally.counts().1, 1, "{out}");
        assert_eq!(tally.exit_status(), 1);
        assert!(out.contains("check FAIL boot/hypervisor-signature: expect_hv=1"), "{out}");
    }
}
