//! SNI certificate lookup at 10, 10 000 and 100 000 hostnames: an exact hit, a
//! one-label wildcard hit, the default certificate (a name nothing else matches); and
//! an exact hit through the C ABI (the id only, as the Lua front end asks).

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput};
use ingress_lb::ffi::certs::ilb_core_certificate_lookup;
use ingress_lb::Core;

use crate::common::{servers_doc, CCore};

/// A hostname from the middle of a document of `n`, in the case a client may send.
fn exact_name(n: usize) -> Vec<u8> {
    format!("Host-{}.ns-{}.example.net", n / 2 + 1, (n / 2 + 1) % 97).into_bytes()
}

pub fn register_benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("certs/lookup");
    group.throughput(Throughput::Elements(1));
    for n in [10, 10_000, 100_000] {
        let core = Core::new();
        core.apply_servers(&servers_doc(n)).unwrap();
        let wildcard = format!("api.w{}.example.net", n / 20 * 10).into_bytes();
        let miss = b"www.unknown-tenant.example.org".to_vec();
        for (case, sni) in [("exact", &exact_name(n)), ("wildcard", &wildcard), ("default", &miss)] {
            let uid = core.certificate_with(Some(sni), |c| c.unwrap().uid.to_string());
            assert_eq!(uid == "default", case == "default", "{case}: {uid}");
            group.bench_with_input(BenchmarkId::new(case, n), &n, |b, _| {
                b.iter(|| black_box(core.certificate_with(Some(black_box(sni)), |c| c.map(|c| c.id))))
            });
        }
    }
    group.finish();

    let mut group = c.benchmark_group("certs/lookup_c_abi");
    group.throughput(Throughput::Elements(1));
    for n in [10, 100_000] {
        let handle = CCore::new().apply_servers(&servers_doc(n));
        let exact = exact_name(n);
        group.bench_with_input(BenchmarkId::new("exact", n), &n, |b, _| {
            let mut id = 0u64;
            b.iter(|| {
                // SAFETY: live core, valid name and out-pointer.
                unsafe { ilb_core_certificate_lookup(handle.core, exact.as_ptr().cast(), exact.len(), &mut id) };
                black_box(id)
            })
        });
    }
    group.finish();
}
