//! Instruction wrappers: every privileged x86 instruction the hypervisor
//! executes outside VMX (VMX instructions live in `vmx::instr`). Reads that
//! cannot break memory safety are safe functions; anything that changes CPU
//! state is an `unsafe fn` whose `# Safety` says what the caller must ensure.

use core::arch::asm;

/// CPUID with a sub-leaf; returns (EAX, EBX, ECX, EDX).
pub fn cpuid(leaf: u32, subleaf: u32) -> (u32, u32, u32, u32) {
    let r = core::arch::x86_64::__cpuid_count(leaf, subleaf);
    (r.eax, r.ebx, r.ecx, r.edx)
}

/// Reads a model-specific register.
///
/// # Safety
/// RDMSR raises #GP for an MSR this CPU does not implement: the caller must
/// know from CPUID or capability MSRs that `msr` exists (SDM Vol. 4).
pub unsafe fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: the caller guarantees the MSR exists.
    unsafe { asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags)) };
    ((hi as u64) << 32) | lo as u64
}

/// Writes a model-specific register.
///
/// # Safety
/// The MSR must exist and `value` must be valid for it; MSRs change CPU
/// behaviour globally (EFER, FEATURE_CONTROL), which the caller must intend.
pub unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: the caller guarantees the MSR and value are valid.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32,
             options(nomem, nostack, preserves_flags))
    };
}

macro_rules! read_cr {
    ($(#[$m:meta])* $name:ident, $reg:literal) => {
        $(#[$m])*
        pub fn $name() -> u64 {
            let v: u64;
            // SAFETY: reading a control register in ring 0 has no side effects.
            unsafe { asm!(concat!("mov {}, ", $reg), out(reg) v, options(nomem, nostack, preserves_flags)) };
            v
        }
    };
}
read_cr!(/// Reads CR0.
    cr0, "cr0");
read_cr!(/// Reads CR2 (the last page-fault linear address).
    cr2, "cr2");
read_cr!(/// Reads CR3.
    cr3, "cr3");
read_cr!(/// Reads CR4.
    cr4, "cr4");

/// Writes CR0.
///
/// # Safety
/// Changing CR0 changes paging, caching and protection for all code running
/// on this CPU: the new value must keep the hypervisor's own execution valid.
pub unsafe fn write_cr0(v: u64) {
    // SAFETY: the caller guarantees the value keeps the CPU state valid.
    unsafe { asm!("mov cr0, {}", in(reg) v, options(nostack, preserves_flags)) };
}

/// Writes CR3.
///
/// # Safety
/// `v` must point at page tables that keep the hypervisor's own code, data
/// and stack mapped as before.
pub unsafe fn write_cr3(v: u64) {
    // SAFETY: the caller guarantees the tables.
    unsafe { asm!("mov cr3, {}", in(reg) v, options(nostack, preserves_flags)) };
}

/// Writes CR4.
///
/// # Safety
/// As for [`write_cr0`].
pub unsafe fn write_cr4(v: u64) {
    // SAFETY: the caller guarantees the value keeps the CPU state valid.
    unsafe { asm!("mov cr4, {}", in(reg) v, options(nostack, preserves_flags)) };
}

/// A descriptor-table register image (SGDT/SIDT/LGDT/LIDT operand).
#[repr(C, packed)]
#[derive(Clone, Copy, Debug, Default)]
pub struct DescriptorTablePointer {
    /// Table size in bytes minus one.
    pub limit: u16,
    /// Linear base address.
    pub base: u64,
}

/// Reads GDTR.
pub fn sgdt() -> DescriptorTablePointer {
    let mut d = DescriptorTablePointer::default();
    // SAFETY: SGDT stores 10 bytes into `d`, which is exactly that size.
    unsafe { asm!("sgdt [{}]", in(reg) &mut d, options(nostack, preserves_flags)) };
    d
}

/// Reads IDTR.
pub fn sidt() -> DescriptorTablePointer {
    let mut d = DescriptorTablePointer::default();
    // SAFETY: SIDT stores 10 bytes into `d`, which is exactly that size.
    unsafe { asm!("sidt [{}]", in(reg) &mut d, options(nostack, preserves_flags)) };
    d
}

/// Loads GDTR and reloads CS (far return) and the data segment registers.
///
/// # Safety
/// `ptr` must describe a GDT that lives for the rest of the run, with a
/// 64-bit code descriptor at `code` and a data descriptor at `data`.
pub unsafe fn load_gdt(ptr: &DescriptorTablePointer, code: u16, data: u16) {
    // SAFETY: the caller guarantees the table and selectors; the far return
    // reloads CS with `code` and continues at the next instruction.
    unsafe {
        asm!(
            "lgdt [{ptr}]",
            "push {code}",
            "lea {tmp}, [rip + 2f]",
            "push {tmp}",
            "retfq",
            "2:",
            "mov ds, {data:x}",
            "mov es, {data:x}",
            "mov ss, {data:x}",
            "mov fs, {data:x}",
            "mov gs, {data:x}",
            ptr = in(reg) ptr,
            code = in(reg) code as u64,
            data = in(reg) data as u64,
            tmp = lateout(reg) _,
        )
    };
}

/// Loads IDTR.
///
/// # Safety
/// `ptr` must describe an IDT whose gates point at valid handlers and which
/// lives for the rest of the run.
pub unsafe fn load_idt(ptr: &DescriptorTablePointer) {
    // SAFETY: the caller guarantees the table.
    unsafe { asm!("lidt [{}]", in(reg) ptr, options(nostack, preserves_flags)) };
}

/// Loads the task register.
///
/// # Safety
/// `selector` must name an available 64-bit TSS descriptor in the current GDT.
pub unsafe fn load_tr(selector: u16) {
    // SAFETY: the caller guarantees the descriptor.
    unsafe { asm!("ltr {0:x}", in(reg) selector, options(nostack, preserves_flags)) };
}

/// Reads the segment selectors (CS, SS, DS, ES, FS, GS, TR).
pub fn selectors() -> [u16; 7] {
    let (cs, ss, ds, es, fs, gs, tr): (u16, u16, u16, u16, u16, u16, u16);
    // SAFETY: reading segment registers and STR has no side effects.
    unsafe {
        asm!("mov {0:x}, cs", "mov {1:x}, ss", "mov {2:x}, ds", "mov {3:x}, es",
             "mov {4:x}, fs", "mov {5:x}, gs", "str {6:x}",
             out(reg) cs, out(reg) ss, out(reg) ds, out(reg) es, out(reg) fs, out(reg) gs, out(reg) tr,
             options(nomem, nostack, preserves_flags))
    };
    [cs, ss, ds, es, fs, gs, tr]
}

/// Writes a byte to an I/O port.
///
/// # Safety
/// The caller must know what the device at `port` does with it.
pub unsafe fn outb(port: u16, v: u8) {
    // SAFETY: the caller vouches for the device; OUT touches no memory.
    unsafe { asm!("out dx, al", in("dx") port, in("al") v, options(nomem, nostack, preserves_flags)) };
}

/// Reads the time-stamp counter.
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no side effects (CR4.TSD is clear in ring 0 anyway).
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Masks every line of both legacy 8259 PICs, so no external interrupt
/// reaches the hypervisor or (through it) the guest.
pub fn mask_legacy_pics() {
    // SAFETY: 0x21/0xA1 are the PICs' interrupt-mask registers on every PC.
    unsafe {
        outb(0x21, 0xff);
        outb(0xa1, 0xff);
    }
}

/// Reads a byte from an I/O port.
///
/// # Safety
/// The caller must know what reading `port` does to its device.
pub unsafe fn inb(port: u16) -> u8 {
    let v: u8;
    // SAFETY: the caller vouches for the device; IN touches no memory.
    unsafe { asm!("in al, dx", out("al") v, in("dx") port, options(nomem, nostack, preserves_flags)) };
    v
}

/// Executes the emulator exit steps of `shared::ports::exit_steps` for
/// `status` (0 = pass) and returns when none of them ended the machine (real
/// hardware, or QEMU without its exit device). (The guest's copy is
/// `bare_rt::exit`; the hypervisor's library cannot link bare-rt, whose
/// libc symbols clash with std in host tests.)
pub fn exit_steps(status: u8) {
    use shared::ports::ExitStep;
    for step in shared::ports::exit_steps(status) {
        match step {
            // SAFETY: the exit-convention ports are unused on machines
            // without the matching emulator device.
            ExitStep::Out(port, v) => unsafe { outb(port, v) },
            // SAFETY: `xchg bx, bx` only swaps BX with itself.
            ExitStep::MagicBreak => unsafe { asm!("xchg bx, bx", options(nomem, nostack)) },
        }
    }
}

/// Halts until an NMI (the host's kick) or another event arrives, with
/// interrupts disabled. The NMI handler steps over this HLT when the NMI
/// lands just before it (see `descriptors`), so a kick that arrives after
/// the caller looked at its conditions is never slept through.
///
/// # Safety
/// The IDT's NMI gate must be the host's NMI stub, and NMIs must not be
/// blocked (after an NMI VM exit, [`unblock_nmi`] first).
pub unsafe fn idle_until_interrupt() {
    // SAFETY: the caller guarantees the IDT and NMI state; HLT only stops
    // this CPU until the next NMI (IF stays 0).
    unsafe { host_idle() };
}

// The idle HLT at a known address for the NMI handler (`host_idle_hlt`).
core::arch::global_asm!(
    ".section .text",
    ".global host_idle",
    "host_idle:",
    ".global host_idle_hlt",
    "host_idle_hlt:",
    "    hlt",
    "    ret",
);

unsafe extern "C" {
    fn host_idle();
}

/// Ends the blocking of NMIs an NMI VM exit leaves behind (SDM Vol. 3C
/// 26.1 / 27.2: "an NMI causes subsequent NMIs to be blocked, but only after
/// the VM exit completes"), with an IRET to the next instruction (IRET
/// unblocks NMIs, SDM Vol. 3A 6.7.1).
pub fn unblock_nmi() {
    // SAFETY: builds an interrupt frame for the current CS:RIP, SS:RSP and
    // RFLAGS and IRETs to the next instruction: only the NMI blocking
    // changes.
    unsafe {
        asm!(
            "mov {tmp}, rsp",
            "push 0x10",
            "push {tmp}",
            "pushfq",
            "push 0x08",
            "lea {tmp}, [rip + 2f]",
            "push {tmp}",
            "iretq",
            "2:",
            tmp = out(reg) _,
        )
    };
}

/// Disables interrupts and halts this CPU for good.
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: CLI; HLT only stops this CPU.
        unsafe { asm!("cli; hlt", options(nomem, nostack)) };
    }
}

/// The 8254 PIT's input clock in Hz.
const PIT_HZ: u32 = 1_193_182;
/// Polls of port 0x61 per 10 ms chunk before the PIT counts as stopped
/// (modern chipsets can gate its clock off).
const PIT_POLL_LIMIT: u32 = 2_000_000;

/// Waits about `ms` milliseconds, counted in 10 ms chunks by the 8254 PIT's
/// channel 2 in mode 0 (interrupt on terminal count), whose output is read
/// back through port 0x61 bit 5 (bit 0 gates the channel; the speaker,
/// bit 1, stays off). Returns false when the PIT never reached terminal
/// count: the wait then lasted as long as the bounded polling did, which is
/// not a measured time.
pub fn delay_ms(ms: u32) -> bool {
    let count = (PIT_HZ / 100) as u16; // 10 ms
    let mut counted = true;
    for _ in 0..ms.div_ceil(10) {
        // SAFETY: ports 0x42/0x43 are PIT channel 2 and the mode register,
        // 0x61 the speaker/gate control, on every PC; nothing else uses
        // channel 2 here and the speaker stays off.
        unsafe {
            outb(0x61, (inb(0x61) & !0x03) | 0x01);
            outb(0x43, 0b1011_0000); // channel 2, lobyte/hibyte, mode 0, binary
            outb(0x42, count as u8);
            outb(0x42, (count >> 8) as u8);
        }
        // SAFETY: as above; reading 0x61 has no side effects.
        counted &= (0..PIT_POLL_LIMIT).any(|_| unsafe { inb(0x61) } & 0x20 != 0);
    }
    counted
}

/// Resets the machine: the reset control register at 0xCF9 (a full reset,
/// as the PIIX and PCH datasheets define it), then the keyboard
/// controller's pulse-reset command, then a triple fault (with an IDT of
/// limit 0 the breakpoint exception shuts the CPU down, and a shutdown
/// resets a PC). Never returns.
pub fn reset_machine() -> ! {
    // SAFETY: 0xCF9 and 0x64 are the reset control register and the
    // keyboard controller's command port on PCs; resetting is the intent.
    unsafe {
        outb(0xcf9, 0x02);
        outb(0xcf9, 0x06);
    }
    delay_ms(50);
    // SAFETY: as above.
    unsafe { outb(0x64, 0xfe) };
    delay_ms(50);
    let null_idt = DescriptorTablePointer::default();
    // SAFETY: loading an empty IDT and raising #BP is meant to triple-fault
    // this CPU, which resets the machine.
    unsafe { asm!("lidt [{}]", "int3", in(reg) &null_idt, options(nostack)) };
    halt_forever()
}
