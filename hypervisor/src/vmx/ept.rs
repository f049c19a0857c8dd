//! Extended page tables (SDM Vol. 3C 29.3): the static identity map the
//! `mmu=ept` reference mode runs the guest on. Pure logic over the
//! [`EptTables`] trait, so the builder and its walker are host-tested; bare
//! metal implements the trait with frames from `arch::phys::FramePool`.
//!
//! The map: guest-physical `0..size` onto the host region backing guest RAM
//! (`ram_hpa..ram_hpa + size`), in 2 MiB leaves (EPT PDEs with bit 7, SDM
//! Vol. 3C 29.3.2, Table 29-4) with memory type WB and read/write/execute
//! access; nothing else is mapped, so any other guest-physical access is an
//! EPT violation (SDM Vol. 3C 29.3.3.2). The tables never change after they
//! are built, so INVEPT is never needed: guest-physical and combined
//! mappings are only ever created from these tables, and no EPTP is reused
//! with different contents (SDM Vol. 3C 29.4.3.1).

use core::fmt;

/// EPT entry bit 0: read access.
pub const READ: u64 = 1 << 0;
/// Bit 1: write access.
pub const WRITE: u64 = 1 << 1;
/// Bit 2: execute access (supervisor-mode linear addresses with mode-based
/// execute control; all accesses otherwise).
pub const EXECUTE: u64 = 1 << 2;
/// Bits 5:3 of a leaf: the EPT memory type (SDM Vol. 3C 29.3.7).
pub const MEMTYPE_SHIFT: u32 = 3;
/// Bit 7 of an EPT PDE or PDPTE: the entry maps a page (2 MiB / 1 GiB).
pub const LARGE: u64 = 1 << 7;
/// Memory type write-back (SDM Vol. 3A 12.3, Table 12-2).
pub const MEMTYPE_WB: u64 = 6;
/// Size of one leaf of the identity map.
pub const PAGE_2M: u64 = 2 << 20;
/// Bits 51:12 of an entry: the next table's (or page's) physical address.
const ADDR_MASK: u64 = 0x000F_FFFF_FFFF_F000;
/// Guest-physical span of one EPT PML4 (4-level walk, 48-bit GPAs).
const GPA_LIMIT: u64 = 1 << 48;

/// The EPT pointer for a 4-level walk of `pml4` with write-back paging-
/// structure accesses and no accessed/dirty flags (SDM Vol. 3C 25.6.11,
/// Table 25-9): bits 2:0 memory type (6 = WB), bits 5:3 walk length minus
/// one (3), bit 6 A/D enable (0), bits 51:12 the PML4 address.
pub const fn eptp(pml4: u64) -> u64 {
    (pml4 & ADDR_MASK) | (3 << 3) | MEMTYPE_WB
}

/// Storage for EPT paging structures: zeroed 4 KiB frames addressed by
/// host-physical address.
pub trait EptTables {
    /// A zeroed, 4 KiB-aligned frame, or `None` when none is left.
    fn alloc_table(&mut self) -> Option<u64>;
    /// Reads entry `index` (0..512) of the table at `table`.
    fn read_entry(&self, table: u64, index: usize) -> u64;
    /// Writes entry `index` (0..512) of the table at `table`.
    fn write_entry(&mut self, table: u64, index: usize, value: u64);
}

/// Why the identity map cannot be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EptError {
    /// Guest RAM size or its host base is not a multiple of 2 MiB.
    Unaligned { ram_hpa: u64, size: u64 },
    /// Guest RAM is empty or beyond what a 4-level walk maps.
    BadSize { size: u64 },
    /// The frame supply ran out after `used` tables.
    OutOfFrames { used: usize },
}

impl fmt::Display for EptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            EptError::Unaligned { ram_hpa, size } => write!(
                f,
                "guest RAM ({size:#x} bytes at host {ram_hpa:#x}) is not 2 MiB aligned, which the 2 MiB EPT leaves need"
            ),
            EptError::BadSize { size } => write!(f, "guest RAM of {size:#x} bytes cannot be mapped by a 4-level EPT"),
            EptError::OutOfFrames { used } => write!(f, "out of frames for the EPT tables after {used}"),
        }
    }
}

/// A built identity map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdentityEpt {
    /// Host-physical address of the EPT PML4.
    pub pml4: u64,
    /// The value for the EPT_POINTER VMCS field.
    pub eptp: u64,
    /// Guest-physical addresses `0..size` are mapped.
    pub size: u64,
    /// Paging-structure frames used.
    pub tables: usize,
}

/// Frames [`build_identity`] needs for `size` bytes of guest RAM: one PML4,
/// one PDPT per 512 GiB, one PD per GiB.
pub const fn tables_needed(size: u64) -> usize {
    let gib = size.div_ceil(1 << 30);
    let pdpts = size.div_ceil(1 << 39);
    (1 + pdpts + gib) as usize
}

/// Builds the identity map of guest-physical `0..size` onto host
/// `ram_hpa..ram_hpa + size` (SDM Vol. 3C 29.3.2: PML4Es and PDPTEs
/// reference the next table with R/W/X all set, so the leaf alone decides
/// access; PDEs with bit 7 map 2 MiB with memory type WB and "ignore PAT"
/// clear, Tables 29-1 to 29-4).
pub fn build_identity<T: EptTables>(t: &mut T, ram_hpa: u64, size: u64) -> Result<IdentityEpt, EptError> {
    if size == 0 || size > GPA_LIMIT || ram_hpa.checked_add(size).is_none_or(|e| e > GPA_LIMIT) {
        return Err(EptError::BadSize { size });
    }
    if !size.is_multiple_of(PAGE_2M) || !ram_hpa.is_multiple_of(PAGE_2M) {
        return Err(EptError::Unaligned { ram_hpa, size });
    }
    let mut used = 0usize;
    let pml4 = alloc(t, &mut used)?;
    let mut gpa = 0;
    while gpa < size {
        let pdpt = next_table(t, pml4, index(gpa, 39), &mut used)?;
        let pd = next_table(t, pdpt, index(gpa, 30), &mut used)?;
        let leaf = (ram_hpa + gpa) | (MEMTYPE_WB << MEMTYPE_SHIFT) | LARGE | READ | WRITE | EXECUTE;
        t.write_entry(pd, index(gpa, 21), leaf);
        gpa += PAGE_2M;
    }
    Ok(IdentityEpt { pml4, eptp: eptp(pml4), size, tables: used })
}

/// The 9-bit table index of `gpa` at the level whose entries span `1 << shift`.
const fn index(gpa: u64, shift: u32) -> usize {
    ((gpa >> shift) & 511) as usize
}

fn alloc<T: EptTables>(t: &mut T, used: &mut usize) -> Result<u64, EptError> {
    let f = t.alloc_table().ok_or(EptError::OutOfFrames { used: *used })?;
    *used += 1;
    Ok(f)
}

/// The table entry `index` of `table` points to, allocated on first use.
fn next_table<T: EptTables>(t: &mut T, table: u64, index: usize, used: &mut usize) -> Result<u64, EptError> {
    let e = t.read_entry(table, index);
    if e & READ != 0 {
        return Ok(e & ADDR_MASK);
    }
    let f = alloc(t, used)?;
    t.write_entry(table, index, f | READ | WRITE | EXECUTE);
    Ok(f)
}

/// What an EPT walk of `gpa` finds (SDM Vol. 3C 29.3.2): the host-physical
/// address and the R/W/X rights of the leaf, or `None` when an entry on the
/// way is not present (bits 2:0 clear: an EPT violation).
pub fn translate<T: EptTables>(t: &T, eptp: u64, gpa: u64) -> Option<(u64, u64)> {
    if gpa >= GPA_LIMIT {
        return None;
    }
    let mut table = eptp & ADDR_MASK;
    for shift in [39, 30, 21, 12] {
        let e = t.read_entry(table, index(gpa, shift));
        if e & (READ | WRITE | EXECUTE) == 0 {
            return None;
        }
        let rights = e & (READ | WRITE | EXECUTE);
        if shift == 12 || (shift < 39 && e & LARGE != 0) {
            let page_mask = (1u64 << shift) - 1;
            return Some(((e & ADDR_MASK & !page_mask) | (gpa & page_mask), rights));
        }
        table = e & ADDR_MASK;
    }
    None
}

/// The EPT features this identity map relies on, from IA32_VMX_EPT_VPID_CAP
/// (SDM Vol. 3D A.10): a 4-level walk (bit 6), write-back paging structures
/// (bit 14) and 2 MiB pages (bit 16). Returns the first one missing.
pub fn missing_capability(ept_vpid_cap: Option<u64>) -> Option<&'static str> {
    let Some(c) = ept_vpid_cap else {
        return Some("IA32_VMX_EPT_VPID_CAP (no EPT)");
    };
    [(6, "4-level EPT page walk (EPT_VPID_CAP bit 6)"), (14, "write-back EPT paging structures (EPT_VPID_CAP bit 14)"), (16, "2 MiB EPT pages (EPT_VPID_CAP bit 16)")]
        .into_iter()
        .find(|(bit, _)| c & (1 << bit) == 0)
        .map(|(_, name)| name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Frames in a map, handed out from a fake host-physical base.
    struct Fake {
        next: u64,
        limit: usize,
        tables: HashMap<u64, [u64; 512]>,
    }

    impl Fake {
        fn new(limit: usize) -> Self {
            Fake { next: 0x7000_0000, limit, tables: HashMap::new() }
        }
    }

    impl EptTables for Fake {
        fn alloc_table(&mut self) -> Option<u64> {
            if self.tables.len() == self.limit {
                return None;
            }
            let f = self.next;
            self.next += 0x1000;
            self.tables.insert(f, [0; 512]);
            Some(f)
        }
        fn read_entry(&self, table: u64, index: usize) -> u64 {
            self.tables[&table][index]
        }
        fn write_entry(&mut self, table: u64, index: usize, value: u64) {
            self.tables.get_mut(&table).unwrap()[index] = value;
        }
    }

    const RAM: u64 = 0x0400_0000; // 64 MiB at host 0x4000_0000

    #[test]
    fn eptp_is_four_level_write_back() {
        assert_eq!(eptp(0x12_3000), 0x12_301E);
        assert_eq!(eptp(0x12_3000) & 7, 6, "WB");
        assert_eq!((eptp(0x12_3000) >> 3) & 7, 3, "walk length 4 - 1");
        assert_eq!(eptp(0x12_3000) & (1 << 6), 0, "no A/D flags");
    }

    #[test]
    fn identity_map_entries() {
        let mut f = Fake::new(8);
        let e = build_identity(&mut f, 0x4000_0000, RAM).unwrap();
        assert_eq!(e.tables, 3, "PML4, one PDPT, one PD");
        assert_eq!(e.tables, tables_needed(RAM));
        assert_eq!(e.eptp, e.pml4 | 0x1E);
        let pml4e = f.read_entry(e.pml4, 0);
        assert_eq!(pml4e & 7, 7, "PML4E is RWX");
        assert_eq!(pml4e & LARGE, 0);
        let pdpt = pml4e & ADDR_MASK;
        let pd = f.read_entry(pdpt, 0) & ADDR_MASK;
        for i in 0..32 {
            let leaf = f.read_entry(pd, i);
            assert_eq!(leaf, (0x4000_0000 + i as u64 * PAGE_2M) | 0x80 | (6 << 3) | 7, "PDE {i}");
        }
        assert_eq!(f.read_entry(pd, 32), 0, "nothing past guest RAM");
        assert_eq!(f.read_entry(e.pml4, 1), 0);
        assert_eq!(f.read_entry(pdpt, 1), 0);
    }

    #[test]
    fn walk_bounds() {
        let mut f = Fake::new(8);
        let e = build_identity(&mut f, 0x4000_0000, RAM).unwrap();
        assert_eq!(translate(&f, e.eptp, 0), Some((0x4000_0000, 7)));
        assert_eq!(translate(&f, e.eptp, 0x1234_5678 % RAM), Some((0x4000_0000 + 0x1234_5678 % RAM, 7)));
        assert_eq!(translate(&f, e.eptp, RAM - 1), Some((0x4000_0000 + RAM - 1, 7)));
        assert_eq!(translate(&f, e.eptp, RAM), None, "first byte past RAM");
        assert_eq!(translate(&f, e.eptp, 0xFEE0_0000), None, "APIC page");
        assert_eq!(translate(&f, e.eptp, 1 << 40), None);
        assert_eq!(translate(&f, e.eptp, u64::MAX), None);
    }

    #[test]
    fn several_gib_use_one_pd_each() {
        let size = 5 << 30;
        let mut f = Fake::new(16);
        let e = build_identity(&mut f, 0x2_0000_0000, size).unwrap();
        assert_eq!(e.tables, 7);
        assert_eq!(tables_needed(size), 7);
        assert_eq!(translate(&f, e.eptp, size - 0x1000), Some((0x2_0000_0000 + size - 0x1000, 7)));
        assert_eq!(translate(&f, e.eptp, size), None);
    }

    #[test]
    fn errors() {
        assert_eq!(build_identity(&mut Fake::new(8), 0x4000_0000, 0), Err(EptError::BadSize { size: 0 }));
        assert_eq!(
            build_identity(&mut Fake::new(8), 0x4000_1000, RAM),
            Err(EptError::Unaligned { ram_hpa: 0x4000_1000, size: RAM })
        );
        assert_eq!(
            build_identity(&mut Fake::new(8), 0x4000_0000, RAM + 0x1000),
            Err(EptError::Unaligned { ram_hpa: 0x4000_0000, size: RAM + 0x1000 })
        );
        assert_eq!(build_identity(&mut Fake::new(2), 0, 2 << 30), Err(EptError::OutOfFrames { used: 2 }));
    }

    #[test]
    fn capabilities() {
        // Bochs corei7_skylake_x's EPT_VPID_CAP.
        assert_eq!(missing_capability(Some(0x0000_0f01_0631_4141)), None);
        assert_eq!(missing_capability(None), Some("IA32_VMX_EPT_VPID_CAP (no EPT)"));
        assert!(missing_capability(Some(0x0000_0f01_0630_4141)).unwrap().contains("2 MiB"));
        assert!(missing_capability(Some(0x0000_0f01_0631_4101)).unwrap().contains("4-level"));
        assert!(missing_capability(Some(0x0000_0f01_0631_0141)).unwrap().contains("write-back"));
    }
}
