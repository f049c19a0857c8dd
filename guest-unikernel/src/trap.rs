//! CPU exceptions in IA-32e mode: the 16-byte IDT gate format and the frame
//! the binary's assembly stubs build, plus the text of an unexpected-exception
//! report. The stubs themselves and LIDT live in the binary's `cpu` module.

use core::fmt;

/// Type field of a 64-bit interrupt gate (SDM Vol. 3A 3.5, Table 3-2).
pub const GATE_TYPE_INTERRUPT: u8 = 0xE;

/// Encodes a present 64-bit interrupt gate with DPL 0 (SDM Vol. 3A 7.14.1,
/// Figure 7-8 "64-Bit IDT Gate Descriptors"): offset 15:0 in bits 15:0,
/// selector in 31:16, IST in 34:32, type in 43:40, P in bit 47, offset 31:16
/// in 63:48; the second quadword holds offset 63:32.
pub const fn interrupt_gate(handler: u64, selector: u16, ist: u8) -> [u64; 2] {
    let low = (handler & 0xFFFF)
        | ((selector as u64) << 16)
        | (((ist & 7) as u64) << 32)
        | ((GATE_TYPE_INTERRUPT as u64) << 40)
        | (1 << 47)
        | (((handler >> 16) & 0xFFFF) << 48);
    [low, handler >> 32]
}

pub use shared::x86::exception_has_error_code as has_error_code;

/// The mnemonic of an exception vector (SDM Vol. 3A Table 6-1).
pub const fn mnemonic(vector: u64) -> &'static str {
    if vector > 255 {
        return "reserved";
    }
    shared::x86::exception_mnemonic(vector as u8)
}

/// The stack frame the exception stubs hand to the Rust handler: the
/// general registers they push, the vector, the error code (0 where the CPU
/// pushes none), then the frame the CPU pushes in IA-32e mode (SDM Vol. 3A
/// 7.14.2, Figure 7-9).
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct TrapFrame {
    /// R15 .. RAX in push order reversed (R15 at the lowest address).
    pub r15: u64,
    #[allow(missing_docs)]
    pub r14: u64,
    #[allow(missing_docs)]
    pub r13: u64,
    #[allow(missing_docs)]
    pub r12: u64,
    #[allow(missing_docs)]
    pub r11: u64,
    #[allow(missing_docs)]
    pub r10: u64,
    #[allow(missing_docs)]
    pub r9: u64,
    #[allow(missing_docs)]
    pub r8: u64,
    #[allow(missing_docs)]
    pub rbp: u64,
    #[allow(missing_docs)]
    pub rdi: u64,
    #[allow(missing_docs)]
    pub rsi: u64,
    #[allow(missing_docs)]
    pub rdx: u64,
    #[allow(missing_docs)]
    pub rcx: u64,
    #[allow(missing_docs)]
    pub rbx: u64,
    #[allow(missing_docs)]
    pub rax: u64,
    /// The exception vector.
    pub vector: u64,
    /// The error code, or 0.
    pub error_code: u64,
    /// RIP of the faulting (or, for traps, the next) instruction.
    pub rip: u64,
    /// CS at the exception.
    pub cs: u64,
    /// RFLAGS at the exception.
    pub rflags: u64,
    /// RSP at the exception.
    pub rsp: u64,
    /// SS at the exception.
    pub ss: u64,
}

/// Size of [`TrapFrame`]; the stubs' assembly relies on it.
pub const TRAP_FRAME_SIZE: usize = core::mem::size_of::<TrapFrame>();

/// The detail of a `guest/unexpected-exception` check line:
/// `#PF ec=0x2 rip=0x... cr2=0x... vector=14 rsp=0x...` and, when known, the
/// running check.
#[derive(Clone, Copy, Debug)]
pub struct ExceptionReport<'a> {
    /// The stubs' frame.
    pub frame: &'a TrapFrame,
    /// CR2 read in the handler.
    pub cr2: u64,
    /// The check that was running.
    pub during: Option<&'a str>,
}

impl fmt::Display for ExceptionReport<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fr = self.frame;
        write!(
            f,
            "{} ec={:#x} rip={:#x} cr2={:#x} vector={} rsp={:#x}",
            mnemonic(fr.vector),
            fr.error_code,
            fr.rip,
            self.cr2,
            fr.vector,
            fr.rsp
        )?;
        if let Some(name) = self.during {
            write!(f, " during {name}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_case::test_case;

    #[test]
    fn gate_layout() {
        let [lo, hi] = interrupt_gate(0xFFFF_8000_1234_5678, 0x08, 0);
        assert_eq!(lo & 0xFFFF, 0x5678);
        assert_eq!((lo >> 16) & 0xFFFF, 0x08);
        assert_eq!((lo >> 40) & 0xF, 0xE);
        assert_eq!((lo >> 47) & 1, 1);
        assert_eq!((lo >> 45) & 3, 0, "DPL 0");
        assert_eq!(lo >> 48, 0x1234);
        assert_eq!(hi, 0xFFFF_8000);
        assert_eq!(interrupt_gate(0x10_0000, 0x08, 1), [0x0010_8E01_0008_0000, 0]);
    }

    #[test_case(8, true)]
    #[test_case(13, true)]
    #[test_case(14, true)]
    #[test_case(17, true)]
    #[test_case(0, false)]
    #[test_case(6, false)]
    #[test_case(16, false)]
    #[test_case(18, false)]
    fn error_codes(v: u8, has: bool) {
        assert_eq!(has_error_code(v), has);
    }

    #[test]
    fn frame_and_report() {
        assert_eq!(TRAP_FRAME_SIZE, 22 * 8);
        let fr = TrapFrame { vector: 14, error_code: 2, rip: 0x10_1234, rsp: 0x11_0000, ..TrapFrame::default() };
        let r = ExceptionReport { frame: &fr, cr2: 0xdead_b000, during: Some("boot/ram-pattern") };
        assert_eq!(
            format!("{r}"),
            "#PF ec=0x2 rip=0x101234 cr2=0xdeadb000 vector=14 rsp=0x110000 during boot/ram-pattern"
        );
    }
}
