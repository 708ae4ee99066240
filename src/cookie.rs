//! Cookie affinity without allocating per request: reading the affinity cookie from
//! the raw `Cookie` header, the compiled cookie attributes of a sticky backend, and
//! the `Set-Cookie` header value.
//!
//! Compatibility notes (ingress-nginx's `balancer/sticky.lua` with lua-resty-cookie):
//! - the `Cookie` header is read as lua-resty-cookie reads it: pairs start after
//!   spaces or tabs, a name runs to the first `=`, a value to the first `;`, space or
//!   tab; when a name occurs twice the last one wins;
//! - the cookie value is `<endpoint key>|<backend key>`, split on `|` with empty pieces
//!   skipped (`util.split_string`);
//! - `Set-Cookie` attributes come in lua-resty-cookie's order: `Expires`, `Max-Age`,
//!   `Domain`, `Path`, `Secure`, `HttpOnly`, `SameSite`; `Expires` is formatted as
//!   `ngx.cookie_time` does.

use std::collections::HashMap;

use md5::{Digest, Md5};

use crate::config::BackendSpec;
use crate::error::{BackendLabel, ConfigError};
use crate::request::Request;

/// Cookie name when the configuration gives none (ingress-nginx's default).
pub(crate) const DEFAULT_NAME: &str = "route";

/// Longest endpoint key carried in a cookie: a 32-digit md5 hex (persistent) or a
/// random key (balanced).
pub(crate) const KEY_MAX: usize = 32;

/// Prefix of the configuration fields of cookie affinity, for error messages.
const FIELD: &str = "sessionAffinityConfig.cookieSessionAffinity";

/// The `(name, value)` pairs of a raw `Cookie` header, in order, split as
/// lua-resty-cookie splits them (see the module notes). One pass over the bytes.
#[inline]
fn pairs(header: &[u8]) -> Pairs<'_> {
    Pairs { header, at: 0 }
}

struct Pairs<'h> {
    header: &'h [u8],
    at: usize,
}

impl<'h> Iterator for Pairs<'h> {
    type Item = (&'h [u8], &'h [u8]);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let h = self.header;
        let n = h.len();
        let mut i = self.at;
        while i < n && matches!(h[i], b' ' | b'\t') {
            i += 1;
        }
        let Some(eq) = crate::bytes::find(b'=', &h[i.min(n)..]) else {
            self.at = n;
            return None;
        };
        let start = i + eq + 1;
        let end = crate::bytes::find3(b';', b' ', b'\t', &h[start..]).map_or(n, |p| start + p);
        self.at = end + 1;
        Some((&h[i..i + eq], &h[start..end]))
    }
}

/// The value of cookie `name` in a raw `Cookie` header, found as lua-resty-cookie
/// finds it: when the name occurs twice the last one wins. `None` when absent.
pub(crate) fn find<'h>(header: &'h [u8], name: &[u8]) -> Option<&'h [u8]> {
    pairs(header).filter(|(k, _)| crate::bytes::eq(k, name)).last().map(|(_, v)| v)
}

/// The value of cookie `name` as nginx's `$cookie_<name>` gives it: the first
/// occurrence (the name compared exactly). `None` when absent.
pub(crate) fn find_first<'h>(header: &'h [u8], name: &[u8]) -> Option<&'h [u8]> {
    pairs(header).find(|(k, _)| crate::bytes::eq(k, name)).map(|(_, v)| v)
}

/// The two parts of an affinity cookie's value: the endpoint key and the backend key
/// (`<endpoint key>|<backend key>`), empty pieces skipped as ingress-nginx does.
pub(crate) fn split_value(value: &[u8]) -> (Option<&[u8]>, Option<&[u8]>) {
    let mut parts = value.split(|&b| b == b'|').filter(|p| !p.is_empty());
    (parts.next(), parts.next())
}

/// md5 of `parts` concatenated, as 32 lowercase hex digits (`ngx.md5`).
pub(crate) fn md5_hex(parts: &[&[u8]]) -> [u8; 32] {
    let mut md5 = Md5::new();
    for p in parts {
        md5.update(p);
    }
    let digest = md5.finalize();
    let mut out = [0u8; 32];
    for (i, b) in digest.iter().enumerate() {
        out[2 * i] = HEX[usize::from(b >> 4)];
        out[2 * i + 1] = HEX[usize::from(b & 15)];
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// `SameSite` attribute values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SameSite {
    Strict,
    Lax,
    None,
}

impl SameSite {
    fn as_str(self) -> &'static str {
        match self {
            SameSite::Strict => "Strict",
            SameSite::Lax => "Lax",
            SameSite::None => "None",
        }
    }
}

/// Whether a user agent handles `SameSite=None`, by ingress-nginx's list
/// (`util/same_site.lua`, after Chromium's "SameSite=None: known incompatible
/// clients"): Chrome 40–69, iOS 12, Safari on macOS 10.14 are not. An absent user agent
/// counts as compatible (stock ingress-nginx fails the request with a Lua error).
pub(crate) fn samesite_none_compatible(user_agent: &[u8]) -> bool {
    use memchr::memmem::Finder;
    // Built once (no allocation: the needles are static), searched with SIMD.
    static NEEDLES: std::sync::LazyLock<[Finder<'static>; 5]> = std::sync::LazyLock::new(|| {
        [&b"Chrome"[..], b"OS 12", b"Macintosh", b"Intel Mac OS X 10_14", b"Safari"].map(Finder::new)
    });
    let [chrome, os12, mac, mojave, safari] = &*NEEDLES;
    let ua = user_agent;
    // "Chrome/4", "Chrome/5" or "Chrome/6" anywhere.
    let old_chrome =
        chrome.find_iter(ua).any(|i| ua.get(i + 6) == Some(&b'/') && matches!(ua.get(i + 7), Some(b'4'..=b'6')));
    // "CPU iPhone OS 12" or "iPad; CPU OS 12" anywhere.
    let ios12 = os12.find_iter(ua).any(|i| ua[..i].ends_with(b"CPU iPhone ") || ua[..i].ends_with(b"iPad; CPU "));
    let has = |f: &Finder<'_>| f.find(ua).is_some();
    let mojave_safari = has(mac) && has(mojave) && has(safari) && !has(chrome);
    !(old_chrome || ios12 || mojave_safari)
}

/// Host → the location paths listed for it.
type Locations = HashMap<Box<[u8]>, Box<[Box<[u8]>]>, ahash::RandomState>;

/// The compiled `cookieSessionAffinity` of a sticky backend.
#[derive(Debug)]
pub(crate) struct CookieConfig {
    pub(crate) name: Box<str>,
    /// `Path`; the request's location path when absent.
    path: Option<Box<str>>,
    domain: Option<Box<str>>,
    /// Seconds from now: `Expires`.
    expires: Option<i64>,
    /// `Max-Age`.
    max_age: Option<i64>,
    samesite: Option<SameSite>,
    conditional_samesite_none: bool,
    /// `Secure` always (configured); otherwise only over HTTPS.
    secure: bool,
    pub(crate) change_on_failure: bool,
    /// `md5hex(md5hex(name) .. name)`: the second part of the cookie value, by which
    /// [`crate::Core::is_affinitized`] recognises the backend's cookies.
    pub(crate) backend_key: [u8; 32],
    /// Host → location paths where a new cookie may be set.
    locations: Locations,
    /// The `*.suffix` hosts of `locations`, keyed by `suffix`.
    wildcard_locations: Locations,
}

impl CookieConfig {
    /// Validate and compile a backend's `cookieSessionAffinity`. Values that would make
    /// a broken or unsafe header (cookie name, numbers, path, domain) reject the
    /// document; an unknown `samesite`, which ingress-nginx drops with a warning, is
    /// dropped with a warning too.
    pub(crate) fn new(spec: &BackendSpec, warnings: &mut Vec<String>) -> Result<CookieConfig, ConfigError> {
        let label = BackendLabel::Name(&spec.name);
        let c = &spec.session_affinity.cookie;
        let field = |f: &str| format!("{FIELD}.{f}");
        let name = if c.name.is_empty() { DEFAULT_NAME } else { c.name.as_str() };
        if !name.bytes().all(is_token_char) {
            return Err(ConfigError::field(
                &label,
                field("name"),
                format!("{name:?} is not a valid cookie name (letters, digits and !#$%&'*+-.^_`|~ only)"),
            ));
        }
        let number = |f: &str, text: &str| -> Result<Option<i64>, ConfigError> {
            if text.is_empty() {
                return Ok(None);
            }
            parse_seconds(text).map(Some).ok_or_else(|| {
                ConfigError::field(&label, field(f), format!("{text:?} is not a whole number of seconds"))
            })
        };
        let expires = number("expires", &c.expires)?;
        let max_age = number("maxage", &c.maxage)?;
        let attribute = |f: &str, text: &str| -> Result<Option<Box<str>>, ConfigError> {
            if text.is_empty() {
                return Ok(None);
            }
            if !is_attribute_value(text.as_bytes()) {
                return Err(ConfigError::field(
                    &label,
                    field(f),
                    format!("{text:?} cannot be a cookie attribute (control character or ';')"),
                ));
            }
            Ok(Some(text.into()))
        };
        let path = attribute("path", &c.path)?;
        let domain = attribute("domain", &c.domain)?;
        let samesite = match c.samesite.as_str() {
            "" => None,
            "Strict" => Some(SameSite::Strict),
            "Lax" => Some(SameSite::Lax),
            "None" => Some(SameSite::None),
            other => {
                let folded = match other.to_ascii_lowercase().as_str() {
                    "strict" => Some(SameSite::Strict),
                    "lax" => Some(SameSite::Lax),
                    "none" => Some(SameSite::None),
                    _ => None,
                };
                match folded {
                    Some(s) => warnings.push(format!(
                        "backend \"{}\": {FIELD}.samesite {other:?} read as {:?} (stock ingress-nginx drops it)",
                        spec.name,
                        s.as_str()
                    )),
                    None => warnings.push(format!(
                        "backend \"{}\": {FIELD}.samesite {other:?} is not Strict, Lax or None: no SameSite attribute is sent",
                        spec.name
                    )),
                }
                folded
            }
        };
        let mut locations = HashMap::with_hasher(ahash::RandomState::new());
        let mut wildcard_locations = HashMap::with_hasher(ahash::RandomState::new());
        for (host, paths) in &c.locations {
            let paths: Box<[Box<[u8]>]> = paths.iter().map(|p| p.as_bytes().into()).collect();
            if let Some(suffix) = host.strip_prefix("*.") {
                wildcard_locations.insert(suffix.as_bytes().into(), paths.clone());
            }
            locations.insert(host.as_bytes().into(), paths);
        }
        let name_md5 = md5_hex(&[spec.name.as_bytes()]);
        Ok(CookieConfig {
            name: name.into(),
            path,
            domain,
            expires,
            max_age,
            samesite,
            conditional_samesite_none: c.conditional_samesite_none,
            secure: c.secure,
            change_on_failure: c.change_on_failure,
            backend_key: md5_hex(&[&name_md5, spec.name.as_bytes()]),
            locations,
            wildcard_locations,
        })
    }

    /// The affinity cookie's value in a `Cookie` header, if present.
    #[inline]
    pub(crate) fn value<'h>(&self, cookie_header: &'h [u8]) -> Option<&'h [u8]> {
        find(cookie_header, self.name.as_bytes())
    }

    /// True if the request carries a cookie of this backend (its backend key matches):
    /// ingress-nginx's `is_affinitized`.
    pub(crate) fn is_affinitized(&self, cookie_header: &[u8]) -> bool {
        self.value(cookie_header).and_then(|v| split_value(v).1) == Some(&self.backend_key[..])
    }

    /// Whether a new cookie may be set for this request: its location path is listed for
    /// its host, or for `*.` and the host without its first label (ingress-nginx's
    /// `should_set_cookie`). Without `locations` no cookie is set, as in ingress-nginx.
    pub(crate) fn may_set(&self, req: &Request<'_>) -> bool {
        let paths = self.locations.get(req.host).or_else(|| {
            let dot = req.host.iter().position(|&b| b == b'.').filter(|&p| p > 0)?;
            self.wildcard_locations.get(&req.host[dot + 1..])
        });
        let location = location_path(req);
        paths.is_some_and(|paths| paths.iter().any(|p| **p == *location))
    }

    /// The `Set-Cookie` header for endpoint key `key` in answer to `req`.
    pub(crate) fn set_cookie<'a>(&'a self, key: CookieKey, req: &Request<'a>) -> crate::request::SetCookie<'a> {
        let samesite = match self.samesite {
            Some(SameSite::None) if self.conditional_samesite_none && !samesite_none_compatible(req.user_agent) => None,
            s => s,
        };
        crate::request::SetCookie {
            config: self,
            key,
            location_path: location_path(req),
            secure: self.secure || req.https,
            samesite,
            now: if req.now.is_finite() && req.now > 0.0 { req.now.floor() as i64 } else { 0 },
        }
    }

    /// Write the `Set-Cookie` value of `c` (see [`crate::request::SetCookie::write_to`]).
    pub(crate) fn write(&self, c: &crate::request::SetCookie<'_>, out: &mut Writer<'_>) {
        out.put(self.name.as_bytes());
        out.put(b"=");
        out.put(c.key.as_bytes());
        out.put(b"|");
        out.put(&self.backend_key);
        if let Some(secs) = self.expires {
            out.put(b"; Expires=");
            out.cookie_time(c.now.saturating_add(secs));
        }
        if let Some(secs) = self.max_age {
            out.put(b"; Max-Age=");
            out.int(secs);
        }
        if let Some(domain) = &self.domain {
            out.put(b"; Domain=");
            out.put(domain.as_bytes());
        }
        let path = match &self.path {
            Some(p) => p.as_bytes(),
            // The location path comes from nginx's configuration; one that would break
            // the header is left out rather than sent.
            None if is_attribute_value(c.location_path) => c.location_path,
            None => b"",
        };
        if !path.is_empty() {
            out.put(b"; Path=");
            out.put(path);
        }
        if c.secure {
            out.put(b"; Secure");
        }
        out.put(b"; HttpOnly");
        if let Some(s) = c.samesite {
            out.put(b"; SameSite=");
            out.put(s.as_str().as_bytes());
        }
    }
}

/// An endpoint key to put in a cookie, held inline (the pick path does not allocate).
#[derive(Clone, Copy)]
pub(crate) struct CookieKey {
    len: u8,
    buf: [u8; KEY_MAX],
}

impl CookieKey {
    /// A key of up to [`KEY_MAX`] bytes (longer input is cut).
    pub(crate) fn new(key: &[u8]) -> CookieKey {
        let len = key.len().min(KEY_MAX);
        let mut buf = [0u8; KEY_MAX];
        buf[..len].copy_from_slice(&key[..len]);
        CookieKey { len: len as u8, buf }
    }

    /// 16 lowercase hex digits of `v`: a random key of sticky_balanced.
    pub(crate) fn hex64(v: u64) -> CookieKey {
        let mut buf = [0u8; KEY_MAX];
        for (i, b) in buf[..16].iter_mut().enumerate() {
            *b = HEX[((v >> (60 - 4 * i)) & 15) as usize];
        }
        CookieKey { len: 16, buf }
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }
}

impl std::fmt::Debug for CookieKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_bytes()))
    }
}

/// Appends to a fixed buffer, remembering whether everything fit.
pub(crate) struct Writer<'b> {
    buf: &'b mut [u8],
    len: usize,
    overflow: bool,
}

impl<'b> Writer<'b> {
    pub(crate) fn new(buf: &'b mut [u8]) -> Self {
        Writer { buf, len: 0, overflow: false }
    }

    /// Bytes written, or `None` if something did not fit.
    pub(crate) fn finish(self) -> Option<usize> {
        (!self.overflow).then_some(self.len)
    }

    fn put(&mut self, bytes: &[u8]) {
        match self.buf.get_mut(self.len..self.len + bytes.len()) {
            Some(dst) if !self.overflow => {
                dst.copy_from_slice(bytes);
                self.len += bytes.len();
            }
            _ => self.overflow = true,
        }
    }

    fn int(&mut self, v: i64) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        let mut u = v.unsigned_abs();
        loop {
            i -= 1;
            digits[i] = b'0' + (u % 10) as u8;
            u /= 10;
            if u == 0 {
                break;
            }
        }
        if v < 0 {
            self.put(b"-");
        }
        self.put(&digits[i..]);
    }

    fn two_digits(&mut self, v: u32) {
        self.put(&[b'0' + (v / 10 % 10) as u8, b'0' + (v % 10) as u8]);
    }

    /// `ngx.cookie_time(t)`: "Thu, 18-Nov-10 11:27:35 GMT" (a 4-digit year after 2037).
    fn cookie_time(&mut self, t: i64) {
        const DAYS: [&[u8]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
        const MONTHS: [&[u8]; 12] =
            [b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec"];
        // Dates before the epoch or past year 9999 are clamped: nginx formats neither.
        let t = t.clamp(0, 253_402_300_799);
        let days = t.div_euclid(86_400);
        let secs = t.rem_euclid(86_400) as u32;
        let (year, month, day) = civil_from_days(days);
        self.put(DAYS[days.rem_euclid(7) as usize]);
        self.put(b", ");
        self.two_digits(day);
        self.put(b"-");
        self.put(MONTHS[month as usize - 1]);
        self.put(b"-");
        if year > 2037 {
            self.int(year);
        } else {
            self.two_digits((year % 100) as u32);
        }
        self.put(b" ");
        self.two_digits(secs / 3600);
        self.put(b":");
        self.two_digits(secs / 60 % 60);
        self.put(b":");
        self.two_digits(secs % 60);
        self.put(b" GMT");
    }
}

/// (year, month 1-12, day 1-31) of a day count since 1970-01-01 (proleptic Gregorian).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// A cookie-name character: an RFC 7230 `tchar`.
fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// An attribute value that keeps the header well-formed: no control character, no `;`.
fn is_attribute_value(v: &[u8]) -> bool {
    v.iter().all(|&b| b >= 0x20 && b != 0x7f && b != b';')
}

/// A whole number of seconds, as the controller writes it ("3600", "-1"); at most 12
/// digits (31 000 years).
fn parse_seconds(text: &str) -> Option<i64> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.is_empty() || digits.len() > 12 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// The request's location path; `/` when the front end has none (an nginx.conf that
/// does not define `$location_path`), the same for both front ends.
fn location_path<'a>(req: &Request<'a>) -> &'a [u8] {
    if req.location_path.is_empty() {
        b"/"
    } else {
        req.location_path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cookie_like_lua_resty_cookie() {
        let h = b"a=1; route=abc|def; b=2";
        assert_eq!(find(h, b"route"), Some(&b"abc|def"[..]));
        assert_eq!(find(h, b"a"), Some(&b"1"[..]));
        assert_eq!(find(h, b"b"), Some(&b"2"[..]));
        assert_eq!(find(h, b"rout"), None);
        assert_eq!(find(h, b"route "), None);
        assert_eq!(find(b"", b"route"), None);
        assert_eq!(find(b"route", b"route"), None, "no '=': no cookie");
        assert_eq!(find(b"route=", b"route"), Some(&b""[..]));
        // The last occurrence wins.
        assert_eq!(find(b"route=x; route=y", b"route"), Some(&b"y"[..]));
        // Tabs and several spaces separate pairs; a value ends at ';', space or tab.
        assert_eq!(find(b"\t a=1 \troute=k  ;b=2", b"route"), Some(&b"k"[..]));
        assert_eq!(find(b"route=k v", b"route"), Some(&b"k"[..]));
        // '=' inside a value belongs to the value; quotes are kept.
        assert_eq!(find(b"route=a=b", b"route"), Some(&b"a=b"[..]));
        assert_eq!(find(b"route=\"q\"", b"route"), Some(&b"\"q\""[..]));
        // After a space-terminated value, a stray ';' starts the next name.
        assert_eq!(find(b"a=1 ;route=k", b"route"), None);
        assert_eq!(find(b"a=1 ;route=k", b";route"), Some(&b"k"[..]));
        // Names are case-sensitive.
        assert_eq!(find(b"Route=k", b"route"), None);
        // Non-UTF-8 bytes are carried as they are.
        assert_eq!(find(b"route=\xff\xfe; x=1", b"route"), Some(&b"\xff\xfe"[..]));
    }

    #[test]
    fn splits_value_skipping_empty_pieces() {
        assert_eq!(split_value(b"abc|def"), (Some(&b"abc"[..]), Some(&b"def"[..])));
        assert_eq!(split_value(b"abc"), (Some(&b"abc"[..]), None));
        assert_eq!(split_value(b"|def"), (Some(&b"def"[..]), None));
        assert_eq!(split_value(b"a||b|c"), (Some(&b"a"[..]), Some(&b"b"[..])));
        assert_eq!(split_value(b""), (None, None));
        assert_eq!(split_value(b"||"), (None, None));
    }

    #[test]
    fn md5_hex_matches_ngx_md5() {
        assert_eq!(&md5_hex(&[b""]), b"d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(&md5_hex(&[b"x", b"10.0.0.1:8080"]), b"364b72781c4ab69e0710461ef4fa4054");
    }

    fn time(t: i64) -> String {
        let mut buf = [0u8; 64];
        let mut w = Writer::new(&mut buf);
        w.cookie_time(t);
        let n = w.finish().unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn cookie_time_as_nginx() {
        // ngx.cookie_time's documented example.
        assert_eq!(time(1_290_079_655), "Thu, 18-Nov-10 11:27:35 GMT");
        assert_eq!(time(0), "Thu, 01-Jan-70 00:00:00 GMT");
        assert_eq!(time(-5), "Thu, 01-Jan-70 00:00:00 GMT");
        assert_eq!(time(951_782_400), "Tue, 29-Feb-00 00:00:00 GMT");
        assert_eq!(time(1_700_000_000), "Tue, 14-Nov-23 22:13:20 GMT");
        assert_eq!(time(2_145_916_799), "Thu, 31-Dec-37 23:59:59 GMT");
        // From 2038 on nginx prints the year in full.
        assert_eq!(time(2_145_916_800), "Fri, 01-Jan-2038 00:00:00 GMT");
        assert_eq!(time(4_102_444_800), "Fri, 01-Jan-2100 00:00:00 GMT");
    }

    #[test]
    fn writer_reports_overflow() {
        let mut buf = [0u8; 4];
        let mut w = Writer::new(&mut buf);
        w.put(b"abc");
        w.put(b"de");
        w.put(b"f");
        assert_eq!(w.finish(), None);
        let mut w = Writer::new(&mut buf);
        w.int(-123);
        assert_eq!(w.finish(), Some(4));
        assert_eq!(&buf, b"-123");
    }

    #[test]
    fn samesite_none_user_agents() {
        let chrome = |v: &str| {
            format!("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{v} Safari/537.36")
        };
        assert!(samesite_none_compatible(chrome("71.0.2704.103").as_bytes()));
        assert!(samesite_none_compatible(chrome("120.0.0.0").as_bytes()));
        assert!(!samesite_none_compatible(chrome("51.0.2704.103").as_bytes()));
        assert!(!samesite_none_compatible(chrome("66.0.1").as_bytes()));
        assert!(!samesite_none_compatible(chrome("49.0").as_bytes()));
        assert!(!samesite_none_compatible(
            b"Mozilla/5.0 (iPhone; CPU iPhone OS 12_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/12.0 Mobile/15E148 Safari/604.1"
        ));
        assert!(!samesite_none_compatible(b"Mozilla/5.0 (iPad; CPU OS 12_1 like Mac OS X) AppleWebKit/605.1.15"));
        let mac_safari = b"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/12.1.2 Safari/605.1.15";
        assert!(!samesite_none_compatible(mac_safari));
        let mac_chrome = b"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_14_6) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/90.0 Safari/537.36";
        assert!(samesite_none_compatible(mac_chrome));
        assert!(samesite_none_compatible(b"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) Safari/605.1.15"));
        assert!(samesite_none_compatible(b"curl/8.0"));
        assert!(samesite_none_compatible(b""));
    }

    #[test]
    fn seconds_and_names() {
        assert_eq!(parse_seconds("3600"), Some(3600));
        assert_eq!(parse_seconds("-1"), Some(-1));
        assert_eq!(parse_seconds("0"), Some(0));
        for bad in ["", "-", "1.5", " 1", "1 ", "0x10", "+5", "1e3", "abc", "9999999999999"] {
            assert_eq!(parse_seconds(bad), None, "{bad:?}");
        }
        assert!(b"route".iter().all(|&b| is_token_char(b)));
        assert!(b"INGRESSCOOKIE_2".iter().all(|&b| is_token_char(b)));
        for bad in [&b"a b"[..], b"a;b", b"a=b", b"a,b", b"(a)", b"a\"", b"\xc3\xa9", b"a\tb"] {
            assert!(!bad.iter().all(|&b| is_token_char(b)), "{bad:?}");
        }
    }
}
