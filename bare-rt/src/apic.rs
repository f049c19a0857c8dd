//! This CPU's local APIC, for both kernels: the hypervisor starts the host's
//! processors and kicks them with IPIs, the guest starts its vCPUs and
//! sends them interrupts. xAPIC mode goes through the MMIO page (SDM Vol. 3A
//! 11.4.1; bare-rt's boot tables identity-map it), x2APIC mode through the
//! MSRs (11.12); the caller never needs to know which.

use shared::apic::{reg, x2apic_msr, Icr, APIC_BASE_EN, APIC_BASE_EXTD, IA32_APIC_BASE, ICR_SEND_PENDING, SVR_ENABLE};

/// Reads a model-specific register.
///
/// # Safety
/// The MSR must exist on this CPU (RDMSR of another raises #GP).
pub unsafe fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: the caller guarantees the MSR exists.
    unsafe { core::arch::asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags)) };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Writes a model-specific register.
///
/// # Safety
/// The MSR must exist and accept `value`; the caller must intend its effect.
pub unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: the caller guarantees the MSR and the value.
    unsafe {
        core::arch::asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32,
            options(nomem, nostack, preserves_flags))
    };
}

/// The local APIC of the CPU that uses it (every CPU sees its own at the
/// same address).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalApic {
    base: u64,
    x2apic: bool,
}

impl LocalApic {
    /// The local APIC in the mode IA32_APIC_BASE says; `None` when it is
    /// globally disabled (EN = 0).
    ///
    /// # Safety
    /// The CPU must have a local APIC (CPUID.01H:EDX.APIC) and, in xAPIC
    /// mode, its MMIO page must be identity-mapped uncached or as the
    /// firmware's MTRRs make it (bare-rt's boot tables map the low 4 GiB).
    pub unsafe fn current() -> Option<LocalApic> {
        // SAFETY: IA32_APIC_BASE exists on every CPU with a local APIC.
        let v = unsafe { rdmsr(IA32_APIC_BASE) };
        (v & APIC_BASE_EN != 0).then_some(LocalApic { base: v & 0x000F_FFFF_FFFF_F000, x2apic: v & APIC_BASE_EXTD != 0 })
    }

    /// Switches this CPU's APIC to x2APIC mode (SDM Vol. 3A 11.12.1: EN
    /// and EXTD set together from xAPIC mode).
    ///
    /// # Safety
    /// CPUID.01H:ECX.x2APIC must be set; no other code on this CPU may keep
    /// using the xAPIC page afterwards.
    pub unsafe fn enable_x2apic(&mut self) {
        // SAFETY: the caller guarantees x2APIC support; EN|EXTD is the legal
        // transition from xAPIC mode.
        unsafe {
            let v = rdmsr(IA32_APIC_BASE);
            wrmsr(IA32_APIC_BASE, v | APIC_BASE_EN | APIC_BASE_EXTD);
        }
        self.x2apic = true;
    }

    /// True in x2APIC mode.
    pub fn is_x2apic(&self) -> bool {
        self.x2apic
    }

    /// The MMIO base (xAPIC mode).
    pub fn base(&self) -> u64 {
        self.base
    }

    /// Reads the register at xAPIC offset `offset` (in x2APIC mode its MSR).
    pub fn read(&self, offset: u32) -> u32 {
        if self.x2apic {
            // SAFETY: x2APIC mode (checked at construction) makes the
            // register's MSR exist; reads have no side effects.
            unsafe { rdmsr(x2apic_msr(offset)) as u32 }
        } else {
            let v: u32;
            // SAFETY: `current`'s contract: the page is mapped; registers are
            // aligned 32-bit words inside it. One plain MOV (not a volatile
            // read the compiler may fold into TEST or OR with memory): what
            // the SDM asks for (11.4.1) and what an emulating hypervisor
            // decodes.
            unsafe {
                core::arch::asm!("mov {v:e}, dword ptr [{a}]", a = in(reg) self.base + u64::from(offset & 0xff0), v = out(reg) v,
                    options(nostack, preserves_flags, readonly))
            };
            v
        }
    }

    /// Writes the register at xAPIC offset `offset`.
    pub fn write(&self, offset: u32, v: u32) {
        if self.x2apic {
            // SAFETY: as in `read`; the caller chose the register's effect.
            unsafe { wrmsr(x2apic_msr(offset), u64::from(v)) }
        } else {
            // SAFETY: as in `read`, one plain MOV store.
            unsafe {
                core::arch::asm!("mov dword ptr [{a}], {v:e}", a = in(reg) self.base + u64::from(offset & 0xff0), v = in(reg) v,
                    options(nostack, preserves_flags))
            }
        }
    }

    /// This CPU's APIC ID (bits 31:24 of the ID register in xAPIC mode, the
    /// whole register in x2APIC mode, SDM Vol. 3A 11.4.6, 11.12.5.1).
    pub fn id(&self) -> u32 {
        let v = self.read(reg::ID);
        if self.x2apic { v } else { v >> 24 }
    }

    /// Software-enables the APIC with spurious vector `spurious` (11.9).
    pub fn software_enable(&self, spurious: u8) {
        let v = self.read(reg::SVR);
        self.write(reg::SVR, (v & !0xff) | SVR_ENABLE | u32::from(spurious));
    }

    /// Signals the end of the interrupt in service (11.8.5).
    pub fn eoi(&self) {
        self.write(reg::EOI, 0);
    }

    /// Sends an interprocessor interrupt (11.6.1): in xAPIC mode ICR_HIGH
    /// then ICR_LOW, then waits while the delivery status says pending; in
    /// x2APIC mode one WRMSR of the 64-bit ICR.
    pub fn send(&self, icr: Icr) {
        if self.x2apic {
            // SAFETY: x2APIC mode: the ICR MSR exists; the IPI is the caller's.
            unsafe { wrmsr(x2apic_msr(reg::ICR_LOW), icr.to_x2apic()) }
        } else {
            let (low, high) = icr.to_xapic();
            self.write(reg::ICR_HIGH, high);
            self.write(reg::ICR_LOW, low);
            while self.read(reg::ICR_LOW) & ICR_SEND_PENDING != 0 {
                core::hint::spin_loop();
            }
        }
    }
}
