//! Deliberate MMU bugs, one cargo feature each (`inject-<name>`), for
//! proving that the guest suite catches the bug classes the shadow page
//! cache has had (`cargo xtask run --inject <name>`). None is ever enabled
//! by a normal build; a hypervisor built with one says so in its log
//! before anything else runs.
//!
//! Each switch reproduces a real bug:
//!
//! | name | what is broken | the bug it reproduces |
//! |---|---|---|
//! | `key-no-glevels` | the cache key ignores the guest paging mode | a gfn shadowed as a 32-bit table reused as a PAE/long table: the pre-2007 role had no `glevels`, a page used as both was shadowed once (KVM commit history, "MMU: Add a role.glevels"; the reason the role exists) |
//! | `key-no-level` | the key ignores the shadow level | one frame used as PD and PT (self-map) gets one shadow for both levels |
//! | `key-no-quadrant` | the key ignores the quadrant | a 32-bit PT/PD shadowed by several PAE-format pages all share one, so the upper halves translate through the lower half's entries (the 2007 quadrant fix) |
//! | `key-no-access` | the key ignores the inherited U/W/X | two upper-level paths with different permissions share a lower shadow: a write through a read-only path succeeds (CVE-2021-38198 class) |
//! | `key-no-cr0-wp` | the key ignores CR0.WP | shadows built for WP=0 (supervisor writes to read-only user pages allowed) reused with WP=1 (KVM's `role.cr0_wp`) |
//! | `key-no-efer-nx` | the key ignores EFER.NXE | shadows built with NXE=1 reused with NXE=0, where bit 63 is reserved (KVM's `role.nxe`) |
//! | `no-write-protect` | shadowing a guest page table does not write-protect its gfn, and writes to it are not trapped | the guest edits a table without exiting and the shadow keeps the old translation (the invariant every shadow MMU rests on) |
//! | `no-pt-write-update` | a trapped guest page-table write lands in memory but neither updates nor zaps the shadow entries (and never counts towards flooding) | stale shadow entries after a PTE edit (kvm_mmu_pte_write's job) |
//! | `pde32-offset-2007` | a write to a 32-bit PDE is applied like a PT write: one shadow slot at the PTE-style index in quarter `i / 512`, instead of both 2 MiB halves (slots 2(i mod 256), +1) in quarter `i / 256` | the 2007 fix of KVM's 32-bit PDE offset arithmetic in the PTE-write path (`page_offset <<= 1` once more and `npte = 2` for PT32 root-level writes) |
//! | `metaphysical-write-protected` | gfns that only have metaphysical shadows (identity map, large-page splits) are write-protected and their writes trapped | every data write into a large page or into real-mode memory becomes an emulated page-table write (KVM: metaphysical pages must not write-protect) |
//! | `cr3-reuses-stale-root` | MOV CR3 with the value already loaded keeps the current root, without re-reading PAE PDPTEs | a CR3 "fast path" that skips the PDPTE reload SDM Vol. 3A 4.4.1 requires on every MOV CR3 in PAE paging |
//! | `recycle-loaded-root` | recycling under pressure may pick a loaded root and frees it | use-after-free of an in-use root (roots must be pinned, `root_count`) |
//! | `no-remote-flush` | write-protecting a newly shadowed guest page table flushes no other vCPU's TLB | another vCPU keeps a writable translation of the page and edits the guest page table without a trap, so the shadow keeps the old entry (KVM's remote TLB flush after write protection, `kvm_flush_remote_tlbs` in `mmu_sync`/`account_shadowed`; needs 2+ vCPUs) |

/// Every switch and whether this build has it.
pub const SWITCHES: &[(&str, bool)] = &[
    ("key-no-glevels", cfg!(feature = "inject-key-no-glevels")),
    ("key-no-level", cfg!(feature = "inject-key-no-level")),
    ("key-no-quadrant", cfg!(feature = "inject-key-no-quadrant")),
    ("key-no-access", cfg!(feature = "inject-key-no-access")),
    ("key-no-cr0-wp", cfg!(feature = "inject-key-no-cr0-wp")),
    ("key-no-efer-nx", cfg!(feature = "inject-key-no-efer-nx")),
    ("no-write-protect", cfg!(feature = "inject-no-write-protect")),
    ("no-pt-write-update", cfg!(feature = "inject-no-pt-write-update")),
    ("pde32-offset-2007", cfg!(feature = "inject-pde32-offset-2007")),
    ("metaphysical-write-protected", cfg!(feature = "inject-metaphysical-write-protected")),
    ("cr3-reuses-stale-root", cfg!(feature = "inject-cr3-reuses-stale-root")),
    ("recycle-loaded-root", cfg!(feature = "inject-recycle-loaded-root")),
    ("no-remote-flush", cfg!(feature = "inject-no-remote-flush")),
];

/// The switches this build has on.
pub fn active() -> impl Iterator<Item = &'static str> {
    SWITCHES.iter().filter(|s| s.1).map(|s| s.0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_are_unique_and_a_test_build_has_none_on() {
        for (i, s) in super::SWITCHES.iter().enumerate() {
            assert!(super::SWITCHES[..i].iter().all(|t| t.0 != s.0), "{}", s.0);
        }
        // `cargo test` builds without features: the suite tests the real MMU.
        assert_eq!(super::active().count(), 0);
        // Every switch has a cargo feature (the xtask reads the manifest).
        let manifest = include_str!("../../Cargo.toml");
        for s in super::SWITCHES {
            assert!(manifest.contains(&format!("inject-{} = []", s.0)), "{}", s.0);
        }
    }
}
