//! The hypervisor's own descriptor tables: per host CPU a GDT with a 64-bit
//! TSS (LTR marks the descriptor busy, so CPUs cannot share one), and one
//! IDT for all CPUs whose 32 exception gates print the vector, error code,
//! RIP and CR2 of an unexpected CPU exception in the hypervisor and stop the
//! run cleanly (VM exits do not go through the IDT; these fire only on
//! hypervisor bugs). Three gates serve the host's own events: the NMI,
//! which one CPU sends another to kick it (`vm::HostOps::kick`: out of VMX
//! non-root operation through NMI exiting, or out of its idle HLT, which
//! the handler steps over so no kick is ever lost), and, should the local
//! APIC raise them, the kick vector (EOI only) and the spurious vector (no
//! EOI, SDM Vol. 3A 11.9).
//!
//! Layout follows SDM Vol. 3A 3.4.5 (segment descriptors), 7.2.3 (64-bit TSS
//! descriptor), 7.7 (64-bit TSS) and 6.14.1 (64-bit interrupt gates).

use super::cpu::{self, DescriptorTablePointer};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU64, Ordering};

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

/// Most host CPUs with tables of their own.
pub const MAX_CPUS: usize = shared::acpi::MAX_CPUS;

/// One CPU's GDT, TSS and #DF/NMI stack.
#[repr(C, align(16))]
struct CpuTables {
    gdt: [u64; 5],
    tss: Tss,
    ist1_stack: [u8; 16384],
}

struct TablesCell<T>(UnsafeCell<T>);
// SAFETY: the IDT is written only by `init_cpu(0)` on the boot CPU before any
// other CPU runs; entry i of CPU_TABLES only by `init_cpu(i)` on CPU i, once;
// read-only afterwards (the CPUs read them through GDTR/IDTR/TR).
unsafe impl<T> Sync for TablesCell<T> {}

const EMPTY_TSS: Tss =
    Tss { _reserved0: 0, rsp: [0; 3], _reserved1: 0, ist: [0; 7], _reserved2: 0, _reserved3: 0, iomap_base: 0 };

// All zero, so the array lives in .bss; `init_cpu` fills in its entry.
static CPU_TABLES: TablesCell<[CpuTables; MAX_CPUS]> =
    TablesCell(UnsafeCell::new([const { CpuTables { gdt: [0; 5], tss: EMPTY_TSS, ist1_stack: [0; 16384] } }; MAX_CPUS]));

#[repr(C, align(16))]
struct Idt([[u64; 2]; 256]);
static IDT: TablesCell<Idt> = TablesCell(UnsafeCell::new(Idt([[0; 2]; 256])));

/// Where the kick handler writes its EOI: the xAPIC EOI register's address,
/// or 0 for x2APIC mode (then WRMSR 0x80B), set by [`set_eoi_target`].
#[unsafe(no_mangle)]
static HOST_EOI_MMIO: AtomicU64 = AtomicU64::new(0);

/// Tells the kick handler how to signal EOI: `Some(address)` of the xAPIC
/// EOI register, `None` in x2APIC mode.
pub fn set_eoi_target(xapic_eoi: Option<u64>) {
    HOST_EOI_MMIO.store(xapic_eoi.unwrap_or(0), Ordering::SeqCst);
}

unsafe extern "C" {
    /// Table of the 32 exception entry stubs (global_asm below).
    static host_exception_stubs: [u64; 32];
    fn host_kick_stub();
    fn host_spurious_stub();
    fn host_nmi_stub();
}

/// A 64-bit interrupt gate, present, DPL 0 (SDM Vol. 3A 6.14.1).
const fn gate(handler: u64, ist: u64) -> [u64; 2] {
    [(handler & 0xffff) | ((HOST_CS as u64) << 16) | (ist << 32) | (0x8E << 40) | (((handler >> 16) & 0xffff) << 48), handler >> 32]
}

/// Base address of the TSS this CPU's TR selects (for HOST_TR_BASE), read
/// from its 16-byte descriptor in the current GDT (SDM Vol. 3A 7.2.3).
pub fn current_tss_base() -> u64 {
    let gdt = cpu::sgdt().base;
    let tr = cpu::selectors()[6] as u64 & !7;
    // SAFETY: GDTR points at this CPU's live GDT (`init_cpu`), whose TSS
    // descriptor at TR is 16 bytes inside it.
    let (lo, hi) = unsafe { (core::ptr::read_volatile((gdt + tr) as *const u64), core::ptr::read_volatile((gdt + tr + 8) as *const u64)) };
    ((lo >> 16) & 0xff_ffff) | (((lo >> 56) & 0xff) << 24) | (hi << 32)
}

/// Builds and loads host CPU `index`'s GDT and TSS and the shared IDT
/// (built by the boot CPU, index 0, which must come first).
pub fn init_cpu(index: usize) {
    assert!(index < MAX_CPUS, "host CPU index {index} beyond MAX_CPUS");
    // SAFETY: CPU `index` runs this once, alone with its own entry; the IDT
    // is built by CPU 0 before any AP starts (see `TablesCell`).
    unsafe {
        let t = core::ptr::addr_of_mut!((*CPU_TABLES.0.get())[index]);
        // 64-bit code, DPL 0; flat data (SDM Vol. 3A 3.4.5).
        (*t).gdt[1] = 0x00AF_9A00_0000_FFFF;
        (*t).gdt[2] = 0x00CF_9200_0000_FFFF;
        // No I/O permission bitmap: the base is the TSS's size (7.7).
        (*t).tss.iomap_base = 104;
        let tss = core::ptr::addr_of!((*t).tss) as u64;
        let limit = (core::mem::size_of::<Tss>() - 1) as u64;
        // 64-bit available TSS descriptor, type 9 (SDM Vol. 3A 7.2.3).
        (*t).gdt[3] = (limit & 0xffff) | ((tss & 0xff_ffff) << 16) | (0x89 << 40) | (((limit >> 16) & 0xf) << 48)
            | (((tss >> 24) & 0xff) << 56);
        (*t).gdt[4] = tss >> 32;
        let stack_top = core::ptr::addr_of!((*t).ist1_stack) as u64 + 16384;
        (*t).tss.ist[0] = stack_top & !0xf;
        let idt = IDT.0.get();
        if index == 0 {
            for (v, &handler) in host_exception_stubs.iter().enumerate() {
                let ist = if v == 2 || v == 8 { 1u64 } else { 0 };
                (*idt).0[v] = gate(handler, ist);
            }
            (*idt).0[2] = gate(host_nmi_stub as *const () as u64, 1);
            (*idt).0[crate::vm::KICK_VECTOR as usize] = gate(host_kick_stub as *const () as u64, 0);
            (*idt).0[crate::vm::SPURIOUS_VECTOR as usize] = gate(host_spurious_stub as *const () as u64, 0);
        }
        let gdtr = DescriptorTablePointer { limit: (5 * 8 - 1) as u16, base: core::ptr::addr_of!((*t).gdt) as u64 };
        cpu::load_gdt(&gdtr, HOST_CS, HOST_DS);
        cpu::load_tr(HOST_TR);
        let idtr = DescriptorTablePointer { limit: (256 * 16 - 1) as u16, base: idt as u64 };
        cpu::load_idt(&idtr);
    }
}

// The kick: EOI and return (it only ends an idle `hlt`). The spurious
// vector: return without EOI (SDM Vol. 3A 11.9). No Rust runs here, so no
// SSE state of the interrupted code is touched.
core::arch::global_asm!(
    ".section .text",
    ".global host_kick_stub",
    "host_kick_stub:",
    "    push rax",
    "    push rcx",
    "    push rdx",
    "    mov rax, [rip + HOST_EOI_MMIO]",
    "    test rax, rax",
    "    jz 2f",
    "    mov dword ptr [rax], 0",
    "    jmp 3f",
    "2:  mov ecx, 0x80b",
    "    xor eax, eax",
    "    xor edx, edx",
    "    wrmsr",
    "3:  pop rdx",
    "    pop rcx",
    "    pop rax",
    "    iretq",
    ".global host_spurious_stub",
    "host_spurious_stub:",
    "    iretq",
    // The NMI: a kick. If it came just before the idle HLT
    // (`cpu::idle_until_interrupt`), return past it: the idle loop then
    // looks at its conditions again instead of sleeping through the kick.
    ".global host_nmi_stub",
    "host_nmi_stub:",
    "    push rax",
    "    lea rax, [rip + host_idle_hlt]",
    "    cmp [rsp + 8], rax",
    "    jne 4f",
    "    add qword ptr [rsp + 8], 1",
    "4:  pop rax",
    "    iretq",
);

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
