//! The host microbenchmarks of the MMU core (crate `mmu-bench`): ns per
//! operation from criterion (`cargo bench -p mmu-bench --features
//! criterion`, read from `<target>/criterion/<op>/<variant>/new/
//! estimates.json`, less the `timer/none` baseline) and instructions per
//! operation from callgrind (`mmu-ops OP VARIANT N` with
//! `--toggle-collect=mmu_bench_op`, the `totals:` line divided by N).

use crate::packages;
use crate::workspace::Workspace;
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

/// The operations (`mmu_bench::Op` names) and the variants.
pub const OPS: [&str; 5] = ["fault-fill", "cr3-hit", "cr3-miss", "pt-write", "recycle"];
/// Cache on and off.
pub const VARIANTS: [&str; 2] = ["cache", "nocache"];

/// One operation in one variant.
#[derive(Clone, Debug, Serialize)]
pub struct HostRow {
    /// The operation.
    pub op: String,
    /// `cache` or `nocache`.
    pub variant: String,
    /// Criterion's mean, less the timer baseline (ns).
    pub ns_per_op: Option<f64>,
    /// Callgrind's instructions per operation.
    pub instructions_per_op: Option<f64>,
}

/// Every row, and the timer baseline subtracted.
#[derive(Clone, Debug, Serialize)]
pub struct HostFigures {
    /// The rows, op by op.
    pub rows: Vec<HostRow>,
    /// Two `Instant::now()` (ns), subtracted from each criterion mean.
    pub timer_ns: f64,
    /// Operations per callgrind run.
    pub callgrind_ops: u64,
}

/// Operations per callgrind run (callgrind counts exactly, so the only
/// reason for many is to average the operations' varying pages).
const CALLGRIND_OPS: u64 = 1000;

/// Criterion's mean estimate (ns) from an `estimates.json`.
pub fn criterion_mean(json: &str) -> Option<f64> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    v.get("mean")?.get("point_estimate")?.as_f64()
}

/// The instruction count of a callgrind output file (its `totals:` line,
/// else `summary:`).
pub fn callgrind_total(out: &str) -> Option<u64> {
    let line = |k: &str| out.lines().rev().find_map(|l| l.strip_prefix(k)?.split_whitespace().next()?.parse().ok());
    line("totals:").or_else(|| line("summary:"))
}

/// Runs both measurements.
pub fn run(ws: &Workspace) -> Result<HostFigures> {
    let (root, target) = (&ws.root, &ws.target);
    println!("== host microbenchmarks: criterion (ns/op) ==");
    let st = Command::new("cargo")
        .current_dir(root)
        .args(["bench", "-p", "mmu-bench", "--features", "criterion", "--bench", "mmu", "--", "--noplot"])
        .status()
        .context("running cargo bench")?;
    if !st.success() {
        bail!("cargo bench -p mmu-bench failed ({st})");
    }
    let crit = target.join("criterion");
    let read_mean = |id: &Path| -> Option<f64> {
        criterion_mean(&std::fs::read_to_string(crit.join(id).join("new").join("estimates.json")).ok()?)
    };
    let timer_ns = read_mean(Path::new("timer/none")).unwrap_or(0.0);

    println!("== host microbenchmarks: callgrind (instructions/op) ==");
    packages::ensure(packages::VALGRIND)?;
    let st = Command::new("cargo")
        .current_dir(root)
        .args(["build", "--release", "-p", "mmu-bench", "--bin", "mmu-ops"])
        .status()
        .context("building mmu-ops")?;
    if !st.success() {
        bail!("building mmu-ops failed ({st})");
    }
    let ops_bin = target.join("release").join("mmu-ops");
    let dir = ws.quadrant_dir().join("bench").join("callgrind");
    std::fs::create_dir_all(&dir)?;
    let mut rows = Vec::new();
    for op in OPS {
        for variant in VARIANTS {
            let out = dir.join(format!("{op}-{variant}.out"));
            let o = Command::new("valgrind")
                .arg("--tool=callgrind")
                .arg(format!("--callgrind-out-file={}", out.display()))
                .arg("--toggle-collect=mmu_bench_op")
                .arg(&ops_bin)
                .args([op, variant, &CALLGRIND_OPS.to_string()])
                .output()
                .context("running valgrind")?;
            if !o.status.success() {
                bail!("valgrind mmu-ops {op} {variant} failed: {}", String::from_utf8_lossy(&o.stderr));
            }
            let total = callgrind_total(&std::fs::read_to_string(&out)?)
                .with_context(|| format!("no totals line in {}", out.display()))?;
            let ins = total as f64 / CALLGRIND_OPS as f64;
            let ns = read_mean(&Path::new(op).join(variant)).map(|m| (m - timer_ns).max(0.0));
            println!("  {op:<10} {variant:<8} {ins:>10.0} instructions/op");
            rows.push(HostRow { op: op.into(), variant: variant.into(), ns_per_op: ns, instructions_per_op: Some(ins) });
        }
    }
    Ok(HostFigures { rows, timer_ns, callgrind_ops: CALLGRIND_OPS })
}

/// The host figures as a table: per op, cache and no cache side by side.
pub fn table(h: &HostFigures) -> String {
    let mut s = format!(
        "MMU core on the host (ns/op: criterion, less {:.0} ns of timing; instructions/op: callgrind)\n{:<11} {:>12} {:>12} {:>14} {:>14}\n",
        h.timer_ns, "op", "ns cache", "ns nocache", "instr cache", "instr nocache"
    );
    for op in OPS {
        let get = |v: &str| h.rows.iter().find(|r| r.op == op && r.variant == v);
        let f = |x: Option<f64>| x.map_or("-".into(), |x| format!("{x:.0}"));
        let (c, n) = (get("cache"), get("nocache"));
        let _ = writeln!(
            s,
            "{op:<11} {:>12} {:>12} {:>14} {:>14}",
            f(c.and_then(|r| r.ns_per_op)),
            f(n.and_then(|r| r.ns_per_op)),
            f(c.and_then(|r| r.instructions_per_op)),
            f(n.and_then(|r| r.instructions_per_op))
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_criterion_and_callgrind() {
        let est = r#"{"mean":{"confidence_interval":{"confidence_level":0.95,"lower_bound":101.0,"upper_bound":103.0},"point_estimate":102.5,"standard_error":0.5},"median":{"point_estimate":99.0}}"#;
        assert_eq!(criterion_mean(est), Some(102.5));
        assert_eq!(criterion_mean("{}"), None);
        let cg = "# callgrind format\nevents: Ir\nfl=(1) x.rs\nfn=(1) f\n3 10\n\nsummary: 803134\ntotals: 803134\n";
        assert_eq!(callgrind_total(cg), Some(803134));
        assert_eq!(callgrind_total("events: Ir\nsummary: 12\n"), Some(12));
        assert_eq!(callgrind_total("nothing"), None);
    }

    #[test]
    fn table_pairs_the_variants() {
        let row = |op: &str, v: &str, ns, ins| HostRow { op: op.into(), variant: v.into(), ns_per_op: ns, instructions_per_op: ins };
        let h = HostFigures {
            rows: vec![row("cr3-hit", "cache", Some(90.4), Some(442.0)), row("cr3-hit", "nocache", None, Some(30482.0))],
            timer_ns: 25.0,
            callgrind_ops: 1000,
        };
        let t = table(&h);
        assert!(t.lines().any(|l| l == "cr3-hit               90            -            442          30482"), "{t}");
    }
}
