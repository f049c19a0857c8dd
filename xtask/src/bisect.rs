//! `cargo xtask bisect GOOD BAD [run options]`: `git bisect run` with one
//! boot per step.
//!
//! Each step checks out another tree, so the runner copies its own binary to
//! a temporary directory and has git run that copy (`bisect-step`). A step
//! exits 125 (git's "skip") when the commit does not build, 0/1 for the
//! boot's verdict, and 128 (abort) when the runner itself cannot work. Each
//! step leaves its report in the temporary directory, named by commit, so
//! the end of the bisection can show what failed at the first bad commit.

use crate::boot::{self, Style};
use crate::workspace::Workspace;
use crate::{build, packages, RunOpts};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use xshell::cmd;

/// Environment variable naming the directory of the step records.
const STEP_DIR_VAR: &str = "QUADRANT_BISECT_DIR";

/// Runs the whole bisection; true when a first bad commit was found.
pub fn bisect(ws: &Workspace, good: &str, bad: &str, run: &RunOpts) -> Result<bool> {
    let sh = ws.shell()?;
    let dirty = cmd!(sh, "git status --porcelain --untracked-files=no").quiet().read()?;
    if !dirty.trim().is_empty() {
        bail!(
            "the work tree has uncommitted changes; bisecting checks out other commits, so commit or \
             stash them first:\n{dirty}"
        );
    }
    if cmd!(sh, "git rev-parse --verify --quiet refs/bisect/bad").quiet().ignore_status().read()?.trim() != "" {
        bail!("a git bisect is already in progress here; end it with `git bisect reset`");
    }
    let verify = |rev: &str| -> Result<String> {
        let spec = format!("{rev}^{{commit}}");
        cmd!(sh, "git rev-parse --verify --quiet {spec}")
            .quiet()
            .read()
            .map_err(|_| anyhow::anyhow!("{rev:?} is not a commit"))
    };
    let (good_sha, bad_sha) = (verify(good)?, verify(bad)?);
    let emu = run.resolve_emulator()?;
    packages::ensure(emu.needs())?;

    // The step binary: a copy of this one, outside the tree git rewrites.
    let tmp = std::env::temp_dir().join(format!("quadrant-bisect-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let exe = std::env::current_exe().context("locating the running xtask binary")?;
    let copy = tmp.join("xtask");
    std::fs::copy(&exe, &copy).with_context(|| format!("copying {} to {}", exe.display(), copy.display()))?;
    println!("bisecting {good} ({}) .. {bad} ({}) with {}", short(&good_sha), short(&bad_sha), copy.display());

    cmd!(sh, "git bisect start {bad_sha} {good_sha}").run()?;
    // Whatever happens from here on, end the bisection (git bisect reset).
    let outcome = (|| -> Result<bool> {
        let step_args = run.to_args();
        let step_args = &step_args;
        let copy_s = copy.to_string_lossy().into_owned();
        println!("$ git bisect run {copy_s} bisect-step {}", step_args.join(" "));
        // git's and the steps' output streams straight to the terminal.
        let ran = std::process::Command::new("git")
            .args(["bisect", "run"])
            .arg(&copy)
            .arg("bisect-step")
            .args(step_args)
            .current_dir(&ws.root)
            .env(STEP_DIR_VAR, &tmp)
            .env("CARGO_MANIFEST_DIR", ws.root.join("xtask"))
            .status()
            .context("starting `git bisect run`")?;

        let log = cmd!(sh, "git bisect log").quiet().ignore_status().read().unwrap_or_default();
        std::fs::write(tmp.join("bisect.log"), &log)?;
        let first_bad = log
            .lines()
            .find_map(|l| l.strip_prefix("# first bad commit: ["))
            .and_then(|l| l.split(']').next())
            .map(str::to_string);
        let found = first_bad.is_some();
        if let Some(first_bad) = first_bad {
            let record = tmp.join(format!("{first_bad}.json"));
            if !record.is_file() {
                // BAD itself was never booted (GOOD is its parent): boot it once now.
                println!("booting the first bad commit once to show what fails there");
                cmd!(sh, "git checkout -q {first_bad}").run()?;
                let _ = cmd!(sh, "{copy_s} bisect-step {step_args...}")
                    .env(STEP_DIR_VAR, &tmp)
                    .env("CARGO_MANIFEST_DIR", ws.root.join("xtask"))
                    .ignore_status()
                    .run();
            }
            let subject = cmd!(sh, "git log -1 --format=%h%x20%s {first_bad}").quiet().read().unwrap_or_default();
            println!("\n== first bad commit: {first_bad} ==\n{subject}");
            print_failures(&record);
        } else {
            println!("\nthe bisection found no single first bad commit (`git bisect run` {ran}; see above)");
        }
        Ok(found)
    })();
    println!("bisect log: {}", tmp.join("bisect.log").display());
    cmd!(sh, "git bisect reset").run()?;
    outcome
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

/// Prints the failed checks and reasons from a step record.
fn print_failures(record: &Path) {
    let Ok(text) = std::fs::read_to_string(record) else {
        println!("(no report of that commit: {})", record.display());
        return;
    };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else { return };
    let checks = v["checks"].as_array().cloned().unwrap_or_default();
    let failed: Vec<_> = checks.iter().filter(|c| c["outcome"] == "fail").collect();
    if failed.is_empty() {
        println!("no check failed there; the run failed because:");
    } else {
        println!("failed checks there:");
        for c in failed {
            println!("  FAIL {}: {}", c["name"].as_str().unwrap_or("?"), c["detail"].as_str().unwrap_or(""));
        }
        println!("and the run failed because:");
    }
    for r in v["failure_reasons"].as_array().cloned().unwrap_or_default() {
        println!("  - {}", r.as_str().unwrap_or(""));
    }
    println!("report: {}", v["run_dir"].as_str().map(|d| format!("{d}/report.json")).unwrap_or_default());
}

/// One step, run by `git bisect run` at each commit.
pub fn step(ws: &Workspace, opts: &RunOpts) -> ExitCode {
    const SKIP: u8 = 125;
    const ABORT: u8 = 128;
    let head = ws
        .shell()
        .and_then(|sh| Ok(cmd!(sh, "git rev-parse HEAD").quiet().read()?))
        .unwrap_or_else(|_| "unknown".into());
    println!("== bisect step at {head} ==");
    if let Err(e) = build::build(ws) {
        println!("{e:#}\n=> this commit does not build: skipped");
        return ExitCode::from(SKIP);
    }
    let emu = match opts.resolve_emulator().and_then(|e| packages::ensure(e.needs()).map(|()| e)) {
        Ok(e) => e,
        Err(e) => {
            println!("error: {e:#}\n=> aborting the bisection");
            return ExitCode::from(ABORT);
        }
    };
    match boot::boot(ws, &opts.spec(emu), Style { stream: true, verbose: opts.verbose }) {
        Err(e) => {
            println!("error: {e:#}\n=> this commit cannot be booted: skipped");
            ExitCode::from(SKIP)
        }
        Ok(r) => {
            if let Some(dir) = std::env::var_os(STEP_DIR_VAR).map(PathBuf::from) {
                let _ = std::fs::copy(&r.report_path, dir.join(format!("{head}.json")));
            }
            let good = r.verdict.passed;
            println!("=> {}", if good { "good" } else { "bad" });
            ExitCode::from(u8::from(!good))
        }
    }
}
