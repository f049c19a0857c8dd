//! `cargo xtask bench` (issue #8): what the shadow page cache buys, in one
//! run, against no cache, EPT and bare metal.
//!
//! 1. Guest workloads (`guest-unikernel/src/bench/`, the guest's `bench=`)
//!    booted in Bochs under each hypervisor variant ([`Variant`]): shadow
//!    paging with the cache, without it (`cache=0`), the EPT reference, and
//!    bare. Each boot's `bench` line becomes a [`figures::Run`].
//! 2. Host microbenchmarks of the MMU core ([`host`]): ns/op with criterion
//!    and instructions/op with callgrind, cache against no cache.
//! 3. A table, the targets of #8 section 6 ([`figures::targets`]),
//!    `<target>/quadrant/bench/summary.json` and SVG plots.
//!
//! The default is quick (ctxsw at M=64 for K = 1..16, the other workloads
//! once each); `--full` sweeps K = 1..256 and M = 16, 64, 256.

pub mod figures;
pub mod host;
pub mod plot;

use crate::boot::{self, BootSpec, GuestImage, Mmu};
use crate::emulator::Emulator;
use crate::workspace::Workspace;
use crate::{build, packages};
use anyhow::{Context, Result};
use clap::Args;
use figures::{Run, Target, Variant};
use serde::Serialize;
use std::fmt::Write as _;
use std::time::Instant;

/// `bench` options.
#[derive(Args, Debug)]
pub struct BenchOpts {
    /// Sweep K (1..256) and M (16, 64, 256) of ctxsw, and M of fork and
    /// ptchurn (136 boots, about 15 minutes here); default: the quick set.
    #[arg(long)]
    pub full: bool,
    /// How many Bochs boots run at the same time.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub jobs: usize,
    /// Timeout of each boot in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 900)]
    pub timeout: u64,
    /// Bochs CPU model (it must have EPT for the EPT variant).
    #[arg(long, value_name = "MODEL", default_value = "corei7_skylake_x")]
    pub cpu_model: String,
    /// Leave out the host microbenchmarks.
    #[arg(long, conflicts_with = "host_only")]
    pub no_host: bool,
    /// Only the host microbenchmarks.
    #[arg(long)]
    pub host_only: bool,
    /// Boot nothing: print the table and the targets and draw the plots
    /// again from the last `summary.json`.
    #[arg(long, conflicts_with_all = ["host_only", "full"])]
    pub replot: bool,
    /// Print every boot's block.
    #[arg(long, short)]
    pub verbose: bool,
}

/// One planned workload boot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The workload.
    pub workload: &'static str,
    /// K, M, R.
    pub k: u32,
    /// M.
    pub m: u32,
    /// R.
    pub r: u32,
    /// The variant.
    pub variant: Variant,
}

/// CR3 switches of every ctxsw run (R = this / K, at least 3 rounds), so
/// that the runs of a sweep do comparable work.
pub const SWITCHES: u32 = 320;

/// The workload boots of the quick or the full set.
pub fn plan(full: bool) -> Vec<Plan> {
    let (ks, ms): (&[u32], &[u32]) =
        if full { (&[1, 2, 4, 8, 16, 32, 64, 128, 256], &[16, 64, 256]) } else { (&[1, 2, 4, 8, 16], &[64]) };
    let mut v = Vec::new();
    for &m in ms {
        for &k in ks {
            for variant in Variant::ALL {
                v.push(Plan { workload: "ctxsw", k, m, r: (SWITCHES / k).max(3), variant });
            }
        }
    }
    for w in ["fork", "ptchurn"] {
        for &m in ms {
            for variant in Variant::ALL {
                v.push(Plan { workload: w, k: 1, m, r: 10, variant });
            }
        }
    }
    for variant in Variant::ALL {
        v.push(Plan { workload: "modewalk", k: 1, m: 0, r: 3, variant });
    }
    // Every CPU switching: the target point's K and M on SMP_CPUS CPUs.
    for variant in Variant::ALL {
        v.push(Plan { workload: "ctxsw-smp", k: figures::TARGET_K as u32, m: figures::TARGET_M as u32, r: SWITCHES / 16, variant });
    }
    v
}

/// CPUs of the `ctxsw-smp` boots (the guest's APs join the BSP's loop).
pub const SMP_CPUS: u32 = 2;

impl Plan {
    /// The boot.
    pub fn spec(&self, cpu_model: &str, timeout: u64) -> BootSpec {
        let bench = match self.workload {
            "modewalk" => format!("bench=modewalk bench_r={}", self.r),
            "ctxsw" | "ctxsw-smp" => format!("bench={} bench_k={} bench_m={} bench_r={}", self.workload, self.k, self.m, self.r),
            w => format!("bench={w} bench_m={} bench_r={}", self.m, self.r),
        };
        BootSpec {
            name: self.name(),
            emulator: Emulator::Bochs,
            cpu_model: Some(cpu_model.to_string()),
            cpus: self.cpus(),
            hypervisor: self.variant != Variant::Bare,
            mmu: if self.variant == Variant::Ept { Mmu::Ept } else { Mmu::Shadow },
            guest: GuestImage::Built,
            hv_args: if self.variant == Variant::NoCache { "cache=0".into() } else { String::new() },
            guest_args: format!("ram_test_mib=0 {bench}"),
            timeout: Some(timeout),
            expect_error: None,
            expect_text: None,
            hv_kernel: None,
            expect_failures: &[],
            image: None,
        }
    }

    /// CPUs of the boot.
    pub fn cpus(&self) -> u32 {
        if self.workload == "ctxsw-smp" { SMP_CPUS } else { 1 }
    }

    /// `ctxsw K=16 M=64 cache`, `ctxsw-smp K=16 M=64 2 cpus cache`.
    pub fn name(&self) -> String {
        match self.workload {
            "ctxsw" => format!("ctxsw K={} M={} {}", self.k, self.m, self.variant.name()),
            "ctxsw-smp" => format!("ctxsw-smp K={} M={} {} cpus {}", self.k, self.m, self.cpus(), self.variant.name()),
            "modewalk" => format!("modewalk {}", self.variant.name()),
            w => format!("{w} M={} {}", self.m, self.variant.name()),
        }
    }
}

/// `summary.json`.
#[derive(Debug, Serialize)]
struct Summary {
    /// `quick` or `full`.
    mode: &'static str,
    cpu_model: String,
    duration_s: f64,
    targets: Vec<Target>,
    runs: Vec<Run>,
    /// Boots that failed: (name, why).
    failures: Vec<(String, String)>,
    host: Option<host::HostFigures>,
    plots: Vec<String>,
}

/// The plots of `runs` into `out_dir` (M=64; with `full` also M=16, 256);
/// returns their paths.
fn draw_plots(out_dir: &std::path::Path, runs: &[Run], full: bool) -> Result<Vec<String>> {
    let mut plots = Vec::new();
    let ms: &[u64] = if full { &[16, 64, 256] } else { &[64] };
    for &m in ms {
        let suffix = if m == figures::TARGET_M { String::new() } else { format!("-m{m}") };
        let exits = plot::series(runs, m, |r| r.exits_per_op.or((r.variant == Variant::Bare).then_some(0.0)));
        let cycles = plot::series(runs, m, |r| Some(r.cycles_per_round));
        for (file, title, y, s, log) in [
            (format!("ctxsw-exits-per-switch{suffix}.svg"), format!("ctxsw, M={m}: VM exits per CR3 switch"), "exits per switch", exits, false),
            (format!("ctxsw-cycles-per-round{suffix}.svg"), format!("ctxsw, M={m}: guest cycles per round"), "guest TSC cycles per round", cycles, true),
        ] {
            if s.is_empty() {
                continue;
            }
            let path = out_dir.join(&file);
            plot::draw(&path, &title, y, &s, log)?;
            plots.push(path.display().to_string());
        }
    }
    Ok(plots)
}

/// `--replot`: the table, the targets and the plots from the last run.
fn replot(out_dir: &std::path::Path) -> Result<bool> {
    let path = out_dir.join("summary.json");
    let text = std::fs::read_to_string(&path).with_context(|| format!("{} (run `cargo xtask bench` first)", path.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let runs: Vec<Run> = serde_json::from_value(v["runs"].clone()).with_context(|| format!("the runs of {}", path.display()))?;
    print!("{}", table(&runs));
    print!("{}", targets_text(&figures::targets(&runs)));
    for p in draw_plots(out_dir, &runs, v["mode"] == "full")? {
        println!("plot:    {p}");
    }
    Ok(true)
}

/// Runs the benchmark; true when every boot and host step ran.
pub fn bench(ws: &Workspace, opts: &BenchOpts) -> Result<bool> {
    let start = Instant::now();
    let out_dir = ws.quadrant_dir().join("bench");
    std::fs::create_dir_all(&out_dir)?;
    if opts.replot {
        return replot(&out_dir);
    }
    let mut runs = Vec::new();
    let mut failures = Vec::new();
    if !opts.host_only {
        packages::ensure(packages::BOCHS)?;
        println!("== building the hypervisor and the guest ==");
        build::build(ws)?;
        let plans = plan(opts.full);
        println!(
            "== {} workload boots in Bochs {} ({} mode), {} at a time ==",
            plans.len(),
            opts.cpu_model,
            if opts.full { "full" } else { "quick" },
            opts.jobs.max(1)
        );
        let specs = plans.iter().map(|p| p.spec(&opts.cpu_model, opts.timeout)).collect();
        let results = boot::boot_many(ws, specs, opts.jobs, opts.verbose, |n, total, spec, r| {
            let what = match r {
                Ok(b) if b.verdict.passed => b
                    .report
                    .bench
                    .first()
                    .map_or("passed, but no bench line".into(), |l| format!("{} cycles", l.fields.get("cycles").unwrap_or(&0))),
                Ok(b) => format!("FAILED: {}", b.verdict.reasons.first().cloned().unwrap_or_default()),
                Err(e) => format!("runner error: {e:#}"),
            };
            println!("  [{n}/{total}, {:.0} s] {}: {what}", start.elapsed().as_secs_f64(), spec.name);
        });
        for (p, (spec, r)) in plans.iter().zip(results) {
            let run = match &r {
                Ok(b) if b.verdict.passed => b
                    .report
                    .bench
                    .iter()
                    .find(|l| l.name == p.workload)
                    .and_then(|l| Run::of(l, p.variant, &b.report_path.display().to_string())),
                _ => None,
            };
            match (run, r) {
                (Some(run), _) => runs.push(run),
                (None, Ok(b)) => {
                    let why = if b.verdict.passed {
                        format!("no valid `bench {}` line", p.workload)
                    } else {
                        b.verdict.reasons.join("; ")
                    };
                    failures.push((spec.name.clone(), format!("{why} (report {})", b.report_path.display())))
                }
                (None, Err(e)) => failures.push((spec.name.clone(), format!("{e:#}"))),
            }
        }
    }
    let host = if opts.no_host {
        None
    } else {
        match host::run(ws) {
            Ok(h) => Some(h),
            Err(e) => {
                failures.push(("host microbenchmarks".into(), format!("{e:#}")));
                None
            }
        }
    };

    let targets = figures::targets(&runs);
    let plots = if runs.is_empty() { Vec::new() } else { draw_plots(&out_dir, &runs, opts.full)? };
    let ok = failures.is_empty();
    println!("== results ({:.0} s) ==", start.elapsed().as_secs_f64());
    print!("{}", table(&runs));
    if let Some(h) = &host {
        print!("{}", host::table(h));
    }
    print!("{}", targets_text(&targets));
    for (name, why) in &failures {
        println!("FAILED {name}: {why}");
    }
    let summary = Summary {
        mode: if opts.full { "full" } else { "quick" },
        cpu_model: opts.cpu_model.clone(),
        duration_s: (start.elapsed().as_secs_f64() * 10.0).round() / 10.0,
        targets,
        runs,
        failures,
        host,
        plots: plots.clone(),
    };
    let path = out_dir.join("summary.json");
    std::fs::write(&path, serde_json::to_string_pretty(&summary)? + "\n")?;
    println!("summary: {}", path.display());
    for p in plots {
        println!("plot:    {p}");
    }
    Ok(ok)
}

/// `1.23`, or `-` for nothing.
fn num(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |x| format!("{x:.digits$}"))
}

/// The runs as a text table.
pub fn table(runs: &[Run]) -> String {
    let mut s = format!(
        "{:<9} {:<8} {:>4} {:>4} {:>4} {:>4} {:>6} {:>9} {:>12} {:>8} {:>7} {:>6} {:>6} {:>9}\n",
        "workload", "variant", "cpus", "K", "M", "R", "ops", "exits/op", "cycles/op", "created", "hit%", "zaps", "recyc", "hvcyc/ex"
    );
    for r in runs {
        let mmu = |k: &str| r.mmu.get(k).map_or("-".into(), |v| v.to_string());
        let _ = writeln!(
            s,
            "{:<9} {:<8} {:>4} {:>4} {:>4} {:>4} {:>6} {:>9} {:>12.0} {:>8} {:>7} {:>6} {:>6} {:>9}",
            r.workload,
            r.variant.name(),
            r.cpus,
            r.k,
            r.m,
            r.r,
            r.ops,
            num(r.exits_per_op, 3),
            r.cycles_per_op,
            mmu("created"),
            num(r.hit_ratio.map(|h| 100.0 * h), 2),
            mmu("zaps"),
            mmu("recycles"),
            num(r.hv_cycles_per_exit, 0),
        );
    }
    s
}

/// The targets as text, one block each.
pub fn targets_text(t: &[Target]) -> String {
    let mut s = String::from("targets (issue #8 section 6):\n");
    for x in t {
        let _ = writeln!(s, "  {} {}: {}\n      goal: {}\n      note: {}", if x.met { "MET   " } else { "MISSED" }, x.name, x.measured, x.goal, x.note);
    }
    let met = t.iter().filter(|x| x.met).count();
    let _ = writeln!(s, "{met} of {} targets met", t.len());
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_plan_has_the_target_points_and_every_variant() {
        let p = plan(false);
        for v in Variant::ALL {
            assert!(p.contains(&Plan { workload: "ctxsw", k: 16, m: 64, r: 20, variant: v }));
            assert!(p.iter().any(|x| x.workload == "modewalk" && x.variant == v));
        }
        assert_eq!(p.len(), 5 * 4 + 2 * 4 + 4 + 4);
        let smp: Vec<_> = p.iter().filter(|x| x.workload == "ctxsw-smp").collect();
        assert_eq!(smp.len(), 4);
        let s = smp[0].spec("corei7_skylake_x", 60);
        assert_eq!((s.cpus, s.name.as_str()), (SMP_CPUS, "ctxsw-smp K=16 M=64 2 cpus cache"));
        assert_eq!(s.guest_args, "ram_test_mib=0 bench=ctxsw-smp bench_k=16 bench_m=64 bench_r=20");
        assert!(plan(true).len() > p.len());
        assert!(plan(true).iter().all(|x| x.workload != "ctxsw" || x.k * x.r >= SWITCHES.min(3 * x.k)));
    }

    #[test]
    fn specs_select_the_variant() {
        let p = Plan { workload: "ctxsw", k: 4, m: 16, r: 80, variant: Variant::NoCache };
        let s = p.spec("corei7_skylake_x", 60);
        assert_eq!(s.name, "ctxsw K=4 M=16 nocache");
        assert_eq!((s.hv_args.as_str(), s.mmu, s.hypervisor), ("cache=0", Mmu::Shadow, true));
        assert_eq!(s.guest_args, "ram_test_mib=0 bench=ctxsw bench_k=4 bench_m=16 bench_r=80");
        let e = Plan { variant: Variant::Ept, ..p.clone() }.spec("m", 1);
        assert_eq!((e.mmu, e.hv_args.as_str()), (Mmu::Ept, ""));
        assert!(!Plan { variant: Variant::Bare, ..p }.spec("m", 1).hypervisor);
        let f = Plan { workload: "fork", k: 1, m: 64, r: 10, variant: Variant::Cache }.spec("m", 1);
        assert_eq!(f.guest_args, "ram_test_mib=0 bench=fork bench_m=64 bench_r=10");
    }

    #[test]
    fn table_and_targets_text() {
        let l = crate::verdict::BenchLine::parse("ctxsw", "k=16 m=64 r=20 ops=320 cycles=640 exits=320 created=0 cr3_hits=320 cr3_misses=0 exit.28=320 hvcyc.28=3200");
        let r = Run::of(&l, Variant::Cache, "").unwrap();
        let t = table(std::slice::from_ref(&r));
        assert!(t.lines().nth(1).unwrap().starts_with("ctxsw     cache       1   16   64   20    320     1.000            2        0  100.00"), "{t}");
        let tt = targets_text(&figures::targets(&[r]));
        assert!(tt.contains("MET    cr3-switch-cost: 1.000 exits and 0 shadow pages created over 320 switches"), "{tt}");
        assert!(tt.ends_with("2 of 4 targets met\n"), "{tt}");
    }
}
