//! Ewma: power of two choices over an exponentially weighted moving average of the
//! endpoints' response times, as ingress-nginx's `balancer/ewma.lua`, with its
//! statistics in a lock-free table that nginx workers may share ([`SharedStats`]).
//!
//! The formula is stock's: a sample `rtt` taken `td` seconds after the endpoint's last
//! update gives `ewma = ewma * w + rtt * (1 - w)` with `w = exp(-td / 10)`, and the
//! score of an endpoint at a pick is its ewma decayed the same way, `ewma * w`.
//!
//! Differences from stock, all deliberate:
//! - a sample is `$upstream_response_time` alone: nginx's response time already
//!   includes the connect time, which stock adds a second time;
//! - every attempt of the request is counted, not only the last one;
//! - a failed attempt counts as a sample of at least [`FAILURE_RTT_SECS`] (see
//!   [`attempt_sample`]), so an endpoint that fails fast does not look fast;
//! - endpoints tried earlier in the request are excluded while untried ones remain
//!   (stock does the same, through `ngx.ctx`);
//! - a new endpoint starts at the average *decayed* score of the backend's endpoints
//!   that have statistics (stock averages the stored values without decay);
//! - statistics are shared by workers without locks (stock: shared dicts and a lock
//!   per update).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;

use super::{Algorithm, Choice};
use crate::pick::PickCtx;
use crate::request::Request;
use crate::rng::below;
use crate::snapshot::{endpoint_key, Backend, Endpoint};
use crate::stats::{now_secs, SharedStats, MAX_SLOTS};

/// Decay time of the moving average, seconds (stock's `DECAY_TIME`).
pub(crate) const EWMA_DECAY_SECS: f64 = 10.0;

/// Smallest sample a failed attempt counts as, seconds: nginx's default
/// `proxy_read_timeout` (also ingress-nginx's), so under default timeouts a failure
/// never scores better than any successful response. A timed-out attempt whose
/// measured time is longer counts as that time.
pub(crate) const FAILURE_RTT_SECS: f64 = 60.0;

/// Score reported when a backend has a single endpoint and nothing was compared
/// (stock sets `$balancer_ewma_score` to -1 then).
pub(crate) const SINGLE_ENDPOINT_SCORE: f64 = -1.0;

/// Smallest process-local table (endpoints), used until [`crate::Core::use_stats`].
const LOCAL_MIN_SLOTS: usize = 4096;

/// The statistics a core's ewma backends use: process-local until the front end gives
/// shared ones. Picks read the table in force with one atomic load; every table ever
/// installed stays alive as long as the cell (a core switches tables once or twice in
/// its life), so a reference obtained by a pick stays valid whatever happens meanwhile.
#[derive(Default)]
pub(crate) struct StatsCell {
    current: AtomicPtr<SharedStats>,
    /// Owners of every table installed, the one in force last.
    tables: Mutex<Vec<Arc<SharedStats>>>,
}

impl StatsCell {
    pub(crate) fn set(&self, stats: Arc<SharedStats>) {
        let mut tables = self.tables.lock();
        self.current.store(Arc::as_ptr(&stats).cast_mut(), Ordering::Release);
        tables.push(stats);
    }

    /// The table in force, if any.
    #[inline]
    pub(crate) fn get(&self) -> Option<&SharedStats> {
        // SAFETY: a non-null pointer is one of `tables`, which are never removed while
        // self lives, and the returned reference cannot outlive self.
        unsafe { self.current.load(Ordering::Acquire).as_ref() }
    }

    /// The statistics in use, creating process-local ones (room for `endpoints`, at
    /// least [`LOCAL_MIN_SLOTS`]) if there are none yet.
    fn get_or_local(&self, endpoints: usize) -> Option<&SharedStats> {
        if let Some(s) = self.get() {
            return Some(s);
        }
        let slots = endpoints.saturating_mul(2).clamp(LOCAL_MIN_SLOTS, MAX_SLOTS as usize) as u32;
        let local = Arc::new(SharedStats::local(slots).ok()?);
        let mut tables = self.tables.lock();
        // Shared statistics installed meanwhile by use_stats win.
        if self.current.load(Ordering::Acquire).is_null() {
            self.current.store(Arc::as_ptr(&local).cast_mut(), Ordering::Release);
            tables.push(local);
        }
        drop(tables);
        self.get()
    }
}

/// Ewma state of one backend.
#[derive(Debug)]
pub(crate) struct Ewma {
    /// The core's statistics, set when the backend is published.
    cell: OnceLock<Arc<StatsCell>>,
    /// Keys of the backend's endpoints, sorted: which observed addresses are ours.
    keys: Box<[u64]>,
}

impl std::fmt::Debug for StatsCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatsCell").field("current", &self.get()).finish()
    }
}

impl Ewma {
    pub(crate) fn new(endpoints: &[Endpoint]) -> Self {
        let mut keys: Vec<u64> = endpoints.iter().map(|e| e.key).collect();
        keys.sort_unstable();
        Ewma { cell: OnceLock::new(), keys: keys.into_boxed_slice() }
    }

    /// Two distinct random untried endpoints, the lower score wins.
    #[inline]
    pub(crate) fn pick(&self, endpoints: &[Endpoint], req: &Request<'_>, ctx: &PickCtx) -> Choice<'static> {
        let n = endpoints.len();
        if n == 1 {
            return Choice { index: 0, score: SINGLE_ENDPOINT_SCORE, set_cookie: None };
        }
        let stats = self.cell.get().and_then(|c| c.get());
        let now = stats.map_or(0, |s| s.time(request_now(req)));
        let score = |i: usize| stats.and_then(|s| s.score(endpoints[i].key, now));
        let (a, b) = candidates(endpoints, ctx);
        let Some(b) = b else {
            return Choice { index: a, score: score(a).unwrap_or(0.0), set_cookie: None };
        };
        let (index, s) = match (score(a), score(b)) {
            (Some(sa), Some(sb)) if sb < sa => (b, sb),
            (Some(sa), Some(_)) => (a, sa),
            // An endpoint without statistics (table full, or new with no average to
            // start from) is neither preferred nor avoided: `a` is a uniform draw.
            (sa, _) => (a, sa.unwrap_or(0.0)),
        };
        Choice { index, score: s, set_cookie: None }
    }

    /// Fold the attempts of a finished request into the statistics of those of its
    /// endpoints that belong to this backend. Never allocates.
    pub(crate) fn observe(&self, addr: &[u8], status: &[u8], connect: &[u8], response: &[u8], now: f64) {
        let Some(stats) = self.cell.get().and_then(|c| c.get()) else { return };
        let t = stats.time(if now.is_finite() && now > 0.0 { now } else { now_secs() });
        let (mut statuses, mut connects, mut responses) = (Entries(status), Entries(connect), Entries(response));
        for a in Entries(addr) {
            let (s, c, r) = (statuses.next(), connects.next(), responses.next());
            let Some(rtt) = attempt_sample(s.unwrap_or(b"-"), c.unwrap_or(b"-"), r.unwrap_or(b"-")) else {
                continue;
            };
            let Some(sock) = parse_addr(a) else { continue };
            let key = endpoint_key(&sock);
            if self.keys.binary_search(&key).is_ok() {
                stats.update(key, rtt, t);
            }
        }
    }

    /// Give the backend's endpoints without statistics the average score of those
    /// that have some (stock's slow start), at time `t`.
    fn seed(endpoints: &[Endpoint], stats: &SharedStats, t: u32) {
        let (mut sum, mut count, mut missing) = (0.0, 0usize, false);
        for e in endpoints {
            match stats.score(e.key, t) {
                Some(s) => {
                    sum += s;
                    count += 1;
                }
                None => missing = true,
            }
        }
        if !missing || count == 0 {
            return;
        }
        let average = sum / count as f64;
        for e in endpoints {
            if stats.score(e.key, t).is_none() {
                stats.seed(e.key, average, t);
            }
        }
    }
}

/// Connect the ewma backends of a snapshot about to be published to the core's
/// statistics; new backends seed their new endpoints.
pub(crate) fn attach(backends: &[Arc<Backend>], cell: &Arc<StatsCell>) {
    let total: usize =
        backends.iter().filter(|b| matches!(b.algorithm, Algorithm::Ewma(_))).map(|b| b.endpoints.len()).sum();
    let mut stats = None;
    for b in backends {
        if let Algorithm::Ewma(e) = &b.algorithm {
            if e.cell.set(Arc::clone(cell)).is_ok() {
                if stats.is_none() {
                    stats = cell.get_or_local(total);
                }
                if let Some(s) = &stats {
                    Ewma::seed(&b.endpoints, s, s.time(now_secs()));
                }
            }
        }
    }
}

/// After the statistics were replaced: seed every ewma backend's endpoints in them.
pub(crate) fn reseed(backends: &[Arc<Backend>], cell: &StatsCell) {
    let Some(stats) = cell.get() else { return };
    let t = stats.time(now_secs());
    for b in backends {
        if matches!(b.algorithm, Algorithm::Ewma(_)) {
            Ewma::seed(&b.endpoints, stats, t);
        }
    }
}

/// The request's time, or the clock's when the front end gave none.
#[inline]
fn request_now(req: &Request<'_>) -> f64 {
    if req.now.is_finite() && req.now > 0.0 {
        req.now
    } else {
        now_secs()
    }
}

/// Two distinct candidates, uniform among the endpoints not tried in this request
/// (among all of them once every one was tried); one when a single untried endpoint
/// remains.
#[inline]
fn candidates(endpoints: &[Endpoint], ctx: &PickCtx) -> (usize, Option<usize>) {
    let n = endpoints.len();
    if ctx.attempts() > 0 {
        let untried = |i: usize| !ctx.has_tried(endpoints[i].key);
        if let Some(a) = draw(n, untried) {
            return (a, draw(n, |i| i != a && untried(i)));
        }
    }
    let a = below(n);
    let mut b = below(n - 1);
    if b >= a {
        b += 1;
    }
    (a, Some(b))
}

/// A uniform index in `0..n` satisfying `ok`, if any: a few random draws, then an
/// exact count (only when most endpoints are excluded, so `n` is small).
#[inline]
fn draw(n: usize, ok: impl Fn(usize) -> bool) -> Option<usize> {
    for _ in 0..16 {
        let i = below(n);
        if ok(i) {
            return Some(i);
        }
    }
    let count = (0..n).filter(|&i| ok(i)).count();
    if count == 0 {
        return None;
    }
    (0..n).filter(|&i| ok(i)).nth(below(count))
}

/// What an attempt contributes to its endpoint's ewma, from its entries in nginx's
/// `$upstream_status`, `$upstream_connect_time` and `$upstream_response_time`:
///
/// - **failed** — status 502 or 504 (nginx reports an attempt that failed with a
///   connection error, a reset, an invalid header or a timeout with these; a backend
///   answering them itself fails its clients too), or status `-` with connect time `-`
///   (no connection and no response, e.g. the client gave up while nginx was still
///   connecting): a sample of `max(response time, FAILURE_RTT_SECS)`;
/// - **answered** — any other status: a sample of the response time (which includes
///   the connect time); ignored if the time is `-`;
/// - **cut short** — status `-` after a connection (the request ended before the
///   upstream answered, e.g. the client closed): the response time so far, a lower
///   bound of the real one; ignored if the time is `-`.
pub(crate) fn attempt_sample(status: &[u8], connect: &[u8], response: &[u8]) -> Option<f64> {
    let response = parse_time(response);
    match parse_status(status) {
        Some(502 | 504) => Some(response.unwrap_or(0.0).max(FAILURE_RTT_SECS)),
        None if parse_time(connect).is_none() && status_is_dash(status) => {
            Some(response.unwrap_or(0.0).max(FAILURE_RTT_SECS))
        }
        _ => response,
    }
}

fn status_is_dash(s: &[u8]) -> bool {
    s == b"-" || s.is_empty()
}

fn parse_status(s: &[u8]) -> Option<u16> {
    if s.is_empty() || s.len() > 3 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0u16, |n, d| n * 10 + u16::from(d - b'0')))
}

/// "0.012" → 0.012 seconds; "-" or anything else that is not a finite, non-negative
/// number → `None`.
fn parse_time(s: &[u8]) -> Option<f64> {
    if s.is_empty() || s == b"-" || !s.iter().all(|b| b.is_ascii_digit() || *b == b'.') {
        return None;
    }
    let v: f64 = std::str::from_utf8(s).ok()?.parse().ok()?;
    (v.is_finite() && v >= 0.0).then_some(v)
}

/// "10.0.0.1:8080" or "[fd00::1]:8080"; a unix socket or an upstream name → `None`.
fn parse_addr(s: &[u8]) -> Option<SocketAddr> {
    if s.len() > 64 {
        return None;
    }
    std::str::from_utf8(s).ok()?.parse().ok()
}

/// The entries of one of nginx's `$upstream_*` variables: one per attempt, separated
/// by ", " and, between internal redirects, by " : ". Entries are trimmed; empty ones
/// are kept as empty (so the variables stay in step).
#[derive(Clone, Copy)]
struct Entries<'a>(&'a [u8]);

impl<'a> Iterator for Entries<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let s = self.0;
        if s.is_empty() {
            return None;
        }
        // A separator is a ',' or a ':' with a space before and after it (addresses
        // hold ':' but never " : ").
        let mut i = 0;
        let (end, rest) = loop {
            if i == s.len() {
                break (s.len(), s.len());
            }
            match s[i] {
                b',' => break (i, i + 1),
                b':' if i > 0 && s[i - 1] == b' ' && s.get(i + 1) == Some(&b' ') => break (i, i + 1),
                _ => i += 1,
            }
        };
        self.0 = &s[rest..];
        if rest == end + 1 && self.0.iter().all(|b| *b == b' ') {
            // A trailing separator: no entry after it.
            self.0 = &[];
        }
        Some(s[..end].trim_ascii())
    }
}

#[cfg(test)]
mod tests;
