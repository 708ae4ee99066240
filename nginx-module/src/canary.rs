//! Canary routing in the module: for a backend with `alternativeBackends`, the core
//! decides once per request (in `init_peer`, so every retry stays in the chosen
//! backend) whether an alternative serves it, reading the request's headers and
//! `Cookie` header in place ([`RequestHeaders`]); nothing is decided here.
//!
//! `$proxy_alternative_upstream_name`: ingress-nginx's template declares it per
//! location (`set $proxy_alternative_upstream_name "";`) and its balancer assigns the
//! chosen alternative's name to it. The module defines it (changeable, so that `set`
//! line still works) and stores the name in the request's value when an alternative
//! is chosen; otherwise it keeps what `set` gave it (or is "not found": empty).

use ngx::ffi::{ngx_conf_t, ngx_http_request_t, ngx_int_t, ngx_list_part_t, ngx_table_elt_t};

use crate::reqdata::bytes;

/// Name of the variable naming the chosen alternative backend.
pub(crate) const ALTERNATIVE_VARIABLE: &str = "proxy_alternative_upstream_name";

/// Define `$proxy_alternative_upstream_name` (preconfiguration).
///
/// # Safety
/// `cf` must be a valid configuration context.
pub(crate) unsafe fn add_variables(cf: *mut ngx_conf_t) -> ngx_int_t {
    // SAFETY: per the contract.
    unsafe { crate::util::add_changeable_variable(cf, ALTERNATIVE_VARIABLE) }
}

/// The request's headers, as the core's canary rules read them: the first header
/// whose name matches (case-insensitively, `-` and `_` alike), as nginx's
/// `$http_<name>` gives it. Reads the request's header list in place.
pub(crate) struct RequestHeaders(pub(crate) *mut ngx_http_request_t);

impl ingress_lb::Headers for RequestHeaders {
    fn get(&self, name: &[u8]) -> Option<&[u8]> {
        // SAFETY: built with the valid request of the running handler; its header list
        // is a chain of parts with `nelts` elements each, alive for the request.
        let mut part: *const ngx_list_part_t = unsafe { &(*self.0).headers_in.headers.part };
        while !part.is_null() {
            // SAFETY: part is a valid list part (see above).
            let p = unsafe { &*part };
            if !p.elts.is_null() {
                // SAFETY: elts holds nelts header elements.
                let elts = unsafe { core::slice::from_raw_parts(p.elts as *const ngx_table_elt_t, p.nelts) };
                for h in elts {
                    if h.hash != 0 && ingress_lb::header_name_is(bytes(&h.key), name) {
                        return Some(bytes(&h.value));
                    }
                }
            }
            part = p.next;
        }
        None
    }
}
