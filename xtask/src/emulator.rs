//! The emulators: which one to use, how each is configured and started, and
//! running one under a timeout.

use crate::packages;
use crate::verdict::{Exit, ExitConvention};
use anyhow::{Context, Result};
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Bochs configuration template (`ci/bochsrc.template`), built into the
/// binary so that a bisect step can boot old trees with today's runner.
const BOCHSRC_TEMPLATE: &str = include_str!("../../ci/bochsrc.template");

/// An emulator to boot in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Emulator {
    /// Bochs 2.7: emulates VMX (and EPT on modern models); slow but everywhere.
    Bochs,
    /// QEMU with KVM and nested VMX (`-cpu host,+vmx`): real speed, needs an
    /// Intel host with `kvm_intel nested=1`.
    QemuKvm,
    /// QEMU TCG: fast, but no VMX (bare guest runs and negative tests).
    QemuTcg,
}

impl fmt::Display for Emulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Emulator::Bochs => "bochs",
            Emulator::QemuKvm => "qemu-kvm",
            Emulator::QemuTcg => "qemu-tcg",
        })
    }
}

impl Emulator {
    /// qemu-kvm when nested VMX works here, else Bochs.
    pub fn best_available() -> Emulator {
        if nested_kvm_status().is_ok() {
            Emulator::QemuKvm
        } else {
            Emulator::Bochs
        }
    }

    /// How its exit status is read.
    pub fn convention(self) -> ExitConvention {
        match self {
            Emulator::Bochs => ExitConvention::Bochs,
            Emulator::QemuKvm | Emulator::QemuTcg => ExitConvention::Qemu,
        }
    }

    /// The CPU model used when the user names none.
    pub fn default_cpu_model(self) -> &'static str {
        match self {
            Emulator::Bochs => "corei7_skylake_x",
            Emulator::QemuKvm => "host,+vmx",
            Emulator::QemuTcg => "max",
        }
    }

    /// The default timeout in seconds.
    pub fn default_timeout(self) -> u64 {
        match self {
            Emulator::Bochs => 300,
            Emulator::QemuKvm | Emulator::QemuTcg => 60,
        }
    }

    /// Host packages it needs.
    pub fn needs(self) -> &'static [packages::Need] {
        match self {
            Emulator::Bochs => packages::BOCHS,
            Emulator::QemuKvm | Emulator::QemuTcg => packages::QEMU,
        }
    }

    /// The file its own messages go to, relative to the run directory.
    pub fn log_name(self) -> &'static str {
        match self {
            Emulator::Bochs => "bochs.log",
            Emulator::QemuKvm | Emulator::QemuTcg => "qemu.log",
        }
    }

    /// The file the process's stdout and stderr go to.
    pub fn output_name(self) -> &'static str {
        match self {
            Emulator::Bochs => "bochs.out",
            Emulator::QemuKvm | Emulator::QemuTcg => "qemu.log",
        }
    }
}

/// Whether QEMU/KVM can run a VMX hypervisor here; the error says exactly why not.
pub fn nested_kvm_status() -> std::result::Result<(), String> {
    nested_kvm_verdict(&KvmFacts::gather())
}

/// What decides whether nested VMX works under this host's KVM.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvmFacts {
    /// `/dev/kvm` exists.
    pub dev_exists: bool,
    /// This user can open it read-write.
    pub dev_usable: bool,
    /// `vendor_id` of /proc/cpuinfo (`GenuineIntel`, `AuthenticAMD`, ...).
    pub vendor: String,
    /// /proc/cpuinfo lists the `vmx` flag (Linux may use VT-x here).
    pub cpu_has_vmx: bool,
    /// /proc/cpuinfo lists the `hypervisor` flag (this host is itself a VM).
    pub in_vm: bool,
    /// Loaded kernel modules whose names start with `kvm`.
    pub kvm_modules: Vec<String>,
    /// `/sys/module/kvm_intel/parameters/nested`, when kvm_intel is loaded.
    pub intel_nested: Option<String>,
}

impl KvmFacts {
    /// Reads them from /dev, /proc and /sys.
    pub fn gather() -> KvmFacts {
        let dev = Path::new("/dev/kvm");
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let flags: Vec<&str> = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("flags").and_then(|r| r.split_once(':')).map(|(_, f)| f))
            .unwrap_or("")
            .split_whitespace()
            .collect();
        let mut kvm_modules: Vec<String> = std::fs::read_dir("/sys/module")
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with("kvm"))
                    .collect()
            })
            .unwrap_or_default();
        kvm_modules.sort();
        KvmFacts {
            dev_exists: dev.exists(),
            dev_usable: std::fs::OpenOptions::new().read(true).write(true).open(dev).is_ok(),
            vendor: cpuinfo
                .lines()
                .find_map(|l| l.strip_prefix("vendor_id").and_then(|r| r.split_once(':')).map(|(_, v)| v.trim().to_string()))
                .unwrap_or_default(),
            cpu_has_vmx: flags.contains(&"vmx"),
            in_vm: flags.contains(&"hypervisor"),
            kvm_modules,
            intel_nested: std::fs::read_to_string("/sys/module/kvm_intel/parameters/nested").ok().map(|s| s.trim().to_string()),
        }
    }
}

/// The commands that turn nested VMX on for kvm_intel.
const ENABLE_NESTED: &str = "`sudo modprobe -r kvm_intel && sudo modprobe kvm_intel nested=1` (stop running VMs first; \
                             make it permanent with `options kvm_intel nested=1` in /etc/modprobe.d/kvm.conf)";

/// Whether nested VMX works with these facts; the error says exactly why
/// not and how to enable it where that is possible.
pub fn nested_kvm_verdict(f: &KvmFacts) -> std::result::Result<(), String> {
    let loaded = if f.kvm_modules.is_empty() { "none".to_string() } else { f.kvm_modules.join(", ") };
    let intel = f.vendor == "GenuineIntel";
    if !intel && !f.vendor.is_empty() {
        let what = if f.vendor == "AuthenticAMD" { "an AMD host (AMD-V/SVM)" } else { "not an Intel host" };
        let pvm = if f.kvm_modules.iter().any(|m| m == "kvm_pvm") { "; its /dev/kvm is a paravirtual KVM (kvm_pvm) without nested virtualisation" } else { "" };
        return Err(format!(
            "this is {what} (vendor {}{pvm}): KVM here cannot give a guest Intel VMX, which Quadrant's hypervisor needs \
             (KVM nests VMX only on Intel hosts with kvm_intel nested=1); use --emulator bochs, which emulates VMX",
            f.vendor
        ));
    }
    if !f.dev_exists {
        return Err(if intel && !f.cpu_has_vmx && f.in_vm {
            "no /dev/kvm, and this Intel CPU shows no VMX to Linux: this host is a VM without nested virtualisation; \
             enable nested VMX in the outer hypervisor (for KVM: kvm_intel nested=1 there and `-cpu host`), or use --emulator bochs"
                .into()
        } else if intel && !f.cpu_has_vmx {
            "no /dev/kvm, and this Intel CPU shows no VMX to Linux: enable Intel VT-x in the firmware setup, then load \
             kvm_intel with `sudo modprobe kvm_intel nested=1`"
                .into()
        } else {
            format!("no /dev/kvm: load KVM with `sudo modprobe kvm_intel nested=1` (loaded kvm modules: {loaded})")
        });
    }
    if !f.dev_usable {
        return Err("/dev/kvm exists but this user cannot open it read-write (add yourself to the `kvm` group, then log in again)".into());
    }
    if f.kvm_modules.iter().any(|m| m == "kvm_pvm") {
        return Err(format!(
            "/dev/kvm is a paravirtual KVM (kvm_pvm, loaded: {loaded}), which has no nested VMX; use --emulator bochs"
        ));
    }
    let Some(nested) = &f.intel_nested else {
        return Err(format!(
            "/dev/kvm exists but kvm_intel is not loaded (loaded kvm modules: {loaded}); load it with nested VMX: {ENABLE_NESTED}"
        ));
    };
    if !matches!(nested.as_str(), "Y" | "y" | "1") {
        return Err(format!("kvm_intel is loaded with nested VMX off (nested={nested}); enable it with {ENABLE_NESTED}"));
    }
    Ok(())
}

/// Renders `ci/bochsrc.template`. Paths are relative to the run directory.
pub fn bochsrc(model: &str, cpus: u32, iso: &str) -> String {
    BOCHSRC_TEMPLATE
        .replace("@BIOS@", packages::BOCHS_BIOS)
        .replace("@VGABIOS@", packages::vga_bios())
        .replace("@MODEL@", model)
        .replace("@CPUS@", &cpus.to_string())
        .replace("@ISO@", iso)
        .replace("@SERIAL@", "serial.log")
        .replace("@LOG@", "bochs.log")
}

/// The Bochs debugger script: continue, and quit when the magic breakpoint
/// (the pass exit) stops the CPU.
pub const BOCHS_RC: &str = "c\nquit\n";

/// The QEMU command line (without the boot media arguments).
pub fn qemu_args(emu: Emulator, model: &str, cpus: u32) -> Vec<String> {
    let mut a = qemu_machine_args(emu, model, cpus, 256);
    a.extend(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"].map(String::from));
    a
}

/// The machine part of a QEMU command line: accelerator, CPU, `mem_mib` of
/// RAM, no display, no reboot, COM1 and the debug console to files; without
/// the exit device (the rig tests run without it, as a machine would).
pub fn qemu_machine_args(emu: Emulator, model: &str, cpus: u32, mem_mib: u32) -> Vec<String> {
    let mut a: Vec<String> = vec!["-machine".into(), "pc".into()];
    if emu == Emulator::QemuKvm {
        a.push("-enable-kvm".into());
    } else {
        a.extend(["-accel".into(), "tcg".into()]);
    }
    a.extend(
        [
            "-cpu", model, "-m", &mem_mib.to_string(), "-smp", &cpus.to_string(), "-display", "none", "-no-reboot",
            "-serial", "file:serial.log", "-debugcon", "file:debugcon.log",
        ]
        .map(String::from),
    );
    a
}

/// A process to start in a run directory.
#[derive(Clone, Debug)]
pub struct Launch {
    /// Program and arguments.
    pub argv: Vec<String>,
    /// Working directory (the run directory).
    pub cwd: PathBuf,
    /// stdout and stderr go here.
    pub output: PathBuf,
}

impl Launch {
    /// The command as one shell-pasteable line.
    pub fn display(&self) -> String {
        let words: Vec<String> = self.argv.iter().map(|w| shell_quote(w)).collect();
        format!("(cd {} && {})", shell_quote(&self.cwd.to_string_lossy()), words.join(" "))
    }
}

/// Quotes a word for a POSIX shell when it needs it.
pub fn shell_quote(w: &str) -> String {
    if !w.is_empty() && w.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c)) {
        w.to_string()
    } else {
        format!("'{}'", w.replace('\'', "'\\''"))
    }
}

/// The wrapper that gives Bochs its own network namespace (so parallel runs
/// do not fight over the rfb port), if this host allows one.
pub fn netns_wrapper() -> &'static [&'static str] {
    static W: OnceLock<&'static [&'static str]> = OnceLock::new();
    W.get_or_init(|| {
        let works = |args: &[&str]| {
            Command::new("unshare")
                .args(args)
                .arg("true")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        };
        if works(&["-n"]) {
            &["unshare", "-n"]
        } else if works(&["-r", "-n"]) {
            &["unshare", "-r", "-n"]
        } else {
            &[]
        }
    })
}

/// `setpriv --pdeathsig KILL --` when available: the emulator dies with the
/// runner (Ctrl-C), although it runs in its own process group.
fn deathsig_wrapper() -> &'static [&'static str] {
    static W: OnceLock<bool> = OnceLock::new();
    if *W.get_or_init(|| packages::find_program("setpriv").is_some()) {
        &["setpriv", "--pdeathsig", "KILL", "--"]
    } else {
        &[]
    }
}

/// Runs `l` with stdin from /dev/null, in its own process group, killing the
/// group after `timeout`. `tick(elapsed)` is called about every 100 ms.
pub fn run(l: &Launch, timeout: Duration, mut tick: impl FnMut(Duration)) -> Result<(Exit, Duration)> {
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    let out = std::fs::File::create(&l.output).with_context(|| format!("creating {}", l.output.display()))?;
    let err = out.try_clone()?;
    let mut argv: Vec<&str> = deathsig_wrapper().to_vec();
    argv.extend(l.argv.iter().map(String::as_str));
    let start = Instant::now();
    let mut child = Command::new(argv[0])
        .args(&argv[1..])
        .current_dir(&l.cwd)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {}", l.argv[0]))?;
    loop {
        if let Some(st) = child.try_wait()? {
            let exit = match (st.code(), st.signal()) {
                (Some(c), _) => Exit::Code(c),
                (None, Some(s)) => Exit::Signal(s),
                (None, None) => Exit::Code(-1),
            };
            return Ok((exit, start.elapsed()));
        }
        let el = start.elapsed();
        if el >= timeout {
            let pgid = child.id();
            let _ = Command::new("kill").args(["-KILL", "--", &format!("-{pgid}")]).status();
            let _ = child.kill();
            let _ = child.wait();
            return Ok((Exit::Timeout { secs: timeout.as_secs() }, start.elapsed()));
        }
        tick(el);
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bochsrc_has_the_measured_settings() {
        let rc = bochsrc("core2_penryn_t9600", 2, "boot.iso");
        for want in [
            "display_library: rfb, options=\"timeout=0\"",
            "cpu: model=core2_penryn_t9600, count=2, ips=50000000, reset_on_triple_fault=0",
            "megs: 256",
            "ata0-master: type=cdrom, path=boot.iso, status=inserted",
            "boot: cdrom",
            "com1: enabled=1, mode=file, dev=serial.log",
            "log: bochs.log",
            "clock: sync=none, time0=local",
            "panic: action=fatal",
            "magic_break: enabled=1",
            "port_e9_hack: enabled=1",
            "romimage: file=/usr/share/bochs/BIOS-bochs-latest",
        ] {
            assert!(rc.contains(want), "missing {want:?} in\n{rc}");
        }
        assert!(!rc.lines().any(|l| !l.starts_with('#') && l.contains('@')), "unfilled field in\n{rc}");
    }

    #[test]
    fn qemu_command_line() {
        let a = qemu_args(Emulator::QemuTcg, "max", 1).join(" ");
        assert_eq!(
            a,
            "-machine pc -accel tcg -cpu max -m 256 -smp 1 -display none -no-reboot -serial file:serial.log \
             -debugcon file:debugcon.log -device isa-debug-exit,iobase=0xf4,iosize=0x04"
        );
        let k = qemu_args(Emulator::QemuKvm, "host,+vmx", 2).join(" ");
        assert!(k.starts_with("-machine pc -enable-kvm -cpu host,+vmx -m 256 -smp 2 "), "{k}");
    }

    #[test]
    fn timeout_kills_and_exit_codes_pass_through() {
        let dir = std::env::temp_dir().join(format!("xtask-emu-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let l = |s: &str| Launch {
            argv: vec!["sh".into(), "-c".into(), s.into()],
            cwd: dir.clone(),
            output: dir.join("out.log"),
        };
        let (e, _) = run(&l("echo hi; exit 3"), Duration::from_secs(10), |_| {}).unwrap();
        assert_eq!(e, Exit::Code(3));
        assert_eq!(std::fs::read_to_string(dir.join("out.log")).unwrap(), "hi\n");
        let (e, d) = run(&l("sleep 30 & sleep 30"), Duration::from_millis(300), |_| {}).unwrap();
        assert_eq!(e, Exit::Timeout { secs: 0 });
        assert!(d < Duration::from_secs(5));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn nested_kvm_messages_say_why_and_how() {
        let intel = KvmFacts {
            dev_exists: true,
            dev_usable: true,
            vendor: "GenuineIntel".into(),
            cpu_has_vmx: true,
            in_vm: false,
            kvm_modules: vec!["kvm".into(), "kvm_intel".into()],
            intel_nested: Some("Y".into()),
        };
        assert_eq!(nested_kvm_verdict(&intel), Ok(()));
        let off = KvmFacts { intel_nested: Some("N".into()), ..intel.clone() };
        let e = nested_kvm_verdict(&off).unwrap_err();
        assert!(e.contains("nested=N") && e.contains("modprobe kvm_intel nested=1"), "{e}");
        let amd_pvm = KvmFacts {
            vendor: "AuthenticAMD".into(),
            cpu_has_vmx: false,
            in_vm: true,
            kvm_modules: vec!["kvm".into(), "kvm_pvm".into()],
            intel_nested: None,
            ..intel.clone()
        };
        let e = nested_kvm_verdict(&amd_pvm).unwrap_err();
        assert!(e.contains("AMD host") && e.contains("kvm_pvm") && e.contains("--emulator bochs"), "{e}");
        let pvm_intel = KvmFacts { kvm_modules: vec!["kvm".into(), "kvm_pvm".into()], intel_nested: None, ..intel.clone() };
        assert!(nested_kvm_verdict(&pvm_intel).unwrap_err().contains("paravirtual KVM (kvm_pvm"));
        let unloaded = KvmFacts { kvm_modules: vec!["kvm".into()], intel_nested: None, ..intel.clone() };
        assert!(nested_kvm_verdict(&unloaded).unwrap_err().contains("kvm_intel is not loaded"));
        let no_dev_vm = KvmFacts { dev_exists: false, cpu_has_vmx: false, in_vm: true, ..intel.clone() };
        assert!(nested_kvm_verdict(&no_dev_vm).unwrap_err().contains("VM without nested virtualisation"));
        let no_vtx = KvmFacts { dev_exists: false, cpu_has_vmx: false, ..intel.clone() };
        assert!(nested_kvm_verdict(&no_vtx).unwrap_err().contains("enable Intel VT-x in the firmware"));
        let no_perm = KvmFacts { dev_usable: false, ..intel };
        assert!(nested_kvm_verdict(&no_perm).unwrap_err().contains("`kvm` group"));
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("-smp"), "-smp");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
    }
}
