//! The semantics of each instruction the real-mode emulator runs, as the
//! SDM Vol. 2 instruction pages state them for real-address mode (the
//! guest's CPL is 0 there, so privileged instructions are allowed; only the
//! vm86 task they run in made them fault).
//!
//! Emulated: LGDT, LIDT, MOV to/from CR0/CR2/CR3/CR4, LMSW, SMSW, CLTS,
//! HLT, IN/OUT (imm8 and DX, 8/16/32-bit), INT3/INT n/INTO through the IVT,
//! far JMP (ptr16:16, ptr16:32, m16:16, m16:32) and far CALL (ptr16:16,
//! ptr16:32), which leave vm86 once CR0.PE=1; CLI, STI, PUSHF(D), POPF(D)
//! and IRET(D) (see [`super::stack`] for when vm86 faults on them). #UD for
//! UD0/UD1/UD2 and for the protected-mode-only instructions real mode
//! rejects (LLDT, LTR, SLDT, STR, VERR, VERW, LAR, LSL, ARPL: "not
//! recognized in real-address mode"). Everything else, string I/O included,
//! is [`Outcome::Unsupported`].

use super::decode::{self, fault, memory_operand, read_gpr, read_rm, unsupported, write_gpr, Decoded, Fetched, OperandError};
use super::stack::{self, interrupt, push, IretError};
use super::{flags, sreg, vector, Dtr, Outcome, RealModeMemory, RealModeState, CR0_PE, CR0_TS};
use iced_x86::{Code, Instruction, OpKind, Register};

const OUTSIDE_RAM: &str = "memory operand outside guest RAM (no MMIO is emulated in real mode)";

/// Runs one decoded instruction.
pub fn execute(state: &mut RealModeState, mem: &mut impl RealModeMemory, d: &Decoded, f: &Fetched) -> Outcome {
    let insn = &d.insn;
    let len = insn.len();
    let unsupported_here = |what| unsupported(f, len, what);
    let operand_error = |e: OperandError| match e {
        OperandError::Fault(o) => o,
        OperandError::OutsideRam => unsupported(f, len, OUTSIDE_RAM),
    };
    let outcome = match insn.code() {
        // LGDT/LIDT m16&32 (SDM Vol. 2A LGDT/LIDT): 6 bytes, limit then
        // base; with a 16-bit operand size only 24 bits of base are loaded.
        Code::Lgdt_m1632_16 | Code::Lgdt_m1632 | Code::Lidt_m1632_16 | Code::Lidt_m1632 => {
            let at = match memory_operand(state, insn, 6) {
                Ok(at) => at,
                Err(o) => return o,
            };
            let mut buf = [0u8; 6];
            if !mem.read(at, &mut buf) {
                return unsupported_here(OUTSIDE_RAM);
            }
            let limit = u16::from_le_bytes([buf[0], buf[1]]);
            let mut base = u32::from_le_bytes([buf[2], buf[3], buf[4], buf[5]]);
            if matches!(insn.code(), Code::Lgdt_m1632_16 | Code::Lidt_m1632_16) {
                base &= 0x00ff_ffff;
            }
            let which = if matches!(insn.code(), Code::Lgdt_m1632_16 | Code::Lgdt_m1632) { Dtr::Gdt } else { Dtr::Idt };
            Outcome::LoadDescriptorTable { which, base, limit }
        }
        // MOV CRn, r32 / MOV r32, CRn (SDM Vol. 2B MOV-Move to/from Control
        // Registers): always 32 bits outside 64-bit mode, the mod field is
        // ignored; CR1, CR5-CR7 and CR8 (outside 64-bit mode) are #UD.
        Code::Mov_cr_r32 => {
            let Some(cr) = control_register(insn.op_register(0)) else { return fault(state, vector::UD, 0) };
            let Some(value) = read_gpr(state, insn.op_register(1)) else { return fault(state, vector::UD, 0) };
            Outcome::WriteCr { cr, value }
        }
        Code::Mov_r32_cr => {
            let Some(cr) = control_register(insn.op_register(1)) else { return fault(state, vector::UD, 0) };
            let Some((gpr, _)) = decode::gpr_slot(insn.op_register(0)) else { return fault(state, vector::UD, 0) };
            Outcome::ReadCr { cr, gpr: gpr as u8 }
        }
        // LMSW r/m16 (SDM Vol. 2A LMSW): loads CR0 bits 3:0 (PE MP EM TS);
        // it can set PE but never clear it.
        Code::Lmsw_rm16 | Code::Lmsw_r32m16 => {
            let src = match read_rm(state, mem, insn, 0, 2) {
                Ok(v) => v,
                Err(e) => return operand_error(e),
            };
            let value = (state.cr0 & !0xf) | (src & 0xf) | (state.cr0 & CR0_PE);
            Outcome::WriteCr { cr: 0, value }
        }
        // SMSW r/m16, r32/m16 (SDM Vol. 2B SMSW): a memory destination
        // always gets 16 bits; a 32-bit register gets CR0 (bits 31:16 are
        // "undefined": processors store CR0's).
        Code::Smsw_rm16 | Code::Smsw_r32m16 => {
            let cr0 = state.cr0;
            match insn.op0_kind() {
                OpKind::Register => {
                    if !write_gpr(state, insn.op_register(0), cr0) {
                        return fault(state, vector::UD, 0);
                    }
                }
                _ => {
                    let at = match memory_operand(state, insn, 2) {
                        Ok(at) => at,
                        Err(o) => return o,
                    };
                    if !mem.write(at, &(cr0 as u16).to_le_bytes()) {
                        return unsupported_here(OUTSIDE_RAM);
                    }
                }
            }
            Outcome::Continue
        }
        // CLTS (SDM Vol. 2A CLTS): clears CR0.TS.
        Code::Clts => Outcome::WriteCr { cr: 0, value: state.cr0 & !CR0_TS },
        Code::Hlt => Outcome::Halt,
        code @ (Code::In_AL_imm8 | Code::In_AX_imm8 | Code::In_EAX_imm8 | Code::In_AL_DX | Code::In_AX_DX | Code::In_EAX_DX) => {
            let (port, size) = io_port_and_size(state, insn, code);
            Outcome::PortIo { port, size, is_in: true, value: 0 }
        }
        code @ (Code::Out_imm8_AL | Code::Out_imm8_AX | Code::Out_imm8_EAX | Code::Out_DX_AL | Code::Out_DX_AX | Code::Out_DX_EAX) => {
            let (port, size) = io_port_and_size(state, insn, code);
            let eax = state.gpr[RealModeState::EAX];
            let value = match size {
                1 => eax & 0xff,
                2 => eax & 0xffff,
                _ => eax,
            };
            Outcome::PortIo { port, size, is_in: false, value }
        }
        Code::Insb_m8_DX | Code::Insw_m16_DX | Code::Insd_m32_DX | Code::Outsb_DX_m8 | Code::Outsw_DX_m16 | Code::Outsd_DX_m32 => {
            return unsupported_here("string I/O (INS/OUTS) is not emulated");
        }
        // INT3, INT n, INTO (SDM Vol. 2A INT n/INTO/INT3/INT1, real-address
        // mode operation).
        Code::Int3 | Code::Int_imm8 | Code::Into => {
            let v = match insn.code() {
                Code::Int3 => vector::BP,
                Code::Into if state.eflags & flags::OF == 0 => {
                    state.eip = u32::from(d.next_ip);
                    return Outcome::Continue;
                }
                Code::Into => vector::OF,
                _ => insn.immediate8(),
            };
            // vm86 INT n redirection reads the 8086 IVT at linear 0 (SDM Vol. 3A
            // 20.3.3.5), and so does this emulation of it.
            return match interrupt(state, mem, 0, v, d.next_ip) {
                Ok(()) => Outcome::Continue,
                Err(what) => unsupported_here(what),
            };
        }
        // CLI/STI in real mode (CPL 0): clear/set IF (SDM Vol. 2A CLI, Vol.
        // 2B STI). After STI the caller may deliver a pending interrupt
        // (strictly, after the next instruction: the STI shadow).
        Code::Cli => {
            state.eflags &= !flags::IF;
            Outcome::Continue
        }
        Code::Sti => {
            state.eflags |= flags::IF;
            Outcome::Continue
        }
        Code::Pushfw | Code::Pushfd => match stack::pushf(state, mem, insn.code() == Code::Pushfd) {
            Ok(()) => Outcome::Continue,
            Err(what) => return unsupported_here(what),
        },
        Code::Popfw | Code::Popfd => match stack::popf(state, mem, insn.code() == Code::Popfd) {
            Ok(()) => Outcome::Continue,
            Err(what) => return unsupported_here(what),
        },
        Code::Iretw | Code::Iretd => {
            return match stack::iret(state, mem, insn.code() == Code::Iretd) {
                Ok(()) => Outcome::Continue,
                Err(IretError::BeyondLimit) => fault(state, vector::GP, 0),
                Err(IretError::OutsideRam(what)) => unsupported_here(what),
            };
        }
        Code::Jmp_ptr1616 | Code::Jmp_ptr1632 => {
            let offset = if insn.code() == Code::Jmp_ptr1616 { u32::from(insn.far_branch16()) } else { insn.far_branch32() };
            return far_transfer(state, insn.far_branch_selector(), offset);
        }
        // JMP m16:16 / m16:32 (FF /5): offset then selector in memory.
        Code::Jmp_m1616 | Code::Jmp_m1632 => {
            let wide = insn.code() == Code::Jmp_m1632;
            let size = if wide { 6 } else { 4 };
            let at = match memory_operand(state, insn, size) {
                Ok(at) => at,
                Err(o) => return o,
            };
            let mut buf = [0u8; 6];
            if !mem.read(at, &mut buf[..size as usize]) {
                return unsupported_here(OUTSIDE_RAM);
            }
            let (offset, sel) = if wide {
                (u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]), u16::from_le_bytes([buf[4], buf[5]]))
            } else {
                (u32::from(u16::from_le_bytes([buf[0], buf[1]])), u16::from_le_bytes([buf[2], buf[3]]))
            };
            return far_transfer(state, sel, offset);
        }
        // CALL ptr16:16 / ptr16:32 (SDM Vol. 2A CALL, "far call"): push CS
        // then the return IP in the operand size, then transfer.
        Code::Call_ptr1616 | Code::Call_ptr1632 => {
            let wide = insn.code() == Code::Call_ptr1632;
            let offset = if wide { insn.far_branch32() } else { u32::from(insn.far_branch16()) };
            let width = if wide { 4 } else { 2 };
            let mut sp = state.gpr[RealModeState::ESP];
            let cs = u32::from(state.seg[sreg::CS]);
            for value in [cs, u32::from(d.next_ip)] {
                match push(state, mem, &mut sp, value, width) {
                    Ok(()) => {}
                    Err(what) => return unsupported_here(what),
                }
            }
            let saved = (state.gpr[RealModeState::ESP], state.eip);
            state.gpr[RealModeState::ESP] = (saved.0 & !0xffff) | (sp & 0xffff);
            let o = far_transfer(state, insn.far_branch_selector(), offset);
            if matches!(o, Outcome::Exception { .. }) {
                (state.gpr[RealModeState::ESP], state.eip) = saved;
            }
            return o;
        }
        // Protected-mode-only instructions: #UD in real-address mode (their
        // Vol. 2 pages, "Real-Address Mode Exceptions").
        Code::Lldt_rm16
        | Code::Lldt_r32m16
        | Code::Ltr_rm16
        | Code::Ltr_r32m16
        | Code::Sldt_rm16
        | Code::Sldt_r32m16
        | Code::Str_rm16
        | Code::Str_r32m16
        | Code::Verr_rm16
        | Code::Verr_r32m16
        | Code::Verw_rm16
        | Code::Verw_r32m16
        | Code::Lar_r16_rm16
        | Code::Lar_r32_r32m16
        | Code::Lsl_r16_rm16
        | Code::Lsl_r32_r32m16
        | Code::Arpl_rm16_r16
        | Code::Arpl_r32m16_r32
            if state.cr0 & CR0_PE == 0 =>
        {
            return fault(state, vector::UD, 0);
        }
        // UD0/UD1/UD2 raise #UD by definition (SDM Vol. 2B UD).
        Code::Ud0 | Code::Ud0_r16_rm16 | Code::Ud0_r32_rm32 | Code::Ud1_r16_rm16 | Code::Ud1_r32_rm32 | Code::Ud2 => {
            return fault(state, vector::UD, 0);
        }
        Code::Mov_r32_dr | Code::Mov_dr_r32 => return unsupported_here("MOV to/from a debug register is not emulated"),
        _ => return unsupported_here("instruction not emulated in real mode"),
    };
    state.eip = u32::from(d.next_ip);
    outcome
}

/// The control-register number of a MOV CR operand, if it exists outside
/// 64-bit mode (SDM Vol. 2B MOV CR: CR1, CR5-CR7 #UD; CR8 only in 64-bit
/// mode).
fn control_register(r: Register) -> Option<u8> {
    match r {
        Register::CR0 => Some(0),
        Register::CR2 => Some(2),
        Register::CR3 => Some(3),
        Register::CR4 => Some(4),
        _ => None,
    }
}

/// Port and size of an IN/OUT (SDM Vol. 2A IN, Vol. 2B OUT): imm8 forms
/// name ports 0-255, DX forms port DX; the size comes from the opcode (E4/
/// E6/EC/EE byte) and the operand size (16, or 32 with 0x66).
fn io_port_and_size(state: &RealModeState, insn: &Instruction, code: Code) -> (u16, u8) {
    let size = match code {
        Code::In_AL_imm8 | Code::In_AL_DX | Code::Out_imm8_AL | Code::Out_DX_AL => 1,
        Code::In_AX_imm8 | Code::In_AX_DX | Code::Out_imm8_AX | Code::Out_DX_AX => 2,
        _ => 4,
    };
    let port = match code {
        Code::In_AL_DX | Code::In_AX_DX | Code::In_EAX_DX | Code::Out_DX_AL | Code::Out_DX_AX | Code::Out_DX_EAX => {
            state.gpr[RealModeState::EDX] as u16
        }
        _ => u16::from(insn.immediate8()),
    };
    (port, size)
}

/// A far JMP/CALL to `selector:offset` (SDM Vol. 2A JMP, "far jump"). In
/// real mode: CS = selector, EIP = offset (an offset past the 64 KiB limit
/// is #GP(0)). With CR0.PE=1 this is the jump of SDM Vol. 3A 10.9.1 step 3
/// that loads CS from the GDT: the caller leaves vm86
/// ([`super::protected_mode_handoff`]).
fn far_transfer(state: &mut RealModeState, selector: u16, offset: u32) -> Outcome {
    if state.cr0 & CR0_PE != 0 {
        state.seg[sreg::CS] = selector;
        state.eip = offset;
        return Outcome::EnterProtectedMode { cs: selector, eip: offset };
    }
    if offset > 0xffff {
        return fault(state, vector::GP, 0);
    }
    state.seg[sreg::CS] = selector;
    state.eip = offset;
    Outcome::Continue
}
