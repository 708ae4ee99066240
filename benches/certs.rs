//! SNI certificate lookup at 10, 10 000 and 100 000 hostnames: an exact hit, a
//! one-label wildcard hit, and the default certificate (a name nothing else matches).
//!
//! `cargo bench --bench certs`; numbers go to README.md.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ingress_lb::Core;

const SIZES: [usize; 3] = [10, 10_000, 100_000];

fn pem(name: &str) -> String {
    let path = format!("{}/tests/data/certs/{name}.pem", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `n` hostnames (one in ten a wildcard) over five certificates, and `_`.
fn servers_doc(n: usize) -> Vec<u8> {
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

fn lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("certs/lookup");
    group.throughput(Throughput::Elements(1));
    for n in SIZES {
        let core = Core::new();
        core.apply_servers(&servers_doc(n)).unwrap();
        // Names from the middle of the document, in the case a client may send.
        let exact = format!("Host-{}.ns-{}.example.net", n / 2 + 1, (n / 2 + 1) % 97).into_bytes();
        let wildcard = format!("api.w{}.example.net", n / 20 * 10).into_bytes();
        let miss = b"www.unknown-tenant.example.org".to_vec();
        for (case, sni) in [("exact", &exact), ("wildcard", &wildcard), ("default", &miss)] {
            let uid = core.certificate_with(Some(sni), |c| c.unwrap().uid.to_string());
            assert_eq!(uid == "default", case == "default", "{case}: {uid}");
            group.bench_with_input(BenchmarkId::new(case, n), &n, |b, _| {
                b.iter(|| black_box(core.certificate_with(Some(black_box(sni)), |c| c.map(|c| c.id))))
            });
        }
    }
    group.finish();
}

/// The same through the C ABI, as LuaJIT calls it (the id only).
fn lookup_c_abi(c: &mut Criterion) {
    use ingress_lb::ffi::certs::{ilb_core_apply_servers, ilb_core_certificate_lookup};
    use ingress_lb::ffi::{ilb_core_free, ilb_core_new};
    let mut group = c.benchmark_group("certs/lookup_c_abi");
    for n in [10, 100_000] {
        let doc = servers_doc(n);
        let mut core = std::ptr::null_mut();
        // SAFETY: valid out-pointer and buffers; the core is freed below.
        unsafe {
            ilb_core_new(&mut core);
            ilb_core_apply_servers(core, doc.as_ptr(), doc.len(), std::ptr::null_mut(), 0, std::ptr::null_mut());
        }
        let exact = format!("host-{}.ns-{}.example.net", n / 2 + 1, (n / 2 + 1) % 97).into_bytes();
        group.bench_with_input(BenchmarkId::new("exact", n), &n, |b, _| {
            let mut id = 0u64;
            b.iter(|| {
                // SAFETY: live core, valid name and out-pointer.
                unsafe { ilb_core_certificate_lookup(core, exact.as_ptr().cast(), exact.len(), &mut id) };
                black_box(id)
            })
        });
        // SAFETY: created above, freed once.
        unsafe { ilb_core_free(core) };
    }
    group.finish();
}

criterion_group!(benches, lookup, lookup_c_abi);
criterion_main!(benches);
