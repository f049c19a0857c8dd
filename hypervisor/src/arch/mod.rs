//! The host side of the machine: boot-time CPU setup and the resources the
//! hypervisor owns.
//!
//! * [`bootinfo`]: the Multiboot 1 or 2 hand-over as one `BootInfo`;
//! * [`cpu`]: instruction wrappers (the only inline asm outside VMX);
//! * [`descriptors`]: GDT, TSS and IDT with exception reporting;
//! * [`console`]: COM1 and the `log` logger;
//! * [`memory`]: physical memory planning (pure logic);
//! * [`phys`]: raw physical memory, wrapped in owning objects;
//! * [`screen`]: the display (framebuffer or VGA text): log, status line and
//!   the end-of-run banner.

pub mod bootinfo;
pub mod console;
pub mod cpu;
pub mod descriptors;
pub mod memory;
pub mod phys;
pub mod screen;
