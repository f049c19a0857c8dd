//! The Multiboot memory map as the checks use it: a fixed-capacity copy,
//! its validation (overlaps, coverage of the guest image, agreement with
//! `mem_upper`), the boot structures that must survive, and the plan of
//! pages the RAM test may overwrite.

use crate::machine::Range;
use shared::multiboot::{self, Info, InfoError, MmapEntry, PhysRead};

/// Entries kept; firmware maps are far shorter.
pub const MAX_ENTRIES: usize = 64;
/// Size of a page the RAM test treats as a unit.
pub const PAGE: u64 = 4096;
/// Upper memory starts here (Multiboot spec 3.3, `mem_upper`).
pub const UPPER_START: u64 = 0x10_0000;
/// The identity map of the boot code covers this much.
pub const FOUR_GIB: u64 = 1 << 32;

/// A copy of the memory map.
#[derive(Clone, Copy, Debug)]
pub struct MemMap {
    entries: [MmapEntry; MAX_ENTRIES],
    len: usize,
}

/// Why the map could not be copied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// An entry was malformed or unreadable.
    Info(InfoError),
    /// More than [`MAX_ENTRIES`] entries.
    TooManyEntries,
}

impl MemMap {
    /// Copies the entries of `info`'s map.
    pub fn read<R: PhysRead + ?Sized>(info: &Info, mem: &R) -> Result<Self, MapError> {
        let mut m = MemMap { entries: [MmapEntry { base: 0, len: 0, kind: 0 }; MAX_ENTRIES], len: 0 };
        for e in info.mmap(mem) {
            let e = e.map_err(MapError::Info)?;
            *m.entries.get_mut(m.len).ok_or(MapError::TooManyEntries)? = e;
            m.len += 1;
        }
        Ok(m)
    }

    /// A map made of `entries` (at most [`MAX_ENTRIES`] are kept).
    pub fn from_entries(entries: &[MmapEntry]) -> Self {
        let mut m = MemMap { entries: [MmapEntry { base: 0, len: 0, kind: 0 }; MAX_ENTRIES], len: 0 };
        let n = entries.len().min(MAX_ENTRIES);
        m.entries[..n].copy_from_slice(&entries[..n]);
        m.len = n;
        m
    }

    /// The entries in map order.
    pub fn entries(&self) -> &[MmapEntry] {
        &self.entries[..self.len]
    }

    /// The available entries as ranges, sorted by start, with overlapping
    /// or touching ones merged. Returns the number written to `out`.
    pub fn available_spans(&self, out: &mut [Range; MAX_ENTRIES]) -> usize {
        let mut n = 0;
        for e in self.entries().iter().filter(|e| e.is_available() && e.len > 0) {
            out[n] = Range::new(e.base, e.end());
            n += 1;
        }
        out[..n].sort_unstable();
        let mut merged = 0;
        for i in 0..n {
            let r = out[i];
            if merged > 0 && r.start <= out[merged - 1].end {
                out[merged - 1].end = out[merged - 1].end.max(r.end);
            } else {
                out[merged] = r;
                merged += 1;
            }
        }
        merged
    }

    /// The first pair of entries (indexes, in map order) that share an
    /// address, of any types.
    pub fn find_overlap(&self) -> Option<(usize, usize)> {
        let e = self.entries();
        for i in 0..e.len() {
            for j in i + 1..e.len() {
                let (a, b) = (Range::new(e[i].base, e[i].end()), Range::new(e[j].base, e[j].end()));
                if a.overlaps(&b) {
                    return Some((i, j));
                }
            }
        }
        None
    }

    /// True when every address of `r` is in an available entry.
    pub fn available_covers(&self, r: Range) -> bool {
        let mut spans = [Range::default(); MAX_ENTRIES];
        let n = self.available_spans(&mut spans);
        r.is_empty() || spans[..n].iter().any(|s| s.start <= r.start && r.end <= s.end)
    }

    /// Bytes of available RAM.
    pub fn available_bytes(&self) -> u64 {
        let mut spans = [Range::default(); MAX_ENTRIES];
        let n = self.available_spans(&mut spans);
        spans[..n].iter().map(Range::len).sum()
    }

    /// The end of the available span that contains [`UPPER_START`]: the
    /// "first upper memory hole" of the Multiboot spec.
    pub fn first_upper_hole(&self) -> Option<u64> {
        let mut spans = [Range::default(); MAX_ENTRIES];
        let n = self.available_spans(&mut spans);
        spans[..n].iter().find(|s| s.contains(UPPER_START)).map(|s| s.end)
    }

    /// The end of the highest available byte below `limit`.
    pub fn top_below(&self, limit: u64) -> u64 {
        self.entries().iter().filter(|e| e.is_available()).map(|e| e.end().min(limit)).max().unwrap_or(0)
    }
}

/// How `mem_upper` relates to the map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpperVerdict {
    /// `mem_upper` KiB from 1 MiB end exactly at the first upper hole
    /// (rounded down to whole KiB, as loaders compute it).
    Exact,
    /// `mem_upper` ends below the hole: allowed by the spec ("maximally the
    /// address of the first upper memory hole minus 1 megabyte; it is not
    /// guaranteed to be this value") as long as it stays within `slack`.
    Below {
        /// KiB between `mem_upper` and the hole.
        short_kb: u64,
    },
    /// `mem_upper` reaches past the hole: the spec's maximum is exceeded.
    Above {
        /// KiB beyond the hole.
        excess_kb: u64,
    },
    /// No available span contains 1 MiB.
    NoUpperMemory,
}

/// Compares `mem_upper_kb` with the first upper hole of `map` (Multiboot
/// spec 3.3: `mem_upper` is maximally the first upper memory hole minus
/// 1 MiB).
pub fn check_mem_upper(map: &MemMap, mem_upper_kb: u32) -> UpperVerdict {
    let Some(hole) = map.first_upper_hole() else { return UpperVerdict::NoUpperMemory };
    let hole_kb = (hole - UPPER_START) / 1024;
    let upper = u64::from(mem_upper_kb);
    match upper.cmp(&hole_kb) {
        core::cmp::Ordering::Equal => UpperVerdict::Exact,
        core::cmp::Ordering::Less => UpperVerdict::Below { short_kb: hole_kb - upper },
        core::cmp::Ordering::Greater => UpperVerdict::Above { excess_kb: upper - hole_kb },
    }
}

/// Capacity of [`Exclusions`].
pub const MAX_EXCLUSIONS: usize = 32;
/// Longest boot string the exclusion scan looks for a NUL in; a longer
/// (or unterminated) string is excluded for this many bytes.
pub const MAX_STRING: u64 = 4096;

/// Physical ranges the RAM test must not overwrite: the Multiboot
/// structures (which the guest or a later reader still needs).
#[derive(Clone, Copy, Debug)]
pub struct Exclusions {
    ranges: [Range; MAX_EXCLUSIONS],
    len: usize,
    /// Set when a range did not fit: the list is then incomplete and must
    /// not be trusted to protect anything.
    pub overflowed: bool,
}

impl Default for Exclusions {
    fn default() -> Self {
        Self::new()
    }
}

impl Exclusions {
    /// Empty.
    pub const fn new() -> Self {
        Exclusions { ranges: [Range { start: 0, end: 0 }; MAX_EXCLUSIONS], len: 0, overflowed: false }
    }

    /// Adds `r`, widened to whole pages (nothing when an earlier range
    /// already covers it).
    pub fn add(&mut self, r: Range) {
        if r.is_empty() {
            return;
        }
        let widened = Range::new(r.start & !(PAGE - 1), r.end.saturating_add(PAGE - 1) & !(PAGE - 1));
        if self.ranges().iter().any(|x| x.start <= widened.start && widened.end <= x.end) {
            return;
        }
        match self.ranges.get_mut(self.len) {
            Some(slot) => {
                *slot = widened;
                self.len += 1;
            }
            None => self.overflowed = true,
        }
    }

    /// The ranges (page-aligned), in insertion order.
    pub fn ranges(&self) -> &[Range] {
        &self.ranges[..self.len]
    }

    /// True when `addr` is excluded, or when the list overflowed.
    pub fn excludes(&self, addr: u64) -> bool {
        self.overflowed || self.ranges().iter().any(|r| r.contains(addr))
    }

    /// Every structure `info` points to: the block itself, the memory map,
    /// the command line, the boot loader name, the module array, each
    /// module and its string.
    pub fn from_info<R: PhysRead + ?Sized>(info: &Info, mem: &R) -> Self {
        let mut x = Exclusions::new();
        // The block is 88 bytes up to the VBE fields; newer loaders append
        // framebuffer fields up to 116 bytes.
        x.add(Range::new(info.addr, info.addr + 116));
        x.add(Range::new(u64::from(info.mmap_addr), u64::from(info.mmap_addr) + u64::from(info.mmap_length)));
        for s in [info.cmdline_addr, info.boot_loader_name_addr].into_iter().flatten() {
            x.add(string_range(mem, u64::from(s)));
        }
        let mods = u64::from(info.mods_addr);
        x.add(Range::new(mods, mods + u64::from(info.mods_count) * multiboot::MODULE_ENTRY_SIZE as u64));
        for m in info.modules(mem) {
            match m {
                Ok(m) => {
                    x.add(Range::new(u64::from(m.start), u64::from(m.end)));
                    if m.cmdline_addr != 0 {
                        x.add(string_range(mem, u64::from(m.cmdline_addr)));
                    }
                }
                // A malformed module array: protect nothing less than all.
                Err(_) => x.overflowed = true,
            }
        }
        x
    }
}

/// The bytes of the NUL-terminated string at `addr`, NUL included; at most
/// [`MAX_STRING`] bytes when no NUL comes earlier.
fn string_range<R: PhysRead + ?Sized>(mem: &R, addr: u64) -> Range {
    let mut b = [0u8; 1];
    for o in 0..MAX_STRING {
        if !mem.read(addr + o, &mut b) {
            break;
        }
        if b[0] == 0 {
            return Range::new(addr, addr + o + 1);
        }
    }
    Range::new(addr, addr + MAX_STRING)
}

/// Calls `f` with each range the RAM test may overwrite, ascending and
/// disjoint, page-aligned: available RAM inside `[lo, hi)`, minus the
/// exclusions. Returns the total bytes planned.
pub fn plan_ram_test(map: &MemMap, lo: u64, hi: u64, excl: &Exclusions, mut f: impl FnMut(Range)) -> u64 {
    if excl.overflowed {
        return 0;
    }
    let mut spans = [Range::default(); MAX_ENTRIES];
    let n = map.available_spans(&mut spans);
    let mut sorted = [Range::default(); MAX_EXCLUSIONS];
    let k = excl.ranges().len();
    sorted[..k].copy_from_slice(excl.ranges());
    sorted[..k].sort_unstable();
    let mut total = 0;
    let mut emit = |r: Range| {
        if !r.is_empty() {
            total += r.len();
            f(r);
        }
    };
    for s in &spans[..n] {
        let start = s.start.max(lo).saturating_add(PAGE - 1) & !(PAGE - 1);
        let end = s.end.min(hi) & !(PAGE - 1);
        if start >= end {
            continue;
        }
        let mut cursor = start;
        for x in &sorted[..k] {
            if x.end <= cursor || x.start >= end {
                continue;
            }
            if x.start > cursor {
                emit(Range::new(cursor, x.start));
            }
            cursor = cursor.max(x.end);
        }
        if cursor < end {
            emit(Range::new(cursor, end));
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::multiboot::{MMAP_AVAILABLE as A, MMAP_RESERVED as R, SliceMem};
    use test_case::test_case;

    const fn e(base: u64, len: u64, kind: u32) -> MmapEntry {
        MmapEntry { base, len, kind }
    }

    /// The map QEMU's -m 128 reports (SeaBIOS e820).
    const QEMU: [MmapEntry; 6] = [
        e(0, 0x9fc00, A),
        e(0x9fc00, 0x400, R),
        e(0xf0000, 0x10000, R),
        e(0x10_0000, 0x7ee_0000, A),
        e(0x7fe_0000, 0x2_0000, R),
        e(0xfffc_0000, 0x4_0000, R),
    ];

    #[test]
    fn spans_merge_and_sort() {
        let m = MemMap::from_entries(&[e(0x20_0000, 0x10_0000, A), e(0x10_0000, 0x10_0000, A), e(0, 0x1000, A)]);
        let mut out = [Range::default(); MAX_ENTRIES];
        let n = m.available_spans(&mut out);
        assert_eq!(&out[..n], &[Range::new(0, 0x1000), Range::new(0x10_0000, 0x30_0000)]);
        assert_eq!(m.first_upper_hole(), Some(0x30_0000));
        assert_eq!(m.available_bytes(), 0x20_1000);
    }

    #[test]
    fn overlaps_found() {
        assert_eq!(MemMap::from_entries(&QEMU).find_overlap(), None);
        let m = MemMap::from_entries(&[e(0, 0x1000, A), e(0x10_0000, 0x1000, A), e(0x10_0800, 0x100, R)]);
        assert_eq!(m.find_overlap(), Some((1, 2)));
        let touching = MemMap::from_entries(&[e(0, 0x1000, A), e(0x1000, 0x1000, R)]);
        assert_eq!(touching.find_overlap(), None);
    }

    #[test_case(0x10_0000, 0x20_0000, true ; "inside")]
    #[test_case(0x7f0_0000, 0x7fe_0000, true ; "up to the end")]
    #[test_case(0x7f0_0000, 0x7fe_1000, false ; "into reserved")]
    #[test_case(0x9f000, 0x10_1000, false ; "across the hole")]
    fn coverage(start: u64, end: u64, want: bool) {
        assert_eq!(MemMap::from_entries(&QEMU).available_covers(Range::new(start, end)), want);
    }

    #[test_case(129_920, UpperVerdict::Exact ; "exact")]
    #[test_case(129_000, UpperVerdict::Below { short_kb: 920 } ; "below")]
    #[test_case(130_048, UpperVerdict::Above { excess_kb: 128 } ; "above")]
    fn mem_upper(kb: u32, want: UpperVerdict) {
        assert_eq!(check_mem_upper(&MemMap::from_entries(&QEMU), kb), want);
    }

    #[test]
    fn no_upper_memory() {
        let m = MemMap::from_entries(&[e(0, 0x9fc00, A)]);
        assert_eq!(check_mem_upper(&m, 0), UpperVerdict::NoUpperMemory);
    }

    fn plan(map: &MemMap, lo: u64, hi: u64, x: &Exclusions) -> (u64, Vec<Range>) {
        let mut v = Vec::new();
        let total = plan_ram_test(map, lo, hi, x, |r| v.push(r));
        (total, v)
    }

    #[test]
    fn plan_skips_exclusions_and_clips() {
        let map = MemMap::from_entries(&QEMU);
        let mut x = Exclusions::new();
        x.add(Range::new(0x9000, 0x9058)); // info block, below lo anyway
        x.add(Range::new(0x14_0010, 0x14_0030)); // cmdline right above the image
        x.add(Range::new(0x20_0000, 0x20_3000));
        let (total, v) = plan(&map, 0x13_f123, FOUR_GIB, &x);
        assert_eq!(
            v,
            [Range::new(0x14_1000, 0x20_0000), Range::new(0x20_3000, 0x7fe_0000)],
            "lo rounded up to a page; the cmdline page is dropped"
        );
        assert_eq!(total, v.iter().map(Range::len).sum::<u64>());
        let (_, v) = plan(&map, 0x10_0000, 0x40_0000, &x);
        assert_eq!(v, [Range::new(0x10_0000, 0x14_0000), Range::new(0x14_1000, 0x20_0000), Range::new(0x20_3000, 0x40_0000)]);
    }

    #[test]
    fn plan_refuses_when_exclusions_overflowed() {
        let map = MemMap::from_entries(&QEMU);
        let mut x = Exclusions::new();
        for i in 0..=MAX_EXCLUSIONS as u64 {
            x.add(Range::new(i * PAGE, i * PAGE + 1));
        }
        assert!(x.overflowed && x.excludes(0x7000_0000));
        assert_eq!(plan(&map, 0, FOUR_GIB, &x), (0, vec![]));
    }

    #[test]
    fn exclusions_from_a_built_block() {
        let mut buf = [0u8; 4096];
        let n = multiboot::build(&mut buf, 0x9000, 639, 1000, &QEMU, "/k expect_hv=0", "test").unwrap();
        let mem = SliceMem { base: 0x9000, bytes: &buf[..n] };
        let info = multiboot::parse(&mem, 0x9000).unwrap();
        let x = Exclusions::from_info(&info, &mem);
        assert!(!x.overflowed);
        assert_eq!(x.ranges(), &[Range::new(0x9000, 0xa000)], "block, map and strings share a page");
        assert!(x.excludes(0x9000) && x.excludes(0x9fff) && !x.excludes(0xa000));
        let map = MemMap::read(&info, &mem).unwrap();
        assert_eq!(map.entries(), &QEMU);
    }

    #[test]
    fn unterminated_string_is_excluded_whole() {
        let mem = SliceMem { base: 0, bytes: &[b'x'; 100] };
        assert_eq!(string_range(&mem, 10), Range::new(10, 10 + MAX_STRING));
        let mem = SliceMem { base: 0, bytes: b"abc\0" };
        assert_eq!(string_range(&mem, 0), Range::new(0, 4));
    }
}
