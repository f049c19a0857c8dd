//! How the guest detects the Quadrant hypervisor: CPUID leaves in the range
//! the SDM reserves for software (0x4000_0000..0x4FFF_FFFF are never used by
//! Intel processors; hypervisors answer there by convention).

/// Leaf answered with the signature: EAX = highest hypervisor leaf,
/// EBX/ECX/EDX = [`SIGNATURE`] as twelve ASCII bytes.
pub const LEAF_SIGNATURE: u32 = 0x4000_0000;
/// Leaf answered with EAX = [`crate::PROTOCOL_VERSION`] and EBX = feature
/// bits ([`FEATURE_SHADOW_PAGING`]).
pub const LEAF_VERSION: u32 = 0x4000_0001;
/// EBX bit of [`LEAF_VERSION`]: the guest runs on the hypervisor's shadow
/// page cache (`mmu=shadow`), so the MmuStats hypercall reports its
/// counters; clear under the EPT reference (`mmu=ept`).
pub const FEATURE_SHADOW_PAGING: u32 = 1 << 0;
/// The highest hypervisor leaf Quadrant answers.
pub const MAX_LEAF: u32 = LEAF_VERSION;
/// The hypervisor signature in EBX, ECX, EDX order.
pub const SIGNATURE: [u8; 12] = *b"QuadrantVMX!";

/// Splits [`SIGNATURE`] into the (EBX, ECX, EDX) register values.
pub const fn signature_regs() -> (u32, u32, u32) {
    let s = SIGNATURE;
    (
        u32::from_le_bytes([s[0], s[1], s[2], s[3]]),
        u32::from_le_bytes([s[4], s[5], s[6], s[7]]),
        u32::from_le_bytes([s[8], s[9], s[10], s[11]]),
    )
}

/// True when (EBX, ECX, EDX) of leaf [`LEAF_SIGNATURE`] spell [`SIGNATURE`].
pub const fn is_quadrant(ebx: u32, ecx: u32, edx: u32) -> bool {
    let (b, c, d) = signature_regs();
    ebx == b && ecx == c && edx == d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_round_trips() {
        let (b, c, d) = signature_regs();
        assert!(is_quadrant(b, c, d));
        assert!(!is_quadrant(b, c, d ^ 1));
        assert_eq!(&b.to_le_bytes(), b"Quad");
    }
}
