//! `ngx_http_ingress_lb_module`: the ingress-lb core as an nginx dynamic module.
//!
//! Every balancing decision is made by the core (`ingress_lb::Core`); this crate only
//! wires it into nginx:
//!
//! * `ingress_lb_zone SIZE;` (http) — a shared memory zone holding the backends JSON in
//!   force and a generation counter, so that every worker process applies the same
//!   configuration ([`shared`]).
//! * `ingress_lb_servers_zone SIZE;` (http) — a second zone, of the same layout, for the
//!   servers document (the certificates by hostname) ([`shared`]).
//! * `ingress_lb_configuration;` (location) — `GET`/`POST <prefix>/backends`,
//!   `POST <prefix>/servers` and `GET <prefix>/certs?hostname=`, the controller-facing
//!   endpoint of ingress-nginx's `configuration.lua` ([`api`]).
//! * `ingress_lb_certificate on | off;` (http, server) — during the TLS handshake,
//!   the certificate the servers document gives the SNI name replaces the server's
//!   static `ssl_certificate` ([`certificate`]).
//! * `ingress_lb [$variable];` (upstream) — a peer selector that asks the core for an
//!   endpoint on every try of a request ([`balancer`]).
//! * `ingress_lb_route on | off | $variable;` (http, server, location) — the 503 check of
//!   ingress-nginx's `balancer.rewrite()` for unknown backends ([`route`]).
//! * `ingress_lb_ewma_zone SIZE;` (http) — the shared memory zone of the ewma
//!   statistics every worker uses ([`ewma`]), with `$balancer_ewma_score`.
//! * `ingress_lb_state_path DIR;` (http) — the accepted documents saved on disk and
//!   loaded back into the zones at start ([`state`]).
//!
//! Every algorithm of the core is served: the balancer fetches the request data a
//! backend's algorithm needs (hash key: [`hashkey`]; cookie, host, location, user
//! agent, TLS: [`reqdata`]) and applies what the core returns (`Set-Cookie`, the ewma
//! score); the log phase reports attempt timings for ewma.
//!
//! Nothing may unwind into nginx: every callback runs inside [`util::guard`].

#![deny(unsafe_op_in_unsafe_fn)]

mod api;
mod balancer;
mod canary;
#[cfg(ngx_ssl)]
mod certificate;
mod conf;
mod ewma;
mod hashkey;
mod reqdata;
mod route;
mod shared;
mod state;
mod sync_timer;
mod util;

use core::ffi::c_void;
use core::ptr;
use std::sync::OnceLock;

use ingress_lb::Core;
use ngx::ffi::{
    ngx_command_t, ngx_cycle_t, ngx_http_module_t, ngx_int_t, ngx_module_t, NGX_CONF_NOARGS, NGX_CONF_TAKE1,
    NGX_HTTP_LOC_CONF, NGX_HTTP_LOC_CONF_OFFSET, NGX_HTTP_MAIN_CONF, NGX_HTTP_MAIN_CONF_OFFSET, NGX_HTTP_MODULE,
    NGX_HTTP_SRV_CONF, NGX_HTTP_SRV_CONF_OFFSET, NGX_HTTP_UPS_CONF,
};
use ngx::http::{HttpModule, HttpModuleLocationConf, HttpModuleMainConf, HttpModuleServerConf};
use ngx::ngx_string;

/// The balancer core of this (worker) process. Created on first use; each worker
/// process has its own, fed from the shared zone.
static CORE: OnceLock<Core> = OnceLock::new();

#[inline]
pub(crate) fn core() -> &'static Core {
    CORE.get_or_init(Core::new)
}

/// Marker type carrying the module's configuration callbacks.
pub(crate) struct Module;

impl HttpModule for Module {
    fn module() -> &'static ngx_module_t {
        // SAFETY: the module static is only written by nginx while it loads the module and
        // assigns indexes (single-threaded, before any request); here it is only read.
        unsafe { &*ptr::addr_of!(ngx_http_ingress_lb_module) }
    }

    unsafe extern "C" fn preconfiguration(cf: *mut ngx::ffi::ngx_conf_t) -> ngx_int_t {
        // SAFETY: nginx calls preconfiguration with a valid configuration context.
        unsafe {
            if ewma::add_variables(cf) != ngx::ffi::NGX_OK as ngx_int_t {
                return ngx::ffi::NGX_ERROR as ngx_int_t;
            }
            canary::add_variables(cf)
        }
    }

    unsafe extern "C" fn postconfiguration(cf: *mut ngx::ffi::ngx_conf_t) -> ngx_int_t {
        // SAFETY: nginx calls postconfiguration with a valid configuration context.
        unsafe { conf::postconfiguration(cf) }
    }

    unsafe extern "C" fn create_main_conf(cf: *mut ngx::ffi::ngx_conf_t) -> *mut c_void {
        // SAFETY: nginx passes a valid configuration whose pool outlives the cycle.
        unsafe { conf::alloc_conf::<conf::MainConf>(cf) }
    }

    unsafe extern "C" fn create_srv_conf(cf: *mut ngx::ffi::ngx_conf_t) -> *mut c_void {
        // SAFETY: as above.
        unsafe { conf::alloc_conf::<conf::SrvConf>(cf) }
    }

    unsafe extern "C" fn create_loc_conf(cf: *mut ngx::ffi::ngx_conf_t) -> *mut c_void {
        // SAFETY: as above.
        unsafe { conf::alloc_conf::<conf::LocConf>(cf) }
    }
}

// SAFETY: the configuration types below are exactly what create_*_conf allocate.
unsafe impl HttpModuleMainConf for Module {
    type MainConf = conf::MainConf;
}
// SAFETY: as above.
unsafe impl HttpModuleServerConf for Module {
    type ServerConf = conf::SrvConf;
}
// SAFETY: as above.
unsafe impl HttpModuleLocationConf for Module {
    type LocationConf = conf::LocConf;
}

static NGX_HTTP_INGRESS_LB_MODULE_CTX: ngx_http_module_t = ngx_http_module_t {
    preconfiguration: Some(Module::preconfiguration),
    postconfiguration: Some(Module::postconfiguration),
    create_main_conf: Some(Module::create_main_conf),
    init_main_conf: None,
    create_srv_conf: Some(Module::create_srv_conf),
    merge_srv_conf: Some(conf::merge_srv_conf),
    create_loc_conf: Some(Module::create_loc_conf),
    merge_loc_conf: Some(conf::merge_loc_conf),
};

static mut NGX_HTTP_INGRESS_LB_COMMANDS: [ngx_command_t; 9] = [
    ngx_command_t {
        name: ngx_string!("ingress_lb_zone"),
        type_: (NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1) as ngx::ffi::ngx_uint_t,
        set: Some(conf::set_zone),
        conf: NGX_HTTP_MAIN_CONF_OFFSET as ngx::ffi::ngx_uint_t,
        offset: 0,
        post: ptr::null_mut(),
    },
    ngx_command_t {
        name: ngx_string!("ingress_lb_configuration"),
        type_: (NGX_HTTP_LOC_CONF | NGX_CONF_NOARGS) as ngx::ffi::ngx_uint_t,
        set: Some(conf::set_configuration),
        conf: NGX_HTTP_LOC_CONF_OFFSET as ngx::ffi::ngx_uint_t,
        offset: 0,
        post: ptr::null_mut(),
    },
    ngx_command_t {
        name: ngx_string!("ingress_lb"),
        type_: (NGX_HTTP_UPS_CONF | NGX_CONF_NOARGS | NGX_CONF_TAKE1) as ngx::ffi::ngx_uint_t,
        set: Some(conf::set_upstream),
        conf: NGX_HTTP_SRV_CONF_OFFSET as ngx::ffi::ngx_uint_t,
        offset: 0,
        post: ptr::null_mut(),
    },
    ngx_command_t {
        name: ngx_string!("ingress_lb_route"),
        type_: (NGX_HTTP_MAIN_CONF | NGX_HTTP_SRV_CONF | NGX_HTTP_LOC_CONF | NGX_CONF_TAKE1) as ngx::ffi::ngx_uint_t,
        set: Some(conf::set_route),
        conf: NGX_HTTP_LOC_CONF_OFFSET as ngx::ffi::ngx_uint_t,
        offset: 0,
        post: ptr::null_mut(),
    },
    ngx_command_t {
        name: ngx_string!("ingress_lb_ewma_zone"),
        type_: (NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1) as ngx::ffi::ngx_uint_t,
        set: Some(conf::set_ewma_zone),
        conf: NGX_HTTP_MAIN_CONF_OFFSET as ngx::ffi::ngx_uint_t,
        offset: 0,
        post: ptr::null_mut(),
    },
    ngx_command_t {
        name: ngx_string!("ingress_lb_servers_zone"),
        type_: (NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1) as ngx::ffi::ngx_uint_t,
        set: Some(conf::set_servers_zone),
        conf: NGX_HTTP_MAIN_CONF_OFFSET as ngx::ffi::ngx_uint_t,
        offset: 0,
        post: ptr::null_mut(),
    },
    ngx_command_t {
        name: ngx_string!("ingress_lb_certificate"),
        type_: (NGX_HTTP_MAIN_CONF | NGX_HTTP_SRV_CONF | NGX_CONF_TAKE1) as ngx::ffi::ngx_uint_t,
        set: Some(conf::set_certificate),
        conf: NGX_HTTP_SRV_CONF_OFFSET as ngx::ffi::ngx_uint_t,
        offset: 0,
        post: ptr::null_mut(),
    },
    ngx_command_t {
        name: ngx_string!("ingress_lb_state_path"),
        type_: (NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1) as ngx::ffi::ngx_uint_t,
        set: Some(conf::set_state_path),
        conf: NGX_HTTP_MAIN_CONF_OFFSET as ngx::ffi::ngx_uint_t,
        offset: 0,
        post: ptr::null_mut(),
    },
    ngx_command_t::empty(),
];

// The `ngx_modules`, `ngx_module_names` and `ngx_module_order` tables nginx reads with
// dlsym() in ngx_load_module(); the only dynamic symbols the .so exports (exports.map).
ngx::ngx_modules!(ngx_http_ingress_lb_module);

/// The module object. Not exported by name: nginx reaches it through `ngx_modules`.
#[used]
#[allow(non_upper_case_globals)]
pub static mut ngx_http_ingress_lb_module: ngx_module_t = ngx_module_t {
    ctx: ptr::addr_of!(NGX_HTTP_INGRESS_LB_MODULE_CTX) as *mut c_void,
    // SAFETY: taking the address of a static does not access it.
    commands: unsafe { ptr::addr_of_mut!(NGX_HTTP_INGRESS_LB_COMMANDS[0]) },
    type_: NGX_HTTP_MODULE as ngx::ffi::ngx_uint_t,
    init_module: Some(init_module),
    init_process: Some(init_process),
    ..ngx_module_t::default()
};

/// Runs in the master (or single) process after the configuration is read, once the
/// shared zones exist: the documents saved by `ingress_lb_state_path` go to the zones
/// that hold none yet, before any worker starts.
extern "C" fn init_module(cycle: *mut ngx_cycle_t) -> ngx_int_t {
    util::install_panic_hook();
    // SAFETY: nginx passes the new, valid cycle.
    let log = unsafe { (*cycle).log };
    util::guard(log, "init_module", ngx::ffi::NGX_ERROR as ngx_int_t, || {
        // SAFETY: the cycle is valid; its http main configuration, if any, is ours to read.
        if let Some(mcf) = unsafe { Module::main_conf(&*cycle) } {
            state::load_at_start(mcf, log);
        }
        ngx::ffi::NGX_OK as ngx_int_t
    })
}

/// Runs in every worker (or the single process): apply the configuration held by the
/// shared zone, so a worker started by a reload or a respawn serves at once what the
/// others serve, and keep the ewma statistics in the statistics zone.
extern "C" fn init_process(cycle: *mut ngx_cycle_t) -> ngx_int_t {
    // SAFETY: nginx passes the current, valid cycle.
    let log = unsafe { (*cycle).log };
    util::guard(log, "init_process", ngx::ffi::NGX_OK as ngx_int_t, || {
        // SAFETY: the cycle is valid; its http main configuration, if any, is ours to read.
        let Some(mcf) = (unsafe { Module::main_conf(&*cycle) }) else {
            return ngx::ffi::NGX_OK as ngx_int_t;
        };
        if let Some(zone) = mcf.zone() {
            let _ = core();
            zone.sync_now(log);
            sync_timer::start(zone, log);
        }
        // The certificates too: parsed here once, not during the first handshake.
        if let Some(zone) = mcf.servers_zone() {
            zone.sync_now(log);
        }
        // SAFETY: the ewma zone pointer is null or the zone added for this cycle.
        unsafe { ewma::init_process(mcf.ewma_shm_zone, log) };
        ngx::ffi::NGX_OK as ngx_int_t
    })
}
