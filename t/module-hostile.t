# Hostile configuration input through the nginx module (issue 6), the same
# documents and checks as t/lua-hostile.t: every malformed, truncated, empty,
# wrongly typed, oversized or deeply nested document POSTed to
# ingress_lb_configuration is answered 400 with a message naming what is wrong
# (413 above client_max_body_size, above the zone's capacity, or above the core's
# 48 MiB), the configuration in force keeps serving, and no worker dies. The Lua
# module only drives the tests (T of t/lib/ilb_test.lua); every decision is the
# module's.
#
#   HARNESS_PERL_SWITCHES='-It/compat -MIngressLbFallback' prove t/module-hostile.t
#
# Environment: see t/IngressLbTest.pm.

use lib '.';
use t::IngressLbTest 'module';
use Test::Nginx::Socket 'no_plan';

master_on();
workers(2);

# Shared by every block: the module front end (t/IngressLbTest.pm) with an 80m
# backends zone (20 000 backends and a 64 MiB document fit: the core decides), and
#  - "big": a second controller endpoint whose client_max_body_size (80m) lets a
#    64 MiB document through;
#  - "many": an endpoint listening on every address of its port, so that
#    127.1.x.y:port are 10 000 distinct endpoints that all answer;
#  - the log format ilb_request_body ($request_body as received).
# A block named "... [zone <size>] ..." gets that ingress_lb_zone instead.
my $http_config = module_http_config(
    ports => { big => 10, many => 11 },
    # connections spread over both workers (T.await_served)
    reuseport => 1,
    init => "        T.CERTS = \"\$TEST_NGINX_ILB_LUA_DIR/../tests/data/certs\"\n",
) . <<'_EOC_';

    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_10;
        location /configuration {
            client_max_body_size 80m;
            client_body_buffer_size 1m;
            ingress_lb_configuration;
        }
    }

    server {
        listen $TEST_NGINX_RAND_PORT_11;
        return 200 "many\n";
    }

    log_format ilb_request_body escape=none '$request_body';
_EOC_
$http_config =~ s/ingress_lb_zone \S+;/ingress_lb_zone 80m;/ or die "no ingress_lb_zone";

ilb_setup();
add_block_preprocessor(sub {
    my $block = shift;
    my $http = $http_config;
    if ($block->name =~ /\[zone (\w+)\]/) {
        my $size = $1;
        $http =~ s/ingress_lb_zone \S+;/ingress_lb_zone $size;/;
    }
    ilb_preprocess($block, http_config => $http, request => 'GET /t', timeout => 60);
});

run_tests();

__DATA__

=== TEST 1: hostile backends documents are refused with 400 naming what is wrong; the configuration in force serves
--- config
    location = /t {
        content_by_lua_block {
            local name = "default-web-80"
            local doc = T.doc(T.full_backend(name, { T.ep("a") }))
            ngx.say("post: ", T.post_raw(doc))
            local cases = T.hostile_backends()
            ngx.log(ngx.INFO, "hostile backends documents: ", #cases)
            ngx.say(T.refuse_all(cases))
            ngx.say("empty body: ", T.post_raw(""))
            local _, stored = T.request_raw("GET", "/configuration/backends")
            ngx.say("stored unchanged: ", stored == doc)

            ngx.say("serving: ", T.count(6, name))
        }
    }
--- response_body_like
^post: 201 \[\]
all \d+ refused
empty body: 400 \[configuration is empty: expected a JSON array of backends\]
stored unchanged: true
serving: a=6
--- error_log
ingress_lb: rejected backends configuration: backend "victim": field `trafficShapingPolicy`: invalid type: sequence, expected a JSON object
--- no_error_log
exited on signal
[alert]
[crit]
[emerg]



=== TEST 2: hostile servers documents are refused with 400; the certificates in force stay
--- config
    location = /t {
        content_by_lua_block {
            local good = T.servers_doc({ ["exact.example.com"] = "e" }, { e = T.cert_pem("exact") })
            local status, body = T.post_to("/configuration/servers", good)
            ngx.say("post: ", status, " [", body, "]")
            local cases = T.hostile_servers()
            ngx.log(ngx.INFO, "hostile servers documents: ", #cases)
            ngx.say(T.refuse_all(cases, "/configuration/servers"))
            status, body = T.post_to("/configuration/servers", "")
            ngx.say("empty body: ", status, " [", body, "]")
            status, body = T.request_raw("GET", "/configuration/certs?hostname=exact.example.com")
            ngx.say("certificate kept: ", status, " ", body == T.cert_pem("exact"))
            ngx.say("backends still refused: ", T.post_raw("[{"):match("^400 %[invalid JSON") ~= nil)
        }
    }
--- response_body_like
^post: 201 \[\]
all \d+ refused
empty body: 400 \[servers configuration is empty: expected a JSON object with "certificates" and "servers"\]
certificate kept: 200 true
backends still refused: true
--- no_error_log
exited on signal
[alert]
[crit]
[emerg]



=== TEST 3: 10 000 endpoints on one backend are accepted and served
--- config
    location = /t {
        content_by_lua_block {
            local eps = {}
            for i = 0, 9999 do
                eps[#eps + 1] = T.ep("many", string.format("127.1.%d.%d", math.floor(i / 250), i % 250 + 1))
            end
            local doc = T.doc(T.backend("many", eps), T.backend("default-web-80", { T.ep("a") }))
            ngx.say("size under 21m: ", #doc < 21 * 1024 * 1024)
            local started = ngx.now()
            ngx.say("post: ", T.post_raw(doc))
            ngx.update_time()
            ngx.log(ngx.INFO, "10 000 endpoints: ", #doc, " bytes, POST answered in ", ngx.now() - started, " s")
            ngx.say("every worker serves it: ", T.await_served({ "many", "default-web-80" }, 2))
            local counts, distinct = T.spread(40, "many")
            ngx.say("served: ", counts)
            ngx.say("spread over many endpoints: ", distinct > 20)
            ngx.say("web: ", T.count(2, "default-web-80"))
        }
    }
--- response_body
size under 21m: true
post: 201 []
every worker serves it: true
served: many=40
spread over many endpoints: true
web: a=2
--- no_error_log
exited on signal
[alert]
[crit]
[emerg]



=== TEST 4: 20 000 backends are accepted and served
--- config
    location = /t {
        content_by_lua_block {
            local backends = {}
            for i = 0, 19999 do
                backends[#backends + 1] = T.full_backend("ns-" .. i .. "-svc-80",
                    { T.ep("many", "127.2." .. math.floor(i / 250) .. "." .. (i % 250 + 1)), T.ep("a") })
            end
            local doc = "[" .. table.concat(backends, ",") .. "]"
            ngx.log(ngx.INFO, "20 000 backends: ", #doc, " bytes")
            ngx.say("size between 12 and 21 MiB: ", #doc > 12 * 1024 * 1024 and #doc < 21 * 1024 * 1024)
            ngx.say("post: ", T.post_raw(doc))
            ngx.say("every worker serves it: ",
                    T.await_served({ "ns-0-svc-80", "ns-9999-svc-80", "ns-19999-svc-80" }, 2))
            for _, i in ipairs({ 0, 9999, 19999 }) do
                -- both endpoints serve (which one answers depends on the worker)
                local counts = T.count(4, "ns-" .. i .. "-svc-80")
                ngx.say("ns-", i, ": ", counts:find("status") and counts or "served")
            end
            local _, stored = T.request_raw("GET", "/configuration/backends")
            ngx.say("stored: ", stored == doc)
        }
    }
--- response_body
size between 12 and 21 MiB: true
post: 201 []
every worker serves it: true
ns-0: served
ns-9999: served
ns-19999: served
stored: true
--- no_error_log
exited on signal
[alert]
[crit]
[emerg]



=== TEST 5: over-large bodies: 413 from nginx above client_max_body_size, the core's 413 above 48 MiB
--- config
    location = /t {
        content_by_lua_block {
            local name = "default-web-80"
            local doc = T.doc(T.full_backend(name, { T.ep("a") }))
            ngx.say("post: ", T.post_raw(doc))
            -- /configuration: client_max_body_size 21m
            local status, body = T.post_to("/configuration/backends", ("["):rep(22 * 1024 * 1024))
            ngx.say("22 MiB: ", status, " ", tostring(body):match("<title>(.-)</title>"))
            -- the "big" endpoint lets 80m through: the core refuses
            local big = "[" .. (" "):rep(64 * 1024 * 1024 - 2) .. "]"
            status, body = T.post_to("/configuration/backends", big, T.PORTS.big)
            ngx.say("64 MiB: ", status, " [", body, "]")
            big = nil
            local over = ("{"):rep(48 * 1024 * 1024 + 1)
            status, body = T.post_to("/configuration/servers", over, T.PORTS.big)
            ngx.say("servers 48 MiB + 1: ", status, " [", body, "]")
            over = nil
            collectgarbage()
            local _, stored = T.request_raw("GET", "/configuration/backends")
            ngx.say("stored unchanged: ", stored == doc)
            ngx.sleep(0.6)
            ngx.say("serving: ", T.count(4, name))
        }
    }
--- response_body
post: 201 []
22 MiB: 413 413 Request Entity Too Large
64 MiB: 413 [configuration is 67108864 bytes, over the limit of 50331648 bytes]
servers 48 MiB + 1: 413 [configuration is 50331649 bytes, over the limit of 50331648 bytes]
stored unchanged: true
serving: a=4
--- error_log
client intended to send too large body: 23068672 bytes
--- no_error_log
exited on signal
[alert]
[crit]
[emerg]



=== TEST 6: [zone 1m] a document larger than the zone: 413 naming the directive; servers zone too
--- http_config
    ingress_lb_servers_zone 1m;
--- config
    location = /t {
        content_by_lua_block {
            local name = "default-web-80"
            local doc = T.doc(T.full_backend(name, { T.ep("a") }))
            ngx.say("post: ", T.post_raw(doc))
            local status, body = T.post_to("/configuration/backends", "[" .. (" "):rep(2 * 1024 * 1024) .. "]")
            ngx.say("2 MiB: ", status, " [", body, "]")
            status, body = T.post_to("/configuration/servers", "{" .. (" "):rep(2 * 1024 * 1024) .. "}")
            ngx.say("servers 2 MiB: ", status, " [", body, "]")
            local _, stored = T.request_raw("GET", "/configuration/backends")
            ngx.say("stored unchanged: ", stored == doc)
            ngx.say("serving: ", T.count(4, name))
        }
    }
--- response_body_like
^post: 201 \[\]
2 MiB: 413 \[configuration is 2097154 bytes, larger than the \d+ bytes the shared zone can hold \(raise ingress_lb_zone\)\]
servers 2 MiB: 413 \[configuration is 2097154 bytes, larger than the \d+ bytes the shared zone can hold \(raise ingress_lb_servers_zone\)\]
stored unchanged: true
serving: a=4
--- no_error_log
exited on signal
[alert]
[crit]
[emerg]



=== TEST 7: a servers document nested deeper than 64 levels, even in a field nobody reads, is refused
--- config
    location = /t {
        content_by_lua_block {
            local deep = '{"certificates":{},"servers":{},"x":' .. ("["):rep(100000) .. ("]"):rep(100000) .. "}"
            local status, body = T.post_to("/configuration/servers", deep)
            ngx.say("deep: ", status, " [", body, "]")
        }
    }
--- response_body
deep: 400 [invalid servers JSON: nested deeper than 64 levels at byte offset 99]
--- no_error_log
exited on signal
[alert]
[crit]
[emerg]



=== TEST 22: a large document rejected by its compilation (off the event loop): 400 naming the fault, the old configuration serves
--- config
    location = /t {
        content_by_lua_block {
            local name = "default-web-80"
            ngx.say(T.post_raw(T.doc(T.full_backend(name, { T.ep("a") }))))
            local bad, parts = T.post_large_with_a_bad_address(name)
            ngx.say(bad)
            -- valid, then the same again (recognised unchanged)
            local good = "[" .. table.concat(parts, ",") .. "]"
            ngx.say("good: ", T.post_raw(good), " again: ", T.post_raw(good))
            ngx.say("every worker serves it: ",
                    T.await_served({ name, "default-svc-1-80", "default-svc-3000-80" }, 2))
            ngx.say("serving: ", T.count(4, name))
        }
    }
--- response_body
201 []
bad: 400 naming backend and address
good: 201 [] again: 201 []
every worker serves it: true
serving: b=4
--- error_log
rejected backends configuration
--- no_error_log
[alert]
[crit]



=== TEST 23: a large document arriving in pieces (part with the header, the rest in five reads) is stored and logged byte for byte
--- config
    location /logged-configuration {
        client_max_body_size 21m;
        client_body_buffer_size 21m;
        access_log logs/request_body.log ilb_request_body;
        ingress_lb_configuration;
    }
    location = /t {
        content_by_lua_block {
            local name = "default-web-80"
            local parts = T.many_backends(name, "b", 2000)
            local doc = "[" .. table.concat(parts, ",") .. "]"
            -- the module borrows nginx's body buffer, after moving the part that came
            -- with the header in front of the rest
            ngx.say("posted: ", T.post_in_pieces("/logged-configuration/backends", doc, 700, 5, 0.05,
                                                 tonumber(ngx.var.server_port)))
            local status, stored = T.request_raw("GET", "/configuration/backends")
            ngx.say("stored as sent: ", status == 200 and stored == doc)
            local f = assert(io.open(ngx.config.prefix() .. "logs/request_body.log"))
            local logged = f:read("*a")
            f:close()
            ngx.say("$request_body as sent: ", logged == doc .. "\n")
            ngx.say("every worker serves it: ",
                    T.await_served({ name, "default-svc-1-80", "default-svc-2000-80" }, 2))
        }
    }
--- response_body
posted: 201 []
stored as sent: true
$request_body as sent: true
every worker serves it: true
--- no_error_log
[error]
[alert]
[crit]
