//! Consistent hashing, decision-compatible with `resty.chash` (lua-resty-balancer
//! v0.05), which ingress-nginx uses for `upstream-hash-by` and sticky_balanced.
//!
//! The ring: every node (endpoint "ip:port", or a subset name) gets 160 points. The
//! first point of node `id` is the CRC32 of the 4 zero bytes continued from
//! `crc32(id)`; each next point is the CRC32 of the previous point's 4 little-endian
//! bytes, continued from `crc32(id)` again. (This is resty's `chash_point_init` fed
//! with `crc32(id) ^ 0xffffffff`, a plain CRC32 continuation.) A key maps to the first
//! point whose hash is `>= crc32(key)`, wrapping to the first point of the ring.
//!
//! Points of different nodes with the same hash (about 3 pairs in a ring of 1000
//! nodes): resty's result depends on the order in which LuaJIT iterates its node
//! table, which varies with LuaJIT's string hash seed, so it cannot be reproduced; here
//! the node whose id sorts first (bytewise) wins, the same in every process. Such a tie
//! decides about 1/160 000 of the keys of a 1000-endpoint ring.
//!
//! Layout: points sorted by hash, 8 bytes each (hash, node), plus a bucket index of
//! one `u32` per two points (the first point of each slice of the hash space), so a
//! lookup reads one bucket entry and scans about two points: ~1.3 KiB per node of
//! weight 1 (160 points × 8 bytes + 80 bucket entries × 4 bytes).

use crate::pick::PickCtx;
use crate::snapshot::Endpoint;

/// Points per unit of weight (resty's `CONSISTENT_POINTS`).
pub(crate) const POINTS_PER_NODE: usize = 160;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Point {
    hash: u32,
    node: u32,
}

/// A consistent-hash ring over nodes `0..n` (all of weight 1, as ingress-nginx builds
/// its node tables).
#[derive(Debug, Default)]
pub(crate) struct Ring {
    points: Box<[Point]>,
    /// `buckets[b]`: index of the first point whose hash is `>= b << shift`;
    /// `buckets[len - 1]` is `points.len()`.
    buckets: Box<[u32]>,
    shift: u32,
}

impl Ring {
    /// The ring of nodes identified by `ids` (node `i` is `ids[i]`).
    pub(crate) fn new<I: AsRef<[u8]>>(ids: &[I]) -> Ring {
        let n = ids.len();
        if n == 0 {
            return Ring::default();
        }
        // Tie-break rank: position of each id in bytewise order.
        let mut order: Vec<u32> = (0..n as u32).collect();
        order.sort_unstable_by(|&a, &b| ids[a as usize].as_ref().cmp(ids[b as usize].as_ref()));
        let mut rank = vec![0u32; n];
        for (r, &node) in order.iter().enumerate() {
            rank[node as usize] = r as u32;
        }
        let mut keys: Vec<u64> = Vec::with_capacity(n * POINTS_PER_NODE);
        for (node, id) in ids.iter().enumerate() {
            let base = crc32fast::hash(id.as_ref());
            let mut prev = 0u32;
            for _ in 0..POINTS_PER_NODE {
                let mut h = crc32fast::Hasher::new_with_initial(base);
                h.update(&prev.to_le_bytes());
                let hash = h.finalize();
                keys.push(u64::from(hash) << 32 | u64::from(rank[node]));
                prev = hash;
            }
        }
        keys.sort_unstable();
        let points: Box<[Point]> =
            keys.iter().map(|&k| Point { hash: (k >> 32) as u32, node: order[k as u32 as usize] }).collect();
        drop(keys);

        // About two points per bucket.
        let bits = (points.len() / 2).max(1).next_power_of_two().trailing_zeros().min(31);
        let shift = 32 - bits;
        let nb = 1usize << bits;
        let mut buckets = Vec::with_capacity(nb + 1);
        let mut i = 0usize;
        for b in 0..nb as u64 {
            let start = b << shift;
            while i < points.len() && u64::from(points[i].hash) < start {
                i += 1;
            }
            buckets.push(i as u32);
        }
        buckets.push(points.len() as u32);
        Ring { points, buckets: buckets.into_boxed_slice(), shift }
    }

    /// Number of points.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.points.len()
    }

    /// Position of the point a key maps to: the first point whose hash is `>= crc32(key)`,
    /// or the first point. The ring must not be empty.
    #[inline]
    pub(crate) fn find(&self, key: &[u8]) -> usize {
        self.position(crc32fast::hash(key))
    }

    /// Position of the first point whose hash is `>= hash`, wrapping to 0.
    #[inline]
    pub(crate) fn position(&self, hash: u32) -> usize {
        let b = (u64::from(hash) >> self.shift) as usize;
        let mut i = self.buckets[b] as usize;
        let end = self.buckets[b + 1] as usize;
        while i < end && self.points[i].hash < hash {
            i += 1;
        }
        // Past the bucket, the first point of the next non-empty one is >= hash.
        if i == self.points.len() {
            0
        } else {
            i
        }
    }

    /// The node of the point at `pos`.
    #[inline]
    pub(crate) fn node(&self, pos: usize) -> usize {
        self.points[pos].node as usize
    }

    /// Walking the ring from `pos` (included), the first position whose node `accept`s,
    /// with that node; `None` after a full turn.
    pub(crate) fn walk(&self, pos: usize, mut accept: impl FnMut(usize) -> bool) -> Option<(usize, usize)> {
        let n = self.points.len();
        let mut p = pos;
        for _ in 0..n {
            let node = self.points[p].node as usize;
            if accept(node) {
                return Some((p, node));
            }
            p += 1;
            if p == n {
                p = 0;
            }
        }
        None
    }

    /// The first endpoint along the ring from `pos` that this request has not tried,
    /// for a ring whose nodes are `endpoints`; `None` if every endpoint was tried.
    pub(crate) fn next_untried(&self, pos: usize, endpoints: &[Endpoint], ctx: &PickCtx) -> Option<usize> {
        if !any_untried(endpoints, ctx) {
            return None;
        }
        self.walk(pos, |node| !ctx.has_tried(endpoints[node].key)).map(|(_, node)| node)
    }
}

/// True if some endpoint was not tried by this request (cheap: a request remembers at
/// most `MAX_TRIED` peers).
#[inline]
pub(crate) fn any_untried(endpoints: &[Endpoint], ctx: &PickCtx) -> bool {
    ctx.attempts() < endpoints.len() || endpoints.iter().any(|e| !ctx.has_tried(e.key))
}

/// `chash`: the endpoint of the request's hash key on the ring of the backend's
/// endpoints; on a retry, the next endpoint along the ring not tried yet.
#[derive(Debug)]
pub(crate) struct Chash {
    ring: Ring,
}

impl Chash {
    pub(crate) fn new(endpoints: &[Endpoint]) -> Self {
        let ids: Vec<&str> = endpoints.iter().map(|e| &*e.text).collect();
        Chash { ring: Ring::new(&ids) }
    }

    #[inline]
    pub(crate) fn pick(&self, endpoints: &[Endpoint], key: &[u8], ctx: &PickCtx) -> usize {
        let pos = self.ring.find(key);
        let node = self.ring.node(pos);
        if ctx.attempts() == 0 || !ctx.has_tried(endpoints[node].key) {
            return node;
        }
        self.ring.next_untried(pos, endpoints, ctx).unwrap_or(node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference_points(id: &str) -> Vec<u32> {
        // resty's chash_point_init, spelled out with a bitwise CRC32 update.
        fn update(mut c: u32, bytes: &[u8]) -> u32 {
            for &b in bytes {
                c ^= u32::from(b);
                for _ in 0..8 {
                    c = if c & 1 != 0 { (c >> 1) ^ 0xedb8_8320 } else { c >> 1 };
                }
            }
            c
        }
        let base = crc32fast::hash(id.as_bytes()) ^ 0xffff_ffff;
        let mut prev = [0u8; 4];
        (0..POINTS_PER_NODE)
            .map(|_| {
                let h = update(base, &prev) ^ 0xffff_ffff;
                prev = h.to_le_bytes();
                h
            })
            .collect()
    }

    #[test]
    fn points_are_resty_chash_points() {
        for id in ["10.0.0.1:8080", "[fd00::1]:8080", "set1", ""] {
            let ring = Ring::new(&[id]);
            let mut want = reference_points(id);
            want.sort_unstable();
            let got: Vec<u32> = ring.points.iter().map(|p| p.hash).collect();
            assert_eq!(got, want, "{id}");
        }
    }

    #[test]
    fn position_is_first_point_at_or_after_hash() {
        let ids: Vec<String> = (0..37).map(|i| format!("10.9.0.{i}:80")).collect();
        let ring = Ring::new(&ids);
        let hashes: Vec<u32> = ring.points.iter().map(|p| p.hash).collect();
        assert!(hashes.windows(2).all(|w| w[0] <= w[1]));
        let mut probes: Vec<u32> = vec![0, 1, u32::MAX, u32::MAX - 1];
        for &h in &hashes {
            probes.extend([h, h.wrapping_sub(1), h.wrapping_add(1)]);
        }
        let mut x = 0x1234_5678u32;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            probes.push(x);
        }
        for h in probes {
            let want = hashes.partition_point(|&p| p < h);
            let want = if want == hashes.len() { 0 } else { want };
            assert_eq!(ring.position(h), want, "hash {h:#x}");
        }
    }

    #[test]
    fn ties_go_to_the_smallest_id() {
        // Two endpoints of the recorded 1000-endpoint set share the point 3167302013:
        // whatever their order, the bytewise smaller id owns it.
        let (a, b) = ("172.16.1.186:9000", "172.16.2.224:9000");
        for ids in [[a, b], [b, a]] {
            let ring = Ring::new(&ids);
            let pos = ring.position(3_167_302_013);
            assert_eq!(ring.points[pos].hash, 3_167_302_013);
            assert_eq!(ring.points[pos + 1].hash, 3_167_302_013);
            assert_eq!(ids[ring.node(pos)], a);
            assert_eq!(ids[ring.node(ring.position(3_167_302_012))], a);
            // The other owner is the next point along the ring (a retry's next peer).
            assert_eq!(ids[ring.node(pos + 1)], b);
        }
    }

    #[test]
    fn tiny_rings() {
        let one = Ring::new(&["x"]);
        assert_eq!(one.len(), POINTS_PER_NODE);
        for h in [0, 1, u32::MAX / 2, u32::MAX] {
            assert_eq!(one.node(one.position(h)), 0);
        }
        let empty = Ring::new::<&str>(&[]);
        assert_eq!(empty.len(), 0);
    }
}

#[cfg(test)]
mod behaviour {
    use std::collections::{HashMap, HashSet};

    use crate::{Core, PickCtx, Request};

    pub(crate) fn doc(name: &str, endpoints: &[String], extra: &str) -> Vec<u8> {
        let eps: Vec<String> = endpoints
            .iter()
            .map(|e| {
                let (a, p) = e.rsplit_once(':').unwrap();
                format!(r#"{{"address":"{}","port":"{p}"}}"#, a.trim_start_matches('[').trim_end_matches(']'))
            })
            .collect();
        format!(r#"[{{"name":"{name}",{extra}"endpoints":[{}]}}]"#, eps.join(",")).into_bytes()
    }

    const CHASH: &str = r#""upstreamHashByConfig":{"upstream-hash-by":"$request_uri"},"#;

    fn endpoints(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.7.{}.{}:80", i / 250, i % 250 + 1)).collect()
    }

    fn core(eps: &[String]) -> Core {
        let core = Core::new();
        core.apply_backends(&doc("web", eps, CHASH)).unwrap();
        assert_eq!(core.algorithm(b"web"), Some(crate::AlgorithmKind::Chash));
        assert!(core.warnings().is_empty(), "{}", core.warnings());
        core
    }

    fn pick(core: &Core, key: &str, ctx: &mut PickCtx) -> String {
        let req = Request { hash_key: key.as_bytes(), ..Request::EMPTY };
        core.pick_with(b"web", &req, ctx, |p| p.peer.text().to_owned()).unwrap()
    }

    #[test]
    fn same_key_same_endpoint_and_even_spread() {
        let eps = endpoints(10);
        let core = core(&eps);
        let mut counts: HashMap<String, usize> = HashMap::new();
        for i in 0..100_000 {
            let key = format!("/item/{i}");
            let first = pick(&core, &key, &mut PickCtx::new());
            assert_eq!(pick(&core, &key, &mut PickCtx::new()), first);
            *counts.entry(first).or_default() += 1;
        }
        assert_eq!(counts.len(), 10);
        // 160 points per endpoint: shares stay within a few percent of 10 %.
        for (ep, c) in &counts {
            assert!((6_000..14_000).contains(c), "{ep}: {c} of 100000");
        }
    }

    #[test]
    fn retries_walk_the_ring_over_untried_endpoints() {
        let eps = endpoints(7);
        let core = core(&eps);
        let ring = super::Ring::new(&eps);
        for i in 0..300 {
            let key = format!("k{i}");
            let mut ctx = PickCtx::new();
            let mut seen = Vec::new();
            for _ in 0..7 {
                let ep = pick(&core, &key, &mut ctx);
                assert!(!seen.contains(&ep), "{key}: {ep} picked twice in {seen:?}");
                seen.push(ep);
            }
            // The order is the order of first appearance along the ring from the key.
            let mut want = Vec::new();
            let start = ring.find(key.as_bytes());
            for step in 0..ring.len() {
                let ep = &eps[ring.node((start + step) % ring.len())];
                if !want.contains(ep) {
                    want.push(ep.clone());
                }
            }
            assert_eq!(seen, want, "{key}");
            // Everything tried: still an answer (the key's endpoint).
            assert_eq!(pick(&core, &key, &mut ctx), seen[0]);
            // The sequence is the same for every request of the key.
            let mut again = PickCtx::new();
            let seq: Vec<String> = (0..7).map(|_| pick(&core, &key, &mut again)).collect();
            assert_eq!(seq, seen);
        }
    }

    #[test]
    fn removing_an_endpoint_moves_only_its_keys() {
        let eps = endpoints(50);
        let before = core(&eps);
        let removed = eps[17].clone();
        let rest: Vec<String> = eps.iter().filter(|e| **e != removed).cloned().collect();
        let after = core(&rest);
        let (mut moved, mut of_removed) = (0, 0);
        for i in 0..50_000 {
            let key = format!("/u/{i}");
            let a = pick(&before, &key, &mut PickCtx::new());
            let b = pick(&after, &key, &mut PickCtx::new());
            if a == removed {
                of_removed += 1;
                assert_ne!(b, removed);
            } else {
                assert_eq!(a, b, "{key} moved although its endpoint stayed");
            }
            moved += usize::from(a != b);
        }
        assert_eq!(moved, of_removed);
        assert!(of_removed > 200, "{of_removed}");
        // Adding it back: only keys that now go to it move, and they go back exactly.
        let again = core(&eps);
        for i in 0..5_000 {
            let key = format!("/u/{i}");
            assert_eq!(pick(&again, &key, &mut PickCtx::new()), pick(&before, &key, &mut PickCtx::new()));
        }
    }

    #[test]
    fn endpoint_order_does_not_matter() {
        let eps = endpoints(30);
        let mut reversed = eps.clone();
        reversed.reverse();
        let (a, b) = (core(&eps), core(&reversed));
        for i in 0..5_000 {
            let key = format!("{i}");
            assert_eq!(pick(&a, &key, &mut PickCtx::new()), pick(&b, &key, &mut PickCtx::new()));
        }
    }

    #[test]
    fn single_endpoint_and_empty_key() {
        let eps = endpoints(1);
        let core = core(&eps);
        let mut ctx = PickCtx::new();
        assert_eq!(pick(&core, "", &mut ctx), eps[0]);
        assert_eq!(pick(&core, "", &mut ctx), eps[0], "all tried: the same one again");
        let set: HashSet<String> = (0..100).map(|i| pick(&core, &i.to_string(), &mut PickCtx::new())).collect();
        assert_eq!(set.len(), 1);
    }
}
