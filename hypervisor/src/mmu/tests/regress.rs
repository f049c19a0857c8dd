//! Named regression tests: one per role bit and per item of DESIGN.md
//! section 2. Each was checked to fail when its bit or fix is removed by
//! hand (role bits: dropped from the key comparison in `cache::lookup`):
//!
//! | removed | named test that fails |
//! |---|---|
//! | `access` U/W | `role_access_uw_upper_level_aliases_do_not_share` |
//! | `access` X (NX) | `role_access_nx_large_page_aliases_do_not_share` |
//! | `cr0_wp` | `role_cr0_wp_shadows_built_with_wp0_not_reused_with_wp1` |
//! | `efer_nx` | `role_efer_nx_bit63_reserved_without_nxe` |
//! | `smep_andnot_wp` | `role_smep_andnot_wp` |
//! | `smap_andnot_wp` | `role_smap_andnot_wp` |
//! | `invalid` (free a zapped loaded root) | `role_invalid_zapped_root_stays_until_unloaded` |
//! | `cr4_pse` | `role_cr4_pse_changes_pde_meaning` |
//! | `glevels` | `role_glevels_same_gfn_32bit_then_pae` |
//! | `level` | `role_level_page_as_pd_and_pt` |
//! | `quadrant` | `role_quadrant_32bit_pt_halves` |
//! | `metaphysical` | `role_metaphysical_large_page_vs_page_table` |
//! | 32-bit PDE rule | `pde32_write_updates_both_halves_in_right_quadrant` |
//! | remote flush on write protect | `write_protect_flushes_remote_vcpus` |
//! | re-validate after write protect | `revalidate_guest_pte_after_write_protect` |
//!
//! The property test also catches every removal but the last.

use super::harness::*;
use super::refwalk::RefOutcome::{PageFault, Phys};
use crate::mmu::cache::SlotState;
use crate::mmu::events::Root;
use crate::mmu::*;

fn world(ncpu: usize) -> World {
    World::new(64, 64, ncpu, true)
}

/// Long mode: PML4 at frame 1, PDPT 2, PD 3, PT 4 (entry 0 of each).
fn long_chain(w: &mut World, pte0: u64) {
    w.poke(f(1), 8, f(2) | T);
    w.poke(f(2), 8, f(3) | T);
    w.poke(f(3), 8, f(4) | T);
    w.poke(f(4), 8, pte0);
    assert!(w.load_cr3(0, f(1)));
}

/// 32-bit: PD at frame 1, PDE 0 -> PT 2, PTE 0 = `pte0`.
fn chain32(w: &mut World, c: usize, pte0: u64) {
    w.poke(f(1), 4, f(2) | T);
    w.poke(f(2), 4, pte0);
    assert!(w.load_cr3(c, f(1)));
}

// ---- role bits and DESIGN.md section 2 -------------------------------------

/// `access` U/W (CVE-2021-38198): two PML4Es, one read-only, point at one
/// PDPT; the read-only path must not share the writable path's shadows.
#[test]
fn role_access_uw_upper_level_aliases_do_not_share() {
    let mut w = world(1);
    long_chain(&mut w, f(10) | T | D);
    w.poke(f(1) + 8, 8, f(2) | P | US | A); // PML4E 1: read-only alias
    w.mode(0, GuestMode::Long, true, true, false, false, false);
    assert_eq!(w.go(0, 1 << 39 | 0x10, rd(true)), Phys(0xa010)); // builds the read-only path
    assert_eq!(w.go(0, 0x10, wr(true)), Phys(0xa010)); // writable leaf via the other path
    assert_eq!(w.go(0, 1 << 39 | 0x10, wr(true)), PageFault(7));
    w.check();
}

/// NX in `access`: an NX large page and an executable alias of the same
/// frames must not share the metaphysical shadow.
#[test]
fn role_access_nx_large_page_aliases_do_not_share() {
    let mut w = world(1);
    w.poke(f(1), 8, f(2) | T);
    w.poke(f(2), 8, f(3) | T);
    w.poke(f(3), 8, P | RW | A | D | PS | XD); // PDE 0: 2 MiB at 0, NX
    w.poke(f(3) + 8, 8, P | RW | A | D | PS); // PDE 1: same frames, executable
    assert!(w.load_cr3(0, f(1)));
    w.mode(0, GuestMode::Long, true, true, false, false, false);
    assert_eq!(w.go(0, 0x3000, rd(false)), Phys(0x3000)); // builds the NX path
    assert_eq!(w.go(0, 0x20_3000, fx(false)), Phys(0x3000)); // executable leaf via the alias
    assert_eq!(w.go(0, 0x3000, fx(false)), PageFault(0x11));
    w.check();
}

/// `cr0_wp`: a supervisor write to a read-only user page with WP=0 is
/// allowed; the writable shadow must not survive into WP=1.
#[test]
fn role_cr0_wp_shadows_built_with_wp0_not_reused_with_wp1() {
    let mut w = world(1);
    chain32(&mut w, 0, f(10) | P | US | A | D);
    w.mode(0, GuestMode::Bits32, false, false, false, false, false);
    assert_eq!(w.go(0, 0x10, wr(false)), Phys(0xa010));
    assert_eq!(w.go(0, 0x10, rd(true)), Phys(0xa010)); // flips to U=1,W=0
    assert_eq!(w.go(0, 0x10, wr(false)), Phys(0xa010)); // and back
    w.mode(0, GuestMode::Bits32, true, false, false, false, false);
    assert_eq!(w.go(0, 0x10, wr(false)), PageFault(3));
    w.check();
}

/// `efer_nx`: with NXE=0 bit 63 is reserved, with NXE=1 it is XD.
#[test]
fn role_efer_nx_bit63_reserved_without_nxe() {
    let mut w = world(1);
    long_chain(&mut w, f(10) | T | D | XD);
    w.mode(0, GuestMode::Long, true, true, false, false, false);
    assert_eq!(w.go(0, 0x10, rd(false)), Phys(0xa010));
    assert_eq!(w.go(0, 0x10, fx(false)), PageFault(0x11));
    w.mode(0, GuestMode::Long, true, false, false, false, false);
    assert_eq!(w.go(0, 0x10, rd(false)), PageFault(0x9));
    w.check();
}

/// `smep_andnot_wp`: a user page made supervisor by the WP=0 emulation
/// must be NX under SMEP; leaves built without SMEP are not reused.
#[test]
fn role_smep_andnot_wp() {
    let mut w = world(1);
    chain32(&mut w, 0, f(10) | P | US | A | D);
    w.mode(0, GuestMode::Bits32, false, false, false, false, false);
    assert_eq!(w.go(0, 0x10, wr(false)), Phys(0xa010));
    w.mode(0, GuestMode::Bits32, false, false, false, true, false);
    assert_eq!(w.go(0, 0x10, fx(false)), PageFault(0x11));
    assert_eq!(w.go(0, 0x10, wr(false)), Phys(0xa010)); // made supervisor + NX
    assert_eq!(w.go(0, 0x10, fx(false)), PageFault(0x11));
    w.check();
}

/// `smap_andnot_wp`: a user page made supervisor by the WP=0 emulation
/// escapes SMAP; leaves built with SMAP off are not reused with SMAP on.
#[test]
fn role_smap_andnot_wp() {
    let mut w = world(1);
    chain32(&mut w, 0, f(10) | P | US | A | D);
    w.mode(0, GuestMode::Bits32, false, false, false, false, false);
    assert_eq!(w.go(0, 0x10, wr(false)), Phys(0xa010));
    w.mode(0, GuestMode::Bits32, false, false, false, false, true);
    assert_eq!(w.go(0, 0x10, rd(false)), PageFault(0x1));
    w.check();
}

/// SMAP with CR0.WP=0 (SDM Vol. 3A 4.6.1): a supervisor write with
/// EFLAGS.AC=1 to a read-only user page is allowed, with AC=0 it is #PF 0x3.
/// The allowed write is emulated and the leaf stays user and read-only, so
/// a later supervisor read with AC=0 still faults (0x1); the WP=0 trick
/// (a supervisor-only writable leaf) would let it through.
#[test]
fn smap_wp0_ac_write_to_user_ro_page_is_emulated() {
    let mut w = world(1);
    chain32(&mut w, 0, f(10) | P | US | A | D);
    w.mode(0, GuestMode::Bits32, false, false, false, false, true);
    let out = w.cache.page_fault(&mut w.cpus[0].mmu, &mut w.mem, 0x10, 0x2);
    assert!(matches!(out, FaultOutcome::InjectPf { error_code: 0x3, .. }), "AC=0: {out:?}");
    w.cpus[0].mmu.set_explicit_ac(true);
    let out = w.cache.page_fault(&mut w.cpus[0].mmu, &mut w.mem, 0x10, 0x2);
    assert!(matches!(out, FaultOutcome::EmulateWrite { gpa: 0xa010, .. }), "AC=1: {out:?}");
    w.cpus[0].mmu.set_explicit_ac(false);
    assert_eq!(w.go(0, 0x10, rd(false)), PageFault(0x1));
    assert_eq!(w.go(0, 0x10, rd(true)), Phys(0xa010));
    w.check();
    // When the core cannot emulate the instruction, the retried write runs
    // natively once (leaf made supervisor-writable), instead of looping.
    w.cpus[0].mmu.set_explicit_ac(true);
    w.cpus[0].mmu.smap_wp0_emulation_failed();
    let out = w.cache.page_fault(&mut w.cpus[0].mmu, &mut w.mem, 0x10, 0x3);
    assert!(matches!(out, FaultOutcome::Fixed { .. }), "native fallback: {out:?}");
    assert!(!w.cpus[0].mmu.smap_wp0_native, "the fallback is used once");
}

/// SMAP with EFLAGS.AC=1 at CPL 0: explicit supervisor reads of a user
/// page are allowed, implicit ones (which the #PF exit cannot tell apart)
/// are not (SDM Vol. 3A 4.6.1). A fault the hardware repeats on a shadow
/// leaf that already grants the access is an implicit access: #PF 0x1 is
/// injected instead of re-entering forever. A new fault after INVLPG is a
/// fresh start.
#[test]
fn smap_ac_repeated_refusal_is_an_implicit_access() {
    let mut w = world(1);
    chain32(&mut w, 0, f(10) | P | RW | US | A | D);
    w.mode(0, GuestMode::Bits32, true, false, false, false, true);
    w.cpus[0].mmu.set_explicit_ac(true);
    let pf = |w: &mut World, ec| w.cache.page_fault(&mut w.cpus[0].mmu, &mut w.mem, 0x10, ec);
    assert!(matches!(pf(&mut w, 0), FaultOutcome::Fixed { .. }), "not present: build the leaf");
    assert!(matches!(pf(&mut w, 1), FaultOutcome::Fixed { .. }), "first refusal: maybe a stale TLB entry");
    let out = pf(&mut w, 1);
    assert!(matches!(out, FaultOutcome::InjectPf { error_code: 0x1, cr2: 0x10, .. }), "{out:?}");
    let _ = w.cache.invlpg(&mut w.cpus[0].mmu, 0x10);
    assert!(matches!(pf(&mut w, 0), FaultOutcome::Fixed { .. }), "after INVLPG");
    assert!(matches!(pf(&mut w, 1), FaultOutcome::Fixed { .. }), "a single refusal");
}

/// `invalid`: zapping the loaded root (flooding the current PD) keeps it
/// allocated, out of the hash, until the vCPU unloads it; the guest runs on.
#[test]
fn role_invalid_zapped_root_stays_until_unloaded() {
    let mut w = world(1);
    chain32(&mut w, 0, f(10) | T);
    w.mode(0, GuestMode::Bits32, true, false, false, false, false);
    assert_eq!(w.go(0, 0x10, rd(false)), Phys(0xa010));
    let Root::Pae(r) = w.cpus[0].mmu.root else {
        panic!()
    };
    let root0 = r[0].unwrap();
    for i in 0..3u64 {
        w.phys_write(0, f(1) + 0x800 + 4 * i, 4, 0); // flood the PD
    }
    assert_eq!(w.cache.stats().unshadows, 1);
    match &w.cache.slots[root0 as usize].state {
        SlotState::Page(p) => assert!(p.role.invalid() && p.root_count == 1),
        s => panic!("loaded root freed: {s:?}"),
    }
    w.check();
    assert_eq!(w.go(0, 0x10, rd(false)), Phys(0xa010));
    let Root::Pae(r) = w.cpus[0].mmu.root else {
        panic!()
    };
    assert!(
        r.iter()
            .flatten()
            .all(|&id| !w.cache.page(id).role.invalid()),
        "reloaded root is valid"
    );
    w.check();
}

/// 32-bit PDE write rule: guest PDE i -> shadow PDEs 2*(i%256) and
/// 2*(i%256)+1 in quadrant i/256 (both 2 MiB halves, right quarter root).
#[test]
fn pde32_write_updates_both_halves_in_right_quadrant() {
    let mut w = world(1);
    w.poke(f(1) + 257 * 4, 4, f(2) | T);
    for (pt, lo, hi) in [(2, 10, 11), (3, 12, 13)] {
        w.poke(f(pt), 4, f(lo) | T);
        w.poke(f(pt) + 512 * 4, 4, f(hi) | T);
    }
    assert!(w.load_cr3(0, f(1)));
    w.mode(0, GuestMode::Bits32, true, false, false, false, false);
    let (a, b) = (0x4040_0000, 0x4060_0000);
    assert_eq!(w.go(0, a, rd(false)), Phys(0xa000));
    assert_eq!(w.go(0, b, rd(false)), Phys(0xb000));
    w.phys_write(0, f(1) + 257 * 4, 4, f(3) | T);
    assert_eq!(w.go(0, b, rd(false)), Phys(0xd000));
    assert_eq!(w.go(0, a, rd(false)), Phys(0xc000));
    w.check();
}

/// Remote TLB flush: write-protecting a page that another vCPU maps
/// writable must flush that vCPU too.
#[test]
fn write_protect_flushes_remote_vcpus() {
    let mut w = world(2);
    chain32(&mut w, 1, f(5) | T | D);
    w.mode(1, GuestMode::Bits32, true, false, false, false, false);
    assert_eq!(w.go(1, 0x10, wr(true)), Phys(0x5010)); // vCPU 1 maps frame 5 writable
    assert!(w.load_cr3(0, f(5)));
    let cpu0 = &mut w.cpus[0];
    let flush = w
        .cache
        .set_paging_mode(&mut cpu0.mmu, &w.mem, CR0_PE | CR0_PG | CR0_WP, 0, 0)
        .unwrap();
    cpu0.oracle.cr0 = CR0_PE | CR0_PG | CR0_WP;
    assert!(w.cache.is_write_protected(5));
    assert_eq!(
        flush.vcpus & 0b10,
        0b10,
        "vCPU 1 still has a writable TLB entry for the new page table"
    );
    w.check();
}

/// Re-validation: another vCPU writes a guest PTE (through a mapping still
/// writable until the write protection) between the walk and the shadow
/// build; the core must not map the stale translation.
#[test]
fn revalidate_guest_pte_after_write_protect() {
    let mut w = world(1);
    chain32(&mut w, 0, f(10) | P | RW | US); // A clear: the walk writes it
    w.mode(0, GuestMode::Bits32, true, false, false, false, false);
    let race = (f(11) | T) as u32;
    // The other vCPU's store lands right after the walker's A update.
    let mut racy = Racy::new(&mut w.mem, f(2), race, false);
    let out = w.cache.page_fault(&mut w.cpus[0].mmu, &mut racy, 0x10, 0);
    assert!(
        racy.fired && matches!(out, FaultOutcome::Fixed { .. }),
        "{out:?}"
    );
    w.oracle_ram[f(2) as usize..f(2) as usize + 4].copy_from_slice(&race.to_le_bytes());
    w.check();
    assert_eq!(w.go(0, 0x10, rd(false)), Phys(0xb010));
}

/// `glevels`: one frame is the 32-bit PD, then the PAE PD: the 4-byte and
/// 8-byte readings must not share shadows.
#[test]
fn role_glevels_same_gfn_32bit_then_pae() {
    let mut w = world(1);
    chain32(&mut w, 0, f(10) | T);
    w.poke(f(2) + 4, 4, f(11) | T); // PTE 1; as a PAE PTE 0 it has reserved bits
    w.mode(0, GuestMode::Bits32, true, false, false, false, false);
    assert_eq!(w.go(0, 0x10, rd(false)), Phys(0xa010));
    w.poke(f(20), 8, f(1) | P); // PDPT at frame 20: PDPTE 0 -> frame 1
    w.mode(0, GuestMode::NoPaging, true, false, false, false, false);
    assert!(w.load_cr3(0, f(20)));
    w.mode(0, GuestMode::Pae, true, false, false, false, false);
    assert_eq!(w.go(0, 0x10, rd(false)), PageFault(0x9));
    w.check();
}

/// `level`: one page used as PD and as PT (self-map) gets one shadow per level.
#[test]
fn role_level_page_as_pd_and_pt() {
    let mut w = world(1);
    w.poke(f(20), 8, f(1) | P); // PDPTE 0 -> PD frame 1
    w.poke(f(1), 8, f(2) | T); // PDE 0 -> PT frame 2
    w.poke(f(1) + 8, 8, f(1) | T); // PDE 1 -> frame 1 itself, as a PT
    w.poke(f(2), 8, f(10) | T);
    assert!(w.load_cr3(0, f(20)));
    w.mode(0, GuestMode::Pae, true, false, false, false, false);
    assert_eq!(w.go(0, 0x10, rd(false)), Phys(0xa010));
    // Through the window, entry 0 of the PD reads as a PTE -> frame 2.
    assert_eq!(w.go(0, 0x20_0010, rd(false)), Phys(0x2010));
    // PDE 1 read as PTE 1 maps the PD itself: write PDE 2 through it; the
    // new mapping works at once.
    w.poke(f(3), 8, f(12) | T);
    assert_eq!(
        w.access(0, 0x20_1000 + 2 * 8, wr(false), 8, f(3) | T),
        Phys(0x1010)
    );
    assert_eq!(w.go(0, 0x40_0010, rd(false)), Phys(0xc010));
    w.check();
}

/// `quadrant`: a 32-bit PT spans two PAE-format shadow PTs.
#[test]
fn role_quadrant_32bit_pt_halves() {
    let mut w = world(1);
    chain32(&mut w, 0, f(10) | T);
    w.poke(f(2) + 512 * 4, 4, f(11) | T);
    w.poke(f(1) + 4, 4, f(2) | T); // PDE 1 -> the same PT
    w.mode(0, GuestMode::Bits32, true, false, false, false, false);
    assert_eq!(w.go(0, 0x10, rd(false)), Phys(0xa010));
    assert_eq!(w.go(0, 0x20_0010, rd(false)), Phys(0xb010));
    assert_eq!(w.go(0, 0x40_0010, rd(false)), Phys(0xa010));
    assert_eq!(w.go(0, 0x60_0010, rd(false)), Phys(0xb010));
    w.check();
}

/// `metaphysical`: a large page's split shadow and a real shadow PT of the
/// same frame are different pages; and the frame stays write-tracked.
#[test]
fn role_metaphysical_large_page_vs_page_table() {
    let mut w = world(1);
    w.poke(f(20), 8, f(1) | P);
    w.poke(f(1), 8, P | RW | US | A | D | PS); // PDE 0: 2 MiB at frame 0
    w.poke(f(1) + 8, 8, T); // PDE 1 -> PT at frame 0
    w.poke(5 * 8, 8, f(12) | T); // frame 0 as PT: entry 5 -> frame 12
    assert!(w.load_cr3(0, f(20)));
    w.mode(0, GuestMode::Pae, true, false, false, false, false);
    assert_eq!(w.go(0, 0x5010, rd(true)), Phys(0x5010));
    assert_eq!(w.go(0, 0x20_5010, rd(true)), Phys(0xc010));
    assert_eq!(w.go(0, 0x5010, rd(true)), Phys(0x5010));
    // A write through the large page to the page table is trapped.
    w.access(0, 5 * 8, wr(true), 8, f(13) | T);
    assert_eq!(
        w.cache.stats().write_protect_faults,
        1,
        "frame 0 is a page table: a write through the large page must trap"
    );
    assert_eq!(w.go(0, 0x20_5010, rd(true)), Phys(0xd010));
    w.check();
}

/// `cr4_pse`: bit 7 of a 32-bit PDE maps 4 MiB only with CR4.PSE=1.
#[test]
fn role_cr4_pse_changes_pde_meaning() {
    let mut w = world(1);
    w.poke(f(1), 4, T | D | PS); // PDE 0: 4 MiB at 0, or PT at frame 0
    w.poke(5 * 4, 4, f(12) | T);
    assert!(w.load_cr3(0, f(1)));
    w.mode(0, GuestMode::Bits32, true, false, true, false, false);
    assert_eq!(w.go(0, 0x5010, rd(false)), Phys(0x5010));
    w.mode(0, GuestMode::Bits32, true, false, false, false, false);
    assert_eq!(w.go(0, 0x5010, rd(false)), Phys(0xc010));
    w.check();
}
