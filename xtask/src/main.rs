//! `cargo xtask`: builds Quadrant, boots it in Bochs or QEMU, judges the
//! console output, runs the whole test suite and bisects regressions.
//!
//! See README.md for the user's view; `cargo xtask help` lists the options.

mod bench;
mod bisect;
mod bisect_test;
mod boot;
mod build;
mod emulator;
mod formats;
mod image;
mod media;
mod mutants;
mod packages;
mod report;
mod rig;
mod stdio;
mod test_cmd;
mod verdict;
mod workspace;

use anyhow::{bail, Result};
use boot::{BootSpec, GuestImage, Mmu, Style};
use clap::{Args, Parser, Subcommand};
use emulator::Emulator;
use shared::line::ErrorKind;
use std::path::PathBuf;
use std::process::ExitCode;
use workspace::Workspace;

/// Quadrant's runner: build, boot, test, bisect.
#[derive(Parser, Debug)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Build the hypervisor and the guest (release) into <target>/release/.
    Build,
    /// Build, boot once, print the checks; exit 0 on pass, 1 on fail.
    Run(RunOpts),
    /// Run every test: host tests, bare reference boot, hypervisor boots in
    /// Bochs, the rig image (Bochs via BIOS, QEMU with OVMF via UEFI),
    /// negative tests; a table and `N passed, M failed` at the end.
    Test(test_cmd::TestOpts),
    /// Build the test-rig image: BIOS + UEFI bootable (write it to a USB
    /// stick), with a GRUB menu of workloads.
    Image(image::ImageOpts),
    /// Find the first commit whose boot fails (git bisect run).
    Bisect(BisectOpts),
    /// The kill matrix: build the hypervisor with each deliberate MMU bug
    /// (`inject-*` features), boot the suite against each, name the first
    /// failing check; exit 1 when a variant survives.
    Mutants(mutants::MutantsOpts),
    /// The bisect test: `bisect` on a throw-away repository whose history
    /// holds a commit that does not build and an injected MMU regression;
    /// passes when the regression and the failing check are named.
    BisectTest(BisectTestOpts),
    /// The benchmark (issue #8): guest workloads in Bochs under the cache,
    /// without it, under EPT and bare; host microbenchmarks of the MMU
    /// core; a table, the targets, summary.json and plots.
    Bench(bench::BenchOpts),
    /// One bisect step (used by `bisect`): build (exit 125 when it does not
    /// build), boot once (exit 0 pass, 1 fail).
    #[command(hide = true)]
    BisectStep(RunOpts),
}

/// Options of one boot (`run`, `bisect`).
#[derive(Args, Clone, Debug, Default)]
pub struct RunOpts {
    /// Emulator [default: qemu-kvm when nested VMX works here, else bochs].
    #[arg(long, value_enum)]
    pub emulator: Option<Emulator>,
    /// CPU model [default: bochs corei7_skylake_x, qemu-tcg max, qemu-kvm host,+vmx].
    #[arg(long, value_name = "MODEL")]
    pub cpu_model: Option<String>,
    /// Number of CPUs.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub cpus: u32,
    /// Boot the guest alone, without the hypervisor (the reference run).
    #[arg(long)]
    pub bare: bool,
    /// Timeout in seconds [default: 300 for bochs, 60 for qemu].
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<u64>,
    /// Paging mode of the hypervisor (its `mmu=` argument).
    #[arg(long, value_enum, default_value_t = Mmu::Shadow)]
    pub mmu: Mmu,
    /// Run the MMU audit after every exit that reaches the shadow page
    /// cache (the hypervisor's `audit=1`; slow: minutes in Bochs).
    #[arg(long)]
    pub mmu_audit: bool,
    /// Boot this Multiboot kernel instead of the built guest.
    #[arg(long, value_name = "PATH")]
    pub guest: Option<PathBuf>,
    /// Extra hypervisor arguments (after `mmu=...`).
    #[arg(long, value_name = "ARGS", default_value = "", allow_hyphen_values = true)]
    pub hv_args: String,
    /// Extra guest arguments (after `expect_hv=0|1`).
    #[arg(long, value_name = "ARGS", default_value = "", allow_hyphen_values = true)]
    pub guest_args: String,
    /// Run the whole access sweep (guest `sweep=full`; the default timeout
    /// becomes 1800 s).
    #[arg(long)]
    pub full: bool,
    /// Negative test: pass only if the run ends with this `quadrant-error`
    /// kind and a failing exit status (no-vmx, vmx-locked, vm-entry-failure,
    /// triple-fault, unhandled-exit, bad-guest-image, unsupported,
    /// hypervisor-fault, timeout).
    #[arg(long, value_name = "KIND", value_parser = parse_error_kind)]
    pub expect_error: Option<ErrorKind>,
    /// Boot a hypervisor built with the deliberate MMU bug NAME (its cargo
    /// feature `inject-NAME`, listed in `hypervisor/src/mmu/inject.rs`), to
    /// see which checks catch it. Built into `<target>/inject/`.
    #[arg(long, value_name = "NAME")]
    pub inject: Option<String>,
    /// Boot this image (`cargo xtask image`) in Bochs through its default
    /// menu entry (the hypervisor with the guest, mmu=shadow) instead of an
    /// ISO made for the run.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["bare", "guest", "inject", "mmu_audit", "hv_args", "guest_args", "full"])]
    pub image: Option<PathBuf>,
    /// Print every console line, grub.cfg, the ISO listing, bochsrc and the
    /// emulator command line.
    #[arg(long, short)]
    pub verbose: bool,
}

/// `bisect` arguments.
#[derive(Args, Debug)]
struct BisectOpts {
    /// A commit whose boot passes.
    good: String,
    /// A commit whose boot fails.
    bad: String,
    #[command(flatten)]
    run: RunOpts,
}

/// `bisect-test` arguments.
#[derive(Args, Debug)]
struct BisectTestOpts {
    /// Timeout of every boot in seconds.
    #[arg(long, value_name = "SECS", default_value_t = bisect_test::TIMEOUT)]
    timeout: u64,
}

fn parse_error_kind(s: &str) -> std::result::Result<ErrorKind, String> {
    ErrorKind::from_word(s).ok_or_else(|| {
        let all: Vec<_> = ErrorKind::ALL.iter().map(|k| k.as_str()).collect();
        format!("unknown error kind {s:?}; one of: {}", all.join(", "))
    })
}

impl RunOpts {
    /// The same options as command-line words (for `bisect-step`).
    pub fn to_args(&self) -> Vec<String> {
        let mut a = Vec::new();
        if let Some(e) = self.emulator {
            a.extend(["--emulator".to_string(), e.to_string()]);
        }
        if let Some(m) = &self.cpu_model {
            a.extend(["--cpu-model".to_string(), m.clone()]);
        }
        a.extend(["--cpus".to_string(), self.cpus.to_string()]);
        if self.bare {
            a.push("--bare".into());
        }
        if let Some(t) = self.timeout {
            a.extend(["--timeout".to_string(), t.to_string()]);
        }
        a.extend(["--mmu".to_string(), self.mmu.as_str().to_string()]);
        if let Some(g) = &self.guest {
            a.extend(["--guest".to_string(), g.to_string_lossy().into_owned()]);
        }
        if self.mmu_audit {
            a.push("--mmu-audit".to_string());
        }
        if !self.hv_args.is_empty() {
            a.push(format!("--hv-args={}", self.hv_args));
        }
        if !self.guest_args.is_empty() {
            a.push(format!("--guest-args={}", self.guest_args));
        }
        if let Some(k) = self.expect_error {
            a.extend(["--expect-error".to_string(), k.as_str().to_string()]);
        }
        if let Some(b) = &self.inject {
            a.extend(["--inject".to_string(), b.clone()]);
        }
        if self.full {
            a.push("--full".into());
        }
        if let Some(i) = &self.image {
            a.extend(["--image".to_string(), i.to_string_lossy().into_owned()]);
        }
        if self.verbose {
            a.push("--verbose".into());
        }
        a
    }

    /// The emulator to use, checked for availability.
    pub fn resolve_emulator(&self) -> Result<Emulator> {
        let emu = self.emulator.unwrap_or_else(Emulator::best_available);
        if emu == Emulator::QemuKvm {
            if let Err(why) = emulator::nested_kvm_status() {
                bail!("qemu-kvm is not available here: {why}");
            }
        }
        Ok(emu)
    }

    /// The boot this describes.
    pub fn spec(&self, emu: Emulator) -> BootSpec {
        let hv = !self.bare;
        let model = self.cpu_model.clone().unwrap_or_else(|| emu.default_cpu_model().to_string());
        let name = format!("{emu}-{}-{}", model.split(',').next().unwrap_or(""), if hv { "hv" } else { "bare" });
        BootSpec {
            name,
            emulator: emu,
            cpu_model: self.cpu_model.clone(),
            cpus: self.cpus,
            hypervisor: hv,
            mmu: self.mmu,
            guest: self.guest.clone().map_or(GuestImage::Built, GuestImage::Path),
            hv_args: if self.mmu_audit { format!("audit=1 {}", self.hv_args).trim_end().to_string() } else { self.hv_args.clone() },
            guest_args: media::join_args(&[&test_cmd::full_args(self.full), &self.guest_args]),
            timeout: self.timeout.or(self.full.then_some(test_cmd::FULL_TIMEOUT)),
            expect_error: self.expect_error,
            expect_text: None,
            hv_kernel: None,
            expect_failures: &[],
            image: self.image.clone(),
        }
    }
}

/// `run`: build, check packages, boot once.
fn run(ws: &Workspace, opts: &RunOpts) -> Result<bool> {
    let emu = opts.resolve_emulator()?;
    if opts.emulator.is_none() && emu == Emulator::Bochs {
        if let Err(why) = emulator::nested_kvm_status() {
            println!("note: booting in Bochs; qemu-kvm is not available here: {why}");
        }
    }
    if emu == Emulator::QemuTcg && !opts.bare && opts.expect_error.is_none() {
        println!("note: QEMU TCG has no VMX; the hypervisor is expected to stop with `quadrant-error no-vmx`");
    }
    build::build(ws)?;
    let mut spec = opts.spec(emu);
    if let Some(bug) = &opts.inject {
        spec.hv_kernel = Some(build::build_injected(ws, bug)?);
        spec.name = format!("{}-inject-{bug}", spec.name);
    }
    packages::ensure(emu.needs())?;
    let r = boot::boot(ws, &spec, Style { stream: true, verbose: opts.verbose })?;
    Ok(r.verdict.passed)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let ws = match Workspace::locate() {
        Ok(ws) => ws,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let res = match &cli.cmd {
        Cmd::Build => build::build(&ws).map(|()| true),
        Cmd::Run(o) => run(&ws, o),
        Cmd::Test(o) => test_cmd::test(&ws, o),
        Cmd::Image(o) => image::image(&ws, o),
        Cmd::Bisect(o) => bisect::bisect(&ws, &o.good, &o.bad, &o.run),
        Cmd::Mutants(o) => mutants::mutants(&ws, o),
        Cmd::BisectTest(o) => packages::ensure(packages::BOCHS).map(|()| bisect_test::report(&ws, o.timeout, true).0),
        Cmd::Bench(o) => bench::bench(&ws, o),
        Cmd::BisectStep(o) => return bisect::step(&ws, o),
    };
    match res {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn run_options_round_trip_through_args() {
        let cli = Cli::try_parse_from([
            "xtask", "run", "--emulator", "bochs", "--cpu-model", "core2_penryn_t9600", "--cpus", "2", "--timeout",
            "90", "--mmu", "ept", "--hv-args", "audit=1", "--guest-args", "-x only=a", "--expect-error", "no-vmx",
        ])
        .unwrap();
        let Cmd::Run(o) = cli.cmd else { panic!() };
        let mut argv = vec!["xtask".to_string(), "bisect-step".to_string()];
        argv.extend(o.to_args());
        let Cmd::BisectStep(p) = Cli::try_parse_from(argv).unwrap().cmd else { panic!() };
        assert_eq!(p.to_args(), o.to_args());
        assert_eq!(p.guest_args, "-x only=a");
        assert_eq!(p.expect_error, Some(ErrorKind::NoVmx));
        let s = p.spec(Emulator::Bochs);
        assert_eq!(s.name, "bochs-core2_penryn_t9600-hv");
        assert_eq!(
            s.header(),
            "== bochs core2_penryn_t9600 2 cpus, hypervisor (mmu=ept), expecting quadrant-error no-vmx: \
             booting (timeout 90 s) =="
        );
    }

    #[test]
    fn image_option_round_trips_and_excludes_what_the_image_fixes() {
        let cli = Cli::try_parse_from(["xtask", "run", "--emulator", "bochs", "--image", "/x/q.img"]).unwrap();
        let Cmd::Run(o) = cli.cmd else { panic!() };
        let args = o.to_args();
        assert!(args.windows(2).any(|w| w == ["--image", "/x/q.img"]), "{args:?}");
        assert_eq!(o.spec(Emulator::Bochs).image, Some(PathBuf::from("/x/q.img")));
        for other in [["--bare", ""], ["--hv-args", "audit=1"], ["--guest-args", "only=a"]] {
            let mut argv = vec!["xtask", "run", "--image", "/x/q.img"];
            argv.extend(other.iter().filter(|a| !a.is_empty()));
            assert!(Cli::try_parse_from(argv).is_err(), "{other:?}");
        }
    }

    #[test]
    fn full_passes_sweep_full_to_the_guest() {
        let cli = Cli::try_parse_from(["xtask", "run", "--full", "--guest-args", "only=long/"]).unwrap();
        let Cmd::Run(o) = cli.cmd else { panic!() };
        assert!(o.to_args().contains(&"--full".to_string()));
        let s = o.spec(Emulator::Bochs);
        assert_eq!((s.guest_args.as_str(), s.timeout()), ("sweep=full only=long/", test_cmd::FULL_TIMEOUT));
        let cli = Cli::try_parse_from(["xtask", "run", "--full", "--timeout", "20"]).unwrap();
        let Cmd::Run(o) = cli.cmd else { panic!() };
        assert_eq!((o.spec(Emulator::Bochs).guest_args.as_str(), o.spec(Emulator::Bochs).timeout()), ("sweep=full", 20));
        let Cmd::Test(t) = Cli::try_parse_from(["xtask", "test", "--full"]).unwrap().cmd else { panic!() };
        assert!(t.full);
    }

    #[test]
    fn expect_error_help_lists_every_kind() {
        use clap::CommandFactory;
        let mut cmd = Cli::command();
        let run = cmd.find_subcommand_mut("run").unwrap();
        let help = run.render_long_help().to_string().replace(['\n', ' '], "");
        for k in ErrorKind::ALL {
            assert!(help.contains(k.as_str()), "{} missing from --expect-error's help", k.as_str());
        }
    }

    #[test]
    fn header_format() {
        let o = RunOpts { cpus: 1, ..Default::default() };
        assert_eq!(
            o.spec(Emulator::Bochs).header(),
            "== bochs corei7_skylake_x 1 cpu, hypervisor (mmu=shadow): booting (timeout 300 s) =="
        );
        let o = RunOpts { cpus: 1, bare: true, ..Default::default() };
        assert_eq!(o.spec(Emulator::QemuTcg).header(), "== qemu-tcg max 1 cpu, bare guest: booting (timeout 60 s) ==");
    }
}
