//! The criterion suite, one binary (`make bench`, `cargo bench --bench suite`): one
//! module per area, each with a `register_benches`. Pick benches run at 3, 100, 1000
//! and 10 000 endpoints; ids are `area/case/size`, so `cargo bench --bench suite --
//! pick/chash` runs one area. Heap use per endpoint is `benches/memory.rs`.

use criterion::{criterion_group, criterion_main};

mod apply;
mod canary;
mod chash;
mod chashsubset;
mod common;
mod ewma;
mod round_robin;
mod sni;
mod sticky;

criterion_group!(
    benches,
    round_robin::register_benches,
    ewma::register_benches,
    chash::register_benches,
    chashsubset::register_benches,
    sticky::register_benches,
    canary::register_benches,
    sni::register_benches,
    apply::register_benches,
);
criterion_main!(benches);
