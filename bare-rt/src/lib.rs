//! Bare-metal runtime shared by Quadrant's two kernels (the hypervisor and the
//! guest unikernel), both `#![no_std] #![no_main]` binaries built for the
//! host's `x86_64-unknown-linux-gnu` target with stable Rust (FACTS.md):
//!
//! * [`boot`]: the Multiboot 1 header (a.out kludge, so GRUB and QEMU's
//!   `-kernel` both load the ELF64 image) and a Multiboot 2 header with the
//!   same load addresses (GRUB's `multiboot2`, the UEFI path), the 32-bit
//!   entry that clears .bss,
//!   records the hand-off state, builds identity page tables for the low
//!   4 GiB, enables SSE and long mode, and calls the binary's
//!   `quadrant_kernel_main(magic, info)`;
//! * [`libc`]: `memcpy` and friends (the target's `compiler_builtins` does not
//!   export them) and the two unwinding symbols the prebuilt `core` references;
//! * [`smp`]: the application-processor trampoline (real mode to long mode,
//!   then the binary's `quadrant_ap_main(ticket, page)`);
//! * [`apic`]: this CPU's local APIC (xAPIC or x2APIC) and MSR access;
//! * [`exit`]: ending the emulator with a status, the same way on QEMU and
//!   Bochs;
//! * `linker.ld` beside this crate: the one-segment layout at 1 MiB.
//!
//! A binary uses it with `use bare_rt as _;` and passes the linker script
//! from its build script with `cargo:rustc-link-arg-bins`, so `cargo test`
//! of the same package never links any of this.
#![no_std]

pub mod apic;
pub mod boot;
pub mod exit;
pub mod libc;
pub mod port;
pub mod smp;
