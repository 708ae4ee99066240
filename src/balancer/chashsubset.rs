//! `chashsubset`: consistent hashing to a subset of endpoints, then a random endpoint
//! of the subset (ingress-nginx's `balancer/chashsubset.lua`).
//!
//! The endpoint list, in the order of the configuration, is cut into subsets of
//! `upstream-hash-by-subset-size` (default 3); the last one is padded with endpoints
//! from the start of the list, so every subset has the same size (with fewer
//! endpoints than the size, endpoints repeat). Subsets are named `set1`..`setN` on a
//! `resty.chash` ring (see [`super::chash`]); the request's hash key picks the subset,
//! and a uniformly random slot of it the endpoint.
//!
//! Retries (stock ingress-nginx may pick the failed peer again): a random slot among
//! the subset's endpoints not tried yet; once the whole subset was tried, the next
//! subset along the ring that has an untried endpoint — the same neighbour subset for
//! every request of that key, so load still stays within a few subsets — and a random
//! untried endpoint of it. Only when every endpoint was tried is a tried one returned.

use rand::Rng;

use super::chash::{any_untried, Ring};
use crate::pick::PickCtx;
use crate::snapshot::Endpoint;

/// `upstream-hash-by-subset-size` when the configuration gives none (0).
pub(crate) const DEFAULT_SUBSET_SIZE: usize = 3;

/// Largest `upstream-hash-by-subset-size` used; a larger one is lowered to it, with a
/// warning. Subsets are materialised (`size` slots, at least one subset), so a size of
/// 4 000 000 000 would have allocated 16 GB for a single endpoint (found by fuzzing).
pub(crate) const MAX_SUBSET_SIZE: usize = 4096;

#[derive(Debug)]
pub(crate) struct ChashSubset {
    ring: Ring,
    size: usize,
    /// Endpoint indices, `size` per subset: subset `i` is `members[i*size..(i+1)*size]`.
    members: Box<[u32]>,
}

impl ChashSubset {
    pub(crate) fn new(endpoints: &[Endpoint], subset_size: u32) -> Self {
        let size = if subset_size == 0 { DEFAULT_SUBSET_SIZE } else { (subset_size as usize).min(MAX_SUBSET_SIZE) };
        let n = endpoints.len();
        let sets = n.div_ceil(size);
        // The padded list repeats the endpoint list: slot k holds endpoint k mod n.
        let members: Box<[u32]> = (0..sets * size).map(|k| (k % n) as u32).collect();
        let names: Vec<String> = (1..=sets).map(|i| format!("set{i}")).collect();
        ChashSubset { ring: Ring::new(&names), size, members }
    }

    fn subset(&self, set: usize) -> &[u32] {
        &self.members[set * self.size..(set + 1) * self.size]
    }

    #[inline]
    pub(crate) fn pick(&self, endpoints: &[Endpoint], key: &[u8], ctx: &PickCtx) -> usize {
        let pos = self.ring.find(key);
        let set = self.subset(self.ring.node(pos));
        let mut rng = rand::thread_rng();
        let first = set[rng.gen_range(0..set.len())] as usize;
        if ctx.attempts() == 0 || !ctx.has_tried(endpoints[first].key) {
            return first;
        }
        if let Some(i) = random_untried(set, endpoints, ctx, &mut rng) {
            return i;
        }
        if !any_untried(endpoints, ctx) {
            return first;
        }
        let untried = |set: usize| self.subset(set).iter().any(|&m| !ctx.has_tried(endpoints[m as usize].key));
        match self.ring.walk(pos, untried) {
            Some((_, next)) => random_untried(self.subset(next), endpoints, ctx, &mut rng).unwrap_or(first),
            None => first,
        }
    }

    #[cfg(test)]
    pub(crate) fn subsets(&self) -> Vec<Vec<u32>> {
        self.members.chunks(self.size).map(<[u32]>::to_vec).collect()
    }

    #[cfg(test)]
    pub(crate) fn subset_of_key(&self, key: &[u8]) -> usize {
        self.ring.node(self.ring.find(key))
    }
}

/// A uniformly random slot of `set` whose endpoint was not tried, if any.
fn random_untried(set: &[u32], endpoints: &[Endpoint], ctx: &PickCtx, rng: &mut impl Rng) -> Option<usize> {
    let untried = |m: &&u32| !ctx.has_tried(endpoints[**m as usize].key);
    let count = set.iter().filter(untried).count();
    if count == 0 {
        return None;
    }
    set.iter().filter(untried).nth(rng.gen_range(0..count)).map(|&m| m as usize)
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use super::super::chash::Ring;
    use crate::{AlgorithmKind, Core, PickCtx, Request};

    fn endpoints(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.8.0.{}:80", i + 1)).collect()
    }

    fn doc(eps: &[String], size: Option<u32>) -> Vec<u8> {
        let eps: Vec<String> = eps
            .iter()
            .map(|e| {
                let (a, p) = e.rsplit_once(':').unwrap();
                format!(r#"{{"address":"{a}","port":"{p}"}}"#)
            })
            .collect();
        let size = size.map_or(String::new(), |s| format!(r#","upstream-hash-by-subset-size":{s}"#));
        format!(
            r#"[{{"name":"web","upstreamHashByConfig":{{"upstream-hash-by":"$arg_u","upstream-hash-by-subset":true{size}}},"endpoints":[{}]}}]"#,
            eps.join(",")
        )
        .into_bytes()
    }

    fn core(eps: &[String], size: Option<u32>) -> Core {
        let core = Core::new();
        core.apply_backends(&doc(eps, size)).unwrap();
        assert_eq!(core.algorithm(b"web"), Some(AlgorithmKind::ChashSubset));
        assert!(core.warnings().is_empty(), "{}", core.warnings());
        core
    }

    fn pick(core: &Core, key: &str, ctx: &mut PickCtx) -> usize {
        let req = Request { hash_key: key.as_bytes(), ..Request::EMPTY };
        core.pick_with(b"web", &req, ctx, |p| p.peer.index() as usize).unwrap()
    }

    fn built(n: usize, size: u32) -> super::ChashSubset {
        let core = Core::new();
        core.apply_backends(&doc(&endpoints(n), None)).unwrap();
        let snapshot = core.current.load_full();
        super::ChashSubset::new(&snapshot.backend(b"web").unwrap().endpoints, size)
    }

    #[test]
    fn subsets_are_built_as_ingress_nginx_builds_them() {
        assert_eq!(built(7, 3).subsets(), vec![vec![0, 1, 2], vec![3, 4, 5], vec![6, 0, 1]]);
        assert_eq!(built(6, 3).subsets(), vec![vec![0, 1, 2], vec![3, 4, 5]]);
        assert_eq!(built(2, 3).subsets(), vec![vec![0, 1, 0]]);
        assert_eq!(built(2, 5).subsets(), vec![vec![0, 1, 0, 1, 0]]);
        assert_eq!(built(5, 0).subsets(), vec![vec![0, 1, 2], vec![3, 4, 0]], "default size 3");
        assert_eq!(built(4, 1).subsets(), vec![vec![0], vec![1], vec![2], vec![3]]);
        // The ring is resty.chash's over the names set1..setN.
        let s = built(10, 3);
        let names: Vec<String> = (1..=4).map(|i| format!("set{i}")).collect();
        let ring = Ring::new(&names);
        for i in 0..2_000 {
            let key = format!("/k/{i}");
            assert_eq!(s.subset_of_key(key.as_bytes()), ring.node(ring.find(key.as_bytes())));
        }
    }

    #[test]
    fn a_key_stays_in_its_subset_and_spreads_over_it() {
        let eps = endpoints(10);
        let core = core(&eps, Some(3));
        let s = built(10, 3);
        for i in 0..50 {
            let key = format!("user{i}");
            let subset: HashSet<usize> =
                s.subsets()[s.subset_of_key(key.as_bytes())].iter().map(|&m| m as usize).collect();
            let mut counts: HashMap<usize, usize> = HashMap::new();
            for _ in 0..3_000 {
                *counts.entry(pick(&core, &key, &mut PickCtx::new())).or_default() += 1;
            }
            for ep in counts.keys() {
                assert!(subset.contains(ep), "{key}: endpoint {ep} outside its subset {subset:?}");
            }
            // Uniform over the subset's slots (the padded last subset repeats no one here
            // except set4 = [9, 0, 1]).
            assert_eq!(counts.len(), subset.len(), "{key}: {counts:?}");
            for c in counts.values() {
                assert!((700..1_300).contains(c), "{key}: {counts:?}");
            }
        }
    }

    #[test]
    fn retries_take_untried_members_then_the_next_subset() {
        let eps = endpoints(8);
        let core = core(&eps, Some(3));
        let s = built(8, 3);
        let ring = Ring::new(&["set1", "set2", "set3"]);
        for i in 0..200 {
            let key = format!("r{i}");
            let pos = ring.find(key.as_bytes());
            let own: HashSet<usize> = s.subsets()[ring.node(pos)].iter().map(|&m| m as usize).collect();
            let mut ctx = PickCtx::new();
            let mut seen = Vec::new();
            for attempt in 0..8 {
                let ep = pick(&core, &key, &mut ctx);
                assert!(!seen.contains(&ep), "{key}: {ep} re-picked after {seen:?}");
                if attempt < own.len() {
                    assert!(own.contains(&ep), "{key}: attempt {attempt} left the subset early");
                }
                seen.push(ep);
            }
            // The first subset after the own one along the ring with an untried member.
            let tried: HashSet<usize> = own.clone();
            let next = ring
                .walk(pos, |set| s.subsets()[set].iter().any(|&m| !tried.contains(&(m as usize))))
                .map(|(_, set)| set)
                .unwrap();
            let next_members: HashSet<usize> = s.subsets()[next].iter().map(|&m| m as usize).collect();
            assert!(next_members.contains(&seen[own.len()]), "{key}: {seen:?}");
            // Every endpoint tried: an answer all the same.
            assert!(pick(&core, &key, &mut ctx) < 8);
        }
    }
}
