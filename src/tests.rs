//! Core behaviour: publishing, reuse, rejection, round robin and retries.

use super::*;
use std::collections::HashMap;

fn backend(name: &str, eps: &[&str]) -> String {
    let eps: Vec<String> = eps
        .iter()
        .map(|e| {
            let (a, p) = e.rsplit_once(':').unwrap();
            format!(r#"{{"address":"{}","port":"{}"}}"#, a.trim_start_matches('[').trim_end_matches(']'), p)
        })
        .collect();
    format!(r#"{{"name":"{name}","endpoints":[{}]}}"#, eps.join(","))
}

fn doc(backends: &[String]) -> Vec<u8> {
    format!("[{}]", backends.join(",")).into_bytes()
}

const THREE: [&str; 3] = ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"];

#[test]
fn round_robin_spreads_evenly() {
    let core = Core::new();
    core.apply_backends(&doc(&[backend("web", &THREE)])).unwrap();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..300 {
        let mut ctx = PickCtx::new();
        *counts.entry(core.pick(b"web", &mut ctx).unwrap().text().to_owned()).or_default() += 1;
    }
    assert_eq!(counts.len(), 3);
    assert!(counts.values().all(|&c| c == 100), "{counts:?}");
}

#[test]
fn round_robin_start_is_random_per_build() {
    // 64 independent builds of a 1000-endpoint backend all starting at the same
    // position has probability 1000^-63: a fixed start would fail this.
    let eps: Vec<String> = (0..1000).map(|i| format!("10.0.{}.{}:80", i / 250, i % 250 + 1)).collect();
    let eps: Vec<&str> = eps.iter().map(String::as_str).collect();
    let mut firsts = std::collections::HashSet::new();
    for _ in 0..64 {
        let core = Core::new();
        core.apply_backends(&doc(&[backend("web", &eps)])).unwrap();
        firsts.insert(core.pick(b"web", &mut PickCtx::new()).unwrap().index);
    }
    assert!(firsts.len() > 1);
}

#[test]
fn retry_never_repicks_a_tried_peer_while_one_remains() {
    let core = Core::new();
    let eps: Vec<String> = (1..=7).map(|i| format!("10.0.0.{i}:80")).collect();
    let eps: Vec<&str> = eps.iter().map(String::as_str).collect();
    core.apply_backends(&doc(&[backend("web", &eps)])).unwrap();
    for round in 0..20 {
        let mut ctx = PickCtx::new();
        let mut seen = std::collections::HashSet::new();
        for attempt in 0..7 {
            // Other requests interleave between attempts, moving the cursor.
            for _ in 0..round % 3 {
                core.pick(b"web", &mut PickCtx::new()).unwrap();
            }
            let p = core.pick(b"web", &mut ctx).unwrap();
            assert!(seen.insert(p.index), "attempt {attempt} re-picked {}", p.text());
        }
        // Everything tried: a pick still answers.
        assert!(core.pick(b"web", &mut ctx).is_ok());
    }
}

#[test]
fn tried_set_survives_a_new_configuration() {
    let core = Core::new();
    core.apply_backends(&doc(&[backend("web", &THREE[..2])])).unwrap();
    let mut ctx = PickCtx::new();
    let first = core.pick(b"web", &mut ctx).unwrap();
    // Endpoints reordered and one added: indices change, identities do not.
    core.apply_backends(&doc(&[backend("web", &["10.0.0.3:80", "10.0.0.2:80", "10.0.0.1:80"])])).unwrap();
    let second = core.pick(b"web", &mut ctx).unwrap();
    let third = core.pick(b"web", &mut ctx).unwrap();
    let texts = [first.text(), second.text(), third.text()];
    let unique: std::collections::HashSet<_> = texts.iter().collect();
    assert_eq!(unique.len(), 3, "{texts:?}");
}

#[test]
fn unknown_and_empty_backends() {
    let core = Core::new();
    assert_eq!(core.pick(b"web", &mut PickCtx::new()).unwrap_err(), PickError::UnknownBackend);
    core.apply_backends(br#"[{"name":"empty","endpoints":[]},{"name":"none"}]"#).unwrap();
    assert_eq!(core.pick(b"empty", &mut PickCtx::new()).unwrap_err(), PickError::NoEndpoints);
    assert_eq!(core.check_backend(b"none"), Err(PickError::NoEndpoints));
    assert_eq!(core.check_backend(b"web"), Err(PickError::UnknownBackend));
    assert!(core.has_backend(b"empty") && !core.has_backend(b"web"));
}

#[test]
fn rejected_update_keeps_previous_configuration() {
    let core = Core::new();
    let good = doc(&[backend("web", &THREE)]);
    core.apply_backends(&good).unwrap();
    let bad: [&[u8]; 8] = [
        b"",
        b"{}",
        b"[{\"name\":\"web\",\"endpoints\":[{\"address\":\"10.0.0.1\",\"port\":\"0\"}]}]",
        b"[{\"name\":\"web\",\"endpoints\":[{\"address\":\"not-an-ip\",\"port\":\"80\"}]}]",
        b"[{\"name\":\"web\"},{\"name\":\"web\"}]",
        b"[{\"name\":\"web\",\"alternativeBackends\":[\"web\"]}]",
        b"[{\"name\":\"web\",\"alternativeBackends\":[\"ghost\"]}]",
        b"[{\"name\":\"web\",\"noServer\":1}]",
    ];
    for b in bad {
        let err = core.apply_backends(b).unwrap_err();
        assert!(!err.to_string().is_empty());
        assert_eq!(core.generation(), 1, "{err}");
        assert_eq!(&*core.backends_json().unwrap(), &good[..]);
        assert!(core.pick(b"web", &mut PickCtx::new()).is_ok());
    }
    assert!(core
        .apply_backends(b"[{\"name\":\"web\"},{\"name\":\"web\"}]")
        .unwrap_err()
        .to_string()
        .contains("duplicate"));
    let e = core.apply_backends(b"[{\"name\":\"web\",\"alternativeBackends\":[\"ghost\"]}]").unwrap_err().to_string();
    assert!(e.contains("alternativeBackends[0]") && e.contains("ghost"), "{e}");
    let too_big = vec![b' '; MAX_CONFIG_BYTES + 1];
    assert!(matches!(core.apply_backends(&too_big), Err(ConfigError::TooLarge { .. })));
}

#[test]
fn unchanged_backends_are_reused_and_identical_documents_skipped() {
    let core = Core::new();
    let a = backend("a", &THREE);
    let b = backend("b", &THREE[..1]);
    let r = core.apply_backends(&doc(&[a.clone(), b.clone()])).unwrap();
    assert_eq!((r.rebuilt, r.reused, r.unchanged), (2, 0, false));
    let r = core.apply_backends(&doc(&[a.clone(), b.clone()])).unwrap();
    assert!(r.unchanged);
    assert_eq!(core.generation(), 1);
    let b2 = backend("b", &THREE[1..]);
    let r = core.apply_backends(&doc(&[a.clone(), b2])).unwrap();
    assert_eq!((r.rebuilt, r.reused, r.unchanged), (1, 1, false));
    assert_eq!(core.generation(), 2);
    // The reused backend keeps its round-robin position.
    let before = core.pick(b"a", &mut PickCtx::new()).unwrap().index;
    core.apply_backends(&doc(&[a.clone(), b.clone()])).unwrap();
    let after = core.pick(b"a", &mut PickCtx::new()).unwrap().index;
    assert_eq!(after, (before + 1) % 3);
}

#[test]
fn repeated_endpoints_count_once_and_ipv6_is_bracketed() {
    let core = Core::new();
    core.apply_backends(
        br#"[{"name":"v6","endpoints":[{"address":"fd00::1","port":"8080"},{"address":"fd00::1","port":"8080"},{"address":"[fd00::2]","port":"8080"}]}]"#,
    )
    .unwrap();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..4 {
        seen.insert(core.pick(b"v6", &mut PickCtx::new()).unwrap().text().to_owned());
    }
    let expected: std::collections::HashSet<String> =
        ["[fd00::1]:8080", "[fd00::2]:8080"].iter().map(|s| s.to_string()).collect();
    assert_eq!(seen, expected);
}

#[test]
fn algorithm_selection_follows_ingress_nginx_precedence() {
    let core = Core::new();
    core.apply_backends(
        br#"[{"name":"sp","sessionAffinityConfig":{"name":"cookie","mode":"persistent"},"upstreamHashByConfig":{"upstream-hash-by":"$uri"}},
            {"name":"sb","sessionAffinityConfig":{"name":"cookie"},"load-balance":"ewma"},
            {"name":"ch","upstreamHashByConfig":{"upstream-hash-by":"$uri"},"load-balance":"ewma"},
            {"name":"cs","upstreamHashByConfig":{"upstream-hash-by":"$uri","upstream-hash-by-subset":true}},
            {"name":"ew","load-balance":"ewma"},
            {"name":"rr"},
            {"name":"xx","load-balance":"least_conn"}]"#,
    )
    .unwrap();
    let kinds: Vec<_> = ["sp", "sb", "ch", "cs", "ew", "rr", "xx"]
        .iter()
        .map(|n| core.algorithm(n.as_bytes()).unwrap().name())
        .collect();
    assert_eq!(
        kinds,
        ["sticky_persistent", "sticky_balanced", "chash", "chashsubset", "ewma", "round_robin", "round_robin"]
    );
    let r = Core::new().apply_backends(br#"[{"name":"xx","load-balance":"least_conn"}]"#).unwrap();
    assert!(r.warnings.iter().any(|w| w.contains("least_conn")), "{:?}", r.warnings);
}

#[test]
fn concurrent_picks_see_whole_snapshots() {
    // A reader running while documents are swapped always sees one whole document
    // (both backends on the same address), and its picks never fail.
    let core = std::sync::Arc::new(Core::new());
    let d1 = doc(&[backend("a", &["10.0.0.1:80"]), backend("b", &["10.0.0.1:80"])]);
    let d2 = doc(&[backend("a", &["10.0.0.2:80"]), backend("b", &["10.0.0.2:80"])]);
    core.apply_backends(&d1).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let core = core.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let json = core.backends_json().unwrap();
                let text = std::str::from_utf8(&json).unwrap();
                assert!(text.matches("10.0.0.1").count() == 2 || text.matches("10.0.0.2").count() == 2);
                core.pick(b"a", &mut PickCtx::new()).unwrap();
                n += 1;
            }
            n
        })
    };
    for i in 0..2000 {
        core.apply_backends(if i % 2 == 0 { &d2 } else { &d1 }).unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(reader.join().unwrap() > 0);
}

#[test]
fn external_name_dns_endpoints_are_skipped_with_a_warning() {
    let core = Core::new();
    let r = core
        .apply_backends(
            br#"[{"name":"ext","service":{"spec":{"type":"ExternalName"}},"endpoints":[{"address":"api.example.com","port":"443"}]},
                {"name":"web","endpoints":[{"address":"10.0.0.1","port":"80"}]}]"#,
        )
        .unwrap();
    assert!(r.warnings.iter().any(|w| w.contains("api.example.com")), "{:?}", r.warnings);
    assert_eq!(core.check_backend(b"ext"), Err(PickError::NoEndpoints));
    assert!(core.check_backend(b"web").is_ok());
    // The warnings of the configuration in force include those of reused backends.
    core.apply_backends(
        br#"[{"name":"ext","service":{"spec":{"type":"ExternalName"}},"endpoints":[{"address":"api.example.com","port":"443"}]},
            {"name":"web","endpoints":[{"address":"10.0.0.2","port":"80"}]}]"#,
    )
    .unwrap();
    assert!(core.warnings().contains("api.example.com"));
    // Not an ExternalName service, or not a DNS name: rejected as before.
    assert!(core
        .apply_backends(br#"[{"name":"x","endpoints":[{"address":"api.example.com","port":"443"}]}]"#)
        .is_err());
    assert!(core
        .apply_backends(
            br#"[{"name":"x","service":{"spec":{"type":"ExternalName"}},"endpoints":[{"address":"bad name!","port":"443"}]}]"#
        )
        .is_err());
}

#[test]
fn a_compilation_that_panics_is_rejected_and_the_configuration_in_force_stays() {
    let core = Core::new();
    core.apply_backends(&doc(&[backend("web", &["10.0.0.1:80"])])).unwrap();
    let base = core.current.load_full();
    // A build thread that panics, planted where apply_backends_or_start puts one.
    let handle = std::thread::spawn(|| -> Result<(Snapshot, ApplyReport), ConfigError> { panic!("boom") });
    while !handle.is_finished() {
        std::thread::yield_now();
    }
    *core.build.lock() = Some(background::Build { base, handle });
    assert_eq!(core.collect_backends(), Collected::Rejected(ConfigError::Internal("boom".into())));
    assert_eq!(core.collect_backends(), Collected::Idle);
    assert!(core.has_backend(b"web"));
    assert_eq!(core.generation(), 1);
}
