//! `smp/...`: several processors (DESIGN.md scenario 19). The BSP finds
//! the processors in the ACPI MADT (or the MP table), starts each AP with
//! INIT and start-up IPIs, keeps it in real mode while it runs on in long
//! mode, then gives the APs work: IPI round trips through the xAPIC and the
//! x2APIC, per-CPU CR3s sharing lower tables with cross-CPU PTE edits and
//! TLB shootdowns, a stale writable translation that must not survive, a
//! page that becomes a page table while another CPU still writes it through
//! its TLB, and concurrent page-table writes from every CPU. Last, each AP
//! runs its own checks (the mode walk, `cpuN/...`) while the BSP switches
//! address spaces in long mode.
//!
//! Every expectation is architectural (SDM Vol. 3A chapters 4, 9 and 11)
//! and holds bare; under Quadrant two also read the shadow page cache's
//! state through MmuStats (shadow roots of real mode and long mode loaded
//! at once).

// CPU indices are identities here (named in details, used for jobs and
// slots), not just positions: loops over them read better than zips.
#![allow(clippy::needless_range_loop)]

use super::Ctx;
use crate::long::{self, Builder};
use crate::machine::{Machine, TEST_VA_START};
use crate::modes::paging::{entry64, Frames, KRW, P};
use crate::report::Detail;
use crate::smp::{self, vector, Job, CPUS, SYNC};
use core::fmt::Write;
use core::sync::atomic::Ordering::SeqCst;
use shared::acpi::CpuList;
use shared::apic::{Icr, APIC_BASE_BSP, APIC_BASE_EN, APIC_BASE_EXTD, CPUID1_ECX_X2APIC};
use shared::Outcome;

/// The `smp/...` checks, in run order.
pub static CHECKS: &[super::Check] = &[
    super::Check { name: "smp/processors", run: processors },
    super::Check { name: "smp/start-aps", run: start_aps },
    super::Check { name: "smp/real-mode-beside-long", run: real_mode_beside_long },
    super::Check { name: "smp/aps-online", run: aps_online },
    super::Check { name: "smp/ipi-xapic", run: ipi_xapic },
    super::Check { name: "smp/ipi-x2apic", run: ipi_x2apic },
    super::Check { name: "smp/restart-x2apic", run: restart_x2apic },
    super::Check { name: "smp/shared-tables", run: shared_tables },
    super::Check { name: "smp/no-stale-writable", run: no_stale_writable },
    super::Check { name: "smp/remote-write-protect", run: remote_write_protect },
    super::Check { name: "smp/pt-write-race", run: pt_write_race },
    super::Check { name: "smp/concurrent-mode-walks", run: concurrent_mode_walks },
];

/// The checks that find the processors, start the APs and bring them
/// online in long mode (also run before `bench=ctxsw-smp`).
pub const START_UP: [&str; 4] = ["smp/processors", "smp/start-aps", "smp/real-mode-beside-long", "smp/aps-online"];

/// What the `smp/...` checks found and built, in [`Ctx::smp`].
#[derive(Clone, Copy, Debug)]
pub struct SmpRun {
    /// The processor table.
    pub cpus: CpuList,
    /// The BSP's APIC ID.
    pub bsp_id: u32,
    /// APs started (CPU indices 1..=aps).
    pub aps: usize,
    /// The APs reached long mode.
    pub online: bool,
    /// The start-up vector.
    pub vector: u8,
    /// The tables of `smp/shared-tables` (for the later checks).
    pub tables: Option<Tables>,
}

/// Per-CPU CR3s sharing one PDPT (PML4 entry 1) and its tables.
#[derive(Clone, Copy, Debug)]
pub struct Tables {
    /// The PML4 of CPU i (index = CPU index).
    pub pml4: [u64; smp::MAX_CPUS],
    /// The shared PT mapping [`PAGES`] pages at [`VA0`].
    pub pt: u64,
    /// The data frames mapped at page k (0 where not present).
    pub frames: [u64; PAGES],
    /// The builder (frames in [40, 56) MiB).
    pub b: Builder,
}

/// Pages mapped by the shared PT.
pub const PAGES: usize = 8;
/// The first shared page: PML4 entry 1.
pub const VA0: u64 = TEST_VA_START;
/// Where the SMP checks take frames: away from the earlier checks' tables
/// and the APs' mode walk (which takes them from the end of the image).
const FRAMES: (u64, u64) = (40 << 20, 56 << 20);
/// INIT to start-up IPI: 10 ms on real processors (SDM Vol. 3A 9.4.4.1,
/// MP specification B.4); emulators need none.
const INIT_DELAY: u64 = 200_000;
/// Polls for an AP's answer to a start-up IPI before the second one.
const SIPI_WAIT: u64 = 4_000_000;

fn va(k: usize) -> u64 {
    VA0 + 4096 * k as u64
}

/// The run so far, or why this check cannot run.
fn run_state(ctx: &mut Ctx<'_>, d: &mut Detail, need_online: bool) -> Result<SmpRun, Outcome> {
    let Some(run) = ctx.smp else {
        let _ = write!(d, "smp/processors found no processors to use");
        return Err(Outcome::Skip);
    };
    if run.aps == 0 {
        let _ = write!(d, "one processor: nothing to run beside it");
        return Err(Outcome::Skip);
    }
    if need_online && !run.online {
        let _ = write!(d, "the APs did not reach long mode (smp/real-mode-beside-long)");
        return Err(Outcome::Fail);
    }
    Ok(run)
}

fn fail(d: &mut Detail, args: core::fmt::Arguments<'_>) -> Outcome {
    let _ = d.write_fmt(args);
    Outcome::Fail
}

/// `smp/processors`: the processor table (ACPI MADT, else the MP table)
/// lists the BSP, whose IA32_APIC_BASE has EN and BSP set (SDM Vol. 3A
/// 11.4.4); with `cpus=N` it lists N enabled processors.
fn processors(ctx: &mut Ctx<'_>, d: &mut Detail) -> Outcome {
    if !ctx.config.smp {
        let _ = write!(d, "smp=0 on the command line");
        return Outcome::Skip;
    }
    let Some(smp) = ctx.m.smp() else {
        let _ = write!(d, "this machine offers no second processor interface");
        return Outcome::Skip;
    };
    smp.apic_enable();
    let bsp_id = smp.apic_id();
    let base = smp.apic_base();
    CPUS[0].apic_id.store(bsp_id, SeqCst);
    CPUS[0].online.store(true, SeqCst);
    let cpus = match shared::acpi::find_cpus(&*ctx.m, None) {
        Ok(c) => c,
        // Bare on a UEFI machine the RSDP is in the EFI configuration
        // table, which a Multiboot 1 kernel is not given (ACPI 6.5 5.2.5.2):
        // nothing to start the APs from. Quadrant always gives the guest
        // its tables, and `cpus=N` says there are processors to find.
        Err(shared::acpi::AcpiError::NoTables) if !ctx.signature.is_quadrant() && ctx.config.cpus.is_none() => {
            let _ = write!(d, "{}: no processor table reachable (a UEFI machine gives a Multiboot 1 kernel no RSDP)", shared::acpi::AcpiError::NoTables);
            return Outcome::Skip;
        }
        Err(e) => return fail(d, format_args!("{e}")),
    };
    let _ = write!(d, "{} processors ({:?}) APIC IDs {:?}; BSP APIC ID {bsp_id}, IA32_APIC_BASE {base:#x}", cpus.count, cpus.source, cpus.ids());
    if !cpus.ids().contains(&bsp_id) {
        return fail(d, format_args!("; the BSP is not in the table"));
    }
    if base & (APIC_BASE_BSP | APIC_BASE_EN) != APIC_BASE_BSP | APIC_BASE_EN {
        return fail(d, format_args!("; expected EN and BSP set"));
    }
    if let Some(n) = ctx.config.cpus {
        if cpus.count != n as usize {
            return fail(d, format_args!("; the command line says cpus={n}"));
        }
    }
    ctx.smp = Some(SmpRun { cpus, bsp_id, aps: 0, online: false, vector: 0, tables: None });
    Outcome::Pass
}

/// A free page below 1 MiB for the AP trampoline: available RAM in the
/// memory map, outside the boot structures and the mode engine's window.
fn trampoline_page(ctx: &Ctx<'_>) -> Option<u64> {
    let map = ctx.map?;
    (0x10..0x9F_u64).map(|i| i << 12).find(|&p| {
        let r = crate::machine::Range::new(p, p + 4096);
        map.available_covers(r)
            && !ctx.exclusions.ranges().iter().any(|x| x.overlaps(&r))
            && !crate::modes::layout::LOW.overlaps(&r)
    })
}

/// `smp/start-aps`: each AP answers INIT and a start-up IPI with vector V
/// by running real-mode code at V << 12 with CS = V << 8 and CR0.PE = 0
/// (SDM Vol. 3A 9.4.4.1; 9.1.1 Table 9-1), which records what it sees.
fn start_aps(ctx: &mut Ctx<'_>, d: &mut Detail) -> Outcome {
    let Some(mut run) = ctx.smp else {
        let _ = write!(d, "smp/processors found no processors to use");
        return Outcome::Skip;
    };
    let aps: [u32; smp::MAX_CPUS] = core::array::from_fn(|i| {
        run.cpus.ids().iter().filter(|&&id| id != run.bsp_id).nth(i).copied().unwrap_or(u32::MAX)
    });
    let n = aps.iter().take_while(|&&id| id != u32::MAX).count().min(smp::MAX_CPUS - 1);
    if n == 0 {
        let _ = write!(d, "one processor: nothing to start");
        return Outcome::Skip;
    }
    let Some(page) = trampoline_page(ctx) else {
        return fail(d, format_args!("no free page below 1 MiB for the start-up code"));
    };
    let Some(smp) = ctx.m.smp() else { return Outcome::Skip };
    let vec = smp.install_trampoline(page);
    for (k, &id) in aps[..n].iter().enumerate() {
        smp.send_ipi(Icr::init(id));
        smp.delay(INIT_DELAY);
        let mut answered = false;
        for _ in 0..2 {
            smp.send_ipi(Icr::startup(vec, id));
            for _ in 0..SIPI_WAIT {
                if smp.trampoline_tickets() > k as u32 {
                    answered = true;
                    break;
                }
                smp.delay(1);
            }
            if answered {
                break;
            }
        }
        if !answered {
            return fail(d, format_args!("the processor with APIC ID {id} did not answer INIT and two start-up IPIs (vector {vec:#x})"));
        }
    }
    let _ = write!(d, "{n} APs started with vector {vec:#x}:");
    for t in 0..n as u32 {
        let Some(r) = smp.real_mode_record(t) else {
            return fail(d, format_args!(" AP {t} wrote no real-mode record"));
        };
        let _ = write!(d, " CS={:#x} MSW={:#x}", r.cs, r.msw);
        if r.cs != u16::from(vec) << 8 || r.msw & 1 != 0 {
            return fail(d, format_args!(" (expected CS={:#x}, CR0.PE=0)", u16::from(vec) << 8));
        }
        CPUS[t as usize + 1].apic_id.store(aps[t as usize], SeqCst);
    }
    smp::COUNT.store(n as u32 + 1, SeqCst);
    run.aps = n;
    run.vector = vec;
    ctx.smp = Some(run);
    Outcome::Pass
}

/// `smp/real-mode-beside-long`: while the APs wait in real mode (CR0.PE = 0
/// in their records, not yet released) the BSP runs in long mode (CR0.PG =
/// 1, EFER.LMA = 1); under Quadrant the shadow page cache has a real-mode
/// (glevels 0) and a long-mode (glevels 4) root loaded at that moment.
/// Then the APs go on to long mode and report online.
fn real_mode_beside_long(ctx: &mut Ctx<'_>, d: &mut Detail) -> Outcome {
    let mut run = match run_state(ctx, d, false) {
        Ok(r) => r,
        Err(o) => return o,
    };
    let (cr0, efer) = (ctx.m.cr0(), ctx.m.efer());
    let stats = if super::cache::has_stats(ctx) { ctx.m.mmu_stats() } else { None };
    let Some(smp) = ctx.m.smp() else { return Outcome::Skip };
    let held = (0..run.aps as u32).all(|t| smp.real_mode_record(t).is_some_and(|r| r.msw & 1 == 0 && !r.released));
    let _ = write!(d, "{} APs in real mode (PE=0, held: {held}) while the BSP runs with CR0={cr0:#x} EFER={efer:#x}", run.aps);
    if !held || cr0 & crate::regs::CR0_PG == 0 || efer & crate::regs::EFER_LMA == 0 {
        return fail(d, format_args!("; expected the APs held in real mode and CR0.PG=1, EFER.LMA=1"));
    }
    if let Some(s) = stats {
        let _ = write!(d, "; loaded shadow roots' glevels {:#x}", s.loaded_glevels);
        if s.loaded_glevels & 0b1_0001 != 0b1_0001 {
            return fail(d, format_args!(" (expected real mode (bit 0) and long mode (bit 4) at once)"));
        }
    }
    smp.release_aps();
    let mut polls = 0u64;
    while !(1..=run.aps).all(|i| CPUS[i].online.load(SeqCst)) {
        if polls == smp::BUDGET {
            return fail(d, format_args!("; released, but not every AP came online in long mode"));
        }
        smp.delay(16);
        polls += 1;
    }
    run.online = true;
    ctx.smp = Some(run);
    Outcome::Pass
}

/// The [`Job::Hello`] answer: APIC ID, initial APIC ID (CPUID.01H:EBX[31:24],
/// SDM Vol. 2A CPUID), IA32_APIC_BASE.BSP, EFER.LMA, packed.
fn hello(m: &mut dyn Machine) -> u64 {
    let initial = u64::from(m.cpuid(1, 0).ebx >> 24);
    let lma = m.efer() & crate::regs::EFER_LMA != 0;
    let Some(smp) = m.smp() else { return u64::MAX };
    let id = u64::from(smp.apic_id());
    let bsp = smp.apic_base() & APIC_BASE_BSP != 0;
    (id & 0xffff_ffff) | ((initial & 0xff) << 32) | (u64::from(bsp) << 40) | (u64::from(lma) << 41)
}

/// `smp/aps-online`: every AP runs in long mode (EFER.LMA = 1), with the
/// APIC ID the table listed, the same initial APIC ID in CPUID, and
/// IA32_APIC_BASE.BSP clear (SDM Vol. 3A 11.4.4, 9.4.1).
fn aps_online(ctx: &mut Ctx<'_>, d: &mut Detail) -> Outcome {
    let run = match run_state(ctx, d, true) {
        Ok(r) => r,
        Err(o) => return o,
    };
    for cpu in 1..=run.aps {
        let Some(r) = smp::run_on(ctx.m, cpu, Job::Hello, &[]) else {
            return fail(d, format_args!("CPU {cpu} did not answer"));
        };
        let (id, initial, bsp, lma) = (r as u32, (r >> 32) as u8, r >> 40 & 1 != 0, r >> 41 & 1 != 0);
        let want = CPUS[cpu].apic_id.load(SeqCst);
        let _ = write!(d, "cpu{cpu} APIC ID {id} (CPUID {initial}) ");
        if id != want || u32::from(initial) != id & 0xff || bsp || !lma {
            return fail(d, format_args!("; expected APIC ID {want} in both, BSP flag 0, EFER.LMA 1 (BSP={bsp} LMA={lma})"));
        }
    }
    Outcome::Pass
}

/// Sends `n` PINGs to every AP and has every AP send `n` back; counts what
/// each CPU took. Fixed interrupts are delivered once each (SDM Vol. 3A
/// 11.6.1, 11.8.4).
fn ping_round_trips(ctx: &mut Ctx<'_>, d: &mut Detail, aps: usize, n: u32) -> Outcome {
    let bsp_before = CPUS[0].irq_count(vector::PING);
    for cpu in 1..=aps {
        let before = CPUS[cpu].irq_count(vector::PING);
        let id = CPUS[cpu].apic_id.load(SeqCst);
        let Some(smp) = ctx.m.smp() else { return Outcome::Skip };
        // One at a time (SDM Vol. 3A 11.8.4: a vector already requested
        // is not requested twice).
        for k in 1..=n {
            smp.send_ipi(Icr::fixed(vector::PING, id));
            let mut polls = 0u64;
            while CPUS[cpu].irq_count(vector::PING) < before + k && polls < smp::BUDGET {
                smp.delay(16);
                polls += 1;
            }
        }
        let got = CPUS[cpu].irq_count(vector::PING) - before;
        let _ = write!(d, " cpu{cpu} took {got}/{n};");
        if got != n {
            return fail(d, format_args!(" expected each PING once"));
        }
        // The AP sends n PINGs back while the BSP opens interrupt windows.
        let target = smp::post(ctx.m, cpu, Job::PingBack, &[u64::from(CPUS[0].apic_id.load(SeqCst)), u64::from(n)]);
        let Some(smp) = ctx.m.smp() else { return Outcome::Skip };
        let mut polls = 0u64;
        while CPUS[cpu].done.load(SeqCst) < target && polls < smp::BUDGET {
            smp.interrupt_window();
            smp.delay(16);
            polls += 1;
        }
        for _ in 0..1000 {
            smp.interrupt_window();
        }
    }
    let back = CPUS[0].irq_count(vector::PING) - bsp_before;
    let _ = write!(d, " the BSP took {back}/{}", n * aps as u32);
    if back != n * aps as u32 {
        return fail(d, format_args!(": expected each PING once"));
    }
    Outcome::Pass
}

/// `smp/ipi-xapic`: fixed IPIs through the xAPIC ICR (MMIO, SDM Vol. 3A
/// 11.6.1) from the BSP to each AP and back, each taken exactly once.
fn ipi_xapic(ctx: &mut Ctx<'_>, d: &mut Detail) -> Outcome {
    let run = match run_state(ctx, d, true) {
        Ok(r) => r,
        Err(o) => return o,
    };
    let Some(smp) = ctx.m.smp() else { return Outcome::Skip };
    if smp.is_x2apic() {
        let _ = write!(d, "the BSP's APIC is in x2APIC mode already");
        return Outcome::Skip;
    }
    let _ = write!(d, "xAPIC:");
    ping_round_trips(ctx, d, run.aps, 3)
}

/// `smp/ipi-x2apic`: every CPU switches its APIC to x2APIC mode (SDM Vol. 3A
/// 11.12.1: EXTD set, the 32-bit ID in MSR 0x802 equal to the xAPIC ID for
/// IDs below 255, 11.12.5.1), then fixed IPIs through the ICR MSR 0x830,
/// each taken exactly once. SKIP where CPUID.01H:ECX.x2APIC is clear.
fn ipi_x2apic(ctx: &mut Ctx<'_>, d: &mut Detail) -> Outcome {
    let run = match run_state(ctx, d, true) {
        Ok(r) => r,
        Err(o) => return o,
    };
    if ctx.m.cpuid(1, 0).ecx & CPUID1_ECX_X2APIC == 0 {
        let _ = write!(d, "no x2APIC on this CPU model (CPUID.01H:ECX bit 21 = 0)");
        return Outcome::Skip;
    }
    for cpu in 0..=run.aps {
        let (ok, base, id) = if cpu == 0 {
            let Some(smp) = ctx.m.smp() else { return Outcome::Skip };
            let ok = smp.enable_x2apic();
            (ok, smp.apic_base(), smp.apic_id())
        } else {
            let r = smp::run_on(ctx.m, cpu, Job::X2apic, &[]).unwrap_or(0);
            (r & 1 != 0, r & (APIC_BASE_EN | APIC_BASE_EXTD), (r >> 32) as u32)
        };
        let want = CPUS[cpu].apic_id.load(SeqCst);
        let _ = write!(d, "cpu{cpu} ID {id};");
        if !ok || base & (APIC_BASE_EN | APIC_BASE_EXTD) != APIC_BASE_EN | APIC_BASE_EXTD || id != want {
            return fail(d, format_args!(" expected x2APIC mode (EN, EXTD) with APIC ID {want}"));
        }
    }
    let _ = write!(d, " x2APIC:");
    ping_round_trips(ctx, d, run.aps, 3)
}

/// `smp/restart-x2apic`: in x2APIC mode, INIT and a start-up IPI through
/// the ICR MSR (SDM Vol. 3A 11.12.9: the ICR is one 64-bit MSR, 0x830)
/// restart a running AP: INIT sends it to wait-for-SIPI, the start-up IPI
/// runs the real-mode code again (a fresh record: CS = vector << 8, PE = 0)
/// and it comes back online in long mode, still in x2APIC mode (INIT keeps
/// it, 11.12.5.1). SKIP where the CPUs are not in x2APIC mode.
fn restart_x2apic(ctx: &mut Ctx<'_>, d: &mut Detail) -> Outcome {
    let run = match run_state(ctx, d, true) {
        Ok(r) => r,
        Err(o) => return o,
    };
    let Some(smp) = ctx.m.smp() else { return Outcome::Skip };
    if !smp.is_x2apic() {
        let _ = write!(d, "the CPUs are not in x2APIC mode (smp/ipi-x2apic)");
        return Outcome::Skip;
    }
    let cpu = run.aps;
    let id = CPUS[cpu].apic_id.load(SeqCst);
    CPUS[cpu].online.store(false, SeqCst);
    smp.reuse_ticket(cpu as u32 - 1);
    smp.send_ipi(Icr::init(id));
    smp.delay(INIT_DELAY);
    smp.send_ipi(Icr::startup(run.vector, id));
    let mut polls = 0u64;
    while !CPUS[cpu].online.load(SeqCst) && polls < smp::BUDGET {
        smp.delay(16);
        polls += 1;
    }
    let record = smp.real_mode_record(cpu as u32 - 1);
    let _ = write!(d, "cpu{cpu} (APIC ID {id}) after INIT + SIPI through MSR 0x830: record {record:?}");
    let want_cs = u16::from(run.vector) << 8;
    if !CPUS[cpu].online.load(SeqCst) || !record.is_some_and(|r| r.cs == want_cs && r.msw & 1 == 0) {
        return fail(d, format_args!("; expected it back online after real mode at CS={want_cs:#x}, PE=0"));
    }
    match smp::run_on(ctx.m, cpu, Job::X2apic, &[]) {
        Some(r) if r & APIC_BASE_EXTD != 0 && (r >> 32) as u32 == id => Outcome::Pass,
        r => fail(d, format_args!("; expected x2APIC mode kept with APIC ID {id} (got {r:?})")),
    }
}

/// Builds the shared tables: per-CPU PML4s whose entry 1 is one shared
/// PDPT, a PD and a PT mapping [`PAGES`] data frames at [`VA0`] (page 5
/// not present).
fn build_tables(ctx: &mut Ctx<'_>, cpus: usize) -> Result<Tables, long::BuildError> {
    let map = ctx.map.ok_or(long::BuildError::NoFrames)?;
    let frames = Frames::new(&map, &ctx.exclusions, FRAMES.0, FRAMES.1);
    let mut b = Builder::new(ctx.m, frames);
    let pml4_0 = b.pml4(ctx.m)?;
    let pt = b.table(ctx.m, pml4_0, VA0, 1)?;
    let mut t = Tables { pml4: [0; smp::MAX_CPUS], pt, frames: [0; PAGES], b };
    t.pml4[0] = pml4_0;
    for k in 0..PAGES {
        let f = t.b.data(ctx.m)?;
        t.frames[k] = f;
        if k != 5 {
            Builder::put(ctx.m, pt + 8 * k as u64, entry64(f, KRW))?;
        }
    }
    let shared_pdpt = ctx.m.scratch_read(pml4_0 + 8).ok_or(long::BuildError::Refused(pml4_0 + 8))?;
    for cpu in 1..cpus {
        let p = t.b.pml4(ctx.m)?;
        Builder::put(ctx.m, p + 8, shared_pdpt)?;
        t.pml4[cpu] = p;
    }
    Ok(t)
}

/// Reads every present shared page under the loaded CR3: mismatches.
fn read_pages(m: &mut dyn Machine, frames: &[u64; PAGES], skip: usize) -> u32 {
    (0..PAGES).filter(|&k| k != skip && long::expect_frame(m, va(k), frames[k]).is_err()).count() as u32
}

/// Waits (taking interrupts) until `SYNC[i]` reaches `v`.
fn wait_sync(m: &mut dyn Machine, i: usize, v: u64) -> bool {
    let Some(smp) = m.smp() else { return false };
    for _ in 0..smp::BUDGET {
        if SYNC[i].load(SeqCst) >= v {
            return true;
        }
        smp.interrupt_window();
        smp.delay(8);
    }
    false
}

/// Sends a TLB shootdown of `addr` to every AP and waits for the acks.
fn shootdown(m: &mut dyn Machine, aps: usize, addr: u64) -> bool {
    for cpu in 1..=aps {
        let before = CPUS[cpu].shootdown_acks.load(SeqCst);
        CPUS[cpu].shootdown_va.store(addr, SeqCst);
        let Some(smp) = m.smp() else { return false };
        smp.send_ipi(Icr::fixed(vector::SHOOTDOWN, CPUS[cpu].apic_id.load(SeqCst)));
        let mut polls = 0;
        while CPUS[cpu].shootdown_acks.load(SeqCst) == before {
            if polls == smp::BUDGET {
                return false;
            }
            smp.delay(16);
            polls += 1;
        }
    }
    true
}

/// CR0.WP on this CPU (through the long-mode harness).
fn set_wp(m: &mut dyn Machine, on: bool) {
    if let Some(l) = m.long_cpu() {
        l.set_cr0_wp(on);
    }
}

fn reset_sync() {
    for s in &SYNC {
        s.store(0, SeqCst);
    }
}

/// `smp/shared-tables`: each CPU runs on its own PML4 whose entry 1 is one
/// shared PDPT: every CPU reads the same frames through the shared tables.
/// The BSP then remaps page 3 and, after INVLPG on every CPU (its own and
/// one per AP through a shootdown IPI), every CPU reads the new frame (SDM
/// Vol. 3A 4.10.4.1); it also makes the not-present page 5 present, which
/// every CPU sees with no INVLPG at all (4.10.2.3: no TLB entry exists for
/// a not-present translation).
fn shared_tables(ctx: &mut Ctx<'_>, d: &mut Detail) -> Outcome {
    let mut run = match run_state(ctx, d, true) {
        Ok(r) => r,
        Err(o) => return o,
    };
    let mut t = match build_tables(ctx, run.aps + 1) {
        Ok(t) => t,
        Err(e) => return fail(d, format_args!("building the tables: {e:?}")),
    };
    reset_sync();
    let home = ctx.m.cr3();
    if !ctx.m.load_cr3(t.pml4[0]) {
        return fail(d, format_args!("MOV CR3 {:#x} refused", t.pml4[0]));
    }
    let before = read_pages(ctx.m, &t.frames, 5);
    let new3 = match t.b.data(ctx.m) {
        Ok(f) => f,
        Err(e) => return fail(d, format_args!("{e:?}")),
    };
    let mut targets = [0u32; smp::MAX_CPUS];
    for cpu in 1..=run.aps {
        targets[cpu] = smp::post(ctx.m, cpu, Job::HoldPages, &[t.pml4[cpu], new3, t.frames[5], 0, 0, 0]);
    }
    if !wait_sync(ctx.m, 0, run.aps as u64) {
        ctx.m.load_cr3(home);
        return fail(d, format_args!("not every AP loaded its CR3 and read the pages"));
    }
    // Remap page 3, INVLPG here and on every AP.
    let ok = Builder::put(ctx.m, t.pt + 8 * 3, entry64(new3, KRW)).is_ok()
        && Builder::put(ctx.m, t.pt + 8 * 5, entry64(t.frames[5], KRW)).is_ok();
    ctx.m.invlpg(va(3));
    let acked = ok && shootdown(ctx.m, run.aps, va(3));
    t.frames[3] = new3;
    SYNC[1].store(1, SeqCst);
    let mut bad = before + read_pages(ctx.m, &t.frames, usize::MAX);
    let _ = write!(d, "BSP + {} APs on their own PML4s, shared PDPT", run.aps);
    for cpu in 1..=run.aps {
        let r = smp::wait(ctx.m, cpu, targets[cpu], smp::BUDGET).unwrap_or(u64::MAX);
        let _ = write!(d, "; cpu{cpu} mismatches {}/{}/{}", r & 0xff, (r >> 8) & 0xff, (r >> 16) & 0xff);
        bad += (r & 0xff_ffff != 0) as u32;
    }
    ctx.m.load_cr3(home);
    run.tables = Some(t);
    ctx.smp = Some(run);
    if !acked || bad != 0 {
        return fail(d, format_args!("; expected every read right (shootdowns acked: {acked}, BSP mismatches {bad})"));
    }
    Outcome::Pass
}

/// `smp/no-stale-writable`: with CR0.WP = 1 on both CPUs, an AP writes a
/// shared page (its TLB now holds a writable translation); the BSP clears
/// RW in the PTE, executes INVLPG and sends a shootdown that makes the AP
/// execute INVLPG; from then on a write by either CPU faults with error
/// code 0x3 (present, write, supervisor; SDM Vol. 3A 4.6.1: with CR0.WP = 1
/// supervisor writes honour R/W; 4.7) and CR2 = the address.
fn no_stale_writable(ctx: &mut Ctx<'_>, d: &mut Detail) -> Outcome {
    let run = match run_state(ctx, d, true) {
        Ok(r) => r,
        Err(o) => return o,
    };
    let Some(t) = run.tables else { return fail(d, format_args!("smp/shared-tables built no tables")) };
    reset_sync();
    let page = 6;
    let target = smp::post(ctx.m, 1, Job::StaleWritable, &[t.pml4[1], va(page), 0, 0, 0, 0]);
    if !wait_sync(ctx.m, 0, 1) {
        return fail(d, format_args!("CPU 1 did not write the page"));
    }
    if Builder::put(ctx.m, t.pt + 8 * page as u64, entry64(t.frames[page], P)).is_err() {
        return fail(d, format_args!("clearing RW refused"));
    }
    ctx.m.invlpg(va(page));
    let acked = shootdown(ctx.m, 1, va(page));
    SYNC[1].store(1, SeqCst);
    let r = smp::wait(ctx.m, 1, target, smp::BUDGET).unwrap_or(u64::MAX);
    let home = ctx.m.cr3();
    ctx.m.load_cr3(t.pml4[0]);
    set_wp(ctx.m, true);
    let Some(smp) = ctx.m.smp() else { return Outcome::Skip };
    let mine = smp.probe_write(va(page), 0x5157);
    set_wp(ctx.m, false);
    ctx.m.load_cr3(home);
    let want = (14u8, 0x3u64, va(page));
    let _ = write!(d, "cpu1: {}; BSP: {mine:?}", if r == 0 { "#PF 0x3 at the page" } else { "wrong" });
    if !acked || r != 0 || mine != Err(want) {
        return fail(d, format_args!("; expected #PF error code 0x3, CR2 {:#x} on both (AP result {r:#x}, acked {acked})", va(page)));
    }
    Outcome::Pass
}

/// PML4 entry 2: the AP's writable data mapping of the future page table.
const WP_ALIAS: u64 = TEST_VA_START + 2 * long::span(4);
/// PML4 entry 3: the BSP's mapping through it.
const WP_VIEW: u64 = TEST_VA_START + 3 * long::span(4);
/// The entry of the page table the AP rewrites.
const WP_ENTRY: u64 = 7;

/// `smp/remote-write-protect`: CPU 1 maps frame T as a writable data page
/// and writes it (its TLB caches the writable translation), then waits. The
/// BSP makes T a page table (PML4 entry 3 -> ... -> T) and reads through
/// entry 7 of it (frame F1). CPU 1 then rewrites entry 7 through its data
/// mapping to frame F2. After MOV CR3, the BSP reads through entry 7 again
/// and must see F2 (SDM Vol. 3A 4.10.4.1: MOV CR3 invalidates every
/// non-global translation; the walk reads the entry from memory). A shadow
/// MMU that write-protects T without flushing CPU 1's TLB lets the write
/// through untrapped and keeps F1 (KVM's remote TLB flush after write
/// protection).
fn remote_write_protect(ctx: &mut Ctx<'_>, d: &mut Detail) -> Outcome {
    let run = match run_state(ctx, d, true) {
        Ok(r) => r,
        Err(o) => return o,
    };
    let Some(mut t) = run.tables else { return fail(d, format_args!("smp/shared-tables built no tables")) };
    let built = (|| -> Result<(u64, u64, u64, u64, u64), long::BuildError> {
        let table = t.b.zeroed(ctx.m)?;
        let (f1, f2) = (t.b.data(ctx.m)?, t.b.data(ctx.m)?);
        Builder::put(ctx.m, table + 8 * WP_ENTRY, entry64(f1, KRW))?;
        let ap = t.b.pml4(ctx.m)?;
        t.b.map(ctx.m, ap, WP_ALIAS, table, KRW)?;
        let shared_pdpt = ctx.m.scratch_read(t.pml4[1] + 8).unwrap_or(0);
        Builder::put(ctx.m, ap + 8, shared_pdpt)?;
        let bsp = t.b.pml4(ctx.m)?;
        let pd = t.b.table(ctx.m, bsp, WP_VIEW, 2)?;
        Builder::put(ctx.m, pd + 8 * long::index(WP_VIEW, 2) as u64, entry64(table, KRW))?;
        Ok((table, f1, f2, ap, bsp))
    })();
    let (table, f1, f2, ap, bsp) = match built {
        Ok(v) => v,
        Err(e) => return fail(d, format_args!("building: {e:?}")),
    };
    let on = super::cache::has_stats(ctx);
    let before = super::cache::stats(ctx.m, on);
    reset_sync();
    let new_entry = entry64(f2, KRW);
    let target = smp::post(ctx.m, 1, Job::RemoteWp, &[ap, WP_ALIAS, WP_ENTRY, new_entry, 0, 0]);
    if !wait_sync(ctx.m, 0, 1) {
        let r = smp::wait(ctx.m, 1, target, 1);
        return fail(d, format_args!("CPU 1 did not write the frame (job result {r:?})"));
    }
    let home = ctx.m.cr3();
    ctx.m.load_cr3(bsp);
    let view = WP_VIEW + 4096 * WP_ENTRY;
    let first = long::expect_frame(ctx.m, view, f1);
    SYNC[1].store(1, SeqCst);
    let r = smp::wait(ctx.m, 1, target, smp::BUDGET);
    ctx.m.load_cr3(bsp);
    let second = long::expect_frame(ctx.m, view, f2);
    ctx.m.load_cr3(home);
    let shown = |r: &Result<(), long::Wrong>| {
        let mut t = Detail::new();
        let _ = match r {
            Ok(()) => write!(t, "right"),
            Err(w) => write!(t, "{w}"),
        };
        t
    };
    // Under Quadrant, first (a detail holds 160 bytes): a recycle in the
    // window flushes every vCPU anyway and would hide a missing remote
    // flush, so the detail shows how many there were.
    if let (Some(a), Some(b)) = (before, super::cache::stats(ctx.m, on)) {
        let x = super::cache::delta(&a, &b);
        let _ = write!(d, "mmu rec+{} remote-flush+{}; ", x.recycles, x.remote_flushes);
    }
    let _ = write!(
        d,
        "T={table:#x}: before, {}; cpu1 rewrote entry {WP_ENTRY} via its data mapping ({}); after MOV CR3, {}",
        shown(&first).as_str(),
        if r == Some(0) { "done" } else { "failed" },
        shown(&second).as_str()
    );
    if first.is_err() || second.is_err() || r != Some(0) {
        return fail(d, format_args!("; expected F1={f1:#x} then F2={f2:#x}"));
    }
    run_with_tables(ctx, run, t);
    Outcome::Pass
}

fn run_with_tables(ctx: &mut Ctx<'_>, mut run: SmpRun, t: Tables) {
    run.tables = Some(t);
    ctx.smp = Some(run);
}

/// Rounds of remapping per CPU in `smp/pt-write-race`.
const RACE_ROUNDS: u64 = 6;
/// Entries per CPU.
const RACE_ENTRIES: usize = 4;
/// LOCK CMPXCHG increments per CPU.
const RACE_INCREMENTS: u64 = 16;
/// PD entry 1 of the shared tree: the race's page table.
const RACE_VA: u64 = VA0 + long::span(2);
/// Page 8 of the shared PT: the race table as data (for the writes).
const RACE_ALIAS: u64 = VA0 + 8 * 4096;

/// `smp/pt-write-race`: every CPU at once rewrites its own entries of one
/// shared page table (through a data mapping of it), executes INVLPG and
/// reads each page back, alternating between two frames per entry; and
/// increments a counter kept in a not-present entry of the same table with
/// LOCK CMPXCHG. Every read shows the frame just mapped (SDM Vol. 3A
/// 4.10.4.1) and the counter ends at CPUs x increments (LOCK makes the
/// compare-exchange atomic, Vol. 3A 9.1.2.2).
fn pt_write_race(ctx: &mut Ctx<'_>, d: &mut Detail) -> Outcome {
    let run = match run_state(ctx, d, true) {
        Ok(r) => r,
        Err(o) => return o,
    };
    let Some(mut t) = run.tables else { return fail(d, format_args!("smp/shared-tables built no tables")) };
    let cpus = run.aps + 1;
    let built = (|| -> Result<(u64, u64), long::BuildError> {
        let table = t.b.zeroed(ctx.m)?;
        let pd = t.b.table(ctx.m, t.pml4[0], VA0, 2)?;
        Builder::put(ctx.m, pd + 8 * long::index(RACE_VA, 2) as u64, entry64(table, KRW))?;
        Builder::put(ctx.m, t.pt + 8 * 8, entry64(table, KRW))?;
        // Two frames per entry, found by the CPUs at table[256 + 2 * i].
        for i in 0..cpus * RACE_ENTRIES {
            let (a, b) = (t.b.data(ctx.m)?, t.b.data(ctx.m)?);
            Builder::put(ctx.m, table + 8 * (256 + 2 * i as u64), a)?;
            Builder::put(ctx.m, table + 8 * (257 + 2 * i as u64), b)?;
        }
        Ok((table, pd))
    })();
    let (table, _) = match built {
        Ok(v) => v,
        Err(e) => return fail(d, format_args!("building: {e:?}")),
    };
    let mut targets = [0u32; smp::MAX_CPUS];
    for cpu in 1..cpus {
        targets[cpu] = smp::post(ctx.m, cpu, Job::PtRace, &[t.pml4[cpu], table, cpu as u64, 0, 0, 0]);
    }
    let home = ctx.m.cr3();
    let mine = race_part(ctx.m, t.pml4[0], table, 0);
    ctx.m.load_cr3(home);
    let mut bad = mine;
    let _ = write!(d, "{cpus} CPUs x {RACE_ENTRIES} entries x {RACE_ROUNDS} rounds: cpu0 {mine} wrong");
    for cpu in 1..cpus {
        let r = smp::wait(ctx.m, cpu, targets[cpu], smp::BUDGET).unwrap_or(u64::MAX);
        let _ = write!(d, ", cpu{cpu} {r} wrong");
        bad = bad.saturating_add(r);
    }
    let counter = ctx.m.scratch_read(table + 8 * 511).unwrap_or(0) >> 12;
    let want = cpus as u64 * RACE_INCREMENTS;
    let _ = write!(d, "; counter {counter}/{want}");
    run_with_tables(ctx, run, t);
    if bad != 0 || counter != want {
        return fail(d, format_args!("; expected every read right and the counter exact"));
    }
    Outcome::Pass
}

/// One CPU's part of the race: returns the wrong reads (u64::MAX when the
/// CR3 was refused).
fn race_part(m: &mut dyn Machine, cr3: u64, table: u64, cpu: usize) -> u64 {
    if !m.load_cr3(cr3) {
        return u64::MAX;
    }
    let mut wrong = 0;
    for round in 0..RACE_ROUNDS {
        for e in 0..RACE_ENTRIES {
            let i = (cpu * RACE_ENTRIES + e) as u64;
            let frame = m.scratch_read(table + 8 * (256 + 2 * i + (round & 1))).unwrap_or(0);
            let entry_va = RACE_ALIAS + 8 * i;
            let page_va = RACE_VA + 4096 * i;
            if !m.linear_write(entry_va, entry64(frame, KRW)) {
                wrong += 1;
                continue;
            }
            m.invlpg(page_va);
            wrong += long::expect_frame(m, page_va, frame).is_err() as u64;
        }
    }
    let counter_va = RACE_ALIAS + 8 * 511;
    for _ in 0..RACE_INCREMENTS {
        loop {
            let old = m.linear_read(counter_va).unwrap_or(0);
            let Some(smp) = m.smp() else { return u64::MAX };
            if smp.cmpxchg(counter_va, old, old + (1 << 12)) == old {
                break;
            }
        }
    }
    wrong
}

/// Polls between the BSP's rounds in `smp/concurrent-mode-walks` with
/// `light=1`: about 3M PAUSEs, a few times the cost of one audited exit.
const WALK_GAP_LIGHT: u64 = 200_000;
/// What one BSP round (a CR3 switch and 8 reads) counts for against
/// [`WALK_BUDGET`], in polls.
const WALK_ROUND_POLLS: u64 = 64;
/// Polls before `smp/concurrent-mode-walks` gives up on an AP: the APs run
/// a whole mode walk each, so several times a job's [`smp::BUDGET`].
const WALK_BUDGET: u64 = 8 * smp::BUDGET;

/// `smp/concurrent-mode-walks`: each AP in turn runs its own checks (the
/// mode walk through real mode, 32-bit, PAE and long mode and the named
/// 32-bit/PAE scenarios, reported as `cpuN/...`) while the BSP switches
/// between two long-mode address spaces and reads through both; every BSP
/// read is right. Under Quadrant the shadow page cache had roots of two
/// paging modes loaded at once while they ran.
fn concurrent_mode_walks(ctx: &mut Ctx<'_>, d: &mut Detail) -> Outcome {
    let run = match run_state(ctx, d, true) {
        Ok(r) => r,
        Err(o) => return o,
    };
    let Some(t) = run.tables else { return fail(d, format_args!("smp/shared-tables built no tables")) };
    if ctx.config.modes == Some(false) {
        let _ = write!(d, "modes=0 on the command line (no mode walk on the APs)");
        return Outcome::Skip;
    }
    smp::SEED.call_once(|| ctx.seed());
    let stats_on = super::cache::has_stats(ctx);
    let home = ctx.m.cr3();
    // light=1 (the audit run, where each of the BSP's exits is audited
    // under the MMU lock): the BSP waits between rounds so that the APs'
    // walks are not starved; it samples the loaded modes every round.
    let (gap, sample_every) = if ctx.config.light { (WALK_GAP_LIGHT, 1) } else { (1, 8) };
    let (mut loops, mut wrong, mut most_modes, mut polls) = (0u64, 0u64, 0u32, 0u64);
    let mut late = None;
    for cpu in 1..=run.aps {
        let target = smp::post(ctx.m, cpu, Job::Checks, &[]);
        while smp::wait(ctx.m, cpu, target, gap).is_none() {
            polls += gap + WALK_ROUND_POLLS;
            if polls > WALK_BUDGET {
                late = Some(cpu);
                break;
            }
            let cr3 = t.pml4[(loops % 2) as usize * cpu];
            ctx.m.load_cr3(cr3);
            wrong += u64::from(read_pages(ctx.m, &t.frames, usize::MAX));
            loops += 1;
            if stats_on && loops % sample_every == 0 {
                if let Some(s) = ctx.m.mmu_stats() {
                    most_modes = most_modes.max((s.loaded_glevels as u32).count_ones());
                }
            }
        }
        if late.is_some() {
            break;
        }
    }
    ctx.m.load_cr3(home);
    if let Some(cpu) = late {
        return fail(d, format_args!("cpu{cpu} did not finish its checks within the budget ({loops} BSP rounds)"));
    }
    let _ = write!(d, "{} APs ran their checks; the BSP did {loops} CR3 switches with reads, {wrong} wrong", run.aps);
    if stats_on {
        let _ = write!(d, "; most paging modes with loaded shadow roots at once: {most_modes}");
    }
    // Under Quadrant, an AP's mode walk leaves long mode while the BSP is in
    // it: two paging modes' roots are loaded at once.
    let walked = ctx.config.only.selects("modes/walk1/real");
    if wrong != 0 || (stats_on && walked && most_modes < 2) {
        return fail(d, format_args!("; expected every read right{}", if stats_on { " and two paging modes loaded at once" } else { "" }));
    }
    Outcome::Pass
}

/// An AP's side of the jobs above ([`smp::run_job`] dispatches here).
pub fn ap_job(m: &mut dyn Machine, job: Job, a: [u64; 6]) -> u64 {
    match job {
        Job::Hello => hello(m),
        Job::X2apic => {
            let Some(smp) = m.smp() else { return 0 };
            let ok = smp.enable_x2apic();
            let base = smp.apic_base();
            u64::from(ok) | (base & (APIC_BASE_EN | APIC_BASE_EXTD)) | (u64::from(smp.apic_id()) << 32)
        }
        Job::PingBack => {
            // One at a time: a vector already requested is not requested
            // twice (SDM Vol. 3A 11.8.4), so wait for each to be taken.
            let Some(smp) = m.smp() else { return 0 };
            let mut missed = 0;
            for _ in 0..a[1] {
                let before = CPUS[0].irq_count(vector::PING);
                smp.send_ipi(Icr::fixed(vector::PING, a[0] as u32));
                let mut polls = 0u64;
                while CPUS[0].irq_count(vector::PING) == before && polls < smp::BUDGET {
                    smp.delay(16);
                    polls += 1;
                }
                missed += u64::from(CPUS[0].irq_count(vector::PING) == before);
            }
            missed
        }
        Job::HoldPages => {
            // a: CR3, the frame page 3 will map, the frame page 5 will map.
            let home = m.cr3();
            if !m.load_cr3(a[0]) {
                return u64::MAX;
            }
            let frames = read_frames(m);
            let before = read_pages(m, &frames, 5);
            SYNC[0].fetch_add(1, SeqCst);
            if !wait_sync(m, 1, 1) {
                m.load_cr3(home);
                return u64::MAX;
            }
            let page3 = u64::from(long::expect_frame(m, va(3), a[1]).is_err());
            let page5 = u64::from(long::expect_frame(m, va(5), a[2]).is_err());
            m.load_cr3(home);
            u64::from(before) | page3 << 8 | page5 << 16
        }
        Job::StaleWritable => {
            let home = m.cr3();
            if !m.load_cr3(a[0]) {
                return u64::MAX;
            }
            set_wp(m, true);
            let Some(smp) = m.smp() else { return u64::MAX };
            let first = smp.probe_write(a[1], 0x5157);
            SYNC[0].fetch_add(1, SeqCst);
            let second = if first.is_ok() && wait_sync(m, 1, 1) {
                m.smp().map(|smp| smp.probe_write(a[1], 0x5158))
            } else {
                None
            };
            set_wp(m, false);
            m.load_cr3(home);
            match second {
                Some(r) if r == Err((14, 0x3, a[1])) => 0,
                Some(_) => 2,
                None => 1,
            }
        }
        Job::RemoteWp => {
            // a: CR3, data alias of the table, entry, new entry value.
            let home = m.cr3();
            if !m.load_cr3(a[0]) || !m.linear_write(a[1], 0) {
                return u64::MAX;
            }
            SYNC[0].store(1, SeqCst);
            // Wait with interrupts off and without touching the alias: no
            // exit, no flush, unless someone else causes one.
            let mut polls = 0u64;
            while SYNC[1].load(SeqCst) == 0 && polls < 16 * smp::BUDGET {
                core::hint::spin_loop();
                polls += 1;
            }
            let ok = SYNC[1].load(SeqCst) != 0 && m.linear_write(a[1] + 8 * a[2], a[3]);
            m.load_cr3(home);
            u64::from(!ok)
        }
        Job::PtRace => {
            let home = m.cr3();
            let r = race_part(m, a[0], a[1], a[2] as usize);
            m.load_cr3(home);
            r
        }
        // Run by `smp::run_job` itself (the console; the benchmark's module).
        Job::Checks | Job::BenchCtxsw => u64::MAX,
    }
}

/// The shared PT as the BSP built it, found from the loaded PML4's entry 1.
fn frames_pt(m: &mut dyn Machine) -> u64 {
    let mut t = m.cr3() & long::ADDR;
    for l in (2..=4).rev() {
        t = m.scratch_read(t + 8 * long::index(VA0, l) as u64).unwrap_or(0) & long::ADDR;
    }
    t
}

/// The frames the shared PT maps now (0 where not present).
fn read_frames(m: &mut dyn Machine) -> [u64; PAGES] {
    let pt = frames_pt(m);
    core::array::from_fn(|k| {
        let e = m.scratch_read(pt + 8 * k as u64).unwrap_or(0);
        if e & P != 0 { e & long::ADDR } else { 0 }
    })
}
