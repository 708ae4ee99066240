//! Arbitrary bytes as a backends document, on a core that has a valid configuration:
//! never panics; a rejected document leaves generation, document and picks as they
//! were; an accepted one is in force and its backends pick only their endpoints.
#![no_main]

use std::sync::OnceLock;

use ingress_lb::Core;
use ingress_lb_fuzz::checks;
use libfuzzer_sys::fuzz_target;

static CORE: OnceLock<Core> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let core = CORE.get_or_init(checks::fixture_core);
    checks::check_backends_json(core, data);
    // Back to the fixture when the input was accepted, so every input starts from
    // the same configuration (an unchanged backend is reused: cheap).
    core.apply_backends(&checks::backends_doc(checks::BACKENDS, false)).expect("fixture");
});
