//! Emulating a guest store that hit a write-protected guest page table.
//!
//! The shadow page cache write-protects every guest page it shadows, so a
//! guest edit of a page table faults; the core then asks the vCPU to emulate
//! the store (`mmu::FaultOutcome::EmulateWrite`) so the shadows of every role
//! for that frame are updated with it. This module decodes the instruction
//! (iced-x86) and computes what it stores:
//!
//! * `MOV m, r` / `MOV m, imm`: the value (the common PTE update);
//! * `XCHG m, r`: the register's value, the register gets the old value;
//! * `CMPXCHG m, r` (with or without LOCK, SDM Vol. 2A CMPXCHG): the store
//!   happens only when the accumulator equals the old value, ZF says which;
//! * `AND`/`OR`/`XOR m, r|imm`: the result, with CF=OF=0 and SF/ZF/PF set
//!   from it (SDM Vol. 2A AND/OR/XOR; AF is undefined and left alone).
//!
//! Anything else (string stores, `REP STOSB`, BTS, ADD, misaligned or
//! page-straddling stores, stores that are not to the faulting address) is
//! [`Emulated::Retry`]: the caller unshadows the frame and lets the guest run
//! the instruction natively, as KVM does when its emulator gives up.

use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic, OpKind, Register};

/// RFLAGS bits written by the emulated instructions.
pub mod flags {
    /// Carry.
    pub const CF: u64 = 1 << 0;
    /// Parity.
    pub const PF: u64 = 1 << 2;
    /// Zero.
    pub const ZF: u64 = 1 << 6;
    /// Sign.
    pub const SF: u64 = 1 << 7;
    /// Overflow.
    pub const OF: u64 = 1 << 11;
}

/// The effect of an emulated store instruction: write `value` (`width`
/// bytes) at the faulting address (or nothing, when `store` is false: a
/// CMPXCHG whose comparison failed), update the registers and flags, and
/// advance RIP by `len`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Store {
    /// Whether memory is written.
    pub store: bool,
    /// Bytes written: 1, 2, 4 or 8.
    pub width: u8,
    /// The value written (low `width` bytes).
    pub value: u64,
    /// A general-purpose register to set: (register number, full new
    /// 64-bit value).
    pub reg: Option<(u8, u64)>,
    /// RFLAGS: (bits to clear, bits to set).
    pub rflags: Option<(u64, u64)>,
    /// Instruction length.
    pub len: u8,
}

impl Store {
    /// The stored value was computed from the old memory value (XCHG,
    /// CMPXCHG, AND/OR/XOR: the instructions that also update a register or
    /// the flags), so the store must happen only if memory still holds it.
    pub fn reads_old(&self) -> bool {
        self.reg.is_some() || self.rflags.is_some()
    }
}

/// What the trapped instruction does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Emulated {
    /// Emulate it.
    Store(Store),
    /// Unshadow the frame and re-execute the instruction natively.
    Retry(&'static str),
}

/// Register number (SDM order, RAX=0) and the bit offset of an 8-bit high
/// register (AH, CH, DH, BH).
fn gpr_slot(r: Register) -> Option<(u8, u32, u32)> {
    let full = r.full_register();
    if !full.is_gpr64() {
        return None;
    }
    let n = full.number() as u8;
    let shift = if matches!(r, Register::AH | Register::CH | Register::DH | Register::BH) { 8 } else { 0 };
    Some((n, shift, r.size() as u32 * 8))
}

pub(super) fn mask(bits: u32) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

pub(super) fn read_reg(gpr: &[u64; 16], r: Register) -> Option<u64> {
    let (n, shift, bits) = gpr_slot(r)?;
    Some((gpr[n as usize] >> shift) & mask(bits))
}

/// The full 64-bit register value after writing `v` to `r` (32-bit writes
/// zero-extend, 8/16-bit writes merge; SDM Vol. 1 3.4.1.1).
pub(super) fn write_reg(gpr: &[u64; 16], r: Register, v: u64) -> Option<(u8, u64)> {
    let (n, shift, bits) = gpr_slot(r)?;
    let old = gpr[n as usize];
    let new = match bits {
        32 => v & mask(32),
        64 => v,
        _ => (old & !(mask(bits) << shift)) | ((v & mask(bits)) << shift),
    };
    Some((n, new))
}

/// SF, ZF and PF of a `bits`-wide result (PF: even parity of the low byte).
fn logic_flags(result: u64, bits: u32) -> u64 {
    let r = result & mask(bits);
    let mut f = 0;
    if r == 0 {
        f |= flags::ZF;
    }
    if (r >> (bits - 1)) & 1 != 0 {
        f |= flags::SF;
    }
    if (r as u8).count_ones().is_multiple_of(2) {
        f |= flags::PF;
    }
    f
}

/// Flags of `CMP a, b` (`a - b`), `bits` wide (SDM Vol. 1 Appendix A).
fn sub_flags(a: u64, b: u64, bits: u32) -> u64 {
    let (a, b) = (a & mask(bits), b & mask(bits));
    let r = a.wrapping_sub(b) & mask(bits);
    let mut f = logic_flags(r, bits);
    if a < b {
        f |= flags::CF;
    }
    let sign = |x: u64| (x >> (bits - 1)) & 1;
    if sign(a) != sign(b) && sign(r) != sign(a) {
        f |= flags::OF;
    }
    f
}

/// Decodes the instruction in `bytes` (at most 15, in a `bitness`-bit code
/// segment) that stored to the write-protected page, and computes the
/// store. `old` reads the current `width`-byte value at the faulting
/// address (for the read-modify-write forms); `fault_offset` is the
/// faulting address' offset in its page, used to reject page-straddling
/// stores.
pub fn emulate(
    bytes: &[u8],
    bitness: u32,
    gpr: &[u64; 16],
    fault_offset: u64,
    old: impl Fn(u8) -> Option<u64>,
) -> Emulated {
    let mut d = Decoder::new(bitness, bytes, DecoderOptions::NONE);
    let ins: Instruction = d.decode();
    if ins.is_invalid() {
        return Emulated::Retry("not a valid instruction");
    }
    if ins.op_count() < 1 || ins.op0_kind() != OpKind::Memory {
        return Emulated::Retry("the destination is not a memory operand");
    }
    if ins.has_rep_prefix() || ins.has_repne_prefix() {
        return Emulated::Retry("REP prefix");
    }
    let width = ins.memory_size().size() as u8;
    if !matches!(width, 1 | 2 | 4 | 8) {
        return Emulated::Retry("store width");
    }
    if fault_offset + width as u64 > 4096 {
        return Emulated::Retry("the store straddles a page boundary");
    }
    let bits = width as u32 * 8;
    let len = ins.len() as u8;
    let src = |i: u32| -> Option<u64> {
        match ins.op_kind(i) {
            OpKind::Register => read_reg(gpr, ins.op_register(i)),
            OpKind::Immediate8
            | OpKind::Immediate16
            | OpKind::Immediate32
            | OpKind::Immediate8to16
            | OpKind::Immediate8to32
            | OpKind::Immediate8to64
            | OpKind::Immediate32to64 => Some(ins.immediate(i) & mask(bits)),
            _ => None,
        }
    };
    let store = |value: u64| Store { store: true, width, value, reg: None, rflags: None, len };
    match ins.mnemonic() {
        Mnemonic::Mov => match src(1) {
            Some(v) => Emulated::Store(store(v)),
            None => Emulated::Retry("MOV source"),
        },
        Mnemonic::Xchg => {
            let r = ins.op1_register();
            let (Some(v), Some(o)) = (read_reg(gpr, r), old(width)) else { return Emulated::Retry("XCHG operands") };
            Emulated::Store(Store { reg: write_reg(gpr, r, o), ..store(v) })
        }
        Mnemonic::Cmpxchg => {
            let acc = match width {
                1 => Register::AL,
                2 => Register::AX,
                4 => Register::EAX,
                _ => Register::RAX,
            };
            let (Some(a), Some(o), Some(v)) = (read_reg(gpr, acc), old(width), src(1)) else {
                return Emulated::Retry("CMPXCHG operands");
            };
            let f = sub_flags(a, o, bits);
            let all = flags::CF | flags::PF | flags::ZF | flags::SF | flags::OF;
            if a == o {
                Emulated::Store(Store { rflags: Some((all, f)), ..store(v) })
            } else {
                // The destination is written back unchanged on a real CPU;
                // writing nothing is equivalent for a page table.
                Emulated::Store(Store { store: false, reg: write_reg(gpr, acc, o), rflags: Some((all, f)), ..store(o) })
            }
        }
        m @ (Mnemonic::And | Mnemonic::Or | Mnemonic::Xor) => {
            let (Some(o), Some(v)) = (old(width), src(1)) else { return Emulated::Retry("logic operands") };
            let r = match m {
                Mnemonic::And => o & v,
                Mnemonic::Or => o | v,
                _ => o ^ v,
            } & mask(bits);
            let clear = flags::CF | flags::OF | flags::PF | flags::ZF | flags::SF;
            Emulated::Store(Store { rflags: Some((clear, logic_flags(r, bits))), ..store(r) })
        }
        _ => Emulated::Retry("instruction not emulated"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_case::test_case;

    fn regs() -> [u64; 16] {
        let mut g = [0u64; 16];
        for (i, r) in g.iter_mut().enumerate() {
            *r = 0x1111_1111_1111_1111u64.wrapping_mul(i as u64 + 1);
        }
        g
    }

    // 48 89 03 = mov [rbx], rax
    #[test_case(&[0x48, 0x89, 0x03], 64, 8, 0x1111_1111_1111_1111 ; "mov qword from rax")]
    // 89 03 = mov [rbx], eax (32-bit store from a 64-bit register)
    #[test_case(&[0x89, 0x03], 64, 4, 0x1111_1111 ; "mov dword from eax")]
    // 88 63 00 = mov [rbx+0], ah
    #[test_case(&[0x88, 0x63, 0x00], 64, 1, 0x11 ; "mov byte from ah")]
    // 48 c7 03 78 56 34 12 = mov qword [rbx], 0x12345678
    #[test_case(&[0x48, 0xc7, 0x03, 0x78, 0x56, 0x34, 0x12], 64, 8, 0x1234_5678 ; "mov qword imm")]
    // 48 c7 03 00 00 00 80 = mov qword [rbx], -0x80000000 (sign-extended)
    #[test_case(&[0x48, 0xc7, 0x03, 0x00, 0x00, 0x00, 0x80], 64, 8, 0xffff_ffff_8000_0000 ; "mov imm sign extended")]
    // c7 03 03 10 00 00 = mov dword [ebx], 0x1003 in a 32-bit segment
    #[test_case(&[0xc7, 0x03, 0x03, 0x10, 0x00, 0x00], 32, 4, 0x1003 ; "32-bit code mov imm")]
    fn stores(bytes: &[u8], bitness: u32, width: u8, value: u64) {
        match emulate(bytes, bitness, &regs(), 0, |_| Some(0)) {
            Emulated::Store(Store { store: true, width: w, value: v, reg: None, rflags: None, len }) => {
                assert_eq!((w, v, len as usize), (width, value, bytes.len()));
            }
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn xchg_returns_the_old_value() {
        // 48 87 0b = xchg [rbx], rcx
        let e = emulate(&[0x48, 0x87, 0x0b], 64, &regs(), 0, |_| Some(0xdead));
        assert_eq!(
            e,
            Emulated::Store(Store { store: true, width: 8, value: 0x2222_2222_2222_2222, reg: Some((1, 0xdead)), rflags: None, len: 3 })
        );
    }

    #[test]
    fn lock_cmpxchg_hit_and_miss() {
        // f0 48 0f b1 0b = lock cmpxchg [rbx], rcx
        let b = [0xf0, 0x48, 0x0f, 0xb1, 0x0b];
        let g = regs();
        match emulate(&b, 64, &g, 0, |_| Some(g[0])) {
            Emulated::Store(Store { store: true, value, rflags: Some((_, f)), .. }) => {
                assert_eq!(value, g[1]);
                assert_ne!(f & flags::ZF, 0);
            }
            e => panic!("{e:?}"),
        }
        match emulate(&b, 64, &g, 0, |_| Some(5)) {
            Emulated::Store(Store { store: false, reg: Some((0, 5)), rflags: Some((_, f)), .. }) => assert_eq!(f & flags::ZF, 0),
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn and_clears_bits_and_sets_flags() {
        // 83 23 fd = and dword [rbx], ~2 (clear W in a 32-bit PTE)
        match emulate(&[0x83, 0x23, 0xfd], 64, &regs(), 0, |_| Some(0x1003)) {
            Emulated::Store(Store { value, width: 4, rflags: Some((_, f)), .. }) => {
                assert_eq!(value, 0x1001);
                assert_eq!(f & (flags::ZF | flags::CF | flags::OF), 0);
            }
            e => panic!("{e:?}"),
        }
        // 80 23 00 = and byte [rbx], 0 -> ZF, PF
        match emulate(&[0x80, 0x23, 0x00], 64, &regs(), 0, |_| Some(0x03)) {
            Emulated::Store(Store { value: 0, rflags: Some((_, f)), .. }) => assert_eq!(f, flags::ZF | flags::PF),
            e => panic!("{e:?}"),
        }
    }

    // f3 aa = rep stosb
    #[test_case(&[0xf3, 0xaa] ; "rep stosb")]
    // 48 0f ab 03 = bts [rbx], rax
    #[test_case(&[0x48, 0x0f, 0xab, 0x03] ; "bts")]
    // 48 8b 03 = mov rax, [rbx] (a load)
    #[test_case(&[0x48, 0x8b, 0x03] ; "load")]
    #[test_case(&[0x0f, 0x0b] ; "ud2")]
    #[test_case(&[] ; "no bytes")]
    fn others_retry(bytes: &[u8]) {
        assert!(matches!(emulate(bytes, 64, &regs(), 0, |_| Some(0)), Emulated::Retry(_)));
    }

    #[test]
    fn straddling_store_retries() {
        assert!(matches!(emulate(&[0x48, 0x89, 0x03], 64, &regs(), 4092, |_| Some(0)), Emulated::Retry(_)));
    }

    #[test]
    fn cmp_flags() {
        assert_eq!(sub_flags(1, 2, 8) & (flags::CF | flags::SF), flags::CF | flags::SF);
        assert_eq!(sub_flags(0x80, 1, 8) & flags::OF, flags::OF);
        assert_eq!(sub_flags(5, 5, 32) & flags::ZF, flags::ZF);
    }
}
