//! The workloads on the fake machine: every access right, the figures and
//! the `bench` line as the runner parses it.

use super::*;
use crate::checks::fake::{Fake, FAKE_INFO};
use crate::report::Tally;
use shared::line::{parse, Line};

/// Runs the guest (its command line is the fake's) on `m`; returns the
/// console and the counts.
fn console(m: &mut Fake) -> (String, (u32, u32, u32)) {
    let (mut out, tally) = (String::new(), Tally::new());
    let mut ctx = Ctx::start(m, &mut out, &tally, FAKE_INFO);
    ctx.run_all();
    (out, tally.counts())
}

/// The `bench` line's fields.
fn bench_fields(out: &str) -> (String, Vec<(String, u64)>) {
    let l = out.lines().find(|l| l.starts_with("bench ")).unwrap_or_else(|| panic!("no bench line in {out}"));
    let Some(Line::Bench { name, fields }) = parse(l) else { panic!("{l}") };
    let f = fields
        .split(' ')
        .map(|w| {
            let (k, v) = w.split_once('=').unwrap();
            (k.to_string(), v.parse().unwrap())
        })
        .collect();
    (name.to_string(), f)
}

fn field(f: &[(String, u64)], k: &str) -> u64 {
    f.iter().find(|x| x.0 == k).unwrap_or_else(|| panic!("no {k} in {f:?}")).1
}

#[test]
fn ctxsw_under_the_hypervisor_reports_the_loop() {
    let cmd = "expect_hv=1 ram_test_mib=0 bench=ctxsw bench_k=4 bench_m=8 bench_r=3";
    let mut m = Fake::hv(cmd);
    let (out, counts) = console(&mut m);
    assert_eq!(counts.1, 0, "{out}");
    assert!(out.contains("check PASS bench/ctxsw: K=4 M=8 R=3: 12 ops, 96 accesses right"), "{out}");
    assert!(!out.contains("check-begin hv/"), "only boot/ checks run with bench=: {out}");
    let (name, f) = bench_fields(&out);
    assert_eq!(name, "ctxsw");
    assert_eq!([field(&f, "k"), field(&f, "m"), field(&f, "r"), field(&f, "hv"), field(&f, "ops")], [4, 8, 3, 1, 12]);
    // The fake's cache keeps all 4 spaces: every CR3 load of the loop hits.
    assert_eq!((field(&f, "cr3_hits"), field(&f, "cr3_misses"), field(&f, "created")), (12, 0, 0));
    // One CR-access exit per switch (the fake's TLB misses are its #PF
    // exits), and no closing-hypercall exit.
    assert_eq!(field(&f, "exit.28"), 12);
    let by_reason: u64 = f.iter().filter(|(k, _)| k.starts_with("exit.")).map(|x| x.1).sum();
    assert_eq!(field(&f, "exits"), by_reason);
    assert!(f.iter().all(|(k, _)| k != "exit.18"), "{f:?}");
    assert!(field(&f, "cycles") > 0);
}

#[test]
fn every_workload_passes_bare_without_counters() {
    for (w, ops) in [("ctxsw", 6), ("fork", 2), ("ptchurn", 3 * 5 * 2), ("modewalk", 2)] {
        let cmd = format!("expect_hv=0 ram_test_mib=0 bench={w} bench_k=3 bench_m=5 bench_r=2");
        let mut m = Fake::bare(&cmd);
        let (out, counts) = console(&mut m);
        assert_eq!(counts.1, 0, "{w}: {out}");
        assert!(out.contains(&format!("check PASS bench/{w}")), "{w}: {out}");
        let (_, f) = bench_fields(&out);
        assert_eq!((field(&f, "hv"), field(&f, "ops")), (0, ops), "{w}");
        assert!(f.iter().all(|(k, _)| k != "exits"), "bare: no counters: {f:?}");
        assert_eq!(m.vmcalls, 0, "bare: no VMCALL");
    }
}

#[test]
fn fork_and_ptchurn_write_page_tables_under_the_hypervisor() {
    for w in ["fork", "ptchurn"] {
        let cmd = format!("expect_hv=1 ram_test_mib=0 bench={w} bench_m=16 bench_r=2");
        let mut m = Fake::hv(&cmd);
        let (out, counts) = console(&mut m);
        assert_eq!(counts.1, 0, "{w}: {out}");
        let (_, f) = bench_fields(&out);
        assert!(field(&f, "pt_writes") > 0, "{w}: {f:?}");
        assert!(field(&f, "unshadows") > 0, "{w}: writes in a row flood the PTs: {f:?}");
    }
}

#[test]
fn a_wrong_translation_fails_the_workload() {
    let cmd = "expect_hv=1 ram_test_mib=0 bench=ptchurn bench_m=4 bench_r=1";
    let mut m = Fake::hv(cmd);
    m.mmu.invlpg_ignored = true;
    m.mmu.no_flood = true;
    let (out, counts) = console(&mut m);
    assert_eq!(counts.1, 1, "{out}");
    assert!(out.contains("check FAIL bench/ptchurn: "), "{out}");
    assert!(!out.contains("bench ptchurn"), "no figures for a failed workload: {out}");
}

#[test]
fn parameters_out_of_range_fail_with_their_name() {
    let cmd = "expect_hv=0 ram_test_mib=0 bench=ctxsw bench_k=100000";
    let mut m = Fake::bare(cmd);
    let (out, _) = console(&mut m);
    assert!(out.contains("check FAIL bench/ctxsw: bench_k=100000 is out of range 1..=512"), "{out}");
}

#[test]
fn ctxsw_smp_runs_the_start_up_checks_and_needs_aps() {
    // The fake has one CPU and no SMP interface: the start-up checks run
    // (and skip), then the workload fails with the reason.
    let cmd = "expect_hv=0 ram_test_mib=0 bench=ctxsw-smp bench_k=2 bench_m=2 bench_r=1";
    let mut m = Fake::bare(cmd);
    let (out, counts) = console(&mut m);
    for c in crate::checks::smp::START_UP {
        assert!(out.contains(&format!("check-begin {c}")), "{c}: {out}");
    }
    assert!(!out.contains("check-begin smp/ipi-xapic"), "only the start-up checks: {out}");
    assert_eq!(counts.1, 1, "{out}");
    assert!(out.contains("check FAIL bench/ctxsw-smp: no APs online: it needs cpus=2 or more"), "{out}");
}
