//! The host side of the machine: boot-time CPU setup and the resources the
//! hypervisor owns.
//!
//! * [`cpu`]: instruction wrappers (the only inline asm outside VMX);
//! * [`descriptors`]: GDT, TSS and IDT with exception reporting;
//! * [`console`]: COM1 and the `log` logger;
//! * [`memory`]: physical memory planning (pure logic);
//! * [`phys`]: raw physical memory, wrapped in owning objects.

pub mod console;
pub mod cpu;
pub mod descriptors;
pub mod memory;
pub mod phys;
