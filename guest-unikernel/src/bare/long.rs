//! The long-mode probe harness behind [`LongCpu`]: single accesses whose
//! exceptions are caught and recorded instead of ending the run, at CPL 0
//! and, through a ring-3 trampoline, at CPL 3. With `cpu`, `phys` and
//! `modes`, one of the binary's modules with `unsafe` code.
//!
//! * **Fixup table.** Every probe is a tiny assembly routine whose one
//!   faulting instruction is listed in `qlong_fixups` with the address to
//!   resume at. While a probe is armed, [`fixup`] (called first by the
//!   exception handler) records vector, error code and CR2 for an
//!   exception at a listed instruction and moves RIP to the resume address
//!   (SDM Vol. 3A 6.5: #PF and #GP are faults, RIP points at the faulting
//!   instruction). A fetch probe is `call addr`; a #PF whose RIP is the
//!   armed target is undone like a `ret` (pop the return address).
//! * **Ring 3** (SDM Vol. 3A 6.12.1, 6.14): the harness loads its own GDT
//!   (the boot selectors 0x08/0x10 unchanged, user data 0x18 and 64-bit
//!   user code 0x20 with DPL 3, a 64-bit TSS at 0x28 whose RSP0 is a private
//!   stack for exceptions from CPL 3) for the probe, IRETQs to the user
//!   routine, which does one access and then executes UD2; the #UD from
//!   CPL 3 at that known address is turned into a return to CPL 0 by
//!   rewriting the exception frame (CS 0x08, SS 0x10, the saved kernel RSP),
//!   so no DPL-3 gate or SYSCALL setup is needed. The user routine and its
//!   stack must be mapped with U=1 by the probed tables.

use super::cpu;
use core::arch::{asm, global_asm};
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use guest_unikernel::longcpu::{cr4, Cpl, Fault, LongCpu, Op, Probe};
use guest_unikernel::trap::TrapFrame;

/// Kernel code and data selectors (bare-rt's GDT, kept in ours).
const KERNEL_CS: u64 = 0x08;
const KERNEL_SS: u64 = 0x10;
/// The TSS selector in [`GDT`].
const TSS_SEL: u16 = 0x28;

global_asm!(
    r#"
.section .text.guest_long, "ax"
.global qlong_k_read
qlong_k_read:
    xor eax, eax
qlong_k_read_i:
    mov rax, [rdi]
qlong_k_read_r:
    ret
.global qlong_k_write
qlong_k_write:
    xor eax, eax
qlong_k_write_i:
    mov [rdi], rsi
qlong_k_write_r:
    ret
.global qlong_k_write32
qlong_k_write32:
    xor eax, eax
qlong_k_write32_i:
    mov [rdi], esi
qlong_k_write32_r:
    ret
.global qlong_k_read_ac
qlong_k_read_ac:
    xor eax, eax
    pushfq
    or dword ptr [rsp], 0x40000
    popfq
qlong_k_read_ac_i:
    mov rax, [rdi]
qlong_k_read_ac_r:
    pushfq
    and dword ptr [rsp], 0xFFFBFFFF
    popfq
    ret
.global qlong_k_write_ac
qlong_k_write_ac:
    xor eax, eax
    pushfq
    or dword ptr [rsp], 0x40000
    popfq
qlong_k_write_ac_i:
    mov [rdi], rsi
qlong_k_write_ac_r:
    pushfq
    and dword ptr [rsp], 0xFFFBFFFF
    popfq
    ret
.global qlong_k_and8
qlong_k_and8:
    xor eax, eax
qlong_k_and8_i:
    and byte ptr [rdi], sil
qlong_k_and8_r:
    ret
.global qlong_k_stosb
qlong_k_stosb:
    mov rcx, rdx
    mov eax, esi
qlong_k_stosb_i:
    rep stosb
qlong_k_stosb_r:
    ret
.global qlong_k_cmpxchg
qlong_k_cmpxchg:
    mov rax, rsi
qlong_k_cmpxchg_i:
    lock cmpxchg [rdi], rdx
qlong_k_cmpxchg_r:
    ret
.global qlong_k_fetch
qlong_k_fetch:
    xor eax, eax
    call rdi
    ret
.global qlong_k_invlpg
qlong_k_invlpg:
    xor eax, eax
qlong_k_invlpg_i:
    invlpg [rdi]
qlong_k_invlpg_r:
    ret
.global qlong_k_movcr3
qlong_k_movcr3:
    xor eax, eax
qlong_k_movcr3_i:
    mov cr3, rdi
qlong_k_movcr3_r:
    ret
.global qlong_k_vmxon
qlong_k_vmxon:
    xor eax, eax
qlong_k_vmxon_i:
    vmxon [rdi]
qlong_k_vmxon_r:
    ret

/* qlong_user(addr: rdi, op: rsi (0 read, 1 write, 2 fetch), value: rdx,
   user stack top: rcx) -> rax */
.global qlong_user
qlong_user:
    push rbx
    push rbp
    push r12
    push r13
    push r14
    push r15
    mov [rip + qlong_kernel_rsp], rsp
    push 0x1b
    push rcx
    push 0x2
    push 0x23
    lea rax, [rip + qlong_user_code]
    push rax
    iretq
qlong_user_code:
    xor eax, eax
    cmp esi, 1
    je 3f
    cmp esi, 2
    je 4f
qlong_u_read_i:
    mov rax, [rdi]
    jmp qlong_user_done
3:
qlong_u_write_i:
    mov [rdi], rdx
    jmp qlong_user_done
4:
    call rdi
.global qlong_user_done
qlong_user_done:
    ud2
.global qlong_user_back
qlong_user_back:
    mov r11d, 0x10
    mov ds, r11d
    mov es, r11d
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbp
    pop rbx
    ret

.section .rodata.guest_long, "a"
.balign 8
.global qlong_fixups
qlong_fixups:
    .quad qlong_k_read_i, qlong_k_read_r
    .quad qlong_k_write_i, qlong_k_write_r
    .quad qlong_k_write32_i, qlong_k_write32_r
    .quad qlong_k_read_ac_i, qlong_k_read_ac_r
    .quad qlong_k_write_ac_i, qlong_k_write_ac_r
    .quad qlong_k_and8_i, qlong_k_and8_r
    .quad qlong_k_stosb_i, qlong_k_stosb_r
    .quad qlong_k_cmpxchg_i, qlong_k_cmpxchg_r
    .quad qlong_k_invlpg_i, qlong_k_invlpg_r
    .quad qlong_k_movcr3_i, qlong_k_movcr3_r
    .quad qlong_k_vmxon_i, qlong_k_vmxon_r
    .quad qlong_u_read_i, qlong_user_done
    .quad qlong_u_write_i, qlong_user_done
.text
"#
);

/// Entries of `qlong_fixups`.
const FIXUPS: usize = 13;

unsafe extern "C" {
    static qlong_fixups: [[u64; 2]; FIXUPS];
    static qlong_user_done: u8;
    static qlong_user_back: u8;
    fn qlong_k_read(addr: u64, a: u64, b: u64) -> u64;
    fn qlong_k_write(addr: u64, a: u64, b: u64) -> u64;
    fn qlong_k_write32(addr: u64, a: u64, b: u64) -> u64;
    fn qlong_k_read_ac(addr: u64, a: u64, b: u64) -> u64;
    fn qlong_k_write_ac(addr: u64, a: u64, b: u64) -> u64;
    fn qlong_k_and8(addr: u64, a: u64, b: u64) -> u64;
    fn qlong_k_stosb(addr: u64, a: u64, b: u64) -> u64;
    fn qlong_k_cmpxchg(addr: u64, a: u64, b: u64) -> u64;
    fn qlong_k_fetch(addr: u64, a: u64, b: u64) -> u64;
    fn qlong_k_invlpg(addr: u64, a: u64, b: u64) -> u64;
    fn qlong_k_movcr3(addr: u64, a: u64, b: u64) -> u64;
    fn qlong_k_vmxon(addr: u64, a: u64, b: u64) -> u64;
    fn qlong_user(addr: u64, op: u64, value: u64, stack: u64) -> u64;
}

/// Kernel RSP saved by `qlong_user` for the way back from CPL 3.
#[unsafe(no_mangle)]
static qlong_kernel_rsp: AtomicU64 = AtomicU64::new(0);

/// A probe is running: exceptions at listed instructions are recorded.
static ARMED: AtomicBool = AtomicBool::new(false);
/// The fetch probe's target (0: none).
static FETCH_TARGET: AtomicU64 = AtomicU64::new(0);
/// The recorded exception: vector + 1 (0: none), error code, CR2.
static FAULT_VECTOR: AtomicU64 = AtomicU64::new(0);
static FAULT_EC: AtomicU64 = AtomicU64::new(0);
static FAULT_CR2: AtomicU64 = AtomicU64::new(0);

/// Size of each private stack.
const STACK: usize = 16384;
/// A 16-byte aligned stack.
#[repr(C, align(16))]
struct Stack([AtomicU64; STACK / 8]);
/// The stack for exceptions from CPL 3 (TSS.RSP0).
static RSP0_STACK: Stack = Stack([const { AtomicU64::new(0) }; STACK / 8]);
/// The user routine's stack (identity-mapped like the whole image).
static USER_STACK: Stack = Stack([const { AtomicU64::new(0) }; STACK / 8]);

/// Our GDT: null, 0x08 64-bit code DPL 0, 0x10 data DPL 0, 0x18 data DPL 3,
/// 0x20 64-bit code DPL 3, 0x28/0x30 the 64-bit TSS descriptor (SDM Vol. 3A
/// 3.4.5, 8.2.3).
static GDT: [AtomicU64; 7] = [
    AtomicU64::new(0),
    AtomicU64::new(0x00AF_9A00_0000_FFFF),
    AtomicU64::new(0x00CF_9200_0000_FFFF),
    AtomicU64::new(0x00CF_F200_0000_FFFF),
    AtomicU64::new(0x00AF_FA00_0000_FFFF),
    AtomicU64::new(0),
    AtomicU64::new(0),
];
/// The 64-bit TSS (104 bytes, SDM Vol. 3A 8.7): RSP0 at byte 4, the I/O
/// map base at byte 102 (= 104: no I/O bitmap).
static TSS: [AtomicU32; 26] = [const { AtomicU32::new(0) }; 26];
/// TR was loaded.
static TR_LOADED: AtomicBool = AtomicBool::new(false);

/// A descriptor-table register image for LGDT/SGDT.
#[repr(C, packed)]
#[derive(Clone, Copy, Default)]
struct Dtr {
    limit: u16,
    base: u64,
}

/// Loads our GDT (and TR, the first time); returns the GDTR to restore.
fn enter_segments() -> Dtr {
    let mut old = Dtr::default();
    // SAFETY: SGDT writes the 10-byte image only.
    unsafe { asm!("sgdt [{}]", in(reg) &raw mut old, options(nostack, preserves_flags)) };
    let new = Dtr { limit: (core::mem::size_of_val(&GDT) - 1) as u16, base: GDT.as_ptr() as u64 };
    if !TR_LOADED.load(Ordering::Relaxed) {
        let rsp0 = RSP0_STACK.0.as_ptr() as u64 + STACK as u64;
        TSS[1].store(rsp0 as u32, Ordering::Relaxed);
        TSS[2].store((rsp0 >> 32) as u32, Ordering::Relaxed);
        TSS[25].store(104 << 16, Ordering::Relaxed);
        let base = TSS.as_ptr() as u64;
        let limit = 103u64;
        let lo = limit | ((base & 0xFF_FFFF) << 16) | (0x89 << 40) | (((base >> 24) & 0xFF) << 56);
        GDT[5].store(lo, Ordering::Relaxed);
        GDT[6].store(base >> 32, Ordering::Relaxed);
    }
    // SAFETY: GDT is a static holding the boot selectors unchanged (so CS
    // and SS stay valid) plus the user segments and the TSS; it lives
    // forever. LTR only marks the TSS busy.
    unsafe {
        asm!("lgdt [{}]", in(reg) &raw const new, options(readonly, nostack, preserves_flags));
        if !TR_LOADED.swap(true, Ordering::Relaxed) {
            asm!("ltr {:x}", in(reg) TSS_SEL, options(nostack, preserves_flags));
        }
    }
    old
}

/// Reloads the GDTR `enter_segments` saved.
fn leave_segments(old: Dtr) {
    // SAFETY: the GDT that was loaded before; our selectors are no longer
    // in use (TR stays cached and is only used on a privilege change).
    unsafe { asm!("lgdt [{}]", in(reg) &raw const old, options(readonly, nostack, preserves_flags)) };
}

/// Called first by the exception handler: handles an exception of an armed
/// probe (recording it, or returning from CPL 3) and says whether it did.
pub fn fixup(frame: &mut TrapFrame) -> bool {
    if !ARMED.load(Ordering::Relaxed) {
        return false;
    }
    let rip = frame.rip;
    if frame.vector == 6 && frame.cs & 3 == 3 && rip == &raw const qlong_user_done as u64 {
        frame.cs = KERNEL_CS;
        frame.ss = KERNEL_SS;
        frame.rsp = qlong_kernel_rsp.load(Ordering::Relaxed);
        frame.rip = &raw const qlong_user_back as u64;
        return true;
    }
    let record = |frame: &TrapFrame| {
        FAULT_VECTOR.store(frame.vector + 1, Ordering::Relaxed);
        FAULT_EC.store(frame.error_code, Ordering::Relaxed);
        FAULT_CR2.store(cpu::read_cr2(), Ordering::Relaxed);
    };
    // SAFETY: the table is initialised read-only data of FIXUPS entries.
    let table = unsafe { &qlong_fixups };
    if let Some(&[_, resume]) = table.iter().find(|e| e[0] == rip) {
        record(frame);
        frame.rip = resume;
        return true;
    }
    let target = FETCH_TARGET.load(Ordering::Relaxed);
    if frame.vector == 14 && target != 0 && rip == target {
        record(frame);
        // SAFETY: `call` pushed the return address on the probe's stack
        // (the kernel stack or USER_STACK), which is mapped and readable.
        frame.rip = unsafe { (frame.rsp as *const u64).read_volatile() };
        frame.rsp += 8;
        return true;
    }
    false
}

impl LongCpu for super::machine::BareMachine {
    fn probe(&mut self, op: Op, addr: u64, cpl: Cpl) -> Probe {
        FAULT_VECTOR.store(0, Ordering::Relaxed);
        FETCH_TARGET.store(if op == Op::Fetch { addr } else { 0 }, Ordering::Relaxed);
        ARMED.store(true, Ordering::SeqCst);
        let value = match cpl {
            // SAFETY: the LongCpu contract: the checks probe only their
            // own tables and data frames (writes) or any address (reads,
            // fetches of a `ret`), and load only CR3 values naming tables
            // they built; a faulting probe resumes through the fixups.
            Cpl::Sup => unsafe {
                match op {
                    Op::Read => qlong_k_read(addr, 0, 0),
                    Op::Write(v) => qlong_k_write(addr, v, 0),
                    Op::Write32(v) => qlong_k_write32(addr, u64::from(v), 0),
                    Op::ReadAc => qlong_k_read_ac(addr, 0, 0),
                    Op::WriteAc(v) => qlong_k_write_ac(addr, v, 0),
                    Op::AndByte(m) => qlong_k_and8(addr, u64::from(m), 0),
                    Op::RepStosb { byte, len } => qlong_k_stosb(addr, u64::from(byte), len),
                    Op::LockCmpxchg { expect, new } => qlong_k_cmpxchg(addr, expect, new),
                    Op::Fetch => qlong_k_fetch(addr, 0, 0),
                    Op::Invlpg => qlong_k_invlpg(addr, 0, 0),
                    Op::MovCr3 => qlong_k_movcr3(addr, 0, 0),
                    Op::Vmxon => qlong_k_vmxon(addr, 0, 0),
                }
            },
            Cpl::User => {
                let (code, v) = match op {
                    Op::Read => (0, 0),
                    Op::Write(v) => (1, v),
                    Op::Fetch => (2, 0),
                    _ => {
                        ARMED.store(false, Ordering::SeqCst);
                        return Err(Fault { vector: 255, error_code: 0, cr2: 0 });
                    }
                };
                let old = enter_segments();
                let top = USER_STACK.0.as_ptr() as u64 + STACK as u64;
                // SAFETY: as for CPL 0; the user routine and USER_STACK
                // are in the image, which the probed tables map with U=1,
                // and the #UD at its end brings it back here.
                let r = unsafe { qlong_user(addr, code, v, top) };
                leave_segments(old);
                r
            }
        };
        ARMED.store(false, Ordering::SeqCst);
        FETCH_TARGET.store(0, Ordering::Relaxed);
        match FAULT_VECTOR.load(Ordering::Relaxed) {
            0 => Ok(value),
            v => Err(Fault {
                vector: (v - 1) as u8,
                error_code: FAULT_EC.load(Ordering::Relaxed),
                cr2: FAULT_CR2.load(Ordering::Relaxed),
            }),
        }
    }

    fn cr3(&mut self) -> u64 {
        let v: u64;
        // SAFETY: reading CR3 has no side effects.
        unsafe { asm!("mov {}, cr3", out(reg) v, options(nomem, nostack, preserves_flags)) };
        v
    }

    fn set_cr0_wp(&mut self, on: bool) {
        let wp = 1u64 << 16;
        let cr0 = cpu::read_cr0();
        let new = if on { cr0 | wp } else { cr0 & !wp };
        // SAFETY: CR0.WP only changes whether supervisor writes honour
        // read-only pages; the guest never relies on either.
        unsafe { asm!("mov cr0, {}", in(reg) new, options(nostack, preserves_flags)) };
    }

    fn set_efer_nxe(&mut self, on: bool) {
        let nxe = 1u64 << 11;
        let efer = cpu::read_efer();
        let new = if on { efer | nxe } else { efer & !nxe };
        // SAFETY: EFER.NXE only gives bit 63 of paging entries its XD
        // meaning; the boot tables never set bit 63. Callers check
        // CPUID.80000001H:EDX.NX first.
        unsafe {
            asm!("wrmsr", in("ecx") 0xC000_0080u32, in("eax") new as u32, in("edx") (new >> 32) as u32,
                 options(nostack, preserves_flags));
        }
    }

    fn set_cr4(&mut self, bits: u64, on: bool) {
        let bits = bits & cr4::ALL;
        let old = cpu::read_cr4();
        let new = if on { old | bits } else { old & !bits };
        // SAFETY: PGE only changes which translations survive a CR3 load
        // (and toggling it flushes the TLB); SMEP/SMAP only add supervisor
        // faults on user pages, and the LongCpu contract has the caller
        // check CPUID and run on tables that map the guest itself
        // supervisor-only while they are set.
        unsafe { asm!("mov cr4, {}", in(reg) new, options(nostack, preserves_flags)) };
    }
}
