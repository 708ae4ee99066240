//! What a pick may need from the request, and what it gives back besides the peer.
//!
//! Front ends fetch request data and apply results; every decision is the core's.
//! They fill only what the backend's algorithm needs ([`BackendInfo`]); the rest stays
//! empty.

use crate::balancer::AlgorithmKind;
use crate::pick::PeerRef;

/// Request data for a pick, borrowed for the duration of the call.
#[derive(Debug, Clone, Copy, Default)]
pub struct Request<'a> {
    /// The evaluated `upstream-hash-by` key (chash, chashsubset).
    pub hash_key: &'a [u8],
    /// The request's `Cookie` header, as received (several headers joined by "; ").
    pub cookie: &'a [u8],
    /// `$host`: the `locations` filter of cookie affinity.
    pub host: &'a [u8],
    /// The ingress location path (`$location_path` in ingress-nginx): the default
    /// cookie path and the `locations` filter. Empty means `/`.
    pub location_path: &'a [u8],
    /// `User-Agent`: whether `SameSite=None` may be sent (`conditional_samesite_none`).
    pub user_agent: &'a [u8],
    /// Whether the request came over TLS (default of the cookie's `Secure`).
    pub https: bool,
    /// Now, in seconds since the Unix epoch (`ngx.now()`): ewma decay, cookie expiry.
    pub now: f64,
}

impl Request<'_> {
    /// A request with nothing filled in: enough for round robin.
    pub const EMPTY: Request<'static> =
        Request { hash_key: b"", cookie: b"", host: b"", location_path: b"", user_agent: b"", https: false, now: 0.0 };
}

/// The result of a pick: the endpoint, and what the front end must apply.
#[derive(Debug, Clone, Copy)]
pub struct Picked<'a> {
    /// The endpoint, borrowed from the snapshot.
    pub peer: PeerRef<'a>,
    /// The endpoint's ewma score (ewma backends; 0 otherwise): `$balancer_ewma_score`.
    pub score: f64,
    /// A `Set-Cookie` header the response must carry (sticky backends), if any.
    pub set_cookie: Option<SetCookie<'a>>,
}

/// A `Set-Cookie` header value to send, formatted by [`SetCookie::write_to`] into the
/// front end's buffer without allocating: `<name>=<endpoint key>|<backend key>` and
/// the configured attributes, in lua-resty-cookie's order (`Expires`, `Max-Age`,
/// `Domain`, `Path`, `Secure`, `HttpOnly`, `SameSite`).
///
/// On a retry the latest attempt's pick decides: its cookie replaces any earlier one
/// of the same request, and when it returns none an earlier attempt's cookie is
/// withdrawn, so a response never carries a cookie for an endpoint that did not
/// answer it.
#[derive(Debug, Clone, Copy)]
pub struct SetCookie<'a> {
    pub(crate) config: &'a crate::cookie::CookieConfig,
    /// The endpoint key (first part of the value).
    pub(crate) key: crate::cookie::CookieKey,
    /// The request's location path: the `Path` when none is configured.
    pub(crate) location_path: &'a [u8],
    pub(crate) secure: bool,
    pub(crate) samesite: Option<crate::cookie::SameSite>,
    /// The request's time in whole seconds (`ngx.time()`): base of `Expires`.
    pub(crate) now: i64,
}

impl SetCookie<'_> {
    /// Largest header value written (`ILB_COOKIE_MAX` - 1 in the C header).
    pub const MAX: usize = crate::pick::COOKIE_MAX - 1;

    /// Write the header value into `buf`; the number of bytes written, or `None` if it
    /// does not fit in `buf` or is longer than [`SetCookie::MAX`] (nothing should be
    /// sent then). Never allocates.
    pub fn write_to(&self, buf: &mut [u8]) -> Option<usize> {
        let cap = buf.len().min(Self::MAX);
        let mut out = crate::cookie::Writer::new(&mut buf[..cap]);
        self.config.write(self, &mut out);
        out.finish()
    }

    /// The cookie's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }
}

/// The header value as text (allocation-free formatting through a stack buffer; for
/// logs and tests, not the request path). Empty if it does not fit.
impl std::fmt::Display for SetCookie<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut buf = [0u8; crate::pick::COOKIE_MAX];
        let n = self.write_to(&mut buf).unwrap_or(0);
        f.write_str(&String::from_utf8_lossy(&buf[..n]))
    }
}

/// What a front end must provide for picks on a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendInfo {
    pub algorithm: AlgorithmKind,
    /// Fill [`Request::hash_key`] with the evaluated `upstream-hash-by` expression
    /// ([`crate::Core::hash_by`]).
    pub needs_hash_key: bool,
    /// Fill [`Request::cookie`], `host`, `location_path`, `user_agent`, `https`; apply
    /// [`Picked::set_cookie`].
    pub needs_cookie: bool,
    /// Report each attempt's timing after the response ([`crate::Core::observe`]).
    pub needs_timing: bool,
    /// The backend has `alternativeBackends`: decide where each request goes
    /// ([`crate::Core::route_with`]) before picking.
    pub has_alternatives: bool,
}
