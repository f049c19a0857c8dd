//! The guest's local APIC, one per vCPU, as pure logic (SDM Vol. 3A
//! chapter 11): the registers a guest programs to send and take
//! interprocessor interrupts, through the xAPIC MMIO page (emulated from
//! the faulting instruction, `super::mmio`) or the x2APIC MSRs (RDMSR/WRMSR
//! exits). What it models:
//!
//! * ID, version, TPR/PPR, EOI, LDR/DFR, SVR, ISR/TMR/IRR, ESR, ICR, the LVT
//!   entries and the timer registers as storage (11.4-11.6, 11.8);
//! * IA32_APIC_BASE with the xAPIC <-> x2APIC transitions (11.4.4, 11.12.1,
//!   11.12.5 Figure 11-27);
//! * interrupt acceptance by priority (11.8.3: a vector is delivered when
//!   its priority class is above the PPR's) and EOI (11.8.5);
//! * which vCPUs an ICR names (physical, logical flat/cluster, x2APIC
//!   cluster, shorthands; 11.6.2, 11.12.9), in [`is_destination`].
//!
//! The IRR lives with the vCPU's shared state (other vCPUs set bits in it);
//! this module reads a snapshot. Not modelled: the APIC timer (a guest that
//! arms it is stopped with a named error, never left waiting), LINT0/1,
//! NMI/SMI delivery, the error register's causes, TMR (all edge).

use shared::apic::{self, reg, Icr, DeliveryMode, Shorthand, APIC_BASE_BSP, APIC_BASE_EN, APIC_BASE_EXTD};

/// The architectural default base of the xAPIC page (SDM Vol. 3A 11.4.1).
pub const DEFAULT_BASE: u64 = shared::acpi::LAPIC_DEFAULT_BASE;
/// The version register: version 0x14 (an integrated APIC), 6 LVT entries
/// (max LVT entry 5), as on the P6 family and later (11.4.8).
const VERSION: u32 = 0x0005_0014;
/// An LVT entry's mask bit (11.5.1).
const LVT_MASKED: u32 = 1 << 16;

/// The result of a register write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApicWrite {
    /// Done; nothing else to do.
    Done,
    /// The guest sent this interprocessor interrupt.
    Send(Icr),
    /// The guest asked for something Quadrant does not model (named).
    Unsupported(&'static str),
}

/// Why an x2APIC MSR access or an IA32_APIC_BASE write raises #GP(0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InjectGp;

/// One vCPU's local APIC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VirtualApic {
    /// The APIC ID (the host CPU's, so CPUID's initial APIC ID agrees).
    id: u32,
    /// IA32_APIC_BASE: base | EN | EXTD | BSP.
    base_msr: u64,
    tpr: u32,
    ldr: u32,
    dfr: u32,
    svr: u32,
    esr: u32,
    icr_low: u32,
    icr_high: u32,
    isr: [u64; 4],
    /// Timer, thermal, performance, LINT0, LINT1, error (0x320..0x370).
    lvt: [u32; 6],
    timer_initial: u32,
    timer_divide: u32,
}

fn highest(v: &[u64; 4]) -> Option<u8> {
    (0..4).rev().find(|&i| v[i] != 0).map(|i| (i * 64 + 63 - v[i].leading_zeros() as usize) as u8)
}

impl VirtualApic {
    /// The APIC after power-up or RESET (SDM Vol. 3A 11.4.7.1): xAPIC mode,
    /// enabled, at the default base; BSP flag for the bootstrap processor.
    pub fn new(id: u32, bsp: bool) -> Self {
        let mut a = VirtualApic {
            id,
            base_msr: DEFAULT_BASE | APIC_BASE_EN | if bsp { APIC_BASE_BSP } else { 0 },
            tpr: 0,
            ldr: 0,
            dfr: 0,
            svr: 0,
            esr: 0,
            icr_low: 0,
            icr_high: 0,
            isr: [0; 4],
            lvt: [0; 6],
            timer_initial: 0,
            timer_divide: 0,
        };
        a.init();
        a
    }

    /// INIT (SDM Vol. 3A 11.4.7.3, 11.12.5.1): every register to its
    /// power-up value except the APIC ID and IA32_APIC_BASE (the mode
    /// survives INIT).
    pub fn init(&mut self) {
        self.tpr = 0;
        self.ldr = if self.is_x2apic() { self.x2apic_ldr() } else { 0 };
        self.dfr = 0xFFFF_FFFF;
        self.svr = 0xFF;
        self.esr = 0;
        self.icr_low = 0;
        self.icr_high = 0;
        self.isr = [0; 4];
        self.lvt = [LVT_MASKED; 6];
        self.timer_initial = 0;
        self.timer_divide = 0;
    }

    /// The APIC ID.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// In x2APIC mode (EN and EXTD).
    pub fn is_x2apic(&self) -> bool {
        self.base_msr & (APIC_BASE_EN | APIC_BASE_EXTD) == APIC_BASE_EN | APIC_BASE_EXTD
    }

    /// The xAPIC page answers (EN set, EXTD clear).
    pub fn mmio_enabled(&self) -> bool {
        self.base_msr & (APIC_BASE_EN | APIC_BASE_EXTD) == APIC_BASE_EN
    }

    /// The guest-physical base of the xAPIC page.
    pub fn mmio_base(&self) -> u64 {
        self.base_msr & 0x000F_FFFF_FFFF_F000
    }

    /// Software-enabled (SVR bit 8).
    pub fn software_enabled(&self) -> bool {
        self.svr & apic::SVR_ENABLE != 0
    }

    /// The logical destination register.
    pub fn ldr(&self) -> u32 {
        self.ldr
    }

    /// The destination format register (xAPIC).
    pub fn dfr(&self) -> u32 {
        self.dfr
    }

    /// In x2APIC mode the LDR is derived from the ID (11.12.10.2): cluster
    /// in bits 31:16, one bit of 16 in bits 15:0.
    fn x2apic_ldr(&self) -> u32 {
        ((self.id >> 4) << 16) | (1 << (self.id & 0xf))
    }

    /// IA32_APIC_BASE as the guest reads it.
    pub fn base_msr(&self) -> u64 {
        self.base_msr
    }

    /// WRMSR IA32_APIC_BASE: the legal mode transitions of SDM Vol. 3A
    /// Figure 11-27 (xAPIC -> x2APIC; either -> disabled; disabled -> xAPIC);
    /// moving the base is not supported (#GP here rather than a silently
    /// ignored move). The BSP flag is read-only.
    pub fn write_base_msr(&mut self, v: u64) -> Result<(), InjectGp> {
        let en_extd = APIC_BASE_EN | APIC_BASE_EXTD;
        let reserved = !(0x000F_FFFF_FFFF_F000 | APIC_BASE_BSP | en_extd);
        if v & reserved != 0 || (v & 0x000F_FFFF_FFFF_F000 != DEFAULT_BASE && v & APIC_BASE_EN != 0) {
            return Err(InjectGp);
        }
        let (from, to) = (self.base_msr & en_extd, v & en_extd);
        let legal = from == to
            || to == 0
            || (from == APIC_BASE_EN && to == en_extd)
            || (from == 0 && to == APIC_BASE_EN);
        if !legal || to == APIC_BASE_EXTD {
            return Err(InjectGp);
        }
        self.base_msr = (v & !APIC_BASE_BSP) | (self.base_msr & APIC_BASE_BSP);
        if to == en_extd && from != en_extd {
            self.ldr = self.x2apic_ldr();
        }
        if to == 0 {
            self.init();
        }
        Ok(())
    }

    /// The processor priority (11.8.3.1): the TPR, or the class of the
    /// highest vector in service when that is higher.
    pub fn ppr(&self) -> u8 {
        let tpr = self.tpr as u8;
        let isrv = highest(&self.isr).unwrap_or(0);
        if tpr >> 4 >= isrv >> 4 { tpr } else { isrv & 0xf0 }
    }

    /// The vector to deliver next from the requests `irr`: the highest,
    /// if its priority class is above the PPR's and the APIC is
    /// software-enabled (11.8.3; a software-disabled APIC holds them).
    pub fn deliverable(&self, irr: &[u64; 4]) -> Option<u8> {
        let v = highest(irr)?;
        (self.software_enabled() && v >> 4 > self.ppr() >> 4).then_some(v)
    }

    /// Vector `v` is being delivered: it is in service now.
    pub fn accept(&mut self, v: u8) {
        self.isr[v as usize / 64] |= 1 << (v % 64);
    }

    /// EOI: the highest vector in service is done (11.8.5).
    pub fn eoi(&mut self) {
        if let Some(v) = highest(&self.isr) {
            self.isr[v as usize / 64] &= !(1 << (v % 64));
        }
    }

    /// Reads the xAPIC register at `offset` (16-byte aligned, 32 bits);
    /// `None` for reserved and write-only registers (the caller decides
    /// what the guest gets: all ones, as an unclaimed read).
    pub fn read(&self, offset: u32, irr: &[u64; 4]) -> Option<u32> {
        let word = |v: &[u64; 4], o: u32| (v[(o / 2) as usize] >> (32 * (o % 2))) as u32;
        Some(match offset {
            reg::ID => {
                if self.is_x2apic() {
                    self.id
                } else {
                    self.id << 24
                }
            }
            reg::VERSION => VERSION,
            reg::TPR => self.tpr,
            reg::PPR => u32::from(self.ppr()),
            reg::LDR => self.ldr,
            reg::DFR if !self.is_x2apic() => self.dfr,
            reg::SVR => self.svr,
            o if (reg::ISR..reg::ISR + 0x80).contains(&o) => word(&self.isr, (o - reg::ISR) / 16),
            o if (reg::TMR..reg::TMR + 0x80).contains(&o) => 0,
            o if (reg::IRR..reg::IRR + 0x80).contains(&o) => word(irr, (o - reg::IRR) / 16),
            reg::ESR => self.esr,
            reg::ICR_LOW => self.icr_low,
            reg::ICR_HIGH if !self.is_x2apic() => self.icr_high,
            o if (reg::LVT_TIMER..=reg::LVT_ERROR).contains(&o) => self.lvt[((o - reg::LVT_TIMER) / 16) as usize],
            reg::TIMER_INITIAL => self.timer_initial,
            reg::TIMER_CURRENT => 0,
            reg::TIMER_DIVIDE => self.timer_divide,
            _ => return None,
        })
    }

    /// Writes the xAPIC register at `offset`. Writes to read-only and
    /// reserved registers are dropped (the xAPIC ignores them).
    pub fn write(&mut self, offset: u32, v: u32) -> ApicWrite {
        match offset {
            reg::TPR => self.tpr = v & 0xff,
            reg::EOI => self.eoi(),
            reg::LDR if !self.is_x2apic() => self.ldr = v & 0xff00_0000,
            reg::DFR if !self.is_x2apic() => self.dfr = v | 0x0FFF_FFFF,
            // Bits 7:0 vector, 8 enable, 9 focus, 12 EOI broadcast suppression.
            reg::SVR => self.svr = v & 0x13ff,
            reg::ESR => self.esr = 0,
            reg::ICR_HIGH if !self.is_x2apic() => self.icr_high = v & 0xff00_0000,
            reg::ICR_LOW => {
                // Delivery status reads 0: the virtual ICR delivers at once.
                self.icr_low = v & !shared::apic::ICR_SEND_PENDING;
                let icr = if self.is_x2apic() {
                    Icr::from_x2apic(u64::from(v) | (u64::from(self.icr_high) << 32))
                } else {
                    Icr::from_xapic(v, self.icr_high)
                };
                return ApicWrite::Send(icr);
            }
            o if (reg::LVT_TIMER..=reg::LVT_ERROR).contains(&o) => {
                let i = ((o - reg::LVT_TIMER) / 16) as usize;
                self.lvt[i] = if self.software_enabled() { v } else { v | LVT_MASKED };
            }
            reg::TIMER_INITIAL => {
                self.timer_initial = v;
                if v != 0 && self.lvt[0] & LVT_MASKED == 0 {
                    return ApicWrite::Unsupported("the APIC timer (an unmasked LVT timer with a non-zero initial count)");
                }
            }
            reg::TIMER_DIVIDE => self.timer_divide = v & 0xb,
            _ => {}
        }
        ApicWrite::Done
    }

    /// RDMSR of an x2APIC register (11.12.1.2): #GP outside x2APIC mode, for
    /// write-only and reserved registers.
    pub fn read_msr(&self, msr: u32, irr: &[u64; 4]) -> Result<u64, InjectGp> {
        if !self.is_x2apic() {
            return Err(InjectGp);
        }
        let offset = apic::x2apic_offset(msr);
        if offset == reg::ICR_LOW {
            return Ok(u64::from(self.icr_low) | (u64::from(self.icr_high) << 32));
        }
        if matches!(offset, reg::EOI | reg::DFR | reg::ICR_HIGH) || msr == apic::X2APIC_SELF_IPI {
            return Err(InjectGp);
        }
        self.read(offset, irr).map(u64::from).ok_or(InjectGp)
    }

    /// WRMSR of an x2APIC register (11.12.1.2): #GP outside x2APIC mode, for
    /// read-only and reserved registers, and for reserved bits set where
    /// the SDM says so (EOI must be written with 0, 11.12.1.3).
    pub fn write_msr(&mut self, msr: u32, v: u64) -> Result<ApicWrite, InjectGp> {
        if !self.is_x2apic() {
            return Err(InjectGp);
        }
        let offset = apic::x2apic_offset(msr);
        match offset {
            reg::ICR_LOW => {
                self.icr_high = (v >> 32) as u32;
                self.icr_low = v as u32 & !shared::apic::ICR_SEND_PENDING;
                Ok(ApicWrite::Send(Icr::from_x2apic(v)))
            }
            reg::EOI if v != 0 => Err(InjectGp),
            _ if msr == apic::X2APIC_SELF_IPI => Ok(ApicWrite::Send(Icr {
                shorthand: Shorthand::ToSelf,
                ..Icr::fixed(v as u8, 0)
            })),
            reg::TPR | reg::EOI | reg::SVR | reg::ESR | reg::TIMER_INITIAL | reg::TIMER_DIVIDE => {
                Ok(self.write(offset, v as u32))
            }
            o if (reg::LVT_TIMER..=reg::LVT_ERROR).contains(&o) => Ok(self.write(offset, v as u32)),
            _ => Err(InjectGp),
        }
    }
}

/// What a destination matcher needs to know of a possible target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    /// Its APIC ID.
    pub id: u32,
    /// Its LDR.
    pub ldr: u32,
    /// Its DFR (xAPIC).
    pub dfr: u32,
    /// It is the sender.
    pub is_sender: bool,
}

/// Whether `icr`, sent in x2APIC mode when `x2apic`, is addressed to `t`
/// (SDM Vol. 3A 11.6.2 destination modes and shorthands, 11.12.9 x2APIC
/// logical destinations). Broadcast: 0xFF (xAPIC) / 0xFFFF_FFFF (x2APIC)
/// in physical mode.
pub fn is_destination(icr: &Icr, x2apic: bool, t: Target) -> bool {
    match icr.shorthand {
        Shorthand::ToSelf => return t.is_sender,
        Shorthand::AllIncludingSelf => return true,
        Shorthand::AllExcludingSelf => return !t.is_sender,
        Shorthand::None => {}
    }
    let broadcast = if x2apic { 0xFFFF_FFFF } else { 0xFF };
    if !icr.logical {
        return icr.dest == broadcast || icr.dest == t.id;
    }
    if x2apic {
        return icr.dest == broadcast
            || (icr.dest >> 16 == t.ldr >> 16 && icr.dest & t.ldr & 0xffff != 0);
    }
    let dest = icr.dest & 0xff;
    let ldr = t.ldr >> 24;
    if t.dfr >> 28 == 0xF {
        // Flat model: one bit per processor.
        dest & ldr != 0
    } else {
        // Cluster model: cluster in bits 7:4, members in 3:0.
        dest == 0xff || (dest >> 4 == ldr >> 4 && dest & ldr & 0xf != 0)
    }
}

/// Whether the ICR's delivery mode is one Quadrant delivers (fixed,
/// lowest priority, INIT, start-up), or the name of the one it does not.
pub fn unsupported_delivery(icr: &Icr) -> Option<&'static str> {
    match icr.delivery {
        DeliveryMode::Fixed | DeliveryMode::LowestPriority | DeliveryMode::Init | DeliveryMode::StartUp => None,
        DeliveryMode::Smi => Some("SMI"),
        DeliveryMode::Nmi => Some("NMI"),
        DeliveryMode::Reserved(_) => Some("a reserved delivery mode"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn irr(vs: &[u8]) -> [u64; 4] {
        let mut r = [0u64; 4];
        for &v in vs {
            r[v as usize / 64] |= 1 << (v % 64);
        }
        r
    }

    #[test]
    fn reset_state_and_id() {
        let a = VirtualApic::new(3, false);
        assert_eq!(a.read(reg::ID, &[0; 4]), Some(3 << 24));
        assert_eq!(a.read(reg::VERSION, &[0; 4]), Some(VERSION));
        assert_eq!(a.read(reg::SVR, &[0; 4]), Some(0xff));
        assert_eq!(a.read(reg::DFR, &[0; 4]), Some(0xffff_ffff));
        assert!(a.mmio_enabled() && !a.is_x2apic() && !a.software_enabled());
        assert_eq!(a.base_msr(), 0xFEE0_0000 | APIC_BASE_EN);
        assert_eq!(VirtualApic::new(0, true).base_msr() & APIC_BASE_BSP, APIC_BASE_BSP);
    }

    #[test]
    fn a_disabled_apic_holds_requests_until_enabled() {
        let mut a = VirtualApic::new(0, true);
        assert_eq!(a.deliverable(&irr(&[0x40])), None);
        a.write(reg::SVR, 0x1ff);
        assert_eq!(a.deliverable(&irr(&[0x40])), Some(0x40));
    }

    #[test]
    fn priority_isr_tpr_and_eoi() {
        let mut a = VirtualApic::new(0, true);
        a.write(reg::SVR, 0x1ff);
        a.accept(0x51);
        // In service 0x51 (class 5): 0x52 (class 5) waits, 0x61 goes.
        assert_eq!(a.deliverable(&irr(&[0x52])), None);
        assert_eq!(a.deliverable(&irr(&[0x52, 0x61])), Some(0x61));
        assert_eq!(a.read(reg::PPR, &[0; 4]), Some(0x50));
        assert_eq!(a.read(reg::ISR + 0x20, &[0; 4]), Some(1 << (0x51 - 0x40)));
        a.write(reg::EOI, 0);
        assert_eq!(a.deliverable(&irr(&[0x52])), Some(0x52));
        a.write(reg::TPR, 0x70);
        assert_eq!(a.deliverable(&irr(&[0x61])), None);
        assert_eq!(a.read(reg::IRR + 0x30, &irr(&[0x61])), Some(1 << 1));
    }

    #[test]
    fn icr_write_sends_with_the_high_half() {
        let mut a = VirtualApic::new(0, true);
        a.write(reg::ICR_HIGH, 2 << 24);
        assert_eq!(a.write(reg::ICR_LOW, 0x4500), ApicWrite::Send(Icr::init(2)));
        assert_eq!(a.read(reg::ICR_LOW, &[0; 4]), Some(0x4500));
    }

    #[test]
    fn x2apic_transition_msrs_and_gp() {
        let mut a = VirtualApic::new(0x11, false);
        assert_eq!(a.read_msr(0x802, &[0; 4]), Err(InjectGp), "#GP in xAPIC mode");
        a.write_base_msr(0xFEE0_0000 | APIC_BASE_EN | APIC_BASE_EXTD).unwrap();
        assert!(a.is_x2apic() && !a.mmio_enabled());
        assert_eq!(a.read_msr(0x802, &[0; 4]), Ok(0x11));
        assert_eq!(a.read_msr(0x80D, &[0; 4]), Ok((1 << 16) | (1 << 1)));
        assert_eq!(a.write_msr(0x830, Icr::fixed(0x40, 5).to_x2apic()), Ok(ApicWrite::Send(Icr::fixed(0x40, 5))));
        assert_eq!(a.write_msr(0x80B, 1), Err(InjectGp));
        assert_eq!(a.write_msr(0x802, 0), Err(InjectGp), "ID is read-only");
        assert_eq!(a.read_msr(0x80E, &[0; 4]), Err(InjectGp), "no DFR in x2APIC mode");
        // x2APIC -> xAPIC directly is illegal; via disabled it is fine.
        assert_eq!(a.write_base_msr(0xFEE0_0000 | APIC_BASE_EN), Err(InjectGp));
        a.write_base_msr(0xFEE0_0000).unwrap();
        a.write_base_msr(0xFEE0_0000 | APIC_BASE_EN).unwrap();
        assert!(a.mmio_enabled());
        assert_eq!(a.write_base_msr(0xFED0_0000 | APIC_BASE_EN), Err(InjectGp), "moving the page");
    }

    #[test]
    fn self_ipi_msr() {
        let mut a = VirtualApic::new(0, true);
        a.write_base_msr(0xFEE0_0000 | APIC_BASE_EN | APIC_BASE_EXTD).unwrap();
        let Ok(ApicWrite::Send(icr)) = a.write_msr(0x83F, 0x45) else { panic!() };
        assert_eq!((icr.vector, icr.shorthand), (0x45, Shorthand::ToSelf));
    }

    #[test]
    fn the_timer_is_refused_by_name_only_when_armed() {
        let mut a = VirtualApic::new(0, true);
        a.write(reg::SVR, 0x1ff);
        assert_eq!(a.write(reg::TIMER_INITIAL, 100), ApicWrite::Done, "masked LVT timer: nothing fires");
        a.write(reg::LVT_TIMER, 0x30);
        assert!(matches!(a.write(reg::TIMER_INITIAL, 100), ApicWrite::Unsupported(_)));
    }

    fn t(id: u32, ldr: u32, dfr: u32, is_sender: bool) -> Target {
        Target { id, ldr, dfr, is_sender }
    }

    #[test]
    fn destinations() {
        let phys = Icr::fixed(0x40, 2);
        assert!(is_destination(&phys, false, t(2, 0, !0, false)));
        assert!(!is_destination(&phys, false, t(1, 0, !0, false)));
        assert!(is_destination(&Icr::fixed(0x40, 0xff), false, t(1, 0, !0, false)));
        let all_but = Icr { shorthand: Shorthand::AllExcludingSelf, ..phys };
        assert!(!is_destination(&all_but, false, t(0, 0, !0, true)));
        assert!(is_destination(&all_but, false, t(5, 0, !0, false)));
        // Flat logical: LDR bit 1 set for the target.
        let logical = Icr { logical: true, dest: 0b0110, ..phys };
        assert!(is_destination(&logical, false, t(7, 0b10 << 24, !0, false)));
        assert!(!is_destination(&logical, false, t(7, 0b1 << 24, !0, false)));
        // Cluster logical: cluster 2, member bit 0.
        let cl = Icr { logical: true, dest: 0x21, ..phys };
        assert!(is_destination(&cl, false, t(7, 0x21 << 24, 0x0fff_ffff, false)));
        assert!(!is_destination(&cl, false, t(7, 0x31 << 24, 0x0fff_ffff, false)));
        // x2APIC: 32-bit physical IDs and clusters.
        assert!(is_destination(&Icr::fixed(0x40, 0x1_0000), true, t(0x1_0000, 0, 0, false)));
        let x2l = Icr { logical: true, dest: (1 << 16) | 0b100, ..phys };
        assert!(is_destination(&x2l, true, t(0x12, (1 << 16) | 0b100, 0, false)));
        assert!(!is_destination(&x2l, true, t(0x02, 0b100, 0, false)));
    }

    #[test]
    fn delivery_modes() {
        assert_eq!(unsupported_delivery(&Icr::startup(8, 1)), None);
        assert_eq!(unsupported_delivery(&Icr { delivery: DeliveryMode::Nmi, ..Icr::fixed(0, 1) }), Some("NMI"));
    }
}
