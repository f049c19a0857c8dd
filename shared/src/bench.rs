//! The benchmark protocol: the [`BenchCounters`] record a guest workload
//! reads through [`crate::hypercall::Hypercall::BenchCounters`] before and
//! after its measured loop, and the difference of two such records.
//!
//! The record carries every counter the benchmark reports per workload and
//! hypervisor variant: VM exits in total and by basic exit reason (SDM Vol.
//! 3D Appendix C), the hypervisor's own TSC cycles from each VM exit to the
//! next VM entry (total and by reason), and the shadow page cache's
//! counters ([`MmuCounters`]; all 0 under `mmu=ept`).

/// Magic at the start of a [`BenchCounters`] record ("QBEN").
pub const BENCH_COUNTERS_MAGIC: u32 = u32::from_le_bytes(*b"QBEN");

/// Basic exit reasons counted (0..EXIT_REASONS; SDM Vol. 3D Table C-1 ends
/// at 75).
pub const EXIT_REASONS: usize = 80;

/// Basic exit reason of VMCALL (SDM Vol. 3D Table C-1).
pub const EXIT_VMCALL: usize = 18;

/// The shadow page cache's counters, as the hypervisor's `mmu::MmuStats`
/// keeps them (monotonic except `live`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MmuCounters {
    /// Shadow pages created.
    pub created: u64,
    /// Shadow pages (and PAE roots) in use.
    pub live: u64,
    /// CR3 loads whose roots were all found in the cache.
    pub cr3_hits: u64,
    /// CR3 loads that created a root.
    pub cr3_misses: u64,
    /// Shadow-page lookups of a fault that found the page.
    pub fault_hits: u64,
    /// Shadow-page lookups of a fault that created it.
    pub fault_misses: u64,
    /// Page faults (#PF exits) handled by the cache.
    pub page_faults: u64,
    /// Page faults injected into the guest.
    pub injected_pf: u64,
    /// Writes to a write-protected guest page table.
    pub write_protect_faults: u64,
    /// Guest page-table writes emulated.
    pub pt_writes: u64,
    /// Shadow pages zapped, for any reason.
    pub zaps: u64,
    /// gfns unshadowed (write flooding).
    pub unshadows: u64,
    /// Shadow pages recycled under pool pressure.
    pub recycles: u64,
}

impl MmuCounters {
    /// The counters' names, in [`Self::values`] order (also the keys of the
    /// benchmark's console line and JSON).
    pub const NAMES: [&'static str; 13] = [
        "created",
        "live",
        "cr3_hits",
        "cr3_misses",
        "fault_hits",
        "fault_misses",
        "page_faults",
        "injected_pf",
        "write_protect_faults",
        "pt_writes",
        "zaps",
        "unshadows",
        "recycles",
    ];

    /// The counters in [`Self::NAMES`] order.
    pub const fn values(&self) -> [u64; 13] {
        [
            self.created,
            self.live,
            self.cr3_hits,
            self.cr3_misses,
            self.fault_hits,
            self.fault_misses,
            self.page_faults,
            self.injected_pf,
            self.write_protect_faults,
            self.pt_writes,
            self.zaps,
            self.unshadows,
            self.recycles,
        ]
    }

    /// The counters from [`Self::values`] order.
    pub const fn from_values(v: [u64; 13]) -> Self {
        MmuCounters {
            created: v[0],
            live: v[1],
            cr3_hits: v[2],
            cr3_misses: v[3],
            fault_hits: v[4],
            fault_misses: v[5],
            page_faults: v[6],
            injected_pf: v[7],
            write_protect_faults: v[8],
            pt_writes: v[9],
            zaps: v[10],
            unshadows: v[11],
            recycles: v[12],
        }
    }
}

/// What [`crate::hypercall::Hypercall::BenchCounters`] returns. A snapshot
/// taken while the hypervisor handles the hypercall: the exit counts include
/// that VMCALL's own exit, the cycle counts every exit handled before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BenchCounters {
    /// [`BENCH_COUNTERS_MAGIC`].
    pub magic: u32,
    /// [`crate::PROTOCOL_VERSION`].
    pub version: u32,
    /// The shadow page cache (all 0 without shadow paging).
    pub mmu: MmuCounters,
    /// VM exits of any reason.
    pub exits: u64,
    /// The hypervisor's TSC cycles from VM exits to the following VM
    /// entries (the handlers, without the hardware's exit and entry).
    pub hv_cycles: u64,
    /// VM exits by basic exit reason.
    pub exits_by_reason: [u64; EXIT_REASONS],
    /// The hypervisor's cycles by basic exit reason.
    pub cycles_by_reason: [u64; EXIT_REASONS],
}

impl Default for BenchCounters {
    fn default() -> Self {
        BenchCounters {
            magic: BENCH_COUNTERS_MAGIC,
            version: crate::PROTOCOL_VERSION,
            mmu: MmuCounters::default(),
            exits: 0,
            hv_cycles: 0,
            exits_by_reason: [0; EXIT_REASONS],
            cycles_by_reason: [0; EXIT_REASONS],
        }
    }
}

/// Counters after the header: 13 MMU counters, exits, cycles, and the two
/// per-reason arrays.
const WORDS: usize = 13 + 2 + 2 * EXIT_REASONS;

impl BenchCounters {
    /// Size of the record in bytes (little endian: magic, version, then
    /// 64-bit counters in field order).
    pub const SIZE: usize = 8 + 8 * WORDS;

    /// The record as guest memory holds it.
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        b[0..4].copy_from_slice(&self.magic.to_le_bytes());
        b[4..8].copy_from_slice(&self.version.to_le_bytes());
        let words = self
            .mmu
            .values()
            .into_iter()
            .chain([self.exits, self.hv_cycles])
            .chain(self.exits_by_reason)
            .chain(self.cycles_by_reason);
        for (i, w) in words.enumerate() {
            b[8 + 8 * i..16 + 8 * i].copy_from_slice(&w.to_le_bytes());
        }
        b
    }

    /// Reads the record from its byte form.
    pub fn from_bytes(b: &[u8; Self::SIZE]) -> Self {
        let w = |i: usize| {
            let mut x = [0u8; 8];
            x.copy_from_slice(&b[8 + 8 * i..16 + 8 * i]);
            u64::from_le_bytes(x)
        };
        BenchCounters {
            magic: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            version: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
            mmu: MmuCounters::from_values(core::array::from_fn(w)),
            exits: w(13),
            hv_cycles: w(14),
            exits_by_reason: core::array::from_fn(|r| w(15 + r)),
            cycles_by_reason: core::array::from_fn(|r| w(15 + EXIT_REASONS + r)),
        }
    }

    /// True when magic and version are this protocol's.
    pub fn is_valid(&self) -> bool {
        self.magic == BENCH_COUNTERS_MAGIC && self.version == crate::PROTOCOL_VERSION
    }

    /// What happened between two snapshots `self` (before the measured
    /// loop) and `after`: every counter's difference (`live`: its value
    /// after), less the closing hypercall's own VMCALL exit, so the exit
    /// counts are exactly the loop's. The cycle counts then cover the
    /// loop's exits plus the opening hypercall's handler (its VMCALL row).
    pub fn delta(&self, after: &BenchCounters) -> BenchCounters {
        let (a, b) = (self.mmu.values(), after.mmu.values());
        let mut mmu: [u64; 13] = core::array::from_fn(|i| b[i].wrapping_sub(a[i]));
        mmu[1] = after.mmu.live;
        let mut d = BenchCounters {
            magic: after.magic,
            version: after.version,
            mmu: MmuCounters::from_values(mmu),
            exits: after.exits.wrapping_sub(self.exits).saturating_sub(1),
            hv_cycles: after.hv_cycles.wrapping_sub(self.hv_cycles),
            exits_by_reason: core::array::from_fn(|r| after.exits_by_reason[r].wrapping_sub(self.exits_by_reason[r])),
            cycles_by_reason: core::array::from_fn(|r| after.cycles_by_reason[r].wrapping_sub(self.cycles_by_reason[r])),
        };
        d.exits_by_reason[EXIT_VMCALL] = d.exits_by_reason[EXIT_VMCALL].saturating_sub(1);
        d
    }

    /// Cycles and exits of every reason but VMCALL (the workloads make no
    /// hypercall inside their loops; the VMCALL row holds the snapshots').
    pub fn without_vmcall(&self) -> (u64, u64) {
        let exits = self.exits - self.exits_by_reason[EXIT_VMCALL].min(self.exits);
        let cycles = self.hv_cycles.saturating_sub(self.cycles_by_reason[EXIT_VMCALL]);
        (exits, cycles)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_size() {
        let mut c = BenchCounters { exits: 99, hv_cycles: 12345, ..Default::default() };
        c.mmu.cr3_hits = 7;
        c.mmu.recycles = 3;
        c.exits_by_reason[28] = 80;
        c.cycles_by_reason[79] = 5;
        assert_eq!(BenchCounters::SIZE, 1408);
        let back = BenchCounters::from_bytes(&c.to_bytes());
        assert_eq!(back, c);
        assert!(back.is_valid());
        assert_eq!(MmuCounters::from_values(c.mmu.values()), c.mmu);
    }

    #[test]
    fn delta_drops_the_closing_hypercall() {
        let mut a = BenchCounters { exits: 10, hv_cycles: 1000, ..Default::default() };
        a.exits_by_reason[EXIT_VMCALL] = 4;
        a.cycles_by_reason[EXIT_VMCALL] = 400;
        a.mmu.live = 50;
        a.mmu.created = 50;
        let mut b = a;
        // The loop: 16 CR-access exits of 100 cycles; then the closing VMCALL.
        b.exits += 16 + 1;
        b.exits_by_reason[28] += 16;
        b.exits_by_reason[EXIT_VMCALL] += 1;
        b.hv_cycles += 1600 + 90; // + the opening hypercall's handler
        b.cycles_by_reason[28] += 1600;
        b.cycles_by_reason[EXIT_VMCALL] += 90;
        b.mmu.live = 48;
        let d = a.delta(&b);
        assert_eq!((d.exits, d.exits_by_reason[28], d.exits_by_reason[EXIT_VMCALL]), (16, 16, 0));
        assert_eq!((d.mmu.created, d.mmu.live), (0, 48));
        assert_eq!(d.without_vmcall(), (16, 1600));
    }
}
