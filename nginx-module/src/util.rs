//! Panic containment, responses and small request helpers.

use core::cell::RefCell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

use ngx::ffi::{
    ngx_buf_t, ngx_chain_t, ngx_create_temp_buf, ngx_http_get_indexed_variable, ngx_http_output_filter,
    ngx_http_request_t, ngx_http_send_header, ngx_int_t, ngx_log_t, ngx_str_t, ngx_uint_t, NGX_LOG_ALERT,
};
use ngx::ngx_log_error;

thread_local! {
    /// Where and why the last panic on this thread happened, for the `[alert]` line.
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

static HOOK: Once = Once::new();

/// Route panic messages to the nginx error log (through [`guard`]) instead of stderr.
pub(crate) fn install_panic_hook() {
    HOOK.call_once(|| {
        panic::set_hook(Box::new(|info| {
            let msg = if let Some(s) = info.payload().downcast_ref::<&str>() {
                (*s).to_string()
            } else if let Some(s) = info.payload().downcast_ref::<String>() {
                s.clone()
            } else {
                "unknown panic payload".to_string()
            };
            let text = match info.location() {
                Some(l) => format!("{msg} at {}:{}", l.file(), l.line()),
                None => msg,
            };
            let _ = LAST_PANIC.try_with(|p| p.try_borrow_mut().map(|mut p| *p = Some(text)));
        }));
    });
}

/// Run an nginx callback body, turning a panic into `on_panic` and an `[alert]` line:
/// nothing unwinds across the FFI boundary.
#[inline]
pub(crate) fn guard<T>(log: *mut ngx_log_t, what: &str, on_panic: T, f: impl FnOnce() -> T) -> T {
    match panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(payload) => {
            let text = LAST_PANIC
                .try_with(|p| p.try_borrow_mut().ok().and_then(|mut p| p.take()))
                .ok()
                .flatten()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            // Dropping the payload could itself panic (a payload with a panicking Drop).
            let _ = panic::catch_unwind(AssertUnwindSafe(move || drop(payload)));
            if !log.is_null() {
                ngx_log_error!(NGX_LOG_ALERT, log, "ingress_lb: panic in {}: {}", what, text);
            }
            on_panic
        }
    }
}

/// The request's connection log.
///
/// # Safety
/// `r` must be a valid request.
#[inline]
pub(crate) unsafe fn request_log(r: *mut ngx_http_request_t) -> *mut ngx_log_t {
    // SAFETY: a valid request has a valid connection with a log.
    unsafe { (*(*r).connection).log }
}

/// Value of an indexed variable for this request (None when not found).
///
/// # Safety
/// `r` must be a valid request and `index` a variable index of its configuration.
#[inline]
pub(crate) unsafe fn variable<'a>(r: *mut ngx_http_request_t, index: ngx_uint_t) -> Option<&'a [u8]> {
    // SAFETY: per the contract.
    let v = unsafe { ngx_http_get_indexed_variable(r, index) };
    if v.is_null() {
        return None;
    }
    // SAFETY: nginx returned a valid value; its data lives in the request pool.
    let v = unsafe { &*v };
    if v.not_found() != 0 || v.valid() == 0 {
        return None;
    }
    Some(v.as_bytes())
}

/// Send a complete response with a small body. Returns what the content phase should
/// return / finalize with.
///
/// # Safety
/// `r` must be a valid request whose header was not sent yet.
pub(crate) unsafe fn send_response(
    r: *mut ngx_http_request_t,
    status: ngx_uint_t,
    content_type: &'static str,
    body: &[u8],
) -> ngx_int_t {
    // SAFETY: r is valid (contract).
    let req = unsafe { &mut *r };
    req.headers_out.status = status;
    req.headers_out.content_length_n = body.len() as _;
    if !content_type.is_empty() {
        req.headers_out.content_type = ngx_str_t { data: content_type.as_ptr() as *mut u8, len: content_type.len() };
        req.headers_out.content_type_len = content_type.len();
        req.headers_out.content_type_lowcase = core::ptr::null_mut();
    }
    if body.is_empty() {
        req.set_header_only(1);
    }
    // SAFETY: r is valid.
    let rc = unsafe { ngx_http_send_header(r) };
    if rc == ngx::ffi::NGX_ERROR as ngx_int_t || rc > ngx::ffi::NGX_OK as ngx_int_t || req.header_only() != 0 {
        return rc;
    }
    // SAFETY: the request pool is valid; ngx_create_temp_buf returns null or a buffer of body.len() bytes.
    let b: *mut ngx_buf_t = unsafe { ngx_create_temp_buf(req.pool, body.len()) };
    if b.is_null() {
        return ngx::ffi::NGX_ERROR as ngx_int_t;
    }
    // SAFETY: b is a fresh temp buffer with room for body.len() bytes.
    unsafe {
        core::ptr::copy_nonoverlapping(body.as_ptr(), (*b).pos, body.len());
        (*b).last = (*b).pos.add(body.len());
        (*b).set_last_buf(if r == req.main { 1 } else { 0 });
        (*b).set_last_in_chain(1);
    }
    let mut out = ngx_chain_t { buf: b, next: core::ptr::null_mut() };
    // SAFETY: r is valid and `out` outlives the call (the filter copies what it keeps).
    unsafe { ngx_http_output_filter(r, &mut out) }
}

/// Define a variable that `set` may assign (preconfiguration): ingress-nginx's
/// template declares the variables its balancer writes with `set $name "";`. Until
/// the module or a `set` stores a value, it is "not found" (empty).
///
/// # Safety
/// `cf` must be a valid configuration context.
pub(crate) unsafe fn add_changeable_variable(cf: *mut ngx::ffi::ngx_conf_t, name: &'static str) -> ngx_int_t {
    let mut name = ngx_str_t { data: name.as_ptr() as *mut u8, len: name.len() };
    // SAFETY: cf is valid; nginx copies the name.
    let v = unsafe { ngx::ffi::ngx_http_add_variable(cf, &mut name, ngx::ffi::NGX_HTTP_VAR_CHANGEABLE as ngx_uint_t) };
    if v.is_null() {
        return ngx::ffi::NGX_ERROR as ngx_int_t;
    }
    // SAFETY: v is the variable nginx just added.
    unsafe { (*v).get_handler = Some(not_found_variable) };
    ngx::ffi::NGX_OK as ngx_int_t
}

/// Get handler of a variable before any value was stored: not found.
unsafe extern "C" fn not_found_variable(
    _r: *mut ngx_http_request_t,
    v: *mut ngx::ffi::ngx_http_variable_value_t,
    _data: usize,
) -> ngx_int_t {
    // SAFETY: nginx passes the request's value slot to fill.
    unsafe {
        (*v).set_len(0);
        (*v).set_valid(0);
        (*v).set_no_cacheable(0);
        (*v).set_not_found(1);
        (*v).data = core::ptr::null_mut();
    }
    ngx::ffi::NGX_OK as ngx_int_t
}

/// Store a copy of `value` (in the request pool) as the request's value of the
/// indexed variable `index`, as `ngx.var.<name> = value` does. Returns false when the
/// pool is exhausted.
///
/// # Safety
/// `r` must be a valid request and `index` a variable index of its configuration.
pub(crate) unsafe fn store_variable(r: *mut ngx_http_request_t, index: usize, value: &[u8]) -> bool {
    // SAFETY: r is valid.
    let data = unsafe { ngx::ffi::ngx_pnalloc((*r).pool, value.len().max(1)) } as *mut u8;
    if data.is_null() {
        return false;
    }
    // SAFETY: data has room for value.len() bytes; index is within r->variables
    // (indexed at configuration time, so every request's array has it).
    unsafe {
        core::ptr::copy_nonoverlapping(value.as_ptr(), data, value.len());
        let v = &mut *(*r).variables.add(index);
        v.set_len(value.len() as u32);
        v.set_valid(1);
        v.set_no_cacheable(0);
        v.set_not_found(0);
        v.set_escape(0);
        v.data = data;
    }
    true
}
