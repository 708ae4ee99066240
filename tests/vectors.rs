//! Decisions recorded from ingress-nginx's Lua layer (`tests/data/resty-chash-and-sticky.json`:
//! lua-resty-balancer v0.05 `resty.chash` and `ngx.md5` run inside nginx) must be
//! reproduced exactly: every chash case of every endpoint set, every sticky key.

use ingress_lb::{Core, PickCtx, Request};
use serde_json::Value;

fn vectors() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/resty-chash-and-sticky.json");
    serde_json::from_slice(&std::fs::read(path).expect("read the vectors file")).expect("vectors JSON")
}

fn strs(v: &Value) -> Vec<&str> {
    v.as_array().unwrap().iter().map(|e| e.as_str().unwrap()).collect()
}

/// A backends document with one backend of endpoints "ip:port" (IPv6 bracketed).
fn doc(name: &str, endpoints: &[&str], extra: &str) -> Vec<u8> {
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

fn pick(core: &Core, name: &str, req: &Request<'_>) -> (String, Option<String>) {
    core.pick_with(name.as_bytes(), req, &mut PickCtx::new(), |p| {
        (p.peer.text().to_owned(), p.set_cookie.map(|c| c.to_string()))
    })
    .unwrap()
}

#[test]
fn chash_reproduces_every_recorded_case() {
    let v = vectors();
    let sets = v["chash"].as_array().unwrap();
    let names: Vec<&str> = sets.iter().map(|s| s["set"].as_str().unwrap()).collect();
    assert_eq!(names, ["three", "ten", "hundred", "ipv6", "thousand"]);
    let mut checked = 0;
    for set in sets {
        let name = set["set"].as_str().unwrap();
        let endpoints = strs(&set["endpoints"]);
        let core = Core::new();
        core.apply_backends(&doc(name, &endpoints, CHASH)).unwrap();
        let cases = set["cases"].as_array().unwrap();
        assert_eq!(cases.len(), 500, "{name}");
        let mut seen = std::collections::HashSet::new();
        for case in cases {
            let (key, want) = (case[0].as_str().unwrap(), case[1].as_str().unwrap());
            let req = Request { hash_key: key.as_bytes(), ..Request::EMPTY };
            let (got, cookie) = pick(&core, name, &req);
            assert_eq!(got, want, "set {name}, key {key:?}");
            assert!(cookie.is_none());
            seen.insert(got);
            checked += 1;
        }
        // The cases exercise many endpoints, not one.
        assert!(seen.len() >= endpoints.len().min(90), "{name}: {} endpoints hit", seen.len());
    }
    assert_eq!(checked, 2500);
}

#[test]
fn sticky_balanced_maps_cookie_keys_through_the_chash_ring() {
    // A sticky_balanced cookie's endpoint key goes through the same ring: a key
    // recorded for chash lands where resty.chash put it.
    let v = vectors();
    for set in v["chash"].as_array().unwrap() {
        let name = set["set"].as_str().unwrap();
        let endpoints = strs(&set["endpoints"]);
        let core = Core::new();
        let affinity = r#""sessionAffinityConfig":{"name":"cookie","cookieSessionAffinity":{"name":"route"}},"#;
        core.apply_backends(&doc(name, &endpoints, affinity)).unwrap();
        for case in set["cases"].as_array().unwrap().iter().step_by(5) {
            let (key, want) = (case[0].as_str().unwrap(), case[1].as_str().unwrap());
            let cookie = format!("other=1; route={key}|0123");
            let req = Request { cookie: cookie.as_bytes(), ..Request::EMPTY };
            let (got, set_cookie) = pick(&core, name, &req);
            assert_eq!(got, want, "set {name}, cookie key {key:?}");
            assert_eq!(set_cookie, None, "a valid cookie is not re-sent");
        }
    }
}

#[test]
fn sticky_keys_match_ingress_nginx() {
    let v = vectors();
    let sticky = v["sticky"].as_array().unwrap();
    assert!(!sticky.is_empty());
    for s in sticky {
        let name = s["backend"].as_str().unwrap();
        let backend_key = s["backend_key"].as_str().unwrap();
        let keys: Vec<(&str, &str)> = s["persistent_keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| (k["endpoint"].as_str().unwrap(), k["key"].as_str().unwrap()))
            .collect();
        let endpoints: Vec<&str> = keys.iter().map(|k| k.0).collect();
        let affinity = r#""sessionAffinityConfig":{"name":"cookie","mode":"persistent","cookieSessionAffinity":{
            "name":"route","locations":{"example.com":["/"]}}},"#;
        let core = Core::new();
        core.apply_backends(&doc(name, &endpoints, affinity)).unwrap();
        let new_session = Request { host: b"example.com", location_path: b"/", ..Request::EMPTY };

        // Cookies issued by stock ingress-nginx keep pointing at the same endpoint, and
        // carry this backend's key.
        for (endpoint, key) in &keys {
            let cookie = format!("route={key}|{backend_key}");
            let req = Request { cookie: cookie.as_bytes(), ..new_session };
            assert_eq!(pick(&core, name, &req), (endpoint.to_string(), None), "{name}: {key}");
            assert!(core.is_affinitized(name.as_bytes(), cookie.as_bytes()));
        }

        // A new session gets the cookie stock would have issued for its endpoint.
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let (endpoint, set_cookie) = pick(&core, name, &new_session);
            let key = keys.iter().find(|k| k.0 == endpoint).unwrap().1;
            assert_eq!(set_cookie.unwrap(), format!("route={key}|{backend_key}; Path=/; HttpOnly"));
            seen.insert(endpoint);
        }
        assert_eq!(seen.len(), keys.len(), "{name}: new sessions are spread over every endpoint");

        // sticky_balanced carries the same backend key.
        let balanced = r#""sessionAffinityConfig":{"name":"cookie","cookieSessionAffinity":{
            "name":"route","locations":{"example.com":["/"]}}},"#;
        core.apply_backends(&doc(name, &endpoints, balanced)).unwrap();
        let cookie = pick(&core, name, &new_session).1.unwrap();
        let value = cookie.split(';').next().unwrap().strip_prefix("route=").unwrap();
        let (endpoint_key, backend) = value.split_once('|').unwrap();
        assert_eq!(backend, backend_key);
        assert_eq!(endpoint_key.len(), 16);
        assert!(core.is_affinitized(name.as_bytes(), format!("a=b; route={value}").as_bytes()));
    }
}
