//! The guest/hypervisor protocol of Quadrant.
//!
//! Both bare-metal sides (the hypervisor and the guest unikernel) and the host
//! runner (`xtask`) depend on this crate, so every constant, record layout and
//! text format that crosses a boundary is defined exactly once, here:
//!
//! * [`PROTOCOL_VERSION`], the CPUID signature the hypervisor answers with
//!   ([`cpuid`]), and the I/O ports of the exit conventions ([`ports`]);
//! * hypercall numbers and records passed by VMCALL ([`hypercall`]), and
//!   the benchmark's counter record ([`bench`]);
//! * the text lines on COM1 that the runner parses ([`line`]);
//! * the role values the guest suite promises to create ([`coverage`]);
//! * finding the processors (ACPI MADT, MP table) and the tables the
//!   hypervisor gives its guest ([`acpi`]); the local APIC's registers and
//!   interrupt command format ([`apic`]);
//! * what the hypervisor shows on a display, which the runner checks in a
//!   screendump ([`screen`]).
//!
//! The crate is `no_std` and allocation-free so the guest can use it before it
//! has a heap.
#![no_std]

pub mod acpi;
pub mod apic;
pub mod bench;
pub mod coverage;
pub mod cpuid;
pub mod hypercall;
pub mod line;
pub mod multiboot;
pub mod ports;
pub mod screen;
pub mod x86;

/// Version of the guest/hypervisor protocol. Bump it whenever a record layout,
/// hypercall number or line format changes; the guest refuses to use
/// hypercalls of a hypervisor that reports another version.
///
/// History: 1, the first protocol; 2, the role-coverage lines
/// (`line::ROLE_COVERAGE`) at the end of a hypervisor run; 3, the
/// `ShadowWalk` hypercall (4) and the `xlate` report lines
/// (`line::XLATE`); for SMP the `loaded_glevels` and `remote_flushes`
/// fields of [`hypercall::MmuStats`]; the BenchCounters hypercall (5,
/// `bench::BenchCounters`) and the `bench` console line.
pub const PROTOCOL_VERSION: u32 = 3;

/// Outcome of one self-check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Outcome {
    /// The architectural expectation held.
    Pass = 0,
    /// The architectural expectation did not hold.
    Fail = 1,
    /// The check could not run here (for example it needs the hypervisor);
    /// it counts neither as passed nor as failed.
    Skip = 2,
}

impl Outcome {
    /// The word used for this outcome in check lines.
    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Pass => "PASS",
            Outcome::Fail => "FAIL",
            Outcome::Skip => "SKIP",
        }
    }

    /// Parses the word used in check lines.
    pub fn from_word(word: &str) -> Option<Self> {
        match word {
            "PASS" => Some(Outcome::Pass),
            "FAIL" => Some(Outcome::Fail),
            "SKIP" => Some(Outcome::Skip),
            _ => None,
        }
    }

    /// Decodes the numeric form used in [`hypercall::CheckRecord`].
    pub const fn from_u32(v: u32) -> Option<Self> {
        match v {
            0 => Some(Outcome::Pass),
            1 => Some(Outcome::Fail),
            2 => Some(Outcome::Skip),
            _ => None,
        }
    }
}
