//! Host tests of the flag and stack instructions: CLI FA, STI FB, PUSHF 9C,
//! PUSHFD 66 9C, POPF 9D, POPFD 66 9D, IRET CF, IRETD 66 CF (SDM Vol. 2A/2B,
//! one-byte opcodes; 0x66 selects the 32-bit operand size). The stack is
//! SS:SP = 3000:FFF0 (linear 0x3FFF0).

use super::tests_instr::{machine, Ram, CODE_CS, CODE_IP};
use super::*;
use test_case::test_case;

fn put(ram: &mut Ram, at: u32, bytes: &[u8]) {
    ram.0[at as usize..at as usize + bytes.len()].copy_from_slice(bytes);
}

#[test_case(&[0xFA], flags::FIXED1 | flags::IF | flags::CF, flags::FIXED1 | flags::CF ; "cli")]
#[test_case(&[0xFB], flags::FIXED1, flags::FIXED1 | flags::IF ; "sti")]
fn cli_sti(code: &[u8], before: u32, after: u32) {
    let (mut state, mut ram) = machine(code);
    state.eflags = before;
    assert_eq!(emulate(&mut state, &mut ram), Outcome::Continue);
    assert_eq!((state.eflags, state.eip), (after, CODE_IP + 1));
}

#[test]
fn pushf_and_pushfd() {
    let (mut state, mut ram) = machine(&[0x9C]);
    state.eflags = 0x0024_0A87 | flags::RF;
    assert_eq!(emulate(&mut state, &mut ram), Outcome::Continue);
    assert_eq!(state.gpr[RealModeState::ESP], 0xFFEE);
    assert_eq!(&ram.0[0x3FFEE..0x3FFF0], &[0x87, 0x0A]);
    assert_eq!(state.eip, CODE_IP + 1);

    // PUSHFD: 32 bits, RF (and VM) clear in the image, AC and ID kept.
    let (mut state, mut ram) = machine(&[0x66, 0x9C]);
    state.eflags = 0x0024_0A87 | flags::RF;
    assert_eq!(emulate(&mut state, &mut ram), Outcome::Continue);
    assert_eq!(state.gpr[RealModeState::ESP], 0xFFEC);
    assert_eq!(&ram.0[0x3FFEC..0x3FFF0], &0x0024_0A87u32.to_le_bytes());
    assert_eq!(state.eip, CODE_IP + 2);
}

// POPF changes bits 14:0 but the reserved ones; POPFD also AC and ID, never
// VIF, VIP, VM; RF is cleared (SDM Vol. 2B POPF).
#[test_case(&[0x9D], 0xFFFF, flags::FIXED1 | flags::AC, 0x7FD7 | flags::AC ; "popf keeps the high half")]
#[test_case(&[0x9D], 0x0000, flags::FIXED1 | flags::IF | flags::RF, flags::FIXED1 ; "popf clears if and rf")]
#[test_case(&[0x66, 0x9D], 0xFFFF_FFFF, flags::FIXED1, 0x0024_7FD7 ; "popfd sets ac and id only")]
#[test_case(&[0x66, 0x9D], 0x0000_0000, 0x0024_7FD7, flags::FIXED1 ; "popfd clears them")]
fn popf_and_popfd(code: &[u8], popped: u32, before: u32, after: u32) {
    let (mut state, mut ram) = machine(code);
    state.eflags = before;
    put(&mut ram, 0x3FFF0, &popped.to_le_bytes());
    assert_eq!(emulate(&mut state, &mut ram), Outcome::Continue);
    assert_eq!(state.eflags, after);
    let width = if code[0] == 0x66 { 4 } else { 2 };
    assert_eq!(state.gpr[RealModeState::ESP], 0xFFF0 + width);
    assert_eq!(state.eip, CODE_IP + code.len() as u32);
}

#[test]
fn iret_and_iretd() {
    // IRET: IP 0x1234, CS 0x0F00, FLAGS 0x0A03 (IF clear, OF DF CF set).
    let (mut state, mut ram) = machine(&[0xCF]);
    put(&mut ram, 0x3FFF0, &[0x34, 0x12, 0x00, 0x0F, 0x03, 0x0C]);
    assert_eq!(emulate(&mut state, &mut ram), Outcome::Continue);
    assert_eq!((state.seg[sreg::CS], state.eip, state.eflags), (0x0F00, 0x1234, 0x0C03));
    assert_eq!(state.gpr[RealModeState::ESP], 0xFFF6);

    // IRETD: 32-bit EIP, CS, EFLAGS (with AC).
    let (mut state, mut ram) = machine(&[0x66, 0xCF]);
    put(&mut ram, 0x3FFF0, &[0x34, 0x12, 0, 0, 0x00, 0x0F, 0, 0, 0x02, 0x02, 0x04, 0x00]);
    assert_eq!(emulate(&mut state, &mut ram), Outcome::Continue);
    assert_eq!((state.seg[sreg::CS], state.eip, state.eflags), (0x0F00, 0x1234, 0x0004_0202));
    assert_eq!(state.gpr[RealModeState::ESP], 0xFFFC);

    // An EIP past the CS limit is #GP(0) and changes nothing.
    let (mut state, mut ram) = machine(&[0x66, 0xCF]);
    put(&mut ram, 0x3FFF0, &[0x00, 0x00, 0x01, 0x00, 0x00, 0x0F, 0, 0, 0x02, 0x02, 0, 0]);
    let before = state;
    assert_eq!(emulate(&mut state, &mut ram), Outcome::Exception { vector: vector::GP, error_code: None });
    assert_eq!(state, before);
}

#[test]
fn int_then_iret_returns_to_the_next_instruction() {
    // INT 21h (CD 21) whose handler at 0F00:1234 is IRET (CF).
    let (mut state, mut ram) = machine(&[0xCD, 0x21]);
    put(&mut ram, 0x84, &[0x34, 0x12, 0x00, 0x0F]);
    put(&mut ram, 0xF000 + 0x1234, &[0xCF]);
    state.eflags = flags::FIXED1 | flags::IF | flags::CF;
    let start = state;
    assert_eq!(emulate(&mut state, &mut ram), Outcome::Continue);
    assert_eq!(state.eflags & flags::IF, 0);
    assert_eq!(emulate(&mut state, &mut ram), Outcome::Continue);
    assert_eq!(state, RealModeState { eip: CODE_IP + 2, ..start });
    assert_eq!(state.seg[sreg::CS], CODE_CS);
}

#[test]
fn stack_wraps_at_64k() {
    // PUSHFD with SP = 2: the dword lands at SS:FFFE..SS:0001.
    let (mut state, mut ram) = machine(&[0x66, 0x9C]);
    state.gpr[RealModeState::ESP] = 0x0002;
    state.eflags = 0x0024_0A87;
    assert_eq!(emulate(&mut state, &mut ram), Outcome::Continue);
    assert_eq!(state.gpr[RealModeState::ESP], 0xFFFE);
    assert_eq!(&ram.0[0x3FFFE..0x40000], &[0x87, 0x0A]);
    assert_eq!(&ram.0[0x30000..0x30002], &[0x24, 0x00]);
}
