//! The properties the fuzz targets check, shared with `tests/fuzz_regressions.rs`
//! (which includes this file with `#[path]`), so every input that once failed is
//! replayed by `cargo test` through exactly the same checks, without nightly.
//!
//! Only `ingress_lb`, `serde` and `serde_json` are used here: the root crate's
//! integration tests have nothing else.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, SocketAddr};

use ingress_lb::{Core, PickCtx, PickError, Request, COOKIE_MAX};

// ---------------------------------------------------------------------------------
// The backends configuration every target starts from: one backend per algorithm,
// and a primary with three canaries (header pattern, header always/never + cookie +
// sticky, an empty one).

/// (name, JSON fields spliced into the backend object, endpoints as "ip:port").
type BackendDef = (&'static str, &'static str, &'static [&'static str]);

const STICKY_B: &str = r#""sessionAffinityConfig":{"name":"cookie","cookieSessionAffinity":{"name":"route",
    "expires":"172800","maxage":"172800","domain":"example.com","secure":false,"samesite":"None",
    "conditional_samesite_none":true,"change_on_failure":false,
    "locations":{"example.com":["/","/app"],"*.example.com":["/"],"_":["/api"]}}}"#;
const STICKY_P: &str = r#""sessionAffinityConfig":{"name":"cookie","mode":"persistent","cookieSessionAffinity":{
    "name":"sp","path":"/p","samesite":"Lax","change_on_failure":true,"locations":{"example.com":["/"],"_":["/"]}}}"#;

/// The fixture's backends. `rr` lists 10.0.0.1:80 twice (counts once).
pub const BACKENDS: &[BackendDef] = &[
    ("rr", "", &["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80", "10.0.0.1:80", "[fd00::1]:8080"]),
    ("ewma", r#""load-balance":"ewma""#, &["10.0.1.1:80", "10.0.1.2:80", "10.0.1.3:80", "[fd00::11]:80"]),
    (
        "chash",
        r#""upstreamHashByConfig":{"upstream-hash-by":"$request_uri"}"#,
        &["10.0.2.1:80", "10.0.2.2:80", "10.0.2.3:80", "10.0.2.4:80", "[fd00::21]:443"],
    ),
    (
        "chashsubset",
        r#""upstreamHashByConfig":{"upstream-hash-by":"$request_uri","upstream-hash-by-subset":true,
            "upstream-hash-by-subset-size":2}"#,
        &["10.0.3.1:80", "10.0.3.2:80", "10.0.3.3:80", "10.0.3.4:80", "10.0.3.5:80"],
    ),
    ("sticky-b", STICKY_B, &["10.0.4.1:80", "10.0.4.2:80", "10.0.4.3:80", "[fd00::41]:80"]),
    ("sticky-p", STICKY_P, &["10.0.5.1:80", "10.0.5.2:80", "10.0.5.3:80"]),
    ("web", r#""alternativeBackends":["web-v2","web-v3","web-empty"]"#, &["10.0.6.1:80", "10.0.6.2:80"]),
    (
        "web-v2",
        r#""noServer":true,"trafficShapingPolicy":{"weight":20,"header":"X-Canary",
            "headerPattern":"^(beta|rc)-[0-9]+$"}"#,
        &["10.0.7.1:80", "10.0.7.2:80"],
    ),
    (
        "web-v3",
        r#""noServer":true,"trafficShapingPolicy":{"weight":30,"header":"X-Canary-V3","cookie":"canary"},
            "sessionAffinityConfig":{"name":"cookie","cookieSessionAffinity":{"name":"route",
            "locations":{"example.com":["/"]}}}"#,
        &["10.0.8.1:80", "10.0.8.2:80", "10.0.8.3:80"],
    ),
    ("web-empty", r#""noServer":true,"trafficShapingPolicy":{"weight":10,"cookie":"canary-empty"}"#, &[]),
];

/// The name every target uses to check that a configuration is in force.
pub const PROBE_BACKEND: &str = "rr";

fn endpoint_json(ep: &str) -> String {
    let (ip, port) = ep.rsplit_once(':').unwrap();
    format!(r#"{{"address":"{}","port":"{port}"}}"#, ip.trim_start_matches('[').trim_end_matches(']'))
}

/// Whether the variant configuration changes this backend: the canary family stays
/// (its text unchanged, the backends are reused: no pattern is compiled again).
fn varies(name: &str) -> bool {
    !name.starts_with("web")
}

/// The backends document of `defs`; `variant` drops each backend's first endpoint
/// and reverses the rest (a configuration change between two attempts), except for
/// the canary family.
pub fn backends_doc(defs: &[BackendDef], variant: bool) -> Vec<u8> {
    let parts: Vec<String> = defs
        .iter()
        .map(|(name, extra, eps)| {
            let eps: Vec<&str> =
                if variant && varies(name) { eps.iter().skip(1).rev().copied().collect() } else { eps.to_vec() };
            let eps: Vec<String> = eps.iter().map(|e| endpoint_json(e)).collect();
            let sep = if extra.is_empty() { "" } else { "," };
            format!(r#"{{"name":"{name}","endpoints":[{}]{sep}{extra}}}"#, eps.join(","))
        })
        .collect();
    format!("[{}]", parts.join(",")).into_bytes()
}

fn endpoints_of(defs: &[BackendDef], name: &str, variant: bool) -> Vec<SocketAddr> {
    let (_, _, eps) = defs.iter().find(|(n, _, _)| *n == name).expect("fixture backend");
    let eps: Vec<&str> = if variant && varies(name) { eps.iter().skip(1).copied().collect() } else { eps.to_vec() };
    eps.iter().map(|e| e.parse().unwrap()).collect()
}

/// A core with the fixture configuration in force.
pub fn fixture_core() -> Core {
    let core = Core::new();
    core.apply_backends(&backends_doc(BACKENDS, false)).expect("the fixture configuration is valid");
    core
}

// ---------------------------------------------------------------------------------
// backends_json: arbitrary bytes as a backends document.

/// What a backends configuration in force looks like from outside.
#[derive(Debug, PartialEq)]
struct BackendsState {
    generation: u64,
    doc: Option<Vec<u8>>,
    /// Whether the probe backend picks (which endpoint varies: round robin).
    probe: Result<(), PickError>,
    info: Option<String>,
    alternatives: Vec<String>,
    warnings: String,
}

fn backends_state(core: &Core) -> BackendsState {
    BackendsState {
        generation: core.generation(),
        doc: core.backends_json().map(|d| d.to_vec()),
        probe: core.pick(PROBE_BACKEND.as_bytes(), &mut PickCtx::new()).map(|_| ()),
        info: core.backend_info(PROBE_BACKEND.as_bytes()).map(|i| format!("{i:?}")),
        alternatives: core.alternatives(b"web"),
        warnings: core.warnings(),
    }
}

/// Apply `data` as a backends document to `core` (which has some valid configuration
/// in force). Never panics; a rejected document leaves everything as it was; an
/// accepted one is in force and every backend it names picks only its endpoints,
/// without repeating a tried one while another remains.
pub fn check_backends_json(core: &Core, data: &[u8]) {
    let before = backends_state(core);
    let before_peers = probe_peers(core);
    let valid = core.validate_backends(data);
    // The same document on a core with nothing in force: a document is split and
    // reused against the previous one, which must not change the outcome.
    let fresh = Core::new();
    let fresh_result = fresh.apply_backends(data);
    let result = core.apply_backends(data);
    // Accepted or rejected alike (the message may name another of the document's
    // faults: the reuse path reads it from another place).
    assert_eq!(
        result.is_ok(),
        fresh_result.is_ok(),
        "applied over the fixture and on an empty core, the document gives different outcomes: {:?} / {:?}",
        result.as_ref().map(|_| ()).map_err(|e| e.to_string()),
        fresh_result.as_ref().map(|_| ()).map_err(|e| e.to_string())
    );
    if result.is_ok() {
        assert_eq!(core.warnings(), fresh.warnings(), "warnings differ from an empty core's");
    }
    match result {
        Err(e) => {
            assert!(valid.is_err(), "validate accepted what apply rejected: {e}");
            let _ = e.to_string();
            assert_eq!(backends_state(core), before, "a rejected document changed the configuration in force ({e})");
            assert_eq!(probe_peers(core), before_peers);
        }
        Ok(report) => {
            assert!(valid.is_ok(), "apply accepted what validate rejected: {:?}", valid);
            if report.unchanged {
                assert_eq!(core.generation(), before.generation);
            } else {
                assert_eq!(core.generation(), before.generation + 1);
            }
            assert_eq!(core.backends_json().as_deref(), Some(data));
            check_accepted_backends(core, data);
            check_accepted_backends(&fresh, data);
            same_backends(core, &fresh, data);
        }
    }
}

/// Every backend the document names looks the same in `a` and `b`.
fn same_backends(a: &Core, b: &Core, data: &[u8]) {
    let Ok(serde_json::Value::Array(backends)) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    for name in backends.iter().filter_map(|b| b.get("name")?.as_str()) {
        let n = name.as_bytes();
        assert_eq!(a.backend_info(n), b.backend_info(n), "{name:?}");
        assert_eq!(a.alternatives(n), b.alternatives(n), "{name:?}");
        assert_eq!(a.route_headers(n), b.route_headers(n), "{name:?}");
        assert_eq!(a.hash_by(n, str::to_owned), b.hash_by(n, str::to_owned), "{name:?}");
        assert_eq!(a.check_backend(n), b.check_backend(n), "{name:?}");
    }
}

/// The distinct endpoints the probe backend picks in 16 attempts of one request.
fn probe_peers(core: &Core) -> Vec<SocketAddr> {
    let mut ctx = PickCtx::new();
    let mut out: Vec<SocketAddr> =
        (0..16).filter_map(|_| core.pick(PROBE_BACKEND.as_bytes(), &mut ctx).ok()).map(|p| p.addr).collect();
    out.sort();
    out.dedup();
    out
}

/// Picks on every backend of an accepted document.
fn check_accepted_backends(core: &Core, data: &[u8]) {
    let Ok(serde_json::Value::Array(backends)) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    for b in backends.iter().take(64) {
        let Some(name) = b.get("name").and_then(|n| n.as_str()) else { continue };
        let endpoints: Option<Vec<SocketAddr>> = match b.get("endpoints") {
            Some(serde_json::Value::Array(eps)) => eps.iter().map(endpoint_addr).collect(),
            _ => Some(Vec::new()),
        };
        let info = core.backend_info(name.as_bytes());
        assert!(info.is_some(), "backend {name:?} of an accepted document is unknown");
        let _ = core.route_headers(name.as_bytes());
        let _ = core.hash_by(name.as_bytes(), |h| h.len());
        // Route as a request with the canary cookies set, then pick on the answer.
        let alternatives = core.alternatives(name.as_bytes());
        let served = core
            .route_with(name.as_bytes(), b"canary=always; route=x", &[] as &[(&[u8], &[u8])], |alt| {
                alt.map(|(n, i)| (n.to_owned(), i))
            })
            .expect("the backend exists");
        if let Some((alt, i)) = &served {
            assert_eq!(alternatives.get(*i), Some(alt), "route_with's position and name disagree");
        }
        let req = Request {
            hash_key: b"/some/uri",
            cookie: b"route=abc|def",
            host: b"example.com",
            location_path: b"/",
            user_agent: b"curl/8",
            https: true,
            now: 1_700_000_000.5,
        };
        let Some(endpoints) = endpoints else {
            // An endpoint the model skips (ExternalName): only "no panic" is checked.
            let _ = core.pick_with(name.as_bytes(), &req, &mut PickCtx::new(), |_| ());
            continue;
        };
        let result = core.pick_with(name.as_bytes(), &req, &mut PickCtx::new(), |p| p.peer.addr());
        if endpoints.is_empty() {
            assert_eq!(result, Err(PickError::NoEndpoints), "{name:?}: a pick without endpoints");
            continue;
        }
        if let Ok(addr) = result {
            if !endpoints.contains(&addr) {
                // ExternalName services are skipped with a warning, so the set may be
                // smaller than listed, never larger.
                panic!("{name:?}: picked {addr}, not one of {endpoints:?}");
            }
        }
        let distinct: HashSet<SocketAddr> = endpoints.iter().copied().collect();
        if distinct.len() <= 16 {
            let mut ctx = PickCtx::new();
            let mut tried: Vec<SocketAddr> = Vec::new();
            for _ in 0..distinct.len() + 1 {
                let Ok((addr, cookie)) = core.pick_with(name.as_bytes(), &req, &mut ctx, |p| {
                    (p.peer.addr(), p.set_cookie.map(|c| cookie_bytes(&c)))
                }) else {
                    break;
                };
                assert!(distinct.contains(&addr), "{name:?}: picked {addr}, not one of {endpoints:?}");
                if tried.len() < distinct.len() {
                    assert!(!tried.contains(&addr), "{name:?}: {addr} picked again, tried {tried:?} of {distinct:?}");
                }
                if let Some(c) = cookie {
                    check_set_cookie(&c, None);
                }
                if !tried.contains(&addr) {
                    tried.push(addr);
                }
            }
        }
        core.observe(name.as_bytes(), b"10.0.0.1:80, 10.0.0.2:80", b"502, 200", b"0.001, 0.002", b"0.5, 0.01", 0.0);
    }
}

/// The socket address of an endpoint object, as the model reads it (`None` if it
/// does not parse: the document was then accepted for another reason, e.g. an
/// ExternalName service whose endpoints are skipped).
fn endpoint_addr(ep: &serde_json::Value) -> Option<SocketAddr> {
    let address = ep.get("address")?.as_str()?;
    let port: u16 = match ep.get("port")? {
        serde_json::Value::String(s) => s.trim().parse().ok()?,
        serde_json::Value::Number(n) => n.as_u64()?.try_into().ok()?,
        _ => return None,
    };
    let ip: IpAddr = address.trim_start_matches('[').trim_end_matches(']').parse().ok()?;
    Some(SocketAddr::new(ip, port))
}

// ---------------------------------------------------------------------------------
// pick: arbitrary request data on the fixture configuration.

/// One request against the fixture configuration (the fuzz target derives it with
/// `arbitrary`; regression files spell it in JSON).
#[derive(Debug, Clone, Default)]
pub struct PickCase {
    /// Which fixture backend the request is for (modulo the number of backends; the
    /// last value names an unknown backend).
    pub backend: u8,
    pub hash_key: Vec<u8>,
    pub cookie: Vec<u8>,
    pub host: Vec<u8>,
    pub location_path: Vec<u8>,
    pub user_agent: Vec<u8>,
    pub https: bool,
    pub now: f64,
    /// Request headers, names as received.
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
    /// Attempts (picks on one context) beyond the first, modulo 12.
    pub retries: u8,
    /// Publish the variant configuration after the first attempt (the tried set
    /// must survive it), and the fixture again at the end.
    pub reconfigure: bool,
    /// Prefix the `Cookie` header with the cookie a first pick of a new session set
    /// (a returning session), when the backend sets one.
    pub returning: bool,
    /// The log-phase variables given to `observe`; with `observe_picked`, the picked
    /// peers' addresses are put before `upstream_addr`.
    pub upstream_addr: Vec<u8>,
    pub upstream_status: Vec<u8>,
    pub connect_time: Vec<u8>,
    pub response_time: Vec<u8>,
    pub observe_picked: bool,
    pub observe_now: f64,
}

/// Run `case` on `core`, which has the fixture configuration in force (and has it
/// again on return). Never panics; every picked peer is an endpoint of the backend
/// that serves the request; no peer is picked twice while an untried one remains;
/// a canary decision names one of the backend's alternatives (never an empty one);
/// `Set-Cookie` values are well-formed header values.
pub fn check_pick(core: &Core, case: &PickCase) {
    let names: Vec<&str> = BACKENDS.iter().map(|(n, _, _)| *n).collect();
    let selected = case.backend as usize % (names.len() + 1);
    let Some(&name) = names.get(selected) else {
        let unknown = b"no-such-backend";
        assert_eq!(core.pick(unknown, &mut PickCtx::new()).unwrap_err(), PickError::UnknownBackend);
        assert!(core.route_with(unknown, &case.cookie, &(), |_| ()).is_err());
        core.observe(unknown, &case.upstream_addr, &case.upstream_status, &case.connect_time, &case.response_time, 0.0);
        return;
    };
    let headers: Vec<(&[u8], &[u8])> = case.headers.iter().map(|(n, v)| (n.as_slice(), v.as_slice())).collect();

    // A returning session: the cookie a new session of this backend would get.
    let mut cookie_header = Vec::new();
    if case.returning {
        let first = Request { host: b"example.com", location_path: b"/", ..Request::EMPTY };
        if let Ok(Some(c)) =
            core.pick_with(name.as_bytes(), &first, &mut PickCtx::new(), |p| p.set_cookie.map(|c| cookie_bytes(&c)))
        {
            let pair = c.split(|&b| b == b';').next().unwrap_or_default();
            cookie_header.extend_from_slice(pair);
            if !case.cookie.is_empty() {
                cookie_header.extend_from_slice(b"; ");
            }
        }
    }
    cookie_header.extend_from_slice(&case.cookie);

    // Canary routing, once per request.
    let alternatives = core.alternatives(name.as_bytes());
    let served = core
        .route_with(name.as_bytes(), &cookie_header, headers.as_slice(), |alt| alt.map(|(n, i)| (n.to_owned(), i)))
        .expect("fixture backend");
    let served = match served {
        None => name.to_owned(),
        Some((alt, i)) => {
            assert_eq!(alternatives.get(i), Some(&alt), "route_with's position and name disagree");
            assert_ne!(alt, "web-empty", "a canary without endpoints was chosen");
            alt
        }
    };
    let expected_route_headers = core.route_headers(name.as_bytes());
    assert!(expected_route_headers.iter().all(|h| h.bytes().all(|b| !b.is_ascii_uppercase() && b != b'-')));

    let req = Request {
        hash_key: &case.hash_key,
        cookie: &cookie_header,
        host: &case.host,
        location_path: &case.location_path,
        user_agent: &case.user_agent,
        https: case.https,
        now: case.now,
    };
    let mut ctx = PickCtx::new();
    let mut tried: Vec<SocketAddr> = Vec::new();
    let mut variant = false;
    let attempts = 1 + case.retries as usize % 12;
    for attempt in 0..attempts {
        if attempt == 1 && case.reconfigure {
            core.apply_backends(&backends_doc(BACKENDS, true)).expect("the variant configuration is valid");
            variant = true;
        }
        let endpoints = endpoints_of(BACKENDS, &served, variant);
        let result = core.pick_with(served.as_bytes(), &req, &mut ctx, |p| {
            assert_eq!(p.peer.text(), p.peer.addr().to_string());
            assert_eq!(p.peer.to_peer().addr, p.peer.addr());
            (p.peer.addr(), p.peer.index(), p.score, p.set_cookie.map(|c| (cookie_bytes(&c), c.name().to_owned())))
        });
        let (addr, index, score, cookie) = match result {
            Err(PickError::NoEndpoints) if endpoints.is_empty() => break,
            Err(e) => panic!("{served:?}: pick failed: {e}"),
            Ok(r) => r,
        };
        assert!(endpoints.contains(&addr), "{served:?}: picked {addr}, not one of {endpoints:?}");
        assert!((index as usize) < endpoints.len(), "{served:?}: index {index} out of {} endpoints", endpoints.len());
        let _ = score;
        let untried_remain = endpoints.iter().any(|e| !tried.contains(e));
        if untried_remain {
            assert!(!tried.contains(&addr), "{served:?}: {addr} picked again while untried remain; tried {tried:?}");
        }
        if let Some((c, name)) = cookie {
            check_set_cookie(&c, Some(&name));
        }
        if !tried.contains(&addr) {
            tried.push(addr);
        }
    }

    // The log phase.
    let mut addr_var = Vec::new();
    if case.observe_picked {
        for (i, a) in tried.iter().enumerate() {
            if i > 0 {
                addr_var.extend_from_slice(b", ");
            }
            addr_var.extend_from_slice(a.to_string().as_bytes());
        }
        if !case.upstream_addr.is_empty() {
            addr_var.extend_from_slice(b", ");
        }
    }
    addr_var.extend_from_slice(&case.upstream_addr);
    core.observe(
        served.as_bytes(),
        &addr_var,
        &case.upstream_status,
        &case.connect_time,
        &case.response_time,
        case.observe_now,
    );
    // A pick after the statistics moved still picks an endpoint.
    let endpoints = endpoints_of(BACKENDS, &served, variant);
    if let Ok(addr) = core.pick_with(served.as_bytes(), &req, &mut PickCtx::new(), |p| p.peer.addr()) {
        assert!(endpoints.contains(&addr), "{served:?}: picked {addr}, not one of {endpoints:?}");
    }
    if variant {
        core.apply_backends(&backends_doc(BACKENDS, false)).expect("the fixture configuration is valid");
    }
}

fn cookie_bytes(c: &ingress_lb::SetCookie<'_>) -> Vec<u8> {
    let mut buf = [0u8; COOKIE_MAX];
    let n = c.write_to(&mut buf).unwrap_or(0);
    buf[..n].to_vec()
}

/// A `Set-Cookie` value: `<name>=<value>` first, no control character anywhere (a
/// header injection), no `;` in the value.
fn check_set_cookie(value: &[u8], name: Option<&str>) {
    assert!(value.len() < COOKIE_MAX);
    assert!(
        value.iter().all(|&b| b >= 0x20 && b != 0x7f),
        "control character in Set-Cookie {:?}",
        String::from_utf8_lossy(value)
    );
    if value.is_empty() {
        return; // did not fit: nothing is sent
    }
    if let Some(name) = name {
        assert!(value.starts_with(format!("{name}=").as_bytes()), "{:?}", String::from_utf8_lossy(value));
    }
}

// ---------------------------------------------------------------------------------
// servers_json and sni_lookup: certificates.

pub const PEM_DEFAULT: &str = include_str!("../../tests/data/certs/default.pem");
pub const PEM_EXACT: &str = include_str!("../../tests/data/certs/exact.pem");
pub const PEM_WILDCARD: &str = include_str!("../../tests/data/certs/wildcard.pem");

/// The servers fixture: hostname → uid, in document order (`-1`: not served).
pub const SERVERS: &[(&str, &str)] = &[
    ("_", "d"),
    ("exact.example.com", "e"),
    ("Upper.Example.ORG", "e"),
    ("trailing.example.net.", "w"),
    ("*.b.example.com", "w"),
    ("*.example.com", "t"),
    ("*.xn--bcher-kva.example", "e"),
    ("localhost", "w"),
    ("gone.example.com", "-1"),
    ("*.gone.example.com", "-1"),
    (LONG_NAME, "t"),
    ("a-1.b-2.c-3.example.com", "w"),
];

/// A 253-byte hostname (the longest there is): three labels of 63 bytes and one of 61.
pub const LONG_NAME: &str = concat!(
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.",
    "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb.",
    "ccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc.",
    "ddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd"
);

/// The servers fixture document: certificates `d`, `e`, `w`, `t` (`t` shares the
/// wildcard's PEM: content is per uid) and `unused`, which no hostname refers to.
pub fn servers_doc() -> Vec<u8> {
    let certs = serde_json::json!({
        "d": PEM_DEFAULT, "e": PEM_EXACT, "w": PEM_WILDCARD, "t": PEM_WILDCARD, "unused": "not even a PEM",
    });
    let servers: serde_json::Map<String, serde_json::Value> =
        SERVERS.iter().map(|(h, u)| (h.to_string(), serde_json::Value::from(*u))).collect();
    serde_json::to_vec(&serde_json::json!({ "certificates": certs, "servers": servers })).unwrap()
}

/// Two cores with the servers fixture in force: one applied with `apply_servers`
/// (parsed), one with `apply_accepted_servers` (parsed at first use).
pub fn servers_cores() -> (Core, Core) {
    let parsed = Core::new();
    let deferred = Core::new();
    // "unused" is not parsed by either: no hostname refers to it.
    parsed.apply_servers(&servers_doc()).expect("the servers fixture is valid");
    deferred.apply_accepted_servers(&servers_doc()).expect("the servers fixture is valid");
    (parsed, deferred)
}

/// SNI names whose answers are compared before and after an apply.
const SNI_PROBES: &[&str] =
    &["exact.example.com", "x.b.example.com", "upper.example.org", "nothing.test", "x.example.com", "localhost"];

#[derive(Debug, PartialEq)]
struct ServersState {
    generation: u64,
    doc: Option<Vec<u8>>,
    answers: Vec<Option<(String, u64)>>,
}

fn servers_state(core: &Core) -> ServersState {
    let mut answers: Vec<Option<(String, u64)>> = SNI_PROBES
        .iter()
        .map(|n| core.certificate_with(Some(n.as_bytes()), |c| c.map(|c| (c.uid.to_owned(), c.id))))
        .collect();
    answers.push(core.certificate_with(None, |c| c.map(|c| (c.uid.to_owned(), c.id))));
    ServersState { generation: core.servers_generation(), doc: core.servers_json().map(|d| d.to_vec()), answers }
}

/// Apply `data` as a servers document to `core` with `apply_servers` (`parse`) or
/// `apply_accepted_servers`. Never panics; a rejected document changes nothing; an
/// accepted one is in force and serves each hostname it maps to a uid.
/// `restore`: the document to put back after an accepted one.
pub fn check_servers_json(core: &Core, data: &[u8], parse: bool, restore: &[u8]) {
    let before = servers_state(core);
    let valid = if parse { Some(core.validate_servers(data)) } else { None };
    let result = if parse { core.apply_servers(data) } else { core.apply_accepted_servers(data) };
    match result {
        Err(e) => {
            if let Some(v) = &valid {
                assert!(v.is_err(), "validate accepted what apply rejected: {e}");
            }
            let _ = e.to_string();
            assert_eq!(servers_state(core), before, "a rejected servers document changed what is in force ({e})");
        }
        Ok(report) => {
            if let Some(v) = &valid {
                assert!(v.is_ok(), "apply accepted what validate rejected: {v:?}");
            }
            let expected = before.generation + u64::from(!report.unchanged);
            assert_eq!(core.servers_generation(), expected);
            assert_eq!(core.servers_json().as_deref(), Some(data));
            assert!(report.certificates <= report.hostnames || report.hostnames == 0 && report.certificates == 0);
            check_accepted_servers(core, data, parse);
            if parse {
                core.apply_servers(restore).expect("restore");
            } else {
                core.apply_accepted_servers(restore).expect("restore");
            }
        }
    }
}

fn check_accepted_servers(core: &Core, data: &[u8], parse: bool) {
    let Ok(doc) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    let Some(servers) = doc.get("servers").and_then(|s| s.as_object()) else { return };
    for (hostname, uid) in servers {
        let Some(uid) = uid.as_str().filter(|u| *u != "-1") else { continue };
        let found = core.certificate_for_hostname_with(hostname.as_bytes(), |c| {
            c.map(|c| {
                if parse {
                    assert!(c.objects().is_some(), "an apply_servers certificate without objects");
                }
                (c.uid.to_owned(), c.id)
            })
        });
        let (found_uid, id) = found.unwrap_or_else(|| panic!("hostname {hostname:?} (uid {uid:?}) is not served"));
        // Several spellings of one hostname are accepted only with the same uid.
        assert_eq!(found_uid, uid, "hostname {hostname:?}");
        assert!(id != 0 && id < 1 << 53);
        let by_id = core.certificate_by_id_with(id, |c| c.map(|c| c.uid.to_owned()));
        assert_eq!(by_id.as_deref(), Some(found_uid.as_str()));
    }
}

fn normalise_ref(name: &[u8]) -> Vec<u8> {
    name.strip_suffix(b".").unwrap_or(name).to_ascii_lowercase()
}

/// ingress-nginx's lookup rules, written plainly over the fixture's list: the exact
/// hostname (lower case, one trailing dot stripped), else a one-label wildcard, else
/// `_`; no SNI: `_`; longer than 253 bytes: only `_`.
pub fn reference_lookup(sni: Option<&[u8]>) -> Option<&'static str> {
    let served = || SERVERS.iter().filter(|(_, uid)| *uid != "-1");
    let default = served().find(|(h, _)| *h == "_").map(|(_, u)| *u);
    let Some(sni) = sni else { return default };
    let name = normalise_ref(sni);
    if name.len() > 253 {
        return default;
    }
    if let Some((_, uid)) = served().find(|(h, _)| !h.starts_with("*.") && normalise_ref(h.as_bytes()) == name) {
        return Some(uid);
    }
    // Replace the first label (at least one byte, up to the first dot) by `*`.
    if let Some(dot) = name.iter().position(|&b| b == b'.') {
        if dot > 0 {
            let mut wild = b"*".to_vec();
            wild.extend_from_slice(&name[dot..]);
            if let Some((_, uid)) = served().find(|(h, _)| normalise_ref(h.as_bytes()) == wild) {
                return Some(uid);
            }
        }
    }
    default
}

/// Exactly the hostname (a `*.` entry by its own spelling), no fallback.
pub fn reference_hostname(hostname: &[u8]) -> Option<&'static str> {
    let name = normalise_ref(hostname);
    if name.len() > 253 {
        return None;
    }
    SERVERS.iter().filter(|(_, uid)| *uid != "-1").find(|(h, _)| normalise_ref(h.as_bytes()) == name).map(|(_, u)| *u)
}

/// Look `sni` up in both cores (the servers fixture in force) and compare with the
/// reference; also the hostname lookup and the id round trip. `data` empty means a
/// handshake without SNI as well.
pub fn check_sni(parsed: &Core, deferred: &Core, data: &[u8]) {
    let mut cases: Vec<Option<&[u8]>> = vec![Some(data)];
    if data.is_empty() {
        cases.push(None);
    }
    for sni in cases {
        let want = reference_lookup(sni);
        for core in [parsed, deferred] {
            let got = core.certificate_with(sni, |c| c.map(|c| (c.uid.to_owned(), c.id, c.pem.len())));
            assert_eq!(got.as_ref().map(|g| g.0.as_str()), want, "SNI {:?}", sni.map(String::from_utf8_lossy));
            if let Some((uid, id, pem_len)) = got {
                assert!(["d", "e", "w", "t"].contains(&uid.as_str()));
                assert!(pem_len > 0);
                assert_eq!(core.certificate_by_id_with(id, |c| c.map(|c| c.uid.to_owned())), Some(uid));
            }
        }
        let a = parsed.certificate_with(sni, |c| c.map(|c| c.id));
        let b = deferred.certificate_with(sni, |c| c.map(|c| c.id));
        assert_eq!(a, b, "the two ways of applying give different ids");
    }
    let want = reference_hostname(data);
    for core in [parsed, deferred] {
        let got = core.certificate_for_hostname_with(data, |c| c.map(|c| c.uid.to_owned()));
        assert_eq!(got.as_deref(), want, "hostname {:?}", String::from_utf8_lossy(data));
    }
}

// ---------------------------------------------------------------------------------
// Regression files of the pick target: JSON, byte strings as text or byte arrays,
// numbers as JSON numbers or as text ("NaN", "inf").

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum JsonBytes {
    Text(String),
    Bytes(Vec<u8>),
}

impl JsonBytes {
    fn into_vec(self) -> Vec<u8> {
        match self {
            JsonBytes::Text(s) => s.into_bytes(),
            JsonBytes::Bytes(b) => b,
        }
    }
}

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum JsonNumber {
    Number(f64),
    Text(String),
}

impl JsonNumber {
    fn value(&self) -> f64 {
        match self {
            JsonNumber::Number(n) => *n,
            JsonNumber::Text(s) => s.parse().expect("a number"),
        }
    }
}

/// Parse a pick regression case: an object with the fields of [`PickCase`], each
/// optional.
pub fn pick_case_from_json(text: &[u8]) -> PickCase {
    let map: BTreeMap<String, serde_json::Value> = serde_json::from_slice(text).expect("a JSON object");
    let mut case = PickCase::default();
    for (key, value) in map {
        let bytes = || serde_json::from_value::<JsonBytes>(value.clone()).expect("bytes").into_vec();
        let number = || serde_json::from_value::<JsonNumber>(value.clone()).expect("number").value();
        let flag = || value.as_bool().expect("a boolean");
        match key.as_str() {
            "backend" => case.backend = value.as_u64().expect("backend: 0-255") as u8,
            "hash_key" => case.hash_key = bytes(),
            "cookie" => case.cookie = bytes(),
            "host" => case.host = bytes(),
            "location_path" => case.location_path = bytes(),
            "user_agent" => case.user_agent = bytes(),
            "https" => case.https = flag(),
            "now" => case.now = number(),
            "headers" => {
                let pairs: Vec<(JsonBytes, JsonBytes)> = serde_json::from_value(value.clone()).expect("headers");
                case.headers = pairs.into_iter().map(|(n, v)| (n.into_vec(), v.into_vec())).collect();
            }
            "retries" => case.retries = value.as_u64().expect("retries: 0-255") as u8,
            "reconfigure" => case.reconfigure = flag(),
            "returning" => case.returning = flag(),
            "upstream_addr" => case.upstream_addr = bytes(),
            "upstream_status" => case.upstream_status = bytes(),
            "connect_time" => case.connect_time = bytes(),
            "response_time" => case.response_time = bytes(),
            "observe_picked" => case.observe_picked = flag(),
            "observe_now" => case.observe_now = number(),
            "comment" => {}
            other => panic!("unknown field {other:?} in a pick case"),
        }
    }
    case
}
