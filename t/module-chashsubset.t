# nginx module, chashsubset: backends with upstream-hash-by and
# upstream-hash-by-subset. The module evaluates the expression per request
# (nginx-module/src/hashkey.rs) and hands it to the core, which picks a subset on a
# resty.chash ring of the subset names ("set1", "set2", ...) and an endpoint of it at
# random, as ingress-nginx's balancer/chashsubset.lua does.
#
# The same checks as the Lua front end's t/lua-chashsubset.t, with the same expected
# output: both front ends must behave the same. The lua module only drives the test.
#
#   TEST_NGINX_LOAD_MODULES="/usr/lib/nginx/modules/ndk_http_module.so \
#       /usr/lib/nginx/modules/ngx_http_lua_module.so \
#       $PWD/target/release/ngx_http_ingress_lb_module.so" \
#     HARNESS_PERL_SWITCHES='-It/compat -MIngressLbFallback' prove t/module-chashsubset.t

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

=== TEST 1: a key only ever reaches the endpoints of its subset, each of them
--- config
    location = /t {
        content_by_lua_block {
            local name = "default-web-80"
            ngx.say(T.post(T.doc(T.backend(name,
                { T.ep("a"), T.ep("b"), T.ep("c"), T.ep("d") },
                { hash_by = "$http_x_user", subset = true, subset_size = 2 }))))
            local subset_of = T.subsets({ "a", "b", "c", "d" }, 2)
            local inside, whole, used_sets = 0, 0, {}
            for u = 1, 8 do
                local user = "user" .. u
                local subset, set = subset_of(user)
                used_sets[set] = true
                local seen, outside = {}, false
                for _ = 1, 20 do
                    local status, body = T.get(name, "/", { ["X-User"] = user })
                    if status ~= 200 or not subset[body] then
                        outside = true
                        ngx.say(user, ": ", status, " ", body, " outside ", T.set_text(subset))
                    end
                    seen[body] = true
                end
                if not outside then
                    inside = inside + 1
                end
                if T.set_text(seen) == T.set_text(subset) then
                    whole = whole + 1
                end
            end
            ngx.say("keys within their subset: ", inside, "/8")
            ngx.say("keys spread over their whole subset: ", whole, "/8")
            ngx.say("both subsets used: ", used_sets.set1 and used_sets.set2 and true)
        }
    }
--- response_body
201 []
keys within their subset: 8/8
keys spread over their whole subset: 8/8
both subsets used: true
--- no_error_log
[error]
[alert]
[warn]



=== TEST 2: the last subset is padded with endpoints from the start of the list
--- config
    location = /t {
        content_by_lua_block {
            local name = "default-web-80"
            ngx.say(T.post(T.doc(T.backend(name, { T.ep("a"), T.ep("b"), T.ep("c") },
                { hash_by = "$http_x_user", subset = true, subset_size = 2 }))))
            -- set1 = { a, b }, set2 = { c, a }
            local subset_of = T.subsets({ "a", "b", "c" }, 2)
            local found, ok = {}, 0
            for u = 1, 40 do
                local user = "user" .. u
                local subset, set = subset_of(user)
                if not found[set] then
                    found[set] = user
                end
            end
            for _, set in ipairs({ "set1", "set2" }) do
                local user = found[set]
                local seen = {}
                for _ = 1, 20 do
                    local status, body = T.get(name, "/", { ["X-User"] = user })
                    seen[status .. body] = true
                end
                local got = {}
                for k in pairs(seen) do
                    got[#got + 1] = k
                end
                table.sort(got)
                ngx.say(set, " (", T.set_text(subset_of(user)), "): ", table.concat(got, " "))
            end
        }
    }
--- response_body
201 []
set1 (a b): 200a 200b
set2 (a c): 200a 200c
--- no_error_log
[error]
[alert]
[warn]



=== TEST 3: without upstream-hash-by-subset-size the subsets have 3 endpoints
--- config
    location = /t {
        content_by_lua_block {
            local name = "default-web-80"
            ngx.say(T.post(T.doc(T.backend(name,
                { T.ep("a"), T.ep("b"), T.ep("c"), T.ep("d") },
                { hash_by = "$http_x_user", subset = true, subset_size = 0 }))))
            -- set1 = { a, b, c }, set2 = { d, a, b }
            local subset_of = T.subsets({ "a", "b", "c", "d" }, 3)
            local ok, total = 0, 0
            for u = 1, 10 do
                local user = "user" .. u
                local subset = subset_of(user)
                for _ = 1, 6 do
                    local status, body = T.get(name, "/", { ["X-User"] = user })
                    total = total + 1
                    if status == 200 and subset[body] then
                        ok = ok + 1
                    end
                end
            end
            ngx.say("within the subset: ", ok, "/", total)
        }
    }
--- response_body
201 []
within the subset: 60/60
--- no_error_log
[error]
[alert]
[warn]



=== TEST 4: a dead endpoint of the subset is retried on the other one, never twice
--- config
    location = /t {
        content_by_lua_block {
            local name = "default-web-80"
            ngx.say(T.post(T.doc(T.backend(name,
                { T.ep("a"), T.ep("dead"), T.ep("b"), T.ep("c") },
                { hash_by = "$http_x_user", subset = true, subset_size = 2 }))))
            -- set1 = { a, dead }, set2 = { b, c }
            local subset_of = T.subsets({ "a", "dead", "b", "c" }, 2)
            local user
            for u = 1, 40 do
                if subset_of("user" .. u).dead then
                    user = "user" .. u
                    break
                end
            end
            local counts, via_dead, repeated = {}, 0, 0
            for _ = 1, 20 do
                local status, body, hdrs = T.get(name, "/", { ["X-User"] = user })
                local key = status == 200 and body or ("status" .. tostring(status))
                counts[key] = (counts[key] or 0) + 1
                local tried = T.tried(hdrs)
                if tried == "dead,a" then
                    via_dead = via_dead + 1
                elseif tried ~= "a" then
                    repeated = repeated + 1
                    ngx.say("tried: ", tried)
                end
            end
            ngx.say("answers: ", T.counts(counts))
            ngx.say("retried after the dead endpoint: ", via_dead > 0)
            ngx.say("other paths: ", repeated)
        }
    }
--- response_body
201 []
answers: a=20
retried after the dead endpoint: true
other paths: 0
--- error_log
Connection refused) while connecting to upstream
--- no_error_log
[alert]
[crit]
no live upstreams



=== TEST 5: many keys use every endpoint; a configuration change moves keys with their subset
--- config
    location = /t {
        content_by_lua_block {
            local name = "default-web-80"
            local function run(label, letters)
                local eps = {}
                for i, l in ipairs(letters) do
                    eps[i] = T.ep(l)
                end
                ngx.say(label, ": ", T.post(T.doc(T.backend(name, eps,
                    { hash_by = "$arg_k", subset = true, subset_size = 2 }))))
                local subset_of = T.subsets(letters, 2)
                local ok, counts = 0, {}
                for k = 1, 60 do
                    local status, body = T.get(name, "/?k=" .. k)
                    if status == 200 and subset_of(tostring(k))[body] then
                        ok = ok + 1
                    end
                    counts[body] = (counts[body] or 0) + 1
                end
                local used = 0
                for _ in pairs(counts) do
                    used = used + 1
                end
                ngx.say("  within the subset: ", ok, "/60, endpoints used: ", used)
            end
            run("four", { "a", "b", "c", "d" })
            run("three", { "c", "a", "d" })
        }
    }
--- response_body
four: 201 []
  within the subset: 60/60, endpoints used: 4
three: 201 []
  within the subset: 60/60, endpoints used: 3
--- no_error_log
[error]
[alert]
[warn]
