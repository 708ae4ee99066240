//! Chashsubset: the key's subset from the ring, then an endpoint in the subset.

use criterion::Criterion;

use crate::chash::hashed;
use crate::common::CHASHSUBSET;

pub fn register_benches(c: &mut Criterion) {
    hashed(c, "pick/chashsubset", CHASHSUBSET);
}
