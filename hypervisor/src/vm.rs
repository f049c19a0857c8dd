//! The virtual machine its vCPUs share: guest RAM, the shadow page cache
//! behind one lock, the consoles and check tally, and the part of each
//! vCPU other vCPUs touch ([`VcpuShared`]: run state, pending interrupts,
//! INIT/SIPI/stop requests, whether it is in VMX non-root operation).
//!
//! One vCPU runs on each host CPU (vCPU i on host CPU i, with the host
//! CPU's APIC ID as its APIC ID). The host side is reached through
//! [`HostOps`], which the binary implements with the host's local APICs,
//! so this module stays testable on the host.
//!
//! # Remote TLB flushes ([`Vm::flush`])
//!
//! Quadrant does not enable VPID, so every VM entry and every VM exit
//! invalidates the guest's linear and combined mappings (SDM Vol. 3C
//! 29.4.3.1 (28.3.3.1 in older editions): with "enable VPID" = 0, VMX
//! transitions invalidate mappings of VPID 0000H). A vCPU has dropped the
//! translations it held before a shadow change once it is seen outside VMX
//! non-root operation, or once it has exited or begun a new entry since: a
//! running vCPU is kicked with an NMI (NMI exiting makes it exit) and the
//! flusher waits for its exit or entry counter to move (KVM's
//! `kvm_make_all_cpus_request` with wait). A vCPU sets `in_guest` before it checks its requests and
//! enters; the flusher changes the shadow entries before it reads `in_guest`
//! (both sequentially consistent), so a vCPU it sees outside enters after
//! the change and its entry flushes.
//!
//! # Locking
//!
//! One lock ([`MmuLock`]) around the shadow page cache and every vCPU's
//! [`VcpuMmu`]: correct first, and counted (acquisitions, contended ones,
//! spins) so its cost is measured. A flusher may wait for other vCPUs while
//! holding it: they only have to leave the guest, which takes no lock.

use crate::arch::phys::{GuestRam, ShadowPool};
use crate::config::Config;
use crate::mmu::{Flush, ShadowCache, VcpuMask, VcpuMmu};
use crate::vcpu::apic::{self, Target};
use crate::vcpu::io::LineBuffer;
use crate::vcpu::paravirt::CheckTally;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering::SeqCst};
use shared::apic::{DeliveryMode, Icr};

/// Most vCPUs (and host CPUs) Quadrant runs.
pub const MAX_VCPUS: usize = shared::acpi::MAX_CPUS;

/// The host interrupt vector that kicks a host CPU out of the guest or
/// out of its idle `hlt` (no handler work beyond EOI).
pub const KICK_VECTOR: u8 = 0xF2;
/// The host's spurious-interrupt vector (SDM Vol. 3A 11.9).
pub const SPURIOUS_VECTOR: u8 = 0xFF;

/// Number of VM-exit reasons counted per vCPU.
pub const EXIT_REASONS: usize = shared::bench::EXIT_REASONS;

/// The host operations a VM needs, implemented by the binary.
#[derive(Clone, Copy, Debug)]
pub struct HostOps {
    /// The index of the host CPU running the caller (= its vCPU).
    pub this_cpu: fn() -> usize,
    /// Sends [`KICK_VECTOR`] to host CPU `i`.
    pub kick: fn(usize),
    /// EOI to this CPU's local APIC (after an external-interrupt exit).
    pub eoi: fn(),
    /// Waits with interrupts enabled until one arrives (`sti; hlt; cli`).
    pub idle: fn(),
}

/// Where a vCPU is in its life (SDM Vol. 3A 9.4.4.1: an AP waits for SIPI
/// after INIT).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum RunState {
    /// After INIT (and at power-up for an AP): waiting for a start-up IPI.
    WaitForSipi = 0,
    /// Running the guest (or handling one of its exits).
    Running = 1,
    /// Executed HLT with RFLAGS.IF = 1: woken by a deliverable interrupt.
    Halted = 2,
    /// Executed HLT with RFLAGS.IF = 0: only INIT wakes it.
    Parked = 3,
    /// The run is ending; it will not enter the guest again.
    Stopped = 4,
}

impl RunState {
    fn from_u8(v: u8) -> RunState {
        match v {
            0 => RunState::WaitForSipi,
            1 => RunState::Running,
            2 => RunState::Halted,
            3 => RunState::Parked,
            _ => RunState::Stopped,
        }
    }

    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            RunState::WaitForSipi => "waiting for SIPI",
            RunState::Running => "running",
            RunState::Halted => "halted (IF=1)",
            RunState::Parked => "halted with interrupts disabled",
            RunState::Stopped => "stopped",
        }
    }
}

/// Requests to a vCPU, bits of [`VcpuShared::requests`].
pub mod req {
    /// INIT: go to wait-for-SIPI.
    pub const INIT: u32 = 1 << 0;
    /// A start-up IPI arrived (vector in `sipi_vector`).
    pub const SIPI: u32 = 1 << 1;
    /// The run ends: stop.
    pub const STOP: u32 = 1 << 2;
}

/// The part of a vCPU other vCPUs read and write.
#[derive(Debug)]
pub struct VcpuShared {
    /// This vCPU exists.
    pub present: AtomicBool,
    /// Its APIC ID (the host CPU's).
    pub apic_id: AtomicU32,
    /// Its LDR and DFR, for logical destinations (written by the owner).
    pub ldr: AtomicU32,
    #[allow(missing_docs)]
    pub dfr: AtomicU32,
    /// In VMX non-root operation (or about to enter).
    pub in_guest: AtomicBool,
    /// VM exits so far.
    pub exits: AtomicU64,
    /// VM entries started (bumped after `in_guest` is set, just before the
    /// entry).
    pub entries: AtomicU64,
    /// [`RunState`] as u8.
    pub state: AtomicU8,
    /// [`req`] bits.
    pub requests: AtomicU32,
    /// The vector of the last start-up IPI.
    pub sipi_vector: AtomicU32,
    /// Interrupt requests not yet accepted (vector bits).
    pub irr: [AtomicU64; 4],
    /// VM exits by basic reason (written by the owner).
    pub exit_counts: [AtomicU64; EXIT_REASONS],
    /// The hypervisor's TSC cycles from each exit to the next entry, by the
    /// exit's basic reason (written by the owner).
    pub exit_cycles: [AtomicU64; EXIT_REASONS],
    /// Kicks this vCPU sent (IPIs and remote flushes).
    pub kicks_sent: AtomicU64,
    /// Remote-flush waits this vCPU did for others.
    pub flush_waits: AtomicU64,
    /// Guest interrupts injected into this vCPU.
    pub interrupts: AtomicU64,
    /// IPIs this vCPU sent (guest ICR writes).
    pub ipis_sent: AtomicU64,
}

impl VcpuShared {
    const fn new() -> Self {
        VcpuShared {
            present: AtomicBool::new(false),
            apic_id: AtomicU32::new(0),
            ldr: AtomicU32::new(0),
            dfr: AtomicU32::new(u32::MAX),
            in_guest: AtomicBool::new(false),
            exits: AtomicU64::new(0),
            entries: AtomicU64::new(0),
            state: AtomicU8::new(RunState::WaitForSipi as u8),
            requests: AtomicU32::new(0),
            sipi_vector: AtomicU32::new(0),
            irr: [const { AtomicU64::new(0) }; 4],
            exit_counts: [const { AtomicU64::new(0) }; EXIT_REASONS],
            exit_cycles: [const { AtomicU64::new(0) }; EXIT_REASONS],
            kicks_sent: AtomicU64::new(0),
            flush_waits: AtomicU64::new(0),
            interrupts: AtomicU64::new(0),
            ipis_sent: AtomicU64::new(0),
        }
    }

    /// The run state.
    pub fn state(&self) -> RunState {
        RunState::from_u8(self.state.load(SeqCst))
    }

    /// A snapshot of the pending interrupt requests.
    pub fn irr(&self) -> [u64; 4] {
        [0, 1, 2, 3].map(|i| self.irr[i].load(SeqCst))
    }

    /// Takes vector `v` out of the requests.
    pub fn clear_irr(&self, v: u8) {
        self.irr[v as usize / 64].fetch_and(!(1 << (v % 64)), SeqCst);
    }
}

/// The shadow page cache and every vCPU's place in it, behind [`MmuLock`].
pub struct MmuState {
    /// The cache.
    pub cache: ShadowCache<ShadowPool>,
    /// Each vCPU's roots and paging mode.
    pub vcpus: [Option<VcpuMmu>; MAX_VCPUS],
}

impl MmuState {
    /// The cache and vCPU `id`'s state, borrowed together.
    pub fn split(&mut self, id: usize) -> (&mut ShadowCache<ShadowPool>, &mut VcpuMmu) {
        let MmuState { cache, vcpus } = self;
        (cache, vcpus[id].as_mut().expect("the vCPU was registered with the cache"))
    }
}

/// The one lock around [`MmuState`], with its counters.
pub struct MmuLock {
    inner: spin::Mutex<MmuState>,
    /// Acquisitions.
    pub acquisitions: AtomicU64,
    /// Acquisitions that found the lock held.
    pub contended: AtomicU64,
    /// Spin iterations waiting for it.
    pub spins: AtomicU64,
}

impl MmuLock {
    /// Wraps the state.
    pub fn new(state: MmuState) -> Self {
        MmuLock {
            inner: spin::Mutex::new(state),
            acquisitions: AtomicU64::new(0),
            contended: AtomicU64::new(0),
            spins: AtomicU64::new(0),
        }
    }

    /// Takes the lock, counting contention.
    pub fn lock(&self) -> spin::MutexGuard<'_, MmuState> {
        self.acquisitions.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
        if let Some(g) = self.inner.try_lock() {
            return g;
        }
        self.contended.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
        loop {
            self.spins.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
            core::hint::spin_loop();
            if let Some(g) = self.inner.try_lock() {
                return g;
            }
        }
    }
}

/// The guest's console line buffers (COM1 and the debug port), shared by
/// the vCPUs: a guest serialises its own lines.
#[derive(Default)]
pub struct Consoles {
    /// COM1.
    pub com1: LineBuffer,
    /// Port 0xE9.
    pub debugcon: LineBuffer,
}

/// Why an IPI could not be delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpiError {
    /// A delivery mode Quadrant does not model (named).
    Unsupported(&'static str),
    /// INIT to the bootstrap processor (it would restart the firmware).
    InitToBsp,
}

/// The virtual machine.
pub struct Vm {
    /// Guest RAM.
    pub ram: GuestRam,
    /// The shadow page cache (`None` under `mmu=ept`).
    pub mmu: Option<MmuLock>,
    /// The host side.
    pub host: HostOps,
    /// The command line.
    pub config: Config,
    /// vCPUs in use (0..count).
    pub count: usize,
    /// Per-vCPU shared state.
    pub vcpus: [VcpuShared; MAX_VCPUS],
    /// The guest's consoles.
    pub consoles: spin::Mutex<Consoles>,
    /// Checks the guest reported by hypercall.
    pub checks: spin::Mutex<CheckTally>,
    /// VM exits of all vCPUs.
    pub total_exits: AtomicU64,
    /// Bumped by every event that can wake a vCPU (deadlock detection).
    pub activity: AtomicU64,
    /// Set once a vCPU ends the run.
    pub ending: AtomicBool,
}

impl core::fmt::Debug for Vm {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Vm").field("count", &self.count).field("config", &self.config).finish_non_exhaustive()
    }
}

/// Bits of a vCPU mask.
pub fn mask_bits(m: VcpuMask) -> impl Iterator<Item = usize> {
    // Only the set bits (lowest first): this runs before every VM entry,
    // where a scan of all 64 cost about 640 cycles in Bochs.
    let mut rest = m;
    core::iter::from_fn(move || {
        (rest != 0).then(|| {
            let i = rest.trailing_zeros() as usize;
            rest &= rest - 1;
            i
        })
    })
}

impl Vm {
    /// A VM with `apic_ids.len()` vCPUs (vCPU 0 the bootstrap processor).
    pub fn new(ram: GuestRam, mmu: Option<MmuLock>, host: HostOps, config: Config, apic_ids: &[u32]) -> Self {
        let vm = Vm {
            ram,
            mmu,
            host,
            config,
            count: apic_ids.len().min(MAX_VCPUS),
            vcpus: [const { VcpuShared::new() }; MAX_VCPUS],
            consoles: spin::Mutex::new(Consoles::default()),
            checks: spin::Mutex::new(CheckTally::default()),
            total_exits: AtomicU64::new(0),
            activity: AtomicU64::new(0),
            ending: AtomicBool::new(false),
        };
        for (i, &id) in apic_ids.iter().take(MAX_VCPUS).enumerate() {
            let v = &vm.vcpus[i];
            v.present.store(true, SeqCst);
            v.apic_id.store(id, SeqCst);
            let state = if i == 0 { RunState::Running } else { RunState::WaitForSipi };
            v.state.store(state as u8, SeqCst);
        }
        vm
    }

    /// The vCPU whose host CPU runs the caller.
    pub fn this_vcpu(&self) -> usize {
        (self.host.this_cpu)()
    }

    /// Makes every vCPU in `f` other than the caller, vCPU `me`, drop the
    /// hardware translations it held (see the module docs), then
    /// acknowledges `f`.
    pub fn flush(&self, me: usize, f: Flush) {
        self.flush_others(me, f.vcpus);
        f.done();
    }

    /// [`Vm::flush`] of a raw mask from whichever vCPU runs the caller (the
    /// MMU core's synchronous remote flush).
    pub fn flush_mask(&self, mask: VcpuMask) {
        if mask != 0 {
            self.flush_others(self.this_vcpu(), mask);
        }
    }

    /// Kicks every vCPU of `mask` but `me` that is in the guest and waits
    /// until it left it (the caller names itself: no APIC ID read).
    fn flush_others(&self, me: usize, mask: VcpuMask) {
        for i in mask_bits(mask).filter(|&i| i != me && i < self.count) {
            let v = &self.vcpus[i];
            let (exits, entries) = (v.exits.load(SeqCst), v.entries.load(SeqCst));
            if !v.in_guest.load(SeqCst) {
                continue;
            }
            (self.host.kick)(i);
            self.vcpus[me].kicks_sent.fetch_add(1, SeqCst);
            self.vcpus[me].flush_waits.fetch_add(1, SeqCst);
            // Done once it exited, or began a new entry (which flushes
            // before any guest instruction runs; the kick may then have
            // landed in VMX root operation, before the entry).
            while v.in_guest.load(SeqCst) && v.exits.load(SeqCst) == exits && v.entries.load(SeqCst) == entries {
                core::hint::spin_loop();
            }
        }
    }

    /// Wakes vCPU `i` (a kick: it exits the guest or leaves its idle halt).
    pub fn wake(&self, i: usize) {
        self.activity.fetch_add(1, SeqCst);
        if i != self.this_vcpu() {
            (self.host.kick)(i);
            self.vcpus[self.this_vcpu()].kicks_sent.fetch_add(1, SeqCst);
        }
    }

    /// Delivers an interprocessor interrupt vCPU `from` sent (SDM Vol. 3A
    /// 11.6): fixed and lowest-priority vectors become requests in the
    /// targets' IRR (lowest priority goes to the first target, a legal
    /// choice of "lowest priority" when no TPR is used); INIT sends the
    /// targets to wait-for-SIPI; a start-up IPI starts a target that waits
    /// for one (others ignore it, 9.4.4.1). INIT level de-assert is ignored
    /// (11.6.1).
    pub fn deliver_ipi(&self, from: usize, icr: Icr, x2apic: bool) -> Result<(), IpiError> {
        if let Some(name) = apic::unsupported_delivery(&icr) {
            return Err(IpiError::Unsupported(name));
        }
        if icr.is_init_deassert() {
            return Ok(());
        }
        self.vcpus[from].ipis_sent.fetch_add(1, SeqCst);
        let targets = (0..self.count).filter(|&i| {
            let v = &self.vcpus[i];
            apic::is_destination(
                &icr,
                x2apic,
                Target {
                    id: v.apic_id.load(SeqCst),
                    ldr: v.ldr.load(SeqCst),
                    dfr: v.dfr.load(SeqCst),
                    is_sender: i == from,
                },
            )
        });
        for i in targets {
            let v = &self.vcpus[i];
            match icr.delivery {
                DeliveryMode::Fixed | DeliveryMode::LowestPriority => {
                    v.irr[icr.vector as usize / 64].fetch_or(1 << (icr.vector % 64), SeqCst);
                }
                DeliveryMode::Init if i == 0 => return Err(IpiError::InitToBsp),
                DeliveryMode::Init => {
                    v.requests.fetch_or(req::INIT, SeqCst);
                }
                DeliveryMode::StartUp => {
                    // Accepted while waiting for SIPI, or with an INIT the
                    // target has not acted on yet (it will wait first).
                    if v.state() != RunState::WaitForSipi && v.requests.load(SeqCst) & req::INIT == 0 {
                        continue;
                    }
                    v.sipi_vector.store(u32::from(icr.vector), SeqCst);
                    v.requests.fetch_or(req::SIPI, SeqCst);
                }
                _ => unreachable!("unsupported delivery modes were refused above"),
            }
            self.wake(i);
            if icr.delivery == DeliveryMode::LowestPriority {
                break;
            }
        }
        Ok(())
    }

    /// Asks every other vCPU to stop and waits (a bounded while) until each
    /// has; returns the vCPUs that did not answer.
    pub fn stop_others(&self, me: usize) -> VcpuMask {
        self.ending.store(true, SeqCst);
        for i in (0..self.count).filter(|&i| i != me) {
            self.vcpus[i].requests.fetch_or(req::STOP, SeqCst);
            (self.host.kick)(i);
        }
        let mut missing: VcpuMask = 0;
        for i in (0..self.count).filter(|&i| i != me) {
            let mut n = 0u64;
            while self.vcpus[i].state() != RunState::Stopped && n < 50_000_000 {
                core::hint::spin_loop();
                n += 1;
            }
            if self.vcpus[i].state() != RunState::Stopped {
                missing |= 1 << i;
            }
        }
        missing
    }

    /// True when no vCPU can ever run again: none running, no interrupt
    /// request pending anywhere, no INIT/SIPI pending, and nothing changed
    /// while looking (a sender bumps `activity` before it goes idle).
    pub fn deadlocked(&self) -> bool {
        let before = self.activity.load(SeqCst);
        let stuck = (0..self.count).all(|i| {
            let v = &self.vcpus[i];
            v.state() != RunState::Running
                && v.requests.load(SeqCst) & (req::INIT | req::SIPI) == 0
                && (v.state() == RunState::Parked || v.irr().iter().all(|&w| w == 0))
        });
        stuck && self.activity.load(SeqCst) == before
    }

    /// Exits of every vCPU by reason.
    pub fn exit_counts(&self) -> [u64; EXIT_REASONS] {
        self.sum_by_reason(|v| &v.exit_counts)
    }

    /// The hypervisor's cycles of every vCPU by exit reason.
    pub fn exit_cycles(&self) -> [u64; EXIT_REASONS] {
        self.sum_by_reason(|v| &v.exit_cycles)
    }

    fn sum_by_reason(&self, of: impl Fn(&VcpuShared) -> &[AtomicU64; EXIT_REASONS]) -> [u64; EXIT_REASONS] {
        let mut t = [0u64; EXIT_REASONS];
        for v in &self.vcpus[..self.count] {
            for (i, n) in of(v).iter().enumerate() {
                t[i] += n.load(SeqCst);
            }
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::sync::atomic::AtomicUsize;

    #[test]
    fn mask_bits_names_the_set_bits_lowest_first() {
        assert_eq!(mask_bits(0).count(), 0);
        assert_eq!(mask_bits(0b1010_0001).collect::<Vec<_>>(), [0, 5, 7]);
        assert_eq!(mask_bits(1 << 63 | 2).collect::<Vec<_>>(), [1, 63]);
        assert_eq!(mask_bits(u64::MAX).count(), 64);
    }

    static KICKS: AtomicUsize = AtomicUsize::new(0);
    fn this_cpu() -> usize {
        0
    }
    fn kick(_: usize) {
        KICKS.fetch_add(1, SeqCst);
    }
    fn nop() {}

    fn vm(n: usize) -> Vm {
        // SAFETY: never dereferenced: these tests touch no guest memory.
        let ram = unsafe { GuestRam::new(0, 0) };
        let host = HostOps { this_cpu, kick, eoi: nop, idle: nop };
        let ids: std::vec::Vec<u32> = (0..n as u32).collect();
        Vm::new(ram, None, host, Config::default(), &ids)
    }

    #[test]
    fn start_up_sequence() {
        let vm = vm(3);
        assert_eq!(vm.vcpus[1].state(), RunState::WaitForSipi);
        let all_but_self = Icr { shorthand: shared::apic::Shorthand::AllExcludingSelf, ..Icr::init(0) };
        vm.deliver_ipi(0, all_but_self, false).unwrap();
        assert_eq!(vm.vcpus[1].requests.load(SeqCst) & req::INIT, req::INIT);
        assert_eq!(vm.vcpus[0].requests.load(SeqCst), 0, "not to the sender");
        vm.deliver_ipi(0, Icr::startup(0x9a, 2), false).unwrap();
        assert_eq!(vm.vcpus[2].requests.load(SeqCst) & req::SIPI, req::SIPI);
        assert_eq!(vm.vcpus[2].sipi_vector.load(SeqCst), 0x9a);
        assert_eq!(vm.vcpus[1].requests.load(SeqCst) & req::SIPI, 0, "physical destination 2 only");
        // A running vCPU ignores SIPI.
        vm.vcpus[2].state.store(RunState::Running as u8, SeqCst);
        vm.vcpus[2].requests.store(0, SeqCst);
        vm.deliver_ipi(0, Icr::startup(0x9a, 2), false).unwrap();
        assert_eq!(vm.vcpus[2].requests.load(SeqCst), 0);
        assert_eq!(vm.deliver_ipi(1, Icr::init(0), false), Err(IpiError::InitToBsp));
    }

    #[test]
    fn fixed_ipis_set_irr_and_deadlock_detection() {
        let vm = vm(2);
        vm.vcpus[1].state.store(RunState::Halted as u8, SeqCst);
        vm.vcpus[0].state.store(RunState::Parked as u8, SeqCst);
        assert!(vm.deadlocked());
        vm.deliver_ipi(0, Icr::fixed(0x40, 1), false).unwrap();
        assert_eq!(vm.vcpus[1].irr()[1], 1);
        assert!(!vm.deadlocked(), "vCPU 1 has a request to wake for");
        vm.vcpus[1].clear_irr(0x40);
        assert!(vm.deadlocked());
        assert!(matches!(
            vm.deliver_ipi(0, Icr { delivery: DeliveryMode::Smi, ..Icr::fixed(0, 1) }, false),
            Err(IpiError::Unsupported("SMI"))
        ));
    }
}
