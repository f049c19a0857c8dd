//! The role-coverage gate (DESIGN.md 4): the hypervisor's role-coverage
//! table (`role-coverage` lines, collected by [`Console`]) must cover every
//! role pattern the guest suite promises (`shared::coverage::PROMISED`).
//! Pure logic, host-tested below; [`super::judge`] applies the gate, the
//! boot's block and the JSON report show the table.

use super::{Console, RoleCount};
use serde::Serialize;
use shared::coverage::{self, RolePattern, RoleValue};
use std::fmt::Write as _;

/// Whether the role-coverage gate applies to a boot: under the hypervisor
/// with shadow paging, the built guest (another kernel promises nothing),
/// no expected error, no deliberate crash, no `only=` subset (the
/// promise is the whole suite's; a subset chosen to work on one scenario,
/// or to bisect with, makes none) and no benchmark workload (`bench=`: the
/// suite does not run). `modes=0` is *not* exempt: a run of the whole
/// suite that skips the mode walk does not create what the suite promises,
/// and the gate says so.
pub fn applies(hypervisor: bool, shadow: bool, built_guest: bool, expect_error: bool, guest_args: &str) -> bool {
    hypervisor
        && shadow
        && built_guest
        && !expect_error
        && !guest_args.split_ascii_whitespace().any(|w| w.starts_with("crash=") || w.starts_with("only=") || w.starts_with("bench="))
}

/// The SMP gate: the `mmu-stats` line's `loaded_glevels_pairs` must hold
/// the pair [`shared::coverage::SMP_PROMISED_PAIR`] (an AP's real-mode
/// shadow root beside the BSP's long-mode one). A run without the line
/// already fails for its missing table and is not blamed twice.
pub fn judge_smp(console: &Console, reasons: &mut Vec<String>) {
    let Some(stats) = &console.mmu_stats else { return };
    let (a, b) = coverage::SMP_PROMISED_PAIR;
    match stats.get("loaded_glevels_pairs") {
        Some(&m) if m as u32 & coverage::glevels_pair_bit(a, b) != 0 => {}
        got => reasons.push(format!(
            "SMP: shadow roots of glevels {a} and {b} were never loaded at the same moment (mmu-stats loaded_glevels_pairs = {})",
            got.map_or("absent".into(), |m| pairs_text(*m as u32))
        )),
    }
}

/// `0+4, 2+4` for a `loaded_glevels_pairs` value (`none` when empty).
pub fn pairs_text(mask: u32) -> String {
    let v: Vec<String> = coverage::glevels_pairs(mask).map(|(a, b)| format!("{a}+{b}")).collect();
    if v.is_empty() { "none".into() } else { v.join(", ") }
}

/// The gate: the table must be complete and cover every pattern of
/// `promised`; each promised value never created is one reason. Returns
/// those patterns. A run that died before the hypervisor could print its
/// table (no `quadrant-result status=0`) already fails for that and is not
/// blamed twice.
pub fn judge(
    console: &Console,
    promised: &'static [RolePattern],
    reasons: &mut Vec<String>,
) -> Vec<&'static RolePattern> {
    let Some(distinct) = console.role_coverage_end else {
        if matches!(console.result, Some((0, _))) {
            reasons.push(
                "role coverage: no `role-coverage-end` line: the hypervisor printed no role-coverage table".into(),
            );
        }
        return Vec::new();
    };
    if distinct as usize != console.role_coverage.len() {
        reasons.push(format!(
            "role coverage: the table says distinct={distinct}, but {} `role-coverage` lines were seen",
            console.role_coverage.len()
        ));
    }
    let created: Vec<RoleValue> = console.role_coverage.iter().map(|r| r.role).collect();
    let missing: Vec<&'static RolePattern> = coverage::missing(promised, &created).collect();
    for p in &missing {
        reasons.push(format!("role coverage: promised value \"{}\" ({p}) was never created", p.name));
    }
    missing
}

/// One created role value in the JSON report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RoleRow {
    /// Guest paging levels (0, 2, 3, 4).
    pub glevels: u8,
    /// Shadow page level (1..4).
    pub level: u8,
    /// Quadrant (32-bit guests).
    pub quadrant: u8,
    /// No guest table backs it.
    pub metaphysical: bool,
    /// Inherited access, `uwx` with `-` for a missing permission.
    pub access: String,
    /// CR0.WP.
    pub cr0_wp: bool,
    /// EFER.NXE.
    pub efer_nx: bool,
    /// CR4.SMEP && !CR0.WP.
    pub smep_andnot_wp: bool,
    /// CR4.SMAP && !CR0.WP.
    pub smap_andnot_wp: bool,
    /// CR4.PSE.
    pub cr4_pse: bool,
    /// The packed role word, hex.
    pub word: String,
    /// Shadow pages created with this role.
    pub count: u64,
    /// The same count under the name for it.
    pub created: u64,
    /// Cache hits on shadow pages of this role.
    pub hits: u64,
    /// Names of the promised patterns it matches.
    pub promised: Vec<&'static str>,
}

impl RoleRow {
    /// The report row of one table line.
    pub fn of(r: &RoleCount) -> RoleRow {
        let v = r.role;
        let mut access = String::new();
        let _ = coverage::write_access(&mut access, v.access);
        RoleRow {
            glevels: v.glevels,
            level: v.level,
            quadrant: v.quadrant,
            metaphysical: v.metaphysical,
            access,
            cr0_wp: v.cr0_wp,
            efer_nx: v.efer_nx,
            smep_andnot_wp: v.smep_andnot_wp,
            smap_andnot_wp: v.smap_andnot_wp,
            cr4_pse: v.cr4_pse,
            word: format!("{:#x}", r.word),
            count: r.count,
            created: r.count,
            hits: r.hits,
            promised: coverage::PROMISED.iter().filter(|p| p.matches(&v)).map(|p| p.name).collect(),
        }
    }
}

/// One promised value never created, in the JSON report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MissingRow {
    /// The promise's name.
    pub name: &'static str,
    /// Its fixed fields (`glevels=2 level=1 ...`).
    pub pattern: String,
}

impl MissingRow {
    /// The report row of one missing pattern.
    pub fn of(p: &RolePattern) -> MissingRow {
        MissingRow { name: p.name, pattern: p.to_string() }
    }
}

/// The coverage lines of a boot's block: nothing without a table; the
/// one-line summary; with `verbose`, every created role first.
pub fn block_lines(console: &Console, checked: bool, missing: &[&RolePattern], verbose: bool) -> String {
    let mut s = String::new();
    if console.role_coverage_end.is_none() && console.role_coverage.is_empty() {
        return s;
    }
    if verbose {
        let _ = writeln!(
            s,
            "  role coverage table (glevels level quadrant meta access wp nx smep&!wp smap&!wp pse: count):"
        );
        for r in &console.role_coverage {
            let v = r.role;
            let b = |x: bool| if x { '1' } else { '0' };
            let mut access = String::new();
            let _ = coverage::write_access(&mut access, v.access);
            let names: Vec<&str> = coverage::PROMISED.iter().filter(|p| p.matches(&v)).map(|p| p.name).collect();
            let _ = writeln!(
                s,
                "    g{} l{} q{} m{} {access} {}{}{}{}{} {:#07x}: {:>4}{}",
                v.glevels,
                v.level,
                v.quadrant,
                b(v.metaphysical),
                b(v.cr0_wp),
                b(v.efer_nx),
                b(v.smep_andnot_wp),
                b(v.smap_andnot_wp),
                b(v.cr4_pse),
                r.word,
                r.count,
                if names.is_empty() { String::new() } else { format!("  <- {}", names.join("; ")) }
            );
        }
    }
    if let Some(stats) = &console.mmu_stats {
        if let (Some(&pairs), Some(&most)) = (stats.get("loaded_glevels_pairs"), stats.get("max_loaded_glevels")) {
            if stats.get("vcpus").is_some_and(|&n| n > 1) {
                let _ = writeln!(
                    s,
                    "  paging modes loaded at once (shadow roots, glevels): {}; most at one moment: {most}",
                    pairs_text(pairs as u32)
                );
            }
        }
    }
    let k = console.role_coverage.len();
    let n = coverage::PROMISED.len();
    if !checked {
        let _ = writeln!(s, "  role coverage: {k} distinct role values (not checked for this run)");
    } else if missing.is_empty() {
        let _ = writeln!(s, "  role coverage: {k} distinct role values, all {n} promised values covered");
    } else {
        let names: Vec<&str> = missing.iter().map(|p| p.name).collect();
        let _ = writeln!(
            s,
            "  role coverage: {k} distinct role values, {} of {n} promised values missing: {}",
            missing.len(),
            names.join(", ")
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::line;

    /// The simplest role value a pattern matches: its fixed fields, the
    /// rest zero.
    fn example(p: &RolePattern) -> RoleValue {
        RoleValue {
            glevels: p.glevels.unwrap_or(0),
            level: p.level.unwrap_or(0),
            quadrant: p.quadrant.unwrap_or(0),
            metaphysical: p.metaphysical.unwrap_or(false),
            access: match p.access_bit {
                Some((bit, true)) => p.access.unwrap_or(0) | bit,
                Some((bit, false)) => p.access.unwrap_or(0) & !bit,
                None => p.access.unwrap_or(0),
            },
            cr0_wp: p.cr0_wp.unwrap_or(false),
            efer_nx: p.efer_nx.unwrap_or(false),
            smep_andnot_wp: p.smep_andnot_wp.unwrap_or(false),
            smap_andnot_wp: p.smap_andnot_wp.unwrap_or(false),
            cr4_pse: p.cr4_pse.unwrap_or(false),
        }
    }

    /// A console of a good hypervisor run whose coverage table holds `roles`.
    fn console_with(roles: &[RoleValue]) -> Console {
        let mut log = format!(
            "quadrant-hv version={} mmu=shadow\ncheck PASS a/b: \nguest-summary passed=1 failed=0 skipped=0\n",
            shared::PROTOCOL_VERSION
        );
        for (i, r) in roles.iter().enumerate() {
            line::write_role_coverage(&mut log, r, i as u32, 1, 0).unwrap();
            log.push('\n');
        }
        line::write_role_coverage_end(&mut log, roles.len() as u32).unwrap();
        log += "\nquadrant-result status=0 reason=guest-exit\n";
        Console::from_text(&log)
    }

    fn all_promised() -> Vec<RoleValue> {
        coverage::PROMISED.iter().map(example).collect()
    }

    #[test]
    fn smp_gate_wants_real_mode_beside_long_mode() {
        let with = |pairs: u32| {
            Console::from_text(&format!("mmu-stats created=1 vcpus=2 max_loaded_glevels=2 loaded_glevels_pairs={pairs}\n"))
        };
        let mut reasons = Vec::new();
        judge_smp(&with(coverage::glevels_pair_bit(0, 4) | coverage::glevels_pair_bit(2, 4)), &mut reasons);
        assert!(reasons.is_empty(), "{reasons:?}");
        judge_smp(&with(coverage::glevels_pair_bit(3, 4)), &mut reasons);
        assert_eq!(
            reasons,
            ["SMP: shadow roots of glevels 0 and 4 were never loaded at the same moment (mmu-stats loaded_glevels_pairs = 3+4)"]
        );
        assert_eq!(pairs_text(0), "none");
        let lines = block_lines(&with(coverage::glevels_pair_bit(0, 4)), false, &[], false);
        assert!(lines.is_empty(), "no role table, nothing to show: {lines}");
    }

    #[test]
    fn full_coverage_passes() {
        let c = console_with(&all_promised());
        let mut reasons = Vec::new();
        assert!(judge(&c, coverage::PROMISED, &mut reasons).is_empty());
        assert!(reasons.is_empty(), "{reasons:?}");
        assert_eq!(c.role_coverage.len(), coverage::PROMISED.len());
    }

    #[test]
    fn each_missing_promised_value_fails_the_boot_by_name() {
        for p in coverage::PROMISED {
            // Drop every example that would satisfy `p` (the examples of
            // broad promises, like "access U=0", match many patterns).
            let roles: Vec<RoleValue> = all_promised().into_iter().filter(|v| !p.matches(v)).collect();
            let c = console_with(&roles);
            let mut reasons = Vec::new();
            let missing = judge(&c, coverage::PROMISED, &mut reasons);
            assert!(missing.contains(&p), "removing {}", p.name);
            let want = format!("role coverage: promised value \"{}\" ({p}) was never created", p.name);
            assert!(reasons.contains(&want), "{reasons:?}");
            // Only promises whose every example was dropped go missing.
            for q in &missing {
                assert!(!roles.iter().any(|v| q.matches(v)), "{} reported though created", q.name);
            }
        }
    }

    #[test]
    fn gate_through_judge_fails_a_clean_run_missing_a_value() {
        let mut roles = all_promised();
        let gone = roles.remove(0);
        let c = console_with(&roles);
        let exp =
            super::super::Expectation { hypervisor: true, expect_error: None, expect_text: None, role_coverage: true, expect_failures: &[], smp_modes: false };
        let v = super::super::judge(&c, super::super::Exit::Code(0), super::super::ExitConvention::Bochs, exp);
        assert!(!v.passed);
        assert!(v.reasons[0].contains(coverage::PROMISED[0].name), "{:?}", v.reasons);
        assert_eq!(v.coverage_missing, vec![&coverage::PROMISED[0]]);
        // The same console without the gate passes; with every value it passes too.
        let off = super::super::Expectation { role_coverage: false, ..exp };
        assert!(super::super::judge(&c, super::super::Exit::Code(0), super::super::ExitConvention::Bochs, off).passed);
        roles.push(gone);
        let c = console_with(&roles);
        assert!(super::super::judge(&c, super::super::Exit::Code(0), super::super::ExitConvention::Bochs, exp).passed);
    }

    /// The role-coverage tables of real runs (Bochs `core2_penryn_t9600`;
    /// `corei7_skylake_x` prints the same table): the default suite, and
    /// `--guest-args "modes=0 ram_test_mib=0"`.
    const PENRYN: &str = include_str!("testdata/coverage-penryn.txt");
    const PENRYN_MODES0: &str = include_str!("testdata/coverage-penryn-modes0.txt");

    #[test]
    fn measured_full_run_covers_every_promise() {
        let c = Console::from_text(PENRYN);
        assert_eq!(c.role_coverage_end, Some(58));
        let mut reasons = Vec::new();
        assert!(judge(&c, coverage::PROMISED, &mut reasons).is_empty());
        assert!(reasons.is_empty(), "{reasons:?}");
        assert_eq!(c.role_coverage.len(), 58);
    }

    #[test]
    fn measured_run_without_the_mode_walk_fails_naming_the_walks_values() {
        let c = Console::from_text(PENRYN_MODES0);
        let mut reasons = Vec::new();
        let missing: Vec<&str> = judge(&c, coverage::PROMISED, &mut reasons).iter().map(|p| p.name).collect();
        // The no-paging identity map is also created by the boot hand-off
        // (protected mode without paging), and the long/... checks build
        // their own 4-level tables (with every access value and both
        // EFER.NXE values), so only the 32-bit and PAE values go missing.
        let want: Vec<&str> = coverage::PROMISED
            .iter()
            .filter(|p| matches!(p.glevels, Some(2 | 3)))
            .map(|p| p.name)
            .collect();
        assert_eq!(want.len(), 11);
        assert_eq!(missing, want);
        assert_eq!(reasons.len(), want.len());
        assert!(reasons.iter().any(|r| r.contains("\"32-bit PD quadrant 1\" (glevels=2 level=2 quadrant=1")), "{reasons:?}");
    }

    #[test]
    fn missing_or_truncated_table_fails() {
        let c = Console::from_text("check PASS a/b: \nquadrant-result status=0 reason=guest-exit\n");
        let mut reasons = Vec::new();
        judge(&c, coverage::PROMISED, &mut reasons);
        assert_eq!(reasons.len(), 1);
        assert!(reasons[0].contains("no `role-coverage-end`"), "{reasons:?}");

        // A run that died early is not blamed for the table.
        let c = Console::from_text("quadrant-error triple-fault: x\nquadrant-result status=255 reason=triple-fault\n");
        let mut reasons = Vec::new();
        judge(&c, coverage::PROMISED, &mut reasons);
        assert!(reasons.is_empty(), "{reasons:?}");

        let mut c = console_with(&all_promised());
        c.role_coverage.pop();
        let mut reasons = Vec::new();
        let missing = judge(&c, coverage::PROMISED, &mut reasons);
        assert!(reasons[0].contains("distinct="), "{reasons:?}");
        assert_eq!(missing.len(), 1);
    }

    #[test]
    fn gate_applies_only_to_full_shadow_runs_of_the_built_guest() {
        assert!(applies(true, true, true, false, "expect_hv=1"));
        assert!(applies(true, true, true, false, "expect_hv=1 modes=0"));
        assert!(applies(true, true, true, false, "ram_test_mib=0"));
        assert!(!applies(false, true, true, false, ""));
        assert!(!applies(true, false, true, false, ""));
        assert!(!applies(true, true, false, false, ""));
        assert!(!applies(true, true, true, true, ""));
        assert!(!applies(true, true, true, false, "crash=triple-fault modes=0"));
        assert!(!applies(true, true, true, false, "ram_test_mib=0 only=long/pt-write"), "a subset promises nothing");
        assert!(!applies(true, true, true, false, "ram_test_mib=0 bench=ctxsw"));
    }

    #[test]
    fn block_lines_summarise() {
        let c = console_with(&all_promised());
        let s = block_lines(&c, true, &[], false);
        let n = coverage::PROMISED.len();
        assert_eq!(s, format!("  role coverage: {n} distinct role values, all {n} promised values covered\n"));
        let s = block_lines(&c, true, &[&coverage::PROMISED[1]], true);
        assert_eq!(s.lines().count(), n + 2);
        assert!(s.ends_with(&format!("1 of {n} promised values missing: {}\n", coverage::PROMISED[1].name)), "{s}");
        assert!(block_lines(&c, false, &[], false).contains("not checked"));
        assert_eq!(block_lines(&Console::default(), true, &[], true), "");
    }

    #[test]
    fn report_rows() {
        let c = console_with(&all_promised());
        let r = RoleRow::of(&c.role_coverage[0]);
        assert_eq!(r.promised.first().copied(), Some(coverage::PROMISED[0].name));
        assert_eq!(r.word, "0x0");
        let m = MissingRow::of(&coverage::PROMISED[0]);
        assert_eq!(m.pattern, coverage::PROMISED[0].to_string());
    }
}
