//! The engine's assembly: one blob in its own section, assembled for
//! `layout::BLOB_BASE` (every absolute address is `QM_BASE + label -
//! qm_start`; everything else is relative), so the copy at that address
//! runs in real mode with CS = 0 as well as in 32-bit and 64-bit code.
//! Its header (five words: length, entry, and the offsets of the 16-bit,
//! 32-bit and 64-bit exception stubs) is what `super::info` reads. See
//! `super` for the transitions and the SDM steps each follows.

use core::arch::global_asm;
use guest_unikernel::modes::layout as l;
use guest_unikernel::modes::probe::code as op;

global_asm!(
    r#"
.set QM_BASE, {blob}
.set QM_EFER, 0xC0000080
.section .rodata.quadrant_modes, "a"
.balign 16
.global quadrant_modes_blob
quadrant_modes_blob:
qm_start:
    .long qm_end - qm_start
    .long qm_enter - qm_start
    .long qm_stubs16 - qm_start
    .long qm_stubs32 - qm_start
    .long qm_stubs64 - qm_start
    .balign 16

/* ---- 64-bit entry, called from Rust: extern "C" fn() ---- */
.code64
qm_enter:
    push %rbx
    push %rbp
    push %r12
    push %r13
    push %r14
    push %r15
    pushfq
    cli
    mov %rsp, {v_rsp}
    mov %cr0, %rax
    mov %rax, {v_cr0}
    mov %cr3, %rax
    mov %rax, {v_cr3}
    mov %cr4, %rax
    mov %rax, {v_cr4}
    mov $QM_EFER, %ecx
    rdmsr
    mov %eax, {v_efer}
    mov %edx, {v_efer}+4
    mov %cs, %ax
    mov %ax, {v_cs}
    mov %ss, %ax
    mov %ax, {v_ss}
    mov %ds, %ax
    mov %ax, {v_ds}
    sgdt {v_gdtr}
    sidt {v_idtr}
    movl ${stops}, {v_stop}
    lgdt {gdtr}
    /* SDM Vol. 3A 10.8.5.4 step 1: to compatibility mode (32-bit CS) */
    pushq ${code32}
    pushq $(QM_BASE + qm_compat - qm_start)
    lretq

.code32
qm_compat:
    /* step 2: clear CR0.PG; IA-32e mode is off (this code is identity-mapped) */
    mov %cr0, %eax
    and $0x7fffffff, %eax
    mov %eax, %cr0
    /* step 4: clear IA32_EFER.LME */
    mov $QM_EFER, %ecx
    rdmsr
    and $0xfffffeff, %eax
    wrmsr
    mov ${data32}, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %fs
    mov %eax, %gs
    mov %eax, %ss
    mov ${stack}, %esp
    lidt {idtr32}

/* ---- the hub: protected mode, paging off ---- */
qm_hub:
    cmpl $0, {stop_count}
    je qm_leave
    mov {v_stop}, %ebx
    mov 16(%ebx), %eax
    mov %eax, {v_op}
    mov 20(%ebx), %eax
    mov %eax, {v_left}
    mov 24(%ebx), %eax
    mov %eax, {v_result}
    mov (%ebx), %eax
    cmp $0, %eax
    je qm_to_real
    cmp $1, %eax
    je qm_to_prot
    cmp $4, %eax
    je qm_to_long
    /* 32-bit paging or PAE (SDM Vol. 3A 4.1.2): CR4, CR3, then CR0.PG */
    mov 12(%ebx), %eax
    mov %eax, %cr4
    mov 8(%ebx), %eax
    mov %eax, %cr3
    mov 4(%ebx), %eax
    mov %eax, %cr0
    jmp 1f
1:  call qm_interp32
    mov %cr0, %eax
    and $0x7fffffff, %eax
    mov %eax, %cr0
    jmp qm_stop_done

qm_to_prot:
    mov 12(%ebx), %eax
    mov %eax, %cr4
    mov 4(%ebx), %eax
    mov %eax, %cr0
    call qm_interp32
    jmp qm_stop_done

qm_stop_done:
    addl ${stop_size}, {v_stop}
    decl {stop_count}
    jmp qm_hub

/* ---- long mode with the stop's CR3 (SDM Vol. 3A 10.8.5) ---- */
qm_to_long:
    mov 12(%ebx), %eax
    mov %eax, %cr4
    mov 8(%ebx), %eax
    mov %eax, %cr3
    mov $QM_EFER, %ecx
    rdmsr
    or $0x100, %eax
    wrmsr
    mov 4(%ebx), %eax
    mov %eax, %cr0
    ljmp ${code64}, $(QM_BASE + qm_long64 - qm_start)
.code64
qm_long64:
    lidt {idtr64}
    mov ${stack}, %esp
    call qm_interp64
    /* SDM Vol. 3A 10.8.5.4: compatibility mode, then PG and LME off */
    pushq ${code32}
    pushq $(QM_BASE + qm_long_out - qm_start)
    lretq
.code32
qm_long_out:
    mov %cr0, %eax
    and $0x7fffffff, %eax
    mov %eax, %cr0
    mov $QM_EFER, %ecx
    rdmsr
    and $0xfffffeff, %eax
    wrmsr
    lidt {idtr32}
    jmp qm_stop_done

/* ---- real mode (SDM Vol. 3A 10.9.2), then back (10.9.1) ---- */
qm_to_real:
    /* the stop's CR4, and its CR0 with PE still set (PE goes at step 6) */
    mov 12(%ebx), %eax
    mov %eax, %cr4
    mov 4(%ebx), %eax
    or $1, %eax
    mov %eax, %cr0
    /* step 3: a 16-bit code segment with a 64 KiB limit */
    ljmp ${code16}, $(QM_BASE + qm_pm16 - qm_start)
.code16
qm_pm16:
    /* step 4: data segments with a 64 KiB limit */
    mov ${data16}, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %fs
    mov %ax, %gs
    mov %ax, %ss
    /* step 5: the real-mode IVT */
    lidtl {ivt}
    /* step 6: clear CR0.PE */
    mov %cr0, %eax
    and $0xfffffffe, %eax
    mov %eax, %cr0
    /* step 7: far jump to real-mode code */
    ljmp $0, $(QM_BASE + qm_real - qm_start)
qm_real:
    /* step 8: real-mode segments */
    xor %ax, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %fs
    mov %ax, %gs
    mov %ax, %ss
    mov ${stack}, %esp
    call qm_interp16
    /* SDM Vol. 3A 10.9.1 steps 2-4: LGDT, set PE, far jump */
    lgdtl {gdtr}
    mov %cr0, %eax
    or $1, %eax
    mov %eax, %cr0
    ljmpl ${code32}, $(QM_BASE + qm_real_out - qm_start)
.code32
qm_real_out:
    /* steps 6-7: segment registers, IDT */
    mov ${data32}, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %fs
    mov %eax, %gs
    mov %eax, %ss
    mov ${stack}, %esp
    lidt {idtr32}
    jmp qm_stop_done

/* ---- home: long mode with the boot tables (SDM Vol. 3A 10.8.5) ---- */
qm_leave:
    mov {v_cr4}, %eax
    mov %eax, %cr4
    mov {v_cr3}, %eax
    mov %eax, %cr3
    mov $QM_EFER, %ecx
    mov {v_efer}, %eax
    and $0xfffffbff, %eax
    mov {v_efer}+4, %edx
    wrmsr
    mov {v_cr0}, %eax
    mov %eax, %cr0
    ljmp ${code64}, $(QM_BASE + qm_home - qm_start)
.code64
qm_home:
    lgdt {v_gdtr}
    lidt {v_idtr}
    mov {v_rsp}, %rsp
    mov {v_ss}, %ax
    mov %ax, %ss
    mov {v_ds}, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %fs
    mov %ax, %gs
    movzwl {v_cs}, %eax
    push %rax
    lea 2f(%rip), %rax
    push %rax
    lretq
2:  popfq
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %rbp
    pop %rbx
    ret

/* ---- the real-mode interpreter: READ32, WRITE32, READ_CR0, UD2 ---- */
.code16
qm_interp16:
    mov %esp, {v_recover}
qm_loop16:
    cmpl $0, {v_left}
    je 9f
    mov {v_op}, %esi
    mov {v_result}, %edi
    mov (%esi), %ax
    mov 2(%esi), %es
    mov 8(%esi), %ebx
    cmp ${op_read32}, %ax
    jne 1f
    mov %es:(%ebx), %eax
    jmp qm_store16
1:  cmp ${op_write32}, %ax
    jne 2f
    mov 4(%esi), %eax
    mov %eax, %es:(%ebx)
    xor %eax, %eax
    jmp qm_store16
2:  cmp ${op_read_cr0}, %ax
    jne 3f
    mov %cr0, %eax
    jmp qm_store16
3:  cmp ${op_ud2}, %ax
    jne 4f
    ud2
4:  movb $3, (%edi)
    jmp qm_next16
qm_store16:
    mov %eax, 8(%edi)
    movl $0, 12(%edi)
    movb $1, (%edi)
qm_next16:
    addl ${op_size}, {v_op}
    addl ${result_size}, {v_result}
    decl {v_left}
    jmp qm_loop16
9:  ret

qm_fault16:
    pop %ax
    mov {v_result}, %edi
    movb $2, (%edi)
    movb %al, 1(%edi)
    movl $0, 4(%edi)
    mov {v_recover}, %esp
    jmp qm_next16

/* ---- the 32-bit interpreter (protected mode, 32-bit paging, PAE) ----
   SHADOW_WALK is the one op that is a hypercall: the caller issues it
   only under the Quadrant hypervisor (bare, VMCALL is #UD, SDM Vol. 3C
   26.1.2, recorded like any fault). */
.code32
qm_interp32:
    mov %esp, {v_recover}
qm_loop32:
    cmpl $0, {v_left}
    je 9f
    mov {v_op}, %esi
    mov {v_result}, %edi
    movzwl (%esi), %eax
    mov 4(%esi), %edx
    mov 8(%esi), %ebx
    xor %ecx, %ecx
    cmp ${op_read32}, %eax
    jne 1f
    mov (%ebx), %eax
    jmp qm_store32
1:  cmp ${op_write32}, %eax
    jne 2f
    mov %edx, (%ebx)
    jmp qm_zero32
2:  cmp ${op_read64}, %eax
    jne 3f
    mov (%ebx), %eax
    mov 4(%ebx), %ecx
    jmp qm_store32
3:  cmp ${op_fetch}, %eax
    jne 4f
    call *%ebx
    jmp qm_zero32
4:  cmp ${op_invlpg}, %eax
    jne 5f
    invlpg (%ebx)
    jmp qm_zero32
5:  cmp ${op_mov_cr3}, %eax
    jne 6f
    mov %edx, %cr3
    mov %cr3, %eax
    jmp qm_store32
6:  cmp ${op_write_cr0}, %eax
    jne 7f
    mov %edx, %cr0
    mov %cr0, %eax
    jmp qm_store32
7:  cmp ${op_write_cr4}, %eax
    jne 8f
    mov %edx, %cr4
    mov %cr4, %eax
    jmp qm_store32
8:  cmp ${op_read_cr0}, %eax
    jne 1f
    mov %cr0, %eax
    jmp qm_store32
1:  cmp ${op_read_cr3}, %eax
    jne 2f
    mov %cr3, %eax
    jmp qm_store32
2:  cmp ${op_read_cr4}, %eax
    jne 3f
    mov %cr4, %eax
    jmp qm_store32
3:  cmp ${op_rdmsr}, %eax
    jne 4f
    mov %ebx, %ecx
    rdmsr
    mov %edx, %ecx
    jmp qm_store32
4:  cmp ${op_ud2}, %eax
    jne 5f
    ud2
5:  cmp ${op_shadow_walk}, %eax
    jne 6f
    /* VMCALL ShadowWalk (shared::hypercall): EBX the address, ECX the
       record's buffer (the op's value), EDX its length; RAX back */
    mov %edx, %ecx
    mov ${walk_size}, %edx
    mov ${hc_shadow_walk}, %eax
    vmcall
    xor %ecx, %ecx
    jmp qm_store32
6:  movb $3, (%edi)
    jmp qm_next32
qm_zero32:
    xor %eax, %eax
qm_store32:
    mov %eax, 8(%edi)
    mov %ecx, 12(%edi)
    movb $1, (%edi)
qm_next32:
    addl ${op_size}, {v_op}
    addl ${result_size}, {v_result}
    decl {v_left}
    jmp qm_loop32
9:  ret

qm_fault32:
    pop %eax
    pop %edx
    mov {v_result}, %edi
    movb $2, (%edi)
    movb %al, 1(%edi)
    mov %edx, 4(%edi)
    mov %cr2, %eax
    mov %eax, 16(%edi)
    movl $0, 20(%edi)
    mov {v_recover}, %esp
    jmp qm_next32

/* ---- the 64-bit interpreter (long mode with the stop's CR3) ---- */
.code64
qm_interp64:
    mov %rsp, {v_recover}
qm_loop64:
    cmpl $0, {v_left}
    je 9f
    mov {v_op}, %esi
    mov {v_result}, %edi
    movzwl (%rsi), %eax
    mov 4(%rsi), %edx
    mov 8(%rsi), %rbx
    cmp ${op_read32}, %eax
    jne 1f
    mov (%rbx), %eax
    jmp qm_store64
1:  cmp ${op_write32}, %eax
    jne 2f
    mov %edx, (%rbx)
    jmp qm_zero64
2:  cmp ${op_read64}, %eax
    jne 3f
    mov (%rbx), %rax
    jmp qm_store64
3:  cmp ${op_fetch}, %eax
    jne 4f
    call *%rbx
    jmp qm_zero64
4:  cmp ${op_invlpg}, %eax
    jne 5f
    invlpg (%rbx)
    jmp qm_zero64
5:  cmp ${op_mov_cr3}, %eax
    jne 6f
    mov %rdx, %cr3
    mov %cr3, %rax
    jmp qm_store64
6:  cmp ${op_write_cr0}, %eax
    jne 7f
    mov %rdx, %cr0
    mov %cr0, %rax
    jmp qm_store64
7:  cmp ${op_write_cr4}, %eax
    jne 8f
    mov %rdx, %cr4
    mov %cr4, %rax
    jmp qm_store64
8:  cmp ${op_read_cr0}, %eax
    jne 1f
    mov %cr0, %rax
    jmp qm_store64
1:  cmp ${op_read_cr3}, %eax
    jne 2f
    mov %cr3, %rax
    jmp qm_store64
2:  cmp ${op_read_cr4}, %eax
    jne 3f
    mov %cr4, %rax
    jmp qm_store64
3:  cmp ${op_rdmsr}, %eax
    jne 4f
    mov %ebx, %ecx
    rdmsr
    shl $32, %rdx
    or %rdx, %rax
    jmp qm_store64
4:  cmp ${op_ud2}, %eax
    jne 5f
    ud2
5:  cmp ${op_shadow_walk}, %eax
    jne 6f
    mov %edx, %ecx
    mov ${walk_size}, %edx
    mov ${hc_shadow_walk}, %eax
    vmcall
    jmp qm_store64
6:  movb $3, (%rdi)
    jmp qm_next64
qm_zero64:
    xor %eax, %eax
qm_store64:
    mov %rax, 8(%rdi)
    movb $1, (%rdi)
qm_next64:
    addl ${op_size}, {v_op}
    addl ${result_size}, {v_result}
    decl {v_left}
    jmp qm_loop64
9:  ret

qm_fault64:
    pop %rax
    pop %rdx
    mov {v_result}, %edi
    movb $2, (%rdi)
    movb %al, 1(%rdi)
    mov %edx, 4(%rdi)
    mov %cr2, %rax
    mov %rax, 16(%rdi)
    mov {v_recover}, %rsp
    jmp qm_next64

/* ---- exception stubs, 16 bytes apart ---- */
.macro QM_STUBS bits, handler
.set qm_v, 0
.rept 32
    .balign 16
    .if !((qm_v == 8) || ((qm_v >= 10) && (qm_v <= 14)) || (qm_v == 17) || (qm_v == 21) || (qm_v == 29) || (qm_v == 30)) || (\bits == 16)
    .if \bits != 16
    push $0
    .endif
    .endif
    push $qm_v
    jmp \handler
    .set qm_v, qm_v + 1
.endr
.endm
.code16
.balign 16
qm_stubs16:
    QM_STUBS 16, qm_fault16
.code32
.balign 16
qm_stubs32:
    QM_STUBS 32, qm_fault32
.code64
.balign 16
qm_stubs64:
    QM_STUBS 64, qm_fault64
.balign 16
qm_end:
.text
"#,
    blob = const l::BLOB_BASE,
    stack = const l::STACK_TOP,
    gdtr = const l::GDTR_PD,
    idtr32 = const l::IDTR32_PD,
    idtr64 = const l::IDTR64_PD,
    ivt = const l::IVT_PD,
    v_rsp = const l::V_RSP,
    v_cr0 = const l::V_CR0,
    v_cr3 = const l::V_CR3,
    v_cr4 = const l::V_CR4,
    v_gdtr = const l::V_GDTR,
    v_idtr = const l::V_IDTR,
    v_stop = const l::V_STOP,
    v_result = const l::V_RESULT,
    v_op = const l::V_OP,
    v_left = const l::V_LEFT,
    v_recover = const l::V_RECOVER,
    v_efer = const l::V_EFER,
    v_cs = const l::V_CS,
    v_ss = const l::V_SS,
    v_ds = const l::V_DS,
    stops = const l::STOPS,
    stop_count = const l::STOP_COUNT,
    stop_size = const l::STOP_SIZE,
    op_size = const l::OP_SIZE,
    result_size = const l::RESULT_SIZE,
    code64 = const l::SEL_CODE64,
    code32 = const l::SEL_CODE32,
    code16 = const l::SEL_CODE16,
    data32 = const l::SEL_DATA32,
    data16 = const l::SEL_DATA16,
    op_read32 = const op::READ32,
    op_write32 = const op::WRITE32,
    op_read64 = const op::READ64,
    op_fetch = const op::FETCH,
    op_invlpg = const op::INVLPG,
    op_mov_cr3 = const op::MOV_CR3,
    op_write_cr0 = const op::WRITE_CR0,
    op_write_cr4 = const op::WRITE_CR4,
    op_read_cr0 = const op::READ_CR0,
    op_read_cr3 = const op::READ_CR3,
    op_read_cr4 = const op::READ_CR4,
    op_rdmsr = const op::RDMSR,
    op_ud2 = const op::UD2,
    op_shadow_walk = const op::SHADOW_WALK,
    hc_shadow_walk = const shared::hypercall::Hypercall::ShadowWalk as u64,
    walk_size = const shared::hypercall::ShadowWalkRecord::SIZE,
    options(att_syntax)
);

