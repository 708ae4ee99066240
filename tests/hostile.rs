//! Hostile configuration input and C ABI misuse (issue 6).
//!
//! Every hostile document goes through the C ABI (`ilb_core_validate_*` and
//! `ilb_core_apply_*`) and through the Rust API of a second core holding the same
//! configuration: each must be refused with the documented code and a message naming
//! what is wrong, and the configuration in force must stay exactly as it was (same
//! generations, same endpoints picked, same canaries, same certificate ids). Large
//! inputs are generated here, never checked in.
//!
//! The second half misuses the C ABI: NULL for every pointer parameter of every
//! export, zero and huge lengths, names that are not UTF-8 or hold NUL bytes, a pick
//! context reused across cores or filled with garbage, double initialisation. Every
//! call must return a documented code; none may crash.

#![cfg(feature = "capi")]

use std::collections::BTreeSet;
use std::ffi::{c_char, CStr};
use std::ptr::{null, null_mut};
use std::time::Instant;

use ingress_lb::ffi::certs::*;
use ingress_lb::ffi::*;
use ingress_lb::{ConfigError, Core, PickCtx, MAX_CONFIG_BYTES};
use serde_json::{json, Value};

const ERR_CAP: usize = 4096;
const HUGE: usize = isize::MAX as usize + 1;

// ---------------------------------------------------------------------------------
// Documents

fn pem(name: &str) -> String {
    let path = format!("{}/tests/data/certs/{name}.pem", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A backend with every field the model reads, all valid.
fn full_backend(name: &str) -> Value {
    json!({
        "name": name,
        "service": {"metadata": {"name": "svc"}, "spec": {"type": "ClusterIP"}},
        "port": 80,
        "sslPassthrough": false,
        "endpoints": [
            {"address": "10.9.0.1", "port": "8080"},
            {"address": "fd00::9", "port": 8080}
        ],
        "sessionAffinityConfig": {
            "name": "cookie",
            "mode": "balanced",
            "cookieSessionAffinity": {
                "name": "route", "expires": "3600", "maxage": "60",
                "locations": {"example.com": ["/"]}, "secure": true, "path": "/",
                "domain": "example.com", "samesite": "Lax",
                "conditional_samesite_none": true, "change_on_failure": true
            }
        },
        "upstreamHashByConfig": {
            "upstream-hash-by": "$request_uri",
            "upstream-hash-by-subset": false,
            "upstream-hash-by-subset-size": 3
        },
        "load-balance": "round_robin",
        "noServer": false,
        "trafficShapingPolicy": {
            "weight": 0, "weightTotal": 0, "header": "", "headerValue": "",
            "headerPattern": "", "cookie": ""
        },
        "alternativeBackends": ["web-canary"]
    })
}

/// The configuration in force in every check: a round-robin backend with a canary,
/// a chash backend, a sticky one.
fn good_backends() -> Vec<u8> {
    json!([
        {"name": "web", "endpoints": [
            {"address": "10.0.0.1", "port": "80"},
            {"address": "10.0.0.2", "port": "80"},
            {"address": "10.0.0.3", "port": "80"}],
         "alternativeBackends": ["web-canary"]},
        {"name": "web-canary", "noServer": true,
         "endpoints": [{"address": "10.0.1.1", "port": "80"}],
         "trafficShapingPolicy": {"weight": 20, "header": "X-Canary"}},
        {"name": "hash", "upstreamHashByConfig": {"upstream-hash-by": "$request_uri"},
         "endpoints": [{"address": "10.0.2.1", "port": "80"}]},
        {"name": "sticky", "sessionAffinityConfig": {"name": "cookie",
            "cookieSessionAffinity": {"name": "route"}},
         "endpoints": [{"address": "10.0.3.1", "port": "80"}]}
    ])
    .to_string()
    .into_bytes()
}

fn good_servers() -> Vec<u8> {
    json!({
        "certificates": {"e": pem("exact"), "d": pem("default")},
        "servers": {"exact.example.com": "e", "_": "d"}
    })
    .to_string()
    .into_bytes()
}

/// `[<victim>, the canary it names]` with `edit` applied to the victim.
fn victim_doc(edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut victim = full_backend("victim");
    edit(&mut victim);
    let canary = json!({"name": "web-canary", "noServer": true,
                        "endpoints": [{"address": "10.0.1.1", "port": "80"}]});
    Value::Array(vec![victim, canary]).to_string().into_bytes()
}

/// The value at a JSON pointer of `v` (which must exist).
fn at<'a>(v: &'a mut Value, pointer: &str) -> &'a mut Value {
    v.pointer_mut(pointer).unwrap_or_else(|| panic!("no {pointer}"))
}

// ---------------------------------------------------------------------------------
// A core through the C ABI, and the same configuration in a Rust core

struct Handle(*mut IlbCore);

impl Handle {
    fn new() -> Handle {
        let mut core = null_mut();
        // SAFETY: valid out-pointer.
        assert_eq!(unsafe { ilb_core_new(&mut core) }, IlbResult::Ok);
        assert!(!core.is_null());
        Handle(core)
    }

    /// One call of the (core, json, len, err, cap, err_len) shape: code, error text.
    fn call(&self, entry: Entry, doc: &[u8]) -> (IlbResult, String) {
        let mut err = vec![0x55 as c_char; ERR_CAP];
        let mut err_len = usize::MAX;
        let (core, d, n, e, el) = (self.0, doc.as_ptr(), doc.len(), err.as_mut_ptr(), &mut err_len as *mut usize);
        // SAFETY: live handle; doc and err valid for their lengths.
        let rc = unsafe {
            match entry {
                Entry::ApplyBackends => ilb_core_apply_backends(core, d, n, e, ERR_CAP, el),
                Entry::ValidateBackends => ilb_core_validate_backends(core, d, n, e, ERR_CAP, el),
                Entry::ApplyServers => ilb_core_apply_servers(core, d, n, e, ERR_CAP, el),
                Entry::ApplyAcceptedServers => ilb_core_apply_accepted_servers(core, d, n, e, ERR_CAP, el),
                Entry::ValidateServers => ilb_core_validate_servers(core, d, n, e, ERR_CAP, el),
            }
        };
        if rc == IlbResult::Ok {
            return (rc, String::new());
        }
        assert!(err_len < ERR_CAP, "err_len {err_len}");
        // SAFETY: written NUL-terminated by the call.
        let text = unsafe { CStr::from_ptr(err.as_ptr()) }.to_str().expect("error text is UTF-8").to_owned();
        assert_eq!(text.len(), err_len);
        (rc, text)
    }

    fn generation(&self) -> u64 {
        let mut g = u64::MAX;
        // SAFETY: live handle, valid out-pointer.
        assert_eq!(unsafe { ilb_core_generation(self.0, &mut g) }, IlbResult::Ok);
        g
    }

    fn pick(&self, name: &[u8], ctx: &mut PickCtx) -> Result<String, IlbResult> {
        let mut peer = std::mem::MaybeUninit::<IlbPeer>::uninit();
        // SAFETY: live handle; name, ctx, peer valid.
        let rc = unsafe { ilb_core_pick(self.0, name.as_ptr().cast(), name.len(), null(), ctx, peer.as_mut_ptr()) };
        if rc != IlbResult::Ok {
            return Err(rc);
        }
        // SAFETY: written on ILB_OK.
        let peer = unsafe { peer.assume_init() };
        // SAFETY: addr is NUL-terminated.
        Ok(unsafe { CStr::from_ptr(peer.addr.as_ptr()) }.to_str().unwrap().to_owned())
    }

    fn text(
        &self,
        f: unsafe extern "C" fn(*const IlbCore, *const c_char, usize, *mut c_char, usize, *mut usize) -> IlbResult,
        name: &[u8],
    ) -> Result<String, IlbResult> {
        let mut buf = [0 as c_char; 256];
        let mut len = 0;
        // SAFETY: live handle, buffers valid.
        let rc = unsafe { f(self.0, name.as_ptr().cast(), name.len(), buf.as_mut_ptr(), buf.len(), &mut len) };
        if rc != IlbResult::Ok {
            return Err(rc);
        }
        // SAFETY: NUL-terminated by the call.
        Ok(unsafe { CStr::from_ptr(buf.as_ptr()) }.to_str().unwrap().to_owned())
    }

    fn cert_id(&self, sni: &[u8]) -> Result<u64, IlbResult> {
        let mut id = 0;
        // SAFETY: live handle, valid pointers.
        match unsafe { ilb_core_certificate_lookup(self.0, sni.as_ptr().cast(), sni.len(), &mut id) } {
            IlbResult::Ok => Ok(id),
            rc => Err(rc),
        }
    }

    /// What must not change when a document is refused.
    fn state(&self) -> State {
        let mut ctx = PickCtx::new();
        let web: BTreeSet<String> = (0..3).map(|_| self.pick(b"web", &mut ctx).unwrap()).collect();
        let mut info = IlbBackendInfo { algorithm: 99, needs: 99 };
        // SAFETY: live handle, valid pointers.
        assert_eq!(unsafe { ilb_core_backend_info(self.0, b"hash".as_ptr().cast(), 4, &mut info) }, IlbResult::Ok);
        let mut sticky = IlbBackendInfo { algorithm: 99, needs: 99 };
        // SAFETY: as above.
        assert_eq!(unsafe { ilb_core_backend_info(self.0, b"sticky".as_ptr().cast(), 6, &mut sticky) }, IlbResult::Ok);
        State {
            generation: self.generation(),
            // SAFETY: live handle.
            servers_generation: unsafe { ilb_core_servers_generation(self.0) },
            web,
            canary: self.pick(b"web-canary", &mut PickCtx::new()).unwrap(),
            alternatives: self.text(ilb_core_backend_alternatives, b"web").unwrap(),
            algorithms: (info.algorithm, sticky.algorithm),
            certs: (self.cert_id(b"exact.example.com").unwrap(), self.cert_id(b"other.test").unwrap()),
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: created by ilb_core_new, freed once.
        unsafe { ilb_core_free(self.0) };
    }
}

#[derive(Debug, PartialEq, Eq)]
struct State {
    generation: u64,
    servers_generation: u64,
    web: BTreeSet<String>,
    canary: String,
    alternatives: String,
    algorithms: (u32, u32),
    certs: (u64, u64),
}

/// A C handle and a Rust core, both with the good backends and servers in force.
struct Fixture {
    c: Handle,
    rust: Core,
    before: State,
}

/// The document entry points of the C ABI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Entry {
    ApplyBackends,
    ValidateBackends,
    ApplyServers,
    ApplyAcceptedServers,
    ValidateServers,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Doc {
    Backends,
    Servers,
}

impl Fixture {
    fn new() -> Fixture {
        let c = Handle::new();
        assert_eq!(c.call(Entry::ApplyBackends, &good_backends()), (IlbResult::Ok, String::new()));
        assert_eq!(c.call(Entry::ApplyServers, &good_servers()), (IlbResult::Ok, String::new()));
        let rust = Core::new();
        rust.apply_backends(&good_backends()).unwrap();
        rust.apply_servers(&good_servers()).unwrap();
        let before = c.state();
        assert_eq!(before.web.len(), 3);
        assert_eq!(before.alternatives, "web-canary\n");
        assert_eq!(before.algorithms, (2, 4));
        assert_ne!(before.certs.0, before.certs.1);
        Fixture { c, rust, before }
    }

    /// `doc` is refused through every entry point with `code` (apply and validate; for
    /// servers also apply_accepted, except where `parse_only`), the message holds
    /// every needle, and nothing changed. Returns the message.
    fn refuse(&self, kind: Doc, doc: &[u8], code: IlbResult, needles: &[&str]) -> String {
        let entries = match kind {
            Doc::Backends => [Entry::ValidateBackends, Entry::ApplyBackends],
            Doc::Servers => [Entry::ValidateServers, Entry::ApplyServers],
        };
        let mut message = String::new();
        for entry in entries {
            let (rc, text) = self.c.call(entry, doc);
            assert_eq!(rc, code, "{entry:?}: {text} (document {})", preview(doc));
            for n in needles {
                assert!(text.contains(n), "{entry:?}: {text:?} lacks {n:?} (document {})", preview(doc));
            }
            assert!(!text.is_empty(), "{entry:?}: no message");
            if !message.is_empty() {
                assert_eq!(text, message, "validate and apply disagree");
            }
            message = text;
        }
        // The Rust API: the same message, nothing changed.
        let (before_doc, rust_err) = match kind {
            Doc::Backends => (self.rust.backends_json(), self.rust.apply_backends(doc).err()),
            Doc::Servers => (self.rust.servers_json(), self.rust.apply_servers(doc).err()),
        };
        let rust_err = rust_err.unwrap_or_else(|| panic!("{kind:?}: the Rust API accepted {}", preview(doc)));
        assert_eq!(rust_err.to_string(), message);
        let after_doc = match kind {
            Doc::Backends => self.rust.backends_json(),
            Doc::Servers => self.rust.servers_json(),
        };
        assert_eq!(before_doc, after_doc);
        assert_eq!((self.rust.generation(), self.rust.servers_generation()), (1, 1));
        assert_eq!(self.c.state(), self.before, "state changed after {}", preview(doc));
        message
    }

    fn refuse_backends(&self, doc: &[u8], needles: &[&str]) -> String {
        self.refuse(Doc::Backends, doc, IlbResult::ConfigRejected, needles)
    }

    fn refuse_servers(&self, doc: &[u8], needles: &[&str]) -> String {
        let msg = self.refuse(Doc::Servers, doc, IlbResult::ConfigRejected, needles);
        // What the other workers apply: the same answer (this one does not parse PEM).
        assert_eq!(self.c.call(Entry::ApplyAcceptedServers, doc), (IlbResult::ConfigRejected, msg.clone()));
        assert_eq!(self.c.state(), self.before);
        msg
    }
}

fn preview(doc: &[u8]) -> String {
    let s = String::from_utf8_lossy(&doc[..doc.len().min(200)]).into_owned();
    if doc.len() > 200 {
        format!("{s}… ({} bytes)", doc.len())
    } else {
        s
    }
}

// ---------------------------------------------------------------------------------
// Backends documents

#[test]
fn malformed_truncated_empty_and_non_array_backends() {
    let f = Fixture::new();
    f.refuse_backends(br#"[{"name":"web","endpoints":["#, &["invalid JSON"]);
    f.refuse_backends(br#"[{"name":"web",}]"#, &["invalid JSON"]);
    f.refuse_backends(br#"[{"name":"web"}] trailing"#, &["invalid JSON"]);
    f.refuse_backends(br#"[{"name":"web"}][]"#, &["invalid JSON"]);
    f.refuse_backends(b"[{'name':'web'}]", &["invalid JSON"]);
    f.refuse_backends(b"\x00", &["invalid JSON"]);
    // Every truncation of a full document.
    let full = victim_doc(|_| {});
    for n in 1..full.len() {
        f.refuse_backends(&full[..n], &["invalid JSON"]);
    }
    // Cut inside escapes, wherever they are.
    let escapes = br#"[{"name":"a\"b\\c\u00e9","x":["\\","\""]}]"#;
    for n in 1..escapes.len() {
        f.refuse_backends(&escapes[..n], &["invalid JSON"]);
    }
    // Empty.
    for empty in [&b""[..], b" ", b"\n\t\r "] {
        f.refuse_backends(empty, &["configuration is empty"]);
    }
    // Not an array of objects.
    for top in [&br#"{"name":"web","endpoints":[]}"#[..], b"\"web\"", b"42", b"null", b"true"] {
        f.refuse_backends(top, &["invalid JSON: expected a JSON array of backend objects"]);
    }
    for item in ["[1]", "[null]", "[\"web\"]", "[true]", "[[]]", r#"[["web",null,80]]"#] {
        f.refuse_backends(item.as_bytes(), &["backend #0: field `(backend)`"]);
    }
}

#[test]
fn wrong_types_for_every_field() {
    let f = Fixture::new();
    // The full backend itself is fine (with its canary).
    let c = Handle::new();
    assert_eq!(c.call(Entry::ApplyBackends, &victim_doc(|_| {})).0, IlbResult::Ok);

    let strings = [
        "/service/spec/type",
        "/endpoints/0/address",
        "/sessionAffinityConfig/name",
        "/sessionAffinityConfig/mode",
        "/sessionAffinityConfig/cookieSessionAffinity/name",
        "/sessionAffinityConfig/cookieSessionAffinity/expires",
        "/sessionAffinityConfig/cookieSessionAffinity/maxage",
        "/sessionAffinityConfig/cookieSessionAffinity/path",
        "/sessionAffinityConfig/cookieSessionAffinity/domain",
        "/sessionAffinityConfig/cookieSessionAffinity/samesite",
        "/sessionAffinityConfig/cookieSessionAffinity/locations/example.com/0",
        "/upstreamHashByConfig/upstream-hash-by",
        "/load-balance",
        "/trafficShapingPolicy/header",
        "/trafficShapingPolicy/headerValue",
        "/trafficShapingPolicy/headerPattern",
        "/trafficShapingPolicy/cookie",
        "/alternativeBackends/0",
    ];
    let bools = [
        "/sslPassthrough",
        "/noServer",
        "/sessionAffinityConfig/cookieSessionAffinity/secure",
        "/sessionAffinityConfig/cookieSessionAffinity/conditional_samesite_none",
        "/sessionAffinityConfig/cookieSessionAffinity/change_on_failure",
        "/upstreamHashByConfig/upstream-hash-by-subset",
    ];
    let numbers = [
        "/upstreamHashByConfig/upstream-hash-by-subset-size",
        "/trafficShapingPolicy/weight",
        "/trafficShapingPolicy/weightTotal",
    ];
    let arrays =
        ["/endpoints", "/alternativeBackends", "/sessionAffinityConfig/cookieSessionAffinity/locations/example.com"];
    let objects = [
        "/service",
        "/service/spec",
        "/endpoints/0",
        "/sessionAffinityConfig",
        "/sessionAffinityConfig/cookieSessionAffinity",
        "/sessionAffinityConfig/cookieSessionAffinity/locations",
        "/upstreamHashByConfig",
        "/trafficShapingPolicy",
    ];
    let mut cases: Vec<(&str, Value)> = Vec::new();
    for p in strings {
        cases.extend([json!(42), json!(true), json!([]), json!({}), json!(1.5)].map(|v| (p, v)));
    }
    for p in bools {
        cases.extend([json!("true"), json!(1), json!(0), json!([]), json!({})].map(|v| (p, v)));
    }
    for p in numbers {
        cases.extend(
            [json!("20"), json!(-1), json!(1.5), json!(4_294_967_296u64), json!(true), json!([]), json!({})]
                .map(|v| (p, v)),
        );
    }
    for p in arrays {
        cases.extend([json!("x"), json!({}), json!(1), json!(true)].map(|v| (p, v)));
    }
    for p in objects {
        // An array for an object: serde would read a struct from a sequence
        // positionally; the model must not.
        cases.extend([json!("x"), json!(1), json!(true), json!([]), json!(["a", "b"])].map(|v| (p, v)));
    }
    // `port` (a number or a port name) and endpoint ports.
    cases.extend([json!(true), json!([80]), json!({}), json!(1.5)].map(|v| ("/port", v)));
    cases.extend([json!(true), json!([80]), json!({}), json!(80.5)].map(|v| ("/endpoints/1/port", v)));
    let mut checked = 0;
    for (pointer, value) in cases {
        let doc = victim_doc(|b| *at(b, pointer) = value.clone());
        // The field as the message writes it: `a.b[0].c`.
        let mut field = String::new();
        for part in pointer[1..].split('/') {
            if part.bytes().all(|b| b.is_ascii_digit()) {
                field.push_str(&format!("[{part}]"));
            } else {
                if !field.is_empty() {
                    field.push('.');
                }
                field.push_str(part);
            }
        }
        f.refuse_backends(&doc, &["backend \"victim\": field `", &field]);
        checked += 1;
    }
    // `name`: the backend is then named by its position.
    for value in [json!(42), json!(true), json!([]), json!({}), json!(["victim"])] {
        let doc = victim_doc(|b| *at(b, "/name") = value.clone());
        f.refuse_backends(&doc, &["backend #0: field `name`"]);
        checked += 1;
    }
    let doc = victim_doc(|b| *at(b, "/name") = json!(""));
    f.refuse_backends(&doc, &["backend #0: field `name`: missing or empty"]);
    let doc = victim_doc(|b| *at(b, "/name") = Value::Null);
    f.refuse_backends(&doc, &["backend #0: field `name`: invalid type: null, expected a string"]);
    checked += 2;
    let doc = victim_doc(|b| {
        b.as_object_mut().unwrap().remove("name");
    });
    f.refuse_backends(&doc, &["backend #0: field `name`: missing or empty"]);
    eprintln!("wrong types: {} documents refused", checked + 1);
}

#[test]
fn invalid_values_names_and_alternatives() {
    let f = Fixture::new();
    let ep = |address: Value, port: Value| {
        victim_doc(|b| *at(b, "/endpoints/0") = json!({"address": address, "port": port}))
    };
    for port in [json!("0"), json!("65536"), json!("abc"), json!(""), json!("-1"), json!("+80"), json!("0x50")] {
        f.refuse_backends(
            &ep(json!("10.0.0.1"), port),
            &["field `endpoints[0].port`", "is not a port number in 1-65535"],
        );
    }
    for port in [json!(0), json!(65536), json!(-1), json!(1e3), json!(u64::MAX), json!(99_999_999_999_999_999_999.0)] {
        f.refuse_backends(&ep(json!("10.0.0.1"), port), &["field `endpoints[0].port`"]);
    }
    for address in
        ["", " ", "example.com", "10.0.0.256", "10.0.0.1:80", "10.0.0", "[::1", "fe80::1%eth0", "::g", "\u{0}"]
    {
        f.refuse_backends(
            &ep(json!(address), json!("80")),
            &["field `endpoints[0].address`", "is not an IPv4 or IPv6 address"],
        );
    }
    f.refuse_backends(br#"[{"name":"web"},{"name":"a"},{"name":"web"}]"#, &["backend \"web\": duplicate backend name"]);
    // Names with control characters, quotes, backslashes are escaped in messages
    // (a NUL would cut a C caller's text short).
    f.refuse_backends(
        br#"[{"name":"a\u0000\"\\b"},{"name":"a\u0000\"\\b"}]"#,
        &[r#"backend "a\0\"\\b": duplicate backend name"#],
    );
    f.refuse_backends(
        br#"[{"name":"a\u0000b\n","endpoints":[{"address":"x","port":"1"}]}]"#,
        &[r#"backend "a\0b\n": field `endpoints[0].address`: "x" is not"#],
    );
    f.refuse_backends(
        b"\x00[]",
        &[r#"invalid JSON: expected a JSON array of backend objects, found '\0' at byte offset 0"#],
    );
    f.refuse_backends(
        br#"[{"name":"web","alternativeBackends":["ghost"]}]"#,
        &["backend \"web\": field `alternativeBackends[0]`: no backend named \"ghost\""],
    );
    f.refuse_backends(
        br#"[{"name":"web","alternativeBackends":["web"]}]"#,
        &["backend \"web\": field `alternativeBackends[0]`: a backend cannot be its own alternative"],
    );
    f.refuse_backends(
        br#"[{"name":"web","alternativeBackends":["c"]},{"name":"c","alternativeBackends":["c"]}]"#,
        &["backend \"c\": field `alternativeBackends[0]`: a backend cannot be its own alternative"],
    );
}

#[test]
fn nesting_and_utf8() {
    let f = Fixture::new();
    // 64 levels are allowed: the array, the backend, 62 in an ignored field.
    let nested =
        |levels: usize| format!(r#"[{{"name":"web","x":{}{}}}]"#, "[".repeat(levels), "]".repeat(levels)).into_bytes();
    let c = Handle::new();
    assert_eq!(c.call(Entry::ApplyBackends, &nested(62)).0, IlbResult::Ok);
    f.refuse_backends(&nested(63), &["invalid JSON: nested deeper than 64 levels"]);
    // Deep enough to overflow a stack if anything recursed on it.
    let started = Instant::now();
    let deep = format!("{}{}", "[".repeat(1_000_000), "]".repeat(1_000_000)).into_bytes();
    f.refuse_backends(&deep, &["nested deeper than 64 levels at byte offset 64"]);
    let deep_objects = format!("[{}", "{\"a\":".repeat(200_000)).into_bytes();
    f.refuse_backends(&deep_objects, &["nested deeper than 64 levels"]);
    assert!(started.elapsed().as_secs() < 5, "deep nesting took {:?}", started.elapsed());
    // Brackets inside strings are text.
    let in_string = format!(r#"[{{"name":"web","x":"{}"}}]"#, "[{".repeat(1000));
    assert_eq!(c.call(Entry::ApplyBackends, in_string.as_bytes()).0, IlbResult::Ok);

    // Invalid UTF-8, wherever it is.
    f.refuse_backends(b"[{\"name\":\"w\xffb\"}]", &["not valid UTF-8 (first bad byte at offset 11)"]);
    f.refuse_backends(b"[{\"name\":\"web\",\"x\":\"\xc0\x80\"}]", &["not valid UTF-8"]);
    f.refuse_backends(b"[{\"name\":\"web\",\"x\":\"\xed\xa0\x80\"}]", &["not valid UTF-8"]);
    f.refuse_backends(b"\xef\xbb\xbf[]", &["invalid JSON"]);
    // A lone surrogate escape cannot become a Rust string.
    f.refuse_backends(br#"[{"name":"\ud800web"}]"#, &["invalid JSON: backend #0: unexpected end of hex escape"]);
}

#[test]
fn size_limits() {
    let f = Fixture::new();
    // Exactly the limit is read (a valid document padded with spaces) ...
    let mut doc = good_backends();
    doc.resize(MAX_CONFIG_BYTES, b' ');
    let c = Handle::new();
    assert_eq!(c.call(Entry::ValidateBackends, &doc), (IlbResult::Ok, String::new()));
    // ... one byte more is refused without being read, as is 64 MiB.
    doc.push(b' ');
    let msg = format!("configuration is {} bytes, over the limit of {MAX_CONFIG_BYTES} bytes", MAX_CONFIG_BYTES + 1);
    assert_eq!(f.refuse(Doc::Backends, &doc, IlbResult::InvalidArgument, &[]), msg);
    assert_eq!(f.refuse(Doc::Servers, &doc, IlbResult::InvalidArgument, &[]), msg);
    let huge = vec![b'['; 64 << 20];
    let msg = f.refuse(Doc::Backends, &huge, IlbResult::InvalidArgument, &["over the limit of 50331648 bytes"]);
    assert_eq!(msg, "configuration is 67108864 bytes, over the limit of 50331648 bytes");
    f.refuse(Doc::Servers, &huge, IlbResult::InvalidArgument, &["configuration is 67108864 bytes"]);
    assert_eq!(f.c.call(Entry::ApplyAcceptedServers, &huge).0, IlbResult::InvalidArgument);
    assert!(matches!(f.rust.apply_backends(&huge), Err(ConfigError::TooLarge { size: 67108864, limit: 50331648 })));
}

#[test]
fn ten_thousand_endpoints_and_twenty_thousand_backends_are_served() {
    let c = Handle::new();
    let eps: Vec<Value> = (0..10_000)
        .map(|i| json!({"address": format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255), "port": "80"}))
        .collect();
    let doc = json!([{"name": "big", "endpoints": eps}]).to_string().into_bytes();
    let started = Instant::now();
    assert_eq!(c.call(Entry::ApplyBackends, &doc).0, IlbResult::Ok);
    eprintln!("10 000 endpoints: {} bytes, applied in {:?}", doc.len(), started.elapsed());
    let mut ctx = PickCtx::new();
    let picked: BTreeSet<String> = (0..32).map(|_| c.pick(b"big", &mut ctx).unwrap()).collect();
    assert_eq!(picked.len(), 32, "retries never repeat an endpoint");

    // 20 000 backends of two endpoints each, as the controller writes them.
    let backends: Vec<Value> = (0..20_000)
        .map(|i| {
            let mut b = full_backend(&format!("ns-{i}-svc-80"));
            b.as_object_mut().unwrap().remove("alternativeBackends");
            b["sessionAffinityConfig"] = json!({"name": "", "mode": "", "cookieSessionAffinity": {"name": ""}});
            b["endpoints"] = json!([
                {"address": format!("10.1.{}.{}", i >> 8, i & 255), "port": "8080"},
                {"address": format!("10.2.{}.{}", i >> 8, i & 255), "port": "8080"}
            ]);
            b
        })
        .collect();
    let doc = Value::Array(backends).to_string().into_bytes();
    let started = Instant::now();
    assert_eq!(c.call(Entry::ApplyBackends, &doc).0, IlbResult::Ok);
    eprintln!("20 000 backends: {} bytes, applied in {:?}", doc.len(), started.elapsed());
    assert!(doc.len() < MAX_CONFIG_BYTES);
    assert_eq!(c.generation(), 2);
    for i in [0, 9_999, 19_999] {
        let name = format!("ns-{i}-svc-80");
        let mut ctx = PickCtx::new();
        let a = c.pick(name.as_bytes(), &mut ctx).unwrap();
        let b = c.pick(name.as_bytes(), &mut ctx).unwrap();
        assert_ne!(a, b);
        assert!(a.ends_with(":8080") && b.ends_with(":8080"));
    }
    assert_eq!(c.pick(b"big", &mut PickCtx::new()), Err(IlbResult::UnknownBackend));
}

// ---------------------------------------------------------------------------------
// Servers documents

#[test]
fn hostile_servers_documents() {
    let f = Fixture::new();
    f.refuse_servers(br#"{"certificates":{"e":"#, &["invalid servers JSON"]);
    f.refuse_servers(br#"{"certificates":{},}"#, &["invalid servers JSON"]);
    f.refuse_servers(br#"{"certificates":{}} {}"#, &["invalid servers JSON"]);
    let good = good_servers();
    for n in (1..good.len()).step_by(97).chain([1, 2, good.len() - 1]) {
        f.refuse_servers(&good[..n], &["invalid servers JSON"]);
    }
    for empty in [&b""[..], b" ", b"\r\n\t"] {
        f.refuse_servers(empty, &["servers configuration is empty"]);
    }
    for top in [&b"[]"[..], b"[{\"certificates\":{}}]", b"\"x\"", b"1", b"null", b"true"] {
        f.refuse_servers(top, &["invalid servers JSON"]);
    }
    // Wrong types.
    for v in ["\"x\"", "[]", "1", "true"] {
        f.refuse_servers(format!(r#"{{"certificates":{v},"servers":{{}}}}"#).as_bytes(), &["invalid servers JSON"]);
        if v == "\"x\"" {
            continue;
        }
        f.refuse_servers(format!(r#"{{"certificates":{{}},"servers":{v}}}"#).as_bytes(), &["invalid servers JSON"]);
        f.refuse_servers(
            format!(r#"{{"certificates":{{"e":{v}}},"servers":{{"exact.example.com":"e"}}}}"#).as_bytes(),
            &["certificate \"e\": expected the PEM text (a string)"],
        );
        f.refuse_servers(
            format!(r#"{{"certificates":{{}},"servers":{{"exact.example.com":{v}}}}}"#).as_bytes(),
            &["server \"exact.example.com\": expected a certificate uid (a string)"],
        );
    }
    f.refuse_servers(
        br#"{"certificates":{},"certificates":{},"servers":{}}"#,
        &["invalid servers JSON: duplicate field `certificates`"],
    );
    // Bad PEM.
    let doc = |p: &str| json!({"certificates": {"b": p}, "servers": {"exact.example.com": "b"}}).to_string();
    for (p, needle) in [
        ("".to_owned(), "certificate \"b\": no certificate in the PEM"),
        ("garbage".to_owned(), "certificate \"b\": no certificate in the PEM"),
        (pem("bad"), "certificate \"b\""),
        (pem("keyonly"), "certificate \"b\": no certificate in the PEM"),
        (
            pem("exact").split("-----BEGIN PRIVATE KEY").next().unwrap().to_owned(),
            "certificate \"b\": no private key in the PEM",
        ),
        (pem("mismatched"), "certificate \"b\": the private key does not match"),
        (pem("exact").replace("MII", "MIJ"), "certificate \"b\""),
        (pem("exact")[..600].to_owned(), "certificate \"b\""),
    ] {
        f.refuse(Doc::Servers, doc(&p).as_bytes(), IlbResult::ConfigRejected, &[needle]);
    }
    // Hostnames and uids.
    f.refuse_servers(
        br#"{"certificates":{},"servers":{"a.example.com":"nope"}}"#,
        &["no certificate with uid \"nope\""],
    );
    f.refuse_servers(br#"{"certificates":{},"servers":{"bad_name.example.com":"x"}}"#, &["not a valid DNS name"]);
    // Invalid UTF-8 and nesting.
    f.refuse_servers(b"{\"certificates\":{\"\xff\":\"x\"},\"servers\":{}}", &["invalid servers JSON"]);
    // Nesting deeper than 64 levels anywhere, fields nobody reads included, as for
    // the backends document.
    let deep = format!(r#"{{"x":{}{}}}"#, "[".repeat(1_000_000), "]".repeat(1_000_000));
    f.refuse_servers(deep.as_bytes(), &["nested deeper than 64 levels"]);
    let deep = format!(r#"{{"servers":{}{}}}"#, "[".repeat(100_000), "]".repeat(100_000));
    f.refuse_servers(deep.as_bytes(), &["nested deeper than 64 levels"]);
}

// ---------------------------------------------------------------------------------
// Error text buffers

#[test]
fn error_text_is_truncated_on_a_character_boundary() {
    let c = Handle::new();
    let doc = "[{\"name\":\"ééééé\"},{\"name\":\"ééééé\"}]".as_bytes();
    let full = "backend \"ééééé\": duplicate backend name";
    for cap in 0..full.len() + 3 {
        let mut err = vec![0x55 as c_char; cap + 1];
        let mut len = usize::MAX;
        let ptr = if cap == 0 { null_mut() } else { err.as_mut_ptr() };
        // SAFETY: live handle, err has cap writable bytes (or is NULL with cap 0).
        let rc = unsafe { ilb_core_apply_backends(c.0, doc.as_ptr(), doc.len(), ptr, cap, &mut len) };
        assert_eq!(rc, IlbResult::ConfigRejected);
        let want = {
            let mut n = full.len().min(cap.saturating_sub(1));
            while !full.is_char_boundary(n) {
                n -= 1;
            }
            n
        };
        assert_eq!(len, want, "cap {cap}");
        if cap > 0 {
            // SAFETY: NUL-terminated within cap.
            let text = unsafe { CStr::from_ptr(err.as_ptr()) }.to_str().unwrap();
            assert_eq!(text, &full[..want]);
            assert_eq!(err[cap], 0x55, "wrote past cap {cap}");
        }
    }
    // err NULL with a capacity, err_len NULL: the code only.
    // SAFETY: live handle; NULL err is never written.
    assert_eq!(
        unsafe { ilb_core_apply_backends(c.0, doc.as_ptr(), doc.len(), null_mut(), 100, null_mut()) },
        IlbResult::ConfigRejected
    );
}

// ---------------------------------------------------------------------------------
// C ABI misuse

fn name_of(rc: IlbResult) -> &'static str {
    // SAFETY: a static string.
    unsafe { CStr::from_ptr(ilb_result_name(rc as i32)) }.to_str().unwrap()
}

#[test]
fn null_pointers_everywhere() {
    use IlbResult::{NullArgument as N, Ok as OK};
    let f = Fixture::new();
    let core = f.c.0;
    let good = good_backends();
    let servers = good_servers();
    let mut err = [0 as c_char; 64];
    let mut len = 0usize;
    let mut g = 0u64;
    let mut ctx = PickCtx::new();
    let mut peer = std::mem::MaybeUninit::<IlbPeer>::uninit();
    let mut info = IlbBackendInfo { algorithm: 0, needs: 0 };
    let mut alt = 0u32;
    let mut id = 0u64;
    let name = b"web".as_ptr().cast::<c_char>();
    let e = err.as_mut_ptr();
    // SAFETY: every non-NULL pointer below is valid for its length; NULL ones are
    // what is checked.
    unsafe {
        assert!(!ilb_version().is_null() && ilb_abi_version() == ABI_VERSION);
        assert_eq!(ilb_core_new(null_mut()), N);
        ilb_core_free(null_mut());
        ilb_pick_ctx_init(null_mut());
        ilb_stats_free(null_mut());

        type Doc = unsafe extern "C" fn(*mut IlbCore, *const u8, usize, *mut c_char, usize, *mut usize) -> IlbResult;
        type ConstDoc =
            unsafe extern "C" fn(*const IlbCore, *const u8, usize, *mut c_char, usize, *mut usize) -> IlbResult;
        let docs: [(Doc, &[u8]); 3] = [
            (ilb_core_apply_backends, &good),
            (ilb_core_apply_servers, &servers),
            (ilb_core_apply_accepted_servers, &servers),
        ];
        let const_docs: [(ConstDoc, &[u8]); 2] =
            [(ilb_core_validate_backends, &good), (ilb_core_validate_servers, &servers)];
        for (fun, d) in docs {
            assert_eq!(fun(null_mut(), d.as_ptr(), d.len(), e, 64, &mut len), N);
            assert_eq!(CStr::from_ptr(e).to_str().unwrap(), "a required pointer argument is NULL");
            assert_eq!(fun(core, null(), 5, e, 64, &mut len), N);
            assert_eq!(fun(core, null(), 0, e, 64, &mut len), IlbResult::ConfigRejected, "(NULL, 0) is empty");
            assert!(CStr::from_ptr(e).to_str().unwrap().contains("empty"));
            assert_eq!(fun(core, d.as_ptr(), d.len(), null_mut(), 0, null_mut()), OK, "err and err_len optional");
        }
        for (fun, d) in const_docs {
            assert_eq!(fun(null(), d.as_ptr(), d.len(), e, 64, &mut len), N);
            assert_eq!(fun(core, null(), 5, null_mut(), 0, null_mut()), N);
            assert_eq!(fun(core, d.as_ptr(), d.len(), null_mut(), 0, null_mut()), OK);
        }

        let mut state = IlbApplyState::Idle;
        let (gp, gl) = (good.as_ptr(), good.len());
        assert_eq!(ilb_core_apply_backends_or_start(null_mut(), gp, gl, 0, &mut state, e, 64, &mut len), N);
        assert_eq!(ilb_core_apply_backends_or_start(core, null(), 5, 0, &mut state, e, 64, &mut len), N);
        assert_eq!(ilb_core_apply_backends_or_start(core, gp, gl, 0, null_mut(), e, 64, &mut len), N);
        assert_eq!(CStr::from_ptr(e).to_str().unwrap(), "a required pointer argument is NULL");
        assert_eq!(ilb_core_collect_backends(null_mut(), &mut state, e, 64, &mut len), N);
        assert_eq!(ilb_core_collect_backends(core, null_mut(), e, 64, &mut len), N);
        assert_eq!(ilb_core_collect_backends(core, &mut state, null_mut(), 0, null_mut()), OK);
        assert_eq!(state, IlbApplyState::Idle);
        assert_eq!(ilb_core_warnings(null(), e, 64, &mut len), N);
        assert_eq!(ilb_core_warnings(core, null_mut(), 64, &mut len), N);
        assert_eq!(ilb_core_warnings(core, null_mut(), 0, null_mut()), OK);
        assert_eq!(ilb_core_generation(null(), &mut g), N);
        assert_eq!(ilb_core_generation(core, null_mut()), N);
        assert_eq!(ilb_core_has_backend(null(), name, 3), N);
        assert_eq!(ilb_core_has_backend(core, null(), 3), N);
        assert_eq!(ilb_core_has_backend(core, null(), 0), IlbResult::UnknownBackend);

        assert_eq!(ilb_core_backend_info(null(), name, 3, &mut info), N);
        assert_eq!(ilb_core_backend_info(core, null(), 3, &mut info), N);
        assert_eq!(ilb_core_backend_info(core, name, 3, null_mut()), N);
        type Text =
            unsafe extern "C" fn(*const IlbCore, *const c_char, usize, *mut c_char, usize, *mut usize) -> IlbResult;
        let texts: [Text; 3] =
            [ilb_core_backend_hash_by, ilb_core_backend_alternatives, ilb_core_backend_route_headers];
        for t in texts {
            assert_eq!(t(null(), name, 3, e, 64, &mut len), N);
            assert_eq!(t(core, null(), 3, e, 64, &mut len), N);
            assert_eq!(t(core, name, 3, null_mut(), 64, &mut len), N);
            len = 0;
            assert_eq!(t(core, name, 3, null_mut(), 0, &mut len), OK, "ask for the length");
            assert_eq!(t(core, name, 3, e, 64, null_mut()), OK);
        }
        assert_eq!(ilb_core_backend_alternatives(core, name, 3, null_mut(), 0, &mut len), OK);
        assert_eq!(len, "web-canary\n".len());

        let hdr = IlbHeader { name: null(), name_len: 8, value: null(), value_len: 0 };
        assert_eq!(ilb_core_route(null(), name, 3, null(), 0, null(), 0, &mut alt), N);
        assert_eq!(ilb_core_route(core, null(), 3, null(), 0, null(), 0, &mut alt), N);
        assert_eq!(ilb_core_route(core, name, 3, null(), 4, null(), 0, &mut alt), N);
        assert_eq!(ilb_core_route(core, name, 3, null(), 0, null(), 1, &mut alt), N);
        assert_eq!(ilb_core_route(core, name, 3, null(), 0, &hdr, 1, &mut alt), N);
        let hdr = IlbHeader { name: c"X-Canary".as_ptr(), name_len: 8, value: null(), value_len: 6 };
        assert_eq!(ilb_core_route(core, name, 3, null(), 0, &hdr, 1, &mut alt), N);
        assert_eq!(ilb_core_route(core, name, 3, null(), 0, null(), 0, null_mut()), N);
        let hdr = IlbHeader { name: c"X-Canary".as_ptr(), name_len: 8, value: c"always".as_ptr(), value_len: 6 };
        assert_eq!(ilb_core_route(core, name, 3, null(), 0, &hdr, 1, &mut alt), OK);
        assert_eq!(alt, 1);

        let p = peer.as_mut_ptr();
        assert_eq!(ilb_core_pick(null(), name, 3, null(), &mut ctx, p), N);
        assert_eq!(ilb_core_pick(core, null(), 3, null(), &mut ctx, p), N);
        assert_eq!(ilb_core_pick(core, name, 3, null(), null_mut(), p), N);
        assert_eq!(ilb_core_pick(core, name, 3, null(), &mut ctx, null_mut()), N);
        let empty = IlbRequest {
            hash_key: null(),
            hash_key_len: 0,
            cookie: null(),
            cookie_len: 0,
            host: null(),
            host_len: 0,
            location_path: null(),
            location_path_len: 0,
            user_agent: null(),
            user_agent_len: 0,
            now: 0.0,
            https: 0,
            reserved: 0,
        };
        assert_eq!(ilb_core_pick(core, name, 3, &empty, &mut ctx, p), OK);
        for field in 0..5 {
            let mut r = empty;
            match field {
                0 => r.hash_key_len = 1,
                1 => r.cookie_len = 1,
                2 => r.host_len = 1,
                3 => r.location_path_len = 1,
                _ => r.user_agent_len = 1,
            }
            assert_eq!(ilb_core_pick(core, b"sticky".as_ptr().cast(), 6, &r, &mut ctx, p), N, "field {field}");
        }

        let (a, s, t) = (c"10.0.0.1:80".as_ptr(), c"200".as_ptr(), c"0.1".as_ptr());
        assert_eq!(ilb_core_observe(null(), name, 3, a, 11, s, 3, t, 3, t, 3, 0.0), N);
        assert_eq!(ilb_core_observe(core, null(), 3, a, 11, s, 3, t, 3, t, 3, 0.0), N);
        assert_eq!(ilb_core_observe(core, name, 3, null(), 11, s, 3, t, 3, t, 3, 0.0), N);
        assert_eq!(ilb_core_observe(core, name, 3, a, 11, null(), 3, t, 3, t, 3, 0.0), N);
        assert_eq!(ilb_core_observe(core, name, 3, a, 11, s, 3, null(), 3, t, 3, 0.0), N);
        assert_eq!(ilb_core_observe(core, name, 3, a, 11, s, 3, t, 3, null(), 3, 0.0), N);
        assert_eq!(ilb_core_observe(core, name, 3, a, 11, s, 3, t, 3, t, 3, f64::NAN), OK);

        let mut stats = null_mut();
        assert_eq!(ilb_stats_new(16, null_mut()), N);
        assert_eq!(ilb_stats_new(16, &mut stats), OK);
        assert_eq!(ilb_core_use_stats(null_mut(), stats), N);
        assert_eq!(ilb_core_use_stats(core, null_mut()), N);
        ilb_stats_free(stats);

        assert_eq!(ilb_core_servers_generation(null()), 0);
        assert_eq!(ilb_core_certificate_lookup(null(), null(), 0, &mut id), N);
        assert_eq!(ilb_core_certificate_lookup(core, null(), 3, &mut id), N);
        assert_eq!(ilb_core_certificate_lookup(core, null(), 0, null_mut()), N);
        assert_eq!(ilb_core_certificate_lookup(core, null(), 0, &mut id), OK, "no SNI: the default");
        assert_eq!(ilb_core_certificate_pem(null(), id, e, 64, &mut len), N);
        assert_eq!(ilb_core_certificate_pem(core, id, e, 64, null_mut()), N);
        assert_eq!(ilb_core_certificate_pem(core, id, null_mut(), 64, &mut len), N);
        assert_eq!(ilb_core_certificate_pem(core, id, null_mut(), 0, &mut len), IlbResult::InvalidArgument);
        assert!(len > 100, "the size it needs");
        assert_eq!(ilb_core_certificate_pem(core, 0, null_mut(), 0, &mut len), IlbResult::NoCertificate);
    }
    for rc in [N, OK, IlbResult::Panic, IlbResult::NoCertificate] {
        assert!(name_of(rc).starts_with("ILB_"));
    }
    for bad in [-1, 8, 1000, i32::MIN, i32::MAX] {
        // SAFETY: any int is accepted; static string.
        assert_eq!(unsafe { CStr::from_ptr(ilb_result_name(bad)) }.to_str().unwrap(), "ILB_UNKNOWN_RESULT");
    }
    assert_eq!(f.c.state(), f.before);
}

#[test]
fn zero_and_huge_lengths() {
    use IlbResult::InvalidArgument as I;
    let f = Fixture::new();
    let core = f.c.0;
    let mut err = [0 as c_char; 128];
    let e = err.as_mut_ptr();
    let mut len = 0usize;
    let mut ctx = PickCtx::new();
    let mut peer = std::mem::MaybeUninit::<IlbPeer>::uninit();
    let p = peer.as_mut_ptr();
    let mut info = IlbBackendInfo { algorithm: 0, needs: 0 };
    let mut alt = 0u32;
    let mut id = 0u64;
    // A real, short buffer: a huge length must be refused before anything reads it.
    let short = b"web";
    let s = short.as_ptr();
    let sc = s.cast::<c_char>();
    // SAFETY: the huge lengths are refused before the pointers are read; the rest
    // are valid.
    unsafe {
        for huge in [HUGE, usize::MAX] {
            for fun in [ilb_core_apply_backends, ilb_core_apply_servers, ilb_core_apply_accepted_servers] {
                assert_eq!(fun(core, s, huge, e, 128, &mut len), I);
                assert_eq!(CStr::from_ptr(e).to_str().unwrap(), "invalid argument");
            }
            assert_eq!(ilb_core_validate_backends(core, s, huge, e, 128, &mut len), I);
            let mut state = IlbApplyState::Idle;
            assert_eq!(ilb_core_apply_backends_or_start(core, s, huge, 0, &mut state, e, 128, &mut len), I);
            assert_eq!(ilb_core_validate_servers(core, s, huge, e, 128, &mut len), I);
            assert_eq!(ilb_core_has_backend(core, sc, huge), I);
            assert_eq!(ilb_core_backend_info(core, sc, huge, &mut info), I);
            assert_eq!(ilb_core_backend_hash_by(core, sc, huge, e, 128, &mut len), I);
            assert_eq!(ilb_core_backend_alternatives(core, sc, huge, e, 128, &mut len), I);
            assert_eq!(ilb_core_backend_route_headers(core, sc, huge, e, 128, &mut len), I);
            assert_eq!(ilb_core_pick(core, sc, huge, null(), &mut ctx, p), I);
            let mut r: IlbRequest = std::mem::zeroed();
            r.cookie = sc;
            r.cookie_len = huge;
            assert_eq!(ilb_core_pick(core, b"sticky".as_ptr().cast(), 6, &r, &mut ctx, p), I);
            assert_eq!(ilb_core_route(core, sc, huge, null(), 0, null(), 0, &mut alt), I);
            assert_eq!(ilb_core_route(core, sc, 3, sc, huge, null(), 0, &mut alt), I);
            let hdr = IlbHeader { name: sc, name_len: huge, value: sc, value_len: 3 };
            assert_eq!(ilb_core_route(core, sc, 3, null(), 0, &hdr, 1, &mut alt), I);
            let hdr = IlbHeader { name: sc, name_len: 3, value: sc, value_len: huge };
            assert_eq!(ilb_core_route(core, sc, 3, null(), 0, &hdr, 1, &mut alt), I);
            assert_eq!(ilb_core_route(core, sc, 3, null(), 0, &hdr, huge, &mut alt), I, "array length");
            assert_eq!(ilb_core_observe(core, sc, 3, sc, huge, null(), 0, null(), 0, null(), 0, 0.0), I);
            assert_eq!(ilb_core_observe(core, sc, huge, null(), 0, null(), 0, null(), 0, null(), 0, 0.0), I);
            assert_eq!(ilb_core_certificate_lookup(core, sc, huge, &mut id), I);
        }
        // headers_len whose byte size overflows, or just passes isize::MAX.
        let hdr = IlbHeader { name: sc, name_len: 3, value: sc, value_len: 3 };
        let per = std::mem::size_of::<IlbHeader>();
        for n in [usize::MAX / per + 1, HUGE / per + 1] {
            assert_eq!(ilb_core_route(core, sc, 3, null(), 0, &hdr, n, &mut alt), I);
        }
        // Zero lengths with real pointers: empty values.
        assert_eq!(ilb_core_apply_backends(core, s, 0, e, 128, &mut len), IlbResult::ConfigRejected);
        assert_eq!(ilb_core_apply_servers(core, s, 0, e, 128, &mut len), IlbResult::ConfigRejected);
        assert_eq!(ilb_core_has_backend(core, sc, 0), IlbResult::UnknownBackend);
        assert_eq!(ilb_core_pick(core, sc, 0, null(), &mut ctx, p), IlbResult::UnknownBackend);
        assert_eq!(ilb_core_route(core, sc, 3, sc, 0, &hdr, 0, &mut alt), IlbResult::Ok);
        assert_eq!(ilb_core_certificate_lookup(core, sc, 0, &mut id), IlbResult::Ok, "empty SNI: the default");
        let mut buf = [0 as c_char; 8];
        assert_eq!(ilb_core_backend_alternatives(core, sc, 3, buf.as_mut_ptr(), 0, &mut len), IlbResult::Ok);
        assert_eq!(buf[0], 0, "cap 0: nothing written");
        assert_eq!(ilb_core_backend_alternatives(core, sc, 3, buf.as_mut_ptr(), 1, &mut len), IlbResult::Ok);
        assert_eq!((buf[0], len), (0, 11), "cap 1: the NUL only, the full length");
        // An empty header array given with a non-NULL, misaligned pointer is fine;
        // a misaligned non-empty one is refused.
        let bytes = [0u8; 64];
        let misaligned = bytes.as_ptr().add(1).cast::<IlbHeader>();
        assert_eq!(ilb_core_route(core, sc, 3, null(), 0, misaligned, 0, &mut alt), IlbResult::Ok);
        assert_eq!(ilb_core_route(core, sc, 3, null(), 0, misaligned, 1, &mut alt), I);
        // ilb_stats_new: 0 and too many slots.
        let mut stats = null_mut();
        assert_eq!(ilb_stats_new(0, &mut stats), I);
        assert_eq!(ilb_stats_new(u32::MAX, &mut stats), I);
        assert!(stats.is_null(), "not written on failure");
    }
    assert_eq!(f.c.state(), f.before);
}

#[test]
fn odd_names() {
    let c = Handle::new();
    // A name with a NUL and one with non-ASCII text are names like any other.
    let doc = json!([
        {"name": "we\u{0}b", "endpoints": [{"address": "10.0.0.1", "port": "80"}]},
        {"name": "wéb", "endpoints": [{"address": "10.0.0.2", "port": "80"}]},
        {"name": "web", "endpoints": [{"address": "10.0.0.3", "port": "80"}]}
    ])
    .to_string();
    assert_eq!(c.call(Entry::ApplyBackends, doc.as_bytes()).0, IlbResult::Ok);
    let has = |n: &[u8]| {
        // SAFETY: live handle, name valid.
        unsafe { ilb_core_has_backend(c.0, n.as_ptr().cast(), n.len()) }
    };
    assert_eq!(c.pick(b"we\0b", &mut PickCtx::new()).unwrap(), "10.0.0.1:80");
    assert_eq!(c.pick("wéb".as_bytes(), &mut PickCtx::new()).unwrap(), "10.0.0.2:80");
    // A C string cut at its NUL, a longer length, a prefix: other names.
    assert_eq!(has(b"we"), IlbResult::UnknownBackend);
    assert_eq!(has(b"web\0"), IlbResult::UnknownBackend);
    assert_eq!(has(b"we\0b\0"), IlbResult::UnknownBackend);
    // Not UTF-8 (no backend can have such a name): unknown, never an error.
    for n in [&b"w\xffb"[..], b"\xc3", b"w\xc3\xa9b"[..3].as_ref(), b"\xed\xa0\x80"] {
        assert_eq!(has(n), IlbResult::UnknownBackend);
        assert_eq!(c.pick(n, &mut PickCtx::new()), Err(IlbResult::UnknownBackend));
        assert_eq!(c.text(ilb_core_backend_hash_by, n), Err(IlbResult::UnknownBackend));
        // SAFETY: live handle, valid buffers.
        unsafe {
            assert_eq!(
                ilb_core_observe(
                    c.0,
                    n.as_ptr().cast(),
                    n.len(),
                    n.as_ptr().cast(),
                    n.len(),
                    null(),
                    0,
                    null(),
                    0,
                    null(),
                    0,
                    0.0
                ),
                IlbResult::Ok
            );
        }
    }
    // SNI that is not UTF-8, has a NUL, or is longer than any hostname: the default.
    let s = Handle::new();
    assert_eq!(s.call(Entry::ApplyServers, &good_servers()).0, IlbResult::Ok);
    let default = s.cert_id(b"").unwrap();
    let long = vec![b'a'; 100_000];
    for sni in [&b"\xff\xfe"[..], b"exact.example.com\0", b"exact\0.example.com", &long, b"."] {
        assert_eq!(s.cert_id(sni), Ok(default), "{sni:?}");
    }
    assert_ne!(s.cert_id(b"EXACT.example.com."), Ok(default));
}

#[test]
fn pick_ctx_reused_across_cores_garbage_and_double_init() {
    let a = Handle::new();
    let b = Handle::new();
    let doc = good_backends();
    assert_eq!(a.call(Entry::ApplyBackends, &doc).0, IlbResult::Ok);
    // b has the same endpoints in another order, and one more.
    let other = br#"[{"name":"web","endpoints":[{"address":"10.0.0.3","port":"80"},{"address":"10.0.0.9","port":"80"},
        {"address":"10.0.0.1","port":"80"},{"address":"10.0.0.2","port":"80"}]}]"#;
    assert_eq!(b.call(Entry::ApplyBackends, other).0, IlbResult::Ok);
    // A context is plain data: what a request tried on one core is excluded on another.
    let mut ctx = PickCtx::new();
    let mut seen = BTreeSet::new();
    for _ in 0..2 {
        seen.insert(a.pick(b"web", &mut ctx).unwrap());
    }
    seen.insert(b.pick(b"web", &mut ctx).unwrap());
    seen.insert(b.pick(b"web", &mut ctx).unwrap());
    assert_eq!(seen.len(), 4, "{seen:?}");
    // Once every endpoint was tried, picks still answer.
    assert!(b.pick(b"web", &mut ctx).is_ok() && a.pick(b"web", &mut ctx).is_ok());
    // A context with any bytes in it (uninitialised memory, a corrupted tried_len).
    for fill in [0x00u8, 0xff, 0x41, 0x80] {
        let mut raw = [fill; std::mem::size_of::<PickCtx>()];
        raw[..4].copy_from_slice(&u32::MAX.to_ne_bytes());
        // SAFETY: PickCtx is repr(C) plain integers: every bit pattern is a value.
        let mut garbage: PickCtx = unsafe { std::mem::transmute(raw) };
        assert!(a.pick(b"web", &mut garbage).is_ok());
        assert!(a.pick(b"web", &mut garbage).is_ok());
    }
    // Double init: a context initialised twice, two cores created into one variable.
    let mut ctx = PickCtx::new();
    // SAFETY: valid contexts.
    unsafe {
        ilb_pick_ctx_init(&mut ctx);
        a.pick(b"web", &mut ctx).unwrap();
        ilb_pick_ctx_init(&mut ctx);
        ilb_pick_ctx_init(&mut ctx);
    }
    assert_eq!(ctx.attempts(), 0);
    let mut out = null_mut();
    // SAFETY: valid out-pointer; both cores are freed once.
    unsafe {
        assert_eq!(ilb_core_new(&mut out), IlbResult::Ok);
        let first = out;
        assert_eq!(ilb_core_new(&mut out), IlbResult::Ok);
        assert_ne!(first, out, "a new core each time; the first is still the caller's");
        ilb_core_free(first);
        ilb_core_free(out);
    }
    // Statistics handle released before the core using it; then the core.
    let mut stats = null_mut();
    let c = Handle::new();
    // SAFETY: valid handles, each released once.
    unsafe {
        assert_eq!(ilb_stats_new(64, &mut stats), IlbResult::Ok);
        assert_eq!(ilb_core_use_stats(c.0, stats), IlbResult::Ok);
        assert_eq!(ilb_core_use_stats(c.0, stats), IlbResult::Ok, "twice");
        ilb_stats_free(stats);
    }
    let ewma = br#"[{"name":"e","load-balance":"ewma","endpoints":[{"address":"10.0.0.1","port":"80"},{"address":"10.0.0.2","port":"80"}]}]"#;
    assert_eq!(c.call(Entry::ApplyBackends, ewma).0, IlbResult::Ok);
    assert!(c.pick(b"e", &mut PickCtx::new()).is_ok());
    // Applying the same document again, and applying to a fresh core twice.
    assert_eq!(c.call(Entry::ApplyBackends, ewma).0, IlbResult::Ok);
    assert_eq!(c.generation(), 1, "an identical document is not a new generation");
}
