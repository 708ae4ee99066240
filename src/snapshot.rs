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
    /// The backend's JSON text, to recognise it unchanged in the next document.
    raw: Box<str>,
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
    /// The document as POSTed, and its hash, to recognise an identical document.
    pub(crate) doc: Option<Arc<[u8]>>,
    pub(crate) doc_hash: u64,
    pub(crate) backends: Vec<Arc<Backend>>,
    /// Canary plans of the backends that have alternatives, by backend index.
    plans: Vec<Option<Box<Plan>>>,
    by_name: NameIndex,
    /// Backends by the hash of their JSON text, to find unchanged ones in O(1).
    by_raw_hash: HashMap<u64, u32, ahash::RandomState>,
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
        let raws = config::split_document(json)?;
        let mut report = ApplyReport { backends: raws.len(), ..ApplyReport::default() };
        let mut backends = Vec::with_capacity(raws.len());
        let mut by_name = NameIndex::with_capacity(raws.len());
        let mut by_raw_hash: HashMap<u64, u32, ahash::RandomState> =
            HashMap::with_capacity_and_hasher(raws.len(), ahash::RandomState::new());
        for (position, raw) in raws.iter().enumerate() {
            let text = *raw;
            let raw_hash = fingerprint(text.as_bytes());
            let backend = match prev.find_same(text, raw_hash) {
                Some(same) => {
                    report.reused += 1;
                    Arc::clone(same)
                }
                None => {
                    report.rebuilt += 1;
                    let spec = config::decode_backend(raw, position)?;
                    Arc::new(Backend::build(spec, text, position)?)
                }
            };
            if !by_name.insert(backend.spec.name.as_bytes(), backends.len() as u32) {
                return Err(ConfigError::DuplicateBackend(backend.spec.name.clone()));
            }
            by_raw_hash.insert(raw_hash, backends.len() as u32);
            report.warnings.extend(backend.warnings.iter().cloned());
            backends.push(backend);
        }
        let plans = canary_plans(&backends, &by_name)?;
        let snapshot = Snapshot {
            generation: prev.generation + 1,
            doc: Some(Arc::from(json)),
            doc_hash: fingerprint(json),
            backends,
            plans,
            by_name,
            by_raw_hash,
        };
        Ok((snapshot, report))
    }

    /// The backend of the previous snapshot with exactly this JSON text, if any.
    fn find_same(&self, text: &str, raw_hash: u64) -> Option<&Arc<Backend>> {
        let &i = self.by_raw_hash.get(&raw_hash)?;
        let b = &self.backends[i as usize];
        (&*b.raw == text).then_some(b)
    }

    /// Warnings of every backend in force, in document order.
    pub(crate) fn warnings(&self) -> impl Iterator<Item = &str> {
        self.backends.iter().flat_map(|b| b.warnings.iter().map(String::as_str))
    }

    /// True when `json` is byte-for-byte the document in force.
    pub(crate) fn is_same_document(&self, json: &[u8]) -> bool {
        match &self.doc {
            Some(doc) => doc.len() == json.len() && self.doc_hash == fingerprint(json) && **doc == *json,
            None => false,
        }
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
            kind,
            endpoints: endpoints.into_boxed_slice(),
            algorithm,
            policy,
            warnings,
            spec,
        })
    }
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
