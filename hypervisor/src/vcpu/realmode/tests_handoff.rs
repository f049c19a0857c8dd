//! Host tests of the VMCS state helpers: the vm86 entry state, RFLAGS
//! round trips, GDT descriptors in VMCS access-rights format, the selector
//! checks, and the hand-off to protected mode (checked against the VM-entry
//! rules of `vmx::guest_state` plus the SS/data-segment DPL rules of SDM
//! Vol. 3C 27.3.1.2 that module does not cover).

use super::tests_instr::{machine, CODE_IP};
use super::*;
use crate::vmx::guest_state::{check, GuestStateSnapshot, Segment};
use proptest::prelude::*;
use test_case::test_case;

/// A flat 4 GiB 32-bit code segment, DPL 0, not yet accessed (type 0xA).
const FLAT_CODE32: u64 = 0x00CF_9A00_0000_FFFF;
/// A 16-bit code segment at 0x12345, limit 0xFFFF, accessed (type 0xB).
const CODE16: u64 = 0x0000_9B01_2345_FFFF;

#[test]
fn vm86_entry_state_matches_what_bochs_accepts() {
    // FACTS.md: RFLAGS 0xA0202 (VM|VIF|IF|1), base S<<4, limit 0xFFFF, AR 0xF3.
    let (state, _) = machine(&[]);
    let e = vm86_entry_state(&state, false);
    assert_eq!(e.rflags, 0xA0202);
    assert_eq!(e.rip, u64::from(CODE_IP));
    for (i, seg) in e.segments.iter().enumerate() {
        let sel = state.seg[i];
        assert_eq!(*seg, Segment { selector: sel, base: u64::from(sel) << 4, limit: 0xFFFF, ar: 0xF3 });
    }
    // The guest's CLI leaves hardware IF on and VIF off; VIP on request.
    let cli = RealModeState { eflags: 0x2 | flags::CF | flags::OF, ..state };
    assert_eq!(vm86_entry_state(&cli, false).rflags, 0x20202 | 0x801);
    assert_eq!(vm86_entry_state(&cli, true).rflags, 0x120202 | 0x801);
    // IOPL from the guest's view never reaches vm86 (it must stay 0).
    let iopl = RealModeState { eflags: 0x3202, ..state };
    assert_eq!(vm86_entry_state(&iopl, false).rflags, 0xA0202);
}

#[test]
fn guest_eflags_from_vm86_takes_if_from_vif() {
    assert_eq!(guest_eflags_from_vm86(0xA0202), 0x202);
    assert_eq!(guest_eflags_from_vm86(0x20202), 0x002);
    // Hardware IF set but VIF clear: the guest has IF=0; VIP, VM and RF dropped.
    assert_eq!(guest_eflags_from_vm86(0x13_0ED7), 0x0CD7);
}

proptest! {
    /// Guest flags survive vm86 and back (IOPL, which vm86 cannot carry, aside).
    #[test]
    fn eflags_round_trip(bits in any::<u32>(), vip in any::<bool>()) {
        let guest = (bits & (0x0CD5 | flags::TF | flags::IF | flags::NT | flags::AC | flags::ID)) | flags::FIXED1;
        let (state, _) = machine(&[]);
        let e = vm86_entry_state(&RealModeState { eflags: guest, ..state }, vip);
        prop_assert_eq!(e.rflags & u64::from(flags::VM | flags::IF | flags::IOPL), u64::from(flags::VM | flags::IF));
        prop_assert_eq!(guest_eflags_from_vm86(e.rflags), guest);
    }
}

// SDM Vol. 3C Table 25-2: AR 7:0 = descriptor 47:40, AR 15:12 = 55:52.
#[test_case(FLAT_CODE32, 0, 0xFFFF_FFFF, 0xC09A ; "flat 32-bit code")]
#[test_case(CODE16, 0x12345, 0xFFFF, 0x9B ; "16-bit code")]
#[test_case(0x00CF_9200_0000_FFFF, 0, 0xFFFF_FFFF, 0xC092 ; "flat data")]
#[test_case(0xAB40_9300_0000_0FFF, 0xAB00_0000, 0x0FFF, 0x4093 ; "high base byte, byte granular")]
#[test_case(0x0080_9A00_0000_0000, 0, 0xFFF, 0x809A ; "G with limit 0")]
#[test_case(0x0010_F200_0000_0001, 0, 1, 0x10F2 ; "AVL and DPL 3")]
#[test_case(0x00A0_9B00_0000_FFFF, 0, 0x0FFF_FFFF, 0xA09B ; "L bit, 64-bit code")]
#[test_case(0x0000_8B00_1000_0067, 0x1000, 0x67, 0x8B ; "busy TSS")]
fn descriptor_decoding(desc: u64, base: u32, limit: u32, ar: u32) {
    assert_eq!((descriptor_base(desc), descriptor_limit(desc), descriptor_access_rights(desc)), (base, limit, ar));
}

#[test_case(0x0000, Err(0) ; "null")]
#[test_case(0x0003, Err(0) ; "null with rpl")]
#[test_case(0x000C, Err(0x0C) ; "ldt selector")]
#[test_case(0x0018, Err(0x18) ; "past the limit")]
#[test_case(0x0013, Ok(0x5010) ; "index 2 rpl 3")]
#[test_case(0x0008, Ok(0x5008) ; "index 1")]
fn gdt_selector_checks(selector: u16, expect: Result<u32, u32>) {
    let got = gdt_descriptor_address(0x5000, 0x17, selector);
    let expect = expect.map_err(|code| Outcome::Exception { vector: vector::GP, error_code: Some(code) });
    assert_eq!(got, expect);
}

/// The snapshot VM entry checks, with Bochs' Penryn fixed bits, the
/// hypervisor's busy TSS and an unusable LDTR (FACTS.md).
fn snapshot(segments: [Segment; 6], rip: u64, rflags: u64) -> GuestStateSnapshot {
    let mut all = [Segment::default(); 8];
    all[..6].copy_from_slice(&segments);
    all[6] = Segment { selector: 0, base: 0, limit: 0, ar: 0x1_0000 };
    all[7] = Segment { selector: 0x18, base: 0x1000, limit: 0x2067, ar: 0x8B };
    GuestStateSnapshot {
        cr0: 0x8000_0031,
        cr4: 0x2020,
        rflags,
        rip,
        segments: all,
        activity_state: 0,
        interruptibility: 0,
        link_pointer: u64::MAX,
        ia32e_mode_guest: false,
        unrestricted_guest: false,
        cr0_fixed: (0x8000_0021, 0xFFFF_FFFF),
        cr4_fixed: (0x2000, 0x3F_FFFF),
    }
}

/// The DPL rules of SDM Vol. 3C 27.3.1.2 that `guest_state::check` leaves
/// out (no unrestricted guest): SS.DPL = SS.RPL, DS/ES/FS/GS DPL >= RPL.
fn dpl_rules_hold(segments: &[Segment; 6]) -> bool {
    let dpl = |s: &Segment| (s.ar >> 5) & 3;
    let rpl = |s: &Segment| u32::from(s.selector & 3);
    let ss = &segments[sreg::SS];
    dpl(ss) == rpl(ss) && [sreg::ES, sreg::DS, sreg::FS, sreg::GS].iter().all(|&i| dpl(&segments[i]) >= rpl(&segments[i]))
}

#[test]
fn mov_cr0_then_far_jump_hands_off_to_protected_mode() {
    // MOV CR0, EAX (0F 22 C0) with PE, then JMP 0x0008:0x0200 (EA 00 02 08 00).
    let (mut state, mut ram) = machine(&[0x0F, 0x22, 0xC0, 0xEA, 0x00, 0x02, 0x08, 0x00]);
    state.gpr[0] = 0x11;
    let Outcome::WriteCr { cr: 0, value } = emulate(&mut state, &mut ram) else { panic!() };
    state.cr0 = value; // The caller's CR model accepted it.
    assert_eq!(emulate(&mut state, &mut ram), Outcome::EnterProtectedMode { cs: 8, eip: 0x200 });
    assert_eq!(gdt_descriptor_address(0x8000, 0x17, 8), Ok(0x8008));
    let entry = protected_mode_handoff(&state, FLAT_CODE32).unwrap();
    assert_eq!(entry.segments[sreg::CS], Segment { selector: 8, base: 0, limit: 0xFFFF_FFFF, ar: 0xC09B });
    assert!(entry.set_accessed && !entry.rpl_adjusted);
    assert_eq!(entry.rip, 0x200);
    assert_eq!(entry.rflags, 0x202);
    for i in [sreg::ES, sreg::SS, sreg::DS, sreg::FS, sreg::GS] {
        let sel = state.seg[i];
        assert_eq!(entry.segments[i], Segment { selector: sel, base: u64::from(sel) << 4, limit: 0xFFFF, ar: 0x93 });
    }
    assert_eq!(check(&snapshot(entry.segments, entry.rip, entry.rflags)), None);
    assert!(dpl_rules_hold(&entry.segments));
}

#[test]
fn sixteen_bit_code_descriptor_and_32bit_offset() {
    let (mut state, _) = machine(&[]);
    state.cr0 = 0x11;
    state.seg[sreg::CS] = 0x10;
    state.eip = 0xFFFF;
    let entry = protected_mode_handoff(&state, CODE16).unwrap();
    assert_eq!(entry.segments[sreg::CS], Segment { selector: 0x10, base: 0x12345, limit: 0xFFFF, ar: 0x9B });
    assert!(!entry.set_accessed);
    state.eip = 0x1_0000;
    assert_eq!(
        protected_mode_handoff(&state, CODE16),
        Err(HandoffError::Fault(Outcome::Exception { vector: vector::GP, error_code: Some(0) }))
    );
}

#[test]
fn rpl_bits_are_made_acceptable_to_vm_entry() {
    // SS = 0x3001 (RPL 1), DS = 0x2003 (RPL 3), ES = 0x4002 (RPL 2).
    let (mut state, _) = machine(&[]);
    state.cr0 = 0x11;
    state.seg[sreg::SS] = 0x3001;
    state.seg[sreg::DS] = 0x2003;
    state.seg[sreg::ES] = 0x4002;
    state.seg[sreg::CS] = 0x0008;
    let entry = protected_mode_handoff(&state, FLAT_CODE32).unwrap();
    assert!(entry.rpl_adjusted);
    assert_eq!(entry.segments[sreg::SS], Segment { selector: 0x3000, base: 0x30010, limit: 0xFFFF, ar: 0x93 });
    assert_eq!(entry.segments[sreg::DS], Segment { selector: 0x2003, base: 0x20030, limit: 0xFFFF, ar: 0xF3 });
    assert_eq!(entry.segments[sreg::ES].ar, 0xD3);
    assert_eq!(check(&snapshot(entry.segments, entry.rip, entry.rflags)), None);
    assert!(dpl_rules_hold(&entry.segments));
}

#[test]
fn segments_at_the_mov_cr0_pass_vm_entry_checks() {
    // The alternative hand-off of FACTS.md: leave vm86 at the MOV CR0 itself.
    let (mut state, _) = machine(&[]);
    state.seg[sreg::CS] = 0xF001; // RPL 1 in a real-mode paragraph.
    let (segments, adjusted) = protected_mode_segments(&state);
    assert!(adjusted);
    assert_eq!(segments[sreg::CS], Segment { selector: 0xF000, base: 0xF0010, limit: 0xFFFF, ar: 0x9B });
    assert_eq!(check(&snapshot(segments, u64::from(CODE_IP), 0x202)), None);
    assert!(dpl_rules_hold(&segments));
}

// SDM Vol. 2A JMP, far jump at CPL 0: a data segment, DPL != 0 for
// non-conforming code, RPL > CPL for non-conforming code are #GP(selector);
// not present is #NP(selector); an LDT or busy TSS is #GP(selector).
#[test_case(8, 0x00CF_9200_0000_FFFF, vector::GP, 8 ; "data segment")]
#[test_case(8, 0x00CF_BA00_0000_FFFF, vector::GP, 8 ; "dpl 1 code")]
#[test_case(0xB, FLAT_CODE32, vector::GP, 8 ; "rpl 3 non-conforming")]
#[test_case(8, 0x00CF_1A00_0000_FFFF, vector::NP, 8 ; "not present")]
#[test_case(8, 0x00CF_FE00_0000_FFFF, vector::GP, 8 ; "conforming dpl 3")]
#[test_case(0x10, 0x0000_8200_1000_00FF, vector::GP, 0x10 ; "ldt descriptor")]
#[test_case(0x10, 0x0000_8B00_1000_0067, vector::GP, 0x10 ; "busy tss")]
fn far_jump_descriptor_faults(cs: u16, desc: u64, v: u8, code: u32) {
    let (mut state, _) = machine(&[]);
    state.cr0 = 0x11;
    state.seg[sreg::CS] = cs;
    assert_eq!(protected_mode_handoff(&state, desc), Err(HandoffError::Fault(Outcome::Exception { vector: v, error_code: Some(code) })));
}

#[test]
fn conforming_code_ignores_rpl_and_gates_are_unsupported() {
    let (mut state, _) = machine(&[]);
    state.cr0 = 0x11;
    state.seg[sreg::CS] = 0x0B;
    let entry = protected_mode_handoff(&state, 0x00CF_9E00_0000_FFFF).unwrap();
    assert_eq!((entry.segments[sreg::CS].selector, entry.segments[sreg::CS].ar), (8, 0xC09F));
    // An available 32-bit TSS and a call gate.
    for desc in [0x0000_8900_1000_0067u64, 0x0000_8C00_0008_1000] {
        assert!(matches!(protected_mode_handoff(&state, desc), Err(HandoffError::Unsupported(_))));
    }
    // The L bit means nothing outside IA-32e mode and is not passed on.
    state.seg[sreg::CS] = 8;
    let entry = protected_mode_handoff(&state, 0x00A0_9B00_0000_FFFF).unwrap();
    assert_eq!(entry.segments[sreg::CS].ar, 0x809B);
}

proptest! {
    /// Whatever descriptor and selectors the guest uses, the hand-off either
    /// faults, is refused, or yields a state VM entry accepts.
    #[test]
    fn handoff_is_a_fault_or_an_enterable_state(
        bits in any::<u64>(),
        access in proptest::sample::select(vec![0x9Au64, 0x9B, 0x9E, 0x9F, 0x93, 0xFA, 0x1A, 0x89]),
        seg in any::<[u16; 6]>(),
        eip in 0u32..0x2_0000,
    ) {
        // Mostly code descriptors (access byte from the list), random base,
        // limit and flags.
        let desc = (bits & !(0xFF << 40)) | (access << 40);
        let (mut state, _) = machine(&[]);
        state.cr0 = 0x11;
        state.seg = seg;
        state.eip = eip;
        if let Ok(entry) = protected_mode_handoff(&state, desc) {
            prop_assert_eq!(check(&snapshot(entry.segments, entry.rip, entry.rflags)), None);
            prop_assert!(dpl_rules_hold(&entry.segments));
            prop_assert_eq!(entry.segments[sreg::CS].base, u64::from(descriptor_base(desc)));
        }
    }
}
