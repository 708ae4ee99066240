//! Per-pick cost of each algorithm at several endpoint counts.
//!
//! `make bench` (or `cargo bench --bench pick`); numbers go to README.md.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ingress_lb::{Core, PickCtx};

const SIZES: [usize; 4] = [3, 100, 1000, 10000];

fn backends_doc(name: &str, n: usize, extra: &str) -> Vec<u8> {
    let eps: Vec<String> = (0..n)
        .map(|i| format!(r#"{{"address":"10.{}.{}.{}","port":"8080"}}"#, i >> 16, (i >> 8) & 255, i & 255))
        .collect();
    format!(r#"[{{"name":"{name}",{extra}"endpoints":[{}]}}]"#, eps.join(",")).into_bytes()
}

fn round_robin(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick/round_robin");
    group.throughput(Throughput::Elements(1));
    for n in SIZES {
        let core = Core::new();
        core.apply_backends(&backends_doc("default-web-80", n, "")).unwrap();
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            let mut ctx = PickCtx::new();
            b.iter(|| {
                ctx.reset();
                black_box(core.pick(black_box(b"default-web-80"), &mut ctx).unwrap())
            })
        });
    }
    group.finish();
}

fn round_robin_retry(c: &mut Criterion) {
    // The second attempt of a request: one peer already tried.
    let mut group = c.benchmark_group("pick/round_robin_retry");
    for n in SIZES {
        let core = Core::new();
        core.apply_backends(&backends_doc("default-web-80", n, "")).unwrap();
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            let mut ctx = PickCtx::new();
            b.iter(|| {
                ctx.reset();
                core.pick(b"default-web-80", &mut ctx).unwrap();
                black_box(core.pick(black_box(b"default-web-80"), &mut ctx).unwrap())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, round_robin, round_robin_retry);
criterion_main!(benches);
