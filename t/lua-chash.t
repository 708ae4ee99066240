# Lua front end, chash: backends with upstream-hash-by (no subset). The Lua side
# evaluates the upstream-hash-by expression per request (ingress-nginx's
# util.generate_var_value rules, lua/ingress_lb/hash_by.lua) and hands it to the
# core, which picks.
#
#   HARNESS_PERL_SWITCHES='-It/compat -MIngressLbFallback' prove t/lua-chash.t
#
# Environment (defaults below when unset): TEST_NGINX_BINARY, TEST_NGINX_LOAD_MODULES,
# TEST_NGINX_ILB_LUA_DIR (absolute path of lua/), TEST_NGINX_ILB_LIB (absolute path
# of libingress_lb.so).
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
# upstream_balancer upstream, four endpoints ("a" to "d", each answering its
# letter), two ports where nothing listens ("dead", "dead2") and the ingress
# server, wired like ingress-nginx's nginx.tmpl (per-location $location_path,
# $balancer_ewma_score, $proxy_upstream_name; here the backend name comes from the
# X-Backend request header). The blocks' own http_config is appended.
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
        -- nginx.tmpl sets the controller's status port here; balancer.lua refuses
        -- peers on it (default 10246, which a random test port could be)
        configuration.prohibited_localhost_port = "1"
        balancer = require("balancer")

        -- test helpers: the driver below only sends requests and counts
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
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_7; return 200 "d\n"; }

    # the ingress server, wired like ingress-nginx's nginx.tmpl
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_5;

        location / {
            set $location_path "/";
            set $balancer_ewma_score -1;
            set $proxy_upstream_name $http_x_backend;

            rewrite_by_lua_block {
                balancer.rewrite()
            }

            proxy_connect_timeout 2s;
            proxy_next_upstream error timeout;
            proxy_next_upstream_tries 3;

            add_header X-Upstream-Addr $upstream_addr always;
            add_header X-Worker-Pid $pid always;
            add_header X-Ewma-Score $balancer_ewma_score always;

            proxy_pass http://upstream_balancer;

            log_by_lua_block {
                balancer.log()
            }
        }

        location /configuration {
            client_max_body_size 21m;
            client_body_buffer_size 21m;

            content_by_lua_block {
                configuration.call()
            }
        }
    }
_EOC_

add_block_preprocessor(sub {
    my $block = shift;
    my $http = $HttpConfig;
    # a block named "... without $balancer_ewma_score ..." gets an nginx.conf that
    # does not declare that variable
    $http =~ s/^.*\$balancer_ewma_score.*\n//mg if $block->name =~ /without \$balancer_ewma_score/;
    $block->set_value("http_config", $http . ($block->http_config // ''));
    $block->set_value("request", "GET /t") unless defined $block->request;
    $block->set_value("timeout", 20) unless defined $block->timeout;
});

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
