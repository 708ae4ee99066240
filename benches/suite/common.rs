//! What every area of the suite (and `benches/memory.rs`) shares: the documents the
//! controller posts, built at a given size; the C ABI handle; the per-size group.

use std::hint::black_box;

use criterion::{Bencher, BenchmarkId, Criterion, Throughput};
use std::mem::MaybeUninit;

use ingress_lb::ffi::{self, IlbCore, IlbPeer, IlbRequest, IlbResult, IlbStats};
use ingress_lb::{Core, PickCtx, Picked, Request};

/// Endpoints per backend in the pick benches.
pub const SIZES: [usize; 4] = [3, 100, 1000, 10_000];

/// The backend every pick bench looks up.
pub const BACKEND: &[u8] = b"default-web-80";

/// `load-balance` and friends, spliced in front of a backend's `endpoints`.
pub const EWMA: &str = r#""load-balance":"ewma","#;
pub const CHASH: &str = r#""upstreamHashByConfig":{"upstream-hash-by":"$request_uri"},"#;
pub const CHASHSUBSET: &str =
    r#""upstreamHashByConfig":{"upstream-hash-by":"$request_uri","upstream-hash-by-subset":true},"#;

/// The address of endpoint `i` (distinct for up to 2^24 endpoints).
pub fn endpoint_address(i: usize) -> String {
    format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255)
}

/// One backend, [`BACKEND`], of `n` endpoints on port 8080; `extra` goes before its
/// `endpoints` (an algorithm, cookie affinity).
pub fn backends_doc(n: usize, extra: &str) -> Vec<u8> {
    let name = std::str::from_utf8(BACKEND).unwrap();
    let eps: Vec<String> =
        (0..n).map(|i| format!(r#"{{"address":"{}","port":"8080"}}"#, endpoint_address(i))).collect();
    format!(r#"[{{"name":"{name}",{extra}"endpoints":[{}]}}]"#, eps.join(",")).into_bytes()
}

/// Cookie affinity of `mode` ("balanced" or "persistent") with every cookie attribute.
pub fn sticky_extra(mode: &str) -> String {
    format!(
        r#""sessionAffinityConfig":{{"name":"cookie","mode":"{mode}","cookieSessionAffinity":{{"name":"route",
        "expires":"172800","maxage":"172800","samesite":"None","conditional_samesite_none":true,
        "locations":{{"shop.example.com":["/"]}}}}}},"#
    )
}

/// The controller's document of `backends` backends of `eps` endpoints each, in the
/// shape it posts them (every field present); backend `backends / 2` listens on
/// `8080 + variant`, so two variants differ in one backend in the middle.
pub fn controller_doc(backends: usize, eps: usize, variant: usize) -> Vec<u8> {
    let mut out = String::from("[");
    for b in 0..backends {
        if b > 0 {
            out.push(',');
        }
        let port = if b == backends / 2 { 8080 + variant } else { 8080 };
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

/// ingress-nginx's usual canary shape: `web` and one canary with header, cookie and
/// weight rules.
pub const CANARY_PAIR: &[u8] =
    br#"[{"name":"web","alternativeBackends":["web-canary"],"endpoints":[{"address":"10.0.0.1","port":"80"}]},
    {"name":"web-canary","noServer":true,"trafficShapingPolicy":{"header":"X-Canary","headerValue":"yes",
     "cookie":"canary","weight":20},"endpoints":[{"address":"10.0.1.1","port":"80"}]}]"#;

/// `web` and two canaries: a header value; a header pattern, a cookie and a weight.
pub const CANARY_TWO: &[u8] =
    br#"[{"name":"web","alternativeBackends":["web-v2","web-v3"],"endpoints":[{"address":"10.0.0.1","port":"80"}]},
    {"name":"web-v2","noServer":true,"trafficShapingPolicy":{"header":"X-Canary","headerValue":"v2"},
     "endpoints":[{"address":"10.0.2.1","port":"80"}]},
    {"name":"web-v3","noServer":true,"trafficShapingPolicy":{"header":"X-Canary-Group","headerPattern":"^(beta|rc)-[0-9]+$",
     "cookie":"canary","weight":20},"endpoints":[{"address":"10.0.3.1","port":"80"}]}]"#;

fn pem(name: &str) -> String {
    let path = format!("{}/tests/data/certs/{name}.pem", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A servers document: `n` hostnames (one in ten a wildcard) over five certificates,
/// and `_`.
pub fn servers_doc(n: usize) -> Vec<u8> {
    let uids = ["default", "exact", "wildcard", "other", "chain"];
    let certs: Vec<String> =
        uids.iter().map(|u| format!("{u:?}:{}", serde_json::to_string(&pem(u)).unwrap())).collect();
    let servers: Vec<String> = (0..n)
        .map(|i| {
            let uid = uids[1 + i % 4];
            if i % 10 == 0 {
                format!(r#""*.w{i}.example.net":"{uid}""#)
            } else {
                format!(r#""host-{i}.ns-{}.example.net":"{uid}""#, i % 97)
            }
        })
        .collect();
    format!(r#"{{"certificates":{{{}}},"servers":{{"_":"default",{}}}}}"#, certs.join(","), servers.join(","))
        .into_bytes()
}

/// Now, in seconds since the Unix epoch.
pub fn now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64()
}

/// A core with `doc` applied.
pub fn core_with(doc: &[u8]) -> Core {
    let core = Core::new();
    core.apply_backends(doc).unwrap();
    core
}

/// One pick of [`BACKEND`] as a front end makes it, the first of a request: look the
/// backend up by name in the snapshot in force, pick, and let `f` read the result.
#[inline]
pub fn pick<R>(core: &Core, req: &Request<'_>, ctx: &mut PickCtx, f: impl FnOnce(Picked<'_>) -> R) -> R {
    ctx.reset();
    black_box(core.pick_with(black_box(BACKEND), req, ctx, f).unwrap())
}

/// A benchmark group `name` with one benchmark per endpoint count of [`SIZES`], ids
/// `name/n`: `setup(n)` builds the input once per size, `run` measures with it.
pub fn per_size<S>(
    c: &mut Criterion,
    name: &str,
    mut setup: impl FnMut(usize) -> S,
    mut run: impl FnMut(&mut Bencher<'_>, &S),
) {
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(1));
    for n in SIZES {
        let input = setup(n);
        group.bench_with_input(BenchmarkId::from_parameter(n), &input, &mut run);
    }
    group.finish();
}

/// An `ilb_core` handle, as LuaJIT holds one, with its own statistics table if asked.
pub struct CCore {
    pub core: *mut IlbCore,
    stats: *mut IlbStats,
}

impl CCore {
    pub fn new() -> CCore {
        let mut core = std::ptr::null_mut();
        // SAFETY: a valid out-pointer; the handle is freed by drop.
        assert_eq!(unsafe { ffi::ilb_core_new(&mut core) }, IlbResult::Ok);
        CCore { core, stats: std::ptr::null_mut() }
    }

    /// Give the core a statistics table of `slots` (ewma), as the Lua front end does.
    pub fn use_stats(mut self, slots: u32) -> CCore {
        // SAFETY: a valid out-pointer; the table is freed by drop, after the core.
        assert_eq!(unsafe { ffi::ilb_stats_new(slots, &mut self.stats) }, IlbResult::Ok);
        // SAFETY: both handles live; the core keeps its own reference to the table.
        assert_eq!(unsafe { ffi::ilb_core_use_stats(self.core, self.stats) }, IlbResult::Ok);
        self
    }

    pub fn apply_backends(self, doc: &[u8]) -> CCore {
        let null = std::ptr::null_mut();
        // SAFETY: live handle, `doc` readable for its length, no error buffer.
        let rc = unsafe { ffi::ilb_core_apply_backends(self.core, doc.as_ptr(), doc.len(), null, 0, null.cast()) };
        assert_eq!(rc, IlbResult::Ok);
        self
    }

    /// A pick of [`BACKEND`] through `ilb_core_pick`, the first of a request, as
    /// LuaJIT makes it (`req` may be null).
    #[inline]
    pub fn pick(&self, req: *const IlbRequest, ctx: &mut PickCtx, peer: &mut MaybeUninit<IlbPeer>) -> IlbResult {
        ctx.reset();
        // SAFETY: live core, valid name, ctx and peer pointers; `req` null or valid by
        // our caller.
        black_box(unsafe {
            ffi::ilb_core_pick(self.core, BACKEND.as_ptr().cast(), BACKEND.len(), req, ctx, peer.as_mut_ptr())
        })
    }

    pub fn apply_servers(self, doc: &[u8]) -> CCore {
        let null = std::ptr::null_mut();
        // SAFETY: live handle, `doc` readable for its length, no error buffer.
        let rc =
            unsafe { ffi::certs::ilb_core_apply_servers(self.core, doc.as_ptr(), doc.len(), null, 0, null.cast()) };
        assert_eq!(rc, IlbResult::Ok);
        self
    }
}

impl Drop for CCore {
    fn drop(&mut self) {
        // SAFETY: both created by this value (the table may be null, which is allowed)
        // and freed once, the core first.
        unsafe {
            ffi::ilb_core_free(self.core);
            ffi::ilb_stats_free(self.stats);
        }
    }
}
