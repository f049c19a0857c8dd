//! `boot/...`: what the loader handed over and the machine the guest runs
//! on, before any mode switch: the Multiboot hand-off state, information
//! block and memory map, the RAM itself, IA-32e mode, and whether the
//! hypervisor is there when the run says it should be.

use super::{Check, Ctx};
use crate::cmdline::ExpectHv;
use crate::machine::Range;
use crate::memmap::{self, check_mem_upper, Exclusions, MemMap, UpperVerdict, FOUR_GIB, PAGE};
use crate::pattern::{pattern, OFFSETS, SEED};
use crate::report::{Detail, Expect};
use core::fmt::Write;
use shared::multiboot::{self, FLAG_CMDLINE, FLAG_MEM, FLAG_MMAP};
use shared::Outcome;

/// The `boot/...` checks in run order.
pub static CHECKS: &[Check] = &[
    Check { name: "boot/handoff", run: handoff },
    Check { name: "boot/info-block", run: info_block },
    Check { name: "boot/memory-map", run: memory_map },
    Check { name: "boot/long-mode", run: long_mode },
    Check { name: "boot/hypervisor-signature", run: hypervisor_signature },
    Check { name: "boot/ram-pattern", run: ram_pattern },
];

pub use crate::regs::{CR0_PE, CR0_PG, CR4_PAE, EFER_LME, EFER_LMA};
/// EFLAGS.IF (SDM Vol. 1 3.4.3).
pub const EFLAGS_IF: u32 = 1 << 9;
/// EFLAGS.VM (SDM Vol. 1 3.4.3).
pub const EFLAGS_VM: u32 = 1 << 17;

const fn bit(v: u64, mask: u64) -> u8 {
    (v & mask != 0) as u8
}

/// Multiboot 1 specification 3.2 "Machine state": at the kernel entry EAX
/// holds 0x2BADB002, CR0.PG is 0 and CR0.PE is 1, EFLAGS.VM is 0 and
/// EFLAGS.IF is 0. Read from what the 32-bit entry recorded before it
/// changed anything.
pub fn handoff(ctx: &mut Ctx<'_>, d: &mut Detail) -> Outcome {
    let h = ctx.m.handoff();
    let (cr0, fl) = (u64::from(h.cr0), u64::from(h.eflags));
    let mut e = Expect::new(d);
    e.that(h.magic == multiboot::BOOTLOADER_MAGIC, format_args!("EAX={:#x}, expected 0x2badb002", h.magic));
    e.that(cr0 & CR0_PE != 0, format_args!("CR0.PE=0, expected 1"));
    e.that(cr0 & CR0_PG == 0, format_args!("CR0.PG=1, expected 0"));
    e.that(fl & u64::from(EFLAGS_VM) == 0, format_args!("EFLAGS.VM=1, expected 0"));
    e.that(fl & u64::from(EFLAGS_IF) == 0, format_args!("EFLAGS.IF=1, expected 0"));
    e.finish(format_args!("eax={:#x} ebx={:#x} cr0={:#x} eflags={:#x}", h.magic, h.info, h.cr0, h.eflags))
}

/// The information block at EBX parses (Multiboot 1 specification 3.3) and
/// carries what the guest needs: `mem_lower`/`mem_upper` (flags bit 0) and
/// the memory map (bit 6). `mem_lower` is at most 640 KiB (3.3: "the value
/// returned for lower memory is maximally 640 kilobytes"); a command line
/// (bit 2) is a readable NUL-terminated string.
pub fn info_block(ctx: &mut Ctx<'_>, d: &mut Detail) -> Outcome {
    let info = match ctx.info {
        Ok(i) => i,
        Err(err) => {
            let _ = write!(d, "information block at {:#x} unreadable: {err:?}", ctx.info_addr);
            return Outcome::Fail;
        }
    };
    let mut name_buf = [0u8; 48];
    let name = info
        .boot_loader_name_addr
        .and_then(|a| multiboot::read_cstr(&*ctx.m, u64::from(a), &mut name_buf))
        .unwrap_or("?");
    let mut e = Expect::new(d);
    e.that(info.has(FLAG_MEM), format_args!("flags {:#x} lack MEM (bit 0)", info.flags));
    e.that(info.has(FLAG_MMAP), format_args!("flags {:#x} lack MMAP (bit 6)", info.flags));
    if let Some(lower) = info.mem_lower_kb {
        e.that(lower <= 640, format_args!("mem_lower={lower} KiB, above the 640 KiB maximum"));
    }
    if let Some(a) = info.cmdline_addr {
        let mut buf = [0u8; super::MAX_CMDLINE];
        e.that(
            multiboot::read_cstr(&*ctx.m, u64::from(a), &mut buf).is_some(),
            format_args!("command line at {a:#x} is not a NUL-terminated UTF-8 string"),
        );
    }
    e.finish(format_args!(
        "flags={:#x} mem_lower={:?} mem_upper={:?} KiB mmap={}B cmdline={} mods={} loader='{name}'",
        info.flags,
        info.mem_lower_kb,
        info.mem_upper_kb,
        info.mmap_length,
        if info.has(FLAG_CMDLINE) { "yes" } else { "no" },
        info.mods_count
    ))
}

/// The memory map (Multiboot 1 specification 3.3, `mmap_*`): it reads
/// without malformed entries, has at least one available (type 1) region,
/// no two entries overlap, the guest image `[__load_start, __image_end)` the
/// loader placed lies in available RAM, and `mem_upper` does not exceed the
/// first upper memory hole ("maximally the address of the first upper memory
/// hole minus 1 megabyte") and is that value (loaders compute it from the
/// same map; QEMU and GRUB both do). The validated map feeds
/// `boot/ram-pattern`.
pub fn memory_map(ctx: &mut Ctx<'_>, d: &mut Detail) -> Outcome {
    let Ok(info) = ctx.info else {
        let _ = write!(d, "no information block (see boot/info-block)");
        return Outcome::Fail;
    };
    if !info.has(FLAG_MMAP) {
        let _ = write!(d, "no memory map: flags {:#x} lack MMAP (bit 6)", info.flags);
        return Outcome::Fail;
    }
    let map = match MemMap::read(&info, &*ctx.m) {
        Ok(m) => m,
        Err(err) => {
            let _ = write!(d, "memory map at {:#x} (+{:#x}) malformed: {err:?}", info.mmap_addr, info.mmap_length);
            return Outcome::Fail;
        }
    };
    for en in map.entries() {
        let _ = writeln!(ctx.out, "guest: mmap [{:#012x}, {:#012x}) type {}", en.base, en.end(), en.kind);
    }
    let image = ctx.m.image();
    let entries = map.entries();
    let available = entries.iter().filter(|e| e.is_available()).count();
    let mut e = Expect::new(d);
    e.that(available > 0, format_args!("no available region"));
    let overlap = map.find_overlap();
    if let Some((i, j)) = overlap {
        let (a, b) = (entries[i], entries[j]);
        e.that(
            false,
            format_args!(
                "entries {i} [{:#x},{:#x}) and {j} [{:#x},{:#x}) overlap",
                a.base,
                a.end(),
                b.base,
                b.end()
            ),
        );
    }
    e.that(
        map.available_covers(image),
        format_args!("guest image [{:#x},{:#x}) not in available RAM", image.start, image.end),
    );
    if let Some(upper) = info.mem_upper_kb {
        match check_mem_upper(&map, upper) {
            UpperVerdict::Exact => {}
            UpperVerdict::Below { short_kb } => {
                e.that(false, format_args!("mem_upper={upper} KiB is {short_kb} KiB short of the first upper hole"));
            }
            UpperVerdict::Above { excess_kb } => {
                e.that(false, format_args!("mem_upper={upper} KiB reaches {excess_kb} KiB past the first upper hole"));
            }
            UpperVerdict::NoUpperMemory => {
                e.that(false, format_args!("no available region contains 1 MiB (mem_upper={upper} KiB)"));
            }
        }
    }
    if overlap.is_none() {
        ctx.map = Some(map);
    }
    let hole = map.first_upper_hole().unwrap_or(0);
    e.finish(format_args!(
        "{} entries, {available} available, {} MiB available, first upper hole {hole:#x}, image [{:#x},{:#x})",
        entries.len(),
        map.available_bytes() >> 20,
        image.start,
        image.end
    ))
}

/// The guest runs in IA-32e mode (SDM Vol. 3A 10.8.5 "Initializing IA-32e
/// Mode", 2.2.1 "Extended Feature Enable Register"): IA32_EFER.LME = 1 and
/// LMA = 1 (the processor sets LMA once paging is on with LME), CR0.PG = 1,
/// CR0.PE = 1, CR4.PAE = 1. Under the hypervisor the MSR read and the CR0/CR4
/// reads go through exits or read shadows, which is what this checks there.
pub fn long_mode(ctx: &mut Ctx<'_>, d: &mut Detail) -> Outcome {
    let (cr0, cr4, efer) = (ctx.m.cr0(), ctx.m.cr4(), ctx.m.efer());
    let mut e = Expect::new(d);
    e.that(efer & EFER_LME != 0, format_args!("EFER.LME=0"));
    e.that(efer & EFER_LMA != 0, format_args!("EFER.LMA=0"));
    e.that(cr0 & CR0_PG != 0, format_args!("CR0.PG=0"));
    e.that(cr0 & CR0_PE != 0, format_args!("CR0.PE=0"));
    e.that(cr4 & CR4_PAE != 0, format_args!("CR4.PAE=0"));
    e.finish(format_args!(
        "efer={efer:#x} (LME={} LMA={}) cr0={cr0:#x} cr4={cr4:#x}",
        bit(efer, EFER_LME),
        bit(efer, EFER_LMA)
    ))
}

/// CPUID leaf 0x4000_0000 (see [`crate::hv`]) against the command line:
/// with `expect_hv=1` EBX/ECX/EDX must spell [`shared::cpuid::SIGNATURE`],
/// with `expect_hv=0` they must not (another hypervisor's signature, such as
/// QEMU TCG's, counts as absent). Without the word, this reports what it
/// found and passes.
pub fn hypervisor_signature(ctx: &mut Ctx<'_>, d: &mut Detail) -> Outcome {
    let found = ctx.signature;
    let ours = core::str::from_utf8(&shared::cpuid::SIGNATURE).unwrap_or("?");
    match (ctx.config.expect_hv, found.is_quadrant()) {
        (ExpectHv::Yes, false) => {
            let _ = write!(d, "expect_hv=1 but CPUID.40000000h shows {found}, not '{ours}'");
            Outcome::Fail
        }
        (ExpectHv::No, true) => {
            let _ = write!(d, "expect_hv=0 but CPUID.40000000h shows {found}");
            Outcome::Fail
        }
        (ExpectHv::Yes, true) | (ExpectHv::No, false) => {
            let _ = write!(d, "{found}, as expected");
            Outcome::Pass
        }
        (ExpectHv::Auto, _) => {
            let _ = write!(d, "{found} (no expect_hv= on the command line)");
            Outcome::Pass
        }
    }
}

/// Plain RAM keeps what is written to it: across the available RAM (memory
/// map type 1) from the end of the guest image up to min(end of RAM, 4 GiB),
/// minus the Multiboot structures, every 4 KiB page gets a distinct 64-bit
/// value at [`OFFSETS`], all pages are written before any is read back, and
/// a second pass writes the complemented seed. A value that reads back wrong
/// (a write that landed elsewhere, aliased pages, a stale mapping) fails.
/// `ram_test_mib=N` caps the amount (0 skips).
pub fn ram_pattern(ctx: &mut Ctx<'_>, d: &mut Detail) -> Outcome {
    let Some(map) = ctx.map else {
        let _ = write!(d, "no validated memory map (see boot/memory-map)");
        return Outcome::Fail;
    };
    if ctx.exclusions.overflowed {
        let _ = write!(d, "boot structures not all known: refusing to overwrite RAM");
        return Outcome::Fail;
    }
    let budget = match ctx.config.ram_test_mib {
        Some(0) => {
            let _ = write!(d, "ram_test_mib=0");
            return Outcome::Skip;
        }
        Some(mib) => mib.saturating_mul(1 << 20),
        None => u64::MAX,
    };
    let lo = ctx.m.image().end;
    let hi = map.top_below(FOUR_GIB);
    let r = run_ram_test(ctx, &map, lo, hi, budget);
    let _ = writeln!(
        ctx.out,
        "guest: ram test [{lo:#x}, {hi:#x}): {} pages in {} ranges, {} words each, 2 passes",
        r.pages,
        r.ranges,
        OFFSETS.len()
    );
    let mut e = Expect::new(d);
    e.that(r.pages > 0, format_args!("no RAM above the image to test"));
    if let Some((addr, wrote, read)) = r.first_mismatch {
        e.that(
            false,
            format_args!("{} mismatches; first at {addr:#x}: wrote {wrote:#x}, read {read:#x}", r.mismatches),
        );
    }
    if let Some(addr) = r.refused {
        e.that(false, format_args!("{} words refused by the machine, first at {addr:#x}", r.refused_count));
    }
    e.finish(format_args!(
        "{} pages ({} MiB) in {} ranges up to {:#x}, {} words/page, 2 passes",
        r.pages,
        (r.pages * PAGE) >> 20,
        r.ranges,
        r.top,
        OFFSETS.len()
    ))
}

/// What [`run_ram_test`] saw.
#[derive(Clone, Copy, Debug, Default)]
struct RamResult {
    pages: u64,
    ranges: u64,
    top: u64,
    mismatches: u64,
    first_mismatch: Option<(u64, u64, u64)>,
    refused_count: u64,
    refused: Option<u64>,
}

/// The planned ranges, cut to `budget` bytes.
fn planned(map: &MemMap, lo: u64, hi: u64, excl: &Exclusions, budget: u64, mut f: impl FnMut(Range)) {
    let mut left = budget;
    memmap::plan_ram_test(map, lo, hi, excl, |r| {
        let take = r.len().min(left);
        if take > 0 {
            left -= take;
            f(Range::new(r.start, r.start + take));
        }
    });
}

fn run_ram_test(ctx: &mut Ctx<'_>, map: &MemMap, lo: u64, hi: u64, budget: u64) -> RamResult {
    let excl = ctx.exclusions;
    let m = &mut *ctx.m;
    let mut r = RamResult::default();
    planned(map, lo, hi, &excl, budget, |range| {
        r.ranges += 1;
        r.pages += range.len() / PAGE;
        r.top = range.end;
    });
    for seed in [SEED, !SEED] {
        planned(map, lo, hi, &excl, budget, |range| {
            for page in (range.start..range.end).step_by(PAGE as usize) {
                for o in OFFSETS {
                    if !m.scratch_write(page + o, pattern(page + o, seed)) {
                        r.refused_count += 1;
                        r.refused.get_or_insert(page + o);
                    }
                }
            }
        });
        planned(map, lo, hi, &excl, budget, |range| {
            for page in (range.start..range.end).step_by(PAGE as usize) {
                for o in OFFSETS {
                    let want = pattern(page + o, seed);
                    match m.scratch_read(page + o) {
                        Some(got) if got == want => {}
                        Some(got) => {
                            r.mismatches += 1;
                            r.first_mismatch.get_or_insert((page + o, want, got));
                        }
                        None => {
                            r.refused_count += 1;
                            r.refused.get_or_insert(page + o);
                        }
                    }
                }
            }
        });
    }
    r
}

#[cfg(test)]
mod tests {
    use super::super::fake::{Fake, FAKE_INFO, IMAGE, RAM_END};
    use super::*;
    use crate::report::Tally;

    fn run_one(m: &mut Fake, name: &str) -> (Outcome, String) {
        let (mut out, tally) = (String::new(), Tally::new());
        let mut ctx = Ctx::start(m, &mut out, &tally, FAKE_INFO);
        for c in CHECKS {
            let mut d = Detail::new();
            let o = (c.run)(&mut ctx, &mut d);
            if c.name == name {
                return (o, d.as_str().to_string());
            }
        }
        panic!("no check {name}");
    }

    #[test]
    fn handoff_flags_each_violation() {
        let mut m = Fake::bare("");
        assert_eq!(run_one(&mut m, "boot/handoff").0, Outcome::Pass);
        m.handoff.magic = 0x1BAD_B002;
        m.handoff.cr0 = 0x8000_0010;
        m.handoff.eflags = 0x2_0202;
        let (o, d) = run_one(&mut m, "boot/handoff");
        assert_eq!(o, Outcome::Fail);
        assert!(d.starts_with("EAX=0x1badb002, expected 0x2badb002; CR0.PE=0"), "{d}");
        assert!(d.contains("CR0.PG=1") && d.contains("EFLAGS.VM=1") && d.contains("EFLAGS.IF=1"), "{d}");
    }

    #[test]
    fn info_block_unreadable_and_flags() {
        let mut m = Fake::bare("");
        let (o, d) = run_one(&mut m, "boot/info-block");
        assert_eq!(o, Outcome::Pass, "{d}");
        assert!(d.contains("loader='fake'"), "{d}");
        m.low[FAKE_INFO as usize] &= !(multiboot::FLAG_MMAP as u8 | multiboot::FLAG_MEM as u8);
        let (o, d) = run_one(&mut m, "boot/info-block");
        assert_eq!(o, Outcome::Fail);
        assert!(d.contains("lack MEM") && d.contains("lack MMAP"), "{d}");
        let (o, d) = run_one(&mut m, "boot/memory-map");
        assert_eq!((o, d.contains("no memory map")), (Outcome::Fail, true), "{d}");
    }

    #[test]
    fn memory_map_pass_and_failures() {
        let mut m = Fake::bare("");
        let (o, d) = run_one(&mut m, "boot/memory-map");
        assert_eq!(o, Outcome::Pass, "{d}");
        // mem_upper one KiB too high.
        let upper = FAKE_INFO as usize + 8;
        let v = u32::from_le_bytes(m.low[upper..upper + 4].try_into().unwrap()) + 1;
        m.low[upper..upper + 4].copy_from_slice(&v.to_le_bytes());
        let (o, d) = run_one(&mut m, "boot/memory-map");
        assert_eq!(o, Outcome::Fail);
        assert!(d.contains("1 KiB past the first upper hole"), "{d}");
    }

    #[test]
    fn image_outside_available_ram_fails() {
        let mut m = Fake::bare("");
        // Entry 2 (upper memory) starts above the image now.
        let base = FAKE_INFO as usize + 88 + 2 * 24 + 4;
        m.low[base..base + 8].copy_from_slice(&0x20_0000u64.to_le_bytes());
        let (o, d) = run_one(&mut m, "boot/memory-map");
        assert_eq!(o, Outcome::Fail);
        assert!(d.contains(&format!("guest image [{:#x},{:#x}) not in available RAM", IMAGE.start, IMAGE.end)), "{d}");
    }

    #[test]
    fn ram_pattern_counts_pages_and_catches_bad_words() {
        let mut m = Fake::bare("");
        let (o, d) = run_one(&mut m, "boot/ram-pattern");
        let pages = (RAM_END - IMAGE.end) / PAGE;
        assert_eq!(o, Outcome::Pass, "{d}");
        assert!(d.starts_with(&format!("{pages} pages (14 MiB) in 1 ranges")), "{d}");
        assert_eq!(m.scratch.len() as u64, pages * 3);
        let mut m = Fake::bare("");
        m.bad_word = Some(0x80_07f8);
        let (o, d) = run_one(&mut m, "boot/ram-pattern");
        assert_eq!(o, Outcome::Fail);
        assert!(d.starts_with("2 mismatches; first at 0x8007f8"), "{d}");
    }

    #[test]
    fn ram_pattern_budget_and_skip() {
        let mut m = Fake::bare("ram_test_mib=2");
        let (o, d) = run_one(&mut m, "boot/ram-pattern");
        assert_eq!(o, Outcome::Pass);
        assert!(d.starts_with("512 pages (2 MiB)"), "{d}");
        let mut m = Fake::bare("ram_test_mib=0");
        assert_eq!(run_one(&mut m, "boot/ram-pattern").0, Outcome::Skip);
    }

    #[test]
    fn long_mode_bits() {
        let mut m = Fake::bare("");
        assert_eq!(run_one(&mut m, "boot/long-mode").0, Outcome::Pass);
        m.efer = 0x100;
        m.cr4 = 0;
        let (o, d) = run_one(&mut m, "boot/long-mode");
        assert_eq!(o, Outcome::Fail);
        assert!(d.starts_with("EFER.LMA=0; CR4.PAE=0 | efer=0x100 (LME=1 LMA=0)"), "{d}");
    }

    #[test]
    fn signature_against_expectation() {
        for (cmd, hv, want) in [
            ("expect_hv=0", false, Outcome::Pass),
            ("expect_hv=1", false, Outcome::Fail),
            ("", false, Outcome::Pass),
            ("expect_hv=1", true, Outcome::Pass),
            ("expect_hv=0", true, Outcome::Fail),
            ("", true, Outcome::Pass),
        ] {
            let mut m = if hv { Fake::hv(cmd) } else { Fake::bare(cmd) };
            let (o, d) = run_one(&mut m, "boot/hypervisor-signature");
            assert_eq!(o, want, "{cmd} hv={hv}: {d}");
        }
        let mut m = Fake::bare("expect_hv=1");
        let (_, d) = run_one(&mut m, "boot/hypervisor-signature");
        assert_eq!(d, "expect_hv=1 but CPUID.40000000h shows other hypervisor 'TCGTCGTCGTCG', not 'QuadrantVMX!'");
    }
}
