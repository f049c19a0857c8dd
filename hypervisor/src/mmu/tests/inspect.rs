//! Tests of the read-only hardware walk ([`ShadowCache::shadow_walk`]):
//! what it shows after real faults in long mode, 32-bit paging and without
//! paging, where it stops, and that it changes nothing.

use super::harness::*;
use crate::mmu::spte::{self, ADDR_MASK_64};
use crate::mmu::*;

/// The hardware CR3 the core gives the vCPU.
fn hw_cr3(w: &mut World) -> u64 {
    let hw = w.cache.prepare_entry(&mut w.cpus[0].mmu).expect("root");
    w.flush(hw.flush);
    hw.cr3
}

#[test]
fn long_mode_walk_shows_each_level_and_the_leaf() {
    let mut w = World::new(64, 64, 1, true);
    // PML4 1 -> PDPT 2 -> PD 3 -> PT 4; PTE 5 -> frame 40, read-only.
    let la = (1u64 << 39) | 0x5010; // PML4E 1, PDPTE 0, PDE 0, PTE 5
    assert_eq!((la >> 39) & 511, 1);
    w.poke(f(1) + 8, 8, f(2) | T);
    w.poke(f(2), 8, f(3) | T);
    w.poke(f(3), 8, f(4) | T);
    w.poke(f(4) + 5 * 8, 8, f(40) | P | US | A);
    assert!(w.load_cr3(0, f(1)));
    w.mode(0, GuestMode::Long, true, true, false, false, false);
    assert_eq!(w.go(0, la, rd(true)), super::refwalk::RefOutcome::Phys(f(40) + 0x10));
    let cr3 = hw_cr3(&mut w);
    let walk = w.cache.shadow_walk(&w.cpus[0].mmu, la).expect("a root is loaded");
    assert_eq!(walk.root_hpa, cr3);
    let steps: Vec<_> = walk.steps().copied().collect();
    assert_eq!(steps.iter().map(|s| (s.level, s.index)).collect::<Vec<_>>(), [(4, 1), (3, 0), (2, 0), (1, 5)]);
    // Each table is the shadow of the guest table on the walk, one level each.
    let gfns: Vec<_> = steps.iter().map(|s| s.page.unwrap().1).collect();
    assert_eq!(gfns, [1, 2, 3, 4]);
    for s in &steps {
        let (_, _, role) = s.page.unwrap();
        assert_eq!((role.glevels(), role.level(), role.metaphysical()), (4, s.level, false));
        assert!(spte::present(s.value));
    }
    assert_eq!(steps[0].table_hpa, cr3);
    // Each upper entry names the next table.
    for p in steps.windows(2) {
        assert_eq!(p[0].value & ADDR_MASK_64, p[1].table_hpa);
    }
    // The leaf maps the guest frame, user-readable and not writable (the
    // guest PTE has W=0), as the hardware walk of the harness sees it.
    let leaf = steps[3].value;
    assert_eq!(leaf & ADDR_MASK_64, RAM_HPA + f(40));
    assert_eq!(leaf & (P | RW | US), P | US);
    assert_eq!(steps[3].maps_gfn, Some(40));
    assert!(steps[..3].iter().all(|s| s.maps_gfn.is_none()));
    assert_eq!(w.cache.shadow_walk(&w.cpus[0].mmu, la).unwrap().pt_slot(), Some((steps[3].page.unwrap().0, 5)));
    w.check();
}

#[test]
fn walk_stops_at_the_first_absent_entry_and_changes_nothing() {
    let mut w = World::new(64, 64, 1, true);
    w.poke(f(1), 8, f(2) | T);
    w.poke(f(2), 8, f(3) | T);
    w.poke(f(3), 8, f(4) | T);
    w.poke(f(4), 8, f(40) | T | D);
    assert!(w.load_cr3(0, f(1)));
    w.mode(0, GuestMode::Long, true, true, false, false, false);
    assert_eq!(w.go(0, 0x10, wr(false)), super::refwalk::RefOutcome::Phys(f(40) + 0x10));
    let _ = hw_cr3(&mut w);
    let before = (w.cache.stats().clone(), w.cache.lru_order());
    // PML4E 3 was never faulted in: one step, not present.
    let far = w.cache.shadow_walk(&w.cpus[0].mmu, 3 << 39).unwrap();
    assert_eq!(far.steps().map(|s| (s.level, spte::present(s.value))).collect::<Vec<_>>(), [(4, false)]);
    assert_eq!(far.pt_slot(), None);
    // PTE 7 of the same PT: four steps, the last not present (the slot exists).
    let near = w.cache.shadow_walk(&w.cpus[0].mmu, 0x7000).unwrap();
    let last = near.steps().last().copied().unwrap();
    assert_eq!((near.steps().count(), last.level, spte::present(last.value), last.maps_gfn), (4, 1, false, None));
    assert!(near.pt_slot().is_some());
    assert_eq!((w.cache.stats().clone(), w.cache.lru_order()), before, "a walk changes no statistic and no LRU order");
    w.check();
}

#[test]
fn pae_root_first_then_the_quadrant_shadows_of_a_32_bit_guest() {
    let mut w = World::new(64, 64, 1, true);
    // 32-bit PD at frame 1: PDE 0x300 (3 GiB) -> PT 2, PTE 1 -> frame 41.
    let la = 0xC000_1000u64 | 0x24;
    w.poke(f(1) + 4 * 0x300, 4, f(2) | T);
    w.poke(f(2) + 4, 4, f(41) | T | D);
    assert!(w.load_cr3(0, f(1)));
    w.mode(0, GuestMode::Bits32, true, false, true, false, false);
    assert_eq!(w.go(0, la, wr(false)), super::refwalk::RefOutcome::Phys(f(41) + 0x24));
    let cr3 = hw_cr3(&mut w);
    let walk = w.cache.shadow_walk(&w.cpus[0].mmu, la).unwrap();
    let steps: Vec<_> = walk.steps().copied().collect();
    assert_eq!(walk.root_hpa, cr3);
    // The PAE root (no shadow page, no role), PDPTE 3.
    assert_eq!((steps[0].level, steps[0].index, steps[0].page), (3, 3, None));
    assert_eq!(steps[0].table_hpa, cr3);
    // PD quadrant 3 of guest PD 1; PT quadrant 0 (the PT's low 2 MiB half).
    let (_, gfn, role) = steps[1].page.unwrap();
    assert_eq!((gfn, role.glevels(), role.level(), role.quadrant()), (1, 2, 2, 3));
    assert_eq!(steps[1].index, 0);
    let (_, gfn, role) = steps[2].page.unwrap();
    assert_eq!((gfn, role.glevels(), role.level(), role.quadrant()), (2, 2, 1, 0));
    assert_eq!(steps[2].index, 1);
    assert_eq!(steps[2].value & ADDR_MASK_64, RAM_HPA + f(41));
    assert_eq!(steps[2].value & (P | RW), P | RW, "dirty and writable after the write");
    w.check();
}

#[test]
fn no_paging_walks_the_metaphysical_identity_map_and_no_root_is_none() {
    let mut w = World::new(64, 64, 1, true);
    assert_eq!(w.cache.shadow_walk(&w.cpus[0].mmu, 0x1234), None, "no root before the first entry");
    w.mode(0, GuestMode::NoPaging, true, false, false, false, false);
    assert_eq!(w.go(0, 0x3_2010, rd(false)), super::refwalk::RefOutcome::Phys(0x3_2010));
    let walk = w.cache.shadow_walk(&w.cpus[0].mmu, 0x3_2010).unwrap();
    let steps: Vec<_> = walk.steps().copied().collect();
    assert_eq!(steps.len(), 3);
    for s in &steps[1..] {
        assert!(s.page.unwrap().2.metaphysical());
    }
    assert_eq!(steps[2].value & ADDR_MASK_64, RAM_HPA + 0x3_2000);
    w.check();
}
