//! Starting application processors, for both kernels: the trampoline an AP
//! runs after INIT-SIPI-SIPI (SDM Vol. 3A 9.4.4.1) from real mode up to
//! long mode on the BSP's page tables, and then the kernel's
//! `quadrant_ap_main(ticket, page)` on a stack of its own.
//!
//! The trampoline is copied to a 4 KiB page below 1 MiB; a start-up IPI
//! with vector `page >> 12` starts an AP there with CS = `page >> 4`,
//! IP = 0 (9.4.4.1). The AP then, in real mode:
//! 1. takes a ticket (`lock xadd` on a counter in the page): its number
//!    among the APs, which picks its stack and its record;
//! 2. writes a [`RealModeRecord`] (CS, the machine status word, FLAGS, SP):
//!    what real mode looked like to it (the guest checks it);
//! 3. waits while the `hold` word is set (the guest keeps an AP in real
//!    mode while the BSP runs in long mode, DESIGN.md scenario 19);
//! 4. loads a small GDT, sets CR0.PE and far-jumps to 32-bit code (SDM Vol.
//!    3A 10.9.1), enables PAE, loads CR3, sets IA32_EFER.LME and CR0.PG and
//!    far-jumps to 64-bit code (10.8.5), with SSE enabled and the caches on
//!    as [`crate::boot`] does for the BSP;
//! 5. in long mode loads bare-rt's boot GDT, takes its stack
//!    (`stack_base + (ticket + 1) * stack_size`) and calls
//!    `quadrant_ap_main(ticket, page)`.
//!
//! Everything the 16- and 32-bit code needs is addressed relative to the
//! page (DS = CS in real mode, EBP = the page's address afterwards), so the
//! blob runs at any page; [`Trampoline::install`] patches in the few
//! absolute values (GDT base, far-jump targets, CR3, the 64-bit entry).

use core::sync::atomic::{AtomicU32, Ordering};

/// Offsets inside the trampoline page.
mod off {
    /// Top of the real-mode stack.
    pub const STACK16: u64 = 0xC00;
    /// The temporary GDT: null, 32-bit code (0x08), data (0x10), 64-bit code (0x18).
    pub const GDT: u64 = 0xD00;
    /// GDTR pseudo-descriptor (limit u16, base u32).
    pub const GDTR: u64 = 0xD20;
    /// Far pointer (offset u32, selector u16) to the 32-bit code.
    pub const FAR32: u64 = 0xD28;
    /// Far pointer to the 64-bit code.
    pub const FAR64: u64 = 0xD30;
    /// CR3 for long mode (u32: the tables lie below 4 GiB).
    pub const CR3: u64 = 0xD38;
    /// Address of `bare_rt_ap_entry64` (u32).
    pub const ENTRY64: u64 = 0xD3C;
    /// Stack base and per-AP stack size (u64 each).
    pub const STACK_BASE: u64 = 0xD40;
    #[allow(missing_docs)]
    pub const STACK_SIZE: u64 = 0xD48;
    /// Next ticket (u32, `lock xadd` in real mode).
    pub const TICKET: u64 = 0xD50;
    /// Non-zero: APs wait in real mode (u32).
    pub const HOLD: u64 = 0xD54;
    /// APs that reached long mode (u32).
    pub const STARTED: u64 = 0xD58;
    /// The real-mode records, 16 bytes per ticket.
    pub const RECORDS: u64 = 0xE00;
}

/// Most APs one trampoline starts (records fit 0xE00..0x1000).
pub const MAX_APS: u32 = 32;

/// What an AP saw in real mode, written by the trampoline before it left it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RealModeRecord {
    /// CS (the start-up IPI's vector << 8).
    pub cs: u16,
    /// The machine status word (SMSW: CR0 bits 15:0; PE = bit 0).
    pub msw: u16,
    /// FLAGS.
    pub flags: u16,
    /// SP when the record was written.
    pub sp: u16,
    /// [`RECORD_MARKER`] once written.
    pub marker: u32,
    /// 1 once the AP left the hold loop.
    pub released: u32,
}

/// "REAL", little-endian.
pub const RECORD_MARKER: u32 = 0x4C41_4552;

core::arch::global_asm!(
    r#"
.section .text.ap_trampoline, "ax"
.code16
.global bare_rt_ap_tramp_start
bare_rt_ap_tramp_start:
    cli
    cld
    movw %cs, %ax
    movw %ax, %ds
    movw %ax, %ss
    movw ${stack16}, %sp
    movzwl %ax, %ebp
    shll $4, %ebp                       /* EBP = the page's physical address */
    movl $1, %ebx
    lock xaddl %ebx, ({ticket})         /* EBX = this AP's ticket */
    movl %ebx, %edi
    andl $31, %edi
    shll $4, %edi
    addl ${records}, %edi               /* DI = this AP's record */
    movw %cs, %ax
    movw %ax, 0(%di)
    smsw %ax
    movw %ax, 2(%di)
    pushfw
    popw %ax
    movw %ax, 4(%di)
    movw %sp, %ax
    movw %ax, 6(%di)
    movl ${marker}, %eax
    movl %eax, 8(%di)
1:  cmpl $0, ({hold})
    je 2f
    pause
    jmp 1b
2:  movl $1, 12(%di)
    lgdtl ({gdtr})
    movl %cr0, %eax
    orl $1, %eax
    movl %eax, %cr0
    ljmpl *({far32})

.code32
.global bare_rt_ap_tramp32
bare_rt_ap_tramp32:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movw %ax, %fs
    movw %ax, %gs
    movl %cr4, %eax
    orl $((1<<5)|(1<<9)|(1<<10)), %eax  /* PAE | OSFXSR | OSXMMEXCPT */
    movl %eax, %cr4
    movl {cr3}(%ebp), %eax
    movl %eax, %cr3
    movl $0xC0000080, %ecx              /* IA32_EFER = LME alone, as the BSP's entry */
    movl $(1<<8), %eax
    xorl %edx, %edx
    wrmsr
    movl %cr0, %eax
    andl $~((1<<2)|(1<<29)|(1<<30)), %eax   /* EM, NW, CD off */
    orl $((1<<31)|(1<<5)|(1<<1)|(1<<0)), %eax /* PG | NE | MP | PE */
    movl %eax, %cr0
    ljmpl *{far64}(%ebp)

.code64
.global bare_rt_ap_tramp64
bare_rt_ap_tramp64:
    movl %ebp, %ebp                     /* zero-extend: upper halves are undefined */
    movl %ebx, %ebx
    movl {entry64}(%rbp), %eax
    jmp *%rax
.global bare_rt_ap_tramp_end
bare_rt_ap_tramp_end:

.section .text
.global bare_rt_ap_entry64
bare_rt_ap_entry64:
    lgdt boot_gdt_ptr(%rip)
    pushq $0x08
    leaq 3f(%rip), %rax
    pushq %rax
    lretq
3:  movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movw %ax, %fs
    movw %ax, %gs
    leaq 1(%rbx), %rax
    imulq {stack_size}(%rbp), %rax
    addq {stack_base}(%rbp), %rax
    andq $-16, %rax
    movq %rax, %rsp
    lock incl {started}(%rbp)
    movl %ebx, %edi
    movq %rbp, %rsi
    call quadrant_ap_main
4:  cli
    hlt
    jmp 4b
"#,
    stack16 = const off::STACK16,
    ticket = const off::TICKET,
    records = const off::RECORDS,
    marker = const RECORD_MARKER,
    hold = const off::HOLD,
    gdtr = const off::GDTR,
    far32 = const off::FAR32,
    far64 = const off::FAR64,
    cr3 = const off::CR3,
    entry64 = const off::ENTRY64,
    stack_size = const off::STACK_SIZE,
    stack_base = const off::STACK_BASE,
    started = const off::STARTED,
    options(att_syntax)
);

unsafe extern "C" {
    static bare_rt_ap_tramp_start: u8;
    static bare_rt_ap_tramp32: u8;
    static bare_rt_ap_tramp64: u8;
    static bare_rt_ap_tramp_end: u8;
    static bare_rt_ap_entry64: u8;
}

/// An installed trampoline page.
#[derive(Clone, Copy, Debug)]
pub struct Trampoline {
    page: u64,
}

/// The temporary GDT's descriptors (SDM Vol. 3A 3.4.5): flat 32-bit code,
/// flat data, 64-bit code.
const GDT: [u64; 4] = [0, 0x00CF_9A00_0000_FFFF, 0x00CF_9200_0000_FFFF, 0x00AF_9A00_0000_FFFF];

impl Trampoline {
    /// Copies the trampoline to `page` and fills in its parameters: the
    /// APs will run on page tables `cr3` and on the stacks
    /// `stack_base + (ticket + 1) * stack_size` (tops), and wait in real
    /// mode after their record while `hold` (until [`Trampoline::release`]).
    ///
    /// # Safety
    /// `page` must be a 4 KiB aligned page of RAM below 1 MiB, identity
    /// mapped, that nothing else uses while APs start; `cr3` must map the
    /// kernel's image and the stacks like the BSP's own tables; the stacks
    /// must be RAM the caller reserves for the APs (one per ticket that will
    /// be taken).
    pub unsafe fn install(page: u64, cr3: u64, stack_base: u64, stack_size: u64, hold: bool) -> Trampoline {
        assert!(page.is_multiple_of(4096) && page < 0x10_0000 && cr3 < 1 << 32, "trampoline page or CR3 out of range");
        let start = &raw const bare_rt_ap_tramp_start as u64;
        let end = &raw const bare_rt_ap_tramp_end as u64;
        let len = (end - start) as usize;
        assert!(len as u64 <= off::STACK16 - 0x100, "trampoline code too long");
        let rel = |sym: u64| page + (sym - start);
        // SAFETY: the caller gives us the page; the source is our own code.
        unsafe {
            core::ptr::write_bytes(page as *mut u8, 0, 4096);
            core::ptr::copy_nonoverlapping(start as *const u8, page as *mut u8, len);
            let w32 = |o: u64, v: u32| core::ptr::write_volatile((page + o) as *mut u32, v);
            let w16 = |o: u64, v: u16| core::ptr::write_volatile((page + o) as *mut u16, v);
            let w64 = |o: u64, v: u64| core::ptr::write_volatile((page + o) as *mut u64, v);
            for (i, d) in GDT.iter().enumerate() {
                w64(off::GDT + 8 * i as u64, *d);
            }
            w16(off::GDTR, (GDT.len() * 8 - 1) as u16);
            w32(off::GDTR + 2, (page + off::GDT) as u32);
            w32(off::FAR32, rel(&raw const bare_rt_ap_tramp32 as u64) as u32);
            w16(off::FAR32 + 4, 0x08);
            w32(off::FAR64, rel(&raw const bare_rt_ap_tramp64 as u64) as u32);
            w16(off::FAR64 + 4, 0x18);
            w32(off::CR3, cr3 as u32);
            w32(off::ENTRY64, &raw const bare_rt_ap_entry64 as u64 as u32);
            w64(off::STACK_BASE, stack_base);
            w64(off::STACK_SIZE, stack_size);
            w32(off::HOLD, hold as u32);
        }
        Trampoline { page }
    }

    /// The trampoline at `page`, as `quadrant_ap_main` receives it.
    pub fn at(page: u64) -> Trampoline {
        Trampoline { page }
    }

    /// The page's address.
    pub fn page(&self) -> u64 {
        self.page
    }

    /// The start-up IPI vector that starts an AP here.
    pub fn vector(&self) -> u8 {
        (self.page >> 12) as u8
    }

    fn word(&self, o: u64) -> &AtomicU32 {
        // SAFETY: the page is the installed trampoline (owned by its user for
        // the run); the word is aligned and inside it, and APs access it
        // with atomic instructions too.
        unsafe { &*((self.page + o) as *const AtomicU32) }
    }

    /// Tickets taken: APs that ran the real-mode code.
    pub fn tickets(&self) -> u32 {
        self.word(off::TICKET).load(Ordering::SeqCst)
    }

    /// APs that reached long mode.
    pub fn started(&self) -> u32 {
        self.word(off::STARTED).load(Ordering::SeqCst)
    }

    /// Makes the next AP to start take ticket `t` (and so stack `t` and
    /// record `t`): restarting one AP that already ran, with INIT and a
    /// start-up IPI, into the place it had.
    pub fn reuse_ticket(&self, t: u32) {
        self.word(off::TICKET).store(t, Ordering::SeqCst);
        let base = off::RECORDS + 16 * u64::from(t % MAX_APS);
        for o in [0, 4, 8, 12] {
            self.word(base + o).store(0, Ordering::SeqCst);
        }
    }

    /// Lets APs held in real mode go on to long mode.
    pub fn release(&self) {
        self.word(off::HOLD).store(0, Ordering::SeqCst);
    }

    /// The record of ticket `t` (`None` past [`MAX_APS`] or not yet written).
    pub fn record(&self, t: u32) -> Option<RealModeRecord> {
        if t >= MAX_APS {
            return None;
        }
        let base = off::RECORDS + 16 * u64::from(t);
        let w = |o: u64| self.word(base + o).load(Ordering::SeqCst);
        let (a, b) = (w(0), w(4));
        let r = RealModeRecord {
            cs: a as u16,
            msw: (a >> 16) as u16,
            flags: b as u16,
            sp: (b >> 16) as u16,
            marker: w(8),
            released: w(12),
        };
        (r.marker == RECORD_MARKER).then_some(r)
    }
}
