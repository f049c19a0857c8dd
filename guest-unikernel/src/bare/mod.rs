//! The machine under the checks: instructions ([`cpu`]), physical memory
//! ([`phys`]), the mode-switch engine ([`modes`]), the long-mode probe
//! harness ([`long`]), long-mode paging from Rust ([`paging`]) and the
//! processors' APICs and AP start-up ([`smp`]), the only
//! modules of the binary with `unsafe` code; the
//! console, the IDT and exception handling, and [`machine::BareMachine`],
//! which implements the library's `Machine` with them.

pub mod console;
pub mod cpu;
pub mod long;
pub mod machine;
pub mod modes;
pub mod paging;
pub mod phys;
pub mod smp;
pub mod trap;
