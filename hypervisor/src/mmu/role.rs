//! The shadow page role: how a guest table (or a metaphysical range) is
//! shadowed, packed into one word. The cache key is (gfn, role); every bit
//! here exists because two shadows differing only in it must not be shared.

use core::fmt;

/// Inherited access of the guest path above a shadow page (and, for
/// metaphysical pages of guest large pages, of the large entry itself):
/// the AND of R/W and U/S, and "executable" (no XD seen), over the levels.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Access(u8);

impl Access {
    /// Writable (R/W = 1 in every level so far).
    pub const W: Access = Access(1);
    /// User-accessible (U/S = 1 in every level so far).
    pub const U: Access = Access(2);
    /// Executable (no XD in any level so far, or XD not in use).
    pub const X: Access = Access(4);
    /// No restriction.
    pub const FULL: Access = Access(7);
    /// No permission at all.
    pub const NONE: Access = Access(0);

    /// From the low three bits.
    pub const fn from_bits(b: u8) -> Access {
        Access(b & 7)
    }
    /// The low three bits.
    pub const fn bits(self) -> u8 {
        self.0
    }
    /// All of `other` present.
    pub const fn has(self, other: Access) -> bool {
        self.0 & other.0 == other.0
    }
    /// Intersection.
    pub const fn and(self, other: Access) -> Access {
        Access(self.0 & other.0)
    }
    /// Union.
    pub const fn or(self, other: Access) -> Access {
        Access(self.0 | other.0)
    }
    /// Without `other`.
    pub const fn without(self, other: Access) -> Access {
        Access(self.0 & !other.0)
    }
}

impl fmt::Debug for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = |a: Access, ch| if self.has(a) { ch } else { '-' };
        write!(
            f,
            "{}{}{}",
            c(Access::U, 'u'),
            c(Access::W, 'w'),
            c(Access::X, 'x')
        )
    }
}

/// A shadow page role, packed into a `u32`.
///
/// Bit layout (each field documented with the reason it exists):
///
/// | bits | field |
/// |---|---|
/// | 0-3 | [`glevels`](Role::glevels) |
/// | 4-7 | [`level`](Role::level) |
/// | 8-9 | [`quadrant`](Role::quadrant) |
/// | 10 | [`metaphysical`](Role::metaphysical) |
/// | 11-13 | [`access`](Role::access) (W, U, X) |
/// | 14 | [`cr0_wp`](Role::cr0_wp) |
/// | 15 | [`efer_nx`](Role::efer_nx) |
/// | 16 | [`smep_andnot_wp`](Role::smep_andnot_wp) |
/// | 17 | [`smap_andnot_wp`](Role::smap_andnot_wp) |
/// | 18 | [`invalid`](Role::invalid) |
/// | 19 | [`cr4_pse`](Role::cr4_pse) |
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Role(u32);

const GLEVELS_SHIFT: u32 = 0;
const LEVEL_SHIFT: u32 = 4;
const QUADRANT_SHIFT: u32 = 8;
const METAPHYSICAL: u32 = 1 << 10;
const ACCESS_SHIFT: u32 = 11;
const CR0_WP: u32 = 1 << 14;
const EFER_NX: u32 = 1 << 15;
const SMEP_ANDNOT_WP: u32 = 1 << 16;
const SMAP_ANDNOT_WP: u32 = 1 << 17;
const INVALID: u32 = 1 << 18;
const CR4_PSE: u32 = 1 << 19;

/// Role bits the cache key leaves out: none, except in a build with a
/// deliberate bug from [`super::inject`].
const KEY_IGNORED: u32 = (if cfg!(feature = "inject-key-no-glevels") { 0xf << GLEVELS_SHIFT } else { 0 })
    | (if cfg!(feature = "inject-key-no-level") { 0xf << LEVEL_SHIFT } else { 0 })
    | (if cfg!(feature = "inject-key-no-quadrant") { 3 << QUADRANT_SHIFT } else { 0 })
    | (if cfg!(feature = "inject-key-no-access") { 7 << ACCESS_SHIFT } else { 0 })
    | (if cfg!(feature = "inject-key-no-cr0-wp") { CR0_WP } else { 0 })
    | (if cfg!(feature = "inject-key-no-efer-nx") { EFER_NX } else { 0 });

impl Role {
    /// The packed word (what the role-coverage record stores).
    pub const fn word(self) -> u32 {
        self.0
    }
    /// From a packed word.
    pub const fn from_word(w: u32) -> Role {
        Role(w)
    }

    /// Guest paging levels: 0 no paging (real or protected mode), 2 32-bit,
    /// 3 PAE, 4 long mode. Why: shadows of all modes live side by side in
    /// one cache (an AP in real mode while the BSP runs in long mode, mode
    /// toggles hitting the cache), and one gfn read as a 32-bit table (4-byte
    /// entries) means something else than read as a PAE or long table.
    pub const fn glevels(self) -> u8 {
        ((self.0 >> GLEVELS_SHIFT) & 0xf) as u8
    }
    /// Level of this shadow page (1 = page table .. 4 = PML4). Why: one guest
    /// page used as both a PT and a PD (a self-map) gets one shadow per level.
    pub const fn level(self) -> u8 {
        ((self.0 >> LEVEL_SHIFT) & 0xf) as u8
    }
    /// Which part of a 32-bit guest table this shadow covers. Why: a 32-bit
    /// PT (1024 entries, 4 MiB) needs two PAE-format shadow PTs (512
    /// entries, 2 MiB each), and a 32-bit PD (4 GiB) four shadow PDs (1 GiB
    /// each); see [`quadrant_of`].
    pub const fn quadrant(self) -> u8 {
        ((self.0 >> QUADRANT_SHIFT) & 3) as u8
    }
    /// No guest table backs this shadow (no paging identity map, or a guest
    /// large page split into 4 KiB shadow entries); the gfn is the first
    /// guest frame the page maps. Why: such pages must not write-protect
    /// their gfn, and must never be confused with a shadow of a real guest
    /// table at the same gfn.
    pub const fn metaphysical(self) -> bool {
        self.0 & METAPHYSICAL != 0
    }
    /// Inherited U/W/X of the guest path above (for metaphysical pages of a
    /// large page, including the large entry and its D bit). Why: the leaf
    /// entries of this page carry these permissions, so two parents with
    /// different permissions pointing at one guest table must not share a
    /// shadow (CVE-2021-38198); X is part of it because an NX large page and
    /// an executable alias of the same frames must not share either.
    pub const fn access(self) -> Access {
        Access::from_bits(((self.0 >> ACCESS_SHIFT) & 7) as u8)
    }
    /// Guest CR0.WP. Why: with WP=0, supervisor writes to read-only pages
    /// are allowed, so leaves are built writable and supervisor-only; such
    /// shadows must not be reused once WP=1.
    pub const fn cr0_wp(self) -> bool {
        self.0 & CR0_WP != 0
    }
    /// Guest EFER.NXE (PAE and long mode only). Why: with NXE=0 bit 63 of a
    /// PAE/long entry is reserved (a fault), with NXE=1 it is XD; shadows
    /// built under one meaning must not serve the other.
    pub const fn efer_nx(self) -> bool {
        self.0 & EFER_NX != 0
    }
    /// CR4.SMEP && !CR0.WP. Why: the WP=0 emulation turns user pages into
    /// supervisor pages; under SMEP such leaves also get NX, and leaves
    /// built without SMEP (no NX) must not be reused with SMEP on.
    pub const fn smep_andnot_wp(self) -> bool {
        self.0 & SMEP_ANDNOT_WP != 0
    }
    /// CR4.SMAP && !CR0.WP. Why: a user page turned supervisor by the WP=0
    /// emulation escapes SMAP; shadows built with SMAP off must not be reused
    /// with SMAP on.
    pub const fn smap_andnot_wp(self) -> bool {
        self.0 & SMAP_ANDNOT_WP != 0
    }
    /// Zapped while still a loaded root: out of the hash table, kept until
    /// every vCPU has unloaded it. Why: the hardware may still be walking it.
    pub const fn invalid(self) -> bool {
        self.0 & INVALID != 0
    }

    /// Guest CR4.PSE, 32-bit guests only (0 otherwise). Why: it decides
    /// whether bit 7 of a 32-bit PDE maps a 4 MiB page or is ignored (the
    /// PDE then points at a page table), so a shadow PD built under one
    /// setting links other children than the guest walk under the other.
    pub const fn cr4_pse(self) -> bool {
        self.0 & CR4_PSE != 0
    }
    /// With `cr4_pse` replaced.
    pub const fn with_cr4_pse(self, pse: bool) -> Role {
        Role(if pse {
            self.0 | CR4_PSE
        } else {
            self.0 & !CR4_PSE
        })
    }

    /// A role from its fields.
    #[allow(clippy::too_many_arguments)]
    pub const fn new(
        glevels: u8,
        level: u8,
        quadrant: u8,
        metaphysical: bool,
        access: Access,
    ) -> Role {
        let mut w = ((glevels as u32 & 0xf) << GLEVELS_SHIFT)
            | ((level as u32 & 0xf) << LEVEL_SHIFT)
            | ((quadrant as u32 & 3) << QUADRANT_SHIFT)
            | ((access.bits() as u32) << ACCESS_SHIFT);
        if metaphysical {
            w |= METAPHYSICAL;
        }
        Role(w)
    }
    /// With `level` replaced.
    pub const fn with_level(self, level: u8) -> Role {
        Role((self.0 & !(0xf << LEVEL_SHIFT)) | ((level as u32 & 0xf) << LEVEL_SHIFT))
    }
    /// With `quadrant` replaced.
    pub const fn with_quadrant(self, q: u8) -> Role {
        Role((self.0 & !(3 << QUADRANT_SHIFT)) | ((q as u32 & 3) << QUADRANT_SHIFT))
    }
    /// With `metaphysical` replaced.
    pub const fn with_metaphysical(self, m: bool) -> Role {
        Role(if m {
            self.0 | METAPHYSICAL
        } else {
            self.0 & !METAPHYSICAL
        })
    }
    /// With `access` replaced.
    pub const fn with_access(self, a: Access) -> Role {
        Role((self.0 & !(7 << ACCESS_SHIFT)) | ((a.bits() as u32) << ACCESS_SHIFT))
    }
    /// With the paging-context bits replaced (normalised by the caller).
    pub const fn with_context(
        self,
        cr0_wp: bool,
        efer_nx: bool,
        smep_andnot_wp: bool,
        smap_andnot_wp: bool,
    ) -> Role {
        let mut w = self.0 & !(CR0_WP | EFER_NX | SMEP_ANDNOT_WP | SMAP_ANDNOT_WP);
        if cr0_wp {
            w |= CR0_WP;
        }
        if efer_nx {
            w |= EFER_NX;
        }
        if smep_andnot_wp {
            w |= SMEP_ANDNOT_WP;
        }
        if smap_andnot_wp {
            w |= SMAP_ANDNOT_WP;
        }
        Role(w)
    }
    /// With `invalid` set.
    pub const fn with_invalid(self) -> Role {
        Role(self.0 | INVALID)
    }
    /// Whether a page with role `self` is the one the cache key (gfn,
    /// `other`) names: equal roles (with `invalid`, so a zapped page never
    /// matches a lookup).
    pub const fn key_eq(self, other: Role) -> bool {
        (self.0 ^ other.0) & !KEY_IGNORED == 0
    }
    /// The role without `invalid` (what the key compares).
    pub const fn valid(self) -> Role {
        Role(self.0 & !INVALID)
    }
    /// The role field by field, as the role-coverage table prints it
    /// (`shared::coverage`; `invalid` is left out).
    pub const fn value(self) -> shared::coverage::RoleValue {
        shared::coverage::RoleValue {
            glevels: self.glevels(),
            level: self.level(),
            quadrant: self.quadrant(),
            metaphysical: self.metaphysical(),
            access: self.access().bits(),
            cr0_wp: self.cr0_wp(),
            efer_nx: self.efer_nx(),
            smep_andnot_wp: self.smep_andnot_wp(),
            smap_andnot_wp: self.smap_andnot_wp(),
            cr4_pse: self.cr4_pse(),
        }
    }
    /// Bytes per guest entry of the table this page shadows.
    pub const fn gpte_size(self) -> u64 {
        if self.glevels() == 2 {
            4
        } else {
            8
        }
    }
}

impl fmt::Debug for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Role({:#x}: g{} l{} q{}{} {:?}{}{}{}{}{}{})",
            self.0,
            self.glevels(),
            self.level(),
            self.quadrant(),
            if self.metaphysical() { " meta" } else { "" },
            self.access(),
            if self.cr0_wp() { " wp" } else { "" },
            if self.efer_nx() { " nx" } else { "" },
            if self.smep_andnot_wp() {
                " smep&!wp"
            } else {
                ""
            },
            if self.smap_andnot_wp() {
                " smap&!wp"
            } else {
                ""
            },
            if self.invalid() { " INVALID" } else { "" },
            if self.cr4_pse() { " pse" } else { "" },
        )
    }
}

/// The quadrant of a 32-bit guest table that a shadow page at `level`
/// covering guest-virtual `gaddr` shadows: 32-bit tables have 10 index bits
/// per level, PAE-format shadows 9, so a level-1 shadow covers half a guest
/// PT (bit 21) and a level-2 shadow a quarter of the guest PD (bits 31:30).
pub const fn quadrant_of(gaddr: u64, level: u8) -> u8 {
    let shift = 12 + 9 * level as u32;
    ((gaddr >> shift) & ((1u64 << level) - 1)) as u8
}

/// The shadow PDE indexes (in quadrant `.0`) that a 32-bit guest PDE `i`
/// (0..1024) maps: each guest PDE covers 4 MiB = two 2 MiB shadow PDEs.
pub const fn pde32_shadow_slots(i: usize) -> (u8, [usize; 2]) {
    ((i / 256) as u8, [2 * (i % 256), 2 * (i % 256) + 1])
}
