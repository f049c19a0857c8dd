//! VMX instructions and the VM entry/exit stub: all of Quadrant's VMX
//! `unsafe` lives in this file.
//!
//! The design makes misuse hard to write:
//! * [`VmxOn`] exists only while this CPU is in VMX operation (SDM Vol. 3C
//!   24.7: VMXON), so VMCLEAR/VMPTRLD are methods on it;
//! * [`ActiveVmcs`] exists only while a VMCS is current on this CPU, so
//!   VMREAD/VMWRITE are methods on it and need no `unsafe` at call sites;
//! * [`ActiveVmcs::run`] enters the guest and returns at the next VM exit
//!   with the guest's registers saved, or with the VMfail of a failed entry.
//!
//! VMX instructions report failure in RFLAGS (SDM Vol. 3C 31.2): CF=1 is
//! VMfailInvalid (no current VMCS), ZF=1 is VMfailValid with the error number
//! in the VM-instruction error field. CF/ZF are read with SETC/SETZ in the
//! same asm block as the instruction (FACTS.md: the x86 crate's separate
//! RFLAGS read is unreliable).

use super::errors::VmFail;
use super::fields::{Field16, Field32, Field32Ro, Field64, Field64Ro, FieldNatural, FieldNaturalRo};
use core::arch::{asm, naked_asm};
use core::marker::PhantomData;
use core::mem::offset_of;

fn vm_result(cf: u8, zf: u8, read_error: impl FnOnce() -> u32) -> Result<(), VmFail> {
    if cf != 0 {
        Err(VmFail::Invalid)
    } else if zf != 0 {
        Err(VmFail::Valid { error: read_error() })
    } else {
        Ok(())
    }
}

/// Proof that this CPU is in VMX root operation. Not `Send`: VMX operation
/// belongs to one CPU.
#[derive(Debug)]
pub struct VmxOn {
    _cpu_local: PhantomData<*mut ()>,
}

impl VmxOn {
    /// Executes VMXON with the VMXON region at `region` (SDM Vol. 3C 24.7,
    /// 24.11.5).
    ///
    /// # Safety
    /// CR4.VMXE must be set, CR0/CR4 must satisfy the VMX fixed bits,
    /// IA32_FEATURE_CONTROL must allow VMX outside SMX, and `region` must be a
    /// 4 KiB-aligned frame holding the VMCS revision identifier that nothing
    /// else uses while VMX operation lasts.
    pub unsafe fn enter(region: u64) -> Result<VmxOn, VmFail> {
        let (cf, zf): (u8, u8);
        // SAFETY: the caller guarantees the preconditions of VMXON; the
        // operand is a pointer to the 64-bit physical address.
        unsafe { asm!("vmxon [{}]", "setc {}", "setz {}", in(reg) &region, out(reg_byte) cf, out(reg_byte) zf, options(nostack)) };
        // No current VMCS can hold an error number yet.
        vm_result(cf, zf, || 0)?;
        Ok(VmxOn { _cpu_local: PhantomData })
    }

    /// VMCLEAR then VMPTRLD of the VMCS in frame `vmcs` (SDM Vol. 3C 25.1,
    /// 25.11.3: a VMCS must be cleared before its first VMLAUNCH).
    ///
    /// # Safety
    /// `vmcs` must be a 4 KiB-aligned frame holding the VMCS revision
    /// identifier, owned by the caller for as long as it is current, and not
    /// current on another CPU.
    pub unsafe fn load(&self, vmcs: u64) -> Result<ActiveVmcs<'_>, VmFail> {
        let (cf, zf): (u8, u8);
        // SAFETY: VMX operation is proven by `self`; the caller guarantees the region.
        unsafe { asm!("vmclear [{}]", "setc {}", "setz {}", in(reg) &vmcs, out(reg_byte) cf, out(reg_byte) zf, options(nostack)) };
        vm_result(cf, zf, || 0)?;
        let (cf, zf): (u8, u8);
        // SAFETY: as above.
        unsafe { asm!("vmptrld [{}]", "setc {}", "setz {}", in(reg) &vmcs, out(reg_byte) cf, out(reg_byte) zf, options(nostack)) };
        vm_result(cf, zf, || 0)?;
        Ok(ActiveVmcs { _vmx: PhantomData, launched: false })
    }
}

/// A field VMREAD can read.
pub trait ReadableField: Copy {
    /// The VMCS field encoding.
    fn encoding(self) -> u32;
    /// The SDM-style name.
    fn name(self) -> &'static str;
}

/// A field VMWRITE can write (read-only "VM-exit information" fields are not).
pub trait WritableField: ReadableField {}

macro_rules! readable {
    ($($t:ty),*) => {$(
        impl ReadableField for $t {
            fn encoding(self) -> u32 { <$t>::encoding(self) }
            fn name(self) -> &'static str { <$t>::name(self) }
        }
    )*};
}
readable!(Field16, Field32, Field64, FieldNatural, Field32Ro, Field64Ro, FieldNaturalRo);
impl WritableField for Field16 {}
impl WritableField for Field32 {}
impl WritableField for Field64 {}
impl WritableField for FieldNatural {}

/// A VMWRITE that failed, with the field and the value.
#[derive(Clone, Copy, Debug)]
pub struct VmwriteError {
    /// The field's name.
    pub field: &'static str,
    /// The value that was written.
    pub value: u64,
    /// How it failed.
    pub fail: VmFail,
}

impl core::fmt::Display for VmwriteError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "VMWRITE {} <- {:#x} failed: {}", self.field, self.value, self.fail)
    }
}

/// The guest's general-purpose registers (indexed by the SDM's register
/// numbers: 0 RAX, 1 RCX, 2 RDX, 3 RBX, 4 RSP (unused: RSP is in the VMCS),
/// 5 RBP, 6 RSI, 7 RDI, 8-15 R8-R15), CR2 (which VM entry does not load:
/// the hypervisor must, e.g. to inject a #PF; SDM Vol. 3C 27.3.2.5), and the
/// x87/SSE state of guest and host (FXSAVE areas).
#[repr(C, align(16))]
pub struct GuestRegisters {
    /// RAX..R15 by register number.
    pub gpr: [u64; 16],
    /// Guest CR2.
    pub cr2: u64,
    _pad: u64,
    guest_fx: [u8; 512],
    host_fx: [u8; 512],
}

impl Default for GuestRegisters {
    fn default() -> Self {
        let mut r = GuestRegisters { gpr: [0; 16], cr2: 0, _pad: 0, guest_fx: [0; 512], host_fx: [0; 512] };
        // A valid initial FXSAVE image: FCW 0x037F, MXCSR 0x1F80 (the
        // power-up values, SDM Vol. 1 Table 10-3 and 11.6.4).
        r.guest_fx[0..2].copy_from_slice(&0x037Fu16.to_le_bytes());
        r.guest_fx[24..28].copy_from_slice(&0x1F80u32.to_le_bytes());
        r
    }
}

/// How [`ActiveVmcs::run`] came back.
#[derive(Clone, Copy, Debug)]
pub enum RunResult {
    /// A VM exit: read the exit reason from the VMCS.
    Exit,
    /// VMLAUNCH/VMRESUME failed without entering the guest.
    EntryFailed(VmFail),
}

/// Proof that a VMCS is current on this CPU (borrowing the VMX operation).
#[derive(Debug)]
pub struct ActiveVmcs<'vmx> {
    _vmx: PhantomData<&'vmx VmxOn>,
    launched: bool,
}

impl ActiveVmcs<'_> {
    /// VMREAD: `None` when the CPU does not implement the field.
    pub fn try_read(&self, field: impl ReadableField) -> Option<u64> {
        let (v, cf, zf): (u64, u8, u8);
        // SAFETY: a VMCS is current (proven by `self`); VMREAD of an unknown
        // field fails cleanly with VMfailValid.
        unsafe {
            asm!("vmread {}, {}", "setc {}", "setz {}", out(reg) v, in(reg) field.encoding() as u64,
                 out(reg_byte) cf, out(reg_byte) zf, options(nostack))
        };
        (cf == 0 && zf == 0).then_some(v)
    }

    /// VMREAD of a field every VMX CPU implements (the caller's choice of
    /// field is the guarantee); a failure is a hypervisor bug and ends the run.
    pub fn read(&self, field: impl ReadableField) -> u64 {
        match self.try_read(field) {
            Some(v) => v,
            None => crate::fatal::hypervisor_fault(format_args!("VMREAD {} failed", field.name())),
        }
    }

    /// VMWRITE.
    pub fn try_write(&mut self, field: impl WritableField, value: u64) -> Result<(), VmwriteError> {
        let (cf, zf): (u8, u8);
        // SAFETY: a VMCS is current; a bad field or value fails cleanly.
        unsafe {
            asm!("vmwrite {}, {}", "setc {}", "setz {}", in(reg) field.encoding() as u64, in(reg) value,
                 out(reg_byte) cf, out(reg_byte) zf, options(nostack))
        };
        vm_result(cf, zf, || self.read(Field32Ro::VmInstructionError) as u32)
            .map_err(|fail| VmwriteError { field: field.name(), value, fail })
    }

    /// VMWRITE of a field the caller knows exists; a failure ends the run
    /// with the field, value and VM-instruction error named.
    pub fn write(&mut self, field: impl WritableField, value: u64) {
        if let Err(e) = self.try_write(field, value) {
            crate::fatal::fail(shared::line::ErrorKind::VmEntryFailure, format_args!("{e}"));
        }
    }

    /// The VM-instruction error field (SDM Vol. 3C 31.4).
    pub fn instruction_error(&self) -> u32 {
        self.read(Field32Ro::VmInstructionError) as u32
    }

    /// Enters the guest (VMLAUNCH the first time, VMRESUME afterwards) with
    /// `regs`, and returns at the next VM exit with `regs` updated.
    ///
    /// HOST_RIP/HOST_RSP are set here; every other host-state field must
    /// describe this CPU's current state (SDM Vol. 3C 26.2.2-26.2.4).
    ///
    /// # Safety
    /// The VMCS must hold valid host state for this CPU (GDT, IDT, TR, CR3,
    /// segment selectors) so the VM exit resumes the hypervisor correctly.
    pub unsafe fn run(&mut self, regs: &mut GuestRegisters) -> RunResult {
        let launched = self.launched as u64;
        // SAFETY: the caller guarantees the host state; the stub saves and
        // restores every callee-saved register and the host FPU/SSE state.
        let rc = unsafe { vmx_enter(regs, launched) };
        match rc {
            0 => {
                self.launched = true;
                RunResult::Exit
            }
            1 => RunResult::EntryFailed(VmFail::Invalid),
            _ => RunResult::EntryFailed(VmFail::Valid { error: self.instruction_error() }),
        }
    }
}

const GPR: usize = offset_of!(GuestRegisters, gpr);
const CR2: usize = offset_of!(GuestRegisters, cr2);
const GUEST_FX: usize = offset_of!(GuestRegisters, guest_fx);
const HOST_FX: usize = offset_of!(GuestRegisters, host_fx);
const HOST_RSP: u64 = 0x6C14;

/// Loads the guest, enters it, and on a VM exit lands in `vmx_exit_landing`
/// (HOST_RIP), which saves the guest and returns 0 from this function.
/// Returns 1 on VMfailInvalid and 2 on VMfailValid.
#[unsafe(naked)]
unsafe extern "C" fn vmx_enter(regs: *mut GuestRegisters, launched: u64) -> u64 {
    naked_asm!(
        "push rbp",
        "push rbx",
        "push r12",
        "push r13",
        "push r14",
        "push r15",
        "push rdi",
        "fxsave64 [rdi + {host_fx}]",
        "fxrstor64 [rdi + {guest_fx}]",
        "mov rax, [rdi + {cr2}]",
        "mov cr2, rax",
        "mov rax, {host_rsp}",
        "vmwrite rax, rsp",
        "lea rdx, [rip + {landing}]",
        "mov rax, 0x6C16",
        "vmwrite rax, rdx",
        // MOV does not change flags: compare first, then load the guest.
        "cmp rsi, 0",
        "mov rax, [rdi + {gpr} + 0*8]",
        "mov rcx, [rdi + {gpr} + 1*8]",
        "mov rdx, [rdi + {gpr} + 2*8]",
        "mov rbx, [rdi + {gpr} + 3*8]",
        "mov rbp, [rdi + {gpr} + 5*8]",
        "mov rsi, [rdi + {gpr} + 6*8]",
        "mov r8,  [rdi + {gpr} + 8*8]",
        "mov r9,  [rdi + {gpr} + 9*8]",
        "mov r10, [rdi + {gpr} + 10*8]",
        "mov r11, [rdi + {gpr} + 11*8]",
        "mov r12, [rdi + {gpr} + 12*8]",
        "mov r13, [rdi + {gpr} + 13*8]",
        "mov r14, [rdi + {gpr} + 14*8]",
        "mov r15, [rdi + {gpr} + 15*8]",
        "mov rdi, [rdi + {gpr} + 7*8]",
        "jne 2f",
        "vmlaunch",
        "jmp 3f",
        "2:",
        "vmresume",
        "3:",
        // Entry failed: CF=1 VMfailInvalid, ZF=1 VMfailValid.
        "mov eax, 2",
        "jnc 4f",
        "mov eax, 1",
        "4:",
        "pop rdi",
        "fxrstor64 [rdi + {host_fx}]",
        "pop r15",
        "pop r14",
        "pop r13",
        "pop r12",
        "pop rbx",
        "pop rbp",
        "ret",
        host_fx = const HOST_FX,
        guest_fx = const GUEST_FX,
        cr2 = const CR2,
        gpr = const GPR,
        host_rsp = const HOST_RSP,
        landing = sym vmx_exit_landing,
    )
}

/// HOST_RIP: the CPU arrives here on every VM exit with RSP = HOST_RSP, where
/// `vmx_enter` left the `regs` pointer on top of its saved registers.
#[unsafe(naked)]
unsafe extern "C" fn vmx_exit_landing() {
    naked_asm!(
        "push rdi",
        "mov rdi, [rsp + 8]",
        "mov [rdi + {gpr} + 0*8], rax",
        "mov [rdi + {gpr} + 1*8], rcx",
        "mov [rdi + {gpr} + 2*8], rdx",
        "mov [rdi + {gpr} + 3*8], rbx",
        "mov [rdi + {gpr} + 5*8], rbp",
        "mov [rdi + {gpr} + 6*8], rsi",
        "mov [rdi + {gpr} + 8*8], r8",
        "mov [rdi + {gpr} + 9*8], r9",
        "mov [rdi + {gpr} + 10*8], r10",
        "mov [rdi + {gpr} + 11*8], r11",
        "mov [rdi + {gpr} + 12*8], r12",
        "mov [rdi + {gpr} + 13*8], r13",
        "mov [rdi + {gpr} + 14*8], r14",
        "mov [rdi + {gpr} + 15*8], r15",
        "pop rax",
        "mov [rdi + {gpr} + 7*8], rax",
        "mov rax, cr2",
        "mov [rdi + {cr2}], rax",
        "fxsave64 [rdi + {guest_fx}]",
        "fxrstor64 [rdi + {host_fx}]",
        "pop rdi",
        "pop r15",
        "pop r14",
        "pop r13",
        "pop r12",
        "pop rbx",
        "pop rbp",
        "xor eax, eax",
        "ret",
        host_fx = const HOST_FX,
        guest_fx = const GUEST_FX,
        cr2 = const CR2,
        gpr = const GPR,
    )
}

/// Executes VMXOFF (leaving VMX operation), consuming the proof.
///
/// # Safety
/// No VMCS of this CPU may be used afterwards.
pub unsafe fn vmxoff(_on: VmxOn) -> Result<(), VmFail> {
    let (cf, zf): (u8, u8);
    // SAFETY: VMX operation is proven by the consumed token.
    unsafe { asm!("vmxoff", "setc {}", "setz {}", out(reg_byte) cf, out(reg_byte) zf, options(nostack)) };
    vm_result(cf, zf, || 0)
}

/// Field groups for [`dump`], in SDM order.
pub fn dump(vmcs: &ActiveVmcs<'_>, mut line: impl FnMut(&str, u64)) {
    fn each<F: ReadableField>(vmcs: &ActiveVmcs<'_>, all: &[F], line: &mut impl FnMut(&str, u64)) {
        for f in all {
            if let Some(v) = vmcs.try_read(*f) {
                line(f.name(), v);
            }
        }
    }
    each(vmcs, Field16::ALL, &mut line);
    each(vmcs, Field32::ALL, &mut line);
    each(vmcs, Field64::ALL, &mut line);
    each(vmcs, FieldNatural::ALL, &mut line);
    each(vmcs, Field32Ro::ALL, &mut line);
    each(vmcs, Field64Ro::ALL, &mut line);
    each(vmcs, FieldNaturalRo::ALL, &mut line);
}
