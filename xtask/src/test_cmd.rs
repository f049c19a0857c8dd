//! `cargo xtask test`: every test, one table, one closing line.
//!
//! 1. host tests: `cargo test --workspace`, counted from its `test result:` lines;
//! 2. the bare reference boots of the guest in QEMU TCG and in Bochs
//!    (`corei7_skylake_x`, with the Bochs boots below);
//! 3. hypervisor boots in Bochs on `core2_penryn_t9600` (no EPT: pure shadow
//!    paging) and `corei7_skylake_x`, and one on Penryn with the MMU audit
//!    (`audit=1`), in parallel (plus QEMU/KVM when nested VMX works here);
//! 4. the test-rig image (`cargo xtask image`): booted in Bochs via BIOS
//!    (penryn; the whole suite must pass, with the other Bochs boots), and
//!    under UEFI in QEMU TCG with OVMF (no VMX: the serial text and the
//!    banner in a screendump are checked, `rig.rs`), and its bare guest
//!    entry under OVMF (chosen with `sendkey`); the VGA text banner of
//!    a Multiboot 1 (BIOS) boot; and `reboot=2` at the end of a run without
//!    the exit device (QEMU must be reset after 2 s);
//! 5. negative tests that must fail in one specific way: the hypervisor in
//!    QEMU TCG (`no-vmx`) and with a non-Multiboot guest (`bad-guest-image`);
//!    in Bochs, a deliberately invalid guest TR (`vm-entry-failure` naming
//!    `GUEST_TR_AR_BYTES`), a guest triple fault (`triple-fault`) and an
//!    exhausted exit budget (`timeout`); deliberate failures whose
//!    translation-failure reports must show both walks (Bochs under the
//!    hypervisor) or the guest's (QEMU TCG bare);
//! 5. the bisect test ([`crate::bisect_test`], in the Bochs pool; `--no-bisect`
//!    leaves it out).
//!
//! The closing `N passed, M failed` adds host tests, boot checks and negative
//! tests; a boot that failed without a failing check (no summary, timeout,
//! bad exit, ...) counts as one failure so that the line never hides it.

use crate::boot::{self, BootResult, BootSpec, GuestImage, Mmu, Style};
use crate::verdict::ExpectedFailure;
use crate::emulator::{self, Emulator};
use crate::formats::{self, Format};
use crate::workspace::{cargo_program, Workspace};
use crate::{build, image, packages, rig};
use clap::Args;
use shared::line::ErrorKind;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Instant;

/// `test` options.
#[derive(Args, Debug)]
pub struct TestOpts {
    /// Skip the host tests (`cargo test --workspace`).
    #[arg(long)]
    pub no_host: bool,
    /// Run only the host tests (no packages, no emulators).
    #[arg(long, conflicts_with = "no_host")]
    pub host_only: bool,
    /// How many Bochs boots run at the same time.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub jobs: usize,
    /// Timeout of every boot in seconds [default: 300 for bochs, 60 for qemu].
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<u64>,
    /// Print every console line, grub.cfg, bochsrc and command lines.
    #[arg(long, short)]
    pub verbose: bool,
    /// Also give the results as TAP version 13 on stdout (everything else
    /// then goes to stderr) or as a JUnit XML file.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Where `--format tap|junit` writes [default: tap: stdout; junit:
    /// <target>/quadrant/junit.xml].
    #[arg(long, value_name = "PATH")]
    pub output: Option<std::path::PathBuf>,
    /// Run the whole access sweep in the checking boots (guest `sweep=full`;
    /// the default boot timeout becomes [`FULL_TIMEOUT`]).
    #[arg(long)]
    pub full: bool,
    /// Leave out the bisect test (`cargo xtask bisect-test`, about 1.5
    /// minutes alongside the other Bochs boots).
    #[arg(long)]
    pub no_bisect: bool,
}

/// Default boot timeout with `--full`, in seconds (the full sweep takes
/// minutes in Bochs under the hypervisor).
pub const FULL_TIMEOUT: u64 = 1800;

/// The guest words of `--full`.
pub fn full_args(full: bool) -> String {
    if full { "sweep=full".into() } else { String::new() }
}

/// One line of the closing table, with the results it stands for.
#[derive(Clone, Debug)]
pub struct Row {
    /// The run's name.
    pub name: String,
    /// `PASS`, `FAIL` or `ERROR`.
    pub verdict: &'static str,
    passed: u32,
    failed: u32,
    skipped: u32,
    /// Wall time in seconds.
    pub secs: f64,
    /// Contribution to the closing line.
    n_pass: u32,
    n_fail: u32,
    /// Every result in the run, for `--format tap|junit`.
    pub items: Vec<Item>,
}

/// One result inside a run: a host test, a boot's check, or the run itself
/// when it failed without a failing check (or is a negative test).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    /// Test or check name.
    pub name: String,
    /// `pass`, `fail` or `skip`.
    pub outcome: &'static str,
    /// Detail, failure reasons, or why it was skipped.
    pub detail: String,
}


/// Counts of one `cargo test` output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostCounts {
    /// Tests passed.
    pub passed: u32,
    /// Tests failed.
    pub failed: u32,
    /// Tests ignored.
    pub ignored: u32,
}

/// Adds one `test result: ok. 5 passed; 0 failed; 1 ignored; ...` line.
pub fn add_test_result(c: &mut HostCounts, line: &str) -> bool {
    let Some(rest) = line.trim().strip_prefix("test result:") else { return false };
    let words: Vec<&str> = rest.split_whitespace().collect();
    for w in words.windows(2) {
        let n: u32 = match w[0].parse() {
            Ok(n) => n,
            Err(_) => continue,
        };
        match w[1].trim_end_matches([';', ',']) {
            "passed" => c.passed += n,
            "failed" => c.failed += n,
            "ignored" => c.ignored += n,
            _ => {}
        }
    }
    true
}

/// Runs `cargo test --workspace`, streaming its output.
fn host_tests(ws: &Workspace) -> Row {
    println!("== host tests: cargo test --workspace ==");
    let start = Instant::now();
    let mut counts = HostCounts::default();
    let mut items = Vec::new();
    let child = Command::new(cargo_program())
        .args(["test", "--workspace"])
        .current_dir(&ws.root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn();
    let ok = match child {
        Err(e) => {
            println!("cannot start cargo: {e}");
            false
        }
        Ok(mut child) => {
            if let Some(out) = child.stdout.take() {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    println!("{line}");
                    add_test_result(&mut counts, &line);
                    // (The `Running <binary>` lines go to stderr, unordered
                    // with these: a test is named by its path alone.)
                    if let Some((name, outcome)) = test_line(&line) {
                        items.push(Item { name, outcome, detail: String::new() });
                    }
                }
            }
            child.wait().map(|s| s.success()).unwrap_or(false)
        }
    };
    let mut n_fail = counts.failed;
    if !ok && n_fail == 0 {
        println!("FAIL: cargo test failed without a failing test (a build error? see above)");
        n_fail = 1;
        items.push(Item {
            name: "cargo test".into(),
            outcome: "fail",
            detail: "cargo test failed without a failing test (a build error?)".into(),
        });
    }
    println!(
        "host tests: {} passed, {} failed, {} ignored\n",
        counts.passed, counts.failed, counts.ignored
    );
    Row {
        name: "host tests (cargo test)".into(),
        verdict: if ok && counts.failed == 0 { "PASS" } else { "FAIL" },
        passed: counts.passed,
        failed: counts.failed,
        skipped: counts.ignored,
        secs: start.elapsed().as_secs_f64(),
        n_pass: counts.passed,
        n_fail,
        items,
    }
}

#[cfg(test)]
impl Row {
    /// A row holding `items` (for the format tests).
    pub fn for_test(name: &str, items: Vec<Item>) -> Row {
        Row { name: name.into(), verdict: "PASS", passed: 0, failed: 0, skipped: 0, secs: 1.5, n_pass: 0, n_fail: 0, items }
    }
}

/// A `test NAME ... ok|FAILED|ignored` line: (NAME, outcome).
fn test_line(line: &str) -> Option<(String, &'static str)> {
    let rest = line.strip_prefix("test ")?;
    let (name, result) = rest.rsplit_once(" ... ")?;
    let outcome = match result.trim() {
        "ok" => "pass",
        "FAILED" => "fail",
        r if r.starts_with("ignored") => "skip",
        _ => return None,
    };
    Some((name.trim().to_string(), outcome))
}

/// The guest words of the deliberate-failure boots: one mode-walk probe
/// (`modes_break=1`) and one long-mode probe (`long_break=1`) expect a
/// wrong value, and only those checks run.
const BROKEN_WORDS: &str = "only=modes/walk1,long/large-alias-perms ram_test_mib=0 modes_break=1 long_break=1";

/// What the translation-failure reports of those two checks must show:
/// the probe and both outcomes, the guest's entries on the walk, and under
/// the hypervisor the shadow entries on the hardware walk (`SHADOW`) or
/// bare, that there are none.
const fn broken_reports(shadow: bool) -> &'static [ExpectedFailure] {
    const GUEST_PG32: [&str; 5] =
        ["read32 0x40000000: la 0x40000000, read at CPL 0: expected value 0x", "guest: 32-bit paging", "    PDE[256] @0x", "    PTE[0] @0x", "    => 4 KiB page"];
    const GUEST_LONG: [&str; 5] =
        ["A0 read: la 0x", ", read at CPL 0: expected ok 0x", "guest: 4-level paging, CR3 0x", "    PML4E[", "    => 2 MiB page"];
    const HV: &[ExpectedFailure] = &[
        ExpectedFailure {
            check: "modes/walk1/pg32",
            report: &[
                GUEST_PG32[0], GUEST_PG32[1], GUEST_PG32[2], GUEST_PG32[3], GUEST_PG32[4],
                "shadow: hardware CR3 0x", "; the PAE root", "; shadow page of gfn 0x", " (g2 L1 ", "    => maps gfn 0x",
            ],
        },
        ExpectedFailure {
            check: "long/large-alias-perms",
            report: &[
                GUEST_LONG[0], GUEST_LONG[1], GUEST_LONG[2], GUEST_LONG[3], GUEST_LONG[4],
                "shadow: hardware CR3 0x", "    L4[", " (g4 L4 ", "    L1[", "    => maps gfn 0x",
            ],
        },
    ];
    const BARE: &[ExpectedFailure] = &[
        ExpectedFailure {
            check: "modes/walk1/pg32",
            report: &[GUEST_PG32[0], GUEST_PG32[1], GUEST_PG32[2], GUEST_PG32[3], GUEST_PG32[4], "shadow: none (bare: no hypervisor"],
        },
        ExpectedFailure {
            check: "long/large-alias-perms",
            report: &[GUEST_LONG[0], GUEST_LONG[1], GUEST_LONG[2], GUEST_LONG[3], GUEST_LONG[4], "shadow: none (bare: no hypervisor"],
        },
    ];
    if shadow { HV } else { BARE }
}

fn spec(name: &str, emu: Emulator, model: Option<&str>, hv: bool, opts: &TestOpts) -> BootSpec {
    BootSpec {
        name: name.into(),
        emulator: emu,
        cpu_model: model.map(String::from),
        cpus: 1,
        hypervisor: hv,
        mmu: Mmu::Shadow,
        guest: GuestImage::Built,
        hv_args: String::new(),
        guest_args: full_args(opts.full),
        timeout: opts.timeout.or(opts.full.then_some(FULL_TIMEOUT)),
        expect_error: None,
        expect_text: None,
        hv_kernel: None,
        expect_failures: &[],
        image: None,
    }
}

/// One job of the Bochs pool.
enum Job {
    Boot(Box<BootSpec>),
    /// The bisect test ([`crate::bisect_test`]).
    Bisect,
}

impl Job {
    /// A rough rank of how long the job takes in Bochs (measured on a
    /// 2-core machine: the audit boot ~12 min, 4 vCPUs ~5 min, the bisect
    /// test and the image's BIOS boot ~1.5-2.5 min, the rest ~1 min), used
    /// only to start the longest jobs first.
    fn rough_cost(&self) -> u32 {
        match self {
            Job::Bisect => 2,
            Job::Boot(sp) if sp.hv_args.contains("audit=1") => 5,
            Job::Boot(sp) if sp.hypervisor && sp.cpus >= 4 => 4,
            Job::Boot(sp) if sp.image.is_some() => 2,
            Job::Boot(_) => 1,
        }
    }
}

/// The bisect test as a row of the table (its output comes as one block).
fn bisect_row(ws: &Workspace, opts: &TestOpts) -> Row {
    let start = Instant::now();
    let (ok, line) = crate::bisect_test::report(ws, opts.timeout.unwrap_or(crate::bisect_test::TIMEOUT), false);
    println!();
    let outcome = if ok { "pass" } else { "fail" };
    let items = vec![Item { name: "bisect names the injected regression and the failing check".into(), outcome, detail: line }];
    Row {
        name: "bisect test (throw-away history)".into(),
        verdict: if ok { "PASS" } else { "FAIL" },
        passed: u32::from(ok),
        failed: u32::from(!ok),
        skipped: 0,
        secs: start.elapsed().as_secs_f64(),
        n_pass: u32::from(ok),
        n_fail: u32::from(!ok),
        items,
    }
}

fn row_of(name: &str, r: anyhow::Result<BootResult>) -> Row {
    match r {
        Err(e) => {
            println!("ERROR: {name}: {e:#}\n");
            let items = vec![Item { name: "run".into(), outcome: "fail", detail: format!("runner error: {e:#}") }];
            Row { name: name.into(), verdict: "ERROR", passed: 0, failed: 0, skipped: 0, secs: 0.0, n_pass: 0, n_fail: 1, items }
        }
        Ok(r) => {
            println!();
            let c = r.verdict.counts;
            // Negative tests and deliberate-failure tests count once.
            let negative = r.report.expect_error.is_some() || !r.report.expect_failures.is_empty();
            let (n_pass, n_fail) = if negative {
                (u32::from(r.verdict.passed), u32::from(!r.verdict.passed))
            } else {
                (c.passed, c.failed + u32::from(!r.verdict.passed && c.failed == 0))
            };
            let reasons = r.verdict.reasons.join("; ");
            let items = if negative {
                let outcome = if r.verdict.passed { "pass" } else { "fail" };
                let what = match &r.report.expect_error {
                    Some(k) => format!("ends with quadrant-error {k}"),
                    None => format!("fails in exactly {} with translation reports", r.report.expect_failures.join(", ")),
                };
                vec![Item { name: what, outcome, detail: reasons }]
            } else {
                let mut v: Vec<Item> = r
                    .report
                    .checks
                    .iter()
                    .map(|k| Item { name: k.name.clone(), outcome: k.outcome, detail: k.detail_with_report() })
                    .collect();
                if !r.verdict.passed && c.failed == 0 {
                    v.push(Item { name: "boot".into(), outcome: "fail", detail: reasons });
                }
                v
            };
            Row {
                name: name.into(),
                verdict: if r.verdict.passed { "PASS" } else { "FAIL" },
                passed: c.passed,
                failed: c.failed,
                skipped: c.skipped,
                secs: r.report.duration_s,
                n_pass,
                n_fail,
                items,
            }
        }
    }
}

/// Runs everything; returns whether all passed.
pub fn test(ws: &Workspace, opts: &TestOpts) -> anyhow::Result<bool> {
    // TAP to stdout: move everything else to stderr first.
    let mut tap_out = match (opts.format, &opts.output) {
        (Format::Tap, None) => Some(crate::stdio::divert_stdout_to_stderr()?),
        _ => None,
    };
    let start = Instant::now();
    let mut rows = Vec::new();
    if !opts.no_host {
        rows.push(host_tests(ws));
    }
    if !opts.host_only {
        boots(ws, opts, &mut rows);
    }

    println!("== summary ({:.0} s) ==", start.elapsed().as_secs_f64());
    let w = rows.iter().map(|r| r.name.len()).max().unwrap_or(3).max(3);
    println!("{:<w$} {:<7} {:>6} {:>6} {:>7} {:>8}", "run", "verdict", "passed", "failed", "skipped", "time");
    for r in &rows {
        println!(
            "{:<w$} {:<7} {:>6} {:>6} {:>7} {:>6.1} s",
            r.name, r.verdict, r.passed, r.failed, r.skipped, r.secs
        );
    }
    let n: u32 = rows.iter().map(|r| r.n_pass).sum();
    let m: u32 = rows.iter().map(|r| r.n_fail).sum();
    println!("{n} passed, {m} failed");
    let text = match opts.format {
        Format::Text => None,
        Format::Tap => Some(formats::tap(&rows)),
        Format::Junit => Some(formats::junit(&rows)),
    };
    if let Some(text) = text {
        match (&mut tap_out, &opts.output) {
            (Some(f), _) => {
                use std::io::Write;
                f.write_all(text.as_bytes())?;
                f.flush()?;
            }
            (None, path) => {
                let path = path.clone().unwrap_or_else(|| ws.quadrant_dir().join("junit.xml"));
                if let Some(d) = path.parent() {
                    std::fs::create_dir_all(d)?;
                }
                std::fs::write(&path, text)?;
                let what = if opts.format == Format::Tap { "TAP" } else { "JUnit XML" };
                println!("{what} results: {}", path.display());
            }
        }
    }
    Ok(m == 0 && rows.iter().all(|r| r.verdict == "PASS"))
}

/// A row for one rig run (`rig.rs`): one result, like a negative test.
fn row_of_rig(name: &str, r: anyhow::Result<rig::RigRun>) -> Row {
    let r = match r {
        Ok(r) => r,
        Err(e) => return row_of(name, Err(e)),
    };
    let mut block = format!("== {name} ==\n");
    for reason in &r.reasons {
        block += &format!("  {} {reason}\n", if r.passed { "-" } else { "- FAIL:" });
    }
    block += &format!("{}: {name} in {:.1} s (run dir: {})\n\n", if r.passed { "PASS" } else { "FAIL" }, r.secs, r.dir.display());
    boot::say(&block);
    let outcome = if r.passed { "pass" } else { "fail" };
    Row {
        name: name.into(),
        verdict: if r.passed { "PASS" } else { "FAIL" },
        passed: 0,
        failed: 0,
        skipped: 0,
        secs: r.secs,
        n_pass: u32::from(r.passed),
        n_fail: u32::from(!r.passed),
        items: vec![Item { name: name.into(), outcome, detail: r.reasons.join("; ") }],
    }
}

/// Where `cargo xtask test` builds the rig image.
fn test_image(ws: &Workspace) -> std::path::PathBuf {
    ws.quadrant_dir().join("test-image").join("quadrant.img")
}

fn boots(ws: &Workspace, opts: &TestOpts, rows: &mut Vec<Row>) {
    let setup = Instant::now();
    let mut needs = packages::BOCHS.to_vec();
    needs.extend_from_slice(packages::QEMU);
    needs.extend_from_slice(packages::IMAGE);
    needs.extend_from_slice(packages::OVMF);
    let img = test_image(ws);
    let ready = packages::ensure(&needs).and_then(|()| {
        println!("== building the hypervisor, the guest and the rig image ==");
        build::build(ws)?;
        image::make_image(ws, &img, image::DEFAULT_MENU_TIMEOUT)
    });
    if let Err(e) = ready {
        println!("ERROR: {e:#}\n");
        let secs = setup.elapsed().as_secs_f64();
        let items = vec![Item { name: "setup".into(), outcome: "fail", detail: format!("{e:#}") }];
        rows.push(Row { name: "setup (packages, build)".into(), verdict: "ERROR", passed: 0, failed: 0, skipped: 0, secs, n_pass: 0, n_fail: 1, items });
        return;
    }
    println!();
    let stream = Style { stream: true, verbose: opts.verbose };

    // The bare reference boot, with 4 CPUs (the SMP checks start the APs).
    let mut bare = spec("bare guest, qemu-tcg, 4 cpus", Emulator::QemuTcg, None, false, opts);
    bare.cpus = 4;
    rows.push(row_of(&bare.name, boot::boot(ws, &bare, stream)));

    // Hypervisor boots in Bochs, `jobs` at a time: one vCPU (Penryn), and
    // several (2 on Penryn, without x2APIC; 4 on Skylake, with it).
    let mut pen2 = spec("hypervisor, bochs penryn, 2 cpus (shadow)", Emulator::Bochs, Some("core2_penryn_t9600"), true, opts);
    pen2.cpus = 2;
    let mut sky4 = spec("hypervisor, bochs skylake, 4 cpus (shadow)", Emulator::Bochs, Some("corei7_skylake_x"), true, opts);
    sky4.cpus = 4;
    sky4.timeout = Some(opts.timeout.unwrap_or(900));
    let mut hv = vec![
        spec("hypervisor, bochs penryn (shadow)", Emulator::Bochs, Some("core2_penryn_t9600"), true, opts),
        pen2,
        sky4,
    ];
    // The bare reference in Bochs too: QEMU TCG does not model everything
    // (PDPTE registers, reserved CR3 bits), Bochs does.
    let mut bare_bochs = spec("bare guest, bochs skylake, 4 cpus", Emulator::Bochs, Some("corei7_skylake_x"), false, opts);
    bare_bochs.cpus = 4;
    hv.push(bare_bochs);
    // The EPT reference: the same guest on an identity EPT with
    // unrestricted guest (Skylake has both); 2 vCPUs, so the APs start in
    // real mode natively.
    let mut ept = spec("hypervisor, bochs skylake, 2 cpus (ept)", Emulator::Bochs, Some("corei7_skylake_x"), true, opts);
    ept.mmu = Mmu::Ept;
    ept.cpus = 2;
    hv.push(ept);
    // The MMU audit after every exit that reaches the shadow page cache,
    // with 2 vCPUs (the RAM test is skipped: its thousands of faults would
    // each be audited; the mode walks are what exercise the cache). The
    // longest boot: about 12 minutes here, most of it the AP's mode walk
    // in smp/concurrent-mode-walks, each of its exits audited over a cache
    // the earlier checks filled.
    let mut audit = spec("hypervisor, bochs penryn, 2 cpus (shadow, audit=1)", Emulator::Bochs, Some("core2_penryn_t9600"), true, opts);
    audit.cpus = 2;
    audit.hv_args = "audit=1".into();
    audit.guest_args = "ram_test_mib=0 light=1".into();
    audit.timeout = Some(opts.timeout.unwrap_or(1800));
    hv.push(audit);
    // Negative tests that need VMX, so Bochs: each error path of the
    // hypervisor must end the run with its own named error.
    let penryn = Some("core2_penryn_t9600");
    let mut entry = spec("negative: VM-entry failure names the field", Emulator::Bochs, penryn, true, opts);
    entry.hv_args = "selftest=entry-failure".into();
    entry.expect_error = Some(ErrorKind::VmEntryFailure);
    entry.expect_text = Some("GUEST_TR_AR_BYTES");
    let mut triple = spec("negative: guest triple fault", Emulator::Bochs, penryn, true, opts);
    triple.guest_args = "crash=triple-fault ram_test_mib=1 modes=0".into();
    triple.expect_error = Some(ErrorKind::TripleFault);
    let mut budget = spec("negative: exit budget (timeout)", Emulator::Bochs, penryn, true, opts);
    budget.hv_args = "max_exits=200".into();
    budget.expect_error = Some(ErrorKind::Timeout);
    budget.expect_text = Some("max_exits=200");
    // mmu=ept on a CPU without EPT: refused before VM entry, naming the control.
    let mut no_ept = spec("negative: mmu=ept without EPT", Emulator::Bochs, penryn, true, opts);
    no_ept.mmu = Mmu::Ept;
    no_ept.expect_error = Some(ErrorKind::Unsupported);
    no_ept.expect_text = Some("\"enable EPT\"");
    // Deliberate failures: each failing translation check must print its
    // report, with the shadow side under the hypervisor.
    let mut reports = spec("deliberate failures: translation reports", Emulator::Bochs, penryn, true, opts);
    reports.guest_args = BROKEN_WORDS.into();
    reports.expect_failures = broken_reports(true);
    hv.extend([entry, triple, budget, no_ept, reports]);
    // The rig image via BIOS: its default entry (the hypervisor with the
    // guest, mmu=shadow) must pass the whole suite, role coverage included.
    let mut via_bios = spec("image via BIOS, bochs penryn (shadow)", Emulator::Bochs, Some("core2_penryn_t9600"), true, opts);
    via_bios.guest_args = String::new();
    via_bios.image = Some(img.clone());
    hv.push(via_bios);
    let parallel = Style { stream: false, verbose: opts.verbose };
    let mut jobs: Vec<Job> = hv.drain(..).map(|sp| Job::Boot(Box::new(sp))).collect();
    if !opts.no_bisect {
        jobs.insert(jobs.len().min(5), Job::Bisect);
    }
    // Table order stays as listed; the pool starts the longest jobs first
    // so that the short ones fill the gaps at the end.
    let mut order: Vec<(usize, Job)> = jobs.into_iter().enumerate().collect();
    order.sort_by_key(|(_, j)| std::cmp::Reverse(j.rough_cost()));
    order.reverse();
    let queue = Mutex::new(order);
    let done: Mutex<Vec<(usize, Row)>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..opts.jobs.max(1) {
            s.spawn(|| loop {
                let next = queue.lock().unwrap_or_else(|e| e.into_inner()).pop();
                let Some((i, job)) = next else { break };
                let row = match job {
                    Job::Boot(sp) => row_of(&sp.name, boot::boot(ws, &sp, parallel)),
                    Job::Bisect => bisect_row(ws, opts),
                };
                done.lock().unwrap_or_else(|e| e.into_inner()).push((i, row));
            });
        }
    });
    let mut done = done.into_inner().unwrap_or_else(|e| e.into_inner());
    done.sort_by_key(|(i, _)| *i);
    rows.extend(done.into_iter().map(|(_, r)| r));

    // Nested KVM where this host has it.
    match emulator::nested_kvm_status() {
        Ok(()) => {
            let k = spec("hypervisor, qemu-kvm (shadow)", Emulator::QemuKvm, None, true, opts);
            rows.push(row_of(&k.name, boot::boot(ws, &k, stream)));
        }
        Err(why) => println!("(skipping the qemu-kvm boot: {why})\n"),
    }

    // The rig image under UEFI, and the reboot at the end of a run.
    let uefi_timeout = opts.timeout.unwrap_or(300);
    rows.push(row_of_rig("image via UEFI, qemu-tcg ovmf (no VMX, serial + screen)", rig::uefi_image_boot(ws, &img, uefi_timeout)));
    rows.push(row_of_rig("image via UEFI, bare guest entry, qemu-tcg ovmf", rig::uefi_image_bare(ws, &img, uefi_timeout)));
    rows.push(row_of_rig("rig: BIOS VGA text banner, qemu-tcg (no VMX)", rig::bios_vga_banner(ws, 60)));
    rows.push(row_of_rig("rig: reboot=2 resets after the result", rig::reboot_after_result(ws, 60)));

    // Negative tests.
    let mut novmx = spec("negative: hypervisor without VMX", Emulator::QemuTcg, None, true, opts);
    novmx.expect_error = Some(ErrorKind::NoVmx);
    rows.push(row_of(&novmx.name, boot::boot(ws, &novmx, stream)));
    let mut bad = spec("negative: non-Multiboot guest", Emulator::QemuTcg, None, true, opts);
    bad.expect_error = Some(ErrorKind::BadGuestImage);
    bad.guest = GuestImage::NotMultiboot;
    rows.push(row_of(&bad.name, boot::boot(ws, &bad, stream)));
    let mut bare_reports = spec("deliberate failures: translation reports, bare qemu-tcg", Emulator::QemuTcg, None, false, opts);
    bare_reports.guest_args = BROKEN_WORDS.into();
    bare_reports.expect_failures = broken_reports(false);
    rows.push(row_of(&bare_reports.name, boot::boot(ws, &bare_reports, stream)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_cargo_test_lines() {
        let mut c = HostCounts::default();
        assert!(add_test_result(
            &mut c,
            "test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s"
        ));
        assert!(add_test_result(&mut c, "test result: FAILED. 3 passed; 2 failed; 0 ignored; 0 measured"));
        assert!(!add_test_result(&mut c, "running 12 tests"));
        assert_eq!(c, HostCounts { passed: 15, failed: 2, ignored: 1 });
    }

    #[test]
    fn host_test_lines_become_items() {
        assert_eq!(test_line("test mmu::tests::a ... ok"), Some(("mmu::tests::a".into(), "pass")));
        assert_eq!(test_line("test b ... FAILED"), Some(("b".into(), "fail")));
        assert_eq!(test_line("test c ... ignored, slow"), Some(("c".into(), "skip")));
        assert_eq!(test_line("test result: ok. 1 passed"), None);
    }
}
