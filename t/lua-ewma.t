# Lua front end, ewma: backends with "load-balance": "ewma". balance() picks through
# the core and sets $balancer_ewma_score to the picked endpoint's score; log()
# reports $upstream_addr, $upstream_status, $upstream_connect_time and
# $upstream_response_time to the core (ilb_core_observe). The statistics are mapped
# in the master (balancer.lua required in init_by_lua) and shared by the workers:
# this file runs nginx with a master and two workers (reuseport spreads the
# connections over both).
#
#   HARNESS_PERL_SWITCHES='-It/compat -MIngressLbFallback' prove t/lua-ewma.t
#
# Environment (defaults in t/IngressLbTest.pm when unset): TEST_NGINX_BINARY,
# TEST_NGINX_LOAD_MODULES, TEST_NGINX_ILB_LUA_DIR (absolute path of lua/),
# TEST_NGINX_ILB_LIB (absolute path of libingress_lb.so), TEST_NGINX_ILB_TEST_LIB
# (absolute path of t/lib/, the test helpers).
#
# Slow endpoints answer after an ngx.sleep() in their own server block.

use lib '.';
use t::IngressLbTest 'lua';
use Test::Nginx::Socket 'no_plan';

master_on();
workers(2);

# Shared by every block (t/IngressLbTest.pm): the shared dicts, init_by_lua (with
# the test helpers T of t/lib/ilb_test.lua)/init_worker_by_lua, the
# upstream_balancer upstream, four endpoints ("a" to "d", each answering its
# letter), two ports where nothing listens ("dead", "dead2") and the ingress
# server, wired like ingress-nginx's nginx.tmpl (per-location $location_path,
# $balancer_ewma_score, $proxy_upstream_name; here the backend name comes from the
# X-Backend request header), here with reuseport, and the slow endpoints "slow"
# and "slower". The blocks' own http_config is appended.
ilb_setup(http_config => lua_http_config(prohibited_localhost_port => 1, reuseport => 1,
                                         slow_endpoints => 1),
          request => 'GET /t', timeout => 20);

run_tests();

__DATA__

=== TEST 1: a slow endpoint gets much less traffic than the fast ones
--- config
    location = /t {
        content_by_lua_block {
            local name = "default-web-80"
            -- "slower" answers after 0.3 s: a fast endpoint's score passes it only if
            -- one of its answers takes longer than that (a scheduling stall on a
            -- loaded machine once made a 0.15 s endpoint lose its margin)
            ngx.say(T.post(T.doc(T.ewma(name, { "slower", "a", "b" }))))
            ngx.sleep(0.6)
            local counts = {}
            for _ = 1, 40 do
                local status, body = T.get(name, "/")
                local key = status == 200 and body or ("status" .. tostring(status))
                counts[key] = (counts[key] or 0) + 1
            end
            ngx.say("slow at most 5 of 40: ", (counts.slower or 0) <= 5)
            ngx.say("fast ones: ", (counts.a or 0) + (counts.b or 0) >= 35,
                    ", both used: ", counts.a ~= nil and counts.b ~= nil)
            if (counts.slower or 0) > 5 then
                ngx.say(T.counts(counts))
            end
        }
    }
--- response_body
201 []
slow at most 5 of 40: true
fast ones: true, both used: true
--- no_error_log
[error]
[alert]
[warn]



=== TEST 2: $balancer_ewma_score carries the picked endpoint's score (ewma only)
--- config
    location = /t {
        content_by_lua_block {
            ngx.say(T.post(T.doc(T.ewma("default-web-80", { "slow", "slower" }),
                                 T.ewma("default-one-80", { "a" }),
                                 T.backend("default-rr-80", { T.ep("a"), T.ep("b") }))))
            ngx.sleep(0.6)
            -- an endpoint without statistics scores 0 when drawn (and is drawn with
            -- odds 1/2 while unmeasured): first both slow endpoints answer, then every
            -- pick carries the picked one's response time (0.15 or 0.3 s)
            ngx.say("both measured: ",
                    T.get_until_answered("default-web-80", { "slow", "slower" }, 40))
            ngx.say("ewma: response times: ", T.scores_within("default-web-80", 6, 0.05, 1))
            local _, _, hdrs = T.get("default-one-80", "/")
            ngx.say("one endpoint: ", T.header(hdrs, "X-Ewma-Score"))
            _, _, hdrs = T.get("default-rr-80", "/")
            ngx.say("round robin: ", T.header(hdrs, "X-Ewma-Score"))
        }
    }
--- response_body
201 []
both measured: true
ewma: response times: 6/6
one endpoint: -1
round robin: -1
--- no_error_log
[error]
[alert]
[warn]



=== TEST 3: the statistics are shared: a worker that never used an endpoint knows its times
--- config
    # subrequests run in the worker of /t
    location = /measure {
        internal;
        set $proxy_upstream_name $arg_backend;
        rewrite_by_lua_block {
            balancer.rewrite()
        }
        proxy_pass http://upstream_balancer;
        log_by_lua_block {
            balancer.log()
        }
    }
    location = /t {
        content_by_lua_block {
            ngx.say(T.post(T.doc(T.ewma("default-slow-80", { "slow" }),
                                 T.ewma("default-slower-80", { "slower" }),
                                 T.ewma("default-pair-80", { "slow", "slower" }))))
            ngx.sleep(0.6)
            -- this worker alone measures both endpoints, through backends of one
            -- endpoint each
            for _ = 1, 2 do
                for _, backend in ipairs({ "default-slow-80", "default-slower-80" }) do
                    local res = ngx.location.capture("/measure", { args = { backend = backend } })
                    assert(res.status == 200, res.status)
                end
            end
            -- the other worker's first pick for the pair: the faster one, with the
            -- score measured here (a worker without those statistics would score
            -- both endpoints alike, with nothing measured)
            local me = tostring(ngx.worker.pid())
            local found
            for _ = 1, 60 do
                local status, body, hdrs = T.get("default-pair-80", "/")
                if T.header(hdrs, "X-Worker-Pid") ~= me then
                    found = { status = status, body = body,
                              score = tonumber(T.header(hdrs, "X-Ewma-Score")) }
                    break
                end
            end
            if not found then
                ngx.say("no answer from the other worker")
                return
            end
            ngx.say("other worker: ", found.status, " ", found.body, ", score measured elsewhere: ",
                    found.score ~= nil and found.score > 0.1 and found.score < 0.3)
            if not (found.score and found.score > 0.1) then
                ngx.say("score: ", tostring(found.score))
            end
        }
    }
--- response_body
201 []
other worker: 200 slow, score measured elsewhere: true
--- no_error_log
[error]
[alert]
[warn]



=== TEST 4: a dead endpoint is retried past, never twice, and then avoided
--- config
    location = /t {
        content_by_lua_block {
            local name = "default-web-80"
            ngx.say(T.post(T.doc(T.ewma(name, { "dead", "a", "b" }))))
            ngx.sleep(0.6)
            local counts, dead_tried, repeated = {}, 0, 0
            for _ = 1, 30 do
                local status, body, hdrs = T.get(name, "/")
                local key = status == 200 and body or ("status" .. tostring(status))
                counts[key] = (counts[key] or 0) + 1
                local seen = {}
                for peer in T.tried(hdrs):gmatch("[^,]+") do
                    if seen[peer] then
                        repeated = repeated + 1
                    end
                    seen[peer] = true
                end
                if seen.dead then
                    dead_tried = dead_tried + 1
                end
            end
            ngx.say("all answered: ", (counts.a or 0) + (counts.b or 0) == 30)
            -- each worker may try it before it has a score
            ngx.say("dead endpoint tried at most 3 times: ", dead_tried <= 3)
            ngx.say("peers tried twice: ", repeated)
            if dead_tried > 3 then
                ngx.say("dead tried ", dead_tried, " times")
            end
        }
    }
--- response_body
201 []
all answered: true
dead endpoint tried at most 3 times: true
peers tried twice: 0
--- no_error_log
[alert]
[crit]
no peer was returned



=== TEST 5: an nginx.conf without $balancer_ewma_score works all the same
--- config
    location = /t {
        content_by_lua_block {
            local name = "default-web-80"
            ngx.say(T.post(T.doc(T.ewma(name, { "a", "b" }))))
            ngx.sleep(0.6)
            local counts = {}
            for _ = 1, 10 do
                local status, body = T.get(name, "/")
                local key = status == 200 and body or ("status" .. tostring(status))
                counts[key] = (counts[key] or 0) + 1
            end
            ngx.say("answered: ", (counts.a or 0) + (counts.b or 0))
        }
    }
--- response_body
201 []
answered: 10
--- no_error_log
[error]
[alert]
[warn]
