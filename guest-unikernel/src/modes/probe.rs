//! Probe programs: the operations the engine's interpreters execute in the
//! mode of a stop, their 16-byte encoding, the 24-byte results the engine
//! writes back, and expectations with the text of a mismatch.
//!
//! Every op records either what it read (or 0) or the exception it took:
//! vector, error code and CR2 (SDM Vol. 3A 6.13 "Error Code", 4.7
//! "Page-Fault Exceptions"). The interpreters are in the binary's
//! `bare::modes`; the 32-bit and 64-bit ones run every op, the real-mode one
//! only [`Op::Read32`], [`Op::Write32`], [`Op::ReadCr0`] and [`Op::Ud2`].

use core::fmt;

/// #GP's vector (SDM Vol. 3A Table 6-1).
pub const VECTOR_GP: u8 = 13;
/// #UD's vector (SDM Vol. 3A Table 6-1).
pub const VECTOR_UD: u8 = 6;
/// #PF's vector (SDM Vol. 3A Table 6-1).
pub const VECTOR_PF: u8 = 14;

/// One probe operation. Addresses are linear addresses of the stop's mode
/// (in real mode: `seg:off`, offset below 64 KiB).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// 32-bit load (`mov eax, [addr]`).
    Read32 {
        /// Segment (real mode only; 0 elsewhere).
        seg: u16,
        /// Linear address (real mode: offset).
        addr: u64,
    },
    /// 32-bit store.
    Write32 {
        /// Segment (real mode only).
        seg: u16,
        /// Linear address (real mode: offset).
        addr: u64,
        /// The value stored.
        value: u32,
    },
    /// 64-bit load: two 32-bit loads (low first) outside 64-bit mode.
    Read64 {
        /// Linear address.
        addr: u64,
    },
    /// `call addr`: the byte at `addr` must be a `ret` (0xC3).
    Fetch {
        /// Linear address.
        addr: u64,
    },
    /// `invlpg [addr]` (SDM Vol. 3A 4.10.4.1).
    Invlpg {
        /// Linear address.
        addr: u64,
    },
    /// `mov cr3, value`; the result is CR3 read back.
    MovCr3 {
        /// The new CR3.
        value: u32,
    },
    /// `mov cr0, value`; the result is CR0 read back.
    WriteCr0 {
        /// The new CR0.
        value: u32,
    },
    /// `mov cr4, value`; the result is CR4 read back.
    WriteCr4 {
        /// The new CR4.
        value: u32,
    },
    /// CR0 now.
    ReadCr0,
    /// CR3 now.
    ReadCr3,
    /// CR4 now.
    ReadCr4,
    /// RDMSR of `msr`; the result is EDX:EAX.
    Rdmsr {
        /// The MSR index.
        msr: u32,
    },
    /// UD2: always #UD (SDM Vol. 2B UD), which tests the mode's exception
    /// delivery (IVT, 32-bit or 64-bit IDT) itself.
    Ud2,
    /// The `ShadowWalk` hypercall (VMCALL, `shared::hypercall`) for `addr`
    /// into the [`shared::hypercall::ShadowWalkRecord`] buffer at `buf`
    /// in the low window; the result is RAX (the record's length). Only
    /// under the Quadrant hypervisor (bare, VMCALL is #UD), in the 32-bit
    /// and 64-bit interpreters: a failure report's look at the shadow
    /// tables of the stop's mode.
    ShadowWalk {
        /// Linear address walked.
        addr: u64,
        /// Where the record goes (low window).
        buf: u32,
    },
}

impl Op {
    /// The linear address and kind (`read`, `write`, `fetch`) of a memory
    /// access; `None` for the ops that access no memory through paging.
    pub fn access(&self) -> Option<(u64, &'static str)> {
        let lin = |seg: u16, addr: u64| u64::from(seg) * 16 + addr;
        match *self {
            Op::Read32 { seg, addr } => Some((lin(seg, addr), "read")),
            Op::Write32 { seg, addr, .. } => Some((lin(seg, addr), "write")),
            Op::Read64 { addr } => Some((addr, "read")),
            Op::Fetch { addr } => Some((addr, "fetch")),
            _ => None,
        }
    }
}

/// Op codes of the encoding (the assembly compares against these).
pub mod code {
    #![allow(missing_docs)]
    pub const READ32: u16 = 1;
    pub const WRITE32: u16 = 2;
    pub const READ64: u16 = 3;
    pub const FETCH: u16 = 4;
    pub const INVLPG: u16 = 5;
    pub const MOV_CR3: u16 = 6;
    pub const WRITE_CR0: u16 = 7;
    pub const WRITE_CR4: u16 = 8;
    pub const READ_CR0: u16 = 9;
    pub const READ_CR3: u16 = 10;
    pub const READ_CR4: u16 = 11;
    pub const RDMSR: u16 = 12;
    pub const UD2: u16 = 13;
    pub const SHADOW_WALK: u16 = 14;
}

impl Op {
    /// The 16-byte encoding: code u16, segment u16, value u32, address u64.
    pub fn encode(&self) -> [u8; 16] {
        use code::*;
        let (c, seg, value, addr): (u16, u16, u32, u64) = match *self {
            Op::Read32 { seg, addr } => (READ32, seg, 0, addr),
            Op::Write32 { seg, addr, value } => (WRITE32, seg, value, addr),
            Op::Read64 { addr } => (READ64, 0, 0, addr),
            Op::Fetch { addr } => (FETCH, 0, 0, addr),
            Op::Invlpg { addr } => (INVLPG, 0, 0, addr),
            Op::MovCr3 { value } => (MOV_CR3, 0, value, 0),
            Op::WriteCr0 { value } => (WRITE_CR0, 0, value, 0),
            Op::WriteCr4 { value } => (WRITE_CR4, 0, value, 0),
            Op::ReadCr0 => (READ_CR0, 0, 0, 0),
            Op::ReadCr3 => (READ_CR3, 0, 0, 0),
            Op::ReadCr4 => (READ_CR4, 0, 0, 0),
            Op::Rdmsr { msr } => (RDMSR, 0, 0, u64::from(msr)),
            Op::Ud2 => (UD2, 0, 0, 0),
            Op::ShadowWalk { addr, buf } => (SHADOW_WALK, 0, buf, addr),
        };
        let mut b = [0u8; 16];
        b[0..2].copy_from_slice(&c.to_le_bytes());
        b[2..4].copy_from_slice(&seg.to_le_bytes());
        b[4..8].copy_from_slice(&value.to_le_bytes());
        b[8..16].copy_from_slice(&addr.to_le_bytes());
        b
    }

    /// Decodes [`Op::encode`]'s bytes; `None` for an unknown code.
    pub fn decode(b: &[u8; 16]) -> Option<Op> {
        use code::*;
        let c = u16::from_le_bytes([b[0], b[1]]);
        let seg = u16::from_le_bytes([b[2], b[3]]);
        let value = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        let addr = u64::from_le_bytes(b[8..16].try_into().ok()?);
        Some(match c {
            READ32 => Op::Read32 { seg, addr },
            WRITE32 => Op::Write32 { seg, addr, value },
            READ64 => Op::Read64 { addr },
            FETCH => Op::Fetch { addr },
            INVLPG => Op::Invlpg { addr },
            MOV_CR3 => Op::MovCr3 { value },
            WRITE_CR0 => Op::WriteCr0 { value },
            WRITE_CR4 => Op::WriteCr4 { value },
            READ_CR0 => Op::ReadCr0,
            READ_CR3 => Op::ReadCr3,
            READ_CR4 => Op::ReadCr4,
            RDMSR => Op::Rdmsr { msr: addr as u32 },
            UD2 => Op::Ud2,
            SHADOW_WALK => Op::ShadowWalk { addr, buf: value },
            _ => return None,
        })
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Op::Read32 { seg: 0, addr } => write!(f, "read32 {addr:#x}"),
            Op::Read32 { seg, addr } => write!(f, "read32 {seg:04x}:{addr:04x}"),
            Op::Write32 { seg: 0, addr, value } => write!(f, "write32 {addr:#x}={value:#x}"),
            Op::Write32 { seg, addr, value } => write!(f, "write32 {seg:04x}:{addr:04x}={value:#x}"),
            Op::Read64 { addr } => write!(f, "read64 {addr:#x}"),
            Op::Fetch { addr } => write!(f, "fetch {addr:#x}"),
            Op::Invlpg { addr } => write!(f, "invlpg {addr:#x}"),
            Op::MovCr3 { value } => write!(f, "mov cr3={value:#x}"),
            Op::WriteCr0 { value } => write!(f, "mov cr0={value:#x}"),
            Op::WriteCr4 { value } => write!(f, "mov cr4={value:#x}"),
            Op::ReadCr0 => write!(f, "read cr0"),
            Op::ReadCr3 => write!(f, "read cr3"),
            Op::ReadCr4 => write!(f, "read cr4"),
            Op::Rdmsr { msr } => write!(f, "rdmsr {msr:#x}"),
            Op::Ud2 => write!(f, "ud2"),
            Op::ShadowWalk { addr, buf } => write!(f, "shadow-walk {addr:#x} -> {buf:#x}"),
        }
    }
}

/// Result status bytes the engine writes.
pub mod status {
    #![allow(missing_docs)]
    pub const NOT_RUN: u8 = 0;
    pub const DONE: u8 = 1;
    pub const FAULT: u8 = 2;
    pub const UNSUPPORTED: u8 = 3;
}

/// What one op did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Got {
    /// The engine never reached the op.
    NotRun,
    /// Completed; the value read (0 for stores and INVLPG).
    Value(u64),
    /// Took exception `vector` with `error` (0 when the vector pushes
    /// none, and always in real mode) and CR2 at that moment.
    Fault {
        /// The vector.
        vector: u8,
        /// The error code.
        error: u32,
        /// CR2 in the handler.
        cr2: u64,
    },
    /// The interpreter of that mode does not know the op.
    Unsupported,
    /// The status byte was none of the above.
    Garbled(u8),
}

impl Got {
    /// Decodes a 24-byte result: status u8, vector u8, pad u16, error u32,
    /// value u64, CR2 u64.
    pub fn decode(b: &[u8; 24]) -> Got {
        let q = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or([0; 8]));
        match b[0] {
            status::NOT_RUN => Got::NotRun,
            status::DONE => Got::Value(q(8)),
            status::FAULT => Got::Fault { vector: b[1], error: u32::from_le_bytes([b[4], b[5], b[6], b[7]]), cr2: q(16) },
            status::UNSUPPORTED => Got::Unsupported,
            s => Got::Garbled(s),
        }
    }
}

impl fmt::Display for Got {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Got::NotRun => write!(f, "not run"),
            Got::Value(v) => write!(f, "value {v:#x}"),
            Got::Fault { vector, error, cr2 } => {
                write!(f, "{} ec={error:#x}", shared::x86::exception_mnemonic(vector))?;
                if vector == VECTOR_PF {
                    write!(f, " cr2={cr2:#x}")?;
                }
                Ok(())
            }
            Got::Unsupported => write!(f, "unsupported in this mode"),
            Got::Garbled(s) => write!(f, "garbled status {s}"),
        }
    }
}

/// What an op must do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Complete, any value.
    Done,
    /// Complete with exactly this value.
    Value(u64),
    /// Complete with `value & mask == want`.
    Masked {
        /// Bits compared.
        mask: u64,
        /// Their expected value.
        want: u64,
    },
    /// Take exception `vector` with `error`, and (for #PF) CR2 = `cr2`.
    Fault {
        /// The vector.
        vector: u8,
        /// The error code.
        error: u32,
        /// CR2 (compared for #PF only).
        cr2: u64,
    },
}

impl Expect {
    /// A #PF with `error` at `cr2`.
    pub const fn pf(error: u32, cr2: u64) -> Self {
        Expect::Fault { vector: VECTOR_PF, error, cr2 }
    }

    /// #GP(0) (for instance MOV CR3 with a reserved PDPTE bit, SDM Vol. 3A
    /// 4.4.1, or a non-canonical address, SDM Vol. 3A 3.3.7.1).
    pub const fn gp0() -> Self {
        Expect::Fault { vector: VECTOR_GP, error: 0, cr2: 0 }
    }

    /// #UD (no error code).
    pub const fn ud() -> Self {
        Expect::Fault { vector: VECTOR_UD, error: 0, cr2: 0 }
    }

    /// True when `got` meets the expectation.
    pub fn met_by(&self, got: &Got) -> bool {
        match (*self, *got) {
            (Expect::Done, Got::Value(_)) => true,
            (Expect::Value(w), Got::Value(v)) => w == v,
            (Expect::Masked { mask, want }, Got::Value(v)) => v & mask == want,
            (Expect::Fault { vector, error, cr2 }, Got::Fault { vector: gv, error: ge, cr2: gc }) => {
                vector == gv && error == ge && (vector != VECTOR_PF || cr2 == gc)
            }
            _ => false,
        }
    }
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Expect::Done => write!(f, "completion"),
            Expect::Value(v) => write!(f, "value {v:#x}"),
            Expect::Masked { mask, want } => write!(f, "value&{mask:#x}={want:#x}"),
            Expect::Fault { vector, error, cr2 } => {
                Got::Fault { vector, error, cr2 }.fmt(f)
            }
        }
    }
}

/// The #PF error code (SDM Vol. 3A 4.7, Figure 4-12): P (bit 0) when the
/// fault came from a protection violation rather than a not-present entry,
/// W/R (bit 1) for a write, U/S (bit 2) for a user-mode access, I/D
/// (bit 4) for an instruction fetch when NX (PAE or 4-level paging with
/// IA32_EFER.NXE = 1) or SMEP is on.
pub const fn pf_error(present: bool, write: bool, user: bool, fetch_reported: bool) -> u32 {
    (present as u32) | ((write as u32) << 1) | ((user as u32) << 2) | ((fetch_reported as u32) << 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_round_trip() {
        let ops = [
            Op::Read32 { seg: 0x1c0, addr: 0x10 },
            Op::Write32 { seg: 0, addr: 0x4000_1000, value: 0xdead_beef },
            Op::Read64 { addr: 0x1_4000_0ff8 },
            Op::Fetch { addr: 0x4000_4000 },
            Op::Invlpg { addr: 0x4080_0000 },
            Op::MovCr3 { value: 0x20_3000 },
            Op::WriteCr0 { value: 0x8001_0033 },
            Op::WriteCr4 { value: 0x30 },
            Op::ReadCr0,
            Op::ReadCr3,
            Op::ReadCr4,
            Op::Rdmsr { msr: 0xC000_0080 },
            Op::Ud2,
            Op::ShadowWalk { addr: 0x4000_1000, buf: 0x4400 },
        ];
        for op in ops {
            assert_eq!(Op::decode(&op.encode()), Some(op), "{op}");
        }
        let w = Op::Write32 { seg: 0x01c0, addr: 0x8, value: 0x1234_5678 }.encode();
        assert_eq!(w, [2, 0, 0xc0, 1, 0x78, 0x56, 0x34, 0x12, 8, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(Op::decode(&[0xff; 16]), None);
    }

    fn result(status: u8, vector: u8, error: u32, value: u64, cr2: u64) -> [u8; 24] {
        let mut b = [0u8; 24];
        b[0] = status;
        b[1] = vector;
        b[4..8].copy_from_slice(&error.to_le_bytes());
        b[8..16].copy_from_slice(&value.to_le_bytes());
        b[16..24].copy_from_slice(&cr2.to_le_bytes());
        b
    }

    #[test]
    fn results_decode() {
        assert_eq!(Got::decode(&[0; 24]), Got::NotRun);
        assert_eq!(Got::decode(&result(1, 0, 0, 0x1234, 0)), Got::Value(0x1234));
        assert_eq!(
            Got::decode(&result(2, 14, 3, 0, 0x4000_1000)),
            Got::Fault { vector: 14, error: 3, cr2: 0x4000_1000 }
        );
        assert_eq!(Got::decode(&result(3, 0, 0, 0, 0)), Got::Unsupported);
        assert_eq!(Got::decode(&result(9, 0, 0, 0, 0)), Got::Garbled(9));
    }

    #[test]
    fn expectations() {
        let pf = Expect::pf(pf_error(true, true, false, false), 0x4000_1000);
        assert!(pf.met_by(&Got::Fault { vector: 14, error: 3, cr2: 0x4000_1000 }));
        assert!(!pf.met_by(&Got::Fault { vector: 14, error: 3, cr2: 0x4000_1004 }));
        assert!(!pf.met_by(&Got::Fault { vector: 14, error: 2, cr2: 0x4000_1000 }));
        assert!(!pf.met_by(&Got::Value(0)));
        // CR2 is not compared for #GP.
        assert!(Expect::gp0().met_by(&Got::Fault { vector: 13, error: 0, cr2: 0x1234 }));
        assert!(Expect::Masked { mask: 0x8000_0001, want: 0 }.met_by(&Got::Value(0x10)));
        assert!(Expect::Done.met_by(&Got::Value(7)) && !Expect::Done.met_by(&Got::NotRun));
        assert_eq!(format!("{pf}"), "#PF ec=0x3 cr2=0x40001000");
        assert_eq!(format!("{}", Got::Fault { vector: 13, error: 0, cr2: 5 }), "#GP ec=0x0");
    }

    #[test]
    fn pf_error_codes() {
        // SDM Vol. 3A 4.7: not-present read 0, not-present write 2,
        // protection write 3, user read of a supervisor page 5, fetch 0x10.
        assert_eq!(pf_error(false, false, false, false), 0);
        assert_eq!(pf_error(false, true, false, false), 2);
        assert_eq!(pf_error(true, true, false, false), 3);
        assert_eq!(pf_error(true, false, true, false), 5);
        assert_eq!(pf_error(false, false, false, true), 0x10);
    }
}
