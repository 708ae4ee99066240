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

        -- tests/data (shared/vectors/resty-chash-and-sticky.json), chash sets
        -- "three" and "ten": case i has the key "/api/v<i % 7>/items/<i>", and
        -- letter i of `choices` names the endpoint resty.chash chose for it ("a" =
        -- the set's first endpoint)
        T.VECTORS = {
            { name = "three", eps = { "10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080" },
              choices = "abcbcbbcaaccbcccccacbabcabbcaacbcbbbccbbccbcacaccaacbaccaabcccbaccbaaaaabbbacaaaababacbbbcccabcccbbbbccbbaccbcccbcaccabcacbbccbbcabacbbabcaaccbbbaaccbbbbbbbccaabccbacbcbaabbbccacaabbccbccbbaababcccbccaacaaabccbaaabcbbcaababcaacccbcccabbccbabcccaabaaacbcabccbcacacbbaccbacbcabaaabbacbaabcbcccbacbbcbccbaaacabbabaaaabaacbcbacbccbbcbcbabbbacbbabacaaaacbbbcbaaccbbabbbaabcccabcaacabacaaabcabcbababcaacbccacabacbbcaccaccbaccbaababbcaabcccaccacbbabbcaacaaaabcbccaacbcacbacacabbacccbaaabbbbcaaccbbabbbbbcaca" },
            { name = "ten", eps = { "10.1.0.1:8080", "10.1.0.2:8080", "10.1.0.3:8080",
                                    "10.1.0.4:8080", "10.1.0.5:8080", "10.1.0.6:8080",
                                    "10.1.0.7:8080", "10.1.0.8:8080", "10.1.0.9:8080",
                                    "10.1.0.10:8080" },
              choices = "gaiahafehhhbdfcigcjhfaaifeeihfigeegcgedefgchffjhahggbdifgfcjbidecehegfgjefdaajjgfbicdgcfdaiebdfdhbedjahfjjffgfdaifdfibbbecddefidfacbijeagieeefdjdgficiddhhcjhieagbgfcfcgehecacdbaejfgadagdabdjajhbeeedidajgjcjegbjddbhgbddcgigdbgdgaiaiibhhdedjgfiaifedegbbjadffbfiagagigjjhbhaedbacbfidehbgjehfbbdahiccdabbijajidhhhcabajahhibffhfigadfjhggbbififffcgcdhhhaiabffgggbhgihchghiahahidfieiidbbiajfdjhfbbbcaiibbhcdigjhjhbgcgiddedaabjbdfjfaceiebhdjdeeedfafibhhbbebagfdbciegdfhahidjidhbigbgicabgabfgeaaeegjcgcgggebid" },
        }
        function T.vector_key(i)
            return "/api/v" .. (i % 7) .. "/items/" .. i
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
