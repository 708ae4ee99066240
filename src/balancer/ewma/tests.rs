//! Ewma: stock's formula, failures, exclusion of tried peers, slow start, observe
//! parsing.

use std::collections::HashMap;

use super::*;
use crate::{Core, PickCtx, Request};

fn ewma_doc(name: &str, eps: &[&str]) -> Vec<u8> {
    let eps: Vec<String> = eps
        .iter()
        .map(|e| {
            let (a, p) = e.rsplit_once(':').unwrap();
            format!(r#"{{"address":"{}","port":"{}"}}"#, a.trim_start_matches('[').trim_end_matches(']'), p)
        })
        .collect();
    format!(r#"[{{"name":"{name}","load-balance":"ewma","endpoints":[{}]}}]"#, eps.join(",")).into_bytes()
}

fn key(addr: &str) -> u64 {
    endpoint_key(&addr.parse().unwrap())
}

fn stats(core: &Core) -> &SharedStats {
    core.stats.get().expect("an ewma backend creates statistics")
}

/// Stock's decay_ewma, verbatim in Rust, as the reference.
fn stock_decay(ewma: f64, last: f64, rtt: f64, now: f64) -> f64 {
    let td = (now - last).max(0.0);
    let w = (-td / 10.0).exp();
    ewma * w + rtt * (1.0 - w)
}

fn req(now: f64) -> Request<'static> {
    Request { now, ..Request::EMPTY }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * b.abs().max(1e-3)
}

const T0: f64 = 1_700_000_000.0;

#[test]
fn first_sample_then_decay_match_stock_formula() {
    let core = Core::new();
    core.apply_backends(&ewma_doc("web", &["10.0.0.1:80", "10.0.0.2:80"])).unwrap();
    let s = stats(&core);
    // First sample: stock's `0.25 + 0.02`, here the response time alone (it already
    // includes the connect time).
    core.observe(b"web", b"10.0.0.1:80", b"200", b"0.020", b"0.250", T0);
    let (e, _) = s.raw(key("10.0.0.1:80")).unwrap();
    assert!(close(e, 0.25), "{e}");
    let mut expected = stock_decay(0.0, 0.0, 0.25, T0);
    assert!(close(expected, 0.25));
    // A series of samples at uneven intervals follows the formula.
    let mut last = T0;
    for (dt, rtt) in [(0.5, 0.1), (3.0, 0.8), (0.001, 0.05), (12.0, 0.3), (0.2, 2.0)] {
        let now = last + dt;
        core.observe(b"web", b"10.0.0.1:80", b"200", b"0.001", format!("{rtt:.3}").as_bytes(), now);
        expected = stock_decay(expected, last, rtt, now);
        last = now;
        let (e, _) = s.raw(key("10.0.0.1:80")).unwrap();
        assert!(close(e, expected), "after dt {dt}: {e} vs stock {expected}");
    }
    // The score at a pick is the ewma decayed to now, as stock's score() (rtt 0).
    for later in [0.0, 1.0, 10.0, 60.0] {
        let got = s.score(key("10.0.0.1:80"), s.time(last + later)).unwrap();
        let want = stock_decay(expected, last, 0.0, last + later);
        assert!(close(got, want), "score {later}s later: {got} vs {want}");
    }
}

#[test]
fn lower_score_wins_and_score_is_reported() {
    let core = Core::new();
    core.apply_backends(&ewma_doc("web", &["10.0.0.1:80", "10.0.0.2:80"])).unwrap();
    core.observe(b"web", b"10.0.0.1:80", b"200", b"0.001", b"0.500", T0);
    core.observe(b"web", b"10.0.0.2:80", b"200", b"0.001", b"0.300", T0);
    for _ in 0..50 {
        let (text, score) =
            core.pick_with(b"web", &req(T0), &mut PickCtx::new(), |p| (p.peer.text().to_owned(), p.score)).unwrap();
        assert_eq!(text, "10.0.0.2:80");
        assert!(close(score, 0.3), "{score}");
    }
    // Two seconds later both decayed by the same factor.
    let score = core.pick_with(b"web", &req(T0 + 2.0), &mut PickCtx::new(), |p| p.score).unwrap();
    assert!(close(score, 0.3 * (-0.2f64).exp()), "{score}");
}

#[test]
fn single_endpoint_reports_minus_one_as_stock() {
    let core = Core::new();
    core.apply_backends(&ewma_doc("one", &["10.0.0.1:80"])).unwrap();
    let score = core.pick_with(b"one", &req(T0), &mut PickCtx::new(), |p| p.score).unwrap();
    assert_eq!(score, SINGLE_ENDPOINT_SCORE);
}

#[test]
fn two_choices_spread_equal_endpoints_and_avoid_the_slow_one() {
    let eps: Vec<String> = (1..=10).map(|i| format!("10.0.0.{i}:80")).collect();
    let eps: Vec<&str> = eps.iter().map(String::as_str).collect();
    let core = Core::new();
    core.apply_backends(&ewma_doc("web", &eps)).unwrap();
    for e in &eps {
        core.observe(b"web", e.as_bytes(), b"200", b"0.001", b"0.050", T0);
    }
    core.observe(b"web", b"10.0.0.1:80", b"200", b"0.001", b"5.000", T0 + 5.0);
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..20_000 {
        let t = core.pick_with(b"web", &req(T0 + 5.0), &mut PickCtx::new(), |p| p.peer.text().to_owned()).unwrap();
        *counts.entry(t).or_default() += 1;
    }
    assert_eq!(counts.get("10.0.0.1:80"), None, "the slow endpoint loses every comparison");
    assert_eq!(counts.len(), 9);
    // Nine equal endpoints: each ~2222; a biased draw would be far off.
    assert!(counts.values().all(|&c| (1900..2600).contains(&c)), "{counts:?}");
}

#[test]
fn a_fast_failing_endpoint_is_avoided() {
    let core = Core::new();
    core.apply_backends(&ewma_doc("web", &["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"])).unwrap();
    for e in ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"] {
        core.observe(b"web", e.as_bytes(), b"200", b"0.002", b"0.080", T0);
    }
    // 10.0.0.1 refuses connections: nginx reports 502 with connect time "-" after
    // 1 ms, then the retry on 10.0.0.2 succeeds. Stock would record 0.001 s for it.
    core.observe(b"web", b"10.0.0.1:80, 10.0.0.2:80", b"502, 200", b"-, 0.002", b"0.001, 0.080", T0 + 1.0);
    let s = stats(&core);
    let t = s.time(T0 + 1.0);
    let bad = s.score(key("10.0.0.1:80"), t).unwrap();
    let good = s.score(key("10.0.0.2:80"), t).unwrap();
    let expected = stock_decay(0.08, T0, FAILURE_RTT_SECS, T0 + 1.0);
    assert!(close(bad, expected), "{bad} vs {expected}");
    assert!(bad > 50.0 * good, "bad {bad}, good {good}");
    for _ in 0..1000 {
        let t = core.pick_with(b"web", &req(T0 + 1.0), &mut PickCtx::new(), |p| p.peer.index()).unwrap();
        assert_ne!(t, 0);
    }
    // It is tried again once its score has decayed below the others' (after ~10 s ×
    // ln(penalty / healthy)), like a circuit breaker. The healthy ones keep answering.
    for e in ["10.0.0.2:80", "10.0.0.3:80"] {
        core.observe(b"web", e.as_bytes(), b"200", b"0.002", b"0.080", T0 + 120.0);
    }
    let mut ctx = PickCtx::new();
    let back = (0..200).any(|_| {
        ctx.reset();
        core.pick_with(b"web", &req(T0 + 120.0), &mut ctx, |p| p.peer.index()).unwrap() == 0
    });
    assert!(back, "never tried again after its penalty decayed");
}

#[test]
fn a_timeout_counts_its_measured_time_when_longer_than_the_penalty() {
    assert_eq!(attempt_sample(b"504", b"0.001", b"90.000"), Some(90.0));
    assert_eq!(attempt_sample(b"504", b"-", b"5.000"), Some(FAILURE_RTT_SECS));
}

#[test]
fn attempt_classification() {
    // Answered: the response time only (connect time included by nginx).
    assert_eq!(attempt_sample(b"200", b"0.010", b"0.250"), Some(0.25));
    assert_eq!(attempt_sample(b"404", b"0.010", b"0.003"), Some(0.003));
    assert_eq!(attempt_sample(b"500", b"0.010", b"0.003"), Some(0.003));
    assert_eq!(attempt_sample(b"503", b"0.010", b"0.003"), Some(0.003));
    assert_eq!(attempt_sample(b"200", b"0.010", b"-"), None);
    // Failed: 502/504 whatever the times; no status and no connection.
    assert_eq!(attempt_sample(b"502", b"-", b"0.000"), Some(FAILURE_RTT_SECS));
    assert_eq!(attempt_sample(b"502", b"0.001", b"0.020"), Some(FAILURE_RTT_SECS));
    assert_eq!(attempt_sample(b"504", b"-", b"-"), Some(FAILURE_RTT_SECS));
    assert_eq!(attempt_sample(b"-", b"-", b"-"), Some(FAILURE_RTT_SECS));
    assert_eq!(attempt_sample(b"-", b"-", b"3.000"), Some(FAILURE_RTT_SECS));
    // Cut short after connecting (client closed): the time so far.
    assert_eq!(attempt_sample(b"-", b"0.001", b"2.500"), Some(2.5));
    assert_eq!(attempt_sample(b"-", b"0.001", b"-"), None);
    // Garbage is ignored, not a failure.
    assert_eq!(attempt_sample(b"2x0", b"0.001", b"0.1"), Some(0.1));
    assert_eq!(attempt_sample(b"200", b"0.001", b"1e3"), None);
    assert_eq!(attempt_sample(b"200", b"0.001", b"NaN"), None);
}

#[test]
fn entries_split_attempts_and_redirects() {
    let all = |s: &'static [u8]| Entries(s).collect::<Vec<_>>();
    assert_eq!(all(b"10.0.0.1:80"), [&b"10.0.0.1:80"[..]]);
    assert_eq!(all(b"10.0.0.1:80, 10.0.0.2:80"), [&b"10.0.0.1:80"[..], b"10.0.0.2:80"]);
    assert_eq!(
        all(b"10.0.0.1:80, [fd00::1]:8080 : 10.0.0.3:80"),
        [&b"10.0.0.1:80"[..], b"[fd00::1]:8080", b"10.0.0.3:80"]
    );
    assert_eq!(all(b"unix:/tmp/s.sock : 10.0.0.3:80"), [&b"unix:/tmp/s.sock"[..], b"10.0.0.3:80"]);
    assert_eq!(all(b"0.001, 0.002 : -"), [&b"0.001"[..], b"0.002", b"-"]);
    assert_eq!(all(b""), Vec::<&[u8]>::new());
    assert_eq!(all(b"-"), [&b"-"[..]]);
}

#[test]
fn observe_reads_every_attempt_of_retries_and_redirects() {
    let core = Core::new();
    core.apply_backends(&ewma_doc("web", &["10.0.0.1:80", "10.0.0.2:80", "[fd00::3]:8080", "10.0.0.4:80"])).unwrap();
    let s = stats(&core);
    // Attempt 1 timed out connecting (504, connect "-"), attempt 2 answered 200; then an
    // internal redirect went to a unix socket and to an address of another backend.
    core.observe(
        b"web",
        b"10.0.0.1:80, [fd00::3]:8080 : unix:/run/x.sock, 10.0.0.9:80",
        b"504, 200 : 200, 200",
        b"-, 0.004 : 0.000, 0.001",
        b"5.001, 0.120 : 0.010, 0.020",
        T0,
    );
    assert!(close(s.raw(key("10.0.0.1:80")).unwrap().0, FAILURE_RTT_SECS));
    assert!(close(s.raw(key("[fd00::3]:8080")).unwrap().0, 0.12));
    assert!(s.raw(key("10.0.0.9:80")).is_none(), "not an endpoint of this backend");
    assert!(s.raw(key("10.0.0.2:80")).is_none());
    // Variables shorter than the address list: the missing entries are "-".
    core.observe(b"web", b"10.0.0.2:80, 10.0.0.4:80", b"200", b"0.001", b"0.040", T0);
    assert!(close(s.raw(key("10.0.0.2:80")).unwrap().0, 0.04));
    assert!(close(s.raw(key("10.0.0.4:80")).unwrap().0, FAILURE_RTT_SECS), "status and connect '-'");
    // Unknown backends, non-ewma backends and garbage are ignored.
    core.observe(b"nope", b"10.0.0.2:80", b"200", b"0.001", b"9.0", T0);
    core.observe(b"web", b"\xff\xfe, :, , ,", b", , ,", b"", b"::", T0);
    assert!(close(s.raw(key("10.0.0.2:80")).unwrap().0, 0.04));
}

#[test]
fn observe_is_ignored_for_other_algorithms() {
    let core = Core::new();
    core.apply_backends(br#"[{"name":"rr","endpoints":[{"address":"10.0.0.1","port":"80"}]}]"#).unwrap();
    core.observe(b"rr", b"10.0.0.1:80", b"200", b"0.001", b"0.5", T0);
    assert!(core.stats_counters().is_none(), "no statistics without an ewma backend");
}

#[test]
fn tried_endpoints_are_excluded_while_untried_remain() {
    let eps: Vec<String> = (1..=5).map(|i| format!("10.0.0.{i}:80")).collect();
    let eps: Vec<&str> = eps.iter().map(String::as_str).collect();
    let core = Core::new();
    core.apply_backends(&ewma_doc("web", &eps)).unwrap();
    // 10.0.0.1 is by far the best: without exclusion every retry would go back to it.
    for e in &eps {
        core.observe(b"web", e.as_bytes(), b"200", b"0.001", b"1.000", T0);
    }
    core.observe(b"web", b"10.0.0.1:80", b"200", b"0.001", b"0.001", T0 + 10.0);
    for _ in 0..200 {
        let mut ctx = PickCtx::new();
        let mut seen = Vec::new();
        for _ in 0..5 {
            seen.push(core.pick_with(b"web", &req(T0 + 10.0), &mut ctx, |p| p.peer.index()).unwrap());
        }
        seen.sort();
        assert_eq!(seen, [0, 1, 2, 3, 4], "each attempt an untried endpoint");
        // All tried: picks go on (two choices among all).
        core.pick_with(b"web", &req(T0 + 10.0), &mut ctx, |p| p.peer.index()).unwrap();
    }
}

#[test]
fn last_untried_endpoint_is_picked_with_its_score() {
    let core = Core::new();
    core.apply_backends(&ewma_doc("web", &["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"])).unwrap();
    core.observe(b"web", b"10.0.0.3:80", b"200", b"0.001", b"0.700", T0);
    let mut ctx = PickCtx::new();
    ctx.remember(key("10.0.0.1:80"));
    ctx.remember(key("10.0.0.2:80"));
    let (i, score) = core.pick_with(b"web", &req(T0), &mut ctx, |p| (p.peer.index(), p.score)).unwrap();
    assert_eq!(i, 2);
    assert!(close(score, 0.7), "{score}");
}

#[test]
fn new_endpoint_starts_at_the_backend_average() {
    let core = Core::new();
    core.apply_backends(&ewma_doc("web", &["10.0.0.1:80", "10.0.0.2:80"])).unwrap();
    let now = now_secs();
    core.observe(b"web", b"10.0.0.1:80", b"200", b"0.001", b"0.100", now);
    core.observe(b"web", b"10.0.0.2:80", b"200", b"0.001", b"0.300", now);
    core.apply_backends(&ewma_doc("web", &["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"])).unwrap();
    let s = stats(&core);
    let (e, _) = s.raw(key("10.0.0.3:80")).unwrap();
    // The average of the scores at the time of the change (a few ms of decay at most).
    assert!((0.199..=0.2001).contains(&e), "{e}");
    // Known endpoints keep their statistics.
    assert!(close(s.raw(key("10.0.0.1:80")).unwrap().0, 0.1));
    // A brand-new backend has no average: its endpoints stay without statistics until
    // observed, and picks among them are uniform.
    core.apply_backends(&ewma_doc("fresh", &["10.1.0.1:80", "10.1.0.2:80"])).unwrap();
    assert!(s.raw(key("10.1.0.1:80")).is_none());
    let mut counts = [0usize; 2];
    for _ in 0..4000 {
        counts[core.pick_with(b"fresh", &req(now), &mut PickCtx::new(), |p| p.peer.index()).unwrap() as usize] += 1;
    }
    assert!(counts.iter().all(|&c| (1800..2200).contains(&c)), "{counts:?}");
}

#[test]
fn use_stats_moves_to_shared_memory_and_seeds_it() {
    let now = now_secs();
    let core = Core::new();
    core.apply_backends(&ewma_doc("web", &["10.0.0.1:80", "10.0.0.2:80"])).unwrap();
    core.observe(b"web", b"10.0.0.1:80", b"200", b"0.001", b"0.100", now);
    // Moving to shared statistics: the endpoints in force start at the average of
    // those with statistics there (none yet: they stay without).
    let shared = Arc::new(SharedStats::anonymous(64).unwrap());
    core.use_stats(Arc::clone(&shared));
    assert!(std::ptr::eq(stats(&core), &*shared));
    assert!(shared.raw(key("10.0.0.1:80")).is_none());
    core.observe(b"web", b"10.0.0.1:80", b"200", b"0.001", b"0.100", now);
    assert!(close(shared.raw(key("10.0.0.1:80")).unwrap().0, 0.1));
    // A second core on the same statistics (another worker) sees the sample, and its
    // new endpoint starts at the average of the known ones.
    let other = Core::new();
    other.use_stats(Arc::clone(&shared));
    other.apply_backends(&ewma_doc("web", &["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"])).unwrap();
    let (seeded, _) = shared.raw(key("10.0.0.3:80")).unwrap();
    assert!((0.099..=0.1001).contains(&seeded), "{seeded}");
    let (i, score) =
        other.pick_with(b"web", &req(now), &mut { PickCtx::new() }, |p| (p.peer.index(), p.score)).unwrap();
    assert!(score > 0.0 || i == 1, "index {i}, score {score}");
}

#[test]
fn a_full_table_balances_without_statistics_and_warns() {
    let eps: Vec<String> = (1..=40).map(|i| format!("10.0.0.{i}:80")).collect();
    let eps: Vec<&str> = eps.iter().map(String::as_str).collect();
    let core = Core::new();
    core.use_stats(SharedStats::anonymous(8).unwrap()); // 16 slots
    core.apply_backends(&ewma_doc("web", &eps)).unwrap();
    for e in &eps {
        core.observe(b"web", e.as_bytes(), b"200", b"0.001", b"0.010", T0);
    }
    let c = core.stats_counters().unwrap();
    assert_eq!(c.used, 16);
    assert_eq!(c.full, 24);
    assert!(core.warnings().contains("ewma statistics table full: 24 times"), "{}", core.warnings());
    let mut seen = std::collections::HashSet::new();
    for _ in 0..4000 {
        seen.insert(core.pick_with(b"web", &req(T0), &mut PickCtx::new(), |p| p.peer.index()).unwrap());
    }
    assert_eq!(seen.len(), 40, "untracked endpoints still get traffic");
}

#[test]
fn endpoint_keys_are_fixed() {
    // The same address gives the same key in every process of this build (fixed
    // seeds); the cross-process test checks it across a fork and an exec.
    assert_eq!(key("10.0.0.1:80"), key("10.0.0.1:80"));
    assert_ne!(key("10.0.0.1:80"), key("10.0.0.1:81"));
    assert_eq!(key("[fd00::1]:80"), endpoint_key(&"[fd00:0::1]:80".parse().unwrap()));
}

#[test]
fn draws_are_uniform() {
    let mut counts = [0usize; 7];
    for _ in 0..70_000 {
        counts[below(7)] += 1;
    }
    assert!(counts.iter().all(|&c| (9_500..10_500).contains(&c)), "{counts:?}");
}
