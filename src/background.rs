//! Compiling a configuration on a thread of its own, so that a large change never
//! holds a worker's event loop: the event loop keeps serving the snapshot in force
//! and publishes the new one when it is ready ([`crate::Core::apply_backends_or_start`]).

use std::sync::Arc;
use std::thread::JoinHandle;

use crate::error::ConfigError;
use crate::snapshot::{ApplyReport, Snapshot};

/// A compilation running on its own thread.
#[derive(Debug)]
pub(crate) struct Build {
    /// The snapshot it builds on: its result is published only if this is still the
    /// snapshot in force (otherwise a newer configuration was applied meanwhile).
    pub(crate) base: Arc<Snapshot>,
    pub(crate) handle: JoinHandle<Result<(Snapshot, ApplyReport), ConfigError>>,
}

impl Build {
    /// Compile `json` against `base` on a new thread; `Err` gives `json` back if no
    /// thread could be started.
    pub(crate) fn start(json: Vec<u8>, base: Arc<Snapshot>) -> Result<Build, Vec<u8>> {
        let prev = Arc::clone(&base);
        let slot = Arc::new(parking_lot::Mutex::new(Some(json)));
        let taken = Arc::clone(&slot);
        let spawned = spawn_quiet(move || {
            let json = taken.lock().take().unwrap_or_default();
            Snapshot::compile(&json, &prev)
        });
        match spawned {
            Ok(handle) => Ok(Build { base, handle }),
            Err(_) => Err(slot.lock().take().unwrap_or_default()),
        }
    }
}

/// Drop `value` on a thread of its own (here if none can be started), so that the
/// caller does not spend the time to free it.
pub(crate) fn drop_elsewhere<T: Send + 'static>(value: T) {
    let slot = Arc::new(parking_lot::Mutex::new(Some(value)));
    let taken = Arc::clone(&slot);
    if spawn_quiet(move || drop(taken.lock().take())).is_err() {
        drop(slot.lock().take());
    }
}

/// Spawn a thread with every signal blocked in it. nginx (and any host of this
/// library) handles its signals on its main thread, by flags its event loop reads; a
/// signal delivered to a helper thread would run that handler off the event loop.
/// The mask is set on the calling thread around the spawn (a new thread inherits it)
/// and restored right after.
fn spawn_quiet<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> std::io::Result<JoinHandle<T>> {
    // SAFETY: sigset_t is plain data; sigfillset initialises it fully before use.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above, for the saved mask, which pthread_sigmask writes.
    let mut saved: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers to sigset_t values owned by this frame.
    let blocked =
        unsafe { libc::sigfillset(&mut all) == 0 && libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut saved) == 0 };
    let spawned = std::thread::Builder::new().name("ilb-apply".into()).spawn(f);
    if blocked {
        // SAFETY: restores the mask saved above on the same thread.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &saved, std::ptr::null_mut()) };
    }
    spawned
}
