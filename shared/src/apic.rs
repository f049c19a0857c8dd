//! The local APIC as both kernels program it (SDM Vol. 3A chapter 11): the
//! register offsets of the xAPIC MMIO page (11.4.1, Table 11-1), the x2APIC
//! MSRs (11.12.1.2), IA32_APIC_BASE (11.4.4), and the Interrupt Command
//! Register (11.6.1), encoded by the senders (the guest's IPIs, the
//! hypervisor's kicks) and decoded by the hypervisor's virtual APIC.

/// IA32_APIC_BASE (SDM Vol. 3A 11.4.4).
pub const IA32_APIC_BASE: u32 = 0x1B;
/// IA32_APIC_BASE.BSP: this processor is the bootstrap processor.
pub const APIC_BASE_BSP: u64 = 1 << 8;
/// IA32_APIC_BASE.EXTD: x2APIC mode (with EN).
pub const APIC_BASE_EXTD: u64 = 1 << 10;
/// IA32_APIC_BASE.EN: the APIC is globally enabled.
pub const APIC_BASE_EN: u64 = 1 << 11;
/// CPUID.01H:ECX.x2APIC \[bit 21\].
pub const CPUID1_ECX_X2APIC: u32 = 1 << 21;

/// xAPIC register offsets in the 4 KiB MMIO page (Table 11-1).
pub mod reg {
    /// Local APIC ID (bits 31:24 in xAPIC mode).
    pub const ID: u32 = 0x020;
    /// Version (bits 7:0), max LVT entry (bits 23:16).
    pub const VERSION: u32 = 0x030;
    /// Task priority.
    pub const TPR: u32 = 0x080;
    /// Processor priority (read-only).
    pub const PPR: u32 = 0x0A0;
    /// End of interrupt (write-only).
    pub const EOI: u32 = 0x0B0;
    /// Logical destination.
    pub const LDR: u32 = 0x0D0;
    /// Destination format (xAPIC only).
    pub const DFR: u32 = 0x0E0;
    /// Spurious-interrupt vector; bit 8 = APIC software enable (11.9).
    pub const SVR: u32 = 0x0F0;
    /// In-service register, 8 x 32 bits at 0x100..0x170.
    pub const ISR: u32 = 0x100;
    /// Trigger mode register, 0x180..0x1F0.
    pub const TMR: u32 = 0x180;
    /// Interrupt request register, 0x200..0x270.
    pub const IRR: u32 = 0x200;
    /// Error status.
    pub const ESR: u32 = 0x280;
    /// Interrupt command, bits 31:0.
    pub const ICR_LOW: u32 = 0x300;
    /// Interrupt command, bits 63:32 (xAPIC only: the destination in 31:24).
    pub const ICR_HIGH: u32 = 0x310;
    /// LVT timer.
    pub const LVT_TIMER: u32 = 0x320;
    /// LVT error (the last LVT entry).
    pub const LVT_ERROR: u32 = 0x370;
    /// Timer initial count.
    pub const TIMER_INITIAL: u32 = 0x380;
    /// Timer current count (read-only).
    pub const TIMER_CURRENT: u32 = 0x390;
    /// Timer divide configuration.
    pub const TIMER_DIVIDE: u32 = 0x3E0;
}

/// SVR bit 8: the APIC is software-enabled (SDM Vol. 3A 11.4.7.2).
pub const SVR_ENABLE: u32 = 1 << 8;
/// The first x2APIC MSR; register at xAPIC offset `o` is MSR `0x800 + o/16`.
pub const X2APIC_MSR_BASE: u32 = 0x800;
/// The last x2APIC MSR.
pub const X2APIC_MSR_LAST: u32 = 0x8FF;
/// The x2APIC SELF IPI register (write-only, x2APIC mode only).
pub const X2APIC_SELF_IPI: u32 = 0x83F;

/// The x2APIC MSR of xAPIC register offset `offset` (SDM Vol. 3A 11.12.1.2).
pub const fn x2apic_msr(offset: u32) -> u32 {
    X2APIC_MSR_BASE + (offset >> 4)
}

/// The xAPIC offset of x2APIC MSR `msr`.
pub const fn x2apic_offset(msr: u32) -> u32 {
    (msr - X2APIC_MSR_BASE) << 4
}

/// ICR delivery mode (bits 10:8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryMode {
    /// Deliver the vector to the destinations.
    Fixed,
    /// Deliver the vector to the lowest-priority destination.
    LowestPriority,
    /// System management interrupt.
    Smi,
    /// Non-maskable interrupt.
    Nmi,
    /// INIT (level assert), or INIT level de-assert when `level_assert` is 0
    /// and the trigger is level (11.6.1).
    Init,
    /// Start-up IPI: start at `vector << 12` in real mode (SDM Vol. 3A 9.4.4.1).
    StartUp,
    /// 3 or 7: reserved.
    Reserved(u8),
}

impl DeliveryMode {
    const fn from_bits(v: u32) -> Self {
        match v & 7 {
            0 => DeliveryMode::Fixed,
            1 => DeliveryMode::LowestPriority,
            2 => DeliveryMode::Smi,
            4 => DeliveryMode::Nmi,
            5 => DeliveryMode::Init,
            6 => DeliveryMode::StartUp,
            r => DeliveryMode::Reserved(r as u8),
        }
    }
    const fn bits(self) -> u32 {
        match self {
            DeliveryMode::Fixed => 0,
            DeliveryMode::LowestPriority => 1,
            DeliveryMode::Smi => 2,
            DeliveryMode::Nmi => 4,
            DeliveryMode::Init => 5,
            DeliveryMode::StartUp => 6,
            DeliveryMode::Reserved(r) => r as u32 & 7,
        }
    }
}

/// ICR destination shorthand (bits 19:18).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shorthand {
    /// The destination field names the targets.
    None,
    /// The sender only.
    ToSelf,
    /// Every processor, the sender included.
    AllIncludingSelf,
    /// Every processor but the sender.
    AllExcludingSelf,
}

/// One interrupt command (SDM Vol. 3A 11.6.1, Figure 11-12).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Icr {
    /// Vector (bits 7:0): the interrupt, or the SIPI start page.
    pub vector: u8,
    /// Delivery mode (bits 10:8).
    pub delivery: DeliveryMode,
    /// Destination mode (bit 11): logical when true, physical when false.
    pub logical: bool,
    /// Level (bit 14): 1 = assert.
    pub level_assert: bool,
    /// Trigger mode (bit 15): 1 = level.
    pub level_triggered: bool,
    /// Destination shorthand (bits 19:18).
    pub shorthand: Shorthand,
    /// Destination: bits 63:56 in xAPIC mode, 63:32 in x2APIC mode.
    pub dest: u32,
}

/// ICR bit 12 (xAPIC): delivery status, 1 = send pending.
pub const ICR_SEND_PENDING: u32 = 1 << 12;

impl Icr {
    /// A fixed, edge-triggered, physical-destination IPI.
    pub const fn fixed(vector: u8, dest: u32) -> Icr {
        Icr {
            vector,
            delivery: DeliveryMode::Fixed,
            logical: false,
            level_assert: true,
            level_triggered: false,
            shorthand: Shorthand::None,
            dest,
        }
    }

    /// INIT (level assert) to physical destination `dest` (SDM Vol. 3A 9.4.4.1).
    pub const fn init(dest: u32) -> Icr {
        Icr { delivery: DeliveryMode::Init, vector: 0, ..Icr::fixed(0, dest) }
    }

    /// NMI (the vector is ignored) to physical destination `dest`.
    pub const fn nmi(dest: u32) -> Icr {
        Icr { delivery: DeliveryMode::Nmi, ..Icr::fixed(0, dest) }
    }

    /// Start-up IPI with start page `page` (start address `page << 12`).
    pub const fn startup(page: u8, dest: u32) -> Icr {
        Icr { delivery: DeliveryMode::StartUp, ..Icr::fixed(page, dest) }
    }

    /// INIT level de-assert, the obsolete broadcast of the MP specification
    /// (Pentium and P6 only; later processors ignore it, SDM Vol. 3A 11.6.1).
    pub const fn is_init_deassert(&self) -> bool {
        matches!(self.delivery, DeliveryMode::Init) && !self.level_assert && self.level_triggered
    }

    const fn low_bits(&self) -> u32 {
        let sh = match self.shorthand {
            Shorthand::None => 0,
            Shorthand::ToSelf => 1,
            Shorthand::AllIncludingSelf => 2,
            Shorthand::AllExcludingSelf => 3,
        };
        self.vector as u32
            | self.delivery.bits() << 8
            | (self.logical as u32) << 11
            | (self.level_assert as u32) << 14
            | (self.level_triggered as u32) << 15
            | sh << 18
    }

    fn from_low(low: u32, dest: u32) -> Icr {
        Icr {
            vector: low as u8,
            delivery: DeliveryMode::from_bits(low >> 8),
            logical: low & (1 << 11) != 0,
            level_assert: low & (1 << 14) != 0,
            level_triggered: low & (1 << 15) != 0,
            shorthand: match (low >> 18) & 3 {
                0 => Shorthand::None,
                1 => Shorthand::ToSelf,
                2 => Shorthand::AllIncludingSelf,
                _ => Shorthand::AllExcludingSelf,
            },
            dest,
        }
    }

    /// The xAPIC register values: (ICR_LOW, ICR_HIGH). Write ICR_HIGH first:
    /// the write to ICR_LOW sends.
    pub const fn to_xapic(&self) -> (u32, u32) {
        (self.low_bits(), (self.dest & 0xff) << 24)
    }

    /// Decodes the xAPIC register values.
    pub fn from_xapic(low: u32, high: u32) -> Icr {
        Icr::from_low(low, high >> 24)
    }

    /// The x2APIC ICR MSR value (one WRMSR sends).
    pub const fn to_x2apic(&self) -> u64 {
        self.low_bits() as u64 | (self.dest as u64) << 32
    }

    /// Decodes the x2APIC ICR MSR value.
    pub fn from_x2apic(v: u64) -> Icr {
        Icr::from_low(v as u32, (v >> 32) as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_case::test_case;

    #[test_case(0x000C_4500, DeliveryMode::Init, Shorthand::AllExcludingSelf, 0, true; "INIT to all but self")]
    #[test_case(0x000C_4608, DeliveryMode::StartUp, Shorthand::AllExcludingSelf, 8, true; "SIPI page 8")]
    #[test_case(0x0000_4040, DeliveryMode::Fixed, Shorthand::None, 0x40, true; "fixed 0x40")]
    #[test_case(0x000C_8500, DeliveryMode::Init, Shorthand::AllExcludingSelf, 0, false; "INIT de-assert")]
    fn decodes_the_icr_values_of_the_mp_start_up_sequence(
        low: u32,
        mode: DeliveryMode,
        sh: Shorthand,
        vector: u8,
        assert: bool,
    ) {
        let icr = Icr::from_xapic(low, 3 << 24);
        assert_eq!((icr.delivery, icr.shorthand, icr.vector, icr.level_assert), (mode, sh, vector, assert));
        assert_eq!(icr.dest, 3);
        assert_eq!(icr.to_xapic(), (low, 3 << 24));
        assert_eq!(icr.is_init_deassert(), mode == DeliveryMode::Init && !assert);
    }

    #[test]
    fn x2apic_round_trip_keeps_a_32_bit_destination() {
        let icr = Icr::fixed(0x41, 0x1_0203);
        assert_eq!(Icr::from_x2apic(icr.to_x2apic()), icr);
        assert_eq!(icr.to_x2apic() >> 32, 0x1_0203);
        // xAPIC keeps only 8 destination bits.
        assert_eq!(Icr::from_xapic(icr.to_xapic().0, icr.to_xapic().1).dest, 0x03);
        assert_eq!(Icr::init(2).to_xapic(), (0x4500, 2 << 24));
        assert_eq!(Icr::startup(0x9a, 1).to_xapic(), (0x469a, 1 << 24));
    }

    #[test]
    fn x2apic_msr_numbers() {
        assert_eq!(x2apic_msr(reg::ICR_LOW), 0x830);
        assert_eq!(x2apic_msr(reg::EOI), 0x80B);
        assert_eq!(x2apic_msr(reg::ID), 0x802);
        assert_eq!(x2apic_offset(0x80F), reg::SVR);
    }
}
