//! The per-request path never allocates: a counting global allocator watches every
//! allocation made by this thread across many picks.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use ingress_lb::{Core, PickCtx};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: defers every operation to the system allocator unchanged; the counter is a
// const-initialised thread-local Cell, which never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

fn doc(n: usize) -> Vec<u8> {
    let eps: Vec<String> =
        (0..n).map(|i| format!(r#"{{"address":"10.0.{}.{}","port":"80"}}"#, i / 250, i % 250 + 1)).collect();
    let v6 = r#"{"address":"fd00::1","port":"80"},{"address":"fd00::2","port":"80"}"#;
    format!(r#"[{{"name":"web","endpoints":[{}]}},{{"name":"v6","endpoints":[{v6}]}}]"#, eps.join(",")).into_bytes()
}

#[test]
fn counter_sees_allocations() {
    // The instrument works: a test that cannot fail is a defect.
    let before = allocations();
    let v: Vec<u8> = Vec::with_capacity(std::hint::black_box(64));
    drop(v);
    assert_eq!(allocations() - before, 1);
}

#[test]
fn round_robin_picks_do_not_allocate() {
    let core = Core::new();
    core.apply_backends(&doc(1000)).unwrap();
    let mut ctx = PickCtx::new();
    // Warm up: the first snapshot load on a thread registers it with arc-swap (once
    // per thread, not per request).
    core.pick(b"web", &mut ctx).unwrap();

    let before = allocations();
    for i in 0..100_000 {
        ctx.reset();
        let peer = core.pick(b"web", &mut ctx).unwrap();
        std::hint::black_box(peer.text());
        // Retries of the same request, past already-tried peers.
        if i % 10 == 0 {
            for _ in 0..5 {
                std::hint::black_box(core.pick(b"web", &mut ctx).unwrap());
            }
        }
        std::hint::black_box(core.pick(b"v6", &mut PickCtx::new()).unwrap());
        // Failures do not allocate either.
        assert!(core.pick(b"nope", &mut ctx).is_err());
        assert!(core.check_backend(b"web").is_ok());
    }
    assert_eq!(allocations() - before, 0, "allocations on the pick path");
}

#[cfg(feature = "capi")]
#[test]
fn c_abi_picks_do_not_allocate() {
    use ingress_lb::ffi::*;
    let mut core = std::ptr::null_mut();
    // SAFETY: valid out-pointer; the handle is freed at the end of the test.
    assert_eq!(unsafe { ilb_core_new(&mut core) }, IlbResult::Ok);
    let d = doc(100);
    let mut err = [0 as std::ffi::c_char; 256];
    // SAFETY: core is live, buffers valid for their lengths.
    let rc = unsafe {
        ilb_core_apply_backends(core, d.as_ptr(), d.len(), err.as_mut_ptr(), err.len(), std::ptr::null_mut())
    };
    assert_eq!(rc, IlbResult::Ok);
    let mut ctx = PickCtx::new();
    let mut peer = std::mem::MaybeUninit::<IlbPeer>::uninit();
    // SAFETY: all pointers valid.
    unsafe { ilb_core_pick(core, b"web".as_ptr().cast(), 3, std::ptr::null(), &mut ctx, peer.as_mut_ptr()) };
    let before = allocations();
    for _ in 0..100_000 {
        // SAFETY: all pointers valid for the call.
        unsafe {
            ilb_pick_ctx_init(&mut ctx);
            assert_eq!(
                ilb_core_pick(core, b"web".as_ptr().cast(), 3, std::ptr::null(), &mut ctx, peer.as_mut_ptr()),
                IlbResult::Ok
            );
            assert_eq!(ilb_core_has_backend(core, b"web".as_ptr().cast(), 3), IlbResult::Ok);
        }
    }
    assert_eq!(allocations() - before, 0, "allocations on the C pick path");
    // SAFETY: created above, freed once.
    unsafe { ilb_core_free(core) };
}

fn ewma_doc(n: usize) -> Vec<u8> {
    let eps: Vec<String> =
        (0..n).map(|i| format!(r#"{{"address":"10.0.{}.{}","port":"80"}}"#, i / 250, i % 250 + 1)).collect();
    format!(r#"[{{"name":"web","load-balance":"ewma","endpoints":[{}]}}]"#, eps.join(",")).into_bytes()
}

#[test]
fn ewma_picks_and_observes_do_not_allocate() {
    use ingress_lb::{Request, SharedStats};
    let core = Core::new();
    core.use_stats(SharedStats::anonymous(2000).unwrap());
    core.apply_backends(&ewma_doc(1000)).unwrap();
    let mut ctx = PickCtx::new();
    // Warm up: arc-swap's per-thread registration, the per-thread generator's seed.
    core.pick(b"web", &mut ctx).unwrap();
    core.observe(b"web", b"10.0.0.1:80", b"200", b"0.001", b"0.010", 0.0);

    let t0 = 1_700_000_000.0;
    let mut addr = [0u8; 64];
    let before = allocations();
    for i in 0..100_000u32 {
        let now = t0 + f64::from(i) * 0.001;
        let req = Request { now, ..Request::EMPTY };
        ctx.reset();
        let n = core
            .pick_with(b"web", &req, &mut ctx, |p| {
                let t = p.peer.text().as_bytes();
                addr[..t.len()].copy_from_slice(t);
                std::hint::black_box(p.score);
                t.len()
            })
            .unwrap();
        // Retries past tried peers.
        if i % 10 == 0 {
            for _ in 0..3 {
                std::hint::black_box(core.pick_with(b"web", &req, &mut ctx, |p| p.score).unwrap());
            }
        }
        // The log phase: one attempt, or a failed attempt and a retry across a redirect.
        if i % 7 == 0 {
            core.observe(
                b"web",
                b"10.0.0.9:80, [fd00::1]:80 : 10.0.1.3:80",
                b"502, 200 : 504",
                b"-, 0.001 : -",
                b"0.000, 0.020 : 5.001",
                now,
            );
        } else {
            core.observe(b"web", &addr[..n], b"200", b"0.001", b"0.012", now);
        }
        core.observe(b"nope", &addr[..n], b"200", b"0.001", b"0.012", now);
    }
    assert_eq!(allocations() - before, 0, "allocations on the ewma pick/observe path");
}

#[cfg(feature = "capi")]
#[test]
fn c_abi_ewma_picks_and_observes_do_not_allocate() {
    use ingress_lb::ffi::*;
    let mut stats = std::ptr::null_mut();
    let mut core = std::ptr::null_mut();
    // SAFETY: valid out-pointers; both handles are freed at the end of the test.
    unsafe {
        assert_eq!(ilb_stats_new(256, &mut stats), IlbResult::Ok);
        assert_eq!(ilb_core_new(&mut core), IlbResult::Ok);
        assert_eq!(ilb_core_use_stats(core, stats), IlbResult::Ok);
    }
    let d = ewma_doc(100);
    // SAFETY: core is live, buffers valid for their lengths.
    let rc =
        unsafe { ilb_core_apply_backends(core, d.as_ptr(), d.len(), std::ptr::null_mut(), 0, std::ptr::null_mut()) };
    assert_eq!(rc, IlbResult::Ok);
    let mut ctx = PickCtx::new();
    let mut peer = std::mem::MaybeUninit::<IlbPeer>::uninit();
    let (addr, status, connect, response) = (b"10.0.0.2:80, 10.0.0.3:80", b"502, 200", b"-, 0.001", b"0.001, 0.015");
    let observe = |core| {
        // SAFETY: live core; every (pointer, length) pair is a valid slice.
        unsafe {
            ilb_core_observe(
                core,
                b"web".as_ptr().cast(),
                3,
                addr.as_ptr().cast(),
                addr.len(),
                status.as_ptr().cast(),
                status.len(),
                connect.as_ptr().cast(),
                connect.len(),
                response.as_ptr().cast(),
                response.len(),
                0.0,
            )
        }
    };
    // SAFETY: all pointers valid.
    unsafe { ilb_core_pick(core, b"web".as_ptr().cast(), 3, std::ptr::null(), &mut ctx, peer.as_mut_ptr()) };
    assert_eq!(observe(core), IlbResult::Ok);
    let before = allocations();
    for _ in 0..100_000 {
        // SAFETY: all pointers valid for the call.
        unsafe {
            ilb_pick_ctx_init(&mut ctx);
            assert_eq!(
                ilb_core_pick(core, b"web".as_ptr().cast(), 3, std::ptr::null(), &mut ctx, peer.as_mut_ptr()),
                IlbResult::Ok
            );
        }
        assert_eq!(observe(core), IlbResult::Ok);
    }
    assert_eq!(allocations() - before, 0, "allocations on the C ewma pick/observe path");
    // SAFETY: created above, freed once each.
    unsafe {
        ilb_core_free(core);
        ilb_stats_free(stats);
    }
}

/// One backend per algorithm of the hashing/affinity family, 1000 endpoints each.
fn hashed_doc(n: usize) -> Vec<u8> {
    let eps: Vec<String> =
        (0..n).map(|i| format!(r#"{{"address":"10.0.{}.{}","port":"80"}}"#, i / 250, i % 250 + 1)).collect();
    let eps = eps.join(",");
    let cookie = r#""cookieSessionAffinity":{"name":"route","expires":"3600","maxage":"3600","path":"/",
        "domain":"example.com","samesite":"None","conditional_samesite_none":true,"change_on_failure":true,
        "locations":{"example.com":["/"],"*.example.org":["/"]}}"#;
    format!(
        r#"[{{"name":"chash","upstreamHashByConfig":{{"upstream-hash-by":"$request_uri"}},"endpoints":[{eps}]}},
        {{"name":"subset","upstreamHashByConfig":{{"upstream-hash-by":"$request_uri","upstream-hash-by-subset":true}},"endpoints":[{eps}]}},
        {{"name":"balanced","sessionAffinityConfig":{{"name":"cookie",{cookie}}},"endpoints":[{eps}]}},
        {{"name":"persistent","sessionAffinityConfig":{{"name":"cookie","mode":"persistent",{cookie}}},"endpoints":[{eps}]}}]"#
    )
    .into_bytes()
}

#[test]
fn chash_and_sticky_picks_do_not_allocate() {
    use ingress_lb::{AlgorithmKind, Request};
    let core = Core::new();
    core.apply_backends(&hashed_doc(1000)).unwrap();
    assert_eq!(core.algorithm(b"persistent"), Some(AlgorithmKind::StickyPersistent));
    // Warm up: arc-swap's per-thread registration, the per-thread random generator.
    for name in [&b"chash"[..], b"subset", b"balanced", b"persistent"] {
        core.pick(name, &mut PickCtx::new()).unwrap();
    }
    // Cookies the client sends back: a session of each sticky backend (one of them
    // from 10 000 requests ago is enough), plus unrelated cookies around them.
    let mut cookies: Vec<Vec<u8>> = Vec::new();
    for name in [&b"balanced"[..], b"persistent"] {
        let req = Request { host: b"example.com", location_path: b"/", ..Request::EMPTY };
        let set = core.pick_with(name, &req, &mut PickCtx::new(), |p| p.set_cookie.unwrap().to_string()).unwrap();
        let pair = set.split(';').next().unwrap();
        cookies.push(format!("lang=en; {pair}; theme=dark").into_bytes());
    }
    let keys: Vec<String> = (0..1000).map(|i| format!("/api/items/{i}?page={}", i % 7)).collect();
    let mut buf = [0u8; 1024];
    let mut ctx = PickCtx::new();
    let before = allocations();
    for i in 0..100_000usize {
        let key = keys[i % keys.len()].as_bytes();
        for name in [&b"chash"[..], b"subset"] {
            let req = Request { hash_key: key, ..Request::EMPTY };
            ctx.reset();
            std::hint::black_box(core.pick_with(name, &req, &mut ctx, |p| p.peer.text().len()).unwrap());
            if i % 10 == 0 {
                for _ in 0..3 {
                    std::hint::black_box(core.pick_with(name, &req, &mut ctx, |p| p.peer.index()).unwrap());
                }
            }
        }
        for (k, name) in [&b"balanced"[..], b"persistent"].into_iter().enumerate() {
            // Alternate: a returning session, a new one (cookie formatted), one on a
            // wildcard host with an old browser (SameSite=None dropped).
            let req = match i % 3 {
                0 => Request { cookie: &cookies[k], host: b"example.com", location_path: b"/", ..Request::EMPTY },
                1 => Request {
                    cookie: b"lang=en",
                    host: b"example.com",
                    location_path: b"/",
                    https: true,
                    now: 1.7e9,
                    ..Request::EMPTY
                },
                _ => Request {
                    host: b"a.example.org",
                    location_path: b"/",
                    user_agent: b"Mozilla/5.0 (X11; Linux x86_64) Chrome/51.0.2704.103 Safari/537.36",
                    now: 1.7e9,
                    ..Request::EMPTY
                },
            };
            ctx.reset();
            let attempts = if i % 10 == 0 { 4 } else { 1 };
            for _ in 0..attempts {
                let n = core
                    .pick_with(name, &req, &mut ctx, |p| p.set_cookie.map_or(Some(0), |c| c.write_to(&mut buf)))
                    .unwrap();
                std::hint::black_box(n.unwrap());
            }
            std::hint::black_box(core.is_affinitized(name, &cookies[k]));
        }
    }
    assert_eq!(allocations() - before, 0, "allocations on the chash/sticky pick path");
}

#[cfg(feature = "capi")]
#[test]
fn c_abi_sticky_picks_do_not_allocate() {
    use ingress_lb::ffi::*;
    let mut core = std::ptr::null_mut();
    // SAFETY: valid out-pointer; the handle is freed at the end of the test.
    assert_eq!(unsafe { ilb_core_new(&mut core) }, IlbResult::Ok);
    let d = hashed_doc(100);
    // SAFETY: core is live, buffers valid for their lengths.
    let rc =
        unsafe { ilb_core_apply_backends(core, d.as_ptr(), d.len(), std::ptr::null_mut(), 0, std::ptr::null_mut()) };
    assert_eq!(rc, IlbResult::Ok);
    let (host, path) = (b"example.com", b"/");
    let req = IlbRequest {
        hash_key: b"/x".as_ptr().cast(),
        hash_key_len: 2,
        cookie: b"lang=en".as_ptr().cast(),
        cookie_len: 7,
        host: host.as_ptr().cast(),
        host_len: host.len(),
        location_path: path.as_ptr().cast(),
        location_path_len: path.len(),
        user_agent: std::ptr::null(),
        user_agent_len: 0,
        now: 1.7e9,
        https: 1,
        reserved: 0,
    };
    let mut ctx = PickCtx::new();
    let mut peer = std::mem::MaybeUninit::<IlbPeer>::uninit();
    let names: [&[u8]; 4] = [b"chash", b"subset", b"balanced", b"persistent"];
    for name in names {
        // SAFETY: all pointers valid.
        unsafe { ilb_core_pick(core, name.as_ptr().cast(), name.len(), &req, &mut ctx, peer.as_mut_ptr()) };
    }
    let before = allocations();
    for i in 0..100_000 {
        let name = names[i % 4];
        // SAFETY: all pointers valid for the call.
        unsafe {
            ilb_pick_ctx_init(&mut ctx);
            assert_eq!(
                ilb_core_pick(core, name.as_ptr().cast(), name.len(), &req, &mut ctx, peer.as_mut_ptr()),
                IlbResult::Ok
            );
            // New sessions on sticky backends get their Set-Cookie written in place.
            assert_eq!(peer.assume_init_ref().set_cookie_len > 0, i % 4 >= 2);
        }
    }
    assert_eq!(allocations() - before, 0, "allocations on the C sticky pick path");
    // SAFETY: created above, freed once.
    unsafe { ilb_core_free(core) };
}

/// A primary with two canaries: one by header value, one by header pattern, cookie
/// and weight, both sticky so the affinity rules run too.
fn canary_doc() -> Vec<u8> {
    let sticky = r#""sessionAffinityConfig":{"name":"cookie","cookieSessionAffinity":{"name":"route"}}"#;
    format!(
        r#"[{{"name":"web","alternativeBackends":["web-v2","web-v3"],{sticky},"endpoints":[{{"address":"10.0.0.1","port":"80"}}]}},
        {{"name":"web-v2","noServer":true,{sticky},"trafficShapingPolicy":{{"header":"X-Canary","headerValue":"v2"}},
          "endpoints":[{{"address":"10.0.2.1","port":"80"}}]}},
        {{"name":"web-v3","noServer":true,{sticky},"trafficShapingPolicy":{{"header":"X-Canary-Group","headerPattern":"^(beta|rc)-[0-9]+$",
          "cookie":"canary","weight":20}},"endpoints":[{{"address":"10.0.3.1","port":"80"}}]}}]"#
    )
    .into_bytes()
}

/// A request as the canary rules see it: its `Cookie` header and its headers.
type CanaryRequest = (&'static [u8], &'static [(&'static [u8], &'static [u8])]);

/// Requests covering every rule and fall-through.
const CANARY_REQUESTS: [CanaryRequest; 7] = [
    (b"", &[]),
    (b"a=b", &[(b"accept", b"*/*"), (b"x-canary", b"v2")]),
    (b"", &[(b"X-Canary-Group", b"beta-17")]),
    (b"", &[(b"X-Canary-Group", b"gamma")]),
    (b"lang=en; canary=always", &[]),
    (b"canary=never", &[(b"X-Canary", b"nope")]),
    (b"route=abc|def; other=1", &[(b"user-agent", b"curl")]),
];

#[test]
fn canary_decisions_do_not_allocate() {
    let core = Core::new();
    core.apply_backends(&canary_doc()).unwrap();
    // Warm-up: arc-swap's per-thread registration, the regex engine's per-thread
    // cache and the generator's seed are made once per thread, not per request.
    for (cookie, headers) in CANARY_REQUESTS {
        core.route_with(b"web", cookie, headers, |a| a.is_some()).unwrap();
    }
    let mut chosen = [0u32; 3];
    let before = allocations();
    for i in 0..100_000 {
        let (cookie, headers) = CANARY_REQUESTS[i % CANARY_REQUESTS.len()];
        let which = core.route_with(b"web", cookie, headers, |a| a.map_or(0, |(_, i)| i + 1)).unwrap();
        chosen[which] += 1;
        assert!(core.route_with(b"nope", cookie, headers, |_| ()).is_err());
    }
    assert_eq!(allocations() - before, 0, "allocations on the canary decision path");
    assert!(chosen.iter().all(|&c| c > 0), "every outcome was exercised: {chosen:?}");
}

#[cfg(feature = "capi")]
#[test]
fn c_abi_canary_decisions_do_not_allocate() {
    use ingress_lb::ffi::*;
    let mut core = std::ptr::null_mut();
    // SAFETY: valid out-pointer; the handle is freed at the end of the test.
    assert_eq!(unsafe { ilb_core_new(&mut core) }, IlbResult::Ok);
    let d = canary_doc();
    // SAFETY: core is live, buffers valid for their lengths.
    let rc =
        unsafe { ilb_core_apply_backends(core, d.as_ptr(), d.len(), std::ptr::null_mut(), 0, std::ptr::null_mut()) };
    assert_eq!(rc, IlbResult::Ok);
    let requests: Vec<(&[u8], Vec<IlbHeader>)> = CANARY_REQUESTS
        .iter()
        .map(|&(cookie, headers)| {
            let hs = headers
                .iter()
                .map(|(n, v)| IlbHeader {
                    name: n.as_ptr().cast(),
                    name_len: n.len(),
                    value: v.as_ptr().cast(),
                    value_len: v.len(),
                })
                .collect();
            (cookie, hs)
        })
        .collect();
    let route = |cookie: &[u8], hs: &[IlbHeader]| {
        let mut which = u32::MAX;
        // SAFETY: all pointers valid for the call.
        let rc = unsafe {
            ilb_core_route(
                core,
                b"web".as_ptr().cast(),
                3,
                cookie.as_ptr().cast(),
                cookie.len(),
                hs.as_ptr(),
                hs.len(),
                &mut which,
            )
        };
        assert_eq!(rc, IlbResult::Ok);
        which
    };
    for (cookie, hs) in &requests {
        route(cookie, hs);
    }
    let mut chosen = [0u32; 3];
    let before = allocations();
    for i in 0..100_000 {
        let (cookie, hs) = &requests[i % requests.len()];
        chosen[route(cookie, hs) as usize] += 1;
    }
    assert_eq!(allocations() - before, 0, "allocations on the C canary decision path");
    assert!(chosen.iter().all(|&c| c > 0), "{chosen:?}");
    // SAFETY: created above, freed once.
    unsafe { ilb_core_free(core) };
}

/// A servers document: default, an exact hostname, a one-label wildcard.
fn servers_doc() -> Vec<u8> {
    let pem = |name: &str| {
        let path = format!("{}/tests/data/certs/{name}.pem", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    };
    let certs: Vec<(&str, String)> =
        vec![("d", pem("default")), ("e", pem("exact")), ("w", pem("wildcard")), ("c", pem("chain"))];
    let certs: Vec<String> =
        certs.iter().map(|(u, p)| format!("{:?}:{}", u, serde_json::to_string(p).unwrap())).collect();
    format!(
        r#"{{"certificates":{{{}}},"servers":{{"_":"d","exact.example.com":"e","*.b.example.com":"w","chain.example.com":"c"}}}}"#,
        certs.join(",")
    )
    .into_bytes()
}

const SNIS: [Option<&[u8]>; 6] = [
    Some(b"exact.example.com"),   // exact
    Some(b"Exact.Example.COM."),  // exact, normalised
    Some(b"a.b.example.com"),     // wildcard
    Some(b"unknown.example.org"), // default
    None,                         // no SNI: default
    Some(b"x.a.b.example.com"),   // two labels below the wildcard: default
];

#[test]
fn certificate_lookups_do_not_allocate() {
    let core = Core::new();
    core.apply_servers(&servers_doc()).unwrap();
    // A document accepted elsewhere: its certificates are parsed at first use, which
    // allocates once per certificate (here, in the warm-up), then never again.
    let accepted = Core::new();
    accepted.apply_accepted_servers(&servers_doc()).unwrap();
    for sni in SNIS {
        accepted.certificate_with(sni, |c| assert!(c.unwrap().objects().is_some()));
    }
    // Without `_`: a miss is None.
    let bare = Core::new();
    bare.apply_servers(br#"{"certificates":{},"servers":{}}"#).unwrap();
    // Warm up: arc-swap's per-thread registration.
    core.certificate_with(None, |c| assert_eq!(c.unwrap().uid, "d"));
    bare.certificate_with(None, |c| assert!(c.is_none()));
    let ids: Vec<u64> = SNIS.iter().map(|s| core.certificate_with(*s, |c| c.unwrap().id)).collect();

    let before = allocations();
    for i in 0..100_000usize {
        let sni = SNIS[i % SNIS.len()];
        let (id, n) = core.certificate_with(sni, |c| {
            let c = c.unwrap();
            (c.id, c.pem.len() + c.objects().unwrap().chain.len() + c.uid.len())
        });
        assert_eq!(id, ids[i % SNIS.len()]);
        let leaf = accepted
            .certificate_with(sni, |c| c.and_then(|c| c.objects()).map(|o| o.leaf as *const openssl::x509::X509Ref));
        std::hint::black_box(leaf);
        std::hint::black_box(n);
        assert!(bare.certificate_with(sni, |c| c.is_none()));
        std::hint::black_box(
            core.certificate_by_id_with(id, |c| c.and_then(|c| c.objects()).map(|o| o.key as *const _)),
        );
        std::hint::black_box(core.certificate_for_hostname_with(b"exact.example.com", |c| c.is_some()));
    }
    assert_eq!(allocations() - before, 0, "allocations on the certificate lookup path");
}

#[cfg(feature = "capi")]
#[test]
fn c_abi_certificate_lookups_do_not_allocate() {
    use ingress_lb::ffi::certs::*;
    use ingress_lb::ffi::*;
    let mut core = std::ptr::null_mut();
    // SAFETY: valid out-pointer; the handle is freed at the end of the test.
    assert_eq!(unsafe { ilb_core_new(&mut core) }, IlbResult::Ok);
    let d = servers_doc();
    // SAFETY: core is live, buffers valid for their lengths.
    let rc =
        unsafe { ilb_core_apply_servers(core, d.as_ptr(), d.len(), std::ptr::null_mut(), 0, std::ptr::null_mut()) };
    assert_eq!(rc, IlbResult::Ok);
    let mut id = 0u64;
    let mut buf = [0 as std::ffi::c_char; 4096];
    let mut len = 0usize;
    let lookup = |core, sni: Option<&[u8]>, id: &mut u64| {
        let (p, n) = sni.map_or((std::ptr::null(), 0), |s| (s.as_ptr().cast(), s.len()));
        // SAFETY: live core, (p, n) a valid slice or (NULL, 0), id writable.
        unsafe { ilb_core_certificate_lookup(core, p, n, id) }
    };
    assert_eq!(lookup(core, None, &mut id), IlbResult::Ok);
    let before = allocations();
    for i in 0..100_000usize {
        assert_eq!(lookup(core, SNIS[i % SNIS.len()], &mut id), IlbResult::Ok);
        // SAFETY: live core, buf writable for its length, len writable.
        unsafe {
            assert_eq!(ilb_core_certificate_pem(core, id, buf.as_mut_ptr(), buf.len(), &mut len), IlbResult::Ok);
            assert_eq!(
                ilb_core_certificate_pem(core, id ^ 1, buf.as_mut_ptr(), buf.len(), &mut len),
                IlbResult::NoCertificate
            );
        }
        std::hint::black_box(len);
    }
    assert_eq!(allocations() - before, 0, "allocations on the C certificate lookup path");
    // SAFETY: created above, freed once.
    unsafe { ilb_core_free(core) };
}
