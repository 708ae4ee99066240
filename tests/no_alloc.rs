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
