//! `cargo xtask mutants`: the kill matrix. Every deliberate MMU bug the
//! hypervisor can be built with (its `inject-*` cargo features, see
//! `hypervisor/src/mmu/inject.rs`) is built once and booted against the
//! guest suite in Bochs; a variant is killed when its boot fails. Two
//! stages: a fast one for every variant (Penryn, pure shadow paging, without
//! the RAM test), then the full suite (Penryn and Skylake, as `cargo xtask
//! test` boots them) for the variants the fast stage left alive.
//!
//! The matrix names, per variant, the stage that killed it and the first
//! failing check (or, for a boot that failed without one, the first reason:
//! a `quadrant-error`, the role-coverage gate, ...). Exit status 1 when a
//! variant survived; the matrix is also written as JSON.

use crate::boot::{self, BootResult, BootSpec, GuestImage, Mmu};
use crate::emulator::Emulator;
use crate::workspace::Workspace;
use crate::{build, packages};
use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;

/// `mutants` options.
#[derive(Args, Debug)]
pub struct MutantsOpts {
    /// Only these variants (repeatable); default: every `inject-*` feature.
    #[arg(long = "only", value_name = "NAME")]
    pub only: Vec<String>,
    /// How many Bochs boots run at the same time.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub jobs: usize,
    /// Timeout of each boot in seconds (a hang is a kill, found at the timeout).
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub timeout: u64,
    /// Print every console line of every boot.
    #[arg(long, short)]
    pub verbose: bool,
}

/// One boot of the matrix: which variant, which stage, which boot
/// (results are judged in the order of the jobs).
#[derive(Clone, Debug)]
struct Job {
    variant: String,
    stage: &'static str,
    spec: BootSpec,
}

/// The outcome of one variant.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// The variant (`inject-NAME` without the prefix).
    pub variant: String,
    /// Whether a boot failed.
    pub killed: bool,
    /// The stage of the first failing boot (`fast`, `full`), or null.
    pub stage: Option<String>,
    /// The boot that failed first.
    pub boot: Option<String>,
    /// The first failing check, if the boot had one.
    pub first_failing_check: Option<String>,
    /// Its detail, or the boot's first failure reason.
    pub why: String,
    /// Reports of the variant's boots.
    pub reports: Vec<String>,
}

/// The boots of stage `stage` for one variant: with 2 CPUs (and 4 in the
/// full stage), so the SMP checks see the bugs only several vCPUs show
/// (`no-remote-flush`).
fn stage_specs(stage: &'static str, hv: &std::path::Path, timeout: u64) -> Vec<BootSpec> {
    let one = |name: &str, model: &str, cpus: u32, guest_args: &str| BootSpec {
        name: name.to_string(),
        emulator: Emulator::Bochs,
        cpu_model: Some(model.to_string()),
        cpus,
        hypervisor: true,
        mmu: Mmu::Shadow,
        guest: GuestImage::Built,
        hv_args: String::new(),
        guest_args: guest_args.to_string(),
        timeout: Some(timeout),
        expect_error: None,
        expect_text: None,
        hv_kernel: Some(hv.to_path_buf()),
        expect_failures: &[],
        image: None,
    };
    match stage {
        "fast" => vec![one("penryn 2 cpus fast", "core2_penryn_t9600", 2, "ram_test_mib=0")],
        _ => vec![
            one("penryn 2 cpus full", "core2_penryn_t9600", 2, ""),
            one("skylake 4 cpus full", "corei7_skylake_x", 4, ""),
        ],
    }
}

/// What killed a variant in one boot, or `None` when the boot passed.
fn kill_of(r: &BootResult) -> Option<(Option<String>, String)> {
    if r.verdict.passed {
        return None;
    }
    if let Some(c) = r.report.checks.iter().find(|c| c.outcome == "fail") {
        return Some((Some(c.name.clone()), c.detail.clone()));
    }
    // A run that died before any check: its quadrant-error says more than
    // the emulator's exit status.
    let why = match r.report.errors.first() {
        Some(e) => format!("quadrant-error {}: {}", e.kind, e.text),
        None => r.verdict.reasons.first().cloned().unwrap_or_else(|| "the boot failed".into()),
    };
    Some((None, why))
}

/// Runs the matrix; returns whether every variant was killed.
pub fn mutants(ws: &Workspace, opts: &MutantsOpts) -> Result<bool> {
    let start = Instant::now();
    let all = build::injectable(ws)?;
    for o in &opts.only {
        if !all.contains(o) {
            bail!("unknown variant `{o}`; the hypervisor can be built with: {}", all.join(", "));
        }
    }
    let variants: Vec<String> = all.into_iter().filter(|v| opts.only.is_empty() || opts.only.contains(v)).collect();
    packages::ensure(packages::BOCHS)?;
    println!("== building the hypervisor and the guest ==");
    build::build(ws)?;
    let bins = ws.quadrant_dir().join("mutants").join("bin");
    std::fs::create_dir_all(&bins)?;
    let mut hv_of = Vec::new();
    for (i, v) in variants.iter().enumerate() {
        println!("== [{}/{}] building the hypervisor with inject-{v} ==", i + 1, variants.len());
        let built = build::build_injected(ws, v)?;
        let dst: PathBuf = bins.join(format!("quadrant-hv-{v}"));
        std::fs::copy(&built, &dst).with_context(|| format!("copying {} to {}", built.display(), dst.display()))?;
        hv_of.push(dst);
    }

    let mut rows: Vec<Row> = variants
        .iter()
        .map(|v| Row {
            variant: v.clone(),
            killed: false,
            stage: None,
            boot: None,
            first_failing_check: None,
            why: String::new(),
            reports: Vec::new(),
        })
        .collect();
    for stage in ["fast", "full"] {
        let jobs: Vec<Job> = rows
            .iter()
            .zip(&hv_of)
            .filter(|(r, _)| !r.killed)
            .flat_map(|(r, hv)| stage_specs(stage, hv, opts.timeout).into_iter().map(move |spec| (r, spec)))
            .map(|(r, mut spec)| {
                spec.name = format!("{} {}", r.variant, spec.name);
                Job { variant: r.variant.clone(), stage, spec }
            })
            .collect();
        if jobs.is_empty() {
            break;
        }
        let alive = rows.iter().filter(|r| !r.killed).count();
        println!("== stage {stage}: {} boots for {alive} variants, {} at a time ==", jobs.len(), opts.jobs.max(1));
        let specs = jobs.iter().map(|j| j.spec.clone()).collect();
        let results = boot::boot_many(ws, specs, opts.jobs, opts.verbose, |n, total, spec, r| {
            let verdict = match r {
                Ok(b) if b.verdict.passed => "survived this boot".to_string(),
                Ok(b) => match kill_of(b) {
                    Some((Some(c), _)) => format!("killed: {c} failed"),
                    Some((None, why)) => format!("killed: {why}"),
                    None => unreachable!(),
                },
                Err(e) => format!("runner error: {e:#}"),
            };
            println!("  [{n}/{total}, {:.0} s] {}: {verdict}", start.elapsed().as_secs_f64(), spec.name);
        });
        let results = jobs.into_iter().zip(results.into_iter().map(|(_, r)| r));
        for (job, r) in results {
            let row = rows.iter_mut().find(|r| r.variant == job.variant).expect("variant of a job");
            let b = r?;
            row.reports.push(b.report_path.display().to_string());
            if let (false, Some((check, why))) = (row.killed, kill_of(&b)) {
                row.killed = true;
                row.stage = Some(job.stage.to_string());
                row.boot = Some(job.spec.name.clone());
                row.first_failing_check = check;
                row.why = why;
            }
        }
    }

    println!("== kill matrix ({:.0} s) ==", start.elapsed().as_secs_f64());
    print!("{}", matrix(&rows));
    let killed = rows.iter().filter(|r| r.killed).count();
    println!("{killed} of {} variants killed ({:.0}%)", rows.len(), 100.0 * killed as f64 / rows.len().max(1) as f64);
    let out = ws.quadrant_dir().join("mutants").join("summary.json");
    std::fs::write(&out, serde_json::to_string_pretty(&rows)? + "\n")?;
    println!("matrix: {}", out.display());
    Ok(killed == rows.len())
}

/// The matrix as a text table.
fn matrix(rows: &[Row]) -> String {
    let w = rows.iter().map(|r| r.variant.len()).max().unwrap_or(7).max(7);
    let mut s = format!("{:<w$}  {:<8}  {:<5}  first failing check (or why)\n", "variant", "result", "stage");
    for r in rows {
        let what = match (&r.first_failing_check, r.killed) {
            (Some(c), _) => format!("{c}: {}", r.why),
            (None, true) => r.why.clone(),
            (None, false) => "every check passed".into(),
        };
        let what: String = what.chars().take(150).collect();
        s += &format!(
            "{:<w$}  {:<8}  {:<5}  {what}\n",
            r.variant,
            if r.killed { "killed" } else { "SURVIVED" },
            r.stage.as_deref().unwrap_or("-")
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matrix_names_the_check_or_the_reason() {
        let row = |v: &str, killed: bool, check: Option<&str>, why: &str| Row {
            variant: v.into(),
            killed,
            stage: killed.then(|| "fast".into()),
            boot: None,
            first_failing_check: check.map(String::from),
            why: why.into(),
            reports: Vec::new(),
        };
        let m = matrix(&[
            row("key-no-quadrant", true, Some("pg32/pt-quadrants"), "probe 3: expected 0x1"),
            row("no-write-protect", true, None, "quadrant-error hypervisor-fault: x"),
            row("x", false, None, ""),
        ]);
        let lines: Vec<&str> = m.lines().collect();
        assert_eq!(lines[0], "variant           result    stage  first failing check (or why)");
        assert_eq!(lines[1], "key-no-quadrant   killed    fast   pg32/pt-quadrants: probe 3: expected 0x1");
        assert_eq!(lines[2], "no-write-protect  killed    fast   quadrant-error hypervisor-fault: x");
        assert_eq!(lines[3], "x                 SURVIVED  -      every check passed");
    }

    #[test]
    fn full_stage_boots_both_models() {
        let s = stage_specs("full", std::path::Path::new("/hv"), 5);
        assert_eq!(s.len(), 2);
        assert!(s.iter().all(|b| b.hv_kernel.as_deref() == Some(std::path::Path::new("/hv")) && b.timeout == Some(5)));
        assert_eq!(stage_specs("fast", std::path::Path::new("/hv"), 5)[0].guest_args, "ram_test_mib=0");
    }
}
