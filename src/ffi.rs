//! The C ABI declared in `include/ingress_lb.h`.
//!
//! Every export checks its pointers and lengths and runs its body inside
//! [`std::panic::catch_unwind`], so a panic never unwinds into nginx or LuaJIT.
//! `build.rs` checks that the functions here and the header's prototypes agree.

use std::ffi::{c_char, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::pick::{PickCtx, ADDR_MAX, COOKIE_MAX};
use crate::request::Request;
use crate::{
    header_name_is, AlgorithmKind, Collected, ConfigError, Core, Headers, PickError, Progress, MAX_CONFIG_BYTES,
};

pub mod certs;
pub mod state;

/// `ILB_ABI_VERSION` of the header.
pub const ABI_VERSION: u32 = 1;

/// `ilb_result`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IlbResult {
    Ok = 0,
    NullArgument = 1,
    InvalidArgument = 2,
    ConfigRejected = 3,
    UnknownBackend = 4,
    NoEndpoints = 5,
    Panic = 6,
    NoCertificate = 7,
}

impl From<PickError> for IlbResult {
    fn from(e: PickError) -> Self {
        match e {
            PickError::UnknownBackend => IlbResult::UnknownBackend,
            PickError::NoEndpoints => IlbResult::NoEndpoints,
        }
    }
}

/// `ilb_core`: the opaque handle.
pub struct IlbCore {
    core: Core,
}

/// `ilb_peer`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct IlbPeer {
    pub addr: [c_char; ADDR_MAX],
    pub addr_len: u32,
    pub port: u16,
    pub family: u8,
    pub reserved: u8,
    pub index: u32,
    pub score: f64,
    pub set_cookie_len: u32,
    pub set_cookie: [c_char; COOKIE_MAX],
}

/// `ilb_request`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct IlbRequest {
    pub hash_key: *const c_char,
    pub hash_key_len: usize,
    pub cookie: *const c_char,
    pub cookie_len: usize,
    pub host: *const c_char,
    pub host_len: usize,
    pub location_path: *const c_char,
    pub location_path_len: usize,
    pub user_agent: *const c_char,
    pub user_agent_len: usize,
    pub now: f64,
    pub https: u32,
    pub reserved: u32,
}

/// `ilb_backend_info`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct IlbBackendInfo {
    pub algorithm: u32,
    pub needs: u32,
}

/// `ilb_algorithm` value of an algorithm.
fn algorithm_code(kind: AlgorithmKind) -> u32 {
    match kind {
        AlgorithmKind::RoundRobin => 0,
        AlgorithmKind::Ewma => 1,
        AlgorithmKind::Chash => 2,
        AlgorithmKind::ChashSubset => 3,
        AlgorithmKind::StickyBalanced => 4,
        AlgorithmKind::StickyPersistent => 5,
    }
}

/// Borrow the fields of an `ilb_request` (NULL: the empty request).
///
/// # Safety
/// `req` must be NULL or point to a readable ilb_request whose (pointer, length) pairs
/// follow the contract of `bytes` for the returned lifetime.
unsafe fn request<'a>(req: *const IlbRequest) -> Result<Request<'a>, IlbResult> {
    // SAFETY: per the contract above.
    let Some(r) = (unsafe { req.as_ref() }) else {
        return Ok(Request::EMPTY);
    };
    // SAFETY: each pair is a caller-provided (pointer, length) per the contract.
    unsafe {
        Ok(Request {
            hash_key: bytes(r.hash_key.cast(), r.hash_key_len)?,
            cookie: bytes(r.cookie.cast(), r.cookie_len)?,
            host: bytes(r.host.cast(), r.host_len)?,
            location_path: bytes(r.location_path.cast(), r.location_path_len)?,
            user_agent: bytes(r.user_agent.cast(), r.user_agent_len)?,
            https: r.https != 0,
            now: r.now,
        })
    }
}

/// Run `f`, turning a panic into `ILB_PANIC`.
fn guard(f: impl FnOnce() -> IlbResult) -> IlbResult {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(IlbResult::Panic)
}

/// Borrow a (pointer, length) byte slice, `(NULL, 0)` being the empty slice.
///
/// # Safety
/// If `ptr` is not NULL it must point to `len` readable bytes that stay valid and
/// unmodified for the returned lifetime.
unsafe fn bytes<'a>(ptr: *const u8, len: usize) -> Result<&'a [u8], IlbResult> {
    if ptr.is_null() {
        return if len == 0 { Ok(&[]) } else { Err(IlbResult::NullArgument) };
    }
    if len > isize::MAX as usize {
        return Err(IlbResult::InvalidArgument);
    }
    // SAFETY: non-null, length bounded by isize::MAX, readability is the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// Borrow the core behind a handle.
///
/// # Safety
/// `core` must be NULL or a pointer returned by `ilb_core_new` and not yet freed.
unsafe fn core_ref<'a>(core: *const IlbCore) -> Result<&'a Core, IlbResult> {
    // SAFETY: per the contract above, a non-null handle points to a live IlbCore.
    unsafe { core.as_ref() }.map(|c| &c.core).ok_or(IlbResult::NullArgument)
}

/// Write `msg` as text into a caller's buffer, truncated on a character boundary and
/// NUL-terminated.
///
/// # Safety
/// `err` must be NULL or point to `err_cap` writable bytes; `err_len` NULL or writable.
unsafe fn write_text(msg: &str, err: *mut c_char, err_cap: usize, err_len: *mut usize) {
    let mut n = 0;
    if !err.is_null() && err_cap > 0 {
        n = msg.len().min(err_cap - 1);
        while !msg.is_char_boundary(n) {
            n -= 1;
        }
        // SAFETY: err has err_cap writable bytes and n + 1 <= err_cap; msg has n readable bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(msg.as_ptr(), err.cast::<u8>(), n);
            *err.add(n) = 0;
        }
    }
    if !err_len.is_null() {
        // SAFETY: err_len is non-null and writable by contract.
        unsafe { *err_len = n };
    }
}

/// Shared body of apply/validate: check arguments, run, report errors as text.
///
/// # Safety
/// The pointer arguments follow the contracts of `bytes`, `core_ref` and `write_error`.
unsafe fn config_call(
    core: *const IlbCore,
    json: *const u8,
    json_len: usize,
    err: *mut c_char,
    err_cap: usize,
    err_len: *mut usize,
    op: impl FnOnce(&Core, &[u8]) -> Result<(), ConfigError>,
) -> IlbResult {
    // SAFETY: forwarded caller contracts.
    let (core, doc) = match unsafe { core_ref(core).and_then(|c| Ok((c, bytes(json, json_len)?))) } {
        Ok(v) => v,
        Err(code) => {
            // SAFETY: forwarded caller contract.
            unsafe { write_text(null_or_invalid_text(code), err, err_cap, err_len) };
            return code;
        }
    };
    if doc.len() > MAX_CONFIG_BYTES {
        let e = ConfigError::TooLarge { size: doc.len(), limit: MAX_CONFIG_BYTES };
        // SAFETY: forwarded caller contract.
        unsafe { write_text(&e.to_string(), err, err_cap, err_len) };
        return IlbResult::InvalidArgument;
    }
    match op(core, doc) {
        Ok(()) => IlbResult::Ok,
        Err(e) => {
            // SAFETY: forwarded caller contract.
            unsafe { write_text(&e.to_string(), err, err_cap, err_len) };
            IlbResult::ConfigRejected
        }
    }
}

fn null_or_invalid_text(code: IlbResult) -> &'static str {
    match code {
        IlbResult::NullArgument => "a required pointer argument is NULL",
        _ => "invalid argument",
    }
}

#[no_mangle]
pub extern "C" fn ilb_version() -> *const c_char {
    static VERSION: &CStr = match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
        Ok(v) => v,
        Err(_) => c"unknown",
    };
    VERSION.as_ptr()
}

#[no_mangle]
pub extern "C" fn ilb_abi_version() -> u32 {
    ABI_VERSION
}

#[no_mangle]
pub extern "C" fn ilb_result_name(result: std::ffi::c_int) -> *const c_char {
    // Taken as a C int, not IlbResult: a C caller may pass a value outside the enum,
    // which would be undefined behaviour as a Rust enum.
    let name: &'static CStr = match result {
        0 => c"ILB_OK",
        1 => c"ILB_NULL_ARGUMENT",
        2 => c"ILB_INVALID_ARGUMENT",
        3 => c"ILB_CONFIG_REJECTED",
        4 => c"ILB_UNKNOWN_BACKEND",
        5 => c"ILB_NO_ENDPOINTS",
        6 => c"ILB_PANIC",
        7 => c"ILB_NO_CERTIFICATE",
        _ => c"ILB_UNKNOWN_RESULT",
    };
    name.as_ptr()
}

/// # Safety
/// `core_out` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ilb_core_new(core_out: *mut *mut IlbCore) -> IlbResult {
    guard(|| {
        if core_out.is_null() {
            return IlbResult::NullArgument;
        }
        let handle = Box::into_raw(Box::new(IlbCore { core: Core::new() }));
        // SAFETY: core_out is non-null and writable by contract.
        unsafe { *core_out = handle };
        IlbResult::Ok
    })
}

/// # Safety
/// `core` must be NULL or a handle from `ilb_core_new` not freed before, and no other
/// thread may use it during or after this call.
#[no_mangle]
pub unsafe extern "C" fn ilb_core_free(core: *mut IlbCore) {
    let _ = guard(|| {
        if !core.is_null() {
            // SAFETY: the handle came from Box::into_raw in ilb_core_new and is freed once.
            drop(unsafe { Box::from_raw(core) });
        }
        IlbResult::Ok
    });
}

/// # Safety
/// See `include/ingress_lb.h`: `core` a live handle, `json` `json_len` readable bytes,
/// `err` `err_cap` writable bytes or NULL, `err_len` writable or NULL.
#[no_mangle]
pub unsafe extern "C" fn ilb_core_apply_backends(
    core: *mut IlbCore,
    json: *const u8,
    json_len: usize,
    err: *mut c_char,
    err_cap: usize,
    err_len: *mut usize,
) -> IlbResult {
    guard(|| {
        // SAFETY: forwarded caller contracts.
        unsafe { config_call(core, json, json_len, err, err_cap, err_len, |c, doc| c.apply_backends(doc).map(|_| ())) }
    })
}

/// # Safety
/// As `ilb_core_apply_backends`.
#[no_mangle]
pub unsafe extern "C" fn ilb_core_validate_backends(
    core: *const IlbCore,
    json: *const u8,
    json_len: usize,
    err: *mut c_char,
    err_cap: usize,
    err_len: *mut usize,
) -> IlbResult {
    guard(|| {
        // SAFETY: forwarded caller contracts.
        unsafe { config_call(core, json, json_len, err, err_cap, err_len, |c, doc| c.validate_backends(doc)) }
    })
}

/// `ilb_apply_state`: where a configuration started with
/// `ilb_core_apply_backends_or_start` is.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IlbApplyState {
    Idle = 0,
    Applied = 1,
    Started = 2,
    Busy = 3,
    Running = 4,
    Superseded = 5,
}

/// # Safety
/// As `ilb_core_apply_backends`; `state_out` writable (not NULL).
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn ilb_core_apply_backends_or_start(
    core: *mut IlbCore,
    json: *const u8,
    json_len: usize,
    inline_bytes: usize,
    state_out: *mut IlbApplyState,
    err: *mut c_char,
    err_cap: usize,
    err_len: *mut usize,
) -> IlbResult {
    guard(|| {
        if state_out.is_null() {
            // SAFETY: forwarded caller contract.
            unsafe { write_text(null_or_invalid_text(IlbResult::NullArgument), err, err_cap, err_len) };
            return IlbResult::NullArgument;
        }
        let mut state = IlbApplyState::Idle;
        // SAFETY: forwarded caller contracts.
        let code = unsafe {
            config_call(core, json, json_len, err, err_cap, err_len, |c, doc| {
                state = match c.apply_backends_or_start(doc, inline_bytes)? {
                    Progress::Applied(_) => IlbApplyState::Applied,
                    Progress::Started => IlbApplyState::Started,
                    Progress::Busy => IlbApplyState::Busy,
                };
                Ok(())
            })
        };
        if code == IlbResult::Ok {
            // SAFETY: checked non-null above; writable by contract.
            unsafe { *state_out = state };
        }
        code
    })
}

/// # Safety
/// `core` a live handle or NULL; `state_out` writable (not NULL); `err` `err_cap`
/// writable bytes or NULL; `err_len` writable or NULL.
#[no_mangle]
pub unsafe extern "C" fn ilb_core_collect_backends(
    core: *mut IlbCore,
    state_out: *mut IlbApplyState,
    err: *mut c_char,
    err_cap: usize,
    err_len: *mut usize,
) -> IlbResult {
    guard(|| {
        // SAFETY: caller contract.
        let core = match unsafe { core_ref(core) } {
            Ok(c) if !state_out.is_null() => c,
            Ok(_) => return IlbResult::NullArgument,
            Err(e) => return e,
        };
        let state = match core.collect_backends() {
            Collected::Idle => IlbApplyState::Idle,
            Collected::Running => IlbApplyState::Running,
            Collected::Applied(_) => IlbApplyState::Applied,
            Collected::Superseded => IlbApplyState::Superseded,
            Collected::Rejected(e) => {
                // SAFETY: forwarded caller contract.
                unsafe { write_text(&e.to_string(), err, err_cap, err_len) };
                return IlbResult::ConfigRejected;
            }
        };
        // SAFETY: checked non-null above; writable by contract.
        unsafe { *state_out = state };
        IlbResult::Ok
    })
}

/// # Safety
/// `core` a live handle or NULL; `buf` `buf_cap` writable bytes or NULL; `len_out`
/// writable or NULL.
#[no_mangle]
pub unsafe extern "C" fn ilb_core_warnings(
    core: *const IlbCore,
    buf: *mut c_char,
    buf_cap: usize,
    len_out: *mut usize,
) -> IlbResult {
    guard(|| {
        // SAFETY: caller contract.
        let core = match unsafe { core_ref(core) } {
            Ok(c) => c,
            Err(e) => return e,
        };
        if buf.is_null() && buf_cap > 0 {
            return IlbResult::NullArgument;
        }
        // SAFETY: buf has buf_cap writable bytes (or is NULL with buf_cap 0); len_out per contract.
        unsafe { write_text(&core.warnings(), buf, buf_cap, len_out) };
        IlbResult::Ok
    })
}

/// # Safety
/// `core` a live handle or NULL; `generation_out` writable or NULL.
#[no_mangle]
pub unsafe extern "C" fn ilb_core_generation(core: *const IlbCore, generation_out: *mut u64) -> IlbResult {
    guard(|| {
        // SAFETY: caller contract.
        let core = match unsafe { core_ref(core) } {
            Ok(c) => c,
            Err(e) => return e,
        };
        if generation_out.is_null() {
            return IlbResult::NullArgument;
        }
        // SAFETY: non-null and writable by contract.
        unsafe { *generation_out = core.generation() };
        IlbResult::Ok
    })
}

/// # Safety
/// `core` a live handle or NULL; `name` `name_len` readable bytes or (NULL, 0).
#[no_mangle]
pub unsafe extern "C" fn ilb_core_has_backend(core: *const IlbCore, name: *const c_char, name_len: usize) -> IlbResult {
    guard(|| {
        // SAFETY: caller contracts.
        let (core, name) = match unsafe { core_ref(core).and_then(|c| Ok((c, bytes(name.cast(), name_len)?))) } {
            Ok(v) => v,
            Err(e) => return e,
        };
        match core.check_backend(name) {
            Ok(()) => IlbResult::Ok,
            Err(e) => e.into(),
        }
    })
}

/// # Safety
/// `ctx` writable or NULL.
#[no_mangle]
pub unsafe extern "C" fn ilb_pick_ctx_init(ctx: *mut PickCtx) {
    let _ = guard(|| {
        if !ctx.is_null() {
            // SAFETY: non-null, and a writable ilb_pick_ctx by contract; any prior content
            // is plain data, so overwriting without dropping is fine.
            unsafe { ctx.write(PickCtx::new()) };
        }
        IlbResult::Ok
    });
}

/// # Safety
/// `core` a live handle or NULL; `name` `name_len` readable bytes or (NULL, 0);
/// `req` NULL or a readable ilb_request; `ctx` an initialised, writable ilb_pick_ctx
/// or NULL; `peer_out` writable or NULL.
#[no_mangle]
pub unsafe extern "C" fn ilb_core_pick(
    core: *const IlbCore,
    name: *const c_char,
    name_len: usize,
    req: *const IlbRequest,
    ctx: *mut PickCtx,
    peer_out: *mut IlbPeer,
) -> IlbResult {
    guard(|| {
        // SAFETY: caller contracts.
        let (core, name, req) =
            match unsafe { core_ref(core).and_then(|c| Ok((c, bytes(name.cast(), name_len)?, request(req)?))) } {
                Ok(v) => v,
                Err(e) => return e,
            };
        // SAFETY: ctx is NULL or a valid, exclusively borrowed ilb_pick_ctx by contract.
        let Some(ctx) = (unsafe { ctx.as_mut() }) else {
            return IlbResult::NullArgument;
        };
        if peer_out.is_null() {
            return IlbResult::NullArgument;
        }
        // A context from C may hold any tried_len; PickCtx clamps it when reading.
        let picked = core.pick_with(name, &req, ctx, |picked| {
            let peer = picked.peer;
            let text = peer.text().as_bytes();
            let addr = peer.addr();
            // SAFETY: peer_out is non-null and points to a writable (possibly
            // uninitialised) ilb_peer by contract; every write goes through a raw field
            // pointer, or a byte slice over the set_cookie array (bytes have no invalid
            // values, and write_to only writes); nothing is read. text.len() is at most
            // 47 < ADDR_MAX, which leaves room for the NUL.
            unsafe {
                let buf = std::ptr::addr_of_mut!((*peer_out).addr).cast::<u8>();
                std::ptr::copy_nonoverlapping(text.as_ptr(), buf, text.len());
                buf.add(text.len()).write(0);
                std::ptr::addr_of_mut!((*peer_out).addr_len).write(text.len() as u32);
                std::ptr::addr_of_mut!((*peer_out).port).write(addr.port());
                std::ptr::addr_of_mut!((*peer_out).family).write(if addr.is_ipv4() { 4 } else { 6 });
                std::ptr::addr_of_mut!((*peer_out).reserved).write(0);
                std::ptr::addr_of_mut!((*peer_out).index).write(peer.index());
                std::ptr::addr_of_mut!((*peer_out).score).write(picked.score);
                let cookie = std::ptr::addr_of_mut!((*peer_out).set_cookie).cast::<u8>();
                let cookie_buf = std::slice::from_raw_parts_mut(cookie, COOKIE_MAX);
                // Leave room for the NUL; a cookie that does not fit is not sent.
                let n = picked.set_cookie.and_then(|c| c.write_to(&mut cookie_buf[..COOKIE_MAX - 1])).unwrap_or(0);
                cookie_buf[n] = 0;
                std::ptr::addr_of_mut!((*peer_out).set_cookie_len).write(n as u32);
            }
        });
        match picked {
            Ok(()) => IlbResult::Ok,
            Err(e) => e.into(),
        }
    })
}

/// # Safety
/// `core` a live handle or NULL; `name` `name_len` readable bytes or (NULL, 0);
/// `info_out` writable or NULL.
#[no_mangle]
pub unsafe extern "C" fn ilb_core_backend_info(
    core: *const IlbCore,
    name: *const c_char,
    name_len: usize,
    info_out: *mut IlbBackendInfo,
) -> IlbResult {
    guard(|| {
        // SAFETY: caller contracts.
        let (core, name) = match unsafe { core_ref(core).and_then(|c| Ok((c, bytes(name.cast(), name_len)?))) } {
            Ok(v) => v,
            Err(e) => return e,
        };
        if info_out.is_null() {
            return IlbResult::NullArgument;
        }
        let Some(info) = core.backend_info(name) else {
            return IlbResult::UnknownBackend;
        };
        let needs = u32::from(info.needs_hash_key)
            | u32::from(info.needs_cookie) << 1
            | u32::from(info.needs_timing) << 2
            | u32::from(info.has_alternatives) << 3;
        // SAFETY: non-null and writable by contract.
        unsafe { info_out.write(IlbBackendInfo { algorithm: algorithm_code(info.algorithm), needs }) };
        IlbResult::Ok
    })
}

/// # Safety
/// `core` a live handle or NULL; `name` readable for `name_len` bytes; `buf` NULL
/// (with `buf_cap` 0) or writable for `buf_cap` bytes; `len_out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ilb_core_backend_hash_by(
    core: *const IlbCore,
    name: *const c_char,
    name_len: usize,
    buf: *mut c_char,
    buf_cap: usize,
    len_out: *mut usize,
) -> IlbResult {
    // SAFETY: the caller's contract is text_about_backend's.
    unsafe { text_about_backend(core, name, name_len, buf, buf_cap, len_out, |c, n| c.hash_by(n, str::to_owned)) }
}

/// # Safety
/// As `ilb_core_backend_hash_by`.
#[no_mangle]
pub unsafe extern "C" fn ilb_core_backend_alternatives(
    core: *const IlbCore,
    name: *const c_char,
    name_len: usize,
    buf: *mut c_char,
    buf_cap: usize,
    len_out: *mut usize,
) -> IlbResult {
    // SAFETY: the caller's contract is text_about_backend's.
    unsafe {
        text_about_backend(core, name, name_len, buf, buf_cap, len_out, |c, n| {
            c.has_backend(n).then(|| lines(c.alternatives(n)))
        })
    }
}

/// # Safety
/// As `ilb_core_backend_hash_by`.
#[no_mangle]
pub unsafe extern "C" fn ilb_core_backend_route_headers(
    core: *const IlbCore,
    name: *const c_char,
    name_len: usize,
    buf: *mut c_char,
    buf_cap: usize,
    len_out: *mut usize,
) -> IlbResult {
    // SAFETY: the caller's contract is text_about_backend's.
    unsafe {
        text_about_backend(core, name, name_len, buf, buf_cap, len_out, |c, n| {
            c.has_backend(n).then(|| lines(c.route_headers(n)))
        })
    }
}

/// Each item followed by a newline.
fn lines(items: Vec<String>) -> String {
    items.iter().flat_map(|s| [s.as_str(), "\n"]).collect()
}

/// Shared body of the functions that copy a text about backend `name` out (the
/// hash-by expression, the alternatives, the canary headers): `about` gives the
/// text, or `None` for an unknown backend. The text is truncated to `buf_cap - 1`
/// bytes and NUL-terminated; `*len_out` gets its full length.
///
/// # Safety
/// As `ilb_core_backend_hash_by`.
unsafe fn text_about_backend(
    core: *const IlbCore,
    name: *const c_char,
    name_len: usize,
    buf: *mut c_char,
    buf_cap: usize,
    len_out: *mut usize,
    about: impl FnOnce(&Core, &[u8]) -> Option<String>,
) -> IlbResult {
    guard(|| {
        // SAFETY: caller contracts.
        let (core, name) = match unsafe { core_ref(core).and_then(|c| Ok((c, bytes(name.cast(), name_len)?))) } {
            Ok(v) => v,
            Err(e) => return e,
        };
        if buf.is_null() && buf_cap > 0 {
            return IlbResult::NullArgument;
        }
        let Some(text) = about(core, name) else {
            return IlbResult::UnknownBackend;
        };
        // SAFETY: buf has buf_cap writable bytes (or is NULL with buf_cap 0).
        unsafe { write_text(&text, buf, buf_cap, std::ptr::null_mut()) };
        if !len_out.is_null() {
            // SAFETY: non-null and writable by contract.
            unsafe { *len_out = text.len() };
        }
        IlbResult::Ok
    })
}

/// `ilb_header`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct IlbHeader {
    pub name: *const c_char,
    pub name_len: usize,
    pub value: *const c_char,
    pub value_len: usize,
}

/// An `ilb_header` array whose pointers were checked.
struct CheckedHeaders<'a>(&'a [IlbHeader]);

impl<'a> CheckedHeaders<'a> {
    /// # Safety
    /// `headers` NULL (with `len` 0) or `len` readable ilb_header whose (pointer,
    /// length) pairs are readable for `'a`.
    unsafe fn new(headers: *const IlbHeader, len: usize) -> Result<Self, IlbResult> {
        // SAFETY: the array itself follows the (pointer, length) contract of `bytes`.
        let raw = unsafe {
            bytes(headers.cast::<u8>(), len.checked_mul(size_of::<IlbHeader>()).ok_or(IlbResult::InvalidArgument)?)?
        };
        if raw.is_empty() {
            return Ok(CheckedHeaders(&[]));
        }
        if headers.align_offset(align_of::<IlbHeader>()) != 0 {
            return Err(IlbResult::InvalidArgument);
        }
        // SAFETY: non-null, aligned, `len` elements readable per the contract.
        let all = unsafe { std::slice::from_raw_parts(headers, len) };
        for h in all {
            // SAFETY: each pair follows the contract of `bytes`; checked here once.
            unsafe {
                bytes(h.name.cast(), h.name_len)?;
                bytes(h.value.cast(), h.value_len)?;
            }
        }
        Ok(CheckedHeaders(all))
    }
}

impl Headers for CheckedHeaders<'_> {
    fn get(&self, key: &[u8]) -> Option<&[u8]> {
        // SAFETY (both): the pairs were checked by CheckedHeaders::new and are
        // readable for the struct's lifetime.
        let slice = |p: *const c_char, n: usize| unsafe { bytes(p.cast(), n) }.unwrap_or(&[]);
        self.0.iter().find(|h| header_name_is(slice(h.name, h.name_len), key)).map(|h| slice(h.value, h.value_len))
    }
}

/// # Safety
/// `core` a live handle or NULL; `name` and `cookie` readable for their lengths or
/// (NULL, 0); `headers` NULL (with `headers_len` 0) or `headers_len` readable
/// ilb_header with readable pairs; `alternative_out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ilb_core_route(
    core: *const IlbCore,
    name: *const c_char,
    name_len: usize,
    cookie: *const c_char,
    cookie_len: usize,
    headers: *const IlbHeader,
    headers_len: usize,
    alternative_out: *mut u32,
) -> IlbResult {
    guard(|| {
        // SAFETY: caller contracts, checked by each helper.
        let args = unsafe {
            core_ref(core).and_then(|c| {
                Ok((
                    c,
                    bytes(name.cast(), name_len)?,
                    bytes(cookie.cast(), cookie_len)?,
                    CheckedHeaders::new(headers, headers_len)?,
                ))
            })
        };
        let (core, name, cookie, headers) = match args {
            Ok(v) => v,
            Err(e) => return e,
        };
        if alternative_out.is_null() {
            return IlbResult::NullArgument;
        }
        match core.route_with(name, cookie, &headers, |alt| alt.map_or(0, |(_, i)| i as u32 + 1)) {
            Ok(which) => {
                // SAFETY: non-null and writable by contract.
                unsafe { *alternative_out = which };
                IlbResult::Ok
            }
            Err(e) => e.into(),
        }
    })
}

/// # Safety
/// `core` a live handle or NULL; every (pointer, length) pair readable or (NULL, 0).
#[no_mangle]
pub unsafe extern "C" fn ilb_core_observe(
    core: *const IlbCore,
    name: *const c_char,
    name_len: usize,
    upstream_addr: *const c_char,
    upstream_addr_len: usize,
    upstream_status: *const c_char,
    upstream_status_len: usize,
    connect_time: *const c_char,
    connect_time_len: usize,
    response_time: *const c_char,
    response_time_len: usize,
    now: f64,
) -> IlbResult {
    guard(|| {
        // SAFETY: caller contracts.
        let args = unsafe {
            core_ref(core).and_then(|c| {
                Ok((
                    c,
                    bytes(name.cast(), name_len)?,
                    bytes(upstream_addr.cast(), upstream_addr_len)?,
                    bytes(upstream_status.cast(), upstream_status_len)?,
                    bytes(connect_time.cast(), connect_time_len)?,
                    bytes(response_time.cast(), response_time_len)?,
                ))
            })
        };
        match args {
            Ok((core, name, addr, status, connect, response)) => {
                core.observe(name, addr, status, connect, response, now);
                IlbResult::Ok
            }
            Err(e) => e,
        }
    })
}

/// `ilb_stats`: a reference to ewma statistics in shared memory. The memory lives as
/// long as this handle or any core using it, whichever is last.
pub struct IlbStats {
    stats: std::sync::Arc<crate::SharedStats>,
}

/// # Safety
/// `stats_out` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ilb_stats_new(slots: u32, stats_out: *mut *mut IlbStats) -> IlbResult {
    guard(|| {
        if stats_out.is_null() {
            return IlbResult::NullArgument;
        }
        let Ok(stats) = crate::SharedStats::anonymous(slots) else {
            return IlbResult::InvalidArgument;
        };
        let handle = Box::into_raw(Box::new(IlbStats { stats: std::sync::Arc::new(stats) }));
        // SAFETY: stats_out is non-null and writable by contract.
        unsafe { *stats_out = handle };
        IlbResult::Ok
    })
}

/// # Safety
/// `stats` must be NULL or a handle from `ilb_stats_new` not freed before.
#[no_mangle]
pub unsafe extern "C" fn ilb_stats_free(stats: *mut IlbStats) {
    let _ = guard(|| {
        if !stats.is_null() {
            // SAFETY: the handle came from Box::into_raw in ilb_stats_new and is freed
            // once. Cores using the statistics hold their own reference.
            drop(unsafe { Box::from_raw(stats) });
        }
        IlbResult::Ok
    });
}

/// # Safety
/// `core` a live handle or NULL; `stats` a live handle from `ilb_stats_new` or NULL.
#[no_mangle]
pub unsafe extern "C" fn ilb_core_use_stats(core: *mut IlbCore, stats: *mut IlbStats) -> IlbResult {
    guard(|| {
        // SAFETY: caller contract.
        let core = match unsafe { core_ref(core) } {
            Ok(c) => c,
            Err(e) => return e,
        };
        // SAFETY: NULL or a live handle by contract; only read.
        let Some(stats) = (unsafe { stats.as_ref() }) else {
            return IlbResult::NullArgument;
        };
        core.use_stats(std::sync::Arc::clone(&stats.stats));
        IlbResult::Ok
    })
}
