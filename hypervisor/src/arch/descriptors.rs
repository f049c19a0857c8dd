//! The hypervisor's own descriptor tables: a GDT with a 64-bit TSS, and an
//! IDT whose 32 exception gates print the vector, error code, RIP and CR2 of
//! an unexpected CPU exception in the hypervisor and stop the run cleanly
//! (VM exits do not go through the IDT; these fire only on hypervisor bugs).
//!
//! Layout follows SDM Vol. 3A 3.4.5 (segment descriptors), 7.2.3 (64-bit TSS
//! descriptor), 7.7 (64-bit TSS) and 6.14.1 (64-bit interrupt gates).

use super::cpu::{self, DescriptorTablePointer};
use core::cell::UnsafeCell;

/// Host code segment selector (64-bit, DPL 0).
pub const HOST_CS: u16 = 0x08;
/// Host data/stack segment selector.
pub const HOST_DS: u16 = 0x10;
/// Host TSS selector.
pub const HOST_TR: u16 = 0x18;

/// The 64-bit TSS (SDM Vol. 3A Figure 7-11); only IST1 is used, for #DF
/// and NMI, so a broken stack still reports.
#[repr(C, packed(4))]
pub struct Tss {
    _reserved0: u32,
    rsp: [u64; 3],
    _reserved1: u64,
    ist: [u64; 7],
    _reserved2: u64,
    _reserved3: u16,
    iomap_base: u16,
}

#[repr(C, align(16))]
struct Tables {
    gdt: [u64; 5],
    tss: Tss,
    idt: [[u64; 2]; 32],
    ist1_stack: [u8; 16384],
}

struct TablesCell(UnsafeCell<Tables>);
// SAFETY: written only by `init` on the boot CPU before anything else runs,
// read-only afterwards (the CPU reads it through GDTR/IDTR/TR).
unsafe impl Sync for TablesCell {}

static TABLES: TablesCell = TablesCell(UnsafeCell::new(Tables {
    gdt: [0, 0x00AF_9A00_0000_FFFF, 0x00CF_9200_0000_FFFF, 0, 0],
    tss: Tss { _reserved0: 0, rsp: [0; 3], _reserved1: 0, ist: [0; 7], _reserved2: 0, _reserved3: 0, iomap_base: 104 },
    idt: [[0; 2]; 32],
    ist1_stack: [0; 16384],
}));

unsafe extern "C" {
    /// Table of the 32 exception entry stubs (global_asm below).
    static host_exception_stubs: [u64; 32];
}

/// Base address of the host TSS (for HOST_TR_BASE).
pub fn tss_base() -> u64 {
    // SAFETY: only the address is taken.
    unsafe { core::ptr::addr_of!((*TABLES.0.get()).tss) as u64 }
}

/// Builds and loads the GDT, TSS and IDT on the boot CPU.
pub fn init() {
    let t = TABLES.0.get();
    // SAFETY: single-threaded boot; nothing else references TABLES yet.
    unsafe {
        let tss = core::ptr::addr_of!((*t).tss) as u64;
        let limit = (core::mem::size_of::<Tss>() - 1) as u64;
        // 64-bit available TSS descriptor, type 9 (SDM Vol. 3A 7.2.3).
        (*t).gdt[3] = (limit & 0xffff) | ((tss & 0xff_ffff) << 16) | (0x89 << 40) | (((limit >> 16) & 0xf) << 48)
            | (((tss >> 24) & 0xff) << 56);
        (*t).gdt[4] = tss >> 32;
        let stack_top = core::ptr::addr_of!((*t).ist1_stack) as u64 + 16384;
        (*t).tss.ist[0] = stack_top & !0xf;
        for (v, &handler) in host_exception_stubs.iter().enumerate() {
            let ist = if v == 2 || v == 8 { 1u64 } else { 0 };
            // 64-bit interrupt gate, present, DPL 0 (SDM Vol. 3A 6.14.1).
            (*t).idt[v][0] = (handler & 0xffff) | ((HOST_CS as u64) << 16) | (ist << 32) | (0x8E << 40)
                | (((handler >> 16) & 0xffff) << 48);
            (*t).idt[v][1] = handler >> 32;
        }
        let gdtr = DescriptorTablePointer { limit: (5 * 8 - 1) as u16, base: core::ptr::addr_of!((*t).gdt) as u64 };
        cpu::load_gdt(&gdtr, HOST_CS, HOST_DS);
        cpu::load_tr(HOST_TR);
        let idtr = DescriptorTablePointer { limit: (32 * 16 - 1) as u16, base: core::ptr::addr_of!((*t).idt) as u64 };
        cpu::load_idt(&idtr);
    }
}

/// What an exception stub pushed, lowest address first.
#[repr(C)]
#[derive(Debug)]
pub struct ExceptionFrame {
    /// Vector number (pushed by the stub).
    pub vector: u64,
    /// Error code (pushed by the CPU, or 0 by the stub).
    pub error_code: u64,
    /// Interrupted RIP.
    pub rip: u64,
    /// Interrupted CS.
    pub cs: u64,
    /// Interrupted RFLAGS.
    pub rflags: u64,
    /// Interrupted RSP.
    pub rsp: u64,
    /// Interrupted SS.
    pub ss: u64,
}

// One stub per vector: vectors without a CPU-pushed error code push a dummy
// 0 so every frame has the same layout (`.if` decides at assembly time).
macro_rules! stub_asm {
    ($($v:literal),*) => {
        core::arch::global_asm!(
            $(
                concat!(".section .text\n.align 16\nhost_exception_stub_", stringify!($v), ":"),
                concat!(".if ", stringify!($v), " == 8 || ", stringify!($v), " == 10 || ", stringify!($v), " == 11 || ",
                        stringify!($v), " == 12 || ", stringify!($v), " == 13 || ", stringify!($v), " == 14 || ",
                        stringify!($v), " == 17 || ", stringify!($v), " == 21 || ", stringify!($v), " == 29 || ",
                        stringify!($v), " == 30"),
                ".else",
                "    push 0",
                ".endif",
                concat!("    push ", stringify!($v)),
                "    jmp host_exception_common",
            )*
            ".section .rodata",
            ".align 8",
            ".global host_exception_stubs",
            "host_exception_stubs:",
            $( concat!("    .quad host_exception_stub_", stringify!($v)), )*
            ".section .text",
            "host_exception_common:",
            "    mov rdi, rsp",
            "    and rsp, -16",
            "    call {handler}",
            "    ud2",
            handler = sym host_exception,
        );
    };
}
stub_asm!(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31);

/// The common exception handler: reports and ends the run.
extern "C" fn host_exception(frame: &ExceptionFrame) -> ! {
    let cr2 = cpu::cr2();
    crate::fatal::hypervisor_fault(format_args!(
        "CPU exception in the hypervisor: vector {} ({}) error code {:#x} at RIP {:#x} (CS {:#x}, RFLAGS {:#x}, RSP {:#x}), CR2 {:#x}",
        frame.vector,
        shared::x86::exception_mnemonic(frame.vector as u8),
        frame.error_code,
        frame.rip,
        frame.cs,
        frame.rflags,
        frame.rsp,
        cr2
    ))
}
