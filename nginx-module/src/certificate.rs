//! `ingress_lb_certificate on | off;` (http, server): the certificate of a TLS
//! handshake chosen by SNI from the servers document (`POST /configuration/servers`),
//! as ingress-nginx's `ssl_certificate_by_lua_block { certificate.call() }` does.
//!
//! At configuration time ([`install`]) every server with the directive on gets a
//! certificate callback (`SSL_CTX_set_cert_cb`) on its `SSL_CTX`, the one its static
//! `ssl_certificate` (the fallback) created. During a handshake the callback
//! ([`cert_cb`]):
//!
//! 1. brings this worker's core up to date with the servers zone (one atomic load
//!    when nothing changed; otherwise the document is copied and applied, parsing only
//!    the certificates that changed),
//! 2. looks the SNI name up in the core (exact hostname, then the wildcard of its first
//!    label, then `_`; no SNI: `_`) without allocating,
//! 3. when a certificate matches, replaces the static certificate of this connection
//!    with it: `SSL_certs_clear`, `SSL_use_certificate`, `SSL_use_PrivateKey` and
//!    `SSL_add1_chain_cert` for each intermediate. These take references on the
//!    OpenSSL objects the core parsed once when the document was applied; nothing is
//!    read from files or parsed per handshake. Nothing matches: the static certificate
//!    stays.
//!
//! The callback never unwinds into OpenSSL ([`crate::util::guard`]: a panic fails the
//! handshake and logs an `[alert]`).

use core::ffi::{c_int, c_void, CStr};

use foreign_types::ForeignTypeRef;
use ngx::ffi::{
    ngx_conf_t, ngx_connection_t, ngx_http_core_srv_conf_t, ngx_http_ssl_srv_conf_t, ngx_log_t, SSL_certs_clear,
    SSL_ctrl, SSL_get_ex_data, SSL_get_servername, SSL_use_PrivateKey, SSL_use_certificate, TLSEXT_NAMETYPE_host_name,
    EVP_PKEY, NGX_LOG_EMERG, NGX_LOG_ERR, SSL, SSL_CTRL_CHAIN_CERT, X509,
};
use ngx::http::{HttpModule, HttpModuleMainConf, NgxHttpCoreModule};
use ngx::{ngx_log_debug, ngx_log_error};

use crate::conf::{MainConf, SrvConf};
use crate::util::guard;
use crate::Module;

/// Install the certificate callback on the `SSL_CTX` of every server where
/// `ingress_lb_certificate` is on. A server that sets it itself must have TLS (a
/// static `ssl_certificate`, the fallback); one that inherits it from `http {}` and
/// has no TLS is left alone.
///
/// # Safety
/// `cf` must be the valid configuration context of postconfiguration (every server's
/// configuration merged), and `mcf` the module's main configuration of this cycle.
pub(crate) unsafe fn install(cf: *mut ngx_conf_t, mcf: &mut MainConf) -> Result<(), ()> {
    // SAFETY: inside http{}, the core module's main configuration exists.
    let Some(cmcf) = NgxHttpCoreModule::main_conf_mut(unsafe { &*cf }) else {
        return Err(());
    };
    // SAFETY: cmcf.servers is an array of ngx_http_core_srv_conf_t pointers.
    let servers = unsafe { cmcf.servers.as_slice::<*mut ngx_http_core_srv_conf_t>() };
    let ours = Module::module().ctx_index;
    // SAFETY: the ssl module's index is assigned before any configuration is read.
    let ssl_index = unsafe { ngx::ffi::ngx_http_ssl_module.ctx_index };
    // SAFETY: cf is valid.
    let log = unsafe { (*cf).log };
    let arg = core::ptr::from_mut(mcf).cast::<c_void>();

    for &cscf in servers {
        // SAFETY: every server has its configuration context with a srv_conf slot for
        // each HTTP module; ours is a SrvConf, the ssl module's an ngx_http_ssl_srv_conf_t.
        let (cscf, scf, sscf) = unsafe {
            let srv_conf = (*(*cscf).ctx).srv_conf;
            (
                &*cscf,
                &*(*srv_conf.add(ours) as *const SrvConf),
                &*(*srv_conf.add(ssl_index) as *const ngx_http_ssl_srv_conf_t),
            )
        };
        if scf.certificate != 1 {
            continue;
        }
        let file = if cscf.file_name.is_null() {
            "?".into()
        } else {
            // SAFETY: file_name is the NUL-terminated name of the configuration file.
            unsafe { CStr::from_ptr(cscf.file_name.cast()) }.to_string_lossy()
        };
        if sscf.ssl.ctx.is_null() {
            if !scf.certificate_here {
                continue;
            }
            ngx_log_error!(
                NGX_LOG_EMERG,
                log,
                "\"ingress_lb_certificate on\" needs a static \"ssl_certificate\" (the fallback) in the server \
                 in {}:{}",
                file,
                cscf.line
            );
            return Err(());
        }
        if !sscf.certificate_values.is_null() {
            ngx_log_error!(
                NGX_LOG_EMERG,
                log,
                "\"ingress_lb_certificate on\" cannot be combined with an \"ssl_certificate\" that has variables \
                 (both choose the certificate during the handshake), in the server in {}:{}",
                file,
                cscf.line
            );
            return Err(());
        }
        // SAFETY: the SSL_CTX lives as long as the cycle, as `arg` (the main
        // configuration, in the cycle's pool) does.
        unsafe { ngx::ffi::SSL_CTX_set_cert_cb(sscf.ssl.ctx, Some(cert_cb), arg) };
    }
    Ok(())
}

/// The certificate callback (`SSL_CTX_set_cert_cb`): 1 to go on with the handshake,
/// 0 to fail it.
unsafe extern "C" fn cert_cb(ssl: *mut SSL, arg: *mut c_void) -> c_int {
    // SAFETY: nginx stores its connection in every SSL object it creates, at
    // ngx_ssl_connection_index; the callback only runs for those.
    let c = unsafe { SSL_get_ex_data(ssl, ngx::ffi::ngx_ssl_connection_index) } as *mut ngx_connection_t;
    // SAFETY: c is null or nginx's live connection of this handshake; otherwise the
    // cycle's log (ngx_cycle is always set in a running process).
    let log = if c.is_null() { unsafe { (*ngx::ffi::ngx_cycle).log } } else { unsafe { (*c).log } };
    guard(log, "certificate callback", 0, || {
        // SAFETY: ssl is the handshake's SSL object and arg the main configuration
        // `install` passed, both valid for the duration of the callback.
        unsafe { select(ssl, &*(arg as *const MainConf), log) }
    })
}

/// # Safety
/// `ssl` must be a live SSL object inside its certificate callback.
unsafe fn select(ssl: *mut SSL, mcf: &MainConf, log: *mut ngx_log_t) -> c_int {
    if let Some(zone) = mcf.servers_zone() {
        zone.sync(log);
    }
    // SAFETY: ssl is valid; the name (if any) lives as long as the handshake.
    let name = unsafe { SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name as c_int) };
    // SAFETY: a non-null name is NUL-terminated.
    let sni = (!name.is_null()).then(|| unsafe { CStr::from_ptr(name) }.to_bytes());

    crate::core().certificate_with(sni, |cert| {
        let Some(cert) = cert else {
            ngx_log_debug!(
                log,
                "ingress_lb: no certificate for SNI \"{}\", the static one stays",
                String::from_utf8_lossy(sni.unwrap_or(b"-"))
            );
            return 1;
        };
        ngx_log_debug!(
            log,
            "ingress_lb: certificate \"{}\" for SNI \"{}\"",
            cert.uid,
            String::from_utf8_lossy(sni.unwrap_or(b"-"))
        );
        // Built when the worker applied the document, or now if it applied a copy of a
        // document another worker accepted (parsed at first use, once).
        let Some(objects) = cert.objects() else {
            ngx_log_error!(
                NGX_LOG_ERR,
                log,
                "ingress_lb: certificate \"{}\" does not parse; the static certificate stays",
                cert.uid
            );
            return 1;
        };
        // SAFETY: ssl is valid. The leaf, key and intermediates are live objects of the
        // store in force, borrowed for this closure; OpenSSL takes its own reference on
        // each (up_ref), so the connection keeps them even if the store is replaced.
        // SSL_certs_clear only touches this connection's copy of the certificates (its
        // CERT was duplicated from the SSL_CTX), never the server's static one.
        let ok = unsafe {
            SSL_certs_clear(ssl);
            SSL_use_certificate(ssl, objects.leaf.as_ptr() as *mut X509) == 1
                && SSL_use_PrivateKey(ssl, objects.key.as_ptr() as *mut EVP_PKEY) == 1
                && objects.chain.iter().all(|x| {
                    // SSL_add1_chain_cert(ssl, x), a macro of SSL_ctrl.
                    SSL_ctrl(ssl, SSL_CTRL_CHAIN_CERT as c_int, 1, x.as_ptr() as *mut c_void) == 1
                })
        };
        if ok {
            return 1;
        }
        let err = openssl::error::ErrorStack::get();
        ngx_log_error!(
            NGX_LOG_ERR,
            log,
            "ingress_lb: could not install certificate \"{}\" for SNI \"{}\": {}",
            cert.uid,
            String::from_utf8_lossy(sni.unwrap_or(b"-")),
            err
        );
        0
    })
}
