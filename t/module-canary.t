# nginx module, canary routing: `ingress_lb_route on` asks the core, which
# applies ingress-nginx's traffic shaping rules (affinity, header value / pattern /
# always / never, cookie always / never, weight), reading the headers and cookie
# in place from the request; `ingress_lb` picks in the chosen backend, and
# $proxy_alternative_upstream_name names it. The same blocks as t/lua-canary.t,
# with the same expected output (the lua module only drives the test). Weight
# checks use 2000 requests and a 5-standard-deviation binomial tolerance.
#
#   TEST_NGINX_LOAD_MODULES="/usr/lib/nginx/modules/ndk_http_module.so \
#       /usr/lib/nginx/modules/ngx_http_lua_module.so \
#       $PWD/target/release/ngx_http_ingress_lb_module.so" \
#     HARNESS_PERL_SWITCHES='-It/compat -MIngressLbFallback' prove t/module-canary.t

use lib '.';
use t::IngressLbTest 'module';
use Test::Nginx::Socket 'no_plan';

# Shared by every block (t/IngressLbTest.pm): the zone, the upstream_balancer
# upstream, endpoints "a" to "d" (each answering its letter), "dead" and "dead2"
# (nothing listens), the test helpers T and the ingress server wired like
# ingress-nginx's nginx.tmpl with the module's directives; the ingress location
# declares $proxy_alternative_upstream_name and returns it in X-Alternative.
ilb_setup(http_config => module_http_config(), request => 'GET /t', timeout => 20);

run_tests();

__DATA__

=== TEST 1: canary by header value: exact match, any case of the header name
--- config
    location = /t {
        content_by_lua_block {
            ngx.say(T.post(T.doc(
                T.backend("web", { T.ep("a") }, { alternatives = { "web-canary" } }),
                T.backend("web-canary", { T.ep("b") }, { policy = { header = "X-Canary", headerValue = "yes" } }))))
            ngx.say("none: ", T.routes(5, "web"))
            ngx.say("yes: ", T.routes(5, "web", { ["X-Canary"] = "yes" }))
            ngx.say("lower-case name: ", T.routes(5, "web", { ["x-canary"] = "yes" }))
            ngx.say("other value: ", T.routes(5, "web", { ["X-Canary"] = "YES" }))
            ngx.say("always is a value like any other: ", T.routes(5, "web", { ["X-Canary"] = "always" }))
            ngx.say("the canary itself: ", T.routes(2, "web-canary"))
        }
    }
--- response_body
201 []
none: a/-=5
yes: b/web-canary=5
lower-case name: b/web-canary=5
other value: a/-=5
always is a value like any other: a/-=5
the canary itself: b/-=2
--- no_error_log
[error]
[warn]



=== TEST 2: canary by header pattern (unanchored unless anchored)
--- config
    location = /t {
        content_by_lua_block {
            ngx.say(T.post(T.doc(
                T.backend("web", { T.ep("a") }, { alternatives = { "web-canary" } }),
                T.backend("web-canary", { T.ep("b") },
                    { policy = { header = "X-Group", headerPattern = "^(beta|rc)-[0-9]+$" } }),
                T.backend("api", { T.ep("a") }, { alternatives = { "api-canary" } }),
                T.backend("api-canary", { T.ep("c") }, { policy = { header = "X-Group", headerPattern = "beta" } }))))
            ngx.say("beta-12: ", T.routes(3, "web", { ["X-Group"] = "beta-12" }))
            ngx.say("rc-1: ", T.routes(3, "web", { ["X-Group"] = "rc-1" }))
            ngx.say("gamma-1: ", T.routes(3, "web", { ["X-Group"] = "gamma-1" }))
            ngx.say("always: ", T.routes(3, "web", { ["X-Group"] = "always" }))
            ngx.say("unanchored: ", T.routes(3, "api", { ["X-Group"] = "my-beta-user" }))
            ngx.say("no header: ", T.routes(3, "api"))
        }
    }
--- response_body
201 []
beta-12: b/web-canary=3
rc-1: b/web-canary=3
gamma-1: a/-=3
always: a/-=3
unanchored: c/api-canary=3
no header: a/-=3
--- no_error_log
[error]
[warn]



=== TEST 3: always and never, by header and by cookie, before the weight
--- config
    location = /t {
        content_by_lua_block {
            local policy = { header = "X-Canary", cookie = "canary", weight = 0 }
            ngx.say(T.post(T.doc(
                T.backend("web", { T.ep("a") }, { alternatives = { "web-canary" } }),
                T.backend("web-canary", { T.ep("b") }, { policy = policy }))))
            ngx.say("header always: ", T.routes(3, "web", { ["X-Canary"] = "always" }))
            ngx.say("header never: ", T.routes(3, "web", { ["X-Canary"] = "never" }))
            ngx.say("cookie always: ", T.routes(3, "web", { Cookie = "lang=en; canary=always" }))
            ngx.say("cookie never: ", T.routes(3, "web", { Cookie = "canary=never" }))
            ngx.say("header never beats cookie always: ",
                    T.routes(3, "web", { ["X-Canary"] = "never", Cookie = "canary=always" }))
            ngx.say("header other, cookie always: ",
                    T.routes(3, "web", { ["X-Canary"] = "maybe", Cookie = "canary=always" }))
            ngx.say("cookie names are exact: ", T.routes(3, "web", { Cookie = "Canary=always" }))
            policy.weight = 100
            ngx.say(T.post(T.doc(
                T.backend("web", { T.ep("a") }, { alternatives = { "web-canary" } }),
                T.backend("web-canary", { T.ep("b") }, { policy = policy }))))
            ngx.say("weight 100: ", T.routes(3, "web"))
            ngx.say("weight 100, header never: ", T.routes(3, "web", { ["X-Canary"] = "never" }))
            ngx.say("weight 100, cookie never: ", T.routes(3, "web", { Cookie = "canary=never" }))
        }
    }
--- response_body
201 []
header always: b/web-canary=3
header never: a/-=3
cookie always: b/web-canary=3
cookie never: a/-=3
header never beats cookie always: a/-=3
header other, cookie always: b/web-canary=3
cookie names are exact: a/-=3
201 []
weight 100: b/web-canary=3
weight 100, header never: a/-=3
weight 100, cookie never: a/-=3
--- no_error_log
[error]
[warn]



=== TEST 4: weight 20 of 100: 2000 requests within 5 standard deviations of 400
--- config
    location = /t {
        content_by_lua_block {
            ngx.say(T.post(T.doc(
                T.backend("web", { T.ep("a") }, { alternatives = { "web-canary" } }),
                T.backend("web-canary", { T.ep("b") }, { policy = { weight = 20 } }))))
            local counts = T.routes(2000, "web")
            local canary = tonumber(counts:match("b/web%-canary=(%d+)")) or 0
            local primary = tonumber(counts:match("a/%-=(%d+)")) or 0
            ngx.say("all answered: ", canary + primary)
            ngx.say("canary share: ", T.binomial(canary, 2000, 0.2, 5))
        }
    }
--- response_body
201 []
all answered: 2000
canary share: ok
--- timeout: 60
--- no_error_log
[error]
[warn]



=== TEST 5: two canaries: weights split three ways, headers looked at in list order
--- config
    location = /t {
        content_by_lua_block {
            ngx.say(T.post(T.doc(
                T.backend("web", { T.ep("a") }, { alternatives = { "web-v2", "web-v3" } }),
                T.backend("web-v2", { T.ep("b") }, { policy = { header = "X-V2", weight = 20 } }),
                T.backend("web-v3", { T.ep("c") },
                    { policy = { header = "X-V3", cookie = "v3", weight = 300, weightTotal = 1000 } }))))
            local counts = T.routes(2000, "web")
            local n = function(pat) return tonumber(counts:match(pat)) or 0 end
            local a, b, c = n("a/%-=(%d+)"), n("b/web%-v2=(%d+)"), n("c/web%-v3=(%d+)")
            ngx.say("all answered: ", a + b + c)
            ngx.say("web-v2 20%: ", T.binomial(b, 2000, 0.2, 5))
            ngx.say("web-v3 30%: ", T.binomial(c, 2000, 0.3, 5))
            ngx.say("primary 50%: ", T.binomial(a, 2000, 0.5, 5))
            ngx.say("X-V3 always: ", T.routes(3, "web", { ["X-V3"] = "always" }))
            ngx.say("both always: ", T.routes(3, "web", { ["X-V2"] = "always", ["X-V3"] = "always" }))
            ngx.say("X-V2 never: ", T.routes(3, "web", { ["X-V2"] = "never", ["X-V3"] = "always" }))
            ngx.say("v3 cookie: ", T.routes(3, "web", { Cookie = "v3=always" }))
        }
    }
--- response_body
201 []
all answered: 2000
web-v2 20%: ok
web-v3 30%: ok
primary 50%: ok
X-V3 always: c/web-v3=3
both always: b/web-v2=3
X-V2 never: a/-=3
v3 cookie: c/web-v3=3
--- timeout: 90
--- no_error_log
[error]
[warn]



=== TEST 6: sticky canary: a canary cookie stays on the canary, a primary cookie on the primary
--- config
    location = /t {
        content_by_lua_block {
            local affinity = { mode = "balanced",
                               cookie = { name = "INGRESSCOOKIE", locations = { localhost = { "/" } } } }
            ngx.say(T.post(T.doc(
                T.backend("web", { T.ep("a"), T.ep("d") }, { alternatives = { "web-canary" }, affinity = affinity }),
                T.backend("web-canary", { T.ep("b"), T.ep("c") },
                    { policy = { weight = 50 }, affinity = affinity }))))
            -- new sessions until one of each kind
            local cookies = {}
            for _ = 1, 60 do
                local status, body, hdrs = T.get("web")
                local alt = T.header(hdrs, "X-Alternative")
                local kind = (alt and alt ~= "") and "canary" or "primary"
                local set = T.header(hdrs, "Set-Cookie")
                if status == 200 and set and not cookies[kind] then
                    cookies[kind] = { cookie = set:match("^([^;]+)"), first = body }
                end
                if cookies.canary and cookies.primary then
                    break
                end
            end
            for _, kind in ipairs({ "canary", "primary" }) do
                local c = cookies[kind]
                local counts = T.routes(20, "web", { Cookie = "lang=en; " .. c.cookie })
                ngx.say(kind, ": ", counts == (c.first .. "/" .. (kind == "canary" and "web-canary" or "-") .. "=20")
                        and "20 of 20 on its first endpoint" or counts)
            end
        }
    }
--- response_body
201 []
canary: 20 of 20 on its first endpoint
primary: 20 of 20 on its first endpoint
--- no_error_log
[error]
[warn]



=== TEST 7: the decision holds for the retries of a request
--- config
    location = /t {
        content_by_lua_block {
            ngx.say(T.post(T.doc(
                T.backend("web", { T.ep("a") }, { alternatives = { "web-canary" } }),
                T.backend("web-canary", { T.ep("dead"), T.ep("dead2"), T.ep("b") },
                    { policy = { header = "X-Canary" } }))))
            local retried, outside = 0, 0
            for _ = 1, 6 do
                local status, body, hdrs = T.get("web", "/", { ["X-Canary"] = "always" })
                local n = 0
                for peer in T.tried(hdrs):gmatch("[^,]+") do
                    n = n + 1
                    if peer ~= "dead" and peer ~= "dead2" and peer ~= "b" then
                        outside = outside + 1
                    end
                end
                if n > 1 then
                    retried = retried + 1
                end
                if status ~= 200 or body ~= "b" or T.header(hdrs, "X-Alternative") ~= "web-canary" then
                    ngx.say("unexpected: ", status, " ", body)
                end
            end
            ngx.say("requests with retries: ", retried > 0 and "some" or "none")
            ngx.say("attempts outside the canary: ", outside)
        }
    }
--- response_body
201 []
requests with retries: some
attempts outside the canary: 0
--- error_log
connect() failed



=== TEST 8: a canary without endpoints is not chosen; the primary answers
--- config
    location = /t {
        content_by_lua_block {
            ngx.say(T.post(T.doc(
                T.backend("web", { T.ep("a") }, { alternatives = { "web-canary" } }),
                T.backend("web-canary", {}, { policy = { header = "X-Canary", weight = 100 } }))))
            ngx.say("weight 100: ", T.routes(3, "web"))
            ngx.say("header always: ", T.routes(3, "web", { ["X-Canary"] = "always" }))
        }
    }
--- response_body
201 []
weight 100: a/-=3
header always: a/-=3
--- no_error_log
[error]



=== TEST 9: weights over the whole are rejected, naming them; the configuration in force keeps routing
--- config
    location = /t {
        content_by_lua_block {
            ngx.say(T.post(T.doc(
                T.backend("web", { T.ep("a") }, { alternatives = { "web-canary" } }),
                T.backend("web-canary", { T.ep("b") }, { policy = { header = "X-Canary" } }))))
            ngx.say(T.post(T.doc(
                T.backend("web", { T.ep("a") }, { alternatives = { "web-v2", "web-v3" } }),
                T.backend("web-v2", { T.ep("b") }, { policy = { weight = 60 } }),
                T.backend("web-v3", { T.ep("c") }, { policy = { weight = 50 } }))))
            ngx.say(T.post(T.doc(
                T.backend("web", { T.ep("a") }, { alternatives = { "nope" } }))))
            ngx.say("still: ", T.routes(3, "web", { ["X-Canary"] = "always" }))
        }
    }
--- response_body
201 []
400 [backend "web": field `alternativeBackends`: canary weights add up to more than the whole traffic: "web-v2" 60/100 + "web-v3" 50/100]
400 [backend "web": field `alternativeBackends[0]`: no backend named "nope"]
still: b/web-canary=3
--- no_error_log
[error]



=== TEST 10: an invalid header pattern disables that rule only, with a warning naming it
--- config
    location = /t {
        content_by_lua_block {
            ngx.say(T.post(T.doc(
                T.backend("web", { T.ep("a") }, { alternatives = { "web-canary" } }),
                T.backend("web-canary", { T.ep("b") },
                    { policy = { header = "X-Canary", headerPattern = "(unclosed", cookie = "canary" } }),
                T.backend("other", { T.ep("c") }))))
            ngx.say("pattern: ", T.routes(3, "web", { ["X-Canary"] = "(unclosed" }))
            ngx.say("always: ", T.routes(3, "web", { ["X-Canary"] = "always" }))
            ngx.say("cookie: ", T.routes(3, "web", { Cookie = "canary=always" }))
            ngx.say("other: ", T.routes(3, "other"))
        }
    }
--- response_body
201 []
pattern: a/-=3
always: a/-=3
cookie: b/web-canary=3
other: c/-=3
--- error_log eval
qr/backend "web-canary": trafficShapingPolicy.headerPattern "\(unclosed" is not a valid pattern/
--- no_error_log
[error]



=== TEST 11: a primary without endpoints answers 503 even for requests its canary would take, as stock
--- config
    location = /t {
        content_by_lua_block {
            ngx.say(T.post(T.doc(
                T.backend("web", {}, { alternatives = { "web-canary" } }),
                T.backend("web-canary", { T.ep("b") }, { policy = { header = "X-Canary", weight = 50 } }))))
            ngx.say("header always: ", T.routes(3, "web", { ["X-Canary"] = "always" }))
            ngx.say("by weight: ", T.routes(4, "web"))
        }
    }
--- response_body
201 []
header always: status503=3
by weight: status503=4
--- no_error_log
[error]
