//! `ingress_lb_configuration`: the controller-facing endpoint, after ingress-nginx's
//! `configuration.lua` (`/configuration/backends`).
//!
//! * `GET  …/backends` → 200 with the JSON in force (404 when none was posted yet).
//! * `POST …/backends` → validated and applied by the core, stored in the shared zone
//!   (every worker picks it up), 201. Invalid → 400 with the core's message, nothing
//!   changed. Too large for the zone → 413.
//! * other methods → 400 "Only POST and GET requests are allowed!"; other paths → 404.

use ngx::ffi::{
    ngx_http_discard_request_body, ngx_http_finalize_request, ngx_http_read_client_request_body, ngx_http_request_t,
    ngx_int_t, ngx_pnalloc, ngx_read_file, ngx_uint_t, NGX_HTTP_BAD_REQUEST, NGX_HTTP_CREATED, NGX_HTTP_GET,
    NGX_HTTP_INTERNAL_SERVER_ERROR, NGX_HTTP_NOT_FOUND, NGX_HTTP_OK, NGX_HTTP_POST, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
    NGX_HTTP_SPECIAL_RESPONSE, NGX_LOG_ERR, NGX_LOG_WARN,
};
use ngx::http::HttpModuleMainConf;
use ngx::ngx_log_error;

use crate::shared::{StoreError, Zone};
use crate::util::{guard, request_log, send_response};
use crate::Module;

const TEXT: &str = "text/plain";
const JSON: &str = "application/json";

/// Content handler of a location with `ingress_lb_configuration`.
pub(crate) extern "C" fn handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls content handlers with a valid request.
    let log = unsafe { request_log(r) };
    guard(log, "configuration handler", NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t, || {
        // SAFETY: r is valid for the duration of the handler.
        unsafe { handle(r) }
    })
}

fn zone_of(r: *mut ngx_http_request_t) -> Option<Zone> {
    // SAFETY: r is a valid request of an http{} configuration using this module.
    Module::main_conf(unsafe { &*r }).and_then(|m| m.zone())
}

/// True when the request path is `…/backends`.
fn is_backends_path(r: &ngx_http_request_t) -> bool {
    let uri = r.uri.as_bytes();
    uri == b"/backends" || uri.ends_with(b"/backends")
}

unsafe fn handle(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: r is valid (caller).
    let req = unsafe { &mut *r };
    let method = req.method as u32;

    if method != NGX_HTTP_GET && method != NGX_HTTP_POST {
        // SAFETY: r is valid.
        let rc = unsafe { ngx_http_discard_request_body(r) };
        if rc != ngx::ffi::NGX_OK as ngx_int_t {
            return rc;
        }
        // SAFETY: r is valid, header not sent.
        return unsafe {
            send_response(r, NGX_HTTP_BAD_REQUEST as ngx_uint_t, TEXT, b"Only POST and GET requests are allowed!")
        };
    }

    if !is_backends_path(req) {
        // SAFETY: r is valid.
        let rc = unsafe { ngx_http_discard_request_body(r) };
        if rc != ngx::ffi::NGX_OK as ngx_int_t {
            return rc;
        }
        // SAFETY: r is valid, header not sent.
        return unsafe { send_response(r, NGX_HTTP_NOT_FOUND as ngx_uint_t, TEXT, b"Not found!") };
    }

    let Some(zone) = zone_of(r) else {
        // SAFETY: r is valid.
        crate::shared::log_no_zone(unsafe { request_log(r) });
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    };

    if method == NGX_HTTP_GET {
        // SAFETY: r is valid.
        let rc = unsafe { ngx_http_discard_request_body(r) };
        if rc != ngx::ffi::NGX_OK as ngx_int_t {
            return rc;
        }
        // SAFETY: r is valid.
        zone.sync(unsafe { request_log(r) });
        // Copy the document into the request pool under the zone's lock, send it after.
        let pool = req.pool;
        let copy = zone.with_document(|doc| {
            doc.map(|doc| {
                // SAFETY: the request pool is valid; the result is null or doc.len() bytes.
                let p = unsafe { ngx_pnalloc(pool, doc.len().max(1)) } as *mut u8;
                if !p.is_null() {
                    // SAFETY: p has room for doc.len() bytes.
                    unsafe { core::ptr::copy_nonoverlapping(doc.as_ptr(), p, doc.len()) };
                }
                (p, doc.len())
            })
        });
        // SAFETY: r is valid, header not sent; p..p+len was filled above and lives as long
        // as the request.
        return unsafe {
            match copy {
                Some((p, _)) if p.is_null() => NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t,
                Some((p, len)) => {
                    send_response(r, NGX_HTTP_OK as ngx_uint_t, JSON, core::slice::from_raw_parts(p, len))
                }
                None => send_response(
                    r,
                    NGX_HTTP_NOT_FOUND as ngx_uint_t,
                    TEXT,
                    b"No backends configuration has been posted yet.",
                ),
            }
        };
    }

    // POST: refuse early what cannot fit, before reading it.
    let declared = req.headers_in.content_length_n;
    if declared > 0 && declared as u64 > zone.capacity() as u64 {
        // SAFETY: r is valid.
        let rc = unsafe { ngx_http_discard_request_body(r) };
        if rc != ngx::ffi::NGX_OK as ngx_int_t {
            return rc;
        }
        // SAFETY: r is valid, header not sent.
        return unsafe { too_large(r, declared as usize, zone.capacity()) };
    }

    // SAFETY: r is valid; body_handler finalizes the request once the body is read.
    let rc = unsafe { ngx_http_read_client_request_body(r, Some(body_handler)) };
    if rc >= NGX_HTTP_SPECIAL_RESPONSE as ngx_int_t {
        return rc;
    }
    ngx::ffi::NGX_DONE as ngx_int_t
}

unsafe fn too_large(r: *mut ngx_http_request_t, size: usize, cap: usize) -> ngx_int_t {
    let msg = format!(
        "configuration is {size} bytes, larger than the {cap} bytes the shared zone can hold \
         (raise ingress_lb_zone)"
    );
    // SAFETY: r is valid.
    ngx_log_error!(NGX_LOG_WARN, unsafe { request_log(r) }, "ingress_lb: rejected backends configuration: {}", msg);
    // SAFETY: r is valid, header not sent.
    unsafe { send_response(r, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE as ngx_uint_t, TEXT, msg.as_bytes()) }
}

/// Called by nginx once the whole request body was read.
extern "C" fn body_handler(r: *mut ngx_http_request_t) {
    // SAFETY: nginx calls the post handler with a valid request.
    let log = unsafe { request_log(r) };
    let rc = guard(log, "configuration body handler", NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t, || {
        // SAFETY: r is valid.
        unsafe { handle_body(r) }
    });
    // SAFETY: r is valid; this balances the reference ngx_http_read_client_request_body took.
    unsafe { ngx_http_finalize_request(r, rc) };
}

/// The request body, whether nginx kept it in memory buffers or spilled it to a
/// temporary file. `Err(Some(size))` when it is larger than `limit` (nothing copied),
/// `Err(None)` on a read error (logged by nginx).
unsafe fn read_body(r: *mut ngx_http_request_t, limit: usize) -> Result<Vec<u8>, Option<usize>> {
    // SAFETY: r is valid.
    let rb = unsafe { (*r).request_body };
    if rb.is_null() {
        return Ok(Vec::new());
    }
    // Iterate over the body chain: (buffer, in_file, length).
    let links = || {
        // SAFETY: rb is the request's body structure.
        let mut cl = unsafe { (*rb).bufs };
        core::iter::from_fn(move || {
            if cl.is_null() {
                return None;
            }
            // SAFETY: cl is a link of the body chain, with a valid buffer.
            let b = unsafe { &*(*cl).buf };
            // SAFETY: as above.
            cl = unsafe { (*cl).next };
            let len = if b.in_file() != 0 {
                (b.file_last - b.file_pos).max(0) as usize
            } else if !b.pos.is_null() && b.last > b.pos {
                // SAFETY: pos and last point into the same buffer.
                unsafe { b.last.offset_from(b.pos) as usize }
            } else {
                0
            };
            Some((b, len))
        })
    };

    let total: usize = links().map(|(_, len)| len).sum();
    if total > limit {
        return Err(Some(total));
    }
    let mut out = Vec::with_capacity(total);
    for (b, len) in links() {
        if len == 0 {
            continue;
        }
        let start = out.len();
        if b.in_file() != 0 {
            out.resize(start + len, 0);
            // SAFETY: b.file is the body's temp file; the destination has len bytes.
            let n = unsafe { ngx_read_file(b.file, out.as_mut_ptr().add(start), len, b.file_pos) };
            if n < 0 || n as usize != len {
                return Err(None);
            }
        } else {
            // SAFETY: pos..pos+len is the buffer's data in memory.
            out.extend_from_slice(unsafe { core::slice::from_raw_parts(b.pos, len) });
        }
    }
    Ok(out)
}

unsafe fn handle_body(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: r is valid.
    let log = unsafe { request_log(r) };
    // SAFETY: r is valid.
    if unsafe { (*r).connection.as_ref() }.is_some_and(|c| c.error() != 0) {
        return ngx::ffi::NGX_HTTP_CLIENT_CLOSED_REQUEST as ngx_int_t;
    }
    let Some(zone) = zone_of(r) else {
        crate::shared::log_no_zone(log);
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    };
    let cap = zone.capacity();
    // SAFETY: r is valid and its body was read completely.
    let body = match unsafe { read_body(r, cap) } {
        Ok(b) => b,
        Err(None) => {
            ngx_log_error!(NGX_LOG_ERR, log, "ingress_lb: could not read the request body");
            return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
        }
        // SAFETY: r is valid, header not sent.
        Err(Some(size)) => return unsafe { too_large(r, size, cap) },
    };

    // Bring this worker up to date first, so the core builds on the configuration in force.
    zone.sync(log);

    let report = match crate::core().apply_backends(&body) {
        Ok(report) => report,
        Err(err) => {
            let status = match err {
                ingress_lb::ConfigError::TooLarge { .. } => NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                _ => NGX_HTTP_BAD_REQUEST,
            };
            let msg = err.to_string();
            ngx_log_error!(NGX_LOG_WARN, log, "ingress_lb: rejected backends configuration: {}", msg);
            // SAFETY: r is valid, header not sent.
            return unsafe { send_response(r, status as ngx_uint_t, TEXT, msg.as_bytes()) };
        }
    };

    let generation = match zone.store(&body) {
        Ok(g) => g,
        Err(StoreError::TooLarge { size, cap }) => {
            // Checked above; kept for completeness. The local core already applied the
            // document: restore the zone's one so this worker agrees with the others.
            crate::shared::force_resync();
            zone.sync(log);
            // SAFETY: r is valid, header not sent.
            return unsafe { too_large(r, size, cap) };
        }
    };

    // The warnings of the configuration now in force, and of the shared ewma
    // statistics (a full table), as the core reports them.
    for w in crate::core().warnings().lines() {
        ngx_log_error!(NGX_LOG_WARN, log, "ingress_lb: backends configuration: {}", w);
    }
    ngx::ngx_log_debug!(
        log,
        "ingress_lb: backends configuration generation {} stored ({} bytes, {} backends, {} rebuilt, {} reused)",
        generation,
        body.len(),
        report.backends,
        report.rebuilt,
        report.reused
    );
    // SAFETY: r is valid, header not sent.
    unsafe { send_response(r, NGX_HTTP_CREATED as ngx_uint_t, "", b"") }
}
