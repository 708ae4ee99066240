//! Canary decisions through the public API, table-driven where ingress-nginx's
//! `balancer_test.lua` is (its `route_to_alternative_balancer` cases), plus what goes
//! beyond it: several alternatives, patterns, weights, affinity, bad input.

use crate::{ConfigError, Core, PickCtx, Request};

/// A backend's JSON: `extra` is spliced in (policy, affinity, alternatives).
fn backend(name: &str, ip: &str, extra: &str) -> String {
    let sep = if extra.is_empty() { "" } else { "," };
    format!(r#"{{"name":"{name}","endpoints":[{{"address":"{ip}","port":"80"}}]{sep}{extra}}}"#)
}

fn policy(p: &str) -> String {
    format!(r#""noServer":true,"trafficShapingPolicy":{{{p}}}"#)
}

fn core_with(backends: &[String]) -> Core {
    let core = Core::new();
    core.apply_backends(format!("[{}]", backends.join(",")).as_bytes()).unwrap();
    core
}

/// A primary "web" with one canary "web-canary" of the given policy.
fn one_canary(p: &str) -> Core {
    core_with(&[
        backend("web", "10.0.0.1", r#""alternativeBackends":["web-canary"]"#),
        backend("web-canary", "10.0.1.1", &policy(p)),
    ])
}

/// Where the request goes: "web" or the alternative's name.
fn route(core: &Core, cookie: &str, headers: &[(&str, &str)]) -> String {
    let headers: Vec<(&[u8], &[u8])> = headers.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())).collect();
    core.route_with(b"web", cookie.as_bytes(), headers.as_slice(), |alt| {
        alt.map_or("web".to_owned(), |(n, _)| n.to_owned())
    })
    .unwrap()
}

#[test]
fn no_policy_no_alternatives_or_weight_zero_stays_on_the_primary() {
    let no_alt = core_with(&[backend("web", "10.0.0.1", "")]);
    assert_eq!(route(&no_alt, "", &[]), "web");
    assert_eq!(no_alt.alternatives(b"web"), Vec::<String>::new());
    let empty_policy = one_canary("");
    assert_eq!(route(&empty_policy, "", &[]), "web");
    let zero = one_canary(r#""weight":0"#);
    for _ in 0..1000 {
        assert_eq!(route(&zero, "", &[]), "web");
    }
}

#[test]
fn weight_100_always_goes_to_the_canary() {
    let core = one_canary(r#""weight":100"#);
    for _ in 0..1000 {
        assert_eq!(route(&core, "", &[]), "web-canary");
    }
    assert_eq!(core.alternatives(b"web"), vec!["web-canary".to_owned()]);
}

#[test]
fn by_cookie() {
    // (case, request cookie, expected): ingress-nginx's cookie table.
    let cases = [
        ("cookie value is 'always'", "canaryCookie=always", "web-canary"),
        ("cookie value is 'never'", "canaryCookie=never", "web"),
        ("cookie value is undefined", "canaryCookie=foo", "web"),
        ("cookie name is undefined", "foo=always", "web"),
        // Names are exact: nginx 1.22's $cookie_ would also take CanaryCookie.
        ("cookie name in another case", "CanaryCookie=always", "web"),
        ("first of two cookies of that name", "canaryCookie=always; canaryCookie=never", "web-canary"),
        ("among others", "a=1; canaryCookie=always; b=2", "web-canary"),
    ];
    let core = one_canary(r#""cookie":"canaryCookie""#);
    for (case, cookie, want) in cases {
        assert_eq!(route(&core, cookie, &[]), want, "{case}");
    }
    // `never` beats the weight; anything else leaves the weight to decide.
    let weighted = one_canary(r#""cookie":"canaryCookie","weight":100"#);
    assert_eq!(route(&weighted, "canaryCookie=never", &[]), "web");
    assert_eq!(route(&weighted, "canaryCookie=foo", &[]), "web-canary");
}

#[test]
fn by_header() {
    // (case, header, headerValue, request header, value, expected): ingress-nginx's
    // header table, then case-insensitive names and nginx's `-`/`_` equivalence.
    let cases = [
        ("no value, 'always'", "canaryHeader", "", "canaryHeader", "always", "web-canary"),
        ("no value, 'never'", "canaryHeader", "", "canaryHeader", "never", "web"),
        ("no value, undefined value", "canaryHeader", "", "canaryHeader", "foo", "web"),
        ("no value, undefined name", "canaryHeader", "", "foo", "always", "web"),
        ("value set, request says 'always'", "canaryHeader", "foo", "canaryHeader", "always", "web"),
        ("value set and matched", "canaryHeader", "foo", "canaryHeader", "foo", "web-canary"),
        ("value set, undefined name", "canaryHeader", "foo", "bar", "foo", "web"),
        ("value compared exactly", "canaryHeader", "foo", "canaryHeader", "Foo", "web"),
        ("name in another case", "X-Canary", "", "x-CANARY", "always", "web-canary"),
        ("underscore for dash", "X-Canary", "", "x_canary", "always", "web-canary"),
        ("empty header name: no rule", "", "", "", "always", "web"),
    ];
    for (case, header, value, req_name, req_value, want) in cases {
        let core = one_canary(&format!(r#""header":"{header}","headerValue":"{value}""#));
        assert_eq!(route(&core, "", &[("accept", "*/*"), (req_name, req_value)]), want, "{case}");
    }
    // The first header of that name counts, as nginx's $http_ variable gives it.
    let core = one_canary(r#""header":"X-Canary""#);
    assert_eq!(route(&core, "", &[("X-Canary", "never"), ("X-Canary", "always")]), "web");
}

#[test]
fn header_pattern() {
    let core = one_canary(r#""header":"X-Canary","headerPattern":"^(beta|rc)-[0-9]+$""#);
    assert_eq!(route(&core, "", &[("X-Canary", "beta-12")]), "web-canary");
    assert_eq!(route(&core, "", &[("X-Canary", "rc-1")]), "web-canary");
    assert_eq!(route(&core, "", &[("X-Canary", "beta-")]), "web");
    // With a pattern, `always` is just a value that does not match.
    assert_eq!(route(&core, "", &[("X-Canary", "always")]), "web");
    // Unanchored, as ngx.re.match.
    let core = one_canary(r#""header":"X-Canary","headerPattern":"beta""#);
    assert_eq!(route(&core, "", &[("X-Canary", "my-beta-user")]), "web-canary");
    // headerValue wins over headerPattern.
    let core = one_canary(r#""header":"X-Canary","headerValue":"v","headerPattern":".*""#);
    assert_eq!(route(&core, "", &[("X-Canary", "other")]), "web");
    assert_eq!(route(&core, "", &[("X-Canary", "v")]), "web-canary");
}

#[test]
fn header_then_cookie_then_weight_in_that_order() {
    let core = one_canary(r#""header":"X-Canary","cookie":"canary","weight":100"#);
    assert_eq!(route(&core, "canary=always", &[("X-Canary", "never")]), "web");
    let core = one_canary(r#""header":"X-Canary","cookie":"canary","weight":0"#);
    assert_eq!(route(&core, "canary=never", &[("X-Canary", "always")]), "web-canary");
    assert_eq!(route(&core, "canary=always", &[("X-Canary", "maybe")]), "web-canary");
    assert_eq!(route(&core, "canary=maybe", &[("X-Canary", "maybe")]), "web");
}

#[test]
fn an_invalid_pattern_disables_only_its_rule() {
    let core = Core::new();
    let report = core
        .apply_backends(
            format!(
                "[{},{},{}]",
                backend("web", "10.0.0.1", r#""alternativeBackends":["web-canary"]"#),
                backend(
                    "web-canary",
                    "10.0.1.1",
                    &policy(r#""header":"X-Canary","headerPattern":"(unclosed","cookie":"c""#)
                ),
                backend("other", "10.0.2.1", "")
            )
            .as_bytes(),
        )
        .unwrap();
    let warning = report.warnings.iter().find(|w| w.contains("headerPattern")).expect("a warning");
    assert!(warning.contains("\"web-canary\"") && warning.contains("(unclosed"), "{warning}");
    assert!(core.has_backend(b"other"));
    assert_eq!(route(&core, "", &[("X-Canary", "(unclosed")]), "web");
    assert_eq!(route(&core, "", &[("X-Canary", "always")]), "web");
    assert_eq!(route(&core, "c=always", &[]), "web-canary");
    // Look-around is not supported by a linear-time engine: refused the same way.
    let core = one_canary(r#""header":"X-Canary","headerPattern":"a(?=b)""#);
    assert!(core.warnings().contains("headerPattern"));
    // An over-long pattern too.
    let long = "a".repeat(super::PATTERN_MAX + 1);
    let core = one_canary(&format!(r#""header":"X-Canary","headerPattern":"{long}""#));
    assert!(core.warnings().contains("over the limit"));
}

#[test]
fn patterns_that_backtrack_exponentially_elsewhere_match_in_linear_time() {
    // (a+)+$ against "aaaa…b" takes exponential time in a backtracking engine; here
    // it answers at once (this test would hang otherwise).
    let core = one_canary(r#""header":"X-Canary","headerPattern":"^(a+)+$""#);
    let evil = format!("{}b", "a".repeat(100_000));
    assert_eq!(route(&core, "", &[("X-Canary", &evil)]), "web");
    assert_eq!(route(&core, "", &[("X-Canary", "aaaa")]), "web-canary");
}

fn two_canaries(p1: &str, p2: &str) -> Core {
    core_with(&[
        backend("web", "10.0.0.1", r#""alternativeBackends":["web-v2","web-v3"]"#),
        backend("web-v2", "10.0.2.1", &policy(p1)),
        backend("web-v3", "10.0.3.1", &policy(p2)),
    ])
}

#[test]
fn several_alternatives_are_looked_at_in_list_order() {
    let core = two_canaries(r#""header":"X-V2","cookie":"v2""#, r#""header":"X-V3","cookie":"v3""#);
    assert_eq!(core.alternatives(b"web"), vec!["web-v2".to_owned(), "web-v3".to_owned()]);
    assert_eq!(core.route_headers(b"web"), vec!["x_v2".to_owned(), "x_v3".to_owned()]);
    assert_eq!(route(&core, "", &[("X-V3", "always")]), "web-v3");
    assert_eq!(route(&core, "", &[("X-V2", "always"), ("X-V3", "always")]), "web-v2");
    // `never` is decisive: the primary, whatever comes later.
    assert_eq!(route(&core, "", &[("X-V2", "never"), ("X-V3", "always")]), "web");
    assert_eq!(route(&core, "v3=always", &[]), "web-v3");
    // Headers before cookies, whichever alternative they name.
    assert_eq!(route(&core, "v2=always", &[("X-V3", "always")]), "web-v3");
    let positions: Vec<Option<usize>> = [("X-V2", "always"), ("X-V3", "always"), ("X-V4", "always")]
        .iter()
        .map(|(n, v)| core.route_with(b"web", b"", &[(n.as_bytes(), v.as_bytes())][..], |a| a.map(|(_, i)| i)).unwrap())
        .collect();
    assert_eq!(positions, vec![Some(0), Some(1), None]);
}

/// Counts of 20 000 decisions by weight alone.
fn shares(core: &Core) -> std::collections::HashMap<String, u32> {
    let mut counts = std::collections::HashMap::new();
    for _ in 0..20_000 {
        *counts.entry(route(core, "", &[])).or_insert(0) += 1;
    }
    counts
}

/// `count` out of 20 000 is within 5 standard deviations of probability `p` (a false
/// alarm has probability below 10^-6).
fn near(count: u32, p: f64) -> bool {
    let n = 20_000.0;
    (f64::from(count) - n * p).abs() <= 5.0 * (n * p * (1.0 - p)).sqrt() + 0.5
}

#[test]
fn weights_split_traffic_between_alternatives_and_the_primary() {
    let core = two_canaries(r#""weight":20"#, r#""weight":30"#);
    let c = shares(&core);
    assert!(near(c["web-v2"], 0.2) && near(c["web-v3"], 0.3) && near(c["web"], 0.5), "{c:?}");
    // weightTotal above 100 is used; at or below 100 it is 100, as ingress-nginx reads it.
    let core = two_canaries(r#""weight":1,"weightTotal":1000"#, r#""weight":25,"weightTotal":50"#);
    let c = shares(&core);
    assert!(near(c["web-v2"], 0.001) && near(c["web-v3"], 0.25), "{c:?}");
    // Exactly the whole: the primary gets nothing.
    let core = two_canaries(r#""weight":40"#, r#""weight":600,"weightTotal":1000"#);
    let c = shares(&core);
    assert!(!c.contains_key("web") && near(c["web-v2"], 0.4), "{c:?}");
}

#[test]
fn weights_over_the_whole_are_rejected_and_the_previous_configuration_kept() {
    let core = two_canaries(r#""weight":10"#, r#""weight":10"#);
    let bad = format!(
        "[{},{},{}]",
        backend("web", "10.0.0.1", r#""alternativeBackends":["web-v2","web-v3"]"#),
        backend("web-v2", "10.0.2.1", &policy(r#""weight":60"#)),
        backend("web-v3", "10.0.3.1", &policy(r#""weight":500,"weightTotal":1000"#)),
    );
    let err = core.apply_backends(bad.as_bytes()).unwrap_err();
    let ConfigError::Field { backend: who, field, reason } = &err else { panic!("{err}") };
    assert_eq!((who.as_str(), field.as_str()), ("\"web\"", "alternativeBackends"));
    assert!(reason.contains("\"web-v2\" 60/100") && reason.contains("\"web-v3\" 500/1000"), "{reason}");
    let single = one_canary(r#""weight":100"#);
    assert_eq!(single.generation(), 1);
    let err = single
        .apply_backends(
            format!(
                "[{},{}]",
                backend("web", "10.0.0.1", r#""alternativeBackends":["web-canary"]"#),
                backend("web-canary", "10.0.1.1", &policy(r#""weight":101"#))
            )
            .as_bytes(),
        )
        .unwrap_err();
    assert!(err.to_string().contains("more than the whole"), "{err}");
    // Negative weights are not weights.
    let err = Core::new()
        .apply_backends(format!("[{}]", backend("c", "10.0.1.1", &policy(r#""weight":-5"#))).as_bytes())
        .unwrap_err();
    assert!(err.to_string().contains("trafficShapingPolicy.weight"), "{err}");
    // The valid configuration is still in force.
    assert_eq!(core.generation(), 1);
    assert_eq!(core.alternatives(b"web").len(), 2);
}

#[test]
fn an_alternative_without_endpoints_is_never_chosen() {
    let core = core_with(&[
        backend("web", "10.0.0.1", r#""alternativeBackends":["web-canary"]"#),
        r#"{"name":"web-canary","endpoints":[],"noServer":true,"trafficShapingPolicy":{"weight":100,"header":"X-Canary"}}"#
            .to_owned(),
    ]);
    assert_eq!(route(&core, "", &[]), "web");
    assert_eq!(route(&core, "", &[("X-Canary", "always")]), "web");
}

#[test]
fn unknown_backend_is_an_error() {
    let core = one_canary(r#""weight":100"#);
    assert!(core.route_with(b"nope", b"", &(), |_| ()).is_err());
    // A canary is a backend too; it has no alternatives of its own.
    assert_eq!(core.route_with(b"web-canary", b"", &(), |a| a.is_none()), Ok(true));
}

const STICKY: &str = r#""sessionAffinityConfig":{"name":"cookie","mode":"balanced","cookieSessionAffinity":{"name":"route","locations":{"shop":["/"]}}}"#;

/// The affinity cookie (name=value) a pick on `backend` sets.
fn sticky_cookie(core: &Core, backend: &str) -> String {
    let req = Request { host: b"shop", location_path: b"/", ..Request::EMPTY };
    let set = core.pick_with(backend.as_bytes(), &req, &mut PickCtx::new(), |p| p.set_cookie.map(|c| c.to_string()));
    set.unwrap().expect("a cookie").split(';').next().unwrap().to_owned()
}

#[test]
fn sticky_canary_keeps_its_clients_and_the_primary_its_own() {
    let core = core_with(&[
        backend("web", "10.0.0.1", &format!(r#""alternativeBackends":["web-canary"],{STICKY}"#)),
        backend("web-canary", "10.0.1.1", &format!(r#"{},{STICKY}"#, policy(r#""weight":50"#))),
    ]);
    let on_canary = sticky_cookie(&core, "web-canary");
    let on_primary = sticky_cookie(&core, "web");
    assert_ne!(on_canary, on_primary);
    for _ in 0..500 {
        assert_eq!(route(&core, &on_canary, &[]), "web-canary");
        assert_eq!(route(&core, &format!("a=b; {on_primary}"), &[]), "web");
    }
    // Affinity comes before headers, as in ingress-nginx.
    let core = core_with(&[
        backend("web", "10.0.0.1", &format!(r#""alternativeBackends":["web-canary"],{STICKY}"#)),
        backend("web-canary", "10.0.1.1", &format!(r#"{},{STICKY}"#, policy(r#""header":"X-Canary""#))),
    ]);
    let on_primary = sticky_cookie(&core, "web");
    assert_eq!(route(&core, &on_primary, &[("X-Canary", "always")]), "web");
    let on_canary = sticky_cookie(&core, "web-canary");
    assert_eq!(route(&core, &on_canary, &[("X-Canary", "never")]), "web-canary");
}

#[test]
fn a_reused_canary_keeps_its_compiled_pattern_and_plans_follow_renames() {
    let canary = backend("web-canary", "10.0.1.1", &policy(r#""header":"X-Canary","headerPattern":"^b""#));
    let core = core_with(&[backend("web", "10.0.0.1", r#""alternativeBackends":["web-canary"]"#), canary.clone()]);
    // The canary moves in the document and the primary's endpoints change: the plan
    // is rebuilt against the new positions; the canary is reused as it was.
    let report = core
        .apply_backends(
            format!("[{canary},{}]", backend("web", "10.0.0.9", r#""alternativeBackends":["web-canary"]"#)).as_bytes(),
        )
        .unwrap();
    assert_eq!((report.reused, report.rebuilt), (1, 1));
    assert_eq!(route(&core, "", &[("X-Canary", "beta")]), "web-canary");
}
