//! Two processes share ewma statistics: what one worker observes, another picks by.
//!
//! - `fork`: statistics created with [`SharedStats::anonymous`] before `fork` (as the
//!   nginx master does in `init_by_lua`), the child observes, the parent picks.
//! - `exec`: statistics in a region (a memfd standing for an nginx shared zone) that
//!   this process initialises; the test re-executes its own binary, which attaches to
//!   the region with [`SharedStats::in_region`], finds the parent's sample, adds its
//!   own. This also proves endpoint keys are the same in independent processes.

use std::sync::Arc;

use ingress_lb::{Core, PickCtx, Request, SharedStats};

const DOC: &[u8] = br#"[{"name":"web","load-balance":"ewma","endpoints":[
    {"address":"10.0.0.1","port":"80"},{"address":"10.0.0.2","port":"80"},{"address":"fd00::3","port":"8080"}]}]"#;

const CHILD_ENV: &str = "ILB_EWMA_SHARED_CHILD_FD";

fn now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64()
}

/// Where picks go, and the score of each, over `n` fresh requests.
fn picks(core: &Core, n: usize) -> Vec<(String, f64)> {
    let req = Request { now: now(), ..Request::EMPTY };
    (0..n)
        .map(|_| core.pick_with(b"web", &req, &mut PickCtx::new(), |p| (p.peer.text().to_owned(), p.score)).unwrap())
        .collect()
}

#[test]
fn fork_children_share_anonymous_statistics() {
    let core = Core::new();
    core.use_stats(SharedStats::anonymous(64).unwrap());
    core.apply_backends(DOC).unwrap();
    // Everything the child needs is set up (and this thread registered with arc-swap)
    // before the fork: the child only observes, which neither allocates nor locks.
    core.pick(b"web", &mut PickCtx::new()).unwrap();
    let t = now();
    // SAFETY: the child runs non-allocating, lock-free code only and leaves with
    // _exit, so the state of other threads at the fork cannot matter.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        core.observe(b"web", b"10.0.0.1:80", b"200", b"0.001", b"1.500", t);
        core.observe(b"web", b"10.0.0.2:80, [fd00::3]:8080", b"504, 200", b"-, 0.001", b"5.000, 0.020", t);
        // SAFETY: ends the child without running the parent's destructors.
        unsafe { libc::_exit(0) };
    }
    let mut status = 0;
    // SAFETY: waits for our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    // The parent picks by the child's samples: 10.0.0.2 (failed) loses to both
    // others, [fd00::3] (0.02 s) wins whenever it is one of the two candidates.
    let all = picks(&core, 300);
    for (peer, score) in &all {
        match peer.as_str() {
            "[fd00::3]:8080" => assert!((0.019..0.0201).contains(score), "{score}"),
            "10.0.0.1:80" => assert!((1.49..1.501).contains(score), "{score}"),
            other => panic!("picked {other} with score {score}"),
        }
    }
    let best = all.iter().filter(|(p, _)| p == "[fd00::3]:8080").count();
    assert!((150..260).contains(&best), "[fd00::3] in 2 of 3 pairs: {best} of 300");
}

#[test]
fn exec_attaches_to_a_region_initialised_by_another_process() {
    if let Ok(fd) = std::env::var(CHILD_ENV) {
        return child(fd.parse().unwrap());
    }
    let len = SharedStats::region_size(100);
    // SAFETY: plain syscalls on a new anonymous file owned by this test; the mapping
    // is released when the process ends.
    let (fd, ptr) = unsafe {
        let fd = libc::memfd_create(c"ilb-ewma-test".as_ptr(), 0); // inherited by exec
        assert!(fd >= 0);
        assert_eq!(libc::ftruncate(fd, len as libc::off_t), 0);
        let ptr = libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd, 0);
        assert_ne!(ptr, libc::MAP_FAILED);
        (fd, ptr.cast::<u8>())
    };
    // SAFETY: `len` bytes mapped shared above, never unmapped while the test runs.
    let stats = unsafe { SharedStats::in_region(ptr, len) }.unwrap();
    let core = Core::new();
    core.use_stats(stats);
    core.apply_backends(DOC).unwrap();
    core.observe(b"web", b"10.0.0.1:80, 10.0.0.2:80", b"200, 200", b"0.001, 0.001", b"0.300, 0.900", now());

    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "exec_attaches_to_a_region_initialised_by_another_process", "--nocapture"])
        .env(CHILD_ENV, fd.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "child failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 passed"), "the child ran the test");
    // The child's sample moved [fd00::3]:8080 from 0.6 s to ~0.077 s: now the best.
    for (peer, score) in picks(&core, 100) {
        assert_ne!(peer, "10.0.0.2:80", "0.9 s loses to both others");
        if peer == "[fd00::3]:8080" {
            assert!((0.07..0.08).contains(&score), "{score}");
        }
    }
    let c = core.stats_counters().unwrap();
    assert_eq!(c.used, 3, "one slot per endpoint across both processes");
}

/// The re-executed process: attach, check the parent's samples, add one.
fn child(fd: i32) {
    let len = SharedStats::region_size(100);
    // SAFETY: maps the inherited memfd, which the parent sized to `len`.
    let ptr = unsafe {
        let ptr = libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd, 0);
        assert_ne!(ptr, libc::MAP_FAILED);
        ptr.cast::<u8>()
    };
    // SAFETY: as above; the region stays mapped until this process exits.
    let stats = Arc::new(unsafe { SharedStats::in_region(ptr, len) }.unwrap());
    assert_eq!(stats.counters().used, 2, "attached to the parent's table, not a new one");
    let core = Core::new();
    core.use_stats(Arc::clone(&stats));
    core.apply_backends(DOC).unwrap();
    // The parent's samples, found by this process's own keys: 10.0.0.1 (0.3 s) beats
    // 10.0.0.2 (0.9 s); [fd00::3] started at their average when this core applied the
    // configuration, 0.6 s.
    for (peer, score) in picks(&core, 100) {
        assert_ne!(peer, "10.0.0.2:80");
        assert!(score > 0.29 && score < 0.61, "{peer} {score}");
    }
    core.observe(b"web", b"[fd00::3]:8080", b"200", b"0.001", b"0.050", now() + 30.0);
}
