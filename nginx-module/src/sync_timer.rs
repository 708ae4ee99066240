//! A timer in every worker process that looks at the backends zone every
//! [`SYNC_INTERVAL_MS`]: a worker that gets no request still learns of a new
//! configuration, and a large one starts compiling off its event loop (see
//! [`crate::shared::Zone::sync`]) before the requests that need it arrive. Requests
//! still check the zone themselves (one atomic load), so a small change is in force
//! in every worker from the first request after the POST.

use core::mem::MaybeUninit;
use core::ptr;

use ngx::ffi::{ngx_add_timer, ngx_event_t, ngx_exiting, ngx_log_t, ngx_msec_t, ngx_quit, ngx_terminate};

use crate::shared::Zone;

/// How often each worker looks at the zone.
pub(crate) const SYNC_INTERVAL_MS: ngx_msec_t = 100;

/// The timer event and the zone it watches: used only by this worker's event-loop
/// thread (set in `init_process`, read by the handler it arms).
static mut EVENT: MaybeUninit<ngx_event_t> = MaybeUninit::zeroed();
static mut ZONE: Option<Zone> = None;

/// Arm the timer for `zone` (in `init_process`, once per worker).
pub(crate) fn start(zone: Zone, log: *mut ngx_log_t) {
    // SAFETY: init_process runs once, on the worker's only event-loop thread, before
    // any event; nothing else touches EVENT or ZONE. An all-zero ngx_event_t is what
    // nginx itself starts from (ngx_pcalloc) before setting handler, log and data.
    unsafe {
        ZONE = Some(zone);
        let ev = ptr::addr_of_mut!(EVENT).cast::<ngx_event_t>();
        (*ev).handler = Some(on_timer);
        (*ev).log = log;
        (*ev).data = ptr::null_mut();
        // A graceful shutdown does not wait for this timer.
        (*ev).set_cancelable(1);
        ngx_add_timer(ev, SYNC_INTERVAL_MS);
    }
}

extern "C" fn on_timer(ev: *mut ngx_event_t) {
    // SAFETY: nginx passes the event armed in `start`, whose log it set.
    let log = unsafe { (*ev).log };
    crate::util::guard(log, "sync timer", (), || {
        // SAFETY: read on the event-loop thread only (see ZONE).
        if let Some(zone) = unsafe { *ptr::addr_of!(ZONE) } {
            zone.sync(log);
        }
        // SAFETY: nginx's process flags, written by its signal handlers and read by
        // its own event loop the same way; ev is the armed event.
        unsafe {
            if ngx_exiting == 0 && ngx_quit == 0 && ngx_terminate == 0 {
                ngx_add_timer(ev, SYNC_INTERVAL_MS);
            }
        }
    })
}
