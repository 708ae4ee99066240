# nginx module, ewma: backends with "load-balance": "ewma". Each pick goes through
# the core, which returns the picked endpoint's score: the module stores it in
# $balancer_ewma_score. After the response, the module's log phase handler reports
# $upstream_addr, $upstream_status, $upstream_connect_time and
# $upstream_response_time to the core. The statistics live in the shared zone
# "ingress_lb_ewma" (ingress_lb_ewma_zone, default 1m), laid out by the master and
# used by every worker: this file runs nginx with a master and two workers
# (reuseport spreads the connections over both).
#
# TEST 1-5 are the Lua front end's t/lua-ewma.t, with the same expected output: both
# front ends must behave the same. The lua module only drives the test (and serves
# the slow endpoints, which answer after an ngx.sleep()).
#
#   TEST_NGINX_LOAD_MODULES="/usr/lib/nginx/modules/ndk_http_module.so \
#       /usr/lib/nginx/modules/ngx_http_lua_module.so \
#       $PWD/target/release/ngx_http_ingress_lb_module.so" \
#     HARNESS_PERL_SWITCHES='-It/compat -MIngressLbFallback' prove t/module-ewma.t

use lib '.';
use t::IngressLbTest 'module';
use Test::Nginx::Socket;

master_on();
workers(2);
# nginx for TEST 7's "nginx -t" runs (the binary Test::Nginx runs)
$ENV{TEST_NGINX_BINARY} ||= (grep { -x "$_/nginx" } split /:/, $ENV{PATH} // '')
    ? 'nginx' : '/usr/sbin/nginx';

# Shared by every block (t/IngressLbTest.pm): the zone, the upstream_balancer
# upstream, four endpoints ("a" to "d", each answering its letter), two ports where
# nothing listens ("dead", "dead2"), the test helpers T (t/lib/ilb_test.lua) in
# init_by_lua and the ingress server, wired like ingress-nginx's nginx.tmpl with
# the module's directives, here with reuseport, and the slow endpoints "slow" and
# "slower". The blocks' own http_config is appended.
our $HttpConfig = module_http_config(reuseport => 1, slow_endpoints => 1) . <<'_EOC_';
    # subrequests (TEST 3, TEST 6) report their timings too
    log_subrequest on;
_EOC_

ilb_setup(http_config => $HttpConfig, request => 'GET /t', timeout => 20);

run_tests();

Test::More::done_testing();

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
        ingress_lb_route on;
        proxy_pass http://upstream_balancer;
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
no live upstreams



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



=== TEST 6: the statistics survive a reload (HUP): the new workers know the endpoints' times
--- config
    # subrequests run in the worker of /train
    location = /measure {
        internal;
        set $proxy_upstream_name $arg_backend;
        ingress_lb_route on;
        proxy_pass http://upstream_balancer;
    }
    location = /train {
        content_by_lua_block {
            ngx.say(T.post(T.doc(T.ewma("default-slow-80", { "slow" }),
                                 T.ewma("default-slower-80", { "slower" }),
                                 T.ewma("default-pair-80", { "slow", "slower" }))))
            ngx.sleep(0.6)
            for _ = 1, 2 do
                for _, backend in ipairs({ "default-slow-80", "default-slower-80" }) do
                    local res = ngx.location.capture("/measure", { args = { backend = backend } })
                    assert(res.status == 200, res.status)
                end
            end
            local ffi = require "ffi"
            ffi.cdef[[ int getppid(void); int kill(int pid, int sig); ]]
            ngx.say("hup: ", ffi.C.kill(ffi.C.getppid(), 1))
        }
    }
    location = /probe {
        content_by_lua_block {
            -- only new workers answer now; their first picks for the pair take the
            -- faster endpoint with the score measured before the reload (workers
            -- without those statistics would score both endpoints alike)
            local ok, pids = 0, {}
            for _ = 1, 6 do
                local status, body, hdrs = T.get("default-pair-80", "/")
                local score = tonumber(T.header(hdrs, "X-Ewma-Score"))
                if status == 200 and body == "slow" and score and score > 0.1 and score < 0.3 then
                    ok = ok + 1
                else
                    ngx.say(status, " ", body, " score ", tostring(score))
                end
                pids[T.header(hdrs, "X-Worker-Pid") or "?"] = true
            end
            ngx.say("slow with its measured score: ", ok, "/6")
        }
    }
--- request eval
["GET /train", "GET /probe"]
--- wait: 1
--- response_body eval
["201 []\nhup: 0\n", "slow with its measured score: 6/6\n"]
--- no_error_log
[error]
[alert]
[warn]



=== TEST 7: ingress_lb_ewma_zone sets the zone's size; a too small or repeated one is refused
--- http_config
    ingress_lb_ewma_zone 64k;
--- config
    location = /t {
        content_by_lua_block {
            local name = "default-web-80"
            ngx.say(T.post(T.doc(T.ewma(name, { "slow", "a", "b" }))))
            ngx.sleep(0.6)
            local counts = {}
            for _ = 1, 20 do
                local status, body = T.get(name, "/")
                local key = status == 200 and body or ("status" .. tostring(status))
                counts[key] = (counts[key] or 0) + 1
            end
            ngx.say("with a 64k zone, slow at most 4 of 20: ", (counts.slow or 0) <= 4)

            -- nginx -t on configurations with a bad ingress_lb_ewma_zone
            local dir = ngx.config.prefix() .. "conf/"
            local function check(directives)
                local path = dir .. "ewma-zone-test.conf"
                local f = assert(io.open(path, "w"))
                for so in ("$TEST_NGINX_LOAD_MODULES"):gmatch("%S+") do
                    if so:find("ingress_lb", 1, true) then
                        f:write("load_module ", so, ";\n")
                    end
                end
                f:write("error_log stderr;\npid ", dir, "ewma-zone-test.pid;\n",
                        "events {}\nhttp {\n", directives, "\n",
                        "map $uri $proxy_upstream_name { default x; }\n",
                        "upstream u { server 0.0.0.1; ingress_lb; }\n}\n")
                f:close()
                local p = io.popen("$TEST_NGINX_BINARY -t -p " .. ngx.config.prefix()
                                   .. " -c " .. path .. " 2>&1")
                local out = p:read("*a")
                p:close()
                return out:match("%[emerg%][^\n]*") or (out:find("test is successful", 1, true)
                                                       and "ok" or out)
            end
            for _, d in ipairs({ "ingress_lb_ewma_zone 1m;",
                                 "ingress_lb_ewma_zone 16k;",
                                 "ingress_lb_ewma_zone 1m; ingress_lb_ewma_zone 2m;",
                                 "ingress_lb_ewma_zone lots;" }) do
                ngx.say(d, " -> ", (check(d):gsub("^%[emerg%] %d+#%d+: ", ""):gsub(" in /.*$", "")))
            end
        }
    }
--- response_body
201 []
with a 64k zone, slow at most 4 of 20: true
ingress_lb_ewma_zone 1m; -> ok
ingress_lb_ewma_zone 16k; -> zone size "16k" is too small (minimum 32k)
ingress_lb_ewma_zone 1m; ingress_lb_ewma_zone 2m; -> "ingress_lb_ewma_zone" directive is duplicate
ingress_lb_ewma_zone lots; -> invalid zone size "lots"
--- no_error_log
[error]
[alert]
[warn]



=== TEST 8: a full statistics table is reported when a configuration is posted
--- http_config
    ingress_lb_ewma_zone 32k;
--- config
    location = /t {
        content_by_lua_block {
            local name = "default-web-80"
            ngx.say(T.post(T.doc(T.ewma(name, { "a" }))))
            ngx.sleep(0.6)
            local status, body = T.get(name, "/")
            ngx.say(status, " ", body)
            ngx.sleep(0.1)
            -- new endpoints start at the average of the measured ones: 3000 of them
            -- do not fit in a 32k zone
            local eps = { T.ep("a") }
            for i = 1, 3000 do
                eps[#eps + 1] = T.ep(80, "10.9." .. math.floor(i / 250) .. "." .. (i % 250 + 1))
            end
            ngx.say(T.post(T.doc(T.backend(name, eps, { load_balance = "ewma" }))))
        }
    }
--- response_body
201 []
200 a
201 []
--- error_log eval
qr/\[warn\] .*ingress_lb: backends configuration: ewma statistics table full/
--- no_error_log
[error]
[alert]
