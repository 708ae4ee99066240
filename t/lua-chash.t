# Lua front end, chash: backends with upstream-hash-by (no subset). The Lua side
# evaluates the upstream-hash-by expression per request (ingress-nginx's
# util.generate_var_value rules, lua/ingress_lb/hash_by.lua) and hands it to the
# core, which picks.
#
#   HARNESS_PERL_SWITCHES='-It/compat -MIngressLbFallback' prove t/lua-chash.t
#
# Environment (defaults in t/IngressLbTest.pm when unset): TEST_NGINX_BINARY,
# TEST_NGINX_LOAD_MODULES, TEST_NGINX_ILB_LUA_DIR (absolute path of lua/),
# TEST_NGINX_ILB_LIB (absolute path of libingress_lb.so), TEST_NGINX_ILB_TEST_LIB
# (absolute path of t/lib/, the test helpers).
#
# Compatibility with stock: the endpoint resty.chash (lua-resty-balancer, used by
# ingress-nginx) chooses for a key depends only on the endpoint ids "ip:port" and
# the key. Reference decisions recorded from the real stack (tests/data/, from
# shared/vectors/resty-chash-and-sticky.json: the "three" and "ten" endpoint sets,
# 500 keys each) are embedded below. Loopback backends cannot have those 10.x
# addresses, so:
#   * T.chash_ring (a small reimplementation of resty.chash in the test helpers)
#     must reproduce all 1000 recorded decisions (TEST 3): it is then a faithful
#     oracle;
#   * the core, through the Lua binding, must reproduce the recorded decisions for
#     the recorded endpoint sets (TEST 4, decisions only: nothing is sent to those
#     addresses);
#   * real requests to real loopback backends must reach the endpoint the oracle
#     predicts for their key (TEST 5 onwards).

use lib '.';
use t::IngressLbTest 'lua';
use Test::Nginx::Socket 'no_plan';

# Shared by every block (t/IngressLbTest.pm): the shared dicts, init_by_lua (with
# the test helpers T of t/lib/ilb_test.lua)/init_worker_by_lua, the
# upstream_balancer upstream, four endpoints ("a" to "d", each answering its
# letter), two ports where nothing listens ("dead", "dead2") and the ingress
# server, wired like ingress-nginx's nginx.tmpl (per-location $location_path,
# $balancer_ewma_score, $proxy_upstream_name; here the backend name comes from the
# X-Backend request header). The blocks' own http_config is appended.
ilb_setup(http_config => lua_http_config(prohibited_localhost_port => 1),
          request => 'GET /t', timeout => 20);

run_tests();

__DATA__

=== TEST 1: upstream-hash-by expressions are evaluated as ingress-nginx's util.generate_var_value
--- config
    location = /t {
        content_by_lua_block {
            local hash_by = require("ingress_lb.hash_by")
            local var = {
                request_uri = "/p?q=1", host = "example.com", arg_a = "A",
                http_x_user = "u1", binary_remote_addr = "\1\2\3\4",
                [0] = "cap0", [1] = "cap1", [2] = "cap2", [12] = "cap12",
            }
            local cases = {
                { [[$request_uri]], "/p?q=1" },
                { [[${host}x]], "example.comx" },
                { [[$host-$arg_a]], "example.com-A" },
                { [[${host}${arg_a}]], "example.comA" },
                { [[literal]], "literal" },
                { [[]], "" },
                -- \$name stays as written, backslash included
                { [[\$host]], [[\$host]] },
                { [[x\$host$arg_a]], [[x\$hostA]] },
                -- any other backslash is dropped
                { [[a\b]], "ab" },
                { [[\$-]], "$-" },
                { [[a\\$host]], [[a\$host]] },
                -- a "$" that starts no variable is literal
                { [[$]], "$" },
                { [[x$]], "x$" },
                { [[$-x]], "$-x" },
                { [[$$host]], "$example.com" },
                { [[${host]], "${host" },
                { [[${}]], "${}" },
                { [[${ho-st}]], "${ho-st}" },
                -- digits only: regex captures
                { [[$1-$2]], "cap1-cap2" },
                { [[${1}2]], "cap12" },
                { [[$12]], "cap12" },
                { [[$0]], "cap0" },
                -- variables that are not found give nothing
                { [[$missing]], "" },
                { [[a$missing-b]], "a-b" },
                { [[$host.$missing.$http_x_user]], "example.com..u1" },
                { [[$binary_remote_addr]], "\1\2\3\4" },
            }
            local bad = 0
            for _, case in ipairs(cases) do
                local got = hash_by.evaluate(hash_by.compile(case[1]), var)
                if got ~= case[2] then
                    bad = bad + 1
                    ngx.say("MISMATCH ", case[1], ": ", got, " expected ", case[2])
                end
            end
            ngx.say(#cases, " expressions, ", bad, " mismatches")
            ngx.say("one variable: ", hash_by.compile("$request_uri").var,
                    ", capture: ", type(hash_by.compile("$1").var),
                    ", constant: ", hash_by.compile([[x\y$]]).const)
        }
    }
--- response_body
26 expressions, 0 mismatches
one variable: request_uri, capture: number, constant: xy$
--- no_error_log
[error]



=== TEST 2: the same key always reaches the same endpoint; keys spread over the endpoints
--- config
    location = /t {
        content_by_lua_block {
            local name = "default-web-80"
            ngx.say(T.post(T.doc(T.backend(name, { T.ep("a"), T.ep("b"), T.ep("c") },
                                           { hash_by = "$request_uri" }))))
            local stable, used = 0, {}
            for i = 1, 30 do
                local seen, n, only = {}, 0, nil
                for _ = 1, 4 do
                    local status, body = T.get(name, "/item/" .. i)
                    local key = status .. " " .. body
                    if not seen[key] then
                        seen[key] = true
                        n = n + 1
                        only = key
                    end
                end
                if n == 1 then
                    stable = stable + 1
                    used[only] = true
                end
            end
            local endpoints = {}
            for k in pairs(used) do
                endpoints[#endpoints + 1] = k
            end
            table.sort(endpoints)
            ngx.say("keys always on one endpoint: ", stable, "/30")
            ngx.say("endpoints used: ", table.concat(endpoints, ", "))
        }
    }
--- response_body
201 []
keys always on one endpoint: 30/30
endpoints used: 200 a, 200 b, 200 c
--- no_error_log
[error]
[alert]
[warn]



=== TEST 3: the test's resty.chash oracle reproduces the recorded reference decisions
--- config
    location = /t {
        content_by_lua_block {
            for _, set in ipairs(T.VECTORS) do
                local find = T.chash_ring(set.eps)
                local ok = 0
                for i = 1, #set.choices do
                    local want = set.eps[set.choices:byte(i) - 96]
                    if find(T.vector_key(i)) == want then
                        ok = ok + 1
                    end
                end
                ngx.say(set.name, ": ", ok, "/", #set.choices)
            end
        }
    }
--- response_body
three: 500/500
ten: 500/500
--- no_error_log
[error]



=== TEST 4: through the Lua binding, the core reproduces the recorded decisions (no traffic)
--- config
    location = /t {
        content_by_lua_block {
            local core = require("ingress_lb.core")
            local backends = {}
            for _, set in ipairs(T.VECTORS) do
                local eps = {}
                for i, ep in ipairs(set.eps) do
                    local address, port = ep:match("^(.+):(%d+)$")
                    eps[i] = { address = address, port = port }
                end
                backends[#backends + 1] = T.backend("vectors-" .. set.name, eps,
                                                    { hash_by = "$request_uri" })
            end
            -- applied to this worker's core only: nothing is proxied
            assert(core.apply(T.doc(unpack(backends))))
            for _, set in ipairs(T.VECTORS) do
                local name = "vectors-" .. set.name
                local d = core.backend(name)
                ngx.say(name, ": ", core.algorithm_name(d.algorithm), ", hash key needed: ",
                        d.hash_key, ", expression: ", d.hash_by)
                local ok = 0
                for i = 1, #set.choices do
                    local ctx = core.new_ctx()
                    local peer = core.pick(name, ctx, T.vector_key(i), nil, nil, nil, nil,
                                           false, ngx.now())
                    core.release_ctx(ctx)
                    if peer == set.eps[set.choices:byte(i) - 96] then
                        ok = ok + 1
                    end
                end
                ngx.say("  ", ok, "/", #set.choices, " as recorded")
            end
        }
    }
--- response_body
vectors-three: chash, hash key needed: true, expression: $request_uri
  500/500 as recorded
vectors-ten: chash, hash key needed: true, expression: $request_uri
  500/500 as recorded
--- no_error_log
[error]



=== TEST 5: real requests reach the endpoint resty.chash picks for their key
--- config
    location = /t {
        content_by_lua_block {
            local name = "default-web-80"
            ngx.say(T.post(T.doc(T.backend(name,
                { T.ep("a"), T.ep("b"), T.ep("c"), T.ep("d") },
                { hash_by = "$request_uri" }))))
            local find = T.chash_ring({ T.addr("a"), T.addr("b"), T.addr("c"), T.addr("d") })
            local ok, per = 0, {}
            for i = 1, 80 do
                local key = T.vector_key(i)
                local want = T.letter(find(key))
                local status, body = T.get(name, key)
                if status == 200 and body == want then
                    ok = ok + 1
                else
                    ngx.say("key ", key, ": ", status, " ", body, ", resty.chash: ", want)
                end
                per[body] = (per[body] or 0) + 1
            end
            ngx.say("as resty.chash: ", ok, "/80")
            ngx.say("every endpoint used: ", per.a ~= nil and per.b ~= nil and per.c ~= nil
                                             and per.d ~= nil)
        }
    }
--- response_body
201 []
as resty.chash: 80/80
every endpoint used: true
--- no_error_log
[error]
[alert]
[warn]



=== TEST 6: a composite expression (header, literal, query argument) is the key
--- config
    location = /t {
        content_by_lua_block {
            local name = "default-web-80"
            ngx.say(T.post(T.doc(T.backend(name, { T.ep("a"), T.ep("b"), T.ep("c") },
                                           { hash_by = "${http_x_user}-$arg_region" }))))
            local find = T.chash_ring({ T.addr("a"), T.addr("b"), T.addr("c") })
            local ok, total = 0, 0
            for u = 1, 12 do
                for _, region in ipairs({ "eu", "us" }) do
                    local want = T.letter(find("user" .. u .. "-" .. region))
                    for r = 1, 2 do
                        -- the path varies: it is not part of the key
                        local status, body = T.get(name, "/any/" .. r .. "?region=" .. region,
                                                   { ["X-User"] = "user" .. u })
                        total = total + 1
                        if status == 200 and body == want then
                            ok = ok + 1
                        end
                    end
                end
            end
            -- no header, no argument: the key is "-"
            local status, body = T.get(name, "/")
            ngx.say("as resty.chash: ", ok, "/", total)
            ngx.say("empty parts: ", status, " ", body == T.letter(find("-")))
        }
    }
--- response_body
201 []
as resty.chash: 48/48
empty parts: 200 true
--- no_error_log
[error]
[alert]
[warn]



=== TEST 7: regex captures of the location ($1) can be the key
--- http_config
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_8;
        location ~ ^/shop/(\w+)/ {
            set $proxy_upstream_name "default-shop-80";
            rewrite_by_lua_block {
                balancer.rewrite()
            }
            proxy_pass http://upstream_balancer;
            log_by_lua_block {
                balancer.log()
            }
        }
    }
--- config
    location = /t {
        content_by_lua_block {
            ngx.say(T.post(T.doc(T.backend("default-shop-80",
                { T.ep("a"), T.ep("b"), T.ep("c") }, { hash_by = "$1" }))))
            local find = T.chash_ring({ T.addr("a"), T.addr("b"), T.addr("c") })
            local ok = 0
            for u = 1, 20 do
                local want = T.letter(find("shopper" .. u))
                for item = 1, 2 do
                    local status, body = T.request("GET", "/shop/shopper" .. u .. "/item" .. item,
                                                   nil, nil, $TEST_NGINX_RAND_PORT_8)
                    if status == 200 and body == want then
                        ok = ok + 1
                    end
                end
            end
            ngx.say("as resty.chash of the capture: ", ok, "/40")
        }
    }
--- response_body
201 []
as resty.chash of the capture: 40/40
--- no_error_log
[error]
[alert]
[warn]



=== TEST 8: a key whose endpoint is dead is retried on another endpoint, never on a tried one
--- config
    location = /t {
        content_by_lua_block {
            local name = "default-web-80"
            ngx.say(T.post(T.doc(T.backend(name, { T.ep("a"), T.ep("dead"), T.ep("b") },
                                           { hash_by = "$request_uri" }))))
            local find = T.chash_ring({ T.addr("a"), T.addr("dead"), T.addr("b") })
            local on_dead, rescued, direct, repeated, first_wrong = 0, 0, 0, 0, 0
            for i = 1, 40 do
                local key = T.vector_key(i)
                local want = T.letter(find(key))
                local status, body, hdrs = T.get(name, key)
                local tried = T.tried(hdrs)
                local seen = {}
                for peer in tried:gmatch("[^,]+") do
                    if seen[peer] then
                        repeated = repeated + 1
                    end
                    seen[peer] = true
                end
                if tried:match("^[^,]+") ~= want then
                    first_wrong = first_wrong + 1
                end
                if want == "dead" then
                    on_dead = on_dead + 1
                    if status == 200 and (body == "a" or body == "b") then
                        rescued = rescued + 1
                    end
                elseif status == 200 and body == want and tried == want then
                    direct = direct + 1
                end
            end
            ngx.say("keys on the dead endpoint: ", on_dead > 0, ", all answered: ",
                    rescued == on_dead)
            ngx.say("other keys answered directly: ", direct == 40 - on_dead)
            ngx.say("first attempt as resty.chash: ", first_wrong == 0)
            ngx.say("peers tried twice: ", repeated)
        }
    }
--- response_body
201 []
keys on the dead endpoint: true, all answered: true
other keys answered directly: true
first attempt as resty.chash: true
peers tried twice: 0
--- error_log
Connection refused) while connecting to upstream
--- no_error_log
[alert]
[crit]
no peer was returned



=== TEST 9: the hash-by expression follows configuration changes
--- config
    location = /t {
        content_by_lua_block {
            local name = "default-web-80"
            local eps = { T.ep("a"), T.ep("b"), T.ep("c") }
            local find = T.chash_ring({ T.addr("a"), T.addr("b"), T.addr("c") })
            local function run(label, expr, key_of)
                ngx.say(label, ": ", T.post(T.doc(T.backend(name, eps, { hash_by = expr }))))
                local ok = 0
                for i = 1, 20 do
                    local status, body = T.get(name, "/p" .. i, { ["X-Key"] = "k" .. (i * 7) })
                    if status == 200 and body == T.letter(find(key_of(i))) then
                        ok = ok + 1
                    end
                end
                ngx.say("  as resty.chash: ", ok, "/20")
            end
            run("by uri", "$uri", function(i) return "/p" .. i end)
            run("by header", "$http_x_key", function(i) return "k" .. (i * 7) end)
            run("by both", "$http_x_key$uri", function(i) return "k" .. (i * 7) .. "/p" .. i end)
        }
    }
--- response_body
by uri: 201 []
  as resty.chash: 20/20
by header: 201 []
  as resty.chash: 20/20
by both: 201 []
  as resty.chash: 20/20
--- no_error_log
[error]
[alert]
[warn]
