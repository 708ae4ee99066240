//! Per-pick cost of each algorithm at several endpoint counts.
//!
//! `make bench` (or `cargo bench --bench pick`); numbers go to README.md.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ingress_lb::{Core, PickCtx, Request};

const SIZES: [usize; 4] = [3, 100, 1000, 10000];

fn backends_doc(name: &str, n: usize, extra: &str) -> Vec<u8> {
    let eps: Vec<String> = (0..n)
        .map(|i| format!(r#"{{"address":"10.{}.{}.{}","port":"8080"}}"#, i >> 16, (i >> 8) & 255, i & 255))
        .collect();
    format!(r#"[{{"name":"{name}",{extra}"endpoints":[{}]}}]"#, eps.join(",")).into_bytes()
}

/// One pick as a front end makes it: look the backend up by name in the snapshot in
/// force, pick, and read the endpoint's address text.
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
                black_box(
                    core.pick_with(black_box(b"default-web-80"), &Request::EMPTY, &mut ctx, |p| p.peer.text().len())
                        .unwrap(),
                )
            })
        });
    }
    group.finish();
}

/// The same through the C ABI, as LuaJIT calls it: panic guard, argument checks,
/// copy of the peer into the caller's `ilb_peer`.
fn round_robin_c_abi(c: &mut Criterion) {
    use ingress_lb::ffi::{ilb_core_apply_backends, ilb_core_free, ilb_core_new, ilb_core_pick, IlbPeer};
    let mut group = c.benchmark_group("pick/round_robin_c_abi");
    for n in SIZES {
        let doc = backends_doc("default-web-80", n, "");
        let mut core = std::ptr::null_mut();
        // SAFETY: valid out-pointer and buffers; the core is freed below.
        unsafe {
            ilb_core_new(&mut core);
            ilb_core_apply_backends(core, doc.as_ptr(), doc.len(), std::ptr::null_mut(), 0, std::ptr::null_mut());
        }
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            let mut ctx = PickCtx::new();
            let mut peer = std::mem::MaybeUninit::<IlbPeer>::uninit();
            let name = b"default-web-80";
            b.iter(|| {
                ctx.reset();
                // SAFETY: live core, valid name/ctx/peer pointers.
                black_box(unsafe {
                    ilb_core_pick(core, name.as_ptr().cast(), name.len(), std::ptr::null(), &mut ctx, peer.as_mut_ptr())
                })
            })
        });
        // SAFETY: created above, freed once.
        unsafe { ilb_core_free(core) };
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
                core.pick_with(b"default-web-80", &Request::EMPTY, &mut ctx, |p| p.peer.index()).unwrap();
                black_box(
                    core.pick_with(black_box(b"default-web-80"), &Request::EMPTY, &mut ctx, |p| p.peer.text().len())
                        .unwrap(),
                )
            })
        });
    }
    group.finish();
}

criterion_group!(benches, round_robin, round_robin_c_abi, round_robin_retry);
criterion_main!(benches);
