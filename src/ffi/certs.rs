//! The C ABI of the SNI certificate store (`/* Certificates (SNI) */` in
//! `include/ingress_lb.h`): apply/validate a servers document, look a certificate up
//! by SNI, copy its PEM out. Same conventions as the rest of `src/ffi.rs`.

use std::ffi::c_char;

use super::{bytes, config_call, core_ref, guard, IlbCore, IlbResult};

/// # Safety
/// As `ilb_core_apply_backends`.
#[no_mangle]
pub unsafe extern "C" fn ilb_core_apply_servers(
    core: *mut IlbCore,
    json: *const u8,
    json_len: usize,
    err: *mut c_char,
    err_cap: usize,
    err_len: *mut usize,
) -> IlbResult {
    guard(|| {
        // SAFETY: forwarded caller contracts.
        unsafe { config_call(core, json, json_len, err, err_cap, err_len, |c, doc| c.apply_servers(doc).map(|_| ())) }
    })
}

/// # Safety
/// As `ilb_core_apply_backends`.
#[no_mangle]
pub unsafe extern "C" fn ilb_core_apply_accepted_servers(
    core: *mut IlbCore,
    json: *const u8,
    json_len: usize,
    err: *mut c_char,
    err_cap: usize,
    err_len: *mut usize,
) -> IlbResult {
    guard(|| {
        // SAFETY: forwarded caller contracts.
        unsafe {
            config_call(core, json, json_len, err, err_cap, err_len, |c, doc| c.apply_accepted_servers(doc).map(|_| ()))
        }
    })
}

/// # Safety
/// As `ilb_core_apply_backends`.
#[no_mangle]
pub unsafe extern "C" fn ilb_core_validate_servers(
    core: *const IlbCore,
    json: *const u8,
    json_len: usize,
    err: *mut c_char,
    err_cap: usize,
    err_len: *mut usize,
) -> IlbResult {
    guard(|| {
        // SAFETY: forwarded caller contracts.
        unsafe { config_call(core, json, json_len, err, err_cap, err_len, |c, doc| c.validate_servers(doc)) }
    })
}

/// # Safety
/// `core` a live handle or NULL (0 is returned).
#[no_mangle]
pub unsafe extern "C" fn ilb_core_servers_generation(core: *const IlbCore) -> u64 {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: caller contract.
        unsafe { core_ref(core) }.map_or(0, |c| c.servers_generation())
    }))
    .unwrap_or(0)
}

/// # Safety
/// `core` a live handle or NULL; `host` `host_len` readable bytes or (NULL, 0).
#[no_mangle]
pub unsafe extern "C" fn ilb_core_hostname_has_certificate(
    core: *const IlbCore,
    host: *const c_char,
    host_len: usize,
) -> IlbResult {
    guard(|| {
        // SAFETY: caller contract.
        match unsafe { core_ref(core).and_then(|c| Ok((c, bytes(host.cast(), host_len)?))) } {
            Ok((core, host)) if core.has_own_certificate(host) => IlbResult::Ok,
            Ok(_) => IlbResult::NoCertificate,
            Err(e) => e,
        }
    })
}

/// # Safety
/// `core` a live handle or NULL; `sni` `sni_len` readable bytes or (NULL, 0) for no
/// SNI; `id_out` writable or NULL.
#[no_mangle]
pub unsafe extern "C" fn ilb_core_certificate_lookup(
    core: *const IlbCore,
    sni: *const c_char,
    sni_len: usize,
    id_out: *mut u64,
) -> IlbResult {
    guard(|| {
        // SAFETY: caller contract.
        let core = match unsafe { core_ref(core) } {
            Ok(c) => c,
            Err(e) => return e,
        };
        let sni = if sni.is_null() && sni_len == 0 {
            None
        } else {
            // SAFETY: caller contract: sni_len readable bytes.
            match unsafe { bytes(sni.cast(), sni_len) } {
                Ok(s) => Some(s),
                Err(e) => return e,
            }
        };
        if id_out.is_null() {
            return IlbResult::NullArgument;
        }
        match core.certificate_with(sni, |c| c.map(|c| c.id)) {
            Some(id) => {
                // SAFETY: non-null and writable by contract.
                unsafe { id_out.write(id) };
                IlbResult::Ok
            }
            None => IlbResult::NoCertificate,
        }
    })
}

/// # Safety
/// `core` a live handle or NULL; `buf` `cap` writable bytes or NULL with `cap` 0;
/// `len` writable or NULL.
#[no_mangle]
pub unsafe extern "C" fn ilb_core_certificate_pem(
    core: *const IlbCore,
    id: u64,
    buf: *mut c_char,
    cap: usize,
    len: *mut usize,
) -> IlbResult {
    guard(|| {
        // SAFETY: caller contract.
        let core = match unsafe { core_ref(core) } {
            Ok(c) => c,
            Err(e) => return e,
        };
        if len.is_null() || (buf.is_null() && cap > 0) {
            return IlbResult::NullArgument;
        }
        core.certificate_by_id_with(id, |c| {
            let Some(c) = c else {
                return IlbResult::NoCertificate;
            };
            let pem = c.pem;
            // The PEM and a NUL.
            let Some(needed) = pem.len().checked_add(1).filter(|&n| n <= cap) else {
                // SAFETY: len is non-null and writable by contract.
                unsafe { len.write(pem.len() + 1) };
                return IlbResult::InvalidArgument;
            };
            // SAFETY: buf has cap >= needed writable bytes (so it is not NULL); pem has
            // pem.len() readable bytes and cannot overlap a caller's buffer.
            unsafe {
                std::ptr::copy_nonoverlapping(pem.as_ptr(), buf.cast::<u8>(), pem.len());
                buf.add(needed - 1).write(0);
                len.write(pem.len());
            }
            IlbResult::Ok
        })
    })
}
