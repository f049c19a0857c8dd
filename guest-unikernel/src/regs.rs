//! Architectural register bits the checks load and compare: CR0, CR4
//! (SDM Vol. 3A 2.5 "Control Registers") and IA32_EFER (SDM Vol. 3A 2.2.1).

/// CR0.PE: protected mode.
pub const CR0_PE: u64 = 1 << 0;
/// CR0.WP: supervisor writes honour read-only pages (SDM Vol. 3A 4.6.1).
pub const CR0_WP: u64 = 1 << 16;
/// CR0.PG: paging.
pub const CR0_PG: u64 = 1 << 31;
/// CR4.PSE: 4 MiB pages in 32-bit paging.
pub const CR4_PSE: u64 = 1 << 4;
/// CR4.PAE: PAE (and, with EFER.LME, 4-level) paging.
pub const CR4_PAE: u64 = 1 << 5;
/// CR4.PGE: global pages (SDM Vol. 3A 4.10.2.4).
pub const CR4_PGE: u64 = 1 << 7;
/// CR4.SMEP: no supervisor fetches from user pages (SDM Vol. 3A 4.6.1).
pub const CR4_SMEP: u64 = 1 << 20;
/// CR4.SMAP: no supervisor data accesses to user pages unless EFLAGS.AC=1.
pub const CR4_SMAP: u64 = 1 << 21;
/// CR4.OSFXSR: FXSAVE/FXRSTOR and SSE enabled.
pub const CR4_OSFXSR: u64 = 1 << 9;
/// CR4.OSXMMEXCPT: unmasked SIMD floating-point exceptions.
pub const CR4_OSXMMEXCPT: u64 = 1 << 10;
/// IA32_EFER's MSR index.
pub const MSR_EFER: u32 = 0xC000_0080;
/// IA32_EFER.LME: IA-32e mode enable.
pub const EFER_LME: u64 = 1 << 8;
/// IA32_EFER.LMA: IA-32e mode active.
pub const EFER_LMA: u64 = 1 << 10;
/// IA32_EFER.NXE: execute-disable (bit 63 of paging entries) enabled.
pub const EFER_NXE: u64 = 1 << 11;
