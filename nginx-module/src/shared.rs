//! The shared memory zones: the documents in force for all workers, each with a
//! generation counter. Two zones of the same layout, one document each ([`Kind`]):
//! the backends JSON (zone `ingress_lb`, `ingress_lb_zone`) and the servers JSON with
//! the certificates (zone `ingress_lb_servers`, `ingress_lb_servers_zone`). Separate
//! zones, so that resizing one at a reload keeps the other's document (nginx keeps a
//! zone across a reload only when its size did not change).
//!
//! Layout (inside an nginx slab pool):
//! a [`Shared`] header and one data block made of every page left free at zone
//! creation. The JSON is stored in place in the data block under the slab pool's mutex,
//! so a document up to the block's capacity always fits and a store never fails half
//! way (no fragmentation, no second copy needed).
//!
//! Workers learn of a new configuration lazily: every request entering the module
//! compares the zone's generation (one atomic load, no lock) with the generation this
//! process last applied ([`Zone::sync`]); if they differ, it copies the JSON under the
//! mutex and applies it to this process's core. New workers do the same at start.

use core::ffi::c_void;
use core::ptr;
use core::sync::atomic::{AtomicU64, Ordering};

use ingress_lb::{Collected, Progress};
use ngx::ffi::{
    ngx_conf_t, ngx_int_t, ngx_log_t, ngx_shared_memory_add, ngx_shm_zone_t, ngx_shmtx_lock, ngx_shmtx_t,
    ngx_shmtx_unlock, ngx_slab_alloc, ngx_slab_alloc_locked, ngx_slab_pool_t, ngx_str_t, NGX_LOG_ALERT, NGX_LOG_EMERG,
    NGX_LOG_ERR,
};
use ngx::{ngx_conf_log_error, ngx_log_debug, ngx_log_error};

/// Name of the backends zone.
pub(crate) const ZONE_NAME: &str = "ingress_lb";

/// Name of the servers (certificates) zone.
pub(crate) const SERVERS_ZONE_NAME: &str = "ingress_lb_servers";

/// The document a zone holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `POST /configuration/backends`, applied with `Core::apply_backends`.
    Backends = 0,
    /// `POST /configuration/servers`, applied with `Core::apply_servers`.
    Servers = 1,
}

impl Kind {
    fn magic(self) -> u64 {
        match self {
            Kind::Backends => u64::from_le_bytes(*b"ILBZONE1"),
            Kind::Servers => u64::from_le_bytes(*b"ILBSRVS1"),
        }
    }

    pub(crate) fn zone_name(self) -> &'static str {
        match self {
            Kind::Backends => ZONE_NAME,
            Kind::Servers => SERVERS_ZONE_NAME,
        }
    }

    /// What the document is called in log lines and responses.
    pub(crate) fn what(self) -> &'static str {
        match self {
            Kind::Backends => "backends",
            Kind::Servers => "servers",
        }
    }

    /// The directive that sizes the zone.
    pub(crate) fn directive(self) -> &'static str {
        match self {
            Kind::Backends => "ingress_lb_zone",
            Kind::Servers => "ingress_lb_servers_zone",
        }
    }

    fn last_applied(self) -> &'static AtomicU64 {
        &LAST_APPLIED[self as usize]
    }

    /// The generation being compiled off the event loop (0: none; backends only).
    fn pending(self) -> &'static AtomicU64 {
        &PENDING[self as usize]
    }
}

/// Header at the start of the zone's allocations.
#[repr(C)]
struct Shared {
    magic: u64,
    /// Number of configurations stored so far (0 = none). Written under the mutex,
    /// read without it.
    generation: AtomicU64,
    /// Length of the JSON in `data` (under the mutex).
    len: usize,
    /// Capacity of `data` (fixed at zone creation).
    cap: usize,
    /// The data block, inside the same shared mapping.
    data: *mut u8,
}

/// Generation of the document of each [`Kind`] this process last applied (per
/// process: workers are forked before they touch it).
static LAST_APPLIED: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

/// Generation of the document of each [`Kind`] this process compiles off the event
/// loop (0: none).
static PENDING: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

/// Changed backends (bytes of JSON) a worker builds on its event loop when it finds
/// a new document in the zone or takes a POST; a larger change is compiled on
/// another thread (the core's default for both front ends).
pub(crate) use ingress_lb::INLINE_APPLY_BYTES;

/// A handle on an initialised zone (valid for the cycle it belongs to).
#[derive(Clone, Copy)]
pub(crate) struct Zone {
    pool: *mut ngx_slab_pool_t,
    hdr: *mut Shared,
    kind: Kind,
}

/// Why a store was refused.
#[derive(Debug)]
pub(crate) enum StoreError {
    TooLarge { size: usize, cap: usize },
}

/// Holds the slab pool mutex; unlocks on drop (including while unwinding).
struct Locked(*mut ngx_shmtx_t);

impl Locked {
    /// # Safety
    /// `mutex` must be the initialised mutex of a live slab pool.
    unsafe fn new(mutex: *mut ngx_shmtx_t) -> Self {
        // SAFETY: per the contract.
        unsafe { ngx_shmtx_lock(mutex) };
        Locked(mutex)
    }
}

impl Drop for Locked {
    fn drop(&mut self) {
        // SAFETY: we locked this mutex in `new` and still hold it.
        unsafe { ngx_shmtx_unlock(self.0) };
    }
}

/// Add the module's zone for `kind` to the configuration being read.
///
/// # Safety
/// `cf` must be a valid configuration context.
pub(crate) unsafe fn add_zone(cf: *mut ngx_conf_t, kind: Kind, size: usize) -> *mut ngx_shm_zone_t {
    let init = match kind {
        Kind::Backends => zone_init_backends,
        Kind::Servers => zone_init_servers,
    };
    // SAFETY: forwarded caller contract.
    unsafe { add_module_zone(cf, kind.zone_name(), size, init) }
}

/// Add a shared zone of this module (`name`, `size`, initialised by `init`) to the
/// configuration being read; null (and an `emerg` line) if nginx refuses it.
///
/// # Safety
/// `cf` must be a valid configuration context.
pub(crate) unsafe fn add_module_zone(
    cf: *mut ngx_conf_t,
    zone_name: &'static str,
    size: usize,
    init: extern "C" fn(*mut ngx_shm_zone_t, *mut c_void) -> ngx_int_t,
) -> *mut ngx_shm_zone_t {
    let mut name = ngx_str_t { data: zone_name.as_ptr() as *mut u8, len: zone_name.len() };
    // SAFETY: cf is valid; the tag is the module's address (the module's zones have
    // different names, so they may share it).
    let zone = unsafe {
        ngx_shared_memory_add(cf, &mut name, size, ptr::addr_of_mut!(crate::ngx_http_ingress_lb_module) as *mut c_void)
    };
    if zone.is_null() {
        ngx_conf_log_error!(NGX_LOG_EMERG, cf, "could not add shared zone \"{}\"", zone_name);
        return ptr::null_mut();
    }
    // SAFETY: zone is a valid shm zone entry of this cycle.
    unsafe { (*zone).init = Some(init) };
    zone
}

/// `shm_zone->init` of the backends zone.
extern "C" fn zone_init_backends(shm_zone: *mut ngx_shm_zone_t, data: *mut c_void) -> ngx_int_t {
    zone_init(shm_zone, data, Kind::Backends)
}

/// `shm_zone->init` of the servers zone.
extern "C" fn zone_init_servers(shm_zone: *mut ngx_shm_zone_t, data: *mut c_void) -> ngx_int_t {
    zone_init(shm_zone, data, Kind::Servers)
}

/// Lay out a new zone, or take over the one of the previous cycle (same name and size
/// after a reload: the document in force is kept).
fn zone_init(shm_zone: *mut ngx_shm_zone_t, data: *mut c_void, kind: Kind) -> ngx_int_t {
    // SAFETY: nginx passes a valid zone whose slab pool it has initialised.
    let log = unsafe { (*shm_zone).shm.log };
    crate::util::guard(log, "zone init", ngx::ffi::NGX_ERROR as ngx_int_t, || {
        // SAFETY: as above; the data of a reused zone is the header we created earlier.
        unsafe { zone_init_inner(shm_zone, data, kind) }
    })
}

unsafe fn zone_init_inner(shm_zone: *mut ngx_shm_zone_t, data: *mut c_void, kind: Kind) -> ngx_int_t {
    // SAFETY: the zone memory starts with the slab pool nginx initialised.
    let (zone, pool) = unsafe { (&mut *shm_zone, (*shm_zone).shm.addr as *mut ngx_slab_pool_t) };
    if !data.is_null() {
        zone.data = data;
        return ngx::ffi::NGX_OK as ngx_int_t;
    }
    if zone.shm.exists != 0 {
        // SAFETY: the pool was laid out by a previous process (Windows only).
        zone.data = unsafe { (*pool).data };
        return ngx::ffi::NGX_OK as ngx_int_t;
    }

    // SAFETY: the pool is initialised; ngx_slab_alloc locks internally.
    let hdr = unsafe { ngx_slab_alloc(pool, core::mem::size_of::<Shared>()) } as *mut Shared;
    if hdr.is_null() {
        return ngx::ffi::NGX_ERROR as ngx_int_t;
    }

    // SAFETY: the pool is initialised and nothing else uses it yet.
    let Some((block, cap)) = (unsafe { alloc_largest(pool) }) else {
        ngx_log_error!(NGX_LOG_EMERG, zone.shm.log, "ingress_lb: zone \"{}\" is too small", kind.zone_name());
        return ngx::ffi::NGX_ERROR as ngx_int_t;
    };

    // SAFETY: hdr is a fresh, suitably aligned slab allocation of size_of::<Shared>().
    unsafe {
        hdr.write(Shared { magic: kind.magic(), generation: AtomicU64::new(0), len: 0, cap, data: block });
        (*pool).data = hdr.cast();
    }
    zone.data = hdr.cast();
    ngx::ffi::NGX_OK as ngx_int_t
}

/// Allocate the largest block the slab pool can give (every page left free, or as
/// many as fit): `(block, size)`, page aligned, or `None` when not even a page is free.
///
/// # Safety
/// `pool` must be the initialised slab pool of a zone being initialised.
pub(crate) unsafe fn alloc_largest(pool: *mut ngx_slab_pool_t) -> Option<(*mut u8, usize)> {
    // SAFETY: ngx_pagesize(_shift) are set by nginx at startup.
    let (page, shift) = unsafe { (ngx::ffi::ngx_pagesize, ngx::ffi::ngx_pagesize_shift) };
    // SAFETY: the pool's mutex is initialised.
    let _lock = unsafe { Locked::new(&mut (*pool).mutex) };
    // SAFETY: we hold the pool lock.
    let free_pages = unsafe { (*pool).pfree };
    let mut cap = free_pages << shift;
    let mut block = ptr::null_mut();
    // Quiet the slab allocator's "no memory" message while probing for the largest block.
    // SAFETY: we hold the pool lock.
    let nomem = unsafe { (*pool).log_nomem() };
    // SAFETY: we hold the pool lock.
    unsafe { (*pool).set_log_nomem(0) };
    while cap >= page {
        // SAFETY: we hold the pool lock.
        block = unsafe { ngx_slab_alloc_locked(pool, cap) } as *mut u8;
        if !block.is_null() {
            break;
        }
        cap -= page;
    }
    // SAFETY: we hold the pool lock.
    unsafe { (*pool).set_log_nomem(nomem) };
    (!block.is_null()).then_some((block, cap))
}

impl Zone {
    /// # Safety
    /// `shm_zone` must be null or a zone added by [`add_zone`] for `kind` in a live cycle.
    pub(crate) unsafe fn from_shm_zone(shm_zone: *mut ngx_shm_zone_t, kind: Kind) -> Option<Zone> {
        if shm_zone.is_null() {
            return None;
        }
        // SAFETY: per the contract; data is null until zone_init ran, then our header.
        let (hdr, pool) = unsafe { ((*shm_zone).data as *mut Shared, (*shm_zone).shm.addr as *mut ngx_slab_pool_t) };
        // SAFETY: a non-null data is a header written by zone_init.
        if hdr.is_null() || unsafe { (*hdr).magic } != kind.magic() {
            return None;
        }
        Some(Zone { pool, hdr, kind })
    }

    fn shared(&self) -> &Shared {
        // SAFETY: hdr is a valid header in the shared mapping for the cycle's lifetime;
        // fields other than `generation` are only read under the mutex or are immutable.
        unsafe { &*self.hdr }
    }

    /// Largest document the zone can hold.
    pub(crate) fn capacity(&self) -> usize {
        self.shared().cap
    }

    fn lock(&self) -> Locked {
        // SAFETY: the pool's mutex was initialised by nginx with the zone.
        unsafe { Locked::new(ptr::addr_of_mut!((*self.pool).mutex)) }
    }

    /// Make this process's core apply the zone's document if it changed since the
    /// last time. The common case is two atomic loads.
    ///
    /// On the request path: a backends document whose changed part is larger than
    /// [`INLINE_APPLY_BYTES`] is compiled on a thread of the core's own while this
    /// worker keeps serving the configuration in force; a later call publishes it
    /// when it is ready (see `Core::apply_backends_or_start`).
    #[inline]
    pub(crate) fn sync(&self, log: *mut ngx_log_t) {
        let current = self.shared().generation.load(Ordering::Acquire);
        if current != self.kind.last_applied().load(Ordering::Relaxed)
            || self.kind.pending().load(Ordering::Relaxed) != 0
        {
            self.sync_slow(log, true);
        }
    }

    /// [`Zone::sync`], applying the document before returning whatever its size: at
    /// worker start, before the first request.
    pub(crate) fn sync_now(&self, log: *mut ngx_log_t) {
        self.sync_slow(log, false);
    }

    /// Publish the background compilation of generation `pending`, if it is done.
    /// False while it still runs.
    fn collect(&self, log: *mut ngx_log_t, pending: u64) -> bool {
        match crate::core().collect_backends() {
            Collected::Running => return false,
            Collected::Applied(report) => {
                log_applied(log, pending, &report, " (compiled off the event loop)");
                self.kind.last_applied().store(pending, Ordering::Relaxed);
            }
            Collected::Rejected(err) => {
                self.log_rejected(log, pending, &err);
                self.kind.last_applied().store(pending, Ordering::Relaxed);
            }
            // Overtaken by a configuration applied meanwhile (a POST to this worker):
            // the zone is read again.
            Collected::Superseded | Collected::Idle => {}
        }
        self.kind.pending().store(0, Ordering::Relaxed);
        true
    }

    fn log_rejected(&self, log: *mut ngx_log_t, generation: u64, err: &ingress_lb::ConfigError) {
        // Cannot happen for documents stored by this module (they were applied
        // before being stored); keep serving the previous document.
        ngx_log_error!(
            NGX_LOG_ALERT,
            log,
            "ingress_lb: {} generation {} in the shared zone was rejected: {}",
            self.kind.what(),
            generation,
            err
        );
    }

    #[cold]
    fn sync_slow(&self, log: *mut ngx_log_t, may_defer: bool) {
        let pending = self.kind.pending().load(Ordering::Relaxed);
        // Still compiling: serve on, unless the document is needed now (then it is
        // applied here, and the compilation's result found superseded later).
        if pending != 0 && !self.collect(log, pending) && may_defer {
            return;
        }
        let (generation, doc) = {
            let _lock = self.lock();
            let s = self.shared();
            let generation = s.generation.load(Ordering::Relaxed);
            // SAFETY: under the mutex, data[..len] is the stored document (len <= cap).
            let doc = unsafe { core::slice::from_raw_parts(s.data, s.len) }.to_vec();
            (generation, doc)
        };
        let last = self.kind.last_applied();
        if generation == last.load(Ordering::Relaxed) {
            return;
        }
        if generation != 0 && self.kind == Kind::Backends && may_defer {
            // The copy taken under the lock is the one a large change compiles from.
            match crate::core().apply_backends_or_start_owned(doc, INLINE_APPLY_BYTES) {
                Ok(Progress::Started) => {
                    self.kind.pending().store(generation, Ordering::Relaxed);
                    return;
                }
                // Only after a collect that found it running with may_defer false,
                // which does not get here.
                Ok(Progress::Busy) => return,
                Ok(Progress::Applied(report)) => log_applied(log, generation, &report, ""),
                Err(err) => self.log_rejected(log, generation, &err),
            }
        } else if generation != 0 {
            let applied = match self.kind {
                Kind::Backends => {
                    crate::core().apply_backends(&doc).map(|report| log_applied(log, generation, &report, ""))
                }
                // Accepted by the worker that took the POST: the certificates are
                // parsed at their first handshake here, not all at once.
                Kind::Servers => crate::core().apply_accepted_servers(&doc).map(|report| {
                    ngx_log_debug!(
                        log,
                        "ingress_lb: applied servers generation {} from the shared zone: \
                         {} hostnames, {} certificates ({} new, parsed at first use; {} reused)",
                        generation,
                        report.hostnames,
                        report.certificates,
                        report.deferred,
                        report.reused
                    );
                }),
            };
            if let Err(err) = applied {
                self.log_rejected(log, generation, &err);
            }
        }
        last.store(generation, Ordering::Relaxed);
    }

    /// Store a document (already applied by this process's core), bump the generation,
    /// and record that this process applied it.
    pub(crate) fn store(&self, doc: &[u8]) -> Result<u64, StoreError> {
        let cap = self.capacity();
        if doc.len() > cap {
            return Err(StoreError::TooLarge { size: doc.len(), cap });
        }
        let generation = {
            let _lock = self.lock();
            let s = self.hdr;
            // SAFETY: under the mutex we own data[..cap] and len; doc fits (checked above).
            unsafe {
                ptr::copy_nonoverlapping(doc.as_ptr(), (*s).data, doc.len());
                (*s).len = doc.len();
                (*s).generation.fetch_add(1, Ordering::Release) + 1
            }
        };
        self.kind.last_applied().store(generation, Ordering::Relaxed);
        Ok(generation)
    }

    /// Number of documents stored so far (0: none), read without the mutex.
    pub(crate) fn generation(&self) -> u64 {
        self.shared().generation.load(Ordering::Acquire)
    }

    /// The generation and a copy of the stored document (None before the first),
    /// taken together under the mutex.
    pub(crate) fn snapshot(&self) -> (u64, Option<Vec<u8>>) {
        let _lock = self.lock();
        let s = self.shared();
        let generation = s.generation.load(Ordering::Relaxed);
        // SAFETY: under the mutex, data[..len] is the stored document.
        (generation, (generation != 0).then(|| unsafe { core::slice::from_raw_parts(s.data, s.len) }.to_vec()))
    }

    /// Run `f` on the stored document (None when nothing was stored yet), under the mutex.
    pub(crate) fn with_document<R>(&self, f: impl FnOnce(Option<&[u8]>) -> R) -> R {
        let _lock = self.lock();
        let s = self.shared();
        if s.generation.load(Ordering::Relaxed) == 0 {
            return f(None);
        }
        // SAFETY: under the mutex, data[..len] is the stored document.
        f(Some(unsafe { core::slice::from_raw_parts(s.data, s.len) }))
    }
}

fn log_applied(log: *mut ngx_log_t, generation: u64, report: &ingress_lb::ApplyReport, how: &str) {
    ngx_log_debug!(
        log,
        "ingress_lb: applied configuration generation {} from the shared zone{}: {} backends ({} rebuilt, {} reused)",
        generation,
        how,
        report.backends,
        report.rebuilt,
        report.reused
    );
}

/// Make the next [`Zone::sync`] of this process re-apply the document of `kind`.
pub(crate) fn force_resync(kind: Kind) {
    kind.last_applied().store(u64::MAX, Ordering::Relaxed);
}

/// Log helper used when a zone is missing at run time (should not happen: postconfiguration
/// adds both whenever a directive of the module is used).
pub(crate) fn log_no_zone(log: *mut ngx_log_t, kind: Kind) {
    ngx_log_error!(NGX_LOG_ERR, log, "ingress_lb: shared zone \"{}\" is not available", kind.zone_name());
}
