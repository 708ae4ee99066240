# Lua front end (lua/balancer.lua, lua/configuration.lua, lua/ingress_lb/core.lua)
# against the real core library, in nginx with lua-nginx-module.
#
#   PERL5OPT='-It/compat -MIngressLbFallback' prove t/lua-*.t
#
# Environment (defaults in t/IngressLbTest.pm when unset): TEST_NGINX_BINARY,
# TEST_NGINX_LOAD_MODULES, TEST_NGINX_ILB_LUA_DIR (absolute path of lua/),
# TEST_NGINX_ILB_LIB (absolute path of libingress_lb.so), TEST_NGINX_ILB_TEST_LIB
# (absolute path of t/lib/, the test helpers).

use lib '.';
use t::IngressLbTest 'lua';
use Test::Nginx::Socket 'no_plan';

# Shared by every block (t/IngressLbTest.pm): the shared dicts, init_by_lua (with
# the test helpers T of t/lib/ilb_test.lua)/init_worker_by_lua, the
# upstream_balancer upstream, three endpoints ("a", "b", "c") and the ingress
# server (proxy location and /configuration, whose small client_body_buffer_size
# makes larger documents go through a temporary file), wired like ingress-nginx's
# nginx.tmpl. The blocks' own http_config is appended.
ilb_setup(http_config => lua_http_config(endpoints => [qw(a b c)], config_body_buffer => '8k'),
          request => 'GET /t', timeout => 10);

run_tests();

__DATA__

=== TEST 1: GET /configuration/backends returns the document as posted
--- config
    location = /t {
        content_by_lua_block {
            local doc = T.doc(T.full_backend("default-web-80", { T.ep("a"), T.ep("b") }))
            ngx.say("post: ", T.post_raw(doc))
            local status, body = T.request_raw("GET", "/configuration/backends")
            ngx.say("get: ", status, " ", body == doc)
            ngx.say("generation counter: ", configuration.get_backends_generation())
            ngx.say("timestamp set: ", configuration.get_raw_backends_last_synced_at() > 1)
        }
    }
--- response_body
post: 201 []
get: 200 true
generation counter: 1
timestamp set: true
--- no_error_log
[error]
[alert]
[warn]



=== TEST 2: malformed JSON: 400 with the core's message, nothing stored, old configuration serves
--- config
    location = /t {
        content_by_lua_block {
            local name = "default-web-80"
            local doc = T.doc(T.full_backend(name, { T.ep("a") }))
            ngx.say("post: ", T.post_raw(doc))
            local result = T.post_raw('[{"name":"default-web-80","endpoints":[')
            ngx.say(result:match("^400 %[invalid JSON: .+%]$") and "bad: 400 invalid JSON"
                    or ("bad: unexpected " .. result))
            local _, stored = T.request_raw("GET", "/configuration/backends")
            ngx.say("stored unchanged: ", stored == doc)
            ngx.say("generation counter: ", configuration.get_backends_generation())
            ngx.sleep(0.6)  -- more than one sync interval
            ngx.say("serving: ", T.count(3, name))
        }
    }
--- response_body
post: 201 []
bad: 400 invalid JSON
stored unchanged: true
generation counter: 1
serving: a=3
--- error_log
dynamic-configuration: backends rejected: invalid JSON
--- no_error_log
[error]
[alert]



=== TEST 3: a wrongly typed field: 400 naming the backend and the field
--- config
    location = /t {
        content_by_lua_block {
            local name = "default-web-80"
            ngx.say("post: ", T.post_raw(T.doc(T.full_backend(name, { T.ep("a") }))))
            local docs = {
                port = T.doc(T.full_backend(name, { { address = "127.0.0.1", port = "http" } })),
                address = T.doc(T.full_backend(name, { { address = "not-an-ip", port = 80 } })),
                endpoints = '[{"name":"default-web-80","endpoints":"127.0.0.1:80"}]',
                name = '[{"name":42,"endpoints":[]}]',
                toplevel = '{"name":"default-web-80"}',
            }
            for _, field in ipairs({ "port", "address", "endpoints", "name", "toplevel" }) do
                ngx.say(field, ": ", T.post_raw(docs[field]))
            end
            ngx.say("generation counter: ", configuration.get_backends_generation())
            ngx.say("serving: ", T.count(2, name))
        }
    }
--- response_body_like
^post: 201 \[\]
port: 400 \[backend "default-web-80": field `endpoints\[0\]\.port`: [^\]]+\]
address: 400 \[backend "default-web-80": field `endpoints\[0\]\.address`: [^\]]+\]
endpoints: 400 \[backend [^\n]*endpoints[^\n]*\]
name: 400 \[backend [^\n]*name[^\n]*\]
toplevel: 400 \[[^\n]+\]
generation counter: 1
serving: a=2
--- no_error_log
[error]
[alert]



=== TEST 4: an empty body is refused with the core's reason (stock: 400 without one)
--- config
    location = /t {
        content_by_lua_block {
            ngx.say(T.post_raw(""))
            ngx.say("stored: ", tostring(configuration.get_backends_data()))
        }
    }
--- response_body
400 [configuration is empty: expected a JSON array of backends]
stored: nil
--- error_log
dynamic-configuration: backends rejected: configuration is empty



=== TEST 5: methods and paths answered as stock answers them
--- config
    location = /t {
        content_by_lua_block {
            local function show(method, path)
                local status, body = T.request_raw(method, path, method == "PUT" and "[]" or nil)
                ngx.say(method, " ", path, ": ", status, " [", body, "]")
            end
            show("PUT", "/configuration/backends")
            show("DELETE", "/configuration/backends")
            show("GET", "/configuration/nothing")
            show("GET", "/configuration/servers")
            show("GET", "/configuration/certs")
        }
    }
--- response_body
PUT /configuration/backends: 400 [Only POST and GET requests are allowed!]
DELETE /configuration/backends: 400 [Only POST and GET requests are allowed!]
GET /configuration/nothing: 404 [Not found!]
GET /configuration/servers: 400 [Only POST requests are allowed!]
GET /configuration/certs: 400 [Hostname must be specified.]
--- no_error_log
[error]
[alert]



=== TEST 6: /configuration/general is stored and returned as is
--- config
    location = /t {
        content_by_lua_block {
            local general = '{"controllerPodsCount":2}'
            local status, body = T.request_raw("POST", "/configuration/general", general)
            ngx.say("post: ", status, " [", body, "]")
            status, body = T.request_raw("GET", "/configuration/general")
            ngx.say("get: ", status, " [", body, "]")
        }
    }
--- response_body
post: 201 []
get: 200 [{"controllerPodsCount":2}]
--- no_error_log
[error]
[alert]



=== TEST 7: /configuration/servers stores certificates, /configuration/certs returns them
--- config
    location = /t {
        content_by_lua_block {
            local f = assert(io.open("$TEST_NGINX_ILB_LUA_DIR/../tests/data/certs/exact.pem"))
            local pem = f:read("*a")
            f:close()
            local servers = require("cjson").encode({
                servers = { ["example.com"] = "uid-1", ["old.example.com"] = "-1" },
                certificates = { ["uid-1"] = pem },
            })
            ngx.shared.certificate_servers:set("old.example.com", "uid-0")
            ngx.shared.ocsp_response_cache:set("uid-1", "stale")
            ngx.shared.certificate_data:set("uid-1", "PEM-0")
            local status, body = T.request_raw("POST", "/configuration/servers", servers)
            ngx.say("post: ", status, " [", body, "]")
            status, body = T.request_raw("GET", "/configuration/certs?hostname=example.com")
            ngx.say("example.com: ", status, " [", body == pem and "exact.pem" or body, "]")
            status, body = T.request_raw("GET", "/configuration/certs?hostname=old.example.com")
            ngx.say("old.example.com: ", status, " [", body, "]")
            ngx.say("ocsp cache of the renewed certificate: ",
                    tostring(ngx.shared.ocsp_response_cache:get("uid-1")))
            status, body = T.request_raw("POST", "/configuration/servers", "{not json")
            ngx.say("bad: ", status, " [", body, "]")
        }
    }
--- response_body_like
^post: 201 \[\]
example.com: 200 \[exact.pem\]
old.example.com: 404 \[No key associated with this hostname.\]
ocsp cache of the renewed certificate: nil
bad: 400 \[invalid servers JSON: [^\]]+\]
--- error_log
dynamic-configuration: servers rejected: invalid servers JSON
--- no_error_log
[error]
[alert]



=== TEST 8: a document larger than client_body_buffer_size (temporary file) is accepted
--- config
    location = /t {
        content_by_lua_block {
            local backends = {}
            for i = 1, 200 do
                backends[i] = T.full_backend("default-svc" .. i .. "-80", { T.ep("a"), T.ep("b") })
            end
            backends[201] = T.full_backend("default-web-80", { T.ep("c") })
            local doc = T.doc(unpack(backends))
            ngx.say("size > 64k: ", #doc > 65536)
            ngx.say("post: ", T.post_raw(doc))
            local _, stored = T.request_raw("GET", "/configuration/backends")
            ngx.say("stored: ", stored == doc)
            ngx.say("web: ", T.count(2, "default-web-80"))
            ngx.say("svc200: ", T.count(2, "default-svc200-80"))
        }
    }
--- response_body
size > 64k: true
post: 201 []
stored: true
web: c=2
svc200: a=1 b=1
--- error_log
a client request body is buffered to a temporary file
--- no_error_log
[error]
[alert]



=== TEST 9: stock configuration.lua (no counter): two updates within one second are both applied
--- config
    location = /t {
        content_by_lua_block {
            local dict = ngx.shared.configuration_data
            local name = "default-web-80"
            -- let the start-up re-read window pass
            ngx.sleep(2.2)

            -- what stock's handle_backends() stores for one POST
            ngx.update_time()
            local ts = ngx.time()
            dict:set("backends", T.doc(T.full_backend(name, { T.ep("a") })))
            dict:set("raw_backends_last_synced_at", ts)
            ngx.sleep(0.5)
            ngx.say("first: ", T.count(3, name))

            -- a second POST in the same second: same timestamp
            dict:set("backends", T.doc(T.full_backend(name, { T.ep("b") })))
            dict:set("raw_backends_last_synced_at", ts)
            ngx.sleep(1.0)
            ngx.say("second: ", T.count(3, name))

            -- long after: a later timestamp is seen as well
            ngx.sleep(1.5)
            dict:set("backends", T.doc(T.full_backend(name, { T.ep("c") })))
            dict:set("raw_backends_last_synced_at", ts + 1)
            ngx.sleep(0.5)
            ngx.say("third: ", T.count(3, name))
            ngx.say("counter: ", tostring(dict:get("backends_generation")))
        }
    }
--- response_body
first: a=3
second: b=3
third: c=3
counter: nil
--- no_error_log
[error]
[alert]



=== TEST 10: the key backends_last_synced_at is watched too
--- config
    location = /t {
        content_by_lua_block {
            local dict = ngx.shared.configuration_data
            local name = "default-web-80"
            ngx.sleep(2.2)
            ngx.update_time()
            local ts = ngx.time()
            dict:set("backends", T.doc(T.full_backend(name, { T.ep("a") })))
            dict:set("backends_last_synced_at", ts)
            ngx.sleep(0.5)
            ngx.say("first: ", T.count(2, name))
            dict:set("backends", T.doc(T.full_backend(name, { T.ep("c") })))
            dict:set("backends_last_synced_at", ts)
            ngx.sleep(1.0)
            ngx.say("second: ", T.count(2, name))
        }
    }
--- response_body
first: a=2
second: c=2
--- no_error_log
[error]
[alert]



=== TEST 11: an invalid document found in the shared dict is logged once; the old one serves
--- config
    location = /t {
        content_by_lua_block {
            local dict = ngx.shared.configuration_data
            local name = "default-web-80"
            ngx.say("post: ", T.post_raw(T.doc(T.full_backend(name, { T.ep("a") }))))
            -- written behind configuration.lua's back
            dict:set("backends", '[{"name":"default-web-80","endpoints":[{"address":"x"}]}]')
            dict:incr("backends_generation", 1)
            ngx.sleep(1.0)
            ngx.say("serving: ", T.count(3, name))
        }
    }
--- response_body
post: 201 []
serving: a=3
--- grep_error_log eval
qr/could not apply backends data, the previous configuration stays in force: backend "default-web-80": field `endpoints\[0\]\.address`/
--- grep_error_log_out
could not apply backends data, the previous configuration stays in force: backend "default-web-80": field `endpoints[0].address`
--- no_error_log
[alert]



=== TEST 12: without the counter, an invalid document is logged once over the re-read window
--- config
    location = /t {
        content_by_lua_block {
            local dict = ngx.shared.configuration_data
            local name = "default-web-80"
            ngx.sleep(2.2)
            dict:set("backends", T.doc(T.full_backend(name, { T.ep("b") })))
            dict:set("raw_backends_last_synced_at", 1000)
            ngx.sleep(0.5)
            ngx.say("first: ", T.count(2, name))
            dict:set("backends", "[{]")
            dict:set("raw_backends_last_synced_at", 1001)
            ngx.sleep(2.5)
            ngx.say("still: ", T.count(2, name))
        }
    }
--- response_body
first: b=2
still: b=2
--- grep_error_log eval
qr/could not apply backends data[^,]*/
--- grep_error_log_out
could not apply backends data
--- no_error_log
[alert]



=== TEST 13: two POSTs in a row are both counted and the last one serves
--- config
    location = /t {
        content_by_lua_block {
            local name = "default-web-80"
            ngx.say(T.post_raw(T.doc(T.full_backend(name, { T.ep("a") }))))
            ngx.say(T.post_raw(T.doc(T.full_backend(name, { T.ep("b") }))))
            ngx.say("counter: ", configuration.get_backends_generation())
            ngx.say(T.count(2, name))
            ngx.sleep(0.6)
            ngx.say(T.count(2, name))
        }
    }
--- response_body
201 []
201 []
counter: 2
b=2
b=2
--- no_error_log
[error]
[alert]



=== TEST 14: a large change compiles off the event loop: the worker runs Lua while the POST waits, then serves it
--- config
    location = /t {
        content_by_lua_block {
            local core = require("ingress_lb.core")
            local name = "default-web-80"
            ngx.say(T.post_raw(T.doc(T.full_backend(name, { T.ep("a") }))))
            -- about 1.8 MB, far over core.INLINE_APPLY_BYTES
            local parts = T.many_backends(name, "b", 3000)
            local big = "[" .. table.concat(parts, ",") .. "]"
            local posted
            local post = ngx.thread.spawn(function()
                posted = T.post_raw(big)
            end)
            -- this worker keeps running Lua while the POST handler (same worker)
            -- waits for the compilation: collect() sees it running. Were the
            -- document built on the event loop, nothing would run meanwhile.
            local saw_running = false
            while not posted do
                if core.collect() == "running" then
                    saw_running = true
                end
                ngx.sleep(0.001)
            end
            ngx.thread.wait(post)
            ngx.say("post: ", posted)
            ngx.say("saw the compilation running: ", saw_running)
            ngx.say("in force: ", T.count(2, name), " ", T.count(1, "default-svc-3000-80"))
        }
    }
--- response_body
201 []
post: 201 []
saw the compilation running: true
in force: b=2 c=1
--- no_error_log
[error]
[alert]



=== TEST 15: a large document rejected by the compilation: 400 naming the fault, the old configuration serves
--- config
    location = /t {
        content_by_lua_block {
            local name = "default-web-80"
            ngx.say(T.post_raw(T.doc(T.full_backend(name, { T.ep("a") }))))
            local bad = T.post_large_with_a_bad_address(name)
            ngx.say(bad)
            ngx.say("generation counter: ", configuration.get_backends_generation())
            ngx.say("serving: ", T.count(2, name), " ", T.count(1, "default-svc-1-80"))
        }
    }
--- response_body
201 []
bad: 400 naming backend and address
generation counter: 1
serving: a=2 status503=1
--- error_log
dynamic-configuration: backends rejected
--- no_error_log
[alert]



=== TEST 16: core.apply_or_start() and core.collect(): started, busy, applied; small changes at once
--- config
    location = /t {
        content_by_lua_block {
            local core = require("ingress_lb.core")
            local doc_a = T.doc(T.backend("x", { T.ep("a") }))
            local doc_b = T.doc(T.backend("x", { T.ep("b") }))
            ngx.say("inline: ", core.apply_or_start(doc_a))
            local state, n = core.apply_or_start(doc_b, 0)
            ngx.say("budget 0: ", state, " ", type(n))
            ngx.say("again: ", core.apply_or_start(doc_a, 0))
            local polls = 0
            repeat
                ngx.sleep(0.001)
                polls = polls + 1
                state = core.collect(n)
            until state ~= "running" or polls > 10000
            -- the outcome is kept for whoever asks about n (or the last one)
            ngx.say("collected: ", state, "; then: ", (core.collect(n)), " ", (core.collect()))
            ngx.say("bad: ", select(2, core.apply_or_start("[{", 0)) ~= nil)
            ngx.say((select(2, core.apply_or_start(42))))
        }
    }
--- response_body
inline: applied
budget 0: started number
again: busy
collected: applied; then: applied applied
bad: true
backends document must be a string (or a pointer and a length), got number
--- no_error_log
[error]
[alert]



=== TEST 17: reposting the stored document: 201, nothing stored again (the counter stays), the timestamp moves
--- config
    location = /t {
        content_by_lua_block {
            local name = "default-web-80"
            local doc = T.doc(T.full_backend(name, { T.ep("a") }))
            ngx.say(T.post_raw(doc))
            ngx.shared.configuration_data:set("raw_backends_last_synced_at", 1)
            ngx.say(T.post_raw(doc), " counter: ", configuration.get_backends_generation(),
                    " timestamp moved: ", configuration.get_raw_backends_last_synced_at() > 1)
            ngx.say(T.post_raw(T.doc(T.full_backend(name, { T.ep("b") }))),
                    " counter: ", configuration.get_backends_generation())
            ngx.say("serving: ", T.count(2, name))
        }
    }
--- response_body
201 []
201 [] counter: 1 timestamp moved: true
201 [] counter: 2
serving: b=2
--- no_error_log
[error]
[alert]



=== TEST 18: a POST while this worker compiles another large document waits for it, then applies (201)
--- config
    location = /t {
        content_by_lua_block {
            local core = require("ingress_lb.core")
            local name = "default-web-80"
            ngx.say(T.post_raw(T.doc(T.full_backend(name, { T.ep("a") }))))
            -- what the sync timer does with a large document from the shared dict
            -- 10 000 backends: a compilation of well over 40 ms (20 tries of 2 ms)
            local big = "[" .. table.concat(T.many_backends(name, "c", 10000), ",") .. "]"
            local state, n = core.apply_or_start(big, 0)
            ngx.say("timer's compilation: ", state)
            -- the timer sleeps until its compilation is done and collects it
            local timer = ngx.thread.spawn(function()
                repeat ngx.sleep(0.002) until core.collect(n) ~= "running"
            end)
            -- a POST to the same worker meanwhile: valid, so 201 once the other is done
            ngx.say("post: ", T.post_raw(T.doc(T.full_backend(name, { T.ep("b") }))))
            ngx.thread.wait(timer)
            ngx.say("serving: ", T.count(2, name))
        }
    }
--- response_body
201 []
timer's compilation: started
post: 201 []
serving: b=2
--- no_error_log
[error]
[alert]
