//! Property test: random guest page-table structures (every frame of a small
//! guest RAM filled with plausible 32-bit, 64-bit and PDPT-style entries, so
//! that tables alias at every level) and random event sequences (mode
//! changes, CR3 loads, guest PT writes of every width, INVLPG, reads,
//! writes and fetches as user and supervisor, two vCPUs sharing the cache)
//! in all four modes. After every step the audit holds, guest RAM (A/D
//! bits included) equals the oracle's, and every access agrees with the
//! oracle. QUADRANT_PROPTEST_CASES raises the case count (default 10,000).

use alloc::vec::Vec;

use proptest::prelude::*;

use super::harness::*;
use crate::mmu::*;

const RAM_FRAMES: u64 = 20;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn chance(&mut self, pct: u64) -> bool {
        self.next() % 100 < pct
    }
}

/// A frame number: mostly inside RAM, sometimes just past it or far out.
fn frame(r: &mut Rng) -> u64 {
    match r.next() % 40 {
        0 => RAM_FRAMES + r.next() % 3,
        1 => 0x12345,
        _ => r.next() % RAM_FRAMES,
    }
}

fn flags(r: &mut Rng) -> u64 {
    let mut f = 0;
    for (bit, pct) in [
        (0u64, 95u64),
        (1, 80),
        (2, 85),
        (3, 5),
        (4, 5),
        (5, 60),
        (6, 50),
        (7, 12),
        (8, 10),
    ] {
        if r.chance(pct) {
            f |= 1 << bit;
        }
    }
    f
}

/// A plausible 64-bit (PAE / long) entry.
fn entry64(r: &mut Rng) -> u64 {
    let mut e = (frame(r) << 12) | flags(r);
    if e & 0x80 != 0 && r.chance(70) {
        e &= 0xfff; // a large page at 0 (the only aligned one in RAM)
    }
    match r.next() % 40 {
        0..=2 => e |= 1 << 63,
        5 => e |= 1 << (36 + r.next() % 16), // reserved address bit
        6 if e & 0x80 != 0 => e |= 1 << 13,  // reserved in a large entry
        _ => {}
    }
    e
}

/// A plausible 32-bit entry.
fn entry32(r: &mut Rng) -> u64 {
    let mut e = (frame(r) << 12) | flags(r);
    if e & 0x80 != 0 && r.chance(70) {
        e &= 0xfff; // 4 MiB page at 0 (the only one in RAM)
        if r.chance(10) {
            e |= 1 << 17; // reserved (PSE-36 with MAXPHYADDR 36)
        }
    }
    e & 0xffff_ffff
}

/// A PDPT-friendly entry (only P, PWT, PCD and the address).
fn entry_pdpt(r: &mut Rng) -> u64 {
    let mut e = (frame(r) << 12) | if r.chance(85) { 1 } else { 0 };
    if r.chance(10) {
        e |= 1 << 1 | 1 << 5;
    }
    e
}

/// Guest RAM and the frames filled PDPT-style (CR3 candidates for PAE).
fn gen_ram(seed: u64) -> (Vec<u8>, Vec<u64>) {
    let mut r = Rng(seed | 1);
    let mut mem = TestMem::new(RAM_FRAMES as usize);
    let mut pdpts = Vec::new();
    // Per case, a mix of frame styles: 64-bit heavy, 32-bit heavy or even
    // (percent of 64-bit-style and 32-bit-style frames; the rest PDPT-style).
    let (p64, p32) = [(80, 10), (10, 80), (45, 35)][(r.next() % 3) as usize];
    for f in 0..RAM_FRAMES {
        let style = r.next() % 100;
        if style >= p64 + p32 {
            pdpts.push(f);
        }
        for i in 0..512u64 {
            let a = f * 4096 + i * 8;
            let v = if style < p64 {
                entry64(&mut r)
            } else if style < p64 + p32 {
                entry32(&mut r) | (if r.chance(35) { entry32(&mut r) } else { 0 }) << 32
            } else {
                entry_pdpt(&mut r)
            };
            mem.w64(a, v);
        }
    }
    (mem.ram, pdpts)
}

#[derive(Clone, Debug)]
enum Ev {
    Mode {
        cpu: usize,
        mode: u8,
        wp: bool,
        nxe: bool,
        smep: bool,
        smap: bool,
        pse: bool,
    },
    Cr3 {
        cpu: usize,
        frame: u64,
        sub: u64,
    },
    Access {
        cpu: usize,
        gva: u64,
        kind: u8,
        user: bool,
        width: u8,
        value: u64,
    },
    PtWrite {
        cpu: usize,
        gpa: u64,
        width: u8,
        seed: u64,
    },
    Burst {
        cpu: usize,
        gfn: u64,
        seed: u64,
    },
    Invlpg {
        cpu: usize,
        gva: u64,
    },
}

fn gva() -> impl Strategy<Value = u64> {
    prop_oneof![2 => paged_gva(), 1 => 0..RAM_FRAMES * 4096 + 8192]
}

fn paged_gva() -> impl Strategy<Value = u64> {
    (
        0u64..4,
        0u64..4,
        prop::sample::select(vec![0u64, 1, 2, 255, 256, 511]),
        prop::sample::select(vec![0u64, 1, 2, 3, 511]),
        0u64..4088,
    )
        .prop_map(|(a, b, c, d, off)| a << 39 | b << 30 | c << 21 | d << 12 | off)
}

fn width() -> impl Strategy<Value = u8> {
    prop::sample::select(vec![1u8, 2, 4, 8])
}

fn ev(ncpu: usize) -> impl Strategy<Value = Ev> {
    let cpu = 0..ncpu;
    prop_oneof![
        3 => (cpu.clone(), 0u8..4, any::<[bool; 5]>()).prop_map(|(cpu, mode, b)| Ev::Mode { cpu, mode, wp: b[0], nxe: b[1], smep: b[2], smap: b[3], pse: b[4] }),
        3 => (cpu.clone(), 0..RAM_FRAMES + 1, 0u64..128).prop_map(|(cpu, frame, sub)| Ev::Cr3 { cpu, frame, sub }),
        20 => (cpu.clone(), gva(), 0u8..3, any::<bool>(), width(), any::<u64>()).prop_map(|(cpu, gva, kind, user, width, value)| Ev::Access { cpu, gva, kind, user, width, value }),
        4 => (cpu.clone(), 0..RAM_FRAMES * 4096, width(), any::<u64>()).prop_map(|(cpu, gpa, width, seed)| Ev::PtWrite { cpu, gpa, width, seed }),
        1 => (cpu.clone(), 0..RAM_FRAMES, any::<u64>()).prop_map(|(cpu, gfn, seed)| Ev::Burst { cpu, gfn, seed }),
        1 => (cpu, gva()).prop_map(|(cpu, gva)| Ev::Invlpg { cpu, gva }),
    ]
}

fn pt_value(seed: u64) -> u64 {
    let mut r = Rng(seed | 1);
    match r.next() % 4 {
        0 => entry64(&mut r),
        1 => entry32(&mut r) | entry32(&mut r) << 32,
        2 => entry_pdpt(&mut r),
        _ => r.next(),
    }
}

/// Outcome counters per mode (printed with QUADRANT_PROPTEST_STATS=1):
/// [mode][phys, #PF, outside RAM].
static OUTCOMES: [[std::sync::atomic::AtomicU64; 3]; 4] =
    [const { [const { std::sync::atomic::AtomicU64::new(0) }; 3] }; 4];

static TOTALS: [std::sync::atomic::AtomicU64; 8] =
    [const { std::sync::atomic::AtomicU64::new(0) }; 8];

fn run(seed: u64, ncpu: usize, pool: usize, cache: bool, evs: &[Ev]) {
    let mut w = World::new(RAM_FRAMES as usize, pool, ncpu, cache);
    let (ram, pdpts) = gen_ram(seed);
    w.set_ram(&ram);
    w.check();
    // Start every vCPU in a random paging mode on a random CR3.
    let mut r = Rng(seed.rotate_left(17) | 1);
    let mut setup = Vec::new();
    for cpu in 0..ncpu {
        let b = r.next();
        let frame = if b % 4 == 2 && !pdpts.is_empty() {
            pdpts[(b >> 20) as usize % pdpts.len()]
        } else {
            r.next() % RAM_FRAMES
        };
        setup.push(Ev::Cr3 {
            cpu,
            frame,
            sub: r.next() % 128,
        });
        setup.push(Ev::Mode {
            cpu,
            mode: (b % 4) as u8,
            wp: b & 16 != 0,
            nxe: b & 32 != 0,
            smep: b & 64 == 0 && b & 128 != 0,
            smap: b & 256 != 0 && b & 512 != 0,
            pse: b & 1024 != 0,
        });
    }
    for e in setup.iter().chain(evs) {
        match *e {
            Ev::Mode {
                cpu,
                mode,
                wp,
                nxe,
                smep,
                smap,
                pse,
            } => {
                let mut cr0 = CR0_PE | if wp { CR0_WP } else { 0 };
                let mut cr4 = if smep { CR4_SMEP } else { 0 }
                    | if smap { CR4_SMAP } else { 0 }
                    | if pse { CR4_PSE } else { 0 };
                let mut efer = if nxe { EFER_NXE } else { 0 };
                if mode > 0 {
                    cr0 |= CR0_PG;
                }
                if mode >= 2 {
                    cr4 |= CR4_PAE;
                }
                if mode == 3 {
                    efer |= EFER_LME;
                }
                let _ = w.set_mode(cpu, cr0, cr4, efer);
            }
            Ev::Cr3 {
                cpu,
                mut frame,
                sub,
            } => {
                // In PAE mode prefer PDPT-style frames (others mostly #GP).
                if w.cpus[cpu].mmu.mode() == GuestMode::Pae && !pdpts.is_empty() && sub % 4 != 0 {
                    frame = pdpts[frame as usize % pdpts.len()];
                }
                let _ = w.load_cr3(cpu, frame << 12 | sub << 5);
            }
            Ev::Access {
                cpu,
                mut gva,
                kind,
                user,
                width,
                value,
            } => {
                if w.cpus[cpu].mmu.mode() == GuestMode::NoPaging
                    && gva > RAM_FRAMES * 4096
                    && gva % 8 != 0
                {
                    gva %= RAM_FRAMES * 4096; // mostly inside RAM without paging
                }
                let kind = [AccessKind::Read, AccessKind::Write, AccessKind::Fetch][kind as usize];
                let mode = w.cpus[cpu].mmu.mode() as usize;
                let o = w.access(cpu, gva, MemAccess { kind, user }, width, value);
                let k = match o {
                    super::refwalk::RefOutcome::Phys(_) => 0,
                    super::refwalk::RefOutcome::PageFault(_) => 1,
                    super::refwalk::RefOutcome::NoRam(_) => 2,
                };
                OUTCOMES[mode][k].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Ev::PtWrite {
                cpu,
                gpa,
                width,
                seed,
            } => w.phys_write(cpu, gpa, width, pt_value(seed)),
            Ev::Burst { cpu, gfn, seed } => {
                let mut r = Rng(seed | 1);
                for _ in 0..3 + r.next() % 2 {
                    let off = r.next() % 512 * 8;
                    w.phys_write(cpu, gfn << 12 | off, 8, pt_value(r.next()));
                }
            }
            Ev::Invlpg { cpu, gva } => w.invlpg(cpu, gva),
        }
        w.check();
    }
    let s = w.cache.stats();
    for (i, v) in [
        s.created,
        s.zaps.iter().sum(),
        s.write_protect_faults,
        s.unshadows,
        s.recycles,
        s.pt_writes,
        s.cr3_hits,
        s.fault_hits,
    ]
    .into_iter()
    .enumerate()
    {
        TOTALS[i].fetch_add(v, std::sync::atomic::Ordering::Relaxed);
    }
    if std::env::var("QUADRANT_PROPTEST_STATS").is_ok() {
        std::eprintln!("outcomes {OUTCOMES:?} totals [created, zaps, wpf, unshadows, recycles, pt_writes, cr3_hits, fault_hits] {TOTALS:?}");
    }
}

fn cases() -> u32 {
    std::env::var("QUADRANT_PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000)
}

fn scenario() -> impl Strategy<Value = (u64, usize, usize, bool, Vec<Ev>)> {
    (
        any::<u64>(),
        1usize..=2,
        prop::sample::select(vec![18usize, 24, 64]),
        prop::bool::weighted(0.9),
    )
        .prop_flat_map(|(seed, ncpu, pool, cache)| {
            (
                Just(seed),
                Just(ncpu),
                Just(pool),
                Just(cache),
                prop::collection::vec(ev(ncpu), 1..40),
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), max_shrink_iters: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    /// Random tables and event sequences in all four modes agree with the
    /// reference walker, and the audit holds after every step.
    #[test]
    fn random_sequences_agree_with_oracle((seed, ncpu, pool, cache, evs) in scenario()) {
        run(seed, ncpu, pool, cache, &evs);
    }
}
