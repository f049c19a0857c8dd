//! What the guest learns about the hypervisor: CPUID (with VMX hidden and
//! the Quadrant signature in the hypervisor leaves) and the hypercall
//! records of the protocol crate (`shared::hypercall`).

use super::{PagingBackend, Vcpu};
use shared::bench::{BenchCounters, MmuCounters};
use shared::cpuid as sig;
use shared::hypercall::{self as hc, Hypercall};

/// CPUID.1:ECX bits (SDM Vol. 2A, CPUID, Table 3-10).
const CPUID1_ECX_VMX: u32 = 1 << 5;
const CPUID1_ECX_HYPERVISOR: u32 = 1 << 31;

/// The guest's CPUID: the host's answer, except that VMX is hidden (the
/// guest cannot nest), the hypervisor-present bit is set, and leaves
/// 0x4000_0000.. answer with Quadrant's signature and protocol version.
pub fn guest_cpuid(
    leaf: u32,
    subleaf: u32,
    features: u32,
    host: impl Fn(u32, u32) -> (u32, u32, u32, u32),
) -> (u32, u32, u32, u32) {
    match leaf {
        1 => {
            let (a, b, c, d) = host(leaf, subleaf);
            (a, b, (c & !CPUID1_ECX_VMX) | CPUID1_ECX_HYPERVISOR, d)
        }
        sig::LEAF_SIGNATURE => {
            let (b, c, d) = sig::signature_regs();
            (sig::MAX_LEAF, b, c, d)
        }
        sig::LEAF_VERSION => (shared::PROTOCOL_VERSION, features, 0, 0),
        0x4000_0002..=0x4000_00ff => (0, 0, 0, 0),
        _ => host(leaf, subleaf),
    }
}

/// Checks reported by the guest through `ReportCheck`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CheckTally {
    /// Checks that passed.
    pub passed: u32,
    /// Checks that failed.
    pub failed: u32,
    /// Checks skipped.
    pub skipped: u32,
    /// Records rejected as malformed.
    pub rejected: u32,
}

impl CheckTally {
    /// Counts one record (as raw bytes from guest memory); returns the
    /// hypercall status.
    pub fn record(&mut self, bytes: &[u8; shared::hypercall::CheckRecord::SIZE]) -> u64 {
        use shared::{hypercall as hc, Outcome};
        match hc::CheckRecord::from_bytes(bytes).decode() {
            Ok((outcome, _, _)) => {
                match outcome {
                    Outcome::Pass => self.passed += 1,
                    Outcome::Fail => self.failed += 1,
                    Outcome::Skip => self.skipped += 1,
                }
                hc::STATUS_OK
            }
            Err(_) => {
                self.rejected += 1;
                hc::STATUS_BAD_ARGUMENT
            }
        }
    }
}

impl Vcpu<'_> {
    /// A VMCALL: RAX the call number, RBX/RCX its arguments (the protocol
    /// of `shared::hypercall`); the result goes to RAX.
    pub(super) fn hypercall(&mut self) {
        let (rax, rbx, rcx) = (self.regs.gpr[0], self.regs.gpr[3], self.regs.gpr[1]);
        self.regs.gpr[0] = match Hypercall::from_u64(rax) {
            Some(Hypercall::Version) => shared::PROTOCOL_VERSION as u64,
            Some(Hypercall::ReportCheck) => {
                let mut bytes = [0u8; hc::CheckRecord::SIZE];
                if self.ram.read(rbx, &mut bytes) {
                    self.checks.record(&bytes)
                } else {
                    hc::STATUS_BAD_ARGUMENT
                }
            }
            Some(Hypercall::MmuStats) => {
                let stats = match &self.paging {
                    PagingBackend::Shadow(sh) => {
                        let s = sh.mmu.stats();
                        hc::MmuStats {
                    magic: hc::MMU_STATS_MAGIC,
                    version: shared::PROTOCOL_VERSION,
                    shadow_pages_created: s.created,
                    shadow_pages_live: s.pages_in_use as u64,
                    cr3_hits: s.cr3_hits,
                    cr3_misses: s.cr3_misses,
                    page_faults: s.page_faults,
                    zaps: s.zaps.iter().sum(),
                    pt_writes: s.pt_writes,
                    unshadows: s.unshadows,
                    recycles: s.recycles,
                    exits: self.stats.total,
                        }
                    }
                    // No shadow under EPT: every shadow counter is honestly 0.
                    PagingBackend::Ept(_) => hc::MmuStats {
                        magic: hc::MMU_STATS_MAGIC,
                        version: shared::PROTOCOL_VERSION,
                        shadow_pages_created: 0,
                        shadow_pages_live: 0,
                        cr3_hits: 0,
                        cr3_misses: 0,
                        page_faults: 0,
                        zaps: 0,
                        pt_writes: 0,
                        unshadows: 0,
                        recycles: 0,
                        exits: self.stats.total,
                    },
                };
                let bytes = stats.to_bytes();
                let n = (rcx as usize).min(bytes.len());
                if self.ram.write(rbx, &bytes[..n]) {
                    hc::MmuStats::SIZE as u64
                } else {
                    hc::STATUS_BAD_ARGUMENT
                }
            }
            Some(Hypercall::BenchCounters) => {
                let bytes = self.bench_counters().to_bytes();
                let n = (rcx as usize).min(bytes.len());
                if self.ram.write(rbx, &bytes[..n]) {
                    BenchCounters::SIZE as u64
                } else {
                    hc::STATUS_BAD_ARGUMENT
                }
            }
            None => hc::STATUS_UNKNOWN,
        };
    }

    /// The BenchCounters record now (see `shared::bench`): exits and the
    /// hypervisor's cycles by reason, and the shadow page cache's counters
    /// (0 under EPT).
    fn bench_counters(&self) -> BenchCounters {
        let mmu = match &self.paging {
            PagingBackend::Shadow(sh) => {
                let s = sh.mmu.stats();
                MmuCounters {
                    created: s.created,
                    live: s.pages_in_use as u64,
                    cr3_hits: s.cr3_hits,
                    cr3_misses: s.cr3_misses,
                    fault_hits: s.fault_hits,
                    fault_misses: s.fault_misses,
                    page_faults: s.page_faults,
                    injected_pf: s.injected_pf,
                    write_protect_faults: s.write_protect_faults,
                    pt_writes: s.pt_writes,
                    zaps: s.zaps.iter().sum(),
                    unshadows: s.unshadows,
                    recycles: s.recycles,
                }
            }
            PagingBackend::Ept(_) => MmuCounters::default(),
        };
        BenchCounters {
            mmu,
            exits: self.stats.total,
            hv_cycles: self.stats.cycles,
            exits_by_reason: self.stats.by_reason,
            cycles_by_reason: self.stats.cycles_by_reason,
            ..BenchCounters::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::hypercall::CheckRecord;

    fn host(leaf: u32, _: u32) -> (u32, u32, u32, u32) {
        (leaf, 0x1111, 0xffff_ffff, 0x2222)
    }

    #[test]
    fn vmx_is_hidden_and_the_hypervisor_bit_set() {
        let (_, _, c, _) = guest_cpuid(1, 0, 0, |_, _| (0, 0, CPUID1_ECX_VMX, 0));
        assert_eq!(c & CPUID1_ECX_VMX, 0);
        assert_ne!(c & CPUID1_ECX_HYPERVISOR, 0);
    }

    #[test]
    fn signature_and_version_leaves() {
        let (a, b, c, d) = guest_cpuid(sig::LEAF_SIGNATURE, 0, 0, host);
        assert_eq!(a, sig::MAX_LEAF);
        assert!(sig::is_quadrant(b, c, d));
        assert_eq!(guest_cpuid(sig::LEAF_VERSION, 0, sig::FEATURE_SHADOW_PAGING, host), (shared::PROTOCOL_VERSION, sig::FEATURE_SHADOW_PAGING, 0, 0));
        assert_eq!(guest_cpuid(0x4000_0010, 0, 1, host), (0, 0, 0, 0));
        assert_eq!(guest_cpuid(7, 0, 1, host), host(7, 0));
    }

    #[test]
    fn tally_counts_and_rejects() {
        let mut t = CheckTally::default();
        let good = CheckRecord::new(shared::Outcome::Fail, "a/b", "x");
        let mut bytes = [0u8; CheckRecord::SIZE];
        bytes[0..4].copy_from_slice(&good.magic.to_le_bytes());
        bytes[4..8].copy_from_slice(&good.version.to_le_bytes());
        bytes[8..12].copy_from_slice(&good.outcome.to_le_bytes());
        bytes[12..16].copy_from_slice(&good.name_len.to_le_bytes());
        bytes[16..20].copy_from_slice(&good.detail_len.to_le_bytes());
        bytes[20..23].copy_from_slice(b"a/b");
        assert_eq!(t.record(&bytes), shared::hypercall::STATUS_OK);
        bytes[0] ^= 1;
        assert_eq!(t.record(&bytes), shared::hypercall::STATUS_BAD_ARGUMENT);
        assert_eq!(t, CheckTally { failed: 1, rejected: 1, ..Default::default() });
    }
}
