//! Canary decisions: snapshot load, backend lookup, the rules, the weight draw (the
//! front end's header and cookie fetches excluded).

use std::hint::black_box;

use criterion::{Criterion, Throughput};

use crate::common::{core_with, CANARY_PAIR, CANARY_TWO};

type Headers = &'static [(&'static [u8], &'static [u8])];

pub fn register_benches(c: &mut Criterion) {
    let one = core_with(CANARY_PAIR);
    let two = core_with(CANARY_TWO);
    let cases: [(&str, &ingress_lb::Core, &[u8], Headers); 4] = [
        // One canary with header, cookie and weight rules; the request has neither its
        // header value nor an always/never cookie: all three rules run, the weight decides.
        (
            "one_canary_header_cookie_weight",
            &one,
            b"session=1f2e3d; canary=maybe",
            &[(b"user-agent", b"curl/8.0"), (b"x-canary", b"no")],
        ),
        // Two canaries, falling through every rule to the weight: the longest path.
        (
            "two_canaries_header_pattern_cookie_weight",
            &two,
            b"session=1f2e3d; canary=maybe",
            &[(b"x-canary", b"v1"), (b"x-canary-group", b"gamma-3")],
        ),
        ("header_value_hit", &two, b"", &[(b"x-canary", b"v2")]),
        ("weight_only", &two, b"", &[]),
    ];
    let mut group = c.benchmark_group("canary");
    group.throughput(Throughput::Elements(1));
    for (label, core, cookie, headers) in cases {
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
