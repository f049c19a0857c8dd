//! Table-driven tests (`test-case`): role encoding, quadrant arithmetic,
//! #PF error codes of the production walker, and the 32-bit PDE rule.

use test_case::test_case;

use super::harness::*;
use crate::mmu::ptwrite::affected_sptes;
use crate::mmu::role::{pde32_shadow_slots, quadrant_of};
use crate::mmu::walk::{self, PagingCtx, WalkError};
use crate::mmu::*;

#[test_case(4, 4, 0, false, Access::FULL, 0x3844 ; "long root")]
#[test_case(2, 2, 3, false, Access::FULL, 0x3b22 ; "32-bit PD quadrant 3")]
#[test_case(2, 1, 1, false, Access::U, 0x1112 ; "32-bit PT upper half, user read-only")]
#[test_case(0, 2, 0, true, Access::FULL, 0x3c20 ; "no paging identity")]
#[test_case(3, 1, 0, true, Access::X.or(Access::W), 0x2c13 ; "PAE 2 MiB page, supervisor")]
fn role_encoding(glevels: u8, level: u8, quadrant: u8, meta: bool, access: Access, word: u32) {
    let r = Role::new(glevels, level, quadrant, meta, access);
    assert_eq!(r.word(), word);
    assert_eq!(
        (
            r.glevels(),
            r.level(),
            r.quadrant(),
            r.metaphysical(),
            r.access()
        ),
        (glevels, level, quadrant, meta, access)
    );
    assert_eq!(Role::from_word(word), r);
    assert!(!r.invalid() && r.with_invalid().invalid() && r.with_invalid().valid() == r);
}

#[test_case(true, false, false, false, false, 1 << 14 ; "cr0_wp")]
#[test_case(false, true, false, false, false, 1 << 15 ; "efer_nx")]
#[test_case(false, false, true, false, false, 1 << 16 ; "smep_andnot_wp")]
#[test_case(false, false, false, true, false, 1 << 17 ; "smap_andnot_wp")]
#[test_case(false, false, false, false, true, 1 << 19 ; "cr4_pse")]
fn role_context_bits(wp: bool, nx: bool, smep: bool, smap: bool, pse: bool, word: u32) {
    let r = Role::default()
        .with_context(wp, nx, smep, smap)
        .with_cr4_pse(pse);
    assert_eq!(r.word(), word);
    assert_eq!(
        (
            r.cr0_wp(),
            r.efer_nx(),
            r.smep_andnot_wp(),
            r.smap_andnot_wp(),
            r.cr4_pse()
        ),
        (wp, nx, smep, smap, pse)
    );
}

#[test_case(0x0000_0000, 1, 0 ; "PT lower half")]
#[test_case(0x0020_0000, 1, 1 ; "PT upper half")]
#[test_case(0x003f_f000, 1, 1 ; "PT last entry")]
#[test_case(0x0040_0000, 1, 0 ; "next PT lower half")]
#[test_case(0x0000_0000, 2, 0 ; "PD first quarter")]
#[test_case(0x4000_0000, 2, 1 ; "PD second quarter")]
#[test_case(0xbfff_ffff, 2, 2 ; "PD third quarter")]
#[test_case(0xc000_0000, 2, 3 ; "PD last quarter")]
fn quadrants(gaddr: u64, level: u8, q: u8) {
    assert_eq!(quadrant_of(gaddr, level), q);
}

#[test_case(0, 0, [0, 1] ; "PDE 0")]
#[test_case(255, 0, [510, 511] ; "PDE 255")]
#[test_case(256, 1, [0, 1] ; "PDE 256")]
#[test_case(511, 1, [510, 511] ; "PDE 511")]
#[test_case(512, 2, [0, 1] ; "PDE 512")]
#[test_case(1023, 3, [510, 511] ; "PDE 1023")]
fn pde32_rule(i: usize, q: u8, slots: [usize; 2]) {
    assert_eq!(pde32_shadow_slots(i), (q, slots));
    for quad in 0..4u8 {
        let r = Role::new(2, 2, quad, false, Access::FULL);
        let want = if quad == q {
            slots.to_vec()
        } else {
            Vec::new()
        };
        assert_eq!(affected_sptes(r, i), want);
    }
    // And a 32-bit PTE i lands in one half.
    let pt = Role::new(2, 1, (i / 512) as u8, false, Access::FULL);
    assert_eq!(affected_sptes(pt, i), alloc::vec![i % 512]);
}

fn ctx(mode: GuestMode, wp: bool, nxe: bool, smep: bool, smap: bool) -> PagingCtx {
    PagingCtx {
        mode,
        cr3: 0x1000,
        pdptes: [0x2000 | 1, 0, 0, 0],
        wp,
        nxe,
        pse: true,
        smep,
        smap,
        ac: false,
        maxphyaddr: 36,
    }
}

const U: u64 = 4;
const W: u64 = 2;
const PA: u64 = 0x21;
const XD: u64 = 1 << 63;

/// Error code / verdict for a leaf with `leaf` flags under a table entry
/// with all rights (SDM Vol. 3A 4.6, 4.7).
#[test_case(GuestMode::Long, true, true, false, false, U | W, wr(true), None ; "user write ok")]
#[test_case(GuestMode::Long, true, true, false, false, U, wr(true), Some(0x7) ; "user write read-only")]
#[test_case(GuestMode::Long, true, true, false, false, W, rd(true), Some(0x5) ; "user read supervisor page")]
#[test_case(GuestMode::Long, true, true, false, false, U | XD, fx(true), Some(0x15) ; "user fetch NX")]
#[test_case(GuestMode::Long, true, false, false, false, U | XD, rd(true), Some(0xd) ; "bit 63 reserved without NXE")]
#[test_case(GuestMode::Long, false, true, false, false, U, wr(false), None ; "WP=0 supervisor write read-only")]
#[test_case(GuestMode::Long, true, true, false, false, U, wr(false), Some(0x3) ; "WP=1 supervisor write read-only")]
#[test_case(GuestMode::Long, true, true, true, false, U, fx(false), Some(0x11) ; "SMEP")]
#[test_case(GuestMode::Long, true, true, false, true, U | W, rd(false), Some(0x1) ; "SMAP read")]
#[test_case(GuestMode::Long, false, true, false, true, U | W, wr(false), Some(0x3) ; "SMAP write with WP=0")]
#[test_case(GuestMode::Bits32, true, true, false, false, U, fx(true), None ; "32-bit has no NX")]
#[test_case(GuestMode::Bits32, true, true, false, false, 0, fx(true), Some(0x5) ; "32-bit fetch: no I/D without SMEP")]
#[test_case(GuestMode::Bits32, true, false, true, false, U, fx(false), Some(0x11) ; "32-bit SMEP sets I/D")]
#[test_case(GuestMode::Pae, true, true, false, false, U | XD, fx(false), Some(0x11) ; "PAE NX")]
#[test_case(GuestMode::Pae, true, false, false, false, 0, fx(false), None ; "PAE without NXE: fetch ok")]
#[test_case(GuestMode::Pae, true, true, false, false, U | (1 << 40), rd(true), Some(0xd) ; "PAE reserved address bit")]
#[allow(clippy::too_many_arguments)]
fn error_codes(
    mode: GuestMode,
    wp: bool,
    nxe: bool,
    smep: bool,
    smap: bool,
    leaf: u64,
    acc: MemAccess,
    want: Option<u32>,
) {
    let mut mem = TestMem::new(16);
    let c = ctx(mode, wp, nxe, smep, smap);
    let (sz, pde) = if mode == GuestMode::Bits32 {
        (4u8, 0x3000 | 7 | PA)
    } else {
        (8, 0x3000 | 7 | PA)
    };
    match mode {
        GuestMode::Long => {
            mem.w64(0x1000, 0x4000 | 7 | PA);
            mem.w64(0x4000, 0x2000 | 7 | PA);
            mem.w64(0x2000, pde);
        }
        GuestMode::Pae => mem.w64(0x2000, pde),
        _ => mem.w32(0x1000, pde as u32),
    }
    let pte = 0x5000 | 1 | leaf;
    if sz == 4 {
        mem.w32(0x3000, pte as u32);
    } else {
        mem.w64(0x3000, pte);
    }
    let r = walk::walk(&c, &mut mem, 0x10, acc);
    match want {
        None => assert_eq!(r.map(|w| w.gpa), Ok(0x5010)),
        Some(ec) => assert_eq!(r.map(|w| w.gpa), Err(WalkError::Fault(ec))),
    }
}
