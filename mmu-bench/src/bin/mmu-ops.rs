//! `mmu-ops OP cache|nocache N`: runs N prepared operations of one MMU
//! scenario (`mmu_bench::Scenario`), for `valgrind --tool=callgrind
//! --toggle-collect=mmu_bench_op`, which then counts the instructions of
//! the operations alone (`cargo xtask bench` divides them by N).

use mmu_bench::{Op, Scenario};
use std::process::ExitCode;

/// The measured call, under a name callgrind can toggle on.
#[unsafe(no_mangle)]
#[inline(never)]
pub fn mmu_bench_op(s: &mut Scenario) {
    s.op();
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let usage = || {
        let ops: Vec<&str> = Op::ALL.iter().map(|o| o.name()).collect();
        eprintln!("usage: mmu-ops {} cache|nocache N", ops.join("|"));
        ExitCode::from(2)
    };
    let [_, op, variant, n] = args.as_slice() else { return usage() };
    let (Some(op), Ok(n)) = (Op::from_name(op), n.parse::<u64>()) else { return usage() };
    let cache = match variant.as_str() {
        "cache" => true,
        "nocache" => false,
        _ => return usage(),
    };
    let mut s = Scenario::new(op, cache);
    for _ in 0..n {
        s.prepare();
        mmu_bench_op(&mut s);
    }
    println!("{} {} {n} ops, {} shadow pages created", op.name(), variant, s.cache.stats().created);
    ExitCode::SUCCESS
}
