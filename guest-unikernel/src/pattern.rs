//! Patterns for the RAM test: one 64-bit value per address, distinct for
//! distinct addresses (so a write that lands on another address, an address
//! line stuck or two pages aliased shows up as a wrong value), and different
//! between passes (so every bit is seen both ways across the two seeds).

/// The seed of the first pass; the second pass uses its complement.
pub const SEED: u64 = 0x5157_4144_5241_4e54; // "QUADRANT"-ish bytes

/// The value written at `addr` in the pass with `seed`. The mixing steps
/// (xor-shift and odd multiplications, the splitmix64 finaliser) are each
/// invertible, so distinct `addr ^ seed` give distinct values.
pub const fn pattern(addr: u64, seed: u64) -> u64 {
    let mut z = addr ^ seed;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Byte offsets written in each 4 KiB page: the first, a middle and the last
/// quadword. Touching every byte would cost an exit per page under the
/// hypervisor and in Bochs anyway, and adds nothing to what these catch.
pub const OFFSETS: [u64; 3] = [0, 0x7f8, 0xff8];

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn distinct_across_pages_offsets_and_passes() {
        let mut seen = HashSet::new();
        for page in (0x10_0000u64..0x10_0000 + 4096 * 2048).step_by(4096) {
            for o in OFFSETS {
                assert!(seen.insert(pattern(page + o, SEED)));
                assert!(seen.insert(pattern(page + o, !SEED)));
            }
        }
    }

    #[test]
    fn every_bit_seen_both_ways() {
        let (mut ones, mut zeros) = (0u64, 0u64);
        for a in (0..64 * 4096).step_by(4096) {
            for s in [SEED, !SEED] {
                ones |= pattern(a, s);
                zeros |= !pattern(a, s);
            }
        }
        assert_eq!((ones, zeros), (u64::MAX, u64::MAX));
    }

    #[test]
    fn deterministic() {
        assert_eq!(pattern(0x20_0000, SEED), pattern(0x20_0000, SEED));
        assert_ne!(pattern(0x20_0000, SEED), pattern(0x20_0000, !SEED));
    }
}
