//! The hypervisor command line (the Multiboot command line GRUB or QEMU
//! passes): space-separated `key=value` words. The first word may be the
//! kernel's path, which boot loaders prepend; it is skipped.
//!
//! | word | meaning | default |
//! |---|---|---|
//! | `guest_ram=SIZE` | guest RAM (`64M`, `1G`, bytes), 4 MiB..3 GiB, a multiple of 2 MiB | `64M` |
//! | `mmu=shadow\|ept` | shadow paging (the product) or EPT (the differential reference) | `shadow` |
//! | `cache=0\|1` | with `mmu=shadow`: keep shadow pages across CR3 loads (the cache), or drop every one at each CR3 load (the behaviour before the cache, for benchmarks) | `1` |
//! | `audit=0\|1` | run the MMU audit after every exit | `0` |
//! | `log=error\|warn\|info\|debug\|trace` | hypervisor log level | `info` |
//! | `max_exits=N` | stop the run as a timeout after N VM exits (0 = never) | `0` |
//! | `reboot=SECS` | at the end of a run no emulator ended (a test rig), reboot after SECS seconds (0..=86400) instead of halting with the result on screen | halt |
//! | `selftest=entry-failure` | prove the error path: enter with an invalid guest TR, which must be reported as a VM-entry failure naming `GUEST_TR_AR_BYTES` | off |

use crate::arch::memory::parse_size;
use core::fmt;

/// How guest-physical memory is translated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmuMode {
    /// Shadow page tables built by the hypervisor (no EPT needed).
    Shadow,
    /// Extended page tables with unrestricted guest: the reference run.
    Ept,
}

impl MmuMode {
    /// The word on the command line and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            MmuMode::Shadow => "shadow",
            MmuMode::Ept => "ept",
        }
    }
}

/// Deliberate failures that prove an error path end to end (used by
/// `cargo xtask test`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SelfTest {
    /// Enter the guest with an invalid TR access-rights field.
    EntryFailure,
}

/// The parsed command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Bytes of guest RAM.
    pub guest_ram: u64,
    /// Shadow paging or EPT.
    pub mmu: MmuMode,
    /// Shadow paging keeps its pages across CR3 loads (`cache=1`) or drops
    /// them all at each one (`cache=0`, `mmu::MmuConfig::cache`).
    pub cache: bool,
    /// Audit the MMU after every exit.
    pub audit: bool,
    /// Log level.
    pub log: log::LevelFilter,
    /// Exit budget (0 = unlimited).
    pub max_exits: u64,
    /// A deliberate failure to provoke, if any.
    pub selftest: Option<SelfTest>,
    /// Most vCPUs (one per host CPU); `None` = every host CPU.
    pub cpus: Option<usize>,
    /// Seconds to wait before rebooting at the end of a run on a machine
    /// (`None`: halt with the result on screen).
    pub reboot_after: Option<u32>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            guest_ram: 64 << 20,
            mmu: MmuMode::Shadow,
            cache: true,
            audit: false,
            log: log::LevelFilter::Info,
            max_exits: 0,
            selftest: None,
            cpus: None,
            reboot_after: None,
        }
    }
}

/// A word of the command line that could not be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// `key=value` with a value the key does not accept.
    BadValue {
        /// The key.
        key: &'static str,
        /// What the key accepts.
        expected: &'static str,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::BadValue { key, expected } => write!(f, "bad value for `{key}`: expected {expected}"),
        }
    }
}

impl Config {
    /// Parses the command line. Unknown keys are returned in `unknown` (the
    /// caller logs them) rather than rejected, so older and newer runners
    /// can share images.
    pub fn parse<'a>(cmdline: &'a str, mut unknown: impl FnMut(&'a str)) -> Result<Config, ConfigError> {
        let mut c = Config::default();
        for (i, word) in cmdline.split_ascii_whitespace().enumerate() {
            let Some((key, value)) = word.split_once('=') else {
                if i != 0 {
                    unknown(word);
                }
                continue;
            };
            match key {
                "guest_ram" => {
                    const E: ConfigError = ConfigError::BadValue {
                        key: "guest_ram",
                        expected: "a size between 4M and 3G that is a multiple of 2M (e.g. 64M)",
                    };
                    let v = parse_size(value).ok_or(E)?;
                    if !(4 << 20..=3 << 30).contains(&v) || v % (2 << 20) != 0 {
                        return Err(E);
                    }
                    c.guest_ram = v;
                }
                "mmu" => {
                    c.mmu = match value {
                        "shadow" => MmuMode::Shadow,
                        "ept" => MmuMode::Ept,
                        _ => return Err(ConfigError::BadValue { key: "mmu", expected: "`shadow` or `ept`" }),
                    }
                }
                "cache" => {
                    c.cache = match value {
                        "0" => false,
                        "1" => true,
                        _ => return Err(ConfigError::BadValue { key: "cache", expected: "0 or 1" }),
                    }
                }
                "audit" => {
                    c.audit = match value {
                        "0" => false,
                        "1" => true,
                        _ => return Err(ConfigError::BadValue { key: "audit", expected: "0 or 1" }),
                    }
                }
                "log" => {
                    c.log = value.parse().map_err(|_| ConfigError::BadValue {
                        key: "log",
                        expected: "error, warn, info, debug or trace",
                    })?
                }
                "max_exits" => {
                    c.max_exits = value
                        .parse()
                        .map_err(|_| ConfigError::BadValue { key: "max_exits", expected: "a number" })?
                }
                "cpus" => {
                    const E: ConfigError =
                        ConfigError::BadValue { key: "cpus", expected: "a number of CPUs from 1 to 16" };
                    let n: usize = value.parse().map_err(|_| E)?;
                    if !(1..=shared::acpi::MAX_CPUS).contains(&n) {
                        return Err(E);
                    }
                    c.cpus = Some(n);
                }
                "reboot" => {
                    let secs: u32 = value
                        .parse()
                        .ok()
                        .filter(|s| *s <= 86_400)
                        .ok_or(ConfigError::BadValue { key: "reboot", expected: "seconds from 0 to 86400" })?;
                    c.reboot_after = Some(secs);
                }
                "selftest" => {
                    c.selftest = match value {
                        "entry-failure" => Some(SelfTest::EntryFailure),
                        _ => return Err(ConfigError::BadValue { key: "selftest", expected: "`entry-failure`" }),
                    }
                }
                _ => unknown(word),
            }
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_case::test_case;

    #[test]
    fn defaults_and_kernel_path() {
        let mut unk = std::vec::Vec::new();
        let c = Config::parse("/boot/quadrant-hv", |w| unk.push(w)).unwrap();
        assert_eq!(c, Config::default());
        assert!(unk.is_empty());
    }

    #[test]
    fn every_key() {
        let c = Config::parse(
            "/boot/hv guest_ram=128M mmu=ept cache=0 audit=1 log=debug max_exits=1000 selftest=entry-failure cpus=2 reboot=30",
            |_| {},
        )
        .unwrap();
        assert_eq!(c.cpus, Some(2));
        assert_eq!(c.selftest, Some(SelfTest::EntryFailure));
        assert_eq!(c.guest_ram, 128 << 20);
        assert_eq!(c.mmu, MmuMode::Ept);
        assert!(!c.cache);
        assert!(c.audit);
        assert_eq!(c.log, log::LevelFilter::Debug);
        assert_eq!(c.max_exits, 1000);
        assert_eq!(c.reboot_after, Some(30));
    }

    #[test_case("guest_ram=3M", "guest_ram")]
    #[test_case("guest_ram=65M", "guest_ram")]
    #[test_case("guest_ram=4G", "guest_ram")]
    #[test_case("mmu=npt", "mmu")]
    #[test_case("audit=yes", "audit")]
    #[test_case("cache=no", "cache")]
    #[test_case("log=loud", "log")]
    #[test_case("cpus=0", "cpus")]
    #[test_case("cpus=17", "cpus")]
    #[test_case("reboot=soon", "reboot")]
    #[test_case("reboot=86401", "reboot")]
    fn bad_values_name_the_key(word: &str, key: &str) {
        let e = Config::parse(word, |_| {}).unwrap_err();
        assert!(std::format!("{e}").contains(key));
    }

    #[test]
    fn unknown_words_are_reported() {
        let mut unk = std::vec::Vec::new();
        Config::parse("/k foo=1 bar", |w| unk.push(w)).unwrap();
        assert_eq!(unk, ["foo=1", "bar"]);
    }
}
