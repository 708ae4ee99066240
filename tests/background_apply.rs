//! Large configuration changes compiled off the caller's thread
//! (`Core::apply_backends_or_start` / `Core::collect_backends`): what is applied at
//! once, what is started, what the configuration in force is meanwhile, and what
//! happens to a rejected or overtaken build.

use std::time::{Duration, Instant};

use ingress_lb::{Collected, ConfigError, Core, PickCtx, Progress, Request};

/// `n` backends `b0..` of `eps` endpoints; backend 0's endpoints are `10.<tag>.0.x`.
fn doc(n: usize, eps: usize, tag: u8) -> Vec<u8> {
    let backends: Vec<String> = (0..n)
        .map(|b| {
            let net = if b == 0 { tag as usize } else { 100 + b / 250 };
            let endpoints: Vec<String> =
                (0..eps).map(|e| format!(r#"{{"address":"10.{net}.{}.{e}","port":"8080"}}"#, b % 250)).collect();
            format!(r#"{{"name":"b{b}","endpoints":[{}]}}"#, endpoints.join(","))
        })
        .collect();
    format!("[{}]", backends.join(",")).into_bytes()
}

fn pick(core: &Core, name: &str) -> Option<String> {
    core.pick_with(name.as_bytes(), &Request::EMPTY, &mut PickCtx::new(), |p| p.peer.text().to_string()).ok()
}

/// Collect until the build is over (bounded: a test must not hang).
fn wait(core: &Core) -> Collected {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match core.collect_backends() {
            Collected::Running if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
            other => return other,
        }
    }
}

#[test]
fn a_small_change_is_applied_at_once_a_large_one_in_the_background() {
    let core = Core::new();
    let first = doc(300, 10, 1);
    // Nothing in force yet: every backend is to build, over a 1 KiB budget.
    assert_eq!(core.apply_backends_or_start(&first, 1024), Ok(Progress::Started));
    // Meanwhile: the old (empty) configuration, and no second build.
    assert_eq!(core.apply_backends_or_start(&first, 1024), Ok(Progress::Busy));
    match wait(&core) {
        Collected::Applied(r) => assert_eq!((r.backends, r.rebuilt), (300, 300)),
        other => panic!("{other:?}"),
    }
    assert!(pick(&core, "b0").unwrap().starts_with("10.1."));
    assert_eq!(core.collect_backends(), Collected::Idle);

    // One backend changed: well within 1 KiB, applied here.
    let second = doc(300, 10, 2);
    match core.apply_backends_or_start(&second, 1024) {
        Ok(Progress::Applied(r)) => assert_eq!((r.rebuilt, r.reused), (1, 299)),
        other => panic!("{other:?}"),
    }
    assert!(pick(&core, "b0").unwrap().starts_with("10.2."));
    assert_eq!(core.collect_backends(), Collected::Idle);

    // The same document again: nothing to do.
    match core.apply_backends_or_start(&second, 0) {
        Ok(Progress::Applied(r)) => assert!(r.unchanged),
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_owned_document_is_applied_like_a_borrowed_one() {
    let core = Core::new();
    // Large: compiled from the given document.
    assert_eq!(core.apply_backends_or_start_owned(doc(300, 10, 1), 1024), Ok(Progress::Started));
    assert_eq!(core.apply_backends_or_start_owned(doc(300, 10, 1), 1024), Ok(Progress::Busy));
    match wait(&core) {
        Collected::Applied(r) => assert_eq!((r.backends, r.rebuilt), (300, 300)),
        other => panic!("{other:?}"),
    }
    assert!(pick(&core, "b0").unwrap().starts_with("10.1."));
    // Small: applied here; the same again: unchanged; malformed: rejected at once.
    match core.apply_backends_or_start_owned(doc(300, 10, 3), 1024) {
        Ok(Progress::Applied(r)) => assert_eq!((r.rebuilt, r.reused), (1, 299)),
        other => panic!("{other:?}"),
    }
    match core.apply_backends_or_start_owned(doc(300, 10, 3), 1024) {
        Ok(Progress::Applied(r)) => assert!(r.unchanged),
        other => panic!("{other:?}"),
    }
    assert!(core.apply_backends_or_start_owned(b"[{".to_vec(), 1024).is_err());
    assert!(pick(&core, "b0").unwrap().starts_with("10.3."));
}

#[test]
fn a_small_malformed_document_is_rejected_at_once_a_large_one_in_the_background() {
    let core = Core::new();
    core.apply_backends(&doc(3, 2, 1)).unwrap();
    for bad in [&b"[{\"name\":"[..], b"", b"{}"] {
        assert!(core.apply_backends_or_start(bad, 1024).is_err());
        assert_eq!(core.collect_backends(), Collected::Idle);
    }
    let mut large = doc(500, 10, 2);
    large.truncate(large.len() - 3);
    assert_eq!(core.apply_backends_or_start(&large, 1024), Ok(Progress::Started));
    assert!(matches!(wait(&core), Collected::Rejected(ConfigError::Json(_))));
    assert!(pick(&core, "b0").unwrap().starts_with("10.1."));
}

#[test]
fn a_rejected_background_build_keeps_the_configuration_in_force() {
    let core = Core::new();
    core.apply_backends(&doc(3, 2, 1)).unwrap();
    // Structurally fine, but a bad address (found only when backends are decoded).
    let mut bad = doc(200, 10, 3);
    let at = bad.windows(8).rposition(|w| w == b"10.100.7").unwrap();
    bad[at..at + 8].copy_from_slice(b"10.999.7");
    assert_eq!(core.apply_backends_or_start(&bad, 0), Ok(Progress::Started));
    match wait(&core) {
        Collected::Rejected(e) => assert!(e.to_string().contains("10.999.7"), "{e}"),
        other => panic!("{other:?}"),
    }
    assert!(pick(&core, "b0").unwrap().starts_with("10.1."));
    assert_eq!(pick(&core, "b150"), None);
}

#[test]
fn a_build_overtaken_by_a_newer_configuration_is_dropped() {
    let core = Core::new();
    core.apply_backends(&doc(3, 2, 1)).unwrap();
    assert_eq!(core.apply_backends_or_start(&doc(2000, 10, 4), 0), Ok(Progress::Started));
    // A newer configuration applied the direct way meanwhile (the POST handler).
    core.apply_backends(&doc(3, 2, 5)).unwrap();
    assert_eq!(wait(&core), Collected::Superseded);
    assert!(pick(&core, "b0").unwrap().starts_with("10.5."));
    assert_eq!(pick(&core, "b1999"), None);
}

#[test]
fn picks_go_on_from_other_threads_while_a_build_runs() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let core = Core::new();
    core.apply_backends(&doc(3, 2, 1)).unwrap();
    let collected = AtomicBool::new(false);
    std::thread::scope(|s| {
        let picker = s.spawn(|| {
            let mut old = 0u64;
            // Until the build is collected, then once more: every pick answers, from
            // the old configuration or the new one.
            loop {
                let last = collected.load(Ordering::Acquire);
                let ep = pick(&core, "b0").unwrap();
                match &ep[..6] {
                    "10.1.0" => old += 1,
                    "10.6.0" => {}
                    _ => panic!("{ep}"),
                }
                if last {
                    return (old, ep.starts_with("10.6."));
                }
            }
        });
        assert_eq!(core.apply_backends_or_start(&doc(3000, 10, 6), 0), Ok(Progress::Started));
        assert!(matches!(wait(&core), Collected::Applied(_)));
        collected.store(true, Ordering::Release);
        let (old, last_is_new) = picker.join().unwrap();
        assert!(old > 0, "no pick was answered while the build ran");
        assert!(last_is_new, "the new configuration is in force once collected");
    });
}
