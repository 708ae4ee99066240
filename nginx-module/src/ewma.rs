//! ewma support: the statistics zone every worker shares, the timings of each request's
//! attempts fed to the core after the response (log phase), and
//! `$balancer_ewma_score`.
//!
//! * Zone `ingress_lb_ewma` (`ingress_lb_ewma_zone SIZE`, default 1m): created by the
//!   master; its init callback (master, single process: no concurrency) gives one slab
//!   block of every free page to [`SharedStats::in_region`], which lays out an empty
//!   table. Each worker attaches to it at start ([`init_process`]) and hands it to its
//!   core ([`ingress_lb::Core::use_stats`]), so all workers read and update the same
//!   statistics. A reload with the same size keeps the zone, statistics included.
//! * Timings: a LOG phase handler reads `$upstream_addr`, `$upstream_status`,
//!   `$upstream_connect_time` and `$upstream_response_time` as they are and passes them
//!   to [`ingress_lb::Core::observe`], as the Lua front end does in `balancer.log()`
//!   (so a request's timings count the same in both). Only for requests whose backend
//!   is ewma. Main requests only: nginx runs the log phase of a subrequest only with
//!   `log_subrequest on`.
//! * `$balancer_ewma_score`: ingress-nginx's template declares it per location
//!   (`set $balancer_ewma_score -1;`) and its ewma balancer assigns the picked
//!   endpoint's score to it. The module defines it (changeable, so that `set` line
//!   still works) and, on each pick for an ewma backend, stores the score in the
//!   request's value, formatted as Lua prints a number (`%.14g`). Without a pick or a
//!   `set`, the variable is "not found" (empty).

use core::ffi::c_void;

use ingress_lb::SharedStats;
use ngx::ffi::{
    ngx_conf_t, ngx_http_get_flushed_variable, ngx_http_request_t, ngx_int_t, ngx_log_t, ngx_shm_zone_t,
    ngx_slab_alloc, ngx_slab_pool_t, ngx_uint_t, NGX_LOG_EMERG, NGX_LOG_ERR,
};
use ngx::http::HttpModuleMainConf;
use ngx::{ngx_log_debug, ngx_log_error};

use crate::balancer::PeerData;
use crate::util::{guard, request_log};
use crate::Module;

/// Name of the statistics zone.
pub(crate) const ZONE_NAME: &str = "ingress_lb_ewma";

/// Default size of the statistics zone: 16384 endpoints.
pub(crate) const DEFAULT_ZONE_SIZE: usize = 1024 * 1024;

/// Name of the score variable.
pub(crate) const SCORE_VARIABLE: &str = "balancer_ewma_score";

const MAGIC: u64 = u64::from_le_bytes(*b"ILBEWMAZ");

/// Header of the statistics zone (slab allocation), pointing at the region.
#[repr(C)]
struct StatsZone {
    magic: u64,
    region: *mut u8,
    len: usize,
}

/// Add the statistics zone to the configuration being read.
///
/// # Safety
/// `cf` must be a valid configuration context.
pub(crate) unsafe fn add_zone(cf: *mut ngx_conf_t, size: usize) -> *mut ngx_shm_zone_t {
    // SAFETY: forwarded caller contract.
    unsafe { crate::shared::add_module_zone(cf, ZONE_NAME, size, zone_init) }
}

/// `shm_zone->init` (master or single process): lay out a new table, or keep the one
/// of the previous cycle (same size after a reload: statistics survive).
extern "C" fn zone_init(shm_zone: *mut ngx_shm_zone_t, data: *mut c_void) -> ngx_int_t {
    // SAFETY: nginx passes a valid zone whose slab pool it has initialised.
    let log = unsafe { (*shm_zone).shm.log };
    guard(log, "ewma zone init", ngx::ffi::NGX_ERROR as ngx_int_t, || {
        // SAFETY: as above; the data of a reused zone is the header we created earlier.
        unsafe { zone_init_inner(shm_zone, data) }
    })
}

unsafe fn zone_init_inner(shm_zone: *mut ngx_shm_zone_t, data: *mut c_void) -> ngx_int_t {
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
    let hdr = unsafe { ngx_slab_alloc(pool, core::mem::size_of::<StatsZone>()) } as *mut StatsZone;
    if hdr.is_null() {
        return ngx::ffi::NGX_ERROR as ngx_int_t;
    }
    // SAFETY: the pool is initialised and no worker uses it yet.
    let Some((region, len)) = (unsafe { crate::shared::alloc_largest(pool) }) else {
        ngx_log_error!(NGX_LOG_EMERG, zone.shm.log, "ingress_lb: zone \"{}\" is too small", ZONE_NAME);
        return ngx::ffi::NGX_ERROR as ngx_int_t;
    };
    // SAFETY: `region` is a page-aligned block of `len` bytes of the zone's shared
    // mapping, which stays mapped at this address in every process of this cycle (and
    // of later cycles that keep the zone); only the statistics use it. This runs in the
    // master (or the single process) before any worker exists: no concurrent
    // initialisation.
    match unsafe { SharedStats::in_region(region, len) } {
        Ok(stats) => {
            let c = stats.counters();
            ngx_log_debug!(
                zone.shm.log,
                "ingress_lb: ewma zone: {} bytes, {} slots, {} endpoints",
                len,
                c.capacity,
                c.limit
            );
        }
        Err(err) => {
            ngx_log_error!(NGX_LOG_EMERG, zone.shm.log, "ingress_lb: zone \"{}\": {}", ZONE_NAME, err);
            return ngx::ffi::NGX_ERROR as ngx_int_t;
        }
    }
    // SAFETY: hdr is a fresh, suitably aligned slab allocation of size_of::<StatsZone>().
    unsafe {
        hdr.write(StatsZone { magic: MAGIC, region, len });
        (*pool).data = hdr.cast();
    }
    zone.data = hdr.cast();
    ngx::ffi::NGX_OK as ngx_int_t
}

/// In a worker (or the single process) at start: make this process's core keep its
/// ewma statistics in the zone. On failure the core keeps process-local statistics
/// (each worker balances on what it saw itself) and an error is logged.
///
/// # Safety
/// `shm_zone` must be null or the zone [`add_zone`] added to the current cycle.
pub(crate) unsafe fn init_process(shm_zone: *mut ngx_shm_zone_t, log: *mut ngx_log_t) {
    if shm_zone.is_null() {
        return;
    }
    // SAFETY: per the contract; data is null until zone_init ran, then our header.
    let hdr = unsafe { (*shm_zone).data } as *const StatsZone;
    // SAFETY: a non-null data is a header written by zone_init.
    if hdr.is_null() || unsafe { (*hdr).magic } != MAGIC {
        ngx_log_error!(NGX_LOG_ERR, log, "ingress_lb: zone \"{}\" is not initialised", ZONE_NAME);
        return;
    }
    // SAFETY: the header is valid (magic checked) and immutable after zone_init.
    let (region, len) = unsafe { ((*hdr).region, (*hdr).len) };
    // SAFETY: the region was laid out by zone_init (in the master, before the workers
    // started) and stays mapped at this address for the cycle; attaching is safe from
    // any process. The zone outlives the core's use of it: the core lives as long as
    // this worker process, which ends before its cycle's zones are unmapped.
    match unsafe { SharedStats::in_region(region, len) } {
        Ok(stats) => crate::core().use_stats(stats),
        Err(err) => {
            ngx_log_error!(
                NGX_LOG_ERR,
                log,
                "ingress_lb: zone \"{}\" cannot be used ({}); ewma statistics stay per worker \
                 (change the zone's size, or restart nginx, to create a new zone)",
                ZONE_NAME,
                err
            );
        }
    }
}

/// Define `$balancer_ewma_score` (preconfiguration).
///
/// # Safety
/// `cf` must be a valid configuration context.
pub(crate) unsafe fn add_variables(cf: *mut ngx_conf_t) -> ngx_int_t {
    // SAFETY: per the contract.
    unsafe { crate::util::add_changeable_variable(cf, SCORE_VARIABLE) }
}

/// Store `score` as the request's `$balancer_ewma_score` (variable index `index`), as
/// `ngx.var.balancer_ewma_score = score` does. Returns false when the pool is exhausted.
///
/// # Safety
/// `r` must be a valid request and `index` the variable's index in its configuration.
pub(crate) unsafe fn set_score(r: *mut ngx_http_request_t, index: usize, score: f64) -> bool {
    let mut buf = [0u8; 32];
    // SAFETY: buf has room for 32 bytes including the NUL; the format takes one double.
    let n = unsafe { libc::snprintf(buf.as_mut_ptr().cast(), buf.len(), c"%.14g".as_ptr(), score) };
    let n = (n.max(0) as usize).min(buf.len() - 1);
    // SAFETY: per the contract.
    unsafe { crate::util::store_variable(r, index, &buf[..n]) }
}

/// LOG phase handler: report the attempts of a request to an ewma backend.
pub(crate) extern "C" fn log_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: phase handlers are called with a valid request.
    let log = unsafe { request_log(r) };
    guard(log, "log handler", ngx::ffi::NGX_OK as ngx_int_t, || {
        // SAFETY: r is valid for the duration of the handler.
        unsafe { observe(r) };
        ngx::ffi::NGX_OK as ngx_int_t
    })
}

unsafe fn observe(r: *mut ngx_http_request_t) {
    // SAFETY: r is valid (caller).
    let Some(pd) = (unsafe { PeerData::of_request(r) }) else { return };
    if !pd.needs_timing() {
        return;
    }
    // SAFETY: r is valid.
    let Some(mcf) = Module::main_conf(unsafe { &*r }) else { return };
    let value = |index: isize| -> &[u8] {
        if index < 0 {
            return &[];
        }
        // SAFETY: r is valid and `index` a variable index of its configuration.
        let v = unsafe { ngx_http_get_flushed_variable(r, index as ngx_uint_t) };
        if v.is_null() {
            return &[];
        }
        // SAFETY: a non-null value of the request; its data lives in request memory.
        let v = unsafe { &*v };
        if v.not_found() != 0 || v.data.is_null() {
            return &[];
        }
        // SAFETY: as above.
        unsafe { core::slice::from_raw_parts(v.data, v.len() as usize) }
    };
    let vars = &mcf.upstream_vars;
    crate::core().observe(
        pd.backend_name(),
        value(vars.addr),
        value(vars.status),
        value(vars.connect_time),
        value(vars.response_time),
        crate::reqdata::now(),
    );
}
