//! A fast random generator per thread (wyrand), seeded from the OS. Processes forked
//! after a thread seeded it reseed (a fork counter bumped in the child by
//! `pthread_atfork`), so nginx workers never share a sequence. Never allocates.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;

use rand::RngCore;

static FORKS: AtomicU64 = AtomicU64::new(0);
static AT_FORK: Once = Once::new();

extern "C" fn after_fork_in_child() {
    FORKS.fetch_add(1, Ordering::Relaxed);
}

thread_local! {
    /// (state, value of FORKS when seeded); state 0 = not seeded.
    static RNG: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
}

#[cold]
fn seed() -> u64 {
    AT_FORK.call_once(|| {
        // SAFETY: registers a handler that only bumps an atomic, which is
        // async-signal-safe as a fork child handler requires. Failure (ENOMEM) only
        // means a forked child would reuse its parent's sequence.
        unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
    });
    rand::rngs::OsRng.next_u64() | 1
}

#[inline]
pub(crate) fn next_u64() -> u64 {
    RNG.with(|c| {
        let (mut state, seeded_at) = c.get();
        let forks = FORKS.load(Ordering::Relaxed);
        if state == 0 || seeded_at != forks {
            state = seed();
        }
        state = state.wrapping_add(0xa076_1d64_78bd_642f);
        c.set((state, forks));
        let t = u128::from(state) * u128::from(state ^ 0xe703_7ed1_a0b4_28db);
        (t >> 64) as u64 ^ t as u64
    })
}

/// Uniform in `0..n` (`n > 0`), by multiply-shift (bias below 2^-40 for any `n` here).
#[inline]
pub(crate) fn below(n: usize) -> usize {
    ((u128::from(next_u64()) * n as u128) >> 64) as usize
}
