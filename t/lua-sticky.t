# Lua front end, cookie affinity: sticky_balanced and sticky_persistent. balance()
# hands the core the raw Cookie header, $host ("_" in a server_name "_" server),
# $location_path, the User-Agent and whether the request came over TLS; the core
# picks and may ask for a Set-Cookie, which balance() adds to the response (a
# retry's cookie replaces the one an earlier attempt added; other Set-Cookie
# headers stay).
#
#   HARNESS_PERL_SWITCHES='-It/compat -MIngressLbFallback' prove t/lua-sticky.t
#
# Environment (defaults in t/IngressLbTest.pm when unset): TEST_NGINX_BINARY,
# TEST_NGINX_LOAD_MODULES, TEST_NGINX_ILB_LUA_DIR (absolute path of lua/),
# TEST_NGINX_ILB_LIB (absolute path of libingress_lb.so), TEST_NGINX_ILB_TEST_LIB
# (absolute path of t/lib/, the test helpers).
#
# Compatibility with stock (reference values recorded from ingress-nginx's Lua
# stack, tests/data/ from shared/vectors/resty-chash-and-sticky.json): the cookie
# value is "<endpoint key>|<backend key>" with backend key
# md5hex(md5hex(name) .. name); sticky_persistent's endpoint key is
# md5hex(name .. "ip:port"); sticky_balanced's endpoint key is placed on the
# resty.chash ring of the endpoints (T.chash_ring, checked in t/lua-chash.t).

use lib '.';
use t::IngressLbTest 'lua';
use Test::Nginx::Socket 'no_plan';

# the sticky helpers of this suite, in init_by_lua after T is set up
my $init = <<'_EOC_';
        -- the second ingress server (server_name _)
        T.OTHER = $TEST_NGINX_RAND_PORT_8

        -- recorded: backend keys, and sticky_persistent endpoint keys of
        -- "default-web-80"
        T.BACKEND_KEY = {
            ["default-web-80"] = "6cde5721ec2c7e2bce07cff7d0e4ac37",
            ["shop-api-8080"] = "09250bd5e9b842241db5abeb92b3d757",
            ["ns-a-very-long-service-name-with-dashes-443"] = "842a863d27c85210d16811a297ceed70",
            ["x"] = "2d02232c14940124102b760ae391cbab",
        }
        T.PERSISTENT_KEY = {
            ["10.0.0.1:8080"] = "0aa3b49d3795ad62718deaa56ec75fae",
            ["10.0.0.2:8080"] = "e3420c7e8e6f123f9dd2657d35a37d78",
            ["10.0.0.3:8080"] = "6f90cc4ebce62badea9d3f7944a6c1a9",
        }

        -- a sticky backend: opts.mode ("balanced" by default), opts.cookie merged
        -- over { name = "INGRESSCOOKIE", locations = { localhost = { "/" } } }
        function T.sticky(name, letters, opts)
            opts = opts or {}
            local cookie = { name = "INGRESSCOOKIE", locations = { localhost = { "/" } } }
            for k, v in pairs(opts.cookie or {}) do
                cookie[k] = v
            end
            local eps = {}
            for i, l in ipairs(letters) do
                eps[i] = T.ep(l)
            end
            return T.backend(name, eps, { affinity = { mode = opts.mode or "balanced",
                                                       cookie = cookie } })
        end

        -- the INGRESSCOOKIE Set-Cookie values of a response, and all Set-Cookie values
        function T.affinity(hdrs)
            local out = {}
            for _, v in ipairs(hdrs["set-cookie"] or {}) do
                if v:find("^INGRESSCOOKIE=") then
                    out[#out + 1] = v
                end
            end
            return out, hdrs["set-cookie"] or {}
        end

        -- endpoint key, backend key and the rest of a Set-Cookie value
        function T.split(set_cookie)
            if not set_cookie then
                return nil
            end
            return set_cookie:match("^INGRESSCOOKIE=([^|;]*)|([^;]*)(.*)$")
        end

        -- a Set-Cookie value with its endpoint key shown as <key>, its backend key
        -- as <bk> when it is the recorded one for `name`
        function T.shape(set_cookie, name)
            if not set_cookie then
                return "no cookie"
            end
            local key, bk, rest = T.split(set_cookie)
            if not key then
                return set_cookie
            end
            if bk == T.BACKEND_KEY[name] then
                bk = "<bk>"
            end
            return "INGRESSCOOKIE=<key>|" .. bk .. rest
        end

        -- the Cookie request header for an endpoint key of backend `name`
        function T.cookie(key, name)
            return "INGRESSCOOKIE=" .. key .. "|" .. ngx.md5(ngx.md5(name) .. name)
        end

        -- sticky_persistent's endpoint key of endpoint `letter`
        function T.persistent_key(name, letter)
            return ngx.md5(name .. T.addr(letter))
        end
_EOC_

# Shared by every block (t/IngressLbTest.pm): the shared dicts, init_by_lua (with
# the test helpers T of t/lib/ilb_test.lua)/init_worker_by_lua, the
# upstream_balancer upstream, four endpoints ("a" to "d", each answering its
# letter), two ports where nothing listens ("dead", "dead2") and the ingress
# server, wired like ingress-nginx's nginx.tmpl (per-location $location_path,
# $balancer_ewma_score, $proxy_upstream_name; here the backend name comes from the
# X-Backend request header), with the endpoint "e", which sets a cookie of its
# own, and a second ingress server. The blocks' own http_config is appended.
our $HttpConfig = lua_http_config(prohibited_localhost_port => 1, ports => { e => 10 },
                                  init => $init) . <<'_EOC_';

    # an endpoint that sets a cookie of its own
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_10;
        location / {
            add_header Set-Cookie "up=1; Path=/";
            return 200 "e\n";
        }
    }

    # a second ingress server: server_name "_" (cookie `locations` are looked up
    # under "_"), a location of its own path, one that does not set
    # $location_path, and one whose rewrite phase sets a cookie (as a plugin might)
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_8;
        server_name _;

        set $proxy_upstream_name $http_x_backend;
        proxy_connect_timeout 2s;
        proxy_next_upstream error timeout;
        proxy_next_upstream_tries 3;
        add_header X-Upstream-Addr $upstream_addr always;

        location / {
            set $location_path "/";
            rewrite_by_lua_block {
                balancer.rewrite()
            }
            proxy_pass http://upstream_balancer;
            log_by_lua_block {
                balancer.log()
            }
        }

        location /shop {
            set $location_path "/shop";
            rewrite_by_lua_block {
                balancer.rewrite()
            }
            proxy_pass http://upstream_balancer;
            log_by_lua_block {
                balancer.log()
            }
        }

        location /nopath {
            # as nginx.tmpl: reading $location_path where it is not set is no warning
            uninitialized_variable_warn off;
            rewrite_by_lua_block {
                balancer.rewrite()
            }
            proxy_pass http://upstream_balancer;
            log_by_lua_block {
                balancer.log()
            }
        }

        location /plugin {
            set $location_path "/plugin";
            rewrite_by_lua_block {
                ngx.header["Set-Cookie"] = "plugin=1; Path=/plugin"
                balancer.rewrite()
            }
            proxy_pass http://upstream_balancer;
            log_by_lua_block {
                balancer.log()
            }
        }
    }
_EOC_

ilb_setup(http_config => $HttpConfig, request => 'GET /t', timeout => 20);

run_tests();

__DATA__

=== TEST 1: sticky_balanced: a new session gets a cookie; the cookie leads back to its endpoint and is not re-sent
--- config
    location = /t {
        content_by_lua_block {
            local name = "default-web-80"
            ngx.say(T.post(T.doc(T.sticky(name, { "a", "b", "c" }))))
            local find = T.chash_ring({ T.addr("a"), T.addr("b"), T.addr("c") })
            local status, body, hdrs = T.get(name, "/")
            local cookies = T.affinity(hdrs)
            ngx.say("first: ", status, ", affinity cookies: ", #cookies)
            ngx.say(T.shape(cookies[1], name))
            local key = T.split(cookies[1])
            ngx.say("key on the resty.chash ring of the endpoints: ", T.letter(find(key)) == body)
            local same, resent = 0, 0
            for _ = 1, 10 do
                local s, b, h = T.get(name, "/", { Cookie = "other=1; " .. (cookies[1] or ""):match("^[^;]*") })
                if s == 200 and b == body then
                    same = same + 1
                end
                if h["set-cookie"] then
                    resent = resent + 1
                end
            end
            ngx.say("with the cookie: same endpoint ", same, "/10, Set-Cookie ", resent)
            -- new sessions spread over the endpoints
            local used = {}
            for _ = 1, 30 do
                local _, b = T.get(name, "/")
                used[b] = true
            end
            ngx.say("new sessions spread: ", used.a and used.b and used.c and true)
        }
    }
--- response_body
201 []
first: 200, affinity cookies: 1
INGRESSCOOKIE=<key>|<bk>; Path=/; HttpOnly
key on the resty.chash ring of the endpoints: true
with the cookie: same endpoint 10/10, Set-Cookie 0
new sessions spread: true
--- no_error_log
[error]
[alert]
[warn]



=== TEST 2: Expires and Max-Age, then Path, Domain and SameSite as configured
--- config
    location = /t {
        content_by_lua_block {
            ngx.say(T.post(T.doc(
                T.sticky("default-web-80", { "a", "b" },
                         { cookie = { expires = "3600", maxage = "7200" } }),
                T.sticky("shop-api-8080", { "a", "b" },
                         { cookie = { path = "/app", domain = "example.com",
                                      samesite = "Strict" } }))))
            local now = ngx.time()
            local _, _, hdrs = T.get("default-web-80", "/")
            local c = T.affinity(hdrs)[1]
            local expires = c:match("; Expires=([^;]+)")
            local close = false
            for d = -1, 2 do
                if expires == ngx.cookie_time(now + 3600 + d) then
                    close = true
                end
            end
            ngx.say(T.shape(c:gsub("; Expires=[^;]+", "; Expires=<date>"), "default-web-80"))
            ngx.say("Expires in an hour, as ngx.cookie_time: ", close)
            _, _, hdrs = T.get("shop-api-8080", "/")
            ngx.say(T.shape(T.affinity(hdrs)[1], "shop-api-8080"))
        }
    }
--- response_body
201 []
INGRESSCOOKIE=<key>|<bk>; Expires=<date>; Max-Age=7200; Path=/; HttpOnly
Expires in an hour, as ngx.cookie_time: true
INGRESSCOOKIE=<key>|<bk>; Domain=example.com; Path=/app; HttpOnly; SameSite=Strict
--- no_error_log
[error]
[alert]
[warn]



=== TEST 3: SameSite=None only for user agents that understand it (conditional_samesite_none)
--- config
    location = /t {
        content_by_lua_block {
            local name = "default-web-80"
            ngx.say(T.post(T.doc(T.sticky(name, { "a", "b" },
                { cookie = { samesite = "None", conditional_samesite_none = true } }),
                T.sticky("x", { "a", "b" }, { cookie = { samesite = "None" } }))))
            local agents = {
                { "new Chrome", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36" },
                { "Chrome 60", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/60.0.3112.113 Safari/537.36" },
                { "iOS 12", "Mozilla/5.0 (iPhone; CPU iPhone OS 12_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/12.0 Mobile/15E148 Safari/604.1" },
                { "Safari on macOS 10.14", "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/12.1.2 Safari/605.1.15" },
            }
            for _, ua in ipairs(agents) do
                local _, _, hdrs = T.get(name, "/", { ["User-Agent"] = ua[2] })
                ngx.say(ua[1], ": ", T.shape(T.affinity(hdrs)[1], name))
            end
            local _, _, hdrs = T.get(name, "/")
            ngx.say("no User-Agent: ", T.shape(T.affinity(hdrs)[1], name))
            _, _, hdrs = T.get("x", "/", { ["User-Agent"] = agents[2][2] })
            ngx.say("unconditional, Chrome 60: ", T.shape(T.affinity(hdrs)[1], "x"))
        }
    }
--- response_body
201 []
new Chrome: INGRESSCOOKIE=<key>|<bk>; Path=/; HttpOnly; SameSite=None
Chrome 60: INGRESSCOOKIE=<key>|<bk>; Path=/; HttpOnly
iOS 12: INGRESSCOOKIE=<key>|<bk>; Path=/; HttpOnly
Safari on macOS 10.14: INGRESSCOOKIE=<key>|<bk>; Path=/; HttpOnly
no User-Agent: INGRESSCOOKIE=<key>|<bk>; Path=/; HttpOnly; SameSite=None
unconditional, Chrome 60: INGRESSCOOKIE=<key>|<bk>; Path=/; HttpOnly; SameSite=None
--- no_error_log
[error]
[alert]
[warn]



=== TEST 4: Secure over HTTPS ($https = "on"), and always when configured
--- user_files
>>> tls.key
-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgp8EDZQW9Vj8B8d97
ZNVfWZL/GMqcSFIxrGkA5SiCE9yhRANCAASnny3w3yKmoQp7dGqzCssaa4QG9Hds
aI1cMHwfiZXq8yp/anzxoefy8RNoIzh6l7EYfuTYT5MOFycuIdnwVIJc
-----END PRIVATE KEY-----
>>> tls.crt
-----BEGIN CERTIFICATE-----
MIIBfjCCASWgAwIBAgIUTUbHnvaAELjFD5dOUnR4EsdUY6EwCgYIKoZIzj0EAwIw
FDESMBAGA1UEAwwJbG9jYWxob3N0MCAXDTI2MTEyMjA4MjM0MloYDzIxMjYxMDI5
MDgyMzQyWjAUMRIwEAYDVQQDDAlsb2NhbGhvc3QwWTATBgcqhkjOPQIBBggqhkjO
PQMBBwNCAASnny3w3yKmoQp7dGqzCssaa4QG9HdsaI1cMHwfiZXq8yp/anzxoefy
8RNoIzh6l7EYfuTYT5MOFycuIdnwVIJco1MwUTAdBgNVHQ4EFgQUljQ8wzfwX7+8
Ww14rgYPTP9ly5wwHwYDVR0jBBgwFoAUljQ8wzfwX7+8Ww14rgYPTP9ly5wwDwYD
VR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNHADBEAiBnaOAg+qcWNDkqivwavbln
4akS1a+6DDsdUXdhtQktPQIgG0HxkFb4gUokNxVR828dESLo/n0bbrTclSL8FCtK
QMc=
-----END CERTIFICATE-----
--- http_config
    # the ingress server over TLS
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_9 ssl;
        ssl_certificate ../html/tls.crt;
        ssl_certificate_key ../html/tls.key;

        location / {
            set $location_path "/";
            set $proxy_upstream_name $http_x_backend;
            rewrite_by_lua_block {
                balancer.rewrite()
            }
            add_header X-Https $https always;
            proxy_pass http://upstream_balancer;
            log_by_lua_block {
                balancer.log()
            }
        }
    }
--- config
    location = /t {
        content_by_lua_block {
            local name = "default-web-80"
            ngx.say(T.post(T.doc(T.sticky(name, { "a", "b" }),
                                 T.sticky("x", { "a", "b" }, { cookie = { secure = true } }))))
            local h = { ["X-Backend"] = name }
            local status, _, hdrs = T.request("GET", "/", h, nil, $TEST_NGINX_RAND_PORT_9, true)
            ngx.say("https (", status, ", $https ", T.header(hdrs, "X-Https"), "): ",
                    T.shape(T.affinity(hdrs)[1], name))
            _, _, hdrs = T.get(name, "/")
            ngx.say("http: ", T.shape(T.affinity(hdrs)[1], name))
            _, _, hdrs = T.get("x", "/")
            ngx.say("http, secure configured: ", T.shape(T.affinity(hdrs)[1], "x"))
        }
    }
--- response_body
201 []
https (200, $https on): INGRESSCOOKIE=<key>|<bk>; Path=/; Secure; HttpOnly
http: INGRESSCOOKIE=<key>|<bk>; Path=/; HttpOnly
http, secure configured: INGRESSCOOKIE=<key>|<bk>; Path=/; Secure; HttpOnly
--- no_error_log
[error]
[alert]
[warn]



=== TEST 5: a cookie is set only where `locations` lists the host and the location path
--- http_config
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_11;
        location / {
            set $location_path "/";
            set $proxy_upstream_name $http_x_backend;
            rewrite_by_lua_block {
                balancer.rewrite()
            }
            proxy_pass http://upstream_balancer;
            log_by_lua_block {
                balancer.log()
            }
        }
        location /shop {
            set $location_path "/shop";
            set $proxy_upstream_name $http_x_backend;
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
            local name = "default-web-80"
            ngx.say(T.post(T.doc(T.sticky(name, { "a", "b" }, { cookie = { locations = {
                ["shop.example"] = { "/shop" },
                ["*.example.org"] = { "/" },
                ["_"] = { "/", "/shop" },
            } } }))))
            local function try(label, port, path, host)
                local status, body, hdrs = T.request("GET", path,
                    { ["X-Backend"] = name, Host = host }, nil, port)
                local c = T.affinity(hdrs)[1]
                ngx.say(label, ": ", status, " ", c and T.shape(c, name) or "no cookie")
            end
            local port = $TEST_NGINX_RAND_PORT_11
            try("listed host and path", port, "/shop/cart", "shop.example")
            try("listed host, other path", port, "/", "shop.example")
            try("host not listed", port, "/shop/cart", "other.example")
            try("wildcard host", port, "/", "www.example.org")
            try("wildcard, two labels deep", port, "/", "a.b.example.org")
            -- server_name _: looked up under "_", whatever the Host
            try("server_name _", T.OTHER, "/", "anything.example")
            try("server_name _, /shop", T.OTHER, "/shop/x", "anything.example")
        }
    }
--- response_body
201 []
listed host and path: 200 INGRESSCOOKIE=<key>|<bk>; Path=/shop; HttpOnly
listed host, other path: 200 no cookie
host not listed: 200 no cookie
wildcard host: 200 INGRESSCOOKIE=<key>|<bk>; Path=/; HttpOnly
wildcard, two labels deep: 200 no cookie
server_name _: 200 INGRESSCOOKIE=<key>|<bk>; Path=/; HttpOnly
server_name _, /shop: 200 INGRESSCOOKIE=<key>|<bk>; Path=/shop; HttpOnly
--- no_error_log
[error]
[alert]
[warn]



=== TEST 6: a location that does not set $location_path counts as "/"
--- config
    location = /t {
        content_by_lua_block {
            local name = "default-web-80"
            ngx.say(T.post(T.doc(T.sticky(name, { "a", "b" },
                { cookie = { locations = { ["_"] = { "/" } } } }))))
            local status, _, hdrs = T.request("GET", "/nopath/x", { ["X-Backend"] = name },
                                              nil, T.OTHER)
            ngx.say(status, " ", T.shape(T.affinity(hdrs)[1] or "no cookie", name))
        }
    }
--- response_body
201 []
200 INGRESSCOOKIE=<key>|<bk>; Path=/; HttpOnly
--- no_error_log
[error]
[alert]
[warn]



=== TEST 7: the recorded stock keys: backend key md5(md5(name)..name), persistent key md5(name.."ip:port")
--- config
    location = /t {
        content_by_lua_block {
            local ok = 0
            for name, key in pairs(T.BACKEND_KEY) do
                if ngx.md5(ngx.md5(name) .. name) == key then
                    ok = ok + 1
                end
            end
            ngx.say("backend keys: ", ok, "/4")
            ok = 0
            for ep, key in pairs(T.PERSISTENT_KEY) do
                if ngx.md5("default-web-80" .. ep) == key then
                    ok = ok + 1
                end
            end
            ngx.say("persistent keys: ", ok, "/3")
        }
    }
--- response_body
backend keys: 4/4
persistent keys: 3/3
--- no_error_log
[error]



=== TEST 8: sticky_persistent: a cookie in stock's format reaches its endpoint, and a new session's cookie is in that format
--- config
    location = /t {
        content_by_lua_block {
            local name = "default-web-80"
            ngx.say(T.post(T.doc(T.sticky(name, { "a", "b", "c" }, { mode = "persistent" }))))
            for _, letter in ipairs({ "a", "b", "c" }) do
                local cookie = T.cookie(T.persistent_key(name, letter), name)
                local same, resent = 0, 0
                for _ = 1, 5 do
                    local status, body, hdrs = T.get(name, "/", { Cookie = cookie })
                    if status == 200 and body == letter then
                        same = same + 1
                    end
                    if hdrs["set-cookie"] then
                        resent = resent + 1
                    end
                end
                ngx.say(letter, ": ", same, "/5, Set-Cookie ", resent)
            end
            local ok = 0
            for _ = 1, 6 do
                local status, body, hdrs = T.get(name, "/")
                local c = T.affinity(hdrs)[1]
                local key, bk = T.split(c)
                if status == 200 and key == T.persistent_key(name, body)
                   and bk == T.BACKEND_KEY[name] then
                    ok = ok + 1
                end
            end
            ngx.say("new sessions: cookie names the endpoint that answered: ", ok, "/6")
        }
    }
--- response_body
201 []
a: 5/5, Set-Cookie 0
b: 5/5, Set-Cookie 0
c: 5/5, Set-Cookie 0
new sessions: cookie names the endpoint that answered: 6/6
--- no_error_log
[error]
[alert]
[warn]



=== TEST 9: a cookie for an endpoint that vanished: persistent gets a new endpoint and cookie, balanced follows the ring
--- config
    location = /t {
        content_by_lua_block {
            ngx.say(T.post(T.doc(
                T.sticky("default-web-80", { "a", "b", "c" }, { mode = "persistent" }),
                T.sticky("x", { "a", "b", "c" }))))
            local persistent = T.cookie(T.persistent_key("default-web-80", "c"), "default-web-80")
            -- a balanced key that lands on "c" while it exists
            local find3 = T.chash_ring({ T.addr("a"), T.addr("b"), T.addr("c") })
            local key
            for i = 1, 100 do
                if T.letter(find3("k" .. i)) == "c" then
                    key = "k" .. i
                    break
                end
            end
            local balanced = T.cookie(key, "x")
            local _, before = T.get("default-web-80", "/", { Cookie = persistent })
            local _, before_x = T.get("x", "/", { Cookie = balanced })
            ngx.say("before: ", before, " ", before_x)

            ngx.say(T.post(T.doc(
                T.sticky("default-web-80", { "a", "b" }, { mode = "persistent" }),
                T.sticky("x", { "a", "b" }))))
            local status, body, hdrs = T.get("default-web-80", "/", { Cookie = persistent })
            local c = T.affinity(hdrs)[1]
            ngx.say("persistent: ", status, " ", body ~= "c",
                    ", new cookie for it: ", c ~= nil and T.split(c) == T.persistent_key("default-web-80", body))
            local find2 = T.chash_ring({ T.addr("a"), T.addr("b") })
            status, body, hdrs = T.get("x", "/", { Cookie = balanced })
            ngx.say("balanced: ", status, " ", body == T.letter(find2(key)),
                    ", Set-Cookie: ", hdrs["set-cookie"] ~= nil)
        }
    }
--- response_body
201 []
before: c c
201 []
persistent: 200 true, new cookie for it: true
balanced: 200 true, Set-Cookie: false
--- no_error_log
[error]
[alert]
[warn]



=== TEST 10: retries: the response carries one affinity cookie, for the endpoint that answered
--- config
    location = /t {
        content_by_lua_block {
            ngx.say(T.post(T.doc(
                T.sticky("default-web-80", { "dead", "a", "dead2" }, { mode = "persistent" }),
                T.sticky("x", { "dead", "b", "dead2" }))))
            local ok, retried = 0, 0
            for _ = 1, 12 do
                local status, body, hdrs = T.get("default-web-80", "/")
                local cookies = T.affinity(hdrs)
                if T.tried(hdrs):find("dead") then
                    retried = retried + 1
                end
                if status == 200 and body == "a" and #cookies == 1
                   and T.split(cookies[1]) == T.persistent_key("default-web-80", "a") then
                    ok = ok + 1
                end
            end
            ngx.say("persistent: ", ok, "/12, some retried: ", retried > 0)
            local find = T.chash_ring({ T.addr("dead"), T.addr("b"), T.addr("dead2") })
            ok, retried = 0, 0
            for _ = 1, 12 do
                local status, body, hdrs = T.get("x", "/")
                local cookies = T.affinity(hdrs)
                if T.tried(hdrs):find("dead") then
                    retried = retried + 1
                end
                if status == 200 and body == "b" and #cookies == 1
                   and T.letter(find(T.split(cookies[1]))) == "b" then
                    ok = ok + 1
                end
            end
            ngx.say("balanced: ", ok, "/12, some retried: ", retried > 0)
        }
    }
--- response_body
201 []
persistent: 12/12, some retried: true
balanced: 12/12, some retried: true
--- error_log
Connection refused) while connecting to upstream
--- no_error_log
[alert]
[crit]
no peer was returned



=== TEST 11: retries with a cookie for a dead endpoint: kept, or replaced with change_on_failure
--- config
    location = /t {
        content_by_lua_block {
            ngx.say(T.post(T.doc(
                T.sticky("default-web-80", { "dead", "a" }, { mode = "persistent" }),
                T.sticky("x", { "dead", "a" },
                         { mode = "persistent", cookie = { change_on_failure = true } }))))
            for _, name in ipairs({ "default-web-80", "x" }) do
                local cookie = T.cookie(T.persistent_key(name, "dead"), name)
                local status, body, hdrs = T.get(name, "/", { Cookie = cookie })
                local c = T.affinity(hdrs)[1]
                ngx.say(name, ": ", status, " ", body, " after ", T.tried(hdrs), ", ",
                        c and (T.split(c) == T.persistent_key(name, "a") and "new cookie for a"
                               or c) or "no cookie")
            end
        }
    }
--- response_body
201 []
default-web-80: 200 a after dead,a, no cookie
x: 200 a after dead,a, new cookie for a
--- error_log
Connection refused) while connecting to upstream
--- no_error_log
[alert]
[crit]



=== TEST 12: other Set-Cookie headers stay: the endpoint's own, and one set in the rewrite phase, across retries
--- config
    location = /t {
        content_by_lua_block {
            local name = "default-web-80"
            ngx.say(T.post(T.doc(T.sticky(name, { "dead", "e", "dead2" }, { mode = "persistent",
                cookie = { locations = { ["_"] = { "/plugin" } } } }))))
            local ok = 0
            local example
            for _ = 1, 8 do
                local status, body, hdrs = T.request("GET", "/plugin/x",
                    { ["X-Backend"] = name }, nil, T.OTHER)
                local affinity, all = T.affinity(hdrs)
                local names = {}
                for _, v in ipairs(all) do
                    names[#names + 1] = v:match("^[^=]+")
                end
                table.sort(names)
                example = table.concat(names, " ")
                if status == 200 and body == "e" and #affinity == 1 and #all == 3 then
                    ok = ok + 1
                end
            end
            ngx.say(ok, "/8: ", example)
        }
    }
--- response_body
201 []
8/8: INGRESSCOOKIE plugin up
--- no_error_log
[alert]
[crit]
