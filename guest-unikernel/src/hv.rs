//! Recognising the hypervisor. CPUID leaves 0x4000_0000..0x4FFF_FFFF are
//! reserved for software: Intel processors never use them (SDM Vol. 2A,
//! CPUID, "Input EAX = 0x40000000-0x4FFFFFFF: invalid"), so hypervisors answer
//! there by convention, with a 12-byte signature in EBX, ECX, EDX. Bare, an
//! Intel CPU answers an invalid leaf with the highest basic leaf's data, so
//! the bytes are meaningful only next to CPUID.1:ECX bit 31, which the SDM
//! lists as "not used, always returns 0" and hypervisors set.

use crate::machine::Cpuid;
use core::fmt;

/// CPUID.1:ECX bit 5: VMX (SDM Vol. 2A, CPUID, Table 3-10).
pub const CPUID1_ECX_VMX: u32 = 1 << 5;
/// CPUID.1:ECX bit 31: set by hypervisors (the SDM's "always returns 0").
pub const CPUID1_ECX_HYPERVISOR: u32 = 1 << 31;

/// What leaf 0x4000_0000 said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signature {
    /// [`shared::cpuid::SIGNATURE`]: the Quadrant hypervisor.
    Quadrant {
        /// EAX: the highest hypervisor leaf.
        max_leaf: u32,
    },
    /// Another hypervisor (CPUID.1:ECX bit 31 set), e.g. QEMU TCG's
    /// `TCGTCGTCGTCG`.
    Other {
        /// The twelve signature bytes.
        sig: [u8; 12],
    },
    /// No hypervisor bit and no Quadrant signature.
    Absent,
}

impl Signature {
    /// QEMU's TCG accelerator (signature `TCGTCGTCGTCG`), whose deviations
    /// from the SDM some checks must allow for.
    pub fn is_tcg(&self) -> bool {
        matches!(self, Signature::Other { sig } if sig == b"TCGTCGTCGTCG")
    }

    /// Classifies leaf 0x4000_0000 given CPUID.1:ECX.
    pub fn classify(leaf: Cpuid, cpuid1_ecx: u32) -> Self {
        if shared::cpuid::is_quadrant(leaf.ebx, leaf.ecx, leaf.edx) {
            return Signature::Quadrant { max_leaf: leaf.eax };
        }
        if cpuid1_ecx & CPUID1_ECX_HYPERVISOR != 0 {
            let mut sig = [0; 12];
            sig[..4].copy_from_slice(&leaf.ebx.to_le_bytes());
            sig[4..8].copy_from_slice(&leaf.ecx.to_le_bytes());
            sig[8..].copy_from_slice(&leaf.edx.to_le_bytes());
            return Signature::Other { sig };
        }
        Signature::Absent
    }

    /// True for the Quadrant hypervisor.
    pub const fn is_quadrant(&self) -> bool {
        matches!(self, Signature::Quadrant { .. })
    }
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Signature::Quadrant { max_leaf } => write!(f, "Quadrant (max leaf {max_leaf:#x})"),
            Signature::Other { sig } => {
                f.write_str("other hypervisor '")?;
                for &b in sig {
                    if b.is_ascii_graphic() || b == b' ' {
                        write!(f, "{}", b as char)?;
                    } else {
                        write!(f, "\\x{b:02x}")?;
                    }
                }
                f.write_str("'")
            }
            Signature::Absent => f.write_str("no hypervisor"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(sig: &[u8; 12]) -> Cpuid {
        let w = |i: usize| u32::from_le_bytes([sig[i], sig[i + 1], sig[i + 2], sig[i + 3]]);
        Cpuid { eax: 0x4000_0001, ebx: w(0), ecx: w(4), edx: w(8) }
    }

    #[test]
    fn quadrant_other_absent() {
        assert_eq!(Signature::classify(leaf(b"QuadrantVMX!"), 0), Signature::Quadrant { max_leaf: 0x4000_0001 });
        let tcg = Signature::classify(leaf(b"TCGTCGTCGTCG"), CPUID1_ECX_HYPERVISOR);
        assert_eq!(tcg, Signature::Other { sig: *b"TCGTCGTCGTCG" });
        assert_eq!(format!("{tcg}"), "other hypervisor 'TCGTCGTCGTCG'");
        assert_eq!(Signature::classify(leaf(b"TCGTCGTCGTCG"), 0), Signature::Absent);
        let odd = Signature::classify(Cpuid { ebx: 0x0102_0341, ..Cpuid::default() }, CPUID1_ECX_HYPERVISOR);
        assert!(format!("{odd}").starts_with("other hypervisor 'A\\x03\\x02\\x01"));
    }
}
