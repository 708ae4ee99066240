# Lua front end (lua/balancer.lua, lua/configuration.lua, lua/ingress_lb/core.lua)
# against the real core library, in nginx with lua-nginx-module.
#
#   PERL5OPT='-It/compat -MIngressLbFallback' prove t/lua-*.t
#
# Environment (defaults below when unset): TEST_NGINX_BINARY, TEST_NGINX_LOAD_MODULES,
# TEST_NGINX_ILB_LUA_DIR (absolute path of lua/), TEST_NGINX_ILB_LIB (absolute path
# of libingress_lb.so).

BEGIN {
    require File::Basename;
    require File::Spec;
    my $root = File::Spec->rel2abs(File::Spec->catdir(File::Basename::dirname(__FILE__), '..'));
    $ENV{TEST_NGINX_ILB_LUA_DIR} ||= "$root/lua";
    $ENV{TEST_NGINX_ILB_LIB} ||= "$root/target/release/libingress_lb.so";
    $ENV{TEST_NGINX_LOAD_MODULES} ||= '/usr/lib/nginx/modules/ndk_http_module.so'
        . ' /usr/lib/nginx/modules/ngx_http_lua_module.so';
}

use Test::Nginx::Socket 'no_plan';

repeat_each(1);
no_shuffle();
no_long_string();
log_level('info');
# Shared by every block: the shared dicts, init_by_lua/init_worker_by_lua, the
# upstream_balancer upstream, three endpoints ("a", "b", "c") and the ingress
# server (proxy location and /configuration), wired like ingress-nginx's
# nginx.tmpl. The blocks' own http_config is appended.
our $HttpConfig = <<'_EOC_';
    lua_package_path "$TEST_NGINX_ILB_LUA_DIR/?.lua;/usr/share/lua/5.1/?.lua;;";

    # as ingress-nginx's nginx.tmpl declares them
    lua_shared_dict configuration_data 20m;
    lua_shared_dict certificate_data 20m;
    lua_shared_dict certificate_servers 5m;
    lua_shared_dict ocsp_response_cache 5m;
    log_subrequest on;

    init_by_lua_block {
        local core = require("ingress_lb.core")
        core.configure{ library = "$TEST_NGINX_ILB_LIB" }
        assert(core.load())

        configuration = require("configuration")
        balancer = require("balancer")

        -- test helpers: the driver below only sends requests and counts
        T = {}
        T.FRONT = $TEST_NGINX_RAND_PORT_5
        T.PORTS = {
            a = $TEST_NGINX_RAND_PORT_1, b = $TEST_NGINX_RAND_PORT_2,
            c = $TEST_NGINX_RAND_PORT_3,
            -- nothing listens on these
            dead = $TEST_NGINX_RAND_PORT_4, dead2 = $TEST_NGINX_RAND_PORT_6,
        }

        -- one HTTP/1.0 exchange with the ingress server; status, body, headers
        function T.request(method, path, body, headers)
            local sock = ngx.socket.tcp()
            sock:settimeout(5000)
            local ok, err = sock:connect("127.0.0.1", T.FRONT)
            if not ok then
                return nil, "connect: " .. tostring(err)
            end
            local req = { method, " ", path, " HTTP/1.0\r\nHost: localhost\r\n" }
            for k, v in pairs(headers or {}) do
                req[#req + 1] = k .. ": " .. v .. "\r\n"
            end
            if body then
                req[#req + 1] = "Content-Length: " .. #body .. "\r\n\r\n"
                req[#req + 1] = body
            else
                req[#req + 1] = "\r\n"
            end
            ok, err = sock:send(req)
            if not ok then
                sock:close()
                return nil, "send: " .. tostring(err)
            end
            local data
            data, err = sock:receive("*a")
            sock:close()
            if not data then
                return nil, "receive: " .. tostring(err)
            end
            local head, rest = data:match("^(.-)\r\n\r\n(.*)$")
            if not head then
                return nil, "malformed response: " .. data
            end
            local hdrs = {}
            for k, v in head:gmatch("\r\n([^:\r\n]+):[ \t]*([^\r\n]*)") do
                hdrs[k:lower()] = v
            end
            return tonumber(head:match("^HTTP/%d%.%d (%d+)")), rest, hdrs
        end

        function T.ep(which, address)
            return { address = address or "127.0.0.1", port = T.PORTS[which] }
        end

        -- one backend as the controller serialises it
        function T.backend(name, endpoints)
            local eps = {}
            for i, ep in ipairs(endpoints) do
                eps[i] = string.format('{"address":"%s","port":"%s",'
                    .. '"target":{"kind":"Pod","namespace":"default","name":"pod-%d"}}',
                    ep.address, tostring(ep.port), i)
            end
            return string.format('{"name":"%s","service":{"metadata":'
                .. '{"creationTimestamp":null},"spec":{"ports":[{"name":"http",'
                .. '"protocol":"TCP","port":80,"targetPort":8080}],'
                .. '"clusterIP":"10.96.0.10","type":"ClusterIP"},'
                .. '"status":{"loadBalancer":{}}},"port":80,"sslPassthrough":false,'
                .. '"endpoints":[%s],"sessionAffinityConfig":{"name":"","mode":"",'
                .. '"cookieSessionAffinity":{"name":""}},"upstreamHashByConfig":'
                .. '{"upstream-hash-by-subset-size":3},"noServer":false,'
                .. '"trafficShapingPolicy":{"weight":0,"weightTotal":0,"header":"",'
                .. '"headerValue":"","headerPattern":"","cookie":""}}',
                name, table.concat(eps, ","))
        end

        function T.doc(...)
            return "[" .. table.concat({ ... }, ",") .. "]"
        end

        -- POST /configuration/backends; "status [body]"
        function T.post(doc)
            local status, body = T.request("POST", "/configuration/backends", doc)
            return tostring(status) .. " [" .. tostring(body) .. "]"
        end

        -- n requests for backend `name`: "a=2 b=2 status503=1" (response bodies,
        -- or statuses), the number of distinct workers that answered, and the
        -- number of requests in which one peer was tried twice
        function T.stats(n, name)
            local counts, pids, repeated = {}, {}, 0
            for _ = 1, n do
                local status, body, hdrs = T.request("GET", "/", nil, { ["X-Backend"] = name })
                local key
                if status == 200 then
                    key = (body:gsub("\n$", ""))
                else
                    key = "status" .. tostring(status or body)
                end
                counts[key] = (counts[key] or 0) + 1
                if hdrs then
                    if hdrs["x-worker-pid"] then
                        pids[hdrs["x-worker-pid"]] = true
                    end
                    local seen = {}
                    for peer in (hdrs["x-upstream-addr"] or ""):gmatch("[^,%s]+") do
                        if seen[peer] then
                            repeated = repeated + 1
                            break
                        end
                        seen[peer] = true
                    end
                end
            end
            local keys = {}
            for k in pairs(counts) do
                keys[#keys + 1] = k
            end
            table.sort(keys)
            for i, k in ipairs(keys) do
                keys[i] = k .. "=" .. counts[k]
            end
            local workers = 0
            for _ in pairs(pids) do
                workers = workers + 1
            end
            return table.concat(keys, " "), workers, repeated
        end

        function T.count(n, name)
            return (T.stats(n, name))
        end

        -- this worker's core: "generation=N free_ctx=N created_ctx=N"
        function T.state()
            local _, body = T.request("GET", "/ilb-state")
            return (tostring(body):gsub("\n$", ""))
        end
    }

    init_worker_by_lua_block {
        balancer.init_worker()
    }

    upstream upstream_balancer {
        server 0.0.0.1; # placeholder

        balancer_by_lua_block {
            balancer.balance()
        }
    }

    # the endpoints
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1; return 200 "a\n"; }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2; return 200 "b\n"; }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_3; return 200 "c\n"; }

    # the ingress server, wired like ingress-nginx's nginx.tmpl
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_5;

        location / {
            set $proxy_upstream_name $http_x_backend;

            rewrite_by_lua_block {
                balancer.rewrite()
            }

            proxy_connect_timeout 2s;
            proxy_next_upstream error timeout;
            proxy_next_upstream_tries 3;

            add_header X-Upstream-Addr $upstream_addr always;
            add_header X-Worker-Pid $pid always;

            proxy_pass http://upstream_balancer;

            log_by_lua_block {
                balancer.log()
            }
        }

        location /configuration {
            # small, so that larger documents go through a temporary file
            client_body_buffer_size 8k;
            client_max_body_size 21m;

            content_by_lua_block {
                configuration.call()
            }
        }

        location = /ilb-state {
            content_by_lua_block {
                local core = require("ingress_lb.core")
                local free, created = core.free_ctx_count()
                ngx.say("generation=", core.generation(), " free_ctx=", free,
                        " created_ctx=", created)
            }
        }
    }
_EOC_

add_block_preprocessor(sub {
    my $block = shift;
    $block->set_value("http_config", $HttpConfig . ($block->http_config // ''));
    $block->set_value("request", "GET /t") unless defined $block->request;
    $block->set_value("timeout", 10) unless defined $block->timeout;
});

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
            local doc = T.doc(T.backend("default-web-80", { T.ep("a") }))
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
not a string: nil backends document must be a string, got number
unchanged: 1 true
--- no_error_log
[error]



=== TEST 3: picks with one context exclude the peers already tried
--- config
    location = /t {
        content_by_lua_block {
            local core = require("ingress_lb.core")
            assert(core.apply(T.doc(T.backend("default-web-80",
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
            assert(core.apply(T.doc(T.backend("default-web-80", { T.ep("b") }),
                                    T.backend("default-empty-80", {}))))
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
            assert(core.apply(T.doc(T.backend("default-web-80", { T.ep("a"), T.ep("b") }))))
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
                local b = cjson.decode(T.backend(name, { T.ep("a"), T.ep("b") }))
                for k, v in pairs(extra) do
                    b[k] = v
                end
                return cjson.encode(b)
            end
            local doc = T.doc(
                T.backend("default-rr-80", { T.ep("a") }),
                backend("default-ewma-80", { ["load-balance"] = "ewma" }),
                backend("default-chash-80", { upstreamHashByConfig = {
                    ["upstream-hash-by"] = "$http_x_user-${arg_a}" } }),
                backend("default-subset-80", { upstreamHashByConfig = {
                    ["upstream-hash-by"] = "$request_uri", ["upstream-hash-by-subset"] = true } }),
                backend("default-sticky-80", { sessionAffinityConfig = {
                    name = "cookie", cookieSessionAffinity = { name = "route" } } }),
                backend("default-persistent-80", { sessionAffinityConfig = {
                    name = "cookie", mode = "persistent", cookieSessionAffinity = { name = "r" } } }),
                T.backend("default-empty-80", {}))
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
            local b = cjson.decode(T.backend("default-sticky-80", { T.ep("a"), T.ep("b") }))
            b.sessionAffinityConfig = { name = "cookie", mode = "persistent",
                cookieSessionAffinity = { name = "route", locations = { ["example.com"] = { "/app" } } } }
            local e = cjson.decode(T.backend("default-ewma-80", { T.ep("a"), T.ep("b") }))
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
