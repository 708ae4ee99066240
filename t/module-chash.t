# nginx module, chash: backends with upstream-hash-by (no subset). The module
# evaluates the upstream-hash-by expression per request (ingress-nginx's
# util.generate_var_value rules, nginx-module/src/hashkey.rs) and hands it to the
# core, which picks.
#
# The same checks as the Lua front end's t/lua-chash.t, with the same expected
# output: both front ends must behave the same. The lua module only drives the test
# (cosocket requests to the ingress server, counting answers); T.chash_ring is a
# reimplementation of resty.chash (lua-resty-balancer, used by stock ingress-nginx)
# that TEST 2 checks against recorded reference decisions, so real requests can be
# checked against the endpoint stock would choose for their key.
#
#   TEST_NGINX_LOAD_MODULES="/usr/lib/nginx/modules/ndk_http_module.so \
#       /usr/lib/nginx/modules/ngx_http_lua_module.so \
#       $PWD/target/release/ngx_http_ingress_lb_module.so" \
#     HARNESS_PERL_SWITCHES='-It/compat -MIngressLbFallback' prove t/module-chash.t

use lib '.';
use t::IngressLbTest 'module';
use Test::Nginx::Socket;

# Shared by every block (t/IngressLbTest.pm): the zone, the upstream_balancer
# upstream, four endpoints ("a" to "d", each answering its letter), two ports where
# nothing listens ("dead", "dead2"), the test helpers T (t/lib/ilb_test.lua) in
# init_by_lua and the ingress server, wired like ingress-nginx's nginx.tmpl with
# the module's directives. The blocks' own http_config is appended.
ilb_setup(http_config => module_http_config(), request => 'GET /t', timeout => 20);

run_tests();

Test::More::done_testing();

__DATA__

=== TEST 1: upstream-hash-by expressions are evaluated as ingress-nginx's util.generate_var_value
--- config
    location = /t {
        content_by_lua_block {
            -- Every expression ends with (or includes) $arg_k, so each request has
            -- its own key; the endpoint must be resty.chash's for the expected key
            -- (prefix .. k .. suffix), 8 keys per expression.
            local cases = {
                { [[$request_uri]], "/g?k=", "" },
                { [[${host}x$arg_k]], "example.comx", "" },
                { [[$host-$arg_k]], "example.com-", "" },
                { [[${host}${arg_k}]], "example.com", "" },
                { [[literal$arg_k]], "literal", "" },
                -- \$name stays as written, backslash included
                { [[\$host$arg_k]], [[\$host]], "" },
                { [[x\$host$arg_k]], [[x\$host]], "" },
                -- any other backslash is dropped
                { [[a\b$arg_k]], "ab", "" },
                { [[\$-$arg_k]], "$-", "" },
                { [[a\\$host$arg_k]], [[a\$host]], "" },
                -- a "$" that starts no variable is literal
                { [[$arg_k$]], "", "$" },
                { [[$-x$arg_k]], "$-x", "" },
                { [[$$host$arg_k]], "$example.com", "" },
                { [[${host$arg_k]], "${host", "" },
                { [[${}$arg_k]], "${}", "" },
                { [[${ho-st}$arg_k]], "${ho-st}", "" },
                { [[${arg_k}2]], "", "2" },
                -- variables that are not found give nothing
                { [[$missing$arg_k]], "", "" },
                { [[a$missing-b$arg_k]], "a-b", "" },
                { [[$host.$missing.$http_x_user$arg_k]], "example.com..u1", "" },
                -- names are case-insensitive (ngx.var); prefix variables work
                { [[$HOST$arg_k]], "example.com", "" },
                { [[$cookie_sid-$arg_k]], "s1-", "" },
            }
            local names, backends = {}, {}
            local eps = { T.ep("a"), T.ep("b"), T.ep("c"), T.ep("d") }
            for i, case in ipairs(cases) do
                names[i] = "expr-" .. i
                backends[i] = T.backend(names[i], eps, { hash_by = case[1] })
            end
            ngx.say(T.post(T.doc(unpack(backends))))
            local find = T.chash_ring({ T.addr("a"), T.addr("b"), T.addr("c"), T.addr("d") })
            local bad = 0
            for i, case in ipairs(cases) do
                local ok = 0
                for k = 1, 8 do
                    local want = T.letter(find(case[2] .. k .. case[3]))
                    local status, body = T.get(names[i], "/g?k=" .. k, {
                        Host = "example.com", ["X-User"] = "u1", Cookie = "sid=s1" })
                    if status == 200 and body == want then
                        ok = ok + 1
                    end
                end
                if ok ~= 8 then
                    bad = bad + 1
                    ngx.say("MISMATCH ", case[1], ": ", ok, "/8 as resty.chash of ",
                            case[2], "<k>", case[3])
                end
            end
            ngx.say(#cases, " expressions, ", bad, " mismatches")
        }
    }
--- response_body
201 []
22 expressions, 0 mismatches
--- no_error_log
[error]
[alert]
[warn]



=== TEST 2: the test's resty.chash oracle reproduces the recorded reference decisions
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



=== TEST 3: the same key always reaches the same endpoint; keys spread over the endpoints
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



=== TEST 4: real requests reach the endpoint resty.chash picks for their key
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



=== TEST 5: $host$request_uri: the Host header is part of the key
--- config
    location = /t {
        content_by_lua_block {
            local name = "default-web-80"
            ngx.say(T.post(T.doc(T.backend(name,
                { T.ep("a"), T.ep("b"), T.ep("c"), T.ep("d") },
                { hash_by = "$host$request_uri" }))))
            local find = T.chash_ring({ T.addr("a"), T.addr("b"), T.addr("c"), T.addr("d") })
            local ok, total, moved = 0, 0, 0
            for i = 1, 20 do
                local path = "/shop/item" .. i .. "?page=" .. (i % 3)
                local got = {}
                -- $host is lowercase and without the port
                for _, host in ipairs({ "one.example", "two.example", "TWO.example:8080" }) do
                    local want = T.letter(find(host:lower():gsub(":%d+$", "") .. path))
                    local status, body = T.get(name, path, { Host = host })
                    total = total + 1
                    if status == 200 and body == want then
                        ok = ok + 1
                    end
                    got[#got + 1] = body
                end
                if got[1] ~= got[2] then
                    moved = moved + 1
                end
            end
            ngx.say("as resty.chash of host .. request_uri: ", ok, "/", total)
            ngx.say("some keys change endpoint with the host: ", moved > 0)
        }
    }
--- response_body
201 []
as resty.chash of host .. request_uri: 60/60
some keys change endpoint with the host: true
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



=== TEST 7: regex captures of the location ($1, $2, $0) can be the key
--- http_config
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_8;
        location ~ ^/shop/(\w+)/(\w+) {
            set $proxy_upstream_name $http_x_backend;
            ingress_lb_route on;
            proxy_pass http://upstream_balancer;
        }
    }
--- config
    location = /t {
        content_by_lua_block {
            local eps = { T.ep("a"), T.ep("b"), T.ep("c") }
            ngx.say(T.post(T.doc(
                T.backend("default-shop-80", eps, { hash_by = "$1" }),
                T.backend("both", eps, { hash_by = "$1-$2" }),
                T.backend("braced", eps, { hash_by = "${1}2$9" }),
                T.backend("whole", eps, { hash_by = "$0" }))))
            local find = T.chash_ring({ T.addr("a"), T.addr("b"), T.addr("c") })
            local cases = {
                { "default-shop-80", function(u, i) return "shopper" .. u end },
                { "both", function(u, i) return "shopper" .. u .. "-item" .. i end },
                { "braced", function(u, i) return "shopper" .. u .. "2" end },
                { "whole", function(u, i) return "/shop/shopper" .. u .. "/item" .. i end },
            }
            for _, case in ipairs(cases) do
                local ok = 0
                for u = 1, 20 do
                    for item = 1, 2 do
                        local want = T.letter(find(case[2](u, item)))
                        local status, body = T.request("GET", "/shop/shopper" .. u .. "/item" .. item,
                                                       { ["X-Backend"] = case[1] }, nil,
                                                       $TEST_NGINX_RAND_PORT_8)
                        if status == 200 and body == want then
                            ok = ok + 1
                        end
                    end
                end
                ngx.say(case[1], ": as resty.chash of the captures: ", ok, "/40")
            end
        }
    }
--- response_body
201 []
default-shop-80: as resty.chash of the captures: 40/40
both: as resty.chash of the captures: 40/40
braced: as resty.chash of the captures: 40/40
whole: as resty.chash of the captures: 40/40
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
            local on_dead, rescued, direct, repeated, first_wrong, stable = 0, 0, 0, 0, 0, 0
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
                    -- the retry goes along the ring: the same endpoint every time
                    local status2, body2 = T.get(name, key)
                    if status2 == 200 and body2 == body then
                        stable = stable + 1
                    end
                elseif status == 200 and body == want and tried == want then
                    direct = direct + 1
                end
            end
            ngx.say("keys on the dead endpoint: ", on_dead > 0, ", all answered: ",
                    rescued == on_dead, ", by the same endpoint again: ", stable == on_dead)
            ngx.say("other keys answered directly: ", direct == 40 - on_dead)
            ngx.say("first attempt as resty.chash: ", first_wrong == 0)
            ngx.say("peers tried twice: ", repeated)
        }
    }
--- response_body
201 []
keys on the dead endpoint: true, all answered: true, by the same endpoint again: true
other keys answered directly: true
first attempt as resty.chash: true
peers tried twice: 0
--- error_log
Connection refused) while connecting to upstream
--- no_error_log
[alert]
[crit]
no live upstreams



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



=== TEST 10: a long expression of many parts (request pool path) and a long variable name
--- config
    location = /t {
        content_by_lua_block {
            -- 40 parts: more than the evaluator's stack array; a name longer than
            -- 64 bytes is lowercased in the pool
            local parts = {}
            for i = 1, 20 do
                parts[#parts + 1] = "p" .. i .. "-${arg_k}"
            end
            local long = "http_x_" .. string.rep("long", 20)
            local expr = table.concat(parts) .. "$" .. long:upper()
            ngx.say(T.post(T.doc(T.backend("long", { T.ep("a"), T.ep("b"), T.ep("c"), T.ep("d") },
                                           { hash_by = expr }))))
            local find = T.chash_ring({ T.addr("a"), T.addr("b"), T.addr("c"), T.addr("d") })
            local ok = 0
            for k = 1, 16 do
                local key = {}
                for i = 1, 20 do
                    key[#key + 1] = "p" .. i .. "-" .. k
                end
                local want = T.letter(find(table.concat(key) .. "v" .. k))
                local status, body = T.get("long", "/?k=" .. k,
                                           { ["X-" .. string.rep("Long", 20)] = "v" .. k })
                if status == 200 and body == want then
                    ok = ok + 1
                end
            end
            ngx.say("as resty.chash: ", ok, "/16")
        }
    }
--- response_body
201 []
as resty.chash: 16/16
--- no_error_log
[error]
[alert]
[warn]
