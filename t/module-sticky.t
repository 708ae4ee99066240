# nginx module, cookie affinity: sticky_balanced and sticky_persistent backends
# (sessionAffinityConfig name "cookie"). Per request the module hands the core the
# Cookie header(s), $host ("_" in a server whose $server_name is "_"),
# $location_path (the location's name when the variable does not exist), the
# User-Agent and whether the connection is TLS; it adds the Set-Cookie the core asks
# for to the response (one per request: the latest attempt's pick decides).
#
# Stock formats: the cookie value is "<endpoint key>|<backend key>", the backend key
# md5(md5(name) .. name); sticky_persistent's endpoint key is md5(name .. "ip:port"),
# sticky_balanced's a random key mapped to an endpoint by resty.chash (T.chash_ring).
# Attributes come in lua-resty-cookie's order (Expires, Max-Age, Domain, Path, Secure,
# HttpOnly, SameSite). The lua module only drives the test.
#
#   TEST_NGINX_LOAD_MODULES="/usr/lib/nginx/modules/ndk_http_module.so \
#       /usr/lib/nginx/modules/ngx_http_lua_module.so \
#       $PWD/target/release/ngx_http_ingress_lb_module.so" \
#     HARNESS_PERL_SWITCHES='-It/compat -MIngressLbFallback' prove t/module-sticky.t

use lib '.';
use t::IngressLbTest 'module';
use Test::Nginx::Socket;

# the cookie helpers of this suite, in init_by_lua after T is set up
my $init = <<'_EOC_';
        -- a cookie-affinity backend: mode "balanced" or "persistent", `cookie` the
        -- cookieSessionAffinity object (default: name "route", locations for
        -- "localhost" "/")
        function T.sticky(name, letters, mode, cookie)
            local eps = {}
            for i, l in ipairs(letters) do
                eps[i] = T.ep(l)
            end
            cookie = cookie or {}
            if cookie.name == nil then
                cookie.name = "route"
            end
            if cookie.locations == nil then
                cookie.locations = { localhost = { "/" } }
            end
            return T.backend(name, eps, { affinity = { mode = mode, cookie = cookie } })
        end

        -- the second part of every cookie value of backend `name`
        function T.backend_key(name)
            return ngx.md5(ngx.md5(name) .. name)
        end

        -- a stock sticky_persistent cookie value naming endpoint `letter`
        function T.persistent(name, letter)
            return ngx.md5(name .. T.addr(letter)) .. "|" .. T.backend_key(name)
        end

        -- the Set-Cookie headers of a response (a list, maybe empty)
        function T.set_cookies(hdrs)
            return hdrs["set-cookie"] or {}
        end

        -- "name=value" of a Set-Cookie header: name, value, endpoint key
        function T.cookie_parts(set_cookie)
            local name, value = set_cookie:match("^([^=;]+)=([^;]*)")
            return name, value, value and value:match("^([^|]*)")
        end
_EOC_

# this suite's location of the ingress server
my $locations = <<'_EOC_';
        # a prefix location: the cookie path when $location_path is not defined
        # (blocks named "... without $location_path ...")
        location /shop/ {
            set $location_path "/";
            set $proxy_upstream_name $http_x_backend;
            ingress_lb_route on;
            proxy_next_upstream error timeout;
            add_header X-Upstream-Addr $upstream_addr always;
            proxy_pass http://upstream_balancer;
        }
_EOC_

# Shared by every block (t/IngressLbTest.pm): the zone, the upstream_balancer
# upstream, four endpoints ("a" to "d", each answering its letter), two ports where
# nothing listens ("dead", "dead2"), the test helpers T (t/lib/ilb_test.lua) in
# init_by_lua and the ingress server, wired like ingress-nginx's nginx.tmpl with
# the module's directives, with a /shop/ location; the endpoint "own", which sets
# a cookie of its own, and a catch-all server. The blocks' own http_config is appended.
our $HttpConfig = module_http_config(ports => { own => 8 }, init => $init,
                                     locations => $locations) . <<'_EOC_';

    # an endpoint that sets a cookie of its own
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_8;
        add_header Set-Cookie "app=1; Path=/";
        return 200 "own\n";
    }

    # a catch-all server: stock looks the cookie's `locations` up under "_"
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_9;
        server_name _;
        location / {
            set $location_path "/";
            set $proxy_upstream_name $http_x_backend;
            ingress_lb_route on;
            proxy_pass http://upstream_balancer;
        }
    }
_EOC_

ilb_setup(http_config => $HttpConfig, request => 'GET /t', timeout => 20);

run_tests();

Test::More::done_testing();

__DATA__

=== TEST 1: sticky_balanced: a new client gets one cookie; with it every request reaches the same endpoint and no cookie is re-sent
--- config
    location = /t {
        content_by_lua_block {
            local name = "default-web-80"
            ngx.say(T.post(T.doc(T.sticky(name, { "a", "b", "c" }, "balanced"))))
            local find = T.chash_ring({ T.addr("a"), T.addr("b"), T.addr("c") })
            local bk = T.backend_key(name)
            local status, body, hdrs = T.get(name, "/")
            local sc = T.set_cookies(hdrs)
            ngx.say("first: ", status, ", cookies: ", #sc)
            local key = (sc[1] or ""):match("^route=(%x+)|") or ""
            ngx.say("format: ", sc[1] == "route=" .. key .. "|" .. bk .. "; Path=/; HttpOnly")
            ngx.say("key of 16 hex digits: ", #key == 16)
            ngx.say("served by the key's endpoint (resty.chash): ", T.letter(find(key)) == body)
            local same, resent = 0, 0
            for _ = 1, 10 do
                local s2, b2, h2 = T.get(name, "/", { Cookie = "route=" .. key .. "|" .. bk })
                if s2 == 200 and b2 == body then
                    same = same + 1
                end
                resent = resent + #T.set_cookies(h2)
            end
            ngx.say("with the cookie: same endpoint ", same, "/10, cookies sent: ", resent)
            -- 30 sessions: each sticks to its endpoint, together they use all three
            local used, n_used, sticking = {}, 0, 0
            for _ = 1, 30 do
                local _, b, h = T.get(name, "/")
                local value = (T.set_cookies(h)[1] or ""):match("^route=([^;]*)")
                if b and not used[b] then
                    used[b] = true
                    n_used = n_used + 1
                end
                local ok = value ~= nil
                for _ = 1, 3 do
                    local s3, b3, h3 = T.get(name, "/", { Cookie = "other=1; route=" .. tostring(value) })
                    if s3 ~= 200 or b3 ~= b or #T.set_cookies(h3) ~= 0 then
                        ok = false
                    end
                end
                if ok then
                    sticking = sticking + 1
                end
            end
            ngx.say("sessions sticking: ", sticking, "/30, endpoints used: ", n_used)
        }
    }
--- response_body
201 []
first: 200, cookies: 1
format: true
key of 16 hex digits: true
served by the key's endpoint (resty.chash): true
with the cookie: same endpoint 10/10, cookies sent: 0
sessions sticking: 30/30, endpoints used: 3
--- no_error_log
[error]
[alert]
[warn]



=== TEST 2: cookie attributes, header by header
--- config
    location = /t {
        content_by_lua_block {
            local full = { name = "sess", expires = "3600", maxage = "60", domain = "example.com",
                           path = "/app", secure = true, samesite = "None",
                           conditional_samesite_none = true }
            ngx.say(T.post(T.doc(T.sticky("attrs", { "a" }, "persistent", full),
                                 T.sticky("lax", { "a" }, "persistent", { samesite = "Lax" }),
                                 T.sticky("strict", { "a" }, "persistent", { samesite = "Strict" }),
                                 T.sticky("named", { "a" }, "persistent", { name = "INGRESSCOOKIE",
                                                                           maxage = "0" }))))
            local function show(name, ua)
                local now = ngx.time()
                local _, body, hdrs = T.get(name, "/", { ["User-Agent"] = ua })
                local sc = T.set_cookies(hdrs)
                local text = table.concat(sc, " | ")
                text = text:gsub(T.persistent(name, "a"):gsub("%p", "%%%0"), "<a>")
                -- Expires: ngx.cookie_time of now + expires (give or take a second)
                local expires = text:match("; Expires=([^;]*)")
                if expires then
                    for d = -1, 1 do
                        if expires == ngx.cookie_time(now + 3600 + d) then
                            text = text:gsub("; Expires=[^;]*", "; Expires=<now+3600>")
                        end
                    end
                end
                ngx.say(name, " (", ua or "no user agent", "): ", body, ", ", #sc, ": ", text)
            end
            show("attrs", "Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0.0.0 Safari/537.36")
            -- SameSite=None is left out for clients known to mishandle it
            show("attrs", "Mozilla/5.0 (X11; Linux x86_64) Chrome/51.0.2704.103 Safari/537.36")
            show("attrs", "Mozilla/5.0 (iPhone; CPU iPhone OS 12_0 like Mac OS X) Safari/604.1")
            show("attrs")
            show("lax")
            show("strict")
            show("named")
        }
    }
--- response_body
201 []
attrs (Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0.0.0 Safari/537.36): a, 1: sess=<a>; Expires=<now+3600>; Max-Age=60; Domain=example.com; Path=/app; Secure; HttpOnly; SameSite=None
attrs (Mozilla/5.0 (X11; Linux x86_64) Chrome/51.0.2704.103 Safari/537.36): a, 1: sess=<a>; Expires=<now+3600>; Max-Age=60; Domain=example.com; Path=/app; Secure; HttpOnly
attrs (Mozilla/5.0 (iPhone; CPU iPhone OS 12_0 like Mac OS X) Safari/604.1): a, 1: sess=<a>; Expires=<now+3600>; Max-Age=60; Domain=example.com; Path=/app; Secure; HttpOnly
attrs (no user agent): a, 1: sess=<a>; Expires=<now+3600>; Max-Age=60; Domain=example.com; Path=/app; Secure; HttpOnly; SameSite=None
lax (no user agent): a, 1: route=<a>; Path=/; HttpOnly; SameSite=Lax
strict (no user agent): a, 1: route=<a>; Path=/; HttpOnly; SameSite=Strict
named (no user agent): a, 1: INGRESSCOOKIE=<a>; Max-Age=0; Path=/; HttpOnly
--- no_error_log
[error]
[alert]
[warn]



=== TEST 3: a new cookie is only set where `locations` lists the host ("_" in a catch-all server) and the location path
--- config
    location = /t {
        content_by_lua_block {
            ngx.say(T.post(T.doc(
                T.sticky("web", { "a" }, "persistent"),
                T.sticky("other-path", { "a" }, "persistent", { locations = { localhost = { "/api" } } }),
                T.sticky("wild", { "a" }, "persistent", { locations = { ["*.example.com"] = { "/" } } }),
                T.sticky("any", { "a" }, "persistent", { locations = { _ = { "/" } } }),
                T.sticky("none", { "a" }, "persistent", { locations = {} }))))
            local function show(label, name, host, port)
                local status, body, hdrs = T.request("GET", "/", { ["X-Backend"] = name, Host = host },
                                                     nil, port)
                ngx.say(label, ": ", status, " ", body, ", cookies: ", #T.set_cookies(hdrs))
            end
            show("listed host", "web", "localhost")
            show("other host", "web", "www.example.com")
            show("path not listed", "other-path", "localhost")
            show("wildcard host", "wild", "shop.example.com")
            show("wildcard, bare domain", "wild", "example.com")
            show("wildcard, deeper host", "wild", "a.shop.example.com")
            show("\"_\" in the catch-all server", "any", "whatever.example", $TEST_NGINX_RAND_PORT_9)
            show("\"_\" elsewhere", "any", "whatever.example")
            show("no locations", "none", "localhost")
        }
    }
--- response_body
201 []
listed host: 200 a, cookies: 1
other host: 200 a, cookies: 0
path not listed: 200 a, cookies: 0
wildcard host: 200 a, cookies: 1
wildcard, bare domain: 200 a, cookies: 0
wildcard, deeper host: 200 a, cookies: 0
"_" in the catch-all server: 200 a, cookies: 1
"_" elsewhere: 200 a, cookies: 0
no locations: 200 a, cookies: 0
--- no_error_log
[error]
[alert]
[warn]



=== TEST 4: sticky_persistent: a stock-format cookie reaches its endpoint; a new client's cookie names the endpoint that served it
--- config
    location = /t {
        content_by_lua_block {
            local name = "default-web-80"
            ngx.say(T.post(T.doc(T.sticky(name, { "a", "b", "c" }, "persistent"))))
            for _, letter in ipairs({ "a", "b", "c" }) do
                local ok, sent = 0, 0
                for _ = 1, 5 do
                    local status, body, hdrs = T.get(name, "/",
                                                     { Cookie = "route=" .. T.persistent(name, letter) })
                    if status == 200 and body == letter then
                        ok = ok + 1
                    end
                    sent = sent + #T.set_cookies(hdrs)
                end
                ngx.say("cookie for ", letter, ": ", ok, "/5 there, cookies sent: ", sent)
            end
            local right, used, n_used = 0, {}, 0
            for _ = 1, 30 do
                local status, body, hdrs = T.get(name, "/")
                local sc = T.set_cookies(hdrs)
                if status == 200 and #sc == 1
                   and sc[1] == "route=" .. T.persistent(name, body) .. "; Path=/; HttpOnly" then
                    right = right + 1
                end
                if not used[body] then
                    used[body] = true
                    n_used = n_used + 1
                end
            end
            ngx.say("new clients: cookie naming the endpoint: ", right, "/30, endpoints used: ", n_used)
            -- an unknown or malformed cookie value: a new endpoint and a new cookie
            for _, value in ipairs({ "route=garbage", "route=" .. string.rep("0", 32) .. "|x", "route=" }) do
                local status, body, hdrs = T.get(name, "/", { Cookie = value })
                local sc = T.set_cookies(hdrs)
                ngx.say(value:sub(1, 12), ": ", status, ", new cookie for the endpoint: ",
                        #sc == 1 and sc[1]:find(T.persistent(name, body), 1, true) ~= nil)
            end
        }
    }
--- response_body
201 []
cookie for a: 5/5 there, cookies sent: 0
cookie for b: 5/5 there, cookies sent: 0
cookie for c: 5/5 there, cookies sent: 0
new clients: cookie naming the endpoint: 30/30, endpoints used: 3
route=garbag: 200, new cookie for the endpoint: true
route=000000: 200, new cookie for the endpoint: true
route=: 200, new cookie for the endpoint: true
--- no_error_log
[error]
[alert]
[warn]



=== TEST 5: an endpoint that vanished: persistent gets a new endpoint and a new cookie; balanced remaps its key, no new cookie
--- config
    location = /t {
        content_by_lua_block {
            local p, b = "default-persistent-80", "default-balanced-80"
            local find3 = T.chash_ring({ T.addr("a"), T.addr("b"), T.addr("c") })
            local find2 = T.chash_ring({ T.addr("a"), T.addr("b") })
            local key
            for i = 1, 200 do
                if find3("k" .. i) == T.addr("c") then
                    key = "k" .. i
                    break
                end
            end
            local balanced_cookie = "route=" .. key .. "|" .. T.backend_key(b)
            local persistent_cookie = "route=" .. T.persistent(p, "c")
            ngx.say(T.post(T.doc(T.sticky(p, { "a", "b", "c" }, "persistent"),
                                 T.sticky(b, { "a", "b", "c" }, "balanced"))))
            local _, body1 = T.get(p, "/", { Cookie = persistent_cookie })
            local _, body2 = T.get(b, "/", { Cookie = balanced_cookie })
            ngx.say("before: persistent ", body1, ", balanced ", body2)
            ngx.say(T.post(T.doc(T.sticky(p, { "a", "b" }, "persistent"),
                                 T.sticky(b, { "a", "b" }, "balanced"))))
            local status, body, hdrs = T.get(p, "/", { Cookie = persistent_cookie })
            local sc = T.set_cookies(hdrs)
            ngx.say("persistent after: ", status, " ", body ~= "c", ", new cookie for it: ",
                    #sc == 1 and sc[1] == "route=" .. T.persistent(p, body) .. "; Path=/; HttpOnly")
            local again, sent = 0, 0
            for _ = 1, 5 do
                local s2, b2, h2 = T.get(p, "/", { Cookie = "route=" .. T.persistent(p, body) })
                if s2 == 200 and b2 == body then
                    again = again + 1
                end
                sent = sent + #T.set_cookies(h2)
            end
            ngx.say("  with the new cookie: ", again, "/5 there, cookies sent: ", sent)
            status, body, hdrs = T.get(b, "/", { Cookie = balanced_cookie })
            ngx.say("balanced after: ", status, " ", body == T.letter(find2(key)),
                    ", cookies sent: ", #T.set_cookies(hdrs))
        }
    }
--- response_body
201 []
before: persistent c, balanced c
201 []
persistent after: 200 true, new cookie for it: true
  with the new cookie: 5/5 there, cookies sent: 0
balanced after: 200 true, cookies sent: 0
--- no_error_log
[error]
[alert]
[warn]



=== TEST 6: retries past a dead endpoint: one cookie per response, for the endpoint that answered; a client's cookie is kept unless change_on_failure
--- config
    location = /t {
        content_by_lua_block {
            local p, cof, b = "default-persistent-80", "default-cof-80", "default-balanced-80"
            ngx.say(T.post(T.doc(T.sticky(p, { "dead", "a" }, "persistent"),
                                 T.sticky(cof, { "dead", "a" }, "persistent", { change_on_failure = true }),
                                 T.sticky(b, { "dead", "a", "b" }, "balanced"))))
            -- new clients: when the first attempt went to the dead endpoint, the retry's
            -- cookie replaces the first one
            local right, via_dead = 0, 0
            for _ = 1, 20 do
                local status, body, hdrs = T.get(p, "/")
                local sc = T.set_cookies(hdrs)
                if status == 200 and body == "a" and #sc == 1
                   and sc[1] == "route=" .. T.persistent(p, "a") .. "; Path=/; HttpOnly" then
                    right = right + 1
                end
                if T.tried(hdrs) == "dead,a" then
                    via_dead = via_dead + 1
                end
            end
            ngx.say("new clients: one cookie, for a: ", right, "/20, some via the dead one: ", via_dead > 0)
            -- a cookie naming the dead endpoint
            local function with_dead_cookie(name, cookie)
                local out = {}
                for _ = 1, 3 do
                    local status, body, hdrs = T.get(name, "/", { Cookie = cookie })
                    local sc = T.set_cookies(hdrs)
                    local text = sc[1] and sc[1]:gsub(T.persistent(name, "a"):gsub("%p", "%%%0"), "<a>")
                    out[#out + 1] = status .. " " .. body .. " (" .. T.tried(hdrs) .. ") "
                                    .. (text or "no cookie")
                end
                return table.concat(out, " / ")
            end
            ngx.say("kept: ", with_dead_cookie(p, "route=" .. T.persistent(p, "dead")))
            ngx.say("change_on_failure: ", with_dead_cookie(cof, "route=" .. T.persistent(cof, "dead")))
            -- balanced: a key on the dead endpoint is served by another one, same each time
            local find = T.chash_ring({ T.addr("dead"), T.addr("a"), T.addr("b") })
            local key
            for i = 1, 200 do
                if find("k" .. i) == T.addr("dead") then
                    key = "k" .. i
                    break
                end
            end
            local seen, n, sent = {}, 0, 0
            for _ = 1, 5 do
                local status, body, hdrs = T.get(b, "/", { Cookie = "route=" .. key .. "|" .. T.backend_key(b) })
                local k = status .. " " .. body .. " (" .. T.tried(hdrs) .. ")"
                if not seen[k] then
                    seen[k] = true
                    n = n + 1
                end
                sent = sent + #T.set_cookies(hdrs)
            end
            ngx.say("balanced key on the dead endpoint: answers ", n, ", cookies sent: ", sent)
        }
    }
--- response_body_like eval
qr/^201 \[\]
new clients: one cookie, for a: 20\/20, some via the dead one: true
kept: 200 a \(dead,a\) no cookie \/ 200 a \(dead,a\) no cookie \/ 200 a \(dead,a\) no cookie
change_on_failure: 200 a \(dead,a\) route=<a>; Path=\/; HttpOnly \/ 200 a \(dead,a\) route=<a>; Path=\/; HttpOnly \/ 200 a \(dead,a\) route=<a>; Path=\/; HttpOnly
balanced key on the dead endpoint: answers 1, cookies sent: 0
$/
--- error_log
Connection refused) while connecting to upstream
--- no_error_log
[alert]
[crit]
no live upstreams



=== TEST 7: the endpoint's own Set-Cookie stays next to the affinity cookie
--- config
    location = /t {
        content_by_lua_block {
            local name = "default-own-80"
            ngx.say(T.post(T.doc(T.sticky(name, { "own" }, "persistent"),
                                 T.sticky("default-retry-80", { "dead", "own" }, "persistent"))))
            local mine = "route=" .. T.persistent(name, "own") .. "; Path=/; HttpOnly"
            local _, body, hdrs = T.get(name, "/")
            local sc = T.set_cookies(hdrs)
            table.sort(sc)
            ngx.say("new client: ", body, ", ", #sc, " cookies, ours: ", sc[2] == mine, ", its own: ", sc[1])
            _, body, hdrs = T.get(name, "/", { Cookie = "route=" .. T.persistent(name, "own") })
            ngx.say("with the cookie: ", body, ", cookies: ", table.concat(T.set_cookies(hdrs), " | "))
            local right = 0
            for _ = 1, 10 do
                local status, b, h = T.get("default-retry-80", "/")
                local list = T.set_cookies(h)
                table.sort(list)
                if status == 200 and b == "own" and #list == 2 and list[1] == "app=1; Path=/"
                   and list[2] == "route=" .. T.persistent("default-retry-80", "own") .. "; Path=/; HttpOnly" then
                    right = right + 1
                end
            end
            ngx.say("with retries: its own and one affinity cookie: ", right, "/10")
        }
    }
--- response_body
201 []
new client: own, 2 cookies, ours: true, its own: app=1; Path=/
with the cookie: own, cookies: app=1; Path=/
with retries: its own and one affinity cookie: 10/10
--- no_error_log
[alert]
[crit]



=== TEST 8: several Cookie headers are read as one (as $http_cookie joins them)
--- config
    location = /t {
        content_by_lua_block {
            local name = "default-web-80"
            ngx.say(T.post(T.doc(T.sticky(name, { "a", "b", "c" }, "persistent"))))
            local value = "route=" .. T.persistent(name, "b")
            local cases = {
                { "one header", value },
                { "among others", "x=1; " .. value .. "; y=2" },
                { "second header", { "x=1", value } },
                { "third header", { "x=1", "y=2; z=3", value } },
                { "last one wins", { "route=" .. T.persistent(name, "c"), value } },
            }
            for _, case in ipairs(cases) do
                local ok, sent = 0, 0
                for _ = 1, 4 do
                    local status, body, hdrs = T.get(name, "/", { Cookie = case[2] })
                    if status == 200 and body == "b" then
                        ok = ok + 1
                    end
                    sent = sent + #T.set_cookies(hdrs)
                end
                ngx.say(case[1], ": ", ok, "/4 on b, cookies sent: ", sent)
            end
        }
    }
--- response_body
201 []
one header: 4/4 on b, cookies sent: 0
among others: 4/4 on b, cookies sent: 0
second header: 4/4 on b, cookies sent: 0
third header: 4/4 on b, cookies sent: 0
last one wins: 4/4 on b, cookies sent: 0
--- no_error_log
[error]
[alert]
[warn]



=== TEST 9: over TLS the cookie is Secure without `secure` configured
--- user_files
>>> test.crt
-----BEGIN CERTIFICATE-----
MIIBfzCCASWgAwIBAgIUHWoX2MSSagDzK0826mthwO3tvbIwCgYIKoZIzj0EAwIw
FDESMBAGA1UEAwwJbG9jYWxob3N0MCAXDTI2MTEyMjA4MjYyNVoYDzIxMjYxMDI5
MDgyNjI1WjAUMRIwEAYDVQQDDAlsb2NhbGhvc3QwWTATBgcqhkjOPQIBBggqhkjO
PQMBBwNCAASPihKBtO3rNZYTpT+TGOFr+Fi9PpUsODnOK0D4R7bd/tnR7OGAyzQh
LZePc4diSj2sRF6IoU20mSUJiESIOWG7o1MwUTAdBgNVHQ4EFgQUnNRooygqL5NB
uQDns7wK38jvp9UwHwYDVR0jBBgwFoAUnNRooygqL5NBuQDns7wK38jvp9UwDwYD
VR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNIADBFAiEA9OicT86ir0ljS2LSJCGV
Nep7udU2iSXXqrqG7QgOCPwCIHDJPapqPxIUuDPfbArTRMZs9Ig0h7U7CPPS+jNc
sWC3
-----END CERTIFICATE-----
>>> test.key
-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgXRIYt2fQM23t4RbY
w3sjLWggaaM2uoGAKrZ71aIlV1mhRANCAASPihKBtO3rNZYTpT+TGOFr+Fi9PpUs
ODnOK0D4R7bd/tnR7OGAyzQhLZePc4diSj2sRF6IoU20mSUJiESIOWG7
-----END PRIVATE KEY-----
--- http_config
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_10 ssl;
        ssl_certificate ../html/test.crt;
        ssl_certificate_key ../html/test.key;
        location / {
            set $location_path "/";
            set $proxy_upstream_name $http_x_backend;
            ingress_lb_route on;
            proxy_pass http://upstream_balancer;
        }
    }
--- config
    location = /t {
        content_by_lua_block {
            local name = "default-web-80"
            ngx.say(T.post(T.doc(T.sticky(name, { "a" }, "persistent"))))
            local mine = "route=" .. T.persistent(name, "a")
            local status, body, hdrs = T.request("GET", "/", { ["X-Backend"] = name }, nil,
                                                 $TEST_NGINX_RAND_PORT_10, true)
            ngx.say("https: ", status, " ", body, ", ",
                    (table.concat(T.set_cookies(hdrs), " | "):gsub(mine:gsub("%p", "%%%0"), "route=<a>")))
            status, body, hdrs = T.get(name, "/")
            ngx.say("http: ", status, " ", body, ", ",
                    (table.concat(T.set_cookies(hdrs), " | "):gsub(mine:gsub("%p", "%%%0"), "route=<a>")))
        }
    }
--- response_body
201 []
https: 200 a, route=<a>; Path=/; Secure; HttpOnly
http: 200 a, route=<a>; Path=/; HttpOnly
--- no_error_log
[error]
[alert]
[warn]



=== TEST 10: without $location_path the cookie path and the locations filter use "/", as in the Lua front end
--- config
    location = /t {
        content_by_lua_block {
            local name = "default-shop-80"
            ngx.say(T.post(T.doc(T.sticky(name, { "a" }, "persistent",
                                          { locations = { localhost = { "/shop/", "/" } } }),
                                 T.sticky("root-only", { "a" }, "persistent"))))
            local mine = "route=" .. T.persistent(name, "a")
            for _, path in ipairs({ "/shop/item", "/item" }) do
                local status, body, hdrs = T.get(name, path)
                ngx.say(path, ": ", status, " ", body, ", ",
                        (table.concat(T.set_cookies(hdrs), " | "):gsub(mine:gsub("%p", "%%%0"), "route=<a>")))
            end
            local status, body, hdrs = T.get("root-only", "/shop/item")
            ngx.say("backend listing only \"/\", /shop/item: ", status, " ", body, ", cookies: ", #T.set_cookies(hdrs))
        }
    }
--- response_body
201 []
/shop/item: 200 a, route=<a>; Path=/; HttpOnly
/item: 200 a, route=<a>; Path=/; HttpOnly
backend listing only "/", /shop/item: 200 a, cookies: 1
--- no_error_log
[error]
[alert]
[warn]
