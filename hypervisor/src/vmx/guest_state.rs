//! Naming the field behind "VM entry failed: invalid guest state".
//!
//! The CPU reports only exit reason 33 (and a qualification that is 0 for
//! most checks), so when an entry fails the hypervisor re-checks a snapshot
//! of the guest-state area against the rules of SDM Vol. 3C 27.3.1 and names
//! the first field that breaks one. Pure logic: the snapshot is read from the
//! VMCS by the caller, and the host tests feed it hand-made states.
//!
//! Covered: CR0/CR4 fixed bits and their IA-32e consistency (27.3.1.1),
//! segment registers (27.3.1.2, not in virtual-8086 mode), RIP and RFLAGS,
//! activity and interruptibility state, the VMCS link pointer (27.3.1.5).
//! Not covered: checks that need guest memory (PDPTEs, 27.3.1.6), MSR
//! values other than the ones named here, and the non-register state rules
//! for event injection (26.2.1.3).

use super::caps::fixed_cr;
use core::fmt;

/// One segment register as the VMCS holds it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    /// Selector.
    pub selector: u16,
    /// Base address.
    pub base: u64,
    /// Limit in bytes.
    pub limit: u32,
    /// Access rights in the VMCS format (SDM Vol. 3C 25.4.1, Table 25-2).
    pub ar: u32,
}

impl Segment {
    const UNUSABLE: u32 = 1 << 16;
    fn usable(&self) -> bool {
        self.ar & Self::UNUSABLE == 0
    }
    fn kind(&self) -> u32 {
        self.ar & 0xf
    }
    fn s(&self) -> bool {
        self.ar & (1 << 4) != 0
    }
    fn dpl(&self) -> u32 {
        (self.ar >> 5) & 3
    }
    fn present(&self) -> bool {
        self.ar & (1 << 7) != 0
    }
    fn l(&self) -> bool {
        self.ar & (1 << 13) != 0
    }
    fn db(&self) -> bool {
        self.ar & (1 << 14) != 0
    }
    fn g(&self) -> bool {
        self.ar & (1 << 15) != 0
    }
}

/// The segment registers in VMCS order.
pub const SEGMENT_NAMES: [&str; 8] = ["ES", "CS", "SS", "DS", "FS", "GS", "LDTR", "TR"];

/// The guest-state fields the checks read, plus the relevant controls and
/// capability values.
#[derive(Clone, Copy, Debug, Default)]
pub struct GuestStateSnapshot {
    /// GUEST_CR0.
    pub cr0: u64,
    /// GUEST_CR4.
    pub cr4: u64,
    /// GUEST_RFLAGS.
    pub rflags: u64,
    /// GUEST_RIP.
    pub rip: u64,
    /// ES, CS, SS, DS, FS, GS, LDTR, TR.
    pub segments: [Segment; 8],
    /// GUEST_ACTIVITY_STATE.
    pub activity_state: u32,
    /// GUEST_INTERRUPTIBILITY_INFO.
    pub interruptibility: u32,
    /// VMCS_LINK_POINTER.
    pub link_pointer: u64,
    /// The "IA-32e mode guest" VM-entry control.
    pub ia32e_mode_guest: bool,
    /// The "unrestricted guest" secondary control.
    pub unrestricted_guest: bool,
    /// IA32_VMX_CR0_FIXED0/1.
    pub cr0_fixed: (u64, u64),
    /// IA32_VMX_CR4_FIXED0/1.
    pub cr4_fixed: (u64, u64),
}

/// A broken rule: which field, its value, and the rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The VMCS field (SDM-style name).
    pub field: &'static str,
    /// Its value.
    pub value: u64,
    /// The rule, in words.
    pub rule: &'static str,
    /// Where the SDM states it.
    pub sdm: &'static str,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} = {:#x}: {} (SDM Vol. 3C {})", self.field, self.value, self.rule, self.sdm)
    }
}

const AR_FIELDS: [&str; 8] = [
    "GUEST_ES_AR_BYTES",
    "GUEST_CS_AR_BYTES",
    "GUEST_SS_AR_BYTES",
    "GUEST_DS_AR_BYTES",
    "GUEST_FS_AR_BYTES",
    "GUEST_GS_AR_BYTES",
    "GUEST_LDTR_AR_BYTES",
    "GUEST_TR_AR_BYTES",
];
const LIMIT_FIELDS: [&str; 8] = [
    "GUEST_ES_LIMIT",
    "GUEST_CS_LIMIT",
    "GUEST_SS_LIMIT",
    "GUEST_DS_LIMIT",
    "GUEST_FS_LIMIT",
    "GUEST_GS_LIMIT",
    "GUEST_LDTR_LIMIT",
    "GUEST_TR_LIMIT",
];
const ES: usize = 0;
const CS: usize = 1;
const SS: usize = 2;
const LDTR: usize = 6;
const TR: usize = 7;

/// Returns the first rule the snapshot breaks, or `None` when every covered
/// rule holds (then the cause is among the uncovered ones).
pub fn check(s: &GuestStateSnapshot) -> Option<Violation> {
    let v = |field, value, rule, sdm| Some(Violation { field, value, rule, sdm });
    // 27.3.1.1: control registers.
    let (f0, f1) = s.cr0_fixed;
    let f0 = if s.unrestricted_guest { f0 & !((1 << 0) | (1 << 31)) } else { f0 };
    if fixed_cr(s.cr0, f0, f1) != s.cr0 {
        return v("GUEST_CR0", s.cr0, "violates IA32_VMX_CR0_FIXED0/FIXED1 (PE, NE, PG must be 1 without unrestricted guest)", "27.3.1.1");
    }
    if s.cr0 & (1 << 31) != 0 && s.cr0 & 1 == 0 {
        return v("GUEST_CR0", s.cr0, "PG=1 requires PE=1", "27.3.1.1");
    }
    if fixed_cr(s.cr4, s.cr4_fixed.0, s.cr4_fixed.1) != s.cr4 {
        return v("GUEST_CR4", s.cr4, "violates IA32_VMX_CR4_FIXED0/FIXED1 (VMXE must be 1)", "27.3.1.1");
    }
    if s.ia32e_mode_guest && (s.cr0 & (1 << 31) == 0 || s.cr4 & (1 << 5) == 0) {
        return v("GUEST_CR4", s.cr4, "the IA-32e mode guest control requires CR0.PG=1 and CR4.PAE=1", "27.3.1.1");
    }
    if !s.ia32e_mode_guest && s.cr4 & (1 << 17) != 0 {
        return v("GUEST_CR4", s.cr4, "CR4.PCIDE must be 0 outside IA-32e mode", "27.3.1.1");
    }
    // 27.3.1.4: RIP and RFLAGS.
    let cs = s.segments[CS];
    if (!s.ia32e_mode_guest || !cs.l()) && s.rip >> 32 != 0 {
        return v("GUEST_RIP", s.rip, "bits 63:32 must be 0 outside 64-bit mode", "27.3.1.4");
    }
    let rf_reserved = !((1u64 << 22) - 1) | (1 << 15) | (1 << 5) | (1 << 3);
    if s.rflags & rf_reserved != 0 || s.rflags & 2 == 0 {
        return v("GUEST_RFLAGS", s.rflags, "reserved bits must be 0 and bit 1 must be 1", "27.3.1.4");
    }
    let v86 = s.rflags & (1 << 17) != 0;
    if v86 && (s.ia32e_mode_guest || s.cr0 & 1 == 0) {
        return v("GUEST_RFLAGS", s.rflags, "VM=1 requires CR0.PE=1 and no IA-32e mode", "27.3.1.4");
    }
    // 27.3.1.2: segment registers (protected mode rules).
    if !v86 {
        if let Some(x) = check_segments(s) {
            return Some(x);
        }
    }
    // 27.3.1.5: non-register state.
    if s.activity_state > 3 {
        return v("GUEST_ACTIVITY_STATE", s.activity_state as u64, "must be 0 (active), 1 (HLT), 2 (shutdown) or 3 (wait-for-SIPI)", "27.3.1.5");
    }
    if s.activity_state == 1 && s.segments[SS].dpl() != 0 {
        return v("GUEST_ACTIVITY_STATE", 1, "HLT requires SS.DPL=0", "27.3.1.5");
    }
    if s.interruptibility >> 5 != 0 {
        return v("GUEST_INTERRUPTIBILITY_INFO", s.interruptibility as u64, "bits 31:5 are reserved", "27.3.1.5");
    }
    if s.interruptibility & 3 == 3 {
        return v("GUEST_INTERRUPTIBILITY_INFO", s.interruptibility as u64, "blocking by STI and by MOV SS cannot both be set", "27.3.1.5");
    }
    if s.interruptibility & 1 != 0 && s.rflags & (1 << 9) == 0 {
        return v("GUEST_INTERRUPTIBILITY_INFO", s.interruptibility as u64, "blocking by STI requires RFLAGS.IF=1", "27.3.1.5");
    }
    if s.link_pointer != u64::MAX && s.link_pointer & 0xfff != 0 {
        return v("VMCS_LINK_POINTER", s.link_pointer, "must be all ones or a 4 KiB-aligned VMCS", "27.3.1.5");
    }
    None
}

fn check_segments(s: &GuestStateSnapshot) -> Option<Violation> {
    let v = |field, value: u64, rule, sdm| Some(Violation { field, value, rule, sdm });
    let (cs, ss, tr, ldtr) = (s.segments[CS], s.segments[SS], s.segments[TR], s.segments[LDTR]);
    // TR (27.3.1.2): usable, type 11 (or 3 outside IA-32e), S=0, present.
    let tr_ok_type = tr.kind() == 11 || (!s.ia32e_mode_guest && tr.kind() == 3);
    if !tr.usable() || !tr_ok_type || tr.s() || !tr.present() {
        return v(AR_FIELDS[TR], tr.ar as u64, "TR must be usable, present, S=0, type 11 (busy TSS; 3 allowed outside IA-32e mode)", "27.3.1.2");
    }
    if tr.selector & 4 != 0 {
        return v("GUEST_TR_SELECTOR", tr.selector as u64, "TI flag must be 0", "27.3.1.2");
    }
    if ldtr.usable() && (ldtr.kind() != 2 || ldtr.s() || !ldtr.present()) {
        return v(AR_FIELDS[LDTR], ldtr.ar as u64, "a usable LDTR must be present, S=0, type 2", "27.3.1.2");
    }
    // CS: accessed code (9, 11, 13, 15), or 3 with unrestricted guest.
    let cs_type_ok = matches!(cs.kind(), 9 | 11 | 13 | 15) || (s.unrestricted_guest && cs.kind() == 3);
    if !cs.usable() || !cs_type_ok || !cs.s() || !cs.present() {
        return v(AR_FIELDS[CS], cs.ar as u64, "CS must be present, S=1, an accessed code segment (type 9, 11, 13 or 15)", "27.3.1.2");
    }
    if s.ia32e_mode_guest && cs.l() && cs.db() {
        return v(AR_FIELDS[CS], cs.ar as u64, "L and D/B cannot both be 1 in IA-32e mode", "27.3.1.2");
    }
    if matches!(cs.kind(), 9 | 11) && cs.dpl() != ss.dpl() && !s.unrestricted_guest {
        return v(AR_FIELDS[CS], cs.ar as u64, "for a non-conforming code segment CS.DPL must equal SS.DPL", "27.3.1.2");
    }
    if !s.unrestricted_guest && (ss.selector & 3) != (cs.selector & 3) {
        return v("GUEST_SS_SELECTOR", ss.selector as u64, "SS.RPL must equal CS.RPL", "27.3.1.2");
    }
    if ss.usable() && (!matches!(ss.kind(), 3 | 7) || !ss.s() || !ss.present()) {
        return v(AR_FIELDS[SS], ss.ar as u64, "a usable SS must be present, S=1, a writable data segment (type 3 or 7)", "27.3.1.2");
    }
    for i in 0..8 {
        let seg = s.segments[i];
        if !seg.usable() {
            continue;
        }
        if (i == ES || i >= 3) && i < LDTR {
            // DS, ES, FS, GS: accessed; a code segment must be readable.
            if seg.kind() & 1 == 0 || (seg.kind() & 8 != 0 && seg.kind() & 2 == 0) || !seg.s() || !seg.present() {
                return v(AR_FIELDS[i], seg.ar as u64, "a usable data segment must be present, S=1, accessed, and readable if code", "27.3.1.2");
            }
        }
        if seg.ar & 0xf00 != 0 || seg.ar >> 17 != 0 {
            return v(AR_FIELDS[i], seg.ar as u64, "access-rights bits 11:8 and 31:17 are reserved", "27.3.1.2");
        }
        if (seg.limit & 0xfff != 0xfff && seg.g()) || (seg.limit >> 20 != 0 && !seg.g()) {
            return v(LIMIT_FIELDS[i], seg.limit as u64, "inconsistent with the G bit (limit[11:0] must be 0xFFF when G=1; limit[31:20] must be 0 when G=0)", "27.3.1.2");
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_case::test_case;

    /// The state Quadrant enters a Multiboot guest with (vcpu::setup), with
    /// Bochs' Penryn fixed bits.
    fn multiboot_state() -> GuestStateSnapshot {
        let flat = |sel, ar| Segment { selector: sel, base: 0, limit: 0xffff_ffff, ar };
        GuestStateSnapshot {
            cr0: 0x8001_0031,
            cr4: 0x2020,
            rflags: 2,
            rip: 0x10_0020,
            segments: [
                flat(0x10, 0xC093),
                flat(0x08, 0xC09B),
                flat(0x10, 0xC093),
                flat(0x10, 0xC093),
                flat(0x10, 0xC093),
                flat(0x10, 0xC093),
                Segment { selector: 0, base: 0, limit: 0, ar: 0x1_0000 },
                Segment { selector: 0, base: 0, limit: 0x67, ar: 0x8B },
            ],
            activity_state: 0,
            interruptibility: 0,
            link_pointer: u64::MAX,
            ia32e_mode_guest: false,
            unrestricted_guest: false,
            cr0_fixed: (0x8000_0021, 0xffff_ffff),
            cr4_fixed: (0x2000, 0x3f_ffff),
        }
    }

    #[test]
    fn quadrants_entry_state_passes() {
        assert_eq!(check(&multiboot_state()), None);
    }

    #[test_case(|s| s.segments[7].ar = 0x89, "GUEST_TR_AR_BYTES" ; "TR not busy")]
    #[test_case(|s| s.cr0 &= !1, "GUEST_CR0" ; "PE clear without unrestricted guest")]
    #[test_case(|s| s.cr4 &= !0x2000, "GUEST_CR4" ; "VMXE clear")]
    #[test_case(|s| { s.ia32e_mode_guest = true; s.cr4 &= !0x20 }, "GUEST_CR4" ; "IA-32e without PAE")]
    #[test_case(|s| s.rflags = 0, "GUEST_RFLAGS" ; "bit 1 clear")]
    #[test_case(|s| s.rip = 1 << 40, "GUEST_RIP" ; "high RIP outside 64-bit mode")]
    #[test_case(|s| s.segments[1].ar = 0xC093, "GUEST_CS_AR_BYTES" ; "CS is data")]
    #[test_case(|s| s.segments[2].selector = 0x13, "GUEST_SS_SELECTOR" ; "SS RPL differs")]
    #[test_case(|s| s.segments[3].ar = 0xC092, "GUEST_DS_AR_BYTES" ; "DS not accessed")]
    #[test_case(|s| s.segments[4].limit = 0xffff_f000, "GUEST_FS_LIMIT" ; "limit and G disagree")]
    #[test_case(|s| s.segments[6].ar = 0x02, "GUEST_LDTR_AR_BYTES" ; "usable LDTR not present")]
    #[test_case(|s| s.interruptibility = 1, "GUEST_INTERRUPTIBILITY_INFO" ; "STI blocking with IF clear")]
    #[test_case(|s| s.activity_state = 4, "GUEST_ACTIVITY_STATE" ; "bad activity state")]
    #[test_case(|s| s.link_pointer = 0x1234, "VMCS_LINK_POINTER" ; "link pointer")]
    fn each_rule_names_its_field(break_it: fn(&mut GuestStateSnapshot), field: &str) {
        let mut s = multiboot_state();
        break_it(&mut s);
        let v = check(&s).expect("the broken state must be caught");
        assert_eq!(v.field, field, "{v}");
    }

    #[test]
    fn compatibility_mode_is_a_valid_ia32e_state() {
        let mut s = multiboot_state();
        s.ia32e_mode_guest = true;
        assert_eq!(check(&s), None);
    }

    #[test]
    fn long_mode_state_passes_and_l_with_db_fails() {
        let mut s = multiboot_state();
        s.ia32e_mode_guest = true;
        s.segments[1].ar = 0xA09B;
        s.rip = 0xffff_8000_0000_0000;
        assert_eq!(check(&s), None);
        s.segments[1].ar = 0xE09B;
        assert_eq!(check(&s).unwrap().field, "GUEST_CS_AR_BYTES");
    }

    #[test]
    fn unrestricted_guest_allows_real_mode_cr0() {
        let mut s = multiboot_state();
        s.unrestricted_guest = true;
        s.cr0 = 0x30;
        assert_eq!(check(&s), None);
    }
}
