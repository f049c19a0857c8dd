//! `cargo xtask bisect GOOD BAD [run options]`: `git bisect run` with one
//! boot per step.
//!
//! Each step checks out another tree, so the runner copies its own binary
//! into the bisection's record directory (`<target>/quadrant/bisect/<id>/`,
//! kept) and has git run that copy (`bisect-step`). A step exits 125
//! (git's "skip") when the commit does not build, 0/1 for the boot's
//! verdict, and 128 (abort) when the runner itself cannot work. Each step
//! leaves its report there, named by commit, so the end of the bisection
//! can show what failed at the first bad commit; `summary.json` there says
//! it all for programs (the bisect test reads it).

use crate::boot::{self, Style};
use crate::workspace::Workspace;
use crate::{build, packages, RunOpts};
use anyhow::{bail, Context, Result};
use serde::Serialize;
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
    let (_, tmp) = ws.new_run_dir_in("bisect", &format!("{}-{}", short(&good_sha), short(&bad_sha)))?;
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
        let mut summary = Summary::from_log(&log, &good_sha, &bad_sha);
        let subject = |sha: &str| cmd!(sh, "git log -1 --format=%h%x20%s {sha}").quiet().read().unwrap_or_default();
        for step in &mut summary.steps {
            step.subject = subject(&step.commit);
        }
        if let Some(first_bad) = summary.first_bad.clone() {
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
            summary.subject = subject(&first_bad);
            summary.read_record(&record);
            println!("\n== first bad commit: {first_bad} ==\n{}", summary.subject);
            print!("{}", summary.failures_text(&record));
        } else {
            println!("\nthe bisection found no single first bad commit (`git bisect run` {ran}; see above)");
        }
        std::fs::write(tmp.join("summary.json"), serde_json::to_string_pretty(&summary)? + "\n")?;
        let skipped: Vec<_> = summary.steps.iter().filter(|s| s.verdict == "skip").collect();
        if !skipped.is_empty() {
            println!("skipped (did not build or could not boot):");
            for s in skipped {
                println!("  {}", s.subject);
            }
        }
        Ok(summary.first_bad.is_some())
    })();
    println!("bisect log: {}", tmp.join("bisect.log").display());
    println!("summary:    {}", tmp.join("summary.json").display());
    cmd!(sh, "git bisect reset").run()?;
    outcome
}

/// What a bisection found (`summary.json` in its record directory).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    /// The commits bisected: GOOD and BAD, full hashes.
    pub good: String,
    #[allow(missing_docs)]
    pub bad: String,
    /// The first bad commit (`null`: none found).
    pub first_bad: Option<String>,
    /// Its abbreviated hash and subject.
    pub subject: String,
    /// The checks that failed there, with their detail and report.
    pub failed_checks: Vec<crate::verdict::Check>,
    /// Why its boot failed.
    pub reasons: Vec<String>,
    /// Each step git took, in order.
    pub steps: Vec<Step>,
}

/// One step of the bisection.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Step {
    /// The commit.
    pub commit: String,
    /// Its abbreviated hash and subject.
    pub subject: String,
    /// `good`, `bad` or `skip` (did not build, or could not be booted).
    pub verdict: &'static str,
}

impl Summary {
    /// The steps and the first bad commit, from `git bisect log` (GOOD and
    /// BAD, marked at the start, are not steps: git never tests them).
    fn from_log(log: &str, good: &str, bad: &str) -> Self {
        let mut s = Summary { good: good.into(), bad: bad.into(), ..Default::default() };
        for l in log.lines() {
            let mut w = l.split_whitespace();
            let (Some("git"), Some("bisect"), Some(v), Some(commit)) = (w.next(), w.next(), w.next(), w.next()) else {
                continue;
            };
            let verdict = match v {
                "good" => "good",
                "bad" => "bad",
                "skip" => "skip",
                _ => continue,
            };
            if commit != good && commit != bad {
                s.steps.push(Step { commit: commit.into(), subject: String::new(), verdict });
            }
        }
        s.first_bad =
            log.lines().find_map(|l| l.strip_prefix("# first bad commit: [")).and_then(|l| l.split(']').next()).map(str::to_string);
        s
    }

    /// Takes the failed checks and reasons from the first bad commit's
    /// step record.
    fn read_record(&mut self, record: &Path) {
        let Ok(text) = std::fs::read_to_string(record) else { return };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else { return };
        for c in v["checks"].as_array().cloned().unwrap_or_default() {
            if c["outcome"] == "fail" {
                self.failed_checks.push(crate::verdict::Check {
                    name: c["name"].as_str().unwrap_or("?").into(),
                    outcome: "fail",
                    passed: false,
                    detail: c["detail"].as_str().unwrap_or("").into(),
                    report: c["report"].as_array().map(|r| r.iter().filter_map(|l| l.as_str().map(String::from)).collect()).unwrap_or_default(),
                });
            }
        }
        self.reasons = v["failure_reasons"].as_array().map(|r| r.iter().filter_map(|l| l.as_str().map(String::from)).collect()).unwrap_or_default();
    }

    /// The failed checks (with their translation reports) and the reasons,
    /// as the end of a bisection shows them.
    fn failures_text(&self, record: &Path) -> String {
        if !record.is_file() {
            return format!("(no report of that commit: {})\n", record.display());
        }
        let mut s = String::new();
        if self.failed_checks.is_empty() {
            s += "no check failed there; the run failed because:\n";
        } else {
            s += "failed checks there:\n";
            for c in &self.failed_checks {
                s += &crate::report::check_line(c);
                s.push('\n');
            }
            s += "and the run failed because:\n";
        }
        for r in &self.reasons {
            s += &format!("  - {r}\n");
        }
        s += &format!("report: {}\n", record.display());
        s
    }
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_from_a_bisect_log() {
        let log = "# bad: [a89e] c8\n# good: [4e0b] c0\ngit bisect start 'a89e' '4e0b'\n# skip: [9526] c4\n\
                   git bisect skip 9526\n# good: [8aa6] c2\ngit bisect good 8aa6\n# good: [d683] c5\ngit bisect good d683\n\
                   # bad: [8083] c6\ngit bisect bad 8083\n# first bad commit: [8083] c6\n";
        let s = Summary::from_log(log, "4e0b", "a89e");
        assert_eq!(s.first_bad.as_deref(), Some("8083"));
        let steps: Vec<_> = s.steps.iter().map(|x| (x.commit.as_str(), x.verdict)).collect();
        assert_eq!(steps, [("9526", "skip"), ("8aa6", "good"), ("d683", "good"), ("8083", "bad")]);
        // An older git logs the marks as commands too; they are no steps.
        let s = Summary::from_log("git bisect start\ngit bisect bad a89e\ngit bisect good 4e0b\ngit bisect bad 8083\n", "4e0b", "a89e");
        assert_eq!((s.steps.len(), s.first_bad), (1, None));
    }
}
