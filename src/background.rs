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
/// caller does not spend the time to free it, then hand the freed memory back to the
/// system.
pub(crate) fn drop_elsewhere<T: Send + 'static>(value: T) {
    let slot = Arc::new(parking_lot::Mutex::new(Some(value)));
    let taken = Arc::clone(&slot);
    let spawned = spawn_quiet(move || {
        drop(taken.lock().take());
        release_free_memory();
    });
    if spawned.is_err() {
        drop(slot.lock().take());
    }
}

/// glibc keeps what a program frees for its next allocations, in the arena of the
/// thread that allocated it (a compilation thread's, here), so a worker that once
/// held 20 000 backends would keep their memory after a smaller configuration
/// replaced them. `malloc_trim` gives the free pages of every arena back.
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases memory the allocator holds as free.
    unsafe {
        libc::malloc_trim(0);
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
    let spawned = std::thread::Builder::new().name("ilb-apply".into()).spawn(move || {
        yield_to_the_event_loop();
        f()
    });
    if blocked {
        // SAFETY: restores the mask saved above on the same thread.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &saved, std::ptr::null_mut()) };
    }
    spawned
}

/// Make this (helper) thread give way to the event loop it works for: a lower
/// scheduling priority (nice 10: when the event loop's thread wakes up on the same
/// CPU it runs at once, and the helper still gets about a tenth of a saturated CPU,
/// so it finishes), and any CPU of the machine rather than the one nginx's
/// `worker_cpu_affinity` pinned the worker to. Best effort: failures are ignored.
#[cfg(target_os = "linux")]
fn yield_to_the_event_loop() {
    // SAFETY: plain system calls on the calling thread (tid from SYS_gettid); the
    // cpu_set_t is initialised by CPU_ZERO before use and outlives the call.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 10);
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        let cpus = libc::sysconf(libc::_SC_NPROCESSORS_CONF).clamp(1, libc::CPU_SETSIZE as libc::c_long) as usize;
        for cpu in 0..cpus {
            libc::CPU_SET(cpu, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

#[cfg(not(target_os = "linux"))]
fn yield_to_the_event_loop() {}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #[test]
    fn helper_threads_block_signals_and_run_at_a_lower_priority() {
        let (nice, blocked) = super::spawn_quiet(|| {
            // SAFETY: plain queries about the calling thread into owned values.
            unsafe {
                let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
                *libc::__errno_location() = 0;
                let nice = libc::getpriority(libc::PRIO_PROCESS, tid);
                let mut mask: libc::sigset_t = std::mem::zeroed();
                libc::pthread_sigmask(libc::SIG_SETMASK, std::ptr::null(), &mut mask);
                let blocked = [libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT, libc::SIGCHLD, libc::SIGUSR1]
                    .iter()
                    .all(|&sig| libc::sigismember(&mask, sig) == 1);
                (nice, blocked)
            }
        })
        .unwrap()
        .join()
        .unwrap();
        assert_eq!(nice, 10);
        assert!(blocked);
        // The caller's own mask is as it was.
        // SAFETY: as above, for this thread.
        let term_blocked = unsafe {
            let mut mask: libc::sigset_t = std::mem::zeroed();
            libc::pthread_sigmask(libc::SIG_SETMASK, std::ptr::null(), &mut mask);
            libc::sigismember(&mask, libc::SIGTERM) == 1
        };
        assert!(!term_blocked);
    }
}
