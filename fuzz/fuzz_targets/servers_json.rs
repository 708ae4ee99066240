//! Arbitrary bytes as a servers document, through `apply_servers` and
//! `apply_accepted_servers`, on cores that have the servers fixture in force: never
//! panics; a rejected document changes nothing (generation, document, lookups); an
//! accepted one serves each hostname it maps.
#![no_main]

use std::sync::OnceLock;

use ingress_lb::Core;
use ingress_lb_fuzz::checks;
use libfuzzer_sys::fuzz_target;

static CORES: OnceLock<(Core, Core, Vec<u8>)> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let (parsed, deferred, doc) = CORES.get_or_init(|| {
        let (p, d) = checks::servers_cores();
        (p, d, checks::servers_doc())
    });
    checks::check_servers_json(deferred, data, false, doc);
    checks::check_servers_json(parsed, data, true, doc);
});
