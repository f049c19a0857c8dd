//! The real-mode instruction emulator: what a real-mode guest cannot run as
//! virtual-8086 code.
//!
//! Without the "unrestricted guest" control, VMX requires guest CR0.PE=1 and
//! CR0.PG=1 (SDM Vol. 3C 27.3.1.1), so a guest in real mode runs as a vm86
//! task (SDM Vol. 3A 20.2 "Virtual-8086 mode") at CPL 3 with CR4.VME=1 and
//! IOPL=0. CLI/STI/PUSHF/POPF/INT n/IRET then work on VIF natively (SDM Vol.
//! 3A 20.4 "Protected-mode virtual interrupts" and 20.3.3 "Class 3 -
//! software interrupt handling in virtual-8086 mode" with a zero
//! redirection bitmap), the TSS I/O bitmap denies every port, and everything
//! privileged raises #GP(0), which exits to the hypervisor. The hypervisor
//! then calls [`emulate`] with the guest's registers; the emulator fetches
//! and decodes the instruction at CS:IP itself (the VM-exit instruction
//! length is undefined for #GP exits, FACTS.md) and answers with an
//! [`Outcome`] the caller applies.
//!
//! Pure logic, no VMX and no `unsafe`: guest memory is reached through
//! [`RealModeMemory`] and the host tests drive it with a `Vec`.
//!
//! * [`decode`]: instruction fetch at CS:IP, decoding (iced-x86, 16-bit
//!   mode), effective addresses and register access;
//! * [`exec`]: the semantics of each emulated instruction;
//! * [`stack`]: CLI/STI/PUSHF/POPF/IRET and interrupt delivery through the
//!   IVT;
//! * [`handoff`]: VMCS segment/RFLAGS state for vm86, the hand-off to
//!   protected mode, and GDT descriptors in VMCS access-rights format.
//!
//! EIP rule: [`Outcome::Exception`] and [`Outcome::Unsupported`] leave the
//! state untouched. A control transfer (far JMP/CALL, INT n, IRET, and
//! [`Outcome::EnterProtectedMode`]) leaves the target CS:EIP in the state.
//! Every other outcome leaves EIP past the instruction, with the 16-bit
//! wraparound of real mode. For [`Outcome::WriteCr`] the caller's CR model
//! may still refuse the write with #GP: it then injects the fault at the
//! EIP it passed in (GUEST_RIP, which it has not yet rewritten) and drops
//! the advanced state.
//!
//! Injecting an event into the real-mode guest (an [`Outcome::Exception`],
//! an external interrupt) goes through its IVT: [`deliver_interrupt`].
//!
//! Leaving vm86 when the guest sets CR0.PE (SDM Vol. 3A 10.9.1: the MOV to
//! CR0 is followed at once by a far JMP or CALL). Two ways, both pure here:
//! 1. As verified in Bochs (FACTS.md): on the accepted [`Outcome::WriteCr`]
//!    that sets PE, clear RFLAGS.VM, load the segments of
//!    [`protected_mode_segments`] and resume; the guest's far jump then runs
//!    natively against the GDTR its LGDT loaded.
//! 2. Without re-entering the guest, update `state.cr0` and call [`emulate`]
//!    again: the far JMP/CALL answers [`Outcome::EnterProtectedMode`]; read
//!    the descriptor at [`gdt_descriptor_address`] and build the entry state
//!    with [`protected_mode_handoff`]. (Never resume vm86 with the guest's
//!    PE set: vm86 would run the far jump as a real-mode one.) Any other
//!    instruction at that point is emulated as in real mode, or answered
//!    [`Outcome::Unsupported`], so route 1 is the robust one.

pub mod decode;
pub mod exec;
pub mod handoff;
pub mod stack;

#[cfg(test)]
mod tests_handoff;
#[cfg(test)]
mod tests_instr;
#[cfg(test)]
mod tests_more;
#[cfg(test)]
mod tests_stack;

pub use handoff::{
    descriptor_access_rights, descriptor_base, descriptor_limit, gdt_descriptor_address, guest_eflags_from_vm86,
    protected_mode_handoff, protected_mode_segments, vm86_entry_state, HandoffError, ProtectedModeEntry, Vm86Entry,
};

/// Segment register numbers, in the VMCS order (ES CS SS DS FS GS), which is
/// also the order of the ModR/M `sreg` field (SDM Vol. 2A 2.1.5, Table 2-1).
pub mod sreg {
    /// ES.
    pub const ES: usize = 0;
    /// CS.
    pub const CS: usize = 1;
    /// SS.
    pub const SS: usize = 2;
    /// DS.
    pub const DS: usize = 3;
    /// FS.
    pub const FS: usize = 4;
    /// GS.
    pub const GS: usize = 5;
}

/// EFLAGS bits used here (SDM Vol. 1 3.4.3, Vol. 3A 2.3).
pub mod flags {
    /// Carry.
    pub const CF: u32 = 1 << 0;
    /// Reserved, always 1.
    pub const FIXED1: u32 = 1 << 1;
    /// Trap.
    pub const TF: u32 = 1 << 8;
    /// Interrupt enable.
    pub const IF: u32 = 1 << 9;
    /// Overflow.
    pub const OF: u32 = 1 << 11;
    /// I/O privilege level (2 bits).
    pub const IOPL: u32 = 3 << 12;
    /// Nested task.
    pub const NT: u32 = 1 << 14;
    /// Resume.
    pub const RF: u32 = 1 << 16;
    /// Virtual-8086 mode.
    pub const VM: u32 = 1 << 17;
    /// Alignment check.
    pub const AC: u32 = 1 << 18;
    /// Virtual interrupt flag.
    pub const VIF: u32 = 1 << 19;
    /// Virtual interrupt pending.
    pub const VIP: u32 = 1 << 20;
    /// CPUID available.
    pub const ID: u32 = 1 << 21;
}

/// Exception vectors (SDM Vol. 3A Table 6-1).
pub mod vector {
    /// Breakpoint (INT3).
    pub const BP: u8 = 3;
    /// Overflow (INTO).
    pub const OF: u8 = 4;
    /// Invalid opcode.
    pub const UD: u8 = 6;
    /// Segment not present.
    pub const NP: u8 = 11;
    /// Stack-segment fault.
    pub const SS: u8 = 12;
    /// General protection.
    pub const GP: u8 = 13;
}

/// CR0.PE (SDM Vol. 3A 2.5).
pub const CR0_PE: u32 = 1 << 0;
/// CR0.TS (SDM Vol. 3A 2.5).
pub const CR0_TS: u32 = 1 << 3;

/// Guest memory by linear address (in real mode linear = physical guest
/// address: the hypervisor's identity shadow maps it). Both calls fail
/// (return `false`) when any byte lies outside guest RAM.
pub trait RealModeMemory {
    /// Reads `buf.len()` bytes at `linear`.
    fn read(&self, linear: u32, buf: &mut [u8]) -> bool;
    /// Writes `data` at `linear`.
    fn write(&mut self, linear: u32, data: &[u8]) -> bool;
}

/// The guest registers the emulator reads and changes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RealModeState {
    /// EAX, ECX, EDX, EBX, ESP, EBP, ESI, EDI (by register number).
    pub gpr: [u32; 8],
    /// EIP (real mode: only the low 16 bits can be non-zero).
    pub eip: u32,
    /// EFLAGS as the guest sees it: IF is the guest's own interrupt flag
    /// (VIF in vm86, see [`guest_eflags_from_vm86`]); VM is clear.
    pub eflags: u32,
    /// ES, CS, SS, DS, FS, GS selectors (paragraph numbers), see [`sreg`].
    pub seg: [u16; 6],
    /// CR0 as the guest sees it.
    pub cr0: u32,
}

impl RealModeState {
    /// Register numbers of the general-purpose registers.
    pub const EAX: usize = 0;
    /// ECX.
    pub const ECX: usize = 1;
    /// EDX.
    pub const EDX: usize = 2;
    /// EBX.
    pub const EBX: usize = 3;
    /// ESP.
    pub const ESP: usize = 4;
    /// EBP.
    pub const EBP: usize = 5;
    /// ESI.
    pub const ESI: usize = 6;
    /// EDI.
    pub const EDI: usize = 7;
}

/// Which descriptor-table register LGDT/LIDT loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtr {
    /// GDTR.
    Gdt,
    /// IDTR.
    Idt,
}

/// What the caller does after [`emulate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Instruction done: the state was updated (EIP advanced); resume in vm86.
    Continue,
    /// LGDT/LIDT executed: the new descriptor-table register (the caller
    /// writes GUEST_GDTR/IDTR base and limit). EIP already advanced.
    LoadDescriptorTable {
        /// GDTR or IDTR.
        which: Dtr,
        /// Base (24 bits with a 16-bit operand size, SDM Vol. 2A LGDT).
        base: u32,
        /// Limit.
        limit: u16,
    },
    /// MOV to CRn / LMSW / CLTS: the new value of CRn (for LMSW and CLTS the
    /// whole new CR0); the caller applies it through its CR model (which may
    /// decide #GP), then resumes. EIP already advanced.
    WriteCr {
        /// 0, 2, 3 or 4.
        cr: u8,
        /// The full new register value.
        value: u32,
    },
    /// MOV from CRn: the caller supplies the value through
    /// [`complete_read_cr`]. EIP already advanced.
    ReadCr {
        /// 0, 2, 3 or 4.
        cr: u8,
        /// Destination register number (EAX=0 .. EDI=7).
        gpr: u8,
    },
    /// Port I/O: the caller performs it; for IN it then calls
    /// [`complete_in`]. EIP already advanced.
    PortIo {
        /// Port.
        port: u16,
        /// 1, 2 or 4 bytes.
        size: u8,
        /// IN (true) or OUT (false).
        is_in: bool,
        /// For OUT the value written (AL/AX/EAX); 0 for IN.
        value: u32,
    },
    /// A far JMP/CALL with CR0.PE=1: leave vm86 and load CS from the guest
    /// GDT. The state already holds the target (CS selector, EIP; a far CALL
    /// has pushed its return address): see [`protected_mode_handoff`].
    EnterProtectedMode {
        /// Target selector.
        cs: u16,
        /// Target offset (16 or 32 bits by operand size).
        eip: u32,
    },
    /// HLT (EIP already advanced: an interrupt resumes after it).
    Halt,
    /// Inject this exception into the guest; state untouched. In real mode
    /// no error code is pushed (SDM Vol. 3A 20.1.4), so `error_code` is
    /// `None` unless the guest's CR0.PE is already set.
    Exception {
        /// Vector.
        vector: u8,
        /// Error code, if the exception pushes one.
        error_code: Option<u32>,
    },
    /// Something the emulator does not support: the caller stops the VM
    /// with `unsupported instruction <bytes> at CS:IP in real mode`.
    Unsupported {
        /// The instruction bytes (or as many as could be fetched).
        bytes: [u8; 15],
        /// How many of `bytes` are meaningful.
        len: u8,
        /// CS.
        cs: u16,
        /// IP.
        ip: u16,
        /// Why.
        what: &'static str,
    },
}

/// Emulates the instruction at CS:IP (SDM Vol. 3A 20.2.7 "Sensitive
/// instructions": the ones vm86 cannot run at IOPL 0 fault to here).
pub fn emulate(state: &mut RealModeState, mem: &mut impl RealModeMemory) -> Outcome {
    let fetched = match decode::fetch(state, mem) {
        Ok(f) => f,
        Err(o) => return o,
    };
    let insn = match decode::decode(state, &fetched) {
        Ok(i) => i,
        Err(o) => return o,
    };
    exec::execute(state, mem, &insn, &fetched)
}

/// Completes a MOV from CRn: a MOV from a control register outside 64-bit
/// mode always stores 32 bits (SDM Vol. 2B MOV "Move to/from Control
/// Registers"). EIP was already advanced by [`emulate`].
pub fn complete_read_cr(state: &mut RealModeState, gpr: u8, value: u32) {
    if let Some(r) = state.gpr.get_mut(usize::from(gpr)) {
        *r = value;
    }
}

/// Completes an IN: AL, AX or EAX receives the value and the rest of EAX is
/// kept (SDM Vol. 2A IN). EIP was already advanced by [`emulate`].
pub fn complete_in(state: &mut RealModeState, size: u8, value: u32) {
    let eax = &mut state.gpr[RealModeState::EAX];
    *eax = match size {
        1 => (*eax & !0xff) | (value & 0xff),
        2 => (*eax & !0xffff) | (value & 0xffff),
        _ => value,
    };
}

/// Delivers interrupt or exception `vector` to the real-mode guest through
/// its interrupt vector table, returning to the current EIP (SDM Vol. 3A
/// 20.1.4 "Interrupt and exception handling": push FLAGS, CS, IP; clear IF,
/// TF and AC; load CS:IP from the IVT entry). The table is read at linear 0,
/// as vm86 INT n redirection does (SDM Vol. 3A 20.3.3, with VME, IOPL < 3
/// and a clear redirection bit). Use it to
/// inject an [`Outcome::Exception`] or an external interrupt through the
/// interrupt table at `ivt_base` (the real-mode IDTR base, SDM Vol. 3A
/// 21.1.4, normally 0): it answers
/// [`Outcome::Continue`], or [`Outcome::Unsupported`] when the stack or the
/// table is outside guest RAM.
pub fn deliver_interrupt(state: &mut RealModeState, mem: &mut impl RealModeMemory, ivt_base: u32, vector: u8) -> Outcome {
    let ret = state.eip as u16;
    match stack::interrupt(state, mem, ivt_base, vector, ret) {
        Ok(()) => Outcome::Continue,
        Err(what) => Outcome::Unsupported {
            bytes: [0; 15],
            len: 0,
            cs: state.seg[sreg::CS],
            ip: state.eip as u16,
            what,
        },
    }
}
