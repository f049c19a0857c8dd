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

/// Every switch and whether this build has it.
pub const SWITCHES: &[(&str, bool)] = &[
    ("key-no-glevels", cfg!(feature = "inject-key-no-glevels")),
    ("key-no-level", cfg!(feature = "inject-key-no-level")),
    ("key-no-quadrant", cfg!(feature = "inject-key-no-quadrant")),
    ("key-no-access", cfg!(feature = "inject-key-no-access")),
    ("key-no-cr0-wp", cfg!(feature = "inject-key-no-cr0-wp")),
    ("key-no-efer-nx", cfg!(feature = "inject-key-no-efer-nx")),
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
    }
}
