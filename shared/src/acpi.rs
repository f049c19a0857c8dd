//! Finding the processors of a PC: the ACPI MADT (ACPI 6.5 5.2.5 RSDP,
//! 5.2.7 RSDT, 5.2.8 XSDT, 5.2.12 MADT) or, where there is no ACPI, the
//! Intel MultiProcessor Specification tables (MP spec 1.4 chapter 4), and
//! the small ACPI table set the hypervisor gives its guest (an RSDP, an RSDT
//! and a MADT listing one local APIC per vCPU).
//!
//! Both kernels use it: the hypervisor counts the host CPUs it starts, the
//! guest the CPUs it starts (the BIOS's tables bare, the hypervisor's under
//! Quadrant). Everything reads through [`PhysRead`], so the host tests build
//! tables in a byte slice.

use crate::multiboot::PhysRead;

/// Most CPUs Quadrant handles (host CPUs and vCPUs alike).
pub const MAX_CPUS: usize = 16;

/// The local APIC's default physical address (SDM Vol. 3A 11.4.1).
pub const LAPIC_DEFAULT_BASE: u64 = 0xFEE0_0000;

/// Where the processor list came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuSource {
    /// The ACPI MADT (through the RSDT or XSDT).
    AcpiMadt,
    /// The MP configuration table.
    MpTable,
}

/// The enabled processors' local APIC IDs, in table order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuList {
    /// APIC IDs of the usable processors (first `count`).
    pub apic_ids: [u32; MAX_CPUS],
    /// How many are listed.
    pub count: usize,
    /// Processors the table listed beyond [`MAX_CPUS`] (not started).
    pub dropped: usize,
    /// The local APIC address the table gives.
    pub lapic_base: u64,
    /// Which table it came from.
    pub source: CpuSource,
}

impl CpuList {
    /// The listed APIC IDs.
    pub fn ids(&self) -> &[u32] {
        &self.apic_ids[..self.count]
    }

    fn empty(source: CpuSource, lapic_base: u64) -> Self {
        CpuList { apic_ids: [0; MAX_CPUS], count: 0, dropped: 0, lapic_base, source }
    }

    fn push(&mut self, id: u32) {
        if self.ids().contains(&id) {
            return;
        }
        if self.count < MAX_CPUS {
            self.apic_ids[self.count] = id;
            self.count += 1;
        } else {
            self.dropped += 1;
        }
    }
}

/// Why no processor list was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcpiError {
    /// Neither an RSDP nor an MP floating pointer in the BIOS areas.
    NoTables,
    /// A table at this address has a bad signature, length or checksum.
    BadTable(u64),
    /// The RSDT/XSDT lists no MADT (and there is no MP table).
    NoMadt,
    /// The table lists no enabled processor.
    NoProcessors,
}

impl core::fmt::Display for AcpiError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            AcpiError::NoTables => write!(f, "no ACPI RSDP and no MP floating pointer in the EBDA or 0xE0000-0xFFFFF"),
            AcpiError::BadTable(a) => write!(f, "the table at {a:#x} has a bad signature, length or checksum"),
            AcpiError::NoMadt => write!(f, "the ACPI RSDT/XSDT lists no MADT (\"APIC\") table"),
            AcpiError::NoProcessors => write!(f, "the processor table lists no enabled processor"),
        }
    }
}

fn read<const N: usize>(m: &dyn PhysRead, addr: u64) -> Option<[u8; N]> {
    let mut b = [0u8; N];
    m.read(addr, &mut b).then_some(b)
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from(u32_at(b, o)) | (u64::from(u32_at(b, o + 4)) << 32)
}

/// True when the `len` bytes at `addr` sum to 0 mod 256 (ACPI and MP tables).
fn checksum_ok(m: &dyn PhysRead, addr: u64, len: usize) -> bool {
    let mut sum = 0u8;
    let mut buf = [0u8; 64];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(buf.len());
        if !m.read(addr + done as u64, &mut buf[..n]) {
            return false;
        }
        sum = buf[..n].iter().fold(sum, |s, &b| s.wrapping_add(b));
        done += n;
    }
    sum == 0
}

/// The BIOS areas searched for the RSDP and the MP floating pointer: the
/// first KiB of the EBDA (segment at 0x40E), the last KiB of base memory
/// (MP spec 4), and 0xE0000-0xFFFFF (ACPI 5.2.5.1).
fn search_areas(m: &dyn PhysRead) -> [(u64, u64); 3] {
    let ebda = read::<2>(m, 0x40e).map_or(0, |b| u64::from(u16::from_le_bytes(b)) << 4);
    let ebda_area = if (0x8_0000..0xA_0000).contains(&ebda) { (ebda, ebda + 1024) } else { (0, 0) };
    [ebda_area, (0x9_FC00, 0xA_0000), (0xE_0000, 0x10_0000)]
}

fn scan(m: &dyn PhysRead, sig: &[u8; 8], sig_len: usize, valid: impl Fn(u64) -> bool) -> Option<u64> {
    for (start, end) in search_areas(m) {
        let mut a = start;
        while a + 16 <= end {
            if read::<8>(m, a).is_some_and(|b| b[..sig_len] == sig[..sig_len]) && valid(a) {
                return Some(a);
            }
            a += 16;
        }
    }
    None
}

/// The RSDP's address, searched in the BIOS areas (ACPI 5.2.5.1).
pub fn find_rsdp(m: &dyn PhysRead) -> Option<u64> {
    scan(m, b"RSD PTR ", 8, |a| checksum_ok(m, a, 20))
}

/// The RSDT and XSDT addresses an RSDP at `addr` names (0 when absent).
pub fn rsdp_tables(m: &dyn PhysRead, addr: u64) -> Result<(u64, u64), AcpiError> {
    let b = read::<36>(m, addr).ok_or(AcpiError::BadTable(addr))?;
    if &b[..8] != b"RSD PTR " || !checksum_ok(m, addr, 20) {
        return Err(AcpiError::BadTable(addr));
    }
    let rsdt = u64::from(u32_at(&b, 16));
    // Revision 2 and later: XSDT address, checked with the extended checksum.
    let xsdt = if b[15] >= 2 && checksum_ok(m, addr, u32_at(&b, 20) as usize) { u64_at(&b, 24) } else { 0 };
    Ok((rsdt, xsdt))
}

/// A system description table's length after checking its signature and
/// checksum (ACPI 5.2.6).
fn table_len(m: &dyn PhysRead, addr: u64, sig: &[u8; 4]) -> Result<usize, AcpiError> {
    let h = read::<36>(m, addr).ok_or(AcpiError::BadTable(addr))?;
    let len = u32_at(&h, 4) as usize;
    if &h[..4] != sig || !(36..=1 << 20).contains(&len) || !checksum_ok(m, addr, len) {
        return Err(AcpiError::BadTable(addr));
    }
    Ok(len)
}

/// The address of the table with signature `sig` listed by the XSDT (when
/// present) or the RSDT.
pub fn find_table(m: &dyn PhysRead, rsdp: u64, sig: &[u8; 4]) -> Result<Option<u64>, AcpiError> {
    let (rsdt, xsdt) = rsdp_tables(m, rsdp)?;
    let (root, root_sig, width) = if xsdt != 0 { (xsdt, b"XSDT", 8) } else { (rsdt, b"RSDT", 4) };
    let len = table_len(m, root, root_sig)?;
    for i in 0..(len - 36) / width {
        let at = root + 36 + (i * width) as u64;
        let entry = if width == 8 {
            read::<8>(m, at).map(u64::from_le_bytes)
        } else {
            read::<4>(m, at).map(|b| u64::from(u32::from_le_bytes(b)))
        }
        .ok_or(AcpiError::BadTable(root))?;
        if read::<4>(m, entry).is_some_and(|s| &s == sig) {
            table_len(m, entry, sig)?;
            return Ok(Some(entry));
        }
    }
    Ok(None)
}

/// The enabled processors of the MADT at `addr`: Processor Local APIC
/// entries (type 0) and Processor Local x2APIC entries (type 9) whose
/// Enabled flag is set (ACPI 5.2.12.2, 5.2.12.12).
pub fn madt_cpus(m: &dyn PhysRead, addr: u64) -> Result<CpuList, AcpiError> {
    let len = table_len(m, addr, b"APIC")?;
    let h = read::<44>(m, addr).ok_or(AcpiError::BadTable(addr))?;
    let mut list = CpuList::empty(CpuSource::AcpiMadt, u64::from(u32_at(&h, 36)));
    let mut off = 44;
    while off + 2 <= len {
        let e = read::<16>(m, addr + off as u64).unwrap_or([0; 16]);
        let (kind, elen) = (e[0], e[1] as usize);
        if elen < 2 || off + elen > len {
            return Err(AcpiError::BadTable(addr));
        }
        match kind {
            0 if elen >= 8 && u32_at(&e, 4) & 1 != 0 => list.push(u32::from(e[3])),
            9 if elen >= 16 && u32_at(&e, 8) & 1 != 0 => list.push(u32_at(&e, 4)),
            // Local APIC Address Override (5.2.12.8).
            5 if elen >= 12 => list.lapic_base = u64_at(&e, 4),
            _ => {}
        }
        off += elen;
    }
    if list.count == 0 {
        return Err(AcpiError::NoProcessors);
    }
    Ok(list)
}

/// The enabled processors of the MP configuration table (MP spec 1.4, 4.1
/// floating pointer, 4.2 table header, 4.3.1 processor entries).
pub fn mp_cpus(m: &dyn PhysRead) -> Result<CpuList, AcpiError> {
    let fp = scan(m, b"_MP_\0\0\0\0", 4, |a| checksum_ok(m, a, 16)).ok_or(AcpiError::NoTables)?;
    let f = read::<16>(m, fp).ok_or(AcpiError::BadTable(fp))?;
    let table = u64::from(u32_at(&f, 4));
    if table == 0 {
        // A default configuration (feature byte 1 != 0): two CPUs, IDs 0 and 1.
        let mut list = CpuList::empty(CpuSource::MpTable, LAPIC_DEFAULT_BASE);
        list.push(0);
        list.push(1);
        return Ok(list);
    }
    let h = read::<44>(m, table).ok_or(AcpiError::BadTable(table))?;
    let len = u16_at(&h, 4) as usize;
    if &h[..4] != b"PCMP" || len < 44 || !checksum_ok(m, table, len) {
        return Err(AcpiError::BadTable(table));
    }
    let mut list = CpuList::empty(CpuSource::MpTable, u64::from(u32_at(&h, 36)));
    let mut off = 44;
    for _ in 0..u16_at(&h, 34) {
        let e = read::<20>(m, table + off as u64).ok_or(AcpiError::BadTable(table))?;
        match e[0] {
            0 => {
                if e[3] & 1 != 0 {
                    list.push(u32::from(e[1]));
                }
                off += 20;
            }
            1..=4 => off += 8,
            _ => return Err(AcpiError::BadTable(table)),
        }
    }
    if list.count == 0 {
        return Err(AcpiError::NoProcessors);
    }
    Ok(list)
}

/// The processors of this machine: the MADT found through `rsdp` (or, when
/// `rsdp` is `None`, through the BIOS-area search), else the MP table.
pub fn find_cpus(m: &dyn PhysRead, rsdp: Option<u64>) -> Result<CpuList, AcpiError> {
    let acpi = match rsdp.or_else(|| find_rsdp(m)) {
        Some(r) => find_table(m, r, b"APIC")?.map(|madt| madt_cpus(m, madt)),
        None => None,
    };
    match acpi {
        Some(r) => r,
        None => match mp_cpus(m) {
            Err(AcpiError::NoTables) if rsdp.is_some() || find_rsdp(m).is_some() => Err(AcpiError::NoMadt),
            r => r,
        },
    }
}

/// Bytes [`build_guest_tables`] writes for `cpus` processors.
pub const fn guest_tables_len(cpus: usize) -> usize {
    GUEST_MADT + 44 + 8 * cpus
}
const GUEST_RSDT: usize = 0x20;
const GUEST_MADT: usize = 0x50;

fn set_checksum(t: &mut [u8], at: usize) {
    t[at] = 0;
    let sum = t.iter().fold(0u8, |s, &b| s.wrapping_add(b));
    t[at] = 0u8.wrapping_sub(sum);
}

fn header(t: &mut [u8], sig: &[u8; 4], revision: u8) {
    let len = t.len() as u32;
    t[..4].copy_from_slice(sig);
    t[4..8].copy_from_slice(&len.to_le_bytes());
    t[8] = revision;
    t[10..16].copy_from_slice(b"QUADRT");
    t[16..24].copy_from_slice(b"QUADRANT");
    t[24..28].copy_from_slice(&1u32.to_le_bytes());
    t[28..32].copy_from_slice(b"QDRT");
    t[32..36].copy_from_slice(&1u32.to_le_bytes());
    set_checksum(t, 9);
}

/// Writes an RSDP (revision 0), an RSDT and a MADT listing `apic_ids` (one
/// Processor Local APIC entry each, enabled) into `buf`, which will sit at
/// physical address `base` (16-byte aligned, inside 0xE0000-0xFFFFF so
/// [`find_rsdp`] finds it). Returns the bytes used, or `None` when `buf` is
/// too small or an ID does not fit the 8-bit xAPIC entry.
pub fn build_guest_tables(buf: &mut [u8], base: u64, apic_ids: &[u32], lapic_base: u32) -> Option<usize> {
    let len = guest_tables_len(apic_ids.len());
    if buf.len() < len || base > u64::from(u32::MAX) - len as u64 || apic_ids.iter().any(|&id| id > 0xfe) {
        return None;
    }
    let buf = &mut buf[..len];
    buf.fill(0);
    // RSDP (ACPI 5.2.5.3): signature, checksum over 20 bytes, OEM, revision 0, RSDT.
    buf[..8].copy_from_slice(b"RSD PTR ");
    buf[9..15].copy_from_slice(b"QUADRT");
    buf[16..20].copy_from_slice(&((base as u32) + GUEST_RSDT as u32).to_le_bytes());
    set_checksum(&mut buf[..20], 8);
    // RSDT with one entry: the MADT.
    let rsdt = &mut buf[GUEST_RSDT..GUEST_RSDT + 40];
    rsdt[36..40].copy_from_slice(&((base as u32) + GUEST_MADT as u32).to_le_bytes());
    header(rsdt, b"RSDT", 1);
    // MADT: local APIC address, flags PCAT_COMPAT = 0 (no 8259s to mask), entries.
    let madt = &mut buf[GUEST_MADT..];
    madt[36..40].copy_from_slice(&lapic_base.to_le_bytes());
    for (i, &id) in apic_ids.iter().enumerate() {
        let e = &mut madt[44 + 8 * i..52 + 8 * i];
        e[0] = 0;
        e[1] = 8;
        e[2] = i as u8;
        e[3] = id as u8;
        e[4..8].copy_from_slice(&1u32.to_le_bytes());
    }
    header(madt, b"APIC", 4);
    Some(len)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::multiboot::SliceMem;

    /// 1 MiB of "physical memory" with the tables at `at`.
    fn mem_with(at: u64, ids: &[u32]) -> std::vec::Vec<u8> {
        let mut mem = std::vec![0u8; 0x10_0000];
        let n = build_guest_tables(&mut mem[at as usize..], at, ids, 0xFEE0_0000).unwrap();
        assert_eq!(n, guest_tables_len(ids.len()));
        mem
    }

    #[test]
    fn guest_tables_round_trip() {
        let mem = mem_with(0xE_0000, &[0, 1, 2, 3]);
        let m = SliceMem { base: 0, bytes: &mem };
        assert_eq!(find_rsdp(&m), Some(0xE_0000));
        let cpus = find_cpus(&m, None).unwrap();
        assert_eq!(cpus.ids(), &[0, 1, 2, 3]);
        assert_eq!(cpus.lapic_base, 0xFEE0_0000);
        assert_eq!(cpus.source, CpuSource::AcpiMadt);
        assert_eq!(find_cpus(&m, Some(0xE_0000)).unwrap(), cpus);
    }

    #[test]
    fn a_broken_checksum_is_refused() {
        let mut mem = mem_with(0xE_0100, &[0, 1]);
        // Corrupt one MADT byte: its checksum no longer holds.
        mem[0xE_0100 + GUEST_MADT + 44 + 3] ^= 0x40;
        let m = SliceMem { base: 0, bytes: &mem };
        assert_eq!(find_cpus(&m, None), Err(AcpiError::BadTable(0xE_0100 + GUEST_MADT as u64)));
        // A corrupt RSDP is not found at all.
        let mut mem = mem_with(0xE_0100, &[0, 1]);
        mem[0xE_0100 + 16] ^= 1;
        let m = SliceMem { base: 0, bytes: &mem };
        assert_eq!(find_rsdp(&m), None);
        assert_eq!(find_cpus(&m, None), Err(AcpiError::NoTables));
    }

    #[test]
    fn disabled_processors_and_x2apic_entries() {
        let mut mem = mem_with(0xF_0000, &[0, 1, 2]);
        let madt = 0xF_0000 + GUEST_MADT;
        // Processor 1 disabled.
        mem[madt + 44 + 8 + 4] = 0;
        let len = u32_at(&mem, madt + 4) as usize;
        set_checksum(&mut mem[madt..madt + len], 9);
        let m = SliceMem { base: 0, bytes: &mem };
        assert_eq!(find_cpus(&m, None).unwrap().ids(), &[0, 2]);
    }

    #[test]
    fn tables_too_many_or_too_wide_are_refused() {
        let mut buf = [0u8; 0x200];
        assert_eq!(build_guest_tables(&mut buf, 0xE_0000, &[0x100], 0xFEE0_0000), None);
        assert_eq!(build_guest_tables(&mut buf[..0x40], 0xE_0000, &[0], 0xFEE0_0000), None);
    }

    /// An MP floating pointer + configuration table with processors `ids`
    /// (the last one disabled when `disable_last`).
    fn mp_mem(ids: &[u8], disable_last: bool) -> std::vec::Vec<u8> {
        let mut mem = std::vec![0u8; 0x10_0000];
        let (fp, table) = (0xF_5A00usize, 0xF_5B00usize);
        mem[fp..fp + 4].copy_from_slice(b"_MP_");
        mem[fp + 4..fp + 8].copy_from_slice(&(table as u32).to_le_bytes());
        mem[fp + 8] = 1;
        mem[fp + 9] = 4;
        set_checksum(&mut mem[fp..fp + 16], 10);
        let len = 44 + 20 * ids.len() + 8;
        let t = &mut mem[table..table + len];
        t[..4].copy_from_slice(b"PCMP");
        t[4..6].copy_from_slice(&(len as u16).to_le_bytes());
        t[6] = 4;
        t[34..36].copy_from_slice(&((ids.len() + 1) as u16).to_le_bytes());
        t[36..40].copy_from_slice(&0xFEE0_0000u32.to_le_bytes());
        for (i, &id) in ids.iter().enumerate() {
            let e = &mut t[44 + 20 * i..64 + 20 * i];
            e[0] = 0;
            e[1] = id;
            e[3] = if disable_last && i == ids.len() - 1 { 0 } else { 1 } | if i == 0 { 2 } else { 0 };
        }
        // One bus entry after the processors.
        t[44 + 20 * ids.len()] = 1;
        set_checksum(t, 7);
        mem
    }

    #[test]
    fn mp_table_when_there_is_no_acpi() {
        let mem = mp_mem(&[0, 1, 5], true);
        let m = SliceMem { base: 0, bytes: &mem };
        let cpus = find_cpus(&m, None).unwrap();
        assert_eq!(cpus.ids(), &[0, 1]);
        assert_eq!(cpus.source, CpuSource::MpTable);
    }

    #[test]
    fn nothing_at_all() {
        let mem = std::vec![0u8; 0x10_0000];
        let m = SliceMem { base: 0, bytes: &mem };
        assert_eq!(find_cpus(&m, None), Err(AcpiError::NoTables));
    }

    #[test]
    fn more_cpus_than_max_are_counted_as_dropped() {
        let ids: std::vec::Vec<u32> = (0..20).collect();
        let mem = mem_with(0xE_0000, &ids);
        let m = SliceMem { base: 0, bytes: &mem };
        let cpus = find_cpus(&m, None).unwrap();
        assert_eq!(cpus.count, MAX_CPUS);
        assert_eq!(cpus.dropped, 4);
    }
}
