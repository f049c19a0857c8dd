//! The guest unikernel's logic, kept free of instructions and raw memory so
//! that the host runs it under `cargo test`.
//!
//! The bare-metal binary (`main.rs`) supplies the machine: it implements
//! [`machine::Machine`] with real CPUID, MSR and control-register reads,
//! VMCALL and identity-mapped physical memory, and a console for
//! [`core::fmt::Write`]. Everything that decides what a check expects and
//! whether it held lives here:
//!
//! * [`bench`]: the benchmark workloads (`bench=`), apart from the checks;
//! * [`checks`]: the check registry, the context they share, one module per
//!   area (`boot/...`, `hv/...`), and the runner that reports each result;
//! * [`cmdline`]: the `key=value` words of the Multiboot command line;
//! * [`memmap`]: memory-map validation and the RAM-test plan;
//! * [`pattern`]: the RAM test's per-address patterns;
//! * [`regs`]: CR0, CR4 and IA32_EFER bits;
//! * [`report`]: result counting and the detail text buffer;
//! * [`sweep`]: the access sweep's model of the SDM and its case space;
//! * [`hv`]: recognising the hypervisor from CPUID;
//! * [`longcpu`]: the probe harness the long-mode scenarios need;
//! * [`modes`]: the mode-switch engine's programs, page tables and verdicts;
//! * [`long`]: 4-level address spaces built from Rust for the cache checks;
//! * [`trap`]: IDT gate encoding and the exception frame's layout;
//! * [`xlate`]: the report a failing translation check prints (the guest's
//!   and the shadow's entries on the walk);
//! * [`smp`]: the processors' shared slots, the jobs APs run, the SMP
//!   machine interface.
#![cfg_attr(not(test), no_std)]

pub mod bench;
pub mod checks;
pub mod cmdline;
pub mod hv;
pub mod long;
pub mod longcpu;
pub mod machine;
pub mod memmap;
pub mod modes;
pub mod pattern;
pub mod regs;
pub mod report;
pub mod smp;
pub mod sweep;
pub mod trap;
pub mod xlate;
