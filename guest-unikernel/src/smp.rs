//! The guest's processors as the checks see them: what the bootstrap
//! processor (BSP) and the application processors (APs) share, and how an
//! AP is given work.
//!
//! * [`CpuSlot`]: one per CPU (index 0 = the BSP, then the APs in start
//!   order): its APIC ID, a job mailbox, the interrupts it took;
//! * [`vector`]: the interrupt vectors the guest uses;
//! * [`Smp`]: what the machine must offer (the binary implements it with
//!   the local APIC, bare-rt's AP trampoline and a per-CPU fault catcher);
//! * [`Job`] and [`run_job`]: the work an AP does when the BSP posts it
//!   (the job's code is in `checks::smp`, next to the check that needs it);
//! * [`Seed`]: what an AP needs to run checks of its own, reported as
//!   `cpuN/area/scenario` ([`prefixed`]).
//!
//! The protocol: the BSP writes a job's arguments, then its number, then
//! sends [`vector::WAKE`] to the AP, which sleeps in HLT with interrupts
//! enabled between jobs; the AP runs the job, stores its result, clears the
//! mailbox and bumps `done`. Every shared word is an atomic with
//! sequentially consistent ordering.

use crate::checks::Ctx;
use crate::machine::Machine;
use crate::report::Tally;
use core::fmt::Write;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::SeqCst};
use shared::apic::Icr;

/// Most CPUs the guest uses.
pub const MAX_CPUS: usize = shared::acpi::MAX_CPUS;

/// The interrupt vectors the guest uses (above the 32 exception vectors;
/// the class of each, vector >> 4, is its priority, SDM Vol. 3A 11.8.3).
pub mod vector {
    /// "Look at your mailbox" (an AP sleeping in HLT wakes).
    pub const WAKE: u8 = 0x40;
    /// Counted only: the IPI round trips of `smp/ipi-*`.
    pub const PING: u8 = 0x41;
    /// TLB shootdown: INVLPG the address in the slot, then acknowledge.
    pub const SHOOTDOWN: u8 = 0x42;
    /// The local APIC's spurious-interrupt vector (11.9).
    pub const SPURIOUS: u8 = 0xFF;
    /// The vectors with a counter in [`super::CpuSlot::irqs`], in order.
    pub const COUNTED: [u8; 3] = [WAKE, PING, SHOOTDOWN];
}

/// What an AP saw in real mode (written by bare-rt's trampoline): CS, the
/// machine status word (SMSW), FLAGS, SP, a marker, whether it went on.
/// The library's own form of `bare_rt::smp::RealModeRecord`: using that
/// type here would link bare-rt into the host tests, whose
/// `rust_eh_personality` clashes with std's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RealModeRecord {
    /// CS (the start-up IPI's vector << 8).
    pub cs: u16,
    /// SMSW: CR0 bits 15:0 (PE = bit 0).
    pub msw: u16,
    /// FLAGS.
    pub flags: u16,
    /// SP.
    pub sp: u16,
    /// True once the AP left real mode for long mode.
    pub released: bool,
}

/// One CPU's shared state.
#[derive(Debug)]
pub struct CpuSlot {
    /// Its local APIC ID (as its ID register reads).
    pub apic_id: AtomicU32,
    /// It runs in long mode and takes jobs.
    pub online: AtomicBool,
    /// The posted job ([`Job`] as u32; 0 = none).
    pub job: AtomicU32,
    /// The job's arguments.
    pub args: [AtomicU64; 6],
    /// The last job's result.
    pub result: AtomicU64,
    /// Jobs finished.
    pub done: AtomicU32,
    /// Interrupts taken, by [`vector::COUNTED`] position.
    pub irqs: [AtomicU32; 3],
    /// The address of a pending TLB shootdown.
    pub shootdown_va: AtomicU64,
    /// Shootdowns done (INVLPG executed).
    pub shootdown_acks: AtomicU32,
}

impl CpuSlot {
    const fn new() -> Self {
        CpuSlot {
            apic_id: AtomicU32::new(0),
            online: AtomicBool::new(false),
            job: AtomicU32::new(0),
            args: [const { AtomicU64::new(0) }; 6],
            result: AtomicU64::new(0),
            done: AtomicU32::new(0),
            irqs: [const { AtomicU32::new(0) }; 3],
            shootdown_va: AtomicU64::new(0),
            shootdown_acks: AtomicU32::new(0),
        }
    }

    /// Interrupts taken on `v` (one of [`vector::COUNTED`]).
    pub fn irq_count(&self, v: u8) -> u32 {
        vector::COUNTED.iter().position(|&c| c == v).map_or(0, |i| self.irqs[i].load(SeqCst))
    }
}

/// Every CPU's slot.
pub static CPUS: [CpuSlot; MAX_CPUS] = [const { CpuSlot::new() }; MAX_CPUS];
/// CPUs in use (the BSP and the APs it started).
pub static COUNT: AtomicU32 = AtomicU32::new(1);
/// Flags the jobs of one check and its BSP side share.
pub static SYNC: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];

/// The SMP part of the machine (the binary's local APIC and trampoline).
pub trait Smp {
    /// The index of the CPU running the caller (0 = BSP).
    fn cpu_index(&self) -> usize;
    /// This CPU's local APIC ID.
    fn apic_id(&mut self) -> u32;
    /// IA32_APIC_BASE of this CPU.
    fn apic_base(&mut self) -> u64;
    /// This CPU's APIC is in x2APIC mode.
    fn is_x2apic(&mut self) -> bool;
    /// Switches this CPU's APIC to x2APIC mode (SDM Vol. 3A 11.12.1);
    /// false when CPUID.01H:ECX.x2APIC is clear.
    fn enable_x2apic(&mut self) -> bool;
    /// Software-enables this CPU's APIC with the spurious vector.
    fn apic_enable(&mut self);
    /// Sends an IPI through this CPU's APIC (xAPIC ICR or x2APIC MSR).
    fn send_ipi(&mut self, icr: Icr);
    /// EOI to this CPU's APIC.
    fn eoi(&mut self);
    /// Copies the AP trampoline to `page` (below 1 MiB) with the APs held
    /// in real mode after their record; returns the start-up vector.
    fn install_trampoline(&mut self, page: u64) -> u8;
    /// APs that ran the trampoline's real-mode code (tickets taken).
    fn trampoline_tickets(&mut self) -> u32;
    /// The real-mode record of ticket `t`.
    fn real_mode_record(&mut self, t: u32) -> Option<RealModeRecord>;
    /// Lets the held APs go on to long mode.
    fn release_aps(&mut self);
    /// The next AP to run the trampoline takes ticket `t` (its record is
    /// cleared): restarting AP `t` into its own stack and slot.
    fn reuse_ticket(&mut self, t: u32);
    /// STI; HLT; CLI: sleeps until an interrupt (taken in between).
    fn wait_for_interrupt(&mut self);
    /// STI; NOP; CLI: takes pending interrupts.
    fn interrupt_window(&mut self);
    /// A quadword store to test address `va`, catching a #PF: `Err` holds
    /// (vector, error code, CR2).
    fn probe_write(&mut self, va: u64, value: u64) -> Result<(), (u8, u64, u64)>;
    /// LOCK CMPXCHG of the quadword at test address `va`: the value found.
    fn cmpxchg(&mut self, va: u64, old: u64, new: u64) -> u64;
    /// About `n` PAUSE instructions of delay.
    fn delay(&mut self, n: u64);
}

/// The jobs an AP runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Job {
    /// Report APIC ID, initial APIC ID, IA32_APIC_BASE and EFER.
    Hello = 1,
    /// Switch to x2APIC mode.
    X2apic = 2,
    /// Send [`vector::PING`] to the APIC ID in arg 0, arg 1 times.
    PingBack = 3,
    /// Run the per-CPU checks (`cpuN/...`).
    Checks = 4,
    /// Hold a translation while the BSP edits tables (`smp/shared-tables`).
    HoldPages = 5,
    /// A stale writable translation must not survive (`smp/no-stale-writable`).
    StaleWritable = 6,
    /// The victim of `smp/remote-write-protect`.
    RemoteWp = 7,
    /// One CPU's part of `smp/pt-write-race`.
    PtRace = 8,
    /// One CPU's rounds of the `bench=ctxsw-smp` workload.
    BenchCtxsw = 9,
}

impl Job {
    fn from_u32(v: u32) -> Option<Job> {
        Some(match v {
            1 => Job::Hello,
            2 => Job::X2apic,
            3 => Job::PingBack,
            4 => Job::Checks,
            5 => Job::HoldPages,
            6 => Job::StaleWritable,
            7 => Job::RemoteWp,
            8 => Job::PtRace,
            9 => Job::BenchCtxsw,
            _ => return None,
        })
    }
}

/// What an AP needs to build a [`Ctx`] of its own (copied from the BSP's).
#[derive(Clone, Copy, Debug)]
pub struct Seed {
    /// The command line's settings.
    pub config: crate::cmdline::Config,
    /// The Multiboot information's address.
    pub info_addr: u64,
    /// The parsed information.
    pub info: Result<shared::multiboot::Info, shared::multiboot::InfoError>,
    /// The hypervisor signature.
    pub signature: crate::hv::Signature,
    /// The validated memory map.
    pub map: Option<crate::memmap::MemMap>,
    /// The boot structures.
    pub exclusions: crate::memmap::Exclusions,
}

/// The seed the BSP leaves for the APs' checks.
pub static SEED: spin::Once<Seed> = spin::Once::new();

/// An interrupt on `vector` arrived at this CPU: count it, do what it asks
/// (a shootdown's INVLPG), EOI.
pub fn on_interrupt(m: &mut dyn Machine, vector: u8) {
    let Some(smp) = m.smp() else { return };
    let cpu = smp.cpu_index();
    let slot = &CPUS[cpu];
    if let Some(i) = vector::COUNTED.iter().position(|&c| c == vector) {
        slot.irqs[i].fetch_add(1, SeqCst);
    }
    if vector == vector::SPURIOUS {
        return; // no EOI for the spurious vector (SDM Vol. 3A 11.9)
    }
    if vector == vector::SHOOTDOWN {
        let va = slot.shootdown_va.load(SeqCst);
        m.invlpg(va);
        slot.shootdown_acks.fetch_add(1, SeqCst);
    }
    if let Some(smp) = m.smp() {
        smp.eoi();
    }
}

/// An AP's life after the trampoline: mark it online and run posted jobs,
/// sleeping in HLT in between.
pub fn ap_loop(m: &mut dyn Machine, out: &mut dyn Write, tally: &Tally) -> ! {
    let Some(smp) = m.smp() else { panic!("an AP runs on a machine with SMP") };
    let cpu = smp.cpu_index();
    smp.apic_enable();
    let id = smp.apic_id();
    CPUS[cpu].apic_id.store(id, SeqCst);
    CPUS[cpu].online.store(true, SeqCst);
    loop {
        let job = CPUS[cpu].job.load(SeqCst);
        if job != 0 {
            let result = run_job(m, out, tally, cpu, job);
            CPUS[cpu].result.store(result, SeqCst);
            CPUS[cpu].job.store(0, SeqCst);
            CPUS[cpu].done.fetch_add(1, SeqCst);
            continue;
        }
        if let Some(smp) = m.smp() {
            smp.wait_for_interrupt();
        }
    }
}

/// Runs job number `job` on this AP (`cpu`); returns its result.
pub fn run_job(m: &mut dyn Machine, out: &mut dyn Write, tally: &Tally, cpu: usize, job: u32) -> u64 {
    let arg = |i: usize| CPUS[cpu].args[i].load(SeqCst);
    let args = [arg(0), arg(1), arg(2), arg(3), arg(4), arg(5)];
    match Job::from_u32(job) {
        Some(Job::Checks) => {
            run_ap_checks(m, out, tally, cpu);
            0
        }
        Some(Job::BenchCtxsw) => crate::bench::ctxsw::ap_rounds(m, cpu, args),
        Some(j) => crate::checks::smp::ap_job(m, j, args),
        None => u64::MAX,
    }
}

/// Posts `job` with `args` to AP `cpu` and wakes it; returns the `done`
/// count to wait for.
pub fn post(m: &mut dyn Machine, cpu: usize, job: Job, args: &[u64]) -> u32 {
    let slot = &CPUS[cpu];
    for (i, a) in args.iter().enumerate() {
        slot.args[i].store(*a, SeqCst);
    }
    let target = slot.done.load(SeqCst) + 1;
    slot.job.store(job as u32, SeqCst);
    if let Some(smp) = m.smp() {
        smp.send_ipi(Icr::fixed(vector::WAKE, slot.apic_id.load(SeqCst)));
    }
    target
}

/// Waits until AP `cpu` finished its job (`done` reached `target`), at most
/// `budget` polls; its result, or `None` on a timeout.
pub fn wait(m: &mut dyn Machine, cpu: usize, target: u32, budget: u64) -> Option<u64> {
    let slot = &CPUS[cpu];
    for _ in 0..budget {
        if slot.done.load(SeqCst) >= target {
            return Some(slot.result.load(SeqCst));
        }
        if let Some(smp) = m.smp() {
            smp.delay(16);
        }
    }
    None
}

/// Polls (of about 16 PAUSEs each) before a wait gives up: about a minute
/// of a 4-CPU Bochs, half a minute of a current processor.
pub const BUDGET: u64 = 100_000_000;

/// `post` then `wait`.
pub fn run_on(m: &mut dyn Machine, cpu: usize, job: Job, args: &[u64]) -> Option<u64> {
    let target = post(m, cpu, job, args);
    wait(m, cpu, target, BUDGET)
}

/// The checks each AP runs for itself: the mode walk and the named
/// 32-bit/PAE scenarios (`modes/...`, `pg32/...`, `pae/...`), as
/// `cpuN/...`.
pub static AP_CHECKS: &[&[crate::checks::Check]] = &[crate::checks::modes::CHECKS];

/// `cpuN/name` into `buf`.
pub fn prefixed(cpu: usize, name: &str) -> crate::report::Detail {
    let mut d = crate::report::Detail::new();
    let _ = write!(d, "cpu{cpu}/{name}");
    d
}

fn run_ap_checks(m: &mut dyn Machine, out: &mut dyn Write, tally: &Tally, cpu: usize) {
    let Some(seed) = SEED.get().copied() else { return };
    let mut ctx = Ctx::from_seed(m, out, tally, seed);
    for c in AP_CHECKS.iter().flat_map(|a| a.iter()) {
        let name = prefixed(cpu, c.name);
        let mut d = crate::report::Detail::new();
        // light=1 (the MMU-audit run, where every exit is audited): the
        // first mode walk only.
        let light_skip = ctx.config.light && !c.name.starts_with("modes/walk1/");
        let outcome = if light_skip {
            let _ = write!(d, "light=1: an AP runs only the first mode walk in this run");
            shared::Outcome::Skip
        } else if ctx.config.only.selects(c.name) {
            let _ = shared::line::write_check_begin(&mut &mut *ctx.out, name.as_str());
            let _ = ctx.out.write_char('\n');
            (c.run)(&mut ctx, &mut d)
        } else {
            let _ = write!(d, "not selected (only={})", ctx.config.only.as_str());
            shared::Outcome::Skip
        };
        crate::checks::report(&mut *ctx.m, &mut *ctx.out, ctx.tally, outcome, name.as_str(), d.as_str());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_jobs() {
        assert_eq!(prefixed(3, "modes/walk1/real").as_str(), "cpu3/modes/walk1/real");
        for j in 1..=8 {
            assert_eq!(Job::from_u32(j).map(|j| j as u32), Some(j));
        }
        assert_eq!(Job::from_u32(0), None);
        assert_eq!(CPUS[0].irq_count(vector::PING), 0);
    }
}
