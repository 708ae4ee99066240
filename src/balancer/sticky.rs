//! Cookie affinity: `sticky_balanced` and `sticky_persistent` (ingress-nginx's
//! `balancer/sticky.lua` and its two modes).
//!
//! The cookie's value is `<endpoint key>|<backend key>`, the backend key being
//! `md5hex(md5hex(name) .. name)`.
//! - sticky_balanced: the endpoint key is random; it maps to an endpoint through the
//!   same ring as chash (so scaling the backend moves some sessions, as in stock).
//! - sticky_persistent: the endpoint key is `md5hex(name .. "ip:port")`; a cookie whose
//!   endpoint is gone gets a new endpoint and a new cookie.
//!
//! Per attempt:
//! 1. a cookie naming a live endpoint not tried by this request: that endpoint, no
//!    `Set-Cookie` (a valid cookie is not re-sent);
//! 2. no usable cookie (absent, empty, unknown endpoint), or a retry after the cookie's
//!    endpoint failed with `change_on_failure`: a new endpoint not tried by the request
//!    and a new cookie for it, if the `locations` filter allows a cookie for this host
//!    and location path;
//! 3. a retry after the cookie's endpoint failed, without `change_on_failure`: another
//!    endpoint for this attempt only (balanced: the next untried one along the ring
//!    from the cookie's key; persistent: a random untried one) and no `Set-Cookie`, so
//!    the client keeps its affinity to its endpoint. Stock ingress-nginx retries the
//!    failed endpoint itself here.
//!
//! A tried endpoint is returned only when every endpoint was tried.

use std::collections::HashMap;

use rand::Rng;

use super::chash::{any_untried, Ring};
use super::{first_untried, Choice};
use crate::config::BackendSpec;
use crate::cookie::{self, CookieConfig, CookieKey};
use crate::error::ConfigError;
use crate::pick::PickCtx;
use crate::request::Request;
use crate::snapshot::Endpoint;

/// New random keys drawn per endpoint before giving up on landing on an untried one.
/// Stock draws 20 keys in all (`MAX_UPSTREAM_CHECKS_COUNT`), which with 5 endpoints
/// and one left untried misses about one retry in a hundred and then sets no cookie.
/// An untried endpoint owns about `1/n` of the ring (never much less: 160 points per
/// endpoint), so `64·n` draws miss with odds near `e^-32`. Only a retry draws more
/// than once; one draw is a CRC-32 and a binary search.
const NEW_KEY_DRAWS_PER_ENDPOINT: usize = 64;
/// Bound on the draws whatever the endpoint count: with more than `MAX_TRIED`
/// endpoints, most of the ring is untried and the first draws land.
const MAX_NEW_KEY_DRAWS: usize = 64 * 128;

/// Where a cookie's endpoint key leads.
#[derive(Debug, Clone, Copy)]
struct Found {
    index: usize,
    /// Ring position (balanced).
    pos: usize,
}

/// What differs between the two modes.
trait Affinity {
    /// The endpoint designated by a cookie's endpoint key, if it exists.
    fn lookup(&self, key: &[u8]) -> Option<Found>;
    /// The endpoint for this attempt when the cookie's endpoint was tried and the
    /// cookie is kept.
    fn instead(&self, found: Found, endpoints: &[Endpoint], ctx: &PickCtx) -> usize;
    /// A new endpoint not tried by the request (while one remains) and the key to put
    /// in its cookie (`None`: set no cookie).
    fn fresh(&self, endpoints: &[Endpoint], ctx: &PickCtx) -> (usize, Option<CookieKey>);
}

#[inline]
fn pick<'a>(
    mode: &impl Affinity,
    config: &'a CookieConfig,
    endpoints: &[Endpoint],
    req: &Request<'a>,
    ctx: &PickCtx,
) -> Choice<'a> {
    let found = config.value(req.cookie).and_then(|v| cookie::split_value(v).0).and_then(|k| mode.lookup(k));
    if let Some(found) = found {
        if ctx.attempts() == 0 || !ctx.has_tried(endpoints[found.index].key) {
            return Choice::index(found.index);
        }
        if !config.change_on_failure {
            return Choice::index(mode.instead(found, endpoints, ctx));
        }
    }
    let (index, key) = mode.fresh(endpoints, ctx);
    let set_cookie = match key {
        Some(key) if config.may_set(req) => Some(config.set_cookie(key, req)),
        _ => None,
    };
    Choice { index, score: 0.0, set_cookie }
}

/// `sticky_balanced`.
#[derive(Debug)]
pub(crate) struct StickyBalanced {
    ring: Ring,
    pub(crate) cookie: CookieConfig,
}

impl StickyBalanced {
    pub(crate) fn new(
        endpoints: &[Endpoint],
        spec: &BackendSpec,
        warnings: &mut Vec<String>,
    ) -> Result<Self, ConfigError> {
        let cookie = CookieConfig::new(spec, warnings)?;
        let ids: Vec<&str> = endpoints.iter().map(|e| &*e.text).collect();
        Ok(StickyBalanced { ring: Ring::new(&ids), cookie })
    }

    #[inline]
    pub(crate) fn pick<'a>(&'a self, endpoints: &[Endpoint], req: &Request<'a>, ctx: &PickCtx) -> Choice<'a> {
        pick(self, &self.cookie, endpoints, req, ctx)
    }
}

impl Affinity for StickyBalanced {
    fn lookup(&self, key: &[u8]) -> Option<Found> {
        let pos = self.ring.find(key);
        Some(Found { index: self.ring.node(pos), pos })
    }

    fn instead(&self, found: Found, endpoints: &[Endpoint], ctx: &PickCtx) -> usize {
        self.ring.next_untried(found.pos, endpoints, ctx).unwrap_or(found.index)
    }

    fn fresh(&self, endpoints: &[Endpoint], ctx: &PickCtx) -> (usize, Option<CookieKey>) {
        let mut rng = rand::thread_rng();
        let untried_left = ctx.attempts() == 0 || any_untried(endpoints, ctx);
        let mut pos = 0;
        let draws = (NEW_KEY_DRAWS_PER_ENDPOINT * endpoints.len()).clamp(1, MAX_NEW_KEY_DRAWS);
        for _ in 0..draws {
            let key = CookieKey::hex64(rng.gen());
            pos = self.ring.find(key.as_bytes());
            let node = self.ring.node(pos);
            if !untried_left || !ctx.has_tried(endpoints[node].key) {
                return (node, Some(key));
            }
        }
        // Unlucky draws (few untried endpoints left): serve the next untried endpoint
        // along the ring without a cookie; the next request draws again.
        (self.ring.next_untried(pos, endpoints, ctx).unwrap_or(self.ring.node(pos)), None)
    }
}

/// `sticky_persistent`.
#[derive(Debug)]
pub(crate) struct StickyPersistent {
    /// `md5hex(name .. "ip:port")` of each endpoint.
    keys: Box<[[u8; 32]]>,
    /// Endpoint index by its key (as a number).
    by_key: HashMap<u128, u32, ahash::RandomState>,
    pub(crate) cookie: CookieConfig,
}

impl StickyPersistent {
    pub(crate) fn new(
        endpoints: &[Endpoint],
        spec: &BackendSpec,
        warnings: &mut Vec<String>,
    ) -> Result<Self, ConfigError> {
        let cookie = CookieConfig::new(spec, warnings)?;
        let keys: Box<[[u8; 32]]> =
            endpoints.iter().map(|e| cookie::md5_hex(&[spec.name.as_bytes(), e.text.as_bytes()])).collect();
        let mut by_key = HashMap::with_capacity_and_hasher(keys.len(), ahash::RandomState::new());
        for (i, k) in keys.iter().enumerate() {
            if let Some(v) = parse_hex128(k) {
                by_key.insert(v, i as u32);
            }
        }
        Ok(StickyPersistent { keys, by_key, cookie })
    }

    #[inline]
    pub(crate) fn pick<'a>(&'a self, endpoints: &[Endpoint], req: &Request<'a>, ctx: &PickCtx) -> Choice<'a> {
        pick(self, &self.cookie, endpoints, req, ctx)
    }
}

impl Affinity for StickyPersistent {
    fn lookup(&self, key: &[u8]) -> Option<Found> {
        let v = parse_hex128(key)?;
        self.by_key.get(&v).map(|&i| Found { index: i as usize, pos: 0 })
    }

    fn instead(&self, found: Found, endpoints: &[Endpoint], ctx: &PickCtx) -> usize {
        if any_untried(endpoints, ctx) {
            random_untried(endpoints, ctx)
        } else {
            found.index
        }
    }

    fn fresh(&self, endpoints: &[Endpoint], ctx: &PickCtx) -> (usize, Option<CookieKey>) {
        let i = random_untried(endpoints, ctx);
        (i, Some(CookieKey::new(&self.keys[i])))
    }
}

/// A uniformly random endpoint not tried by the request (any endpoint if all were).
fn random_untried(endpoints: &[Endpoint], ctx: &PickCtx) -> usize {
    let mut rng = rand::thread_rng();
    let n = endpoints.len();
    let first = rng.gen_range(0..n);
    if ctx.attempts() == 0 || !ctx.has_tried(endpoints[first].key) || !any_untried(endpoints, ctx) {
        return first;
    }
    if n <= 64 {
        let untried = |e: &&Endpoint| !ctx.has_tried(e.key);
        let count = endpoints.iter().filter(untried).count();
        let nth = rng.gen_range(0..count);
        return endpoints.iter().enumerate().filter(|(_, e)| untried(e)).nth(nth).map_or(first, |(i, _)| i);
    }
    // At most MAX_TRIED of more than 64 endpoints were tried: each draw lands on an
    // untried one with probability > 1/2.
    for _ in 0..32 {
        let i = rng.gen_range(0..n);
        if !ctx.has_tried(endpoints[i].key) {
            return i;
        }
    }
    first_untried(endpoints, first, ctx)
}

/// 32 lowercase hex digits (as `ngx.md5` writes them) as a number. Branch-free per
/// digit: a cookie's digits are random, so per-digit branches would mispredict.
fn parse_hex128(text: &[u8]) -> Option<u128> {
    let text: &[u8; 32] = text.try_into().ok()?;
    let (mut hi, mut lo, mut bad) = (0u64, 0u64, 0u8);
    for i in 0..16 {
        let (h, l) = (HEX_VALUE[usize::from(text[i])], HEX_VALUE[usize::from(text[16 + i])]);
        bad |= h | l;
        hi = hi << 4 | u64::from(h & 15);
        lo = lo << 4 | u64::from(l & 15);
    }
    (bad & 0xf0 == 0).then_some(u128::from(hi) << 64 | u128::from(lo))
}

/// Value of a lowercase hex digit; 0xff for any other byte.
const HEX_VALUE: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex128() {
        assert_eq!(parse_hex128(b"0000000000000000000000000000000a"), Some(10));
        assert_eq!(parse_hex128(b"ffffffffffffffffffffffffffffffff"), Some(u128::MAX));
        assert_eq!(parse_hex128(b"FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF"), None, "ngx.md5 is lowercase");
        assert_eq!(parse_hex128(b"abc"), None);
        assert_eq!(parse_hex128(b"0000000000000000000000000000000g"), None);
    }
}

#[cfg(test)]
mod behaviour {
    use std::collections::{HashMap, HashSet};

    use crate::cookie::md5_hex;
    use crate::{AlgorithmKind, ConfigError, Core, PickCtx, Request};

    const NAME: &str = "default-web-80";

    fn endpoints(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.6.0.{}:8080", i + 1)).collect()
    }

    /// A backends document with one sticky backend; `cookie` is the inside of
    /// `cookieSessionAffinity`.
    fn doc(eps: &[String], mode: &str, cookie: &str) -> Vec<u8> {
        let eps: Vec<String> = eps
            .iter()
            .map(|e| {
                let (a, p) = e.rsplit_once(':').unwrap();
                format!(r#"{{"address":"{a}","port":"{p}"}}"#)
            })
            .collect();
        format!(
            r#"[{{"name":"{NAME}","sessionAffinityConfig":{{"name":"cookie","mode":"{mode}","cookieSessionAffinity":{{{cookie}}}}},"endpoints":[{}]}}]"#,
            eps.join(",")
        )
        .into_bytes()
    }

    const LOCATIONS: &str = r#""locations":{"shop.example.com":["/","/cart"],"*.example.org":["/app"],"_":["/"]}"#;

    fn core(eps: &[String], mode: &str, cookie: &str) -> Core {
        let core = Core::new();
        core.apply_backends(&doc(eps, mode, cookie)).unwrap();
        let kind = if mode == "persistent" { AlgorithmKind::StickyPersistent } else { AlgorithmKind::StickyBalanced };
        assert_eq!(core.algorithm(NAME.as_bytes()), Some(kind));
        core
    }

    fn shop() -> Request<'static> {
        Request { host: b"shop.example.com", location_path: b"/", now: 1_700_000_000.75, ..Request::EMPTY }
    }

    /// (endpoint, Set-Cookie value)
    fn pick(core: &Core, req: &Request<'_>, ctx: &mut PickCtx) -> (String, Option<String>) {
        core.pick_with(NAME.as_bytes(), req, ctx, |p| (p.peer.text().to_owned(), p.set_cookie.map(|c| c.to_string())))
            .unwrap()
    }

    fn backend_key() -> String {
        String::from_utf8(md5_hex(&[&md5_hex(&[NAME.as_bytes()]), NAME.as_bytes()]).to_vec()).unwrap()
    }

    fn persistent_key(ep: &str) -> String {
        String::from_utf8(md5_hex(&[NAME.as_bytes(), ep.as_bytes()]).to_vec()).unwrap()
    }

    /// The `name=value` part of a Set-Cookie header, as a Cookie header.
    fn cookie_of(set_cookie: &str) -> String {
        set_cookie.split(';').next().unwrap().to_owned()
    }

    #[test]
    fn new_session_gets_a_cookie_and_keeps_its_endpoint() {
        for mode in ["balanced", "persistent"] {
            let eps = endpoints(5);
            let core = core(&eps, mode, LOCATIONS);
            let (ep, set) = pick(&core, &shop(), &mut PickCtx::new());
            let set = set.unwrap_or_else(|| panic!("{mode}: no cookie for a new session"));
            assert_eq!(set, format!("{}; Path=/; HttpOnly", cookie_of(&set)));
            let value = cookie_of(&set).strip_prefix("route=").unwrap().to_owned();
            let (key, bkey) = value.split_once('|').unwrap();
            assert_eq!(bkey, backend_key());
            if mode == "persistent" {
                assert_eq!(key, persistent_key(&ep));
            }
            // The cookie sent back keeps the endpoint and is not re-sent.
            let header = format!("lang=en; {}; theme=dark", cookie_of(&set));
            for _ in 0..50 {
                let req = Request { cookie: header.as_bytes(), ..shop() };
                assert_eq!(pick(&core, &req, &mut PickCtx::new()), (ep.clone(), None), "{mode}");
            }
            assert!(core.is_affinitized(NAME.as_bytes(), header.as_bytes()));
        }
    }

    #[test]
    fn new_sessions_spread_over_endpoints() {
        for mode in ["balanced", "persistent"] {
            let eps = endpoints(4);
            let core = core(&eps, mode, LOCATIONS);
            let mut counts: HashMap<String, usize> = HashMap::new();
            for _ in 0..8_000 {
                *counts.entry(pick(&core, &shop(), &mut PickCtx::new()).0).or_default() += 1;
            }
            assert_eq!(counts.len(), 4, "{mode}");
            for c in counts.values() {
                // balanced: ring shares of 4 endpoints; persistent: uniform.
                assert!((1_200..2_800).contains(c), "{mode}: {counts:?}");
            }
        }
    }

    #[test]
    fn locations_decide_where_a_cookie_is_set() {
        for mode in ["balanced", "persistent"] {
            let core = core(&endpoints(3), mode, LOCATIONS);
            let sets = |host: &'static [u8], path: &'static [u8]| {
                let req = Request { host, location_path: path, ..Request::EMPTY };
                pick(&core, &req, &mut PickCtx::new()).1.is_some()
            };
            assert!(sets(b"shop.example.com", b"/"));
            assert!(sets(b"shop.example.com", b"/cart"));
            assert!(!sets(b"shop.example.com", b"/other"), "path not listed");
            assert!(!sets(b"other.example.com", b"/"), "host not listed");
            // Wildcard hosts: one label replaced by "*".
            assert!(sets(b"dev.example.org", b"/app"));
            assert!(!sets(b"a.b.example.org", b"/app"));
            assert!(!sets(b"example.org", b"/app"));
            assert!(!sets(b".example.org", b"/app"));
            // The catch-all server: the front end passes "_" as the host.
            assert!(sets(b"_", b"/"));
            // No locations at all: never a cookie (as ingress-nginx), still an endpoint.
            let bare = super::behaviour::core(&endpoints(3), mode, r#""name":"route""#);
            let (ep, set) = pick(&bare, &shop(), &mut PickCtx::new());
            assert!(ep.starts_with("10.6.0.") && set.is_none());
        }
    }

    #[test]
    fn exact_host_wins_over_wildcard() {
        let cookie = r#""locations":{"a.example.org":["/x"],"*.example.org":["/"]}"#;
        let core = core(&endpoints(3), "balanced", cookie);
        let req = Request { host: b"a.example.org", location_path: b"/", ..Request::EMPTY };
        assert!(pick(&core, &req, &mut PickCtx::new()).1.is_none(), "exact entry found: wildcard not consulted");
        let req = Request { host: b"b.example.org", location_path: b"/", ..Request::EMPTY };
        assert!(pick(&core, &req, &mut PickCtx::new()).1.is_some());
    }

    #[test]
    fn persistent_cookie_of_a_vanished_endpoint_gets_a_new_one() {
        let eps = endpoints(4);
        let core = core(&eps, "persistent", LOCATIONS);
        let gone = "10.6.0.99:8080";
        let header = format!("route={}|{}", persistent_key(gone), backend_key());
        let req = Request { cookie: header.as_bytes(), ..shop() };
        let (ep, set) = pick(&core, &req, &mut PickCtx::new());
        assert!(eps.contains(&ep));
        assert_eq!(cookie_of(&set.unwrap()), format!("route={}|{}", persistent_key(&ep), backend_key()));
        // Garbage, an empty value, a key of another backend: all new sessions.
        for bad in ["route=", "route=zz", "route=|", &format!("route={}", "A".repeat(32))] {
            let req = Request { cookie: bad.as_bytes(), ..shop() };
            assert!(pick(&core, &req, &mut PickCtx::new()).1.is_some(), "{bad}");
        }
        // An old-style cookie without the backend key still works.
        let old = format!("route={}", persistent_key(&eps[2]));
        let req = Request { cookie: old.as_bytes(), ..shop() };
        assert_eq!(pick(&core, &req, &mut PickCtx::new()), (eps[2].clone(), None));
        // ... but does not count as affinitized (no backend key).
        assert!(!core.is_affinitized(NAME.as_bytes(), old.as_bytes()));
    }

    #[test]
    fn balanced_cookie_survives_scaling_through_the_ring() {
        let eps = endpoints(6);
        let core6 = core(&eps, "balanced", LOCATIONS);
        let (ep, set) = pick(&core6, &shop(), &mut PickCtx::new());
        let header = cookie_of(&set.unwrap());
        // Remove another endpoint: the cookie keeps its endpoint, nothing re-sent.
        let fewer: Vec<String> = eps.iter().filter(|e| **e != ep).take(4).cloned().chain([ep.clone()]).collect();
        let core5 = core(&fewer, "balanced", LOCATIONS);
        let req = Request { cookie: header.as_bytes(), ..shop() };
        assert_eq!(pick(&core5, &req, &mut PickCtx::new()), (ep.clone(), None));
        // Remove its endpoint: the key maps to another one, still without a new cookie.
        let without: Vec<String> = eps.iter().filter(|e| **e != ep).cloned().collect();
        let core_without = core(&without, "balanced", LOCATIONS);
        let (other, set) = pick(&core_without, &req, &mut PickCtx::new());
        assert_ne!(other, ep);
        assert!(set.is_none());
    }

    #[test]
    fn retry_with_change_on_failure_moves_the_session() {
        for mode in ["balanced", "persistent"] {
            let eps = endpoints(5);
            let cookie = format!(r#"{LOCATIONS},"change_on_failure":true"#);
            let core = core(&eps, mode, &cookie);
            let (ep, set) = pick(&core, &shop(), &mut PickCtx::new());
            let header = cookie_of(&set.unwrap());
            let req = Request { cookie: header.as_bytes(), ..shop() };
            let mut ctx = PickCtx::new();
            assert_eq!(pick(&core, &req, &mut ctx), (ep.clone(), None));
            let mut seen = vec![ep];
            for _ in 1..5 {
                let (next, set) = pick(&core, &req, &mut ctx);
                assert!(!seen.contains(&next), "{mode}: {next} re-picked after {seen:?}");
                let set = set.unwrap_or_else(|| panic!("{mode}: no new cookie after a failure"));
                // The new cookie leads to the endpoint that answered.
                let again = cookie_of(&set);
                let req2 = Request { cookie: again.as_bytes(), ..shop() };
                assert_eq!(pick(&core, &req2, &mut PickCtx::new()), (next.clone(), None), "{mode}");
                seen.push(next);
            }
            // Everything tried: an answer all the same.
            assert!(eps.contains(&pick(&core, &req, &mut ctx).0));
        }
    }

    #[test]
    fn balanced_retry_finds_a_key_for_the_last_untried_endpoint() {
        // With 20 draws in all (stock), about one retry in a hundred that has a single
        // untried endpoint left would go without a cookie; 500 sessions failing over
        // every endpoint make 2000 such retries.
        let eps = endpoints(5);
        let cookie = format!(r#"{LOCATIONS},"change_on_failure":true"#);
        let core = core(&eps, "balanced", &cookie);
        for _ in 0..500 {
            let mut ctx = PickCtx::new();
            let mut seen = HashSet::new();
            for attempt in 0..5 {
                let (ep, set) = pick(&core, &shop(), &mut ctx);
                assert!(seen.insert(ep), "attempt {attempt}: re-picked");
                assert!(set.is_some(), "attempt {attempt}: no cookie");
            }
        }
    }

    #[test]
    fn retry_without_change_on_failure_keeps_the_cookie() {
        for mode in ["balanced", "persistent"] {
            let eps = endpoints(5);
            let core = core(&eps, mode, LOCATIONS);
            let (ep, set) = pick(&core, &shop(), &mut PickCtx::new());
            let header = cookie_of(&set.unwrap());
            let req = Request { cookie: header.as_bytes(), ..shop() };
            for _ in 0..20 {
                let mut ctx = PickCtx::new();
                assert_eq!(pick(&core, &req, &mut ctx), (ep.clone(), None));
                let mut seen = HashSet::from([ep.clone()]);
                for _ in 1..5 {
                    let (next, set) = pick(&core, &req, &mut ctx);
                    assert!(seen.insert(next.clone()), "{mode}: {next} re-picked");
                    assert_eq!(set, None, "{mode}: the cookie is kept");
                }
            }
        }
    }

    #[test]
    fn retry_of_a_new_session_sets_the_cookie_of_the_last_attempt() {
        for mode in ["balanced", "persistent"] {
            let eps = endpoints(3);
            let core = core(&eps, mode, LOCATIONS);
            let mut ctx = PickCtx::new();
            let mut seen = HashSet::new();
            for _ in 0..3 {
                let (ep, set) = pick(&core, &shop(), &mut ctx);
                assert!(seen.insert(ep.clone()), "{mode}: {ep} re-picked");
                let header = cookie_of(&set.unwrap());
                let req = Request { cookie: header.as_bytes(), ..shop() };
                assert_eq!(pick(&core, &req, &mut PickCtx::new()).0, ep, "{mode}");
            }
        }
    }

    fn set_cookie(cookie: &str, req: &Request<'_>) -> String {
        let core = core(&endpoints(1), "persistent", cookie);
        pick(&core, req, &mut PickCtx::new()).1.expect("a cookie")
    }

    #[test]
    fn set_cookie_attributes_header_by_header() {
        let v = format!("{}|{}", persistent_key("10.6.0.1:8080"), backend_key());
        let loc = r#""locations":{"shop.example.com":["/"]}"#;
        // Defaults: name "route", Path from the location, HttpOnly.
        assert_eq!(set_cookie(loc, &shop()), format!("route={v}; Path=/; HttpOnly"));
        // Secure over HTTPS, or always when configured.
        let https = Request { https: true, ..shop() };
        assert_eq!(set_cookie(loc, &https), format!("route={v}; Path=/; Secure; HttpOnly"));
        assert_eq!(
            set_cookie(&format!(r#"{loc},"secure":true"#), &shop()),
            format!("route={v}; Path=/; Secure; HttpOnly")
        );
        // Every attribute, in lua-resty-cookie's order. now = 1700000000.75 → ngx.time().
        let all = format!(
            r#"{loc},"name":"SERVERID","expires":"3600","maxage":"7200","domain":".example.com",
            "path":"/shop","secure":true,"samesite":"Strict""#
        );
        assert_eq!(
            set_cookie(&all, &shop()),
            format!(
                "SERVERID={v}; Expires=Tue, 14-Nov-23 23:13:20 GMT; Max-Age=7200; Domain=.example.com; Path=/shop; Secure; HttpOnly; SameSite=Strict"
            )
        );
        assert_eq!(
            set_cookie(&format!(r#"{loc},"maxage":"-1","samesite":"Lax""#), &shop()),
            format!("route={v}; Max-Age=-1; Path=/; HttpOnly; SameSite=Lax")
        );
        // A front end without a location path ($location_path not defined) gets "/",
        // for the `locations` filter and the Path alike.
        let root = r#""locations":{"h":["/"]}"#;
        let req = Request { host: b"h", ..Request::EMPTY };
        assert_eq!(set_cookie(root, &req), format!("route={v}; Path=/; HttpOnly"));
    }

    #[test]
    fn samesite_none_and_user_agents() {
        let v = format!("{}|{}", persistent_key("10.6.0.1:8080"), backend_key());
        let none = r#""locations":{"shop.example.com":["/"]},"samesite":"None""#;
        let conditional =
            r#""locations":{"shop.example.com":["/"]},"samesite":"None","conditional_samesite_none":true"#;
        let old_chrome = Request {
            user_agent: b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/51.0.2704.103 Safari/537.36",
            ..shop()
        };
        let new_chrome = Request {
            user_agent: b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/71.0.2704.103 Safari/537.36",
            ..shop()
        };
        let with = format!("route={v}; Path=/; HttpOnly; SameSite=None");
        let without = format!("route={v}; Path=/; HttpOnly");
        assert_eq!(set_cookie(none, &old_chrome), with, "not conditional: always sent");
        assert_eq!(set_cookie(conditional, &new_chrome), with);
        assert_eq!(set_cookie(conditional, &old_chrome), without);
        assert_eq!(set_cookie(conditional, &shop()), with, "no user agent");
        // Strict/Lax are never dropped.
        let strict = r#""locations":{"shop.example.com":["/"]},"samesite":"Strict","conditional_samesite_none":true"#;
        assert_eq!(set_cookie(strict, &old_chrome), format!("route={v}; Path=/; HttpOnly; SameSite=Strict"));
    }

    fn rejected(cookie: &str) -> String {
        let err = Core::new().apply_backends(&doc(&endpoints(2), "balanced", cookie)).unwrap_err();
        assert!(matches!(err, ConfigError::Field { .. }), "{err:?}");
        err.to_string()
    }

    #[test]
    fn invalid_attributes_reject_the_document() {
        let e = rejected(r#""expires":"1h""#);
        assert_eq!(
            e,
            r#"backend "default-web-80": field `sessionAffinityConfig.cookieSessionAffinity.expires`: "1h" is not a whole number of seconds"#
        );
        assert!(rejected(r#""maxage":"1.5""#).contains("cookieSessionAffinity.maxage"));
        assert!(rejected(r#""maxage":" 60""#).contains("cookieSessionAffinity.maxage"));
        let e = rejected(r#""name":"my cookie""#);
        assert!(
            e.contains("field `sessionAffinityConfig.cookieSessionAffinity.name`") && e.contains("my cookie"),
            "{e}"
        );
        assert!(rejected(r#""name":"a;b""#).contains(".name"));
        assert!(rejected(r#""path":"/a;b""#).contains(".path"));
        assert!(rejected(r#""domain":"x.com\r\nSet-Cookie: a=b""#).contains(".domain"));
        // Wrong JSON types are named too (the model's own check).
        let e = Core::new()
            .apply_backends(&doc(&endpoints(1), "persistent", r#""change_on_failure":"yes""#))
            .unwrap_err()
            .to_string();
        assert!(e.contains("change_on_failure"), "{e}");
    }

    #[test]
    fn lenient_attributes_are_accepted_with_a_warning() {
        let core = Core::new();
        let report = core.apply_backends(&doc(&endpoints(1), "persistent", r#""samesite":"Sometimes""#)).unwrap();
        assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);
        assert!(report.warnings[0].contains("\"Sometimes\" is not Strict, Lax or None"), "{:?}", report.warnings);
        assert!(report.warnings[0].starts_with("backend \"default-web-80\""));
        let v = format!("{}|{}", persistent_key("10.6.0.1:8080"), backend_key());
        let loc = r#""locations":{"shop.example.com":["/"]}"#;
        assert_eq!(
            set_cookie(&format!(r#"{loc},"samesite":"Sometimes""#), &shop()),
            format!("route={v}; Path=/; HttpOnly")
        );
        // Another case of a known value: normalised (stock drops it), with a warning.
        let report = core.apply_backends(&doc(&endpoints(1), "persistent", r#""samesite":"none""#)).unwrap();
        assert!(report.warnings[0].contains("read as \"None\""), "{:?}", report.warnings);
        assert_eq!(
            set_cookie(&format!(r#"{loc},"samesite":"lax""#), &shop()),
            format!("route={v}; Path=/; HttpOnly; SameSite=Lax")
        );
        // An empty name is the default name.
        assert!(set_cookie(&format!(r#"{loc},"name":"""#), &shop()).starts_with("route="));
    }

    #[test]
    fn is_affinitized_as_ingress_nginx() {
        let core = Core::new();
        let other = r#"{"name":"plain","endpoints":[{"address":"10.0.0.1","port":"80"}]}"#;
        let sticky = String::from_utf8(doc(&endpoints(2), "balanced", r#""name":"sess""#)).unwrap();
        let docs = format!("[{},{other}]", &sticky[1..sticky.len() - 1]);
        core.apply_backends(docs.as_bytes()).unwrap();
        let bk = backend_key();
        let yes = format!("a=1; sess=anything|{bk}");
        assert!(core.is_affinitized(NAME.as_bytes(), yes.as_bytes()));
        assert!(core.is_affinitized(NAME.as_bytes(), format!("sess={bk}|{bk}").as_bytes()));
        assert!(!core.is_affinitized(NAME.as_bytes(), b""));
        assert!(!core.is_affinitized(NAME.as_bytes(), format!("route=x|{bk}").as_bytes()), "other cookie name");
        assert!(!core.is_affinitized(NAME.as_bytes(), b"sess=x|0123"), "another backend's key");
        assert!(!core.is_affinitized(NAME.as_bytes(), format!("sess={bk}").as_bytes()), "no backend key part");
        assert!(!core.is_affinitized(b"plain", yes.as_bytes()), "not sticky");
        assert!(!core.is_affinitized(b"missing", yes.as_bytes()));
    }

    #[test]
    fn write_to_needs_room() {
        let core = core(&endpoints(1), "persistent", &format!(r#"{LOCATIONS},"domain":"{}""#, "d".repeat(900)));
        core.pick_with(NAME.as_bytes(), &shop(), &mut PickCtx::new(), |p| {
            let c = p.set_cookie.unwrap();
            assert_eq!(c.name(), "route");
            let mut buf = [0u8; 2048];
            let n = c.write_to(&mut buf).unwrap();
            assert!(n > 900 && n <= crate::SetCookie::MAX);
            assert_eq!(c.write_to(&mut buf[..n]), Some(n));
            assert_eq!(c.write_to(&mut buf[..n - 1]), None);
            assert_eq!(c.write_to(&mut []), None);
        })
        .unwrap();
        // Longer than SetCookie::MAX: never written, whatever the buffer.
        let core = super::behaviour::core(
            &endpoints(1),
            "persistent",
            &format!(r#"{LOCATIONS},"domain":"{}""#, "d".repeat(1000)),
        );
        core.pick_with(NAME.as_bytes(), &shop(), &mut PickCtx::new(), |p| {
            assert_eq!(p.set_cookie.unwrap().write_to(&mut [0u8; 4096]), None);
        })
        .unwrap();
    }
}
