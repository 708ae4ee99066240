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

/// An ewma backend whose endpoints all have statistics (in shared memory, as in
/// nginx), with spread-out response times.
fn ewma_core(n: usize, now: f64) -> Core {
    let core = Core::new();
    core.use_stats(ingress_lb::SharedStats::anonymous(n as u32 * 2).unwrap());
    core.apply_backends(&backends_doc("default-web-80", n, r#""load-balance":"ewma","#)).unwrap();
    for i in 0..n {
        let addr = format!("10.{}.{}.{}:8080", i >> 16, (i >> 8) & 255, i & 255);
        let rtt = format!("{:.3}", 0.005 + (i % 50) as f64 * 0.002);
        core.observe(b"default-web-80", addr.as_bytes(), b"200", b"0.001", rtt.as_bytes(), now);
    }
    core
}

fn bench_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64()
}

/// An ewma pick: two random candidates, their decayed scores from the shared table,
/// the lower wins.
fn ewma(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick/ewma");
    group.throughput(Throughput::Elements(1));
    let now = bench_now();
    for n in SIZES {
        let core = ewma_core(n, now);
        let req = Request { now, ..Request::EMPTY };
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            let mut ctx = PickCtx::new();
            b.iter(|| {
                ctx.reset();
                black_box(
                    core.pick_with(black_box(b"default-web-80"), &req, &mut ctx, |p| {
                        p.peer.text().len() as f64 + p.score
                    })
                    .unwrap(),
                )
            })
        });
    }
    group.finish();
}

/// The same through the C ABI, with the request's time as LuaJIT passes it.
fn ewma_c_abi(c: &mut Criterion) {
    use ingress_lb::ffi::{ilb_core_pick, IlbPeer, IlbRequest};
    let mut group = c.benchmark_group("pick/ewma_c_abi");
    let now = bench_now();
    for n in SIZES {
        let handle = c_core(n, now);
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
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            let mut ctx = PickCtx::new();
            let mut peer = std::mem::MaybeUninit::<IlbPeer>::uninit();
            let name = b"default-web-80";
            b.iter(|| {
                ctx.reset();
                // SAFETY: live core, valid name/request/ctx/peer pointers.
                black_box(unsafe {
                    ilb_core_pick(handle.0, name.as_ptr().cast(), name.len(), &req, &mut ctx, peer.as_mut_ptr())
                })
            })
        });
    }
    group.finish();
}

/// An `ilb_core` using its own shared statistics, with the backend of [`ewma_core`].
struct CCore(*mut ingress_lb::ffi::IlbCore, *mut ingress_lb::ffi::IlbStats);

impl Drop for CCore {
    fn drop(&mut self) {
        // SAFETY: both created by c_core, freed once.
        unsafe {
            ingress_lb::ffi::ilb_core_free(self.0);
            ingress_lb::ffi::ilb_stats_free(self.1);
        }
    }
}

fn c_core(n: usize, now: f64) -> CCore {
    use ingress_lb::ffi::*;
    let doc = backends_doc("default-web-80", n, r#""load-balance":"ewma","#);
    let (mut handle, mut stats) = (std::ptr::null_mut(), std::ptr::null_mut());
    // SAFETY: valid out-pointers and buffers; freed by CCore's drop.
    unsafe {
        ilb_stats_new(n as u32 * 2, &mut stats);
        ilb_core_new(&mut handle);
        ilb_core_use_stats(handle, stats);
        ilb_core_apply_backends(handle, doc.as_ptr(), doc.len(), std::ptr::null_mut(), 0, std::ptr::null_mut());
    }
    let name = b"default-web-80";
    for i in 0..n {
        let addr = format!("10.{}.{}.{}:8080", i >> 16, (i >> 8) & 255, i & 255);
        let rtt = format!("{:.3}", 0.005 + (i % 50) as f64 * 0.002);
        // SAFETY: live handle, valid slices.
        unsafe {
            ilb_core_observe(
                handle,
                name.as_ptr().cast(),
                name.len(),
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
    CCore(handle, stats)
}

/// The log phase of an ewma request: parse nginx's variables, update the endpoint's
/// moving average in the shared table (one attempt; a failed attempt and a retry).
fn ewma_observe(c: &mut Criterion) {
    let mut group = c.benchmark_group("observe/ewma");
    let now = bench_now();
    let core = ewma_core(1000, now);
    group.bench_function("one_attempt", |b| {
        let mut t = now;
        b.iter(|| {
            t += 0.001;
            core.observe(black_box(b"default-web-80"), b"10.0.1.7:8080", b"200", b"0.001", b"0.012", t)
        })
    });
    group.bench_function("retry", |b| {
        let mut t = now;
        b.iter(|| {
            t += 0.001;
            core.observe(
                black_box(b"default-web-80"),
                b"10.0.1.7:8080, 10.0.2.9:8080",
                b"502, 200",
                b"-, 0.001",
                b"0.000, 0.012",
                t,
            )
        })
    });
    group.finish();
}

/// Request keys for the hashing benches: 1024 distinct URIs, cycled.
fn uri_keys() -> Vec<String> {
    (0..1024).map(|i| format!("/api/v{}/items/{i}?page={}", i % 7, i % 13)).collect()
}

/// A chash (or chashsubset) pick: CRC32 of the request's hash key, ring lookup.
fn hashed(c: &mut Criterion, group_name: &str, extra: &str) {
    let mut group = c.benchmark_group(group_name);
    group.throughput(Throughput::Elements(1));
    let keys = uri_keys();
    for n in SIZES {
        let core = Core::new();
        core.apply_backends(&backends_doc("default-web-80", n, extra)).unwrap();
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            let mut ctx = PickCtx::new();
            let mut i = 0usize;
            b.iter(|| {
                i = (i + 1) & 1023;
                let req = Request { hash_key: keys[i].as_bytes(), ..Request::EMPTY };
                ctx.reset();
                black_box(
                    core.pick_with(black_box(b"default-web-80"), &req, &mut ctx, |p| p.peer.text().len()).unwrap(),
                )
            })
        });
    }
    group.finish();
}

fn chash(c: &mut Criterion) {
    hashed(c, "pick/chash", r#""upstreamHashByConfig":{"upstream-hash-by":"$request_uri"},"#);
}

fn chashsubset(c: &mut Criterion) {
    let extra = r#""upstreamHashByConfig":{"upstream-hash-by":"$request_uri","upstream-hash-by-subset":true},"#;
    hashed(c, "pick/chashsubset", extra);
}

const STICKY_COOKIE: &str = r#""cookieSessionAffinity":{"name":"route","expires":"172800","maxage":"172800",
    "samesite":"None","conditional_samesite_none":true,"locations":{"shop.example.com":["/"]}}"#;

fn sticky_doc(n: usize, mode: &str) -> Vec<u8> {
    let extra = format!(r#""sessionAffinityConfig":{{"name":"cookie","mode":"{mode}",{STICKY_COOKIE}}},"#);
    backends_doc("default-web-80", n, &extra)
}

const SHOP: Request<'static> = Request {
    host: b"shop.example.com",
    location_path: b"/",
    user_agent:
        b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
    https: true,
    now: 1.7e9,
    hash_key: b"",
    cookie: b"",
};

/// A returning session: find the affinity cookie among others in the `Cookie` header,
/// split it, map its key to the endpoint (1024 sessions, cycled).
fn sticky_returning(c: &mut Criterion, mode: &str) {
    let mut group = c.benchmark_group(format!("pick/sticky_{mode}"));
    group.throughput(Throughput::Elements(1));
    for n in SIZES {
        let core = Core::new();
        core.apply_backends(&sticky_doc(n, mode)).unwrap();
        let headers: Vec<Vec<u8>> = (0..1024)
            .map(|_| {
                let set = core
                    .pick_with(b"default-web-80", &SHOP, &mut PickCtx::new(), |p| p.set_cookie.unwrap().to_string())
                    .unwrap();
                let pair = set.split(';').next().unwrap();
                format!("_ga=GA1.2.1234567890.1700000000; lang=en-US; {pair}; theme=dark").into_bytes()
            })
            .collect();
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            let mut ctx = PickCtx::new();
            let mut i = 0usize;
            b.iter(|| {
                i = (i + 1) & 1023;
                let req = Request { cookie: &headers[i], ..SHOP };
                ctx.reset();
                black_box(
                    core.pick_with(black_box(b"default-web-80"), &req, &mut ctx, |p| {
                        p.peer.text().len() + usize::from(p.set_cookie.is_some())
                    })
                    .unwrap(),
                )
            })
        });
    }
    group.finish();
}

fn sticky_balanced(c: &mut Criterion) {
    sticky_returning(c, "balanced");
}

fn sticky_persistent(c: &mut Criterion) {
    sticky_returning(c, "persistent");
}

/// A new session: pick an endpoint (balanced: random key through the ring) and format
/// its `Set-Cookie` (Expires date, Max-Age, SameSite user-agent check) into a buffer.
fn sticky_new_session(c: &mut Criterion) {
    for mode in ["balanced", "persistent"] {
        let mut group = c.benchmark_group(format!("pick/sticky_{mode}_new_session"));
        group.throughput(Throughput::Elements(1));
        for n in SIZES {
            let core = Core::new();
            core.apply_backends(&sticky_doc(n, mode)).unwrap();
            group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
                let mut ctx = PickCtx::new();
                let mut buf = [0u8; ingress_lb::COOKIE_MAX];
                let req = Request { cookie: b"lang=en-US", ..SHOP };
                b.iter(|| {
                    ctx.reset();
                    black_box(
                        core.pick_with(black_box(b"default-web-80"), &req, &mut ctx, |p| {
                            p.set_cookie.and_then(|c| c.write_to(&mut buf)).unwrap()
                        })
                        .unwrap(),
                    )
                })
            });
        }
        group.finish();
    }
}

/// A canary decision for a primary with two canaries (header value; header pattern,
/// cookie and weight), the request falling through every rule to the weight draw:
/// the longest path. Excludes the front end's header and cookie fetches.
fn canary(c: &mut Criterion) {
    let doc = br#"[{"name":"web","alternativeBackends":["web-v2","web-v3"],"endpoints":[{"address":"10.0.0.1","port":"80"}]},
        {"name":"web-v2","noServer":true,"trafficShapingPolicy":{"header":"X-Canary","headerValue":"v2"},
         "endpoints":[{"address":"10.0.2.1","port":"80"}]},
        {"name":"web-v3","noServer":true,"trafficShapingPolicy":{"header":"X-Canary-Group","headerPattern":"^(beta|rc)-[0-9]+$",
         "cookie":"canary","weight":20},"endpoints":[{"address":"10.0.3.1","port":"80"}]}]"#;
    let core = Core::new();
    core.apply_backends(doc).unwrap();
    let mut group = c.benchmark_group("canary");
    group.throughput(Throughput::Elements(1));
    // ingress-nginx's usual shape: one canary with header, cookie and weight rules; the
    // request has neither its header value nor an always/never cookie, so all three
    // rules run and the weight decides.
    let one = Core::new();
    one.apply_backends(
        br#"[{"name":"web","alternativeBackends":["web-canary"],"endpoints":[{"address":"10.0.0.1","port":"80"}]},
        {"name":"web-canary","noServer":true,"trafficShapingPolicy":{"header":"X-Canary","headerValue":"yes",
         "cookie":"canary","weight":20},"endpoints":[{"address":"10.0.1.1","port":"80"}]}]"#,
    )
    .unwrap();
    let headers: &[(&[u8], &[u8])] = &[(b"user-agent", b"curl/8.0"), (b"x-canary", b"no")];
    group.bench_function("one_canary_header_cookie_weight", |b| {
        b.iter(|| {
            black_box(one.route_with(black_box(b"web"), black_box(b"session=1f2e3d; canary=maybe"), headers, |a| {
                a.map_or(0, |(_, i)| i + 1)
            }))
        })
    });
    type Case = (&'static str, &'static [u8], &'static [(&'static [u8], &'static [u8])]);
    let cases: [Case; 3] = [
        (
            "two_canaries_header_pattern_cookie_weight",
            b"session=1f2e3d; canary=maybe",
            &[(b"x-canary", b"v1"), (b"x-canary-group", b"gamma-3")],
        ),
        ("header_value_hit", b"", &[(b"x-canary", b"v2")]),
        ("weight_only", b"", &[]),
    ];
    for (label, cookie, headers) in cases {
        group.bench_function(label, |b| {
            b.iter(|| {
                black_box(
                    core.route_with(black_box(b"web"), black_box(cookie), headers, |a| a.map_or(0, |(_, i)| i + 1)),
                )
            })
        });
    }
    group.finish();
}

criterion_group!(benches, round_robin, round_robin_c_abi, round_robin_retry);
criterion_group!(ewma_benches, ewma, ewma_c_abi, ewma_observe);
criterion_group!(hash_benches, chash, chashsubset, sticky_balanced, sticky_persistent, sticky_new_session);
criterion_group!(canary_benches, canary);
criterion_main!(benches, ewma_benches, hash_benches, canary_benches);
