//! Arbitrary SNI bytes against the servers fixture (exact, wildcard and default
//! entries), applied both ways: never panics, and the certificate chosen is the one
//! a plain reference implementation of the lookup rules chooses.
#![no_main]

use std::sync::OnceLock;

use ingress_lb::Core;
use ingress_lb_fuzz::checks;
use libfuzzer_sys::fuzz_target;

static CORES: OnceLock<(Core, Core)> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let (parsed, deferred) = CORES.get_or_init(checks::servers_cores);
    checks::check_sni(parsed, deferred, data);
});
