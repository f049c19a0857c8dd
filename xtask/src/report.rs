//! The JSON report of one boot (`<target>/quadrant/reports/<run-id>.json`)
//! and the text block the console shows for it.

use crate::verdict::coverage::{MissingRow, RoleRow};
use crate::verdict::{Check, Counts, ErrorLine, ModeCounts, Verdict};
use serde::Serialize;
use std::fmt::Write;
use std::path::Path;

/// Everything about one boot, as written to the JSON report.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Unique id; also the run directory's name.
    pub run_id: String,
    /// Short name of the run (`bochs-penryn-hv`, ...).
    pub name: String,
    /// `bochs`, `qemu-kvm` or `qemu-tcg`.
    pub emulator: String,
    /// Bochs CPU model or QEMU `-cpu` value.
    pub cpu_model: String,
    /// Number of CPUs.
    pub cpus: u32,
    /// Whether the guest ran under the hypervisor.
    pub hypervisor: bool,
    /// `shadow` or `ept` under the hypervisor, `null` bare.
    pub mmu: Option<String>,
    /// The MMU the hypervisor's banner announced, if any.
    pub hv_mmu_reported: Option<String>,
    /// The guest image booted.
    pub guest: String,
    /// The kernel command line (hypervisor's, or the guest's on a bare run).
    pub kernel_args: String,
    /// The guest's arguments under the hypervisor.
    pub guest_args: Option<String>,
    /// For a negative test: the `quadrant-error` kind that must appear.
    pub expect_error: Option<String>,
    /// For a deliberate-failure test: the checks that must fail, each with
    /// a translation-failure report (empty otherwise).
    pub expect_failures: Vec<String>,
    /// Every check line, in order.
    pub checks: Vec<Check>,
    /// Counts of the check lines.
    pub counts: Counts,
    /// The same counts per mode (the first part of the check names:
    /// `boot`, `modes`, `pg32`, `pae`, `long`, `cache`, ...), in run order.
    pub counts_by_mode: Vec<ModeCounts>,
    /// The same counts per CPU (`cpu0` the BSP, `cpuN` the APs' own
    /// `cpuN/...` checks), in run order.
    pub counts_by_cpu: Vec<ModeCounts>,
    /// The guest's own `guest-summary` counts, if it printed one.
    pub guest_summary: Option<Counts>,
    /// The `quadrant-result` line.
    pub result: Option<ResultLine>,
    /// The verdict.
    pub passed: bool,
    /// Why it failed (empty when it passed).
    pub failure_reasons: Vec<String>,
    /// `quadrant-error` lines.
    pub errors: Vec<ErrorLine>,
    /// The hypervisor's role-coverage table: every distinct role value
    /// created, with the shadow pages created and the cache hits under it,
    /// and the promises it matches (`null` when the run printed no table).
    #[serde(rename = "coverage")]
    pub role_coverage: Option<Vec<RoleRow>>,
    /// The shadow page cache's counters at the end of the run (`null`
    /// without shadow paging).
    pub mmu_stats: Option<std::collections::BTreeMap<String, u64>>,
    /// The guest's `bench` lines (benchmark workloads, `bench=`): list of
    /// `{name, fields}`.
    pub bench: Vec<crate::verdict::BenchLine>,
    /// Whether the role-coverage gate applied to this run.
    pub coverage_checked: bool,
    /// Promised role values never created (the gate's failures).
    pub coverage_missing: Vec<MissingRow>,
    /// The emulator's exit status (`null` on a timeout or a signal).
    pub exit_status: Option<i32>,
    /// Whether the runner killed the emulator at the timeout.
    pub timed_out: bool,
    /// The timeout in seconds.
    pub timeout_s: u64,
    /// Emulator wall time in seconds.
    pub duration_s: f64,
    /// The run directory.
    pub run_dir: String,
    /// COM1 output.
    pub serial_log: String,
    /// The emulator's log (`bochs.log`, or QEMU's stderr).
    pub emulator_log: String,
    /// The port 0xe9 output (Bochs: its stdout).
    pub debugcon_log: String,
    /// The emulator command line.
    pub command: String,
}

/// The `quadrant-result status=V reason=R` line.
#[derive(Clone, Debug, Serialize)]
pub struct ResultLine {
    /// The run's status (0 = pass).
    pub status: u8,
    /// How the run ended.
    pub reason: String,
}

impl Report {
    /// Writes the report as pretty JSON to `path`.
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d)?;
        }
        std::fs::write(path, serde_json::to_string_pretty(self)? + "\n")?;
        Ok(())
    }
}

/// One check as a console line, followed by its translation-failure
/// report, one `    > ` line per `xlate` line.
pub fn check_line(c: &Check) -> String {
    let word = match c.outcome {
        "pass" => "PASS",
        "fail" => "FAIL",
        _ => "SKIP",
    };
    let mut s = if c.detail.is_empty() {
        format!("  {word} {}", printable(&c.name))
    } else {
        format!("  {word} {}: {}", printable(&c.name), printable(&c.detail))
    };
    for l in &c.report {
        let _ = write!(s, "\n    > {}", printable(l));
    }
    s
}

/// One `quadrant-error` line, made to stand out.
pub fn error_line(e: &ErrorLine) -> String {
    format!("  *** quadrant-error {}: {}", e.kind, printable(&e.text))
}

/// The `N passed, M failed, K skipped` line of one boot.
pub fn counts_line(c: Counts) -> String {
    format!("{} passed, {} failed, {} skipped", c.passed, c.failed, c.skipped)
}

/// The per-mode counts as one line:
/// `by mode (passed/failed/skipped): boot 6/0/0, long 17/0/0, ...`;
/// empty when there were no checks.
pub fn mode_counts_line(by_mode: &[ModeCounts]) -> String {
    counts_line_of("by mode", by_mode)
}

/// The per-CPU counts as one line (`by CPU (passed/failed/skipped): cpu0
/// 80/0/1, cpu1 26/0/0, ...`); empty unless APs reported checks of their own.
pub fn cpu_counts_line(by_cpu: &[ModeCounts]) -> String {
    if by_cpu.len() < 2 {
        return String::new();
    }
    counts_line_of("by CPU", by_cpu)
}

fn counts_line_of(what: &str, counts: &[ModeCounts]) -> String {
    if counts.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = counts
        .iter()
        .map(|m| format!("{} {}/{}/{}", m.mode, m.counts.passed, m.counts.failed, m.counts.skipped))
        .collect();
    format!("{what} (passed/failed/skipped): {}", parts.join(", "))
}

/// A log line made safe for a terminal: no escape sequences or control characters.
pub fn printable(l: &str) -> String {
    crate::verdict::strip_ansi(l).chars().filter(|c| !c.is_control() || *c == '\t').collect()
}

/// The last `n` lines of a file, indented; or why there are none.
pub fn tail(path: &Path, n: usize) -> String {
    match std::fs::read(path) {
        Err(e) => format!("      ({e})\n"),
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            if lines.is_empty() {
                return "      (empty)\n".into();
            }
            let mut s = String::new();
            for l in &lines[lines.len().saturating_sub(n)..] {
                let _ = writeln!(s, "    | {}", printable(l));
            }
            s
        }
    }
}

/// Whether a bochs.log line is an error or a panic (`00000000123e[SER   ] ...`).
pub fn is_bochs_problem(line: &str) -> bool {
    let head = line.trim_start_matches(|c: char| c.is_ascii_digit());
    head.len() < line.len() && (head.starts_with("e[") || head.starts_with("p[")) || line.contains(">>PANIC<<")
}

/// The last `n` error/panic lines of a bochs.log, or its tail when it has none.
fn bochs_problems(path: &Path, n: usize) -> String {
    let Ok(bytes) = std::fs::read(path) else {
        return tail(path, n);
    };
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().filter(|l| is_bochs_problem(l)).collect();
    if lines.is_empty() {
        return format!("      (no error or panic lines; the log ends with:)\n{}", tail(path, n));
    }
    let mut s = String::new();
    for l in &lines[lines.len().saturating_sub(n)..] {
        let _ = writeln!(s, "    | {}", printable(l));
    }
    s
}

/// What ends a boot's block: counts, then either the pass line or the
/// failure reasons, log paths and log tails.
pub fn block_end(r: &Report, v: &Verdict, report_path: &Path) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{}", counts_line(v.counts));
    for line in [mode_counts_line(&r.counts_by_mode), cpu_counts_line(&r.counts_by_cpu)] {
        if !line.is_empty() {
            let _ = writeln!(s, "{line}");
        }
    }
    if v.passed {
        let what = if r.expect_error.is_some() || !r.expect_failures.is_empty() { " (failed as expected)" } else { "" };
        let _ = writeln!(s, "PASS{what}: {} in {:.1} s (report: {})", r.name, r.duration_s, report_path.display());
        return s;
    }
    let _ = writeln!(s, "FAIL: {} after {:.1} s", r.name, r.duration_s);
    for reason in &v.reasons {
        let _ = writeln!(s, "  - {reason}");
    }
    let _ = writeln!(s, "  serial log:   {} (last 20 lines):", r.serial_log);
    s += &tail(Path::new(&r.serial_log), 20);
    if r.emulator == "bochs" {
        // bochs.log ends with a register dump; its errors and panics say more.
        let _ = writeln!(s, "  emulator log: {} (last 20 error/panic lines):", r.emulator_log);
        s += &bochs_problems(Path::new(&r.emulator_log), 20);
    } else {
        let _ = writeln!(s, "  emulator log: {} (last 20 lines):", r.emulator_log);
        s += &tail(Path::new(&r.emulator_log), 20);
    }
    let _ = writeln!(s, "  0xe9 output:  {}", r.debugcon_log);
    let _ = writeln!(s, "  run dir:      {}", r.run_dir);
    let _ = writeln!(s, "  report:       {}", report_path.display());
    let _ = writeln!(s, "  rerun:        {}", r.command);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bochs_problem_lines() {
        assert!(is_bochs_problem("00228277236e[SER   ] com1: write to tx hold register when not empty"));
        assert!(is_bochs_problem("00000123456p[CPU0  ] >>PANIC<< VMENTER FAIL"));
        assert!(!is_bochs_problem("00228278050i[CPU0  ] | RSI=0000000000101588"));
        assert!(!is_bochs_problem("e[ not a bochs line"));
    }

    #[test]
    fn per_mode_counts() {
        use crate::verdict::Console;
        let c = Console::from_text(
            "check PASS boot/handoff: x\ncheck PASS long/a: x\ncheck FAIL long/b/c: y\ncheck SKIP cache/d: z\n\
             check PASS cpu1/long/e: x\ncheck PASS pg32/f: x\n",
        );
        let m = c.counts_by_mode();
        assert_eq!(
            mode_counts_line(&m),
            "by mode (passed/failed/skipped): boot 1/0/0, long 2/1/0, cache 0/0/1, pg32 1/0/0"
        );
        let json = serde_json::to_string(&m[1]).unwrap();
        assert_eq!(json, r#"{"mode":"long","passed":2,"failed":1,"skipped":0}"#);
        assert_eq!(mode_counts_line(&[]), "");
        assert_eq!(crate::verdict::mode_of("cpu12/pae/x"), "pae");
        assert_eq!(crate::verdict::mode_of("cpux/pae"), "cpux");
        let cpus = c.counts_by_cpu();
        assert_eq!(cpu_counts_line(&cpus), "by CPU (passed/failed/skipped): cpu0 3/1/1, cpu1 1/0/0");
        assert_eq!(crate::verdict::cpu_of("cpu12/pae/x"), "cpu12");
        assert_eq!(crate::verdict::cpu_of("cpux/pae"), "cpu0");
        assert_eq!(crate::verdict::cpu_of("cpu3"), "cpu0");
        // One CPU: no per-CPU line.
        let one = Console::from_text("check PASS boot/handoff: x\n").counts_by_cpu();
        assert_eq!(cpu_counts_line(&one), "");
    }

    #[test]
    fn a_check_that_never_finished_fails_by_name() {
        use crate::verdict::Console;
        let mut c = Console::from_text("check-begin boot/a\ncheck PASS boot/a: x\ncheck-begin modes/walk1/pg32\n");
        assert_eq!(c.running.as_deref(), Some("modes/walk1/pg32"));
        let f = c.fail_unfinished("timed out after 300 s (killed)").unwrap();
        assert_eq!(
            check_line(&f),
            "  FAIL modes/walk1/pg32: did not finish: timed out after 300 s (killed) while it ran \
             (runner's verdict; the guest reported nothing)"
        );
        assert_eq!((c.counts().passed, c.counts().failed), (1, 1));
        assert_eq!(c.fail_unfinished("again"), None);
        // Every begun check reported: nothing to add.
        let mut c = Console::from_text("check-begin boot/a\ncheck FAIL boot/a: x\n");
        assert_eq!(c.fail_unfinished("x"), None);
    }

    #[test]
    fn log_lines_are_made_printable() {
        assert_eq!(printable("\x1b[H\x1b[J\x1b[1;1H  Booting `x'\r"), "  Booting `x'");
        assert_eq!(printable("\ra\tb\x07"), "a\tb");
    }
}
