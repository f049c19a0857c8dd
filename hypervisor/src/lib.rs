//! Quadrant's hypervisor as a library: everything that can be tested on the
//! host lives here (the MMU core, VMCS field tables and decoders, the guest
//! image loader, command-line parsing); the bare-metal binary (`main.rs`)
//! adds boot, the heap and the VMX run loop.
//!
//! Module owners:
//! * [`mmu`]: the shadow page cache, pure logic over traits (no VMX, no asm,
//!   no unsafe);
//! * [`vmx`]: VMX capabilities, VMCS fields, VM entry/exit, exit decoding;
//!   all VMX `unsafe` lives here;
//! * [`vcpu`]: exit handling for one virtual CPU;
//! * [`vm`]: what the vCPUs share (guest RAM, the locked shadow page cache,
//!   run states, IPI delivery, remote TLB flushes);
//! * [`arch`]: boot-time CPU setup (GDT/IDT/TSS), serial log, physical memory;
//! * [`loader`]: validating a Multiboot guest image and loading it;
//! * [`config`]: the hypervisor command line;
//! * [`fatal`]: how a run ends (error and result lines, emulator exit).
//!
//! Unsafe code lives only in `arch::cpu`, `arch::console`,
//! `arch::descriptors`, `arch::phys` and `vmx::instr`; `vcpu` makes the two
//! calls into them that stay unsafe (entering the guest, reading an MSR).
#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod arch;
pub mod config;
pub mod fatal;
pub mod loader;
pub mod mmu;
pub mod vcpu;
pub mod vm;
pub mod vmx;
