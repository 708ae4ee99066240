//! `ingress_lb [$variable];`: the upstream peer selector.
//!
//! Per request, `init_peer` reads the backend name from the variable, asks the core
//! what the backend's algorithm needs ([`ingress_lb::BackendInfo`]) and fetches that
//! much request data once: the evaluated `upstream-hash-by` key (chash, chashsubset;
//! [`crate::hashkey`]) or the cookie, host, location path, User-Agent and TLS flag
//! (sticky; [`crate::reqdata`]). Everything lives in the request pool; no heap
//! allocation per request.
//!
//! Every try (first and retries through `proxy_next_upstream`) calls
//! [`ingress_lb::Core::pick_with`], which never returns a peer already tried by this
//! request while an untried one remains, and applies what the core asked for:
//! a `Set-Cookie` response header (one per request: the latest attempt's pick decides,
//! replacing or withdrawing the cookie of an earlier attempt, as the Lua front end
//! does), `$balancer_ewma_score` (ewma). Timings are reported after the
//! response by the log phase handler ([`crate::ewma`]).

use core::ffi::c_void;
use core::mem::size_of;
use core::ptr;
use std::net::SocketAddr;

use ingress_lb::{AlgorithmKind, BackendInfo, PickCtx, PickError, Request, SetCookie, MAX_TRIED};
use ngx::ffi::{
    ngx_http_request_t, ngx_http_upstream_srv_conf_t, ngx_int_t, ngx_list_push, ngx_log_t, ngx_palloc,
    ngx_peer_connection_t, ngx_pnalloc, ngx_pool_t, ngx_sockaddr_t, ngx_str_t, ngx_table_elt_t, ngx_uint_t, socklen_t,
    NGX_LOG_WARN, NGX_PEER_FAILED,
};
use ngx::http::{HttpModule, HttpModuleMainConf, HttpModuleServerConf};
use ngx::{ngx_log_debug, ngx_log_error};

use crate::reqdata::{self, bytes, EMPTY};
use crate::util::{guard, request_log, variable};
use crate::{hashkey, Module};

/// Per-request balancer state, allocated from the request pool (never the heap), and
/// reachable from the request as the module's context (for the log phase).
pub(crate) struct PeerData {
    ctx: PickCtx,
    /// Backend name (copied into the request pool).
    backend: ngx_str_t,
    request: *mut ngx_http_request_t,
    pool: *mut ngx_pool_t,
    log: *mut ngx_log_t,
    /// Address of the current try (pc->sockaddr points here).
    sockaddr: ngx_sockaddr_t,
    /// Tries handed out so far.
    picks: u32,
    /// Tries reported failed by nginx.
    failures: u32,
    /// What the backend needed when the request started (None: unknown backend).
    info: Option<BackendInfo>,
    /// Request data, filled as `info` asks (request memory or pool; empty otherwise).
    hash_key: ngx_str_t,
    cookie: ngx_str_t,
    host: ngx_str_t,
    location_path: ngx_str_t,
    user_agent: ngx_str_t,
    https: bool,
    /// The `Set-Cookie` header this request added, if any (replaced on retry).
    set_cookie: *mut ngx_table_elt_t,
    /// Index of `$balancer_ewma_score`, or -1.
    score_index: isize,
}

impl PeerData {
    /// The state of `r`'s `ingress_lb` upstream, if it has one.
    ///
    /// # Safety
    /// `r` must be a valid request.
    pub(crate) unsafe fn of_request<'a>(r: *mut ngx_http_request_t) -> Option<&'a PeerData> {
        // SAFETY: r is valid; its ctx array has a slot per HTTP module.
        let p = unsafe { *(*r).ctx.add(Module::module().ctx_index) } as *const PeerData;
        // SAFETY: only init_peer stores into this slot, a PeerData of the request pool.
        (!p.is_null()).then(|| unsafe { &*p })
    }

    /// The backend reports attempt timings (ewma), and at least one try was made.
    pub(crate) fn needs_timing(&self) -> bool {
        self.picks > 0 && self.info.is_some_and(|i| i.needs_timing)
    }

    pub(crate) fn backend_name(&self) -> &[u8] {
        bytes(&self.backend)
    }
}

/// `peer.init` of an `ingress_lb` upstream, once per request (and upstream).
pub(crate) unsafe extern "C" fn init_peer(
    r: *mut ngx_http_request_t,
    us: *mut ngx_http_upstream_srv_conf_t,
) -> ngx_int_t {
    // SAFETY: nginx calls peer.init with a valid request.
    let log = unsafe { request_log(r) };
    guard(log, "upstream init_peer", ngx::ffi::NGX_ERROR as ngx_int_t, || {
        // SAFETY: r and us are valid for the call.
        unsafe { init_peer_inner(r, us, log) }
    })
}

unsafe fn init_peer_inner(
    r: *mut ngx_http_request_t,
    us: *mut ngx_http_upstream_srv_conf_t,
    log: *mut ngx_log_t,
) -> ngx_int_t {
    // SAFETY: us is the valid upstream configuration.
    let Some(scf) = Module::server_conf(unsafe { &*us }) else {
        return ngx::ffi::NGX_ERROR as ngx_int_t;
    };
    if scf.var_index < 0 {
        return ngx::ffi::NGX_ERROR as ngx_int_t;
    }
    // SAFETY: r is valid.
    let req = unsafe { &mut *r };
    let Some(mcf) = Module::main_conf(&*req) else {
        return ngx::ffi::NGX_ERROR as ngx_int_t;
    };
    if let Some(zone) = mcf.zone() {
        zone.sync(log);
    }

    // SAFETY: r is valid and var_index a variable index of this configuration.
    let mut name = unsafe { variable(r, scf.var_index as ngx_uint_t) }.unwrap_or(&[]);
    let core = crate::core();
    let mut info = core.backend_info(name);
    let mut cookie = None;
    if info.is_some_and(|i| i.has_alternatives) {
        // Canary routing, once per request: the retries stay in the chosen backend.
        // SAFETY: r is valid; the joined header (if several) lands in its pool.
        let Some(c) = (unsafe { reqdata::cookie(r) }) else {
            return ngx::ffi::NGX_ERROR as ngx_int_t;
        };
        cookie = Some(c);
        let headers = crate::canary::RequestHeaders(r);
        let alternative = core.route_with(name, reqdata::bytes(&c), &headers, |alt| {
            // SAFETY: r is valid; alternative_index is the variable's index (set with
            // the balancer's variables when the upstream was configured).
            alt.map(|(alt, _)| {
                mcf.alternative_index >= 0
                    && unsafe { crate::util::store_variable(r, mcf.alternative_index as usize, alt.as_bytes()) }
            })
        });
        if let Ok(Some(stored)) = alternative {
            if !stored {
                return ngx::ffi::NGX_ERROR as ngx_int_t;
            }
            // The name now lives in the variable's value (request pool).
            // SAFETY: r is valid and alternative_index an index of this configuration.
            name = unsafe { variable(r, mcf.alternative_index as ngx_uint_t) }.unwrap_or(&[]);
            info = core.backend_info(name);
        }
    }
    // SAFETY: the request pool is valid; copy so the name cannot change under us.
    let name_copy = unsafe { ngx_pnalloc(req.pool, name.len().max(1)) } as *mut u8;
    // SAFETY: the pool returns memory aligned for any object (NGX_ALIGNMENT) or null.
    let pd = unsafe { ngx_palloc(req.pool, size_of::<PeerData>()) } as *mut PeerData;
    if pd.is_null() || name_copy.is_null() {
        return ngx::ffi::NGX_ERROR as ngx_int_t;
    }
    // SAFETY: name_copy has room for name.len() bytes.
    unsafe { ptr::copy_nonoverlapping(name.as_ptr(), name_copy, name.len()) };
    let mut data = PeerData {
        ctx: PickCtx::new(),
        backend: ngx_str_t { data: name_copy, len: name.len() },
        request: r,
        pool: req.pool,
        log,
        // SAFETY: all-zero is a valid value of every member of the union.
        sockaddr: unsafe { core::mem::zeroed() },
        picks: 0,
        failures: 0,
        info: None,
        hash_key: EMPTY,
        cookie: EMPTY,
        host: EMPTY,
        location_path: EMPTY,
        user_agent: EMPTY,
        https: false,
        set_cookie: ptr::null_mut(),
        score_index: mcf.score_index,
    };

    data.info = info;
    if let Some(info) = data.info {
        if info.needs_hash_key {
            // SAFETY: r is valid; the key lands in request memory.
            match core.hash_by(name, |expr| unsafe { hashkey::evaluate(r, expr.as_bytes()) }) {
                Some(Some(key)) => data.hash_key = key,
                Some(None) => return ngx::ffi::NGX_ERROR as ngx_int_t,
                None => {} // removed meanwhile: the pick reports it
            }
        }
        if info.needs_cookie {
            // SAFETY: r is valid; every value is request memory.
            let fetched = unsafe {
                (|| {
                    data.cookie = match cookie {
                        Some(c) => c,
                        None => reqdata::cookie(r)?,
                    };
                    data.host = reqdata::host(r)?;
                    data.location_path = reqdata::location_path(r)?;
                    data.user_agent = reqdata::user_agent(r);
                    data.https = reqdata::https(r);
                    Some(())
                })()
            };
            if fetched.is_none() {
                return ngx::ffi::NGX_ERROR as ngx_int_t;
            }
        }
    }

    // SAFETY: pd is a fresh, aligned PeerData slot of the request pool.
    unsafe { pd.write(data) };

    let u = req.upstream;
    if u.is_null() {
        return ngx::ffi::NGX_ERROR as ngx_int_t;
    }
    // SAFETY: u is the request's upstream, being initialised by nginx; r->ctx has a
    // slot per HTTP module (the log phase finds the state there).
    unsafe {
        (*u).peer.data = pd.cast();
        (*u).peer.get = Some(get_peer);
        (*u).peer.free = Some(free_peer);
        // Upper bound of tries; proxy_next_upstream_tries caps it further, and get_peer
        // ends the request once every endpoint of the backend was tried.
        (*u).peer.tries = MAX_TRIED as ngx_uint_t;
        *req.ctx.add(Module::module().ctx_index) = pd.cast();
    }
    ngx::ffi::NGX_OK as ngx_int_t
}

/// Write a socket address into nginx's sockaddr union; returns its length.
fn write_sockaddr(dst: &mut ngx_sockaddr_t, addr: &SocketAddr) -> socklen_t {
    // SAFETY: all-zero is a valid value of every member of the union.
    *dst = unsafe { core::mem::zeroed() };
    match addr {
        SocketAddr::V4(a) => {
            // SAFETY: writing plain-old-data fields of the zeroed union member.
            let sin = unsafe { &mut dst.sockaddr_in };
            sin.sin_family = libc::AF_INET as _;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
            size_of::<libc::sockaddr_in>() as socklen_t
        }
        SocketAddr::V6(a) => {
            // SAFETY: as above.
            let sin6 = unsafe { &mut dst.sockaddr_in6 };
            sin6.sin6_family = libc::AF_INET6 as _;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_flowinfo = a.flowinfo().to_be();
            sin6.sin6_scope_id = a.scope_id();
            // SAFETY: in6_addr is 16 bytes of address in network order, like octets().
            unsafe {
                ptr::copy_nonoverlapping(a.ip().octets().as_ptr(), ptr::addr_of_mut!(sin6.sin6_addr).cast::<u8>(), 16)
            };
            size_of::<libc::sockaddr_in6>() as socklen_t
        }
    }
}

/// Copy bytes into the pool (`None` when it is exhausted).
fn pool_copy(pool: *mut ngx_pool_t, b: &[u8]) -> Option<ngx_str_t> {
    // SAFETY: the request pool is valid for the request's lifetime.
    let data = unsafe { ngx_pnalloc(pool, b.len().max(1)) } as *mut u8;
    if data.is_null() {
        return None;
    }
    // SAFETY: data has room for b.len() bytes.
    unsafe { ptr::copy_nonoverlapping(b.as_ptr(), data, b.len()) };
    Some(ngx_str_t { data, len: b.len() })
}

/// What a pick gave, copied out of the snapshot into the request pool.
struct Picked {
    addr: SocketAddr,
    /// The peer's name for `$upstream_addr` (one per try: nginx keeps the pointer).
    name: *mut ngx_str_t,
    score: f64,
    /// `Set-Cookie` value to send, if the core asked for one.
    set_cookie: Option<ngx_str_t>,
}

/// Copy a pick's results into the pool; `Err` when the pool is exhausted.
fn copy_out(pool: *mut ngx_pool_t, p: ingress_lb::Picked<'_>) -> Result<Picked, ()> {
    let text = pool_copy(pool, p.peer.text().as_bytes()).ok_or(())?;
    // SAFETY: the pool is valid; the pool aligns for any object.
    let name = unsafe { ngx_palloc(pool, size_of::<ngx_str_t>()) } as *mut ngx_str_t;
    if name.is_null() {
        return Err(());
    }
    // SAFETY: name is a fresh, aligned slot.
    unsafe { name.write(text) };
    let set_cookie = match p.set_cookie {
        Some(c) => {
            let mut buf = [0u8; SetCookie::MAX];
            match c.write_to(&mut buf) {
                Some(n) => Some(pool_copy(pool, &buf[..n]).ok_or(())?),
                None => None, // too long to send (the core's contract)
            }
        }
        None => None,
    };
    Ok(Picked { addr: p.peer.addr(), name, score: p.score, set_cookie })
}

/// `peer.get`: one try.
unsafe extern "C" fn get_peer(pc: *mut ngx_peer_connection_t, data: *mut c_void) -> ngx_int_t {
    // SAFETY: data is the PeerData init_peer stored; pc is the request's peer connection.
    let (pc, pd) = unsafe { (&mut *pc, &mut *(data as *mut PeerData)) };
    guard(pd.log, "upstream get_peer", ngx::ffi::NGX_ERROR as ngx_int_t, || get_peer_inner(pc, pd))
}

fn get_peer_inner(pc: &mut ngx_peer_connection_t, pd: &mut PeerData) -> ngx_int_t {
    let before = pd.ctx.attempts();
    let req = Request {
        hash_key: bytes(&pd.hash_key),
        cookie: bytes(&pd.cookie),
        host: bytes(&pd.host),
        location_path: bytes(&pd.location_path),
        user_agent: bytes(&pd.user_agent),
        https: pd.https,
        now: reqdata::now(),
    };
    let pool = pd.pool;
    let backend = bytes(&pd.backend);
    match crate::core().pick_with(backend, &req, &mut pd.ctx, |p| copy_out(pool, p)) {
        Ok(Err(())) => ngx::ffi::NGX_ERROR as ngx_int_t,
        Ok(Ok(picked)) => {
            if pd.picks > 0 && pd.ctx.attempts() == before && before < MAX_TRIED {
                // The core only re-picks a tried endpoint when none is left untried:
                // every endpoint failed for this request.
                ngx_log_debug!(pd.log, "ingress_lb: every endpoint of the backend was tried");
                pc.tries = 0;
                return ngx::ffi::NGX_BUSY as ngx_int_t;
            }
            if let Some(value) = picked.set_cookie {
                if set_cookie_header(pd, value).is_err() {
                    return ngx::ffi::NGX_ERROR as ngx_int_t;
                }
            } else if !pd.set_cookie.is_null() {
                // The latest pick decides: this attempt's endpoint got no cookie, so
                // the one an earlier attempt asked for (naming an endpoint that
                // failed) is not sent. hash 0 marks a response header as deleted.
                // SAFETY: set_cookie is our element of the response header list.
                unsafe { (*pd.set_cookie).hash = 0 };
            }
            if pd.score_index >= 0 && pd.info.is_some_and(|i| i.algorithm == AlgorithmKind::Ewma) {
                // SAFETY: the request is valid while its upstream runs; score_index is
                // the variable's index in its configuration.
                if !unsafe { crate::ewma::set_score(pd.request, pd.score_index as usize, picked.score) } {
                    return ngx::ffi::NGX_ERROR as ngx_int_t;
                }
            }
            pc.socklen = write_sockaddr(&mut pd.sockaddr, &picked.addr);
            pc.sockaddr = ptr::addr_of_mut!(pd.sockaddr).cast();
            pc.name = picked.name;
            pc.set_cached(0);
            pc.connection = ptr::null_mut();
            pd.picks += 1;
            ngx::ffi::NGX_OK as ngx_int_t
        }
        Err(err) => {
            let reason = match err {
                PickError::UnknownBackend => "unknown backend",
                PickError::NoEndpoints => "backend has no endpoints",
            };
            ngx_log_error!(NGX_LOG_WARN, pd.log, "ingress_lb: no endpoint for backend \"{}\": {}", pd.backend, reason);
            pc.name = ptr::null_mut();
            pc.tries = 0;
            ngx::ffi::NGX_BUSY as ngx_int_t
        }
    }
}

const SET_COOKIE: &str = "Set-Cookie";
const SET_COOKIE_LOWER: &str = "set-cookie";

/// Add the affinity cookie to the response headers (not sent yet while the upstream
/// picks peers), or replace the one an earlier attempt of this request added (or
/// withdrew): the response carries only the latest pick's cookie, next to the
/// backend's own.
fn set_cookie_header(pd: &mut PeerData, value: ngx_str_t) -> Result<(), ()> {
    let h = if pd.set_cookie.is_null() {
        // SAFETY: the request is valid; headers_out.headers is its response header list.
        let h = unsafe { ngx_list_push(&mut (*pd.request).headers_out.headers) } as *mut ngx_table_elt_t;
        if h.is_null() {
            return Err(());
        }
        pd.set_cookie = h;
        h
    } else {
        pd.set_cookie
    };
    // SAFETY: h is an element of the response header list (fresh, or ours from an
    // earlier attempt); key and lowcase_key point to static text nginx only reads.
    unsafe {
        (*h).hash = 1;
        (*h).key = ngx_str_t { data: SET_COOKIE.as_ptr() as *mut u8, len: SET_COOKIE.len() };
        (*h).lowcase_key = SET_COOKIE_LOWER.as_ptr() as *mut u8;
        (*h).value = value;
        #[cfg(ngx_cookie_list)]
        {
            (*h).next = ptr::null_mut();
        }
    }
    Ok(())
}

/// `peer.free`: the try is over; count it.
unsafe extern "C" fn free_peer(pc: *mut ngx_peer_connection_t, data: *mut c_void, state: ngx_uint_t) {
    // SAFETY: as in get_peer.
    let (pc, pd) = unsafe { (&mut *pc, &mut *(data as *mut PeerData)) };
    guard(pd.log, "upstream free_peer", (), || {
        if state & NGX_PEER_FAILED as ngx_uint_t != 0 {
            pd.failures += 1;
        }
        if pc.tries > 0 {
            pc.tries -= 1;
        }
    })
}
