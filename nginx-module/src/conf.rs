//! Configuration structures and directive handlers.

use core::ffi::{c_char, c_void};
use core::ptr;

use ngx::core::{NGX_CONF_ERROR, NGX_CONF_OK};
use ngx::ffi::{
    ngx_array_push, ngx_command_t, ngx_conf_full_name, ngx_conf_t, ngx_http_get_variable_index, ngx_http_handler_pt,
    ngx_http_phases_NGX_HTTP_LOG_PHASE, ngx_http_phases_NGX_HTTP_PREACCESS_PHASE, ngx_http_upstream_srv_conf_t,
    ngx_int_t, ngx_palloc, ngx_parse_size, ngx_str_t, ngx_uint_t, NGX_HTTP_UPSTREAM_CREATE, NGX_LOG_EMERG,
    NGX_LOG_WARN,
};
use ngx::http::{
    HttpModuleLocationConf, HttpModuleMainConf, HttpModuleServerConf, NgxHttpCoreModule, NgxHttpUpstreamModule,
};
use ngx::ngx_conf_log_error;

use crate::shared::{self, Kind, Zone};
use crate::Module;

/// Variable read when a directive names none: the one ingress-nginx sets per location.
pub(crate) const DEFAULT_VARIABLE: &str = "proxy_upstream_name";

/// Default size of the shared zone when a directive needs it and `ingress_lb_zone` is
/// absent: ingress-nginx's `lua_shared_dict configuration_data 20M`.
pub(crate) const DEFAULT_ZONE_SIZE: usize = 20 * 1024 * 1024;

/// Default size of the servers (certificates) zone: 10 000 certificates of up to
/// 6.3 KiB of JSON text each (an RSA-2048 leaf, its key and one intermediate take
/// 4-6 KiB of PEM; the JSON escapes of the newlines add about 70 bytes).
pub(crate) const DEFAULT_SERVERS_ZONE_SIZE: usize = 64 * 1024 * 1024;

/// Smallest accepted zone (8 pages, as nginx's own zones require).
pub(crate) const MIN_ZONE_SIZE: usize = 32 * 1024;

const UNSET: isize = -1;
const OFF: isize = -2;

/// http{}-level configuration.
#[derive(Debug)]
pub(crate) struct MainConf {
    /// The shared zone, once added (by `ingress_lb_zone` or by default).
    pub(crate) shm_zone: *mut ngx::ffi::ngx_shm_zone_t,
    /// Size given by `ingress_lb_zone` (0 = not given).
    pub(crate) zone_size: usize,
    /// The servers (certificates) zone, once added (with the backends zone).
    pub(crate) servers_shm_zone: *mut ngx::ffi::ngx_shm_zone_t,
    /// Size given by `ingress_lb_servers_zone` (0 = not given).
    pub(crate) servers_zone_size: usize,
    /// Some server has `ingress_lb_certificate on`.
    pub(crate) certificate_used: bool,
    /// Some directive of the module is used, so the zone is needed.
    pub(crate) used: bool,
    /// Some location has `ingress_lb_route` enabled: install the preaccess handler.
    pub(crate) route_used: bool,
    /// Some upstream has `ingress_lb`: the ewma statistics zone and the log phase
    /// handler are needed.
    pub(crate) balancer_used: bool,
    /// The ewma statistics zone, once added.
    pub(crate) ewma_shm_zone: *mut ngx::ffi::ngx_shm_zone_t,
    /// Size given by `ingress_lb_ewma_zone` (0 = not given).
    pub(crate) ewma_zone_size: usize,
    /// Index of `$balancer_ewma_score` (-1 until an upstream uses `ingress_lb`).
    pub(crate) score_index: isize,
    /// Index of `$proxy_alternative_upstream_name` (-1 until an upstream uses `ingress_lb`).
    pub(crate) alternative_index: isize,
    /// Indexes of the upstream variables reported to the core after a response.
    pub(crate) upstream_vars: UpstreamVars,
    /// `ingress_lb_state_path`: the state directory, absolute (empty: not set).
    pub(crate) state_dir: ngx_str_t,
}

/// Indexes of `$upstream_addr`, `$upstream_status`, `$upstream_connect_time`,
/// `$upstream_response_time` (-1 = not registered).
#[derive(Debug, Clone, Copy)]
pub(crate) struct UpstreamVars {
    pub(crate) addr: isize,
    pub(crate) status: isize,
    pub(crate) connect_time: isize,
    pub(crate) response_time: isize,
}

impl Default for MainConf {
    fn default() -> Self {
        MainConf {
            shm_zone: ptr::null_mut(),
            zone_size: 0,
            servers_shm_zone: ptr::null_mut(),
            servers_zone_size: 0,
            certificate_used: false,
            used: false,
            route_used: false,
            balancer_used: false,
            ewma_shm_zone: ptr::null_mut(),
            ewma_zone_size: 0,
            score_index: UNSET,
            alternative_index: UNSET,
            upstream_vars: UpstreamVars { addr: UNSET, status: UNSET, connect_time: UNSET, response_time: UNSET },
            state_dir: ngx_str_t { len: 0, data: ptr::null_mut() },
        }
    }
}

impl MainConf {
    /// The backends zone, if configured and initialised.
    #[inline]
    pub(crate) fn zone(&self) -> Option<Zone> {
        // SAFETY: shm_zone is null or the zone nginx returned, valid for the cycle.
        unsafe { Zone::from_shm_zone(self.shm_zone, Kind::Backends) }
    }

    /// The servers (certificates) zone, if configured and initialised.
    #[inline]
    pub(crate) fn servers_zone(&self) -> Option<Zone> {
        // SAFETY: servers_shm_zone is null or the zone nginx returned, valid for the cycle.
        unsafe { Zone::from_shm_zone(self.servers_shm_zone, Kind::Servers) }
    }

    /// The directory of `ingress_lb_state_path`, if set.
    pub(crate) fn state_dir(&self) -> Option<&std::path::Path> {
        if self.state_dir.len == 0 || self.state_dir.data.is_null() {
            return None;
        }
        // SAFETY: set by the directive to a string of the cycle's pool, which outlives
        // the configuration.
        let bytes = unsafe { core::slice::from_raw_parts(self.state_dir.data, self.state_dir.len) };
        Some(std::path::Path::new(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(bytes)))
    }

    /// The zone holding the document of `kind`.
    #[inline]
    pub(crate) fn zone_of(&self, kind: Kind) -> Option<Zone> {
        match kind {
            Kind::Backends => self.zone(),
            Kind::Servers => self.servers_zone(),
        }
    }
}

/// Per-upstream configuration (`ingress_lb` inside `upstream {}`) and per-server
/// configuration (`ingress_lb_certificate`, in `http {}` and `server {}`).
#[derive(Debug)]
pub(crate) struct SrvConf {
    /// Index of the variable holding the backend name, or -1 when `ingress_lb` is absent.
    pub(crate) var_index: isize,
    /// `ingress_lb_certificate`: -1 unset, 0 off, 1 on.
    pub(crate) certificate: isize,
    /// `ingress_lb_certificate` was given in this very block (not inherited).
    pub(crate) certificate_here: bool,
}

impl Default for SrvConf {
    fn default() -> Self {
        SrvConf { var_index: UNSET, certificate: UNSET, certificate_here: false }
    }
}

/// `merge_srv_conf`: `ingress_lb_certificate` is inherited from `http {}`, default off.
pub(crate) unsafe extern "C" fn merge_srv_conf(
    _cf: *mut ngx_conf_t,
    prev: *mut c_void,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx passes the structures create_srv_conf allocated.
    let (prev, conf) = unsafe { (&*(prev as *const SrvConf), &mut *(conf as *mut SrvConf)) };
    if conf.certificate == UNSET {
        conf.certificate = if prev.certificate == UNSET { 0 } else { prev.certificate };
    }
    NGX_CONF_OK
}

/// `ingress_lb_certificate on | off;`
pub(crate) unsafe extern "C" fn set_certificate(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: conf is our server configuration (NGX_HTTP_SRV_CONF_OFFSET).
    let scf = unsafe { &mut *(conf as *mut SrvConf) };
    if scf.certificate != UNSET {
        return c"is duplicate".as_ptr() as *mut c_char;
    }
    // SAFETY: NGX_CONF_TAKE1 guarantees args[1].
    let arg = unsafe { args(cf)[1] };
    scf.certificate = match arg.as_bytes() {
        b"on" => 1,
        b"off" => 0,
        _ => {
            ngx_conf_log_error!(NGX_LOG_EMERG, cf, "invalid value \"{}\", it must be \"on\" or \"off\"", arg);
            return NGX_CONF_ERROR;
        }
    };
    scf.certificate_here = true;
    if scf.certificate == 1 {
        if !cfg!(ngx_ssl) {
            ngx_conf_log_error!(NGX_LOG_EMERG, cf, "ingress_lb_certificate needs nginx built with SSL");
            return NGX_CONF_ERROR;
        }
        let Some(mcf) = main_conf(cf) else { return NGX_CONF_ERROR };
        mcf.used = true;
        mcf.certificate_used = true;
    }
    NGX_CONF_OK
}

/// Per-location configuration.
#[derive(Debug)]
pub(crate) struct LocConf {
    /// `ingress_lb_route`: -1 unset, -2 off, else the variable index.
    pub(crate) route_var: isize,
    /// This location is the configuration endpoint: never route-checked.
    pub(crate) is_api: bool,
}

impl Default for LocConf {
    fn default() -> Self {
        LocConf { route_var: UNSET, is_api: false }
    }
}

impl LocConf {
    /// Index of the variable to check, when the route check is on here.
    #[inline]
    pub(crate) fn route_variable(&self) -> Option<ngx_uint_t> {
        (self.route_var >= 0 && !self.is_api).then_some(self.route_var as ngx_uint_t)
    }
}

/// Allocate and default-initialise a configuration structure from the configuration pool.
///
/// # Safety
/// `cf` must be a valid configuration context.
pub(crate) unsafe fn alloc_conf<T: Default>(cf: *mut ngx_conf_t) -> *mut c_void {
    // SAFETY: cf is valid; ngx_palloc returns NGX_ALIGNMENT-aligned memory (nginx-sys checks
    // that pointer alignment suffices) or null.
    let p = unsafe { ngx_palloc((*cf).pool, core::mem::size_of::<T>()) } as *mut T;
    if p.is_null() {
        return ptr::null_mut();
    }
    // SAFETY: p is a fresh allocation of the right size and alignment.
    unsafe { p.write(T::default()) };
    p.cast()
}

/// `merge_loc_conf`: `ingress_lb_route` is inherited, default off.
pub(crate) unsafe extern "C" fn merge_loc_conf(
    _cf: *mut ngx_conf_t,
    prev: *mut c_void,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx passes the structures create_loc_conf allocated.
    let (prev, conf) = unsafe { (&*(prev as *const LocConf), &mut *(conf as *mut LocConf)) };
    if conf.route_var == UNSET {
        conf.route_var = if prev.route_var == UNSET { OFF } else { prev.route_var };
    }
    NGX_CONF_OK
}

/// Arguments of the directive being parsed (`args[0]` is its name).
///
/// # Safety
/// `cf` must be a valid configuration context inside a directive handler.
unsafe fn args<'a>(cf: *mut ngx_conf_t) -> &'a mut [ngx_str_t] {
    // SAFETY: cf->args is an array of ngx_str_t for the directive being parsed.
    unsafe { (*(*cf).args).as_slice_mut::<ngx_str_t>() }
}

fn main_conf(cf: *mut ngx_conf_t) -> Option<&'static mut MainConf> {
    // SAFETY: cf is valid while directives are parsed; the http main conf exists inside http{}.
    Module::main_conf_mut(unsafe { &*cf })
}

/// Resolve `$name` (or the default variable when `arg` is None) to a variable index.
fn variable_index(cf: *mut ngx_conf_t, arg: Option<ngx_str_t>) -> Result<isize, ()> {
    let mut name = match arg {
        Some(v) => {
            let bytes = v.as_bytes();
            if bytes.len() < 2 || bytes[0] != b'$' {
                ngx_conf_log_error!(NGX_LOG_EMERG, cf, "invalid variable name \"{}\"", v);
                return Err(());
            }
            // SAFETY: v has at least 2 bytes (checked above): skipping the '$' stays in bounds.
            ngx_str_t { data: unsafe { v.data.add(1) }, len: v.len - 1 }
        }
        None => ngx_str_t { data: DEFAULT_VARIABLE.as_ptr() as *mut u8, len: DEFAULT_VARIABLE.len() },
    };
    // SAFETY: cf is valid; nginx copies the name it keeps (the variables array owns it).
    let index = unsafe { ngx_http_get_variable_index(cf, &mut name) };
    if index == ngx::ffi::NGX_ERROR as ngx_int_t {
        return Err(());
    }
    Ok(index as isize)
}

/// Index of the variable `name` (no `$`), registering it for this configuration.
fn named_variable_index(cf: *mut ngx_conf_t, name: &'static str) -> Result<isize, ()> {
    let mut n = ngx_str_t { data: name.as_ptr() as *mut u8, len: name.len() };
    // SAFETY: cf is valid; nginx copies the name it keeps.
    let index = unsafe { ngx_http_get_variable_index(cf, &mut n) };
    if index == ngx::ffi::NGX_ERROR as ngx_int_t {
        return Err(());
    }
    Ok(index as isize)
}

/// Parse a zone size argument (at least [`MIN_ZONE_SIZE`]).
fn zone_size_arg(cf: *mut ngx_conf_t) -> Result<usize, ()> {
    // SAFETY: NGX_CONF_TAKE1 guarantees args[1].
    let arg = unsafe { &mut args(cf)[1] };
    // SAFETY: arg is a valid ngx_str_t.
    let size = unsafe { ngx_parse_size(arg) };
    if size == ngx::ffi::NGX_ERROR as isize {
        ngx_conf_log_error!(NGX_LOG_EMERG, cf, "invalid zone size \"{}\"", arg);
        return Err(());
    }
    if (size as usize) < MIN_ZONE_SIZE {
        ngx_conf_log_error!(NGX_LOG_EMERG, cf, "zone size \"{}\" is too small (minimum 32k)", arg);
        return Err(());
    }
    Ok(size as usize)
}

/// `ingress_lb_zone SIZE;`
pub(crate) unsafe extern "C" fn set_zone(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: conf is our main configuration (NGX_HTTP_MAIN_CONF_OFFSET).
    let mcf = unsafe { &mut *(conf as *mut MainConf) };
    if mcf.zone_size != 0 {
        return c"is duplicate".as_ptr() as *mut c_char;
    }
    let Ok(size) = zone_size_arg(cf) else { return NGX_CONF_ERROR };
    mcf.zone_size = size;
    mcf.used = true;
    NGX_CONF_OK
}

/// `ingress_lb_servers_zone SIZE;`
pub(crate) unsafe extern "C" fn set_servers_zone(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: conf is our main configuration (NGX_HTTP_MAIN_CONF_OFFSET).
    let mcf = unsafe { &mut *(conf as *mut MainConf) };
    if mcf.servers_zone_size != 0 {
        return c"is duplicate".as_ptr() as *mut c_char;
    }
    let Ok(size) = zone_size_arg(cf) else { return NGX_CONF_ERROR };
    mcf.servers_zone_size = size;
    mcf.used = true;
    NGX_CONF_OK
}

/// `ingress_lb_state_path DIR;`: a relative path is taken from nginx's prefix.
pub(crate) unsafe extern "C" fn set_state_path(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: conf is our main configuration (NGX_HTTP_MAIN_CONF_OFFSET).
    let mcf = unsafe { &mut *(conf as *mut MainConf) };
    if mcf.state_dir.len != 0 {
        return c"is duplicate".as_ptr() as *mut c_char;
    }
    // SAFETY: NGX_CONF_TAKE1 guarantees args[1].
    let mut value = unsafe { args(cf)[1] };
    if value.len == 0 || value.as_bytes().contains(&0) {
        ngx_conf_log_error!(NGX_LOG_EMERG, cf, "invalid state path \"{}\"", value);
        return NGX_CONF_ERROR;
    }
    // SAFETY: cf is valid; nginx allocates the full name from the cycle's pool.
    if unsafe { ngx_conf_full_name((*cf).cycle, &mut value, 0) } != ngx::ffi::NGX_OK as ngx_int_t {
        return NGX_CONF_ERROR;
    }
    mcf.state_dir = value;
    NGX_CONF_OK
}

/// `ingress_lb_ewma_zone SIZE;`
pub(crate) unsafe extern "C" fn set_ewma_zone(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: conf is our main configuration (NGX_HTTP_MAIN_CONF_OFFSET).
    let mcf = unsafe { &mut *(conf as *mut MainConf) };
    if mcf.ewma_zone_size != 0 {
        return c"is duplicate".as_ptr() as *mut c_char;
    }
    let Ok(size) = zone_size_arg(cf) else { return NGX_CONF_ERROR };
    mcf.ewma_zone_size = size;
    NGX_CONF_OK
}

/// `ingress_lb_configuration;`
pub(crate) unsafe extern "C" fn set_configuration(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: conf is our location configuration (NGX_HTTP_LOC_CONF_OFFSET).
    let lcf = unsafe { &mut *(conf as *mut LocConf) };
    if lcf.is_api {
        return c"is duplicate".as_ptr() as *mut c_char;
    }
    lcf.is_api = true;
    let Some(mcf) = main_conf(cf) else { return NGX_CONF_ERROR };
    mcf.used = true;
    // SAFETY: inside a location the core module's location configuration exists.
    let Some(clcf) = NgxHttpCoreModule::location_conf_mut(unsafe { &*cf }) else {
        return NGX_CONF_ERROR;
    };
    clcf.handler = Some(crate::api::handler);
    NGX_CONF_OK
}

/// `ingress_lb [$variable];` inside `upstream {}`.
pub(crate) unsafe extern "C" fn set_upstream(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: conf is our server configuration of the enclosing upstream block.
    let scf = unsafe { &mut *(conf as *mut SrvConf) };
    if scf.var_index != UNSET {
        return c"is duplicate".as_ptr() as *mut c_char;
    }
    // SAFETY: cf is valid; the directive has 1 or 2 words.
    let a = unsafe { args(cf) };
    let Ok(index) = variable_index(cf, a.get(1).copied()) else { return NGX_CONF_ERROR };
    scf.var_index = index;

    let Some(mcf) = main_conf(cf) else { return NGX_CONF_ERROR };
    mcf.used = true;
    if !mcf.balancer_used {
        mcf.balancer_used = true;
        // Variables the balancer writes ($balancer_ewma_score, defined by this module)
        // and reads after the response (the upstream module's).
        let indexes = (|| {
            mcf.score_index = named_variable_index(cf, crate::ewma::SCORE_VARIABLE)?;
            mcf.alternative_index = named_variable_index(cf, crate::canary::ALTERNATIVE_VARIABLE)?;
            mcf.upstream_vars = UpstreamVars {
                addr: named_variable_index(cf, "upstream_addr")?,
                status: named_variable_index(cf, "upstream_status")?,
                connect_time: named_variable_index(cf, "upstream_connect_time")?,
                response_time: named_variable_index(cf, "upstream_response_time")?,
            };
            Ok::<(), ()>(())
        })();
        if indexes.is_err() {
            return NGX_CONF_ERROR;
        }
    }

    // SAFETY: inside upstream{}, cf->ctx is the upstream's context.
    let Some(uscf) = NgxHttpUpstreamModule::server_conf_mut(unsafe { &*cf }) else {
        return NGX_CONF_ERROR;
    };
    if uscf.peer.init_upstream.is_some() {
        ngx_conf_log_error!(NGX_LOG_WARN, cf, "load balancing method redefined");
    }
    uscf.peer.init_upstream = Some(init_upstream);
    uscf.flags = NGX_HTTP_UPSTREAM_CREATE as ngx_uint_t;
    NGX_CONF_OK
}

/// `peer.init_upstream` of an `ingress_lb` upstream: the `server` lines are placeholders;
/// every request gets its peers from the core.
unsafe extern "C" fn init_upstream(_cf: *mut ngx_conf_t, us: *mut ngx_http_upstream_srv_conf_t) -> ngx_int_t {
    // SAFETY: nginx passes a valid upstream configuration.
    unsafe { (*us).peer.init = Some(crate::balancer::init_peer) };
    ngx::ffi::NGX_OK as ngx_int_t
}

/// `ingress_lb_route on | off | $variable;`
pub(crate) unsafe extern "C" fn set_route(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: conf is our location configuration.
    let lcf = unsafe { &mut *(conf as *mut LocConf) };
    if lcf.route_var != UNSET {
        return c"is duplicate".as_ptr() as *mut c_char;
    }
    // SAFETY: NGX_CONF_TAKE1 guarantees args[1].
    let arg = unsafe { args(cf)[1] };
    match arg.as_bytes() {
        b"off" => {
            lcf.route_var = OFF;
            return NGX_CONF_OK;
        }
        b"on" => match variable_index(cf, None) {
            Ok(i) => lcf.route_var = i,
            Err(()) => return NGX_CONF_ERROR,
        },
        v if v.first() == Some(&b'$') => match variable_index(cf, Some(arg)) {
            Ok(i) => lcf.route_var = i,
            Err(()) => return NGX_CONF_ERROR,
        },
        _ => {
            ngx_conf_log_error!(
                NGX_LOG_EMERG,
                cf,
                "invalid value \"{}\", it must be \"on\", \"off\" or a $variable",
                arg
            );
            return NGX_CONF_ERROR;
        }
    }
    let Some(mcf) = main_conf(cf) else { return NGX_CONF_ERROR };
    mcf.used = true;
    mcf.route_used = true;
    NGX_CONF_OK
}

/// After the http block is parsed: add the shared zone (default size when only other
/// directives are used); when an upstream uses `ingress_lb`, add the ewma statistics
/// zone and install the log phase handler that reports timings; install the preaccess
/// handler of `ingress_lb_route`.
///
/// # Safety
/// `cf` must be the valid configuration context of postconfiguration.
pub(crate) unsafe fn postconfiguration(cf: *mut ngx_conf_t) -> ngx_int_t {
    let Some(mcf) = main_conf(cf) else { return ngx::ffi::NGX_ERROR as ngx_int_t };
    if !mcf.used {
        return ngx::ffi::NGX_OK as ngx_int_t;
    }
    let size = if mcf.zone_size != 0 { mcf.zone_size } else { DEFAULT_ZONE_SIZE };
    // SAFETY: cf is valid during postconfiguration; mcf lives as long as the cycle.
    mcf.shm_zone = unsafe { shared::add_zone(cf, Kind::Backends, size) };
    if mcf.shm_zone.is_null() {
        return ngx::ffi::NGX_ERROR as ngx_int_t;
    }
    let size = if mcf.servers_zone_size != 0 { mcf.servers_zone_size } else { DEFAULT_SERVERS_ZONE_SIZE };
    // SAFETY: as above.
    mcf.servers_shm_zone = unsafe { shared::add_zone(cf, Kind::Servers, size) };
    if mcf.servers_shm_zone.is_null() {
        return ngx::ffi::NGX_ERROR as ngx_int_t;
    }

    // `ingress_lb_certificate on`: the handshake callback on each such server's SSL_CTX.
    #[cfg(ngx_ssl)]
    if mcf.certificate_used {
        // SAFETY: cf is valid during postconfiguration; every server is merged.
        if unsafe { crate::certificate::install(cf, mcf) }.is_err() {
            return ngx::ffi::NGX_ERROR as ngx_int_t;
        }
    }

    if mcf.balancer_used {
        let size = if mcf.ewma_zone_size != 0 { mcf.ewma_zone_size } else { crate::ewma::DEFAULT_ZONE_SIZE };
        // SAFETY: cf is valid during postconfiguration.
        mcf.ewma_shm_zone = unsafe { crate::ewma::add_zone(cf, size) };
        if mcf.ewma_shm_zone.is_null() {
            return ngx::ffi::NGX_ERROR as ngx_int_t;
        }

        // SAFETY: inside http{}, the core module's main configuration exists.
        let Some(cmcf) = NgxHttpCoreModule::main_conf_mut(unsafe { &*cf }) else {
            return ngx::ffi::NGX_ERROR as ngx_int_t;
        };
        let handlers = &mut cmcf.phases[ngx_http_phases_NGX_HTTP_LOG_PHASE as usize].handlers;
        // SAFETY: the phase handlers array is an ngx_array_t of ngx_http_handler_pt.
        let h = unsafe { ngx_array_push(handlers) } as *mut ngx_http_handler_pt;
        if h.is_null() {
            return ngx::ffi::NGX_ERROR as ngx_int_t;
        }
        // SAFETY: h points to a fresh element of the array.
        unsafe { *h = Some(crate::ewma::log_handler) };
    }

    if mcf.route_used {
        // SAFETY: inside http{}, the core module's main configuration exists.
        let Some(cmcf) = NgxHttpCoreModule::main_conf_mut(unsafe { &*cf }) else {
            return ngx::ffi::NGX_ERROR as ngx_int_t;
        };
        let handlers = &mut cmcf.phases[ngx_http_phases_NGX_HTTP_PREACCESS_PHASE as usize].handlers;
        // SAFETY: the phase handlers array is an ngx_array_t of ngx_http_handler_pt.
        let h = unsafe { ngx_array_push(handlers) } as *mut ngx_http_handler_pt;
        if h.is_null() {
            return ngx::ffi::NGX_ERROR as ngx_int_t;
        }
        // SAFETY: h points to a fresh element of the array.
        unsafe { *h = Some(crate::route::handler) };
    }
    ngx::ffi::NGX_OK as ngx_int_t
}
