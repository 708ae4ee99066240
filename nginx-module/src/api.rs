//! `ingress_lb_configuration`: the controller-facing endpoint, after ingress-nginx's
//! `configuration.lua` (`/configuration/backends`, `/configuration/servers`,
//! `/configuration/certs`).
//!
//! * `GET  …/backends` → 200 with the JSON in force (404 when none was posted yet).
//! * `POST …/backends` → validated and applied by the core, stored in the shared zone
//!   (every worker picks it up), 201. Invalid → 400 with the core's message, nothing
//!   changed. Too large for the zone → 413. Other methods → 400 "Only POST and GET
//!   requests are allowed!".
//! * `POST …/servers` → the same for the servers document (certificates by hostname),
//!   stored in the servers zone; other methods → 400 "Only POST requests are allowed!".
//! * `GET  …/certs?hostname=h` → 200 with the PEM in force for exactly `h` (no
//!   wildcard or default fallback; `*.example.com` and `_` name those entries), 404
//!   "No key associated with this hostname." otherwise, 400 "Hostname must be
//!   specified." without `hostname`; other methods → 400 "Only GET requests are
//!   allowed!".
//! * other paths → 404 (400 for methods other than GET and POST).

use core::ffi::c_void;
use core::ptr;

use ngx::ffi::{
    ngx_add_timer, ngx_del_timer, ngx_event_t, ngx_http_run_posted_requests, ngx_msec_t, ngx_pool_cleanup_add,
};
use ngx::ffi::{
    ngx_chain_t, ngx_http_discard_request_body, ngx_http_finalize_request, ngx_http_read_client_request_body,
    ngx_http_request_body_t, ngx_http_request_t, ngx_int_t, ngx_pnalloc, ngx_read_file, ngx_uint_t,
    NGX_HTTP_BAD_REQUEST, NGX_HTTP_CREATED, NGX_HTTP_GET, NGX_HTTP_INTERNAL_SERVER_ERROR, NGX_HTTP_NOT_FOUND,
    NGX_HTTP_OK, NGX_HTTP_POST, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE, NGX_HTTP_SPECIAL_RESPONSE, NGX_LOG_ERR,
    NGX_LOG_WARN,
};
use ngx::http::HttpModuleMainConf;
use ngx::ngx_log_error;

use ingress_lb::{Collected, Progress};

use crate::shared::{Kind, StoreError, Zone, INLINE_APPLY_BYTES};
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

fn zone_of(r: *mut ngx_http_request_t, kind: Kind) -> Option<Zone> {
    // SAFETY: r is a valid request of an http{} configuration using this module.
    Module::main_conf(unsafe { &*r }).and_then(|m| m.zone_of(kind))
}

/// What the request path names.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    /// `…/backends` or `…/servers`: a document.
    Document(Kind),
    /// `…/certs`
    Certs,
    Unknown,
}

fn endpoint(r: &ngx_http_request_t) -> Endpoint {
    let uri = r.uri.as_bytes();
    if uri.ends_with(b"/backends") {
        Endpoint::Document(Kind::Backends)
    } else if uri.ends_with(b"/servers") {
        Endpoint::Document(Kind::Servers)
    } else if uri.ends_with(b"/certs") {
        Endpoint::Certs
    } else {
        Endpoint::Unknown
    }
}

/// Discard the request body and send a small response.
///
/// # Safety
/// `r` must be a valid request whose header was not sent yet.
unsafe fn reply(r: *mut ngx_http_request_t, status: u32, body: &[u8]) -> ngx_int_t {
    // SAFETY: r is valid.
    let rc = unsafe { ngx_http_discard_request_body(r) };
    if rc != ngx::ffi::NGX_OK as ngx_int_t {
        return rc;
    }
    // SAFETY: r is valid, header not sent.
    unsafe { send_response(r, status as ngx_uint_t, TEXT, body) }
}

/// Copy `data` into the request pool (so it outlives a lock or a borrow): null on
/// allocation failure.
fn pool_copy(r: *mut ngx_http_request_t, data: &[u8]) -> (*mut u8, usize) {
    // SAFETY: r is valid; the result is null or data.len() bytes of its pool.
    let p = unsafe { ngx_pnalloc((*r).pool, data.len().max(1)) } as *mut u8;
    if !p.is_null() {
        // SAFETY: p has room for data.len() bytes.
        unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), p, data.len()) };
    }
    (p, data.len())
}

/// The value of the query argument `name`, percent-decoded (`+` stays a `+`), as
/// `ngx.req.get_uri_args()` gives it to ingress-nginx's `configuration.lua`.
fn query_arg(args: &[u8], name: &[u8]) -> Option<Vec<u8>> {
    args.split(|&b| b == b'&').find_map(|pair| {
        let (key, value) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &b""[..]),
        };
        (key == name).then(|| percent_decode(value))
    })
}

fn percent_decode(s: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' && i + 2 < s.len() {
            if let (Some(h), Some(l)) = (hex(s[i + 1]), hex(s[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

/// `GET …/certs?hostname=h`, as ingress-nginx's `handle_certs`.
///
/// # Safety
/// `r` must be a valid request whose header was not sent yet.
unsafe fn handle_certs(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: r is valid.
    let req = unsafe { &*r };
    if req.method as u32 != NGX_HTTP_GET {
        // SAFETY: r is valid, header not sent.
        return unsafe { reply(r, NGX_HTTP_BAD_REQUEST, b"Only GET requests are allowed!") };
    }
    let Some(hostname) = query_arg(req.args.as_bytes(), b"hostname") else {
        // SAFETY: r is valid, header not sent.
        return unsafe { reply(r, NGX_HTTP_BAD_REQUEST, b"Hostname must be specified.") };
    };
    let Some(zone) = zone_of(r, Kind::Servers) else {
        // SAFETY: r is valid.
        crate::shared::log_no_zone(unsafe { request_log(r) }, Kind::Servers);
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    };
    // SAFETY: r is valid.
    zone.sync(unsafe { request_log(r) });
    let pem = crate::core().certificate_for_hostname_with(&hostname, |c| c.map(|c| pool_copy(r, c.pem)));
    // SAFETY: r is valid, header not sent; p..p+len lives in the request pool.
    unsafe {
        match pem {
            Some((p, _)) if p.is_null() => NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t,
            Some((p, len)) => {
                let rc = ngx_http_discard_request_body(r);
                if rc != ngx::ffi::NGX_OK as ngx_int_t {
                    return rc;
                }
                send_response(r, NGX_HTTP_OK as ngx_uint_t, TEXT, core::slice::from_raw_parts(p, len))
            }
            None => reply(r, NGX_HTTP_NOT_FOUND, b"No key associated with this hostname."),
        }
    }
}

unsafe fn handle(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: r is valid (caller).
    let req = unsafe { &mut *r };
    let method = req.method as u32;

    let kind = match endpoint(req) {
        // SAFETY (all three): r is valid, header not sent.
        Endpoint::Certs => return unsafe { handle_certs(r) },
        Endpoint::Document(Kind::Servers) if method != NGX_HTTP_POST => {
            return unsafe { reply(r, NGX_HTTP_BAD_REQUEST, b"Only POST requests are allowed!") };
        }
        Endpoint::Document(kind) if method == NGX_HTTP_GET || method == NGX_HTTP_POST => kind,
        Endpoint::Document(_) => {
            return unsafe { reply(r, NGX_HTTP_BAD_REQUEST, b"Only POST and GET requests are allowed!") };
        }
        Endpoint::Unknown if method != NGX_HTTP_GET && method != NGX_HTTP_POST => {
            return unsafe { reply(r, NGX_HTTP_BAD_REQUEST, b"Only POST and GET requests are allowed!") };
        }
        Endpoint::Unknown => return unsafe { reply(r, NGX_HTTP_NOT_FOUND, b"Not found!") },
    };

    let Some(zone) = zone_of(r, kind) else {
        // SAFETY: r is valid.
        crate::shared::log_no_zone(unsafe { request_log(r) }, kind);
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
        let copy = zone.with_document(|doc| doc.map(|doc| pool_copy(r, doc)));
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
        return unsafe { too_large(r, kind, declared as usize, zone.capacity()) };
    }

    // One buffer for the whole body (what `client_body_in_single_buffer on` asks for):
    // the part read with the header is copied into it, so the body handler borrows
    // the document instead of copying it. A body larger than client_body_buffer_size
    // still goes to a temporary file.
    // SAFETY: r is valid; body_handler finalizes the request once the body is read.
    let rc = unsafe {
        (*r).set_request_body_in_single_buf(1);
        ngx_http_read_client_request_body(r, Some(body_handler))
    };
    if rc >= NGX_HTTP_SPECIAL_RESPONSE as ngx_int_t {
        return rc;
    }
    ngx::ffi::NGX_DONE as ngx_int_t
}

unsafe fn too_large(r: *mut ngx_http_request_t, kind: Kind, size: usize, cap: usize) -> ngx_int_t {
    let msg = format!(
        "configuration is {size} bytes, larger than the {cap} bytes the shared zone can hold \
         (raise {})",
        kind.directive()
    );
    ngx_log_error!(
        NGX_LOG_WARN,
        // SAFETY: r is valid.
        unsafe { request_log(r) },
        "ingress_lb: rejected {} configuration: {}",
        kind.what(),
        msg
    );
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

/// A POSTed document: nginx's own body buffer when it holds the whole body (the
/// handler asks for a single buffer), else a copy (a body spilled to a temporary file).
/// Borrowing spares the worker a copy of a document of megabytes, and the page faults
/// of a second buffer that size, on every POST.
enum Body {
    /// `len` bytes at `ptr`, in a buffer of the request's pool: valid until the pool is
    /// destroyed, which runs the cleanup that drops the only long-lived holder
    /// ([`Waiting`]) first.
    Pool {
        ptr: *const u8,
        len: usize,
    },
    Copy(Vec<u8>),
}

impl Body {
    fn bytes(&self) -> &[u8] {
        match self {
            Body::Pool { len: 0, .. } => &[],
            // SAFETY: ptr..ptr+len is the body in the request pool's buffer, alive as
            // long as the request (see the variant), and nothing writes to it.
            Body::Pool { ptr, len } => unsafe { core::slice::from_raw_parts(*ptr, *len) },
            Body::Copy(v) => v,
        }
    }
}

/// The shape of a body chain held in memory, from one pass over its links with data
/// (any number of them: nginx adds one per read).
struct Layout {
    /// The first and the last link with data, and how many there are.
    first: *mut ngx_chain_t,
    last: *mut ngx_chain_t,
    n: usize,
    /// Where the second link's data starts (null with fewer than two).
    second_pos: *mut u8,
    /// The second link's data starts where the first one's ends.
    first_joins_second: bool,
    /// From the second link on, each one's data starts where the previous one's ends.
    consecutive_from_second: bool,
}

/// The [`Layout`] of a body chain, or `None` if one of its links is in a file.
///
/// # Safety
/// `rb` is a request's body structure whose chain is complete.
unsafe fn memory_layout(rb: *mut ngx_http_request_body_t) -> Option<Layout> {
    let mut l = Layout {
        first: ptr::null_mut(),
        last: ptr::null_mut(),
        n: 0,
        second_pos: ptr::null_mut(),
        first_joins_second: false,
        consecutive_from_second: true,
    };
    let mut prev_last = ptr::null_mut::<u8>();
    // SAFETY: rb is valid (caller); every link of its chain has a valid buffer.
    let mut cl = unsafe { (*rb).bufs };
    while !cl.is_null() {
        // SAFETY: as above.
        let b = unsafe { &*(*cl).buf };
        if b.in_file() != 0 {
            return None;
        }
        if !b.pos.is_null() && b.last > b.pos {
            match l.n {
                0 => l.first = cl,
                1 => {
                    l.second_pos = b.pos;
                    l.first_joins_second = b.pos == prev_last;
                }
                _ => l.consecutive_from_second &= b.pos == prev_last,
            }
            l.last = cl;
            l.n += 1;
            prev_last = b.last;
        }
        // SAFETY: as above.
        cl = unsafe { (*cl).next };
    }
    Some(l)
}

/// The whole body (`total` bytes) as one stretch of memory in the request's pool, when
/// it can be had without a copy of its size; `None` otherwise (or for an empty body).
///
/// nginx (1.21.2 and later) keeps a body read into memory as a chain of links, one
/// per read: the part that arrived with the request header (in the header buffer),
/// then consecutive stretches of one body buffer, sized for the whole body because
/// the handler asked for a single buffer. When the links are consecutive already,
/// their start is returned. When only the header's part is apart and the body buffer
/// has room for it, the rest is moved up by its length (one memmove over memory
/// written a moment ago, where a copy would fault in as many fresh pages), the
/// header's part is copied in front, and the chain becomes one link over the result,
/// so `$request_body` and any later reader see the same bytes.
///
/// # Safety
/// `rb` is the request's body structure, read completely, in no other use.
unsafe fn contiguous_body(rb: *mut ngx_http_request_body_t, total: usize) -> Option<*const u8> {
    // SAFETY: the caller's.
    let l = unsafe { memory_layout(rb) }?;
    if l.n == 0 {
        return None;
    }
    // SAFETY: l.first and l.last are live links of the chain with memory buffers.
    let (first, last) = unsafe { (&*(*l.first).buf, &*(*l.last).buf) };
    if l.consecutive_from_second && (l.n == 1 || l.first_joins_second) {
        return Some(first.pos);
    }
    // SAFETY: rb is valid.
    let body_buf = unsafe { (*rb).buf };
    if body_buf.is_null() || !l.consecutive_from_second {
        return None;
    }
    // SAFETY: rb->buf is the body buffer nginx allocated in the request's pool.
    let (start, end) = unsafe { ((*body_buf).start, (*body_buf).end) };
    // SAFETY: the first link's buffer is in memory: pos..last in one allocation.
    let head = unsafe { first.last.offset_from(first.pos) } as usize;
    let room = if end > start {
        // SAFETY: start..end is one allocation.
        unsafe { end.offset_from(start) as usize }
    } else {
        0
    };
    let in_body_buf = |p: *mut u8| p >= start && p < end;
    if l.second_pos != start || room < total || head >= total || in_body_buf(first.pos) {
        return None;
    }
    let (from, last_buf) = (first.pos, last.last_buf());
    // SAFETY: start..start+total lies in the body buffer (room >= total); the rest of
    // the body occupies start..start+total-head and moves to start+head (memmove
    // semantics: the ranges overlap); the header's part (head bytes at `from`, outside
    // the body buffer) is copied to start. Then the first link covers the whole body
    // and ends the chain; the other links are left to the pool.
    unsafe {
        ptr::copy(start, start.add(head), total - head);
        ptr::copy_nonoverlapping(from, start, head);
        let first = &mut *(*l.first).buf;
        first.start = start;
        first.pos = start;
        first.last = start.add(total);
        first.end = start.add(total);
        first.set_last_buf(last_buf);
        (*rb).bufs = l.first;
        (*l.first).next = ptr::null_mut();
    }
    Some(start)
}

/// The request body, whether nginx kept it in a memory buffer (borrowed) or spilled it
/// to a temporary file (read into a copy). `Err(Some(size))` when it is larger than
/// `limit` (nothing copied), `Err(None)` on a read error (logged by nginx).
unsafe fn read_body(r: *mut ngx_http_request_t, limit: usize) -> Result<Body, Option<usize>> {
    // SAFETY: r is valid.
    let rb = unsafe { (*r).request_body };
    if rb.is_null() {
        return Ok(Body::Copy(Vec::new()));
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
    // SAFETY: rb is the request's body structure, read completely.
    if let Some(ptr) = unsafe { contiguous_body(rb, total) } {
        return Ok(Body::Pool { ptr, len: total });
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
    Ok(Body::Copy(out))
}

unsafe fn handle_body(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: r is valid.
    let log = unsafe { request_log(r) };
    // SAFETY: r is valid.
    if unsafe { (*r).connection.as_ref() }.is_some_and(|c| c.error() != 0) {
        return ngx::ffi::NGX_HTTP_CLIENT_CLOSED_REQUEST as ngx_int_t;
    }
    // SAFETY: r is valid.
    let Endpoint::Document(kind) = endpoint(unsafe { &*r }) else {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    };
    let Some(zone) = zone_of(r, kind) else {
        crate::shared::log_no_zone(log, kind);
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
        Err(Some(size)) => return unsafe { too_large(r, kind, size, cap) },
    };

    // Bring this worker up to date first, so the core builds on the configuration in force.
    zone.sync(log);

    let applied = match kind {
        Kind::Backends => match crate::core().apply_backends_or_start(body.bytes(), INLINE_APPLY_BYTES) {
            Ok(Progress::Applied(report)) => Ok(backends_report(&report)),
            // A large change: compiled on another thread while this worker serves on;
            // the request is answered when it is done.
            // SAFETY: r is valid, its body read; nothing was sent yet.
            Ok(Progress::Started) => return unsafe { wait_for_compilation(r, zone, body) },
            // This worker is compiling a document it found in the zone: this one is
            // newer, applied here (the other is dropped when done).
            Ok(Progress::Busy) => crate::core().apply_backends(body.bytes()).map(|r| backends_report(&r)),
            Err(e) => Err(e),
        },
        Kind::Servers => crate::core().apply_servers(body.bytes()).map(|report| Outcome {
            report: format!(
                "{} hostnames, {} certificates, {} parsed, {} reused{}",
                report.hostnames,
                report.certificates,
                report.parsed,
                report.reused,
                if report.unchanged { ", unchanged" } else { "" }
            ),
            unchanged: report.unchanged,
        }),
    };
    // SAFETY: r is valid, header not sent.
    unsafe { finish(r, zone, kind, body.bytes(), applied) }
}

/// What the core made of a POSTed document.
struct Outcome {
    /// For the debug log.
    report: String,
    /// The document is the one in force in this worker already.
    unchanged: bool,
}

fn backends_report(report: &ingress_lb::ApplyReport) -> Outcome {
    Outcome {
        report: format!("{} backends, {} rebuilt, {} reused", report.backends, report.rebuilt, report.reused),
        unchanged: report.unchanged,
    }
}

/// The end of a POST once the core has answered: the error response, or the
/// document stored in the zone (and on disk) and 201.
///
/// # Safety
/// `r` valid, its header not sent.
unsafe fn finish(
    r: *mut ngx_http_request_t,
    zone: Zone,
    kind: Kind,
    body: &[u8],
    applied: Result<Outcome, ingress_lb::ConfigError>,
) -> ngx_int_t {
    // SAFETY: r is valid.
    let log = unsafe { request_log(r) };
    let outcome = match applied {
        Ok(outcome) => outcome,
        Err(err) => {
            let status = match err {
                ingress_lb::ConfigError::TooLarge { .. } => NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                _ => NGX_HTTP_BAD_REQUEST,
            };
            let msg = err.to_string();
            ngx_log_error!(NGX_LOG_WARN, log, "ingress_lb: rejected {} configuration: {}", kind.what(), msg);
            // SAFETY: r is valid, header not sent.
            return unsafe { send_response(r, status as ngx_uint_t, TEXT, msg.as_bytes()) };
        }
    };

    // The document the zone holds already (a controller reposting what is in force):
    // nothing to store, so no worker copies or compares it again. Only a document the
    // core found identical to the one in force here can be (this worker synced with
    // the zone before applying); any other is stored without comparing megabytes
    // under the zone's lock (at worst, a document another worker stored meanwhile is
    // stored again).
    if outcome.unchanged && zone.with_document(|doc| doc == Some(body)) {
        ngx::ngx_log_debug!(log, "ingress_lb: {} configuration unchanged ({} bytes)", kind.what(), body.len());
        // SAFETY: r is valid, header not sent.
        return unsafe { send_response(r, NGX_HTTP_CREATED as ngx_uint_t, "", b"") };
    }

    let generation = match zone.store(body) {
        Ok(g) => g,
        Err(StoreError::TooLarge { size, cap }) => {
            // Checked above; kept for completeness. The local core already applied the
            // document: restore the zone's one so this worker agrees with the others.
            crate::shared::force_resync(kind);
            zone.sync_now(log);
            // SAFETY: r is valid, header not sent.
            return unsafe { too_large(r, kind, size, cap) };
        }
    };

    // On disk too (ingress_lb_state_path): the zone's document, i.e. the latest accepted.
    // SAFETY: r is a valid request of an http{} configuration using this module.
    if let Some(dir) = Module::main_conf(unsafe { &*r }).and_then(|m| m.state_dir()) {
        crate::state::save_latest(log, dir, kind, &zone);
    }

    // The warnings of the configuration now in force, and of the shared ewma
    // statistics (a full table), as the core reports them.
    if kind == Kind::Backends {
        for w in crate::core().warnings().lines() {
            ngx_log_error!(NGX_LOG_WARN, log, "ingress_lb: backends configuration: {}", w);
        }
    }
    ngx::ngx_log_debug!(
        log,
        "ingress_lb: {} configuration generation {} stored ({} bytes, {})",
        kind.what(),
        generation,
        body.len(),
        outcome.report
    );
    // SAFETY: r is valid, header not sent.
    unsafe { send_response(r, NGX_HTTP_CREATED as ngx_uint_t, "", b"") }
}

/// Milliseconds between two looks at a compilation a POST waits for.
const POLL_MS: ngx_msec_t = 1;

/// A POST waiting for its document to compile (in the request pool's cleanup, so it
/// is freed, and its timer removed, whatever ends the request).
struct Waiting {
    event: ngx_event_t,
    r: *mut ngx_http_request_t,
    zone: Zone,
    body: Body,
    /// Times the compilation was found overtaken by another configuration and started
    /// again (bounded: a POST is answered).
    restarts: u32,
}

/// Keep `r` open and answer it when the core's compilation of `body` is done.
///
/// # Safety
/// `r` valid (inside its body handler), header not sent.
unsafe fn wait_for_compilation(r: *mut ngx_http_request_t, zone: Zone, body: Body) -> ngx_int_t {
    // SAFETY: r is valid; its pool lives until the request is freed.
    let cln = unsafe { ngx_pool_cleanup_add((*r).pool, 0) };
    if cln.is_null() {
        // No way to wait safely: build here.
        let applied = crate::core().apply_backends(body.bytes()).map(|rep| backends_report(&rep));
        // SAFETY: as the caller's.
        return unsafe { finish(r, zone, Kind::Backends, body.bytes(), applied) };
    }
    // SAFETY: an all-zero ngx_event_t is what nginx starts from (ngx_pcalloc).
    let mut event: ngx_event_t = unsafe { core::mem::zeroed() };
    event.handler = Some(on_poll);
    // SAFETY: r and its connection are valid.
    event.log = unsafe { (*(*r).connection).log };
    let waiting = Box::into_raw(Box::new(Waiting { event, r, zone, body, restarts: 0 }));
    // SAFETY: waiting is a live Box; cln was just added to r's pool.
    unsafe {
        (*waiting).event.data = waiting.cast();
        (*cln).handler = Some(drop_waiting);
        (*cln).data = waiting.cast();
        // The body handler's ngx_http_finalize_request(r, NGX_DONE) releases the
        // reference the body reading took; this one is released in on_poll.
        let main = (*r).main;
        (*main).set_count((*main).count() + 1);
        ngx_add_timer(ptr::addr_of_mut!((*waiting).event), POLL_MS);
    }
    ngx::ffi::NGX_DONE as ngx_int_t
}

/// Pool cleanup: the timer (if still armed) and the waiting state.
extern "C" fn drop_waiting(data: *mut c_void) {
    let waiting = data.cast::<Waiting>();
    // SAFETY: data is the Box leaked in wait_for_compilation, freed only here, once.
    unsafe {
        if (*waiting).event.timer_set() != 0 {
            ngx_del_timer(ptr::addr_of_mut!((*waiting).event));
        }
        drop(Box::from_raw(waiting));
    }
}

extern "C" fn on_poll(ev: *mut ngx_event_t) {
    // SAFETY: the event is the one armed in wait_for_compilation; data is its Waiting,
    // alive until the request's pool is destroyed, which needs the reference we hold.
    let waiting = unsafe { &mut *(*ev).data.cast::<Waiting>() };
    let r = waiting.r;
    // SAFETY: r is alive (we hold a reference on it).
    let log = unsafe { request_log(r) };
    // None: still compiling (send_response may itself return NGX_AGAIN, so that code
    // cannot say it).
    let rc = guard(log, "configuration compilation", Some(NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t), || {
        let core = crate::core();
        let applied = match core.collect_backends() {
            Collected::Running => None,
            Collected::Applied(report) => Some(Ok(backends_report(&report))),
            Collected::Rejected(e) => Some(Err(e)),
            // Another configuration was applied meanwhile (this worker found a newer
            // one in the zone): this document is valid and the latest POST, so it is
            // compiled again on top of it.
            Collected::Superseded | Collected::Idle if waiting.restarts < 8 => {
                waiting.restarts += 1;
                match core.apply_backends_or_start(waiting.body.bytes(), INLINE_APPLY_BYTES) {
                    Ok(Progress::Started) => None,
                    Ok(Progress::Applied(report)) => Some(Ok(backends_report(&report))),
                    Ok(Progress::Busy) => {
                        Some(core.apply_backends(waiting.body.bytes()).map(|rep| backends_report(&rep)))
                    }
                    Err(e) => Some(Err(e)),
                }
            }
            Collected::Superseded | Collected::Idle => {
                Some(core.apply_backends(waiting.body.bytes()).map(|rep| backends_report(&rep)))
            }
        };
        match applied {
            None => {
                // SAFETY: ev is the armed event of a live request.
                unsafe { ngx_add_timer(ev, POLL_MS) };
                None
            }
            // SAFETY: r is alive, its header not sent.
            Some(applied) => Some(unsafe { finish(r, waiting.zone, Kind::Backends, waiting.body.bytes(), applied) }),
        }
    });
    let Some(rc) = rc else { return };
    // SAFETY: r is alive; this releases the reference taken in wait_for_compilation.
    // A subrequest's parent is resumed by running the connection's posted requests,
    // as nginx's own event handlers do.
    unsafe {
        let c = (*r).connection;
        ngx_http_finalize_request(r, rc);
        ngx_http_run_posted_requests(c);
    }
}
