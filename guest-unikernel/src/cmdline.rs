//! The guest's command line: space-separated words, each `key=value`:
//! `expect_hv=0|1`, `ram_test_mib=N`, `crash=ud|pf|panic|triple-fault`,
//! `modes=0|1`, `modes_break=0|1`, `light=0|1`, `sweep=quick|full`,
//! `only=PREFIX[,PREFIX...]`, and the benchmark's `bench=NAME`,
//! `bench_k=K`, `bench_m=M`, `bench_r=R` (see [`Config`]).
//! Unknown words (including the kernel path GRUB and QEMU put first) and bad
//! values are reported to the caller, which logs them, and otherwise ignored.

/// What the run expects about the hypervisor (`expect_hv=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpectHv {
    /// `expect_hv=1`: the run is under the Quadrant hypervisor.
    Yes,
    /// `expect_hv=0`: the run is bare (an emulator or real hardware).
    No,
    /// Word absent: detect and report what was found.
    Auto,
}

/// A deliberate crash after the checks (`crash=`), to exercise the
/// exception and panic reporting end to end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Crash {
    /// `crash=ud`: execute UD2 (#UD).
    Ud,
    /// `crash=pf`: read an address above the 4 GiB identity map (#PF).
    Pf,
    /// `crash=panic`: panic.
    Panic,
    /// `crash=triple-fault`: load an empty IDT and execute UD2. The #UD
    /// cannot be delivered (#GP), nor can the #GP (#DF), nor the #DF: a
    /// triple fault (SDM Vol. 3A 6.15, "Interrupt 8"), which shuts the
    /// machine down bare and must be reported by the hypervisor.
    TripleFault,
}

/// The settings the command line can change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// `expect_hv=0|1`.
    pub expect_hv: ExpectHv,
    /// `ram_test_mib=N`: test at most N MiB in `boot/ram-pattern`
    /// (0 skips the check); `None` tests all RAM below 4 GiB.
    pub ram_test_mib: Option<u64>,
    /// `crash=ud|pf|panic|triple-fault`: crash on purpose after the checks.
    pub crash: Option<Crash>,
    /// `modes_break=1`: one probe of `modes/walk1/pg32` expects a wrong
    /// value, so that the run shows what a failing mode check reports.
    pub modes_break: bool,
    /// `long_break=1`: one probe of `long/large-alias-perms` expects a
    /// wrong value, so that the run shows the long-mode harness's
    /// translation-failure report.
    pub long_break: bool,
    /// `modes=0|1`: skip or run the `modes/...` checks (with 0 the guest
    /// never leaves long mode). Without the word they run.
    pub modes: Option<bool>,
    /// `light=1`: a lighter workload for runs where every MMU exit is
    /// expensive (the hypervisor's `audit=1`): `cache/pressure-recycles`
    /// skips, `long/parent-chain` and `long/zap-active-root` do less.
    pub light: bool,
    /// `sweep=quick|full`: how much of the access sweep runs (`quick`, the
    /// default, samples the space; `full` runs every combination).
    pub sweep_full: bool,
    /// `only=PREFIX[,PREFIX...]`: run only the checks whose names start
    /// with one of the prefixes (the `boot/...` checks always run); the
    /// others report SKIP. For developing one scenario without the rest.
    pub only: Only,
    /// `cpus=N`: the machine has N processors (the runner's CPU count);
    /// `smp/processors` checks the processor table against it.
    pub cpus: Option<u32>,
    /// `smp=0|1`: run (default) or skip the `smp/...` checks and the APs'
    /// own checks.
    pub smp: bool,
    /// `bench=ctxsw|fork|ptchurn|modewalk` with `bench_k=`, `bench_m=`,
    /// `bench_r=`: run the `boot/...` checks and this benchmark workload
    /// instead of the suite ([`crate::bench`]).
    pub bench: Option<crate::bench::Spec>,
}

/// The `only=` filter: comma-separated name prefixes, kept in a fixed
/// buffer (the guest has no heap when it parses the command line).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Only {
    buf: [u8; Only::CAP],
    len: usize,
}

impl Only {
    /// Longest `only=` value kept.
    pub const CAP: usize = 96;

    /// No filter: every check runs.
    pub const fn all() -> Self {
        Only { buf: [0; Only::CAP], len: 0 }
    }

    /// The filter from an `only=` value; `None` when it is empty, too long
    /// or not ASCII.
    pub fn new(value: &str) -> Option<Self> {
        if value.is_empty() || value.len() > Self::CAP || !value.is_ascii() || value.split(',').any(str::is_empty) {
            return None;
        }
        let mut o = Only::all();
        o.buf[..value.len()].copy_from_slice(value.as_bytes());
        o.len = value.len();
        Some(o)
    }

    /// The value as given (empty: no filter).
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }

    /// True when the check `name` runs: no filter, a `boot/...` check, or
    /// a name starting with one of the prefixes.
    pub fn selects(&self, name: &str) -> bool {
        self.len == 0 || name.starts_with("boot/") || self.as_str().split(',').any(|p| name.starts_with(p))
    }
}

impl core::fmt::Debug for Only {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Only({:?})", self.as_str())
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            expect_hv: ExpectHv::Auto,
            ram_test_mib: None,
            crash: None,
            modes_break: false,
            long_break: false,
            modes: None,
            light: false,
            sweep_full: false,
            only: Only::all(),
            cpus: None,
            smp: true,
            bench: None,
        }
    }
}

/// A word the parser did not take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Note<'a> {
    /// Not a known `key=value` word.
    Ignored(&'a str),
    /// A known key with a value it cannot take.
    BadValue {
        /// The key.
        key: &'a str,
        /// The value given.
        value: &'a str,
    },
}

/// The keys [`parse`] understands, for help texts and logs.
pub const KEYS: [&str; 15] = [
    "expect_hv",
    "ram_test_mib",
    "crash",
    "modes",
    "modes_break",
    "long_break",
    "light",
    "sweep",
    "only",
    "cpus",
    "smp",
    "bench",
    "bench_k",
    "bench_m",
    "bench_r",
];

/// Parses `cmdline`, calling `note` for every word it does not take.
pub fn parse<'a>(cmdline: &'a str, mut note: impl FnMut(Note<'a>)) -> Config {
    let mut config = Config::default();
    let mut workload = None;
    let mut kmr: [Option<u32>; 3] = [None; 3];
    for word in cmdline.split_ascii_whitespace() {
        let Some((key, value)) = word.split_once('=') else {
            note(Note::Ignored(word));
            continue;
        };
        match key {
            "expect_hv" => match value {
                "1" => config.expect_hv = ExpectHv::Yes,
                "0" => config.expect_hv = ExpectHv::No,
                _ => note(Note::BadValue { key, value }),
            },
            "ram_test_mib" => match value.parse::<u64>() {
                Ok(n) => config.ram_test_mib = Some(n),
                Err(_) => note(Note::BadValue { key, value }),
            },
            "crash" => match value {
                "ud" => config.crash = Some(Crash::Ud),
                "pf" => config.crash = Some(Crash::Pf),
                "panic" => config.crash = Some(Crash::Panic),
                "triple-fault" => config.crash = Some(Crash::TripleFault),
                _ => note(Note::BadValue { key, value }),
            },
            "modes" => match value {
                "1" => config.modes = Some(true),
                "0" => config.modes = Some(false),
                _ => note(Note::BadValue { key, value }),
            },
            "light" => match value {
                "1" => config.light = true,
                "0" => config.light = false,
                _ => note(Note::BadValue { key, value }),
            },
            "modes_break" => match value {
                "1" => config.modes_break = true,
                "0" => config.modes_break = false,
                _ => note(Note::BadValue { key, value }),
            },
            "long_break" => match value {
                "1" => config.long_break = true,
                "0" => config.long_break = false,
                _ => note(Note::BadValue { key, value }),
            },
            "sweep" => match value {
                "quick" => config.sweep_full = false,
                "full" => config.sweep_full = true,
                _ => note(Note::BadValue { key, value }),
            },
            "cpus" => match value.parse::<u32>() {
                Ok(n) if (1..=shared::acpi::MAX_CPUS as u32).contains(&n) => config.cpus = Some(n),
                _ => note(Note::BadValue { key, value }),
            },
            "smp" => match value {
                "1" => config.smp = true,
                "0" => config.smp = false,
                _ => note(Note::BadValue { key, value }),
            },
            "only" => match Only::new(value) {
                Some(o) => config.only = o,
                None => note(Note::BadValue { key, value }),
            },
            "bench" => match crate::bench::Workload::from_word(value) {
                Some(w) => workload = Some(w),
                None => note(Note::BadValue { key, value }),
            },
            "bench_k" | "bench_m" | "bench_r" => match value.parse::<u32>() {
                Ok(n) if n > 0 => kmr[["bench_k", "bench_m", "bench_r"].iter().position(|k| *k == key).unwrap_or(0)] = Some(n),
                _ => note(Note::BadValue { key, value }),
            },
            _ => note(Note::Ignored(word)),
        }
    }
    config.bench = workload.map(|w| crate::bench::Spec::new(w, kmr[0], kmr[1], kmr[2]));
    config
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_case::test_case;

    #[test_case("crash=ud", Some(Crash::Ud))]
    #[test_case("crash=pf", Some(Crash::Pf))]
    #[test_case("crash=panic", Some(Crash::Panic))]
    #[test_case("expect_hv=1", None)]
    fn crash(s: &str, want: Option<Crash>) {
        assert_eq!(parse(s, |_| {}).crash, want);
    }

    fn parse_collect(s: &str) -> (Config, Vec<Note<'_>>) {
        let mut notes = Vec::new();
        let c = parse(s, |n| notes.push(n));
        (c, notes)
    }

    #[test_case("", ExpectHv::Auto ; "empty")]
    #[test_case("expect_hv=1", ExpectHv::Yes ; "yes")]
    #[test_case("/boot/quadrant-guest expect_hv=0", ExpectHv::No ; "after the kernel path")]
    #[test_case("  expect_hv=0   expect_hv=1 ", ExpectHv::Yes ; "last word wins")]
    #[test_case("expect_hv=yes", ExpectHv::Auto ; "bad value keeps auto")]
    fn expect_hv(s: &str, want: ExpectHv) {
        assert_eq!(parse_collect(s).0.expect_hv, want);
    }

    #[test]
    fn notes_for_unknown_words_and_bad_values() {
        let (c, notes) = parse_collect("/k quiet foo=bar expect_hv=2 ram_test_mib=x ram_test_mib=16 crash=now");
        assert_eq!(c, Config { expect_hv: ExpectHv::Auto, ram_test_mib: Some(16), ..Config::default() });
        assert!(parse("modes_break=1", |_| {}).modes_break);
        assert!(parse("long_break=1", |_| {}).long_break && !parse("long_break=0", |_| {}).long_break);
        assert_eq!([parse("modes=0", |_| {}).modes, parse("modes=1", |_| {}).modes, parse("", |_| {}).modes], [Some(false), Some(true), None]);
        assert_eq!(
            notes,
            [
                Note::Ignored("/k"),
                Note::Ignored("quiet"),
                Note::Ignored("foo=bar"),
                Note::BadValue { key: "expect_hv", value: "2" },
                Note::BadValue { key: "ram_test_mib", value: "x" },
                Note::BadValue { key: "crash", value: "now" },
            ]
        );
    }

    #[test]
    fn bench_words() {
        use crate::bench::{Spec, Workload};
        assert_eq!(parse("", |_| {}).bench, None);
        assert_eq!(parse("bench_k=4", |_| {}).bench, None, "parameters alone select nothing");
        assert_eq!(parse("bench=ctxsw", |_| {}).bench, Some(Spec { workload: Workload::Ctxsw, k: 16, m: 64, r: 20 }));
        assert_eq!(
            parse("bench_r=5 bench=ctxsw bench_k=4 bench_m=128", |_| {}).bench,
            Some(Spec { workload: Workload::Ctxsw, k: 4, m: 128, r: 5 })
        );
        assert_eq!(parse("bench=modewalk", |_| {}).bench.map(|s| s.r), Some(3));
        let (c, notes) = parse_collect("bench=nope bench_k=0 bench_m=x bench=fork");
        assert_eq!(c.bench.map(|s| s.workload), Some(Workload::Fork));
        assert_eq!(
            notes,
            [
                Note::BadValue { key: "bench", value: "nope" },
                Note::BadValue { key: "bench_k", value: "0" },
                Note::BadValue { key: "bench_m", value: "x" },
            ]
        );
    }

    #[test]
    fn sweep_and_only() {
        assert!(!parse("", |_| {}).sweep_full);
        assert!(parse("sweep=full", |_| {}).sweep_full);
        assert!(!parse("sweep=full sweep=quick", |_| {}).sweep_full);
        let (c, notes) = parse_collect("sweep=all only= only=a,,b");
        assert_eq!(c, Config::default());
        assert_eq!(
            notes,
            [
                Note::BadValue { key: "sweep", value: "all" },
                Note::BadValue { key: "only", value: "" },
                Note::BadValue { key: "only", value: "a,,b" },
            ]
        );
        let only = parse("only=long/pt-write,cache/", |_| {}).only;
        assert_eq!(only.as_str(), "long/pt-write,cache/");
        for (name, want) in [
            ("boot/handoff", true),
            ("long/pt-write/np-to-p", true),
            ("cache/flood-unshadows", true),
            ("long/self-map", false),
            ("modes/walk1/real", false),
        ] {
            assert_eq!(only.selects(name), want, "{name}");
        }
        assert!(Only::all().selects("long/self-map"));
        let long = "x".repeat(Only::CAP + 1);
        assert_eq!(Only::new(&long), None);
    }
}
