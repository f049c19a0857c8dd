//! The machine under the checks: instructions ([`cpu`]) and physical memory
//! ([`phys`]), the only modules of the binary with `unsafe` code; the
//! console, the IDT and exception handling, and [`machine::BareMachine`],
//! which implements the library's `Machine` with them.

pub mod console;
pub mod cpu;
pub mod machine;
pub mod phys;
pub mod trap;
