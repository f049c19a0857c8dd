//! The guest's real mode, run as virtual-8086 mode.
//!
//! Without unrestricted guest, VM entry requires CR0.PE=1 and CR0.PG=1
//! (SDM Vol. 3C 27.3.1.1), so a guest that clears CR0.PE runs in
//! virtual-8086 mode (RFLAGS.VM=1) on the MMU core's metaphysical identity
//! map, with CR4.VME=1 and IOPL=0: CLI/STI/PUSHF/POPF/INT n/IRET then work on
//! VIF without exits (SDM Vol. 3A 20.4), and every privileged instruction and
//! every port access raises #GP, which exits and is emulated by
//! [`super::realmode`]. Every other exception exits too (the exception
//! bitmap is all ones while in vm86) and is delivered through the guest's
//! real-mode IVT.
//!
//! Entering: the guest clears CR0.PE (SDM Vol. 3A 10.9.2) and must then
//! far-jump to its real-mode code; the hypervisor performs that jump, since
//! vm86 would read CS's selector as a paragraph. Data segments take their
//! real-mode meaning (base = selector << 4) at once: the cached protected-mode
//! bases of "unreal mode" are not preserved. Leaving: the emulated MOV CR0
//! that sets PE clears RFLAGS.VM and gives the segments 16-bit protected-mode
//! rights with their real-mode bases; the guest's own far jump then loads
//! CS from its GDT natively (FACTS.md, verified in Bochs).

use super::cr::{cr0, Cr0Write, GuestControl};
use super::realmode::{self, Dtr, Outcome, RealModeMemory, RealModeState};
use super::Vcpu;
use crate::arch::phys::GuestRam;
use crate::vmx::fields::{Field16, Field32, FieldNatural};
use crate::vmx::guest_state::Segment;
use shared::line::ErrorKind;

/// Exceptions intercepted outside vm86: #PF for the shadow, #MC.
pub(super) const PROTECTED_EXCEPTIONS: u64 = (1 << 14) | (1 << 18);
/// The 32-bit TSS used in vm86: I/O map base = limit, so no port is
/// permitted (every IN/OUT raises #GP, SDM Vol. 3A 20.2.8.1), with a zeroed
/// interrupt redirection bitmap just below it (every INT n goes to the
/// real-mode IVT, SDM Vol. 3A 20.3.3.5).
pub const VM86_TSS_LIMIT: u64 = 0x88;
/// Offset of the I/O map base field in a 32-bit TSS.
pub const TSS_IOMAP_BASE: u64 = 0x66;

/// Guest RAM as the real-mode emulator sees it: paging is off in real mode,
/// so a linear address is a guest-physical one.
struct RealMem<'a>(&'a GuestRam);

impl RealModeMemory for RealMem<'_> {
    fn read(&self, linear: u32, buf: &mut [u8]) -> bool {
        self.0.read(linear as u64, buf)
    }
    fn write(&mut self, linear: u32, data: &[u8]) -> bool {
        self.0.write(linear as u64, data)
    }
}

/// Segment fields in VMCS order ES, CS, SS, DS, FS, GS.
const SEGMENTS: [(Field16, FieldNatural, Field32, Field32); 6] = [
    (Field16::GuestEsSelector, FieldNatural::GuestEsBase, Field32::GuestEsLimit, Field32::GuestEsAccessRights),
    (Field16::GuestCsSelector, FieldNatural::GuestCsBase, Field32::GuestCsLimit, Field32::GuestCsAccessRights),
    (Field16::GuestSsSelector, FieldNatural::GuestSsBase, Field32::GuestSsLimit, Field32::GuestSsAccessRights),
    (Field16::GuestDsSelector, FieldNatural::GuestDsBase, Field32::GuestDsLimit, Field32::GuestDsAccessRights),
    (Field16::GuestFsSelector, FieldNatural::GuestFsBase, Field32::GuestFsLimit, Field32::GuestFsAccessRights),
    (Field16::GuestGsSelector, FieldNatural::GuestGsBase, Field32::GuestGsLimit, Field32::GuestGsAccessRights),
];

impl Vcpu<'_> {
    fn write_segments(&mut self, segs: &[Segment; 6]) {
        for (s, (sel, base, limit, ar)) in segs.iter().zip(SEGMENTS) {
            self.vmcs.write(sel, s.selector as u64);
            self.vmcs.write(base, s.base);
            self.vmcs.write(limit, s.limit as u64);
            self.vmcs.write(ar, s.ar as u64);
        }
    }

    /// Where exceptions are delivered in real mode: the IDTR base the guest
    /// loaded (SDM Vol. 3A 21.1.4; 0 after reset).
    fn ivt_base(&self) -> u32 {
        self.vmcs.read(FieldNatural::GuestIdtrBase) as u32
    }

    /// The guest's real-mode state as the emulator sees it.
    fn real_mode_state(&self) -> RealModeState {
        let mut st = RealModeState {
            gpr: [0; 8],
            eip: self.rip() as u32,
            eflags: realmode::guest_eflags_from_vm86(self.vmcs.read(FieldNatural::GuestRflags)),
            seg: [0; 6],
            cr0: self.guest.cr0 as u32,
        };
        for i in 0..8 {
            st.gpr[i] = self.gpr(i as u8) as u32;
        }
        for (i, (sel, ..)) in SEGMENTS.iter().enumerate() {
            st.seg[i] = self.vmcs.read(*sel) as u16;
        }
        st
    }

    /// Writes `st` back as vm86 state.
    fn write_real_mode_state(&mut self, st: &RealModeState) {
        for i in 0..8u8 {
            let old = self.gpr(i);
            self.set_gpr(i, (old & !0xffff_ffff) | st.gpr[i as usize] as u64);
        }
        let e = realmode::vm86_entry_state(st, false);
        self.write_segments(&e.segments);
        self.vmcs.write(FieldNatural::GuestRip, e.rip);
        self.vmcs.write(FieldNatural::GuestRflags, e.rflags);
    }

    /// The guest cleared CR0.PE (RIP is past the MOV): perform the far jump
    /// that must follow and switch to vm86.
    pub(super) fn enter_real_mode(&mut self) {
        let cs_base = self.vmcs.read(FieldNatural::GuestCsBase);
        let rip = self.rip();
        let big = self.vmcs.read(Field32::GuestCsAccessRights) & (1 << 14) != 0;
        let mut b = [0u8; 8];
        let linear = (cs_base + rip) & 0xffff_ffff;
        let readable = self.vm.ram.read(linear, &mut b);
        // JMP ptr16:16 (EA iw iw) or ptr16:32 (EA id iw), the operand size
        // being the segment's default flipped by a 0x66 prefix (SDM Vol. 2A
        // JMP).
        let (prefix, op) = if b[0] == 0x66 { (1, 32 - 16 * big as u32) } else { (0, 16 + 16 * big as u32) };
        if !readable || b[prefix] != 0xEA {
            self.die(
                ErrorKind::Unsupported,
                false,
                format_args!(
                    "after clearing CR0.PE at RIP {rip:#x} the guest must far-jump to its real-mode code (SDM Vol. 3A 10.9.2); found {:02x?}",
                    &b[..6]
                ),
            );
        }
        let at = prefix + 1;
        let (ip, sel) = if op == 16 {
            (u16::from_le_bytes([b[at], b[at + 1]]) as u32, u16::from_le_bytes([b[at + 2], b[at + 3]]))
        } else {
            (u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]), u16::from_le_bytes([b[at + 4], b[at + 5]]))
        };
        let mut st = self.real_mode_state();
        st.eflags = self.vmcs.read(FieldNatural::GuestRflags) as u32;
        st.seg[1] = sel;
        st.eip = ip & 0xffff;
        self.run_vm86(&st);
        log::debug!("guest entered real mode at {sel:04x}:{ip:04x}");
    }

    /// Runs real-mode state `st` as vm86 from the next entry on.
    fn run_vm86(&mut self, st: &RealModeState) {
        self.vm86 = true;
        // TR: the vm86 TSS; LDTR unusable; every exception exits.
        self.vmcs.write(FieldNatural::GuestTrBase, self.vm86_tss);
        self.vmcs.write(Field32::GuestTrLimit, VM86_TSS_LIMIT);
        self.vmcs.write(Field32::GuestTrAccessRights, 0x8B);
        self.vmcs.write(Field32::ExceptionBitmap, 0xffff_ffff);
        self.write_real_mode_state(st);
    }

    /// A start-up IPI with `vector` arrived while this vCPU waited for one:
    /// it starts in real mode at `vector << 12` (CS = `vector << 8`, IP = 0)
    /// with the register state INIT left (SDM Vol. 3A 9.1.1 Table 9-1: CR0
    /// 0x60000010, EFLAGS 2, segment selectors 0 but CS, GPRs 0 but EDX,
    /// which holds the processor signature, CPUID.1:EAX), under the
    /// metaphysical identity map (shadow paging).
    pub(super) fn sipi_vm86(&mut self, vector: u8) {
        let mut st = RealModeState { gpr: [0; 8], eip: 0, eflags: 2, seg: [0; 6], cr0: super::INIT_CR0 as u32 };
        st.gpr[RealModeState::EDX] = crate::arch::cpu::cpuid(1, 0).0;
        st.seg[1] = u16::from(vector) << 8;
        self.vmcs.write(FieldNatural::GuestIdtrBase, 0);
        self.vmcs.write(Field32::GuestIdtrLimit, 0xffff);
        self.vmcs.write(FieldNatural::GuestGdtrBase, 0);
        self.vmcs.write(Field32::GuestGdtrLimit, 0xffff);
        self.vmcs.write(FieldNatural::GuestRsp, 0);
        self.run_vm86(&st);
        log::debug!("vCPU {} started by SIPI at {:04x}:0000", self.id, st.seg[1]);
    }

    /// An exception exit while in vm86: #GP is an instruction to emulate,
    /// anything else goes to the guest's real-mode IVT.
    pub(super) fn vm86_exception(&mut self, vector: u8) {
        let mut st = self.real_mode_state();
        let ivt = self.ivt_base();
        let mut mem = RealMem(&self.vm.ram);
        let outcome = if vector == super::GP {
            realmode::emulate(&mut st, &mut mem)
        } else {
            realmode::deliver_interrupt(&mut st, &mut mem, ivt, vector)
        };
        self.apply_real_mode_outcome(st, outcome);
    }

    fn apply_real_mode_outcome(&mut self, mut st: RealModeState, outcome: Outcome) {
        match outcome {
            Outcome::Continue => self.write_real_mode_state(&st),
            Outcome::LoadDescriptorTable { which, base, limit } => {
                let (b, l) = match which {
                    Dtr::Gdt => (FieldNatural::GuestGdtrBase, Field32::GuestGdtrLimit),
                    Dtr::Idt => (FieldNatural::GuestIdtrBase, Field32::GuestIdtrLimit),
                };
                self.vmcs.write(b, base as u64);
                self.vmcs.write(l, limit as u64);
                self.write_real_mode_state(&st);
            }
            Outcome::ReadCr { cr, gpr } => {
                let v = match cr {
                    0 => self.guest.cr0,
                    2 => self.regs.cr2,
                    3 => self.guest.cr3,
                    _ => self.guest.cr4,
                };
                realmode::complete_read_cr(&mut st, gpr, v as u32);
                self.write_real_mode_state(&st);
            }
            Outcome::WriteCr { cr, value } => self.real_mode_write_cr(st, cr, value as u64),
            Outcome::PortIo { port, size, is_in, value } => {
                let v = self.port_access(port, size, is_in, value);
                if is_in {
                    realmode::complete_in(&mut st, size, v);
                }
                self.write_real_mode_state(&st);
            }
            Outcome::Exception { vector, .. } => {
                let mut st = self.real_mode_state();
                let ivt = self.ivt_base();
                let mut mem = RealMem(&self.vm.ram);
                let o = realmode::deliver_interrupt(&mut st, &mut mem, ivt, vector);
                self.apply_real_mode_outcome(st, o);
            }
            Outcome::Halt => {
                let (cs, ip) = (st.seg[1], st.eip);
                self.die(
                    ErrorKind::Unsupported,
                    false,
                    format_args!("the guest executed HLT in real mode at {cs:04x}:{ip:04x}; Quadrant delivers no interrupts, so nothing would wake it"),
                )
            }
            Outcome::EnterProtectedMode { cs, eip } => self.die(
                ErrorKind::Unsupported,
                false,
                format_args!("far jump to {cs:04x}:{eip:x} with CR0.PE=1 while still in vm86 (the hypervisor leaves vm86 at the MOV CR0 that sets PE)"),
            ),
            Outcome::Unsupported { bytes, len, cs, ip, what } => self.die(
                ErrorKind::Unsupported,
                false,
                format_args!("unsupported instruction {:02x?} at {cs:04x}:{ip:04x} in real mode: {what}", &bytes[..len as usize]),
            ),
        }
    }

    /// A control-register write emulated in real mode; `st` is already past
    /// the instruction. A refused write raises #GP through the IVT at the
    /// instruction itself (the emulator's state is dropped).
    fn real_mode_write_cr(&mut self, st: RealModeState, cr: u8, value: u64) {
        self.mmu_touched = true;
        let ok = match cr {
            0 => match self.guest.write_cr0(value) {
                Cr0Write::Gp => false,
                Cr0Write::Accept { cr0: c0, efer } => {
                    let entering_protected_mode = c0 & cr0::PE != 0;
                    let next = GuestControl { cr0: c0, efer, ..self.guest };
                    // `apply_paging_state` injects #GP itself on refusal;
                    // in vm86 that must go through the IVT instead.
                    match self.mmu_set_paging_mode(next) {
                        Err(_) => false,
                        Ok(()) => {
                            self.vmcs.write(FieldNatural::Cr0ReadShadow, next.cr0);
                            if entering_protected_mode {
                                self.leave_vm86(&st);
                            } else {
                                self.write_real_mode_state(&st);
                            }
                            return;
                        }
                    }
                }
            },
            2 => {
                self.regs.cr2 = value;
                true
            }
            3 => self.mmu_load_cr3(value).is_ok(),
            _ => {
                let next = GuestControl { cr4: value, ..self.guest };
                let ok = self.mmu_set_paging_mode(next).is_ok();
                if ok {
                    self.vmcs.write(FieldNatural::Cr4ReadShadow, value);
                }
                ok
            }
        };
        if ok {
            self.write_real_mode_state(&st);
        } else {
            let mut st = self.real_mode_state();
            let ivt = self.ivt_base();
            let mut mem = RealMem(&self.vm.ram);
            let o = realmode::deliver_interrupt(&mut st, &mut mem, ivt, super::GP);
            self.apply_real_mode_outcome(st, o);
        }
    }

    /// The guest set CR0.PE: leave vm86 with the segments in the state the
    /// guest's far jump expects (FACTS.md: real-mode bases and limits, 16-bit
    /// protected-mode rights, DPL 0).
    fn leave_vm86(&mut self, st: &RealModeState) {
        let (segs, _) = realmode::protected_mode_segments(st);
        for i in 0..8u8 {
            let old = self.gpr(i);
            self.set_gpr(i, (old & !0xffff_ffff) | st.gpr[i as usize] as u64);
        }
        self.write_segments(&segs);
        self.vmcs.write(FieldNatural::GuestRip, st.eip as u64);
        // RFLAGS: the guest's own flags, VM clear, reserved bit 1 set.
        self.vmcs.write(FieldNatural::GuestRflags, ((st.eflags as u64) & !(1 << 17)) | 2);
        self.vmcs.write(Field32::ExceptionBitmap, PROTECTED_EXCEPTIONS);
        self.vm86 = false;
        log::debug!("guest left real mode at {:04x}:{:04x}", st.seg[1], st.eip);
    }
}
