//! Balancing algorithms. Each backend owns one, chosen when its configuration is
//! compiled; picks read it through a shared reference and never allocate.

mod chash;
mod chashsubset;
pub(crate) mod ewma;
mod round_robin;
mod sticky;

pub(crate) use ewma::{Ewma, EWMA_DECAY_SECS};
pub(crate) use round_robin::RoundRobin;

use chash::Chash;
use chashsubset::ChashSubset;
use sticky::{StickyBalanced, StickyPersistent};

use crate::config::BackendSpec;
use crate::pick::PickCtx;
use crate::request::{Request, SetCookie};
use crate::snapshot::{Backend, Endpoint};

/// What an algorithm decided for one attempt.
#[derive(Debug)]
pub(crate) struct Choice<'a> {
    /// Index into the backend's endpoints.
    pub(crate) index: usize,
    /// The endpoint's score (ewma), else 0.
    pub(crate) score: f64,
    /// A cookie the response must set (sticky).
    pub(crate) set_cookie: Option<SetCookie<'a>>,
}

impl Choice<'_> {
    pub(crate) fn index(index: usize) -> Self {
        Choice { index, score: 0.0, set_cookie: None }
    }
}

/// The algorithm of one backend, with its per-process state.
#[derive(Debug)]
pub(crate) enum Algorithm {
    RoundRobin(RoundRobin),
    Ewma(Ewma),
    Chash(Chash),
    ChashSubset(ChashSubset),
    StickyBalanced(StickyBalanced),
    StickyPersistent(StickyPersistent),
}

/// The algorithm ingress-nginx would select for a backend, by its precedence:
/// cookie affinity, then `upstream-hash-by`, then `load-balance`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlgorithmKind {
    RoundRobin,
    Ewma,
    Chash,
    ChashSubset,
    StickyBalanced,
    StickyPersistent,
}

impl AlgorithmKind {
    /// ingress-nginx's name of the algorithm.
    pub fn name(self) -> &'static str {
        match self {
            AlgorithmKind::RoundRobin => "round_robin",
            AlgorithmKind::Ewma => "ewma",
            AlgorithmKind::Chash => "chash",
            AlgorithmKind::ChashSubset => "chashsubset",
            AlgorithmKind::StickyBalanced => "sticky_balanced",
            AlgorithmKind::StickyPersistent => "sticky_persistent",
        }
    }

    /// Select as ingress-nginx's `balancer.lua` `get_implementation()` does. An
    /// unknown `load-balance` name is reported so the caller can warn once.
    pub(crate) fn select(spec: &BackendSpec) -> (AlgorithmKind, Option<String>) {
        if spec.session_affinity.name == "cookie" {
            let kind = if spec.session_affinity.mode == "persistent" {
                AlgorithmKind::StickyPersistent
            } else {
                AlgorithmKind::StickyBalanced
            };
            return (kind, None);
        }
        if !spec.upstream_hash_by.hash_by.is_empty() {
            let kind = if spec.upstream_hash_by.subset { AlgorithmKind::ChashSubset } else { AlgorithmKind::Chash };
            return (kind, None);
        }
        match spec.load_balance.as_str() {
            "" | "round_robin" => (AlgorithmKind::RoundRobin, None),
            "ewma" => (AlgorithmKind::Ewma, None),
            other => (
                AlgorithmKind::RoundRobin,
                Some(format!("backend \"{}\": unknown load-balance {other:?}, using round_robin", spec.name)),
            ),
        }
    }
}

impl Algorithm {
    /// Build the algorithm state of a backend. Invalid cookie-affinity attributes
    /// reject the backend; lenient ones add a warning.
    pub(crate) fn build(
        kind: AlgorithmKind,
        endpoints: &[Endpoint],
        spec: &BackendSpec,
        warnings: &mut Vec<String>,
    ) -> Result<Self, crate::ConfigError> {
        Ok(match kind {
            AlgorithmKind::RoundRobin => Algorithm::RoundRobin(RoundRobin::new(endpoints.len())),
            AlgorithmKind::Ewma => Algorithm::Ewma(Ewma::new(endpoints)),
            AlgorithmKind::Chash => Algorithm::Chash(Chash::new(endpoints)),
            AlgorithmKind::ChashSubset => {
                let size = spec.upstream_hash_by.subset_size;
                if size as usize > chashsubset::MAX_SUBSET_SIZE {
                    warnings.push(format!(
                        "backend \"{}\": upstream-hash-by-subset-size {size} is over the limit of {}: using {}",
                        spec.name,
                        chashsubset::MAX_SUBSET_SIZE,
                        chashsubset::MAX_SUBSET_SIZE
                    ));
                }
                Algorithm::ChashSubset(ChashSubset::new(endpoints, size))
            }
            AlgorithmKind::StickyBalanced => Algorithm::StickyBalanced(StickyBalanced::new(endpoints, spec, warnings)?),
            AlgorithmKind::StickyPersistent => {
                Algorithm::StickyPersistent(StickyPersistent::new(endpoints, spec, warnings)?)
            }
        })
    }

    /// The endpoint to use for this attempt of the request, given the endpoints it
    /// tried so far. `backend.endpoints` is never empty.
    #[inline(always)]
    pub(crate) fn pick<'a>(&'a self, backend: &'a Backend, req: &Request<'a>, ctx: &mut PickCtx) -> Choice<'a> {
        match self {
            Algorithm::RoundRobin(rr) => Choice::index(rr.pick(&backend.endpoints, ctx)),
            Algorithm::Ewma(e) => e.pick(&backend.endpoints, req, ctx),
            Algorithm::Chash(c) => Choice::index(c.pick(&backend.endpoints, req.hash_key, ctx)),
            Algorithm::ChashSubset(c) => Choice::index(c.pick(&backend.endpoints, req.hash_key, ctx)),
            Algorithm::StickyBalanced(s) => s.pick(&backend.endpoints, req, ctx),
            Algorithm::StickyPersistent(s) => s.pick(&backend.endpoints, req, ctx),
        }
    }

    /// ingress-nginx's `is_affinitized`: the request carries this sticky backend's
    /// cookie (its backend key part matches). Always false for other algorithms.
    pub(crate) fn is_affinitized(&self, cookie_header: &[u8]) -> bool {
        match self {
            Algorithm::StickyBalanced(s) => s.cookie.is_affinitized(cookie_header),
            Algorithm::StickyPersistent(s) => s.cookie.is_affinitized(cookie_header),
            _ => false,
        }
    }
}

/// First index at or after `start` (wrapping) whose endpoint was not tried in this
/// request; `start` itself when every endpoint was tried.
#[inline]
pub(crate) fn first_untried(endpoints: &[Endpoint], start: usize, ctx: &PickCtx) -> usize {
    if ctx.attempts() == 0 {
        return start;
    }
    let n = endpoints.len();
    let mut i = start;
    for _ in 0..n {
        if !ctx.has_tried(endpoints[i].key) {
            return i;
        }
        i += 1;
        if i == n {
            i = 0;
        }
    }
    start
}
