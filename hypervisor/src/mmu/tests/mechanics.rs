//! Tests of the 2007 mechanics (DESIGN.md section 1) and of the event API:
//! CR3 hits, flooding, misaligned writes, partial-width writes, recycling
//! under pressure, `cache: false`, A/D bits, PDPTE loading, hostile inputs,
//! 1 GiB pages, INVLPG, multimapped parent chains, statistics.

use super::harness::*;
use super::refwalk::RefOutcome::{NoRam, PageFault, Phys};
use crate::mmu::cache::Parents;
use crate::mmu::spte;
use crate::mmu::stats::ZapReason;
use crate::mmu::*;

/// Long mode, PML4 at `base`, PDPT base+1, PD base+2, PT base+3, entry 0
/// of each; PTE 0 -> `data`.
fn long_tables(w: &mut World, base: u64, data: u64) {
    w.poke(f(base), 8, f(base + 1) | T);
    w.poke(f(base + 1), 8, f(base + 2) | T);
    w.poke(f(base + 2), 8, f(base + 3) | T);
    w.poke(f(base + 3), 8, f(data) | T | D);
}

#[test]
fn cr3_reload_hits_cache_and_builds_nothing() {
    let mut w = World::new(64, 64, 1, true);
    long_tables(&mut w, 1, 40);
    long_tables(&mut w, 5, 41);
    assert!(w.load_cr3(0, f(1)));
    w.mode(0, GuestMode::Long, true, true, false, false, false);
    assert_eq!(w.go(0, 0x10, rd(true)), Phys(0x28010));
    assert!(w.load_cr3(0, f(5)));
    assert_eq!(w.go(0, 0x10, rd(true)), Phys(0x29010));
    let (created, hits) = (w.cache.stats().created, w.cache.stats().cr3_hits);
    assert!(w.load_cr3(0, f(1)));
    assert_eq!(w.go(0, 0x10, rd(true)), Phys(0x28010));
    assert_eq!(
        w.cache.stats().created,
        created,
        "returning to an earlier CR3 created shadow pages"
    );
    assert_eq!(w.cache.stats().cr3_hits, hits + 1);
    w.check();
}

#[test]
fn flooding_unshadows_and_the_page_becomes_data() {
    let mut w = World::new(64, 64, 1, true);
    long_tables(&mut w, 1, 40);
    w.poke(f(3) + 8, 8, f(5) | T); // PDE 1 -> PT 5,
    w.poke(f(5), 8, f(4) | T | D); // whose PTE 0 maps PT 4 as a data page
    assert!(w.load_cr3(0, f(1)));
    w.mode(0, GuestMode::Long, true, true, false, false, false);
    assert_eq!(w.go(0, 0x10, rd(true)), Phys(0x28010));
    assert!(w.cache.is_write_protected(4));
    // memset of the PT through its data window: 3 writes in a row unshadow it.
    for i in 0..3u64 {
        assert_eq!(
            w.access(0, 0x20_0100 + 8 * i, wr(true), 8, 0),
            Phys(f(4) + 0x100 + 8 * i)
        );
    }
    assert!(!w.cache.is_write_protected(4));
    assert_eq!(w.cache.stats().zaps_for(ZapReason::Flood), 1);
    // Now plain data: writes go straight through.
    let wpf = w.cache.stats().write_protect_faults;
    assert_eq!(w.access(0, 0x20_0200, wr(true), 8, 7), Phys(f(4) + 0x200));
    assert_eq!(w.cache.stats().write_protect_faults, wpf);
    // And a page table again.
    assert_eq!(w.go(0, 0x10, rd(true)), Phys(0x28010));
    assert!(w.cache.is_write_protected(4));
    w.check();
}

#[test]
fn misaligned_write_zaps_the_shadow_page() {
    let mut w = World::new(64, 64, 1, true);
    long_tables(&mut w, 1, 40);
    w.poke(f(4) + 8, 8, f(41) | T);
    assert!(w.load_cr3(0, f(1)));
    w.mode(0, GuestMode::Long, true, true, false, false, false);
    assert_eq!(w.go(0, 0x1010, rd(true)), Phys(0x29010));
    w.phys_write(0, f(4) + 4, 8, (f(42) | T) << 32); // straddles PTE 0 and 1
    assert_eq!(w.cache.stats().zaps_for(ZapReason::Misaligned), 1);
    w.check();
    assert_eq!(w.go(0, 0x1010, rd(true)), Phys(0x2a010));
    w.check();
}

#[test]
fn partial_width_writes_into_a_pae_pte() {
    let mut w = World::new(64, 64, 1, true);
    long_tables(&mut w, 1, 40);
    assert!(w.load_cr3(0, f(1)));
    w.mode(0, GuestMode::Long, true, true, false, false, false);
    assert_eq!(w.go(0, 0x10, fx(true)), Phys(0x28010));
    w.phys_write(0, f(4) + 4, 4, 0x8000_0000); // high half: set XD
    assert_eq!(w.go(0, 0x10, fx(true)), PageFault(0x15));
    w.phys_write(0, f(4), 1, (T & !RW) | D); // 1-byte `and`: clear R/W
    assert_eq!(w.go(0, 0x10, wr(true)), PageFault(0x7));
    assert_eq!(w.go(0, 0x10, rd(true)), Phys(0x28010));
    w.phys_write(0, f(4) + 1, 2, f(41) >> 8); // 2-byte write of the frame
    assert_eq!(w.go(0, 0x10, rd(true)), Phys(0x29010));
    w.check();
}

#[test]
fn recycling_under_pressure_never_frees_a_loaded_root() {
    // 18 frames: 2 PAE roots + 5 kept free leaves little room.
    let mut w = World::new(96, 18, 2, true);
    for k in 0..12u64 {
        long_tables(&mut w, 1 + 5 * k, 80 + k);
    }
    w.mode(1, GuestMode::Long, true, true, false, false, false);
    assert!(w.load_cr3(1, f(1)));
    assert_eq!(w.go(1, 0x10, rd(true)), Phys(f(80) + 0x10));
    w.mode(0, GuestMode::Long, true, true, false, false, false);
    for round in 0..2 {
        for k in 0..12u64 {
            assert!(w.load_cr3(0, f(1 + 5 * k)));
            assert_eq!(
                w.go(0, 0x10, rd(true)),
                Phys(f(80 + k) + 0x10),
                "round {round} table {k}"
            );
            w.check();
        }
    }
    assert!(w.cache.stats().recycles > 0);
    assert!(w.cache.stats().pool_high_water <= 18);
    // vCPU 1's root survived all of it.
    assert_eq!(w.go(1, 0x10, rd(true)), Phys(f(80) + 0x10));
    w.check();
}

#[test]
fn no_cache_mode_drops_all_shadows_at_cr3_load() {
    let mut w = World::new(64, 64, 1, false);
    long_tables(&mut w, 1, 40);
    assert!(w.load_cr3(0, f(1)));
    w.mode(0, GuestMode::Long, true, true, false, false, false);
    assert_eq!(w.go(0, 0x10, rd(true)), Phys(0x28010));
    let created = w.cache.stats().created;
    assert!(w.load_cr3(0, f(1)));
    assert_eq!(w.go(0, 0x10, rd(true)), Phys(0x28010));
    assert_eq!(w.cache.stats().created, created + 4);
    assert!(w.cache.stats().zaps_for(ZapReason::NoCache) >= 4);
    w.check();
}

/// `cache: false` is exactly "every shadow page dropped at each CR3 load"
/// (the benchmark's no-cache variant): right after a CR3 load only the
/// vCPU's PAE root frame and the new root are in use, every load misses,
/// every earlier page was zapped for `NoCache`; a mode change (CR0/CR4/EFER)
/// is not a CR3 load and keeps the pages.
#[test]
fn no_cache_mode_keeps_nothing_but_the_new_root() {
    let mut w = World::new(64, 64, 1, false);
    long_tables(&mut w, 1, 40);
    long_tables(&mut w, 5, 41);
    assert!(w.load_cr3(0, f(1)));
    w.mode(0, GuestMode::Long, true, true, false, false, false);
    let mut zapped = 0;
    for (i, (cr3, data)) in [(1, 40), (5, 41), (1, 40), (1, 40)].into_iter().enumerate() {
        let live = w.cache.stats().pages_in_use;
        assert!(w.load_cr3(0, f(cr3)));
        let s = w.cache.stats();
        // PAE root frame + the level-4 root.
        assert_eq!(s.pages_in_use, 2, "round {i}: pages survived a CR3 load");
        zapped += live as u64 - 1; // everything but the PAE root frame
        assert_eq!(s.zaps_for(ZapReason::NoCache), zapped, "round {i}");
        assert_eq!(s.cr3_hits, 0, "round {i}: a CR3 load hit without the cache");
        assert_eq!(w.go(0, 0x10, rd(true)), Phys(f(data) + 0x10));
        assert_eq!(w.cache.stats().pages_in_use, 5, "round {i}: the path of one page");
        w.check();
    }
    let before = w.cache.stats().pages_in_use;
    w.mode(0, GuestMode::Long, false, true, false, false, false);
    w.mode(0, GuestMode::Long, true, true, false, false, false);
    assert!(w.cache.stats().pages_in_use >= before, "a CR0 write is not a CR3 load");
    w.check();
}

#[test]
fn accessed_and_dirty_bits() {
    let mut w = World::new(64, 64, 1, true);
    long_tables(&mut w, 1, 40);
    w.poke(f(4), 8, f(40) | P | RW | US); // A and D clear
    assert!(w.load_cr3(0, f(1)));
    w.mode(0, GuestMode::Long, true, true, false, false, false);
    assert_eq!(w.go(0, 0x10, rd(true)), Phys(0x28010));
    assert_eq!(w.mem.r64(f(4)), f(40) | P | RW | US | A);
    let leaf = w
        .cache
        .frames()
        .frames
        .iter()
        .flatten()
        .find(|&&s| spte::frame(s) == RAM_HPA + f(40))
        .copied()
        .unwrap();
    assert_eq!(leaf & spte::RW, 0, "leaf read-only until the first write");
    assert_eq!(w.go(0, 0x10, wr(true)), Phys(0x28010));
    assert_eq!(w.mem.r64(f(4)), f(40) | P | RW | US | A | D);
    // The guest clears A and D: refilled on the next access.
    w.phys_write(0, f(4), 8, f(40) | P | RW | US);
    assert_eq!(w.go(0, 0x10, rd(true)), Phys(0x28010));
    assert_eq!(w.go(0, 0x10, wr(true)), Phys(0x28010));
    assert_eq!(w.mem.r64(f(4)), f(40) | P | RW | US | A | D);
    w.check();
}

#[test]
fn pae_pdptes_latched_reserved_bits_gp_nonpresent_faults() {
    let mut w = World::new(64, 64, 1, true);
    let pdpt = f(20) + 0x60; // 32-byte aligned, not page aligned
    w.poke(pdpt, 8, f(1) | P);
    w.poke(pdpt + 8, 8, 0); // PDPTE 1 not present
    w.poke(f(1), 8, f(2) | T);
    w.poke(f(2), 8, f(10) | T);
    assert!(w.load_cr3(0, pdpt));
    w.mode(0, GuestMode::Pae, true, true, false, false, false);
    assert_eq!(w.go(0, 0x10, rd(false)), Phys(0xa010));
    assert_eq!(w.go(0, 0x4000_0010, wr(true)), PageFault(0x6));
    // Latched: editing the PDPT changes nothing until CR3 is reloaded.
    w.phys_write(0, pdpt, 8, 0);
    assert_eq!(w.go(0, 0x10, rd(false)), Phys(0xa010));
    assert!(w.load_cr3(0, pdpt));
    assert_eq!(w.go(0, 0x10, rd(false)), PageFault(0));
    // Reserved bits (R/W is reserved in a PAE PDPTE): #GP, nothing changes.
    w.phys_write(0, pdpt, 8, f(1) | P | RW);
    assert!(!w.load_cr3(0, pdpt));
    assert_eq!(
        w.cache.load_cr3(&mut w.cpus[0].mmu, &w.mem, pdpt),
        Err(InjectGp)
    );
    assert_eq!(w.go(0, 0x10, rd(false)), PageFault(0));
    w.check();
}

#[test]
fn hostile_tables_outside_ram() {
    let mut w = World::new(64, 64, 1, true);
    assert!(w.load_cr3(0, 0x4000_0000)); // CR3 far outside RAM
    w.mode(0, GuestMode::Bits32, true, false, false, false, false);
    assert_eq!(w.go(0, 0x10, rd(false)), NoRam(0x4000_0000));
    chain32_outside(&mut w);
    assert_eq!(w.go(0, 0x10, rd(false)), NoRam(0x80_0010));
    assert_eq!(w.go(0, 0x40_0000, rd(false)), NoRam(0x90_0000));
    w.mode(0, GuestMode::NoPaging, true, false, false, false, false);
    assert_eq!(w.go(0, 0x1234, wr(false)), Phys(0x1234));
    assert_eq!(w.go(0, 0xfee0_0000, rd(false)), NoRam(0xfee0_0000));
    w.invlpg(0, 0x1234); // INVLPG with paging off: no effect
    w.check();
}

fn chain32_outside(w: &mut World) {
    w.poke(f(1), 4, f(2) | T);
    w.poke(f(1) + 4, 4, 0x90_0000 | T); // PDE 1 -> PT outside RAM
    w.poke(f(2), 4, 0x80_0000 | T); // PTE 0 -> frame outside RAM
    assert!(w.load_cr3(0, f(1)));
}

#[test]
fn one_gib_pages_and_invlpg() {
    let mut w = World::new(64, 64, 1, true);
    w.poke(f(1), 8, f(2) | T);
    w.poke(f(2), 8, T | D | PS); // 1 GiB page at 0
    w.poke(f(2) + 8, 8, T | D | PS | XD | (1 << 13)); // reserved bit 13
    assert!(w.load_cr3(0, f(1)));
    w.mode(0, GuestMode::Long, true, true, false, false, false);
    assert_eq!(w.go(0, 0x3_4010, wr(true)), Phys(0x3_4010));
    assert_eq!(w.go(0, 0x4000_0000, rd(true)), PageFault(0xd));
    w.invlpg(0, 0x3_4010);
    assert_eq!(w.go(0, 0x3_4010, fx(true)), Phys(0x3_4010));
    w.check();
}

/// One PT mapped from many PDEs (multimapped parent chain), then written
/// through every alias.
#[test]
fn long_parent_chain_and_writes_through_every_alias() {
    let mut w = World::new(64, 64, 1, true);
    w.poke(f(1), 8, f(2) | T);
    w.poke(f(2), 8, f(3) | T);
    for i in 0..64u64 {
        w.poke(f(3) + 8 * i, 8, f(4) | T); // every PDE -> PT 4
    }
    w.poke(f(4), 8, f(4) | T | D); // PTE 0 maps the PT itself
    assert!(w.load_cr3(0, f(1)));
    w.mode(0, GuestMode::Long, true, true, false, false, false);
    for i in 0..64u64 {
        assert_eq!(w.go(0, i << 21, rd(true)), Phys(f(4)));
    }
    let pt = w.cache.pages_of_gfn(4)[0];
    assert!(matches!(&w.cache.page(pt).parents, Parents::Many(v) if v.len() == 64));
    for i in 0..64u64 {
        let v = f(30 + i % 8) | T;
        assert_eq!(w.access(0, (i << 21) + 8, wr(true), 8, v), Phys(f(4) + 8));
        assert_eq!(w.go(0, (i << 21) + 0x1000, rd(true)), Phys(f(30 + i % 8)));
    }
    w.check();
}

#[test]
fn statistics_and_role_coverage() {
    let mut w = World::new(64, 64, 1, true);
    long_tables(&mut w, 1, 40);
    assert!(w.load_cr3(0, f(1)));
    w.mode(0, GuestMode::Long, true, true, false, false, false);
    assert_eq!(w.go(0, 0x10, rd(true)), Phys(0x28010));
    let s = w.cache.stats().clone();
    assert_eq!(s.created_per_role.values().sum::<u64>(), s.created);
    assert!(w
        .cache
        .role_coverage()
        .iter()
        .any(|&r| Role::from_word(r).glevels() == 4 && Role::from_word(r).level() == 1));
    assert!(w
        .cache
        .role_coverage()
        .iter()
        .any(|&r| Role::from_word(r).glevels() == 0 && Role::from_word(r).metaphysical()));
    assert!(s.pool_high_water >= s.pages_in_use && s.fault_misses >= 3);
}

#[test]
fn pool_checks() {
    assert_eq!(
        ShadowCache::new(MmuConfig::new(10), TestFrames::new(10, 0)).err(),
        Some(PoolError::TooSmall)
    );
    assert_eq!(
        ShadowCache::new(MmuConfig::new(20), TestFrames::new(19, 0)).err(),
        Some(PoolError::Exhausted)
    );
    let mut c = ShadowCache::new(MmuConfig::new(18), TestFrames::new(18, 0)).unwrap();
    assert!(c.add_vcpu(0).is_ok() && c.add_vcpu(1).is_ok());
    assert!(c.add_vcpu(2).is_err(), "18 frames cannot serve 3 vCPUs");
    assert_eq!(c.release().next, 18);
}
