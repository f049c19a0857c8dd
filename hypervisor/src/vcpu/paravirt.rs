//! What the guest learns about the hypervisor: CPUID (with VMX hidden and
//! the Quadrant signature in the hypervisor leaves) and the hypercall
//! records of the protocol crate (`shared::hypercall`), among them the
//! shadow entries of one address for the guest's failure reports
//! (`ShadowWalk`).

use super::{cr::efer, PagingBackend, Vcpu};
use crate::mmu::ShadowWalk;
use shared::bench::{BenchCounters, MmuCounters};
use shared::cpuid as sig;
use shared::hypercall::{self as hc, Hypercall, ShadowEntry, ShadowWalkRecord, ShadowWalkStatus};

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

/// The `ShadowWalk` record of a walk of the MMU core (`None`: no root).
pub fn shadow_walk_record(la: u64, walk: Option<&ShadowWalk>) -> ShadowWalkRecord {
    let Some(w) = walk else {
        return ShadowWalkRecord::new(ShadowWalkStatus::NoRoot, la, 0);
    };
    let mut r = ShadowWalkRecord::new(ShadowWalkStatus::Walked, la, w.root_hpa);
    for s in w.steps() {
        if let Some(g) = s.maps_gfn {
            r.leaf_gfn = g;
        }
        r.push(ShadowEntry {
            value: s.value,
            table: s.table_hpa,
            gfn: s.page.map_or(0, |p| p.1),
            role: s.page.map_or(hc::ROLE_PAE_ROOT, |p| p.2.value().pack()),
            level: u16::from(s.level),
            index: s.index,
        });
    }
    r
}

impl Vcpu<'_> {
    /// A VMCALL: RAX the call number, RBX/RCX/RDX its arguments (the
    /// protocol of `shared::hypercall`); the result goes to RAX. Outside
    /// IA-32e mode only the low 32 bits of the registers count (the upper
    /// halves are undefined after leaving 64-bit mode, SDM Vol. 1 3.4.1.1).
    pub(super) fn hypercall(&mut self) {
        let width = if self.guest_control().efer & efer::LMA != 0 { u64::MAX } else { u64::from(u32::MAX) };
        let [rax, rbx, rcx, rdx] = [0, 3, 1, 2].map(|i| self.regs.gpr[i] & width);
        self.regs.gpr[0] = match Hypercall::from_u64(rax) {
            Some(Hypercall::Version) => shared::PROTOCOL_VERSION as u64,
            Some(Hypercall::ReportCheck) => {
                let mut bytes = [0u8; hc::CheckRecord::SIZE];
                if self.vm.ram.read(rbx, &mut bytes) {
                    self.vm.checks.lock().record(&bytes)
                } else {
                    hc::STATUS_BAD_ARGUMENT
                }
            }
            Some(Hypercall::MmuStats) => {
                let mut stats = hc::MmuStats {
                    magic: hc::MMU_STATS_MAGIC,
                    version: shared::PROTOCOL_VERSION,
                    exits: self.vm.total_exits.load(core::sync::atomic::Ordering::SeqCst),
                    ..Default::default()
                };
                // No shadow under EPT: every shadow counter is honestly 0.
                if let PagingBackend::Shadow = self.paging {
                    let g = shadow!(self);
                    let s = g.cache.stats();
                    stats.shadow_pages_created = s.created;
                    stats.shadow_pages_live = s.pages_in_use as u64;
                    stats.cr3_hits = s.cr3_hits;
                    stats.cr3_misses = s.cr3_misses;
                    stats.page_faults = s.page_faults;
                    stats.zaps = s.zaps.iter().sum();
                    stats.pt_writes = s.pt_writes;
                    stats.unshadows = s.unshadows;
                    stats.recycles = s.recycles;
                    stats.loaded_glevels = u64::from(g.cache.loaded_glevels_mask());
                    stats.remote_flushes = s.remote_flushes;
                }
                let bytes = stats.to_bytes();
                let n = (rcx as usize).min(bytes.len());
                if self.vm.ram.write(rbx, &bytes[..n]) {
                    hc::MmuStats::SIZE as u64
                } else {
                    hc::STATUS_BAD_ARGUMENT
                }
            }
            Some(Hypercall::ShadowWalk) => {
                let rec = match &self.paging {
                    PagingBackend::Shadow => {
                        let mut g = shadow!(self);
                        let (mmu, vmmu) = g.split(self.id);
                        shadow_walk_record(rbx, mmu.shadow_walk(vmmu, rbx).as_ref())
                    }
                    PagingBackend::Ept(_) => ShadowWalkRecord::new(ShadowWalkStatus::NoShadow, rbx, 0),
                };
                let bytes = rec.to_bytes();
                let n = (rdx as usize).min(bytes.len());
                if self.vm.ram.write(rcx, &bytes[..n]) {
                    ShadowWalkRecord::SIZE as u64
                } else {
                    hc::STATUS_BAD_ARGUMENT
                }
            }
            Some(Hypercall::BenchCounters) => {
                let bytes = self.bench_counters().to_bytes();
                let n = (rcx as usize).min(bytes.len());
                if self.vm.ram.write(rbx, &bytes[..n]) {
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
    /// The BenchCounters record: the shadow page cache's counters, and the
    /// VM exits and hypervisor cycles of every vCPU by exit reason.
    fn bench_counters(&mut self) -> BenchCounters {
        let mmu = match &self.paging {
            PagingBackend::Shadow => {
                let g = shadow!(self);
                let s = g.cache.stats();
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
        let cycles_by_reason = self.vm.exit_cycles();
        BenchCounters {
            mmu,
            exits: self.vm.total_exits.load(core::sync::atomic::Ordering::SeqCst),
            hv_cycles: cycles_by_reason.iter().sum(),
            exits_by_reason: self.vm.exit_counts(),
            cycles_by_reason,
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
    fn shadow_walk_without_a_root_says_so() {
        let r = shadow_walk_record(0x1234, None);
        assert_eq!(ShadowWalkStatus::from_u32(r.status), Some(ShadowWalkStatus::NoRoot));
        assert_eq!((r.linear, r.root, r.count, r.leaf_gfn), (0x1234, 0, 0, hc::NO_GFN));
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
