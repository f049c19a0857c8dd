//! Filling a fresh VMCS: controls reconciled against the capability MSRs,
//! host state of this CPU, and the guest in the Multiboot hand-off state
//! (Multiboot 1 specification 3.2; SDM Vol. 3C 25.3-25.8 for the fields,
//! 27.3 for the checks VM entry makes on them).

use super::cr::GuestControl;
use crate::arch::{cpu, descriptors};
use crate::vmx::caps::{
    self, entry_ctl, exit_ctl, pin_based, proc_based, proc_based2, reconcile, AllowedBits, ControlError, ControlWord, VmxCaps,
};
use crate::vmx::fields::{Field16, Field32, Field64, FieldNatural};
use crate::vmx::instr::ActiveVmcs;

/// The control words Quadrant runs a guest with (shadow paging or EPT).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Controls {
    /// Pin-based VM-execution controls.
    pub pin: u32,
    /// Primary processor-based VM-execution controls.
    pub primary: u32,
    /// Secondary processor-based VM-execution controls (written only when
    /// `primary` activates them; 0 for shadow paging).
    pub secondary: u32,
    /// VM-exit controls.
    pub exit: u32,
    /// VM-entry controls (IA-32e mode guest is toggled at run time).
    pub entry: u32,
}

impl Controls {
    /// Reconciles what shadow paging needs with what this CPU allows,
    /// failing with the name of the first control it lacks (SDM Vol. 3D
    /// A.3-A.5, using the TRUE_ MSRs when present).
    ///
    /// * external-interrupt and NMI exiting: the host owns interrupts;
    /// * HLT, INVLPG, CR3-load, CR3-store, unconditional I/O exiting: the
    ///   shadow needs every INVLPG and CR3 access, and the guest reaches no
    ///   real device;
    /// * no MSR bitmaps: every RDMSR/WRMSR exits (EFER is virtualised);
    /// * host address-space size and acknowledge-interrupt-on-exit on VM
    ///   exit; nothing special on entry.
    pub fn for_shadow_paging(c: &VmxCaps) -> Result<Controls, ControlError> {
        Self::reconcile_all(
            c,
            None,
            proc_based::HLT_EXITING
                | proc_based::INVLPG_EXITING
                | proc_based::CR3_LOAD_EXITING
                | proc_based::CR3_STORE_EXITING
                | proc_based::UNCONDITIONAL_IO_EXITING,
            0,
            0,
        )
    }

    /// Reconciles what the `mmu=ept` reference mode needs (SDM Vol. 3C
    /// 25.6.2 secondary controls, 29.3 EPT), failing with the name of the
    /// first control this CPU lacks:
    ///
    /// * secondary controls "enable EPT" and "unrestricted guest": the guest
    ///   runs real mode and paging-off protected mode natively (SDM Vol. 3C
    ///   27.3.1.1: CR0.PE and CR0.PG may then be 0);
    /// * HLT and unconditional I/O exiting as for shadow paging; no INVLPG
    ///   and no CR3-load/store exiting (a CPU without TRUE_ controls may
    ///   force the CR3 ones: `vcpu::ept` handles those exits too);
    /// * "save IA32_EFER" and "load IA32_EFER" on exit, "load IA32_EFER" on
    ///   entry: the guest's EFER (LME, LMA, NXE) lives in GUEST_IA32_EFER
    ///   and the host's is restored from HOST_IA32_EFER (SDM Vol. 3C 25.7.1,
    ///   25.8.1, 27.3.2.1, 28.3, 28.5.1).
    pub fn for_ept(c: &VmxCaps) -> Result<Controls, ControlError> {
        Self::reconcile_all(
            c,
            Some(proc_based2::ENABLE_EPT | proc_based2::UNRESTRICTED_GUEST),
            proc_based::HLT_EXITING | proc_based::UNCONDITIONAL_IO_EXITING | proc_based::ACTIVATE_SECONDARY_CONTROLS,
            exit_ctl::SAVE_EFER | exit_ctl::LOAD_EFER,
            entry_ctl::LOAD_EFER,
        )
    }

    /// The reconciliation both paging back ends share, given what each
    /// adds: the required secondary controls (checked first, so a CPU
    /// without EPT names "enable EPT"), the primary controls, and extra
    /// VM-exit and VM-entry controls. Common to both: external-interrupt and
    /// NMI exiting; no MSR bitmaps, I/O bitmaps or TSC offsetting; host
    /// address-space size and acknowledge-interrupt-on-exit; the IA-32e mode
    /// guest entry control must be available (it is toggled at run time).
    fn reconcile_all(
        c: &VmxCaps,
        secondary: Option<u32>,
        primary: u32,
        exit_extra: u32,
        entry_extra: u32,
    ) -> Result<Controls, ControlError> {
        let secondary = match secondary {
            Some(need) => reconcile(
                ControlWord::SecondaryProcBased,
                need,
                0,
                c.procbased2.unwrap_or(AllowedBits { allowed0: 0, allowed1: 0 }),
            )?,
            None => 0,
        };
        let pin = reconcile(
            ControlWord::PinBased,
            pin_based::EXTERNAL_INTERRUPT_EXITING | pin_based::NMI_EXITING,
            0,
            c.pinbased,
        )?;
        let primary = reconcile(ControlWord::PrimaryProcBased, primary, 0, c.procbased)?;
        caps::check_clear(
            ControlWord::PrimaryProcBased,
            proc_based::USE_MSR_BITMAPS | proc_based::USE_IO_BITMAPS | proc_based::USE_TSC_OFFSETTING,
            c.procbased,
        )?;
        let exit = reconcile(
            ControlWord::Exit,
            exit_ctl::HOST_ADDRESS_SPACE_SIZE | exit_ctl::ACK_INTERRUPT_ON_EXIT | exit_extra,
            0,
            c.exit,
        )?;
        let entry = reconcile(ControlWord::Entry, entry_extra, 0, c.entry)?;
        reconcile(ControlWord::Entry, entry_ctl::IA32E_MODE_GUEST, 0, c.entry)?;
        Ok(Controls { pin, primary, secondary, exit, entry })
    }
}

/// Where the guest starts.
#[derive(Clone, Copy, Debug)]
pub struct GuestStart {
    /// Entry point (guest-physical = linear, paging is off).
    pub rip: u64,
    /// Guest-physical address of the Multiboot information block (EBX).
    pub info: u64,
    /// Guest-physical address of the 32-bit TSS the vCPU uses while the
    /// guest's real mode runs as virtual-8086 mode.
    pub vm86_tss: u64,
}

/// Writes the whole VMCS for shadow paging. The caller sets RAX/RBX in the
/// register file; under `mmu=ept`, `Vcpu::ept_init_vmcs` then replaces the
/// paging parts (EPTP, exception bitmap, CR0/CR4 and their masks, EFER).
pub fn write_vmcs(vmcs: &mut ActiveVmcs<'_>, c: &VmxCaps, ctl: &Controls, start: &GuestStart) {
    use Field16 as F16;
    use Field32 as F32;
    use Field64 as F64;
    use FieldNatural as FN;

    // Controls (SDM Vol. 3C 25.6-25.8).
    vmcs.write(F32::PinBasedControls, ctl.pin as u64);
    vmcs.write(F32::PrimaryProcBasedControls, ctl.primary as u64);
    if ctl.primary & proc_based::ACTIVATE_SECONDARY_CONTROLS != 0 {
        vmcs.write(F32::SecondaryProcBasedControls, ctl.secondary as u64);
    }
    vmcs.write(F32::ExitControls, ctl.exit as u64);
    vmcs.write(F32::EntryControls, ctl.entry as u64);
    // #PF exits for the shadow; #MC so a machine check is never reflected.
    vmcs.write(F32::ExceptionBitmap, super::vm86::PROTECTED_EXCEPTIONS);
    vmcs.write(F32::PageFaultErrorCodeMask, 0);
    vmcs.write(F32::PageFaultErrorCodeMatch, 0);
    vmcs.write(F32::Cr3TargetCount, 0);
    vmcs.write(F32::ExitMsrStoreCount, 0);
    vmcs.write(F32::ExitMsrLoadCount, 0);
    vmcs.write(F32::EntryMsrLoadCount, 0);
    vmcs.write(F32::EntryInterruptionInfo, 0);
    vmcs.write(FN::Cr0GuestHostMask, u64::MAX);
    vmcs.write(FN::Cr4GuestHostMask, u64::MAX);
    vmcs.write(F64::VmcsLinkPointer, u64::MAX);

    // Host state: this CPU as it is now (SDM Vol. 3C 25.5, 27.2.2-27.2.4).
    let fixed_cr4 = caps::fixed_cr(cpu::cr4(), c.cr4_fixed0, c.cr4_fixed1);
    vmcs.write(FN::HostCr0, cpu::cr0());
    vmcs.write(FN::HostCr3, cpu::cr3());
    vmcs.write(FN::HostCr4, fixed_cr4);
    vmcs.write(F16::HostCsSelector, descriptors::HOST_CS as u64);
    for f in [F16::HostSsSelector, F16::HostDsSelector, F16::HostEsSelector, F16::HostFsSelector, F16::HostGsSelector] {
        vmcs.write(f, descriptors::HOST_DS as u64);
    }
    vmcs.write(F16::HostTrSelector, descriptors::HOST_TR as u64);
    vmcs.write(FN::HostFsBase, 0);
    vmcs.write(FN::HostGsBase, 0);
    vmcs.write(FN::HostTrBase, descriptors::current_tss_base());
    vmcs.write(FN::HostGdtrBase, cpu::sgdt().base);
    vmcs.write(FN::HostIdtrBase, cpu::sidt().base);
    vmcs.write(F32::HostSysenterCs, 0);
    vmcs.write(FN::HostSysenterEsp, 0);
    vmcs.write(FN::HostSysenterEip, 0);

    // Guest state: the Multiboot hand-off (32-bit protected mode, paging
    // off, flat 4 GiB segments), running on the identity shadow with
    // hardware paging on (SDM Vol. 3C 27.3.1: without unrestricted guest
    // CR0.PE and CR0.PG must be 1).
    let g = GuestControl::MULTIBOOT;
    // CR0/CR3/CR4 are rewritten from the MMU core's choice before every
    // entry (`Vcpu::prepare_entry`); these are the same values.
    let forced = super::cr::cr0::PE | super::cr::cr0::PG | super::cr::cr0::WP;
    vmcs.write(FN::GuestCr0, caps::fixed_cr(g.hardware_cr0(forced), c.cr0_fixed0, c.cr0_fixed1));
    vmcs.write(FN::Cr0ReadShadow, g.cr0);
    vmcs.write(FN::GuestCr4, caps::fixed_cr(g.hardware_cr4(super::cr::cr4::PAE, false), c.cr4_fixed0, c.cr4_fixed1));
    vmcs.write(FN::Cr4ReadShadow, g.cr4);
    vmcs.write(FN::GuestCr3, 0);
    // Code: selector 0x08, 32-bit execute/read accessed, DPL 0, G=1, D=1.
    vmcs.write(F16::GuestCsSelector, 0x08);
    vmcs.write(FN::GuestCsBase, 0);
    vmcs.write(F32::GuestCsLimit, 0xffff_ffff);
    vmcs.write(F32::GuestCsAccessRights, 0xC09B);
    // Data: selector 0x10, read/write accessed.
    for (sel, base, limit, ar) in [
        (F16::GuestSsSelector, FN::GuestSsBase, F32::GuestSsLimit, F32::GuestSsAccessRights),
        (F16::GuestDsSelector, FN::GuestDsBase, F32::GuestDsLimit, F32::GuestDsAccessRights),
        (F16::GuestEsSelector, FN::GuestEsBase, F32::GuestEsLimit, F32::GuestEsAccessRights),
        (F16::GuestFsSelector, FN::GuestFsBase, F32::GuestFsLimit, F32::GuestFsAccessRights),
        (F16::GuestGsSelector, FN::GuestGsBase, F32::GuestGsLimit, F32::GuestGsAccessRights),
    ] {
        vmcs.write(sel, 0x10);
        vmcs.write(base, 0);
        vmcs.write(limit, 0xffff_ffff);
        vmcs.write(ar, 0xC093);
    }
    // LDTR unusable; TR a busy TSS (type 11 is valid in both legacy and
    // IA-32e mode, SDM Vol. 3C 27.3.1.2).
    vmcs.write(F16::GuestLdtrSelector, 0);
    vmcs.write(FN::GuestLdtrBase, 0);
    vmcs.write(F32::GuestLdtrLimit, 0);
    vmcs.write(F32::GuestLdtrAccessRights, 0x1_0000);
    vmcs.write(F16::GuestTrSelector, 0);
    vmcs.write(FN::GuestTrBase, 0);
    vmcs.write(F32::GuestTrLimit, 0x67);
    vmcs.write(F32::GuestTrAccessRights, 0x8B);
    // "GDTR and IDTR may be invalid": the guest loads its own.
    vmcs.write(FN::GuestGdtrBase, 0);
    vmcs.write(F32::GuestGdtrLimit, 0);
    vmcs.write(FN::GuestIdtrBase, 0);
    vmcs.write(F32::GuestIdtrLimit, 0);
    vmcs.write(FN::GuestDr7, 0x400);
    vmcs.write(F64::GuestDebugCtl, 0);
    vmcs.write(FN::GuestRflags, 0x2);
    vmcs.write(FN::GuestRip, start.rip);
    vmcs.write(FN::GuestRsp, 0);
    vmcs.write(FN::GuestPendingDebugExceptions, 0);
    vmcs.write(F32::GuestInterruptibility, 0);
    vmcs.write(F32::GuestActivityState, 0);
    vmcs.write(F32::GuestSysenterCs, 0);
    vmcs.write(FN::GuestSysenterEsp, 0);
    vmcs.write(FN::GuestSysenterEip, 0);
    let _ = start.info;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmx::caps::{ControlErrorKind, AllowedBits as A};

    /// A capability snapshot with Bochs' control MSRs (FACTS.md; the control
    /// words other than PROCBASED_CTLS2 as in `vmx::caps` tests).
    fn bochs(procbased2: Option<u64>, true_ctls: bool) -> VmxCaps {
        let m = A::from_msr;
        VmxCaps {
            basic: if true_ctls { 0x00d8_1000_0000_002b } else { 0x005a_0800_0000_000d },
            pinbased: m(0x0000_00ff_0000_0016),
            procbased: m(if true_ctls { 0xfff9_fffe_0400_6172 } else { 0xf7f9_fffe_0401_e172 }),
            procbased2: procbased2.map(m),
            exit: m(if true_ctls { 0x01ff_ffff_0003_6dfb } else { 0x0003_ffff_0003_6dff }),
            entry: m(if true_ctls { 0x0003_ffff_0000_11fb } else { 0x0000_33ff_0000_11ff }),
            misc: 0x4_01E5,
            cr0_fixed0: 0x8000_0021,
            cr0_fixed1: 0xFFFF_FFFF,
            cr4_fixed0: 0x2000,
            cr4_fixed1: 0x0037_27FF,
            vmcs_enum: 0x2E,
            ept_vpid: procbased2.map(|_| 0x0000_0f01_0631_4141),
            vmfunc: None,
        }
    }

    fn skylake() -> VmxCaps {
        bochs(Some(0x0217_7fff_0000_0000), true)
    }

    fn penryn() -> VmxCaps {
        VmxCaps { ept_vpid: None, ..bochs(Some(0x0000_0041_0000_0000), false) }
    }

    #[test]
    fn skylake_allows_ept() {
        let c = Controls::for_ept(&skylake()).unwrap();
        assert_eq!(c.secondary, proc_based2::ENABLE_EPT | proc_based2::UNRESTRICTED_GUEST);
        assert_ne!(c.primary & proc_based::ACTIVATE_SECONDARY_CONTROLS, 0);
        for off in [proc_based::CR3_LOAD_EXITING, proc_based::CR3_STORE_EXITING, proc_based::INVLPG_EXITING, proc_based::USE_MSR_BITMAPS] {
            assert_eq!(c.primary & off, 0, "{off:#x}");
        }
        assert_ne!(c.primary & proc_based::HLT_EXITING, 0);
        assert_ne!(c.primary & proc_based::UNCONDITIONAL_IO_EXITING, 0);
        assert_eq!(c.exit & (exit_ctl::SAVE_EFER | exit_ctl::LOAD_EFER), exit_ctl::SAVE_EFER | exit_ctl::LOAD_EFER);
        assert_ne!(c.entry & entry_ctl::LOAD_EFER, 0);
        assert_eq!(c.entry & entry_ctl::IA32E_MODE_GUEST, 0, "set at run time from EFER.LMA");
        assert_eq!(crate::vmx::ept::missing_capability(skylake().ept_vpid), None);
    }

    #[test]
    fn skylake_shadow_paging_keeps_secondary_off() {
        let c = Controls::for_shadow_paging(&skylake()).unwrap();
        assert_eq!(c.secondary, 0);
        assert_eq!(c.primary & proc_based::ACTIVATE_SECONDARY_CONTROLS, 0);
    }

    #[test]
    fn penryn_refuses_naming_enable_ept() {
        let e = Controls::for_ept(&penryn()).unwrap_err();
        assert_eq!((e.word, e.bit, e.kind), (ControlWord::SecondaryProcBased, 1, ControlErrorKind::RequiredButUnsupported));
        let text = e.to_string();
        assert!(text.contains("\"enable EPT\""), "{text}");
        assert!(text.contains("0x00000041"), "{text}");
        assert!(Controls::for_shadow_paging(&penryn()).is_ok());
    }

    #[test]
    fn ept_without_unrestricted_guest_names_it() {
        let e = Controls::for_ept(&bochs(Some(0x0000_0043_0000_0000), false)).unwrap_err();
        assert_eq!(e.name, "unrestricted guest");
    }

    #[test]
    fn no_secondary_controls_names_enable_ept() {
        let e = Controls::for_ept(&bochs(None, false)).unwrap_err();
        assert_eq!(e.name, "enable EPT");
    }
}
