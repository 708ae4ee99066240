//! Cookie affinity, balanced and persistent: a returning session (its cookie among
//! others in the `Cookie` header) and a new one (a `Set-Cookie` formatted).

use criterion::Criterion;
use ingress_lb::{Core, PickCtx, Request, COOKIE_MAX};

use crate::common::{backends_doc, core_with, per_size, pick, sticky_extra};

/// A request for the host and location the affinity applies to.
const SHOP: Request<'static> = Request {
    host: b"shop.example.com",
    location_path: b"/",
    user_agent:
        b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
    https: true,
    now: 1.7e9,
    hash_key: b"",
    cookie: b"",
};

/// `Cookie` headers of 1024 sessions the core handed out, each among three other
/// cookies.
fn returning_headers(core: &Core) -> Vec<Vec<u8>> {
    (0..1024)
        .map(|_| {
            let set = pick(core, &SHOP, &mut PickCtx::new(), |p| p.set_cookie.unwrap().to_string());
            let pair = set.split(';').next().unwrap();
            format!("_ga=GA1.2.1234567890.1700000000; lang=en-US; {pair}; theme=dark").into_bytes()
        })
        .collect()
}

pub fn register_benches(c: &mut Criterion) {
    // A returning session: find the affinity cookie, split it, map its key to the
    // endpoint (1024 sessions, cycled).
    for mode in ["balanced", "persistent"] {
        per_size(
            c,
            &format!("pick/sticky_{mode}"),
            |n| {
                let core = core_with(&backends_doc(n, &sticky_extra(mode)));
                let headers = returning_headers(&core);
                (core, headers)
            },
            |b, (core, headers)| {
                let mut ctx = PickCtx::new();
                let mut i = 0usize;
                b.iter(|| {
                    i = (i + 1) & 1023;
                    let req = Request { cookie: &headers[i], ..SHOP };
                    pick(core, &req, &mut ctx, |p| p.peer.text().len() + usize::from(p.set_cookie.is_some()))
                })
            },
        );
    }
    // A new session: pick an endpoint (balanced: a random key through the ring) and
    // format its `Set-Cookie` (Expires date, Max-Age, SameSite user-agent check).
    for mode in ["balanced", "persistent"] {
        per_size(
            c,
            &format!("pick/sticky_{mode}_new_session"),
            |n| core_with(&backends_doc(n, &sticky_extra(mode))),
            |b, core| {
                let mut ctx = PickCtx::new();
                let mut buf = [0u8; COOKIE_MAX];
                let req = Request { cookie: b"lang=en-US", ..SHOP };
                b.iter(|| pick(core, &req, &mut ctx, |p| p.set_cookie.and_then(|c| c.write_to(&mut buf)).unwrap()))
            },
        );
    }
}
