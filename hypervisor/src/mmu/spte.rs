//! Bits of paging-structure entries (guest and shadow) and of the #PF error
//! code, SDM Vol. 3A 4.3-4.7. Shadow entries are always PAE / IA-32e format
//! (64-bit, 512 per frame).

/// Present.
pub const P: u64 = 1 << 0;
/// Read/write.
pub const RW: u64 = 1 << 1;
/// User/supervisor.
pub const US: u64 = 1 << 2;
/// Page-level write-through.
pub const PWT: u64 = 1 << 3;
/// Page-level cache disable.
pub const PCD: u64 = 1 << 4;
/// Accessed.
pub const A: u64 = 1 << 5;
/// Dirty (leaf entries).
pub const D: u64 = 1 << 6;
/// Page size (maps a large page) in a PDE / PDPTE.
pub const PS: u64 = 1 << 7;
/// Global.
pub const G: u64 = 1 << 8;
/// Execute-disable (bit 63, PAE and IA-32e with EFER.NXE = 1).
pub const XD: u64 = 1 << 63;

/// Frame address bits 51:12 of a 64-bit entry.
pub const ADDR_MASK_64: u64 = 0x000f_ffff_ffff_f000;

/// #PF error code: the fault was a protection violation (0 = not present).
pub const PFEC_P: u32 = 1 << 0;
/// #PF error code: the access was a write.
pub const PFEC_W: u32 = 1 << 1;
/// #PF error code: user-mode access.
pub const PFEC_U: u32 = 1 << 2;
/// #PF error code: a reserved bit was set in a paging-structure entry.
pub const PFEC_RSVD: u32 = 1 << 3;
/// #PF error code: instruction fetch (only reported when SMEP or PAE+NXE).
pub const PFEC_I: u32 = 1 << 4;

/// A shadow entry pointing at a lower shadow table: fully permissive, the
/// leaf carries the effective access (KVM style).
pub const fn nonleaf(child_hpa: u64) -> u64 {
    (child_hpa & ADDR_MASK_64) | P | RW | US | A
}

/// A PAE root entry (hardware PDPTE): only P and the address; bits 1, 2,
/// 5-8 and 63 are reserved (SDM Vol. 3A 4.4.1, Table 4-8).
pub const fn pae_root_entry(child_hpa: u64) -> u64 {
    (child_hpa & ADDR_MASK_64) | P
}

/// Frame address of a shadow entry.
pub const fn frame(spte: u64) -> u64 {
    spte & ADDR_MASK_64
}

/// Is the shadow entry present?
pub const fn present(spte: u64) -> bool {
    spte & P != 0
}
