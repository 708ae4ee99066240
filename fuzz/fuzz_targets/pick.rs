//! Arbitrary request data on the fixture configuration (one backend per algorithm and
//! a primary with canaries): a canary decision, several attempts on one pick context
//! (retries), then the log phase's `observe`. Never panics; peers are endpoints of the
//! backend that serves; no peer repeats while an untried one remains.
#![no_main]

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use ingress_lb::Core;
use ingress_lb_fuzz::checks::{self, PickCase};
use libfuzzer_sys::fuzz_target;

/// `checks::PickCase`, as `arbitrary` builds it (`cargo fuzz fmt pick <file>` prints it).
#[derive(Debug, Arbitrary)]
struct Input {
    backend: u8,
    hash_key: Vec<u8>,
    cookie: Vec<u8>,
    host: Vec<u8>,
    location_path: Vec<u8>,
    user_agent: Vec<u8>,
    https: bool,
    now: f64,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    retries: u8,
    reconfigure: bool,
    returning: bool,
    upstream_addr: Vec<u8>,
    upstream_status: Vec<u8>,
    connect_time: Vec<u8>,
    response_time: Vec<u8>,
    observe_picked: bool,
    observe_now: f64,
}

impl From<Input> for PickCase {
    fn from(i: Input) -> PickCase {
        PickCase {
            backend: i.backend,
            hash_key: i.hash_key,
            cookie: i.cookie,
            host: i.host,
            location_path: i.location_path,
            user_agent: i.user_agent,
            https: i.https,
            now: i.now,
            headers: i.headers,
            retries: i.retries,
            reconfigure: i.reconfigure,
            returning: i.returning,
            upstream_addr: i.upstream_addr,
            upstream_status: i.upstream_status,
            connect_time: i.connect_time,
            response_time: i.response_time,
            observe_picked: i.observe_picked,
            observe_now: i.observe_now,
        }
    }
}

static CORE: OnceLock<Core> = OnceLock::new();

fuzz_target!(|input: Input| {
    let core = CORE.get_or_init(checks::fixture_core);
    checks::check_pick(core, &input.into());
});
