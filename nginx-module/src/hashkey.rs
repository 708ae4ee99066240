//! `upstream-hash-by` expressions (chash, chashsubset), evaluated per request with
//! nginx's variables.
//!
//! The grammar is ingress-nginx's (`util.parse_complex_value` /
//! `util.generate_var_value`), which the Lua front end implements too
//! (`lua/ingress_lb/hash_by.lua`), so both front ends hash the same text. Scanning left
//! to right, the first rule that applies wins:
//!
//! | text | value |
//! | --- | --- |
//! | `\$name` | the literal text `\$name`, backslash included (stock keeps it) |
//! | `${name}` | variable `name` (`name` = `[0-9a-zA-Z_]+`) |
//! | `$name` | variable `name`, the longest run of name characters |
//! | `$` not followed by the above | a literal `$` |
//! | a run of characters other than `$` and `\` | literal text |
//! | any other `\` | dropped |
//!
//! A name of digits only is a regex capture (`$1`: `ngx.var[1]`, the location's or the
//! last `rewrite`/`if` match). A variable nginx does not know, or whose value is "not
//! found", contributes nothing, as `ngx.var.name` giving `nil` in Lua.
//!
//! Why not `ngx_http_compile_complex_value`: the expression arrives at run time, with
//! names nginx may never have indexed (`$request_uri` when no directive uses it, any
//! `$http_*`/`$cookie_*`/`$arg_*`). Compiling it in a worker would push new entries
//! onto `cmcf->variables` after nginx fixed the per-request `r->variables` array size
//! and resolved handlers (`ngx_http_variables_init_vars`): a new index has no get
//! handler and lies past the end of every request's array. So the expression is
//! scanned here (allocation-free, per request: expressions are a few bytes) and every
//! variable is read with `ngx_http_get_variable()` by its lowercased name and hash, the
//! call lua-nginx-module's `ngx.var.name` makes: indexed variables come from the
//! request's cache, others (prefix variables included) from their handler.

use core::ptr;

use ngx::ffi::{ngx_hash_strlow, ngx_http_get_variable, ngx_http_request_t, ngx_pnalloc, ngx_str_t};

/// One part of an expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part<'a> {
    /// Literal text.
    Text(&'a [u8]),
    /// A variable, by name as written.
    Var(&'a [u8]),
    /// A regex capture, by its digits as written.
    Capture(&'a [u8]),
}

/// The parts of an expression, in order, borrowed from it.
pub(crate) struct Parts<'a> {
    s: &'a [u8],
    i: usize,
}

pub(crate) fn parts(expr: &[u8]) -> Parts<'_> {
    Parts { s: expr, i: 0 }
}

#[inline]
fn is_name_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Length of the run of name characters at the start of `s`.
#[inline]
fn name_len(s: &[u8]) -> usize {
    s.iter().position(|&c| !is_name_char(c)).unwrap_or(s.len())
}

fn variable(name: &[u8]) -> Part<'_> {
    if name.iter().all(u8::is_ascii_digit) {
        Part::Capture(name)
    } else {
        Part::Var(name)
    }
}

impl<'a> Iterator for Parts<'a> {
    type Item = Part<'a>;

    fn next(&mut self) -> Option<Part<'a>> {
        let s = self.s;
        loop {
            let i = self.i;
            let c = *s.get(i)?;
            match c {
                b'\\' => {
                    if s.get(i + 1) == Some(&b'$') {
                        let n = name_len(&s[i + 2..]);
                        if n > 0 {
                            self.i = i + 2 + n;
                            return Some(Part::Text(&s[i..i + 2 + n]));
                        }
                    }
                    // No rule matches a backslash otherwise: skipped.
                    self.i = i + 1;
                }
                b'$' => {
                    if s.get(i + 1) == Some(&b'{') {
                        let n = name_len(&s[i + 2..]);
                        if n > 0 && s.get(i + 2 + n) == Some(&b'}') {
                            self.i = i + 3 + n;
                            return Some(variable(&s[i + 2..i + 2 + n]));
                        }
                    }
                    let n = name_len(&s[i + 1..]);
                    if n > 0 {
                        self.i = i + 1 + n;
                        return Some(variable(&s[i + 1..i + 1 + n]));
                    }
                    self.i = i + 1;
                    return Some(Part::Text(&s[i..i + 1]));
                }
                _ => {
                    let end = s[i..].iter().position(|&c| c == b'$' || c == b'\\').map_or(s.len(), |p| i + p);
                    self.i = end;
                    return Some(Part::Text(&s[i..end]));
                }
            }
        }
    }
}

/// Longest variable name read from a stack buffer; a longer one is lowercased into
/// the request pool.
const NAME_STACK: usize = 64;

/// Parts evaluated without a pool array.
const PARTS_STACK: usize = 16;

/// The value of variable `name` (as written, any case) for `r`: `Some(None)` when
/// nginx does not know the variable or its value is "not found" (`nil` for
/// `ngx.var.name`), `None` when the pool is exhausted.
///
/// # Safety
/// `r` must be a valid request.
pub(crate) unsafe fn variable_lookup<'r>(r: *mut ngx_http_request_t, name: &[u8]) -> Option<Option<&'r [u8]>> {
    let mut stack = [0u8; NAME_STACK];
    let lower: *mut u8 = if name.len() <= NAME_STACK {
        stack.as_mut_ptr()
    } else {
        // SAFETY: r is valid; its pool lives as long as the request.
        let p = unsafe { ngx_pnalloc((*r).pool, name.len()) } as *mut u8;
        if p.is_null() {
            return None;
        }
        p
    };
    // SAFETY: `lower` has room for name.len() bytes; ngx_hash_strlow only reads `name`.
    let key = unsafe { ngx_hash_strlow(lower, name.as_ptr() as *mut u8, name.len()) };
    let mut n = ngx_str_t { data: lower, len: name.len() };
    // SAFETY: r is valid; nginx reads the name during the call only (prefix handlers
    // compare it, they do not keep it); the value lives in request memory.
    let v = unsafe { ngx_http_get_variable(r, &mut n, key) };
    if v.is_null() {
        return Some(None);
    }
    // SAFETY: a non-null result is a valid variable value of the request.
    let v = unsafe { &*v };
    if v.not_found() != 0 {
        return Some(None);
    }
    if v.data.is_null() || v.len() == 0 {
        return Some(Some(&[]));
    }
    // SAFETY: data/len describe the value, valid for the request's lifetime.
    Some(Some(unsafe { core::slice::from_raw_parts(v.data, v.len() as usize) }))
}

/// The value of variable `name` for `r`, empty when unknown or not found.
///
/// # Safety
/// `r` must be a valid request.
#[inline]
unsafe fn variable_value<'r>(r: *mut ngx_http_request_t, name: &[u8]) -> Option<&'r [u8]> {
    // SAFETY: r is valid.
    unsafe { variable_lookup(r, name) }.map(|v| v.unwrap_or(&[]))
}

/// Regex capture `digits` of `r`'s last match (`ngx.var[n]`), or empty.
///
/// # Safety
/// `r` must be a valid request.
unsafe fn capture_value<'r>(r: *mut ngx_http_request_t, digits: &[u8]) -> &'r [u8] {
    // SAFETY: r is valid.
    let req = unsafe { &*r };
    let mut n: usize = 0;
    for &d in digits {
        n = match n.checked_mul(10).and_then(|n| n.checked_add((d - b'0') as usize)) {
            Some(n) => n,
            None => return &[],
        };
    }
    let Some(i) = n.checked_mul(2) else { return &[] };
    if req.captures.is_null() || req.captures_data.is_null() || i + 1 >= req.ncaptures {
        return &[];
    }
    // SAFETY: captures holds ncaptures ints (ovector pairs), i + 1 < ncaptures.
    let (start, end) = unsafe { (*req.captures.add(i), *req.captures.add(i + 1)) };
    if start < 0 || end < start {
        return &[];
    }
    // SAFETY: the pair indexes the subject the regex ran on (captures_data), which the
    // request keeps.
    unsafe { core::slice::from_raw_parts(req.captures_data.add(start as usize), (end - start) as usize) }
}

/// Evaluate `expr` for `r`: the hash key, in request memory (the request pool, or a
/// variable's value itself when the expression is that variable alone). `None` when
/// the pool is exhausted.
///
/// # Safety
/// `r` must be a valid request; the result is valid as long as it.
pub(crate) unsafe fn evaluate(r: *mut ngx_http_request_t, expr: &[u8]) -> Option<ngx_str_t> {
    let count = parts(expr).count();
    if count == 0 {
        return Some(ngx_str_t { data: ptr::null_mut(), len: 0 });
    }
    // SAFETY: r is valid.
    let pool = unsafe { (*r).pool };

    let mut stack: [&[u8]; PARTS_STACK] = [&[]; PARTS_STACK];
    let values: &mut [&[u8]] = if count <= PARTS_STACK {
        &mut stack[..count]
    } else {
        // SAFETY: the pool is valid; NGX_ALIGNMENT suffices for slices of pointers.
        let p = unsafe { ngx::ffi::ngx_palloc(pool, count * size_of::<&[u8]>()) } as *mut &[u8];
        if p.is_null() {
            return None;
        }
        // SAFETY: fresh, aligned room for `count` slices, initialised before use.
        unsafe {
            for i in 0..count {
                p.add(i).write(&[]);
            }
            core::slice::from_raw_parts_mut(p, count)
        }
    };

    let mut single_var = false;
    let mut total = 0usize;
    for (slot, part) in values.iter_mut().zip(parts(expr)) {
        *slot = match part {
            Part::Text(t) => t,
            Part::Var(name) => {
                single_var = count == 1;
                // SAFETY: r is valid.
                unsafe { variable_value(r, name) }?
            }
            Part::Capture(d) => {
                single_var = count == 1;
                // SAFETY: r is valid.
                unsafe { capture_value(r, d) }
            }
        };
        total += slot.len();
    }

    if single_var {
        // A variable's value already lives in request memory.
        let v = values[0];
        return Some(ngx_str_t { data: v.as_ptr() as *mut u8, len: v.len() });
    }
    // SAFETY: the pool is valid.
    let data = unsafe { ngx_pnalloc(pool, total.max(1)) } as *mut u8;
    if data.is_null() {
        return None;
    }
    let mut at = 0;
    for v in values.iter() {
        // SAFETY: data has room for `total` bytes, the sum of the lengths.
        unsafe { ptr::copy_nonoverlapping(v.as_ptr(), data.add(at), v.len()) };
        at += v.len();
    }
    Some(ngx_str_t { data, len: total })
}
