//! The `mmu=ept` back end: the guest runs on a static identity EPT
//! (`crate::vmx::ept`) with "unrestricted guest", as the differential
//! reference for the shadow page cache.
//!
//! The guest owns its paging completely: real mode, protected mode without
//! paging, 32-bit, PAE and long mode run natively, CR3 loads and INVLPG do
//! not exit, and #PF is not intercepted (SDM Vol. 3C 29.3: with EPT the
//! guest's own CR3 and paging structures translate linear to guest-physical
//! addresses). What is left to the hypervisor:
//!
//! * CR0/CR4 bits the hardware forces while the guest may not own them
//!   (SDM Vol. 3C 27.3.1.1: with unrestricted guest CR0.PE and CR0.PG may be
//!   0, but CR0.NE and CR4.VMXE stay fixed to 1, Vol. 3D A.7/A.8). Those bits
//!   are in the guest/host masks and the read shadows show the guest's own
//!   values (SDM Vol. 3C 25.6.6); a MOV that changes a masked bit exits and
//!   is emulated here. CR4 bits Quadrant does not virtualise are masked too,
//!   so setting one raises #GP exactly as under shadow paging.
//! * IA32_EFER: the "save/load IA32_EFER" controls keep the guest's EFER in
//!   GUEST_IA32_EFER; WRMSR/RDMSR exit (no MSR bitmap) and use that field.
//!   At every VM exit a CPU with "unrestricted guest" stores EFER.LMA into
//!   the "IA-32e mode guest" entry control, since the guest may have
//!   switched modes natively (SDM Vol. 3C 28.3, saving guest state; seen in
//!   Bochs 2.7 `corei7_skylake_x`: with `log=debug` the control flips at the
//!   first exit after each native switch). [`Vcpu::ept_prepare_entry`]
//!   re-derives it from GUEST_IA32_EFER anyway, which also covers the
//!   emulated CR0 writes here.
//! * PAE PDPTEs: with EPT the CPU loads them from the GUEST_PDPTE0-3 fields
//!   at VM entry and saves them at exit (SDM Vol. 3C 27.3.2.4, 28.3.4), so
//!   an emulated CR write that enters or stays in PAE paging loads them from
//!   guest memory as MOV to CR would (SDM Vol. 3A 4.4.1).
//! * EPT violations: only guest-physical addresses outside guest RAM are
//!   unmapped; touching one ends the run (no MMIO is emulated).

use super::cr::{cr0, cr4, efer, Cr0Write, GuestControl, PagingMode, GUEST_CR4_BITS};
use super::{PagingBackend, Vcpu, GP};
use crate::vmx::caps::{self, entry_ctl, VmxCaps};
use crate::vmx::ept::IdentityEpt;
use crate::vmx::exit_reason::{CrAccess, CrAccessType, EptViolation};
use crate::vmx::fields::{Field32, Field64, Field64Ro, FieldNatural, FieldNaturalRo};
use shared::line::ErrorKind;

/// Exceptions intercepted under EPT: only #MC (the guest's #PF are its own).
const EPT_EXCEPTIONS: u64 = 1 << 18;

/// The EPT back end's state for one vCPU.
#[derive(Debug)]
pub struct EptPaging {
    map: IdentityEpt,
    /// CR0 bits owned by the hypervisor (guest/host mask).
    cr0_mask: u64,
    /// CR4 bits owned by the hypervisor.
    cr4_mask: u64,
    /// Guest CR0 fixed-0 bits under unrestricted guest (PE and PG dropped).
    cr0_fixed0: u64,
    cr0_fixed1: u64,
    cr4_fixed0: u64,
    cr4_fixed1: u64,
    /// Physical-address width, for PDPTE reserved bits.
    maxphyaddr: u8,
    /// The VM-entry controls as last written.
    entry: u32,
}

impl EptPaging {
    /// The back end for a guest on `map`, with this CPU's fixed CR bits.
    pub fn new(map: IdentityEpt, caps: &VmxCaps, maxphyaddr: u8) -> Self {
        let cr0_fixed0 = caps::guest_cr0_fixed0(caps.cr0_fixed0, true);
        // Masked: what the hardware forces to 1, and what it forbids.
        let cr0_mask = cr0_fixed0 | (!caps.cr0_fixed1 & 0xffff_ffff);
        let cr4_mask = !GUEST_CR4_BITS | caps.cr4_fixed0 | !caps.cr4_fixed1;
        EptPaging {
            map,
            cr0_mask,
            cr4_mask,
            cr0_fixed0,
            cr0_fixed1: caps.cr0_fixed1,
            cr4_fixed0: caps.cr4_fixed0,
            cr4_fixed1: caps.cr4_fixed1,
            maxphyaddr,
            entry: 0,
        }
    }

    /// The identity map the guest runs on.
    pub fn map(&self) -> &IdentityEpt {
        &self.map
    }

    fn hardware_cr0(&self, guest: u64) -> u64 {
        caps::fixed_cr(guest, self.cr0_fixed0, self.cr0_fixed1)
    }

    fn hardware_cr4(&self, guest: u64) -> u64 {
        caps::fixed_cr(guest, self.cr4_fixed0, self.cr4_fixed1)
    }
}

impl Vcpu<'_> {
    fn ept(&self) -> &EptPaging {
        match &self.paging {
            PagingBackend::Ept(e) => e,
            PagingBackend::Shadow => unreachable!("an EPT path was reached under shadow paging"),
        }
    }

    fn ept_mut(&mut self) -> &mut EptPaging {
        match &mut self.paging {
            PagingBackend::Ept(e) => e,
            PagingBackend::Shadow => unreachable!("an EPT path was reached under shadow paging"),
        }
    }

    /// Overrides the shadow-paging parts of the VMCS `setup::write_vmcs`
    /// wrote: EPTP, exception bitmap, CR masks and read shadows, the guest's
    /// CR0/CR4 (Multiboot hand-off: PE=1, PG=0, run natively), and the EFER
    /// fields (SDM Vol. 3C 25.6.3, 25.6.6, 25.6.11, 25.4.2).
    pub(super) fn ept_init_vmcs(&mut self, host_efer: u64) {
        let e = self.ept();
        let (eptp, m0, m4) = (e.map.eptp, e.cr0_mask, e.cr4_mask);
        let g = GuestControl::MULTIBOOT;
        let (hw0, hw4) = (e.hardware_cr0(g.cr0), e.hardware_cr4(g.cr4));
        self.vmcs.write(Field64::EptPointer, eptp);
        self.vmcs.write(Field32::ExceptionBitmap, EPT_EXCEPTIONS);
        self.vmcs.write(FieldNatural::Cr0GuestHostMask, m0);
        self.vmcs.write(FieldNatural::Cr4GuestHostMask, m4);
        self.vmcs.write(FieldNatural::GuestCr0, hw0);
        self.vmcs.write(FieldNatural::Cr0ReadShadow, g.cr0);
        self.vmcs.write(FieldNatural::GuestCr4, hw4);
        self.vmcs.write(FieldNatural::Cr4ReadShadow, g.cr4);
        self.vmcs.write(FieldNatural::GuestCr3, g.cr3);
        self.vmcs.write(Field64::GuestEfer, g.efer);
        self.vmcs.write(Field64::HostEfer, host_efer);
        self.ept_mut().entry = self.controls.entry;
        self.ept_prepare_entry();
    }

    /// Before each entry: the "IA-32e mode guest" entry control must equal
    /// the guest's EFER.LMA (SDM Vol. 3C 27.3.1.1, with "load IA32_EFER").
    pub(super) fn ept_prepare_entry(&mut self) {
        let lma = self.vmcs.read(Field64::GuestEfer) & efer::LMA != 0;
        let base = self.controls.entry & !entry_ctl::IA32E_MODE_GUEST;
        let want = if lma { base | entry_ctl::IA32E_MODE_GUEST } else { base };
        let current = self.vmcs.read(Field32::EntryControls) as u32;
        if current != self.ept().entry {
            log::debug!("EPT: the CPU rewrote the VM-entry controls at VM exit: {:#x} -> {current:#x} (EFER.LMA {lma})", self.ept().entry);
        }
        if self.ept().entry != want || current != want {
            self.vmcs.write(Field32::EntryControls, want as u64);
            self.ept_mut().entry = want;
        }
    }

    /// The guest's control registers as it sees them: hardware values
    /// outside the masks, read shadows inside.
    pub(super) fn ept_guest_control(&self) -> GuestControl {
        let e = self.ept();
        let view = |hw: u64, shadow: u64, mask: u64| (hw & !mask) | (shadow & mask);
        GuestControl {
            cr0: view(self.vmcs.read(FieldNatural::GuestCr0), self.vmcs.read(FieldNatural::Cr0ReadShadow), e.cr0_mask),
            cr3: self.vmcs.read(FieldNatural::GuestCr3),
            cr4: view(self.vmcs.read(FieldNatural::GuestCr4), self.vmcs.read(FieldNatural::Cr4ReadShadow), e.cr4_mask),
            efer: self.vmcs.read(Field64::GuestEfer),
        }
    }

    /// A control-register exit: a MOV/CLTS/LMSW that changes a masked bit,
    /// or a CR3 access on a CPU that forces CR3 exiting.
    pub(super) fn ept_cr_access(&mut self) {
        let q = CrAccess::decode(self.vmcs.read(FieldNaturalRo::ExitQualification));
        let g = self.ept_guest_control();
        let ok = match (q.access, q.cr) {
            (CrAccessType::MovToCr, 0) => self.ept_write_cr0(g, self.gpr(q.gpr)),
            (CrAccessType::Clts, _) => self.ept_write_cr0(g, g.cr0 & !cr0::TS),
            // LMSW loads CR0[3:0] but cannot clear PE (SDM Vol. 2A LMSW).
            (CrAccessType::Lmsw, _) => {
                let src = q.lmsw_source_data as u64 & 0xf;
                self.ept_write_cr0(g, (g.cr0 & !0xe) | src | (g.cr0 & cr0::PE))
            }
            (CrAccessType::MovToCr, 4) => self.ept_write_cr4(g, self.gpr(q.gpr)),
            (CrAccessType::MovToCr, 3) => {
                let next = GuestControl { cr3: self.gpr(q.gpr), ..g };
                self.load_pdptes_if_pae(next) && {
                    self.vmcs.write(FieldNatural::GuestCr3, next.cr3);
                    true
                }
            }
            (CrAccessType::MovFromCr, 3) => {
                self.set_gpr(q.gpr, g.cr3);
                true
            }
            _ => {
                let rip = self.rip();
                self.die(ErrorKind::UnhandledExit, true, format_args!("unexpected control-register exit under EPT: {q} at RIP {rip:#x}"))
            }
        };
        if ok {
            self.advance_rip();
        } else {
            self.inject(GP, Some(0));
        }
    }

    /// Emulates a MOV to CR0 with the architectural rules of
    /// `GuestControl::write_cr0` (IA-32e activation included); false: #GP.
    fn ept_write_cr0(&mut self, g: GuestControl, value: u64) -> bool {
        let Cr0Write::Accept { cr0: c0, efer: new_efer } = g.write_cr0(value) else { return false };
        let next = GuestControl { cr0: c0, efer: new_efer, ..g };
        if !self.load_pdptes_if_pae(next) {
            return false;
        }
        let hw = self.ept().hardware_cr0(c0);
        self.vmcs.write(FieldNatural::GuestCr0, hw);
        self.vmcs.write(FieldNatural::Cr0ReadShadow, c0);
        self.vmcs.write(Field64::GuestEfer, new_efer);
        true
    }

    /// Emulates a MOV to CR4: the same bits are refused as under shadow
    /// paging (`GUEST_CR4_BITS`), and PAE cannot be cleared in IA-32e mode
    /// (SDM Vol. 3A 10.8.5); false: #GP.
    fn ept_write_cr4(&mut self, g: GuestControl, value: u64) -> bool {
        let e = self.ept();
        if value & !GUEST_CR4_BITS != 0 || value & !e.cr4_fixed1 != 0 || (g.efer & efer::LMA != 0 && value & cr4::PAE == 0) {
            return false;
        }
        let hw = e.hardware_cr4(value);
        let next = GuestControl { cr4: value, ..g };
        if !self.load_pdptes_if_pae(next) {
            return false;
        }
        self.vmcs.write(FieldNatural::GuestCr4, hw);
        self.vmcs.write(FieldNatural::Cr4ReadShadow, value);
        true
    }

    /// When `next` is PAE paging, loads its four PDPTEs from guest memory
    /// into GUEST_PDPTE0-3; false when one is unreadable or has reserved
    /// bits set (#GP, SDM Vol. 3A 4.4.1).
    fn load_pdptes_if_pae(&mut self, next: GuestControl) -> bool {
        if next.mode() != PagingMode::Pae {
            return true;
        }
        let base = next.cr3 & 0xffff_ffe0;
        let reserved = 0x1e6 | (u64::MAX << self.ept().maxphyaddr);
        let mut pdptes = [0u64; 4];
        for (i, p) in pdptes.iter_mut().enumerate() {
            match self.vm.ram.read_u64(base + 8 * i as u64) {
                Some(v) if v & 1 == 0 || v & reserved == 0 => *p = v,
                _ => return false,
            }
        }
        for (f, v) in [Field64::GuestPdpte0, Field64::GuestPdpte1, Field64::GuestPdpte2, Field64::GuestPdpte3].into_iter().zip(pdptes) {
            self.vmcs.write(f, v);
        }
        true
    }

    /// WRMSR IA32_EFER under EPT: same rules as under shadow paging; the
    /// value goes to GUEST_IA32_EFER (LMA is kept: it is read-only).
    pub(super) fn ept_write_efer(&mut self, value: u64) {
        let g = self.ept_guest_control();
        match g.write_efer(value, self.nx_supported) {
            Some(v) => {
                self.vmcs.write(Field64::GuestEfer, v);
                self.advance_rip();
            }
            None => self.inject(GP, Some(0)),
        }
    }

    /// An EPT violation (SDM Vol. 3C 28.2.1, Table 28-7): the identity map
    /// covers all of guest RAM with full rights, so the guest touched a
    /// guest-physical address outside it.
    pub(super) fn ept_violation(&mut self) {
        let q = EptViolation::decode(self.vmcs.read(FieldNaturalRo::ExitQualification));
        let gpa = self.vmcs.read(Field64Ro::GuestPhysicalAddress);
        let rip = self.rip();
        let gla = q.linear_address_valid.then(|| self.vmcs.read(FieldNaturalRo::GuestLinearAddress));
        if self.apic.mmio_enabled() && gpa & !0xfff == self.apic.mmio_base() {
            return self.apic_mmio(gpa, gla.unwrap_or(gpa));
        }
        let linear = match gla {
            Some(gla) => alloc::format!("linear {gla:#x}, "),
            None => alloc::string::String::new(),
        };
        let ram = self.vm.ram.size();
        if gpa < ram {
            self.die(
                ErrorKind::HypervisorFault,
                true,
                format_args!("{q} at guest-physical {gpa:#x} inside guest RAM ({linear}RIP {rip:#x}): the identity EPT is broken"),
            )
        }
        self.die(
            ErrorKind::Unsupported,
            false,
            format_args!(
                "the guest accessed guest-physical {gpa:#x} ({linear}RIP {rip:#x}), outside its {} MiB of RAM ({q}); the only MMIO emulated is the local APIC page",
                ram >> 20
            ),
        )
    }

    /// The guest's paging context for a walk of its own tables (the
    /// instruction fetch of an emulated MMIO access): CR0/CR3/CR4/EFER and
    /// the PDPTE registers from the VMCS.
    pub(super) fn ept_paging_ctx(&self) -> crate::mmu::walk::PagingCtx {
        use crate::mmu::walk::{GuestMode, PagingCtx};
        let g = self.ept_guest_control();
        let mode = match g.mode() {
            PagingMode::RealMode | PagingMode::NoPaging => GuestMode::NoPaging,
            PagingMode::Bits32 => GuestMode::Bits32,
            PagingMode::Pae => GuestMode::Pae,
            PagingMode::Long => GuestMode::Long,
        };
        let pdptes = [Field64::GuestPdpte0, Field64::GuestPdpte1, Field64::GuestPdpte2, Field64::GuestPdpte3]
            .map(|f| self.vmcs.read(f));
        PagingCtx {
            mode,
            cr3: g.cr3,
            pdptes,
            wp: g.cr0 & cr0::WP != 0,
            nxe: g.efer & efer::NXE != 0,
            pse: g.cr4 & cr4::PSE != 0,
            smep: g.cr4 & cr4::SMEP != 0,
            smap: g.cr4 & cr4::SMAP != 0,
            ac: false,
            maxphyaddr: self.ept().maxphyaddr,
        }
    }

    /// A start-up IPI under EPT: real mode natively (unrestricted guest) at
    /// `vector << 12`, in the state INIT leaves (SDM Vol. 3A 9.1.1 Table
    /// 9-1; the segment rights are those VM entry requires of real mode
    /// with unrestricted guest, SDM Vol. 3C 27.3.1.2).
    pub(super) fn ept_start_up(&mut self, vector: u8) {
        use crate::vmx::fields::Field16 as F16;
        let e = self.ept();
        let (hw0, hw4) = (e.hardware_cr0(super::INIT_CR0), e.hardware_cr4(0));
        self.vmcs.write(FieldNatural::GuestCr0, hw0);
        self.vmcs.write(FieldNatural::Cr0ReadShadow, super::INIT_CR0);
        self.vmcs.write(FieldNatural::GuestCr4, hw4);
        self.vmcs.write(FieldNatural::Cr4ReadShadow, 0);
        self.vmcs.write(FieldNatural::GuestCr3, 0);
        self.vmcs.write(Field64::GuestEfer, 0);
        let cs = u64::from(vector) << 8;
        let segs = [
            (F16::GuestEsSelector, FieldNatural::GuestEsBase, Field32::GuestEsLimit, Field32::GuestEsAccessRights, 0, 0x93),
            (F16::GuestCsSelector, FieldNatural::GuestCsBase, Field32::GuestCsLimit, Field32::GuestCsAccessRights, cs, 0x9b),
            (F16::GuestSsSelector, FieldNatural::GuestSsBase, Field32::GuestSsLimit, Field32::GuestSsAccessRights, 0, 0x93),
            (F16::GuestDsSelector, FieldNatural::GuestDsBase, Field32::GuestDsLimit, Field32::GuestDsAccessRights, 0, 0x93),
            (F16::GuestFsSelector, FieldNatural::GuestFsBase, Field32::GuestFsLimit, Field32::GuestFsAccessRights, 0, 0x93),
            (F16::GuestGsSelector, FieldNatural::GuestGsBase, Field32::GuestGsLimit, Field32::GuestGsAccessRights, 0, 0x93),
        ];
        for (sel, base, limit, ar, v, rights) in segs {
            self.vmcs.write(sel, v);
            self.vmcs.write(base, v << 4);
            self.vmcs.write(limit, 0xffff);
            self.vmcs.write(ar, rights);
        }
        self.vmcs.write(F16::GuestTrSelector, 0);
        self.vmcs.write(FieldNatural::GuestTrBase, 0);
        self.vmcs.write(Field32::GuestTrLimit, 0xffff);
        self.vmcs.write(Field32::GuestTrAccessRights, 0x8b);
        self.vmcs.write(F16::GuestLdtrSelector, 0);
        self.vmcs.write(FieldNatural::GuestLdtrBase, 0);
        self.vmcs.write(Field32::GuestLdtrLimit, 0xffff);
        self.vmcs.write(Field32::GuestLdtrAccessRights, 0x82);
        self.vmcs.write(FieldNatural::GuestGdtrBase, 0);
        self.vmcs.write(Field32::GuestGdtrLimit, 0xffff);
        self.vmcs.write(FieldNatural::GuestIdtrBase, 0);
        self.vmcs.write(Field32::GuestIdtrLimit, 0xffff);
        self.vmcs.write(FieldNatural::GuestRip, 0);
        self.vmcs.write(FieldNatural::GuestRsp, 0);
        self.vmcs.write(FieldNatural::GuestRflags, 2);
        self.regs.gpr[2] = u64::from(crate::arch::cpu::cpuid(1, 0).0);
        self.ept_prepare_entry();
        log::debug!("vCPU {} started by SIPI at {cs:04x}:0000 (EPT, unrestricted guest)", self.id);
    }

    /// An EPT misconfiguration (SDM Vol. 3C 29.3.3.1): the hypervisor built
    /// a bad entry.
    pub(super) fn ept_misconfiguration(&mut self) -> ! {
        let gpa = self.vmcs.read(Field64Ro::GuestPhysicalAddress);
        let eptp = self.ept().map.eptp;
        self.die(
            ErrorKind::HypervisorFault,
            true,
            format_args!("EPT misconfiguration at guest-physical {gpa:#x} (EPTP {eptp:#x}): the hypervisor's EPT entries are invalid"),
        )
    }
}
