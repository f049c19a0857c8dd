//! The production guest page walker: translates a guest-virtual address
//! through the guest's own tables in any of the four modes (no paging,
//! 32-bit with PSE, PAE with latched PDPTEs, 4-level with 2 MiB / 1 GiB
//! pages), computes the effective permissions, the #PF error code, and sets
//! the accessed/dirty flags the processor would set (SDM Vol. 3A 4.3-4.8).

use super::role::Access;
use super::spte::*;
use super::GuestMemory;

/// The guest's paging mode (SDM Vol. 3A 4.1.1, Table 4-1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GuestMode {
    /// CR0.PG = 0 (real mode or protected mode without paging).
    NoPaging,
    /// 32-bit paging (CR0.PG = 1, CR4.PAE = 0).
    Bits32,
    /// PAE paging (CR4.PAE = 1, EFER.LMA = 0).
    Pae,
    /// 4-level paging (EFER.LMA = 1).
    Long,
}

impl GuestMode {
    /// The role's `glevels` value.
    pub const fn glevels(self) -> u8 {
        match self {
            GuestMode::NoPaging => 0,
            GuestMode::Bits32 => 2,
            GuestMode::Pae => 3,
            GuestMode::Long => 4,
        }
    }
}

/// Kind of a memory access.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AccessKind {
    /// Data read.
    Read,
    /// Data write.
    Write,
    /// Instruction fetch.
    Fetch,
}

/// One memory access: what and at which privilege (user = CPL 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MemAccess {
    /// Read, write or fetch.
    pub kind: AccessKind,
    /// User-mode access (CPL 3); supervisor otherwise.
    pub user: bool,
}

impl MemAccess {
    /// The access a hardware #PF error code describes. The hardware runs with
    /// EFER.NXE = 1 and CR4.PAE = 1, so I/D is set for every fetch.
    pub const fn from_error_code(ec: u32) -> MemAccess {
        let kind = if ec & PFEC_I != 0 {
            AccessKind::Fetch
        } else if ec & PFEC_W != 0 {
            AccessKind::Write
        } else {
            AccessKind::Read
        };
        MemAccess {
            kind,
            user: ec & PFEC_U != 0,
        }
    }
}

/// Paging-related guest state a walk depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PagingCtx {
    /// Mode.
    pub mode: GuestMode,
    /// Guest CR3.
    pub cr3: u64,
    /// PDPTEs latched at the last CR3 load (PAE).
    pub pdptes: [u64; 4],
    /// CR0.WP.
    pub wp: bool,
    /// EFER.NXE.
    pub nxe: bool,
    /// CR4.PSE.
    pub pse: bool,
    /// CR4.SMEP.
    pub smep: bool,
    /// CR4.SMAP.
    pub smap: bool,
    /// EFLAGS.AC=1 at CPL < 3: SMAP then allows explicit supervisor data
    /// accesses to user pages (SDM Vol. 3A 4.6.1). A #PF exit does not say
    /// whether a supervisor access was explicit or implicit; like KVM, one
    /// at CPL < 3 with AC=1 is taken as explicit.
    pub ac: bool,
    /// Guest MAXPHYADDR.
    pub maxphyaddr: u8,
}

/// A guest paging-structure entry read by a walk (after A/D updates).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalkedEntry {
    /// Where the entry is.
    pub gpa: u64,
    /// Its value (as updated by the walk).
    pub value: u64,
    /// 4 or 8 bytes.
    pub size: u8,
}

/// A successful translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestWalk {
    /// Guest-physical address of the access.
    pub gpa: u64,
    /// Level of the leaf entry: 1 = 4 KiB, 2 = 2/4 MiB, 3 = 1 GiB page;
    /// 3 without paging (identity, shadowed by metaphysical pages only).
    pub leaf_level: u8,
    /// `table_gfn[l]`: gfn of the guest table at level `l` (l >= leaf_level).
    pub table_gfn: [u64; 5],
    /// `inherited[l]`: access of the entries above the table at level `l`.
    pub inherited: [Access; 5],
    /// Effective access (all levels, XD folded in only under PAE/long+NXE).
    pub access: Access,
    /// D flag of the leaf entry (after the walk's own update).
    pub dirty: bool,
    /// Entries read, top-down (not the latched PAE PDPTEs).
    pub entries: [WalkedEntry; 4],
    /// How many of `entries` are used.
    pub n_entries: usize,
}

/// Why a walk did not produce a translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalkError {
    /// Page fault with this error code.
    Fault(u32),
    /// A paging-structure entry lies outside guest RAM.
    OutsideRam(u64),
}

/// Bits `hi..=lo` set.
const fn bits(hi: u32, lo: u32) -> u64 {
    ((!0u64) >> (63 - hi)) & !((1u64 << lo) - 1)
}

/// Reserved bits of a present entry at `level` (SDM Vol. 3A Tables 4-4..4-19).
pub(crate) fn reserved_mask(ctx: &PagingCtx, level: u8, value: u64) -> u64 {
    let m = ctx.maxphyaddr as u32;
    let ps = value & PS != 0;
    match ctx.mode {
        GuestMode::NoPaging => 0,
        GuestMode::Bits32 => {
            if level == 2 && ps && ctx.pse {
                // PSE-36: bits (M-20):13 hold address bits (M-1):32; 21:(M-19) reserved.
                let lo = m.min(40) - 19;
                bits(21, lo)
            } else {
                0
            }
        }
        GuestMode::Pae | GuestMode::Long => {
            let mut r = if ctx.mode == GuestMode::Pae {
                bits(62, m)
            } else {
                bits(51, m)
            };
            if !ctx.nxe {
                r |= XD;
            }
            match (level, ps) {
                (4, _) => r | PS,
                (3, true) => r | bits(29, 13),
                (2, true) => r | bits(20, 13),
                _ => r,
            }
        }
    }
}

/// Do the guest's effective permissions allow `acc`? (SDM Vol. 3A 4.6.1.)
/// SMAP forbids supervisor data accesses to user pages unless
/// [`PagingCtx::ac`]; with AC=1 CR0.WP still decides writes to read-only
/// user pages.
pub fn permits(ctx: &PagingCtx, a: Access, acc: MemAccess) -> bool {
    if ctx.mode == GuestMode::NoPaging {
        return true;
    }
    let user_page = a.has(Access::U);
    if acc.user {
        return user_page
            && match acc.kind {
                AccessKind::Read => true,
                AccessKind::Write => a.has(Access::W),
                AccessKind::Fetch => a.has(Access::X),
            };
    }
    let smap_blocks = ctx.smap && !ctx.ac && user_page;
    match acc.kind {
        AccessKind::Read => !smap_blocks,
        AccessKind::Write => !smap_blocks && (a.has(Access::W) || !ctx.wp),
        AccessKind::Fetch => a.has(Access::X) && !(ctx.smep && user_page),
    }
}

/// The #PF error code for `acc` (SDM Vol. 3A 4.7).
pub fn error_code(ctx: &PagingCtx, acc: MemAccess, protection: bool, rsvd: bool) -> u32 {
    let mut ec = 0;
    if protection || rsvd {
        ec |= PFEC_P;
    }
    if acc.kind == AccessKind::Write {
        ec |= PFEC_W;
    }
    if acc.user {
        ec |= PFEC_U;
    }
    if rsvd {
        ec |= PFEC_RSVD;
    }
    let nx_in_use = ctx.nxe && matches!(ctx.mode, GuestMode::Pae | GuestMode::Long);
    if acc.kind == AccessKind::Fetch && (ctx.smep || nx_in_use) {
        ec |= PFEC_I;
    }
    ec
}

fn read_entry(mem: &impl GuestMemory, gpa: u64, size: u8) -> Option<u64> {
    if size == 4 {
        mem.read_u32(gpa).map(u64::from)
    } else {
        mem.read_u64(gpa)
    }
}

/// Sets A/D flags in an entry read as `old`: false when the entry changed
/// since it was read (another vCPU stored to it), and nothing was written.
fn update_entry(mem: &mut impl GuestMemory, gpa: u64, size: u8, old: u64, v: u64) -> bool {
    // The entry was just read from RAM, so it is inside RAM.
    if size == 4 {
        mem.cmpxchg_u32(gpa, old as u32, v as u32)
    } else {
        mem.cmpxchg_u64(gpa, old, v)
    }
    .unwrap_or(false)
}

/// Access granted by one entry.
pub(crate) fn entry_access(ctx: &PagingCtx, v: u64) -> Access {
    let mut a = Access::X;
    if v & RW != 0 {
        a = a.or(Access::W);
    }
    if v & US != 0 {
        a = a.or(Access::U);
    }
    if ctx.nxe && matches!(ctx.mode, GuestMode::Pae | GuestMode::Long) && v & XD != 0 {
        a = a.without(Access::X);
    }
    a
}

/// Translate `gva` for `acc`. On success, and only then, sets the A flag of
/// every entry used and the D flag of the leaf for a write (SDM Vol. 3A 4.8),
/// each with a compare-exchange; when an entry changed between its read and
/// its update (a store from another vCPU), the walk starts again, as the
/// processor's locked update would have seen the new value.
pub fn walk(
    ctx: &PagingCtx,
    mem: &mut impl GuestMemory,
    gva: u64,
    acc: MemAccess,
) -> Result<GuestWalk, WalkError> {
    loop {
        let mut raced = false;
        let r = walk_once(ctx, mem, gva, acc, &mut raced);
        if !raced {
            return r;
        }
    }
}

/// One walk; sets `raced` when an A/D update found its entry changed (the
/// result is then meaningless and the walk must be redone).
fn walk_once(
    ctx: &PagingCtx,
    mem: &mut impl GuestMemory,
    gva: u64,
    acc: MemAccess,
    raced: &mut bool,
) -> Result<GuestWalk, WalkError> {
    let mut w = GuestWalk {
        gpa: 0,
        leaf_level: 3,
        table_gfn: [0; 5],
        inherited: [Access::FULL; 5],
        access: Access::FULL,
        dirty: true,
        entries: [WalkedEntry::default(); 4],
        n_entries: 0,
    };
    let (size, idx_bits, mut level, mut table) = match ctx.mode {
        GuestMode::NoPaging => {
            w.gpa = gva & 0xffff_ffff;
            return Ok(w);
        }
        GuestMode::Bits32 => (4u8, 10u32, 2u8, ctx.cr3 & 0xffff_f000),
        GuestMode::Long => (8, 9, 4, ctx.cr3 & ADDR_MASK_64),
        GuestMode::Pae => {
            let pdpte = ctx.pdptes[((gva >> 30) & 3) as usize];
            if pdpte & P == 0 {
                return Err(WalkError::Fault(error_code(ctx, acc, false, false)));
            }
            (8, 9, 2, pdpte & ADDR_MASK_64)
        }
    };
    let gva = if ctx.mode == GuestMode::Long {
        gva
    } else {
        gva & 0xffff_ffff
    };
    let mut a = Access::FULL;
    loop {
        w.table_gfn[level as usize] = table >> 12;
        w.inherited[level as usize] = a;
        let shift = 12 + idx_bits * (level as u32 - 1);
        let idx = (gva >> shift) & ((1 << idx_bits) - 1);
        let egpa = table + idx * size as u64;
        let v = read_entry(mem, egpa, size).ok_or(WalkError::OutsideRam(egpa))?;
        if v & P == 0 {
            return Err(WalkError::Fault(error_code(ctx, acc, false, false)));
        }
        if v & reserved_mask(ctx, level, v) != 0 {
            return Err(WalkError::Fault(error_code(ctx, acc, false, true)));
        }
        w.entries[w.n_entries] = WalkedEntry {
            gpa: egpa,
            value: v,
            size,
        };
        w.n_entries += 1;
        a = a.and(entry_access(ctx, v));
        let large = level > 1
            && v & PS != 0
            && match ctx.mode {
                GuestMode::Bits32 => ctx.pse,
                _ => level <= 3,
            };
        if level == 1 || large {
            let off_mask = (1u64 << shift) - 1;
            w.gpa = if ctx.mode == GuestMode::Bits32 && large {
                (v & 0xffc0_0000) | (((v >> 13) & 0xff) << 32) | (gva & off_mask)
            } else if ctx.mode == GuestMode::Bits32 {
                (v & 0xffff_f000) | (gva & off_mask)
            } else {
                (v & ADDR_MASK_64 & !off_mask) | (gva & off_mask)
            };
            w.leaf_level = level;
            break;
        }
        table = if ctx.mode == GuestMode::Bits32 {
            v & 0xffff_f000
        } else {
            v & ADDR_MASK_64
        };
        level -= 1;
    }
    w.access = a;
    if !permits(ctx, a, acc) {
        return Err(WalkError::Fault(error_code(ctx, acc, true, false)));
    }
    let n = w.n_entries;
    for (i, e) in w.entries[..n].iter_mut().enumerate() {
        let mut nv = e.value | A;
        if i == n - 1 && acc.kind == AccessKind::Write {
            nv |= D;
        }
        if nv != e.value {
            if !update_entry(mem, e.gpa, e.size, e.value, nv) {
                *raced = true;
                return Ok(w);
            }
            e.value = nv;
        }
    }
    w.dirty = w.entries[n - 1].value & D != 0;
    Ok(w)
}

/// Re-read the entries of a walk: `true` if none changed since (used after
/// write-protecting a table of the walk, when another vCPU may have written
/// it through a mapping that was still writable).
pub fn still_valid(mem: &impl GuestMemory, w: &GuestWalk) -> bool {
    w.entries[..w.n_entries]
        .iter()
        .all(|e| read_entry(mem, e.gpa, e.size) == Some(e.value))
}

impl PagingCtx {
    /// The part of the paging context a shadow page's role pins down (used
    /// to interpret guest entries of that page: reserved bits, XD, PSE,
    /// CR0.WP). CR3, PDPTEs and SMEP/SMAP with WP=1 are not needed there.
    pub fn for_role(role: super::role::Role, maxphyaddr: u8) -> PagingCtx {
        let mode = match role.glevels() {
            2 => GuestMode::Bits32,
            3 => GuestMode::Pae,
            4 => GuestMode::Long,
            _ => GuestMode::NoPaging,
        };
        PagingCtx {
            mode,
            cr3: 0,
            pdptes: [0; 4],
            wp: role.cr0_wp(),
            nxe: role.efer_nx(),
            pse: role.cr4_pse(),
            smep: role.smep_andnot_wp(),
            smap: role.smap_andnot_wp(),
            ac: false,
            maxphyaddr,
        }
    }
}

/// What a present, accessed leaf guest entry grants in the shadow, before
/// write tracking: effective access minus W until D is set; with CR0.WP=0 a
/// supervisor page is writable once dirty (supervisor writes ignore R/W).
/// `sup_write` selects the WP=0 variant for a supervisor write to a
/// read-only user page: writable but supervisor-only (and NX under SMEP).
pub(crate) fn shadow_access(
    ctx: &PagingCtx,
    effective: Access,
    dirty: bool,
    sup_write: bool,
) -> Access {
    if ctx.mode == GuestMode::NoPaging {
        return Access::FULL;
    }
    let mut a = effective;
    if !ctx.wp && dirty {
        if !a.has(Access::U) {
            a = a.or(Access::W);
        } else if !a.has(Access::W) && sup_write {
            a = a.or(Access::W).without(Access::U);
            if ctx.smep {
                a = a.without(Access::X);
            }
        }
    }
    if !dirty {
        a = a.without(Access::W);
    }
    a
}
