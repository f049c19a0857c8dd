//! Physical memory planning: which host frames the hypervisor may hand out.
//!
//! Pure logic (host-tested): the boot code feeds it the available regions of
//! the firmware memory map and the ranges already in use (the low 1 MiB, the
//! hypervisor image, the boot modules, the Multiboot information), and it
//! hands out aligned, contiguous blocks: guest RAM, the heap, VMX regions,
//! shadow page frames. Nothing is ever returned to it; the shadow page pool
//! recycles its own frames.

use core::ops::Range;

/// Maximum number of free ranges tracked.
const MAX_RANGES: usize = 64;

/// A bump allocator over the free ranges of physical memory.
#[derive(Clone, Debug)]
pub struct PhysAllocator {
    free: [Range<u64>; MAX_RANGES],
    len: usize,
    limit: u64,
}

/// Why an allocation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutOfMemory {
    /// Bytes asked for.
    pub size: u64,
    /// Alignment asked for.
    pub align: u64,
    /// The largest free block left.
    pub largest_free: u64,
}

impl core::fmt::Display for OutOfMemory {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "out of physical memory: need {} KiB aligned to {:#x}, largest free block is {} KiB",
            self.size / 1024,
            self.align,
            self.largest_free / 1024
        )
    }
}

impl PhysAllocator {
    /// Starts from `available` regions, clipped to `[0, limit)` (the
    /// hypervisor identity-maps only the low 4 GiB), minus `reserved`.
    pub fn new(available: impl IntoIterator<Item = Range<u64>>, reserved: &[Range<u64>], limit: u64) -> Self {
        let mut a = PhysAllocator { free: [const { 0..0 }; MAX_RANGES], len: 0, limit };
        for r in available {
            a.add(r.start.min(limit)..r.end.min(limit));
        }
        for r in reserved {
            a.remove(r.clone());
        }
        a
    }

    fn add(&mut self, r: Range<u64>) {
        if r.start < r.end && self.len < MAX_RANGES {
            self.free[self.len] = r;
            self.len += 1;
        }
    }

    /// Removes `cut` from every free range (splitting where needed).
    fn remove(&mut self, cut: Range<u64>) {
        let mut i = 0;
        while i < self.len {
            let r = self.free[i].clone();
            if cut.end <= r.start || cut.start >= r.end {
                i += 1;
                continue;
            }
            // Overlap: keep the parts left and right of the cut.
            self.free[i] = r.start..cut.start.max(r.start);
            if cut.end < r.end {
                self.add(cut.end..r.end);
            }
            if self.free[i].start >= self.free[i].end {
                self.len -= 1;
                self.free[i] = self.free[self.len].clone();
            } else {
                i += 1;
            }
        }
    }

    /// Allocates `size` bytes aligned to `align` (a power of two), from the
    /// lowest free range that fits.
    pub fn alloc(&mut self, size: u64, align: u64) -> Result<u64, OutOfMemory> {
        debug_assert!(align.is_power_of_two());
        let mut best: Option<(usize, u64)> = None;
        for i in 0..self.len {
            let r = &self.free[i];
            let start = (r.start + align - 1) & !(align - 1);
            if start.checked_add(size).is_some_and(|e| e <= r.end) && best.is_none_or(|(_, s)| start < s) {
                best = Some((i, start));
            }
        }
        let (_, start) = best.ok_or(OutOfMemory { size, align, largest_free: self.largest_free() })?;
        self.remove(start..start + size);
        Ok(start)
    }

    /// Size of the largest free range.
    pub fn largest_free(&self) -> u64 {
        self.free[..self.len].iter().map(|r| r.end - r.start).max().unwrap_or(0)
    }

    /// Total free bytes.
    pub fn total_free(&self) -> u64 {
        self.free[..self.len].iter().map(|r| r.end - r.start).sum()
    }

    /// The address limit given at creation.
    pub fn limit(&self) -> u64 {
        self.limit
    }
}

/// Parses a size such as `64M`, `512K`, `1G` or a plain byte count.
pub fn parse_size(s: &str) -> Option<u64> {
    let (num, mult) = match s.as_bytes().last()? {
        b'K' | b'k' => (&s[..s.len() - 1], 1u64 << 10),
        b'M' | b'm' => (&s[..s.len() - 1], 1 << 20),
        b'G' | b'g' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_case::test_case;

    const MIB: u64 = 1 << 20;

    #[test]
    fn reserved_ranges_are_never_handed_out() {
        let mut a = PhysAllocator::new([0..0x9fc00, MIB..256 * MIB], &[0..MIB, MIB..3 * MIB, 10 * MIB..11 * MIB], 4 << 30);
        let g = a.alloc(64 * MIB, 2 * MIB).unwrap();
        assert!(g >= 11 * MIB, "guest RAM {g:#x} overlaps a reserved range");
        assert_eq!(g % (2 * MIB), 0);
        let small = a.alloc(4096, 4096).unwrap();
        assert!((3 * MIB..10 * MIB).contains(&small));
    }

    #[test]
    fn allocations_do_not_overlap_and_run_out_cleanly() {
        let mut a = PhysAllocator::new(core::iter::once(MIB..MIB + 10 * 4096), &[], 4 << 30);
        let mut got = std::vec::Vec::new();
        while let Ok(p) = a.alloc(4096, 4096) {
            got.push(p);
        }
        assert_eq!(got.len(), 10);
        got.sort();
        got.dedup();
        assert_eq!(got.len(), 10);
        let e = a.alloc(4096, 4096).unwrap_err();
        assert_eq!(e.largest_free, 0);
    }

    #[test]
    fn memory_above_the_limit_is_ignored() {
        let mut a = PhysAllocator::new(core::iter::once((4u64 << 30) - MIB..(5u64 << 30)), &[], 4 << 30);
        assert_eq!(a.total_free(), MIB);
        assert!(a.alloc(2 * MIB, 4096).is_err());
    }

    #[test_case("64M", Some(64 << 20))]
    #[test_case("512k", Some(512 << 10))]
    #[test_case("1G", Some(1 << 30))]
    #[test_case("4096", Some(4096))]
    #[test_case("M", None)]
    #[test_case("12Q", None)]
    fn sizes(s: &str, want: Option<u64>) {
        assert_eq!(parse_size(s), want);
    }
}
