//! Text lines on COM1, the one format both a bare and a hypervisor run speak.
//!
//! Every line the runner acts on starts with a keyword; anything else on the
//! console is log text and is shown, not parsed. Under the hypervisor the
//! guest's console lines are forwarded unchanged, so one parser reads both.
//!
//! ```text
//! check-begin boot/multiboot-magic
//! check PASS boot/multiboot-magic: eax=0x2badb002
//! xlate long/self-map: read at 0x8000401008 cpl0: expected value 0x201027, got #PF ec=0x0 cr2=0x8000401008
//! guest-summary passed=5 failed=0 skipped=1
//! quadrant-hv version=2 mmu=shadow
//! quadrant-error no-vmx: CPUID.1:ECX.VMX[bit 5] = 0: this CPU has no VMX
//! role-coverage glevels=2 level=1 quadrant=1 metaphysical=0 access=uwx cr0_wp=1 efer_nx=0 smep_andnot_wp=0 smap_andnot_wp=0 cr4_pse=1 word=0x84112 count=3
//! role-coverage-end distinct=17
//! quadrant-result status=0 reason=guest-exit
//! bench ctxsw k=16 m=64 r=20 switches=320 cycles=1234567 exits=320 exit.28=320 hvcyc.28=901234
//! ```
//!
//! A failing translation check prints its report (the address, what was
//! expected and what happened, the guest's entries on the walk, the shadow
//! entries on the hardware walk) as `xlate` lines before its check line;
//! the runner files them under that check.
//!
//! The hypervisor prints its role-coverage table (one `role-coverage` line
//! per distinct role value created, see [`crate::coverage`], then
//! `role-coverage-end`) just before the result line.

use crate::coverage::{self, RoleValue};
use crate::Outcome;
use core::fmt::{self, Write};

/// Keyword of a check line.
pub const CHECK: &str = "check";
/// Keyword of the line the guest prints before a check runs, so that a run
/// which hangs or dies inside a check names it.
pub const CHECK_BEGIN: &str = "check-begin";
/// Keyword of one line of a translation-failure report.
pub const XLATE: &str = "xlate";
/// Keyword of the guest's closing summary.
pub const GUEST_SUMMARY: &str = "guest-summary";
/// Keyword of the hypervisor's start banner.
pub const HV_START: &str = "quadrant-hv";
/// Keyword of a fatal error report.
pub const ERROR: &str = "quadrant-error";
/// Keyword of the final result line of a run.
pub const RESULT: &str = "quadrant-result";
/// Keyword of one row of the role-coverage table.
pub const ROLE_COVERAGE: &str = "role-coverage";
/// Keyword of the line closing the role-coverage table.
pub const ROLE_COVERAGE_END: &str = "role-coverage-end";
/// Keyword of the MMU statistics line at the end of a shadow-paging run.
pub const MMU_STATS: &str = "mmu-stats";
/// Keyword of a benchmark workload's result line (guest, `bench=`).
pub const BENCH: &str = "bench";

/// Kinds of fatal error, the word after [`ERROR`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// CPUID reports no VMX.
    NoVmx,
    /// IA32_FEATURE_CONTROL is locked with VMX off.
    VmxLocked,
    /// A VMX instruction or VM entry failed.
    VmEntryFailure,
    /// The guest triple-faulted.
    TripleFault,
    /// An exit the hypervisor cannot handle.
    UnhandledExit,
    /// The guest image is not a loadable Multiboot kernel.
    BadGuestImage,
    /// The guest did something outside what Quadrant supports.
    Unsupported,
    /// The hypervisor itself failed (panic or CPU exception).
    HypervisorFault,
    /// The run took too long.
    Timeout,
}

impl ErrorKind {
    /// All kinds, for tests and help texts.
    pub const ALL: [ErrorKind; 9] = [
        ErrorKind::NoVmx,
        ErrorKind::VmxLocked,
        ErrorKind::VmEntryFailure,
        ErrorKind::TripleFault,
        ErrorKind::UnhandledExit,
        ErrorKind::BadGuestImage,
        ErrorKind::Unsupported,
        ErrorKind::HypervisorFault,
        ErrorKind::Timeout,
    ];

    /// The word in the line.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NoVmx => "no-vmx",
            ErrorKind::VmxLocked => "vmx-locked",
            ErrorKind::VmEntryFailure => "vm-entry-failure",
            ErrorKind::TripleFault => "triple-fault",
            ErrorKind::UnhandledExit => "unhandled-exit",
            ErrorKind::BadGuestImage => "bad-guest-image",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::HypervisorFault => "hypervisor-fault",
            ErrorKind::Timeout => "timeout",
        }
    }

    /// Parses the word in the line.
    pub fn from_word(w: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == w)
    }
}

/// One parsed line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// `check OUTCOME NAME: DETAIL`
    Check {
        /// Pass, fail or skip.
        outcome: Outcome,
        /// `mode/scenario[/case]`.
        name: &'a str,
        /// Free text (may be empty).
        detail: &'a str,
    },
    /// `check-begin NAME`: the check NAME starts now.
    CheckBegin {
        /// `mode/scenario[/case]`.
        name: &'a str,
    },
    /// `xlate NAME: TEXT`: one line of check NAME's translation-failure
    /// report.
    Xlate {
        /// The check the report belongs to.
        name: &'a str,
        /// The line's text (may be empty).
        text: &'a str,
    },
    /// `guest-summary passed=P failed=F skipped=S`
    GuestSummary {
        /// Checks passed.
        passed: u32,
        /// Checks failed.
        failed: u32,
        /// Checks skipped.
        skipped: u32,
    },
    /// `quadrant-hv version=V mmu=M ...`
    HvStart {
        /// Protocol version of the hypervisor.
        version: u32,
        /// `shadow` or `ept`.
        mmu: &'a str,
    },
    /// `quadrant-error KIND: TEXT`
    Error {
        /// What failed.
        kind: ErrorKind,
        /// What to tell the user.
        text: &'a str,
    },
    /// `quadrant-result status=V reason=R`
    Result {
        /// The guest's exit status (0 = pass), or 255 when the run failed
        /// before the guest could report one.
        status: u8,
        /// A word saying how the run ended (`guest-exit`, an error kind, ...).
        reason: &'a str,
    },
    /// `role-coverage glevels=G level=L ... word=0xW count=N`
    RoleCoverage {
        /// The decoded role.
        role: RoleValue,
        /// The packed role word (for cross-reference with the hypervisor's
        /// `mmu::role::Role`; the runner judges the decoded fields).
        word: u32,
        /// Shadow pages created with this role.
        count: u64,
        /// Cache hits on shadow pages of this role.
        hits: u64,
    },
    /// `mmu-stats KEY=N ...`: the shadow page cache's counters at the end
    /// of a run (the words after the keyword, for the runner to split).
    MmuStats {
        /// `key=value` words separated by spaces.
        fields: &'a str,
    },
    /// `bench NAME KEY=N ...`: one benchmark workload's figures (the words
    /// after the name, for the runner to split; `exit.R` and `hvcyc.R` are
    /// per basic exit reason R).
    Bench {
        /// The workload (`ctxsw`, `fork`, `ptchurn`, `modewalk`).
        name: &'a str,
        /// `key=value` words separated by spaces.
        fields: &'a str,
    },
    /// `role-coverage-end distinct=K`
    RoleCoverageEnd {
        /// Number of `role-coverage` lines before it.
        distinct: u32,
    },
}

/// Writes `check OUTCOME NAME: DETAIL` (no newline). Newlines in the detail
/// are replaced so that one check stays one line.
pub fn write_check(w: &mut impl Write, outcome: Outcome, name: &str, detail: &str) -> fmt::Result {
    write!(w, "{CHECK} {} {name}: ", outcome.as_str())?;
    for c in detail.chars() {
        w.write_char(if c == '\n' || c == '\r' { ' ' } else { c })?;
    }
    Ok(())
}

/// Writes one line of check `name`'s translation-failure report (no
/// newline); newlines in `text` become spaces.
pub fn write_xlate(w: &mut impl Write, name: &str, text: fmt::Arguments<'_>) -> fmt::Result {
    write!(w, "{XLATE} {name}: ")?;
    struct OneLine<'w, W: Write>(&'w mut W);
    impl<W: Write> Write for OneLine<'_, W> {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            for c in s.chars() {
                self.0.write_char(if c == '\n' || c == '\r' { ' ' } else { c })?;
            }
            Ok(())
        }
    }
    OneLine(w).write_fmt(text)
}

/// Writes the line announcing check `name` (no newline).
pub fn write_check_begin(w: &mut impl Write, name: &str) -> fmt::Result {
    write!(w, "{CHECK_BEGIN} {name}")
}

/// Writes the guest summary line (no newline).
pub fn write_guest_summary(w: &mut impl Write, passed: u32, failed: u32, skipped: u32) -> fmt::Result {
    write!(w, "{GUEST_SUMMARY} passed={passed} failed={failed} skipped={skipped}")
}

/// Writes the hypervisor start banner (no newline).
pub fn write_hv_start(w: &mut impl Write, mmu: &str) -> fmt::Result {
    write!(w, "{HV_START} version={} mmu={mmu}", crate::PROTOCOL_VERSION)
}

/// Writes a fatal error line (no newline).
pub fn write_error(w: &mut impl Write, kind: ErrorKind, text: fmt::Arguments<'_>) -> fmt::Result {
    write!(w, "{ERROR} {}: {text}", kind.as_str())
}

/// Writes the final result line (no newline).
pub fn write_result(w: &mut impl Write, status: u8, reason: &str) -> fmt::Result {
    write!(w, "{RESULT} status={status} reason={reason}")
}

/// Writes one row of the role-coverage table (no newline).
pub fn write_role_coverage(w: &mut impl Write, role: &RoleValue, word: u32, count: u64, hits: u64) -> fmt::Result {
    let b = u8::from;
    write!(
        w,
        "{ROLE_COVERAGE} glevels={} level={} quadrant={} metaphysical={} access=",
        role.glevels,
        role.level,
        role.quadrant,
        b(role.metaphysical)
    )?;
    coverage::write_access(w, role.access)?;
    write!(
        w,
        " cr0_wp={} efer_nx={} smep_andnot_wp={} smap_andnot_wp={} cr4_pse={} word={word:#x} count={count} hits={hits}",
        b(role.cr0_wp),
        b(role.efer_nx),
        b(role.smep_andnot_wp),
        b(role.smap_andnot_wp),
        b(role.cr4_pse)
    )
}

/// Writes the MMU statistics line `mmu-stats key=value ...` (no newline).
pub fn write_mmu_stats(w: &mut impl Write, fields: &[(&str, u64)]) -> fmt::Result {
    w.write_str(MMU_STATS)?;
    for (k, v) in fields {
        write!(w, " {k}={v}")?;
    }
    Ok(())
}

/// Writes a benchmark line `bench NAME key=value ... exit.R=N hvcyc.R=C ...`
/// (no newline): `fields` in order, then for every exit reason R with exits
/// its count and the hypervisor's cycles (`reasons`: (R, exits, cycles)).
pub fn write_bench(w: &mut impl Write, name: &str, fields: &[(&str, u64)], reasons: &[(usize, u64, u64)]) -> fmt::Result {
    write!(w, "{BENCH} {name}")?;
    for (k, v) in fields {
        write!(w, " {k}={v}")?;
    }
    for (r, n, c) in reasons.iter().filter(|r| r.1 != 0) {
        write!(w, " exit.{r}={n} hvcyc.{r}={c}")?;
    }
    Ok(())
}

/// Writes the line closing the role-coverage table (no newline).
pub fn write_role_coverage_end(w: &mut impl Write, distinct: u32) -> fmt::Result {
    write!(w, "{ROLE_COVERAGE_END} distinct={distinct}")
}

/// Parses one console line (trailing `\r`/`\n` ignored). Returns `None` for
/// log text.
pub fn parse(line: &str) -> Option<Line<'_>> {
    let line = line.trim_end_matches(['\r', '\n']);
    let (keyword, rest) = line.split_once(' ')?;
    match keyword {
        CHECK => {
            let (word, rest) = rest.split_once(' ')?;
            let outcome = Outcome::from_word(word)?;
            let (name, detail) = match rest.split_once(": ") {
                Some((n, d)) => (n, d),
                None => (rest.strip_suffix(':')?, ""),
            };
            if name.is_empty() || name.contains(' ') {
                return None;
            }
            Some(Line::Check { outcome, name, detail })
        }
        XLATE => {
            let (name, text) = match rest.split_once(": ") {
                Some((n, t)) => (n, t),
                None => (rest.strip_suffix(':')?, ""),
            };
            (!name.is_empty() && !name.contains(' ')).then_some(Line::Xlate { name, text })
        }
        CHECK_BEGIN => {
            let name = rest.trim_end();
            (!name.is_empty() && !name.contains(' ')).then_some(Line::CheckBegin { name })
        }
        GUEST_SUMMARY => Some(Line::GuestSummary {
            passed: field(rest, "passed")?.parse().ok()?,
            failed: field(rest, "failed")?.parse().ok()?,
            skipped: field(rest, "skipped")?.parse().ok()?,
        }),
        HV_START => Some(Line::HvStart {
            version: field(rest, "version")?.parse().ok()?,
            mmu: field(rest, "mmu")?,
        }),
        ERROR => {
            let (kind, text) = rest.split_once(": ")?;
            Some(Line::Error { kind: ErrorKind::from_word(kind)?, text })
        }
        RESULT => Some(Line::Result {
            status: field(rest, "status")?.parse().ok()?,
            reason: field(rest, "reason")?,
        }),
        ROLE_COVERAGE => {
            let num = |key| -> Option<u8> { field(rest, key)?.parse().ok() };
            let flag = |key| -> Option<bool> {
                match field(rest, key)? {
                    "0" => Some(false),
                    "1" => Some(true),
                    _ => None,
                }
            };
            let role = RoleValue {
                glevels: num("glevels")?,
                level: num("level")?,
                quadrant: num("quadrant")?,
                metaphysical: flag("metaphysical")?,
                access: coverage::parse_access(field(rest, "access")?)?,
                cr0_wp: flag("cr0_wp")?,
                efer_nx: flag("efer_nx")?,
                smep_andnot_wp: flag("smep_andnot_wp")?,
                smap_andnot_wp: flag("smap_andnot_wp")?,
                cr4_pse: flag("cr4_pse")?,
            };
            let word = field(rest, "word")?.strip_prefix("0x")?;
            Some(Line::RoleCoverage {
                role,
                word: u32::from_str_radix(word, 16).ok()?,
                count: field(rest, "count")?.parse().ok()?,
                hits: field(rest, "hits").map_or(Some(0), |h| h.parse().ok())?,
            })
        }
        MMU_STATS => Some(Line::MmuStats { fields: rest }),
        BENCH => {
            let (name, fields) = rest.split_once(' ').unwrap_or((rest, ""));
            (!name.is_empty() && !name.contains('=')).then_some(Line::Bench { name, fields })
        }
        ROLE_COVERAGE_END => Some(Line::RoleCoverageEnd { distinct: field(rest, "distinct")?.parse().ok()? }),
        _ => None,
    }
}

/// The value of `key=value` among space-separated words.
fn field<'a>(rest: &'a str, key: &str) -> Option<&'a str> {
    rest.split(' ').find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_case::test_case;

    /// A fixed-size `fmt::Write` sink so the tests stay `no_std`.
    struct Buf {
        b: [u8; 256],
        n: usize,
    }
    impl Write for Buf {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            let end = self.n + s.len();
            self.b.get_mut(self.n..end).ok_or(fmt::Error)?.copy_from_slice(s.as_bytes());
            self.n = end;
            Ok(())
        }
    }
    fn buf() -> Buf {
        Buf { b: [0; 256], n: 0 }
    }
    impl Buf {
        fn as_str(&self) -> &str {
            core::str::from_utf8(&self.b[..self.n]).unwrap()
        }
    }

    #[test_case(Outcome::Pass, "boot/multiboot-magic", "eax=0x2badb002")]
    #[test_case(Outcome::Fail, "long/self-map/write-pde", "expected #PF ec=0x3, got none")]
    #[test_case(Outcome::Skip, "boot/hypervisor-signature", "")]
    fn check_round_trip(outcome: Outcome, name: &str, detail: &str) {
        let mut b = buf();
        write_check(&mut b, outcome, name, detail).unwrap();
        assert_eq!(parse(b.as_str()), Some(Line::Check { outcome, name, detail }));
    }

    #[test]
    fn check_detail_newlines_are_flattened() {
        let mut b = buf();
        write_check(&mut b, Outcome::Pass, "a/b", "x\ny").unwrap();
        assert_eq!(b.as_str(), "check PASS a/b: x y");
    }

    #[test]
    fn xlate_round_trip_and_one_line() {
        let mut b = buf();
        write_xlate(&mut b, "long/self-map", format_args!("  PTE[1] @{:#x}\nx", 0x1008)).unwrap();
        assert_eq!(b.as_str(), "xlate long/self-map:   PTE[1] @0x1008 x");
        assert_eq!(parse(b.as_str()), Some(Line::Xlate { name: "long/self-map", text: "  PTE[1] @0x1008 x" }));
        assert_eq!(parse("xlate a/b:"), Some(Line::Xlate { name: "a/b", text: "" }));
        assert_eq!(parse("xlate a b: x"), None);
    }

    #[test]
    fn summary_result_error_round_trip() {
        let mut b = buf();
        write_guest_summary(&mut b, 7, 1, 2).unwrap();
        assert_eq!(parse(b.as_str()), Some(Line::GuestSummary { passed: 7, failed: 1, skipped: 2 }));
        let mut b = buf();
        write_result(&mut b, 3, "guest-exit").unwrap();
        assert_eq!(parse(b.as_str()), Some(Line::Result { status: 3, reason: "guest-exit" }));
        for kind in ErrorKind::ALL {
            let mut b = buf();
            write_error(&mut b, kind, format_args!("why {}", 1)).unwrap();
            assert_eq!(parse(b.as_str()), Some(Line::Error { kind, text: "why 1" }));
        }
        let mut b = buf();
        write_hv_start(&mut b, "shadow").unwrap();
        assert_eq!(parse(b.as_str()), Some(Line::HvStart { version: crate::PROTOCOL_VERSION, mmu: "shadow" }));
    }

    #[test]
    fn role_coverage_round_trip() {
        let roles = [
            RoleValue::default(),
            RoleValue {
                glevels: 2,
                level: 1,
                quadrant: 1,
                access: 7,
                cr0_wp: true,
                cr4_pse: true,
                ..RoleValue::default()
            },
            RoleValue {
                glevels: 4,
                level: 1,
                metaphysical: true,
                access: coverage::ACCESS_U | coverage::ACCESS_X,
                efer_nx: true,
                smep_andnot_wp: true,
                smap_andnot_wp: true,
                ..RoleValue::default()
            },
        ];
        for (i, role) in roles.iter().enumerate() {
            let mut b = buf();
            write_role_coverage(&mut b, role, 0x84112 + i as u32, 40 + i as u64, 7 * i as u64).unwrap();
            assert_eq!(
                parse(b.as_str()),
                Some(Line::RoleCoverage { role: *role, word: 0x84112 + i as u32, count: 40 + i as u64, hits: 7 * i as u64 }),
                "{}",
                b.as_str()
            );
        }
        let mut b = buf();
        write_role_coverage_end(&mut b, 17).unwrap();
        assert_eq!(b.as_str(), "role-coverage-end distinct=17");
        assert_eq!(parse(b.as_str()), Some(Line::RoleCoverageEnd { distinct: 17 }));
    }

    #[test]
    fn role_coverage_line_format() {
        let mut b = buf();
        let role = RoleValue {
            glevels: 2,
            level: 1,
            quadrant: 1,
            access: 7,
            cr0_wp: true,
            cr4_pse: true,
            ..RoleValue::default()
        };
        write_role_coverage(&mut b, &role, 0x84112, 3, 9).unwrap();
        assert_eq!(
            b.as_str(),
            "role-coverage glevels=2 level=1 quadrant=1 metaphysical=0 access=uwx cr0_wp=1 efer_nx=0 \
             smep_andnot_wp=0 smap_andnot_wp=0 cr4_pse=1 word=0x84112 count=3 hits=9"
        );
        let mut b = buf();
        write_mmu_stats(&mut b, &[("created", 52), ("cr3_hits", 70)]).unwrap();
        assert_eq!(b.as_str(), "mmu-stats created=52 cr3_hits=70");
        assert_eq!(parse(b.as_str()), Some(Line::MmuStats { fields: "created=52 cr3_hits=70" }));
        let mut b = buf();
        write_check_begin(&mut b, "long/pt-write/np-to-p").unwrap();
        assert_eq!(b.as_str(), "check-begin long/pt-write/np-to-p");
        assert_eq!(parse(b.as_str()), Some(Line::CheckBegin { name: "long/pt-write/np-to-p" }));
        assert_eq!(parse("check-begin a/b\r"), Some(Line::CheckBegin { name: "a/b" }));
    }

    #[test]
    fn bench_round_trip() {
        let mut b = buf();
        write_bench(&mut b, "ctxsw", &[("k", 16), ("cycles", 1234)], &[(14, 0, 0), (28, 320, 9000)]).unwrap();
        assert_eq!(b.as_str(), "bench ctxsw k=16 cycles=1234 exit.28=320 hvcyc.28=9000");
        assert_eq!(parse(b.as_str()), Some(Line::Bench { name: "ctxsw", fields: "k=16 cycles=1234 exit.28=320 hvcyc.28=9000" }));
        assert_eq!(parse("bench modewalk"), Some(Line::Bench { name: "modewalk", fields: "" }));
        assert_eq!(parse("bench k=1"), None);
    }

    #[test_case("role-coverage glevels=2 level=1 quadrant=1 metaphysical=2 access=uwx cr0_wp=1 efer_nx=0 smep_andnot_wp=0 smap_andnot_wp=0 cr4_pse=1 word=0x1 count=3"; "bad flag")]
    #[test_case("role-coverage glevels=2 level=1 quadrant=1 metaphysical=0 access=uw cr0_wp=1 efer_nx=0 smep_andnot_wp=0 smap_andnot_wp=0 cr4_pse=1 word=0x1 count=3"; "bad access")]
    #[test_case("role-coverage glevels=2 level=1 quadrant=1 metaphysical=0 access=uwx cr0_wp=1 efer_nx=0 smep_andnot_wp=0 smap_andnot_wp=0 cr4_pse=1 word=0x1"; "no count")]
    #[test_case("role-coverage-end distinct=x"; "bad distinct")]
    fn malformed_coverage_lines_are_not_parsed(s: &str) {
        assert_eq!(parse(s), None);
    }

    #[test_case("hello world")]
    #[test_case("check MAYBE a/b: x")]
    #[test_case("check PASS : x")]
    #[test_case("check-begin a b")]
    #[test_case("check-begin ")]
    #[test_case("quadrant-result status=300 reason=x")]
    #[test_case("")]
    fn log_text_is_not_parsed(s: &str) {
        assert_eq!(parse(s), None);
    }

    #[test]
    fn crlf_is_ignored() {
        assert_eq!(
            parse("check PASS a/b: ok\r\n"),
            Some(Line::Check { outcome: Outcome::Pass, name: "a/b", detail: "ok" })
        );
    }
}
