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

BEGIN {
    # The module and the lua module (test driver only): TEST_NGINX_LOAD_MODULES, else
    # Debian's lua modules and the module built in this tree.
    my @mods = grep { length } split /\s+/, $ENV{TEST_NGINX_LOAD_MODULES} // '';
    if (!grep { /ngx_http_lua_module/ } @mods) {
        my @lua = map { "/usr/lib/nginx/modules/$_" } qw(ndk_http_module.so ngx_http_lua_module.so);
        unshift @mods, @lua unless grep { !-f $_ } @lua;
    }
    if (!grep { /ngx_http_ingress_lb_module/ } @mods) {
        require Cwd;
        for my $so (map { Cwd::abs_path('.') . "/target/release/$_" }
                    qw(ngx_http_ingress_lb_module.so libngx_http_ingress_lb_module.so)) {
            if (-f $so) { push @mods, $so; last }
        }
    }
    $ENV{TEST_NGINX_LOAD_MODULES} = CORE::join ' ', @mods;
}

use Test::Nginx::Socket;

my $mods = $ENV{TEST_NGINX_LOAD_MODULES};
if ($mods !~ /ngx_http_ingress_lb_module/) {
    plan skip_all => 'set TEST_NGINX_LOAD_MODULES to the absolute path of ngx_http_ingress_lb_module.so';
} elsif ($mods !~ /ngx_http_lua_module/) {
    plan skip_all => 'the lua module (test driver only) is not available';
}

repeat_each(1);
no_shuffle();
no_long_string();
log_level('info');
our $HttpConfig = <<'_EOC_';
    ingress_lb_zone 1m;

    upstream upstream_balancer {
        server 0.0.0.1; # placeholder
        ingress_lb;
    }

    init_by_lua_block {
        -- test helpers: the driver below only sends requests and counts (the same
        -- helpers as the Lua front end's suites); every pick is the module's
        local cjson = require("cjson")
        T = {}
        T.FRONT = $TEST_NGINX_RAND_PORT_5
        T.PORTS = {
            a = $TEST_NGINX_RAND_PORT_1, b = $TEST_NGINX_RAND_PORT_2,
            c = $TEST_NGINX_RAND_PORT_3, d = $TEST_NGINX_RAND_PORT_7,
            -- nothing listens on these
            dead = $TEST_NGINX_RAND_PORT_4, dead2 = $TEST_NGINX_RAND_PORT_6,
        }
        T.LETTER = {}
        for letter, port in pairs(T.PORTS) do
            T.LETTER["127.0.0.1:" .. port] = letter
        end

        -- "127.0.0.1:port" of an endpoint, and the endpoint letter of such a text
        function T.addr(which)
            return "127.0.0.1:" .. T.PORTS[which]
        end
        function T.letter(addr)
            return T.LETTER[addr] or addr
        end

        -- one HTTP/1.0 exchange with the ingress server (or `port`); status, body
        -- without its trailing newline, and the headers: lower-case name -> list
        -- of values
        function T.request(method, path, headers, body, port, tls)
            local sock = ngx.socket.tcp()
            sock:settimeout(5000)
            local ok, err = sock:connect("127.0.0.1", port or T.FRONT)
            if not ok then
                return nil, "connect: " .. tostring(err), {}
            end
            if tls then
                ok, err = sock:sslhandshake(nil, "localhost", false)
                if not ok then
                    return nil, "tls: " .. tostring(err), {}
                end
            end
            local req = { method, " ", path, " HTTP/1.0\r\n" }
            local has_host = false
            for k, v in pairs(headers or {}) do
                if k:lower() == "host" then
                    has_host = true
                end
                if type(v) == "table" then
                    for _, one in ipairs(v) do
                        req[#req + 1] = k .. ": " .. one .. "\r\n"
                    end
                else
                    req[#req + 1] = k .. ": " .. v .. "\r\n"
                end
            end
            if not has_host then
                req[#req + 1] = "Host: localhost\r\n"
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
                return nil, "send: " .. tostring(err), {}
            end
            local data
            data, err = sock:receive("*a")
            sock:close()
            if not data then
                return nil, "receive: " .. tostring(err), {}
            end
            local head, rest = data:match("^(.-)\r\n\r\n(.*)$")
            if not head then
                return nil, "malformed response: " .. data, {}
            end
            local hdrs = {}
            for k, v in head:gmatch("\r\n([^:\r\n]+):[ \t]*([^\r\n]*)") do
                k = k:lower()
                hdrs[k] = hdrs[k] or {}
                table.insert(hdrs[k], v)
            end
            return tonumber(head:match("^HTTP/%d%.%d (%d+)")), (rest:gsub("\n$", "")), hdrs
        end

        -- GET `path` for backend `name` through the ingress server
        function T.get(name, path, headers)
            local h = { ["X-Backend"] = name }
            for k, v in pairs(headers or {}) do
                h[k] = v
            end
            return T.request("GET", path or "/", h)
        end

        -- the first value of a response header, or nil
        function T.header(hdrs, name)
            local list = hdrs[name:lower()]
            return list and list[1]
        end

        -- the endpoints an answered request tried, as letters: "dead,a"
        function T.tried(hdrs)
            local out = {}
            for peer in (T.header(hdrs, "X-Upstream-Addr") or ""):gmatch("[^,%s]+") do
                out[#out + 1] = T.letter(peer)
            end
            return table.concat(out, ",")
        end

        function T.ep(which, address)
            return { address = address or "127.0.0.1", port = T.PORTS[which] or which }
        end

        -- one backend as the controller serialises it. opts:
        --   hash_by, subset, subset_size     upstreamHashByConfig
        --   load_balance                     "load-balance"
        --   affinity = { mode = "balanced"|"persistent", cookie = {...} }
        --                                    sessionAffinityConfig (name "cookie")
        function T.backend(name, endpoints, opts)
            opts = opts or {}
            local eps = {}
            for i, ep in ipairs(endpoints) do
                eps[i] = { address = ep.address, port = tostring(ep.port),
                           target = { kind = "Pod", namespace = "default",
                                      name = "pod-" .. i } }
            end
            local b = {
                name = name,
                service = { spec = { type = "ClusterIP", clusterIP = "10.96.0.10" } },
                port = 80,
                sslPassthrough = false,
                endpoints = eps,
                sessionAffinityConfig = { name = "", mode = "",
                                          cookieSessionAffinity = { name = "" } },
                upstreamHashByConfig = {
                    ["upstream-hash-by"] = opts.hash_by,
                    ["upstream-hash-by-subset"] = opts.subset,
                    ["upstream-hash-by-subset-size"] = opts.subset_size or 3,
                },
                ["load-balance"] = opts.load_balance,
                noServer = false,
            }
            if opts.affinity then
                b.sessionAffinityConfig = {
                    name = "cookie",
                    mode = opts.affinity.mode or "balanced",
                    cookieSessionAffinity = opts.affinity.cookie or { name = "INGRESSCOOKIE" },
                }
            end
            return cjson.encode(b)
        end

        function T.doc(...)
            return "[" .. table.concat({ ... }, ",") .. "]"
        end

        -- POST /configuration/backends; "status [body]"
        function T.post(doc)
            local status, body = T.request("POST", "/configuration/backends", nil, doc)
            return tostring(status) .. " [" .. tostring(body) .. "]"
        end

        -- "a=2 b=3" from a table of counts
        function T.counts(counts)
            local keys = {}
            for k in pairs(counts) do
                keys[#keys + 1] = k
            end
            table.sort(keys)
            for i, k in ipairs(keys) do
                keys[i] = k .. "=" .. counts[k]
            end
            return table.concat(keys, " ")
        end

        -- Consistent hashing as lua-resty-balancer's resty.chash (v0.05, which stock
        -- ingress-nginx uses): 160 points per node id; the first point's hash is
        -- CRC32(id .. "\0\0\0\0"), each next one CRC32(id .. previous point's
        -- hash as 4 bytes, little endian); a key goes to the first point whose hash
        -- is not below CRC32(key), wrapping around to the first point. Checked
        -- against the recorded reference decisions in t/lua-chash.t.
        local bit = require("bit")
        local band, bxor, rshift = bit.band, bit.bxor, bit.rshift
        local crc_table = {}
        for i = 0, 255 do
            local c = i
            for _ = 1, 8 do
                if band(c, 1) ~= 0 then
                    c = bxor(rshift(c, 1), 0xEDB88320)
                else
                    c = rshift(c, 1)
                end
            end
            crc_table[i] = c
        end
        local TWO32 = 4294967296
        function T.chash_ring(ids)
            local points = {}
            for _, id in ipairs(ids) do
                -- the CRC32 state after the id, before the final inversion
                local base = bxor(ngx.crc32_short(id), 0xffffffff)
                local prev = 0
                for _ = 1, 160 do
                    local c = base
                    for k = 0, 3 do
                        local byte = band(rshift(prev, 8 * k), 0xff)
                        c = bxor(crc_table[band(bxor(c, byte), 0xff)], rshift(c, 8))
                    end
                    local h = bxor(c, 0xffffffff) % TWO32
                    points[#points + 1] = { h, id }
                    prev = h
                end
            end
            table.sort(points, function(x, y) return x[1] < y[1] end)
            return function(key)
                local h = ngx.crc32_short(key)
                if h > points[#points][1] then
                    return points[1][2]
                end
                local lo, hi = 1, #points
                while lo < hi do
                    local mid = math.floor((lo + hi) / 2)
                    if points[mid][1] >= h then
                        hi = mid
                    else
                        lo = mid + 1
                    end
                end
                return points[lo][2]
            end
        end

        -- the subsets of `letters` (endpoint letters, in order) for subset size
        -- `size`, and a function giving the subset (a set of letters) of a key
        function T.subsets(letters, size)
            local n = #letters
            local sets = math.ceil(n / size)
            local names, members = {}, {}
            for s = 1, sets do
                names[s] = "set" .. s
                local m = {}
                for k = (s - 1) * size, s * size - 1 do
                    m[letters[k % n + 1]] = true
                end
                members["set" .. s] = m
            end
            local find = T.chash_ring(names)
            return function(key)
                local set = find(key)
                return members[set], set
            end
        end

        -- "a b" from a set of letters
        function T.set_text(set)
            local out = {}
            for letter in pairs(set) do
                out[#out + 1] = letter
            end
            table.sort(out)
            return table.concat(out, " ")
        end
    }

    # the endpoints
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1; return 200 "a\n"; }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2; return 200 "b\n"; }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_3; return 200 "c\n"; }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_7; return 200 "d\n"; }

    # the ingress server, wired like ingress-nginx's nginx.tmpl, with the module's
    # directives in place of the Lua calls
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_5;

        location / {
            set $location_path "/";
            set $balancer_ewma_score -1;
            set $proxy_upstream_name $http_x_backend;
            ingress_lb_route on;

            proxy_connect_timeout 2s;
            proxy_next_upstream error timeout;
            proxy_next_upstream_tries 3;

            add_header X-Upstream-Addr $upstream_addr always;
            add_header X-Worker-Pid $pid always;
            add_header X-Ewma-Score $balancer_ewma_score always;

            proxy_pass http://upstream_balancer;
        }

        location /configuration {
            client_max_body_size 21m;
            client_body_buffer_size 21m;
            ingress_lb_configuration;
        }
    }
_EOC_

add_block_preprocessor(sub {
    my $block = shift;
    $block->set_value("http_config", $HttpConfig . ($block->http_config // ''));
    $block->set_value("request", "GET /t") unless defined $block->request;
    $block->set_value("timeout", 20) unless defined $block->timeout;
});

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
