//! SNI certificate store: the controller's `POST /configuration/servers` document,
//! parsed once, looked up per TLS handshake without allocating.
//!
//! The document is `{"certificates": {"<uid>": "<PEM chain + key>"}, "servers":
//! {"<hostname>": "<uid>" | "-1"}}` and is the whole truth: a hostname mapped to
//! `"-1"` or absent is not served; `_` carries the default certificate. Each apply
//! builds an immutable [`CertStore`] and publishes it with one atomic swap (its own
//! `ArcSwap` in [`Core`], beside the backends snapshot). A document identical to the
//! one in force is recognised by a hash and a byte comparison without being decoded;
//! a certificate whose uid and PEM did not change is reused as parsed, so a document
//! of 10 000 certificates that changes one parses one. A certificate no hostname
//! refers to is dropped without being parsed.
//!
//! Parsing is OpenSSL's and not cheap (OpenSSL 3.0's key decoder alone takes about
//! 0.4 ms), so there are two ways in: [`Core::apply_servers`] parses and checks every
//! new certificate (what the process that receives the POST does: a bad one rejects
//! the document), [`Core::apply_accepted_servers`] takes a document such an apply
//! already accepted (what every other worker does with the stored copy) and parses
//! each certificate the first time its OpenSSL objects are asked for
//! ([`CertRef::objects`]), so a worker never stalls on thousands of certificates at
//! once. Ids, uids and PEM texts never need parsing.
//!
//! Lookup (ingress-nginx's `certificate.lua`): lower-case the name and strip one
//! trailing dot; the exact hostname; else the wildcard formed by replacing the first
//! label with `*` (`a.b.example.com` → `*.b.example.com`, never `*.example.com`);
//! else `_`. Two or three hash-table probes whatever the number of hostnames.

use std::fmt;
use std::hash::BuildHasher;
use std::sync::{Arc, OnceLock};

use openssl::pkey::{PKey, PKeyRef, Private};
use openssl::x509::{X509Ref, X509};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::config::{self, MAX_CONFIG_BYTES};
use crate::error::ConfigError;
use crate::Core;

/// Longest hostname that can match (RFC 1035, without the trailing dot).
const NAME_MAX: usize = 253;

/// The hostname of the default certificate.
const DEFAULT_HOSTNAME: &str = "_";

/// The uid meaning "this hostname has no certificate".
const NO_UID: &str = "-1";

/// What applying a servers document did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServersReport {
    /// Hostnames served (`_` included, `"-1"` entries not).
    pub hostnames: usize,
    /// Certificates in force: those some hostname refers to.
    pub certificates: usize,
    /// Certificates parsed by this apply (new uid, or new PEM for a uid).
    pub parsed: usize,
    /// New certificates kept to parse at first use ([`Core::apply_accepted_servers`]).
    pub deferred: usize,
    /// Certificates whose uid and PEM did not change, reused as parsed.
    pub reused: usize,
    /// True when the document was identical to the one in force (nothing was decoded).
    pub unchanged: bool,
}

/// A certificate in force, borrowed from the store for the duration of a lookup.
#[derive(Clone, Copy)]
pub struct CertRef<'a> {
    /// The uid the controller gave it.
    pub uid: &'a str,
    /// Identity of this content: a hash of uid and PEM with fixed seeds (the same in
    /// every process of the same build); changes when the content changes. Below
    /// 2^53, so a Lua number carries it exactly, and never 0.
    pub id: u64,
    /// The PEM exactly as POSTed (chain and key).
    pub pem: &'a [u8],
    cert: &'a Cert,
}

impl<'a> CertRef<'a> {
    /// The certificate's OpenSSL objects. Built when the document was applied with
    /// [`Core::apply_servers`]; after [`Core::apply_accepted_servers`], built by the
    /// first call (which allocates; later calls do not) — `None` if the PEM then
    /// turns out not to parse, which a document accepted by `apply_servers` cannot.
    pub fn objects(&self) -> Option<CertObjects<'a>> {
        self.cert.objects().map(|p| CertObjects { leaf: &p.leaf, chain: &p.chain, key: &p.key })
    }
}

/// A certificate's OpenSSL objects (reference-counted by OpenSSL: installing them in
/// a connection takes references, no copies).
#[derive(Clone, Copy)]
pub struct CertObjects<'a> {
    /// The first certificate of the PEM.
    pub leaf: &'a X509Ref,
    /// The certificates after the leaf (intermediates), in order; may be empty.
    pub chain: &'a [X509],
    /// The private key, which matches the leaf.
    pub key: &'a PKeyRef<Private>,
}

impl fmt::Debug for CertRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertRef")
            .field("uid", &self.uid)
            .field("id", &format_args!("{:#x}", self.id))
            .field("pem_len", &self.pem.len())
            .field("parsed", &self.cert.parsed.get().is_some())
            .finish()
    }
}

/// One certificate of the store: its text, and its OpenSSL objects once parsed.
pub(crate) struct Cert {
    uid: Box<str>,
    id: u64,
    pem: Box<[u8]>,
    /// Set when parsed: at apply ([`Core::apply_servers`]) or at first use.
    parsed: OnceLock<Option<Parsed>>,
}

/// The OpenSSL objects of a certificate.
struct Parsed {
    leaf: X509,
    chain: Vec<X509>,
    key: PKey<Private>,
}

impl Cert {
    fn as_ref(&self) -> CertRef<'_> {
        CertRef { uid: &self.uid, id: self.id, pem: &self.pem, cert: self }
    }

    /// Parse `pem` now and check it: a bad certificate is an error.
    fn parse(uid: &str, pem: String) -> Result<Cert, ConfigError> {
        let parsed = Parsed::new(uid, pem.as_bytes())?;
        Ok(Cert {
            id: cert_id(uid, pem.as_bytes()),
            uid: uid.into(),
            pem: pem.into_bytes().into(),
            parsed: Some(parsed).into(),
        })
    }

    /// Keep `pem` to parse at first use (a document already accepted elsewhere).
    fn deferred(uid: &str, pem: String) -> Cert {
        Cert {
            id: cert_id(uid, pem.as_bytes()),
            uid: uid.into(),
            pem: pem.into_bytes().into(),
            parsed: OnceLock::new(),
        }
    }

    fn objects(&self) -> Option<&Parsed> {
        self.parsed.get_or_init(|| Parsed::new(&self.uid, &self.pem).ok()).as_ref()
    }
}

impl Parsed {
    /// Parse `pem` (certificates then key, in any order PEM allows) and check it.
    fn new(uid: &str, pem: &[u8]) -> Result<Parsed, ConfigError> {
        let bad = |reason: String| ConfigError::Certificate { uid: uid.to_string(), reason };
        let mut certs = X509::stack_from_pem(pem).map_err(|e| bad(format!("PEM certificates do not parse: {e}")))?;
        if certs.is_empty() {
            return Err(bad("no certificate in the PEM".into()));
        }
        if memchr::memmem::find(pem, b"PRIVATE KEY-----").is_none() {
            return Err(bad("no private key in the PEM".into()));
        }
        let key = PKey::private_key_from_pem(pem).map_err(|e| bad(format!("private key does not parse: {e}")))?;
        let leaf = certs.remove(0);
        let public = leaf.public_key().map_err(|e| bad(format!("certificate's public key does not parse: {e}")))?;
        if !public.public_eq(&key) {
            return Err(bad("the private key does not match the certificate (the first one of the PEM)".into()));
        }
        Ok(Parsed { leaf, chain: certs, key })
    }
}

/// Identity of a certificate's content: a hash of the hashes of uid and PEM (so no
/// two pairs run together), with the fixed seeds of [`crate::snapshot::hash_bytes`]
/// (the same in every process of the same build); 53 bits so that LuaJIT numbers
/// hold it exactly; never 0.
pub(crate) fn cert_id(uid: &str, pem: &[u8]) -> u64 {
    let mut pair = [0u8; 16];
    pair[..8].copy_from_slice(&crate::snapshot::hash_bytes(uid.as_bytes()).to_le_bytes());
    pair[8..].copy_from_slice(&crate::snapshot::hash_bytes(pem).to_le_bytes());
    (crate::snapshot::hash_bytes(&pair) & ((1 << 53) - 1)).max(1)
}

/// Names (hostnames, or the part of a wildcard after `*.`) → certificate index. The
/// names live in one arena, the table holds (hash, offset, length, certificate).
#[derive(Default)]
struct NameTable {
    table: hashbrown::HashTable<NameEntry>,
    names: Vec<u8>,
    hasher: foldhash::fast::RandomState,
}

#[derive(Clone, Copy)]
struct NameEntry {
    hash: u64,
    offset: u32,
    len: u32,
    cert: u32,
}

impl NameTable {
    fn with_capacity(n: usize) -> Self {
        NameTable { table: hashbrown::HashTable::with_capacity(n), names: Vec::new(), hasher: Default::default() }
    }

    #[inline]
    fn get(&self, name: &[u8]) -> Option<u32> {
        let hash = self.hasher.hash_one(name);
        self.table
            .find(hash, |e| {
                e.hash == hash
                    && e.len as usize == name.len()
                    && crate::bytes::eq(&self.names[e.offset as usize..][..name.len()], name)
            })
            .map(|e| e.cert)
    }

    /// Add `name` → `cert`; the certificate already there if the name is taken.
    fn insert(&mut self, name: &[u8], cert: u32) -> Result<(), u32> {
        if let Some(existing) = self.get(name) {
            return Err(existing);
        }
        let hash = self.hasher.hash_one(name);
        let entry = NameEntry { hash, offset: self.names.len() as u32, len: name.len() as u32, cert };
        self.names.extend_from_slice(name);
        self.table.insert_unique(hash, entry, |e| e.hash);
        Ok(())
    }

    fn len(&self) -> usize {
        self.table.len()
    }

    #[cfg(test)]
    fn heap_bytes(&self) -> usize {
        self.table.capacity() * (std::mem::size_of::<NameEntry>() + 1) + self.names.capacity()
    }
}

/// The certificates in force and the hostnames that use them. Immutable once built.
#[derive(Default)]
pub(crate) struct CertStore {
    generation: u64,
    /// The document as POSTed, to recognise an identical document.
    doc: Option<Arc<[u8]>>,
    certs: Vec<Arc<Cert>>,
    /// Exact hostnames, `_` included.
    exact: NameTable,
    /// Wildcard hostnames by the part after `*.`.
    wildcard: NameTable,
    default: Option<u32>,
    /// Certificate index by uid, and by id.
    by_uid: hashbrown::HashTable<u32>,
    by_id: hashbrown::HashTable<u32>,
    uid_hasher: foldhash::fast::RandomState,
}

/// Lower-case `name` into `buf` and strip one trailing dot; `None` if longer than
/// any hostname.
#[inline]
fn normalise<'b>(name: &[u8], buf: &'b mut [u8; NAME_MAX]) -> Option<&'b [u8]> {
    let name = name.strip_suffix(b".").unwrap_or(name);
    let out = buf.get_mut(..name.len())?;
    out.copy_from_slice(name);
    out.make_ascii_lowercase();
    Some(out)
}

impl CertStore {
    #[inline]
    fn cert(&self, i: u32) -> &Cert {
        &self.certs[i as usize]
    }

    /// The certificate for a TLS handshake with this SNI (`None`: the client sent none).
    #[inline]
    fn lookup_sni(&self, sni: Option<&[u8]>) -> Option<&Cert> {
        sni.and_then(|sni| self.lookup_own(sni)).or_else(|| self.default.map(|i| self.cert(i)))
    }

    /// The certificate listed for this name itself: its exact hostname, else the
    /// wildcard of its first label; never the default (`_` only for the name `_`).
    #[inline]
    fn lookup_own(&self, name: &[u8]) -> Option<&Cert> {
        let mut buf = [0u8; NAME_MAX];
        let name = normalise(name, &mut buf)?;
        if let Some(i) = self.exact.get(name) {
            return Some(self.cert(i));
        }
        // The first label, non-empty, replaced by `*`: look up what follows it.
        let dot = memchr::memchr(b'.', name).filter(|&d| d > 0)?;
        self.wildcard.get(&name[dot + 1..]).map(|i| self.cert(i))
    }

    /// Exactly this hostname (`*.x` for a wildcard), no fallback.
    fn lookup_hostname(&self, hostname: &[u8]) -> Option<&Cert> {
        let mut buf = [0u8; NAME_MAX];
        let name = normalise(hostname, &mut buf)?;
        let i = match name.strip_prefix(b"*.") {
            Some(rest) => self.wildcard.get(rest)?,
            None => self.exact.get(name)?,
        };
        Some(self.cert(i))
    }

    fn by_id(&self, id: u64) -> Option<&Cert> {
        self.by_id.find(id, |&i| self.cert(i).id == id).map(|&i| self.cert(i))
    }

    /// The certificate of the store with this uid and exactly this PEM, if any.
    fn find_same(&self, uid: &str, pem: &str) -> Option<&Arc<Cert>> {
        let hash = self.uid_hasher.hash_one(uid.as_bytes());
        let &i = self.by_uid.find(hash, |&i| &*self.cert(i).uid == uid)?;
        let cert = &self.certs[i as usize];
        (*cert.pem == *pem.as_bytes()).then_some(cert)
    }

    /// True when `json` is byte-for-byte the document in force.
    fn is_same_document(&self, json: &[u8]) -> bool {
        match &self.doc {
            Some(doc) => doc.len() == json.len() && **doc == *json,
            None => false,
        }
    }

    fn report_unchanged(&self) -> ServersReport {
        ServersReport {
            hostnames: self.exact.len() + self.wildcard.len(),
            certificates: self.certs.len(),
            parsed: 0,
            deferred: 0,
            reused: self.certs.len(),
            unchanged: true,
        }
    }

    /// Approximate heap size of the store (tables, names, PEM texts; not OpenSSL's
    /// parsed objects).
    #[cfg(test)]
    pub(crate) fn heap_bytes(&self) -> usize {
        self.exact.heap_bytes()
            + self.wildcard.heap_bytes()
            + (self.by_uid.capacity() + self.by_id.capacity()) * 5
            + self.certs.iter().map(|c| c.pem.len() + c.uid.len() + std::mem::size_of::<Cert>()).sum::<usize>()
    }

    /// Build the store of `json`, reusing certificates of `prev` whose uid and PEM did
    /// not change. Nothing is published here.
    /// `parse`: parse and check each new certificate now (else at first use).
    pub(crate) fn compile(
        json: &[u8],
        prev: &CertStore,
        parse: bool,
    ) -> Result<(CertStore, ServersReport), ConfigError> {
        if json.len() > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge { size: json.len(), limit: MAX_CONFIG_BYTES });
        }
        if json.iter().all(u8::is_ascii_whitespace) {
            return Err(ConfigError::ServersEmpty);
        }
        let doc = decode(json)?;

        // Every certificate is a string, every uid appears once.
        let uid_hasher = foldhash::fast::RandomState::default();
        let mut uid_index: hashbrown::HashTable<u32> = hashbrown::HashTable::with_capacity(doc.certificates.len());
        for (pos, (uid, value)) in doc.certificates.iter().enumerate() {
            if let Value::Other(kind) = value {
                return Err(ConfigError::Certificate {
                    uid: uid.clone(),
                    reason: format!("expected the PEM text (a string), got {kind}"),
                });
            }
            let hash = uid_hasher.hash_one(uid.as_bytes());
            if uid_index.find(hash, |&p| doc.certificates[p as usize].0 == *uid).is_some() {
                return Err(ConfigError::Certificate { uid: uid.clone(), reason: "duplicate uid".into() });
            }
            uid_index
                .insert_unique(hash, pos as u32, |&p| uid_hasher.hash_one(doc.certificates[p as usize].0.as_bytes()));
        }

        let mut certificates = doc.certificates;
        // Position in `certificates` → index in the new store, once resolved.
        let mut resolved: Vec<u32> = vec![u32::MAX; certificates.len()];
        let mut certs: Vec<Arc<Cert>> = Vec::new();
        let mut report = ServersReport::default();
        let mut exact = NameTable::with_capacity(doc.servers.len());
        let mut wildcard = NameTable::with_capacity(0);
        let mut buf = [0u8; NAME_MAX];
        for (hostname, value) in &doc.servers {
            let bad = |reason: String| ConfigError::Server { hostname: hostname.clone(), reason };
            let uid = match value {
                Value::Str(uid) => uid.as_str(),
                Value::Other(kind) => {
                    return Err(bad(format!("expected a certificate uid (a string) or \"-1\", got {kind}")))
                }
            };
            if uid == NO_UID {
                continue;
            }
            let (is_wildcard, name) = check_hostname(hostname, &mut buf).map_err(|r| bad(r.into()))?;
            let hash = uid_hasher.hash_one(uid.as_bytes());
            let Some(&pos) = uid_index.find(hash, |&p| certificates[p as usize].0 == uid) else {
                return Err(bad(format!("no certificate with uid {uid:?} in \"certificates\"")));
            };
            let pos = pos as usize;
            if resolved[pos] == u32::MAX {
                let Value::Str(pem) = std::mem::replace(&mut certificates[pos].1, Value::Other("a taken value")) else {
                    unreachable!("every certificate value was checked to be a string");
                };
                let cert = match prev.find_same(uid, &pem) {
                    Some(same) => {
                        report.reused += 1;
                        Arc::clone(same)
                    }
                    None if parse => {
                        report.parsed += 1;
                        Arc::new(Cert::parse(uid, pem)?)
                    }
                    None => {
                        report.deferred += 1;
                        Arc::new(Cert::deferred(uid, pem))
                    }
                };
                resolved[pos] = certs.len() as u32;
                certs.push(cert);
            }
            let cert = resolved[pos];
            let (table, key) = if is_wildcard { (&mut wildcard, &name[2..]) } else { (&mut exact, name) };
            if let Err(other) = table.insert(key, cert) {
                if other != cert {
                    return Err(bad("the same hostname (compared in lower case, without a trailing dot) \
                                    appears twice with different certificates"
                        .into()));
                }
                continue;
            }
            report.hostnames += 1;
        }
        report.certificates = certs.len();

        let mut by_uid = hashbrown::HashTable::with_capacity(certs.len());
        let mut by_id = hashbrown::HashTable::with_capacity(certs.len());
        for (i, c) in certs.iter().enumerate() {
            by_uid.insert_unique(uid_hasher.hash_one(c.uid.as_bytes()), i as u32, |&j| {
                uid_hasher.hash_one(certs[j as usize].uid.as_bytes())
            });
            by_id.insert_unique(c.id, i as u32, |&j| certs[j as usize].id);
        }
        let store = CertStore {
            generation: prev.generation + 1,
            doc: Some(Arc::from(json)),
            default: exact.get(DEFAULT_HOSTNAME.as_bytes()),
            certs,
            exact,
            wildcard,
            by_uid,
            by_id,
            uid_hasher,
        };
        Ok((store, report))
    }
}

/// Check a hostname of the document and normalise it into `buf`: `_`, a DNS name,
/// or `*.` followed by a DNS name. Returns (is a wildcard, normalised name).
fn check_hostname<'b>(hostname: &str, buf: &'b mut [u8; NAME_MAX]) -> Result<(bool, &'b [u8]), &'static str> {
    if hostname == DEFAULT_HOSTNAME {
        buf[0] = b'_';
        return Ok((false, &buf[..1]));
    }
    let (is_wildcard, dns) = match hostname.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, hostname),
    };
    if dns.contains('*') {
        return Err("a wildcard is allowed only as the whole first label (`*.example.com`)");
    }
    if !config::is_dns_name(dns) {
        return Err("not a valid DNS name (labels of letters, digits and `-`, at most 63 bytes each, 253 in all)");
    }
    let name = normalise(hostname.as_bytes(), buf).ok_or("longer than 253 bytes")?;
    Ok((is_wildcard, name))
}

impl Core {
    /// Parse, validate and publish a servers document (the body of
    /// `POST /configuration/servers`). Each document is the whole truth: a hostname
    /// absent or mapped to `"-1"` is no longer served. A document identical to the one
    /// in force is recognised without decoding; certificates whose uid and PEM did not
    /// change are reused as parsed. On error nothing changes.
    pub fn apply_servers(&self, json: &[u8]) -> Result<ServersReport, ConfigError> {
        self.publish_servers(json, true)
    }

    /// Publish a servers document that [`Core::apply_servers`] already accepted (in
    /// this process or another: a worker applying the copy the receiving worker
    /// stored). Everything is checked as by `apply_servers` except the certificates'
    /// PEM, which is parsed when [`CertRef::objects`] first asks for it; ids, uids and
    /// PEM texts are available at once. Applying thousands of new certificates this
    /// way takes milliseconds instead of seconds.
    pub fn apply_accepted_servers(&self, json: &[u8]) -> Result<ServersReport, ConfigError> {
        self.publish_servers(json, false)
    }

    fn publish_servers(&self, json: &[u8], parse: bool) -> Result<ServersReport, ConfigError> {
        let _guard = self.certs_lock.lock();
        let prev = self.certs.load_full();
        if prev.is_same_document(json) {
            return Ok(prev.report_unchanged());
        }
        let (next, report) = CertStore::compile(json, &prev, parse)?;
        self.certs.store(Arc::new(next));
        Ok(report)
    }

    /// The checks of [`Core::apply_servers`] without publishing anything.
    pub fn validate_servers(&self, json: &[u8]) -> Result<(), ConfigError> {
        let prev = self.certs.load_full();
        if prev.is_same_document(json) {
            return Ok(());
        }
        CertStore::compile(json, &prev, true).map(|_| ())
    }

    /// The servers document in force, exactly as it was applied.
    pub fn servers_json(&self) -> Option<Arc<[u8]>> {
        self.certs.load().doc.clone()
    }

    /// Number of servers documents published so far.
    pub fn servers_generation(&self) -> u64 {
        self.certs.load().generation
    }

    /// The certificate for a TLS handshake whose SNI is `sni` (`None`: no SNI):
    /// the exact hostname (lower-cased, one trailing dot stripped), else the wildcard
    /// of its first label (`a.b.example.com` → `*.b.example.com`, never
    /// `*.example.com`), else `_`. A name longer than 253 bytes matches only `_`.
    /// `f` sees the certificate borrowed from the store in force. Never allocates
    /// (nor does [`CertRef::objects`] once the certificate is parsed); O(1) in the
    /// number of hostnames.
    #[inline]
    pub fn certificate_with<R>(&self, sni: Option<&[u8]>, f: impl FnOnce(Option<CertRef<'_>>) -> R) -> R {
        let store = self.certs.load();
        f(store.lookup_sni(sni).map(Cert::as_ref))
    }

    /// The certificate of exactly this hostname (normalised as for SNI; `*.x` for a
    /// wildcard entry, `_` for the default), with no wildcard or default fallback.
    pub fn certificate_for_hostname_with<R>(&self, hostname: &[u8], f: impl FnOnce(Option<CertRef<'_>>) -> R) -> R {
        let store = self.certs.load();
        f(store.lookup_hostname(hostname).map(Cert::as_ref))
    }

    /// Whether `hostname` has a certificate listed for itself — its exact name or the
    /// wildcard of its first label, not only the default `_` — as ingress-nginx's
    /// `certificate.configured_for_current_request()` answers for `$host`. A hostname
    /// listed with the default's certificate counts. Never allocates.
    pub fn has_own_certificate(&self, hostname: &[u8]) -> bool {
        self.certs.load().lookup_own(hostname).is_some()
    }

    /// The certificate in force whose [`CertRef::id`] is `id`, if any.
    pub fn certificate_by_id_with<R>(&self, id: u64, f: impl FnOnce(Option<CertRef<'_>>) -> R) -> R {
        let store = self.certs.load();
        f(store.by_id(id).map(Cert::as_ref))
    }

    #[cfg(test)]
    pub(crate) fn cert_store_heap_bytes(&self) -> usize {
        self.certs.load().heap_bytes()
    }
}

// ---------------------------------------------------------------------------------
// Decoding: the two objects as lists of (key, value) in document order, values kept
// as strings or as the name of the wrong type they have (for the error message).

struct Document {
    certificates: Vec<(String, Value)>,
    servers: Vec<(String, Value)>,
}

enum Value {
    Str(String),
    Other(&'static str),
}

fn decode(json: &[u8]) -> Result<Document, ConfigError> {
    if let Some(at) = config::depth_exceeded(json) {
        return Err(ConfigError::ServersJson(format!(
            "nested deeper than {} levels at byte offset {at}",
            config::MAX_JSON_DEPTH
        )));
    }
    let mut de = serde_json::Deserializer::from_slice(json);
    let doc = de.deserialize_any(DocumentVisitor).map_err(|e| ConfigError::ServersJson(e.to_string()))?;
    de.end().map_err(|e| ConfigError::ServersJson(e.to_string()))?;
    Ok(doc)
}

struct DocumentVisitor;

impl<'de> Visitor<'de> for DocumentVisitor {
    type Value = Document;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(r#"an object {"certificates": {uid: PEM}, "servers": {hostname: uid}}"#)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Document, A::Error> {
        let mut certificates = None;
        let mut servers = None;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            let (slot, field) = match &*key {
                "certificates" => (&mut certificates, "certificates"),
                "servers" => (&mut servers, "servers"),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            if slot.is_some() {
                return Err(de::Error::custom(format_args!("duplicate field `{field}`")));
            }
            *slot = Some(map.next_value_seed(Entries { field })?);
        }
        Ok(Document { certificates: certificates.unwrap_or_default(), servers: servers.unwrap_or_default() })
    }
}

/// `"certificates"` or `"servers"`: an object (or `null`, as Go encodes an empty map).
struct Entries {
    field: &'static str,
}

impl<'de> DeserializeSeed<'de> for Entries {
    type Value = Vec<(String, Value)>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Entries {
    type Value = Vec<(String, Value)>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` to be an object of strings", self.field)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Vec::new())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(map.size_hint().unwrap_or(0));
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value::<Value>()?;
            out.push((key, value));
        }
        Ok(out)
    }
}

impl<'de> de::Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(v))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Value, E> {
        Ok(Value::Other("a boolean"))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Value, E> {
        Ok(Value::Other("a number"))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Value, E> {
        Ok(Value::Other("a number"))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Value, E> {
        Ok(Value::Other("a number"))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Other("null"))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Value::Other("an array"))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Value::Other("an object"))
    }
}

#[cfg(test)]
mod tests;
