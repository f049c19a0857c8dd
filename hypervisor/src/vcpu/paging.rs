//! The guest's paging, applied through the shadow page cache.
//!
//! Every guest event that changes translation goes to the MMU core
//! (`crate::mmu`): MOV to CR0/CR4 and WRMSR EFER (`set_paging_mode`), MOV to
//! CR3 (`load_cr3`), INVLPG, #PF exits (`page_fault`), and stores to
//! write-protected guest page tables (`guest_pt_write`, after
//! [`super::ptwrite`] decoded them). Before every VM entry the core chooses
//! the hardware CR0/CR3/CR4 and IA-32e mode ([`Vcpu::prepare_entry`]).
//!
//! TLB: without VPID every VM entry and exit flushes the guest's
//! translations (SDM Vol. 3C 29.4.3.1 with VPID disabled), so the part of
//! a `Flush` for this vCPU is met by its next entry; other vCPUs in it are
//! kicked out of the guest before this one goes on ([`crate::vm::Vm::flush`]).

use super::cr::{cr0, cr4, Cr0Write, GuestControl, GUEST_CR4_BITS};
use super::ptwrite::{self, Emulated};
use super::{Vcpu, DF, GP, PF};
use crate::arch::phys::GuestRamView;
use crate::mmu::walk::{self, AccessKind, MemAccess};
use crate::mmu::{FaultOutcome, GuestMode, InjectGp};
use crate::vmx::caps::{self, entry_ctl};
use crate::vmx::exit_reason::{CrAccess, CrAccessType, InterruptionInfo, InterruptionType};
use crate::vmx::fields::{Field32, Field32Ro, FieldNatural, FieldNaturalRo};
use shared::line::ErrorKind;

/// #PF exits in a row at one instruction, address and error code, each
/// resolved for a retry, that end the run as an MMU livelock. A fill or a
/// trapped write takes one or two; a guest that retries on its own gets
/// the #PF injected and resets the count.
pub(super) const PF_RETRY_LIMIT: u32 = 10_000;

impl Vcpu<'_> {
    /// Loads the hardware paging state the MMU core chose for the guest's
    /// current mode (a zapped root is rebuilt here).
    pub(super) fn prepare_entry(&mut self) {
        let hw = {
            let mut g = shadow!(self);
            let (mmu, vmmu) = g.split(self.id);
            mmu.prepare_entry(vmmu)
        };
        let hw = match hw {
            Ok(hw) => hw,
            Err(e) => self.die(
                ErrorKind::HypervisorFault,
                false,
                format_args!("the shadow page cache cannot build a root: {e:?} (pool too small for the loaded roots)"),
            ),
        };
        self.vm.flush(self.id, hw.flush);
        let (c0f0, c0f1, c4f0, c4f1) = (self.caps.cr0_fixed0, self.caps.cr0_fixed1, self.caps.cr4_fixed0, self.caps.cr4_fixed1);
        let hw_cr0 = caps::fixed_cr(self.guest.hardware_cr0(hw.cr0_set), c0f0, c0f1);
        let hw_cr4 = caps::fixed_cr(self.guest.hardware_cr4(hw.cr4, self.vm86), c4f0, c4f1);
        let ia32e = hw.efer & crate::mmu::EFER_LMA != 0;
        let want = (hw.cr3, hw_cr0, hw_cr4, ia32e);
        if self.hw_paging == Some(want) {
            return;
        }
        self.hw_paging = Some(want);
        self.vmcs.write(FieldNatural::GuestCr3, hw.cr3);
        self.vmcs.write(FieldNatural::GuestCr0, hw_cr0);
        self.vmcs.write(FieldNatural::GuestCr4, hw_cr4);
        // The "IA-32e mode guest" entry control follows EFER.LMA (SDM Vol.
        // 3C 25.8.1; without "load IA32_EFER", entry sets EFER.LMA/LME
        // from it, 27.3.2.1).
        let entry = if ia32e {
            self.controls.entry | entry_ctl::IA32E_MODE_GUEST
        } else {
            self.controls.entry & !entry_ctl::IA32E_MODE_GUEST
        };
        self.vmcs.write(Field32::EntryControls, entry as u64);
    }

    /// Gives the guest control state `next` to the MMU core; on success it
    /// becomes the guest's and the read shadows show it. Returns false when
    /// the architecture raises #GP instead (injected).
    pub(super) fn apply_paging_state(&mut self, next: GuestControl) -> bool {
        match self.mmu_set_paging_mode(next) {
            Err(InjectGp) => {
                self.inject(GP, Some(0));
                false
            }
            Ok(()) => {
                self.vmcs.write(FieldNatural::Cr0ReadShadow, next.cr0);
                self.vmcs.write(FieldNatural::Cr4ReadShadow, next.cr4);
                true
            }
        }
    }

    /// Gives the guest control state `next` to the MMU core (MOV to CR0/CR4,
    /// WRMSR EFER, INIT); on success it becomes the guest's. Performs the
    /// flush. The read shadows are the caller's.
    pub(super) fn mmu_set_paging_mode(&mut self, next: GuestControl) -> Result<(), InjectGp> {
        self.mmu_touched = true;
        let mem = GuestRamView(&self.vm.ram);
        let r = {
            let mut g = shadow!(self);
            let (mmu, vmmu) = g.split(self.id);
            mmu.set_paging_mode(vmmu, &mem, next.cr0, next.cr4, next.efer)
        };
        let flush = r?;
        self.vm.flush(self.id, flush);
        self.guest = next;
        Ok(())
    }

    /// MOV to CR3 through the MMU core (PDPTEs loaded, SDM Vol. 3A 4.4.1);
    /// on success it becomes the guest's CR3. Performs the flush.
    pub(super) fn mmu_load_cr3(&mut self, value: u64) -> Result<(), InjectGp> {
        self.mmu_touched = true;
        let mem = GuestRamView(&self.vm.ram);
        let r = {
            let mut g = shadow!(self);
            let (mmu, vmmu) = g.split(self.id);
            mmu.load_cr3(vmmu, &mem, value)
        };
        self.vm.flush(self.id, r?);
        self.guest.cr3 = value;
        Ok(())
    }

    pub(super) fn page_fault(&mut self) {
        self.mmu_touched = true;
        let gva = self.vmcs.read(FieldNaturalRo::ExitQualification);
        let hw_ec = self.vmcs.read(Field32Ro::ExitInterruptionErrorCode) as u32;
        // EFLAGS.AC at CPL < 3 (CPL = CS.DPL): SMAP's exception for explicit
        // supervisor accesses (SDM Vol. 3A 4.6.1).
        let ac = self.vmcs.read(FieldNatural::GuestRflags) & (1 << 18) != 0
            && (self.vmcs.read(Field32::GuestCsAccessRights) >> 5) & 3 != 3;
        let mut mem = GuestRamView(&self.vm.ram);
        let outcome = {
            let mut g = shadow!(self);
            let (mmu, vmmu) = g.split(self.id);
            vmmu.set_explicit_ac(ac);
            mmu.page_fault(vmmu, &mut mem, gva, hw_ec)
        };
        let rip = self.rip();
        let retried = matches!(outcome, FaultOutcome::Fixed { .. } | FaultOutcome::EmulateWrite { .. });
        self.handle_fault_outcome(outcome, gva);
        // The guest executes the same instruction again (nothing emulated
        // it, nothing injected): count it, and end a livelock with a report
        // instead of a timeout.
        if retried && self.rip() == rip {
            self.check_fault_progress((rip, gva, hw_ec));
        } else {
            self.pf_retry.1 = 0;
        }
    }

    /// Ends the run when the guest took [`PF_RETRY_LIMIT`] #PF exits in a
    /// row at the same instruction, address and error code that the MMU
    /// resolved for a retry: the retries do not make the access succeed
    /// (an MMU livelock; a run would otherwise only end at its timeout).
    fn check_fault_progress(&mut self, key: (u64, u64, u32)) {
        if self.pf_retry.0 == key {
            self.pf_retry.1 += 1;
        } else {
            self.pf_retry = (key, 1);
        }
        if self.pf_retry.1 >= PF_RETRY_LIMIT {
            let (rip, gva, ec) = key;
            let g = self.guest_control();
            self.die(
                ErrorKind::HypervisorFault,
                false,
                format_args!(
                    "no progress: {PF_RETRY_LIMIT} #PF exits in a row at RIP {rip:#x}, linear {gva:#x}, error code {ec:#x} ({} CR3 {:#x}), each resolved for a retry that faulted again: the shadow MMU livelocks on this access",
                    g.mode().name(),
                    g.cr3
                ),
            )
        }
    }

    fn handle_fault_outcome(&mut self, outcome: FaultOutcome, gva: u64) {
        match outcome {
            FaultOutcome::Fixed { flush } => {
                self.vm.flush(self.id, flush);
                self.reinject_vectoring_event();
            }
            FaultOutcome::InjectPf { error_code, cr2, flush } => {
                self.vm.flush(self.id, flush);
                self.regs.cr2 = cr2;
                // A #PF while delivering a #PF or a contributory exception is
                // a double fault; while delivering #DF a triple fault (SDM
                // Vol. 3A 6.15, Table 6-5).
                let vectoring = InterruptionInfo::decode(self.vmcs.read(Field32Ro::IdtVectoringInfo) as u32);
                if vectoring.valid && vectoring.kind == InterruptionType::HardwareException {
                    match vectoring.vector {
                        DF => {
                            let rip = self.rip();
                            self.die(ErrorKind::TripleFault, true, format_args!("#PF while delivering #DF at RIP {rip:#x}"))
                        }
                        0 | 10..=14 => return self.inject(DF, Some(0)),
                        _ => {}
                    }
                }
                self.inject(PF, Some(error_code));
            }
            FaultOutcome::OutsideRam { gpa, flush } => {
                self.vm.flush(self.id, flush);
                if self.apic.mmio_enabled() && gpa & !0xfff == self.apic.mmio_base() {
                    return self.apic_mmio(gpa, gva);
                }
                let rip = self.rip();
                let ram_mib = self.vm.ram.size() >> 20;
                self.die(
                    ErrorKind::Unsupported,
                    false,
                    format_args!(
                        "the guest accessed guest-physical {gpa:#x} (linear {gva:#x}, RIP {rip:#x}), outside its {ram_mib} MiB of RAM; no MMIO is emulated"
                    ),
                )
            }
            FaultOutcome::EmulateWrite { gpa, flush } => {
                self.vm.flush(self.id, flush);
                self.emulate_pt_write(gpa, gva);
            }
            FaultOutcome::NoShadowFrames => self.die(
                ErrorKind::HypervisorFault,
                false,
                format_args!("the shadow page pool holds only loaded roots: too many vCPUs for its size"),
            ),
        }
    }

    /// After an exit during event delivery that the hypervisor resolved
    /// (a shadow fill), the event must be delivered again (SDM Vol. 3C
    /// 28.2.4, 29.2.2).
    pub(super) fn reinject_vectoring_event(&mut self) {
        let raw = self.vmcs.read(Field32Ro::IdtVectoringInfo) as u32;
        let v = InterruptionInfo::decode(raw);
        if !v.valid {
            return;
        }
        let reinject = InterruptionInfo { nmi_unblocking: false, ..v };
        self.vmcs.write(Field32::EntryInterruptionInfo, reinject.encode() as u64);
        if v.error_code_valid {
            let ec = self.vmcs.read(Field32Ro::IdtVectoringErrorCode);
            self.vmcs.write(Field32::EntryExceptionErrorCode, ec);
        }
        if matches!(
            v.kind,
            InterruptionType::SoftwareInterrupt
                | InterruptionType::SoftwareException
                | InterruptionType::PrivilegedSoftwareException
        ) {
            let len = self.vmcs.read(Field32Ro::ExitInstructionLength);
            self.vmcs.write(Field32::EntryInstructionLength, len);
        }
    }

    /// The code segment's default operand size: 64, 32 or 16.
    pub(super) fn code_bitness(&self) -> u32 {
        let ar = self.vmcs.read(Field32::GuestCsAccessRights);
        if self.vm86 {
            16
        } else if self.guest_control().efer & crate::mmu::EFER_LMA != 0 && ar & (1 << 13) != 0 {
            64
        } else if ar & (1 << 14) != 0 {
            32
        } else {
            16
        }
    }

    /// Reads up to 15 bytes of the instruction at CS:RIP through the guest's
    /// own translation (SDM Vol. 3A 3.4.4: linear = CS base + RIP, the base
    /// being 0 in 64-bit mode).
    pub(super) fn fetch_instruction(&mut self) -> Option<([u8; 15], usize)> {
        let bitness = self.code_bitness();
        let rip = self.rip();
        let linear = if bitness == 64 {
            rip
        } else {
            (self.vmcs.read(FieldNatural::GuestCsBase) + rip) & 0xffff_ffff
        };
        let user = (self.vmcs.read(Field32::GuestCsAccessRights) >> 5) & 3 == 3;
        let ctx = self.paging_ctx();
        let mut mem = GuestRamView(&self.vm.ram);
        let mut bytes = [0u8; 15];
        let mut n = 0;
        while n < bytes.len() {
            let lin = linear.wrapping_add(n as u64);
            let gpa = if ctx.mode == GuestMode::NoPaging {
                lin & 0xffff_ffff
            } else {
                walk::walk(&ctx, &mut mem, lin, MemAccess { kind: AccessKind::Fetch, user }).ok()?.gpa
            };
            let chunk = (4096 - (lin & 0xfff) as usize).min(bytes.len() - n);
            if !self.vm.ram.read(gpa, &mut bytes[n..n + chunk]) {
                break;
            }
            n += chunk;
        }
        (n > 0).then_some((bytes, n))
    }

    /// Emulates the guest store that faulted on the write-protected guest
    /// page table at `gpa`, or unshadows the frame and lets the guest retry
    /// the instruction natively. Under the MMU lock, so emulated stores of
    /// several vCPUs do not interleave; a read-modify-write instruction is
    /// stored only if memory still holds what it was computed from (another
    /// vCPU may store natively to an unshadowed page meanwhile), else it is
    /// computed again, so LOCK CMPXCHG and friends stay atomic.
    fn emulate_pt_write(&mut self, gpa: u64, gva: u64) {
        let fetched = self.fetch_instruction();
        let bitness = self.code_bitness();
        let mut gpr = self.regs.gpr;
        gpr[4] = self.vmcs.read(FieldNatural::GuestRsp);
        let ram = &self.vm.ram;
        let mut mem = GuestRamView(ram);
        let mut flush = crate::mmu::Flush::NONE;
        let emulated = {
            let mut g = shadow!(self);
            let (mmu, vmmu) = g.split(self.id);
            loop {
                let Some((bytes, n)) = fetched else { break Emulated::Retry("instruction bytes not readable") };
                let seen = core::cell::Cell::new(0u64);
                let old = |w: u8| {
                    let mut b = [0u8; 8];
                    let v = ram.read(gpa, &mut b[..w as usize]).then(|| u64::from_le_bytes(b))?;
                    seen.set(v);
                    Some(v)
                };
                let e = ptwrite::emulate(&bytes[..n], bitness, &gpr, gva & 0xfff, old);
                match e {
                    Emulated::Store(s) if s.store && s.reads_old() => {
                        let (f, written) = mmu.guest_pt_cmpxchg(vmmu, &mut mem, gpa, s.width, seen.get(), s.value);
                        flush = flush.or(f);
                        if written {
                            break e;
                        }
                    }
                    Emulated::Store(s) if s.store => {
                        flush = flush.or(mmu.guest_pt_write(vmmu, &mut mem, gpa, s.width, s.value));
                        break e;
                    }
                    _ => break e,
                }
            }
        };
        self.vm.flush(self.id, flush);
        match emulated {
            Emulated::Store(s) => {
                if let Some((r, v)) = s.reg {
                    self.set_gpr(r, v);
                }
                if let Some((clear, set)) = s.rflags {
                    let f = self.vmcs.read(FieldNatural::GuestRflags);
                    self.vmcs.write(FieldNatural::GuestRflags, (f & !clear) | set);
                }
                let rip = self.rip().wrapping_add(s.len as u64);
                let rip = if self.code_bitness() == 16 { rip & 0xffff } else { rip };
                self.vmcs.write(FieldNatural::GuestRip, rip);
            }
            Emulated::Retry(why) => {
                let flush = {
                    let mut g = shadow!(self);
                    let (mmu, vmmu) = g.split(self.id);
                    if mmu.is_write_protected(gpa >> 12) {
                        log::debug!("guest page-table store at {gpa:#x} not emulated ({why}): unshadowing the frame and retrying");
                        mmu.unshadow(gpa >> 12)
                    } else {
                        // Not a page table: a supervisor write with CR0.WP=0,
                        // SMAP and AC=1 to a read-only user page.
                        log::debug!("store at {gpa:#x} (WP=0, SMAP, AC=1) not emulated ({why}): running it natively");
                        vmmu.smap_wp0_emulation_failed();
                        crate::mmu::Flush::NONE
                    }
                };
                self.vm.flush(self.id, flush);
            }
        }
    }

    pub(super) fn cr_access(&mut self) {
        let q = CrAccess::decode(self.vmcs.read(FieldNaturalRo::ExitQualification));
        match (q.access, q.cr) {
            (CrAccessType::MovToCr, 0) => self.write_cr0(self.gpr(q.gpr)),
            (CrAccessType::Clts, _) => self.write_cr0(self.guest.cr0 & !cr0::TS),
            (CrAccessType::Lmsw, _) => {
                // LMSW loads CR0[3:0] but cannot clear PE (SDM Vol. 2A LMSW).
                let src = q.lmsw_source_data as u64 & 0xf;
                self.write_cr0((self.guest.cr0 & !0xe) | src | (self.guest.cr0 & cr0::PE));
            }
            (CrAccessType::MovToCr, 3) => {
                if self.load_cr3(self.gpr(q.gpr)) {
                    self.advance_rip();
                }
            }
            (CrAccessType::MovFromCr, 3) => {
                self.set_gpr(q.gpr, self.guest.cr3);
                self.advance_rip();
            }
            (CrAccessType::MovToCr, 4) => self.write_cr4(self.gpr(q.gpr)),
            _ => {
                let rip = self.rip();
                self.die(ErrorKind::UnhandledExit, true, format_args!("unexpected control-register exit: {q} at RIP {rip:#x}"))
            }
        }
    }

    /// MOV to CR3: the PAE PDPTEs are loaded here (SDM Vol. 3A 4.4.1);
    /// returns false when #GP was injected instead.
    pub(super) fn load_cr3(&mut self, value: u64) -> bool {
        match self.mmu_load_cr3(value) {
            Ok(()) => true,
            Err(InjectGp) => {
                self.inject(GP, Some(0));
                false
            }
        }
    }

    fn write_cr0(&mut self, value: u64) {
        match self.guest.write_cr0(value) {
            Cr0Write::Gp => self.inject(GP, Some(0)),
            Cr0Write::Accept { cr0: new_cr0, efer: new_efer } => {
                let leaving_protected_mode = self.guest.cr0 & cr0::PE != 0 && new_cr0 & cr0::PE == 0;
                let next = GuestControl { cr0: new_cr0, efer: new_efer, ..self.guest };
                if self.apply_paging_state(next) {
                    self.advance_rip();
                    if leaving_protected_mode {
                        self.enter_real_mode();
                    }
                }
            }
        }
    }

    /// Decides a MOV to CR4 (SDM Vol. 3A 2.5): VMX is hidden from the guest,
    /// so VMXE is reserved for it; PAE cannot be cleared in IA-32e mode
    /// (10.8.5); bits Quadrant does not virtualise (PCIDE, OSXSAVE, PKE, ...)
    /// are refused with #GP, as on a CPU without them. Returns false on #GP.
    pub(super) fn write_cr4_value(&mut self, value: u64) -> bool {
        if value & !GUEST_CR4_BITS != 0 || (self.guest.efer & crate::mmu::EFER_LMA != 0 && value & cr4::PAE == 0) {
            self.inject(GP, Some(0));
            return false;
        }
        self.apply_paging_state(GuestControl { cr4: value, ..self.guest })
    }

    fn write_cr4(&mut self, value: u64) {
        if self.write_cr4_value(value) {
            self.advance_rip();
        }
    }

    /// Checks the MMU invariants (`audit=1`), ending the run on the first
    /// broken one.
    pub(super) fn audit(&mut self) {
        let mem = GuestRamView(&self.vm.ram);
        let r = {
            let g = shadow!(self);
            let vcpus: alloc::vec::Vec<&crate::mmu::VcpuMmu> = g.vcpus.iter().flatten().collect();
            g.cache.audit(&mem, &vcpus)
        };
        if let Err(e) = r {
            let n = self.vm.vcpus[self.id].exits.load(core::sync::atomic::Ordering::SeqCst);
            let id = self.id;
            self.die(ErrorKind::HypervisorFault, true, format_args!("MMU audit failed after VM exit {n} of vCPU {id}: {e}"));
        }
    }

    /// The guest's paging context now (for a walk of its tables).
    pub(super) fn paging_ctx(&mut self) -> crate::mmu::walk::PagingCtx {
        match &self.paging {
            super::PagingBackend::Shadow => {
                let mut g = shadow!(self);
                let maxphy = g.cache.config().maxphyaddr;
                let (_, vmmu) = g.split(self.id);
                vmmu.ctx(maxphy)
            }
            super::PagingBackend::Ept(_) => self.ept_paging_ctx(),
        }
    }
}
