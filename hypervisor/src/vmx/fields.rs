//! Typed VMCS field encodings (SDM Vol. 3D Appendix B, "Field Encoding in
//! VMCS"), grouped by width and by whether software may write them.
//!
//! This module owns the *names and numbers* of VMCS fields only; the
//! `vmread`/`vmwrite` wrappers live with the rest of the VMX instructions.
//! The split by type is what makes a read-only field impossible to write:
//! the accessor offers `vmwrite` for [`Field16`], [`Field32`], [`Field64`] and
//! [`FieldNatural`] only, and `vmread` for every group including the `*Ro`
//! ("VM-exit information") groups.
//!
//! An encoding is laid out as (SDM Vol. 3C 25.11.2):
//! bit 0 access type (0 = full, 1 = high half of a 64-bit field),
//! bits 9:1 index, bits 11:10 type (0 control, 1 VM-exit information,
//! 2 guest state, 3 host state), bits 14:13 width (0 16-bit, 1 64-bit,
//! 2 32-bit, 3 natural width). Every `ALL` list holds full encodings only.
//!
//! Not every CPU implements every field listed here: a `vmread` of a field
//! the CPU lacks fails with VM-instruction error 12, so a VMCS dump must
//! skip fields whose read fails instead of stopping.

/// Declares one width group: the enum, `encoding()`, `name()` and `ALL`.
macro_rules! vmcs_field_group {
    (
        $(#[$meta:meta])*
        pub enum $group:ident {
            $( $variant:ident = $enc:literal => $name:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum $group {
            $(
                #[doc = concat!("`", $name, "` (encoding `", stringify!($enc), "`).")]
                $variant = $enc,
            )*
        }

        impl $group {
            /// Every field of this group, in encoding order (for a VMCS dump).
            pub const ALL: &'static [Self] = &[$(Self::$variant),*];

            /// The 32-bit encoding passed to VMREAD/VMWRITE.
            pub const fn encoding(self) -> u32 {
                self as u32
            }

            /// The field's name in SDM style, e.g. `"GUEST_CR0"`.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Self::$variant => $name,)*
                }
            }

            /// Looks a field of this group up by its encoding.
            pub fn from_encoding(encoding: u32) -> Option<Self> {
                Self::ALL.iter().copied().find(|f| f.encoding() == encoding)
            }
        }

        impl core::fmt::Display for $group {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

vmcs_field_group! {
    /// Writable 16-bit fields: control, guest state, host state
    /// (SDM Vol. 3D B.1.1-B.1.3).
    pub enum Field16 {
        Vpid = 0x0000 => "VIRTUAL_PROCESSOR_ID",
        PostedInterruptNotificationVector = 0x0002 => "POSTED_INTR_NV",
        EptpIndex = 0x0004 => "EPTP_INDEX",
        GuestEsSelector = 0x0800 => "GUEST_ES_SELECTOR",
        GuestCsSelector = 0x0802 => "GUEST_CS_SELECTOR",
        GuestSsSelector = 0x0804 => "GUEST_SS_SELECTOR",
        GuestDsSelector = 0x0806 => "GUEST_DS_SELECTOR",
        GuestFsSelector = 0x0808 => "GUEST_FS_SELECTOR",
        GuestGsSelector = 0x080A => "GUEST_GS_SELECTOR",
        GuestLdtrSelector = 0x080C => "GUEST_LDTR_SELECTOR",
        GuestTrSelector = 0x080E => "GUEST_TR_SELECTOR",
        GuestInterruptStatus = 0x0810 => "GUEST_INTR_STATUS",
        PmlIndex = 0x0812 => "GUEST_PML_INDEX",
        HostEsSelector = 0x0C00 => "HOST_ES_SELECTOR",
        HostCsSelector = 0x0C02 => "HOST_CS_SELECTOR",
        HostSsSelector = 0x0C04 => "HOST_SS_SELECTOR",
        HostDsSelector = 0x0C06 => "HOST_DS_SELECTOR",
        HostFsSelector = 0x0C08 => "HOST_FS_SELECTOR",
        HostGsSelector = 0x0C0A => "HOST_GS_SELECTOR",
        HostTrSelector = 0x0C0C => "HOST_TR_SELECTOR",
    }
}

vmcs_field_group! {
    /// Writable 64-bit fields, full encodings: control, guest state, host
    /// state (SDM Vol. 3D B.2.1, B.2.3, B.2.4). The high half of each is
    /// `encoding() | 1` ([`Field64::high_encoding`]), needed only by 32-bit
    /// hosts.
    pub enum Field64 {
        IoBitmapA = 0x2000 => "IO_BITMAP_A",
        IoBitmapB = 0x2002 => "IO_BITMAP_B",
        MsrBitmap = 0x2004 => "MSR_BITMAP",
        ExitMsrStoreAddress = 0x2006 => "VM_EXIT_MSR_STORE_ADDR",
        ExitMsrLoadAddress = 0x2008 => "VM_EXIT_MSR_LOAD_ADDR",
        EntryMsrLoadAddress = 0x200A => "VM_ENTRY_MSR_LOAD_ADDR",
        ExecutiveVmcsPointer = 0x200C => "EXECUTIVE_VMCS_POINTER",
        PmlAddress = 0x200E => "PML_ADDRESS",
        TscOffset = 0x2010 => "TSC_OFFSET",
        VirtualApicAddress = 0x2012 => "VIRTUAL_APIC_PAGE_ADDR",
        ApicAccessAddress = 0x2014 => "APIC_ACCESS_ADDR",
        PostedInterruptDescriptorAddress = 0x2016 => "POSTED_INTR_DESC_ADDR",
        VmFunctionControls = 0x2018 => "VM_FUNCTION_CONTROL",
        EptPointer = 0x201A => "EPT_POINTER",
        EoiExitBitmap0 = 0x201C => "EOI_EXIT_BITMAP0",
        EoiExitBitmap1 = 0x201E => "EOI_EXIT_BITMAP1",
        EoiExitBitmap2 = 0x2020 => "EOI_EXIT_BITMAP2",
        EoiExitBitmap3 = 0x2022 => "EOI_EXIT_BITMAP3",
        EptpListAddress = 0x2024 => "EPTP_LIST_ADDRESS",
        VmreadBitmap = 0x2026 => "VMREAD_BITMAP",
        VmwriteBitmap = 0x2028 => "VMWRITE_BITMAP",
        VirtualizationExceptionInfoAddress = 0x202A => "VE_INFORMATION_ADDRESS",
        XssExitingBitmap = 0x202C => "XSS_EXIT_BITMAP",
        EnclsExitingBitmap = 0x202E => "ENCLS_EXITING_BITMAP",
        TscMultiplier = 0x2032 => "TSC_MULTIPLIER",
        VmcsLinkPointer = 0x2800 => "VMCS_LINK_POINTER",
        GuestDebugCtl = 0x2802 => "GUEST_IA32_DEBUGCTL",
        GuestPat = 0x2804 => "GUEST_IA32_PAT",
        GuestEfer = 0x2806 => "GUEST_IA32_EFER",
        GuestPerfGlobalCtrl = 0x2808 => "GUEST_IA32_PERF_GLOBAL_CTRL",
        GuestPdpte0 = 0x280A => "GUEST_PDPTE0",
        GuestPdpte1 = 0x280C => "GUEST_PDPTE1",
        GuestPdpte2 = 0x280E => "GUEST_PDPTE2",
        GuestPdpte3 = 0x2810 => "GUEST_PDPTE3",
        GuestBndcfgs = 0x2812 => "GUEST_IA32_BNDCFGS",
        HostPat = 0x2C00 => "HOST_IA32_PAT",
        HostEfer = 0x2C02 => "HOST_IA32_EFER",
        HostPerfGlobalCtrl = 0x2C04 => "HOST_IA32_PERF_GLOBAL_CTRL",
    }
}

vmcs_field_group! {
    /// Writable 32-bit fields: control, guest state, host state
    /// (SDM Vol. 3D B.3.1, B.3.3, B.3.4).
    pub enum Field32 {
        PinBasedControls = 0x4000 => "PIN_BASED_VM_EXEC_CONTROL",
        PrimaryProcBasedControls = 0x4002 => "CPU_BASED_VM_EXEC_CONTROL",
        ExceptionBitmap = 0x4004 => "EXCEPTION_BITMAP",
        PageFaultErrorCodeMask = 0x4006 => "PAGE_FAULT_ERROR_CODE_MASK",
        PageFaultErrorCodeMatch = 0x4008 => "PAGE_FAULT_ERROR_CODE_MATCH",
        Cr3TargetCount = 0x400A => "CR3_TARGET_COUNT",
        ExitControls = 0x400C => "VM_EXIT_CONTROLS",
        ExitMsrStoreCount = 0x400E => "VM_EXIT_MSR_STORE_COUNT",
        ExitMsrLoadCount = 0x4010 => "VM_EXIT_MSR_LOAD_COUNT",
        EntryControls = 0x4012 => "VM_ENTRY_CONTROLS",
        EntryMsrLoadCount = 0x4014 => "VM_ENTRY_MSR_LOAD_COUNT",
        EntryInterruptionInfo = 0x4016 => "VM_ENTRY_INTR_INFO_FIELD",
        EntryExceptionErrorCode = 0x4018 => "VM_ENTRY_EXCEPTION_ERROR_CODE",
        EntryInstructionLength = 0x401A => "VM_ENTRY_INSTRUCTION_LEN",
        TprThreshold = 0x401C => "TPR_THRESHOLD",
        SecondaryProcBasedControls = 0x401E => "SECONDARY_VM_EXEC_CONTROL",
        PleGap = 0x4020 => "PLE_GAP",
        PleWindow = 0x4022 => "PLE_WINDOW",
        GuestEsLimit = 0x4800 => "GUEST_ES_LIMIT",
        GuestCsLimit = 0x4802 => "GUEST_CS_LIMIT",
        GuestSsLimit = 0x4804 => "GUEST_SS_LIMIT",
        GuestDsLimit = 0x4806 => "GUEST_DS_LIMIT",
        GuestFsLimit = 0x4808 => "GUEST_FS_LIMIT",
        GuestGsLimit = 0x480A => "GUEST_GS_LIMIT",
        GuestLdtrLimit = 0x480C => "GUEST_LDTR_LIMIT",
        GuestTrLimit = 0x480E => "GUEST_TR_LIMIT",
        GuestGdtrLimit = 0x4810 => "GUEST_GDTR_LIMIT",
        GuestIdtrLimit = 0x4812 => "GUEST_IDTR_LIMIT",
        GuestEsAccessRights = 0x4814 => "GUEST_ES_AR_BYTES",
        GuestCsAccessRights = 0x4816 => "GUEST_CS_AR_BYTES",
        GuestSsAccessRights = 0x4818 => "GUEST_SS_AR_BYTES",
        GuestDsAccessRights = 0x481A => "GUEST_DS_AR_BYTES",
        GuestFsAccessRights = 0x481C => "GUEST_FS_AR_BYTES",
        GuestGsAccessRights = 0x481E => "GUEST_GS_AR_BYTES",
        GuestLdtrAccessRights = 0x4820 => "GUEST_LDTR_AR_BYTES",
        GuestTrAccessRights = 0x4822 => "GUEST_TR_AR_BYTES",
        GuestInterruptibility = 0x4824 => "GUEST_INTERRUPTIBILITY_INFO",
        GuestActivityState = 0x4826 => "GUEST_ACTIVITY_STATE",
        GuestSmbase = 0x4828 => "GUEST_SMBASE",
        GuestSysenterCs = 0x482A => "GUEST_SYSENTER_CS",
        VmxPreemptionTimerValue = 0x482E => "VMX_PREEMPTION_TIMER_VALUE",
        HostSysenterCs = 0x4C00 => "HOST_IA32_SYSENTER_CS",
    }
}

vmcs_field_group! {
    /// Writable natural-width fields: control, guest state, host state
    /// (SDM Vol. 3D B.4.1, B.4.3, B.4.4).
    pub enum FieldNatural {
        Cr0GuestHostMask = 0x6000 => "CR0_GUEST_HOST_MASK",
        Cr4GuestHostMask = 0x6002 => "CR4_GUEST_HOST_MASK",
        Cr0ReadShadow = 0x6004 => "CR0_READ_SHADOW",
        Cr4ReadShadow = 0x6006 => "CR4_READ_SHADOW",
        Cr3Target0 = 0x6008 => "CR3_TARGET_VALUE0",
        Cr3Target1 = 0x600A => "CR3_TARGET_VALUE1",
        Cr3Target2 = 0x600C => "CR3_TARGET_VALUE2",
        Cr3Target3 = 0x600E => "CR3_TARGET_VALUE3",
        GuestCr0 = 0x6800 => "GUEST_CR0",
        GuestCr3 = 0x6802 => "GUEST_CR3",
        GuestCr4 = 0x6804 => "GUEST_CR4",
        GuestEsBase = 0x6806 => "GUEST_ES_BASE",
        GuestCsBase = 0x6808 => "GUEST_CS_BASE",
        GuestSsBase = 0x680A => "GUEST_SS_BASE",
        GuestDsBase = 0x680C => "GUEST_DS_BASE",
        GuestFsBase = 0x680E => "GUEST_FS_BASE",
        GuestGsBase = 0x6810 => "GUEST_GS_BASE",
        GuestLdtrBase = 0x6812 => "GUEST_LDTR_BASE",
        GuestTrBase = 0x6814 => "GUEST_TR_BASE",
        GuestGdtrBase = 0x6816 => "GUEST_GDTR_BASE",
        GuestIdtrBase = 0x6818 => "GUEST_IDTR_BASE",
        GuestDr7 = 0x681A => "GUEST_DR7",
        GuestRsp = 0x681C => "GUEST_RSP",
        GuestRip = 0x681E => "GUEST_RIP",
        GuestRflags = 0x6820 => "GUEST_RFLAGS",
        GuestPendingDebugExceptions = 0x6822 => "GUEST_PENDING_DBG_EXCEPTIONS",
        GuestSysenterEsp = 0x6824 => "GUEST_SYSENTER_ESP",
        GuestSysenterEip = 0x6826 => "GUEST_SYSENTER_EIP",
        HostCr0 = 0x6C00 => "HOST_CR0",
        HostCr3 = 0x6C02 => "HOST_CR3",
        HostCr4 = 0x6C04 => "HOST_CR4",
        HostFsBase = 0x6C06 => "HOST_FS_BASE",
        HostGsBase = 0x6C08 => "HOST_GS_BASE",
        HostTrBase = 0x6C0A => "HOST_TR_BASE",
        HostGdtrBase = 0x6C0C => "HOST_GDTR_BASE",
        HostIdtrBase = 0x6C0E => "HOST_IDTR_BASE",
        HostSysenterEsp = 0x6C10 => "HOST_IA32_SYSENTER_ESP",
        HostSysenterEip = 0x6C12 => "HOST_IA32_SYSENTER_EIP",
        HostRsp = 0x6C14 => "HOST_RSP",
        HostRip = 0x6C16 => "HOST_RIP",
    }
}

vmcs_field_group! {
    /// Read-only 32-bit VM-exit information fields (SDM Vol. 3D B.3.2).
    pub enum Field32Ro {
        VmInstructionError = 0x4400 => "VM_INSTRUCTION_ERROR",
        ExitReason = 0x4402 => "VM_EXIT_REASON",
        ExitInterruptionInfo = 0x4404 => "VM_EXIT_INTR_INFO",
        ExitInterruptionErrorCode = 0x4406 => "VM_EXIT_INTR_ERROR_CODE",
        IdtVectoringInfo = 0x4408 => "IDT_VECTORING_INFO_FIELD",
        IdtVectoringErrorCode = 0x440A => "IDT_VECTORING_ERROR_CODE",
        ExitInstructionLength = 0x440C => "VM_EXIT_INSTRUCTION_LEN",
        ExitInstructionInfo = 0x440E => "VMX_INSTRUCTION_INFO",
    }
}

vmcs_field_group! {
    /// Read-only 64-bit VM-exit information fields (SDM Vol. 3D B.2.2).
    pub enum Field64Ro {
        GuestPhysicalAddress = 0x2400 => "GUEST_PHYSICAL_ADDRESS",
    }
}

vmcs_field_group! {
    /// Read-only natural-width VM-exit information fields
    /// (SDM Vol. 3D B.4.2).
    pub enum FieldNaturalRo {
        ExitQualification = 0x6400 => "EXIT_QUALIFICATION",
        IoRcx = 0x6402 => "IO_RCX",
        IoRsi = 0x6404 => "IO_RSI",
        IoRdi = 0x6406 => "IO_RDI",
        IoRip = 0x6408 => "IO_RIP",
        GuestLinearAddress = 0x640A => "GUEST_LINEAR_ADDRESS",
    }
}

impl Field64 {
    /// Encoding of the high 32 bits of this field (access type bit 0 set;
    /// SDM Vol. 3C 25.11.2). Only a 32-bit host needs it.
    pub const fn high_encoding(self) -> u32 {
        self.encoding() | 1
    }
}

/// Width of a VMCS field as stated by bits 14:13 of its encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldWidth {
    Bits16,
    Bits64,
    Bits32,
    Natural,
}

/// Type of a VMCS field as stated by bits 11:10 of its encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldType {
    Control,
    /// VM-exit information: read-only unless IA32_VMX_MISC bit 29.
    ExitInformation,
    GuestState,
    HostState,
}

/// Width bits (14:13) of an encoding (SDM Vol. 3C 25.11.2).
pub const fn width_of(encoding: u32) -> FieldWidth {
    match (encoding >> 13) & 3 {
        0 => FieldWidth::Bits16,
        1 => FieldWidth::Bits64,
        2 => FieldWidth::Bits32,
        _ => FieldWidth::Natural,
    }
}

/// Type bits (11:10) of an encoding (SDM Vol. 3C 25.11.2).
pub const fn type_of(encoding: u32) -> FieldType {
    match (encoding >> 10) & 3 {
        0 => FieldType::Control,
        1 => FieldType::ExitInformation,
        2 => FieldType::GuestState,
        _ => FieldType::HostState,
    }
}

/// Index bits (9:1) of an encoding (SDM Vol. 3C 25.11.2); IA32_VMX_VMCS_ENUM
/// reports the highest index the CPU implements.
pub const fn index_of(encoding: u32) -> u32 {
    (encoding >> 1) & 0x1FF
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_case::test_case;

    fn all_encodings() -> impl Iterator<Item = (u32, &'static str)> {
        let e16 = Field16::ALL.iter().map(|f| (f.encoding(), f.name()));
        let e32 = Field32::ALL.iter().map(|f| (f.encoding(), f.name()));
        let e64 = Field64::ALL.iter().map(|f| (f.encoding(), f.name()));
        let en = FieldNatural::ALL.iter().map(|f| (f.encoding(), f.name()));
        let r32 = Field32Ro::ALL.iter().map(|f| (f.encoding(), f.name()));
        let r64 = Field64Ro::ALL.iter().map(|f| (f.encoding(), f.name()));
        let rn = FieldNaturalRo::ALL.iter().map(|f| (f.encoding(), f.name()));
        e16.chain(e32)
            .chain(e64)
            .chain(en)
            .chain(r32)
            .chain(r64)
            .chain(rn)
    }

    fn check_group(encodings: &[u32], width: FieldWidth, read_only: bool) {
        for &e in encodings {
            assert_eq!(width_of(e), width, "width bits of {e:#x}");
            assert_eq!(
                type_of(e) == FieldType::ExitInformation,
                read_only,
                "type bits of {e:#x}"
            );
            assert_eq!(e & 1, 0, "{e:#x} must be a full encoding");
            assert_eq!(e & (1 << 12), 0, "{e:#x}: bit 12 is reserved");
            assert_eq!(e >> 15, 0, "{e:#x}: bits 31:15 are reserved");
        }
    }

    #[test]
    fn width_and_type_bits_match_the_group() {
        let v = |it: &mut dyn Iterator<Item = u32>| it.collect::<alloc::vec::Vec<_>>();
        check_group(
            &v(&mut Field16::ALL.iter().map(|f| f.encoding())),
            FieldWidth::Bits16,
            false,
        );
        check_group(
            &v(&mut Field32::ALL.iter().map(|f| f.encoding())),
            FieldWidth::Bits32,
            false,
        );
        check_group(
            &v(&mut Field64::ALL.iter().map(|f| f.encoding())),
            FieldWidth::Bits64,
            false,
        );
        check_group(
            &v(&mut FieldNatural::ALL.iter().map(|f| f.encoding())),
            FieldWidth::Natural,
            false,
        );
        check_group(
            &v(&mut Field32Ro::ALL.iter().map(|f| f.encoding())),
            FieldWidth::Bits32,
            true,
        );
        check_group(
            &v(&mut Field64Ro::ALL.iter().map(|f| f.encoding())),
            FieldWidth::Bits64,
            true,
        );
        check_group(
            &v(&mut FieldNaturalRo::ALL.iter().map(|f| f.encoding())),
            FieldWidth::Natural,
            true,
        );
    }

    #[test]
    fn encodings_and_names_are_unique() {
        let all: alloc::vec::Vec<_> = all_encodings().collect();
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(
                    a.0, b.0,
                    "duplicate encoding {:#x}: {} and {}",
                    a.0, a.1, b.1
                );
                assert_ne!(a.1, b.1, "duplicate name {}", a.1);
            }
        }
        assert!(all.len() > 150, "only {} fields", all.len());
    }

    #[test]
    fn all_lists_are_in_encoding_order() {
        fn sorted(v: impl Iterator<Item = u32>) -> bool {
            let v: alloc::vec::Vec<u32> = v.collect();
            v.windows(2).all(|w| w[0] < w[1])
        }
        assert!(sorted(Field16::ALL.iter().map(|f| f.encoding())));
        assert!(sorted(Field32::ALL.iter().map(|f| f.encoding())));
        assert!(sorted(Field64::ALL.iter().map(|f| f.encoding())));
        assert!(sorted(FieldNatural::ALL.iter().map(|f| f.encoding())));
        assert!(sorted(Field32Ro::ALL.iter().map(|f| f.encoding())));
        assert!(sorted(FieldNaturalRo::ALL.iter().map(|f| f.encoding())));
    }

    // Spot checks against SDM Vol. 3D Appendix B.
    #[test_case(Field16::Vpid.encoding(), 0x0000 ; "vpid")]
    #[test_case(Field16::GuestTrSelector.encoding(), 0x080E ; "guest tr")]
    #[test_case(Field16::HostTrSelector.encoding(), 0x0C0C ; "host tr")]
    #[test_case(Field64::EptPointer.encoding(), 0x201A ; "eptp")]
    #[test_case(Field64::VmcsLinkPointer.encoding(), 0x2800 ; "link pointer")]
    #[test_case(Field64::GuestPdpte3.encoding(), 0x2810 ; "pdpte3")]
    #[test_case(Field64::HostEfer.encoding(), 0x2C02 ; "host efer")]
    #[test_case(Field64::GuestEfer.high_encoding(), 0x2807 ; "guest efer high")]
    #[test_case(Field32::SecondaryProcBasedControls.encoding(), 0x401E ; "secondary")]
    #[test_case(Field32::GuestActivityState.encoding(), 0x4826 ; "activity")]
    #[test_case(Field32::HostSysenterCs.encoding(), 0x4C00 ; "host sysenter cs")]
    #[test_case(Field32Ro::ExitReason.encoding(), 0x4402 ; "exit reason")]
    #[test_case(Field64Ro::GuestPhysicalAddress.encoding(), 0x2400 ; "gpa")]
    #[test_case(FieldNatural::GuestRip.encoding(), 0x681E ; "guest rip")]
    #[test_case(FieldNatural::HostRip.encoding(), 0x6C16 ; "host rip")]
    #[test_case(FieldNaturalRo::GuestLinearAddress.encoding(), 0x640A ; "gla")]
    fn known_encodings(got: u32, want: u32) {
        assert_eq!(got, want);
    }

    #[test_case(0x6800, "GUEST_CR0")]
    #[test_case(0x4002, "CPU_BASED_VM_EXEC_CONTROL")]
    #[test_case(0x6400, "EXIT_QUALIFICATION")]
    fn names_by_encoding(encoding: u32, name: &str) {
        assert_eq!(
            all_encodings().find(|e| e.0 == encoding).map(|e| e.1),
            Some(name)
        );
    }

    #[test]
    fn from_encoding_round_trips() {
        for f in FieldNatural::ALL {
            assert_eq!(FieldNatural::from_encoding(f.encoding()), Some(*f));
        }
        assert_eq!(
            Field32::from_encoding(0x4400),
            None,
            "read-only field is not writable"
        );
        assert_eq!(
            Field32Ro::from_encoding(0x4400),
            Some(Field32Ro::VmInstructionError)
        );
        assert_eq!(index_of(Field32::GuestActivityState.encoding()), 0x13);
    }
}
