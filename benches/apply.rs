//! Cost of applying a backends document: the controller's 3000 backends × 10
//! endpoints (2 MB) posted fresh, with one backend changed, and unchanged.
//!
//! `cargo bench --bench apply`; numbers go to README.md.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use ingress_lb::Core;

/// A document of `n` backends of `eps` endpoints; backend `n / 2` listens on
/// `8080 + variant`, so two variants differ in one backend in the middle.
fn doc(n: usize, eps: usize, variant: usize) -> Vec<u8> {
    let mut out = String::from("[");
    for b in 0..n {
        if b > 0 {
            out.push(',');
        }
        let port = if b == n / 2 { 8080 + variant } else { 8080 };
        let endpoints: Vec<String> = (0..eps)
            .map(|i| format!(r#"{{"address":"10.{}.{}.{}","port":"{port}"}}"#, b / 250, b % 250, i + 1))
            .collect();
        out.push_str(&format!(
            r#"{{"name":"ns-svc-{b}-80","service":{{"spec":{{"type":"ClusterIP"}}}},"port":80,"endpoints":[{}],"sessionAffinityConfig":{{"name":"","cookieSessionAffinity":{{"name":""}}}},"upstreamHashByConfig":{{}},"noServer":false,"trafficShapingPolicy":{{"weight":0,"header":"","headerValue":"","headerPattern":"","cookie":""}}}}"#,
            endpoints.join(",")
        ));
    }
    out.push(']');
    out.into_bytes()
}

fn apply(c: &mut Criterion) {
    let mut group = c.benchmark_group("apply/3000x10");
    group.sample_size(20);
    let a = doc(3000, 10, 0);
    let b = doc(3000, 10, 1);
    group.bench_function("fresh", |bench| {
        bench.iter(|| {
            let core = Core::new();
            black_box(core.apply_backends(black_box(&a)).unwrap());
        })
    });
    let core = Core::new();
    core.apply_backends(&a).unwrap();
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

criterion_group!(benches, apply);
criterion_main!(benches);
