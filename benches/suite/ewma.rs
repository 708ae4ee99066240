//! Ewma: a pick (two random candidates, their decayed scores from the shared table,
//! the lower wins), through the Rust API and the C ABI, and the log phase's `observe`.

use std::hint::black_box;
use std::mem::MaybeUninit;

use criterion::Criterion;
use ingress_lb::ffi::{ilb_core_observe, IlbPeer, IlbRequest};
use ingress_lb::{Core, PickCtx, Request, SharedStats};

use crate::common::{backends_doc, endpoint_address, now, per_size, pick, CCore, BACKEND, EWMA};

/// What seeds every endpoint's statistics: its `upstream_addr` and a response time
/// spread over 5..103 ms.
fn samples(n: usize) -> impl Iterator<Item = (String, String)> {
    (0..n).map(|i| (format!("{}:8080", endpoint_address(i)), format!("{:.3}", 0.005 + (i % 50) as f64 * 0.002)))
}

/// A core whose ewma backend of `n` endpoints all have statistics, in shared memory
/// as in nginx.
fn ewma_core(n: usize, now: f64) -> Core {
    let core = Core::new();
    core.use_stats(SharedStats::anonymous(n as u32 * 2).unwrap());
    core.apply_backends(&backends_doc(n, EWMA)).unwrap();
    for (addr, rtt) in samples(n) {
        core.observe(BACKEND, addr.as_bytes(), b"200", b"0.001", rtt.as_bytes(), now);
    }
    core
}

/// The same through the C ABI, with its own statistics table.
fn ewma_c_core(n: usize, now: f64) -> CCore {
    let handle = CCore::new().use_stats(n as u32 * 2).apply_backends(&backends_doc(n, EWMA));
    for (addr, rtt) in samples(n) {
        // SAFETY: live handle, every pointer valid for its length.
        unsafe {
            ilb_core_observe(
                handle.core,
                BACKEND.as_ptr().cast(),
                BACKEND.len(),
                addr.as_ptr().cast(),
                addr.len(),
                b"200".as_ptr().cast(),
                3,
                b"0.001".as_ptr().cast(),
                5,
                rtt.as_ptr().cast(),
                rtt.len(),
                now,
            );
        }
    }
    handle
}

pub fn register_benches(c: &mut Criterion) {
    let now = now();
    per_size(
        c,
        "pick/ewma",
        |n| ewma_core(n, now),
        |b, core| {
            let mut ctx = PickCtx::new();
            let req = Request { now, ..Request::EMPTY };
            b.iter(|| pick(core, &req, &mut ctx, |p| p.peer.text().len() as f64 + p.score))
        },
    );

    // The request's time as LuaJIT passes it.
    let req = IlbRequest {
        hash_key: std::ptr::null(),
        hash_key_len: 0,
        cookie: std::ptr::null(),
        cookie_len: 0,
        host: std::ptr::null(),
        host_len: 0,
        location_path: std::ptr::null(),
        location_path_len: 0,
        user_agent: std::ptr::null(),
        user_agent_len: 0,
        now,
        https: 0,
        reserved: 0,
    };
    per_size(
        c,
        "pick/ewma_c_abi",
        |n| ewma_c_core(n, now),
        |b, handle| {
            let mut ctx = PickCtx::new();
            let mut peer = MaybeUninit::<IlbPeer>::uninit();
            b.iter(|| handle.pick(&req, &mut ctx, &mut peer))
        },
    );

    // The log phase: parse nginx's variables, update the endpoint's moving average in
    // the shared table; one attempt, and a failed attempt then a retry.
    let mut group = c.benchmark_group("observe/ewma");
    let core = ewma_core(1000, now);
    type Vars = (&'static [u8], &'static [u8], &'static [u8], &'static [u8]);
    let cases: [(&str, Vars); 2] = [
        ("one_attempt", (b"10.0.1.7:8080", b"200", b"0.001", b"0.012")),
        ("retry", (b"10.0.1.7:8080, 10.0.2.9:8080", b"502, 200", b"-, 0.001", b"0.000, 0.012")),
    ];
    for (label, (addr, status, connect, response)) in cases {
        group.bench_function(label, |b| {
            let mut t = now;
            b.iter(|| {
                t += 0.001;
                core.observe(black_box(BACKEND), addr, status, connect, response, t)
            })
        });
    }
    group.finish();
}
