//! Decoding of VM-exit information: basic exit reasons (SDM Vol. 3D
//! Appendix C), the exit-reason field (SDM Vol. 3C 25.9.1), exit
//! qualifications (SDM Vol. 3C 28.2.1), interruption information for exits
//! and for event injection (SDM Vol. 3C 25.8.3, 25.9.2), VM-entry failure
//! qualifications (SDM Vol. 3C 27.8) and exception vector names
//! (SDM Vol. 3A Table 6-1).
//!
//! Everything here is a pure function of the raw VMCS values: the caller
//! VMREADs the fields and passes the numbers in.

use core::fmt;

macro_rules! exit_reasons {
    ($( $variant:ident = $n:literal => $name:literal, )*) => {
        /// A basic exit reason, bits 15:0 of the exit-reason field
        /// (SDM Vol. 3D Appendix C, Table C-1).
        #[repr(u16)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum ExitReason {
            $(
                #[doc = concat!($name, " (", stringify!($n), ").")]
                $variant = $n,
            )*
        }

        impl ExitReason {
            /// Every defined basic exit reason, in numeric order.
            pub const ALL: &'static [ExitReason] = &[$(ExitReason::$variant),*];

            /// The SDM's name of this exit reason.
            pub const fn name(self) -> &'static str {
                match self {
                    $(ExitReason::$variant => $name,)*
                }
            }

            /// The reason with this number, or `None` for an unused number.
            pub const fn from_basic(basic: u16) -> Option<ExitReason> {
                match basic {
                    $($n => Some(ExitReason::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

exit_reasons! {
    ExceptionOrNmi = 0 => "exception or non-maskable interrupt (NMI)",
    ExternalInterrupt = 1 => "external interrupt",
    TripleFault = 2 => "triple fault",
    InitSignal = 3 => "INIT signal",
    StartupIpi = 4 => "start-up IPI (SIPI)",
    IoSmi = 5 => "I/O system-management interrupt (SMI)",
    OtherSmi = 6 => "other SMI",
    InterruptWindow = 7 => "interrupt window",
    NmiWindow = 8 => "NMI window",
    TaskSwitch = 9 => "task switch",
    Cpuid = 10 => "CPUID",
    Getsec = 11 => "GETSEC",
    Hlt = 12 => "HLT",
    Invd = 13 => "INVD",
    Invlpg = 14 => "INVLPG",
    Rdpmc = 15 => "RDPMC",
    Rdtsc = 16 => "RDTSC",
    Rsm = 17 => "RSM",
    Vmcall = 18 => "VMCALL",
    Vmclear = 19 => "VMCLEAR",
    Vmlaunch = 20 => "VMLAUNCH",
    Vmptrld = 21 => "VMPTRLD",
    Vmptrst = 22 => "VMPTRST",
    Vmread = 23 => "VMREAD",
    Vmresume = 24 => "VMRESUME",
    Vmwrite = 25 => "VMWRITE",
    Vmxoff = 26 => "VMXOFF",
    Vmxon = 27 => "VMXON",
    CrAccess = 28 => "control-register access",
    MovDr = 29 => "MOV DR",
    IoInstruction = 30 => "I/O instruction",
    Rdmsr = 31 => "RDMSR",
    Wrmsr = 32 => "WRMSR",
    EntryFailureGuestState = 33 => "VM-entry failure due to invalid guest state",
    EntryFailureMsrLoading = 34 => "VM-entry failure due to MSR loading",
    Mwait = 36 => "MWAIT",
    MonitorTrapFlag = 37 => "monitor trap flag",
    Monitor = 39 => "MONITOR",
    Pause = 40 => "PAUSE",
    EntryFailureMachineCheck = 41 => "VM-entry failure due to machine-check event",
    TprBelowThreshold = 43 => "TPR below threshold",
    ApicAccess = 44 => "APIC access",
    VirtualizedEoi = 45 => "virtualized EOI",
    GdtrIdtrAccess = 46 => "access to GDTR or IDTR",
    LdtrTrAccess = 47 => "access to LDTR or TR",
    EptViolation = 48 => "EPT violation",
    EptMisconfiguration = 49 => "EPT misconfiguration",
    Invept = 50 => "INVEPT",
    Rdtscp = 51 => "RDTSCP",
    PreemptionTimerExpired = 52 => "VMX-preemption timer expired",
    Invvpid = 53 => "INVVPID",
    Wbinvd = 54 => "WBINVD or WBNOINVD",
    Xsetbv = 55 => "XSETBV",
    ApicWrite = 56 => "APIC write",
    Rdrand = 57 => "RDRAND",
    Invpcid = 58 => "INVPCID",
    Vmfunc = 59 => "VMFUNC",
    Encls = 60 => "ENCLS",
    Rdseed = 61 => "RDSEED",
    PageModificationLogFull = 62 => "page-modification log full",
    Xsaves = 63 => "XSAVES",
    Xrstors = 64 => "XRSTORS",
    Pconfig = 65 => "PCONFIG",
    SppEvent = 66 => "SPP-related event",
    Umwait = 67 => "UMWAIT",
    Tpause = 68 => "TPAUSE",
    Loadiwkey = 69 => "LOADIWKEY",
    Enclv = 70 => "ENCLV",
    EnqcmdPasidTranslationFailure = 72 => "ENQCMD PASID translation failure",
    EnqcmdsPasidTranslationFailure = 73 => "ENQCMDS PASID translation failure",
    BusLock = 74 => "bus lock",
    InstructionTimeout = 75 => "instruction timeout",
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), *self as u16)
    }
}

// ---------------------------------------------------------------------------
// The exit-reason field (SDM Vol. 3C 25.9.1).

/// The 32-bit exit-reason field, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitReasonField {
    pub raw: u32,
    /// Bits 15:0.
    pub basic: u16,
    /// Bit 26: a bus lock was asserted while the guest ran (VMM bus-lock
    /// detection).
    pub bus_lock_detected: bool,
    /// Bit 27: the exit happened in enclave mode.
    pub enclave_mode: bool,
    /// Bit 28: a pending MTF VM exit (SMM exits only).
    pub pending_mtf: bool,
    /// Bit 29: exit from VMX root operation (SMM exits only).
    pub from_vmx_root: bool,
    /// Bit 31: VM-entry failure rather than a true VM exit.
    pub entry_failure: bool,
}

impl ExitReasonField {
    pub const fn decode(raw: u32) -> Self {
        ExitReasonField {
            raw,
            basic: raw as u16,
            bus_lock_detected: raw & (1 << 26) != 0,
            enclave_mode: raw & (1 << 27) != 0,
            pending_mtf: raw & (1 << 28) != 0,
            from_vmx_root: raw & (1 << 29) != 0,
            entry_failure: raw & (1 << 31) != 0,
        }
    }
    /// The basic reason, if the number is defined.
    pub const fn reason(&self) -> Option<ExitReason> {
        ExitReason::from_basic(self.basic)
    }
}

impl fmt::Display for ExitReasonField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "exit reason {:#x}: ", self.raw)?;
        if self.entry_failure {
            f.write_str("VM-entry failure, ")?;
        }
        match self.reason() {
            Some(r) => write!(f, "{r}"),
            None => write!(f, "undefined basic exit reason {}", self.basic),
        }
    }
}

// ---------------------------------------------------------------------------
// Exception vectors (SDM Vol. 3A Table 6-1, "Protected-Mode Exceptions and
// Interrupts").

pub use shared::x86::{exception_has_error_code, exception_name};

// ---------------------------------------------------------------------------
// Interruption information (SDM Vol. 3C 25.8.3 for injection, 25.9.2 for
// exit and IDT-vectoring information).

/// Bits 10:8 of an interruption-information field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InterruptionType {
    ExternalInterrupt = 0,
    /// Type 1 is reserved.
    Reserved = 1,
    Nmi = 2,
    HardwareException = 3,
    SoftwareInterrupt = 4,
    PrivilegedSoftwareException = 5,
    SoftwareException = 6,
    /// "Other event" (e.g. MTF injection).
    Other = 7,
}

impl InterruptionType {
    pub const fn from_bits(bits: u32) -> Self {
        match bits & 7 {
            0 => InterruptionType::ExternalInterrupt,
            1 => InterruptionType::Reserved,
            2 => InterruptionType::Nmi,
            3 => InterruptionType::HardwareException,
            4 => InterruptionType::SoftwareInterrupt,
            5 => InterruptionType::PrivilegedSoftwareException,
            6 => InterruptionType::SoftwareException,
            _ => InterruptionType::Other,
        }
    }
    pub const fn name(self) -> &'static str {
        match self {
            InterruptionType::ExternalInterrupt => "external interrupt",
            InterruptionType::Reserved => "reserved type 1",
            InterruptionType::Nmi => "NMI",
            InterruptionType::HardwareException => "hardware exception",
            InterruptionType::SoftwareInterrupt => "software interrupt",
            InterruptionType::PrivilegedSoftwareException => "privileged software exception",
            InterruptionType::SoftwareException => "software exception",
            InterruptionType::Other => "other event",
        }
    }
}

/// An interruption-information field: VM-exit interruption information,
/// IDT-vectoring information, or (with [`InterruptionInfo::encode`]) the
/// VM-entry interruption-information field used for event injection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InterruptionInfo {
    /// Bits 7:0.
    pub vector: u8,
    /// Bits 10:8.
    pub kind: InterruptionType,
    /// Bit 11: an error code is delivered (exit: was pushed; entry: push
    /// the VM-entry exception error code).
    pub error_code_valid: bool,
    /// Bit 12 (exit information only; must be 0 for injection): NMI
    /// unblocking due to IRET.
    pub nmi_unblocking: bool,
    /// Bit 31.
    pub valid: bool,
}

impl InterruptionInfo {
    pub const fn decode(raw: u32) -> Self {
        InterruptionInfo {
            vector: raw as u8,
            kind: InterruptionType::from_bits(raw >> 8),
            error_code_valid: raw & (1 << 11) != 0,
            nmi_unblocking: raw & (1 << 12) != 0,
            valid: raw & (1 << 31) != 0,
        }
    }
    pub const fn encode(self) -> u32 {
        self.vector as u32
            | (self.kind as u32) << 8
            | (self.error_code_valid as u32) << 11
            | (self.nmi_unblocking as u32) << 12
            | (self.valid as u32) << 31
    }
    const fn inject(vector: u8, kind: InterruptionType, error_code_valid: bool) -> Self {
        InterruptionInfo {
            vector,
            kind,
            error_code_valid,
            nmi_unblocking: false,
            valid: true,
        }
    }
    /// Inject hardware exception `vector`; set `error_code_valid` for the
    /// vectors in [`exception_has_error_code`] and write the error code to
    /// VM-entry exception error code.
    pub const fn hardware_exception(vector: u8, error_code_valid: bool) -> Self {
        Self::inject(
            vector,
            InterruptionType::HardwareException,
            error_code_valid,
        )
    }
    /// Inject external interrupt `vector`.
    pub const fn external_interrupt(vector: u8) -> Self {
        Self::inject(vector, InterruptionType::ExternalInterrupt, false)
    }
    /// Inject an NMI (vector 2).
    pub const fn nmi() -> Self {
        Self::inject(2, InterruptionType::Nmi, false)
    }
    /// Inject `INT n` (needs the VM-entry instruction length).
    pub const fn software_interrupt(vector: u8) -> Self {
        Self::inject(vector, InterruptionType::SoftwareInterrupt, false)
    }
    /// Inject INT3 or INTO (#BP, #OF; needs the instruction length).
    pub const fn software_exception(vector: u8) -> Self {
        Self::inject(vector, InterruptionType::SoftwareException, false)
    }
    /// Inject INT1 (ICEBP; needs the instruction length).
    pub const fn privileged_software_exception(vector: u8) -> Self {
        Self::inject(vector, InterruptionType::PrivilegedSoftwareException, false)
    }
}

impl fmt::Display for InterruptionInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.valid {
            return f.write_str("no event (valid bit clear)");
        }
        write!(f, "{} vector {}", self.kind.name(), self.vector)?;
        let is_exception = matches!(
            self.kind,
            InterruptionType::HardwareException
                | InterruptionType::SoftwareException
                | InterruptionType::PrivilegedSoftwareException
        );
        if is_exception {
            if let Some((mnemonic, text)) = exception_name(self.vector) {
                write!(f, " {mnemonic} ({text})")?;
            }
        }
        if self.error_code_valid {
            f.write_str(", with error code")?;
        }
        if self.nmi_unblocking {
            f.write_str(", NMI unblocking due to IRET")?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Exit qualifications (SDM Vol. 3C 28.2.1).

/// Name of general-purpose register `n` in the 0..=15 numbering used by
/// exit qualifications and instruction information.
pub const fn gpr_name(n: u8) -> &'static str {
    const NAMES: [&str; 16] = [
        "RAX", "RCX", "RDX", "RBX", "RSP", "RBP", "RSI", "RDI", "R8", "R9", "R10", "R11", "R12",
        "R13", "R14", "R15",
    ];
    NAMES[(n & 15) as usize]
}

/// Bits 5:4 of a control-register-access qualification.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrAccessType {
    MovToCr,
    MovFromCr,
    Clts,
    Lmsw,
}

/// Exit qualification for control-register accesses (SDM Vol. 3C 28.2.1,
/// Table 28-3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrAccess {
    /// Bits 3:0: the control register (0 for CLTS and LMSW).
    pub cr: u8,
    pub access: CrAccessType,
    /// Bits 11:8: the general-purpose register of MOV CR.
    pub gpr: u8,
    /// Bit 6: LMSW had a memory operand (else a register).
    pub lmsw_memory_operand: bool,
    /// Bits 31:16: the LMSW source data.
    pub lmsw_source_data: u16,
}

impl CrAccess {
    pub const fn decode(qual: u64) -> Self {
        CrAccess {
            cr: (qual & 0xF) as u8,
            access: match (qual >> 4) & 3 {
                0 => CrAccessType::MovToCr,
                1 => CrAccessType::MovFromCr,
                2 => CrAccessType::Clts,
                _ => CrAccessType::Lmsw,
            },
            gpr: ((qual >> 8) & 0xF) as u8,
            lmsw_memory_operand: qual & (1 << 6) != 0,
            lmsw_source_data: (qual >> 16) as u16,
        }
    }
}

impl fmt::Display for CrAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.access {
            CrAccessType::MovToCr => write!(f, "MOV CR{}, {}", self.cr, gpr_name(self.gpr)),
            CrAccessType::MovFromCr => write!(f, "MOV {}, CR{}", gpr_name(self.gpr), self.cr),
            CrAccessType::Clts => f.write_str("CLTS"),
            CrAccessType::Lmsw => write!(
                f,
                "LMSW {:#x} ({} operand)",
                self.lmsw_source_data,
                if self.lmsw_memory_operand {
                    "memory"
                } else {
                    "register"
                }
            ),
        }
    }
}

/// Exit qualification for I/O instructions (SDM Vol. 3C 28.2.1, Table 28-5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoQualification {
    /// Access size in bytes: 1, 2 or 4 (bits 2:0 hold size - 1).
    pub size: u8,
    /// Bit 3: IN/INS (else OUT/OUTS).
    pub is_in: bool,
    /// Bit 4: INS/OUTS.
    pub string: bool,
    /// Bit 5: REP prefix.
    pub rep: bool,
    /// Bit 6: port from an immediate operand (else DX).
    pub imm: bool,
    /// Bits 31:16.
    pub port: u16,
}

impl IoQualification {
    pub const fn decode(qual: u64) -> Self {
        IoQualification {
            size: (qual & 7) as u8 + 1,
            is_in: qual & (1 << 3) != 0,
            string: qual & (1 << 4) != 0,
            rep: qual & (1 << 5) != 0,
            imm: qual & (1 << 6) != 0,
            port: (qual >> 16) as u16,
        }
    }
}

impl fmt::Display for IoQualification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match (self.is_in, self.string) {
            (true, false) => "IN",
            (true, true) => "INS",
            (false, false) => "OUT",
            (false, true) => "OUTS",
        };
        let rep = if self.rep { "REP " } else { "" };
        let src = if self.imm { "immediate" } else { "DX" };
        write!(
            f,
            "{rep}{op} {} byte(s), port {:#x} ({src})",
            self.size, self.port
        )
    }
}

/// Exit qualification for EPT violations (SDM Vol. 3C 28.2.1, Table 28-7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EptViolation {
    /// Bit 0: the access was a data read.
    pub read: bool,
    /// Bit 1: the access was a data write.
    pub write: bool,
    /// Bit 2: the access was an instruction fetch.
    pub fetch: bool,
    /// Bit 3: the guest-physical address was readable.
    pub readable: bool,
    /// Bit 4: ... writable.
    pub writable: bool,
    /// Bit 5: ... executable (for supervisor-mode linear addresses when
    /// mode-based execute control is on).
    pub executable: bool,
    /// Bit 6: ... executable for user-mode linear addresses.
    pub user_executable: bool,
    /// Bit 7: the guest linear-address field is valid.
    pub linear_address_valid: bool,
    /// Bit 8 (if bit 7): the access was to the translation of a linear
    /// address (else to a guest paging-structure entry).
    pub linear_translation: bool,
    /// Bit 12: NMI unblocking due to IRET.
    pub nmi_unblocking: bool,
}

impl EptViolation {
    pub const fn decode(qual: u64) -> Self {
        const fn bit_set(qual: u64, n: u32) -> bool {
            qual & (1 << n) != 0
        }
        EptViolation {
            read: bit_set(qual, 0),
            write: bit_set(qual, 1),
            fetch: bit_set(qual, 2),
            readable: bit_set(qual, 3),
            writable: bit_set(qual, 4),
            executable: bit_set(qual, 5),
            user_executable: bit_set(qual, 6),
            linear_address_valid: bit_set(qual, 7),
            linear_translation: bit_set(qual, 8),
            nmi_unblocking: bit_set(qual, 12),
        }
    }
}

impl fmt::Display for EptViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let access = match (self.read, self.write, self.fetch) {
            (_, true, _) => "write",
            (_, _, true) => "instruction fetch",
            (true, _, _) => "read",
            _ => "access",
        };
        let yn = |b: bool| if b { "" } else { "not " };
        write!(
            f,
            "EPT violation: {access}; the page was {}readable, {}writable, {}executable",
            yn(self.readable),
            yn(self.writable),
            yn(self.executable)
        )?;
        if self.linear_address_valid {
            let what = if self.linear_translation {
                "translation of"
            } else {
                "paging-structure walk for"
            };
            write!(f, "; during the {what} a guest linear address")?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// VM-entry failure qualifications (SDM Vol. 3C 27.8).

/// Explains the exit qualification of a VM-entry failure exit (basic reason
/// 33, 34 or 41); see [`entry_failure_qualification_text`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryFailureText {
    pub reason_basic: u16,
    pub qualification: u64,
}

/// Explains why a VM entry failed after loading guest state: for reason 33
/// (invalid guest state) the qualification says which late check failed;
/// for reason 34 (MSR loading) it is the 1-based index of the failing entry
/// of the VM-entry MSR-load area.
pub const fn entry_failure_qualification_text(reason_basic: u16, qual: u64) -> EntryFailureText {
    EntryFailureText {
        reason_basic,
        qualification: qual,
    }
}

impl fmt::Display for EntryFailureText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let q = self.qualification;
        match self.reason_basic {
            33 => f.write_str(match q {
                0 => "invalid guest state (qualification 0: no further detail)",
                2 => {
                    "invalid guest state: PDPTE loading failed (a PAE PDPTE has a reserved bit set)"
                }
                3 => "invalid guest state: NMI injection into a guest blocking events by STI",
                4 => "invalid guest state: invalid VMCS link pointer",
                _ => "invalid guest state (unused qualification value)",
            }),
            34 => write!(
                f,
                "MSR loading failed at entry {q} (1-based) of the VM-entry MSR-load area"
            ),
            41 => f.write_str("machine-check event during VM entry"),
            r => write!(
                f,
                "exit reason {r} is not a VM-entry failure (qualification {q:#x})"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;
    use test_case::test_case;

    #[test]
    fn every_reason_round_trips_and_names_are_unique() {
        assert!(ExitReason::ALL.len() >= 66);
        for (i, r) in ExitReason::ALL.iter().enumerate() {
            assert_eq!(ExitReason::from_basic(*r as u16), Some(*r));
            assert!(ExitReason::ALL[i + 1..]
                .iter()
                .all(|s| s.name() != r.name()));
        }
        for basic in 0..=69 {
            let unused = matches!(basic, 35 | 38 | 42);
            assert_eq!(ExitReason::from_basic(basic).is_none(), unused, "{basic}");
        }
        assert_eq!(ExitReason::from_basic(71), None);
        assert_eq!(ExitReason::from_basic(0x1000), None);
    }

    #[test_case(0x0000_001e, 30, false, "exit reason 0x1e: I/O instruction (30)")]
    #[test_case(0x8000_0021, 33, true, "exit reason 0x80000021: VM-entry failure, VM-entry failure due to invalid guest state (33)")]
    #[test_case(
        0x8000_0022,
        34,
        true,
        "exit reason 0x80000022: VM-entry failure, VM-entry failure due to MSR loading (34)"
    )]
    #[test_case(
        0x0000_0023,
        35,
        false,
        "exit reason 0x23: undefined basic exit reason 35"
    )]
    fn exit_reason_field(raw: u32, basic: u16, failure: bool, text: &str) {
        let f = ExitReasonField::decode(raw);
        assert_eq!((f.basic, f.entry_failure), (basic, failure));
        assert_eq!(format!("{f}"), text);
    }

    #[test]
    fn exit_reason_flags() {
        let f = ExitReasonField::decode(0x3C00_0000 | 12);
        assert!(f.bus_lock_detected && f.enclave_mode && f.pending_mtf && f.from_vmx_root);
        assert_eq!(f.reason(), Some(ExitReason::Hlt));
    }

    // SDM Vol. 3C 28.2.1, Table 28-3.
    #[test_case(0x0000_0000, 0, CrAccessType::MovToCr, 0, "MOV CR0, RAX")]
    #[test_case(0x0000_0303, 3, CrAccessType::MovToCr, 3, "MOV CR3, RBX")]
    #[test_case(0x0000_0f14, 4, CrAccessType::MovFromCr, 15, "MOV R15, CR4")]
    #[test_case(0x0000_0020, 0, CrAccessType::Clts, 0, "CLTS")]
    #[test_case(0x0001_0030, 0, CrAccessType::Lmsw, 0, "LMSW 0x1 (register operand)")]
    #[test_case(0x000f_0070, 0, CrAccessType::Lmsw, 0, "LMSW 0xf (memory operand)")]
    fn cr_access(qual: u64, cr: u8, access: CrAccessType, gpr: u8, text: &str) {
        let c = CrAccess::decode(qual);
        assert_eq!((c.cr, c.access, c.gpr), (cr, access, gpr));
        assert_eq!(format!("{c}"), text);
    }

    // SDM Vol. 3C 28.2.1, Table 28-5.
    #[test_case(
        0x03f8_0000,
        1,
        false,
        false,
        false,
        false,
        0x3f8,
        "OUT 1 byte(s), port 0x3f8 (DX)"
    )]
    #[test_case(
        0x00f4_0043,
        4,
        false,
        false,
        false,
        true,
        0xf4,
        "OUT 4 byte(s), port 0xf4 (immediate)"
    )]
    #[test_case(
        0x0060_0008,
        1,
        true,
        false,
        false,
        false,
        0x60,
        "IN 1 byte(s), port 0x60 (DX)"
    )]
    #[test_case(
        0x01f0_0039,
        2,
        true,
        true,
        true,
        false,
        0x1f0,
        "REP INS 2 byte(s), port 0x1f0 (DX)"
    )]
    #[test_case(
        0x00e9_0010,
        1,
        false,
        true,
        false,
        false,
        0xe9,
        "OUTS 1 byte(s), port 0xe9 (DX)"
    )]
    #[allow(clippy::too_many_arguments)]
    fn io(
        qual: u64,
        size: u8,
        is_in: bool,
        string: bool,
        rep: bool,
        imm: bool,
        port: u16,
        text: &str,
    ) {
        let q = IoQualification::decode(qual);
        assert_eq!(
            q,
            IoQualification {
                size,
                is_in,
                string,
                rep,
                imm,
                port
            }
        );
        assert_eq!(format!("{q}"), text);
    }

    #[test_case(
        0x8000_0b0d,
        13,
        InterruptionType::HardwareException,
        true,
        "hardware exception vector 13 #GP (general protection), with error code"
    )]
    #[test_case(
        0x8000_0306,
        6,
        InterruptionType::HardwareException,
        false,
        "hardware exception vector 6 #UD (invalid opcode)"
    )]
    #[test_case(0x8000_0202, 2, InterruptionType::Nmi, false, "NMI vector 2")]
    #[test_case(
        0x8000_0020,
        32,
        InterruptionType::ExternalInterrupt,
        false,
        "external interrupt vector 32"
    )]
    #[test_case(
        0x8000_0403,
        3,
        InterruptionType::SoftwareInterrupt,
        false,
        "software interrupt vector 3"
    )]
    #[test_case(
        0x8000_0603,
        3,
        InterruptionType::SoftwareException,
        false,
        "software exception vector 3 #BP (breakpoint)"
    )]
    #[test_case(
        0x0000_0b0d,
        13,
        InterruptionType::HardwareException,
        true,
        "no event (valid bit clear)"
    )]
    fn interruption_info(raw: u32, vector: u8, kind: InterruptionType, ec: bool, text: &str) {
        let i = InterruptionInfo::decode(raw);
        assert_eq!((i.vector, i.kind, i.error_code_valid), (vector, kind, ec));
        assert_eq!(i.encode(), raw, "round trip");
        assert_eq!(format!("{i}"), text);
    }

    #[test]
    fn injection_encodings() {
        assert_eq!(
            InterruptionInfo::hardware_exception(13, true).encode(),
            0x8000_0b0d
        );
        assert_eq!(
            InterruptionInfo::hardware_exception(14, true).encode(),
            0x8000_0b0e
        );
        assert_eq!(
            InterruptionInfo::hardware_exception(6, false).encode(),
            0x8000_0306
        );
        assert_eq!(
            InterruptionInfo::external_interrupt(0x20).encode(),
            0x8000_0020
        );
        assert_eq!(InterruptionInfo::nmi().encode(), 0x8000_0202);
        assert_eq!(
            InterruptionInfo::software_interrupt(0x80).encode(),
            0x8000_0480
        );
        assert_eq!(
            InterruptionInfo::software_exception(3).encode(),
            0x8000_0603
        );
        assert_eq!(
            InterruptionInfo::privileged_software_exception(1).encode(),
            0x8000_0501
        );
        assert!(InterruptionInfo::decode(0x8000_1b0e).nmi_unblocking);
    }

    #[test_case(0, "#DE")]
    #[test_case(8, "#DF")]
    #[test_case(13, "#GP")]
    #[test_case(14, "#PF")]
    #[test_case(20, "#VE")]
    #[test_case(21, "#CP")]
    fn exception_mnemonics(vector: u8, mnemonic: &str) {
        assert_eq!(exception_name(vector).map(|e| e.0), Some(mnemonic));
    }

    #[test]
    fn ept_violation() {
        let v = EptViolation::decode(0x182 | 0x9);
        assert!(v.read && v.write && !v.fetch && v.readable && !v.writable);
        assert!(v.linear_address_valid && v.linear_translation);
        assert_eq!(
            format!("{v}"),
            "EPT violation: write; the page was readable, not writable, not executable; \
             during the translation of a guest linear address"
        );
        let f = EptViolation::decode(0x4);
        assert!(f.fetch && !f.linear_address_valid);
        assert_eq!(format!("{f}"), "EPT violation: instruction fetch; the page was not readable, not writable, not executable");
    }

    #[test_case(33, 0, "invalid guest state (qualification 0: no further detail)")]
    #[test_case(
        33,
        2,
        "invalid guest state: PDPTE loading failed (a PAE PDPTE has a reserved bit set)"
    )]
    #[test_case(
        33,
        3,
        "invalid guest state: NMI injection into a guest blocking events by STI"
    )]
    #[test_case(33, 4, "invalid guest state: invalid VMCS link pointer")]
    #[test_case(
        34,
        3,
        "MSR loading failed at entry 3 (1-based) of the VM-entry MSR-load area"
    )]
    #[test_case(41, 0, "machine-check event during VM entry")]
    #[test_case(12, 0, "exit reason 12 is not a VM-entry failure (qualification 0x0)")]
    fn entry_failures(reason: u16, qual: u64, text: &str) {
        assert_eq!(
            format!("{}", entry_failure_qualification_text(reason, qual)),
            text
        );
    }
}
