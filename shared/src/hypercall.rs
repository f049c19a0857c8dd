//! Hypercalls: the guest executes VMCALL with RAX = a [`Hypercall`] number and
//! arguments in RBX, RCX, RDX. The hypervisor answers in RAX ([`STATUS_OK`],
//! a value, or [`STATUS_UNKNOWN`]) and advances RIP past the VMCALL.
//!
//! Pointers are guest-physical addresses. Bare (no hypervisor) VMCALL raises
//! #UD, so the guest only issues hypercalls after it found the CPUID signature
//! ([`crate::cpuid`]) with a matching protocol version.

/// Hypercall numbers (RAX at VMCALL).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum Hypercall {
    /// Returns [`crate::PROTOCOL_VERSION`] in RAX.
    Version = 1,
    /// RBX = guest-physical address of a [`CheckRecord`]: the hypervisor
    /// records the result of one check. Returns [`STATUS_OK`] or
    /// [`STATUS_BAD_ARGUMENT`].
    ReportCheck = 2,
    /// RBX = guest-physical address of a buffer, RCX = its length in bytes:
    /// the hypervisor fills it with its MMU statistics (a [`MmuStats`] record,
    /// truncated to the length). Returns the full record length in RAX.
    MmuStats = 3,
    /// RBX = a linear address, RCX = guest-physical address of a buffer,
    /// RDX = its length in bytes: the hypervisor fills it with the shadow
    /// entries the processor walks for that address on the calling vCPU's
    /// current root, level by level (a [`ShadowWalkRecord`], truncated to
    /// the length). Outside IA-32e mode only the low 32 bits of RBX, RCX
    /// and RDX count. Returns the full record length in RAX, or
    /// [`STATUS_BAD_ARGUMENT`] when the buffer is not guest RAM. For
    /// failure reports: it reads the shadow tables and changes nothing.
    ShadowWalk = 4,
    /// RBX = guest-physical address of a buffer, RCX = its length in bytes:
    /// the hypervisor fills it with a [`BenchCounters`] record (VM exits and
    /// the hypervisor's cycles by exit reason, and every shadow page cache
    /// counter), truncated to the length. Returns the full record length.
    /// For the benchmark workloads: read once before and once after the
    /// measured loop.
    BenchCounters = 5,
}

impl Hypercall {
    /// Decodes RAX; `None` for a number this protocol version does not know.
    pub const fn from_u64(v: u64) -> Option<Self> {
        match v {
            1 => Some(Hypercall::Version),
            2 => Some(Hypercall::ReportCheck),
            3 => Some(Hypercall::MmuStats),
            4 => Some(Hypercall::ShadowWalk),
            5 => Some(Hypercall::BenchCounters),
            _ => None,
        }
    }
}

/// RAX after a hypercall that succeeded without a value to return.
pub const STATUS_OK: u64 = 0;
/// RAX after a hypercall with an unknown number.
pub const STATUS_UNKNOWN: u64 = u64::MAX;
/// RAX after a hypercall whose arguments were rejected (address outside guest
/// RAM, bad magic, bad lengths).
pub const STATUS_BAD_ARGUMENT: u64 = u64::MAX - 1;

/// Magic at the start of a [`CheckRecord`] ("QCHK").
pub const CHECK_RECORD_MAGIC: u32 = u32::from_le_bytes(*b"QCHK");
/// Capacity of [`CheckRecord::name`].
pub const CHECK_NAME_LEN: usize = 64;
/// Capacity of [`CheckRecord::detail`].
pub const CHECK_DETAIL_LEN: usize = 160;

/// One check result, passed by reference with [`Hypercall::ReportCheck`].
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct CheckRecord {
    /// [`CHECK_RECORD_MAGIC`].
    pub magic: u32,
    /// [`crate::PROTOCOL_VERSION`] of the sender.
    pub version: u32,
    /// [`crate::Outcome`] as a number.
    pub outcome: u32,
    /// Bytes used in `name`.
    pub name_len: u32,
    /// Bytes used in `detail`.
    pub detail_len: u32,
    /// The check name, `mode/scenario[/case]`, UTF-8.
    pub name: [u8; CHECK_NAME_LEN],
    /// A short detail, UTF-8 (truncated to the capacity).
    pub detail: [u8; CHECK_DETAIL_LEN],
}

/// Why a [`CheckRecord`] was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordError {
    /// `magic` is not [`CHECK_RECORD_MAGIC`].
    BadMagic,
    /// `version` is not this crate's [`crate::PROTOCOL_VERSION`].
    BadVersion,
    /// `outcome` is not a known [`crate::Outcome`].
    BadOutcome,
    /// A length exceeds its field's capacity.
    BadLength,
    /// The name or the detail is not UTF-8.
    NotUtf8,
}

impl CheckRecord {
    /// Builds a record; `name` and `detail` are truncated at a character
    /// boundary to fit.
    pub fn new(outcome: crate::Outcome, name: &str, detail: &str) -> Self {
        let mut r = CheckRecord {
            magic: CHECK_RECORD_MAGIC,
            version: crate::PROTOCOL_VERSION,
            outcome: outcome as u32,
            name_len: 0,
            detail_len: 0,
            name: [0; CHECK_NAME_LEN],
            detail: [0; CHECK_DETAIL_LEN],
        };
        r.name_len = copy_truncated(&mut r.name, name) as u32;
        r.detail_len = copy_truncated(&mut r.detail, detail) as u32;
        r
    }

    /// Validates the record and returns (outcome, name, detail).
    pub fn decode(&self) -> Result<(crate::Outcome, &str, &str), RecordError> {
        if self.magic != CHECK_RECORD_MAGIC {
            return Err(RecordError::BadMagic);
        }
        if self.version != crate::PROTOCOL_VERSION {
            return Err(RecordError::BadVersion);
        }
        let outcome = crate::Outcome::from_u32(self.outcome).ok_or(RecordError::BadOutcome)?;
        let (nl, dl) = (self.name_len as usize, self.detail_len as usize);
        if nl > CHECK_NAME_LEN || dl > CHECK_DETAIL_LEN {
            return Err(RecordError::BadLength);
        }
        let name = core::str::from_utf8(&self.name[..nl]).map_err(|_| RecordError::NotUtf8)?;
        let detail = core::str::from_utf8(&self.detail[..dl]).map_err(|_| RecordError::NotUtf8)?;
        Ok((outcome, name, detail))
    }

    /// The record as raw bytes (for copying out of guest memory).
    pub const SIZE: usize = core::mem::size_of::<CheckRecord>();

    /// Reads a record from bytes laid out as `#[repr(C)]` (little endian).
    pub fn from_bytes(b: &[u8; Self::SIZE]) -> Self {
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let mut name = [0; CHECK_NAME_LEN];
        name.copy_from_slice(&b[20..20 + CHECK_NAME_LEN]);
        let mut detail = [0; CHECK_DETAIL_LEN];
        detail.copy_from_slice(&b[20 + CHECK_NAME_LEN..20 + CHECK_NAME_LEN + CHECK_DETAIL_LEN]);
        CheckRecord {
            magic: u32_at(0),
            version: u32_at(4),
            outcome: u32_at(8),
            name_len: u32_at(12),
            detail_len: u32_at(16),
            name,
            detail,
        }
    }
}

/// Copies as much of `s` as fits into `dst`, cut at a UTF-8 boundary;
/// returns the number of bytes copied.
fn copy_truncated(dst: &mut [u8], s: &str) -> usize {
    let mut n = s.len().min(dst.len());
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    dst[..n].copy_from_slice(&s.as_bytes()[..n]);
    n
}

/// Magic at the start of a [`MmuStats`] record ("QMMU").
pub const MMU_STATS_MAGIC: u32 = u32::from_le_bytes(*b"QMMU");

/// The hypervisor's MMU statistics as the guest sees them through
/// [`Hypercall::MmuStats`]. All counters count since the VM started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct MmuStats {
    /// [`MMU_STATS_MAGIC`].
    pub magic: u32,
    /// [`crate::PROTOCOL_VERSION`].
    pub version: u32,
    /// Shadow pages created (cache misses that allocated a page).
    pub shadow_pages_created: u64,
    /// Shadow pages currently allocated.
    pub shadow_pages_live: u64,
    /// CR3 loads whose root was found in the cache.
    pub cr3_hits: u64,
    /// CR3 loads that had to build a root.
    pub cr3_misses: u64,
    /// Shadow page faults handled (filled or injected).
    pub page_faults: u64,
    /// Shadow pages zapped, for any reason.
    pub zaps: u64,
    /// Guest page-table writes emulated.
    pub pt_writes: u64,
    /// Gfns unshadowed because of write flooding.
    pub unshadows: u64,
    /// Shadow pages recycled because the pool ran low.
    pub recycles: u64,
    /// VM exits of any reason (all vCPUs).
    pub exits: u64,
    /// The guest paging levels (bit g: 0 no paging, 2, 3, 4) of the shadow
    /// roots the vCPUs have loaded at the moment of the call.
    pub loaded_glevels: u64,
    /// Synchronous remote TLB flushes after write-protecting a guest page
    /// table that other vCPUs might map writable.
    pub remote_flushes: u64,
}

impl MmuStats {
    /// Size of the record in bytes.
    pub const SIZE: usize = core::mem::size_of::<MmuStats>();

    /// The record as guest memory holds it (`#[repr(C)]`, little endian).
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        b[0..4].copy_from_slice(&self.magic.to_le_bytes());
        b[4..8].copy_from_slice(&self.version.to_le_bytes());
        let counters = [
            self.shadow_pages_created,
            self.shadow_pages_live,
            self.cr3_hits,
            self.cr3_misses,
            self.page_faults,
            self.zaps,
            self.pt_writes,
            self.unshadows,
            self.recycles,
            self.exits,
            self.loaded_glevels,
            self.remote_flushes,
        ];
        for (i, c) in counters.iter().enumerate() {
            b[8 + i * 8..16 + i * 8].copy_from_slice(&c.to_le_bytes());
        }
        b
    }

    /// Reads the record from its byte form.
    pub fn from_bytes(b: &[u8; Self::SIZE]) -> Self {
        let u64_at = |o: usize| {
            let mut x = [0u8; 8];
            x.copy_from_slice(&b[o..o + 8]);
            u64::from_le_bytes(x)
        };
        MmuStats {
            magic: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            version: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
            shadow_pages_created: u64_at(8),
            shadow_pages_live: u64_at(16),
            cr3_hits: u64_at(24),
            cr3_misses: u64_at(32),
            page_faults: u64_at(40),
            zaps: u64_at(48),
            pt_writes: u64_at(56),
            unshadows: u64_at(64),
            recycles: u64_at(72),
            exits: u64_at(80),
            loaded_glevels: u64_at(88),
            remote_flushes: u64_at(96),
        }
    }
}

/// Magic at the start of a [`ShadowWalkRecord`] ("QSWK").
pub const SHADOW_WALK_MAGIC: u32 = u32::from_le_bytes(*b"QSWK");
/// Most entries on one hardware walk: a 4-level root down to a PT (a PAE
/// root, a PD and a PT take three).
pub const SHADOW_WALK_MAX: usize = 4;
/// [`ShadowEntry::role`] of an entry of a PAE root (the four hardware
/// PDPTEs), which is no shadow page and has no role.
pub const ROLE_PAE_ROOT: u32 = u32::MAX;
/// [`ShadowWalkRecord::leaf_gfn`] when the walk ends without a present PT entry.
pub const NO_GFN: u64 = u64::MAX;

/// What [`Hypercall::ShadowWalk`] could walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ShadowWalkStatus {
    /// The entries are the hardware walk on the vCPU's current root.
    Walked = 0,
    /// No shadow tables: the hypervisor runs the guest on EPT (`mmu=ept`),
    /// the processor walks the guest's own tables.
    NoShadow = 1,
    /// The vCPU has no root loaded.
    NoRoot = 2,
}

impl ShadowWalkStatus {
    /// Decodes the record's word.
    pub const fn from_u32(v: u32) -> Option<Self> {
        match v {
            0 => Some(ShadowWalkStatus::Walked),
            1 => Some(ShadowWalkStatus::NoShadow),
            2 => Some(ShadowWalkStatus::NoRoot),
            _ => None,
        }
    }
}

/// One shadow entry the processor reads on a walk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct ShadowEntry {
    /// The entry as the shadow table holds it.
    pub value: u64,
    /// Host-physical address of the shadow table holding it.
    pub table: u64,
    /// The gfn of that shadow page: the guest table it shadows, or for a
    /// metaphysical page the first guest frame of the range it maps; 0 in
    /// a PAE root.
    pub gfn: u64,
    /// The shadow page's role ([`crate::coverage::RoleValue::pack`]), or
    /// [`ROLE_PAE_ROOT`].
    pub role: u32,
    /// The table's level on the hardware walk: 4 PML4, 3 PDPT (the PAE
    /// root's four PDPTEs), 2 PD, 1 PT.
    pub level: u16,
    /// The entry's index in its table.
    pub index: u16,
}

/// The answer of [`Hypercall::ShadowWalk`]: the entries from the root
/// down, as far as the walk goes (it stops after a non-present entry or a
/// PT entry).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct ShadowWalkRecord {
    /// [`SHADOW_WALK_MAGIC`].
    pub magic: u32,
    /// [`crate::PROTOCOL_VERSION`].
    pub version: u32,
    /// [`ShadowWalkStatus`] as a number.
    pub status: u32,
    /// Entries filled in `entries`.
    pub count: u32,
    /// The linear address walked.
    pub linear: u64,
    /// The hardware CR3 of the walk (host-physical; 0 without a root).
    pub root: u64,
    /// When the last entry is a present PT entry: the guest frame it maps
    /// (the hypervisor's reverse map); [`NO_GFN`] otherwise.
    pub leaf_gfn: u64,
    /// The entries, root first.
    pub entries: [ShadowEntry; SHADOW_WALK_MAX],
}

impl ShadowWalkRecord {
    /// Size of the record in bytes.
    pub const SIZE: usize = core::mem::size_of::<ShadowWalkRecord>();
    const ENTRY: usize = core::mem::size_of::<ShadowEntry>();

    /// An empty record with `status`, for `linear`.
    pub const fn new(status: ShadowWalkStatus, linear: u64, root: u64) -> Self {
        ShadowWalkRecord {
            magic: SHADOW_WALK_MAGIC,
            version: crate::PROTOCOL_VERSION,
            status: status as u32,
            count: 0,
            linear,
            root,
            leaf_gfn: NO_GFN,
            entries: [ShadowEntry { value: 0, table: 0, gfn: 0, role: 0, level: 0, index: 0 }; SHADOW_WALK_MAX],
        }
    }

    /// Appends an entry; `false` when the record is full.
    pub fn push(&mut self, e: ShadowEntry) -> bool {
        let Some(slot) = self.entries.get_mut(self.count as usize) else { return false };
        *slot = e;
        self.count += 1;
        true
    }

    /// The filled entries (at most [`SHADOW_WALK_MAX`], whatever `count` says).
    pub fn walked(&self) -> &[ShadowEntry] {
        &self.entries[..(self.count as usize).min(SHADOW_WALK_MAX)]
    }

    /// The record as guest memory holds it (`#[repr(C)]`, little endian).
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        for (i, w) in [self.magic, self.version, self.status, self.count].iter().enumerate() {
            b[4 * i..4 * i + 4].copy_from_slice(&w.to_le_bytes());
        }
        b[16..24].copy_from_slice(&self.linear.to_le_bytes());
        b[24..32].copy_from_slice(&self.root.to_le_bytes());
        b[32..40].copy_from_slice(&self.leaf_gfn.to_le_bytes());
        for (i, e) in self.entries.iter().enumerate() {
            let o = 40 + i * Self::ENTRY;
            b[o..o + 8].copy_from_slice(&e.value.to_le_bytes());
            b[o + 8..o + 16].copy_from_slice(&e.table.to_le_bytes());
            b[o + 16..o + 24].copy_from_slice(&e.gfn.to_le_bytes());
            b[o + 24..o + 28].copy_from_slice(&e.role.to_le_bytes());
            b[o + 28..o + 30].copy_from_slice(&e.level.to_le_bytes());
            b[o + 30..o + 32].copy_from_slice(&e.index.to_le_bytes());
        }
        b
    }

    /// Reads the record from its byte form; `None` when the magic or the
    /// version is wrong.
    pub fn from_bytes(b: &[u8; Self::SIZE]) -> Option<Self> {
        let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let u64_at = |o: usize| {
            let mut x = [0u8; 8];
            x.copy_from_slice(&b[o..o + 8]);
            u64::from_le_bytes(x)
        };
        let mut r = ShadowWalkRecord {
            magic: u32_at(0),
            version: u32_at(4),
            status: u32_at(8),
            count: u32_at(12),
            linear: u64_at(16),
            root: u64_at(24),
            leaf_gfn: u64_at(32),
            ..Default::default()
        };
        if r.magic != SHADOW_WALK_MAGIC || r.version != crate::PROTOCOL_VERSION {
            return None;
        }
        for (i, e) in r.entries.iter_mut().enumerate() {
            let o = 40 + i * Self::ENTRY;
            *e = ShadowEntry {
                value: u64_at(o),
                table: u64_at(o + 8),
                gfn: u64_at(o + 16),
                role: u32_at(o + 24),
                level: u16_at(o + 28),
                index: u16_at(o + 30),
            };
        }
        Some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Outcome;

    #[test]
    fn record_round_trip() {
        let r = CheckRecord::new(Outcome::Fail, "long/self-map", "pte 0x1003 expected 0x2003");
        let bytes: [u8; CheckRecord::SIZE] = unsafe_free_bytes(&r);
        let back = CheckRecord::from_bytes(&bytes);
        assert_eq!(back.decode(), Ok((Outcome::Fail, "long/self-map", "pte 0x1003 expected 0x2003")));
    }

    #[test]
    fn record_truncates_at_char_boundary() {
        let long = "é".repeat(100);
        let r = CheckRecord::new(Outcome::Pass, &long, "");
        let (_, name, _) = r.decode().unwrap();
        assert!(name.len() <= CHECK_NAME_LEN && name.chars().all(|c| c == 'é'));
    }

    #[test]
    fn record_rejects_garbage() {
        let mut r = CheckRecord::new(Outcome::Pass, "a", "b");
        r.outcome = 7;
        assert_eq!(r.decode(), Err(RecordError::BadOutcome));
        r.outcome = 0;
        r.name_len = 1000;
        assert_eq!(r.decode(), Err(RecordError::BadLength));
        r.magic = 0;
        assert_eq!(r.decode(), Err(RecordError::BadMagic));
    }

    #[test]
    fn mmu_stats_round_trip() {
        let s = MmuStats {
            magic: MMU_STATS_MAGIC,
            version: 1,
            cr3_hits: 7,
            exits: 99,
            recycles: 3,
            loaded_glevels: 0b1_0001,
            remote_flushes: 5,
            ..Default::default()
        };
        assert_eq!(MmuStats::SIZE, 104);
        assert_eq!(MmuStats::from_bytes(&s.to_bytes()), s);
    }

    #[test]
    fn hypercall_numbers_are_stable() {
        for h in [Hypercall::Version, Hypercall::ReportCheck, Hypercall::MmuStats, Hypercall::ShadowWalk, Hypercall::BenchCounters] {
            assert_eq!(Hypercall::from_u64(h as u64), Some(h));
        }
        assert_eq!(Hypercall::from_u64(0), None);
    }

    #[test]
    fn shadow_walk_round_trip() {
        let mut r = ShadowWalkRecord::new(ShadowWalkStatus::Walked, 0x8000_2000_0010, 0x3c_5000);
        assert_eq!(ShadowWalkRecord::SIZE, 168);
        r.leaf_gfn = 0x400;
        assert!(r.push(ShadowEntry { value: 0x3c_6027, table: 0x3c_5000, gfn: 0x2f3, role: 0x4c844, level: 4, index: 256 }));
        assert!(r.push(ShadowEntry { value: (1 << 63) | 0x1_0040_0025, table: 0x3c_7000, gfn: 0x400, role: 7, level: 1, index: 511 }));
        let back = ShadowWalkRecord::from_bytes(&r.to_bytes()).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.walked().len(), 2);
        assert_eq!(ShadowWalkStatus::from_u32(back.status), Some(ShadowWalkStatus::Walked));
        for _ in 2..SHADOW_WALK_MAX {
            assert!(r.push(ShadowEntry::default()));
        }
        assert!(!r.push(ShadowEntry::default()), "a fifth entry does not fit");
        let mut bytes = r.to_bytes();
        bytes[0] ^= 1;
        assert_eq!(ShadowWalkRecord::from_bytes(&bytes), None);
        let mut odd = r;
        odd.count = 99;
        assert_eq!(odd.walked().len(), SHADOW_WALK_MAX);
        assert_eq!(ShadowWalkStatus::from_u32(3), None);
    }

    /// Serialises a record the way guest memory holds it, field by field.
    fn unsafe_free_bytes(r: &CheckRecord) -> [u8; CheckRecord::SIZE] {
        let mut b = [0u8; CheckRecord::SIZE];
        for (i, v) in [r.magic, r.version, r.outcome, r.name_len, r.detail_len].iter().enumerate() {
            b[i * 4..i * 4 + 4].copy_from_slice(&v.to_le_bytes());
        }
        b[20..20 + CHECK_NAME_LEN].copy_from_slice(&r.name);
        b[20 + CHECK_NAME_LEN..20 + CHECK_NAME_LEN + CHECK_DETAIL_LEN].copy_from_slice(&r.detail);
        b
    }
}
