//! Control registers and IA32_EFER as the guest sees them.
//!
//! Without unrestricted guest the hardware must always run with CR0.PE=1,
//! CR0.PG=1 and (for our PAE-format shadows) CR4.PAE=1 (SDM Vol. 3C 24.8,
//! A.7/A.8), so the guest's own values live here and reach the guest through
//! the CR0/CR4 read shadows with guest/host masks of all ones (SDM Vol. 3C
//! 25.6.6): every guest MOV to CR0/CR4 that changes a bit exits, every read
//! returns the guest's value without an exit. CR3 loads and stores exit
//! (CR3-load/CR3-store exiting) so the guest always reads its own CR3.

/// CR0 bits (SDM Vol. 3A 2.5).
pub mod cr0 {
    /// Protection enable.
    pub const PE: u64 = 1 << 0;
    /// Monitor coprocessor.
    pub const MP: u64 = 1 << 1;
    /// x87 emulation.
    pub const EM: u64 = 1 << 2;
    /// Task switched.
    pub const TS: u64 = 1 << 3;
    /// Extension type (hard-wired to 1).
    pub const ET: u64 = 1 << 4;
    /// Numeric error.
    pub const NE: u64 = 1 << 5;
    /// Write protect.
    pub const WP: u64 = 1 << 16;
    /// Alignment mask.
    pub const AM: u64 = 1 << 18;
    /// Not write-through.
    pub const NW: u64 = 1 << 29;
    /// Cache disable.
    pub const CD: u64 = 1 << 30;
    /// Paging.
    pub const PG: u64 = 1 << 31;
}

/// CR4 bits (SDM Vol. 3A 2.5).
pub mod cr4 {
    /// Virtual-8086 mode extensions.
    pub const VME: u64 = 1 << 0;
    /// Page size extensions.
    pub const PSE: u64 = 1 << 4;
    /// Physical address extension.
    pub const PAE: u64 = 1 << 5;
    /// Page global enable.
    pub const PGE: u64 = 1 << 7;
    /// FXSAVE/FXRSTOR and SSE enabled by the OS.
    pub const OSFXSR: u64 = 1 << 9;
    /// Unmasked SIMD exceptions supported by the OS.
    pub const OSXMMEXCPT: u64 = 1 << 10;
    /// VMX enable.
    pub const VMXE: u64 = 1 << 13;
    /// Supervisor-mode execution prevention.
    pub const SMEP: u64 = 1 << 20;
    /// Supervisor-mode access prevention.
    pub const SMAP: u64 = 1 << 21;
}

/// The CR4 bits a guest may set: VME, PVI, TSD, DE, PSE, PAE, PGE, PCE,
/// OSFXSR, OSXMMEXCPT, FSGSBASE, SMEP, SMAP. VMX is hidden, so VMXE is
/// reserved for the guest; bits Quadrant does not virtualise (PCIDE,
/// OSXSAVE, PKE, ...) are refused with #GP, as on a CPU without them
/// (SDM Vol. 3A 2.5).
pub const GUEST_CR4_BITS: u64 = cr4::VME
    | cr4::PSE
    | cr4::PAE
    | cr4::PGE
    | cr4::OSFXSR
    | cr4::OSXMMEXCPT
    | cr4::SMEP
    | cr4::SMAP
    | (1 << 1)
    | (1 << 2)
    | (1 << 3)
    | (1 << 6)
    | (1 << 8)
    | (1 << 16);

/// IA32_EFER bits (SDM Vol. 3A 2.2.1).
pub mod efer {
    /// MSR number.
    pub const MSR: u32 = 0xC000_0080;
    /// SYSCALL enable.
    pub const SCE: u64 = 1 << 0;
    /// IA-32e mode enable.
    pub const LME: u64 = 1 << 8;
    /// IA-32e mode active (read-only).
    pub const LMA: u64 = 1 << 10;
    /// Execute-disable enable.
    pub const NXE: u64 = 1 << 11;
}

/// The guest's view of its control registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestControl {
    /// CR0 as the guest wrote it.
    pub cr0: u64,
    /// CR3 as the guest wrote it.
    pub cr3: u64,
    /// CR4 as the guest wrote it.
    pub cr4: u64,
    /// IA32_EFER as the guest sees it.
    pub efer: u64,
}

/// The guest's paging mode (SDM Vol. 3A 4.1.1, Table 4-1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PagingMode {
    /// CR0.PE=0.
    RealMode,
    /// CR0.PE=1, CR0.PG=0.
    NoPaging,
    /// CR0.PG=1, CR4.PAE=0.
    Bits32,
    /// CR0.PG=1, CR4.PAE=1, EFER.LME=0.
    Pae,
    /// CR0.PG=1, CR4.PAE=1, EFER.LME=1 (so LMA=1).
    Long,
}

impl PagingMode {
    /// Name used in logs and errors.
    pub fn name(self) -> &'static str {
        match self {
            PagingMode::RealMode => "real mode",
            PagingMode::NoPaging => "protected mode without paging",
            PagingMode::Bits32 => "32-bit paging",
            PagingMode::Pae => "PAE paging",
            PagingMode::Long => "4-level (long mode) paging",
        }
    }
}

/// What a guest MOV to CR0 does, decided before any state changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cr0Write {
    /// Accept: new guest CR0 and EFER (LMA may change).
    Accept {
        /// New guest CR0.
        cr0: u64,
        /// New guest EFER.
        efer: u64,
    },
    /// The architecture raises #GP(0) (SDM Vol. 3A 2.5 and 10.8.5).
    Gp,
}

impl GuestControl {
    /// The state the Multiboot hand-off defines: protected mode, paging off.
    pub const MULTIBOOT: GuestControl = GuestControl { cr0: cr0::PE | cr0::ET, cr3: 0, cr4: 0, efer: 0 };

    /// The current paging mode.
    pub fn mode(&self) -> PagingMode {
        if self.cr0 & cr0::PE == 0 {
            PagingMode::RealMode
        } else if self.cr0 & cr0::PG == 0 {
            PagingMode::NoPaging
        } else if self.cr4 & cr4::PAE == 0 {
            PagingMode::Bits32
        } else if self.efer & efer::LMA != 0 {
            PagingMode::Long
        } else {
            PagingMode::Pae
        }
    }

    /// Decides a MOV to CR0 (SDM Vol. 3A 2.5 "CR0", 10.8.5 "Initializing
    /// IA-32e Mode"): PG=1 with PE=0 is #GP; setting PG with EFER.LME=1
    /// requires CR4.PAE=1 and activates IA-32e mode (LMA=1); clearing PG
    /// deactivates it; NW=1 with CD=0 is #GP; bits 63:32 set is #GP.
    pub fn write_cr0(&self, value: u64) -> Cr0Write {
        let value = value | cr0::ET;
        if value >> 32 != 0 || (value & cr0::PG != 0 && value & cr0::PE == 0) || (value & cr0::NW != 0 && value & cr0::CD == 0) {
            return Cr0Write::Gp;
        }
        let mut efer = self.efer;
        let was_paging = self.cr0 & cr0::PG != 0;
        let paging = value & cr0::PG != 0;
        if paging && !was_paging && self.efer & efer::LME != 0 {
            if self.cr4 & cr4::PAE == 0 {
                return Cr0Write::Gp;
            }
            efer |= efer::LMA;
        }
        if !paging {
            efer &= !efer::LMA;
        }
        Cr0Write::Accept { cr0: value, efer }
    }

    /// Decides a WRMSR to IA32_EFER: reserved bits or changing LME while
    /// paging is on are #GP; LMA is read-only and keeps its value
    /// (SDM Vol. 3A 10.8.5; Vol. 4 Table 2-2).
    pub fn write_efer(&self, value: u64, nx_supported: bool) -> Option<u64> {
        let allowed = efer::SCE | efer::LME | efer::LMA | if nx_supported { efer::NXE } else { 0 };
        if value & !allowed != 0 {
            return None;
        }
        if self.cr0 & cr0::PG != 0 && (value ^ self.efer) & efer::LME != 0 {
            return None;
        }
        Some((value & !efer::LMA) | (self.efer & efer::LMA))
    }

    /// The hardware CR0 while this guest state runs on its shadow: the bits
    /// the MMU core forces (PE, PG, WP: `mmu::HwPaging::cr0_set`), NE and
    /// ET, and the guest's FPU-related bits passed through. Caching stays
    /// enabled whatever the guest asks (CD/NW are the host's business).
    pub fn hardware_cr0(&self, mmu_cr0_set: u64) -> u64 {
        (self.cr0 & (cr0::MP | cr0::EM | cr0::TS | cr0::AM)) | mmu_cr0_set | cr0::NE | cr0::ET
    }

    /// The hardware CR4: the paging bits the MMU core chooses
    /// (`mmu::HwPaging::cr4`: PAE, SMEP/SMAP), VMXE, the guest's SSE bits,
    /// and VME while real mode runs as virtual-8086 mode (SDM Vol. 3A 20.4:
    /// CLI/STI/PUSHF/POPF/INT n/IRET then work on VIF without exits).
    pub fn hardware_cr4(&self, mmu_cr4: u64, vm86: bool) -> u64 {
        (self.cr4 & (cr4::OSFXSR | cr4::OSXMMEXCPT)) | mmu_cr4 | cr4::VMXE | if vm86 { cr4::VME } else { 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_case::test_case;

    fn long_ready() -> GuestControl {
        GuestControl { cr0: cr0::PE | cr0::ET, cr3: 0x1000, cr4: cr4::PAE, efer: efer::LME }
    }

    #[test]
    fn enabling_paging_with_lme_activates_long_mode() {
        let g = long_ready();
        let Cr0Write::Accept { cr0: c, efer: e } = g.write_cr0(g.cr0 | cr0::PG) else { panic!() };
        let after = GuestControl { cr0: c, efer: e, ..g };
        assert_eq!(after.mode(), PagingMode::Long);
        let Cr0Write::Accept { efer: e2, .. } = after.write_cr0(c & !cr0::PG) else { panic!() };
        assert_eq!(e2 & efer::LMA, 0);
    }

    #[test]
    fn long_mode_without_pae_is_gp() {
        let g = GuestControl { cr4: 0, ..long_ready() };
        assert_eq!(g.write_cr0(g.cr0 | cr0::PG), Cr0Write::Gp);
    }

    #[test_case(cr0::PG ; "paging without protection")]
    #[test_case(cr0::PE | cr0::NW ; "not-write-through without cache disable")]
    #[test_case(cr0::PE | (1 << 40) ; "reserved high bits")]
    fn cr0_gp(v: u64) {
        assert_eq!(GuestControl::MULTIBOOT.write_cr0(v), Cr0Write::Gp);
    }

    #[test]
    fn efer_rules() {
        let g = GuestControl::MULTIBOOT;
        assert_eq!(g.write_efer(efer::LME | efer::NXE, true), Some(efer::LME | efer::NXE));
        assert_eq!(g.write_efer(efer::NXE, false), None);
        assert_eq!(g.write_efer(1 << 20, true), None);
        assert_eq!(g.write_efer(efer::LMA, true), Some(0), "LMA is read-only");
        let paging = GuestControl { cr0: cr0::PE | cr0::PG, ..g };
        assert_eq!(paging.write_efer(efer::LME, true), None, "LME cannot change while paging is on");
    }

    #[test_case(GuestControl::MULTIBOOT, PagingMode::NoPaging)]
    #[test_case(GuestControl { cr0: 0, ..GuestControl::MULTIBOOT }, PagingMode::RealMode)]
    #[test_case(GuestControl { cr0: cr0::PE | cr0::PG, ..GuestControl::MULTIBOOT }, PagingMode::Bits32)]
    #[test_case(GuestControl { cr0: cr0::PE | cr0::PG, cr4: cr4::PAE, ..GuestControl::MULTIBOOT }, PagingMode::Pae)]
    fn modes(g: GuestControl, m: PagingMode) {
        assert_eq!(g.mode(), m);
    }

    #[test]
    fn hardware_view_keeps_vmx_requirements() {
        let g = GuestControl { cr0: cr0::PE | cr0::TS | cr0::CD, ..GuestControl::MULTIBOOT };
        let forced = cr0::PE | cr0::PG | cr0::WP;
        assert_eq!(g.hardware_cr0(forced) & (forced | cr0::NE | cr0::TS | cr0::CD), forced | cr0::NE | cr0::TS);
        assert_eq!(g.hardware_cr4(cr4::PAE, false) & (cr4::VMXE | cr4::PAE | cr4::VME), cr4::VMXE | cr4::PAE);
        assert_ne!(g.hardware_cr4(cr4::PAE, true) & cr4::VME, 0);
    }
}
