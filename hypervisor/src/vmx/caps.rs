//! VMX capability MSRs and the reconciliation of Quadrant's wanted VM
//! controls against them (SDM Vol. 3D Appendix A; control bits from
//! SDM Vol. 3C 25.6-25.8).
//!
//! This module owns: the MSR numbers, [`VmxCaps`] (one snapshot of all
//! capability MSRs, read through a caller-supplied `rdmsr` so that it is
//! testable), the named bits of the five control words, [`reconcile`] (which
//! fails loudly instead of silently dropping a control Quadrant needs), the
//! CR0/CR4 fixed-bit rules and the IA32_FEATURE_CONTROL verdict.

use core::fmt;

use super::fields::Field32;

// ---------------------------------------------------------------------------
// MSR numbers (SDM Vol. 4, Table 2-2; VMX ones: SDM Vol. 3D Appendix A).

pub const IA32_FEATURE_CONTROL: u32 = 0x3A;
pub const IA32_SYSENTER_CS: u32 = 0x174;
pub const IA32_SYSENTER_ESP: u32 = 0x175;
pub const IA32_SYSENTER_EIP: u32 = 0x176;
pub const IA32_DEBUGCTL: u32 = 0x1D9;
pub const IA32_PAT: u32 = 0x277;
pub const IA32_PERF_GLOBAL_CTRL: u32 = 0x38F;
pub const IA32_VMX_BASIC: u32 = 0x480;
pub const IA32_VMX_PINBASED_CTLS: u32 = 0x481;
pub const IA32_VMX_PROCBASED_CTLS: u32 = 0x482;
pub const IA32_VMX_EXIT_CTLS: u32 = 0x483;
pub const IA32_VMX_ENTRY_CTLS: u32 = 0x484;
pub const IA32_VMX_MISC: u32 = 0x485;
pub const IA32_VMX_CR0_FIXED0: u32 = 0x486;
pub const IA32_VMX_CR0_FIXED1: u32 = 0x487;
pub const IA32_VMX_CR4_FIXED0: u32 = 0x488;
pub const IA32_VMX_CR4_FIXED1: u32 = 0x489;
pub const IA32_VMX_VMCS_ENUM: u32 = 0x48A;
pub const IA32_VMX_PROCBASED_CTLS2: u32 = 0x48B;
pub const IA32_VMX_EPT_VPID_CAP: u32 = 0x48C;
pub const IA32_VMX_TRUE_PINBASED_CTLS: u32 = 0x48D;
pub const IA32_VMX_TRUE_PROCBASED_CTLS: u32 = 0x48E;
pub const IA32_VMX_TRUE_EXIT_CTLS: u32 = 0x48F;
pub const IA32_VMX_TRUE_ENTRY_CTLS: u32 = 0x490;
pub const IA32_VMX_VMFUNC: u32 = 0x491;
pub const IA32_VMX_PROCBASED_CTLS3: u32 = 0x492;
pub const IA32_EFER: u32 = 0xC000_0080;
pub const IA32_STAR: u32 = 0xC000_0081;
pub const IA32_LSTAR: u32 = 0xC000_0082;
pub const IA32_CSTAR: u32 = 0xC000_0083;
pub const IA32_FMASK: u32 = 0xC000_0084;
pub const IA32_FS_BASE: u32 = 0xC000_0100;
pub const IA32_GS_BASE: u32 = 0xC000_0101;
pub const IA32_KERNEL_GS_BASE: u32 = 0xC000_0102;
pub const IA32_TSC_AUX: u32 = 0xC000_0103;

// ---------------------------------------------------------------------------
// Allowed settings and the capability snapshot.

/// Allowed settings of one 32-bit control word, from a capability MSR
/// (SDM Vol. 3D A.3-A.5): the low half says which bits must be 1, the high
/// half which bits may be 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AllowedBits {
    /// Bits that must be 1 (bit clear here: the control may be 0).
    pub allowed0: u32,
    /// Bits that may be 1 (bit clear here: the control must be 0).
    pub allowed1: u32,
}

impl AllowedBits {
    /// Splits a capability MSR value: bits 31:0 allowed-0, bits 63:32 allowed-1.
    pub const fn from_msr(value: u64) -> Self {
        AllowedBits {
            allowed0: value as u32,
            allowed1: (value >> 32) as u32,
        }
    }
    /// Whether this CPU lets the control with mask `bit` be 1.
    pub const fn may_be_one(self, mask: u32) -> bool {
        self.allowed1 & mask == mask
    }
    /// Whether this CPU forces the control with mask `bit` to 1.
    pub const fn must_be_one(self, mask: u32) -> bool {
        self.allowed0 & mask == mask
    }
}

/// A snapshot of the VMX capability MSRs of one CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmxCaps {
    /// IA32_VMX_BASIC (SDM Vol. 3D A.1).
    pub basic: u64,
    /// Pin-based controls (TRUE_ MSR when [`VmxCaps::true_controls`]).
    pub pinbased: AllowedBits,
    /// Primary processor-based controls (TRUE_ MSR when available).
    pub procbased: AllowedBits,
    /// Secondary processor-based controls; `None` when the primary
    /// "activate secondary controls" bit may not be 1 (the MSR then does not
    /// exist).
    pub procbased2: Option<AllowedBits>,
    /// VM-exit controls (TRUE_ MSR when available).
    pub exit: AllowedBits,
    /// VM-entry controls (TRUE_ MSR when available).
    pub entry: AllowedBits,
    /// IA32_VMX_MISC (SDM Vol. 3D A.6).
    pub misc: u64,
    pub cr0_fixed0: u64,
    pub cr0_fixed1: u64,
    pub cr4_fixed0: u64,
    pub cr4_fixed1: u64,
    /// IA32_VMX_VMCS_ENUM (SDM Vol. 3D A.9).
    pub vmcs_enum: u64,
    /// IA32_VMX_EPT_VPID_CAP (SDM Vol. 3D A.10), read only when the CPU may
    /// enable EPT or VPID.
    pub ept_vpid: Option<u64>,
    /// IA32_VMX_VMFUNC (SDM Vol. 3D A.11), read only when the CPU may enable
    /// VM functions.
    pub vmfunc: Option<u64>,
}

/// IA32_VMX_BASIC bit 55: the TRUE_ control MSRs exist (SDM Vol. 3D A.1).
pub const BASIC_TRUE_CONTROLS: u64 = 1 << 55;

impl VmxCaps {
    /// Reads every capability MSR that exists on this CPU. An MSR that the
    /// CPU does not implement is never read (RDMSR of it raises #GP): the
    /// secondary controls only if the primary allowed-1 has bit 31,
    /// EPT_VPID_CAP only if EPT or VPID may be enabled, VMFUNC only if
    /// "enable VM functions" may be enabled (SDM Vol. 3D A.3.3, A.10, A.11).
    pub fn read(rdmsr: impl Fn(u32) -> u64) -> VmxCaps {
        let basic = rdmsr(IA32_VMX_BASIC);
        let true_ctls = basic & BASIC_TRUE_CONTROLS != 0;
        let pick = |plain: u32, true_msr: u32| {
            AllowedBits::from_msr(rdmsr(if true_ctls { true_msr } else { plain }))
        };
        let pinbased = pick(IA32_VMX_PINBASED_CTLS, IA32_VMX_TRUE_PINBASED_CTLS);
        let procbased = pick(IA32_VMX_PROCBASED_CTLS, IA32_VMX_TRUE_PROCBASED_CTLS);
        let exit = pick(IA32_VMX_EXIT_CTLS, IA32_VMX_TRUE_EXIT_CTLS);
        let entry = pick(IA32_VMX_ENTRY_CTLS, IA32_VMX_TRUE_ENTRY_CTLS);
        let procbased2 = procbased
            .may_be_one(proc_based::ACTIVATE_SECONDARY_CONTROLS)
            .then(|| AllowedBits::from_msr(rdmsr(IA32_VMX_PROCBASED_CTLS2)));
        let allowed2 = procbased2.map_or(0, |a| a.allowed1);
        let ept_vpid = (allowed2 & (proc_based2::ENABLE_EPT | proc_based2::ENABLE_VPID) != 0)
            .then(|| rdmsr(IA32_VMX_EPT_VPID_CAP));
        let vmfunc =
            (allowed2 & proc_based2::ENABLE_VM_FUNCTIONS != 0).then(|| rdmsr(IA32_VMX_VMFUNC));
        VmxCaps {
            basic,
            pinbased,
            procbased,
            procbased2,
            exit,
            entry,
            misc: rdmsr(IA32_VMX_MISC),
            cr0_fixed0: rdmsr(IA32_VMX_CR0_FIXED0),
            cr0_fixed1: rdmsr(IA32_VMX_CR0_FIXED1),
            cr4_fixed0: rdmsr(IA32_VMX_CR4_FIXED0),
            cr4_fixed1: rdmsr(IA32_VMX_CR4_FIXED1),
            vmcs_enum: rdmsr(IA32_VMX_VMCS_ENUM),
            ept_vpid,
            vmfunc,
        }
    }

    /// VMCS revision identifier, IA32_VMX_BASIC bits 30:0: written to the
    /// first dword of the VMXON region and of every VMCS.
    pub const fn revision_id(&self) -> u32 {
        (self.basic & 0x7FFF_FFFF) as u32
    }
    /// Bytes to allocate for the VMXON region and each VMCS (bits 44:32,
    /// at most 4096).
    pub const fn vmcs_region_size(&self) -> u32 {
        ((self.basic >> 32) & 0x1FFF) as u32
    }
    /// Bit 48: VMXON/VMCS/bitmap addresses are limited to 32 bits.
    pub const fn addresses_limited_to_32_bits(&self) -> bool {
        self.basic & (1 << 48) != 0
    }
    /// Bits 53:50: memory type for VMCS accesses (6 = write-back).
    pub const fn vmcs_memory_type(&self) -> u8 {
        ((self.basic >> 50) & 0xF) as u8
    }
    /// Bit 54: INS/OUTS exits report VM-exit instruction information.
    pub const fn ins_outs_info(&self) -> bool {
        self.basic & (1 << 54) != 0
    }
    /// Bit 55: the TRUE_ capability MSRs exist and were used by [`Self::read`].
    pub const fn true_controls(&self) -> bool {
        self.basic & BASIC_TRUE_CONTROLS != 0
    }

    fn secondary_may(&self, mask: u32) -> bool {
        matches!(self.procbased2, Some(a) if a.may_be_one(mask))
    }
    /// "enable EPT" may be set.
    pub fn has_ept(&self) -> bool {
        self.secondary_may(proc_based2::ENABLE_EPT)
    }
    /// "unrestricted guest" may be set.
    pub fn has_unrestricted_guest(&self) -> bool {
        self.secondary_may(proc_based2::UNRESTRICTED_GUEST)
    }
    /// "enable VPID" may be set.
    pub fn has_vpid(&self) -> bool {
        self.secondary_may(proc_based2::ENABLE_VPID)
    }
    /// EPT_VPID_CAP bit 32: INVVPID is supported.
    pub fn has_invvpid(&self) -> bool {
        matches!(self.ept_vpid, Some(v) if v & (1 << 32) != 0)
    }
    /// EPT_VPID_CAP bit 20: INVEPT is supported.
    pub fn has_invept(&self) -> bool {
        matches!(self.ept_vpid, Some(v) if v & (1 << 20) != 0)
    }

    /// IA32_VMX_MISC bits 24:16: number of CR3-target values.
    pub const fn cr3_target_count(&self) -> u32 {
        ((self.misc >> 16) & 0x1FF) as u32
    }
    /// IA32_VMX_MISC bits 4:0: the preemption timer counts down once every
    /// 2^rate TSC ticks.
    pub const fn preemption_timer_rate(&self) -> u32 {
        (self.misc & 0x1F) as u32
    }
    /// IA32_VMX_MISC bits 8:6: activity state `state` (1 HLT, 2 shutdown,
    /// 3 wait-for-SIPI) may be entered; state 0 (active) always may.
    pub const fn activity_state_supported(&self, state: u32) -> bool {
        match state {
            0 => true,
            1..=3 => self.misc & (1 << (5 + state)) != 0,
            _ => false,
        }
    }
    /// Recommended maximum number of entries in each MSR load/store list:
    /// 512 * (N + 1), N = IA32_VMX_MISC bits 27:25.
    pub const fn max_msr_list_entries(&self) -> u32 {
        512 * (((self.misc >> 25) & 7) as u32 + 1)
    }
    /// Highest field index implemented (IA32_VMX_VMCS_ENUM bits 9:1).
    pub const fn highest_vmcs_index(&self) -> u32 {
        ((self.vmcs_enum >> 1) & 0x1FF) as u32
    }

    /// Allowed settings of one control word; `None` for the secondary
    /// controls on a CPU without them.
    pub fn allowed(&self, word: ControlWord) -> Option<AllowedBits> {
        match word {
            ControlWord::PinBased => Some(self.pinbased),
            ControlWord::PrimaryProcBased => Some(self.procbased),
            ControlWord::SecondaryProcBased => self.procbased2,
            ControlWord::Exit => Some(self.exit),
            ControlWord::Entry => Some(self.entry),
        }
    }
}

// ---------------------------------------------------------------------------
// Named control bits.

/// One defined bit of a control word and its SDM name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ControlBit {
    pub bit: u8,
    pub name: &'static str,
}

const fn b(bit: u8, name: &'static str) -> ControlBit {
    ControlBit { bit, name }
}

/// Pin-based VM-execution controls (SDM Vol. 3C 25.6.1).
pub mod pin_based {
    use super::{b, ControlBit};
    pub const EXTERNAL_INTERRUPT_EXITING: u32 = 1 << 0;
    pub const NMI_EXITING: u32 = 1 << 3;
    pub const VIRTUAL_NMIS: u32 = 1 << 5;
    pub const ACTIVATE_PREEMPTION_TIMER: u32 = 1 << 6;
    pub const PROCESS_POSTED_INTERRUPTS: u32 = 1 << 7;
    /// Default1 class: reserved bits that are 1 unless the TRUE_ MSR says otherwise.
    pub const DEFAULT1: u32 = 0x0000_0016;
    pub const BITS: &[ControlBit] = &[
        b(0, "external-interrupt exiting"),
        b(3, "NMI exiting"),
        b(5, "virtual NMIs"),
        b(6, "activate VMX-preemption timer"),
        b(7, "process posted interrupts"),
    ];
}

/// Primary processor-based VM-execution controls (SDM Vol. 3C 25.6.2).
pub mod proc_based {
    use super::{b, ControlBit};
    pub const INTERRUPT_WINDOW_EXITING: u32 = 1 << 2;
    pub const USE_TSC_OFFSETTING: u32 = 1 << 3;
    pub const HLT_EXITING: u32 = 1 << 7;
    pub const INVLPG_EXITING: u32 = 1 << 9;
    pub const MWAIT_EXITING: u32 = 1 << 10;
    pub const RDPMC_EXITING: u32 = 1 << 11;
    pub const RDTSC_EXITING: u32 = 1 << 12;
    pub const CR3_LOAD_EXITING: u32 = 1 << 15;
    pub const CR3_STORE_EXITING: u32 = 1 << 16;
    pub const ACTIVATE_TERTIARY_CONTROLS: u32 = 1 << 17;
    pub const CR8_LOAD_EXITING: u32 = 1 << 19;
    pub const CR8_STORE_EXITING: u32 = 1 << 20;
    pub const USE_TPR_SHADOW: u32 = 1 << 21;
    pub const NMI_WINDOW_EXITING: u32 = 1 << 22;
    pub const MOV_DR_EXITING: u32 = 1 << 23;
    pub const UNCONDITIONAL_IO_EXITING: u32 = 1 << 24;
    pub const USE_IO_BITMAPS: u32 = 1 << 25;
    pub const MONITOR_TRAP_FLAG: u32 = 1 << 27;
    pub const USE_MSR_BITMAPS: u32 = 1 << 28;
    pub const MONITOR_EXITING: u32 = 1 << 29;
    pub const PAUSE_EXITING: u32 = 1 << 30;
    pub const ACTIVATE_SECONDARY_CONTROLS: u32 = 1 << 31;
    /// Default1 class (bits 1, 4-6, 8, 13-16, 26).
    pub const DEFAULT1: u32 = 0x0401_E172;
    pub const BITS: &[ControlBit] = &[
        b(2, "interrupt-window exiting"),
        b(3, "use TSC offsetting"),
        b(7, "HLT exiting"),
        b(9, "INVLPG exiting"),
        b(10, "MWAIT exiting"),
        b(11, "RDPMC exiting"),
        b(12, "RDTSC exiting"),
        b(15, "CR3-load exiting"),
        b(16, "CR3-store exiting"),
        b(17, "activate tertiary controls"),
        b(19, "CR8-load exiting"),
        b(20, "CR8-store exiting"),
        b(21, "use TPR shadow"),
        b(22, "NMI-window exiting"),
        b(23, "MOV-DR exiting"),
        b(24, "unconditional I/O exiting"),
        b(25, "use I/O bitmaps"),
        b(27, "monitor trap flag"),
        b(28, "use MSR bitmaps"),
        b(29, "MONITOR exiting"),
        b(30, "PAUSE exiting"),
        b(31, "activate secondary controls"),
    ];
}

/// Secondary processor-based VM-execution controls (SDM Vol. 3C 25.6.2).
pub mod proc_based2 {
    use super::{b, ControlBit};
    pub const VIRTUALIZE_APIC_ACCESSES: u32 = 1 << 0;
    pub const ENABLE_EPT: u32 = 1 << 1;
    pub const DESCRIPTOR_TABLE_EXITING: u32 = 1 << 2;
    pub const ENABLE_RDTSCP: u32 = 1 << 3;
    pub const VIRTUALIZE_X2APIC_MODE: u32 = 1 << 4;
    pub const ENABLE_VPID: u32 = 1 << 5;
    pub const WBINVD_EXITING: u32 = 1 << 6;
    pub const UNRESTRICTED_GUEST: u32 = 1 << 7;
    pub const APIC_REGISTER_VIRTUALIZATION: u32 = 1 << 8;
    pub const VIRTUAL_INTERRUPT_DELIVERY: u32 = 1 << 9;
    pub const PAUSE_LOOP_EXITING: u32 = 1 << 10;
    pub const RDRAND_EXITING: u32 = 1 << 11;
    pub const ENABLE_INVPCID: u32 = 1 << 12;
    pub const ENABLE_VM_FUNCTIONS: u32 = 1 << 13;
    pub const VMCS_SHADOWING: u32 = 1 << 14;
    pub const ENABLE_ENCLS_EXITING: u32 = 1 << 15;
    pub const RDSEED_EXITING: u32 = 1 << 16;
    pub const ENABLE_PML: u32 = 1 << 17;
    pub const EPT_VIOLATION_VE: u32 = 1 << 18;
    pub const CONCEAL_VMX_FROM_PT: u32 = 1 << 19;
    pub const ENABLE_XSAVES_XRSTORS: u32 = 1 << 20;
    pub const MODE_BASED_EXECUTE_CONTROL: u32 = 1 << 22;
    pub const SUB_PAGE_WRITE_PERMISSIONS: u32 = 1 << 23;
    pub const PT_USES_GUEST_PHYSICAL_ADDRESSES: u32 = 1 << 24;
    pub const USE_TSC_SCALING: u32 = 1 << 25;
    pub const ENABLE_USER_WAIT_AND_PAUSE: u32 = 1 << 26;
    pub const ENABLE_PCONFIG: u32 = 1 << 27;
    pub const ENABLE_ENCLV_EXITING: u32 = 1 << 28;
    pub const VMM_BUS_LOCK_DETECTION: u32 = 1 << 30;
    pub const INSTRUCTION_TIMEOUT: u32 = 1 << 31;
    pub const DEFAULT1: u32 = 0;
    pub const BITS: &[ControlBit] = &[
        b(0, "virtualize APIC accesses"),
        b(1, "enable EPT"),
        b(2, "descriptor-table exiting"),
        b(3, "enable RDTSCP"),
        b(4, "virtualize x2APIC mode"),
        b(5, "enable VPID"),
        b(6, "WBINVD exiting"),
        b(7, "unrestricted guest"),
        b(8, "APIC-register virtualization"),
        b(9, "virtual-interrupt delivery"),
        b(10, "PAUSE-loop exiting"),
        b(11, "RDRAND exiting"),
        b(12, "enable INVPCID"),
        b(13, "enable VM functions"),
        b(14, "VMCS shadowing"),
        b(15, "enable ENCLS exiting"),
        b(16, "RDSEED exiting"),
        b(17, "enable PML"),
        b(18, "EPT-violation #VE"),
        b(19, "conceal VMX from PT"),
        b(20, "enable XSAVES/XRSTORS"),
        b(22, "mode-based execute control for EPT"),
        b(23, "sub-page write permissions for EPT"),
        b(24, "Intel PT uses guest physical addresses"),
        b(25, "use TSC scaling"),
        b(26, "enable user wait and pause"),
        b(27, "enable PCONFIG"),
        b(28, "enable ENCLV exiting"),
        b(30, "VMM bus-lock detection"),
        b(31, "instruction timeout"),
    ];
}

/// Primary VM-exit controls (SDM Vol. 3C 25.7.1).
pub mod exit_ctl {
    use super::{b, ControlBit};
    pub const SAVE_DEBUG_CONTROLS: u32 = 1 << 2;
    pub const HOST_ADDRESS_SPACE_SIZE: u32 = 1 << 9;
    pub const LOAD_PERF_GLOBAL_CTRL: u32 = 1 << 12;
    pub const ACK_INTERRUPT_ON_EXIT: u32 = 1 << 15;
    pub const SAVE_PAT: u32 = 1 << 18;
    pub const LOAD_PAT: u32 = 1 << 19;
    pub const SAVE_EFER: u32 = 1 << 20;
    pub const LOAD_EFER: u32 = 1 << 21;
    pub const SAVE_PREEMPTION_TIMER: u32 = 1 << 22;
    pub const CLEAR_BNDCFGS: u32 = 1 << 23;
    pub const CONCEAL_VMX_FROM_PT: u32 = 1 << 24;
    pub const CLEAR_RTIT_CTL: u32 = 1 << 25;
    pub const CLEAR_LBR_CTL: u32 = 1 << 26;
    pub const LOAD_CET_STATE: u32 = 1 << 28;
    pub const LOAD_PKRS: u32 = 1 << 29;
    pub const ACTIVATE_SECONDARY_CONTROLS: u32 = 1 << 31;
    /// Default1 class (bits 0-8, 10, 11, 13, 14, 16, 17).
    pub const DEFAULT1: u32 = 0x0003_6DFF;
    pub const BITS: &[ControlBit] = &[
        b(2, "save debug controls"),
        b(9, "host address-space size"),
        b(12, "load IA32_PERF_GLOBAL_CTRL"),
        b(15, "acknowledge interrupt on exit"),
        b(18, "save IA32_PAT"),
        b(19, "load IA32_PAT"),
        b(20, "save IA32_EFER"),
        b(21, "load IA32_EFER"),
        b(22, "save VMX-preemption timer value"),
        b(23, "clear IA32_BNDCFGS"),
        b(24, "conceal VMX from PT"),
        b(25, "clear IA32_RTIT_CTL"),
        b(26, "clear IA32_LBR_CTL"),
        b(28, "load CET state"),
        b(29, "load PKRS"),
        b(31, "activate secondary controls"),
    ];
}

/// VM-entry controls (SDM Vol. 3C 25.8.1).
pub mod entry_ctl {
    use super::{b, ControlBit};
    pub const LOAD_DEBUG_CONTROLS: u32 = 1 << 2;
    pub const IA32E_MODE_GUEST: u32 = 1 << 9;
    pub const ENTRY_TO_SMM: u32 = 1 << 10;
    pub const DEACTIVATE_DUAL_MONITOR: u32 = 1 << 11;
    pub const LOAD_PERF_GLOBAL_CTRL: u32 = 1 << 13;
    pub const LOAD_PAT: u32 = 1 << 14;
    pub const LOAD_EFER: u32 = 1 << 15;
    pub const LOAD_BNDCFGS: u32 = 1 << 16;
    pub const CONCEAL_VMX_FROM_PT: u32 = 1 << 17;
    pub const LOAD_RTIT_CTL: u32 = 1 << 18;
    pub const LOAD_CET_STATE: u32 = 1 << 20;
    pub const LOAD_LBR_CTL: u32 = 1 << 21;
    pub const LOAD_PKRS: u32 = 1 << 22;
    /// Default1 class (bits 0-8, 12).
    pub const DEFAULT1: u32 = 0x0000_11FF;
    pub const BITS: &[ControlBit] = &[
        b(2, "load debug controls"),
        b(9, "IA-32e mode guest"),
        b(10, "entry to SMM"),
        b(11, "deactivate dual-monitor treatment"),
        b(13, "load IA32_PERF_GLOBAL_CTRL"),
        b(14, "load IA32_PAT"),
        b(15, "load IA32_EFER"),
        b(16, "load IA32_BNDCFGS"),
        b(17, "conceal VMX from PT"),
        b(18, "load IA32_RTIT_CTL"),
        b(20, "load CET state"),
        b(21, "load guest IA32_LBR_CTL"),
        b(22, "load PKRS"),
    ];
}

/// One of the five 32-bit control words Quadrant reconciles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlWord {
    PinBased,
    PrimaryProcBased,
    SecondaryProcBased,
    Exit,
    Entry,
}

impl ControlWord {
    pub const ALL: [ControlWord; 5] = [
        ControlWord::PinBased,
        ControlWord::PrimaryProcBased,
        ControlWord::SecondaryProcBased,
        ControlWord::Exit,
        ControlWord::Entry,
    ];

    /// SDM name of one control of this word, e.g. "VM-entry control".
    pub const fn name(self) -> &'static str {
        match self {
            ControlWord::PinBased => "pin-based VM-execution control",
            ControlWord::PrimaryProcBased => "primary processor-based VM-execution control",
            ControlWord::SecondaryProcBased => "secondary processor-based VM-execution control",
            ControlWord::Exit => "VM-exit control",
            ControlWord::Entry => "VM-entry control",
        }
    }
    /// The defined bits of this word with their SDM names.
    pub const fn bits(self) -> &'static [ControlBit] {
        match self {
            ControlWord::PinBased => pin_based::BITS,
            ControlWord::PrimaryProcBased => proc_based::BITS,
            ControlWord::SecondaryProcBased => proc_based2::BITS,
            ControlWord::Exit => exit_ctl::BITS,
            ControlWord::Entry => entry_ctl::BITS,
        }
    }
    /// The name of bit `bit` (0..=31), or `"reserved"`.
    pub fn bit_name(self, bit: u32) -> &'static str {
        self.bits()
            .iter()
            .find(|c| u32::from(c.bit) == bit)
            .map_or("reserved", |c| c.name)
    }
    /// The VMCS field holding this word.
    pub const fn field(self) -> Field32 {
        match self {
            ControlWord::PinBased => Field32::PinBasedControls,
            ControlWord::PrimaryProcBased => Field32::PrimaryProcBasedControls,
            ControlWord::SecondaryProcBased => Field32::SecondaryProcBasedControls,
            ControlWord::Exit => Field32::ExitControls,
            ControlWord::Entry => Field32::EntryControls,
        }
    }
    /// The capability MSR for this word (TRUE_ variant when `true_controls`).
    pub const fn capability_msr(self, true_controls: bool) -> u32 {
        match (self, true_controls) {
            (ControlWord::PinBased, false) => IA32_VMX_PINBASED_CTLS,
            (ControlWord::PinBased, true) => IA32_VMX_TRUE_PINBASED_CTLS,
            (ControlWord::PrimaryProcBased, false) => IA32_VMX_PROCBASED_CTLS,
            (ControlWord::PrimaryProcBased, true) => IA32_VMX_TRUE_PROCBASED_CTLS,
            (ControlWord::SecondaryProcBased, _) => IA32_VMX_PROCBASED_CTLS2,
            (ControlWord::Exit, false) => IA32_VMX_EXIT_CTLS,
            (ControlWord::Exit, true) => IA32_VMX_TRUE_EXIT_CTLS,
            (ControlWord::Entry, false) => IA32_VMX_ENTRY_CTLS,
            (ControlWord::Entry, true) => IA32_VMX_TRUE_ENTRY_CTLS,
        }
    }
    /// The "default1" reserved bits of this word (SDM Vol. 3D A.2).
    pub const fn default1(self) -> u32 {
        match self {
            ControlWord::PinBased => pin_based::DEFAULT1,
            ControlWord::PrimaryProcBased => proc_based::DEFAULT1,
            ControlWord::SecondaryProcBased => proc_based2::DEFAULT1,
            ControlWord::Exit => exit_ctl::DEFAULT1,
            ControlWord::Entry => entry_ctl::DEFAULT1,
        }
    }
}

impl fmt::Display for ControlWord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

// ---------------------------------------------------------------------------
// Reconciliation.

/// What went wrong with one control bit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlErrorKind {
    /// Quadrant requires the bit but allowed-1 has it clear.
    RequiredButUnsupported,
    /// Quadrant needs the bit clear but allowed-0 forces it to 1.
    ForcedToOne,
}

/// A control Quadrant cannot get the way it needs it on this CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ControlError {
    pub word: ControlWord,
    pub bit: u8,
    pub name: &'static str,
    pub kind: ControlErrorKind,
    pub allowed: AllowedBits,
}

impl fmt::Display for ControlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (word, bit, name) = (self.word.name(), self.bit, self.name);
        match self.kind {
            ControlErrorKind::RequiredButUnsupported => write!(
                f,
                "{word} \"{name}\" (bit {bit}) is required but not supported by this CPU \
                 (allowed-1 = {:#010x})",
                self.allowed.allowed1
            ),
            ControlErrorKind::ForcedToOne => write!(
                f,
                "{word} \"{name}\" (bit {bit}) must be 0 for Quadrant but this CPU forces it \
                 to 1 (allowed-0 = {:#010x})",
                self.allowed.allowed0
            ),
        }
    }
}

fn control_error(
    word: ControlWord,
    bits: u32,
    kind: ControlErrorKind,
    allowed: AllowedBits,
) -> ControlError {
    let bit = bits.trailing_zeros();
    ControlError {
        word,
        bit: bit as u8,
        name: word.bit_name(bit),
        kind,
        allowed,
    }
}

/// Computes the value of one control word: every `required` bit, the
/// `optional` bits the CPU allows, and the bits the CPU forces to 1
/// (SDM Vol. 3D A.2). Fails, naming the lowest such bit, if a
/// required bit may not be 1.
pub fn reconcile(
    word: ControlWord,
    required: u32,
    optional: u32,
    allowed: AllowedBits,
) -> Result<u32, ControlError> {
    let missing = required & !allowed.allowed1;
    if missing != 0 {
        return Err(control_error(
            word,
            missing,
            ControlErrorKind::RequiredButUnsupported,
            allowed,
        ));
    }
    Ok(required | (optional & allowed.allowed1) | allowed.allowed0)
}

/// Checks that none of the bits Quadrant needs clear (`must_be_clear`) is
/// forced to 1 by allowed-0 (e.g. "CR3-load exiting" on a CPU without TRUE_
/// controls would make every guest CR3 load exit: fine; "entry to SMM"
/// forced on would not be).
pub fn check_clear(
    word: ControlWord,
    must_be_clear: u32,
    allowed: AllowedBits,
) -> Result<(), ControlError> {
    let forced = must_be_clear & allowed.allowed0;
    if forced != 0 {
        return Err(control_error(
            word,
            forced,
            ControlErrorKind::ForcedToOne,
            allowed,
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// CR0/CR4 fixed bits (SDM Vol. 3D A.7, A.8).

pub const CR0_PE: u64 = 1 << 0;
pub const CR0_PG: u64 = 1 << 31;

/// A bit that is 1 in FIXED0 must be 1 in CRx; a bit that is 0 in FIXED1
/// must be 0 (SDM Vol. 3D A.7, A.8). Returns `value` with both rules applied.
pub const fn fixed_cr(value: u64, fixed0: u64, fixed1: u64) -> u64 {
    (value | fixed0) & fixed1
}

/// FIXED0 for the *guest* CR0: with "unrestricted guest" PE and PG may be 0
/// (SDM Vol. 3C 27.3.1.1).
pub const fn guest_cr0_fixed0(cr0_fixed0: u64, unrestricted_guest: bool) -> u64 {
    if unrestricted_guest {
        cr0_fixed0 & !(CR0_PE | CR0_PG)
    } else {
        cr0_fixed0
    }
}

/// Which control register a fixed-bit adjustment is about (for bit names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlRegister {
    Cr0,
    Cr4,
}

impl ControlRegister {
    /// Architectural name of a CR0/CR4 bit (SDM Vol. 3A 2.5), or `None`.
    pub const fn bit_name(self, bit: u32) -> Option<&'static str> {
        match self {
            ControlRegister::Cr0 => match bit {
                0 => Some("PE"),
                1 => Some("MP"),
                2 => Some("EM"),
                3 => Some("TS"),
                4 => Some("ET"),
                5 => Some("NE"),
                16 => Some("WP"),
                18 => Some("AM"),
                29 => Some("NW"),
                30 => Some("CD"),
                31 => Some("PG"),
                _ => None,
            },
            ControlRegister::Cr4 => match bit {
                0 => Some("VME"),
                1 => Some("PVI"),
                2 => Some("TSD"),
                3 => Some("DE"),
                4 => Some("PSE"),
                5 => Some("PAE"),
                6 => Some("MCE"),
                7 => Some("PGE"),
                8 => Some("PCE"),
                9 => Some("OSFXSR"),
                10 => Some("OSXMMEXCPT"),
                11 => Some("UMIP"),
                12 => Some("LA57"),
                13 => Some("VMXE"),
                14 => Some("SMXE"),
                16 => Some("FSGSBASE"),
                17 => Some("PCIDE"),
                18 => Some("OSXSAVE"),
                19 => Some("KL"),
                20 => Some("SMEP"),
                21 => Some("SMAP"),
                22 => Some("PKE"),
                23 => Some("CET"),
                24 => Some("PKS"),
                25 => Some("UINTR"),
                _ => None,
            },
        }
    }
}

/// The result of [`fixed_cr`] with the reason, for a log line such as
/// `CR0 0x11 -> 0x80000031: forced to 1: NE (bit 5), PG (bit 31); forced to 0: none`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FixedCrAdjustment {
    pub register: ControlRegister,
    pub before: u64,
    pub after: u64,
}

impl FixedCrAdjustment {
    /// Bits FIXED0 turned on.
    pub const fn forced_on(&self) -> u64 {
        self.after & !self.before
    }
    /// Bits FIXED1 turned off.
    pub const fn forced_off(&self) -> u64 {
        self.before & !self.after
    }
    pub const fn unchanged(&self) -> bool {
        self.before == self.after
    }
}

/// Applies [`fixed_cr`] and records which bits it changed.
pub const fn explain_fixed_cr(
    register: ControlRegister,
    value: u64,
    fixed0: u64,
    fixed1: u64,
) -> FixedCrAdjustment {
    FixedCrAdjustment {
        register,
        before: value,
        after: fixed_cr(value, fixed0, fixed1),
    }
}

impl fmt::Display for FixedCrAdjustment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let reg = match self.register {
            ControlRegister::Cr0 => "CR0",
            ControlRegister::Cr4 => "CR4",
        };
        write!(f, "{reg} {:#x} -> {:#x}", self.before, self.after)?;
        for (label, mask) in [
            ("forced to 1", self.forced_on()),
            ("forced to 0", self.forced_off()),
        ] {
            write!(f, "; {label}: ")?;
            if mask == 0 {
                f.write_str("none")?;
            }
            let mut first = true;
            for bit in (0..64).filter(|b| mask & (1u64 << b) != 0) {
                if !first {
                    f.write_str(", ")?;
                }
                first = false;
                match self.register.bit_name(bit) {
                    Some(name) => write!(f, "{name} (bit {bit})")?,
                    None => write!(f, "bit {bit}")?,
                }
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// IA32_FEATURE_CONTROL (SDM Vol. 3C 24.7; Vol. 4 Table 2-2).

pub const FEATURE_CONTROL_LOCK: u64 = 1 << 0;
pub const FEATURE_CONTROL_VMX_INSIDE_SMX: u64 = 1 << 1;
pub const FEATURE_CONTROL_VMX_OUTSIDE_SMX: u64 = 1 << 2;

/// What IA32_FEATURE_CONTROL allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeatureControl {
    /// Not locked: write [`feature_control_enable`]`(value)` before VMXON.
    Unlocked,
    /// Locked with VMX outside SMX enabled: VMXON may proceed.
    LockedEnabled,
    /// Locked with VMX outside SMX disabled: VMXON would #GP; only the
    /// firmware setup can change it.
    LockedDisabled,
}

/// Classifies IA32_FEATURE_CONTROL for VMXON outside SMX.
pub const fn feature_control_verdict(value: u64) -> FeatureControl {
    if value & FEATURE_CONTROL_LOCK == 0 {
        FeatureControl::Unlocked
    } else if value & FEATURE_CONTROL_VMX_OUTSIDE_SMX != 0 {
        FeatureControl::LockedEnabled
    } else {
        FeatureControl::LockedDisabled
    }
}

/// The value to write to an unlocked IA32_FEATURE_CONTROL: VMX outside SMX
/// enabled, then locked (the lock must be set for VMXON to succeed).
pub const fn feature_control_enable(value: u64) -> u64 {
    value | FEATURE_CONTROL_VMX_OUTSIDE_SMX | FEATURE_CONTROL_LOCK
}

impl FeatureControl {
    /// A log line for this verdict about the MSR value `value`.
    pub const fn message(self, value: u64) -> FeatureControlMessage {
        FeatureControlMessage {
            verdict: self,
            value,
        }
    }
}

/// Display text for a [`FeatureControl`] verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeatureControlMessage {
    pub verdict: FeatureControl,
    pub value: u64,
}

impl fmt::Display for FeatureControlMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.value;
        match self.verdict {
            FeatureControl::Unlocked => write!(
                f,
                "IA32_FEATURE_CONTROL = {v:#x} is unlocked: enabling VMX outside SMX (bit 2) \
                 and locking it (bit 0)"
            ),
            FeatureControl::LockedEnabled => write!(
                f,
                "IA32_FEATURE_CONTROL = {v:#x} is locked (bit 0) with VMX outside SMX (bit 2) enabled"
            ),
            FeatureControl::LockedDisabled => write!(
                f,
                "VMX is disabled by firmware: IA32_FEATURE_CONTROL = {v:#x} is locked (bit 0) \
                 with VMX outside SMX (bit 2) clear; enable VT-x in the firmware setup"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_case::test_case;

    /// A fake RDMSR over a table: reading an MSR the modelled CPU lacks
    /// panics, as the real RDMSR would raise #GP.
    fn fake(msrs: &'static [(u32, u64)]) -> impl Fn(u32) -> u64 {
        move |n| match msrs.iter().find(|m| m.0 == n) {
            Some(m) => m.1,
            None => panic!("#GP: RDMSR of absent MSR {n:#x}"),
        }
    }

    const COMMON: [(u32, u64); 6] = [
        (IA32_VMX_MISC, 0x0000_0000_0004_01E5), // 4 CR3 targets, HLT/shutdown/SIPI
        (IA32_VMX_CR0_FIXED0, 0x8000_0021),
        (IA32_VMX_CR0_FIXED1, 0xFFFF_FFFF),
        (IA32_VMX_CR4_FIXED0, 0x2000),
        (IA32_VMX_CR4_FIXED1, 0x0037_27FF),
        (IA32_VMX_VMCS_ENUM, 0x2E),
    ];

    // Bochs corei7_skylake_x (VMX_BASIC and PROCBASED_CTLS2 allowed-1 from
    // FACTS.md; the other control words are plausible values).
    const SKYLAKE: &[(u32, u64)] = &[
        COMMON[0],
        COMMON[1],
        COMMON[2],
        COMMON[3],
        COMMON[4],
        COMMON[5],
        (IA32_VMX_BASIC, 0x00d8_1000_0000_002b),
        (IA32_VMX_PINBASED_CTLS, 0x0000_00ff_0000_0016),
        (IA32_VMX_TRUE_PINBASED_CTLS, 0x0000_00ff_0000_0016),
        (IA32_VMX_PROCBASED_CTLS, 0xfff9_fffe_0401_e172),
        (IA32_VMX_TRUE_PROCBASED_CTLS, 0xfff9_fffe_0400_6172),
        (IA32_VMX_EXIT_CTLS, 0x01ff_ffff_0003_6dff),
        (IA32_VMX_TRUE_EXIT_CTLS, 0x01ff_ffff_0003_6dfb),
        (IA32_VMX_ENTRY_CTLS, 0x0003_ffff_0000_11ff),
        (IA32_VMX_TRUE_ENTRY_CTLS, 0x0003_ffff_0000_11fb),
        (IA32_VMX_PROCBASED_CTLS2, 0x0217_7fff_0000_0000),
        (IA32_VMX_EPT_VPID_CAP, 0x0000_0f01_0631_4141),
        (IA32_VMX_VMFUNC, 0x1),
    ];

    // Bochs core2_penryn_t9600: no TRUE_ MSRs in this model, PROCBASED_CTLS2
    // allowed-1 0x41 (FACTS.md): no EPT, no VPID, so EPT_VPID_CAP and VMFUNC
    // are absent.
    const PENRYN: &[(u32, u64)] = &[
        COMMON[0],
        COMMON[1],
        COMMON[2],
        COMMON[3],
        COMMON[4],
        COMMON[5],
        (IA32_VMX_BASIC, 0x005a_0800_0000_000d),
        (IA32_VMX_PINBASED_CTLS, 0x0000_003f_0000_0016),
        (IA32_VMX_PROCBASED_CTLS, 0xf7f9_fffe_0401_e172),
        (IA32_VMX_EXIT_CTLS, 0x0003_6fff_0003_6dff),
        (IA32_VMX_ENTRY_CTLS, 0x0000_33ff_0000_11ff),
        (IA32_VMX_PROCBASED_CTLS2, 0x0000_0041_0000_0000),
    ];

    // An old CPU without secondary controls: PROCBASED_CTLS2 is absent.
    const NO_SECONDARY: &[(u32, u64)] = &[
        COMMON[0],
        COMMON[1],
        COMMON[2],
        COMMON[3],
        COMMON[4],
        COMMON[5],
        (IA32_VMX_BASIC, 0x005a_0400_0000_0007),
        (IA32_VMX_PINBASED_CTLS, 0x0000_003f_0000_0016),
        (IA32_VMX_PROCBASED_CTLS, 0x77f9_fffe_0401_e172),
        (IA32_VMX_EXIT_CTLS, 0x0003_6fff_0003_6dff),
        (IA32_VMX_ENTRY_CTLS, 0x0000_33ff_0000_11ff),
    ];

    // Sandy Bridge-like: EPT, VPID, unrestricted guest, no VM functions.
    const SANDY: &[(u32, u64)] = &[
        COMMON[0],
        COMMON[1],
        COMMON[2],
        COMMON[3],
        COMMON[4],
        COMMON[5],
        (IA32_VMX_BASIC, 0x00da_0400_0000_0010),
        (IA32_VMX_TRUE_PINBASED_CTLS, 0x0000_007f_0000_0016),
        (IA32_VMX_TRUE_PROCBASED_CTLS, 0xfff9_fffe_0400_6172),
        (IA32_VMX_TRUE_EXIT_CTLS, 0x007f_ffff_0003_6dfb),
        (IA32_VMX_TRUE_ENTRY_CTLS, 0x0000_ffff_0000_11fb),
        (IA32_VMX_PROCBASED_CTLS2, 0x0000_00ff_0000_0000),
        (IA32_VMX_EPT_VPID_CAP, 0x0000_0f01_0611_4141),
    ];

    #[test]
    fn skylake_uses_true_msrs_and_reads_everything() {
        let c = VmxCaps::read(fake(SKYLAKE));
        assert!(c.true_controls());
        assert_eq!(c.revision_id(), 0x2b);
        assert_eq!(c.vmcs_region_size(), 4096);
        assert_eq!(c.vmcs_memory_type(), 6);
        assert!(c.ins_outs_info());
        assert!(!c.addresses_limited_to_32_bits());
        // TRUE_ procbased: CR3-load/store exiting may be 0.
        assert_eq!(c.procbased.allowed0, 0x0400_6172);
        assert_eq!(c.procbased2.map(|a| a.allowed1), Some(0x0217_7fff));
        assert!(c.has_ept() && c.has_vpid() && c.has_unrestricted_guest());
        assert!(c.has_invept() && c.has_invvpid());
        assert_eq!(c.vmfunc, Some(1));
        assert_eq!(c.cr3_target_count(), 4);
        assert!(c.activity_state_supported(3));
        assert_eq!(c.max_msr_list_entries(), 512);
        assert_eq!(c.highest_vmcs_index(), 0x17);
    }

    #[test]
    fn penryn_reads_no_true_msrs_and_no_ept_caps() {
        let c = VmxCaps::read(fake(PENRYN));
        assert!(!c.true_controls());
        assert_eq!(c.revision_id(), 0xd);
        assert_eq!(c.procbased.allowed0, proc_based::DEFAULT1);
        assert_eq!(
            c.procbased2,
            Some(AllowedBits {
                allowed0: 0,
                allowed1: 0x41
            })
        );
        assert!(!c.has_ept() && !c.has_vpid() && !c.has_unrestricted_guest());
        assert_eq!((c.ept_vpid, c.vmfunc), (None, None));
        assert!(!c.has_invvpid());
    }

    #[test]
    fn no_secondary_controls_skips_procbased_ctls2() {
        let c = VmxCaps::read(fake(NO_SECONDARY));
        assert_eq!(c.procbased2, None);
        assert_eq!(c.allowed(ControlWord::SecondaryProcBased), None);
        assert!(!c.has_ept());
    }

    #[test]
    fn sandy_bridge_reads_ept_caps_but_not_vmfunc() {
        let c = VmxCaps::read(fake(SANDY));
        assert!(c.has_ept() && c.has_unrestricted_guest());
        assert!(c.ept_vpid.is_some());
        assert_eq!(c.vmfunc, None);
    }

    #[test_case(0x0000_0000, 0x0000_53ff, Some("VM-entry control \"load IA32_EFER\" (bit 15) is required but not supported by this CPU (allowed-1 = 0x000053ff)") ; "efer missing")]
    #[test_case(0x0000_11ff, 0x0000_ffff, None ; "all supported")]
    fn reconcile_entry(allowed0: u32, allowed1: u32, err: Option<&str>) {
        let want = entry_ctl::LOAD_EFER | entry_ctl::IA32E_MODE_GUEST;
        let r = reconcile(
            ControlWord::Entry,
            want,
            entry_ctl::LOAD_PAT,
            AllowedBits { allowed0, allowed1 },
        );
        match err {
            Some(text) => {
                let e = r.unwrap_err();
                assert_eq!((e.bit, e.name), (15, "load IA32_EFER"));
                assert_eq!(alloc::format!("{e}"), text);
            }
            None => assert_eq!(r, Ok(want | entry_ctl::LOAD_PAT | 0x11ff)),
        }
    }

    #[test_case(ControlWord::PrimaryProcBased, proc_based::HLT_EXITING, 0, 0x0401_e172, 0xffff_fffe, Ok(0x0401_e1f2) ; "hlt")]
    #[test_case(ControlWord::PrimaryProcBased, proc_based::ACTIVATE_SECONDARY_CONTROLS, 0, 0, 0x7fff_ffff, Err((31, "activate secondary controls")) ; "no secondary")]
    #[test_case(ControlWord::SecondaryProcBased, proc_based2::UNRESTRICTED_GUEST, 0, 0, 0x41, Err((7, "unrestricted guest")) ; "penryn no ug")]
    #[test_case(ControlWord::SecondaryProcBased, 0, proc_based2::ENABLE_EPT | proc_based2::ENABLE_VPID, 0, 0x41, Ok(0) ; "optional dropped")]
    #[test_case(ControlWord::SecondaryProcBased, 0, proc_based2::ENABLE_EPT, 0, 0x0217_7fff, Ok(2) ; "optional kept")]
    #[test_case(ControlWord::Exit, exit_ctl::HOST_ADDRESS_SPACE_SIZE | exit_ctl::ACK_INTERRUPT_ON_EXIT, 0, 0x36dff, 0x36dff, Err((9, "host address-space size")) ; "exit lowest missing")]
    #[test_case(ControlWord::Exit, exit_ctl::HOST_ADDRESS_SPACE_SIZE | exit_ctl::ACK_INTERRUPT_ON_EXIT, 0, 0x36dff, 0x36fff, Err((15, "acknowledge interrupt on exit")) ; "exit ack missing")]
    #[test_case(ControlWord::PinBased, pin_based::NMI_EXITING | pin_based::EXTERNAL_INTERRUPT_EXITING, 0, 0x16, 0x3f, Ok(0x1f) ; "pin")]
    #[test_case(ControlWord::PinBased, 1 << 29, 0, 0x16, 0x3f, Err((29, "reserved")) ; "reserved bit")]
    fn reconcile_table(
        word: ControlWord,
        required: u32,
        optional: u32,
        a0: u32,
        a1: u32,
        want: Result<u32, (u8, &str)>,
    ) {
        let r = reconcile(
            word,
            required,
            optional,
            AllowedBits {
                allowed0: a0,
                allowed1: a1,
            },
        );
        assert_eq!(r.map_err(|e| (e.bit, e.name)), want);
    }

    #[test]
    fn forced_to_one_is_reported() {
        let allowed = AllowedBits {
            allowed0: 0x0401_e172,
            allowed1: 0xffff_fffe,
        };
        assert_eq!(
            check_clear(
                ControlWord::PrimaryProcBased,
                proc_based::RDTSC_EXITING,
                allowed
            ),
            Ok(())
        );
        let e = check_clear(
            ControlWord::PrimaryProcBased,
            proc_based::CR3_LOAD_EXITING,
            allowed,
        )
        .unwrap_err();
        assert_eq!(e.kind, ControlErrorKind::ForcedToOne);
        assert_eq!(
            alloc::format!("{e}"),
            "primary processor-based VM-execution control \"CR3-load exiting\" (bit 15) must be 0 \
             for Quadrant but this CPU forces it to 1 (allowed-0 = 0x0401e172)"
        );
    }

    #[test]
    fn every_named_bit_is_unique_and_allowed_by_word() {
        for w in ControlWord::ALL {
            let bits = w.bits();
            for (i, c) in bits.iter().enumerate() {
                assert!(c.bit < 32);
                assert!(
                    bits[i + 1..].iter().all(|d| d.bit != c.bit),
                    "{w}: bit {} twice",
                    c.bit
                );
            }
        }
        assert_eq!(ControlWord::Exit.bit_name(9), "host address-space size");
        assert_eq!(ControlWord::Entry.bit_name(9), "IA-32e mode guest");
        assert_eq!(ControlWord::SecondaryProcBased.bit_name(1), "enable EPT");
        assert_eq!(ControlWord::Exit.bit_name(20), "save IA32_EFER");
        assert_eq!(
            ControlWord::PrimaryProcBased.field(),
            Field32::PrimaryProcBasedControls
        );
        assert_eq!(
            ControlWord::Entry.capability_msr(true),
            IA32_VMX_TRUE_ENTRY_CTLS
        );
        assert_eq!(
            ControlWord::Entry.capability_msr(false),
            IA32_VMX_ENTRY_CTLS
        );
    }

    #[test_case(0x11, 0x8000_0021, 0xffff_ffff, 0x8000_0031 ; "pg ne forced")]
    #[test_case(0x6000_0031, 0x8000_0021, 0x9fff_ffff, 0x8000_0031 ; "cd nw cleared")]
    #[test_case(0x8000_0031, 0x8000_0021, 0xffff_ffff, 0x8000_0031 ; "unchanged")]
    fn fixed_cr0(value: u64, f0: u64, f1: u64, want: u64) {
        assert_eq!(fixed_cr(value, f0, f1), want);
    }

    #[test]
    fn fixed_cr_explanation() {
        let a = explain_fixed_cr(ControlRegister::Cr0, 0x6000_0011, 0x8000_0021, 0x9fff_ffff);
        assert_eq!(
            alloc::format!("{a}"),
            "CR0 0x60000011 -> 0x80000031; forced to 1: NE (bit 5), PG (bit 31); \
             forced to 0: NW (bit 29), CD (bit 30)"
        );
        let b = explain_fixed_cr(ControlRegister::Cr4, 0x20, 0x2000, 0x0037_27ff);
        assert_eq!(
            alloc::format!("{b}"),
            "CR4 0x20 -> 0x2020; forced to 1: VMXE (bit 13); forced to 0: none"
        );
        assert!(explain_fixed_cr(ControlRegister::Cr4, 0x2020, 0x2000, !0).unchanged());
        assert_eq!(guest_cr0_fixed0(0x8000_0021, true), 0x20);
        assert_eq!(guest_cr0_fixed0(0x8000_0021, false), 0x8000_0021);
    }

    #[test_case(0x0, FeatureControl::Unlocked ; "zero")]
    #[test_case(0x4, FeatureControl::Unlocked ; "enabled not locked")]
    #[test_case(0x5, FeatureControl::LockedEnabled ; "bochs")]
    #[test_case(0x3, FeatureControl::LockedDisabled ; "smx only")]
    #[test_case(0x1, FeatureControl::LockedDisabled ; "locked off")]
    fn feature_control(value: u64, want: FeatureControl) {
        assert_eq!(feature_control_verdict(value), want);
    }

    #[test]
    fn feature_control_texts() {
        assert_eq!(
            alloc::format!("{}", feature_control_verdict(1).message(1)),
            "VMX is disabled by firmware: IA32_FEATURE_CONTROL = 0x1 is locked (bit 0) with VMX \
             outside SMX (bit 2) clear; enable VT-x in the firmware setup"
        );
        assert_eq!(feature_control_enable(0), 5);
        assert_eq!(
            feature_control_verdict(feature_control_enable(0x2)),
            FeatureControl::LockedEnabled
        );
    }
}
