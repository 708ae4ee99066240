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

master_on();
workers(2);

# Shared by every block (t/IngressLbTest.pm): the shared dicts, init_by_lua (with
# the test helpers T of t/lib/ilb_test.lua)/init_worker_by_lua, the
# upstream_balancer upstream, three endpoints ("a", "b", "c") and the ingress
# server (proxy location and /configuration, whose small client_body_buffer_size
# makes larger documents go through a temporary file), wired like ingress-nginx's
# nginx.tmpl. The blocks' own http_config is appended.
ilb_setup(http_config => lua_http_config(endpoints => [qw(a b c)], config_body_buffer => '8k',
                                         reuseport => 1),
          request => 'GET /t', timeout => 10);

run_tests();

__DATA__

=== TEST 1: a POST received by one worker is used by every worker within one second
--- config
    location = /t {
        content_by_lua_block {
            local name = "default-web-80"
            local function phase(label, doc, allowed)
                local result = T.post_raw(doc)
                ngx.sleep(1.0)
                local counts, workers = T.stats(40, name)
                local only = true
                for key in counts:gmatch("(%S+)=") do
                    if not allowed[key] then
                        only = false
                    end
                end
                ngx.say(label, ": ", result, " only the new endpoints: ", only,
                        " workers: ", workers >= 2 and "2+" or workers)
                if not only then
                    ngx.say(counts)
                end
            end
            phase("first", T.doc(T.full_backend(name, { T.ep("a") })), { a = true })
            phase("second", T.doc(T.full_backend(name, { T.ep("b"), T.ep("c") })), { b = true, c = true })
            phase("third", T.doc(T.full_backend(name, { T.ep("a"), T.ep("c") })), { a = true, c = true })
        }
    }
--- response_body
first: 201 [] only the new endpoints: true workers: 2+
second: 201 [] only the new endpoints: true workers: 2+
third: 201 [] only the new endpoints: true workers: 2+
--- no_error_log
[error]
[alert]
[warn]



=== TEST 2: a rejected POST changes no worker
--- config
    location = /t {
        content_by_lua_block {
            local name = "default-web-80"
            ngx.say(T.post_raw(T.doc(T.full_backend(name, { T.ep("b") }))))
            ngx.sleep(1.0)
            local result = T.post_raw(T.doc(T.full_backend(name, { { address = "127.0.0.1", port = 0 } })))
            ngx.say(result:match("^400 %[backend \"default%-web%-80\": field `endpoints%[0%]%.port`")
                    and "rejected" or result)
            ngx.sleep(1.0)
            local counts, workers = T.stats(40, name)
            ngx.say(counts, " workers: ", workers >= 2 and "2+" or workers)
        }
    }
--- response_body
201 []
rejected
b=40 workers: 2+
--- error_log
dynamic-configuration: backends rejected
--- no_error_log
[error]
[alert]
