//! The verdict of one boot, from the console lines and the emulator's exit.
//!
//! Pure logic, no I/O: [`Console`] collects what the protocol lines
//! (`shared::line`) say, [`judge`] turns that plus the emulator's exit into a
//! [`Verdict`]. Host unit tests below feed it sample serial logs.

pub mod coverage;

use serde::Serialize;
use shared::coverage::{RolePattern, RoleValue};
use shared::line::{self, ErrorKind, Line};
use shared::Outcome;

/// How an emulator reports a result through its exit status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitConvention {
    /// Bochs: 0 = magic breakpoint then `quit` (pass); 1 = panic (shutdown
    /// port, triple fault with `reset_on_triple_fault=0`, emulator error).
    Bochs,
    /// QEMU with `isa-debug-exit` on 0xf4: `(V << 1) | 1` for a guest status V;
    /// 0 when QEMU stopped by itself (reset/triple fault with `-no-reboot`).
    Qemu,
}

impl ExitConvention {
    /// The exit status that means "the guest reported status 0".
    pub const fn pass_status(self) -> i32 {
        match self {
            ExitConvention::Bochs => 0,
            ExitConvention::Qemu => 1,
        }
    }

    /// What an exit status means, in words.
    pub fn describe(self, exit: Exit) -> String {
        match (self, exit) {
            (_, Exit::Timeout { secs }) => format!("timed out after {secs} s (killed)"),
            (_, Exit::Signal(s)) => format!("the emulator was killed by signal {s}"),
            (ExitConvention::Bochs, Exit::Code(0)) => "Bochs exit 0: the magic breakpoint (pass)".into(),
            (ExitConvention::Bochs, Exit::Code(1)) => {
                "Bochs exit 1: shutdown port, triple fault or emulator panic (see the emulator log)".into()
            }
            (ExitConvention::Bochs, Exit::Code(c)) => {
                format!("Bochs exit {c}: the emulator failed")
            }
            (ExitConvention::Qemu, Exit::Code(0)) => {
                "QEMU exit 0: the machine reset or triple-faulted without a status on port 0xf4".into()
            }
            (ExitConvention::Qemu, Exit::Code(c)) if c & 1 == 1 => {
                let v = c >> 1;
                if v == 0 {
                    format!("QEMU exit {c}: status 0 on port 0xf4 (pass)")
                } else {
                    format!("QEMU exit {c}: status {v} on port 0xf4 (fail)")
                }
            }
            (ExitConvention::Qemu, Exit::Code(c)) => {
                format!("QEMU exit {c}: the emulator failed (see its log)")
            }
        }
    }
}

/// How the emulator process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this status.
    Code(i32),
    /// A signal killed it.
    Signal(i32),
    /// The runner killed it after `secs` seconds.
    Timeout {
        /// The timeout that expired.
        secs: u64,
    },
}

impl Exit {
    /// The status for the report (`None` for a timeout or signal).
    pub fn code(self) -> Option<i32> {
        match self {
            Exit::Code(c) => Some(c),
            _ => None,
        }
    }
}

/// One check line, as reported.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    /// `mode/scenario[/case]`.
    pub name: String,
    /// `pass`, `fail` or `skip`.
    pub outcome: &'static str,
    /// Whether it passed (skips did not).
    pub passed: bool,
    /// The check's detail text.
    pub detail: String,
    /// Its translation-failure report: the text of the `xlate NAME: ...`
    /// lines the guest printed for it (before the check line), in order.
    pub report: Vec<String>,
}

impl Check {
    /// The detail, then the report lines, one per line.
    pub fn detail_with_report(&self) -> String {
        let mut s = self.detail.clone();
        for l in &self.report {
            s.push('\n');
            s += l;
        }
        s
    }
}

/// A `quadrant-error` line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ErrorLine {
    /// The error kind word (`no-vmx`, ...).
    pub kind: String,
    /// The text after the colon.
    pub text: String,
}

/// Counts of check outcomes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Checks that passed.
    pub passed: u32,
    /// Checks that failed.
    pub failed: u32,
    /// Checks that were skipped.
    pub skipped: u32,
}

impl Counts {
    /// Counts one check with outcome `pass`, `fail` or anything else (skip).
    pub fn add(&mut self, outcome: &str) {
        match outcome {
            "pass" => self.passed += 1,
            "fail" => self.failed += 1,
            _ => self.skipped += 1,
        }
    }
}

/// One row of the hypervisor's role-coverage table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoleCount {
    /// The role, field by field.
    pub role: RoleValue,
    /// The packed role word.
    pub word: u32,
    /// Shadow pages created with it.
    pub count: u64,
    /// Cache hits on shadow pages with it.
    pub hits: u64,
}

/// A `bench NAME key=value ...` line: one benchmark workload's figures.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BenchLine {
    /// The workload.
    pub name: String,
    /// Its `key=value` words (numbers), in any order.
    pub fields: std::collections::BTreeMap<String, u64>,
}

impl BenchLine {
    /// Splits the words after the name; words that are not `key=number`
    /// are left out.
    pub fn parse(name: &str, fields: &str) -> Self {
        BenchLine { name: name.to_string(), fields: numeric_fields(fields) }
    }
}

/// The `key=number` words of a line (others left out).
fn numeric_fields(words: &str) -> std::collections::BTreeMap<String, u64> {
    words
        .split_ascii_whitespace()
        .filter_map(|w| {
            let (k, v) = w.split_once('=')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// What one protocol line means to someone watching the run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A check line.
    Check(Check),
    /// A `quadrant-error` line.
    Error(ErrorLine),
    /// Any other protocol line (banner, summary, result).
    Protocol,
    /// Log text.
    Text,
}

/// Everything the console said, collected line by line.
#[derive(Clone, Debug, Default)]
pub struct Console {
    /// Check lines in order.
    pub checks: Vec<Check>,
    /// The last `guest-summary` line.
    pub summary: Option<Counts>,
    /// The `quadrant-hv` banner: (protocol version, mmu).
    pub banner: Option<(u32, String)>,
    /// `quadrant-error` lines in order.
    pub errors: Vec<ErrorLine>,
    /// The last `quadrant-result` line: (status, reason).
    pub result: Option<(u8, String)>,
    /// `role-coverage` lines in order.
    pub role_coverage: Vec<RoleCount>,
    /// The hypervisor's `mmu-stats` counters, by name.
    pub mmu_stats: Option<std::collections::BTreeMap<String, u64>>,
    /// The `role-coverage-end distinct=K` line's K.
    pub role_coverage_end: Option<u32>,
    /// `bench` lines (benchmark workloads), in order.
    pub bench: Vec<BenchLine>,
    /// The check a `check-begin` line announced and no check line ended yet.
    pub running: Option<String>,
    /// `xlate` lines not yet filed under their check line: (check, text).
    pub pending_reports: Vec<(String, String)>,
    /// Number of lines seen.
    pub lines: usize,
}

impl Console {
    /// Collects every line of `text`.
    pub fn from_text(text: &str) -> Self {
        let mut c = Console::default();
        for l in text.lines() {
            c.feed(l);
        }
        c
    }

    /// Collects one line and says what it was.
    pub fn feed(&mut self, l: &str) -> Event {
        self.lines += 1;
        // GRUB's serial terminal leaves escape sequences and `\r` at line
        // starts: drop them before parsing.
        let cleaned = strip_ansi(l);
        let l = cleaned.trim_start_matches(|c: char| c.is_control() && c != '\t');
        match line::parse(l) {
            None => Event::Text,
            Some(Line::Check { outcome, name, detail }) => {
                let check = Check {
                    name: name.to_string(),
                    outcome: match outcome {
                        Outcome::Pass => "pass",
                        Outcome::Fail => "fail",
                        Outcome::Skip => "skip",
                    },
                    passed: outcome == Outcome::Pass,
                    detail: detail.trim().to_string(),
                    report: self.take_reports(name),
                };
                if self.running.as_deref() == Some(name) {
                    self.running = None;
                }
                self.checks.push(check.clone());
                Event::Check(check)
            }
            Some(Line::CheckBegin { name }) => {
                self.running = Some(name.to_string());
                Event::Protocol
            }
            Some(Line::Xlate { name, text }) => {
                self.pending_reports.push((name.to_string(), text.to_string()));
                Event::Protocol
            }
            Some(Line::GuestSummary { passed, failed, skipped }) => {
                self.summary = Some(Counts { passed, failed, skipped });
                Event::Protocol
            }
            Some(Line::HvStart { version, mmu }) => {
                self.banner = Some((version, mmu.to_string()));
                Event::Protocol
            }
            Some(Line::Error { kind, text }) => {
                let e = ErrorLine { kind: kind.as_str().to_string(), text: text.to_string() };
                self.errors.push(e.clone());
                Event::Error(e)
            }
            Some(Line::Result { status, reason }) => {
                self.result = Some((status, reason.to_string()));
                Event::Protocol
            }
            Some(Line::RoleCoverage { role, word, count, hits }) => {
                self.role_coverage.push(RoleCount { role, word, count, hits });
                Event::Protocol
            }
            Some(Line::MmuStats { fields }) => {
                self.mmu_stats = Some(numeric_fields(fields));
                Event::Protocol
            }
            Some(Line::Bench { name, fields }) => {
                self.bench.push(BenchLine::parse(name, fields));
                Event::Protocol
            }
            Some(Line::RoleCoverageEnd { distinct }) => {
                self.role_coverage_end = Some(distinct);
                Event::Protocol
            }
        }
    }

    /// The report lines filed so far for check `name` (taken out).
    fn take_reports(&mut self, name: &str) -> Vec<String> {
        let (mine, rest) = std::mem::take(&mut self.pending_reports).into_iter().partition(|(n, _)| n == name);
        self.pending_reports = rest;
        mine.into_iter().map(|(_, t)| t).collect()
    }

    /// Ends the check that began and never reported (the run hung, crashed
    /// or was stopped inside it) as a failure whose detail says `how` the
    /// run ended, and returns it; `None` when no check was running.
    pub fn fail_unfinished(&mut self, how: &str) -> Option<Check> {
        let name = self.running.take()?;
        let report = self.take_reports(&name);
        let check = Check {
            name,
            outcome: "fail",
            passed: false,
            detail: format!("did not finish: {how} while it ran (runner's verdict; the guest reported nothing)"),
            report,
        };
        self.checks.push(check.clone());
        Some(check)
    }

    /// Counts of the check lines seen.
    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for k in &self.checks {
            c.add(k.outcome);
        }
        c
    }

    /// Counts of the check lines per mode (see [`mode_of`]), in the order
    /// each mode first appeared.
    pub fn counts_by_mode(&self) -> Vec<ModeCounts> {
        self.counts_by(mode_of)
    }

    /// Counts of the check lines per CPU (see [`cpu_of`]), in the order
    /// each CPU first appeared.
    pub fn counts_by_cpu(&self) -> Vec<ModeCounts> {
        self.counts_by(cpu_of)
    }

    fn counts_by(&self, key: fn(&str) -> &str) -> Vec<ModeCounts> {
        let mut v: Vec<ModeCounts> = Vec::new();
        for k in &self.checks {
            let mode = key(&k.name);
            let i = match v.iter().position(|m| m.mode == mode) {
                Some(i) => i,
                None => {
                    v.push(ModeCounts { mode: mode.to_string(), counts: Counts::default() });
                    v.len() - 1
                }
            };
            v[i].counts.add(k.outcome);
        }
        v
    }
}

/// The CPU a check ran on: `cpuN` of an AP's `cpuN/...` check, `cpu0` (the
/// BSP) for the others.
pub fn cpu_of(name: &str) -> &str {
    let first = name.split('/').next().unwrap_or("");
    let is_cpu = first.len() > 3 && first.starts_with("cpu") && first[3..].bytes().all(|b| b.is_ascii_digit());
    if is_cpu && name.len() > first.len() { first } else { "cpu0" }
}

/// The mode of a check: the first part of its name (`long` of
/// `long/pt-write/np-to-p`), after a `cpuN/` prefix if there is one.
pub fn mode_of(name: &str) -> &str {
    let mut parts = name.split('/');
    let first = parts.next().unwrap_or("");
    let is_cpu = first.len() > 3 && first.starts_with("cpu") && first[3..].bytes().all(|b| b.is_ascii_digit());
    match (is_cpu, parts.next()) {
        (true, Some(second)) => second,
        _ => first,
    }
}

/// Check counts of one mode.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ModeCounts {
    /// The mode (first part of the check names).
    pub mode: String,
    /// Its counts.
    #[serde(flatten)]
    pub counts: Counts,
}

/// Removes ANSI CSI sequences (`ESC [ ... final`) from a line.
pub fn strip_ansi(l: &str) -> std::borrow::Cow<'_, str> {
    if !l.contains('\x1b') {
        return l.into();
    }
    let mut out = String::with_capacity(l.len());
    let mut it = l.chars().peekable();
    while let Some(c) = it.next() {
        if c == '\x1b' && it.peek() == Some(&'[') {
            it.next();
            for f in it.by_ref() {
                if ('\x40'..='\x7e').contains(&f) {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out.into()
}

/// What the run was supposed to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expectation {
    /// The guest ran under the hypervisor (banner and result line required).
    pub hypervisor: bool,
    /// A negative test: the run must end with this error and a failing exit.
    pub expect_error: Option<ErrorKind>,
    /// With `expect_error`: text the error line must contain (e.g. the
    /// name of the failing VMCS field).
    pub expect_text: Option<&'static str>,
    /// Apply the role-coverage gate: the hypervisor's role-coverage table
    /// must be there and match every pattern of
    /// `shared::coverage::PROMISED` (see [`coverage::applies`]).
    pub role_coverage: bool,
    /// A deliberate-failure test (a guest word breaks expectations on
    /// purpose): the run passes only when exactly these checks fail, each
    /// with a translation-failure report holding every given text.
    pub expect_failures: &'static [ExpectedFailure],
    /// An SMP run of the whole suite under shadow paging: the hypervisor's
    /// `mmu-stats` must show shadow roots of real mode and long mode loaded
    /// at the same moment (`shared::coverage::SMP_PROMISED_PAIR`).
    pub smp_modes: bool,
}

/// A check that must fail, and what its translation-failure report
/// ([`Check::report`]) must contain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExpectedFailure {
    /// The check's name.
    pub check: &'static str,
    /// Texts each found in some line of its report.
    pub report: &'static [&'static str],
}

/// The judgement of a deliberate-failure test (see
/// [`Expectation::expect_failures`]): a clean run whose only failures are
/// the expected checks, each with the report texts.
fn judge_expected_failures(console: &Console, exit: Exit, conv: ExitConvention, exp: Expectation, reasons: &mut Vec<String>) {
    if matches!(exit, Exit::Timeout { .. } | Exit::Signal(_)) || exit == Exit::Code(conv.pass_status()) {
        reasons.push(format!("expected the failing exit of a run with failed checks, got: {}", conv.describe(exit)));
    }
    for e in &console.errors {
        reasons.push(format!("quadrant-error {}: {}", e.kind, e.text));
    }
    if exp.hypervisor && console.banner.is_none() {
        reasons.push("no `quadrant-hv` banner: the hypervisor did not start".into());
    }
    if console.summary.is_none() {
        reasons.push("no `guest-summary` line: the guest did not finish its checks".into());
    }
    let failed: Vec<&Check> = console.checks.iter().filter(|c| c.outcome == "fail").collect();
    for c in &failed {
        if !exp.expect_failures.iter().any(|x| x.check == c.name) {
            reasons.push(format!("{} failed, but only {} should", c.name, exp.expect_failures.iter().map(|x| x.check).collect::<Vec<_>>().join(", ")));
        }
    }
    for x in exp.expect_failures {
        let Some(c) = failed.iter().find(|c| c.name == x.check) else {
            reasons.push(format!("{} was expected to fail (a guest word breaks it on purpose), but did not", x.check));
            continue;
        };
        for needle in x.report {
            if !c.report.iter().any(|l| l.contains(needle)) {
                reasons.push(format!("the translation-failure report of {} has no line with `{needle}`", x.check));
            }
        }
    }
}

/// The verdict of one boot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Whether the boot passed.
    pub passed: bool,
    /// Why it failed (empty when it passed).
    pub reasons: Vec<String>,
    /// Check counts from the console.
    pub counts: Counts,
    /// Promised role values that were never created (gate applied only).
    pub coverage_missing: Vec<&'static RolePattern>,
}

/// Judges one boot.
pub fn judge(console: &Console, exit: Exit, conv: ExitConvention, exp: Expectation) -> Verdict {
    let counts = console.counts();
    let mut reasons = Vec::new();
    let exit_passed = exit == Exit::Code(conv.pass_status());

    if let Some(kind) = exp.expect_error {
        let seen = console.errors.iter().any(|e| e.kind == kind.as_str());
        if let (true, Some(needle)) = (seen, exp.expect_text) {
            if !console.errors.iter().any(|e| e.kind == kind.as_str() && e.text.contains(needle)) {
                reasons.push(format!("the `quadrant-error {}` line does not mention `{needle}`", kind.as_str()));
            }
        }
        if !seen {
            let others: Vec<_> = console.errors.iter().map(|e| e.kind.as_str()).collect();
            reasons.push(if others.is_empty() {
                format!("expected `quadrant-error {}`, but no error line was printed", kind.as_str())
            } else {
                format!("expected `quadrant-error {}`, got {}", kind.as_str(), others.join(", "))
            });
        }
        if let Exit::Timeout { .. } = exit {
            reasons.push(conv.describe(exit));
        } else if exit_passed {
            reasons.push(format!("expected a failing exit, got the pass status: {}", conv.describe(exit)));
        }
        return Verdict { passed: reasons.is_empty(), reasons, counts, coverage_missing: Vec::new() };
    }
    if !exp.expect_failures.is_empty() {
        judge_expected_failures(console, exit, conv, exp, &mut reasons);
        return Verdict { passed: reasons.is_empty(), reasons, counts, coverage_missing: Vec::new() };
    }

    if !exit_passed {
        reasons.push(conv.describe(exit));
    }
    for e in &console.errors {
        reasons.push(format!("quadrant-error {}: {}", e.kind, e.text));
    }
    if exp.hypervisor {
        match &console.banner {
            None => reasons.push("no `quadrant-hv` banner: the hypervisor did not start".into()),
            Some((v, _)) if *v != shared::PROTOCOL_VERSION => reasons.push(format!(
                "the hypervisor speaks protocol version {v}, this runner version {}",
                shared::PROTOCOL_VERSION
            )),
            Some(_) => {}
        }
        if console.result.is_none() {
            reasons.push("no `quadrant-result` line: the hypervisor did not report an end".into());
        }
    }
    if let Some((status, reason)) = &console.result {
        if *status != 0 {
            reasons.push(format!("quadrant-result status={status} reason={reason}"));
        }
    }
    match console.summary {
        None => reasons.push("no `guest-summary` line: the guest did not finish its checks".into()),
        Some(s) if s != counts => reasons.push(format!(
            "guest-summary says passed={} failed={} skipped={}, but the console shows passed={} failed={} skipped={}",
            s.passed, s.failed, s.skipped, counts.passed, counts.failed, counts.skipped
        )),
        Some(_) => {}
    }
    if counts.passed + counts.failed == 0 {
        reasons.push("no check ran".into());
    }
    if counts.failed > 0 {
        let names: Vec<_> = console.checks.iter().filter(|c| c.outcome == "fail").map(|c| c.name.as_str()).collect();
        reasons.push(format!("{} check(s) failed: {}", counts.failed, names.join(", ")));
    }
    let mut coverage_missing = Vec::new();
    if exp.role_coverage {
        coverage_missing = coverage::judge(console, shared::coverage::PROMISED, &mut reasons);
    }
    if exp.smp_modes {
        coverage::judge_smp(console, &mut reasons);
    }
    Verdict { passed: reasons.is_empty(), reasons, counts, coverage_missing }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BARE: Expectation =
        Expectation { hypervisor: false, expect_error: None, expect_text: None, role_coverage: false, expect_failures: &[], smp_modes: false };
    const HV: Expectation =
        Expectation { hypervisor: true, expect_error: None, expect_text: None, role_coverage: false, expect_failures: &[], smp_modes: false };

    const GOOD_BARE: &str = "\
SeaBIOS (version x)\r
Booting from ROM...\r
check PASS boot/multiboot-magic: eax=0x2badb002\r
check PASS real/enter: ok\r
check SKIP boot/hypervisor-signature: \r
guest-summary passed=2 failed=0 skipped=1\r
";

    fn hv_log(body: &str, result: &str) -> String {
        format!("quadrant-hv version={} mmu=shadow cpu=GenuineIntel\n{body}{result}\n", shared::PROTOCOL_VERSION)
    }

    #[test]
    fn bare_pass_in_qemu_and_bochs() {
        let c = Console::from_text(GOOD_BARE);
        let v = judge(&c, Exit::Code(1), ExitConvention::Qemu, BARE);
        assert!(v.passed, "{:?}", v.reasons);
        assert_eq!(v.counts, Counts { passed: 2, failed: 0, skipped: 1 });
        assert!(judge(&c, Exit::Code(0), ExitConvention::Bochs, BARE).passed);
        assert_eq!(c.checks[0].detail, "eax=0x2badb002");
        assert_eq!(c.checks[2].outcome, "skip");
    }

    #[test]
    fn bad_exit_status_fails_even_with_good_console() {
        let c = Console::from_text(GOOD_BARE);
        let v = judge(&c, Exit::Code(0), ExitConvention::Qemu, BARE);
        assert!(!v.passed);
        assert!(v.reasons[0].contains("triple-faulted"), "{:?}", v.reasons);
        let v = judge(&c, Exit::Code(7), ExitConvention::Qemu, BARE);
        assert!(v.reasons[0].contains("status 3"), "{:?}", v.reasons);
        assert!(!judge(&c, Exit::Code(1), ExitConvention::Bochs, BARE).passed);
    }

    #[test]
    fn failed_check_fails_and_is_named() {
        let log = "check PASS a/one: x\ncheck FAIL long/self-map/write-pde: expected #PF ec=0x3, got none\n\
                   guest-summary passed=1 failed=1 skipped=0\n";
        let c = Console::from_text(log);
        let v = judge(&c, Exit::Code(1), ExitConvention::Qemu, BARE);
        assert!(!v.passed);
        assert_eq!(v.counts, Counts { passed: 1, failed: 1, skipped: 0 });
        assert!(v.reasons.iter().any(|r| r.contains("long/self-map/write-pde")), "{:?}", v.reasons);
        assert_eq!(c.checks[1].detail, "expected #PF ec=0x3, got none");
        assert!(!c.checks[1].passed);
    }

    #[test]
    fn missing_summary_fails() {
        // What today's demo guest prints: one check and no summary.
        let c = Console::from_text("check PASS boot/multiboot-magic:  cr0=0x80000011\n");
        let v = judge(&c, Exit::Code(1), ExitConvention::Qemu, BARE);
        assert!(!v.passed);
        assert_eq!(v.reasons, vec!["no `guest-summary` line: the guest did not finish its checks".to_string()]);
        assert_eq!(c.checks[0].detail, "cr0=0x80000011");
    }

    #[test]
    fn summary_count_mismatch_fails() {
        let c = Console::from_text("check PASS a/b: \ncheck PASS a/c: \nguest-summary passed=3 failed=0 skipped=0\n");
        let v = judge(&c, Exit::Code(1), ExitConvention::Qemu, BARE);
        assert!(!v.passed);
        assert!(v.reasons[0].contains("passed=3") && v.reasons[0].contains("passed=2"), "{:?}", v.reasons);
    }

    #[test]
    fn no_check_ran_fails() {
        let c = Console::from_text("check SKIP a/b: needs hv\nguest-summary passed=0 failed=0 skipped=1\n");
        let v = judge(&c, Exit::Code(1), ExitConvention::Qemu, BARE);
        assert_eq!(v.reasons, vec!["no check ran".to_string()]);
    }

    #[test]
    fn hypervisor_pass_needs_banner_and_result() {
        let body = "check PASS a/b: \nguest-summary passed=1 failed=0 skipped=0\n";
        let c = Console::from_text(&hv_log(body, "quadrant-result status=0 reason=guest-exit"));
        let v = judge(&c, Exit::Code(0), ExitConvention::Bochs, HV);
        assert!(v.passed, "{:?}", v.reasons);

        let c = Console::from_text(body);
        let v = judge(&c, Exit::Code(0), ExitConvention::Bochs, HV);
        assert!(!v.passed);
        assert!(v.reasons.iter().any(|r| r.contains("quadrant-hv")), "{:?}", v.reasons);
        assert!(v.reasons.iter().any(|r| r.contains("quadrant-result")), "{:?}", v.reasons);
    }

    #[test]
    fn triple_fault_error_line_fails_and_is_reported() {
        let log = hv_log(
            "check PASS a/b: \nquadrant-error triple-fault: guest triple fault at rip=0x1000 in long mode\n",
            "quadrant-result status=255 reason=triple-fault",
        );
        let c = Console::from_text(&log);
        let v = judge(&c, Exit::Code(1), ExitConvention::Bochs, HV);
        assert!(!v.passed);
        assert_eq!(c.errors, vec![ErrorLine {
            kind: "triple-fault".into(),
            text: "guest triple fault at rip=0x1000 in long mode".into()
        }]);
        assert!(v.reasons.iter().any(|r| r.starts_with("quadrant-error triple-fault")), "{:?}", v.reasons);
        assert!(v.reasons.iter().any(|r| r.contains("status=255")), "{:?}", v.reasons);
        assert!(v.reasons.iter().any(|r| r.contains("guest-summary")), "{:?}", v.reasons);
    }

    #[test]
    fn error_line_fails_even_with_pass_exit() {
        let log = hv_log("quadrant-error unsupported: task switch\ncheck PASS a/b: \nguest-summary passed=1 failed=0 skipped=0\n",
            "quadrant-result status=0 reason=guest-exit");
        let v = judge(&Console::from_text(&log), Exit::Code(0), ExitConvention::Bochs, HV);
        assert!(!v.passed);
    }

    #[test]
    fn timeout_fails() {
        let c = Console::from_text("check PASS a/b: \n");
        let v = judge(&c, Exit::Timeout { secs: 300 }, ExitConvention::Bochs, HV);
        assert!(!v.passed);
        assert_eq!(v.reasons[0], "timed out after 300 s (killed)");
        let neg = Expectation {
            hypervisor: true,
            expect_error: Some(ErrorKind::NoVmx),
            expect_text: None,
            role_coverage: false,
            expect_failures: &[],
            smp_modes: false,
        };
        let c = Console::from_text("quadrant-error no-vmx: CPUID.1:ECX.VMX[bit 5] = 0\n");
        assert!(!judge(&c, Exit::Timeout { secs: 60 }, ExitConvention::Qemu, neg).passed);
    }

    #[test]
    fn expected_error_passes_only_with_that_error_and_failing_exit() {
        let neg = Expectation {
            hypervisor: true,
            expect_error: Some(ErrorKind::NoVmx),
            expect_text: None,
            role_coverage: false,
            expect_failures: &[],
            smp_modes: false,
        };
        let log = "quadrant-hv version=1 mmu=shadow\nquadrant-error no-vmx: CPUID.1:ECX.VMX[bit 5] = 0: this CPU has no VMX\n\
                   quadrant-result status=255 reason=no-vmx\n";
        let c = Console::from_text(log);
        assert!(judge(&c, Exit::Code(255), ExitConvention::Qemu, neg).passed);
        // Right error, but the emulator said pass.
        assert!(!judge(&c, Exit::Code(1), ExitConvention::Qemu, neg).passed);
        // A failing exit without the error line.
        let c = Console::from_text("check PASS a/b: \n");
        let v = judge(&c, Exit::Code(3), ExitConvention::Qemu, neg);
        assert!(!v.passed);
        assert!(v.reasons[0].contains("no error line"), "{:?}", v.reasons);
        // Another error.
        let bad = Expectation {
            hypervisor: true,
            expect_error: Some(ErrorKind::BadGuestImage),
            expect_text: None,
            role_coverage: false,
            expect_failures: &[],
            smp_modes: false,
        };
        let c = Console::from_text(log);
        let v = judge(&c, Exit::Code(255), ExitConvention::Qemu, bad);
        assert!(v.reasons[0].contains("got no-vmx"), "{:?}", v.reasons);
    }

    #[test]
    fn grub_escapes_are_ignored() {
        let log = "\x1b[H\x1b[J\x1b[1;1H  Booting `Quadrant: bare guest'\n\r\n\rcheck PASS a/b: x\r\n\
                   \x1b[0mguest-summary passed=1 failed=0 skipped=0\r\n";
        let c = Console::from_text(log);
        assert_eq!(c.counts(), Counts { passed: 1, failed: 0, skipped: 0 });
        assert_eq!(c.summary, Some(Counts { passed: 1, failed: 0, skipped: 0 }));
        assert_eq!(strip_ansi("a\x1b[1;1Hb"), "ab");
    }

    #[test]
    fn a_deliberate_failure_test_wants_exactly_its_failures_and_reports() {
        const WANT: &[ExpectedFailure] = &[ExpectedFailure { check: "long/a", report: &["guest: 4-level", "shadow: hardware CR3"] }];
        let exp = Expectation { expect_failures: WANT, ..HV };
        let body = "check-begin long/a\nxlate long/a: x\nxlate long/a:   guest: 4-level paging, CR3 0x1\n\
                    xlate long/a:   shadow: hardware CR3 0x2\ncheck FAIL long/a: y\ncheck PASS long/b: z\n\
                    guest-summary passed=1 failed=1 skipped=0\n";
        let c = Console::from_text(&hv_log(body, "quadrant-result status=1 reason=guest-exit"));
        let v = judge(&c, Exit::Code(1), ExitConvention::Bochs, exp);
        assert!(v.passed, "{:?}", v.reasons);
        // A pass exit, a missing report text, another failing check, the expected one passing.
        assert!(!judge(&c, Exit::Code(0), ExitConvention::Bochs, exp).passed);
        let c2 = Console::from_text(&hv_log(&body.replace("shadow: hardware", "shadow: none"), "quadrant-result status=1 reason=guest-exit"));
        let v = judge(&c2, Exit::Code(1), ExitConvention::Bochs, exp);
        assert_eq!(v.reasons, ["the translation-failure report of long/a has no line with `shadow: hardware CR3`"]);
        let c3 = Console::from_text(&hv_log(&body.replace("PASS long/b", "FAIL long/b"), "quadrant-result status=1 reason=guest-exit"));
        assert!(judge(&c3, Exit::Code(1), ExitConvention::Bochs, exp).reasons[0].starts_with("long/b failed, but only long/a should"));
        let c4 = Console::from_text(&hv_log(&body.replace("FAIL long/a", "PASS long/a"), "quadrant-result status=0 reason=guest-exit"));
        assert!(judge(&c4, Exit::Code(1), ExitConvention::Bochs, exp).reasons.iter().any(|r| r.contains("long/a was expected to fail")));
    }

    #[test]
    fn xlate_lines_are_filed_under_their_check() {
        let log = "check-begin long/a\nxlate long/a: read at 0x10 cpl0: expected value 0x1, got value 0x2\n\
                   xlate long/a:   guest 4-level paging, CR3=0x1000\nxlate long/b: stray\n\
                   check FAIL long/a: probe wrong\ncheck PASS long/c: fine\ncheck-begin long/b\n";
        let mut c = Console::from_text(log);
        assert_eq!(
            c.checks[0].report,
            ["read at 0x10 cpl0: expected value 0x1, got value 0x2", "  guest 4-level paging, CR3=0x1000"]
        );
        assert!(c.checks[1].report.is_empty());
        assert_eq!(c.checks[0].detail_with_report(), "probe wrong\nread at 0x10 cpl0: expected value 0x1, got value 0x2\n  guest 4-level paging, CR3=0x1000");
        assert_eq!(
            crate::report::check_line(&c.checks[0]),
            "  FAIL long/a: probe wrong\n    > read at 0x10 cpl0: expected value 0x1, got value 0x2\n    >   guest 4-level paging, CR3=0x1000"
        );
        // A check that never finished still gets the report it printed.
        let f = c.fail_unfinished("timed out").unwrap();
        assert_eq!(f.report, ["stray"]);
        assert!(c.pending_reports.is_empty());
        let json = serde_json::to_value(&c.checks[0]).unwrap();
        assert_eq!(json["report"][1], "  guest 4-level paging, CR3=0x1000");
    }

    #[test]
    fn feed_reports_events() {
        let mut c = Console::default();
        assert_eq!(c.feed("hello"), Event::Text);
        assert!(matches!(c.feed("check FAIL x/y: z"), Event::Check(Check { passed: false, .. })));
        assert!(matches!(c.feed("\u{0}quadrant-error timeout: t"), Event::Error(_)));
        assert_eq!(c.feed("guest-summary passed=0 failed=1 skipped=0"), Event::Protocol);
        assert_eq!(c.lines, 4);
    }
}
