//! The Multiboot 1 and Multiboot 2 headers, the entry and the switch to long
//! mode.
//!
//! The image carries both headers, so GRUB's `multiboot` (and QEMU's
//! `-kernel`) and GRUB's `multiboot2` (the UEFI path: no legacy BIOS
//! structures needed) load the same file at the same place. Either loader
//! hands over in 32-bit protected mode with paging off and EBX = its
//! information structure; EAX tells them apart: 0x2BADB002 for Multiboot 1
//! (specification 0.6.96, section 3.2), 0x36D76289 for Multiboot 2
//! (specification 2.0, section 3.3). The entry keeps those and the hand-off CR0,
//! CS and EFLAGS in [`HANDOFF`], then enables long mode as the SDM Vol. 3A
//! section 10.8.5 orders it: CR4.PAE, CR3, IA32_EFER.LME, then CR0.PG.
//!
//! IA32_EFER is written whole (LME alone), not read-modify-written: UEFI
//! firmware hands over with EFER.NXE set, which changes #PF error codes
//! (the I/D bit, SDM Vol. 3A 4.7) for a guest that expects the reset value.
//!
//! It also prepares what compiled Rust needs before its first instruction:
//! the target emits SSE, so CR4.OSFXSR|OSXMMEXCPT and CR0.MP are set and
//! CR0.EM cleared (SDM Vol. 3A 13.1.3); firmware may leave caches off, so
//! CR0.CD and CR0.NW are cleared (SDM Vol. 3A 12.5.1).

use core::sync::atomic::{AtomicU32, Ordering};

/// The machine state the loader handed over, recorded by the 32-bit entry
/// before it changed anything: magic (EAX), info address (EBX), CR0, CS,
/// EFLAGS, in that order.
#[unsafe(no_mangle)]
pub static HANDOFF: [AtomicU32; 5] = [const { AtomicU32::new(0) }; 5];

/// The hand-off state as the entry recorded it.
#[derive(Clone, Copy, Debug)]
pub struct Handoff {
    /// EAX at entry (0x2BADB002 for a Multiboot 1 loader, 0x36D76289 for
    /// Multiboot 2).
    pub magic: u32,
    /// EBX at entry: physical address of the Multiboot information block
    /// (Multiboot 1) or boot information structure (Multiboot 2).
    pub info: u32,
    /// CR0 at entry (the specification requires PE=1, PG=0).
    pub cr0: u32,
    /// CS selector at entry.
    pub cs: u32,
    /// EFLAGS at entry (the specification requires VM=0, IF=0).
    pub eflags: u32,
}

/// Reads what the entry recorded.
pub fn handoff() -> Handoff {
    let r = |i: usize| HANDOFF[i].load(Ordering::Relaxed);
    Handoff { magic: r(0), info: r(1), cr0: r(2), cs: r(3), eflags: r(4) }
}

/// Multiboot 1 header flags: bit 0 page-align modules, bit 1 memory
/// information, bit 16 the a.out kludge (load addresses in the header).
pub const MULTIBOOT_HEADER_FLAGS: u32 = 0x0001_0003;

/// Multiboot 2 header magic (specification 2.0, section 3.1.1).
pub const MULTIBOOT2_HEADER_MAGIC: u32 = 0xE852_50D6;
/// EAX at entry from a Multiboot 2 loader (specification 2.0, section 3.3).
pub const MULTIBOOT2_BOOTLOADER_MAGIC: u32 = 0x36D7_6289;

core::arch::global_asm!(
    r#"
.section .multiboot_header, "a"
.align 4
multiboot_header:
    .long 0x1BADB002
    .long {flags}
    .long -(0x1BADB002 + {flags})
    .long multiboot_header          /* header_addr   */
    .long __load_start              /* load_addr     */
    .long __load_end                /* load_end_addr */
    .long __bss_end                 /* bss_end_addr  */
    .long _start32                  /* entry_addr    */

/* Multiboot 2 header (specification 2.0, 3.1): 8-byte aligned within the
 * first 32 KiB; architecture 0 (i386 protected mode). Tags, each 8-byte
 * aligned: the address tag (the same a.out-style load addresses as above),
 * the entry address, and an optional framebuffer request with no preferred
 * size (UEFI: GRUB passes the GOP mode it has; the hypervisor draws its log
 * and result banner there). */
.align 8
multiboot2_header:
    .long {mb2_magic}
    .long 0                         /* architecture: i386 */
    .long multiboot2_header_end - multiboot2_header
    .long -({mb2_magic} + (multiboot2_header_end - multiboot2_header))
.align 8
    .short 2                        /* address tag */
    .short 0
    .long 24
    .long multiboot2_header         /* header_addr   */
    .long __load_start              /* load_addr     */
    .long __load_end                /* load_end_addr */
    .long __bss_end                 /* bss_end_addr  */
.align 8
    .short 3                        /* entry address tag */
    .short 0
    .long 12
    .long _start32
.align 8
    .short 5                        /* framebuffer tag, optional */
    .short 1
    .long 20
    .long 0                         /* width: no preference  */
    .long 0                         /* height: no preference */
    .long 32                        /* depth */
.align 8
    .short 0                        /* end tag */
    .short 0
    .long 8
multiboot2_header_end:

.section .text.boot, "ax"
.code32
.global _start32
_start32:
    cli
    cld
    movl %eax, %ebp                 /* keep the magic: rep stosb uses EAX */
    /* zero .bss first: HANDOFF, the stack and the page tables live there */
    movl $__bss_start, %edi
    movl $__bss_end, %ecx
    subl %edi, %ecx
    xorl %eax, %eax
    rep stosb
    movl $boot_stack_top, %esp      /* ESP is undefined at Multiboot entry */
    movl %ebp, HANDOFF
    movl %ebx, HANDOFF+4
    movl %cr0, %eax
    movl %eax, HANDOFF+8
    movw %cs, %ax
    movzwl %ax, %eax
    movl %eax, HANDOFF+12
    pushfl
    popl %eax
    movl %eax, HANDOFF+16
    movl $boot_stack_top, %esp

    /* PML4[0] -> PDPT; PDPT[0..4] -> PD[0..4]; 2048 x 2 MiB = 4 GiB identity */
    movl $boot_pdpt, %eax
    orl $3, %eax
    movl %eax, boot_pml4
    xorl %ecx, %ecx
1:  movl %ecx, %eax
    shll $12, %eax
    addl $boot_pd, %eax
    orl $3, %eax
    movl %eax, boot_pdpt(,%ecx,8)
    incl %ecx
    cmpl $4, %ecx
    jne 1b
    xorl %ecx, %ecx
2:  movl %ecx, %eax
    shll $21, %eax
    orl $0x83, %eax
    movl %eax, boot_pd(,%ecx,8)
    incl %ecx
    cmpl $2048, %ecx
    jne 2b

    /* CR4: PAE | OSFXSR | OSXMMEXCPT */
    movl %cr4, %eax
    orl $((1<<5)|(1<<9)|(1<<10)), %eax
    movl %eax, %cr4
    movl $boot_pml4, %eax
    movl %eax, %cr3
    /* IA32_EFER = LME alone: UEFI firmware leaves NXE (and SCE) set, and
     * the kernels must start from the same EFER whatever booted them */
    movl $0xC0000080, %ecx
    movl $(1<<8), %eax
    xorl %edx, %edx
    wrmsr
    /* CR0: PG | NE | MP | PE; clear EM, CD, NW */
    movl %cr0, %eax
    andl $~((1<<2)|(1<<29)|(1<<30)), %eax
    orl $((1<<31)|(1<<5)|(1<<1)|(1<<0)), %eax
    movl %eax, %cr0
    lgdt boot_gdt_ptr
    ljmp $0x08, $boot_long_mode

.code64
boot_long_mode:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movw %ax, %fs
    movw %ax, %gs
    movq $boot_stack_top, %rsp
    movl HANDOFF(%rip), %edi
    movl HANDOFF+4(%rip), %esi
    call quadrant_kernel_main
3:  cli
    hlt
    jmp 3b

.section .data.boot, "aw"
.align 16
boot_gdt:
    .quad 0
    .quad 0x00AF9A000000FFFF        /* 0x08: 64-bit code, DPL 0 */
    .quad 0x00CF92000000FFFF        /* 0x10: flat data */
boot_gdt_end:
.align 16
.global boot_gdt_ptr
boot_gdt_ptr:
    .word boot_gdt_end - boot_gdt - 1
    .quad boot_gdt

.section .bss.boot, "aw", @nobits
.align 4096
/* The stack below the page tables: an overflow runs into other .bss, never
   into the identity map (whose top entries map the local APIC). */
.global boot_stack_bottom
boot_stack_bottom: .skip 131072
.global boot_stack_top
boot_stack_top:
.global boot_pml4
boot_pml4: .skip 4096
boot_pdpt: .skip 4096
boot_pd:   .skip 4096*4
"#,
    flags = const MULTIBOOT_HEADER_FLAGS,
    mb2_magic = const MULTIBOOT2_HEADER_MAGIC,
    options(att_syntax)
);
