//! Host tests of control transfers (far JMP/CALL, INT n through the IVT),
//! instruction fetch (IP wraparound, RAM limits, overlong instructions),
//! garbage bytes, and a property test that random bytes never panic the
//! emulator.
//!
//! Encodings (SDM Vol. 2A): JMP ptr16:16 = EA iw(offset) iw(selector),
//! JMP ptr16:32 = 66 EA id iw, JMP m16:16 = FF /5 (ModR/M 2E = [disp16]),
//! CALL ptr16:16 = 9A iw iw, INT n = CD ib, INT3 = CC, INTO = CE.

use super::tests_instr::{machine, place, Ram, CODE_CS, CODE_IP};
use super::*;
use proptest::prelude::*;
use test_case::test_case;

fn word_at(ram: &Ram, at: u32) -> u16 {
    u16::from_le_bytes([ram.0[at as usize], ram.0[at as usize + 1]])
}

#[test_case(&[0xEA, 0x00, 0x01, 0x08, 0x00], 0x0008, 0x0100 ; "jmp ptr16_16")]
#[test_case(&[0x66, 0xEA, 0x78, 0x56, 0x34, 0x12, 0x10, 0x00], 0x0010, 0x1234_5678 ; "jmp ptr16_32")]
#[test_case(&[0xFF, 0x2E, 0x00, 0x05], 0x0018, 0x0200 ; "jmp m16_16")]
#[test_case(&[0x66, 0xFF, 0x2E, 0x00, 0x05], 0x0018, 0x0010_0200 ; "jmp m16_32")]
fn far_jump_after_pe_enters_protected_mode(code: &[u8], cs: u16, eip: u32) {
    let (mut state, mut ram) = machine(code);
    state.cr0 = 0x11;
    // DS:0x500 holds offset 0x00100200 (or 0x0200), selector 0x18.
    let far: &[u8] = if code[0] == 0x66 { &[0x00, 0x02, 0x10, 0x00, 0x18, 0x00] } else { &[0x00, 0x02, 0x18, 0x00] };
    ram.0[0x20500..0x20500 + far.len()].copy_from_slice(far);
    assert_eq!(emulate(&mut state, &mut ram), Outcome::EnterProtectedMode { cs, eip });
    assert_eq!((state.seg[sreg::CS], state.eip), (cs, eip));
}

#[test]
fn far_jump_in_real_mode_reloads_cs() {
    let (mut state, mut ram) = machine(&[0xEA, 0x00, 0x01, 0x00, 0x20]);
    assert_eq!(emulate(&mut state, &mut ram), Outcome::Continue);
    assert_eq!((state.seg[sreg::CS], state.eip), (0x2000, 0x0100));
    // An offset past 0xFFFF is #GP in real mode.
    let (mut state, mut ram) = machine(&[0x66, 0xEA, 0x00, 0x00, 0x01, 0x00, 0x00, 0x20]);
    let before = state;
    assert_eq!(emulate(&mut state, &mut ram), Outcome::Exception { vector: vector::GP, error_code: None });
    assert_eq!(state, before);
}

#[test]
fn far_call_after_pe_pushes_the_return_address() {
    // CALL 0x0008:0x0100 with SP=0xFFF0: CS then IP (0x105) pushed.
    let (mut state, mut ram) = machine(&[0x9A, 0x00, 0x01, 0x08, 0x00]);
    state.cr0 = 0x11;
    assert_eq!(emulate(&mut state, &mut ram), Outcome::EnterProtectedMode { cs: 8, eip: 0x100 });
    assert_eq!(state.gpr[RealModeState::ESP], 0xFFEC);
    assert_eq!(word_at(&ram, 0x3FFEE), CODE_CS);
    assert_eq!(word_at(&ram, 0x3FFEC), 0x0105);
    // 66 9A: 32-bit pushes.
    let (mut state, mut ram) = machine(&[0x66, 0x9A, 0x78, 0x56, 0x34, 0x12, 0x10, 0x00]);
    state.cr0 = 0x11;
    assert_eq!(emulate(&mut state, &mut ram), Outcome::EnterProtectedMode { cs: 0x10, eip: 0x1234_5678 });
    assert_eq!(state.gpr[RealModeState::ESP], 0xFFE8);
    assert_eq!(&ram.0[0x3FFE8..0x3FFF0], &[0x08, 0x01, 0, 0, 0x00, 0x10, 0, 0]);
}

/// IVT entry 0x21 -> 0F00:1234, entry 3 -> 0E00:0333, entry 4 -> 0D00:0444,
/// entry 13 -> 0C00:0DDD.
fn with_ivt(code: &[u8]) -> (RealModeState, Ram) {
    let (state, mut ram) = machine(code);
    for (v, ip, cs) in [(0x21u32, 0x1234u16, 0x0F00u16), (3, 0x0333, 0x0E00), (4, 0x0444, 0x0D00), (13, 0x0DDD, 0x0C00)] {
        let at = v as usize * 4;
        ram.0[at..at + 2].copy_from_slice(&ip.to_le_bytes());
        ram.0[at + 2..at + 4].copy_from_slice(&cs.to_le_bytes());
    }
    (state, ram)
}

#[test_case(&[0xCD, 0x21], 0, 0x0F00, 0x1234 ; "int 21h")]
#[test_case(&[0xCC], 0, 0x0E00, 0x0333 ; "int3")]
#[test_case(&[0xCD, 0x03], 0, 0x0E00, 0x0333 ; "int 3 imm8 form")]
#[test_case(&[0xCE], flags::OF, 0x0D00, 0x0444 ; "into with of set")]
fn software_interrupts_go_through_the_ivt(code: &[u8], extra: u32, cs: u16, ip: u32) {
    let (mut state, mut ram) = with_ivt(code);
    state.eflags = flags::FIXED1 | flags::IF | flags::TF | flags::CF | flags::AC | extra;
    assert_eq!(emulate(&mut state, &mut ram), Outcome::Continue);
    assert_eq!((state.seg[sreg::CS], state.eip), (cs, ip));
    assert_eq!(state.eflags, flags::FIXED1 | flags::CF | extra, "IF, TF, AC cleared");
    assert_eq!(state.gpr[RealModeState::ESP], 0xFFEA);
    assert_eq!(word_at(&ram, 0x3FFEE), (flags::FIXED1 | flags::IF | flags::TF | flags::CF | extra) as u16);
    assert_eq!(word_at(&ram, 0x3FFEC), CODE_CS);
    assert_eq!(u32::from(word_at(&ram, 0x3FFEA)), CODE_IP + code.len() as u32);
}

#[test]
fn into_without_overflow_falls_through() {
    let (mut state, mut ram) = with_ivt(&[0xCE]);
    assert_eq!(emulate(&mut state, &mut ram), Outcome::Continue);
    assert_eq!((state.seg[sreg::CS], state.eip, state.gpr[RealModeState::ESP]), (CODE_CS, CODE_IP + 1, 0xFFF0));
}

#[test]
fn interrupt_stack_wraps_at_64k_and_deliver_interrupt_returns_to_eip() {
    let (mut state, mut ram) = with_ivt(&[]);
    state.gpr[RealModeState::ESP] = 0xABCD_0002;
    assert_eq!(deliver_interrupt(&mut state, &mut ram, 0, 13), Outcome::Continue);
    assert_eq!(state.gpr[RealModeState::ESP], 0xABCD_FFFC, "SP wraps, the high half of ESP is kept");
    assert_eq!(word_at(&ram, 0x30000), (flags::FIXED1 | flags::IF) as u16);
    assert_eq!(word_at(&ram, 0x3FFFE), CODE_CS);
    assert_eq!(u32::from(word_at(&ram, 0x3FFFC)), CODE_IP, "a fault returns to the faulting instruction");
    assert_eq!((state.seg[sreg::CS], state.eip), (0x0C00, 0x0DDD));
}

#[test]
fn interrupt_with_stack_outside_ram_is_unsupported() {
    let (mut state, mut ram) = with_ivt(&[0xCD, 0x21]);
    ram.0.truncate(0x20000); // SS = 0x3000 is now outside RAM.
    let before = state;
    let o = emulate(&mut state, &mut ram);
    assert!(matches!(o, Outcome::Unsupported { what: "stack outside guest RAM", .. }), "{o:?}");
    assert_eq!(state, before);
}

// Invalid encodings and protected-mode-only instructions are #UD in real
// mode: UD2 0F 0B, UD0 0F FF /r, LOCK HLT F0 F4, LLDT ax 0F 00 D0, LTR ax
// 0F 00 D8, SLDT ax 0F 00 C0, VERR ax 0F 00 E0, LAR ax,ax 0F 02 C0, LSL
// 0F 03 C0, ARPL ax,ax 63 C0, SWAPGS 0F 01 F8 (64-bit only), the undefined
// 0F 04.
#[test_case(&[0x0F, 0x0B] ; "ud2")]
#[test_case(&[0x0F, 0xFF, 0xC0] ; "ud0")]
#[test_case(&[0xF0, 0xF4] ; "lock hlt")]
#[test_case(&[0xF0, 0x0F, 0x01, 0x17] ; "lock lgdt")]
#[test_case(&[0x0F, 0x00, 0xD0] ; "lldt")]
#[test_case(&[0x0F, 0x00, 0xD8] ; "ltr")]
#[test_case(&[0x0F, 0x00, 0xC0] ; "sldt")]
#[test_case(&[0x0F, 0x00, 0xE0] ; "verr")]
#[test_case(&[0x0F, 0x02, 0xC0] ; "lar")]
#[test_case(&[0x0F, 0x03, 0xC0] ; "lsl")]
#[test_case(&[0x63, 0xC0] ; "arpl")]
#[test_case(&[0x0F, 0x01, 0xF8] ; "swapgs")]
#[test_case(&[0x0F, 0x04] ; "undefined 0f 04")]
fn invalid_or_protected_mode_only_is_ud(code: &[u8]) {
    let (mut state, mut ram) = machine(code);
    let before = state;
    assert_eq!(emulate(&mut state, &mut ram), Outcome::Exception { vector: vector::UD, error_code: None });
    assert_eq!(state, before);
}

// Valid instructions that are not emulated: NOP 90, MOV eax,dr0 0F 21 C0,
// XGETBV 0F 01 D0, CPUID 0F A2, MOV ax,bx 89 D8, WBINVD 0F 09.
#[test_case(&[0x90] ; "nop")]
#[test_case(&[0x0F, 0x21, 0xC0] ; "mov from dr0")]
#[test_case(&[0x0F, 0x01, 0xD0] ; "xgetbv")]
#[test_case(&[0x0F, 0xA2] ; "cpuid")]
#[test_case(&[0x89, 0xD8] ; "mov ax bx")]
#[test_case(&[0x0F, 0x09] ; "wbinvd")]
fn valid_but_not_emulated_is_unsupported(code: &[u8]) {
    let (mut state, mut ram) = machine(code);
    let before = state;
    let o = emulate(&mut state, &mut ram);
    let Outcome::Unsupported { bytes, len, cs, ip, .. } = o else { panic!("{o:?}") };
    assert_eq!((&bytes[..usize::from(len)], cs, ip), (code, CODE_CS, CODE_IP as u16));
    assert_eq!(state, before);
}

#[test]
fn more_than_15_bytes_is_gp() {
    // Fourteen 0x66 prefixes and a 2-byte MOV CR0 make 17 bytes.
    let mut code = vec![0x66; 14];
    code.extend_from_slice(&[0x0F, 0x22, 0xC0]);
    let (mut state, mut ram) = machine(&code);
    let o = emulate(&mut state, &mut ram);
    assert_eq!(o, Outcome::Exception { vector: vector::GP, error_code: None });
    assert_eq!(state.eip, CODE_IP);
}

#[test]
fn fetch_outside_ram_is_unsupported() {
    let (mut state, mut ram) = machine(&[]);
    state.seg[sreg::CS] = 0xF000; // Linear 0xF0100, RAM ends at 0x20000.
    ram.0.truncate(0x20000);
    let o = emulate(&mut state, &mut ram);
    assert_eq!(
        o,
        Outcome::Unsupported { bytes: [0; 15], len: 0, cs: 0xF000, ip: CODE_IP as u16, what: "instruction fetch outside guest RAM" }
    );
}

#[test]
fn instruction_running_off_the_end_of_ram_is_unsupported() {
    // LGDT 0F 01 17 with RAM ending after 0F 01.
    let (mut state, mut ram) = machine(&[0x0F, 0x01, 0x17]);
    ram.0.truncate(0x10102);
    let o = emulate(&mut state, &mut ram);
    let Outcome::Unsupported { bytes, len, what, .. } = o else { panic!("{o:?}") };
    assert_eq!((&bytes[..usize::from(len)], what), (&[0x0F, 0x01][..], "instruction fetch outside guest RAM"));
    // A one-byte HLT as the last byte of RAM still runs.
    let (mut state, mut ram) = machine(&[0xF4]);
    ram.0.truncate(0x10101);
    assert_eq!(emulate(&mut state, &mut ram), Outcome::Halt);
}

#[test_case(0xFFFF, &[0xF4], Outcome::Halt ; "hlt at ffff")]
#[test_case(0xFFFE, &[0xE4, 0x60], Outcome::PortIo { port: 0x60, size: 1, is_in: true, value: 0 } ; "in at fffe")]
#[test_case(0xFFFB, &[0x0F, 0x01, 0x56, 0x00, 0xF4], Outcome::Exception { vector: 12, error_code: None } ; "bp operand at ffff straddles")]
fn ip_wraps_to_zero(ip: u32, code: &[u8], expect: Outcome) {
    let (mut state, mut ram) = machine(&[]);
    state.eip = ip;
    state.gpr[RealModeState::EBP] = 0xFFFF;
    place(&mut ram, &state, code);
    let o = emulate(&mut state, &mut ram);
    assert_eq!(o, expect);
    if !matches!(o, Outcome::Exception { .. }) {
        assert_eq!(state.eip, 0);
    }
}

#[test]
fn instruction_straddling_the_cs_limit_is_gp() {
    // E4 at CS:FFFF and its immediate at CS:0000: past the 64 KiB limit.
    let (mut state, mut ram) = machine(&[]);
    state.eip = 0xFFFF;
    place(&mut ram, &state, &[0xE4, 0x60]);
    assert_eq!(emulate(&mut state, &mut ram), Outcome::Exception { vector: vector::GP, error_code: None });
    // EIP above 0xFFFF is outside CS.
    state.eip = 0x1_0000;
    assert_eq!(emulate(&mut state, &mut ram), Outcome::Exception { vector: vector::GP, error_code: None });
}

#[test]
fn faults_after_pe_push_error_codes() {
    let (mut state, mut ram) = machine(&[0x0F, 0x01, 0x16, 0xFC, 0xFF]);
    state.cr0 = 0x11;
    assert_eq!(emulate(&mut state, &mut ram), Outcome::Exception { vector: vector::GP, error_code: Some(0) });
    // #UD never has one.
    let (mut state, mut ram) = machine(&[0x0F, 0x0B]);
    state.cr0 = 0x11;
    assert_eq!(emulate(&mut state, &mut ram), Outcome::Exception { vector: vector::UD, error_code: None });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Random bytes at a random CS:IP never panic the emulator; a fault or
    /// an unsupported instruction leaves the state untouched; anything else
    /// that keeps CS moves EIP forward by 1 to 15 bytes (mod 64 KiB).
    #[test]
    fn random_bytes_never_panic(
        code in proptest::collection::vec(any::<u8>(), 0..20),
        ip in any::<u16>(),
        gpr in any::<[u32; 8]>(),
        pe in any::<bool>(),
        of in any::<bool>(),
        small_ram in any::<bool>(),
    ) {
        check_random_instruction(&code, ip, gpr, pe, of, small_ram)?;
    }

    /// The same with the opcodes the emulator handles, behind random
    /// prefixes and followed by random ModR/M, SIB, displacement and
    /// immediate bytes.
    #[test]
    fn emulated_opcodes_with_random_operands_never_panic(
        prefixes in proptest::collection::vec(proptest::sample::select(PREFIXES.to_vec()), 0..4),
        head in proptest::sample::select(HEADS.to_vec()),
        tail in proptest::collection::vec(any::<u8>(), 0..12),
        ip in any::<u16>(),
        gpr in any::<[u32; 8]>(),
        pe in any::<bool>(),
        of in any::<bool>(),
        small_ram in any::<bool>(),
    ) {
        let code: Vec<u8> = prefixes.iter().copied().chain(head.iter().copied()).chain(tail).collect();
        check_random_instruction(&code, ip, gpr, pe, of, small_ram)?;
    }
}

/// Legacy prefixes (SDM Vol. 2A 2.1.1).
const PREFIXES: [u8; 11] = [0x66, 0x67, 0x26, 0x2E, 0x36, 0x3E, 0x64, 0x65, 0xF0, 0xF2, 0xF3];
/// Opcode bytes of the emulated instructions (and neighbours).
const HEADS: [&[u8]; 30] = [
    &[0x0F, 0x01], &[0x0F, 0x20], &[0x0F, 0x22], &[0x0F, 0x00], &[0x0F, 0x06], &[0x0F, 0x0B], &[0x0F, 0x21],
    &[0xF4], &[0xE4], &[0xE5], &[0xE6], &[0xE7], &[0xEC], &[0xED], &[0xEE], &[0xEF], &[0x6C], &[0x6F],
    &[0xCC], &[0xCD], &[0xCE], &[0xEA], &[0x9A], &[0xFF], &[0x9C], &[0x9D], &[0xCF], &[0xFA], &[0xFB], &[0x63],
];

/// Runs one instruction and checks the invariants of the property tests.
fn check_random_instruction(code: &[u8], ip: u16, gpr: [u32; 8], pe: bool, of: bool, small_ram: bool) -> Result<(), TestCaseError> {
    let (mut state, mut ram) = machine(&[]);
    state.eip = u32::from(ip);
    state.gpr = gpr;
    state.cr0 = if pe { 0x11 } else { 0x10 };
    if of {
        state.eflags |= flags::OF;
    }
    place(&mut ram, &state, code);
    if small_ram {
        ram.0.truncate(0x10000 + (usize::from(ip) + code.len()).min(0xFFFF));
    }
    let before = state;
    let o = emulate(&mut state, &mut ram);
    let delta = state.eip.wrapping_sub(before.eip) & 0xFFFF;
    match o {
        Outcome::Exception { .. } | Outcome::Unsupported { .. } => prop_assert_eq!(state, before),
        Outcome::EnterProtectedMode { .. } => prop_assert!(pe),
        Outcome::Continue if state.seg[sreg::CS] != before.seg[sreg::CS] => {}
        _ => {
            prop_assert!(state.eip <= 0xFFFF);
            prop_assert!((1..=15).contains(&delta), "EIP moved by {}", delta);
        }
    }
    if let Outcome::Unsupported { len, .. } = o {
        prop_assert!(len <= 15);
    }
    Ok(())
}
