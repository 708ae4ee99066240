//! Fuzz inputs replayed forever, without nightly: every file under
//! `tests/data/fuzz/<target>/` (inputs that once failed, minimised) and the hand-written
//! seeds under `fuzz/seeds/<target>/`, through the same property checks as the fuzz
//! targets (`fuzz/src/checks.rs`, included here). Pick cases are JSON
//! (`tests/data/fuzz/pick/*.json`, `fuzz/seed-cases/pick/*.json`): the target's raw
//! input is `arbitrary`'s encoding, which `cargo +nightly fuzz fmt pick <file>` prints.
//! See the README's "Fuzzing" section.

#[allow(dead_code)]
#[path = "../fuzz/src/checks.rs"]
mod checks;

use std::path::{Path, PathBuf};

fn files(dirs: &[&str]) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else { continue };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_file() && path.file_name().is_some_and(|n| !n.to_string_lossy().starts_with('.')) {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Run `check` on each file's bytes, naming the file that fails.
fn replay(dirs: &[&str], mut check: impl FnMut(&[u8])) -> usize {
    let files = files(dirs);
    for path in &files {
        let data = std::fs::read(path).unwrap();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&data)));
        if let Err(e) = result {
            let msg = e.downcast_ref::<String>().cloned().or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()));
            panic!("{}: {}", path.display(), msg.unwrap_or_default());
        }
    }
    files.len()
}

#[test]
fn backends_json() {
    let core = checks::fixture_core();
    let fixture = checks::backends_doc(checks::BACKENDS, false);
    let n = replay(&["tests/data/fuzz/backends_json", "fuzz/seeds/backends_json"], |data| {
        checks::check_backends_json(&core, data);
        core.apply_backends(&fixture).unwrap();
    });
    assert!(n > 0, "no inputs found");
}

#[test]
fn servers_json() {
    let (parsed, deferred) = checks::servers_cores();
    let fixture = checks::servers_doc();
    let n = replay(&["tests/data/fuzz/servers_json", "fuzz/seeds/servers_json"], |data| {
        checks::check_servers_json(&deferred, data, false, &fixture);
        checks::check_servers_json(&parsed, data, true, &fixture);
    });
    assert!(n > 0, "no inputs found");
}

#[test]
fn sni_lookup() {
    let (parsed, deferred) = checks::servers_cores();
    let n = replay(&["tests/data/fuzz/sni_lookup", "fuzz/seeds/sni_lookup"], |data| {
        checks::check_sni(&parsed, &deferred, data);
    });
    assert!(n > 0, "no inputs found");
}

#[test]
fn pick() {
    let core = checks::fixture_core();
    let n = replay(&["tests/data/fuzz/pick", "fuzz/seed-cases/pick"], |data| {
        let case = checks::pick_case_from_json(data);
        // Each case several times: round robin positions and random draws differ.
        for _ in 0..20 {
            checks::check_pick(&core, &case);
        }
    });
    assert!(n > 0, "no inputs found");
}

/// The fixtures themselves and the reference lookup agree on known answers (a check
/// of the checks).
#[test]
fn reference_lookup_answers() {
    assert_eq!(checks::reference_lookup(None), Some("d"));
    assert_eq!(checks::reference_lookup(Some(b"EXACT.example.com.")), Some("e"));
    assert_eq!(checks::reference_lookup(Some(b"x.b.example.com")), Some("w"));
    assert_eq!(checks::reference_lookup(Some(b"a.example.com")), Some("t"));
    // Only the first label is replaced: `*.example.com` does not match two labels.
    assert_eq!(checks::reference_lookup(Some(b"x.y.b.example.com")), Some("d"));
    assert_eq!(checks::reference_hostname(b"*.B.example.com"), Some("w"));
    assert_eq!(checks::reference_hostname(b"x.b.example.com"), None);
}

/// Found by `backends_json`: a subset size of 4 000 000 000 made the core allocate
/// 16 GB (one subset of that many slots) and abort; it is now lowered to 4096 with a
/// warning.
#[test]
fn huge_subset_size_is_lowered_with_a_warning() {
    let core = ingress_lb::Core::new();
    let doc = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fuzz/backends_json/chashsubset-huge-subset-size.json"),
    )
    .unwrap();
    core.apply_backends(&doc).unwrap();
    assert!(core.warnings().contains("upstream-hash-by-subset-size 4000000000 is over the limit of 4096"));
    let mut ctx = ingress_lb::PickCtx::new();
    assert_eq!(core.pick(b"big", &mut ctx).unwrap().text(), "10.0.0.1:80");
    assert_eq!(core.pick(b"big", &mut ctx).unwrap().text(), "10.0.0.1:80");
}
