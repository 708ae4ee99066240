# Lua front end (lua/balancer.lua, lua/configuration.lua, lua/ingress_lb/core.lua)
# against the real core library, in nginx with lua-nginx-module.
#
#   PERL5OPT='-It/compat -MIngressLbFallback' prove t/lua-*.t
#
# Environment (defaults in t/IngressLbTest.pm when unset): TEST_NGINX_BINARY,
# TEST_NGINX_LOAD_MODULES, TEST_NGINX_ILB_LUA_DIR (absolute path of lua/),
# TEST_NGINX_ILB_LIB (absolute path of libingress_lb.so), TEST_NGINX_ILB_TEST_LIB
# (absolute path of t/lib/, the test helpers).

use lib '.';
use t::IngressLbTest 'lua';
use Test::Nginx::Socket 'no_plan';

# Shared by every block (t/IngressLbTest.pm): the shared dicts, init_by_lua (with
# the test helpers T of t/lib/ilb_test.lua)/init_worker_by_lua, the
# upstream_balancer upstream, three endpoints ("a", "b", "c") and the ingress
# server (proxy location and /configuration, whose small client_body_buffer_size
# makes larger documents go through a temporary file), wired like ingress-nginx's
# nginx.tmpl. The blocks' own http_config is appended.
ilb_setup(http_config => lua_http_config(endpoints => [qw(a b c)], config_body_buffer => '8k'),
          request => 'GET /t', timeout => 10);

run_tests();

__DATA__

=== TEST 1: the library configured in init_by_lua is loaded; version and result names
--- config
    location = /t {
        content_by_lua_block {
            local core = require("ingress_lb.core")
            ngx.say("path: ", core.library_path() == "$TEST_NGINX_ILB_LIB")
            ngx.say("version: ", core.version():match("^%d+%.%d+%.%d+") ~= nil)
            ngx.say(core.result_name(core.CONFIG_REJECTED), " ",
                    core.result_name(core.UNKNOWN_BACKEND), " ",
                    core.result_name(core.NO_ENDPOINTS), " ", core.result_name(99))
        }
    }
--- response_body
path: true
version: true
ILB_CONFIG_REJECTED ILB_UNKNOWN_BACKEND ILB_NO_ENDPOINTS ILB_UNKNOWN_RESULT
--- no_error_log
[error]



=== TEST 2: validate publishes nothing, apply does, an identical document is no new generation
--- config
    location = /t {
        content_by_lua_block {
            local core = require("ingress_lb.core")
            local doc = T.doc(T.full_backend("default-web-80", { T.ep("a") }))
            local g0 = core.generation()
            ngx.say("validate: ", core.validate(doc), " ", core.generation() - g0, " ",
                    (core.has_backend("default-web-80")))
            ngx.say("apply: ", core.apply(doc), " ", core.generation() - g0, " ",
                    core.has_backend("default-web-80"))
            ngx.say("again: ", core.apply(doc), " ", core.generation() - g0)
            local ok, err, rc = core.validate("[1]")
            ngx.say("invalid: ", ok, " ", rc == core.CONFIG_REJECTED, " ", #err > 0)
            ok, err, rc = core.apply(42)
            ngx.say("not a string: ", ok, " ", err)
            ngx.say("unchanged: ", core.generation() - g0, " ", core.has_backend("default-web-80"))
        }
    }
--- response_body
validate: true 0 false
apply: true 1 true
again: true 1
invalid: nil true true
not a string: nil backends document must be a string (or a pointer and a length), got number
unchanged: 1 true
--- no_error_log
[error]



=== TEST 3: picks with one context exclude the peers already tried
--- config
    location = /t {
        content_by_lua_block {
            local core = require("ingress_lb.core")
            assert(core.apply(T.doc(T.full_backend("default-web-80",
                { T.ep("a"), T.ep("b"), T.ep("c") }))))
            for round = 1, 3 do
                local ctx = core.new_ctx()
                local seen, n = {}, 0
                for _ = 1, 3 do
                    local peer = assert(core.pick("default-web-80", ctx))
                    if not seen[peer] then
                        n = n + 1
                    end
                    seen[peer] = true
                end
                local fourth = core.pick("default-web-80", ctx)
                ngx.say("round ", round, ": distinct ", n, ", fourth is a known peer: ",
                        seen[fourth] == true, ", tried_len ", ctx.tried_len)
                core.release_ctx(ctx)
            end
        }
    }
--- response_body
round 1: distinct 3, fourth is a known peer: true, tried_len 3
round 2: distinct 3, fourth is a known peer: true, tried_len 3
round 3: distinct 3, fourth is a known peer: true, tried_len 3
--- no_error_log
[error]



=== TEST 4: pick results: "ip:port", unknown backend, backend without endpoints
--- config
    location = /t {
        content_by_lua_block {
            local core = require("ingress_lb.core")
            assert(core.apply(T.doc(T.full_backend("default-web-80", { T.ep("b") }),
                                    T.full_backend("default-empty-80", {}))))
            local ctx = core.new_ctx()
            ngx.say(core.pick("default-web-80", ctx) == "127.0.0.1:" .. T.PORTS.b)
            local peer = core.last_peer()
            ngx.say(peer.port == T.PORTS.b, " ", peer.family, " ", peer.index)
            local p, rc = core.pick("default-none-80", ctx)
            ngx.say(p, " ", core.result_name(rc))
            p, rc = core.pick("default-empty-80", ctx)
            ngx.say(p, " ", core.result_name(rc))
            ngx.say(core.has_backend("default-empty-80"), " ",
                    core.result_name(select(2, core.has_backend("default-empty-80"))))
            core.release_ctx(ctx)
        }
    }
--- response_body
true
true 4 0
nil ILB_UNKNOWN_BACKEND
nil ILB_NO_ENDPOINTS
false ILB_NO_ENDPOINTS
--- no_error_log
[error]



=== TEST 5: released contexts are reused, and reset when taken again
--- config
    location = /t {
        content_by_lua_block {
            local core = require("ingress_lb.core")
            assert(core.apply(T.doc(T.full_backend("default-web-80", { T.ep("a"), T.ep("b") }))))
            local free0, created0 = core.free_ctx_count()
            local ctx = core.new_ctx()
            core.pick("default-web-80", ctx)
            core.release_ctx(ctx)
            local again = core.new_ctx()
            local free1, created1 = core.free_ctx_count()
            ngx.say("same cdata: ", again == ctx, ", tried_len ", again.tried_len,
                    ", created ", created1 - created0, ", free ", free1 - free0)
            local other = core.new_ctx()
            ngx.say("second one is new: ", other ~= again)
            core.release_ctx(again)
            core.release_ctx(other)
        }
    }
--- response_body
same cdata: true, tried_len 0, created 1, free 0
second one is new: true
--- no_error_log
[error]



=== TEST 6: configure() after the library is loaded refuses another path
--- config
    location = /t {
        content_by_lua_block {
            local core = require("ingress_lb.core")
            local ok, err = pcall(core.configure, { library = "$TEST_NGINX_ILB_LIB" })
            ngx.say(ok, " ", err)
            ok, err = pcall(core.configure, { library = "/nonexistent/libingress_lb.so" })
            ngx.say(ok, " ", err:match("library already loaded from") ~= nil)
            ok, err = pcall(core.configure, { library = "" })
            ngx.say(ok, " ", err:match("non%-empty string") ~= nil)
        }
    }
--- response_body
true true
false true
false true
--- no_error_log
[error]



=== TEST 7: without configure(): INGRESS_LB_LIBRARY, then package.cpath, then the linker path
--- main_config
    env INGRESS_LB_LIBRARY=$TEST_NGINX_ILB_LIB;
--- config
    location = /t {
        content_by_lua_block {
            -- a fresh copy of the module (the loaded one stays in package.loaded after)
            local loaded = package.loaded["ingress_lb.core"]
            local function fresh()
                package.loaded["ingress_lb.core"] = nil
                local mod = require("ingress_lb.core")
                package.loaded["ingress_lb.core"] = loaded
                return mod
            end

            local m = fresh()
            ngx.say("env: ", m.load(), " ", m.library_path() == "$TEST_NGINX_ILB_LIB")

            -- the environment is read at each load: hide it with a wrapper
            local getenv = os.getenv
            os.getenv = function(name)
                if name == "INGRESS_LB_LIBRARY" then
                    return nil
                end
                return getenv(name)
            end

            local dir = ("$TEST_NGINX_ILB_LIB"):match("^(.*)/[^/]+$")
            local cpath = package.cpath
            package.cpath = dir .. "/?.so;" .. cpath
            m = fresh()
            ngx.say("cpath: ", m.load(), " ", m.library_path() == dir .. "/libingress_lb.so")
            package.cpath = cpath

            m = fresh()
            local ok, err = m.load()
            ngx.say("linker: ", ok, " ", err:match("cannot load the core library ingress_lb %(from dynamic linker search path%)") ~= nil)
            ngx.say("no core: ", m.has_backend("x"), " ", (m.pick("x", nil)))

            os.getenv = getenv
        }
    }
--- response_body
env: true true
cpath: true true
linker: nil true
no core: false nil
--- no_error_log
[error]



=== TEST 8: backend descriptors: what a request needs, cached until the configuration changes
--- config
    location = /t {
        content_by_lua_block {
            local core = require("ingress_lb.core")
            local cjson = require("cjson")
            local function backend(name, extra)
                local b = cjson.decode(T.full_backend(name, { T.ep("a"), T.ep("b") }))
                for k, v in pairs(extra) do
                    b[k] = v
                end
                return cjson.encode(b)
            end
            local doc = T.doc(
                T.full_backend("default-rr-80", { T.ep("a") }),
                backend("default-ewma-80", { ["load-balance"] = "ewma" }),
                backend("default-chash-80", { upstreamHashByConfig = {
                    ["upstream-hash-by"] = "$http_x_user-${arg_a}" } }),
                backend("default-subset-80", { upstreamHashByConfig = {
                    ["upstream-hash-by"] = "$request_uri", ["upstream-hash-by-subset"] = true } }),
                backend("default-sticky-80", { sessionAffinityConfig = {
                    name = "cookie", cookieSessionAffinity = { name = "route" } } }),
                backend("default-persistent-80", { sessionAffinityConfig = {
                    name = "cookie", mode = "persistent", cookieSessionAffinity = { name = "r" } } }),
                T.full_backend("default-empty-80", {}))
            assert(core.apply(doc))
            for _, name in ipairs({ "default-rr-80", "default-ewma-80", "default-chash-80",
                                    "default-subset-80", "default-sticky-80",
                                    "default-persistent-80", "default-empty-80",
                                    "default-none-80" }) do
                local d = core.backend(name)
                ngx.say(name, ": ", d.serves, " ", core.result_name(d.rc), " ",
                        core.algorithm_name(d.algorithm), " hash_key=", d.hash_key,
                        " cookie=", d.cookie, " timing=", d.timing,
                        d.hash_by and (" hash_by=" .. d.hash_by) or "")
            end
            local d = core.backend("default-chash-80")
            ngx.say("cached: ", core.backend("default-chash-80") == d,
                    ", also for unknown names: ", core.backend("x") == core.backend("x"))
            assert(core.apply(doc))
            ngx.say("same document, same descriptor: ", core.backend("default-chash-80") == d)
            assert(core.apply(T.doc(backend("default-chash-80", { upstreamHashByConfig = {
                ["upstream-hash-by"] = "$remote_addr" } }))))
            local d2 = core.backend("default-chash-80")
            ngx.say("new configuration: ", d2 ~= d, " hash_by=", d2.hash_by,
                    ", gone: ", core.result_name(core.backend("default-rr-80").rc))
            ngx.say("not a name: ", core.backend(nil).serves, " ", (core.has_backend(nil)))
        }
    }
--- response_body
default-rr-80: true ILB_OK round_robin hash_key=false cookie=false timing=false
default-ewma-80: true ILB_OK ewma hash_key=false cookie=false timing=true
default-chash-80: true ILB_OK chash hash_key=true cookie=false timing=false hash_by=$http_x_user-${arg_a}
default-subset-80: true ILB_OK chashsubset hash_key=true cookie=false timing=false hash_by=$request_uri
default-sticky-80: true ILB_OK sticky_balanced hash_key=false cookie=true timing=false
default-persistent-80: true ILB_OK sticky_persistent hash_key=false cookie=true timing=false
default-empty-80: false ILB_NO_ENDPOINTS round_robin hash_key=false cookie=false timing=false
default-none-80: false ILB_UNKNOWN_BACKEND round_robin hash_key=false cookie=false timing=false
cached: true, also for unknown names: true
same document, same descriptor: true
new configuration: true hash_by=$remote_addr, gone: ILB_UNKNOWN_BACKEND
not a name: false false
--- no_error_log
[error]



=== TEST 9: pick with request data; the Set-Cookie asked for; observe
--- config
    location = /t {
        content_by_lua_block {
            local core = require("ingress_lb.core")
            local cjson = require("cjson")
            local b = cjson.decode(T.full_backend("default-sticky-80", { T.ep("a"), T.ep("b") }))
            b.sessionAffinityConfig = { name = "cookie", mode = "persistent",
                cookieSessionAffinity = { name = "route", locations = { ["example.com"] = { "/app" } } } }
            local e = cjson.decode(T.full_backend("default-ewma-80", { T.ep("a"), T.ep("b") }))
            e["load-balance"] = "ewma"
            assert(core.apply(T.doc(cjson.encode(b), cjson.encode(e))))
            local name = "default-sticky-80"

            local ctx = core.new_ctx()
            local peer = core.pick(name, ctx, nil, nil, "example.com", "/app", "UA", true,
                                   ngx.now())
            local cookie = core.last_set_cookie()
            core.release_ctx(ctx)
            local key = peer and ngx.md5(name .. peer)
            ngx.say("new session: ", cookie ~= nil and cookie:find("route=" .. key .. "|", 1, true) == 1,
                    ", secure over https: ", cookie and cookie:find("; Secure", 1, true) ~= nil)

            ctx = core.new_ctx()
            local again = core.pick(name, ctx, nil, cookie:match("^[^;]+"), "example.com", "/app",
                                    nil, false, ngx.now())
            ngx.say("with its cookie: same peer ", again == peer, ", no Set-Cookie ",
                    core.last_set_cookie() == nil)
            core.release_ctx(ctx)

            ctx = core.new_ctx()
            core.pick(name, ctx, nil, nil, "other.example", "/app", nil, false, ngx.now())
            ngx.say("host not in locations: no Set-Cookie ", core.last_set_cookie() == nil)
            core.release_ctx(ctx)

            ngx.say("observe: ", core.observe("default-ewma-80", "127.0.0.1:" .. T.PORTS.a,
                                              "200", "0.001", "0.002", ngx.now()))
            ngx.say("observe, no upstream variables: ", core.observe("default-ewma-80"))
            ngx.say("observe, unknown backend: ", core.observe("x", "1.2.3.4:80", "200", "0", "0", 0))
        }
    }
--- response_body
new session: true, secure over https: true
with its cookie: same peer true, no Set-Cookie true
host not in locations: no Set-Cookie true
observe: true
observe, no upstream variables: true
observe, unknown backend: true
--- no_error_log
[error]



=== TEST 10: the ewma statistics are mapped in init_by_lua; their size is set once
--- config
    location = /t {
        content_by_lua_block {
            local core = require("ingress_lb.core")
            ngx.say("slots: ", core.stats_slots(), " (default ", core.DEFAULT_EWMA_SLOTS, ")")
            ngx.say("again: ", core.init_stats())
            local ok, err = pcall(core.configure, { ewma_slots = 10 })
            ngx.say("other size later: ", ok, " ", err:match("already exist") ~= nil)
            ngx.say("same size: ", (pcall(core.configure, { ewma_slots = core.DEFAULT_EWMA_SLOTS })))
            for _, bad in ipairs({ 0, 1.5, "100", -1 }) do
                ok, err = pcall(core.configure, { ewma_slots = bad })
                ngx.say(tostring(bad), ": ", ok, " ", err:match("ewma_slots must be") ~= nil)
            end
        }
    }
--- response_body
slots: 65536 (default 65536)
again: true
other size later: false true
same size: true
0: false true
1.5: false true
100: false true
-1: false true
--- no_error_log
[error]



=== TEST 11: a document as a pointer and a length; shared dict strings read into the worker's buffer
--- config
    location = /t {
        content_by_lua_block {
            local core = require("ingress_lb.core")
            local raw = require("ingress_lb.shdict_raw")
            local ffi = require("ffi")
            local dict = ngx.shared.configuration_data
            ngx.say("available: ", raw.available())

            local doc = T.doc(T.full_backend("default-web-80", { T.ep("b") }))
            dict:set("raw-test", doc)
            local p, n = raw.read(dict, "raw-test")
            ngx.say("read: ", type(p), " ", n == #doc, " ", ffi.string(p, n) == doc)
            local g0 = core.generation()
            ngx.say("apply: ", core.apply(p, n), " ", core.generation() - g0,
                    " ", core.has_backend("default-web-80"))
            -- the same bytes as a string: recognised as the document in force
            ngx.say("same as the string: ", core.apply(doc), " ", core.generation() - g0)
            local ok, err = core.apply(p)
            ngx.say("no length: ", ok, " ", err)

            -- compiled on another thread (budget 0), the buffer kept meanwhile
            local other = T.doc(T.full_backend("default-other-80", { T.ep("c") }))
            dict:set("raw-test", other)
            p, n = raw.read(dict, "raw-test")
            ngx.say("yielding: ", core.apply_yielding(p, 0, n), " ",
                    core.has_backend("default-other-80"), " ", (core.has_backend("default-web-80")))
            local _, bad = core.apply_yielding(p, 0, n - 1)
            ngx.say("truncated: ", bad ~= nil)

            -- grows for a larger value, gives memory back for a much smaller one
            local big = string.rep("x", 300000)
            dict:set("raw-test", big)
            p, n = raw.read(dict, "raw-test")
            ngx.say("big: ", n, " ", raw.capacity() >= n, " ", ffi.string(p, n) == big)
            dict:set("raw-test", "small")
            p, n = raw.read(dict, "raw-test")
            ngx.say("small: ", ffi.string(p, n), " ", raw.capacity())
            dict:set("raw-test", "")
            ngx.say("empty: [", raw.read(dict, "raw-test"), "]")
            dict:set("raw-test", 42)
            ngx.say("number: ", raw.read(dict, "raw-test"))
            ngx.say("missing: ", raw.read(dict, "raw-missing"))
            ngx.say("not a dict: ", raw.read({}, "raw-test"))
            raw.release()
            ngx.say("released: ", raw.capacity())
        }
    }
--- response_body
available: true
read: cdata true true
apply: true 1 true
same as the string: true 1
no length: nil backends document must be a string (or a pointer and a length), got cdata
yielding: true true false
truncated: true
big: 300000 true true
small: small 5
empty: []
number: nilnot a string value
missing: nil
not a dict: nilbad shared dict
released: 0
--- no_error_log
[error]
