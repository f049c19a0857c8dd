//! The low window the mode-switch engine runs in, and the tables it needs
//! there: everything real mode must reach lies below 64 KiB, so one
//! segment base of 0 covers it (SDM Vol. 3A 21.1.1 "Address Translation in
//! Real-Address Mode").
//!
//! ```text
//! 0x1000  GDT, pseudo-descriptors, IVT, 32-bit IDT, 64-bit IDT, engine vars
//! 0x1c00  real-mode data (patterns the real-mode probes read)
//! 0x2000  stop count, then the stops (32 bytes each)
//! 0x2400  probe ops (16 bytes each)
//! 0x4000  probe results (24 bytes each); a failure report's short
//!         program puts its ShadowWalk records at 0x5800
//! 0x6800  the engine's code (copied from the image), stack below 0x8000
//! ```
//!
//! The window stays clear of the Multiboot information the hypervisor puts
//! at 0x8000..0xA000; QEMU and GRUB put theirs elsewhere, and
//! `checks::modes` refuses to run when the memory map or the Multiboot
//! structures say the window is not free RAM. This module holds only
//! numbers and encoders; the binary's `bare::modes` copies and runs.

use crate::machine::Range;

/// First byte of the window.
pub const LOW_START: u64 = 0x1000;
/// One past the last byte of the window (the stack top).
pub const LOW_END: u64 = 0x8000;
/// The window as a range.
pub const LOW: Range = Range::new(LOW_START, LOW_END);

/// The guest-owned GDT.
pub const GDT: u64 = 0x1000;
/// GDTR pseudo-descriptor (limit u16, base u64): LGDT reads 6 bytes in
/// 16/32-bit code (with an operand-size prefix in 16-bit code) and 10 in
/// 64-bit code (SDM Vol. 2A LGDT).
pub const GDTR_PD: u64 = 0x1040;
/// IDTR pseudo-descriptor of the 32-bit IDT.
pub const IDTR32_PD: u64 = 0x1050;
/// IDTR pseudo-descriptor of the 64-bit IDT.
pub const IDTR64_PD: u64 = 0x1060;
/// IDTR pseudo-descriptor of the real-mode IVT.
pub const IVT_PD: u64 = 0x1070;
/// The real-mode interrupt vector table (4 bytes per vector; SDM Vol. 3A
/// 21.1.4: LIDT moves it, as here, away from address 0).
pub const IVT: u64 = 0x1100;
/// The 32-bit IDT (8-byte gates, SDM Vol. 3A 6.11).
pub const IDT32: u64 = 0x1200;
/// The 64-bit IDT (16-byte gates, SDM Vol. 3A 6.14.1).
pub const IDT64: u64 = 0x1400;
/// Exception vectors with a gate in every table.
pub const VECTORS: usize = 32;

/// Engine variables (written by the engine only).
pub const VARS: u64 = 0x1800;
/// Saved RSP of the Rust caller.
pub const V_RSP: u64 = VARS;
/// Saved CR0, CR3, CR4 (8 bytes each).
pub const V_CR0: u64 = VARS + 0x08;
#[allow(missing_docs)]
pub const V_CR3: u64 = VARS + 0x10;
#[allow(missing_docs)]
pub const V_CR4: u64 = VARS + 0x18;
/// Saved GDTR and IDTR (10 bytes each, 16 reserved).
pub const V_GDTR: u64 = VARS + 0x20;
#[allow(missing_docs)]
pub const V_IDTR: u64 = VARS + 0x30;
/// The stop being run (address).
pub const V_STOP: u64 = VARS + 0x40;
/// The result slot of the op being run (address).
pub const V_RESULT: u64 = VARS + 0x44;
/// The op being run (address).
pub const V_OP: u64 = VARS + 0x48;
/// Ops left in this stop.
pub const V_LEFT: u64 = VARS + 0x4c;
/// Stack pointer the fault handlers go back to (8 bytes).
pub const V_RECOVER: u64 = VARS + 0x50;
/// Saved IA32_EFER (8 bytes).
pub const V_EFER: u64 = VARS + 0x58;
/// Saved CS, SS, DS selectors (2 bytes each).
pub const V_CS: u64 = VARS + 0x60;
#[allow(missing_docs)]
pub const V_SS: u64 = VARS + 0x62;
#[allow(missing_docs)]
pub const V_DS: u64 = VARS + 0x64;

/// Real-mode data: 1 KiB of patterns written before each run.
pub const REAL_DATA: u64 = 0x1c00;
/// Bytes of real-mode data.
pub const REAL_DATA_LEN: u64 = 0x400;
/// A PAE PDPT in the last 32 bytes of the real-mode data (32-byte aligned,
/// below 1 MiB, so real mode can edit it; SDM Vol. 3A 4.4.1).
pub const REAL_PDPT: u64 = REAL_DATA + REAL_DATA_LEN - 32;

/// Stops left to run (u32), decremented by the engine.
pub const STOP_COUNT: u64 = 0x2000;
/// The first stop.
pub const STOPS: u64 = 0x2010;
/// Bytes per stop.
pub const STOP_SIZE: u64 = 32;
/// Most stops per run.
pub const MAX_STOPS: usize = ((OPS - STOPS) / STOP_SIZE) as usize;
/// The first op.
pub const OPS: u64 = 0x2400;
/// Bytes per op.
pub const OP_SIZE: u64 = 16;
/// The first result.
pub const RESULTS: u64 = 0x4000;
/// Bytes per result.
pub const RESULT_SIZE: u64 = 24;
/// Most ops per run (limited by both areas).
pub const MAX_OPS: usize = {
    let by_ops = (RESULTS - OPS) / OP_SIZE;
    let by_results = (BLOB_BASE - RESULTS) / RESULT_SIZE;
    (if by_ops < by_results { by_ops } else { by_results }) as usize
};
/// Where a failure report's short program ([`crate::modes::engine::shadow_walks`])
/// has the hypervisor put its `ShadowWalk` records: inside the results
/// area, past the few result slots such a program uses.
pub const WALK_RECORDS: u64 = 0x5800;
/// Most `ShadowWalk` records of one such program.
pub const MAX_WALKS: usize = 8;
/// Where the engine's code is copied.
pub const BLOB_BASE: u64 = 0x6800;
/// Most bytes of engine code (the stack needs the rest).
pub const BLOB_MAX: u64 = 0x1000;
/// The stack top in every mode (SS base 0).
pub const STACK_TOP: u64 = LOW_END;

// The areas fit and do not overlap, and the stack ends below the
// hypervisor's Multiboot information at 0x8000.
const _: () = {
    assert!(IDT64 + 16 * VECTORS as u64 <= VARS);
    assert!(VARS + 0x70 <= REAL_DATA && REAL_DATA + REAL_DATA_LEN <= STOP_COUNT);
    assert!(REAL_PDPT.is_multiple_of(32) && !REAL_PDPT.is_multiple_of(0x1000));
    assert!(STOPS + STOP_SIZE * MAX_STOPS as u64 <= OPS);
    assert!(OPS + OP_SIZE * MAX_OPS as u64 <= RESULTS);
    assert!(RESULTS + RESULT_SIZE * MAX_OPS as u64 <= BLOB_BASE);
    assert!(RESULTS + RESULT_SIZE * MAX_WALKS as u64 <= WALK_RECORDS);
    assert!(WALK_RECORDS + (MAX_WALKS * shared::hypercall::ShadowWalkRecord::SIZE) as u64 <= BLOB_BASE);
    assert!(BLOB_BASE + BLOB_MAX < STACK_TOP && STACK_TOP <= 0x8000);
};

/// 64-bit code selector of the guest-owned GDT. 0x08 and 0x10 match
/// bare-rt's boot GDT, so leaving and re-entering 64-bit mode keeps the
/// selectors the Rust code runs with.
pub const SEL_CODE64: u16 = 0x08;
/// Flat 32-bit data, 4 GiB limit.
pub const SEL_DATA32: u16 = 0x10;
/// Flat 32-bit code, 4 GiB limit.
pub const SEL_CODE32: u16 = 0x18;
/// 16-bit code, base 0, limit 0xFFFF (SDM Vol. 3A 10.9.2 step 3).
pub const SEL_CODE16: u16 = 0x20;
/// 16-bit data, base 0, limit 0xFFFF, byte granular, expand-up, writable
/// (SDM Vol. 3A 10.9.2 step 4).
pub const SEL_DATA16: u16 = 0x28;

/// The GDT's descriptors (SDM Vol. 3A 3.4.5, Figure 3-8): index = selector / 8.
pub const GDT_ENTRIES: [u64; 6] = [
    0,
    0x00AF_9A00_0000_FFFF, // 64-bit code: L=1, D=0, P, DPL 0, execute/read
    0x00CF_9200_0000_FFFF, // 32-bit data: G=1, B=1, read/write
    0x00CF_9A00_0000_FFFF, // 32-bit code: G=1, D=1, execute/read
    0x0000_9A00_0000_FFFF, // 16-bit code: G=0, D=0, limit 0xFFFF
    0x0000_9200_0000_FFFF, // 16-bit data: G=0, B=0, limit 0xFFFF
];

/// Where the engine blob's pieces are, as offsets from its start (read
/// from the header the binary's assembly puts first in the blob).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineInfo {
    /// Bytes of the blob.
    pub len: u32,
    /// The 64-bit entry (`extern "C" fn()`).
    pub entry: u32,
    /// The real-mode exception stubs, 16 bytes apart.
    pub stubs16: u32,
    /// The 32-bit exception stubs, 16 bytes apart.
    pub stubs32: u32,
    /// The 64-bit exception stubs, 16 bytes apart.
    pub stubs64: u32,
}

/// Bytes between two exception stubs.
pub const STUB_STRIDE: u64 = 16;

impl EngineInfo {
    /// The linear address of stub `v` of the family at `family` (an
    /// offset), once the blob is at [`BLOB_BASE`].
    pub const fn stub(family: u32, v: usize) -> u64 {
        BLOB_BASE + family as u64 + STUB_STRIDE * v as u64
    }
}

/// A 32-bit interrupt gate with DPL 0 (SDM Vol. 3A 6.11, Figure 6-2):
/// offset 15:0, selector, type 0xE (32-bit interrupt gate), P; offset 31:16.
pub const fn gate32(offset: u32, selector: u16) -> u64 {
    let low = (offset & 0xFFFF) as u64 | ((selector as u64) << 16);
    let high = (offset & 0xFFFF_0000) as u64 | 0x8E00;
    low | (high << 32)
}

/// A real-mode IVT entry: offset in the low word, segment in the high word
/// (SDM Vol. 3A 21.1.4, Figure 21-2).
pub const fn ivt_entry(segment: u16, offset: u16) -> u32 {
    ((segment as u32) << 16) | offset as u32
}

/// A pseudo-descriptor: limit (u16) then base (u64).
pub fn pseudo_descriptor(limit: u16, base: u64) -> [u8; 10] {
    let mut b = [0u8; 10];
    b[..2].copy_from_slice(&limit.to_le_bytes());
    b[2..].copy_from_slice(&base.to_le_bytes());
    b
}

/// The page at [`GDT`]: the GDT, the pseudo-descriptors, the IVT and both
/// IDTs with gates to the engine's stubs. Engine variables start zero.
pub fn tables_page(e: &EngineInfo) -> [u8; 0xc00] {
    let mut p = [0u8; 0xc00];
    let at = |a: u64| (a - GDT) as usize;
    for (i, d) in GDT_ENTRIES.iter().enumerate() {
        p[at(GDT) + 8 * i..][..8].copy_from_slice(&d.to_le_bytes());
    }
    let pd = |p: &mut [u8], a: u64, limit: usize, base: u64| {
        p[at(a)..][..10].copy_from_slice(&pseudo_descriptor(limit as u16, base));
    };
    pd(&mut p, GDTR_PD, GDT_ENTRIES.len() * 8 - 1, GDT);
    pd(&mut p, IDTR32_PD, VECTORS * 8 - 1, IDT32);
    pd(&mut p, IDTR64_PD, VECTORS * 16 - 1, IDT64);
    pd(&mut p, IVT_PD, VECTORS * 4 - 1, IVT);
    for v in 0..VECTORS {
        let s16 = EngineInfo::stub(e.stubs16, v);
        p[at(IVT) + 4 * v..][..4].copy_from_slice(&ivt_entry(0, s16 as u16).to_le_bytes());
        let s32 = EngineInfo::stub(e.stubs32, v);
        p[at(IDT32) + 8 * v..][..8].copy_from_slice(&gate32(s32 as u32, SEL_CODE32).to_le_bytes());
        let [lo, hi] = crate::trap::interrupt_gate(EngineInfo::stub(e.stubs64, v), SEL_CODE64, 0);
        p[at(IDT64) + 16 * v..][..8].copy_from_slice(&lo.to_le_bytes());
        p[at(IDT64) + 16 * v + 8..][..8].copy_from_slice(&hi.to_le_bytes());
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacities() {
        assert_eq!((MAX_STOPS, MAX_OPS), (31, 426));
    }

    #[test]
    fn gates_and_ivt() {
        // 32-bit interrupt gate to 0x12345678 through selector 0x18.
        assert_eq!(gate32(0x1234_5678, 0x18), 0x1234_8E00_0018_5678);
        assert_eq!(ivt_entry(0, 0x6010), 0x0000_6010);
        assert_eq!(ivt_entry(0xF000, 0xFF53), 0xF000_FF53);
        assert_eq!(pseudo_descriptor(0x2f, 0x1000), [0x2f, 0, 0, 0x10, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn tables_page_contents() {
        let e = EngineInfo { len: 0x800, entry: 0x20, stubs16: 0x100, stubs32: 0x300, stubs64: 0x500 };
        let p = tables_page(&e);
        let q = |a: u64| u64::from_le_bytes(p[(a - GDT) as usize..][..8].try_into().unwrap());
        assert_eq!(q(GDT + 8 * 3), 0x00CF_9A00_0000_FFFF);
        assert_eq!(q(GDTR_PD) & 0xFFFF, 0x2f);
        assert_eq!(q(IDTR32_PD + 2), IDT32);
        // Vector 14's 32-bit gate goes to stub 14 of the 32-bit family.
        assert_eq!(q(IDT32 + 8 * 14), gate32((BLOB_BASE + 0x300 + 16 * 14) as u32, SEL_CODE32));
        let ivt13 = u32::from_le_bytes(p[(IVT - GDT) as usize + 4 * 13..][..4].try_into().unwrap());
        assert_eq!(ivt13, (BLOB_BASE + 0x100 + 16 * 13) as u32);
        assert_eq!(q(IDT64 + 16 * 2) & 0xFFFF, (BLOB_BASE + 0x500 + 32) & 0xFFFF);
    }
}
