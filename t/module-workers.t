# Several worker processes share one configuration through the module's zone:
# a POST received by one worker is served by every worker at once (well within
# 1 s), and workers started later (reload, respawn) serve it too.
#
# A "front" server listens with reuseport, so the kernel spreads new
# connections over both workers; the lua module is only the test driver
# (subrequests in a loop, counting answers and the worker pids that served them).
#
#   TEST_NGINX_LOAD_MODULES="/usr/lib/nginx/modules/ndk_http_module.so \
#       /usr/lib/nginx/modules/ngx_http_lua_module.so \
#       $PWD/target/release/ngx_http_ingress_lb_module.so" \
#     prove -It/compat -MIngressLbFallback t/module-workers.t

use lib '.';
use t::IngressLbTest 'module';
use Test::Nginx::Socket;

master_on();
workers(2);
check_accum_error_log();

# the zone, the upstream and two endpoints (t/IngressLbTest.pm), the ingress
# server and the driver
my $http_config = module_base_http_config(endpoints => [qw(a b)]) . <<'_EOC_';
    # The ingress server: reuseport gives each worker its own socket.
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_3 reuseport;
        location / {
            set $proxy_upstream_name "svc";
            ingress_lb_route on;
            add_header X-Worker $pid always;
            proxy_pass http://upstream_balancer/;
        }
    }

    init_by_lua_block {
        ports = { a = "$TEST_NGINX_RAND_PORT_1", b = "$TEST_NGINX_RAND_PORT_2" }
        function post(ep)
            local doc = '[{"name":"svc","endpoints":[{"address":"127.0.0.1","port":"' .. ports[ep] .. '"}]}]'
            return ngx.location.capture("/configuration/backends",
                { method = ngx.HTTP_POST, body = doc }).status
        end
        -- n requests on new connections to the ingress server: answers and workers seen
        function probe(n)
            local seen, keys, pids, npids = {}, {}, {}, 0
            for _ = 1, n do
                local res = ngx.location.capture("/front")
                local k = tostring(res.status)
                if res.status == 200 then k = k .. ":" .. res.body:gsub("\n", "") end
                if not seen[k] then seen[k] = 0; keys[#keys + 1] = k end
                seen[k] = seen[k] + 1
                local pid = res.header["X-Worker"]
                if pid and not pids[pid] then pids[pid] = true; npids = npids + 1 end
            end
            table.sort(keys)
            local out = {}
            for _, k in ipairs(keys) do out[#out + 1] = k .. "=" .. seen[k] end
            return table.concat(out, " ") .. " workers=" .. npids
        end
    }
_EOC_

my $config = <<'_EOC_';
    location /configuration {
        ingress_lb_configuration;
    }
    location = /front {
        proxy_pass http://127.0.0.1:$TEST_NGINX_RAND_PORT_3/;
    }
_EOC_

ilb_setup(http_config => $http_config, config => $config);

run_tests();

Test::More::done_testing();

__DATA__

=== TEST 1: a POST handled by one worker is served by both workers at once (< 1 s)
--- config
    location = /t {
        content_by_lua_block {
            ngx.say("before: ", probe(20))
            ngx.say("post a: ", post("a"))
            ngx.update_time()
            local t0 = ngx.now()
            ngx.say("after a: ", probe(40))
            ngx.say("post b: ", post("b"))
            ngx.say("after b: ", probe(40))
            ngx.update_time()
            ngx.say("within 1s: ", ngx.now() - t0 < 1)
        }
    }
--- request
GET /t
--- response_body
before: 503=20 workers=2
post a: 201
after a: 200:a=40 workers=2
post b: 201
after b: 200:b=40 workers=2
within 1s: true
--- no_error_log
[error]
[alert]



=== TEST 2: GET on any worker returns the document posted to another
--- config
    location = /front-config {
        proxy_pass http://127.0.0.1:$TEST_NGINX_RAND_PORT_4/configuration/backends;
    }
    location = /t {
        content_by_lua_block {
            ngx.say("post b: ", post("b"))
            local seen, n = {}, 0
            for _ = 1, 30 do
                local res = ngx.location.capture("/front-config")
                local pid = res.header["X-Worker"]
                if res.status == 200 and res.body:find('"port":"' .. ports.b .. '"', 1, true) then
                    if pid and not seen[pid] then seen[pid] = true; n = n + 1 end
                else
                    ngx.say("unexpected: ", res.status, " ", res.body)
                end
            end
            ngx.say("workers returning it: ", n)
        }
    }
--- http_config
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_4 reuseport;
        location /configuration {
            add_header X-Worker $pid always;
            ingress_lb_configuration;
        }
    }
--- request
GET /t
--- response_body
post b: 201
workers returning it: 2
--- no_error_log
[error]
[alert]



=== TEST 3: after a reload (HUP) the new workers serve the configuration kept in the zone
--- config
    location = /post-and-reload {
        content_by_lua_block {
            local ffi = require "ffi"
            ffi.cdef[[ int getppid(void); int kill(int pid, int sig); ]]
            ngx.say("post a: ", post("a"))
            ngx.say("hup: ", ffi.C.kill(ffi.C.getppid(), 1))
        }
    }
    location = /probe {
        content_by_lua_block { ngx.say(probe(20)) }
    }
--- request eval
["GET /post-and-reload", "GET /probe", "GET /configuration/backends"]
--- wait: 1
--- response_body_like eval
["^post a: 201\nhup: 0\n\$", "^200:a=20 workers=2\n\$", "^\\[\\{\"name\":\"svc\""]
--- error_code eval
[200, 200, 200]
--- no_error_log
[error]
[alert]



=== TEST 4: a respawned worker serves the configuration kept in the zone
--- config
    location = /post-and-exit {
        content_by_lua_block {
            ngx.say("post b: ", post("b"))
            -- end this worker process after the response; the master respawns one
            ngx.timer.at(0.05, function()
                local ffi = require "ffi"
                ffi.cdef[[ int getpid(void); int kill(int pid, int sig); ]]
                ffi.C.kill(ffi.C.getpid(), 15)
            end)
        }
    }
    location = /probe {
        content_by_lua_block { ngx.say(probe(20)) }
    }
--- request eval
["GET /post-and-exit", "GET /probe"]
--- wait: 1
--- response_body eval
["post b: 201\n", "200:b=20 workers=2\n"]
--- no_error_log
[error]
[alert]



=== TEST 5: a large change: the worker that took the POST serves it at once, the other compiles it off its event loop, serving the configuration in force meanwhile
--- config
    location = /t {
        content_by_lua_block {
            ngx.say("post a: ", post("a"))
            ngx.say("after a: ", probe(20))
            -- svc on b, and 3000 more backends: far over the inline budget (64 KiB)
            local parts = { '{"name":"svc","endpoints":[{"address":"127.0.0.1","port":"'
                            .. ports.b .. '"}]}' }
            for i = 1, 3000 do
                parts[#parts + 1] = string.format('{"name":"svc-%d","endpoints":[{"address":'
                    .. '"10.0.%d.%d","port":"8080"}],"service":{"metadata":{"name":"svc-%d"}}}',
                    i, i % 250, i % 200 + 1, i)
            end
            local res = ngx.location.capture("/configuration/backends",
                { method = ngx.HTTP_POST, body = "[" .. table.concat(parts, ",") .. "]" })
            ngx.say("post large: ", res.status)
            -- this worker took the POST (a subrequest) and applied it; the other one
            -- finds it in the zone at its first request, starts compiling it and
            -- answers that request with the configuration in force
            local first, firsts, n = {}, {}, 0
            for _ = 1, 400 do
                local r = ngx.location.capture("/front")
                local pid = r.header["X-Worker"]
                if pid and not first[pid] then
                    first[pid] = true
                    n = n + 1
                    firsts[n] = r.status .. ":" .. r.body:gsub("\n", "")
                end
                if n == 2 then break end
            end
            table.sort(firsts)
            ngx.say("first answer of each worker: ", table.concat(firsts, " "))
            local result
            for _ = 1, 100 do
                result = probe(20)
                if result == "200:b=20 workers=2" then break end
                ngx.sleep(0.05)
            end
            ngx.say("then: ", result)
        }
    }
--- request
GET /t
--- response_body
post a: 201
after a: 200:a=20 workers=2
post large: 201
first answer of each worker: 200:a 200:b
then: 200:b=20 workers=2
--- no_error_log
[error]
[alert]
