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
    /// VM exits of any reason.
    pub exits: u64,
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
        }
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
        let s = MmuStats { magic: MMU_STATS_MAGIC, version: 1, cr3_hits: 7, exits: 99, recycles: 3, ..Default::default() };
        assert_eq!(MmuStats::SIZE, 88);
        assert_eq!(MmuStats::from_bytes(&s.to_bytes()), s);
    }

    #[test]
    fn hypercall_numbers_are_stable() {
        for h in [Hypercall::Version, Hypercall::ReportCheck, Hypercall::MmuStats, Hypercall::BenchCounters] {
            assert_eq!(Hypercall::from_u64(h as u64), Some(h));
        }
        assert_eq!(Hypercall::from_u64(0), None);
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
