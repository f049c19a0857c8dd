//! Criterion benchmarks of the MMU core: ns per operation of each
//! `mmu_bench::Op`, with the cache and without it (`cargo bench -p
//! mmu-bench --features criterion`; `cargo xtask bench` runs and reads it).
//! Only `Scenario::op` is timed; `timer/none` measures the timing itself
//! (two `Instant::now()`), which the runner subtracts.

use criterion::{criterion_group, criterion_main, Criterion};
use mmu_bench::{Op, Scenario};
use std::hint::black_box;
use std::time::{Duration, Instant};

fn ops(c: &mut Criterion) {
    c.benchmark_group("timer").bench_function("none", |b| {
        b.iter_custom(|iters| {
            let mut t = Duration::ZERO;
            for _ in 0..iters {
                let t0 = Instant::now();
                black_box(());
                t += t0.elapsed();
            }
            t
        })
    });
    for op in Op::ALL {
        let mut g = c.benchmark_group(op.name());
        for cache in [true, false] {
            g.bench_function(if cache { "cache" } else { "nocache" }, |b| {
                let mut s = Scenario::new(op, cache);
                b.iter_custom(|iters| {
                    let mut t = Duration::ZERO;
                    for _ in 0..iters {
                        s.prepare();
                        let t0 = Instant::now();
                        s.op();
                        t += t0.elapsed();
                    }
                    t
                })
            });
        }
        g.finish();
    }
}

criterion_group! {
    name = mmu;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    targets = ops
}
criterion_main!(mmu);
