//! Host tests of the emulated instructions with hand-assembled bytes: LGDT
//! and LIDT through every 16-bit addressing form, prefixes and overrides,
//! MOV to/from CRn, LMSW, SMSW, CLTS, HLT, IN and OUT.
//!
//! Encodings (SDM Vol. 2A 2.1 and Table 2-1): ModR/M = mod<<6 | reg<<3 |
//! rm; 16-bit r/m: 0 [BX+SI], 1 [BX+DI], 2 [BP+SI], 3 [BP+DI], 4 [SI],
//! 5 [DI], 6 [BP] (mod 00: [disp16]), 7 [BX]; mod 01 adds disp8, 10 disp16.
//! LGDT = 0F 01 /2, LIDT = 0F 01 /3, SMSW = 0F 01 /4, LMSW = 0F 01 /6,
//! MOV CRn,r32 = 0F 22 /r (reg = n), MOV r32,CRn = 0F 20 /r, CLTS = 0F 06.

use super::*;
use test_case::test_case;

/// Guest RAM for the tests: `size` bytes at linear 0.
pub(super) struct Ram(pub Vec<u8>);

impl RealModeMemory for Ram {
    fn read(&self, linear: u32, buf: &mut [u8]) -> bool {
        let start = linear as usize;
        match self.0.get(start..start + buf.len()) {
            Some(src) => {
                buf.copy_from_slice(src);
                true
            }
            None => false,
        }
    }
    fn write(&mut self, linear: u32, data: &[u8]) -> bool {
        let start = linear as usize;
        match self.0.get_mut(start..start + data.len()) {
            Some(dst) => {
                dst.copy_from_slice(data);
                true
            }
            None => false,
        }
    }
}

/// Code runs at CS=0x1000, IP=0x0100 (linear 0x10100).
pub(super) const CODE_CS: u16 = 0x1000;
/// IP of the instruction.
pub(super) const CODE_IP: u32 = 0x0100;

/// A guest with distinct segments and base/index registers, 1 MiB + 64 KiB
/// of RAM, and `code` at CS:IP.
pub(super) fn machine(code: &[u8]) -> (RealModeState, Ram) {
    let mut state = RealModeState {
        // EAX ECX EDX EBX ESP EBP ESI EDI
        gpr: [0x1111_2222, 0x0000_0004, 0x0000_0060, 0x0000_0100, 0x0000_FFF0, 0x0000_0200, 0x0000_0010, 0x0000_0020],
        eip: CODE_IP,
        eflags: flags::FIXED1 | flags::IF,
        // ES CS SS DS FS GS
        seg: [0x4000, CODE_CS, 0x3000, 0x2000, 0x5000, 0x6000],
        cr0: 0x10,
    };
    state.gpr[RealModeState::ESP] = 0xFFF0;
    let mut ram = Ram(vec![0; 0x11_0000]);
    place(&mut ram, &state, code);
    (state, ram)
}

/// Writes `code` at the state's CS:IP (offsets wrapping at 64 KiB).
pub(super) fn place(ram: &mut Ram, state: &RealModeState, code: &[u8]) {
    for (i, b) in code.iter().enumerate() {
        let at = (u32::from(state.seg[sreg::CS]) << 4) + ((state.eip + i as u32) & 0xFFFF);
        ram.0[at as usize] = *b;
    }
}

/// The pseudo-descriptor the LGDT/LIDT tests load: limit 0xABCD, base
/// 0x12345678.
const PSEUDO: [u8; 6] = [0xCD, 0xAB, 0x78, 0x56, 0x34, 0x12];

fn run_lgdt(code: &[u8], at: u32, tweak: impl FnOnce(&mut RealModeState)) -> (Outcome, RealModeState) {
    let (mut state, mut ram) = machine(code);
    tweak(&mut state);
    ram.0[at as usize..at as usize + 6].copy_from_slice(&PSEUDO);
    let o = emulate(&mut state, &mut ram);
    (o, state)
}

// Registers: BX=0x100, BP=0x200, SI=0x10, DI=0x20; DS=0x2000, SS=0x3000.
#[test_case(&[0x0F, 0x01, 0x10], 0x20110 ; "bx_si")]
#[test_case(&[0x0F, 0x01, 0x11], 0x20120 ; "bx_di")]
#[test_case(&[0x0F, 0x01, 0x12], 0x30210 ; "bp_si defaults to SS")]
#[test_case(&[0x0F, 0x01, 0x13], 0x30220 ; "bp_di defaults to SS")]
#[test_case(&[0x0F, 0x01, 0x14], 0x20010 ; "si")]
#[test_case(&[0x0F, 0x01, 0x15], 0x20020 ; "di")]
#[test_case(&[0x0F, 0x01, 0x16, 0x34, 0x12], 0x21234 ; "disp16")]
#[test_case(&[0x0F, 0x01, 0x17], 0x20100 ; "bx")]
#[test_case(&[0x0F, 0x01, 0x50, 0x08], 0x20118 ; "bx_si_disp8")]
#[test_case(&[0x0F, 0x01, 0x51, 0x08], 0x20128 ; "bx_di_disp8")]
#[test_case(&[0x0F, 0x01, 0x52, 0xF8], 0x30208 ; "bp_si_negative_disp8")]
#[test_case(&[0x0F, 0x01, 0x53, 0x02], 0x30222 ; "bp_di_disp8")]
#[test_case(&[0x0F, 0x01, 0x54, 0x01], 0x20011 ; "si_disp8")]
#[test_case(&[0x0F, 0x01, 0x55, 0xFF], 0x2001F ; "di_negative_disp8")]
#[test_case(&[0x0F, 0x01, 0x56, 0x04], 0x30204 ; "bp_disp8")]
#[test_case(&[0x0F, 0x01, 0x57, 0xFF], 0x200FF ; "bx_negative_disp8")]
#[test_case(&[0x0F, 0x01, 0x90, 0x00, 0x10], 0x21110 ; "bx_si_disp16")]
#[test_case(&[0x0F, 0x01, 0x92, 0x00, 0x10], 0x31210 ; "bp_si_disp16")]
#[test_case(&[0x0F, 0x01, 0x96, 0x00, 0xF0], 0x3F200 ; "bp_disp16")]
#[test_case(&[0x0F, 0x01, 0x97, 0x00, 0xFF], 0x20000 ; "bx_disp16 wraps at 64 KiB")]
#[test_case(&[0x0F, 0x01, 0x57, 0xF0], 0x200F0 ; "bx_disp8_f0")]
#[test_case(&[0x26, 0x0F, 0x01, 0x17], 0x40100 ; "es override")]
#[test_case(&[0x2E, 0x0F, 0x01, 0x57, 0x10], 0x10110 ; "cs override")]
#[test_case(&[0x36, 0x0F, 0x01, 0x17], 0x30100 ; "ss override")]
#[test_case(&[0x3E, 0x0F, 0x01, 0x56, 0x04], 0x20204 ; "ds override on bp")]
#[test_case(&[0x64, 0x0F, 0x01, 0x17], 0x50100 ; "fs override")]
#[test_case(&[0x65, 0x0F, 0x01, 0x17], 0x60100 ; "gs override")]
fn lgdt_16bit_addressing_forms(code: &[u8], at: u32) {
    let (o, state) = run_lgdt(code, at, |_| {});
    assert_eq!(o, Outcome::LoadDescriptorTable { which: Dtr::Gdt, base: 0x0034_5678, limit: 0xABCD });
    assert_eq!(state.eip, CODE_IP + code.len() as u32);
}

// LIDT = 0F 01 /3: ModR/M 0x1F = mod 00, reg 3, rm 7 ([BX]).
#[test]
fn lidt_loads_the_idtr() {
    let (o, state) = run_lgdt(&[0x0F, 0x01, 0x1F], 0x20100, |_| {});
    assert_eq!(o, Outcome::LoadDescriptorTable { which: Dtr::Idt, base: 0x0034_5678, limit: 0xABCD });
    assert_eq!(state.eip, CODE_IP + 3);
}

// With 0x66 the whole 32-bit base is loaded; without it bits 31:24 are
// zero (SDM Vol. 2A LGDT: "If the operand-size attribute is 16 bits, a
// 16-bit limit and a 24-bit base address are loaded").
#[test_case(&[0x66, 0x0F, 0x01, 0x17], Dtr::Gdt ; "lgdt o32")]
#[test_case(&[0x66, 0x0F, 0x01, 0x1F], Dtr::Idt ; "lidt o32")]
#[test_case(&[0x66, 0x26, 0x0F, 0x01, 0x17], Dtr::Gdt ; "lgdt o32 with es override")]
fn lgdt_32bit_operand_size_loads_32bit_base(code: &[u8], which: Dtr) {
    let at = if code.contains(&0x26) { 0x40100 } else { 0x20100 };
    let (o, state) = run_lgdt(code, at, |_| {});
    assert_eq!(o, Outcome::LoadDescriptorTable { which, base: 0x1234_5678, limit: 0xABCD });
    assert_eq!(state.eip, CODE_IP + code.len() as u32);
}

// 0x67 selects 32-bit addressing (Table 2-2): ModR/M 0x13 = [EBX];
// 0x14 0x24 = [ESP] via SIB (base ESP, no index: SS); 0x15 d32 = [disp32];
// 0x54 0x8E 0x08 = [ESI+ECX*4+8] (SIB scale 2, index ECX, base ESI).
#[test_case(&[0x67, 0x0F, 0x01, 0x13], 0x20100 ; "ebx")]
#[test_case(&[0x67, 0x0F, 0x01, 0x14, 0x24], 0x3FFF0 - 0x10 ; "esp uses ss")]
#[test_case(&[0x67, 0x0F, 0x01, 0x15, 0x00, 0x03, 0x00, 0x00], 0x20300 ; "disp32")]
#[test_case(&[0x67, 0x0F, 0x01, 0x54, 0x8E, 0x08], 0x20028 ; "sib esi ecx4 disp8")]
#[test_case(&[0x66, 0x67, 0x26, 0x0F, 0x01, 0x13], 0x40100 ; "o32 a32 es")]
fn lgdt_32bit_addressing(code: &[u8], at: u32) {
    let (o, _) = run_lgdt(code, at, |s| s.gpr[RealModeState::ESP] = 0xFFE0);
    let base = if code[0] == 0x66 { 0x1234_5678 } else { 0x0034_5678 };
    assert_eq!(o, Outcome::LoadDescriptorTable { which: Dtr::Gdt, base, limit: 0xABCD });
}

// Real-address mode: an operand past offset 0xFFFF is #GP (#SS through SS),
// with no error code pushed (SDM Vol. 2A LGDT "Real-Address Mode
// Exceptions", Vol. 3A 20.1.4).
#[test_case(&[0x0F, 0x01, 0x16, 0xFC, 0xFF], |_| {}, vector::GP ; "disp16 straddles the limit")]
#[test_case(&[0x0F, 0x01, 0x56, 0x00], |s| s.gpr[RealModeState::EBP] = 0xFFFB, vector::SS ; "bp straddles the ss limit")]
#[test_case(&[0x67, 0x0F, 0x01, 0x13], |s| s.gpr[RealModeState::EBX] = 0x1_0000, vector::GP ; "32-bit address above the limit")]
#[test_case(&[0x67, 0x0F, 0x01, 0x14, 0x24], |s| s.gpr[RealModeState::ESP] = 0x1_0000, vector::SS ; "32-bit esp above the ss limit")]
fn lgdt_limit_faults(code: &[u8], tweak: fn(&mut RealModeState), v: u8) {
    let (mut state, mut ram) = machine(code);
    tweak(&mut state);
    let before = state;
    assert_eq!(emulate(&mut state, &mut ram), Outcome::Exception { vector: v, error_code: None });
    assert_eq!(state, before);
}

#[test]
fn lidt_register_operand_is_not_a_load() {
    // 0F 01 with mod=11 and reg=3 (ModR/M D8-DF) is not LIDT but AMD SVM
    // instructions (VMRUN, VMMCALL, ..., INVLPGA): #UD or Unsupported,
    // never a panic or a descriptor-table load.
    for rm in 0..8u8 {
        let (mut state, mut ram) = machine(&[0x0F, 0x01, 0xD8 | rm]);
        let o = emulate(&mut state, &mut ram);
        assert!(matches!(o, Outcome::Exception { vector: 6, .. } | Outcome::Unsupported { .. }), "{rm}: {o:?}");
    }
}

#[test]
fn lgdt_operand_outside_ram_is_unsupported() {
    let (mut state, mut ram) = machine(&[0x0F, 0x01, 0x17]);
    state.seg[sreg::DS] = 0xFFFF; // DS:BX = 0x10FF0 + 0x100, past the RAM end.
    ram.0.truncate(0x10200);
    assert!(matches!(emulate(&mut state, &mut ram), Outcome::Unsupported { what, .. } if what.contains("outside guest RAM")));
}

// MOV CR0, r32 = 0F 22 /r with reg = 0: ModR/M 0xC0 | r.
#[test_case(0 ; "eax")]
#[test_case(1 ; "ecx")]
#[test_case(2 ; "edx")]
#[test_case(3 ; "ebx")]
#[test_case(4 ; "esp")]
#[test_case(5 ; "ebp")]
#[test_case(6 ; "esi")]
#[test_case(7 ; "edi")]
fn mov_to_cr0_from_each_gpr(r: u8) {
    let (mut state, mut ram) = machine(&[0x0F, 0x22, 0xC0 | r]);
    for (i, g) in state.gpr.iter_mut().enumerate() {
        *g = 0x6000_0010 + i as u32;
    }
    state.gpr[usize::from(r)] = 0x8000_0011;
    assert_eq!(emulate(&mut state, &mut ram), Outcome::WriteCr { cr: 0, value: 0x8000_0011 });
    assert_eq!(state.eip, CODE_IP + 3);
}

// MOV r32, CR0 = 0F 20 /r: ModR/M 0xC0 | r.
#[test_case(0 ; "eax")]
#[test_case(3 ; "ebx")]
#[test_case(4 ; "esp")]
#[test_case(7 ; "edi")]
fn mov_from_cr0_to_each_gpr(r: u8) {
    let (mut state, mut ram) = machine(&[0x0F, 0x20, 0xC0 | r]);
    assert_eq!(emulate(&mut state, &mut ram), Outcome::ReadCr { cr: 0, gpr: r });
    assert_eq!(state.eip, CODE_IP + 3);
    complete_read_cr(&mut state, r, 0x6000_0011);
    assert_eq!(state.gpr[usize::from(r)], 0x6000_0011);
}

// 0F 22 D0|r = MOV CR2; D8|r = CR3; E0|r = CR4. 0F 20 likewise.
#[test_case(&[0x0F, 0x22, 0xD1], Outcome::WriteCr { cr: 2, value: 4 } ; "mov cr2 ecx")]
#[test_case(&[0x0F, 0x22, 0xDB], Outcome::WriteCr { cr: 3, value: 0x100 } ; "mov cr3 ebx")]
#[test_case(&[0x0F, 0x22, 0xE2], Outcome::WriteCr { cr: 4, value: 0x60 } ; "mov cr4 edx")]
#[test_case(&[0x0F, 0x20, 0xD6], Outcome::ReadCr { cr: 2, gpr: 6 } ; "mov esi cr2")]
#[test_case(&[0x0F, 0x20, 0xDF], Outcome::ReadCr { cr: 3, gpr: 7 } ; "mov edi cr3")]
#[test_case(&[0x0F, 0x20, 0xE0], Outcome::ReadCr { cr: 4, gpr: 0 } ; "mov eax cr4")]
#[test_case(&[0x66, 0x0F, 0x22, 0xC3], Outcome::WriteCr { cr: 0, value: 0x100 } ; "o32 prefix changes nothing")]
#[test_case(&[0x0F, 0x22, 0x03], Outcome::WriteCr { cr: 0, value: 0x100 } ; "mod bits are ignored")]
fn mov_cr_forms(code: &[u8], expect: Outcome) {
    let (mut state, mut ram) = machine(code);
    assert_eq!(emulate(&mut state, &mut ram), expect);
    assert_eq!(state.eip, CODE_IP + code.len() as u32);
}

// CR1 (0F 22 C8), CR5 (E8), CR6 (F0), CR7 (F8) are #UD; so is LOCK MOV CR0
// (CR8 on AMD only, and CR8 does not exist outside 64-bit mode).
#[test_case(&[0x0F, 0x22, 0xC8] ; "cr1")]
#[test_case(&[0x0F, 0x22, 0xE8] ; "cr5")]
#[test_case(&[0x0F, 0x20, 0xF0] ; "from cr6")]
#[test_case(&[0x0F, 0x22, 0xF8] ; "cr7")]
#[test_case(&[0xF0, 0x0F, 0x22, 0xC0] ; "lock cr0 is cr8")]
fn mov_cr_reserved_registers_are_ud(code: &[u8]) {
    let (mut state, mut ram) = machine(code);
    assert_eq!(emulate(&mut state, &mut ram), Outcome::Exception { vector: vector::UD, error_code: None });
    assert_eq!(state.eip, CODE_IP);
}

// LMSW ax = 0F 01 F0; LMSW [0x0500] = 0F 01 36 00 05. It loads CR0[3:0]
// but never clears PE (SDM Vol. 2A LMSW).
#[test_case(&[0x0F, 0x01, 0xF0], 0x11, 0x0000, 0x11 ; "cannot clear pe")]
#[test_case(&[0x0F, 0x01, 0xF0], 0x10, 0x000F, 0x1F ; "sets pe mp em ts")]
#[test_case(&[0x0F, 0x01, 0xF0], 0x1B, 0xFFF0, 0x11 ; "clears mp em ts keeps pe ignores high bits")]
#[test_case(&[0x0F, 0x01, 0xF3], 0x10, 0x0001, 0x11 ; "from bx")]
#[test_case(&[0x0F, 0x01, 0x36, 0x00, 0x05], 0x8000_0010, 0x0009, 0x8000_0019 ; "from memory keeps pg")]
#[test_case(&[0x66, 0x0F, 0x01, 0xF0], 0x11, 0x0000, 0x11 ; "o32 form")]
fn lmsw(code: &[u8], cr0: u32, src: u16, expect: u32) {
    let (mut state, mut ram) = machine(code);
    state.cr0 = cr0;
    state.gpr[0] = u32::from(src);
    state.gpr[3] = u32::from(src);
    ram.0[0x20500..0x20502].copy_from_slice(&src.to_le_bytes());
    assert_eq!(emulate(&mut state, &mut ram), Outcome::WriteCr { cr: 0, value: expect });
    assert_eq!(state.eip, CODE_IP + code.len() as u32);
}

// SMSW ax = 0F 01 E0; SMSW eax = 66 0F 01 E0; SMSW [0x0500] = 0F 01 26 00 05.
#[test]
fn smsw_register_and_memory() {
    let (mut state, mut ram) = machine(&[0x0F, 0x01, 0xE0]);
    state.cr0 = 0x8001_0033;
    assert_eq!(emulate(&mut state, &mut ram), Outcome::Continue);
    assert_eq!(state.gpr[0], 0x1111_0033);
    assert_eq!(state.eip, CODE_IP + 3);

    let (mut state, mut ram) = machine(&[0x66, 0x0F, 0x01, 0xE0]);
    state.cr0 = 0x8001_0033;
    assert_eq!(emulate(&mut state, &mut ram), Outcome::Continue);
    assert_eq!(state.gpr[0], 0x8001_0033);

    let (mut state, mut ram) = machine(&[0x0F, 0x01, 0x26, 0x00, 0x05]);
    state.cr0 = 0x8001_0033;
    assert_eq!(emulate(&mut state, &mut ram), Outcome::Continue);
    assert_eq!(&ram.0[0x20500..0x20503], &[0x33, 0x00, 0x00]);
    assert_eq!(state.eip, CODE_IP + 5);
}

#[test]
fn clts_clears_ts_and_hlt_halts() {
    // CLTS = 0F 06.
    let (mut state, mut ram) = machine(&[0x0F, 0x06]);
    state.cr0 = 0x19;
    assert_eq!(emulate(&mut state, &mut ram), Outcome::WriteCr { cr: 0, value: 0x11 });
    assert_eq!(state.eip, CODE_IP + 2);
    // HLT = F4: EIP moves past it (an interrupt resumes at the next one).
    let (mut state, mut ram) = machine(&[0xF4]);
    assert_eq!(emulate(&mut state, &mut ram), Outcome::Halt);
    assert_eq!(state.eip, CODE_IP + 1);
}

// IN: E4 ib (AL), E5 ib (AX / EAX with 66), EC (AL,DX), ED (AX/EAX,DX).
// OUT: E6 ib, E7 ib, EE, EF. DX = 0x0060 + 0x3F00 below; EAX = 0x11112222.
#[test_case(&[0xE4, 0x71], 0x71, 1, true, 0 ; "in al imm8")]
#[test_case(&[0xE5, 0x71], 0x71, 2, true, 0 ; "in ax imm8")]
#[test_case(&[0x66, 0xE5, 0x71], 0x71, 4, true, 0 ; "in eax imm8")]
#[test_case(&[0xEC], 0x3F60, 1, true, 0 ; "in al dx")]
#[test_case(&[0xED], 0x3F60, 2, true, 0 ; "in ax dx")]
#[test_case(&[0x66, 0xED], 0x3F60, 4, true, 0 ; "in eax dx")]
#[test_case(&[0xE6, 0x80], 0x80, 1, false, 0x22 ; "out imm8 al")]
#[test_case(&[0xE7, 0xF4], 0xF4, 2, false, 0x2222 ; "out imm8 ax")]
#[test_case(&[0x66, 0xE7, 0xF4], 0xF4, 4, false, 0x1111_2222 ; "out imm8 eax")]
#[test_case(&[0xEE], 0x3F60, 1, false, 0x22 ; "out dx al")]
#[test_case(&[0xEF], 0x3F60, 2, false, 0x2222 ; "out dx ax")]
#[test_case(&[0x66, 0xEF], 0x3F60, 4, false, 0x1111_2222 ; "out dx eax")]
#[test_case(&[0x2E, 0xEE], 0x3F60, 1, false, 0x22 ; "segment prefix ignored")]
fn port_io(code: &[u8], port: u16, size: u8, is_in: bool, value: u32) {
    let (mut state, mut ram) = machine(code);
    state.gpr[RealModeState::EDX] = 0xABCD_3F60;
    assert_eq!(emulate(&mut state, &mut ram), Outcome::PortIo { port, size, is_in, value });
    assert_eq!(state.eip, CODE_IP + code.len() as u32);
}

#[test_case(1, 0x1111_22AB ; "byte keeps the rest of eax")]
#[test_case(2, 0x1111_89AB ; "word keeps the high half")]
#[test_case(4, 0x4567_89AB ; "dword replaces eax")]
fn complete_in_sizes(size: u8, expect: u32) {
    let (mut state, _) = machine(&[]);
    complete_in(&mut state, size, 0x4567_89AB);
    assert_eq!(state.gpr[0], expect);
}

// INSB 6C, INSW 6D, OUTSB 6E, OUTSW 6F, REP OUTSB F3 6E, OUTSD 66 6F.
#[test_case(&[0x6C] ; "insb")]
#[test_case(&[0x6D] ; "insw")]
#[test_case(&[0x6E] ; "outsb")]
#[test_case(&[0x66, 0x6F] ; "outsd")]
#[test_case(&[0xF3, 0x6E] ; "rep outsb")]
fn string_io_is_unsupported(code: &[u8]) {
    let (mut state, mut ram) = machine(code);
    let o = emulate(&mut state, &mut ram);
    let Outcome::Unsupported { bytes, len, cs, ip, what } = o else { panic!("{o:?}") };
    assert_eq!(&bytes[..usize::from(len)], code);
    assert_eq!((cs, ip), (CODE_CS, CODE_IP as u16));
    assert!(what.contains("string I/O"));
    assert_eq!(state.eip, CODE_IP);
}
