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

=== TEST 1: requests are spread evenly over three endpoints
--- config
    location = /t {
        content_by_lua_block {
            ngx.say("post: ", T.post_raw(T.doc(T.full_backend("default-web-80",
                { T.ep("a"), T.ep("b"), T.ep("c") }))))
            local counts, _, repeated = T.stats(30, "default-web-80")
            ngx.say(counts)
            ngx.say("peers tried twice: ", repeated)
        }
    }
--- response_body
post: 201 []
a=10 b=10 c=10
peers tried twice: 0
--- no_error_log
[error]
[alert]
[warn]



=== TEST 2: unknown backend: 503 from rewrite, before and after a configuration
--- config
    location = /t {
        content_by_lua_block {
            ngx.say("before: ", T.count(2, "default-web-80"))
            ngx.say("post: ", T.post_raw(T.doc(T.full_backend("default-web-80", { T.ep("a") }))))
            ngx.say("unknown: ", T.count(2, "default-other-80"))
            ngx.say("no name: ", T.count(1, ""))
            ngx.say("known: ", T.count(2, "default-web-80"))
        }
    }
--- response_body
before: status503=2
post: 201 []
unknown: status503=2
no name: status503=1
known: a=2
--- no_error_log
[error]
[alert]



=== TEST 3: a backend without endpoints answers 503, like stock
--- config
    location = /t {
        content_by_lua_block {
            ngx.say("post: ", T.post_raw(T.doc(
                T.full_backend("default-empty-80", {}),
                '{"name":"default-noendpoints-80","port":80}',
                T.full_backend("default-web-80", { T.ep("b") }))))
            ngx.say("empty: ", T.count(2, "default-empty-80"))
            ngx.say("missing: ", T.count(2, "default-noendpoints-80"))
            ngx.say("web: ", T.count(2, "default-web-80"))
        }
    }
--- response_body
post: 201 []
empty: status503=2
missing: status503=2
web: b=2
--- no_error_log
[error]
[alert]



=== TEST 4: the endpoint set changes without a reload
--- config
    location = /t {
        content_by_lua_block {
            local name = "default-web-80"
            ngx.say(T.post_raw(T.doc(T.full_backend(name, { T.ep("a"), T.ep("b"), T.ep("c") }))))
            ngx.say(T.count(6, name))
            ngx.say(T.post_raw(T.doc(T.full_backend(name, { T.ep("c") }))))
            ngx.say(T.count(4, name))
            ngx.say(T.post_raw(T.doc(T.full_backend(name, { T.ep("a"), T.ep("b") }))))
            ngx.say(T.count(4, name))
            ngx.say("generation counter: ", configuration.get_backends_generation())
        }
    }
--- response_body
201 []
a=2 b=2 c=2
201 []
c=4
201 []
a=2 b=2
generation counter: 3
--- no_error_log
[error]
[alert]



=== TEST 5: several backends side by side
--- config
    location = /t {
        content_by_lua_block {
            ngx.say(T.post_raw(T.doc(
                T.full_backend("default-one-80", { T.ep("a") }),
                T.full_backend("default-two-80", { T.ep("b"), T.ep("c") }))))
            ngx.say("one: ", T.count(3, "default-one-80"))
            ngx.say("two: ", T.count(4, "default-two-80"))
        }
    }
--- response_body
201 []
one: a=3
two: b=2 c=2
--- no_error_log
[error]
[alert]



=== TEST 6: a dead endpoint is skipped on retry and every request succeeds
--- config
    location = /t {
        content_by_lua_block {
            local name = "default-web-80"
            ngx.say(T.post_raw(T.doc(T.full_backend(name,
                { T.ep("dead"), T.ep("a"), T.ep("dead2") }))))
            local counts, _, repeated = T.stats(12, name)
            ngx.say(counts)
            ngx.say("peers tried twice: ", repeated)
        }
    }
--- response_body
201 []
a=12
peers tried twice: 0
--- error_log
Connection refused) while connecting to upstream
--- no_error_log
[alert]
[crit]
no peer was returned



=== TEST 7: a request whose peers all fail gets 502 after proxy_next_upstream_tries
--- config
    location = /t {
        content_by_lua_block {
            local name = "default-web-80"
            ngx.say(T.post_raw(T.doc(T.full_backend(name, { T.ep("dead"), T.ep("dead2") }))))
            local counts, _, repeated = T.stats(3, name)
            ngx.say(counts)
            ngx.say("peers tried twice: ", repeated)
        }
    }
--- response_body
201 []
status502=3
peers tried twice: 3
--- error_log
Connection refused) while connecting to upstream
--- no_error_log
[alert]
[crit]



=== TEST 8: IPv6 endpoints are bracketed for nginx
--- http_config
    server { listen [::1]:$TEST_NGINX_RAND_PORT_7; return 200 "v6\n"; }
--- config
    location = /t {
        content_by_lua_block {
            ngx.say(T.post_raw(T.doc(T.full_backend("default-v6-80",
                { { address = "::1", port = $TEST_NGINX_RAND_PORT_7 } }))))
            local status, body, hdrs = T.request_raw("GET", "/", nil, { ["X-Backend"] = "default-v6-80" })
            ngx.say(status, " ", body, hdrs["x-upstream-addr"] == "[::1]:$TEST_NGINX_RAND_PORT_7")
        }
    }
--- response_body
201 []
200 v6
true
--- no_error_log
[error]
[alert]



=== TEST 9: pick contexts are reused: steady-state requests allocate none
--- config
    location = /t {
        content_by_lua_block {
            ngx.say(T.post_raw(T.doc(T.full_backend("default-web-80", { T.ep("a"), T.ep("b") }))))
            ngx.say(T.state())
            ngx.say(T.count(20, "default-web-80"))
            ngx.say(T.state())
            ngx.say(T.count(20, "default-web-80"))
            ngx.say(T.state())
        }
    }
--- response_body
201 []
generation=2 free_ctx=0 created_ctx=0
a=10 b=10
generation=2 free_ctx=1 created_ctx=1
a=10 b=10
generation=2 free_ctx=1 created_ctx=1
--- no_error_log
[error]
[alert]



=== TEST 10: retries reuse the request's context (one per request, back in the pool after it)
--- config
    location = /t {
        content_by_lua_block {
            ngx.say(T.post_raw(T.doc(T.full_backend("default-web-80",
                { T.ep("dead"), T.ep("b"), T.ep("dead2") }))))
            ngx.say(T.count(9, "default-web-80"))
            ngx.say(T.state())
        }
    }
--- response_body
201 []
b=9
generation=2 free_ctx=1 created_ctx=1
--- no_error_log
[alert]
[crit]



=== TEST 11: like stock, a peer on the controller's local status port is refused
--- http_config
    # its own upstream, so that the placeholder nginx falls back to is on loopback
    upstream self_check {
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_4; # nothing listens
        balancer_by_lua_block {
            balancer.balance()
        }
    }
--- config
    location = /self {
        set $proxy_upstream_name "default-self-80";
        proxy_next_upstream_tries 1;
        proxy_pass http://self_check;
    }
    location = /t {
        content_by_lua_block {
            ngx.say(T.post_raw(T.doc(T.full_backend("default-self-80",
                { { address = "127.0.0.1", port = 10246 } }))))
            ngx.say(ngx.location.capture("/self").status)
        }
    }
--- response_body
201 []
502
--- error_log
attempted to proxy to self, backend: default-self-80, peer: 127.0.0.1:10246
--- no_error_log
127.0.0.1:10246/
[alert]
