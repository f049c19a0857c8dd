//! The access sweep (DESIGN.md, issue item 4): in the spirit of
//! kvm-unit-tests' access test, every combination of PDE and PTE
//! U/W/XD/A/D/PS flags x CR0.WP x EFER.NXE x CR4.SMEP/SMAP (where the CPU
//! has them) x CPL 0/3 x read/write/fetch, each compared with [`model`],
//! the guest's own reading of the SDM.
//!
//! This module enumerates the space of one paging mode: the *settings*
//! (control bits and CPL, changed between batches) times the *inner* cases
//! (entry flags and access) of each setting. The full space is every inner
//! case of every setting; the quick sample takes [`QUICK_PER_SETTING`]
//! inner cases of each setting ([`QUICK_SMALL`] through a page table and
//! [`QUICK_LARGE`] through a large PDE, chosen pseudo-randomly but fixed per
//! setting), so every setting runs and every value of every dimension occurs.

pub mod model;

use model::{f, Access, Case, Mode};

/// Inner cases per setting in the quick sample: [`QUICK_SMALL`] with a
/// PDE referencing a page table and [`QUICK_LARGE`] with a large PDE.
pub const QUICK_PER_SETTING: u32 = QUICK_SMALL + QUICK_LARGE;
/// Quick cases per setting through a page table.
pub const QUICK_SMALL: u32 = 72;
/// Quick cases per setting through a large PDE.
pub const QUICK_LARGE: u32 = 24;
/// How much of the space runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Size {
    /// [`QUICK_PER_SETTING`] per setting (the default).
    Quick,
    /// Everything (`sweep=full`).
    Full,
}

impl Size {
    /// From the command line (`sweep=full`).
    pub const fn of(full: bool) -> Self {
        if full { Size::Full } else { Size::Quick }
    }

    /// `quick` or `full`.
    pub const fn name(self) -> &'static str {
        match self {
            Size::Quick => "quick",
            Size::Full => "full",
        }
    }

    /// (through a page table, through a large PDE) per setting, or `None`: all.
    const fn per_setting(self) -> Option<(u32, u32)> {
        match self {
            Size::Quick => Some((QUICK_SMALL, QUICK_LARGE)),
            Size::Full => None,
        }
    }
}

/// What the CPU offers and the harness can do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Features {
    /// IA32_EFER.NXE can be set (CPUID.80000001H:EDX.NX).
    pub nx: bool,
    /// CR4.SMEP can be set (CPUID.(EAX=7,ECX=0):EBX.SMEP\[bit 7\]).
    pub smep: bool,
    /// CR4.SMAP can be set (CPUID.(EAX=7,ECX=0):EBX.SMAP\[bit 20\]).
    pub smap: bool,
    /// CPL 3 accesses can run at all.
    pub user: bool,
    /// CPL 3 accesses can run with SMEP or SMAP set.
    pub user_with_smx: bool,
}

/// The control bits and CPL of a batch of cases.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Setting {
    /// CR0.WP.
    pub wp: bool,
    /// IA32_EFER.NXE.
    pub nxe: bool,
    /// CR4.SMEP.
    pub smep: bool,
    /// CR4.SMAP.
    pub smap: bool,
    /// CPL 3.
    pub user: bool,
}

/// Flags of the PDEs that reference a page table (D and PS are clear).
const fn pde_table_flags(mode: Mode) -> &'static [u8] {
    if mode.has_xd() { &[f::U, f::W, f::NX, f::A] } else { &[f::U, f::W, f::A] }
}

/// Flags of leaf entries (PTEs and large PDEs).
const fn leaf_flags(mode: Mode) -> &'static [u8] {
    if mode.has_xd() { &[f::U, f::W, f::NX, f::A, f::D] } else { &[f::U, f::W, f::A, f::D] }
}

/// Spreads the bits of `i` over `flags`.
fn spread(i: u32, flags: &[u8]) -> u8 {
    flags.iter().enumerate().filter(|&(k, _)| i >> k & 1 != 0).fold(0, |a, (_, &b)| a | b)
}

/// The entry flag combinations of `mode`: every PDE referencing a table x
/// every PTE, then every large PDE.
pub fn leaf_count(mode: Mode) -> u32 {
    let (t, l) = (pde_table_flags(mode).len() as u32, leaf_flags(mode).len() as u32);
    (1 << (t + l)) + (1 << l)
}

/// Combination `i` of [`leaf_count`]: (PDE flags, PTE flags).
pub fn leaf(mode: Mode, i: u32) -> (u8, u8) {
    let (t, l) = (pde_table_flags(mode), leaf_flags(mode));
    let small = 1u32 << (t.len() + l.len());
    if i < small {
        (spread(i >> l.len(), t), spread(i, l))
    } else {
        (spread(i - small, l) | f::PS, 0)
    }
}

/// Inner cases of a setting: every entry combination x every access.
pub fn inner_count(mode: Mode) -> u32 {
    leaf_count(mode) * 3
}

/// The settings of `mode` on a CPU with `feat`, in run order: CR0.WP x
/// EFER.NXE (with NX; not in 32-bit paging, where it has no effect on
/// translation) x SMEP/SMAP (each where present) x CPL (CPL 3 with SMEP or
/// SMAP only with `user_with_smx`; none without `user`).
pub fn settings(mode: Mode, feat: Features, mut each: impl FnMut(Setting)) {
    for wp in [false, true] {
        for nxe in [false, true] {
            if nxe && (!feat.nx || !mode.has_xd()) {
                continue;
            }
            for smep in [false, true] {
                for smap in [false, true] {
                    if smep && !feat.smep || smap && !feat.smap {
                        continue;
                    }
                    for user in [false, true] {
                        if user && (!feat.user || (smep || smap) && !feat.user_with_smx) {
                            continue;
                        }
                        each(Setting { wp, nxe, smep, smap, user });
                    }
                }
            }
        }
    }
}

/// The largest [`inner_count`].
const MAX_INNER: usize = 1632;

/// Inner case `k` of `setting` (`k` < [`inner_count`]).
pub fn case(mode: Mode, s: Setting, k: u32) -> Case {
    let (pde, pte) = leaf(mode, k / 3);
    let acc = Access::ALL[(k % 3) as usize];
    Case { mode, pde, pte, wp: s.wp, nxe: s.nxe, smep: s.smep, smap: s.smap, user: s.user, acc }
}

/// The inner indices of setting number `n` (its position in [`settings`]):
/// all of them when `full`, else [`QUICK_PER_SETTING`] distinct ones
/// (pseudo-random, a fixed choice per setting number).
pub fn inner(mode: Mode, n: u32, size: Size, mut each: impl FnMut(u32)) {
    let total = inner_count(mode);
    if let Some((qs, ql)) = size.per_setting() {
        // The small cases come first in the inner order, then the large.
        let large = (1 << leaf_flags(mode).len()) * 3;
        for (base, len, q) in [(0, total - large, qs), (total - large, large, ql)] {
            // Distinct pseudo-random indices (xorshift32 seeded by the setting).
            let mut taken = [0u64; MAX_INNER.div_ceil(64)];
            let mut x = n.wrapping_mul(0x9E37_79B9) ^ 0x5EED_5EED;
            let mut left = q.min(len);
            while left > 0 {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                let k = (x % len) as usize;
                if taken[k / 64] & (1 << (k % 64)) == 0 {
                    taken[k / 64] |= 1 << (k % 64);
                    each(base + k as u32);
                    left -= 1;
                }
            }
        }
    } else {
        (0..total).for_each(each);
    }
}

/// How many cases the sweep of `mode` runs.
pub fn count(mode: Mode, feat: Features, size: Size) -> u32 {
    let mut n = 0;
    settings(mode, feat, |_| n += 1);
    let large = (1 << leaf_flags(mode).len()) * 3;
    n * match size.per_setting() {
        Some((qs, ql)) => qs.min(inner_count(mode) - large) + ql.min(large),
        None => inner_count(mode),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: Features = Features { nx: true, smep: true, smap: true, user: true, user_with_smx: false };

    #[test]
    fn sizes() {
        assert_eq!(leaf_count(Mode::Long), 16 * 32 + 32);
        assert_eq!(leaf_count(Mode::Pg32), 8 * 16 + 16);
        // 2 WP x 2 NXE x (SMEP/SMAP 00 at CPL 0 and 3, 3 more at CPL 0) x 544 x 3.
        assert_eq!(count(Mode::Long, ALL, Size::Full), 4 * 5 * 544 * 3);
        assert_eq!(count(Mode::Long, Features { smep: false, smap: false, ..ALL }, Size::Full), 4 * 2 * 1632);
        assert_eq!(count(Mode::Long, ALL, Size::Quick), 20 * QUICK_PER_SETTING);
        // CPL 0 only: 2 WP x 2 NXE x 4 SMEP/SMAP; 32-bit paging has no NXE setting.
        assert_eq!(count(Mode::Pae, Features { user: false, ..ALL }, Size::Full), 16 * 1632);
        assert_eq!(count(Mode::Pg32, Features { user: false, ..ALL }, Size::Full), 8 * 144 * 3);
        for m in [Mode::Pg32, Mode::Pae, Mode::Long] {
            let large = (1u32 << leaf_flags(m).len()) * 3;
            for t in [inner_count(m) - large, large] {
                assert!(t as usize <= MAX_INNER);
            }
            let mut ks = Vec::new();
            inner(m, 3, Size::Quick, |k| ks.push(k));
            let n = ks.len();
            ks.sort();
            ks.dedup();
            let want = QUICK_PER_SETTING as usize;
            assert_eq!((n, ks.len()), (want, want), "distinct");
        }
    }

    #[test]
    fn leaves_are_distinct_and_well_formed() {
        for m in [Mode::Pg32, Mode::Long] {
            let all: Vec<_> = (0..leaf_count(m)).map(|i| leaf(m, i)).collect();
            for (i, l) in all.iter().enumerate() {
                assert!(!all[..i].contains(l));
                let (pde, pte) = *l;
                if pde & f::PS == 0 {
                    assert_eq!(pde & f::D, 0);
                } else {
                    assert_eq!(pte, 0);
                }
                if !m.has_xd() {
                    assert_eq!((pde | pte) & f::NX, 0);
                }
            }
        }
    }

    /// Every setting runs and, over the quick sample, every value of every
    /// dimension (each flag of the PDE and PTE, large or not, each access)
    /// occurs in every setting.
    #[test]
    fn quick_covers_every_dimension() {
        for m in [Mode::Pg32, Mode::Pae, Mode::Long] {
            let mut n = 0;
            settings(m, ALL, |s| {
                let mut seen = std::collections::HashSet::new();
                inner(m, n, Size::Quick, |k| {
                    let c = case(m, s, k);
                    for b in [f::U, f::W, f::NX, f::A, f::D, f::PS] {
                        seen.insert((0, b, c.pde & b != 0, c.large()));
                        seen.insert((1, b, c.pte & b != 0, c.large()));
                    }
                    seen.insert((2, c.acc as u8, true, c.large()));
                });
                for large in [false, true] {
                    for b in [f::U, f::W, f::A] {
                        for v in [false, true] {
                            assert!(seen.contains(&(0, b, v, large)), "{m:?} {s:?} pde {b} {v} {large}");
                        }
                    }
                    for a in 0..3 {
                        assert!(seen.contains(&(2, a, true, large)), "{m:?} {s:?} access {a} large {large}");
                    }
                }
                for b in [f::U, f::W, f::A, f::D] {
                    for v in [false, true] {
                        assert!(seen.contains(&(1, b, v, false)), "{m:?} {s:?} pte {b} {v}");
                    }
                }
                n += 1;
            });
            assert!(n >= 8);
        }
    }
}
