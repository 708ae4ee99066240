//! ingress-lb: the data-plane decisions of an nginx ingress gateway, in one core.
//!
//! The controller's backends JSON is compiled into an immutable [`Snapshot`] and
//! published atomically; picks read the snapshot in force without locks and without
//! allocating. The same [`Core`] is used by the C ABI (`ffi`, for LuaJIT) and by the
//! nginx module (`nginx-module/`), so every decision is made here and only here.

#![deny(unsafe_op_in_unsafe_fn)]

mod background;
mod balancer;
mod bytes;
mod canary;
mod certs;
pub mod config;
mod cookie;
mod error;
#[cfg(feature = "capi")]
pub mod ffi;
mod pick;
mod request;
mod rng;
mod snapshot;
pub mod state;
mod stats;

use std::borrow::Cow;
use std::sync::Arc;

use arc_swap::ArcSwap;
use parking_lot::Mutex;

pub use balancer::AlgorithmKind;
pub use canary::{header_name_byte, header_name_is, Headers};
pub use certs::{CertObjects, CertRef, ServersReport};
pub use config::MAX_CONFIG_BYTES;
pub use error::{ConfigError, PickError};
pub use pick::{Peer, PeerRef, PickCtx, ADDR_MAX, COOKIE_MAX, MAX_TRIED};
pub use request::{BackendInfo, Picked, Request, SetCookie};
pub use snapshot::ApplyReport;
pub use stats::{SharedStats, StatsCounters, StatsError};

use snapshot::{Compiled, Snapshot};

/// The balancer core of one process. `Send + Sync`: picks may run on any thread
/// while another applies a configuration.
pub struct Core {
    current: ArcSwap<Snapshot>,
    /// Serialises appliers so two concurrent updates cannot both build on the same
    /// previous snapshot and lose one of them.
    apply_lock: Mutex<()>,
    /// Where the ewma backends keep their statistics ([`Core::use_stats`]).
    stats: Arc<balancer::ewma::StatsCell>,
    /// The SNI certificate store in force (`src/certs.rs`), published like `current`.
    certs: ArcSwap<certs::CertStore>,
    /// Serialises servers appliers, as `apply_lock` does backends appliers.
    certs_lock: Mutex<()>,
    /// The backends configuration being compiled on a thread of its own, if any
    /// ([`Core::apply_backends_or_start`]).
    build: Mutex<Option<background::Build>>,
}

/// The default `inline_bytes` of [`Core::apply_backends_or_start`], used by both
/// front ends (`ILB_INLINE_APPLY_BYTES` in the C header): changed backends of at
/// most this much JSON are built on the caller's event loop (about 30 ns per byte:
/// 2 ms), larger changes on a thread of their own.
pub const INLINE_APPLY_BYTES: usize = 65536;

/// Freeing a backend costs about a sixth of building it (10 ms for 3000): a
/// configuration replacing at least this many is freed on another thread.
const FREE_ELSEWHERE_BACKENDS: usize = 256;

/// What [`Core::apply_backends_or_start`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Applied here (or found identical to the configuration in force).
    Applied(ApplyReport),
    /// Compiling on a thread of its own: collect it with [`Core::collect_backends`].
    Started,
    /// A compilation started earlier is still running: collect it first.
    Busy,
}

/// What [`Core::collect_backends`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Collected {
    /// No compilation was started (or its result was collected already).
    Idle,
    /// Still compiling; the configuration in force keeps serving.
    Running,
    /// Compiled and now in force.
    Applied(ApplyReport),
    /// The document was rejected; the configuration in force stays.
    Rejected(ConfigError),
    /// Compiled without error, but another configuration was applied meanwhile, so
    /// this one was dropped (it would have replaced a newer one): apply again.
    Superseded,
}

impl Default for Core {
    fn default() -> Self {
        Self::new()
    }
}

impl Core {
    /// A core with no backends.
    pub fn new() -> Core {
        Core {
            current: ArcSwap::from_pointee(Snapshot::default()),
            apply_lock: Mutex::new(()),
            stats: Arc::default(),
            certs: ArcSwap::from_pointee(certs::CertStore::default()),
            certs_lock: Mutex::new(()),
            build: Mutex::new(None),
        }
    }

    /// Parse, validate and compile the controller's backends JSON array, then publish
    /// it atomically. A document identical to the one in force is recognised without
    /// decoding; backends whose JSON text did not change are reused as they are (their
    /// balancing state included). On error nothing changes.
    pub fn apply_backends(&self, json: &[u8]) -> Result<ApplyReport, ConfigError> {
        match self.apply_backends_or_start_locked(Cow::Borrowed(json), usize::MAX, None)? {
            Progress::Applied(report) => Ok(report),
            // No budget: never deferred.
            Progress::Started | Progress::Busy => unreachable!("apply without a budget was deferred"),
        }
    }

    /// [`Core::apply_backends`] on this thread if the backends that changed (those to
    /// decode and build anew) add up to at most `inline_bytes` of JSON; otherwise the
    /// document is compiled on a thread of its own and [`Progress::Started`] returned:
    /// the configuration in force keeps serving, and [`Core::collect_backends`]
    /// publishes the new one once it is ready. What the calling thread spends is then
    /// one structural scan of the document and a hash look-up per backend (about a
    /// millisecond for 3000 backends), never the build. A document rejected by the
    /// scan is rejected here, with nothing started.
    ///
    /// For a worker's event loop: an update that changes a few backends is applied at
    /// once, a large one (a first configuration, a controller that rewrote every
    /// backend) does not stall the requests in flight.
    pub fn apply_backends_or_start(&self, json: &[u8], inline_bytes: usize) -> Result<Progress, ConfigError> {
        self.apply_backends_or_start_cow(Cow::Borrowed(json), inline_bytes)
    }

    /// [`Core::apply_backends_or_start`] with a document the caller gives away: a
    /// large change is compiled from it as it is, where the borrowing version copies it
    /// first (a copy of megabytes on the caller's thread, into fresh pages).
    pub fn apply_backends_or_start_owned(&self, json: Vec<u8>, inline_bytes: usize) -> Result<Progress, ConfigError> {
        self.apply_backends_or_start_cow(Cow::Owned(json), inline_bytes)
    }

    fn apply_backends_or_start_cow(&self, json: Cow<'_, [u8]>, inline_bytes: usize) -> Result<Progress, ConfigError> {
        let mut build = self.build.lock();
        if build.is_some() {
            return Ok(Progress::Busy);
        }
        self.apply_backends_or_start_locked(json, inline_bytes, Some(&mut build))
    }

    /// Both appliers: `build` is the compilation slot (held by the caller), `None`
    /// for an apply that never defers.
    fn apply_backends_or_start_locked(
        &self,
        json: Cow<'_, [u8]>,
        inline_bytes: usize,
        build: Option<&mut Option<background::Build>>,
    ) -> Result<Progress, ConfigError> {
        let _guard = self.apply_lock.lock();
        let prev = self.current.load_full();
        let budget = if build.is_some() { inline_bytes } else { usize::MAX };
        match Snapshot::compile_within(&json, &prev, budget)? {
            Compiled::Same => {
                let n = prev.backends.len();
                Ok(Progress::Applied(ApplyReport { backends: n, reused: n, unchanged: true, ..Default::default() }))
            }
            Compiled::Built(next, report) => {
                self.publish(next, &report);
                Ok(Progress::Applied(report))
            }
            Compiled::Deferred => match background::Build::start(json.into_owned(), prev) {
                Ok(started) => {
                    if let Some(slot) = build {
                        *slot = Some(started);
                    }
                    Ok(Progress::Started)
                }
                // No thread to be had: build here, as apply_backends does.
                Err(json) => {
                    let (next, report) = Snapshot::compile(&json, &self.current.load_full())?;
                    self.publish(next, &report);
                    Ok(Progress::Applied(report))
                }
            },
        }
    }

    /// Publish the result of a compilation started by
    /// [`Core::apply_backends_or_start`] if it is ready. Cheap when nothing is
    /// running or it is still running (a lock not contended by requests and a flag).
    pub fn collect_backends(&self) -> Collected {
        let mut slot = self.build.lock();
        match &*slot {
            None => return Collected::Idle,
            Some(b) if !b.handle.is_finished() => return Collected::Running,
            Some(_) => {}
        }
        let Some(build) = slot.take() else { return Collected::Idle };
        let _guard = self.apply_lock.lock();
        match build.handle.join() {
            Err(panic) => Collected::Rejected(ConfigError::Internal(panic_text(&*panic))),
            Ok(Err(e)) => Collected::Rejected(e),
            Ok(Ok(_)) if !Arc::ptr_eq(&self.current.load(), &build.base) => Collected::Superseded,
            Ok(Ok((next, report))) => {
                self.publish(next, &report);
                Collected::Applied(report)
            }
        }
    }

    /// Make `next` (compiled as `report` says) the configuration in force (the caller
    /// holds `apply_lock`).
    fn publish(&self, next: Snapshot, report: &ApplyReport) {
        balancer::ewma::attach(&next.backends, &self.stats);
        let old = self.current.swap(Arc::new(next));
        // Many backends to free (a configuration that replaced most of a large one):
        // on another thread, which also hands the memory back to the system.
        if old.backends.len().saturating_sub(report.reused) >= FREE_ELSEWHERE_BACKENDS {
            background::drop_elsewhere(old);
        }
    }

    /// The checks of [`Core::apply_backends`] without publishing anything.
    pub fn validate_backends(&self, json: &[u8]) -> Result<(), ConfigError> {
        let prev = self.current.load_full();
        Snapshot::compile_within(json, &prev, usize::MAX).map(|_| ())
    }

    /// The document in force, exactly as it was applied.
    pub fn backends_json(&self) -> Option<Arc<[u8]>> {
        self.current.load().doc.clone()
    }

    /// Warnings about the configuration in force (an unknown `load-balance`, a
    /// skipped ExternalName endpoint, a dropped cookie attribute, a full ewma table),
    /// one per line.
    pub fn warnings(&self) -> String {
        let snapshot = self.current.load();
        let mut out = String::new();
        for w in snapshot.warnings() {
            out.push_str(w);
            out.push('\n');
        }
        if let Some(c) = self.stats_counters().filter(|c| c.full > 0) {
            out.push_str(&format!(
                "ewma statistics table full: {} times an endpoint found no free slot ({} slots, sized for {} \
                 endpoints); enlarge it (Lua: configure{{ ewma_slots }}, module: ingress_lb_ewma_zone)\n",
                c.full, c.capacity, c.limit
            ));
        }
        out
    }

    /// Number of configurations published so far.
    pub fn generation(&self) -> u64 {
        self.current.load().generation
    }

    /// True if the configuration in force has a backend of that name.
    pub fn has_backend(&self, name: &[u8]) -> bool {
        self.current.load().backend(name).is_some()
    }

    /// `Ok` if the backend exists and has endpoints: what `balancer.rewrite()` checks
    /// before letting a request through (it answers 503 otherwise).
    pub fn check_backend(&self, name: &[u8]) -> Result<(), PickError> {
        match self.current.load().backend(name) {
            None => Err(PickError::UnknownBackend),
            Some(b) if b.endpoints.is_empty() => Err(PickError::NoEndpoints),
            Some(_) => Ok(()),
        }
    }

    /// The algorithm a backend uses, if it exists.
    pub fn algorithm(&self, name: &[u8]) -> Option<AlgorithmKind> {
        self.current.load().backend(name).map(|b| b.kind)
    }

    /// Pick an endpoint of backend `name` for the request `req` whose state is `ctx`,
    /// and remember it there. A peer already tried in this request is not picked while
    /// an untried one remains. Never allocates.
    ///
    /// `f` sees the endpoint borrowed from the snapshot, with what the front end must
    /// apply (a cookie to set, the ewma score), and copies what the caller needs
    /// straight into its own buffers; its result is returned.
    #[inline]
    pub fn pick_with<R>(
        &self,
        name: &[u8],
        req: &Request<'_>,
        ctx: &mut PickCtx,
        f: impl FnOnce(Picked<'_>) -> R,
    ) -> Result<R, PickError> {
        let snapshot = self.current.load();
        let backend = snapshot.backend(name).ok_or(PickError::UnknownBackend)?;
        if backend.endpoints.is_empty() {
            return Err(PickError::NoEndpoints);
        }
        let choice = backend.algorithm.pick(backend, req, ctx);
        let endpoint = &backend.endpoints[choice.index];
        ctx.remember(endpoint.key);
        Ok(f(Picked {
            peer: PeerRef { endpoint, index: choice.index as u32 },
            score: choice.score,
            set_cookie: choice.set_cookie,
        }))
    }

    /// ingress-nginx's `is_affinitized(backend)` for canary routing: true if backend
    /// `name` uses cookie affinity (sticky_balanced or sticky_persistent) and the raw
    /// `Cookie` header carries its cookie with its backend key
    /// (`<endpoint key>|md5hex(md5hex(name) .. name)`). False for an unknown backend or
    /// another algorithm. Never allocates.
    pub fn is_affinitized(&self, name: &[u8], cookie_header: &[u8]) -> bool {
        self.current.load().backend(name).is_some_and(|b| b.algorithm.is_affinitized(cookie_header))
    }

    /// Canary routing: which backend serves a request for backend `name` — one of its
    /// `alternativeBackends` or itself — by ingress-nginx's traffic shaping rules
    /// (see the README's canary section). Decide once per request and keep the answer
    /// for every retry. `cookie_header` is the request's `Cookie` header as received;
    /// `headers` gives the request's headers by name.
    ///
    /// `f` gets the chosen alternative's name and its position in
    /// [`Core::alternatives`], or `None` for `name` itself. Never allocates.
    #[inline]
    pub fn route_with<H: Headers + ?Sized, R>(
        &self,
        name: &[u8],
        cookie_header: &[u8],
        headers: &H,
        f: impl FnOnce(Option<(&str, usize)>) -> R,
    ) -> Result<R, PickError> {
        let snapshot = self.current.load();
        let (primary, plan) = snapshot.backend_and_plan(name).ok_or(PickError::UnknownBackend)?;
        let Some(plan) = plan else {
            return Ok(f(None));
        };
        let backend = |i: u32| &*snapshot.backends[i as usize];
        Ok(f(plan.decide(primary, backend, cookie_header, headers).map(|i| {
            let alt = backend(plan.alternatives[i]);
            (alt.spec.name.as_str(), i)
        })))
    }

    /// The request header names the canary decisions of backend `name` read, as
    /// nginx's `$http_<name>` spells them (lower case, `_` for `-`), each once; for
    /// front ends that fetch headers by name. Empty for a backend without
    /// alternatives or an unknown one.
    pub fn route_headers(&self, name: &[u8]) -> Vec<String> {
        let snapshot = self.current.load();
        let mut out: Vec<String> = Vec::new();
        if let Some((_, Some(plan))) = snapshot.backend_and_plan(name) {
            for &i in plan.alternatives.iter() {
                let h = String::from_utf8_lossy(&snapshot.backends[i as usize].policy.header).into_owned();
                if !h.is_empty() && !out.contains(&h) {
                    out.push(h);
                }
            }
        }
        out
    }

    /// The `alternativeBackends` of backend `name`, in order, each once: the
    /// positions [`Core::route_with`] reports (empty if it has none or does not exist).
    pub fn alternatives(&self, name: &[u8]) -> Vec<String> {
        let snapshot = self.current.load();
        match snapshot.backend_and_plan(name) {
            Some((_, Some(plan))) => {
                plan.alternatives.iter().map(|&i| snapshot.backends[i as usize].spec.name.clone()).collect()
            }
            _ => Vec::new(),
        }
    }

    /// What a front end must provide for picks on backend `name`, if it exists.
    pub fn backend_info(&self, name: &[u8]) -> Option<BackendInfo> {
        self.current.load().backend(name).map(|b| b.info())
    }

    /// Call `f` with backend `name`'s `upstream-hash-by` expression, if the backend
    /// exists. For front ends that evaluate the expression themselves.
    pub fn hash_by<R>(&self, name: &[u8], f: impl FnOnce(&str) -> R) -> Option<R> {
        self.current.load().backend(name).map(|b| f(&b.spec.upstream_hash_by.hash_by))
    }

    /// Report how the attempts of a finished request went, from nginx's variables as
    /// they are (`$upstream_addr`, `$upstream_status`, `$upstream_connect_time`,
    /// `$upstream_response_time`: comma-separated per attempt, ` : ` between internal
    /// redirects). Feeds the ewma statistics of the backend's endpoints; ignored for
    /// other algorithms.
    ///
    /// Each attempt whose address is an endpoint of the backend adds a sample: its
    /// response time, or a penalty of at least 60 s if it failed (status 502 or 504, or
    /// no status and no connection); see the README's ewma section. `now` is in seconds
    /// since the Unix epoch (`ngx.now()`; 0 reads the clock). Never allocates.
    pub fn observe(
        &self,
        name: &[u8],
        upstream_addr: &[u8],
        upstream_status: &[u8],
        connect_time: &[u8],
        response_time: &[u8],
        now: f64,
    ) {
        let snapshot = self.current.load();
        if let Some(balancer::Algorithm::Ewma(e)) = snapshot.backend(name).map(|b| &b.algorithm) {
            e.observe(upstream_addr, upstream_status, connect_time, response_time, now);
        }
    }

    /// Keep the ewma statistics of this core in `stats` from now on, instead of
    /// process-local memory: statistics shared with the other processes using the same
    /// memory (nginx workers). Endpoints of the backends in force that have no
    /// statistics there start at their backend's average. May be called at any time;
    /// picks in progress finish with the previous statistics.
    pub fn use_stats(&self, stats: impl Into<Arc<SharedStats>>) {
        let _guard = self.apply_lock.lock();
        self.stats.set(stats.into());
        balancer::ewma::reseed(&self.current.load().backends, &self.stats);
    }

    /// Counters of the ewma statistics in use, if any ewma backend or
    /// [`Core::use_stats`] created them.
    pub fn stats_counters(&self) -> Option<StatsCounters> {
        self.stats.get().map(|s| s.counters())
    }

    /// [`Core::pick_with`] for a request with no data ([`Request::EMPTY`]), returning
    /// an owned copy of the endpoint.
    #[inline]
    pub fn pick(&self, name: &[u8], ctx: &mut PickCtx) -> Result<Peer, PickError> {
        self.pick_with(name, &Request::EMPTY, ctx, |p| p.peer.to_peer())
    }
}

#[cfg(test)]
mod tests;

/// The message of a panic payload.
fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
        (Some(s), _) => (*s).to_string(),
        (_, Some(s)) => s.clone(),
        _ => "panic".to_string(),
    }
}
