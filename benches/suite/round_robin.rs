//! Round robin: a pick through the Rust API, the same through the C ABI, and the
//! second attempt of a request (one peer already tried).

use std::hint::black_box;
use std::mem::MaybeUninit;

use criterion::Criterion;
use ingress_lb::ffi::IlbPeer;
use ingress_lb::{PickCtx, Request};

use crate::common::{backends_doc, core_with, per_size, pick, CCore, BACKEND};

pub fn register_benches(c: &mut Criterion) {
    // A pick as a front end makes it: backend lookup by name in the snapshot in force,
    // the pick, the endpoint's address text read.
    per_size(
        c,
        "pick/round_robin",
        |n| core_with(&backends_doc(n, "")),
        |b, core| {
            let mut ctx = PickCtx::new();
            b.iter(|| pick(core, &Request::EMPTY, &mut ctx, |p| p.peer.text().len()))
        },
    );

    // Through the C ABI, as LuaJIT calls it: panic guard, argument checks, the copy of
    // the peer into the caller's `ilb_peer`.
    per_size(
        c,
        "pick/round_robin_c_abi",
        |n| CCore::new().apply_backends(&backends_doc(n, "")),
        |b, handle| {
            let mut ctx = PickCtx::new();
            let mut peer = MaybeUninit::<IlbPeer>::uninit();
            b.iter(|| handle.pick(std::ptr::null(), &mut ctx, &mut peer))
        },
    );

    // A retry: the first attempt, then the measured second one past the tried peer.
    per_size(
        c,
        "pick/round_robin_retry",
        |n| core_with(&backends_doc(n, "")),
        |b, core| {
            let mut ctx = PickCtx::new();
            b.iter(|| {
                pick(core, &Request::EMPTY, &mut ctx, |p| p.peer.index());
                black_box(core.pick_with(black_box(BACKEND), &Request::EMPTY, &mut ctx, |p| p.peer.text().len()))
                    .unwrap()
            })
        },
    );
}
