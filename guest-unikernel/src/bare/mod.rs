//! The machine under the checks: instructions ([`cpu`]), physical memory
//! ([`phys`]) and the mode-switch engine ([`modes`]), the only modules of the
//! binary with `unsafe` code; the
//! console, the IDT and exception handling, and [`machine::BareMachine`],
//! which implements the library's `Machine` with them.

pub mod console;
pub mod cpu;
pub mod machine;
pub mod modes;
pub mod phys;
pub mod trap;
