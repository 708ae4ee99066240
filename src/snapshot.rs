//! Compiled, immutable configuration snapshots.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::balancer::{Algorithm, AlgorithmKind};
use crate::canary::{Plan, Policy};
use crate::config::{self, BackendSpec};
use crate::error::{BackendLabel, ConfigError};

/// Fixed hasher seeds: keys and content hashes are stable within and across processes.
fn hasher() -> ahash::RandomState {
    ahash::RandomState::with_seeds(
        0x243f_6a88_85a3_08d3,
        0x1319_8a2e_0370_7344,
        0xa409_3822_299f_31d0,
        0x082e_fa98_ec4e_6c89,
    )
}

pub(crate) fn hash_bytes(bytes: &[u8]) -> u64 {
    hasher().hash_one(bytes)
}

/// A quick fingerprint of a text to find it again (a backend's JSON in the next
/// document, a document reposted unchanged): its length and CRC-32, which `crc32fast`
/// computes with the CPU's carry-less multiply at many GB/s (a document of 3000
/// backends is 2 MB). Matches are confirmed by comparing the bytes.
pub(crate) fn fingerprint(bytes: &[u8]) -> u64 {
    ((bytes.len() as u64) << 32) | u64::from(crc32fast::hash(bytes))
}

/// An endpoint's identity ([`Endpoint::key`]): the same in every process running the
/// same build (fixed seeds), which the shared ewma statistics rely on.
pub(crate) fn endpoint_key(addr: &SocketAddr) -> u64 {
    hasher().hash_one(addr)
}

/// One endpoint of a backend, ready for picks.
#[derive(Debug)]
pub(crate) struct Endpoint {
    pub(crate) addr: SocketAddr,
    /// Identity used by the per-request tried set.
    pub(crate) key: u64,
    /// "ip:port", IPv6 bracketed: what nginx is given.
    pub(crate) text: Box<str>,
}

impl Endpoint {
    fn new(addr: SocketAddr) -> Self {
        Endpoint { addr, key: endpoint_key(&addr), text: addr.to_string().into_boxed_str() }
    }
}

/// One compiled backend. Immutable apart from the algorithm's per-process state.
#[derive(Debug)]
pub(crate) struct Backend {
    pub(crate) spec: BackendSpec,
    /// The backend's JSON text, to recognise it unchanged in the next document, and
    /// its [`fingerprint`].
    raw: Box<str>,
    raw_hash: u64,
    pub(crate) kind: AlgorithmKind,
    pub(crate) endpoints: Box<[Endpoint]>,
    pub(crate) algorithm: Algorithm,
    /// Its `trafficShapingPolicy`, compiled: used when it is another backend's
    /// alternative.
    pub(crate) policy: Policy,
    /// What the operator should know about this backend (kept with it, so a reused
    /// backend still reports them).
    pub(crate) warnings: Vec<String>,
}

/// A configuration in force: every backend, indexed by name.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    pub(crate) generation: u64,
    /// The document as POSTed, to recognise an identical document.
    pub(crate) doc: Option<Arc<[u8]>>,
    /// Where each backend's text is in `doc` (same order as `backends`).
    spans: Vec<config::Span>,
    pub(crate) backends: Vec<Arc<Backend>>,
    /// Canary plans of the backends that have alternatives, by backend index.
    plans: Vec<Option<Box<Plan>>>,
    /// Shared with the next snapshot when it has the same names at the same places.
    by_name: Arc<NameIndex>,
    /// Backends by the hash of their JSON text, to find unchanged ones in O(1).
    by_raw_hash: HashMap<u64, u32, ahash::RandomState>,
}

/// What [`Snapshot::compile_within`] found. Returned once per apply and unpacked at
/// once: not worth boxing the snapshot for.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub(crate) enum Compiled {
    /// The document in force, byte for byte: nothing to do.
    Same,
    /// Over the budget: compile it elsewhere.
    Deferred,
    Built(Snapshot, ApplyReport),
}

/// The bytes a new document shares with the one in force: `prefix` at the start,
/// `suffix` at the end (not overlapping the prefix in either document).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Overlap {
    prefix: usize,
    suffix: usize,
}

impl Overlap {
    fn of(old: &[u8], json: &[u8]) -> Overlap {
        let shorter = old.len().min(json.len());
        let prefix = common_prefix(old, json);
        // One document starts with the other (the same document, typically): there is
        // nothing left for a suffix, and comparing again from the end would cost a
        // second pass.
        let suffix = if prefix == shorter { 0 } else { common_suffix(old, json).min(shorter - prefix) };
        Overlap { prefix, suffix }
    }

    /// [`config::check_text`] of `json`, knowing that `old` (a document accepted
    /// before, so valid UTF-8) shares these bytes with it: only the part in between,
    /// widened to character boundaries of both documents, is checked for UTF-8.
    fn check_text<'a>(self, old: &[u8], json: &'a [u8]) -> Result<&'a str, ConfigError> {
        let continuation = |b: Option<&u8>| b.is_some_and(|&b| b & 0xC0 == 0x80);
        // json[..a] is old[..a], cut where neither document is inside a character.
        let mut a = self.prefix;
        while a > 0 && (continuation(json.get(a)) || continuation(old.get(a))) {
            a -= 1;
        }
        // json[b..] is the end of old from one of its character starts.
        let mut b = json.len() - self.suffix;
        while b < json.len() && continuation(json.get(b)) {
            b += 1;
        }
        if a == 0 && b == json.len() {
            return config::check_text(json);
        }
        config::check_size(json)?;
        if let Err(e) = std::str::from_utf8(&json[a..b]) {
            return Err(ConfigError::Utf8 { offset: a + e.valid_up_to() });
        }
        // SAFETY: json[..a] equals old[..a] and json[b..] equals old's last
        // json.len() - b bytes; old is valid UTF-8 and both cuts are at character
        // starts of old (a: checked in both documents; b: json[b] is old's byte there
        // and not a continuation byte), so both parts are valid UTF-8, and so is
        // json[a..b] (checked above): their concatenation is valid UTF-8.
        let text = unsafe { std::str::from_utf8_unchecked(json) };
        config::check_not_blank(text)?;
        Ok(text)
    }
}

/// What compiling a document did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Backends in the new configuration.
    pub backends: usize,
    /// Backends decoded and built anew.
    pub rebuilt: usize,
    /// Backends whose JSON did not change and were reused as they were.
    pub reused: usize,
    /// True when the document was identical to the one in force (nothing was decoded).
    pub unchanged: bool,
    /// Things the operator should know that did not reject the document: those of
    /// the whole configuration now in force (see also [`crate::Core::warnings`]).
    pub warnings: Vec<String>,
}

/// Backends by name. A `hashbrown` table of (hash, index, name) whose name comparison
/// is inlined: on the request path the lookup is the larger part of a round-robin
/// pick, and a call to `memcmp` for a short name cost about a fifth of it.
#[derive(Debug, Default)]
struct NameIndex {
    table: hashbrown::HashTable<(u64, u32, Box<[u8]>)>,
    hasher: foldhash::fast::RandomState,
}

impl NameIndex {
    fn with_capacity(n: usize) -> Self {
        NameIndex { table: hashbrown::HashTable::with_capacity(n), hasher: foldhash::fast::RandomState::default() }
    }

    #[inline]
    fn get(&self, name: &[u8]) -> Option<u32> {
        let hash = self.hasher.hash_one(name);
        self.table.find(hash, |(h, _, n)| *h == hash && crate::bytes::eq(n, name)).map(|&(_, i, _)| i)
    }

    /// Add `name` → `index`; false if the name is already there.
    fn insert(&mut self, name: &[u8], index: u32) -> bool {
        if self.get(name).is_some() {
            return false;
        }
        let hash = self.hasher.hash_one(name);
        // Rehashing uses the hash each entry carries.
        self.table.insert_unique(hash, (hash, index, name.into()), |(h, _, _)| *h);
        true
    }
}

impl Snapshot {
    #[inline]
    pub(crate) fn backend(&self, name: &[u8]) -> Option<&Backend> {
        self.by_name.get(name).map(|i| &*self.backends[i as usize])
    }

    /// Backend `name` and its canary plan, if it has alternatives.
    #[inline]
    pub(crate) fn backend_and_plan(&self, name: &[u8]) -> Option<(&Backend, Option<&Plan>)> {
        let i = self.by_name.get(name)? as usize;
        Some((&*self.backends[i], self.plans.get(i).and_then(|p| p.as_deref())))
    }

    /// Compile `json` into a new snapshot, reusing backends of `prev` whose text did
    /// not change. Nothing is published here.
    pub(crate) fn compile(json: &[u8], prev: &Snapshot) -> Result<(Snapshot, ApplyReport), ConfigError> {
        let overlap = Overlap::of(prev.doc.as_deref().unwrap_or_default(), json);
        Self::build(json, prev, overlap)
    }

    /// [`Snapshot::compile`], unless `json` is `prev`'s document ([`Compiled::Same`])
    /// or more than `budget` bytes of it may have to be decoded and built anew
    /// ([`Compiled::Deferred`]): both found with one pass over the bytes `json`
    /// shares with `prev`'s document. Building costs about 30 ns per byte of changed
    /// backends.
    ///
    /// What lies between the bytes `json` shares with `prev`'s document at the start
    /// and at the end bounds what changed. The bound is loose only when backends
    /// moved (reordered, one inserted near the start of a large document and another
    /// removed near its end): those documents are deferred too, rather than spend a
    /// structural scan of the whole document to find out.
    pub(crate) fn compile_within(json: &[u8], prev: &Snapshot, budget: usize) -> Result<Compiled, ConfigError> {
        let old = prev.doc.as_deref().unwrap_or_default();
        let overlap = Overlap::of(old, json);
        if prev.doc.is_some() && overlap.prefix == json.len() && old.len() == json.len() {
            return Ok(Compiled::Same);
        }
        if json.len() - overlap.prefix - overlap.suffix > budget {
            return Ok(Compiled::Deferred);
        }
        let (next, report) = Self::build(json, prev, overlap)?;
        Ok(Compiled::Built(next, report))
    }

    fn build(json: &[u8], prev: &Snapshot, overlap: Overlap) -> Result<(Snapshot, ApplyReport), ConfigError> {
        let old = prev.doc.as_deref().unwrap_or_default();
        let text = overlap.check_text(old, json)?;
        let (spans, known) = match prev.split_against(json, overlap) {
            Some(split) => split?,
            None => (config::split_document(json)?, Vec::new()),
        };
        let mut report = ApplyReport { backends: spans.len(), ..ApplyReport::default() };
        let mut backends = Vec::with_capacity(spans.len());
        let mut by_raw_hash: HashMap<u64, u32, ahash::RandomState> =
            HashMap::with_capacity_and_hasher(spans.len(), ahash::RandomState::new());
        // Whether every backend has the name `prev` has at its position: then
        // `prev`'s name index serves as it is (no duplicates, same positions).
        let mut names_as_before = spans.len() == prev.backends.len();
        for (position, &(start, end)) in spans.iter().enumerate() {
            let raw = &text[start..end];
            let same = match known.get(position).copied().flatten() {
                // The same bytes as the previous document's backend there.
                Some(i) => Some(&prev.backends[i as usize]),
                None => prev.find_same(raw),
            };
            let backend = match same {
                Some(same) => {
                    report.reused += 1;
                    Arc::clone(same)
                }
                None => {
                    report.rebuilt += 1;
                    let spec = config::decode_backend(raw, position)?;
                    Arc::new(Backend::build(spec, raw, position)?)
                }
            };
            names_as_before = names_as_before && {
                let before = &prev.backends[position];
                Arc::ptr_eq(before, &backend) || before.spec.name == backend.spec.name
            };
            by_raw_hash.insert(backend.raw_hash, backends.len() as u32);
            report.warnings.extend(backend.warnings.iter().cloned());
            backends.push(backend);
        }
        let by_name = if names_as_before {
            Arc::clone(&prev.by_name)
        } else {
            let mut by_name = NameIndex::with_capacity(backends.len());
            for (i, backend) in backends.iter().enumerate() {
                if !by_name.insert(backend.spec.name.as_bytes(), i as u32) {
                    return Err(ConfigError::DuplicateBackend(backend.spec.name.clone()));
                }
            }
            Arc::new(by_name)
        };
        let plans = canary_plans(&backends, &by_name)?;
        let snapshot = Snapshot {
            generation: prev.generation + 1,
            doc: Some(Arc::from(json)),
            spans,
            backends,
            plans,
            by_name,
            by_raw_hash,
        };
        Ok((snapshot, report))
    }

    /// The backend of the previous snapshot with exactly this JSON text, if any.
    fn find_same(&self, text: &str) -> Option<&Arc<Backend>> {
        let &i = self.by_raw_hash.get(&fingerprint(text.as_bytes()))?;
        let b = &self.backends[i as usize];
        (&*b.raw == text).then_some(b)
    }

    /// Split `json` using this snapshot's document: the bytes it shares with it at
    /// the start and at the end hold the same backends at the same places (shifted at
    /// the end), so only the part in between is scanned, and the backends in the
    /// shared parts are known unchanged without hashing or comparing them. Returns
    /// the spans and, for each, the index of the identical backend here if known;
    /// `None` when the shortcut does not apply (then split the whole document).
    ///
    /// Sound because the scan is deterministic and local: over the shared start it
    /// would pass through exactly the states the scan of this document did, and it
    /// is resumed from the state after the last backend there; if it reaches the
    /// first backend of the shared end exactly at an element start, the rest is the
    /// same bytes this document's scan accepted. Anything else falls back.
    #[allow(clippy::type_complexity)]
    fn split_against(
        &self,
        json: &[u8],
        overlap: Overlap,
    ) -> Option<Result<(Vec<config::Span>, Vec<Option<u32>>), ConfigError>> {
        let old = self.doc.as_deref()?;
        let old_spans = &self.spans;
        let m = old_spans.len();
        if m == 0 {
            return None;
        }
        let Overlap { prefix, suffix } = overlap;
        // Backends wholly inside the shared start, and from which one on wholly
        // inside the shared end.
        let k = old_spans.partition_point(|&(_, end)| end <= prefix);
        let old_tail = old.len() - suffix;
        let j = old_spans.partition_point(|&(start, _)| start < old_tail).max(k);
        if k == 0 && j == m {
            return None; // nothing shared worth the trouble
        }
        let shift = |pos: usize| pos + json.len() - old.len();
        let (from, state) = match k {
            0 => (json.iter().position(|&b| b == b'[')? + 1, config::Resume::ElementOrClose),
            _ => (old_spans[k - 1].1, config::Resume::Delimiter),
        };
        let stop = (j < m).then(|| shift(old_spans[j].0));
        let mut spans = Vec::with_capacity(m + 4);
        spans.extend_from_slice(&old_spans[..k]);
        let mut known: Vec<Option<u32>> = (0..k as u32).map(Some).collect();
        let end = match config::scan_elements(json, from, state, stop, &mut spans) {
            Ok(end) => end,
            Err(e) => return Some(Err(e)),
        };
        known.resize(spans.len(), None);
        match end {
            config::ScanEnd::Stopped => {
                spans.extend(old_spans[j..].iter().map(|&(a, b)| (shift(a), shift(b))));
                known.extend((j as u32..m as u32).map(Some));
            }
            config::ScanEnd::Closed(close) if j == m => {
                if let Err(e) = config::check_trailing(json, close) {
                    return Some(Err(e));
                }
            }
            _ => return None,
        }
        Some(Ok((spans, known)))
    }

    /// Warnings of every backend in force, in document order.
    pub(crate) fn warnings(&self) -> impl Iterator<Item = &str> {
        self.backends.iter().flat_map(|b| b.warnings.iter().map(String::as_str))
    }
}

impl Backend {
    /// What a front end must provide for picks on this backend.
    pub(crate) fn info(&self) -> crate::request::BackendInfo {
        use AlgorithmKind::*;
        crate::request::BackendInfo {
            algorithm: self.kind,
            needs_hash_key: matches!(self.kind, Chash | ChashSubset),
            needs_cookie: matches!(self.kind, StickyBalanced | StickyPersistent),
            needs_timing: self.kind == Ewma,
            has_alternatives: !self.spec.alternative_backends.is_empty(),
        }
    }

    fn build(spec: BackendSpec, raw: &str, position: usize) -> Result<Backend, ConfigError> {
        if spec.name.is_empty() {
            return Err(ConfigError::field(&BackendLabel::Index(position), "name", "missing or empty"));
        }
        let label = BackendLabel::Name(&spec.name);
        let mut warnings = Vec::new();
        let external_name = spec.service.as_ref().is_some_and(|s| s.spec.service_type == "ExternalName");
        // ingress-nginx keys endpoints by "address:port": a repeated endpoint counts once.
        let mut endpoints: Vec<Endpoint> = Vec::with_capacity(spec.endpoints.len());
        let mut seen = std::collections::HashSet::with_capacity(spec.endpoints.len());
        for (i, ep) in spec.endpoints.iter().enumerate() {
            let addr = match config::endpoint_addr(&label, i, ep) {
                Ok(addr) => addr,
                // An ExternalName service's endpoint is a DNS name, which ingress-nginx
                // resolves in Lua. Resolution is not in the core yet: skip it, say so,
                // and keep the rest of the document (rejecting it would block every
                // other update while the service exists).
                Err(_) if external_name && config::is_dns_name(&ep.address) => {
                    warnings.push(format!(
                        "backend \"{}\": ExternalName endpoint {:?} skipped: DNS names are not resolved yet",
                        spec.name, ep.address
                    ));
                    continue;
                }
                Err(e) => return Err(e),
            };
            if seen.insert(addr) {
                endpoints.push(Endpoint::new(addr));
            }
        }
        let (kind, warning) = AlgorithmKind::select(&spec);
        warnings.extend(warning);
        let algorithm = Algorithm::build(kind, &endpoints, &spec, &mut warnings)?;
        let policy = Policy::build(&spec.name, &spec.traffic_shaping_policy, &mut warnings);
        Ok(Backend {
            raw: raw.into(),
            raw_hash: fingerprint(raw.as_bytes()),
            kind,
            endpoints: endpoints.into_boxed_slice(),
            algorithm,
            policy,
            warnings,
            spec,
        })
    }
}

/// Length of the longest common start of `a` and `b` (compared in blocks, then byte
/// by byte in the block that differs).
fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    const BLOCK: usize = 4096;
    let n = a.len().min(b.len());
    let mut i = 0;
    while i + BLOCK <= n && a[i..i + BLOCK] == b[i..i + BLOCK] {
        i += BLOCK;
    }
    i + a[i..n].iter().zip(&b[i..n]).take_while(|(x, y)| x == y).count()
}

/// Length of the longest common end of `a` and `b`.
fn common_suffix(a: &[u8], b: &[u8]) -> usize {
    const BLOCK: usize = 4096;
    let n = a.len().min(b.len());
    let (a, b) = (&a[a.len() - n..], &b[b.len() - n..]);
    let mut i = n;
    while i >= BLOCK && a[i - BLOCK..i] == b[i - BLOCK..i] {
        i -= BLOCK;
    }
    (n - i) + a[..i].iter().rev().zip(b[..i].iter().rev()).take_while(|(x, y)| x == y).count()
}

/// The canary plan of every backend with alternatives. Every alternative backend
/// must exist, must not be the backend itself, and the alternatives' weights must
/// not add up to more than the whole.
fn canary_plans(backends: &[Arc<Backend>], by_name: &NameIndex) -> Result<Vec<Option<Box<Plan>>>, ConfigError> {
    let mut plans = Vec::new();
    for (position, b) in backends.iter().enumerate() {
        if b.spec.alternative_backends.is_empty() {
            continue;
        }
        let label = BackendLabel::Name(&b.spec.name);
        let mut alternatives = Vec::with_capacity(b.spec.alternative_backends.len());
        for (i, alt) in b.spec.alternative_backends.iter().enumerate() {
            let field = format!("alternativeBackends[{i}]");
            if *alt == b.spec.name {
                return Err(ConfigError::field(&label, field, "a backend cannot be its own alternative"));
            }
            let Some(index) = by_name.get(alt.as_bytes()) else {
                return Err(ConfigError::field(&label, field, format!("no backend named {alt:?}")));
            };
            // Listed twice: it counts once.
            if alternatives.iter().any(|&(j, _)| j == index) {
                continue;
            }
            alternatives.push((index, &*backends[index as usize]));
        }
        if plans.len() <= position {
            plans.resize_with(position + 1, || None);
        }
        plans[position] = Some(Box::new(Plan::build(b, alternatives)?));
    }
    Ok(plans)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn backend_json(i: usize, port: u32, pad: &str) -> String {
        format!(
            r#"{pad}{{"name":"ns-svc-{i}","endpoints":[{{"address":"10.0.{}.{}","port":"{port}"}}],"x":"a,]}}\"b"}}"#,
            i / 200,
            i % 200 + 1
        )
    }

    /// (names, endpoint texts) of a compile result, or the error text.
    fn outcome(r: Result<(Snapshot, ApplyReport), ConfigError>) -> Result<Vec<(String, Vec<String>)>, String> {
        r.map(|(s, _)| {
            s.backends
                .iter()
                .map(|b| (b.spec.name.clone(), b.endpoints.iter().map(|e| e.text.to_string()).collect()))
                .collect()
        })
        .map_err(|e| e.to_string())
    }

    #[test]
    fn splitting_against_the_previous_document_finds_what_a_full_split_finds() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for round in 0..400 {
            let n = rng.gen_range(1..40);
            let parts: Vec<String> = (0..n).map(|i| backend_json(i, 80, "")).collect();
            let base = format!("[{}]", parts.join(","));
            let (prev, _) = Snapshot::compile(base.as_bytes(), &Snapshot::default()).unwrap();
            let mut parts2 = parts.clone();
            let at = rng.gen_range(0..n);
            match rng.gen_range(0..10) {
                0 => parts2[at] = backend_json(at, 81, ""),
                1 => parts2.insert(at, backend_json(1000 + at, 80, "")),
                2 => {
                    parts2.remove(at);
                }
                3 => parts2.swap(at, rng.gen_range(0..n)),
                4 => parts2[at] = backend_json(at, 80, " \n "),
                5 => parts2[at] = format!("{}}}", parts2[at]),
                6 => parts2[at] = parts2[at].replacen('"', "", 1),
                7 => parts2[at] = String::new(),
                8 => parts2[at] = format!("{}, ", parts2[at]),
                _ => parts2[at] = parts2[at].replace("10.0.", "10.0.0."),
            }
            let mut doc = format!("[{}]", parts2.join(","));
            match rng.gen_range(0..8) {
                0 => doc.push_str(" x"),
                1 => {
                    doc.pop();
                }
                2 => doc.insert(rng.gen_range(0..doc.len()), '"'),
                3 => doc = format!(" {doc}\n"),
                _ => {}
            }
            let fast = Snapshot::compile(doc.as_bytes(), &prev);
            let full = Snapshot::compile(doc.as_bytes(), &Snapshot::default());
            let (fast, full) = (outcome(fast), outcome(full));
            assert_eq!(fast.is_ok(), full.is_ok(), "round {round}: {doc}\nfast {fast:?}\nfull {full:?}");
            if let (Ok(a), Ok(b)) = (&fast, &full) {
                assert_eq!(a, b, "round {round}: {doc}");
            }
        }
    }

    #[test]
    fn utf8_is_checked_around_the_change_as_a_full_check_would() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let texts = ["é", "日本", "🦀", "a", r"\u00e9"];
        for round in 0..3000 {
            let n = rng.gen_range(1..12);
            let parts: Vec<String> = (0..n)
                .map(|i| {
                    let t = texts[rng.gen_range(0..texts.len())].repeat(rng.gen_range(1..4));
                    format!(r#"{{"name":"svc-{i}-{t}","endpoints":[{{"address":"10.0.0.{}","port":"80"}}]}}"#, i + 1)
                })
                .collect();
            let base = format!("[{}]", parts.join(","));
            let (prev, _) = Snapshot::compile(base.as_bytes(), &Snapshot::default()).unwrap();
            let mut doc = base.clone().into_bytes();
            // Byte edits anywhere, often inside a multi-byte character.
            let at = rng.gen_range(0..doc.len());
            match rng.gen_range(0..5) {
                0 => doc[at] = rng.gen(),
                1 => doc.insert(at, rng.gen_range(0x80..=0xff)),
                2 => {
                    doc.remove(at);
                }
                3 => {
                    let t = texts[rng.gen_range(0..3)].as_bytes();
                    doc.splice(at..at, t[..rng.gen_range(1..=t.len())].iter().copied());
                }
                _ => {
                    // a whole backend renamed to its neighbour's name (a duplicate)
                    let text = String::from_utf8(doc.clone()).unwrap().replacen("svc-0-", "svc-1-", 1);
                    doc = text.into_bytes();
                }
            }
            let fast = outcome(Snapshot::compile(&doc, &prev));
            let full = outcome(Snapshot::compile(&doc, &Snapshot::default()));
            let shown = String::from_utf8_lossy(&doc);
            assert_eq!(fast.is_ok(), full.is_ok(), "round {round}: {shown}\nfast {fast:?}\nfull {full:?}");
            match (&fast, &full) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "round {round}: {shown}"),
                (Err(a), Err(b)) if a.contains("UTF-8") || b.contains("UTF-8") => {
                    assert_eq!(a, b, "round {round}: {shown}")
                }
                _ => {}
            }
        }
    }

    #[test]
    fn a_document_with_the_same_names_shares_the_name_index() {
        let parts: Vec<String> = (0..50).map(|i| backend_json(i, 80, "")).collect();
        let (prev, _) = Snapshot::compile(format!("[{}]", parts.join(",")).as_bytes(), &Snapshot::default()).unwrap();
        let mut changed = parts.clone();
        changed[10] = backend_json(10, 81, "");
        let (next, _) = Snapshot::compile(format!("[{}]", changed.join(",")).as_bytes(), &prev).unwrap();
        assert!(Arc::ptr_eq(&prev.by_name, &next.by_name));
        assert_eq!(next.backend(b"ns-svc-10").unwrap().endpoints[0].addr.port(), 81);
        changed.swap(3, 4);
        let (moved, _) = Snapshot::compile(format!("[{}]", changed.join(",")).as_bytes(), &next).unwrap();
        assert!(!Arc::ptr_eq(&next.by_name, &moved.by_name));
        for i in 0..50 {
            let name = format!("ns-svc-{i}");
            assert_eq!(moved.backend(name.as_bytes()).unwrap().spec.name, name);
        }
    }

    #[test]
    fn unchanged_backends_around_a_change_are_reused_without_being_decoded() {
        let parts: Vec<String> = (0..50).map(|i| backend_json(i, 80, "")).collect();
        let base = format!("[{}]", parts.join(","));
        let (prev, _) = Snapshot::compile(base.as_bytes(), &Snapshot::default()).unwrap();
        let mut parts2 = parts.clone();
        parts2[25] = backend_json(25, 81, "");
        parts2.insert(40, backend_json(99, 80, ""));
        let doc = format!("[{}]", parts2.join(","));
        let (next, report) = Snapshot::compile(doc.as_bytes(), &prev).unwrap();
        assert_eq!((report.rebuilt, report.reused), (2, 49));
        for i in (0..25).chain(26..50) {
            let name = format!("ns-svc-{i}");
            let (a, b) = (prev.backend(name.as_bytes()).unwrap(), next.backend(name.as_bytes()).unwrap());
            assert!(std::ptr::eq(a, b), "{name} reused as it was");
        }
    }

    #[test]
    fn name_index_finds_each_name_and_refuses_duplicates() {
        let mut index = NameIndex::with_capacity(2);
        let names: Vec<String> = (0..500).map(|i| format!("namespace-{i}-service-{}", i * 7)).collect();
        for (i, n) in names.iter().enumerate() {
            assert!(index.insert(n.as_bytes(), i as u32));
        }
        assert!(!index.insert(names[42].as_bytes(), 9999));
        for (i, n) in names.iter().enumerate() {
            assert_eq!(index.get(n.as_bytes()), Some(i as u32));
        }
        assert_eq!(index.get(b"namespace-1-service-8"), None);
        assert_eq!(index.get(b""), None);
    }
}
