//! The certificate store: lookup rules, replacement, reuse, rejection, scale.
//!
//! `cargo test --lib certs -- --nocapture` shows the memory figures of the
//! 100 000-hostname test.

use super::*;

const DEFAULT: &str = include_str!("../../tests/data/certs/default.pem");
const EXACT: &str = include_str!("../../tests/data/certs/exact.pem");
const EXACT_V2: &str = include_str!("../../tests/data/certs/exact-v2.pem");
const WILDCARD: &str = include_str!("../../tests/data/certs/wildcard.pem");
const WILDCARD_TOP: &str = include_str!("../../tests/data/certs/wildcard-top.pem");
const OTHER: &str = include_str!("../../tests/data/certs/other.pem");
const CHAIN: &str = include_str!("../../tests/data/certs/chain.pem");
const MISMATCHED: &str = include_str!("../../tests/data/certs/mismatched.pem");
const BAD: &str = include_str!("../../tests/data/certs/bad.pem");
const KEYONLY: &str = include_str!("../../tests/data/certs/keyonly.pem");
const EXACT_CRT: &str = include_str!("../../tests/data/certs/exact.crt");

fn doc(certs: &[(&str, &str)], servers: &[(&str, &str)]) -> Vec<u8> {
    let certs: serde_json::Map<String, serde_json::Value> =
        certs.iter().map(|(u, p)| (u.to_string(), serde_json::Value::from(*p))).collect();
    let servers: serde_json::Map<String, serde_json::Value> =
        servers.iter().map(|(h, u)| (h.to_string(), serde_json::Value::from(*u))).collect();
    serde_json::to_vec(&serde_json::json!({ "certificates": certs, "servers": servers })).unwrap()
}

/// The usual document: default, an exact host, a one-label wildcard, a top wildcard.
fn standard() -> Vec<u8> {
    doc(
        &[("d", DEFAULT), ("e", EXACT), ("w", WILDCARD), ("t", WILDCARD_TOP), ("o", OTHER)],
        &[
            ("_", "d"),
            ("exact.example.com", "e"),
            ("*.b.example.com", "w"),
            ("*.example.com", "t"),
            ("gone.example.com", "-1"),
        ],
    )
}

fn uid_for(core: &Core, sni: Option<&str>) -> Option<String> {
    core.certificate_with(sni.map(str::as_bytes), |c| c.map(|c| c.uid.to_string()))
}

fn cn(core: &Core, sni: Option<&str>) -> Option<String> {
    core.certificate_with(sni.map(str::as_bytes), |c| {
        c.map(|c| {
            let e =
                c.objects().unwrap().leaf.subject_name().entries_by_nid(openssl::nid::Nid::COMMONNAME).next().unwrap();
            e.data().to_string().unwrap()
        })
    })
}

#[test]
fn empty_core_has_no_certificate() {
    let core = Core::new();
    assert_eq!(uid_for(&core, Some("exact.example.com")), None);
    assert_eq!(uid_for(&core, None), None);
    assert_eq!(core.servers_generation(), 0);
    assert_eq!(core.servers_json(), None);
    core.certificate_for_hostname_with(b"_", |c| assert!(c.is_none()));
    core.certificate_by_id_with(1, |c| assert!(c.is_none()));
}

#[test]
fn lookup_rules() {
    let core = Core::new();
    let report = core.apply_servers(&standard()).unwrap();
    assert_eq!(
        report,
        ServersReport { hostnames: 4, certificates: 4, parsed: 4, deferred: 0, reused: 0, unchanged: false },
        "`o` is referenced by no hostname: dropped"
    );
    assert_eq!(core.servers_generation(), 1);
    // exact
    assert_eq!(uid_for(&core, Some("exact.example.com")).as_deref(), Some("e"));
    assert_eq!(cn(&core, Some("exact.example.com")).as_deref(), Some("exact.example.com"));
    // case and one trailing dot
    assert_eq!(uid_for(&core, Some("EXACT.Example.COM")).as_deref(), Some("e"));
    assert_eq!(uid_for(&core, Some("exact.example.com.")).as_deref(), Some("e"));
    assert_eq!(uid_for(&core, Some("Exact.Example.Com.")).as_deref(), Some("e"));
    // two trailing dots: neither that name nor `*.example.com.`
    assert_eq!(uid_for(&core, Some("exact.example.com..")).as_deref(), Some("d"));
    // one-label wildcard
    assert_eq!(uid_for(&core, Some("a.b.example.com")).as_deref(), Some("w"));
    assert_eq!(uid_for(&core, Some("A.B.EXAMPLE.COM.")).as_deref(), Some("w"));
    assert_eq!(cn(&core, Some("a.b.example.com")).as_deref(), Some("*.b.example.com"));
    // two labels below *.example.com: *.b.example.com, never *.example.com
    assert_eq!(uid_for(&core, Some("b.example.com")).as_deref(), Some("t"));
    assert_eq!(uid_for(&core, Some("x.c.example.com")).as_deref(), Some("d"), "not matched by *.example.com");
    assert_eq!(uid_for(&core, Some("x.a.b.example.com")).as_deref(), Some("d"), "not matched by *.b.example.com");
    // the wildcard itself as a name
    assert_eq!(uid_for(&core, Some("*.b.example.com")).as_deref(), Some("w"));
    // the bare domain of a wildcard is not matched by it
    assert_eq!(uid_for(&core, Some("example.com")).as_deref(), Some("d"));
    // unknown, empty, odd names, no SNI, "-1" → default
    for sni in ["unknown.test", "", ".", ".example.com", "gone.example.org", "\u{e9}.example.org\u{0}"] {
        assert_eq!(uid_for(&core, Some(sni)).as_deref(), Some("d"), "{sni:?}");
    }
    assert_eq!(uid_for(&core, None).as_deref(), Some("d"));
    // a hostname mapped to "-1" is not served as such
    assert_eq!(uid_for(&core, Some("gone.example.com")).as_deref(), Some("t"), "*.example.com");
    // over 253 bytes: only `_`
    let long = format!("{}.example.com", "a".repeat(250));
    assert_eq!(uid_for(&core, Some(&long)).as_deref(), Some("d"));
    let label63 = "a".repeat(63);
    let longest = format!("{label63}.{label63}.{label63}.{}", "b".repeat(61));
    assert_eq!(longest.len(), 253);
    assert_eq!(uid_for(&core, Some(&longest)).as_deref(), Some("d"));

    // exact hostname only, no fallback
    let exact = |h: &str| core.certificate_for_hostname_with(h.as_bytes(), |c| c.map(|c| c.uid.to_string()));
    assert_eq!(exact("exact.example.com").as_deref(), Some("e"));
    assert_eq!(exact("EXACT.example.com.").as_deref(), Some("e"));
    assert_eq!(exact("*.b.example.com").as_deref(), Some("w"));
    assert_eq!(exact("_").as_deref(), Some("d"));
    assert_eq!(exact("a.b.example.com"), None);
    assert_eq!(exact("unknown.test"), None);
    assert_eq!(exact("gone.example.com"), None);
    assert_eq!(exact(&long), None);

    // by id
    let (id, pem) = core.certificate_with(Some(b"exact.example.com"), |c| {
        let c = c.unwrap();
        (c.id, c.pem.to_vec())
    });
    assert_eq!(pem, EXACT.as_bytes());
    assert!(id > 0 && id < 1 << 53);
    assert_eq!(id, cert_id("e", EXACT.as_bytes()));
    assert_eq!(core.certificate_by_id_with(id, |c| c.map(|c| c.uid.to_string())).as_deref(), Some("e"));
    assert_eq!(core.certificate_by_id_with(id ^ 1, |c| c.map(|c| c.uid.to_string())), None);
}

#[test]
fn no_default_means_none_on_a_miss() {
    let core = Core::new();
    core.apply_servers(&doc(&[("e", EXACT)], &[("exact.example.com", "e")])).unwrap();
    assert_eq!(uid_for(&core, Some("exact.example.com")).as_deref(), Some("e"));
    assert_eq!(uid_for(&core, Some("other.example.com")), None);
    assert_eq!(uid_for(&core, None), None);
}

#[test]
fn chain_key_and_intermediates() {
    let core = Core::new();
    core.apply_servers(&doc(&[("c", CHAIN)], &[("chain.example.com", "c")])).unwrap();
    core.certificate_with(Some(b"chain.example.com"), |c| {
        let c = c.unwrap();
        let o = c.objects().unwrap();
        assert_eq!(o.chain.len(), 1);
        let issuer = o.chain[0].subject_name().entries_by_nid(openssl::nid::Nid::COMMONNAME).next().unwrap();
        assert_eq!(issuer.data().to_string().unwrap(), "ingress-lb test CA");
        assert!(o.leaf.public_key().unwrap().public_eq(o.key));
        assert_eq!(c.pem, CHAIN.as_bytes());
    });
    core.apply_servers(&standard()).unwrap();
    core.certificate_with(Some(b"exact.example.com"), |c| assert!(c.unwrap().objects().unwrap().chain.is_empty()));
}

#[test]
fn removal_by_minus_one_and_by_absence() {
    let core = Core::new();
    core.apply_servers(&standard()).unwrap();
    // "-1"
    let d = doc(
        &[("d", DEFAULT), ("e", EXACT), ("w", WILDCARD)],
        &[("_", "d"), ("exact.example.com", "-1"), ("*.b.example.com", "w")],
    );
    let r = core.apply_servers(&d).unwrap();
    assert_eq!(r, ServersReport { hostnames: 2, certificates: 2, parsed: 0, deferred: 0, reused: 2, unchanged: false });
    assert_eq!(uid_for(&core, Some("exact.example.com")).as_deref(), Some("d"));
    core.certificate_for_hostname_with(b"exact.example.com", |c| assert!(c.is_none()));
    // absence, the default included
    let d = doc(&[("w", WILDCARD)], &[("*.b.example.com", "w")]);
    core.apply_servers(&d).unwrap();
    assert_eq!(uid_for(&core, Some("a.b.example.com")).as_deref(), Some("w"));
    assert_eq!(uid_for(&core, Some("exact.example.com")), None);
    assert_eq!(uid_for(&core, None), None);
    // an empty document empties the store
    let r = core.apply_servers(br#"{"certificates":{},"servers":{}}"#).unwrap();
    assert_eq!(r, ServersReport::default());
    assert_eq!(uid_for(&core, Some("a.b.example.com")), None);
    // null maps, as Go encodes nil maps
    core.apply_servers(br#"{"certificates":null,"servers":null}"#).unwrap();
    core.apply_servers(br#"{}"#).unwrap();
    assert_eq!(core.servers_generation(), 6);
}

#[test]
fn content_replacement_changes_id_and_pem() {
    let core = Core::new();
    core.apply_servers(&standard()).unwrap();
    let id1 = core.certificate_with(Some(b"exact.example.com"), |c| c.unwrap().id);
    // same uid, other PEM (same CN, other key)
    let d = doc(
        &[("d", DEFAULT), ("e", EXACT_V2), ("w", WILDCARD), ("t", WILDCARD_TOP)],
        &[("_", "d"), ("exact.example.com", "e"), ("*.b.example.com", "w"), ("*.example.com", "t")],
    );
    let r = core.apply_servers(&d).unwrap();
    assert_eq!((r.parsed, r.reused), (1, 3));
    let (id2, pem2) = core.certificate_with(Some(b"exact.example.com"), |c| {
        let c = c.unwrap();
        (c.id, c.pem.to_vec())
    });
    assert_ne!(id1, id2);
    assert_eq!(pem2, EXACT_V2.as_bytes());
    assert!(core.certificate_by_id_with(id1, |c| c.is_none()), "the old content is no longer in force");
    assert!(core.certificate_by_id_with(id2, |c| c.is_some()));
    // same PEM under another uid: another id
    let d = doc(&[("e2", EXACT_V2)], &[("exact.example.com", "e2")]);
    let r = core.apply_servers(&d).unwrap();
    assert_eq!((r.parsed, r.reused), (1, 0));
    assert_ne!(core.certificate_with(Some(b"exact.example.com"), |c| c.unwrap().id), id2);
    // the id is a function of uid and PEM only: the same in another core
    let other = Core::new();
    other.apply_servers(&standard()).unwrap();
    assert_eq!(other.certificate_with(Some(b"exact.example.com"), |c| c.unwrap().id), id1);
}

#[test]
fn identical_document_is_unchanged_and_reuse_is_counted() {
    let core = Core::new();
    let d = standard();
    core.apply_servers(&d).unwrap();
    let r = core.apply_servers(&d).unwrap();
    assert_eq!(r, ServersReport { hostnames: 4, certificates: 4, parsed: 0, deferred: 0, reused: 4, unchanged: true });
    assert_eq!(core.servers_generation(), 1, "an identical document publishes nothing");
    assert_eq!(core.servers_json().as_deref(), Some(&d[..]));
    core.validate_servers(&d).unwrap();
    // the same content, another byte layout: decoded, every certificate reused
    let mut spaced = b" ".to_vec();
    spaced.extend_from_slice(&d);
    let r = core.apply_servers(&spaced).unwrap();
    assert_eq!(r, ServersReport { hostnames: 4, certificates: 4, parsed: 0, deferred: 0, reused: 4, unchanged: false });
    assert_eq!(core.servers_generation(), 2);
    // one hostname more on an already used certificate: nothing parsed
    let d = doc(
        &[("d", DEFAULT), ("e", EXACT), ("w", WILDCARD), ("t", WILDCARD_TOP)],
        &[
            ("_", "d"),
            ("exact.example.com", "e"),
            ("www.example.org", "e"),
            ("*.b.example.com", "w"),
            ("*.example.com", "t"),
        ],
    );
    let r = core.apply_servers(&d).unwrap();
    assert_eq!(r, ServersReport { hostnames: 5, certificates: 4, parsed: 0, deferred: 0, reused: 4, unchanged: false });
    assert_eq!(uid_for(&core, Some("www.example.org")).as_deref(), Some("e"));
}

#[test]
fn many_certificates_one_changed_parses_one() {
    // 2000 uids sharing a few PEMs (the id and reuse are per uid+PEM, not per PEM).
    let pems = [DEFAULT, EXACT, OTHER, CHAIN];
    let build = |changed: Option<usize>| {
        let certs: Vec<(String, &str)> = (0..2000)
            .map(|i| (format!("ns-{i}/secret"), if Some(i) == changed { EXACT_V2 } else { pems[i % 4] }))
            .collect();
        let servers: Vec<(String, String)> =
            (0..2000).map(|i| (format!("host-{i}.example.com"), format!("ns-{i}/secret"))).collect();
        let c: Vec<(&str, &str)> = certs.iter().map(|(u, p)| (u.as_str(), *p)).collect();
        let s: Vec<(&str, &str)> = servers.iter().map(|(h, u)| (h.as_str(), u.as_str())).collect();
        doc(&c, &s)
    };
    let core = Core::new();
    let r = core.apply_servers(&build(None)).unwrap();
    assert_eq!((r.hostnames, r.certificates, r.parsed, r.reused), (2000, 2000, 2000, 0));
    let r = core.apply_servers(&build(Some(1234))).unwrap();
    assert_eq!((r.hostnames, r.certificates, r.parsed, r.reused), (2000, 2000, 1, 1999));
    assert_eq!(uid_for(&core, Some("host-1234.example.com")).as_deref(), Some("ns-1234/secret"));
    core.certificate_with(Some(b"host-1234.example.com"), |c| assert_eq!(c.unwrap().pem, EXACT_V2.as_bytes()));
}

fn rejected(core: &Core, json: &[u8]) -> String {
    let before = core.servers_generation();
    let doc_before = core.servers_json();
    let v = core.validate_servers(json).unwrap_err();
    let e = core.apply_servers(json).unwrap_err();
    assert_eq!(v, e, "validate and apply agree");
    assert_eq!(core.servers_generation(), before, "nothing published");
    assert_eq!(core.servers_json(), doc_before);
    // the old store still answers
    assert_eq!(uid_for(core, Some("exact.example.com")).as_deref(), Some("e"));
    assert_eq!(uid_for(core, Some("a.b.example.com")).as_deref(), Some("w"));
    assert_eq!(uid_for(core, None).as_deref(), Some("d"));
    e.to_string()
}

#[test]
fn bad_input_is_rejected_and_keeps_the_old_store() {
    let core = Core::new();
    core.apply_servers(&standard()).unwrap();
    let with = |pem: &str| doc(&[("d", DEFAULT), ("x", pem)], &[("_", "d"), ("x.example.com", "x")]);
    let host = |h: &str| doc(&[("d", DEFAULT)], &[("_", "d"), (h, "d")]);
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"".to_vec(), "servers configuration is empty"),
        (b" \n\t".to_vec(), "servers configuration is empty"),
        (b"{".to_vec(), "invalid servers JSON"),
        (b"not json".to_vec(), "invalid servers JSON"),
        (b"[]".to_vec(), "invalid servers JSON: invalid type: sequence, expected an object"),
        (b"\"x\"".to_vec(), "invalid servers JSON"),
        (br#"{"certificates":{}} x"#.to_vec(), "invalid servers JSON: trailing characters"),
        (br#"{"certificates":[]}"#.to_vec(), "`certificates` to be an object of strings"),
        (br#"{"servers":"x"}"#.to_vec(), "`servers` to be an object of strings"),
        (br#"{"servers":{},"servers":{}}"#.to_vec(), "duplicate field `servers`"),
        (br#"{"certificates":{"a":1}}"#.to_vec(), r#"certificate "a": expected the PEM text (a string), got a number"#),
        (br#"{"certificates":{"a":"x","a":"y"}}"#.to_vec(), r#"certificate "a": duplicate uid"#),
        (
            br#"{"servers":{"h.example.com":["d"]}}"#.to_vec(),
            r#"server "h.example.com": expected a certificate uid (a string) or "-1", got an array"#,
        ),
        (br#"{"servers":{"h.example.com":null}}"#.to_vec(), "got null"),
        (with(BAD), r#"certificate "x": PEM certificates do not parse"#),
        (with("not a pem at all"), r#"certificate "x": no certificate in the PEM"#),
        (with(KEYONLY), r#"certificate "x": no certificate in the PEM"#),
        (with(EXACT_CRT), r#"certificate "x": no private key in the PEM"#),
        (
            with(&format!("{EXACT_CRT}-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")),
            r#"certificate "x": private key does not parse"#,
        ),
        (with(MISMATCHED), r#"certificate "x": the private key does not match the certificate"#),
        (
            doc(&[("d", DEFAULT)], &[("_", "d"), ("x.example.com", "nope")]),
            r#"server "x.example.com": no certificate with uid "nope""#,
        ),
        (host("bad_name.example.com"), r#"server "bad_name.example.com": not a valid DNS name"#),
        (host("-a.example.com"), "not a valid DNS name"),
        (host("a..example.com"), "not a valid DNS name"),
        (host(""), r#"server "": not a valid DNS name"#),
        (host("*"), "a wildcard is allowed only as the whole first label"),
        (host("*."), "not a valid DNS name"),
        (host("a.*.example.com"), "a wildcard is allowed only as the whole first label"),
        (host("*a.example.com"), "a wildcard is allowed only as the whole first label"),
        (host("**.example.com"), "a wildcard is allowed only as the whole first label"),
        (host("__"), "not a valid DNS name"),
        (host(&format!("{}.com", "a".repeat(64))), "not a valid DNS name"),
        (
            host(&format!("*.{}", ["a".repeat(63), "b".repeat(63), "c".repeat(63), "d".repeat(61)].join("."))),
            "longer than 253 bytes",
        ),
        (
            doc(&[("d", DEFAULT), ("e", EXACT)], &[("_", "d"), ("x.example.com", "d"), ("X.example.com.", "e")]),
            "the same hostname (compared in lower case, without a trailing dot) appears twice",
        ),
    ];
    for (json, want) in &cases {
        let msg = rejected(&core, json);
        assert!(msg.contains(want), "{:?}: got {msg:?}, want {want:?}", String::from_utf8_lossy(json));
    }
    let too_large = vec![b' '; MAX_CONFIG_BYTES + 1];
    assert!(rejected(&core, &too_large).contains("over the limit"));
    // a bad certificate no hostname refers to is dropped unparsed
    let d = doc(&[("d", DEFAULT), ("junk", BAD)], &[("_", "d")]);
    assert_eq!(core.apply_servers(&d).unwrap().certificates, 1);
    // the same hostname twice with the same certificate is fine
    let d = doc(&[("d", DEFAULT)], &[("_", "d"), ("x.example.com", "d"), ("X.Example.com.", "d")]);
    assert_eq!(core.apply_servers(&d).unwrap().hostnames, 2);
}

fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize
}

/// 100 000 hostnames over a handful of certificates: every lookup rule still holds,
/// and the store's size is printed (`-- --nocapture`). RSS is of the whole test
/// process (other tests run in parallel), so the store's own estimate is printed too.
#[test]
fn hundred_thousand_hostnames() {
    const N: usize = 100_000;
    let pems = [("d", DEFAULT), ("e", EXACT), ("w", WILDCARD), ("o", OTHER), ("c", CHAIN)];
    let names: Vec<String> = (0..N)
        .map(
            |i| if i % 10 == 0 { format!("*.w{i}.example.net") } else { format!("host-{i}.ns-{}.example.net", i % 97) },
        )
        .collect();
    let mut servers: Vec<(&str, &str)> =
        names.iter().enumerate().map(|(i, n)| (n.as_str(), pems[1 + i % 4].0)).collect();
    servers.push(("_", "d"));
    let json = doc(&pems, &servers);
    let rss_before = rss_bytes();
    let t = std::time::Instant::now();
    let core = Core::new();
    let r = core.apply_servers(&json).unwrap();
    let took = t.elapsed();
    let rss_after = rss_bytes();
    assert_eq!((r.hostnames, r.certificates, r.parsed), (N + 1, 5, 5));
    println!(
        "100 000 hostnames: document {} KiB, apply {:?}, store ~{} KiB (tables, names, PEMs), RSS +{} KiB \
         (document copy included)",
        json.len() / 1024,
        took,
        core.cert_store_heap_bytes() / 1024,
        rss_after.saturating_sub(rss_before) / 1024
    );
    let uid = |sni: &str| uid_for(&core, Some(sni));
    for i in (1..N).step_by(997) {
        let want = pems[1 + i % 4].0;
        if i % 10 == 0 {
            assert_eq!(uid(&format!("x.w{i}.example.net")).as_deref(), Some(want));
        } else {
            assert_eq!(uid(&format!("HOST-{i}.ns-{}.example.net.", i % 97)).as_deref(), Some(want));
        }
    }
    assert_eq!(uid("nope.example.net").as_deref(), Some("d"));
    assert_eq!(uid("a.b.w10.example.net").as_deref(), Some("d"));
    // again, unchanged: no decoding, nothing parsed
    let t = std::time::Instant::now();
    assert!(core.apply_servers(&json).unwrap().unchanged);
    println!("identical 100 000-hostname document recognised in {:?}", t.elapsed());
}

#[test]
fn accepted_documents_parse_each_certificate_at_first_use() {
    // What a worker does with the copy another worker accepted and stored.
    let core = Core::new();
    let r = core.apply_accepted_servers(&standard()).unwrap();
    assert_eq!((r.parsed, r.deferred, r.certificates), (0, 4, 4));
    // Everything but the OpenSSL objects is there at once, and looks the same.
    let eager = Core::new();
    eager.apply_servers(&standard()).unwrap();
    for sni in [Some("exact.example.com"), Some("a.b.example.com"), Some("nope.test"), None] {
        let id = |c: &Core| c.certificate_with(sni.map(str::as_bytes), |c| c.map(|c| (c.uid.to_string(), c.id)));
        assert_eq!(id(&core), id(&eager), "{sni:?}");
    }
    // First use parses; the objects are those of the PEM.
    assert_eq!(cn(&core, Some("exact.example.com")).as_deref(), Some("exact.example.com"));
    assert_eq!(cn(&core, Some("x.b.example.com")).as_deref(), Some("*.b.example.com"));
    // A later eager apply of the same document reuses the parsed and unparsed alike.
    let r = core.apply_servers(&standard()).unwrap();
    assert!(r.unchanged);
    // A bad certificate in an "accepted" document is only found at first use: no
    // objects (the front end then serves its static certificate), nothing else breaks.
    let bad = doc(&[("m", MISMATCHED), ("e", EXACT)], &[("bad.example.com", "m"), ("exact.example.com", "e")]);
    let r = core.apply_accepted_servers(&bad).unwrap();
    assert_eq!(r.deferred, 1, "exact is reused: {r:?}");
    core.certificate_with(Some(b"bad.example.com"), |c| assert!(c.unwrap().objects().is_none()));
    assert_eq!(cn(&core, Some("exact.example.com")).as_deref(), Some("exact.example.com"));
    // apply_servers would have refused it.
    assert!(Core::new().apply_servers(&bad).is_err());
}

#[test]
fn own_certificate_is_the_exact_or_wildcard_entry_never_the_default_alone() {
    let core = Core::new();
    core.apply_servers(&doc(
        &[("d", DEFAULT), ("w", WILDCARD), ("e", EXACT)],
        &[("_", "d"), ("*.b.example.com", "w"), ("exact.example.com", "e"), ("listed.example.com", "d")],
    ))
    .unwrap();
    for (host, want) in [
        ("exact.example.com", true),
        ("EXACT.example.com.", true),
        ("a.b.example.com", true),
        ("x.a.b.example.com", false),
        ("listed.example.com", true), // listed with the default's certificate
        ("unknown.example.org", false),
        ("_", true),
        ("", false),
    ] {
        assert_eq!(core.has_own_certificate(host.as_bytes()), want, "{host}");
    }
}
