//! Role coverage: which shadow page roles a run created, and which ones the
//! guest suite promises to create.
//!
//! The hypervisor decodes every role word it ever created into a
//! [`RoleValue`] and prints one `role-coverage` line per value at the end of
//! a run ([`crate::line`]). The runner parses those lines and checks that
//! every pattern of [`PROMISED`] is matched by at least one created value; a
//! promised value that was never created fails the boot, because then the
//! scenario meant to exercise it no longer reaches the cache that way.
//!
//! Promises are [`RolePattern`]s over the role fields, not raw role words:
//! a word also carries fields the suite does not aim at (inherited access,
//! EFER.NXE, ...), and a pattern says exactly which fields the scenario is
//! designed to fix. Pure logic, host-tested below.

use core::fmt;

/// Inherited-access bit: writable.
pub const ACCESS_W: u8 = 1;
/// Inherited-access bit: user-accessible.
pub const ACCESS_U: u8 = 2;
/// Inherited-access bit: executable.
pub const ACCESS_X: u8 = 4;

/// One decoded shadow page role (the hypervisor's `mmu::role::Role`, field
/// by field, without `invalid`, which coverage ignores).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RoleValue {
    /// Guest paging levels: 0 no paging, 2 32-bit, 3 PAE, 4 long mode.
    pub glevels: u8,
    /// Level of the shadow page, 1 (PT) .. 4 (PML4).
    pub level: u8,
    /// Part of a 32-bit guest table this shadow covers (0..4).
    pub quadrant: u8,
    /// No guest table backs this shadow (identity map or large-page split).
    pub metaphysical: bool,
    /// Inherited access: [`ACCESS_W`] | [`ACCESS_U`] | [`ACCESS_X`].
    pub access: u8,
    /// Guest CR0.WP.
    pub cr0_wp: bool,
    /// Guest EFER.NXE.
    pub efer_nx: bool,
    /// CR4.SMEP && !CR0.WP.
    pub smep_andnot_wp: bool,
    /// CR4.SMAP && !CR0.WP.
    pub smap_andnot_wp: bool,
    /// Guest CR4.PSE (32-bit guests only).
    pub cr4_pse: bool,
}

impl RoleValue {
    /// The value as one word (the [`crate::hypercall::ShadowWalkRecord`]
    /// wire form): glevels bits 3:0, level 7:4, quadrant 9:8, metaphysical
    /// 10, access 13:11, cr0_wp 14, efer_nx 15, smep_andnot_wp 16,
    /// smap_andnot_wp 17, cr4_pse 18.
    pub const fn pack(&self) -> u32 {
        (self.glevels as u32 & 0xf)
            | (self.level as u32 & 0xf) << 4
            | (self.quadrant as u32 & 3) << 8
            | (self.metaphysical as u32) << 10
            | (self.access as u32 & 7) << 11
            | (self.cr0_wp as u32) << 14
            | (self.efer_nx as u32) << 15
            | (self.smep_andnot_wp as u32) << 16
            | (self.smap_andnot_wp as u32) << 17
            | (self.cr4_pse as u32) << 18
    }

    /// The value [`Self::pack`] made `w` from.
    pub const fn unpack(w: u32) -> Self {
        RoleValue {
            glevels: (w & 0xf) as u8,
            level: ((w >> 4) & 0xf) as u8,
            quadrant: ((w >> 8) & 3) as u8,
            metaphysical: w & (1 << 10) != 0,
            access: ((w >> 11) & 7) as u8,
            cr0_wp: w & (1 << 14) != 0,
            efer_nx: w & (1 << 15) != 0,
            smep_andnot_wp: w & (1 << 16) != 0,
            smap_andnot_wp: w & (1 << 17) != 0,
            cr4_pse: w & (1 << 18) != 0,
        }
    }
}

/// The short form failure reports use: `g4 L1 q0 uwx wp=1 nx=1`, then
/// `meta` for a metaphysical page, `pse=0|1` for a 32-bit guest, and
/// `smep&!wp` / `smap&!wp` when set.
impl fmt::Display for RoleValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "g{} L{} q{} ", self.glevels, self.level, self.quadrant)?;
        write_access(f, self.access)?;
        write!(f, " wp={} nx={}", u8::from(self.cr0_wp), u8::from(self.efer_nx))?;
        if self.metaphysical {
            f.write_str(" meta")?;
        }
        if self.glevels == 2 {
            write!(f, " pse={}", u8::from(self.cr4_pse))?;
        }
        if self.smep_andnot_wp {
            f.write_str(" smep&!wp")?;
        }
        if self.smap_andnot_wp {
            f.write_str(" smap&!wp")?;
        }
        Ok(())
    }
}

/// Writes inherited access as `uwx`, with `-` for a missing permission.
pub fn write_access(w: &mut impl fmt::Write, access: u8) -> fmt::Result {
    for (bit, ch) in [(ACCESS_U, 'u'), (ACCESS_W, 'w'), (ACCESS_X, 'x')] {
        w.write_char(if access & bit != 0 { ch } else { '-' })?;
    }
    Ok(())
}

/// Parses the `uwx` form of [`write_access`].
pub fn parse_access(s: &str) -> Option<u8> {
    let b = s.as_bytes();
    if b.len() != 3 {
        return None;
    }
    let mut access = 0;
    for (i, (bit, ch)) in [(ACCESS_U, b'u'), (ACCESS_W, b'w'), (ACCESS_X, b'x')].into_iter().enumerate() {
        match b[i] {
            c if c == ch => access |= bit,
            b'-' => {}
            _ => return None,
        }
    }
    Some(access)
}

/// A set of role values: every field is either fixed (`Some`) or any
/// (`None`). Named, so that a missing value reads as the scenario it stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RolePattern {
    /// What the scenario creating this value is (shown when it is missing).
    pub name: &'static str,
    /// Guest paging levels.
    pub glevels: Option<u8>,
    /// Shadow page level.
    pub level: Option<u8>,
    /// Quadrant.
    pub quadrant: Option<u8>,
    /// Metaphysical.
    pub metaphysical: Option<bool>,
    /// Inherited access bits, exactly.
    pub access: Option<u8>,
    /// One inherited access bit ([`ACCESS_W`], [`ACCESS_U`] or
    /// [`ACCESS_X`]) and the value it must have, whatever the others are.
    pub access_bit: Option<(u8, bool)>,
    /// CR0.WP.
    pub cr0_wp: Option<bool>,
    /// EFER.NXE.
    pub efer_nx: Option<bool>,
    /// CR4.SMEP && !CR0.WP.
    pub smep_andnot_wp: Option<bool>,
    /// CR4.SMAP && !CR0.WP.
    pub smap_andnot_wp: Option<bool>,
    /// CR4.PSE.
    pub cr4_pse: Option<bool>,
}

impl RolePattern {
    /// Matches every role value (the base for `..RolePattern::ANY`).
    pub const ANY: RolePattern = RolePattern {
        name: "any role",
        glevels: None,
        level: None,
        quadrant: None,
        metaphysical: None,
        access: None,
        access_bit: None,
        cr0_wp: None,
        efer_nx: None,
        smep_andnot_wp: None,
        smap_andnot_wp: None,
        cr4_pse: None,
    };

    /// Whether `v` is one of the values this pattern stands for.
    pub fn matches(&self, v: &RoleValue) -> bool {
        fn ok<T: PartialEq>(want: Option<T>, have: T) -> bool {
            want.is_none_or(|w| w == have)
        }
        ok(self.glevels, v.glevels)
            && ok(self.level, v.level)
            && ok(self.quadrant, v.quadrant)
            && ok(self.metaphysical, v.metaphysical)
            && ok(self.access, v.access)
            && self.access_bit.is_none_or(|(bit, set)| (v.access & bit != 0) == set)
            && ok(self.cr0_wp, v.cr0_wp)
            && ok(self.efer_nx, v.efer_nx)
            && ok(self.smep_andnot_wp, v.smep_andnot_wp)
            && ok(self.smap_andnot_wp, v.smap_andnot_wp)
            && ok(self.cr4_pse, v.cr4_pse)
    }
}

/// The fixed fields, in the `role-coverage` line's words
/// (`glevels=2 level=1 quadrant=1`); `any` when nothing is fixed.
impl fmt::Display for RolePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = "";
        let mut num = |f: &mut fmt::Formatter<'_>, key: &str, v: Option<u8>| -> fmt::Result {
            if let Some(v) = v {
                write!(f, "{sep}{key}={v}")?;
                sep = " ";
            }
            Ok(())
        };
        num(f, "glevels", self.glevels)?;
        num(f, "level", self.level)?;
        num(f, "quadrant", self.quadrant)?;
        num(f, "metaphysical", self.metaphysical.map(u8::from))?;
        if let Some(a) = self.access {
            write!(f, "{sep}access=")?;
            write_access(f, a)?;
            sep = " ";
        }
        if let Some((bit, set)) = self.access_bit {
            let name = match bit {
                ACCESS_U => "u",
                ACCESS_W => "w",
                ACCESS_X => "x",
                _ => "?",
            };
            write!(f, "{sep}access.{name}={}", u8::from(set))?;
            sep = " ";
        }
        let mut num = |f: &mut fmt::Formatter<'_>, key: &str, v: Option<bool>| -> fmt::Result {
            if let Some(v) = v {
                write!(f, "{sep}{key}={}", u8::from(v))?;
                sep = " ";
            }
            Ok(())
        };
        num(f, "cr0_wp", self.cr0_wp)?;
        num(f, "efer_nx", self.efer_nx)?;
        num(f, "smep_andnot_wp", self.smep_andnot_wp)?;
        num(f, "smap_andnot_wp", self.smap_andnot_wp)?;
        num(f, "cr4_pse", self.cr4_pse)?;
        if sep.is_empty() {
            f.write_str("any")?;
        }
        Ok(())
    }
}

/// A pattern fixing the paging mode, the shadow level and whether a guest
/// table backs the page.
const fn at(name: &'static str, glevels: u8, level: u8, metaphysical: bool) -> RolePattern {
    RolePattern {
        name,
        glevels: Some(glevels),
        level: Some(level),
        metaphysical: Some(metaphysical),
        ..RolePattern::ANY
    }
}

/// A role the mode walk's paged stops create: they run with CR0.WP = 1
/// (`guest-unikernel/src/modes/walk.rs`, `regs`), which also tells them
/// apart from the guest's own boot-time long mode (CR0.WP = 0).
const fn walk(name: &'static str, glevels: u8, level: u8, metaphysical: bool) -> RolePattern {
    RolePattern { cr0_wp: Some(true), ..at(name, glevels, level, metaphysical) }
}

/// A 32-bit walk pattern fixing the quadrant of a shadowed guest table.
const fn long_access(name: &'static str, bit: u8, set: bool) -> RolePattern {
    RolePattern { glevels: Some(4), access_bit: Some((bit, set)), name, ..RolePattern::ANY }
}

const fn long_nx(name: &'static str, set: bool) -> RolePattern {
    RolePattern { glevels: Some(4), efer_nx: Some(set), name, ..RolePattern::ANY }
}

const fn q32(name: &'static str, level: u8, quadrant: u8) -> RolePattern {
    RolePattern { quadrant: Some(quadrant), ..walk(name, 2, level, false) }
}

/// What the guest suite (the `modes/...` checks under the hypervisor, with
/// the default arguments) creates on purpose: measured on Bochs Penryn and
/// Skylake runs (31 distinct values; 7 with `modes=0`) and reduced to the
/// fields each scenario is designed to fix. Values the suite creates only
/// incidentally (inherited access combinations, the boot's own long mode)
/// are not promised; neither are scenarios not written yet (32-bit PT
/// quadrant 1, SMEP/SMAP, EFER.NXE).
pub const PROMISED: &[RolePattern] = &[
    // modes/walk*/real, prot, real-back: no paging, the metaphysical
    // identity map (a PAE-format root of four 1 GiB shadow PDs). Real mode
    // (vm86) and protected mode without paging share these values, and the
    // boot hand-off (protected mode, no paging) creates them too.
    at("no-paging identity PD (real/protected mode)", 0, 2, true),
    at("no-paging identity PT (real/protected mode)", 0, 1, true),
    // modes/walk*/pg32: a 32-bit PD is shadowed by four PDs, one per
    // quadrant (1 GiB each); the walk maps memory through all of them.
    q32("32-bit PD quadrant 0", 2, 0),
    q32("32-bit PD quadrant 1", 2, 1),
    q32("32-bit PD quadrant 2", 2, 2),
    q32("32-bit PD quadrant 3", 2, 3),
    q32("32-bit PT quadrant 0", 1, 0),
    // modes/walk*/pg32, LARGE_VA: a PSE 4 MiB page split into shadow PTs.
    RolePattern { cr4_pse: Some(true), ..walk("metaphysical large-page split (32-bit 4 MiB)", 2, 1, true) },
    // modes/walk*/pae: the PDs of the guest's PDPTEs, a PT, a 2 MiB page.
    walk("PAE PD", 3, 2, false),
    walk("PAE PT", 3, 1, false),
    walk("metaphysical large-page split (PAE 2 MiB)", 3, 1, true),
    // modes/walk*/long: the walk's own 4-level tables and a 2 MiB page.
    walk("long PML4", 4, 4, false),
    walk("long PDPT", 4, 3, false),
    walk("long PD", 4, 2, false),
    walk("long PT", 4, 1, false),
    walk("metaphysical large-page split (long 2 MiB)", 4, 1, true),
    // modes/cr0-wp: CR0.WP cleared in 32-bit and PAE paging; supervisor
    // writes must then go through shadows built for WP = 0.
    RolePattern {
        cr0_wp: Some(false),
        ..RolePattern {
            name: "32-bit paging with CR0.WP=0 (modes/cr0-wp)",
            glevels: Some(2),
            metaphysical: Some(false),
            ..RolePattern::ANY
        }
    },
    RolePattern {
        cr0_wp: Some(false),
        ..RolePattern {
            name: "PAE paging with CR0.WP=0 (modes/cr0-wp)",
            glevels: Some(3),
            metaphysical: Some(false),
            ..RolePattern::ANY
        }
    },
    // Both values of each inherited access bit (KVM's role.access), in long
    // mode: the boot tables are supervisor-only (U=0) while the long/...
    // laboratory's upper levels allow everything (U=1); the read-only paths
    // of long/upper-alias-perms give W=0; the XD 2 MiB alias of
    // long/large-alias-perms gives X=0.
    long_access("long mode, supervisor-only path (access U=0)", ACCESS_U, false),
    long_access("long mode, user path (access U=1)", ACCESS_U, true),
    long_access("long mode, read-only path (access W=0, long/upper-alias-perms)", ACCESS_W, false),
    long_access("long mode, writable path (access W=1)", ACCESS_W, true),
    long_access("long mode, XD path (access X=0, long/large-alias-perms)", ACCESS_X, false),
    long_access("long mode, executable path (access X=1)", ACCESS_X, true),
    // EFER.NXE: the boot runs with NXE=0; the long/... laboratory sets it.
    long_nx("long mode with EFER.NXE=0", false),
    long_nx("long mode with EFER.NXE=1 (the long/... laboratory)", true),
];

/// The promised patterns that no value of `created` matches, in
/// [`PROMISED`] order (`promised` is a parameter for tests).
pub fn missing<'p, 'c>(
    promised: &'p [RolePattern],
    created: &'c [RoleValue],
) -> impl Iterator<Item = &'p RolePattern> + use<'p, 'c> {
    promised.iter().filter(move |p| !created.iter().any(|v| p.matches(v)))
}

/// The bit of the pair of guest paging levels (a, b), a < b, in the
/// `loaded_glevels_pairs` counter of the `mmu-stats` line: the hypervisor
/// sets it when shadow roots of both were loaded at the same moment (vCPUs
/// in different paging modes at once, DESIGN.md scenario 19).
pub const fn glevels_pair_bit(a: u8, b: u8) -> u32 {
    1 << (5 * a as u32 + b as u32)
}

/// The pairs set in a `loaded_glevels_pairs` value, as (a, b) with a < b.
pub fn glevels_pairs(mask: u32) -> impl Iterator<Item = (u8, u8)> {
    (0..5u8).flat_map(move |a| (a + 1..5).map(move |b| (a, b))).filter(move |&(a, b)| mask & glevels_pair_bit(a, b) != 0)
}

/// The pair SMP runs must show: real mode (an AP after its start-up IPI)
/// beside long mode (the BSP).
pub const SMP_PROMISED_PAIR: (u8, u8) = (0, 4);

#[cfg(test)]
mod tests {
    use super::*;

    fn v(glevels: u8, level: u8, quadrant: u8, metaphysical: bool) -> RoleValue {
        RoleValue {
            glevels,
            level,
            quadrant,
            metaphysical,
            access: 7,
            cr0_wp: true,
            cr4_pse: glevels == 2,
            ..RoleValue::default()
        }
    }

    #[test]
    fn any_matches_everything_and_fixed_fields_must_be_equal() {
        let x = v(2, 1, 1, false);
        assert!(RolePattern::ANY.matches(&x));
        assert!(q32("t", 1, 1).matches(&x));
        assert!(!q32("t", 1, 0).matches(&x));
        assert!(!q32("t", 2, 1).matches(&x));
        assert!(!q32("t", 1, 1).matches(&RoleValue { metaphysical: true, ..x }));
        assert!(!q32("t", 1, 1).matches(&RoleValue { cr0_wp: false, ..x }));
        let wp0 = RolePattern { cr0_wp: Some(false), ..RolePattern::ANY };
        assert!(!wp0.matches(&x));
        assert!(wp0.matches(&RoleValue { cr0_wp: false, ..x }));
        let ro = RolePattern { access: Some(ACCESS_U | ACCESS_X), ..RolePattern::ANY };
        assert!(!ro.matches(&x));
        assert!(ro.matches(&RoleValue { access: ACCESS_U | ACCESS_X, ..x }));
        let w0 = long_access("w0", ACCESS_W, false);
        assert!(!w0.matches(&RoleValue { glevels: 4, ..x }), "access uwx has W");
        assert!(w0.matches(&RoleValue { glevels: 4, access: ACCESS_U | ACCESS_X, ..x }));
        assert!(w0.matches(&RoleValue { glevels: 4, access: 0, ..x }));
        assert!(!w0.matches(&RoleValue { access: 0, ..x }), "glevels 2");
        let mut s = heapless_names::Str::default();
        fmt::write(&mut s, format_args!("{w0} / {}", long_access("x1", ACCESS_X, true))).unwrap();
        assert_eq!(s.as_str(), "glevels=4 access.w=0 / glevels=4 access.x=1");
        assert!(long_nx("nx1", true).matches(&RoleValue { glevels: 4, efer_nx: true, ..x }));
        assert!(!long_nx("nx1", true).matches(&RoleValue { glevels: 4, ..x }));
    }

    #[test]
    fn missing_names_exactly_the_unmatched_promises() {
        let promised = [q32("PT q0", 1, 0), q32("PT q1", 1, 1), walk("long PML4", 4, 4, false)];
        let created = [v(2, 1, 0, false), v(4, 4, 0, false)];
        let m: heapless_names::Names = missing(&promised, &created).map(|p| p.name).collect();
        assert_eq!(m.as_slice(), ["PT q1"]);
        let m: heapless_names::Names = missing(&promised, &[]).map(|p| p.name).collect();
        assert_eq!(m.as_slice(), ["PT q0", "PT q1", "long PML4"]);
        assert_eq!(missing(&promised, &[v(2, 1, 0, false), v(2, 1, 1, false), v(4, 4, 0, false)]).count(), 0);
    }

    #[test]
    fn promised_names_are_unique_and_patterns_not_trivial() {
        for (i, p) in PROMISED.iter().enumerate() {
            assert!(PROMISED[..i].iter().all(|q| q.name != p.name), "duplicate name {}", p.name);
            assert!(*p != RolePattern { name: p.name, ..RolePattern::ANY }, "{} matches any role", p.name);
        }
    }

    #[test]
    fn access_round_trip() {
        for a in 0..8 {
            let mut s = heapless_names::Str::default();
            write_access(&mut s, a).unwrap();
            assert_eq!(parse_access(s.as_str()), Some(a));
        }
        assert_eq!(parse_access("uw"), None);
        assert_eq!(parse_access("wux"), None);
    }

    #[test]
    fn role_value_packs_and_shows() {
        let r = RoleValue {
            glevels: 2,
            level: 1,
            quadrant: 3,
            metaphysical: true,
            access: ACCESS_U | ACCESS_X,
            cr0_wp: false,
            efer_nx: true,
            smep_andnot_wp: true,
            smap_andnot_wp: false,
            cr4_pse: true,
        };
        assert_eq!(RoleValue::unpack(r.pack()), r);
        assert_eq!(RoleValue::unpack(0), RoleValue::default());
        for bit in 0..19 {
            let w = 1u32 << bit;
            assert_eq!(RoleValue::unpack(w).pack(), w, "bit {bit}");
        }
        let mut s = heapless_names::Str::default();
        fmt::write(&mut s, format_args!("{r}")).unwrap();
        assert_eq!(s.as_str(), "g2 L1 q3 u-x wp=0 nx=1 meta pse=1 smep&!wp");
        let mut s = heapless_names::Str::default();
        fmt::write(&mut s, format_args!("{}", RoleValue { glevels: 4, level: 4, access: 7, cr0_wp: true, ..r })).unwrap();
        assert_eq!(s.as_str(), "g4 L4 q3 uwx wp=1 nx=1 meta smep&!wp");
    }

    #[test]
    fn pattern_display_lists_fixed_fields() {
        let mut s = heapless_names::Str::default();
        fmt::write(&mut s, format_args!("{}", q32("x", 1, 1))).unwrap();
        assert_eq!(s.as_str(), "glevels=2 level=1 quadrant=1 metaphysical=0 cr0_wp=1");
        let mut s = heapless_names::Str::default();
        fmt::write(&mut s, format_args!("{}", RolePattern::ANY)).unwrap();
        assert_eq!(s.as_str(), "any");
        let mut s = heapless_names::Str::default();
        let p = RolePattern { access: Some(ACCESS_U), cr0_wp: Some(false), ..RolePattern::ANY };
        fmt::write(&mut s, format_args!("{p}")).unwrap();
        assert_eq!(s.as_str(), "access=u-- cr0_wp=0");
    }

    /// Fixed-size helpers so the tests stay `no_std`.
    mod heapless_names {
        use core::fmt;

        #[derive(Default)]
        pub struct Names {
            n: usize,
            a: [&'static str; 8],
        }
        impl Names {
            pub fn as_slice(&self) -> &[&'static str] {
                &self.a[..self.n]
            }
        }
        impl FromIterator<&'static str> for Names {
            fn from_iter<I: IntoIterator<Item = &'static str>>(it: I) -> Self {
                let mut s = Names::default();
                for x in it {
                    s.a[s.n] = x;
                    s.n += 1;
                }
                s
            }
        }

        pub struct Str {
            b: [u8; 128],
            n: usize,
        }
        impl Default for Str {
            fn default() -> Self {
                Str { b: [0; 128], n: 0 }
            }
        }
        impl Str {
            pub fn as_str(&self) -> &str {
                core::str::from_utf8(&self.b[..self.n]).unwrap()
            }
        }
        impl fmt::Write for Str {
            fn write_str(&mut self, s: &str) -> fmt::Result {
                let end = self.n + s.len();
                self.b.get_mut(self.n..end).ok_or(fmt::Error)?.copy_from_slice(s.as_bytes());
                self.n = end;
                Ok(())
            }
        }
    }
}
