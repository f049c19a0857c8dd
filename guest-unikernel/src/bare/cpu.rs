//! Every instruction the guest issues itself, behind safe functions where
//! the instruction cannot break memory safety: CPUID, RDTSC, reads of CR0/CR2/CR4,
//! IA32_EFER and CS, the COM1 registers; `unsafe fn` for VMCALL (the
//! hypervisor may read or write memory the arguments name) and LIDT. Also
//! the exception entry stubs (stable Rust has no `x86-interrupt` ABI, so
//! they are assembly) and their hand-off to [`super::trap`].
//!
//! With `phys`, this is one of the two modules of the binary that contain
//! `unsafe` code.

use core::arch::{asm, global_asm};
use guest_unikernel::machine::Cpuid;
use guest_unikernel::trap::TrapFrame;

/// CPUID with EAX = `leaf`, ECX = `subleaf` (SDM Vol. 2A, CPUID).
pub fn cpuid(leaf: u32, subleaf: u32) -> Cpuid {
    let (eax, ebx, ecx, edx): (u32, u32, u32, u32);
    // SAFETY: CPUID only writes the four registers; RBX is reserved by LLVM,
    // so it is saved and restored around the instruction by hand.
    unsafe {
        asm!(
            "mov {save:r}, rbx",
            "cpuid",
            "xchg {save:r}, rbx",
            save = out(reg) ebx,
            inout("eax") leaf => eax,
            inout("ecx") subleaf => ecx,
            out("edx") edx,
            options(nomem, nostack, preserves_flags),
        );
    }
    Cpuid { eax, ebx, ecx, edx }
}

/// The time-stamp counter (RDTSC, SDM Vol. 2B).
pub fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: RDTSC only writes EDX:EAX (CR4.TSD is clear: the boot code
    // never sets it, and the guest runs at CPL 0 anyway).
    unsafe { asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags)) };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// CR0.
pub fn read_cr0() -> u64 {
    let v: u64;
    // SAFETY: reading CR0 at CPL 0 has no side effects.
    unsafe { asm!("mov {}, cr0", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// CR2 (the last page-fault linear address).
pub fn read_cr2() -> u64 {
    let v: u64;
    // SAFETY: reading CR2 at CPL 0 has no side effects.
    unsafe { asm!("mov {}, cr2", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// CR4.
pub fn read_cr4() -> u64 {
    let v: u64;
    // SAFETY: reading CR4 at CPL 0 has no side effects.
    unsafe { asm!("mov {}, cr4", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// IA32_EFER (MSR 0xC000_0080).
pub fn read_efer() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: IA32_EFER exists on every processor that runs IA-32e mode,
    // which the boot code already entered; RDMSR of it has no side effects.
    unsafe {
        asm!("rdmsr", in("ecx") 0xC000_0080u32, out("eax") lo, out("edx") hi,
             options(nomem, nostack, preserves_flags));
    }
    (u64::from(hi) << 32) | u64::from(lo)
}

/// The CS selector now.
pub fn read_cs() -> u16 {
    let v: u16;
    // SAFETY: reading a segment register has no side effects.
    unsafe { asm!("mov {:x}, cs", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Writes a byte to COM1's transmit register.
pub fn com1_write(b: u8) {
    // SAFETY: COM1's data register; a write only queues a byte for output.
    unsafe { bare_rt::port::outb(shared::ports::COM1, b) };
}

/// Masks every line of both legacy 8259 PICs (interrupt-mask registers at
/// ports 0x21 and 0xA1): the firmware leaves the timer routed to a vector
/// in the exception range, and the guest enables interrupts for IPIs.
pub fn mask_legacy_pics() {
    // SAFETY: writing the PICs' mask registers only stops their interrupts.
    unsafe {
        bare_rt::port::outb(0x21, 0xff);
        bare_rt::port::outb(0xa1, 0xff);
    }
}

/// Reads COM1's line-status register (offset 5).
pub fn com1_line_status() -> u8 {
    // SAFETY: reading the 16550 line-status register has no side effect on
    // transmission (it clears only error bits the guest does not use).
    unsafe { bare_rt::port::inb(shared::ports::COM1 + 5) }
}

/// VMCALL with RAX = `rax`, RBX/RCX/RDX = `args`; returns RAX.
///
/// # Safety
/// Memory the arguments name must be valid for what the hypercall does with
/// it (read for ReportCheck, written for MmuStats), as
/// [`shared::hypercall`] defines. Without the hypervisor VMCALL raises #UD
/// (SDM Vol. 3C 26.1.2), which ends the run through the exception handler.
pub unsafe fn vmcall(rax: u64, args: [u64; 3]) -> u64 {
    let ret: u64;
    // SAFETY: the caller vouches for the memory the arguments name; RBX is
    // reserved by LLVM, so it is swapped in and out around the instruction.
    unsafe {
        asm!(
            "xchg {b}, rbx",
            "vmcall",
            "xchg {b}, rbx",
            b = inout(reg) args[0] => _,
            inout("rax") rax => ret,
            in("rcx") args[1],
            in("rdx") args[2],
            options(nostack),
        );
    }
    ret
}

/// Loads IDTR with `base` and `limit`.
///
/// # Safety
/// The table at `base` must stay valid (and hold gates to handlers that
/// exist) for as long as any exception can occur.
pub unsafe fn load_idt(base: u64, limit: u16) {
    #[repr(C, packed)]
    struct Idtr {
        limit: u16,
        base: u64,
    }
    let idtr = Idtr { limit, base };
    // SAFETY: the caller guarantees the table; LIDT reads the 10 bytes.
    unsafe { asm!("lidt [{}]", in(reg) &idtr, options(readonly, nostack, preserves_flags)) };
}

/// Loads an empty IDT and executes UD2: every exception delivery fails in
/// turn, which is a triple fault (the `crash=triple-fault` self-test).
pub fn triple_fault() -> ! {
    // SAFETY: a zero-limit IDT makes the next exception escalate to a
    // triple fault: the machine shuts down (or the hypervisor stops the
    // guest); nothing runs after it.
    unsafe {
        load_idt(0, 0);
        asm!("ud2", options(noreturn, nostack))
    }
}

/// Executes UD2 (#UD): the `crash=ud` self-test of the exception path.
pub fn raise_ud() -> ! {
    // SAFETY: UD2 raises #UD; the handler ends the run and never returns.
    unsafe { asm!("ud2", options(noreturn, nostack)) }
}

/// Reads `addr` with a plain MOV (#PF when it is not mapped): the
/// `crash=pf` self-test of the exception path.
pub fn touch(addr: u64) -> u64 {
    let v: u64;
    // SAFETY: the load goes through assembly, not a Rust reference; an
    // unmapped address raises #PF, whose handler ends the run.
    unsafe { asm!("mov {v}, [{a}]", a = in(reg) addr, v = out(reg) v, options(readonly, nostack, preserves_flags)) };
    v
}

/// Number of exception vectors with a stub.
pub const EXCEPTION_VECTORS: usize = 32;

// One stub per exception vector: push a zero where the CPU pushes no error
// code, push the vector, save the general registers in [`TrapFrame`] order
// and call `guest_exception_entry(&mut TrapFrame)`. If that returns, the
// registers are restored and IRETQ resumes the interrupted code (the fault
// harness will use this; today's handler ends the run). 64-bit mode aligns
// RSP to 16 before pushing the frame (SDM Vol. 3A 7.14.2), and 22 quadwords
// keep it aligned for the call. SSE registers are not saved: a handler that
// returns must not touch them.
global_asm!(
    r#"
.macro GUEST_EXC_NOERR v
guest_exc_stub_\v:
    push 0
    push \v
    jmp guest_exc_common
.endm
.macro GUEST_EXC_ERR v
guest_exc_stub_\v:
    push \v
    jmp guest_exc_common
.endm

.section .text.guest_exc, "ax"
GUEST_EXC_NOERR 0
GUEST_EXC_NOERR 1
GUEST_EXC_NOERR 2
GUEST_EXC_NOERR 3
GUEST_EXC_NOERR 4
GUEST_EXC_NOERR 5
GUEST_EXC_NOERR 6
GUEST_EXC_NOERR 7
GUEST_EXC_ERR 8
GUEST_EXC_NOERR 9
GUEST_EXC_ERR 10
GUEST_EXC_ERR 11
GUEST_EXC_ERR 12
GUEST_EXC_ERR 13
GUEST_EXC_ERR 14
GUEST_EXC_NOERR 15
GUEST_EXC_NOERR 16
GUEST_EXC_ERR 17
GUEST_EXC_NOERR 18
GUEST_EXC_NOERR 19
GUEST_EXC_NOERR 20
GUEST_EXC_ERR 21
GUEST_EXC_NOERR 22
GUEST_EXC_NOERR 23
GUEST_EXC_NOERR 24
GUEST_EXC_NOERR 25
GUEST_EXC_NOERR 26
GUEST_EXC_NOERR 27
GUEST_EXC_NOERR 28
GUEST_EXC_ERR 29
GUEST_EXC_ERR 30
GUEST_EXC_NOERR 31
GUEST_EXC_NOERR 64
GUEST_EXC_NOERR 65
GUEST_EXC_NOERR 66
GUEST_EXC_NOERR 255

guest_exc_common:
    push rax
    push rbx
    push rcx
    push rdx
    push rsi
    push rdi
    push rbp
    push r8
    push r9
    push r10
    push r11
    push r12
    push r13
    push r14
    push r15
    mov rdi, rsp
    cld
    call guest_exception_entry
    pop r15
    pop r14
    pop r13
    pop r12
    pop r11
    pop r10
    pop r9
    pop r8
    pop rbp
    pop rdi
    pop rsi
    pop rdx
    pop rcx
    pop rbx
    pop rax
    add rsp, 16
    iretq

.section .rodata.guest_exc, "a"
.balign 8
.global guest_exc_stubs
guest_exc_stubs:
    .quad guest_exc_stub_0, guest_exc_stub_1, guest_exc_stub_2, guest_exc_stub_3
    .quad guest_exc_stub_4, guest_exc_stub_5, guest_exc_stub_6, guest_exc_stub_7
    .quad guest_exc_stub_8, guest_exc_stub_9, guest_exc_stub_10, guest_exc_stub_11
    .quad guest_exc_stub_12, guest_exc_stub_13, guest_exc_stub_14, guest_exc_stub_15
    .quad guest_exc_stub_16, guest_exc_stub_17, guest_exc_stub_18, guest_exc_stub_19
    .quad guest_exc_stub_20, guest_exc_stub_21, guest_exc_stub_22, guest_exc_stub_23
    .quad guest_exc_stub_24, guest_exc_stub_25, guest_exc_stub_26, guest_exc_stub_27
    .quad guest_exc_stub_28, guest_exc_stub_29, guest_exc_stub_30, guest_exc_stub_31
.global guest_irq_stubs
guest_irq_stubs:
    .quad guest_exc_stub_64, guest_exc_stub_65, guest_exc_stub_66, guest_exc_stub_255
.text
"#
);

/// The interrupt vectors with a stub (`guest_unikernel::smp::vector`: WAKE,
/// PING, SHOOTDOWN, SPURIOUS), in the order of `guest_irq_stubs`.
pub const IRQ_VECTORS: [u8; 4] = [0x40, 0x41, 0x42, 0xFF];

unsafe extern "C" {
    /// The stubs' addresses, by vector (defined in the assembly above).
    static guest_exc_stubs: [u64; EXCEPTION_VECTORS];
    /// The interrupt stubs, in [`IRQ_VECTORS`] order.
    static guest_irq_stubs: [u64; 4];
}

/// The address of the stub for interrupt vector `IRQ_VECTORS[i]`.
pub fn irq_stub(i: usize) -> u64 {
    // SAFETY: as in `exception_stub`.
    unsafe { guest_irq_stubs.get(i).copied().unwrap_or(0) }
}

/// The address of the entry stub for exception `vector` (< 32).
pub fn exception_stub(vector: usize) -> u64 {
    // SAFETY: the table is initialised, read-only data of exactly
    // EXCEPTION_VECTORS entries; `get` bounds the index.
    unsafe { guest_exc_stubs.get(vector).copied().unwrap_or(0) }
}

/// Called by the stubs with the frame they built.
#[unsafe(no_mangle)]
extern "C" fn guest_exception_entry(frame: &mut TrapFrame) {
    super::trap::handle(frame);
}
