//! `ingress_lb_route`: ingress-nginx's `balancer.rewrite()` check. A request whose
//! backend is unknown, or has no endpoints, is answered 503 before it reaches the
//! upstream (which could only produce 500/502).

use ngx::ffi::{ngx_http_request_t, ngx_int_t, NGX_HTTP_INTERNAL_SERVER_ERROR, NGX_HTTP_SERVICE_UNAVAILABLE};
use ngx::http::{HttpModuleLocationConf, HttpModuleMainConf};
use ngx::ngx_log_debug;

use crate::util::{guard, request_log, variable};
use crate::Module;

/// PREACCESS phase handler (installed only when some location enables the check).
pub(crate) extern "C" fn handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: phase handlers are called with a valid request.
    let log = unsafe { request_log(r) };
    guard(log, "route handler", NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t, || {
        // SAFETY: r is valid for the duration of the handler.
        let req = unsafe { &*r };
        let Some(index) = Module::location_conf(req).and_then(|l| l.route_variable()) else {
            return ngx::ffi::NGX_DECLINED as ngx_int_t;
        };
        if let Some(zone) = Module::main_conf(req).and_then(|m| m.zone()) {
            zone.sync(log);
        }
        // SAFETY: r is valid and index a variable index of this configuration.
        let name = unsafe { variable(r, index) }.unwrap_or(&[]);
        match crate::core().check_backend(name) {
            Ok(()) => ngx::ffi::NGX_DECLINED as ngx_int_t,
            Err(err) => {
                ngx_log_debug!(log, "ingress_lb: 503 for backend \"{}\": {}", String::from_utf8_lossy(name), err);
                NGX_HTTP_SERVICE_UNAVAILABLE as ngx_int_t
            }
        }
    })
}
