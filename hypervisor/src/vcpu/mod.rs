//! One virtual CPU: the VM-exit loop and the handler of every exit Quadrant
//! expects. Anything else ends the run with a named error and a full VMCS
//! dump (DESIGN.md 5), never a hang.
//!
//! The guest's memory reaches it through one of two paging back ends
//! ([`PagingBackend`]), chosen by `mmu=` and fixed for the run:
//! * shadow paging (the default): `paging`, `ptwrite`, `vm86` and
//!   [`realmode`], over the shadow page cache;
//! * [`ept`]: the differential reference, a static identity EPT with
//!   unrestricted guest.
//!
//! * [`setup`]: the initial VMCS;
//! * [`cr`]: the guest's CR0/CR3/CR4/EFER and paging-mode transitions;
//! * [`io`]: port I/O (consoles, the exit port);
//! * `exit_stats`: exits and the hypervisor's cycles by exit reason;
//! * [`paravirt`]: CPUID and hypercalls (`MmuStats` reports zeros for the
//!   shadow counters under EPT);
//! * `paging`: the guest's paging events, applied through the shadow page
//!   cache (`crate::mmu`), and its page-table writes;
//! * [`ptwrite`]: decoding a store to a write-protected guest page table;
//! * `vm86`: the guest's real mode, run as virtual-8086 mode;
//! * [`realmode`]: the instruction emulator for what vm86 cannot run.

/// The shadow page cache, locked, on a shadow-only code path (reaching one
/// under EPT is a hypervisor bug): a guard of [`crate::vm::MmuState`]
/// borrowing nothing of the vCPU. Drop it before anything that locks again.
macro_rules! shadow {
    ($self:ident) => {
        match &$self.paging {
            $crate::vcpu::PagingBackend::Shadow => {
                $self.vm.mmu.as_ref().expect("shadow paging runs with a shadow page cache").lock()
            }
            $crate::vcpu::PagingBackend::Ept(_) => unreachable!("a shadow-paging path was reached under mmu=ept"),
        }
    };
}

pub mod apic;
pub mod cr;
pub mod ept;
mod exit_stats;
pub mod io;
pub mod mmio;
mod paging;
pub mod paravirt;
pub mod ptwrite;
pub mod realmode;
pub mod setup;
mod smp;
mod summary;
mod vm86;

pub use exit_stats::{ExitStats, EXIT_REASONS};
pub use vm86::{TSS_IOMAP_BASE, VM86_TSS_LIMIT};

use crate::arch::{console, cpu};
use crate::config::SelfTest;
use crate::vm::Vm;
use crate::fatal;
use crate::vmx::caps::{self, entry_ctl, VmxCaps};
use crate::vmx::exit_reason::{
    entry_failure_qualification_text, ExitReason, ExitReasonField, InterruptionInfo,
    InterruptionType, IoQualification,
};
use crate::vmx::fields::{Field32, Field32Ro, FieldNatural, FieldNaturalRo};
use crate::vmx::guest_state;
use crate::vmx::instr::{self, ActiveVmcs, GuestRegisters, RunResult};
use core::fmt;
use cr::{efer, GuestControl};
use apic::VirtualApic;
use io::OutEffect;
use setup::Controls;
use shared::line::ErrorKind;

/// Exception vectors used here (SDM Vol. 3A Table 6-1).
const DF: u8 = 8;
const GP: u8 = 13;
const UD: u8 = 6;
const PF: u8 = 14;
const MC: u8 = 18;

/// CR0 after INIT (SDM Vol. 3A 9.1.1, Table 9-1): CD, NW, ET.
pub const INIT_CR0: u64 = 0x6000_0010;

/// How the guest's memory is virtualised (`mmu=`), per vCPU.
pub enum PagingBackend {
    /// Shadow page tables built by `crate::mmu` (`mmu=shadow`): the cache
    /// is the VM's ([`Vm::mmu`]).
    Shadow,
    /// A static identity EPT with unrestricted guest (`mmu=ept`).
    Ept(ept::EptPaging),
}

/// A virtual CPU running one guest.
pub struct Vcpu<'v> {
    vm: &'static Vm,
    /// This vCPU's index (= its host CPU's).
    id: usize,
    vmcs: ActiveVmcs<'v>,
    regs: GuestRegisters,
    paging: PagingBackend,
    /// The guest's local APIC.
    apic: VirtualApic,
    /// Interrupt-window exiting is on (an interrupt waits for IF=1).
    window_exiting: bool,
    /// The guest is in real mode, running as virtual-8086 mode.
    vm86: bool,
    /// The current exit reached the MMU core (for `audit=1`).
    mmu_touched: bool,
    /// The hardware paging state last written (CR3, CR0, CR4, IA-32e).
    hw_paging: Option<(u64, u64, u64, bool)>,
    /// The last #PF exit the guest retries (RIP, linear address, error
    /// code) and how many such exits in a row it took: the livelock check
    /// of [`Vcpu::page_fault`].
    pf_retry: ((u64, u64, u32), u32),
    vm86_tss: u64,
    caps: VmxCaps,
    controls: Controls,
    /// The guest's control registers under shadow paging (under EPT they
    /// live in the VMCS: [`Vcpu::guest_control`]).
    guest: GuestControl,
    nx_supported: bool,
    guest_pat: u64,
    unclaimed_ports: u32,
    /// Exits and the hypervisor's cycles by reason (this vCPU's timing;
    /// the counts are also in [`crate::vm::VcpuShared`] for the others).
    stats: ExitStats,
}

impl<'v> Vcpu<'v> {
    /// Builds the VMCS of vCPU `id` of `vm`: vCPU 0 enters at `start` with
    /// EAX/EBX set per the Multiboot hand-off, the others wait for a
    /// start-up IPI; on the paging back end `paging` (`controls` must be the
    /// matching `Controls::for_shadow_paging`/`for_ept`).
    pub fn new(
        vm: &'static Vm,
        id: usize,
        mut vmcs: ActiveVmcs<'v>,
        caps: VmxCaps,
        controls: Controls,
        paging: PagingBackend,
        start: setup::GuestStart,
    ) -> Self {
        let config = &vm.config;
        setup::write_vmcs(&mut vmcs, &caps, &controls, &start);
        if config.selftest == Some(SelfTest::EntryFailure) && id == 0 {
            // A TSS that is not busy: VM entry must fail on it (SDM Vol. 3C
            // 27.3.1.2), and the report must name GUEST_TR_AR_BYTES.
            log::warn!("selftest=entry-failure: entering with GUEST_TR_AR_BYTES = 0x89 (available TSS)");
            vmcs.write(Field32::GuestTrAccessRights, 0x89);
        }
        let mut regs = GuestRegisters::default();
        regs.gpr[0] = shared::multiboot::BOOTLOADER_MAGIC as u64;
        regs.gpr[3] = start.info;
        let nx_supported = cpu::cpuid(0x8000_0001, 0).3 & (1 << 20) != 0;
        let is_ept = matches!(paging, PagingBackend::Ept(_));
        let apic_id = vm.vcpus[id].apic_id.load(core::sync::atomic::Ordering::SeqCst);
        let mut vcpu = Vcpu {
            vm,
            id,
            vmcs,
            regs,
            paging,
            apic: VirtualApic::new(apic_id, id == 0),
            window_exiting: false,
            vm86: false,
            hw_paging: None,
            mmu_touched: false,
            pf_retry: ((0, 0, 0), 0),
            vm86_tss: start.vm86_tss,
            caps,
            controls,
            guest: GuestControl::MULTIBOOT,
            nx_supported,
            stats: ExitStats::new(),
            guest_pat: 0x0007_0406_0007_0406,
            unclaimed_ports: 0,
        };
        if is_ept {
            // SAFETY: IA32_EFER exists on every CPU with VMX (64-bit host).
            let host_efer = unsafe { cpu::rdmsr(caps::IA32_EFER) };
            vcpu.ept_init_vmcs(host_efer);
        }
        vcpu
    }

    /// The guest's control registers and EFER as it sees them.
    fn guest_control(&self) -> GuestControl {
        match self.paging {
            PagingBackend::Shadow => self.guest,
            PagingBackend::Ept(_) => self.ept_guest_control(),
        }
    }

    /// The command line.
    fn config(&self) -> &crate::config::Config {
        &self.vm.config
    }

    /// Runs the guest until it ends the run (or something fails): vCPU 0
    /// from the Multiboot hand-off, the others once a start-up IPI came.
    pub fn run(mut self) -> ! {
        use core::sync::atomic::Ordering::SeqCst;
        loop {
            self.service_requests();
            match self.paging {
                PagingBackend::Shadow => self.prepare_entry(),
                PagingBackend::Ept(_) => self.ept_prepare_entry(),
            }
            self.inject_pending_interrupt();
            let shared = &self.vm.vcpus[self.id];
            shared.in_guest.store(true, SeqCst);
            if shared.requests.load(SeqCst) != 0 {
                shared.in_guest.store(false, SeqCst);
                continue;
            }
            shared.entries.fetch_add(1, SeqCst);
            if let Some((reason, cycles)) = self.stats.entering(cpu::rdtsc()) {
                shared.exit_cycles[reason].fetch_add(cycles, core::sync::atomic::Ordering::Relaxed);
            }
            // SAFETY: `setup::write_vmcs` wrote this CPU's host state.
            let result = unsafe { self.vmcs.run(&mut self.regs) };
            shared.in_guest.store(false, SeqCst);
            shared.exits.fetch_add(1, SeqCst);
            match result {
                RunResult::Exit => {
                    self.stats.exited(cpu::rdtsc());
                    self.handle_exit()
                }
                RunResult::EntryFailed(fail) => {
                    self.dump_vmcs();
                    fatal::fail(
                        ErrorKind::VmEntryFailure,
                        format_args!("VMLAUNCH/VMRESUME failed: {fail} (guest RIP {:#x})", self.rip()),
                    )
                }
            }
        }
    }

    /// Reads the guest-state fields `vmx::guest_state` checks.
    fn guest_state_snapshot(&self) -> guest_state::GuestStateSnapshot {
        use crate::vmx::fields::{Field16 as F16, Field64 as F64};
        use FieldNatural as FN;
        let seg = |sel: F16, base: FN, limit: Field32, ar: Field32| guest_state::Segment {
            selector: self.vmcs.read(sel) as u16,
            base: self.vmcs.read(base),
            limit: self.vmcs.read(limit) as u32,
            ar: self.vmcs.read(ar) as u32,
        };
        let entry = self.vmcs.read(Field32::EntryControls) as u32;
        guest_state::GuestStateSnapshot {
            cr0: self.vmcs.read(FN::GuestCr0),
            cr4: self.vmcs.read(FN::GuestCr4),
            rflags: self.vmcs.read(FN::GuestRflags),
            rip: self.rip(),
            segments: [
                seg(F16::GuestEsSelector, FN::GuestEsBase, Field32::GuestEsLimit, Field32::GuestEsAccessRights),
                seg(F16::GuestCsSelector, FN::GuestCsBase, Field32::GuestCsLimit, Field32::GuestCsAccessRights),
                seg(F16::GuestSsSelector, FN::GuestSsBase, Field32::GuestSsLimit, Field32::GuestSsAccessRights),
                seg(F16::GuestDsSelector, FN::GuestDsBase, Field32::GuestDsLimit, Field32::GuestDsAccessRights),
                seg(F16::GuestFsSelector, FN::GuestFsBase, Field32::GuestFsLimit, Field32::GuestFsAccessRights),
                seg(F16::GuestGsSelector, FN::GuestGsBase, Field32::GuestGsLimit, Field32::GuestGsAccessRights),
                seg(F16::GuestLdtrSelector, FN::GuestLdtrBase, Field32::GuestLdtrLimit, Field32::GuestLdtrAccessRights),
                seg(F16::GuestTrSelector, FN::GuestTrBase, Field32::GuestTrLimit, Field32::GuestTrAccessRights),
            ],
            activity_state: self.vmcs.read(Field32::GuestActivityState) as u32,
            interruptibility: self.vmcs.read(Field32::GuestInterruptibility) as u32,
            link_pointer: self.vmcs.read(F64::VmcsLinkPointer),
            ia32e_mode_guest: entry & entry_ctl::IA32E_MODE_GUEST != 0,
            unrestricted_guest: matches!(self.paging, PagingBackend::Ept(_)),
            cr0_fixed: (self.caps.cr0_fixed0, self.caps.cr0_fixed1),
            cr4_fixed: (self.caps.cr4_fixed0, self.caps.cr4_fixed1),
        }
    }

    fn rip(&self) -> u64 {
        self.vmcs.read(FieldNatural::GuestRip)
    }

    fn advance_rip(&mut self) {
        let len = self.vmcs.read(Field32Ro::ExitInstructionLength);
        let rip = self.rip();
        self.vmcs.write(FieldNatural::GuestRip, rip.wrapping_add(len));
    }

    fn gpr(&self, n: u8) -> u64 {
        if n == 4 {
            self.vmcs.read(FieldNatural::GuestRsp)
        } else {
            self.regs.gpr[n as usize]
        }
    }

    fn set_gpr(&mut self, n: u8, v: u64) {
        if n == 4 {
            self.vmcs.write(FieldNatural::GuestRsp, v);
        } else {
            self.regs.gpr[n as usize] = v;
        }
    }

    /// Injects a hardware exception at the next entry (SDM Vol. 3C 26.6).
    fn inject(&mut self, vector: u8, error_code: Option<u32>) {
        let info = InterruptionInfo::hardware_exception(vector, error_code.is_some());
        self.vmcs.write(Field32::EntryInterruptionInfo, info.encode() as u64);
        if let Some(ec) = error_code {
            self.vmcs.write(Field32::EntryExceptionErrorCode, ec as u64);
        }
    }

    fn dump_vmcs(&self) {
        console::line(format_args!("[hv] VMCS dump:"));
        instr::dump(&self.vmcs, |name, v| console::line(format_args!("[hv]   {name:<36} {v:#018x}")));
    }

    /// Ends the run with a named error, after the VMCS dump and the guest's
    /// pending console output.
    fn die(&mut self, kind: ErrorKind, dump: bool, text: fmt::Arguments<'_>) -> ! {
        self.flush_consoles();
        if dump {
            self.dump_vmcs();
        }
        fatal::fail(kind, text)
    }

    fn flush_consoles(&mut self) {
        let mut c = self.vm.consoles.lock();
        if let Some(l) = c.com1.pending() {
            console::line(format_args!("{l}"));
        }
        if let Some(l) = c.debugcon.pending() {
            console::line(format_args!("{l}"));
        }
    }

    fn handle_exit(&mut self) {
        self.mmu_touched = false;
        self.dispatch_exit();
        // `audit=1`: after every exit that reached the MMU core (page faults,
        // CR0/CR3/CR4/EFER writes, INVLPG, page-table writes, mode changes);
        // port I/O, CPUID and hypercalls cannot change its state.
        if self.config().audit && self.mmu_touched {
            self.audit();
        }
    }

    fn dispatch_exit(&mut self) {
        use core::sync::atomic::Ordering::Relaxed;
        let reason = ExitReasonField::decode(self.vmcs.read(Field32Ro::ExitReason) as u32);
        self.stats.count(reason.basic);
        let total = self.vm.total_exits.fetch_add(1, Relaxed) + 1;
        if let Some(n) = self.vm.vcpus[self.id].exit_counts.get(reason.basic as usize) {
            n.fetch_add(1, Relaxed);
        }
        if self.config().max_exits != 0 && total > self.config().max_exits {
            let (rip, max) = (self.rip(), self.config().max_exits);
            self.die(
                ErrorKind::Timeout,
                false,
                format_args!("the guest did not finish within max_exits={max} VM exits (RIP {rip:#x})"),
            );
        }
        if reason.entry_failure {
            let qual = self.vmcs.read(FieldNaturalRo::ExitQualification);
            let culprit = guest_state::check(&self.guest_state_snapshot());
            let mode = self.guest_control().mode().name();
            let rip = self.rip();
            let text = entry_failure_qualification_text(reason.basic, qual);
            match culprit {
                Some(v) => self.die(
                    ErrorKind::VmEntryFailure,
                    true,
                    format_args!("VM entry failed: {reason}: {text}; failing field: {v} (guest {mode} at RIP {rip:#x})"),
                ),
                None => self.die(
                    ErrorKind::VmEntryFailure,
                    true,
                    format_args!(
                        "VM entry failed: {reason}: {text}; no covered guest-state rule is broken, see the VMCS dump (guest {mode} at RIP {rip:#x})"
                    ),
                ),
            }
        }
        match reason.reason() {
            Some(ExitReason::ExceptionOrNmi) => self.exception_exit(),
            // A host interrupt, acknowledged on exit (a kick from another
            // vCPU, or spurious): EOI to the host's local APIC; whatever the
            // kick was for is looked at before the next entry.
            Some(ExitReason::ExternalInterrupt) => {
                let info = InterruptionInfo::decode(self.vmcs.read(Field32Ro::ExitInterruptionInfo) as u32);
                if info.vector != crate::vm::SPURIOUS_VECTOR {
                    (self.vm.host.eoi)();
                }
                // It may have cut the delivery of a guest event short.
                self.reinject_vectoring_event();
            }
            // IF became 1: the pending interrupt is injected before the entry.
            Some(ExitReason::InterruptWindow) => {}
            Some(ExitReason::TripleFault) => {
                let g = self.guest_control();
                self.die(
                    ErrorKind::TripleFault,
                    true,
                    format_args!(
                        "the guest triple-faulted at RIP {:#x} in {} (CR0 {:#x} CR3 {:#x} CR4 {:#x} EFER {:#x})",
                        self.rip(),
                        g.mode().name(),
                        g.cr0,
                        g.cr3,
                        g.cr4,
                        g.efer
                    ),
                )
            }
            Some(ExitReason::Cpuid) => {
                let features = match self.paging {
                    PagingBackend::Shadow => shared::cpuid::FEATURE_SHADOW_PAGING,
                    PagingBackend::Ept(_) => 0,
                };
                let (a, b, c, d) =
                    paravirt::guest_cpuid(self.regs.gpr[0] as u32, self.regs.gpr[1] as u32, features, cpu::cpuid);
                self.regs.gpr[0] = a as u64;
                self.regs.gpr[3] = b as u64;
                self.regs.gpr[1] = c as u64;
                self.regs.gpr[2] = d as u64;
                self.advance_rip();
            }
            Some(ExitReason::Hlt) => self.hlt(),
            Some(ExitReason::Invlpg) => {
                // Under EPT only a CPU that forces INVLPG exiting gets here;
                // without VPID the entry flushes the guest's TLB anyway
                // (SDM Vol. 3C 29.4.3.1).
                if let PagingBackend::Shadow = self.paging {
                    self.mmu_touched = true;
                    let gva = self.vmcs.read(FieldNaturalRo::ExitQualification);
                    let flush = {
                        let mut g = shadow!(self);
                        let (mmu, vmmu) = g.split(self.id);
                        mmu.invlpg(vmmu, gva)
                    };
                    self.vm.flush(self.id, flush);
                }
                self.advance_rip();
            }
            // VMX is hidden (CPUID.1:ECX.VMX=0, and the guest's CR4.VMXE
            // reads 0): these instructions are #UD for the guest (SDM Vol. 3C
            // 31.3 "VMXON": #UD if CR4.VMXE = 0), although the hardware runs
            // it with VMXE=1 and therefore exits.
            Some(
                ExitReason::Vmclear
                | ExitReason::Vmlaunch
                | ExitReason::Vmptrld
                | ExitReason::Vmptrst
                | ExitReason::Vmread
                | ExitReason::Vmresume
                | ExitReason::Vmwrite
                | ExitReason::Vmxoff
                | ExitReason::Vmxon
                | ExitReason::Invept
                | ExitReason::Invvpid
                | ExitReason::Vmfunc,
            ) => self.inject(UD, None),
            Some(ExitReason::Vmcall) => {
                self.hypercall();
                self.advance_rip();
            }
            Some(ExitReason::CrAccess) => match self.paging {
                PagingBackend::Shadow => self.cr_access(),
                PagingBackend::Ept(_) => self.ept_cr_access(),
            },
            Some(ExitReason::EptViolation) => self.ept_violation(),
            Some(ExitReason::EptMisconfiguration) => self.ept_misconfiguration(),
            Some(ExitReason::IoInstruction) => self.io(),
            Some(ExitReason::Rdmsr) => self.rdmsr(),
            Some(ExitReason::Wrmsr) => self.wrmsr(),
            _ => {
                let qual = self.vmcs.read(FieldNaturalRo::ExitQualification);
                let rip = self.rip();
                self.die(
                    ErrorKind::UnhandledExit,
                    true,
                    format_args!("unhandled VM exit: {reason} (qualification {qual:#x}) at guest RIP {rip:#x}"),
                )
            }
        }
    }

    fn exception_exit(&mut self) {
        let info = InterruptionInfo::decode(self.vmcs.read(Field32Ro::ExitInterruptionInfo) as u32);
        match (info.kind, info.vector) {
            // A kick from another vCPU (`vm::HostOps::kick`), or a stray NMI:
            // either way, what it asks for is looked at before the next
            // entry. NMIs stay blocked after an NMI exit until an IRET.
            (InterruptionType::Nmi, _) => {
                cpu::unblock_nmi();
                // The guest never saw this NMI, so its own NMI blocking is
                // what it was: none (Quadrant injects no NMIs). Bochs 2.7
                // saves "blocking by NMI" (interruptibility bit 3) after an
                // NMI exit, which would keep the next kick from exiting
                // until the guest's next IRET (SDM Vol. 3C 25.4.2, 26.3.1.5).
                let intr = self.vmcs.read(Field32::GuestInterruptibility);
                self.vmcs.write(Field32::GuestInterruptibility, intr & !(1 << 3));
                // It may have cut the delivery of a guest event short (SDM
                // Vol. 3C 28.2.4: IDT-vectoring information).
                self.reinject_vectoring_event();
            }
            (_, PF) => self.page_fault(),
            (_, v) if self.vm86 => self.vm86_exception(v),
            (_, MC) => self.die(ErrorKind::HypervisorFault, true, format_args!("machine check while the guest ran")),
            (_, v) => {
                let rip = self.rip();
                self.die(ErrorKind::UnhandledExit, true, format_args!("unexpected exception exit: {info} (vector {v}) at RIP {rip:#x}"))
            }
        }
    }

    fn io(&mut self) {
        let q = IoQualification::decode(self.vmcs.read(FieldNaturalRo::ExitQualification));
        if q.string {
            let rip = self.rip();
            self.die(
                ErrorKind::Unsupported,
                false,
                format_args!("string I/O (INS/OUTS{}) on port {:#x} at RIP {rip:#x} is not emulated", if q.rep { " with REP" } else { "" }, q.port),
            );
        }
        let mask: u64 = match q.size {
            1 => 0xff,
            2 => 0xffff,
            _ => 0xffff_ffff,
        };
        let rax = self.regs.gpr[0];
        let value = self.port_access(q.port, q.size, q.is_in, (rax & mask) as u32);
        if q.is_in {
            // IN AL/AX keep the rest of RAX; IN EAX zero-extends (SDM Vol. 1 3.4.1.1).
            self.regs.gpr[0] = if q.size == 4 { value as u64 } else { (rax & !mask) | value as u64 };
        }
        self.advance_rip();
    }

    /// One guest port access (from an I/O exit or the real-mode emulator):
    /// returns the value an IN reads.
    fn port_access(&mut self, port: u16, size: u8, is_in: bool, value: u32) -> u32 {
        if is_in {
            let (v, claimed) = io::port_in(port, size);
            if !claimed {
                self.note_unclaimed(port, "IN");
            }
            return v;
        }
        match io::port_out(port, size, value) {
            OutEffect::Com1(b) => {
                if let Some(l) = self.vm.consoles.lock().com1.push(b) {
                    console::line(format_args!("{l}"));
                }
            }
            OutEffect::DebugCon(b) => {
                if let Some(l) = self.vm.consoles.lock().debugcon.push(b) {
                    console::line(format_args!("{l}"));
                }
            }
            OutEffect::Exit(status) => self.guest_exit(status),
            OutEffect::Ignored => {}
            OutEffect::Unclaimed => self.note_unclaimed(port, "OUT"),
        }
        0
    }

    fn note_unclaimed(&mut self, port: u16, dir: &str) {
        self.unclaimed_ports += 1;
        if self.unclaimed_ports <= 8 {
            log::debug!("guest {dir} on port {port:#x}: no device (reads all ones, writes dropped)");
        }
    }

    fn rdmsr(&mut self) {
        let msr = self.regs.gpr[1] as u32;
        let value = match msr {
            efer::MSR => Some(self.guest_control().efer),
            caps::IA32_PAT => Some(self.guest_pat),
            // Locked with VMX off: consistent with CPUID hiding VMX.
            caps::IA32_FEATURE_CONTROL => Some(1),
            shared::apic::IA32_APIC_BASE => Some(self.apic.base_msr()),
            shared::apic::X2APIC_MSR_BASE..=shared::apic::X2APIC_MSR_LAST => {
                let irr = self.vm.vcpus[self.id].irr();
                self.apic.read_msr(msr, &irr).ok()
            }
            // Harmless to read through: TSC, MTRR capabilities.
            0x10 | 0xfe | 0x2ff => {
                // SAFETY: these MSRs exist on every CPU with VMX.
                Some(unsafe { cpu::rdmsr(msr) })
            }
            _ => None,
        };
        match value {
            Some(v) => {
                self.regs.gpr[0] = v & 0xffff_ffff;
                self.regs.gpr[2] = v >> 32;
                self.advance_rip();
            }
            None => {
                log::debug!("guest RDMSR {msr:#x}: not virtualised, #GP");
                self.inject(GP, Some(0));
            }
        }
    }

    fn wrmsr(&mut self) {
        let msr = self.regs.gpr[1] as u32;
        let value = (self.regs.gpr[2] << 32) | (self.regs.gpr[0] & 0xffff_ffff);
        match msr {
            efer::MSR if matches!(self.paging, PagingBackend::Ept(_)) => self.ept_write_efer(value),
            efer::MSR => match self.guest.write_efer(value, self.nx_supported) {
                Some(v) => {
                    let next = GuestControl { efer: v, ..self.guest };
                    if self.apply_paging_state(next) {
                        self.advance_rip();
                    }
                }
                None => self.inject(GP, Some(0)),
            },
            caps::IA32_PAT => {
                self.guest_pat = value;
                self.advance_rip();
            }
            shared::apic::IA32_APIC_BASE | shared::apic::X2APIC_MSR_BASE..=shared::apic::X2APIC_MSR_LAST => {
                self.apic_wrmsr(msr, value)
            }
            _ => {
                log::debug!("guest WRMSR {msr:#x} <- {value:#x}: not virtualised, #GP");
                self.inject(GP, Some(0));
            }
        }
    }
}

