//! Host tests of what the MMU core does for several vCPUs: the synchronous
//! remote TLB flush after write protection, A/D updates that lose a race
//! with another vCPU's store and walk again, all-or-nothing emulated
//! read-modify-write stores, INIT's reset, and the record of paging modes
//! whose roots were loaded at the same moment.

use super::harness::*;
use super::refwalk::RefOutcome::Phys;
use crate::mmu::*;

/// 32-bit paging on vCPU `c`: PD at frame 1, PDE 0 -> PT 2, PTE 0 = `pte0`.
fn chain32(w: &mut World, c: usize, pte0: u64) {
    w.poke(f(1), 4, f(2) | T);
    w.poke(f(2), 4, pte0);
    assert!(w.load_cr3(c, f(1)));
}

#[test]
fn write_protect_flushes_other_vcpus_before_going_on() {
    let mut w = World::new(64, 64, 3, true);
    chain32(&mut w, 1, f(5) | T | 0x40);
    w.mode(1, GuestMode::Bits32, true, false, false, false, false);
    // vCPU 1 maps frame 5 writable.
    assert_eq!(w.go(1, 0x10, wr(true)), Phys(0x5010));
    assert!(w.cache.frames.remote_flushes.is_empty());
    // vCPU 0 makes frame 5 its PD: write protection must flush the others
    // synchronously (the hook), not only through the returned flush.
    assert!(w.load_cr3(0, f(5)));
    w.mode(0, GuestMode::Bits32, true, false, false, false, false);
    let hooks = &w.cache.frames.remote_flushes;
    assert!(hooks.iter().any(|m| m & 0b10 != 0), "vCPU 1 not flushed synchronously: {hooks:?}");
    assert!(w.cache.stats().remote_flushes >= 1);
    w.check();
}

#[test]
fn an_accessed_flag_update_that_loses_a_race_walks_again() {
    let mut w = World::new(64, 64, 1, true);
    // PTE 0 maps frame 10 with A clear: the walk sets A with a
    // compare-exchange; another vCPU remaps it to frame 11 just before.
    chain32(&mut w, 0, f(10) | P | RW | US);
    w.mode(0, GuestMode::Bits32, true, false, false, false, false);
    let race = (f(11) | P | RW | US) as u32;
    let mut racy = Racy::new(&mut w.mem, f(2), race, true);
    let ctx = w.cpus[0].mmu.ctx(MAXPHY);
    let walked = walk::walk(&ctx, &mut racy, 0x10, rd(false)).unwrap();
    assert!(racy.fired);
    assert_eq!(walked.gpa, 0xb010, "the walk must see the other vCPU's store");
    // Its A flag was set on the new value, not lost.
    assert_eq!(w.mem.r64(f(2)) as u32, race | A as u32);
}

#[test]
fn emulated_read_modify_write_is_all_or_nothing() {
    let mut w = World::new(64, 64, 1, true);
    chain32(&mut w, 0, f(10) | T);
    w.mode(0, GuestMode::Bits32, true, false, false, false, false);
    assert_eq!(w.go(0, 0x10, rd(false)), Phys(0xa010));
    let pte = f(2);
    let before = w.mem.r64(pte);
    // Computed from a stale value: nothing is written.
    let (_, written) =
        w.cache.guest_pt_cmpxchg(&mut w.cpus[0].mmu, &mut w.mem, pte, 4, f(9) | T, f(12) | T);
    assert!(!written);
    assert_eq!(w.mem.r64(pte), before);
    // Computed from what is there: written, and the shadow follows.
    let (fl, written) =
        w.cache.guest_pt_cmpxchg(&mut w.cpus[0].mmu, &mut w.mem, pte, 4, f(10) | T, f(12) | T);
    assert!(written);
    w.flush(fl);
    for i in 0..4 {
        w.oracle_ram[pte as usize + i] = ((f(12) | T) >> (8 * i)) as u8;
    }
    w.check();
    assert_eq!(w.go(0, 0x10, rd(false)), Phys(0xc010));
}

#[test]
fn init_drops_the_root_and_loaded_modes_are_recorded() {
    let mut w = World::new(64, 64, 2, true);
    w.poke(f(1), 8, f(2) | T);
    w.poke(f(2), 8, f(3) | T);
    w.poke(f(3), 8, f(4) | T);
    w.poke(f(4), 8, f(10) | T);
    assert!(w.load_cr3(0, f(1)));
    w.mode(0, GuestMode::Long, true, false, false, false, false);
    assert_eq!(w.cache.loaded_glevels_mask(), 1 << 4);
    // vCPU 1 in real mode (no paging) beside it.
    w.mode(1, GuestMode::NoPaging, true, false, false, false, false);
    assert_eq!(w.cache.loaded_glevels_mask(), (1 << 4) | 1);
    let s = w.cache.stats();
    assert_eq!(s.max_loaded_glevels, 2);
    assert_ne!(s.loaded_glevels_pairs & shared::coverage::glevels_pair_bit(0, 4), 0);
    assert_eq!(s.loaded_glevels_pairs & shared::coverage::glevels_pair_bit(2, 4), 0);
    // INIT: vCPU 1 holds no root any more.
    let cache = &mut w.cache;
    cache.reset_vcpu(&mut w.cpus[1].mmu);
    assert_eq!(w.cache.loaded_glevels_mask(), 1 << 4);
    assert_eq!(w.cpus[1].mmu.mode(), GuestMode::NoPaging);
    w.audit();
}
