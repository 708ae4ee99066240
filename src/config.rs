//! The controller's configuration model: the JSON array POSTed to
//! `/configuration/backends`, with ingress-nginx's exact field names.
//!
//! Parsing is two-staged: the document is split into one raw JSON text per backend
//! (so a backend whose text did not change can be reused without decoding it), then
//! each changed backend is decoded into [`BackendSpec`] and validated. Unknown fields
//! are ignored; `null` is treated as an absent field, as Go's encoder emits it. A
//! field of the wrong type or an invalid value rejects the whole document.

use std::net::{IpAddr, SocketAddr};

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use crate::error::{BackendLabel, ConfigError};

/// Largest document accepted by [`crate::Core::apply_backends`], in bytes.
pub const MAX_CONFIG_BYTES: usize = 48 * 1024 * 1024;

/// One backend (`ingress.Backend` in the controller).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct BackendSpec {
    pub name: String,
    #[serde(deserialize_with = "optional_object")]
    pub service: Option<ServiceSpec>,
    /// The service port: a number or a port name (Kubernetes `IntOrString`).
    pub port: Option<IntOrString>,
    #[serde(rename = "sslPassthrough", deserialize_with = "null_default")]
    pub ssl_passthrough: bool,
    #[serde(deserialize_with = "objects")]
    pub endpoints: Vec<EndpointSpec>,
    #[serde(rename = "sessionAffinityConfig", deserialize_with = "object")]
    pub session_affinity: SessionAffinityConfig,
    #[serde(rename = "upstreamHashByConfig", deserialize_with = "object")]
    pub upstream_hash_by: UpstreamHashByConfig,
    #[serde(rename = "load-balance", deserialize_with = "null_default")]
    pub load_balance: String,
    #[serde(rename = "noServer", deserialize_with = "null_default")]
    pub no_server: bool,
    #[serde(rename = "trafficShapingPolicy", deserialize_with = "object")]
    pub traffic_shaping_policy: TrafficShapingPolicy,
    #[serde(rename = "alternativeBackends", deserialize_with = "null_default")]
    pub alternative_backends: Vec<String>,
}

/// The part of the Kubernetes Service object the balancer reads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct ServiceSpec {
    #[serde(deserialize_with = "object")]
    pub spec: ServiceSpecInner,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct ServiceSpecInner {
    /// `ClusterIP`, `NodePort`, `LoadBalancer`, `ExternalName`.
    #[serde(rename = "type", deserialize_with = "null_default")]
    pub service_type: String,
}

/// Kubernetes `IntOrString`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum IntOrString {
    Int(i64),
    String(String),
}

/// One endpoint as the controller sends it: `{"address": "10.0.0.1", "port": "8080"}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct EndpointSpec {
    #[serde(deserialize_with = "null_default")]
    pub address: String,
    /// A string in the controller's JSON; a JSON number is accepted too.
    #[serde(deserialize_with = "port_text")]
    pub port: String,
}

/// `sessionAffinityConfig`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct SessionAffinityConfig {
    /// Affinity type: `cookie` or empty.
    #[serde(deserialize_with = "null_default")]
    pub name: String,
    /// `balanced` (default) or `persistent`.
    #[serde(deserialize_with = "null_default")]
    pub mode: String,
    #[serde(rename = "cookieSessionAffinity", deserialize_with = "object")]
    pub cookie: CookieSessionAffinity,
}

/// `cookieSessionAffinity`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct CookieSessionAffinity {
    #[serde(deserialize_with = "null_default")]
    pub name: String,
    #[serde(deserialize_with = "null_default")]
    pub expires: String,
    #[serde(deserialize_with = "null_default")]
    pub maxage: String,
    /// Host → paths where the cookie may be set.
    #[serde(deserialize_with = "null_default")]
    pub locations: std::collections::BTreeMap<String, Vec<String>>,
    #[serde(deserialize_with = "null_default")]
    pub secure: bool,
    #[serde(deserialize_with = "null_default")]
    pub path: String,
    #[serde(deserialize_with = "null_default")]
    pub domain: String,
    #[serde(deserialize_with = "null_default")]
    pub samesite: String,
    #[serde(deserialize_with = "null_default")]
    pub conditional_samesite_none: bool,
    #[serde(deserialize_with = "null_default")]
    pub change_on_failure: bool,
}

/// `upstreamHashByConfig`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct UpstreamHashByConfig {
    #[serde(rename = "upstream-hash-by", deserialize_with = "null_default")]
    pub hash_by: String,
    #[serde(rename = "upstream-hash-by-subset", deserialize_with = "null_default")]
    pub subset: bool,
    #[serde(rename = "upstream-hash-by-subset-size", deserialize_with = "null_default")]
    pub subset_size: u32,
}

/// `trafficShapingPolicy` of a canary (alternative) backend.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct TrafficShapingPolicy {
    #[serde(deserialize_with = "null_default")]
    pub weight: u32,
    #[serde(rename = "weightTotal", deserialize_with = "null_default")]
    pub weight_total: u32,
    #[serde(deserialize_with = "null_default")]
    pub header: String,
    #[serde(rename = "headerValue", deserialize_with = "null_default")]
    pub header_value: String,
    #[serde(rename = "headerPattern", deserialize_with = "null_default")]
    pub header_pattern: String,
    #[serde(deserialize_with = "null_default")]
    pub cookie: String,
}

/// Go encodes nil slices, maps and pointers as `null`: read it as the default.
fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A struct field read from a JSON object only (`null`: absent). serde's derived
/// structs also accept a JSON array, read positionally (`"trafficShapingPolicy":
/// [20, 100]` would set the weights): a wrong type the model must refuse.
fn object<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(optional_object(d)?.unwrap_or_default())
}

fn optional_object<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    d.deserialize_option(ObjectVisitor(std::marker::PhantomData))
}

/// A list of objects (`null`: empty), each read by [`Object`].
fn objects<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    let list = Option::<Vec<Object<T>>>::deserialize(d)?.unwrap_or_default();
    Ok(list.into_iter().map(|o| o.0).collect())
}

/// `T` read from a JSON object only, never from an array.
pub(crate) struct Object<T>(pub(crate) T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(ObjectVisitor(std::marker::PhantomData))
            .and_then(|o: Option<T>| o.ok_or_else(|| de::Error::custom("expected a JSON object")))
            .map(Object)
    }
}

struct ObjectVisitor<T>(std::marker::PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
    type Value = Option<T>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_none<E: de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
        d.deserialize_map(self)
    }
    fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Option<T>, A::Error> {
        T::deserialize(de::value::MapAccessDeserializer::new(map)).map(Some)
    }
}

/// An endpoint port: a JSON string (as the controller sends it) or a JSON integer.
fn port_text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    struct PortVisitor;
    impl Visitor<'_> for PortVisitor {
        type Value = String;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a port number as a string, e.g. \"8080\"")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_owned())
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_unit<E: de::Error>(self) -> Result<String, E> {
            Ok(String::new())
        }
    }
    d.deserialize_any(PortVisitor)
}

/// The document split into raw per-backend texts, borrowed from the input.
///
/// One structural pass, not a full parse: it finds where each element of the
/// top-level array begins and ends (strings and escapes respected, nesting counted
/// up to [`MAX_JSON_DEPTH`]) and checks the array's own syntax (brackets, commas).
/// What is inside an element is checked when the element is decoded; an element
/// that is not decoded is byte for byte one that an earlier apply decoded and
/// accepted. So a document of thousands of backends where one changed costs one
/// scan of its bytes plus one decode (a full `serde_json` pass over the whole
/// document took ten times as long).
pub(crate) fn split_document(json: &[u8]) -> Result<Vec<Span>, ConfigError> {
    let text = check_text(json)?;
    let i = json.iter().position(|&b| !is_ws(b)).unwrap_or(json.len());
    if json[i] != b'[' {
        return Err(ConfigError::Json(format!(
            "expected a JSON array of backend objects, found {:?} at byte offset {i}",
            // Escaped: error texts go to C callers as NUL-terminated strings.
            text[i..].chars().next().unwrap_or(' ')
        )));
    }
    let mut out = Vec::new();
    match scan_elements(json, i + 1, Resume::ElementOrClose, None, &mut out)? {
        ScanEnd::Closed(end) => check_trailing(json, end)?,
        ScanEnd::Stopped | ScanEnd::Missed => unreachable!("no stop position was given"),
    }
    Ok(out)
}

/// The checks of the whole text that come before any scan: size, UTF-8, not empty.
pub(crate) fn check_text(json: &[u8]) -> Result<&str, ConfigError> {
    check_size(json)?;
    let text = std::str::from_utf8(json).map_err(|e| ConfigError::Utf8 { offset: e.valid_up_to() })?;
    check_not_blank(text)?;
    Ok(text)
}

pub(crate) fn check_size(json: &[u8]) -> Result<(), ConfigError> {
    if json.len() > MAX_CONFIG_BYTES {
        return Err(ConfigError::TooLarge { size: json.len(), limit: MAX_CONFIG_BYTES });
    }
    Ok(())
}

pub(crate) fn check_not_blank(text: &str) -> Result<(), ConfigError> {
    if text.trim().is_empty() {
        return Err(ConfigError::Empty);
    }
    Ok(())
}

/// Only whitespace after the array's `]` at `end`.
pub(crate) fn check_trailing(json: &[u8], end: usize) -> Result<(), ConfigError> {
    match json[end..].iter().position(|&b| !is_ws(b)) {
        Some(extra) => Err(bad_json("trailing characters after the array", end + extra)),
        None => Ok(()),
    }
}

/// A backend's text in the document: byte offsets `[start, end)`.
pub(crate) type Span = (usize, usize);

/// Where a scan of the top-level array resumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resume {
    /// Right after `[`: an element or `]`.
    ElementOrClose,
    /// Right after an element: `,` or `]`.
    Delimiter,
}

/// How a scan ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScanEnd {
    /// At the array's `]`; the position after it.
    Closed(usize),
    /// An element starts exactly at the stop position.
    Stopped,
    /// An element started beyond the stop position (none starts there).
    Missed,
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

fn bad_json(what: &str, at: usize) -> ConfigError {
    ConfigError::Json(format!("{what} at byte offset {at}"))
}

/// Scan the elements of the top-level array from byte `i` in state `from`, pushing
/// their spans to `out`, until the array closes or, given `stop`, an element starts
/// at or after `stop`. Deterministic and local: resumed from a state a scan of the
/// same bytes passed through, it finds what that scan found.
pub(crate) fn scan_elements(
    json: &[u8],
    mut i: usize,
    from: Resume,
    stop: Option<usize>,
    out: &mut Vec<Span>,
) -> Result<ScanEnd, ConfigError> {
    let n = json.len();
    let skip_ws = |mut i: usize| {
        while i < n && is_ws(json[i]) {
            i += 1;
        }
        i
    };
    if from == Resume::Delimiter {
        i = skip_ws(i);
        match json.get(i) {
            Some(b',') => i += 1,
            Some(b']') => return Ok(ScanEnd::Closed(i + 1)),
            Some(_) => return Err(bad_json("expected `,` or `]` after a backend", i)),
            None => return Err(bad_json("unexpected end of the document (unclosed array)", n)),
        }
    } else {
        i = skip_ws(i);
        if json.get(i) == Some(&b']') {
            return Ok(ScanEnd::Closed(i + 1));
        }
    }
    loop {
        i = skip_ws(i);
        if let Some(stop) = stop {
            if i == stop {
                return Ok(ScanEnd::Stopped);
            }
            if i > stop {
                return Ok(ScanEnd::Missed);
            }
        }
        // One element: up to the `,` or `]` at the array's own level.
        let start = i;
        let mut depth = 0usize;
        while i < n {
            match json[i] {
                b'"' => {
                    i = string_end(json, i + 1).ok_or_else(|| bad_json("unterminated string", start))?;
                    continue;
                }
                b'{' | b'[' => {
                    depth += 1;
                    if depth + 1 > MAX_JSON_DEPTH {
                        return Err(bad_json(&format!("nested deeper than {MAX_JSON_DEPTH} levels"), i));
                    }
                }
                b'}' | b']' if depth > 0 => depth -= 1,
                b',' | b']' if depth == 0 => break,
                b'}' => return Err(bad_json("unexpected `}`", i)),
                _ => {}
            }
            i += 1;
        }
        if i >= n {
            return Err(bad_json("unexpected end of the document (unclosed array or object)", n));
        }
        let mut end = i;
        while end > start && is_ws(json[end - 1]) {
            end -= 1;
        }
        if end == start {
            return Err(bad_json("expected a backend object", start));
        }
        out.push((start, end));
        let delimiter = json[i];
        i += 1;
        if delimiter == b']' {
            return Ok(ScanEnd::Closed(i));
        }
    }
}

/// `Err` with the byte offset if `json` nests arrays and objects deeper than
/// [`MAX_JSON_DEPTH`] anywhere (fields nobody reads included); strings skipped. For
/// documents read in one pass by `serde_json` (the servers document), whose own
/// limit does not cover the values it skips.
pub(crate) fn depth_exceeded(json: &[u8]) -> Option<usize> {
    let (mut depth, mut i) = (0usize, 0usize);
    while i < json.len() {
        match json[i] {
            b'"' => match string_end(json, i + 1) {
                Some(end) => {
                    i = end;
                    continue;
                }
                None => return None, // unterminated: the parser reports it
            },
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_JSON_DEPTH {
                    return Some(i);
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    None
}

/// The position just after the string whose contents start at `i` (after its
/// opening quote), or `None` if it is not closed. Most strings of a document are
/// short (keys, addresses): a plain loop finds their end; a long one (a PEM, a
/// large annotation) is searched with `memchr`.
#[inline]
fn string_end(json: &[u8], mut i: usize) -> Option<usize> {
    let short_end = (i + 32).min(json.len());
    while i < short_end {
        match json[i] {
            b'"' => return Some(i + 1),
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
    loop {
        let p = memchr::memchr2(b'"', b'\\', json.get(i..)?)?;
        if json[i + p] == b'"' {
            return Some(i + p + 1);
        }
        i += p + 2;
    }
}

/// Deepest nesting of arrays and objects accepted (the top-level array counts). The
/// controller's documents nest about 6 levels; the limit keeps hostile input from
/// costing stack or time.
pub const MAX_JSON_DEPTH: usize = 64;

/// Decode one backend's raw text, naming the backend and the field on error.
pub(crate) fn decode_backend(raw: &str, position: usize) -> Result<BackendSpec, ConfigError> {
    let mut de = serde_json::Deserializer::from_str(raw);
    match serde_path_to_error::deserialize::<_, Object<BackendSpec>>(&mut de).map(|o| o.0) {
        // Nothing may follow the object (the document's split only checked the array).
        Ok(spec) => match de.end() {
            Ok(()) => Ok(spec),
            Err(e) => Err(ConfigError::Json(format!("backend {}: {e}", BackendLabel::Index(position)))),
        },
        Err(err) => {
            // Name the backend if its `name` is readable even though another field is not.
            #[derive(Deserialize)]
            struct NameOnly {
                name: Option<serde_json::Value>,
            }
            let name = serde_json::from_str::<NameOnly>(raw).ok().and_then(|n| match n.name {
                Some(serde_json::Value::String(s)) if !s.is_empty() => Some(s),
                _ => None,
            });
            let label = match &name {
                Some(n) => BackendLabel::Name(n),
                None => BackendLabel::Index(position),
            };
            let path = err.path().to_string();
            let inner = err.into_inner();
            // Not a value of the wrong type: the backend's text is not JSON (the
            // document's split only checked the array around it).
            if matches!(inner.classify(), serde_json::error::Category::Syntax | serde_json::error::Category::Eof) {
                return Err(ConfigError::Json(format!("backend {label}: {inner}")));
            }
            let field = if path == "." || path.is_empty() { "(backend)".to_owned() } else { path };
            Err(ConfigError::field(&label, field, strip_position(&inner.to_string())))
        }
    }
}

/// serde_json appends " at line 1 column 42" to messages; the field path says more.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

/// Validate an endpoint and turn it into a socket address. IPv6 may come bare or
/// bracketed; the port must be a decimal number in 1–65535.
pub(crate) fn endpoint_addr(
    backend: &BackendLabel<'_>,
    i: usize,
    ep: &EndpointSpec,
) -> Result<SocketAddr, ConfigError> {
    let addr_text = ep.address.trim();
    let bare = addr_text.strip_prefix('[').and_then(|a| a.strip_suffix(']')).unwrap_or(addr_text);
    let ip: IpAddr = bare.parse().map_err(|_| {
        ConfigError::field(
            backend,
            format!("endpoints[{i}].address"),
            format!("{:?} is not an IPv4 or IPv6 address", ep.address),
        )
    })?;
    let port = parse_port(&ep.port).ok_or_else(|| {
        ConfigError::field(
            backend,
            format!("endpoints[{i}].port"),
            format!("{:?} is not a port number in 1-65535", ep.port),
        )
    })?;
    Ok(SocketAddr::new(ip, port))
}

/// A syntactically valid DNS host name (letters, digits, hyphens, dots; labels of
/// 1-63 characters, 253 in all), as an ExternalName service carries.
pub(crate) fn is_dns_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn parse_port(text: &str) -> Option<u16> {
    let t = text.trim();
    if t.is_empty() || t.len() > 5 || !t.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    match t.parse::<u32>() {
        Ok(p @ 1..=65535) => Some(p as u16),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(json: &str) -> Result<BackendSpec, ConfigError> {
        let spans = split_document(json.as_bytes())?;
        decode_backend(&json[spans[0].0..spans[0].1], 0)
    }

    #[test]
    fn reads_every_field_with_controller_names() {
        let b = one(r#"[{"name":"ns-svc-80","service":{"metadata":{"name":"svc"},"spec":{"type":"ClusterIP"}},
            "port":80,"sslPassthrough":true,
            "endpoints":[{"address":"10.0.0.1","port":"8080","target":{"kind":"Pod"}}],
            "sessionAffinityConfig":{"name":"cookie","mode":"persistent","cookieSessionAffinity":{
                "name":"route","expires":"3600","maxage":"60","locations":{"example.com":["/"]},
                "secure":true,"path":"/app","domain":"example.com","samesite":"None",
                "conditional_samesite_none":true,"change_on_failure":true}},
            "upstreamHashByConfig":{"upstream-hash-by":"$request_uri","upstream-hash-by-subset":true,
                "upstream-hash-by-subset-size":5},
            "load-balance":"ewma","noServer":true,
            "trafficShapingPolicy":{"weight":20,"weightTotal":100,"header":"X-Canary","headerValue":"yes",
                "headerPattern":"^y","cookie":"canary"},
            "alternativeBackends":["ns-svc-canary-80"],"unknownField":{"deep":[1,2]}}]"#)
        .unwrap();
        assert_eq!(b.name, "ns-svc-80");
        assert_eq!(b.service.unwrap().spec.service_type, "ClusterIP");
        assert_eq!(b.port, Some(IntOrString::Int(80)));
        assert!(b.ssl_passthrough);
        assert_eq!(b.endpoints, vec![EndpointSpec { address: "10.0.0.1".into(), port: "8080".into() }]);
        assert_eq!(b.session_affinity.name, "cookie");
        assert_eq!(b.session_affinity.mode, "persistent");
        let c = &b.session_affinity.cookie;
        assert_eq!(
            (c.name.as_str(), c.expires.as_str(), c.maxage.as_str(), c.path.as_str(), c.domain.as_str()),
            ("route", "3600", "60", "/app", "example.com")
        );
        assert!(c.secure && c.conditional_samesite_none && c.change_on_failure);
        assert_eq!(c.samesite, "None");
        assert_eq!(c.locations["example.com"], vec!["/".to_owned()]);
        assert_eq!(b.upstream_hash_by.hash_by, "$request_uri");
        assert!(b.upstream_hash_by.subset);
        assert_eq!(b.upstream_hash_by.subset_size, 5);
        assert_eq!(b.load_balance, "ewma");
        assert!(b.no_server);
        let p = &b.traffic_shaping_policy;
        assert_eq!((p.weight, p.weight_total), (20, 100));
        assert_eq!(
            (p.header.as_str(), p.header_value.as_str(), p.header_pattern.as_str(), p.cookie.as_str()),
            ("X-Canary", "yes", "^y", "canary")
        );
        assert_eq!(b.alternative_backends, vec!["ns-svc-canary-80".to_owned()]);
    }

    #[test]
    fn nulls_read_as_absent() {
        let b = one(r#"[{"name":"a","service":null,"endpoints":null,"alternativeBackends":null,
            "sessionAffinityConfig":{"name":"","cookieSessionAffinity":{"name":"","locations":null}},
            "upstreamHashByConfig":{},"trafficShapingPolicy":{"weight":0,"header":""}}]"#)
        .unwrap();
        assert!(b.endpoints.is_empty() && b.alternative_backends.is_empty() && b.service.is_none());
    }

    #[test]
    fn wrong_type_names_backend_and_field() {
        let e = one(r#"[{"name":"web","endpoints":[{"address":"10.0.0.1","port":"80"},{"address":7,"port":"80"}]}]"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("backend \"web\""), "{e}");
        assert!(e.contains("endpoints[1].address"), "{e}");
        let e = one(r#"[{"name":"web","trafficShapingPolicy":{"weight":"20"}}]"#).unwrap_err().to_string();
        assert!(e.contains("trafficShapingPolicy.weight"), "{e}");
        let e = one(r#"[{"name":"web","sslPassthrough":"yes"}]"#).unwrap_err().to_string();
        assert!(e.contains("backend \"web\": field `sslPassthrough`"), "{e}");
        // No usable name: the backend is named by its position.
        let e = one(r#"[{"name":5}]"#).unwrap_err().to_string();
        assert!(e.starts_with("backend #0: field `name`"), "{e}");
    }

    #[test]
    fn document_shape_errors() {
        assert_eq!(split_document(b"").unwrap_err(), ConfigError::Empty);
        assert_eq!(split_document(b"  \n").unwrap_err(), ConfigError::Empty);
        assert!(
            matches!(split_document(b"{\"name\":\"a\"}").unwrap_err(), ConfigError::Json(m) if m.contains("array"))
        );
        assert!(matches!(split_document(b"[{\"name\":").unwrap_err(), ConfigError::Json(_)));
        assert_eq!(split_document(b"[\"\xff\"]").unwrap_err(), ConfigError::Utf8 { offset: 2 });
        // Deep nesting is rejected with an error, not a stack overflow, wherever it is.
        let deep = format!("[{}{}]", "[".repeat(100_000), "]".repeat(100_000));
        assert!(
            matches!(split_document(deep.as_bytes()).unwrap_err(), ConfigError::Json(m) if m.contains("nested deeper"))
        );
        let deep_field = format!(r#"[{{"name":"a","x":{}{}}}]"#, "{\"k\":[".repeat(40), "]}".repeat(40));
        assert!(
            matches!(split_document(deep_field.as_bytes()).unwrap_err(), ConfigError::Json(m) if m.contains("nested deeper"))
        );
        // Brackets inside strings do not count.
        let in_string = format!(r#"[{{"name":"{}"}}]"#, "[{".repeat(1000));
        assert!(split_document(in_string.as_bytes()).is_ok());
    }

    #[test]
    fn split_finds_elements_and_checks_the_array() {
        fn ok(doc: &str) -> Vec<&str> {
            split_document(doc.as_bytes()).unwrap().into_iter().map(|(a, b)| &doc[a..b]).collect()
        }
        assert_eq!(ok("[]"), Vec::<&str>::new());
        assert_eq!(ok(" \n[ ]\t"), Vec::<&str>::new());
        assert_eq!(ok(r#"[{"a":1}]"#), vec![r#"{"a":1}"#]);
        assert_eq!(
            ok("[ {\"a\":[1,{\"b\":2}]} ,\n{\"c\":\"x,]}\"} ]"),
            vec![r#"{"a":[1,{"b":2}]}"#, r#"{"c":"x,]}"}"#]
        );
        // Escaped quotes and backslashes inside strings.
        assert_eq!(ok(r#"[{"n":"a\"],b\\"},{"m":"\\"}]"#), vec![r#"{"n":"a\"],b\\"}"#, r#"{"m":"\\"}"#]);
        // Exactly MAX_JSON_DEPTH levels, the array included, is fine; one more is not.
        let depth = |levels: usize| format!("[{}{}]", "[".repeat(levels - 1), "]".repeat(levels - 1));
        assert!(split_document(depth(MAX_JSON_DEPTH).as_bytes()).is_ok());
        assert!(split_document(depth(MAX_JSON_DEPTH + 1).as_bytes()).is_err());
        let err = |doc: &str| match split_document(doc.as_bytes()) {
            Err(ConfigError::Json(m)) => m,
            other => panic!("{doc}: {other:?}"),
        };
        assert!(err(r#"[{"a":1},]"#).contains("expected a backend object"));
        assert!(err(r#"[,{"a":1}]"#).contains("expected a backend object"));
        assert!(err(r#"[{"a":1}] x"#).contains("trailing characters"));
        assert!(err(r#"[{"a":1}]]"#).contains("trailing characters"));
        assert!(err(r#"[{"a":1}}]"#).contains("unexpected `}`"));
        assert!(err(r#"[{"a":"1}]"#).contains("unterminated string"));
        assert!(err(r#"[{"a":1}"#).contains("unexpected end"));
        assert!(err(r#"[{"a":[1}"#).contains("unexpected end"));
        assert!(err("true").contains("expected a JSON array"));
    }

    #[test]
    fn an_element_the_split_lets_through_is_decoded_strictly() {
        // Whatever the split accepts inside an element, decoding it rejects.
        for (doc, needle) in [
            (r#"[{"name":"a"} x]"#, "trailing characters"),
            (r#"[{"name":"a" "port":1}]"#, "expected"),
            (r#"[{"name":"a","x":[1}]]"#, "expected"),
            (r#"[42]"#, "invalid type"),
            (r#"[{"name":"a"} {"name":"b"}]"#, "trailing characters"),
        ] {
            let spans = split_document(doc.as_bytes()).unwrap_or_else(|e| panic!("{doc}: {e}"));
            let e = decode_backend(&doc[spans[0].0..spans[0].1], 0).unwrap_err().to_string();
            assert!(e.contains(needle), "{doc}: {e}");
        }
    }

    #[test]
    fn endpoint_validation() {
        let label = BackendLabel::Name("web");
        let ep = |a: &str, p: &str| EndpointSpec { address: a.into(), port: p.into() };
        assert_eq!(endpoint_addr(&label, 0, &ep("10.0.0.1", "80")).unwrap(), "10.0.0.1:80".parse().unwrap());
        assert_eq!(endpoint_addr(&label, 0, &ep("fd00::1", "8080")).unwrap(), "[fd00::1]:8080".parse().unwrap());
        assert_eq!(endpoint_addr(&label, 0, &ep("[fd00::1]", "8080")).unwrap(), "[fd00::1]:8080".parse().unwrap());
        for p in ["0", "65536", "abc", "", "-1", "+80", "99999999999"] {
            let e = endpoint_addr(&label, 3, &ep("10.0.0.1", p)).unwrap_err().to_string();
            assert!(e.contains("endpoints[3].port"), "{p}: {e}");
        }
        for a in ["example.com", "10.0.0", "", "10.0.0.1:80", "::g"] {
            let e = endpoint_addr(&label, 1, &ep(a, "80")).unwrap_err().to_string();
            assert!(e.contains("endpoints[1].address") && e.contains("backend \"web\""), "{a}: {e}");
        }
        assert_eq!(endpoint_addr(&label, 0, &ep("10.0.0.1", "65535")).unwrap().port(), 65535);
    }

    #[test]
    fn numeric_port_is_accepted() {
        let b = one(r#"[{"name":"a","endpoints":[{"address":"10.0.0.1","port":8080}]}]"#).unwrap();
        assert_eq!(b.endpoints[0].port, "8080");
    }
}
