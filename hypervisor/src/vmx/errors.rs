//! VMX instruction failures: the VM-instruction error numbers and their
//! texts (SDM Vol. 3C 31.4, Table 31-1), and [`VmFail`], the outcome of a
//! VMX instruction that did not succeed (SDM Vol. 3C 31.2).

use core::fmt;

/// Text of VM-instruction error `n` as listed in SDM Vol. 3C 31.4
/// (Table 31-1). Unlisted numbers give `"unknown VM-instruction error"`.
pub const fn vm_instruction_error_text(n: u32) -> &'static str {
    match n {
        1 => "VMCALL executed in VMX root operation",
        2 => "VMCLEAR with invalid physical address",
        3 => "VMCLEAR with VMXON pointer",
        4 => "VMLAUNCH with non-clear VMCS",
        5 => "VMRESUME with non-launched VMCS",
        6 => "VMRESUME after VMXOFF (VMXOFF and VMXON between VMLAUNCH and VMRESUME)",
        7 => "VM entry with invalid control field(s)",
        8 => "VM entry with invalid host-state field(s)",
        9 => "VMPTRLD with invalid physical address",
        10 => "VMPTRLD with VMXON pointer",
        11 => "VMPTRLD with incorrect VMCS revision identifier",
        12 => "VMREAD/VMWRITE from/to unsupported VMCS component",
        13 => "VMWRITE to read-only VMCS component",
        14 => "reserved VM-instruction error number 14",
        15 => "VMXON executed in VMX root operation",
        16 => "VM entry with invalid executive-VMCS pointer",
        17 => "VM entry with non-launched executive VMCS",
        18 => "VM entry with executive-VMCS pointer not VMXON pointer (when attempting to deactivate the dual-monitor treatment of SMIs and SMM)",
        19 => "VMCALL with non-clear VMCS (when attempting to activate the dual-monitor treatment of SMIs and SMM)",
        20 => "VMCALL with invalid VM-exit control fields",
        21 => "reserved VM-instruction error number 21",
        22 => "VMCALL with incorrect MSEG revision identifier (when attempting to activate the dual-monitor treatment of SMIs and SMM)",
        23 => "VMXOFF under dual-monitor treatment of SMIs and SMM",
        24 => "VMCALL with invalid SMM-monitor features (when attempting to activate the dual-monitor treatment of SMIs and SMM)",
        25 => "VM entry with invalid VM-execution control fields in executive VMCS (when attempting to return from SMM)",
        26 => "VM entry with events blocked by MOV SS",
        27 => "reserved VM-instruction error number 27",
        28 => "Invalid operand to INVEPT/INVVPID",
        _ => "unknown VM-instruction error",
    }
}

/// How a VMX instruction failed (SDM Vol. 3C 31.2, "Conventions").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmFail {
    /// VMfailInvalid: RFLAGS.CF = 1; there is no current VMCS, so no error
    /// number could be stored.
    Invalid,
    /// VMfailValid: RFLAGS.ZF = 1; `error` is the VM-instruction error field
    /// of the current VMCS.
    Valid { error: u32 },
}

impl VmFail {
    /// Decodes the flags after a VMX instruction: `None` on success
    /// (VMsucceed: CF = ZF = 0). `read_error` is called only for
    /// VMfailValid, to VMREAD the VM-instruction error field.
    pub fn from_flags(cf: bool, zf: bool, read_error: impl FnOnce() -> u32) -> Option<VmFail> {
        if cf {
            Some(VmFail::Invalid)
        } else if zf {
            Some(VmFail::Valid {
                error: read_error(),
            })
        } else {
            None
        }
    }
}

impl fmt::Display for VmFail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            VmFail::Invalid => f.write_str("VMfailInvalid (CF=1): no current VMCS"),
            VmFail::Valid { error } => write!(
                f,
                "VMfailValid (ZF=1): VM-instruction error {error}: {}",
                vm_instruction_error_text(error)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;
    use test_case::test_case;

    #[test_case(1, "VMCALL executed in VMX root operation")]
    #[test_case(5, "VMRESUME with non-launched VMCS")]
    #[test_case(7, "VM entry with invalid control field(s)")]
    #[test_case(8, "VM entry with invalid host-state field(s)")]
    #[test_case(11, "VMPTRLD with incorrect VMCS revision identifier")]
    #[test_case(12, "VMREAD/VMWRITE from/to unsupported VMCS component")]
    #[test_case(13, "VMWRITE to read-only VMCS component")]
    #[test_case(26, "VM entry with events blocked by MOV SS")]
    #[test_case(28, "Invalid operand to INVEPT/INVVPID")]
    #[test_case(0, "unknown VM-instruction error")]
    #[test_case(29, "unknown VM-instruction error")]
    fn texts(n: u32, text: &str) {
        assert_eq!(vm_instruction_error_text(n), text);
    }

    #[test]
    fn every_defined_number_has_its_own_text() {
        for n in 1..=28 {
            let t = vm_instruction_error_text(n);
            assert_ne!(t, "unknown VM-instruction error", "{n}");
            assert!(
                (1..=28)
                    .filter(|&m| vm_instruction_error_text(m) == t)
                    .count()
                    == 1,
                "{n}"
            );
        }
    }

    #[test]
    fn vmfail_display_and_flags() {
        assert_eq!(
            format!("{}", VmFail::Valid { error: 7 }),
            "VMfailValid (ZF=1): VM-instruction error 7: VM entry with invalid control field(s)"
        );
        assert_eq!(
            format!("{}", VmFail::Invalid),
            "VMfailInvalid (CF=1): no current VMCS"
        );
        assert_eq!(VmFail::from_flags(false, false, || unreachable!()), None);
        assert_eq!(
            VmFail::from_flags(true, false, || unreachable!()),
            Some(VmFail::Invalid)
        );
        assert_eq!(
            VmFail::from_flags(false, true, || 12),
            Some(VmFail::Valid { error: 12 })
        );
    }
}
