//! Counting results and holding a check's detail text.
//!
//! [`Tally`] is made of atomics so that the binary can keep one in a
//! `static` and still print a correct summary from its exception and panic
//! handlers, which run outside the normal flow.

use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use shared::Outcome;

/// Passed / failed / skipped counts, and which check is running.
#[derive(Debug)]
pub struct Tally {
    passed: AtomicU32,
    failed: AtomicU32,
    skipped: AtomicU32,
    /// Index of the running check in the registry, or `usize::MAX`.
    current: AtomicUsize,
    /// Results also go to the hypervisor through the ReportCheck hypercall.
    hypercall: AtomicBool,
}

impl Default for Tally {
    fn default() -> Self {
        Self::new()
    }
}

impl Tally {
    /// All zero, no check running.
    pub const fn new() -> Self {
        Tally {
            passed: AtomicU32::new(0),
            failed: AtomicU32::new(0),
            skipped: AtomicU32::new(0),
            current: AtomicUsize::new(usize::MAX),
            hypercall: AtomicBool::new(false),
        }
    }

    /// Turns reporting through the ReportCheck hypercall on or off.
    pub fn set_hypercall_reporting(&self, on: bool) {
        self.hypercall.store(on, Ordering::Relaxed);
    }

    /// True when results also go through the ReportCheck hypercall.
    pub fn hypercall_reporting(&self) -> bool {
        self.hypercall.load(Ordering::Relaxed)
    }

    /// Counts one result.
    pub fn record(&self, outcome: Outcome) {
        let c = match outcome {
            Outcome::Pass => &self.passed,
            Outcome::Fail => &self.failed,
            Outcome::Skip => &self.skipped,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// (passed, failed, skipped).
    pub fn counts(&self) -> (u32, u32, u32) {
        (
            self.passed.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            self.skipped.load(Ordering::Relaxed),
        )
    }

    /// The status the guest exits with: 0 when no check failed, else 1.
    /// (2 is reserved for a run cut short by an exception or panic.)
    pub fn exit_status(&self) -> u8 {
        u8::from(self.failed.load(Ordering::Relaxed) != 0)
    }

    /// Marks check `index` of the registry as running (`None`: none).
    pub fn set_current(&self, index: Option<usize>) {
        self.current.store(index.unwrap_or(usize::MAX), Ordering::Relaxed);
    }

    /// The running check's registry index.
    pub fn current(&self) -> Option<usize> {
        match self.current.load(Ordering::Relaxed) {
            usize::MAX => None,
            i => Some(i),
        }
    }
}

/// Capacity of a [`Detail`]: what a check record carries.
pub const DETAIL_LEN: usize = shared::hypercall::CHECK_DETAIL_LEN;

/// A fixed buffer for a check's detail text. Writing past the end truncates
/// at a character boundary and never fails (a long detail is still a detail).
#[derive(Clone)]
pub struct Detail {
    buf: [u8; DETAIL_LEN],
    len: usize,
}

impl fmt::Debug for Detail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl Default for Detail {
    fn default() -> Self {
        Self::new()
    }
}

impl Detail {
    /// Empty.
    pub const fn new() -> Self {
        Detail { buf: [0; DETAIL_LEN], len: 0 }
    }

    /// The text so far.
    pub fn as_str(&self) -> &str {
        // Only whole characters are ever copied in (see write_str).
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }

    /// Forgets the text.
    pub fn clear(&mut self) {
        self.len = 0;
    }
}

impl fmt::Write for Detail {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = DETAIL_LEN - self.len;
        let mut n = s.len().min(room);
        while !s.is_char_boundary(n) {
            n -= 1;
        }
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// Collects a check's expectations: each failed one adds its text to the
/// detail; [`Expect::finish`] adds the observed values and gives the outcome.
#[derive(Debug)]
pub struct Expect<'d> {
    d: &'d mut Detail,
    failures: u32,
}

impl<'d> Expect<'d> {
    /// Starts with an empty detail.
    pub fn new(d: &'d mut Detail) -> Self {
        d.clear();
        Expect { d, failures: 0 }
    }

    /// Records one expectation; `what` says what was wrong when `ok` is
    /// false. Returns `ok`.
    pub fn that(&mut self, ok: bool, what: fmt::Arguments<'_>) -> bool {
        if !ok {
            use fmt::Write;
            let sep = if self.failures == 0 { "" } else { "; " };
            let _ = write!(self.d, "{sep}{what}");
            self.failures += 1;
        }
        ok
    }

    /// Failed expectations so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Appends the observed `values` (after ` | ` when something failed) and
    /// returns Pass when nothing failed, else Fail.
    pub fn finish(self, values: fmt::Arguments<'_>) -> Outcome {
        use fmt::Write;
        let sep = if self.failures == 0 { "" } else { " | " };
        let _ = write!(self.d, "{sep}{values}");
        if self.failures == 0 {
            Outcome::Pass
        } else {
            Outcome::Fail
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::fmt::Write;

    #[test]
    fn tally_counts_and_status() {
        let t = Tally::new();
        assert_eq!((t.counts(), t.exit_status()), ((0, 0, 0), 0));
        t.record(Outcome::Pass);
        t.record(Outcome::Skip);
        t.record(Outcome::Pass);
        assert_eq!((t.counts(), t.exit_status()), ((2, 0, 1), 0));
        t.record(Outcome::Fail);
        assert_eq!((t.counts(), t.exit_status()), ((2, 1, 1), 1));
        assert_eq!(t.current(), None);
        t.set_current(Some(3));
        assert_eq!(t.current(), Some(3));
        assert!(!t.hypercall_reporting());
        t.set_hypercall_reporting(true);
        assert!(t.hypercall_reporting());
    }

    #[test]
    fn expect_collects_failures_then_values() {
        let mut d = Detail::new();
        let mut e = Expect::new(&mut d);
        assert!(e.that(true, format_args!("never shown")));
        assert!(!e.that(false, format_args!("EAX={:#x}, expected 0x2badb002", 0)));
        assert!(!e.that(false, format_args!("IF=1")));
        assert_eq!(e.failures(), 2);
        assert_eq!(e.finish(format_args!("eax=0x0")), Outcome::Fail);
        assert_eq!(d.as_str(), "EAX=0x0, expected 0x2badb002; IF=1 | eax=0x0");
        let mut e = Expect::new(&mut d);
        e.that(true, format_args!("x"));
        assert_eq!(e.finish(format_args!("all fine")), Outcome::Pass);
        assert_eq!(d.as_str(), "all fine");
    }

    #[test]
    fn detail_truncates_at_char_boundary() {
        let mut d = Detail::new();
        write!(d, "{}", "é".repeat(200)).unwrap();
        assert!(d.as_str().len() <= DETAIL_LEN && d.as_str().len() >= DETAIL_LEN - 1);
        assert!(d.as_str().chars().all(|c| c == 'é'));
        d.clear();
        write!(d, "x={:#x}", 255).unwrap();
        assert_eq!(d.as_str(), "x=0xff");
    }
}
