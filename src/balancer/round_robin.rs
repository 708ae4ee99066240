//! Round robin: endpoints in turn, from a random start in each worker process.

use std::sync::atomic::{AtomicUsize, Ordering};

use rand::Rng;

use super::first_untried;
use crate::pick::PickCtx;
use crate::snapshot::Endpoint;

/// Round-robin state: the next position. Each process (nginx worker) starts at a
/// random position drawn from the OS, so workers forked from one master do not all
/// send their first request to the same endpoint after a change.
#[derive(Debug)]
pub(crate) struct RoundRobin {
    next: AtomicUsize,
}

impl RoundRobin {
    pub(crate) fn new(len: usize) -> Self {
        let start = if len > 1 { rand::rngs::OsRng.gen_range(0..len) } else { 0 };
        RoundRobin { next: AtomicUsize::new(start) }
    }

    #[inline]
    pub(crate) fn pick(&self, endpoints: &[Endpoint], ctx: &PickCtx) -> usize {
        let n = endpoints.len();
        let mut start = self.next.load(Ordering::Relaxed);
        if start >= n {
            start %= n;
        }
        let chosen = first_untried(endpoints, start, ctx);
        let after = if chosen + 1 == n { 0 } else { chosen + 1 };
        // Relaxed is enough: concurrent pickers may occasionally pick the same
        // endpoint, which round robin tolerates; nginx workers are single-threaded.
        self.next.store(after, Ordering::Relaxed);
        chosen
    }
}
