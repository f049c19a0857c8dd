//! VMCS guest state for a real-mode guest: the vm86 entry state, and the
//! hand-off to protected mode when the guest's far jump after CR0.PE=1 loads
//! CS from its GDT. Also GDT descriptors in the VMCS access-rights format.
//!
//! * vm86 (SDM Vol. 3C 27.3.1.2, "if the guest will be virtual-8086"):
//!   every segment has base selector*16, limit 0xFFFF and access rights
//!   0xF3; RFLAGS has VM=1, IOPL=0, IF=1 and VIF carrying the guest's IF
//!   (SDM Vol. 3A 20.4.1, CR4.VME=1). Verified in Bochs (FACTS.md).
//! * The hand-off (FACTS.md, SDM Vol. 3A 10.9.1): RFLAGS.VM clear, every
//!   segment keeps its real-mode base and limit with 16-bit DPL-0 access
//!   rights (code 0x9B, data 0x93), then CS is loaded from the descriptor the
//!   far jump names, as the processor's far JMP would (SDM Vol. 2A JMP).
//!   Two VMCS rules shape it (SDM Vol. 3C 27.3.1.2, no unrestricted guest):
//!   SS.RPL must equal CS.RPL and SS.DPL must equal SS.RPL, so CS and SS
//!   get RPL 0 (CPL 0); a data segment's DPL may not be below its
//!   selector's RPL, so DS/ES/FS/GS get DPL = RPL (a CPL-0 access to a
//!   data segment of any DPL is allowed, so nothing the guest sees changes).

use super::{flags, sreg, vector, Outcome, RealModeState};
use crate::vmx::guest_state::Segment;

/// VMCS access rights of every vm86 segment (SDM Vol. 3C 27.3.1.2).
pub const VM86_AR: u32 = 0xF3;
/// 16-bit execute/read accessed code, DPL 0, present.
pub const CODE16_AR: u32 = 0x9B;
/// 16-bit read/write accessed data, DPL 0, present.
pub const DATA16_AR: u32 = 0x93;

/// VMCS guest state while the guest runs as vm86.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vm86Entry {
    /// ES, CS, SS, DS, FS, GS.
    pub segments: [Segment; 6],
    /// GUEST_RIP.
    pub rip: u64,
    /// GUEST_RFLAGS.
    pub rflags: u64,
}

/// The guest-visible EFLAGS bits that pass straight to vm86 RFLAGS (status
/// flags, TF, DF, NT, AC, ID); IF, IOPL, VM, VIF and VIP are set apart.
const PASSED: u32 = 0x0CD5 | flags::TF | (1 << 10) | flags::NT | flags::AC | flags::ID;

/// The VMCS state for running `state` as vm86 (SDM Vol. 3A 20.2.1, 20.4.1).
/// `virtual_interrupt_pending` sets VIP, so that the guest's STI (or POPF
/// setting IF) faults and the hypervisor can deliver the interrupt it holds
/// (SDM Vol. 3A 20.4.2). The caller must keep hardware CR0.AM clear in vm86
/// (the guest's AC then has no effect, as in real mode).
pub fn vm86_entry_state(state: &RealModeState, virtual_interrupt_pending: bool) -> Vm86Entry {
    let seg = |sel: u16| Segment { selector: sel, base: u64::from(sel) << 4, limit: 0xFFFF, ar: VM86_AR };
    let mut rflags = (state.eflags & PASSED) | flags::FIXED1 | flags::VM | flags::IF;
    if state.eflags & flags::IF != 0 {
        rflags |= flags::VIF;
    }
    if virtual_interrupt_pending {
        rflags |= flags::VIP;
    }
    Vm86Entry { segments: state.seg.map(seg), rip: u64::from(state.eip & 0xffff), rflags: u64::from(rflags) }
}

/// The guest's EFLAGS from the vm86 RFLAGS after an exit: IF is VIF; VM,
/// VIF, VIP, RF and IOPL (0 in vm86, not the guest's) are dropped.
pub fn guest_eflags_from_vm86(rflags: u64) -> u32 {
    let rflags = rflags as u32;
    let mut eflags = (rflags & PASSED) | flags::FIXED1;
    if rflags & flags::VIF != 0 {
        eflags |= flags::IF;
    }
    eflags
}

/// VMCS state for the first protected-mode entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProtectedModeEntry {
    /// ES, CS, SS, DS, FS, GS.
    pub segments: [Segment; 6],
    /// GUEST_RIP.
    pub rip: u64,
    /// GUEST_RFLAGS: the guest's EFLAGS with VM clear (IF is the guest's).
    pub rflags: u64,
    /// CS or SS had RPL bits in their real-mode selector, cleared so that
    /// VM entry accepts them (worth a log line).
    pub rpl_adjusted: bool,
    /// The descriptor's accessed bit was clear: the processor sets it in
    /// the GDT when it loads CS (SDM Vol. 3A 3.4.5.1), so the caller writes
    /// bit 40 of the descriptor back to guest memory.
    pub set_accessed: bool,
}

/// Why the far jump cannot complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandoffError {
    /// The far jump faults in the guest (inject it at the far jump).
    Fault(Outcome),
    /// The target is a call gate, task gate or TSS: not supported here.
    Unsupported(&'static str),
}

/// Segments for the guest just after its MOV to CR0 set PE, before it
/// reloads any: real-mode bases and limits, 16-bit DPL-0 access rights
/// (FACTS.md: the state Bochs accepts when the hypervisor leaves vm86 at the
/// MOV CR0 itself and lets the guest's far jump run natively). The flag is
/// `rpl_adjusted` of [`ProtectedModeEntry`].
pub fn protected_mode_segments(state: &RealModeState) -> ([Segment; 6], bool) {
    let mut adjusted = false;
    let segments = core::array::from_fn(|i| {
        let sel = state.seg[i];
        let base = u64::from(sel) << 4;
        let rpl = u32::from(sel & 3);
        match i {
            sreg::CS | sreg::SS => {
                adjusted |= rpl != 0;
                let ar = if i == sreg::CS { CODE16_AR } else { DATA16_AR };
                Segment { selector: sel & !3, base, limit: 0xFFFF, ar }
            }
            _ => Segment { selector: sel, base, limit: 0xFFFF, ar: DATA16_AR | (rpl << 5) },
        }
    });
    (segments, adjusted)
}

/// The protected-mode state after the far jump that [`super::emulate`]
/// answered with [`Outcome::EnterProtectedMode`] (the state holds the target
/// CS selector and EIP): segments per [`protected_mode_segments`], CS from
/// `gdt_descriptor` (the 8 bytes at [`gdt_descriptor_address`]) with the
/// checks of a far JMP at CPL 0 to a code segment (SDM Vol. 2A JMP,
/// "Protected Mode Exceptions"): a code segment (S=1, type bit 3) or #GP
/// (selector); non-conforming needs RPL 0 and DPL 0, conforming DPL 0, or
/// #GP(selector); not present is #NP(selector); EIP past the limit is
/// #GP(0). The new CS.RPL is the CPL, 0.
pub fn protected_mode_handoff(state: &RealModeState, gdt_descriptor: u64) -> Result<ProtectedModeEntry, HandoffError> {
    let selector = state.seg[sreg::CS];
    let err_sel = u32::from(selector & !3);
    let gp = |code| HandoffError::Fault(Outcome::Exception { vector: vector::GP, error_code: Some(code) });
    let ar = descriptor_access_rights(gdt_descriptor);
    let kind = ar & 0xF;
    let dpl = (ar >> 5) & 3;
    if ar & (1 << 4) == 0 {
        return match kind {
            1 | 4 | 5 | 9 | 12 => Err(HandoffError::Unsupported("far jump through a gate or to a TSS while entering protected mode")),
            _ => Err(gp(err_sel)),
        };
    }
    if kind & 0x8 == 0 {
        return Err(gp(err_sel));
    }
    let conforming = kind & 0x4 != 0;
    if dpl != 0 || (!conforming && selector & 3 != 0) {
        return Err(gp(err_sel));
    }
    if ar & (1 << 7) == 0 {
        return Err(HandoffError::Fault(Outcome::Exception { vector: vector::NP, error_code: Some(err_sel) }));
    }
    let limit = descriptor_limit(gdt_descriptor);
    if state.eip > limit {
        return Err(gp(0));
    }
    let (mut segments, rpl_adjusted) = protected_mode_segments(state);
    // Loading CS sets the accessed bit; the L bit has no meaning outside
    // IA-32e mode and is dropped (SDM Vol. 3A 3.4.5).
    let cs_ar = (ar | 1) & !(1 << 13);
    segments[sreg::CS] = Segment { selector: selector & !3, base: u64::from(descriptor_base(gdt_descriptor)), limit, ar: cs_ar };
    let rflags = (state.eflags & (PASSED | flags::IF | flags::IOPL)) | flags::FIXED1;
    Ok(ProtectedModeEntry { segments, rip: u64::from(state.eip), rflags: u64::from(rflags), rpl_adjusted, set_accessed: ar & 1 == 0 })
}

/// The linear address of the GDT descriptor `selector` names, or the fault
/// loading it raises (SDM Vol. 3A 3.4.2, Vol. 2A JMP): a null selector is
/// #GP(0); TI=1 (the LDT, unusable after real mode) or an index past the
/// GDT limit is #GP(selector).
pub fn gdt_descriptor_address(gdtr_base: u32, gdtr_limit: u16, selector: u16) -> Result<u32, Outcome> {
    let gp = |code| Outcome::Exception { vector: vector::GP, error_code: Some(code) };
    if selector & !3 == 0 {
        return Err(gp(0));
    }
    let index = u32::from(selector & !7);
    if selector & 4 != 0 || index + 7 > u32::from(gdtr_limit) {
        return Err(gp(u32::from(selector & !3)));
    }
    Ok(gdtr_base.wrapping_add(index))
}

/// A segment descriptor's access rights in the VMCS format (SDM Vol. 3C
/// 25.4.1, Table 25-2): bits 7:0 are descriptor bits 47:40 (type, S, DPL,
/// P), bits 15:12 are descriptor bits 55:52 (AVL, L, D/B, G), the rest 0.
pub fn descriptor_access_rights(desc: u64) -> u32 {
    let low = ((desc >> 40) & 0xFF) as u32;
    let high = ((desc >> 52) & 0xF) as u32;
    low | (high << 12)
}

/// A descriptor's base (SDM Vol. 3A 3.4.5, Figure 3-8: bits 39:16 and
/// 63:56).
pub fn descriptor_base(desc: u64) -> u32 {
    (((desc >> 16) & 0xFF_FFFF) | (((desc >> 56) & 0xFF) << 24)) as u32
}

/// A descriptor's limit in bytes (bits 15:0 and 51:48, scaled by 4 KiB
/// with the low 12 bits set when G=1; SDM Vol. 3A 3.4.5).
pub fn descriptor_limit(desc: u64) -> u32 {
    let raw = ((desc & 0xFFFF) | (((desc >> 48) & 0xF) << 16)) as u32;
    if desc & (1 << 55) != 0 {
        (raw << 12) | 0xFFF
    } else {
        raw
    }
}
