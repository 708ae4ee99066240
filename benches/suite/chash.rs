//! Chash: CRC32 of the request's hash key (1024 distinct URIs, cycled), ring lookup.

use criterion::Criterion;
use ingress_lb::{PickCtx, Request};

use crate::common::{backends_doc, core_with, per_size, pick, CHASH};

/// A hashed pick (chash or chashsubset, as `extra` says) at every size.
pub fn hashed(c: &mut Criterion, group: &str, extra: &str) {
    let keys: Vec<String> = (0..1024).map(|i| format!("/api/v{}/items/{i}?page={}", i % 7, i % 13)).collect();
    per_size(
        c,
        group,
        |n| core_with(&backends_doc(n, extra)),
        |b, core| {
            let mut ctx = PickCtx::new();
            let mut i = 0usize;
            b.iter(|| {
                i = (i + 1) & 1023;
                let req = Request { hash_key: keys[i].as_bytes(), ..Request::EMPTY };
                pick(core, &req, &mut ctx, |p| p.peer.text().len())
            })
        },
    );
}

pub fn register_benches(c: &mut Criterion) {
    hashed(c, "pick/chash", CHASH);
}
