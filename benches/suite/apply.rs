//! Applying the controller's backends document: posted fresh (every backend decoded
//! and built), with one backend changed, and unchanged; at 300 × 10, 3000 × 10 (2 MB)
//! and 20 000 × 1 backends × endpoints.

use std::hint::black_box;

use criterion::{Criterion, SamplingMode};
use ingress_lb::Core;

use crate::common::{controller_doc, core_with};

pub fn register_benches(c: &mut Criterion) {
    for (backends, eps) in [(300, 10), (3000, 10), (20_000, 1)] {
        let mut group = c.benchmark_group(format!("apply/{backends}x{eps}"));
        // Milliseconds per iteration: the same iteration count in every sample.
        group.sampling_mode(SamplingMode::Flat).sample_size(20);
        let a = controller_doc(backends, eps, 0);
        let b = controller_doc(backends, eps, 1);
        group.bench_function("fresh", |bench| {
            bench.iter(|| {
                let core = Core::new();
                black_box(core.apply_backends(black_box(&a)).unwrap());
            })
        });
        let core = core_with(&a);
        let mut flip = false;
        group.bench_function("one_backend_changed", |bench| {
            bench.iter(|| {
                flip = !flip;
                black_box(core.apply_backends(if flip { &b } else { &a }).unwrap());
            })
        });
        group.bench_function("unchanged", |bench| {
            core.apply_backends(&a).unwrap();
            bench.iter(|| black_box(core.apply_backends(black_box(&a)).unwrap()))
        });
        group.finish();
    }
}
