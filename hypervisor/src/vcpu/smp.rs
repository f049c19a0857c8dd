//! One vCPU among several: its run state (waiting for SIPI, running,
//! halted), INIT and start-up IPIs, the guest's local APIC registers (the
//! xAPIC page through MMIO emulation, the x2APIC MSRs), the IPIs the guest
//! sends, and the injection of the interrupts other vCPUs send it.
//!
//! * INIT (SDM Vol. 3A 9.4.4.1, 11.6.1): the vCPU drops its shadow root and
//!   waits for a start-up IPI; its APIC returns to the INIT state.
//! * A start-up IPI starts a waiting vCPU in real mode at `vector << 12`:
//!   as virtual-8086 mode on the metaphysical identity map under shadow
//!   paging, natively under EPT (unrestricted guest).
//! * Fixed interrupts are injected as external interrupts (SDM Vol. 3C
//!   26.6) when RFLAGS.IF = 1 and nothing blocks them (STI, MOV SS, an
//!   event already being injected); otherwise interrupt-window exiting asks
//!   for an exit once they can be (25.6.2). Not while the guest's real mode
//!   runs as vm86: they stay pending until it leaves real mode.
//! * HLT: with IF = 1 the vCPU sleeps (host `hlt`) until an interrupt is
//!   deliverable; with IF = 0 until INIT. When no vCPU can ever run again
//!   the run ends with a named error instead of a hang.

use super::mmio;
use super::ptwrite::{self, Emulated};
use super::{PagingBackend, Vcpu, GP, INIT_CR0};
use crate::vcpu::apic::ApicWrite;
use crate::vcpu::cr::GuestControl;
use crate::vm::{req, IpiError, RunState};
use crate::vmx::caps::proc_based;
use crate::vmx::exit_reason::{InterruptionInfo, InterruptionType};
use crate::vmx::fields::{Field32, FieldNatural};
use crate::vmx::instr::GuestRegisters;
use core::sync::atomic::Ordering::SeqCst;
use shared::apic::Icr;
use shared::line::ErrorKind;

/// RFLAGS.IF.
const RFLAGS_IF: u64 = 1 << 9;
/// Interruptibility state: blocking by STI (bit 0) and by MOV SS (bit 1)
/// (SDM Vol. 3C 25.4.2, Table 25-3).
const BLOCKING_STI_MOV_SS: u64 = 0b11;

impl Vcpu<'_> {
    fn set_state(&self, s: RunState) {
        self.vm.vcpus[self.id].state.store(s as u8, SeqCst);
        self.vm.activity.fetch_add(1, SeqCst);
    }

    /// Before each entry: act on requests (stop, INIT, start-up) and sleep
    /// while there is nothing to run.
    pub(super) fn service_requests(&mut self) {
        let vm = self.vm;
        let shared = &vm.vcpus[self.id];
        loop {
            let reqs = shared.requests.swap(0, SeqCst);
            if reqs & req::STOP != 0 {
                self.flush_consoles();
                self.set_state(RunState::Stopped);
                loop {
                    (vm.host.idle)();
                }
            }
            if reqs & req::INIT != 0 {
                self.init_received();
            }
            if reqs & req::SIPI != 0 && shared.state() == RunState::WaitForSipi {
                self.start_up(shared.sipi_vector.load(SeqCst) as u8);
            }
            match shared.state() {
                RunState::Running => return,
                RunState::Halted if self.apic.deliverable(&shared.irr()).is_some() => {
                    self.set_state(RunState::Running);
                    return;
                }
                _ => {}
            }
            if vm.deadlocked() {
                self.die_deadlocked();
            }
            (vm.host.idle)();
        }
    }

    fn die_deadlocked(&mut self) -> ! {
        let mut text = alloc::string::String::new();
        for (i, v) in self.vm.vcpus[..self.vm.count].iter().enumerate() {
            use core::fmt::Write;
            let _ = write!(text, "; vCPU {i}: {}", v.state().name());
        }
        let (rip, id) = (self.rip(), self.id);
        self.die(
            ErrorKind::Unsupported,
            false,
            format_args!("every vCPU is halted or waiting with nothing that could wake it (vCPU {id} at RIP {rip:#x}){text}"),
        )
    }

    /// INIT: back to wait-for-SIPI, without a shadow root.
    fn init_received(&mut self) {
        let shared = &self.vm.vcpus[self.id];
        for w in &shared.irr {
            w.store(0, SeqCst);
        }
        self.apic.init();
        self.publish_apic();
        self.set_window_exiting(false);
        self.vm86 = false;
        if let PagingBackend::Shadow = self.paging {
            let mut g = shadow!(self);
            let (mmu, vmmu) = g.split(self.id);
            mmu.reset_vcpu(vmmu);
        }
        self.guest = GuestControl { cr0: INIT_CR0, cr3: 0, cr4: 0, efer: 0 };
        self.hw_paging = None;
        self.set_state(RunState::WaitForSipi);
        log::debug!("vCPU {} received INIT: waiting for SIPI", self.id);
    }

    /// A start-up IPI with `vector` while waiting for one.
    fn start_up(&mut self, vector: u8) {
        self.regs = GuestRegisters::default();
        self.vmcs.write(Field32::GuestInterruptibility, 0);
        self.vmcs.write(Field32::GuestActivityState, 0);
        self.vmcs.write(FieldNatural::GuestPendingDebugExceptions, 0);
        self.vmcs.write(Field32::EntryInterruptionInfo, 0);
        let init = GuestControl { cr0: INIT_CR0, cr3: 0, cr4: 0, efer: 0 };
        match self.paging {
            PagingBackend::Shadow => {
                if self.mmu_set_paging_mode(init).is_err() {
                    self.die(ErrorKind::HypervisorFault, false, format_args!("the MMU refused the INIT state"));
                }
                self.vmcs.write(FieldNatural::Cr0ReadShadow, init.cr0);
                self.vmcs.write(FieldNatural::Cr4ReadShadow, init.cr4);
                self.sipi_vm86(vector);
            }
            PagingBackend::Ept(_) => self.ept_start_up(vector),
        }
        self.set_state(RunState::Running);
    }

    /// Mirrors the APIC's logical destination registers for senders.
    fn publish_apic(&self) {
        let shared = &self.vm.vcpus[self.id];
        shared.ldr.store(self.apic.ldr(), SeqCst);
        shared.dfr.store(self.apic.dfr(), SeqCst);
    }

    fn set_window_exiting(&mut self, on: bool) {
        if self.window_exiting == on {
            return;
        }
        self.window_exiting = on;
        let mut primary = self.vmcs.read(Field32::PrimaryProcBasedControls) as u32;
        if on {
            primary |= proc_based::INTERRUPT_WINDOW_EXITING;
        } else {
            primary &= !proc_based::INTERRUPT_WINDOW_EXITING;
        }
        self.vmcs.write(Field32::PrimaryProcBasedControls, u64::from(primary));
    }

    /// Before each entry: inject the highest deliverable interrupt request
    /// as an external interrupt, or ask for an interrupt-window exit.
    pub(super) fn inject_pending_interrupt(&mut self) {
        let shared = &self.vm.vcpus[self.id];
        let want = if self.vm86 { None } else { self.apic.deliverable(&shared.irr()) };
        let Some(vector) = want else {
            self.set_window_exiting(false);
            return;
        };
        let busy = InterruptionInfo::decode(self.vmcs.read(Field32::EntryInterruptionInfo) as u32).valid;
        let open = self.vmcs.read(FieldNatural::GuestRflags) & RFLAGS_IF != 0
            && self.vmcs.read(Field32::GuestInterruptibility) & BLOCKING_STI_MOV_SS == 0;
        if busy || !open {
            self.set_window_exiting(true);
            return;
        }
        let info = InterruptionInfo {
            vector,
            kind: InterruptionType::ExternalInterrupt,
            error_code_valid: false,
            nmi_unblocking: false,
            valid: true,
        };
        self.vmcs.write(Field32::EntryInterruptionInfo, u64::from(info.encode()));
        shared.clear_irr(vector);
        self.apic.accept(vector);
        shared.interrupts.fetch_add(1, SeqCst);
        self.set_window_exiting(false);
    }

    /// HLT (SDM Vol. 2A HLT): skip it (and the STI/MOV SS blocking it
    /// consumed) and sleep until something can wake this vCPU.
    pub(super) fn hlt(&mut self) {
        self.advance_rip();
        let intr = self.vmcs.read(Field32::GuestInterruptibility);
        self.vmcs.write(Field32::GuestInterruptibility, intr & !BLOCKING_STI_MOV_SS);
        let if_set = self.vmcs.read(FieldNatural::GuestRflags) & RFLAGS_IF != 0;
        let shared = &self.vm.vcpus[self.id];
        if if_set && !self.vm86 && self.apic.deliverable(&shared.irr()).is_some() {
            return;
        }
        self.set_state(if if_set { RunState::Halted } else { RunState::Parked });
    }

    /// A guest IPI: delivered, or the run stops with what is not modelled.
    fn send_ipi(&mut self, icr: Icr) {
        match self.vm.deliver_ipi(self.id, icr, self.apic.is_x2apic()) {
            Ok(()) => {}
            Err(IpiError::Unsupported(what)) => {
                let rip = self.rip();
                self.die(
                    ErrorKind::Unsupported,
                    false,
                    format_args!("the guest sent an IPI with delivery mode {what} (ICR {icr:?}) at RIP {rip:#x}: Quadrant delivers fixed, lowest-priority, INIT and start-up IPIs only"),
                )
            }
            Err(IpiError::InitToBsp) => {
                let rip = self.rip();
                self.die(
                    ErrorKind::Unsupported,
                    false,
                    format_args!("the guest sent INIT to the bootstrap processor at RIP {rip:#x}: there is no firmware to restart it in"),
                )
            }
        }
    }

    fn apply_apic_write(&mut self, w: ApicWrite) {
        self.publish_apic();
        match w {
            ApicWrite::Done => {}
            ApicWrite::Send(icr) => self.send_ipi(icr),
            ApicWrite::Unsupported(what) => {
                let rip = self.rip();
                self.die(ErrorKind::Unsupported, false, format_args!("the guest programmed {what} at RIP {rip:#x}, which Quadrant does not emulate"))
            }
        }
    }

    /// An access to the xAPIC page at guest-physical `gpa` (linear `gva`):
    /// a 32-bit load, or a 32-bit store (MOV or read-modify-write).
    pub(super) fn apic_mmio(&mut self, gpa: u64, gva: u64) {
        let rip = self.rip();
        let Some((bytes, n)) = self.fetch_instruction() else {
            self.die(ErrorKind::Unsupported, false, format_args!("the instruction at RIP {rip:#x} that touched the local APIC page ({gva:#x}) is not readable"))
        };
        if gpa & 0xf != 0 {
            self.die(ErrorKind::Unsupported, false, format_args!("a misaligned access to local APIC register {gpa:#x} at RIP {rip:#x}"));
        }
        let offset = (gpa & 0xff0) as u32;
        let mut gpr = self.regs.gpr;
        gpr[4] = self.vmcs.read(FieldNatural::GuestRsp);
        let irr = self.vm.vcpus[self.id].irr();
        // Reserved and write-only registers read as 0 here.
        let current = self.apic.read(offset, &irr).unwrap_or(0);
        let bitness = self.code_bitness();
        let len = if let Some(load) = mmio::decode_load(&bytes[..n], bitness) {
            if let Some((r, full)) = mmio::load_result(&gpr, load.dest, current) {
                self.set_gpr(r, full);
            }
            load.len
        } else {
            match ptwrite::emulate(&bytes[..n], bitness, &gpr, gpa & 0xfff, |_| Some(u64::from(current))) {
                Emulated::Store(s) if s.width == 4 => {
                    if s.store {
                        let w = self.apic.write(offset, s.value as u32);
                        self.apply_apic_write(w);
                    }
                    if let Some((r, v)) = s.reg {
                        self.set_gpr(r, v);
                    }
                    if let Some((clear, set)) = s.rflags {
                        let f = self.vmcs.read(FieldNatural::GuestRflags);
                        self.vmcs.write(FieldNatural::GuestRflags, (f & !clear) | set);
                    }
                    s.len
                }
                other => {
                    let why = match other {
                        Emulated::Retry(why) => why,
                        Emulated::Store(_) => "not a 32-bit access (APIC registers are 32-bit words)",
                    };
                    self.die(
                        ErrorKind::Unsupported,
                        false,
                        format_args!("local APIC access at {gpa:#x} by the instruction {:02x?} at RIP {rip:#x}: {why}", &bytes[..n.min(8)]),
                    )
                }
            }
        };
        let next = self.rip().wrapping_add(u64::from(len));
        self.vmcs.write(FieldNatural::GuestRip, next);
    }

    /// WRMSR of IA32_APIC_BASE or an x2APIC register.
    pub(super) fn apic_wrmsr(&mut self, msr: u32, value: u64) {
        let r = if msr == shared::apic::IA32_APIC_BASE {
            self.apic.write_base_msr(value).map(|()| ApicWrite::Done)
        } else {
            self.apic.write_msr(msr, value)
        };
        match r {
            Ok(w) => {
                self.advance_rip();
                self.apply_apic_write(w);
            }
            Err(_) => {
                log::debug!("guest WRMSR {msr:#x} <- {value:#x}: #GP (local APIC)");
                self.inject(GP, Some(0));
            }
        }
    }
}
