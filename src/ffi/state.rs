//! The C ABI of the configuration on disk (`/* State on disk */` in
//! `include/ingress_lb.h`): save an accepted document, read a saved one back (checked
//! by the core). Same conventions as the rest of `src/ffi.rs`; see [`crate::state`].

use std::ffi::{c_char, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::{bytes, guard, write_text, IlbResult};
use crate::state;

/// Borrow `(dir, kind)` from the caller: the directory as bytes (any path), the kind as
/// UTF-8 (`"backends"` or `"servers"`).
///
/// # Safety
/// As `bytes` for both pairs.
unsafe fn dir_and_kind<'a>(
    dir: *const c_char,
    dir_len: usize,
    kind: *const c_char,
    kind_len: usize,
) -> Result<(&'a Path, &'a str), (IlbResult, String)> {
    let text = |code| (code, "a required pointer argument is NULL".to_string());
    // SAFETY: forwarded caller contract.
    let dir = unsafe { bytes(dir.cast(), dir_len) }.map_err(text)?;
    // SAFETY: forwarded caller contract.
    let kind = unsafe { bytes(kind.cast(), kind_len) }.map_err(text)?;
    let kind = std::str::from_utf8(kind)
        .ok()
        .filter(|k| state::KINDS.contains(k))
        .ok_or_else(|| (IlbResult::InvalidArgument, "kind must be \"backends\" or \"servers\"".to_string()))?;
    if dir.is_empty() || dir.contains(&0) {
        return Err((IlbResult::InvalidArgument, "the state directory must be a non-empty path".to_string()));
    }
    Ok((Path::new(OsStr::from_bytes(dir)), kind))
}

/// # Safety
/// `dir`, `kind`, `doc`: (pointer, length) pairs as `ilb_core_apply_backends`'s JSON;
/// `err` `err_cap` writable bytes or NULL; `err_len` writable or NULL.
#[no_mangle]
pub unsafe extern "C" fn ilb_state_save(
    dir: *const c_char,
    dir_len: usize,
    kind: *const c_char,
    kind_len: usize,
    doc: *const u8,
    doc_len: usize,
    err: *mut c_char,
    err_cap: usize,
    err_len: *mut usize,
) -> IlbResult {
    guard(|| {
        // SAFETY: forwarded caller contracts.
        let checked = unsafe { dir_and_kind(dir, dir_len, kind, kind_len) }.and_then(|(dir, kind)| {
            // SAFETY: forwarded caller contract.
            let doc = unsafe { bytes(doc, doc_len) }
                .map_err(|code| (code, "a required pointer argument is NULL".to_string()))?;
            if doc.is_empty() {
                return Err((IlbResult::InvalidArgument, "an empty document is never saved".to_string()));
            }
            state::save(dir, kind, doc).map_err(|e| (IlbResult::ConfigRejected, e.to_string()))
        });
        match checked {
            Ok(()) => IlbResult::Ok,
            Err((code, msg)) => {
                // SAFETY: forwarded caller contract.
                unsafe { write_text(&msg, err, err_cap, err_len) };
                code
            }
        }
    })
}

/// # Safety
/// `dir`, `kind` as in `ilb_state_save`; `buf` `cap` writable bytes or NULL with `cap`
/// 0; `len` writable (required); `err`, `err_len` as in `ilb_state_save`.
#[no_mangle]
pub unsafe extern "C" fn ilb_state_load(
    dir: *const c_char,
    dir_len: usize,
    kind: *const c_char,
    kind_len: usize,
    buf: *mut u8,
    cap: usize,
    len: *mut usize,
    err: *mut c_char,
    err_cap: usize,
    err_len: *mut usize,
) -> IlbResult {
    guard(|| {
        let result = (|| {
            if len.is_null() || (buf.is_null() && cap > 0) {
                return Err((IlbResult::NullArgument, "a required pointer argument is NULL".to_string()));
            }
            // SAFETY: forwarded caller contracts.
            let (dir, kind) = unsafe { dir_and_kind(dir, dir_len, kind, kind_len) }?;
            let Some(doc) = state::load(dir, kind).map_err(|e| (IlbResult::ConfigRejected, e))? else {
                return Ok(0);
            };
            if doc.len() > cap {
                // Only the size: the caller asks again with a buffer that large.
                // SAFETY: len is non-null and writable by contract.
                unsafe { len.write(doc.len()) };
                return Err((IlbResult::InvalidArgument, format!("the document is {} bytes", doc.len())));
            }
            state::check(dir, kind, &doc).map_err(|e| (IlbResult::ConfigRejected, e))?;
            // SAFETY: buf has cap >= doc.len() writable bytes (non-null when doc is not
            // empty, which a loaded document never is); doc is our own allocation.
            unsafe { std::ptr::copy_nonoverlapping(doc.as_ptr(), buf, doc.len()) };
            Ok(doc.len())
        })();
        match result {
            Ok(n) => {
                // SAFETY: len is non-null (checked first) and writable by contract.
                unsafe { len.write(n) };
                IlbResult::Ok
            }
            Err((code, msg)) => {
                // SAFETY: forwarded caller contract.
                unsafe { write_text(&msg, err, err_cap, err_len) };
                code
            }
        }
    })
}
