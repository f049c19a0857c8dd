//! Instruction fetch at CS:IP, decoding, effective addresses and register
//! access for the real-mode emulator.
//!
//! Real mode (and vm86) code runs with 16-bit default operand and address
//! size; 0x66 and 0x67 select 32 bits for one instruction (SDM Vol. 2A
//! 2.1.1 "Instruction prefixes", 3.6 in Vol. 1). Segments have base
//! selector*16 and limit 0xFFFF (SDM Vol. 3A 20.1.1 "Address translation in
//! real-address mode"): a 16-bit effective address wraps at 64 KiB (Vol. 2A
//! Table 2-1 forms are computed modulo 2^16), and an access that runs past
//! offset 0xFFFF, or a 32-bit effective address above it, raises #GP(0), or
//! #SS(0) through SS ("Real-Address Mode Exceptions" on the Vol. 2
//! instruction pages).

use super::{sreg, vector, Outcome, RealModeMemory, RealModeState, CR0_PE};
use iced_x86::{Decoder, DecoderError, DecoderOptions, Instruction, OpKind, Register};

/// The longest instruction (SDM Vol. 2A 2.1: a longer one raises #GP).
pub const MAX_LEN: usize = 15;

/// What was fetched at CS:IP.
#[derive(Clone, Copy, Debug)]
pub struct Fetched {
    /// Bytes at CS:IP, CS:IP+1, ... (each offset wrapped to 16 bits).
    pub bytes: [u8; MAX_LEN],
    /// How many could be read (the rest lies outside guest RAM).
    pub count: usize,
    /// CS at the fetch.
    pub cs: u16,
    /// IP at the fetch.
    pub ip: u16,
}

/// A decoded instruction and where the next one starts.
#[derive(Clone, Copy, Debug)]
pub struct Decoded {
    /// iced's decoding.
    pub insn: Instruction,
    /// The IP of the next instruction (16-bit wraparound).
    pub next_ip: u16,
}

/// The exception outcome for `vector` in the guest's current mode: real
/// mode pushes no error code (SDM Vol. 3A 20.1.4); if the guest already set
/// CR0.PE, #GP/#SS/#NP push `error_code`.
pub fn fault(state: &RealModeState, vector: u8, error_code: u32) -> Outcome {
    let pushes = matches!(vector, 8 | 10..=14 | 17);
    let error_code = if state.cr0 & CR0_PE != 0 && pushes { Some(error_code) } else { None };
    Outcome::Exception { vector, error_code }
}

/// An [`Outcome::Unsupported`] naming the first `len` fetched bytes.
pub fn unsupported(f: &Fetched, len: usize, what: &'static str) -> Outcome {
    Outcome::Unsupported { bytes: f.bytes, len: len.min(MAX_LEN) as u8, cs: f.cs, ip: f.ip, what }
}

/// Reads up to 15 bytes at CS:IP, one at a time so that a read that runs
/// off the end of guest RAM still returns the bytes before it, and so that
/// the offset wraps at 64 KiB.
pub fn fetch(state: &RealModeState, mem: &impl RealModeMemory) -> Result<Fetched, Outcome> {
    let cs = state.seg[sreg::CS];
    let mut f = Fetched { bytes: [0; MAX_LEN], count: 0, cs, ip: state.eip as u16 };
    if state.eip > 0xffff {
        // EIP beyond the CS limit: #GP(0) (SDM Vol. 3A 20.1.1).
        return Err(fault(state, vector::GP, 0));
    }
    for i in 0..MAX_LEN {
        let offset = (state.eip + i as u32) & 0xffff;
        let mut b = [0u8; 1];
        if !mem.read(linear(cs, offset), &mut b) {
            break;
        }
        f.bytes[i] = b[0];
        f.count = i + 1;
    }
    if f.count == 0 {
        return Err(unsupported(&f, 0, "instruction fetch outside guest RAM"));
    }
    Ok(f)
}

/// Decodes the fetched bytes in 16-bit mode.
pub fn decode(state: &RealModeState, f: &Fetched) -> Result<Decoded, Outcome> {
    let mut decoder = Decoder::with_ip(16, &f.bytes[..f.count], u64::from(f.ip), DecoderOptions::NONE);
    let insn = decoder.decode();
    if insn.is_invalid() {
        return Err(match decoder.last_error() {
            DecoderError::NoMoreBytes => unsupported(f, f.count, "instruction fetch outside guest RAM"),
            // iced reports an instruction that needs more than 15 bytes as
            // invalid with length 15: that is #GP(0) (SDM Vol. 2A 2.1).
            // (An invalid opcode ending exactly at byte 15 is reported the
            // same way and also gets #GP, where hardware raises #UD.)
            _ if insn.len() == MAX_LEN => fault(state, vector::GP, 0),
            _ => fault(state, vector::UD, 0),
        });
    }
    let end = u32::from(f.ip) + insn.len() as u32;
    if end > 0x1_0000 {
        // The instruction's last byte lies past the CS limit (SDM Vol. 3A
        // 20.1.1: real-mode segments are 64 KiB; the fetch faults, #GP(0)).
        return Err(fault(state, vector::GP, 0));
    }
    Ok(Decoded { insn, next_ip: (end & 0xffff) as u16 })
}

/// Linear address of `segment:offset` in real mode (SDM Vol. 3A 20.1.1).
pub fn linear(segment: u16, offset: u32) -> u32 {
    (u32::from(segment) << 4).wrapping_add(offset)
}

/// The segment register number of an iced segment register.
pub fn sreg_index(r: Register) -> Option<usize> {
    Some(match r {
        Register::ES => sreg::ES,
        Register::CS => sreg::CS,
        Register::SS => sreg::SS,
        Register::DS => sreg::DS,
        Register::FS => sreg::FS,
        Register::GS => sreg::GS,
        _ => return None,
    })
}

/// Width of a general-purpose register operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Width {
    /// AL, CL, DL, BL: bits 7:0.
    Low8,
    /// AH, CH, DH, BH: bits 15:8.
    High8,
    /// 16 bits.
    W16,
    /// 32 bits.
    W32,
}

/// Register number and width of an iced general-purpose register (no
/// 64-bit or REX registers exist in 16-bit mode).
pub fn gpr_slot(r: Register) -> Option<(usize, Width)> {
    let n = r as u32;
    let within = |first: Register, last: Register| n >= first as u32 && n <= last as u32;
    if within(Register::AL, Register::BL) {
        Some(((n - Register::AL as u32) as usize, Width::Low8))
    } else if within(Register::AH, Register::BH) {
        Some(((n - Register::AH as u32) as usize, Width::High8))
    } else if within(Register::AX, Register::DI) {
        Some(((n - Register::AX as u32) as usize, Width::W16))
    } else if within(Register::EAX, Register::EDI) {
        Some(((n - Register::EAX as u32) as usize, Width::W32))
    } else {
        None
    }
}

/// Reads a general-purpose register (zero-extended).
pub fn read_gpr(state: &RealModeState, r: Register) -> Option<u32> {
    let (i, w) = gpr_slot(r)?;
    let v = state.gpr[i];
    Some(match w {
        Width::Low8 => v & 0xff,
        Width::High8 => (v >> 8) & 0xff,
        Width::W16 => v & 0xffff,
        Width::W32 => v,
    })
}

/// Writes a general-purpose register, keeping the bits outside its width.
pub fn write_gpr(state: &mut RealModeState, r: Register, value: u32) -> bool {
    let Some((i, w)) = gpr_slot(r) else { return false };
    let old = state.gpr[i];
    state.gpr[i] = match w {
        Width::Low8 => (old & !0xff) | (value & 0xff),
        Width::High8 => (old & !0xff00) | ((value & 0xff) << 8),
        Width::W16 => (old & !0xffff) | (value & 0xffff),
        Width::W32 => value,
    };
    true
}

fn is_gpr32(r: Register) -> bool {
    matches!(gpr_slot(r), Some((_, Width::W32)))
}

/// The linear address of the memory operand of `insn`, `size` bytes long,
/// after the real-mode limit check. 16-bit addressing (SDM Vol. 2A Table
/// 2-1: BX/BP + SI/DI + disp, BP-based forms defaulting to SS) wraps at 64
/// KiB; 32-bit addressing (0x67, Table 2-2 and SIB) must stay below the
/// limit. iced resolves the default segment and any override prefix.
pub fn memory_operand(state: &RealModeState, insn: &Instruction, size: u32) -> Result<u32, Outcome> {
    let seg = sreg_index(insn.memory_segment()).unwrap_or(sreg::DS);
    let base = insn.memory_base();
    let index = insn.memory_index();
    let disp = insn.memory_displacement32();
    let value = |r: Register| if r == Register::None { Some(0) } else { read_gpr(state, r) };
    let (Some(b), Some(i)) = (value(base), value(index)) else {
        return Err(fault(state, vector::UD, 0));
    };
    let addr32 = is_gpr32(base) || is_gpr32(index) || (base == Register::None && index == Register::None && insn.memory_displ_size() == 4);
    let offset = if addr32 {
        b.wrapping_add(i.wrapping_mul(insn.memory_index_scale())).wrapping_add(disp)
    } else {
        b.wrapping_add(i).wrapping_add(disp) & 0xffff
    };
    if u64::from(offset) + u64::from(size) - 1 > 0xffff {
        let v = if seg == sreg::SS { vector::SS } else { vector::GP };
        return Err(fault(state, v, 0));
    }
    Ok(linear(state.seg[seg], offset))
}

/// Reads a 16-bit or 32-bit source operand (register or memory).
pub fn read_rm(state: &RealModeState, mem: &impl RealModeMemory, insn: &Instruction, op: u32, size: u32) -> Result<u32, OperandError> {
    match insn.op_kind(op) {
        OpKind::Register => read_gpr(state, insn.op_register(op)).ok_or(OperandError::Fault(fault(state, vector::UD, 0))),
        OpKind::Memory => {
            let at = memory_operand(state, insn, size).map_err(OperandError::Fault)?;
            let mut buf = [0u8; 4];
            if !mem.read(at, &mut buf[..size as usize]) {
                return Err(OperandError::OutsideRam);
            }
            Ok(u32::from_le_bytes(buf))
        }
        _ => Err(OperandError::Fault(fault(state, vector::UD, 0))),
    }
}

/// Why an operand could not be read or written.
#[derive(Clone, Copy, Debug)]
pub enum OperandError {
    /// The architecture faults.
    Fault(Outcome),
    /// The operand is outside guest RAM (no MMIO is emulated).
    OutsideRam,
}
