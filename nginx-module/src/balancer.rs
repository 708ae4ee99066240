//! `ingress_lb [$variable];`: the upstream peer selector.
//!
//! Per request, `init_peer` reads the backend name from the variable and allocates the
//! per-request state (a `PickCtx` and an address buffer) from the request pool. Every
//! try (first and retries through `proxy_next_upstream`) calls `Core::pick`, which never
//! returns a peer already tried by this request while an untried one remains.

use core::ffi::c_void;
use core::mem::size_of;
use core::ptr;
use std::net::SocketAddr;

use ingress_lb::{PickCtx, PickError, MAX_TRIED};
use ngx::ffi::{
    ngx_http_request_t, ngx_http_upstream_srv_conf_t, ngx_int_t, ngx_log_t, ngx_palloc, ngx_peer_connection_t,
    ngx_pnalloc, ngx_pool_t, ngx_sockaddr_t, ngx_str_t, ngx_uint_t, socklen_t, NGX_LOG_WARN, NGX_PEER_FAILED,
};
use ngx::http::{HttpModuleMainConf, HttpModuleServerConf};
use ngx::{ngx_log_debug, ngx_log_error};

use crate::util::{guard, request_log, variable};
use crate::Module;

/// Per-request balancer state, allocated from the request pool (never the heap).
#[repr(C)]
struct PeerData {
    ctx: PickCtx,
    /// Backend name (copied into the request pool).
    backend: ngx_str_t,
    pool: *mut ngx_pool_t,
    log: *mut ngx_log_t,
    /// Address of the current try (pc->sockaddr points here).
    sockaddr: ngx_sockaddr_t,
    /// Tries handed out so far.
    picks: u32,
    /// Tries reported failed by nginx.
    failures: u32,
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
    if let Some(zone) = Module::main_conf(&*req).and_then(|m| m.zone()) {
        zone.sync(log);
    }

    // SAFETY: r is valid and var_index a variable index of this configuration.
    let name = unsafe { variable(r, scf.var_index as ngx_uint_t) }.unwrap_or(&[]);
    // SAFETY: the request pool is valid; copy so the name cannot change under us.
    let name_copy = unsafe { ngx_pnalloc(req.pool, name.len().max(1)) } as *mut u8;
    // SAFETY: the pool returns memory aligned for any object (NGX_ALIGNMENT) or null.
    let pd = unsafe { ngx_palloc(req.pool, size_of::<PeerData>()) } as *mut PeerData;
    if pd.is_null() || name_copy.is_null() {
        return ngx::ffi::NGX_ERROR as ngx_int_t;
    }
    // SAFETY: name_copy has room for name.len() bytes; pd is a fresh, aligned PeerData slot.
    unsafe {
        ptr::copy_nonoverlapping(name.as_ptr(), name_copy, name.len());
        pd.write(PeerData {
            ctx: PickCtx::new(),
            backend: ngx_str_t { data: name_copy, len: name.len() },
            pool: req.pool,
            log,
            sockaddr: core::mem::zeroed(),
            picks: 0,
            failures: 0,
        });
    }

    let u = req.upstream;
    if u.is_null() {
        return ngx::ffi::NGX_ERROR as ngx_int_t;
    }
    // SAFETY: u is the request's upstream, being initialised by nginx.
    unsafe {
        (*u).peer.data = pd.cast();
        (*u).peer.get = Some(get_peer);
        (*u).peer.free = Some(free_peer);
        // Upper bound of tries; proxy_next_upstream_tries caps it further, and get_peer
        // ends the request once every endpoint of the backend was tried.
        (*u).peer.tries = MAX_TRIED as ngx_uint_t;
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

/// `peer.get`: one try.
unsafe extern "C" fn get_peer(pc: *mut ngx_peer_connection_t, data: *mut c_void) -> ngx_int_t {
    // SAFETY: data is the PeerData init_peer stored; pc is the request's peer connection.
    let (pc, pd) = unsafe { (&mut *pc, &mut *(data as *mut PeerData)) };
    guard(pd.log, "upstream get_peer", ngx::ffi::NGX_ERROR as ngx_int_t, || get_peer_inner(pc, pd))
}

fn get_peer_inner(pc: &mut ngx_peer_connection_t, pd: &mut PeerData) -> ngx_int_t {
    let before = pd.ctx.attempts();
    let backend = pd.backend.as_bytes();
    match crate::core().pick(backend, &mut pd.ctx) {
        Ok(peer) => {
            if pd.picks > 0 && pd.ctx.attempts() == before && before < MAX_TRIED {
                // The core only re-picks a tried endpoint when none is left untried:
                // every endpoint failed for this request.
                ngx_log_debug!(pd.log, "ingress_lb: every endpoint of the backend was tried");
                pc.tries = 0;
                return ngx::ffi::NGX_BUSY as ngx_int_t;
            }
            let text = peer.text().as_bytes();
            // SAFETY: the request pool is valid for the request's lifetime; each try gets
            // its own name, as $upstream_addr keeps a pointer per try.
            let name = unsafe { ngx_palloc(pd.pool, size_of::<ngx_str_t>()) } as *mut ngx_str_t;
            // SAFETY: as above.
            let bytes = unsafe { ngx_pnalloc(pd.pool, text.len()) } as *mut u8;
            if name.is_null() || bytes.is_null() {
                return ngx::ffi::NGX_ERROR as ngx_int_t;
            }
            // SAFETY: both allocations are fresh and large enough.
            unsafe {
                ptr::copy_nonoverlapping(text.as_ptr(), bytes, text.len());
                name.write(ngx_str_t { data: bytes, len: text.len() });
            }
            pc.socklen = write_sockaddr(&mut pd.sockaddr, &peer.addr);
            pc.sockaddr = ptr::addr_of_mut!(pd.sockaddr).cast();
            pc.name = name;
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
