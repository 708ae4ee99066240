# The nginx module's upstream balancer (`ingress_lb`) and 503 check
# (`ingress_lb_route`), against real backend servers.
#
# The lua module is loaded ONLY as a test driver (a content_by_lua_block that
# fires subrequests in a loop and counts the answers); every pick is the
# module's.
#
#   TEST_NGINX_LOAD_MODULES="/usr/lib/nginx/modules/ndk_http_module.so \
#       /usr/lib/nginx/modules/ngx_http_lua_module.so \
#       $PWD/target/release/ngx_http_ingress_lb_module.so" \
#     prove -It/compat -MIngressLbFallback t/module-round-robin.t
#
# Without TEST_NGINX_LOAD_MODULES, Debian's lua modules and the module built in
# this tree are used when they exist.

use lib '.';
use t::IngressLbTest 'module';
use Test::Nginx::Socket;

check_accum_error_log();

# the zone, the upstream and three endpoints (t/IngressLbTest.pm), and the driver
my $http_config = module_base_http_config() . <<'_EOC_';
    init_by_lua_block {
        -- Test driver helpers (not balancing): POST a document, count answers.
        ports = {
            a = "$TEST_NGINX_RAND_PORT_1", b = "$TEST_NGINX_RAND_PORT_2",
            c = "$TEST_NGINX_RAND_PORT_3", dead = "$TEST_NGINX_RAND_PORT_9",
            dead2 = "$TEST_NGINX_RAND_PORT_8",
        }
        function doc(backends)
            local parts = {}
            for name, eps in pairs(backends) do
                local e = {}
                for _, ep in ipairs(eps) do
                    e[#e + 1] = '{"address":"127.0.0.1","port":"' .. ports[ep] .. '"}'
                end
                parts[#parts + 1] = '{"name":"' .. name .. '","endpoints":[' .. table.concat(e, ",") .. ']}'
            end
            return "[" .. table.concat(parts, ",") .. "]"
        end
        function post(backends)
            local res = ngx.location.capture("/configuration/backends",
                { method = ngx.HTTP_POST, body = doc(backends) })
            return res.status
        end
        function count(uri, n)
            local seen, keys = {}, {}
            for _ = 1, n do
                local res = ngx.location.capture(uri)
                local k = tostring(res.status)
                if res.status == 200 then k = k .. ":" .. (res.body or ""):gsub("\n", "") end
                if not seen[k] then seen[k] = 0; keys[#keys + 1] = k end
                seen[k] = seen[k] + 1
            end
            table.sort(keys)
            local out = {}
            for _, k in ipairs(keys) do out[#out + 1] = k .. "=" .. seen[k] end
            return table.concat(out, " ")
        end
    }
_EOC_

my $config = <<'_EOC_';
    location /configuration {
        ingress_lb_configuration;
    }

    location = /p {
        set $proxy_upstream_name "default-svc-80";
        ingress_lb_route on;
        proxy_pass http://upstream_balancer/;
    }
_EOC_

ilb_setup(http_config => $http_config, config => $config);

run_tests();

Test::More::done_testing();

__DATA__

=== TEST 1: round robin spreads requests evenly over 3 real backends
--- config
    location = /t {
        content_by_lua_block {
            ngx.say("post: ", post({ ["default-svc-80"] = { "a", "b", "c" } }))
            ngx.say(count("/p", 30))
        }
    }
--- request
GET /t
--- response_body
post: 201
200:a=10 200:b=10 200:c=10
--- no_error_log
[error]
[alert]
[warn]



=== TEST 2: a dead endpoint is skipped on retry and every request succeeds
--- config
    location = /t {
        content_by_lua_block {
            ngx.say("post: ", post({ ["default-svc-80"] = { "dead", "b" } }))
            ngx.say(count("/p", 10))
        }
    }
--- request
GET /t
--- response_body
post: 201
200:b=10
--- error_log
connect() failed (111: Connection refused) while connecting to upstream
--- no_error_log
[alert]
no live upstreams



=== TEST 3: when every endpoint failed, each one was tried exactly once, then 502
--- config
    location = /t {
        content_by_lua_block {
            ngx.say("post: ", post({ ["default-svc-80"] = { "dead", "dead2" } }))
            ngx.say(count("/p", 1))
        }
    }
--- request
GET /t
--- response_body
post: 201
502=1
--- grep_error_log eval
qr/connect\(\) failed \(111: Connection refused\)|no live upstreams/
--- grep_error_log_out
connect() failed (111: Connection refused)
connect() failed (111: Connection refused)
no live upstreams
--- no_error_log
[alert]



=== TEST 4: the endpoint set changes without a reload
--- config
    location = /t {
        content_by_lua_block {
            ngx.say("post 1: ", post({ ["default-svc-80"] = { "a" } }))
            ngx.say(count("/p", 4))
            ngx.say("post 2: ", post({ ["default-svc-80"] = { "b", "c" } }))
            ngx.say(count("/p", 6))
            ngx.say("post 3: ", post({ ["default-svc-80"] = { "c" } }))
            ngx.say(count("/p", 3))
        }
    }
--- request
GET /t
--- response_body
post 1: 201
200:a=4
post 2: 201
200:b=3 200:c=3
post 3: 201
200:c=3
--- no_error_log
[error]
[alert]



=== TEST 5: invalid POSTs change nothing: the previous endpoints keep serving
--- config
    location = /t {
        content_by_lua_block {
            ngx.say("post: ", post({ ["default-svc-80"] = { "a", "b" } }))
            local bad = {
                '[{"name":"default-svc-80","endpoints":[{"address":"127.0.0.1","port":"',
                '[{"name":"default-svc-80","endpoints":[{"address":"127.0.0.1","port":true}]}]',
                '{"name":"default-svc-80"}',
            }
            for _, body in ipairs(bad) do
                local res = ngx.location.capture("/configuration/backends",
                    { method = ngx.HTTP_POST, body = body })
                ngx.say(res.status, " ", res.body ~= "" and "with message" or "without message")
            end
            ngx.say(count("/p", 4))
        }
    }
--- request
GET /t
--- response_body
post: 201
400 with message
400 with message
400 with message
200:a=2 200:b=2
--- no_error_log
[alert]



=== TEST 6: an unknown backend gets 503 from ingress_lb_route, a known one passes
--- config
    location = /unknown {
        set $proxy_upstream_name "no-such-backend";
        ingress_lb_route on;
        proxy_pass http://upstream_balancer/;
    }
    location = /t {
        content_by_lua_block {
            ngx.say("before any config: ", ngx.location.capture("/p").status)
            ngx.say("post: ", post({ ["default-svc-80"] = { "a" } }))
            ngx.say("unknown: ", ngx.location.capture("/unknown").status)
            ngx.say("known: ", ngx.location.capture("/p").status)
        }
    }
--- request
GET /t
--- response_body
before any config: 503
post: 201
unknown: 503
known: 200
--- no_error_log
[error]
[alert]



=== TEST 7: a backend without endpoints gets 503 (balancer.rewrite() semantics)
--- config
    location = /t {
        content_by_lua_block {
            ngx.say("post: ", post({ ["default-svc-80"] = { } }))
            ngx.say(count("/p", 2))
        }
    }
--- request
GET /t
--- response_body
post: 201
503=2
--- no_error_log
[error]
[alert]



=== TEST 8: the 503 is a plain client request (no lua), served by nginx's error page
--- request
GET /p
--- error_code: 503
--- response_body_like: 503 Service Temporarily Unavailable
--- no_error_log
[error]
[alert]



=== TEST 9: without ingress_lb_route an unknown backend fails in the upstream (502) with a warning
--- config
    location = /unrouted {
        set $proxy_upstream_name "no-such-backend";
        proxy_pass http://upstream_balancer/;
    }
    location = /t {
        content_by_lua_block {
            ngx.say("post: ", post({ ["default-svc-80"] = { "a" } }))
            ngx.say(count("/unrouted", 1))
        }
    }
--- request
GET /t
--- response_body
post: 201
502=1
--- error_log
ingress_lb: no endpoint for backend "no-such-backend": unknown backend
--- no_error_log
[alert]



=== TEST 10: ingress_lb $variable and ingress_lb_route $variable read another variable
--- http_config
    upstream by_var {
        server 0.0.0.1;
        ingress_lb $backend_name;
    }
--- config
    location = /v {
        set $backend_name "svc-b";
        ingress_lb_route $backend_name;
        proxy_pass http://by_var/;
    }
    location = /t {
        content_by_lua_block {
            ngx.say("post: ", post({ ["svc-b"] = { "b" }, ["default-svc-80"] = { "a" } }))
            ngx.say(count("/v", 3))
        }
    }
--- request
GET /t
--- response_body
post: 201
200:b=3
--- no_error_log
[error]
[alert]



=== TEST 11: works with the keepalive module wrapping it, and keeps spreading evenly
--- http_config
    upstream ka_balancer {
        server 0.0.0.1;
        ingress_lb;
        keepalive 8;
    }
--- config
    location = /ka {
        set $proxy_upstream_name "default-svc-80";
        ingress_lb_route on;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_pass http://ka_balancer/;
    }
    location = /t {
        content_by_lua_block {
            ngx.say("post: ", post({ ["default-svc-80"] = { "a", "b", "c" } }))
            ngx.say(count("/ka", 12))
        }
    }
--- request
GET /t
--- response_body
post: 201
200:a=4 200:b=4 200:c=4
--- no_error_log
[error]
[alert]



=== TEST 12: $upstream_addr lists every try: the dead endpoint, then the live one
--- config
    location = /t {
        content_by_lua_block {
            ngx.say("post: ", post({ ["default-svc-80"] = { "dead", "b" } }))
            local names = {}
            for k, v in pairs(ports) do names["127.0.0.1:" .. v] = k end
            local seen, list = {}, {}
            for _ = 1, 2 do
                local res = ngx.location.capture("/p-addr-front")
                local tries = (res.header["X-Upstream-Addr"] or ""):gsub("[%d.]+:%d+", names)
                if not seen[tries] then seen[tries] = true; list[#list + 1] = tries end
            end
            table.sort(list)
            ngx.say(table.concat(list, " | "))
        }
    }
    # add_header only applies to main requests: go through a real connection
    location = /p-addr-front {
        proxy_pass http://127.0.0.1:$TEST_NGINX_SERVER_PORT/p-addr;
    }
    location = /p-addr {
        set $proxy_upstream_name "default-svc-80";
        ingress_lb_route on;
        add_header X-Upstream-Addr $upstream_addr always;
        proxy_pass http://upstream_balancer/;
    }
--- request
GET /t
--- response_body_like chomp
^post: 201\n(b \| )?dead, b\n$
--- no_error_log
[alert]
