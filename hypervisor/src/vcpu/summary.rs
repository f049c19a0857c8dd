//! The end of a run: a vCPU wrote the guest's status to the exit port. The
//! other vCPUs are stopped first (so the counters are final), then the run's
//! figures are printed: exits per vCPU and by reason, the shadow page
//! cache's counters (`mmu-stats` line) and its role-coverage table (one
//! `role-coverage` line per role value created, which the runner checks
//! against `shared::coverage::PROMISED`, DESIGN.md 4).

use super::{PagingBackend, Vcpu};
use crate::arch::console;
use crate::fatal;
use crate::vm::{mask_bits, EXIT_REASONS};
use crate::vmx::exit_reason::ExitReason;
use core::fmt;
use core::sync::atomic::Ordering::SeqCst;

/// The `n` most frequent exit reasons of `counts`, most frequent first:
/// (count, name, basic reason).
fn top_reasons(counts: &[u64; EXIT_REASONS], n: usize) -> impl Iterator<Item = (u64, &'static str, usize)> {
    let mut top: [(u64, usize); EXIT_REASONS] = [(0, 0); EXIT_REASONS];
    for (i, c) in counts.iter().enumerate() {
        top[i] = (*c, i);
    }
    top.sort_unstable_by(|a, b| b.cmp(a));
    top.into_iter()
        .take_while(|(c, _)| *c > 0)
        .take(n)
        .map(|(c, r)| (c, ExitReason::from_basic(r as u16).map_or("?", |e| e.name()), r))
}

impl Vcpu<'_> {
    /// The guest wrote `status` to the exit port: stop the other vCPUs,
    /// print the summary and end the run with that status.
    pub(super) fn guest_exit(&mut self, status: u8) -> ! {
        self.flush_consoles();
        let vm = self.vm;
        let missing = vm.stop_others(self.id);
        for i in mask_bits(missing) {
            log::warn!("vCPU {i} did not stop when asked (its counters may still move)");
        }
        let t = *vm.checks.lock();
        let total: u64 = vm.total_exits.load(SeqCst);
        log::info!(
            "guest exited with status {status} (vCPU {}) after {total} VM exits; checks reported by hypercall: {} passed, {} failed, {} skipped, {} rejected",
            self.id,
            t.passed,
            t.failed,
            t.skipped,
            t.rejected
        );
        for (i, v) in vm.vcpus[..vm.count].iter().enumerate() {
            let counts: [u64; EXIT_REASONS] = core::array::from_fn(|r| v.exit_counts[r].load(SeqCst));
            let mut top = alloc::string::String::new();
            for (c, name, _) in top_reasons(&counts, 4) {
                let _ = fmt::Write::write_fmt(&mut top, format_args!(" {name} {c};"));
            }
            log::info!(
                "  vCPU {i} (APIC ID {}): {} exits ({} ), {} IPIs sent, {} interrupts injected, {} kicks sent, {} remote-flush waits",
                v.apic_id.load(SeqCst),
                v.exits.load(SeqCst),
                top.trim_end_matches(';'),
                v.ipis_sent.load(SeqCst),
                v.interrupts.load(SeqCst),
                v.kicks_sent.load(SeqCst),
                v.flush_waits.load(SeqCst),
            );
        }
        let cycles = vm.exit_cycles();
        for (n, name, r) in top_reasons(&vm.exit_counts(), 8) {
            log::info!("  exits: {n:>8} {name} ({} hypervisor cycles each)", cycles[r] / n);
        }
        match &self.paging {
            PagingBackend::Shadow => self.print_shadow_summary(),
            PagingBackend::Ept(e) => {
                let m = e.map();
                log::info!(
                    "EPT identity map: {} MiB of guest RAM in 2 MiB leaves, {} table frames, EPTP {:#x}; no shadow paging",
                    m.size >> 20,
                    m.tables,
                    m.eptp
                );
            }
        }
        if status == 0 && (t.failed > 0 || t.rejected > 0) {
            log::warn!("the guest exited with status 0 although it reported failed or malformed checks");
        }
        fatal::guest_exit(status)
    }

    fn print_shadow_summary(&mut self) {
        let lock = self.vm.mmu.as_ref().expect("shadow paging runs with a cache");
        let g = lock.lock();
        let s = g.cache.stats();
        let coverage = g.cache.role_coverage();
        log::info!(
            "shadow page cache: {} pages created, {} live (high water {}), CR3 loads {} hits / {} misses, {} page faults ({} injected), {} guest page-table writes, {} zaps, {} unshadows, {} recycles, {} remote flushes, {} role values covered",
            s.created,
            s.pages_in_use,
            s.pool_high_water,
            s.cr3_hits,
            s.cr3_misses,
            s.page_faults,
            s.injected_pf,
            s.pt_writes,
            s.zaps.iter().sum::<u64>(),
            s.unshadows,
            s.recycles,
            s.remote_flushes,
            coverage.len()
        );
        let (acq, cont, spins) =
            (lock.acquisitions.load(SeqCst), lock.contended.load(SeqCst), lock.spins.load(SeqCst));
        log::info!(
            "MMU lock: {acq} acquisitions, {cont} contended, {spins} spins; most guest paging modes live at once: {} (shadow pages), {} (loaded roots, glevels mask {:#x})",
            s.max_live_glevels,
            s.max_loaded_glevels,
            s.max_loaded_glevels_mask
        );
        console::with_console(|c| {
            for &word in coverage {
                let role = crate::mmu::Role::from_word(word);
                let count: u64 = s
                    .created_per_role
                    .iter()
                    .filter(|(w, _)| crate::mmu::Role::from_word(**w).valid() == role)
                    .map(|(_, n)| n)
                    .sum();
                let hits = s.hits_per_role.get(&word).copied().unwrap_or(0);
                let _ = shared::line::write_role_coverage(c, &role.value(), word, count, hits);
                let _ = fmt::Write::write_str(c, "\n");
            }
            let _ = shared::line::write_role_coverage_end(c, coverage.len() as u32);
            let _ = fmt::Write::write_str(c, "\n");
            let _ = shared::line::write_mmu_stats(
                c,
                &[
                    ("created", s.created),
                    ("live", s.pages_in_use as u64),
                    ("high_water", s.pool_high_water as u64),
                    ("cr3_hits", s.cr3_hits),
                    ("cr3_misses", s.cr3_misses),
                    ("fault_hits", s.fault_hits),
                    ("fault_misses", s.fault_misses),
                    ("page_faults", s.page_faults),
                    ("injected_pf", s.injected_pf),
                    ("write_protect_faults", s.write_protect_faults),
                    ("pt_writes", s.pt_writes),
                    ("zaps", s.zaps.iter().sum()),
                    ("unshadows", s.unshadows),
                    ("recycles", s.recycles),
                    ("remote_flushes", s.remote_flushes),
                    ("max_live_glevels", u64::from(s.max_live_glevels)),
                    ("max_loaded_glevels", u64::from(s.max_loaded_glevels)),
                    ("max_loaded_glevels_mask", u64::from(s.max_loaded_glevels_mask)),
                    ("loaded_glevels_pairs", u64::from(s.loaded_glevels_pairs)),
                    ("lock_acquisitions", acq),
                    ("lock_contended", cont),
                    ("lock_spins", spins),
                    ("vcpus", self.vm.count as u64),
                ],
            );
            let _ = fmt::Write::write_str(c, "\n");
        });
    }
}
