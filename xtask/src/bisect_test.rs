//! The bisect test (`cargo xtask bisect-test`, and a step of `cargo xtask
//! test`): `cargo xtask bisect` on a throw-away git repository whose
//! history holds a real MMU regression, and the checks that it names it.
//!
//! The repository (`<target>/quadrant/bisect-test/repo`, made afresh each
//! time) starts from this work tree's files (what git tracks or would
//! track), then nine commits:
//!
//! ```text
//! c0 good            the work tree as it is
//! c1..c3 good        a README line each
//! c4 does not build  a compile_error! in the hypervisor (bisect must skip it)
//! c5 good            builds again
//! c6 the regression  hypervisor/Cargo.toml turns inject-key-no-access on by
//!                    default: the shadow cache key loses the inherited U/W/X
//! c7, c8             a README line each, both bad
//! ```
//!
//! `bisect c0 c8` boots each step on Bochs Penryn with the narrow guest
//! subset `only=long/large-alias-perms ram_test_mib=0` (the check the
//! regression breaks). git's first step there is c4 (the midpoint of
//! eight), so the skip is always taken. All steps build into one cargo
//! target directory (`<target>/quadrant/bisect-test/target`, kept between
//! runs), so each builds incrementally. The test passes when the bisection
//! names c6, skipped c4, says `long/large-alias-perms` fails there with a
//! translation-failure report that shows the shadow entries, and left the
//! repository with no bisection in progress.

use crate::workspace::Workspace;
use anyhow::{bail, ensure, Context, Result};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use xshell::{cmd, Shell};

/// The check `inject-key-no-access` breaks, and the subset the steps boot.
pub const CHECK: &str = "long/large-alias-perms";
/// The guest words of every step.
pub const GUEST_ARGS: &str = "only=long/large-alias-perms ram_test_mib=0";
/// The injected regression (a cargo feature of the hypervisor).
pub const FEATURE: &str = "inject-key-no-access";
/// Default timeout of each step's boot, in seconds (a step boots in about
/// 15 s; generous, for a loaded machine).
pub const TIMEOUT: u64 = 600;

/// What the test found.
#[derive(Clone, Debug)]
pub struct Found {
    /// One line: what was bisected and what it named.
    pub detail: String,
    /// The bisection's `summary.json`.
    pub summary: PathBuf,
}

/// The commits of the throw-away history that the test checks against.
struct History {
    good: String,
    no_build: String,
    regression: String,
    bad: String,
}

/// Runs the test and prints its verdict line; returns (passed, that line).
/// `stream`: the bisection's output as it comes; else as one block at the
/// end (when other boots run alongside).
pub fn report(ws: &Workspace, timeout: u64, stream: bool) -> (bool, String) {
    let mut block = String::new();
    let r = run(ws, timeout, &mut |l: &str| {
        if stream {
            println!("  bisect | {l}");
        } else {
            block += &format!("  bisect | {l}\n");
        }
    });
    if !stream {
        print!("== bisect test ==\n{block}");
    }
    match r {
        Ok(f) => {
            let line = format!("{} (summary: {})", f.detail, f.summary.display());
            println!("PASS: bisect test: {line}");
            (true, line)
        }
        Err(e) => {
            let line = format!("{e:#}");
            println!("FAIL: bisect test: {line}");
            (false, line)
        }
    }
}

/// Runs the test; `Err` says what went wrong. Each line the bisection
/// prints goes to `say`.
pub fn run(ws: &Workspace, timeout: u64, say: &mut dyn FnMut(&str)) -> Result<Found> {
    let dir = ws.quadrant_dir().join("bisect-test");
    let repo = dir.join("repo");
    let target = dir.join("target");
    if repo.exists() {
        std::fs::remove_dir_all(&repo).with_context(|| format!("removing the old {}", repo.display()))?;
    }
    std::fs::create_dir_all(&repo)?;
    copy_work_tree(&ws.root, &repo)?;
    let h = make_history(&repo)?;
    say(&format!(
        "bisect test: {} (c0 good) .. {} (c8), c4 {} does not build, c6 {} turns {FEATURE} on",
        short(&h.good),
        short(&h.bad),
        short(&h.no_build),
        short(&h.regression)
    ));

    let exe = std::env::current_exe().context("locating the running xtask binary")?;
    // One pipe for stdout and stderr (cargo and git write there), in order.
    let (reader, writer) = std::io::pipe()?;
    let mut cmd = Command::new(&exe);
    cmd.args(["bisect", &h.good, &h.bad, "--emulator", "bochs", "--cpu-model", "core2_penryn_t9600"])
        .arg(format!("--timeout={timeout}"))
        .arg(format!("--guest-args={GUEST_ARGS}"))
        .current_dir(&repo)
        .env("CARGO_MANIFEST_DIR", repo.join("xtask"))
        .env("CARGO_TARGET_DIR", &target)
        .stdin(Stdio::null())
        .stdout(writer.try_clone()?)
        .stderr(writer);
    let mut child = cmd.spawn().context("starting `xtask bisect` in the throw-away repository")?;
    drop(cmd); // our copies of the pipe's write end: the reader sees EOF when the child ends
    let mut summary = None;
    for line in BufReader::new(reader).lines().map_while(Result::ok) {
        say(&line);
        if let Some(p) = line.strip_prefix("summary:") {
            summary = Some(PathBuf::from(p.trim()));
        }
    }
    let status = child.wait()?;
    let summary = summary.context("`xtask bisect` printed no `summary:` line")?;
    ensure!(status.success(), "`xtask bisect` exited with {status} (expected 0: a first bad commit found)");
    let text = std::fs::read_to_string(&summary).with_context(|| format!("reading {}", summary.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("parsing {}", summary.display()))?;
    let detail = judge(&v, &h)?;
    let sh = Shell::new()?;
    sh.change_dir(&repo);
    if cmd!(sh, "git bisect log").quiet().ignore_stderr().read().is_ok() {
        bail!("the bisection is still in progress in {} (no `git bisect reset`)", repo.display());
    }
    let head = cmd!(sh, "git rev-parse HEAD").quiet().read()?;
    ensure!(head == h.bad, "after the bisection HEAD is {head}, not c8 {} again", h.bad);
    Ok(Found { detail, summary })
}

/// The verdict on a bisection's summary: the detail line, or what is wrong.
fn judge(v: &serde_json::Value, h: &History) -> Result<String> {
    let first_bad = v["first_bad"].as_str().unwrap_or("");
    ensure!(first_bad == h.regression, "the bisection named {first_bad:?}, not the regression c6 {}", h.regression);
    let steps = v["steps"].as_array().cloned().unwrap_or_default();
    let verdict_of = |c: &str| steps.iter().find(|s| s["commit"] == c).and_then(|s| s["verdict"].as_str());
    ensure!(verdict_of(&h.no_build) == Some("skip"), "c4 {} (does not build) was not skipped: {:?}", h.no_build, verdict_of(&h.no_build));
    let failed = v["failed_checks"].as_array().cloned().unwrap_or_default();
    let check = failed.iter().find(|c| c["name"] == CHECK).with_context(|| format!("{CHECK} is not among the checks failing at c6: {failed:?}"))?;
    let report: Vec<&str> = check["report"].as_array().map(|r| r.iter().filter_map(|l| l.as_str()).collect()).unwrap_or_default();
    ensure!(
        report.iter().any(|l| l.contains("shadow: hardware CR3")) && report.iter().any(|l| l.contains("guest: 4-level paging")),
        "{CHECK} failed at c6 without a translation-failure report with both walks: {report:?}"
    );
    let names: Vec<&str> = failed.iter().filter_map(|c| c["name"].as_str()).collect();
    Ok(format!(
        "named c6 {} in {} steps (c4 {} skipped); failing there: {}",
        short(&h.regression),
        steps.len(),
        short(&h.no_build),
        names.join(", ")
    ))
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

/// Copies the files git tracks or would track (not ignored) from `root`.
fn copy_work_tree(root: &Path, to: &Path) -> Result<()> {
    let sh = Shell::new()?;
    sh.change_dir(root);
    let list = cmd!(sh, "git ls-files -z --cached --others --exclude-standard").quiet().read()?;
    let mut n = 0;
    for f in list.split('\0').filter(|f| !f.is_empty()) {
        let src = root.join(f);
        if !src.is_file() {
            continue; // deleted in the work tree
        }
        let dst = to.join(f);
        if let Some(d) = dst.parent() {
            std::fs::create_dir_all(d)?;
        }
        std::fs::copy(&src, &dst).with_context(|| format!("copying {}", src.display()))?;
        n += 1;
    }
    ensure!(n > 0, "no files to copy from {}", root.display());
    Ok(())
}

/// Commits c0..c8 (see the module docs); returns the ones the test names.
fn make_history(repo: &Path) -> Result<History> {
    let sh = Shell::new()?;
    sh.change_dir(repo);
    cmd!(sh, "git init -q").run()?;
    for (k, v) in [("user.name", "Quadrant bisect test"), ("user.email", "bisect-test@quadrant.invalid"), ("commit.gpgsign", "false")] {
        cmd!(sh, "git config {k} {v}").run()?;
    }
    let commit = |msg: &str| -> Result<String> {
        cmd!(sh, "git add -A").run()?;
        cmd!(sh, "git commit -q --no-verify -m {msg}").run()?;
        Ok(cmd!(sh, "git rev-parse HEAD").quiet().read()?)
    };
    let append = |file: &str, text: &str| -> Result<()> {
        let p = repo.join(file);
        let mut s = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        s += text;
        Ok(std::fs::write(&p, s)?)
    };
    let good = commit("c0: good (the work tree as it is)")?;
    for i in 1..=3 {
        append("README.md", &format!("\n<!-- bisect test note {i} -->\n"))?;
        commit(&format!("c{i}: good (a README line)"))?;
    }
    let lib = repo.join("hypervisor/src/lib.rs");
    let lib_text = std::fs::read_to_string(&lib)?;
    append("hypervisor/src/lib.rs", "\ncompile_error!(\"bisect test: this commit does not build\");\n")?;
    let no_build = commit("c4: does not build")?;
    std::fs::write(&lib, &lib_text)?;
    commit("c5: good (builds again)")?;
    let manifest = repo.join("hypervisor/Cargo.toml");
    let m = std::fs::read_to_string(&manifest)?;
    ensure!(m.contains("\n[features]\n") && m.contains(&format!("\n{FEATURE} = []")), "hypervisor/Cargo.toml has no {FEATURE} feature");
    std::fs::write(&manifest, m.replacen("\n[features]\n", &format!("\n[features]\ndefault = [\"{FEATURE}\"]\n"), 1))?;
    let regression = commit("c6: the regression (the shadow cache key without the inherited access)")?;
    for i in 7..=8 {
        append("README.md", &format!("\n<!-- bisect test note {i} -->\n"))?;
        commit(&format!("c{i}: bad (a README line after the regression)"))?;
    }
    let bad = cmd!(sh, "git rev-parse HEAD").quiet().read()?;
    Ok(History { good, no_build, regression, bad })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history() -> History {
        History { good: "g0".into(), no_build: "c4".into(), regression: "c6".into(), bad: "c8".into() }
    }

    fn summary(first_bad: &str, skip: &str, report: &[&str]) -> serde_json::Value {
        serde_json::json!({
            "first_bad": first_bad,
            "steps": [{"commit": skip, "verdict": "skip"}, {"commit": "c2", "verdict": "good"}, {"commit": "c6", "verdict": "bad"}],
            "failed_checks": [{"name": CHECK, "report": report}],
        })
    }

    #[test]
    fn the_summary_must_name_the_regression_the_skip_and_the_report() {
        let both = ["  guest: 4-level paging, CR3 0x1", "  shadow: hardware CR3 0x2"];
        let d = judge(&summary("c6", "c4", &both), &history()).unwrap();
        assert_eq!(d, format!("named c6 c6 in 3 steps (c4 c4 skipped); failing there: {CHECK}"));
        assert!(judge(&summary("c7", "c4", &both), &history()).unwrap_err().to_string().contains("not the regression"));
        assert!(judge(&summary("c6", "c5", &both), &history()).unwrap_err().to_string().contains("was not skipped"));
        assert!(judge(&summary("c6", "c4", &both[..1]), &history()).unwrap_err().to_string().contains("without a translation-failure report"));
    }

    #[test]
    fn the_feature_exists_and_the_manifest_edit_applies() {
        let m = include_str!("../../hypervisor/Cargo.toml");
        assert!(m.contains("\n[features]\n") && m.contains(&format!("\n{FEATURE} = []")));
        assert!(include_str!("../../hypervisor/src/mmu/inject.rs").contains(&format!("(\"{}\"", &FEATURE["inject-".len()..])));
    }
}
