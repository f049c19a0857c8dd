//! Where things are: the workspace root, cargo's target directory, and the
//! per-run directories and reports the runner keeps under
//! `<target>/quadrant/`.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};
use xshell::{cmd, Shell};

/// The workspace the runner acts on.
#[derive(Clone, Debug)]
pub struct Workspace {
    /// The repository root (parent of `xtask/`).
    pub root: PathBuf,
    /// Cargo's target directory (honours `CARGO_TARGET_DIR` and config).
    pub target: PathBuf,
}

impl Workspace {
    /// Finds the root from `CARGO_MANIFEST_DIR` (set by `cargo run`, else the
    /// directory this binary was built from) and asks cargo for the target
    /// directory.
    pub fn locate() -> Result<Self> {
        let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
            .map(PathBuf::from)
            .filter(|p| p.join("Cargo.toml").is_file() && p.ends_with("xtask"))
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
        let root = manifest
            .parent()
            .context("xtask's manifest directory has no parent")?
            .to_path_buf();
        if !root.join("Cargo.toml").is_file() {
            bail!("{} is not the Quadrant workspace (no Cargo.toml)", root.display());
        }
        let target = target_dir(&root)?;
        Ok(Workspace { root, target })
    }

    /// A shell whose current directory is the workspace root.
    pub fn shell(&self) -> Result<Shell> {
        let sh = Shell::new()?;
        sh.change_dir(&self.root);
        Ok(sh)
    }

    /// `<target>/quadrant`.
    pub fn quadrant_dir(&self) -> PathBuf {
        self.target.join("quadrant")
    }

    /// `<target>/quadrant/reports`.
    pub fn reports_dir(&self) -> PathBuf {
        self.quadrant_dir().join("reports")
    }

    /// The release binary `name` (`quadrant-hv`, `quadrant-guest`).
    pub fn release_bin(&self, name: &str) -> PathBuf {
        self.target.join("release").join(name)
    }

    /// Creates a fresh run directory `<target>/quadrant/runs/<run-id>/` and
    /// returns `(run_id, dir)`. The id is a UTC time stamp and `label`; a
    /// suffix keeps parallel runs apart.
    pub fn new_run_dir(&self, label: &str) -> Result<(String, PathBuf)> {
        self.new_run_dir_in("runs", label)
    }

    /// [`Self::new_run_dir`] under `<target>/quadrant/<kind>/` (`bisect`: a
    /// bisection's records).
    pub fn new_run_dir_in(&self, kind: &str, label: &str) -> Result<(String, PathBuf)> {
        let runs = self.quadrant_dir().join(kind);
        std::fs::create_dir_all(&runs).with_context(|| format!("creating {}", runs.display()))?;
        let base = format!("{}-{}", utc_stamp(SystemTime::now()), sanitize(label));
        for n in 1..1000 {
            let id = if n == 1 { base.clone() } else { format!("{base}-{n}") };
            let dir = runs.join(&id);
            match std::fs::create_dir(&dir) {
                Ok(()) => return Ok((id, dir)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
            }
        }
        bail!("could not create a run directory under {}", runs.display())
    }
}

/// The target directory cargo uses for `root`.
fn target_dir(root: &Path) -> Result<PathBuf> {
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR").filter(|t| !t.is_empty()) {
        let t = PathBuf::from(t);
        return Ok(if t.is_absolute() { t } else { root.join(t) });
    }
    let sh = Shell::new()?;
    sh.change_dir(root);
    let cargo = cargo_program();
    let json = cmd!(sh, "{cargo} metadata --format-version 1 --no-deps --offline")
        .quiet()
        .read()
        .or_else(|_| cmd!(sh, "{cargo} metadata --format-version 1 --no-deps").quiet().read())
        .context("`cargo metadata` failed")?;
    let v: serde_json::Value = serde_json::from_str(&json).context("parsing `cargo metadata` output")?;
    let t = v["target_directory"].as_str().context("`cargo metadata` gave no target_directory")?;
    Ok(PathBuf::from(t))
}

/// The cargo to run: the one that started us (`CARGO`), else `cargo`.
pub fn cargo_program() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string())
}

/// Keeps `[A-Za-z0-9._]`, turns every other run of characters into one `-`.
pub fn sanitize(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '.' | '_') {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_end_matches('-').to_string()
}

/// `YYYYmmdd-HHMMSS` in UTC.
pub fn utc_stamp(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!("{y:04}{m:02}{d:02}-{:02}{:02}{:02}", rem / 3600, rem / 60 % 60, rem % 60)
}

/// Gregorian date of a day count since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn stamps() {
        assert_eq!(utc_stamp(UNIX_EPOCH), "19700101-000000");
        // 2026-11-25 00:17:14 UTC
        assert_eq!(utc_stamp(UNIX_EPOCH + Duration::from_secs(1_795_565_834)), "20261125-001714");
        assert_eq!(utc_stamp(UNIX_EPOCH + Duration::from_secs(951_782_400)), "20000229-000000");
    }

    #[test]
    fn sanitizes_labels() {
        assert_eq!(sanitize("bochs core2/penryn hv"), "bochs-core2-penryn-hv");
        assert_eq!(sanitize("hypervisor, bochs penryn (shadow)"), "hypervisor-bochs-penryn-shadow");
    }
}
