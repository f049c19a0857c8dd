//! Text lines on COM1, the one format both a bare and a hypervisor run speak.
//!
//! Every line the runner acts on starts with a keyword; anything else on the
//! console is log text and is shown, not parsed. Under the hypervisor the
//! guest's console lines are forwarded unchanged, so one parser reads both.
//!
//! ```text
//! check PASS boot/multiboot-magic: eax=0x2badb002
//! guest-summary passed=5 failed=0 skipped=1
//! quadrant-hv version=1 mmu=shadow cpu=GenuineIntel
//! quadrant-error no-vmx: CPUID.1:ECX.VMX[bit 5] = 0: this CPU has no VMX
//! quadrant-result status=0 reason=guest-exit
//! ```

use crate::Outcome;
use core::fmt::{self, Write};

/// Keyword of a check line.
pub const CHECK: &str = "check";
/// Keyword of the guest's closing summary.
pub const GUEST_SUMMARY: &str = "guest-summary";
/// Keyword of the hypervisor's start banner.
pub const HV_START: &str = "quadrant-hv";
/// Keyword of a fatal error report.
pub const ERROR: &str = "quadrant-error";
/// Keyword of the final result line of a run.
pub const RESULT: &str = "quadrant-result";

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

    #[test_case("hello world")]
    #[test_case("check MAYBE a/b: x")]
    #[test_case("check PASS : x")]
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
