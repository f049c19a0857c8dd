//! The binary's host processors (this file belongs to `quadrant-hv`, not to
//! the library, because it uses bare-rt's AP trampoline and local-APIC
//! access, which only link into a kernel):
//!
//! * finding them: the ACPI MADT, or the MP table where there is no ACPI
//!   (`shared::acpi`), limited by `cpus=`;
//! * starting the application processors one by one with INIT and two
//!   start-up IPIs (SDM Vol. 3A 9.4.4.1; 11.6.1), through bare-rt's
//!   trampoline, each reporting back once it is in long mode;
//! * the [`HostOps`] the VM uses: which CPU runs the caller, kicking
//!   another CPU with an NMI, EOI, idling until a kick.
//!
//! Kicks are NMIs, not fixed interrupts: NMI exiting makes a CPU in VMX
//! non-root operation exit whatever the guest's RFLAGS.IF; an external
//! interrupt should too with external-interrupt exiting (SDM Vol. 3C
//! 26.2), but Bochs 2.7 keeps it masked while a guest that entered with
//! IF = 0 keeps IF = 0 (it computes the mask before it marks the CPU as in
//! VMX non-root operation), and a vCPU waiting for a remote TLB flush would
//! wait for ever.

use bare_rt::apic::LocalApic;
use bare_rt::smp::Trampoline;
use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering::SeqCst};
use hypervisor::arch::{cpu, descriptors};
use hypervisor::vm::{HostOps, MAX_VCPUS, SPURIOUS_VECTOR};
use shared::acpi::CpuList;
use shared::apic::{reg, Icr};

static APIC: spin::Once<LocalApic> = spin::Once::new();
/// APIC IDs of the host CPUs in use, by index (index 0 = the BSP).
static IDS: [AtomicU32; MAX_VCPUS] = [const { AtomicU32::new(u32::MAX) }; MAX_VCPUS];
static COUNT: AtomicUsize = AtomicUsize::new(1);

/// This CPU's local APIC (the same mode and base on every CPU).
pub fn apic() -> LocalApic {
    *APIC.get().expect("the host APIC is set up first thing on the BSP")
}

/// Sets up the BSP's local APIC: software-enabled with the spurious vector,
/// and the kick handler's EOI target. Returns its APIC ID.
pub fn init_bsp() -> Result<u32, &'static str> {
    // SAFETY: every CPU with VMX has a local APIC; bare-rt's boot tables map
    // the xAPIC page.
    let apic = unsafe { LocalApic::current() }.ok_or("the local APIC is disabled (IA32_APIC_BASE.EN = 0)")?;
    APIC.call_once(|| apic);
    descriptors::set_eoi_target((!apic.is_x2apic()).then(|| apic.base() + u64::from(reg::EOI)));
    apic.software_enable(SPURIOUS_VECTOR);
    let id = apic.id();
    IDS[0].store(id, SeqCst);
    Ok(id)
}

/// The host CPUs to use: the BSP first, then the other enabled processors
/// of `list` in table order, at most `limit`.
pub fn choose(list: &CpuList, bsp: u32, limit: usize) -> usize {
    let mut n = 1;
    for &id in list.ids().iter().filter(|&&id| id != bsp) {
        if n == limit.min(MAX_VCPUS) {
            break;
        }
        IDS[n].store(id, SeqCst);
        n += 1;
    }
    COUNT.store(n, SeqCst);
    n
}

/// The APIC IDs in use, by index.
pub fn ids() -> impl Iterator<Item = u32> {
    (0..COUNT.load(SeqCst)).map(|i| IDS[i].load(SeqCst))
}

/// The index of the host CPU running the caller.
pub fn this_cpu() -> usize {
    let id = apic().id();
    (0..COUNT.load(SeqCst)).find(|&i| IDS[i].load(SeqCst) == id).unwrap_or(0)
}

/// A spin delay of `n` PAUSEs (about a millisecond per 10,000 on current
/// hardware; emulators start APs at once, so this only paces real ones).
fn delay(n: u64) {
    for _ in 0..n {
        core::hint::spin_loop();
    }
}

/// Why an AP did not come up.
#[derive(Clone, Copy, Debug)]
pub enum StartError {
    /// No ticket taken after INIT and two start-up IPIs.
    NoAnswer(u32),
    /// It took a ticket (ran the real-mode code) but never reached long mode.
    NoLongMode(u32),
}

impl core::fmt::Display for StartError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            StartError::NoAnswer(id) => {
                write!(f, "the processor with APIC ID {id} did not answer INIT and two start-up IPIs")
            }
            StartError::NoLongMode(id) => {
                write!(f, "the processor with APIC ID {id} ran the start-up code but never reached long mode")
            }
        }
    }
}

/// Starts the APs (indices 1..count) one at a time through the trampoline
/// at `page`, each on a stack of `stack_size` bytes from `stack_base`:
/// INIT, a 10 ms pause, a start-up IPI, and a second one if the AP has not
/// answered (SDM Vol. 3A 9.4.4.1). Returns once every AP is in long mode.
///
/// # Safety
/// `page` must be free RAM below 1 MiB (4 KiB aligned) and the stacks RAM
/// reserved for the APs (`count - 1` of them); both stay theirs for the run.
pub unsafe fn start_aps(page: u64, stack_base: u64, stack_size: u64) -> Result<(), StartError> {
    // SAFETY: the caller's guarantees; the boot page tables map everything.
    let t = unsafe { Trampoline::install(page, cpu::cr3(), stack_base, stack_size, false) };
    let apic = apic();
    for (i, id) in ids().enumerate().skip(1) {
        let ticket = i as u32 - 1;
        apic.send(Icr::init(id));
        delay(100_000);
        for _ in 0..2 {
            apic.send(Icr::startup(t.vector(), id));
            let mut n = 0;
            while t.tickets() <= ticket && n < 2_000_000 {
                core::hint::spin_loop();
                n += 1;
            }
            if t.tickets() > ticket {
                break;
            }
        }
        if t.tickets() <= ticket {
            return Err(StartError::NoAnswer(id));
        }
        let mut n = 0u64;
        while t.started() <= ticket && n < 50_000_000 {
            core::hint::spin_loop();
            n += 1;
        }
        if t.started() <= ticket {
            return Err(StartError::NoLongMode(id));
        }
    }
    Ok(())
}

fn kick(i: usize) {
    apic().send(Icr::nmi(IDS[i].load(SeqCst)));
}

fn eoi() {
    apic().eoi();
}

fn idle() {
    // SAFETY: `descriptors::init_cpu` installed the NMI stub; the vCPU loop
    // unblocks NMIs after every NMI VM exit before it can idle.
    unsafe { cpu::idle_until_interrupt() }
}

/// The host side of the VM.
pub const HOST_OPS: HostOps = HostOps { this_cpu, kick, eoi, idle };
