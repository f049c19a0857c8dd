//! VM exits counted by basic exit reason (SDM Vol. 3D Appendix C), and the
//! hypervisor's TSC cycles from each VM exit to the next VM entry, by the
//! reason of the exit being handled: what the run's closing summary and
//! the BenchCounters hypercall (`shared::bench`) report.

/// Basic exit reasons counted (`shared::bench::EXIT_REASONS`).
pub const EXIT_REASONS: usize = shared::bench::EXIT_REASONS;

/// Exits and cycles by basic reason.
#[derive(Clone, Debug)]
pub struct ExitStats {
    /// All exits.
    pub total: u64,
    /// Exits by basic reason number.
    pub by_reason: [u64; EXIT_REASONS],
    /// Cycles spent from VM exits to the following VM entries.
    pub cycles: u64,
    /// Those cycles by basic reason number.
    pub cycles_by_reason: [u64; EXIT_REASONS],
    /// The exit being handled: its basic reason and the TSC when it
    /// reached the hypervisor.
    current: Option<(usize, u64)>,
}

impl Default for ExitStats {
    fn default() -> Self {
        Self::new()
    }
}

impl ExitStats {
    /// Nothing counted.
    pub const fn new() -> Self {
        ExitStats { total: 0, by_reason: [0; EXIT_REASONS], cycles: 0, cycles_by_reason: [0; EXIT_REASONS], current: None }
    }

    /// A VM exit reached the hypervisor at TSC `tsc`.
    pub fn exited(&mut self, tsc: u64) {
        self.current = Some((0, tsc));
    }

    /// The exit being handled has basic reason `basic` (one outside the
    /// table counts in the total only).
    pub fn count(&mut self, basic: u16) {
        self.total += 1;
        if let Some(n) = self.by_reason.get_mut(basic as usize) {
            *n += 1;
            if let Some(c) = &mut self.current {
                c.0 = basic as usize;
            }
        }
    }

    /// The next VM entry at TSC `tsc` ends the current exit's handling:
    /// its basic reason and the cycles it took, if there was one.
    pub fn entering(&mut self, tsc: u64) -> Option<(usize, u64)> {
        let (r, t0) = self.current.take()?;
        let c = tsc.wrapping_sub(t0);
        self.cycles += c;
        self.cycles_by_reason[r] += c;
        Some((r, c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cycles_go_to_the_exit_being_handled() {
        let mut s = ExitStats::new();
        assert_eq!(s.entering(100), None); // the first entry: no exit before it
        assert_eq!(s.cycles, 0);
        s.exited(1_000);
        s.count(28);
        assert_eq!(s.entering(1_863), Some((28, 863)));
        s.exited(5_000);
        s.count(0);
        s.entering(9_000);
        s.entering(9_500); // no exit in between: nothing added
        s.exited(10_000);
        s.count(500); // outside the table: counted, its cycles go to reason 0
        s.entering(10_010);
        assert_eq!((s.total, s.by_reason[28], s.by_reason[0]), (3, 1, 1));
        assert_eq!((s.cycles, s.cycles_by_reason[28], s.cycles_by_reason[0]), (863 + 4_000 + 10, 863, 4_010));
    }
}
