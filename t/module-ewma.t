# nginx module, ewma: backends with "load-balance": "ewma". Each pick goes through
# the core, which returns the picked endpoint's score: the module stores it in
# $balancer_ewma_score. After the response, the module's log phase handler reports
# $upstream_addr, $upstream_status, $upstream_connect_time and
# $upstream_response_time to the core. The statistics live in the shared zone
# "ingress_lb_ewma" (ingress_lb_ewma_zone, default 1m), laid out by the master and
# used by every worker: this file runs nginx with a master and two workers
# (reuseport spreads the connections over both).
#
# TEST 1-5 are the Lua front end's t/lua-ewma.t, with the same expected output: both
# front ends must behave the same. The lua module only drives the test (and serves
# the slow endpoints, which answer after an ngx.sleep()).
#
#   TEST_NGINX_LOAD_MODULES="/usr/lib/nginx/modules/ndk_http_module.so \
#       /usr/lib/nginx/modules/ngx_http_lua_module.so \
#       $PWD/target/release/ngx_http_ingress_lb_module.so" \
#     HARNESS_PERL_SWITCHES='-It/compat -MIngressLbFallback' prove t/module-ewma.t

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
master_on();
workers(2);
# nginx for TEST 7's "nginx -t" runs (the binary Test::Nginx runs)
$ENV{TEST_NGINX_BINARY} ||= (grep { -x "$_/nginx" } split /:/, $ENV{PATH} // '')
    ? 'nginx' : '/usr/sbin/nginx';
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

        T.PORTS.slow = $TEST_NGINX_RAND_PORT_8
        T.PORTS.slower = $TEST_NGINX_RAND_PORT_9
        T.LETTER["127.0.0.1:" .. T.PORTS.slow] = "slow"
        T.LETTER["127.0.0.1:" .. T.PORTS.slower] = "slower"

        -- an ewma backend
        function T.ewma(name, letters)
            local eps = {}
            for i, l in ipairs(letters) do
                eps[i] = T.ep(l)
            end
            return T.backend(name, eps, { load_balance = "ewma" })
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
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_5 reuseport;

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

    # subrequests (TEST 3, TEST 6) report their timings too
    log_subrequest on;

    # slow endpoints: the score of the first is about 0.15 s, of the second 0.3 s
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_8;
        location / {
            content_by_lua_block {
                ngx.sleep(0.15)
                ngx.say("slow")
            }
        }
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_9;
        location / {
            content_by_lua_block {
                ngx.sleep(0.3)
                ngx.say("slower")
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

Test::More::done_testing();

__DATA__

=== TEST 1: a slow endpoint gets much less traffic than the fast ones
--- config
    location = /t {
        content_by_lua_block {
            local name = "default-web-80"
            ngx.say(T.post(T.doc(T.ewma(name, { "slow", "a", "b" }))))
            ngx.sleep(0.6)
            local counts = {}
            for _ = 1, 40 do
                local status, body = T.get(name, "/")
                local key = status == 200 and body or ("status" .. tostring(status))
                counts[key] = (counts[key] or 0) + 1
            end
            ngx.say("slow at most 5 of 40: ", (counts.slow or 0) <= 5)
            ngx.say("fast ones: ", (counts.a or 0) + (counts.b or 0) >= 35,
                    ", both used: ", counts.a ~= nil and counts.b ~= nil)
            if (counts.slow or 0) > 5 then
                ngx.say(T.counts(counts))
            end
        }
    }
--- response_body
201 []
slow at most 5 of 40: true
fast ones: true, both used: true
--- no_error_log
[error]
[alert]
[warn]



=== TEST 2: $balancer_ewma_score carries the picked endpoint's score (ewma only)
--- config
    location = /t {
        content_by_lua_block {
            ngx.say(T.post(T.doc(T.ewma("default-web-80", { "slow", "slower" }),
                                 T.ewma("default-one-80", { "a" }),
                                 T.backend("default-rr-80", { T.ep("a"), T.ep("b") }))))
            ngx.sleep(0.6)
            -- both slow endpoints answered once, then they have a score
            local scores, fine = {}, 0
            for _ = 1, 6 do
                local status, body, hdrs = T.get("default-web-80", "/")
                local score = tonumber(T.header(hdrs, "X-Ewma-Score"))
                if status == 200 and score and score >= 0 then
                    fine = fine + 1
                end
                scores[#scores + 1] = score
            end
            ngx.say("ewma: numbers >= 0: ", fine, "/6, last one a response time: ",
                    scores[6] > 0.05 and scores[6] < 1)
            local _, _, hdrs = T.get("default-one-80", "/")
            ngx.say("one endpoint: ", T.header(hdrs, "X-Ewma-Score"))
            _, _, hdrs = T.get("default-rr-80", "/")
            ngx.say("round robin: ", T.header(hdrs, "X-Ewma-Score"))
        }
    }
--- response_body
201 []
ewma: numbers >= 0: 6/6, last one a response time: true
one endpoint: -1
round robin: -1
--- no_error_log
[error]
[alert]
[warn]



=== TEST 3: the statistics are shared: a worker that never used an endpoint knows its times
--- config
    # subrequests run in the worker of /t
    location = /measure {
        internal;
        set $proxy_upstream_name $arg_backend;
        ingress_lb_route on;
        proxy_pass http://upstream_balancer;
    }
    location = /t {
        content_by_lua_block {
            ngx.say(T.post(T.doc(T.ewma("default-slow-80", { "slow" }),
                                 T.ewma("default-slower-80", { "slower" }),
                                 T.ewma("default-pair-80", { "slow", "slower" }))))
            ngx.sleep(0.6)
            -- this worker alone measures both endpoints, through backends of one
            -- endpoint each
            for _ = 1, 2 do
                for _, backend in ipairs({ "default-slow-80", "default-slower-80" }) do
                    local res = ngx.location.capture("/measure", { args = { backend = backend } })
                    assert(res.status == 200, res.status)
                end
            end
            -- the other worker's first pick for the pair: the faster one, with the
            -- score measured here (a worker without those statistics would score
            -- both endpoints alike, with nothing measured)
            local me = tostring(ngx.worker.pid())
            local found
            for _ = 1, 60 do
                local status, body, hdrs = T.get("default-pair-80", "/")
                if T.header(hdrs, "X-Worker-Pid") ~= me then
                    found = { status = status, body = body,
                              score = tonumber(T.header(hdrs, "X-Ewma-Score")) }
                    break
                end
            end
            if not found then
                ngx.say("no answer from the other worker")
                return
            end
            ngx.say("other worker: ", found.status, " ", found.body, ", score measured elsewhere: ",
                    found.score ~= nil and found.score > 0.1 and found.score < 0.3)
            if not (found.score and found.score > 0.1) then
                ngx.say("score: ", tostring(found.score))
            end
        }
    }
--- response_body
201 []
other worker: 200 slow, score measured elsewhere: true
--- no_error_log
[error]
[alert]
[warn]



=== TEST 4: a dead endpoint is retried past, never twice, and then avoided
--- config
    location = /t {
        content_by_lua_block {
            local name = "default-web-80"
            ngx.say(T.post(T.doc(T.ewma(name, { "dead", "a", "b" }))))
            ngx.sleep(0.6)
            local counts, dead_tried, repeated = {}, 0, 0
            for _ = 1, 30 do
                local status, body, hdrs = T.get(name, "/")
                local key = status == 200 and body or ("status" .. tostring(status))
                counts[key] = (counts[key] or 0) + 1
                local seen = {}
                for peer in T.tried(hdrs):gmatch("[^,]+") do
                    if seen[peer] then
                        repeated = repeated + 1
                    end
                    seen[peer] = true
                end
                if seen.dead then
                    dead_tried = dead_tried + 1
                end
            end
            ngx.say("all answered: ", (counts.a or 0) + (counts.b or 0) == 30)
            -- each worker may try it before it has a score
            ngx.say("dead endpoint tried at most 3 times: ", dead_tried <= 3)
            ngx.say("peers tried twice: ", repeated)
            if dead_tried > 3 then
                ngx.say("dead tried ", dead_tried, " times")
            end
        }
    }
--- response_body
201 []
all answered: true
dead endpoint tried at most 3 times: true
peers tried twice: 0
--- no_error_log
[alert]
[crit]
no live upstreams



=== TEST 5: an nginx.conf without $balancer_ewma_score works all the same
--- config
    location = /t {
        content_by_lua_block {
            local name = "default-web-80"
            ngx.say(T.post(T.doc(T.ewma(name, { "a", "b" }))))
            ngx.sleep(0.6)
            local counts = {}
            for _ = 1, 10 do
                local status, body = T.get(name, "/")
                local key = status == 200 and body or ("status" .. tostring(status))
                counts[key] = (counts[key] or 0) + 1
            end
            ngx.say("answered: ", (counts.a or 0) + (counts.b or 0))
        }
    }
--- response_body
201 []
answered: 10
--- no_error_log
[error]
[alert]
[warn]



=== TEST 6: the statistics survive a reload (HUP): the new workers know the endpoints' times
--- config
    # subrequests run in the worker of /train
    location = /measure {
        internal;
        set $proxy_upstream_name $arg_backend;
        ingress_lb_route on;
        proxy_pass http://upstream_balancer;
    }
    location = /train {
        content_by_lua_block {
            ngx.say(T.post(T.doc(T.ewma("default-slow-80", { "slow" }),
                                 T.ewma("default-slower-80", { "slower" }),
                                 T.ewma("default-pair-80", { "slow", "slower" }))))
            ngx.sleep(0.6)
            for _ = 1, 2 do
                for _, backend in ipairs({ "default-slow-80", "default-slower-80" }) do
                    local res = ngx.location.capture("/measure", { args = { backend = backend } })
                    assert(res.status == 200, res.status)
                end
            end
            local ffi = require "ffi"
            ffi.cdef[[ int getppid(void); int kill(int pid, int sig); ]]
            ngx.say("hup: ", ffi.C.kill(ffi.C.getppid(), 1))
        }
    }
    location = /probe {
        content_by_lua_block {
            -- only new workers answer now; their first picks for the pair take the
            -- faster endpoint with the score measured before the reload (workers
            -- without those statistics would score both endpoints alike)
            local ok, pids = 0, {}
            for _ = 1, 6 do
                local status, body, hdrs = T.get("default-pair-80", "/")
                local score = tonumber(T.header(hdrs, "X-Ewma-Score"))
                if status == 200 and body == "slow" and score and score > 0.1 and score < 0.3 then
                    ok = ok + 1
                else
                    ngx.say(status, " ", body, " score ", tostring(score))
                end
                pids[T.header(hdrs, "X-Worker-Pid") or "?"] = true
            end
            ngx.say("slow with its measured score: ", ok, "/6")
        }
    }
--- request eval
["GET /train", "GET /probe"]
--- wait: 1
--- response_body eval
["201 []\nhup: 0\n", "slow with its measured score: 6/6\n"]
--- no_error_log
[error]
[alert]
[warn]



=== TEST 7: ingress_lb_ewma_zone sets the zone's size; a too small or repeated one is refused
--- http_config
    ingress_lb_ewma_zone 64k;
--- config
    location = /t {
        content_by_lua_block {
            local name = "default-web-80"
            ngx.say(T.post(T.doc(T.ewma(name, { "slow", "a", "b" }))))
            ngx.sleep(0.6)
            local counts = {}
            for _ = 1, 20 do
                local status, body = T.get(name, "/")
                local key = status == 200 and body or ("status" .. tostring(status))
                counts[key] = (counts[key] or 0) + 1
            end
            ngx.say("with a 64k zone, slow at most 4 of 20: ", (counts.slow or 0) <= 4)

            -- nginx -t on configurations with a bad ingress_lb_ewma_zone
            local dir = ngx.config.prefix() .. "conf/"
            local function check(directives)
                local path = dir .. "ewma-zone-test.conf"
                local f = assert(io.open(path, "w"))
                for so in ("$TEST_NGINX_LOAD_MODULES"):gmatch("%S+") do
                    if so:find("ingress_lb", 1, true) then
                        f:write("load_module ", so, ";\n")
                    end
                end
                f:write("error_log stderr;\npid ", dir, "ewma-zone-test.pid;\n",
                        "events {}\nhttp {\n", directives, "\n",
                        "map $uri $proxy_upstream_name { default x; }\n",
                        "upstream u { server 0.0.0.1; ingress_lb; }\n}\n")
                f:close()
                local p = io.popen("$TEST_NGINX_BINARY -t -p " .. ngx.config.prefix()
                                   .. " -c " .. path .. " 2>&1")
                local out = p:read("*a")
                p:close()
                return out:match("%[emerg%][^\n]*") or (out:find("test is successful", 1, true)
                                                       and "ok" or out)
            end
            for _, d in ipairs({ "ingress_lb_ewma_zone 1m;",
                                 "ingress_lb_ewma_zone 16k;",
                                 "ingress_lb_ewma_zone 1m; ingress_lb_ewma_zone 2m;",
                                 "ingress_lb_ewma_zone lots;" }) do
                ngx.say(d, " -> ", (check(d):gsub("^%[emerg%] %d+#%d+: ", ""):gsub(" in /.*$", "")))
            end
        }
    }
--- response_body
201 []
with a 64k zone, slow at most 4 of 20: true
ingress_lb_ewma_zone 1m; -> ok
ingress_lb_ewma_zone 16k; -> zone size "16k" is too small (minimum 32k)
ingress_lb_ewma_zone 1m; ingress_lb_ewma_zone 2m; -> "ingress_lb_ewma_zone" directive is duplicate
ingress_lb_ewma_zone lots; -> invalid zone size "lots"
--- no_error_log
[error]
[alert]
[warn]



=== TEST 8: a full statistics table is reported when a configuration is posted
--- http_config
    ingress_lb_ewma_zone 32k;
--- config
    location = /t {
        content_by_lua_block {
            local name = "default-web-80"
            ngx.say(T.post(T.doc(T.ewma(name, { "a" }))))
            ngx.sleep(0.6)
            local status, body = T.get(name, "/")
            ngx.say(status, " ", body)
            ngx.sleep(0.1)
            -- new endpoints start at the average of the measured ones: 3000 of them
            -- do not fit in a 32k zone
            local eps = { T.ep("a") }
            for i = 1, 3000 do
                eps[#eps + 1] = T.ep(80, "10.9." .. math.floor(i / 250) .. "." .. (i % 250 + 1))
            end
            ngx.say(T.post(T.doc(T.backend(name, eps, { load_balance = "ewma" }))))
        }
    }
--- response_body
201 []
200 a
201 []
--- error_log eval
qr/\[warn\] .*ingress_lb: backends configuration: ewma statistics table full/
--- no_error_log
[error]
[alert]
