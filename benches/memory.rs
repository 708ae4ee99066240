//! Heap held by a configuration in force (`make bench`, `cargo bench --bench memory`):
//! a counting global allocator tracks the bytes live; a figure is the live bytes of a
//! core after a document was applied minus those of the same core empty. Printed as
//! markdown tables. Command-line arguments are ignored (`make bench` passes the
//! criterion suite's to it too).
//!
//! Bytes are those requested from the allocator (malloc's per-block overhead, 8–16
//! bytes, not included). Ewma statistics live in a shared mapping, not on the heap;
//! its size is printed separately.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use ingress_lb::{Core, SharedStats};

#[allow(dead_code)] // the suite's helpers; this target uses the document builders only
#[path = "suite/common.rs"]
mod common;

use common::{backends_doc, controller_doc, sticky_extra, CANARY_PAIR, CHASH, CHASHSUBSET, EWMA};

struct Counting;

/// Bytes allocated and not freed yet, by every thread.
static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: defers every operation to the system allocator unchanged; the counter is an
// atomic, which never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as our caller's.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as our caller's.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as our caller's.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_add(new_size, Ordering::Relaxed);
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Heap bytes `doc` holds once applied to a core (with statistics for `stats_slots`
/// endpoints when ewma needs them): live bytes after the apply minus before it.
fn heap_of(doc: &[u8], stats_slots: Option<u32>) -> usize {
    let core = Core::new();
    if let Some(slots) = stats_slots {
        core.use_stats(SharedStats::anonymous(slots).unwrap());
    }
    // The first snapshot load on a thread registers it with arc-swap: not the
    // configuration's.
    core.has_backend(b"warm-up");
    let before = LIVE.load(Ordering::Relaxed);
    core.apply_backends(doc).unwrap();
    let after = LIVE.load(Ordering::Relaxed);
    drop(core);
    after.checked_sub(before).expect("applying freed more than it kept")
}

fn main() {
    let sizes = [100usize, 1000, 10_000];
    let sticky_balanced = sticky_extra("balanced");
    let sticky_persistent = sticky_extra("persistent");
    let algorithms: [(&str, &str); 6] = [
        ("round robin", ""),
        ("ewma (statistics in shared memory, below)", EWMA),
        ("chash (ring included)", CHASH),
        ("chashsubset", CHASHSUBSET),
        ("sticky_balanced (ring included)", &sticky_balanced),
        ("sticky_persistent", &sticky_persistent),
    ];

    println!("One backend: heap bytes per endpoint (whole snapshot, the JSON text it keeps included)\n");
    println!("| bytes per endpoint | {} endpoints |", sizes.map(|n| n.to_string()).join(" | "));
    println!("| --- |{}", " --- |".repeat(sizes.len()));
    for (label, extra) in algorithms {
        let cells = sizes.map(|n| {
            let slots = (extra == EWMA).then_some(n as u32);
            format!("{:.0}", heap_of(&backends_doc(n, extra), slots) as f64 / n as f64)
        });
        println!("| {label} | {} |", cells.join(" | "));
    }
    let doc = sizes.map(|n| format!("{:.0}", backends_doc(n, "").len() as f64 / n as f64));
    println!("| (round robin's JSON document, per endpoint) | {} |", doc.join(" | "));
    let shm = sizes.map(|n| format!("{:.0}", SharedStats::region_size(n as u32) as f64 / n as f64));
    println!("| (ewma statistics table, shared mapping, per endpoint) | {} |", shm.join(" | "));

    println!("\nWhole snapshot: heap bytes\n");
    println!("| configuration | document | heap | per backend | per endpoint |");
    println!("| --- | --- | --- | --- | --- |");
    let whole: [(&str, Vec<u8>, usize, usize); 3] = [
        ("3000 backends × 10 endpoints", controller_doc(3000, 10, 0), 3000, 30_000),
        ("20 000 backends × 1 endpoint", controller_doc(20_000, 1, 0), 20_000, 20_000),
        ("canary pair (primary + canary, 1 endpoint each)", CANARY_PAIR.to_vec(), 2, 2),
    ];
    for (label, doc, backends, endpoints) in whole {
        let heap = heap_of(&doc, None);
        println!(
            "| {label} | {} | {} | {:.0} | {:.0} |",
            size(doc.len()),
            size(heap),
            heap as f64 / backends as f64,
            heap as f64 / endpoints as f64
        );
    }
}

/// `bytes` for a reader: B, KiB or MiB.
fn size(bytes: usize) -> String {
    match bytes {
        0..1024 => format!("{bytes} B"),
        1024..1_048_576 => format!("{:.1} KiB", bytes as f64 / 1024.0),
        _ => format!("{:.2} MiB", bytes as f64 / 1_048_576.0),
    }
}
