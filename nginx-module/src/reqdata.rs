//! Request data for picks that need more than the backend name: what the core's
//! [`ingress_lb::Request`] asks for, fetched as ingress-nginx's Lua reads it
//! (`ngx.var.*`), from the request's own memory or its pool. Nothing here decides.

use core::ptr;

use ngx::ffi::{ngx_http_request_t, ngx_pnalloc, ngx_str_t};

use crate::hashkey;

/// An empty string.
pub(crate) const EMPTY: ngx_str_t = ngx_str_t { data: ptr::null_mut(), len: 0 };

/// Borrow an `ngx_str_t` as bytes (empty for a null pointer).
#[inline]
pub(crate) fn bytes<'a>(s: &ngx_str_t) -> &'a [u8] {
    if s.data.is_null() || s.len == 0 {
        return &[];
    }
    // SAFETY: a non-null ngx_str_t built by this module points to `len` bytes of request
    // (or configuration) memory that outlive the request's use of it.
    unsafe { core::slice::from_raw_parts(s.data, s.len) }
}

#[inline]
fn str_of(b: &[u8]) -> ngx_str_t {
    ngx_str_t { data: b.as_ptr() as *mut u8, len: b.len() }
}

/// The request's `Cookie` header as received; several headers (HTTP/1.x clients may
/// send more than one) are joined with `"; "` into the pool, as `$http_cookie` does.
/// `None` when the pool is exhausted.
///
/// # Safety
/// `r` must be a valid request.
pub(crate) unsafe fn cookie(r: *mut ngx_http_request_t) -> Option<ngx_str_t> {
    // SAFETY: r is valid.
    let req = unsafe { &*r };

    #[cfg(not(ngx_cookie_list))]
    let (first, count) = {
        let a = &req.headers_in.cookies;
        if a.nelts == 0 || a.elts.is_null() {
            return Some(EMPTY);
        }
        // SAFETY: headers_in.cookies is an array of `nelts` pointers to header elements.
        let elts = unsafe { core::slice::from_raw_parts(a.elts as *const *mut ngx::ffi::ngx_table_elt_t, a.nelts) };
        (elts, a.nelts)
    };
    #[cfg(not(ngx_cookie_list))]
    let headers = || first.iter().map(|&h| h as *const ngx::ffi::ngx_table_elt_t);

    #[cfg(ngx_cookie_list)]
    let (first, count) = {
        let head = req.headers_in.cookie as *const ngx::ffi::ngx_table_elt_t;
        if head.is_null() {
            return Some(EMPTY);
        }
        let mut n = 0;
        let mut h = head;
        while !h.is_null() {
            n += 1;
            // SAFETY: the Cookie headers form a NULL-terminated list of valid elements.
            h = unsafe { (*h).next };
        }
        (head, n)
    };
    #[cfg(ngx_cookie_list)]
    let headers = || {
        core::iter::successors(Some(first), |&h| {
            // SAFETY: as above.
            let next = unsafe { (*h).next } as *const ngx::ffi::ngx_table_elt_t;
            (!next.is_null()).then_some(next)
        })
    };

    if count == 1 {
        // SAFETY: the element is valid for the request; no copy needed.
        return Some(unsafe { (*headers().next()?).value });
    }
    // SAFETY: every element is a valid header of the request.
    let total: usize = headers().map(|h| unsafe { (*h).value.len }).sum::<usize>() + 2 * (count - 1);
    // SAFETY: the request pool is valid.
    let data = unsafe { ngx_pnalloc(req.pool, total) } as *mut u8;
    if data.is_null() {
        return None;
    }
    let mut at = 0;
    for (i, h) in headers().enumerate() {
        if i > 0 {
            // SAFETY: data has room for `total` bytes, separators included.
            unsafe { ptr::copy_nonoverlapping(b"; ".as_ptr(), data.add(at), 2) };
            at += 2;
        }
        // SAFETY: as above; the header value is valid request memory.
        let v = bytes(unsafe { &(*h).value });
        // SAFETY: as above.
        unsafe { ptr::copy_nonoverlapping(v.as_ptr(), data.add(at), v.len()) };
        at += v.len();
    }
    Some(ngx_str_t { data, len: at })
}

/// The value of a variable by name (lowercase), empty when nginx does not know it or
/// it is not found; `None` when the pool is exhausted.
///
/// # Safety
/// `r` must be a valid request.
pub(crate) unsafe fn variable(r: *mut ngx_http_request_t, name: &[u8]) -> Option<Option<ngx_str_t>> {
    // SAFETY: r is valid.
    unsafe { hashkey::variable_lookup(r, name) }.map(|v| v.map(str_of))
}

/// `$host`, or `"_"` in a server whose `$server_name` is `"_"`: the key stock
/// ingress-nginx looks the cookie's `locations` up with (`should_set_cookie`).
///
/// # Safety
/// `r` must be a valid request.
pub(crate) unsafe fn host(r: *mut ngx_http_request_t) -> Option<ngx_str_t> {
    // SAFETY: r is valid.
    let server_name = unsafe { variable(r, b"server_name") }?;
    if server_name.as_ref().map(bytes) == Some(b"_") {
        return Some(str_of(b"_"));
    }
    // SAFETY: r is valid.
    Some(unsafe { variable(r, b"host") }?.unwrap_or(EMPTY))
}

/// `$location_path` (set per location by ingress-nginx's template) when the variable
/// exists and is found; else empty (the core then uses "/").
///
/// # Safety
/// `r` must be a valid request.
pub(crate) unsafe fn location_path(r: *mut ngx_http_request_t) -> Option<ngx_str_t> {
    // SAFETY: r is valid.
    if let Some(v) = unsafe { variable(r, b"location_path") }? {
        return Some(v);
    }
    // Not defined in this configuration: empty, which the core reads as "/" (as the
    // Lua front end does).
    Some(EMPTY)
}

/// The `User-Agent` header (`$http_user_agent`: the first one), or empty.
///
/// # Safety
/// `r` must be a valid request.
pub(crate) unsafe fn user_agent(r: *mut ngx_http_request_t) -> ngx_str_t {
    // SAFETY: r is valid; user_agent is null or a valid header element.
    unsafe {
        let h = (*r).headers_in.user_agent;
        if h.is_null() {
            EMPTY
        } else {
            (*h).value
        }
    }
}

/// Whether the request came over TLS (`$https` is `"on"`).
///
/// # Safety
/// `r` must be a valid request.
pub(crate) unsafe fn https(r: *mut ngx_http_request_t) -> bool {
    #[cfg(ngx_ssl)]
    {
        // SAFETY: r and its connection are valid.
        unsafe { !(*(*r).connection).ssl.is_null() }
    }
    #[cfg(not(ngx_ssl))]
    {
        let _ = r;
        false
    }
}

/// `ngx.now()`: nginx's cached time, seconds since the Unix epoch with milliseconds.
pub(crate) fn now() -> f64 {
    // SAFETY: ngx_cached_time always points to a valid slot of nginx's time cache
    // (updated by the same thread, between events); read it once, volatile as nginx does.
    unsafe {
        let tp = ptr::read_volatile(ptr::addr_of!(ngx::ffi::ngx_cached_time));
        if tp.is_null() {
            return 0.0;
        }
        (*tp).sec as f64 + (*tp).msec as f64 / 1000.0
    }
}
