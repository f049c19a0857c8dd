//! One boot: run directory, boot media, emulator under a timeout, verdict,
//! JSON report and the console block.

use crate::emulator::{self, Emulator, Launch};
use crate::media::{self, Media, Module};
use crate::report::{self, Report};
use crate::verdict::coverage::{MissingRow, RoleRow};
use crate::verdict::{self, Console, Event, Exit, ExpectedFailure, Expectation, Verdict};
use crate::workspace::Workspace;
use anyhow::{bail, Context, Result};
use shared::line::ErrorKind;
use std::fmt::Write as _;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// Which paging the hypervisor uses for the guest (`mmu=` argument).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Mmu {
    /// Shadow page tables (the page cache under test).
    #[default]
    Shadow,
    /// EPT (the differential reference, on models that have it).
    Ept,
}

impl Mmu {
    /// The argument value.
    pub fn as_str(self) -> &'static str {
        match self {
            Mmu::Shadow => "shadow",
            Mmu::Ept => "ept",
        }
    }
}

/// The guest image of a boot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GuestImage {
    /// `<target>/release/quadrant-guest`.
    Built,
    /// Any Multiboot kernel the user names.
    Path(PathBuf),
    /// A text file written into the run directory (negative test).
    NotMultiboot,
}

/// Everything that defines one boot.
#[derive(Clone, Debug)]
pub struct BootSpec {
    /// Short name for tables and the run id.
    pub name: String,
    /// Where it boots.
    pub emulator: Emulator,
    /// CPU model (default per emulator).
    pub cpu_model: Option<String>,
    /// Number of CPUs.
    pub cpus: u32,
    /// Under the hypervisor (else the guest boots bare).
    pub hypervisor: bool,
    /// The hypervisor's MMU mode.
    pub mmu: Mmu,
    /// The guest.
    pub guest: GuestImage,
    /// Extra hypervisor arguments.
    pub hv_args: String,
    /// Extra guest arguments.
    pub guest_args: String,
    /// Timeout in seconds (default per emulator).
    pub timeout: Option<u64>,
    /// Negative test: the error the run must end with.
    pub expect_error: Option<ErrorKind>,
    /// Negative test: text the error line must contain.
    pub expect_text: Option<&'static str>,
    /// The hypervisor binary, when not the built release one (`--inject`).
    pub hv_kernel: Option<PathBuf>,
    /// A deliberate-failure test: exactly these checks must fail, with
    /// these texts in their translation-failure reports (empty: a normal run).
    pub expect_failures: &'static [ExpectedFailure],
    /// Boot this prebuilt image (`cargo xtask image`, Bochs only) through
    /// its default menu entry instead of an ISO made for the run; the other
    /// fields must describe that entry (they set the expectations).
    pub image: Option<PathBuf>,
}

impl BootSpec {
    /// The CPU model in use.
    pub fn cpu_model(&self) -> String {
        self.cpu_model.clone().unwrap_or_else(|| self.emulator.default_cpu_model().to_string())
    }

    /// The timeout in use, in seconds.
    pub fn timeout(&self) -> u64 {
        self.timeout.unwrap_or_else(|| self.emulator.default_timeout())
    }

    /// The header line of the boot's block.
    pub fn header(&self) -> String {
        let mut what = if self.hypervisor {
            format!("hypervisor (mmu={})", self.mmu.as_str())
        } else {
            "bare guest".to_string()
        };
        match &self.guest {
            GuestImage::Built => {}
            GuestImage::Path(p) => {
                let _ = write!(what, " with guest {}", p.display());
            }
            GuestImage::NotMultiboot => what += " with a non-Multiboot guest image",
        }
        if let Some(k) = self.expect_error {
            let _ = write!(what, ", expecting quadrant-error {}", k.as_str());
        }
        let s = if self.cpus == 1 { "" } else { "s" };
        format!(
            "== {} {} {} cpu{s}, {what}: booting (timeout {} s) ==",
            self.emulator,
            self.cpu_model(),
            self.cpus,
            self.timeout()
        )
    }
}

/// How a boot talks to the console.
#[derive(Clone, Copy, Debug)]
pub struct Style {
    /// Print the header first and check lines as they come (one boot at a
    /// time); otherwise print the whole block at the end.
    pub stream: bool,
    /// Also print every console line, grub.cfg, bochsrc and command lines.
    pub verbose: bool,
}

/// The outcome of one boot.
#[derive(Clone, Debug)]
pub struct BootResult {
    /// The JSON report's content.
    pub report: Report,
    /// The verdict.
    pub verdict: Verdict,
    /// Where the report is.
    pub report_path: PathBuf,
}

/// Serialises whole blocks of output from parallel boots.
static OUT: Mutex<()> = Mutex::new(());

/// Prints `s` (which ends in a newline) in one piece.
pub fn say(s: &str) {
    let _g = OUT.lock().unwrap_or_else(|e| e.into_inner());
    print!("{s}");
    use std::io::Write;
    let _ = std::io::stdout().flush();
}

/// What a non-Multiboot guest file contains (negative test).
const NOT_MULTIBOOT: &str = "This is a text file, not a Multiboot kernel.\n\
    Quadrant's hypervisor must refuse it with `quadrant-error bad-guest-image`.\n";

/// Boots once and prints the block. Errors are problems of the runner
/// (missing files, emulator not startable), not verdicts.
pub fn boot(ws: &Workspace, spec: &BootSpec, style: Style) -> Result<BootResult> {
    let (run_id, dir) = ws.new_run_dir(&spec.name)?;
    boot_in(ws, spec, style, run_id, &dir).with_context(|| format!("{} (run directory {})", spec.name, dir.display()))
}

fn boot_in(ws: &Workspace, spec: &BootSpec, style: Style, run_id: String, dir: &Path) -> Result<BootResult> {
    let dir = dir.to_path_buf();
    let mut pre = String::new(); // text printed before the check lines
    let _ = writeln!(pre, "{}", spec.header());

    let guest_path = match &spec.guest {
        GuestImage::Built => ws.release_bin("quadrant-guest"),
        GuestImage::Path(p) => {
            let p = std::fs::canonicalize(p).with_context(|| format!("guest image {}", p.display()))?;
            if p.to_string_lossy().contains([' ', ',']) {
                // QEMU's module string is "path args": keep the path one plain word.
                let copy = dir.join("guest.elf");
                std::fs::copy(&p, &copy).with_context(|| format!("copying {}", p.display()))?;
                copy
            } else {
                p
            }
        }
        GuestImage::NotMultiboot => {
            let p = dir.join("not-multiboot.txt");
            std::fs::write(&p, NOT_MULTIBOOT)?;
            p
        }
    };
    media::check_args("--hv-args", &spec.hv_args)?;
    media::check_args("--guest-args", &spec.guest_args)?;
    let expect_hv = if spec.hypervisor { "expect_hv=1" } else { "expect_hv=0" };
    // Our guest checks the processor table against the emulator's count.
    let cpus = match spec.guest {
        GuestImage::Built => format!("cpus={}", spec.cpus),
        _ => String::new(),
    };
    let guest_args = media::join_args(&[expect_hv, &cpus, &spec.guest_args]);
    let m = if spec.hypervisor {
        let name = guest_path.file_name().map(|n| crate::workspace::sanitize(&n.to_string_lossy())).unwrap_or_default();
        Media {
            kernel: spec.hv_kernel.clone().unwrap_or_else(|| ws.release_bin("quadrant-hv")),
            kernel_args: media::join_args(&[&format!("mmu={}", spec.mmu.as_str()), &spec.hv_args]),
            module: Some(Module { path: guest_path.clone(), name, args: guest_args.clone() }),
        }
    } else {
        Media { kernel: guest_path.clone(), kernel_args: guest_args.clone(), module: None }
    };
    for f in std::iter::once(&m.kernel).chain(m.module.as_ref().map(|g| &g.path)) {
        if !f.is_file() {
            bail!("{} does not exist (run `cargo xtask build`)", f.display());
        }
    }

    let model = spec.cpu_model();
    let argv: Vec<String> = match spec.emulator {
        Emulator::Bochs => {
            let iso = match &spec.image {
                Some(img) => {
                    let img = std::fs::canonicalize(img).with_context(|| format!("the image {}", img.display()))?;
                    let _ = writeln!(pre, "  booting the image {} (its default menu entry)", img.display());
                    img.to_string_lossy().into_owned()
                }
                None => {
                    media::make_iso(&dir, &m)?;
                    if style.verbose {
                        let _ = writeln!(pre, "-- ISO /boot --\n{}", iso_listing(&dir).trim_end());
                    }
                    "boot.iso".to_string()
                }
            };
            let rc = emulator::bochsrc(&model, spec.cpus, &iso);
            std::fs::write(dir.join("bochsrc"), &rc)?;
            std::fs::write(dir.join("bochs.rc"), emulator::BOCHS_RC)?;
            if style.verbose {
                let settings: Vec<&str> = rc.lines().filter(|l| !l.starts_with('#')).collect();
                let _ = writeln!(pre, "-- bochsrc (comments left out) --\n{}", settings.join("\n"));
            }
            let mut a: Vec<String> = emulator::netns_wrapper().iter().map(|s| s.to_string()).collect();
            a.extend(["bochs-bin", "-q", "-f", "bochsrc", "-rc", "bochs.rc"].map(String::from));
            a
        }
        Emulator::QemuKvm | Emulator::QemuTcg => {
            if spec.image.is_some() {
                bail!("an image boots in Bochs here (under UEFI: `cargo xtask test` boots it in QEMU with OVMF)");
            }
            let mut a = vec!["qemu-system-x86_64".to_string()];
            a.extend(emulator::qemu_args(spec.emulator, &model, spec.cpus));
            a.extend(media::qemu_boot_args(&m));
            a
        }
    };
    let launch = Launch { argv, cwd: dir.clone(), output: dir.join(spec.emulator.output_name()) };
    std::fs::write(dir.join("command.sh"), format!("#!/bin/sh\n{}\n", launch.display()))?;
    if style.verbose {
        let _ = writeln!(pre, "-- command --\n{}", launch.display());
    }
    if style.stream {
        say(&pre);
    } else {
        say(&format!("booting {} ({} {}, timeout {} s)\n", spec.name, spec.emulator, model, spec.timeout()));
    }

    // Run, following the serial log for live output and progress.
    let serial = dir.join("serial.log");
    let mut live = Live { pos: 0, partial: String::new(), console: Console::default() };
    let mut next_progress = 30;
    let (exit, took) = emulator::run(&launch, Duration::from_secs(spec.timeout()), |el| {
        if style.stream {
            live.poll(&serial, style.verbose);
        }
        if el.as_secs() >= next_progress {
            let prefix = if style.stream { String::new() } else { format!("{}: ", spec.name) };
            say(&format!("  ... {prefix}still running, {} s\n", el.as_secs()));
            next_progress += 30;
        }
    })?;
    if style.stream {
        live.poll(&serial, style.verbose);
        live.flush(style.verbose);
    }

    let text = String::from_utf8_lossy(&std::fs::read(&serial).unwrap_or_default()).into_owned();
    let mut console = Console::from_text(&text);
    // A run that ended inside a check (hang, crash, error): that check failed.
    let how = match console.errors.last() {
        Some(e) => format!("quadrant-error {}", e.kind),
        None => spec.emulator.convention().describe(exit),
    };
    if let Some(c) = console.fail_unfinished(&how) {
        if style.stream {
            say(&(report::check_line(&c) + "\n"));
        }
    }
    let role_coverage = verdict::coverage::applies(
        spec.hypervisor,
        spec.mmu == Mmu::Shadow,
        spec.guest == GuestImage::Built,
        spec.expect_error.is_some(),
        &spec.guest_args,
    );
    let exp = Expectation {
        hypervisor: spec.hypervisor,
        expect_error: spec.expect_error,
        expect_text: spec.expect_text,
        role_coverage,
        expect_failures: spec.expect_failures,
        smp_modes: role_coverage && spec.cpus > 1,
    };
    let verdict = verdict::judge(&console, exit, spec.emulator.convention(), exp);

    let report = Report {
        run_id: run_id.clone(),
        name: spec.name.clone(),
        emulator: spec.emulator.to_string(),
        cpu_model: model,
        cpus: spec.cpus,
        hypervisor: spec.hypervisor,
        mmu: spec.hypervisor.then(|| spec.mmu.as_str().to_string()),
        hv_mmu_reported: console.banner.as_ref().map(|b| b.1.clone()),
        guest: guest_path.to_string_lossy().into_owned(),
        kernel_args: m.kernel_args.clone(),
        guest_args: spec.hypervisor.then(|| guest_args.clone()),
        expect_error: spec.expect_error.map(|k| k.as_str().to_string()),
        expect_failures: spec.expect_failures.iter().map(|x| x.check.to_string()).collect(),
        checks: console.checks.clone(),
        counts: verdict.counts,
        counts_by_mode: console.counts_by_mode(),
        counts_by_cpu: console.counts_by_cpu(),
        guest_summary: console.summary,
        result: console.result.clone().map(|(status, reason)| report::ResultLine { status, reason }),
        passed: verdict.passed,
        failure_reasons: verdict.reasons.clone(),
        errors: console.errors.clone(),
        role_coverage: (console.role_coverage_end.is_some() || !console.role_coverage.is_empty())
            .then(|| console.role_coverage.iter().map(RoleRow::of).collect()),
        mmu_stats: console.mmu_stats.clone(),
        bench: console.bench.clone(),
        coverage_checked: role_coverage,
        coverage_missing: verdict.coverage_missing.iter().map(|p| MissingRow::of(p)).collect(),
        exit_status: exit.code(),
        timed_out: matches!(exit, Exit::Timeout { .. }),
        timeout_s: spec.timeout(),
        duration_s: (took.as_secs_f64() * 10.0).round() / 10.0,
        run_dir: dir.to_string_lossy().into_owned(),
        serial_log: serial.to_string_lossy().into_owned(),
        emulator_log: dir.join(spec.emulator.log_name()).to_string_lossy().into_owned(),
        debugcon_log: dir
            .join(if spec.emulator == Emulator::Bochs { "bochs.out" } else { "debugcon.log" })
            .to_string_lossy()
            .into_owned(),
        command: launch.display(),
    };
    let report_path = ws.reports_dir().join(format!("{run_id}.json"));
    report.write(&report_path)?;
    std::fs::write(dir.join("report.json"), serde_json::to_string_pretty(&report)? + "\n")?;

    let mut block = String::new();
    if !style.stream {
        block += &pre;
        for c in &console.checks {
            block += &report::check_line(c);
            block += "\n";
        }
        for e in &console.errors {
            block += &report::error_line(e);
            block += "\n";
        }
    }
    block += &verdict::coverage::block_lines(&console, role_coverage, &verdict.coverage_missing, style.verbose);
    block += &report::block_end(&report, &verdict, &report_path);
    say(&block);

    if verdict.passed {
        // The ISO is the big file of a run; the rest stays for reference.
        let _ = std::fs::remove_file(dir.join("boot.iso"));
        let _ = std::fs::remove_dir_all(dir.join("iso"));
    }
    Ok(BootResult { report, verdict, report_path })
}

/// What is on the ISO (for --verbose): `xorriso -lsl /boot` and the
/// grub.cfg read back from the image itself.
fn iso_listing(dir: &Path) -> String {
    let iso = dir.join("boot.iso");
    let back = dir.join("grub.cfg.from-iso");
    let ls = std::process::Command::new("xorriso")
        .arg("-indev")
        .arg(&iso)
        .args(["-osirrox", "on", "-lsl", "/boot", "--", "-extract", "/boot/grub/grub.cfg"])
        .arg(&back)
        .stderr(std::process::Stdio::null())
        .output();
    let mut s = match ls {
        Ok(o) => String::from_utf8_lossy(&o.stdout).into_owned(),
        Err(e) => format!("(xorriso: {e})\n"),
    };
    let cfg = std::fs::read_to_string(&back).unwrap_or_else(|e| format!("({e})"));
    let _ = write!(s, "-- grub.cfg as read back from the ISO --\n{cfg}");
    s
}

/// Follows the serial log while the emulator runs.
struct Live {
    pos: u64,
    partial: String,
    console: Console,
}

impl Live {
    fn poll(&mut self, path: &Path, verbose: bool) {
        let Ok(mut f) = std::fs::File::open(path) else {
            return;
        };
        if f.seek(SeekFrom::Start(self.pos)).is_err() {
            return;
        }
        let mut buf = Vec::new();
        if f.read_to_end(&mut buf).is_err() || buf.is_empty() {
            return;
        }
        self.pos += buf.len() as u64;
        self.partial += &String::from_utf8_lossy(&buf);
        while let Some(i) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=i).collect();
            self.show(line.trim_end_matches(['\r', '\n']), verbose);
        }
    }

    fn flush(&mut self, verbose: bool) {
        let rest = std::mem::take(&mut self.partial);
        if !rest.trim().is_empty() {
            self.show(rest.trim_end_matches(['\r', '\n']), verbose);
        }
    }

    fn show(&mut self, line: &str, verbose: bool) {
        match self.console.feed(line) {
            Event::Check(c) => say(&(report::check_line(&c) + "\n")),
            Event::Error(e) => say(&(report::error_line(&e) + "\n")),
            Event::Protocol | Event::Text if verbose => say(&format!("    | {}\n", report::printable(line))),
            _ => {}
        }
    }
}

/// Boots every spec, `jobs` at a time, each block printed whole when it
/// ends (and `progress(done, total, spec, result)` called then); returns
/// the results in the order of `specs`.
pub fn boot_many(
    ws: &Workspace,
    specs: Vec<BootSpec>,
    jobs: usize,
    verbose: bool,
    progress: impl Fn(usize, usize, &BootSpec, &Result<BootResult>) + Sync,
) -> Vec<(BootSpec, Result<BootResult>)> {
    let total = specs.len();
    let queue = Mutex::new(specs.into_iter().enumerate().rev().collect::<Vec<_>>());
    let done: Mutex<Vec<(usize, BootSpec, Result<BootResult>)>> = Mutex::new(Vec::new());
    let style = Style { stream: false, verbose };
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1) {
            s.spawn(|| loop {
                let next = queue.lock().unwrap_or_else(|e| e.into_inner()).pop();
                let Some((i, spec)) = next else { break };
                let r = boot(ws, &spec, style);
                let mut d = done.lock().unwrap_or_else(|e| e.into_inner());
                progress(d.len() + 1, total, &spec, &r);
                d.push((i, spec, r));
            });
        }
    });
    let mut done = done.into_inner().unwrap_or_else(|e| e.into_inner());
    done.sort_by_key(|(i, _, _)| *i);
    done.into_iter().map(|(_, s, r)| (s, r)).collect()
}
