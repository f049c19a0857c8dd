//! Stack and interrupt-flag instructions of the real-mode emulator: CLI,
//! STI, PUSHF/PUSHFD, POPF/POPFD, IRET/IRETD, and interrupt delivery through
//! the IVT (also used by INT n and by the caller to inject events).
//!
//! With CR4.VME=1 and IOPL=0, vm86 runs CLI, 16-bit PUSHF and most of STI,
//! 16-bit POPF and 16-bit IRET on VIF natively (SDM Vol. 3A 20.4
//! "Protected-mode virtual interrupts", 20.3.3), but raises #GP(0) for STI,
//! or POPF/IRET setting IF, while VIP=1, for POPF/IRET setting TF, and
//! always for the 32-bit PUSHFD, POPFD and IRETD. Those faults land here and
//! run with real-address-mode semantics on the guest's own EFLAGS (SDM Vol.
//! 2B POPF/PUSHF, Vol. 2A IRET, "real-address mode" operation; the guest's
//! CPL is 0 there).
//!
//! The stack is SS:SP with a 16-bit SP that wraps (SS.B=0 in real mode); a
//! push or pop writes or reads byte by byte with the offset wrapping.

use super::decode::linear;
use super::{flags, sreg, RealModeMemory, RealModeState};

/// The guest-writable EFLAGS bits for POPF/IRET in real mode: all
/// non-reserved bits but VIF, VIP and VM (SDM Vol. 2B POPF: mask 257FD5H;
/// RF is cleared instead).
const POPF32_MASK: u32 = 0x0024_7FD5;
/// A 16-bit POPF changes the low 16 bits only.
const POPF16_MASK: u32 = 0x7FD5;

/// Pushes `width` bytes of `value` at SS:SP-width, updating `sp`.
pub fn push(state: &RealModeState, mem: &mut impl RealModeMemory, sp: &mut u32, value: u32, width: u32) -> Result<(), &'static str> {
    *sp = sp.wrapping_sub(width) & 0xffff;
    for (i, b) in value.to_le_bytes().iter().take(width as usize).enumerate() {
        if !mem.write(linear(state.seg[sreg::SS], (*sp + i as u32) & 0xffff), &[*b]) {
            return Err("stack outside guest RAM");
        }
    }
    Ok(())
}

/// Pops `width` bytes at SS:SP, updating `sp`.
pub fn pop(state: &RealModeState, mem: &impl RealModeMemory, sp: &mut u32, width: u32) -> Result<u32, &'static str> {
    let mut bytes = [0u8; 4];
    for (i, b) in bytes.iter_mut().take(width as usize).enumerate() {
        let mut one = [0u8; 1];
        if !mem.read(linear(state.seg[sreg::SS], (*sp + i as u32) & 0xffff), &mut one) {
            return Err("stack outside guest RAM");
        }
        *b = one[0];
    }
    *sp = (*sp + width) & 0xffff;
    Ok(u32::from_le_bytes(bytes))
}

/// Stores the 16-bit SP back into ESP (the high half is kept).
fn set_sp(state: &mut RealModeState, sp: u32) {
    let esp = &mut state.gpr[RealModeState::ESP];
    *esp = (*esp & !0xffff) | (sp & 0xffff);
}

/// EFLAGS after popping `popped` with a 16- or 32-bit operand size.
fn popped_flags(old: u32, popped: u32, wide: bool) -> u32 {
    let mask = if wide { POPF32_MASK } else { POPF16_MASK };
    ((old & !mask & !flags::RF) | (popped & mask)) | flags::FIXED1
}

/// PUSHF (16 bits) or PUSHFD (32 bits: the image has VM and RF clear, SDM
/// Vol. 2B PUSHF).
pub fn pushf(state: &mut RealModeState, mem: &mut impl RealModeMemory, wide: bool) -> Result<(), &'static str> {
    let mut sp = state.gpr[RealModeState::ESP];
    let (value, width) = if wide { (state.eflags & !(flags::VM | flags::RF), 4) } else { (state.eflags & 0xffff, 2) };
    push(state, mem, &mut sp, value, width)?;
    set_sp(state, sp);
    Ok(())
}

/// POPF or POPFD (SDM Vol. 2B POPF, real-address mode).
pub fn popf(state: &mut RealModeState, mem: &impl RealModeMemory, wide: bool) -> Result<(), &'static str> {
    let mut sp = state.gpr[RealModeState::ESP];
    let popped = pop(state, mem, &mut sp, if wide { 4 } else { 2 })?;
    state.eflags = popped_flags(state.eflags, popped, wide);
    set_sp(state, sp);
    Ok(())
}

/// What IRET found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IretError {
    /// The stack is outside guest RAM.
    OutsideRam(&'static str),
    /// The popped EIP is past the 64 KiB CS limit: #GP(0).
    BeyondLimit,
}

/// IRET or IRETD in real mode (SDM Vol. 2A IRET, "REAL-ADDRESS-MODE"): pop
/// IP, CS, FLAGS in the operand size; an EIP past 0xFFFF is #GP(0) and
/// changes nothing.
pub fn iret(state: &mut RealModeState, mem: &impl RealModeMemory, wide: bool) -> Result<(), IretError> {
    let width = if wide { 4 } else { 2 };
    let mut sp = state.gpr[RealModeState::ESP];
    let mut next = || pop(state, mem, &mut sp, width).map_err(IretError::OutsideRam);
    let (ip, cs, popped) = (next()?, next()?, next()?);
    if ip > 0xffff {
        return Err(IretError::BeyondLimit);
    }
    state.eip = ip;
    state.seg[sreg::CS] = cs as u16;
    state.eflags = popped_flags(state.eflags, popped, wide);
    set_sp(state, sp);
    Ok(())
}

/// Real-mode interrupt delivery through the IVT at linear 0 (SDM Vol. 3A
/// 20.1.4; Vol. 2A INT n, real-address mode: push FLAGS, CS, IP; IF, TF,
/// AC cleared; CS:IP from the 4-byte vector). `ret` is the IP pushed.
pub fn interrupt(
    state: &mut RealModeState,
    mem: &mut impl RealModeMemory,
    ivt_base: u32,
    v: u8,
    ret: u16,
) -> Result<(), &'static str> {
    let mut entry = [0u8; 4];
    if !mem.read(ivt_base.wrapping_add(u32::from(v) * 4), &mut entry) {
        return Err("interrupt vector table outside guest RAM");
    }
    let mut sp = state.gpr[RealModeState::ESP];
    for value in [state.eflags & 0xffff, u32::from(state.seg[sreg::CS]), u32::from(ret)] {
        push(state, mem, &mut sp, value, 2)?;
    }
    set_sp(state, sp);
    state.eflags &= !(flags::IF | flags::TF | flags::AC);
    state.eip = u32::from(u16::from_le_bytes([entry[0], entry[1]]));
    state.seg[sreg::CS] = u16::from_le_bytes([entry[2], entry[3]]);
    Ok(())
}
